//! `berth exec`: runs a command in a running container of a service; its exit code becomes
//! berth's.

use clap::Args;

use super::project;
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::observe::{is_running, project_containers, status_of};
use crate::runtime::ExecSpec;

/// `berth exec` flags.
#[derive(Debug, Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Don't allocate a pseudo-TTY (one is allocated when standard input is a terminal)
    #[arg(short = 'T', long = "no-TTY")]
    no_tty: bool,
    /// Set environment variables (KEY=VALUE)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Run as this user (uid[:gid] or name)
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    /// Give the process extended privileges
    #[arg(long)]
    privileged: bool,
    /// Which replica of the service (1-based)
    #[arg(long, default_value_t = 1)]
    index: u32,
    /// The service
    service: String,
    /// The command and its arguments
    #[arg(required = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs `berth exec`.
pub fn run(global: &GlobalOptions, args: &ExecArgs) -> CliResult<()> {
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, std::slice::from_ref(&args.service))?;
    let engine = &ctx.engine;
    let container = project_containers(&engine.runtime, &ctx.loaded.project.name)?
        .into_iter()
        .find(|c| c.service == args.service && c.number == args.index && !c.oneoff)
        .ok_or_else(|| {
            CliError::msg(format!("service {:?} has no container number {}", args.service, args.index))
        })?;
    if !is_running(&status_of(&engine.runtime, &container.id)) {
        return Err(CliError::msg(format!("container {} is not running", container.name)));
    }
    let mut env = Vec::new();
    for e in &args.env {
        // `-e KEY` takes the value from berth's own environment, as docker does.
        match e.split_once('=') {
            Some(_) => env.push(e.clone()),
            None => {
                if let Ok(v) = std::env::var(e) {
                    env.push(format!("{e}={v}"));
                }
            }
        }
    }
    let exec = ExecSpec {
        args: args.command.clone(),
        env,
        user: args.user.clone(),
        cwd: args.workdir.clone(),
        privileged: args.privileged,
    };
    use std::io::IsTerminal;
    let code = if !args.no_tty && std::io::stdin().is_terminal() {
        engine.runtime.exec_tty(&container.id, &exec)?
    } else {
        engine.runtime.exec(&container.id, &exec)?
    };
    if code != 0 {
        return Err(CliError::exit(u8::try_from(code.clamp(0, 255)).unwrap_or(1)));
    }
    Ok(())
}
