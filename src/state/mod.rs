//! On-disk state: where berth keeps things (root and run dirs), atomic record writes, and
//! project locks. Every module that writes a record goes through here so that a crash never
//! leaves a half-written file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Failures reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file system operation on a state path failed.
    #[error("{path}: {source}")]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A record could not be encoded or decoded.
    #[error("{path}: malformed record: {source}")]
    Json {
        /// The record's path.
        path: PathBuf,
        /// The decoder's error.
        source: serde_json::Error,
    },
}

impl StateError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StateError::Io { path: path.into(), source }
    }
}

/// The two directories berth works in: the persistent root (`/var/lib/berth`, `BERTH_ROOT`)
/// and the run dir (`/run/berth`, `BERTH_RUN`) for sockets, mount points, netns files and the DNS server's pid file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// Persistent state: images, containers, volumes, networks, projects.
    pub root: PathBuf,
    /// Volatile state that a reboot clears: sockets, rootfs mount points, netns files.
    pub run: PathBuf,
}

impl Dirs {
    /// Default root when neither `--root` nor `BERTH_ROOT` is given.
    pub const DEFAULT_ROOT: &'static str = "/var/lib/berth";
    /// Default run dir when neither `--run` nor `BERTH_RUN` is given.
    pub const DEFAULT_RUN: &'static str = "/run/berth";

    /// Dirs at the given places.
    pub fn new(root: impl Into<PathBuf>, run: impl Into<PathBuf>) -> Self {
        Dirs { root: root.into(), run: run.into() }
    }

    /// Dirs from `BERTH_ROOT` and `BERTH_RUN`, or the defaults.
    pub fn from_env() -> Self {
        let root = std::env::var_os("BERTH_ROOT").map(PathBuf::from);
        let run = std::env::var_os("BERTH_RUN").map(PathBuf::from);
        Dirs::new(
            root.unwrap_or_else(|| PathBuf::from(Self::DEFAULT_ROOT)),
            run.unwrap_or_else(|| PathBuf::from(Self::DEFAULT_RUN)),
        )
    }

    /// `<root>/images`: the OCI layout and unpacked layers.
    pub fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// `<root>/containers/<id>`: a container's record, overlay upper/work dirs and log.
    pub fn container(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    /// `<root>/containers`.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// `<run>/cache/compose-schema`: verdicts of the compose schema check by tree digest
    /// (the run dir: they need not outlive a reboot).
    pub fn schema_cache(&self) -> PathBuf {
        self.run.join("cache").join("compose-schema")
    }

    /// `<run>/containers/<id>`: rootfs mount point and shim socket.
    pub fn container_run(&self, id: &str) -> PathBuf {
        self.run.join("containers").join(id)
    }

    /// `<root>/volumes`.
    pub fn volumes(&self) -> PathBuf {
        self.root.join("volumes")
    }

    /// `<root>/networks`.
    pub fn networks(&self) -> PathBuf {
        self.root.join("networks")
    }

    /// `<run>/netns`: bind-mounted network namespaces, one file per container.
    pub fn netns(&self) -> PathBuf {
        self.run.join("netns")
    }

    /// `<root>/projects/<name>`.
    pub fn project(&self, name: &str) -> PathBuf {
        self.root.join("projects").join(name)
    }
}

/// Who may enter berth's folders. berth runs as root, and what it keeps (volume data,
/// containers' upper layers and logs, image layers, secrets) is no other local user's
/// business, so its folders are closed to them as docker's are (`/var/lib/docker` 0710,
/// `containers` 0710, `volumes` 0701, `image` 0700). A container running as any user still
/// reaches its root and volumes: root mounts them before the container's process starts, and
/// that process sees the mounts, never these paths. A volume's `_data` keeps its own mode
/// (the image's folder's, by copy-up), as docker's does.
pub mod mode {
    /// `<root>` and `<run>`: only root may list them; its group may pass (docker's root).
    pub const ROOT: u32 = 0o710;
    /// `<root>/images`: layers, blobs and the index.
    pub const IMAGES: u32 = 0o700;
    /// `<root>/containers` and each `<root>/containers/<id>` (upper layer, log, records), and
    /// `<run>/containers` and each `<run>/containers/<id>` (rootfs mount point, shim socket).
    pub const CONTAINERS: u32 = 0o710;
    /// `<root>/volumes` and each `<root>/volumes/<name>`: passable, not listable (docker's).
    pub const VOLUMES: u32 = 0o701;
    /// `<root>/networks`, `<root>/projects`, `<root>/build-cache`: records and locks.
    pub const PRIVATE: u32 = 0o700;
}

impl Dirs {
    /// berth's folders and their modes, parents first.
    fn layout(&self) -> [(PathBuf, u32); 9] {
        [
            (self.root.clone(), mode::ROOT),
            (self.images(), mode::IMAGES),
            (self.containers(), mode::CONTAINERS),
            (self.volumes(), mode::VOLUMES),
            (self.networks(), mode::PRIVATE),
            (self.root.join("projects"), mode::PRIVATE),
            (self.root.join("build-cache"), mode::PRIVATE),
            (self.run.clone(), mode::ROOT),
            (self.run.join("containers"), mode::CONTAINERS),
        ]
    }

