//! Getting the images a project needs before its containers are made: which services pull,
//! which build, in what order, as docker compose decides it (`pull_policy`, `up --pull`,
//! `up --build`, `--no-build`), then running those pulls and builds through an
//! [`ImageProvider`] (the registry client and builder for real, a fake in tests).
//!
//! The decisions are a pure function of the project, what the store holds and the options
//! ([`plan_images`]), so they are tested without a registry or root.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::compose::LoadedProject;
use crate::compose::model::BuildConfig;
use crate::image::Reference;
use crate::image::events::ImageEvents;

pub use super::error::{BadPullPolicy, ImageJobError};
use super::error::{EngineError, Result};
use super::plan::image_reference;

/// When a service's image is pulled (`pull_policy`), as compose-go reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullPolicy {
    /// Pull every time.
    Always,
    /// Pull when the store does not have the image (`missing`, `if_not_present`, the default).
    Missing,
    /// Never pull; the image must be in the store (or built).
    Never,
    /// Never pull; build it, also when the store has it.
    Build,
    /// Pull when missing or when the local name is older than this (`daily`, `weekly`,
    /// `every_<duration>`).
    Refresh(Duration),
}

impl PullPolicy {
    /// Reads a `pull_policy` value (absent means `missing`). Unknown words are refused (the
    /// schema already restricts them; `refresh` alone is compose-go's spelling of `missing`).
    pub fn parse(value: Option<&str>) -> std::result::Result<PullPolicy, BadPullPolicy> {
        let Some(v) = value else { return Ok(PullPolicy::Missing) };
        Ok(match v {
            "always" => PullPolicy::Always,
            "missing" | "if_not_present" | "refresh" | "" => PullPolicy::Missing,
            "never" => PullPolicy::Never,
            "build" => PullPolicy::Build,
            "daily" => PullPolicy::Refresh(Duration::from_secs(24 * 3600)),
            "weekly" => PullPolicy::Refresh(Duration::from_secs(7 * 24 * 3600)),
            other => match other.strip_prefix("every_").map(parse_every) {
                Some(Some(d)) => PullPolicy::Refresh(d),
                _ => return Err(BadPullPolicy(other.to_string())),
            },
        })
    }
}

/// `1w2d3h4m5s` (each unit at most once, in any order compose-go accepts: we take any order).
fn parse_every(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            'w' => 7 * 24 * 3600,
            'd' => 24 * 3600,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let n: u64 = number.parse().ok()?;
        total = total.checked_add(n.checked_mul(unit)?)?;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return None;
    }
    Some(Duration::from_secs(total))
}

/// What the store knows of an image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    /// Its id (`sha256:` of the config).
    pub id: String,
    /// When the name was last given to an image (pulled, built, tagged), if known.
    pub tagged_at: Option<SystemTime>,
}

/// One service's image as the project asks for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceImage {
    /// The service.
    pub service: String,
    /// Normalized image name (`docker.io/library/redis:latest`); `<project>-<service>` when
    /// the service only builds.
    pub reference: String,
    /// Whether `image:` was written (only then is it pulled).
    pub explicit: bool,
    /// The service's `build:`.
    pub build: Option<BuildConfig>,
    /// Its `pull_policy`.
    pub policy: PullPolicy,
    /// Its `platform`.
    pub platform: Option<String>,
}

/// Options of `up`, `pull` and `build` that change what happens to images.
#[derive(Debug, Clone, Default)]
pub struct ImageOptions {
    /// `up --pull` / `pull --policy`: replaces every service's policy.
    pub pull: Option<PullPolicy>,
    /// `up --build`: build services that have `build:` even when their image exists.
    pub build: bool,
    /// `up --no-build`: never build (a missing image is then an error).
    pub no_build: bool,
    /// Pull failures of services that cannot be built are warnings (`pull --ignore-pull-failures`).
    pub ignore_pull_failures: bool,
    /// Don't pull what can be built (`pull --ignore-buildable`).
    pub ignore_buildable: bool,
    /// Don't build at all, only pull (`berth pull`).
    pub pull_only: bool,
    /// Build every selected service that has `build:` and pull nothing (`berth build`).
    pub build_only: bool,
    /// `build --no-cache`.
    pub no_cache: bool,
    /// `build --pull`: pull base images even when present.
    pub pull_base: bool,
    /// `build --build-arg K=V` (override the file's args of every service built).
    pub build_args: BTreeMap<String, String>,
    /// `build --ssh` (replaces the file's `build.ssh` of every service built).
    pub ssh: Vec<String>,
}

