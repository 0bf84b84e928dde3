//! `image load`: docker-archive (`docker save`, both its classic layout and the OCI layout that
//! newer docker writes) and OCI archives, several images per archive, layers plain, gzip or
//! zstd. Every blob's digest and every layer's diff id is checked; a bad archive stores nothing.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ImageError, ImageStore, Reference, digest_of, io_at, unpack};

type Result<T> = std::result::Result<T, ImageError>;

/// One image an archive held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// `sha256:...`.
    pub id: String,
    /// Short names it was given.
    pub names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Loads every image of the archive `reader` (named `source` in errors).
pub fn load(store: &ImageStore, reader: &mut dyn Read, source: &str) -> Result<Vec<LoadedImage>> {
    let _lock = store.lock()?;
    let staging = store.staging()?;
    let result = load_staged(store, reader, source, staging.path());
    if result.is_err() {
        // Whatever got stored before the failure is referenced by nothing: collect it.
        let _ = store.gc();
    }
    result
}

fn invalid(source: &str, message: impl Into<String>) -> ImageError {
    ImageError::Invalid { source_name: source.to_string(), message: message.into() }
}

fn load_staged(
    store: &ImageStore,
    reader: &mut dyn Read,
    source: &str,
    staging: &Path,
) -> Result<Vec<LoadedImage>> {
    let (_, plain) = unpack::decompressed(reader).map_err(|e| invalid(source, e.to_string()))?;
    unpack::unpack(plain, staging).map_err(|e| invalid(source, format!("not a valid image archive: {e}")))?;
    if staging.join("manifest.json").is_file() {
        load_docker(store, source, staging)
    } else if staging.join("index.json").is_file() {
        load_oci(store, source, staging)
    } else {
        Err(invalid(source, "neither a docker archive (manifest.json) nor an OCI layout (index.json)"))
    }
}

/// A path inside the staging dir named by the archive, refused if it leaves it.
fn inside(staging: &Path, source: &str, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(invalid(source, format!("{name:?} points outside the archive")));
    }
    let path = staging.join(rel);
    if !path.is_file() {
        return Err(invalid(source, format!("{name} is missing from the archive")));
    }
    Ok(path)
}

/// The digest a file name carries (`blobs/sha256/<hex>`, `<hex>.json`, `<hex>/layer.tar`).
fn digest_in_name(name: &str) -> Option<String> {
    let candidates =
        [name.strip_prefix("blobs/sha256/"), name.strip_suffix(".json"), name.strip_suffix("/layer.tar")];
    candidates
        .into_iter()
        .flatten()
        .find(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .map(|h| format!("sha256:{h}"))
}

fn parse_config(bytes: &[u8], source: &str, name: &str) -> Result<ImageConfiguration> {
    serde_json::from_slice(bytes).map_err(|e| invalid(source, format!("{name}: not an image config: {e}")))
}

/// Stores layers and their unpacked dirs; returns the layer descriptors of the manifest.
fn store_layers(
    store: &ImageStore,
    source: &str,
    files: &[(PathBuf, Option<String>)],
    config: &ImageConfiguration,
) -> Result<Vec<Value>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != files.len() {
        return Err(invalid(
            source,
            format!("the config lists {} layers, the manifest {}", diff_ids.len(), files.len()),
        ));
    }
    let mut parent: Option<String> = None;
    let mut descriptors = Vec::new();
    for ((file, expected), diff_id) in files.iter().zip(diff_ids) {
        let mut head = std::io::BufReader::new(fs::File::open(file).map_err(io_at(file))?);
        let kind = unpack::detect(&mut head).map_err(io_at(file))?;
        let (digest, size) = store.put_blob_file(file, expected.as_deref(), source)?;
        let (_, chain) = store.ensure_layer(&digest, parent.as_deref(), Some(diff_id), source)?;
        parent = Some(chain);
        descriptors.push(json!({ "mediaType": kind.layer_media_type(), "digest": digest, "size": size }));
    }
    Ok(descriptors)
}

fn record(
    store: &ImageStore,
    config_bytes: &[u8],
    layers: Vec<Value>,
    names: &[Reference],
) -> Result<LoadedImage> {
    let config_digest = store.put_blob(config_bytes)?;
    let manifest = super::oci_manifest(&config_digest, config_bytes.len(), layers);
    let bytes = serde_json::to_vec(&manifest).map_err(|e| invalid("manifest", e.to_string()))?;
    serde_json::from_slice::<ImageManifest>(&bytes).map_err(|e| invalid("manifest", e.to_string()))?;
    let manifest_digest = store.put_blob(&bytes)?;
    store.add_manifest(&manifest_digest, bytes.len() as u64, names)?;
    Ok(LoadedImage { id: config_digest, names: names.iter().map(Reference::short).collect() })
}

