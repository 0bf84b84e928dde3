//! The shim (`berth shim ID`, process name `berth-shim`): one per container, outliving the CLI
//! that started it. It makes the container (clone from this single-threaded process), owns its
//! output and writes the log, reaps it, records exit code, OOM and times, applies the restart
//! policy with docker's doubling back-off, runs the healthcheck, and answers status, stop, kill,
//! signal, attach and resize on `<run>/containers/<id>/shim.sock`. No threads, no async
//! runtime: one poll loop.
//!
//! Readers of the live output (an `attach`, a foreground `run`'s caller) each get a bounded
//! queue written without waiting: one that falls too far behind is let go, so that no reader
//! ever stalls the container or the loop (the log has everything anyway).

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use caps::Capability;
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid, fork, pipe2};
use seccompiler::BpfProgram;
use serde::{Deserialize, Serialize};

use super::cgroups::Cgroup;
use super::exec::{ExecSpec, join_and_exec};
use super::handoff::{Failure, Ready};
use super::init::{InitContext, container_main};
use super::lifecycle::{Action, Event, Lifecycle, Rules};
use super::log::LogWriter;
use super::signal::{self as signals, SignalName};
use super::rootfs::RootfsDirs;
use super::spec::{ContainerSpec, IpcNamespace, NetNamespace};
use super::status::{ContainerStatus, State};
use super::syscall::Linux;
use crate::state::{Dirs, write_json_unsynced};

/// A request on the shim's socket (one JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The current status.
    Status,
    /// Stop: the stop signal, then SIGKILL after the grace time; answered once it has exited.
    Stop {
        /// Grace time in ms (the spec's when absent).
        timeout_ms: Option<u64>,
        /// Signal (the spec's `stop_signal` when absent).
        signal: Option<String>,
    },
    /// Kill with a signal (SIGKILL when absent); the restart policy no longer applies, unless
    /// the container has a stop signal of its own and this is another (docker's rule).
    Kill {
        /// The signal.
        signal: Option<String>,
    },
    /// Deliver a signal and nothing more.
    Signal {
        /// The signal.
        signal: String,
    },
    /// Answered once the container has exited for good (no restart pending), right after the
    /// shim has recorded it.
    Wait,
    /// Subscribes to the live output: after the answer line, the connection carries frames
    /// (see [`read_frame`]) until the process exits (an exit frame) or either side hangs up.
    /// With `stdin`, what the client sends after its request line goes to the process's
    /// stdin (when it was created with `stdin_open`); the client ending its side ends only
    /// that.
    Attach {
        /// Forward the client's bytes to the process.
        stdin: bool,
    },
    /// Sets the size of the container's terminal (`tty: true` only).
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
}

/// Frame kind: output of the process's stdout (or of its terminal).
pub const FRAME_STDOUT: u8 = 1;
/// Frame kind: output of the process's stderr.
pub const FRAME_STDERR: u8 = 2;
/// Frame kind: the process exited; the payload is its exit code as decimal text.
pub const FRAME_EXIT: u8 = 3;

/// One frame of an attach stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Output of stream 0 (stdout) or 1 (stderr).
    Output {
        /// 0 or 1.
        stream: usize,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The process exited with this code.
    Exit(i32),
}

/// Header of a frame: the kind, three zero bytes, the payload's length (big-endian u32), as
/// docker's multiplexed attach stream has it.
fn frame_header(kind: u8, len: usize) -> [u8; 8] {
    let n = (len as u32).to_be_bytes();
    [kind, 0, 0, 0, n[0], n[1], n[2], n[3]]
}

/// Reads the next frame of an attach stream; `None` at its end (the shim hung up).
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<Frame>> {
    let mut header = [0u8; 8];
    match r.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("attach frame of {len} bytes")));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)?;
    match header[0] {
        FRAME_STDOUT => Ok(Some(Frame::Output { stream: 0, data })),
        FRAME_STDERR => Ok(Some(Frame::Output { stream: 1, data })),
        FRAME_EXIT => {
            let code = std::str::from_utf8(&data).ok().and_then(|t| t.parse().ok());
            code.map(|c| Some(Frame::Exit(c)))
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "attach exit frame without a code"))
        }
        k => Err(io::Error::new(io::ErrorKind::InvalidData, format!("attach frame of kind {k}"))),
    }
}

/// Largest frame the shim writes (one read of the output).
const MAX_FRAME: usize = 16384;
/// Most output queued for one attached client; past it the client is let go.
const ATTACH_LIMIT: usize = 1 << 20;
/// Most output a foreground `run`'s caller may fall behind by before it is let go.
const CALLER_LIMIT: usize = 4 << 20;
/// Most input queued for the process's stdin; readers are not read from while it is full.
const INPUT_LIMIT: usize = 64 * 1024;
/// How long the output still queued when the process exits may take to be written.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(5);

/// The shim's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was done.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
    /// The status after the request.
    pub status: ContainerStatus,
}

