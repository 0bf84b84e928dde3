//! Decoders that accept what interpolation produces: numbers and booleans written as strings
//! (`replicas: ${N}` gives `"3"`), as compose-go's type casts after interpolation do.

use serde::Deserialize;
use serde::de::{self, Deserializer};

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

fn raw_to_i64<E: de::Error>(raw: Raw) -> Result<i64, E> {
    match raw {
        Raw::Int(i) => Ok(i),
        Raw::Float(f) if f.fract() == 0.0 => Ok(f as i64),
        Raw::Str(s) => s.trim().parse().map_err(|_| E::custom(format!("expected an integer, got {s:?}"))),
        Raw::Bool(b) => Err(E::custom(format!("expected an integer, got {b}"))),
        Raw::Float(f) => Err(E::custom(format!("expected an integer, got {f}"))),
    }
}

/// An optional integer, from a number or a numeric string.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(raw) => raw_to_i64(raw).map(Some),
    }
}

/// An optional float, from a number or a numeric string.
pub fn opt_f32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Int(i)) => Ok(Some(i as f32)),
        Some(Raw::Float(f)) => Ok(Some(f as f32)),
        Some(Raw::Str(s)) => {
            s.trim().parse().map(Some).map_err(|_| de::Error::custom(format!("expected a number, got {s:?}")))
        }
        Some(Raw::Bool(b)) => Err(de::Error::custom(format!("expected a number, got {b}"))),
    }
}

/// A boolean, from `true`/`false` or their string forms; missing is false.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    opt_bool(d).map(|b| b.unwrap_or(false))
}

/// An optional boolean, from `true`/`false` or their string forms.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Bool(b)) => Ok(Some(b)),
        Some(Raw::Str(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "1" => Ok(Some(true)),
            "false" | "no" | "n" | "off" | "0" => Ok(Some(false)),
            _ => Err(de::Error::custom(format!("expected true or false, got {s:?}"))),
        },
        Some(other) => Err(de::Error::custom(format!("expected true or false, got {}", describe(&other)))),
    }
}

/// An optional string, from any scalar (numbers as their text).
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::Bool(b) => b.to_string(),
        Raw::Int(i) => i.to_string(),
        Raw::Float(f) => crate::compose::node::format_float(f),
        Raw::Str(s) => s,
    }))
}

/// An optional file mode, from a number or an octal string (`"0440"`).
pub fn opt_mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Int(i)) => {
            u32::try_from(i).map(Some).map_err(|_| de::Error::custom(format!("invalid mode {i}")))
        }
        Some(Raw::Str(s)) => u32::from_str_radix(s.trim_start_matches("0o"), 8).map(Some).map_err(|_| {
            de::Error::custom(format!("invalid mode {s:?}: expected an octal number such as 0440"))
        }),
        Some(other) => Err(de::Error::custom(format!("invalid mode {}", describe(&other)))),
    }
}

fn describe(raw: &Raw) -> String {
    match raw {
        Raw::Bool(b) => b.to_string(),
        Raw::Int(i) => i.to_string(),
        Raw::Float(f) => f.to_string(),
        Raw::Str(s) => format!("{s:?}"),
    }
}
