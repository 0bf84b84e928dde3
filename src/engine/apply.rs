//! Applying a plan: networks and volumes first, then every service in its own thread, each
//! starting the moment its dependencies' conditions hold (`service_started`,
//! `service_healthy`, `service_completed_successfully`), so that independent branches of the
//! graph come up side by side.

use std::collections::BTreeMap;
use std::fs;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::compose::LoadedProject;
use crate::graph::{EdgeKind, GraphNode, ServiceGraph};
use crate::runtime::spec::{EtcFiles, NetNamespace};
use crate::runtime::status::{ContainerStatus, HealthState, State};
use crate::runtime::{RuntimeError, new_id};
use crate::volume::{MountRequest, service_mounts};

use super::Engine;
use super::error::{EngineError, Result};
use super::hooks::{HookKind, run_hooks};
use super::observe::{ProjectContainer, is_running, project_containers, status_of};
use super::plan::{ContainerAction, Plan, ServicePlan};
use super::progress::Progress;
use super::spec::{PeerRef, ServiceContext, attach_request, container_spec};

/// How long polling for a dependency's condition sleeps between looks.
const POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Pending,
    Ready,
    Failed(String),
}

/// Where service threads publish how they ended, and wait for each other.
struct Board {
    outcomes: Mutex<BTreeMap<String, Outcome>>,
    changed: Condvar,
}

impl Board {
    fn set(&self, service: &str, outcome: Outcome) {
        let mut map = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(service.to_string(), outcome);
        self.changed.notify_all();
    }

    /// Waits until `service` has finished its part; `None` when it is not in the plan.
    fn wait(&self, service: &str) -> Option<Outcome> {
        let mut map = self.outcomes.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            match map.get(service) {
                None => return None,
                Some(Outcome::Pending) => {
                    map = self.changed.wait(map).unwrap_or_else(|p| p.into_inner());
                }
                Some(o) => return Some(o.clone()),
            }
        }
    }
}

/// Everything a service thread needs.
struct Apply<'a> {
    engine: &'a Engine,
    loaded: &'a LoadedProject,
    graph: &'a ServiceGraph,
    plan: &'a Plan,
    progress: &'a Progress,
    board: Board,
}

/// Finishes or clears what an interrupted `up` left: containers noted as being made whose
/// making did not complete are removed with their network attachment, so that the plan
/// makes them again.
pub fn recover(engine: &Engine, project: &str, progress: &Progress) -> Result<()> {
    let dir = engine.pending_dir(project);
    let Ok(entries) = fs::read_dir(&dir) else { return Ok(()) };
    let mut errors = Vec::new();
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        let name = fs::read_to_string(entry.path()).unwrap_or_else(|_| id.clone());
        progress.warn(&format!("cleaning up container {name}, left half-made by an interrupted command"));
        match engine.runtime.remove(&id, true) {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => errors.push(EngineError::runtime(format!("remove container {name}"))(e)),
        }
        if let Err(e) = engine.networks.detach(&id) {
            errors.push(EngineError::net(format!("detach container {name}"))(e));
        }
        let _ = fs::remove_file(entry.path());
    }
    EngineError::collect(errors)
}

/// Applies `plan`: the host then runs what the project describes (for the services the plan
/// covers).
pub fn apply(
    engine: &Engine,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    plan: &Plan,
    progress: &Progress,
) -> Result<()> {
    for orphan in &plan.orphans {
        if plan.remove_orphans {
            remove_container(engine, orphan, plan.options.timeout, progress)?;
        } else {
            progress.warn(&format!(
                "found orphan container {} of service {}; run with --remove-orphans to remove it",
                orphan.name, orphan.service
            ));
        }
    }
    for net in &plan.networks {
        if net.spec.external || net.exists {
            continue;
        }
        progress.event("Network", &net.spec.name, "Creating", false);
        engine
            .networks
            .create(&net.spec)
            .map_err(EngineError::net(format!("create network {}", net.spec.name)))?;
        progress.event("Network", &net.spec.name, "Created", true);
    }
    for vol in &plan.volumes {
        if vol.exists {
            continue;
        }
        progress.event("Volume", &vol.spec.name, "Creating", false);
        engine.volumes.create(&vol.spec).map_err(EngineError::volume("volume"))?;
        progress.event("Volume", &vol.spec.name, "Created", true);
    }
    let outcomes = plan.services.iter().map(|s| (s.name.clone(), Outcome::Pending)).collect();
    let apply = Apply {
        engine,
        loaded,
        graph,
        plan,
        progress,
        board: Board { outcomes: Mutex::new(outcomes), changed: Condvar::new() },
    };
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = plan
            .services
            .iter()
            .map(|sp| {
                let apply = &apply;
                scope.spawn(move || {
                    let result = apply.service(sp);
                    let outcome = match &result {
                        Ok(()) => Outcome::Ready,
                        Err(e) => Outcome::Failed(e.to_string()),
                    };
                    apply.board.set(&sp.name, outcome);
                    result
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(EngineError::Msg("a service thread panicked".into()))))
            .collect()
    });
    // A dependency's failure is reported by the dependency itself; its dependents' errors
    // would only repeat it.
    let mut errors: Vec<EngineError> = results.into_iter().filter_map(Result::err).collect();
    if errors.iter().any(|e| !matches!(e, EngineError::Dependency { .. })) {
        errors.retain(|e| !matches!(e, EngineError::Dependency { .. }));
    }
    EngineError::collect(errors)
}

