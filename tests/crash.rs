//! Crash safety, by fault injection (root, real busybox containers): `up`, `down` and shims
//! are killed with SIGKILL at spread random moments, and every kind of record is damaged (cut
//! in half, emptied, overwritten with random bytes); after each trial `up -d --wait` must bring
//! the project back to its file (or, for a damaged image, fail with one error naming the file
//! and what to do) and `down -v` must leave nothing (no process, mount, link, netns file, nft
//! table, record).
//!
//! Image layers too: a layer's blob and its unpacked folder (and the folder's completion
//! marker) are damaged the same three ways.
//!
//! By default 3 trials of each kill, two damages of each record and two of layers (about five
//! minutes); `BERTH_CRASH_TRIALS=20` runs that many of each kill and all three damages of each
//! record and layer file (about thirteen minutes). `BERTH_CRASH_SEED` repeats a run (the seed is printed).

mod stack;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stack::Stack;

/// The published port (127.0.0.1 only).
const PORT: u16 = 24180;

/// A dozen services: a one-shot seeding job, a healthchecked db, a scaled worker, a web
/// server with a published port, two networks, a named volume, chains of `depends_on`
/// conditions.
fn compose() -> String {
    let mut y = String::from("services:\n");
    let sleeper = "    image: 127.0.0.1:9/berth-test/busybox:latest\n    stop_signal: SIGKILL\n    command: [\"sleep\", \"100000\"]\n";
    y += "  init:\n    image: 127.0.0.1:9/berth-test/busybox:latest\n    command: [\"sh\", \"-c\", \"echo seeded > /data/seed\"]\n    volumes: [\"data:/data\"]\n    networks: [back]\n";
    y += "  db:\n    image: 127.0.0.1:9/berth-test/busybox:latest\n    stop_signal: SIGKILL\n";
    y += "    command: [\"sh\", \"-c\", \"touch /data/ready; exec sleep 100000\"]\n    volumes: [\"data:/data\"]\n    networks: [back]\n";
    y += "    depends_on:\n      init: {condition: service_completed_successfully}\n";
    y += "    healthcheck: {test: [\"CMD\", \"test\", \"-f\", \"/data/ready\"], interval: 200ms, retries: 50}\n";
    y += &format!("  cache:\n{sleeper}    networks: [back]\n");
    y += &format!(
        "  api:\n{sleeper}    networks: [front, back]\n    depends_on:\n      db: {{condition: service_healthy}}\n      cache: {{condition: service_started}}\n"
    );
    y += "  web:\n    image: 127.0.0.1:9/berth-test/busybox:latest\n    stop_signal: SIGKILL\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/etc\"]\n";
    y += &format!("    ports: [\"127.0.0.1:{PORT}:80\"]\n    networks: [front]\n    depends_on: [api]\n");
    y += &format!(
        "  worker:\n{sleeper}    scale: 2\n    networks: [back]\n    depends_on:\n      api: {{condition: service_started}}\n"
    );
    y += &format!("  client:\n{sleeper}    networks: [front, back]\n    depends_on: [web, worker]\n");
    for i in 1..=5 {
        let dep = if i == 1 { "db".to_string() } else { format!("s{}", i - 1) };
        y += &format!("  s{i}:\n{sleeper}    depends_on: [{dep}]\n    networks: [back]\n");
    }
    y += "networks:\n";
    y += "  front:\n    ipam:\n      config:\n        - subnet: 10.242.11.0/24\n";
    y += "  back:\n    ipam:\n      config:\n        - subnet: 10.242.12.0/24\n";
    y += "volumes:\n  data: {}\n";
    y
}

/// The long-running containers the file asks for (the seeding job exits).
fn expected_running(project: &str) -> Vec<String> {
    let mut names: Vec<String> = ["db", "cache", "api", "web", "client", "s1", "s2", "s3", "s4", "s5"]
        .iter()
        .map(|s| format!("{project}-{s}-1"))
        .collect();
    names.push(format!("{project}-worker-1"));
    names.push(format!("{project}-worker-2"));
    names.sort();
    names
}

/// A small deterministic generator (xorshift), seeded from the clock or `BERTH_CRASH_SEED`.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("BERTH_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        eprintln!("crash: BERTH_CRASH_SEED={seed}");
        Rng(seed | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// A float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn trials() -> usize {
    std::env::var("BERTH_CRASH_TRIALS").ok().and_then(|s| s.parse().ok()).unwrap_or(3)
}

/// The moment of trial `i` of `n` within `span`: one random moment in each of `n` equal slices,
/// so that the kills spread over the whole command.
fn moment(rng: &mut Rng, i: usize, n: usize, span: Duration) -> Duration {
    span.mul_f64((i as f64 + rng.unit()) / n as f64)
}

