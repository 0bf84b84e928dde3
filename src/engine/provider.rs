//! The real [`ImageProvider`]: the local store, the registry client and the Dockerfile
//! builder, on the engine's root. A compose `build:` becomes a [`BuildRequest`] here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::compose::LoadedProject;
use crate::image::build::{BaseImages, BuildError, BuildRequest, Builder, ContextSource, SecretSource};
use crate::image::events::ImageEvents;
use crate::image::registry::{Platform, Registry, RegistryOptions};
use crate::image::{ImageStore, ResolvedImage};

use super::Engine;
use super::images::{BuildJob, ImageJobError, ImageProvider, LocalImage};

/// Images from the store, the registry and the builder.
pub struct EngineImages<'a> {
    engine: &'a Engine,
    loaded: &'a LoadedProject,
    store: ImageStore,
    registry: Registry,
    cancel: Option<&'static std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for EngineImages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineImages").finish_non_exhaustive()
    }
}

impl<'a> EngineImages<'a> {
    /// The provider for `loaded` on `engine`'s root.
    pub fn new(
        engine: &'a Engine,
        loaded: &'a LoadedProject,
    ) -> Result<EngineImages<'a>, crate::image::ImageError> {
        Ok(EngineImages {
            engine,
            loaded,
            store: ImageStore::open(engine.dirs())?,
            registry: Registry::new(RegistryOptions::from_env()),
            cancel: None,
        })
    }

    /// Builds stop (the running step killed, everything cleaned up) when `flag` becomes true.
    pub fn with_cancel(mut self, flag: &'static std::sync::atomic::AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Pushes the store's image `reference` to its registry.
    pub fn push(&self, reference: &str, events: &dyn ImageEvents) -> Result<String, ImageJobError> {
        Ok(self.registry.push(&self.store, reference, events)?)
    }

    fn request(&self, job: &BuildJob) -> Result<BuildRequest, ImageJobError> {
        let b = &job.build;
        let context = PathBuf::from(b.context.clone().unwrap_or_else(|| ".".into()));
        let context = if context.is_absolute() { context } else { self.loaded.project_dir.join(context) };
        if b.context.as_deref().is_some_and(is_remote) {
            return Err(ImageJobError::Invalid(format!(
                "build context {}: remote contexts (URLs, git) are not supported",
                b.context.as_deref().unwrap_or("")
            )));
        }
        if let Some(p) = &job.platform {
            check_platform(p)?;
        }
        for p in &b.platforms {
            check_platform(p)?;
        }
        let mut args = BTreeMap::new();
        for (k, v) in &b.args {
            // An arg without a value takes it from the environment, as docker does; unset is left out.
            match v {
                Some(v) => {
                    args.insert(k.clone(), v.clone());
                }
                None => {
                    if let Some(v) = self.loaded.environment.get(k) {
                        args.insert(k.clone(), v.to_string());
                    }
                }
            }
        }
        let mut additional_contexts = BTreeMap::new();
        for (name, value) in &b.additional_contexts {
            let source = if let Some(service) = value.strip_prefix("service:") {
                let reference = super::plan::image_reference(self.loaded, service)
                    .ok_or_else(|| ImageJobError::Invalid(format!("additional context {name}: no service {service}")))?;
                ContextSource::Image(reference)
            } else if let Some(image) = value.strip_prefix("docker-image://") {
                ContextSource::Image(image.to_string())
            } else if is_remote(value) {
                return Err(ImageJobError::Invalid(format!(
                    "additional context {name}: {value}: remote contexts are not supported"
                )));
            } else {
                let p = Path::new(value.strip_prefix("oci-layout://").unwrap_or(value));
                ContextSource::Dir(if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    self.loaded.project_dir.join(p)
                })
            };
            additional_contexts.insert(name.clone(), source);
        }
        let mut secrets = BTreeMap::new();
        for s in &b.secrets {
            let def = self
                .loaded
                .project
                .secrets
                .get(&s.source)
                .ok_or_else(|| {
                    ImageJobError::Invalid(format!("build secret {}: no such secret in the project", s.source))
                })?;
            let id = s.target.clone().unwrap_or_else(|| s.source.clone());
            let source = if let Some(f) = &def.file {
                SecretSource::File(PathBuf::from(f))
            } else if let Some(var) = &def.environment {
                // The builder reads the variable itself (its value never enters a record).
                SecretSource::Env(var.clone())
            } else {
                return Err(ImageJobError::Invalid(format!(
                    "build secret {}: only file and environment secrets can be used in builds",
                    s.source
                )));
            };
            secrets.insert(id, source);
        }
        let ssh = ssh_of(b.ssh.as_ref(), &self.loaded.project_dir)?;
        let extra_hosts = b
            .extra_hosts
            .iter()
            .flat_map(|(h, ips)| ips.iter().map(move |ip| (h.clone(), ip.clone())))
            .collect();
        Ok(BuildRequest {
            context,
            dockerfile: b.dockerfile.as_ref().map(PathBuf::from),
            dockerfile_inline: b.dockerfile_inline.clone(),
            args,
            target: b.target.clone(),
            labels: b.labels.clone(),
            tags: job.tags.clone(),
            additional_contexts,
            secrets,
            ssh,
            network: b.network.clone(),
            no_cache: job.no_cache || b.no_cache,
            pull: job.pull || b.pull,
            shm_size: b.shm_size.map(|s| s.0.max(0) as u64),
            extra_hosts,
            platform: job.platform.clone(),
        })
    }
}

