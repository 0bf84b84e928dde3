//! `berth run SERVICE [COMMAND...]`: a one-off container of a service. Its dependencies are
//! brought up first (unless `--no-deps`) and their `depends_on` conditions waited for. In
//! the foreground the container's process reads berth's stdin and its output goes to berth's
//! stdout and stderr and to the container's log (`logs` shows it), as docker compose's does;
//! when stdin is a terminal (and no `-T`) the process gets a terminal of its own, which the
//! shim relays to and from berth's (raw meanwhile, its size passed on) and logs.
//! Signals berth receives go to it, and berth returns its exit code.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;

use super::lifecycle::{CliSink, pull_policy};
use super::output::outln;
use super::project;
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::EngineError;
use crate::engine::execute::Executor;
use crate::engine::images::ImageOptions;
use crate::engine::oneoff::RunOptions;
use crate::engine::plan::UpOptions;
use crate::engine::up::{UpRequest, bring_up_then};
use crate::runtime::status::State;

/// `berth run` flags, as docker compose names them.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    detach: bool,
    /// Set environment variables (KEY=VALUE, or KEY to take it from the environment)
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Add or override a label
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Automatically remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Disable pseudo-TTY allocation (default: auto-detected)
    #[arg(short = 'T', long = "no-tty")]
    no_tty: bool,
    /// Keep STDIN open even if not attached (default true; `--interactive=false` gives the
    /// process /dev/null)
    #[arg(short = 'i', long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    interactive: bool,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Run as specified username or uid
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Override the entrypoint of the image
    #[arg(long)]
    entrypoint: Option<String>,
    /// Add Linux capabilities
    #[arg(long, value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long, value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Don't start linked services
    #[arg(long)]
    no_deps: bool,
    /// Bind mount a volume
    #[arg(short = 'v', long = "volume", value_name = "VOLUME")]
    volumes: Vec<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish", value_name = "PORT", conflicts_with = "service_ports")]
    publish: Vec<String>,
    /// Use the service's network aliases in the network(s) the container connects to
    #[arg(long)]
    use_aliases: bool,
    /// Run command with all service's ports enabled and mapped to the host
    #[arg(short = 'P', long)]
    service_ports: bool,
    /// Pull image before running ("always"|"missing"|"never")
    #[arg(long, value_name = "POLICY", value_parser = ["always", "missing", "never", "build", "policy"])]
    pull: Option<String>,
    /// Don't print anything to STDOUT
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Suppress progress output from the build process
    #[arg(long)]
    quiet_build: bool,
    /// Pull without printing progress information
    #[arg(long)]
    quiet_pull: bool,
    /// Build image before starting container
    #[arg(long)]
    build: bool,
    /// Remove containers for services not defined in the Compose file
    #[arg(long)]
    remove_orphans: bool,
    /// Forward received signals to the container's process (the default)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    /// The service
    service: String,
    /// The command and its arguments (the service's command when none)
    #[arg(allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Splits `KEY=VALUE` (a bare `KEY` has no value).
fn env_item(item: &str) -> CliResult<(String, Option<String>)> {
    match item.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), Some(v.to_string()))),
        None if !item.is_empty() => Ok((item.to_string(), None)),
        _ => Err(CliError::msg(format!("invalid environment variable {item:?}: expected KEY=VALUE"))),
    }
}

/// The run options these flags ask for.
fn run_options(args: &RunArgs, cwd: &std::path::Path) -> CliResult<RunOptions> {
    let entrypoint = match &args.entrypoint {
        Some(text) => Some(
            shell_words::split(text).map_err(|e| CliError::context(format!("--entrypoint {text:?}"), e))?,
        ),
        None => None,
    };
    let mut volumes = Vec::new();
    for v in &args.volumes {
        let mut mount =
            crate::compose::parse_volume_flag(v).map_err(|e| CliError::context(format!("-v {v:?}"), e))?;
        // A relative bind source is relative to where berth runs.
        if mount.r#type == "bind"
            && let Some(src) = &mount.source
            && !src.starts_with('/')
        {
            let home = std::env::var("HOME").ok();
            mount.source = Some(crate::compose::paths::absolute(cwd, src, home.as_deref()));
        }
        volumes.push(mount);
    }
    let mut ports = Vec::new();
    for p in &args.publish {
        ports.extend(
            crate::compose::parse_port_flag(p).map_err(|e| CliError::context(format!("-p {p:?}"), e))?,
        );
    }
    let stdin_tty = std::io::stdin().is_terminal();
    Ok(RunOptions {
        service: args.service.clone(),
        command: args.command.clone(),
        entrypoint,
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        environment: args.env.iter().map(|e| env_item(e)).collect::<CliResult<_>>()?,
        labels: super::key_values(&args.labels, "label")?,
        volumes,
        ports,
        service_ports: args.service_ports,
        use_aliases: args.use_aliases,
        name: args.name.clone(),
        cap_add: args.cap_add.clone(),
        cap_drop: args.cap_drop.clone(),
        // docker compose: a tty unless -T, or unless stdin is not a terminal.
        tty: !args.no_tty && stdin_tty,
        interactive: args.interactive,
        attach: !args.detach,
    })
}

