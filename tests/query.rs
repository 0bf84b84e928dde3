//! The query commands on real containers, as docker compose's users and tools call them: `ps`
//! (its JSON fields and types, filters, templates), `ls`, `logs` (both streams, prefixes,
//! `--since`/`--until`, time order, `-f` across a restart), `exec` (`-e -w -u`, `-d`,
//! `--index`, exit codes), `-p NAME` without a compose file, `version`, completions, man pages
//! and the docker compose plug-in entry. Each test has its own root, project (`qy-*`) and
//! subnet (10.243.x.0/24).

mod stack;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stack::Stack;

fn yaml(subnet: u8, services: &str) -> String {
    format!(
        "services:\n{services}\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.243.{subnet}.0/24\n"
    )
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

#[test]
fn ps_prints_docker_compose_fields_filters_and_templates_and_ls_lists_the_project() {
    let s = Stack::new(
        "qy-ps",
        &yaml(
            1,
            r#"  web:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo up; exec sleep 1000"]
    ports: ["127.0.0.1:24301:80"]
    volumes: [data:/data]
  once:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "exit 3"]
volumes:
  data: {}"#,
        ),
    );
    s.ok(&["up", "-d"]);
    s.wait_until(Duration::from_secs(20), "once to exit", |ps| {
        ps.iter().any(|c| c["Service"] == "once" && c["State"] == "exited")
    });
    // Without -a: running containers only, one JSON object per line.
    let running = json_lines(&s.ok(&["ps", "--format", "json"]).stdout);
    assert_eq!(running.len(), 1, "{running:#?}");
    let web = &running[0];
    let keys: Vec<&String> = web.as_object().unwrap().keys().collect();
    for k in [
        "Command",
        "CreatedAt",
        "ExitCode",
        "Health",
        "ID",
        "Image",
        "Labels",
        "LocalVolumes",
        "Mounts",
        "Name",
        "Names",
        "Networks",
        "Ports",
        "Project",
        "Publishers",
        "RunningFor",
        "Service",
        "Size",
        "State",
        "Status",
    ] {
        assert!(keys.iter().any(|x| *x == k), "no {k} in {web:#?}");
    }
    assert_eq!(web["ID"].as_str().unwrap().len(), 12);
    assert_eq!(web["Name"], "qy-ps-web-1");
    assert_eq!(web["Names"], "qy-ps-web-1");
    assert_eq!(web["Image"], "berth-test/busybox:latest");
    assert_eq!(web["Command"], "\"sh -c echo up; exec…\"");
    assert_eq!((web["Project"].as_str(), web["Service"].as_str()), (Some("qy-ps"), Some("web")));
    assert_eq!(
        (web["State"].as_str(), web["Health"].as_str(), web["ExitCode"].as_i64()),
        (Some("running"), Some(""), Some(0))
    );
    assert!(web["Status"].as_str().unwrap().starts_with("Up "), "{web}");
    assert!(web["RunningFor"].as_str().unwrap().ends_with(" ago"), "{web}");
    let created = web["CreatedAt"].as_str().unwrap();
    let parts: Vec<&str> = created.split(' ').collect();
    assert!(
        parts.len() == 4 && parts[0].len() == 10 && parts[1].len() == 8 && parts[2].len() == 5,
        "{created}"
    );
    assert_eq!(
        web["Publishers"],
        serde_json::json!([{"URL": "127.0.0.1", "TargetPort": 80, "PublishedPort": 24301, "Protocol": "tcp"}])
    );
    assert_eq!(web["Ports"], "127.0.0.1:24301->80/tcp");
    assert!(web["Labels"].as_str().unwrap().contains("com.docker.compose.project=qy-ps"), "{web}");
    assert_eq!((web["LocalVolumes"].as_str(), web["Mounts"].as_str()), (Some("1"), Some("qy-ps_data")));
    assert_eq!(web["Networks"], "qy-ps_default");
    assert!(web["Size"].as_str().unwrap().ends_with('B'), "{web}");
    // Go's encoder escapes '>' as docker compose's output has it.
    assert!(s.ok(&["ps", "--format", "json"]).stdout.contains(r#"24301-\u003e80/tcp"#));
    let full = json_lines(&s.ok(&["ps", "--no-trunc", "--format", "json"]).stdout);
    assert_eq!(full[0]["ID"].as_str().unwrap().len(), 64);
    // -q prints full ids, as docker compose does.
    assert_eq!(s.ok(&["ps", "-q"]).stdout.trim(), full[0]["ID"].as_str().unwrap());

    let all = json_lines(&s.ok(&["ps", "-a", "--format", "json"]).stdout);
    let once = all.iter().find(|c| c["Service"] == "once").expect("once in ps -a");
    assert_eq!((once["State"].as_str(), once["ExitCode"].as_i64()), (Some("exited"), Some(3)));
    assert!(once["Status"].as_str().unwrap().starts_with("Exited (3) "), "{once}");
    let names = |args: &[&str]| -> Vec<String> {
        let mut a = args.to_vec();
        a.extend(["--format", "{{.Name}}"]);
        s.ok(&a).stdout.lines().map(str::to_string).collect()
    };
    assert_eq!(names(&["ps", "--filter", "status=exited"]), ["qy-ps-once-1"]);
    assert_eq!(names(&["ps", "--status", "running"]), ["qy-ps-web-1"]);
    assert_eq!(names(&["ps", "-a"]), ["qy-ps-once-1", "qy-ps-web-1"]);
    assert_eq!(names(&["ps", "-a", "--filter", "source=image"]), ["qy-ps-once-1", "qy-ps-web-1"]);
    assert!(names(&["ps", "-a", "--filter", "source=build"]).is_empty());
    assert_eq!(s.ok(&["ps", "-a", "--services"]).stdout, "once\nweb\n");
    let table = s.ok(&["ps", "-a", "--format", "table {{.Name}}\t{{.State}}"]).stdout;
    assert_eq!(table, "NAME           STATE\nqy-ps-once-1   exited\nqy-ps-web-1    running\n");
    let default = s.ok(&["ps"]).stdout;
    assert!(default.starts_with("NAME ") && default.contains("127.0.0.1:24301->80/tcp"), "{default}");
    let bad = s.berth(&["ps", "--filter", "colour=red"]);
    assert!(!bad.ok && bad.stderr.contains("unknown filter colour"), "{}", bad.stderr);

    // ls: the project with its running containers counted, and its compose file.
    let file = s.project_dir.join("compose.yaml").display().to_string();
    let ls: Value = serde_json::from_str(&s.ok(&["ls", "--format", "json"]).stdout).unwrap();
    let me = ls.as_array().unwrap().iter().find(|p| p["Name"] == "qy-ps").expect("qy-ps in ls");
    assert_eq!(me, &serde_json::json!({"Name": "qy-ps", "Status": "running(1)", "ConfigFiles": file}));
    let ls_all: Value = serde_json::from_str(&s.ok(&["ls", "-a", "--format", "json"]).stdout).unwrap();
    assert_eq!(ls_all[0]["Status"], "exited(1), running(1)");
    assert_eq!(s.ok(&["ls", "-q", "--filter", "name=^qy-p"]).stdout, "qy-ps\n");
    assert_eq!(s.ok(&["ls", "-q", "--filter", "name=nomatch"]).stdout, "");
    let table = s.ok(&["ls"]).stdout;
    assert!(table.starts_with("NAME                STATUS              CONFIG FILES\nqy-ps "), "{table}");
}

/// Reads a child's standard output lines on a thread.
fn lines_of(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `text`, collecting what came; panics after `limit`.
fn wait_line(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, text: &str, limit: Duration) {
    let end = Instant::now() + limit;
    while !seen.iter().any(|l| l.contains(text)) {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {text:?} in {seen:#?}"),
        }
    }
}

#[test]
fn logs_show_both_streams_in_time_order_with_since_until_and_follow_across_a_restart() {
    let s = Stack::new(
        "qy-logs",
        &yaml(
            2,
            r#"  a:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo a-first; sleep 1; echo a-second; sleep 0.3; echo a-err >&2; exec sleep 1000"]
  b:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "sleep 0.5; echo b-middle; exec sleep 1000"]"#,
        ),
    );
    s.ok(&["up", "-d"]);
    s.wait_until(Duration::from_secs(20), "a's output", |_| s.ok(&["logs", "a"]).stdout.contains("a-err"));
    // Both streams, prefixed, the services' lines in time order.
    let text = s.ok(&["logs", "--no-color"]).stdout;
    let order: Vec<&str> = text.lines().filter_map(|l| l.split(" | ").nth(1)).collect();
    assert_eq!(order, ["a-first", "b-middle", "a-second", "a-err"], "{text}");
    assert!(text.lines().all(|l| l.starts_with("a-1 | ") || l.starts_with("b-1 | ")), "{text}");
    let bare = s.ok(&["logs", "--no-log-prefix", "a"]).stdout;
    assert_eq!(bare, "a-first\na-second\na-err\n");
    assert_eq!(s.ok(&["logs", "--no-log-prefix", "--tail", "1", "a"]).stdout, "a-err\n");
    assert_eq!(s.ok(&["logs", "--no-log-prefix", "--index", "1", "b"]).stdout, "b-middle\n");
    let stamped = s.ok(&["logs", "--no-log-prefix", "-t", "b"]).stdout;
    assert!(stamped.starts_with("20") && stamped.trim_end().ends_with("Z b-middle"), "{stamped}");
    // --since and --until: relative, and RFC 3339 taken from the log itself.
    assert_eq!(s.ok(&["logs", "--no-log-prefix", "--since", "1h", "b"]).stdout, "b-middle\n");
    assert_eq!(s.ok(&["logs", "--no-log-prefix", "--until", "1h", "b"]).stdout, "");
    let b_time = stamped.split(' ').next().unwrap().to_string();
    let after_b = s.ok(&["logs", "--no-log-prefix", "--since", &b_time, "a"]).stdout;
    assert_eq!(after_b, "a-second\na-err\n");
    let before_b = s.ok(&["logs", "--no-log-prefix", "--until", &b_time, "a"]).stdout;
    assert_eq!(before_b, "a-first\n");
    let bad = s.berth(&["logs", "--since", "yesterday"]);
    assert!(!bad.ok && bad.stderr.contains("--since \"yesterday\""), "{}", bad.stderr);

    // -f keeps following when the container is stopped and started again.
    let mut follower = s.spawn(&["logs", "-f", "--no-color", "b"]);
    let rx = lines_of(&mut follower);
    let mut seen = Vec::new();
    wait_line(&rx, &mut seen, "b-middle", Duration::from_secs(10));
    s.ok(&["stop", "-t", "0", "b"]);
    s.ok(&["start", "b"]);
    std::thread::sleep(Duration::from_millis(700));
    let end = Instant::now() + Duration::from_secs(10);
    while seen.iter().filter(|l| l.contains("b-middle")).count() < 2 && Instant::now() < end {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    assert_eq!(seen.iter().filter(|l| l.contains("b-middle")).count(), 2, "{seen:#?}");
    assert!(follower.try_wait().unwrap().is_none(), "logs -f still follows");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(follower.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = follower.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Once everything stopped for good, -f ends by itself.
    s.ok(&["stop", "-t", "0"]);
    let started = Instant::now();
    let r = s.ok(&["logs", "-f", "b"]);
    assert!(started.elapsed() < Duration::from_secs(10), "logs -f of stopped containers returned");
    assert_eq!(r.stdout.matches("b-middle").count(), 2, "{}", r.stdout);
}

#[test]
fn exec_passes_env_workdir_user_index_detach_and_the_exit_code() {
    let s = Stack::new(
        "qy-exec",
        &yaml(
            3,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    scale: 2"#,
        ),
    );
    s.ok(&["up", "-d"]);
    let r = s.berth(&[
        "exec",
        "-T",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "app",
        "sh",
        "-c",
        "echo $A; pwd; id -u; exit 7",
    ]);
    assert_eq!((r.code, r.stdout.as_str()), (7, "1\n/tmp\n65534\n"), "{}", r.stderr);
    let r = s.berth(&["exec", "-T", "app", "sh", "-c", "echo to-err >&2; false"]);
    assert_eq!((r.code, r.stderr.as_str()), (1, "to-err\n"));
    // --index picks the replica; the default is the first.
    let host = |args: &[&str]| {
        let mut a = vec!["exec", "-T"];
        a.extend_from_slice(args);
        a.extend(["app", "hostname"]);
        s.ok(&a).stdout
    };
    assert_ne!(host(&["--index", "2"]), host(&["--index", "1"]));
    assert_eq!(host(&[]), host(&["--index", "1"]));
    let r = s.berth(&["exec", "-T", "--index", "3", "app", "true"]);
    assert!(!r.ok && r.stderr.contains("not running container #3"), "{}", r.stderr);
    // The legacy spellings docker compose accepts.
    s.ok(&["exec", "--no-TTY", "-i", "app", "true"]);
    // -d returns at once; the command runs on.
    let started = Instant::now();
    s.ok(&["exec", "-d", "app", "sh", "-c", "sleep 1; touch /tmp/detached"]);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(!s.exec("app", &["test", "-f", "/tmp/detached"]).ok);
    let end = Instant::now() + Duration::from_secs(10);
    while !s.exec("app", &["test", "-f", "/tmp/detached"]).ok {
        assert!(Instant::now() < end, "the detached exec never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_project_is_found_by_name_without_its_compose_file() {
    let s = Stack::new(
        "qy-byname",
        &yaml(
            4,
            r#"  db:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo db-ready; exec sleep 1000"]
  web:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo web-ready; exec sleep 1000"]
    ports: ["127.0.0.1:24302:80"]
    depends_on: [db]"#,
        ),
    );
    s.ok(&["up", "-d"]);
    let elsewhere = s.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let run = |env_name: bool, args: &[&str]| {
        let mut cmd = s.bare_command(Path::new(env!("CARGO_BIN_EXE_berth")), &elsewhere);
        if env_name {
            cmd.env("COMPOSE_PROJECT_NAME", "qy-byname");
        } else {
            cmd.args(["-p", "qy-byname"]);
        }
        let out = cmd.args(args).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        assert!(out.status.success(), "berth {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let ps = json_lines(&run(false, &["ps", "--format", "json"]));
    assert_eq!(ps.len(), 2, "{ps:#?}");
    assert_eq!(ps[1]["Image"], "berth-test/busybox:latest");
    assert_eq!(run(true, &["ps", "--services"]), "db\nweb\n");
    assert!(run(false, &["logs", "--no-log-prefix", "web"]).contains("web-ready"));
    assert_eq!(run(true, &["port", "web", "80"]), "127.0.0.1:24302\n");
    assert_eq!(run(false, &["exec", "-T", "web", "echo", "inside"]), "inside\n");
    run(false, &["stop", "-t", "0"]);
    assert!(run(false, &["ps", "-q"]).is_empty());
    run(true, &["start"]);
    let states: Vec<Value> = json_lines(&run(false, &["ps", "--format", "json"]));
    assert!(states.iter().all(|c| c["State"] == "running") && states.len() == 2, "{states:#?}");
    // restart too: the same containers, started a third time.
    let ids = run(false, &["ps", "-q"]);
    run(true, &["restart", "-t", "0", "web"]);
    assert_eq!(run(false, &["ps", "-q"]), ids);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while run(false, &["logs", "--no-log-prefix", "web"]).matches("web-ready").count() < 3 {
        assert!(std::time::Instant::now() < end, "web not started again");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let missing = s
        .bare_command(Path::new(env!("CARGO_BIN_EXE_berth")), &elsewhere)
        .args(["-p", "qy-byname", "start", "nosuch"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no such service: nosuch"));
    run(false, &["down", "-t", "0"]);
    assert!(run(false, &["ps", "-a", "-q"]).is_empty());
}

#[test]
fn version_completions_man_pages_and_the_docker_compose_plugin_entry() {
    let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
    let berth = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().unwrap();
        assert!(out.status.success(), "berth {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A docker compose 2 version where tools look for it, berth's own in the long form.
    let version = berth(&["version", "--short"]).trim_end().to_string();
    assert!(version.starts_with("2.") && version.split('.').count() == 3, "{version}");
    let long = format!("Docker Compose version v{version} (berth v{})\n", env!("CARGO_PKG_VERSION"));
    assert_eq!(berth(&["version"]), long);
    assert_eq!(berth(&["--version"]), long);
    assert_eq!(berth(&["-v"]), long);
    let json: Value = serde_json::from_str(&berth(&["version", "--format", "json"])).unwrap();
    assert_eq!(json["version"], format!("v{version}"));
    for shell in ["bash", "zsh", "fish"] {
        let script = berth(&["completion", shell]);
        assert!(script.contains("berth") && script.contains("no-log-prefix"), "{shell}");
    }
    assert!(berth(&["man"]).contains(".TH berth"));
    let pages = dir.path().join("man");
    berth(&["man", "--dir", pages.to_str().unwrap()]);
    assert!(pages.join("berth.1").exists() && pages.join("berth-logs.1").exists());

    // As the docker CLI's plug-in: the handshake, then `docker-compose compose ARGS`.
    let plugins = dir.path().join("docker/cli-plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let plugin = plugins.join("docker-compose");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), &plugin).unwrap();
    let meta = Command::new(&plugin).arg("docker-cli-plugin-metadata").output().unwrap();
    let meta: Value = serde_json::from_slice(&meta.stdout).unwrap();
    assert_eq!((meta["SchemaVersion"].as_str(), meta["Vendor"].as_str()), (Some("0.1.0"), Some("berth")));
    assert_eq!(meta["Version"], format!("v{version}"));
    let as_plugin = Command::new(&plugin).args(["compose", "version", "--short"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&as_plugin.stdout), format!("{version}\n"));
    let standalone = Command::new(&plugin).args(["version", "--short"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&standalone.stdout), format!("{version}\n"));
    // And through the docker CLI itself, where one is installed.
    if let Ok(out) = Command::new("docker")
        .args(["compose", "version"])
        .env("DOCKER_CONFIG", dir.path().join("docker"))
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout), long, "{out:?}");
    }
}

#[test]
fn logs_leave_out_one_off_containers_and_orphans_as_docker_compose_does() {
    let s = Stack::new(
        "qy-oneoff",
        &yaml(
            22,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo from-app; exec sleep 1000"]
  gone:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo from-gone; exec sleep 1000"]"#,
        ),
    );
    s.ok(&["up", "-d"]);
    // A one-off of the same service, kept (no --rm), and one running detached.
    s.ok(&["run", "-T", "--name", "qy-oneoff-once", "app", "echo", "from-oneoff"]);
    s.ok(&["run", "-d", "--name", "qy-oneoff-bg", "app", "sh", "-c", "echo from-bg; exec sleep 1000"]);
    // `gone` leaves the compose file: its container is an orphan.
    s.write(
        "compose.yaml",
        &yaml(
            22,
            r#"  app:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "echo from-app; exec sleep 1000"]"#,
        ),
    );
    let end = Instant::now() + Duration::from_secs(10);
    while !s.ok(&["logs", "--no-log-prefix", "app"]).stdout.contains("from-app") {
        assert!(Instant::now() < end, "no output from app");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    for args in [&["logs"][..], &["logs", "app"]] {
        let out = s.ok(args).stdout;
        assert!(out.contains("from-app"), "{args:?}: {out}");
        assert!(!out.contains("from-oneoff") && !out.contains("from-bg"), "{args:?}: {out}");
        assert!(!out.contains("from-gone"), "{args:?}: {out}");
    }
    // By name alone (no compose file): every container of the project but the one-offs.
    let elsewhere = s.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let out = s
        .bare_command(Path::new(env!("CARGO_BIN_EXE_berth")), &elsewhere)
        .args(["-p", "qy-oneoff", "logs"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.contains("from-app") && out.contains("from-gone"), "{out}");
    assert!(!out.contains("from-oneoff") && !out.contains("from-bg"), "{out}");
    // Following: a one-off started meanwhile is not joined; a service's container is.
    let mut follow = s.command(&["logs", "-f"]).stdout(Stdio::piped()).spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    s.ok(&["run", "-T", "--rm", "app", "echo", "from-later-oneoff"]);
    s.ok(&["restart", "-t", "0", "app"]);
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    while seen.iter().filter(|l: &&String| l.contains("from-app")).count() < 2 {
        assert!(Instant::now() < end, "{seen:?}");
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            seen.push(l);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(!seen.iter().any(|l| l.contains("oneoff") || l.contains("from-bg")), "{seen:?}");
    s.ok(&["down", "-t", "0", "--remove-orphans"]);
}

#[test]
fn docker_compose_v1_command_lines_work_as_docker_compose_v2_takes_them() {
    let s = Stack::new(
        "qy-v1",
        &yaml(
            24,
            "  app:\n    image: berth-test/busybox:latest\n    command: [\"sh\", \"-c\", \"echo v1-ready; exec sleep 1000\"]",
        ),
    );
    // berth as the standalone `docker-compose`.
    let bin = s.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_berth"), bin.join("docker-compose")).unwrap();
    let compose = |args: &[&str]| {
        let out = s
            .bare_command(&bin.join("docker-compose"), &s.project_dir)
            .args(args)
            .env_remove("COMPOSE_ANSI")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
    };
    // What v1-era scripts send: the docker CLI's flags first, --no-ansi, --compatibility.
    let (code, _, err) = compose(&[
        "--no-ansi",
        "-H",
        "unix:///var/run/docker.sock",
        "--compatibility",
        "-p",
        "qy-v1",
        "up",
        "--build",
        "-d",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("option '--no-ansi' is DEPRECATED"), "{err}");
    // Compatibility mode: v1's names.
    let (code, names, err) = compose(&["-p", "qy-v1", "ps", "-a", "--format", "{{.Name}}"]);
    assert_eq!((code, names.as_str()), (0, "qy-v1_app_1\n"), "{err}");
    let (_, logs, _) = compose(&["--verbose", "-p", "qy-v1", "logs", "--no-color"]);
    assert!(logs.contains("app_1") && logs.contains("| v1-ready"), "{logs}");
    // A Docker daemon elsewhere is refused with the reason; --no-ansi with --ansi too.
    let (code, _, err) = compose(&["-H", "tcp://127.0.0.1:2375", "-p", "qy-v1", "ps"]);
    assert!(code == 1 && err.contains("without a Docker daemon"), "{code} {err}");
    let (code, _, err) = compose(&["--no-ansi", "--ansi", "always", "-p", "qy-v1", "ps"]);
    assert!(code == 1 && err.contains("--no-ansi"), "{code} {err}");
    let (code, _, err) = compose(&["-p", "qy-v1", "down", "-t", "0"]);
    assert_eq!(code, 0, "{err}");
}
