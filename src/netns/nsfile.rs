//! Network namespace files: made by a short-lived thread that unshares its network namespace
//! and bind-mounts `/proc/thread-self/ns/net` onto `<run>/netns/<id>`; work inside one is done
//! on a dedicated thread that `setns`es into it, so no other thread (and no async worker) ever
//! changes namespace.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

use super::error::NetError;

/// Creates a new, empty network namespace and pins it at `path`.
pub fn create(path: &Path) -> Result<(), NetError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| NetError::sys(format!("create {}", dir.display()), e))?;
    }
    let target = path.to_path_buf();
    let result = std::thread::spawn(move || -> Result<(), NetError> {
        File::create(&target).map_err(|e| NetError::sys(format!("create {}", target.display()), e))?;
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetError::sys("unshare network namespace", e))?;
        mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|e| NetError::sys(format!("bind-mount netns on {}", target.display()), e))
    })
    .join()
    .unwrap_or_else(|_| Err(NetError::Invalid("netns thread panicked".into())));
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Unmounts and removes a netns file; a file that is already gone is not an error.
pub fn remove(path: &Path) -> Result<(), NetError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(NetError::sys(format!("unmount {}", path.display()), e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::sys(format!("remove {}", path.display()), e)),
    }
}

/// Opens a netns file.
pub fn open(path: &Path) -> Result<File, NetError> {
    File::open(path).map_err(|e| NetError::sys(format!("open netns {}", path.display()), e))
}

/// Runs `f` on a fresh thread that has joined the network namespace at `path`.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    let file = open(path)?;
    let p: PathBuf = path.to_path_buf();
    std::thread::spawn(move || {
        setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetError::sys(format!("setns {}", p.display()), e))?;
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(NetError::Invalid("netns thread panicked".into())))
}

/// Writes a sysctl of the calling thread's network namespace (`key` like
/// `net.ipv4.ip_forward`). Only `net.*` keys are accepted: others are not per-namespace.
pub fn sysctl(key: &str, value: &str) -> Result<(), NetError> {
    if !key.starts_with("net.") || key.contains('/') || key.contains("..") {
        return Err(NetError::Invalid(format!("sysctl {key} is not a network namespace sysctl")));
    }
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| NetError::sys(format!("set sysctl {key}={value}"), e))
}

/// Like [`sysctl`], for an interface-specific key whose interface name may hold dots.
pub fn sysctl_if(family: &str, iface: &str, key: &str, value: &str) -> Result<(), NetError> {
    let path = format!("/proc/sys/net/{family}/conf/{iface}/{key}");
    std::fs::write(&path, value)
        .map_err(|e| NetError::sys(format!("set sysctl net.{family}.conf.{iface}.{key}={value}"), e))
}
