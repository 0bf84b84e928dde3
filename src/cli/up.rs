//! `berth up`: plan, apply, and then either return (`-d`, `--wait`) or stay attached to the
//! logs until the containers exit or Ctrl-C stops the project.

use std::time::Duration;

use clap::Args;

use super::output::{self, outln, statusln};
use super::project::{self, ProjectCtx};
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::attach::{ExitPolicy, ExitWatch};
use crate::engine::images::ImageOptions;
use crate::engine::logs::{LogFormat, display_name};
use crate::engine::observe::{ProjectContainer, containers_of};
use crate::engine::plan::UpOptions;
use crate::engine::up::{UpOutcome, UpRequest, plan_up};

/// `berth up` flags, as docker compose names them.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Detached mode: run containers in the background
    #[arg(short = 'd', long)]
    detach: bool,
    /// Wait for services to be running (healthy where they have a healthcheck); implies -d
    #[arg(long)]
    wait: bool,
    /// Maximum seconds to wait with --wait
    #[arg(long, value_name = "SECONDS")]
    wait_timeout: Option<u64>,
    /// Recreate containers even if their configuration hasn't changed
    #[arg(long, conflicts_with = "no_recreate")]
    force_recreate: bool,
    /// Don't recreate containers that exist
    #[arg(long)]
    no_recreate: bool,
    /// Recreate dependent containers. Incompatible with --no-recreate.
    #[arg(long, conflicts_with = "no_recreate")]
    always_recreate_deps: bool,
    /// Don't start linked services
    #[arg(long)]
    no_deps: bool,
    /// Don't start the services after creating them
    #[arg(long, conflicts_with_all = ["wait", "abort_on_container_exit", "abort_on_container_failure"])]
    no_start: bool,
    /// Stop all containers if any container exits
    #[arg(long, conflicts_with = "detach")]
    abort_on_container_exit: bool,
    /// Stop all containers if any container exits with a failure
    #[arg(long, conflicts_with_all = ["detach", "abort_on_container_exit"])]
    abort_on_container_failure: bool,
    /// Return the exit code of this service's container; implies --abort-on-container-exit
    #[arg(long, value_name = "SERVICE", conflicts_with = "detach")]
    exit_code_from: Option<String>,
    /// Attach only to these services' output
    #[arg(long, value_name = "SERVICE")]
    attach: Vec<String>,
    /// Don't attach to these services' output
    #[arg(long, value_name = "SERVICE")]
    no_attach: Vec<String>,
    /// Don't prefix log lines with the container name
    #[arg(long)]
    no_log_prefix: bool,
    /// Monochrome output
    #[arg(long)]
    no_color: bool,
    /// Show timestamps
    #[arg(long)]
    timestamps: bool,
    /// Seconds to wait for containers to stop when they are recreated or the project stops
    #[arg(short = 't', long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Scale SERVICE to NUM replicas (overrides `scale` in the file)
    #[arg(long, value_name = "SERVICE=NUM")]
    scale: Vec<String>,
    /// Remove containers of services not in the compose file
    #[arg(long)]
    remove_orphans: bool,
    /// Recreate anonymous volumes instead of reusing those of the previous containers
    #[arg(short = 'V', long)]
    renew_anon_volumes: bool,
    /// Print what would be done, and change nothing
    #[arg(long)]
    dry_run: bool,
    /// Build images before starting containers
    #[arg(long, conflicts_with = "no_build")]
    build: bool,
    /// Don't build an image, even if it's missing
    #[arg(long)]
    no_build: bool,
    /// Pull image before running ("always"|"missing"|"never"|"build"; default: each service's
    /// pull_policy)
    #[arg(long, value_name = "POLICY", value_parser = ["always", "missing", "never", "build", "policy"])]
    pull: Option<String>,
    /// Pull without printing progress information
    #[arg(long)]
    quiet_pull: bool,
    /// Suppress the build output
    #[arg(long)]
    quiet_build: bool,
    /// Automatically attach to log output of dependent services
    #[arg(long)]
    attach_dependencies: bool,
    /// Assume "yes" as answer to all prompts and run non-interactively
    #[arg(short = 'y', long = "yes")]
    yes: bool,
    /// Watch source code and rebuild/refresh containers when files are updated (logs and
    /// watch events interleaved)
    #[arg(short = 'w', long, conflicts_with_all = ["detach", "wait"])]
    watch: bool,
    /// Services (default: all)
    services: Vec<String>,
}

