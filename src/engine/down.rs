//! Taking a project away (`down`), and stopping and starting its containers (`stop`,
//! `start`). Teardown keeps going past a failed step and reports every failure at the end,
//! so that one stuck resource does not leave the rest behind.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use crate::compose::LoadedProject;
use crate::graph::{GraphNode, ServiceGraph};
use crate::image::ImageStore;
use crate::netns::NetError;
use crate::runtime::status::State;

use super::Engine;
use super::apply::recover;
use super::error::{EngineError, Result};
use super::hooks::{HookKind, run_hooks};
use super::observe::{ProjectContainer, is_running, project_containers, status_of};
use super::plan::{image_reference, network_spec};
use super::progress::Progress;
use crate::labels;

/// Which images `down --rmi` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveImages {
    /// Images without a custom tag (those `build` names `<project>-<service>`).
    Local,
    /// Every image a service uses.
    All,
}

/// What `down` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// Also remove containers of services no longer in the file.
    pub remove_orphans: bool,
    /// Also remove named volumes declared in the file and anonymous volumes.
    pub volumes: bool,
    /// Also remove images.
    pub rmi: Option<RemoveImages>,
    /// Stop timeout (each container's grace time when absent).
    pub timeout: Option<Duration>,
}

/// Service names in stop order, grouped so that each group only depends on later groups.
fn stop_levels(graph: Option<&ServiceGraph>) -> Vec<Vec<String>> {
    let Some(graph) = graph else { return Vec::new() };
    let mut levels: Vec<Vec<String>> = graph
        .levels()
        .into_iter()
        .map(|l| {
            l.into_iter()
                .filter_map(|n| match n {
                    GraphNode::Service(s) => Some(s),
                    _ => None,
                })
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect();
    levels.reverse();
    levels
}

/// Stops containers group by group (dependents first), each group in parallel; runs
/// `pre_stop` hooks of running containers first.
fn stop_in_order(
    engine: &Engine,
    loaded: Option<&LoadedProject>,
    groups: &[Vec<ProjectContainer>],
    timeout: Option<Duration>,
    progress: &Progress,
) -> Vec<EngineError> {
    let mut errors = Vec::new();
    for group in groups {
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = group
                .iter()
                .map(|c| scope.spawn(move || stop_one(engine, loaded, c, timeout, progress)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(EngineError::Msg("a stop thread panicked".into()))))
                .collect()
        });
        errors.extend(results.into_iter().filter_map(Result::err));
    }
    errors
}

fn stop_one(
    engine: &Engine,
    loaded: Option<&LoadedProject>,
    c: &ProjectContainer,
    timeout: Option<Duration>,
    progress: &Progress,
) -> Result<()> {
    let st = status_of(&engine.runtime, &c.id);
    if !matches!(st.state, State::Running | State::Restarting | State::Dead) {
        return Ok(());
    }
    progress.event("Container", &c.name, "Stopping", false);
    if is_running(&st)
        && let Some(svc) = loaded.and_then(|l| l.project.services.get(&c.service))
        && let Err(e) = run_hooks(&engine.runtime, &c.id, &c.name, HookKind::PreStop, &svc.pre_stop, progress)
    {
        progress.warn(&e.to_string());
    }
    engine
        .runtime
        .stop(&c.id, timeout)
        .map_err(EngineError::runtime(format!("stop container {}", c.name)))?;
    progress.event("Container", &c.name, "Stopped", true);
    Ok(())
}

