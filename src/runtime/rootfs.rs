//! The container's file system view, built inside its new mount namespace: overlayfs of the
//! image layers, `/proc`, `/dev`, `/sys`, the network module's etc files, the spec's mounts,
//! then `pivot_root` and the masked and read-only paths docker applies.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{SFlag, makedev};

use super::cgroups::Cgroup;
use super::spec::{ContainerSpec, MountKind, MountSpec};
use super::syscall::Syscall;

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

fn fail(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> RootfsError {
    let path = path.as_ref().display().to_string();
    move |source| RootfsError { what, path, source }
}

impl RootfsError {
    /// The errno, when the kernel gave one (the tests check it; messages show the source).
    #[cfg(test)]
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
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
                let dest = fs::read_link(root.join(&candidate)).map_err(fail("readlink", &candidate))?;
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
        fs::create_dir_all(path).map_err(fail("mkdir", path))
    } else {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(fail("mkdir", parent))?;
        }
        fs::File::create(path).map(drop).map_err(fail("create", path))
    }
}

pub(crate) fn overlay_options(dirs: &RootfsDirs, lowers: &[PathBuf]) -> String {
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
pub fn build(
    sys: &dyn Syscall,
    spec: &ContainerSpec,
    dirs: &RootfsDirs,
    console: Option<&Path>,
    cgroup: &Cgroup,
) -> Result<()> {
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)
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
    let overlay = Some(Path::new("overlay"));
    if let Err(e) = sys.mount(overlay, root, Some("overlay"), MsFlags::empty(), Some(volatile.as_str())) {
        // Kernels before 5.10 know no `volatile`.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(fail("mount overlay", root)(e));
        }
        sys.mount(overlay, root, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
            .map_err(fail("mount overlay", root))?;
    }

    mount_proc_and_sys(sys, spec, root)?;
    let cgroup_dir = secure_join(root, "/sys/fs/cgroup")?;
    cgroup.mount_view(sys, &cgroup_dir, spec.security.privileged).map_err(|e| RootfsError {
        what: "mount cgroup",
        path: e.path.display().to_string(),
        source: e.source,
    })?;
    mount_dev(sys, spec, root, console)?;

    for (file, target) in [
        (&spec.etc_files.hosts, "/etc/hosts"),
        (&spec.etc_files.resolv_conf, "/etc/resolv.conf"),
        (&spec.etc_files.hostname, "/etc/hostname"),
    ] {
        if let Some(source) = file {
            let dest = secure_join(root, target)?;
            ensure(&dest, false)?;
            bind(sys, source, &dest, false)?;
        }
    }
    for m in &spec.mounts {
        mount_one(sys, root, m)?;
    }
    pivot(sys, root)
}

fn mount_proc_and_sys(sys: &dyn Syscall, spec: &ContainerSpec, root: &Path) -> Result<()> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    let proc_dir = secure_join(root, "/proc")?;
    ensure(&proc_dir, true)?;
    sys.mount(Some(Path::new("proc")), &proc_dir, Some("proc"), nosuid, None)
        .map_err(fail("mount proc", &proc_dir))?;
    let sysfs = secure_join(root, "/sys")?;
    ensure(&sysfs, true)?;
    let ro = if spec.security.privileged { MsFlags::empty() } else { MsFlags::MS_RDONLY };
    if sys.mount(Some(Path::new("sysfs")), &sysfs, Some("sysfs"), nosuid | ro, None).is_err() {
        // Without a network namespace of its own the kernel refuses a new sysfs; bind the host's.
        sys.mount(Some(Path::new("/sys")), &sysfs, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
            .map_err(fail("bind /sys", &sysfs))?;
        remount_ro(sys, &sysfs, MsFlags::MS_REC)?;
    }
    Ok(())
}

fn mount_dev(sys: &dyn Syscall, spec: &ContainerSpec, root: &Path, console: Option<&Path>) -> Result<()> {
    let dev = secure_join(root, "/dev")?;
    ensure(&dev, true)?;
    sys.mount(
        Some(Path::new("tmpfs")),
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
        // Mode 0666 after the umask too: the nodes must be usable by every user.
        sys.mknod(&path, SFlag::S_IFCHR, 0o666, makedev(major, minor)).map_err(fail("mknod", &path))?;
    }
    for (link, dest) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        sys.symlink(Path::new(dest), &dev.join(link)).map_err(fail("symlink", dev.join(link)))?;
    }
    let pts = dev.join("pts");
    ensure(&pts, true)?;
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )
    .map_err(fail("mount devpts", &pts))?;
    let shm = dev.join("shm");
    ensure(&shm, true)?;
    let shm_size = spec.shm_size.unwrap_or(64 * 1024 * 1024);
    sys.mount(
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        Some(format!("mode=1777,size={shm_size}").as_str()),
    )
    .map_err(fail("mount /dev/shm", &shm))?;
    let mqueue = dev.join("mqueue");
    ensure(&mqueue, true)?;
    sys.mount(
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV,
        None,
    )
    .map_err(fail("mount mqueue", &mqueue))?;
    if let Some(console) = console {
        let target = dev.join("console");
        ensure(&target, false)?;
        bind(sys, console, &target, false)?;
    }
    for d in &spec.devices {
        let target = secure_join(root, &d.container_path)?;
        ensure(&target, false)?;
        bind(sys, &d.host_path, &target, false)?;
    }
    Ok(())
}

