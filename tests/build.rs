//! The image builder end to end (root): multi-stage builds from scratch with busybox-static,
//! RUN in berth's runtime (bridge, host and no network), the cache, and cleanup on failure.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth::image::ImageStore;
use berth::image::build::dockerfile::*;
use berth::image::build::{BuildError, BuildRequest, Builder, StoreBaseImages};
use berth::image::events::ImageEvents;
use berth::netns::Networks;
use common::{BUSYBOX, TestEnv};

/// Collects events.
#[derive(Default)]
struct Events(Mutex<Vec<(String, String)>>, Mutex<Vec<String>>);

impl ImageEvents for Events {
    fn event(&self, kind: &str, name: &str, status: &str, _done: bool) {
        if kind == "Step" {
            self.0.lock().unwrap().push((name.to_string(), status.to_string()));
        }
    }
    fn failed(&self, kind: &str, name: &str, status: &str) {
        self.0.lock().unwrap().push((format!("{kind} {name}"), format!("FAILED {status}")));
    }
    fn output(&self, _name: &str, line: &str) {
        self.1.lock().unwrap().push(line.to_string());
    }
}

impl Events {
    /// Final status of each step (the last event of each name), COPY/RUN/ADD/WORKDIR only.
    fn finals(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (n, s) in self.0.lock().unwrap().iter() {
            if !(n.contains("] COPY")
                || n.contains("] RUN")
                || n.contains("] ADD")
                || n.contains("] WORKDIR"))
            {
                continue;
            }
            if s == "RUNNING" {
                continue;
            }
            out.retain(|(m, _)| m != n);
            out.push((n.clone(), s.clone()));
        }
        out
    }
}

fn ins(line: usize, original: &str, kind: InstructionKind) -> Instruction {
    Instruction { line, original: original.to_string(), kind }
}

fn copy(line: usize, from: Option<&str>, sources: &[&str], dest: &str) -> Instruction {
    let c = CopyInstruction {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.to_string(),
        from: from.map(str::to_string),
        ..CopyInstruction::default()
    };
    let text = format!(
        "COPY {}{} {dest}",
        from.map(|f| format!("--from={f} ")).unwrap_or_default(),
        sources.join(" ")
    );
    ins(line, &text, InstructionKind::Copy(c))
}

fn run_shell(line: usize, cmd: &str) -> Instruction {
    run_with(line, CommandForm::Shell(cmd.to_string()), None)
}

fn run_with(line: usize, command: CommandForm, network: Option<&str>) -> Instruction {
    let text = match &command {
        CommandForm::Shell(s) => format!("RUN {s}"),
        CommandForm::Exec(a) => format!("RUN {a:?}"),
    };
    ins(
        line,
        &text,
        InstructionKind::Run(RunInstruction {
            command,
            mounts: Vec::new(),
            network: network.map(str::to_string),
            security: None,
            heredocs: Vec::new(),
        }),
    )
}

fn stage(base: &str, name: Option<&str>, line: usize, instructions: Vec<Instruction>) -> Stage {
    Stage { base: base.into(), name: name.map(str::to_string), platform: None, line, instructions }
}

/// FROM scratch with busybox installed as /bin/sh and its applets.
fn busybox_stage(name: &str, line: usize, more: Vec<Instruction>) -> Stage {
    let mut v = vec![
        copy(line + 1, None, &["busybox"], "/bin/busybox"),
        run_with(
            line + 2,
            CommandForm::Exec(vec!["/bin/busybox".into(), "--install".into(), "-s".into(), "/bin".into()]),
            Some("none"),
        ),
    ];
    v.extend(more);
    stage("scratch", Some(name), line, v)
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
        fs::copy(BUSYBOX, context.join("busybox")).unwrap();
        Env { t, store, networks, context }
    }

    fn build(
        &self,
        df: &Dockerfile,
        req: &BuildRequest,
        events: &Events,
    ) -> Result<berth::image::build::BuiltImage, BuildError> {
        let base = StoreBaseImages { store: &self.store };
        let b = Builder::new(&self.store, &self.t.runtime, &self.networks, &base, events);
        b.build_parsed(req, df, "Dockerfile")
    }

    fn req(&self) -> BuildRequest {
        BuildRequest { context: self.context.clone(), ..BuildRequest::default() }
    }

    /// Runs the image's command; returns its output.
    fn run_image(&self, reference: &str) -> String {
        let img = self.store.resolve(reference).unwrap();
        let inspect = self.store.inspect(reference).unwrap();
        let cmd: Vec<String> = serde_json::from_value(inspect["Config"]["Cmd"].clone()).unwrap();
        let mut spec = self.t.spec("img", &[]);
        spec.rootfs.lower_dirs = img.layer_dirs.clone();
        spec.process.args = cmd;
        spec.process.cwd = inspect["Config"]["WorkingDir"].as_str().unwrap_or("/").to_string();
        let (st, log) = self.t.run_to_end(&spec);
        self.t.runtime.remove(&spec.id, true).unwrap();
        assert_eq!(st.exit_code, Some(0), "{log}");
        log
    }

    /// What nothing may leave behind.
    fn assert_clean(&self) {
        let containers: Vec<_> =
            fs::read_dir(self.t.dirs.containers()).map(|d| d.flatten().collect()).unwrap_or_default();
        assert!(containers.is_empty(), "containers left: {containers:?}");
        let nets = self.networks.list().unwrap();
        assert!(nets.iter().all(|n| !n.name.starts_with("berth-build")), "networks left");
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = self.t.dir.path().display().to_string();
        assert!(!mounts.contains(&root), "mounts left under {root}");
        let staging: Vec<_> = fs::read_dir(self.t.dirs.images())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".staging-"))
            .collect();
        assert!(staging.is_empty(), "staging left");
    }
}

