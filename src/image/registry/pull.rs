//! `pull`: manifest (index → this platform's manifest), config, then the layers in parallel,
//! each streamed to a staging file while it is hashed, decompressed and unpacked on a second
//! thread; committed to the store under its lock only when all of it is verified.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{Duration, Instant};

use oci_spec::image::ImageConfiguration;
use serde_json::Value;
use sha2::{Digest, Sha256};
use ureq::http::StatusCode;

use super::client::{Client, body_error, status_error};
use super::{LayerError, Platform, PulledImage, Registry, RegistryError};
use crate::image::events::ImageEvents;
use crate::image::integrity::Shape;
use crate::image::{ImageStore, Reference, chain_ids, digest_of, unpack};
use crate::state::Lock;

pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// Manifests and configs are read whole; bigger ones are refused.
const MAX_DOC: u64 = 16 << 20;

/// The dir of in-progress and uncommitted downloads.
pub(crate) fn pull_dir(store: &ImageStore) -> PathBuf {
    store.dir().join(".pull")
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.display().to_string(), source }
}

fn hex12(digest: &str) -> &str {
    let h = digest.strip_prefix("sha256:").unwrap_or(digest);
    &h[..h.len().min(12)]
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn valid_digest(d: &str) -> bool {
    crate::image::Digest::parse(d).is_ok()
}

/// `12.3MB`, as docker prints sizes.
pub(crate) fn human(bytes: u64) -> String {
    let v = bytes as f64;
    if v >= 1e9 {
        format!("{:.2}GB", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.1}MB", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}kB", v / 1e3)
    } else {
        format!("{bytes}B")
    }
}

/// Fetches `/v2/<path>/manifests/<tag or digest>`: (bytes, media type, digest).
pub(crate) fn get_manifest(
    client: &Client,
    r: &Reference,
    what: &str,
    scopes: &[String],
) -> Result<(Vec<u8>, String, String), RegistryError> {
    let host = r.api_host();
    let url_path = format!("/v2/{}/manifests/{what}", r.path());
    let resp = client.request(host, scopes, true, &|agent, base, auth| {
        let mut req = agent.get(format!("{base}{url_path}")).header("Accept", MANIFEST_TYPES.join(", "));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.call()
    })?;
    let name = r.full();
    if !resp.status().is_success() {
        return Err(status_error(&name, r.registry(), resp));
    }
    let header_digest =
        resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
    let bytes = resp.into_body().with_config().limit(MAX_DOC).read_to_vec().map_err(|e| {
        RegistryError::Unreachable { registry: r.registry().to_string(), message: e.to_string() }
    })?;
    let digest = digest_of(&bytes);
    // Verified against the digest asked for, else against the one the registry says it sent.
    let expected =
        if valid_digest(what) { Some(what.to_string()) } else { header_digest.filter(|d| valid_digest(d)) };
    if let Some(want) = expected
        && want != digest
    {
        return Err(RegistryError::DigestMismatch {
            what: format!("{name} manifest"),
            expected: want,
            actual: digest,
        });
    }
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|source| RegistryError::Malformed { what: format!("{name} manifest"), source })?;
    let media_type = doc["mediaType"]
        .as_str()
        .map(str::to_string)
        .or(content_type)
        .filter(|m| !m.is_empty() && m != "application/json")
        .unwrap_or_else(|| {
            if doc.get("manifests").is_some() {
                MANIFEST_TYPES[0].to_string()
            } else {
                MANIFEST_TYPES[2].to_string()
            }
        });
    if doc["schemaVersion"].as_u64() == Some(1) || media_type.contains("manifest.v1+prettyjws") {
        return Err(RegistryError::Invalid {
            what: name,
            message: "Docker schema 1 manifests are not supported; push the image again with a newer client"
                .into(),
        });
    }
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(RegistryError::Invalid {
            what: name,
            message: format!("unsupported manifest type {media_type}"),
        });
    }
    Ok((bytes, media_type, digest))
}

