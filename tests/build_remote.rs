//! `ADD` of remote sources end to end (root): files from an HTTP server the test runs on
//! 127.0.0.1 and repositories from a `git daemon` on 127.0.0.1, built into images whose
//! layers are checked file by file, with the cache following the remote content.

mod common;

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::image::ImageStore;
use berth::image::build::{BuildError, BuildRequest, Builder, StoreBaseImages, frontend};
use berth::image::events::ImageEvents;
use berth::netns::Networks;
use common::TestEnv;
use sha2::{Digest, Sha256};

/// Final status of each step, by label.
#[derive(Default)]
struct Events(Mutex<Vec<(String, String)>>);

impl ImageEvents for Events {
    fn event(&self, kind: &str, name: &str, status: &str, _done: bool) {
        if kind == "Step" && status != "RUNNING" {
            let mut v = self.0.lock().unwrap();
            v.retain(|(n, _)| n != name);
            v.push((name.to_string(), status.to_string()));
        }
    }
    fn failed(&self, _kind: &str, _name: &str, _status: &str) {}
    fn output(&self, _name: &str, _line: &str) {}
}

impl Events {
    /// Whether the step whose label contains `part` was served from the cache.
    fn cached(&self, part: &str) -> bool {
        let v = self.0.lock().unwrap();
        let (_, s) =
            v.iter().find(|(n, _)| n.contains(part)).unwrap_or_else(|| panic!("no step {part}: {v:?}"));
        s == "CACHED"
    }
}

/// One file the server has: body, `Last-Modified` and `ETag`.
#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    modified: Option<&'static str>,
    etag: Option<String>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1: one request per connection, files by path, 404 else;
/// `HEAD`, and `If-None-Match` answered with 304 when it names the file's ETag. Counts
/// requests per path, and per path the answers that carried the body.
struct Server {
    addr: String,
    files: Arc<Mutex<HashMap<String, Served>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    bodies: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let files: Arc<Mutex<HashMap<String, Served>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let bodies: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (f, h, bd) = (files.clone(), hits.clone(), bodies.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let head = text.starts_with("HEAD ");
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let inm = text.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("if-none-match").then(|| v.trim().to_string())
                });
                *h.lock().unwrap().entry(path.clone()).or_default() += 1;
                let served = f.lock().unwrap().get(&path).cloned();
                let resp = match served {
                    Some(sv) => {
                        let unchanged = matches!((&sv.etag, &inm), (Some(e), Some(i)) if i.split(',').any(|t| t.trim() == e));
                        let status = if unchanged { "304 Not Modified" } else { "200 OK" };
                        let len = if unchanged { 0 } else { sv.body.len() };
                        let mut r = format!("HTTP/1.1 {status}\r\nContent-Length: {len}\r\n");
                        if let Some(m) = sv.modified {
                            r.push_str(&format!("Last-Modified: {m}\r\n"));
                        }
                        if let Some(e) = &sv.etag {
                            r.push_str(&format!("ETag: {e}\r\n"));
                        }
                        r.push_str("Connection: close\r\n\r\n");
                        let mut r = r.into_bytes();
                        if !unchanged && !head {
                            r.extend_from_slice(&sv.body);
                            *bd.lock().unwrap().entry(path.clone()).or_default() += 1;
                        }
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found"
                            .to_vec()
                    }
                };
                let _ = s.write_all(&resp);
            }
        });
        Server { addr, files, hits, bodies }
    }

    fn put(&self, path: &str, body: &[u8], modified: Option<&'static str>) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_string(), Served { body: body.to_vec(), modified, etag: None });
    }

    fn put_tagged(&self, path: &str, body: &[u8], etag: &str) {
        let served = Served { body: body.to_vec(), modified: Some(MODIFIED), etag: Some(etag.to_string()) };
        self.files.lock().unwrap().insert(path.to_string(), served);
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    /// Answers to `path` that carried its body.
    fn bodies(&self, path: &str) -> usize {
        self.bodies.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

struct Env {
    t: TestEnv,
    store: ImageStore,
    networks: Networks,
    context: PathBuf,
}

impl Env {
    fn new() -> Env {
        let t = TestEnv::new();
        let store = ImageStore::open(&t.dirs).unwrap();
        let networks = Networks::new(&t.dirs).with_exe(env!("CARGO_BIN_EXE_berth"));
        let context = t.dir.path().join("ctx");
        fs::create_dir_all(&context).unwrap();
        Env { t, store, networks, context }
    }

    fn build(&self, dockerfile: &str, tag: &str, events: &Events) -> Result<(), BuildError> {
        self.build_ssh(dockerfile, tag, events, None)
    }

    /// A build with `--ssh default[=PATHS]` when `ssh` is given.
    fn build_ssh(
        &self,
        dockerfile: &str,
        tag: &str,
        events: &Events,
        ssh: Option<Vec<PathBuf>>,
    ) -> Result<(), BuildError> {
        let df = frontend::parse(dockerfile, "Dockerfile")?;
        let base = StoreBaseImages { store: &self.store };
        let b = Builder::new(&self.store, &self.t.runtime, &self.networks, &base, events);
        let req = BuildRequest {
            context: self.context.clone(),
            tags: vec![tag.to_string()],
            ssh: ssh.map(|p| [("default".to_string(), p)].into()).unwrap_or_default(),
            ..BuildRequest::default()
        };
        b.build_parsed(&req, &df, "Dockerfile").map(|_| ())
    }

    /// `path` in the image (the top layer that has it).
    fn file(&self, tag: &str, path: &str) -> PathBuf {
        let img = self.store.resolve(tag).unwrap();
        img.layer_dirs
            .iter()
            .rev()
            .map(|d| d.join(path.trim_start_matches('/')))
            .find(|p| fs::symlink_metadata(p).is_ok())
            .unwrap_or_else(|| panic!("{path} not in {tag}"))
    }

    fn has(&self, tag: &str, path: &str) -> bool {
        let img = self.store.resolve(tag).unwrap();
        img.layer_dirs.iter().any(|d| fs::symlink_metadata(d.join(path.trim_start_matches('/'))).is_ok())
    }

    /// Nothing a failed step may leave: staging dirs, mounts.
    fn assert_clean(&self) {
        let staging: Vec<_> = fs::read_dir(self.t.dirs.images())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
            .collect();
        assert!(staging.is_empty(), "staging left: {staging:?}");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&self.t.dir.path().display().to_string()), "mounts left");
    }
}