/// Runs `berth up`.
pub fn run(global: &GlobalOptions, args: &UpArgs) -> CliResult<()> {
    let scale = super::lifecycle::parse_replicas(&args.scale, "--scale")?;
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, &args.services)?;
    project::check_services(&ctx.loaded, &args.attach)?;
    project::check_services(&ctx.loaded, &args.no_attach)?;
    if let Some(s) = &args.exit_code_from {
        project::check_services(&ctx.loaded, std::slice::from_ref(s))?;
    }
    let opts = UpOptions {
        services: args.services.clone(),
        no_deps: args.no_deps,
        force_recreate: args.force_recreate,
        no_recreate: args.no_recreate,
        always_recreate_deps: args.always_recreate_deps,
        scale,
        remove_orphans: args.remove_orphans,
        renew_anon_volumes: args.renew_anon_volumes,
        no_start: args.no_start,
        timeout: args.timeout.map(Duration::from_secs),
    };
    if args.dry_run {
        let plan = plan_up(&ctx.engine.host(), &ctx.loaded, &ctx.graph, &opts)?;
        let lines = plan.describe();
        if lines.is_empty() {
            outln!("DRY-RUN: nothing to do")?;
        }
        for line in lines {
            outln!("DRY-RUN: {line}")?;
        }
        return Ok(());
    }
    let pull = super::lifecycle::pull_policy(args.pull.as_deref())?;
    let request = UpRequest {
        options: opts,
        images: ImageOptions { pull, build: args.build, no_build: args.no_build, ..Default::default() },
        wait: args.wait.then(|| args.wait_timeout.map(Duration::from_secs)),
    };
    let sink = super::lifecycle::CliSink::new(&ctx.progress, args.quiet_pull, args.quiet_build);
    let UpOutcome { selected, started, .. } = super::lifecycle::bring_up(&ctx, &request, &sink)?;
    if args.detach || args.wait || args.no_start {
        return Ok(());
    }
    // docker compose follows the named services only, their dependencies too with
    // --attach-dependencies (all services when none is named).
    let followed: Vec<String> = if args.services.is_empty() || args.attach_dependencies {
        selected
    } else {
        selected.into_iter().filter(|s| args.services.contains(s)).collect()
    };
    let attach: Vec<String> = if args.attach.is_empty() {
        followed.into_iter().filter(|s| !args.no_attach.contains(s)).collect()
    } else {
        args.attach.clone()
    };
    if args.watch {
        // `up --watch`: the develop.watch rules act while the logs stream; the watcher ends
        // when the attached part does (Ctrl-C stops the project as without --watch).
        let watches = super::watch::watches_of(&ctx, &args.services)?;
        if watches.is_empty() {
            ctx.progress.warn("none of the services is configured for watch (no 'develop' section)");
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        let stop = || done.load(std::sync::atomic::Ordering::SeqCst) || signals::interrupts() > 0;
        return std::thread::scope(|scope| {
            let watcher = (!watches.is_empty())
                .then(|| scope.spawn(|| super::watch::watch(&ctx, &watches, Default::default(), &stop)));
            let result = attached(&ctx, args, &attach, started);
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            match watcher.map(|w| w.join()) {
                Some(Ok(Err(e))) if result.is_ok() => Err(e),
                _ => result,
            }
        });
    }
    attached(&ctx, args, &attach, started)
}

fn attached(
    ctx: &ProjectCtx,
    args: &UpArgs,
    attach: &[String],
    started: std::time::SystemTime,
) -> CliResult<()> {
    signals::install();
    let engine = &ctx.engine;
    let name = &ctx.loaded.project.name;
    let host = engine.host();
    let all: Vec<ProjectContainer> =
        containers_of(host.containers, name)?.into_iter().filter(|c| !c.oneoff).collect();
    let watched: Vec<ProjectContainer> =
        all.iter().filter(|c| attach.contains(&c.service)).cloned().collect();
    let format =
        LogFormat { timestamps: args.timestamps, no_color: args.no_color, no_prefix: args.no_log_prefix };
    let mut follower = engine.log_follower(format);
    let mut out = output::Stdout;
    let names: Vec<String> = watched.iter().map(display_name).collect();
    outln!("Attaching to {}", names.join(", "))?;
    let since = crate::runtime::timefmt::rfc3339_nanos(started);
    for c in &watched {
        // New containers show their whole log; kept ones only what comes now.
        let from_end = c.created < since;
        follower.add(c, None, from_end, &mut out).map_err(output::stream_error)?;
    }
    let policy = ExitPolicy {
        abort_on_container_exit: args.abort_on_container_exit,
        abort_on_container_failure: args.abort_on_container_failure,
        exit_code_from: args.exit_code_from.clone(),
    };
    let mut watch = ExitWatch::new(policy, watched);
    let timeout = args.timeout.map(Duration::from_secs);
    let mut killed = false;
    std::thread::scope(|scope| -> CliResult<()> {
        let mut stopper: Option<std::thread::ScopedJoinHandle<'_, ()>> = None;
        let stop_all = || {
            scope.spawn(move || {
                if let Err(e) =
                    crate::engine::down::stop(engine, &ctx.loaded, &ctx.graph, &[], timeout, &ctx.progress)
                {
                    ctx.progress.warn(&e.to_string());
                }
            })
        };
        loop {
            if args.watch {
                // A rebuild replaces containers: follow the new ones' logs too.
                for c in containers_of(host.containers, name)? {
                    if !c.oneoff && attach.contains(&c.service) && !follower.has(&c.id) {
                        follower.add(&c, None, false, &mut out).map_err(output::stream_error)?;
                    }
                }
            }
            follower.poll(&mut out).map_err(output::stream_error)?;
            let interrupts = signals::interrupts();
            if interrupts >= 1 && stopper.is_none() {
                statusln!("Gracefully stopping... (press Ctrl+C again to force)");
                watch.interrupted();
                stopper = Some(stop_all());
            }
            if interrupts >= 2 && !killed {
                killed = true;
                for c in &all {
                    let _ = host.containers.kill(&c.id, "SIGKILL");
                }
            }
            let look = watch.look(|id| host.containers.status(id));
            if !look.exited.is_empty() {
                // The exited containers' last lines come before the news of their exit.
                follower.poll(&mut out).map_err(output::stream_error)?;
            }
            for (c, code) in &look.exited {
                statusln!("{} exited with code {code}", display_name(c));
            }
            if look.abort && stopper.is_none() {
                statusln!("Aborting on container exit...");
                stopper = Some(stop_all());
            }
            let stopping_done = stopper.as_ref().is_none_or(|h| h.is_finished());
            if look.running == 0 && stopping_done && (!args.watch || stopper.is_some()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(h) = stopper {
            let _ = h.join();
        }
        follower.poll(&mut out).map_err(output::stream_error)?;
        Ok(())
    })?;
    let code = watch.exit_code(&all, |id| host.containers.status(id));
    CliError::exit_status(code)
}
