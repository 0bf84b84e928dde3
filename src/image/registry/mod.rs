//! An OCI distribution (docker registry v2) client: pull and push images between the local
//! store and a registry, with docker's authentication and credential stores.
//!
//! Transport rules, as docker has them:
//! - HTTPS, trusting the system roots (`/etc/ssl/certs/ca-certificates.crt`) plus every
//!   `*.crt` in `<certs dir>/HOST[:PORT]/` (default `/etc/docker/certs.d`, `BERTH_CERTS_D`
//!   moves it); a `*.cert` with its `*.key` there is the client certificate.
//! - Registries on `localhost`, `127.0.0.0/8`, `::1` and the hosts listed in
//!   `BERTH_INSECURE_REGISTRIES` (comma-separated `host[:port]`) are "insecure": HTTPS is
//!   tried first and plain HTTP used when the TLS connection cannot be made.
//!
//! Staging rule of a pull: nothing is written under `blobs/` or `layers/` and no name is
//! recorded until every blob of the image is downloaded and verified and every layer unpacked;
//! then, under the store's lock, all of it is moved in and the name recorded at once. Until
//! then downloads live in `images/.pull/`: `<hex>.partial` (bytes so far, resumed with a
//! `Range` request by the next pull), `<hex>` (verified blob), `<hex>.d` (its unpacked layer).
//! A failed pull leaves only those, which the next pull reuses and `image prune` removes.

mod client;
pub mod credentials;
mod pull;
mod push;

use std::path::PathBuf;
use std::time::Duration;

pub use credentials::{CredentialStore, Credentials, CredentialsError};

pub(crate) use client::agent as http_agent;

use super::events::ImageEvents;
use super::{ImageError, ImageStore};

/// Removes what failed pulls left under `images/.pull` (see the staging rule above), except
/// downloads in progress; returns the bytes freed. `image prune` calls it.
pub fn clean_pull_staging(store: &ImageStore) -> u64 {
    pull::clean_pull_dir(store)
}

/// Removes the half-unpacked layers killed pulls left under `images/.pull` (not the downloads,
/// which the next pull resumes); every store operation calls it. Returns how many went.
pub(crate) fn clean_pull_unpacking(store: &ImageStore) -> usize {
    pull::clean_pull_unpacking(store)
}

/// The repositories (`registry/path`) a blob is known to have been pulled from or pushed to.
/// An image whose config is known in its own repository has a registry digest (docker's
/// `RepoDigests`).
pub fn known_repositories(store: &ImageStore, digest: &str) -> Vec<String> {
    pull::sources_of(store, digest)
}

/// Runs `work` on every item with at most `workers` threads taking the next item from a shared
/// queue (pull's layers, push's blobs); after the first failure no new item starts, and that
/// failure is returned.
pub(crate) fn for_each_bounded<T: Sync>(
    items: &[T],
    workers: usize,
    work: impl Fn(&T) -> Result<(), RegistryError> + Sync,
) -> Result<(), RegistryError> {
    use std::sync::Mutex;
    let next = Mutex::new(0usize);
    let first_error: Mutex<Option<RegistryError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(item) = items.get(i) else { return };
                    if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    if let Err(e) = work(item)
                        && let Ok(mut slot) = first_error.lock()
                        && slot.is_none()
                    {
                        *slot = Some(e);
                    }
                }
            });
        }
    });
    match first_error.into_inner().ok().flatten() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Why a downloaded layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// Its compression could not be read.
    #[error(transparent)]
    Decompress(std::io::Error),
    /// Its tar stream could not be unpacked.
    #[error(transparent)]
    Unpack(#[from] super::unpack::UnpackError),
    /// The unpacking thread panicked.
    #[error("the unpack thread panicked")]
    Panicked,
}

