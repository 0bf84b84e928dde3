//! `up`'s sequence, written once for the CLI (`up`, `create`, `scale`) and the library
//! ([`crate::stack`]): take the project's lock, finish what an interrupted command left
//! (`recover`), pull or build the images the selected services need, observe, plan, execute,
//! and with `wait` wait until the services are running (healthy where they have a
//! healthcheck). What is shown and how Ctrl-C is caught stay with the caller, through an
//! [`UpSink`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use crate::compose::LoadedProject;
use crate::graph::ServiceGraph;
use crate::image::events::ImageEvents;

use super::Engine;
use super::error::{EngineError, Result};
use super::execute::{Executor, recover, wait_targets};
use super::host::Host;
use super::images::{ImageOptions, ImageProvider, plan_images, service_images};
use super::observe::observe;
use super::plan::{Plan, UpOptions, plan, selected_services, up_scope};
use super::progress::Progress;

/// What `up` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct UpRequest {
    /// What the plan does (services, recreation, scale, `--no-start`, ...).
    pub options: UpOptions,
    /// How images are got (`--pull`, `--build`, `--no-build`).
    pub images: ImageOptions,
    /// `--wait`: wait for the selected services (and their dependencies) to be running and
    /// healthy, for at most the duration given (none: no limit).
    pub wait: Option<Option<Duration>>,
}

/// What `up` did.
#[derive(Debug)]
pub struct UpOutcome {
    /// The plan that was carried out (the unit tests check it; berth's callers need only
    /// what was selected and when).
    #[allow(dead_code, reason = "read by the unit tests")]
    pub plan: Plan,
    /// The services `up` worked on (those named and, unless `--no-deps`, their dependencies;
    /// all when none is named).
    pub selected: Vec<String>,
    /// When the containers began to be made (after the images): containers created before
    /// were kept, the others are new.
    pub started: SystemTime,
}

/// Where `up` reports, and how its caller controls the parts that wait on the user.
pub trait UpSink: Sync {
    /// Resource events (networks, volumes, containers) and warnings.
    fn progress(&self) -> &Progress;

    /// Image events (pulls, builds); default: the progress view.
    fn image_events(&self) -> &dyn ImageEvents {
        self.progress()
    }

    /// Another command holds the project's lock: `up` waits for it (called once).
    fn waiting_for_lock(&self, project: &str) {
        self.progress().warn(&format!("waiting for another berth command on project {project} to finish"));
    }

    /// A flag that stops a running build (its step killed, everything cleaned up) when it
    /// becomes true; `up` then ends with [`EngineError::Interrupted`].
    fn cancel(&self) -> Option<&'static AtomicBool> {
        None
    }

    /// Images are about to be built (`true`) or the builds ended (`false`): a command line
    /// catches Ctrl-C in between, so that a build cleans up instead of being killed.
    fn building(&self, _running: bool) {}
}

/// `up`'s plan for the project as the host is now, without changing anything (`--dry-run`).
pub fn plan_up(
    host: &Host<'_>,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    opts: &UpOptions,
) -> Result<Plan> {
    let observed = observe(host, &loaded.project.name, &up_scope(loaded, graph, opts)?)?;
    plan(loaded, graph, &observed, opts)
}

/// Brings the project up on `engine` as `berth up` does (see the module's comment); the
/// project's lock is held until it returns.
pub fn bring_up(
    engine: &Engine,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    request: &UpRequest,
    sink: &dyn UpSink,
) -> Result<UpOutcome> {
    up_on(&engine.host(), loaded, graph, request, sink, &[], |_| Ok(())).map(|(outcome, ())| outcome)
}

