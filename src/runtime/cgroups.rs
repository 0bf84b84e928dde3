//! cgroups for one container, on the v1 hierarchies (these machines) and the unified v2
//! hierarchy (most users'): create, join, limit, read OOM kills, kill what is left, remove.
//! Each container gets `berth/<id>` under each hierarchy it uses.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::spec::{DeviceSpec, ResourcesSpec};

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
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() { Version::V2 } else { Version::V1 }
}

/// One container's cgroup (a dir per v1 hierarchy, or one v2 dir).
#[derive(Debug, Clone)]
pub struct Cgroup {
    version: Version,
    /// v1: the container's dir under each hierarchy (memory first when present); v2: one dir.
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    /// The cgroup of container `id` (nothing is created).
    pub fn for_container(id: &str) -> Cgroup {
        let version = host_version();
        let dirs = match version {
            Version::V2 => vec![Path::new(CGROUP_ROOT).join("berth").join(id)],
            Version::V1 => {
                let mut seen = Vec::new();
                let mut dirs = Vec::new();
                for ctrl in V1_CONTROLLERS {
                    let hierarchy = Path::new(CGROUP_ROOT).join(ctrl);
                    // Co-mounted controllers (cpu,cpuacct) show as symlinks to one hierarchy;
                    // only those need resolving (one lstat for the others, not a readlink per
                    // path component).
                    let real = match fs::symlink_metadata(&hierarchy) {
                        Ok(meta) if meta.file_type().is_symlink() => {
                            let Ok(real) = fs::canonicalize(&hierarchy) else { continue };
                            real
                        }
                        Ok(_) => hierarchy.clone(),
                        Err(_) => continue,
                    };
                    if !seen.contains(&real) {
                        seen.push(real);
                        dirs.push(hierarchy.join("berth").join(id));
                    }
                }
                dirs
            }
        };
        Cgroup { version, dirs }
    }

    /// The cgroup version in use.
    pub fn version(&self) -> Version {
        self.version
    }

    fn v1_dir(&self, ctrl: &str) -> Option<&PathBuf> {
        let hierarchy = Path::new(CGROUP_ROOT).join(ctrl);
        self.dirs.iter().find(|d| d.starts_with(&hierarchy))
    }

    /// Creates the dirs and writes the limits.
    pub fn create(
        &self,
        res: &ResourcesSpec,
        devices: &[DeviceSpec],
        all_devices: bool,
    ) -> Result<(), CgroupError> {
        match self.version {
            Version::V2 => {
                let dir = &self.dirs[0];
                let parent = dir.parent().unwrap_or(Path::new(CGROUP_ROOT));
                fs::create_dir_all(parent).map_err(err(parent))?;
                // Controllers must be enabled in every ancestor for a child to use them.
                for p in [Path::new(CGROUP_ROOT), parent] {
                    let _ = enable_v2_controllers(p);
                }
                create_dir(dir)?;
                if !all_devices {
                    apply_v2_devices(dir, devices)?;
                }
                self.apply_v2(res)
            }
            Version::V1 => {
                for dir in &self.dirs {
                    create_dir(dir)?;
                }
                if let Some(dir) = self.v1_dir("cpuset") {
                    // A v1 cpuset starts empty and refuses tasks until cpus and mems are set.
                    for d in [dir.parent().unwrap_or(dir), dir.as_path()] {
                        copy_from_parent(d, "cpuset.cpus")?;
                        copy_from_parent(d, "cpuset.mems")?;
                    }
                }
                if let Some(dir) = self.v1_dir("devices") {
                    apply_v1_devices(dir, devices, all_devices)?;
                }
                self.apply_v1(res)
            }
        }
    }

