//! The `berth` command line: clap definitions, global options shaped like `docker compose`,
//! and one readable error message (with its cause chain) per failure.

mod attach;
mod build;
mod completion;
mod config;
#[cfg(feature = "kubernetes")]
mod convert;
mod cp;
mod down;
mod error;
mod events;
mod exec;
mod graph;
mod image;
mod lifecycle;
mod login;
mod logs;
mod ls;
mod network;
mod output;
mod port;
mod project;
mod ps;
mod run;
mod signals;
mod stats;
mod template;
mod timestamp;
mod top;
mod up;
mod volume;
mod watch;

pub use error::{CliError, CliResult};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::compose::{LoadedProject, ProjectOptions};

/// berth: a daemonless compose orchestrator.
#[derive(Debug, Parser)]
#[command(name = "berth", version, disable_version_flag = true, about, long_about = None)]
pub struct Cli {
    /// Show the Docker Compose version information
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    #[command(flatten)]
    pub global: GlobalOptions,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, as `docker compose` names them.
#[derive(Debug, Args, Clone)]
pub struct GlobalOptions {
    /// Compose configuration files (repeatable; `-` reads standard input). Given before the
    /// command, as with docker compose, so that commands keep `-f` for themselves (`logs -f`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Project name
    #[arg(short = 'p', long = "project-name", global = true, value_name = "NAME")]
    pub project_name: Option<String>,
    /// Alternate working directory (default: the folder of the first compose file)
    #[arg(long = "project-directory", alias = "workdir", global = true, value_name = "DIR")]
    pub project_directory: Option<PathBuf>,
    /// Profile to enable (repeatable)
    #[arg(long = "profile", global = true, value_name = "PROFILE")]
    pub profiles: Vec<String>,
    /// Alternate environment file (repeatable)
    #[arg(long = "env-file", global = true, value_name = "FILE")]
    pub env_files: Vec<PathBuf>,
    /// Include all resources, even those not used by services
    #[arg(long = "all-resources", global = true)]
    pub all_resources: bool,
    /// Run compose in backward compatibility mode (names made with `_`, as docker-compose v1)
    #[arg(long, global = true)]
    pub compatibility: bool,
    /// Progress output type
    #[arg(long, global = true, value_enum, default_value_t = Progress::Auto)]
    pub progress: Progress,
    /// Control when to print ANSI control characters
    #[arg(long, global = true, value_enum, env = "COMPOSE_ANSI", default_value_t = Ansi::Auto)]
    pub ansi: Ansi,
    /// Do not print ANSI control characters (DEPRECATED: --ansi never)
    #[arg(long, global = true, hide = true)]
    pub no_ansi: bool,
    /// Show more output (debug messages on standard error)
    #[arg(long, global = true, hide = true)]
    pub verbose: bool,
    /// Which messages to show on standard error (`docker-compose --log-level`)
    #[arg(long, global = true, hide = true, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Where berth keeps its state
    #[arg(long, global = true, env = "BERTH_ROOT", value_name = "DIR", default_value = "/var/lib/berth")]
    pub root: PathBuf,
    /// Where berth keeps run-time files (sockets, mount points, network namespaces)
    #[arg(long, global = true, env = "BERTH_RUN", value_name = "DIR", default_value = "/run/berth")]
    pub run: PathBuf,
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Progress {
    /// A live view on a terminal, plain lines otherwise.
    Auto,
    /// Always the live view.
    Tty,
    /// Plain lines.
    Plain,
    /// Nothing.
    Quiet,
    /// JSON lines.
    Json,
}

/// When ANSI control characters (colours, the live view) are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Ansi {
    /// On a terminal only.
    Auto,
    /// Never.
    Never,
    /// Always.
    Always,
}

/// How much berth says on standard error besides its output (docker's `--log-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Everything.
    Debug,
    /// Information and above.
    Info,
    /// Warnings and errors.
    Warn,
    /// Errors only.
    Error,
    /// As docker's `fatal`: errors only.
    Fatal,
}

