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
    fs::write(env.context.join("secret-ok.txt"), "re-included\n").unwrap();
    fs::write(env.context.join(".dockerignore"), "secret*\n!secret-ok.txt\n").unwrap();
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
    assert!(image_has(&env.store, "built:v1", "ctx/secret-ok.txt"), "exceptions re-include");
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

    // Unchanged (a new mtime is no change): every step from the cache, the same image.
    let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    fs::File::options().write(true).open(env.context.join("app.txt")).unwrap().set_modified(t).unwrap();
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

fn meta_of(dirs: &[PathBuf], p: &str) -> Option<fs::Metadata> {
    dirs.iter().rev().find_map(|d| fs::symlink_metadata(d.join(p)).ok())
}

fn copy_ins(line: usize, text: &str, add: bool, c: CopyInstruction) -> Instruction {
    ins(line, text, if add { InstructionKind::Add(c) } else { InstructionKind::Copy(c) })
}

#[test]
fn copy_rules_config_and_bad_input() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let ctx = &env.context;
    fs::write(ctx.join("a.txt"), "a\n").unwrap();
    fs::write(ctx.join("b.txt"), "b\n").unwrap();
    fs::create_dir_all(ctx.join("dir/sub")).unwrap();
    fs::write(ctx.join("dir/sub/x"), "x\n").unwrap();
    {
        let f = fs::File::create(ctx.join("arch.tar.gz")).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o640);
        h.set_uid(7);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h.set_cksum();
        t.append_data(&mut h, "in/arch.txt", &b"ar\n"[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    let c = |sources: &[&str], dest: &str| CopyInstruction {
        sources: sources.iter().map(|s| s.to_string()).collect(),
        dest: dest.into(),
        ..CopyInstruction::default()
    };
    let df = Dockerfile {
        escape: '\\',
        stages: vec![stage(
            "scratch",
            None,
            1,
            vec![
                ins(2, "ENV NAME=x", InstructionKind::Env(vec![("NAME".into(), "x".into())])),
                copy_ins(3, "COPY a.txt /dst/file.txt", false, c(&["a.txt"], "/dst/file.txt")),
                copy_ins(4, "COPY dir /d/", false, c(&["dir"], "/d/")),
                copy_ins(5, "COPY *.txt /globbed/", false, c(&["*.txt"], "/globbed/")),
                copy_ins(
                    6,
                    "COPY --chown=1000:1001 --chmod=0600 a.txt /owned",
                    false,
                    CopyInstruction {
                        chown: Some("1000:1001".into()),
                        chmod: Some("0600".into()),
                        ..c(&["a.txt"], "/owned")
                    },
                ),
                copy_ins(7, "ADD arch.tar.gz /x/", true, c(&["arch.tar.gz"], "/x/")),
                copy_ins(
                    8,
                    "COPY <<EOF /here.txt",
                    false,
                    CopyInstruction {
                        heredocs: vec![Heredoc {
                            name: "EOF".into(),
                            content: "hi $NAME\n".into(),
                            expand: true,
                        }],
                        ..c(&["<<EOF"], "/here.txt")
                    },
                ),
                copy_ins(9, "COPY a.txt /dst/", false, c(&["a.txt"], "/dst/")),
                ins(10, "CMD [\"x\"]", InstructionKind::Cmd(CommandForm::Exec(vec!["x".into()]))),
                ins(11, "USER 1000", InstructionKind::User("1000".into())),
                ins(12, "VOLUME /data", InstructionKind::Volume(vec!["/data".into()])),
                ins(13, "STOPSIGNAL SIGINT", InstructionKind::StopSignal("SIGINT".into())),
                ins(
                    14,
                    "SHELL [\"/bin/ash\", \"-c\"]",
                    InstructionKind::Shell(vec!["/bin/ash".into(), "-c".into()]),
                ),
                ins(15, "ENTRYPOINT run", InstructionKind::Entrypoint(CommandForm::Shell("run".into()))),
                ins(16, "ONBUILD RUN echo hi", InstructionKind::Onbuild("RUN echo hi".into())),
                ins(17, "MAINTAINER me", InstructionKind::Maintainer("me".into())),
                ins(18, "LABEL a=\"b c\"", InstructionKind::Label(vec![("a".into(), "\"b c\"".into())])),
            ],
        )],
        ..Dockerfile::default()
    };
    let mut req = env.req();
    req.tags = vec!["copies".into()];
    let ev = Events::default();
    env.build(&df, &req, &ev).unwrap_or_else(|e| panic!("build: {e}"));
    let dirs = env.store.resolve("copies").unwrap().layer_dirs;
    let read = |p: &str| dirs.iter().rev().find_map(|d| fs::read_to_string(d.join(p)).ok());
    assert_eq!(read("dst/file.txt").as_deref(), Some("a\n"));
    assert_eq!(read("dst/a.txt").as_deref(), Some("a\n"), "a dest ending in / is a dir");
    assert_eq!(read("d/sub/x").as_deref(), Some("x\n"), "a dir's contents are copied");
    assert!(meta_of(&dirs, "d/dir").is_none());
    assert_eq!(read("globbed/b.txt").as_deref(), Some("b\n"));
    let m = meta_of(&dirs, "owned").unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o600));
    let m = meta_of(&dirs, "x/in/arch.txt").unwrap();
    assert_eq!((m.uid(), m.mode() & 0o7777), (7, 0o640), "ADD extracts a local archive");
    assert_eq!(read("here.txt").as_deref(), Some("hi x\n"));
    assert_eq!(
        meta_of(&dirs, "dst/file.txt").unwrap().mtime(),
        fs::metadata(ctx.join("a.txt")).unwrap().mtime(),
        "mtimes as in the source"
    );
    let i = env.store.inspect("copies").unwrap();
    let cfg = &i["Config"];
    assert_eq!(
        cfg["Cmd"],
        serde_json::json!(["x"]),
        "ENTRYPOINT resets an inherited CMD only; this one was set here"
    );
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["/bin/ash", "-c", "run"]));
    assert_eq!(cfg["User"], "1000");
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert!(cfg["Volumes"].get("/data").is_some());
    assert_eq!(cfg["Shell"], serde_json::json!(["/bin/ash", "-c"]));
    assert_eq!(cfg["OnBuild"], serde_json::json!(["RUN echo hi"]));
    assert_eq!(cfg["Labels"]["a"], "b c");
    assert_eq!(i["Author"], "me");

    // Bad input: clear errors, nothing stored.
    let one = |instr: Instruction| Dockerfile {
        escape: '\\',
        stages: vec![stage("scratch", None, 1, vec![instr])],
        ..Dockerfile::default()
    };
    let mut bad = env.req();
    bad.tags = vec!["bad".into()];
    let e = env.build(&one(copy(2, None, &["../etc/passwd"], "/x")), &bad, &ev).unwrap_err().to_string();
    assert!(e.contains("Dockerfile:2") && e.contains("outside the build context"), "{e}");
    let e = env.build(&one(copy(2, None, &["missing"], "/x")), &bad, &ev).unwrap_err().to_string();
    assert!(e.contains("not found"), "{e}");
    let e = env
        .build(
            &one(copy_ins(2, "ADD http://127.0.0.1:1/y /y", true, c(&["http://127.0.0.1:1/y"], "/y"))),
            &bad,
            &ev,
        )
        .unwrap_err()
        .to_string();
    // (Downloads themselves: tests/build_remote.rs.) Nothing listens on port 1.
    assert!(e.starts_with("Dockerfile:2: ADD http://127.0.0.1:1/y: "), "{e}");
    // BuildKit's rules for --checksum: ADD of one remote source only.
    let sum = "sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d";
    let with_sum = |sources: &[&str]| CopyInstruction { checksum: Some(sum.into()), ..c(sources, "/y") };
    let e =
        env.build(&one(copy_ins(2, "ADD --checksum", true, with_sum(&["a.txt"]))), &bad, &ev).unwrap_err();
    let e = e.to_string();
    assert!(e.contains("Dockerfile:2") && e.contains("checksum requires HTTP(S) or Git sources"), "{e}");
    let e = env
        .build(&one(copy_ins(2, "ADD --checksum", true, with_sum(&["a.txt", "b.txt"]))), &bad, &ev)
        .unwrap_err()
        .to_string();
    assert!(e.contains("checksum can't be specified for multiple sources"), "{e}");
    let e = env.build(&one(copy(2, Some("nope:latest"), &["/x"], "/x")), &bad, &ev).unwrap_err().to_string();
    assert!(e.contains("image nope:latest not found; pull it first"), "{e}");
    bad.platform = Some("linux/s390x".into());
    assert!(matches!(
        env.build(&one(copy(2, None, &["a.txt"], "/x")), &bad, &ev),
        Err(BuildError::Platform(_))
    ));
    assert!(env.store.resolve("bad").is_err());
    env.assert_clean();
}

