//! `berth up` / `down` on real containers: dependency conditions, restart policies,
//! reconciliation by config hash, volumes, secrets, dry runs, exit codes, the project lock
//! and recovery from a killed CLI. Each test has its own root, run dir, project and subnet.

mod stack;

use std::time::Duration;

use stack::Stack;

fn yaml(subnet: u8, services: &str) -> String {
    format!(
        "services:\n{services}\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.213.{subnet}.0/24\n"
    )
}

fn logs(stack: &Stack, service: &str) -> String {
    stack.ok(&["logs", "--no-color", "--no-log-prefix", service]).stdout
}

#[test]
fn service_healthy_holds_the_dependent_until_healthy() {
    let s = Stack::new(
        "eng-healthy",
        &yaml(
            1,
            r#"  db:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "sleep 2; touch /shared/ready; exec sleep 1000"]
    volumes: [shared:/shared]
    healthcheck:
      test: ["CMD", "test", "-f", "/shared/ready"]
      interval: 300ms
      retries: 30
  app:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "if test -f /shared/ready; then echo dependency-was-ready; else echo too-early; fi"]
    volumes: [shared:/shared]
    depends_on:
      db:
        condition: service_healthy
volumes:
  shared: {}"#,
        ),
    );
    s.ok(&["up", "-d"]);
    s.wait_until(Duration::from_secs(20), "app to exit", |ps| {
        ps.iter().any(|c| c["Service"] == "app" && c["State"] == "exited")
    });
    let out = logs(&s, "app");
    assert!(out.contains("dependency-was-ready"), "{out}");
    let db = s.container("eng-healthy-db-1").expect("db container");
    assert_eq!(db["Health"], "healthy");
}

#[test]
fn completed_successfully_runs_first_and_wait_counts_it_as_success() {
    let s = Stack::new(
        "eng-oneshot",
        &yaml(
            2,
            r#"  seed:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "sleep 1; echo seeded > /data/v"]
    volumes: [data:/data]
  web:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "cat /data/v; exec sleep 1000"]
    volumes: [data:/data]
    depends_on:
      seed:
        condition: service_completed_successfully
volumes:
  data: {}"#,
        ),
    );
    let r = s.ok(&["up", "--wait", "--wait-timeout", "30"]);
    assert!(!r.stderr.contains("Error"), "{}", r.stderr);
    let seed = s.container("eng-oneshot-seed-1").expect("seed");
    assert_eq!(seed["State"], "exited");
    assert_eq!(seed["ExitCode"], 0);
    s.wait_until(Duration::from_secs(10), "web's output", |_| logs(&s, "web").contains("seeded"));
}