/// Runs `berth ARGS` and kills it with SIGKILL after `delay` (if it still runs).
fn kill_after(s: &Stack, args: &[&str], delay: Duration) -> bool {
    let mut child = s.spawn(args);
    let end = Instant::now() + delay;
    while Instant::now() < end {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    killed
}

/// Brings the project up and insists that it matches its file.
fn converge(s: &Stack, what: &str) {
    let r = s.berth(&["up", "-d", "--wait", "--wait-timeout", "60"]);
    assert!(r.ok, "{what}: up -d --wait failed ({}):\n{}\n{}", r.code, r.stdout, r.stderr);
    check_converged(s, what);
    remember(s);
}

/// The project is what its file says: every container once, running; db healthy; the port
/// answers; names resolve on both networks.
fn check_converged(s: &Stack, what: &str) {
    let ps = s.ps();
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for c in &ps {
        *by_name.entry(c["Name"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    for (name, n) in &by_name {
        assert_eq!(*n, 1, "{what}: container {name} is listed {n} times: {ps:#?}");
    }
    let running: Vec<String> = ps
        .iter()
        .filter(|c| c["State"] == "running")
        .map(|c| c["Name"].as_str().unwrap_or_default().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(running, expected_running(&s.name), "{what}: running containers: {ps:#?}");
    let listed: Vec<&String> = by_name.keys().filter(|n| !n.ends_with("-init-1")).collect();
    assert_eq!(listed.len(), expected_running(&s.name).len(), "{what}: extra containers: {ps:#?}");
    let db = ps.iter().find(|c| c["Name"] == format!("{}-db-1", s.name)).unwrap();
    assert_eq!(db["Health"], "healthy", "{what}: db: {db:#?}");
    // The shims really run: each running container answers an exec.
    let r = s.exec("client", &["nslookup", "db"]);
    assert!(
        r.ok && r.stdout.contains("10.242.12."),
        "{what}: client cannot resolve db: {} {}",
        r.stdout,
        r.stderr
    );
    let r = s.exec("client", &["nslookup", "web"]);
    assert!(
        r.ok && r.stdout.contains("10.242.11."),
        "{what}: client cannot resolve web: {} {}",
        r.stdout,
        r.stderr
    );
    let body = http_get(PORT, "/hostname").unwrap_or_else(|e| panic!("{what}: published port: {e}"));
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{what}: published port answered {body:?}"
    );
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    stream.read_to_string(&mut out)?;
    Ok(out)
}

/// Takes the project down (with its volumes) and insists that nothing of it is left.
fn down_clean(s: &Stack, what: &str) {
    let before = processes_of(s);
    let r = s.berth(&["down", "-v", "-t", "0"]);
    assert!(r.ok, "{what}: down -v failed ({}):\n{}\n{}", r.code, r.stdout, r.stderr);
    // Gone as soon as `down` returns, not even left as zombies for init to reap: a check for
    // leaks run right after must not see them.
    let left: Vec<String> = before
        .iter()
        .filter(|(pid, name)| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name.as_str())
        })
        .map(|(pid, name)| format!("{pid} ({name})"))
        .collect();
    assert!(left.is_empty(), "{what}: processes still in the process table after down: {left:?}");
    check_nothing_left(s, what);
}

/// Pids of the stack's shims and of its DNS process, with their process names.
fn processes_of(s: &Stack) -> Vec<(i32, String)> {
    let dirs = berth::state::Dirs::new(s.root(), s.run_dir());
    let mut out: Vec<(i32, String)> =
        shims(s).into_iter().map(|(_, pid)| (pid, "berth-shim".to_string())).collect();
    if let Some(pid) = berth::netns::dns::running(&dirs) {
        out.push((pid.as_raw(), "berth-dns".to_string()));
    }
    out
}

/// Files in `dir` (recursively), as paths relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            let inner = files_under(&p);
            if inner.is_empty() {
                out.push(p);
            }
            out.extend(inner);
        } else {
            out.push(p);
        }
    }
    out
}