/// Failures of registry work. Each message names the image or registry concerned.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A bad image name.
    #[error(transparent)]
    Reference(#[from] super::reference::BadReference),
    /// A bad `--platform` / `platform:` value.
    #[error("invalid platform {0:?}: expected os/arch[/variant], such as linux/amd64 or linux/arm/v7")]
    Platform(String),
    /// The registry could not be reached (connection, TLS, timeout).
    #[error("registry {registry}: {message}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// What failed.
        message: String,
    },
    /// The registry accepted the connection but sent nothing back in time (a hung or silent
    /// server): not retried, since waiting again would only multiply the wait.
    #[error("registry {registry}: no answer within {seconds} s ({phase} timed out)")]
    Timeout {
        /// The registry host.
        registry: String,
        /// The bound that was hit, in seconds.
        seconds: u64,
        /// What was waited for: `connect`, `response`, `read`.
        phase: &'static str,
    },
    /// 401: no or wrong credentials.
    #[error("{what}: unauthorized: {message} (run `berth login {registry}`?)")]
    Unauthorized {
        /// The image or registry asked for.
        what: String,
        /// The registry host.
        registry: String,
        /// The registry's reason.
        message: String,
    },
    /// 403: the credentials do not allow this.
    #[error("{what}: access denied: {message}")]
    Denied {
        /// The image or registry asked for.
        what: String,
        /// The registry's reason.
        message: String,
    },
    /// 404: no such manifest, tag or blob.
    #[error("{what}: not found: {message}")]
    NotFound {
        /// The image, manifest or blob asked for.
        what: String,
        /// The registry's reason.
        message: String,
    },
    /// Any other failing status (5xx after retries, 400, ...).
    #[error("{what}: registry answered {status}: {message}")]
    Status {
        /// The image or blob.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The registry's reason.
        message: String,
    },
    /// Content that does not match the digest it was asked by.
    #[error("{what}: digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The image and blob.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what came.
        actual: String,
    },
    /// An index without this platform.
    #[error("{reference}: no manifest for platform {wanted}; available: {}", available.join(", "))]
    NoMatchingPlatform {
        /// The image.
        reference: String,
        /// The platform wanted.
        wanted: String,
        /// What the index has.
        available: Vec<String>,
    },
    /// A client key (`certs.d/<host>/*.key`) that is not a PEM private key.
    #[error("{path}: not a PEM private key: {source}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        source: Box<ureq::Error>,
    },
    /// A manifest or config berth cannot use.
    #[error("{what}: {message}")]
    Invalid {
        /// The image or blob.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// A manifest, index or token answer that is not the JSON it should be.
    #[error("{what}: {source}")]
    Malformed {
        /// The image, blob or registry answer.
        what: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A layer that could not be unpacked.
    #[error("{what}: {source}")]
    Layer {
        /// The image and layer.
        what: String,
        /// Why.
        #[source]
        source: LayerError,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] ImageError),
    /// Credentials could not be read or written.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// A local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// An image platform (`linux/amd64`, `linux/arm/v7`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`.
    pub architecture: String,
    /// `v7` for arm, `v8` for arm64 when given.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]` (docker's aliases: `x86_64` → amd64, `aarch64` → arm64).
    pub fn parse(s: &str) -> Result<Platform, RegistryError> {
        let bad = || RegistryError::Platform(s.to_string());
        let parts: Vec<&str> = s.trim().split('/').collect();
        if parts.len() < 2 || parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        let ok = |p: &str| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !parts.iter().all(|p| ok(p)) {
            return Err(bad());
        }
        let os = parts[0].to_ascii_lowercase();
        let (architecture, default_variant) = match parts[1].to_ascii_lowercase().as_str() {
            "x86_64" | "x86-64" => ("amd64".to_string(), None),
            "aarch64" => ("arm64".to_string(), None),
            "armhf" => ("arm".to_string(), Some("v7")),
            "armel" => ("arm".to_string(), Some("v6")),
            "i386" => ("386".to_string(), None),
            a => (a.to_string(), None),
        };
        let variant = parts.get(2).map(|v| v.to_ascii_lowercase()).or(default_variant.map(str::to_string));
        Ok(Platform { os, architecture, variant })
    }

    /// Whether a manifest's platform (`os`, `architecture`, `variant`) is this one. An arm64
    /// `v8` and no variant are the same; with no variant asked, any variant matches.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != architecture {
            return false;
        }
        let norm = |v: Option<&str>| match (architecture, v) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_string),
        };
        match &self.variant {
            None => true,
            Some(v) => norm(Some(v)) == norm(variant),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// How a [`Registry`] works.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// Layers downloaded at once per image (docker's default: 3).
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at once per image (docker's default: 5).
    pub max_concurrent_uploads: usize,
    /// docker's `certs.d` (CAs and client certificates per registry host).
    pub certs_dir: PathBuf,
    /// The system's CA bundle.
    pub system_roots: PathBuf,
    /// Extra registries allowed over plain HTTP (`host[:port]`).
    pub insecure_registries: Vec<String>,
    /// Where credentials are read from and written to.
    pub credentials: CredentialStore,
    /// Attempts of a request that fails on a connection error or a 5xx.
    pub attempts: u32,
    /// The first back-off between attempts (doubled each time).
    pub backoff: Duration,
    /// Connecting (TCP and TLS) gives up after this.
    pub connect_timeout: Duration,
    /// A read that gets nothing for this long fails. A download that made progress before
    /// is resumed; a request that got no answer at all is not retried.
    pub read_timeout: Duration,
    /// The first contact with a registry (`GET /v2/`) gives up after this in all.
    pub ping_timeout: Duration,
    /// Bytes per `PATCH` of a chunked upload.
    pub upload_chunk: usize,
}

impl RegistryOptions {
    /// Defaults, with `BERTH_CERTS_D`, `BERTH_INSECURE_REGISTRIES`, `DOCKER_CONFIG`,
    /// `REGISTRY_AUTH_FILE`, `XDG_RUNTIME_DIR` and `BERTH_REGISTRY_TIMEOUT` read from the
    /// environment.
    ///
    /// Timeouts follow docker's client: 10 s to connect (its TLS handshake bound), 15 s for
    /// the first `/v2/` ping, and a read that gets nothing for 30 s fails.
    /// `BERTH_REGISTRY_TIMEOUT=SECONDS` (a number, fractions allowed) sets the ping and read
    /// bounds (and the connect bound when smaller), for slow links or tests.
    pub fn from_env() -> RegistryOptions {
        let mut connect_timeout = Duration::from_secs(10);
        let mut ping_timeout = Duration::from_secs(15);
        let mut read_timeout = Duration::from_secs(30);
        if let Some(t) = std::env::var("BERTH_REGISTRY_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t > 0.0 && *t < 86_400.0)
        {
            let t = Duration::from_secs_f64(t);
            connect_timeout = connect_timeout.min(t);
            ping_timeout = t;
            read_timeout = t;
        }
        let certs_dir = std::env::var_os("BERTH_CERTS_D")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/docker/certs.d"));
        let insecure_registries = std::env::var("BERTH_INSECURE_REGISTRIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        RegistryOptions {
            max_concurrent_downloads: 3,
            max_concurrent_uploads: 5,
            certs_dir,
            system_roots: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            insecure_registries,
            credentials: CredentialStore::from_env(),
            attempts: 4,
            backoff: Duration::from_millis(500),
            connect_timeout,
            read_timeout,
            ping_timeout,
            upload_chunk: 8 << 20,
        }
    }
}

/// What a pull stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledImage {
    /// The image id (`sha256:` of its config).
    pub id: String,
    /// The digest of the (platform) manifest stored.
    pub manifest_digest: String,
    /// The full name recorded (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// False when the store already had this manifest under this name.
    pub updated: bool,
}

/// A registry client: one per command, shared by threads (it is `Send + Sync`); it keeps
/// connections, the scheme each host speaks, and bearer tokens.
pub struct Registry {
    client: client::Client,
    opts: RegistryOptions,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl Registry {
    /// A client working as `opts` say.
    pub fn new(opts: RegistryOptions) -> Registry {
        Registry { client: client::Client::new(opts.clone()), opts }
    }

    /// The options it works with (a build's `ADD <url>` downloads with the same).
    pub fn options(&self) -> &RegistryOptions {
        &self.opts
    }

    /// Pulls `reference` (for `platform`, or this host's) into `store`; the name is recorded
    /// only once every blob and layer is in.
    pub fn pull(
        &self,
        store: &ImageStore,
        reference: &str,
        platform: Option<&Platform>,
        events: &dyn ImageEvents,
    ) -> Result<PulledImage, RegistryError> {
        pull::pull(self, store, reference, platform, events)
    }

    /// The tags of `reference`'s repository in its registry (its tag or digest is ignored).
    pub fn tags(&self, reference: &str) -> Result<Vec<String>, RegistryError> {
        let r = super::Reference::parse(reference)?;
        pull::tags(&self.client, &r)
    }

    /// Pushes the store's image `reference` to its registry; returns the manifest digest.
    pub fn push(
        &self,
        store: &ImageStore,
        reference: &str,
        events: &dyn ImageEvents,
    ) -> Result<String, RegistryError> {
        push::push(self, store, reference, events)
    }

    /// Checks `username`/`password` against registry `server` (`docker.io`, `host:port`).
    pub fn login(&self, server: &str, username: &str, password: &str) -> Result<(), RegistryError> {
        self.client.login(server, username, password)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(p, Platform { os: "linux".into(), architecture: "amd64".into(), variant: None });
        assert!(p.matches("linux", "amd64", None));
        assert!(!p.matches("linux", "arm64", None));
        let p = Platform::parse("linux/arm/v7").unwrap();
        assert!(p.matches("linux", "arm", Some("v7")));
        assert!(!p.matches("linux", "arm", Some("v6")));
        assert_eq!(p.to_string(), "linux/arm/v7");
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(p.matches("linux", "arm64", None));
        assert_eq!(Platform::parse("linux/x86_64").unwrap().architecture, "amd64");
        for bad in ["", "linux", "linux/", "a/b/c/d", "linux/am d64"] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn registry_is_shareable() {
        fn check<T: Send + Sync>() {}
        check::<Registry>();
    }
}