/// Whether any layer of `reference` has `path`.
fn image_has(store: &ImageStore, reference: &str, path: &str) -> bool {
    store.resolve(reference).unwrap().layer_dirs.iter().any(|d| fs::symlink_metadata(d.join(path)).is_ok())
}

fn multi_stage() -> Dockerfile {
    Dockerfile {
        escape: '\\',
        syntax: None,
        global_args: vec![ArgDecl { name: "GREETING".into(), default: Some("hello".into()) }],
        stages: vec![
            busybox_stage(
                "base",
                2,
                vec![
                    ins(
                        5,
                        "ARG GREETING",
                        InstructionKind::Arg(vec![ArgDecl { name: "GREETING".into(), default: None }]),
                    ),
                    run_shell(6, "echo \"$GREETING from build\" > /greeting.txt"),
                ],
            ),
            stage(
                "scratch",
                Some("final"),
                8,
                vec![
                    copy(9, Some("base"), &["/bin/busybox"], "/bin/busybox"),
                    copy(10, Some("base"), &["/greeting.txt"], "/greeting.txt"),
                    ins(11, "WORKDIR /app", InstructionKind::Workdir("/app".into())),
                    copy(12, None, &["app.txt"], "./"),
                    copy(13, None, &["."], "/ctx/"),
                    ins(14, "ENV NAME=world", InstructionKind::Env(vec![("NAME".into(), "world".into())])),
                    ins(15, "EXPOSE 80", InstructionKind::Expose(vec!["80".into()])),
                    ins(
                        16,
                        "HEALTHCHECK --interval=5s CMD true",
                        InstructionKind::Healthcheck(Some(HealthcheckInstruction {
                            command: CommandForm::Shell("true".into()),
                            interval: Some("5s".into()),
                            timeout: None,
                            start_period: None,
                            start_interval: None,
                            retries: None,
                        })),
                    ),
                    ins(
                        17,
                        "CMD [...]",
                        InstructionKind::Cmd(CommandForm::Exec(
                            ["/bin/busybox", "cat", "/greeting.txt", "app.txt"].map(String::from).to_vec(),
                        )),
                    ),
                ],
            ),
            stage("base", Some("skipped"), 19, vec![run_shell(20, "exit 1")]),
        ],
    }
}