/// Processes named `berth-shim` or `berth-dns` (not zombies) whose command line or environment
/// names this stack's folder.
fn our_processes(s: &Stack) -> Vec<String> {
    let mark = s.dir.path().to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let p = e.path();
        let Ok(comm) = fs::read_to_string(p.join("comm")) else { continue };
        let comm = comm.trim().to_string();
        if comm != "berth-shim" && comm != "berth-dns" {
            continue;
        }
        let stat = fs::read_to_string(p.join("stat")).unwrap_or_default();
        if stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('Z')) {
            continue;
        }
        let cmdline = fs::read(p.join("cmdline")).unwrap_or_default();
        let environ = fs::read(p.join("environ")).unwrap_or_default();
        let mine = |b: &[u8]| String::from_utf8_lossy(b).contains(&mark);
        if mine(&cmdline) || mine(&environ) {
            out.push(format!("{} ({comm})", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// Nothing of the stack is left: no record, process, mount, link, nft table.
fn check_nothing_left(s: &Stack, what: &str) {
    let root = s.root();
    let run = s.run_dir();
    let mut left = Vec::new();
    for dir in [root.join("containers"), root.join("networks"), root.join("volumes"), root.join("projects")] {
        left.extend(files_under(&dir).into_iter().map(|p| p.display().to_string()));
    }
    for dir in ["containers", "netns", "endpoints", "netns-files", "dns", "projects"] {
        left.extend(files_under(&run.join(dir)).into_iter().map(|p| p.display().to_string()));
    }
    left.extend(our_processes(s).into_iter().map(|p| format!("process {p}")));
    let mark = s.dir.path().to_string_lossy().into_owned();
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    left.extend(mounts.lines().filter(|l| l.contains(&mark)).map(|l| format!("mount {l}")));
    let table = berth::netns::firewall::table_name(&root);
    let tables = Command::new("nft").args(["list", "tables"]).output().map(|o| o.stdout).unwrap_or_default();
    if String::from_utf8_lossy(&tables).split_whitespace().any(|w| w == table) {
        left.push(format!("nft table {table}"));
    }
    for line in remember(s) {
        match line.split_once(' ') {
            Some(("link", link)) if Path::new("/sys/class/net").join(link).exists() => {
                left.push(format!("link {link}"));
            }
            Some(("container", id)) if cgroup_dir(id).exists() => {
                left.push(format!("cgroup {}", cgroup_dir(id).display()));
            }
            _ => {}
        }
    }
    assert!(left.is_empty(), "{what}: left behind:\n{}", left.join("\n"));
}

/// What this stack has had on the host so far, remembered while its records exist, so that a
/// check after `down` knows what to look for: `link NAME` for its bridges and host-side veths,
/// `container ID` for its containers (their cgroups).
fn remember(s: &Stack) -> Vec<String> {
    let file = s.dir.path().join("seen");
    let mut seen: Vec<String> =
        fs::read_to_string(&file).unwrap_or_default().lines().map(str::to_string).collect();
    let dirs = berth::state::Dirs::new(s.root(), s.run_dir());
    let mut now: Vec<String> = Vec::new();
    for rec in berth::netns::record::all_networks(&dirs).unwrap_or_default() {
        now.push(format!("link {}", rec.bridge));
    }
    for rec in berth::netns::record::all_endpoints(&dirs).unwrap_or_default() {
        now.extend(rec.endpoints.iter().map(|e| format!("link {}", e.host_veth)));
    }
    for e in fs::read_dir(dirs.containers()).into_iter().flatten().flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        if !id.starts_with('.') {
            now.push(format!("container {id}"));
        }
    }
    for line in now {
        if !seen.contains(&line) {
            seen.push(line);
        }
    }
    let _ = fs::write(&file, seen.join("\n"));
    seen
}

/// Seconds a command took.
fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// The tests share the file's subnets and published port: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn stack(name: &str) -> Stack {
    let s = Stack::with_image(name, IMAGE);
    s.write("compose.yaml", &compose());
    s
}

#[test]
fn killed_up_and_down_converge() {
    let _serial = serial();
    let s = stack("crashkill");
    let mut rng = Rng::new();
    let n = trials();
    // The spans the kills spread over: one clean up and down.
    let up_span = timed(|| converge(&s, "first up"));
    let down_span = timed(|| down_clean(&s, "first down"));
    eprintln!("crash: up {up_span:?}, down {down_span:?}");
    // Four kinds of trial, each followed by both checks (up converges, down -v leaves
    // nothing), in the order its recovery takes; each ends where the next one starts, so no
    // command is spent only to get there:
    //   A  (nothing) up killed, then up, then down -v            → nothing
    //   B  (nothing) up killed, then down -v, then up            → running
    //   C  (running) down -v killed, then down -v, then up       → running
    //   D  (running) down killed (volumes kept), then up, then down -v → nothing
    for i in 0..n {
        let delay = moment(&mut rng, i, n, up_span);
        let killed = kill_after(&s, &["up", "-d", "--wait"], delay);
        let what = format!("A{i}: up killed at {delay:?} (killed: {killed})");
        converge(&s, &what);
        down_clean(&s, &format!("{what}, then up"));

        let delay = moment(&mut rng, i, n, up_span);
        let killed = kill_after(&s, &["up", "-d", "--wait"], delay);
        let what = format!("B{i}: up killed at {delay:?} (killed: {killed})");
        down_clean(&s, &what);
        converge(&s, &format!("{what}, then down"));

        let delay = moment(&mut rng, i, n, down_span);
        let killed = kill_after(&s, &["down", "-v", "-t", "0"], delay);
        let what = format!("C{i}: down -v killed at {delay:?} (killed: {killed})");
        down_clean(&s, &what);
        converge(&s, &format!("{what}, then down"));

        let delay = moment(&mut rng, i, n, down_span);
        let killed = kill_after(&s, &["down", "-t", "0"], delay);
        let what = format!("D{i}: down killed at {delay:?} (killed: {killed})");
        converge(&s, &what);
        down_clean(&s, &format!("{what}, then up"));
    }
}

/// Pids of the stack's running shims, by container name.
fn shims(s: &Stack) -> Vec<(String, i32)> {
    let dirs = berth::state::Dirs::new(s.root(), s.run_dir());
    let mut out = Vec::new();
    for e in fs::read_dir(dirs.containers()).into_iter().flatten().flatten() {
        let st: serde_json::Value =
            serde_json::from_slice(&fs::read(e.path().join("status.json")).unwrap_or_default())
                .unwrap_or_default();
        let rec: serde_json::Value =
            serde_json::from_slice(&fs::read(e.path().join("record.json")).unwrap_or_default())
                .unwrap_or_default();
        if let Some(pid) = st["shim_pid"].as_i64().filter(|p| *p > 0) {
            out.push((rec["name"].as_str().unwrap_or_default().to_string(), pid as i32));
        }
    }
    out.sort();
    out
}

#[test]
fn killed_shims_converge() {
    let _serial = serial();
    let s = stack("crashshim");
    let mut rng = Rng::new();
    let n = trials();
    let up_span = timed(|| converge(&s, "first up"));
    for i in 0..n {
        // Kill one or more shims of a running project…
        let all = shims(&s);
        assert!(!all.is_empty(), "no shims found");
        let count = 1 + (rng.next() as usize) % 3;
        let mut victims = Vec::new();
        for _ in 0..count {
            let (name, pid) = &all[(rng.next() as usize) % all.len()];
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
            victims.push(name.clone());
        }
        // …`ps` never calls a container whose shim is dead running and healthy…
        std::thread::sleep(Duration::from_millis(100));
        for c in s.ps() {
            if victims.iter().any(|v| c["Name"] == v.as_str()) {
                assert_ne!(c["State"], "running", "trial {i}: {} runs without its shim: {c:#?}", c["Name"]);
            }
        }
        let what = format!("trial {i}: shims of {victims:?} killed");
        converge(&s, &what);
        down_clean(&s, &format!("{what}, then up"));
        // …and shims killed while `up` is starting the project; again both checks follow.
        let delay = moment(&mut rng, i, n, up_span);
        let mut child = s.spawn(&["up", "-d", "--wait"]);
        std::thread::sleep(delay);
        let mut victims = Vec::new();
        for (name, pid) in shims(&s).into_iter().filter(|_| rng.next().is_multiple_of(2)) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            victims.push(name);
        }
        let _ = child.wait();
        let what = format!("trial {i}: shims of {victims:?} killed during up at {delay:?}");
        converge(&s, &what);
        down_clean(&s, &format!("{what}, then up"));
        if i + 1 < n {
            converge(&s, &format!("trial {}: up", i + 1));
        }
    }
}