impl Apply<'_> {
    fn service(&self, sp: &ServicePlan) -> Result<()> {
        self.wait_dependencies(&sp.name)?;
        for action in &sp.actions {
            self.container(sp, action)?;
        }
        Ok(())
    }

    fn wait_dependencies(&self, name: &str) -> Result<()> {
        for (node, kind) in self.graph.direct_dependencies(name) {
            let GraphNode::Service(dep) = node else { continue };
            let (condition, required) = match &kind {
                EdgeKind::DependsOn { condition, required, .. } => (condition.as_str(), *required),
                _ => ("service_started", true),
            };
            let fail = |reason: String| EngineError::Dependency {
                service: name.to_string(),
                dependency: dep.clone(),
                reason,
            };
            match self.board.wait(&dep) {
                // Not part of this `up` (--no-deps, or a service that is not selected).
                None => continue,
                Some(Outcome::Failed(reason)) => {
                    if required {
                        return Err(fail(reason));
                    }
                    self.progress
                        .warn(&format!("service {name}: optional dependency {dep} failed: {reason}"));
                    continue;
                }
                Some(Outcome::Ready) | Some(Outcome::Pending) => {}
            }
            if let Err(reason) = self.condition_holds(&dep, condition) {
                if required {
                    return Err(fail(reason));
                }
                self.progress.warn(&format!("service {name}: optional dependency {dep}: {reason}"));
            }
        }
        Ok(())
    }

    /// Waits until `condition` holds for every container of `service`; the reason when it
    /// never will.
    fn condition_holds(&self, service: &str, condition: &str) -> std::result::Result<(), String> {
        if condition == "service_started" || self.plan.options.no_start {
            return Ok(());
        }
        let containers = project_containers(&self.engine.runtime, &self.plan.project)
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|c| c.service == service && !c.oneoff)
            .collect::<Vec<_>>();
        for c in &containers {
            if condition == "service_healthy" {
                self.progress.event("Container", &c.name, "Waiting", false);
            }
            loop {
                let st = status_of(&self.engine.runtime, &c.id);
                match condition_state(&self.engine.runtime, c, &st, condition) {
                    Some(Ok(())) => {
                        let word = if condition == "service_healthy" { "Healthy" } else { "Exited" };
                        self.progress.event("Container", &c.name, word, true);
                        break;
                    }
                    Some(Err(reason)) => {
                        self.progress.failed("Container", &c.name, &reason);
                        return Err(reason);
                    }
                    None => std::thread::sleep(POLL),
                }
            }
        }
        Ok(())
    }

    fn container(&self, sp: &ServicePlan, action: &ContainerAction) -> Result<()> {
        let engine = self.engine;
        let timeout = self.plan.options.timeout;
        let start = !self.plan.options.no_start;
        match action {
            ContainerAction::Keep { existing } => {
                self.progress.event("Container", &existing.name, "Running", true);
                Ok(())
            }
            ContainerAction::Remove { existing } => {
                remove_container(engine, existing, timeout, self.progress)
            }
            ContainerAction::Create { number, name } => self.create(sp, *number, name, start),
            ContainerAction::Recreate { old } => {
                self.progress.event("Container", &old.name, "Recreate", false);
                remove_container_quietly(engine, self.loaded, old, timeout, self.progress)?;
                self.create(sp, old.number, &old.name, start)
            }
            ContainerAction::Restart { existing } => {
                self.progress.event("Container", &existing.name, "Restarting", false);
                engine
                    .runtime
                    .stop(&existing.id, timeout)
                    .map_err(EngineError::runtime(format!("stop container {}", existing.name)))?;
                self.start_existing(sp, existing)
            }
            ContainerAction::Start { existing, reset } => {
                if !start {
                    return Ok(());
                }
                if *reset {
                    // What is left of a container whose shim died: kill and record it.
                    engine
                        .runtime
                        .stop(&existing.id, Some(Duration::ZERO))
                        .map_err(EngineError::runtime(format!("reset container {}", existing.name)))?;
                }
                self.start_existing(sp, existing)
            }
        }
    }

    fn context<'s>(
        &'s self,
        sp: &'s ServicePlan,
        id: &'s str,
        name: &'s str,
        number: u32,
        peer: &'s dyn Fn(PeerRef<'_>) -> Option<String>,
    ) -> ServiceContext<'s> {
        ServiceContext {
            project: &self.loaded.project,
            service_name: &sp.name,
            service: &self.loaded.project.services[&sp.name],
            image: &sp.image,
            container_id: id,
            container_name: name,
            replica: number,
            config_hash: &sp.config_hash,
            project_dir: &self.loaded.project_dir,
            config_files: &self.loaded.files,
            peer,
        }
    }

    fn create(&self, sp: &ServicePlan, number: u32, name: &str, start: bool) -> Result<()> {
        let engine = self.engine;
        let id = new_id().map_err(EngineError::runtime(format!("create container {name}")))?;
        let pending = engine.pending_dir(&self.plan.project).join(&id);
        crate::state::write_atomic(&pending, name.as_bytes())?;
        self.progress.event("Container", name, "Creating", false);
        let result = self.create_noted(sp, &id, number, name);
        if let Err(e) = result {
            let _ = engine.runtime.remove(&id, true);
            let _ = engine.networks.detach(&id);
            let _ = fs::remove_file(&pending);
            self.progress.failed("Container", name, "Error");
            return Err(e);
        }
        let _ = fs::remove_file(&pending);
        self.progress.event("Container", name, "Created", !start);
        if start {
            self.start(sp, &id, name)?;
        }
        Ok(())
    }

    fn create_noted(&self, sp: &ServicePlan, id: &str, number: u32, name: &str) -> Result<()> {
        let engine = self.engine;
        let project = &self.plan.project;
        let peer = |r: PeerRef<'_>| match r {
            PeerRef::Service(s) => service_container(engine, project, s).map(|c| c.id),
            PeerRef::Container(n) => container_by_name(engine, n),
        };
        let ctx = self.context(sp, id, name, number, &peer);
        let built = container_spec(&ctx)?;
        for w in &built.warnings {
            self.progress.warn(w);
        }
        let mut spec = built.spec;
        let peer_mounts = |r: PeerRef<'_>| engine.runtime.spec(&peer(r)?).ok().map(|s| s.mounts);
        let request = MountRequest {
            project: &self.loaded.project,
            service_name: &sp.name,
            service: ctx.service,
            container_id: id,
            replica: number,
            image: &sp.image,
            peer_mounts: &peer_mounts,
            renew_anonymous: self.plan.options.renew_anon_volumes,
            environment: &self.loaded.environment,
        };
        spec.mounts = service_mounts(&engine.volumes, &request).map_err(EngineError::volume(&sp.name))?;
        let attach_req = attach_request(&ctx, &spec.hostname)?;
        let attachment = engine
            .networks
            .attach(&attach_req)
            .map_err(EngineError::net(format!("container {name}: attach networks")))?;
        spec.namespaces.net = match attachment.netns_path {
            Some(p) => NetNamespace::Path(p),
            None => NetNamespace::Host,
        };
        spec.etc_files = EtcFiles {
            hosts: Some(attachment.hosts_file),
            resolv_conf: Some(attachment.resolv_conf),
            hostname: Some(attachment.hostname_file),
        };
        engine.runtime.create(&spec).map_err(EngineError::runtime(format!("create container {name}")))
    }

    fn start_existing(&self, sp: &ServicePlan, c: &ProjectContainer) -> Result<()> {
        let engine = self.engine;
        // After a reboot (or a cleaned run dir) the network namespace is gone: attach again.
        let spec =
            engine.runtime.spec(&c.id).map_err(EngineError::runtime(format!("container {}", c.name)))?;
        if let NetNamespace::Path(p) = &spec.namespaces.net
            && !p.exists()
        {
            let project = &self.plan.project;
            let peer = |r: PeerRef<'_>| match r {
                PeerRef::Service(s) => service_container(engine, project, s).map(|c| c.id),
                PeerRef::Container(n) => container_by_name(engine, n),
            };
            let ctx = self.context(sp, &c.id, &c.name, c.number, &peer);
            let req = attach_request(&ctx, &spec.hostname)?;
            engine
                .networks
                .attach(&req)
                .map_err(EngineError::net(format!("container {}: attach networks", c.name)))?;
        }
        self.start(sp, &c.id, &c.name)
    }

    fn start(&self, sp: &ServicePlan, id: &str, name: &str) -> Result<()> {
        self.progress.event("Container", name, "Starting", false);
        match self.engine.runtime.start(id) {
            Ok(_) => {}
            Err(e) => {
                self.progress.failed("Container", name, "Error");
                return Err(EngineError::runtime(format!("start container {name}"))(e));
            }
        }
        let hooks = &self.loaded.project.services[&sp.name].post_start;
        run_hooks(&self.engine.runtime, id, name, HookKind::PostStart, hooks, self.progress)?;
        self.progress.event("Container", name, "Started", true);
        Ok(())
    }
}

