//! The engine's edges: the few things it asks of containers, networks, volumes and images,
//! as narrow traits. The real implementations delegate to [`Runtime`], [`Networks`],
//! [`Volumes`] and [`ImageStore`]; the engine's unit tests use in-memory fakes
//! (`engine::fake`) that record every call, so that planning and executing are tested
//! without root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use crate::compose::LoadedProject;
use crate::image::{ImageError, ImageStore, ResolvedImage};
use crate::netns::{
    AttachRequest, Attachment, EndpointRecord, NetError, NetworkRecord, NetworkSpec, Networks,
};
use crate::runtime::spec::{ContainerSpec, MountSpec};
use crate::runtime::status::{ContainerStatus, State};
use crate::runtime::{ContainerRecord, DamagedContainer, ExecSpec, Runtime, RuntimeError};
use crate::state::{DamagedRecord, Dirs, Lock, read_json};
use crate::volume::{MountRequest, VolumeError, VolumeRecord, VolumeSpec, Volumes, service_mounts};

use super::Engine;
use super::images::ImageProvider;
use super::provider::EngineImages;

/// Containers, as the engine uses them.
pub trait ContainerHost: Sync {
    /// The records of every container on this host (any project); unreadable ones are skipped.
    fn records(&self) -> Result<Vec<ContainerRecord>, RuntimeError>;
    /// A container's live status; one whose records went away reads as dead.
    fn status(&self, id: &str) -> ContainerStatus;
    /// The spec a container was created from.
    fn spec(&self, id: &str) -> Result<ContainerSpec, RuntimeError>;
    /// Creates a container (not started).
    fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError>;
    /// Starts a created or stopped container.
    fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// Stops a container (its own grace time when `timeout` is `None`).
    fn stop(&self, id: &str, timeout: Option<Duration>) -> Result<(), RuntimeError>;
    /// Removes a container (`force`: even a running one).
    fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError>;
    /// Runs a command in a running container: exit code, stdout, stderr.
    fn exec_output(&self, id: &str, exec: &ExecSpec) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError>;
    /// Runs a command in a running container on this process's stdio (`tty`: on a new
    /// pseudo-terminal relayed to this one, which must be a terminal); its exit code.
    fn exec_attached(&self, id: &str, exec: &ExecSpec, tty: bool) -> Result<i32, RuntimeError>;
    /// Sends `signal` (a name like `SIGKILL` or `KILL`, or a number) to a running container;
    /// its restart policy no longer applies.
    fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError>;
    /// Freezes (`true`) or thaws a running container's processes.
    fn pause(&self, id: &str, paused: bool) -> Result<(), RuntimeError>;
    /// Waits until a container has exited for good (or `timeout`); its status then.
    fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerStatus, RuntimeError>;
    /// Containers whose records cannot be read (any project).
    fn damaged(&self) -> Result<Vec<DamagedContainer>, RuntimeError> {
        Ok(Vec::new())
    }
    /// Containers whose records cannot be read (any project), without sweeping anything
    /// first (for queries, which change nothing).
    fn find_damaged(&self) -> Result<Vec<DamagedContainer>, RuntimeError> {
        self.damaged()
    }
    /// As [`ContainerHost::find_damaged`], leaving out the containers in `whole`, whose
    /// records the caller has just read whole (a real host does not read them again).
    fn find_damaged_except(&self, whole: &BTreeSet<String>) -> Result<Vec<DamagedContainer>, RuntimeError> {
        Ok(self.find_damaged()?.into_iter().filter(|d| !whole.contains(&d.id)).collect())
    }
    /// Takes away processes and cgroups that belong to no container with a folder (see
    /// `Runtime::sweep_unrecorded`); what went, to report.
    fn sweep_unrecorded(&self) -> Vec<String> {
        Vec::new()
    }
    /// Ids of every container there is, with readable records or damaged ones.
    fn ids(&self) -> Result<Vec<String>, RuntimeError> {
        let mut ids: Vec<String> = self.records()?.into_iter().map(|r| r.id).collect();
        ids.extend(self.damaged()?.into_iter().map(|d| d.id));
        Ok(ids)
    }
    /// Where waits for stopped containers' processes to be reaped go, for a plan to do them
    /// all at its end ([`crate::state::Reaps::defer`]); `None`: nothing to wait for.
    fn reaps(&self) -> Option<&crate::state::Reaps> {
        None
    }
}

