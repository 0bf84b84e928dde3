//! The runtime on real containers (root, busybox-static): what a process sees from inside.

mod common;

use std::time::{Duration, Instant};

use berth::runtime::spec::{HealthcheckSpec, MountKind, MountSpec, RestartPolicy};
use berth::runtime::{ExecSpec, HealthState, State};
use common::TestEnv;

fn sh(script: &str) -> Vec<&str> {
    vec!["/bin/sh", "-c", script]
}

#[test]
fn process_is_pid_one_with_own_hostname_and_no_host_processes() {
    let env = TestEnv::new();
    let spec = env.spec("box1", &sh("echo pid=$$; hostname; ls /proc | grep -c '^[0-9]'"));
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "{log}");
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "pid=1");
    assert_eq!(lines[1], "box1");
    let procs: u32 = lines[2].trim().parse().unwrap();
    assert!(procs <= 3, "only the container's processes are visible, saw {procs}");
}

#[test]
fn capabilities_seccomp_and_no_new_privileges() {
    let env = TestEnv::new();
    let script = "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status";
    let (st, log) = env.run_to_end(&env.spec("caps", &sh(script)));
    assert_eq!(st.exit_code, Some(0), "{log}");
    assert!(log.contains("CapEff:\t00000000a80425fb"), "{log}");
    assert!(log.contains("Seccomp:\t2"), "{log}");
    assert!(log.contains("NoNewPrivs:\t0"), "{log}");

    let mut spec = env.spec("nocaps", &sh(script));
    spec.security.cap_drop = vec!["ALL".into()];
    spec.security.no_new_privileges = true;
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
}

#[test]
fn default_seccomp_refuses_mount_and_unshare() {
    let env = TestEnv::new();
    let mut spec =
        env.spec("sec", &sh("unshare -n true; echo unshare=$?; mount -t tmpfs t /tmp; echo mount=$?"));
    spec.security.cap_add = vec!["SYS_ADMIN".into()];
    let (_, log) = env.run_to_end(&spec);
    // With SYS_ADMIN the default profile allows them, as docker's does.
    assert!(log.contains("unshare=0") && log.contains("mount=0"), "{log}");
    let spec = env.spec("sec2", &sh("unshare -n true 2>&1; echo unshare=$?"));
    let (_, log) = env.run_to_end(&spec);
    assert!(log.contains("unshare=1") && log.contains("not permitted"), "{log}");
}

#[test]
fn read_only_rootfs_with_a_writable_tmpfs() {
    let env = TestEnv::new();
    let mut spec =
        env.spec("ro", &sh("touch /blocked 2>&1; echo root=$?; touch /scratch/ok && echo tmpfs=$?"));
    spec.rootfs.read_only = true;
    spec.mounts.push(MountSpec {
        target: "/scratch".into(),
        kind: MountKind::Tmpfs { size: Some(1 << 20), mode: None },
        read_only: false,
        volume: None,
    });
    let (_, log) = env.run_to_end(&spec);
    assert!(log.contains("Read-only file system"), "{log}");
    assert!(log.contains("root=1") && log.contains("tmpfs=0"), "{log}");
}

#[test]
fn memory_limit_kills_with_137_and_records_oom() {
    let env = TestEnv::new();
    let mut spec = env.spec("oom", &["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"]);
    spec.resources.memory = Some(32 * 1024 * 1024);
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(137), "{log}");
    assert!(st.oom_killed, "the OOM kill is recorded");
}