/// The descriptor of `platform`'s manifest in an index.
pub(crate) fn select_platform(
    name: &str,
    index: &Value,
    platform: &Platform,
) -> Result<String, RegistryError> {
    let mut available = Vec::new();
    for d in index["manifests"].as_array().into_iter().flatten() {
        let p = &d["platform"];
        let (os, arch) =
            (p["os"].as_str().unwrap_or_default(), p["architecture"].as_str().unwrap_or_default());
        let variant = p["variant"].as_str();
        if os == "unknown" || arch == "unknown" || os.is_empty() {
            // Attestations and other non-image manifests.
            continue;
        }
        if platform.matches(os, arch, variant)
            && let Some(digest) = d["digest"].as_str()
        {
            return Ok(digest.to_string());
        }
        available.push(match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
    }
    Err(RegistryError::NoMatchingPlatform {
        reference: name.to_string(),
        wanted: platform.to_string(),
        available,
    })
}

/// Fetches a small blob (a config) whole, verified.
fn get_small_blob(
    client: &Client,
    r: &Reference,
    digest: &str,
    scopes: &[String],
) -> Result<Vec<u8>, RegistryError> {
    let url_path = format!("/v2/{}/blobs/{digest}", r.path());
    let what = format!("{} blob {digest}", r.full());
    let resp = client.request(r.api_host(), scopes, true, &|agent, base, auth| {
        let mut req = agent.get(format!("{base}{url_path}"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.call()
    })?;
    if !resp.status().is_success() {
        return Err(status_error(&what, r.registry(), resp));
    }
    let bytes = resp.into_body().with_config().limit(MAX_DOC).read_to_vec().map_err(|e| {
        RegistryError::Unreachable { registry: r.registry().to_string(), message: e.to_string() }
    })?;
    let actual = digest_of(&bytes);
    if actual != digest {
        return Err(RegistryError::DigestMismatch { what, expected: digest.to_string(), actual });
    }
    Ok(bytes)
}

/// One layer of the manifest.
#[derive(Debug, Clone)]
struct LayerJob {
    digest: String,
    size: u64,
    diff_id: String,
    chain: String,
}

/// Throttled progress of one layer.
struct Progress<'a> {
    events: &'a dyn ImageEvents,
    opts: &'a super::RegistryOptions,
    registry: String,
    name: String,
    total: u64,
    last: Option<Instant>,
    /// When the first byte of this attempt was counted, and how many bytes were there then
    /// (a resumed download starts past zero): the rate is of this attempt's bytes.
    start: Option<(Instant, u64)>,
}

impl Progress<'_> {
    fn bytes(&mut self, done: u64) {
        let now = Instant::now();
        let (started, base) = *self.start.get_or_insert((now, done));
        if self.last.is_some_and(|l| now.duration_since(l) < Duration::from_millis(100)) && done < self.total
        {
            return;
        }
        self.last = Some(now);
        let secs = now.duration_since(started).as_secs_f64();
        let rate = if secs > 0.05 {
            format!(" {}/s", human(((done.saturating_sub(base)) as f64 / secs) as u64))
        } else {
            String::new()
        };
        self.events.event(
            "Layer",
            &self.name,
            &format!("Downloading {}/{}{rate}", human(done), human(self.total)),
            false,
        );
    }
}

/// Bytes of a layer read from the registry (or a stored blob) at a time.
const READ: usize = 128 * 1024;

/// The unpack side of a layer download: a thread reading the blob's bytes from a channel.
/// Buffers go there and come back (read out) to be filled again: no copy, allocation or
/// zeroing per read.
struct Unpacker {
    tx: Option<SyncSender<(Vec<u8>, usize)>>,
    spent: std::sync::mpsc::Receiver<Vec<u8>>,
    handle: std::thread::JoinHandle<Result<unpack::Unpacked, LayerError>>,
    dir: PathBuf,
}

impl Unpacker {
    fn start(dir: PathBuf) -> Result<Unpacker, RegistryError> {
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_at(&dir))?;
        }
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let (tx, rx) = sync_channel::<(Vec<u8>, usize)>(16);
        let (back, spent) = std::sync::mpsc::channel::<Vec<u8>>();
        let target = dir.clone();
        let handle = std::thread::spawn(move || {
            let reader = unpack::ChunkReader::new(rx, Some(back));
            let (_, plain) = unpack::decompressed_buffered(reader).map_err(LayerError::Decompress)?;
            Ok(unpack::unpack(plain, &target)?)
        });
        Ok(Unpacker { tx: Some(tx), spent, handle, dir })
    }

    /// A buffer to read into: one the unpacker is done with, else a new one.
    fn buffer(&self) -> Vec<u8> {
        self.spent.try_recv().unwrap_or_else(|_| vec![0; READ])
    }

    /// Passes the first `len` bytes of `buf` on; once the unpacker has stopped (a bad layer)
    /// they are dropped, and its error shows in `finish`.
    fn feed(&mut self, buf: Vec<u8>, len: usize) {
        if let Some(tx) = &self.tx
            && tx.send((buf, len)).is_err()
        {
            self.tx = None;
        }
    }

    /// Ends the stream; the diff id and shape, or why the layer could not be unpacked.
    fn finish(mut self) -> Result<unpack::Unpacked, LayerError> {
        self.tx = None;
        self.handle.join().unwrap_or(Err(LayerError::Panicked))
    }

    /// Stops and removes what was unpacked.
    fn abort(self) {
        let dir = self.dir.clone();
        let _ = self.finish();
        let _ = fs::remove_dir_all(dir);
    }
}

