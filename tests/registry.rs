//! Pull and push against Debian's `docker-registry` on 127.0.0.1: anonymous, htpasswd basic
//! auth, and bearer tokens from a token server written here (over TLS with a CA made here);
//! indexes with two platforms, missing images, bad passwords, corrupted blobs, and a registry
//! that dies mid-layer (the next pull resumes with a Range request).
//!
//! Tools (`docker-registry`, `htpasswd`, `openssl`, `curl`, `busybox-static`) are installed
//! with apt-get when missing; a test fails with a clear message when they cannot be.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use berth::image::ImageStore;
use berth::image::events::ImageEvents;
use berth::image::registry::{CredentialStore, Registry, RegistryOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const CMD: &str = r#"CMD ["/bin/busybox","echo","hi"]"#;

/// Installs what the tests run, once per test process.
fn tools() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        let needed = [
            ("docker-registry", "/usr/bin/docker-registry"),
            ("apache2-utils", "/usr/bin/htpasswd"),
            ("openssl", "/usr/bin/openssl"),
            ("curl", "/usr/bin/curl"),
            ("busybox-static", "/bin/busybox"),
        ];
        let missing: Vec<&str> =
            needed.iter().filter(|(_, p)| !Path::new(p).exists()).map(|(n, _)| *n).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let install = |pkgs: &[&str]| {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends"])
                .args(pkgs)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        if !install(&missing) {
            let _ = Command::new("apt-get").arg("update").status();
            install(&missing);
        }
        let still: Vec<&str> =
            needed.iter().filter(|(_, p)| !Path::new(p).exists()).map(|(n, _)| *n).collect();
        if still.is_empty() {
            Ok(())
        } else {
            Err(format!("registry tests need {still:?}; `apt-get install -y {}` failed", still.join(" ")))
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_port(port: u16, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("docker-registry exited ({st}): {}", fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("docker-registry did not listen on {port}: {}", fs::read_to_string(log).unwrap_or_default());
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// How the registry authenticates.
enum Auth {
    None,
    Basic { user: String, password: String },
    Token(TokenServer),
}

/// A `docker-registry` on 127.0.0.1, killed on drop.
struct RegistryServer {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// A `certs.d` dir trusting its CA when it speaks TLS.
    certs_d: PathBuf,
    _auth: Auth,
}

impl RegistryServer {
    fn start(auth: Auth, tls: bool) -> RegistryServer {
        tools();
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().unwrap();
        let port = free_port();
        let d = dir.path();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            d.join("data").display()
        );
        let certs_d = d.join("certs.d");
        fs::create_dir_all(certs_d.join(format!("127.0.0.1:{port}"))).unwrap();
        if tls {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=berth test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
            openssl(
                d,
                &[
                    "req",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "leaf.key",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            );
            fs::write(
                d.join("ext.cnf"),
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
            )
            .unwrap();
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    "leaf.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "leaf.crt",
                    "-days",
                    "2",
                    "-extfile",
                    "ext.cnf",
                ],
            );
            fs::copy(d.join("ca.crt"), certs_d.join(format!("127.0.0.1:{port}/ca.crt"))).unwrap();
            cfg.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                d.join("leaf.crt").display(),
                d.join("leaf.key").display()
            ));
        }
        match &auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let line = run(Command::new("htpasswd").args(["-Bbn", user, password]));
                fs::write(d.join("htpasswd"), line).unwrap();
                cfg.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                    d.join("htpasswd").display()
                ));
            }
            Auth::Token(t) => {
                cfg.push_str(&format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: berth-test\n    issuer: berth-test-issuer\n    rootcertbundle: {}\n",
                    t.port,
                    t.cert.display()
                ));
            }
        }
        fs::write(d.join("cfg.yml"), cfg).unwrap();
        let log = d.join("registry.log");
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("cfg.yml"))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log).unwrap())
            .stderr(fs::File::create(d.join("registry.err")).unwrap())
            .spawn()
            .expect("docker-registry starts");
        wait_port(port, &mut child, &d.join("registry.err"));
        RegistryServer { child, dir, port, certs_d, _auth: auth }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's file holding blob `digest`.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join(format!("data/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token server: checks basic credentials and returns RS256 JWTs signed with a key whose