#[test]
fn the_container_sees_its_own_cgroup_limits() {
    let env = TestEnv::new();
    let limit: i64 = 48 * 1024 * 1024;
    let dir = if berth::runtime::cgroups::host_version() == berth::runtime::cgroups::Version::V2 {
        ("/sys/fs/cgroup", "memory.max", "/sys/fs/cgroup/pids.max")
    } else {
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "/sys/fs/cgroup/pids/pids.max")
    };
    let (mem_dir, mem_file, pids_file) = dir;
    let script = format!(
        "echo mem=$(cat {mem_dir}/{mem_file}) pids=$(cat {pids_file}); \
         (echo 1 2>/dev/null >{mem_dir}/{mem_file}) 2>/dev/null && echo writable; \
         echo procs=$(grep -c . {mem_dir}/cgroup.procs)"
    );
    let mut spec = env.spec("cgview", &sh(&script));
    spec.resources.memory = Some(limit);
    spec.resources.pids_limit = Some(50);
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "{log}");
    assert!(log.contains(&format!("mem={limit} pids=50")), "{log}");
    assert!(!log.contains("writable"), "read-only for an unprivileged container: {log}");
    // The container's own cgroup is the root it sees: its processes only (sh, grep, a subshell).
    let procs: u32 =
        log.lines().find_map(|l| l.strip_prefix("procs=")).and_then(|n| n.trim().parse().ok()).unwrap_or(999);
    assert!(procs <= 3, "{log}");

    let mut spec = env.spec("cgpriv", &sh("mount | grep -c 'cgroup.*(rw'"));
    spec.security.privileged = true;
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "privileged containers get it writable: {log}");
}

#[test]
fn pids_limit_holds() {
    let env = TestEnv::new();
    let mut spec = env.spec(
        "pids",
        // ash exits when a fork fails, so the forks happen in a subshell, and counting uses
        // builtins only.
        &sh("(for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#; kill -9 -1"),
    );
    spec.resources.pids_limit = Some(6);
    let (_, log) = env.run_to_end(&spec);
    let count: u32 = log.lines().find_map(|l| l.trim().parse().ok()).unwrap_or(999);
    assert!(count <= 6, "at most 6 tasks, saw {count}: {log}");
}

#[test]
fn user_and_groups() {
    let env = TestEnv::new();
    let mut spec = env.spec("user", &["id"]);
    spec.process.user = Some("65534:65534".into());
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "{log}");
    assert!(log.starts_with("uid=65534(nobody) gid=65534(nogroup)"), "{log}");
    let mut spec = env.spec("ghost", &["id"]);
    spec.process.user = Some("ghost".into());
    let err = env.runtime.run(&spec).unwrap_err().to_string();
    assert!(err.contains("unable to find user ghost"), "{err}");
}

#[test]
fn exit_codes_and_signals_pass_through() {
    let env = TestEnv::new();
    let (st, _) = env.run_to_end(&env.spec("exit3", &sh("exit 3")));
    assert_eq!(st.exit_code, Some(3));

    let spec = env.spec("trap", &sh("trap 'exit 7' TERM; echo ready; while true; do sleep 0.05; done"));
    env.runtime.run(&spec).unwrap();
    wait_for_log(&env, &spec.id, "ready");
    env.runtime.signal(&spec.id, "TERM").unwrap();
    let st = env.runtime.wait(&spec.id, Duration::from_secs(10)).unwrap();
    assert_eq!(st.exit_code, Some(7));

    let mut spec = env.spec("init", &["sleep", "100"]);
    spec.process.init = true;
    env.runtime.run(&spec).unwrap();
    let st = env.runtime.stop(&spec.id, Some(Duration::from_secs(5))).unwrap();
    assert_eq!(st.exit_code, Some(143), "init forwards SIGTERM and reports 128+15");
    assert_eq!(st.state, State::Exited);
}

#[test]
fn init_reaps_zombies() {
    let env = TestEnv::new();
    let mut spec = env.spec(
        "reap",
        &sh("(sleep 0.1 &); sleep 0.6; echo zombies=$(cat /proc/[0-9]*/stat 2>/dev/null | grep -c ') Z '); cat /proc/1/comm"),
    );
    spec.process.init = true;
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "{log}");
    assert!(log.contains("zombies=0"), "{log}");
    assert!(log.contains("init"), "{log}");
}

