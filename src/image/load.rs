//! `image load`: docker-archive (`docker save`, both its classic layout and the OCI layout that
//! newer docker writes) and OCI archives, several images per archive, layers plain, gzip or
//! zstd. Every blob's digest and every layer's diff id is checked; a bad archive stores nothing.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageManifest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Digest, ImageError, ImageStore, NewManifest, Reference, digest_of, io_at, unpack};

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

/// Loads every image of the archive `reader` (named `source` in errors): all of them, or, when
/// any is bad, none (no name is given and nothing stays stored).
pub fn load(store: &ImageStore, reader: &mut dyn Read, source: &str) -> Result<Vec<LoadedImage>> {
    // The archive is read into a staging dir of its own (locked by this process, so no sweep
    // takes it) before the store's lock is taken: a slow stream does not hold up the store.
    let staging = store.staging()?;
    let archive = read_archive(reader, staging.path(), source)?;
    let plans = if archive.has("manifest.json") {
        plan_docker(&archive, source)?
    } else if archive.has("index.json") {
        plan_oci(&archive, source)?
    } else {
        return Err(invalid(
            source,
            "neither a docker archive (manifest.json) nor an OCI layout (index.json)",
        ));
    };
    let _lock = store.lock()?;
    let result = store_all(store, source, &plans);
    if result.is_err() {
        // Whatever got stored before the failure is referenced by nothing: collect it.
        let _ = store.gc();
    }
    result
}

fn invalid(source: &str, message: impl Into<String>) -> ImageError {
    ImageError::Invalid { source_name: source.to_string(), message: message.into(), cause: None }
}

/// [`invalid`] found by error `cause`: `message` already says it, and the cause is kept.
fn invalid_by(
    source: &str,
    message: impl Into<String>,
    cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ImageError {
    ImageError::Invalid { source_name: source.to_string(), message: message.into(), cause: Some(cause.into()) }
}

/// The files of an image archive, unpacked in a staging dir: regular files and dirs only (an
/// archive's links are kept as names, resolved inside the archive, never made on disk).
struct Archive {
    dir: PathBuf,
    /// Link name → target, both relative to the archive's root.
    links: HashMap<PathBuf, PathBuf>,
}

/// An archive path as a relative path, refused if it climbs out (`..`).
fn archive_path(source: &str, name: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in name.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid(source, format!("{:?} points outside the archive", name.display())));
            }
        }
    }
    Ok(out)
}

/// `target` of a symlink at `link`, as a path from the archive's root; `None` when it leaves it.
fn symlink_target(link: &Path, target: &Path) -> Option<PathBuf> {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    let base = if target.is_absolute() { Path::new("") } else { link.parent().unwrap_or(Path::new("")) };
    for c in base.components().chain(target.components()) {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Some(out.iter().collect())
}

impl Archive {
    fn has(&self, name: &str) -> bool {
        self.file(Path::new(name)).is_some()
    }

    /// The regular file at archive path `rel`, following the archive's links (a few hops).
    fn file(&self, rel: &Path) -> Option<PathBuf> {
        let mut rel = rel.to_path_buf();
        for _ in 0..16 {
            let path = self.dir.join(&rel);
            // No symlink is ever made in the staging dir: this cannot leave it.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
                return Some(path);
            }
            rel = self.links.get(&rel)?.clone();
        }
        None
    }

    /// The file the archive names `name`; an error names what is wrong.
    fn named(&self, source: &str, name: &str) -> Result<PathBuf> {
        let rel = archive_path(source, Path::new(name))?;
        self.file(&rel).ok_or_else(|| invalid(source, format!("{name} is missing from the archive")))
    }
}

