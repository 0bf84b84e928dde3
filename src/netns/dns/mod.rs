//! The DNS process: one per run dir (`berth dns`, process name `berth-dns`), started when the
//! first network needs it, told to reload with SIGHUP, stopped when the last network goes. Its
//! pid file is `<run>/dns/pid`, written once it listens.

mod server;
mod table;

pub use server::serve;
pub use table::{Answer, Table};

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
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // A zombie still has its name; it is not running.
    let zombie = stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z'));
    (comm.trim() == PROCESS_NAME && !zombie).then_some(Pid::from_raw(pid))
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

/// Stops the DNS process of this run dir, if any, and waits for it to go.
pub fn stop(dirs: &Dirs) -> Result<(), NetError> {
    if let Some(pid) = running(dirs) {
        kill(pid, Signal::SIGTERM).map_err(|e| NetError::sys("stop the DNS process", e))?;
        let start = Instant::now();
        while running_pid(pid) {
            if start.elapsed() > Duration::from_secs(2) {
                let _ = kill(pid, Signal::SIGKILL);
            }
            if start.elapsed() > Duration::from_secs(5) {
                return Err(NetError::Invalid(format!("the DNS process {pid} does not exit")));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // A dead process keeps its name until its parent reaps it; when that parent is init
        // (the berth command that started it has exited), give init a moment, so that nothing
        // named berth-dns is seen once stop returns.
        let gone = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && gone.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    match std::fs::remove_file(pid_path(dirs)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::sys("remove the DNS pid file", e)),
    }
}

/// Whether `pid` is a live (not zombie) berth-dns.
fn running_pid(pid: Pid) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = stat.rsplit(')').next().is_none_or(|s| s.trim_start().starts_with('Z'));
    !stat.is_empty() && !zombie
}
