//! The engine: plans what `up` must change on this host (by config hash, against the
//! containers it finds) and applies the plan as far in parallel as the dependency graph
//! allows; `down`, `start`, `stop` and the queries `ps` and `logs` work on what it made.
//! It calls the image, volume, network and runtime modules and never the kernel itself.

pub mod apply;
pub mod down;
pub mod error;
pub mod hash;
pub mod hooks;
pub mod images;
pub mod logs;
pub mod observe;
pub mod plan;
pub mod progress;
pub mod provider;
pub mod spec;

use std::path::PathBuf;

use crate::netns::Networks;
use crate::runtime::Runtime;
use crate::state::{Dirs, Lock};
use crate::volume::Volumes;

pub use error::{EngineError, Result};
pub use plan::{Plan, UpOptions};

/// The modules the engine drives, on one root and run dir.
#[derive(Debug)]
pub struct Engine {
    /// Containers.
    pub runtime: Runtime,
    /// Networks.
    pub networks: Networks,
    /// Volumes.
    pub volumes: Volumes,
    dirs: Dirs,
}

impl Engine {
    /// An engine on `dirs`; `exe` is the berth binary re-executed as shim, DNS server and
    /// `join` (the running executable for the CLI, the built binary for tests).
    pub fn new(dirs: &Dirs, exe: impl Into<PathBuf>) -> Engine {
        let exe = exe.into();
        Engine {
            runtime: Runtime::new(dirs, exe.clone()),
            networks: Networks::new(dirs).with_exe(exe),
            volumes: Volumes::new(dirs),
            dirs: dirs.clone(),
        }
    }

    /// The dirs.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// Takes the project's lock, waiting for another command of the same project to finish;
    /// `on_wait` is called once if it has to wait.
    pub fn lock_project(&self, project: &str, on_wait: impl FnOnce()) -> Result<Lock> {
        let path = self.dirs.project(project).join("lock");
        if let Some(lock) = Lock::try_acquire(&path)? {
            return Ok(lock);
        }
        on_wait();
        Ok(Lock::acquire(&path)?)
    }

    /// Where `up` notes containers it is making, so that an interrupted `up` can be
    /// finished by the next command.
    pub(crate) fn pending_dir(&self, project: &str) -> PathBuf {
        self.dirs.project(project).join("pending")
    }
}