const MODIFIED: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
const MODIFIED_SECS: i64 = 784_111_777;

fn tar_gz() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1000);
    h.set_cksum();
    b.append_data(&mut h, "inside.txt", &b"abc"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn add_from_http_urls() {
    let env = Env::new();
    let srv = Server::start();
    srv.put("/files/hello.txt", b"hello v1\n", Some(MODIFIED));
    srv.put("/data.tar.gz", &tar_gz(), None);
    srv.put("/pinned.txt", b"pinned\n", None);
    let pinned = hex::encode(Sha256::digest(b"pinned\n"));
    let df = format!(
        "FROM scratch\n\
         ADD {hello} /dl/\n\
         ADD --chmod=0755 --chown=7:8 {hello} /bin/tool\n\
         ADD {tgz} /arch/\n\
         ADD --checksum=sha256:{pinned} {pin} /pinned\n\
         ADD --unpack=true {tgz} /unpacked/\n",
        hello = srv.url("/files/hello.txt"),
        tgz = srv.url("/data.tar.gz"),
        pin = srv.url("/pinned.txt"),
    );
    let ev = Events::default();
    env.build(&df, "remote/http:1", &ev).unwrap();
    // The file name comes from the URL; mode 0600, root's, with the server's time.
    let dl = env.file("remote/http:1", "/dl/hello.txt");
    assert_eq!(fs::read(&dl).unwrap(), b"hello v1\n");
    let m = fs::metadata(&dl).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 0, 0));
    assert_eq!(m.mtime(), MODIFIED_SECS);
    // --chmod and --chown apply; a dest without a slash is the file itself.
    let tool = fs::metadata(env.file("remote/http:1", "/bin/tool")).unwrap();
    assert!(tool.is_file());
    assert_eq!((tool.mode() & 0o7777, tool.uid(), tool.gid()), (0o755, 7, 8));
    // Without Last-Modified the time is the epoch; a remote archive is never unpacked.
    let arch = fs::metadata(env.file("remote/http:1", "/arch/data.tar.gz")).unwrap();
    assert!(arch.is_file());
    // (The layer's tar says 0; the tar crate unpacks time 0 as 1.)
    assert!(arch.mtime() <= 1, "{}", arch.mtime());
    assert!(!env.has("remote/http:1", "/arch/inside.txt"));
    assert_eq!(fs::read(env.file("remote/http:1", "/pinned")).unwrap(), b"pinned\n");
    // ... unless --unpack=true asks for it.
    assert_eq!(fs::read(env.file("remote/http:1", "/unpacked/inside.txt")).unwrap(), b"abc");
    assert_eq!(srv.hits("/pinned.txt"), 1);

    // Unchanged: all from the cache, and the pinned file is not even downloaded.
    let ev2 = Events::default();
    env.build(&df, "remote/http:2", &ev2).unwrap();
    for step in ["/dl/", "/bin/tool", "/arch/", "/pinned"] {
        assert!(ev2.cached(step), "{step} rebuilt");
    }
    assert_eq!(srv.hits("/pinned.txt"), 1, "a pinned download is its checksum");

    // A changed remote file reruns its steps and every later one.
    srv.put("/files/hello.txt", b"hello v2\n", Some(MODIFIED));
    let ev3 = Events::default();
    env.build(&df, "remote/http:3", &ev3).unwrap();
    for step in ["/dl/", "/bin/tool", "/arch/", "/pinned"] {
        assert!(!ev3.cached(step), "{step} served from the cache");
    }
    assert_eq!(fs::read(env.file("remote/http:3", "/dl/hello.txt")).unwrap(), b"hello v2\n");
    assert_eq!(srv.hits("/pinned.txt"), 2);
    env.assert_clean();

    // A wrong checksum, a missing file, a server that is not there: one error naming the
    // Dockerfile's line and the URL, nothing left behind.
    let bad =
        format!("FROM scratch\nADD --checksum=sha256:{} {} /x\n", "0".repeat(64), srv.url("/pinned.txt"));
    let e = env.build(&bad, "remote/bad:1", &Events::default()).unwrap_err().to_string();
    assert!(e.starts_with("Dockerfile:2: ADD "), "{e}");
    assert!(
        e.contains(&srv.url("/pinned.txt")) && e.contains("digest mismatch") && e.contains(&pinned),
        "{e}"
    );
    env.assert_clean();
    let missing = format!("FROM scratch\nLABEL a=b\n\nADD {} /x\n", srv.url("/nope.txt"));
    let e = env.build(&missing, "remote/bad:2", &Events::default()).unwrap_err().to_string();
    assert_eq!(e, format!("Dockerfile:4: ADD {}: HTTP status 404 (Not Found)", srv.url("/nope.txt")));
    env.assert_clean();
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = format!("FROM scratch\nADD http://127.0.0.1:{closed}/f /x\n");
    let e = env.build(&refused, "remote/bad:3", &Events::default()).unwrap_err().to_string();
    assert!(e.starts_with(&format!("Dockerfile:2: ADD http://127.0.0.1:{closed}/f: ")), "{e}");
    env.assert_clean();
    for tag in ["remote/bad:1", "remote/bad:2", "remote/bad:3"] {
        assert!(env.store.resolve(tag).is_err(), "{tag} stored");
    }
}

