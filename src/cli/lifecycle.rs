//! `berth restart`, `rm`, `create`, `kill`, `pause`, `unpause`, `scale` and `wait`: each a
//! plan over the engine's operations (observe → plan → execute), with docker compose's flags.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Duration;

use clap::Args;

use super::output::{self, out, outln, statusln};
use super::project::{self, ProjectCtx};
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::EngineError;
use crate::engine::execute::{Executor, recover};
use crate::engine::images::{ImageOptions, PullPolicy};
use crate::engine::observe::{Scope, observe};
use crate::engine::plan::{Plan, UpOptions, plan_kill, plan_pause, plan_restart, plan_rm};
use crate::engine::progress::Progress;
use crate::engine::up::{UpOutcome, UpRequest, UpSink};
use crate::image::events::ImageEvents;

/// The names of the containers a plan acts on, in its order.
fn container_names(plan: &Plan) -> Vec<String> {
    plan.services.iter().flat_map(|s| s.actions.iter().map(|a| a.name().to_string())).collect()
}

/// Image events with pulls and/or builds left out (`--quiet-pull`, `--quiet-build`);
/// failures always show.
pub(crate) struct QuietImages<'a> {
    /// Where the rest goes.
    pub inner: &'a dyn ImageEvents,
    /// Leave out pull progress.
    pub pulls: bool,
    /// Leave out build progress and output.
    pub builds: bool,
}

impl QuietImages<'_> {
    fn shown(&self, kind: &str) -> bool {
        match kind {
            "Build" | "Step" => !self.builds,
            _ => !self.pulls,
        }
    }
}

impl ImageEvents for QuietImages<'_> {
    fn event(&self, kind: &str, name: &str, status: &str, done: bool) {
        if self.shown(kind) {
            self.inner.event(kind, name, status, done);
        }
    }
    fn failed(&self, kind: &str, name: &str, status: &str) {
        self.inner.failed(kind, name, status);
    }
    fn output(&self, name: &str, line: &str) {
        if !self.builds {
            self.inner.output(name, line);
        }
    }
}

/// `--pull` as the image code takes it (`policy`, or none: each service's own).
pub(crate) fn pull_policy(pull: Option<&str>) -> CliResult<Option<PullPolicy>> {
    match pull {
        None | Some("policy") => Ok(None),
        Some(p) => Ok(Some(PullPolicy::parse(Some(p)).map_err(CliError::from)?)),
    }
}

/// `SERVICE=NUM` items (`--scale`, `scale`).
pub(crate) fn parse_replicas(items: &[String], what: &str) -> CliResult<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for item in items {
        let bad = || CliError::msg(format!("invalid {what} {item:?}: expected SERVICE=NUM"));
        let (svc, n) = item.split_once('=').ok_or_else(bad)?;
        if svc.is_empty() {
            return Err(bad());
        }
        out.insert(svc.to_string(), n.trim().parse::<u32>().map_err(|_| bad())?);
    }
    Ok(out)
}