#[test]
fn restart_on_failure_runs_n_plus_one_times() {
    let env = TestEnv::new();
    let mut spec = env.spec("restart", &sh("echo run; exit 1"));
    spec.restart = RestartPolicy::OnFailure(Some(2));
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(log.matches("run").count(), 3, "{log}");
    assert_eq!(st.restart_count, 2);
    assert_eq!(st.exit_code, Some(1));
}

#[test]
fn healthcheck_goes_unhealthy_then_healthy() {
    let env = TestEnv::new();
    let mut spec = env.spec("health", &sh("sleep 1; touch /tmp/ok; sleep 100"));
    spec.healthcheck = Some(HealthcheckSpec {
        command: sh("test -f /tmp/ok").into_iter().map(String::from).collect(),
        interval_ms: 100,
        timeout_ms: 2000,
        retries: 2,
        start_period_ms: 0,
        start_interval_ms: 0,
    });
    env.runtime.run(&spec).unwrap();
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        let st = env.runtime.status(&spec.id).unwrap();
        let h = st.health.map(|h| h.status).unwrap_or_default();
        if seen.last() != Some(&h) {
            seen.push(h);
        }
        if h == HealthState::Healthy {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, [HealthState::Starting, HealthState::Unhealthy, HealthState::Healthy]);
    env.runtime.stop(&spec.id, Some(Duration::from_secs(1))).unwrap();
}

#[test]
fn log_lines_keep_order_across_streams() {
    let env = TestEnv::new();
    let spec = env.spec("logs", &sh("echo one; sleep 0.05; echo two >&2; sleep 0.05; echo three"));
    let (_, _) = env.run_to_end(&spec);
    let entries = env.runtime.logs(&spec.id).unwrap();
    let got: Vec<(String, String)> = entries.into_iter().map(|e| (e.log, e.stream)).collect();
    let want = [("one\n", "stdout"), ("two\n", "stderr"), ("three\n", "stdout")];
    assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
}

#[test]
fn exec_joins_the_running_container() {
    let env = TestEnv::new();
    let mut spec = env.spec("exec", &["sleep", "100"]);
    spec.process.env = vec!["FROM_SPEC=yes".into()];
    env.runtime.run(&spec).unwrap();
    let exec = ExecSpec {
        args: sh("echo $FROM_SPEC $EXTRA; hostname; id -u; pwd; exit 5")
            .into_iter()
            .map(String::from)
            .collect(),
        env: vec!["EXTRA=x".into()],
        user: Some("65534".into()),
        cwd: Some("/tmp".into()),
        privileged: false,
    };
    let (code, out, err) = env.runtime.exec_output(&spec.id, &exec).unwrap();
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 5, "{out} {}", String::from_utf8_lossy(&err));
    assert_eq!(out, "yes x\nexec\n65534\n/tmp\n");
    env.runtime.stop(&spec.id, Some(Duration::from_secs(1))).unwrap();
}

#[test]
fn bad_command_is_a_clear_start_error() {
    let env = TestEnv::new();
    let spec = env.spec("nocmd", &["/no/such/program"]);
    let err = env.runtime.run(&spec).unwrap_err().to_string();
    assert!(err.contains("nocmd") && err.contains("/no/such/program"), "{err}");
    let st = env.runtime.status(&spec.id).unwrap();
    assert_eq!(st.state, State::Exited);
}

