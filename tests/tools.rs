//! `top`, `stats` and `events` on real busybox containers: top lists the container's process,
//! `stats --no-stream --format json` matches the cgroup's own figures, `events --json` sees
//! a container's start, kill, die, stop and destroy as they happen. Each test has its own
//! root, run dir, project (`tl-*`) and subnet (10.246.x.0/24).

mod stack;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stack::Stack;

fn yaml(subnet: u8, services: &str) -> String {
    format!(
        "services:\n{services}\nnetworks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.246.{subnet}.0/24\n"
    )
}

/// The folder of container `id`'s cgroup that holds `ctrl`'s files (v1 or v2).
fn cgroup_dir(id: &str, ctrl: &str) -> PathBuf {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        root.join("berth").join(id)
    } else {
        root.join(ctrl).join("berth").join(id)
    }
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A go-units size (`1.5MiB`, `64MiB`, `0B`) in bytes.
fn size(text: &str) -> f64 {
    let units = [("KiB", 1024.0), ("MiB", 1048576.0), ("GiB", 1073741824.0), ("B", 1.0)];
    for (unit, scale) in units {
        if let Some(n) = text.strip_suffix(unit) {
            return n.parse::<f64>().expect("size") * scale;
        }
    }
    panic!("not a size: {text}")
}