/// Compose `build.ssh` (a list of `default` / `ID=PATH[,PATH]`, or a mapping of ID to path) as
/// the builder's ssh agents; `~/` and relative paths resolved as buildx does them.
fn ssh_of(
    ssh: Option<&serde_json::Value>,
    project_dir: &Path,
) -> Result<BTreeMap<String, Vec<PathBuf>>, ImageJobError> {
    use serde_json::Value;
    let mut specs: Vec<String> = Vec::new();
    match ssh {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => specs.push(s.clone()),
        Some(Value::Array(a)) => {
            for v in a {
                match v {
                    Value::String(s) => specs.push(s.clone()),
                    other => return Err(ImageJobError::Invalid(format!("build.ssh: invalid entry {other}"))),
                }
            }
        }
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::Null => specs.push(k.clone()),
                    Value::String(p) if p.is_empty() => specs.push(k.clone()),
                    Value::String(p) => specs.push(format!("{k}={p}")),
                    other => return Err(ImageJobError::Invalid(format!("build.ssh.{k}: invalid value {other}"))),
                }
            }
        }
        Some(other) => return Err(ImageJobError::Invalid(format!("build.ssh: invalid value {other}"))),
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let mut out = BTreeMap::new();
    for s in specs {
        let (id, paths) = crate::image::build::ssh::parse_spec(&s)?;
        let paths = paths
            .into_iter()
            .map(|p| match (p.strip_prefix("~"), &home) {
                (Ok(rest), Some(h)) => h.join(rest),
                _ if p.is_absolute() => p,
                _ => project_dir.join(p),
            })
            .collect();
        out.insert(id, paths);
    }
    Ok(out)
}

fn is_remote(s: &str) -> bool {
    s.contains("://") || s.starts_with("git@") || s.ends_with(".git")
}

fn check_platform(p: &str) -> Result<(), ImageJobError> {
    let want = Platform::parse(p)?;
    let host = Platform::host();
    if want.os != host.os || want.architecture != host.architecture {
        return Err(ImageJobError::Invalid(format!(
            "platform {p}: only this host's platform ({host}) can be built"
        )));
    }
    Ok(())
}

/// A build's events, named by the services it builds: builds of several services run at once,
/// and their steps (`[stage 1/3] RUN ...`) must not share lines in the progress view.
struct ServiceEvents<'a> {
    inner: &'a dyn ImageEvents,
    services: String,
}

impl ServiceEvents<'_> {
    fn name(&self, kind: &str, name: &str) -> String {
        if kind == "Build" { self.services.clone() } else { format!("{} {name}", self.services) }
    }
}

impl ImageEvents for ServiceEvents<'_> {
    fn event(&self, kind: &str, name: &str, status: &str, done: bool) {
        self.inner.event(kind, &self.name(kind, name), status, done);
    }
    fn failed(&self, kind: &str, name: &str, status: &str) {
        self.inner.failed(kind, &self.name(kind, name), status);
    }
    fn output(&self, name: &str, line: &str) {
        self.inner.output(&format!("{} {name}", self.services), line);
    }
}

/// Base images for builds: the store's, pulled when missing (or always, with `pull`).
struct PullingBase<'a> {
    provider: &'a EngineImages<'a>,
    events: &'a dyn ImageEvents,
}