#[test]
fn failed_dependency_stops_the_dependent_with_a_clear_error() {
    let s = Stack::new(
        "eng-depfail",
        &yaml(
            3,
            r#"  seed:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "exit 4"]
  web:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    depends_on:
      seed:
        condition: service_completed_successfully"#,
        ),
    );
    let r = s.berth(&["up", "-d"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("seed") && r.stderr.contains("exit 4"), "{}", r.stderr);
    // As docker compose: web is made ahead of its dependency, and never started.
    let web = s.container("eng-depfail-web-1").expect("web is created");
    assert_eq!(web["State"], "created", "{web}");
}

#[test]
fn on_failure_3_runs_four_times() {
    let s = Stack::new(
        "eng-restart",
        &yaml(
            4,
            r#"  flaky:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo attempt; exit 1"]
    restart: on-failure:3"#,
        ),
    );
    s.ok(&["up", "-d"]);
    s.wait_until(Duration::from_secs(30), "flaky to give up", |ps| {
        ps.iter().any(|c| c["Service"] == "flaky" && c["State"] == "exited")
    });
    let out = logs(&s, "flaky");
    assert_eq!(out.matches("attempt").count(), 4, "{out}");
    assert_eq!(s.container("eng-restart-flaky-1").unwrap()["ExitCode"], 1);
}

#[test]
fn changing_one_service_recreates_only_it() {
    let compose = |value: &str| {
        yaml(
            5,
            &format!(
                r#"  a:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    environment:
      VALUE: "{value}"
  b:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]"#
            ),
        )
    };
    let s = Stack::new("eng-recreate", &compose("one"));
    s.ok(&["up", "-d"]);
    let id = |name: &str| s.container(name).expect(name)["ID"].as_str().unwrap().to_string();
    let (a1, b1) = (id("eng-recreate-a-1"), id("eng-recreate-b-1"));
    // Unchanged: both kept.
    s.ok(&["up", "-d"]);
    assert_eq!((id("eng-recreate-a-1"), id("eng-recreate-b-1")), (a1.clone(), b1.clone()));
    s.write("compose.yaml", &compose("two"));
    let plan = s.ok(&["up", "-d", "--dry-run"]).stdout;
    assert!(plan.contains("recreate container eng-recreate-a-1"), "{plan}");
    assert!(plan.contains("keep container eng-recreate-b-1"), "{plan}");
    s.ok(&["up", "-d"]);
    let a2 = id("eng-recreate-a-1");
    assert_ne!(a1, a2);
    assert_eq!(id("eng-recreate-b-1"), b1);
    let env = s.exec("a", &["sh", "-c", "echo $VALUE"]);
    assert_eq!(env.stdout.trim(), "two");
    // Scale up and down.
    s.ok(&["up", "-d", "--scale", "b=2"]);
    assert!(s.container("eng-recreate-b-2").is_some());
    s.ok(&["up", "-d"]);
    assert!(s.container("eng-recreate-b-2").is_none());
}

#[test]
fn named_volume_outlives_down_and_goes_with_down_v() {
    let s = Stack::new(
        "eng-volume",
        &yaml(
            6,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "cat /data/v 2>/dev/null || echo none; echo kept > /data/v; exec sleep 1000"]
    volumes: [data:/data]
volumes:
  data: {}"#,
        ),
    );
    s.ok(&["up", "-d"]);
    s.wait_until(Duration::from_secs(10), "first write", |_| logs(&s, "app").contains("none"));
    s.ok(&["down", "-t", "0"]);
    let vols = s.ok(&["volume", "ls", "-q"]).stdout;
    assert!(vols.lines().any(|l| l == "eng-volume_data"), "{vols}");
    s.ok(&["up", "-d"]);
    s.wait_until(Duration::from_secs(10), "second run", |_| logs(&s, "app").contains("kept"));
    s.ok(&["down", "-v", "-t", "0"]);
    let vols = s.ok(&["volume", "ls", "-q"]).stdout;
    assert!(!vols.contains("eng-volume_data"), "{vols}");
}

#[test]
fn secrets_arrive_with_their_mode() {
    let s = Stack::new(
        "eng-secret",
        &yaml(
            7,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    secrets:
      - source: token
        mode: 0400
      - source: other
        target: /etc/other.conf
secrets:
  token:
    file: ./token.txt
  other:
    file: ./token.txt"#,
        ),
    );
    s.write("token.txt", "s3cret\n");
    s.ok(&["up", "-d"]);
    let r = s.exec(
        "app",
        &["sh", "-c", "stat -c %a /run/secrets/token; cat /run/secrets/token; cat /etc/other.conf"],
    );
    assert_eq!(r.stdout, "400\ns3cret\ns3cret\n", "{}", r.stderr);
}

