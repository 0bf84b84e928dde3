//! The image builder: runs a parsed Dockerfile's stages in berth's runtime and stores the
//! result in the image store.
//!
//! Only the stages the target needs are built, in waves: the stages whose dependencies are
//! built run in parallel (a stage can only refer to earlier ones). Each stage keeps its layers (unpacked in the store, used as overlay lower
//! dirs) and its config; each step gets a cache key ([`super::cache`]) and is served from the
//! cache when it can be. COPY/ADD/WORKDIR stage their files in a tree that becomes the layer;
//! RUN runs in a container whose upper dir becomes the layer. The build's bridge network is
//! made at the first RUN that needs it and removed at the end, whatever happens.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::cache::{Cache, CacheRecord, CachedLayer, step_key};
use super::context::{self, CopyAttrs, Filter, NoFilter};
use super::dockerfile::{
    ArgDecl, CommandForm, CopyInstruction, Dockerfile, HealthcheckInstruction, Instruction, InstructionKind,
    RunInstruction, RunMount, Stage,
};
use super::layer;
use super::run::{self, RunFailure, RunNet, RunStep};
use super::vars;
use super::{git, remote};
use crate::image::events::ImageEvents;
use crate::image::registry::RegistryOptions;
use crate::image::{ImageError, ImageStore, Reference, ResolvedImage};
use crate::netns::{NetworkSpec, Networks};
use crate::runtime::Runtime;
use crate::runtime::spec::{MountKind, MountSpec};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The build context folder.
    pub context: PathBuf,
    /// The Dockerfile, relative to the context (default `Dockerfile`) or absolute.
    pub dockerfile: Option<PathBuf>,
    /// The Dockerfile's text, instead of a file.
    pub dockerfile_inline: Option<String>,
    /// `--build-arg`s.
    pub args: BTreeMap<String, String>,
    /// The stage to build (default: the last).
    pub target: Option<String>,
    /// Labels added to the image.
    pub labels: BTreeMap<String, String>,
    /// Names to give the result (first = main).
    pub tags: Vec<String>,
    /// Named contexts (`COPY --from=name`, `FROM name`).
    pub additional_contexts: BTreeMap<String, ContextSource>,
    /// Secrets by id.
    pub secrets: BTreeMap<String, SecretSource>,
    /// ssh agents by id (`RUN --mount=type=ssh`): no paths = `$SSH_AUTH_SOCK`, else an agent
    /// socket or key files (see [`super::ssh::parse_spec`]).
    pub ssh: BTreeMap<String, Vec<PathBuf>>,
    /// Network of RUN steps: `default` (a bridge with NAT and DNS), `none` or `host`.
    pub network: Option<String>,
    /// Ignore the cache.
    pub no_cache: bool,
    /// Always ask for base images to be pulled.
    pub pull: bool,
    /// `/dev/shm` size of RUN steps.
    pub shm_size: Option<u64>,
    /// `--add-host` entries of RUN steps.
    pub extra_hosts: Vec<(String, String)>,
    /// Target platform: only this host's is supported.
    pub platform: Option<String>,
}

/// A named build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextSource {
    /// A local folder.
    Dir(PathBuf),
    /// An image (`docker-image://` or a compose `service:NAME` resolved by the caller).
    Image(String),
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable of this process.
    Env(String),
}

/// The built image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// `sha256:` of its config.
    pub id: String,
    /// The names it got.
    pub tags: Vec<String>,
}

/// Where FROM, `COPY --from=image` and `RUN --mount from=image` get images: the caller looks in
/// the store and pulls when missing (or always, when `pull`).
pub trait BaseImages: Sync {
    /// The image `reference`, in the store (its layers unpacked).
    fn get(
        &self,
        reference: &str,
        platform: Option<&str>,
        pull: bool,
    ) -> std::result::Result<ResolvedImage, BuildError>;
}

/// [`BaseImages`] from the local store only, for berth's integration tests (berth itself
/// gives the engine's provider, which also pulls).
#[cfg(feature = "internals")]
pub struct StoreBaseImages<'a> {
    /// The store.
    pub store: &'a ImageStore,
}