/// Asks `question` on standard output and reads the answer from standard input: yes only
/// for `y` or `yes` (docker compose's prompt; end of input is no).
fn confirm(question: &str) -> CliResult<bool> {
    out!("{question} [y/N] ")?;
    output::finish(Ok(()))?;
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

// ---------------------------------------------------------------------------------------------
// restart

/// `berth restart` flags.
#[derive(Debug, Args)]
pub struct RestartArgs {
    /// Seconds to wait for containers to stop before killing them
    #[arg(short = 't', long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Don't restart dependent services
    #[arg(long)]
    no_deps: bool,
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth restart`: every container of the services (and of those that depend on them
/// with `restart: true`) stopped and started again, keeping the container.
pub fn run_restart(global: &GlobalOptions, args: &RestartArgs) -> CliResult<()> {
    // Without a compose file, `-p NAME` finds the project by its containers (docker compose's
    // projectOrName), as `start` and `stop` do.
    let target = project::open_or_name(global)?;
    target.check_services(&args.services)?;
    let (loaded, graph) = target.project()?;
    let _lock = target.lock()?;
    let host = target.engine.host();
    // The restarted containers resolve names: a killed DNS process runs again (and what an
    // interrupted command left is cleared), as before `up`.
    recover(&host, &target.name, &target.progress)?;
    let observed = observe(&host, &target.name, &Scope::default())?;
    let timeout = args.timeout.map(Duration::from_secs);
    let plan = plan_restart(&loaded, &graph, &observed, &args.services, args.no_deps, timeout)?;
    Executor { host, loaded: Some(&loaded), graph: Some(&graph), progress: &target.progress }
        .execute(&plan)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// rm

/// `berth rm` flags.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Don't ask to confirm removal
    #[arg(short = 'f', long)]
    force: bool,
    /// Stop the containers, if required, before removing
    #[arg(short = 's', long)]
    stop: bool,
    /// Remove any anonymous volumes attached to containers
    #[arg(short = 'v', long)]
    volumes: bool,
    /// Deprecated - no effect
    #[arg(short = 'a', long, hide = true)]
    all: bool,
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth rm`: removes the stopped containers of the services (with `-s`, stops them
/// first), after asking unless `-f`.
pub fn run_rm(global: &GlobalOptions, args: &RmArgs) -> CliResult<()> {
    let t = project::open_or_name(global)?;
    t.check_services(&args.services)?;
    let _lock = t.lock()?;
    recover(&t.engine.host(), &t.name, &t.progress)?;
    let observed = t.observe()?;
    let plan = plan_rm(
        &t.name,
        t.loaded.as_ref(),
        t.graph.as_ref(),
        &observed,
        &args.services,
        args.stop,
        args.volumes,
    )?;
    let names = container_names(&plan);
    if names.is_empty() {
        statusln!("No stopped containers");
        return Ok(());
    }
    let message = format!("Going to remove {}", names.join(", "));
    if args.force {
        outln!("{message}")?;
    } else if !confirm(&format!("{message}. Are you sure?"))? {
        return Ok(());
    }
    t.executor().execute(&plan)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// create

/// `berth create` flags.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Build images before starting containers
    #[arg(long, conflicts_with = "no_build")]
    build: bool,
    /// Don't build an image, even if it's policy
    #[arg(long)]
    no_build: bool,
    /// Pull image before running ("always"|"missing"|"never"|"build")
    #[arg(long, value_name = "POLICY", value_parser = ["always", "missing", "never", "build", "policy"])]
    pull: Option<String>,
    /// Pull without printing progress information
    #[arg(long)]
    quiet_pull: bool,
    /// Recreate containers even if their configuration and image haven't changed
    #[arg(long, conflicts_with = "no_recreate")]
    force_recreate: bool,
    /// If containers already exist, don't recreate them
    #[arg(long)]
    no_recreate: bool,
    /// Remove containers for services not defined in the Compose file
    #[arg(long)]
    remove_orphans: bool,
    /// Scale SERVICE to NUM instances (overrides `scale` in the file)
    #[arg(long, value_name = "SERVICE=NUM")]
    scale: Vec<String>,
    /// Assume "yes" as answer to all prompts and run non-interactively
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth create`: `up`'s plan without starting anything.
pub fn run_create(global: &GlobalOptions, args: &CreateArgs) -> CliResult<()> {
    let scale = parse_replicas(&args.scale, "--scale")?;
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, &args.services)?;
    let opts = UpOptions {
        services: args.services.clone(),
        force_recreate: args.force_recreate,
        no_recreate: args.no_recreate,
        scale,
        remove_orphans: args.remove_orphans,
        no_start: true,
        ..UpOptions::default()
    };
    let image_opts = ImageOptions {
        pull: pull_policy(args.pull.as_deref())?,
        build: args.build,
        no_build: args.no_build,
        ..Default::default()
    };
    converge(&ctx, &opts, &image_opts, args.quiet_pull)
}

/// Pulls or builds what the services need, then plans and executes `up`'s plan with `opts`.
fn converge(
    ctx: &ProjectCtx,
    opts: &UpOptions,
    image_opts: &ImageOptions,
    quiet_pull: bool,
) -> CliResult<()> {
    let request = UpRequest { options: opts.clone(), images: image_opts.clone(), wait: None };
    bring_up(ctx, &request, &CliSink::new(&ctx.progress, quiet_pull, false))?;
    Ok(())
}

/// The engine's `up` sequence for the CLI: an interrupted build ends the command as Ctrl-C
/// does (exit code 130).
pub(crate) fn bring_up(ctx: &ProjectCtx, request: &UpRequest, sink: &CliSink<'_>) -> CliResult<UpOutcome> {
    crate::engine::up::bring_up(&ctx.engine, &ctx.loaded, &ctx.graph, request, sink).map_err(cli_error)
}

/// An error of `up`'s sequence for the command line: an interrupt ends the command as Ctrl-C
/// does (exit code 130).
pub(crate) fn cli_error(e: EngineError) -> CliError {
    match e {
        EngineError::Interrupted => {
            let mut e = CliError::msg("interrupted");
            e.code = 130;
            e
        }
        e => e.into(),
    }
}

/// How `up`, `create` and `scale` show progress, and catch Ctrl-C while images build (the
/// build then cleans up what its running step made instead of berth being killed).
pub(crate) struct CliSink<'a> {
    progress: &'a Progress,
    images: QuietImages<'a>,
}

impl<'a> CliSink<'a> {
    /// Progress on `progress`, pulls and/or builds left out of it as `--quiet-pull` and
    /// `--quiet-build` ask.
    pub fn new(progress: &'a Progress, quiet_pull: bool, quiet_build: bool) -> CliSink<'a> {
        CliSink { progress, images: QuietImages { inner: progress, pulls: quiet_pull, builds: quiet_build } }
    }
}

impl UpSink for CliSink<'_> {
    fn progress(&self) -> &Progress {
        self.progress
    }
    fn image_events(&self) -> &dyn ImageEvents {
        &self.images
    }
    fn cancel(&self) -> Option<&'static std::sync::atomic::AtomicBool> {
        Some(super::signals::cancel_flag())
    }
    fn building(&self, running: bool) {
        if running {
            super::signals::install();
        } else {
            super::signals::restore_default();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// scale

/// `berth scale` flags.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// Don't start linked services
    #[arg(long)]
    no_deps: bool,
    /// SERVICE=REPLICAS
    #[arg(required = true, value_name = "SERVICE=REPLICAS")]
    replicas: Vec<String>,
}

/// Runs `berth scale`: the services made to have that many containers (the highest numbers
/// go first), and started, with their dependencies unless `--no-deps`.
pub fn run_scale(global: &GlobalOptions, args: &ScaleArgs) -> CliResult<()> {
    let scale = parse_replicas(&args.replicas, "scale specifier")?;
    let ctx = project::open(global)?;
    let services: Vec<String> = scale.keys().cloned().collect();
    project::check_services(&ctx.loaded, &services)?;
    let opts = UpOptions { services, no_deps: args.no_deps, scale, ..UpOptions::default() };
    converge(&ctx, &opts, &ImageOptions::default(), false)
}

// ---------------------------------------------------------------------------------------------
// kill, pause, unpause

/// `berth kill` flags.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Remove containers for services not defined in the Compose file
    #[arg(long)]
    remove_orphans: bool,
    /// SIGNAL to send to the container
    #[arg(short = 's', long, value_name = "SIGNAL", default_value = "SIGKILL")]
    signal: String,
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth kill`.
pub fn run_kill(global: &GlobalOptions, args: &KillArgs) -> CliResult<()> {
    let t = project::open_or_name(global)?;
    t.check_services(&args.services)?;
    let _lock = t.lock()?;
    let observed = t.observe()?;
    let plan =
        plan_kill(&t.name, t.loaded.as_ref(), &observed, &args.services, &args.signal, args.remove_orphans)?;
    if plan.services.is_empty() {
        statusln!("No container to kill");
        return Ok(());
    }
    t.executor().execute(&plan)?;
    Ok(())
}

/// `berth pause` / `berth unpause` flags.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth pause` (`pause: true`) or `berth unpause`.
pub fn run_pause(global: &GlobalOptions, args: &PauseArgs, pause: bool) -> CliResult<()> {
    let t = project::open_or_name(global)?;
    t.check_services(&args.services)?;
    let _lock = t.lock()?;
    let observed = t.observe()?;
    let plan = plan_pause(&t.name, t.loaded.as_ref(), &observed, &args.services, pause)?;
    t.executor().execute(&plan)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// wait

/// `berth wait` flags.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Drops project when the first container stops
    #[arg(long)]
    down_project: bool,
    /// Services
    #[arg(required = true)]
    services: Vec<String>,
}

/// Runs `berth wait`: blocks until the running containers of the services have exited,
/// printing each one's exit code as it comes; the command's exit code is the last one's.
/// With `--down-project`, the project is then taken down (orphans too).
pub fn run_wait(global: &GlobalOptions, args: &WaitArgs) -> CliResult<()> {
    let t = project::open_or_name(global)?;
    t.check_services(&args.services)?;
    let observed = t.observe()?;
    let running: Vec<_> = observed
        .containers
        .iter()
        .filter(|c| args.services.contains(&c.service))
        .filter(|c| observed.status(&c.id).state == crate::runtime::status::State::Running)
        .cloned()
        .collect();
    if running.is_empty() {
        return Err(CliError::msg(format!("no containers for project {:?}", t.name)));
    }
    let on_exit = |c: &crate::engine::observe::ProjectContainer, code: i32| {
        statusln!("container {:?} exited with status code {code}", c.id);
    };
    let code = t.executor().wait_exits(&running, &on_exit)?;
    if args.down_project {
        let _lock = t.lock()?;
        let opts = crate::engine::down::DownOptions { remove_orphans: true, ..Default::default() };
        crate::engine::down::down(
            &t.engine,
            &t.name,
            t.loaded.as_ref(),
            t.graph.as_ref(),
            &opts,
            &t.progress,
        )?;
    }
    CliError::exit_status(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_counts_are_parsed_and_bad_ones_named() {
        let r = parse_replicas(&["web=3".into(), "db=0".into()], "scale specifier").unwrap();
        assert_eq!(r, BTreeMap::from([("db".to_string(), 0), ("web".to_string(), 3)]));
        for bad in ["web", "=2", "web=x", "web=-1"] {
            let e = parse_replicas(&[bad.into()], "scale specifier").unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
