//! The container's file system view, built inside its new mount namespace: overlayfs of the
//! image layers, `/proc`, `/dev`, `/sys`, the network module's etc files, the spec's mounts,
//! then `pivot_root` and the masked and read-only paths docker applies.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::cgroups::Cgroup;
use super::spec::{ContainerSpec, MountKind, MountSpec};

/// A step of building the rootfs that failed.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct RootfsError {
    /// What was being done.
    pub what: &'static str,
    /// The path it was done on.
    pub path: String,
    /// The underlying error.
    pub source: io::Error,
}

type Result<T> = std::result::Result<T, RootfsError>;

fn fail(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(nix::errno::Errno) -> RootfsError {
    let path = path.as_ref().display().to_string();
    move |e| RootfsError { what, path, source: io::Error::from(e) }
}

fn fail_io(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.as_ref().display().to_string();
    move |source| RootfsError { what, path, source }
}

/// Paths docker hides from containers (files get /dev/null, dirs an empty read-only tmpfs).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths docker makes read-only.
pub const READONLY_PATHS: [&str; 5] =
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Where the container's dirs are, on the host.
#[derive(Debug, Clone)]
pub struct RootfsDirs {
    /// The mount point of the rootfs (`<run>/containers/<id>/rootfs`).
    pub rootfs: PathBuf,
    /// overlayfs upper dir (`<root>/containers/<id>/upper`).
    pub upper: PathBuf,
    /// overlayfs work dir.
    pub work: PathBuf,
    /// An empty dir used as the lower layer of an image without layers.
    pub empty: PathBuf,
}

/// Resolves `target` (absolute, inside the container) under `root` without ever leaving it:
/// each symlink met on the way is resolved as if `root` were `/`, as runc's securejoin does.
/// Missing components are kept as they are (to be created).
pub fn secure_join(root: &Path, target: impl AsRef<Path>) -> Result<PathBuf> {
    let target = target.as_ref();
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<std::ffi::OsString> = target.components().rev().filter_map(component_name).collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        match fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(RootfsError {
                        what: "resolve",
                        path: target.display().to_string(),
                        source: io::Error::from_raw_os_error(libc::ELOOP),
                    });
                }
                let dest = fs::read_link(root.join(&candidate)).map_err(fail_io("readlink", &candidate))?;
                if dest.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(dest.components().rev().filter_map(component_name));
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn component_name(c: Component<'_>) -> Option<std::ffi::OsString> {
    match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some(OsStr::new("..").to_os_string()),
        _ => None,
    }
}

/// Makes `path` a dir or an empty file, with missing parents.
fn ensure(path: &Path, dir: bool) -> Result<()> {
    if fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    if dir {
        fs::create_dir_all(path).map_err(fail_io("mkdir", path))
    } else {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(fail_io("mkdir", parent))?;
        }
        fs::File::create(path).map(drop).map_err(fail_io("create", path))
    }
}

fn overlay_options(dirs: &RootfsDirs, lowers: &[PathBuf]) -> String {
    // overlayfs wants the topmost lower dir first; the spec lists the bottom layer first.
    let lower: Vec<String> = if lowers.is_empty() {
        vec![dirs.empty.display().to_string()]
    } else {
        lowers.iter().rev().map(|p| p.display().to_string()).collect()
    };
    format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), dirs.upper.display(), dirs.work.display())
}

/// Builds the rootfs in the current (new) mount namespace, up to and including `pivot_root`.
/// Runs in the container's init before it drops privileges.
pub fn build(spec: &ContainerSpec, dirs: &RootfsDirs, console: Option<&Path>, cgroup: &Cgroup) -> Result<()> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(fail("make private", "/"))?;
    let options = overlay_options(dirs, &spec.rootfs.lower_dirs);
    if options.len() >= 4000 {
        return Err(RootfsError {
            what: "mount overlay",
            path: dirs.rootfs.display().to_string(),
            source: io::Error::other("too many image layers for one overlay mount"),
        });
    }
    let root = dirs.rootfs.as_path();
    // `volatile`: overlayfs would otherwise sync the whole upper file system (the host's
    // /var/lib) when the container's last process exits and the mount goes, which makes every
    // exit wait for all dirty data on that disk. A container's writable layer is as durable as
    // a plain process's files then: written back by the kernel, lost only by a crash within
    // seconds. overlayfs marks a volatile work dir so that it is not mounted again by mistake;
    // berth reuses it on purpose (restarts) and removes the mark first.
    let _ = fs::remove_dir_all(dirs.work.join("work/incompat/volatile"));
    let volatile = format!("{options},volatile");
    if let Err(e) = mount(Some("overlay"), root, Some("overlay"), MsFlags::empty(), Some(volatile.as_str())) {
        // Kernels before 5.10 know no `volatile`.
        if e != nix::errno::Errno::EINVAL {
            return Err(fail("mount overlay", root)(e));
        }
        mount(Some("overlay"), root, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
            .map_err(fail("mount overlay", root))?;
    }

    mount_proc_and_sys(spec, root)?;
    let cgroup_dir = secure_join(root, "/sys/fs/cgroup")?;
    cgroup.mount_view(&cgroup_dir, spec.security.privileged).map_err(|e| RootfsError {
        what: "mount cgroup",
        path: e.path.display().to_string(),
        source: e.source,
    })?;
    mount_dev(spec, root, console)?;

    for (file, target) in [
        (&spec.etc_files.hosts, "/etc/hosts"),
        (&spec.etc_files.resolv_conf, "/etc/resolv.conf"),
        (&spec.etc_files.hostname, "/etc/hostname"),
    ] {
        if let Some(source) = file {
            let dest = secure_join(root, target)?;
            ensure(&dest, false)?;
            bind(source, &dest, false)?;
        }
    }
    for m in &spec.mounts {
        mount_one(root, m)?;
    }
    pivot(root)
}

