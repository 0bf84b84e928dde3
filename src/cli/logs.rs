//! `berth logs`: the project's containers' output, prefixed by container, optionally
//! followed.

use std::time::Duration;

use clap::Args;

use super::output;
use super::project;
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::logs::{LogFollower, LogFormat};
use crate::engine::observe::{ProjectContainer, project_containers, status_of};
use crate::runtime::status::State;

/// `berth logs` flags.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    follow: bool,
    /// Number of lines to show from the end of each container's log (or "all")
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Monochrome output
    #[arg(long)]
    no_color: bool,
    /// Don't prefix lines with the container name
    #[arg(long)]
    no_log_prefix: bool,
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth logs`.
pub fn run(global: &GlobalOptions, args: &LogsArgs) -> CliResult<()> {
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| CliError::msg(format!("--tail {n:?}: expected a number or all")))?,
        ),
    };
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, &args.services)?;
    let wanted = |c: &ProjectContainer| args.services.is_empty() || args.services.contains(&c.service);
    let engine = &ctx.engine;
    let name = &ctx.loaded.project.name;
    let format =
        LogFormat { timestamps: args.timestamps, no_color: args.no_color, no_prefix: args.no_log_prefix };
    let mut follower = LogFollower::new(engine.dirs(), format);
    let mut out = output::Stdout;
    for c in project_containers(&engine.runtime, name)?.iter().filter(|c| wanted(c)) {
        follower.add(c, tail, false, &mut out).map_err(output::stream_error)?;
    }
    if !args.follow {
        return Ok(());
    }
    signals::install();
    loop {
        follower.poll(&mut out).map_err(output::stream_error)?;
        if signals::interrupts() > 0 {
            return Ok(());
        }
        // New containers (scaled up, recreated) join; docker compose stops following when
        // every container has stopped.
        let containers = project_containers(&engine.runtime, name)?;
        for c in containers.iter().filter(|c| wanted(c)) {
            if !follower.has(&c.id) {
                follower.add(c, None, false, &mut out).map_err(output::stream_error)?;
            }
        }
        let live = follower
            .ids()
            .iter()
            .filter(|id| containers.iter().any(|c| &c.id == *id))
            .any(|id| !matches!(status_of(&engine.runtime, id).state, State::Exited | State::Dead));
        if !live {
            follower.poll(&mut out).map_err(output::stream_error)?;
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
