//! The local image store: an OCI image layout under `<root>/images` (content-addressed blobs,
//! `index.json` naming manifests), with each layer unpacked once per chain id under
//! `layers/<chain id>` and shared by every image and container that uses it.

pub mod build;
pub mod digest;
pub mod events;
pub mod import;
pub(crate) mod integrity;
pub mod load;
pub mod reference;
pub mod registry;
pub mod save;
pub mod staging;
pub mod unpack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde_json::{Map, Value, json};

pub use digest::{BadDigest, Digest};
pub use reference::Reference;
pub use staging::Staging;

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
        /// What is wrong (with the cause's own message, when there is one).
        message: String,
        /// What found it wrong, when an error did (a JSON, tar or digest error).
        #[source]
        cause: Option<Box<dyn std::error::Error + Send + Sync>>,
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
    /// A record of the store itself (`index.json`, a stored manifest or config) is damaged.
    #[error("{path}: damaged image store record: {message}")]
    Corrupt {
        /// The file.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// A digest that is not `sha256:` and 64 lowercase hex digits.
    #[error(transparent)]
    Digest(#[from] BadDigest),
    /// An image whose manifest or config in the store is damaged or missing: the other images
    /// still work; this one is removed by name (`image rm`) and got again.
    #[error(
        "image {image} is damaged: {detail}; remove it with `berth image rm -f {image}`, then pull, load or import it again"
    )]
    DamagedImage {
        /// A name of the image (or its manifest digest when it has none).
        image: String,
        /// Which file, and what is wrong with it.
        detail: String,
    },
}

type Result<T> = std::result::Result<T, ImageError>;

/// The error of a stored layer blob found damaged as it was read (`{path}`: the file), which
/// is removed so that getting the image again stores it anew.
fn damaged_blob(path: &Path, detail: &str, image: &str) -> ImageError {
    ImageError::DamagedImage {
        image: image.to_string(),
        detail: format!("its layer blob {} is damaged ({detail}) and was removed", path.display()),
    }
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io { path: path.display().to_string(), source }
}

/// An image, resolved for the runtime.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// `sha256:<config digest>` (docker's image id).
    pub id: String,
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

/// One image of the store: a manifest with its names, every digest in it checked.
#[derive(Debug, Clone)]
struct Entry {
    manifest_digest: Digest,
    names: Vec<Reference>,
    manifest: ImageManifest,
    config: ImageConfiguration,
    config_digest: Digest,
    /// The manifest's layer blobs.
    layers: Vec<Digest>,
    /// The config's diff ids.
    diff_ids: Vec<Digest>,
}

impl Entry {
    fn id(&self) -> String {
        self.config_digest.to_string()
    }
}

/// A name of an image for messages: its first name, else its manifest digest.
fn by_name_or_id(e: &Entry) -> String {
    e.names.first().map_or_else(|| e.manifest_digest.to_string(), Reference::short)
}

/// An image of `index.json` whose manifest or config cannot be read (cut short, emptied,
/// overwritten, missing): found so that the others still work and this one can be removed.
#[derive(Debug)]
struct DamagedEntry {
    manifest_digest: Digest,
    names: Vec<Reference>,
    /// Which file, and what is wrong with it.
    detail: String,
}

impl DamagedEntry {
    fn error(&self) -> ImageError {
        let image = self.names.first().map_or_else(|| self.manifest_digest.to_string(), Reference::short);
        ImageError::DamagedImage { image, detail: self.detail.clone() }
    }
}

/// `index.json` as the store reads and writes it: an OCI image index whose every descriptor
/// has a valid digest and size. Unknown fields are kept.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoreIndex {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<IndexEntry>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

/// One descriptor of `index.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

impl IndexEntry {
    fn name(&self) -> Option<&str> {
        self.annotations.get(REF_NAME).map(String::as_str)
    }
}

/// One image to record in `index.json` (see [`ImageStore::add_manifests`]).
#[derive(Debug, Clone)]
pub(crate) struct NewManifest<'a> {
    /// The manifest blob's digest.
    pub digest: &'a Digest,
    /// Its size.
    pub size: u64,
    /// Its media type.
    pub media_type: &'a str,
    /// The names to give it (taken from any image that has them).
    pub names: &'a [Reference],
}

/// Parses a JSON record of the store, naming the field that is wrong.
fn parse_record<T: serde::de::DeserializeOwned>(bytes: &[u8], path: &Path) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let message = if at == "." { e.inner().to_string() } else { format!("{at}: {}", e.inner()) };
        ImageError::Corrupt { path: path.display().to_string(), message }
    })
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
    Digest::of(bytes).as_str().to_string()
}

