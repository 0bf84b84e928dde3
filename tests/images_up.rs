//! The project's image commands against a real registry (Debian's `docker-registry` on
//! 127.0.0.1): `up` from an empty store pulls what has `image:` and builds what has `build:`
//! (after the image its Dockerfile starts from), `pull`, `build`, `push`, `images`, and the
//! pull policies, with clear errors that leave nothing made.

mod stack;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stack::Stack;

/// A `docker-registry` on a free port of 127.0.0.1, with its storage in a temp dir; killed when
/// dropped.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        assert!(
            Command::new("sh")
                .args(["-c", "command -v docker-registry"])
                .output()
                .is_ok_and(|o| o.status.success()),
            "these tests need Debian's docker-registry (scripts/test installs it)"
        );
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = dir.path().join("cfg.yml");
        std::fs::write(
            &cfg,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-test\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { child, port, _dir: dir }
    }

    fn name(&self, repo: &str) -> String {
        format!("127.0.0.1:{}/{repo}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stack whose store holds nothing, and a registry that has busybox as `base:1`.
fn empty_store_and_registry(name: &str) -> (Stack, Registry) {
    let registry = Registry::start();
    let stack = Stack::with_image(name, &registry.name("base:1"));
    stack.ok(&["image", "push", "-q", &registry.name("base:1")]);
    stack.ok(&["image", "rm", &registry.name("base:1")]);
    stack.ok(&["image", "prune"]);
    assert_eq!(stack.ok(&["image", "ls", "-q"]).stdout.trim(), "", "the store starts empty");
    (stack, registry)
}

fn compose(registry: &Registry, subnet: &str) -> String {
    format!(
        r#"
services:
  db:
    image: {base}
    command: ["sh", "-c", "echo db-up; sleep 1000"]
    init: true
  app:
    build:
      context: ./app
      args:
        GREETING: built-by-berth
    command: ["sh", "-c", "cat /greeting; sleep 1000"]
    init: true
    depends_on: [db]
networks:
  default:
    ipam:
      config:
        - subnet: {subnet}
"#,
        base = registry.name("base:1"),
    )
}

fn write_app(stack: &Stack, registry: &Registry) {
    std::fs::create_dir_all(stack.project_dir.join("app")).unwrap();
    stack.write(
        "app/Dockerfile",
        &format!(
            "FROM {}\nARG GREETING=unset\nRUN echo \"$GREETING\" > /greeting\nCOPY note.txt /note.txt\n",
            registry.name("base:1")
        ),
    );
    stack.write("app/note.txt", "a note\n");
}

#[test]
fn up_pulls_and_builds_from_an_empty_store() {
    let (stack, registry) = empty_store_and_registry("imgup1");
    stack.write("compose.yaml", &compose(&registry, "10.231.41.0/24"));
    write_app(&stack, &registry);
    let r = stack.berth(&["up", "-d", "--wait"]);
    assert!(r.ok, "up: {}", r.stderr);
    assert!(r.stderr.contains("Pulled"), "the base image was pulled: {}", r.stderr);
    stack.wait_until(Duration::from_secs(10), "app prints", |_| {
        stack.berth(&["logs", "app"]).stdout.contains("built-by-berth")
    });
    let images = stack.ok(&["images", "--format", "json"]).stdout;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&images).unwrap();
    assert_eq!(rows.len(), 2, "{images}");
    assert!(rows.iter().any(|r| r["Repository"] == "imgup1-app"), "{images}");

    // Up to date: nothing pulled, nothing built.
    let r = stack.berth(&["up", "-d"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(!r.stderr.contains("Pulling") && !r.stderr.contains("RUN"), "{}", r.stderr);

    // `up --build` rebuilds, from the cache.
    let r = stack.berth(&["up", "-d", "--build"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("CACHED"), "{}", r.stderr);
    stack.ok(&["down"]);
}

#[test]
fn build_push_and_pull_a_service_image() {
    let (stack, registry) = empty_store_and_registry("imgup2");
    let app = registry.name("app:2");
    stack.write(
        "compose.yaml",
        &format!(
            "services:\n  app:\n    image: {app}\n    build:\n      context: ./app\n    pull_policy: build\n"
        ),
    );
    write_app(&stack, &registry);
    stack.ok(&["build", "-q", "--build-arg", "GREETING=from-the-flag"]);
    stack.ok(&["push"]);
    let id = stack.ok(&["image", "inspect", &app]).stdout;
    stack.ok(&["image", "rm", &app]);
    // `pull` skips services whose policy is `build`; --policy does not change that.
    let r = stack.berth(&["pull"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(stack.berth(&["image", "inspect", &app]).code != 0, "pull_policy: build is not pulled");
    // The image pulled by its own name is the one built.
    stack.ok(&["image", "pull", "-q", &app]);
    let again = stack.ok(&["image", "inspect", &app]).stdout;
    let id_of = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()[0]["Id"].clone();
    assert_eq!(id_of(&id), id_of(&again));
    let out = stack.ok(&["image", "save", &app]);
    assert!(!out.stdout.is_empty());
}

#[test]
fn image_and_build_falls_back_to_building_when_the_pull_fails() {
    let (stack, registry) = empty_store_and_registry("imgup3");
    let missing = registry.name("not-there:1");
    stack.write(
        "compose.yaml",
        &format!(
            "services:\n  app:\n    image: {missing}\n    build:\n      context: ./app\n    command: [\"sh\", \"-c\", \"cat /greeting; sleep 1000\"]\n    init: true\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.231.43.0/24\n"
        ),
    );
    write_app(&stack, &registry);
    let r = stack.berth(&["up", "-d"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stderr.contains("it can be built"), "{}", r.stderr);
    assert!(stack.berth(&["image", "inspect", &missing]).ok, "built under the service's image name");
    stack.ok(&["down"]);
}

#[test]
fn a_missing_image_fails_clearly_and_makes_nothing() {
    let (stack, registry) = empty_store_and_registry("imgup4");
    let missing = registry.name("nope:1");
    stack.write(
        "compose.yaml",
        &format!("services:\n  web:\n    image: {missing}\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.231.44.0/24\n"),
    );
    let r = stack.berth(&["up", "-d"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("service web") && r.stderr.contains("nope:1"), "{}", r.stderr);
    assert_eq!(stack.ok(&["ps", "-a", "-q"]).stdout.trim(), "");
    assert_eq!(stack.ok(&["network", "ls", "-q"]).stdout.trim(), "", "no network was made");
    assert_eq!(stack.ok(&["image", "ls", "-q"]).stdout.trim(), "");

    // `pull` names it too; with --ignore-pull-failures it goes on.
    let r = stack.berth(&["pull"]);
    assert!(!r.ok && r.stderr.contains("service web"), "{}", r.stderr);
    stack.ok(&["pull", "--ignore-pull-failures"]);

    // pull_policy: never does not even try.
    stack
        .write("compose.yaml", &format!("services:\n  web:\n    image: {missing}\n    pull_policy: never\n"));
    let r = stack.berth(&["up", "-d"]);
    assert!(!r.ok && !r.stderr.contains("Pulling"), "{}", r.stderr);
    assert!(r.stderr.contains("web"), "{}", r.stderr);
}

#[test]
fn builds_run_once_and_after_the_images_they_start_from() {
    let (stack, registry) = empty_store_and_registry("imgup5");
    std::fs::create_dir_all(stack.project_dir.join("base")).unwrap();
    stack.write(
        "base/Dockerfile",
        &format!("FROM {}\nRUN echo from-base > /base-marker\n", registry.name("base:1")),
    );
    std::fs::create_dir_all(stack.project_dir.join("app")).unwrap();
    // Starts FROM the base service's image: it must wait for that build (docker compose runs
    // both at once and then fails to pull `imgup5-base`).
    stack.write("app/Dockerfile", "FROM imgup5-base\nRUN cat /base-marker > /app-marker\n");
    stack.write(
        "compose.yaml",
        r#"
x-app: &app
  build: ./app
  command: ["sh", "-c", "cat /app-marker; sleep 1000"]
  init: true
services:
  base:
    build: ./base
    command: ["true"]
  one:
    image: imgup5/app:1
    pull_policy: build
    <<: *app
  two:
    image: imgup5/app:2
    pull_policy: build
    <<: *app
networks:
  default:
    ipam:
      config:
        - subnet: 10.231.45.0/24
"#,
    );
    let r = stack.berth(&["build"]);
    assert!(r.ok, "{}", r.stderr);
    let app_builds =
        r.stderr.lines().filter(|l| l.contains("Build one,two") && l.contains("Building")).count();
    assert_eq!(app_builds, 1, "one and two build once: {}", r.stderr);
    let id = |name: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&stack.ok(&["image", "inspect", name]).stdout).unwrap();
        v[0]["Id"].as_str().unwrap().to_string()
    };
    assert_eq!(id("imgup5/app:1"), id("imgup5/app:2"));
    stack.ok(&["up", "-d", "one"]);
    stack.wait_until(Duration::from_secs(10), "one prints", |_| {
        stack.berth(&["logs", "one"]).stdout.contains("from-base")
    });
    stack.ok(&["down"]);
}

#[test]
fn a_build_killed_mid_step_is_cleaned_up_by_the_next_build() {
    let stack = Stack::with_image("imgup6", "imgup6/base:1");
    std::fs::create_dir_all(stack.project_dir.join("app")).unwrap();
    stack.write("app/Dockerfile", "FROM imgup6/base:1\nRUN sleep 60\n");
    stack.write("compose.yaml", "services:\n  app:\n    build: ./app\n");
    let mut child = stack.spawn(&["build"]);
    // Wait until the step's container exists, then kill berth as hard as possible.
    let containers = stack.root().join("containers");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&containers).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the RUN step never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    let _ = child.wait();
    assert!(stack.ok(&["network", "ls", "-q"]).stdout.trim() != "", "the killed build left its network");
    // The next build takes away what the killed one left, and works.
    stack.write("app/Dockerfile", "FROM imgup6/base:1\nRUN true\n");
    stack.ok(&["build"]);
    assert_eq!(stack.ok(&["network", "ls", "-q"]).stdout.trim(), "");
    assert_eq!(std::fs::read_dir(&containers).map(|d| d.count()).unwrap_or(0), 0);
    assert_eq!(std::fs::read_dir(stack.run_dir().join("builds")).map(|d| d.count()).unwrap_or(0), 0);
}