impl GlobalOptions {
    /// Reconciles `--ansi`, the deprecated `--no-ansi` and `--progress` as docker compose
    /// does: `--no-ansi` is `--ansi never` (with a warning; an error beside another `--ansi`),
    /// `--progress auto` without ANSI is plain lines, and `--progress tty` without ANSI or
    /// `--progress plain` with forced ANSI are errors. Sets the colours accordingly.
    fn resolve_ansi(&mut self) -> CliResult<()> {
        if self.no_ansi {
            if self.ansi != Ansi::Auto {
                return Err(CliError::msg(
                    "cannot specify DEPRECATED \"--no-ansi\" and \"--ansi\". Please use only \"--ansi\"",
                ));
            }
            self.ansi = Ansi::Never;
            output::warn(format_args!("option '--no-ansi' is DEPRECATED ! Please use '--ansi' instead."));
        }
        match (self.ansi, self.progress) {
            (Ansi::Never, Progress::Auto) => self.progress = Progress::Plain,
            (Ansi::Never, Progress::Tty) => {
                return Err(CliError::msg("can't use --progress tty while ANSI support is disabled"));
            }
            (Ansi::Always, Progress::Plain) => {
                return Err(CliError::msg("can't use --progress plain while ANSI support is forced"));
            }
            _ => {}
        }
        match self.ansi {
            Ansi::Auto => {}
            forced => {
                console::set_colors_enabled(forced == Ansi::Always);
                console::set_colors_enabled_stderr(forced == Ansi::Always);
            }
        }
        Ok(())
    }

    /// With `--verbose` or `--log-level`, berth's diagnostic messages (tracing) go to standard
    /// error; without, there are none.
    fn init_logging(&self) {
        use tracing::Level;
        let level = match (self.log_level, self.verbose) {
            (_, true) | (Some(LogLevel::Debug), _) => Level::DEBUG,
            (Some(LogLevel::Info), _) => Level::INFO,
            (Some(LogLevel::Warn), _) => Level::WARN,
            (Some(LogLevel::Error | LogLevel::Fatal), _) => Level::ERROR,
            (None, false) => return,
        };
        let _ = tracing_subscriber::fmt()
            .with_max_level(level)
            .with_writer(std::io::stderr)
            .with_ansi(console::colors_enabled_stderr())
            .try_init();
    }
}

/// The subcommands. Only commands that work are listed.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and start containers
    Up(up::UpArgs),
    /// Stop and remove containers and networks (volumes and images with flags)
    Down(down::DownArgs),
    /// List the project's containers
    Ps(ps::PsArgs),
    /// Show the containers' output
    Logs(logs::LogsArgs),
    /// Run a command in a running container
    Exec(exec::ExecArgs),
    /// Attach local standard input, output, and error streams to a service's running container
    Attach(attach::AttachArgs),
    /// Print the host address a container port is published on
    Port(port::PortArgs),
    /// Start existing containers
    Start(down::StartArgs),
    /// Stop running containers without removing them
    Stop(down::StopArgs),
    /// Parse, resolve and render the compose file in canonical format
    Config(config::ConfigArgs),
    /// Convert the project to Kubernetes manifests (report of what cannot be converted on stderr)
    #[cfg(feature = "kubernetes")]
    Convert(convert::ConvertArgs),
    /// Show the dependency graph of services, networks and volumes (start order by levels)
    Graph(graph::GraphArgs),
    /// Build or rebuild services
    Build(build::BuildArgs),
    /// Pull service images
    Pull(build::PullArgs),
    /// Push service images
    Push(build::PushArgs),
    /// List images used by the created containers
    Images(build::ImagesArgs),
    /// Manage images in berth's local store (import, load, pull, push, tag, save, history, ls, rm, inspect, prune)
    Image(image::ImageArgs),
    /// Runs one container's shim (started by berth itself, not by users)
    #[command(hide = true)]
    Shim {
        /// The container's id.
        id: String,
    },
    /// Joins a running container and runs a command there (used by exec and healthchecks)
    #[command(hide = true)]
    Join(JoinArgs),
    /// Log in to a registry (credentials kept in docker's config.json)
    Login(login::LoginArgs),
    /// Log out from a registry
    Logout(login::LogoutArgs),
    /// Manage networks
    Network(network::NetworkArgs),
    /// Manage volumes
    Volume(volume::VolumeArgs),
    /// The DNS process (started by berth itself)
    #[command(hide = true)]
    Dns(network::DnsArgs),
    // Lifecycle commands (plans over the engine's operations).
    /// Restart service containers
    Restart(lifecycle::RestartArgs),
    /// Remove stopped service containers
    Rm(lifecycle::RmArgs),
    /// Create containers for a service, without starting them
    Create(lifecycle::CreateArgs),
    /// Force stop service containers (send a signal)
    Kill(lifecycle::KillArgs),
    /// Pause services (freeze their processes)
    Pause(lifecycle::PauseArgs),
    /// Unpause services
    Unpause(lifecycle::PauseArgs),
    /// Scale services
    Scale(lifecycle::ScaleArgs),
    /// Block until containers of the given services stop, printing their exit codes
    Wait(lifecycle::WaitArgs),
    /// Run a one-off command on a service
    Run(run::RunArgs),
    // Observing a running project (top, stats, events).
    /// Display the running processes
    Top(top::TopArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(stats::StatsArgs),
    /// Receive real time events from containers
    Events(events::EventsArgs),
    // Queries and tooling (docker compose's `ls`, `version`; completions and man pages).
    /// List running compose projects
    Ls(ls::LsArgs),
    /// Show the berth version information
    Version(ls::VersionArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion(completion::CompletionArgs),
    /// Print berth's man page, or write every command's page into a folder
    #[command(hide = true)]
    Man(completion::ManArgs),
    /// Copy files/folders between a service container and the local filesystem
    #[command(
        override_usage = "berth cp [OPTIONS] SERVICE:SRC_PATH DEST_PATH|-\n       berth cp [OPTIONS] SRC_PATH|- SERVICE:DEST_PATH"
    )]
    Cp(cp::CpArgs),
    /// Watch build context for service and rebuild/refresh containers when files are updated
    Watch(watch::WatchArgs),
    /// Enters a container's file system and copies (used by cp and watch)
    #[command(hide = true)]
    CopyHelper(CopyHelperArgs),
}

