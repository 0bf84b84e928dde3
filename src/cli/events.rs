//! `berth events`: the project's container events as they happen (and, with `--since`, those
//! already in its log), in docker compose's text or JSON lines. The events come from the
//! project's event log, which every berth process acting on the project appends to (see
//! [`crate::events`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::json;

use super::output::outln;
use super::{CliError, CliResult, GlobalOptions, project, signals};
use crate::compose::LoadError;
use crate::engine::Engine;
use crate::events::{Event, Follower, log_path};

/// `berth events` flags.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Output events as a stream of json objects
    #[arg(long)]
    json: bool,
    /// Show all events created since timestamp
    #[arg(long, value_name = "TIMESTAMP")]
    since: Option<String>,
    /// Stream events until this timestamp
    #[arg(long, value_name = "TIMESTAMP")]
    until: Option<String>,
    /// Services (default: all)
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
}

/// The project a command that can work from the containers alone acts on: from the compose
/// file when there is one, or from `-p NAME` alone (its containers found by their labels).
pub(crate) struct Target {
    /// The project's name.
    pub name: String,
    /// The engine.
    pub engine: Engine,
}

/// Finds the project: loads the compose file, or with `-p NAME` and no file, takes the name.
/// `services` must be the project's (checked when the file is known).
pub(crate) fn target(global: &GlobalOptions, services: &[String]) -> CliResult<Target> {
    let opts = global.project_options()?;
    let engine = project::engine(global)?;
    match crate::compose::load_project(&opts) {
        Ok(loaded) => {
            project::check_services(&loaded, services)?;
            Ok(Target { name: loaded.project.name.clone(), engine })
        }
        Err(LoadError::NoComposeFile(_)) if global.project_name.is_some() => {
            let name = global.project_name.clone().unwrap_or_default();
            Ok(Target { name, engine })
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `berth events`.
pub fn run(global: &GlobalOptions, args: &EventsArgs) -> CliResult<()> {
    let now = SystemTime::now();
    let parse = |flag: &str, v: &Option<String>| -> CliResult<Option<SystemTime>> {
        v.as_deref()
            .map(|t| {
                parse_timestamp(t, now).ok_or_else(|| {
                    CliError::msg(format!(
                        "--{flag} {t:?}: expected a date and time (RFC 3339), a Unix timestamp or a duration (10m)"
                    ))
                })
            })
            .transpose()
    };
    let since = parse("since", &args.since)?;
    let until = parse("until", &args.until)?;
    let target = target(global, &args.services)?;
    let path = log_path(target.engine.dirs(), &target.name);
    let mut follower = Follower::new(&path, since.is_some());
    let wanted = |e: &Event| {
        e.kind == "container"
            && !e.oneoff()
            && (args.services.is_empty() || args.services.iter().any(|s| s == e.service()))
            && since.is_none_or(|t| e.system_time() >= t)
            && until.is_none_or(|t| e.system_time() <= t)
    };
    signals::install();
    loop {
        for event in follower.poll().iter().filter(|e| wanted(e)) {
            let line = if args.json { json_line(event) } else { text_line(event) };
            outln!("{line}")?;
        }
        if signals::interrupts() > 0 || until.is_some_and(|t| SystemTime::now() > t) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// docker compose's JSON line: the keys sorted (Go marshals a map so), the time in RFC 3339
/// with nanoseconds in local time, the attributes without the compose labels.
pub fn json_line(e: &Event) -> String {
    json!({
        "action": e.action,
        "attributes": e.shown_attributes(),
        "id": e.id,
        "service": e.service(),
        "time": rfc3339_local(e.system_time()),
        "type": "container",
    })
    .to_string()
}

/// docker compose's text line: `2024-01-01 12:00:00.000000 container start <id>
/// (image=..., name=...)`, in local time. (docker compose's own line ends with a blank line:
/// its `String()` ends with a newline that `Println` doubles; berth keeps that.)
pub fn text_line(e: &Event) -> String {
    let attrs: Vec<String> = e.shown_attributes().iter().map(|(k, v)| format!("{k}={v}")).collect();
    let t = local(e.system_time());
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06} container {} {} ({})\n",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        t.nanos / 1000,
        e.action,
        e.id,
        attrs.join(", ")
    )
}

/// A time broken down in the local time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// Seconds east of UTC.
    pub offset: i64,
}

/// `t` in the local time zone (`TZ`, `/etc/localtime`), as the C library reads it.
pub(crate) fn local(t: SystemTime) -> LocalTime {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = libc::time_t::try_from(d.as_secs()).unwrap_or(0);
    // SAFETY: `tm` is plain data, filled by localtime_r from a valid time_t.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            libc::gmtime_r(&secs, &mut tm);
        }
        tm
    };
    LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        nanos: d.subsec_nanos(),
        offset: tm.tm_gmtoff,
    }
}

/// Go's RFC 3339 with nanoseconds in local time: trailing zeros of the fraction dropped,
/// `Z` for UTC, `+01:00` otherwise.
pub(crate) fn rfc3339_local(t: SystemTime) -> String {
    format_rfc3339(&local(t))
}