/// Downloads (resuming) and unpacks one layer into the pull dir: `<hex>` and `<hex>.d`. The
/// shape of `<hex>.d` when this unpacked it (`None` when the layer was there already).
fn fetch_layer(
    client: &Client,
    store: &ImageStore,
    r: &Reference,
    scopes: &[String],
    job: &LayerJob,
    events: &dyn ImageEvents,
) -> Result<Option<Shape>, RegistryError> {
    let name = hex12(&job.digest).to_string();
    let dir = pull_dir(store);
    let h = hex(&job.digest);
    let (done_file, done_dir) = (dir.join(h), dir.join(format!("{h}.d")));
    let partial = dir.join(format!("{h}.partial"));
    // One download of a digest at a time, across threads and processes.
    let _lock = Lock::acquire(&dir.join(format!("{h}.lock"))).map_err(crate::image::ImageError::from)?;
    let blob = store.blob_path(&job.digest);
    // A stored blob of another size than the manifest's is damaged: it is downloaded again
    // (and replaced by `commit`).
    let stored_blob = fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == job.size);
    let have_blob = stored_blob || done_file.is_file();
    let have_layer = store.layer_is_whole(&job.chain, &job.diff_id) || done_dir.is_dir();
    if have_blob && have_layer {
        events.event("Layer", &name, "Already exists", true);
        return Ok(None);
    }
    let what = format!("{} layer {}", r.full(), job.digest);
    if have_blob {
        // Unpack again from the blob we have, verifying it as it is read.
        let src = if done_file.is_file() { done_file.clone() } else { blob.clone() };
        events.event("Layer", &name, "Extracting", false);
        let tmp = dir.join(format!("{h}.unpacking"));
        let mut u = Unpacker::start(tmp.clone())?;
        let mut f = fs::File::open(&src).map_err(io_at(&src))?;
        let mut hasher = Sha256::new();
        loop {
            let mut buf = u.buffer();
            let n = f.read(&mut buf).map_err(io_at(&src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            u.feed(buf, n);
        }
        if format!("sha256:{}", ::hex::encode(hasher.finalize())) == job.digest {
            return finish_unpack(u, &tmp, &done_dir, job, &what, &name, events).map(Some);
        }
        // Damaged: it goes, and the layer is downloaded again below.
        u.abort();
        let _ = fs::remove_file(&src);
        crate::state::report_repair(&src, "layer blob whose content is not its digest; removed and downloaded again");
    }

    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&partial)
        .map_err(io_at(&partial))?;
    let mut have = file.metadata().map_err(io_at(&partial))?.len();
    if have > job.size {
        file.set_len(0).map_err(io_at(&partial))?;
        have = 0;
    }
    let tmp = dir.join(format!("{h}.unpacking"));
    let mut unpacker = Unpacker::start(tmp.clone())?;
    let mut hasher = Sha256::new();
    // What an earlier, interrupted pull got: hashed and unpacked again, then resumed.
    if have > 0 {
        file.seek(SeekFrom::Start(0)).map_err(io_at(&partial))?;
        let mut left = have;
        while left > 0 {
            let mut buf = unpacker.buffer();
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file.read(&mut buf[..want]).map_err(io_at(&partial))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            unpacker.feed(buf, n);
            left = left.saturating_sub(n as u64);
        }
    }
    file.seek(SeekFrom::Start(have)).map_err(io_at(&partial))?;
    let mut progress = Progress {
        events,
        opts: client.opts(),
        registry: r.registry().to_string(),
        name: name.clone(),
        total: job.size,
        last: None,
        start: None,
    };
    progress.bytes(have);
    let url_path = format!("/v2/{}/blobs/{}", r.path(), job.digest);
    let mut failures = 0u32;
    let attempts = client.opts().attempts.max(1);
    while have < job.size {
        let from = have;
        let sent = client.request(r.api_host(), scopes, false, &|agent, base, auth| {
            let mut req = agent.get(format!("{base}{url_path}"));
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            if from > 0 {
                req = req.header("Range", format!("bytes={from}-"));
            }
            req.call()
        });
        let outcome: Result<(), RegistryError> = match sent {
            Err(e) => Err(e),
            Ok(resp) if resp.status() == StatusCode::OK && from > 0 => {
                // The server ignored the range: start over.
                unpacker.abort();
                unpacker = Unpacker::start(tmp.clone())?;
                hasher = Sha256::new();
                file.set_len(0).map_err(io_at(&partial))?;
                file.seek(SeekFrom::Start(0)).map_err(io_at(&partial))?;
                have = 0;
                copy_body(resp, &mut file, &partial, &mut hasher, &mut unpacker, &mut have, &mut progress)
            }
            Ok(resp) if resp.status().is_success() => {
                copy_body(resp, &mut file, &partial, &mut hasher, &mut unpacker, &mut have, &mut progress)
            }
            Ok(resp) if resp.status().is_server_error() => Err(status_error(&what, r.registry(), resp)),
            Ok(resp) => {
                unpacker.abort();
                return Err(status_error(&what, r.registry(), resp));
            }
        };
        // A body that ended early without an error still counts as a failed attempt.
        let outcome = match outcome {
            Ok(()) if have < job.size && have == from => Err(RegistryError::Unreachable {
                registry: r.registry().to_string(),
                message: format!("the download of {} stopped at {have} of {} bytes", job.digest, job.size),
            }),
            other => other,
        };
        if let Err(e) = outcome {
            // A stall after some bytes is resumed; a registry that sent nothing in the whole
            // read bound is not asked again (that would multiply the wait).
            let retryable = match e {
                RegistryError::Unreachable { .. } | RegistryError::Status { status: 500.., .. } => true,
                RegistryError::Timeout { .. } => have > from,
                _ => false,
            };
            failures += 1;
            if !retryable || failures >= attempts {
                unpacker.abort();
                events.failed(
                    "Layer",
                    &name,
                    &format!("Download failed at {}/{}", human(have), human(job.size)),
                );
                return Err(e);
            }
            tracing::debug!(layer = %job.digest, at = have, error = %e, "download failed; resuming");
            client.backoff(failures - 1);
        }
    }
    // Not fsynced (a multi-MB fsync was most of a pull's wait on a busy disk), as blobs that
    // load, import and build store are not: a killed berth loses no page cache, and after a
    // power loss a blob that lost its content is of the wrong size (skipped, downloaded
    // again) or is found when it is next unpacked from, which hashes it (removed, downloaded
    // again). The small records that name it (marker, index) keep their fsync.
    drop(file);
    events.event("Layer", &name, "Verifying Checksum", false);
    let actual = format!("sha256:{}", ::hex::encode(hasher.finalize()));
    if actual != job.digest || have != job.size {
        unpacker.abort();
        // Corrupt bytes are not worth resuming from.
        let _ = fs::remove_file(&partial);
        events.failed("Layer", &name, "Verification failed");
        return Err(RegistryError::DigestMismatch { what, expected: job.digest.clone(), actual });
    }
    events.event("Layer", &name, "Download complete", false);
    fs::rename(&partial, &done_file).map_err(io_at(&done_file))?;
    events.event("Layer", &name, "Extracting", false);
    finish_unpack(unpacker, &tmp, &done_dir, job, &what, &name, events).map(Some)
}

