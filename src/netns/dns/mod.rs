//! The DNS process: one per run dir (`berth dns`, process name `berth-dns`), started when the
//! first network needs it, told to reload with SIGHUP, stopped when the last network goes. Its
//! pid file is `<run>/dns/pid`, written once it listens.

mod server;
mod table;

pub use server::serve;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::error::NetError;
use crate::state::Dirs;

/// The DNS process's name (`/proc/PID/comm`).
pub const PROCESS_NAME: &str = "berth-dns";

/// `<run>/dns/pid`.
pub fn pid_path(dirs: &Dirs) -> PathBuf {
    dirs.run.join("dns").join("pid")
}

/// The pid of the running DNS process of this run dir, if there is one.
pub fn running(dirs: &Dirs) -> Option<Pid> {
    let text = std::fs::read_to_string(pid_path(dirs)).ok()?;
    let pid: i32 = text.trim().parse().ok()?;
    // A zombie, or one killed and not yet torn down, still has its name; it does not run. A
    // damaged pid file may name another run dir's DNS process: that one is not ours to signal.
    (crate::state::process_name_if_runs(pid)? == PROCESS_NAME && of_run_dir(dirs, pid))
        .then_some(Pid::from_raw(pid))
}

/// Whether process `pid` has this run dir in its environment (`BERTH_RUN`, see [`notify`]).
/// The same folder may be spelled another way (a trailing `/`, a link): compared as such too.
fn of_run_dir(dirs: &Dirs, pid: i32) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let ours = dirs.run.as_os_str().as_bytes();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let Some(theirs) = environ.split(|b| *b == 0).find_map(|v| v.strip_prefix(b"BERTH_RUN=")) else {
        return false;
    };
    theirs == ours || {
        let real = |p: &[u8]| std::fs::canonicalize(std::ffi::OsStr::from_bytes(p)).ok();
        real(theirs).is_some_and(|t| Some(t) == real(ours))
    }
}

/// Tells the DNS process to reload, starting it when none runs. `exe` is the berth binary.
pub fn notify(dirs: &Dirs, exe: &Path) -> Result<(), NetError> {
    if let Some(pid) = running(dirs) {
        return kill(pid, Signal::SIGHUP).map_err(|e| NetError::sys("signal the DNS process", e));
    }
    let dir = dirs.run.join("dns");
    std::fs::create_dir_all(&dir).map_err(|e| NetError::sys(format!("create {}", dir.display()), e))?;
    let _ = std::fs::remove_file(pid_path(dirs));
    let log = std::fs::File::create(dir.join("log"))
        .map_err(|e| NetError::sys(format!("create {}", dir.join("log").display()), e))?;
    let mut child = Command::new(exe)
        .arg("dns")
        .env("BERTH_ROOT", &dirs.root)
        .env("BERTH_RUN", &dirs.run)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a Ctrl-C meant for the berth command must not kill it.
        .process_group(0)
        .spawn()
        .map_err(|e| NetError::sys(format!("start {} dns", exe.display()), e))?;
    let pid = child.id();
    // Reap it when it exits, so a long-lived caller (a test, the engine) leaves no zombie that
    // still carries the name.
    let start = Instant::now();
    let ready = loop {
        if std::fs::read_to_string(pid_path(dirs)).is_ok_and(|t| t.trim() == pid.to_string()) {
            break true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            break false;
        }
        if start.elapsed() > Duration::from_secs(5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
        return Err(NetError::Invalid(format!("the DNS process did not start: {}", log.trim())));
    }
    std::thread::spawn(move || child.wait());
    Ok(())
}

/// Stops the DNS process of this run dir, if any, and removes its folder (pid file, log).
/// It is found by its pid file or, when that is lost or damaged (a command killed half-way),
/// by its name and the run dir in its environment. It keeps nothing worth a graceful end:
/// SIGKILL, and a wait on a pidfd until it has exited (a moment; its sockets are free then,
/// for one started right after). Its reaping by its parent (init, once the command that
/// started it has exited, which may take a second or more) is awaited through `reaps`: at
/// once, or with the shims at the end of a teardown (see [`crate::state::Reaps`]).
pub fn stop(dirs: &Dirs, reaps: &crate::state::Reaps) -> Result<(), NetError> {
    let dir = dirs.run.join("dns");
    let pids: Vec<Pid> = match running(dirs) {
        Some(pid) => vec![pid],
        // Its folder goes only once it is gone (below): without the folder, there is none to
        // look for.
        None if dir.exists() => find(dirs),
        None => Vec::new(),
    };
    for pid in pids {
        let pidfd = crate::state::pidfd_open(pid.as_raw());
        match kill(pid, Signal::SIGKILL) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(NetError::sys("stop the DNS process", e)),
        }
        if let Some(fd) = &pidfd {
            wait_exit(fd, Duration::from_secs(5));
        }
        if running_pid(pid) {
            return Err(NetError::Invalid(format!("the DNS process {pid} does not exit")));
        }
        // Gone means reaped too: a zombie still shows as `berth-dns` (see `state::wait_fd_reaped`).
        // Not reaped in time is init's business.
        reaps.wait(pidfd, pid.as_raw(), PROCESS_NAME);
    }
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::sys(format!("remove {}", dir.display()), e)),
    }
}

/// Waits until the process of pidfd `fd` has exited (POLLIN; a zombie counts), or `limit`.
fn wait_exit(fd: &std::os::fd::OwnedFd, limit: Duration) {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let end = Instant::now() + limit;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32 + 1) };
        if n != 0 || left.is_zero() {
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
    }
}

/// DNS processes of this run dir found without their pid file: named `berth-dns`, not
/// exited, with this run dir in their environment (see [`notify`]). One that was sent SIGKILL
/// (`kill -9`) but is still being torn down counts: it holds its sockets until it has exited,
/// and a DNS process started before then cannot listen on the gateways' port 53.
fn find(dirs: &Dirs) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != PROCESS_NAME || !not_exited(pid) {
            continue;
        }
        if of_run_dir(dirs, pid) {
            out.push(Pid::from_raw(pid));
        }
    }
    out
}

/// Whether process `pid` exists and has not exited (is no zombie); it may be dying.
fn not_exited(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])))
}

/// Whether `pid` runs (not a zombie, not killed; see `state::process_name_if_runs`).
fn running_pid(pid: Pid) -> bool {
    crate::state::process_runs(pid.as_raw())
}
