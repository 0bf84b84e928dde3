//! cgroups for one container, on the v1 hierarchies (these machines) and the unified v2
//! hierarchy (most users'): create, join, limit, read OOM kills, kill what is left, remove.
//! Each container gets `berth/<id>` under each hierarchy it uses.
//!
//! [`Cgroup`] is one interface over two implementations, [`V1`] and [`V2`], chosen once when
//! the cgroup is looked up; every read and write of a cgroup file goes through a
//! [`Syscall`], so the files written for a spec are unit-tested for both versions.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::spec::{DeviceSpec, ResourcesSpec};
use super::syscall::Syscall;

/// Where cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The v1 controllers berth uses, each under its own hierarchy when mounted.
const V1_CONTROLLERS: [&str; 8] =
    ["cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"];

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {source}")]
pub struct CgroupError {
    /// The cgroup file or dir.
    pub path: PathBuf,
    /// The underlying error.
    pub source: io::Error,
}

fn err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError { path: path.to_path_buf(), source }
}

impl CgroupError {
    /// The errno, when the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// Which cgroup version the host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Per-controller hierarchies (cgroup v1, or hybrid with an empty v2 tree).
    V1,
    /// One unified hierarchy.
    V2,
}

/// The host's cgroup version: v2 when `/sys/fs/cgroup` itself is the unified hierarchy.
pub fn host_version() -> Version {
    // Looked at once per process: the host's cgroup mounts do not change under a command,
    // and every container status asks (about ten lstat calls for the v1 layout below).
    static VERSION: std::sync::OnceLock<Version> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() { Version::V2 } else { Version::V1 }
    })
}

/// The v1 hierarchies mounted under [`CGROUP_ROOT`], as (controller, real name), read once
/// per process (see [`host_version`]).
fn v1_layout() -> &'static [(&'static str, String)] {
    static LAYOUT: std::sync::OnceLock<Vec<(&'static str, String)>> = std::sync::OnceLock::new();
    LAYOUT.get_or_init(|| {
        let root = Path::new(CGROUP_ROOT);
        let mut seen = Vec::new();
        let mut found: Vec<(&'static str, String)> = Vec::new();
        for ctrl in V1_CONTROLLERS {
            let hierarchy = root.join(ctrl);
            // Co-mounted controllers (cpu,cpuacct) show as symlinks to one hierarchy; only
            // those need resolving (one lstat for the others, not a readlink per path
            // component).
            let real = match fs::symlink_metadata(&hierarchy) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    let Ok(real) = fs::canonicalize(&hierarchy) else { continue };
                    real
                }
                Ok(_) => hierarchy,
                Err(_) => continue,
            };
            if !seen.contains(&real) {
                let name = real.file_name().map_or(ctrl.to_string(), |n| n.to_string_lossy().into_owned());
                seen.push(real);
                found.push((ctrl, name));
            }
        }
        found
    })
}

/// Container ids that have a cgroup under berth's own (`berth/<id>`) in any hierarchy, read
/// from the file system mounted at `root` (`/sys/fs/cgroup` on a host).
pub fn container_ids(root: &Path) -> std::collections::BTreeSet<String> {
    let mut parents = vec![root.join("berth")];
    parents.extend(V1_CONTROLLERS.iter().map(|c| root.join(c).join("berth")));
    let mut ids = std::collections::BTreeSet::new();
    for parent in parents {
        let Ok(entries) = fs::read_dir(&parent) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir())
                && name.len() == 64
                && name.bytes().all(|b| b.is_ascii_hexdigit())
            {
                ids.insert(name);
            }
        }
    }
    ids
}

/// What a cgroup implementation does for one container; [`Cgroup`] picks the implementation.
trait Controller {
    /// Creates the dirs and writes the limits.
    fn create(
        &self,
        sys: &dyn Syscall,
        res: &ResourcesSpec,
        devices: &[DeviceSpec],
        all_devices: bool,
    ) -> Result<(), CgroupError>;
    /// The file to which `0` moves the calling single-threaded process (see
    /// [`Cgroup::join_self`]).
    fn join_file(&self) -> &'static str;
    /// Mounts the container's view at `target` (see [`Cgroup::mount_view`]).
    fn mount_view(&self, sys: &dyn Syscall, target: &Path, writable: bool) -> Result<(), CgroupError>;
    /// The file with the OOM kill count (`oom_kill N`), if the memory controller is in use.
    fn oom_file(&self) -> Option<PathBuf>;
    /// The container's dirs (the one listing processes first). A slice, so that the child
    /// joining the cgroup allocates nothing for it.
    fn dirs(&self) -> &[PathBuf];
}

