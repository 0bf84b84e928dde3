//! The example stacks: `examples/` (what the README's first command brings up; its image is
//! built by berth from `examples/Dockerfile`) and every folder of `docker-compose.examples/`,
//! brought up with `up -d --wait` and taken down with `down -v` by berth. The webapp example
//! has its own test (tests/webapp.rs).

mod stack;

use std::path::Path;
use std::time::Duration;

use stack::Stack;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

#[test]
fn the_readme_example_stack_builds_its_image_comes_up_and_serves_its_page() {
    // The store has busybox under another name only: the example's image is built by `up`
    // from the Dockerfile, once for the three services that share it.
    let s = Stack::from_dir("ex-main", &repo("examples"), stack::IMAGE);
    assert!(!s.berth(&["image", "inspect", "berth-example/busybox:latest"]).ok);
    let up = s.ok(&["up", "-d", "--wait", "--wait-timeout", "120", "--build"]);
    let progress = format!("{}{}", up.stdout, up.stderr);
    assert_eq!(progress.matches(" Building").count(), 1, "one build for three services:\n{progress}");
    let image = s.ok(&["image", "inspect", "berth-example/busybox:latest"]).stdout;
    let image: serde_json::Value = serde_json::from_str(&image).expect("inspect JSON");
    assert_eq!(image[0]["Config"]["Cmd"], serde_json::json!(["sh"]), "{image:#}");
    let page = s.exec("web", &["wget", "-q", "-O", "-", "http://127.0.0.1/"]);
    assert_eq!(page.stdout, "hello from berth\n", "{}", page.stderr);
    s.wait_until(Duration::from_secs(15), "probe's fetch", |_| {
        s.ok(&["logs", "probe"]).stdout.contains("hello from berth")
    });
    s.ok(&["down", "-v"]);
    assert!(s.ps().is_empty());
}

#[test]
fn docker_compose_examples_run_under_berth() {
    let expect = [
        ("web-health", "client", "hello from web"),
        ("seeded-volume", "reader", "seeded"),
        ("secrets", "app", "/etc/app.conf"),
    ];
    for (folder, service, text) in expect {
        let dir = repo("docker-compose.examples").join(folder);
        let s = Stack::from_dir(&format!("dcx-{folder}"), &dir, "busybox:latest");
        s.ok(&["up", "-d", "--wait", "--wait-timeout", "60"]);
        s.wait_until(Duration::from_secs(15), &format!("{folder}: {service}'s output"), |_| {
            s.ok(&["logs", service]).stdout.contains(text)
        });
        s.ok(&["down", "-v"]);
        assert!(s.ps().is_empty(), "{folder}");
    }
}
