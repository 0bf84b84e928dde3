#![deny(missing_docs)]
//! Compose stacks for integration tests, with no daemon: a [`Stack`] per test, brought up
//! from a compose file and taken away with everything it made when it is dropped, even when
//! the test panics.
//!
//! ```no_run
//! use berth::stack::Stack;
//!
//! # fn main() -> Result<(), berth::stack::StackError> {
//! let stack = Stack::from_yaml(
//!     "services:\n  web:\n    image: busybox\n    command: httpd -f -p 8080\n    ports: ['127.0.0.1::8080']\n",
//! )
//! .up()?;
//! let web = stack.service("web")?;
//! let addr = web.host_port(8080)?; // 127.0.0.1:<the port berth chose>
//! let out = web.exec(["echo", "hello"])?;
//! assert_eq!(out.stdout_text(), "hello\n");
//! # let _ = addr;
//! Ok(())
//! # }
//! // dropped here: containers, networks and volumes are removed
//! ```
//!
//! Each stack gets a project name of its own (`t<pid>-<n>-<random>`) unless one is given, and
//! its default networks get subnets no other stack or host route uses, so tests in one process
//! and in parallel processes do not collide. berth starts one `berth-shim` process per
//! container and a `berth-dns` process per run dir (`BERTH_RUN`), both from the `berth` executable: a stack
//! finds it in `BERTH_EXE`, next to the running executable, or on `PATH`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::compose::{LoadedProject, ProjectOptions};
use crate::engine::down::DownOptions;
use crate::engine::images::ImageOptions;
use crate::engine::observe::{ProjectContainer, containers_of};
use crate::engine::progress::{Progress, ProgressMode};
use crate::engine::up::{UpRequest, UpSink};
use crate::engine::{Engine, UpOptions};
use crate::graph::ServiceGraph;
use crate::runtime::exec::ExecSpec;
use crate::state::Dirs;

// The types the API's signatures use, so that they are named (and documented) here.
pub use crate::engine::images::PullPolicy;
pub use crate::runtime::status::{ContainerStatus, Health, HealthResult, HealthState, State};

/// Everything that can go wrong with a stack, each naming what it was about.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The compose file could not be loaded (the message names the file and line).
    #[error(transparent)]
    Load(LoadError),
    /// The services' dependencies are inconsistent.
    #[error(transparent)]
    Graph(GraphError),
    /// Bringing the stack up or down failed.
    #[error(transparent)]
    Engine(EngineError),
    /// A container operation failed.
    #[error(transparent)]
    Runtime(RuntimeError),
    /// The berth executable (for shims and the DNS server) was not found.
    #[error("cannot find the berth executable: set BERTH_EXE, or put berth on PATH")]
    NoExecutable,
    /// A file or folder the stack needs could not be used.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, and on which path.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No service of that name in the project.
    #[error("no such service: {0}")]
    NoService(String),
    /// The service has no container with that number (not up, or scaled lower).
    #[error("service {service} has no container number {index}")]
    NoContainer {
        /// The service.
        service: String,
        /// The 1-based container number.
        index: u32,
    },
    /// The container port is not published to the host.
    #[error("service {service}: container port {port}/tcp is not published")]
    NotPublished {
        /// The service.
        service: String,
        /// The container port asked for.
        port: u16,
    },
    /// The container has no address on any network (host networking, or not running).
    #[error("service {0} has no network address")]
    NoAddress(String),
}

/// Declares a public error that wraps an internal one: its message and `source()` chain are
/// the internal error's, its type is not, so berth's internals can change without changing
/// this API.
macro_rules! opaque_error {
    ($(#[$doc:meta])* $name:ident($inner:path) => $variant:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name($inner);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::error::Error for $name {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.0.source()
            }
        }

        impl From<$inner> for StackError {
            fn from(e: $inner) -> Self {
                StackError::$variant($name(e))
            }
        }
    };
}

opaque_error!(
    /// Why a compose file could not be loaded: the message names the file and line.
    LoadError(crate::compose::LoadError) => Load
);
opaque_error!(
    /// Why the services' dependencies are inconsistent (a cycle, an unknown service).
    GraphError(crate::graph::GraphError) => Graph
);
opaque_error!(
    /// Why bringing a stack up or down, or an operation on its services, failed.
    EngineError(crate::engine::EngineError) => Engine
);
opaque_error!(
    /// Why an operation on a container (exec, logs, status) failed.
    RuntimeError(crate::runtime::RuntimeError) => Runtime
);