fn mount_proc_and_sys(spec: &ContainerSpec, root: &Path) -> Result<()> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let proc_dir = secure_join(root, "/proc")?;
    ensure(&proc_dir, true)?;
    mount(Some("proc"), &proc_dir, Some("proc"), nosuid, None::<&str>)
        .map_err(fail("mount proc", &proc_dir))?;
    let sys = secure_join(root, "/sys")?;
    ensure(&sys, true)?;
    let ro = if spec.security.privileged { MsFlags::empty() } else { MsFlags::MS_RDONLY };
    if mount(Some("sysfs"), &sys, Some("sysfs"), nosuid | ro, None::<&str>).is_err() {
        // Without a network namespace of its own the kernel refuses a new sysfs; bind the host's.
        mount(Some("/sys"), &sys, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .map_err(fail("bind /sys", &sys))?;
        remount_ro(&sys, MsFlags::MS_REC)?;
    }
    Ok(())
}

fn mount_dev(spec: &ContainerSpec, root: &Path, console: Option<&Path>) -> Result<()> {
    let dev = secure_join(root, "/dev")?;
    ensure(&dev, true)?;
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(fail("mount /dev", &dev))?;
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        let path = dev.join(name);
        mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), makedev(major, minor))
            .map_err(fail("mknod", &path))?;
        // mknod honours the umask; the nodes must be usable by every user.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).map_err(fail_io("chmod", &path))?;
    }
    for (link, dest) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        symlink(dest, dev.join(link)).map_err(fail_io("symlink", dev.join(link)))?;
    }
    let pts = dev.join("pts");
    ensure(&pts, true)?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(fail("mount devpts", &pts))?;
    let shm = dev.join("shm");
    ensure(&shm, true)?;
    let shm_size = spec.shm_size.unwrap_or(64 * 1024 * 1024);
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size={shm_size}").as_str()),
    )
    .map_err(fail("mount /dev/shm", &shm))?;
    let mqueue = dev.join("mqueue");
    ensure(&mqueue, true)?;
    mount(
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(fail("mount mqueue", &mqueue))?;
    if let Some(console) = console {
        let target = dev.join("console");
        ensure(&target, false)?;
        bind(console, &target, false)?;
    }
    for d in &spec.devices {
        let target = secure_join(root, &d.container_path)?;
        ensure(&target, false)?;
        bind(&d.host_path, &target, false)?;
    }
    Ok(())
}

fn bind(source: &Path, target: &Path, recursive: bool) -> Result<()> {
    let flags = if recursive { MsFlags::MS_BIND | MsFlags::MS_REC } else { MsFlags::MS_BIND };
    mount(Some(source), target, None::<&str>, flags, None::<&str>).map_err(fail("bind", target))
}

