//! berth's container runtime: one container at a time, with no compose knowledge. A
//! [`ContainerSpec`] is written to `<root>/containers/<id>/spec.json`; [`Runtime::start`]
//! re-executes berth as the shim (`berth shim ID`), which makes the container and watches it.
//! Status, stop, kill and signals go through the shim's socket; `exec` joins the container
//! directly.

pub mod capabilities;
pub mod cgroups;
pub mod copy;
pub mod devices_bpf;
pub mod exec;
pub mod exec_tty;
mod handoff;
mod init;
mod lifecycle;
pub mod limits;
pub mod log;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod signal;
pub mod shim;
pub mod spec;
pub mod stats;
pub mod status;
pub mod syscall;
pub mod timefmt;

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caps::Capability;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

pub use exec::ExecSpec;
pub use spec::ContainerSpec;
pub use status::{ContainerStatus, State};
// berth's integration tests name it here.
#[cfg(feature = "internals")]
pub use status::HealthState;

use crate::state::{
    Dirs, StateError, read_json, write_atomic_all, write_atomic_unsynced, write_json_unsynced,
};
use shim::{Request, Response};
use syscall::Linux;

/// Failures of runtime operations.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Reading or writing a record failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// No container has this id.
    #[error("no such container: {0}")]
    NotFound(String),
    /// A container with this id exists already.
    #[error("container {0} exists already")]
    Exists(String),
    /// The container could not be started.
    #[error("container {name}: {message}")]
    Start {
        /// The container's name.
        name: String,
        /// What went wrong, as the shim or the container's init reported it.
        message: String,
    },
    /// The operation needs a running container.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The container is paused already.
    #[error("container {0} is already paused")]
    Paused(String),
    /// The container is not paused.
    #[error("container {0} is not paused")]
    NotPaused(String),
    /// The operation refuses a running container.
    #[error("container {0} is running: stop it first or force the removal")]
    Running(String),
    /// Talking to the shim failed.
    #[error("container {id}: shim: {message}")]
    Shim {
        /// The container's id.
        id: String,
        /// What went wrong.
        message: String,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The shim's socket could not be reached.
    #[error("container {id}: shim: {sock}: {source}")]
    ShimConnect {
        /// The container's id.
        id: String,
        /// The socket.
        sock: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Talking on the shim's socket failed.
    #[error("container {id}: shim: {source}")]
    ShimIo {
        /// The container's id.
        id: String,
        /// The error.
        source: std::io::Error,
    },
    /// The shim's answer is not one.
    #[error("container {id}: shim: bad answer: {source}")]
    ShimAnswer {
        /// The container's id.
        id: String,
        /// The error.
        source: serde_json::Error,
    },
    /// The container's cgroup could not be removed.
    #[error("cgroup: {0}")]
    Cgroup(#[source] cgroups::CgroupError),
    /// The ulimits cannot be applied.
    #[error("container {name}: {source}")]
    Limits {
        /// The container's name.
        name: String,
        /// What is wrong.
        source: limits::LimitError,
    },
    /// An argument or variable that cannot reach `execve`.
    #[error("container {name}: {source}")]
    Nul {
        /// The container's name.
        name: String,
        /// Which one.
        source: NulByte,
    },
    /// The spec's capabilities or seccomp profile cannot be applied.
    #[error("container {name}: {source}")]
    Security {
        /// The container's name.
        name: String,
        /// What is wrong.
        source: SecurityError,
    },
    /// The spec asks for something the runtime cannot do.
    #[error("container {name}: {message}")]
    Invalid {
        /// The container's name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

type Result<T> = std::result::Result<T, RuntimeError>;

fn sys(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Sys { what, source }
}

/// What is kept about a container besides its spec: the part other modules read (the image
/// store looks at `image_id` to tell an image is in use).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRecord {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The image id, when it came from the image store.
    pub image_id: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// When it was created (RFC 3339).
    pub created: String,
}

/// A container whose records cannot be read: it is removed with what it made (its shim and
/// processes, its network attachment, its folders) and made again from the compose file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedContainer {
    /// The id (its folder's name).
    pub id: String,
    /// Its name, when one of its records still tells it.
    pub name: Option<String>,
    /// Its labels, when one of its records still tells them (`None`: whose it is is unknown).
    pub labels: Option<BTreeMap<String, String>>,
    /// The damaged file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// The runtime, working in `dirs`, re-executing `exe` as the shim.
#[derive(Debug, Clone)]
pub struct Runtime {
    dirs: Dirs,
    exe: PathBuf,
    /// Where waits for shims to be reaped go (deferred during a teardown, see
    /// [`crate::state::Reaps`]).
    reaps: std::sync::Arc<crate::state::Reaps>,
}

/// A container's security settings that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// `cap_add` or `cap_drop` names no capability.
    #[error(transparent)]
    Capability(#[from] capabilities::UnknownCapability),
    /// The seccomp profile cannot be compiled.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
}

/// The capabilities and seccomp filters a container's processes get.
pub(crate) fn security_for(
    spec: &ContainerSpec,
) -> std::result::Result<(HashSet<Capability>, Vec<seccompiler::BpfProgram>), SecurityError> {
    let caps = capabilities_for(spec)?;
    let filters = seccomp_for(spec, &caps)?;
    Ok((caps, filters))
}

/// The capabilities a container's processes keep.
fn capabilities_for(spec: &ContainerSpec) -> std::result::Result<HashSet<Capability>, SecurityError> {
    let host = capabilities::host_capabilities();
    let sec = &spec.security;
    Ok(capabilities::effective_set(sec.privileged, &sec.cap_add, &sec.cap_drop, &host)?)
}

/// The seccomp filters for a process keeping `caps`, compiled.
fn seccomp_for(
    spec: &ContainerSpec,
    caps: &HashSet<Capability>,
) -> std::result::Result<Vec<seccompiler::BpfProgram>, SecurityError> {
    let sec = &spec.security;
    Ok(match (&sec.seccomp, sec.privileged) {
        (_, true) | (spec::SeccompMode::Unconfined, _) => Vec::new(),
        (spec::SeccompMode::Default, _) => seccomp::default_filters(caps)?,
        (spec::SeccompMode::Profile(p), _) => seccomp::profile_filters(p, caps)?,
    })
}

/// The file beside a container's spec that keeps its compiled seccomp filters, so that
/// compiling (a fair part of a millisecond) happens once, at create.
const SECCOMP_FILE: &str = "seccomp.bpf";

/// The container's seccomp filters encoded as [`seccomp::encode`] writes them: the file
/// compiled at create when it is intact, else compiled again (see [`stored_filters`]).
fn seccomp_stored_bytes(dirs: &Dirs, spec: &ContainerSpec) -> std::result::Result<Vec<u8>, SecurityError> {
    let path = dirs.container(&spec.id).join(SECCOMP_FILE);
    match fs::read(&path).ok().filter(|b| seccomp::decode(b).is_some()) {
        Some(bytes) => Ok(bytes),
        None => Ok(seccomp::encode(&stored_filters(&path, spec, &capabilities_for(spec)?)?)),
    }
}

/// The filters in the seccomp file `path` when it is intact; otherwise (lost, cut short,
/// emptied, overwritten: `seccomp::decode` refuses all of these) compiled again from the spec
/// and written anew, so that the next start finds it whole. The file is derived from the spec,
/// so this is a repair, never a guess: a container never starts with fewer filters than its
/// spec asks for.
fn stored_filters(
    path: &Path,
    spec: &ContainerSpec,
    caps: &HashSet<Capability>,
) -> std::result::Result<Vec<seccompiler::BpfProgram>, SecurityError> {
    let bytes = fs::read(path);
    if let Some(filters) = bytes.as_ref().ok().and_then(|b| seccomp::decode(b)) {
        return Ok(filters);
    }
    let filters = seccomp_for(spec, caps)?;
    if bytes.is_ok() {
        crate::state::report_repair(path, "seccomp filters compiled again from the container's spec");
    }
    if path.parent().is_some_and(Path::is_dir) {
        let _ = write_atomic_unsynced(path, &seccomp::encode(&filters));
    }
    Ok(filters)
}

/// Like [`security_for`], with the filters compiled at create when their file is intact.
pub(crate) fn security_stored(
    dirs: &Dirs,
    spec: &ContainerSpec,
) -> std::result::Result<(HashSet<Capability>, Vec<seccompiler::BpfProgram>), SecurityError> {
    let caps = capabilities_for(spec)?;
    let filters = stored_filters(&dirs.container(&spec.id).join(SECCOMP_FILE), spec, &caps)?;
    Ok((caps, filters))
}

impl Runtime {
    /// A runtime on these dirs; `exe` is the berth binary to run as the shim.
    pub fn new(dirs: &Dirs, exe: impl Into<PathBuf>) -> Runtime {
        Runtime { dirs: dirs.clone(), exe: exe.into(), reaps: Default::default() }
    }

    /// Sends this runtime's waits for shims to be reaped to `reaps`, shared with others (the
    /// networks' DNS process), so that one deferral covers them all.
    pub fn with_reaps(mut self, reaps: std::sync::Arc<crate::state::Reaps>) -> Runtime {
        self.reaps = reaps;
        self
    }

    /// The waits for shims to be reaped: [`crate::state::Reaps::defer`] on it makes `stop`
    /// and `remove` return once the shim has exited, and the deferral's end waits for all.
    pub fn reaps(&self) -> &crate::state::Reaps {
        &self.reaps
    }

    /// The dirs this runtime works in.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// Records a new container; checks what can be checked before anything runs.
    pub fn create(&self, spec: &ContainerSpec) -> Result<()> {
        self.check_new(spec)?;
        let filters = self.compile_security(spec)?;
        let spec_json = spec_json(spec)?;
        self.write_records(spec, &spec_json, &seccomp::encode(&filters))
    }

    /// The capabilities and filters of a new container, checked; returns the compiled filters.
    fn compile_security(&self, spec: &ContainerSpec) -> Result<Vec<seccompiler::BpfProgram>> {
        let (_, filters) = security_for(spec)
            .map_err(|source| RuntimeError::Security { name: spec.name.clone(), source })?;
        Ok(filters)
    }

    /// What `create` checks before anything is written, but the security settings.
    fn check_new(&self, spec: &ContainerSpec) -> Result<()> {
        let dir = self.dirs.container(&spec.id);
        if dir.join("spec.json").exists() {
            return Err(RuntimeError::Exists(spec.id.clone()));
        }
        let invalid = |message: String| RuntimeError::Invalid { name: spec.name.clone(), message };
        let nul = |source| RuntimeError::Nul { name: spec.name.clone(), source };
        check_no_nul("command", &spec.process.args).map_err(nul)?;
        check_no_nul("environment", &spec.process.env).map_err(nul)?;
        limits::check(&spec.ulimits)
            .map_err(|source| RuntimeError::Limits { name: spec.name.clone(), source })?;
        for lower in &spec.rootfs.lower_dirs {
            if !lower.is_dir() {
                return Err(invalid(format!("image layer {} is missing", lower.display())));
            }
        }
        Ok(())
    }

    /// Writes a new container's records: spec and record durably, status and filters not.
    fn write_records(&self, spec: &ContainerSpec, spec_json: &[u8], seccomp: &[u8]) -> Result<()> {
        let dir = self.dirs.container(&spec.id);
        self.dirs.create_dir(&dir, crate::state::mode::CONTAINERS)?;
        let record = ContainerRecord {
            id: spec.id.clone(),
            name: spec.name.clone(),
            image_id: spec.image_id.clone(),
            labels: spec.labels.clone(),
            created: timefmt::now(),
        };
        let (spec_path, record_path) = (dir.join("spec.json"), dir.join("record.json"));
        let status_path = dir.join("status.json");
        // The status is run-time state (see `status`), written without fsync; the spec and
        // record are what the container is, and are made durable together.
        let initial = ContainerStatus { boot_id: status::boot_id(), ..ContainerStatus::default() };
        write_json_unsynced(&status_path, &initial)?;
        // Derived from the spec: when lost, it is compiled again.
        write_atomic_unsynced(&dir.join(SECCOMP_FILE), seccomp)?;
        let record_json = serde_json::to_vec_pretty(&record)
            .map_err(|source| StateError::Json { path: record_path.clone(), source })?;
        if let Err(e) = write_atomic_all(&[(&spec_path, spec_json), (&record_path, &record_json)]) {
            let _ = fs::remove_file(&status_path);
            return Err(e.into());
        }
        Ok(())
    }

    /// The spec of a container.
    pub fn spec(&self, id: &str) -> Result<ContainerSpec> {
        Ok(self.spec_and_json(id)?.0)
    }

    /// The spec of a container, and the JSON it was read from.
    fn spec_and_json(&self, id: &str) -> Result<(ContainerSpec, Vec<u8>)> {
        let path = self.dirs.container(id).join("spec.json");
        let json = match fs::read(&path) {
            Ok(json) => json,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            Err(e) => return Err(StateError::io(&path, e).into()),
        };
        let spec = serde_json::from_slice(&json).map_err(|source| StateError::Json { path, source })?;
        Ok((spec, json))
    }

    /// Starts a created or exited container: launches its shim and waits until the process
    /// has exec'd (or failed to).
    pub fn start(&self, id: &str) -> Result<ContainerStatus> {
        let (spec, spec_json) = self.spec_and_json(id)?;
        let current = self.status(id)?;
        if matches!(current.state, State::Running | State::Restarting) {
            return Ok(current);
        }
        // A shim that has reported the end may still be removing the cgroup and mount point
        // that the new start makes again.
        if current.shim_pid > 0 && shim_alive(current.shim_pid) {
            self.wait_shim_gone(id, Duration::from_secs(10))?;
        }
        // The records as they are: the shim gets the spec's JSON and the stored filters.
        let security = || {
            let seccomp = seccomp_stored_bytes(&self.dirs, &spec)
                .map_err(|source| RuntimeError::Security { name: spec.name.clone(), source })?;
            Ok((spec_json, seccomp))
        };
        self.launch(&spec, security, |_, _| Ok(()))
    }

    /// Launches the shim of `spec` and waits until the container's process has exec'd (or
    /// failed to). The work overlaps (see `handoff`): while the shim execs, a short-lived
    /// thread makes the network namespace; this thread gets the spec and filters from
    /// `security` and sends them (setup), makes the cgroup and sends it with the namespace
    /// (resources), then runs `commit` (the records, for `run`) and sends its outcome. The
    /// shim builds the container meanwhile; the container's process execs only once the
    /// commit says the records are durable. This process only spawns (posix_spawn), which is
    /// safe with threads.
    fn launch(
        &self,
        spec: &ContainerSpec,
        security: impl FnOnce() -> Result<(Vec<u8>, Vec<u8>)>,
        commit: impl FnOnce(&[u8], &[u8]) -> Result<()>,
    ) -> Result<ContainerStatus> {
        let id = spec.id.as_str();
        self.dirs.create_dir(&self.dirs.container_run(id), crate::state::mode::CONTAINERS)?;
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| sys("pipe")(e.into()))?;
        let (go, go_shim) = UnixStream::pair().map_err(sys("socketpair"))?;
        // A short-lived thread makes the network namespace (a thread has a namespace of its
        // own) while the shim execs; this thread makes the cgroup after the spawn (each takes a
        // fair part of a millisecond; two CPUs are all some hosts have).
        let fresh_netns = spec.namespaces.net == spec::NetNamespace::None;
        let make_netns = || -> Option<OwnedFd> {
            let made = (|| -> std::io::Result<OwnedFd> {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
                Ok(fs::File::open("/proc/thread-self/ns/net")?.into())
            })();
            // Without one, the shim clones the container into a new namespace itself.
            made.ok()
        };
        let make_cgroup = || {
            cgroups::Cgroup::for_container(id)
                .create(&Linux, &spec.resources, &spec.devices, spec.security.privileged)
                .map_err(|e| handoff::Failure::of(&e))
        };
        let (spawned, security, committed) = std::thread::scope(|scope| {
            let netns = fresh_netns.then(|| scope.spawn(make_netns));
            let attach = spec.process.attach_stdio;
            let spawned = self.spawn_shim(id, &ready_w, &OwnedFd::from(go_shim), attach);
            drop(ready_w);
            let security = security();
            // A shim that failed has closed its end: it reports on the ready pipe, and what
            // is sent to it here is lost.
            let (spec_json, seccomp) =
                security.as_ref().map_or((&[][..], &[][..]), |(j, s)| (&j[..], &s[..]));
            let compiled = security.as_ref().map(|_| ()).map_err(|e| handoff::Failure::of(e));
            if spawned.is_ok() {
                let _ = handoff::send_setup(go.as_fd(), compiled.as_ref().map(|_| ()), spec_json, seccomp);
            }
            let made = make_cgroup();
            let netns = netns.and_then(|t| t.join().ok().flatten());
            if spawned.is_err() {
                return (spawned, security, Ok(()));
            }
            let _ = handoff::send_resources(
                go.as_fd(),
                made.as_ref().map(|_| ()),
                netns.as_ref().map(|f| f.as_fd()),
            );
            drop(netns);
            let committed =
                if compiled.is_ok() && made.is_ok() { commit(spec_json, seccomp) } else { Ok(()) };
            let failure = committed.as_ref().err().map(|e| handoff::Failure::of(e));
            let _ = handoff::send_commit(go.as_fd(), failure.as_ref().map_or(Ok(()), Err));
            (spawned, security, committed)
        });
        drop(go);
        let shim = match spawned {
            Ok(pid) => pid,
            Err(e) => {
                let _ = cgroups::Cgroup::for_container(id).destroy(&Linux);
                return Err(sys(format!("start shim {}", self.exe.display()))(e));
            }
        };
        // One line (see `handoff::Ready`). Not to EOF, since fds can outlive the answer.
        let mut answer = String::new();
        let _ = BufReader::new(fs::File::from(ready_r)).read_line(&mut answer);
        let failure = match handoff::Ready::parse(&answer) {
            handoff::Ready::Started => None,
            handoff::Ready::Failed { failure } => Some(failure),
        };
        let Some(failure) = failure else {
            // The shim lives on as this process's child (see `spawn_shim`). A thread reaps it
            // when it ends, so that a long-lived caller (a test, `up` in the foreground) does
            // not collect zombies; a caller that exits first hands it to the init process.
            reap_when_done(shim);
            return self.status(id);
        };
        // The shim ends right after its answer; it is this process's child.
        let _ = nix::sys::wait::waitpid(shim, None);
        security?;
        committed?;
        let message = failure.message.as_str();
        // The shim recorded the failure, maybe before `commit` wrote the first status over it;
        // this also removes a cgroup the shim tidied before it was made.
        if self.dirs.container(id).join("spec.json").exists() {
            shim::record_failure(&self.dirs, id, message);
        } else {
            let _ = cgroups::Cgroup::for_container(id).destroy(&Linux);
        }
        Err(RuntimeError::Start { name: spec.name.clone(), message: message.to_string() })
    }

    /// Starts `berth shim ID` with posix_spawn, which glibc does with a vfork-like clone: no
    /// copy of this process's page tables, and safe from a multi-threaded caller. The shim gets
    /// `ready` as fd 3, `go` (the socket of the handoff) as fd 4, /dev/null as stdio, `/` as
    /// working dir and a session of its own. It is not forked again: it stays this process's
    /// child until this process ends (then init's), and whoever watches it here reaps it once
    /// it has ended (see `shim_alive`). A fork in the shim would cost the start a process copy
    /// and a hand-over between processes.
    /// With `attach`, the shim keeps this process's stdio (for a container whose process
    /// gets it, see `ProcessSpec::attach_stdio`).
    fn spawn_shim(&self, id: &str, ready: &OwnedFd, go: &OwnedFd, attach: bool) -> std::io::Result<Pid> {
        use std::ffi::{CString, OsStr};
        use std::os::unix::ffi::OsStrExt;
        let cstr = |s: &OsStr| CString::new(s.as_bytes()).map_err(std::io::Error::other);
        let exe = cstr(self.exe.as_os_str())?;
        let args = [
            self.exe.as_os_str(),
            OsStr::new("--root"),
            self.dirs.root.as_os_str(),
            OsStr::new("--run"),
            self.dirs.run.as_os_str(),
            OsStr::new("shim"),
            OsStr::new(id),
        ];
        let argv: Vec<CString> = args.iter().map(|a| cstr(a)).collect::<std::io::Result<_>>()?;
        let mut envp: Vec<CString> = std::env::vars_os()
            .filter(|(k, _)| k != READY_FD_VAR && k != GO_FD_VAR)
            .filter_map(|(k, v)| {
                let mut pair = k.into_encoded_bytes();
                pair.push(b'=');
                pair.extend_from_slice(v.as_encoded_bytes());
                CString::new(pair).ok()
            })
            .collect();
        for (var, fd) in [(READY_FD_VAR, 3), (GO_FD_VAR, 4)] {
            envp.push(CString::new(format!("{var}={fd}")).map_err(std::io::Error::other)?);
        }
        // Copies above 4: dup2 onto itself would keep close-on-exec, and one pipe must not
        // land on the other's target before that one is moved.
        let high = |fd: &OwnedFd| -> std::io::Result<OwnedFd> {
            let raw = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
            // SAFETY: a new fd that nothing else owns.
            Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
        };
        let (ready, go) = (high(ready)?, high(go)?);
        let (ready_fd, go_fd) = (ready.as_raw_fd(), go.as_raw_fd());
        let ptrs = |v: &[CString]| -> Vec<*mut libc::c_char> {
            v.iter().map(|c| c.as_ptr().cast_mut()).chain(std::iter::once(std::ptr::null_mut())).collect()
        };
        let (argv_ptrs, envp_ptrs) = (ptrs(&argv), ptrs(&envp));
        let check =
            |rc: libc::c_int| if rc == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(rc)) };
        // SAFETY: the actions and attributes are initialised before use and destroyed after;
        // every pointer handed over (paths, argv, envp) outlives the posix_spawn call.
        unsafe {
            let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
            let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
            check(libc::posix_spawn_file_actions_init(&mut actions))?;
            check(libc::posix_spawnattr_init(&mut attr))?;
            let result = (|| {
                if !attach {
                    check(libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        0,
                        c"/dev/null".as_ptr(),
                        libc::O_RDONLY,
                        0,
                    ))?;
                    check(libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        1,
                        c"/dev/null".as_ptr(),
                        libc::O_WRONLY,
                        0,
                    ))?;
                    check(libc::posix_spawn_file_actions_adddup2(&mut actions, 1, 2))?;
                }
                check(libc::posix_spawn_file_actions_adddup2(&mut actions, ready_fd, 3))?;
                check(libc::posix_spawn_file_actions_adddup2(&mut actions, go_fd, 4))?;
                check(libc::posix_spawn_file_actions_addchdir_np(&mut actions, c"/".as_ptr()))?;
                // A Rust caller ignores SIGPIPE and may block signals: the shim starts clean.
                let mut none: libc::sigset_t = std::mem::zeroed();
                let mut pipe: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut none);
                libc::sigemptyset(&mut pipe);
                libc::sigaddset(&mut pipe, libc::SIGPIPE);
                check(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
                check(libc::posix_spawnattr_setsigdefault(&mut attr, &pipe))?;
                let flags = libc::POSIX_SPAWN_SETSIGMASK
                    | libc::POSIX_SPAWN_SETSIGDEF
                    | libc::POSIX_SPAWN_SETSID as libc::c_int;
                check(libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short))?;
                let mut pid: libc::pid_t = 0;
                check(libc::posix_spawn(
                    &mut pid,
                    exe.as_ptr(),
                    &actions,
                    &attr,
                    argv_ptrs.as_ptr(),
                    envp_ptrs.as_ptr(),
                ))?;
                Ok(Pid::from_raw(pid))
            })();
            libc::posix_spawn_file_actions_destroy(&mut actions);
            libc::posix_spawnattr_destroy(&mut attr);
            result
        }
    }

    /// Creates and starts; the records are written while the shim builds the container, and
    /// the container's process execs once they are durable.
    pub fn run(&self, spec: &ContainerSpec) -> Result<ContainerStatus> {
        self.check_new(spec)?;
        let written = std::cell::Cell::new(false);
        let security = || {
            // Compiling the filters checks the security settings too: an error here reaches
            // the shim, which stops, and then the caller.
            let filters = self.compile_security(spec)?;
            Ok((spec_json(spec)?, seccomp::encode(&filters)))
        };
        let result = self.launch(spec, security, |spec_json, seccomp| {
            self.write_records(spec, spec_json, seccomp)?;
            written.set(true);
            Ok(())
        });
        if result.is_err() && !written.get() {
            // Nothing of the container may stay when its records could not be written.
            let _ = fs::remove_dir_all(self.dirs.container(&spec.id));
            let _ = fs::remove_dir_all(self.dirs.container_run(&spec.id));
        }
        result
    }

    /// The container's status, corrected when its shim died without recording an end.
    pub fn status(&self, id: &str) -> Result<ContainerStatus> {
        let path = self.dirs.container(id).join("status.json");
        if !path.exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let mut st: ContainerStatus = match read_json(&path) {
            Ok(st) => st,
            // Status updates are not fsynced (see `state::write_atomic_unsynced`): after a power
            // loss (or by a hand) the file may be cut short. A shim that still runs knows the
            // truth and the record is written again from its answer; without one the container
            // cannot be running.
            Err(StateError::Json { source, .. }) => {
                match self.request(id, &Request::Status, Duration::from_secs(5)) {
                    Ok(answer) => {
                        crate::state::report_repair(&path, "written anew from its shim's answer");
                        let _ = write_json_unsynced(&path, &answer.status);
                        answer.status
                    }
                    Err(_) => ContainerStatus {
                        state: State::Dead,
                        error: Some(format!("status record unreadable: {source}")),
                        ..ContainerStatus::default()
                    },
                }
            }
            Err(e) => return Err(e.into()),
        };
        let stale_boot = !st.boot_id.is_empty() && st.boot_id != status::boot_id();
        if matches!(st.state, State::Running | State::Restarting) && (stale_boot || !shim_alive(st.shim_pid))
        {
            if !stale_boot && st.pid > 0 && process_alive(st.pid) {
                // Running, but nobody watches it any more: nor checks its health.
                st.shim_pid = 0;
                st.health = None;
            } else {
                st.state = State::Dead;
                st.pid = 0;
                st.shim_pid = 0;
            }
        }
        if st.state == State::Running && st.pid > 0 {
            st.paused = cgroups::Cgroup::for_container(id).is_frozen(&Linux);
        }
        Ok(st)
    }

    /// Freezes every process of a running container (cgroup freezer, v1 or v2).
    pub fn pause(&self, id: &str) -> Result<ContainerStatus> {
        self.freeze(id, true)
    }

    /// Thaws a paused container.
    pub fn unpause(&self, id: &str) -> Result<ContainerStatus> {
        self.freeze(id, false)
    }

    fn freeze(&self, id: &str, frozen: bool) -> Result<ContainerStatus> {
        let st = self.status(id)?;
        if st.state != State::Running || st.pid <= 0 {
            return Err(RuntimeError::NotRunning(id.to_string()));
        }
        if st.paused == frozen {
            return Err(if frozen {
                RuntimeError::Paused(id.to_string())
            } else {
                RuntimeError::NotPaused(id.to_string())
            });
        }
        cgroups::Cgroup::for_container(id).set_frozen(&Linux, frozen).map_err(RuntimeError::Cgroup)?;
        self.status(id)
    }

    /// Thaws a paused container so that a signal sent to it can act (a frozen process does
    /// not die, even of SIGKILL, on cgroup v1).
    fn thaw_for_signal(&self, id: &str) {
        let cgroup = cgroups::Cgroup::for_container(id);
        if cgroup.is_frozen(&Linux) {
            let _ = cgroup.set_frozen(&Linux, false);
        }
    }

    fn request(&self, id: &str, request: &Request, timeout: Duration) -> Result<Response> {
        let sock = self.dirs.container_run(id).join("shim.sock");
        let shim_err = |message: String| RuntimeError::Shim { id: id.to_string(), message };
        let io_err = |source| RuntimeError::ShimIo { id: id.to_string(), source };
        let mut stream =
            with_short_path(&self.dirs.container_run(id), "shim.sock", |p| UnixStream::connect(p))
                .map_err(|source| RuntimeError::ShimConnect { id: id.to_string(), sock, source })?;
        stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
        let mut text = serde_json::to_vec(request).map_err(|e| io_err(e.into()))?;
        text.push(b'\n');
        stream.write_all(&text).map_err(io_err)?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).map_err(io_err)?;
        let response: Response = serde_json::from_str(&line)
            .map_err(|source| RuntimeError::ShimAnswer { id: id.to_string(), source })?;
        if !response.ok {
            return Err(shim_err(response.error.unwrap_or_default()));
        }
        Ok(response)
    }

    /// Attaches to the running container's live output (and, with `stdin`, its input): the
    /// shim's stream, past its answer, carrying frames ([`shim::read_frame`]) until the
    /// process exits; what is written to it goes to the process's stdin.
    pub fn attach(&self, id: &str, stdin: bool) -> Result<UnixStream> {
        let sock = self.dirs.container_run(id).join("shim.sock");
        let io_err = |source| RuntimeError::ShimIo { id: id.to_string(), source };
        let mut stream =
            with_short_path(&self.dirs.container_run(id), "shim.sock", |p| UnixStream::connect(p))
                .map_err(|source| RuntimeError::ShimConnect { id: id.to_string(), sock, source })?;
        let mut text = serde_json::to_vec(&Request::Attach { stdin }).map_err(|e| io_err(e.into()))?;
        text.push(b'\n');
        stream.write_all(&text).map_err(io_err)?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io_err)?;
        // The answer line byte by byte: frames follow it on the same stream.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match std::io::Read::read(&mut stream, &mut byte).map_err(io_err)? {
                0 => return Err(io_err(std::io::ErrorKind::UnexpectedEof.into())),
                _ if byte[0] == b'\n' => break,
                _ => line.push(byte[0]),
            }
        }
        stream.set_read_timeout(None).map_err(io_err)?;
        let response: Response = serde_json::from_slice(&line)
            .map_err(|source| RuntimeError::ShimAnswer { id: id.to_string(), source })?;
        if !response.ok {
            return Err(RuntimeError::Shim {
                id: id.to_string(),
                message: response.error.unwrap_or_default(),
            });
        }
        Ok(stream)
    }

    /// Sets the size of the container's terminal (`tty: true`).
    pub fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<()> {
        self.request(id, &Request::Resize { rows, cols }, Duration::from_secs(5)).map(|_| ())
    }

    /// Stops the container (its stop signal, then SIGKILL after `timeout` or its grace time)
    /// and waits until it has exited.
    pub fn stop(&self, id: &str, timeout: Option<Duration>) -> Result<ContainerStatus> {
        let st = self.status(id)?;
        match st.state {
            State::Running | State::Restarting if st.shim_pid > 0 => {
                if st.paused {
                    self.thaw_for_signal(id);
                }
                let grace = timeout.map(|t| t.as_millis() as u64);
                // The shim answers once the process is gone: after the grace time at most, plus
                // the SIGKILL and the cleanup.
                // A damaged spec must not keep a container from being stopped (nor `down` from
                // finishing): the default grace time then.
                let spec_grace = self.spec(id).ok().and_then(|s| s.stop_grace_ms).unwrap_or(10_000);
                let wait = Duration::from_millis(grace.unwrap_or(spec_grace)) + Duration::from_secs(30);
                let request = Request::Stop { timeout_ms: grace, signal: None };
                let stopped = match self.request(id, &request, wait) {
                    Ok(_) => self.wait_shim_gone(id, Duration::from_secs(10)),
                    // The shim may have ended between our look and our request.
                    Err(e) => {
                        if self.status(id)?.state == State::Exited {
                            Ok(self.status(id)?)
                        } else {
                            Err(e)
                        }
                    }
                };
                // Gone means reaped too (see `remove`): the shim records its end (shim pid 0)
                // before it exits, so a removal right after would no longer know whom to wait for.
                if !shim_alive(st.shim_pid) {
                    self.reaps.wait(None, st.shim_pid, SHIM_NAME);
                }
                stopped
            }
            State::Running | State::Dead => self.reap_orphan(id),
            _ => Ok(st),
        }
    }

    /// A container whose shim is gone: kill what is left, record it as exited.
    fn reap_orphan(&self, id: &str) -> Result<ContainerStatus> {
        let cgroup = cgroups::Cgroup::for_container(id);
        cgroup.destroy(&Linux).map_err(RuntimeError::Cgroup)?;
        let path = self.dirs.container(id).join("status.json");
        // A damaged status record is written anew.
        let mut st: ContainerStatus = read_json(&path).unwrap_or_else(|e| {
            if matches!(e, StateError::Json { .. }) {
                crate::state::report_repair(&path, "its shim is gone; written anew as exited");
            }
            ContainerStatus::default()
        });
        st.state = State::Exited;
        st.pid = 0;
        st.shim_pid = 0;
        st.finished_at.get_or_insert_with(timefmt::now);
        write_json_unsynced(&path, &st)?;
        let run = self.dirs.container_run(id);
        let _ = fs::remove_file(run.join("shim.sock"));
        let _ = fs::remove_dir(run.join("rootfs"));
        Ok(st)
    }

    fn wait_shim_gone(&self, id: &str, limit: Duration) -> Result<ContainerStatus> {
        let end = Instant::now() + limit;
        loop {
            let st = self.status(id)?;
            if st.shim_pid == 0 || !shim_alive(st.shim_pid) || Instant::now() > end {
                return Ok(st);
            }
            wait_for_exit(st.shim_pid, end);
        }
    }

    /// Sends a signal (SIGKILL when `None`) as docker's kill does: the restart policy no longer
    /// applies unless the container has a stop signal of its own and this is another one
    /// (`lifecycle::kill_ends_restarts`).
    pub fn kill(&self, id: &str, signal: Option<&str>) -> Result<ContainerStatus> {
        let request = Request::Kill { signal: signal.map(str::to_string) };
        let status = self.request(id, &request, Duration::from_secs(10))?.status;
        // docker thaws a paused container for a kill that ends it for good (the shim has
        // recorded that), so that the signal acts; any other signal waits for `unpause`.
        if status.stopped_by_user {
            self.thaw_for_signal(id);
        }
        Ok(status)
    }

    /// Sends a signal and nothing more (the restart policy still applies). berth's commands
    /// send kills, as docker's do; the runtime's integration tests use this.
    #[cfg(feature = "internals")]
    pub fn signal(&self, id: &str, signal: &str) -> Result<ContainerStatus> {
        let request = Request::Signal { signal: signal.to_string() };
        Ok(self.request(id, &request, Duration::from_secs(10))?.status)
    }

    /// Waits until the container has exited for good (no restart pending), or `timeout`.
    /// Asks the shim, which answers once it has recorded that; then (or when the shim cannot be
    /// asked) sleeps on a pidfd of the shim, which ends right after, rather than polling the
    /// record. (Not inotify on the record: closing an inotify fd waits for an SRCU grace period,
    /// milliseconds.)
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<ContainerStatus> {
        let end = Instant::now() + timeout;
        let st = self.status(id)?;
        if st.shim_pid > 0 && shim_alive(st.shim_pid) {
            // The shim answers a wait request right after recording the end, which is sooner
            // than its own exit. Any failure (it was finishing already) falls to the loop.
            let answer = self.request(id, &Request::Wait, end.saturating_duration_since(Instant::now()));
            if let Ok(answer) = answer
                && matches!(answer.status.state, State::Exited | State::Dead)
            {
                return Ok(answer.status);
            }
        }
        loop {
            let st = self.status(id)?;
            if matches!(st.state, State::Exited | State::Dead)
                && (st.shim_pid == 0 || !shim_alive(st.shim_pid))
            {
                return Ok(st);
            }
            if Instant::now() > end {
                return Ok(st);
            }
            // A container whose shim is gone can only be watched through its own process.
            wait_for_exit(if st.shim_pid > 0 { st.shim_pid } else { st.pid }, end);
        }
    }

    /// The command that runs `exec` in container `id`: berth re-executed as `berth join`, so
    /// that the joining process starts single-threaded whatever the caller runs.
    pub fn exec_command(&self, id: &str, exec: &ExecSpec) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("--root").arg(&self.dirs.root).arg("--run").arg(&self.dirs.run).arg("join");
        if let Some(user) = &exec.user {
            cmd.arg("--user").arg(user);
        }
        if let Some(cwd) = &exec.cwd {
            cmd.arg("--workdir").arg(cwd);
        }
        for e in &exec.env {
            cmd.arg("--env").arg(e);
        }
        if exec.privileged {
            cmd.arg("--privileged");
        }
        cmd.arg(id).arg("--").args(&exec.args);
        cmd
    }

    /// Runs a process in the running container with this process's stdio, never a terminal
    /// (`exec -T`: where this process's stdio is a terminal, it is relayed through pipes);
    /// returns its exit code.
    pub fn exec(&self, id: &str, exec: &ExecSpec) -> Result<i32> {
        self.check_running(id, exec)?;
        let status = exec_tty::run_without_terminal(self.exec_command(id, exec)).map_err(sys("exec"))?;
        Ok(exit_code(status))
    }

    /// Runs a process in the running container on a new pseudo-terminal (`exec -it`): this
    /// process's terminal is put in raw mode and relayed to it; returns its exit code.
    pub fn exec_tty(&self, id: &str, exec: &ExecSpec) -> Result<i32> {
        self.check_running(id, exec)?;
        let mut with_term = exec.clone();
        if !with_term.env.iter().any(|e| e.starts_with("TERM=")) {
            let term = std::env::var("TERM").ok().filter(|t| !t.is_empty()).unwrap_or_else(|| "xterm".into());
            with_term.env.push(format!("TERM={term}"));
        }
        let status = exec_tty::run_on_pty(self.exec_command(id, &with_term)).map_err(sys("exec"))?;
        Ok(exit_code(status))
    }

    /// Runs a process in the running container and collects its output (stdout and stderr
    /// separately) and exit code.
    pub fn exec_output(&self, id: &str, exec: &ExecSpec) -> Result<(i32, Vec<u8>, Vec<u8>)> {
        self.check_running(id, exec)?;
        let out = self.exec_command(id, exec).stdin(Stdio::null()).output().map_err(sys("exec"))?;
        Ok((exit_code(out.status), out.stdout, out.stderr))
    }

    fn check_running(&self, id: &str, exec: &ExecSpec) -> Result<()> {
        let spec = self.spec(id)?;
        let nul = |source| RuntimeError::Nul { name: spec.name.clone(), source };
        check_no_nul("exec command", &exec.args).map_err(nul)?;
        check_no_nul("exec environment", &exec.env).map_err(nul)?;
        let st = self.status(id)?;
        if st.state != State::Running || st.pid == 0 {
            return Err(RuntimeError::NotRunning(spec.name));
        }
        Ok(())
    }

    /// The body of `berth join`: joins container `id` and execs; only returns on failure.
    /// Must run in a single-threaded process.
    pub fn join(&self, id: &str, exec: &ExecSpec) -> Result<std::convert::Infallible> {
        let spec = self.spec(id)?;
        let st = self.status(id)?;
        if st.state != State::Running || st.pid == 0 {
            return Err(RuntimeError::NotRunning(spec.name));
        }
        let (caps, filters) = security_stored(&self.dirs, &spec)
            .map_err(|source| RuntimeError::Security { name: spec.name.clone(), source })?;
        exec::join_and_exec(&spec, &caps, &filters, st.pid, exec, None)
    }

    /// The container's log entries, oldest first.
    pub fn logs(&self, id: &str) -> Result<Vec<log::LogEntry>> {
        log::read_all(&self.dirs.container(id).join("log")).map_err(sys("log"))
    }

    /// Removes a container's records and dirs. A running one is refused unless `force`, which
    /// kills it first.
    pub fn remove(&self, id: &str, force: bool) -> Result<()> {
        let st = match self.status(id) {
            Ok(st) => st,
            Err(RuntimeError::NotFound(_)) if !self.dirs.container(id).exists() => {
                return Err(RuntimeError::NotFound(id.to_string()));
            }
            Err(RuntimeError::NotFound(_)) => ContainerStatus::default(),
            Err(e) => return Err(e),
        };
        if matches!(st.state, State::Running | State::Restarting) {
            if !force {
                return Err(RuntimeError::Running(id.to_string()));
            }
            self.stop(id, Some(Duration::ZERO))?;
        }
        // An exited container's shim may still be tidying up; its dirs go only after it. Once
        // it has exited, the removal ends only when it has been reaped too (by this process's
        // reaper thread, or by init), so that nothing of the container shows in the process
        // table once `down` returns (a zombie still carries the shim's name). Init may take
        // seconds; past a few the zombie is left to it. During a teardown that wait is
        // deferred (`reaps`) and done once for every container, at its end.
        if st.shim_pid > 0 {
            self.wait_shim_gone(id, Duration::from_secs(10))?;
            if !shim_alive(st.shim_pid) {
                self.reaps.wait(None, st.shim_pid, SHIM_NAME);
            }
        } else if !matches!(st.state, State::Running | State::Restarting) {
            // A shim that no status tells of (the command starting it was killed before the
            // start was recorded) still answers on its socket: it is told to kill its
            // container, and its folders go only once it has recorded the end.
            if self.request(id, &Request::Kill { signal: None }, Duration::from_secs(5)).is_ok() {
                let _ = self.request(id, &Request::Wait, Duration::from_secs(10));
            }
            // Whatever is left in its cgroup goes with it.
            cgroups::Cgroup::for_container(id).destroy(&Linux).map_err(RuntimeError::Cgroup)?;
        }
        let run = self.dirs.container_run(id);
        let root = self.dirs.container(id);
        let mut first = None;
        for dir in [&run, &root] {
            // Renamed out of the way first: a command killed while deleting leaves a
            // `.<id>.removing` folder, which no reader takes for a container and the next
            // command sweeps, never a half-deleted container folder.
            let trash = dir.with_file_name(format!(".{id}{REMOVING}"));
            let doomed = match fs::rename(dir, &trash) {
                Ok(()) => trash,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) => dir.clone(),
            };
            if let Err(e) = fs::remove_dir_all(&doomed)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                first.get_or_insert(RuntimeError::Sys { what: dir.display().to_string(), source: e });
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Takes away what belongs to a container of this root and run dir that has no folder
    /// left (deleted by hand, or by a command killed half-way), and empty container cgroups
    /// that no one uses; returns what went, to report. Nothing of another root is touched:
    /// - a shim of this root and run dir (its command line names them) whose container has
    ///   neither folder is killed (its container dies with it) and waited for until reaped;
    /// - a cgroup `berth/<id>` (shared by every root) goes only when no live shim of any root
    ///   has that id, no folder of ours does, and the kernel agrees it is empty (rmdir fails
    ///   while a process is inside). Cgroups are read before shims and folders: a shim is
    ///   spawned before its cgroup is made and its folder before it, so one being made is seen.
    pub fn sweep_unrecorded(&self) -> Vec<String> {
        let mut swept = Vec::new();
        let has_folder = |id: &str| self.dirs.container(id).exists() || self.dirs.container_run(id).exists();
        let cgroup_ids: Vec<String> = cgroups::container_ids(Path::new("/sys/fs/cgroup"))
            .into_iter()
            .filter(|id| !has_folder(id))
            .collect();
        // Every shim past its launch has its container's cgroup (a finishing shim destroys it
        // only as it exits), so with no cgroup lacking a folder of ours there is nothing to
        // sweep, and every reconcile (each `up`) is spared reading the whole process table.
        if cgroup_ids.is_empty() {
            return swept;
        }
        let shims = live_shims();
        for shim in &shims {
            if !(shim.root == self.dirs.root && shim.run == self.dirs.run) || has_folder(&shim.id) {
                continue;
            }
            let pidfd = crate::state::pidfd_open(shim.pid);
            if nix::sys::signal::kill(Pid::from_raw(shim.pid), nix::sys::signal::Signal::SIGKILL).is_ok() {
                self.reaps.wait(pidfd, shim.pid, SHIM_NAME);
                // Its cgroup is provably ours too (by the shim's command line).
                let _ = cgroups::Cgroup::for_container(&shim.id).destroy(&Linux);
                swept.push(format!("shim {} of container {}", shim.pid, shim.id));
            }
        }
        for id in cgroup_ids {
            if shims.iter().any(|s| s.id == id && process_alive(s.pid)) || has_folder(&id) {
                continue;
            }
            if cgroups::Cgroup::for_container(&id).remove_if_empty(&Linux) {
                swept.push(format!("empty cgroup berth/{id}"));
            }
        }
        swept
    }

    /// Deletes what removals that were killed halfway left (`.<id>.removing` folders).
    fn sweep_removals(&self) {
        for parent in [self.dirs.containers(), self.dirs.run.join("containers")] {
            let Ok(entries) = fs::read_dir(&parent) else { continue };
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(REMOVING) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
    }

    /// Containers whose records cannot be read (cut short, not JSON): each with what can be
    /// told of it. Temp files of writes that a killed command left in their folders go.
    pub fn damaged(&self) -> Result<Vec<DamagedContainer>> {
        self.sweep_removals();
        for id in self.list_dirs()? {
            crate::state::sweep_temp_files(&self.dirs.container(&id));
        }
        self.find_damaged()
    }

    /// As [`Runtime::damaged`], changing nothing (for commands that only read, such as `ps`).
    pub fn find_damaged(&self) -> Result<Vec<DamagedContainer>> {
        self.find_damaged_except(&std::collections::BTreeSet::new())
    }

    /// As [`Runtime::find_damaged`], not reading again the records of the containers in
    /// `whole` (the caller has just read and parsed both of their files).
    pub fn find_damaged_except(&self, whole: &std::collections::BTreeSet<String>) -> Result<Vec<DamagedContainer>> {
        let mut out = Vec::new();
        for id in self.list_dirs()? {
            if whole.contains(&id) {
                continue;
            }
            let dir = self.dirs.container(&id);
            let (spec_path, record_path) = (dir.join("spec.json"), dir.join("record.json"));
            if !spec_path.exists() && !record_path.exists() {
                continue;
            }
            let record = read_json::<ContainerRecord>(&record_path);
            let spec = read_json::<spec::ContainerSpec>(&spec_path);
            let (labels, name) = match (&record, &spec) {
                (Ok(_), Ok(_)) => continue,
                (Ok(r), Err(_)) => (Some(r.labels.clone()), Some(r.name.clone())),
                (Err(_), Ok(s)) => (Some(s.labels.clone()), Some(s.name.clone())),
                (Err(_), Err(_)) => (None, None),
            };
            let (file, reason) = match (record, spec) {
                (_, Err(e)) => (spec_path, e.to_string()),
                (Err(e), _) => (record_path, e.to_string()),
                _ => continue,
            };
            out.push(DamagedContainer { id, name, labels, file, reason });
        }
        Ok(out)
    }

    /// Ids of every container folder that holds a record file (readable or not): the
    /// containers that exist, whole or damaged, without reading their records.
    pub fn ids(&self) -> Result<Vec<String>> {
        self.list_dirs()
    }

    /// Ids of every container folder that holds a record file (readable or not).
    fn list_dirs(&self) -> Result<Vec<String>> {
        let dir = self.dirs.containers();
        let Ok(entries) = fs::read_dir(&dir) else { return Ok(Vec::new()) };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.path().join("spec.json").exists() || e.path().join("record.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Ids of all containers with a record.
    pub fn list(&self) -> Result<Vec<String>> {
        let dir = self.dirs.containers();
        let Ok(entries) = fs::read_dir(&dir) else { return Ok(Vec::new()) };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter(|e| e.path().join("spec.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// The shim's process name (`/proc/PID/comm`).
pub const SHIM_NAME: &str = "berth-shim";

/// The suffix of a container folder being deleted (`.<id>.removing`).
const REMOVING: &str = ".removing";

/// Calls `f` with a short path to `dir/name`: socket paths are limited to 107 bytes, and a
/// root in a deep temp dir plus a 64-digit id exceeds that. `/proc/self/fd/N/name` reaches
/// the same file through an open fd of `dir`.
pub(crate) fn with_short_path<T>(
    dir: &Path,
    name: &str,
    f: impl FnOnce(&Path) -> std::io::Result<T>,
) -> std::io::Result<T> {
    let full = dir.join(name);
    if full.as_os_str().len() < 100 {
        return f(&full);
    }
    let handle = fs::File::open(dir)?;
    f(Path::new(&format!("/proc/self/fd/{}/{name}", handle.as_raw_fd())))
}

/// docker's exit code for a finished process: its code, or 128+n for signal n.
fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or(status.signal().map(|s| 128 + s)).unwrap_or(255)
}

/// Whether `pid` runs; a zombie (a container's process whose shim died, not yet reaped by
/// init) does not, though `kill(pid, 0)` succeeds on it.
fn process_alive(pid: i32) -> bool {
    crate::state::process_runs(pid)
}

/// A spec as its record holds it.
fn spec_json(spec: &ContainerSpec) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(spec)
        .map_err(|e| RuntimeError::Invalid { name: spec.name.clone(), message: e.to_string() })
}

/// Whether `pid` is a live berth shim (not a recycled pid). A shim that has ended and is this
/// process's child (see `Runtime::spawn_shim`) is reaped here.
fn shim_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // One read tells both the name and whether it runs; a shim that was sent SIGKILL is gone
    // already, though the kernel may not have torn it down yet: a plan that kept its
    // container would find it dead a moment later.
    match crate::state::process_name_if_runs(pid) {
        Some(name) => name == SHIM_NAME,
        None => {
            // A zombie that is our child is reaped here (not our child: ECHILD, and its own
            // parent reaps it; one still exiting: nothing yet).
            let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            false
        }
    }
}

/// A live shim, as its command line tells (`berth --root R --run D shim ID`).
struct LiveShim {
    pid: i32,
    root: PathBuf,
    run: PathBuf,
    id: String,
}

/// Every live (not zombie) shim on this host, whatever its root.
fn live_shims() -> Vec<LiveShim> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if !shim_alive(pid) {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        if let Some(shim) = parse_shim_cmdline(pid, &cmdline) {
            out.push(shim);
        }
    }
    out
}

/// The root, run dir and container id in a shim's command line (see `spawn_shim`).
fn parse_shim_cmdline(pid: i32, cmdline: &[u8]) -> Option<LiveShim> {
    use std::os::unix::ffi::OsStrExt;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let path = |a: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(a));
    match args.as_slice() {
        [_, b"--root", root, b"--run", run, b"shim", id, ..] => {
            Some(LiveShim { pid, root: path(root), run: path(run), id: String::from_utf8(id.to_vec()).ok()? })
        }
        _ => None,
    }
}

/// Reaps child `pid` on a small thread of its own once it ends. (`shim_alive` may reap it
/// first; this thread then gets ECHILD and ends.)
fn reap_when_done(pid: Pid) {
    let _ = std::thread::Builder::new()
        .name("berth-reap".into())
        .stack_size(64 * 1024)
        .spawn(move || nix::sys::wait::waitpid(pid, None));
}

/// Sleeps until process `pid` ends (a pidfd of it becomes readable) or `end`. Also wakes
/// every 50 ms, so that a pid that cannot be watched costs latency, never a hang.
fn wait_for_exit(pid: i32, end: Instant) {
    use std::os::fd::FromRawFd;
    let pidfd = (pid > 0)
        .then(|| {
            // SAFETY: pidfd_open returns a new fd or -1.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
            // SAFETY: a new fd that nothing else owns.
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .flatten();
    let mut fds: Vec<libc::pollfd> = pidfd
        .iter()
        .map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    let left = end.saturating_duration_since(Instant::now()).min(Duration::from_millis(50));
    // SAFETY: fds is a valid array of pollfd for its length.
    unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, left.as_millis() as i32 + 1) };
}

/// A new random container id (64 hex digits), as docker makes them. Fails rather than
/// return a predictable id when the kernel's random source cannot be read.
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writes at most the remaining length into our own buffer.
        let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(RuntimeError::Sys { what: "read random bytes for a new id".into(), source: err });
        }
        filled += n as usize;
    }
    Ok(hex::encode(bytes))
}