#[cfg(feature = "internals")]
impl BaseImages for StoreBaseImages<'_> {
    fn get(
        &self,
        reference: &str,
        _platform: Option<&str>,
        _pull: bool,
    ) -> std::result::Result<ResolvedImage, BuildError> {
        match self.store.resolve(reference) {
            Ok(img) => Ok(img),
            Err(ImageError::NotFound(_)) => {
                Err(BuildError::BaseImage(format!("image {reference} not found; pull it first")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile could not be read or parsed.
    #[error("{0}")]
    Dockerfile(String),
    /// An instruction is wrong or cannot be done.
    #[error("{file}:{line}: {message}")]
    Step {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong (with the cause's own message, when there is one).
        message: String,
        /// What caused it, when something did (a store, file or network error).
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The Dockerfile does not parse.
    #[error(transparent)]
    Parse(#[from] super::parse::DockerfileError),
    /// The `.dockerignore` file is wrong.
    #[error(transparent)]
    Ignore(#[from] super::dockerignore::IgnoreError),
    /// A tag to give the image is not a reference.
    #[error(transparent)]
    Tag(#[from] crate::image::reference::BadReference),
    /// A global `ARG`'s default does not expand.
    #[error("{file}: ARG {name}: {source}")]
    Arg {
        /// The Dockerfile's name.
        file: String,
        /// The argument.
        name: String,
        /// Why.
        source: Box<vars::ExpandError>,
    },
    /// The image's configuration or manifest could not be encoded.
    #[error(transparent)]
    Encode(#[from] serde_json::Error),
    /// The image's configuration is not one OCI accepts.
    #[error("image config: {0}")]
    Config(#[source] serde_json::Error),
    /// A base image's platform is not one berth reads, or the registry refused.
    #[error(transparent)]
    Registry(#[from] Box<crate::image::registry::RegistryError>),
    /// A base image could not be pulled.
    #[error("base image {reference}: {source}")]
    Pull {
        /// The image.
        reference: String,
        /// Why.
        source: Box<crate::image::registry::RegistryError>,
    },
    /// A path inside a stage's root file system is unsafe or unreadable.
    #[error("{path}: {source}")]
    Rootfs {
        /// The path.
        path: String,
        /// Why.
        source: crate::runtime::rootfs::RootfsError,
    },
    /// A RUN step exited non-zero.
    #[error("{file}:{line}: RUN {command}: exit code {code}{}", tail_text(.output))]
    Run {
        /// The Dockerfile's name.
        file: String,
        /// 1-based line.
        line: usize,
        /// The command.
        command: String,
        /// The exit code.
        code: i32,
        /// Its last lines of output.
        output: Vec<String>,
    },
    /// A base image could not be had.
    #[error("{0}")]
    BaseImage(String),
    /// Only this host's platform can be built.
    #[error("platform {0} is not supported: berth builds only for {host}", host = host_platform())]
    Platform(String),
    /// The image store failed.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The build's network could not be used.
    #[error("build network: {0}")]
    Network(String),
    /// The build's token (which names its network) could not be claimed.
    #[error("build network: {0}")]
    Owner(#[from] super::run::OwnerError),
    /// The build's network could not be made.
    #[error("build network: {0}")]
    NetworkCreate(#[source] crate::netns::NetError),
    /// The build was cancelled.
    #[error("build cancelled")]
    Cancelled,
}

fn tail_text(lines: &[String]) -> String {
    if lines.is_empty() { String::new() } else { format!("; last output:\n{}", lines.join("\n")) }
}

type Result<T> = std::result::Result<T, BuildError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + '_ {
    move |source| BuildError::Io { path: path.display().to_string(), source }
}

/// This host's architecture as OCI names it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// `linux/<arch>` of this host.
pub fn host_platform() -> String {
    format!("linux/{}", host_arch())
}

fn check_platform(p: &str) -> Result<()> {
    let norm = p.trim().to_ascii_lowercase();
    let host = host_platform();
    if norm.is_empty() || norm == host || norm.starts_with(&format!("{host}/")) {
        Ok(())
    } else {
        Err(BuildError::Platform(p.to_string()))
    }
}

/// Proxy arguments: passed to RUN without an `ARG`, kept out of the cache key and history.
const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

fn predefined_args() -> BTreeMap<String, String> {
    let arch = host_arch().to_string();
    [
        ("TARGETPLATFORM", host_platform()),
        ("TARGETOS", "linux".to_string()),
        ("TARGETARCH", arch.clone()),
        ("TARGETVARIANT", String::new()),
        ("BUILDPLATFORM", host_platform()),
        ("BUILDOS", "linux".to_string()),
        ("BUILDARCH", arch),
        ("BUILDVARIANT", String::new()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// One layer of a stage.
#[derive(Debug, Clone)]
struct Layer {
    diff_id: String,
    blob: String,
    size: u64,
    media_type: String,
    chain: String,
    dir: PathBuf,
}

/// A stage's file system and config as its steps change them.
#[derive(Debug, Clone, Default)]
struct State {
    layers: Vec<Layer>,
    history: Vec<Value>,
    key: String,
    /// Time of the newest layer (or the base's): history entries and the image's `created`.
    created: String,
    author: Option<String>,
    env: Vec<(String, String)>,
    workdir: String,
    user: String,
    shell: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    labels: BTreeMap<String, String>,
    exposed: BTreeSet<String>,
    volumes: BTreeSet<String>,
    healthcheck: Option<Value>,
    stop_signal: Option<String>,
    onbuild: Vec<String>,
    /// Other fields of the base's config, kept as they are.
    other: Map<String, Value>,
    /// ARGs declared in this stage: value, or `None` when declared without one.
    args: BTreeMap<String, Option<String>>,
    cmd_set: bool,
}

impl State {
    fn env_get(&self, k: &str) -> Option<&String> {
        self.env.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v)
    }

    fn set_env(&mut self, k: String, v: String) {
        if let Some(e) = self.env.iter_mut().find(|(n, _)| *n == k) {
            e.1 = v;
        } else {
            self.env.push((k, v));
        }
    }

    /// Variables words expand with: ARG values, ENV over them.
    fn vars(&self) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> =
            self.args.iter().filter_map(|(k, v)| Some((k.clone(), v.clone()?))).collect();
        for (k, v) in &self.env {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    fn layer_dirs(&self) -> Vec<PathBuf> {
        self.layers.iter().map(|l| l.dir.clone()).collect()
    }

    fn shell(&self) -> Vec<String> {
        self.shell.clone().unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn docker_config(&self) -> Map<String, Value> {
        let mut c = self.other.clone();
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        c.insert("Env".into(), json!(env));
        let set = |c: &mut Map<String, Value>, k: &str, v: Value, present: bool| {
            if present {
                c.insert(k.into(), v);
            } else {
                c.remove(k);
            }
        };
        set(&mut c, "User", json!(self.user), !self.user.is_empty());
        set(&mut c, "WorkingDir", json!(self.workdir), !self.workdir.is_empty());
        set(&mut c, "Cmd", json!(self.cmd), self.cmd.is_some());
        set(&mut c, "Entrypoint", json!(self.entrypoint), self.entrypoint.is_some());
        set(&mut c, "Labels", json!(self.labels), !self.labels.is_empty());
        let ports: Map<String, Value> = self.exposed.iter().map(|p| (p.clone(), json!({}))).collect();
        set(&mut c, "ExposedPorts", Value::Object(ports), !self.exposed.is_empty());
        let vols: Map<String, Value> = self.volumes.iter().map(|p| (p.clone(), json!({}))).collect();
        set(&mut c, "Volumes", Value::Object(vols), !self.volumes.is_empty());
        set(
            &mut c,
            "Healthcheck",
            self.healthcheck.clone().unwrap_or(Value::Null),
            self.healthcheck.is_some(),
        );
        set(&mut c, "StopSignal", json!(self.stop_signal), self.stop_signal.is_some());
        set(&mut c, "Shell", json!(self.shell), self.shell.is_some());
        set(&mut c, "OnBuild", json!(self.onbuild), !self.onbuild.is_empty());
        c
    }

    fn history(&mut self, created_by: String, empty: bool) {
        let mut h =
            json!({ "created": self.created, "created_by": created_by, "comment": "buildkit.dockerfile.v0" });
        if empty {
            h["empty_layer"] = json!(true);
        }
        self.history.push(h);
    }

    /// A state from an image's raw config and layers.
    fn from_image(config: &Value, layers: Vec<Layer>, id: &str) -> State {
        let c = config["config"].as_object().cloned().unwrap_or_default();
        let strings = |v: &Value| -> Option<Vec<String>> {
            v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
        };
        let keys = |v: &Value| -> BTreeSet<String> {
            v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default()
        };
        let mut st = State {
            layers,
            history: config["history"].as_array().cloned().unwrap_or_default(),
            key: id.to_string(),
            created: config["created"].as_str().unwrap_or_default().to_string(),
            author: config["author"].as_str().map(str::to_string),
            env: c
                .get("Env")
                .and_then(strings)
                .unwrap_or_default()
                .into_iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e, String::new()),
                })
                .collect(),
            workdir: c.get("WorkingDir").and_then(Value::as_str).unwrap_or_default().to_string(),
            user: c.get("User").and_then(Value::as_str).unwrap_or_default().to_string(),
            shell: c.get("Shell").and_then(strings),
            cmd: c.get("Cmd").and_then(strings),
            entrypoint: c.get("Entrypoint").and_then(strings),
            labels: c
                .get("Labels")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()
                })
                .unwrap_or_default(),
            exposed: c.get("ExposedPorts").map(keys).unwrap_or_default(),
            volumes: c.get("Volumes").map(keys).unwrap_or_default(),
            healthcheck: c.get("Healthcheck").filter(|v| !v.is_null()).cloned(),
            stop_signal: c.get("StopSignal").and_then(Value::as_str).map(str::to_string),
            onbuild: c.get("OnBuild").and_then(strings).unwrap_or_default(),
            ..State::default()
        };
        let mut other = c;
        for k in [
            "Env",
            "WorkingDir",
            "User",
            "Shell",
            "Cmd",
            "Entrypoint",
            "Labels",
            "ExposedPorts",
            "Volumes",
            "Healthcheck",
            "StopSignal",
            "OnBuild",
        ] {
            other.remove(k);
        }
        st.other = other;
        st
    }
}

/// Removes the build's network at the end of the build.
struct NetGuard<'a> {
    networks: &'a Networks,
    name: Mutex<Option<String>>,
    /// This build's claim (dropped after the network is removed: see `Drop` order below).
    owner: super::run::BuildOwner,
}

impl Drop for NetGuard<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.lock().ok().and_then(|mut n| n.take()) {
            let _ = self.networks.remove(&name);
        }
    }
}

/// A read-only view of a stack of layers as one tree: the layer itself when there is one, an
/// overlay mounted on the host for several (unmounted on drop), an empty dir for none.
struct View {
    path: PathBuf,
    mounted: bool,
    _dir: Option<crate::image::Staging>,
}

impl View {
    fn new(layers: &[PathBuf], store: &ImageStore) -> Result<View> {
        match layers {
            [one] => Ok(View { path: one.clone(), mounted: false, _dir: None }),
            _ => {
                let dir = store.staging()?;
                let path = dir.path().join("view");
                fs::create_dir(&path).map_err(io_err(&path))?;
                if layers.is_empty() {
                    return Ok(View { path, mounted: false, _dir: Some(dir) });
                }
                let lower: Vec<String> = layers.iter().rev().map(|p| p.display().to_string()).collect();
                let opts = format!("lowerdir={}", lower.join(":"));
                nix::mount::mount(
                    Some("overlay"),
                    &path,
                    Some("overlay"),
                    nix::mount::MsFlags::MS_RDONLY,
                    Some(opts.as_str()),
                )
                .map_err(|e| BuildError::Io { path: path.display().to_string(), source: e.into() })?;
                Ok(View { path, mounted: true, _dir: Some(dir) })
            }
        }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Builds images.
pub struct Builder<'a> {
    store: &'a ImageStore,
    runtime: &'a Runtime,
    networks: &'a Networks,
    base: &'a dyn BaseImages,
    events: &'a dyn ImageEvents,
    cancel: Option<&'a AtomicBool>,
    http: Option<RegistryOptions>,
}

/// One build's shared state.
struct Build<'a, 'b> {
    b: &'b Builder<'a>,
    req: &'b BuildRequest,
    df: &'b Dockerfile,
    file: String,
    cache: Cache,
    net: NetGuard<'a>,
    /// Results of the stages built so far.
    done: Mutex<BTreeMap<usize, State>>,
    global: BTreeMap<String, String>,
    context_filter: Box<dyn Filter + Send + Sync>,
    /// Images got for FROM / --from, by reference.
    images: Mutex<BTreeMap<String, State>>,
    /// How `ADD <url>` downloads: the registry client's transport settings.
    http: RegistryOptions,
}

impl<'a> Builder<'a> {
    /// A builder storing into `store`, running steps with `runtime` on `networks`, getting base
    /// images from `base` and reporting to `events`.
    pub fn new(
        store: &'a ImageStore,
        runtime: &'a Runtime,
        networks: &'a Networks,
        base: &'a dyn BaseImages,
        events: &'a dyn ImageEvents,
    ) -> Builder<'a> {
        Builder { store, runtime, networks, base, events, cancel: None, http: None }
    }

    /// Stops the build (the running step is killed, everything is cleaned up) when `flag`
    /// becomes true: the CLI sets it on Ctrl-C.
    pub fn with_cancel(mut self, flag: &'a AtomicBool) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Downloads of `ADD <url>` use `opts` (CA roots, `certs.d`, timeouts) rather than
    /// [`RegistryOptions::from_env`]: the engine passes its registry client's.
    pub fn with_http(mut self, opts: RegistryOptions) -> Self {
        self.http = Some(opts);
        self
    }

    /// Builds `req` and stores the image under its tags.
    pub fn build(&self, req: &BuildRequest) -> Result<BuiltImage> {
        let (text, file) = match &req.dockerfile_inline {
            Some(t) => (t.clone(), "Dockerfile".to_string()),
            None => {
                let rel = req.dockerfile.clone().unwrap_or_else(|| PathBuf::from("Dockerfile"));
                let path = if rel.is_absolute() { rel } else { req.context.join(rel) };
                // A FIFO or device would block the read forever (or never end).
                if fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
                    return Err(BuildError::Dockerfile(format!("{}: not a regular file", path.display())));
                }
                let text = fs::read_to_string(&path)
                    .map_err(|source| BuildError::Io { path: path.display().to_string(), source })?;
                (text, path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
            }
        };
        let df = super::frontend::parse(&text, &file)?;
        self.build_parsed(req, &df, &file)
    }

    /// Builds an already parsed Dockerfile (`file` names it in errors).
    pub fn build_parsed(&self, req: &BuildRequest, df: &Dockerfile, file: &str) -> Result<BuiltImage> {
        if let Some(p) = &req.platform {
            check_platform(p)?;
        }
        let tags: Vec<Reference> = req
            .tags
            .iter()
            .map(|t| Reference::parse(t).map_err(BuildError::from))
            .collect::<Result<_>>()?;
        if df.stages.is_empty() {
            return Err(BuildError::Dockerfile(format!("{file}: no FROM instruction")));
        }
        let cache = Cache::open(&self.runtime.dirs().root).map_err(io_err(&self.runtime.dirs().root))?;
        let context_filter = super::frontend::context_filter(&req.context, req.dockerfile.as_deref())?;
        let mut global = predefined_args();
        for decl in &df.global_args {
            let value = match req.args.get(&decl.name) {
                Some(v) => Some(v.clone()),
                None => match &decl.default {
                    Some(d) => Some(
                        vars::expand(d, &global, df.escape)
                            .map_err(|source| BuildError::Arg {
                                file: file.to_string(),
                                name: decl.name.clone(),
                                source: Box::new(source),
                            })?
                            .0,
                    ),
                    None => None,
                },
            };
            if let Some(v) = value {
                global.insert(decl.name.clone(), v);
            }
        }
        let build = Build {
            b: self,
            req,
            df,
            file: file.to_string(),
            cache,
            net: {
                // What builds killed before (SIGKILL) left goes first; then this one's claim.
                super::run::reap_stale(self.runtime, self.networks);
                let owner = super::run::BuildOwner::claim(self.runtime)?;
                NetGuard { networks: self.networks, name: Mutex::new(None), owner }
            },
            done: Mutex::new(BTreeMap::new()),
            global,
            context_filter,
            images: Mutex::new(BTreeMap::new()),
            http: self.http.clone().unwrap_or_else(RegistryOptions::from_env),
        };
        let target = build.target_index()?;
        let needed = build.needed(target)?;
        let started = Instant::now();
        self.events.event("Build", file, "Building", false);
        build.run_stages(&needed).inspect_err(|e| self.events.failed("Build", file, &e.to_string()))?;
        // As BuildKit: a build arg no built stage (nor the global scope) declares is reported.
        let mut declared: BTreeSet<&str> = df.global_args.iter().map(|a| a.name.as_str()).collect();
        declared.extend(PROXY_ARGS);
        for i in needed.keys() {
            for ins in &df.stages[*i].instructions {
                if let InstructionKind::Arg(decls) = &ins.kind {
                    declared.extend(decls.iter().map(|d| d.name.as_str()));
                }
            }
        }
        let unused: Vec<&str> =
            req.args.keys().map(String::as_str).filter(|a| !declared.contains(a)).collect();
        if !unused.is_empty() {
            self.events
                .output(file, &format!("[Warning] One or more build-args {unused:?} were not consumed"));
        }
        let state = build
            .done
            .lock()
            .map_err(|_| BuildError::Dockerfile("a stage panicked".into()))?
            .remove(&target)
            .ok_or_else(|| BuildError::Dockerfile("target not built".into()))?;
        let id = build.store_image(state, &tags)?;
        drop(build);
        self.events.event("Build", file, &format!("DONE {:.1}s", started.elapsed().as_secs_f64()), true);
        Ok(BuiltImage { id, tags: tags.iter().map(Reference::short).collect() })
    }
}

/// A source word of COPY/ADD, expanded.
enum Src {
    /// A heredoc's body (its name).
    Heredoc(String),
    /// A path (pattern) in the context or the `--from` root.
    Local(String),
    /// A file to download (ADD).
    Http(String),
    /// A git repository (ADD), with the word as written.
    Git(Box<remote::GitRef>, String),
}

impl Src {
    /// The word as the cache key holds it.
    fn word(&self) -> &str {
        match self {
            Src::Heredoc(s) | Src::Local(s) | Src::Http(s) | Src::Git(_, s) => s,
        }
    }
}

/// Where a file to copy comes from, for filtering and unpacking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SrcKind {
    Context,
    Heredoc,
    Remote,
    Git,
}

/// A source of a COPY/ADD step, resolved as far as its cache key needs.
enum Item {
    /// A file or dir at hand.
    Path { root: PathBuf, rel: PathBuf, kind: SrcKind },
    /// A download whose checksum was given: fetched only when the step runs.
    Http { url: String, name: String, dir: PathBuf, expected: remote::HttpChecksum },
    /// A git commit to check out when the step runs (with the ssh agent it was resolved with).
    Git { g: Box<remote::GitRef>, r: git::Resolved, dir: PathBuf, word: String, ssh: GitSsh },
}

/// The ssh agent of a git source: its socket, and the agent of key files when one was started
/// (stopped when this goes).
struct GitSsh {
    sock: Option<PathBuf>,
    _agent: Option<super::ssh::OwnAgent>,
}

/// How `--from` / `from=` resolved.
enum FromRef {
    Stage(usize),
    Context(PathBuf),
    Image(String),
}

impl Build<'_, '_> {
    /// [`Self::err`] for a failure `source` caused: `message` already says it (`ADD url: ...`),
    /// and the source stays the error's cause for whoever prints the chain.
    fn err_by(
        &self,
        line: usize,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> BuildError {
        BuildError::Step { file: self.file.clone(), line, message: message.into(), source: Some(source.into()) }
    }

    fn err(&self, line: usize, message: impl Into<String>) -> BuildError {
        BuildError::Step { file: self.file.clone(), line, message: message.into(), source: None }
    }

    fn stage_index(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) =
            self.df.stages[..before].iter().position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    fn target_index(&self) -> Result<usize> {
        match &self.req.target {
            None => Ok(self.df.stages.len() - 1),
            Some(t) => self
                .df
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .ok_or_else(|| BuildError::Dockerfile(format!("target stage {t:?} could not be found"))),
        }
    }

    fn expand_global(&self, word: &str, line: usize) -> Result<String> {
        Ok(vars::expand(word, &self.global, self.df.escape).map_err(|e| self.err_by(line, e.to_string(), e))?.0)
    }

    fn resolve_from(&self, name: &str, before: usize) -> FromRef {
        if let Some(i) = self.stage_index(name, before) {
            return FromRef::Stage(i);
        }
        match self.req.additional_contexts.get(name) {
            Some(ContextSource::Dir(d)) => FromRef::Context(d.clone()),
            Some(ContextSource::Image(i)) => FromRef::Image(i.clone()),
            None => FromRef::Image(name.to_string()),
        }
    }

    /// Stages the target needs, each with the stages it needs.
    fn needed(&self, target: usize) -> Result<BTreeMap<usize, BTreeSet<usize>>> {
        let mut need: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if need.contains_key(&i) {
                continue;
            }
            let mut deps = BTreeSet::new();
            let s = &self.df.stages[i];
            let mut refs = vec![(self.expand_global(&s.base, s.line)?, s.line)];
            for ins in &s.instructions {
                match &ins.kind {
                    InstructionKind::Copy(c) | InstructionKind::Add(c) => {
                        if let Some(f) = &c.from {
                            refs.push((self.expand_global(f, ins.line)?, ins.line));
                        }
                    }
                    InstructionKind::Run(r) => {
                        for m in &r.mounts {
                            if let Some(f) = &m.from {
                                refs.push((self.expand_global(f, ins.line)?, ins.line));
                            }
                        }
                    }
                    _ => {}
                }
            }
            for (r, _) in refs {
                if let FromRef::Stage(j) = self.resolve_from(&r, i) {
                    deps.insert(j);
                    todo.push(j);
                }
            }
            need.insert(i, deps);
        }
        Ok(need)
    }

    /// Builds `needed` stages: in waves, each wave's stages (those whose dependencies are
    /// built) on threads of their own. A failed wave ends the build once its other stages
    /// have stopped.
    fn run_stages(&self, needed: &BTreeMap<usize, BTreeSet<usize>>) -> Result<()> {
        let mut left: BTreeMap<usize, BTreeSet<usize>> = needed.clone();
        while !left.is_empty() {
            let built: BTreeSet<usize> =
                self.done.lock().map(|d| d.keys().copied().collect()).unwrap_or_default();
            let wave: Vec<usize> =
                left.iter().filter(|(_, d)| d.is_subset(&built)).map(|(i, _)| *i).collect();
            if wave.is_empty() {
                return Err(BuildError::Dockerfile("stages depend on each other in a circle".into()));
            }
            let results: Vec<(usize, Result<State>)> = if wave.len() == 1 {
                vec![(wave[0], self.stage(wave[0]))]
            } else {
                std::thread::scope(|scope| {
                    let handles: Vec<_> =
                        wave.iter().map(|&i| (i, scope.spawn(move || self.stage(i)))).collect();
                    handles
                        .into_iter()
                        .map(|(i, h)| {
                            (
                                i,
                                h.join().unwrap_or_else(|_| {
                                    Err(BuildError::Dockerfile("a stage panicked".into()))
                                }),
                            )
                        })
                        .collect()
                })
            };
            let mut first_err = None;
            for (i, r) in results {
                left.remove(&i);
                match r {
                    Ok(st) => {
                        if let Ok(mut d) = self.done.lock() {
                            d.insert(i, st);
                        }
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(())
    }

    fn stage_name(&self, idx: usize) -> String {
        self.df.stages[idx].name.clone().unwrap_or_else(|| format!("stage-{idx}"))
    }

    /// An image as a stage state (cached per build).
    fn image_state(&self, reference: &str, platform: Option<&str>, line: usize) -> Result<State> {
        if let Some(s) = self.images.lock().ok().and_then(|m| m.get(reference).cloned()) {
            return Ok(s);
        }
        let img =
            self.b.base.get(reference, platform, self.req.pull).map_err(|e| self.err_by(line, e.to_string(), e))?;
        let raw = self.b.store.raw_config(&img.id)?;
        let descs = self.b.store.image_layers(&img.id)?;
        let diff_ids: Vec<String> = raw["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let chains = crate::image::chain_ids(&diff_ids);
        if descs.len() != diff_ids.len() || img.layer_dirs.len() != diff_ids.len() {
            return Err(self.err(line, format!("image {reference}: layers and config disagree")));
        }
        let layers = (0..diff_ids.len())
            .map(|i| Layer {
                diff_id: diff_ids[i].clone(),
                blob: descs[i].0.clone(),
                size: descs[i].1,
                media_type: descs[i].2.clone(),
                chain: chains[i].clone(),
                dir: img.layer_dirs[i].clone(),
            })
            .collect();
        let st = State::from_image(&raw, layers, &img.id);
        if let Ok(mut m) = self.images.lock() {
            m.insert(reference.to_string(), st.clone());
        }
        Ok(st)
    }

    fn stage(&self, idx: usize) -> Result<State> {
        let s: &Stage = &self.df.stages[idx];
        if let Some(p) = &s.platform {
            check_platform(&self.expand_global(p, s.line)?)?;
        }
        let base = self.expand_global(&s.base, s.line)?;
        let name = self.stage_name(idx);
        let steps = 1 + s.instructions.iter().filter(|i| is_step(&i.kind)).count();
        let label = |n: usize, text: &str| format!("[{name} {n}/{steps}] {}", one_line(text));
        let from_label = label(1, &format!("FROM {base}"));
        let mut st = if base.eq_ignore_ascii_case("scratch") {
            // A fixed time until the first layer: history entries of metadata instructions
            // before it then do not change the image id of an unchanged rebuild.
            State { key: "scratch".into(), created: "1970-01-01T00:00:00Z".into(), ..State::default() }
        } else {
            match self.resolve_from(&base, idx) {
                FromRef::Stage(j) => {
                    let mut st = self
                        .done
                        .lock()
                        .ok()
                        .and_then(|d| d.get(&j).cloned())
                        .ok_or_else(|| self.err(s.line, "stage not built"))?;
                    st.args.clear();
                    st
                }
                FromRef::Context(_) => {
                    return Err(self.err(s.line, format!("FROM {base}: a folder context cannot be a base")));
                }
                FromRef::Image(r) => self.image_state(&r, s.platform.as_deref(), s.line)?,
            }
        };
        st.cmd_set = false;
        if st.created.is_empty() {
            st.created = crate::runtime::timefmt::now();
        }
        self.b.events.event("Step", &from_label, "CACHED", true);
        // ONBUILD triggers of the base run first, and are not inherited further.
        let triggers = std::mem::take(&mut st.onbuild);
        let mut trigger_instrs = Vec::new();
        for t in &triggers {
            trigger_instrs.push(super::frontend::parse_trigger(t, s.line, &self.file)?);
        }
        let mut n = 1;
        for ins in trigger_instrs.iter().chain(s.instructions.iter()) {
            if is_step(&ins.kind) && !trigger_instrs.iter().any(|t| std::ptr::eq(t, ins)) {
                n += 1;
            }
            self.check_cancel()?;
            self.instruction(idx, &mut st, ins, &label(n, &ins.original))?;
        }
        Ok(st)
    }

    fn check_cancel(&self) -> Result<()> {
        if self.b.cancel.is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst)) {
            return Err(BuildError::Cancelled);
        }
        Ok(())
    }

    fn expand(&self, st: &State, word: &str, line: usize) -> Result<(String, BTreeSet<String>)> {
        vars::expand(word, &st.vars(), self.df.escape).map_err(|e| self.err_by(line, e.to_string(), e))
    }

    fn instruction(&self, idx: usize, st: &mut State, ins: &Instruction, label: &str) -> Result<()> {
        let line = ins.line;
        match &ins.kind {
            InstructionKind::Arg(decls) => {
                for d in decls {
                    self.arg(st, d, line)?;
                }
            }
            InstructionKind::Env(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let (k, _) = self.expand(st, k, line)?;
                    let (v, _) = self.expand(st, v, line)?;
                    shown.push(format!("{k}={v}"));
                    st.set_env(k, v);
                }
                self.meta(st, &format!("ENV {}", shown.join(" ")));
            }
            InstructionKind::Label(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let (k, _) = self.expand(st, k, line)?;
                    let (v, _) = self.expand(st, v, line)?;
                    shown.push(format!("{k}={v}"));
                    st.labels.insert(k, v);
                }
                self.meta(st, &format!("LABEL {}", shown.join(" ")));
            }
            InstructionKind::Workdir(w) => {
                let (w, _) = self.expand(st, w, line)?;
                let path = if w.starts_with('/') {
                    w.clone()
                } else {
                    join_posix(&workdir_or_root(&st.workdir), &w)
                };
                st.workdir = clean_posix(&path);
                self.workdir_step(st, label, line)?;
            }
            InstructionKind::User(u) => {
                st.user = self.expand(st, u, line)?.0;
                let u = st.user.clone();
                self.meta(st, &format!("USER {u}"));
            }
            InstructionKind::Cmd(c) => {
                st.cmd = Some(command_args(c, &st.shell()));
                st.cmd_set = true;
                self.meta(st, &format!("CMD {}", json!(st.cmd)));
            }
            InstructionKind::Entrypoint(c) => {
                st.entrypoint = Some(command_args(c, &st.shell()));
                if !st.cmd_set {
                    st.cmd = None;
                }
                self.meta(st, &format!("ENTRYPOINT {}", json!(st.entrypoint)));
            }
            InstructionKind::Expose(ports) => {
                let mut shown = Vec::new();
                for p in ports {
                    let words = vars::expand_split(p, &st.vars(), self.df.escape)
                        .map_err(|e| self.err_by(line, e.to_string(), e))?;
                    for p in words {
                        for port in expose_ports(&p).map_err(|e| self.err_by(line, e.to_string(), e))? {
                            shown.push(port.clone());
                            st.exposed.insert(port);
                        }
                    }
                }
                self.meta(
                    st,
                    &format!(
                        "EXPOSE map[{}]",
                        shown.iter().map(|p| format!("{p}:{{}}")).collect::<Vec<_>>().join(" ")
                    ),
                );
            }
            InstructionKind::Volume(vs) => {
                let mut shown = Vec::new();
                for v in vs {
                    let v = self.expand(st, v, line)?.0;
                    if v.trim().is_empty() {
                        return Err(self.err(line, "VOLUME specified can not be an empty string"));
                    }
                    shown.push(v.clone());
                    st.volumes.insert(v);
                }
                self.meta(st, &format!("VOLUME {}", json!(shown)));
            }
            InstructionKind::Healthcheck(h) => {
                st.healthcheck = Some(healthcheck(h.as_ref(), &st.shell()).map_err(|e| self.err_by(line, e.to_string(), e))?);
                self.meta(st, &one_line(&ins.original));
            }
            InstructionKind::StopSignal(s) => {
                let s = self.expand(st, s, line)?.0;
                // As docker, an unknown signal is refused here, not when the container stops.
                if s.parse::<crate::runtime::process::SignalName>().is_err() {
                    return Err(self.err(line, format!("STOPSIGNAL: invalid signal {s:?}")));
                }
                st.stop_signal = Some(s.clone());
                self.meta(st, &format!("STOPSIGNAL {s}"));
            }
            InstructionKind::Shell(sh) => {
                if sh.is_empty() {
                    return Err(self.err(line, "SHELL requires at least one argument"));
                }
                st.shell = Some(sh.clone());
                self.meta(st, &format!("SHELL {}", json!(sh)));
            }
            InstructionKind::Onbuild(t) => {
                st.onbuild.push(t.clone());
                self.meta(st, &format!("ONBUILD {t}"));
            }
            InstructionKind::Maintainer(m) => {
                st.author = Some(m.clone());
                self.meta(st, &format!("MAINTAINER {m}"));
            }
            InstructionKind::Copy(c) => self.copy_step(idx, st, c, false, ins, label)?,
            InstructionKind::Add(c) => self.copy_step(idx, st, c, true, ins, label)?,
            InstructionKind::Run(r) => self.run_step(idx, st, r, ins, label)?,
        }
        Ok(())
    }

    /// A metadata instruction: a history entry and a new key.
    fn meta(&self, st: &mut State, created_by: &str) {
        st.key = step_key(&st.key, &json!({ "meta": created_by }));
        st.history(created_by.to_string(), true);
    }

    fn arg(&self, st: &mut State, d: &ArgDecl, line: usize) -> Result<()> {
        let value = match self.req.args.get(&d.name) {
            Some(v) => Some(v.clone()),
            None => match &d.default {
                Some(def) => Some(self.expand(st, def, line)?.0),
                None => self.global.get(&d.name).cloned(),
            },
        };
        st.key = step_key(&st.key, &json!({ "arg": d.name, "value": value }));
        st.args.insert(d.name.clone(), value);
        Ok(())
    }

    /// ENV and the stage's ARGs (with values) as RUN gets them, ENV winning; proxy build args
    /// too. Returns (env, args shown in history).
    fn run_env(&self, st: &State) -> (Vec<String>, Vec<String>) {
        let mut env: Vec<String> = st.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut shown = Vec::new();
        for (k, v) in &st.args {
            if let Some(v) = v
                && st.env_get(k).is_none()
            {
                env.push(format!("{k}={v}"));
                shown.push(format!("{k}={v}"));
            }
        }
        for p in PROXY_ARGS {
            if let Some(v) = self.req.args.get(p)
                && !st.args.contains_key(p)
                && st.env_get(p).is_none()
            {
                env.push(format!("{p}={v}"));
            }
        }
        if st.env_get("PATH").is_none() {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        (env, shown)
    }

    /// Looks `key` up: on a hit, the layer is put on `st` and true is returned.
    /// Serves a step from the cache when it can: its layer (if any) goes on `st`, with its
    /// history entry (`created_by`).
    fn cached(&self, st: &mut State, key: &str, label: &str, created_by: &str) -> Result<bool> {
        if self.req.no_cache {
            return Ok(false);
        }
        let Some(rec) = self.cache.get(key) else { return Ok(false) };
        if let Some(l) = &rec.layer {
            if !self.b.store.blob_path(&l.blob).exists() {
                return Ok(false);
            }
            let parent = st.layers.last().map(|l| l.chain.clone());
            let Ok((diff_id, chain)) =
                self.b.store.ensure_layer(&l.blob, parent.as_deref(), Some(&l.diff_id), label)
            else {
                return Ok(false);
            };
            st.layers.push(Layer {
                diff_id,
                blob: l.blob.clone(),
                size: l.size,
                media_type: GZIP_LAYER.into(),
                dir: self.b.store.layer_path(&chain),
                chain,
            });
        }
        st.created = rec.created.clone();
        st.key = key.to_string();
        st.history(created_by.to_string(), rec.layer.is_none());
        self.b.events.event("Step", label, "CACHED", true);
        Ok(true)
    }

    /// Makes a layer of `tree` (an overlay upper dir when `overlay`), puts it on `st` and
    /// records it under `key`. An empty tree makes no layer.
    fn commit(&self, st: &mut State, key: &str, tree: &Path, overlay: bool, label: &str) -> Result<bool> {
        let staging = self.b.store.staging()?;
        let tar_path = staging.path().join("layer.tar");
        let f = fs::File::create(&tar_path).map_err(io_err(&tar_path))?;
        let t = layer::write_tar(tree, std::io::BufWriter::new(f), overlay).map_err(io_err(tree))?;
        let created = crate::runtime::timefmt::now();
        if t.entries == 0 {
            self.cache
                .put(key, &CacheRecord { layer: None, created: created.clone() })
                .map_err(ImageError::from)?;
            st.created = created;
            st.key = key.to_string();
            return Ok(false);
        }
        let gz = staging.path().join("layer.tar.gz");
        layer::gzip_file(&tar_path, &gz).map_err(io_err(&gz))?;
        // Under the store's lock, so that no gc sees the blob before the record keeps it.
        let _lock = self.b.store.lock()?;
        let (blob, size) = self.b.store.put_blob_file(&gz, None, label)?;
        let parent = st.layers.last().map(|l| l.chain.clone());
        let (diff_id, chain) =
            self.b.store.ensure_layer(&blob, parent.as_deref(), Some(&t.diff_id), label)?;
        let rec = CachedLayer { diff_id: diff_id.clone(), blob: blob.clone(), size, chain: chain.clone() };
        self.cache
            .put(key, &CacheRecord { layer: Some(rec), created: created.clone() })
            .map_err(ImageError::from)?;
        st.layers.push(Layer {
            diff_id,
            blob,
            size,
            media_type: GZIP_LAYER.into(),
            dir: self.b.store.layer_path(&chain),
            chain,
        });
        st.created = created;
        st.key = key.to_string();
        Ok(true)
    }

    fn workdir_step(&self, st: &mut State, label: &str, _line: usize) -> Result<()> {
        let wd = st.workdir.clone();
        let key = step_key(&st.key, &json!({ "workdir": wd, "user": st.user }));
        let created_by = format!("WORKDIR {wd}");
        if self.cached(st, &key, label, &created_by)? {
            return Ok(());
        }
        let started = Instant::now();
        let view = View::new(&st.layer_dirs(), self.b.store)?;
        let rel = crate::runtime::rootfs::secure_join(&view.path, &wd)
            .map_err(|source| BuildError::Rootfs { path: wd.clone(), source })?;
        let rel = rel.strip_prefix(&view.path).unwrap_or(Path::new("")).to_path_buf();
        let staging = self.b.store.staging()?;
        let tree = staging.path().join("tree");
        fs::create_dir(&tree).map_err(io_err(&tree))?;
        if !view.path.join(&rel).is_dir() {
            let owner =
                if st.user.is_empty() { None } else { context::resolve_owner(&st.user, &view.path).ok() };
            context::mkdir_tree(&tree, &view.path, &rel, owner).map_err(io_err(&tree))?;
        }
        drop(view);
        let made = self.commit(st, &key, &tree, false, label)?;
        st.history(created_by, !made);
        self.b.events.event("Step", label, &format!("DONE {:.1}s", started.elapsed().as_secs_f64()), true);
        Ok(())
    }

    /// The root a `--from` / `from=` reads, with a cache identity for it.
    fn source_root(&self, name: &str, idx: usize, line: usize) -> Result<(View, String)> {
        match self.resolve_from(name, idx) {
            FromRef::Stage(j) => {
                let done = self.done.lock().map_err(|_| self.err(line, "a stage panicked"))?;
                let st = done.get(&j).ok_or_else(|| self.err(line, format!("stage {name} is not built")))?;
                Ok((View::new(&st.layer_dirs(), self.b.store)?, st.key.clone()))
            }
            FromRef::Context(dir) => {
                let mut h = Sha256::new();
                context::hash_source(&dir, Path::new(""), &NoFilter, &mut h)
                    .map_err(|e| self.err_by(line, e.to_string(), e))?;
                Ok((
                    View { path: dir, mounted: false, _dir: None },
                    format!("context:{}", hex::encode(h.finalize())),
                ))
            }
            FromRef::Image(r) => {
                let st = self.image_state(&r, None, line)?;
                Ok((View::new(&st.layer_dirs(), self.b.store)?, st.key))
            }
        }
    }

    /// Downloads `url` (ADD) into `dest`; errors name the Dockerfile line and the URL.
    /// Without `expected`, a download kept from an earlier build is reused when the server
    /// says by its ETag that it has not changed (see [`remote::download`]).
    fn download(
        &self,
        url: &str,
        dest: &Path,
        expected: Option<&remote::HttpChecksum>,
        line: usize,
    ) -> Result<remote::Downloaded> {
        let kept = self.cache.downloads();
        let kept = if expected.is_none() { Some(&kept) } else { None };
        remote::download(&self.http, url, dest, expected, kept).map_err(|e| match e {
            remote::RemoteError::Io { .. }
            | remote::RemoteError::Invalid(_)
            | remote::RemoteError::Query { .. }
            | remote::RemoteError::Git(_) => self.err_by(line, format!("ADD {}: {e}", remote::redact(url)), e),
            // These name the URL themselves.
            _ => self.err_by(line, format!("ADD {e}"), e),
        })
    }

    /// The ssh agent git gets for an ssh remote (`ssh://`, `user@host:path`): the build's
    /// `--ssh default` (BuildKit forwards that one to git), which is the host's agent
    /// (`$SSH_AUTH_SOCK`), an agent socket, or key files loaded into an `ssh-agent` of this
    /// source's own (started in `dir`, stopped when the returned value goes). Nothing for
    /// other remotes or without `--ssh default`.
    fn git_ssh(&self, g: &remote::GitRef, dir: &Path, word: &str, line: usize) -> Result<GitSsh> {
        let ssh_remote = g.remote.starts_with("ssh://") || !g.remote.contains("://");
        let Some(paths) = self.req.ssh.get("default").filter(|_| ssh_remote) else {
            return Ok(GitSsh { sock: None, _agent: None });
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let (sock, agent) = super::ssh::agent_for("default", paths, dir)
            .map_err(|e| self.err_by(line, format!("ADD {}: {e}", remote::redact(word)), e))?;
        Ok(GitSsh { sock: Some(sock), _agent: agent })
    }

    /// An error of git for `word`; for an ssh remote the build gave no key, the hint.
    fn git_error(&self, g: &remote::GitRef, word: &str, line: usize, e: remote::RemoteError) -> BuildError {
        if let remote::RemoteError::Cancelled = e {
            return BuildError::Cancelled;
        }
        let ssh_remote = g.remote.starts_with("ssh://") || !g.remote.contains("://");
        let hint = if ssh_remote && matches!(e, remote::RemoteError::Git(_)) && !self.req.ssh.contains_key("default")
        {
            " (git reaches an ssh remote with the build's --ssh default[=KEY])"
        } else {
            ""
        };
        self.err_by(line, format!("ADD {}: {e}{hint}", remote::redact(word)), e)
    }

    fn copy_step(
        &self,
        idx: usize,
        st: &mut State,
        c: &CopyInstruction,
        add: bool,
        ins: &Instruction,
        label: &str,
    ) -> Result<()> {
        let line = ins.line;
        let verb = if add { "ADD" } else { "COPY" };
        // Sources and where they are read from; remote ones only for ADD, as BuildKit.
        let mut srcs: Vec<Src> = Vec::new();
        let heredoc_dir = self.b.store.staging()?;
        for s in &c.sources {
            if let Some(h) = s.strip_prefix("<<").and_then(|n| {
                let n = n.trim_start_matches('-').trim_matches(['"', '\'']);
                c.heredocs.iter().find(|h| h.name == n)
            }) {
                let content = if h.expand { self.expand(st, &h.content, line)?.0 } else { h.content.clone() };
                let p = heredoc_dir.path().join(&h.name);
                fs::write(&p, content).map_err(io_err(&p))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).map_err(io_err(&p))?;
                srcs.push(Src::Heredoc(h.name.clone()));
                continue;
            }
            let s = self.expand(st, s, line)?.0;
            let kind = if add {
                remote::classify(&s).map_err(|e| self.err_by(line, format!("ADD {s}: {e}"), e))?
            } else {
                remote::Source::Local
            };
            srcs.push(match kind {
                remote::Source::Local => Src::Local(s),
                remote::Source::Http(u) => Src::Http(u),
                remote::Source::Git(mut g) => {
                    // `--keep-git-dir` and the URL's `?keep-git-dir=` must agree (BuildKit).
                    if c.keep_git_dir {
                        if g.keep_git_dir == Some(false) {
                            return Err(
                                self.err(line, format!("ADD {s}: inconsistent keep-git-dir configuration"))
                            );
                        }
                        g.keep_git_dir = Some(true);
                    }
                    Src::Git(Box::new(g), s)
                }
            });
        }
        // BuildKit's rules for `ADD --checksum`: one source, and a remote one (it verifies a
        // download, or the commit a git ref resolves to); a local source is refused rather
        // than the flag ignored.
        let mut http_checksum = None;
        if add && let Some(sum) = &c.checksum {
            let sum = self.expand(st, sum, line)?.0;
            if srcs.len() != 1 {
                return Err(
                    self.err(line, "ADD --checksum: checksum can't be specified for multiple sources")
                );
            }
            match &mut srcs[0] {
                Src::Http(_) => {
                    http_checksum = Some(
                        remote::parse_http_checksum(&sum).map_err(|e| self.err_by(line, format!("ADD {e}"), e))?,
                    )
                }
                Src::Git(g, _) => {
                    if let Some(q) = &g.checksum
                        && *q != sum
                    {
                        return Err(
                            self.err(line, format!("ADD --checksum: checksum mismatch {sum:?} != {q:?}"))
                        );
                    }
                    g.checksum = Some(sum);
                }
                Src::Local(s) | Src::Heredoc(s) => {
                    return Err(self.err(
                        line,
                        format!(
                            "ADD --checksum: checksum requires HTTP(S) or Git sources ({s:?} is a local source)"
                        ),
                    ));
                }
            }
        }
        // Where remote sources are fetched (removed with it, whatever happens).
        let fetch_dir = self.b.store.staging()?;
        let dest = self.expand(st, &c.dest, line)?.0;
        let chmod = match &c.chmod {
            Some(m) => {
                let m = self.expand(st, m, line)?.0;
                Some(
                    context::parse_chmod(&m)
                        .ok_or_else(|| self.err(line, format!("invalid --chmod {m:?}")))?,
                )
            }
            None => None,
        };
        let chown = match &c.chown {
            Some(o) => Some(self.expand(st, o, line)?.0),
            None => None,
        };
        let excludes: Vec<String> =
            c.exclude.iter().map(|e| self.expand(st, e, line).map(|x| x.0)).collect::<Result<_>>()?;
        let exclude_filter = context::Excludes(excludes.clone());
        let (root_view, root_id, base_filter): (View, String, &dyn Filter) = match &c.from {
            Some(f) => {
                let f = self.expand(st, f, line)?.0;
                let (v, id) = self.source_root(&f, idx, line)?;
                (v, id, &NoFilter)
            }
            None => (
                View { path: self.req.context.clone(), mounted: false, _dir: None },
                "context".into(),
                self.context_filter.as_ref(),
            ),
        };
        let filter = context::Both(base_filter, &exclude_filter);
        let mut items: Vec<Item> = Vec::new();
        let mut h = Sha256::new();
        for (i, src) in srcs.iter().enumerate() {
            match src {
                Src::Heredoc(name) => {
                    context::hash_source(heredoc_dir.path(), Path::new(name), &NoFilter, &mut h)
                        .map_err(|e| self.err_by(line, e.to_string(), e))?;
                    items.push(Item::Path {
                        root: heredoc_dir.path().to_path_buf(),
                        rel: PathBuf::from(name),
                        kind: SrcKind::Heredoc,
                    });
                }
                Src::Local(s) => {
                    let found = context::resolve_sources(&root_view.path, s, &filter)
                        .map_err(|e| self.err_by(line, format!("{verb} {s}: {e}"), e))?;
                    for rel in found {
                        if c.from.is_none() {
                            context::hash_source(&root_view.path, &rel, &filter, &mut h)
                                .map_err(|e| self.err_by(line, e.to_string(), e))?;
                        } else {
                            h.update(rel.as_os_str().as_encoded_bytes());
                        }
                        items.push(Item::Path { root: root_view.path.clone(), rel, kind: SrcKind::Context });
                    }
                }
                Src::Http(url) => {
                    let name = remote::url_file_name(url);
                    let dir = fetch_dir.path().join(i.to_string());
                    fs::create_dir(&dir).map_err(io_err(&dir))?;
                    match &http_checksum {
                        // A pinned checksum is the content's identity: nothing is downloaded
                        // unless the step runs (BuildKit does the same).
                        Some(sum) => {
                            // (sha256 as before other algorithms were taken, so that caches
                            // made then still hit.)
                            if sum.algo == remote::ChecksumAlgo::Sha256 {
                                h.update(json!({ "http": name, "sha256": sum.hex }).to_string());
                            } else {
                                h.update(json!({ "http": name, "digest": sum.to_string() }).to_string());
                            }
                            items.push(Item::Http { url: url.clone(), name, dir, expected: sum.clone() });
                        }
                        None => {
                            let got = self.download(url, &dir.join(&name), None, line)?;
                            h.update(
                                json!({ "http": name, "sha256": got.sha256, "modified": got.modified })
                                    .to_string(),
                            );
                            items.push(Item::Path {
                                root: dir,
                                rel: PathBuf::from(name),
                                kind: SrcKind::Remote,
                            });
                        }
                    }
                }
                Src::Git(g, word) => {
                    let dir = fetch_dir.path().join(i.to_string());
                    let ssh = self.git_ssh(g, &dir, word, line)?;
                    let git = git::Git::new(&dir, ssh.sock.clone())
                        .map_err(|e| self.err_by(line, format!("ADD {word}: {e}"), e))?
                        .with_cancel(self.b.cancel);
                    let r = git.resolve(g).map_err(|e| self.git_error(g, word, line, e))?;
                    h.update(r.cache_identity(g).to_string());
                    items.push(Item::Git { g: g.clone(), r, dir, word: word.clone(), ssh });
                }
            }
        }
        let key = step_key(
            &st.key,
            &json!({
                "op": verb, "from": root_id, "content": hex::encode(h.finalize()),
                "sources": srcs.iter().map(Src::word).collect::<Vec<_>>(), "dest": dest, "workdir": st.workdir,
                "chown": chown, "chmod": chmod, "parents": c.parents, "exclude": excludes,
            }),
        );
        let created_by = format!("{} # buildkit", one_line(&ins.original));
        if self.cached(st, &key, label, &created_by)? {
            return Ok(());
        }
        let started = Instant::now();
        self.b.events.event("Step", label, "RUNNING", false);
        let view = View::new(&st.layer_dirs(), self.b.store)?;
        let owner = match &chown {
            Some(o) => Some(context::resolve_owner(o, &view.path).map_err(|e| self.err_by(line, e.to_string(), e))?),
            None => None,
        };
        let attrs = CopyAttrs { owner, mode: chmod };
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            join_posix(&workdir_or_root(&st.workdir), &dest)
        };
        let dest_is_dir_syntax =
            dest.ends_with('/') || dest.ends_with("/.") || dest == "." || items.len() > 1;
        let resolved_dest = crate::runtime::rootfs::secure_join(&view.path, &dest_abs)
            .map_err(|e| self.err_by(line, e.to_string(), e))?;
        let dest_rel = resolved_dest.strip_prefix(&view.path).unwrap_or(Path::new("")).to_path_buf();
        let dest_exists_dir = view.path.join(&dest_rel).is_dir();
        let staging = self.b.store.staging()?;
        let tree = staging.path().join("tree");
        fs::create_dir(&tree).map_err(io_err(&tree))?;
        let io = |e: std::io::Error| self.err_by(line, format!("{verb}: {e}"), e);
        // Remote sources not fetched yet (their key did not need it) are fetched now.
        let mut resolved: Vec<(PathBuf, PathBuf, SrcKind)> = Vec::new();
        for item in items {
            match item {
                Item::Path { root, rel, kind } => resolved.push((root, rel, kind)),
                Item::Http { url, name, dir, expected } => {
                    self.download(&url, &dir.join(&name), Some(&expected), line)?;
                    resolved.push((dir, PathBuf::from(name), SrcKind::Remote));
                }
                Item::Git { g, r, dir, word, ssh } => {
                    let fail = |e: remote::RemoteError| self.git_error(&g, &word, line, e);
                    let git = git::Git::new(&dir, ssh.sock.clone()).map_err(fail)?.with_cancel(self.b.cancel);
                    let root = git.checkout(&g, &r, &dir.join("repo")).map_err(fail)?;
                    resolved.push((root, PathBuf::new(), SrcKind::Git));
                }
            }
        }
        for (root, rel, kind) in &resolved {
            let src = if rel.as_os_str().is_empty() { root.clone() } else { root.join(rel) };
            let meta = fs::symlink_metadata(&src).map_err(io)?;
            let src_filter: &dyn Filter = match kind {
                SrcKind::Context => &filter,
                SrcKind::Git => &exclude_filter,
                SrcKind::Heredoc | SrcKind::Remote => &NoFilter,
            };
            // Archives from the context are unpacked unless `--unpack=false`; downloads only
            // with `--unpack=true` (BuildKit).
            let unpack = match kind {
                SrcKind::Context => c.unpack != Some(false),
                SrcKind::Remote => c.unpack == Some(true),
                SrcKind::Heredoc | SrcKind::Git => false,
            };
            if add && unpack && meta.is_file() && is_archive(&src) {
                context::mkdir_tree(&tree, &view.path, &dest_rel, owner).map_err(io)?;
                extract_archive(&src, &tree.join(&dest_rel))
                    .map_err(|e| self.err_by(line, format!("ADD {}: {e}", rel.display()), e))?;
                continue;
            }
            let target_dir = if c.parents {
                dest_rel.join(rel.parent().unwrap_or(Path::new("")))
            } else {
                dest_rel.clone()
            };
            if meta.is_dir() {
                let into = if c.parents { dest_rel.join(rel) } else { target_dir };
                context::mkdir_tree(&tree, &view.path, &into, owner).map_err(io)?;
                let mut names: Vec<_> =
                    fs::read_dir(&src).map_err(io)?.flatten().map(|e| e.file_name()).collect();
                names.sort();
                for n in names {
                    context::copy_tree(
                        &src.join(&n),
                        &rel.join(&n),
                        &tree.join(&into).join(&n),
                        attrs,
                        src_filter,
                    )
                    .map_err(io)?;
                }
                context::restore_dir_times(&tree, &view.path, &into);
            } else {
                let name = rel.file_name().map(|n| n.to_os_string()).unwrap_or_default();
                let into_dir = c.parents || dest_is_dir_syntax || dest_exists_dir;
                let (dir, file) = if into_dir {
                    (target_dir.clone(), target_dir.join(name))
                } else {
                    (dest_rel.parent().unwrap_or(Path::new("")).to_path_buf(), dest_rel.clone())
                };
                context::mkdir_tree(&tree, &view.path, &dir, owner).map_err(io)?;
                context::copy_tree(&src, rel, &tree.join(&file), attrs, &NoFilter).map_err(io)?;
                context::restore_dir_times(&tree, &view.path, &dir);
            }
        }
        drop(view);
        drop(root_view);
        let made = self.commit(st, &key, &tree, false, label)?;
        st.history(created_by, !made);
        self.b.events.event("Step", label, &format!("DONE {:.1}s", started.elapsed().as_secs_f64()), true);
        Ok(())
    }

    fn network_for(&self, r: &RunInstruction) -> Result<RunNet> {
        let mode = r.network.clone().or_else(|| self.req.network.clone()).unwrap_or_else(|| "default".into());
        match mode.as_str() {
            "none" => Ok(RunNet::None),
            "host" => Ok(RunNet::Host),
            "default" | "bridge" | "" => {
                let mut name =
                    self.net.name.lock().map_err(|_| BuildError::Network("a stage panicked".into()))?;
                if name.is_none() {
                    let n = self.net.owner.network();
                    let spec =
                        NetworkSpec { name: n.clone(), driver: "bridge".into(), ..NetworkSpec::default() };
                    self.b.networks.create(&spec).map_err(BuildError::NetworkCreate)?;
                    *name = Some(n);
                }
                Ok(RunNet::Bridge(name.clone().unwrap_or_default()))
            }
            other => Err(BuildError::Network(format!(
                "network mode {other:?} is not supported (default, none, host)"
            ))),
        }
    }

    fn run_step(
        &self,
        idx: usize,
        st: &mut State,
        r: &RunInstruction,
        ins: &Instruction,
        label: &str,
    ) -> Result<()> {
        let line = ins.line;
        let shell = st.shell();
        // `RUN <<EOF` with a `#!` line: the body is a script file run as it is (BuildKit
        // mounts it under /dev/pipes).
        let script = match (&r.command, r.heredocs.first()) {
            (CommandForm::Shell(s), Some(h))
                if s.trim_start().starts_with("<<")
                    && s.split_whitespace().count() == 1
                    && h.content.starts_with("#!") =>
            {
                Some(h.clone())
            }
            _ => None,
        };
        let args = match &r.command {
            _ if script.is_some() => {
                vec![format!("/dev/pipes/{}", script.as_ref().map(|h| h.name.as_str()).unwrap_or_default())]
            }
            CommandForm::Exec(a) => a.clone(),
            CommandForm::Shell(s) => {
                let mut a = shell.clone();
                match r.heredocs.first() {
                    // `RUN <<EOF`: the body is the script.
                    Some(h) if s.trim_start().starts_with("<<") && s.split_whitespace().count() == 1 => {
                        a.push(h.content.clone())
                    }
                    // A command reading heredocs: the shell reads them as written.
                    Some(_) => {
                        let mut text = s.clone();
                        for h in &r.heredocs {
                            text.push('\n');
                            text.push_str(&h.content);
                            text.push_str(&h.name);
                        }
                        a.push(text);
                    }
                    None => a.push(s.clone()),
                }
                a
            }
        };
        if args.is_empty() {
            return Err(self.err(line, "RUN needs a command"));
        }
        let privileged = match r.security.as_deref() {
            None | Some("sandbox") => false,
            Some("insecure") => true,
            Some(other) => {
                return Err(self.err(line, format!("invalid --security={other} (sandbox or insecure)")));
            }
        };
        let (env, shown_args) = self.run_env(st);
        let net = self.network_for(r)?;
        let cwd = workdir_or_root(&st.workdir);
        // Mounts: the container's, and what the key says of them.
        let mut mounts = Vec::new();
        let mut mount_keys = Vec::new();
        let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
        let mut locks = Vec::new();
        // Secrets are written under the run dir (a tmpfs on most hosts), never the store.
        let run_dir = self.b.runtime.dirs().run.join("build-secrets");
        fs::create_dir_all(&run_dir).map_err(io_err(&run_dir))?;
        let secrets_dir =
            tempfile::Builder::new().prefix("secrets-").tempdir_in(&run_dir).map_err(io_err(&run_dir))?;
        // `env=` secrets: given to the step's process only, never to the key or the image.
        let mut secret_env = Vec::new();
        let mut ssh_targets = Vec::new();
        for m in &r.mounts {
            let out = MountOut {
                mounts: &mut mounts,
                keys: &mut mount_keys,
                keep: &mut keep,
                locks: &mut locks,
                env: &mut secret_env,
                ssh_targets: &mut ssh_targets,
            };
            self.mount(idx, st, m, line, &secrets_dir, out)?;
        }
        if let Some(h) = &script {
            let t = self.b.store.staging()?;
            let file = t.path().join("script");
            fs::write(&file, &h.content).map_err(io_err(&file))?;
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).map_err(io_err(&file))?;
            mounts.push(bind_mount(&format!("/dev/pipes/{}", h.name), file, true));
            mount_keys.push(json!({ "type": "script", "content": h.content }));
            keep.push(Box::new(t));
        }
        let user = st.user.clone();
        let key_env: Vec<&String> =
            env.iter().filter(|e| !PROXY_ARGS.iter().any(|p| e.starts_with(&format!("{p}=")))).collect();
        let key = step_key(
            &st.key,
            &json!({ "run": args, "env": key_env, "user": user, "cwd": cwd, "mounts": mount_keys, "privileged": privileged,
                     "network": format!("{net:?}").split('(').next().unwrap_or_default() }),
        );
        let prefix = if shown_args.is_empty() {
            String::new()
        } else {
            format!("|{} {} ", shown_args.len(), shown_args.join(" "))
        };
        let created_by = format!("RUN {prefix}{} # buildkit", args.join(" "));
        if self.cached(st, &key, label, &created_by)? {
            return Ok(());
        }
        let started = Instant::now();
        self.b.events.event("Step", label, "RUNNING", false);
        let mut env = env;
        // Later entries win in the step's environment: a secret overrides an ENV of its name.
        env.retain(|e| !secret_env.iter().any(|s| e.split('=').next() == s.split('=').next()));
        env.extend(secret_env);
        // As BuildKit: the first agent is the step's SSH_AUTH_SOCK unless the step sets one.
        if let Some(t) = ssh_targets.first()
            && !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK="))
        {
            env.push(format!("SSH_AUTH_SOCK={t}"));
        }
        let step = RunStep {
            args: args.clone(),
            env,
            user: Some(user).filter(|u| !u.is_empty()),
            cwd,
            lower_dirs: st.layer_dirs(),
            mounts,
            net,
            extra_hosts: self.req.extra_hosts.clone(),
            shm_size: self.req.shm_size,
            label: label.to_string(),
            privileged,
            owner: self.net.owner.token.clone(),
        };
        let mut made = false;
        let result =
            run::run_step(self.b.runtime, self.b.networks, &step, self.b.events, self.b.cancel, |upper| {
                made = self.commit(st, &key, upper, true, label)?;
                Ok(())
            });
        drop(keep);
        drop(locks);
        match result {
            Ok(()) => {}
            Err(RunFailure::Cancelled) => return Err(BuildError::Cancelled),
            Err(RunFailure::Setup(m)) => {
                self.b.events.failed("Step", label, &m.to_string());
                return Err(self.err_by(line, format!("RUN: {m}"), m));
            }
            Err(RunFailure::Exit { code, tail }) => {
                self.b.events.failed("Step", label, &format!("exit code {code}"));
                let command = match &r.command {
                    CommandForm::Exec(a) => json!(a).to_string(),
                    CommandForm::Shell(s) => one_line(s),
                };
                return Err(BuildError::Run { file: self.file.clone(), line, command, code, output: tail });
            }
        }
        st.history(created_by, !made);
        self.b.events.event("Step", label, &format!("DONE {:.1}s", started.elapsed().as_secs_f64()), true);
        Ok(())
    }

    fn mount(
        &self,
        idx: usize,
        st: &State,
        m: &RunMount,
        line: usize,
        secrets_dir: &tempfile::TempDir,
        out: MountOut<'_>,
    ) -> Result<()> {
        let MountOut { mounts, keys, keep, locks, env, ssh_targets } = out;
        let ex = |s: &Option<String>| -> Result<Option<String>> {
            s.as_ref().map(|w| self.expand(st, w, line).map(|x| x.0)).transpose()
        };
        let target = ex(&m.target)?;
        let abs = |t: &str| {
            if t.starts_with('/') { t.to_string() } else { join_posix(&workdir_or_root(&st.workdir), t) }
        };
        let num = |s: &Option<String>, what: &str, radix: u32| -> Result<Option<u32>> {
            match ex(s)? {
                Some(v) => u32::from_str_radix(&v, radix)
                    .map(Some)
                    .map_err(|_| self.err(line, format!("invalid {what} {v:?}"))),
                None => Ok(None),
            }
        };
        match m.kind.as_str() {
            "cache" => {
                let target = abs(&target.ok_or_else(|| self.err(line, "cache mount needs a target"))?);
                let id = ex(&m.id)?.unwrap_or_else(|| target.clone());
                let dir = self.cache.mount_dir(&id);
                let sharing = ex(&m.sharing)?.unwrap_or_else(|| "shared".into());
                let lock_path = dir.with_extension("lock");
                let (uid, gid, mode) =
                    (num(&m.uid, "uid", 10)?, num(&m.gid, "gid", 10)?, num(&m.mode, "mode", 8)?);
                let source = match sharing.as_str() {
                    "locked" => {
                        locks.push(crate::state::Lock::acquire(&lock_path).map_err(ImageError::from)?);
                        dir.clone()
                    }
                    "private" => {
                        match crate::state::Lock::try_acquire(&lock_path).map_err(ImageError::from)? {
                            Some(l) => {
                                locks.push(l);
                                dir.clone()
                            }
                            None => {
                                // In use: a throwaway dir of this step's own.
                                let t = self.b.store.staging()?;
                                let p = t.path().join("cache");
                                keep.push(Box::new(t));
                                p
                            }
                        }
                    }
                    "shared" => dir.clone(),
                    other => return Err(self.err(line, format!("invalid cache sharing {other:?}"))),
                };
                if !source.exists() {
                    fs::create_dir_all(&source).map_err(io_err(&source))?;
                    std::os::unix::fs::chown(&source, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))
                        .map_err(io_err(&source))?;
                    use std::os::unix::fs::PermissionsExt;
                    fs::set_permissions(&source, fs::Permissions::from_mode(mode.unwrap_or(0o755)))
                        .map_err(io_err(&source))?;
                }
                keys.push(json!({ "type": "cache", "target": target, "id": id, "sharing": sharing }));
                mounts.push(bind_mount(&target, source, false));
            }
            "tmpfs" => {
                let target = abs(&target.ok_or_else(|| self.err(line, "tmpfs mount needs a target"))?);
                let size = ex(&m.size)?
                    .map(|s| parse_size(&s).ok_or_else(|| self.err(line, format!("invalid size {s:?}"))))
                    .transpose()?;
                keys.push(json!({ "type": "tmpfs", "target": target, "size": size }));
                mounts.push(MountSpec {
                    target,
                    kind: MountKind::Tmpfs { size, mode: None },
                    read_only: false,
                    volume: None,
                });
            }
            "secret" => {
                // The id: `id`, else `source`, else the target's last name (as BuildKit).
                let id = ex(&m.id)?
                    .or(ex(&m.source)?)
                    .or_else(|| {
                        target
                            .as_ref()
                            .and_then(|t| Path::new(t).file_name().map(|n| n.to_string_lossy().into_owned()))
                    })
                    .ok_or_else(|| self.err(line, "secret mount needs an id"))?;
                let value = match self.req.secrets.get(&id) {
                    Some(SecretSource::File(p)) => Some(
                        fs::read(p)
                            .map_err(|e| self.err_by(line, format!("secret {id}: {}: {e}", p.display()), e))?,
                    ),
                    Some(SecretSource::Env(v)) => Some(
                        std::env::var(v)
                            .map_err(|_| self.err(line, format!("secret {id}: variable {v} is not set")))?
                            .into_bytes(),
                    ),
                    None if m.required => {
                        return Err(self.err(line, format!("secret {id} is required but was not given")));
                    }
                    None => None,
                };
                let env_name = ex(&m.env)?;
                if let Some(n) = &env_name
                    && !valid_env_name(n)
                {
                    return Err(
                        self.err(line, format!("secret {id}: invalid environment variable name {n:?}"))
                    );
                }
                // With `env=` and no target, the secret is only a variable; with both, both.
                let target = match (target, &env_name) {
                    (Some(t), _) => Some(abs(&t)),
                    (None, None) => Some(format!("/run/secrets/{}", posix_base(&id))),
                    (None, Some(_)) => None,
                };
                // Only names go into the key: a changed value does not rerun the step.
                keys.push(json!({ "type": "secret", "id": id, "target": target, "env": env_name }));
                let Some(value) = value else { return Ok(()) };
                if let Some(n) = env_name {
                    let text = String::from_utf8(value.clone()).map_err(|_| {
                        self.err(line, format!("secret {id}: an environment variable must be UTF-8 text"))
                    })?;
                    if text.contains('\0') {
                        return Err(
                            self.err(line, format!("secret {id}: a NUL byte cannot be in a variable"))
                        );
                    }
                    env.push(format!("{n}={text}"));
                }
                let Some(target) = target else { return Ok(()) };
                let file = secrets_dir.path().join(format!("secret-{}", mounts.len()));
                fs::write(&file, value).map_err(io_err(&file))?;
                let (uid, gid, mode) =
                    (num(&m.uid, "uid", 10)?, num(&m.gid, "gid", 10)?, num(&m.mode, "mode", 8)?);
                std::os::unix::fs::chown(&file, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))
                    .map_err(io_err(&file))?;
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&file, fs::Permissions::from_mode(mode.unwrap_or(0o400)))
                    .map_err(io_err(&file))?;
                mounts.push(bind_mount(&target, file, true));
            }
            "bind" | "" => {
                let target = abs(&target.ok_or_else(|| self.err(line, "bind mount needs a target"))?);
                let source = ex(&m.source)?.unwrap_or_default();
                let rel = context::clean_rel(&source).map_err(|e| self.err_by(line, e.to_string(), e))?;
                let (view, id) = match ex(&m.from)? {
                    Some(f) => self.source_root(&f, idx, line)?,
                    None => {
                        let mut h = Sha256::new();
                        context::hash_source(&self.req.context, &rel, self.context_filter.as_ref(), &mut h)
                            .map_err(|e| self.err_by(line, e.to_string(), e))?;
                        (
                            View { path: self.req.context.clone(), mounted: false, _dir: None },
                            format!("context:{}", hex::encode(h.finalize())),
                        )
                    }
                };
                // Links in the source resolve inside its root, never on the host.
                let rel = context::resolve_in_root(&view.path, &rel, true)
                    .map_err(|e| self.err_by(line, e.to_string(), e))?;
                let src = view.path.join(&rel);
                if fs::symlink_metadata(&src).is_err() {
                    return Err(self.err(line, format!("bind mount source {source:?} not found")));
                }
                let src = if m.read_write {
                    // Writes are discarded: the container gets a copy.
                    let t = self.b.store.staging()?;
                    let copy = t.path().join("rw");
                    context::copy_tree(&src, Path::new(""), &copy, CopyAttrs::default(), &NoFilter)
                        .map_err(io_err(&src))?;
                    keep.push(Box::new(t));
                    copy
                } else {
                    src
                };
                keys.push(json!({ "type": "bind", "target": target, "source": source, "from": id, "rw": m.read_write }));
                mounts.push(bind_mount(&target, src, !m.read_write));
                keep.push(Box::new(view));
            }
            "ssh" => {
                let id = ex(&m.id)?.unwrap_or_else(|| "default".into());
                let target = match target {
                    Some(t) => abs(&t),
                    None => format!("/run/buildkit/ssh_agent.{}", ssh_targets.len()),
                };
                let (uid, gid, mode) =
                    (num(&m.uid, "uid", 10)?, num(&m.gid, "gid", 10)?, num(&m.mode, "mode", 8)?);
                let (uid, gid, mode) = (uid.unwrap_or(0), gid.unwrap_or(0), mode.unwrap_or(0o600));
                // The key names the mount, never where the agent is on this host.
                keys.push(json!({ "type": "ssh", "id": id, "target": target, "uid": uid, "gid": gid,
                                  "mode": mode, "required": m.required }));
                let Some(paths) = self.req.ssh.get(&id) else {
                    if m.required {
                        return Err(self.err(
                            line,
                            format!("ssh agent {id} is required but was not given (--ssh {id}[=PATH])"),
                        ));
                    }
                    return Ok(());
                };
                let (upstream, agent) = super::ssh::agent_for(&id, paths, secrets_dir.path())
                    .map_err(|e| self.err_by(line, e.to_string(), e))?;
                let sock = secrets_dir.path().join(format!("ssh-{}", ssh_targets.len()));
                let relay = super::ssh::Relay::start(&id, &sock, upstream, uid, gid, mode)
                    .map_err(|e| self.err_by(line, e.to_string(), e))?;
                // Dropped after the step: the relay first, then the agent it talks to.
                keep.push(Box::new(relay));
                if let Some(a) = agent {
                    keep.push(Box::new(a));
                }
                mounts.push(bind_mount(&target, sock, false));
                ssh_targets.push(target);
            }
            other => return Err(self.err(line, format!("unknown mount type {other:?}"))),
        }
        Ok(())
    }

    /// Writes the config and manifest of `st` and names them.
    fn store_image(&self, st: State, tags: &[Reference]) -> Result<String> {
        let mut state = st;
        for (k, v) in &self.req.labels {
            state.labels.insert(k.clone(), v.clone());
        }
        let mut config = json!({
            "created": state.created,
            "architecture": host_arch(),
            "os": "linux",
            "config": state.docker_config(),
            "rootfs": { "type": "layers", "diff_ids": state.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>() },
            "history": state.history,
        });
        if let Some(a) = &state.author {
            config["author"] = json!(a);
        }
        let bytes = serde_json::to_vec(&config)?;
        serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&bytes)
            .map_err(BuildError::Config)?;
        let _lock = self.b.store.lock()?;
        for l in &state.layers {
            if !self.b.store.blob_path(&l.blob).exists() {
                return Err(BuildError::Image(ImageError::NotFound(l.blob.clone())));
            }
        }
        let config_digest = self.b.store.put_blob(&bytes)?;
        let layers = state
            .layers
            .iter()
            .map(|l| json!({ "mediaType": l.media_type, "digest": l.blob, "size": l.size }))
            .collect();
        let manifest = crate::image::oci_manifest(&config_digest, bytes.len(), layers);
        let mbytes = serde_json::to_vec(&manifest)?;
        let mdigest = self.b.store.put_blob(&mbytes)?;
        self.b.store.add_manifest(&mdigest, mbytes.len() as u64, tags)?;
        Ok(config_digest)
    }
}

const GZIP_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn bind_mount(target: &str, source: PathBuf, read_only: bool) -> MountSpec {
    MountSpec {
        target: target.to_string(),
        kind: MountKind::Bind { source, propagation: None, non_recursive: false },
        read_only,
        volume: None,
    }
}

/// Instructions BuildKit shows as steps (the rest only change the config).
fn is_step(k: &InstructionKind) -> bool {
    matches!(
        k,
        InstructionKind::Copy(_)
            | InstructionKind::Add(_)
            | InstructionKind::Run(_)
            | InstructionKind::Workdir(_)
    )
}

/// Where [`Build::mount`] puts what a `--mount` gives the step.
struct MountOut<'a> {
    mounts: &'a mut Vec<MountSpec>,
    keys: &'a mut Vec<Value>,
    keep: &'a mut Vec<Box<dyn std::any::Any>>,
    locks: &'a mut Vec<crate::state::Lock>,
    /// `NAME=value` of `env=` secrets.
    env: &'a mut Vec<String>,
    /// Where ssh agents are in the step, in mount order.
    ssh_targets: &'a mut Vec<String>,
}

/// A name a process environment can carry as `NAME=value` (no `=`, no NUL, not empty).
fn valid_env_name(n: &str) -> bool {
    !n.is_empty() && !n.contains('=') && !n.contains('\0')
}

/// The last name of a slash path (`a/b/` → `b`), as Go's `path.Base`.
fn posix_base(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() {
        return if p.is_empty() { ".".into() } else { "/".into() };
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn workdir_or_root(w: &str) -> String {
    if w.is_empty() { "/".into() } else { w.to_string() }
}

fn join_posix(base: &str, rel: &str) -> String {
    let keep_slash = rel.ends_with('/');
    let mut s = format!("{}/{}", base.trim_end_matches('/'), rel);
    if keep_slash && !s.ends_with('/') {
        s.push('/');
    }
    s
}

/// `/a/./b/../c` → `/a/c`.
fn clean_posix(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    format!("/{}", out.join("/"))
}

fn command_args(c: &CommandForm, shell: &[String]) -> Vec<String> {
    match c {
        CommandForm::Exec(a) => a.clone(),
        CommandForm::Shell(s) => {
            let mut a = shell.to_vec();
            a.push(s.clone());
            a
        }
    }
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`...
/// A value of `EXPOSE` or `HEALTHCHECK` the image's configuration cannot take.
#[derive(Debug, thiserror::Error)]
enum ValueError {
    /// Not tcp, udp or sctp.
    #[error("invalid proto {proto:?} in EXPOSE {port}")]
    Proto { proto: String, port: String },
    /// Not a port or a range of ports.
    #[error("invalid port {0:?} in EXPOSE")]
    Port(String),
    /// Not a duration.
    #[error("invalid duration {0:?} for HEALTHCHECK")]
    Duration(String),
    /// Not a number.
    #[error("invalid --retries {0:?}")]
    Retries(String),
}

fn expose_ports(p: &str) -> std::result::Result<Vec<String>, ValueError> {
    let (ports, proto) = match p.split_once('/') {
        Some((a, b)) => (a, b.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(ValueError::Proto { proto, port: p.to_string() });
    }
    let bad = || ValueError::Port(p.to_string());
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (a.parse::<u16>().map_err(|_| bad())?, b.parse::<u16>().map_err(|_| bad())?),
        None => {
            let n = ports.parse::<u16>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

/// A Go duration (`1h2m3.5s`, `300ms`) in nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (n, mult) = match s.trim_end_matches('b').chars().last()? {
        'k' => (&s[..s.trim_end_matches('b').len() - 1], 1024),
        'm' => (&s[..s.trim_end_matches('b').len() - 1], 1024 * 1024),
        'g' => (&s[..s.trim_end_matches('b').len() - 1], 1024 * 1024 * 1024),
        _ => (s.trim_end_matches('b'), 1),
    };
    n.parse::<u64>().ok().map(|n| n * mult)
}

/// docker's `Healthcheck` object.
fn healthcheck(h: Option<&HealthcheckInstruction>, shell: &[String]) -> std::result::Result<Value, ValueError> {
    let _ = shell;
    let Some(h) = h else { return Ok(json!({ "Test": ["NONE"] })) };
    let test: Vec<String> = match &h.command {
        CommandForm::Exec(a) => std::iter::once("CMD".to_string()).chain(a.iter().cloned()).collect(),
        CommandForm::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
    };
    let mut v = json!({ "Test": test });
    for (field, value) in [
        ("Interval", &h.interval),
        ("Timeout", &h.timeout),
        ("StartPeriod", &h.start_period),
        ("StartInterval", &h.start_interval),
    ] {
        if let Some(d) = value {
            let n = parse_duration(d).ok_or_else(|| ValueError::Duration(d.clone()))?;
            if n != 0 {
                v[field] = json!(n);
            }
        }
    }
    if let Some(r) = &h.retries {
        let n: i64 = r.parse().map_err(|_| ValueError::Retries(r.clone()))?;
        if n != 0 {
            v["Retries"] = json!(n);
        }
    }
    Ok(v)
}

/// Whether a local file is a tar archive ADD extracts (plain, gzip, zstd; bzip2 and xz are
/// recognised to be refused clearly).
fn is_archive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 512];
    let Ok(mut f) = fs::File::open(path) else { return false };
    let n = f.read(&mut head).unwrap_or(0);
    let h = &head[..n];
    h.starts_with(&[0x1f, 0x8b])
        || h.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || h.starts_with(b"BZh")
        || h.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
        || (n >= 262 && &h[257..262] == b"ustar")
}

/// Why an `ADD` archive could not be extracted.
#[derive(Debug, thiserror::Error)]
enum ArchiveError {
    /// A compression berth does not read.
    #[error("bzip2 and xz archives are not supported (gzip, zstd and plain tar are)")]
    Unsupported,
    /// The archive could not be read, or the destination made.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// tar could not unpack it; its message leaves out the entry's own error, so it is added.
    #[error("{source}: {}", cause_text(source))]
    Unpack {
        /// tar's error.
        source: std::io::Error,
    },
}

/// The message of `e`'s cause (empty without one).
fn cause_text(e: &std::io::Error) -> String {
    std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_default()
}

fn extract_archive(src: &Path, dest: &Path) -> std::result::Result<(), ArchiveError> {
    use std::io::Read;
    let mut head = [0u8; 6];
    let mut f = fs::File::open(src)?;
    let n = f.read(&mut head)?;
    if head[..n].starts_with(b"BZh") || head[..n].starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(ArchiveError::Unsupported);
    }
    let f = fs::File::open(src)?;
    let (_, reader) = crate::image::unpack::decompressed(f)?;
    fs::create_dir_all(dest)?;
    let mut a = tar::Archive::new(reader);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    a.unpack(dest).map_err(|source| ArchiveError::Unpack { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_ports_and_paths() {
        assert_eq!(parse_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("500ms"), Some(500_000_000));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(expose_ports("80").unwrap(), ["80/tcp"]);
        assert_eq!(expose_ports("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(expose_ports("8000-8001").unwrap(), ["8000/tcp", "8001/tcp"]);
        assert!(expose_ports("http").is_err());
        assert_eq!(clean_posix("/a/./b/../c/"), "/a/c");
        assert_eq!(join_posix("/app", "x/"), "/app/x/");
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(posix_base("/run/secrets/tok"), "tok");
        assert_eq!(posix_base("a/b/"), "b");
        assert_eq!(posix_base("tok"), "tok");
        assert!(valid_env_name("AWS_KEY") && !valid_env_name("") && !valid_env_name("A=B"));
    }

    #[test]
    fn healthcheck_as_docker_stores_it() {
        let h = HealthcheckInstruction {
            command: CommandForm::Shell("curl -f localhost".into()),
            interval: Some("5s".into()),
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: Some("3".into()),
        };
        let v = healthcheck(Some(&h), &[]).unwrap();
        assert_eq!(
            v,
            json!({ "Test": ["CMD-SHELL", "curl -f localhost"], "Interval": 5_000_000_000i64, "Retries": 3 })
        );
        assert_eq!(healthcheck(None, &[]).unwrap(), json!({ "Test": ["NONE"] }));
    }

    #[test]
    fn platforms_other_than_the_host_are_refused() {
        assert!(check_platform(&host_platform()).is_ok());
        assert!(matches!(check_platform("linux/s390x"), Err(BuildError::Platform(_))));
    }

    #[test]
    fn image_config_round_trips_through_state() {
        let raw = json!({
            "created": "2024-01-01T00:00:00Z",
            "config": { "Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/w", "OnBuild": ["RUN x"], "ArgsEscaped": true },
            "history": [{ "created_by": "base" }],
        });
        let mut st = State::from_image(&raw, Vec::new(), "sha256:x");
        assert_eq!(st.env_get("A").map(String::as_str), Some("1"));
        assert_eq!(st.onbuild, ["RUN x"]);
        st.onbuild.clear();
        st.set_env("A".into(), "2".into());
        let c = st.docker_config();
        assert_eq!(c["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(c["ArgsEscaped"], json!(true));
        assert!(!c.contains_key("OnBuild"));
    }
}