/// Arguments of the hidden `berth copy-helper ID OP`.
#[derive(Debug, Args)]
pub struct CopyHelperArgs {
    /// The container's id.
    id: String,
    #[command(subcommand)]
    op: CopyOp,
}

/// What the copy helper does once inside the container's file system.
#[derive(Debug, Subcommand)]
enum CopyOp {
    /// Print what PATH is, as JSON.
    Stat {
        path: std::path::PathBuf,
        #[arg(long)]
        follow: bool,
    },
    /// Write PATH as a tar stream to standard output.
    Get {
        path: std::path::PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        contents: bool,
        #[arg(long)]
        follow: bool,
    },
    /// Unpack the tar stream on standard input into DIR.
    Put {
        dir: std::path::PathBuf,
        #[arg(long)]
        mkdir: bool,
        #[arg(long)]
        archive: bool,
        #[arg(long)]
        remove: Vec<std::path::PathBuf>,
    },
}

/// Arguments of the hidden `berth join`.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// User (`uid[:gid]` or names).
    #[arg(long)]
    user: Option<String>,
    /// Working dir.
    #[arg(long)]
    workdir: Option<String>,
    /// Extra environment (`KEY=value`).
    #[arg(long)]
    env: Vec<String>,
    /// All capabilities, no seccomp.
    #[arg(long)]
    privileged: bool,
    /// The container's id.
    id: String,
    /// The command.
    #[arg(last = true, required = true)]
    args: Vec<String>,
}

impl GlobalOptions {
    /// The root and run dirs these flags name.
    pub fn dirs(&self) -> crate::state::Dirs {
        crate::state::Dirs::new(&self.root, &self.run)
    }

    /// Loader options from these flags and the process environment.
    pub fn project_options(&self) -> CliResult<ProjectOptions> {
        let mut opts = ProjectOptions::from_process()
            .map_err(|e| CliError::context("cannot read the working directory", e))?;
        opts.files = self.files.clone();
        opts.project_name = self.project_name.clone();
        opts.project_dir = self.project_directory.clone();
        opts.profiles = self.profiles.clone();
        opts.env_files = self.env_files.clone();
        opts.all_resources = self.all_resources;
        opts.compatibility = self.compatibility;
        opts.schema_cache = Some(self.dirs().schema_cache());
        Ok(opts)
    }
}