    /// Makes berth's folders (see [`mode`]) with their modes, and narrows the modes of those
    /// that exist with wider ones (made by an earlier berth, or by hand). Done once per
    /// process and pair of dirs: a few `stat` calls.
    pub fn secure(&self) -> Result<(), StateError> {
        static DONE: std::sync::Mutex<Vec<Dirs>> = std::sync::Mutex::new(Vec::new());
        let mut done = DONE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if done.contains(self) {
            return Ok(());
        }
        for (dir, mode) in self.layout() {
            ensure_dir(&dir, mode)?;
        }
        done.push(self.clone());
        Ok(())
    }

    /// Makes folder `path` (with its missing parents) under these dirs with exactly `mode`,
    /// after [`Dirs::secure`]: `<root>/containers/<id>` with [`mode::CONTAINERS`], a volume's
    /// folder with [`mode::VOLUMES`].
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<(), StateError> {
        self.secure()?;
        ensure_dir(path, mode)
    }
}

/// Makes `dir` with exactly `mode` (not what the umask leaves of it), and its missing parents
/// as `mkdir -p` would (they may be the system's, as `/var/lib`; `dir` is what closes the
/// way); an existing `dir` gets `mode` if its own differs. A shared folder (sticky bit, as
/// `/tmp`) given as a root is left as it is.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), StateError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e| StateError::io(dir, e);
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            return Err(err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a folder")));
        }
        Ok(meta) => {
            let current = meta.permissions().mode() & 0o7777;
            if current == mode || current & 0o1000 != 0 {
                return Ok(());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                fs::create_dir_all(parent).map_err(|e| StateError::io(parent, e))?;
            }
            // Closed from the start (the umask can only narrow it); `AlreadyExists` is another
            // process making it at the same time.
            match fs::DirBuilder::new().mode(mode & 0o700).create(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
        }
        Err(e) => return Err(err(e)),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(err)
}

/// Writes `bytes` to `path` atomically: a temp file beside it, fsync, rename, fsync of the dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| StateError::io(dir, e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| StateError::io(path, e))
}

/// A record file that cannot be read (cut short, not JSON), found so that it is reported
/// once, by file, and repaired or removed with what it described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRecord {
    /// The name of what it describes (a network's, a volume's).
    pub name: String,
    /// The damaged file.
    pub file: PathBuf,
    /// What is wrong with it.
    pub reason: String,
    /// Its labels, from the record's copy (see [`write_json_with_copy`]) when one can be read:
    /// they tell whose it is where the name alone cannot.
    pub labels: Option<std::collections::BTreeMap<String, String>>,
}

/// Tells on standard error, at every log level and once per file in a process, that the
/// damaged file `path` was repaired (`what`: how). Repairs are silent otherwise, and a user
/// must learn which file was damaged (disk trouble, a tool that wrote where it should not).
pub fn report_repair(path: &Path, what: &str) {
    static SEEN: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let first = SEEN.lock().map(|mut seen| seen.insert(path.to_path_buf())).unwrap_or(true);
    if first {
        // A closed stderr must not stop the repair: the line is lost, nothing else.
        let _ = writeln!(std::io::stderr().lock(), "WARN {}: damaged; {what}", path.display());
    }
}

/// Where the copy of record `path` is kept (`<path>.copy`, which no reader of `*.json`
/// records takes for a record).
pub fn copy_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".copy");
    PathBuf::from(p)
}

/// Writes a record and a copy of it ([`copy_path`]), each atomically: the copy first, so that
/// a record that a later accident damages (cut short, overwritten) can be written anew from
/// it with everything it said (whose it is, its options), not only what its name tells.
pub fn write_json_with_copy<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    write_json(&copy_path(path), value)?;
    write_json(path, value)
}