#[test]
fn dry_run_changes_nothing() {
    let s = Stack::new(
        "eng-dryrun",
        &yaml(
            8,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    volumes: [data:/data]
volumes:
  data: {}"#,
        ),
    );
    let list = |dir: std::path::PathBuf| -> Vec<String> { walk(&dir) };
    let before = (list(s.root()), list(s.run_dir()));
    let r = s.ok(&["up", "-d", "--dry-run"]);
    assert!(r.stdout.contains("create network eng-dryrun_default"), "{}", r.stdout);
    assert!(r.stdout.contains("create volume eng-dryrun_data"), "{}", r.stdout);
    assert!(r.stdout.contains("create container eng-dryrun-app-1"), "{}", r.stdout);
    let after = (list(s.root()), list(s.run_dir()));
    assert_eq!(before, after);
    assert!(s.ps().is_empty());
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            // The image store and berth's caches (the compose schema cache) are not the
            // project's: a dry run may remember that a file validated.
            if p.ends_with("images") || p.ends_with("cache") {
                continue;
            }
            out.push(p.display().to_string());
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn abort_on_container_exit_and_exit_code_from() {
    let s = Stack::new(
        "eng-abort",
        &yaml(
            9,
            r#"  job:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "sleep 1; echo done; exit 3"]
  server:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    stop_grace_period: 1s"#,
        ),
    );
    let r = s.berth(&["up", "--exit-code-from", "job", "--no-color"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("job-1 exited with code 3"), "{}", r.stdout);
    assert!(r.stdout.contains("done"), "{}", r.stdout);
    let server = s.container("eng-abort-server-1").expect("server");
    assert_eq!(server["State"], "exited");

    s.ok(&["down", "-t", "0"]);
    let r = s.berth(&["up", "--abort-on-container-exit"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
}

#[test]
fn two_concurrent_ups_are_serialised() {
    let s = Stack::new(
        "eng-lock",
        &yaml(
            10,
            r#"  a:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
  b:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    depends_on: [a]"#,
        ),
    );
    let first = s.spawn(&["up", "-d"]);
    let second = s.spawn(&["up", "-d"]);
    for child in [first, second] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let ps = s.ps();
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert!(ps.iter().all(|c| c["State"] == "running"), "{ps:#?}");

    // `down` removes the lock file while it holds it; two `up`s that wait behind it (or come
    // just after) must still take turns, round after round.
    for round in 0..4 {
        let children = [s.spawn(&["down", "-t", "0"]), s.spawn(&["up", "-d"]), s.spawn(&["up", "-d"])];
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}, command {i}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        s.ok(&["up", "-d"]);
        let all = s.ps();
        assert_eq!(all.len(), 2, "round {round}: exactly the file's two containers: {all:#?}");
        assert!(all.iter().all(|c| c["State"] == "running"), "round {round}: {all:#?}");
    }
}

#[test]
fn a_killed_cli_is_recovered_by_the_next_up() {
    let s = Stack::new(
        "eng-kill",
        &yaml(
            11,
            r#"  slow:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "sleep 3; touch /tmp/ok; exec sleep 1000"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ok"]
      interval: 300ms
      retries: 50
  after:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    depends_on:
      slow:
        condition: service_healthy"#,
        ),
    );
    let mut child = s.spawn(&["up", "-d"]);
    std::thread::sleep(Duration::from_millis(1200));
    let _ = child.kill();
    let _ = child.wait();
    s.ok(&["up", "-d", "--wait", "--wait-timeout", "30"]);
    let ps = s.ps();
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert!(ps.iter().all(|c| c["State"] == "running"), "{ps:#?}");
}

#[test]
fn missing_image_fails_before_anything_is_made() {
    let s = Stack::new(
        "eng-noimage",
        &yaml(
            12,
            r#"  app:
    image: nowhere/nothing:1
  other:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]"#,
        ),
    );
    let r = s.berth(&["up", "-d"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("service app") && r.stderr.contains("nowhere/nothing:1"), "{}", r.stderr);
    assert!(s.ps().is_empty());
    let nets = s.ok(&["network", "ls", "-q"]).stdout;
    assert!(nets.trim().is_empty(), "{nets}");
}

#[test]
fn stop_start_exec_and_ps() {
    let s = Stack::new(
        "eng-cmds",
        &yaml(
            13,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo hello; exec sleep 1000"]
    post_start:
      - command: ["sh", "-c", "echo hook > /tmp/hook"]"#,
        ),
    );
    s.ok(&["up", "-d"]);
    assert_eq!(s.exec("app", &["cat", "/tmp/hook"]).stdout, "hook\n");
    let r = s.exec("app", &["sh", "-c", "exit 7"]);
    assert_eq!(r.code, 7);
    let r = s.exec("app", &["sh", "-c", "echo $X"]);
    assert_eq!(r.stdout, "\n");
    let r = s.berth(&["exec", "-T", "-e", "X=1", "-w", "/tmp", "app", "sh", "-c", "echo $X; pwd"]);
    assert_eq!(r.stdout, "1\n/tmp\n");
    s.ok(&["stop", "-t", "1"]);
    assert_eq!(s.container("eng-cmds-app-1").unwrap()["State"], "exited");
    assert!(s.ok(&["ps", "-q"]).stdout.trim().is_empty());
    s.ok(&["start"]);
    assert_eq!(s.container("eng-cmds-app-1").unwrap()["State"], "running");
    let table = s.ok(&["ps"]).stdout;
    assert!(table.starts_with("NAME") && table.contains("eng-cmds-app-1"), "{table}");
    s.wait_until(Duration::from_secs(5), "two hellos", |_| logs(&s, "app").matches("hello").count() == 2);
    let prefixed = s.ok(&["logs", "--no-color"]).stdout;
    assert!(prefixed.lines().any(|l| l.starts_with("app-1") && l.ends_with("| hello")), "{prefixed}");
    let r = s.berth(&["exec", "nosuch", "true"]);
    assert!(!r.ok && r.stderr.contains("no such service: nosuch"), "{}", r.stderr);
}

#[test]
fn attached_up_streams_logs_and_stops_on_ctrl_c() {
    let s = Stack::new(
        "eng-attach",
        &yaml(
            14,
            r#"  talker:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "trap 'echo got-term; exit 0' TERM; echo hello-attached; while true; do sleep 0.2; done"]
    init: true"#,
        ),
    );
    let child = s.spawn(&["up", "--no-color"]);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    s.wait_until(Duration::from_secs(15), "talker to run", |ps| {
        ps.iter().any(|c| c["Service"] == "talker" && c["State"] == "running")
    });
    std::thread::sleep(Duration::from_millis(800));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("talker-1 | hello-attached"), "{stdout}");
    assert!(stdout.contains("Gracefully stopping"), "{stdout}");
    assert!(stdout.contains("got-term"), "{stdout}");
    assert_eq!(s.container("eng-attach-talker-1").unwrap()["State"], "exited");
}

#[test]
fn a_sigkilled_container_is_taken_down_completely() {
    let s = Stack::new(
        "eng-sigkill",
        &yaml(
            15,
            r#"  victim:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]"#,
        ),
    );
    s.ok(&["up", "-d"]);
    let id = s.container("eng-sigkill-victim-1").unwrap()["ID"].as_str().unwrap().to_string();
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.root().join("containers").join(&id).join("status.json")).unwrap(),
    )
    .unwrap();
    let pid = status["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    s.wait_until(Duration::from_secs(10), "the kill to be seen", |ps| {
        ps.iter().any(|c| c["State"] == "exited" && c["ExitCode"] == 137)
    });
    let veth = berth::netns::bridge::veth_name(&id, "eng-sigkill_default");
    let bridge = berth::netns::bridge::bridge_name(&berth::netns::scope(&s.root()), "eng-sigkill_default");
    assert!(links().contains(&veth) && links().contains(&bridge), "{veth} {bridge}: {:?}", links());
    s.ok(&["down", "-t", "0"]);
    assert!(!links().contains(&veth) && !links().contains(&bridge), "links left: {:?}", links());
    let netns: Vec<_> =
        std::fs::read_dir(s.run_dir().join("netns")).map(|d| d.flatten().collect()).unwrap_or_default();
    assert!(netns.is_empty(), "netns files left");
    assert!(!s.root().join("containers").join(&id).exists());
    let nets = s.ok(&["network", "ls", "-q"]).stdout;
    assert!(nets.trim().is_empty(), "{nets}");
}