/// What a stack result is.
pub type Result<T, E = StackError> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> StackError {
    let what = what.into();
    move |source| StackError::Io { what, source }
}

enum Source {
    File(PathBuf),
    Yaml(String),
}

/// How to bring a stack up: the compose file and the options a test may want. Made by
/// [`Stack::from_file`] or [`Stack::from_yaml`]; [`StackBuilder::up`] makes the [`Stack`].
pub struct StackBuilder {
    source: Source,
    project_name: Option<String>,
    project_dir: Option<PathBuf>,
    profiles: Vec<String>,
    env: HashMap<String, String>,
    inherit_env: bool,
    env_files: Vec<PathBuf>,
    dirs: Option<Dirs>,
    private_dirs: bool,
    scale: BTreeMap<String, u32>,
    exe: Option<PathBuf>,
    wait_timeout: Duration,
    keep_volumes: bool,
    pull: Option<PullPolicy>,
    build: bool,
}

impl std::fmt::Debug for StackBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StackBuilder").field("project_name", &self.project_name).finish_non_exhaustive()
    }
}

impl StackBuilder {
    fn new(source: Source) -> StackBuilder {
        StackBuilder {
            source,
            project_name: None,
            project_dir: None,
            profiles: Vec::new(),
            env: HashMap::new(),
            inherit_env: true,
            env_files: Vec::new(),
            dirs: None,
            private_dirs: false,
            scale: BTreeMap::new(),
            exe: None,
            wait_timeout: Duration::from_secs(120),
            keep_volumes: false,
            pull: None,
            build: false,
        }
    }

    /// The project name (default: one of the stack's own, unique on this host). A given name
    /// must not be in use by another stack at the same time.
    pub fn project_name(mut self, name: impl Into<String>) -> Self {
        self.project_name = Some(name.into());
        self
    }

