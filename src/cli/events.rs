//! `berth events`: the project's container events as they happen (and, with `--since`, those
//! already in its log), in docker compose's text or JSON lines. The events come from the
//! project's event log, which every berth process acting on the project appends to (see
//! [`crate::events`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use serde_json::json;

use super::output::outln;
use super::{CliError, CliResult, GlobalOptions, project, signals};
use crate::events::Event;

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

/// Runs `berth events`.
pub fn run(global: &GlobalOptions, args: &EventsArgs) -> CliResult<()> {
    let now = SystemTime::now();
    let parse = |flag: &str, v: &Option<String>| -> CliResult<Option<SystemTime>> {
        v.as_deref()
            .map(|t| {
                super::timestamp::parse(t, now).ok_or_else(|| {
                    CliError::msg(format!(
                        "--{flag} {t:?}: expected a date and time (RFC 3339), a Unix timestamp or a duration (10m)"
                    ))
                })
            })
            .transpose()
    };
    let since = parse("since", &args.since)?;
    let until = parse("until", &args.until)?;
    let target = project::open_or_name(global)?;
    target.check_services(&args.services)?;
    let mut follower = target.engine.event_follower(&target.name, since.is_some());
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
}