/// Writes the copy of record `path` anew from the record when the record can be read and its
/// copy cannot (cut short, emptied, overwritten, lost) or says something else: the copy is
/// only worth keeping while it matches its record. Whether it was written. A record that
/// cannot be read is left to its owner's repair (which reads the copy).
pub fn repair_copy(path: &Path) -> bool {
    let Ok(record) = read_json::<serde_json::Value>(path) else { return false };
    if read_copy::<serde_json::Value>(path).is_some_and(|copy| copy == record) {
        return false;
    }
    let copy = copy_path(path);
    report_repair(&copy, "written anew from its record");
    write_json(&copy, &record).is_ok()
}

/// The copy of record `path`, when it can be read as a `T`.
pub fn read_copy<T: DeserializeOwned>(path: &Path) -> Option<T> {
    read_json(&copy_path(path)).ok()
}

/// The labels in the copy of record `path` (its `labels` object), when it can be read.
pub fn labels_of_copy(path: &Path) -> Option<std::collections::BTreeMap<String, String>> {
    let v: serde_json::Value = read_copy(path)?;
    serde_json::from_value(v.get("labels")?.clone()).ok()
}

/// Whether `name` is the temp file of an atomic write (`.<name>.tmp<pid>`): readers skip
/// these, and [`sweep_temp_files`] removes those whose writer is gone.
pub fn is_temp_name(name: &str) -> bool {
    temp_writer(name).is_some()
}

/// The pid of the process writing temp file `name`, when it is one.
fn temp_writer(name: &str) -> Option<i32> {
    let rest = name.strip_prefix('.')?;
    let (_, pid) = rest.rsplit_once(".tmp")?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then(|| pid.parse().ok()).flatten()
}

/// Removes the temp files of atomic writes in `dir` whose writer no longer runs (killed
/// between writing and renaming); those of a live writer stay. Returns the paths removed.
pub fn sweep_temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return removed };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_writer(&name) else { continue };
        if pid as u32 == std::process::id() || process_runs(pid) {
            continue;
        }
        if fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.path());
        }
    }
    removed
}

/// `f` of each item, in order, on up to four threads when there are enough items to pay for
/// them: reading a few small files per container is system-call bound, and a second core
/// halves a 200-container `ps`. Few items are done on the calling thread.
pub fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    const PER_THREAD: usize = 16;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4).min(items.len() / PER_THREAD);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let chunk = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> =
            items.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<R>>())).collect();
        // A panicking `f` panics here too, as it would have on one thread.
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// Whether process `pid` runs: it exists, is not a zombie (`kill(pid, 0)` succeeds on a
/// zombie, whose work is over) and is not dying (see [`process_name_if_runs`]).
pub fn process_runs(pid: i32) -> bool {
    process_name_if_runs(pid).is_some()
}

/// The name (`comm`) of process `pid` when it runs, from one read of `/proc/PID/status`. A
/// process that has been sent SIGKILL does not run: it keeps its name and a state other than
/// zombie until the kernel has scheduled it and torn it down, which on a busy host takes
/// milliseconds or more, and a command that took it for live in that time would keep a
/// container whose shim is already gone.
pub fn process_name_if_runs(pid: i32) -> Option<String> {
    if pid <= 0 {
        return None;
    }
    // /proc files have no size: `read_to_string` would probe with 32 bytes and grow, nine
    // reads for the ~1.4 KiB; a buffer that holds it all takes one read and the end.
    let mut status = Vec::with_capacity(4096);
    // (Through `take`: `File`'s own `read_to_end` asks its size first, an fstat and an lseek.)
    File::open(format!("/proc/{pid}/status")).and_then(|f| f.take(1 << 20).read_to_end(&mut status)).ok()?;
    parse_running_status(std::str::from_utf8(&status).ok()?)
}

/// The name in a `/proc/PID/status` text of a process that runs (see
/// [`process_name_if_runs`]).
fn parse_running_status(status: &str) -> Option<String> {
    let mut name = None;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        match key {
            "Name" => name = Some(value.to_string()),
            "State" if value.starts_with(['Z', 'X']) => return None,
            // SIGKILL sent to the process (kill, pidfd_send_signal) stays in the shared
            // pending set until it is reaped; sent to the thread (tgkill), in its own. The
            // per-thread bit and PF_EXITING come and go as the kernel takes the signal.
            "SigPnd" | "ShdPnd" => {
                const SIGKILL_BIT: u64 = 1 << (libc::SIGKILL - 1);
                if u64::from_str_radix(value, 16).is_ok_and(|set| set & SIGKILL_BIT != 0) {
                    return None;
                }
            }
            _ => {}
        }
    }
    name
}

