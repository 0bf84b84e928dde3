//! `exec` with and without a terminal. With one: the command gets a fresh pseudo-terminal as its controlling
//! terminal and stdio, and this process relays between it and its own terminal (put in raw
//! mode meanwhile), as `docker exec -it` does.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::sys::termios::{self, SetArg, Termios};

/// Puts the terminal on stdin in raw mode and restores it when dropped.
pub struct RawMode {
    fd: std::io::Stdin,
    saved: Termios,
}

impl RawMode {
    /// Raw mode on stdin; `None` when stdin is not a terminal.
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { fd: stdin, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// The size of the terminal on stdin, if it is one.
pub fn stdin_window_size() -> Option<libc::winsize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ fills a winsize.
    (unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0).then_some(ws)
}

/// Runs `cmd` (a `berth join`) on a new pseudo-terminal and relays this process's stdio to it
/// until the command ends; returns its exit status.
pub fn run_on_pty(mut cmd: Command) -> io::Result<std::process::ExitStatus> {
    let winsize = stdin_window_size();
    let pty = nix::pty::openpty(winsize.as_ref(), None).map_err(io::Error::from)?;
    let (master, slave): (OwnedFd, OwnedFd) = (pty.master, pty.slave);
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; they make the terminal the child's
    // controlling one, as a login would.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(cmd);
    let raw = RawMode::enter();
    let mut to_pty = File::from(master.try_clone()?);
    // Keystrokes go to the terminal until the command ends; this thread is left blocked on
    // stdin then, and ends with the process.
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || to_pty.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let mut from_pty = File::from(master);
    let mut out = std::io::stdout();
    let mut buf = [0u8; 4096];
    // Reading fails with EIO once every holder of the other side has closed it.
    while let Ok(n) = from_pty.read(&mut buf) {
        if n == 0 || out.write_all(&buf[..n]).and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    let status = child.wait();
    drop(raw);
    status
}

/// Runs `cmd` with this process's stdio, except that a terminal among them is replaced by a
/// pipe relayed to it, so that the command never sees a terminal (`exec -T`).
pub fn run_without_terminal(mut cmd: Command) -> io::Result<std::process::ExitStatus> {
    use std::io::IsTerminal;
    let (tin, tout, terr) =
        (std::io::stdin().is_terminal(), std::io::stdout().is_terminal(), std::io::stderr().is_terminal());
    if !(tin || tout || terr) {
        return cmd.status();
    }
    if tin {
        cmd.stdin(Stdio::piped());
    }
    if tout {
        cmd.stdout(Stdio::piped());
    }
    if terr {
        cmd.stderr(Stdio::piped());
    }
    let mut child = cmd.spawn()?;
    if let Some(mut to_child) = child.stdin.take() {
        // Left blocked on our stdin when the command ends; it ends with the process.
        std::thread::spawn(move || {
            let _ = io::copy(&mut std::io::stdin(), &mut to_child);
        });
    }
    let out =
        child.stdout.take().map(|mut o| std::thread::spawn(move || io::copy(&mut o, &mut std::io::stdout())));
    let err =
        child.stderr.take().map(|mut e| std::thread::spawn(move || io::copy(&mut e, &mut std::io::stderr())));
    for h in [out, err].into_iter().flatten() {
        let _ = h.join();
    }
    child.wait()
}