/// Why the shim could not make or start the container. Rendered as before the types: the
/// text is what `berth` shows and records; the errno is kept for the ready pipe. (No variant
/// is `transparent`: the wrapped error must stay on the chain of sources, where
/// [`errno_of`](super::syscall::errno_of) finds it.)
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShimError {
    /// The handoff with the launcher failed, or the launcher's step did.
    #[error("{0}")]
    Handoff(#[from] super::handoff::HandoffError),
    /// The launcher's spec is not a spec.
    #[error("the launcher's spec: {0}")]
    Spec(#[source] serde_json::Error),
    /// The launcher's filters are truncated.
    #[error("the launcher's seccomp filters are cut short")]
    SeccompCut,
    /// Capabilities or seccomp cannot be applied.
    #[error("{0}")]
    Security(#[from] super::SecurityError),
    /// A record could not be read.
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    /// The ulimits cannot be applied.
    #[error("{0}")]
    Limits(#[from] super::limits::LimitError),
    /// A file or socket operation on `what` failed.
    #[error("{what}: {source}")]
    Io {
        /// The path or thing.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// A system call failed (its errno's text, as nix renders it).
    #[error("{0}")]
    Sys(#[from] nix::errno::Errno),
    /// A file or socket call failed (its error's text alone).
    #[error("{0}")]
    Os(#[source] io::Error),
    /// The pty for `tty: true`.
    #[error("pty: {0}")]
    Pty(#[source] nix::errno::Errno),
    /// The clone of the container's first process.
    #[error("clone: {0}")]
    Clone(#[source] nix::errno::Errno),
    /// The container to share the ipc namespace with has no record.
    #[error("ipc of container {id}: {source}")]
    IpcRecord {
        /// That container.
        id: String,
        /// The error.
        source: crate::state::StateError,
    },
    /// The container to share the ipc namespace with is not running.
    #[error("ipc of container {0}: it is not running")]
    IpcNotRunning(String),
    /// The cgroup could not be made.
    #[error("{0}")]
    Cgroup(#[from] super::cgroups::CgroupError),
    /// The container's first process failed before `execve` (or at it).
    #[error("{0}")]
    Init(#[from] super::init::InitError),
}

fn io_err(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ShimError {
    let what = what.to_string();
    move |source| ShimError::Io { what, source }
}

/// What the shim needs to make the container; built once, reused by restarts.
struct Prepared {
    spec: ContainerSpec,
    cgroup: Cgroup,
    caps: HashSet<Capability>,
    seccomp: Vec<BpfProgram>,
    rootfs: RootfsDirs,
    netns: Option<OwnedFd>,
    /// A fresh network namespace the launcher made for the first start (`NetNamespace::None`);
    /// restarts clone their own.
    fresh_netns: Option<OwnedFd>,
    ipcns: Option<OwnedFd>,
}

/// A running container process and its output.
struct Running {
    pid: Pid,
    /// (fd, stream index) of the output we read.
    outputs: Vec<(OwnedFd, usize)>,
    /// The process's input, non-blocking: the write end of its stdin pipe (`stdin_open`), or
    /// the terminal's master side (`tty`). Kept open so that a `stdin_open` process reads no
    /// EOF.
    input: Option<OwnedFd>,
    /// Input from readers (attached clients, a foreground caller's terminal) not yet taken.
    to_input: Vec<u8>,
    oom_before: u64,
}

/// A reader of the live output: an attached client or a foreground `run`'s caller. Written
/// without waiting; what it cannot take yet waits in a bounded queue.
struct Sink {
    /// Ties it to its [`Source`] (the same client).
    id: u64,
    fd: OwnedFd,
    /// A socket: written with `MSG_DONTWAIT` (its description may be shared with the caller,
    /// whose blocking mode must not change).
    socket: bool,
    /// Frames (an attach stream) rather than the bytes alone.
    framed: bool,
    /// The one output stream it takes (a caller's stdout or stderr); both when `None`.
    only: Option<usize>,
    queue: VecDeque<u8>,
    limit: usize,
}

impl Sink {
    /// Queues `data` of `kind` and writes what can be written; false when the reader is gone
    /// or too far behind.
    fn push(&mut self, kind: u8, data: &[u8]) -> bool {
        let extra = data.len() + if self.framed { 8 } else { 0 };
        if self.queue.len() + extra > self.limit {
            return false;
        }
        if self.framed {
            self.queue.extend(frame_header(kind, data.len()));
        }
        self.queue.extend(data);
        self.flush()
    }

    /// Writes what the reader takes now; false when it is gone.
    fn flush(&mut self) -> bool {
        while !self.queue.is_empty() {
            let (chunk, _) = self.queue.as_slices();
            let fd = self.fd.as_raw_fd();
            // SAFETY: a valid buffer of its length, written to our own fd.
            let n = unsafe {
                if self.socket {
                    libc::send(
                        fd,
                        chunk.as_ptr().cast(),
                        chunk.len(),
                        libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                    )
                } else {
                    libc::write(fd, chunk.as_ptr().cast(), chunk.len())
                }
            };
            if n > 0 {
                self.queue.drain(..n as usize);
                continue;
            }
            match nix::errno::Errno::last() {
                nix::errno::Errno::EINTR => {}
                nix::errno::Errno::EAGAIN => return true,
                _ => return false,
            }
        }
        true
    }
}

/// Where input for the process comes from: an attached client's socket or a foreground
/// caller's terminal.
struct Source {
    id: u64,
    fd: OwnedFd,
}

/// Namespaces of an exited container, kept until its end is reported (see `hold_namespaces`).
struct HeldNamespaces {
    _fds: Vec<OwnedFd>,
}

/// A healthcheck probe in flight.
struct Probe {
    pid: Pid,
    output: OwnedFd,
    buf: Vec<u8>,
    start: String,
}

/// Connected client with a partly read request.
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// The shim's whole state.
struct Shim {
    dirs: Dirs,
    id: String,
    prepared: Prepared,
    /// The status and the timers, and what happens next (see `lifecycle`).
    life: Lifecycle,
    log: LogWriter,
    listener: UnixListener,
    clients: Vec<Client>,
    /// Clients answered by `finish`: stop and wait requests.
    stop_waiters: Vec<UnixStream>,
    sigfd: SignalFd,
    running: Option<Running>,
    probe: Option<Probe>,
    held: Option<HeldNamespaces>,
    /// The launcher's end of the handoff, until the first start has its commit message.
    launcher: Option<super::handoff::Launcher>,
    /// The shim's stdio is still its launcher's (a foreground `run`, see
    /// `ProcessSpec::attach_stdio`): the first start's process is attached to it. Cleared when
    /// that process ends, so that a later start neither reads nor writes a stale terminal.
    attached: bool,
    /// Readers of the live output, until the process exits.
    sinks: Vec<Sink>,
    /// Sources of the process's input, until the process exits.
    sources: Vec<Source>,
    /// The id of the next reader.
    next_reader: u64,
}

/// A description of the shim's own `fd` (0, 1 or 2: a foreground caller's stdio) of its own,
/// non-blocking, so that the caller's blocking mode stays as it is: pipes, FIFOs and terminals
/// are opened again through `/proc/self/fd`; a regular file (never blocks) and a socket
/// (written with `MSG_DONTWAIT`) are duplicated. The bool says it is a socket.
fn reopen_caller_fd(fd: RawFd, write: bool) -> Option<(OwnedFd, bool)> {
    // SAFETY: fds 0 to 2 are open for the shim's life (`detach_stdio` replaces them).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let st = nix::sys::stat::fstat(borrowed).ok()?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFIFO || kind == libc::S_IFCHR {
        let flags = if write { libc::O_WRONLY } else { libc::O_RDONLY };
        let file = fs::OpenOptions::new()
            .read(!write)
            .write(write)
            .custom_flags(flags | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(format!("/proc/self/fd/{fd}"))
            .ok()?;
        return Some((file.into(), false));
    }
    let copy = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).ok()?;
    // SAFETY: a new fd that nothing else owns.
    let copy = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) };
    Some((copy, kind == libc::S_IFSOCK))
}

/// The terminal size of `fd`, if it is a terminal.
fn window_size(fd: RawFd) -> Option<libc::winsize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ fills a winsize.
    (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0).then_some(ws)
}

/// Points the shim's stdio at /dev/null: an attached run's caller is let go when its process
/// ends (it may be a terminal, a pipe that a reader waits on to end, ...).
fn detach_stdio() {
    if let Ok(null) = fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which the shim owns.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
}

fn status_path(dirs: &Dirs, id: &str) -> PathBuf {
    dirs.container(id).join("status.json")
}

/// Entry point of `berth shim ID`. `ready` is a pipe on which the first start is reported
/// (`ok` or `error: ...`). Returns the shim's exit code.
pub fn main(dirs: &Dirs, id: &str, ready: Option<OwnedFd>) -> i32 {
    let _ = nix::sys::prctl::set_name(c"berth-shim");
    // The container must not inherit the launcher's pipe or socket.
    let go = super::go_fd_from_env();
    for fd in ready.iter().chain(go.iter()) {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    }
    let mut ready = ready.map(std::fs::File::from);
    let report = |ready: &mut Option<std::fs::File>, answer: Ready| {
        if let Some(mut f) = ready.take() {
            let _ = f.write_all(answer.line().as_bytes());
        }
    };
    let failed = |e: &ShimError| Ready::Failed { failure: Failure::of(e) };
    let mut shim = match Shim::prepare(dirs, id, go) {
        Ok(s) => s,
        Err(e) => {
            record_failure(dirs, id, &e.to_string());
            report(&mut ready, failed(&e));
            return 1;
        }
    };
    if let Err(e) = shim.start() {
        shim.life.status.error = Some(e.to_string());
        shim.finish();
        report(&mut ready, failed(&e));
        return 1;
    }
    report(&mut ready, Ready::Started);
    drop(ready);
    // Let the launcher, woken by the report, have this CPU first.
    let _ = nix::sched::sched_yield();
    release_startup_code();
    shim.run();
    0
}

/// Lets the kernel drop the shim's mapped code pages, which startup (and fault-around, which
/// maps whole neighbourhoods of the 15 MB binary) made resident: the poll loop faults back in
/// the little it runs, so the shim stays well under its memory budget for its whole life.
/// Only executable mappings of our binary: they are never written, so MADV_DONTNEED just
/// unmaps pages that the page cache still holds (read-only data may have been relocated).
fn release_startup_code() {
    let (Ok(exe), Ok(maps)) = (std::env::current_exe(), fs::read_to_string("/proc/self/maps")) else {
        return;
    };
    let exe = exe.to_string_lossy();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else { continue };
        if perms != "r-xp" || fields.nth(3) != Some(exe.as_ref()) {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: a whole executable mapping of our own binary, never written: dropping its
        // pages changes nothing but residency.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// Records a start that failed, and tidies what the start made.
pub(crate) fn record_failure(dirs: &Dirs, id: &str, error: &str) {
    let status = ContainerStatus {
        state: State::Exited,
        error: Some(error.to_string()),
        exit_code: Some(127),
        finished_at: Some(super::timefmt::now()),
        boot_id: super::status::boot_id(),
        ..ContainerStatus::default()
    };
    let _ = write_json_unsynced(&status_path(dirs, id), &status);
    let _ = Cgroup::for_container(id).destroy(&Linux);
    let _ = fs::remove_file(dirs.container_run(id).join("shim.sock"));
}

impl Shim {
    /// Everything before the container's process. `go`: the launcher's end of the handoff
    /// (see `handoff`), which brings the spec and the filters, then says the cgroup is made
    /// and may bring a network namespace; without it (`berth shim ID` run by hand) the shim
    /// reads the records and makes the cgroup itself.
    fn prepare(dirs: &Dirs, id: &str, go: Option<OwnedFd>) -> Result<Shim, ShimError> {
        let mut launcher = go.map(super::handoff::Launcher::new);
        let (spec, caps, seccomp) = match &mut launcher {
            Some(launcher) => {
                let setup = launcher.setup()?;
                let spec: ContainerSpec =
                    serde_json::from_slice(&setup.spec_json).map_err(ShimError::Spec)?;
                let seccomp = super::seccomp::decode(&setup.seccomp).ok_or(ShimError::SeccompCut)?;
                let caps = super::capabilities_for(&spec)?;
                (spec, caps, seccomp)
            }
            None => {
                let spec: ContainerSpec = crate::state::read_json(&dirs.container(id).join("spec.json"))?;
                let (caps, seccomp) = super::security_stored(dirs, &spec)?;
                (spec, caps, seccomp)
            }
        };
        super::limits::check(&spec.ulimits)?;
        let base = dirs.container(id);
        let run = dirs.container_run(id);
        let rootfs = RootfsDirs {
            rootfs: run.join("rootfs"),
            upper: base.join("upper"),
            work: base.join("work"),
            empty: base.join("empty"),
        };
        let mut needed = vec![&rootfs.rootfs, &rootfs.upper, &rootfs.work];
        // The empty lower dir stands in for the layers of an image that has none.
        if spec.rootfs.lower_dirs.is_empty() {
            needed.push(&rootfs.empty);
        }
        for d in needed {
            fs::create_dir_all(d).map_err(io_err(d.display()))?;
        }
        let netns = match &spec.namespaces.net {
            NetNamespace::Path(p) => Some(
                fs::File::open(p)
                    .map(OwnedFd::from)
                    .map_err(io_err(format_args!("network namespace {}", p.display())))?,
            ),
            _ => None,
        };
        let ipcns = match &spec.namespaces.ipc {
            IpcNamespace::Container(other) => {
                let st: ContainerStatus = crate::state::read_json(&status_path(dirs, other))
                    .map_err(|source| ShimError::IpcRecord { id: other.clone(), source })?;
                if st.state != State::Running || st.pid == 0 {
                    return Err(ShimError::IpcNotRunning(other.clone()));
                }
                let path = format!("/proc/{}/ns/ipc", st.pid);
                Some(fs::File::open(&path).map(OwnedFd::from).map_err(io_err(&path))?)
            }
            _ => None,
        };
        let log = LogWriter::open(&base.join("log"), spec.log.clone()).map_err(io_err("log"))?;
        let sock = run.join("shim.sock");
        let _ = fs::remove_file(&sock);
        let listener = super::with_short_path(&run, "shim.sock", |p| UnixListener::bind(p))
            .map_err(io_err(sock.display()))?;
        listener.set_nonblocking(true).map_err(ShimError::Os)?;
        let mut mask = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            mask.add(s);
        }
        mask.thread_block()?;
        let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        // Last, as the launcher makes them meanwhile: the cgroup and maybe a network namespace.
        let fresh_netns = match &mut launcher {
            Some(launcher) => launcher.resources()?,
            None => {
                Cgroup::for_container(id).create(
                    &Linux,
                    &spec.resources,
                    &spec.devices,
                    spec.security.privileged,
                )?;
                None
            }
        };
        let cgroup = Cgroup::for_container(id);
        let status = ContainerStatus {
            shim_pid: std::process::id() as i32,
            boot_id: super::status::boot_id(),
            ..ContainerStatus::default()
        };
        let rules = Rules {
            restart: spec.restart.clone(),
            healthcheck: spec.healthcheck.clone(),
            // Refused before it gets here (the spec is made from a checked service); an
            // unreadable one counts as none.
            stop_signal: spec.stop_signal.as_deref().and_then(|s| s.parse::<SignalName>().ok()).map(|s| s.0),
            stop_grace: spec.stop_grace_ms.map(Duration::from_millis),
        };
        let spec_attached = spec.process.attach_stdio;
        Ok(Shim {
            dirs: dirs.clone(),
            id: id.to_string(),
            prepared: Prepared { spec, cgroup, caps, seccomp, rootfs, netns, fresh_netns, ipcns },
            life: Lifecycle::new(rules, status),
            log,
            listener,
            clients: Vec::new(),
            stop_waiters: Vec::new(),
            sigfd,
            running: None,
            probe: None,
            held: None,
            launcher,
            attached: spec_attached,
            sinks: Vec::new(),
            sources: Vec::new(),
            next_reader: 0,
        })
    }

    fn save(&self) {
        let _ = write_json_unsynced(&status_path(&self.dirs, &self.id), &self.life.status);
    }

    /// Tells the lifecycle what happened and does what it decides.
    fn on(&mut self, event: Event) {
        let before = self.life.status.clone();
        let actions = self.life.handle(event, Instant::now());
        for (action, attrs) in crate::events::status_changes(&before, &self.life.status) {
            let attrs: Vec<(&str, &str)> = attrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            self.emit(&action, &attrs);
        }
        for action in actions {
            self.perform(action);
        }
    }

    /// Records an event of the container in its project's log (see `events`).
    fn emit(&self, action: &str, attrs: &[(&str, &str)]) {
        crate::events::emit_existing(
            &self.dirs,
            &crate::events::Actor::of_spec(&self.prepared.spec),
            action,
            attrs,
        );
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Restart => {
                if let Err(error) = self.start() {
                    self.on(Event::StartFailed { error: error.to_string() });
                }
            }
            Action::Signal(sig) => {
                if let Some(r) = &self.running {
                    let _ = signals::send(r.pid.as_raw(), sig);
                    self.emit("kill", &[("signal", &sig.to_string())]);
                }
            }
            Action::KillAll => {
                if let Some(r) = &self.running {
                    let _ = kill(r.pid, Signal::SIGKILL);
                    self.emit("kill", &[("signal", &(Signal::SIGKILL as i32).to_string())]);
                }
                for pid in self.prepared.cgroup.processes(&Linux) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            Action::StartProbe => self.start_probe(),
            // Reaped through SIGCHLD; the lifecycle records the timeout.
            Action::KillProbe => {
                if let Some(p) = &self.probe {
                    let _ = kill(p.pid, Signal::SIGKILL);
                }
            }
            Action::DropProbe => {
                if let Some(p) = self.probe.take() {
                    let _ = kill(p.pid, Signal::SIGKILL);
                    let _ = waitpid(p.pid, None);
                }
            }
            Action::Save => self.save(),
        }
    }

    /// Makes and starts the container process.
    fn start(&mut self) -> Result<(), ShimError> {
        let fresh_netns = self.prepared.fresh_netns.take();
        let p = &self.prepared;
        let spec = &p.spec;
        let cloexec = OFlag::O_CLOEXEC;
        let (err_r, err_w) = pipe2(cloexec)?;
        let (release_r, release_w) = pipe2(cloexec)?;
        let mut parent_ends: Vec<RawFd> = vec![err_r.as_raw_fd(), release_w.as_raw_fd()];
        let mut outputs = Vec::new();
        let mut child_ends: Vec<OwnedFd> = Vec::new();
        let mut console = None;
        let stdio: [RawFd; 3];
        let attached = self.attached && spec.process.attach_stdio;
        let mut input = None;
        if spec.process.tty {
            // A terminal of the shim's own, also for a foreground `run` on the caller's
            // terminal: the shim relays between the two and logs what the process writes.
            let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
                .map_err(ShimError::Pty)?;
            nix::pty::grantpt(&master).map_err(ShimError::Pty)?;
            nix::pty::unlockpt(&master).map_err(ShimError::Pty)?;
            let name = nix::pty::ptsname_r(&master).map_err(ShimError::Pty)?;
            console = Some(PathBuf::from(name));
            let fd: OwnedFd = master.into();
            if attached && let Some(ws) = window_size(0) {
                // SAFETY: TIOCSWINSZ reads a winsize.
                unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
            }
            input = Some(fd.try_clone().map_err(ShimError::Os)?);
            parent_ends.push(fd.as_raw_fd());
            stdio = [-1, -1, -1];
            outputs.push((fd, 0));
        } else {
            let (out_r, out_w) = pipe2(cloexec)?;
            let (errout_r, errout_w) = pipe2(cloexec)?;
            let stdin: OwnedFd = if attached && spec.process.stdin_open {
                // The caller's stdin, which the launcher gave the shim as its own.
                nix::unistd::dup(io::stdin().as_fd()).map_err(|e| ShimError::Os(e.into()))?
            } else if spec.process.stdin_open && !spec.process.attach_stdio {
                let (in_r, in_w) = pipe2(cloexec)?;
                parent_ends.push(in_w.as_raw_fd());
                input = Some(in_w);
                in_r
            } else {
                fs::File::open("/dev/null").map_err(ShimError::Os)?.into()
            };
            parent_ends.extend([out_r.as_raw_fd(), errout_r.as_raw_fd()]);
            stdio = [stdin.as_raw_fd(), out_w.as_raw_fd(), errout_w.as_raw_fd()];
            child_ends.extend([stdin, out_w, errout_w]);
            outputs.push((out_r, 0));
            outputs.push((errout_r, 1));
        }
        parent_ends.push(self.listener.as_raw_fd());
        parent_ends.push(self.sigfd.as_fd().as_raw_fd());
        let ctx = InitContext {
            spec,
            dirs: &p.rootfs,
            caps: &p.caps,
            seccomp: &p.seccomp,
            netns: p.netns.as_ref().or(fresh_netns.as_ref()).map(|f| f.as_raw_fd()),
            ipcns: p.ipcns.as_ref().map(|f| f.as_raw_fd()),
            cgroup: &p.cgroup,
            error_write: err_w.as_raw_fd(),
            release: release_r.as_raw_fd(),
            stdio,
            console,
            close: parent_ends,
        };
        let mut flags = CloneFlags::CLONE_NEWNS;
        if !spec.namespaces.pid_host {
            flags |= CloneFlags::CLONE_NEWPID;
        }
        if !spec.namespaces.uts_host {
            flags |= CloneFlags::CLONE_NEWUTS;
        }
        if spec.namespaces.ipc == IpcNamespace::Private {
            flags |= CloneFlags::CLONE_NEWIPC;
        }
        if spec.namespaces.net == NetNamespace::None && fresh_netns.is_none() {
            flags |= CloneFlags::CLONE_NEWNET;
        }
        let mut stack = vec![0u8; 256 * 1024];
        let oom_before = p.cgroup.oom_kills(&Linux);
        // SAFETY: the shim is single-threaded, so the child (a copy of it, as after fork) may
        // allocate; the callback never returns into our frames (container_main ends in execve
        // or _exit).
        let pid = unsafe {
            nix::sched::clone(Box::new(|| container_main(&ctx)), &mut stack, flags, Some(libc::SIGCHLD))
        }
        .map_err(ShimError::Clone)?;
        drop(child_ends);
        drop(err_w);
        drop(release_r);
        self.held = Some(hold_namespaces(pid));
        // The first start's process execs only once the launcher has its records durable
        // (see `handoff`); it has been building the container meanwhile.
        if let Some(mut launcher) = self.launcher.take()
            && let Err(e) = launcher.commit()
        {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
            return Err(e.into());
        }
        super::handoff::release(release_w);
        let mut report = Vec::new();
        let _ = fs::File::from(err_r).read_to_end(&mut report);
        if !report.is_empty() {
            let _ = waitpid(pid, None);
            return Err(super::init::InitError::decode(&report).into());
        }
        for (fd, _) in &outputs {
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        }
        if let Some(fd) = &input {
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        }
        let (tty, stdin_open) = (spec.process.tty, spec.process.stdin_open);
        self.running = Some(Running { pid, outputs, input, to_input: Vec::new(), oom_before });
        if attached {
            self.attach_caller(tty, stdin_open);
        }
        self.on(Event::Started { pid: pid.as_raw(), at: super::timefmt::now() });
        Ok(())
    }

    /// The poll loop; returns when the container is gone for good.
    fn run(&mut self) {
        loop {
            if self.life.is_over() {
                self.finish();
                return;
            }
            let mut fds: Vec<libc::pollfd> = Vec::new();
            let mut push = |fd: RawFd| fds.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
            push(self.sigfd.as_fd().as_raw_fd());
            push(self.listener.as_raw_fd());
            for c in &self.clients {
                push(c.stream.as_raw_fd());
            }
            // A waiter has sent its one request; it becomes readable only when it hangs up.
            for w in &self.stop_waiters {
                push(w.as_raw_fd());
            }
            if let Some(r) = &self.running {
                for (fd, _) in &r.outputs {
                    push(fd.as_raw_fd());
                }
            }
            if let Some(p) = &self.probe {
                push(p.output.as_raw_fd());
            }
            // Readers: writable is asked for only with output queued; a hang-up shows anyway.
            for k in &self.sinks {
                let events = if k.queue.is_empty() { 0 } else { libc::POLLOUT };
                fds.push(libc::pollfd { fd: k.fd.as_raw_fd(), events, revents: 0 });
            }
            let input_room = self.running.as_ref().is_some_and(|r| r.to_input.len() < INPUT_LIMIT);
            for src in &self.sources {
                let events = if input_room { libc::POLLIN } else { 0 };
                fds.push(libc::pollfd { fd: src.fd.as_raw_fd(), events, revents: 0 });
            }
            if let Some(r) = &self.running
                && let Some(input) = &r.input
                && !r.to_input.is_empty()
            {
                fds.push(libc::pollfd { fd: input.as_raw_fd(), events: libc::POLLOUT, revents: 0 });
            }
            let timeout = self.life.next_deadline().map_or(-1, |d| {
                let ms = d.saturating_duration_since(Instant::now()).as_millis();
                ms.min(60_000) as i32 + 1
            });
            // SAFETY: fds is a valid array of pollfd for its length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                continue;
            }
            let ready = |fd: RawFd| fds.iter().any(|p| p.fd == fd && p.revents != 0);
            if ready(self.listener.as_raw_fd()) {
                while let Ok((stream, _)) = self.listener.accept() {
                    let _ = stream.set_nonblocking(true);
                    self.clients.push(Client { stream, buf: Vec::new() });
                }
            }
            let output_fds: Vec<RawFd> = self
                .running
                .as_ref()
                .map(|r| r.outputs.iter().map(|(fd, _)| fd.as_raw_fd()).filter(|fd| ready(*fd)).collect())
                .unwrap_or_default();
            for fd in output_fds {
                self.read_output(fd);
            }
            if let Some(p) = &self.probe
                && ready(p.output.as_raw_fd())
            {
                self.read_probe();
            }
            // A caller that gave up waiting (`Runtime::wait` with a short timeout, polled in a
            // loop by a build step) has closed its end: keeping each would pile up descriptors
            // until accept fails with EMFILE and the end of the container cannot be recorded.
            // (Taken before `serve`, which adds waiters whose request made them ready.)
            self.stop_waiters.retain(|w| !ready(w.as_raw_fd()));
            let client_fds: Vec<RawFd> =
                self.clients.iter().map(|c| c.stream.as_raw_fd()).filter(|fd| ready(*fd)).collect();
            for fd in client_fds {
                self.serve(fd);
            }
            let revents = |fd: RawFd| fds.iter().find(|p| p.fd == fd).map_or(0, |p| p.revents);
            let sink_events: Vec<(u64, i16)> = self
                .sinks
                .iter()
                .map(|k| (k.id, revents(k.fd.as_raw_fd())))
                .filter(|(_, r)| *r != 0)
                .collect();
            for (id, r) in sink_events {
                self.sink_ready(id, r);
            }
            let source_ids: Vec<u64> =
                self.sources.iter().filter(|src| ready(src.fd.as_raw_fd())).map(|src| src.id).collect();
            for id in source_ids {
                self.read_source(id);
            }
            self.feed_input();
            if ready(self.sigfd.as_fd().as_raw_fd()) {
                self.handle_signals();
            }
            self.on(Event::Tick);
        }
    }

    fn read_output(&mut self, fd: RawFd) {
        let mut buf = [0u8; MAX_FRAME];
        loop {
            let Some(running) = &mut self.running else { return };
            let Some(idx) = running.outputs.iter().position(|(f, _)| f.as_raw_fd() == fd) else { return };
            let stream = running.outputs[idx].1;
            // SAFETY: fd is owned by running.outputs and open.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            match nix::unistd::read(borrowed, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    running.outputs.remove(idx);
                    return;
                }
                Ok(n) => {
                    let _ = self.log.write(stream, &buf[..n]);
                    self.give_readers(stream, &buf[..n]);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    /// Hands output of `stream` to every reader that takes it; a reader that is gone or too
    /// far behind is let go (with its input).
    fn give_readers(&mut self, stream: usize, data: &[u8]) {
        let kind = if stream == 0 { FRAME_STDOUT } else { FRAME_STDERR };
        let mut gone = Vec::new();
        for k in &mut self.sinks {
            if k.only.is_none_or(|o| o == stream) && !k.push(kind, data) {
                gone.push(k.id);
            }
        }
        for id in gone {
            self.drop_reader(id);
        }
    }

    fn drop_reader(&mut self, id: u64) {
        self.sinks.retain(|k| k.id != id);
        self.sources.retain(|src| src.id != id);
    }

    /// A reader's poll result: room for more, or a hang-up.
    fn sink_ready(&mut self, id: u64, revents: i16) {
        let Some(k) = self.sinks.iter_mut().find(|k| k.id == id) else { return };
        let ok =
            if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 { false } else { k.flush() };
        if !ok {
            self.drop_reader(id);
        }
    }

    /// Reads what a source has for the process's input; at its end (an attached client that
    /// ended its side, a caller's stdin at EOF) it gives no more, and its output goes on.
    fn read_source(&mut self, id: u64) {
        let Some(idx) = self.sources.iter().position(|src| src.id == id) else { return };
        let Some(running) = &mut self.running else { return };
        let mut buf = [0u8; 4096];
        while running.to_input.len() < INPUT_LIMIT {
            match nix::unistd::read(&self.sources[idx].fd, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    self.sources.remove(idx);
                    return;
                }
                Ok(n) => {
                    // A process without stdin (no `stdin_open`, no terminal) drops it.
                    if running.input.is_some() {
                        running.to_input.extend_from_slice(&buf[..n]);
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                Err(_) => {
                    self.sources.remove(idx);
                    return;
                }
            }
        }
    }

    /// Writes queued input to the process, as much as it takes now.
    fn feed_input(&mut self) {
        let Some(running) = &mut self.running else { return };
        let Some(input) = &running.input else { return };
        while !running.to_input.is_empty() {
            match nix::unistd::write(input, &running.to_input) {
                Ok(n) => {
                    running.to_input.drain(..n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => return,
                // The process closed its stdin: what comes is dropped.
                Err(_) => {
                    running.to_input.clear();
                    return;
                }
            }
        }
    }

    /// Makes a foreground `run`'s caller a reader: its stdout (and stderr) takes the output,
    /// and with a terminal its stdin is relayed to the container's terminal.
    fn attach_caller(&mut self, tty: bool, stdin_open: bool) {
        let id = self.next_reader;
        self.next_reader += 1;
        let outs: &[(RawFd, Option<usize>)] = if tty { &[(1, None)] } else { &[(1, Some(0)), (2, Some(1))] };
        for &(fd, only) in outs {
            if let Some((fd, socket)) = reopen_caller_fd(fd, true) {
                self.sinks.push(Sink {
                    id,
                    fd,
                    socket,
                    framed: false,
                    only,
                    queue: VecDeque::new(),
                    limit: CALLER_LIMIT,
                });
            }
        }
        // Without a terminal the process reads the caller's stdin itself (see `start`).
        if tty
            && stdin_open
            && let Some((fd, _)) = reopen_caller_fd(0, false)
        {
            self.sources.push(Source { id, fd });
        }
    }

    /// Ends every reader at the process's exit: an exit frame to attached clients, then what
    /// is queued is written (for `FLUSH_AT_EXIT` at most, the container being gone already),
    /// and they are let go.
    fn end_readers(&mut self, code: i32) {
        let text = code.to_string();
        for k in &mut self.sinks {
            if k.framed {
                k.queue.extend(frame_header(FRAME_EXIT, text.len()));
                k.queue.extend(text.as_bytes());
            }
        }
        let end = Instant::now() + FLUSH_AT_EXIT;
        loop {
            let mut gone = Vec::new();
            for k in &mut self.sinks {
                if !k.flush() {
                    gone.push(k.id);
                }
            }
            self.sinks.retain(|k| !gone.contains(&k.id) && !k.queue.is_empty());
            let now = Instant::now();
            if self.sinks.is_empty() || now >= end {
                break;
            }
            let mut fds: Vec<libc::pollfd> = self
                .sinks
                .iter()
                .map(|k| libc::pollfd { fd: k.fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 })
                .collect();
            let ms = end.saturating_duration_since(now).as_millis() as i32 + 1;
            // SAFETY: fds is a valid array of pollfd for its length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        }
        self.sinks.clear();
        self.sources.clear();
    }

    fn drain_outputs(&mut self) {
        let fds: Vec<RawFd> = self
            .running
            .as_ref()
            .map(|r| r.outputs.iter().map(|(f, _)| f.as_raw_fd()).collect())
            .unwrap_or_default();
        for fd in fds {
            self.read_output(fd);
        }
        let _ = self.log.flush_partial();
    }

    fn handle_signals(&mut self) {
        let mut reap = false;
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            match info.ssi_signo as i32 {
                libc::SIGCHLD => reap = true,
                // Someone asked the shim itself to end: stop the container as `stop` would.
                libc::SIGTERM | libc::SIGINT => self.on(Event::StopRequested { grace: None, signal: None }),
                _ => {}
            }
        }
        if reap {
            self.reap();
        }
    }

    fn reap(&mut self) {
        // Decoded by hand: nix refuses the status of a realtime signal (after reaping it).
        while let Some(reaped) = signals::wait_child(-1, true) {
            let Some(code) = reaped.code else { continue };
            let pid = Pid::from_raw(reaped.pid);
            if self.running.as_ref().is_some_and(|r| r.pid == pid) {
                self.container_exited(code);
            } else if self.probe.as_ref().is_some_and(|p| p.pid == pid) {
                self.probe_done(code);
            }
        }
    }

    fn container_exited(&mut self, code: i32) {
        self.drain_outputs();
        self.end_readers(code);
        if self.attached {
            // Written out before the end is recorded (the caller returns when it sees it);
            // then the caller's stdio is let go.
            self.attached = false;
            detach_stdio();
        }
        let Some(running) = self.running.take() else { return };
        let oom = self.prepared.cgroup.oom_kills(&Linux) > running.oom_before;
        self.on(Event::Exited { code, oom, at: super::timefmt::now() });
        if self.life.restart_pending() {
            // The next start mounts the same upper dir, which overlayfs allows once only.
            self.held = None;
        }
    }

    fn start_probe(&mut self) {
        let started = self.fork_probe();
        if !started {
            self.on(Event::ProbeNotStarted);
        }
    }

    /// Runs the healthcheck command in the container; false when it could not be started.
    fn fork_probe(&mut self) -> bool {
        let (Some(h), Some(running)) = (&self.prepared.spec.healthcheck, &self.running) else { return false };
        let Ok((out_r, out_w)) = pipe2(OFlag::O_CLOEXEC) else { return false };
        let Ok(devnull) = fs::File::open("/dev/null") else { return false };
        let exec = ExecSpec { args: h.command.clone(), ..ExecSpec::default() };
        let pid = running.pid.as_raw();
        // SAFETY: the shim is single-threaded.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                let stdio = [devnull.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()];
                join_and_exec(
                    &self.prepared.spec,
                    &self.prepared.caps,
                    &self.prepared.seccomp,
                    pid,
                    &exec,
                    Some(stdio),
                );
            }
            Ok(ForkResult::Parent { child }) => {
                drop(out_w);
                let _ = nix::fcntl::fcntl(&out_r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
                self.probe =
                    Some(Probe { pid: child, output: out_r, buf: Vec::new(), start: super::timefmt::now() });
                true
            }
            Err(_) => false,
        }
    }

    fn read_probe(&mut self) {
        let Some(p) = &mut self.probe else { return };
        let mut buf = [0u8; 4096];
        while let Ok(n) = nix::unistd::read(&p.output, &mut buf) {
            if n == 0 {
                break;
            }
            if p.buf.len() < 4096 {
                p.buf.extend_from_slice(&buf[..n.min(4096 - p.buf.len())]);
            }
        }
    }

    fn probe_done(&mut self, code: i32) {
        self.read_probe();
        let Some(p) = self.probe.take() else { return };
        let output = String::from_utf8_lossy(&p.buf).into_owned();
        self.on(Event::ProbeFinished { code, output, start: p.start, end: super::timefmt::now() });
    }

    fn begin_stop(&mut self, timeout_ms: Option<u64>, signal: Option<String>) {
        let signal = signal.and_then(|s| s.parse::<SignalName>().ok()).map(|s| s.0);
        self.on(Event::StopRequested { grace: timeout_ms.map(Duration::from_millis), signal });
    }

    fn serve(&mut self, fd: RawFd) {
        let Some(idx) = self.clients.iter().position(|c| c.stream.as_raw_fd() == fd) else { return };
        let mut buf = [0u8; 4096];
        let closed = loop {
            // One request per connection: once its line is in, read no further (a blocking
            // stream, as in `finish`, would wait for more).
            if self.clients[idx].buf.contains(&b'\n') {
                break false;
            }
            match self.clients[idx].stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => self.clients[idx].buf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break true,
            }
        };
        let Some(end) = self.clients[idx].buf.iter().position(|b| *b == b'\n') else {
            if closed || self.clients[idx].buf.len() > 65536 {
                self.clients.remove(idx);
            }
            return;
        };
        let client = self.clients.remove(idx);
        let request = serde_json::from_slice::<Request>(&client.buf[..end]);
        let mut stream = client.stream;
        let _ = stream.set_nonblocking(false);
        let response = match request {
            Err(e) => Response {
                ok: false,
                error: Some(format!("bad request: {e}")),
                status: self.life.status.clone(),
            },
            Ok(Request::Status) => Response { ok: true, error: None, status: self.life.status.clone() },
            Ok(Request::Stop { timeout_ms, signal }) => {
                self.begin_stop(timeout_ms, signal);
                if self.running.is_some() {
                    self.stop_waiters.push(stream);
                    return;
                }
                Response { ok: true, error: None, status: self.life.status.clone() }
            }
            Ok(Request::Wait) => {
                // Until `finish`, the container is running or may be restarted.
                self.stop_waiters.push(stream);
                return;
            }
            Ok(Request::Attach { stdin }) => {
                let Some(running) = &mut self.running else {
                    let status = self.life.status.clone();
                    let error = Some("container is not running".to_string());
                    reply(&mut stream, &Response { ok: false, error, status });
                    return;
                };
                // Bytes sent right after the request line are input already.
                if stdin && running.input.is_some() {
                    running.to_input.extend_from_slice(&client.buf[end + 1..]);
                }
                let response = Response { ok: true, error: None, status: self.life.status.clone() };
                reply(&mut stream, &response);
                let _ = stream.set_nonblocking(true);
                let id = self.next_reader;
                self.next_reader += 1;
                let fd = OwnedFd::from(stream);
                if stdin && let Ok(copy) = fd.try_clone() {
                    self.sources.push(Source { id, fd: copy });
                }
                let queue = VecDeque::new();
                let limit = ATTACH_LIMIT;
                self.sinks.push(Sink { id, fd, socket: true, framed: true, only: None, queue, limit });
                self.feed_input();
                return;
            }
            Ok(Request::Resize { rows, cols }) => self.resize(rows, cols),
            Ok(Request::Kill { signal }) => self.deliver(signal.as_deref().unwrap_or("SIGKILL"), true),
            Ok(Request::Signal { signal }) => self.deliver(&signal, false),
        };
        reply(&mut stream, &response);
    }

    /// Sets the size of the container's terminal; the kernel tells its process (SIGWINCH).
    fn resize(&mut self, rows: u16, cols: u16) -> Response {
        let status = self.life.status.clone();
        let input = self.running.as_ref().and_then(|r| r.input.as_ref());
        let (true, Some(master)) = (self.prepared.spec.process.tty, input) else {
            return Response { ok: false, error: Some("container has no terminal".into()), status };
        };
        let ws = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        // SAFETY: TIOCSWINSZ reads a winsize.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            let error = Some(format!("resize: {}", io::Error::last_os_error()));
            return Response { ok: false, error, status };
        }
        Response { ok: true, error: None, status }
    }

    fn deliver(&mut self, signal: &str, kill_request: bool) -> Response {
        let sig = match signal.parse::<SignalName>() {
            Ok(s) => s.0,
            Err(e) => {
                return Response { ok: false, error: Some(e.to_string()), status: self.life.status.clone() };
            }
        };
        let Some(r) = &self.running else {
            // Waiting to be restarted: docker's kill sends nothing then, it only decides
            // whether the restart is called off.
            if kill_request && self.life.restart_pending() {
                self.on(Event::Killed { signal: sig });
                return Response { ok: true, error: None, status: self.life.status.clone() };
            }
            return Response {
                ok: false,
                error: Some("container is not running".into()),
                status: self.life.status.clone(),
            };
        };
        let pid = r.pid;
        if kill_request {
            self.on(Event::Killed { signal: sig });
        }
        let _ = signals::send(pid.as_raw(), sig);
        self.emit("kill", &[("signal", &sig.to_string())]);
        Response { ok: true, error: None, status: self.life.status.clone() }
    }

    /// The container is gone for good: record it, answer whoever waits, then tidy up (so that
    /// a waiter learns the exit code without waiting for the cgroup and mounts to go; whoever
    /// reuses the container's cgroup or dirs waits for the shim to end, see `Runtime::start`).
    fn finish(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = kill(r.pid, Signal::SIGKILL);
            let _ = waitpid(r.pid, None);
        }
        let _ = self.log.flush_partial();
        if self.life.status.state != State::Exited {
            self.life.status.state = State::Exited;
        }
        self.save();
        // Requests that came in with the exit (connected, or still queued on the listener) get
        // the end too, rather than a closed socket: a `wait` asked just then would otherwise
        // learn the end only from the shim's own exit, after the tidying below.
        while let Ok((stream, _)) = self.listener.accept() {
            self.clients.push(Client { stream, buf: Vec::new() });
        }
        let pending: Vec<RawFd> = self.clients.iter().map(|c| c.stream.as_raw_fd()).collect();
        for fd in pending {
            if let Some(client) = self.clients.iter().find(|c| c.stream.as_raw_fd() == fd) {
                let _ = client.stream.set_nonblocking(false);
                let _ = client.stream.set_read_timeout(Some(Duration::from_millis(100)));
            }
            self.serve(fd);
        }
        self.clients.clear();
        let response = Response { ok: true, error: None, status: self.life.status.clone() };
        for mut waiter in self.stop_waiters.drain(..) {
            reply(&mut waiter, &response);
        }
        let _ = nix::sched::sched_yield();
        self.held = None;
        if let Err(e) = self.prepared.cgroup.destroy(&Linux) {
            self.life.status.error.get_or_insert(e.to_string());
        }
        self.life.status.shim_pid = 0;
        self.save();
        let _ = fs::remove_file(self.dirs.container_run(&self.id).join("shim.sock"));
        let _ = fs::remove_dir(&self.prepared.rootfs.rootfs);
    }
}

/// References to the namespaces the container's first process made. When that process exits
/// as the last member, the kernel tears its namespaces down (unmounts the rootfs and more)
/// before it tells the shim; with these held, the exit is reported at once and the teardown
/// happens when the shim drops them, after it has answered.
fn hold_namespaces(pid: Pid) -> HeldNamespaces {
    let _fds = ["mnt", "net", "ipc", "uts", "cgroup"]
        .iter()
        .filter_map(|ns| fs::File::open(format!("/proc/{pid}/ns/{ns}")).ok().map(OwnedFd::from))
        .collect();
    HeldNamespaces { _fds }
}

fn reply(stream: &mut UnixStream, response: &Response) {
    if let Ok(mut text) = serde_json::to_vec(response) {
        text.push(b'\n');
        let _ = stream.write_all(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::handoff::HandoffError;

    #[test]
    fn shim_errors_read_as_before_and_keep_the_errno_for_the_ready_pipe() {
        let e = ShimError::from(nix::errno::Errno::EMFILE);
        assert_eq!(e.to_string(), nix::errno::Errno::EMFILE.to_string());
        assert_eq!(Failure::of(&e).errno, Some(libc::EMFILE));
        let e = ShimError::Clone(nix::errno::Errno::ENOMEM);
        assert_eq!(e.to_string(), format!("clone: {}", nix::errno::Errno::ENOMEM));
        assert_eq!(Failure::of(&e).errno, Some(libc::ENOMEM));
        let e = io_err("/run/x/shim.sock")(io::Error::from_raw_os_error(libc::EADDRINUSE));
        assert_eq!(Failure::of(&e).errno, Some(libc::EADDRINUSE));
        assert!(e.to_string().starts_with("/run/x/shim.sock: "));
        let e = ShimError::from(HandoffError::Refused(Failure::message("disk full")));
        assert_eq!(e.to_string(), "disk full");
        let e = ShimError::from(crate::runtime::init::InitError::message("no command given"));
        assert_eq!(Failure::of(&e), Failure::message("no command given"));
        let init = crate::runtime::init::InitError::at("set hostname", &nix::errno::Errno::EPERM);
        assert_eq!(Failure::of(&ShimError::from(init)).errno, Some(libc::EPERM));
        let refused = Failure { message: "cgroup /x: no space".into(), errno: Some(libc::ENOSPC) };
        assert_eq!(Failure::of(&ShimError::from(HandoffError::Refused(refused))).errno, Some(libc::ENOSPC));
        let gone = ShimError::from(HandoffError::Read(nix::errno::Errno::EBADF));
        assert_eq!(gone.to_string(), format!("reading from the launcher: {}", nix::errno::Errno::EBADF));
        assert_eq!(Failure::of(&gone).errno, Some(libc::EBADF));
        assert_eq!(
            ShimError::IpcNotRunning("db".into()).to_string(),
            "ipc of container db: it is not running"
        );
    }
}