    fn apply_v1(&self, res: &ResourcesSpec) -> Result<(), CgroupError> {
        if let Some(dir) = self.v1_dir("memory") {
            if let Some(m) = res.memory_reservation {
                write(dir, "memory.soft_limit_in_bytes", &m.to_string())?;
            }
            if let Some(m) = res.memory {
                write(dir, "memory.limit_in_bytes", &m.to_string())?;
                // docker: without memswap_limit, swap may take as much again as memory.
                let swap = res.memory_swap.unwrap_or(m.saturating_mul(2));
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
                }
            }
        }
        if let Some(dir) = self.v1_dir("cpu") {
            if let Some(shares) = res.cpu_shares {
                write(dir, "cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = res.cpu_period {
                write(dir, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = res.cpu_quota {
                write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(dir) = self.v1_dir("cpuset") {
            if let Some(cpus) = &res.cpuset_cpus {
                write(dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = &res.cpuset_mems {
                write(dir, "cpuset.mems", mems)?;
            }
        }
        if let (Some(dir), Some(limit)) = (self.v1_dir("pids"), res.pids_limit) {
            write(dir, "pids.max", &pids_max(limit))?;
        }
        Ok(())
    }

    fn apply_v2(&self, res: &ResourcesSpec) -> Result<(), CgroupError> {
        let dir = &self.dirs[0];
        if let Some(m) = res.memory_reservation {
            write(dir, "memory.low", &m.to_string())?;
        }
        if let Some(m) = res.memory {
            write(dir, "memory.max", &m.to_string())?;
            // v2 limits swap alone, not memory plus swap.
            let swap = match res.memory_swap {
                Some(-1) => "max".to_string(),
                Some(total) => total.saturating_sub(m).max(0).to_string(),
                None => m.to_string(),
            };
            if dir.join("memory.swap.max").exists() {
                write(dir, "memory.swap.max", &swap)?;
            }
        }
        if let Some(shares) = res.cpu_shares {
            // The mapping runc and crun use from shares (2..262144) to weight (1..10000).
            let weight = 1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write(dir, "cpu.weight", &weight.to_string())?;
        }
        if res.cpu_quota.is_some() || res.cpu_period.is_some() {
            let quota = match res.cpu_quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let period = res.cpu_period.unwrap_or(100_000);
            write(dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = &res.cpuset_cpus {
            write(dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &res.cpuset_mems {
            write(dir, "cpuset.mems", mems)?;
        }
        if let Some(limit) = res.pids_limit {
            write(dir, "pids.max", &pids_max(limit))?;
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Moves the calling process, which must be single-threaded, into the cgroup. On v1 it
    /// writes `0` (the caller) to each hierarchy's `tasks`: the kernel migrates one thread
    /// without taking the global threadgroup lock, whose writer waits for an RCU grace period
    /// (many milliseconds on a busy host) when `cgroup.procs` is written instead. One thread
    /// is the whole process here, and its children inherit the cgroup. v2 has no such file for
    /// a domain cgroup, so there `cgroup.procs` gets `0`.
    pub fn join_self(&self) -> Result<(), CgroupError> {
        let file = match self.version {
            Version::V1 => "tasks",
            Version::V2 => "cgroup.procs",
        };
        for dir in &self.dirs {
            write(dir, file, "0")?;
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
    pub fn mount_view(&self, target: &Path, writable: bool) -> Result<(), CgroupError> {
        use nix::mount::{MsFlags, mount};
        let mount_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: nix::errno::Errno| CgroupError { path, source: io::Error::from(e) }
        };
        let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let ro = if writable { MsFlags::empty() } else { MsFlags::MS_RDONLY };
        if !target.is_dir() {
            fs::create_dir_all(target).map_err(err(target))?;
        }
        match self.version {
            Version::V2 => mount(Some("cgroup2"), target, Some("cgroup2"), base | ro, None::<&str>)
                .map_err(mount_err(target)),
            Version::V1 => {
                mount(Some("tmpfs"), target, Some("tmpfs"), base, Some("mode=755"))
                    .map_err(mount_err(target))?;
                for dir in &self.dirs {
                    // <root>/<hierarchy>/berth/<id>: the hierarchy's real name (co-mounts resolved).
                    let Some(hierarchy) = dir.parent().and_then(Path::parent) else { continue };
                    let real = fs::canonicalize(hierarchy).unwrap_or_else(|_| hierarchy.to_path_buf());
                    let Some(name) = real.file_name() else { continue };
                    let dest = target.join(name);
                    fs::create_dir(&dest).map_err(err(&dest))?;
                    mount(Some(dir.as_path()), &dest, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                        .map_err(mount_err(&dest))?;
                    // A bind keeps its source's flags: the restrictions need a remount.
                    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | base | ro;
                    mount(None::<&str>, &dest, None::<&str>, flags, None::<&str>)
                        .map_err(mount_err(&dest))?;
                    let name = name.to_string_lossy();
                    if name.contains(',') {
                        for ctrl in name.split(',') {
                            let link = target.join(ctrl);
                            std::os::unix::fs::symlink(name.as_ref(), &link).map_err(err(&link))?;
                        }
                    }
                }
                if writable {
                    return Ok(());
                }
                let flags = MsFlags::MS_REMOUNT | base | MsFlags::MS_RDONLY;
                mount(None::<&str>, target, None::<&str>, flags, Some("mode=755")).map_err(mount_err(target))
            }
        }
    }

    /// How many times the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let (dir, file) = match self.version {
            Version::V2 => (Some(&self.dirs[0]), "memory.events"),
            Version::V1 => (self.v1_dir("memory"), "memory.oom_control"),
        };
        let Some(text) = dir.and_then(|d| fs::read_to_string(d.join(file)).ok()) else { return 0 };
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Processes in the cgroup.
    pub fn processes(&self) -> Vec<i32> {
        let Some(dir) = self.dirs.first() else { return Vec::new() };
        fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs every process left and removes the dirs, retrying while the kernel still counts
    /// dying tasks. Keeps going on errors and returns the first.
    pub fn destroy(&self) -> Result<(), CgroupError> {
        let mut first_error = None;
        for attempt in 0..200 {
            for pid in self.processes() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            }
            first_error = None;
            for dir in &self.dirs {
                match fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        first_error.get_or_insert(CgroupError { path: dir.clone(), source: e });
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

fn pids_max(limit: i64) -> String {
    if limit <= 0 { "max".to_string() } else { limit.to_string() }
}

/// Makes `dir`, and its parent (berth's own cgroup) the first time.
fn create_dir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = dir.parent().unwrap_or(Path::new(CGROUP_ROOT));
            fs::create_dir_all(parent).map_err(err(parent))?;
            match fs::create_dir(dir) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    Err(CgroupError { path: dir.to_path_buf(), source: e })
                }
                _ => Ok(()),
            }
        }
        Err(e) => Err(CgroupError { path: dir.to_path_buf(), source: e }),
    }
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(err(&path))
}

fn copy_from_parent(dir: &Path, file: &str) -> Result<(), CgroupError> {
    let own = dir.join(file);
    let current = fs::read_to_string(&own).map_err(err(&own))?;
    if !current.trim().is_empty() {
        return Ok(());
    }
    let parent = dir.parent().map(|p| p.join(file)).unwrap_or_default();
    let value = fs::read_to_string(&parent).map_err(err(&parent))?;
    fs::write(&own, value.trim()).map_err(err(&own))
}

fn enable_v2_controllers(dir: &Path) -> io::Result<()> {
    let available = fs::read_to_string(dir.join("cgroup.controllers"))?;
    for ctrl in available.split_whitespace() {
        if ["cpu", "cpuset", "memory", "pids", "io"].contains(&ctrl) {
            let _ = fs::write(dir.join("cgroup.subtree_control"), format!("+{ctrl}"));
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

/// v2 has no `devices.allow`: the same rules become an eBPF program on the cgroup.
fn apply_v2_devices(dir: &Path, devices: &[DeviceSpec]) -> Result<(), CgroupError> {
    let mut texts: Vec<String> = DEFAULT_DEVICE_RULES.iter().map(|r| r.to_string()).collect();
    for dev in devices {
        texts.push(device_rule(dev)?);
    }
    let rules: Vec<_> = texts.iter().filter_map(|t| super::devices_bpf::parse_rule(t)).collect();
    super::devices_bpf::attach(dir, &rules).map_err(err(dir))
}

fn apply_v1_devices(dir: &Path, devices: &[DeviceSpec], all: bool) -> Result<(), CgroupError> {
    if all {
        return write(dir, "devices.allow", "a");
    }
    write(dir, "devices.deny", "a")?;
    // One rule per write(2), all on one open file.
    let allow = dir.join("devices.allow");
    let mut file = fs::OpenOptions::new().write(true).open(&allow).map_err(err(&allow))?;
    for rule in DEFAULT_DEVICE_RULES {
        io::Write::write_all(&mut file, rule.as_bytes()).map_err(err(&allow))?;
    }
    for dev in devices {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = fs::metadata(&dev.host_path).map_err(err(&dev.host_path))?;
        let kind = if meta.file_type().is_block_device() { 'b' } else { 'c' };
        let rdev = meta.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        let access = if dev.permissions.is_empty() { "rwm" } else { dev.permissions.as_str() };
        io::Write::write_all(&mut file, format!("{kind} {major}:{minor} {access}").as_bytes())
            .map_err(err(&allow))?;
    }
    Ok(())
}
