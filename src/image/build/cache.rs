//! The build cache under `<root>/build-cache/`: a key per step, and records from key to what the
//! step made.
//!
//! A step's key is the sha256 of its parent's key and a JSON description of the step: the
//! instruction as expanded, with what it runs in (env, used ARGs, user, workdir, shell, mounts,
//! network) and, for COPY/ADD and bind mounts of the context, a hash of the content read. The
//! first key of a stage is its base (an image id, or `scratch`). Metadata instructions change
//! the key too, so that a later step reruns when the config it runs with changed.
//!
//! Records (`records/<key>.json`) name the layer a step made (diff id, blob, chain id), or say
//! that it made no change. The image store's `gc` keeps every blob and unpacked layer a record
//! lists ([`referenced`]), so a cache outlives the images built from it; `cache prune` (not
//! yet) would remove records. Cache mounts (`RUN --mount=type=cache`) live in `mounts/`, the
//! downloads of `ADD <url>` kept for ETag reuse in `http/` ([`super::downloads`]).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::write_atomic;

/// What a cached step made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The layer, or `None` when the step changed no file.
    pub layer: Option<CachedLayer>,
    /// When the step first ran (kept in history, so that a cached rebuild gives the same id).
    pub created: String,
}

/// A layer a step made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLayer {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// The gzip blob's digest.
    pub blob: String,
    /// The blob's size.
    pub size: u64,
    /// The chain id of the layer on its parents (names the unpacked dir).
    pub chain: String,
}

/// The cache of one root.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

fn hex_part(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

impl Cache {
    /// The cache at `<root>/build-cache` (made when missing).
    pub fn open(root: &Path) -> std::io::Result<Cache> {
        let dir = root.join("build-cache");
        fs::create_dir_all(dir.join("records"))?;
        fs::create_dir_all(dir.join("mounts"))?;
        Ok(Cache { dir })
    }

    /// The record of `key`, if any and readable.
    pub fn get(&self, key: &str) -> Option<CacheRecord> {
        let bytes = fs::read(self.dir.join("records").join(format!("{}.json", hex_part(key)))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records what step `key` made.
    pub fn put(&self, key: &str, record: &CacheRecord) -> Result<(), crate::state::StateError> {
        let path = self.dir.join("records").join(format!("{}.json", hex_part(key)));
        let bytes = serde_json::to_vec(record)
            .map_err(|source| crate::state::StateError::Json { path: path.clone(), source })?;
        write_atomic(&path, &bytes)
    }

    /// The downloads of `ADD <url>` kept for reuse by ETag (`http/`, see [`super::downloads`];
    /// [`prune_downloads`] cleans them).
    pub fn downloads(&self) -> super::downloads::Downloads {
        super::downloads::Downloads::new(self.dir.join("http"))
    }

    /// The persistent dir of cache mount `id` (not made here).
    pub fn mount_dir(&self, id: &str) -> PathBuf {
        self.dir.join("mounts").join(&crate::image::digest_of(id.as_bytes())[7..31])
    }
}

/// The key of a step: sha256 of the parent key and the step's description.
pub fn step_key(parent: &str, step: &Value) -> String {
    let text = format!("{parent}\n{step}");
    crate::image::digest_of(text.as_bytes())
}

/// `image prune`'s part of the build cache under `root`: the leftovers of killed writes of
/// kept downloads, and with `all` every kept download (`ADD <url>` downloads them again, by
/// ETag no more). Returns the bytes freed.
pub fn prune_downloads(root: &Path, all: bool) -> u64 {
    super::downloads::Downloads::new(root.join("build-cache/http")).prune(all)
}

/// Blobs (hex digests) and unpacked layers (chain id hex) that cache records under `root`
/// list, for the store's gc to keep.
pub fn referenced(root: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut blobs = BTreeSet::new();
    let mut layers = BTreeSet::new();
    let Ok(rd) = fs::read_dir(root.join("build-cache/records")) else { return (blobs, layers) };
    for e in rd.flatten() {
        let Ok(bytes) = fs::read(e.path()) else { continue };
        let Ok(rec) = serde_json::from_slice::<CacheRecord>(&bytes) else { continue };
        if let Some(l) = rec.layer {
            blobs.insert(hex_part(&l.blob).to_string());
            layers.insert(hex_part(&l.chain).to_string());
        }
    }
    (blobs, layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_change_only_with_their_inputs() {
        let a = step_key("sha256:base", &json!({"run": "make", "env": ["A=1"]}));
        assert_eq!(a, step_key("sha256:base", &json!({"run": "make", "env": ["A=1"]})));
        assert_ne!(a, step_key("sha256:base", &json!({"run": "make", "env": ["A=2"]})));
        assert_ne!(a, step_key("sha256:other", &json!({"run": "make", "env": ["A=1"]})));
    }

    #[test]
    fn records_round_trip_and_are_listed_for_gc() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let c = Cache::open(dir.path()).unwrap();
        assert!(c.get("sha256:k").is_none());
        let rec = CacheRecord {
            layer: Some(CachedLayer {
                diff_id: "sha256:d".into(),
                blob: "sha256:b".into(),
                size: 3,
                chain: "sha256:c".into(),
            }),
            created: "t".into(),
        };
        c.put("sha256:k", &rec).unwrap();
        assert_eq!(c.get("sha256:k"), Some(rec));
        let (blobs, layers) = referenced(dir.path());
        assert!(blobs.contains("b") && layers.contains("c"));
    }
}
