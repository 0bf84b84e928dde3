//! Remote sources of `ADD`, told apart and named as BuildKit's Dockerfile frontend does
//! (`dockerfile2llb/convert_copy.go`, `dfgitutil.ParseGitRef`), and files fetched from HTTP(S)
//! URLs as its `source/http` does. Git repositories are checked out by [`super::git`].
//!
//! - A word is a git source when it is `git://…`, `ssh://…`, `user@host:path` (scp style), or
//!   `http(s)://…` whose path ends in `.git`; `#ref:subdir` and BuildKit's query keys (`ref`,
//!   `tag`, `branch`, `subdir`, `checksum`/`commit`, `keep-git-dir`, `submodules`, `mtime`,
//!   `fetch-by-commit`)
//!   say what of it. Any other `http://` or `https://` word is a file to download; everything
//!   else is a path in the context.
//! - A download is named after the last element of the URL's path (`__unnamed__` when there
//!   is none; BuildKit's frontend fixes the name, so `Content-Disposition` plays no part), is
//!   mode 0600, owned by root, and has the `Last-Modified` time (the epoch without one). It is
//!   never unpacked unless `--unpack=true` says so.
//! - Downloads go through the registry client's HTTP stack ([`crate::image::registry`]): the
//!   same CA roots and `certs.d` client certificates, timeouts and proxies.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::image::registry::{RegistryOptions, http_agent};

/// What an `ADD` source word is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path in the context (or the `--from` root).
    Local,
    /// A file to download.
    Http(String),
    /// A git repository.
    Git(GitRef),
}

/// A git source as BuildKit parses it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GitRef {
    /// The repository, without the fragment and query.
    pub remote: String,
    /// Branch, tag, full ref or commit; empty for the remote's default branch.
    pub reference: String,
    /// A directory of the repository whose contents are taken (clean, relative; empty for all).
    pub subdir: String,
    /// `?checksum=` / `?commit=`: the commit (a prefix of it) the ref must resolve to.
    pub checksum: Option<String>,
    /// `?keep-git-dir=`.
    pub keep_git_dir: Option<bool>,
    /// `?submodules=` (default: submodules are checked out).
    pub submodules: Option<bool>,
    /// `?mtime=commit`: files get the commit's time rather than the checkout's.
    pub mtime_commit: bool,
    /// `?fetch-by-commit`: the checksum is the commit, fetched by id without asking the
    /// remote what the ref points to; the ref only names it in a kept `.git`.
    pub fetch_by_commit: bool,
}

/// A git source's query (`?ref=...&subdir=...`) BuildKit refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A key given twice.
    #[error("query {0:?} has multiple values")]
    Repeated(String),
    /// A key that needs a value has none.
    #[error("query {0:?} has no value")]
    Empty(String),
    /// A flag whose value is not a boolean.
    #[error("invalid {key} value: {value:?}")]
    Flag {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Two different refs (the fragment's, `ref`, `tag`, `branch`).
    #[error("ref conflicts: {0:?} vs {1:?}")]
    Ref(String, String),
    /// Two different subdirs (the fragment's and `subdir`).
    #[error("subdir conflicts: {0:?} vs {1:?}")]
    Subdir(String, String),
    /// Both `tag` and `branch`.
    #[error("branch conflicts with tag")]
    BranchAndTag,
    /// `mtime` other than `checkout` or `commit`.
    #[error("invalid mtime value: {0:?} (must be \"checkout\" or \"commit\")")]
    Mtime(String),
    /// A key BuildKit does not know.
    #[error("unexpected query {0:?}")]
    Unexpected(String),
}

/// Why a remote source could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The source word is a remote source, but a wrong one.
    #[error("{0}")]
    Invalid(String),
    /// A git source's query BuildKit refuses.
    #[error("{src}: {source}")]
    Query {
        /// The source word.
        src: String,
        /// Why.
        source: QueryError,
    },
    /// The server answered with a failure status.
    #[error("{url}: HTTP status {status}{}", if .reason.is_empty() { String::new() } else { format!(" ({})", .reason) })]
    Status {
        /// The URL, without credentials.
        url: String,
        /// The status code.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// No answer: connection refused, DNS, TLS, a timeout, a connection cut mid-body.
    #[error("{url}: {message}")]
    Transport {
        /// The URL, without credentials.
        url: String,
        /// What went wrong (with the cause's own message, when there is one).
        message: String,
        /// The HTTP stack's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The content is not what `--checksum` says (BuildKit's words).
    #[error("digest mismatch for {url}: {got} (expected: {expected})")]
    Checksum {
        /// The URL, without credentials.
        url: String,
        /// The checksum given (`ALGO:HEX`).
        expected: String,
        /// The content's digest in the same algorithm (`ALGO:HEX`).
        got: String,
    },
    /// A local file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A git command failed.
    #[error("{0}")]
    Git(String),
    /// A git command ran longer than it may, and was stopped.
    #[error("git {command} did not finish within {seconds} s (BERTH_GIT_TIMEOUT sets the limit, in seconds)")]
    GitTimeout {
        /// The git subcommand (`fetch`, `ls-remote`, ...).
        command: String,
        /// The limit.
        seconds: u64,
    },
    /// The build was cancelled (Ctrl-C, SIGTERM) while git ran; git was stopped.
    #[error("cancelled")]
    Cancelled,
}

/// What `src` is (see the module's rules); an error for a malformed git source.
pub fn classify(src: &str) -> Result<Source, RemoteError> {
    if let Some(g) = parse_git_ref(src)? {
        return Ok(Source::Git(g));
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        return Ok(Source::Http(src.to_string()));
    }
    Ok(Source::Local)
}

/// `s` with `%XX` escapes decoded (invalid ones kept as they are), as Go's URL parser gives a
/// path or fragment.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = ((b[i + 1] as char).to_digit(16), (b[i + 2] as char).to_digit(16))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The scp-style git address BuildKit recognises (`user@host:path[?query][#fragment]`).
fn scp_style(src: &str) -> Option<regex::Captures<'_>> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^([a-zA-Z0-9\-_]+)@([a-zA-Z0-9\-.]+):(.*?)(?:\?(.*?))?(?:#(.*))?$")
            .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
    })
    .captures(src)
}