#[test]
fn special_files_of_the_context_as_buildkit_copies_them() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let env = Env::new();
    let ctx = &env.context;
    nix::unistd::mkfifo(&ctx.join("pipe"), nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap();
    nix::sys::stat::mknod(
        &ctx.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(ctx.join("sock")).unwrap();
    let c = CopyInstruction { sources: vec![".".into()], dest: "/c/".into(), ..CopyInstruction::default() };
    let df = Dockerfile {
        escape: '\\',
        stages: vec![stage("scratch", None, 1, vec![copy_ins(2, "COPY . /c/", false, c)])],
        ..Dockerfile::default()
    };
    let mut req = env.req();
    req.tags = vec!["special".into()];
    env.build(&df, &req, &Events::default()).unwrap_or_else(|e| panic!("build: {e}"));
    // The layer as stored (unpacked from its tar): a FIFO stays a FIFO, a device a device
    // (fsutil recreates both); a socket arrives as an empty file (fsutil drops the socket bit).
    let dirs = env.store.resolve("special").unwrap().layer_dirs;
    let pipe = meta_of(&dirs, "c/pipe").unwrap();
    assert!(pipe.file_type().is_fifo());
    assert_eq!(pipe.mode() & 0o7777, 0o640);
    let null = meta_of(&dirs, "c/null").unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
    let sock = meta_of(&dirs, "c/sock").unwrap();
    assert!(sock.file_type().is_file() && sock.len() == 0);
    env.assert_clean();
}

fn mount(kind: &str, f: impl FnOnce(&mut RunMount)) -> RunMount {
    let mut m = RunMount { kind: kind.into(), ..RunMount::default() };
    f(&mut m);
    m
}

#[test]
fn run_mounts_env_and_users() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    fs::write(env.context.join("app.txt"), "from context\n").unwrap();
    let secret = env.t.dir.path().join("token");
    fs::write(&secret, "s3cret").unwrap();
    let run_m = |line: usize, cmd: &str, mounts: Vec<RunMount>| {
        ins(
            line,
            &format!("RUN {cmd}"),
            InstructionKind::Run(RunInstruction {
                command: CommandForm::Shell(cmd.into()),
                mounts,
                network: Some("none".into()),
                security: None,
                heredocs: Vec::new(),
            }),
        )
    };
    let df = Dockerfile {
        escape: '\\',
        stages: vec![busybox_stage(
            "s",
            1,
            vec![
                ins(
                    4,
                    "ARG V=1",
                    InstructionKind::Arg(vec![ArgDecl { name: "V".into(), default: Some("1".into()) }]),
                ),
                ins(5, "ENV E=env", InstructionKind::Env(vec![("E".into(), "env".into())])),
                run_m(6, "echo $V $E > /vars", vec![]),
                run_m(
                    7,
                    "echo x >> /c/log; wc -l < /c/log > /count",
                    vec![mount("cache", |m| m.target = Some("/c".into()))],
                ),
                run_m(
                    8,
                    "touch /secret-len-$(wc -c < /run/secrets/tok)",
                    vec![mount("secret", |m| m.id = Some("tok".into()))],
                ),
                run_m(
                    9,
                    "cat /src/app.txt > /copied; touch /src/new 2>/dev/null && exit 1; true",
                    vec![mount("bind", |m| m.target = Some("/src".into()))],
                ),
                run_m(
                    10,
                    "echo t > /t/f && test -f /t/f",
                    vec![mount("tmpfs", |m| m.target = Some("/t".into()))],
                ),
                ins(11, "WORKDIR /w", InstructionKind::Workdir("/w".into())),
                ins(12, "USER 1000:1000", InstructionKind::User("1000:1000".into())),
                run_m(
                    13,
                    "id -u > /tmp/uid 2>/dev/null || true; pwd > /w/pwd 2>/dev/null || true; touch /w/mine || true",
                    vec![],
                ),
            ],
        )],
        ..Dockerfile::default()
    };
    let mut req = env.req();
    req.tags = vec!["mounts".into()];
    req.secrets.insert("tok".into(), berth::image::build::SecretSource::File(secret.clone()));
    let ev = Events::default();
    env.build(&df, &req, &ev).unwrap_or_else(|e| panic!("build: {e}"));
    let dirs = env.store.resolve("mounts").unwrap().layer_dirs;
    let read =
        |p: &str| dirs.iter().rev().find_map(|d| fs::read_to_string(d.join(p)).ok()).unwrap_or_default();
    assert_eq!(read("vars"), "1 env\n", "ARGs and ENV reach RUN");
    assert_eq!(read("count").trim(), "1");
    assert!(meta_of(&dirs, "secret-len-6").is_some());
    assert!(
        meta_of(&dirs, "run/secrets").is_none()
            && meta_of(&dirs, "c").is_none()
            && meta_of(&dirs, "t").is_none()
    );
    assert_eq!(read("copied"), "from context\n");
    assert!(!env.context.join("new").exists());
    assert_eq!(meta_of(&dirs, "w").map(|m| m.is_dir()), Some(true), "WORKDIR makes its dir");
    assert!(env.store.resolve("mounts").unwrap().layer_dirs.iter().all(|d| {
        walk(d)
            .iter()
            .all(|f| fs::read(f).map(|b| !String::from_utf8_lossy(&b).contains("s3cret")).unwrap_or(true))
    }));
    let _ = meta_of(&dirs, "w/mine").map(|m| m.uid());
    // The cache mount persists: a rerun without the step cache sees the earlier run's file.
    req.no_cache = true;
    env.build(&df, &req, &ev).unwrap();
    let dirs = env.store.resolve("mounts").unwrap().layer_dirs;
    let count = dirs.iter().rev().find_map(|d| fs::read_to_string(d.join("count")).ok()).unwrap();
    assert_eq!(count.trim(), "2");
    // The secret changes nothing in the key.
    req.no_cache = false;
    fs::write(&secret, "other!").unwrap();
    let ev2 = Events::default();
    env.build(&df, &req, &ev2).unwrap();
    assert!(ev2.finals().iter().all(|(_, s)| s == "CACHED"), "{:?}", ev2.finals());
    env.assert_clean();
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            } else if p.is_file() {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn dockerfile_text_onbuild_and_whiteouts() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    fs::write(env.context.join("app.txt"), "app v1\n").unwrap();
    fs::write(
        env.context.join("Dockerfile.tools"),
        r#"# syntax=docker/dockerfile:1
ARG BASE=scratch
FROM ${BASE}
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN <<EOF
mkdir -p /etc /home/app
echo 'app:x:1000:1000::/home/app:/bin/sh' > /etc/passwd
echo 'app:x:1000:' > /etc/group
echo junk > /etc/junk
EOF
ONBUILD RUN echo triggered > /onbuild.txt
"#,
    )
    .unwrap();
    fs::write(
        env.context.join("Dockerfile"),
        r#"FROM tools AS final
ARG TARGETARCH
COPY --chown=app:app app.txt /home/app/
RUN echo "arch=$TARGETARCH" > /arch.txt \
 && rm /etc/junk
RUN <<EOF
#!/bin/sh
echo "script $0" > /script.txt
EOF
USER app
CMD ["sh", "-c", "test ! -e /etc/junk && cat /home/app/app.txt /arch.txt /onbuild.txt"]
"#,
    )
    .unwrap();
    let base = StoreBaseImages { store: &env.store };
    let ev = Events::default();
    let b = Builder::new(&env.store, &env.t.runtime, &env.networks, &base, &ev);
    let mut req = env.req();
    req.dockerfile = Some("Dockerfile.tools".into());
    req.tags = vec!["tools".into()];
    b.build(&req).unwrap_or_else(|e| panic!("tools: {e}"));
    let mut req = env.req();
    req.tags = vec!["app:1".into()];
    b.build(&req).unwrap_or_else(|e| panic!("app: {e}"));
    assert_eq!(env.run_image("app:1"), "app v1\narch=amd64\ntriggered\n");
    let dirs = env.store.resolve("app:1").unwrap().layer_dirs;
    let script = dirs.iter().rev().find_map(|d| fs::read_to_string(d.join("script.txt")).ok());
    assert_eq!(script.as_deref(), Some("script /dev/pipes/EOF\n"), "a #! heredoc runs as a script");
    assert!(meta_of(&dirs, "dev").is_none());
    let m = meta_of(&dirs, "home/app/app.txt").unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1000));
    let i = env.store.inspect("app:1").unwrap();
    assert_eq!(i["Config"]["OnBuild"], serde_json::Value::Null, "triggers run once, not inherited");
    let raw: serde_json::Value =
        serde_json::from_slice(&fs::read(env.store.blob_path(i["Id"].as_str().unwrap())).unwrap()).unwrap();
    let by: Vec<&str> =
        raw["history"].as_array().unwrap().iter().map(|h| h["created_by"].as_str().unwrap()).collect();
    assert!(by.iter().any(|b| b.starts_with("RUN |1 TARGETARCH=amd64 /bin/sh -c echo")), "{by:?}");
    // A parse error names the line.
    fs::write(env.context.join("Dockerfile"), "FROM scratch\nBOGUS x\n").unwrap();
    let e = b.build(&req).unwrap_err().to_string();
    assert!(e.contains("Dockerfile:2"), "{e}");
    env.assert_clean();
}

