//! `image save`, `image tag` and `image history`: what docker's commands of those names do, on
//! berth's store.
//!
//! `save` writes the archive docker 25+ writes: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/...`) that also carries docker's `manifest.json` and
//! `repositories`, so that `docker load` (old and new), `skopeo` (`docker-archive:` and
//! `oci-archive:`) and our own `image load` all read it. Layers are written uncompressed, named
//! by their diff id, as `docker save` does.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use serde_json::{Value, json};

use super::{ImageError, ImageStore, Reference, digest_of, hex_part, io_at, unpack};

type Result<T> = std::result::Result<T, ImageError>;

/// One row of `image history`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HistoryRow {
    /// The image id for the newest row, `<missing>` for the others (as docker prints them).
    #[serde(rename = "ID")]
    pub id: String,
    /// When the step ran (RFC 3339).
    #[serde(rename = "CreatedAt")]
    pub created: String,
    /// The instruction.
    #[serde(rename = "CreatedBy")]
    pub created_by: String,
    /// Bytes of the layer the step made (0 for steps without a layer).
    #[serde(rename = "Size")]
    pub size: u64,
    /// The comment.
    #[serde(rename = "Comment")]
    pub comment: String,
}

/// Bytes of the files in an unpacked layer (what docker shows as a layer's size).
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

impl ImageStore {
    /// `image tag SRC DST`: gives image `source` (name or id) the name `target` (taken from any
    /// image that had it).
    pub fn tag(&self, source: &str, target: &str) -> Result<String> {
        let target = Reference::parse(target)?;
        let _lock = self.lock()?;
        let (entries, i, _) = self.find(source)?;
        let e = &entries[i];
        let path = self.blob(&e.manifest_digest);
        let size = fs::metadata(&path).map_err(io_at(&path))?.len();
        self.add_manifest(e.manifest_digest.as_str(), size, std::slice::from_ref(&target))?;
        Ok(e.id())
    }

    /// When the name `reference` was last given to an image (pull, build, tag, load), if known.
    pub fn tagged_at(&self, reference: &str) -> Option<std::time::SystemTime> {
        let full = Reference::parse(reference).ok()?.full();
        let index = self.read_index().ok()?;
        index.manifests.iter().find_map(|d| {
            (d.name() == Some(full.as_str()))
                .then(|| {
                    d.annotations
                        .get(super::TAGGED_AT)
                        .and_then(|t| crate::runtime::timefmt::parse_rfc3339(t))
                })
                .flatten()
        })
    }

    /// `image history`: one row per history entry of the config, newest first.
    pub fn history(&self, reference: &str) -> Result<Vec<HistoryRow>> {
        let (entries, i, _) = self.find(reference)?;
        let e = &entries[i];
        let chains = super::chain_digests(&e.diff_ids);
        let mut layer = 0;
        let mut rows = Vec::new();
        for h in e.config.history().clone().unwrap_or_default() {
            let empty = h.empty_layer().unwrap_or(false);
            let size = if empty {
                0
            } else {
                let s = chains.get(layer).map(|c| dir_size(&self.layer(c))).unwrap_or(0);
                layer += 1;
                s
            };
            rows.push(HistoryRow {
                id: "<missing>".into(),
                created: h.created().clone().unwrap_or_default(),
                created_by: h.created_by().clone().unwrap_or_default(),
                size,
                comment: h.comment().clone().unwrap_or_default(),
            });
        }
        // An image without history (an import of old) still shows its layers.
        if rows.is_empty() {
            for c in &chains {
                rows.push(HistoryRow {
                    id: "<missing>".into(),
                    created: e.config.created().clone().unwrap_or_default(),
                    created_by: String::new(),
                    size: dir_size(&self.layer(c)),
                    comment: String::new(),
                });
            }
        }
        rows.reverse();
        if let Some(first) = rows.first_mut() {
            first.id = e.id();
        }
        Ok(rows)
    }