/// A git source (see the module's rules), `None` for anything else.
pub fn parse_git_ref(src: &str) -> Result<Option<GitRef>, RemoteError> {
    if src.starts_with("./") || src.starts_with("../") || src.starts_with("github.com/") {
        // `github.com/org/repo` is a git source only as a build context, never for ADD.
        return Ok(None);
    }
    let (remote, fragment, query): (String, String, String);
    let scheme_end =
        src.find("://").filter(|i| *i > 0 && src[..*i].bytes().all(|c| c.is_ascii_alphanumeric()));
    if let Some(i) = scheme_end {
        let scheme = src[..i].to_ascii_lowercase();
        if !matches!(scheme.as_str(), "http" | "https" | "ssh" | "git") {
            return Ok(None);
        }
        let Ok(mut u) = url::Url::parse(src) else { return Ok(None) };
        if matches!(scheme.as_str(), "http" | "https") && !u.path().ends_with(".git") {
            return Ok(None);
        }
        fragment = percent_decode(u.fragment().unwrap_or_default());
        query = u.query().unwrap_or_default().to_string();
        u.set_fragment(None);
        u.set_query(None);
        remote = u.to_string();
    } else if let Some(c) = scp_style(src) {
        fragment = c.get(5).map_or("", |m| m.as_str()).to_string();
        query = c.get(4).map_or("", |m| m.as_str()).to_string();
        remote = format!("{}@{}:{}", &c[1], &c[2], &c[3]);
    } else {
        return Ok(None);
    }
    let mut g = GitRef { remote, ..GitRef::default() };
    if !fragment.is_empty() {
        let (r, sub) = fragment.split_once(':').unwrap_or((&fragment, ""));
        g.reference = r.to_string();
        g.subdir = clean_subdir(sub);
    }
    load_query(&mut g, &query).map_err(|source| RemoteError::Query { src: src.to_string(), source })?;
    Ok(Some(g))
}