impl BaseImages for PullingBase<'_> {
    fn get(&self, reference: &str, platform: Option<&str>, pull: bool) -> Result<ResolvedImage, BuildError> {
        let store = &self.provider.store;
        let local = store.resolve(reference);
        if !pull && let Ok(image) = local {
            return Ok(image);
        }
        let platform = platform.map(Platform::parse).transpose().map_err(|e| BuildError::Registry(Box::new(e)))?;
        match self.provider.registry.pull(store, reference, platform.as_ref(), self.events) {
            Ok(p) => Ok(store.resolve(&p.reference)?),
            Err(e) => Err(BuildError::Pull { reference: reference.to_string(), source: Box::new(e) }),
        }
    }
}

impl ImageProvider for EngineImages<'_> {
    fn local(&self, reference: &str) -> Option<LocalImage> {
        let image = self.store.resolve(reference).ok()?;
        Some(LocalImage { id: image.id, tagged_at: self.store.tagged_at(reference) })
    }

    fn pull(
        &self,
        reference: &str,
        platform: Option<&str>,
        events: &dyn ImageEvents,
    ) -> Result<String, ImageJobError> {
        let platform = platform.map(Platform::parse).transpose()?;
        let pulled = self.registry.pull(&self.store, reference, platform.as_ref(), events).map_err(|source| {
            // A damaged image reads as missing (`local`), and is pulled; when that fails, the
            // damage is what the user must hear of.
            match self.store.resolve(reference) {
                Err(
                    damaged @ (crate::image::ImageError::DamagedImage { .. }
                    | crate::image::ImageError::Corrupt { .. }),
                ) => ImageJobError::Damaged { damaged: Box::new(damaged), source },
                _ => ImageJobError::Registry(source),
            }
        })?;
        Ok(pulled.id)
    }

    fn build(&self, job: &BuildJob, events: &dyn ImageEvents) -> Result<String, ImageJobError> {
        let request = self.request(job)?;
        let events = &ServiceEvents { inner: events, services: job.services.join(",") };
        let base = PullingBase { provider: self, events };
        let mut builder =
            Builder::new(&self.store, &self.engine.runtime, &self.engine.networks, &base, events)
                .with_http(self.registry.options().clone());
        if let Some(flag) = self.cancel {
            builder = builder.with_cancel(flag);
        }
        let built = builder.build(&request)?;
        Ok(built.id)
    }

    fn bases(&self, job: &BuildJob) -> Vec<String> {
        let Ok(request) = self.request(job) else { return Vec::new() };
        let mut out: Vec<String> = request
            .additional_contexts
            .values()
            .filter_map(|c| match c {
                ContextSource::Image(r) => Some(r.clone()),
                ContextSource::Dir(_) => None,
            })
            .collect();
        out.extend(dockerfile_bases(&request));
        out
    }
}

/// The images a build's Dockerfile starts from (`FROM`, with the global `ARG`s it uses
/// expanded) or copies from (`COPY --from=image`), leaving out stages and `scratch`. Used only
/// to order builds, so a Dockerfile that cannot be read gives none (the build reports it).
fn dockerfile_bases(request: &BuildRequest) -> Vec<String> {
    let text = match &request.dockerfile_inline {
        Some(t) => t.clone(),
        None => {
            let rel = request.dockerfile.clone().unwrap_or_else(|| PathBuf::from("Dockerfile"));
            let path = if rel.is_absolute() { rel } else { request.context.join(rel) };
            match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(_) => return Vec::new(),
            }
        }
    };
    let Ok(df) = crate::image::build::frontend::parse(&text, "Dockerfile") else { return Vec::new() };
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for a in &df.global_args {
        if let Some(v) = request.args.get(&a.name).cloned().or_else(|| a.default.clone()) {
            vars.insert(a.name.clone(), v);
        }
    }
    let stage_names: Vec<String> = df.stages.iter().filter_map(|s| s.name.clone()).collect();
    let expand = |word: &str| {
        crate::image::build::vars::expand(word, &vars, df.escape)
            .map(|(s, _)| s)
            .unwrap_or_else(|_| word.to_string())
    };
    let mut out = Vec::new();
    for stage in &df.stages {
        let base = expand(&stage.base);
        if base != "scratch" && !stage_names.contains(&base.to_lowercase()) {
            out.push(base);
        }
        for ins in &stage.instructions {
            if let crate::image::build::dockerfile::InstructionKind::Copy(c) = &ins.kind
                && let Some(from) = &c.from
                && !stage_names.contains(&from.to_lowercase())
                && from.parse::<usize>().is_err()
                && !request.additional_contexts.contains_key(from)
            {
                out.push(from.clone());
            }
        }
    }
    out
}