fn bind(sys: &dyn Syscall, source: &Path, target: &Path, recursive: bool) -> Result<()> {
    let flags = if recursive { MsFlags::MS_BIND | MsFlags::MS_REC } else { MsFlags::MS_BIND };
    sys.mount(Some(source), target, None, flags, None).map_err(fail("bind", target))
}

fn remount_ro(sys: &dyn Syscall, target: &Path, extra: MsFlags) -> Result<()> {
    // A bind mount keeps its source's flags; read-only needs a second, remounting call, and
    // that call must repeat the flags the kernel locked (nosuid and friends) or it is refused.
    let locked = sys.locked_flags(target).map_err(fail("statvfs", target))?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra | locked;
    sys.mount(None, target, None, flags, None).map_err(fail("remount read-only", target))
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

/// Mounts `m` under `root` (resolved inside it), as the container's start does.
pub(crate) fn mount_one(sys: &dyn Syscall, root: &Path, m: &MountSpec) -> Result<()> {
    let target = secure_join(root, &m.target)?;
    match &m.kind {
        MountKind::Bind { source, propagation, non_recursive } => {
            let is_dir = fs::metadata(source).map_err(fail("bind source", source))?.is_dir();
            ensure(&target, is_dir)?;
            bind(sys, source, &target, !non_recursive)?;
            sys.mount(None, &target, None, propagation_flags(propagation.as_deref()), None)
                .map_err(fail("set propagation", &target))?;
            if m.read_only {
                remount_ro(sys, &target, if *non_recursive { MsFlags::empty() } else { MsFlags::MS_REC })?;
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
            sys.mount(Some(Path::new("tmpfs")), &target, Some("tmpfs"), flags, Some(data.as_str()))
                .map_err(fail("mount tmpfs", &target))?;
        }
    }
    Ok(())
}

fn pivot(sys: &dyn Syscall, root: &Path) -> Result<()> {
    sys.chdir(root).map_err(fail("chdir", root))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching "." then drops it
    // without needing a dir for it inside the container (runc's trick).
    let here = Path::new(".");
    sys.pivot_root(here, here).map_err(fail("pivot_root", root))?;
    sys.umount(here, MntFlags::MNT_DETACH).map_err(fail("detach old root", "/"))?;
    sys.chdir(Path::new("/")).map_err(fail("chdir", "/"))
}

/// After `pivot_root`: hides docker's masked paths and makes its read-only paths read-only.
/// `root` is `/` (the container's, after `pivot_root`); tests give a dir standing for it.
pub fn protect_paths(sys: &dyn Syscall, root: &Path) -> Result<()> {
    let under = |path: &str| root.join(path.trim_start_matches('/'));
    for path in MASKED_PATHS {
        let path = under(path);
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            sys.mount(Some(Path::new("tmpfs")), &path, Some("tmpfs"), MsFlags::MS_RDONLY, None)
                .map_err(fail("mask", &path))?;
        } else {
            bind(sys, Path::new("/dev/null"), &path, false)?;
        }
    }
    for path in READONLY_PATHS {
        let path = under(path);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        bind(sys, &path, &path, true)?;
        remount_ro(sys, &path, MsFlags::MS_REC)?;
    }
    Ok(())
}

/// Makes `/` read-only (`read_only: true`); the mounts under it keep their own flags.
pub fn make_root_readonly(sys: &dyn Syscall) -> Result<()> {
    remount_ro(sys, Path::new("/"), MsFlags::empty())
}

/// Writes namespaced sysctls through `/proc/sys` (before it is made read-only).
pub fn write_sysctls(sys: &dyn Syscall, sysctls: &std::collections::BTreeMap<String, String>) -> Result<()> {
    for (key, value) in sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        sys.write(Path::new(&path), value).map_err(fail("sysctl", &path))?;
    }
    Ok(())
}