/// `ADD --checksum` in each algorithm BuildKit's frontend parses (sha256, sha384, sha512),
/// checked against the content; malformed ones refused with go-digest's words.
#[test]
fn add_with_checksums_of_each_algorithm() {
    let env = Env::new();
    let srv = Server::start();
    srv.put("/f.txt", b"checked\n", None);
    let url = srv.url("/f.txt");
    let sha384 = hex::encode(sha2::Sha384::digest(b"checked\n"));
    let sha512 = hex::encode(sha2::Sha512::digest(b"checked\n"));
    let df = format!(
        "FROM scratch\nADD --checksum=sha384:{sha384} {url} /a\nADD --checksum=sha512:{sha512} {url} /b\n"
    );
    env.build(&df, "remote/sum:1", &Events::default()).unwrap();
    assert_eq!(fs::read(env.file("remote/sum:1", "/a")).unwrap(), b"checked\n");
    assert_eq!(fs::read(env.file("remote/sum:1", "/b")).unwrap(), b"checked\n");
    assert_eq!(srv.hits("/f.txt"), 2);
    // Pinned: the rebuild is served from the cache without a request.
    let ev = Events::default();
    env.build(&df, "remote/sum:2", &ev).unwrap();
    assert!(ev.cached(" /a") && ev.cached(" /b"));
    assert_eq!(srv.hits("/f.txt"), 2);
    // Content that is not what the sha512 says.
    let wrong = format!("FROM scratch\nADD --checksum=sha512:{} {url} /b\n", "e".repeat(128));
    let e = env.build(&wrong, "remote/sum-bad:1", &Events::default()).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "Dockerfile:2: ADD digest mismatch for {url}: sha512:{sha512} (expected: sha512:{})",
            "e".repeat(128)
        )
    );
    env.assert_clean();
    for (sum, why) in [
        (format!("sha384:{sha512}"), "invalid checksum digest length"),
        ("md5:0123".to_string(), "unsupported digest algorithm"),
        (sha384.clone(), "invalid checksum digest format"),
    ] {
        let df = format!("FROM scratch\nADD --checksum={sum} {url} /x\n");
        let e = env.build(&df, "remote/sum-bad:2", &Events::default()).unwrap_err().to_string();
        assert_eq!(e, format!("Dockerfile:2: ADD --checksum={sum}: {why}"));
    }
    assert!(env.store.resolve("remote/sum-bad:1").is_err() && env.store.resolve("remote/sum-bad:2").is_err());
}