fn links() -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn a_killed_shim_is_seen_and_handled_by_the_next_up() {
    let s = Stack::new(
        "eng-shim",
        &yaml(
            16,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]"#,
        ),
    );
    s.ok(&["up", "-d"]);
    let id = s.container("eng-shim-app-1").unwrap()["ID"].as_str().unwrap().to_string();
    let status_path = s.root().join("containers").join(&id).join("status.json");
    let read =
        || -> serde_json::Value { serde_json::from_slice(&std::fs::read(&status_path).unwrap()).unwrap() };
    let shim = read()["shim_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // The container's init dies with its shim (parent-death signal): ps says so at once, from
    // /proc, not from a pid that a zombie still holds.
    let app = s.container("eng-shim-app-1").unwrap();
    assert_eq!(app["State"], "dead", "{app:#?}");
    // The next up keeps the container and starts it again under a new shim.
    s.ok(&["up", "-d"]);
    let app = s.container("eng-shim-app-1").unwrap();
    assert_eq!((app["ID"].as_str().unwrap(), app["State"].as_str().unwrap()), (id.as_str(), "running"));
    let new_shim = read()["shim_pid"].as_i64().unwrap() as i32;
    assert!(new_shim > 0 && new_shim != shim);
    let comm = std::fs::read_to_string(format!("/proc/{new_shim}/comm")).unwrap();
    assert_eq!(comm.trim(), "berth-shim");
    assert_eq!(s.exec("app", &["echo", "alive"]).stdout, "alive\n");
}