/// self-signed certificate the registry trusts (`rootcertbundle`), sent in `x5c`.
struct TokenServer {
    port: u16,
    cert: PathBuf,
    requests: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    fn start(user: &str, password: &str) -> TokenServer {
        tools();
        let dir = tempfile::Builder::new().prefix("berth-token-").tempdir().unwrap();
        let d = dir.path().to_path_buf();
        openssl(
            &d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "sign.key",
                "-out",
                "sign.crt",
                "-days",
                "2",
                "-subj",
                "/CN=berth token signer",
            ],
        );
        let der = Command::new("openssl")
            .args(["x509", "-in", "sign.crt", "-outform", "DER"])
            .current_dir(&d)
            .output()
            .unwrap()
            .stdout;
        let x5c = STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let key = d.join("sign.key");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counter.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut authorization = String::new();
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("authorization") {
                            authorization = v.trim().to_string();
                        } else if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut target = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                // docker's refresh-token flow: a form POST with the identity token.
                let mut refreshed = false;
                if request_line.starts_with("POST") {
                    let mut body = vec![0u8; length.min(64 * 1024)];
                    let _ = reader.read_exact(&mut body);
                    let form = String::from_utf8_lossy(&body).into_owned();
                    refreshed = form.split('&').any(|kv| kv == format!("refresh_token={REFRESH_TOKEN}"))
                        && form.contains("grant_type=refresh_token");
                    target = format!("/token?{form}");
                }
                let (status, body) = if authorization != expected && !refreshed {
                    ("401 Unauthorized", r#"{"details":"bad credentials"}"#.to_string())
                } else {
                    ("200 OK", token_body(&target, &key, &x5c))
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer { port, cert: d.join("sign.crt"), requests, _dir: dir }
    }
}

fn unpercent(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) =
                std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON answer of a token request for `target` (`/token?service=..&scope=..`).
fn token_body(target: &str, key: &Path, x5c: &str) -> String {
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut access = Vec::new();
    for pair in query.split('&') {
        let Some((k, v)) = pair.split_once('=') else { continue };
        if k != "scope" {
            continue;
        }
        for scope in unpercent(v).split(' ') {
            // repository:<name>:<actions>
            let parts: Vec<&str> = scope.splitn(3, ':').collect();
            if parts.len() == 3 {
                let actions: Vec<&str> = parts[2].split(',').collect();
                access.push(json!({ "type": parts[0], "name": parts[1], "actions": actions }));
            }
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let header = json!({ "alg": "RS256", "typ": "JWT", "x5c": [x5c] });
    let claims = json!({
        "iss": "berth-test-issuer", "sub": "tok", "aud": "berth-test",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
    let sig = child.wait_with_output().unwrap().stdout;
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
    // Half the servers say `token`, the others `access_token`: send the second.
    json!({ "access_token": token, "expires_in": 300 }).to_string()
}

/// The identity token the test token server accepts in its refresh-token flow.
const REFRESH_TOKEN: &str = "berth-refresh-token";

/// A test's own root, run dir, docker config and certs dir; runs the berth binary.
struct Env {
    env: common::TestEnv,
    home: PathBuf,
    certs_d: PathBuf,
    /// A dir put first on PATH (credential helpers).
    bin: Option<PathBuf>,
    /// More environment for the berth binary.
    extra_env: Vec<(String, String)>,
}

impl Env {
    fn new(certs_d: &Path) -> Env {
        let env = common::TestEnv::new();
        let home = env.dir.path().join("home");
        fs::create_dir_all(home.join(".docker")).unwrap();
        Env { env, home, certs_d: certs_d.to_path_buf(), bin: None, extra_env: Vec::new() }
    }

    fn berth_in(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
        if let Some(bin) = &self.bin {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", bin.display()));
        }
        let mut child = cmd
            .env("BERTH_ROOT", &self.env.dirs.root)
            .env("BERTH_RUN", &self.env.dirs.run)
            .env("HOME", &self.home)
            .env("DOCKER_CONFIG", self.home.join(".docker"))
            .env("BERTH_CERTS_D", &self.certs_d)
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("BERTH_INSECURE_REGISTRIES")
            .env_remove("BERTH_REGISTRY_TIMEOUT")
            .envs(self.extra_env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    fn berth(&self, args: &[&str]) -> (bool, String, String) {
        self.berth_in(args, "")
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.berth(args);
        assert!(ok, "berth {args:?} failed:\n{out}\n{err}");
        out
    }

    fn store(&self) -> ImageStore {
        ImageStore::open(&self.env.dirs).unwrap()
    }

    /// Imports the busybox layer as `name`.
    fn import(&self, name: &str) -> String {
        let layer = self.env.layer.display().to_string();
        self.ok(&["image", "import", "-c", CMD, &layer, name]).trim().to_string()
    }

    /// Runs the image's command; returns its output.
    fn run_image(&self, name: &str) -> String {
        let image = self.store().resolve(name).unwrap();
        let c = image.config.config().clone().unwrap_or_default();
        let args: Vec<String> = c.cmd().clone().unwrap_or_default();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut spec = self.env.spec("pulled", &args);
        spec.rootfs.lower_dirs = image.layer_dirs.clone();
        let (st, log) = self.env.run_to_end(&spec);
        assert_eq!(st.exit_code, Some(0), "{log}");
        log
    }

    fn image_count(&self) -> usize {
        self.store().list().unwrap().len()
    }

    /// Files under blobs/ and layers/ (what is stored as complete).
    fn stored_files(&self) -> usize {
        let images = self.env.dirs.images();
        ["blobs/sha256", "layers"]
            .iter()
            .map(|d| fs::read_dir(images.join(d)).map(|r| r.count()).unwrap_or(0))
            .sum()
    }
}

/// Every event, in order: (kind, name, status).
#[derive(Default)]
struct Collect(std::sync::Mutex<Vec<(String, String, String)>>);

impl ImageEvents for Collect {
    fn event(&self, kind: &str, name: &str, status: &str, _done: bool) {
        self.0.lock().unwrap().push((kind.into(), name.into(), status.into()));
    }
    fn failed(&self, kind: &str, name: &str, status: &str) {
        self.0.lock().unwrap().push((kind.into(), name.into(), format!("failed: {status}")));
    }
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[test]
fn push_pull_run_without_auth() {
    let reg = RegistryServer::start(Auth::None, false);
    let host = reg.host();
    let name = format!("{host}/test/bb:v1");
    let src = Env::new(&reg.certs_d);
    let id = src.import(&name);
    let out = src.ok(&["image", "push", &name]);
    assert!(out.contains(&format!("The push refers to repository [{host}/test/bb]")), "{out}");
    assert!(out.contains(": Pushed"), "{out}");
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    // Again: everything is there.
    let out = src.ok(&["image", "push", &name]);
    assert!(out.contains("Layer already exists"), "{out}");
    // The same layer in another repository of the registry is mounted, not uploaded.
    let other = format!("{host}/test/other:v1");
    src.import(&other);
    let out = src.ok(&["image", "push", &other]);
    assert!(out.contains("Mounted from test/bb"), "{out}");

    src.ok(&["image", "rm", &name]);
    let dst = Env::new(&reg.certs_d);
    let out = dst.ok(&["image", "pull", &name]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    assert!(out.trim_end().ends_with(&name), "{out}");
    assert_eq!(dst.store().resolve(&name).unwrap().id, id);
    assert_eq!(dst.run_image(&name), "hi\n");
    // Pulled again: up to date; by digest: found again.
    let out = dst.ok(&["image", "pull", &name]);
    assert!(out.contains("Status: Image is up to date"), "{out}");
    let digest = out.lines().find_map(|l| l.strip_prefix("Digest: ")).unwrap().to_string();
    let by_digest = format!("{host}/test/bb@{digest}");
    assert!(dst.store().resolve(&by_digest).is_ok());
    let fresh = Env::new(&reg.certs_d);
    let out = fresh.ok(&["image", "pull", "-q", &by_digest]);
    assert_eq!(out.trim(), by_digest);
    assert_eq!(fresh.store().resolve(&by_digest).unwrap().id, id);

    // Two pulls sharing a layer, at once, through one shared client: the layer is fetched once.
    let both = Env::new(&reg.certs_d);
    let opts = RegistryOptions {
        credentials: CredentialStore {
            docker_config_dir: both.home.join(".docker"),
            podman_auth_files: vec![],
        },
        certs_dir: reg.certs_d.clone(),
        ..RegistryOptions::from_env()
    };
    let client = Registry::new(opts);
    let events = Collect::default();
    let store = both.store();
    std::thread::scope(|s| {
        let a = s.spawn(|| client.pull(&store, &name, None, &events));
        let b = s.spawn(|| client.pull(&store, &other, None, &events));
        let (a, b) = (a.join().unwrap().unwrap(), b.join().unwrap().unwrap());
        assert_eq!(a.reference, name);
        assert!(a.updated && b.updated);
    });
    let seen = events.0.lock().unwrap().clone();
    let statuses: Vec<&str> = seen.iter().map(|(_, _, st)| st.as_str()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == "Pull complete").count(), 1, "{seen:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "Already exists").count(), 1, "{seen:?}");
    assert_eq!(statuses.iter().filter(|s| **s == "Pulled").count(), 2, "{seen:?}");
    assert!(statuses.iter().any(|s| s.starts_with("Downloading ") && s.contains("MB/")), "{seen:?}");
    assert_eq!(both.run_image(&other), "hi\n");

    // `image prune` removes what failed pulls left to resume.
    let pull_dir = both.env.dirs.images().join(".pull");
    let stale = pull_dir.join(format!("{}.partial", "ab".repeat(32)));
    fs::write(&stale, b"partial").unwrap();
    both.ok(&["image", "prune"]);
    assert!(!stale.exists());

    // A missing image: a clear error and nothing stored.
    let empty = Env::new(&reg.certs_d);
    let (ok, _, err) = empty.berth(&["image", "pull", &format!("{host}/test/nope:v1")]);
    assert!(!ok);
    assert!(err.contains("test/nope:v1") && err.contains("not found"), "{err}");
    assert_eq!((empty.image_count(), empty.stored_files()), (0, 0));

    // A corrupted blob in the registry: a digest mismatch, nothing stored.
    let store = src.store();
    let (_, _, manifest) = store_manifest(&store, &other);
    let layer = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let file = reg.blob_file(&layer);
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&file, &bytes).unwrap();
    let (ok, _, err) = empty.berth(&["image", "pull", &other]);
    assert!(!ok);
    assert!(err.contains("digest mismatch") && err.contains(&layer), "{err}");
    assert_eq!((empty.image_count(), empty.stored_files()), (0, 0));
}

/// A pulled image whose layer blob and unpacked folder are damaged (cut in half, emptied, or
/// overwritten with as many random bytes) is whole again after the next pull, which fetches
/// the blob again from the registry and unpacks it anew, naming each repaired file once.
#[test]
fn a_damaged_pulled_layer_is_fetched_again() {
    let reg = RegistryServer::start(Auth::None, false);
    let name = format!("{}/test/damaged:v1", reg.host());
    let src = Env::new(&reg.certs_d);
    src.import(&name);
    src.ok(&["image", "push", &name]);
    for damage in ["half", "empty", "garbage"] {
        let dst = Env::new(&reg.certs_d);
        dst.ok(&["image", "pull", &name]);
        let store = dst.store();
        let (_, id, manifest) = store_manifest(&store, &name);
        let layer_digest = manifest["layers"][0]["digest"].as_str().unwrap().to_string();
        let blob = store.blob_path(&layer_digest);
        let config: Value = serde_json::from_slice(&fs::read(store.blob_path(&id)).unwrap()).unwrap();
        // One layer: its chain id is its diff id.
        let layer = store.layer_path(config["rootfs"]["diff_ids"][0].as_str().unwrap());
        let good = fs::read(&blob).unwrap();
        let bad = match damage {
            "half" => good[..good.len() / 2].to_vec(),
            "empty" => Vec::new(),
            _ => good.iter().map(|b| b ^ 0x5a).collect(),
        };
        fs::write(&blob, &bad).unwrap();
        fs::remove_dir_all(layer.join("bin")).unwrap();
        let (ok, out, err) = dst.berth(&["image", "pull", &name]);
        assert!(ok, "{damage}: {out}\n{err}");
        assert_eq!(fs::read(&blob).unwrap(), good, "{damage}: the blob is not stored again");
        let folder = format!("{}: damaged", layer.display());
        assert_eq!(err.lines().filter(|l| l.contains(&folder)).count(), 1, "{damage}: {err}");
        assert_eq!(dst.run_image(&name), "hi\n", "{damage}");
    }
}

/// The stored manifest of an image, parsed.
fn store_manifest(store: &ImageStore, name: &str) -> (String, String, Value) {
    let v = store.inspect(name).unwrap();
    let id = v["Id"].as_str().unwrap().to_string();
    // Find the manifest blob whose config is `id`.
    let index: Value =
        serde_json::from_slice(&fs::read(store_dir(store).join("index.json")).unwrap()).unwrap();
    for d in index["manifests"].as_array().unwrap() {
        let digest = d["digest"].as_str().unwrap();
        let bytes = fs::read(store.blob_path(digest)).unwrap();
        let m: Value = serde_json::from_slice(&bytes).unwrap();
        if m["config"]["digest"] == id.as_str() {
            return (digest.to_string(), id, m);
        }
    }
    panic!("no manifest for {name}");
}

fn store_dir(store: &ImageStore) -> PathBuf {
    store.blob_path("sha256:x").parent().unwrap().parent().unwrap().parent().unwrap().to_path_buf()
}

/// `curl` against the test registry.
fn curl(args: &[&str]) -> String {
    run(Command::new("curl").args(["-sS", "-f"]).args(args))
}

/// Uploads a blob with curl (monolithic upload).
fn curl_blob(host: &str, repo: &str, bytes: &[u8], dir: &Path) -> String {
    let digest = sha(bytes);
    let file = dir.join(digest.trim_start_matches("sha256:"));
    fs::write(&file, bytes).unwrap();
    let headers = curl(&[
        "-X",
        "POST",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("http://{host}/v2/{repo}/blobs/uploads/"),
    ]);
    let location = headers
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
        .unwrap()
        .trim()
        .to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{location}{sep}digest={digest}"),
    ]);
    digest
}

fn curl_manifest(host: &str, repo: &str, reference: &str, media_type: &str, bytes: &[u8], dir: &Path) {
    let file = dir.join(format!("manifest-{reference}"));
    fs::write(&file, bytes).unwrap();
    curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Content-Type: {media_type}"),
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("http://{host}/v2/{repo}/manifests/{reference}"),
    ]);
}

#[test]
fn an_index_gives_the_host_platform() {
    let reg = RegistryServer::start(Auth::None, false);
    let host = reg.host();
    let name = format!("{host}/multi/bb:amd");
    let src = Env::new(&reg.certs_d);
    let amd_id = src.import(&name);
    src.ok(&["image", "push", &name]);
    let (amd_digest, _, amd_manifest) = store_manifest(&src.store(), &name);
    let amd_bytes = fs::read(src.store().blob_path(&amd_digest)).unwrap();
    // An arm64 image sharing the layer: its own config and manifest.
    let config: Value = serde_json::from_slice(&fs::read(src.store().blob_path(&amd_id)).unwrap()).unwrap();
    let mut arm_config = config.clone();
    arm_config["architecture"] = json!("arm64");
    arm_config["variant"] = json!("v8");
    let arm_config_bytes = serde_json::to_vec(&arm_config).unwrap();
    let tmp = src.env.dir.path();
    let arm_id = curl_blob(&host, "multi/bb", &arm_config_bytes, tmp);
    let mut arm_manifest = amd_manifest.clone();
    arm_manifest["config"]["digest"] = json!(arm_id);
    arm_manifest["config"]["size"] = json!(arm_config_bytes.len());
    let arm_bytes = serde_json::to_vec(&arm_manifest).unwrap();
    let arm_digest = sha(&arm_bytes);
    curl_manifest(
        &host,
        "multi/bb",
        &arm_digest,
        "application/vnd.oci.image.manifest.v1+json",
        &arm_bytes,
        tmp,
    );
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm_digest, "size": arm_bytes.len(),
              "platform": { "os": "linux", "architecture": "arm64", "variant": "v8" } },
            { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd_digest, "size": amd_bytes.len(),
              "platform": { "os": "linux", "architecture": "amd64" } },
        ],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    curl_manifest(&host, "multi/bb", "multi", "application/vnd.oci.image.index.v1+json", &index_bytes, tmp);
    let multi = format!("{host}/multi/bb:multi");

    let dst = Env::new(&reg.certs_d);
    let out = dst.ok(&["image", "pull", &multi]);
    assert!(out.contains(&format!("Digest: {amd_digest}")), "{out}");
    assert_eq!(dst.store().resolve(&multi).unwrap().id, amd_id);
    assert_eq!(dst.run_image(&multi), "hi\n");

    let arm = Env::new(&reg.certs_d);
    arm.ok(&["image", "pull", "--platform", "linux/arm64", &multi]);
    assert_eq!(arm.store().resolve(&multi).unwrap().id, arm_id);

    // A Docker schema 2 manifest with a gzip layer: unpacked while it streams, kept as it
    // came (so that its digest finds it again).
    let layer_digest = amd_manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let plain = fs::read(src.store().blob_path(&layer_digest)).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = gz.finish().unwrap();
    let gz_digest = curl_blob(&host, "multi/bb", &gz, tmp);
    let config_bytes = fs::read(src.store().blob_path(&amd_id)).unwrap();
    let docker = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": { "mediaType": "application/vnd.docker.container.image.v1+json", "size": config_bytes.len(), "digest": amd_id },
        "layers": [{ "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": gz.len(), "digest": gz_digest }],
    });
    let docker_bytes = serde_json::to_vec_pretty(&docker).unwrap();
    curl_manifest(
        &host,
        "multi/bb",
        "docker",
        "application/vnd.docker.distribution.manifest.v2+json",
        &docker_bytes,
        tmp,
    );
    let docker_name = format!("{host}/multi/bb:docker");
    let d = Env::new(&reg.certs_d);
    let out = d.ok(&["image", "pull", &docker_name]);
    assert!(out.contains(&format!("Digest: {}", sha(&docker_bytes))), "{out}");
    assert_eq!(d.run_image(&docker_name), "hi\n");
    assert!(d.store().resolve(&format!("{host}/multi/bb@{}", sha(&docker_bytes))).is_ok());
    // And pushed back as it is: same digest.
    let out = d.ok(&["image", "push", &docker_name]);
    assert!(out.contains(&format!("docker: digest: {}", sha(&docker_bytes))), "{out}");

