//! Helpers for the networking tests: a throwaway network namespace per test (as netavark's
//! tests do), temp root/run dirs, busybox run inside a container's namespace, and guards that
//! clean up even when a test fails.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth::netns::netlink::Netlink;
use berth::netns::{AttachRequest, Attachment, EndpointRequest, IpamPool, NetMode, NetworkSpec, Networks};
use berth::state::Dirs;

/// Runs `f` on a thread with a network namespace of its own (loopback up); everything the test
/// makes (bridges, veths, nft tables, the DNS process) lives there and vanishes with it.
pub fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    let r = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let mut nl = Netlink::open().unwrap();
        let lo = nl.link_index("lo").unwrap().unwrap();
        nl.set_up(lo).unwrap();
        f()
    })
    .join();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// Temp root and run dirs, and a `Networks` on them; on drop, detaches every container and
/// removes every network left (so a failed test cleans up too).
pub struct Env {
    pub dir: tempfile::TempDir,
    pub nets: Networks,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
        let nets = Networks::new(&dirs).with_exe(env!("CARGO_BIN_EXE_berth"));
        Env { dir, nets }
    }

    pub fn dirs(&self) -> &Dirs {
        self.nets.dirs()
    }

    pub fn network(&self, name: &str, subnet: &str) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            driver: "bridge".into(),
            ipam: vec![IpamPool { subnet: Some(subnet.into()), ..IpamPool::default() }],
            ..NetworkSpec::default()
        }
    }

    pub fn request(&self, id: &str, networks: &[(&str, &[&str])]) -> AttachRequest {
        AttachRequest {
            container_id: id.into(),
            container_name: id.into(),
            hostname: id.into(),
            mode: NetMode::Bridge(
                networks
                    .iter()
                    .map(|(n, aliases)| EndpointRequest {
                        network: (*n).into(),
                        aliases: aliases.iter().map(|a| a.to_string()).collect(),
                        ..EndpointRequest::default()
                    })
                    .collect(),
            ),
            ports: vec![],
            extra_hosts: vec![],
            dns: vec![],
            dns_search: vec![],
            dns_opt: vec![],
            sysctls: Default::default(),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let dirs = self.dirs().clone();
        for rec in berth::netns::record::all_endpoints(&dirs).unwrap_or_default() {
            let _ = self.nets.detach(&rec.container_id);
        }
        for n in self.nets.list().unwrap_or_default() {
            let _ = self.nets.remove(&n.name);
        }
        let _ = berth::netns::dns::stop(&dirs, &berth::state::Reaps::default());
    }
}

/// A busybox command run inside a container's network namespace, with its hosts and
/// resolv.conf bind-mounted over /etc's in a private mount namespace (as a runtime would).
pub fn bb(att: &Attachment, args: &[&str]) -> Command {
    let ns: OwnedFd = File::open(att.netns_path.as_ref().unwrap()).unwrap().into();
    let mounts: Vec<(CString, CString)> =
        [(&att.resolv_conf, "/etc/resolv.conf"), (&att.hosts_file, "/etc/hosts")]
            .iter()
            .map(|(src, dst)| (CString::new(src.to_str().unwrap()).unwrap(), CString::new(*dst).unwrap()))
            .collect();
    let root = CString::new("/").unwrap();
    let mut cmd = Command::new("busybox");
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: only raw system calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 || libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let private = (libc::MS_REC | libc::MS_PRIVATE) as libc::c_ulong;
            if libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), private, std::ptr::null()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            for (src, dst) in &mounts {
                let flags = libc::MS_BIND as libc::c_ulong;
                if libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), flags, std::ptr::null()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd
}

/// Runs a busybox command to completion (with a time limit) and returns its output.
pub fn run(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn busybox");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A long-running child killed on drop.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `busybox httpd` on `port` in the container, serving `body` as index.html.
pub fn httpd(att: &Attachment, dir: &Path, port: u16, body: &str) -> Daemon {
    let www: PathBuf = dir.join(format!("www-{port}-{}", body.len()));
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), body).unwrap();
    let mut cmd = bb(att, &["httpd", "-f", "-p", &port.to_string(), "-h", www.to_str().unwrap()]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let d = Daemon(cmd.spawn().unwrap());
    std::thread::sleep(Duration::from_millis(150));
    d
}

/// Retries `f` until it returns true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Names of all links in the calling thread's namespace.
pub fn links() -> Vec<String> {
    Netlink::open().unwrap().link_names().unwrap()
}

/// Whether a berth nftables table (`berth` or a root's `berth_...`) exists in the calling
/// thread's namespace.
pub fn berth_table_exists() -> bool {
    let out = nftables::helper::get_current_ruleset().unwrap();
    out.objects.iter().any(|o| {
        matches!(o, nftables::schema::NfObject::ListObject(nftables::schema::NfListObject::Table(t)) if t.name.starts_with("berth"))
    })
}

/// The nft ruleset as JSON text (for checking that rules exist).
pub fn ruleset_text() -> String {
    serde_json::to_string(&nftables::helper::get_current_ruleset().unwrap()).unwrap()
}