/// Whether `condition` holds for container `c` now: `Some(Ok)` yes, `Some(Err)` never will,
/// `None` not yet.
fn condition_state(
    runtime: &crate::runtime::Runtime,
    c: &ProjectContainer,
    st: &ContainerStatus,
    condition: &str,
) -> Option<std::result::Result<(), String>> {
    let exited = matches!(st.state, State::Exited | State::Dead);
    match condition {
        "service_healthy" => match st.health.as_ref().map(|h| h.status) {
            Some(HealthState::Healthy) => Some(Ok(())),
            Some(HealthState::Unhealthy) => Some(Err(format!("container {} is unhealthy", c.name))),
            _ if exited => Some(Err(format!("container {} exited ({})", c.name, st.exit_code.unwrap_or(-1)))),
            Some(_) => None,
            None => {
                let has_check = runtime.spec(&c.id).map(|s| s.healthcheck.is_some()).unwrap_or(false);
                if has_check {
                    None
                } else {
                    Some(Err(format!("container {} has no healthcheck configured", c.name)))
                }
            }
        },
        "service_completed_successfully" => {
            if !exited {
                return None;
            }
            match st.exit_code {
                Some(0) => Some(Ok(())),
                code => Some(Err(format!(
                    "service {} didn't complete successfully: exit {}",
                    c.service,
                    code.unwrap_or(-1)
                ))),
            }
        }
        _ => Some(Ok(())),
    }
}

