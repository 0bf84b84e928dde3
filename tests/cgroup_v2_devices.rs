//! The cgroup v2 device filter (an eBPF program) on a real cgroup2 hierarchy: these machines
//! are v1/hybrid, so the test mounts a cgroup2 tree of its own in a `berth-` temp dir, puts a
//! process in a child cgroup with docker's default rules, and checks an allowed device opens
//! and a denied one does not.

use std::os::unix::process::CommandExt;
use std::process::Command;

use berth::runtime::devices_bpf::{attach, parse_rule};

struct Cgroup2 {
    dir: tempfile::TempDir,
}

impl Drop for Cgroup2 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(self.dir.path().join("c"));
        let _ = nix::mount::umount2(self.dir.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn default_rules_allow_null_and_deny_kmsg() {
    let dir = tempfile::Builder::new().prefix("berth-cg2-").tempdir().unwrap();
    nix::mount::mount(
        Some("cgroup2"),
        dir.path(),
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount cgroup2");
    let cg = Cgroup2 { dir };
    let child = cg.dir.path().join("c");
    std::fs::create_dir(&child).unwrap();
    let rules: Vec<_> = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:9 rwm"]
        .iter()
        .map(|r| parse_rule(r).unwrap())
        .collect();
    attach(&child, &rules).expect("attach the device filter");
    let procs = child.join("cgroup.procs");
    let mut cmd = Command::new("/bin/busybox");
    cmd.args([
        "sh",
        "-c",
        "cat /dev/null && echo null-ok; head -c 1 /dev/zero >/dev/null && echo zero-ok; \
         head -c 1 /dev/kmsg >/dev/null 2>&1 && echo kmsg-open || echo kmsg-denied",
    ]);
    // SAFETY: only a write to a file between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, "null-ok\nzero-ok\nkmsg-denied\n", "{}", String::from_utf8_lossy(&out.stderr));
}
