//! The one digest form the store accepts: `sha256:` and 64 lowercase hex digits. Every digest
//! that becomes a path under the store (a blob, an unpacked layer) is parsed into a [`Digest`]
//! first, so that no record (`index.json`, a manifest, a config, an archive) can name a file
//! outside it.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A string that is not a `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a sha256 digest (sha256: and 64 lowercase hex digits)")]
pub struct BadDigest(pub String);

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// Parses `text`, refusing anything but `sha256:` and 64 lowercase hex digits.
    pub fn parse(text: &str) -> Result<Digest, BadDigest> {
        let hex = text.strip_prefix("sha256:").ok_or_else(|| BadDigest(text.to_string()))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(BadDigest(text.to_string()));
        }
        Ok(Digest(text.to_string()))
    }

    /// Parses every digest of a list (a manifest's layers, a config's diff ids); the first bad
    /// one is the error.
    pub fn parse_all<'a>(texts: impl IntoIterator<Item = &'a str>) -> Result<Vec<Digest>, BadDigest> {
        texts.into_iter().map(Digest::parse).collect()
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits: a file name that cannot leave its dir.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Digest, BadDigest> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_with_64_lowercase_hex_parses() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().hex(), "a".repeat(64));
        for bad in [
            "sha256:../../x".to_string(),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:{}/", "a".repeat(63)),
            format!("sha512:{}", "a".repeat(64)),
            "a".repeat(64),
            String::new(),
        ] {
            assert!(Digest::parse(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(Digest::of(b""), Digest::parse(&crate::image::digest_of(b"")).unwrap());
        let parsed: Result<Digest, _> = serde_json::from_str("\"sha256:../../etc/passwd\"");
        assert!(parsed.is_err());
    }
}