#[test]
fn multi_stage_build_runs_and_caches() {
    let env = Env::new();
    fs::write(env.context.join("app.txt"), "app v1\n").unwrap();
    fs::write(env.context.join("secret.txt"), "do not ship\n").unwrap();
    fs::write(env.context.join(".dockerignore"), "secret.txt\n").unwrap();
    let df = multi_stage();
    let mut req = env.req();
    req.args.insert("GREETING".into(), "howdy".into());
    req.target = Some("final".into());
    req.tags = vec!["built:v1".into()];
    req.labels.insert("org.example".into(), "yes".into());
    let ev = Events::default();
    let built = env.build(&df, &req, &ev).unwrap_or_else(|e| panic!("build: {e}"));
    assert_eq!(built.tags, ["built:v1"]);
    assert!(ev.finals().iter().all(|(_, s)| s.starts_with("DONE")), "{:?}", ev.finals());
    assert!(!ev.0.lock().unwrap().iter().any(|(n, _)| n.contains("skipped")), "the target skips a stage");
    let out = env.run_image("built:v1");
    assert_eq!(out, "howdy from build\napp v1\n");
    assert!(image_has(&env.store, "built:v1", "ctx/app.txt"));
    assert!(!image_has(&env.store, "built:v1", "ctx/secret.txt"), ".dockerignore is respected");
    let inspect = env.store.inspect("built:v1").unwrap();
    assert_eq!(inspect["Config"]["WorkingDir"], "/app");
    assert!(inspect["Config"]["Env"].as_array().unwrap().iter().any(|e| e == "NAME=world"));
    assert!(inspect["Config"]["ExposedPorts"].get("80/tcp").is_some());
    assert_eq!(inspect["Config"]["Labels"]["org.example"], "yes");
    let raw: serde_json::Value =
        serde_json::from_slice(&fs::read(env.store.blob_path(&built.id)).unwrap()).unwrap();
    assert_eq!(raw["config"]["Healthcheck"]["Test"], serde_json::json!(["CMD-SHELL", "true"]));
    assert_eq!(raw["config"]["Healthcheck"]["Interval"], 5_000_000_000i64);
    let history = raw["history"].as_array().unwrap();
    assert!(history.iter().any(|h| h["created_by"].as_str().unwrap().starts_with("COPY app.txt")));
    assert!(history.iter().any(|h| h["created_by"] == "ENV NAME=world" && h["empty_layer"] == true));
    env.assert_clean();

    // Unchanged: every step from the cache, the same image.
    let ev2 = Events::default();
    let again = env.build(&df, &req, &ev2).unwrap();
    assert_eq!(again.id, built.id);
    let finals = ev2.finals();
    assert!(!finals.is_empty() && finals.iter().all(|(_, s)| s == "CACHED"), "{finals:?}");

    // One copied file changed: only from its step on.
    fs::write(env.context.join("app.txt"), "app v2\n").unwrap();
    let ev3 = Events::default();
    let third = env.build(&df, &req, &ev3).unwrap();
    assert_ne!(third.id, built.id);
    for (name, status) in ev3.finals() {
        let rerun = name.contains("COPY app.txt") || name.contains("COPY . /ctx/");
        assert_eq!(status.starts_with("DONE"), rerun, "{name}: {status}");
    }
    assert_eq!(env.run_image("built:v1"), "howdy from build\napp v2\n");

    // The cache survives the store's gc: remove the image, rebuild v1 from cache alone.
    fs::write(env.context.join("app.txt"), "app v1\n").unwrap();
    env.store.remove("built:v1", false).unwrap();
    let ev4 = Events::default();
    let fourth = env.build(&df, &req, &ev4).unwrap();
    assert_eq!(fourth.id, built.id);
    assert!(ev4.finals().iter().all(|(_, s)| s == "CACHED"), "{:?}", ev4.finals());
    // no_cache reruns.
    let ev5 = Events::default();
    req.no_cache = true;
    env.build(&df, &req, &ev5).unwrap();
    assert!(ev5.finals().iter().all(|(_, s)| s.starts_with("DONE")));
    env.assert_clean();
}

#[test]
fn failing_run_names_the_line_and_leaves_nothing() {
    let env = Env::new();
    let df = Dockerfile {
        escape: '\\',
        stages: vec![busybox_stage("s", 1, vec![run_shell(4, "echo oops; echo more >&2; exit 3")])],
        ..Dockerfile::default()
    };
    let ev = Events::default();
    let mut req = env.req();
    req.tags = vec!["never:latest".into()];
    let err = env.build(&df, &req, &ev).unwrap_err();
    match &err {
        BuildError::Run { line, code, output, .. } => {
            assert_eq!((*line, *code), (4, 3));
            assert!(
                output.contains(&"oops".to_string()) && output.contains(&"more".to_string()),
                "{output:?}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("Dockerfile:4: RUN echo oops"), "{text}");
    assert!(env.store.resolve("never:latest").is_err());
    env.assert_clean();
}

/// A one-shot HTTP server on 127.0.0.1; returns its port.
fn serve_once(body: &'static str) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        }
    });
    port
}

#[test]
fn run_reaches_host_and_bridge_networks() {
    let env = Env::new();
    let port = serve_once("hello-host");
    let df = Dockerfile {
        escape: '\\',
        stages: vec![busybox_stage(
            "s",
            1,
            vec![
                run_with(
                    4,
                    CommandForm::Shell(format!("wget -q -O /from-host http://127.0.0.1:{port}/")),
                    Some("host"),
                ),
                // The default network: a bridge whose gateway answers (and serves DNS).
                run_shell(
                    5,
                    "gw=$(ip route | awk '/^default/ {print $3}'); test -n \"$gw\" && grep -q \"nameserver $gw\" /etc/resolv.conf && ping -c1 -W5 $gw >/dev/null && echo $gw > /gateway",
                ),
                run_with(
                    6,
                    CommandForm::Shell("ip route | grep -q default && exit 1; echo isolated > /none".into()),
                    Some("none"),
                ),
            ],
        )],
        ..Dockerfile::default()
    };
    let ev = Events::default();
    let mut req = env.req();
    req.tags = vec!["net:latest".into()];
    env.build(&df, &req, &ev).unwrap_or_else(|e| panic!("build: {e}"));
    let dirs = env.store.resolve("net:latest").unwrap().layer_dirs;
    let read =
        |p: &str| dirs.iter().rev().find_map(|d| fs::read_to_string(d.join(p)).ok()).unwrap_or_default();
    assert_eq!(read("from-host"), "hello-host");
    assert!(!read("gateway").trim().is_empty());
    assert_eq!(read("none"), "isolated\n");
    // Mount stubs stay out of the layers.
    for d in &dirs {
        assert!(!d.join("etc/resolv.conf").exists() && !d.join("proc").exists(), "{}", d.display());
    }
    env.assert_clean();
}

#[allow(dead_code)]
fn unused(_: &Path) {}
