//! Signals on real busybox containers (as root, under the shared test lock), realtime ones
//! included: `kill -s` by name (`SIGRTMIN+3`, `rtmax-2`) and number, a realtime
//! `stop_signal`, attach's signal proxy, berth's init passing them on, and a kill against the
//! restart policy as docker decides it (only SIGKILL or the container's own stop signal ends
//! it; a kill of a restarting container calls the restart off). busybox's `trap` takes realtime signals by number only (SIGRTMIN+3 is 37). Subnets
//! 10.243.60-63.0/24.

mod stack;

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stack::Stack;

const IMAGE: &str = "berth-test/busybox:latest";

fn compose(net: u8, services: &str) -> String {
    format!(
        "services:\n{services}networks:\n  default:\n    ipam:\n      config: [{{subnet: 10.243.{net}.0/24}}]\n"
    )
}

/// A service whose process notes each of `signals` (numbers) in its log and keeps running,
/// printing `tick` meanwhile.
fn noting(name: &str, signals: &[i32]) -> String {
    let traps: String = signals.iter().map(|n| format!("trap 'echo got {n}' {n}; ")).collect();
    format!(
        "  {name}:\n    image: {IMAGE}\n    command: [sh, -c, \"{traps}echo ready; while :; do sleep 0.2; echo tick; done\"]\n    stop_grace_period: 1s\n"
    )
}

