//! `attach` and foreground `run` on real busybox containers (as root, under the shared test
//! lock): live output, stdin reaching the process, the detach keys leaving the container
//! running, the exit code of a process that ends while attached, Ctrl-C passed on, a
//! container's terminal relayed to a caller's terminal (a pty of the test's) with its size
//! passed on and its output logged, and readers that do not read never stalling the
//! container. Subnets 10.243.x.0/24.

mod stack;

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stack::Stack;

const IMAGE: &str = "berth-test/busybox:latest";

fn compose(net: u8, services: &str) -> String {
    format!(
        "services:\n{services}networks:\n  default:\n    ipam:\n      config: [{{subnet: 10.243.{net}.0/24}}]\n"
    )
}

/// Everything read from `from` so far, filled by a thread.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    seen
}

fn text(seen: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&seen.lock().unwrap()).into_owned()
}

/// Waits until what was read contains `want`.
fn wait_for(seen: &Arc<Mutex<Vec<u8>>>, want: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    while !text(seen).contains(want) {
        assert!(Instant::now() < end, "no {want:?} in {:?}", text(seen));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the child's end; its exit code.
fn exit_code(child: &mut Child) -> i32 {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("berth did not end");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn state(stack: &Stack, name: &str) -> String {
    stack.container(name).map(|c| c["State"].as_str().unwrap_or_default().to_string()).unwrap_or_default()
}

/// A pseudo-terminal of `rows`×`cols` as the caller's terminal: `berth ARGS` runs on its
/// slave side as its controlling terminal (a session of its own, as a login shell has); the
/// test holds the master side.
fn on_terminal(stack: &Stack, args: &[&str], rows: u16, cols: u16) -> (Child, OwnedFd) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
    let slave = pty.slave;
    let mut cmd = stack.command(args);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("berth on a terminal");
    (child, pty.master)
}

fn set_size(master: &OwnedFd, rows: u16, cols: u16) {
    let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads a winsize.
    assert_eq!(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }, 0);
}

/// The json-file log text of the container named `name` (both streams).
fn container_log(stack: &Stack, name: &str) -> String {
    for e in fs::read_dir(stack.root().join("containers")).into_iter().flatten().flatten() {
        let record = fs::read_to_string(e.path().join("record.json")).unwrap_or_default();
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&record) else { continue };
        if v["name"] != name {
            continue;
        }
        let log = fs::read_to_string(e.path().join("log")).unwrap_or_default();
        return log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["log"].as_str().unwrap_or_default().to_string())
            .collect();
    }
    panic!("no container {name}")
}