/// Networks, as the engine uses them.
pub trait NetworkHost: Sync {
    /// Every network on this host.
    fn list(&self) -> Result<Vec<NetworkRecord>, NetError>;
    /// Whether network `name` exists.
    fn exists(&self, name: &str) -> Result<bool, NetError>;
    /// Creates a network.
    fn create(&self, spec: &NetworkSpec) -> Result<(), NetError>;
    /// Removes a network.
    fn remove(&self, name: &str) -> Result<(), NetError>;
    /// Attaches a container to its networks (its network namespace, hosts and resolv.conf).
    fn attach(&self, req: &AttachRequest) -> Result<Attachment, NetError>;
    /// Detaches a container from every network.
    fn detach(&self, id: &str) -> Result<(), NetError>;
    /// Network records that cannot be read.
    fn damaged(&self) -> Vec<DamagedRecord> {
        Vec::new()
    }
    /// Takes away what a network without a readable record left (bridge, record file).
    fn forget(&self, _name: &str) -> Result<(), NetError> {
        Ok(())
    }
    /// Ids of the containers that have endpoint records or netns files (any network, any
    /// project).
    fn endpoint_ids(&self) -> Vec<String> {
        Vec::new()
    }
    /// Endpoint records that cannot be read (named by their container's id).
    fn damaged_endpoints(&self) -> Vec<DamagedRecord> {
        Vec::new()
    }
    /// Ids of the containers attached to network `name`.
    fn attached_ids(&self, _name: &str) -> Vec<String> {
        Vec::new()
    }
    /// Starts the DNS process when networks exist and it does not run; stops it when none do.
    fn sync_dns(&self) -> Result<(), NetError> {
        Ok(())
    }
    /// Container `id`'s network attachment (endpoints, published ports), if it has one.
    fn endpoint(&self, _id: &str) -> Result<Option<EndpointRecord>, NetError> {
        Ok(None)
    }
}

/// Volumes, as the engine uses them.
pub trait VolumeHost: Sync {
    /// Every volume on this host.
    fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError>;
    /// Whether volume `name` exists.
    fn exists(&self, name: &str) -> Result<bool, VolumeError>;
    /// Creates a volume.
    fn create(&self, spec: &VolumeSpec) -> Result<(), VolumeError>;
    /// Removes a volume.
    fn remove(&self, name: &str) -> Result<(), VolumeError>;
    /// The mounts of a container of a service (making the volumes it needs).
    fn mounts(&self, req: &MountRequest<'_>) -> Result<Vec<MountSpec>, VolumeError>;
    /// Volume records that cannot be read.
    fn damaged(&self) -> Vec<DamagedRecord> {
        Vec::new()
    }
    /// Writes a volume's record anew around its data, with `labels`.
    fn repair(&self, _name: &str, _labels: BTreeMap<String, String>) -> Result<(), VolumeError> {
        Ok(())
    }
}

/// Images, as the engine uses them: the store's images, and what pulls and builds the images
/// of a project (planned by `engine::images`).
pub trait ImageHost: Sync {
    /// The image `reference` names.
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError>;
    /// Removes the image `reference` names.
    fn remove(&self, reference: &str) -> Result<(), ImageError>;
    /// What pulls and builds the images of `loaded` (its builds read the project's files and
    /// environment); a running build stops, everything it made cleaned up, once `cancel`
    /// becomes true.
    fn provider<'a>(
        &'a self,
        loaded: &'a LoadedProject,
        cancel: Option<&'static AtomicBool>,
    ) -> Result<Box<dyn ImageProvider + 'a>, ImageError>;
}