    // An OCI manifest with a zstd layer.
    let zst = zstd::encode_all(&plain[..], 3).unwrap();
    let zst_digest = curl_blob(&host, "multi/bb", &zst, tmp);
    let oci = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "size": config_bytes.len(), "digest": amd_id },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "size": zst.len(), "digest": zst_digest }],
    });
    let oci_bytes = serde_json::to_vec(&oci).unwrap();
    curl_manifest(&host, "multi/bb", "zstd", "application/vnd.oci.image.manifest.v1+json", &oci_bytes, tmp);
    let z = Env::new(&reg.certs_d);
    let zstd_name = format!("{host}/multi/bb:zstd");
    z.ok(&["image", "pull", &zstd_name]);
    assert_eq!(z.run_image(&zstd_name), "hi\n");

    let none = Env::new(&reg.certs_d);
    let (ok, _, err) = none.berth(&["image", "pull", "--platform", "linux/s390x", &multi]);
    assert!(!ok);
    assert!(err.contains("linux/s390x") && err.contains("linux/arm64/v8, linux/amd64"), "{err}");
    assert_eq!((none.image_count(), none.stored_files()), (0, 0));
}

#[test]
fn basic_auth_login_logout() {
    let reg = RegistryServer::start(Auth::Basic { user: "berth".into(), password: "s3cret".into() }, false);
    let host = reg.host();
    let name = format!("{host}/auth/bb:v1");
    let env = Env::new(&reg.certs_d);
    env.import(&name);
    let (ok, _, err) = env.berth(&["image", "push", &name]);
    assert!(!ok);
    assert!(err.contains("unauthorized") && err.contains(&host), "{err}");
    // A bad password: a clear 401, nothing written.
    let (ok, _, err) = env.berth_in(&["login", &host, "-u", "berth", "--password-stdin"], "wrong\n");
    assert!(!ok);
    assert!(err.contains("unauthorized"), "{err}");
    let config = env.home.join(".docker/config.json");
    assert!(!config.exists());
    let (ok, out, err) = env.berth_in(&["login", &host, "-u", "berth", "--password-stdin"], "s3cret\n");
    assert!(ok, "{out}{err}");
    assert!(out.contains("Login Succeeded"), "{out}");
    let v: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert_eq!(v["auths"][&host]["auth"], STANDARD.encode("berth:s3cret"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    env.ok(&["image", "push", &name]);
    env.ok(&["image", "rm", &name]);
    env.ok(&["image", "pull", &name]);
    assert_eq!(env.run_image(&name), "hi\n");
    let out = env.ok(&["logout", &host]);
    assert!(out.contains(&format!("Removing login credentials for {host}")), "{out}");
    let v: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    assert!(v["auths"].get(&host).is_none(), "{v}");
    env.ok(&["image", "rm", &name]);
    let (ok, _, err) = env.berth(&["image", "pull", &name]);
    assert!(!ok);
    assert!(err.contains("unauthorized"), "{err}");
    // A credential helper (`credsStore`): login stores through it, pulls ask it.
    let mut helped = Env::new(&reg.certs_d);
    let bin = helped.env.dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let saved = helped.env.dir.path().join("helper-store");
    let helper = bin.join("docker-credential-berthtest");
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n store) cat > {s} ;;\n get) read server; if [ -s {s} ]; then sed 's/\"ServerURL\":\"[^\"]*\",//' {s}; else echo 'credentials not found in native keychain'; exit 1; fi ;;\n erase) rm -f {s} ;;\nesac\n",
            s = saved.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    helped.bin = Some(bin);
    fs::write(helped.home.join(".docker/config.json"), r#"{"credsStore":"berthtest"}"#).unwrap();
    let (ok, out, err) = helped.berth_in(&["login", &host, "-u", "berth", "--password-stdin"], "s3cret");
    assert!(ok && out.contains("Login Succeeded"), "{out}{err}");
    let stored: Value = serde_json::from_slice(&fs::read(&saved).unwrap()).unwrap();
    assert_eq!((stored["Username"].as_str(), stored["Secret"].as_str()), (Some("berth"), Some("s3cret")));
    let config = fs::read_to_string(helped.home.join(".docker/config.json")).unwrap();
    assert!(!config.contains("czNjcmV0") && !config.contains("s3cret"), "{config}");
    helped.ok(&["image", "pull", &name]);
    let out = helped.ok(&["logout", &host]);
    assert!(out.contains("Removing login credentials"), "{out}");
    assert!(!saved.exists());

    // docker's `-p PASSWORD` works too.
    let (ok, out, err) = env.berth(&["login", &host, "-u", "berth", "-p", "s3cret"]);
    assert!(ok && out.contains("Login Succeeded"), "{out}{err}");
}

