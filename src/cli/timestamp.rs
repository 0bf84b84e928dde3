//! Times given on the command line as docker reads them (`logs --since/--until`,
//! `events --since/--until`, `image prune --filter until=`): a Go duration before now (`10m`,
//! `1h30m`, `1.5h`, `0`), Unix seconds (`1700000000`, `1700000000.5`), or a date with an
//! optional time (`2024-05-02`, `2024-05-02T12:21:53`, with a fraction and `Z` or `±hh:mm`);
//! a date or time without a zone is in the local zone, as docker takes it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The time `text` names, relative ones counted back from `now`; `None` when it is none of
/// the forms docker accepts.
pub fn parse(text: &str, now: SystemTime) -> Option<SystemTime> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Some(d) = go_duration(text) {
        return now.checked_sub(d);
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
        if secs.is_empty() || frac.contains('.') || frac.len() > 9 {
            return None;
        }
        let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
        return UNIX_EPOCH.checked_add(Duration::new(secs.parse().ok()?, nanos));
    }
    date_time(text)
}

/// A Go duration (`300ms`, `1.5h`, `1h30m`, `0`); `None` for anything else (a sign included:
/// docker's relative times only go back).
fn go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
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

/// `YYYY-MM-DD[(T| )hh[:mm[:ss]][.frac]][Z|±hh:mm|±hhmm]`.
fn date_time(text: &str) -> Option<SystemTime> {
    let (date, rest) = match text.split_once(['T', ' ']) {
        Some((d, r)) => (d, r),
        None => (text.get(..10)?, text.get(10..)?),
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i32>().ok());
    let date = (d.next()??, d.next()??, d.next()??);
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], Some(&rest[i..])),
        None => (rest, None),
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let time = if hms.is_empty() {
        (0, 0, 0)
    } else {
        let mut t = hms.splitn(3, ':').map(|p| p.parse::<i32>().ok());
        (t.next()??, t.next().unwrap_or(Some(0))?, t.next().unwrap_or(Some(0))?)
    };
    if frac.len() > 9 {
        return None;
    }
    let nanos: u32 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().ok()? };
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
            let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let (h, m): (libc::time_t, libc::time_t) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 3600 + m * 60)
        }
    };
    let secs = calendar(date, time, zone.is_some()) - offset;
    Some(UNIX_EPOCH + Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// Seconds since the epoch of a calendar time: in UTC with `utc`, else in the local zone (with
/// that date's daylight saving time).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn relative_times_are_go_durations_before_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse("10m", now), at(1_700_000_000 - 600));
        assert_eq!(parse("1h30m", now), at(1_700_000_000 - 5400));
        assert_eq!(parse("1.5h", now), at(1_700_000_000 - 5400));
        assert_eq!(parse("300ms", now), Some(now - Duration::from_millis(300)));
        assert_eq!(parse("0", now), Some(now));
    }

    #[test]
    fn absolute_times_are_unix_seconds_or_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let t = UNIX_EPOCH + Duration::from_secs(1_357_133_017);
        assert_eq!(parse("1357133017", now), Some(t));
        assert_eq!(parse("1357133017.25", now), Some(t + Duration::from_millis(250)));
        assert_eq!(parse("2013-01-02T13:23:37Z", now), Some(t));
        assert_eq!(parse("2013-01-02 13:23:37Z", now), Some(t));
        assert_eq!(parse("2013-01-02T15:23:37+02:00", now), Some(t));
        assert_eq!(parse("2013-01-02T11:23:37-0200", now), Some(t));
        assert_eq!(parse("2013-01-02T13:23:37.5Z", now), Some(t + Duration::from_millis(500)));
        assert_eq!(parse("2013-01-02Z", now), at(1_357_084_800));
        assert_eq!(parse("2023-11-14T22:13Z", now), at(1_699_999_980));
    }

    #[test]
    fn times_without_a_zone_are_local() {
        // SAFETY: tests of this module are the only readers of TZ, and set the same value.
        unsafe { std::env::set_var("TZ", "UTC") };
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse("2024-01-01T12:00:00", now), at(1_704_110_400));
        assert_eq!(parse("2024-01-01", now), at(1_704_067_200));
    }

    #[test]
    fn nonsense_is_refused() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        for bad in [
            "",
            "yesterday",
            "10x",
            "m10",
            "-5m",
            "1.2.3",
            "2013-13-02T10:00:00Z",
            "2013-01-02T24:00:00Z",
            "2023-11-14T22:13:20+25:00",
            "1357133017.1234567891",
        ] {
            assert_eq!(parse(bad, now), None, "{bad:?}");
        }
    }
}