/// How a record is damaged: cut to half its length, emptied, or overwritten with as many
/// random bytes (at least 16).
#[derive(Clone, Copy, Debug)]
enum Damage {
    Half,
    Empty,
    Garbage,
}

const DAMAGES: [Damage; 3] = [Damage::Half, Damage::Empty, Damage::Garbage];

/// Damages file `path`.
fn damage(path: &Path, how: Damage, rng: &mut Rng) {
    let len = fs::metadata(path).map(|m| m.len()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    match how {
        Damage::Half | Damage::Empty => {
            let f = fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(if matches!(how, Damage::Half) { len / 2 } else { 0 }).unwrap();
        }
        Damage::Garbage => {
            let bytes: Vec<u8> = (0..len.max(16)).map(|_| rng.next() as u8).collect();
            fs::write(path, bytes).unwrap();
        }
    }
}

/// The image every service runs. Its name is of a registry on 127.0.0.1 where nothing listens
/// (the discard port), so that when a damaged image makes `up` pull it again, the pull fails at
/// once without leaving this host (`berth-test/busybox` would be asked of Docker Hub).
const IMAGE: &str = "127.0.0.1:9/berth-test/busybox:latest";

/// The blobs of the image the stack runs: (manifest, config).
fn image_blobs(s: &Stack) -> (PathBuf, PathBuf) {
    let images = s.root().join("images");
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(images.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| images.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let manifest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .is_some_and(|n| n.contains("busybox"))
        })
        .and_then(|m| m["digest"].as_str())
        .map(blob)
        .expect("the image's manifest in index.json");
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&manifest).unwrap()).unwrap();
    let config = blob(m["config"]["digest"].as_str().unwrap());
    (manifest, config)
}

/// Imports the stack's image again (what the error of a damaged image asks for).
fn import_again(s: &Stack) {
    let rootfs = s.dir.path().join("rootfs");
    s.ok(&["image", "import", "-c", "CMD [\"sh\"]", rootfs.to_str().unwrap(), IMAGE]);
}