#[test]
fn bearer_tokens_over_tls() {
    let token = TokenServer::start("tok", "en");
    let requests = token.requests.clone();
    let reg = RegistryServer::start(Auth::Token(token), true);
    let host = reg.host();
    let name = format!("{host}/tok/bb:v1");
    let env = Env::new(&reg.certs_d);
    env.import(&name);
    let (ok, _, err) = env.berth(&["image", "push", &name]);
    assert!(!ok);
    assert!(err.contains("unauthorized"), "{err}");
    // Credentials from config.json (as `docker login` leaves them).
    fs::write(
        env.home.join(".docker/config.json"),
        json!({ "auths": { &host: { "auth": STANDARD.encode("tok:en") } } }).to_string(),
    )
    .unwrap();
    env.ok(&["image", "push", &name]);
    let before = requests.load(Ordering::SeqCst);
    let dst = Env::new(&reg.certs_d);
    fs::copy(env.home.join(".docker/config.json"), dst.home.join(".docker/config.json")).unwrap();
    dst.ok(&["image", "pull", &name]);
    assert_eq!(dst.run_image(&name), "hi\n");
    // One token for the pull scope, reused for every request.
    assert_eq!(requests.load(Ordering::SeqCst) - before, 1);
    // Without the CA, TLS fails with a clear error.
    let untrusting = Env::new(&env.env.dir.path().join("no-certs"));
    let (ok, _, err) = untrusting.berth(&["image", "pull", &name]);
    assert!(!ok);
    assert!(err.contains(&host) && err.contains("certificate"), "{err}");
    // A wrong password: 401 from the token server, named.
    let wrong = Env::new(&reg.certs_d);
    fs::write(
        wrong.home.join(".docker/config.json"),
        json!({ "auths": { &host: { "auth": STANDARD.encode("tok:nope") } } }).to_string(),
    )
    .unwrap();
    let (ok, _, err) = wrong.berth(&["image", "pull", &name]);
    assert!(!ok);
    assert!(err.contains("unauthorized"), "{err}");
    let (ok, _, err) = wrong.berth_in(&["login", &host, "-u", "tok", "--password-stdin"], "nope");
    assert!(!ok && err.contains("unauthorized"), "{err}");
    let (ok, out, err) = wrong.berth_in(&["login", &host, "-u", "tok", "--password-stdin"], "en");
    assert!(ok && out.contains("Login Succeeded"), "{out}{err}");

    // An identity token (docker's refresh token) instead of a password.
    let ident = Env::new(&reg.certs_d);
    fs::write(
        ident.home.join(".docker/config.json"),
        json!({ "auths": { &host: { "identitytoken": REFRESH_TOKEN } } }).to_string(),
    )
    .unwrap();
    ident.ok(&["image", "pull", &name]);
    assert_eq!(ident.run_image(&name), "hi\n");
}