#[test]
fn copy_up_nocopy_subpath_volumes_from_and_pre_stop() {
    let s = Stack::new(
        "eng-vols",
        &yaml(
            17,
            r#"  filled:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "mkdir -p /data/sub && echo in-sub > /data/sub/f && exec sleep 1000"]
    volumes:
      - etc:/etc
      - type: volume
        source: empty
        target: /bin2
        volume: {nocopy: true}
      - data:/data
    pre_stop:
      - command: ["sh", "-c", "echo stopped-cleanly > /data/pre-stop"]
  reader:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    volumes_from: ["filled:ro"]
    depends_on: [filled]
  sub:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    volumes:
      - type: volume
        source: data
        target: /only-sub
        volume: {subpath: sub}
    depends_on: [filled]
volumes:
  etc: {}
  empty: {}
  data: {}"#,
        ),
    );
    s.ok(&["up", "-d"]);
    // Copy-up: the new volume over /etc got the image's files.
    assert!(s.exec("filled", &["cat", "/etc/passwd"]).stdout.contains("root:x:0:0"));
    // nocopy: nothing copied.
    assert_eq!(s.exec("filled", &["ls", "-A", "/bin2"]).stdout, "");
    // volumes_from, read-only.
    s.wait_until(Duration::from_secs(5), "sub dir", |_| {
        s.exec("reader", &["cat", "/data/sub/f"]).stdout == "in-sub\n"
    });
    assert!(!s.exec("reader", &["touch", "/data/x"]).ok, "volumes_from :ro must be read-only");
    // subpath: only that folder of the volume.
    assert_eq!(s.exec("sub", &["cat", "/only-sub/f"]).stdout, "in-sub\n");
    // pre_stop runs before the container stops.
    s.ok(&["stop", "-t", "1", "filled"]);
    s.ok(&["start", "filled"]);
    assert_eq!(s.exec("filled", &["cat", "/data/pre-stop"]).stdout, "stopped-cleanly\n");
}

#[test]
fn a_dependency_with_restart_true_restarts_its_dependent_when_recreated() {
    let compose = |v: &str| {
        yaml(
            18,
            &format!(
                r#"  db:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    environment: {{V: "{v}"}}
  app:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo started; exec sleep 1000"]
    depends_on:
      db:
        condition: service_started
        restart: true"#
            ),
        )
    };
    let s = Stack::new("eng-deprestart", &compose("1"));
    s.ok(&["up", "-d"]);
    let app_id = s.container("eng-deprestart-app-1").unwrap()["ID"].as_str().unwrap().to_string();
    s.write("compose.yaml", &compose("2"));
    let plan = s.ok(&["up", "-d", "--dry-run"]).stdout;
    assert!(plan.contains("restart container eng-deprestart-app-1"), "{plan}");
    s.ok(&["up", "-d"]);
    let app = s.container("eng-deprestart-app-1").unwrap();
    assert_eq!(app["ID"].as_str().unwrap(), app_id, "kept, not recreated");
    s.wait_until(Duration::from_secs(5), "second start", |_| logs(&s, "app").matches("started").count() == 2);
}