fn remount_ro(target: &Path, extra: MsFlags) -> Result<()> {
    // A bind mount keeps its source's flags; read-only needs a second, remounting call, and
    // that call must repeat the flags the kernel locked (nosuid and friends) or it is refused.
    let statfs = nix::sys::statvfs::statvfs(target).map_err(fail("statvfs", target))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra;
    use nix::sys::statvfs::FsFlags;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if statfs.flags().contains(f) {
            flags |= m;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(fail("remount read-only", target))
}

fn propagation_flags(name: Option<&str>) -> MsFlags {
    match name.unwrap_or("rprivate") {
        "private" => MsFlags::MS_PRIVATE,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        _ => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
    }
}

fn mount_one(root: &Path, m: &MountSpec) -> Result<()> {
    let target = secure_join(root, &m.target)?;
    match &m.kind {
        MountKind::Bind { source, propagation, non_recursive } => {
            let is_dir = fs::metadata(source).map_err(fail_io("bind source", source))?.is_dir();
            ensure(&target, is_dir)?;
            bind(source, &target, !non_recursive)?;
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                propagation_flags(propagation.as_deref()),
                None::<&str>,
            )
            .map_err(fail("set propagation", &target))?;
            if m.read_only {
                remount_ro(&target, if *non_recursive { MsFlags::empty() } else { MsFlags::MS_REC })?;
            }
        }
        MountKind::Tmpfs { size, mode } => {
            ensure(&target, true)?;
            let mut data = format!("mode={:o}", mode.unwrap_or(0o1777));
            if let Some(size) = size {
                data.push_str(&format!(",size={size}"));
            }
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if m.read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            mount(Some("tmpfs"), &target, Some("tmpfs"), flags, Some(data.as_str()))
                .map_err(fail("mount tmpfs", &target))?;
        }
    }
    Ok(())
}

fn pivot(root: &Path) -> Result<()> {
    nix::unistd::chdir(root).map_err(fail("chdir", root))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching "." then drops it
    // without needing a dir for it inside the container (runc's trick).
    nix::unistd::pivot_root(".", ".").map_err(fail("pivot_root", root))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(fail("detach old root", "/"))?;
    nix::unistd::chdir("/").map_err(fail("chdir", "/"))
}

/// After `pivot_root`: hides docker's masked paths and makes its read-only paths read-only.
pub fn protect_paths() -> Result<()> {
    for path in MASKED_PATHS {
        let Ok(meta) = fs::symlink_metadata(path) else { continue };
        if meta.is_dir() {
            mount(Some("tmpfs"), path, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
                .map_err(fail("mask", path))?;
        } else {
            bind(Path::new("/dev/null"), Path::new(path), false)?;
        }
    }
    for path in READONLY_PATHS {
        if fs::symlink_metadata(path).is_err() {
            continue;
        }
        bind(Path::new(path), Path::new(path), true)?;
        remount_ro(Path::new(path), MsFlags::MS_REC)?;
    }
    Ok(())
}

/// Makes `/` read-only (`read_only: true`); the mounts under it keep their own flags.
pub fn make_root_readonly() -> Result<()> {
    remount_ro(Path::new("/"), MsFlags::empty())
}

/// Writes namespaced sysctls through `/proc/sys` (before it is made read-only).
pub fn write_sysctls(sysctls: &std::collections::BTreeMap<String, String>) -> Result<()> {
    for (key, value) in sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        fs::write(&path, value).map_err(fail_io("sysctl", &path))?;
    }
    Ok(())
}

/// Creates the working dir (docker creates a missing WORKDIR) owned by the process's user.
pub fn ensure_workdir(cwd: &str, uid: u32, gid: u32) -> Result<()> {
    let path = Path::new(if cwd.is_empty() { "/" } else { cwd });
    if fs::metadata(path).is_err() {
        fs::create_dir_all(path).map_err(fail_io("create working dir", path))?;
        let _ = nix::unistd::chown(path, Some(uid.into()), Some(gid.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_stays_inside_root() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/etc", root.join("usr/lib/abs")).unwrap();
        symlink("../../../../../..", root.join("usr/lib/up")).unwrap();
        symlink("lib", root.join("usr/rel")).unwrap();
        assert_eq!(secure_join(root, "/usr/lib/abs/passwd").unwrap(), root.join("etc/passwd"));
        assert_eq!(secure_join(root, "/usr/lib/up/etc").unwrap(), root.join("etc"));
        assert_eq!(secure_join(root, "/usr/rel/x").unwrap(), root.join("usr/lib/x"));
        assert_eq!(secure_join(root, "/../../x").unwrap(), root.join("x"));
        symlink("loop", root.join("loop")).unwrap();
        assert!(secure_join(root, "/loop/x").is_err());
    }

    #[test]
    fn overlay_lists_the_top_layer_first() {
        let dirs =
            RootfsDirs { rootfs: "/r".into(), upper: "/u".into(), work: "/w".into(), empty: "/e".into() };
        assert_eq!(
            overlay_options(&dirs, &["/l0".into(), "/l1".into()]),
            "lowerdir=/l1:/l0,upperdir=/u,workdir=/w"
        );
        assert_eq!(overlay_options(&dirs, &[]), "lowerdir=/e,upperdir=/u,workdir=/w");
    }
}