    /// `image save`: writes the images `references` to `out` as one archive. Images given by
    /// id are saved without names, as docker does.
    pub fn save(&self, references: &[String], out: &mut dyn Write) -> Result<()> {
        let entries = self.entries()?;
        let mut chosen: Vec<(usize, Vec<Reference>)> = Vec::new();
        for r in references {
            let (_, i, by_name) = self.find(r)?;
            let names: Vec<Reference> = by_name.into_iter().collect();
            match chosen.iter_mut().find(|(j, _)| *j == i) {
                Some((_, n)) => {
                    for x in names {
                        if !n.contains(&x) {
                            n.push(x);
                        }
                    }
                }
                None => chosen.push((i, names)),
            }
        }
        let staging = self.staging()?;
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        // Folders first, as docker writes them: readers that unpack in order need them.
        for dir in ["blobs/", "blobs/sha256/"] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            tar.append_data(&mut h, dir, io::empty()).map_err(io_at(Path::new(dir)))?;
        }
        let mut written: BTreeMap<String, u64> = BTreeMap::new();
        let mut docker_manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut index = Vec::new();
        for (i, names) in &chosen {
            let e = &entries[*i];
            let config_digest = e.id();
            let config_path = self.blob(&e.config_digest);
            let config_bytes = fs::read(&config_path).map_err(io_at(&config_path))?;
            add_blob(&mut tar, &mut written, &config_digest, &config_bytes)?;
            let mut layer_names = Vec::new();
            let mut layer_descs = Vec::new();
            for (layer, diff_id) in e.layers.iter().zip(e.diff_ids.iter()) {
                let blob = self.blob(layer);
                // docker save writes layers uncompressed; decompress to a staging file so that
                // the tar header can carry its size, and check it against the diff id.
                let plain = staging.path().join(diff_id.hex());
                if !written.contains_key(diff_id.as_str()) {
                    let f = fs::File::open(&blob).map_err(io_at(&blob))?;
                    let (_, mut reader) = unpack::decompressed(f).map_err(io_at(&blob))?;
                    let mut file = fs::File::create(&plain).map_err(io_at(&plain))?;
                    let mut hashing = unpack::HashingReader::new(&mut reader);
                    io::copy(&mut hashing, &mut file).map_err(io_at(&blob))?;
                    let got = hashing.finish().map_err(io_at(&blob))?;
                    if *diff_id != got.as_str() {
                        return Err(ImageError::Invalid {
                            source_name: blob.display().to_string(),
                            message: format!("layer's diff id is {got}, the config says {diff_id}"),
                            cause: None,
                        });
                    }
                    let size = fs::metadata(&plain).map_err(io_at(&plain))?.len();
                    let f = fs::File::open(&plain).map_err(io_at(&plain))?;
                    append(&mut tar, &format!("blobs/sha256/{}", diff_id.hex()), size, f)?;
                    written.insert(diff_id.to_string(), size);
                    let _ = fs::remove_file(&plain);
                }
                let size = written.get(diff_id.as_str()).copied().unwrap_or(0);
                layer_names.push(format!("blobs/sha256/{}", diff_id.hex()));
                layer_descs.push(json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": diff_id,
                    "size": size,
                }));
            }
            let manifest = super::oci_manifest(&config_digest, config_bytes.len(), layer_descs);
            let manifest_bytes = serde_json::to_vec(&manifest)
                .map_err(|e| io_at(Path::new("manifest"))(io::Error::other(e)))?;
            let manifest_digest = digest_of(&manifest_bytes);
            add_blob(&mut tar, &mut written, &manifest_digest, &manifest_bytes)?;
            let tags: Vec<String> = names.iter().map(Reference::short).collect();
            docker_manifest.push(json!({
                "Config": format!("blobs/sha256/{}", hex_part(&config_digest)),
                "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
                "Layers": layer_names,
            }));
            let top = layer_names
                .last()
                .map(|l| l.trim_start_matches("blobs/sha256/").to_string())
                .unwrap_or_default();
            for n in names {
                repositories.entry(n.short_repository()).or_default().insert(n.tag.clone(), top.clone());
            }
            let mut desc = json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_bytes.len(),
            });
            if let Some(n) = names.first() {
                desc["annotations"] = json!({
                    "io.containerd.image.name": n.full(),
                    super::REF_NAME: n.tag,
                });
            }
            index.push(desc);
        }
        let files: [(&str, Value); 4] = [
            ("oci-layout", json!({ "imageLayoutVersion": "1.0.0" })),
            (
                "index.json",
                json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index }),
            ),
            ("manifest.json", json!(docker_manifest)),
            ("repositories", json!(repositories)),
        ];
        for (name, v) in files {
            if name == "repositories" && repositories.is_empty() {
                continue;
            }
            let bytes = serde_json::to_vec(&v).map_err(|e| io_at(Path::new(name))(io::Error::other(e)))?;
            append(&mut tar, name, bytes.len() as u64, &bytes[..])?;
        }
        tar.finish().map_err(io_at(Path::new("archive")))?;
        Ok(())
    }
}

fn append(tar: &mut tar::Builder<&mut dyn Write>, name: &str, size: u64, data: impl Read) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, name, data).map_err(io_at(Path::new(name)))
}

fn add_blob(
    tar: &mut tar::Builder<&mut dyn Write>,
    written: &mut BTreeMap<String, u64>,
    digest: &str,
    bytes: &[u8],
) -> Result<()> {
    if written.insert(digest.to_string(), bytes.len() as u64).is_some() {
        return Ok(());
    }
    append(tar, &format!("blobs/sha256/{}", hex_part(digest)), bytes.len() as u64, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every header must carry numeric owner fields: readers (ours among them) refuse empty ones.
    #[test]
    fn saved_entries_unpack() {
        let mut buf = Vec::new();
        {
            let w: &mut dyn Write = &mut buf;
            let mut tar = tar::Builder::new(w);
            append(&mut tar, "oci-layout", 2, &b"{}"[..]).unwrap();
            tar.finish().unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        unpack::unpack(&buf[..], dir.path()).unwrap();
        assert_eq!(fs::read(dir.path().join("oci-layout")).unwrap(), b"{}");
    }
}
