//! `berth exec`: runs a command in a running container of a service; its exit code becomes
//! berth's. Without a compose file, `-p NAME` finds the project by its containers.

use std::process::Stdio;

use clap::Args;

use super::project;
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::query;
use crate::runtime::ExecSpec;

/// `berth exec` flags (docker compose's).
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// Disable pseudo-TTY allocation (one is allocated when standard input is a terminal)
    #[arg(short = 'T', long = "no-tty", visible_alias = "no-TTY")]
    no_tty: bool,
    /// Set environment variables (KEY=VALUE; KEY alone takes berth's own value)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run the command as this user (uid[:gid] or name)
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Path to the working directory for this command
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Give extended privileges to the process
    #[arg(long)]
    privileged: bool,
    /// Index of the container if the service has multiple replicas (default: the first)
    #[arg(long, default_value_t = 0)]
    index: u32,
    /// Keep standard input open (always; accepted as docker compose does)
    #[arg(short = 'i', long, hide = true)]
    interactive: bool,
    /// Allocate a pseudo-TTY (the default on a terminal; accepted as docker compose does)
    #[arg(short = 't', long, hide = true, conflicts_with = "no_tty")]
    tty: bool,
    /// The service
    service: String,
    /// The command and its arguments
    #[arg(required = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// `-e KEY=VALUE` as given; `-e KEY` takes the value from berth's own environment, as docker
/// compose does, and is left out when berth has none.
fn resolve_env(items: &[String]) -> Vec<String> {
    items
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e.clone()),
            None => std::env::var(e).ok().map(|v| format!("{e}={v}")),
        })
        .collect()
}

/// Runs `berth exec`.
pub fn run(global: &GlobalOptions, args: &ExecArgs) -> CliResult<()> {
    let target = project::open_or_name(global)?;
    let container = target.container(&args.service, args.index)?;
    let env = resolve_env(&args.env);
    if args.detach {
        // Said here, not by the detached berth, whose output goes nowhere.
        query::ready_for_exec(&target.engine.host(), &container)?;
        return detach(global, &target.name, &container, args, &env);
    }
    let exec = ExecSpec {
        args: args.command.clone(),
        env,
        user: args.user.clone(),
        cwd: args.workdir.clone(),
        privileged: args.privileged,
    };
    use std::io::IsTerminal;
    let tty = !args.no_tty && std::io::stdin().is_terminal();
    let code = query::exec(&target.engine.host(), &container, &exec, tty)?;
    CliError::exit_status(code)
}

/// `exec -d`: the same exec, run by another berth in a session of its own with no stdio, so
/// that it outlives this one (the process that joins the container dies with its parent).
fn detach(
    global: &GlobalOptions,
    project: &str,
    container: &crate::engine::observe::ProjectContainer,
    args: &ExecArgs,
    env: &[String],
) -> CliResult<()> {
    let exe =
        std::env::current_exe().map_err(|e| CliError::context("cannot find berth's own executable", e))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root").arg(&global.root).arg("--run").arg(&global.run).args(["-p", project]);
    for f in &global.files {
        cmd.arg("-f").arg(f);
    }
    if let Some(dir) = &global.project_directory {
        cmd.arg("--project-directory").arg(dir);
    }
    cmd.args(["exec", "-T", "--index", &container.number.to_string()]);
    for e in env {
        cmd.arg("--env").arg(e);
    }
    if let Some(u) = &args.user {
        cmd.arg("--user").arg(u);
    }
    if let Some(w) = &args.workdir {
        cmd.arg("--workdir").arg(w);
    }
    if args.privileged {
        cmd.arg("--privileged");
    }
    cmd.arg(&args.service).arg("--").args(&args.command);
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
    use std::os::unix::process::CommandExt;
    cmd.spawn().map_err(|e| CliError::context("cannot start the detached exec", e))?;
    Ok(())
}
