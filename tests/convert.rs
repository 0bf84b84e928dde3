//! `berth convert` as a user runs it: the webapp example against its checked-in manifests
//! (tests/convert/README.md says how to regenerate them), `--strict`, `-o FILE|DIR`, `--format`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs berth in `dir` with a clean environment (so that no variable changes the output).
fn berth(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", "/root")
        .output()
        .expect("berth runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn webapp_converts_to_the_checked_in_manifests() {
    let root = repo();
    let out = berth(&root, &["-f", "examples/webapp/compose.yaml", "convert"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let want = std::fs::read_to_string(root.join("tests/convert/webapp.yaml")).expect("golden manifests");
    assert_eq!(
        text(&out.stdout),
        want,
        "manifests differ: regenerate as tests/convert/README.md says, and review the diff"
    );
    let report = std::fs::read_to_string(root.join("tests/convert/webapp.report")).expect("golden report");
    assert_eq!(text(&out.stderr), report, "report differs: regenerate as tests/convert/README.md says");
    // The webapp example has nothing Kubernetes cannot express: --strict passes.
    let strict = berth(&root, &["-f", "examples/webapp/compose.yaml", "convert", "--strict"]);
    assert!(strict.status.success(), "{}", text(&strict.stderr));
    assert_eq!(strict.stdout, out.stdout);
}

fn project(compose: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("berth-test-").tempdir().expect("temp dir");
    std::fs::write(dir.path().join("compose.yaml"), compose).expect("write compose.yaml");
    dir
}

#[test]
fn strict_fails_and_writes_nothing() {
    let dir = project("name: s\nservices:\n  a:\n    image: busybox\n    ulimits:\n      nofile: 1024\n");
    let out = berth(dir.path(), &["convert", "--strict", "-o", "k8s.yaml"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("not converted: service \"a\": ulimits:"), "{err}");
    assert!(err.contains("--strict"), "{err}");
    assert!(!dir.path().join("k8s.yaml").exists());
    let lax = berth(dir.path(), &["convert", "-o", "k8s.yaml"]);
    assert!(lax.status.success(), "{}", text(&lax.stderr));
    let yaml = std::fs::read_to_string(dir.path().join("k8s.yaml")).expect("written");
    assert!(yaml.contains("kind: Deployment"), "{yaml}");
}

#[test]
fn output_folder_json_namespace_and_service_selection() {
    let dir = project(
        "name: sel\nservices:\n  web:\n    image: nginx\n    depends_on: [db]\n  db:\n    image: postgres\n  other:\n    image: x\n",
    );
    let out = berth(dir.path(), &["convert", "--format", "json", "-n", "shop", "-o", "out/", "web"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("out"))
        .expect("folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["db-deployment.json", "db-service.json", "web-deployment.json", "web-service.json"]);
    let web: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("out/web-deployment.json")).expect("read"),
    )
    .expect("json");
    assert_eq!(web["metadata"]["namespace"], "shop");
    assert_eq!(web["spec"]["template"]["spec"]["initContainers"][0]["name"], "wait-for-db");
    let bad = berth(dir.path(), &["convert", "nope"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("no such service: nope"), "{}", text(&bad.stderr));
}
