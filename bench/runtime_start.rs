//! Container start to exit of `/bin/true`, beside `runc run` of the same rootfs when runc is
//! installed, and the shim's resident memory. Run as root: `cargo bench --bench runtime_start`
//! (`BENCH_RUNS=N` for more or fewer runs). Budget (issue 3): median at most 5 ms and at most
//! a quarter of runc's; the shim at most 4 MiB.
//!
//! What is timed, per run: from the call of `Runtime::run` (the container's records are written
//! durably, the shim is launched, the container's process has exec'd) to `Runtime::wait`
//! returning the exit (code recorded by the shim and observed by the caller). The same with
//! `Runtime::create` then `Runtime::start` is printed too (`run` writes the records while the
//! shim starts up; `create` must have written them before it returns). The container has its own mount, pid, uts, ipc, cgroup and network namespace
//! (a fresh one with only `lo`, no network attached), cgroups, docker's default capabilities
//! and seccomp filter. `Runtime::remove` is outside that time and timed on its own.
//!
//! runc gets an OCI bundle generated here for the same busybox rootfs: the same namespaces
//! (its own netns), docker's default capabilities, masked and read-only paths; it is timed
//! from spawning `runc run` to its exit (runc removes the container itself).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth::runtime::spec::ContainerSpec;
use berth::runtime::{Runtime, State};
use berth::state::Dirs;

const WARMUP: usize = 3;

/// Median, 90th percentile, min and max, in ms.
fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:.2} ms, p90 {:.2} ms (min {:.2}, max {:.2}; {} runs)",
        ms(at(0.5)),
        ms(at(0.9)),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|s| s.parse().ok()).unwrap_or(50).max(1);
    let dir = tempfile::Builder::new().prefix("berth-bench-").tempdir().expect("temp dir");
    let layer = dir.path().join("layer");
    std::fs::create_dir_all(layer.join("bin")).expect("layer");
    for d in ["proc", "sys", "dev", "etc", "tmp"] {
        std::fs::create_dir_all(layer.join(d)).expect("layer");
    }
    std::fs::copy("/bin/busybox", layer.join("bin/busybox")).expect("busybox-static is installed");
    std::os::unix::fs::symlink("busybox", layer.join("bin/true")).expect("layer");
    std::os::unix::fs::symlink("busybox", layer.join("bin/sleep")).expect("layer");
    let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
    let runtime = Runtime::new(&dirs, env!("CARGO_BIN_EXE_berth"));
    let spec_for = |args: &[&str]| {
        let mut s = ContainerSpec {
            id: berth::runtime::new_id().expect("random id"),
            name: "bench".into(),
            hostname: "bench".into(),
            ..ContainerSpec::default()
        };
        s.rootfs.lower_dirs = vec![layer.clone()];
        s.process.args = args.iter().map(|a| a.to_string()).collect();
        s
    };

    let (mut runs_berth, mut runs_split, mut removes) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..2 * (runs + WARMUP) {
        let spec = spec_for(&["/bin/true"]);
        // Alternate the two ways, so that both see the same machine.
        let split = i % 2 == 1;
        let t = Instant::now();
        if split {
            runtime.create(&spec).expect("create");
            runtime.start(&spec.id).expect("start");
        } else {
            runtime.run(&spec).expect("run");
        }
        let st = runtime.wait(&spec.id, Duration::from_secs(10)).expect("wait");
        let elapsed = t.elapsed();
        assert_eq!((st.state, st.exit_code), (State::Exited, Some(0)), "{st:?}");
        let t = Instant::now();
        runtime.remove(&spec.id, true).expect("remove");
        if i >= 2 * WARMUP {
            if split {
                runs_split.push(elapsed);
            } else {
                runs_berth.push(elapsed);
                removes.push(t.elapsed());
            }
        }
    }
    let berth_median = median(runs_berth.clone());
    println!("berth run+wait of /bin/true:           {}", summary(runs_berth));
    println!("berth create+start+wait of /bin/true:  {}", summary(runs_split));
    println!("berth remove (not in the times above): {}", summary(removes));

    // The shim's resident memory while a container runs.
    let spec = spec_for(&["/bin/sleep", "5"]);
    let st = runtime.run(&spec).expect("run");
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{}/status", st.shim_pid)).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!(
        "berth-shim resident memory: {:.2} MiB (VmRSS; anonymous {:.2} MiB, file-backed {:.2} MiB)",
        kib("VmRSS:") as f64 / 1024.0,
        kib("RssAnon:") as f64 / 1024.0,
        kib("RssFile:") as f64 / 1024.0
    );
    runtime.remove(&spec.id, true).expect("remove");

    let Some(runc) = which_runc() else {
        println!("runc: not installed, no comparison");
        return;
    };
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(&bundle).expect("bundle");
    std::fs::write(bundle.join("config.json"), oci_config(&layer).to_string()).expect("config.json");
    let state = dir.path().join("runc-state");
    let mut runs_runc = Vec::new();
    for i in 0..runs + WARMUP {
        let t = Instant::now();
        let st = Command::new(&runc)
            .arg("--root")
            .arg(&state)
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("berth-bench-{}-{i}", std::process::id()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("runc run");
        let elapsed = t.elapsed();
        assert!(st.success(), "runc run failed: {st}");
        if i >= WARMUP {
            runs_runc.push(elapsed);
        }
    }
    let runc_median = median(runs_runc.clone());
    println!("runc run of /bin/true:                 {}", summary(runs_runc));
    println!("berth/runc (medians): {:.3}", berth_median.as_secs_f64() / runc_median.as_secs_f64());
}

fn which_runc() -> Option<String> {
    ["/usr/sbin/runc", "/usr/bin/runc", "/usr/local/bin/runc"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(String::from)
}

/// An OCI runtime config for `/bin/true` in `rootfs` (absolute: runc refuses a symlink), set up
/// as berth sets up a container.
fn oci_config(rootfs: &Path) -> serde_json::Value {
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    let nosuid = ["nosuid", "noexec", "nodev"];
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["/bin/true"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "noNewPrivileges": false
        },
        "root": { "path": rootfs, "readonly": false },
        "hostname": "bench",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": nosuid },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nosuid },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "maskedPaths": [
                "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}