/// The four edges together, borrowed.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    /// Containers.
    pub containers: &'a dyn ContainerHost,
    /// Networks.
    pub networks: &'a dyn NetworkHost,
    /// Volumes.
    pub volumes: &'a dyn VolumeHost,
    /// Images.
    pub images: &'a dyn ImageHost,
    /// The project records dir (`<root>/projects`), for notes of containers being made;
    /// `None` keeps no notes (tests).
    pub projects: Option<&'a Dirs>,
}

impl Host<'_> {
    /// Takes project `project`'s lock (`on_wait` is called once if another command holds
    /// it); none on a host without records (tests).
    pub(crate) fn lock_project(&self, project: &str, on_wait: impl FnOnce()) -> super::Result<Option<Lock>> {
        self.projects.map(|dirs| super::lock_project_at(dirs, project, on_wait)).transpose()
    }

    /// Where `up` notes containers it is making, so that an interrupted `up` can be
    /// finished by the next command.
    pub(crate) fn pending_dir(&self, project: &str) -> Option<PathBuf> {
        self.projects.map(|d| d.project(project).join("pending"))
    }
}

impl ContainerHost for Runtime {
    fn records(&self) -> Result<Vec<ContainerRecord>, RuntimeError> {
        let ids = self.list()?;
        let read = crate::state::parallel_map(&ids, |id| read_json(&self.dirs().container(id).join("record.json")).ok());
        Ok(read.into_iter().flatten().collect())
    }
    fn status(&self, id: &str) -> ContainerStatus {
        Runtime::status(self, id)
            .unwrap_or(ContainerStatus { state: State::Dead, ..ContainerStatus::default() })
    }
    fn spec(&self, id: &str) -> Result<ContainerSpec, RuntimeError> {
        Runtime::spec(self, id)
    }
    fn create(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        Runtime::create(self, spec)
    }
    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        Runtime::start(self, id).map(drop)
    }
    fn stop(&self, id: &str, timeout: Option<Duration>) -> Result<(), RuntimeError> {
        Runtime::stop(self, id, timeout).map(drop)
    }
    fn remove(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        Runtime::remove(self, id, force)
    }
    fn exec_output(&self, id: &str, exec: &ExecSpec) -> Result<(i32, Vec<u8>, Vec<u8>), RuntimeError> {
        Runtime::exec_output(self, id, exec)
    }
    fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        Runtime::kill(self, id, Some(signal)).map(drop)
    }
    fn pause(&self, id: &str, paused: bool) -> Result<(), RuntimeError> {
        if paused { Runtime::pause(self, id) } else { Runtime::unpause(self, id) }.map(drop)
    }
    fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerStatus, RuntimeError> {
        Runtime::wait(self, id, timeout)
    }
    fn exec_attached(&self, id: &str, exec: &ExecSpec, tty: bool) -> Result<i32, RuntimeError> {
        if tty { Runtime::exec_tty(self, id, exec) } else { Runtime::exec(self, id, exec) }
    }
    fn damaged(&self) -> Result<Vec<DamagedContainer>, RuntimeError> {
        Runtime::damaged(self)
    }
    fn find_damaged(&self) -> Result<Vec<DamagedContainer>, RuntimeError> {
        Runtime::find_damaged(self)
    }
    fn find_damaged_except(&self, whole: &BTreeSet<String>) -> Result<Vec<DamagedContainer>, RuntimeError> {
        Runtime::find_damaged_except(self, whole)
    }
    fn sweep_unrecorded(&self) -> Vec<String> {
        Runtime::sweep_unrecorded(self)
    }
    fn reaps(&self) -> Option<&crate::state::Reaps> {
        Some(Runtime::reaps(self))
    }
    fn ids(&self) -> Result<Vec<String>, RuntimeError> {
        Runtime::ids(self)
    }
}

