//! The local image store: an OCI image layout under `<root>/images` (content-addressed blobs,
//! `index.json` naming manifests), with each layer unpacked once per chain id under
//! `layers/<chain id>` and shared by every image and container that uses it.

pub mod build;
pub mod events;
pub mod import;
pub mod load;
pub mod reference;
pub mod registry;
pub mod save;
pub mod unpack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub use reference::Reference;

use crate::state::{Dirs, Lock, write_atomic};

/// The annotation that names a manifest in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The annotation (of a name in `index.json`) telling when the name was last given.
pub const TAGGED_AT: &str = "dev.berth.image.tagged-at";

/// Failures of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A file of the store or an input could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// No image matches.
    #[error("no such image: {0}")]
    NotFound(String),
    /// An id prefix matches several images.
    #[error("image id prefix {0} is ambiguous")]
    Ambiguous(String),
    /// A bad image name.
    #[error(transparent)]
    Reference(#[from] reference::BadReference),
    /// An archive, layer or config is not what it claims.
    #[error("{source_name}: {message}")]
    Invalid {
        /// The archive or file.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// An image that containers use.
    #[error("image {image} is used by container {container}; remove the container or use --force")]
    InUse {
        /// The image.
        image: String,
        /// A container using it.
        container: String,
    },
    /// A state record failed.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

type Result<T> = std::result::Result<T, ImageError>;

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.display().to_string(), source }
}

/// An image, resolved for the runtime.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// `sha256:<config digest>` (docker's image id).
    pub id: String,
    /// Short names (`busybox:latest`).
    pub names: Vec<String>,
    /// The image configuration.
    pub config: ImageConfiguration,
    /// Unpacked layers, bottom first.
    pub layer_dirs: Vec<PathBuf>,
}

/// One image as `image ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImageSummary {
    /// Repository (`<none>` when untagged).
    #[serde(rename = "Repository")]
    pub repository: String,
    /// Tag (`<none>` when untagged).
    #[serde(rename = "Tag")]
    pub tag: String,
    /// Full id.
    #[serde(rename = "ID")]
    pub id: String,
    /// When the image was made.
    #[serde(rename = "CreatedAt")]
    pub created: String,
    /// Bytes of its layer blobs.
    #[serde(rename = "Size")]
    pub size: u64,
}

/// An image `prune` removed: its id and the names it had.
pub type PrunedImage = (String, Vec<String>);

/// One image of the store: a manifest with its names.
#[derive(Debug, Clone)]
struct Entry {
    manifest_digest: String,
    names: Vec<Reference>,
    manifest: ImageManifest,
    config: ImageConfiguration,
}

impl Entry {
    fn id(&self) -> String {
        self.manifest.config().digest().to_string()
    }
}

/// An OCI image manifest of a config blob and layer descriptors (every writer of images uses
/// this one shape: import, load, save, build).
pub(crate) fn oci_manifest(config_digest: &str, config_size: usize, layers: Vec<Value>) -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": layers,
    })
}

/// `sha256:<hex>` of bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Chain ids of a layer stack from its diff ids (OCI image spec).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => digest_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