fn finish_unpack(
    u: Unpacker,
    tmp: &Path,
    done_dir: &Path,
    job: &LayerJob,
    what: &str,
    name: &str,
    events: &dyn ImageEvents,
) -> Result<Shape, RegistryError> {
    // A blob whose content cannot be unpacked (or is not the layer the config names) is of
    // no use to a later pull: it goes with the failure, as its half-unpacked dir does.
    let verified_blob = done_dir.with_extension("");
    let unpack::Unpacked { diff_id, shape } = match u.finish() {
        Ok(u) => u,
        Err(source) => {
            let _ = fs::remove_dir_all(tmp);
            let _ = fs::remove_file(&verified_blob);
            events.failed("Layer", name, "Extraction failed");
            return Err(RegistryError::Layer { what: what.to_string(), source });
        }
    };
    if diff_id != job.diff_id {
        let _ = fs::remove_dir_all(tmp);
        let _ = fs::remove_file(&verified_blob);
        events.failed("Layer", name, "Extraction failed");
        return Err(RegistryError::Invalid {
            what: what.to_string(),
            message: format!("its content's diff id is {diff_id}, the image config says {}", job.diff_id),
        });
    }
    if done_dir.exists() {
        let _ = fs::remove_dir_all(done_dir);
    }
    fs::rename(tmp, done_dir).map_err(io_at(done_dir))?;
    events.event("Layer", name, "Pull complete", true);
    Ok(shape)
}