    /// The project directory: base of relative paths (`build:` contexts, bind mounts,
    /// `env_file`). Default: the compose file's folder, or the current directory for
    /// [`Stack::from_yaml`].
    pub fn project_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.project_dir = Some(dir.into());
        self
    }

    /// Enables a profile (`--profile`).
    pub fn profile(mut self, profile: impl Into<String>) -> Self {
        self.profiles.push(profile.into());
        self
    }

    /// Sets a variable for interpolation (`${KEY}` in the file), over the process's own.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Interpolates only from the variables given with [`StackBuilder::env`] and the env
    /// files, not from the test process's environment.
    pub fn clear_env(mut self) -> Self {
        self.inherit_env = false;
        self
    }

    /// Reads interpolation variables from an env file (`--env-file`; default `.env` in the
    /// project directory).
    pub fn env_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.env_files.push(path.into());
        self
    }

    /// Works in these dirs (default: `BERTH_ROOT` and `BERTH_RUN`, or `/var/lib/berth` and
    /// `/run/berth`, as the `berth` command). The root holds the image store, so stacks that
    /// share it share images and their build cache.
    pub fn dirs(mut self, root: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Self {
        self.dirs = Some(Dirs::new(root.into(), run.into()));
        self
    }

    /// Works in a root and run dir of the stack's own, removed with the stack (images are then
    /// pulled or built into it each time).
    pub fn private_dirs(mut self) -> Self {
        self.private_dirs = true;
        self
    }

    /// Runs `replicas` containers of `service` (`--scale`).
    pub fn scale(mut self, service: impl Into<String>, replicas: u32) -> Self {
        self.scale.insert(service.into(), replicas);
        self
    }

    /// The berth executable that runs shims and the DNS server (default: `BERTH_EXE`, a
    /// `berth` beside the running executable or in its parent folder, then `PATH`).
    pub fn berth_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = Some(exe.into());
        self
    }

    /// How long [`StackBuilder::up`] waits for every service to be running and healthy
    /// (default 120 s).
    pub fn wait_timeout(mut self, timeout: Duration) -> Self {
        self.wait_timeout = timeout;
        self
    }

    /// Keeps named volumes when the stack goes (default: removed, as `down -v`).
    pub fn keep_volumes(mut self) -> Self {
        self.keep_volumes = true;
        self
    }

    /// Replaces every service's `pull_policy` (`up --pull`).
    pub fn pull(mut self, policy: PullPolicy) -> Self {
        self.pull = Some(policy);
        self
    }

    /// Builds services with `build:` even when their image exists (`up --build`).
    pub fn build(mut self) -> Self {
        self.build = true;
        self
    }

    /// Loads the project, gets its images (pull or build as `up` does), creates and starts
    /// every service and waits until each is running, and healthy where it has a healthcheck
    /// (one-shots that a dependent waits for: exited 0), as `up --wait` does. When anything
    /// fails, what was made is taken away again before the error is returned.
    pub fn up(self) -> Result<Stack> {
        let mut scratch: Option<tempfile::TempDir> = None;
        let mut scratch_dir = || -> Result<PathBuf> {
            if scratch.is_none() {
                let dir = tempfile::Builder::new()
                    .prefix("berth-stack-")
                    .tempdir()
                    .map_err(io_err("cannot make the stack's temporary folder"))?;
                scratch = Some(dir);
            }
            Ok(scratch.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_default())
        };
        let cwd = std::env::current_dir().map_err(io_err("cannot read the working directory"))?;
        let mut environment: HashMap<String, String> =
            if self.inherit_env { std::env::vars().collect() } else { HashMap::new() };
        environment.extend(self.env.clone());
        let mut opts = ProjectOptions::new(cwd.clone(), environment);
        match &self.source {
            Source::File(path) => opts.files = vec![path.clone()],
            Source::Yaml(text) => {
                let file = scratch_dir()?.join("compose.yaml");
                std::fs::write(&file, text).map_err(io_err(format!("cannot write {}", file.display())))?;
                opts.files = vec![file];
                opts.project_dir = Some(self.project_dir.clone().unwrap_or(cwd));
            }
        }
        if let Source::File(_) = self.source {
            opts.project_dir = self.project_dir.clone();
        }
        opts.project_name = Some(self.project_name.clone().unwrap_or_else(unique_project_name));
        opts.profiles = self.profiles.clone();
        opts.env_files = self.env_files.clone();
        let loaded = crate::graph::load_project(&opts)?;
        let graph = ServiceGraph::from_project(&loaded.project)?;
        let dirs = match (&self.dirs, self.private_dirs) {
            (Some(d), _) => d.clone(),
            (None, true) => {
                let base = scratch_dir()?;
                Dirs::new(base.join("root"), base.join("run"))
            }
            (None, false) => Dirs::from_env(),
        };
        let exe = match &self.exe {
            Some(e) => e.clone(),
            None => find_berth_exe().ok_or(StackError::NoExecutable)?,
        };
        let stack = Stack {
            engine: Engine::new(&dirs, exe),
            loaded,
            graph,
            keep_volumes: self.keep_volumes,
            down: false,
            scratch,
        };
        // From here on a failure drops `stack`, which takes down what was made.
        stack.bring_up(&self)?;
        Ok(stack)
    }
}

static STACKS: AtomicU32 = AtomicU32::new(0);

/// A project name no other stack uses: the process id tells processes apart, the counter
/// stacks in one process, and the random part a stale project of an earlier process that
/// had the same pid.
fn unique_project_name() -> String {
    let n = STACKS.fetch_add(1, Ordering::Relaxed);
    let random = crate::runtime::new_id().map(|id| id[..6].to_string()).unwrap_or_default();
    format!("t{}-{n}-{random}", std::process::id())
}

/// Where the `berth` executable is: `BERTH_EXE`, beside the running executable or one folder
/// up (cargo puts test binaries in `target/<profile>/deps/`), then `PATH`.
fn find_berth_exe() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BERTH_EXE") {
        return Some(PathBuf::from(p));
    }
    let is_exe = |p: &Path| p.is_file();
    if let Ok(me) = std::env::current_exe() {
        if me.file_name().is_some_and(|n| n == "berth") {
            return Some(me);
        }
        for dir in me.ancestors().skip(1).take(2) {
            let candidate = dir.join("berth");
            if is_exe(&candidate) {
                return Some(candidate);
            }
        }
    }
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join("berth")).find(|p| is_exe(p))
}