/// A pull of one image name, for one or more services.
#[derive(Debug, Clone, PartialEq)]
pub struct PullStep {
    /// The name pulled.
    pub reference: String,
    /// The services that use it.
    pub services: Vec<String>,
    /// The platform asked for (the first service's).
    pub platform: Option<String>,
    /// Some of the services can build the image, so a failed pull falls back to building.
    pub buildable: bool,
}

/// One build, shared by services whose build is the same.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildJob {
    /// The services built by it, the first one's `build:` is used.
    pub services: Vec<String>,
    /// The build.
    pub build: BuildConfig,
    /// Names given to the result: each service's image name, then `build.tags`.
    pub tags: Vec<String>,
    /// The platform asked for.
    pub platform: Option<String>,
    /// Ignore the build cache.
    pub no_cache: bool,
    /// Pull base images even when present.
    pub pull: bool,
}

/// What must happen before containers are made.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImagePlan {
    /// Pulls (independent of each other).
    pub pulls: Vec<PullStep>,
    /// Builds that are needed whatever the pulls do.
    pub builds: Vec<BuildJob>,
    /// Builds needed only if the pull of `.0` fails (the image can be built instead).
    pub fallback_builds: Vec<(String, BuildJob)>,
}

/// What to say when the image name berth made up for a `build:` service is invalid.
pub(crate) fn derived_hint(derived: bool) -> &'static str {
    if derived {
        " (a service with build: and no image: gets the image name <project>-<service>; use a shorter project name or set image:)"
    } else {
        ""
    }
}

/// The services' images as the project asks for them.
pub fn service_images(loaded: &LoadedProject, services: &[String]) -> Result<Vec<ServiceImage>> {
    let mut out = Vec::new();
    for name in services {
        let Some(svc) = loaded.project.services.get(name) else { continue };
        let raw = image_reference(loaded, name).ok_or_else(|| EngineError::NoImage(name.clone()))?;
        let reference = Reference::parse(&raw)
            .map_err(|e| {
                EngineError::Msg(format!("service {name}: {e}{}", derived_hint(svc.image.is_none())))
            })?
            .full();
        let policy = PullPolicy::parse(svc.pull_policy.as_deref())
            .map_err(|source| EngineError::PullPolicy { service: name.clone(), source })?;
        out.push(ServiceImage {
            service: name.clone(),
            reference,
            explicit: svc.image.is_some(),
            build: svc.build.clone(),
            policy,
            platform: svc.platform.clone(),
        });
    }
    Ok(out)
}

/// The identity of a build: services with the same one build once (docker compose builds
/// each, podman-compose races them).
fn build_key(build: &BuildConfig, platform: &Option<String>) -> String {
    let v = serde_json::json!({
        "context": build.context,
        "dockerfile": build.dockerfile,
        "inline": build.dockerfile_inline,
        "target": build.target,
        "args": build.args,
        "labels": build.labels,
        "network": build.network,
        "secrets": serde_json::to_value(&build.secrets).unwrap_or_default(),
        "additional_contexts": build.additional_contexts,
        "extra_hosts": build.extra_hosts,
        "platform": platform,
    });
    v.to_string()
}

