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