/// A running compose project. Dropping it takes it down: containers, networks and (unless
/// kept) named volumes are removed, as `berth down -v` does; images stay.
pub struct Stack {
    engine: Engine,
    loaded: LoadedProject,
    graph: ServiceGraph,
    keep_volumes: bool,
    down: bool,
    /// The stack's own folder (the YAML it was given, private dirs), removed last.
    scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("project", &self.loaded.project.name).finish_non_exhaustive()
    }
}

impl Stack {
    /// A stack from a compose file (its folder is the project directory).
    pub fn from_file(path: impl Into<PathBuf>) -> StackBuilder {
        StackBuilder::new(Source::File(path.into()))
    }

    /// A stack from compose YAML text (relative paths are from the current directory unless
    /// [`StackBuilder::project_dir`] says otherwise).
    pub fn from_yaml(yaml: impl Into<String>) -> StackBuilder {
        StackBuilder::new(Source::Yaml(yaml.into()))
    }

    /// The project name.
    pub fn name(&self) -> &str {
        &self.loaded.project.name
    }

    /// The services of the project, sorted.
    pub fn services(&self) -> Vec<String> {
        self.loaded.project.services.keys().cloned().collect()
    }

    /// A service's first container.
    pub fn service(&self, name: &str) -> Result<Service<'_>> {
        self.service_index(name, 1)
    }

    /// A service's container number `index` (1-based; more than 1 with a scale).
    pub fn service_index(&self, name: &str, index: u32) -> Result<Service<'_>> {
        if !self.loaded.project.services.contains_key(name) {
            return Err(StackError::NoService(name.to_string()));
        }
        Ok(Service { stack: self, service: name.to_string(), index })
    }

    /// Takes the stack down now and reports how that went (dropping it does the same, but
    /// can only print what failed).
    pub fn down(mut self) -> Result<()> {
        self.take_down()
    }

    fn progress(&self) -> Progress {
        Progress::new(ProgressMode::Quiet)
    }

    fn bring_up(&self, b: &StackBuilder) -> Result<()> {
        let request = UpRequest {
            options: UpOptions { scale: b.scale.clone(), ..Default::default() },
            images: ImageOptions { pull: b.pull, build: b.build, ..Default::default() },
            wait: Some(Some(b.wait_timeout)),
        };
        crate::engine::up::bring_up(
            &self.engine,
            &self.loaded,
            &self.graph,
            &request,
            &QuietUp(self.progress()),
        )?;
        Ok(())
    }

    fn take_down(&mut self) -> Result<()> {
        if self.down {
            return Ok(());
        }
        self.down = true;
        let opts = DownOptions { volumes: !self.keep_volumes, ..Default::default() };
        crate::engine::down::down(
            &self.engine,
            &self.loaded.project.name,
            Some(&self.loaded),
            Some(&self.graph),
            &opts,
            &self.progress(),
        )?;
        if let Some(dir) = self.scratch.take() {
            dir.close().map_err(io_err("cannot remove the stack's temporary folder"))?;
        }
        Ok(())
    }

    fn containers(&self) -> Result<Vec<ProjectContainer>> {
        Ok(containers_of(&self.engine.runtime, self.name())?)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Err(e) = self.take_down() {
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "berth: taking down stack {}: {e}", self.name());
        }
    }
}

/// How a stack comes up: quietly, and waiting without a word for another command on the
/// same project (a test's own name is its own unless it gave one).
struct QuietUp(Progress);

impl UpSink for QuietUp {
    fn progress(&self) -> &Progress {
        &self.0
    }
    fn waiting_for_lock(&self, _project: &str) {}
}

/// What a command run in a container did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code (128+n when killed by signal n).
    pub code: i32,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// Whether the command exited 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// One container of a stack's service.
#[derive(Debug, Clone)]
pub struct Service<'a> {
    stack: &'a Stack,
    service: String,
    index: u32,
}