impl NetworkHost for Networks {
    fn list(&self) -> Result<Vec<NetworkRecord>, NetError> {
        Networks::list(self)
    }
    fn exists(&self, name: &str) -> Result<bool, NetError> {
        match self.inspect(name) {
            Ok(_) => Ok(true),
            Err(NetError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
    fn create(&self, spec: &NetworkSpec) -> Result<(), NetError> {
        Networks::create(self, spec).map(drop)
    }
    fn remove(&self, name: &str) -> Result<(), NetError> {
        Networks::remove(self, name)
    }
    fn attach(&self, req: &AttachRequest) -> Result<Attachment, NetError> {
        Networks::attach(self, req)
    }
    fn detach(&self, id: &str) -> Result<(), NetError> {
        Networks::detach(self, id)
    }
    fn damaged(&self) -> Vec<DamagedRecord> {
        Networks::damaged(self)
    }
    fn forget(&self, name: &str) -> Result<(), NetError> {
        Networks::forget(self, name)
    }
    fn endpoint_ids(&self) -> Vec<String> {
        Networks::endpoint_ids(self)
    }
    fn damaged_endpoints(&self) -> Vec<DamagedRecord> {
        Networks::damaged_endpoints(self)
    }
    fn attached_ids(&self, name: &str) -> Vec<String> {
        Networks::attached_ids(self, name)
    }
    fn sync_dns(&self) -> Result<(), NetError> {
        Networks::sync_dns(self)
    }
    fn endpoint(&self, id: &str) -> Result<Option<EndpointRecord>, NetError> {
        crate::netns::record::read_endpoint(self.dirs(), id)
    }
}

impl VolumeHost for Volumes {
    fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        Volumes::list(self)
    }
    fn exists(&self, name: &str) -> Result<bool, VolumeError> {
        Ok(self.get(name)?.is_some())
    }
    fn create(&self, spec: &VolumeSpec) -> Result<(), VolumeError> {
        Volumes::create(self, spec).map(drop)
    }
    fn remove(&self, name: &str) -> Result<(), VolumeError> {
        Volumes::remove(self, name, false)
    }
    fn mounts(&self, req: &MountRequest<'_>) -> Result<Vec<MountSpec>, VolumeError> {
        service_mounts(self, req)
    }
    fn damaged(&self) -> Vec<DamagedRecord> {
        Volumes::damaged(self)
    }
    fn repair(&self, name: &str, labels: BTreeMap<String, String>) -> Result<(), VolumeError> {
        Volumes::repair(self, name, labels).map(drop)
    }
}

/// The image store of a root, opened for each call (opening creates it when missing, so
/// that commands that never touch images do not).
#[derive(Debug, Clone)]
pub struct StoreImages {
    dirs: Dirs,
}

impl StoreImages {
    /// The store of `dirs`.
    pub fn new(dirs: &Dirs) -> StoreImages {
        StoreImages { dirs: dirs.clone() }
    }
}

impl StoreImages {
    /// The image `reference` names.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        ImageStore::open(&self.dirs)?.resolve(reference)
    }
    /// Removes the image `reference` names.
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        ImageStore::open(&self.dirs)?.remove(reference, false).map(drop)
    }
}

/// The engine's images: its store, and the registry client and builder (which runs build
/// steps in the engine's runtime and networks).
impl ImageHost for Engine {
    fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        self.images.resolve(reference)
    }
    fn remove(&self, reference: &str) -> Result<(), ImageError> {
        self.images.remove(reference)
    }
    fn provider<'a>(
        &'a self,
        loaded: &'a LoadedProject,
        cancel: Option<&'static AtomicBool>,
    ) -> Result<Box<dyn ImageProvider + 'a>, ImageError> {
        let provider = EngineImages::new(self, loaded)?;
        Ok(Box::new(match cancel {
            Some(flag) => provider.with_cancel(flag),
            None => provider,
        }))
    }
}
