//! `berth config` and `berth graph` as a user runs them: discovery, flags, environment
//! variables, and one-line errors that name file, line and attribute.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn berth(dir: &Path, args: &[&str]) -> Output {
    berth_env(dir, args, &[])
}

fn berth_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(args).current_dir(dir).env_clear().env("PATH", "/usr/bin:/bin").env("HOME", "/root");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("berth runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("berth-test-").tempdir().expect("temp dir");
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "berth failed: {}", stderr(o));
    serde_json::from_str(&stdout(o)).expect("JSON output")
}

#[test]
fn discovers_compose_file_and_override_from_a_subfolder() {
    let dir = project(&[
        ("compose.yaml", "services:\n  web:\n    image: a\n"),
        ("compose.override.yaml", "services:\n  web:\n    image: b\n"),
        ("sub/deeper/.keep", ""),
    ]);
    let out = berth(&dir.path().join("sub/deeper"), &["-p", "x", "config", "--format", "json"]);
    assert_eq!(json(&out)["services"]["web"]["image"], "b");
}

#[test]
fn missing_compose_file_is_one_clear_error() {
    let dir = project(&[]);
    let out = berth(dir.path(), &["config"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("no configuration file provided"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn reads_compose_file_from_stdin() {
    let dir = project(&[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["-p", "x", "-f", "-", "config", "--format", "json"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    use std::io::Write;
    child.stdin.take().expect("stdin").write_all(b"services:\n  s:\n    image: from-stdin\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(json(&out)["services"]["s"]["image"], "from-stdin");
}

#[test]
fn project_directory_is_the_base_of_relative_paths_and_dotenv() {
    let dir = project(&[
        ("conf/compose.yaml", "services:\n  s:\n    image: \"x:${TAG}\"\n    volumes: [./data:/data]\n"),
        ("base/.env", "TAG=from-base\n"),
    ]);
    let out = berth(
        dir.path(),
        &["-f", "conf/compose.yaml", "--project-directory", "base", "-p", "x", "config", "--format", "json"],
    );
    let v = json(&out);
    assert_eq!(v["services"]["s"]["image"], "x:from-base");
    let want = dir.path().join("base/data");
    assert_eq!(v["services"]["s"]["volumes"][0]["source"], want.to_string_lossy().as_ref());
}

#[test]
fn quiet_validates_and_fails_on_bad_input() {
    let dir =
        project(&[("compose.yaml", "services:\n  web:\n    image: x\n    ports:\n      - \"80:abc\"\n")]);
    let out = berth(dir.path(), &["-p", "x", "config", "-q"]);
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    assert!(err.starts_with("berth: compose.yaml:5:9: services.web.ports[0]: "), "{err}");
    assert!(err.contains("80:abc"), "{err}");

    let good = project(&[("compose.yaml", "services:\n  web:\n    image: x\n")]);
    let out = berth(good.path(), &["-p", "x", "config", "-q"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

#[test]
fn bad_inputs_name_file_line_and_attribute() {
    let cases: &[(&str, &str)] = &[
        (
            "services:\n  web:\n    image: x\n    imagee: y\n",
            "compose.yaml:4:5: services.web: additional property \"imagee\" not allowed",
        ),
        (
            "services:\n  web:\n    image: \"x:${TAG\"\n",
            "compose.yaml:3:12: services.web.image: invalid interpolation format",
        ),
        (
            "services:\n  web:\n    image: x\n    depends_on: [ghost]\n",
            "services.web.depends_on: service \"web\" depends on undefined service \"ghost\"",
        ),
        (
            "services:\n  web:\n    image: x\n    privileged: [1]\n",
            "compose.yaml:4:17: services.web.privileged:",
        ),
        (
            "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n",
            "cycle",
        ),
        ("services:\n  web:\n    image: x\n  web:\n    image: y\n", "compose.yaml:4:3:"),
    ];
    for (text, want) in cases {
        let dir = project(&[("compose.yaml", text)]);
        let out = berth(dir.path(), &["-p", "x", "config"]);
        assert!(!out.status.success(), "{text} should fail");
        let err = stderr(&out);
        assert!(err.contains(want), "for {text:?}: want {want:?}, got {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn listing_flags() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    volumes: [data:/d]\n    networks: [default, front]\n  app:\n    build: .\n  dbg:\n    image: busybox\n    profiles: [debug, tools]\n    volumes: [dbg:/d]\n    networks: [back]\nvolumes:\n  data: {}\n  dbg: {}\n  spare: {}\nnetworks:\n  front: {}\n  back: {}\n",
    )]);
    let run = |flag: &str| stdout(&berth(dir.path(), &["-p", "x", "config", flag]));
    assert_eq!(run("--services"), "app\nweb\n");
    // As docker compose: what no enabled service uses is left out.
    assert_eq!(run("--volumes"), "data\n");
    assert_eq!(run("--networks"), "default\nfront\n");
    assert_eq!(
        stdout(&berth(dir.path(), &["-p", "x", "--all-resources", "config", "--volumes"])),
        "data\ndbg\nspare\n"
    );
    assert_eq!(run("--profiles"), "debug\ntools\n");
    assert_eq!(run("--images"), "x-app\nnginx\n");
    let hashes = run("--hash=*");
    assert_eq!(hashes.lines().count(), 2, "{hashes}");
    assert!(hashes.lines().all(|l| l.split(' ').nth(1).is_some_and(|h| h.len() == 64)), "{hashes}");
    let one = stdout(&berth(dir.path(), &["-p", "x", "config", "--hash", "web"]));
    assert!(one.starts_with("web ") && one.lines().count() == 1, "{one}");
}

#[test]
fn output_file_and_yaml_format() {
    let dir =
        project(&[("compose.yaml", "services:\n  web:\n    image: nginx\n    environment: {P: \"$$5\"}\n")]);
    let out = berth(dir.path(), &["-p", "x", "config", "-o", "out.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(dir.path().join("out.yaml")).expect("written");
    assert!(text.starts_with("name: x\n"), "{text}");
    assert!(text.contains("P: $$5"), "{text}");
}

#[test]
fn services_named_on_the_command_line_come_with_their_dependencies() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  web:\n    image: x\n    depends_on: [api]\n  api:\n    image: x\n    depends_on: [db]\n  db:\n    image: x\n  other:\n    image: x\n  dbg:\n    image: x\n    profiles: [debug]\n",
    )]);
    let out = berth(dir.path(), &["-p", "x", "config", "--services", "api"]);
    assert_eq!(stdout(&out), "api\ndb\n");
    // Naming a service enables its profile.
    let out = berth(dir.path(), &["-p", "x", "config", "--services", "dbg"]);
    assert_eq!(stdout(&out), "dbg\n", "{}", stderr(&out));
}

#[test]
fn env_file_flag_and_compose_env_files() {
    let dir = project(&[
        ("compose.yaml", "services:\n  s:\n    image: \"x:${TAG}\"\n"),
        ("a.env", "TAG=a\n"),
        ("b.env", "TAG=b\n"),
    ]);
    let out = berth(
        dir.path(),
        &["-p", "x", "--env-file", "a.env", "--env-file", "b.env", "config", "--format", "json"],
    );
    assert_eq!(json(&out)["services"]["s"]["image"], "x:b");
    let out = berth_env(
        dir.path(),
        &["-p", "x", "config", "--format", "json"],
        &[("COMPOSE_ENV_FILES", "b.env,a.env")],
    );
    assert_eq!(json(&out)["services"]["s"]["image"], "x:a");
    let out = berth(dir.path(), &["-p", "x", "--env-file", "nope.env", "config"]);
    assert!(stderr(&out).contains("nope.env"), "{}", stderr(&out));
}

#[test]
fn invalid_project_name_is_refused() {
    let dir = project(&[("compose.yaml", "services:\n  s:\n    image: x\n")]);
    let out = berth(dir.path(), &["-p", "Bad Name", "config"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid project name"), "{}", stderr(&out));
}

#[test]
fn disabled_dependency_names_the_profile() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  web:\n    image: x\n    depends_on: [db]\n  db:\n    image: x\n    profiles: [data]\n",
    )]);
    let out = berth(dir.path(), &["-p", "x", "config"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--profile data"), "{}", stderr(&out));
}

#[test]
fn graph_prints_levels_and_dot() {
    let dir = project(&[(
        "compose.yaml",
        "services:\n  web:\n    image: x\n    depends_on:\n      api: {condition: service_healthy}\n  api:\n    image: x\n    volumes: [data:/d]\nvolumes:\n  data: {}\n",
    )]);
    let text = berth(dir.path(), &["-p", "x", "graph"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let t = stdout(&text);
    let api = t.find("api").expect("api listed");
    let web = t.find("web").expect("web listed");
    assert!(api < web, "api starts before web:\n{t}");
    assert!(t.contains("service_healthy"), "{t}");
    let dot = stdout(&berth(dir.path(), &["-p", "x", "graph", "--format", "dot"]));
    assert!(dot.trim_start().starts_with("digraph"), "{dot}");
    assert!(dot.contains("web") && dot.contains("api") && dot.contains("data"), "{dot}");
}

/// The first line of a failed run's stderr, which must be the one error message.
fn error_line(o: &Output) -> String {
    assert!(!o.status.success(), "should fail: {}", stdout(o));
    assert_eq!(o.status.code(), Some(1), "a clean error, not a crash: {}", stderr(o));
    stderr(o).lines().next().unwrap_or_default().to_string()
}

#[test]
fn include_and_extends_cycles_are_errors_naming_the_chain() {
    let dir = project(&[
        ("self/compose.yaml", "include: [compose.yaml]\nservices: {a: {image: x}}\n"),
        ("pair/compose.yaml", "include: [b.yaml]\nservices: {a: {image: x}}\n"),
        ("pair/b.yaml", "include: [compose.yaml]\nservices: {b: {image: x}}\n"),
        (
            "ext/compose.yaml",
            "services:\n  a:\n    extends: {file: compose.yaml, service: a}\n    image: x\n",
        ),
        ("ext2/compose.yaml", "services:\n  a:\n    extends: {file: ./lib/../b.yaml, service: b}\n"),
        ("ext2/b.yaml", "services:\n  b:\n    extends: {file: compose.yaml, service: a}\n"),
    ]);
    let line = error_line(&berth(&dir.path().join("self"), &["config"]));
    assert_eq!(line, "berth: compose.yaml:1:11: include[0]: include cycle: compose.yaml -> compose.yaml");
    let line = error_line(&berth(&dir.path().join("pair"), &["config"]));
    assert_eq!(line, "berth: b.yaml:1:11: include[0]: include cycle: compose.yaml -> b.yaml -> compose.yaml");
    let line = error_line(&berth(&dir.path().join("ext"), &["config"]));
    assert_eq!(line, "berth: compose.yaml:3:14: services.a.extends: extends cycle: a -> a");
    let line = error_line(&berth(&dir.path().join("ext2"), &["config"]));
    assert_eq!(
        line,
        "berth: b.yaml:3:14: services.b.extends: extends cycle: a (compose.yaml) -> b (b.yaml) -> a (compose.yaml)"
    );
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut deep = String::from("services: {a: {image: x}}\nx-deep:\n");
    for i in 0..10_000 {
        deep.push_str(&" ".repeat(i + 2));
        deep.push_str("k:\n");
    }
    let n = 50_000;
    let interp = format!("services: {{a: {{image: \"{}x{}\"}}}}\n", "${A:-".repeat(n), "}".repeat(n));
    let flow = format!("x: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let dir = project(&[("deep.yaml", &deep), ("interp.yaml", &interp), ("flow.yaml", &flow)]);
    let line = error_line(&berth(dir.path(), &["-f", "deep.yaml", "config"]));
    assert!(line.starts_with("berth: deep.yaml:"), "{line}");
    assert!(line.ends_with("collections nested more than 256 levels deep (aliases included)"), "{line}");
    let line = error_line(&berth(dir.path(), &["-f", "interp.yaml", "config"]));
    assert_eq!(
        line,
        "berth: interp.yaml:1:23: services.a.image: variable substitutions nested more than 32 levels deep"
    );
    let line = error_line(&berth(dir.path(), &["-f", "flow.yaml", "config"]));
    assert!(line.starts_with("berth: flow.yaml:1:"), "{line}");
}

#[test]
fn billion_laughs_is_refused() {
    let mut text =
        String::from("services: {s: {image: x}}\nx-0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let items = vec![format!("*l{}", i - 1); 9].join(", ");
        text.push_str(&format!("x-{i}: &l{i} [{items}]\n"));
    }
    let dir = project(&[("compose.yaml", &text)]);
    let line = error_line(&berth(dir.path(), &["config"]));
    assert!(line.starts_with("berth: compose.yaml:"), "{line}");
    assert!(line.contains("excessive aliasing"), "{line}");
}

#[test]
fn devices_folders_and_oversized_inputs_are_refused() {
    let dir = project(&[
        ("folder.env/.keep", ""),
        ("compose.yaml", "services: {a: {image: x, env_file: folder.env}}\n"),
        ("dev.yaml", "services: {a: {image: x, env_file: [{path: /dev/zero, required: false}]}}\n"),
        ("ok.yaml", "services: {a: {image: x}}\n"),
    ]);
    let line = error_line(&berth(dir.path(), &["-f", "/dev/zero", "config"]));
    assert_eq!(line, "berth: /dev/zero: is a character device, not a file");
    let line = error_line(&berth(dir.path(), &["config"]));
    assert!(line.ends_with("folder.env is a directory, not a file"), "{line}");
    assert!(line.starts_with("berth: compose.yaml:1:"), "{line}");
    let line = error_line(&berth(dir.path(), &["-f", "dev.yaml", "config"]));
    assert!(line.ends_with("env file /dev/zero is a character device, not a file"), "{line}");
    let line = error_line(&berth(dir.path(), &["-f", "ok.yaml", "--env-file", "/dev/zero", "config"]));
    assert_eq!(line, "berth: env file /dev/zero is a character device, not a file");

    // A pipe is read (as `-f /dev/stdin` or `<(...)`), up to 64 MiB.
    let pipe = |args: &[&str], input: Vec<u8>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            // berth stops reading at the limit: a broken pipe is expected then.
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().expect("wait");
        writer.join().expect("writer");
        out
    };
    let out = pipe(
        &["-p", "x", "-f", "/dev/stdin", "config", "--format", "json"],
        b"services: {s: {image: piped}}\n".to_vec(),
    );
    assert_eq!(json(&out)["services"]["s"]["image"], "piped");
    let mut huge = b"services: {s: {image: x}}\n".to_vec();
    huge.resize(65 << 20, b'#');
    let line = error_line(&pipe(&["-p", "x", "-f", "-", "config"], huge));
    assert_eq!(line, "berth: -: is larger than 64 MiB");
}

#[test]
fn large_projects_load_in_linear_time() {
    // Quadratic steps took 5-20 s for 40,000 services or env lines; linear ones take well under
    // one. The bound is loose for busy machines, far below what a quadratic step would take.
    let n = 60_000;
    let mut compose = String::from("services:\n  s0: {image: x}\n");
    for i in 1..n {
        compose.push_str(&format!("  s{i}: {{image: x, depends_on: [s{}]}}\n", i - 1));
    }
    compose.push_str("  e: {image: x, env_file: big.env}\n");
    let env: String = (0..n).map(|i| format!("K{i}=v{i}\n")).collect();
    let over: String = std::iter::once("services:\n".to_string())
        .chain((0..n).map(|i| format!("  s{i}: {{labels: [a=b]}}\n")))
        .collect();
    let dir = project(&[("compose.yaml", &compose), ("compose.override.yaml", &over), ("big.env", &env)]);
    let start = std::time::Instant::now();
    let out = berth(dir.path(), &["-p", "x", "config", "--format", "json"]);
    let took = start.elapsed();
    let v = json(&out);
    assert_eq!(v["services"].as_object().map(|m| m.len()), Some(n + 1));
    assert_eq!(v["services"]["e"]["environment"].as_object().map(|m| m.len()), Some(n));
    assert!(took.as_secs() < 20, "took {took:?}");
}

#[test]
fn compatibility_and_no_normalize_print_the_model_as_written() {
    // docker compose's `config` turns normalization off with `--compatibility` (or
    // COMPOSE_COMPATIBILITY) and `--no-normalize`: no implicit `default` network, no names
    // from keys, no build defaults, `pull_policy` as written, no dependencies from `links`.
    // Environment and paths are still resolved.
    let dir = project(&[(
        "compose.yaml",
        "services:\n  web:\n    image: nginx\n    pull_policy: if_not_present\n    links: [db]\n    volumes: [data:/data]\n    environment: [A=1]\n  db:\n    image: postgres\n    networks: [back]\n    build: {context: .}\nnetworks:\n  back: {}\nvolumes:\n  data: {}\n",
    )]);
    let plain = ["-p", "demo", "config", "--format", "json"];
    let as_written = [
        berth(dir.path(), &["-p", "demo", "--compatibility", "config", "--format", "json"]),
        berth(dir.path(), &["-p", "demo", "config", "--compatibility", "--format", "json"]),
        berth(dir.path(), &["-p", "demo", "config", "--no-normalize", "--format", "json"]),
        berth_env(dir.path(), &plain, &[("COMPOSE_COMPATIBILITY", "true")]),
    ];
    for out in &as_written {
        let v = json(out);
        let web = &v["services"]["web"];
        assert!(web.get("networks").is_none(), "{v}");
        assert!(web.get("depends_on").is_none(), "{v}");
        assert_eq!(web["pull_policy"], "if_not_present");
        assert_eq!(web["environment"], serde_json::json!({"A": "1"}));
        let db = &v["services"]["db"];
        assert_eq!(db["networks"], serde_json::json!({"back": null}));
        assert!(db["build"].get("dockerfile").is_none(), "{v}");
        assert_eq!(db["build"]["context"], dir.path().canonicalize().unwrap().to_str().unwrap());
        assert_eq!(v["networks"], serde_json::json!({"back": {}}));
        assert_eq!(v["volumes"], serde_json::json!({"data": {}}));
        assert_eq!(v["name"], "demo");
    }
    // Normalized otherwise.
    let v = json(&berth(dir.path(), &plain));
    assert_eq!(v["services"]["web"]["networks"], serde_json::json!({"default": null}));
    assert_eq!(v["services"]["web"]["depends_on"]["db"]["condition"], "service_started");
    assert_eq!(v["services"]["web"]["pull_policy"], "missing");
    assert_eq!(v["services"]["db"]["build"]["dockerfile"], "Dockerfile");
    assert_eq!(v["networks"]["default"]["name"], "demo_default");
    assert_eq!(v["networks"]["back"]["name"], "demo_back");
    assert_eq!(v["volumes"]["data"]["name"], "demo_data");
    // The other outputs of `config` work on the model as written too.
    let out = berth(dir.path(), &["-p", "demo", "--compatibility", "config", "--services"]);
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["db", "web"]);
}