/// Waits until `check` holds on the service's log, or panics after 10 s.
fn wait_log(stack: &Stack, service: &str, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = stack.berth(&["logs", "--no-log-prefix", service]);
        if r.stdout.lines().any(|l| l == what) {
            return;
        }
        assert!(Instant::now() < end, "timed out waiting for {what:?} in the log of {service}: {}", r.stdout);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn exited_with(stack: &Stack, name: &str, code: i64) -> bool {
    stack.container(name).is_some_and(|c| c["State"] == "exited" && c["ExitCode"] == code)
}

/// The restart count the shim recorded for container `name`.
fn restart_count(stack: &Stack, name: &str) -> u64 {
    for e in std::fs::read_dir(stack.root().join("containers")).into_iter().flatten().flatten() {
        let read = |f: &str| -> serde_json::Value {
            std::fs::read_to_string(e.path().join(f))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default()
        };
        if read("record.json")["name"] == name {
            return read("status.json")["restart_count"].as_u64().unwrap_or(0);
        }
    }
    panic!("no container {name}");
}

#[test]
fn kill_carries_realtime_signals_by_name_and_number() {
    let services = format!(
        "{}  ini:\n    image: {IMAGE}\n    command: [sleep, \"1000\"]\n    init: true\n    stop_grace_period: 1s\n",
        noting("rt", &[37, 40, 62])
    );
    let stack = Stack::new("sig1", &compose(60, &services));
    stack.ok(&["up", "-d"]);
    wait_log(&stack, "rt", "ready");
    for (sig, seen) in [("SIGRTMIN+3", "got 37"), ("rtmax-2", "got 62"), ("40", "got 40")] {
        stack.ok(&["kill", "-s", sig, "rt"]);
        wait_log(&stack, "rt", seen);
    }
    assert_eq!(stack.container("sig1-rt-1").expect("rt")["State"], "running");
    // Out of range: refused, naming the value.
    let r = stack.berth(&["kill", "-s", "SIGRTMIN+31", "rt"]);
    assert!(!r.ok && r.stderr.contains("SIGRTMIN+31"), "{}", r.stderr);
    // berth's init passes a realtime signal on to its child, which dies of it (the default
    // action), and ends with its status: 128 + 37.
    stack.ok(&["kill", "-s", "SIGRTMIN+3", "ini"]);
    stack.wait_until(Duration::from_secs(10), "ini ended by SIGRTMIN+3", |_| {
        exited_with(&stack, "sig1-ini-1", 165)
    });
}

#[test]
fn a_realtime_stop_signal_stops_the_container() {
    // With a 30 s grace time, only the signal itself can end it within the limit below (a
    // SIGKILL after the grace time would also give 137, not 3).
    let services = format!(
        "  svc:\n    image: {IMAGE}\n    command: [sh, -c, \"trap 'echo stopping; exit 3' 37; echo ready; while :; do sleep 0.2; done\"]\n    stop_signal: SIGRTMIN+3\n    stop_grace_period: 30s\n"
    );
    let stack = Stack::new("sig2", &compose(61, &services));
    stack.ok(&["up", "-d"]);
    wait_log(&stack, "svc", "ready");
    let started = Instant::now();
    stack.ok(&["stop", "svc"]);
    assert!(started.elapsed() < Duration::from_secs(10), "stop waited for the grace time");
    assert!(exited_with(&stack, "sig2-svc-1", 3), "{:?}", stack.container("sig2-svc-1"));
    wait_log(&stack, "svc", "stopping");
}

#[test]
fn a_kill_ends_the_restart_policy_only_with_sigkill_or_the_own_stop_signal() {
    // berth's init passes signals on to `sleep`, which dies of TERM or of SIGRTMIN+3.
    let services = format!(
        "  own:\n    image: {IMAGE}\n    command: [sleep, \"1000\"]\n    init: true\n    restart: always\n    stop_signal: SIGRTMIN+3\n    stop_grace_period: 1s\n  plain:\n    image: {IMAGE}\n    command: [sleep, \"1000\"]\n    init: true\n    restart: always\n    stop_grace_period: 1s\n"
    );
    let services = format!(
        "{services}  crashing:\n    image: {IMAGE}\n    command: [sh, -c, \"exit 1\"]\n    restart: always\n"
    );
    let stack = Stack::new("sig3", &compose(62, &services));
    stack.ok(&["up", "-d"]);
    stack.wait_until(Duration::from_secs(10), "both running", |ps| {
        ps.iter().filter(|c| c["State"] == "running").count() == 2
    });

    // A container waiting to be restarted (its back-off past a second by the fifth restart) is
    // killed too, as docker's kill of a restarting one: the restart is called off.
    stack.wait_until(Duration::from_secs(20), "crashing in its back-off", |_| {
        restart_count(&stack, "sig3-crashing-1") >= 5
            && stack.container("sig3-crashing-1").is_some_and(|c| c["State"] == "restarting")
    });
    stack.ok(&["kill", "crashing"]);
    let count = restart_count(&stack, "sig3-crashing-1");
    stack.wait_until(Duration::from_secs(5), "crashing ended", |_| {
        stack.container("sig3-crashing-1").is_some_and(|c| c["State"] == "exited")
    });
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(restart_count(&stack, "sig3-crashing-1"), count, "restarted after the kill");
    assert!(stack.container("sig3-crashing-1").is_some_and(|c| c["State"] == "exited"));

    // Another signal than its own stop signal: the process ends, the policy starts it again.
    stack.ok(&["kill", "-s", "TERM", "own"]);
    stack.wait_until(Duration::from_secs(10), "own restarted", |_| {
        restart_count(&stack, "sig3-own-1") == 1
            && stack.container("sig3-own-1").is_some_and(|c| c["State"] == "running")
    });
    // Its own stop signal: down for good.
    stack.ok(&["kill", "-s", "SIGRTMIN+3", "own"]);
    stack.wait_until(Duration::from_secs(10), "own ended", |_| exited_with(&stack, "sig3-own-1", 165));
    std::thread::sleep(Duration::from_secs(1));
    assert!(exited_with(&stack, "sig3-own-1", 165), "restarted after its own stop signal");
    assert_eq!(restart_count(&stack, "sig3-own-1"), 1);

    // Without a stop signal of its own, any kill ends the policy.
    stack.ok(&["kill", "-s", "TERM", "plain"]);
    stack.wait_until(Duration::from_secs(10), "plain ended", |_| exited_with(&stack, "sig3-plain-1", 143));
    std::thread::sleep(Duration::from_secs(1));
    assert!(exited_with(&stack, "sig3-plain-1", 143), "restarted after a kill");
    assert_eq!(restart_count(&stack, "sig3-plain-1"), 0);
}

#[test]
fn attach_passes_realtime_signals_on() {
    let stack = Stack::new("sig4", &compose(63, &noting("rt", &[37, 64])));
    stack.ok(&["up", "-d"]);
    wait_log(&stack, "rt", "ready");
    let mut child = stack.spawn(&["attach", "--no-stdin", "rt"]);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    let mut out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let wait_out = |what: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        while !String::from_utf8_lossy(&seen.lock().unwrap()).contains(what) {
            assert!(Instant::now() < end, "attach never showed {what:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Output through the attach: its signal proxy is in place.
    wait_out("tick");
    for (sig, note) in [(37, "got 37"), (64, "got 64")] {
        // SAFETY: kill(2) with plain numbers, to our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        wait_out(note);
    }
    assert!(child.try_wait().unwrap().is_none(), "berth attach ended on a forwarded signal");
    let _ = child.kill();
    let _ = child.wait();
}