/// The container of `service`'s first replica: its folder.
fn container_of(s: &Stack, service: &str) -> PathBuf {
    let name = format!("\"{}-{service}-1\"", s.name);
    fs::read_dir(s.root().join("containers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| fs::read_to_string(p.join("record.json")).is_ok_and(|r| r.contains(&name)))
        .unwrap_or_else(|| panic!("no container of {service}"))
}

/// The files of each kind of record of a running project (one of each, picked at random where
/// there are several). A pending note is made for one of its containers, as a create killed
/// between its note and its record leaves one.
fn records(s: &Stack, rng: &mut Rng) -> Vec<(&'static str, Vec<PathBuf>)> {
    let root = s.root();
    let run = s.run_dir();
    let mut containers: Vec<PathBuf> =
        fs::read_dir(root.join("containers")).unwrap().flatten().map(|e| e.path()).collect();
    containers.sort();
    let pick = |rng: &mut Rng, v: &[PathBuf]| v[(rng.next() as usize) % v.len()].clone();
    let c = pick(rng, &containers);
    let mut endpoints: Vec<PathBuf> =
        fs::read_dir(run.join("endpoints")).unwrap().flatten().map(|e| e.path()).collect();
    endpoints.sort();
    let mut volumes: Vec<PathBuf> = files_under(&root.join("volumes"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    volumes.sort();
    assert!(!volumes.is_empty(), "no volume record found under {}", root.join("volumes").display());
    let network = root.join("networks").join(format!("{}_back.json", s.name));
    let copy = |p: &Path| PathBuf::from(format!("{}.copy", p.display()));
    let project = root.join("projects").join(&s.name);
    let pending = project.join("pending").join(c.file_name().unwrap());
    let images = root.join("images");
    let (manifest, config) = image_blobs(s);
    vec![
        ("container record", vec![c.join("record.json")]),
        ("container spec", vec![c.join("spec.json")]),
        ("container status", vec![c.join("status.json")]),
        ("seccomp filters", vec![container_of(s, "cache").join("seccomp.bpf")]),
        ("pending note", vec![pending]),
        ("network record", vec![network.clone()]),
        ("network record copy", vec![copy(&network)]),
        ("endpoint record", vec![pick(rng, &endpoints)]),
        ("volume record", vec![volumes[0].clone()]),
        ("volume record copy", vec![copy(&volumes[0])]),
        ("dns pid file", vec![run.join("dns").join("pid")]),
        ("project lock", vec![project.join("lock")]),
        ("event log", vec![run.join("projects").join(&s.name).join("events.jsonl")]),
        ("image index", vec![images.join("index.json")]),
        ("image index and its copy", vec![images.join("index.json"), copy(&images.join("index.json"))]),
        ("image manifest", vec![manifest]),
        ("image config", vec![config]),
    ]
}

/// Makes what a kind of record needs to exist before it is damaged: a pending note holds the
/// name of the container being made.
fn prepare(s: &Stack, kind: &str, paths: &[PathBuf]) {
    if kind == "pending note" {
        let note = &paths[0];
        fs::create_dir_all(note.parent().unwrap()).unwrap();
        let id = note.file_name().unwrap().to_string_lossy().into_owned();
        let record = fs::read_to_string(s.root().join("containers").join(&id).join("record.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&record).unwrap();
        fs::write(note, v["name"].as_str().unwrap()).unwrap();
    }
}

/// `ps` lists `others` containers and says, in one line on stderr, which file is damaged.
fn check_ps_names_damaged(s: &Stack, path: &Path, others: usize) {
    let r = s.ok(&["ps", "-a", "--no-trunc", "--format", "json"]);
    assert_eq!(r.stdout.lines().count(), others, "ps after {} was damaged:\n{}", path.display(), r.stdout);
    let file = path.display().to_string();
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains(&file)).collect();
    assert_eq!(lines.len(), 1, "ps does not name {file} once on stderr:\n{}", r.stderr);
    assert!(lines[0].contains("damaged"), "{}", lines[0]);
}

/// A damaged image cannot be repaired by berth: `up` fails with one error that names the file
/// and says what to do, and the test does it. `None` for the kinds berth repairs itself.
fn image_error(kind: &str, paths: &[PathBuf]) -> Option<(PathBuf, &'static str)> {
    match kind {
        "image manifest" | "image config" => {
            Some((paths[0].clone(), "berth image rm -f 127.0.0.1:9/berth-test/busybox:latest"))
        }
        "image index and its copy" => Some((paths[0].clone(), "move both away")),
        _ => None,
    }
}

/// Does what the error of a damaged image says.
fn follow_advice(s: &Stack, kind: &str, paths: &[PathBuf]) {
    match kind {
        "image manifest" | "image config" => {
            s.ok(&["image", "rm", "-f", IMAGE]);
        }
        "image index and its copy" => {
            for p in paths {
                fs::remove_file(p).unwrap();
            }
        }
        _ => return,
    }
    import_again(s);
}

/// The project is whole again after `up`, and so is what the damaged record was: the filters
/// of a container are all in force when it starts again (and their file whole), copies match
/// their records, the event log takes events again, the image index reads.
fn check_repaired(s: &Stack, kind: &str, paths: &[PathBuf], before: &[Vec<u8>], what: &str) {
    match kind {
        "seccomp filters" => {
            s.ok(&["restart", "-t", "0", "cache"]);
            let r = s.exec("cache", &["grep", "^Seccomp:", "/proc/1/status"]);
            assert!(
                r.ok && r.stdout.split_whitespace().nth(1) == Some("2"),
                "{what}: cache runs with {}",
                r.stdout
            );
            assert_eq!(
                fs::read(&paths[0]).unwrap(),
                before[0],
                "{what}: the filters' file is not written anew"
            );
        }
        "network record copy" | "volume record copy" => {
            let record = paths[0].to_string_lossy().trim_end_matches(".copy").to_string();
            let read =
                |p: &Path| serde_json::from_slice::<serde_json::Value>(&fs::read(p).unwrap_or_default()).ok();
            assert!(
                read(&paths[0]).is_some() && read(&paths[0]) == read(Path::new(&record)),
                "{what}: copy not repaired"
            );
        }
        "event log" => {
            s.ok(&["restart", "-t", "0", "cache"]);
            let r = s.ok(&["events", "--json", "--since", "1m", "--until", "0s"]);
            let cache = format!("{}-cache-1", s.name);
            let actions: Vec<String> = r
                .stdout
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|e| e["attributes"]["name"] == cache.as_str())
                .filter_map(|e| e["action"].as_str().map(str::to_string))
                .collect();
            for want in ["stop", "start", "restart"] {
                assert!(actions.iter().any(|a| a == want), "{what}: no {want} event of {cache}: {actions:?}");
            }
        }
        "image index" => {
            let index = fs::read(&paths[0]).unwrap();
            assert!(
                serde_json::from_slice::<serde_json::Value>(&index).is_ok(),
                "{what}: index.json not repaired"
            );
        }
        _ => {}
    }
    check_converged(s, what);
}

/// Each kind of record, damaged under a running project, in two kinds of trial, each followed
/// by both checks: `up` first (it repairs, or fails with one error naming the file and what
/// to do, which the test then does), then `down -v`; or `down -v` first, then `up`. By
/// default each kind gets one trial of each, with two of the three damages (the seed picks
/// which); in the long mode (`BERTH_CRASH_TRIALS` of 6 or more) each kind gets all three
/// damages.
#[test]
fn damaged_records_converge() {
    let _serial = serial();
    let s = stack("crashrec");
    let mut rng = Rng::new();
    converge(&s, "first up");
    let kinds = records(&s, &mut rng).len();
    let per_kind = if trials() >= 6 { 3 } else { 2 };
    let offset = (rng.next() % 3) as usize;
    for k in 0..kinds {
        for j in 0..per_kind {
            let how = DAMAGES[(j + k + offset) % 3];
            let (kind, paths) = records(&s, &mut rng).swap_remove(k);
            prepare(&s, kind, &paths);
            let before: Vec<Vec<u8>> = paths.iter().map(|p| fs::read(p).unwrap_or_default()).collect();
            let listed = s.ps().len();
            for p in &paths {
                damage(p, how, &mut rng);
            }
            let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            let what = format!("{kind} {} {how:?}", shown.join(", "));
            if (j + k) % 2 == 0 {
                // A damaged container record hides its container from ps; one with only a
                // damaged spec is still listed from its record. Either way ps names the file.
                if kind == "container record" {
                    check_ps_names_damaged(&s, &paths[0], listed - 1);
                } else if kind == "container spec" {
                    check_ps_names_damaged(&s, &paths[0], listed);
                }
                if let Some((file, advice)) = image_error(kind, &paths) {
                    let r = s.berth(&["up", "-d", "--wait", "--wait-timeout", "60"]);
                    let file = file.display().to_string();
                    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.contains(&file)).collect();
                    assert!(
                        !r.ok && !lines.is_empty() && lines.iter().all(|l| l.contains(advice)),
                        "{what}: up does not fail with one error naming the file and what to do ({}):\n{}",
                        r.code,
                        r.stderr
                    );
                    follow_advice(&s, kind, &paths);
                }
                let what = format!("{what}, then up");
                converge(&s, &what);
                check_repaired(&s, kind, &paths, &before, &what);
                down_clean(&s, &format!("{what}, then down"));
                converge(&s, &format!("up after {what}"));
            } else {
                down_clean(&s, &format!("{what}, then down"));
                follow_advice(&s, kind, &paths);
                converge(&s, &format!("{what}, then down, then up"));
            }
        }
    }
    // Temp files of interrupted writes are neither read as records nor left behind.
    let root = s.root();
    let pending = root.join("projects").join(&s.name).join("pending");
    fs::create_dir_all(&pending).unwrap();
    fs::write(pending.join(".0123456789abcdef.tmp4194300"), "x").unwrap();
    fs::write(root.join("networks").join(format!(".{}_back.json.tmp4194300", s.name)), "{").unwrap();
    let c = fs::read_dir(root.join("containers")).unwrap().flatten().next().unwrap().path();
    fs::write(c.join(".record.json.tmp4194300"), "{").unwrap();
    converge(&s, "temp files of interrupted writes");
    down_clean(&s, "down with temp files of interrupted writes");
}

/// The image's one layer: (its blob, its unpacked folder, the folder's completion marker).
fn layer_files(s: &Stack) -> (PathBuf, PathBuf, PathBuf) {
    let images = s.root().join("images");
    let (manifest, config) = image_blobs(s);
    let m: serde_json::Value = serde_json::from_slice(&fs::read(manifest).unwrap()).unwrap();
    let c: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
    assert_eq!(m["layers"].as_array().map(Vec::len), Some(1), "the test image has one layer");
    let hex = |v: &serde_json::Value| v.as_str().unwrap().trim_start_matches("sha256:").to_string();
    let blob = images.join("blobs/sha256").join(hex(&m["layers"][0]["digest"]));
    // One layer: its chain id is its diff id.
    let layer = images.join("layers").join(hex(&c["rootfs"]["diff_ids"][0]));
    let marker = PathBuf::from(format!("{}.done", layer.display()));
    (blob, layer, marker)
}

/// Damages the unpacked layer folder `dir`: half its files removed (as an unpack cut short
/// leaves it), all of it removed, or all of it replaced by a file of random bytes.
fn damage_folder(dir: &Path, how: Damage, rng: &mut Rng) {
    let mut files = files_under(dir);
    files.sort();
    let remove = |p: &Path| {
        let removed = if p.is_dir() && !p.is_symlink() { fs::remove_dir_all(p) } else { fs::remove_file(p) };
        removed.unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    };
    match how {
        Damage::Half => files.iter().step_by(2).for_each(|f| remove(f)),
        Damage::Empty | Damage::Garbage => {
            fs::read_dir(dir).unwrap().flatten().for_each(|e| remove(&e.path()));
            if matches!(how, Damage::Garbage) {
                let bytes: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
                fs::write(dir.join("garbage"), bytes).unwrap();
            }
        }
    }
}

/// What a layer trial damages.
#[derive(Debug, Clone, Copy)]
enum LayerDamage {
    /// The unpacked folder: unpacked again from the blob.
    Folder(Damage),
    /// Its completion marker, lost (`None`) or damaged: unpacked again.
    Marker(Option<Damage>),
    /// The blob and the folder: `up` fails naming the blob (which it removes) and what to do.
    BlobAndFolder(Damage),
    /// Only the blob, cut or emptied: nothing reads it until the image is stored again, which
    /// replaces it.
    Blob(Damage),
}

/// The image's layer blob, its unpacked folder and the folder's marker, damaged in each way
/// while the project is down, each trial followed by both checks: `up -d --wait` converges
/// (the folder unpacked again, one line naming it on stderr; or, with its blob damaged too, one
/// error naming the blob and what to do, which the test then does) and `down -v` leaves
/// nothing. By default two trials (a damaged folder, a damaged blob and folder; the seed picks
/// the damages); all of them in the long mode (`BERTH_CRASH_TRIALS` of 6 or more).
#[test]
fn damaged_layers_converge() {
    let _serial = serial();
    let s = stack("crashlayer");
    let mut rng = Rng::new();
    converge(&s, "first up");
    down_clean(&s, "first down");
    let mut all = Vec::new();
    for d in DAMAGES {
        all.extend([LayerDamage::Folder(d), LayerDamage::Marker(Some(d)), LayerDamage::BlobAndFolder(d)]);
    }
    all.extend([
        LayerDamage::Marker(None),
        LayerDamage::Blob(Damage::Half),
        LayerDamage::Blob(Damage::Empty),
    ]);
    let trials: Vec<LayerDamage> = if trials() >= 6 {
        all
    } else {
        let pick = |rng: &mut Rng| DAMAGES[(rng.next() % 3) as usize];
        vec![LayerDamage::Folder(pick(&mut rng)), LayerDamage::BlobAndFolder(pick(&mut rng))]
    };
    for trial in trials {
        let (blob, layer, marker) = layer_files(&s);
        assert!(marker.is_file(), "{trial:?}: no completion marker {}", marker.display());
        let what = format!("layer {trial:?}");
        match trial {
            LayerDamage::Folder(d) => damage_folder(&layer, d, &mut rng),
            LayerDamage::Marker(None) => fs::remove_file(&marker).unwrap(),
            LayerDamage::Marker(Some(d)) => damage(&marker, d, &mut rng),
            LayerDamage::BlobAndFolder(d) => {
                damage(&blob, d, &mut rng);
                damage_folder(&layer, Damage::Half, &mut rng);
            }
            LayerDamage::Blob(d) => damage(&blob, d, &mut rng),
        }
        let r = s.berth(&["up", "-d", "--wait", "--wait-timeout", "60"]);
        match trial {
            LayerDamage::Folder(_) | LayerDamage::Marker(_) => {
                assert!(r.ok, "{what}: up failed ({}):\n{}", r.code, r.stderr);
                let folder = layer.display().to_string();
                let lines: Vec<&str> =
                    r.stderr.lines().filter(|l| l.contains(&format!("{folder}: damaged"))).collect();
                assert_eq!(lines.len(), 1, "{what}: up does not name {folder} once:\n{}", r.stderr);
                check_converged(&s, &what);
                assert!(marker.is_file(), "{what}: no marker after the repair");
            }
            LayerDamage::BlobAndFolder(_) => {
                let file = blob.display().to_string();
                let advice = format!("berth image rm -f {IMAGE}");
                assert!(
                    !r.ok && r.stderr.lines().any(|l| l.contains(&file) && l.contains(&advice)),
                    "{what}: up does not fail with an error naming {file} and what to do ({}):\n{}",
                    r.code,
                    r.stderr
                );
                assert!(!blob.exists(), "{what}: the damaged blob is not removed");
                s.ok(&["image", "rm", "-f", IMAGE]);
                import_again(&s);
                converge(&s, &format!("{what}, then image rm and import"));
            }
            LayerDamage::Blob(_) => {
                assert!(r.ok, "{what}: up failed ({}):\n{}", r.code, r.stderr);
                check_converged(&s, &what);
                import_again(&s);
                let name = blob.file_name().unwrap().to_string_lossy().into_owned();
                let digest = berth::image::digest_of(&fs::read(&blob).unwrap());
                assert_eq!(
                    digest,
                    format!("sha256:{name}"),
                    "{what}: importing again does not replace the blob"
                );
            }
        }
        down_clean(&s, &format!("{what}, then down"));
    }
}

/// A build cache whose records are damaged: the steps they named run again, the records are
/// written whole, and the build after that is served from the cache again.
#[test]
fn damaged_build_cache_records_are_written_anew() {
    let _serial = serial();
    let s = Stack::with_image("crashcache", IMAGE);
    s.write("compose.yaml", "services:\n  app:\n    build: app\n    image: crashcache/app:1\n");
    fs::create_dir_all(s.project_dir.join("app")).unwrap();
    // No network for the step: the test makes none outside its subnets.
    s.write("app/Dockerfile", &format!("FROM {IMAGE}\nRUN --network=none echo built > /built\n"));
    let mut rng = Rng::new();
    // How the RUN step ended: DONE (it ran) or CACHED.
    let run_step =
        |stderr: &str, status: &str| stderr.lines().any(|l| l.contains(" RUN ") && l.contains(status));
    let r = s.ok(&["build"]);
    assert!(run_step(&r.stderr, "DONE") && !run_step(&r.stderr, "CACHED"), "{}", r.stderr);
    let records = s.root().join("build-cache/records");
    for how in DAMAGES {
        let files: Vec<PathBuf> = fs::read_dir(&records).unwrap().flatten().map(|e| e.path()).collect();
        assert!(!files.is_empty(), "no build cache record");
        let whole: Vec<Vec<u8>> = files.iter().map(|f| fs::read(f).unwrap()).collect();
        for f in &files {
            damage(f, how, &mut rng);
        }
        let r = s.ok(&["build"]);
        assert!(
            run_step(&r.stderr, "DONE") && !run_step(&r.stderr, "CACHED"),
            "{how:?}: the step of a damaged record did not run again:\n{}",
            r.stderr
        );
        for f in &files {
            let rec: serde_json::Value = serde_json::from_slice(&fs::read(f).unwrap())
                .unwrap_or_else(|e| panic!("{how:?}: {} not written anew: {e}", f.display()));
            assert!(rec["created"].is_string(), "{how:?}: {rec}");
        }
        assert_eq!(files.len(), whole.len());
        let r = s.ok(&["build"]);
        assert!(run_step(&r.stderr, "CACHED"), "{how:?}: not served from the cache again:\n{}", r.stderr);
    }
    check_nothing_left(&s, "after builds");
}

/// Kills the stack's DNS process with SIGKILL and waits until it no longer runs.
fn kill_dns(dirs: &berth::state::Dirs) {
    let pid = berth::netns::dns::running(dirs).expect("berth-dns runs");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    // Until init reaps it, it is a zombie; either way it does not answer.
    let end = Instant::now() + Duration::from_secs(5);
    while berth::netns::dns::running(dirs) == Some(pid) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(berth::netns::dns::running(dirs).is_none(), "berth-dns still runs after SIGKILL");
}

#[test]
fn killed_dns_is_restarted_by_up_restart_and_exec() {
    let _serial = serial();
    let s = stack("crashdns");
    converge(&s, "first up");
    let dirs = berth::state::Dirs::new(s.root(), s.run_dir());
    // A no-op up starts it again, and names resolve.
    kill_dns(&dirs);
    let r = s.ok(&["up", "-d"]);
    assert!(berth::netns::dns::running(&dirs).is_some(), "up did not restart berth-dns: {}", r.stderr);
    check_converged(&s, "berth-dns killed, then up -d");
    // So does every other command after which names must resolve: restart…
    kill_dns(&dirs);
    let r = s.ok(&["restart", "-t", "0", "client"]);
    assert!(berth::netns::dns::running(&dirs).is_some(), "restart did not restart berth-dns: {}", r.stderr);
    check_converged(&s, "berth-dns killed, then restart client");
    // …and exec (check_converged resolves names through exec).
    kill_dns(&dirs);
    check_converged(&s, "berth-dns killed, then exec");
    // `down` stops it even when the network records are gone (the pid file is enough).
    let start = Instant::now();
    down_clean(&s, "down");
    eprintln!("crash: down -v -t 0 took {:?}", start.elapsed());
    converge(&s, "up again");
    for rec in berth::netns::record::all_networks(&dirs).unwrap() {
        fs::remove_file(berth::netns::record::network_path(&dirs, &rec.name)).unwrap();
    }
    let r = s.berth(&["down", "-v", "-t", "0"]);
    assert!(r.ok, "down without network records: {}", r.stderr);
    assert!(berth::netns::dns::running(&dirs).is_none(), "berth-dns outlived down");
}

/// A cgroup folder `berth/<id>` in a hierarchy this host has (v2, or v1's pids or memory).
fn cgroup_dir(id: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return root.join("berth").join(id);
    }
    let ctrl = ["pids", "memory"].into_iter().find(|c| root.join(c).join("cgroup.procs").exists()).unwrap();
    root.join(ctrl).join("berth").join(id)
}

#[test]
fn resources_without_records_are_swept() {
    let _serial = serial();
    let s = stack("crashorphan");
    converge(&s, "first up");
    let dirs = berth::state::Dirs::new(s.root(), s.run_dir());
    // A container whose folders were deleted by hand: its shim, cgroup and netns are left
    // with no record to find them by.
    let (_, pid) = shims(&s).into_iter().find(|(n, _)| n.ends_with("-cache-1")).expect("cache shim");
    let id = fs::read_dir(dirs.containers())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|id| {
            fs::read_to_string(dirs.container(id).join("record.json")).is_ok_and(|r| r.contains("-cache-1\""))
        })
        .expect("cache record");
    fs::remove_dir_all(dirs.container(&id)).unwrap();
    fs::remove_dir_all(dirs.container_run(&id)).unwrap();
    // An empty cgroup of no container, and one with a process inside, which is not ours.
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let (empty, busy) = (cgroup_dir(&format!("{:064x}", stamp)), cgroup_dir(&format!("{:064x}", stamp + 1)));
    fs::create_dir_all(&empty).unwrap();
    fs::create_dir_all(&busy).unwrap();
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    fs::write(busy.join("cgroup.procs"), sleeper.id().to_string()).unwrap();
    // A netns file of no container.
    let stray = dirs.netns().join(format!("{:064x}", stamp + 2));
    fs::write(&stray, "").unwrap();
    let r = s.ok(&["up", "-d", "--wait"]);
    let still = fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "berth-shim");
    let busy_kept = busy.exists();
    let empty_gone = !empty.exists();
    let cgroup_gone = !cgroup_dir(&id).exists();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    let _ = fs::remove_dir(&busy);
    let _ = fs::remove_dir(&empty);
    assert!(!still, "the shim of the deleted container still runs: {}", r.stderr);
    assert!(empty_gone, "the empty cgroup {} was left", empty.display());
    assert!(busy_kept, "a cgroup with a process inside was removed");
    assert!(!stray.exists(), "the netns file of no container was left");
    assert!(cgroup_gone, "the deleted container's cgroup was left");
    check_converged(&s, "after a container's folders were deleted");
    down_clean(&s, "down");
}
