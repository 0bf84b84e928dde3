//! `berth watch` on real containers (as root, under the shared test lock): a host edit is in
//! the container within 500 ms, deletions follow, ignored files stay out, a burst of 100
//! changes restarts once, a rebuild reruns only the changed step and swaps the container, and
//! a failing rebuild keeps the old one.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod stack;
use stack::Stack;

/// A running `berth watch` whose output lines are collected.
struct Watching {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watching {
    fn start(stack: &Stack, args: &[&str]) -> Watching {
        let mut full = vec!["watch"];
        full.extend_from_slice(args);
        let mut child = stack.spawn(&full);
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let w = Watching { child, lines };
        w.wait_for("Watch enabled", Duration::from_secs(60));
        w
    }

    fn wait_for(&self, text: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            if let Some(l) = self.lines.lock().unwrap().iter().find(|l| l.contains(text)) {
                return l.clone();
            }
            assert!(
                Instant::now() < end,
                "no {text:?} in watch output:\n{}",
                self.lines.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn count(&self, text: &str) -> usize {
        self.lines.lock().unwrap().iter().filter(|l| l.contains(text)).count()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGINT,
        );
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn networks(subnet: &str) -> String {
    format!("networks:\n  default:\n    ipam:\n      config:\n        - subnet: {subnet}\n")
}

/// Polls the container until `cmd` succeeds with `want` as its output; returns how long.
fn until(stack: &Stack, cmd: &[&str], want: Option<&str>, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = stack.berth(&[&["exec", "-T", "app"], cmd].concat());
        match want {
            Some(w) if r.ok && r.stdout == w => return start.elapsed(),
            None if !r.ok => return start.elapsed(),
            _ => {}
        }
        assert!(
            start.elapsed() < limit,
            "{cmd:?} did not give {want:?} in {limit:?}: {} {}",
            r.stdout,
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sync_copies_edits_and_deletions_and_skips_ignored_files() {
    let yaml = format!(
        "services:\n  app:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n    init: true\n    develop:\n      watch:\n        - action: sync\n          path: ./src\n          target: /app/src\n          ignore: [\"*.tmp\"]\n{}",
        networks("10.245.2.0/24")
    );
    let stack = Stack::new("wawatch1", &yaml);
    let src = stack.project_dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let w = Watching::start(&stack, &[]);

    fs::write(src.join("a.txt"), "first").unwrap();
    let took = until(&stack, &["cat", "/app/src/a.txt"], Some("first"), Duration::from_secs(5));
    assert!(took < Duration::from_millis(500), "sync took {took:?}");
    fs::write(src.join("a.txt"), "second").unwrap();
    let took = until(&stack, &["cat", "/app/src/a.txt"], Some("second"), Duration::from_secs(5));
    assert!(took < Duration::from_millis(500), "sync took {took:?}");

    // A new folder with a file, an ignored file, then a deletion.
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/b.txt"), "bee").unwrap();
    fs::write(src.join("skip.tmp"), "no").unwrap();
    until(&stack, &["cat", "/app/src/sub/b.txt"], Some("bee"), Duration::from_secs(5));
    fs::remove_file(src.join("a.txt")).unwrap();
    until(&stack, &["cat", "/app/src/a.txt"], None, Duration::from_secs(5));
    assert!(!stack.exec("app", &["test", "-e", "/app/src/skip.tmp"]).ok, "an ignored file was copied");
    assert!(w.count("synced") >= 3, "{:?}", w.lines.lock().unwrap());
}

#[test]
fn sync_restart_restarts_once_for_a_burst() {
    let yaml = format!(
        "services:\n  app:\n    image: berth-test/busybox:latest\n    command: [\"sh\", \"-c\", \"echo up >> /starts; exec sleep 1000\"]\n    init: true\n    develop:\n      watch:\n        - action: sync+restart\n          path: ./conf\n          target: /conf\n{}",
        networks("10.245.3.0/24")
    );
    let stack = Stack::new("wawatch2", &yaml);
    let conf = stack.project_dir.join("conf");
    fs::create_dir_all(&conf).unwrap();
    let w = Watching::start(&stack, &[]);
    for i in 0..100 {
        fs::write(conf.join(format!("f{i}.conf")), format!("{i}")).unwrap();
    }
    w.wait_for("restarted", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(w.count("restarted"), 1, "{:?}", w.lines.lock().unwrap());
    assert_eq!(stack.exec("app", &["sh", "-c", "ls /conf | wc -l"]).stdout.trim(), "100");
    assert_eq!(stack.exec("app", &["cat", "/starts"]).stdout, "up\nup\n");
}

#[test]
fn rebuild_swaps_the_container_and_a_failed_build_keeps_it() {
    let yaml = format!(
        "services:\n  app:\n    build: ./app\n    command: [\"sleep\", \"1000\"]\n    init: true\n    develop:\n      watch:\n        - action: rebuild\n          path: ./app\n{}",
        networks("10.245.4.0/24")
    );
    let stack = Stack::new("wawatch3", &yaml);
    let app = stack.project_dir.join("app");
    fs::create_dir_all(&app).unwrap();
    fs::write(
        app.join("Dockerfile"),
        "FROM berth-test/busybox:latest\nRUN cat /proc/sys/kernel/random/uuid > /built\nCOPY msg /msg\n",
    )
    .unwrap();
    fs::write(app.join("msg"), "one").unwrap();
    let w = Watching::start(&stack, &[]);
    let id = |stack: &Stack| stack.container("wawatch3-app-1").unwrap()["ID"].as_str().unwrap().to_string();
    let first = id(&stack);
    let built = stack.exec("app", &["cat", "/built"]).stdout;

    fs::write(app.join("msg"), "two").unwrap();
    w.wait_for("rebuilt and recreated", Duration::from_secs(120));
    assert_eq!(stack.exec("app", &["cat", "/msg"]).stdout, "two");
    assert_eq!(stack.exec("app", &["cat", "/built"]).stdout, built, "the RUN step came from the cache");
    let second = id(&stack);
    assert_ne!(first, second, "the container was replaced");

    fs::write(app.join("Dockerfile"), "FROM berth-test/busybox:latest\nRUN exit 3\n").unwrap();
    let line = w.wait_for("rebuild failed", Duration::from_secs(120));
    assert!(line.contains("kept"), "{line}");
    assert_eq!(id(&stack), second, "the old container stays");
    assert_eq!(stack.exec("app", &["cat", "/msg"]).stdout, "two");
}

#[test]
fn up_watch_interleaves_logs_and_syncs_and_ctrl_c_stops_the_project() {
    let yaml = format!(
        "services:\n  app:\n    image: berth-test/busybox:latest\n    command: [\"sh\", \"-c\", \"echo hello from app; exec sleep 1000\"]\n    init: true\n    develop:\n      watch:\n        - action: sync\n          path: ./src\n          target: /app/src\n{}",
        networks("10.245.5.0/24")
    );
    let stack = Stack::new("wawatch4", &yaml);
    let src = stack.project_dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let mut child = stack.spawn(&["up", "--watch"]);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let collected = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            collected.lock().unwrap().push(line);
        }
    });
    let w = Watching { child, lines };
    w.wait_for("hello from app", Duration::from_secs(60));
    w.wait_for("Watch enabled", Duration::from_secs(30));
    fs::write(src.join("x"), "x").unwrap();
    until(&stack, &["cat", "/app/src/x"], Some("x"), Duration::from_secs(5));
    w.wait_for("synced", Duration::from_secs(5));
    let mut w = w;
    let pid = nix::unistd::Pid::from_raw(w.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::SIGINT).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while w.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < end, "up --watch did not end on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let c = stack.container("wawatch4-app-1").unwrap();
    assert_ne!(c["State"], "running", "{c}");
}

#[test]
fn sync_exec_runs_the_command_after_the_sync_with_its_user_environment_and_folder() {
    let yaml = format!(
        "services:\n  app:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n    init: true\n    develop:\n      watch:\n        - action: sync+exec\n          path: ./src\n          target: /app/src\n          exec:\n            command: [\"sh\", \"-c\", \"echo \\\"$$GREETING $$(id -u) $$(pwd) $$(cat a.txt)\\\" >> /tmp/ran\"]\n            user: nobody\n            working_dir: /app/src\n            environment:\n              GREETING: hi\n{}",
        networks("10.248.1.0/24")
    );
    let stack = Stack::new("wawatch5", &yaml);
    let src = stack.project_dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let w = Watching::start(&stack, &[]);
    fs::write(src.join("a.txt"), "first").unwrap();
    w.wait_for("ran \"sh", Duration::from_secs(10));
    // The command saw the synced file: it ran after the sync, as nobody, in working_dir.
    assert_eq!(stack.exec("app", &["cat", "/tmp/ran"]).stdout, "hi 65534 /app/src first\n");
    fs::write(src.join("a.txt"), "second").unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while stack.exec("app", &["cat", "/tmp/ran"]).stdout.lines().count() < 2 {
        assert!(Instant::now() < end, "{:?}", w.lines.lock().unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        stack.exec("app", &["cat", "/tmp/ran"]).stdout,
        "hi 65534 /app/src first\nhi 65534 /app/src second\n",
        "once per change"
    );
}

#[test]
fn initial_sync_copies_what_is_there_before_watching_starts() {
    let yaml = format!(
        "services:\n  app:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n    init: true\n    develop:\n      watch:\n        - action: sync\n          path: ./src\n          target: /app/src\n          initial_sync: true\n          ignore: [\"*.tmp\"]\n{}",
        networks("10.248.2.0/24")
    );
    let stack = Stack::new("wawatch6", &yaml);
    let src = stack.project_dir.join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), "early").unwrap();
    fs::write(src.join("sub/b.txt"), "bee").unwrap();
    fs::write(src.join("skip.tmp"), "no").unwrap();
    let _w = Watching::start(&stack, &[]);
    // Synced before "Watch enabled": no file event needed.
    assert_eq!(stack.exec("app", &["cat", "/app/src/a.txt"]).stdout, "early");
    assert_eq!(stack.exec("app", &["cat", "/app/src/sub/b.txt"]).stdout, "bee");
    assert!(!stack.exec("app", &["test", "-e", "/app/src/skip.tmp"]).ok, "an ignored file was copied");
}

#[test]
fn a_rename_on_the_host_moves_the_file_and_the_folder_in_the_container() {
    let yaml = format!(
        "services:\n  app:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n    init: true\n    develop:\n      watch:\n        - action: sync\n          path: ./src\n          target: /app/src\n{}",
        networks("10.248.3.0/24")
    );
    let stack = Stack::new("wawatch7", &yaml);
    let src = stack.project_dir.join("src");
    fs::create_dir_all(&src).unwrap();
    let _w = Watching::start(&stack, &[]);
    fs::write(src.join("old.txt"), "content").unwrap();
    fs::create_dir_all(src.join("dir")).unwrap();
    fs::write(src.join("dir/in.txt"), "inside").unwrap();
    until(&stack, &["cat", "/app/src/old.txt"], Some("content"), Duration::from_secs(5));
    until(&stack, &["cat", "/app/src/dir/in.txt"], Some("inside"), Duration::from_secs(5));

    fs::rename(src.join("old.txt"), src.join("new.txt")).unwrap();
    until(&stack, &["cat", "/app/src/new.txt"], Some("content"), Duration::from_secs(5));
    until(&stack, &["test", "-e", "/app/src/old.txt"], None, Duration::from_secs(5));

    fs::rename(src.join("dir"), src.join("moved")).unwrap();
    until(&stack, &["cat", "/app/src/moved/in.txt"], Some("inside"), Duration::from_secs(5));
    until(&stack, &["test", "-e", "/app/src/dir"], None, Duration::from_secs(5));
}