/// The container that stands for `service` (`service:NAME` references): the running one with
/// the lowest number, else the lowest number.
pub fn service_container(engine: &Engine, project: &str, service: &str) -> Option<ProjectContainer> {
    let mut all: Vec<ProjectContainer> = project_containers(&engine.runtime, project)
        .ok()?
        .into_iter()
        .filter(|c| c.service == service && !c.oneoff)
        .collect();
    all.sort_by_key(|c| (!is_running(&status_of(&engine.runtime, &c.id)), c.number));
    all.into_iter().next()
}

/// The id of the container named `name`, in any project.
pub fn container_by_name(engine: &Engine, name: &str) -> Option<String> {
    let ids = engine.runtime.list().ok()?;
    ids.into_iter().find(|id| {
        crate::state::read_json::<crate::runtime::ContainerRecord>(
            &engine.dirs().container(id).join("record.json"),
        )
        .is_ok_and(|r| r.name == name || r.id == name)
    })
}

/// Stops (running `pre_stop` hooks when the project is known), removes and detaches a
/// container.
pub fn remove_container(
    engine: &Engine,
    c: &ProjectContainer,
    timeout: Option<Duration>,
    progress: &Progress,
) -> Result<()> {
    progress.event("Container", &c.name, "Stopping", false);
    engine
        .runtime
        .stop(&c.id, timeout)
        .map_err(EngineError::runtime(format!("stop container {}", c.name)))?;
    progress.event("Container", &c.name, "Removing", false);
    let mut errors = Vec::new();
    if let Err(e) = engine.runtime.remove(&c.id, true) {
        errors.push(EngineError::runtime(format!("remove container {}", c.name))(e));
    }
    if let Err(e) = engine.networks.detach(&c.id) {
        errors.push(EngineError::net(format!("detach container {}", c.name))(e));
    }
    EngineError::collect(errors)?;
    progress.event("Container", &c.name, "Removed", true);
    Ok(())
}