/// Reads the image archive `reader` into `dir`. The stream's start must be a tar header
/// (plain, gzip or zstd); reading stops at the archive's end, whatever follows it.
fn read_archive(reader: &mut dyn Read, dir: &Path, source: &str) -> Result<Archive> {
    let (head, complete) = unpack::read_head(reader).map_err(|e| invalid_by(source, e.to_string(), e))?;
    unpack::check_archive_head(&head, complete)
        .map_err(|e| invalid_by(source, format!("not an image archive: {e}"), e))?;
    let (_, plain) = unpack::decompressed(std::io::Cursor::new(head).chain(reader))
        .map_err(|e| invalid_by(source, e.to_string(), e))?;
    let bad = |e: std::io::Error| invalid_by(source, format!("not a valid image archive: {e}"), e);
    let mut links = HashMap::new();
    let mut tar = tar::Archive::new(plain);
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.into_owned();
        let rel = archive_path(source, &raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let path = dir.join(&rel);
        let at = |e: std::io::Error| invalid_by(source, format!("{}: {e}", raw.display()), e);
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = path.parent() {
                    fs::create_dir_all(parent).map_err(at)?;
                }
                let mut file = fs::File::create(&path).map_err(at)?;
                std::io::copy(&mut entry, &mut file).map_err(at)?;
                links.remove(&rel);
            }
            tar::EntryType::Directory => fs::create_dir_all(&path).map_err(at)?,
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let target = entry.link_name().map_err(bad)?.unwrap_or_default().into_owned();
                let target = if kind == tar::EntryType::Link {
                    Some(archive_path(source, &target)?)
                } else {
                    symlink_target(&rel, &target)
                };
                // A link out of the archive names nothing in it: the file is then missing.
                if let Some(t) = target {
                    links.insert(rel, t);
                }
            }
            // Nothing else (devices, fifos, PAX globals) belongs to an image archive's layout.
            _ => {}
        }
    }
    Ok(Archive { dir: dir.to_path_buf(), links })
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

fn parse_config(bytes: &[u8], source: &str, name: &str) -> Result<(ImageConfiguration, Vec<Digest>)> {
    let config: ImageConfiguration = serde_json::from_slice(bytes)
        .map_err(|e| invalid_by(source, format!("{name}: not an image config: {e}"), e))?;
    let diff_ids = Digest::parse_all(config.rootfs().diff_ids().iter().map(String::as_str))
        .map_err(|e| invalid_by(source, format!("{name}: diff id {e}"), e))?;
    Ok((config, diff_ids))
}

/// One image of an archive, checked and ready to store.
struct Plan {
    config_bytes: Vec<u8>,
    diff_ids: Vec<Digest>,
    /// Layer files, with the digest (and size) the archive says each has, if it says.
    layers: Vec<(PathBuf, Option<Digest>, Option<u64>)>,
    names: Vec<Reference>,
}

impl Plan {
    fn new(
        source: &str,
        config_name: &str,
        config_bytes: Vec<u8>,
        layers: Vec<(PathBuf, Option<Digest>, Option<u64>)>,
        names: Vec<Reference>,
    ) -> Result<Plan> {
        let (_, diff_ids) = parse_config(&config_bytes, source, config_name)?;
        if diff_ids.len() != layers.len() {
            return Err(invalid(
                source,
                format!("the config lists {} layers, the manifest {}", diff_ids.len(), layers.len()),
            ));
        }
        for (path, _, size) in &layers {
            let actual = fs::metadata(path).map_err(io_at(path))?.len();
            if let Some(want) = size
                && *want != actual
            {
                return Err(invalid(
                    source,
                    format!("{}: {actual} bytes, the manifest says {want}", path.display()),
                ));
            }
        }
        Ok(Plan { config_bytes, diff_ids, layers, names })
    }
}

/// Stores every planned image's blobs and unpacked layers, then gives all the names in one
/// write of the index: a failure on the way leaves no name given.
fn store_all(store: &ImageStore, source: &str, plans: &[Plan]) -> Result<Vec<LoadedImage>> {
    // A damaged index would refuse the names at the end: refuse before storing anything.
    store.check_index()?;
    let mut manifests = Vec::new();
    for p in plans {
        let mut parent: Option<String> = None;
        let mut descriptors = Vec::new();
        for ((file, expected, _), diff_id) in p.layers.iter().zip(&p.diff_ids) {
            let mut head = std::io::BufReader::new(fs::File::open(file).map_err(io_at(file))?);
            let kind = unpack::detect(&mut head).map_err(io_at(file))?;
            let (digest, size) = store.put_blob_file(file, expected.as_ref().map(Digest::as_str), source)?;
            let (_, chain) =
                store.ensure_layer(&digest, parent.as_deref(), Some(diff_id.as_str()), source)?;
            parent = Some(chain);
            descriptors.push(json!({ "mediaType": kind.layer_media_type(), "digest": digest, "size": size }));
        }
        let config_digest = store.put_blob(&p.config_bytes)?;
        let manifest = super::oci_manifest(&config_digest, p.config_bytes.len(), descriptors);
        let bytes = serde_json::to_vec(&manifest).map_err(|e| invalid_by("manifest", e.to_string(), e))?;
        serde_json::from_slice::<ImageManifest>(&bytes).map_err(|e| invalid_by("manifest", e.to_string(), e))?;
        let manifest_digest = Digest::parse(&store.put_blob(&bytes)?)?;
        manifests.push((manifest_digest, bytes.len() as u64, config_digest));
    }
    let new: Vec<NewManifest<'_>> = manifests
        .iter()
        .zip(plans)
        .map(|((digest, size, _), p)| NewManifest {
            digest,
            size: *size,
            media_type: "application/vnd.oci.image.manifest.v1+json",
            names: &p.names,
        })
        .collect();
    store.add_manifests(&new)?;
    Ok(manifests
        .into_iter()
        .zip(plans)
        .map(|((_, _, id), p)| LoadedImage { id, names: p.names.iter().map(Reference::short).collect() })
        .collect())
}

