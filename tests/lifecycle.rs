//! The lifecycle commands on real busybox containers: `run` (exit code, `--rm`, flags,
//! dependencies), `restart` keeping the container, `kill -s KILL` giving 137, `pause` and
//! `unpause` seen by `ps`, `wait` returning the exit code, `scale`, `rm -s -f -v`, `create`
//! then `start`, `down SERVICE`, and `up --wait` failing on a container that exited. Each
//! project has its own root, run dir and subnet (10.242.x.0/24); dropping a stack takes it
//! down.

mod stack;

use std::fs;
use std::time::Duration;

use stack::Stack;

/// A compose file on subnet 10.242.`net`.0/24 with `services` (YAML, indented two spaces).
fn compose(net: u8, services: &str) -> String {
    format!(
        "services:\n{services}networks:\n  default:\n    ipam:\n      config: [{{subnet: 10.242.{net}.0/24}}]\n"
    )
}

/// The names of every container record in the stack's root (one-offs too).
fn container_names(stack: &Stack) -> Vec<String> {
    let mut names = Vec::new();
    for e in fs::read_dir(stack.root().join("containers")).into_iter().flatten().flatten() {
        if let Ok(text) = fs::read_to_string(e.path().join("record.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            names.push(v["name"].as_str().unwrap_or_default().to_string());
        }
    }
    names.sort();
    names
}

fn state(stack: &Stack, name: &str) -> String {
    stack.container(name).map(|c| c["State"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
}

#[test]
fn run_returns_the_exit_code_starts_dependencies_and_rm_removes_the_container() {
    let yaml = compose(
        1,
        "  db:\n    image: berth-test/busybox:latest\n    command: [sleep, \"1000\"]\n    stop_grace_period: 1s\n  job:\n    image: berth-test/busybox:latest\n    depends_on: [db]\n    environment: {FROM_FILE: file}\n",
    );
    let stack = Stack::new("lc1", &yaml);
    let r = stack.berth(&["run", "--rm", "job", "sh", "-c", "echo out; echo err >&2; exit 5"]);
    assert_eq!(r.code, 5, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("out") && r.stderr.contains("err"), "{}\n{}", r.stdout, r.stderr);
    // The dependency runs; the one-off is gone.
    assert_eq!(state(&stack, "lc1-db-1"), "running");
    assert_eq!(container_names(&stack), ["lc1-db-1"]);

    // Flags reach the process; stdin is passed through.
    let mut child = stack
        .command(&[
            "run",
            "--rm",
            "-T",
            "-e",
            "X=1",
            "-w",
            "/tmp",
            "-u",
            "1000",
            "job",
            "sh",
            "-c",
            "read line; echo $X $FROM_FILE $(pwd) $(id -u) $line",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"from-stdin\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1 file /tmp 1000 from-stdin");

    // Without --rm the one-off stays, labelled and named as docker compose does.
    let r = stack.ok(&["run", "--no-deps", "job", "true"]);
    assert_eq!(r.code, 0);
    let names = container_names(&stack);
    let oneoff = names.iter().find(|n| n.starts_with("lc1-job-run-")).expect("one-off kept");
    assert_eq!(oneoff.len(), "lc1-job-run-".len() + 12, "{oneoff}");
    // As docker compose: `ps -a` lists one-offs too...
    assert!(stack.ps().iter().any(|c| c["Name"] == oneoff.as_str()));
    // Detached: prints the id and runs in the background.
    let r = stack.ok(&["run", "-d", "--name", "lc1-bg", "job", "sleep", "1000"]);
    assert_eq!(r.stdout.trim().len(), 64, "{}", r.stdout);
    assert!(container_names(&stack).contains(&"lc1-bg".to_string()));
    // ...and plain `ps` leaves them out, running ones included.
    let r = stack.ok(&["ps", "--format", "json"]);
    assert!(!r.stdout.contains("lc1-bg"), "{}", r.stdout);
    let r = stack.berth(&["run", "nope"]);
    assert!(!r.ok && r.stderr.contains("nope"), "{}", r.stderr);
}

#[test]
fn restart_kill_pause_and_wait_act_on_the_same_containers() {
    let yaml = compose(
        2,
        "  web:\n    image: berth-test/busybox:latest\n    command: [sleep, \"1000\"]\n    stop_grace_period: 1s\n  job:\n    image: berth-test/busybox:latest\n    command: [sh, -c, \"sleep 2; exit 3\"]\n",
    );
    let stack = Stack::new("lc2", &yaml);
    stack.ok(&["up", "-d"]);
    let id = stack.container("lc2-web-1").expect("web")["ID"].clone();

    // wait: the exit code of the service's container.
    let r = stack.berth(&["wait", "job"]);
    assert_eq!(r.code, 3, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("exited with status code 3"), "{}", r.stdout);

    // pause / unpause, seen by ps.
    stack.ok(&["pause", "web"]);
    assert_eq!(state(&stack, "lc2-web-1"), "paused");
    assert!(stack.container("lc2-web-1").unwrap()["Status"].as_str().unwrap().contains("(Paused)"));
    stack.ok(&["unpause", "web"]);
    assert_eq!(state(&stack, "lc2-web-1"), "running");
    assert_eq!(stack.exec("web", &["echo", "thawed"]).stdout.trim(), "thawed");

    // restart keeps the container.
    stack.ok(&["restart", "-t", "1", "web"]);
    let after = stack.container("lc2-web-1").expect("web");
    assert_eq!(after["ID"], id);
    assert_eq!(after["State"], "running");

    // A paused container can still be killed: SIGKILL is 137.
    stack.ok(&["pause", "web"]);
    stack.ok(&["kill", "-s", "KILL", "web"]);
    stack.wait_until(Duration::from_secs(10), "web killed", |ps| {
        ps.iter().any(|c| c["Name"] == "lc2-web-1" && c["State"] == "exited" && c["ExitCode"] == 137)
    });
    let r = stack.ok(&["kill", "web"]);
    assert!(r.stderr.contains("No container to kill") || r.stdout.contains("No container to kill"));
    let r = stack.berth(&["kill", "-s", "NOPE", "web"]);
    assert!(!r.ok && r.stderr.contains("NOPE"), "{}", r.stderr);
}

#[test]
fn scale_rm_create_start_and_down_service() {
    let yaml = compose(
        3,
        "  db:\n    image: berth-test/busybox:latest\n    command: [sleep, \"1000\"]\n    stop_grace_period: 1s\n  web:\n    image: berth-test/busybox:latest\n    command: [sleep, \"1000\"]\n    stop_grace_period: 1s\n    depends_on: [db]\n    volumes: [/data]\n  other:\n    image: berth-test/busybox:latest\n    command: [sleep, \"1000\"]\n    stop_grace_period: 1s\n",
    );
    let stack = Stack::new("lc3", &yaml);
    // create, then start.
    stack.ok(&["create", "web"]);
    assert_eq!(state(&stack, "lc3-web-1"), "created");
    assert_eq!(state(&stack, "lc3-db-1"), "created");
    stack.ok(&["start"]);
    assert_eq!(state(&stack, "lc3-web-1"), "running");

    // scale up and down.
    stack.ok(&["scale", "web=3"]);
    let webs = |s: &Stack| s.ps().iter().filter(|c| c["Service"] == "web" && c["State"] == "running").count();
    assert_eq!(webs(&stack), 3);
    stack.ok(&["scale", "web=1"]);
    assert_eq!(webs(&stack), 1);
    assert!(stack.container("lc3-web-1").is_some());

    // rm: nothing stopped; -s stops first; -v takes the anonymous volume.
    let r = stack.ok(&["rm", "-f", "web"]);
    assert!(r.stdout.contains("No stopped containers") || r.stderr.contains("No stopped"), "{}", r.stdout);
    let anon = |s: &Stack| s.ok(&["volume", "ls", "-q"]).stdout.lines().count();
    let before = anon(&stack);
    assert!(before >= 1);
    let r = stack.ok(&["rm", "-s", "-f", "-v", "web"]);
    assert!(r.stdout.contains("Going to remove lc3-web-1"), "{}", r.stdout);
    assert!(stack.container("lc3-web-1").is_none());
    assert_eq!(anon(&stack), before - 1);
    // Without -f, the question is asked on stdin (closed here: no).
    stack.ok(&["up", "-d", "other"]);
    stack.ok(&["stop", "other"]);
    let r = stack.ok(&["rm", "other"]);
    assert!(r.stdout.contains("Are you sure? [y/N]"), "{}", r.stdout);
    assert!(stack.container("lc3-other-1").is_some());

    // down SERVICE: db and web (its dependent) go, other stays, and so does the network.
    stack.ok(&["up", "-d"]);
    stack.ok(&["down", "db"]);
    let names: Vec<String> = stack.ps().iter().map(|c| c["Name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["lc3-other-1"]);
    assert!(stack.ok(&["network", "ls"]).stdout.contains("lc3_default"));
    assert_eq!(stack.exec("other", &["echo", "ok"]).stdout.trim(), "ok");
}

#[test]
fn up_wait_fails_on_a_container_that_exited() {
    let yaml = compose(
        4,
        "  bad:\n    image: berth-test/busybox:latest\n    command: [sh, -c, \"exit 4\"]\n  seed:\n    image: berth-test/busybox:latest\n    command: [\"true\"]\n  web:\n    image: berth-test/busybox:latest\n    command: [sleep, \"1000\"]\n    stop_grace_period: 1s\n    depends_on:\n      seed: {condition: service_completed_successfully}\n",
    );
    let stack = Stack::new("lc4", &yaml);
    let r = stack.berth(&["up", "-d", "--wait", "--wait-timeout", "30"]);
    assert!(!r.ok, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("lc4-bad-1") && r.stderr.contains("4"), "{}", r.stderr);
    // Without it, a one-shot a dependent waits for with exit 0 is fine.
    let r = stack.berth(&["up", "-d", "--wait", "--wait-timeout", "30", "web"]);
    assert!(r.ok, "{}\n{}", r.stdout, r.stderr);
}

/// The json-file log of the container named `name`, as (stream, text) pairs.
fn container_log(stack: &Stack, name: &str) -> Vec<(String, String)> {
    for e in fs::read_dir(stack.root().join("containers")).into_iter().flatten().flatten() {
        let record = fs::read_to_string(e.path().join("record.json")).unwrap_or_default();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&record) else { continue };
        if v["name"] != name {
            continue;
        }
        let text = fs::read_to_string(e.path().join("log")).unwrap_or_default();
        return text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
                (
                    v["stream"].as_str().unwrap_or_default().to_string(),
                    v["log"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
    }
    panic!("no container {name}: {:?}", container_names(stack))
}

#[test]
fn a_foreground_run_writes_its_output_to_the_caller_and_to_its_log() {
    // A service without dependencies, run before anything else made the project's network:
    // `run` makes it, as docker compose does.
    let lone = Stack::new(
        "cs-lone",
        "services:\n  job:\n    image: berth-test/busybox:latest\n\
         networks:\n  default:\n    ipam:\n      config: [{subnet: 10.249.3.0/24}]\n",
    );
    let r = lone.berth(&["run", "--rm", "-T", "job", "sh", "-c", "echo lone; exit 4"]);
    assert_eq!((r.code, r.stdout.as_str()), (4, "lone\n"), "{}", r.stderr);
    lone.ok(&["down"]);

    let stack = Stack::new(
        "cs-fg",
        "services:\n  db:\n    image: berth-test/busybox:latest\n    command: [sleep, \"1000\"]\n    stop_grace_period: 1s\n  job:\n    image: berth-test/busybox:latest\n    depends_on: [db]\n\
         networks:\n  default:\n    ipam:\n      config: [{subnet: 10.249.2.0/24}]\n",
    );
    // stdin is not a terminal here: no tty (as with -T), plain output on both streams.
    let script = "echo out; echo err >&2; [ -t 1 ] && echo tty || echo plain; read l; echo got $l; exit 3";
    let mut child = stack
        .command(&["run", "--name", "cs-fg-one", "job", "sh", "-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"line\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "{stdout}\n{stderr}");
    assert_eq!(stdout, "out\nplain\ngot line\n", "{stderr}");
    assert!(stderr.contains("err\n"), "{stderr}");
    let log = container_log(&stack, "cs-fg-one");
    let has = |stream: &str, text: &str| log.iter().any(|(s, l)| s == stream && l == text);
    assert!(has("stdout", "out\n") && has("stderr", "err\n") && has("stdout", "got line\n"), "{log:?}");

    // -T as well, and --interactive=false gives the process no stdin; the log has it all.
    let r =
        stack.berth(&["run", "-T", "--interactive=false", "--name", "cs-fg-two", "job", "sh", "-c", script]);
    assert_eq!((r.code, r.stdout.as_str()), (3, "out\nplain\ngot\n"), "{}", r.stderr);
    assert!(container_log(&stack, "cs-fg-two").iter().any(|(s, l)| s == "stdout" && l == "got\n"));
}
