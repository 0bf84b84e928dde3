//! Carrying out a plan: networks and volumes first, then every service in its own thread,
//! in the plan's order: dependencies first (`up`, `start`: each service's new containers are
//! made at once, and each service starts the moment its dependencies' conditions hold —
//! `service_started`, `service_healthy`, `service_completed_successfully` — so that a chain
//! is created side by side and independent branches come up side by side; a service made
//! from another's container, `network_mode`/`ipc`/`pid: service:X` or `volumes_from`, or one
//! mounting a volume `subpath`, is created only once its dependencies have started), or
//! dependents first (`down`, `stop`). Then what the plan removes (networks, volumes,
//! images). The executor decides nothing: every choice is in the plan. Each operation
//! (create, start, stop, remove, the readiness check) is written once, here.

use std::collections::BTreeMap;
use std::fs;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::compose::LoadedProject;
use crate::compose::model::ServiceHook;
use crate::graph::{EdgeKind, GraphNode, ServiceGraph};
use crate::image::ImageError;
use crate::netns::AttachRequest;
use crate::netns::NetError;
use crate::runtime::spec::{ContainerSpec, EtcFiles, NetNamespace};
use crate::runtime::status::{ContainerStatus, HealthState, State};
use crate::runtime::{RuntimeError, new_id};
use crate::volume::MountRequest;

use super::error::{EngineError, Result, Unmet};
use super::hooks::{HookKind, run_hooks};
use super::host::Host;
use super::observe::{ProjectContainer, containers_of, is_running};
use super::plan::{ContainerAction, Order, Plan, ServicePlan};
use super::progress::Progress;
use super::spec::{PeerRef, ServiceContext, attach_request, container_spec};

/// How long polling for a container's condition sleeps between looks.
const POLL: Duration = Duration::from_millis(50);

/// How long a container without a healthcheck must have been running before `up --wait`
/// counts it as up: a process that fails at once (`sh -c "exit 4"`) has exited by then, and
/// fails the wait instead of passing it (docker compose looks first after its 500 ms tick).
const SETTLE: Duration = Duration::from_millis(500);

/// Whether a container that runs started at least [`SETTLE`] before `now` (or when, is
/// unknown).
fn settled(st: &ContainerStatus, now: std::time::SystemTime) -> bool {
    let Some(started) = st.started_at.as_deref().and_then(crate::runtime::timefmt::parse_rfc3339) else {
        return true;
    };
    now.duration_since(started).is_ok_and(|d| d >= SETTLE)
}

/// What the executor works with: the host's edges, and the project when it is known
/// (`down` without a compose file has only its name).
#[derive(Clone, Copy)]
pub struct Executor<'a> {
    /// The host.
    pub host: Host<'a>,
    /// The project.
    pub loaded: Option<&'a LoadedProject>,
    /// Its graph.
    pub graph: Option<&'a ServiceGraph>,
    /// Where events go.
    pub progress: &'a Progress,
}

#[derive(Debug, Clone)]
enum Outcome {
    Pending,
    Ready,
    /// The service's error, shared by every service that waits on it.
    Failed(Arc<EngineError>),
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

/// Whether `create_then_start` makes the container of `action` before its service's
/// dependencies are ready (a new one, or the replacement of an outdated one).
fn made_ahead(action: &ContainerAction) -> bool {
    matches!(action, ContainerAction::Create { .. } | ContainerAction::Recreate { .. })
}

/// `f` of each item, in order: on a thread of its own for each item that `busy` says has work
/// to do when there are several (a service's replicas: each create writes and syncs records,
/// mounts, attaches to networks; each start waits for its shim), else on this thread.
fn each_at_once<T: Sync, R: Send>(
    items: &[T],
    busy: impl Fn(&T) -> bool,
    f: impl Fn(&T) -> Option<R> + Sync,
) -> Vec<Option<R>> {
    if items.iter().filter(|i| busy(i)).count() <= 1 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(move || f(item))).collect();
        // A panicking `f` panics here too, as it would have on one thread.
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// What became of a service's action before its dependencies were waited for.
enum Ahead {
    /// Not done ahead: done once the dependencies' conditions hold.
    Later,
    /// The container it makes was made (this id); only its start is left.
    Made(String),
    /// Making it failed (with `keep_going`): nothing is left to do.
    Failed,
}

/// What to do when a `pre_stop` hook fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnHookFailure {
    /// Warn and stop anyway (teardown).
    Warn,
    /// Fail the operation (recreation: the old container is kept).
    Fail,
}

/// Why a wait for readiness failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NotReady {
    /// It never will be.
    Never(String),
    /// The deadline passed first.
    TimedOut(String),
}

/// What a readiness check waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// `depends_on: condition: service_healthy`.
    Healthy,
    /// `depends_on: condition: service_completed_successfully`.
    Completed,
    /// `up --wait`.
    Ready(WaitFor),
}

/// Why a container never will be where a wait wants it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Stuck {
    /// Its healthcheck says unhealthy.
    #[error("container {0} is unhealthy")]
    Unhealthy(String),
    /// It exited while it was to become healthy.
    #[error("container {name} exited ({code})")]
    ExitedUnhealthy { name: String, code: i32 },
    /// It has no healthcheck to become healthy by.
    #[error("container {0} has no healthcheck configured")]
    NoHealthcheck(String),
    /// Its service was to complete and it exited non-zero.
    #[error("service {service} didn't complete successfully: exit {code}")]
    NotCompleted { service: String, code: i32 },
    /// It exited (non-zero, or while it was to keep running).
    #[error("container {name} exited with code {code}")]
    Exited { name: String, code: i32 },
}

/// Whether container `c` (status `st`) is where `target` wants it: `Some(Ok(word))` yes
/// (the word for the progress view), `Some(Err)` it never will be, `None` not yet.
/// `has_check`: whether the container has a healthcheck.
fn readiness(
    c: &ProjectContainer,
    st: &ContainerStatus,
    target: Target,
    has_check: bool,
    now: std::time::SystemTime,
) -> Option<std::result::Result<&'static str, Stuck>> {
    let exited = matches!(st.state, State::Exited | State::Dead);
    let code = st.exit_code.unwrap_or(-1);
    let health = st.health.as_ref().map(|h| h.status);
    match target {
        Target::Healthy => match health {
            Some(HealthState::Healthy) => Some(Ok("Healthy")),
            Some(HealthState::Unhealthy) => Some(Err(Stuck::Unhealthy(c.name.clone()))),
            _ if exited => Some(Err(Stuck::ExitedUnhealthy { name: c.name.clone(), code })),
            Some(_) => None,
            None if has_check => None,
            None => Some(Err(Stuck::NoHealthcheck(c.name.clone()))),
        },
        Target::Completed => match st.exit_code {
            _ if !exited => None,
            Some(0) => Some(Ok("Exited")),
            _ => Some(Err(Stuck::NotCompleted { service: c.service.clone(), code })),
        },
        Target::Ready(WaitFor::Completion) => match st.exit_code {
            _ if !exited => None,
            Some(0) => Some(Ok("Exited")),
            _ => Some(Err(Stuck::Exited { name: c.name.clone(), code })),
        },
        Target::Ready(WaitFor::Running) if exited => {
            Some(Err(Stuck::Exited { name: c.name.clone(), code }))
        }
        Target::Ready(WaitFor::Running) if !has_check => {
            (st.state == State::Running && settled(st, now)).then_some(Ok("Running"))
        }
        Target::Ready(WaitFor::Running) => match health {
            Some(HealthState::Healthy) => Some(Ok("Healthy")),
            Some(HealthState::Unhealthy) => Some(Err(Stuck::Unhealthy(c.name.clone()))),
            _ => None,
        },
    }
}

/// Finishes or clears what an interrupted command or a damaged record left, before a plan is
/// made: see [`super::observe::reconcile`].
pub fn recover(host: &Host<'_>, project: &str, progress: &Progress) -> Result<()> {
    super::observe::reconcile(host, project, progress)
}

impl<'a> Executor<'a> {
    /// Carries out `plan`.
    pub fn execute(&self, plan: &Plan) -> Result<()> {
        // Stopped and removed containers' shims are awaited until reaped once, at the end,
        // all together: a lazy init reaps only every second or so, and a wait per container
        // (per dependency level, in a chain) would add that up.
        let _reaps = self.host.containers.reaps().map(crate::state::Reaps::defer);
        let mut errors = Vec::new();
        self.orphans(plan)?;
        self.create_resources(plan)?;
        errors.extend(self.services(plan));
        if plan.keep_going || errors.is_empty() {
            errors.extend(self.remove_resources(plan));
        }
        EngineError::collect(errors)
    }

    fn orphans(&self, plan: &Plan) -> Result<()> {
        if plan.remove_orphans {
            for orphan in &plan.orphans {
                self.stop(orphan, plan.options.timeout, OnHookFailure::Warn, false)?;
                self.remove(orphan, false)?;
            }
        } else if plan.order == Order::DependentsFirst && !plan.orphans.is_empty() {
            let names: Vec<&str> = plan.orphans.iter().map(|c| c.name.as_str()).collect();
            self.progress.warn(&format!(
                "found orphan containers ({}) for this project; run with --remove-orphans to remove them",
                names.join(", ")
            ));
        } else {
            for orphan in &plan.orphans {
                self.progress.warn(&format!(
                    "found orphan container {} of service {}; run with --remove-orphans to remove it",
                    orphan.name, orphan.service
                ));
            }
        }
        Ok(())
    }