/// cgroup v1: a dir per hierarchy.
#[derive(Debug, Clone)]
pub struct V1 {
    /// Where the hierarchies are mounted.
    root: PathBuf,
    hierarchies: Vec<Hierarchy>,
    /// Each hierarchy's `dir`, in order.
    dirs: Vec<PathBuf>,
}

/// One v1 hierarchy berth uses.
#[derive(Debug, Clone)]
struct Hierarchy {
    /// The controller by whose name the hierarchy was found (`cpu`).
    ctrl: &'static str,
    /// The hierarchy's real name, co-mounts resolved (`cpu,cpuacct`).
    name: String,
    /// The container's dir in it: `<root>/<ctrl>/berth/<id>`.
    dir: PathBuf,
}

/// cgroup v2: one dir in the unified hierarchy.
#[derive(Debug, Clone)]
pub struct V2 {
    /// Where the unified hierarchy is mounted.
    root: PathBuf,
    /// `<root>/berth/<id>`, alone.
    dirs: [PathBuf; 1],
}

#[derive(Debug, Clone)]
enum Imp {
    V1(V1),
    V2(V2),
}

/// One container's cgroup (a dir per v1 hierarchy, or one v2 dir).
#[derive(Debug, Clone)]
pub struct Cgroup {
    imp: Imp,
}