/// `KEY=VALUE` flags (`--label`, `--opt`) as a map; a bare `KEY` has an empty value.
pub(crate) fn key_values(items: &[String], what: &str) -> CliResult<BTreeMap<String, String>> {
    items
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            None if !kv.is_empty() => Ok((kv.clone(), String::new())),
            _ => Err(CliError::msg(format!("invalid {what} {kv:?}: expected KEY=VALUE"))),
        })
        .collect()
}

/// Loads the project these options describe.
pub(crate) fn load(opts: &ProjectOptions) -> CliResult<LoadedProject> {
    Ok(crate::graph::load_project(opts)?)
}

/// `berth shim ID`: forks into the background (the launcher reaps the first process), leaves
/// the launcher's session, and runs the shim until the container is gone.
fn shim(dirs: &crate::state::Dirs, id: &str) -> ExitCode {
    let ready = crate::runtime::ready_fd_from_env();
    // The launcher starts the shim in a session of its own; by hand, this makes one.
    let _ = nix::unistd::setsid();
    let code = crate::runtime::shim::main(dirs, id, ready);
    ExitCode::from(code as u8)
}

/// `berth join`: execs the command in the container; returns only on failure.
fn join(global: &GlobalOptions, args: &JoinArgs) -> CliResult<()> {
    let runtime = crate::runtime::Runtime::new(&global.dirs(), "/proc/self/exe");
    let exec = crate::runtime::ExecSpec {
        args: args.args.clone(),
        env: args.env.clone(),
        user: args.user.clone(),
        cwd: args.workdir.clone(),
        privileged: args.privileged,
    };
    match runtime.join(&args.id, &exec) {
        Ok(never) => match never {},
        Err(e) => Err(CliError::from(e)),
    }
}

/// `berth copy-helper`: enters the container's file system, then does one copy operation.
fn copy_helper(global: &GlobalOptions, args: &CopyHelperArgs) -> CliResult<()> {
    use crate::runtime::copy;
    let runtime = crate::runtime::Runtime::new(&global.dirs(), "/proc/self/exe");
    runtime.enter_filesystem(&args.id)?;
    match &args.op {
        CopyOp::Stat { path, follow } => {
            let st = copy::helper_stat(path, *follow).map_err(|e| CliError::context(path.display(), e))?;
            let text = serde_json::to_string(&st).map_err(CliError::from)?;
            output::outln!("{text}")
        }
        CopyOp::Get { path, name, contents, follow } => {
            copy::helper_get(path, name, *contents, *follow, std::io::stdout().lock())?;
            Ok(())
        }
        CopyOp::Put { dir, mkdir, archive, remove } => {
            let options = copy::PutOptions { mkdir: *mkdir, archive: *archive, remove: remove.clone() };
            copy::helper_put(dir, &options, std::io::stdin().lock())?;
            Ok(())
        }
    }
}