/// A pidfd of process `pid` (`pidfd_open`), when it exists and the kernel has them.
pub fn pidfd_open(pid: i32) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if pid <= 0 {
        return None;
    }
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    // SAFETY: a new fd that nothing else owns.
    (fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// [`wait_fd_reaped`] for a pid whose pidfd is opened only now (the tests).
#[cfg(test)]
pub fn wait_reaped(pid: i32, name: &str, limit: std::time::Duration) -> bool {
    match pidfd_open(pid) {
        Some(fd) => wait_fd_reaped(&fd, pid, name, limit),
        None => !is_named(pid, name),
    }
}

/// Waits until process `pid` named `name` is gone from the process table: exited *and*
/// reaped, or `limit`; whether it is gone. A process that has exited but that its parent has
/// not reaped yet still shows in `/proc` under its name (a zombie). A shim or DNS process
/// whose starter has exited is init's child, and an init may reap lazily (seconds later):
/// a `down` that returned before then would leave its processes in the process table for
/// whoever looks right after. A pid that now names another process (reused) counts as gone.
/// `fd` is a pidfd of `pid` opened earlier (before it was signalled, so that it cannot name
/// a reused pid).
pub fn wait_fd_reaped(fd: &std::os::fd::OwnedFd, pid: i32, name: &str, limit: std::time::Duration) -> bool {
    use std::os::fd::AsRawFd;
    let end = std::time::Instant::now() + limit;
    loop {
        if !is_named(pid, name) {
            return true;
        }
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        // No event asked: since Linux 6.9 a pidfd reports POLLHUP once its process is reaped
        // (POLLIN, on exit, would wake at once on a zombie). Older kernels never report it:
        // the 50 ms cap bounds the latency there, and the name check above ends the wait.
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: 0, revents: 0 };
        let ms = left.min(std::time::Duration::from_millis(50)).as_millis() as i32 + 1;
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n > 0 && pfd.revents & libc::POLLHUP != 0 {
            return true;
        }
    }
}

/// Waits for several processes at once until each is gone from the process table (as
/// [`wait_fd_reaped`]), or `limit`; how many are left. One poll over all their pidfds: the wait
/// costs the slowest reap, not the sum of them.
pub fn wait_all_reaped(
    procs: &[(Option<std::os::fd::OwnedFd>, i32, &str)],
    limit: std::time::Duration,
) -> usize {
    use std::os::fd::AsRawFd;
    let end = std::time::Instant::now() + limit;
    let mut left: Vec<usize> = (0..procs.len()).collect();
    loop {
        left.retain(|&i| is_named(procs[i].1, procs[i].2));
        let time = end.saturating_duration_since(std::time::Instant::now());
        if left.is_empty() || time.is_zero() {
            return left.len();
        }
        // No event asked: since Linux 6.9 a pidfd reports POLLHUP once its process is reaped.
        // Without a pidfd, or on older kernels, the 50 ms cap bounds the latency and the name
        // check above ends the wait.
        let mut fds: Vec<libc::pollfd> = left
            .iter()
            .filter_map(|&i| procs[i].0.as_ref())
            .map(|fd| libc::pollfd { fd: fd.as_raw_fd(), events: 0, revents: 0 })
            .collect();
        let ms = time.min(std::time::Duration::from_millis(50)).as_millis() as i32 + 1;
        // SAFETY: `fds` is a valid array of pollfds of its length.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    }
}

/// Reap waits collected to be done together: while a [`Deferral`] is open, [`Reaps::wait`]
/// only notes the process, and the end of the outermost deferral waits for all of them at
/// once. A teardown of many containers then pays one reaping delay (an init that reaps
/// lazily takes a second or more per round, see [`wait_fd_reaped`]) instead of one per
/// container, or per dependency level. Shared by the runtime and the networks of one engine
/// (`Arc`), so the shims and the DNS process of one `down` are awaited together.
#[derive(Debug, Default)]
pub struct Reaps {
    deferring: std::sync::atomic::AtomicUsize,
    pending: std::sync::Mutex<Vec<(Option<std::os::fd::OwnedFd>, i32, &'static str)>>,
}

/// How long a process told to end is waited for until reaped; past it, the zombie is left to
/// its parent (it holds nothing but its pid).
pub const REAP_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Reaps {
    /// Waits until process `pid` named `name` is reaped (see [`wait_fd_reaped`]): now, or with the
    /// others when the open deferral ends. `fd`: a pidfd of it opened earlier, if any (one is
    /// opened here otherwise). Whether it is gone (always `true` when deferred).
    pub fn wait(&self, fd: Option<std::os::fd::OwnedFd>, pid: i32, name: &'static str) -> bool {
        use std::sync::atomic::Ordering;
        let fd = fd.or_else(|| pidfd_open(pid));
        if self.deferring.load(Ordering::SeqCst) > 0 {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).push((fd, pid, name));
            return true;
        }
        match &fd {
            Some(fd) => wait_fd_reaped(fd, pid, name, REAP_LIMIT),
            None => !is_named(pid, name),
        }
    }

    /// Defers every [`Reaps::wait`] until the returned guard (the outermost one, when nested)
    /// is dropped, which waits for them all at once.
    pub fn defer(&self) -> Deferral<'_> {
        self.deferring.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Deferral { reaps: self }
    }

    /// Waits for every process noted so far; how many are still listed after [`REAP_LIMIT`].
    pub fn wait_pending(&self) -> usize {
        let procs = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        wait_all_reaped(&procs, REAP_LIMIT)
    }
}