/// `up`'s sequence with one more step, still under the project's lock once the plan ran (and
/// waited, with `wait`): `run` makes its one-off container there, after its dependencies and
/// its service's networks and volumes. The services in `leave` get no containers of their
/// own (the plan leaves their containers alone) but everything else `up` makes for them.
pub fn bring_up_then<T>(
    engine: &Engine,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    request: &UpRequest,
    sink: &dyn UpSink,
    leave: &[String],
    then: impl FnOnce(&Executor<'_>) -> Result<T>,
) -> Result<(UpOutcome, T)> {
    up_on(&engine.host(), loaded, graph, request, sink, leave, then)
}

/// [`bring_up_then`] on any host (the fake in tests): the lock (when the host keeps
/// records), the image provider the host's images give, then [`converge_then`].
fn up_on<T>(
    host: &Host<'_>,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    request: &UpRequest,
    sink: &dyn UpSink,
    leave: &[String],
    then: impl FnOnce(&Executor<'_>) -> Result<T>,
) -> Result<(UpOutcome, T)> {
    let name = &loaded.project.name;
    // A service that does not exist changes nothing, not even the lock's folder.
    selected_services(loaded, graph, &request.options)?;
    let _lock = host.lock_project(name, || sink.waiting_for_lock(name))?;
    let provider = host.images.provider(loaded, sink.cancel()).map_err(EngineError::Store)?;
    let step = Step { leave, then };
    converge_then(host, provider.as_ref(), provider.parallel_pulls(), loaded, graph, request, sink, step)
}

/// The last step of `up`'s sequence and the services it leaves alone.
struct Step<'l, F> {
    leave: &'l [String],
    then: F,
}

/// The sequence after the lock, on any host and image provider (fakes in tests).
#[cfg(test)]
fn converge(
    host: &Host<'_>,
    provider: &dyn ImageProvider,
    parallel_pulls: usize,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    request: &UpRequest,
    sink: &dyn UpSink,
) -> Result<UpOutcome> {
    let step = Step { leave: &[], then: |_: &Executor<'_>| Ok(()) };
    converge_then(host, provider, parallel_pulls, loaded, graph, request, sink, step).map(|(o, ())| o)
}

/// The sequence after the lock, then `step`.
#[allow(clippy::too_many_arguments)] // the sequence's inputs, each needed once
fn converge_then<T>(
    host: &Host<'_>,
    provider: &dyn ImageProvider,
    parallel_pulls: usize,
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    request: &UpRequest,
    sink: &dyn UpSink,
    step: Step<'_, impl FnOnce(&Executor<'_>) -> Result<T>>,
) -> Result<(UpOutcome, T)> {
    let name = &loaded.project.name;
    let progress = sink.progress();
    let selected = selected_services(loaded, graph, &request.options)?;
    recover(host, name, progress)?;
    get_images(provider, parallel_pulls, loaded, &selected, &request.images, sink)?;
    let mut plan = plan_up(host, loaded, graph, &request.options)?;
    plan.services.retain(|s| !step.leave.contains(&s.name));
    let started = SystemTime::now();
    let executor = Executor { host: *host, loaded: Some(loaded), graph: Some(graph), progress };
    executor.execute(&plan)?;
    if let Some(timeout) = request.wait {
        let targets: BTreeMap<_, _> = wait_targets(graph, &selected);
        executor.wait_ready(name, &targets, timeout)?;
    }
    let extra = (step.then)(&executor)?;
    Ok((UpOutcome { plan, selected, started }, extra))
}

/// Pulls or builds what `services` need and the store lacks.
fn get_images(
    provider: &dyn ImageProvider,
    parallel_pulls: usize,
    loaded: &LoadedProject,
    services: &[String],
    opts: &ImageOptions,
    sink: &dyn UpSink,
) -> Result<()> {
    let images = service_images(loaded, services)?;
    // Once per reference: many services often share an image, and each lookup reads the
    // store's index.
    let seen = std::cell::RefCell::new(std::collections::HashMap::new());
    let local = |r: &str| seen.borrow_mut().entry(r.to_string()).or_insert_with(|| provider.local(r)).clone();
    let plan = plan_images(&images, &local, opts, SystemTime::now());
    let builds = !plan.builds.is_empty() || !plan.fallback_builds.is_empty();
    if builds {
        sink.building(true);
    }
    let result = super::images::execute(
        &plan,
        provider,
        sink.image_events(),
        opts.ignore_pull_failures,
        parallel_pulls,
    );
    if builds {
        sink.building(false);
        // A cancelled build fails too; the interrupt is what the user needs to hear.
        if sink.cancel().is_some_and(|f| f.load(Ordering::SeqCst)) {
            return Err(EngineError::Interrupted);
        }
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::engine::fake::{Fake, load, quiet, running};
    use crate::engine::images::{BuildJob, ImageJobError, LocalImage};
    use crate::runtime::status::State;

    const STACK: &str = "services:
  db: {image: x}
  web: {image: x, depends_on: [db]}
  app:
    image: app
    build: .
";

    /// Images: `x` is in the store, everything else is built (or fails to).
    struct Images {
        calls: Mutex<Vec<String>>,
        fail_build: bool,
        cancel: Option<&'static AtomicBool>,
    }

    impl Images {
        fn new() -> Images {
            Images { calls: Mutex::new(Vec::new()), fail_build: false, cancel: None }
        }
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl ImageProvider for Images {
        fn local(&self, reference: &str) -> Option<LocalImage> {
            reference.contains("/x:").then(|| LocalImage { id: "sha256:x".into(), tagged_at: None })
        }
        fn pull(&self, r: &str, _: Option<&str>, _: &dyn ImageEvents) -> std::result::Result<String, ImageJobError> {
            self.calls.lock().unwrap().push(format!("pull {r}"));
            Err(ImageJobError::Invalid("no registry here".into()))
        }
        fn build(&self, job: &BuildJob, _: &dyn ImageEvents) -> std::result::Result<String, ImageJobError> {
            self.calls.lock().unwrap().push(format!("build {}", job.services.join(",")));
            if let Some(flag) = self.cancel {
                flag.store(true, Ordering::SeqCst);
            }
            if self.fail_build {
                Err(ImageJobError::Invalid("step 2 failed".into()))
            } else {
                Ok("sha256:app".into())
            }
        }
        fn bases(&self, _: &BuildJob) -> Vec<String> {
            vec![]
        }
    }

    /// Records what `up` told it.
    struct Sink {
        progress: Progress,
        building: Mutex<Vec<bool>>,
        cancel: Option<&'static AtomicBool>,
    }

    impl UpSink for Sink {
        fn progress(&self) -> &Progress {
            &self.progress
        }
        fn cancel(&self) -> Option<&'static AtomicBool> {
            self.cancel
        }
        fn building(&self, running: bool) {
            self.building.lock().unwrap().push(running);
        }
    }

    fn sink(cancel: Option<&'static AtomicBool>) -> Sink {
        Sink { progress: quiet(), building: Mutex::new(Vec::new()), cancel }
    }

    fn request(services: &[&str]) -> UpRequest {
        UpRequest {
            options: UpOptions {
                services: services.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn images_first_then_the_plan_for_the_selected_services_and_their_dependencies() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x", "app"]);
        let images = Images::new();
        let sink = sink(None);
        let out = converge(&fake.host(), &images, 3, &loaded, &graph, &request(&["web"]), &sink).unwrap();
        assert_eq!(out.selected, ["db", "web"]);
        // `app` is not selected: not built, not made.
        assert!(images.calls().is_empty(), "{:?}", images.calls());
        assert!(sink.building.lock().unwrap().is_empty());
        let made: Vec<String> = fake.containers().into_iter().map(|(n, _)| n).collect();
        assert_eq!(made, ["p-db-1", "p-web-1"]);
        // All services: `app` is built, with the build bracketed for the caller.
        let out = converge(&fake.host(), &images, 3, &loaded, &graph, &request(&[]), &sink).unwrap();
        assert_eq!(out.selected, ["app", "db", "web"]);
        // (`image:` and `build:` both: pulled first, built when the pull fails.)
        assert_eq!(images.calls(), ["pull docker.io/library/app:latest", "build app"]);
        assert_eq!(*sink.building.lock().unwrap(), [true, false]);
        assert!(fake.containers().contains(&("p-app-1".to_string(), State::Running)));
    }

    #[test]
    fn a_failed_build_makes_no_container() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x", "app"]);
        let images = Images { fail_build: true, ..Images::new() };
        let err =
            converge(&fake.host(), &images, 3, &loaded, &graph, &request(&[]), &sink(None)).unwrap_err();
        assert!(err.to_string().contains("step 2 failed"), "{err}");
        assert!(fake.containers().is_empty(), "{:?}", fake.containers());
    }

    #[test]
    fn a_cancelled_build_is_an_interrupt_and_makes_no_container() {
        static CANCEL: AtomicBool = AtomicBool::new(false);
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x", "app"]);
        let images = Images { cancel: Some(&CANCEL), fail_build: true, ..Images::new() };
        let err = converge(&fake.host(), &images, 3, &loaded, &graph, &request(&[]), &sink(Some(&CANCEL)))
            .unwrap_err();
        assert!(matches!(err, EngineError::Interrupted), "{err}");
        assert!(fake.containers().is_empty());
    }

    #[test]
    fn wait_waits_for_the_selected_services() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x", "app"]);
        fake.after_start("web", running());
        let req = UpRequest { wait: Some(Some(Duration::from_secs(5))), ..request(&["web"]) };
        let out = converge(&fake.host(), &Images::new(), 3, &loaded, &graph, &req, &sink(None)).unwrap();
        assert_eq!(out.selected, ["db", "web"]);
    }

    #[test]
    fn an_unknown_service_is_an_error_before_anything() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        let images = Images::new();
        let err = converge(&fake.host(), &images, 3, &loaded, &graph, &request(&["nope"]), &sink(None))
            .unwrap_err();
        assert!(matches!(err, EngineError::NoSuchService(_)), "{err}");
        assert!(fake.take_calls().is_empty());
        assert!(images.calls().is_empty());
    }

    /// `up` on the fake through the whole sequence (lock, images, plan, execute).
    fn up(fake: &Fake, loaded: &LoadedProject, graph: &ServiceGraph, req: &UpRequest) -> Result<UpOutcome> {
        up_on(&fake.host(), loaded, graph, req, &sink(None), &[], |_| Ok(())).map(|(o, ())| o)
    }

    #[test]
    fn a_last_step_runs_after_the_dependencies_and_a_left_service_gets_only_its_resources() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x", "app"]);
        let leave = ["web".to_string()];
        let (out, made) =
            up_on(&fake.host(), &loaded, &graph, &request(&["web"]), &sink(None), &leave, |ex| {
                // What `run` sees when it makes its one-off: the dependency runs, the network exists.
                assert!(ex.host.networks.exists("p_default").unwrap());
                Ok(fake.containers())
            })
            .unwrap();
        assert_eq!(out.selected, ["db", "web"]);
        assert_eq!(made, [("p-db-1".to_string(), State::Running)]);
        assert!(out.plan.services.iter().all(|s| s.name != "web"));
        // A failing last step fails the sequence (after what it made).
        let err = up_on(&fake.host(), &loaded, &graph, &request(&["web"]), &sink(None), &leave, |_| {
            Err::<(), _>(EngineError::Msg("no image".into()))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "no image");
    }

    #[test]
    fn the_image_step_goes_through_the_hosts_images() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.pullable("app");
        up(&fake, &loaded, &graph, &request(&[])).unwrap();
        let calls = fake.take_calls();
        // `app` is missing: pulled (its build is the fallback, not needed), then made.
        let pull = calls.iter().position(|c| c == "pull docker.io/library/app:latest");
        let create = calls.iter().position(|c| c == "create p-app-1");
        assert!(pull.is_some() && create.is_some() && pull < create, "{calls:#?}");
        assert!(!calls.iter().any(|c| c.starts_with("build")), "{calls:#?}");
        // Now present: a second `up` neither pulls nor builds.
        up(&fake, &loaded, &graph, &request(&[])).unwrap();
        assert!(!fake.take_calls().iter().any(|c| c.starts_with("pull") || c.starts_with("build")));
    }

    #[test]
    fn a_failed_pull_falls_back_to_the_build_and_a_failed_build_makes_nothing() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.fail_build();
        let err = up(&fake, &loaded, &graph, &request(&[])).unwrap_err();
        assert!(err.to_string().contains("step 2 failed"), "{err}");
        // (After recover's DNS check:) the pull, its fallback build, and nothing more.
        assert_eq!(fake.take_calls(), ["dns stopped", "pull docker.io/library/app:latest", "build app"]);
        assert!(fake.containers().is_empty() && fake.networks().is_empty());
    }
}