#[test]
fn attach_streams_output_forwards_stdin_detaches_and_returns_the_exit_code() {
    let yaml = compose(
        1,
        &format!(
            "  echo:\n    image: {IMAGE}\n    stdin_open: true\n    command: [sh, -c, 'while read l; do echo \"got $$l\"; [ \"$$l\" = quit ] && exit 7; done']\n\
             \x20 talk:\n    image: {IMAGE}\n    init: true\n    command: [sh, -c, 'i=0; while true; do echo tick $$i; i=$$((i+1)); sleep 0.2; done']\n"
        ),
    );
    let stack = Stack::new("cmat1", &yaml);
    stack.ok(&["up", "-d"]);

    // Input reaches the process, its output comes back; the detach keys leave it running.
    let mut child =
        stack.command(&["attach", "echo"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let out = collect(child.stdout.take().unwrap());
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"hello\n").unwrap();
    wait_for(&out, "got hello\n");
    input.write_all(b"\x10\x11").unwrap();
    assert_eq!(exit_code(&mut child), 0, "{}", text(&out));
    assert_eq!(state(&stack, "cmat1-echo-1"), "running");

    // Attached again: the process ends while attached, and berth exits with its code.
    let mut child =
        stack.command(&["attach", "echo"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let out = collect(child.stdout.take().unwrap());
    let mut input = child.stdin.take().unwrap();
    input.write_all(b"again\nquit\n").unwrap();
    assert_eq!(exit_code(&mut child), 7, "{}", text(&out));
    assert!(text(&out).contains("got again\ngot quit\n"), "{}", text(&out));
    assert_eq!(state(&stack, "cmat1-echo-1"), "exited");
    let r = stack.berth(&["attach", "echo"]);
    assert!(!r.ok && r.stderr.contains("stopped, start it first"), "{}", r.stderr);

    // Live output without stdin; Ctrl-C is passed on (sig-proxy) and ends the process.
    let mut child = stack.command(&["attach", "--no-stdin", "talk"]).stdout(Stdio::piped()).spawn().unwrap();
    let out = collect(child.stdout.take().unwrap());
    wait_for(&out, "tick ");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    assert_eq!(exit_code(&mut child), 130, "{}", text(&out));
    assert_eq!(state(&stack, "cmat1-talk-1"), "exited");
    stack.ok(&["down"]);
}

#[test]
fn attach_to_a_terminal_relays_keys_and_size_and_the_output_is_logged() {
    let yaml = compose(
        2,
        &format!("  shell:\n    image: {IMAGE}\n    tty: true\n    stdin_open: true\n    command: [sh]\n"),
    );
    let stack = Stack::new("cmat2", &yaml);
    stack.ok(&["up", "-d"]);
    let (mut child, master) = on_terminal(&stack, &["attach", "shell"], 24, 80);
    let out = collect(fs::File::from(master.try_clone().unwrap()));
    let mut keys = fs::File::from(master.try_clone().unwrap());
    // The size at attach, then a new one passed on.
    keys.write_all(b"echo hi-$((1+2)); stty size\n").unwrap();
    wait_for(&out, "hi-3");
    wait_for(&out, "24 80");
    set_size(&master, 40, 120);
    std::thread::sleep(Duration::from_millis(500));
    keys.write_all(b"stty size\n").unwrap();
    wait_for(&out, "40 120");
    keys.write_all(b"\x10\x11").unwrap();
    assert_eq!(exit_code(&mut child), 0, "{}", text(&out));
    assert_eq!(state(&stack, "cmat2-shell-1"), "running");
    // A `tty: true` container under `up -d` has its terminal's output in its log.
    let log = container_log(&stack, "cmat2-shell-1");
    assert!(log.contains("hi-3") && log.contains("40 120"), "{log}");
    stack.ok(&["down"]);
}

#[test]
fn a_foreground_run_on_a_terminal_is_relayed_and_logged() {
    let yaml = compose(3, &format!("  job:\n    image: {IMAGE}\n"));
    let stack = Stack::new("cmat3", &yaml);
    let script = "stty size; [ -t 0 ] && echo on-tty; read l; echo got $l; stty size; exit 3";
    let args = ["run", "--name", "cmat3-one", "job", "sh", "-c", script];
    let (mut child, master) = on_terminal(&stack, &args, 30, 100);
    let out = collect(fs::File::from(master.try_clone().unwrap()));
    wait_for(&out, "on-tty");
    assert!(text(&out).contains("30 100"), "{}", text(&out));
    set_size(&master, 50, 150);
    std::thread::sleep(Duration::from_millis(700));
    fs::File::from(master.try_clone().unwrap()).write_all(b"line\r").unwrap();
    assert_eq!(exit_code(&mut child), 3, "{}", text(&out));
    let seen = text(&out);
    assert!(seen.contains("got line") && seen.contains("50 150"), "{seen}");
    let log = container_log(&stack, "cmat3-one");
    assert!(log.contains("30 100") && log.contains("on-tty") && log.contains("got line"), "{log}");
    stack.ok(&["down"]);
}

#[test]
fn readers_that_do_not_read_never_stall_the_container() {
    // Output as fast as it can be made, and a counter that shows the process going on.
    let flood = "i=0; while true; do i=$$((i+1)); echo $$i > /tmp/m; mv /tmp/m /tmp/n; head -c 32768 /dev/zero | tr '\\\\0' x; echo; done";
    let yaml = compose(
        4,
        &format!(
            "  flood:\n    image: {IMAGE}\n    command: [sh, -c, \"{flood}\"]\n    logging:\n      options: {{max-size: 1m, max-file: \"2\"}}\n\
             \x20 once:\n    image: {IMAGE}\n    command: [sh, -c, \"{flood}\"]\n    logging:\n      options: {{max-size: 1m, max-file: \"2\"}}\n"
        ),
    );
    let stack = Stack::new("cmat4", &yaml);
    let count = |service: &str| -> u64 {
        let r = stack.exec(service, &["cat", "/tmp/n"]);
        r.stdout.trim().parse().unwrap_or_else(|_| panic!("{service}: {} {}", r.stdout, r.stderr))
    };
    let goes_on = |service: &str| {
        let first = count(service);
        std::thread::sleep(Duration::from_secs(2));
        let then = count(service);
        assert!(then > first + 10, "{service} stalled: {first} then {then}");
    };
    stack.ok(&["up", "-d", "flood"]);
    // An attached client whose output nobody reads.
    let mut stalled =
        stack.command(&["attach", "--no-stdin", "flood"]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    goes_on("flood");
    let t = Instant::now();
    stack.ok(&["stop", "-t", "1", "flood"]);
    assert!(t.elapsed() < Duration::from_secs(8), "stop took {:?}", t.elapsed());
    let _ = stalled.kill();
    let _ = stalled.wait();

    // A foreground run whose caller does not read its output.
    let mut run = stack
        .command(&["run", "-T", "--name", "cmat4-run", "once"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while stack.exec("once", &["cat", "/tmp/n"]).stdout.trim().is_empty() {
        assert!(Instant::now() < end, "the run did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    goes_on("once");
    let _ = run.kill();
    let _ = run.wait();
    stack.ok(&["down"]);
}

/// How many times the container named `name` has started its process (its log's lines).
fn starts(stack: &Stack, name: &str) -> usize {
    container_log(stack, name).matches("started").count()
}

/// Waits until the container named `name` runs again, after `before` starts.
fn wait_restarted(stack: &Stack, name: &str, before: usize) {
    let end = Instant::now() + Duration::from_secs(20);
    while !(state(stack, name) == "running" && starts(stack, name) > before) {
        assert!(Instant::now() < end, "{name} not restarted: {:?}", stack.container(name));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn attach_ends_at_each_end_of_the_process_forwards_signals_and_reads_docker_s_detach_keys() {
    // A process that reports the signals it gets and exits 5 once /tmp/quit appears.
    let script = "trap 'echo got USR1' USR1; trap 'echo got HUP' HUP; trap 'echo got WINCH' WINCH; \
                  echo started; while [ ! -e /tmp/quit ]; do sleep 0.1; done; rm /tmp/quit; exit 5";
    let yaml = compose(
        23,
        &format!(
            "  again:\n    image: {IMAGE}\n    restart: always\n    command: [sh, -c, \"{script}\"]\n\
             \x20 echo:\n    image: {IMAGE}\n    stdin_open: true\n    command: [sh, -c, 'while read l; do echo \"got $$l\"; done']\n"
        ),
    );
    let stack = Stack::new("cmat23", &yaml);
    stack.ok(&["up", "-d"]);
    let name = "cmat23-again-1";
    let attach = || {
        let mut child = stack.command(&["attach", "again"]).stdout(Stdio::piped()).spawn().unwrap();
        (collect(child.stdout.take().unwrap()), child)
    };

    // The process exits and the restart policy starts it again: as docker's attach, berth's
    // ends there, with the exit code; the container goes on.
    let (out, mut child) = attach();
    std::thread::sleep(Duration::from_millis(500));
    let before = starts(&stack, name);
    stack.ok(&["exec", "again", "touch", "/tmp/quit"]);
    assert_eq!(exit_code(&mut child), 5, "{}", text(&out));
    wait_restarted(&stack, name, before);

    // `restart` while attached: the attach ends with the stopped process's code (sh as pid 1
    // ignores SIGTERM, so SIGKILL after the grace time); the container runs again.
    let (out, mut child) = attach();
    std::thread::sleep(Duration::from_millis(500));
    let before = starts(&stack, name);
    stack.ok(&["restart", "-t", "1", "again"]);
    assert_eq!(exit_code(&mut child), 137, "{}", text(&out));
    wait_restarted(&stack, name, before);

    // Every signal docker's CLI forwards reaches the process, not only SIGINT.
    let (out, mut child) = attach();
    std::thread::sleep(Duration::from_millis(500));
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    use nix::sys::signal::{Signal, kill};
    for (sig, seen) in
        [(Signal::SIGUSR1, "got USR1"), (Signal::SIGHUP, "got HUP"), (Signal::SIGWINCH, "got WINCH")]
    {
        kill(pid, sig).unwrap();
        wait_for(&out, seen);
    }
    assert!(child.try_wait().unwrap().is_none(), "berth attach ended on a forwarded signal");
    // Forwarded as docker forwards them, as kills: for a container without its own
    // stop_signal any kill turns the restart policy off (moby's killWithSignal), so this end
    // is the last one.
    stack.ok(&["exec", "again", "touch", "/tmp/quit"]);
    assert_eq!(exit_code(&mut child), 5, "{}", text(&out));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(state(&stack, name), "exited");
    let r = stack.berth(&["attach", "again"]);
    assert!(!r.ok && r.stderr.contains("stopped, start it first"), "{}", r.stderr);

    // detachKeys from docker's config.json ($DOCKER_CONFIG) when --detach-keys is not given;
    // the flag still wins.
    let config = stack.dir.path().join("docker-config");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("config.json"), r#"{"detachKeys": "ctrl-x"}"#).unwrap();
    for (args, keys) in [
        (&["attach", "echo"][..], &b"\x18"[..]),
        (&["attach", "--detach-keys", "ctrl-y", "echo"], b"\x18\n\x19"),
    ] {
        let mut child = stack
            .command(args)
            .env("DOCKER_CONFIG", &config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = collect(child.stdout.take().unwrap());
        let mut input = child.stdin.take().unwrap();
        input.write_all(b"hi\n").unwrap();
        wait_for(&out, "got hi\n");
        input.write_all(keys).unwrap();
        assert_eq!(exit_code(&mut child), 0, "{}", text(&out));
        assert_eq!(state(&stack, "cmat23-echo-1"), "running");
    }
    stack.ok(&["down", "-t", "0"]);
}