/// An open deferral of [`Reaps`]; its drop does the waits.
#[must_use = "the waits are deferred only while the guard lives"]
pub struct Deferral<'a> {
    reaps: &'a Reaps,
}

impl Drop for Deferral<'_> {
    fn drop(&mut self) {
        if self.reaps.deferring.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 1 {
            self.reaps.wait_pending();
        }
    }
}

/// Whether `/proc/PID` exists with command name `name` (a zombie too).
fn is_named(pid: i32, name: &str) -> bool {
    pid > 0 && fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim_end() == name)
}

/// Writes several files atomically and durably with one sync of each: all temp files are
/// written and fsynced, then renamed, then each dir is fsynced once. A record made of several
/// files (a container's spec and record) costs two journal commits instead of two per file.
/// On failure the temp files are removed; files already renamed stay.
pub fn write_atomic_all(files: &[(&Path, &[u8])]) -> Result<(), StateError> {
    let mut staged: Vec<(PathBuf, &Path)> = Vec::new();
    let result = (|| {
        for (path, bytes) in files {
            let dir = path.parent().unwrap_or(Path::new("."));
            fs::create_dir_all(dir).map_err(|e| StateError::io(dir, e))?;
            let tmp = temp_path(path);
            staged.push((tmp.clone(), path));
            let mut file = File::create(&tmp).map_err(|e| StateError::io(*path, e))?;
            file.write_all(bytes).and_then(|()| file.sync_all()).map_err(|e| StateError::io(*path, e))?;
        }
        let mut dirs: Vec<&Path> = Vec::new();
        for (tmp, path) in &staged {
            fs::rename(tmp, path).map_err(|e| StateError::io(*path, e))?;
            let dir = path.parent().unwrap_or(Path::new("."));
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        for dir in dirs {
            File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StateError::io(dir, e))?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = fs::remove_file(tmp);
        }
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dir.join(format!(".{name}.tmp{}", std::process::id()))
}

/// Replaces `path` with `bytes` atomically for readers but without fsync: after a power loss
/// the file may hold an earlier version, or be cut short. Only for run-time state that a
/// reboot makes stale anyway (a container's status, whose boot id tells it), where two fsyncs
/// per update would cost more than the update itself.
///
/// The temp file is exchanged with the old one (renameat2 RENAME_EXCHANGE) and the old one
/// removed: a plain rename over an existing file makes ext4 (auto_da_alloc) start writing the
/// new file out at once, which costs a few times more, and milliseconds on a busy disk.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = temp_path(path);
    let result = fs::write(&tmp, bytes).and_then(|()| match exchange(&tmp, path) {
        // `tmp` now holds the old contents.
        Ok(()) => fs::remove_file(&tmp),
        // Nothing to exchange with yet, or a file system without exchange.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::EINVAL)) => fs::rename(&tmp, path),
        Err(e) => Err(e),
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| StateError::io(path, e))
}

/// Swaps two paths atomically (renameat2 with RENAME_EXCHANGE).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (a, b) = (cstr(a)?, cstr(b)?);
    // SAFETY: two NUL-terminated paths, relative to the working dir as rename(2) takes them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Writes `value` as pretty JSON to `path` with [`write_atomic_unsynced`].
pub fn write_json_unsynced<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|source| StateError::Json { path: path.to_path_buf(), source })?;
    write_atomic_unsynced(path, &bytes)
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|source| StateError::Json { path: path.to_path_buf(), source })?;
    write_atomic(path, &bytes)
}

