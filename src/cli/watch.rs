//! `berth watch`: its flags and output; the watcher itself is [`crate::watch::run`] (shared
//! with `up --watch`).

use clap::Args;

use super::output::statusln;
use super::project::{self, ProjectCtx};
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::plan::UpOptions;
use crate::engine::progress::Progress;
use crate::engine::up::UpRequest;
use crate::image::events::ImageEvents;
use crate::watch::ServiceWatch;
use crate::watch::run::{Project, WatchOptions, WatchSink};

/// `berth watch` flags.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Do not build & start services before watching
    #[arg(long)]
    no_up: bool,
    /// Prune dangling images on rebuild
    #[arg(long)]
    prune: bool,
    /// hide build output
    #[arg(long)]
    quiet: bool,
    /// Services to watch (default: all that have develop.watch rules)
    services: Vec<String>,
}

/// Runs `berth watch`.
pub fn run(global: &GlobalOptions, args: &WatchArgs) -> CliResult<()> {
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, &args.services)?;
    let watches = watches_of(&ctx, &args.services)?;
    if watches.is_empty() {
        return Err(CliError::msg(
            "none of the selected services is configured for watch, consider setting a 'develop' section",
        ));
    }
    if !args.no_up {
        up_detached(&ctx, &args.services, args.quiet)?;
    }
    signals::install();
    watch(&ctx, &watches, WatchOptions { prune: args.prune, quiet: args.quiet }, &|| {
        signals::interrupts() > 0
    })
}

/// The watch rules of `services` (all the project's when empty) that have some.
pub fn watches_of(ctx: &ProjectCtx, services: &[String]) -> CliResult<Vec<ServiceWatch>> {
    Ok(crate::watch::run::watches_of(&ctx.loaded, services)?)
}

/// What `up -d SERVICES` does (`--quiet`: no image progress, failures only).
fn up_detached(ctx: &ProjectCtx, services: &[String], quiet: bool) -> CliResult<()> {
    let request = UpRequest {
        options: UpOptions { services: services.to_vec(), ..UpOptions::default() },
        ..UpRequest::default()
    };
    super::lifecycle::bring_up(ctx, &request, &super::lifecycle::CliSink::new(&ctx.progress, quiet, quiet))?;
    Ok(())
}

/// Watches until `stop` says so, each action's line on standard error.
pub fn watch(
    ctx: &ProjectCtx,
    watches: &[ServiceWatch],
    opts: WatchOptions,
    stop: &(dyn Fn() -> bool + Sync),
) -> CliResult<()> {
    let project = Project { engine: &ctx.engine, loaded: &ctx.loaded, graph: &ctx.graph };
    Ok(crate::watch::run::watch(project, watches, opts, &StatusLines(&ctx.progress), stop)?)
}

/// Watch lines on standard error, build progress on the progress view, Ctrl-C stops a rebuild.
struct StatusLines<'a>(&'a Progress);

impl WatchSink for StatusLines<'_> {
    fn line(&self, text: &str) {
        statusln!("{text}");
    }
    fn image_events(&self) -> &dyn ImageEvents {
        self.0
    }
    fn cancel(&self) -> Option<&'static std::sync::atomic::AtomicBool> {
        Some(signals::cancel_flag())
    }
}