/// `path.Join("/", s)` without the leading slash.
fn clean_subdir(s: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in s.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// BuildKit's query keys of a git source.
fn load_query(g: &mut GitRef, query: &str) -> Result<(), QueryError> {
    if query.is_empty() {
        return Ok(());
    }
    let mut seen: Vec<String> = Vec::new();
    let (mut tag, mut branch) = (String::new(), String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let (k, v) = (k.into_owned(), v.into_owned());
        if seen.contains(&k) {
            return Err(QueryError::Repeated(k));
        }
        seen.push(k.clone());
        let flag = |name: &str| -> Result<bool, QueryError> {
            if v.is_empty() {
                Ok(true)
            } else {
                parse_bool(&v).ok_or_else(|| QueryError::Flag { key: name.to_string(), value: v.clone() })
            }
        };
        if v.is_empty() && !matches!(k.as_str(), "submodules" | "keep-git-dir" | "fetch-by-commit") {
            return Err(QueryError::Empty(k));
        }
        match k.as_str() {
            "ref" => {
                if !g.reference.is_empty() && g.reference != v {
                    return Err(QueryError::Ref(g.reference.clone(), v));
                }
                g.reference = v;
            }
            "tag" => tag = v,
            "branch" => branch = v,
            "subdir" => {
                let v = clean_subdir(&v);
                if !g.subdir.is_empty() && g.subdir != v {
                    return Err(QueryError::Subdir(g.subdir.clone(), v));
                }
                g.subdir = v;
            }
            "checksum" | "commit" => g.checksum = Some(v),
            "keep-git-dir" => g.keep_git_dir = Some(flag("keep-git-dir")?),
            "submodules" => g.submodules = Some(flag("submodules")?),
            "fetch-by-commit" => g.fetch_by_commit = flag("fetch-by-commit")?,
            "mtime" => match v.as_str() {
                "checkout" => g.mtime_commit = false,
                "commit" => g.mtime_commit = true,
                _ => return Err(QueryError::Mtime(v)),
            },
            other => return Err(QueryError::Unexpected(other.to_string())),
        }
    }
    let mut pin = |prefix: &str, name: &str| -> Result<(), QueryError> {
        let full = if name.starts_with(prefix) { name.to_string() } else { format!("{prefix}{name}") };
        if !g.reference.is_empty() && g.reference != full {
            return Err(QueryError::Ref(g.reference.clone(), full));
        }
        g.reference = full;
        Ok(())
    };
    if !tag.is_empty() {
        if !branch.is_empty() {
            return Err(QueryError::BranchAndTag);
        }
        pin("refs/tags/", &tag)?;
    }
    if !branch.is_empty() {
        pin("refs/heads/", &branch)?;
    }
    Ok(())
}

/// The name BuildKit's frontend gives a download: the last element of the URL's path
/// (`__unnamed__` when it has none), made safe (`download` for `..` or control characters).
pub fn url_file_name(url: &str) -> String {
    // The path as Go's URL parser gives it (decoded, dot segments kept as they are): after
    // `scheme://authority`, up to the query or fragment.
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    let rest = &rest[..rest.find(['?', '#']).unwrap_or(rest.len())];
    let path = percent_decode(rest.find('/').map_or("", |i| &rest[i..]));
    let trimmed = path.trim_end_matches('/');
    let name = match trimmed.rsplit('/').next() {
        Some(base) if !trimmed.is_empty() && base != "." => base,
        _ => "__unnamed__",
    };
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." || name.chars().any(char::is_control) {
        "download".to_string()
    } else {
        name.to_string()
    }
}

/// `url` with any password replaced, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("xxxxx"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// A hash algorithm `ADD --checksum` takes for a download: those of the OCI digest library
/// BuildKit's frontend parses the flag with (`digest.Parse`: sha256, sha384, sha512).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgo {
    /// `sha256:` (64 hex digits).
    Sha256,
    /// `sha384:` (96 hex digits).
    Sha384,
    /// `sha512:` (128 hex digits).
    Sha512,
}

impl ChecksumAlgo {
    fn name(self) -> &'static str {
        match self {
            ChecksumAlgo::Sha256 => "sha256",
            ChecksumAlgo::Sha384 => "sha384",
            ChecksumAlgo::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            ChecksumAlgo::Sha256 => 64,
            ChecksumAlgo::Sha384 => 96,
            ChecksumAlgo::Sha512 => 128,
        }
    }
}

/// `ADD --checksum=ALGO:HEX` of a download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpChecksum {
    /// The algorithm.
    pub algo: ChecksumAlgo,
    /// Its digest, lower-case hex.
    pub hex: String,
}

impl std::fmt::Display for HttpChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.algo.name(), self.hex)
    }
}

/// Parses `--checksum` of a download as BuildKit does (`digest.Parse` of go-digest), with its
/// error texts: `invalid checksum digest format` (no `ALGO:`, or not lower-case hex),
/// `unsupported digest algorithm`, `invalid checksum digest length`.
pub fn parse_http_checksum(text: &str) -> Result<HttpChecksum, RemoteError> {
    let fail = |m: &str| RemoteError::Invalid(format!("--checksum={text}: {m}"));
    let (algo, hex) = match text.find(':') {
        Some(i) if i > 0 && i + 1 < text.len() => (&text[..i], &text[i + 1..]),
        _ => return Err(fail("invalid checksum digest format")),
    };
    let algo = match algo {
        "sha256" => ChecksumAlgo::Sha256,
        "sha384" => ChecksumAlgo::Sha384,
        "sha512" => ChecksumAlgo::Sha512,
        other => {
            // go-digest: a name of the digest grammar is unsupported, anything else malformed.
            let name_ok = other.split(['.', '+', '_', '-']).all(|p| {
                !p.is_empty() && p.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            });
            let enc_ok = hex.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'=' | b'_' | b'-'));
            return Err(fail(if name_ok && enc_ok {
                "unsupported digest algorithm"
            } else {
                "invalid checksum digest format"
            }));
        }
    };
    if hex.len() != algo.hex_len() {
        return Err(fail("invalid checksum digest length"));
    }
    if !hex.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)) {
        return Err(fail("invalid checksum digest format"));
    }
    Ok(HttpChecksum { algo, hex: hex.to_string() })
}