/// Reads a JSON record.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StateError> {
    let bytes = fs::read(path).map_err(|e| StateError::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| StateError::Json { path: path.to_path_buf(), source })
}

/// An exclusive advisory lock (flock) on a file, released when dropped.
#[derive(Debug)]
pub struct Lock {
    _flock: nix::fcntl::Flock<File>,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock at `path` (created if missing), waiting while another process holds it.
    pub fn acquire(path: &Path) -> Result<Lock, StateError> {
        Self::take(path, true)?
            .ok_or_else(|| StateError::io(path, io::Error::from(io::ErrorKind::WouldBlock)))
    }

    /// Takes the lock at `path` if nobody holds it; `None` when it is held.
    pub fn try_acquire(path: &Path) -> Result<Option<Lock>, StateError> {
        Self::take(path, false)
    }

    fn take(path: &Path, wait: bool) -> Result<Option<Lock>, StateError> {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::MetadataExt;
        let arg = if wait { FlockArg::LockExclusive } else { FlockArg::LockExclusiveNonblock };
        // Whoever removes a lock file does so while holding it (`down` removes the project's);
        // a process that was waiting on the old file then holds a lock nobody else can see. So
        // the lock counts only if the path still names the file that was locked; otherwise
        // take the new one.
        loop {
            // Inside the loop: the holder may have removed the folder with the file.
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(|e| StateError::io(dir, e))?;
            }
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)
                .map_err(|e| StateError::io(path, e))?;
            let flock = loop {
                match Flock::lock(file, arg) {
                    Ok(flock) => break flock,
                    Err((f, nix::errno::Errno::EINTR)) => file = f,
                    Err((_, nix::errno::Errno::EWOULDBLOCK)) if !wait => return Ok(None),
                    Err((_, errno)) => return Err(StateError::io(path, io::Error::from(errno))),
                }
            };
            let held = flock.metadata().map_err(|e| StateError::io(path, e))?;
            match fs::metadata(path) {
                Ok(now) if now.dev() == held.dev() && now.ino() == held.ino() => {
                    return Ok(Some(Lock { _flock: flock, path: path.to_path_buf() }));
                }
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StateError::io(path, e)),
            }
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_map_keeps_the_order_on_any_count() {
        for n in [0usize, 1, 15, 16, 40, 203] {
            let items: Vec<usize> = (0..n).collect();
            let got = parallel_map(&items, |i| i * 3);
            assert_eq!(got, items.iter().map(|i| i * 3).collect::<Vec<_>>(), "{n} items");
        }
    }

    #[test]
    fn temp_files_of_dead_writers_are_swept() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        assert!(is_temp_name(".net.json.tmp12") && is_temp_name(".abc.tmp1"));
        assert!(!is_temp_name("net.json") && !is_temp_name(".net.json.tmp") && !is_temp_name(".x.tmpa1"));
        // pid_max is at most 4194304: this writer cannot run.
        let dead = dir.path().join(".net.json.tmp4194305");
        let live = dir.path().join(format!(".net.json.tmp{}", std::process::id()));
        let record = dir.path().join("net.json");
        for p in [&dead, &live, &record] {
            fs::write(p, "{").unwrap();
        }
        assert_eq!(sweep_temp_files(dir.path()), vec![dead.clone()]);
        assert!(!dead.exists() && live.exists() && record.exists());
        assert!(process_runs(std::process::id() as i32) && !process_runs(0) && !process_runs(4194305));
    }

    #[test]
    fn a_damaged_copy_is_written_anew_from_its_record_and_a_damaged_record_is_left() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = dir.path().join("net.json");
        let value = serde_json::json!({"name": "p_back", "labels": {"com.docker.compose.project": "p"}});
        write_json_with_copy(&path, &value).unwrap();
        assert!(!repair_copy(&path), "a whole copy is left as it is");
        let whole = fs::read(copy_path(&path)).unwrap();
        for damaged in [&whole[..whole.len() / 2], b"", b"\x93\x01garbage\xff"] {
            fs::write(copy_path(&path), damaged).unwrap();
            assert!(repair_copy(&path));
            assert_eq!(read_copy::<serde_json::Value>(&path), Some(value.clone()));
        }
        fs::remove_file(copy_path(&path)).unwrap();
        assert!(repair_copy(&path) && labels_of_copy(&path).is_some());
        // A damaged record: its copy is what repairs it, and stays as it is.
        fs::write(&path, b"{\"name\": \"p_b").unwrap();
        assert!(!repair_copy(&path));
        assert_eq!(read_copy::<serde_json::Value>(&path), Some(value));
    }

    #[test]
    fn atomic_write_replaces_and_reads_back() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = dir.path().join("a/b/record.json");
        write_json(&path, &serde_json::json!({"x": 1})).unwrap();
        write_json(&path, &serde_json::json!({"x": 2})).unwrap();
        let v: serde_json::Value = read_json(&path).unwrap();
        assert_eq!(v["x"], 2);
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file is left beside the record");
    }

    #[test]
    fn unsynced_writes_replace_and_leave_no_temp_file() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = dir.path().join("status.json");
        write_json_unsynced(&path, &serde_json::json!({"x": 1})).unwrap();
        write_json_unsynced(&path, &serde_json::json!({"x": 2})).unwrap();
        let v: serde_json::Value = read_json(&path).unwrap();
        assert_eq!(v["x"], 2);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("status.json")]);
    }

    #[test]
    fn records_written_together_are_all_there() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let (a, b) = (dir.path().join("c/spec.json"), dir.path().join("c/record.json"));
        write_atomic_all(&[(&a, b"{\"a\":1}"), (&b, b"{\"b\":2}")]).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"{\"a\":1}");
        assert_eq!(fs::read(&b).unwrap(), b"{\"b\":2}");
        assert_eq!(fs::read_dir(dir.path().join("c")).unwrap().count(), 2);
    }

    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn folders_get_their_modes_whatever_the_umask_and_wider_ones_are_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
        // A root made by an earlier berth, open to everyone.
        fs::create_dir(&dirs.root).unwrap();
        fs::set_permissions(&dirs.root, fs::Permissions::from_mode(0o755)).unwrap();
        dirs.secure().unwrap();
        for (path, mode) in dirs.layout() {
            assert_eq!(mode_of(&path), mode, "{}", path.display());
        }
        assert_eq!(mode_of(&dirs.root), 0o710);
        assert_eq!(mode_of(&dirs.volumes()), 0o701);
        assert_eq!(mode_of(&dirs.images()), 0o700);
        let volume = dirs.volumes().join("p_data");
        dirs.create_dir(&volume, mode::VOLUMES).unwrap();
        assert_eq!(mode_of(&volume), 0o701);
        let container = dirs.container("abc");
        dirs.create_dir(&container, mode::CONTAINERS).unwrap();
        assert_eq!(mode_of(&container), 0o710);
        let deep = dir.path().join("a/b/c");
        ensure_dir(&deep, 0o700).unwrap();
        assert_eq!(mode_of(&deep), 0o700);
        // A shared folder is left alone; a file is an error.
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_dir(&shared, 0o710).unwrap();
        assert_eq!(mode_of(&shared), 0o1777);
        fs::write(dir.path().join("file"), "").unwrap();
        assert!(ensure_dir(&dir.path().join("file"), 0o700).is_err());
    }

    #[test]
    fn second_lock_is_refused_while_first_is_held() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = Lock::acquire(&path).unwrap();
        // flock locks belong to the open file description, so a second open conflicts.
        assert!(Lock::try_acquire(&path).unwrap().is_none());
        drop(first);
        assert!(Lock::try_acquire(&path).unwrap().is_some());
    }

    #[test]
    fn a_lock_removed_by_its_holder_is_not_shared_by_two_waiters() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = Lock::acquire(&path).unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let lock = Lock::acquire(&path).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(300));
                drop(lock);
            })
        };
        // The waiter is blocked on the old file; its holder removes it and lets go (as `down`
        // does with the project's lock).
        std::thread::sleep(std::time::Duration::from_millis(100));
        fs::remove_file(&path).unwrap();
        drop(first);
        std::thread::sleep(std::time::Duration::from_millis(50));
        // The waiter now holds the lock on the new file: a third taker must be refused.
        assert!(Lock::try_acquire(&path).unwrap().is_none(), "the waiter's lock is visible at the path");
        waiter.join().unwrap();
        assert!(Lock::try_acquire(&path).unwrap().is_some());
    }
}

