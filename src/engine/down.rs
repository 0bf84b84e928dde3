//! Taking a project away (`down`), and stopping and starting its containers (`stop`,
//! `start`). Teardown keeps going past a failed step and reports every failure at the end,
//! so that one stuck resource does not leave the rest behind.

use std::fs;
use std::time::Duration;

use crate::compose::LoadedProject;
use crate::graph::ServiceGraph;

use super::Engine;
use super::error::{EngineError, Result};
use super::execute::{Executor, recover};
use super::observe::{Scope, observe};
use super::plan::{down_scope, plan_down, plan_start, plan_stop};
use super::progress::Progress;

// The options live with the planner that reads them (plan.rs), so that plan does not import
// down and down plan; they are re-exported here, where callers look for them.
pub use super::plan::{DownOptions, RemoveImages};

/// `down`: stops and removes the project's containers (dependents first), then its
/// networks, and with the options its volumes and images. `loaded` is `None` when only the
/// project name is known (no compose file): everything is then found by labels.
pub fn down(
    engine: &Engine,
    project: &str,
    loaded: Option<&LoadedProject>,
    graph: Option<&ServiceGraph>,
    opts: &DownOptions,
    progress: &Progress,
) -> Result<()> {
    let host = engine.host();
    // The shims' and the DNS process's reaping is awaited once, when this returns (see
    // `state::Reaps`): the containers, then the networks and the DNS process go without
    // waiting for init to collect each.
    let _reaps = engine.runtime.reaps().defer();
    recover(&host, project, progress)?;
    let observed = observe(&host, project, &down_scope(loaded, opts))?;
    let plan = plan_down(project, loaded, graph, &observed, opts);
    let done = Executor { host, loaded, graph, progress }.execute(&plan);
    // What networks left without records (a command killed after removing a record but not
    // its bridge), and the DNS process, which goes with the last network even when only its
    // pid file or its process tells of it.
    let mut errors = Vec::new();
    for name in &plan.remove_networks {
        if let Err(e) = host.networks.forget(name) {
            errors.push(EngineError::net(format!("remove network {name}"))(e));
        }
    }
    if let Err(e) = host.networks.sync_dns() {
        errors.push(EngineError::net("DNS process")(e));
    }
    done?;
    EngineError::collect(errors)?;
    // The project's records (lock, notes) go with it.
    let dir = engine.dirs().project(project);
    let _ = fs::remove_dir_all(engine.pending_dir(project));
    let _ = fs::remove_file(dir.join("lock"));
    let _ = fs::remove_dir(&dir);
    crate::events::remove_project(engine.dirs(), project);
    Ok(())
}

/// `stop`: stops the project's running containers (of `services`, or all), dependents first.
pub fn stop(
    engine: &Engine,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    services: &[String],
    timeout: Option<Duration>,
    progress: &Progress,
) -> Result<()> {
    let host = engine.host();
    let observed = observe(&host, &loaded.project.name, &Scope::default())?;
    let plan = plan_stop(loaded, graph, &observed, services, timeout)?;
    Executor { host, loaded: Some(loaded), graph: Some(graph), progress }.execute(&plan)
}

/// `start`: starts the project's existing containers (of `services`, or all) in dependency
/// order; creates nothing. The caller holds the project's lock.
pub fn start(
    engine: &Engine,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    services: &[String],
    progress: &Progress,
) -> Result<()> {
    let host = engine.host();
    // Started containers resolve names through the DNS process: the reconcile step starts it
    // again if it was killed, and clears what an interrupted command left, as for `up`.
    recover(&host, &loaded.project.name, progress)?;
    let observed = observe(&host, &loaded.project.name, &Scope::default())?;
    let plan = plan_start(loaded, graph, &observed, services)?;
    Executor { host, loaded: Some(loaded), graph: Some(graph), progress }.execute(&plan)
}