/// Chain ids of a checked layer stack (see [`chain_ids`]).
fn chain_digests(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
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

/// The file name a string digest maps to in `blobs/sha256` or `layers`: its hex when it is a
/// valid digest, else a name no blob or layer has (it starts with a dot, which no hex does),
/// so that no string can name a path outside the store.
fn file_name_of(digest: &str) -> &str {
    match Digest::parse(digest) {
        Ok(_) => hex_part(digest),
        Err(_) => ".invalid-digest",
    }
}

/// Work dirs in `images/` (loads, imports, builds) and in `layers/` (unpacks in progress).
const STAGING_PREFIX: &str = ".staging-";
const LAYER_TMP_PREFIX: &str = ".tmp-";

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
        dirs.secure()?; // the store's folders closed to other users (state::mode)
        for d in [dir.join("blobs/sha256"), dir.join("layers")] {
            fs::create_dir_all(&d).map_err(io_at(&d))?;
        }
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let store = ImageStore { dir, containers: dirs.containers() };
        store.sweep();
        Ok(store)
    }

    /// Removes what killed loads, imports, builds, unpacks and pulls left (their work dirs),
    /// never touching a live one (see [`staging`]). Every store operation opens the store,
    /// so the next one after a crash cleans up.
    fn sweep(&self) {
        let staged = staging::sweep(&self.dir, STAGING_PREFIX);
        let unpacks = staging::sweep(&self.dir.join("layers"), LAYER_TMP_PREFIX)
            + crate::state::sweep_temp_files(&self.dir.join("layers")).len();
        let pulls = registry::clean_pull_unpacking(self);
        if staged + unpacks + pulls > 0 {
            tracing::debug!(staged, unpacks, pulls, "removed what interrupted image work left");
        }
    }

    /// Takes the store's lock (every change holds it).
    pub fn lock(&self) -> Result<Lock> {
        Ok(Lock::acquire(&self.dir.join("lock"))?)
    }

    /// Path of a blob. A string that is not a valid digest maps to a name no blob has (never a
    /// path outside the store); parse with [`Digest::parse`] to learn why.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(file_name_of(digest))
    }

    /// Path of an unpacked layer (same rule as [`ImageStore::blob_path`]).
    pub fn layer_path(&self, chain_id: &str) -> PathBuf {
        self.dir.join("layers").join(file_name_of(chain_id))
    }

    /// Path of the blob `digest`.
    fn blob(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// Path of the unpacked layer of chain id `chain`.
    fn layer(&self, chain: &Digest) -> PathBuf {
        self.dir.join("layers").join(chain.hex())
    }

    fn index_path(&self) -> PathBuf {
        self.dir.join("index.json")
    }

    /// `index.json`; a damaged one is written anew from its copy (`index.json.copy`, see
    /// [`ImageStore::write_index`]) when that can be read, otherwise it is an error that
    /// names it and says what to do.
    fn read_index(&self) -> Result<StoreIndex> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(bytes) => match parse_record(&bytes, &path) {
                Ok(index) => Ok(index),
                Err(ImageError::Corrupt { path: shown, message }) => {
                    let copy = crate::state::copy_path(&path);
                    let restored = fs::read(&copy).ok().and_then(|b| {
                        parse_record::<StoreIndex>(&b, &copy).ok().map(|index| (index, b))
                    });
                    let Some((index, bytes)) = restored else {
                        return Err(ImageError::Corrupt {
                            path: shown,
                            message: format!(
                                "{message}; its copy {} cannot be read either: move both away to start \
                                 with an empty image store, then pull, load or import the images again",
                                copy.display()
                            ),
                        });
                    };
                    crate::state::report_repair(&path, "image index written anew from its copy");
                    write_atomic(&path, &bytes)?;
                    Ok(index)
                }
                Err(e) => Err(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(StoreIndex {
                schema_version: 2,
                media_type: Some("application/vnd.oci.image.index.v1+json".into()),
                manifests: Vec::new(),
                other: Map::new(),
            }),
            Err(e) => Err(io_at(&path)(e)),
        }
    }

    /// Fails when `index.json` cannot be read as a valid index.
    pub(crate) fn check_index(&self) -> Result<()> {
        self.read_index().map(|_| ())
    }

    fn write_index(&self, index: &StoreIndex) -> Result<()> {
        let path = self.index_path();
        let text = serde_json::to_vec_pretty(index).map_err(io::Error::other).map_err(io_at(&path))?;
        // Other OCI tools read this file too: it must stay a valid OCI index.
        serde_json::from_slice::<ImageIndex>(&text)
            .map_err(|e| ImageError::Corrupt { path: path.display().to_string(), message: e.to_string() })?;
        // The copy first (as `state::write_json_with_copy`): a damaged index is written anew
        // from it with every name it gave (see `read_index`).
        write_atomic(&crate::state::copy_path(&path), &text)?;
        Ok(write_atomic(&path, &text)?)
    }

    /// Stores bytes as a blob; returns the digest.
    pub(crate) fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = Digest::of(bytes);
        let path = self.blob(&digest);
        // A blob there whose content is not what its name says (cut short, overwritten) is
        // replaced: getting the image again repairs it.
        if fs::read(&path).map_or(true, |old| Digest::of(&old) != digest) {
            write_atomic(&path, bytes)?;
        }
        Ok(digest.to_string())
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
        let digest = Digest::parse(&hashing.finish().map_err(io_at(file))?)?;
        if let Some(want) = expected
            && digest != want
        {
            return Err(ImageError::Invalid {
                source_name: source.to_string(),
                message: format!("{}: digest is {digest}, expected {want}", file.display()),
                cause: None,
            });
        }
        let dest = self.blob(&digest);
        // A blob there of another size (cut short, emptied, overwritten) is replaced, at once
        // (a reader sees the old file or the new one): storing the image again repairs it. Its
        // content is verified when it is unpacked from (`ensure_layer`).
        let have = fs::metadata(&dest).ok().map(|m| m.len());
        if have != Some(size) {
            if have.is_some() {
                crate::state::report_repair(&dest, "blob of the wrong size; stored again");
            }
            // A hard link leaves the staged file for a second image of the same archive.
            let tmp = dest.with_extension("tmp");
            let _ = fs::remove_file(&tmp);
            if fs::hard_link(file, &tmp).is_err() {
                fs::copy(file, &tmp).map_err(io_at(&tmp))?;
            }
            fs::rename(&tmp, &dest).map_err(io_at(&dest))?;
        }
        Ok((digest.to_string(), size))
    }

    /// Unpacks layer blob `blob` on top of `parent_chain` unless that chain is unpacked already
    /// and whole (see [`integrity`]; a damaged one is unpacked again and replaced). Verifies
    /// the diff id against `expected_diff_id` when given, and the blob's digest as it is read:
    /// a blob that is not what its name says is removed, and the error names it. Returns
    /// (diff id, chain id).
    pub(crate) fn ensure_layer(
        &self,
        blob: &str,
        parent_chain: Option<&str>,
        expected_diff_id: Option<&str>,
        source: &str,
    ) -> Result<(String, String)> {
        let blob = Digest::parse(blob)?;
        let parent_chain = parent_chain.map(Digest::parse).transpose()?;
        let expected_diff_id = expected_diff_id.map(Digest::parse).transpose()?;
        let chain_for = |diff: &Digest| match &parent_chain {
            None => diff.clone(),
            Some(p) => Digest::of(format!("{p} {diff}").as_bytes()),
        };
        if let Some(want) = &expected_diff_id
            && self.layer_whole(&chain_for(want), want)?
        {
            return Ok((want.to_string(), chain_for(want).to_string()));
        }
        // Removed when dropped, and by the next store operation if this process is killed.
        let tmp = Staging::create(&self.dir.join("layers"), LAYER_TMP_PREFIX).map_err(io_at(&self.dir))?;
        let path = self.blob(&blob);
        let file = fs::File::open(&path).map_err(io_at(&path))?;
        let mut hashing = unpack::HashingReader::new(file);
        // Either error stays the cause of the `Invalid` below.
        let unpacked = unpack::decompressed(&mut hashing)
            .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
            .and_then(|(_, reader)| unpack::unpack(reader, tmp.path()).map_err(Into::into));
        // The rest of the blob (past the tar's end) counts too.
        let read = hashing.finish();
        if let Ok(have) = &read
            && have != blob.as_str()
        {
            let _ = fs::remove_file(&path);
            crate::state::report_repair(&path, "the layer blob's content is not its digest; removed");
            return Err(damaged_blob(&path, &format!("its content's digest is {have}"), source));
        }
        read.map_err(io_at(&path))?;
        let unpacked = unpacked
            .map_err(|e| ImageError::Invalid {
                source_name: source.to_string(),
                message: format!("layer {blob}: {e}"),
                cause: Some(e),
            })?;
        let diff_id = Digest::parse(&unpacked.diff_id)?;
        if let Some(want) = &expected_diff_id
            && want != &diff_id
        {
            return Err(ImageError::Invalid {
                source_name: source.to_string(),
                message: format!("layer {blob}: diff id is {diff_id}, the config says {want}"),
                cause: None,
            });
        }
        let chain = chain_for(&diff_id);
        let how = format!("unpacked again from {}", path.display());
        self.install_layer(tmp.path(), &chain, &diff_id, Some(unpacked.shape), &how)?;
        Ok((diff_id.to_string(), chain.to_string()))
    }

    /// Whether the unpacked layer of `chain` is there and whole for `diff_id`. A folder
    /// without its marker that a container's spec lists is taken as it is (a berth before
    /// markers unpacked it; replacing a mounted lower dir would break a running container)
    /// and its marker written; any other unmarked folder is not whole.
    fn layer_whole(&self, chain: &Digest, diff_id: &Digest) -> Result<bool> {
        let dir = self.layer(chain);
        Ok(match integrity::check(&dir, diff_id) {
            integrity::LayerState::Whole => true,
            integrity::LayerState::Unmarked if self.container_layers().contains(chain.hex()) => {
                let shape = integrity::shape_of(&dir).map_err(io_at(&dir))?;
                write_atomic(&integrity::marker_path(&dir), integrity::marker_text(diff_id, shape).as_bytes())?;
                true
            }
            _ => false,
        })
    }

    /// Puts the unpacked folder `unpacked` in place as the layer of `chain` (diff id
    /// `diff_id`), replacing what is there unless it is whole, then writes its completion
    /// marker with `shape`, the folder's (walked here when the unpack's is not known). A
    /// replacement is reported (`how`: where the new one came from).
    fn install_layer(
        &self,
        unpacked: &Path,
        chain: &Digest,
        diff_id: &Digest,
        shape: Option<integrity::Shape>,
        how: &str,
    ) -> Result<()> {
        let dest = self.layer(chain);
        let marker = integrity::marker_path(&dest);
        // One install of a layer at a time (unpacks run in parallel, builds without the
        // store's lock): the second finds the first's whole and leaves it.
        let lock_path = self.dir.join("layers.lock");
        let _lock = Lock::acquire(&lock_path)?;
        let state = integrity::check(&dest, diff_id);
        if state == integrity::LayerState::Whole {
            return Ok(());
        }
        let shape = match shape {
            Some(shape) => shape,
            None => integrity::shape_of(unpacked).map_err(io_at(unpacked))?,
        };
        integrity::forget(&dest);
        // The old marker goes first: a kill after this leaves a folder without one, which is
        // unpacked again.
        if let Err(e) = fs::remove_file(&marker)
            && e.kind() != io::ErrorKind::NotFound
        {
            return Err(io_at(&marker)(e));
        }
        if state != integrity::LayerState::Missing {
            // Moved into a work dir of its own, which goes when dropped (or, after a kill, by
            // the next sweep).
            let trash = Staging::create(&self.dir.join("layers"), LAYER_TMP_PREFIX).map_err(io_at(&self.dir))?;
            if dest.is_dir() {
                fs::rename(&dest, trash.path()).map_err(io_at(&dest))?;
            } else {
                fs::remove_file(&dest).map_err(io_at(&dest))?;
            }
            let why = match &state {
                integrity::LayerState::Damaged(why) => why.clone(),
                _ => "its completion marker is missing".to_string(),
            };
            crate::state::report_repair(&dest, &format!("unpacked layer ({why}) {how}"));
        }
        // The marker before the folder: a reader sees no folder (missing: unpacked again after
        // a kill here) or a whole one, never a folder without its marker (which a parallel pull
        // of the same layer would take for damaged and unpack again).
        write_atomic(&marker, integrity::marker_text(diff_id, shape).as_bytes())?;
        fs::rename(unpacked, &dest).map_err(io_at(&dest))?;
        Ok(())
    }

    /// As [`ImageStore::install_layer`] for a pull's staged unpack (string digests).
    pub(crate) fn install_staged_layer(
        &self,
        unpacked: &Path,
        chain: &str,
        diff_id: &str,
        shape: Option<integrity::Shape>,
    ) -> Result<()> {
        let (chain, diff_id) = (Digest::parse(chain)?, Digest::parse(diff_id)?);
        self.install_layer(unpacked, &chain, &diff_id, shape, "replaced by the pulled one")
    }

    /// Whether the unpacked layer `chain` (string digests) is there and whole.
    pub(crate) fn layer_is_whole(&self, chain: &str, diff_id: &str) -> bool {
        match (Digest::parse(chain), Digest::parse(diff_id)) {
            (Ok(c), Ok(d)) => self.layer_whole(&c, &d).unwrap_or(false),
            _ => false,
        }
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
        let digest = Digest::parse(manifest_digest)?;
        self.add_manifests(&[NewManifest { digest: &digest, size, media_type, names }])
    }

    /// Records several manifests in one write of `index.json`: all of them or none.
    pub(crate) fn add_manifests(&self, new: &[NewManifest<'_>]) -> Result<()> {
        let mut index = self.read_index()?;
        // When the names were given: `pull_policy: daily` and docker's LastTagTime read it.
        let now = crate::runtime::timefmt::rfc3339_nanos(std::time::SystemTime::now());
        for m in new {
            let full: BTreeSet<String> = m.names.iter().map(Reference::full).collect();
            index.manifests.retain(|d| {
                let same_untagged = d.name().is_none() && &d.digest == m.digest;
                !same_untagged && !d.name().is_some_and(|n| full.contains(n))
            });
            let desc = |name: Option<&String>| IndexEntry {
                media_type: m.media_type.to_string(),
                digest: m.digest.clone(),
                size: m.size,
                annotations: name
                    .map(|n| {
                        BTreeMap::from([
                            (REF_NAME.to_string(), n.clone()),
                            (TAGGED_AT.to_string(), now.clone()),
                        ])
                    })
                    .unwrap_or_default(),
                other: Map::new(),
            };
            if full.is_empty() {
                if !index.manifests.iter().any(|d| &d.digest == m.digest) {
                    index.manifests.push(desc(None));
                }
            } else {
                for n in &full {
                    index.manifests.push(desc(Some(n)));
                }
            }
        }
        self.write_index(&index)
    }

    /// Every image of the index, read; the first damaged one is an error (see
    /// [`ImageStore::entries_all`] for a read that goes on past them).
    fn entries(&self) -> Result<Vec<Entry>> {
        let (entries, damaged) = self.entries_all()?;
        match damaged.first() {
            Some(d) => Err(d.error()),
            None => Ok(entries),
        }
    }

    /// Every image of the index: those that can be read, and those whose manifest or config
    /// cannot (damaged or missing). A damaged index is an error.
    fn entries_all(&self) -> Result<(Vec<Entry>, Vec<DamagedEntry>)> {
        let index = self.read_index()?;
        let mut by_digest: BTreeMap<Digest, Vec<Reference>> = BTreeMap::new();
        let mut order = Vec::new();
        for d in &index.manifests {
            if !by_digest.contains_key(&d.digest) {
                order.push(d.digest.clone());
            }
            let names = by_digest.entry(d.digest.clone()).or_default();
            if let Some(n) = d.name()
                && let Ok(r) = Reference::parse(n)
            {
                names.push(r);
            }
        }
        let mut out = Vec::new();
        let mut damaged = Vec::new();
        for digest in order {
            let names = by_digest.remove(&digest).unwrap_or_default();
            match self.read_entry(&digest, names.clone()) {
                Ok(entry) => out.push(entry),
                Err(e @ (ImageError::Corrupt { .. } | ImageError::Io { .. })) => {
                    damaged.push(DamagedEntry { manifest_digest: digest, names, detail: e.to_string() })
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out, damaged))
    }

    /// The image whose manifest is `digest`, named `names`: its manifest and config read,
    /// every digest in them checked.
    fn read_entry(&self, digest: &Digest, names: Vec<Reference>) -> Result<Entry> {
        let (manifest, manifest_path): (ImageManifest, _) = self.read_blob_record(digest)?;
        let corrupt =
            |path: &Path, e: BadDigest| ImageError::Corrupt { path: path.display().to_string(), message: e.to_string() };
        let config_digest =
            Digest::parse(manifest.config().digest().as_ref()).map_err(|e| corrupt(&manifest_path, e))?;
        let layers = Digest::parse_all(manifest.layers().iter().map(|l| l.digest().as_ref()))
            .map_err(|e| corrupt(&manifest_path, e))?;
        let (config, config_path): (ImageConfiguration, _) = self.read_blob_record(&config_digest)?;
        let diff_ids = Digest::parse_all(config.rootfs().diff_ids().iter().map(String::as_str))
            .map_err(|e| corrupt(&config_path, e))?;
        Ok(Entry { manifest_digest: digest.clone(), names, manifest, config, config_digest, layers, diff_ids })
    }

    /// A stored JSON blob (manifest or config), parsed; a damaged one is named in the error.
    fn read_blob_record<T: serde::de::DeserializeOwned>(&self, digest: &Digest) -> Result<(T, PathBuf)> {
        let path = self.blob(digest);
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        Ok((parse_record(&bytes, &path)?, path))
    }

    /// The image `reference` names (name, id or id prefix) among the images that can be read
    /// (the index of it in them, and the name it was found by). A damaged image named is an
    /// error saying what to do; a damaged other image is no matter.
    fn find(&self, reference: &str) -> Result<(Vec<Entry>, usize, Option<Reference>)> {
        let (entries, damaged) = self.entries_all()?;
        let hex_ref = reference.strip_prefix("sha256:").unwrap_or(reference);
        let looks_like_id =
            hex_ref.len() >= 4 && hex_ref.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
        if let Ok(r) = Reference::parse(reference) {
            if let Some(i) = entries.iter().position(|e| e.names.contains(&r)) {
                return Ok((entries, i, Some(r)));
            }
            if let Some(d) = damaged.iter().find(|d| d.names.contains(&r)) {
                return Err(d.error());
            }
            // `name@sha256:<manifest digest>` finds an image of that repository by content.
            if let Some(d) = &r.digest
                && let Some(i) = entries.iter().position(|e| {
                    e.manifest_digest == d.as_str() && e.names.iter().any(|n| n.repository == r.repository)
                })
            {
                return Ok((entries, i, None));
            }
        }
        if looks_like_id {
            let hits: Vec<usize> =
                (0..entries.len()).filter(|i| entries[*i].config_digest.hex().starts_with(hex_ref)).collect();
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
        let chains = chain_digests(&e.diff_ids);
        let layer_dirs: Vec<PathBuf> = chains.iter().map(|c| self.layer(c)).collect();
        // Each layer checked (cheaply, see `integrity`); one missing or damaged is unpacked
        // again from its blob, and when that cannot be, the image is damaged: the error says
        // which file and what to do.
        for (i, chain) in chains.iter().enumerate() {
            if self.layer_whole(chain, &e.diff_ids[i])? {
                continue;
            }
            let image = by_name_or_id(e);
            let Some(blob) = e.layers.get(i) else {
                return Err(ImageError::DamagedImage {
                    image,
                    detail: format!("its manifest lists fewer layers than its config ({})", e.diff_ids.len()),
                });
            };
            let parent = i.checked_sub(1).map(|p| chains[p].to_string());
            match self.ensure_layer(blob.as_str(), parent.as_deref(), Some(e.diff_ids[i].as_str()), &image) {
                Ok(_) => {}
                Err(damaged @ ImageError::DamagedImage { .. }) => return Err(damaged),
                Err(err) => {
                    return Err(ImageError::DamagedImage {
                        image,
                        detail: format!(
                            "its unpacked layer {} is missing or damaged, and unpacking it again failed: {err}",
                            layer_dirs[i].display()
                        ),
                    });
                }
            }
        }
        Ok(ResolvedImage {
            id: e.id(),
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
        if let Some(report) = self.remove_damaged(reference)? {
            return Ok(report);
        }
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
        index.manifests.retain(|d| {
            let same = d.digest == e.manifest_digest;
            match &by_name {
                Some(r) if !last_name => !(same && d.name() == Some(r.full().as_str())),
                _ => !same,
            }
        });
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

    /// Removes name `reference` when it names a damaged image (which cannot be used, and whose
    /// users cannot be told from its config): its name goes, and the image with its last name
    /// (the damaged files with it, by `gc`). `None` when it names no damaged image.
    fn remove_damaged(&self, reference: &str) -> Result<Option<Vec<String>>> {
        let Ok(r) = Reference::parse(reference) else { return Ok(None) };
        let (_, damaged) = self.entries_all()?;
        let Some(d) = damaged.iter().find(|d| d.names.contains(&r)) else { return Ok(None) };
        let mut index = self.read_index()?;
        let full = r.full();
        index.manifests.retain(|x| x.name() != Some(full.as_str()));
        let mut report = vec![format!("Untagged: {}", r.short())];
        if !index.manifests.iter().any(|x| x.digest == d.manifest_digest) {
            report.push(format!("Deleted: {}", d.manifest_digest));
        }
        self.write_index(&index)?;
        self.gc()?;
        Ok(Some(report))
    }

    /// `image prune`: removes untagged images (with `all`, every image) that no container
    /// uses, then unreferenced content. Returns the removed ids with the names they had, and
    /// the bytes reclaimed.
    pub fn prune(&self, all: bool) -> Result<(Vec<PrunedImage>, u64)> {
        self.prune_selected(all, &|_| true)
    }

    /// As [`ImageStore::prune`], removing only images whose id (`sha256:...`) `selected`
    /// accepts (`image prune --filter`); unreferenced content goes all the same.
    pub fn prune_selected(
        &self,
        all: bool,
        selected: &dyn Fn(&str) -> bool,
    ) -> Result<(Vec<PrunedImage>, u64)> {
        let _lock = self.lock()?;
        let entries = self.entries()?;
        let doomed: Vec<&Entry> = entries
            .iter()
            .filter(|e| (all || e.names.is_empty()) && selected(&e.id()) && self.users(&e.id()).is_empty())
            .collect();
        let mut index = self.read_index()?;
        index.manifests.retain(|d| !doomed.iter().any(|e| d.digest == e.manifest_digest));
        self.write_index(&index)?;
        let ids = doomed.iter().map(|e| (e.id(), e.names.iter().map(Reference::short).collect())).collect();
        // What failed pulls left for a later pull to resume goes too, and what killed builds
        // left of their kept downloads (with `all`, every kept download).
        let staged = registry::clean_pull_staging(self);
        let kept = self.dir.parent().map_or(0, |root| build::cache::prune_downloads(root, all));
        Ok((ids, self.gc()? + staged + kept))
    }

    /// Removes blobs and unpacked layers that no image in the index references, and leftovers
    /// of interrupted work. Call with the lock held. Returns the bytes freed (blobs).
    pub(crate) fn gc(&self) -> Result<u64> {
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        // A damaged record fails here, before anything is deleted: what it references is
        // unknown, so nothing may be taken for garbage.
        for e in self.entries()? {
            keep_blobs.insert(e.manifest_digest.hex().to_string());
            keep_blobs.insert(e.config_digest.hex().to_string());
            for l in &e.layers {
                keep_blobs.insert(l.hex().to_string());
            }
            for c in chain_digests(&e.diff_ids) {
                keep_layers.insert(c.hex().to_string());
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
            // Unpacks in progress (a cached build step unpacks without the store's lock) are
            // the sweep's to judge, by their locks; so are markers being written.
            if name.starts_with(LAYER_TMP_PREFIX) || crate::state::is_temp_name(&name) {
                continue;
            }
            let layer = name.strip_suffix(integrity::MARKER_SUFFIX).unwrap_or(&name);
            if !keep_layers.contains(layer) {
                let path = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path).map_err(io_at(&path))?;
                } else {
                    fs::remove_file(&path).map_err(io_at(&path))?;
                }
                integrity::forget(&path);
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
        let digest = entries[i].manifest_digest.to_string();
        let path = self.blob(&entries[i].manifest_digest);
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        let media_type = entries[i]
            .manifest
            .media_type()
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());
        Ok((digest, media_type, bytes))
    }

    /// A staging dir inside the store (same file system, so blobs can be renamed in), removed
    /// when dropped and, if this process is killed, by the next store operation.
    pub(crate) fn staging(&self) -> Result<Staging> {
        Staging::create(&self.dir, STAGING_PREFIX).map_err(io_at(&self.dir))
    }
}

// ---- Helpers for the image builder (`build::builder`) ----

impl ImageStore {
    /// The raw JSON of image `id`'s config blob (docker fields the OCI type drops, such as
    /// `Healthcheck`, `Shell` and `OnBuild`, included).
    pub(crate) fn raw_config(&self, id: &str) -> Result<Value> {
        Ok(self.read_blob_record(&Digest::parse(id)?)?.0)
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

/// Reads all of the tar archive (plain, gzip or zstd) `reader`, named `source` in errors, into
/// a file in `dir`; returns its path. A stream whose start cannot be a tar archive is refused
/// before more of it is read (`/dev/zero` would never end).
pub(crate) fn spool_archive(reader: &mut dyn Read, dir: &Path, name: &str, source: &str) -> Result<PathBuf> {
    let (head, complete) = unpack::read_head(reader).map_err(io_at(Path::new(source)))?;
    unpack::check_archive_head(&head, complete)
        .map_err(|e| ImageError::Invalid {
            source_name: source.to_string(),
            message: e.to_string(),
            cause: Some(e.into()),
        })?;
    let path = dir.join(name);
    let mut f = fs::File::create(&path).map_err(io_at(&path))?;
    f.write_all(&head).map_err(io_at(&path))?;
    io::copy(reader, &mut f).map_err(io_at(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ImageStore) {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let store = ImageStore::open(&Dirs::new(dir.path().join("root"), dir.path().join("run"))).unwrap();
        (dir, store)
    }

    /// An image imported from a one-file layer: (store, its id).
    fn with_image() -> (tempfile::TempDir, ImageStore, String) {
        let (dir, store) = store();
        let layer = load::tests::tar_of(&[("f", b"x")]);
        let r = Reference::parse("test/a:1").unwrap();
        let id = import::import(&store, import::ImportSource::Reader(&mut &layer[..]), Some(&r), &[], None)
            .unwrap();
        (dir, store, id)
    }

    #[test]
    fn a_damaged_index_is_an_error_naming_it_and_deletes_nothing() {
        let (_dir, store, id) = with_image();
        let index = store.dir().join("index.json");
        let good = fs::read(&index).unwrap();
        // Without its copy (with it, the index is written anew: below).
        let copy = crate::state::copy_path(&index);
        assert_eq!(fs::read(&copy).unwrap(), good);
        fs::remove_file(&copy).unwrap();
        let blobs = || fs::read_dir(store.dir().join("blobs/sha256")).unwrap().count();
        let before = blobs();
        let mut bad: Vec<(String, &str)> = vec![
            ("[]".into(), "index.json"),
            ("{".into(), "index.json"),
            (r#"{"schemaVersion":2}"#.into(), "manifests"),
        ];
        let v: Value = serde_json::from_slice(&good).unwrap();
        for (field, value, why) in [
            ("digest", json!("sha256:../../x"), "manifests[0].digest"),
            ("digest", json!(format!("sha256:{}", "A".repeat(64))), "manifests[0].digest"),
            ("size", json!(-1), "manifests[0].size"),
        ] {
            let mut v = v.clone();
            v["manifests"][0][field] = value;
            bad.push((v.to_string(), why));
        }
        for (text, why) in bad {
            fs::write(&index, &text).unwrap();
            for result in [
                store.list().map(|_| ()),
                store.prune(false).map(|_| ()),
                store.inspect("test/a:1").map(|_| ()),
                store.remove(&id, true).map(|_| ()),
                store.tag(&id, "test/b").map(|_| ()),
            ] {
                let err = result.unwrap_err().to_string();
                assert!(err.contains(&index.display().to_string()) && err.contains(why), "{text}: {err}");
            }
            let archive =
                load::tests::docker_archive(&[("test/c:1", None, vec![load::tests::tar_of(&[("g", b"y")])])]);
            assert!(load::load(&store, &mut &archive[..], "c.tar").is_err(), "{text}");
            assert_eq!(blobs(), before, "{text}: nothing collected");
        }
        fs::write(&index, &good).unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
        // With a readable copy, a damaged index (cut short, emptied, overwritten) is written
        // anew from it, names and all.
        fs::write(&copy, &good).unwrap();
        for damaged in [&good[..good.len() / 2], b"", b"\x00\xff garbage"] {
            fs::write(&index, damaged).unwrap();
            assert_eq!(store.list().unwrap()[0].repository, "test/a", "{damaged:?}");
            assert_eq!(fs::read(&index).unwrap(), good);
        }
    }

    #[test]
    fn a_damaged_image_is_named_with_what_to_do_the_others_work_and_it_can_be_removed() {
        let (_dir, store, id) = with_image();
        let layer = load::tests::tar_of(&[("g", b"y")]);
        let r = Reference::parse("test/b:1").unwrap();
        let other = import::import(&store, import::ImportSource::Reader(&mut &layer[..]), Some(&r), &[], None)
            .unwrap();
        let (manifest, _, _) = store.manifest_of("test/a:1").unwrap();
        let manifest_path = store.blob(&Digest::parse(&manifest).unwrap());
        let config_path = store.blob(&Digest::parse(&id).unwrap());
        let whole = fs::read(&manifest_path).unwrap();
        for (path, damaged) in [
            (&manifest_path, whole[..whole.len() / 2].to_vec()),
            (&manifest_path, Vec::new()),
            (&config_path, b"\x01\x02garbage".to_vec()),
        ] {
            let keep = fs::read(path).unwrap();
            fs::write(path, &damaged).unwrap();
            let err = store.resolve("test/a:1").unwrap_err().to_string();
            assert!(
                err.contains(&path.display().to_string()) && err.contains("berth image rm -f test/a:1"),
                "{err}"
            );
            // The other image is no matter of it; listing and collecting refuse (nothing can
            // be told of what the damaged one uses).
            assert_eq!(store.resolve("test/b:1").unwrap().id, other);
            assert!(store.list().is_err());
            fs::write(path, keep).unwrap();
        }
        fs::write(&manifest_path, b"").unwrap();
        let report = store.remove("test/a:1", false).unwrap();
        assert_eq!(report, ["Untagged: test/a:1".to_string(), format!("Deleted: {manifest}")]);
        assert!(!manifest_path.exists() && !config_path.exists(), "its files are collected");
        assert_eq!(store.list().unwrap().len(), 1);
        // A blob stored again whose file was damaged is written whole.
        let config = fs::read(store.blob(&Digest::parse(&other).unwrap())).unwrap();
        let other_path = store.blob(&Digest::parse(&other).unwrap());
        fs::write(&other_path, &config[..3]).unwrap();
        store.put_blob(&config).unwrap();
        assert_eq!(fs::read(&other_path).unwrap(), config);
    }

    /// The (only) layer of image `test/a:1`: (its unpacked folder, its blob).
    fn layer_files(store: &ImageStore) -> (PathBuf, PathBuf) {
        let (entries, i, _) = store.find("test/a:1").unwrap();
        let e = &entries[i];
        (store.layer(&chain_digests(&e.diff_ids)[0]), store.blob(&e.layers[0]))
    }

    #[test]
    fn a_damaged_unpacked_layer_is_unpacked_again_from_its_blob() {
        let (_dir, store, id) = with_image();
        let (layer, _) = layer_files(&store);
        let marker = integrity::marker_path(&layer);
        assert!(marker.is_file(), "an unpack leaves its completion marker");
        let whole = |store: &ImageStore| {
            assert_eq!(store.resolve("test/a:1").unwrap().id, id);
            assert_eq!(fs::read(layer.join("f")).unwrap(), b"x");
        };
        let damages: [(&str, &dyn Fn()); 5] = [
            ("cut short", &|| fs::write(layer.join("f"), b"").unwrap()),
            ("emptied", &|| fs::remove_file(layer.join("f")).unwrap()),
            ("garbage", &|| fs::write(layer.join("junk"), b"\x00\xff").unwrap()),
            ("marker lost", &|| fs::remove_file(&marker).unwrap()),
            ("marker garbage", &|| fs::write(&marker, b"\x01\x02").unwrap()),
        ];
        for (what, damage) in damages {
            // A process that found the layer whole keeps that answer: a new command is a new
            // process (here: the answer forgotten).
            integrity::forget(&layer);
            damage();
            whole(&store);
            assert!(!layer.join("junk").exists(), "{what}");
            assert_eq!(integrity::check(&layer, &layer_diff(&store)), integrity::LayerState::Whole, "{what}");
        }
        // Missing altogether: unpacked again too.
        integrity::forget(&layer);
        fs::remove_dir_all(&layer).unwrap();
        whole(&store);
        // No temp dirs left behind.
        let names: Vec<String> = fs::read_dir(store.dir().join("layers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// The diff id of `test/a:1`'s layer.
    fn layer_diff(store: &ImageStore) -> Digest {
        let (entries, i, _) = store.find("test/a:1").unwrap();
        entries[i].diff_ids[0].clone()
    }

    #[test]
    fn a_damaged_blob_under_a_damaged_layer_is_named_and_removed_and_storing_it_again_repairs_it() {
        for damage in [Damage::Half, Damage::Empty, Damage::Garbage] {
            let (_dir, store, _) = with_image();
            let (layer, blob) = layer_files(&store);
            let good = fs::read(&blob).unwrap();
            let bad = match damage {
                Damage::Half => good[..good.len() / 2].to_vec(),
                Damage::Empty => Vec::new(),
                Damage::Garbage => vec![0x5a; good.len()],
            };
            fs::write(&blob, &bad).unwrap();
            // A whole layer does not read its blob: nothing to tell yet.
            store.resolve("test/a:1").unwrap();
            integrity::forget(&layer);
            fs::remove_file(layer.join("f")).unwrap();
            let err = store.resolve("test/a:1").unwrap_err().to_string();
            assert!(
                err.contains(&blob.display().to_string()) && err.contains("berth image rm -f test/a:1"),
                "{damage:?}: {err}"
            );
            assert!(!blob.exists(), "{damage:?}: the damaged blob is removed");
            // Importing the image again stores the blob and unpacks the layer anew.
            let tar = load::tests::tar_of(&[("f", b"x")]);
            let r = Reference::parse("test/a:1").unwrap();
            import::import(&store, import::ImportSource::Reader(&mut &tar[..]), Some(&r), &[], None).unwrap();
            assert_eq!(fs::read(&blob).unwrap(), good, "{damage:?}");
            store.resolve("test/a:1").unwrap();
            assert_eq!(fs::read(layer.join("f")).unwrap(), b"x");
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Damage {
        Half,
        Empty,
        Garbage,
    }

    #[test]
    fn a_blob_of_the_wrong_size_is_replaced_when_stored_again() {
        let (dir, store, _) = with_image();
        let (_, blob) = layer_files(&store);
        let good = fs::read(&blob).unwrap();
        fs::write(&blob, &good[..good.len() / 2]).unwrap();
        let file = dir.path().join("blob");
        fs::write(&file, &good).unwrap();
        store.put_blob_file(&file, None, "test").unwrap();
        assert_eq!(fs::read(&blob).unwrap(), good);
        assert!(file.exists(), "the source stays");
    }

    #[test]
    fn an_unmarked_layer_a_container_uses_is_kept_as_it_is() {
        let (dir, store, _) = with_image();
        let (layer, _) = layer_files(&store);
        fs::remove_file(integrity::marker_path(&layer)).unwrap();
        integrity::forget(&layer);
        fs::write(layer.join("kept"), b"a container's lower dir").unwrap();
        let c = dir.path().join("root/containers/c1");
        fs::create_dir_all(&c).unwrap();
        let spec = json!({ "rootfs": { "lower_dirs": [layer.display().to_string()] } });
        fs::write(c.join("spec.json"), spec.to_string()).unwrap();
        store.resolve("test/a:1").unwrap();
        assert!(layer.join("kept").exists(), "not replaced under a container");
        assert!(integrity::marker_path(&layer).is_file(), "its marker is written");
    }

    #[test]
    fn stored_manifests_and_configs_are_checked_as_read() {
        let (_dir, store, id) = with_image();
        // A config whose diff id climbs out of `layers/`.
        let config_path = store.blob(&Digest::parse(&id).unwrap());
        let mut config: Value = serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
        config["rootfs"]["diff_ids"] = json!(["sha256:../../../etc"]);
        fs::write(&config_path, config.to_string()).unwrap();
        let err = store.resolve("test/a:1").unwrap_err().to_string();
        assert!(
            err.contains(&config_path.display().to_string()) && err.contains("not a sha256 digest"),
            "{err}"
        );
        // A string digest never maps outside the store.
        assert!(store.blob_path("sha256:../../x").starts_with(store.dir().join("blobs/sha256")));
        assert!(store.layer_path("../x").starts_with(store.dir().join("layers")));
    }

    #[test]
    fn the_next_store_operation_sweeps_dead_work_dirs_only() {
        let (dir, store) = store();
        let live = store.staging().unwrap();
        let live_layer = Staging::create(&store.dir().join("layers"), LAYER_TMP_PREFIX).unwrap();
        for dead in [store.dir().join(".staging-dead"), store.dir().join("layers/.tmp-dead")] {
            fs::create_dir_all(dead.join("x")).unwrap();
            let mut lock = dead.as_os_str().to_owned();
            lock.push(".lock");
            fs::write(lock, b"").unwrap();
        }
        let pull = store.dir().join(".pull");
        let h = "a".repeat(64);
        fs::create_dir_all(pull.join(format!("{h}.unpacking/x"))).unwrap();
        fs::write(pull.join(format!("{h}.partial")), b"resumable").unwrap();
        let again = ImageStore::open(&Dirs::new(dir.path().join("root"), dir.path().join("run"))).unwrap();
        assert!(
            !again.dir().join(".staging-dead").exists() && !again.dir().join("layers/.tmp-dead").exists()
        );
        assert!(!pull.join(format!("{h}.unpacking")).exists());
        assert!(pull.join(format!("{h}.partial")).exists(), "a download stays for the next pull to resume");
        assert!(live.path().is_dir() && live_layer.path().is_dir(), "live work is untouched");
        let _lock = again.lock().unwrap();
        again.gc().unwrap();
        assert!(live_layer.path().is_dir(), "gc leaves unpacks in progress alone");
    }

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let d = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        assert_eq!(c[1], digest_of(b"sha256:a sha256:b"));
    }
}