#[test]
fn independent_stages_run_in_parallel() {
    let env = Env::new();
    let slow = |name: &str, line: usize| {
        busybox_stage(
            name,
            line,
            vec![run_with(
                line + 3,
                CommandForm::Shell(format!("sleep 2; echo {name} > /{name}")),
                Some("none"),
            )],
        )
    };
    let df = Dockerfile {
        escape: '\\',
        stages: vec![
            slow("a", 1),
            slow("b", 10),
            stage(
                "scratch",
                Some("final"),
                20,
                vec![copy(21, Some("a"), &["/a"], "/a"), copy(22, Some("b"), &["/b"], "/b")],
            ),
        ],
        ..Dockerfile::default()
    };
    let ev = Events::default();
    let mut req = env.req();
    req.tags = vec!["par".into()];
    env.build(&df, &req, &ev).unwrap_or_else(|e| panic!("build: {e}"));
    let events = ev.0.lock().unwrap().clone();
    let at = |stage: &str, status: &str| {
        events
            .iter()
            .position(|(n, s)| n.starts_with(&format!("[{stage} 4/4]")) && s.starts_with(status))
            .unwrap()
    };
    assert!(at("b", "RUNNING") < at("a", "DONE") && at("a", "RUNNING") < at("b", "DONE"), "{events:?}");
    assert!(image_has(&env.store, "par", "a") && image_has(&env.store, "par", "b"));
    env.assert_clean();
}