/// BuildKit's ETag reuse: an unchanged URL is not transferred again (HEAD with
/// If-None-Match), and its step is served from the cache; a step that must run anyway takes
/// the kept content; new content is downloaded; a new ETag with the same content still hits
/// the cache. `image prune -a` takes the kept downloads.
#[test]
fn add_reuses_downloads_by_etag() {
    let env = Env::new();
    let srv = Server::start();
    srv.put_tagged("/e.txt", b"tagged v1\n", "\"v1\"");
    let url = srv.url("/e.txt");
    let df = |label: &str| format!("FROM scratch\nLABEL n={label}\nADD {url} /e/\n");
    env.build(&df("a"), "remote/etag:1", &Events::default()).unwrap();
    assert_eq!((srv.hits("/e.txt"), srv.bodies("/e.txt")), (1, 1));
    let kept = env.t.dirs.root.join("build-cache/http");
    assert_eq!(fs::read_dir(&kept).unwrap().count(), 2, "a record and its content");

    // Unchanged: one HEAD answered 304, no body, the step from the cache.
    let ev = Events::default();
    env.build(&df("a"), "remote/etag:2", &ev).unwrap();
    assert!(ev.cached("/e/"));
    assert_eq!((srv.hits("/e.txt"), srv.bodies("/e.txt")), (2, 1));
    // A step that runs (its parent changed) takes the kept content, not a new transfer.
    let ev = Events::default();
    env.build(&df("b"), "remote/etag:3", &ev).unwrap();
    assert!(!ev.cached("/e/"));
    assert_eq!((srv.hits("/e.txt"), srv.bodies("/e.txt")), (3, 1));
    let f = env.file("remote/etag:3", "/e/e.txt");
    assert_eq!(fs::read(&f).unwrap(), b"tagged v1\n");
    let m = fs::metadata(&f).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o600, MODIFIED_SECS));

    // A new ETag for the same bytes: HEAD, then a GET with the body, and still a cache hit.
    srv.put_tagged("/e.txt", b"tagged v1\n", "\"v1b\"");
    let ev = Events::default();
    env.build(&df("a"), "remote/etag:4", &ev).unwrap();
    assert!(ev.cached("/e/"));
    assert_eq!((srv.hits("/e.txt"), srv.bodies("/e.txt")), (5, 2));
    // New content: downloaded, the step reruns.
    srv.put_tagged("/e.txt", b"tagged v2\n", "\"v2\"");
    let ev = Events::default();
    env.build(&df("a"), "remote/etag:5", &ev).unwrap();
    assert!(!ev.cached("/e/"));
    assert_eq!((srv.hits("/e.txt"), srv.bodies("/e.txt")), (7, 3));
    assert_eq!(fs::read(env.file("remote/etag:5", "/e/e.txt")).unwrap(), b"tagged v2\n");
    assert_eq!(fs::read_dir(&kept).unwrap().count(), 2, "the old content went");
    env.assert_clean();

    // What a killed write leaves goes with `image prune`; with `-a`, all kept downloads.
    fs::write(kept.join(".x.tmp999999999"), b"left").unwrap();
    env.store.prune(false).unwrap();
    assert_eq!(fs::read_dir(&kept).unwrap().count(), 2);
    env.store.prune(true).unwrap();
    assert_eq!(fs::read_dir(&kept).unwrap().count(), 0);
    env.build(&df("a"), "remote/etag:6", &Events::default()).unwrap();
    assert_eq!(srv.bodies("/e.txt"), 4, "nothing kept: downloaded whole");
}