/// The hash of one algorithm, fed as the content streams.
enum Hasher {
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algo: ChecksumAlgo) -> Option<Hasher> {
        match algo {
            // sha256 is computed for every download anyway.
            ChecksumAlgo::Sha256 => None,
            ChecksumAlgo::Sha384 => Some(Hasher::Sha384(sha2::Sha384::new())),
            ChecksumAlgo::Sha512 => Some(Hasher::Sha512(sha2::Sha512::new())),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha384(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    fn hex(self) -> String {
        match self {
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// An HTTP date (`Last-Modified`) in any of the three forms HTTP/1.1 allows (IMF-fixdate,
/// RFC 850, asctime), as Go's `http.ParseTime` reads them.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = |m: &str| MONTHS.iter().position(|x| *x == m).map(|i| i as i64 + 1);
    let p: Vec<&str> = text.split_whitespace().collect();
    let (y, mo, d, hms) = match p.as_slice() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        [wd, d, m, y, t, "GMT"] if wd.ends_with(',') && y.len() == 4 => {
            (y.parse().ok()?, month(m)?, d.parse().ok()?, *t)
        }
        // Sunday, 06-Nov-94 08:49:37 GMT
        [wd, dmy, t, "GMT"] if wd.ends_with(',') => {
            let mut it = dmy.split('-');
            let (d, m, yy) = (it.next()?, it.next()?, it.next()?);
            let yy: i64 = yy.parse().ok()?;
            (if yy >= 69 { 1900 + yy } else { 2000 + yy }, month(m)?, d.parse().ok()?, *t)
        }
        // Sun Nov  6 08:49:37 1994
        [_, m, d, t, y] => (y.parse().ok()?, month(m)?, d.parse().ok()?, *t),
        _ => return None,
    };
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, s) = (t.next()??, t.next()??, t.next()??);
    if t.next().is_some() || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let secs = crate::runtime::timefmt::days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// What a download gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// sha256 of the content, hex.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// `Last-Modified`, when the server sent one that parses (seconds since the epoch).
    pub modified: Option<u64>,
    /// Whether the content was the kept one (the server said it had not changed), not
    /// transferred again.
    pub reused: bool,
}

fn transport(url: &str, message: impl std::fmt::Display) -> RemoteError {
    RemoteError::Transport { url: redact(url), message: message.to_string(), source: None }
}

/// [`transport`] for an error of the HTTP stack: its message, and it stays the cause.
fn transport_by(url: &str, message: impl std::fmt::Display, e: impl std::error::Error + Send + Sync + 'static) -> RemoteError {
    RemoteError::Transport { url: redact(url), message: message.to_string(), source: Some(Box::new(e)) }
}

/// Downloads `url` into the new file `dest` (mode 0600, mtime from `Last-Modified` or the
/// epoch) with the registry client's HTTP stack, streaming (never the whole file in memory),
/// and checks it against `expected` when given. On failure `dest` is removed.
///
/// With `kept`, as BuildKit's http source: a download kept from before (same URL, same file
/// name) is offered to the server by its ETag (`If-None-Match`), first with a `HEAD` (some
/// servers mishandle conditional `GET`s), then with the `GET`; a matching ETag or a `304`
/// puts the kept content at `dest` without transferring it. A download whose server sent an
/// ETag is kept for next time.
pub fn download(
    opts: &RegistryOptions,
    url: &str,
    dest: &Path,
    expected: Option<&HttpChecksum>,
    kept: Option<&super::downloads::Downloads>,
) -> Result<Downloaded, RemoteError> {
    let result = download_inner(opts, url, dest, expected, kept);
    if result.is_err() {
        let _ = fs::remove_file(dest);
    }
    result
}

/// An ETag as BuildKit compares them: without the weak prefix.
fn etag_value(v: &str) -> &str {
    v.strip_prefix("W/").unwrap_or(v)
}

fn header<'r>(resp: &'r ureq::http::Response<ureq::Body>, name: &str) -> Option<&'r str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn download_inner(
    opts: &RegistryOptions,
    url: &str,
    dest: &Path,
    expected: Option<&HttpChecksum>,
    kept: Option<&super::downloads::Downloads>,
) -> Result<Downloaded, RemoteError> {
    let parsed = url::Url::parse(url).map_err(|e| transport_by(url, format!("invalid URL: {e}"), e))?;
    let host = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Err(transport(url, "invalid URL: no host")),
    };
    let agent = http_agent(opts, &host).map_err(|e| transport_by(url, e.to_string(), e))?;
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let previous = kept.and_then(|k| k.lookup(url, &name).map(|p| (k, p)));
    let reuse = |k: &super::downloads::Downloads, p: &super::downloads::Kept| -> Option<Downloaded> {
        if let Some(want) = expected
            && (want.algo != ChecksumAlgo::Sha256 || want.hex != p.sha256)
        {
            return None;
        }
        // Gone meanwhile (another build replaced it): the caller downloads.
        k.materialize(url, &name, p, dest).ok()?;
        Some(Downloaded { sha256: p.sha256.clone(), size: p.size, modified: p.modified, reused: true })
    };
    if let Some((k, p)) = &previous {
        let head = agent.head(url).header("If-None-Match", p.etag.as_str()).call();
        if let Ok(resp) = head
            && matches!(resp.status().as_u16(), 200 | 304)
        {
            // A 304 without an ETag answers the one ETag that was asked about.
            let etag = header(&resp, "etag").map(etag_value).unwrap_or(if resp.status() == 304 {
                p.etag.as_str()
            } else {
                ""
            });
            if etag == p.etag
                && let Some(d) = reuse(k, p)
            {
                return Ok(d);
            }
        }
    }
    let mut get = agent.get(url);
    if let Some((_, p)) = &previous {
        get = get.header("If-None-Match", p.etag.as_str());
    }
    let mut resp = get.call().map_err(|e| transport_by(url, e.to_string(), e))?;
    if resp.status() == 304
        && let Some((k, p)) = &previous
    {
        let etag = header(&resp, "etag").map(etag_value).unwrap_or(p.etag.as_str());
        if etag != p.etag {
            return Err(transport(url, format!("invalid not-modified ETag: {etag}")));
        }
        if let Some(d) = reuse(k, p) {
            return Ok(d);
        }
        // The kept content went between the lookup and now: ask for it whole.
        resp = agent.get(url).call().map_err(|e| transport_by(url, e.to_string(), e))?;
    }
    let status = resp.status();
    if !status.is_success() {
        return Err(RemoteError::Status {
            url: redact(url),
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or_default().to_string(),
        });
    }
    let modified = header(&resp, "last-modified")
        .and_then(parse_http_date)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let etag = header(&resp, "etag").map(|e| etag_value(e).to_string()).filter(|e| !e.is_empty());
    let io = |source| RemoteError::Io { path: dest.display().to_string(), source };
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dest).map_err(io)?;
    let mut reader = resp.into_body().into_reader();
    let mut hasher = Sha256::new();
    let mut other = expected.and_then(|e| Hasher::new(e.algo));
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(transport_by(url, format!("reading the response: {e}"), e)),
        };
        file.write_all(&buf[..n]).map_err(io)?;
        hasher.update(&buf[..n]);
        if let Some(h) = &mut other {
            h.update(&buf[..n]);
        }
        size += n as u64;
    }
    let sha256 = hex::encode(hasher.finalize());
    if let Some(want) = expected {
        let got = match other {
            Some(h) => h.hex(),
            None => sha256.clone(),
        };
        if want.hex != got {
            return Err(RemoteError::Checksum {
                url: redact(url),
                expected: want.to_string(),
                got: format!("{}:{got}", want.algo.name()),
            });
        }
    }
    // The umask could have taken bits away; BuildKit's file is 0600 exactly.
    file.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io)?;
    let t = UNIX_EPOCH + Duration::from_secs(modified.unwrap_or(0));
    file.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t)).map_err(io)?;
    drop(file);
    if let (Some(k), Some(etag)) = (kept, etag) {
        let record =
            super::downloads::Kept { url: url.to_string(), etag, modified, sha256: sha256.clone(), size };
        if let Err(e) = k.keep(&name, dest, &record) {
            tracing::warn!("ADD {}: the download is not kept for reuse: {e}", redact(url));
        }
    }
    Ok(Downloaded { sha256, size, modified, reused: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_told_apart_as_buildkit_does() {
        assert_eq!(classify("foo.txt").unwrap(), Source::Local);
        assert_eq!(classify("./a:b").unwrap(), Source::Local);
        assert_eq!(classify("ftp://host/x").unwrap(), Source::Local);
        assert_eq!(classify("github.com/moby/buildkit").unwrap(), Source::Local);
        assert_eq!(
            classify("https://example.com/a/b.tar.gz?x=1").unwrap(),
            Source::Http("https://example.com/a/b.tar.gz?x=1".into())
        );
        // An HTTP URL is a repository only when its path ends in .git.
        let Source::Git(g) = classify("https://example.com/org/repo.git#v1.2:docs/../src/").unwrap() else {
            panic!("git")
        };
        assert_eq!(g.remote, "https://example.com/org/repo.git");
        assert_eq!((g.reference.as_str(), g.subdir.as_str()), ("v1.2", "src"));
        let Source::Git(g) = classify("git@github.com:org/repo.git#main").unwrap() else { panic!("git") };
        assert_eq!((g.remote.as_str(), g.reference.as_str()), ("git@github.com:org/repo.git", "main"));
        let Source::Git(g) = classify("git://127.0.0.1:9418/repo.git").unwrap() else { panic!("git") };
        assert_eq!(g, GitRef { remote: "git://127.0.0.1:9418/repo.git".into(), ..GitRef::default() });
        assert!(matches!(classify("ssh://git@host/repo").unwrap(), Source::Git(_)));
    }

    #[test]
    fn git_queries() {
        let g =
            parse_git_ref("https://h/r.git?tag=v1&subdir=a/b&keep-git-dir&checksum=abc").unwrap().unwrap();
        assert_eq!(g.reference, "refs/tags/v1");
        assert_eq!(g.subdir, "a/b");
        assert_eq!(g.keep_git_dir, Some(true));
        assert_eq!(g.checksum.as_deref(), Some("abc"));
        let g = parse_git_ref("git@h:r.git?branch=dev&submodules=false&mtime=commit").unwrap().unwrap();
        assert_eq!(g.remote, "git@h:r.git");
        assert_eq!(
            (g.reference.as_str(), g.submodules, g.mtime_commit),
            ("refs/heads/dev", Some(false), true)
        );
        // The query of `#x?ref=y` is part of the fragment, as in Go's URL parser.
        assert_eq!(parse_git_ref("https://h/r.git#x?ref=y").unwrap().unwrap().reference, "x?ref=y");
        for bad in [
            "https://h/r.git?tag=a&branch=b",
            "https://h/r.git?nope=1",
            "https://h/r.git?ref=",
            "https://h/r.git?keep-git-dir=maybe",
            "https://h/r.git?mtime=now",
        ] {
            assert!(matches!(parse_git_ref(bad), Err(RemoteError::Query { .. })), "{bad}");
        }
        assert!(parse_git_ref("https://h/r.git?ref=a&ref=a").is_err(), "multiple values");
    }

    #[test]
    fn download_names() {
        assert_eq!(url_file_name("https://example.com/dir/file.tar.gz"), "file.tar.gz");
        assert_eq!(url_file_name("https://example.com/dir/sub/"), "sub");
        assert_eq!(url_file_name("https://example.com/a%20b?x=/y#z"), "a b");
        assert_eq!(url_file_name("https://example.com/a%2Fb"), "b");
        assert_eq!(url_file_name("https://example.com"), "__unnamed__");
        assert_eq!(url_file_name("https://example.com/"), "__unnamed__");
        assert_eq!(url_file_name("https://example.com/x/%2e%2e"), "download");
        assert_eq!(url_file_name("https://example.com/%01"), "download");
    }

    #[test]
    fn checksums_and_dates() {
        let hex = "a".repeat(64);
        let sum = parse_http_checksum(&format!("sha256:{hex}")).unwrap();
        assert_eq!((sum.algo, sum.hex.as_str()), (ChecksumAlgo::Sha256, hex.as_str()));
        let sum = parse_http_checksum(&format!("sha384:{}", "b".repeat(96))).unwrap();
        assert_eq!(sum.to_string(), format!("sha384:{}", "b".repeat(96)));
        assert_eq!(parse_http_checksum(&format!("sha512:{}", "c".repeat(128))).unwrap().algo, ChecksumAlgo::Sha512);
        // go-digest's errors, as BuildKit gives them.
        let e = |t: &str| parse_http_checksum(t).unwrap_err().to_string();
        assert_eq!(e("sha256:abc"), "--checksum=sha256:abc: invalid checksum digest length");
        assert_eq!(e(&format!("sha512:{hex}")), format!("--checksum=sha512:{hex}: invalid checksum digest length"));
        assert_eq!(e(&hex), format!("--checksum={hex}: invalid checksum digest format"));
        assert_eq!(e("sha256:"), "--checksum=sha256:: invalid checksum digest format");
        assert_eq!(e(":abc"), "--checksum=:abc: invalid checksum digest format");
        assert!(e(&format!("sha256:{}", "A".repeat(64))).ends_with("invalid checksum digest format"));
        assert!(e(&format!("sha256:{}", "g".repeat(64))).ends_with("invalid checksum digest format"));
        assert!(e("md5:d41d8cd98f00b204e9800998ecf8427e").ends_with(": unsupported digest algorithm"));
        assert!(e("blake3:abc").ends_with(": unsupported digest algorithm"));
        assert!(e("MD5:abc").ends_with(": invalid checksum digest format"));
        assert!(e("md5:a/b").ends_with(": invalid checksum digest format"));
        let t = |s| parse_http_date(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        assert_eq!(t("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(t("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(t("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(t("Sun, 06 Nov 1994 08:49:37 CET"), None);
        assert_eq!(t("yesterday"), None);
        assert_eq!(redact("https://u:secret@h/x"), "https://u:xxxxx@h/x");
    }

    /// A server answering each connection with `response` (raw HTTP), on 127.0.0.1.
    fn serve(response: Vec<u8>) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let _ = s.write_all(&response);
            }
        });
        format!("http://{addr}")
    }

    /// A server on 127.0.0.1 answering each request with `answer(method, If-None-Match)`;
    /// the requests it had, as `METHOD If-None-Match`.
    #[allow(clippy::type_complexity)]
    fn serve_fn(
        answer: impl Fn(&str, Option<&str>) -> Vec<u8> + Send + 'static,
    ) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = log.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let mut req = Vec::new();
                let mut b = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&b[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let method = text.split_whitespace().next().unwrap_or_default().to_string();
                let inm = text.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("if-none-match").then(|| v.trim().to_string())
                });
                seen.lock().unwrap().push(format!("{method} {}", inm.as_deref().unwrap_or("-")));
                let _ = s.write_all(&answer(&method, inm.as_deref()));
            }
        });
        (format!("http://{addr}"), log)
    }

    fn resp(status: &str, etag: Option<&str>, body: &[u8], head: bool) -> Vec<u8> {
        let mut r = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        if let Some(e) = etag {
            r.push_str(&format!("ETag: {e}\r\n"));
        }
        r.push_str("\r\n");
        let mut r = r.into_bytes();
        if !head && !status.starts_with("304") {
            r.extend_from_slice(body);
        }
        r
    }

    /// BuildKit's ETag reuse: HEAD with If-None-Match first, then a conditional GET; a match
    /// reuses the kept content, anything else downloads and keeps the new one.
    #[test]
    fn downloads_are_reused_by_etag() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let kept = super::super::downloads::Downloads::new(dir.path().join("http"));
        // (content, its ETag, whether HEAD honours If-None-Match, whether the 304 names it)
        let state = std::sync::Arc::new(std::sync::Mutex::new((b"one".to_vec(), "W/\"v1\"", true, true)));
        let st = state.clone();
        let (base, log) = serve_fn(move |method, inm| {
            let (body, etag, head_ok, names) = st.lock().unwrap().clone();
            let matches = inm.is_some_and(|i| i.split(',').any(|t| t.trim() == etag_value(etag)));
            let head = method == "HEAD";
            if matches && (!head || head_ok) {
                resp("304 Not Modified", names.then_some(etag), b"", true)
            } else if head && !head_ok {
                resp("200 OK", None, &body, true)
            } else {
                resp("200 OK", Some(etag), &body, head)
            }
        });
        let url = format!("{base}/dir/f.txt");
        let get = |n: &str| {
            let dest = dir.path().join(n);
            fs::create_dir_all(&dest).unwrap();
            let dest = dest.join("f.txt");
            let d = download(&opts(), &url, &dest, None, Some(&kept)).unwrap();
            (d, fs::read(&dest).unwrap())
        };
        let taken = |log: &std::sync::Arc<std::sync::Mutex<Vec<String>>>| std::mem::take(&mut *log.lock().unwrap());
        // First: a plain GET; the download is kept (its weak ETag without W/).
        let (d, body) = get("1");
        assert_eq!((d.reused, body.as_slice()), (false, &b"one"[..]));
        assert_eq!(taken(&log), ["GET -"]);
        // Unchanged: the HEAD answers 304, nothing is transferred.
        let (d, body) = get("2");
        assert_eq!((d.reused, body.as_slice(), d.sha256.len()), (true, &b"one"[..], 64));
        assert_eq!(taken(&log), ["HEAD \"v1\""]);
        // A server whose HEAD ignores If-None-Match and whose 304 has no ETag: the GET's 304
        // answers the one ETag asked about.
        {
            let mut s = state.lock().unwrap();
            s.2 = false;
            s.3 = false;
        }
        let (d, body) = get("3");
        assert_eq!((d.reused, body.as_slice()), (true, &b"one"[..]));
        assert_eq!(taken(&log), ["HEAD \"v1\"", "GET \"v1\""]);
        // Changed content: downloaded and kept in place of the old.
        *state.lock().unwrap() = (b"two".to_vec(), "\"v2\"", true, true);
        let (d, body) = get("4");
        assert_eq!((d.reused, body.as_slice()), (false, &b"two"[..]));
        assert_eq!(taken(&log), ["HEAD \"v1\"", "GET \"v1\""]);
        let (d, _) = get("5");
        assert!(d.reused);
        assert_eq!(taken(&log), ["HEAD \"v2\""]);
        // A 304 naming an ETag that was not asked about is an error.
        let (bad, _) = serve_fn(|_, _| resp("304 Not Modified", Some("\"zz\""), b"", true));
        let other = format!("{bad}/dir/f.txt");
        let file = dir.path().join("f.txt");
        fs::write(&file, b"x").unwrap();
        let rec = super::super::downloads::Kept {
            url: other.clone(),
            etag: "\"aa\"".into(),
            modified: None,
            sha256: hex::encode(Sha256::digest(b"x")),
            size: 1,
        };
        kept.keep("f.txt", &file, &rec).unwrap();
        let dest = dir.path().join("6");
        fs::create_dir(&dest).unwrap();
        let e = download(&opts(), &other, &dest.join("f.txt"), None, Some(&kept)).unwrap_err();
        assert!(e.to_string().ends_with("invalid not-modified ETag: \"zz\""), "{e}");
        assert!(!dest.join("f.txt").exists());
    }

    fn opts() -> RegistryOptions {
        let mut o = RegistryOptions::from_env();
        o.read_timeout = Duration::from_secs(5);
        o
    }

    #[test]
    fn downloads_are_hashed_timed_and_removed_on_failure() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let base = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\nConnection: close\r\n\r\nhello"
                .to_vec(),
        );
        let dest = dir.path().join("f");
        let d = download(&opts(), &format!("{base}/f"), &dest, None, None).unwrap();
        assert_eq!(d.sha256, hex::encode(Sha256::digest(b"hello")));
        assert_eq!((d.size, d.modified), (5, Some(784_111_777)));
        let m = fs::metadata(&dest).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o600);
        assert_eq!(m.modified().unwrap(), UNIX_EPOCH + Duration::from_secs(784_111_777));
        // A wrong checksum: an error naming both digests, and no file.
        let dest2 = dir.path().join("g");
        let zero = parse_http_checksum(&format!("sha256:{}", "0".repeat(64))).unwrap();
        let e = download(&opts(), &format!("{base}/g"), &dest2, Some(&zero), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "digest mismatch for {base}/g: sha256:{} (expected: sha256:{})",
                hex::encode(Sha256::digest(b"hello")),
                "0".repeat(64)
            )
        );
        assert!(!dest2.exists());
        // sha384 and sha512 are checked in their own algorithm.
        for (algo, digest) in [
            ("sha384", hex::encode(sha2::Sha384::digest(b"hello"))),
            ("sha512", hex::encode(sha2::Sha512::digest(b"hello"))),
        ] {
            let sum = parse_http_checksum(&format!("{algo}:{digest}")).unwrap();
            let d = download(&opts(), &format!("{base}/g"), &dest2, Some(&sum), None).unwrap();
            assert_eq!(d.sha256, hex::encode(Sha256::digest(b"hello")));
            fs::remove_file(&dest2).unwrap();
            let wrong = parse_http_checksum(&format!("{algo}:{}", "1".repeat(digest.len()))).unwrap();
            let e = download(&opts(), &format!("{base}/g"), &dest2, Some(&wrong), None).unwrap_err();
            assert!(e.to_string().contains(&format!(": {algo}:{digest} (expected: {algo}:111")), "{e}");
            assert!(!dest2.exists());
        }
        // A cut body (Content-Length larger than what comes).
        let cut = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\nConnection: close\r\n\r\nhello".to_vec());
        let e = download(&opts(), &format!("{cut}/h"), &dest2, None, None).unwrap_err();
        assert!(matches!(e, RemoteError::Transport { .. }), "{e}");
        assert!(!dest2.exists());
        let missing =
            serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec());
        let e = download(&opts(), &format!("{missing}/x"), &dest2, None, None).unwrap_err();
        assert_eq!(e.to_string(), format!("{missing}/x: HTTP status 404 (Not Found)"));
        assert!(!dest2.exists());
    }
}