impl Cgroup {
    /// The cgroup of container `id` (nothing is created).
    pub fn for_container(id: &str) -> Cgroup {
        let root = Path::new(CGROUP_ROOT);
        match host_version() {
            Version::V2 => Cgroup::v2(root, id),
            Version::V1 => {
                let found: Vec<(&'static str, &str)> =
                    v1_layout().iter().map(|(c, n)| (*c, n.as_str())).collect();
                Cgroup::v1(root, id, &found)
            }
        }
    }

    /// The v2 cgroup of container `id` in the unified hierarchy mounted at `root`.
    pub fn v2(root: &Path, id: &str) -> Cgroup {
        Cgroup { imp: Imp::V2(V2 { root: root.to_path_buf(), dirs: [root.join("berth").join(id)] }) }
    }

    /// The v1 cgroup of container `id` in the hierarchies mounted under `root`, each given as
    /// (controller, real name): `("cpu", "cpu,cpuacct")` for a co-mount reached by its
    /// controller's symlink. The memory hierarchy first when present (`processes` reads it).
    pub fn v1(root: &Path, id: &str, hierarchies: &[(&'static str, &str)]) -> Cgroup {
        let hierarchies: Vec<Hierarchy> = hierarchies
            .iter()
            .map(|(ctrl, name)| Hierarchy {
                ctrl,
                name: name.to_string(),
                dir: root.join(ctrl).join("berth").join(id),
            })
            .collect();
        let dirs = hierarchies.iter().map(|h| h.dir.clone()).collect();
        Cgroup { imp: Imp::V1(V1 { root: root.to_path_buf(), hierarchies, dirs }) }
    }

    fn controller(&self) -> &dyn Controller {
        match &self.imp {
            Imp::V1(c) => c,
            Imp::V2(c) => c,
        }
    }

    /// The cgroup version in use.
    pub fn version(&self) -> Version {
        match self.imp {
            Imp::V1(_) => Version::V1,
            Imp::V2(_) => Version::V2,
        }
    }

    /// Creates the dirs and writes the limits; devices other than `devices` and docker's
    /// defaults are refused unless `all_devices` (privileged).
    pub fn create(
        &self,
        sys: &dyn Syscall,
        res: &ResourcesSpec,
        devices: &[DeviceSpec],
        all_devices: bool,
    ) -> Result<(), CgroupError> {
        self.controller().create(sys, res, devices, all_devices)
    }

    /// Moves the calling process, which must be single-threaded, into the cgroup. On v1 it
    /// writes `0` (the caller) to each hierarchy's `tasks`: the kernel migrates one thread
    /// without taking the global threadgroup lock, whose writer waits for an RCU grace period
    /// (many milliseconds on a busy host) when `cgroup.procs` is written instead. One thread
    /// is the whole process here, and its children inherit the cgroup. v2 has no such file for
    /// a domain cgroup, so there `cgroup.procs` gets `0`.
    pub fn join_self(&self, sys: &dyn Syscall) -> Result<(), CgroupError> {
        let c = self.controller();
        let file = c.join_file();
        for dir in c.dirs() {
            write(sys, dir, file, "0")?;
        }
        Ok(())
    }

    /// Mounts the container's own cgroup at `target` (its `/sys/fs/cgroup`, still seen from the
    /// host before `pivot_root`), as docker does, so that programs sizing themselves by their
    /// limits (JVM, Go, Node) find them. The caller is already in the cgroup and in a cgroup
    /// namespace of its own. v2: a cgroup2 mount, whose root is the namespace's root, i.e. the
    /// container's cgroup. v1: a tmpfs with one dir per hierarchy berth uses, each a bind of the
    /// container's dir there (runc's way without a cgroup namespace; a v1 mount from inside the
    /// namespace would need the hierarchy's exact options), and a symlink per controller of a
    /// co-mounted hierarchy (`cpu -> cpu,cpuacct`). Read-only unless `writable` (privileged).
    pub fn mount_view(&self, sys: &dyn Syscall, target: &Path, writable: bool) -> Result<(), CgroupError> {
        if !target.is_dir() {
            fs::create_dir_all(target).map_err(err(target))?;
        }
        self.controller().mount_view(sys, target, writable)
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self, sys: &dyn Syscall) -> u64 {
        let Some(text) = self.controller().oom_file().and_then(|f| sys.read(&f).ok()) else { return 0 };
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The container's dir that holds controller `ctrl`'s files (`memory`, `cpuacct`, `blkio`,
    /// `pids`): on v1 the dir in the hierarchy carrying it (co-mounts too), on v2 the one dir.
    pub fn controller_dir(&self, ctrl: &str) -> Option<&Path> {
        match &self.imp {
            Imp::V2(c) => Some(c.dirs[0].as_path()),
            Imp::V1(c) => c
                .hierarchies
                .iter()
                .find(|h| h.ctrl == ctrl || h.name.split(',').any(|n| n == ctrl))
                .map(|h| h.dir.as_path()),
        }
    }

    /// Processes in the cgroup.
    pub fn processes(&self, sys: &dyn Syscall) -> Vec<i32> {
        let Some(dir) = self.controller().dirs().first() else { return Vec::new() };
        sys.read(&dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The freezer's file and the values that freeze and thaw: v1 `freezer.state`
    /// (`FROZEN`/`THAWED`), v2 `cgroup.freeze` (`1`/`0`). `None` when v1 has no freezer
    /// hierarchy.
    fn freezer(&self) -> Option<(PathBuf, &'static str, &'static str)> {
        match &self.imp {
            Imp::V1(c) => c.dir("freezer").map(|d| (d.join("freezer.state"), "FROZEN", "THAWED")),
            Imp::V2(c) => Some((c.dirs[0].join("cgroup.freeze"), "1", "0")),
        }
    }

    /// Freezes (`true`) or thaws every process of the cgroup, and waits until the kernel says
    /// it is done (v1 passes through `FREEZING`; v2 reports `frozen 1` in `cgroup.events`).
    pub fn set_frozen(&self, sys: &dyn Syscall, frozen: bool) -> Result<(), CgroupError> {
        let Some((file, on, off)) = self.freezer() else {
            return Err(CgroupError {
                path: PathBuf::from(CGROUP_ROOT).join("freezer"),
                source: io::Error::new(io::ErrorKind::Unsupported, "no freezer hierarchy is mounted"),
            });
        };
        let dir = file.parent().unwrap_or(Path::new(CGROUP_ROOT));
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        write(sys, dir, name, if frozen { on } else { off })?;
        for _ in 0..1000 {
            if self.is_frozen(sys) == frozen {
                return Ok(());
            }
            // v1: writing FROZEN again retries tasks that were busy.
            if frozen && self.version() == Version::V1 {
                let _ = write(sys, dir, name, on);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(CgroupError {
            path: file.clone(),
            source: io::Error::new(io::ErrorKind::TimedOut, "the freezer did not settle"),
        })
    }

    /// Whether the cgroup is frozen (or freezing).
    pub fn is_frozen(&self, sys: &dyn Syscall) -> bool {
        match &self.imp {
            Imp::V1(c) => c
                .dir("freezer")
                .and_then(|d| sys.read(&d.join("freezer.state")).ok())
                .is_some_and(|t| t.trim() != "THAWED"),
            Imp::V2(c) => sys
                .read(&c.dirs[0].join("cgroup.events"))
                .ok()
                .is_some_and(|t| t.lines().any(|l| l.trim() == "frozen 1")),
        }
    }

    /// Removes the dirs when no process is in them (the kernel refuses to remove a cgroup that
    /// has one), killing nothing; whether none is left.
    pub fn remove_if_empty(&self, sys: &dyn Syscall) -> bool {
        let mut gone = true;
        for dir in self.controller().dirs() {
            match sys.rmdir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => gone = false,
            }
        }
        gone
    }

    /// SIGKILLs every process left and removes the dirs, retrying while the kernel still counts
    /// dying tasks. Keeps going on errors and returns the first.
    pub fn destroy(&self, sys: &dyn Syscall) -> Result<(), CgroupError> {
        // Frozen tasks (paused container) cannot die until thawed.
        if self.is_frozen(sys) {
            let _ = self.set_frozen(sys, false);
        }
        let mut first_error = None;
        for attempt in 0..200 {
            for pid in self.processes(sys) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
            first_error = None;
            for dir in self.controller().dirs() {
                match sys.rmdir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        first_error.get_or_insert(CgroupError { path: dir.to_path_buf(), source: e });
                    }
                }
            }
            if first_error.is_none() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(if attempt < 20 { 1 } else { 10 }));
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// The limits shared by both versions' mount flags.
fn view_flags(writable: bool) -> (MsFlags, MsFlags) {
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    (base, if writable { MsFlags::empty() } else { MsFlags::MS_RDONLY })
}

fn mount_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    err(path)
}

impl V1 {
    fn dir(&self, ctrl: &str) -> Option<&Path> {
        self.hierarchies.iter().find(|h| h.ctrl == ctrl).map(|h| h.dir.as_path())
    }

    fn limits(&self, sys: &dyn Syscall, res: &ResourcesSpec) -> Result<(), CgroupError> {
        if let Some(dir) = self.dir("memory") {
            if let Some(m) = res.memory_reservation {
                write(sys, dir, "memory.soft_limit_in_bytes", &m.to_string())?;
            }
            if let Some(m) = res.memory {
                write(sys, dir, "memory.limit_in_bytes", &m.to_string())?;
                // docker: without memswap_limit, swap may take as much again as memory.
                let swap = res.memory_swap.unwrap_or(m.saturating_mul(2));
                if sys.exists(&dir.join("memory.memsw.limit_in_bytes")) {
                    write(sys, dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
                }
            }
        }
        if let Some(dir) = self.dir("cpu") {
            if let Some(shares) = res.cpu_shares {
                write(sys, dir, "cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = res.cpu_period {
                write(sys, dir, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = res.cpu_quota {
                write(sys, dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(dir) = self.dir("cpuset") {
            if let Some(cpus) = &res.cpuset_cpus {
                write(sys, dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = &res.cpuset_mems {
                write(sys, dir, "cpuset.mems", mems)?;
            }
        }
        if let (Some(dir), Some(limit)) = (self.dir("pids"), res.pids_limit) {
            write(sys, dir, "pids.max", &pids_max(limit))?;
        }
        Ok(())
    }
}

impl Controller for V1 {
    fn create(
        &self,
        sys: &dyn Syscall,
        res: &ResourcesSpec,
        devices: &[DeviceSpec],
        all_devices: bool,
    ) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            create_dir(sys, &self.root, &h.dir)?;
        }
        if let Some(dir) = self.dir("cpuset") {
            // A v1 cpuset starts empty and refuses tasks until cpus and mems are set.
            for d in [dir.parent().unwrap_or(dir), dir] {
                copy_from_parent(sys, d, "cpuset.cpus")?;
                copy_from_parent(sys, d, "cpuset.mems")?;
            }
        }
        if let Some(dir) = self.dir("devices") {
            apply_v1_devices(sys, dir, devices, all_devices)?;
        }
        self.limits(sys, res)
    }

    fn join_file(&self) -> &'static str {
        "tasks"
    }

    fn mount_view(&self, sys: &dyn Syscall, target: &Path, writable: bool) -> Result<(), CgroupError> {
        let (base, ro) = view_flags(writable);
        sys.mount(Some(Path::new("tmpfs")), target, Some("tmpfs"), base, Some("mode=755"))
            .map_err(mount_err(target))?;
        for h in &self.hierarchies {
            let dest = target.join(&h.name);
            sys.mkdir(&dest).map_err(err(&dest))?;
            sys.mount(Some(h.dir.as_path()), &dest, None, MsFlags::MS_BIND, None)
                .map_err(mount_err(&dest))?;
            // A bind keeps its source's flags: the restrictions need a remount.
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | base | ro;
            sys.mount(None, &dest, None, flags, None).map_err(mount_err(&dest))?;
            if h.name.contains(',') {
                for ctrl in h.name.split(',') {
                    let link = target.join(ctrl);
                    sys.symlink(Path::new(&h.name), &link).map_err(err(&link))?;
                }
            }
        }
        if writable {
            return Ok(());
        }
        let flags = MsFlags::MS_REMOUNT | base | MsFlags::MS_RDONLY;
        sys.mount(None, target, None, flags, Some("mode=755")).map_err(mount_err(target))
    }

    fn oom_file(&self) -> Option<PathBuf> {
        self.dir("memory").map(|d| d.join("memory.oom_control"))
    }

    fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

impl V2 {
    fn limits(&self, sys: &dyn Syscall, res: &ResourcesSpec) -> Result<(), CgroupError> {
        let dir = self.dirs[0].as_path();
        if let Some(m) = res.memory_reservation {
            write(sys, dir, "memory.low", &m.to_string())?;
        }
        if let Some(m) = res.memory {
            write(sys, dir, "memory.max", &m.to_string())?;
            // v2 limits swap alone, not memory plus swap.
            let swap = match res.memory_swap {
                Some(-1) => "max".to_string(),
                Some(total) => total.saturating_sub(m).max(0).to_string(),
                None => m.to_string(),
            };
            if sys.exists(&dir.join("memory.swap.max")) {
                write(sys, dir, "memory.swap.max", &swap)?;
            }
        }
        if let Some(shares) = res.cpu_shares {
            // The mapping runc and crun use from shares (2..262144) to weight (1..10000).
            let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write(sys, dir, "cpu.weight", &weight.to_string())?;
        }
        if res.cpu_quota.is_some() || res.cpu_period.is_some() {
            let quota = match res.cpu_quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let period = res.cpu_period.unwrap_or(100_000);
            write(sys, dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = &res.cpuset_cpus {
            write(sys, dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &res.cpuset_mems {
            write(sys, dir, "cpuset.mems", mems)?;
        }
        if let Some(limit) = res.pids_limit {
            write(sys, dir, "pids.max", &pids_max(limit))?;
        }
        Ok(())
    }
}

impl Controller for V2 {
    fn create(
        &self,
        sys: &dyn Syscall,
        res: &ResourcesSpec,
        devices: &[DeviceSpec],
        all_devices: bool,
    ) -> Result<(), CgroupError> {
        let dir = self.dirs[0].as_path();
        let parent = dir.parent().unwrap_or(&self.root);
        sys.mkdir_all(parent).map_err(err(parent))?;
        // Controllers must be enabled in every ancestor for a child to use them.
        for p in [self.root.as_path(), parent] {
            let _ = enable_v2_controllers(sys, p);
        }
        create_dir(sys, &self.root, dir)?;
        if !all_devices {
            apply_v2_devices(sys, dir, devices)?;
        }
        self.limits(sys, res)
    }

    fn join_file(&self) -> &'static str {
        "cgroup.procs"
    }

    fn mount_view(&self, sys: &dyn Syscall, target: &Path, writable: bool) -> Result<(), CgroupError> {
        let (base, ro) = view_flags(writable);
        sys.mount(Some(Path::new("cgroup2")), target, Some("cgroup2"), base | ro, None)
            .map_err(mount_err(target))
    }

    fn oom_file(&self) -> Option<PathBuf> {
        Some(self.dirs[0].join("memory.events"))
    }

    fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }
}

fn pids_max(limit: i64) -> String {
    if limit <= 0 { "max".to_string() } else { limit.to_string() }
}

/// Makes `dir`, and its parent (berth's own cgroup) the first time.
fn create_dir(sys: &dyn Syscall, root: &Path, dir: &Path) -> Result<(), CgroupError> {
    match sys.mkdir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir.parent().unwrap_or(root);
            sys.mkdir_all(parent).map_err(err(parent))?;
            match sys.mkdir(dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    Err(CgroupError { path: dir.to_path_buf(), source: e })
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(CgroupError { path: dir.to_path_buf(), source: e }),
    }
}

fn write(sys: &dyn Syscall, dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    sys.write(&path, value).map_err(err(&path))
}

fn copy_from_parent(sys: &dyn Syscall, dir: &Path, file: &str) -> Result<(), CgroupError> {
    let own = dir.join(file);
    let current = sys.read(&own).map_err(err(&own))?;
    if !current.trim().is_empty() {
        return Ok(());
    }
    let parent = dir.parent().map(|p| p.join(file)).unwrap_or_default();
    let value = sys.read(&parent).map_err(err(&parent))?;
    sys.write(&own, value.trim()).map_err(err(&own))
}

fn enable_v2_controllers(sys: &dyn Syscall, dir: &Path) -> io::Result<()> {
    let available = sys.read(&dir.join("cgroup.controllers"))?;
    for ctrl in available.split_whitespace() {
        if ["cpu", "cpuset", "memory", "pids", "io"].contains(&ctrl) {
            let _ = sys.write(&dir.join("cgroup.subtree_control"), &format!("+{ctrl}"));
        }
    }
    Ok(())
}

/// Devices every container may use, as docker allows them (type, major, minor, access).
const DEFAULT_DEVICE_RULES: [&str; 12] = [
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",    // null
    "c 1:5 rwm",    // zero
    "c 1:7 rwm",    // full
    "c 1:8 rwm",    // random
    "c 1:9 rwm",    // urandom
    "c 5:0 rwm",    // tty
    "c 5:1 rwm",    // console
    "c 5:2 rwm",    // ptmx
    "c 136:* rwm",  // pts
    "c 10:200 rwm", // tun
];

/// The v1 rule allowing `dev` (`c 1:3 rw`), from the device node's type and numbers.
fn device_rule(dev: &DeviceSpec) -> Result<String, CgroupError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = fs::metadata(&dev.host_path).map_err(err(&dev.host_path))?;
    let kind = if meta.file_type().is_block_device() { 'b' } else { 'c' };
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let access = if dev.permissions.is_empty() { "rwm" } else { dev.permissions.as_str() };
    Ok(format!("{kind} {major}:{minor} {access}"))
}

/// docker's default rules, then one per device of the spec.
fn device_rules(devices: &[DeviceSpec]) -> Result<Vec<String>, CgroupError> {
    let mut texts: Vec<String> = DEFAULT_DEVICE_RULES.iter().map(|r| r.to_string()).collect();
    for dev in devices {
        texts.push(device_rule(dev)?);
    }
    Ok(texts)
}

/// v2 has no `devices.allow`: the same rules become an eBPF program on the cgroup.
fn apply_v2_devices(sys: &dyn Syscall, dir: &Path, devices: &[DeviceSpec]) -> Result<(), CgroupError> {
    let texts = device_rules(devices)?;
    let rules: Vec<_> = texts.iter().filter_map(|t| super::devices_bpf::parse_rule(t)).collect();
    sys.attach_device_filter(dir, &rules).map_err(err(dir))
}

fn apply_v1_devices(
    sys: &dyn Syscall,
    dir: &Path,
    devices: &[DeviceSpec],
    all: bool,
) -> Result<(), CgroupError> {
    if all {
        return write(sys, dir, "devices.allow", "a");
    }
    write(sys, dir, "devices.deny", "a")?;
    // One rule per write(2), all on one open file.
    let allow = dir.join("devices.allow");
    sys.write_each(&allow, &device_rules(devices)?).map_err(err(&allow))
}

#[cfg(test)]
mod tests {
    //! The files written for a spec, on v1 and v2, as docker (runc) writes them.
    use super::*;
    use crate::runtime::syscall::Recorder;

    const MIB: i64 = 1 << 20;

    /// `cpus: 1.5`, `mem_limit: 512m`, `mem_reservation: 256m`, `pids_limit: 100`,
    /// `cpu_shares: 512`, `cpuset: 0-1`, as the engine turns them into a spec.
    fn resources() -> ResourcesSpec {
        ResourcesSpec {
            memory: Some(512 * MIB),
            memory_reservation: Some(256 * MIB),
            cpu_quota: Some(150_000),
            cpu_period: Some(100_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0-1".into()),
            pids_limit: Some(100),
            ..ResourcesSpec::default()
        }
    }

    fn null_device() -> DeviceSpec {
        DeviceSpec {
            host_path: "/dev/null".into(),
            container_path: "/dev/mynull".into(),
            permissions: "rw".into(),
        }
    }

    fn v1() -> Cgroup {
        Cgroup::v1(
            Path::new("/cg"),
            "c1",
            &[
                ("memory", "memory"),
                ("cpu", "cpu,cpuacct"),
                ("cpuset", "cpuset"),
                ("devices", "devices"),
                ("pids", "pids"),
            ],
        )
    }

    fn v1_host() -> Recorder {
        let sys = Recorder::default();
        // A new cpuset starts empty; berth's own copies the host's first.
        sys.file("/cg/cpuset/cpuset.cpus", "0-3\n");
        sys.file("/cg/cpuset/cpuset.mems", "0\n");
        for d in ["/cg/cpuset/berth", "/cg/cpuset/berth/c1"] {
            sys.file(format!("{d}/cpuset.cpus"), "\n");
            sys.file(format!("{d}/cpuset.mems"), "\n");
        }
        sys.file("/cg/memory/berth/c1/memory.memsw.limit_in_bytes", "9223372036854771712\n");
        sys
    }

    fn v2_host() -> Recorder {
        let sys = Recorder::default();
        sys.file("/cg/cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n");
        sys.file("/cg/berth/cgroup.controllers", "cpuset cpu io memory pids\n");
        sys.file("/cg/berth/c1/memory.swap.max", "max\n");
        sys
    }

    #[test]
    fn the_freezer_is_freezer_state_on_v1_and_cgroup_freeze_on_v2() {
        let sys = Recorder::default();
        let frozen_v1 = Cgroup::v1(Path::new("/cg"), "c1", &[("memory", "memory"), ("freezer", "freezer")]);
        sys.file("/cg/freezer/berth/c1/freezer.state", "THAWED\n");
        assert!(!frozen_v1.is_frozen(&sys));
        frozen_v1.set_frozen(&sys, true).unwrap();
        assert!(frozen_v1.is_frozen(&sys));
        frozen_v1.set_frozen(&sys, false).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "write /cg/freezer/berth/c1/freezer.state FROZEN",
                "write /cg/freezer/berth/c1/freezer.state THAWED"
            ]
        );
        // Without a freezer hierarchy, pausing is refused with a reason.
        let e = v1().set_frozen(&sys, true).unwrap_err();
        assert!(e.to_string().contains("no freezer"), "{e}");

        // v2: the kernel says in cgroup.events when the freeze is done.
        let sys = Recorder::default();
        let v2 = Cgroup::v2(Path::new("/cg"), "c1");
        sys.file("/cg/berth/c1/cgroup.events", "populated 1\nfrozen 1\n");
        v2.set_frozen(&sys, true).unwrap();
        assert!(v2.is_frozen(&sys));
        assert_eq!(sys.calls(), ["write /cg/berth/c1/cgroup.freeze 1"]);
        // A freeze the kernel never finishes is an error, not a hang.
        sys.file("/cg/berth/c1/cgroup.events", "populated 1\nfrozen 1\n");
        let e = v2.set_frozen(&sys, false).unwrap_err();
        assert!(e.to_string().contains("did not settle"), "{e}");
    }

    #[test]
    fn v1_writes_the_files_runc_writes() {
        let sys = v1_host();
        v1().create(&sys, &resources(), &[null_device()], false).unwrap();
        let mut expected: Vec<String> = [
            "mkdir /cg/memory/berth/c1",
            "mkdir /cg/cpu/berth/c1",
            "mkdir /cg/cpuset/berth/c1",
            "mkdir /cg/devices/berth/c1",
            "mkdir /cg/pids/berth/c1",
            "write /cg/cpuset/berth/cpuset.cpus 0-3",
            "write /cg/cpuset/berth/cpuset.mems 0",
            "write /cg/cpuset/berth/c1/cpuset.cpus 0-3",
            "write /cg/cpuset/berth/c1/cpuset.mems 0",
            "write /cg/devices/berth/c1/devices.deny a",
        ]
        .map(String::from)
        .to_vec();
        for rule in DEFAULT_DEVICE_RULES {
            expected.push(format!("write /cg/devices/berth/c1/devices.allow {rule}"));
        }
        expected.push("write /cg/devices/berth/c1/devices.allow c 1:3 rw".into());
        expected.extend(
            [
                "write /cg/memory/berth/c1/memory.soft_limit_in_bytes 268435456",
                "write /cg/memory/berth/c1/memory.limit_in_bytes 536870912",
                // docker: swap as much again as memory when memswap_limit is not given.
                "write /cg/memory/berth/c1/memory.memsw.limit_in_bytes 1073741824",
                "write /cg/cpu/berth/c1/cpu.shares 512",
                "write /cg/cpu/berth/c1/cpu.cfs_period_us 100000",
                "write /cg/cpu/berth/c1/cpu.cfs_quota_us 150000",
                "write /cg/cpuset/berth/c1/cpuset.cpus 0-1",
                "write /cg/pids/berth/c1/pids.max 100",
            ]
            .map(String::from),
        );
        assert_eq!(sys.calls(), expected);
    }

    #[test]
    fn v2_writes_the_files_runc_writes() {
        let sys = v2_host();
        Cgroup::v2(Path::new("/cg"), "c1").create(&sys, &resources(), &[null_device()], false).unwrap();
        let calls = sys.calls();
        let mut expected: Vec<String> = vec!["mkdir -p /cg/berth".into()];
        for d in ["/cg", "/cg/berth"] {
            for c in ["cpuset", "cpu", "io", "memory", "pids"] {
                expected.push(format!("write {d}/cgroup.subtree_control +{c}"));
            }
        }
        expected.push("mkdir /cg/berth/c1".into());
        assert_eq!(calls[..expected.len()], expected[..]);
        // The device rules: docker's defaults then the spec's, as one eBPF filter.
        let attach = &calls[expected.len()];
        assert!(attach.starts_with("attach device filter /cg/berth/c1 "), "{attach}");
        let rules: Vec<_> = device_rules(&[null_device()])
            .unwrap()
            .iter()
            .filter_map(|t| crate::runtime::devices_bpf::parse_rule(t))
            .collect();
        assert_eq!(rules.len(), DEFAULT_DEVICE_RULES.len() + 1);
        assert_eq!(attach, &format!("attach device filter /cg/berth/c1 {rules:?}"));
        assert_eq!(
            calls[expected.len() + 1..],
            [
                "write /cg/berth/c1/memory.low 268435456",
                "write /cg/berth/c1/memory.max 536870912",
                // v2 limits swap alone: docker's default of memory again.
                "write /cg/berth/c1/memory.swap.max 536870912",
                // runc's shares to weight: 512 -> 20 (1024 -> 39).
                "write /cg/berth/c1/cpu.weight 20",
                "write /cg/berth/c1/cpu.max 150000 100000",
                "write /cg/berth/c1/cpuset.cpus 0-1",
                "write /cg/berth/c1/pids.max 100",
            ]
        );
    }

    #[test]
    fn unlimited_values_and_defaults() {
        let res = ResourcesSpec {
            memory: Some(512 * MIB),
            memory_swap: Some(-1),
            cpu_quota: Some(-1),
            cpu_period: Some(50_000),
            cpu_shares: Some(1024),
            pids_limit: Some(-1),
            ..ResourcesSpec::default()
        };
        let sys = v2_host();
        Cgroup::v2(Path::new("/cg"), "c1").create(&sys, &res, &[], true).unwrap();
        let writes = sys.calls_starting("write /cg/berth/c1/");
        assert_eq!(
            writes,
            [
                "write /cg/berth/c1/memory.max 536870912",
                "write /cg/berth/c1/memory.swap.max max",
                "write /cg/berth/c1/cpu.weight 39",
                "write /cg/berth/c1/cpu.max max 50000",
                "write /cg/berth/c1/pids.max max",
            ]
        );
        // Privileged: every device, no filter.
        assert!(sys.calls_starting("attach").is_empty());

        // memswap_limit is memory plus swap: v2 gets the swap part; without swap accounting
        // the file is absent and nothing is written.
        let res =
            ResourcesSpec { memory: Some(512 * MIB), memory_swap: Some(1024 * MIB), ..Default::default() };
        let sys = v2_host();
        Cgroup::v2(Path::new("/cg"), "c1").create(&sys, &res, &[], true).unwrap();
        assert!(sys.calls().contains(&"write /cg/berth/c1/memory.swap.max 536870912".to_string()));
        let sys = v1_host();
        sys.files.borrow_mut().remove(Path::new("/cg/memory/berth/c1/memory.memsw.limit_in_bytes"));
        v1().create(&sys, &res, &[], true).unwrap();
        assert_eq!(
            sys.calls_starting("write /cg/memory"),
            ["write /cg/memory/berth/c1/memory.limit_in_bytes 536870912"]
        );
        assert_eq!(sys.calls_starting("write /cg/devices"), ["write /cg/devices/berth/c1/devices.allow a"]);
    }

    #[test]
    fn a_missing_parent_is_made_and_a_refused_write_keeps_its_errno() {
        let mut sys = v1_host();
        sys.fail_on = Some(("pids.max".into(), libc::EINVAL));
        let err = v1().create(&sys, &resources(), &[], false).unwrap_err();
        assert_eq!(err.path, Path::new("/cg/pids/berth/c1/pids.max"));
        assert_eq!(err.errno(), Some(libc::EINVAL));
        assert_eq!(
            err.to_string(),
            format!("cgroup /cg/pids/berth/c1/pids.max: {}", io::Error::from_raw_os_error(libc::EINVAL))
        );
        let mut sys = v2_host();
        sys.fail_on = Some(("mkdir /cg/berth/c1".into(), libc::EACCES));
        assert_eq!(
            Cgroup::v2(Path::new("/cg"), "c1").create(&sys, &resources(), &[], false).unwrap_err().errno(),
            Some(libc::EACCES)
        );
    }

    #[test]
    fn joining_reading_and_removing() {
        let v2 = Cgroup::v2(Path::new("/cg"), "c1");
        let sys = Recorder::default();
        v2.join_self(&sys).unwrap();
        v1().join_self(&sys).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "write /cg/berth/c1/cgroup.procs 0",
                "write /cg/memory/berth/c1/tasks 0",
                "write /cg/cpu/berth/c1/tasks 0",
                "write /cg/cpuset/berth/c1/tasks 0",
                "write /cg/devices/berth/c1/tasks 0",
                "write /cg/pids/berth/c1/tasks 0",
            ]
        );
        let sys = Recorder::default();
        assert_eq!(v2.oom_kills(&sys), 0);
        sys.file("/cg/berth/c1/memory.events", "low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n");
        sys.file("/cg/memory/berth/c1/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
        assert_eq!(v2.oom_kills(&sys), 2);
        assert_eq!(v1().oom_kills(&sys), 3);
        assert!(v2.processes(&sys).is_empty());
        v1().destroy(&sys).unwrap();
        assert_eq!(sys.calls_starting("rmdir").len(), 5);
        assert_eq!(v2.version(), Version::V2);
        assert_eq!(v1().version(), Version::V1);
    }
}
