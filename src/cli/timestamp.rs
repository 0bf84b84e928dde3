//! Times given on the command line as docker takes them (`--filter until=`, `--since`,
//! `--until`): a Go duration before now (`10m`, `1h30m`), Unix seconds (`1700000000`,
//! `1700000000.5`), or a date and time (`2024-05-02`, `2024-05-02T12:21:53`,
//! `2024-05-02T12:21:53Z`, `2024-05-02T12:21:53.5+02:00`); a time without a zone is UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::compose::model::units::Duration as GoDuration;
use crate::runtime::timefmt::parse_rfc3339;

/// The time `value` names, relative ones counted back from `now`; `None` when it is none of
/// the forms docker accepts.
pub fn parse(value: &str, now: SystemTime) -> Option<SystemTime> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') && value.matches('.').count() <= 1 {
        let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
        let secs: u64 = secs.parse().ok()?;
        let nanos: u32 = if frac.is_empty() {
            0
        } else {
            let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
            digits.parse().ok()?
        };
        return UNIX_EPOCH.checked_add(Duration::new(secs, nanos));
    }
    if value.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && value.ends_with(|c: char| c.is_ascii_alphabetic())
        && !value.contains('-')
        && let Ok(d) = GoDuration::parse(value)
    {
        return now.checked_sub(d.to_std());
    }
    date_time(value)
}

/// `YYYY-MM-DD[THH:MM:SS[.frac]][Z|±HH:MM]`.
fn date_time(value: &str) -> Option<SystemTime> {
    let (body, offset_secs) = split_zone(value)?;
    if !in_range(body) {
        return None;
    }
    let full = match body.len() {
        10 => format!("{body}T00:00:00Z"),
        _ => format!("{body}Z"),
    };
    let utc = parse_rfc3339(&full)?;
    if offset_secs >= 0 {
        utc.checked_sub(Duration::from_secs(offset_secs.unsigned_abs()))
    } else {
        utc.checked_add(Duration::from_secs(offset_secs.unsigned_abs()))
    }
}

/// Whether the date's and time's fields are in range (month 1-12, day 1-31, 23:59:60 at most).
fn in_range(body: &str) -> bool {
    let num = |r: std::ops::Range<usize>| body.get(r).and_then(|s| s.parse::<u32>().ok());
    let date_ok = matches!((num(5..7), num(8..10)), (Some(1..=12), Some(1..=31)));
    let time_ok = body.len() == 10
        || matches!((num(11..13), num(14..16), num(17..19)), (Some(0..=23), Some(0..=59), Some(0..=60)));
    date_ok && time_ok
}

/// The part before the zone, and the zone's offset east of UTC in seconds.
fn split_zone(value: &str) -> Option<(&str, i64)> {
    if let Some(body) = value.strip_suffix('Z') {
        return Some((body, 0));
    }
    // A zone is `+HH:MM` or `-HH:MM` after the time (the date's own dashes come before `T`).
    if let Some(t) = value.find('T') {
        let time = &value[t..];
        if let Some(at) = time.rfind(['+', '-']) {
            let zone = &time[at..];
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            return Some((&value[..t + at], sign * (h * 3600 + m * 60)));
        }
    }
    Some((value, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn every_form_docker_takes() {
        let now = at(1_700_000_000);
        assert_eq!(parse("10m", now), Some(at(1_700_000_000 - 600)));
        assert_eq!(parse("1h30m", now), Some(at(1_700_000_000 - 5400)));
        assert_eq!(parse("1700000000", now), Some(at(1_700_000_000)));
        assert_eq!(parse("1700000000.5", now), Some(at(1_700_000_000) + Duration::from_millis(500)));
        assert_eq!(parse("2023-11-14", now), Some(at(1_699_920_000)));
        assert_eq!(parse("2023-11-14T22:13:20", now), Some(at(1_700_000_000)));
        assert_eq!(parse("2023-11-14T22:13:20Z", now), Some(at(1_700_000_000)));
        assert_eq!(parse("2023-11-15T00:13:20+02:00", now), Some(at(1_700_000_000)));
        assert_eq!(parse("2023-11-14T20:13:20-02:00", now), Some(at(1_700_000_000)));
    }

    #[test]
    fn nonsense_is_refused() {
        let now = at(1_700_000_000);
        for bad in ["", "yesterday", "10x", "2023-13-01", "1.2.3", "2023-11-14T22:13:20+25:00", "-5m"] {
            assert_eq!(parse(bad, now), None, "{bad:?}");
        }
    }
}