/// Forwards 127.0.0.1:port to the registry; in `cut` mode, cuts the first connection whose
/// answers pass `cut_after` bytes, then refuses every connection until set back to pass.
struct Proxy {
    port: u16,
    mode: Arc<AtomicU8>,
    saw_range: Arc<AtomicBool>,
}

const PASS: u8 = 0;
const CUT: u8 = 1;
const REFUSE: u8 = 2;
/// Answers the next connection with a 503, then passes.
const UNAVAILABLE_ONCE: u8 = 3;

impl Proxy {
    fn start(upstream: u16, cut_after: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(AtomicU8::new(CUT));
        let saw_range = Arc::new(AtomicBool::new(false));
        let (m, r) = (mode.clone(), saw_range.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if m.load(Ordering::SeqCst) == REFUSE {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if m.load(Ordering::SeqCst) == UNAVAILABLE_ONCE {
                    m.store(PASS, Ordering::SeqCst);
                    let mut c = client;
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf);
                    let _ = c.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    let _ = c.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let seen = r.clone();
                std::thread::spawn(move || {
                    let (mut from, mut to) = (c2, s2);
                    let mut buf = [0u8; 16384];
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase().contains("range: bytes=") {
                            seen.store(true, Ordering::SeqCst);
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Write);
                });
                let mode = m.clone();
                std::thread::spawn(move || {
                    let (mut from, mut to) = (server, client);
                    let mut buf = [0u8; 16384];
                    let mut passed = 0u64;
                    while let Ok(n) = from.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        if mode.load(Ordering::SeqCst) == CUT && passed + n as u64 > cut_after {
                            mode.store(REFUSE, Ordering::SeqCst);
                            let _ = to.shutdown(Shutdown::Both);
                            let _ = from.shutdown(Shutdown::Both);
                            return;
                        }
                        passed += n as u64;
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = to.shutdown(Shutdown::Both);
                });
            }
        });
        Proxy { port, mode, saw_range }
    }
}