/// Runs `berth run`.
pub fn run(global: &GlobalOptions, args: &RunArgs) -> CliResult<()> {
    let mut ctx = project::open(global)?;
    project::check_services(&ctx.loaded, std::slice::from_ref(&args.service))?;
    if args.quiet {
        ctx.progress = crate::engine::progress::Progress::new(crate::engine::progress::ProgressMode::Quiet);
    }
    let cwd =
        std::env::current_dir().map_err(|e| CliError::context("cannot read the working directory", e))?;
    let opts = run_options(args, &cwd)?;
    let name = ctx.loaded.project.name.clone();
    let service = args.service.clone();
    let image_opts =
        ImageOptions { pull: pull_policy(args.pull.as_deref())?, build: args.build, ..Default::default() };
    // `up`'s sequence for the service and (unless --no-deps) its dependencies, leaving the
    // service itself without a container of its own: its networks and volumes are made as
    // `up` makes them (docker compose's `run` does so too). Then, still under the project's
    // lock, the dependencies' conditions are waited for and the one-off container is made.
    let request = UpRequest {
        options: UpOptions {
            services: vec![service.clone()],
            no_deps: args.no_deps,
            remove_orphans: args.remove_orphans,
            ..UpOptions::default()
        },
        images: image_opts,
        wait: None,
    };
    let sink = CliSink::new(&ctx.progress, args.quiet_pull, args.quiet_build);
    let leave = [service.clone()];
    let with_deps =
        !args.no_deps && ctx.graph.dependencies_closure(std::slice::from_ref(&service))?.len() > 1;
    let make_oneoff = |executor: &Executor<'_>| {
        if with_deps {
            executor.dependencies_ready(&name, &service)?;
        }
        let reference = crate::engine::plan::image_reference(&ctx.loaded, &service).ok_or_else(|| {
            EngineError::Msg(format!("service {service} has neither an image nor a build section"))
        })?;
        let image = executor.host.images.resolve(&reference).map_err(|e| match e {
            crate::image::ImageError::NotFound(_) => {
                EngineError::Msg(format!("service {service}: image {reference} is not present"))
            }
            source => EngineError::Image { service: service.clone(), source },
        })?;
        executor.create_oneoff(&image, &opts)
    };
    let (_, oneoff) =
        bring_up_then(&ctx.engine, &ctx.loaded, &ctx.graph, &request, &sink, &leave, make_oneoff)
            .map_err(super::lifecycle::cli_error)?;
    let host = ctx.engine.host();
    let executor =
        Executor { host, loaded: Some(&ctx.loaded), graph: Some(&ctx.graph), progress: &ctx.progress };
    if args.detach {
        if let Err(e) = executor.start_oneoff(&service, &oneoff) {
            if args.rm {
                let _ = executor.remove_oneoff(&oneoff, true);
            }
            return Err(e.into());
        }
        outln!("{}", oneoff.id)?;
        return Ok(());
    }
    // Signals from now on go to the container (sig-proxy), not to berth: all that docker
    // compose's `run` forwards (SIGWINCH on a terminal is a resize instead). Without the
    // proxy they are only counted, so that the container is still waited for.
    if args.sig_proxy {
        signals::install_proxy(!opts.tty);
    } else {
        signals::install();
    }
    // On a terminal, the shim relays it to the container's own terminal: keys go there as
    // they are typed (raw mode; Ctrl-C is a key then), and a new size is passed on.
    let raw = if opts.tty { crate::runtime::exec_tty::RawMode::enter() } else { None };
    if opts.tty {
        signals::install_winch();
    }
    let started = executor.start_oneoff(&service, &oneoff);
    let result = started.map_err(CliError::from).and_then(|()| {
        loop {
            if opts.tty
                && signals::window_changed()
                && let Some(ws) = crate::runtime::exec_tty::stdin_window_size()
            {
                let _ = ctx.engine.runtime.resize(&oneoff.id, ws.ws_row, ws.ws_col);
            }
            let st = host
                .containers
                .wait(&oneoff.id, Duration::from_millis(200))
                .map_err(|e| CliError::context(format!("wait for container {}", oneoff.name), e))?;
            if matches!(st.state, State::Exited | State::Dead) {
                return Ok(st.exit_code.unwrap_or(-1));
            }
            for sig in signals::take_proxied() {
                let _ = host.containers.kill(&oneoff.id, &sig.to_string());
            }
        }
    });
    drop(raw);
    if args.rm
        && let Err(e) = executor.remove_oneoff(&oneoff, true)
    {
        ctx.progress.warn(&e.to_string());
    }
    let code = result?;
    CliError::exit_status(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> RunArgs {
        use clap::Parser;
        let argv = ["berth", "run"].iter().chain(args).copied();
        match crate::cli::Cli::try_parse_from(argv).expect("parses").command {
            crate::cli::Command::Run(a) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stdin_is_kept_unless_interactive_is_false_and_t_turns_the_tty_off() {
        let cwd = std::path::Path::new("/");
        for (args, interactive) in [
            (&["web"][..], true),
            (&["-i", "web"][..], true),
            (&["--interactive=false", "web"][..], false),
            (&["-T", "web", "sh", "-i"][..], true),
        ] {
            let a = parsed(args);
            assert_eq!(a.interactive, interactive, "{args:?}");
            let opts = run_options(&a, cwd).unwrap();
            assert_eq!((opts.interactive, opts.attach), (interactive, true), "{args:?}");
        }
        let a = parsed(&["-T", "web", "sh", "-i"]);
        assert_eq!(a.command, ["sh", "-i"]);
        assert!(!run_options(&a, cwd).unwrap().tty);
        assert!(!run_options(&parsed(&["-d", "web"]), cwd).unwrap().attach);
    }

    #[test]
    fn environment_items_are_split_and_bad_ones_named() {
        assert_eq!(env_item("A=1=2").unwrap(), ("A".to_string(), Some("1=2".to_string())));
        assert_eq!(env_item("A").unwrap(), ("A".to_string(), None));
        assert!(env_item("=x").unwrap_err().to_string().contains("\"=x\""));
    }
}