#[test]
fn orphans_volume_cli_and_driver_opts_volumes() {
    let host_dir = tempfile::Builder::new().prefix("berth-bindvol-").tempdir().unwrap();
    std::fs::write(host_dir.path().join("from-host"), "hi\n").unwrap();
    let compose = |with_extra: bool| {
        let extra = if with_extra {
            "\n  extra:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]"
        } else {
            ""
        };
        yaml(
            19,
            &format!(
                r#"  app:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    volumes: [scratch:/scratch, hostdir:/hostdir]{extra}
volumes:
  scratch:
    driver_opts: {{type: tmpfs, o: "size=1m"}}
  hostdir:
    driver_opts: {{type: none, o: bind, device: "{}"}}"#,
                host_dir.path().display()
            ),
        )
    };
    let s = Stack::new("eng-orphans", &compose(true));
    s.ok(&["up", "-d"]);
    assert_eq!(s.exec("app", &["cat", "/hostdir/from-host"]).stdout, "hi\n");
    let df = s.exec("app", &["sh", "-c", "grep ' /scratch ' /proc/mounts"]).stdout;
    assert!(df.starts_with("tmpfs") && df.contains("size=1024k"), "{df}");
    // A service that left the file: warned about, kept, then removed on request.
    s.write("compose.yaml", &compose(false));
    let r = s.ok(&["up", "-d"]);
    assert!(r.stderr.contains("orphan container eng-orphans-extra-1"), "{}", r.stderr);
    assert!(s.container("eng-orphans-extra-1").is_some());
    s.ok(&["up", "-d", "--remove-orphans"]);
    assert!(s.container("eng-orphans-extra-1").is_none());
    // The volume commands.
    s.ok(&["volume", "create", "--label", "k=v", "loose"]);
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["volume", "inspect", "loose"]).stdout).unwrap();
    assert_eq!(inspect[0]["Labels"]["k"], "v");
    assert_eq!(inspect[0]["Driver"], "local");
    let r = s.berth(&["volume", "rm", "eng-orphans_scratch"]);
    assert!(!r.ok && r.stderr.contains("in use"), "{}", r.stderr);
    s.ok(&["volume", "rm", "loose"]);
    let r = s.berth(&["volume", "create", "--opt", "type=nfs", "bad"]);
    assert!(!r.ok && r.stderr.contains("volume bad"), "{}", r.stderr);
}

#[test]
fn exec_gets_a_terminal_when_stdin_is_one_and_not_with_dash_t() {
    use std::io::Read;
    use std::process::Stdio;
    let s = Stack::new(
        "eng-tty",
        &yaml(
            20,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]"#,
        ),
    );
    s.ok(&["up", "-d"]);
    let on_pty = |extra: &[&str]| -> String {
        let pty = nix::pty::openpty(None, None).unwrap();
        let mut args = vec!["exec"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "app",
            "sh",
            "-c",
            "if test -t 0 && test -t 1; then echo TTY-$TERM; else echo NO-TTY; fi",
        ]);
        let mut cmd = s.command(&args);
        cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave));
        let mut child = cmd.spawn().unwrap();
        let status = child.wait().unwrap();
        drop(cmd);
        // Everything written is in the master's buffer; read what is there without blocking.
        nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK)).unwrap();
        let mut out = Vec::new();
        let _ = std::fs::File::from(pty.master).read_to_end(&mut out);
        assert!(status.success(), "{}", String::from_utf8_lossy(&out));
        String::from_utf8_lossy(&out).into_owned()
    };
    let with = on_pty(&[]);
    assert!(with.contains("TTY-"), "{with}");
    let without = on_pty(&["-T"]);
    assert!(without.contains("NO-TTY"), "{without}");
}
