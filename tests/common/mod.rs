//! Helpers shared by the runtime's integration tests: a throwaway root and run dir (named
//! `berth-*` so that the leak check sees anything left), a busybox rootfs layer, and cleanup
//! that runs even when a test fails.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth::runtime::spec::ContainerSpec;
use berth::runtime::{ContainerStatus, Runtime};
use berth::state::Dirs;

/// The busybox-static binary Debian installs.
pub const BUSYBOX: &str = "/bin/busybox";

/// A test's own root, run dir and runtime; everything is removed on drop.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub dirs: Dirs,
    pub runtime: Runtime,
    pub layer: PathBuf,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        assert!(Path::new(BUSYBOX).exists(), "tests need busybox-static (scripts/test installs it)");
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().expect("temp dir");
        let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
        let layer = dir.path().join("layer");
        make_busybox_rootfs(&layer);
        let runtime = Runtime::new(&dirs, env!("CARGO_BIN_EXE_berth"));
        TestEnv { dir, dirs, runtime, layer }
    }

    /// A spec running `args` on the busybox layer, with a fresh id.
    pub fn spec(&self, name: &str, args: &[&str]) -> ContainerSpec {
        let mut spec = ContainerSpec {
            id: berth::runtime::new_id().unwrap(),
            name: name.to_string(),
            hostname: name.to_string(),
            ..ContainerSpec::default()
        };
        spec.rootfs.lower_dirs = vec![self.layer.clone()];
        spec.process.args = args.iter().map(|s| s.to_string()).collect();
        spec.stop_grace_ms = Some(2000);
        spec
    }

    /// Runs to the end; returns the final status and the log text (both streams).
    pub fn run_to_end(&self, spec: &ContainerSpec) -> (ContainerStatus, String) {
        self.runtime.run(spec).expect("container starts");
        let st = self.runtime.wait(&spec.id, Duration::from_secs(60)).expect("status");
        let log: String = self.runtime.logs(&spec.id).expect("logs").into_iter().map(|e| e.log).collect();
        (st, log)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Ok(ids) = self.runtime.list() {
            for id in ids {
                let _ = self.runtime.remove(&id, true);
            }
        }
    }
}

/// A one-layer rootfs: busybox with its applets, `/etc/passwd` and `/etc/group`.
pub fn make_busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for d in ["etc", "tmp", "proc", "sys", "dev", "root", "usr/bin", "var"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
    let list = Command::new(BUSYBOX).arg("--list").output().expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", bin.join(applet));
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .unwrap();
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
}