/// `git daemon` serving `base` on 127.0.0.1; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(base: &Path) -> Daemon {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        // The daemon binary itself: `git daemon` would leave it running when `git` is killed.
        let exec_path = Command::new("git").arg("--exec-path").output().expect("git");
        let daemon = Path::new(String::from_utf8_lossy(&exec_path.stdout).trim()).join("git-daemon");
        let child = Command::new(daemon)
            .args(["--export-all", "--reuseaddr", "--informative-errors", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let d = Daemon { child, port };
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "git daemon does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// git in `repo` with a fixed identity and no host configuration.
fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn add_from_git_repositories() {
    let env = Env::new();
    let served = env.t.dir.path().join("served");
    let repo = served.join("repo");
    fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q"]);
    fs::write(repo.join("a.txt"), "a v1\n").unwrap();
    fs::write(repo.join("sub/b.txt"), "b v1\n").unwrap();
    fs::write(repo.join("run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(repo.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    git(&repo, &["tag", "-a", "v1", "-m", "release 1"]);
    fs::write(repo.join("sub/b.txt"), "b v2\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "two"]);
    let daemon = Daemon::start(&served);
    let url = format!("git://127.0.0.1:{}/repo", daemon.port);
    let df = format!(
        "FROM scratch\n\
         ADD {url}#main /src\n\
         ADD {url}#v1:sub /sub\n\
         ADD --keep-git-dir=true {url} /kept\n"
    );
    let ev = Events::default();
    env.build(&df, "remote/git:1", &ev).unwrap();
    let tag = "remote/git:1";
    assert_eq!(fs::read_to_string(env.file(tag, "/src/a.txt")).unwrap(), "a v1\n");
    assert_eq!(fs::read_to_string(env.file(tag, "/src/sub/b.txt")).unwrap(), "b v2\n");
    assert_eq!(fs::metadata(env.file(tag, "/src/run.sh")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(env.file(tag, "/src/a.txt")).unwrap().mode() & 0o7777, 0o644);
    assert!(!env.has(tag, "/src/.git"), "the .git dir is not kept by default");
    // The annotated tag's tree, its subdir only.
    assert_eq!(fs::read_to_string(env.file(tag, "/sub/b.txt")).unwrap(), "b v1\n");
    assert!(!env.has(tag, "/sub/a.txt"));
    // --keep-git-dir: a repository at the default branch's commit.
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let kept = env.file(tag, "/kept");
    let out = Command::new("git")
        .args(["-c", &format!("safe.directory={}", kept.display())])
        .arg("-C")
        .arg(&kept)
        .args(["rev-parse", "HEAD"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), head, "{}", String::from_utf8_lossy(&out.stderr));

    // Unchanged: from the cache.
    let ev2 = Events::default();
    env.build(&df, "remote/git:2", &ev2).unwrap();
    for step in ["#main /src", "#v1:sub /sub", "/kept"] {
        assert!(ev2.cached(step), "{step} rebuilt");
    }

    // A new commit on the branch reruns its step (and the later ones).
    fs::write(repo.join("a.txt"), "a v3\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "three"]);
    let ev3 = Events::default();
    env.build(&df, "remote/git:3", &ev3).unwrap();
    assert!(!ev3.cached("#main /src"));
    assert_eq!(fs::read_to_string(env.file("remote/git:3", "/src/a.txt")).unwrap(), "a v3\n");
    assert_eq!(fs::read_to_string(env.file("remote/git:3", "/sub/b.txt")).unwrap(), "b v1\n");
    env.assert_clean();

    // A ref the repository does not have.
    let bad = format!("FROM scratch\nADD {url}#nope /x\n");
    let e = env.build(&bad, "remote/git-bad:1", &Events::default()).unwrap_err().to_string();
    assert_eq!(e, format!("Dockerfile:2: ADD {url}#nope: the repository does not contain ref nope"));
    // A commit pinned with --checksum that the ref is not.
    let pinned = format!("FROM scratch\nADD --checksum=0000000 {url}#main /x\n");
    let e = env.build(&pinned, "remote/git-bad:2", &Events::default()).unwrap_err().to_string();
    assert!(e.starts_with(&format!("Dockerfile:2: ADD {url}#main: ")) && e.contains("checksum"), "{e}");
    // A subdir that is not there.
    let nosub = format!("FROM scratch\nADD {url}#main:nosuch /x\n");
    let e = env.build(&nosub, "remote/git-bad:3", &Events::default()).unwrap_err().to_string();
    assert!(e.contains("subdir \"nosuch\""), "{e}");
    env.assert_clean();
}

/// A throwaway `sshd` on 127.0.0.1 (Debian's openssh-server, which scripts/test installs)
/// with its own host key, letting root in with one key only; killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    /// Whether it also listens on 127.0.0.1:22 (for `user@host:path` addresses, which
    /// cannot name a port): only when that port was free.
    on_22: bool,
}

impl Sshd {
    fn start(dir: &Path, authorized: &Path) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(sshd.exists(), "this test needs openssh-server (scripts/test installs it)");
        // sshd refuses to start without its privilege separation dir.
        fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("host_key");
        keygen(&host_key);
        let config = dir.join("sshd_config");
        fs::write(
            &config,
            format!(
                "ListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PidFile none\nLogLevel ERROR\n",
                host_key.display(),
                authorized.display()
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let on_22 = TcpListener::bind("127.0.0.1:22").is_ok();
        let mut cmd = Command::new(sshd);
        cmd.arg("-D").arg("-e").arg("-f").arg(&config).arg("-p").arg(port.to_string());
        if on_22 {
            cmd.args(["-p", "22"]);
        }
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("sshd");
        let d = Sshd { child, port, on_22 };
        let until = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "sshd does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new ed25519 key pair at `path` and `path.pub`, without a passphrase.
fn keygen(path: &Path) {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "berth-test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen (openssh-client)");
    assert!(ok.success());
}

/// An `ssh-agent` on a socket in `dir` holding `key`; killed on drop.
struct Agent {
    child: Child,
    sock: PathBuf,
}

impl Agent {
    fn start(dir: &Path, key: &Path) -> Agent {
        let sock = dir.join("agent.sock");
        let child =
            Command::new("ssh-agent").arg("-D").arg("-a").arg(&sock).stdout(Stdio::null()).spawn().unwrap();
        let a = Agent { child, sock };
        let until = Instant::now() + Duration::from_secs(5);
        while std::os::unix::net::UnixStream::connect(&a.sock).is_err() {
            assert!(Instant::now() < until, "ssh-agent did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let ok = Command::new("ssh-add").arg("-q").arg(key).env("SSH_AUTH_SOCK", &a.sock).status().unwrap();
        assert!(ok.success());
        a
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ADD` of a repository over ssh with `--ssh default=KEYFILE` and `--ssh default=SOCKET`
/// (an agent), `ssh://` and `user@host:path` addresses; refused without a key or with a key
/// the server does not know; `?fetch-by-commit` pinning a commit the branch has moved past.
#[test]
fn add_from_git_over_ssh() {
    let env = Env::new();
    let dir = env.t.dir.path().join("ssh");
    fs::create_dir_all(&dir).unwrap();
    let repo = dir.join("repo.git");
    let work = dir.join("work");
    fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q"]);
    fs::write(work.join("hello.txt"), "over ssh v1\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "one"]);
    let first = git(&work, &["rev-parse", "HEAD"]);
    fs::write(work.join("hello.txt"), "over ssh v2\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    git(&dir, &["clone", "-q", "--bare", work.to_str().unwrap(), repo.to_str().unwrap()]);
    // Commits by id, for ?fetch-by-commit.
    git(&repo, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    let key = dir.join("id_ed25519");
    keygen(&key);
    let stranger = dir.join("stranger");
    keygen(&stranger);
    let authorized = dir.join("authorized_keys");
    fs::copy(dir.join("id_ed25519.pub"), &authorized).unwrap();
    let sshd = Sshd::start(&dir, &authorized);
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, repo.display());

    // A key file: berth loads it into an agent of its own for git.
    let df = format!("FROM scratch\nADD {url}#main /src\n");
    env.build_ssh(&df, "remote/ssh:1", &Events::default(), Some(vec![key.clone()])).unwrap();
    assert_eq!(fs::read_to_string(env.file("remote/ssh:1", "/src/hello.txt")).unwrap(), "over ssh v2\n");
    // An agent's socket; the unchanged commit comes from the cache.
    let agent = Agent::start(&dir, &key);
    let ev = Events::default();
    env.build_ssh(&df, "remote/ssh:2", &ev, Some(vec![agent.sock.clone()])).unwrap();
    assert!(ev.cached("/src"));
    // `berth build --ssh default`: the agent of $SSH_AUTH_SOCK.
    let proj = dir.join("proj");
    fs::create_dir_all(&proj).unwrap();
    fs::write(
        proj.join("compose.yaml"),
        format!(
            "services:\n  app:\n    image: remote/ssh-cli:1\n    build:\n      context: .\n      \
             dockerfile_inline: |\n        FROM scratch\n        ADD {url}#main /cli\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .current_dir(&proj)
        .env("BERTH_ROOT", &env.t.dirs.root)
        .env("BERTH_RUN", &env.t.dirs.run)
        .env("SSH_AUTH_SOCK", &agent.sock)
        .args(["build", "-q", "--ssh", "default"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(fs::read_to_string(env.file("remote/ssh-cli:1", "/cli/hello.txt")).unwrap(), "over ssh v2\n");
    // `user@host:path`, when port 22 was free for the test's sshd.
    if sshd.on_22 {
        let scp = format!("FROM scratch\nADD root@127.0.0.1:{}#main /scp\n", repo.display());
        env.build_ssh(&scp, "remote/ssh:3", &Events::default(), Some(vec![key.clone()])).unwrap();
        assert_eq!(fs::read_to_string(env.file("remote/ssh:3", "/scp/hello.txt")).unwrap(), "over ssh v2\n");
    }
    // ?fetch-by-commit: the pinned commit, though main has moved on, named main in the
    // kept .git.
    let pinned =
        format!("FROM scratch\nADD --keep-git-dir=true {url}?fetch-by-commit&checksum={first}#main /pin\n");
    env.build_ssh(&pinned, "remote/ssh:4", &Events::default(), Some(vec![key.clone()])).unwrap();
    let pin = env.file("remote/ssh:4", "/pin");
    assert_eq!(fs::read_to_string(pin.join("hello.txt")).unwrap(), "over ssh v1\n");
    let out = Command::new("git")
        .args(["-c", &format!("safe.directory={}", pin.display())])
        .arg("-C")
        .arg(&pin)
        .args(["rev-parse", "HEAD", "refs/heads/main"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{first}\n{first}\n"));
    env.assert_clean();

    // No key: git's refusal, with the hint; a key the server does not know: refused.
    let e = env.build(&df, "remote/ssh-bad:1", &Events::default()).unwrap_err().to_string();
    assert!(e.starts_with(&format!("Dockerfile:2: ADD {url}#main: git ls-remote failed: ")), "{e}");
    assert!(e.ends_with("(git reaches an ssh remote with the build's --ssh default[=KEY])"), "{e}");
    let e = env.build_ssh(&df, "remote/ssh-bad:2", &Events::default(), Some(vec![stranger])).unwrap_err();
    let e = e.to_string();
    assert!(e.starts_with(&format!("Dockerfile:2: ADD {url}#main: git ls-remote failed: ")), "{e}");
    assert!(e.contains("Could not read from remote repository") && !e.contains("--ssh default"), "{e}");
    env.assert_clean();
    drop(agent);
}