fn plan_docker(archive: &Archive, source: &str) -> Result<Vec<Plan>> {
    let path = archive.named(source, "manifest.json")?;
    let text = fs::read(&path).map_err(io_at(&path))?;
    let manifests: Vec<DockerManifest> =
        serde_json::from_slice(&text).map_err(|e| invalid_by(source, format!("manifest.json: {e}"), e))?;
    if manifests.is_empty() {
        return Err(invalid(source, "manifest.json lists no image"));
    }
    let mut plans = Vec::new();
    for m in manifests {
        let config_path = archive.named(source, &m.config)?;
        let config_bytes = fs::read(&config_path).map_err(io_at(&config_path))?;
        if let Some(want) = digest_in_name(&m.config)
            && want != digest_of(&config_bytes)
        {
            return Err(invalid(source, format!("{}: content does not match its digest", m.config)));
        }
        let mut files = Vec::new();
        for layer in &m.layers {
            let expected = digest_in_name(layer).filter(|_| layer.starts_with("blobs/"));
            let expected = expected
                .map(|d| Digest::parse(&d))
                .transpose()
                .map_err(|e| invalid_by(source, e.to_string(), e))?;
            files.push((archive.named(source, layer)?, expected, None));
        }
        let names = m
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        plans.push(Plan::new(source, &m.config, config_bytes, files, names)?);
    }
    Ok(plans)
}

/// A descriptor of an OCI archive's index or manifest: its digest and size are checked as
/// the store's own are.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchiveDescriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Value>,
}

/// The blob `digest` of an OCI archive, checked against its digest and the size its
/// descriptor gives.
fn oci_blob(archive: &Archive, source: &str, digest: &Digest, size: u64) -> Result<(String, Vec<u8>)> {
    let name = format!("blobs/sha256/{}", digest.hex());
    let path = archive.named(source, &name)?;
    let len = fs::metadata(&path).map_err(io_at(&path))?.len();
    if len != size {
        return Err(invalid(source, format!("{name}: {len} bytes, its descriptor says {size}")));
    }
    let bytes = fs::read(&path).map_err(io_at(&path))?;
    if Digest::of(&bytes) != *digest {
        return Err(invalid(source, format!("{name}: content does not match its digest")));
    }
    Ok((name, bytes))
}

fn descriptors(source: &str, name: &str, list: &Value) -> Result<Vec<ArchiveDescriptor>> {
    let list = list.as_array().cloned().unwrap_or_default();
    list.into_iter()
        .enumerate()
        .map(|(i, d)| {
            serde_path_to_error::deserialize::<_, ArchiveDescriptor>(d)
                .map_err(|e| invalid(source, format!("{name}: manifests[{i}].{}: {}", e.path(), e.inner())))
        })
        .collect()
}