fn copy_body(
    resp: ureq::http::Response<ureq::Body>,
    file: &mut fs::File,
    path: &Path,
    hasher: &mut Sha256,
    unpacker: &mut Unpacker,
    have: &mut u64,
    progress: &mut Progress<'_>,
) -> Result<(), RegistryError> {
    let registry = progress.registry.clone();
    let mut reader = resp.into_body().into_reader();
    loop {
        let mut buf = unpacker.buffer();
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(body_error(progress.opts, &registry, &e, "download cut")),
        };
        if *have + n as u64 > progress.total {
            return Err(RegistryError::Invalid {
                what: format!("layer {}", progress.name),
                message: format!(
                    "the registry sent more than the {} bytes the manifest says",
                    progress.total
                ),
            });
        }
        file.write_all(&buf[..n]).map_err(io_at(path))?;
        hasher.update(&buf[..n]);
        unpacker.feed(buf, n);
        *have += n as u64;
        progress.bytes(*have);
    }
}

/// Removes what failed pulls left in `images/.pull` (resumable partials included), except the
/// downloads that a pull is doing now (it holds their lock). The empty lock files stay: removing
/// one that a waiting pull has open would let two pulls download the same blob at once.
/// Returns the bytes freed.
pub(crate) fn clean_pull_dir(store: &ImageStore) -> u64 {
    let dir = pull_dir(store);
    let Ok(entries) = fs::read_dir(&dir) else { return 0 };
    let digests: BTreeSet<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.split('.').next()).map(str::to_string))
        .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    let mut freed = 0;
    for h in digests {
        let Ok(Some(_lock)) = Lock::try_acquire(&dir.join(format!("{h}.lock"))) else { continue };
        for file in [dir.join(&h), dir.join(format!("{h}.partial"))] {
            if let Ok(m) = fs::metadata(&file) {
                freed += m.len();
                let _ = fs::remove_file(&file);
            }
        }
        for d in [dir.join(format!("{h}.d")), dir.join(format!("{h}.unpacking"))] {
            let _ = fs::remove_dir_all(d);
        }
    }
    freed
}

/// Removes the half-unpacked layers (`<hex>.unpacking`) that killed pulls left in `images/.pull`
/// (a pull always unpacks again from the start), except those a pull is working on now (it
/// holds their lock). Downloads stay for the next pull to resume. Returns how many went.
pub(crate) fn clean_pull_unpacking(store: &ImageStore) -> usize {
    let dir = pull_dir(store);
    let Ok(entries) = fs::read_dir(&dir) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let Some(h) = e.file_name().to_str().and_then(|n| n.strip_suffix(".unpacking")).map(str::to_string)
        else {
            continue;
        };
        if !valid_digest(&format!("sha256:{h}")) {
            continue;
        }
        let Ok(Some(_lock)) = Lock::try_acquire(&dir.join(format!("{h}.lock"))) else { continue };
        removed += usize::from(fs::remove_dir_all(e.path()).is_ok());
    }
    removed
}