fn wait_for_log(env: &TestEnv, id: &str, text: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if env.runtime.logs(id).unwrap().iter().any(|e| e.log.contains(text)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{text:?} never appeared in the log");
}

#[test]
fn tty_gives_the_process_a_terminal() {
    let env = TestEnv::new();
    let mut spec = env.spec("tty", &sh("test -t 0 && test -t 1 && echo in-and-out-are-terminals; tty"));
    spec.process.tty = true;
    let (st, log) = env.run_to_end(&spec);
    assert_eq!(st.exit_code, Some(0), "{log}");
    assert!(log.contains("in-and-out-are-terminals"), "{log}");
    // The pty is allocated by the shim on the host and bound onto /dev/console (docker's runc
    // allocates it in the container's devpts and shows /dev/pts/0). A terminal turns \n into \r\n.
    assert_eq!(log, "in-and-out-are-terminals\r\n/dev/console\r\n");
}

#[test]
fn run_with_a_bad_capability_fails_and_leaves_nothing() {
    let env = TestEnv::new();
    let mut spec = env.spec("badcap", &["true"]);
    spec.security.cap_add = vec!["CAP_NO_SUCH_THING".into()];
    // `run` compiles the security settings while the shim starts: the error must still come
    // back as the caller's, with nothing left of the container.
    let err = env.runtime.run(&spec).unwrap_err().to_string();
    assert!(err.contains("badcap") && err.contains("CAP_NO_SUCH_THING"), "{err}");
    assert!(env.runtime.list().unwrap().is_empty());
    assert!(!env.dirs.container(&spec.id).exists() && !env.dirs.container_run(&spec.id).exists());
    assert!(!std::path::Path::new("/sys/fs/cgroup/memory/berth").join(&spec.id).exists());
    // create refuses it the same way, before anything is written.
    let err = env.runtime.create(&spec).unwrap_err().to_string();
    assert!(err.contains("CAP_NO_SUCH_THING"), "{err}");
    assert!(!env.dirs.container(&spec.id).exists());
}

#[test]
fn network_none_gets_a_fresh_namespace_with_only_lo_each_start() {
    let env = TestEnv::new();
    let host_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    let mut spec = env.spec("netnone", &sh("cat /proc/net/dev | tail -n +3 | cut -d: -f1; sleep 100"));
    spec.restart = RestartPolicy::Always;
    let st = env.runtime.run(&spec).unwrap();
    let first = std::fs::read_link(format!("/proc/{}/ns/net", st.pid)).unwrap();
    assert_ne!(first, host_ns);
    // Held open, the first namespace cannot go and hand its number to the second.
    let _first_alive = std::fs::File::open(format!("/proc/{}/ns/net", st.pid)).unwrap();
    wait_for_log(&env, &spec.id, "lo");
    let log: String = env.runtime.logs(&spec.id).unwrap().into_iter().map(|e| e.log).collect();
    assert_eq!(log.split_whitespace().collect::<Vec<_>>(), ["lo"], "{log}");
    // A restart gets a namespace of its own too, not the one of the first start.
    env.runtime.signal(&spec.id, "KILL").unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let second = loop {
        let st = env.runtime.status(&spec.id).unwrap();
        if st.restart_count >= 1 && st.state == State::Running && st.pid > 0 {
            break std::fs::read_link(format!("/proc/{}/ns/net", st.pid)).unwrap();
        }
        assert!(Instant::now() < end, "no restart: {st:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(second, first);
    assert_ne!(second, host_ns);
    env.runtime.stop(&spec.id, Some(Duration::from_secs(1))).unwrap();
}

/// A build step polls `wait` with a short timeout for minutes; each caller that gives up must
/// not leave its connection with the shim, or the shim runs out of descriptors (1024) after a
/// few minutes and can no longer record the end (a build hung for good this way in CI).
#[test]
fn callers_that_stop_waiting_leave_no_connection_in_the_shim() {
    let env = TestEnv::new();
    let spec = env.spec("waited", &["sleep", "100"]);
    env.runtime.run(&spec).unwrap();
    let shim = env.runtime.status(&spec.id).unwrap().shim_pid;
    for _ in 0..1200 {
        let st = env.runtime.wait(&spec.id, Duration::from_millis(1)).unwrap();
        assert_eq!(st.state, State::Running);
    }
    // The shim drops a hung-up waiter on its next turn.
    let deadline = Instant::now() + Duration::from_secs(5);
    let open = || std::fs::read_dir(format!("/proc/{shim}/fd")).unwrap().count();
    while open() > 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(open() <= 64, "the shim holds {} descriptors", open());
    let st = env.runtime.stop(&spec.id, Some(Duration::from_secs(1))).unwrap();
    assert_eq!(st.state, State::Exited);
}