#[cfg(test)]
mod reap_tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn wait_reaped_waits_past_exit_until_the_parent_reaps() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        child.kill().unwrap();
        // Exited, not reaped: a zombie that still shows under its name.
        let start = Instant::now();
        while !is_zombie(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!wait_reaped(pid, "sleep", Duration::from_millis(100)), "a zombie is not gone");
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        let reaper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            child.wait().unwrap();
        });
        let start = Instant::now();
        assert!(wait_reaped(pid, "sleep", Duration::from_secs(5)));
        assert!(start.elapsed() >= Duration::from_millis(100), "returned before the reap");
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        reaper.join().unwrap();
    }

    fn zombie(secs: &str) -> (std::process::Child, i32) {
        let mut child = std::process::Command::new("sleep").arg(secs).spawn().unwrap();
        let pid = child.id() as i32;
        child.kill().unwrap();
        let start = Instant::now();
        while !is_zombie(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        (child, pid)
    }

    fn is_zombie(pid: i32) -> bool {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    }

    #[test]
    fn a_process_sent_sigkill_no_longer_runs_though_not_yet_a_zombie() {
        // Read right after `kill` returns, the process is almost always still there under
        // its name in state S or R (the kernel has not scheduled it yet), but doomed.
        for _ in 0..20 {
            let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
            let pid = child.id() as i32;
            // spawn returns once the child has begun its exec, maybe before it has its name.
            let start = Instant::now();
            while process_name_if_runs(pid).as_deref() != Some("sleep")
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(process_name_if_runs(pid).as_deref(), Some("sleep"));
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
                .unwrap();
            assert_eq!(process_name_if_runs(pid), None, "pid {pid} runs after SIGKILL");
            child.wait().unwrap();
        }
    }

    #[test]
    fn status_texts_tell_zombies_killed_and_running_processes() {
        let text = |state: &str, sig: &str, shd: &str| {
            format!(
                "Name:\tberth-shim\nUmask:\t0022\nState:\t{state}\nPid:\t42\nSigQ:\t1/63\n\
                 SigPnd:\t{sig}\nShdPnd:\t{shd}\nSigBlk:\t0000000000000000\n"
            )
        };
        let none = "0000000000000000";
        let kill = "0000000000000100";
        assert_eq!(parse_running_status(&text("S (sleeping)", none, none)).as_deref(), Some("berth-shim"));
        // SIGHUP pending is no matter; SIGKILL, for the process or the thread, is.
        let hup = "0000000000000001";
        assert_eq!(parse_running_status(&text("R (running)", hup, hup)).as_deref(), Some("berth-shim"));
        assert_eq!(parse_running_status(&text("R (running)", none, kill)), None);
        assert_eq!(parse_running_status(&text("S (sleeping)", kill, none)), None);
        assert_eq!(parse_running_status(&text("Z (zombie)", none, none)), None);
        assert_eq!(parse_running_status(&text("X (dead)", none, none)), None);
        assert_eq!(parse_running_status("State:\tS (sleeping)\n"), None);
    }

    #[test]
    fn deferred_waits_happen_together_when_the_outermost_deferral_ends() {
        let reaps = Reaps::default();
        let (mut a, pa) = zombie("30");
        let (mut b, pb) = zombie("31");
        let outer = reaps.defer();
        {
            let _inner = reaps.defer();
            // Noted, not waited for: both zombies are still listed afterwards.
            assert!(reaps.wait(None, pa, "sleep"));
            assert!(reaps.wait(None, pb, "sleep"));
        }
        assert!(Path::new(&format!("/proc/{pa}")).exists() && Path::new(&format!("/proc/{pb}")).exists());
        let reaper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            a.wait().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            b.wait().unwrap();
        });
        let start = Instant::now();
        drop(outer);
        assert!(start.elapsed() >= Duration::from_millis(200), "returned before both reaps");
        assert!(!Path::new(&format!("/proc/{pa}")).exists() && !Path::new(&format!("/proc/{pb}")).exists());
        reaper.join().unwrap();
        // Without a deferral, a wait is done at once.
        let (mut c, pc) = zombie("32");
        let reaper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c.wait().unwrap();
        });
        assert!(reaps.wait(None, pc, "sleep"));
        assert!(!Path::new(&format!("/proc/{pc}")).exists());
        reaper.join().unwrap();
    }

    #[test]
    fn a_pid_under_another_name_counts_as_gone() {
        let pid = std::process::id() as i32;
        assert!(wait_reaped(pid, "no-such-name", Duration::from_secs(5)));
        assert!(wait_reaped(0, "berth-shim", Duration::from_secs(5)));
    }
}