/// Decides pulls and builds, as docker compose's `up` (pull what the policy says, then build
/// what has `build:` and is still missing, or has `pull_policy: build`), `pull` and `build` do.
pub fn plan_images(
    images: &[ServiceImage],
    local: &dyn Fn(&str) -> Option<LocalImage>,
    opts: &ImageOptions,
    now: SystemTime,
) -> ImagePlan {
    let mut plan = ImagePlan::default();
    let mut pulls: BTreeMap<String, usize> = BTreeMap::new();
    let mut jobs: Vec<(String, BuildJob, Option<String>)> = Vec::new();
    for img in images {
        let build =
            if opts.no_build || opts.pull_only && opts.ignore_buildable { None } else { img.build.clone() };
        let mut policy = opts.pull.unwrap_or(img.policy);
        if opts.build && build.is_some() {
            policy = PullPolicy::Build;
        }
        if opts.build_only {
            // `berth build` builds what can be built and pulls nothing.
            if build.is_some() {
                policy = PullPolicy::Build;
            } else {
                continue;
            }
        }
        let present = local(&img.reference);
        let must_pull = img.explicit
            && !(opts.ignore_buildable && img.build.is_some())
            && match policy {
                PullPolicy::Always => true,
                PullPolicy::Never | PullPolicy::Build => false,
                PullPolicy::Missing => present.is_none(),
                PullPolicy::Refresh(every) => match &present {
                    None => true,
                    Some(l) => l.tagged_at.is_none_or(|t| t + every <= now),
                },
            };
        if must_pull {
            match pulls.get(&img.reference) {
                Some(&i) => {
                    plan.pulls[i].services.push(img.service.clone());
                    plan.pulls[i].buildable |= build.is_some();
                }
                None => {
                    pulls.insert(img.reference.clone(), plan.pulls.len());
                    plan.pulls.push(PullStep {
                        reference: img.reference.clone(),
                        services: vec![img.service.clone()],
                        platform: img.platform.clone(),
                        buildable: build.is_some(),
                    });
                }
            }
        }
        if opts.pull_only {
            continue;
        }
        let Some(build) = build else { continue };
        let needed = policy == PullPolicy::Build || present.is_none();
        if !needed {
            continue;
        }
        // Missing and pulled first: built only if that pull fails.
        let fallback_of = (must_pull && policy != PullPolicy::Build).then(|| img.reference.clone());
        let mut build = build;
        for (k, v) in &opts.build_args {
            build.args.insert(k.clone(), Some(v.clone()));
        }
        if !opts.ssh.is_empty() {
            build.ssh = Some(serde_json::json!(opts.ssh));
        }
        let key = build_key(&build, &img.platform);
        match jobs.iter_mut().find(|(k, _, f)| *k == key && *f == fallback_of) {
            Some((_, job, _)) => {
                job.services.push(img.service.clone());
                if !job.tags.contains(&img.reference) {
                    let at = job.tags.len().min(job.services.len() - 1);
                    job.tags.insert(at, img.reference.clone());
                }
            }
            None => {
                let mut tags = vec![img.reference.clone()];
                for t in &build.tags {
                    if let Ok(r) = Reference::parse(t)
                        && !tags.contains(&r.full())
                    {
                        tags.push(r.full());
                    }
                }
                jobs.push((
                    key,
                    BuildJob {
                        services: vec![img.service.clone()],
                        build,
                        tags,
                        platform: img.platform.clone(),
                        no_cache: opts.no_cache,
                        pull: opts.pull_base,
                    },
                    fallback_of,
                ));
            }
        }
    }
    for (_, job, fallback_of) in jobs {
        match fallback_of {
            Some(r) => plan.fallback_builds.push((r, job)),
            None => plan.builds.push(job),
        }
    }
    plan
}

/// Orders builds so that a build whose Dockerfile starts `FROM` (or copies from) another
/// build's image comes after it: `bases(job)` lists the images a job reads. Returns levels of
/// jobs (indices) that can run in parallel, or the services of a cycle.
pub fn build_levels(
    jobs: &[BuildJob],
    bases: &dyn Fn(&BuildJob) -> Vec<String>,
) -> std::result::Result<Vec<Vec<usize>>, Vec<String>> {
    let normalize = |r: &str| Reference::parse(r).map(|r| r.full()).unwrap_or_else(|_| r.to_string());
    let after: Vec<BTreeSet<usize>> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let wants: BTreeSet<String> = bases(job).iter().map(|b| normalize(b)).collect();
            let from_services: BTreeSet<&str> =
                job.build.additional_contexts.values().filter_map(|v| v.strip_prefix("service:")).collect();
            (0..jobs.len())
                .filter(|&j| j != i)
                .filter(|&j| {
                    jobs[j].tags.iter().any(|t| wants.contains(t))
                        || jobs[j].services.iter().any(|s| from_services.contains(s.as_str()))
                })
                .collect()
        })
        .collect();
    let mut done: BTreeSet<usize> = BTreeSet::new();
    let mut levels = Vec::new();
    while done.len() < jobs.len() {
        let level: Vec<usize> =
            (0..jobs.len()).filter(|i| !done.contains(i) && after[*i].is_subset(&done)).collect();
        if level.is_empty() {
            let stuck = (0..jobs.len()).filter(|i| !done.contains(i)).flat_map(|i| jobs[i].services.clone());
            return Err(stuck.collect());
        }
        done.extend(level.iter().copied());
        levels.push(level);
    }
    Ok(levels)
}