/// Parses the command line, runs the command, prints one error line on failure.
pub fn run() -> ExitCode {
    // Every container start runs the shim: the exact argv that `Runtime::start` builds skips
    // clap, whose parser costs a good part of a millisecond.
    if let [_, root, root_dir, run, run_dir, cmd, id] = &std::env::args_os().collect::<Vec<_>>()[..]
        && (root, run, cmd) == (&"--root".into(), &"--run".into(), &"shim".into())
        && let Some(id) = id.to_str()
    {
        return shim(&crate::state::Dirs::new(root_dir, run_dir), id);
    }
    // Called as `docker-compose` (a symlink or a docker CLI plug-in), berth is docker compose.
    let argv = match completion::entry(std::env::args_os().collect()) {
        completion::Entry::Args(argv) => argv,
        completion::Entry::Metadata => return exit(completion::print_metadata()),
        completion::Entry::Refused(why) => return exit(Err(CliError::from(why))),
    };
    let mut cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return usage(&e),
    };
    if let Err(e) = cli.global.resolve_ansi() {
        return exit(Err(e));
    }
    cli.global.init_logging();
    // Every command that reads or changes the store makes (or closes) berth's folders first.
    let stateless = match cli.command {
        #[cfg(feature = "kubernetes")]
        Command::Convert(_) => true,
        Command::Config(_)
        | Command::Graph(_)
        | Command::Login(_)
        | Command::Logout(_)
        // Started by berth itself, after the command that started them made the folders.
        | Command::Shim { .. }
        | Command::Join(_)
        | Command::Dns(_)
        | Command::Version(_)
        | Command::Completion(_)
        | Command::Man(_)
        | Command::CopyHelper(_) => true,
        _ => false,
    };
    if !stateless && let Err(e) = cli.global.dirs().secure() {
        return exit(Err(e.into()));
    }
    let result = match &cli.command {
        Command::Up(args) => up::run(&cli.global, args),
        Command::Down(args) => down::run_down(&cli.global, args),
        Command::Ps(args) => ps::run(&cli.global, args),
        Command::Logs(args) => logs::run(&cli.global, args),
        Command::Exec(args) => exec::run(&cli.global, args),
        Command::Attach(args) => attach::run(&cli.global, args),
        Command::Port(args) => port::run(&cli.global, args),
        Command::Start(args) => down::run_start(&cli.global, args),
        Command::Stop(args) => down::run_stop(&cli.global, args),
        Command::Config(args) => config::run(&cli.global, args),
        #[cfg(feature = "kubernetes")]
        Command::Convert(args) => convert::run(&cli.global, args),
        Command::Graph(args) => graph::run(&cli.global, args),
        Command::Image(args) => image::run(&cli.global, args),
        Command::Build(args) => build::run_build(&cli.global, args),
        Command::Pull(args) => build::run_pull(&cli.global, args),
        Command::Push(args) => build::run_push(&cli.global, args),
        Command::Images(args) => build::run_images_cmd(&cli.global, args),
        Command::Shim { id } => return shim(&cli.global.dirs(), id),
        Command::Join(args) => join(&cli.global, args),
        Command::Login(args) => login::run_login(&cli.global, args),
        Command::Logout(args) => login::run_logout(&cli.global, args),
        Command::Network(args) => network::run(&cli.global, args),
        Command::Volume(args) => volume::run(&cli.global, args),
        Command::Dns(args) => network::run_dns(&cli.global, args),
        Command::Restart(args) => lifecycle::run_restart(&cli.global, args),
        Command::Rm(args) => lifecycle::run_rm(&cli.global, args),
        Command::Create(args) => lifecycle::run_create(&cli.global, args),
        Command::Kill(args) => lifecycle::run_kill(&cli.global, args),
        Command::Pause(args) => lifecycle::run_pause(&cli.global, args, true),
        Command::Unpause(args) => lifecycle::run_pause(&cli.global, args, false),
        Command::Scale(args) => lifecycle::run_scale(&cli.global, args),
        Command::Wait(args) => lifecycle::run_wait(&cli.global, args),
        Command::Run(args) => run::run(&cli.global, args),
        Command::Top(args) => top::run(&cli.global, args),
        Command::Stats(args) => stats::run(&cli.global, args),
        Command::Events(args) => events::run(&cli.global, args),
        Command::Ls(args) => ls::run(&cli.global, args),
        Command::Version(args) => ls::run_version(args),
        Command::Completion(args) => completion::run_completion(args),
        Command::Man(args) => completion::run_man(args),
        Command::Cp(args) => cp::run(&cli.global, args),
        Command::Watch(args) => watch::run(&cli.global, args),
        Command::CopyHelper(args) => copy_helper(&cli.global, args),
    };
    exit(result)
}

/// The exit status of a command's result, after its output is flushed; its error (if any)
/// printed as one `berth: ...` line.
fn exit(result: CliResult<()>) -> ExitCode {
    match output::finish(result) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_silent() {
                output::warn(format_args!("berth: {e}"));
            }
            ExitCode::from(e.code)
        }
    }
}

/// What clap had to say instead of a command: `--help` and `--version` go to standard output
/// with status 0; a usage error is clap's text with its first line made a `berth: ...`
/// sentence like every other error (clap's hints and usage follow), with clap's status 2.
fn usage(e: &clap::Error) -> ExitCode {
    // docker compose's `--version` prints its `version` line (scripts read it there too).
    if e.kind() == clap::error::ErrorKind::DisplayVersion {
        return exit(output::outln!("{}", ls::long_version()));
    }
    if !e.use_stderr() {
        // clap's own printing, which colours help on a terminal, returns the write's failure.
        return exit(e.print().map_err(|err| output::stdout_error(&err)));
    }
    let text = e.render().to_string();
    let text = match text.strip_prefix("error: ") {
        Some(rest) => format!("berth: {rest}"),
        None => text,
    };
    output::warn(format_args!("{}", text.trim_end()));
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