fn hex_part(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The image store at `<root>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    containers: PathBuf,
}

impl ImageStore {
    /// Opens (creating when missing) the store.
    pub fn open(dirs: &Dirs) -> Result<ImageStore> {
        let dir = dirs.images();
        for d in [dir.join("blobs/sha256"), dir.join("layers")] {
            fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(ImageStore { dir, containers: dirs.containers() })
    }

    /// Takes the store's lock (every change holds it).
    pub fn lock(&self) -> Result<Lock> {
        Ok(Lock::acquire(&self.dir.join("lock"))?)
    }

    /// Path of a blob.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex_part(digest))
    }

    /// Path of an unpacked layer.
    pub fn layer_path(&self, chain_id: &str) -> PathBuf {
        self.dir.join("layers").join(hex_part(chain_id))
    }

    fn read_index(&self) -> Result<Value> {
        let path = self.dir.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid {
                source_name: path.display().to_string(),
                message: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(
                json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [] }),
            ),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    fn write_index(&self, index: &Value) -> Result<()> {
        // Round-trip through the OCI type so that only a valid index is ever written.
        let text = serde_json::to_vec_pretty(index).map_err(io::Error::other).map_err(io_at(&self.dir))?;
        serde_json::from_slice::<ImageIndex>(&text)
            .map_err(|e| ImageError::Invalid { source_name: "index.json".into(), message: e.to_string() })?;
        Ok(write_atomic(&self.dir.join("index.json"), &text)?)
    }

    /// Stores bytes as a blob; returns the digest.
    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = digest_of(bytes);
        let path = self.blob_path(&digest);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(digest)
    }

    /// Moves or copies a file into the blobs, verifying `expected` when given.
    pub(crate) fn put_blob_file(
        &self,
        file: &Path,
        expected: Option<&str>,
        source: &str,
    ) -> Result<(String, u64)> {
        let mut f = fs::File::open(file).map_err(io_at(file))?;
        let mut hashing = unpack::HashingReader::new(&mut f);
        let size = io::copy(&mut hashing, &mut io::sink()).map_err(io_at(file))?;
        let digest = hashing.finish().map_err(io_at(file))?;
        if let Some(want) = expected
            && want != digest
        {
            return Err(ImageError::Invalid {
                source_name: source.to_string(),
                message: format!("{}: digest is {digest}, expected {want}", file.display()),
            });
        }
        let dest = self.blob_path(&digest);
        // A hard link leaves the staged file for a second image of the same archive.
        if !dest.exists() && fs::hard_link(file, &dest).is_err() {
            let tmp = dest.with_extension("tmp");
            fs::copy(file, &tmp).map_err(io_at(&tmp))?;
            fs::rename(&tmp, &dest).map_err(io_at(&dest))?;
        }
        Ok((digest, size))
    }

    /// Unpacks layer blob `blob` on top of `parent_chain` unless that chain is unpacked already.
    /// Verifies the diff id against `expected_diff_id` when given. Returns (diff id, chain id).
    pub(crate) fn ensure_layer(
        &self,
        blob: &str,
        parent_chain: Option<&str>,
        expected_diff_id: Option<&str>,
        source: &str,
    ) -> Result<(String, String)> {
        let chain_for = |diff: &str| match parent_chain {
            None => diff.to_string(),
            Some(p) => digest_of(format!("{p} {diff}").as_bytes()),
        };
        if let Some(want) = expected_diff_id
            && self.layer_path(&chain_for(want)).is_dir()
        {
            return Ok((want.to_string(), chain_for(want)));
        }
        let tmp = self.dir.join("layers").join(format!(".tmp-{}-{}", hex_part(blob), std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_at(&tmp))?;
        let result = (|| {
            let path = self.blob_path(blob);
            let file = fs::File::open(&path).map_err(io_at(&path))?;
            let (_, reader) = unpack::decompressed(file).map_err(io_at(&path))?;
            let diff_id = unpack::unpack(reader, &tmp).map_err(|e| ImageError::Invalid {
                source_name: source.to_string(),
                message: format!("layer {blob}: {e}"),
            })?;
            if let Some(want) = expected_diff_id
                && want != diff_id
            {
                return Err(ImageError::Invalid {
                    source_name: source.to_string(),
                    message: format!("layer {blob}: diff id is {diff_id}, the config says {want}"),
                });
            }
            let chain = chain_for(&diff_id);
            let dest = self.layer_path(&chain);
            if dest.exists() {
                let _ = fs::remove_dir_all(&tmp);
            } else {
                fs::rename(&tmp, &dest).map_err(io_at(&dest))?;
            }
            Ok((diff_id, chain))
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Records a manifest (already stored as a blob) under `names`, taking each name from any
    /// image that had it. An image without names is listed untagged.
    pub(crate) fn add_manifest(&self, manifest_digest: &str, size: u64, names: &[Reference]) -> Result<()> {
        self.add_manifest_typed(manifest_digest, size, "application/vnd.oci.image.manifest.v1+json", names)
    }

    /// As `add_manifest`, for a manifest of `media_type` (a pulled Docker schema 2 manifest is
    /// kept as it came, so that its digest stays the one the registry names).
    pub(crate) fn add_manifest_typed(
        &self,
        manifest_digest: &str,
        size: u64,
        media_type: &str,
        names: &[Reference],
    ) -> Result<()> {
        let mut index = self.read_index()?;
        let manifests = index["manifests"].as_array_mut().ok_or_else(|| ImageError::Invalid {
            source_name: "index.json".into(),
            message: "no manifests list".into(),
        })?;
        let full: BTreeSet<String> = names.iter().map(Reference::full).collect();
        manifests.retain(|d| {
            let name = d["annotations"][REF_NAME].as_str();
            let same_untagged = name.is_none() && d["digest"] == manifest_digest;
            !same_untagged && !name.is_some_and(|n| full.contains(n))
        });
        let desc = |name: Option<&String>| {
            let mut d = json!({
                "mediaType": media_type,
                "digest": manifest_digest,
                "size": size,
            });
            if let Some(n) = name {
                // When the name was given: `pull_policy: daily` and docker's LastTagTime read it.
                let now = crate::runtime::timefmt::rfc3339_nanos(std::time::SystemTime::now());
                d["annotations"] = json!({ REF_NAME: n, TAGGED_AT: now });
            }
            d
        };
        if full.is_empty() {
            if !manifests.iter().any(|d| d["digest"] == manifest_digest) {
                manifests.push(desc(None));
            }
        } else {
            for n in &full {
                manifests.push(desc(Some(n)));
            }
        }
        self.write_index(&index)
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        let index = self.read_index()?;
        let mut by_digest: BTreeMap<String, Vec<Reference>> = BTreeMap::new();
        let mut order = Vec::new();
        for d in index["manifests"].as_array().into_iter().flatten() {
            let Some(digest) = d["digest"].as_str() else { continue };
            if !by_digest.contains_key(digest) {
                order.push(digest.to_string());
            }
            let names = by_digest.entry(digest.to_string()).or_default();
            if let Some(n) = d["annotations"][REF_NAME].as_str()
                && let Ok(r) = Reference::parse(n)
            {
                names.push(r);
            }
        }
        let mut out = Vec::new();
        for digest in order {
            let manifest: ImageManifest = self.read_blob_json(&digest)?;
            let config: ImageConfiguration = self.read_blob_json(manifest.config().digest().as_ref())?;
            out.push(Entry {
                manifest_digest: digest.clone(),
                names: by_digest.remove(&digest).unwrap_or_default(),
                manifest,
                config,
            });
        }
        Ok(out)
    }

    fn read_blob_json<T: serde::de::DeserializeOwned>(&self, digest: &str) -> Result<T> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        serde_json::from_slice(&bytes).map_err(|e| ImageError::Invalid {
            source_name: path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn find(&self, reference: &str) -> Result<(Vec<Entry>, usize, Option<Reference>)> {
        let entries = self.entries()?;
        let hex_ref = reference.strip_prefix("sha256:").unwrap_or(reference);
        let looks_like_id =
            hex_ref.len() >= 4 && hex_ref.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if let Ok(r) = Reference::parse(reference) {
            if let Some(i) = entries.iter().position(|e| e.names.contains(&r)) {
                return Ok((entries, i, Some(r)));
            }
            // `name@sha256:<manifest digest>` finds an image of that repository by content.
            if let Some(d) = &r.digest
                && let Some(i) = entries.iter().position(|e| {
                    &e.manifest_digest == d && e.names.iter().any(|n| n.repository == r.repository)
                })
            {
                return Ok((entries, i, None));
            }
        }
        if looks_like_id {
            let hits: Vec<usize> =
                (0..entries.len()).filter(|i| hex_part(&entries[*i].id()).starts_with(hex_ref)).collect();
            match hits.len() {
                0 => {}
                1 => return Ok((entries, hits[0], None)),
                _ => return Err(ImageError::Ambiguous(reference.to_string())),
            }
        }
        Err(ImageError::NotFound(reference.to_string()))
    }

    /// Finds an image by name, id or id prefix, with its layers on disk.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage> {
        let (entries, i, _) = self.find(reference)?;
        let e = &entries[i];
        let diff_ids: Vec<String> = e.config.rootfs().diff_ids().clone();
        let layer_dirs: Vec<PathBuf> = chain_ids(&diff_ids).iter().map(|c| self.layer_path(c)).collect();
        if let Some(missing) = layer_dirs.iter().find(|d| !d.is_dir()) {
            return Err(ImageError::Invalid {
                source_name: reference.to_string(),
                message: format!("unpacked layer {} is missing; load the image again", missing.display()),
            });
        }
        Ok(ResolvedImage {
            id: e.id(),
            names: e.names.iter().map(Reference::short).collect(),
            config: e.config.clone(),
            layer_dirs,
        })
    }

    /// Every image name (or untagged image) in the store.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let mut out = Vec::new();
        for e in self.entries()? {
            let size = e.manifest.layers().iter().map(|l| l.size()).sum();
            let created = e.config.created().clone().unwrap_or_default();
            if e.names.is_empty() {
                out.push(ImageSummary {
                    repository: "<none>".into(),
                    tag: "<none>".into(),
                    id: e.id(),
                    created: created.clone(),
                    size,
                });
            }
            for n in &e.names {
                out.push(ImageSummary {
                    repository: n.short_repository(),
                    tag: if n.tag.is_empty() { "<none>".into() } else { n.tag.clone() },
                    id: e.id(),
                    created: created.clone(),
                    size,
                });
            }
        }
        Ok(out)
    }

    /// docker-style inspect JSON of an image.
    pub fn inspect(&self, reference: &str) -> Result<Value> {
        let (entries, i, _) = self.find(reference)?;
        let e = &entries[i];
        let c = e.config.config().clone().unwrap_or_default();
        let exposed: BTreeMap<String, Value> =
            c.exposed_ports().clone().unwrap_or_default().into_iter().map(|p| (p, json!({}))).collect();
        let mut out = json!({
            "Id": e.id(),
            "RepoTags": e.names.iter().map(Reference::short).collect::<Vec<_>>(),
            "Created": e.config.created(),
            "Architecture": e.config.architecture().to_string(),
            "Os": e.config.os().to_string(),
            "Config": {
                "Cmd": c.cmd(),
                "Entrypoint": c.entrypoint(),
                "Env": c.env(),
                "WorkingDir": c.working_dir().clone().unwrap_or_default(),
                "User": c.user().clone().unwrap_or_default(),
                "ExposedPorts": exposed,
                "Labels": c.labels(),
                "StopSignal": c.stop_signal(),
            },
            "RootFS": { "Type": "layers", "Layers": e.config.rootfs().diff_ids() },
            "Size": e.manifest.layers().iter().map(|l| l.size()).sum::<u64>(),
        });
        self.inspect_docker_fields(&e.id(), &mut out);
        Ok(out)
    }

    /// Names of containers (by record) that use image `id`.
    fn users(&self, id: &str) -> Vec<String> {
        let Ok(dirs) = fs::read_dir(&self.containers) else { return Vec::new() };
        dirs.filter_map(|d| d.ok())
            .filter_map(|d| {
                let text = fs::read(d.path().join("record.json")).ok()?;
                let v: Value = serde_json::from_slice(&text).ok()?;
                (v["image_id"].as_str() == Some(id))
                    .then(|| v["name"].as_str().unwrap_or(&d.file_name().to_string_lossy()).to_string())
            })
            .collect()
    }

    /// Names of the unpacked layer dirs that container specs (`<root>/containers/*/spec.json`,
    /// `rootfs.lower_dirs`) list.
    fn container_layers(&self) -> BTreeSet<String> {
        let layers = self.dir.join("layers");
        let Ok(dirs) = fs::read_dir(&self.containers) else { return BTreeSet::new() };
        let mut out = BTreeSet::new();
        for d in dirs.flatten() {
            let Ok(text) = fs::read(d.path().join("spec.json")) else { continue };
            let Ok(spec) = serde_json::from_slice::<Value>(&text) else { continue };
            let lower = spec["rootfs"]["lower_dirs"].as_array().cloned().unwrap_or_default();
            for dir in lower.iter().filter_map(Value::as_str) {
                if let Some(name) = Path::new(dir).strip_prefix(&layers).ok().and_then(|r| r.iter().next()) {
                    out.insert(name.to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    /// `image rm`: untags a name; deletes the image when no name is left (or when given by
    /// id). Refuses an image a container uses unless `force`. Returns docker's report lines.
    pub fn remove(&self, reference: &str, force: bool) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let (entries, i, by_name) = self.find(reference)?;
        let e = &entries[i];
        let mut report = Vec::new();
        let last_name = by_name.is_none() || e.names.len() <= 1;
        if last_name
            && !force
            && let Some(user) = self.users(&e.id()).into_iter().next()
        {
            return Err(ImageError::InUse { image: reference.to_string(), container: user });
        }
        let mut index = self.read_index()?;
        if let Some(list) = index["manifests"].as_array_mut() {
            list.retain(|d| {
                let same = d["digest"] == e.manifest_digest.as_str();
                match &by_name {
                    Some(r) if !last_name => !(same && d["annotations"][REF_NAME] == r.full().as_str()),
                    _ => !same,
                }
            });
        }
        self.write_index(&index)?;
        match &by_name {
            Some(r) if !last_name => report.push(format!("Untagged: {}", r.short())),
            _ => {
                for n in &e.names {
                    report.push(format!("Untagged: {}", n.short()));
                }
                report.push(format!("Deleted: {}", e.id()));
            }
        }
        self.gc()?;
        Ok(report)
    }

    /// `image prune`: removes untagged images (with `all`, every image) that no container
    /// uses, then unreferenced content. Returns the removed ids with the names they had, and
    /// the bytes reclaimed.
    pub fn prune(&self, all: bool) -> Result<(Vec<PrunedImage>, u64)> {
        let _lock = self.lock()?;
        let entries = self.entries()?;
        let doomed: Vec<&Entry> = entries
            .iter()
            .filter(|e| (all || e.names.is_empty()) && self.users(&e.id()).is_empty())
            .collect();
        let mut index = self.read_index()?;
        if let Some(list) = index["manifests"].as_array_mut() {
            list.retain(|d| !doomed.iter().any(|e| d["digest"] == e.manifest_digest.as_str()));
        }
        self.write_index(&index)?;
        let ids = doomed.iter().map(|e| (e.id(), e.names.iter().map(Reference::short).collect())).collect();
        // What failed pulls left for a later pull to resume goes too.
        let staged = registry::clean_pull_staging(self);
        Ok((ids, self.gc()? + staged))
    }

    /// Removes blobs and unpacked layers that no image in the index references, and leftovers
    /// of interrupted work. Call with the lock held. Returns the bytes freed (blobs).
    pub(crate) fn gc(&self) -> Result<u64> {
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for e in self.entries()? {
            keep_blobs.insert(hex_part(&e.manifest_digest).to_string());
            keep_blobs.insert(hex_part(e.manifest.config().digest().as_ref()).to_string());
            for l in e.manifest.layers() {
                keep_blobs.insert(hex_part(l.digest().as_ref()).to_string());
            }
            for c in chain_ids(e.config.rootfs().diff_ids()) {
                keep_layers.insert(hex_part(&c).to_string());
            }
        }
        // A forced `image rm` can take an image from under containers; their specs still list
        // its unpacked layers, which stay until the containers go: deleting a mounted lower
        // dir's files would break a running container.
        keep_layers.extend(self.container_layers());
        // The build cache's layers outlive the images built from them (see `build::cache`).
        let (cache_blobs, cache_layers) = self.build_cache_references();
        keep_blobs.extend(cache_blobs);
        keep_layers.extend(cache_layers);
        let mut freed = 0;
        let blobs = self.dir.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(io_at(&blobs))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep_blobs.contains(&name) {
                freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                let _ = fs::remove_file(entry.path());
            }
        }
        let layers = self.dir.join("layers");
        for entry in fs::read_dir(&layers).map_err(io_at(&layers))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep_layers.contains(&name) {
                fs::remove_dir_all(entry.path()).map_err(io_at(&entry.path()))?;
            }
        }
        Ok(freed)
    }

    /// The store's own dir (`<root>/images`).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest of an image found by name, id or digest: (digest, media type, bytes).
    pub(crate) fn manifest_of(&self, reference: &str) -> Result<(String, String, Vec<u8>)> {
        let (entries, i, _) = self.find(reference)?;
        let digest = entries[i].manifest_digest.clone();
        let path = self.blob_path(&digest);
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        let media_type = entries[i]
            .manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());
        Ok((digest, media_type, bytes))
    }

    /// A staging dir inside the store (same file system, so blobs can be renamed in).
    pub(crate) fn staging(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new().prefix(".staging-").tempdir_in(&self.dir).map_err(io_at(&self.dir))
    }
}

// ---- Helpers for the image builder (`build::builder`) ----

impl ImageStore {
    /// The raw JSON of image `id`'s config blob (docker fields the OCI type drops, such as
    /// `Healthcheck`, `Shell` and `OnBuild`, included).
    pub(crate) fn raw_config(&self, id: &str) -> Result<Value> {
        self.read_blob_json(id)
    }

    /// The layer descriptors (digest, size, media type) of the image whose config is `id`.
    pub(crate) fn image_layers(&self, id: &str) -> Result<Vec<(String, u64, String)>> {
        let entry = self
            .entries()?
            .into_iter()
            .find(|e| e.id() == id)
            .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
        Ok(entry
            .manifest
            .layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size(), l.media_type().to_string()))
            .collect())
    }

    /// Adds to `inspect`'s output the config fields of docker's image format that the OCI
    /// config type does not carry (`Healthcheck`, `Shell`, `OnBuild`, and `Volumes`), and
    /// the author.
    fn inspect_docker_fields(&self, id: &str, out: &mut Value) {
        let Ok(raw) = self.raw_config(id) else { return };
        for field in ["Healthcheck", "Volumes", "Shell", "OnBuild"] {
            let v = raw["config"][field].clone();
            out["Config"][field] = v;
        }
        out["Author"] = json!(raw["author"].as_str().unwrap_or_default());
    }

    /// Blobs and unpacked layers (hex) the build cache under the same root lists.
    fn build_cache_references(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        match self.dir.parent() {
            Some(root) => build::cache::referenced(root),
            None => (BTreeSet::new(), BTreeSet::new()),
        }
    }
}

/// Reads all of `reader` into a file in `dir`; returns its path.
pub(crate) fn spool(reader: &mut dyn Read, dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).map_err(io_at(&path))?;
    io::copy(reader, &mut f).map_err(io_at(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let d = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        assert_eq!(c[1], digest_of(b"sha256:a sha256:b"));
    }
}