/// Groups `containers` by the stop order of their services; containers of services the
/// graph does not know come first.
fn grouped(graph: Option<&ServiceGraph>, containers: Vec<ProjectContainer>) -> Vec<Vec<ProjectContainer>> {
    let levels = stop_levels(graph);
    let known: BTreeSet<&String> = levels.iter().flatten().collect();
    let mut groups: Vec<Vec<ProjectContainer>> = Vec::new();
    let unknown: Vec<ProjectContainer> =
        containers.iter().filter(|c| !known.contains(&c.service)).cloned().collect();
    if !unknown.is_empty() {
        groups.push(unknown);
    }
    for level in &levels {
        let g: Vec<ProjectContainer> =
            containers.iter().filter(|c| level.contains(&c.service)).cloned().collect();
        if !g.is_empty() {
            groups.push(g);
        }
    }
    groups
}

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
    recover(engine, project, progress)?;
    let mut errors = Vec::new();
    let all = project_containers(&engine.runtime, project)?;
    let (mine, orphans): (Vec<ProjectContainer>, Vec<ProjectContainer>) =
        all.into_iter().partition(|c| loaded.is_none_or(|l| l.project.services.contains_key(&c.service)));
    let mut targets = mine;
    if opts.remove_orphans {
        targets.extend(orphans);
    } else if !orphans.is_empty() {
        let names: Vec<&str> = orphans.iter().map(|c| c.name.as_str()).collect();
        progress.warn(&format!(
            "found orphan containers ({}) for this project; run with --remove-orphans to remove them",
            names.join(", ")
        ));
    }
    let groups = grouped(graph, targets);
    errors.extend(stop_in_order(engine, loaded, &groups, opts.timeout, progress));
    for c in groups.iter().flatten() {
        progress.event("Container", &c.name, "Removing", false);
        let mut ok = true;
        if let Err(e) = engine.runtime.remove(&c.id, true) {
            errors.push(EngineError::runtime(format!("remove container {}", c.name))(e));
            ok = false;
        }
        if let Err(e) = engine.networks.detach(&c.id) {
            errors.push(EngineError::net(format!("detach container {}", c.name))(e));
            ok = false;
        }
        if ok {
            progress.event("Container", &c.name, "Removed", true);
        }
    }

    // Networks: those the file declares (not external ones), and any other with the
    // project's label (a network that left the file).
    let mut networks: BTreeSet<String> = BTreeSet::new();
    if let Some(l) = loaded {
        for key in l.project.networks.keys() {
            if let Some(spec) = network_spec(l, key)
                && !spec.external
            {
                networks.insert(spec.name);
            }
        }
    }
    match engine.networks.list() {
        Ok(list) => networks.extend(
            list.into_iter()
                .filter(|n| n.labels.get(labels::PROJECT).map(String::as_str) == Some(project))
                .map(|n| n.name),
        ),
        Err(e) => errors.push(EngineError::net("list networks")(e)),
    }
    for name in &networks {
        match engine.networks.remove(name) {
            Ok(()) => progress.event("Network", name, "Removed", true),
            Err(NetError::NotFound(_)) => {}
            Err(e) => errors.push(EngineError::net(format!("remove network {name}"))(e)),
        }
    }

    if opts.volumes {
        let mut volumes: BTreeSet<String> = BTreeSet::new();
        if let Some(l) = loaded {
            volumes.extend(crate::volume::project_volume_specs(&l.project).into_iter().map(|v| v.name));
        }
        match engine.volumes.list() {
            Ok(list) => volumes.extend(
                list.into_iter()
                    .filter(|v| v.labels.get(labels::PROJECT).map(String::as_str) == Some(project))
                    .map(|v| v.name),
            ),
            Err(e) => errors.push(EngineError::volume("volume")(e)),
        }
        for name in &volumes {
            match engine.volumes.get(name) {
                Ok(Some(_)) => match engine.volumes.remove(name, false) {
                    Ok(()) => progress.event("Volume", name, "Removed", true),
                    Err(e) => errors.push(EngineError::volume("volume")(e)),
                },
                Ok(None) => {}
                Err(e) => errors.push(EngineError::volume("volume")(e)),
            }
        }
    }

    if let (Some(rmi), Some(l)) = (opts.rmi, loaded) {
        errors.extend(remove_images(engine, l, rmi, progress));
    }
    if errors.is_empty() {
        // The project's records (lock, notes) go with it.
        let dir = engine.dirs().project(project);
        let _ = fs::remove_dir_all(engine.pending_dir(project));
        let _ = fs::remove_file(dir.join("lock"));
        let _ = fs::remove_dir(&dir);
    }
    EngineError::collect(errors)
}

fn remove_images(
    engine: &Engine,
    loaded: &LoadedProject,
    rmi: RemoveImages,
    progress: &Progress,
) -> Vec<EngineError> {
    let mut errors = Vec::new();
    let store = match ImageStore::open(engine.dirs()) {
        Ok(s) => s,
        Err(source) => return vec![EngineError::Image { service: "-".into(), source }],
    };
    let mut refs: BTreeSet<String> = BTreeSet::new();
    for (name, svc) in &loaded.project.services {
        let custom = svc.image.is_some();
        if (rmi == RemoveImages::All || !custom)
            && let Some(r) = image_reference(loaded, name)
        {
            refs.insert(r);
        }
    }
    for r in refs {
        match store.remove(&r, false) {
            Ok(_) => progress.event("Image", &r, "Removed", true),
            Err(crate::image::ImageError::NotFound(_)) => {}
            Err(source) => errors.push(EngineError::Image { service: r.clone(), source }),
        }
    }
    errors
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
    for s in services {
        if !loaded.project.services.contains_key(s) {
            return Err(EngineError::NoSuchService(s.clone()));
        }
    }
    let containers: Vec<ProjectContainer> = project_containers(&engine.runtime, &loaded.project.name)?
        .into_iter()
        .filter(|c| services.is_empty() || services.contains(&c.service))
        .collect();
    let groups = grouped(Some(graph), containers);
    EngineError::collect(stop_in_order(engine, Some(loaded), &groups, timeout, progress))
}

/// `start`: starts the project's existing containers (of `services`, or all) in dependency
/// order; creates nothing.
pub fn start(
    engine: &Engine,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    services: &[String],
    progress: &Progress,
) -> Result<()> {
    for s in services {
        if !loaded.project.services.contains_key(s) {
            return Err(EngineError::NoSuchService(s.clone()));
        }
    }
    let containers = project_containers(&engine.runtime, &loaded.project.name)?;
    let mut started_any = false;
    for service in graph.start_order() {
        if !services.is_empty() && !services.contains(&service) {
            continue;
        }
        for c in containers.iter().filter(|c| c.service == service && !c.oneoff) {
            started_any = true;
            let st = status_of(&engine.runtime, &c.id);
            if is_running(&st) {
                continue;
            }
            if st.state == State::Dead || matches!(st.state, State::Running | State::Restarting) {
                engine
                    .runtime
                    .stop(&c.id, Some(Duration::ZERO))
                    .map_err(EngineError::runtime(format!("reset container {}", c.name)))?;
            }
            progress.event("Container", &c.name, "Starting", false);
            engine
                .runtime
                .start(&c.id)
                .map_err(EngineError::runtime(format!("start container {}", c.name)))?;
            let hooks = &loaded.project.services[&service].post_start;
            run_hooks(&engine.runtime, &c.id, &c.name, HookKind::PostStart, hooks, progress)?;
            progress.event("Container", &c.name, "Started", true);
        }
    }
    if !started_any {
        return Err(EngineError::Msg(format!("project {}: no containers to start", loaded.project.name)));
    }
    Ok(())
}