fn load_docker(store: &ImageStore, source: &str, staging: &Path) -> Result<Vec<LoadedImage>> {
    let path = staging.join("manifest.json");
    let text = fs::read(&path).map_err(io_at(&path))?;
    let manifests: Vec<DockerManifest> =
        serde_json::from_slice(&text).map_err(|e| invalid(source, format!("manifest.json: {e}")))?;
    if manifests.is_empty() {
        return Err(invalid(source, "manifest.json lists no image"));
    }
    let mut loaded = Vec::new();
    for m in manifests {
        let config_path = inside(staging, source, &m.config)?;
        let config_bytes = fs::read(&config_path).map_err(io_at(&config_path))?;
        if let Some(want) = digest_in_name(&m.config)
            && want != digest_of(&config_bytes)
        {
            return Err(invalid(source, format!("{}: content does not match its digest", m.config)));
        }
        let config = parse_config(&config_bytes, source, &m.config)?;
        let mut files = Vec::new();
        for layer in &m.layers {
            files.push((
                inside(staging, source, layer)?,
                digest_in_name(layer).filter(|_| layer.starts_with("blobs/")),
            ));
        }
        let names = m
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let layers = store_layers(store, source, &files, &config)?;
        loaded.push(record(store, &config_bytes, layers, &names)?);
    }
    Ok(loaded)
}

fn load_oci(store: &ImageStore, source: &str, staging: &Path) -> Result<Vec<LoadedImage>> {
    let mut loaded = Vec::new();
    let index_path = staging.join("index.json");
    let index: Value = serde_json::from_slice(&fs::read(&index_path).map_err(io_at(&index_path))?)
        .map_err(|e| invalid(source, format!("index.json: {e}")))?;
    let mut pending: Vec<(Value, Option<String>)> =
        index["manifests"].as_array().cloned().unwrap_or_default().into_iter().map(|d| (d, None)).collect();
    if pending.is_empty() {
        return Err(invalid(source, "index.json lists no manifest"));
    }
    while let Some((desc, inherited_name)) = pending.pop() {
        let digest = desc["digest"].as_str().ok_or_else(|| invalid(source, "a descriptor has no digest"))?;
        let blob_name = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap_or(digest));
        let path = inside(staging, source, &blob_name)?;
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        if digest_of(&bytes) != digest {
            return Err(invalid(source, format!("{blob_name}: content does not match its digest")));
        }
        let annotations = &desc["annotations"];
        let name = annotations["io.containerd.image.name"]
            .as_str()
            .or(annotations[super::REF_NAME].as_str().filter(|n| n.contains(':') || n.contains('/')))
            .map(str::to_string)
            .or(inherited_name);
        let doc: Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid(source, format!("{blob_name}: {e}")))?;
        let media = desc["mediaType"].as_str().or(doc["mediaType"].as_str()).unwrap_or_default();
        if media.contains("index") || media.contains("manifest.list") {
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            };
            for d in doc["manifests"].as_array().into_iter().flatten() {
                let platform_arch = d["platform"]["architecture"].as_str();
                if platform_arch.is_none_or(|a| a == arch) {
                    pending.push((d.clone(), name.clone()));
                }
            }
            continue;
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(source, format!("{blob_name}: not a manifest: {e}")))?;
        let config_digest = manifest.config().digest().to_string();
        let config_name = format!("blobs/sha256/{}", config_digest.trim_start_matches("sha256:"));
        let config_path = inside(staging, source, &config_name)?;
        let config_bytes = fs::read(&config_path).map_err(io_at(&config_path))?;
        if digest_of(&config_bytes) != config_digest {
            return Err(invalid(source, format!("{config_name}: content does not match its digest")));
        }
        let config = parse_config(&config_bytes, source, &config_name)?;
        let mut files = Vec::new();
        for l in manifest.layers() {
            let d = l.digest().to_string();
            let n = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
            files.push((inside(staging, source, &n)?, Some(d)));
        }
        let names = match &name {
            Some(n) => vec![Reference::parse(n)?],
            None => Vec::new(),
        };
        let layers = store_layers(store, source, &files, &config)?;
        loaded.push(record(store, &config_bytes, layers, &names)?);
    }
    loaded.reverse();
    Ok(loaded)
}
