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

/// One file the server has: body and `Last-Modified`.
#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    modified: Option<&'static str>,
}

/// A tiny HTTP/1.1 server on 127.0.0.1: one request per connection, files by path, 404 else;
/// counts requests per path.
struct Server {
    addr: String,
    files: Arc<Mutex<HashMap<String, Served>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    fn start() -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let files: Arc<Mutex<HashMap<String, Served>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (f, h) = (files.clone(), hits.clone());
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
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                *h.lock().unwrap().entry(path.clone()).or_default() += 1;
                let served = f.lock().unwrap().get(&path).cloned();
                let resp = match served {
                    Some(sv) => {
                        let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n", sv.body.len());
                        if let Some(m) = sv.modified {
                            r.push_str(&format!("Last-Modified: {m}\r\n"));
                        }
                        r.push_str("Connection: close\r\n\r\n");
                        let mut r = r.into_bytes();
                        r.extend_from_slice(&sv.body);
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
        Server { addr, files, hits }
    }

    fn put(&self, path: &str, body: &[u8], modified: Option<&'static str>) {
        self.files.lock().unwrap().insert(path.to_string(), Served { body: body.to_vec(), modified });
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
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
        let df = frontend::parse(dockerfile, "Dockerfile")?;
        let base = StoreBaseImages { store: &self.store };
        let b = Builder::new(&self.store, &self.t.runtime, &self.networks, &base, events);
        let req = BuildRequest {
            context: self.context.clone(),
            tags: vec![tag.to_string()],
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
