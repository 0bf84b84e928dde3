//! Value types with compose's own syntax: durations (`1m30s`) printed as Go prints a
//! `time.Duration`, byte sizes (`50M`) printed as a decimal string, as compose-go does.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A duration or size compose's syntax does not allow (the text as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// Not Go duration syntax.
    #[error("invalid duration {0:?} (expected e.g. 30s, 1m30s, 500ms)")]
    Duration(String),
    /// Not a size.
    #[error("invalid size {0:?} (expected e.g. 512, 64k, 50M, 2g)")]
    Size(String),
}

/// A duration in nanoseconds. Parses Go duration syntax (`1h2m3.5s`, `500ms`, `10us`, `1ns`);
/// a bare number is seconds. Prints like Go's `time.Duration.String()` (`1m0s`, `500ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub i64);

impl Duration {
    /// The duration as a std one (negative durations become zero).
    pub fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.max(0) as u64)
    }

    /// Parses Go duration syntax.
    pub fn parse(text: &str) -> Result<Duration, UnitError> {
        let bad = || UnitError::Duration(text.to_string());
        let s = text.trim();
        let (neg, mut rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        if rest == "0" {
            return Ok(Duration(0));
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
            if num_end == 0 {
                return Err(bad());
            }
            let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
            rest = &rest[num_end..];
            let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
            let scale = match &rest[..unit_end] {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(bad()),
            };
            total += value * scale;
            rest = &rest[unit_end..];
        }
        let nanos = total.round() as i64;
        Ok(Duration(if neg { -nanos } else { nanos }))
    }
}

impl fmt::Display for Duration {
    /// Go's `time.Duration.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d == 0 {
            return f.write_str("0s");
        }
        let sign = if d < 0 { "-" } else { "" };
        let u = d.unsigned_abs();
        if u < 1_000_000_000 {
            // Below a second: the largest unit that keeps the value >= 1.
            let (unit, div) = if u < 1_000 {
                ("ns", 1)
            } else if u < 1_000_000 {
                ("µs", 1_000)
            } else {
                ("ms", 1_000_000)
            };
            return write!(f, "{sign}{}{unit}", frac(u, div));
        }
        let hours = u / 3_600_000_000_000;
        let minutes = (u / 60_000_000_000) % 60;
        let secs = u % 60_000_000_000;
        let s = frac(secs, 1_000_000_000);
        if hours > 0 {
            write!(f, "{sign}{hours}h{minutes}m{s}s")
        } else if minutes > 0 {
            write!(f, "{sign}{minutes}m{s}s")
        } else {
            write!(f, "{sign}{s}s")
        }
    }
}

/// `value / div` with the fraction's trailing zeros dropped (`1500, 1000` → `1.5`).
fn frac(value: u64, div: u64) -> String {
    let whole = value / div;
    let rem = value % div;
    if rem == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s or 1m30s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                Duration::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Ok(Duration(v.saturating_mul(1_000_000_000)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                self.visit_i64(v as i64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Ok(Duration((v * 1e9).round() as i64))
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes. Parses `1024`, `50M`, `1kb`, `2g`, `1.5GiB` (binary units, as docker's
/// `RAMInBytes`); prints as a decimal string, as compose-go's `UnitBytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub i64);

impl Bytes {
    /// Parses a size with an optional unit.
    pub fn parse(text: &str) -> Result<Bytes, UnitError> {
        let bad = || UnitError::Size(text.to_string());
        let s = text.trim();
        let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let value: f64 = num.parse().map_err(|_| bad())?;
        let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "k" | "kb" | "kib" => 1024.0,
            "m" | "mb" | "mib" => 1024.0 * 1024.0,
            "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
            "t" | "tb" | "tib" => 1024f64.powi(4),
            "p" | "pb" | "pib" => 1024f64.powi(5),
            _ => return Err(bad()),
        };
        Ok(Bytes((value * scale) as i64))
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 512, 64k or 50M")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                Bytes::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bytes, E> {
                Ok(Bytes(v as i64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Bytes, E> {
                Ok(Bytes(v as i64))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_like_go() {
        for (input, printed) in [
            ("30s", "30s"),
            ("1m30s", "1m30s"),
            ("1m", "1m0s"),
            ("500ms", "500ms"),
            ("1h", "1h0m0s"),
            ("1.5s", "1.5s"),
            ("2h45m", "2h45m0s"),
            ("10us", "10µs"),
            ("0", "0s"),
            ("1m30.25s", "1m30.25s"),
        ] {
            assert_eq!(Duration::parse(input).map(|d| d.to_string()), Ok(printed.to_string()), "{input}");
        }
        assert!(Duration::parse("10x").is_err());
        assert!(Duration::parse("s").is_err());
        assert!(Duration::parse("").is_err());
    }

    #[test]
    fn sizes_parse_binary_units() {
        assert_eq!(Bytes::parse("50M"), Ok(Bytes(52_428_800)));
        assert_eq!(Bytes::parse("1kb"), Ok(Bytes(1024)));
        assert_eq!(Bytes::parse("2g"), Ok(Bytes(2 * 1024 * 1024 * 1024)));
        assert_eq!(Bytes::parse("512"), Ok(Bytes(512)));
        assert!(Bytes::parse("12q").is_err());
        assert_eq!(serde_json::to_string(&Bytes(1024)).ok().as_deref(), Some("\"1024\""));
    }
}