#[test]
fn an_interrupted_pull_resumes() {
    let reg = RegistryServer::start(Auth::None, false);
    let host = reg.host();
    let src = Env::new(&reg.certs_d);
    let big = src.env.dir.path().join("big");
    fs::create_dir_all(&big).unwrap();
    let mut random = vec![0u8; 20 << 20];
    fs::File::open("/dev/urandom").unwrap().read_exact(&mut random).unwrap();
    fs::write(big.join("random.bin"), &random).unwrap();
    drop(random);
    let name = format!("{host}/big/data:v1");
    src.ok(&["image", "import", &big.display().to_string(), &name]);
    src.ok(&["image", "push", &name]);

    let proxy = Proxy::start(reg.port, 5 << 20);
    let via = format!("127.0.0.1:{}/big/data:v1", proxy.port);
    let dst = Env::new(&reg.certs_d);
    let (ok, out, err) = dst.berth(&["image", "pull", &via]);
    assert!(!ok, "{out}");
    assert!(err.contains(&format!("127.0.0.1:{}", proxy.port)), "{err}");
    assert_eq!((dst.image_count(), dst.stored_files()), (0, 0));
    let partials: Vec<_> = fs::read_dir(dst.env.dirs.images().join(".pull"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert_eq!(partials.len(), 1);
    let kept = partials[0].metadata().unwrap().len();
    assert!(kept > 0 && kept < 20 << 20, "{kept}");

    proxy.mode.store(PASS, Ordering::SeqCst);
    let out = dst.ok(&["image", "pull", &via]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(proxy.saw_range.load(Ordering::SeqCst), "the second pull did not ask for a range");
    let image = dst.store().resolve(&via).unwrap();
    let file = image.layer_dirs[0].join("random.bin");
    assert_eq!(fs::metadata(&file).unwrap().len(), 20 << 20);
    assert_eq!(sha(&fs::read(&file).unwrap()), sha(&fs::read(big.join("random.bin")).unwrap()));
    let left: Vec<_> = fs::read_dir(dst.env.dirs.images().join(".pull"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A 503 is retried.
    proxy.mode.store(UNAVAILABLE_ONCE, Ordering::SeqCst);
    let again = Env::new(&reg.certs_d);
    again.ok(&["image", "pull", &via]);
    assert_eq!(proxy.mode.load(Ordering::SeqCst), PASS);
    assert_eq!(again.image_count(), 1);
}

/// A server on 127.0.0.1 that takes connections and never answers (it holds them open).
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

#[test]
fn a_silent_registry_fails_in_bounded_time() {
    let port = silent_server();
    // No certs.d: the test talks to its own server only.
    let mut env = Env::new(Path::new("/nonexistent/berth-certs.d"));
    env.extra_env.push(("BERTH_REGISTRY_TIMEOUT".into(), "2".into()));
    let image = format!("127.0.0.1:{port}/quiet/img:v1");
    let started = Instant::now();
    let (ok, out, err) = env.berth(&["image", "pull", &image]);
    let took = started.elapsed();
    assert!(!ok, "{out}");
    // TLS first, then plain HTTP (a local registry): two bounded pings, nothing retried.
    assert!(took < Duration::from_secs(10), "the pull took {took:?}:\n{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("pull 127.0.0.1:{port}/quiet/img:v1"))
            && err.contains(&format!("registry 127.0.0.1:{port}"))
            && err.contains("no answer within 2 s"),
        "{err}"
    );
    assert_eq!((env.image_count(), env.stored_files()), (0, 0));
}

/// Gives the whole response to a request line and body.
type Answer = Arc<dyn Fn(&str, &[u8]) -> String + Send + Sync>;

/// An HTTP/1.1 server on 127.0.0.1: `answer(request line, body)` gives each whole response.
fn http_server(answer: Answer) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(c.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    if c.write_all(answer(line.trim(), &body).as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A registry that answers `/v2/`, has no blob, and answers 501 with a long HTML page to
/// everything else.
fn unimplemented_server() -> u16 {
    http_server(Arc::new(|line: &str, _: &[u8]| {
        if line.starts_with("GET /v2/ ") {
            return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string();
        }
        if line.starts_with("HEAD ") {
            // No blob here: the push goes on to start an upload, which gets the page.
            return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string();
        }
        let page = format!(
            "<html>\n<head><title>501 Not Implemented</title></head>\n<body>{}</body></html>\n",
            "<p>this proxy does not do that</p>\n".repeat(400)
        );
        format!(
            "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{page}",
            page.len()
        )
    }))
}

#[test]
fn a_registry_error_page_is_cut_short() {
    let port = unimplemented_server();
    let env = Env::new(Path::new("/nonexistent/berth-certs.d"));
    let name = format!("127.0.0.1:{port}/short/err:v1");
    env.import(&name);
    let (ok, out, err) = env.berth(&["image", "push", &name]);
    assert!(!ok, "{out}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("501") && err.contains(&name), "{err}");
    assert!(err.contains("501 Not Implemented") && err.len() < 400, "{err}");
}

#[test]
fn push_uploads_blobs_in_parallel() {
    // A registry that has nothing, takes 300 ms per upload chunk and counts the chunks in
    // flight at once.
    let in_flight = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let (f, m) = (in_flight.clone(), most.clone());
    let port = http_server(Arc::new(move |line: &str, _: &[u8]| {
        let ok = |status: &str, extra: &str| format!("HTTP/1.1 {status}\r\n{extra}Content-Length: 0\r\n\r\n");
        let (method, path) = line.split_once(' ').unwrap_or((line, ""));
        let path = path.split(' ').next().unwrap_or("");
        match method {
            "GET" if path == "/v2/" => ok("200 OK", ""),
            "HEAD" => ok("404 Not Found", ""),
            "POST" => ok("202 Accepted", "Location: /v2/par/img/blobs/uploads/u1\r\n"),
            "PATCH" => {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(300));
                f.fetch_sub(1, Ordering::SeqCst);
                ok("202 Accepted", "Location: /v2/par/img/blobs/uploads/u1\r\n")
            }
            "PUT" => ok("201 Created", ""),
            _ => ok("400 Bad Request", ""),
        }
    }));
    let env = Env::new(Path::new("/nonexistent/berth-certs.d"));
    // Three layers (three COPY steps) and a config: four blobs.
    let dir = env.env.dir.path().join("proj");
    fs::create_dir_all(dir.join("ctx")).unwrap();
    for f in ["a", "b", "c"] {
        fs::write(dir.join("ctx").join(f), f).unwrap();
    }
    fs::write(dir.join("ctx/Dockerfile"), "FROM scratch\nCOPY a /a\nCOPY b /b\nCOPY c /c\n").unwrap();
    let name = format!("127.0.0.1:{port}/par/img:v1");
    fs::write(dir.join("compose.yaml"), format!("services:\n  s:\n    build: ctx\n    image: {name}\n"))
        .unwrap();
    let file = dir.join("compose.yaml").display().to_string();
    env.ok(&["-f", &file, "-p", "parpush", "build"]);
    let started = Instant::now();
    let out = env.ok(&["image", "push", &name]);
    assert_eq!(out.matches(": Pushed").count(), 3, "{out}");
    assert!(most.load(Ordering::SeqCst) >= 2, "uploads ran one at a time");
    // Four blobs one after the other would take 1.2 s.
    assert!(started.elapsed() < Duration::from_millis(1100), "{:?}", started.elapsed());
}

#[test]
fn pull_all_tags() {
    let reg = RegistryServer::start(Auth::None, false);
    let host = reg.host();
    let src = Env::new(&reg.certs_d);
    for tag in ["v1", "v2"] {
        let name = format!("{host}/all/tags:{tag}");
        src.import(&name);
        src.ok(&["image", "push", &name]);
    }
    let dst = Env::new(&reg.certs_d);
    let repo = format!("{host}/all/tags");
    let out = dst.ok(&["image", "pull", "-a", &repo]);
    assert!(out.contains("v1: Pulling from all/tags") && out.contains("v2: Pulling from all/tags"), "{out}");
    assert!(out.contains(&format!("Status: Downloaded newer image for {repo}")), "{out}");
    assert_eq!(out.trim_end().lines().last(), Some(repo.as_str()), "{out}");
    assert!(
        dst.store().resolve(&format!("{repo}:v1")).is_ok()
            && dst.store().resolve(&format!("{repo}:v2")).is_ok()
    );
    let (ok, _, err) = dst.berth(&["image", "pull", "--all-tags", &format!("{repo}:v1")]);
    assert!(!ok && err.contains("tag can't be used with --all-tags/-a"), "{err}");
    let (ok, _, err) = dst.berth(&["image", "pull", "-a", &format!("{host}/all/none")]);
    assert!(!ok && err.contains("all/none"), "{err}");
}