impl Service<'_> {
    fn container(&self) -> Result<ProjectContainer> {
        self.stack
            .containers()?
            .into_iter()
            .find(|c| c.service == self.service && c.number == self.index && !c.oneoff)
            .ok_or_else(|| StackError::NoContainer { service: self.service.clone(), index: self.index })
    }

    /// The container's name (`<project>-<service>-<n>`, or its `container_name`).
    pub fn container_name(&self) -> Result<String> {
        Ok(self.container()?.name)
    }

    /// The host address where the container's TCP `port` is published: `127.0.0.1` when it is
    /// published on every address (`0.0.0.0`), so that a test can connect to it.
    pub fn host_port(&self, port: u16) -> Result<SocketAddr> {
        let c = self.container()?;
        let endpoint = crate::netns::record::read_endpoint(self.stack.engine.dirs(), &c.id).map_err(|e| {
            crate::engine::EngineError::Net { what: format!("container {}", c.name), source: e }
        })?;
        let published = endpoint
            .map(|e| e.ports)
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.container_port == port && p.protocol.as_str() == "tcp")
            .ok_or_else(|| StackError::NotPublished { service: self.service.clone(), port })?;
        let ip = match published.host_ip {
            Some(ip) if !ip.is_unspecified() => ip,
            Some(IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            _ => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        };
        Ok(SocketAddr::new(ip, published.host_port))
    }

    /// The container's address on its first network.
    pub fn ip(&self) -> Result<IpAddr> {
        let c = self.container()?;
        let endpoint = crate::netns::record::read_endpoint(self.stack.engine.dirs(), &c.id).map_err(|e| {
            crate::engine::EngineError::Net { what: format!("container {}", c.name), source: e }
        })?;
        endpoint
            .and_then(|e| {
                e.endpoints.into_iter().find_map(|ep| ep.ipv4.map(IpAddr::V4).or(ep.ipv6.map(IpAddr::V6)))
            })
            .ok_or_else(|| StackError::NoAddress(self.service.clone()))
    }

    /// Runs `args` in the container (as `exec -T`) and collects its output.
    pub fn exec<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let c = self.container()?;
        let spec = ExecSpec { args: args.into_iter().map(Into::into).collect(), ..ExecSpec::default() };
        let (code, stdout, stderr) = self.stack.engine.runtime.exec_output(&c.id, &spec)?;
        Ok(Output { code, stdout, stderr })
    }

    /// Everything the container has written so far, both streams in order.
    pub fn logs(&self) -> Result<String> {
        let c = self.container()?;
        Ok(self.stack.engine.runtime.logs(&c.id)?.into_iter().map(|e| e.log).collect())
    }

    /// The container's state as the runtime sees it.
    pub fn status(&self) -> Result<ContainerStatus> {
        let c = self.container()?;
        Ok(self.stack.engine.runtime.status(&c.id)?)
    }

    /// Whether the container is running now.
    pub fn is_running(&self) -> Result<bool> {
        Ok(matches!(self.status()?.state, State::Running))
    }

    /// Stops the service's containers (as `berth stop SERVICE`).
    pub fn stop(&self) -> Result<()> {
        let s = self.stack;
        crate::engine::down::stop(
            &s.engine,
            &s.loaded,
            &s.graph,
            std::slice::from_ref(&self.service),
            None,
            &s.progress(),
        )?;
        Ok(())
    }

    /// Starts the service's stopped containers again (as `berth start SERVICE`).
    pub fn start(&self) -> Result<()> {
        let s = self.stack;
        let _lock = s.engine.lock_project(s.name(), || {})?;
        crate::engine::down::start(
            &s.engine,
            &s.loaded,
            &s.graph,
            std::slice::from_ref(&self.service),
            &s.progress(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_are_valid_and_unique() {
        let a = unique_project_name();
        let b = unique_project_name();
        assert_ne!(a, b);
        for name in [&a, &b] {
            let mut chars = name.chars();
            assert!(chars.next().is_some_and(|c| c.is_ascii_lowercase()), "{name}");
            assert!(
                chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'),
                "{name} is not a compose project name"
            );
        }
    }

    #[test]
    fn a_bad_compose_file_is_an_error_naming_it_and_nothing_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let err = Stack::from_yaml("services:\n  web:\n    image: [\n")
            .dirs(dir.path().join("root"), dir.path().join("run"))
            .berth_exe("/nonexistent/berth")
            .up()
            .unwrap_err();
        assert!(matches!(err, StackError::Load(_)), "{err}");
        assert!(err.to_string().contains("compose.yaml"), "{err}");
        assert!(!dir.path().join("root").exists(), "a failed load made the root");
    }
}