    fn create_resources(&self, plan: &Plan) -> Result<()> {
        for net in &plan.networks {
            if net.spec.external || net.exists {
                continue;
            }
            self.progress.event("Network", &net.spec.name, "Creating", false);
            self.host
                .networks
                .create(&net.spec)
                .map_err(EngineError::net(format!("create network {}", net.spec.name)))?;
            self.progress.event("Network", &net.spec.name, "Created", true);
        }
        for vol in &plan.volumes {
            if vol.exists {
                continue;
            }
            self.progress.event("Volume", &vol.spec.name, "Creating", false);
            self.host.volumes.create(&vol.spec).map_err(EngineError::volume("volume"))?;
            self.progress.event("Volume", &vol.spec.name, "Created", true);
        }
        Ok(())
    }

    /// Runs every service's actions, each in its own thread, in the plan's order; the errors.
    fn services(&self, plan: &Plan) -> Vec<EngineError> {
        let outcomes = plan.services.iter().map(|s| (s.name.clone(), Outcome::Pending)).collect();
        let board = Board { outcomes: Mutex::new(outcomes), changed: Condvar::new() };
        // Services with nothing to do are done here, before the others' threads start.
        let mut settled: Vec<std::result::Result<(), Arc<EngineError>>> = Vec::new();
        for sp in plan.services.iter().filter(|sp| self.settled(plan, sp)) {
            let result = sp.actions.iter().try_for_each(|action| self.action(plan, sp, action)).map_err(Arc::new);
            board.set(&sp.name, match &result {
                Ok(()) => Outcome::Ready,
                Err(e) => Outcome::Failed(e.clone()),
            });
            settled.push(result);
        }
        let mut results: Vec<std::result::Result<(), Arc<EngineError>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = plan
                .services
                .iter()
                .filter(|sp| !self.settled(plan, sp))
                .map(|sp| {
                    let board = &board;
                    scope.spawn(move || {
                        match self.service(plan, board, sp) {
                            Ok(()) => {
                                board.set(&sp.name, Outcome::Ready);
                                Ok(())
                            }
                            Err(e) => {
                                let e = Arc::new(e);
                                board.set(&sp.name, Outcome::Failed(e.clone()));
                                Err(e)
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| Err(Arc::new(EngineError::Msg("a service thread panicked".into()))))
                })
                .collect()
        });
        results.extend(settled);
        // A dependency's failure is reported by the dependency itself; its dependents' errors
        // would only repeat it.
        let mut errors: Vec<Arc<EngineError>> = results.into_iter().filter_map(|r| r.err()).collect();
        if errors.iter().any(|e| !matches!(**e, EngineError::Dependency { .. })) {
            errors.retain(|e| !matches!(**e, EngineError::Dependency { .. }));
        }
        // The board and the dependents' errors held the other references: gone now, so each
        // error is owned again (one still shared stays wrapped).
        drop(board);
        errors.into_iter().map(|e| Arc::try_unwrap(e).unwrap_or_else(EngineError::Shared)).collect()
    }

    /// Whether service `sp` only keeps containers that run and waits for no other service
    /// (`up`): it is done at once, on the calling thread. A thread per service costs a
    /// clone, a 2 MiB stack mapping and a join: for a 50-service `up` with nothing to do,
    /// most of what is left once the records are read.
    fn settled(&self, plan: &Plan, sp: &ServicePlan) -> bool {
        plan.order == Order::DependenciesFirst
            && sp.actions.iter().all(|a| matches!(a, ContainerAction::Keep { .. }))
            && self.graph.is_none_or(|g| {
                !g.direct_dependencies(&sp.name).iter().any(|(node, _)| matches!(node, GraphNode::Service(_)))
            })
    }

    fn service(&self, plan: &Plan, board: &Board, sp: &ServicePlan) -> Result<()> {
        match plan.order {
            Order::DependenciesFirst if !self.made_from_another(&sp.name) => {
                return self.create_then_start(plan, board, sp);
            }
            Order::DependenciesFirst => self.wait_dependencies(plan, board, &sp.name)?,
            Order::DependentsFirst => self.wait_dependents(plan, board, &sp.name),
        }
        let mut errors = Vec::new();
        for action in &sp.actions {
            if let Err(e) = self.action(plan, sp, action) {
                if !plan.keep_going {
                    return Err(e);
                }
                errors.push(e);
            }
        }
        EngineError::collect(errors)
    }

    /// Whether service `name`'s containers are made from another service's container
    /// (`network_mode`, `ipc` or `pid: service:X`, `volumes_from`): creating one needs that
    /// container (its id, namespaces, mounts), so it waits for it as a whole. So does one that
    /// mounts a volume's `subpath`: the folder must exist when the container is made, and a
    /// dependency that runs first is often what makes it.
    fn made_from_another(&self, name: &str) -> bool {
        self.loaded.and_then(|l| l.project.services.get(name)).is_some_and(|s| {
            !crate::graph::made_from(s).is_empty()
                || s.volumes.iter().any(|v| v.volume.as_ref().is_some_and(|o| o.subpath.is_some()))
        })
    }

    /// A service's actions, dependencies first: its new containers are made at once (creations
    /// and recreations), and only what starts them, and the rest of its actions, waits for its
    /// dependencies' conditions. As docker compose does: a chain is created side by side and
    /// only the starts follow each other; a dependency that fails leaves them created.
    fn create_then_start(&self, plan: &Plan, board: &Board, sp: &ServicePlan) -> Result<()> {
        let start = !plan.options.no_start;
        let mut errors = Vec::new();
        let mut ahead = Vec::with_capacity(sp.actions.len());
        // A service's replicas are made at once, as the services are.
        let made_ahead = each_at_once(&sp.actions, made_ahead, |action| match action {
            ContainerAction::Create { number, name } => Some(self.make(plan, sp, *number, name, start)),
            ContainerAction::Recreate { old } => Some(self.replace(plan, sp, old, start)),
            _ => None,
        });
        for made in made_ahead {
            let Some(made) = made else {
                ahead.push(Ahead::Later);
                continue;
            };
            match made {
                Ok(id) => ahead.push(Ahead::Made(id)),
                Err(e) if plan.keep_going => {
                    errors.push(e);
                    ahead.push(Ahead::Failed);
                }
                Err(e) => return Err(e),
            }
        }
        if let Err(e) = self.wait_dependencies(plan, board, &sp.name) {
            errors.push(e);
            return EngineError::collect(errors);
        }
        // Then their starts (or the other actions), at once too.
        let steps: Vec<(&ContainerAction, Ahead)> = sp.actions.iter().zip(ahead).collect();
        let busy = |(action, ahead): &(&ContainerAction, Ahead)| match ahead {
            Ahead::Later => !matches!(action, ContainerAction::Keep { .. }),
            Ahead::Made(_) => start,
            Ahead::Failed => false,
        };
        let results = each_at_once(&steps, busy, |(action, ahead)| match (ahead, action) {
            (Ahead::Later, _) => Some(self.action(plan, sp, action)),
            (Ahead::Failed, _) => None,
            (Ahead::Made(_), _) if !start => None,
            (Ahead::Made(id), ContainerAction::Create { name, .. }) => Some(self.start(&sp.name, id, name)),
            (Ahead::Made(id), ContainerAction::Recreate { old }) => Some(self.start(&sp.name, id, &old.name)),
            (Ahead::Made(_), _) => None,
        });
        for result in results.into_iter().flatten() {
            if let Err(e) = result {
                if !plan.keep_going {
                    return Err(e);
                }
                errors.push(e);
            }
        }
        EngineError::collect(errors)
    }

    /// Teardown: waits until every service of the plan that depends on `name` is done,
    /// however it ended.
    fn wait_dependents(&self, plan: &Plan, board: &Board, name: &str) {
        let Some(graph) = self.graph else { return };
        for other in &plan.services {
            let depends = graph
                .direct_dependencies(&other.name)
                .into_iter()
                .any(|(node, _)| matches!(node, GraphNode::Service(ref d) if d == name));
            if depends {
                board.wait(&other.name);
            }
        }
    }

    fn wait_dependencies(&self, plan: &Plan, board: &Board, name: &str) -> Result<()> {
        let Some(graph) = self.graph else { return Ok(()) };
        for (node, kind) in graph.direct_dependencies(name) {
            let GraphNode::Service(dep) = node else { continue };
            let (condition, required) = match &kind {
                EdgeKind::DependsOn { condition, required, .. } => (condition.as_str(), *required),
                _ => ("service_started", true),
            };
            let fail = |reason: Unmet| EngineError::Dependency {
                service: name.to_string(),
                dependency: dep.clone(),
                reason,
            };
            match board.wait(&dep) {
                // Not part of this plan (--no-deps, or a service that is not selected).
                None => continue,
                Some(Outcome::Failed(error)) => {
                    let reason = Unmet::Failed(error);
                    if required {
                        return Err(fail(reason));
                    }
                    self.progress
                        .warn(&format!("service {name}: optional dependency {dep} failed: {reason}"));
                    continue;
                }
                Some(Outcome::Ready) | Some(Outcome::Pending) => {}
            }
            if !plan.wait_conditions || plan.options.no_start {
                continue;
            }
            let target = match condition {
                "service_healthy" => Target::Healthy,
                "service_completed_successfully" => Target::Completed,
                _ => continue,
            };
            if let Err(reason) = self.condition_holds(&plan.project, &dep, target) {
                if required {
                    return Err(fail(reason));
                }
                self.progress.warn(&format!("service {name}: optional dependency {dep}: {reason}"));
            }
        }
        Ok(())
    }

    /// Waits until `target` holds for every container of `service`; the reason when it
    /// never will.
    fn condition_holds(
        &self,
        project: &str,
        service: &str,
        target: Target,
    ) -> std::result::Result<(), Unmet> {
        let containers = self.containers(project).map_err(|e| Unmet::Failed(Arc::new(e)))?;
        for c in containers.iter().filter(|c| c.service == service && !c.oneoff) {
            if target == Target::Healthy {
                self.progress.event("Container", &c.name, "Waiting", false);
            }
            match self.wait_until(c, target, None) {
                Ok(()) => {}
                Err(NotReady::Never(reason) | NotReady::TimedOut(reason)) => {
                    self.progress.failed("Container", &c.name, &reason);
                    return Err(Unmet::Never(reason));
                }
            }
        }
        Ok(())
    }

    /// Polls container `c` until `target` holds (`Ok`), cannot hold or `deadline` passed.
    fn wait_until(
        &self,
        c: &ProjectContainer,
        target: Target,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), NotReady> {
        let has_check = self.host.containers.spec(&c.id).map(|s| s.healthcheck.is_some()).unwrap_or(false);
        loop {
            let st = self.host.containers.status(&c.id);
            match readiness(c, &st, target, has_check, std::time::SystemTime::now()) {
                Some(Ok(word)) => {
                    self.progress.event("Container", &c.name, word, true);
                    return Ok(());
                }
                Some(Err(stuck)) => return Err(NotReady::Never(stuck.to_string())),
                None => {}
            }
            if deadline.is_some_and(|e| Instant::now() > e) {
                return Err(NotReady::TimedOut(format!(
                    "timed out waiting for container {} to be ready",
                    c.name
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The project's containers as they are now (the plan may just have made some).
    fn containers(&self, project: &str) -> Result<Vec<ProjectContainer>> {
        containers_of(self.host.containers, project)
    }

    fn action(&self, plan: &Plan, sp: &ServicePlan, action: &ContainerAction) -> Result<()> {
        let timeout = plan.options.timeout;
        let start = !plan.options.no_start;
        match action {
            ContainerAction::Keep { existing } => {
                self.progress.event("Container", &existing.name, "Running", true);
                Ok(())
            }
            ContainerAction::Remove { existing } => {
                let stopped = self.stop(existing, timeout, OnHookFailure::Warn, false);
                if stopped.is_err() && !plan.keep_going {
                    return stopped;
                }
                // Teardown removes (by force) what would not stop, and reports both.
                let removed = self.remove_with_volumes(existing, plan.remove_anonymous_volumes);
                EngineError::collect(stopped.err().into_iter().chain(removed.err()).collect())
            }
            ContainerAction::Stop { existing } => self.stop(existing, timeout, OnHookFailure::Warn, false),
            ContainerAction::Kill { existing, signal } => {
                self.progress.event("Container", &existing.name, "Killing", false);
                match self.host.containers.kill(&existing.id, signal) {
                    Ok(()) => {
                        self.progress.event("Container", &existing.name, "Killed", true);
                        Ok(())
                    }
                    Err(e) => {
                        self.progress.failed("Container", &existing.name, "Error while Killing");
                        Err(EngineError::runtime(format!("kill container {}", existing.name))(e))
                    }
                }
            }
            ContainerAction::Pause { existing } | ContainerAction::Unpause { existing } => {
                let pause = matches!(action, ContainerAction::Pause { .. });
                let (doing, done) = if pause { ("Pausing", "Paused") } else { ("Unpausing", "Unpaused") };
                self.progress.event("Container", &existing.name, doing, false);
                self.host.containers.pause(&existing.id, pause).map_err(|e| {
                    self.progress.failed("Container", &existing.name, "Error");
                    let what = if pause { "pause" } else { "unpause" };
                    EngineError::runtime(format!("{what} container {}", existing.name))(e)
                })?;
                self.emit(&existing.id, if pause { "pause" } else { "unpause" });
                self.progress.event("Container", &existing.name, done, true);
                Ok(())
            }
            ContainerAction::Create { number, name } => {
                let id = self.make(plan, sp, *number, name, start)?;
                if start { self.start(&sp.name, &id, name) } else { Ok(()) }
            }
            ContainerAction::Recreate { old } => {
                let id = self.replace(plan, sp, old, start)?;
                if start { self.start(&sp.name, &id, &old.name) } else { Ok(()) }
            }
            ContainerAction::Restart { existing } => {
                self.progress.event("Container", &existing.name, "Restarting", false);
                self.stop(existing, timeout, OnHookFailure::Warn, true)?;
                self.start_existing(plan, sp, existing, false)?;
                self.emit(&existing.id, "restart");
                Ok(())
            }
            ContainerAction::Start { existing, reset } => {
                if !start {
                    return Ok(());
                }
                self.start_existing(plan, sp, existing, *reset)
            }
        }
    }

    /// Removes container `c` as [`remove`](Self::remove) does and then, with `anonymous`, the
    /// anonymous volumes it mounted (`rm -v`, `run --rm`); one another container uses stays.
    pub(crate) fn remove_with_volumes(&self, c: &ProjectContainer, anonymous: bool) -> Result<()> {
        let volumes = if anonymous { self.anonymous_volumes(c) } else { Vec::new() };
        self.remove(c, false)?;
        let mut errors = Vec::new();
        for name in volumes {
            match self.host.volumes.remove(&name) {
                Ok(()) => self.progress.event("Volume", &name, "Removed", true),
                Err(e) => errors.push(EngineError::volume("volume")(e)),
            }
        }
        EngineError::collect(errors)
    }

    /// Waits until `condition` (`service_healthy`, `service_completed_successfully`; any
    /// other holds at once) holds for every container of `service`.
    pub(crate) fn condition(
        &self,
        project: &str,
        service: &str,
        condition: &str,
    ) -> std::result::Result<(), Unmet> {
        let target = match condition {
            "service_healthy" => Target::Healthy,
            "service_completed_successfully" => Target::Completed,
            _ => return Ok(()),
        };
        self.condition_holds(project, service, target)
    }

    /// Starts container `id` of `service` and runs the service's `post_start` hooks.
    pub(crate) fn start_container(&self, service: &str, id: &str, name: &str) -> Result<()> {
        self.start(service, id, name)
    }

    /// The anonymous volumes container `c` mounts (`rm -v` removes them with it).
    fn anonymous_volumes(&self, c: &ProjectContainer) -> Vec<String> {
        let Ok(spec) = self.host.containers.spec(&c.id) else { return Vec::new() };
        let Ok(all) = self.host.volumes.list() else { return Vec::new() };
        spec.mounts
            .iter()
            .filter_map(|m| m.volume.clone())
            .filter(|name| {
                all.iter().any(|v| &v.name == name && v.labels.contains_key(crate::volume::LABEL_ANONYMOUS))
            })
            .collect()
    }

    fn hooks(
        &self,
        service: &str,
        pick: fn(&crate::compose::model::ServiceConfig) -> &Vec<ServiceHook>,
    ) -> &'a [ServiceHook] {
        self.loaded.and_then(|l| l.project.services.get(service)).map(|s| pick(s).as_slice()).unwrap_or(&[])
    }

    /// Stops container `c` if it runs (or is what a dead shim left), running its service's
    /// `pre_stop` hooks first when it runs. `quiet`: no events of its own (part of a
    /// recreation or restart).
    fn stop(
        &self,
        c: &ProjectContainer,
        timeout: Option<Duration>,
        on_hook: OnHookFailure,
        quiet: bool,
    ) -> Result<()> {
        let st = self.host.containers.status(&c.id);
        if !matches!(st.state, State::Running | State::Restarting | State::Dead) {
            return Ok(());
        }
        if !quiet {
            self.progress.event("Container", &c.name, "Stopping", false);
        }
        if is_running(&st) {
            let hooks = self.hooks(&c.service, |s| &s.pre_stop);
            if let Err(e) =
                run_hooks(self.host.containers, &c.id, &c.name, HookKind::PreStop, hooks, self.progress)
            {
                match on_hook {
                    OnHookFailure::Fail => return Err(e),
                    OnHookFailure::Warn => self.progress.warn(&e.to_string()),
                }
            }
        }
        self.host
            .containers
            .stop(&c.id, timeout)
            .map_err(EngineError::runtime(format!("stop container {}", c.name)))?;
        self.emit(&c.id, "stop");
        if !quiet {
            self.progress.event("Container", &c.name, "Stopped", true);
        }
        Ok(())
    }

    /// Records event `action` of container `id` in the project's event log (`events`);
    /// nothing without a dirs to write in (the engine's tests).
    fn emit(&self, id: &str, action: &str) {
        if let (Some(dirs), Ok(spec)) = (self.host.projects, self.host.containers.spec(id)) {
            crate::events::emit(dirs, &crate::events::Actor::of_spec(&spec), action, &[]);
        }
    }

    /// Removes container `c` (by force) and detaches it from its networks; reports both
    /// failures.
    fn remove(&self, c: &ProjectContainer, quiet: bool) -> Result<()> {
        if !quiet {
            self.progress.event("Container", &c.name, "Removing", false);
        }
        // Read before it goes: the event names its labels and image.
        let spec = self.host.projects.and(self.host.containers.spec(&c.id).ok());
        // Detached only once removed: a container that cannot be removed keeps its network
        // (a later `down` finds both); one removed but not yet detached (a killed command)
        // leaves an attachment that the next command's reconciliation takes away.
        match self.host.containers.remove(&c.id, true) {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(EngineError::runtime(format!("remove container {}", c.name))(e)),
        }
        self.host.networks.detach(&c.id).map_err(EngineError::net(format!("detach container {}", c.name)))?;
        if let (Some(dirs), Some(spec)) = (self.host.projects, &spec) {
            crate::events::emit(dirs, &crate::events::Actor::of_spec(spec), "destroy", &[]);
        }
        if !quiet {
            self.progress.event("Container", &c.name, "Removed", true);
        }
        Ok(())
    }

    fn context<'s>(
        &'s self,
        sp: &'s ServicePlan,
        id: &'s str,
        name: &'s str,
        number: u32,
        peer: &'s dyn Fn(PeerRef<'_>) -> Option<String>,
    ) -> Option<ServiceContext<'s>> {
        let loaded = self.loaded?;
        Some(ServiceContext {
            project: &loaded.project,
            service_name: &sp.name,
            service: loaded.project.services.get(&sp.name)?,
            image: sp.image.as_ref()?,
            container_id: id,
            container_name: name,
            replica: number,
            config_hash: &sp.config_hash,
            project_dir: &loaded.project_dir,
            config_files: &loaded.files,
            peer,
        })
    }

    /// The id of the container a `service:NAME` or `container:NAME` reference means, now
    /// (for service containers and one-offs alike).
    pub(super) fn peer(&self, project: &str, r: PeerRef<'_>) -> Option<String> {
        match r {
            PeerRef::Service(s) => {
                // The running one with the lowest number, else the lowest number.
                let mut all: Vec<ProjectContainer> = self
                    .containers(project)
                    .ok()?
                    .into_iter()
                    .filter(|c| c.service == s && !c.oneoff)
                    .collect();
                all.sort_by_key(|c| (!is_running(&self.host.containers.status(&c.id)), c.number));
                all.into_iter().next().map(|c| c.id)
            }
            PeerRef::Container(n) => {
                let records = self.host.containers.records().ok()?;
                records.into_iter().find(|r| r.name == n || r.id == n).map(|r| r.id)
            }
        }
    }

    /// Replaces container `old` by a new one with its number and name, not started yet (`start`:
    /// whether it will be): stops it (its `pre_stop` hooks failing keep it), removes it, makes
    /// the new one; its id.
    fn replace(&self, plan: &Plan, sp: &ServicePlan, old: &ProjectContainer, start: bool) -> Result<String> {
        self.progress.event("Container", &old.name, "Recreate", false);
        self.stop(old, plan.options.timeout, OnHookFailure::Fail, true)?;
        self.remove(old, true)?;
        self.make(plan, sp, old.number, &old.name, start)
    }

    /// Makes container `name` (number `number`) of service `sp`, not started yet (`start`:
    /// whether it will be, for the progress view); its id. What a failure half-made goes.
    fn make(&self, plan: &Plan, sp: &ServicePlan, number: u32, name: &str, start: bool) -> Result<String> {
        let id = new_id().map_err(EngineError::runtime(format!("create container {name}")))?;
        let pending = self.host.pending_dir(&plan.project).map(|d| d.join(&id));
        if let Some(p) = &pending {
            crate::state::write_atomic(p, name.as_bytes())?;
        }
        self.progress.event("Container", name, "Creating", false);
        if let Err(e) = self.create_noted(plan, sp, &id, number, name) {
            // Nothing half-made stays: the container and its network attachment go.
            let _ = self.host.containers.remove(&id, true);
            let _ = self.host.networks.detach(&id);
            if let Some(p) = &pending {
                let _ = fs::remove_file(p);
            }
            self.progress.failed("Container", name, "Error");
            return Err(e);
        }
        if let Some(p) = &pending {
            let _ = fs::remove_file(p);
        }
        self.emit(&id, "create");
        self.progress.event("Container", name, "Created", !start);
        Ok(id)
    }

    fn create_noted(&self, plan: &Plan, sp: &ServicePlan, id: &str, number: u32, name: &str) -> Result<()> {
        let peer = |r: PeerRef<'_>| self.peer(&plan.project, r);
        let ctx = self
            .context(sp, id, name, number, &peer)
            .ok_or_else(|| EngineError::Msg(format!("service {}: nothing to create it from", sp.name)))?;
        let built = container_spec(&ctx)?;
        for w in &built.warnings {
            self.progress.warn(w);
        }
        let mut spec = built.spec;
        let peer_mounts = |r: PeerRef<'_>| self.host.containers.spec(&peer(r)?).ok().map(|s| s.mounts);
        let no_environment = std::collections::HashMap::new();
        let request = MountRequest {
            project: ctx.project,
            service_name: &sp.name,
            service: ctx.service,
            container_id: id,
            replica: number,
            image: ctx.image,
            peer_mounts: &peer_mounts,
            renew_anonymous: plan.options.renew_anon_volumes,
            environment: self.loaded.map(|l| &l.environment).unwrap_or(&no_environment),
        };
        spec.mounts = self.host.volumes.mounts(&request).map_err(EngineError::volume(&sp.name))?;
        let attach_req = attach_request(&ctx, &spec.hostname)?;
        self.attach_and_create(&mut spec, &attach_req, name)
    }

    /// Attaches a container to its networks, points its spec at the network namespace and
    /// the `/etc` files that made, and creates it.
    pub(super) fn attach_and_create(
        &self,
        spec: &mut ContainerSpec,
        attach_req: &AttachRequest,
        name: &str,
    ) -> Result<()> {
        let attachment = self
            .host
            .networks
            .attach(attach_req)
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
        self.host.containers.create(spec).map_err(EngineError::runtime(format!("create container {name}")))
    }

    /// Starts an existing container: clears what a dead shim left first (`reset`), attaches
    /// it again when its network namespace is gone (after a reboot).
    fn start_existing(&self, plan: &Plan, sp: &ServicePlan, c: &ProjectContainer, reset: bool) -> Result<()> {
        if reset {
            self.host
                .containers
                .stop(&c.id, Some(Duration::ZERO))
                .map_err(EngineError::runtime(format!("reset container {}", c.name)))?;
        }
        let spec = self
            .host
            .containers
            .spec(&c.id)
            .map_err(EngineError::runtime(format!("container {}", c.name)))?;
        if let NetNamespace::Path(p) = &spec.namespaces.net
            && !p.exists()
        {
            let peer = |r: PeerRef<'_>| self.peer(&plan.project, r);
            if let Some(ctx) = self.context(sp, &c.id, &c.name, c.number, &peer) {
                let req = attach_request(&ctx, &spec.hostname)?;
                self.host
                    .networks
                    .attach(&req)
                    .map_err(EngineError::net(format!("container {}: attach networks", c.name)))?;
            }
        }
        self.start(&sp.name, &c.id, &c.name)
    }

    /// Starts container `id` and runs its service's `post_start` hooks.
    fn start(&self, service: &str, id: &str, name: &str) -> Result<()> {
        self.progress.event("Container", name, "Starting", false);
        if let Err(e) = self.host.containers.start(id) {
            self.progress.failed("Container", name, "Error");
            return Err(EngineError::runtime(format!("start container {name}"))(e));
        }
        let hooks = self.hooks(service, |s| &s.post_start);
        run_hooks(self.host.containers, id, name, HookKind::PostStart, hooks, self.progress)?;
        self.progress.event("Container", name, "Started", true);
        Ok(())
    }

    /// Removes the networks, volumes and images the plan names; the failures.
    fn remove_resources(&self, plan: &Plan) -> Vec<EngineError> {
        let mut errors = Vec::new();
        for name in &plan.remove_networks {
            match self.host.networks.remove(name) {
                Ok(()) => self.progress.event("Network", name, "Removed", true),
                Err(NetError::NotFound(_)) => {}
                Err(e) => errors.push(EngineError::net(format!("remove network {name}"))(e)),
            }
        }
        for name in &plan.remove_volumes {
            match self.host.volumes.exists(name) {
                Ok(true) => match self.host.volumes.remove(name) {
                    Ok(()) => self.progress.event("Volume", name, "Removed", true),
                    Err(e) => errors.push(EngineError::volume("volume")(e)),
                },
                Ok(false) => {}
                Err(e) => errors.push(EngineError::volume("volume")(e)),
            }
        }
        for r in &plan.remove_images {
            match self.host.images.remove(r) {
                Ok(()) => self.progress.event("Image", r, "Removed", true),
                Err(ImageError::NotFound(_)) => {}
                Err(source) => errors.push(EngineError::Image { service: r.clone(), source }),
            }
        }
        errors
    }

    /// `up --wait`: waits until every container of `targets` is running (healthy where it has
    /// a healthcheck) or, for completions, has exited 0; fails at the first that cannot get
    /// there, or after `timeout`.
    pub fn wait_ready(
        &self,
        project: &str,
        targets: &BTreeMap<String, WaitFor>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let containers: Vec<ProjectContainer> = self
            .containers(project)?
            .into_iter()
            .filter(|c| !c.oneoff && targets.contains_key(&c.service))
            .collect();
        for c in &containers {
            match self.wait_until(c, Target::Ready(targets[&c.service]), deadline) {
                Ok(()) => {}
                Err(NotReady::Never(reason)) => {
                    self.progress.failed("Container", &c.name, "Error");
                    return Err(EngineError::Wait(reason));
                }
                Err(NotReady::TimedOut(reason)) => return Err(EngineError::Wait(reason)),
            }
        }
        // One that was up may have exited while the wait went on to the others.
        for c in &containers {
            let st = self.host.containers.status(&c.id);
            if targets[&c.service] == WaitFor::Running && matches!(st.state, State::Exited | State::Dead) {
                let code = st.exit_code.unwrap_or(-1);
                self.progress.failed("Container", &c.name, "Error");
                return Err(EngineError::Wait(format!("container {} exited with code {code}", c.name)));
            }
        }
        Ok(())
    }

    /// `wait`: waits until each of `containers` has exited for good, in parallel, calling
    /// `on_exit` with each one's exit code as it comes; the code of the last to exit.
    pub fn wait_exits(
        &self,
        containers: &[ProjectContainer],
        on_exit: &(dyn Fn(&ProjectContainer, i32) + Sync),
    ) -> Result<i32> {
        let last = Mutex::new(0);
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = containers
                .iter()
                .map(|c| {
                    let last = &last;
                    scope.spawn(move || -> Result<()> {
                        loop {
                            let st =
                                self.host.containers.wait(&c.id, Duration::from_secs(3600)).map_err(
                                    EngineError::runtime(format!("wait for container {}", c.name)),
                                )?;
                            if matches!(st.state, State::Exited | State::Dead) {
                                let code = st.exit_code.unwrap_or(-1);
                                *last.lock().unwrap_or_else(|p| p.into_inner()) = code;
                                on_exit(c, code);
                                return Ok(());
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(EngineError::Msg("a wait thread panicked".into()))))
                .collect()
        });
        EngineError::collect(results.into_iter().filter_map(Result::err).collect())?;
        Ok(last.into_inner().unwrap_or_else(|p| p.into_inner()))
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::down::DownOptions;
    use crate::engine::fake::{Fake, exited, health, load, quiet, reload};
    use crate::engine::observe::{Scope, observe};
    use crate::engine::plan::{UpOptions, plan_start, plan_stop};

    const STACK: &str = r#"
services:
  db:
    image: x
    post_start: [{command: [echo, db-up]}]
    pre_stop: [{command: [echo, db-down]}]
  web:
    image: x
    depends_on: [db]
    volumes: ["data:/data"]
  other: {image: x}
volumes:
  data: {}
"#;

    /// The calls about container `name`, in order.
    fn about(calls: &[String], name: &str) -> Vec<String> {
        calls
            .iter()
            .filter(|c| c.ends_with(&format!(" {name}")) || c.contains(&format!(" {name} ")))
            .cloned()
            .collect()
    }

    fn pos(calls: &[String], call: &str) -> usize {
        calls.iter().position(|c| c == call).unwrap_or_else(|| panic!("{call} not in {calls:?}"))
    }

    #[test]
    fn up_creates_networks_and_volumes_then_containers_in_dependency_order_with_hooks() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        let calls = fake.take_calls();
        assert_eq!(
            about(&calls, "p-db-1"),
            ["attach p-db-1", "create p-db-1", "start p-db-1", "exec p-db-1 echo db-up"]
        );
        assert!(pos(&calls, "network create p_default") < pos(&calls, "create p-db-1"));
        assert!(pos(&calls, "volume create p_data") < pos(&calls, "create p-db-1"));
        // web's start waits for db's, hooks included.
        assert!(pos(&calls, "exec p-db-1 echo db-up") < pos(&calls, "start p-web-1"));
        let states = fake.containers();
        assert_eq!(states.len(), 3);
        assert!(states.iter().all(|(_, s)| *s == State::Running), "{states:?}");
        // A second up changes nothing.
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        assert!(fake.take_calls().is_empty());
    }

    #[test]
    fn recreation_stops_with_hooks_removes_detaches_then_makes_the_new_container() {
        let (dir, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        fake.take_calls();
        let (loaded, graph) =
            reload(&dir, &STACK.replace("  other: {image: x}", "  other: {image: x, init: true}"));
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        let calls = fake.take_calls();
        assert_eq!(
            calls,
            [
                "stop p-other-1",
                "remove p-other-1",
                "detach p-other-1",
                "attach p-other-1",
                "create p-other-1",
                "start p-other-1"
            ]
        );
    }

    #[test]
    fn a_failed_start_keeps_the_container_fails_its_dependents_and_not_the_rest() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.fail_start("p-db-1");
        let err = fake.up(&loaded, &graph, &UpOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("start container p-db-1"), "{text}");
        assert!(!matches!(err, EngineError::Dependency { .. }), "the root cause is reported: {text}");
        let calls = fake.take_calls();
        // Made but not started: kept, for `start` or the next `up`, as docker compose does.
        assert!(fake.containers().contains(&("p-db-1".to_string(), State::Created)));
        assert!(!calls.iter().any(|c| c == "remove p-db-1"));
        // Its dependent is made but never started (docker compose leaves it created too); an
        // independent service runs.
        assert!(calls.contains(&"create p-web-1".to_string()), "{calls:?}");
        assert!(!calls.contains(&"start p-web-1".to_string()), "{calls:?}");
        assert!(fake.containers().contains(&("p-web-1".to_string(), State::Created)));
        assert!(fake.containers().contains(&("p-other-1".to_string(), State::Running)));
        // The next up starts the one it kept rather than making another.
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap_err();
        let calls = fake.take_calls();
        assert!(calls.contains(&"start p-db-1".to_string()) && !calls.contains(&"create p-db-1".to_string()));
    }

    #[test]
    fn a_failed_create_rolls_back_what_it_made_and_nothing_else() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.fail_create("p-web-1");
        let err = fake.up(&loaded, &graph, &UpOptions::default()).unwrap_err();
        assert!(err.to_string().contains("create container p-web-1"), "{err}");
        let calls = fake.take_calls();
        // Its network attachment is undone; what was made before it stays up.
        assert!(pos(&calls, "attach p-web-1") < pos(&calls, "detach p-web-1"));
        assert!(!fake.containers().iter().any(|(n, _)| n == "p-web-1"));
        assert!(fake.containers().contains(&("p-db-1".to_string(), State::Running)));
        assert_eq!(fake.networks(), ["p_default"]);
    }

    #[test]
    fn dependency_conditions_wait_for_health_and_completion() {
        let yaml = r#"
services:
  db: {image: x}
  seed: {image: x}
  web:
    image: x
    depends_on:
      db: {condition: service_healthy}
      seed: {condition: service_completed_successfully}
"#;
        let (_d, loaded, graph) = load(yaml);
        // Healthy and completed: web starts.
        let fake = Fake::with_images(&["x"]);
        fake.after_start("db", health(HealthState::Healthy));
        fake.after_start("seed", exited(0));
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        assert!(fake.containers().contains(&("p-web-1".to_string(), State::Running)));
        // Unhealthy: web is made but not started, and the error says why.
        let fake = Fake::with_images(&["x"]);
        fake.after_start("db", health(HealthState::Unhealthy));
        fake.after_start("seed", exited(0));
        let err = fake.up(&loaded, &graph, &UpOptions::default()).unwrap_err();
        assert!(matches!(&err, EngineError::Dependency { dependency, .. } if dependency == "db"), "{err}");
        assert!(err.to_string().contains("unhealthy"), "{err}");
        assert!(fake.containers().contains(&("p-web-1".to_string(), State::Created)));
        // A one-shot that fails: web is not started.
        let fake = Fake::with_images(&["x"]);
        fake.after_start("db", health(HealthState::Healthy));
        fake.after_start("seed", exited(3));
        let err = fake.up(&loaded, &graph, &UpOptions::default()).unwrap_err();
        assert!(err.to_string().contains("didn't complete successfully: exit 3"), "{err}");
        assert!(fake.containers().contains(&("p-web-1".to_string(), State::Created)));
        // A health that is still starting is waited for until it is decided.
        let fake = Fake::with_images(&["x"]);
        fake.after_start("db", health(HealthState::Starting));
        fake.after_start("seed", exited(0));
        std::thread::scope(|s| {
            let up = s.spawn(|| fake.up(&loaded, &graph, &UpOptions::default()));
            while !fake.containers().iter().any(|(n, st)| n == "p-db-1" && *st == State::Running) {
                std::thread::sleep(Duration::from_millis(5));
            }
            std::thread::sleep(Duration::from_millis(120));
            assert!(fake.containers().contains(&("p-web-1".to_string(), State::Created)), "web waits");
            fake.set_status("p-db-1", health(HealthState::Healthy));
            up.join().expect("thread").expect("up");
        });
        assert!(fake.containers().contains(&("p-web-1".to_string(), State::Running)));
    }

    /// Runs `up` while container `held`'s start is held; `check` sees the calls made by then,
    /// once all of `until` are among them (or 5 s passed for one). Then releases it; up's
    /// result and all its calls.
    fn up_holding(
        fake: &Fake,
        loaded: &LoadedProject,
        graph: &ServiceGraph,
        opts: &UpOptions,
        held: &str,
        until: &[&str],
        check: impl FnOnce(&[String]),
    ) -> (Result<()>, Vec<String>) {
        fake.hold_start(held);
        std::thread::scope(|s| {
            let up = s.spawn(|| fake.up(loaded, graph, opts));
            assert!(fake.wait_for_call(&format!("start {held}")), "{held} is never started");
            // Calls made on other threads are logged in any order: each is waited for.
            let seen = until.iter().all(|call| fake.wait_for_call(call));
            let mut calls = fake.take_calls();
            fake.release(held);
            let result = up.join().expect("up thread");
            check(&calls);
            assert!(seen, "{until:?} not done while {held} starts: {calls:?}");
            calls.append(&mut fake.take_calls());
            (result, calls)
        })
    }

    #[test]
    fn a_services_replicas_are_created_and_started_at_once() {
        let (_d, loaded, graph) = load("services:\n  web: {image: x}\n");
        let fake = Fake::with_images(&["x"]);
        let opts = UpOptions { scale: BTreeMap::from([("web".to_string(), 3)]), ..UpOptions::default() };
        // The first replica's create is held: the others are made meanwhile.
        fake.hold_create("p-web-1");
        std::thread::scope(|s| {
            let up = s.spawn(|| fake.up(&loaded, &graph, &opts));
            let others = fake.wait_for_call("create p-web-2") && fake.wait_for_call("create p-web-3");
            fake.release("p-web-1");
            up.join().expect("up thread").unwrap();
            assert!(others, "the replicas waited for each other's create: {:?}", fake.take_calls());
        });
        // And the first one's start is held: the others start meanwhile.
        fake.take_calls();
        let recreate = UpOptions { force_recreate: true, ..opts.clone() };
        let (result, calls) = up_holding(&fake, &loaded, &graph, &recreate, "p-web-1", &["start p-web-2", "start p-web-3"], |_| {});
        result.unwrap();
        assert!(calls.contains(&"start p-web-2".to_string()), "{calls:?}");
        let running = fake.containers().into_iter().filter(|(_, st)| *st == State::Running).count();
        assert_eq!(running, 3);
        // Made ahead: new containers and replacements only.
        let keep = ContainerAction::Keep { existing: crate::engine::fake::container("web") };
        assert!(!made_ahead(&keep));
        assert!(made_ahead(&ContainerAction::Create { number: 1, name: "p-web-1".into() }));
    }

    const CHAIN: &str = r#"
services:
  db: {image: x}
  api:
    image: x
    depends_on: [db]
  web:
    image: x
    depends_on:
      api: {condition: service_started}
"#;

    #[test]
    fn a_chain_is_created_before_its_first_start_completes_and_started_in_order() {
        let (_d, loaded, graph) = load(CHAIN);
        let fake = Fake::with_images(&["x"]);
        let (result, calls) = up_holding(&fake, &loaded, &graph, &UpOptions::default(), "p-db-1", &["create p-api-1", "create p-web-1"], |calls| {
            assert!(calls.contains(&"create p-api-1".to_string()), "{calls:?}");
            assert!(!calls.iter().any(|c| c == "start p-api-1" || c == "start p-web-1"), "{calls:?}");
        });
        result.unwrap();
        assert!(pos(&calls, "start p-db-1") < pos(&calls, "start p-api-1"), "{calls:?}");
        assert!(pos(&calls, "start p-api-1") < pos(&calls, "start p-web-1"), "{calls:?}");
        assert!(fake.containers().iter().all(|(_, s)| *s == State::Running));
        // `create` (no start) makes them all; `start` then starts them in order.
        let fake = Fake::with_images(&["x"]);
        fake.up(&loaded, &graph, &UpOptions { no_start: true, ..UpOptions::default() }).unwrap();
        assert!(fake.containers().iter().all(|(_, s)| *s == State::Created));
        assert!(!fake.take_calls().iter().any(|c| c.starts_with("start ")));
    }

    #[test]
    fn a_service_made_from_another_container_is_created_once_that_one_started() {
        let yaml = r#"
services:
  db: {image: x, volumes: ["/data"]}
  side: {image: x, network_mode: "service:db"}
  shares: {image: x, ipc: "service:db"}
  copy: {image: x, volumes_from: [db]}
  sub:
    image: x
    depends_on: [db]
    volumes: [{type: volume, source: data, target: /s, volume: {subpath: made-by-db}}]
  plain: {image: x, depends_on: [db]}
volumes:
  data: {}
"#;
        let (_d, loaded, graph) = load(yaml);
        let fake = Fake::with_images(&["x"]);
        let (result, calls) = up_holding(&fake, &loaded, &graph, &UpOptions::default(), "p-db-1", &["create p-plain-1"], |calls| {
            for made_from in ["p-side-1", "p-shares-1", "p-copy-1", "p-sub-1"] {
                assert!(!calls.iter().any(|c| c.ends_with(made_from)), "{made_from} waits: {calls:?}");
            }
        });
        result.unwrap();
        for made_from in ["p-side-1", "p-shares-1", "p-copy-1", "p-sub-1"] {
            assert!(pos(&calls, "start p-db-1") < pos(&calls, &format!("create {made_from}")), "{calls:?}");
        }
        assert!(fake.containers().iter().all(|(_, s)| *s == State::Running), "{:?}", fake.containers());
    }

    #[test]
    fn a_failed_dependency_leaves_the_chain_created_and_names_itself() {
        let (_d, loaded, graph) = load(CHAIN);
        let fake = Fake::with_images(&["x"]);
        fake.fail_start("p-db-1");
        let err = fake.up(&loaded, &graph, &UpOptions::default()).unwrap_err();
        assert!(err.to_string().contains("start container p-db-1"), "{err}");
        assert_eq!(
            fake.containers(),
            [
                ("p-api-1".to_string(), State::Created),
                ("p-db-1".to_string(), State::Created),
                ("p-web-1".to_string(), State::Created)
            ]
        );
        // A dependency that cannot be created: the same.
        let fake = Fake::with_images(&["x"]);
        fake.fail_create("p-api-1");
        let err = fake.up(&loaded, &graph, &UpOptions::default()).unwrap_err();
        assert!(err.to_string().contains("create container p-api-1"), "{err}");
        assert!(!matches!(err, EngineError::Dependency { .. }), "{err}");
        assert_eq!(
            fake.containers(),
            [("p-db-1".to_string(), State::Running), ("p-web-1".to_string(), State::Created)]
        );
    }

    #[test]
    fn no_deps_makes_and_starts_only_the_named_service() {
        let (_d, loaded, graph) = load(CHAIN);
        let fake = Fake::with_images(&["x"]);
        let opts = UpOptions { services: vec!["web".into()], no_deps: true, ..UpOptions::default() };
        fake.up(&loaded, &graph, &opts).unwrap();
        assert_eq!(fake.take_calls(), ["network create p_default", "attach p-web-1", "create p-web-1", "start p-web-1"]);
        assert_eq!(fake.containers(), [("p-web-1".to_string(), State::Running)]);
    }

    #[test]
    fn recreations_are_made_ahead_and_restarts_of_dependents_wait() {
        let (dir, loaded, graph) = load(CHAIN);
        let fake = Fake::with_images(&["x"]);
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        fake.take_calls();
        // db and web change: web's new container is made while db's new one starts; its start
        // waits (api, unchanged, is kept).
        let changed = CHAIN.replace("db: {image: x}", "db: {image: x, init: true}").replace(
            "  web:\n    image: x\n",
            "  web:\n    image: x\n    init: true\n",
        );
        let (loaded, graph) = reload(&dir, &changed);
        let (result, calls) = up_holding(&fake, &loaded, &graph, &UpOptions::default(), "p-db-1", &["create p-web-1"], |calls| {
            assert!(pos(calls, "stop p-web-1") < pos(calls, "create p-web-1"), "{calls:?}");
            assert!(!calls.contains(&"start p-web-1".to_string()), "{calls:?}");
        });
        result.unwrap();
        assert!(pos(&calls, "start p-db-1") < pos(&calls, "start p-web-1"), "{calls:?}");
        assert!(!calls.iter().any(|c| c.ends_with("p-api-1")), "{calls:?}");
        // --no-deps: only web is recreated.
        let (loaded, graph) = reload(&dir, &changed.replace("init: true", "init: false"));
        let opts = UpOptions { services: vec!["web".into()], no_deps: true, ..UpOptions::default() };
        fake.up(&loaded, &graph, &opts).unwrap();
        assert_eq!(
            fake.take_calls(),
            ["stop p-web-1", "remove p-web-1", "detach p-web-1", "attach p-web-1", "create p-web-1", "start p-web-1"]
        );
        // A dependent that restarts with its recreated dependency does so after its start.
        let restart = CHAIN.replace("depends_on: [db]", "depends_on: {db: {condition: service_started, restart: true}}");
        let (loaded, graph) = reload(&dir, &restart);
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        fake.take_calls();
        let (loaded, graph) = reload(&dir, &restart.replace("db: {image: x}", "db: {image: x, init: true}"));
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        let calls = fake.take_calls();
        assert!(pos(&calls, "start p-db-1") < pos(&calls, "stop p-api-1"), "{calls:?}");
        assert!(pos(&calls, "stop p-api-1") < pos(&calls, "start p-api-1"), "{calls:?}");
        assert!(!calls.contains(&"create p-api-1".to_string()), "{calls:?}");
    }

    #[test]
    fn down_goes_dependents_first_then_networks_and_volumes_only_with_v() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        fake.take_calls();
        fake.down(Some(&loaded), Some(&graph), &DownOptions::default()).unwrap();
        let calls = fake.take_calls();
        assert!(pos(&calls, "remove p-web-1") < pos(&calls, "stop p-db-1"), "{calls:?}");
        assert_eq!(
            about(&calls, "p-db-1"),
            ["exec p-db-1 echo db-down", "stop p-db-1", "remove p-db-1", "detach p-db-1"]
        );
        let last_container = calls.iter().rposition(|c| c.starts_with("detach ")).unwrap();
        assert!(pos(&calls, "network remove p_default") > last_container);
        assert!(!calls.iter().any(|c| c.starts_with("volume remove")));
        assert!(fake.containers().is_empty() && fake.networks().is_empty());
        assert_eq!(fake.volumes(), ["p_data"]);
        fake.down(Some(&loaded), Some(&graph), &DownOptions { volumes: true, ..DownOptions::default() })
            .unwrap();
        assert_eq!(fake.take_calls(), ["volume remove p_data"]);
        assert!(fake.volumes().is_empty());
    }

    #[test]
    fn down_without_a_file_finds_everything_by_label_and_orphans_need_asking() {
        let (dir, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        fake.add_network("p_gone", Some("p"));
        fake.add_network("someone_else", Some("q"));
        let (smaller, smaller_graph) = reload(&dir, &STACK.replace("  other: {image: x}\n", ""));
        fake.down(Some(&smaller), Some(&smaller_graph), &DownOptions::default()).unwrap();
        assert_eq!(fake.containers().iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["p-other-1"]);
        assert_eq!(fake.networks(), ["someone_else"]);
        fake.down(None, None, &DownOptions::default()).unwrap();
        assert!(fake.containers().is_empty());
    }

    #[test]
    fn stop_and_start_are_plans_over_the_same_operations() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        let progress = quiet();
        let x =
            Executor { host: fake.host(), loaded: Some(&loaded), graph: Some(&graph), progress: &progress };
        let observed = || observe(&fake.host(), "p", &Scope::default()).unwrap();
        let e = plan_start(&loaded, &graph, &observed(), &[]).unwrap_err();
        assert!(e.to_string().contains("no containers to start"), "{e}");
        fake.up(&loaded, &graph, &UpOptions { no_start: true, ..UpOptions::default() }).unwrap();
        assert!(fake.containers().iter().all(|(_, s)| *s == State::Created));
        fake.take_calls();
        x.execute(&plan_start(&loaded, &graph, &observed(), &["web".into()]).unwrap()).unwrap();
        assert_eq!(fake.take_calls(), ["start p-web-1"]);
        x.execute(&plan_start(&loaded, &graph, &observed(), &[]).unwrap()).unwrap();
        let calls = fake.take_calls();
        assert!(
            calls.contains(&"exec p-db-1 echo db-up".to_string())
                && !calls.contains(&"start p-web-1".to_string())
        );
        x.execute(&plan_stop(&loaded, &graph, &observed(), &[], None).unwrap()).unwrap();
        let calls = fake.take_calls();
        assert!(pos(&calls, "stop p-web-1") < pos(&calls, "exec p-db-1 echo db-down"), "{calls:?}");
        assert!(fake.containers().iter().all(|(_, s)| *s == State::Exited));
        // Nothing runs: stop changes nothing.
        x.execute(&plan_stop(&loaded, &graph, &observed(), &[], None).unwrap()).unwrap();
        assert!(fake.take_calls().is_empty());
        let e = plan_stop(&loaded, &graph, &observed(), &["nope".into()], None).unwrap_err();
        assert!(matches!(e, EngineError::NoSuchService(s) if s == "nope"));
    }

    #[test]
    fn wait_ready_waits_for_health_counts_completions_and_times_out() {
        let yaml = r#"
services:
  job: {image: x}
  web:
    image: x
    healthcheck: {test: [CMD, "true"]}
    depends_on:
      job: {condition: service_completed_successfully}
"#;
        let (_d, loaded, graph) = load(yaml);
        let fake = Fake::with_images(&["x"]);
        fake.after_start("job", exited(0));
        fake.after_start("web", health(HealthState::Healthy));
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        let progress = quiet();
        let x =
            Executor { host: fake.host(), loaded: Some(&loaded), graph: Some(&graph), progress: &progress };
        let all: Vec<String> = vec!["job".into(), "web".into()];
        let targets = wait_targets(&graph, &all);
        x.wait_ready("p", &targets, Some(Duration::from_secs(5))).unwrap();
        // Still starting: the deadline ends the wait.
        fake.set_status("p-web-1", health(HealthState::Starting));
        let e = x.wait_ready("p", &targets, Some(Duration::from_millis(100))).unwrap_err();
        assert!(e.to_string().contains("timed out waiting for container p-web-1"), "{e}");
        // A one-shot that failed fails the wait at once.
        fake.set_status("p-job-1", exited(1));
        let e = x.wait_ready("p", &targets, None).unwrap_err();
        assert!(e.to_string().contains("container p-job-1 exited with code 1"), "{e}");
    }

    #[test]
    fn readiness_follows_docker_compose() {
        let c = crate::engine::fake::container("a");
        let running = crate::engine::fake::running();
        let now = std::time::SystemTime::now();
        assert_eq!(readiness(&c, &running, Target::Healthy, true, now), None);
        assert!(
            matches!(readiness(&c, &running, Target::Healthy, false, now), Some(Err(e)) if e.to_string().contains("no healthcheck"))
        );
        assert_eq!(readiness(&c, &exited(0), Target::Completed, false, now), Some(Ok("Exited")));
        assert_eq!(readiness(&c, &running, Target::Completed, false, now), None);
        assert_eq!(readiness(&c, &running, Target::Ready(WaitFor::Running), false, now), Some(Ok("Running")));
        assert_eq!(readiness(&c, &running, Target::Ready(WaitFor::Running), true, now), None);
        assert!(matches!(
            readiness(&c, &exited(2), Target::Ready(WaitFor::Running), false, now),
            Some(Err(e)) if e.to_string() == "container p-a-1 exited with code 2"
        ));
        assert_eq!(
            readiness(&c, &exited(0), Target::Ready(WaitFor::Completion), false, now),
            Some(Ok("Exited"))
        );
    }

    /// The lifecycle commands as plans over the same operations, against the fake host.
    mod lifecycle {
        use super::*;
        use crate::engine::observe::Observed;
        use crate::engine::plan::{plan_kill, plan_pause, plan_restart, plan_rm};

        const APP: &str = r#"
services:
  db:
    image: x
    pre_stop: [{command: [echo, db-down]}]
    post_start: [{command: [echo, db-up]}]
  api:
    image: x
    depends_on:
      db: {condition: service_started, restart: true}
    volumes: ["/cache"]
  web:
    image: x
    depends_on: [api]
  solo:
    image: x
    networks: [back]
networks:
  back: {}
"#;

        fn setup() -> (tempfile::TempDir, crate::compose::LoadedProject, ServiceGraph, Fake) {
            let (d, loaded, graph) = load(APP);
            let fake = Fake::with_images(&["x"]);
            fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
            fake.take_calls();
            (d, loaded, graph, fake)
        }

        fn observed(fake: &Fake) -> Observed {
            observe(&fake.host(), "p", &Scope::default()).unwrap()
        }

        fn run(
            fake: &Fake,
            loaded: &crate::compose::LoadedProject,
            graph: &ServiceGraph,
            plan: &Plan,
        ) -> Result<()> {
            let progress = quiet();
            Executor { host: fake.host(), loaded: Some(loaded), graph: Some(graph), progress: &progress }
                .execute(plan)
        }

        #[test]
        fn restart_keeps_containers_runs_hooks_and_follows_restart_dependents() {
            let (_d, loaded, graph, fake) = setup();
            let before = fake.containers();
            let plan = plan_restart(&loaded, &graph, &observed(&fake), &["db".into()], false, None).unwrap();
            let names: Vec<&str> = plan.services.iter().map(|s| s.name.as_str()).collect();
            // api depends on db with restart: true; web only with service_started.
            assert_eq!(names, ["db", "api"]);
            run(&fake, &loaded, &graph, &plan).unwrap();
            let calls = fake.take_calls();
            assert_eq!(
                about(&calls, "p-db-1"),
                ["exec p-db-1 echo db-down", "stop p-db-1", "start p-db-1", "exec p-db-1 echo db-up"]
            );
            assert!(
                pos(&calls, "exec p-db-1 echo db-up") < pos(&calls, "stop p-api-1")
                    || pos(&calls, "start p-db-1") < pos(&calls, "start p-api-1")
            );
            assert!(!calls.iter().any(|c| c.starts_with("create") || c.starts_with("remove")), "{calls:?}");
            assert_eq!(fake.containers(), before);
            // --no-deps: only the named service.
            let plan = plan_restart(&loaded, &graph, &observed(&fake), &["db".into()], true, None).unwrap();
            assert_eq!(plan.services.len(), 1);
            // A stopped container is started.
            fake.set_status("p-web-1", exited(0));
            let plan = plan_restart(&loaded, &graph, &observed(&fake), &["web".into()], false, None).unwrap();
            run(&fake, &loaded, &graph, &plan).unwrap();
            assert_eq!(fake.take_calls(), ["start p-web-1"]);
            assert!(plan_restart(&loaded, &graph, &observed(&fake), &["nope".into()], false, None).is_err());
        }

        #[test]
        fn rm_takes_stopped_containers_only_unless_stop_and_their_anonymous_volumes_with_v() {
            let (_d, loaded, graph, fake) = setup();
            let rm = |services: &[String], stop: bool, v: bool| {
                plan_rm("p", Some(&loaded), Some(&graph), &observed(&fake), services, stop, v).unwrap()
            };
            // Everything runs: nothing to remove.
            assert!(rm(&[], false, false).services.is_empty());
            fake.set_status("p-api-1", exited(0));
            let plan = rm(&[], false, false);
            assert_eq!(plan.describe(), ["api: remove container p-api-1 (scale down)"]);
            let anon: Vec<String> = fake.volumes().into_iter().filter(|v| v.starts_with("anon-")).collect();
            assert_eq!(anon.len(), 1);
            // Without -v the anonymous volume stays; with it, it goes.
            run(&fake, &loaded, &graph, &plan).unwrap();
            assert!(fake.volumes().contains(&anon[0]));
            let old = anon[0].clone();
            fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
            let anon: Vec<String> =
                fake.volumes().into_iter().filter(|v| v.starts_with("anon-") && *v != old).collect();
            assert_eq!(anon.len(), 1);
            fake.take_calls();
            let plan = rm(&["api".into()], true, true);
            run(&fake, &loaded, &graph, &plan).unwrap();
            let calls = fake.take_calls();
            assert_eq!(calls[..2], ["stop p-api-1", "remove p-api-1"], "{calls:?}");
            // The new container's own anonymous volume goes; the one it did not mount stays.
            assert!(calls.contains(&format!("volume remove {}", anon[0])), "{calls:?}");
            assert!(fake.volumes().contains(&old));
            assert!(!fake.containers().iter().any(|(n, _)| n == "p-api-1"));
            // -s takes running ones, stopped dependents first.
            fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
            fake.take_calls();
            let plan = rm(&[], true, false);
            run(&fake, &loaded, &graph, &plan).unwrap();
            let calls = fake.take_calls();
            assert!(pos(&calls, "remove p-web-1") < pos(&calls, "stop p-db-1"), "{calls:?}");
            assert!(fake.containers().is_empty());
        }

        #[test]
        fn kill_signals_running_containers_and_pause_freezes_them() {
            let (_d, loaded, graph, fake) = setup();
            fake.set_status("p-solo-1", exited(0));
            let plan =
                plan_kill("p", Some(&loaded), &observed(&fake), &["db".into(), "solo".into()], "KILL", false)
                    .unwrap();
            assert_eq!(plan.describe(), ["db: send KILL to container p-db-1"]);
            run(&fake, &loaded, &graph, &plan).unwrap();
            assert_eq!(fake.take_calls(), ["kill p-db-1 KILL"]);
            let st = fake.host().containers.status(&observed(&fake).containers[1].id);
            assert_eq!((st.state, st.exit_code), (State::Exited, Some(137)));
            let e = plan_kill("p", Some(&loaded), &observed(&fake), &[], "SIGNOPE", false).unwrap_err();
            assert!(e.to_string().contains("SIGNOPE"), "{e}");
            // A restarting container is killed too (its restart called off).
            fake.set_status("p-solo-1", ContainerStatus { state: State::Restarting, ..exited(1) });
            let plan = plan_kill("p", Some(&loaded), &observed(&fake), &["solo".into()], "KILL", false).unwrap();
            assert_eq!(plan.describe(), ["solo: send KILL to container p-solo-1"]);
            run(&fake, &loaded, &graph, &plan).unwrap();
            assert_eq!(fake.take_calls(), ["kill p-solo-1 KILL"]);
            // Nothing running of the service: an empty plan.
            assert!(
                plan_kill("p", None, &observed(&fake), &["db".into()], "9", false)
                    .unwrap()
                    .services
                    .is_empty()
            );

            let plan = plan_pause("p", Some(&loaded), &observed(&fake), &[], true).unwrap();
            run(&fake, &loaded, &graph, &plan).unwrap();
            let calls = fake.take_calls();
            assert!(
                calls.contains(&"pause p-api-1".to_string()) && calls.contains(&"pause p-web-1".to_string())
            );
            assert!(!calls.iter().any(|c| c.contains("p-db-1")), "{calls:?}");
            let o = observed(&fake);
            assert!(o.containers.iter().filter(|c| c.service == "api").all(|c| o.status(&c.id).paused));
            // Paused ones are not paused again; unpause takes exactly them.
            assert!(plan_pause("p", Some(&loaded), &o, &[], true).unwrap().services.is_empty());
            let plan = plan_pause("p", Some(&loaded), &o, &["web".into()], false).unwrap();
            run(&fake, &loaded, &graph, &plan).unwrap();
            assert_eq!(fake.take_calls(), ["unpause p-web-1"]);
        }

        #[test]
        fn down_of_services_takes_their_dependents_and_keeps_networks_in_use() {
            let (_d, loaded, graph, fake) = setup();
            let opts = DownOptions { services: vec!["api".into()], ..DownOptions::default() };
            fake.down(Some(&loaded), Some(&graph), &opts).unwrap();
            let left: Vec<String> = fake.containers().into_iter().map(|c| c.0).collect();
            assert_eq!(left, ["p-db-1", "p-solo-1"]);
            // db still uses the default network; nobody uses back any more... but solo does.
            assert_eq!(fake.networks(), ["p_back", "p_default"]);
            let opts = DownOptions { services: vec!["solo".into()], ..DownOptions::default() };
            fake.take_calls();
            fake.down(Some(&loaded), Some(&graph), &opts).unwrap();
            let calls = fake.take_calls();
            assert!(calls.contains(&"network remove p_back".to_string()), "{calls:?}");
            assert_eq!(fake.networks(), ["p_default"]);
            // Without the file, networks stay while containers do.
            let opts = DownOptions { services: vec!["db".into()], ..DownOptions::default() };
            fake.up(&loaded, &graph, &UpOptions { services: vec!["solo".into()], ..UpOptions::default() })
                .unwrap();
            fake.down(None, None, &opts).unwrap();
            assert_eq!(fake.containers().iter().map(|c| c.0.as_str()).collect::<Vec<_>>(), ["p-solo-1"]);
            assert_eq!(fake.networks(), ["p_back", "p_default"]);
        }

        #[test]
        fn up_wait_fails_on_a_container_that_exits_right_after_its_start() {
            let (_d, loaded, graph) = load("services:\n  job: {image: x}\n  web: {image: x}\n");
            let fake = Fake::with_images(&["x"]);
            // Running when first seen, but only just started: not counted yet.
            let just = ContainerStatus {
                started_at: Some(crate::runtime::timefmt::now()),
                ..crate::engine::fake::running()
            };
            fake.after_start("job", just);
            fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
            let progress = quiet();
            let x = Executor {
                host: fake.host(),
                loaded: Some(&loaded),
                graph: Some(&graph),
                progress: &progress,
            };
            let targets = wait_targets(&graph, &["job".to_string(), "web".to_string()]);
            std::thread::scope(|s| {
                let waiting = s.spawn(|| x.wait_ready("p", &targets, Some(Duration::from_secs(5))));
                std::thread::sleep(Duration::from_millis(150));
                fake.set_status("p-job-1", exited(4));
                let e = waiting.join().unwrap().unwrap_err();
                assert!(e.to_string().contains("container p-job-1 exited with code 4"), "{e}");
            });
            // Exit 0 of a service nobody waits for to complete fails too.
            fake.set_status("p-job-1", exited(0));
            assert!(x.wait_ready("p", &targets, Some(Duration::from_secs(1))).is_err());
        }

        #[test]
        fn wait_exits_reports_each_exit_and_returns_the_last_code() {
            let (_d, loaded, graph, fake) = setup();
            fake.set_status("p-db-1", exited(3));
            let o = observed(&fake);
            let db: Vec<ProjectContainer> =
                o.containers.iter().filter(|c| c.service == "db").cloned().collect();
            let progress = quiet();
            let x = Executor {
                host: fake.host(),
                loaded: Some(&loaded),
                graph: Some(&graph),
                progress: &progress,
            };
            let seen = Mutex::new(Vec::new());
            let code =
                x.wait_exits(&db, &|c, code| seen.lock().unwrap().push((c.name.clone(), code))).unwrap();
            assert_eq!(code, 3);
            assert_eq!(seen.into_inner().unwrap(), [("p-db-1".to_string(), 3)]);
        }
    }
}