#[test]
fn top_lists_the_container_process() {
    let s = Stack::new(
        "tl-top",
        &yaml(
            1,
            "  web:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1001\"]\n  idle:\n    image: berth-test/busybox:latest\n    command: [\"sh\", \"-c\", \"exit 0\"]",
        ),
    );
    s.ok(&["up", "-d"]);
    let out = s.ok(&["top"]).stdout;
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().expect("a header").split_whitespace().collect();
    assert_eq!(header, ["SERVICE", "#", "UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"], "{out}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    // The exited service has no process; the running one has its sleep, as the host sees it.
    assert_eq!(rows.len(), 1, "{out}");
    let row = &rows[0];
    assert_eq!(&row[..3], ["web", "1", "root"], "{out}");
    assert_eq!(&row[9..], ["sleep", "1001"], "{out}");
    assert_eq!(row[7], "?", "{out}");
    let pid = row[3];
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the pid is the host's");
    assert_eq!(cmdline, b"sleep\x001001\x00");
    assert_eq!(s.ok(&["top", "web"]).stdout, out);
    // Only the project's services; nothing for a service without a running container.
    assert!(s.ok(&["top", "idle"]).stdout.is_empty());
    let r = s.berth(&["top", "nope"]);
    assert!(!r.ok && r.stderr.contains("no such service: nope"), "{}", r.stderr);
}

#[test]
fn stats_no_stream_json_matches_the_cgroup() {
    let s = Stack::new(
        "tl-stats",
        &yaml(
            2,
            "  web:\n    image: berth-test/busybox:latest\n    mem_limit: 64m\n    command: [\"sh\", \"-c\", \"sleep 1000 & sleep 1000 & wait\"]",
        ),
    );
    s.ok(&["up", "-d"]);
    let r = s.ok(&["stats", "--no-stream", "--no-trunc", "--format", "json"]);
    let lines: Vec<serde_json::Value> =
        r.stdout.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(lines.len(), 1, "{}", r.stdout);
    let e = &lines[0];
    let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["BlockIO", "CPUPerc", "Container", "ID", "MemPerc", "MemUsage", "Name", "NetIO", "PIDs"]
    );
    assert_eq!(e["Name"], "tl-stats-web-1");
    let id = e["ID"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert_eq!(e["Container"], &id[..12]);
    // sh and its two sleeps.
    assert_eq!(e["PIDs"], "3");
    assert_eq!(e["PIDs"], read_number(&cgroup_dir(id, "pids").join("pids.current")).to_string());
    let mem = e["MemUsage"].as_str().unwrap();
    let (usage, limit) = mem.split_once(" / ").expect("usage / limit");
    assert_eq!(limit, "64MiB");
    // The cgroup's own figure now, without its inactive file cache as docker counts it.
    let dir = cgroup_dir(id, "memory");
    let own = if dir.join("memory.current").exists() {
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap();
        let inactive =
            stat.lines().find_map(|l| l.strip_prefix("inactive_file ")).map_or(0, |v| v.parse().unwrap());
        read_number(&dir.join("memory.current")).saturating_sub(inactive)
    } else {
        let stat = std::fs::read_to_string(dir.join("memory.stat")).unwrap();
        let inactive = stat
            .lines()
            .find_map(|l| l.strip_prefix("total_inactive_file "))
            .map_or(0, |v| v.parse().unwrap());
        read_number(&dir.join("memory.usage_in_bytes")).saturating_sub(inactive)
    } as f64;
    let shown = size(usage);
    assert!(own > 0.0 && (shown - own).abs() <= own * 0.05 + 65536.0, "shown {usage}, cgroup {own}");
    let perc: f64 = e["MemPerc"].as_str().unwrap().trim_end_matches('%').parse().unwrap();
    assert!((perc - shown / (64.0 * 1048576.0) * 100.0).abs() < 0.02, "{perc}");
    assert!(e["CPUPerc"].as_str().unwrap().ends_with('%'));
    // The default table: docker's columns; -a shows the stopped container too, zeroed.
    let table = s.ok(&["stats", "--no-stream"]).stdout;
    assert!(table.starts_with("CONTAINER ID   NAME "), "{table}");
    assert!(table.contains("MEM USAGE / LIMIT") && table.contains(&id[..12]), "{table}");
    s.ok(&["stop", "-t", "0"]);
    assert!(s.ok(&["stats", "--no-stream", "--format", "{{.Name}}"]).stdout.is_empty());
    let all = s.ok(&["stats", "--no-stream", "-a", "--format", "{{.Name}} {{.MemUsage}} {{.PIDs}}"]).stdout;
    assert_eq!(all, "tl-stats-web-1 0B / 0B 0\n");
    let r = s.berth(&["stats", "--no-stream", "--format", "{{.Name"]);
    assert!(!r.ok && r.stderr.contains("stats --format"), "{}", r.stderr);
}

#[test]
fn events_json_sees_start_and_die_as_they_happen() {
    let s = Stack::new(
        "tl-events",
        &yaml(
            3,
            "  web:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n    labels: {team: core}",
        ),
    );
    let mut child = s.spawn(&["events", "--json"]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // `events` started before the project has a log: it follows the log once it exists.
    std::thread::sleep(Duration::from_millis(300));
    s.ok(&["up", "-d"]);
    s.ok(&["stop", "-t", "1"]);
    let mut events: Vec<serde_json::Value> = Vec::new();
    let end = Instant::now() + Duration::from_secs(20);
    while !events.iter().any(|e| e["action"] == "stop") && Instant::now() < end {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            events.push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
    }
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::SIGINT);
    let status = child.wait().unwrap();
    assert!(status.success(), "events ended with {status}");
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for (a, b) in [("create", "start"), ("start", "kill"), ("kill", "die"), ("die", "stop")] {
        let (Some(x), Some(y)) = (actions.iter().position(|x| *x == a), actions.iter().position(|x| *x == b))
        else {
            panic!("{a} or {b} missing: {actions:?}");
        };
        assert!(x < y, "{a} after {b}: {actions:?}");
    }
    let die = events.iter().find(|e| e["action"] == "die").unwrap();
    assert_eq!(die["type"], "container");
    assert_eq!(die["service"], "web");
    assert_eq!(die["id"].as_str().unwrap().len(), 64);
    assert_eq!(die["attributes"]["name"], "tl-events-web-1");
    assert_eq!(die["attributes"]["image"], "berth-test/busybox:latest");
    assert_eq!(die["attributes"]["team"], "core");
    // SIGTERM is ignored by a pid 1 without a handler: the stop's SIGKILL ends it.
    assert_eq!(die["attributes"]["exitCode"], "137");
    assert!(die["attributes"].get("com.docker.compose.project").is_none());
    let kill = events.iter().find(|e| e["action"] == "kill").unwrap();
    assert_eq!(kill["attributes"]["signal"], "15");
    assert!(die["time"].as_str().unwrap().contains('T'));
    // The past, as text, without following (`--until` now), for one service.
    let text = s.ok(&["events", "--since", "10m", "--until", "0s", "web"]).stdout;
    let first = text.lines().next().unwrap_or_default();
    assert!(first.contains(" container create ") && first.contains("name=tl-events-web-1"), "{text}");
    assert!(text.contains(" container die ") && text.contains("exitCode=137"), "{text}");
    // `down` takes the log with the project.
    s.ok(&["down"]);
    assert!(!s.run_dir().join("projects").join("tl-events").exists());
}

#[test]
fn events_see_pause_and_unpause() {
    let s = Stack::new(
        "tl-pause-ev",
        "services:\n  web:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n\
         networks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.249.1.0/24\n",
    );
    s.ok(&["up", "-d"]);
    s.ok(&["pause", "web"]);
    s.ok(&["unpause", "web"]);
    let out = s.ok(&["events", "--json", "--since", "10m", "--until", "0s"]).stdout;
    let events: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let actions: Vec<&str> = events.iter().map(|e| e["action"].as_str().unwrap()).collect();
    let at = |a: &str| actions.iter().position(|x| *x == a).unwrap_or_else(|| panic!("no {a}: {actions:?}"));
    assert!(at("start") < at("pause") && at("pause") < at("unpause"), "{actions:?}");
    let pause = &events[at("pause")];
    assert_eq!(pause["service"], "web");
    assert_eq!(pause["attributes"]["name"], "tl-pause-ev-web-1");
    // Nothing to pause: no event.
    s.ok(&["unpause", "web"]);
    let again = s.ok(&["events", "--json", "--since", "10m", "--until", "0s"]).stdout;
    assert_eq!(again.lines().filter(|l| l.contains("\"unpause\"")).count(), 1, "{again}");
}