fn remove_container_quietly(
    engine: &Engine,
    loaded: &LoadedProject,
    c: &ProjectContainer,
    timeout: Option<Duration>,
    progress: &Progress,
) -> Result<()> {
    if is_running(&status_of(&engine.runtime, &c.id))
        && let Some(svc) = loaded.project.services.get(&c.service)
    {
        run_hooks(&engine.runtime, &c.id, &c.name, HookKind::PreStop, &svc.pre_stop, progress)?;
    }
    engine
        .runtime
        .stop(&c.id, timeout)
        .map_err(EngineError::runtime(format!("stop container {}", c.name)))?;
    let mut errors = Vec::new();
    if let Err(e) = engine.runtime.remove(&c.id, true) {
        errors.push(EngineError::runtime(format!("remove container {}", c.name))(e));
    }
    if let Err(e) = engine.networks.detach(&c.id) {
        errors.push(EngineError::net(format!("detach container {}", c.name))(e));
    }
    EngineError::collect(errors)
}

/// What `up --wait` waits for in each service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Running, and healthy when it has a healthcheck.
    Running,
    /// A one-shot that a dependent needs with `service_completed_successfully`: exiting 0 is
    /// success.
    Completion,
}

/// Which services `--wait` waits for, and how: one-shots that dependents need completed
/// count as done when they exit 0 (where docker compose fails: docker/compose#10596).
pub fn wait_targets(graph: &ServiceGraph, services: &[String]) -> BTreeMap<String, WaitFor> {
    let mut out: BTreeMap<String, WaitFor> = services.iter().map(|s| (s.clone(), WaitFor::Running)).collect();
    for s in services {
        for (node, kind) in graph.direct_dependencies(s) {
            if let (GraphNode::Service(dep), EdgeKind::DependsOn { condition, .. }) = (node, kind)
                && condition == "service_completed_successfully"
                && let Some(w) = out.get_mut(&dep)
            {
                *w = WaitFor::Completion;
            }
        }
    }
    out
}

/// `up --wait`: waits until every container of `targets` is running (healthy where it has a
/// healthcheck) or, for completions, has exited 0; fails at the first that cannot get there,
/// or after `timeout`.
pub fn wait_ready(
    engine: &Engine,
    project: &str,
    targets: &BTreeMap<String, WaitFor>,
    timeout: Option<Duration>,
    progress: &Progress,
) -> Result<()> {
    let end = timeout.map(|t| Instant::now() + t);
    let containers: Vec<ProjectContainer> = project_containers(&engine.runtime, project)?
        .into_iter()
        .filter(|c| !c.oneoff && targets.contains_key(&c.service))
        .collect();
    for c in &containers {
        let how = targets[&c.service];
        let has_check = engine.runtime.spec(&c.id).map(|s| s.healthcheck.is_some()).unwrap_or(false);
        loop {
            let st = status_of(&engine.runtime, &c.id);
            let exited = matches!(st.state, State::Exited | State::Dead);
            let verdict = match how {
                WaitFor::Completion if exited => match st.exit_code {
                    Some(0) => Some(Ok("Exited")),
                    code => {
                        Some(Err(format!("container {} exited with code {}", c.name, code.unwrap_or(-1))))
                    }
                },
                WaitFor::Completion => None,
                WaitFor::Running if exited => {
                    Some(Err(format!("container {} exited with code {}", c.name, st.exit_code.unwrap_or(-1))))
                }
                WaitFor::Running if !has_check => (st.state == State::Running).then_some(Ok("Running")),
                WaitFor::Running => match st.health.as_ref().map(|h| h.status) {
                    Some(HealthState::Healthy) => Some(Ok("Healthy")),
                    Some(HealthState::Unhealthy) => Some(Err(format!("container {} is unhealthy", c.name))),
                    _ => None,
                },
            };
            match verdict {
                Some(Ok(word)) => {
                    progress.event("Container", &c.name, word, true);
                    break;
                }
                Some(Err(reason)) => {
                    progress.failed("Container", &c.name, "Error");
                    return Err(EngineError::Wait(reason));
                }
                None => {}
            }
            if end.is_some_and(|e| Instant::now() > e) {
                return Err(EngineError::Wait(format!(
                    "timed out waiting for container {} to be ready",
                    c.name
                )));
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}