/// Creates the working dir (docker creates a missing WORKDIR) owned by the process's user.
pub fn ensure_workdir(cwd: &str, uid: u32, gid: u32) -> Result<()> {
    let path = Path::new(if cwd.is_empty() { "/" } else { cwd });
    if fs::metadata(path).is_err() {
        fs::create_dir_all(path).map_err(fail("create working dir", path))?;
        let _ = nix::unistd::chown(path, Some(uid.into()), Some(gid.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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

#[cfg(test)]
mod sequence_tests {
    //! The mount sequence of a container, from the calls it makes (no root needed: the
    //! recorder makes none; mount points are made in a temporary dir standing for the rootfs).
    use super::*;
    use crate::runtime::spec::{DeviceSpec, EtcFiles, MountKind, MountSpec};
    use crate::runtime::syscall::Recorder;

    struct Fixture {
        dir: tempfile::TempDir,
        dirs: RootfsDirs,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
            let p = dir.path();
            let dirs = RootfsDirs {
                rootfs: p.join("rootfs"),
                upper: p.join("upper"),
                work: p.join("work"),
                empty: p.join("empty"),
            };
            fs::create_dir_all(&dirs.rootfs).unwrap();
            fs::create_dir_all(p.join("host/data")).unwrap();
            fs::write(p.join("host/hosts"), "").unwrap();
            fs::write(p.join("host/config.yml"), "").unwrap();
            Fixture { dir, dirs }
        }

        fn host(&self, rel: &str) -> PathBuf {
            self.dir.path().join("host").join(rel)
        }

        fn recorder(&self) -> Recorder {
            Recorder::under(self.dir.path())
        }

        fn cgroup(&self) -> Cgroup {
            Cgroup::v2(&self.dir.path().join("cgroup"), "c1")
        }
    }

    fn spec(f: &Fixture) -> ContainerSpec {
        let mut spec = ContainerSpec::default();
        spec.rootfs.lower_dirs = vec!["/layers/0".into(), "/layers/1".into()];
        spec.etc_files = EtcFiles { hosts: Some(f.host("hosts")), ..EtcFiles::default() };
        spec.mounts = vec![
            MountSpec {
                target: "/data".into(),
                kind: MountKind::Bind {
                    source: f.host("data"),
                    propagation: Some("rshared".into()),
                    non_recursive: false,
                },
                read_only: false,
                volume: Some("data".into()),
            },
            MountSpec {
                target: "/etc/app/config.yml".into(),
                kind: MountKind::Bind {
                    source: f.host("config.yml"),
                    propagation: None,
                    non_recursive: true,
                },
                read_only: true,
                volume: None,
            },
            MountSpec {
                target: "/run".into(),
                kind: MountKind::Tmpfs { size: Some(1 << 20), mode: Some(0o755) },
                read_only: false,
                volume: None,
            },
        ];
        spec.devices = vec![DeviceSpec {
            host_path: "/dev/fuse".into(),
            container_path: "/dev/fuse".into(),
            permissions: "rwm".into(),
        }];
        spec.shm_size = Some(128 << 20);
        spec
    }

    #[test]
    fn a_container_is_built_with_dockers_mounts_in_order() {
        let f = Fixture::new();
        let sys = f.recorder();
        build(&sys, &spec(&f), &f.dirs, None, &f.cgroup()).unwrap();
        let overlay = "lowerdir=/layers/1:/layers/0,upperdir=/upper,workdir=/work"
            .replace("/upper", &f.dirs.upper.display().to_string());
        let overlay = overlay.replace("/work", &f.dirs.work.display().to_string());
        assert_eq!(
            sys.calls(),
            [
                "mount - / - REC|PRIVATE".to_string(),
                format!("mount overlay /rootfs overlay - {overlay},volatile"),
                "mount proc /rootfs/proc proc NOSUID|NODEV|NOEXEC".into(),
                "mount sysfs /rootfs/sys sysfs RDONLY|NOSUID|NODEV|NOEXEC".into(),
                "mount cgroup2 /rootfs/sys/fs/cgroup cgroup2 RDONLY|NOSUID|NODEV|NOEXEC".into(),
                "mount tmpfs /rootfs/dev tmpfs NOSUID|STRICTATIME mode=755,size=65536k".into(),
                "mknod /rootfs/dev/null c 1:3 666".into(),
                "mknod /rootfs/dev/zero c 1:5 666".into(),
                "mknod /rootfs/dev/full c 1:7 666".into(),
                "mknod /rootfs/dev/random c 1:8 666".into(),
                "mknod /rootfs/dev/urandom c 1:9 666".into(),
                "mknod /rootfs/dev/tty c 5:0 666".into(),
                "symlink /rootfs/dev/fd -> /proc/self/fd".into(),
                "symlink /rootfs/dev/stdin -> /proc/self/fd/0".into(),
                "symlink /rootfs/dev/stdout -> /proc/self/fd/1".into(),
                "symlink /rootfs/dev/stderr -> /proc/self/fd/2".into(),
                "symlink /rootfs/dev/ptmx -> pts/ptmx".into(),
                "symlink /rootfs/dev/core -> /proc/kcore".into(),
                "mount devpts /rootfs/dev/pts devpts NOSUID|NOEXEC newinstance,ptmxmode=0666,mode=0620,gid=5"
                    .into(),
                "mount shm /rootfs/dev/shm tmpfs NOSUID|NODEV|NOEXEC mode=1777,size=134217728".into(),
                "mount mqueue /rootfs/dev/mqueue mqueue NOSUID|NODEV|NOEXEC".into(),
                "mount /dev/fuse /rootfs/dev/fuse - BIND".into(),
                "mount /host/hosts /rootfs/etc/hosts - BIND".into(),
                // A volume: recursive bind, then its propagation.
                "mount /host/data /rootfs/data - BIND|REC".into(),
                "mount - /rootfs/data - REC|SHARED".into(),
                // A read-only file bind, non-recursive: rprivate, then the read-only remount.
                "mount /host/config.yml /rootfs/etc/app/config.yml - BIND".into(),
                "mount - /rootfs/etc/app/config.yml - REC|PRIVATE".into(),
                "mount - /rootfs/etc/app/config.yml - RDONLY|REMOUNT|BIND".into(),
                "mount tmpfs /rootfs/run tmpfs NOSUID|NODEV mode=755,size=1048576".into(),
                "chdir /rootfs".into(),
                "pivot_root . .".into(),
                "umount . MntFlags(MNT_DETACH)".into(),
                "chdir /".into(),
            ]
        );
        // The mount points were made inside the rootfs, a file for a file.
        assert!(f.dirs.rootfs.join("data").is_dir());
        assert!(f.dirs.rootfs.join("etc/app/config.yml").is_file());
        assert!(f.dirs.rootfs.join("dev/pts").is_dir());
    }

    #[test]
    fn a_privileged_container_gets_writable_sys_and_cgroups() {
        let f = Fixture::new();
        let sys = f.recorder();
        let mut spec = spec(&f);
        spec.security.privileged = true;
        build(&sys, &spec, &f.dirs, None, &f.cgroup()).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&"mount sysfs /rootfs/sys sysfs NOSUID|NODEV|NOEXEC".to_string()));
        assert!(
            calls.contains(&"mount cgroup2 /rootfs/sys/fs/cgroup cgroup2 NOSUID|NODEV|NOEXEC".to_string())
        );
    }

    #[test]
    fn sysfs_refused_binds_the_hosts_read_only_and_old_kernels_get_overlay_without_volatile() {
        let f = Fixture::new();
        let mut sys = f.recorder();
        sys.fail_on = Some(("volatile".into(), libc::EINVAL));
        let mut locked = std::collections::BTreeMap::new();
        locked.insert(f.dirs.rootfs.join("sys"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        sys.locked = locked;
        let spec = spec(&f);
        build(&sys, &spec, &f.dirs, None, &f.cgroup()).unwrap();
        let overlay = sys.calls_starting("mount overlay");
        assert_eq!(overlay.len(), 1);
        assert!(!overlay[0].contains("volatile"));

        let f = Fixture::new();
        let mut sys = f.recorder();
        sys.fail_on = Some(("mount sysfs".into(), libc::EPERM));
        sys.locked.insert(f.dirs.rootfs.join("sys"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        build(&sys, &spec, &f.dirs, None, &f.cgroup()).unwrap();
        let calls = sys.calls();
        let at = calls.iter().position(|c| c == "mount /sys /rootfs/sys - BIND|REC").unwrap();
        // The remount repeats the flags the kernel locked on the bind.
        assert_eq!(calls[at + 1], "mount - /rootfs/sys - RDONLY|NOSUID|NOEXEC|REMOUNT|BIND|REC");
    }

    #[test]
    fn a_failed_call_stops_the_build_and_keeps_its_errno() {
        let f = Fixture::new();
        let mut sys = f.recorder();
        sys.fail_on = Some(("mount overlay".into(), libc::EPERM));
        let err = build(&sys, &spec(&f), &f.dirs, None, &f.cgroup()).unwrap_err();
        assert_eq!(err.what, "mount overlay");
        assert_eq!(err.errno(), Some(libc::EPERM));
        assert_eq!(sys.calls(), ["mount - / - REC|PRIVATE"]);

        let f = Fixture::new();
        let mut sys = f.recorder();
        sys.fail_on = Some(("/rootfs/data - BIND".into(), libc::ENOENT));
        let err = build(&sys, &spec(&f), &f.dirs, None, &f.cgroup()).unwrap_err();
        assert_eq!((err.what, err.errno()), ("bind", Some(libc::ENOENT)));
        assert!(err.path.ends_with("rootfs/data"));
        assert!(sys.calls_starting("pivot_root").is_empty());
    }

    #[test]
    fn a_tty_gets_its_console_and_a_v1_host_a_tmpfs_of_binds() {
        let f = Fixture::new();
        let sys = f.recorder();
        let root = f.dir.path().join("cgroup");
        let cgroup =
            Cgroup::v1(&root, "c1", &[("memory", "memory"), ("cpu", "cpu,cpuacct"), ("pids", "pids")]);
        build(&sys, &spec(&f), &f.dirs, Some(Path::new("/dev/pts/3")), &cgroup).unwrap();
        let calls = sys.calls();
        assert!(calls.contains(&"mount /dev/pts/3 /rootfs/dev/console - BIND".to_string()));
        let view: Vec<String> =
            calls.iter().filter(|c| c.contains("/rootfs/sys/fs/cgroup")).cloned().collect();
        assert_eq!(
            view,
            [
                "mount tmpfs /rootfs/sys/fs/cgroup tmpfs NOSUID|NODEV|NOEXEC mode=755",
                "mkdir /rootfs/sys/fs/cgroup/memory",
                "mount /cgroup/memory/berth/c1 /rootfs/sys/fs/cgroup/memory - BIND",
                "mount - /rootfs/sys/fs/cgroup/memory - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND",
                "mkdir /rootfs/sys/fs/cgroup/cpu,cpuacct",
                "mount /cgroup/cpu/berth/c1 /rootfs/sys/fs/cgroup/cpu,cpuacct - BIND",
                "mount - /rootfs/sys/fs/cgroup/cpu,cpuacct - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND",
                "symlink /rootfs/sys/fs/cgroup/cpu -> cpu,cpuacct",
                "symlink /rootfs/sys/fs/cgroup/cpuacct -> cpu,cpuacct",
                "mkdir /rootfs/sys/fs/cgroup/pids",
                "mount /cgroup/pids/berth/c1 /rootfs/sys/fs/cgroup/pids - BIND",
                "mount - /rootfs/sys/fs/cgroup/pids - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND",
                "mount - /rootfs/sys/fs/cgroup - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT mode=755",
            ]
        );
    }

    #[test]
    fn masked_paths_are_hidden_and_readonly_paths_remounted() {
        let f = Fixture::new();
        let root = f.dir.path().join("root");
        for d in ["proc/acpi", "proc/sys", "proc/bus", "sys/firmware"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("proc/kcore"), "").unwrap();
        fs::write(root.join("proc/sysrq-trigger"), "").unwrap();
        let mut sys = f.recorder();
        sys.locked.insert(root.join("proc/sys"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
        protect_paths(&sys, &root).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mount tmpfs /root/proc/acpi tmpfs RDONLY",
                "mount /dev/null /root/proc/kcore - BIND",
                "mount tmpfs /root/sys/firmware tmpfs RDONLY",
                "mount /root/proc/bus /root/proc/bus - BIND|REC",
                "mount - /root/proc/bus - RDONLY|REMOUNT|BIND|REC",
                "mount /root/proc/sys /root/proc/sys - BIND|REC",
                "mount - /root/proc/sys - RDONLY|NOSUID|NODEV|NOEXEC|REMOUNT|BIND|REC",
                "mount /root/proc/sysrq-trigger /root/proc/sysrq-trigger - BIND|REC",
                "mount - /root/proc/sysrq-trigger - RDONLY|REMOUNT|BIND|REC",
            ]
        );
    }

    #[test]
    fn sysctls_and_a_read_only_root() {
        let sys = Recorder::default();
        let sysctls = [("net.core.somaxconn".to_string(), "1024".to_string())].into_iter().collect();
        write_sysctls(&sys, &sysctls).unwrap();
        make_root_readonly(&sys).unwrap();
        assert_eq!(
            sys.calls(),
            ["write /proc/sys/net/core/somaxconn 1024", "mount - / - RDONLY|REMOUNT|BIND"]
        );
    }
}
