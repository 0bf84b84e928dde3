//! `berth down`, `berth stop` and `berth start`.

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::project;
use super::{CliResult, GlobalOptions};
use crate::engine::down::{DownOptions, RemoveImages, down, start, stop};

/// Which images `--rmi` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RmiArg {
    /// Images without a custom tag.
    Local,
    /// All images used by services.
    All,
}

/// `berth down` flags.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Remove containers for services not defined in the compose file
    #[arg(long)]
    remove_orphans: bool,
    /// Remove named volumes declared in the file and anonymous volumes
    #[arg(short = 'v', long)]
    volumes: bool,
    /// Remove images used by services: local (without a custom tag) or all
    #[arg(long, value_enum, value_name = "TYPE")]
    rmi: Option<RmiArg>,
    /// Seconds to wait for containers to stop before killing them
    #[arg(short = 't', long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Only these services' containers (and their dependents'); networks and volumes that
    /// other containers use stay
    services: Vec<String>,
}

/// Runs `berth down`. Without a compose file, `-p NAME` still takes the project away: what
/// it made is found by its labels.
pub fn run_down(global: &GlobalOptions, args: &DownArgs) -> CliResult<()> {
    let opts = DownOptions {
        remove_orphans: args.remove_orphans,
        volumes: args.volumes,
        rmi: args.rmi.map(|r| match r {
            RmiArg::Local => RemoveImages::Local,
            RmiArg::All => RemoveImages::All,
        }),
        timeout: args.timeout.map(Duration::from_secs),
        services: args.services.clone(),
    };
    // Without a compose file, `-p NAME` still finds what the project made by its labels.
    let target = project::open_or_name(global)?;
    target.check_services(&args.services)?;
    let _lock = target.lock()?;
    down(
        &target.engine,
        &target.name,
        target.loaded.as_ref(),
        target.graph.as_ref(),
        &opts,
        &target.progress,
    )?;
    Ok(())
}

/// `berth stop` flags.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Seconds to wait for containers to stop before killing them
    #[arg(short = 't', long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth stop`.
pub fn run_stop(global: &GlobalOptions, args: &StopArgs) -> CliResult<()> {
    // Without a compose file, `-p NAME` finds the project by its containers.
    let target = project::open_or_name(global)?;
    target.check_services(&args.services)?;
    let (loaded, graph) = target.project()?;
    let _lock = target.lock()?;
    let timeout = args.timeout.map(Duration::from_secs);
    stop(&target.engine, &loaded, &graph, &args.services, timeout, &target.progress)?;
    Ok(())
}

/// `berth start` flags.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth start`.
pub fn run_start(global: &GlobalOptions, args: &StartArgs) -> CliResult<()> {
    // Without a compose file, `-p NAME` finds the project by its containers.
    let target = project::open_or_name(global)?;
    target.check_services(&args.services)?;
    let (loaded, graph) = target.project()?;
    let _lock = target.lock()?;
    start(&target.engine, &loaded, &graph, &args.services, &target.progress)?;
    Ok(())
}