#[test]
fn cancel_stops_a_running_step_and_cleans_up() {
    let env = Env::new();
    let df = Dockerfile {
        escape: '\\',
        stages: vec![busybox_stage("s", 1, vec![run_shell(4, "sleep 60")])],
        ..Dockerfile::default()
    };
    let flag = std::sync::atomic::AtomicBool::new(false);
    let base = StoreBaseImages { store: &env.store };
    let ev = Events::default();
    let b = Builder::new(&env.store, &env.t.runtime, &env.networks, &base, &ev).with_cancel(&flag);
    let req = env.req();
    let started = std::time::Instant::now();
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            // Once the sleep runs.
            while !ev.0.lock().unwrap().iter().any(|(n, st)| n.contains("sleep") && st == "RUNNING") {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        b.build_parsed(&req, &df, "Dockerfile")
    });
    assert!(matches!(result, Err(BuildError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    env.assert_clean();
}

#[test]
fn named_contexts() {
    let env = Env::new();
    let extra = env.t.dir.path().join("extra");
    fs::create_dir_all(&extra).unwrap();
    fs::write(extra.join("e.txt"), "extra\n").unwrap();
    fs::write(env.context.join("a.txt"), "a\n").unwrap();
    let ev = Events::default();
    let mut req = env.req();
    req.tags = vec!["basectx".into()];
    let df1 = Dockerfile {
        escape: '\\',
        stages: vec![stage("scratch", None, 1, vec![copy(2, None, &["a.txt"], "/a.txt")])],
        ..Dockerfile::default()
    };
    env.build(&df1, &req, &ev).unwrap();
    let df2 = Dockerfile {
        escape: '\\',
        stages: vec![stage("img", None, 1, vec![copy(2, Some("files"), &["e.txt"], "/e.txt")])],
        ..Dockerfile::default()
    };
    req.tags = vec!["named".into()];
    req.additional_contexts.insert("files".into(), berth::image::build::ContextSource::Dir(extra.clone()));
    req.additional_contexts.insert("img".into(), berth::image::build::ContextSource::Image("basectx".into()));
    req.args.insert("UNUSED".into(), "x".into());
    env.build(&df2, &req, &ev).unwrap_or_else(|e| panic!("build: {e}"));
    assert!(image_has(&env.store, "named", "a.txt") && image_has(&env.store, "named", "e.txt"));
    assert!(ev.1.lock().unwrap().iter().any(|l| l.contains("UNUSED") && l.contains("not consumed")));
    env.assert_clean();
}
