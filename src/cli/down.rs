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
    let ctx = match project::open(global) {
        Ok(ctx) => ctx,
        Err(e) => {
            let Some(name) = &global.project_name else { return Err(e) };
            let engine = project::engine(global)?;
            let progress = project::progress(global);
            let _lock = engine.lock_project(name, || progress.warn("waiting for another berth command"))?;
            down(&engine, name, None, None, &opts, &progress)?;
            return Ok(());
        }
    };
    project::check_services(&ctx.loaded, &args.services)?;
    let name = ctx.loaded.project.name.clone();
    let _lock = ctx.engine.lock_project(&name, || {
        ctx.progress.warn(&format!("waiting for another berth command on project {name} to finish"))
    })?;
    down(&ctx.engine, &name, Some(&ctx.loaded), Some(&ctx.graph), &opts, &ctx.progress)?;
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