/// Records which repository each pulled or pushed blob came from (for cross-repository
/// mounts on push): `images/sources.json`, `{digest: [repository, ...]}`. Call with the lock.
pub(crate) fn record_sources(store: &ImageStore, repository: &str, digests: &[String]) {
    let path = store.dir().join("sources.json");
    let mut map: BTreeMap<String, BTreeSet<String>> =
        fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    for d in digests {
        map.entry(d.clone()).or_default().insert(repository.to_string());
    }
    // Entries of blobs no longer stored go.
    map.retain(|d, _| store.blob_path(d).is_file());
    if let Ok(text) = serde_json::to_vec(&map) {
        // A lost record only costs a mount on push: not worth failing a pull for.
        let _ = crate::state::write_atomic(&path, &text);
    }
}

/// The repositories a blob is known to be in.
pub(crate) fn sources_of(store: &ImageStore, digest: &str) -> Vec<String> {
    let path = store.dir().join("sources.json");
    let map: BTreeMap<String, Vec<String>> =
        fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
    map.get(digest).cloned().unwrap_or_default()
}

/// The tags of `r`'s repository (`GET /v2/<name>/tags/list`, following `Link` pages), sorted.
pub(crate) fn tags(client: &Client, r: &Reference) -> Result<Vec<String>, RegistryError> {
    let scopes = vec![format!("repository:{}:pull", r.path())];
    let name = r.repository.clone();
    let mut url_path = format!("/v2/{}/tags/list?n=1000", r.path());
    let mut tags = BTreeSet::new();
    // A registry that keeps sending a next page is stopped after this many.
    for _ in 0..1000 {
        let at = url_path.clone();
        let resp = client.request(r.api_host(), &scopes, true, &|agent, base, auth| {
            let mut req = agent.get(format!("{base}{at}"));
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            req.call()
        })?;
        if !resp.status().is_success() {
            return Err(status_error(&name, r.registry(), resp));
        }
        // `Link: </v2/x/tags/list?last=a&n=1000>; rel="next"`
        let next = resp
            .headers()
            .get("link")
            .and_then(|v| v.to_str().ok())
            .filter(|l| l.contains("rel=\"next\"") || l.contains("rel=next"))
            .and_then(|l| Some(l[l.find('<')? + 1..l.find('>')?].to_string()));
        let bytes = resp.into_body().with_config().limit(MAX_DOC).read_to_vec().map_err(|e| {
            RegistryError::Unreachable { registry: r.registry().to_string(), message: e.to_string() }
        })?;
        let doc: Value = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::Invalid { what: format!("{name} tags"), message: e.to_string() })?;
        for t in doc["tags"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            tags.insert(t.to_string());
        }
        match next {
            Some(n) if n.starts_with("/v2/") => url_path = n,
            _ => break,
        }
    }
    Ok(tags.into_iter().collect())
}

pub(crate) fn pull(
    reg: &Registry,
    store: &ImageStore,
    reference: &str,
    platform: Option<&Platform>,
    events: &dyn ImageEvents,
) -> Result<PulledImage, RegistryError> {
    let r = Reference::parse(reference)?;
    let short = r.short();
    events.event("Image", &short, "Pulling", false);
    let result = pull_inner(reg, store, &r, platform, events);
    match &result {
        Ok(p) => {
            events.event("Image", &short, if p.updated { "Pulled" } else { "Image is up to date" }, true)
        }
        Err(e) => events.failed("Image", &short, &e.to_string()),
    }
    result
}

