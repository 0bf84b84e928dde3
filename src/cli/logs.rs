//! `berth logs`: the project's containers' output, prefixed by container, the lines of all of
//! them in time order, optionally followed (across restarts). Without a compose file, `-p NAME`
//! finds the project by its containers. As docker compose's (`selectLogsContainers`, its
//! monitor), one-off containers (`run`'s) are never shown nor joined while following, and with
//! a compose file neither are orphans unless named.

use std::time::{Duration, Instant, SystemTime};

use clap::Args;

use super::output;
use super::project;
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::logs::LogFormat;
use crate::engine::observe::ProjectContainer;
use crate::engine::query::{self, Selection};
use crate::runtime::status::State;

/// `berth logs` flags (docker compose's).
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    follow: bool,
    /// Index of the container if the service has multiple replicas
    #[arg(long, default_value_t = 0)]
    index: u32,
    /// Show logs since timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Show logs before a timestamp (e.g. 2013-01-02T13:23:37Z) or relative (e.g. 42m for 42 minutes)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Number of lines to show from the end of the logs for each container (or "all")
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps
    #[arg(short = 't', long)]
    timestamps: bool,
    /// Produce monochrome output
    #[arg(long)]
    no_color: bool,
    /// Don't print prefix in logs
    #[arg(long)]
    no_log_prefix: bool,
    /// Services (default: all)
    services: Vec<String>,
}

/// How long `logs -f` keeps following once every container stopped: a container that is being
/// restarted (`restart`, a restart policy) is stopped for a moment and then writes on.
const RESTART_GRACE: Duration = Duration::from_secs(2);

/// Runs `berth logs`.
pub fn run(global: &GlobalOptions, args: &LogsArgs) -> CliResult<()> {
    let tail = match args.tail.as_str() {
        "all" | "-1" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| CliError::msg(format!("--tail {n:?}: expected a number or all")))?,
        ),
    };
    if args.index > 0 && args.services.len() != 1 {
        return Err(CliError::msg("--index requires one service to be selected"));
    }
    let now = SystemTime::now();
    let time = |flag: &str, v: &Option<String>| -> CliResult<Option<SystemTime>> {
        v.as_deref()
            .map(|t| {
                super::timestamp::parse(t, now).ok_or_else(|| {
                    CliError::msg(format!(
                        "--{flag} {t:?}: expected a time (2013-01-02T13:23:37Z, a Unix time) or a duration (42m, 1h30m)"
                    ))
                })
            })
            .transpose()
    };
    let (since, until) = (time("since", &args.since)?, time("until", &args.until)?);
    let target = project::open_or_name(global)?;
    target.check_services(&args.services)?;
    // Services that ask not to be attached (`attach: false`) only when named.
    let quiet: Vec<String> = target
        .loaded
        .as_ref()
        .map(|l| {
            l.project
                .services
                .iter()
                .filter(|(_, s)| s.attach == Some(false))
                .map(|(n, _)| n.clone())
                .collect()
        })
        .unwrap_or_default();
    // As docker compose's: one-off containers (`run`'s) never, and with a compose file only
    // its services' containers unless others are named (orphans left out).
    let defined = target.loaded.as_ref().map(|l| l.project.services.keys().cloned().collect());
    let selection = Selection {
        services: args.services.clone(),
        quiet,
        defined,
        index: args.index,
        oneoffs: false,
        ..Selection::default()
    };
    let host = target.engine.host();
    let wanted = || -> CliResult<Vec<ProjectContainer>> {
        Ok(query::select(host.containers, &target.name, &selection)?
            .into_iter()
            .map(|l| l.container)
            .collect())
    };
    let engine = &target.engine;
    let format =
        LogFormat { timestamps: args.timestamps, no_color: args.no_color, no_prefix: args.no_log_prefix };
    let mut follower = engine.log_follower(format).window(since, until);
    let mut out = output::Stdout;
    let first = wanted()?;
    if args.index > 0 && first.is_empty() {
        return Err(CliError::msg(format!(
            "service {:?} has no container number {}",
            args.services.first().map(String::as_str).unwrap_or(""),
            args.index
        )));
    }
    follower.add_all(&first, tail, &mut out).map_err(output::stream_error)?;
    if !args.follow {
        return Ok(());
    }
    signals::install();
    let live =
        |id: &str| !matches!(host.containers.status(id).state, State::Exited | State::Dead | State::Created);
    let mut stopped_since: Option<Instant> = None;
    loop {
        follower.poll(&mut out).map_err(output::stream_error)?;
        if signals::interrupts() > 0 {
            return Ok(());
        }
        if until.is_some_and(|u| SystemTime::now() >= u) {
            return Ok(());
        }
        // New containers (scaled up, recreated) join from their first line.
        let containers = wanted()?;
        for c in &containers {
            if !follower.has(&c.id) {
                follower.add(c, None, false, &mut out).map_err(output::stream_error)?;
            }
        }
        let any_live =
            follower.ids().iter().filter(|id| containers.iter().any(|c| &&c.id == id)).any(|id| live(id));
        // docker compose stops following when every container has stopped; a restart stops a
        // container for a moment, so berth waits a little before it believes it.
        match (any_live, stopped_since) {
            (true, _) => stopped_since = None,
            (false, None) => stopped_since = Some(Instant::now()),
            (false, Some(t)) if t.elapsed() >= RESTART_GRACE => {
                follower.poll(&mut out).map_err(output::stream_error)?;
                return Ok(());
            }
            (false, Some(_)) => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