/// Does the image work: the registry and builder for real, a fake in tests.
pub trait ImageProvider: Sync {
    /// What the store has under a full name.
    fn local(&self, reference: &str) -> Option<LocalImage>;
    /// Pulls a name; returns the image id.
    fn pull(
        &self,
        reference: &str,
        platform: Option<&str>,
        events: &dyn ImageEvents,
    ) -> std::result::Result<String, ImageJobError>;
    /// Builds a job and gives the result every tag of the job; returns the image id.
    fn build(&self, job: &BuildJob, events: &dyn ImageEvents) -> std::result::Result<String, ImageJobError>;
    /// The images a job's Dockerfile reads (`FROM`, `COPY --from=image`), for ordering.
    fn bases(&self, job: &BuildJob) -> Vec<String>;
    /// How many pulls run at once (docker: 3 layer downloads per image; images in parallel).
    fn parallel_pulls(&self) -> usize {
        3
    }
}

/// What [`execute`] did.
#[derive(Debug, Default)]
pub struct ImageOutcome {
    /// Names pulled.
    pub pulled: Vec<String>,
    /// Pull failures tolerated (service names and why).
    pub pull_failures: Vec<(Vec<String>, ImageJobError)>,
    /// Services built.
    pub built: Vec<String>,
}

/// Runs a plan: pulls in parallel (at most `parallel` at once), then builds by levels, each
/// level in parallel. A pull that fails for a buildable image falls back to its build; one
/// that fails otherwise is an error naming the services, unless `ignore_pull_failures`.
pub fn execute(
    plan: &ImagePlan,
    provider: &dyn ImageProvider,
    events: &dyn ImageEvents,
    ignore_pull_failures: bool,
    parallel: usize,
) -> Result<ImageOutcome> {
    let outcome = Mutex::new(ImageOutcome::default());
    let failures: Mutex<Vec<(PullStep, ImageJobError)>> = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1).min(plan.pulls.len()) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(step) = plan.pulls.get(i) else { break };
                    match provider.pull(&step.reference, step.platform.as_deref(), events) {
                        Ok(_) => outcome
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .pulled
                            .push(step.reference.clone()),
                        Err(e) => failures.lock().unwrap_or_else(|p| p.into_inner()).push((step.clone(), e)),
                    }
                }
            });
        }
    });
    let mut outcome = outcome.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    failures.sort_by(|a, b| a.0.reference.cmp(&b.0.reference));
    let mut jobs: Vec<BuildJob> = plan.builds.clone();
    for (step, error) in failures {
        if step.buildable {
            // docker compose: an image that can be built is built when its pull fails.
            events.event(
                "Image",
                &short(&step.reference),
                &format!("Pull failed ({error}); it can be built"),
                true,
            );
            outcome.pull_failures.push((step.services.clone(), error));
            continue;
        }
        if ignore_pull_failures {
            events.failed("Image", &short(&step.reference), &error.to_string());
            outcome.pull_failures.push((step.services.clone(), error));
            continue;
        }
        return Err(EngineError::Pull {
            services: step.services.join(", "),
            image: short(&step.reference),
            source: Box::new(error),
        });
    }
    for (reference, job) in &plan.fallback_builds {
        if !outcome.pulled.contains(reference) {
            jobs.push(job.clone());
        }
    }
    let levels = build_levels(&jobs, &|job| provider.bases(job)).map_err(|services| {
        EngineError::Msg(format!(
            "the builds of services {} depend on each other's images in a cycle",
            services.join(", ")
        ))
    })?;
    for level in levels {
        let results: Vec<(usize, std::result::Result<String, ImageJobError>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = level
                .iter()
                .map(|&i| {
                    let job = &jobs[i];
                    (i, scope.spawn(move || provider.build(job, events)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(i, h)| (i, h.join().unwrap_or(Err(ImageJobError::Panicked))))
                .collect()
        });
        let mut first_error = None;
        for (i, r) in results {
            match r {
                Ok(_) => outcome.built.extend(jobs[i].services.iter().cloned()),
                Err(source) if first_error.is_none() => {
                    first_error =
                        Some(EngineError::Build { services: jobs[i].services.join(", "), source: Box::new(source) });
                }
                Err(_) => {}
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    Ok(outcome)
}

/// `busybox:latest` for `docker.io/library/busybox:latest`.
fn short(reference: &str) -> String {
    Reference::parse(reference).map(|r| r.short()).unwrap_or_else(|_| reference.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::events::NoEvents;
    use crate::image::registry::RegistryError;

    fn img(service: &str, reference: &str, explicit: bool, build: bool, policy: PullPolicy) -> ServiceImage {
        ServiceImage {
            service: service.into(),
            reference: Reference::parse(reference).unwrap().full(),
            explicit,
            build: build
                .then(|| BuildConfig { context: Some(format!("/ctx/{service}")), ..Default::default() }),
            policy,
            platform: None,
        }
    }

    fn none(_: &str) -> Option<LocalImage> {
        None
    }

    fn all(_: &str) -> Option<LocalImage> {
        Some(LocalImage {
            id: "sha256:x".into(),
            tagged_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1000)),
        })
    }

    #[test]
    fn policies_parse_as_compose_go() {
        assert_eq!(PullPolicy::parse(None), Ok(PullPolicy::Missing));
        assert_eq!(PullPolicy::parse(Some("if_not_present")), Ok(PullPolicy::Missing));
        assert_eq!(PullPolicy::parse(Some("daily")), Ok(PullPolicy::Refresh(Duration::from_secs(86400))));
        assert_eq!(
            PullPolicy::parse(Some("every_1d12h")),
            Ok(PullPolicy::Refresh(Duration::from_secs(36 * 3600)))
        );
        assert_eq!(PullPolicy::parse(Some("every_90s")), Ok(PullPolicy::Refresh(Duration::from_secs(90))));
        assert!(PullPolicy::parse(Some("every_")).is_err());
        assert!(PullPolicy::parse(Some("every_5")).is_err());
        assert!(PullPolicy::parse(Some("every_5y")).is_err());
        assert!(PullPolicy::parse(Some("sometimes")).is_err());
        assert!(PullPolicy::parse(Some("every_99999999999999999999w")).is_err());
    }

    #[test]
    fn missing_pulls_only_absent_images() {
        let images = [img("db", "postgres:15", true, false, PullPolicy::Missing)];
        let p = plan_images(&images, &none, &ImageOptions::default(), SystemTime::now());
        assert_eq!(p.pulls.len(), 1);
        assert_eq!(p.pulls[0].reference, "docker.io/library/postgres:15");
        let p = plan_images(&images, &all, &ImageOptions::default(), SystemTime::now());
        assert!(p.pulls.is_empty());
    }

    #[test]
    fn always_and_never() {
        let images =
            [img("a", "a", true, false, PullPolicy::Always), img("b", "b", true, false, PullPolicy::Never)];
        let p = plan_images(&images, &all, &ImageOptions::default(), SystemTime::now());
        assert_eq!(p.pulls.iter().map(|s| s.services[0].as_str()).collect::<Vec<_>>(), ["a"]);
        let p = plan_images(&images, &none, &ImageOptions::default(), SystemTime::now());
        assert_eq!(p.pulls.len(), 1, "never does not pull even a missing image");
    }

    #[test]
    fn refresh_pulls_when_the_name_is_older_than_the_period() {
        let images = [img("a", "a", true, false, PullPolicy::Refresh(Duration::from_secs(100)))];
        let soon = SystemTime::UNIX_EPOCH + Duration::from_secs(1050);
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(1100);
        assert!(plan_images(&images, &all, &ImageOptions::default(), soon).pulls.is_empty());
        assert_eq!(plan_images(&images, &all, &ImageOptions::default(), late).pulls.len(), 1);
        assert_eq!(plan_images(&images, &none, &ImageOptions::default(), soon).pulls.len(), 1);
    }

    #[test]
    fn image_and_build_with_policy_build_never_pulls() {
        let images = [img("app", "me/app", true, true, PullPolicy::Build)];
        let p = plan_images(&images, &all, &ImageOptions::default(), SystemTime::now());
        assert!(p.pulls.is_empty());
        assert_eq!(p.builds.len(), 1);
        assert!(p.fallback_builds.is_empty());
    }

    #[test]
    fn build_only_service_is_built_when_missing_and_never_pulled() {
        let images = [img("app", "proj-app", false, true, PullPolicy::Missing)];
        let p = plan_images(&images, &none, &ImageOptions::default(), SystemTime::now());
        assert!(p.pulls.is_empty());
        assert_eq!(p.builds.len(), 1);
        assert_eq!(p.builds[0].tags, ["docker.io/library/proj-app:latest"]);
        let p = plan_images(&images, &all, &ImageOptions::default(), SystemTime::now());
        assert!(p.builds.is_empty(), "present: kept");
        let opts = ImageOptions { build: true, ..Default::default() };
        assert_eq!(
            plan_images(&images, &all, &opts, SystemTime::now()).builds.len(),
            1,
            "up --build rebuilds"
        );
        let opts = ImageOptions { no_build: true, ..Default::default() };
        assert!(plan_images(&images, &none, &opts, SystemTime::now()).builds.is_empty());
    }

    #[test]
    fn image_and_build_missing_pulls_first_and_builds_on_failure() {
        let images = [img("app", "me/app", true, true, PullPolicy::Missing)];
        let p = plan_images(&images, &none, &ImageOptions::default(), SystemTime::now());
        assert_eq!(p.pulls.len(), 1);
        assert!(p.pulls[0].buildable);
        assert_eq!(p.fallback_builds.len(), 1);
        assert!(p.builds.is_empty());
    }

    #[test]
    fn up_pull_overrides_the_file() {
        let images = [img("a", "a", true, false, PullPolicy::Never)];
        let opts = ImageOptions { pull: Some(PullPolicy::Always), ..Default::default() };
        assert_eq!(plan_images(&images, &all, &opts, SystemTime::now()).pulls.len(), 1);
    }

    #[test]
    fn same_build_of_several_services_runs_once_with_every_name() {
        let mut a = img("a", "x/a", true, true, PullPolicy::Build);
        let mut b = img("b", "x/b", true, true, PullPolicy::Build);
        a.build.as_mut().unwrap().context = Some("/ctx".into());
        b.build.as_mut().unwrap().context = Some("/ctx".into());
        let p = plan_images(&[a, b], &none, &ImageOptions::default(), SystemTime::now());
        assert_eq!(p.builds.len(), 1);
        assert_eq!(p.builds[0].services, ["a", "b"]);
        assert_eq!(p.builds[0].tags, ["docker.io/x/a:latest", "docker.io/x/b:latest"]);
    }

    #[test]
    fn same_image_pulled_once() {
        let images = [
            img("a", "redis", true, false, PullPolicy::Missing),
            img("b", "redis:latest", true, false, PullPolicy::Missing),
        ];
        let p = plan_images(&images, &none, &ImageOptions::default(), SystemTime::now());
        assert_eq!(p.pulls.len(), 1);
        assert_eq!(p.pulls[0].services, ["a", "b"]);
    }

    #[test]
    fn pull_command_skips_buildable_with_ignore_buildable() {
        let images = [
            img("app", "me/app", true, true, PullPolicy::Missing),
            img("db", "pg", true, false, PullPolicy::Missing),
        ];
        let opts = ImageOptions { pull_only: true, ignore_buildable: true, ..Default::default() };
        let p = plan_images(&images, &none, &opts, SystemTime::now());
        assert_eq!(p.pulls.iter().map(|s| s.services[0].as_str()).collect::<Vec<_>>(), ["db"]);
        assert!(p.builds.is_empty() && p.fallback_builds.is_empty());
    }

    #[test]
    fn build_command_builds_everything_buildable_and_pulls_nothing() {
        let images = [
            img("app", "me/app", true, true, PullPolicy::Always),
            img("db", "pg", true, false, PullPolicy::Always),
        ];
        let opts = ImageOptions { build_only: true, ..Default::default() };
        let p = plan_images(&images, &all, &opts, SystemTime::now());
        assert!(p.pulls.is_empty());
        assert_eq!(p.builds.len(), 1);
    }

    fn job(service: &str, tag: &str) -> BuildJob {
        BuildJob {
            services: vec![service.into()],
            build: BuildConfig::default(),
            tags: vec![Reference::parse(tag).unwrap().full()],
            platform: None,
            no_cache: false,
            pull: false,
        }
    }

    #[test]
    fn a_build_from_another_services_image_comes_after_it() {
        let jobs = [job("app", "proj-app"), job("base", "proj-base"), job("other", "other")];
        let bases =
            |j: &BuildJob| if j.services[0] == "app" { vec!["proj-base".to_string()] } else { vec![] };
        let levels = build_levels(&jobs, &bases).unwrap();
        assert_eq!(levels, vec![vec![1, 2], vec![0]]);
        let cyclic = |j: &BuildJob| match j.services[0].as_str() {
            "app" => vec!["proj-base".to_string()],
            "base" => vec!["proj-app".to_string()],
            _ => vec![],
        };
        assert_eq!(build_levels(&jobs, &cyclic).unwrap_err(), ["app", "base"]);
    }

    #[test]
    fn additional_context_service_orders_builds() {
        let mut app = job("app", "proj-app");
        app.build.additional_contexts.insert("base".into(), "service:base".into());
        let jobs = [app, job("base", "proj-base")];
        assert_eq!(build_levels(&jobs, &|_| vec![]).unwrap(), vec![vec![1], vec![0]]);
    }

    struct Fake {
        fail: BTreeSet<String>,
        log: Mutex<Vec<String>>,
    }

    impl ImageProvider for Fake {
        fn local(&self, _: &str) -> Option<LocalImage> {
            None
        }
        fn pull(&self, r: &str, _: Option<&str>, _: &dyn ImageEvents) -> std::result::Result<String, ImageJobError> {
            self.log.lock().unwrap().push(format!("pull {r}"));
            if self.fail.contains(r) {
                // A failure with a cause below it: the errno must reach the caller.
                let source = std::io::Error::from_raw_os_error(libc::ENOENT);
                Err(ImageJobError::Registry(RegistryError::Io { path: "not found".into(), source }))
            } else {
                Ok("sha256:p".into())
            }
        }
        fn build(&self, job: &BuildJob, _: &dyn ImageEvents) -> std::result::Result<String, ImageJobError> {
            self.log.lock().unwrap().push(format!("build {}", job.services.join(",")));
            Ok("sha256:b".into())
        }
        fn bases(&self, _: &BuildJob) -> Vec<String> {
            vec![]
        }
    }

    #[test]
    fn failed_pull_of_buildable_image_builds_it() {
        let images = [img("app", "me/app", true, true, PullPolicy::Missing)];
        let p = plan_images(&images, &none, &ImageOptions::default(), SystemTime::now());
        let fake = Fake { fail: ["docker.io/me/app:latest".to_string()].into(), log: Mutex::new(vec![]) };
        let out = execute(&p, &fake, &NoEvents, false, 3).unwrap();
        assert_eq!(out.built, ["app"]);
        assert_eq!(*fake.log.lock().unwrap(), ["pull docker.io/me/app:latest", "build app"]);
        // Pulled fine: no build.
        let fake = Fake { fail: BTreeSet::new(), log: Mutex::new(vec![]) };
        let out = execute(&p, &fake, &NoEvents, false, 3).unwrap();
        assert!(out.built.is_empty());
    }

    #[test]
    fn failed_pull_names_the_service_unless_ignored() {
        let images = [img("db", "pg", true, false, PullPolicy::Missing)];
        let p = plan_images(&images, &none, &ImageOptions::default(), SystemTime::now());
        let fake = Fake { fail: ["docker.io/library/pg:latest".to_string()].into(), log: Mutex::new(vec![]) };
        let err = execute(&p, &fake, &NoEvents, false, 3).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("service db") && text.contains("pg:latest") && text.contains("not found"),
            "{text}"
        );
        // The cause is kept as a source, not flattened into the text.
        let mut source = std::error::Error::source(&err);
        let mut errno = None;
        while let Some(s) = source {
            errno = errno.or(s.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error));
            source = s.source();
        }
        assert_eq!(errno, Some(libc::ENOENT), "{err:?}");
        let out = execute(&p, &fake, &NoEvents, true, 3).unwrap();
        assert_eq!(out.pull_failures.len(), 1);
    }
}