fn plan_oci(archive: &Archive, source: &str) -> Result<Vec<Plan>> {
    let index_path = archive.named(source, "index.json")?;
    let index: Value = serde_json::from_slice(&fs::read(&index_path).map_err(io_at(&index_path))?)
        .map_err(|e| invalid_by(source, format!("index.json: {e}"), e))?;
    if !index.is_object() {
        return Err(invalid(source, "index.json: not an image index (a JSON object)"));
    }
    let mut pending: Vec<(ArchiveDescriptor, Option<String>, usize)> =
        descriptors(source, "index.json", &index["manifests"])?.into_iter().map(|d| (d, None, 0)).collect();
    if pending.is_empty() {
        return Err(invalid(source, "index.json lists no manifest"));
    }
    pending.reverse();
    let mut plans = Vec::new();
    while let Some((desc, inherited_name, depth)) = pending.pop() {
        let (blob_name, bytes) = oci_blob(archive, source, &desc.digest, desc.size)?;
        let name = desc
            .annotations
            .get("io.containerd.image.name")
            .or(desc.annotations.get(super::REF_NAME).filter(|n| n.contains(':') || n.contains('/')))
            .cloned()
            .or(inherited_name);
        let doc: Value =
            serde_json::from_slice(&bytes).map_err(|e| invalid_by(source, format!("{blob_name}: {e}"), e))?;
        let media = desc.media_type.as_deref().or(doc["mediaType"].as_str()).unwrap_or_default();
        if media.contains("index") || media.contains("manifest.list") {
            // Nested indexes are legal; a cycle (or a silly depth) is not.
            if depth >= 8 {
                return Err(invalid(source, format!("{blob_name}: image indexes nest too deep")));
            }
            let arch = match std::env::consts::ARCH {
                "x86_64" => "amd64",
                "aarch64" => "arm64",
                other => other,
            };
            let mut children = descriptors(source, &blob_name, &doc["manifests"])?;
            children.retain(|d| {
                d.platform.as_ref().and_then(|p| p["architecture"].as_str()).is_none_or(|a| a == arch)
            });
            for d in children.into_iter().rev() {
                pending.push((d, name.clone(), depth + 1));
            }
            continue;
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| invalid_by(source, format!("{blob_name}: not a manifest: {e}"), e))?;
        let config_digest = Digest::parse(manifest.config().digest().as_ref())
            .map_err(|e| invalid_by(source, format!("{blob_name}: config {e}"), e))?;
        let (config_name, config_bytes) =
            oci_blob(archive, source, &config_digest, manifest.config().size())?;
        let mut files = Vec::new();
        for l in manifest.layers() {
            let d = Digest::parse(l.digest().as_ref())
                .map_err(|e| invalid_by(source, format!("{blob_name}: layer {e}"), e))?;
            files.push((
                archive.named(source, &format!("blobs/sha256/{}", d.hex()))?,
                Some(d),
                Some(l.size()),
            ));
        }
        let names = match &name {
            Some(n) => vec![Reference::parse(n)?],
            None => Vec::new(),
        };
        plans.push(Plan::new(source, &config_name, config_bytes, files, names)?);
    }
    Ok(plans)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::Dirs;

    /// A tar of (name, bytes) regular files, owned by root, as the fuzz seeds and tests use.
    pub(crate) fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            b.append_data(&mut h, name, *data).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        b.into_inner().unwrap_or_default()
    }

    /// One image of a test archive: (tag, config diff ids (None: the layers'), layer tars).
    pub(crate) type TestImage<'a> = (&'a str, Option<Vec<String>>, Vec<Vec<u8>>);

    /// A docker archive of the images.
    pub(crate) fn docker_archive(images: &[TestImage<'_>]) -> Vec<u8> {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut manifest = Vec::new();
        for (i, (tag, diff_ids, layers)) in images.iter().enumerate() {
            let diff_ids = diff_ids.clone().unwrap_or_else(|| layers.iter().map(|l| digest_of(l)).collect());
            let config = serde_json::to_vec(&json!({
                "architecture": "amd64", "os": "linux",
                "config": { "Cmd": ["sh"] },
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
            }))
            .unwrap_or_default();
            let config_name = format!("{}.json", Digest::of(&config).hex());
            let mut names = Vec::new();
            for (j, l) in layers.iter().enumerate() {
                names.push(format!("i{i}l{j}/layer.tar"));
                files.push((format!("i{i}l{j}/layer.tar"), l.clone()));
            }
            files.push((config_name.clone(), config));
            manifest.push(json!({ "Config": config_name, "RepoTags": [tag], "Layers": names }));
        }
        files.push(("manifest.json".into(), serde_json::to_vec(&manifest).unwrap_or_default()));
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        tar_of(&refs)
    }

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let store = ImageStore::open(&Dirs::new(dir.path().join("root"), dir.path().join("run"))).unwrap();
        (dir, store)
    }

    fn stored(store: &ImageStore) -> usize {
        let count = |p: PathBuf| fs::read_dir(p).map(|d| d.count()).unwrap_or(0);
        count(store.dir().join("blobs/sha256")) + count(store.dir().join("layers"))
    }

    #[test]
    fn a_bad_second_image_leaves_the_first_untagged_and_unstored() {
        let (_dir, store) = store();
        let good = tar_of(&[("a", b"1")]);
        let bad = tar_of(&[("b", b"2")]);
        let wrong = vec![digest_of(b"something else")];
        let archive =
            docker_archive(&[("test/one:1", None, vec![good]), ("test/two:1", Some(wrong), vec![bad])]);
        let err = load(&store, &mut &archive[..], "two.tar").unwrap_err();
        assert!(err.to_string().contains("two.tar") && err.to_string().contains("diff id"), "{err}");
        assert!(store.list().unwrap().is_empty(), "no name given");
        assert_eq!(stored(&store), 0, "nothing stored");
        // Both good: both named, in one go.
        let archive = docker_archive(&[
            ("test/one:1", None, vec![tar_of(&[("a", b"1")])]),
            ("test/two:1", None, vec![tar_of(&[("b", b"2")])]),
        ]);
        let loaded = load(&store, &mut &archive[..], "two.tar").unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(store.list().unwrap().len(), 2);
    }

    #[test]
    fn streams_that_cannot_be_archives_are_refused_at_once() {
        let (_dir, store) = store();
        let started = std::time::Instant::now();
        let err = load(&store, &mut std::io::repeat(0), "/dev/zero").unwrap_err();
        assert!(err.to_string().contains("/dev/zero") && err.to_string().contains("end-of-archive"), "{err}");
        let err = load(&store, &mut std::io::repeat(b'x'), "text").unwrap_err();
        assert!(err.to_string().contains("no tar (ustar) magic"), "{err}");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &[0u8; 1 << 20]).unwrap();
        let zeros = gz.finish().unwrap();
        let err = load(&store, &mut &zeros[..], "zeros.gz").unwrap_err();
        assert!(err.to_string().contains("end-of-archive"), "{err}");
        let err = load(&store, &mut &b"BZh91AY&SY"[..], "x.bz2").unwrap_err();
        assert!(err.to_string().contains("bzip2"), "{err}");
        let err = load(&store, &mut &b""[..], "empty").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        // A tar with a corrupt first header.
        let mut t = tar_of(&[("manifest.json", b"[]")]);
        t[0] ^= 0x55;
        let err = load(&store, &mut &t[..], "bad.tar").unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        assert_eq!(stored(&store), 0);
    }

    #[test]
    fn links_and_descriptors_out_of_bounds_are_refused() {
        let (dir, store) = store();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"secret").unwrap();
        // manifest.json a symlink to a file outside the archive.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        b.append_link(
            &mut h,
            "manifest.json",
            "../../../../../../../../..".to_string() + &secret.display().to_string(),
        )
        .unwrap();
        let archive = b.into_inner().unwrap();
        let err = load(&store, &mut &archive[..], "link.tar").unwrap_err();
        assert!(err.to_string().contains("neither a docker archive"), "{err}");

        // An OCI index with a negative size, and one whose digest climbs out.
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        for (desc, why) in [
            (
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest_of(b"{}"), "size": -1}),
                "size",
            ),
            (
                json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:../../x", "size": 2}),
                "digest",
            ),
        ] {
            let index = serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [desc]})).unwrap();
            let archive = tar_of(&[("oci-layout", layout), ("index.json", &index)]);
            let err = load(&store, &mut &archive[..], "oci.tar").unwrap_err().to_string();
            assert!(err.contains("oci.tar") && err.contains("manifests[0]") && err.contains(why), "{err}");
        }
        // A symlinked layer inside the archive is followed (docker writes those).
        let layer = tar_of(&[("a", b"1")]);
        let mut archive = docker_archive(&[("test/one:1", None, vec![layer.clone()])]);
        // Rewrite: keep the layer under another name, and make i0l0/layer.tar a link to it.
        let mut out = tar::Builder::new(Vec::new());
        for e in tar::Archive::new(&archive[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            let mut h = e.header().clone();
            if path == Path::new("i0l0/layer.tar") {
                out.append_data(&mut h, "real/layer.tar", &data[..]).unwrap();
                let mut l = tar::Header::new_gnu();
                l.set_entry_type(tar::EntryType::Symlink);
                l.set_size(0);
                l.set_uid(0);
                l.set_gid(0);
                out.append_link(&mut l, "i0l0/layer.tar", "../real/layer.tar").unwrap();
            } else {
                out.append_data(&mut h, &path, &data[..]).unwrap();
            }
        }
        archive = out.into_inner().unwrap();
        load(&store, &mut &archive[..], "linked.tar").unwrap();
        assert_eq!(store.list().unwrap()[0].repository, "test/one");
    }
}