fn pull_inner(
    reg: &Registry,
    store: &ImageStore,
    r: &Reference,
    platform: Option<&Platform>,
    events: &dyn ImageEvents,
) -> Result<PulledImage, RegistryError> {
    let client = &reg.client;
    let scopes = vec![format!("repository:{}:pull", r.path())];
    let name = r.full();
    let (mut bytes, mut media_type, mut manifest_digest) =
        get_manifest(client, r, r.tag_or_digest(), &scopes)?;
    if media_type.contains("index") || media_type.contains("manifest.list") {
        let index: Value = serde_json::from_slice(&bytes)
            .map_err(|source| RegistryError::Malformed { what: name.clone(), source })?;
        let wanted = platform.cloned().unwrap_or_else(Platform::host);
        let digest = select_platform(&name, &index, &wanted)?;
        if !valid_digest(&digest) {
            return Err(RegistryError::Invalid {
                what: name,
                message: format!("bad manifest digest {digest:?}"),
            });
        }
        (bytes, media_type, manifest_digest) = get_manifest(client, r, &digest, &scopes)?;
        if media_type.contains("index") || media_type.contains("manifest.list") {
            return Err(RegistryError::Invalid { what: name, message: "an index inside an index".into() });
        }
    }
    let manifest: Value = serde_json::from_slice(&bytes)
        .map_err(|source| RegistryError::Malformed { what: name.clone(), source })?;
    // What the store will parse later must parse now.
    serde_json::from_slice::<oci_spec::image::ImageManifest>(&bytes).map_err(|e| RegistryError::Invalid {
        what: format!("{name} manifest {manifest_digest}"),
        message: e.to_string(),
    })?;
    let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default().to_string();
    if !valid_digest(&config_digest) {
        return Err(RegistryError::Invalid {
            what: name,
            message: "the manifest names no valid config digest".into(),
        });
    }
    let previous = store.manifest_of(&name).ok().map(|(d, _, _)| d);
    let config_bytes = match fs::read(store.blob_path(&config_digest)) {
        Ok(b) if digest_of(&b) == config_digest => b,
        _ => get_small_blob(client, r, &config_digest, &scopes)?,
    };
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).map_err(|e| {
        RegistryError::Invalid { what: format!("{name} config {config_digest}"), message: e.to_string() }
    })?;
    if let Some(p) = platform
        && !p.matches(
            &config.os().to_string(),
            &config.architecture().to_string(),
            config.variant().as_deref(),
        )
    {
        return Err(RegistryError::NoMatchingPlatform {
            reference: name,
            wanted: p.to_string(),
            available: vec![format!("{}/{}", config.os(), config.architecture())],
        });
    }
    let diff_ids: Vec<String> = config.rootfs().diff_ids().clone();
    let layers: Vec<&Value> = manifest["layers"].as_array().into_iter().flatten().collect();
    if layers.len() != diff_ids.len() {
        return Err(RegistryError::Invalid {
            what: name,
            message: format!("the manifest lists {} layers, the config {}", layers.len(), diff_ids.len()),
        });
    }
    let chains = chain_ids(&diff_ids);
    let mut jobs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let digest = l["digest"].as_str().unwrap_or_default().to_string();
        if !valid_digest(&digest) {
            return Err(RegistryError::Invalid {
                what: name,
                message: format!("layer {i} has no valid digest"),
            });
        }
        let media = l["mediaType"].as_str().unwrap_or_default();
        if media.contains("foreign") || media.contains("nondistributable") {
            return Err(RegistryError::Invalid {
                what: name,
                message: format!("layer {digest} is a foreign layer ({media}), which berth cannot fetch"),
            });
        }
        let Some(size) = l["size"].as_u64() else {
            return Err(RegistryError::Invalid {
                what: name,
                message: format!("layer {digest} has no size"),
            });
        };
        jobs.push(LayerJob { digest, size, diff_id: diff_ids[i].clone(), chain: chains[i].clone() });
    }
    let dir = pull_dir(store);
    fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    for j in &jobs {
        events.event("Layer", hex12(&j.digest), "Waiting", false);
    }
    // Bounded parallel downloads: workers take the next layer from a shared queue.
    // The shapes of the layers unpacked here, for their completion markers (a layer unpacked
    // by a killed pull is walked instead).
    let shapes = std::sync::Mutex::new(HashMap::new());
    super::for_each_bounded(&jobs, reg.opts.max_concurrent_downloads, |job| {
        if let Some(shape) = fetch_layer(client, store, r, &scopes, job, events)?
            && let Ok(mut shapes) = shapes.lock()
        {
            shapes.insert(job.digest.clone(), shape);
        }
        Ok(())
    })?;
    let shapes = shapes.into_inner().unwrap_or_default();
    commit(store, r, &jobs, &shapes, &config_digest, &config_bytes, &bytes, &media_type, &manifest_digest)?;
    Ok(PulledImage {
        id: config_digest,
        updated: previous.as_deref() != Some(manifest_digest.as_str()),
        manifest_digest,
        reference: name,
    })
}