fn format_rfc3339(t: &LocalTime) -> String {
    let frac = if t.nanos == 0 {
        String::new()
    } else {
        format!(".{:09}", t.nanos).trim_end_matches('0').to_string()
    };
    let zone = if t.offset == 0 {
        "Z".to_string()
    } else {
        let sign = if t.offset < 0 { '-' } else { '+' };
        let o = t.offset.abs();
        format!("{sign}{:02}:{:02}", o / 3600, o % 3600 / 60)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{zone}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// A `--since`/`--until` value as docker reads it: a Go duration before `now` (`10m`,
/// `1h30m`), a Unix timestamp with optional fraction, or a date with optional time
/// (`2006-01-02`, `2006-01-02T15:04:05`, with fraction and `Z` or `±hh:mm`; local time
/// without a zone).
pub fn parse_timestamp(text: &str, now: SystemTime) -> Option<SystemTime> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Some(d) = parse_go_duration(text) {
        return now.checked_sub(d);
    }
    if let Some((secs, frac)) = text.split_once('.').or(Some((text, "")))
        && !secs.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 9
    {
        let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
        return Some(UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos));
    }
    parse_date(text, now)
}

fn parse_date(text: &str, now: SystemTime) -> Option<SystemTime> {
    let (date, time) = match text.split_once(['T', ' ']) {
        Some((d, t)) => (d, t),
        None => (text, ""),
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day): (i64, i64, i64) =
        (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // The zone: `Z`, `±hh:mm` (or `±hhmm`), or none (local).
    let (clock, offset) = if let Some(c) = time.strip_suffix('Z') {
        (c, Some(0i64))
    } else if let Some(pos) = time.rfind(['+', '-']) {
        let (c, z) = time.split_at(pos);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 {
            return None;
        }
        let (h, mm): (i64, i64) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
        (c, Some(sign * (h * 3600 + mm * 60)))
    } else {
        (time, None)
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.split(':').filter(|p| !p.is_empty());
    let h: i64 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let min: i64 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let sec: i64 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    if parts.next().is_some() || h > 23 || min > 59 || sec > 60 || frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
    let days = days_from_civil(y, m, day);
    let naive = days * 86_400 + h * 3600 + min * 60 + sec;
    let offset = offset.unwrap_or_else(|| local(now).offset);
    let secs = u64::try_from(naive - offset).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A Go duration (`300ms`, `1.5h`, `1h30m`, `10s`); `None` for anything else.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if n == 0 {
            return None;
        }
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
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
        total += value * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn event() -> Event {
        let attributes: BTreeMap<String, String> = [
            ("com.docker.compose.project", "p"),
            ("com.docker.compose.service", "web"),
            ("image", "busybox"),
            ("name", "p-web-1"),
            ("exitCode", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Event {
            // 2024-01-01T12:00:00.123456789Z
            time: 1_704_110_400_123_456_789,
            kind: "container".into(),
            action: "die".into(),
            id: "abc".into(),
            attributes,
        }
    }

    #[test]
    fn lines_look_like_docker_composes() {
        // SAFETY: the tests of this module are the only ones reading TZ, and set it alike.
        unsafe { std::env::set_var("TZ", "UTC") };
        assert_eq!(
            json_line(&event()),
            r#"{"action":"die","attributes":{"exitCode":"0","image":"busybox","name":"p-web-1"},"id":"abc","service":"web","time":"2024-01-01T12:00:00.123456789Z","type":"container"}"#
        );
        assert_eq!(
            text_line(&event()),
            "2024-01-01 12:00:00.123456 container die abc (exitCode=0, image=busybox, name=p-web-1)\n"
        );
        let t = LocalTime {
            year: 2024,
            month: 1,
            day: 2,
            hour: 3,
            minute: 4,
            second: 5,
            nanos: 500_000_000,
            offset: -(5 * 3600 + 1800),
        };
        assert_eq!(format_rfc3339(&t), "2024-01-02T03:04:05.5-05:30");
        assert_eq!(format_rfc3339(&LocalTime { nanos: 0, offset: 3600, ..t }), "2024-01-02T03:04:05+01:00");
    }

    #[test]
    fn timestamps_read_as_docker_reads_them() {
        unsafe { std::env::set_var("TZ", "UTC") };
        let now = UNIX_EPOCH + Duration::from_secs(1_704_110_400);
        let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(parse_timestamp("10m", now), at(1_704_110_400 - 600));
        assert_eq!(parse_timestamp("1h30m", now), at(1_704_110_400 - 5400));
        assert_eq!(parse_timestamp("1.5h", now), at(1_704_110_400 - 5400));
        assert_eq!(parse_timestamp("1704110400", now), at(1_704_110_400));
        assert_eq!(
            parse_timestamp("1704110400.5", now),
            Some(UNIX_EPOCH + Duration::new(1_704_110_400, 500_000_000))
        );
        assert_eq!(parse_timestamp("2024-01-01T12:00:00Z", now), at(1_704_110_400));
        assert_eq!(parse_timestamp("2024-01-01T13:00:00+01:00", now), at(1_704_110_400));
        assert_eq!(parse_timestamp("2024-01-01T12:00:00", now), at(1_704_110_400));
        assert_eq!(parse_timestamp("2024-01-01", now), at(1_704_067_200));
        assert_eq!(
            parse_timestamp("2024-01-01T12:00:00.25Z", now),
            Some(UNIX_EPOCH + Duration::new(1_704_110_400, 250_000_000))
        );
        for bad in ["", "yesterday", "10x", "2024-13-01", "2024-01-01T25:00:00Z", "m10", "1.2.3"] {
            assert_eq!(parse_timestamp(bad, now), None, "{bad}");
        }
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
    }
}