/// Refuses strings that cannot reach `execve`: a NUL byte would cut the argument short (or,
/// converted carelessly, make it empty) instead of failing.
fn check_no_nul(what: &'static str, values: &[String]) -> std::result::Result<(), NulByte> {
    match values.iter().position(|v| v.contains('\0')) {
        Some(i) => Err(NulByte { what, entry: i + 1, value: values[i].clone() }),
        None => Ok(()),
    }
}

/// A string with a NUL byte where `execve` needs C strings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: entry {entry} ({value:?}) contains a NUL byte")]
pub struct NulByte {
    /// The list (`command`, `environment`, ...).
    pub what: &'static str,
    /// Its entry, from 1.
    pub entry: usize,
    /// The entry.
    pub value: String,
}

/// The variable that tells the shim its ready fd.
const READY_FD_VAR: &str = "BERTH_SHIM_READY_FD";
/// The variable that tells the shim the fd of the launcher's handoff (see `handoff`).
const GO_FD_VAR: &str = "BERTH_SHIM_GO_FD";

/// Reads the ready fd the launcher passed (`BERTH_SHIM_READY_FD`).
pub fn ready_fd_from_env() -> Option<OwnedFd> {
    fd_from_env(READY_FD_VAR)
}

/// The handoff socket the launcher passed (`BERTH_SHIM_GO_FD`).
pub(crate) fn go_fd_from_env() -> Option<OwnedFd> {
    fd_from_env(GO_FD_VAR)
}

fn fd_from_env(var: &str) -> Option<OwnedFd> {
    use std::os::fd::FromRawFd;
    let fd: i32 = std::env::var(var).ok()?.parse().ok()?;
    // SAFETY: the launcher dup'ed the pipe to this fd for us; nothing else owns it.
    (fd >= 3 && Path::new(&format!("/proc/self/fd/{fd}")).exists())
        .then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod sweep_tests {
    use super::*;

    #[test]
    fn a_shim_command_line_tells_its_root_run_dir_and_container() {
        let line = b"/usr/bin/berth\0--root\0/tmp/berth-a/root\0--run\0/tmp/berth-a/run\0shim\0abc\0";
        let shim = parse_shim_cmdline(7, line).unwrap();
        assert_eq!(
            (shim.pid, shim.root.as_path(), shim.run.as_path(), shim.id.as_str()),
            (7, Path::new("/tmp/berth-a/root"), Path::new("/tmp/berth-a/run"), "abc")
        );
        // Anything else is no shim of ours to judge.
        assert!(parse_shim_cmdline(7, b"/usr/bin/berth\0shim\0abc\0").is_none());
        assert!(parse_shim_cmdline(7, b"").is_none());
    }
}