/// Moves the verified blobs and unpacked layers into the store and records the name, all
/// under the store's lock (so that no gc runs between the moves and the name).
#[allow(clippy::too_many_arguments)]
fn commit(
    store: &ImageStore,
    r: &Reference,
    jobs: &[LayerJob],
    shapes: &HashMap<String, Shape>,
    config_digest: &str,
    config_bytes: &[u8],
    manifest: &[u8],
    media_type: &str,
    manifest_digest: &str,
) -> Result<(), RegistryError> {
    let _lock = store.lock()?;
    let dir = pull_dir(store);
    let source = r.full();
    let mut parent: Option<String> = None;
    for j in jobs {
        let h = hex(&j.digest);
        let blob = store.blob_path(&j.digest);
        let staged = dir.join(h);
        if staged.is_file() {
            // A stored blob of the right size stays (its content was verified if the layer
            // was unpacked from it); one of another size is damaged and replaced at once.
            if fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == j.size) {
                let _ = fs::remove_file(&staged);
            } else {
                if blob.exists() {
                    crate::state::report_repair(&blob, "layer blob of the wrong size; replaced by the downloaded one");
                }
                fs::rename(&staged, &blob).map_err(io_at(&blob))?;
            }
        }
        if !blob.is_file() {
            return Err(RegistryError::Invalid {
                what: format!("{source} layer {}", j.digest),
                message: "the downloaded blob went missing before it was stored; pull again".into(),
            });
        }
        let staged_dir = dir.join(format!("{h}.d"));
        if !store.layer_is_whole(&j.chain, &j.diff_id) {
            if staged_dir.is_dir() {
                store.install_staged_layer(&staged_dir, &j.chain, &j.diff_id, shapes.get(&j.digest).copied())?;
            } else {
                store.ensure_layer(&j.digest, parent.as_deref(), Some(&j.diff_id), &source)?;
            }
        } else if staged_dir.is_dir() {
            let _ = fs::remove_dir_all(&staged_dir);
        }
        parent = Some(j.chain.clone());
    }
    let stored_config = store.put_blob(config_bytes)?;
    let stored_manifest = store.put_blob(manifest)?;
    debug_assert_eq!((stored_config.as_str(), stored_manifest.as_str()), (config_digest, manifest_digest));
    store.add_manifest_typed(manifest_digest, manifest.len() as u64, media_type, std::slice::from_ref(r))?;
    let mut digests: Vec<String> = jobs.iter().map(|j| j.digest.clone()).collect();
    digests.push(config_digest.to_string());
    record_sources(store, &r.repository, &digests);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn platform_selection_names_what_there_is() {
        let index = json!({ "manifests": [
            { "digest": "sha256:a", "platform": { "os": "linux", "architecture": "arm", "variant": "v7" } },
            { "digest": "sha256:b", "platform": { "os": "linux", "architecture": "amd64" } },
            { "digest": "sha256:c", "platform": { "os": "unknown", "architecture": "unknown" } },
        ]});
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(select_platform("x", &index, &amd).unwrap(), "sha256:b");
        assert_eq!(
            select_platform("x", &index, &Platform::parse("linux/arm/v7").unwrap()).unwrap(),
            "sha256:a"
        );
        let err =
            select_platform("x", &index, &Platform::parse("linux/s390x").unwrap()).unwrap_err().to_string();
        assert!(err.contains("linux/s390x") && err.contains("linux/arm/v7, linux/amd64"), "{err}");
    }

    #[test]
    fn docker_manifests_parse_as_the_store_reads_them() {
        let m = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": format!("sha256:{}", "a".repeat(64)) },
            "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2, "digest": format!("sha256:{}", "b".repeat(64)) }],
        });
        let bytes = serde_json::to_vec(&m).unwrap();
        serde_json::from_slice::<oci_spec::image::ImageManifest>(&bytes).unwrap();
        assert_eq!(human(12_300_000), "12.3MB");
    }
}
