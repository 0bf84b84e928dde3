//! `berth logs`: the project's containers' output, prefixed by container, the lines of all of
//! them in time order, optionally followed (across restarts). Without a compose file, `-p NAME`
//! finds the project by its containers.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;

use super::output;
use super::project;
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::logs::{LogFollower, LogFormat};
use crate::engine::observe::{ProjectContainer, project_containers, status_of};
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

/// A Go duration (`10m`, `1h30m`, `1.5h`, `300ms`), as docker reads relative times.
fn go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() || rest == "0" {
        return (rest == "0").then_some(Duration::ZERO);
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Seconds since the epoch of a calendar time: in UTC with `utc`, else in the local zone.
fn calendar(date: (i32, i32, i32), time: (i32, i32, i32), utc: bool) -> libc::time_t {
    // SAFETY: timegm and mktime read our own `tm` (mktime normalises it in place).
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = date.0 - 1900;
        tm.tm_mon = date.1 - 1;
        tm.tm_mday = date.2;
        tm.tm_hour = time.0;
        tm.tm_min = time.1;
        tm.tm_sec = time.2;
        tm.tm_isdst = -1;
        if utc { libc::timegm(&mut tm) } else { libc::mktime(&mut tm) }
    }
}

/// docker's `--since`/`--until` value: a Go duration before `now`, a Unix time
/// (`1700000000.5`), or an RFC 3339 date or time (without a zone: the local one).
pub fn parse_time(text: &str, now: SystemTime) -> Option<SystemTime> {
    let text = text.trim();
    if let Some(d) = go_duration(text) {
        return now.checked_sub(d);
    }
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let (s, frac) = text.split_once('.').unwrap_or((text, ""));
        let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").get(..9)?.parse().ok()? };
        return Some(UNIX_EPOCH + Duration::new(s.parse().ok()?, nanos));
    }
    let (date, rest) = match text.split_once('T') {
        Some((d, r)) => (d, r),
        None => (text.get(..10)?, text.get(10..)?),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    let date = (d.next()??, d.next()??, d.next()??);
    // The zone: Z, +hh:mm / -hh:mm, or none (local time).
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let time = if hms.is_empty() {
        (0, 0, 0)
    } else {
        let mut t = hms.splitn(3, ':').map(|p| p.parse::<i32>().ok());
        (t.next()??, t.next()??, t.next().unwrap_or(Some(0))?)
    };
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").get(..9)?.parse().ok()? };
    let valid = (1..=12).contains(&date.1)
        && (1..=31).contains(&date.2)
        && (0..24).contains(&time.0)
        && (0..60).contains(&time.1)
        && (0..=60).contains(&time.2);
    if !valid {
        return None;
    }
    let offset: libc::time_t = match zone {
        None => 0,
        Some(z) if z.eq_ignore_ascii_case("z") => 0,
        Some(z) => {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
            sign * (h.parse::<libc::time_t>().ok()? * 3600 + m.parse::<libc::time_t>().ok()? * 60)
        }
    };
    let secs = calendar(date, time, zone.is_some()) - offset;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
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
                parse_time(t, now).ok_or_else(|| {
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
    let quiet_service = |s: &str| {
        args.services.is_empty()
            && target
                .loaded
                .as_ref()
                .and_then(|l| l.project.services.get(s))
                .is_some_and(|s| s.attach == Some(false))
    };
    let wanted = |c: &ProjectContainer| {
        !c.oneoff
            && (args.services.is_empty() || args.services.contains(&c.service))
            && (args.index == 0 || c.number == args.index)
            && !quiet_service(&c.service)
    };
    let engine = &target.engine;
    let format =
        LogFormat { timestamps: args.timestamps, no_color: args.no_color, no_prefix: args.no_log_prefix };
    let mut follower = LogFollower::new(engine.dirs(), format).window(since, until);
    let mut out = output::Stdout;
    let first: Vec<ProjectContainer> =
        project_containers(&engine.runtime, &target.name)?.into_iter().filter(|c| wanted(c)).collect();
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
    let live = |id: &str| {
        !matches!(status_of(&engine.runtime, id).state, State::Exited | State::Dead | State::Created)
    };
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
        let containers = project_containers(&engine.runtime, &target.name)?;
        for c in containers.iter().filter(|c| wanted(c)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_are_go_durations_before_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_time("10m", now), Some(now - Duration::from_secs(600)));
        assert_eq!(parse_time("1h30m", now), Some(now - Duration::from_secs(5400)));
        assert_eq!(parse_time("1.5h", now), Some(now - Duration::from_secs(5400)));
        assert_eq!(parse_time("300ms", now), Some(now - Duration::from_millis(300)));
        assert_eq!(parse_time("0", now), Some(now));
        assert_eq!(parse_time("10x", now), None);
        assert_eq!(parse_time("", now), None);
    }

    #[test]
    fn absolute_times_are_rfc_3339_or_unix() {
        let now = SystemTime::now();
        let t = UNIX_EPOCH + Duration::from_secs(1_357_133_017);
        assert_eq!(parse_time("2013-01-02T13:23:37Z", now), Some(t));
        assert_eq!(parse_time("2013-01-02T15:23:37+02:00", now), Some(t));
        assert_eq!(parse_time("2013-01-02T13:23:37.5Z", now), Some(t + Duration::from_millis(500)));
        assert_eq!(parse_time("1357133017", now), Some(t));
        assert_eq!(parse_time("1357133017.25", now), Some(t + Duration::from_millis(250)));
        assert_eq!(parse_time("2013-01-02Z", now), Some(UNIX_EPOCH + Duration::from_secs(1_357_084_800)));
        assert_eq!(parse_time("yesterday", now), None);
        assert_eq!(parse_time("2013-13-02T10:00:00Z", now), None);
        assert_eq!(parse_time("2013-01-02T24:00:00Z", now), None);
    }
}
