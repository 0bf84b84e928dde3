//! The engine: observes what this host has of a project (`observe`), plans what a command
//! must change by config hash without touching the host (`plan`), and carries the plan out
//! as far in parallel as the dependency graph allows (`execute`); `up`, `down`, `start` and
//! `stop` are plans over the same operations. It reaches the image, volume, network and
//! runtime modules through narrow traits (`host`) that its tests fake, and never calls the
//! kernel itself.

pub mod attach;
pub mod discover;
pub mod down;
pub mod error;
pub mod execute;
#[cfg(test)]
mod fake;
pub mod hash;
pub mod hooks;
pub mod host;
pub mod images;
pub mod logs;
pub mod observe;
pub mod oneoff;
pub mod plan;
pub mod progress;
pub mod provider;
pub mod query;
pub mod spec;
pub mod up;

use std::path::PathBuf;

use crate::netns::Networks;
use crate::runtime::Runtime;
use crate::state::{Dirs, Lock};
use crate::volume::Volumes;
use host::{Host, StoreImages};

pub use error::{EngineError, Result};
pub use plan::UpOptions;

/// Takes the lock of `project` under `dirs`, waiting for another command of the same project
/// to finish; `on_wait` is called once if it has to wait.
fn lock_project_at(dirs: &Dirs, project: &str, on_wait: impl FnOnce()) -> Result<Lock> {
    let path = dirs.project(project).join("lock");
    if let Some(lock) = Lock::try_acquire(&path)? {
        return Ok(lock);
    }
    on_wait();
    Ok(Lock::acquire(&path)?)
}

/// The modules the engine drives, on one root and run dir.
#[derive(Debug)]
pub struct Engine {
    /// Containers.
    pub runtime: Runtime,
    /// Networks.
    pub networks: Networks,
    /// Volumes.
    pub volumes: Volumes,
    /// Images.
    pub images: StoreImages,
    dirs: Dirs,
}

impl Engine {
    /// An engine on `dirs`; `exe` is the berth binary re-executed as shim, DNS server and
    /// `join` (the running executable for the CLI, the built binary for tests).
    pub fn new(dirs: &Dirs, exe: impl Into<PathBuf>) -> Engine {
        let exe = exe.into();
        // One set of reap waits for both: a teardown's deferral covers the shims and the DNS
        // process together.
        let reaps = std::sync::Arc::new(crate::state::Reaps::default());
        Engine {
            runtime: Runtime::new(dirs, exe.clone()).with_reaps(reaps.clone()),
            networks: Networks::new(dirs).with_exe(exe).with_reaps(reaps),
            volumes: Volumes::new(dirs),
            images: StoreImages::new(dirs),
            dirs: dirs.clone(),
        }
    }

    /// The host as the planner and executor see it: the real runtime, networks, volumes
    /// and image store.
    pub fn host(&self) -> Host<'_> {
        Host {
            containers: &self.runtime,
            networks: &self.networks,
            volumes: &self.volumes,
            images: self,
            projects: Some(&self.dirs),
        }
    }

    /// The dirs.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// Takes the project's lock, waiting for another command of the same project to finish;
    /// `on_wait` is called once if it has to wait.
    pub fn lock_project(&self, project: &str, on_wait: impl FnOnce()) -> Result<Lock> {
        lock_project_at(&self.dirs, project, on_wait)
    }

    /// Where `up` notes containers it is making, so that an interrupted `up` can be
    /// finished by the next command.
    pub(crate) fn pending_dir(&self, project: &str) -> PathBuf {
        self.dirs.project(project).join("pending")
    }
}
