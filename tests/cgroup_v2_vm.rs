//! The runtime on a pure cgroup v2 machine. These machines are v1/hybrid while most users run
//! pure v2, so `scripts/vm-cgroup2` boots Debian's kernel in QEMU (software emulation, no KVM)
//! with cgroup2 alone at /sys/fs/cgroup, and runs `scripts/vm-cgroup2-checks` there with this
//! build's berth: limits (cpus, mem_limit with its OOM exit 137, pids_limit), the eBPF device
//! filter, the container's own read-only cgroup view, a published port, service-name DNS, and
//! nothing left after `down`. The script installs QEMU and the kernel from Debian's packages
//! when they are missing (root), and caches them under ~/.cache/berth/vm.

use std::path::Path;
use std::process::Command;

#[test]
fn runtime_checks_pass_on_a_pure_cgroup_v2_vm() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it installs qemu-system-x86 and the kernel package with apt-get)"
    );
    let dir = tempfile::Builder::new().prefix("berth-vm-").tempdir().unwrap();
    let log = dir.path().join("console.log");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vm-cgroup2");
    let out = Command::new(&script)
        .env("BERTH", env!("CARGO_BIN_EXE_berth"))
        .env("BERTH_VM_LOG", &log)
        .env("BERTH_VM_TIMEOUT", "420")
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", script.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    let results: Vec<&str> =
        console.lines().map(|l| l.trim_end_matches('\r')).filter(|l| l.starts_with("PASS ")).collect();
    let failures: Vec<&str> =
        console.lines().map(|l| l.trim_end_matches('\r')).filter(|l| l.starts_with("FAIL ")).collect();
    assert!(
        out.status.success() && failures.is_empty(),
        "the cgroup v2 VM checks failed ({}):\n{stderr}\nfailures:\n{}\nconsole:\n{console}",
        out.status,
        failures.join("\n"),
    );
    // Every check ran: a checks script that stopped early must not pass.
    for check in [
        "cgroup-v2-host",
        "up",
        "host-cpu.max",
        "own-memory.max",
        "own-cpu.max",
        "cgroup-mount-ro",
        "pids-limit",
        "device-kmsg-denied",
        "device-null-allowed",
        "published-port",
        "service-dns",
        "oom-exit-137",
        "down-no-cgroups",
        "down-no-nft",
        "down-no-mounts",
    ] {
        assert!(results.contains(&format!("PASS {check}").as_str()), "no PASS {check}:\n{console}");
    }
}
