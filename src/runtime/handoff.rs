//! The launcher's handoff to a new shim, over the socket the shim gets as fd 4.
//!
//! Three messages, so that the container is built while the launcher still works:
//!
//! - **setup**, right after the spawn: the spec and the compiled seccomp filters (or why there
//!   are none). The shim needs nothing from disk to prepare the container.
//! - **resources**, once the cgroup and, for a container without a network, its fresh network
//!   namespace exist (the namespace passed as SCM_RIGHTS): the shim clones the container's
//!   first process after it.
//! - **commit**, once the records are written and synced: `ok`, or why not. The container's
//!   first process waits for it (through the shim) just before `execve`, so nothing of the
//!   user's runs unless the container is on record.
//!
//! Each message is a run of frames: a 4-byte little-endian length, then that many bytes. An
//! outcome frame holds `ok` or `error: ...`.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// The largest frame accepted: a spec is a few kilobytes; this bounds a corrupt length.
const MAX_FRAME: usize = 64 << 20;

/// What the shim gets in the setup message.
#[derive(Debug)]
pub(crate) struct Setup {
    /// The spec, as JSON.
    pub spec_json: Vec<u8>,
    /// The seccomp filters, as [`super::seccomp::encode`] writes them.
    pub seccomp: Vec<u8>,
}

fn frame(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// The outcome as text: `ok` or `error: ...`.
fn outcome_text(outcome: &Result<(), String>) -> Vec<u8> {
    match outcome {
        Ok(()) => b"ok".to_vec(),
        Err(message) => format!("error: {message}").into_bytes(),
    }
}

fn parse_outcome(bytes: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(bytes);
    match text.as_ref() {
        "ok" => Ok(()),
        other => Err(other.strip_prefix("error: ").unwrap_or(other).to_string()),
    }
}

/// Sends all of `bytes`, the first part with `fd` attached (a stream socket may take less
/// than all at once; the rest goes without it).
fn send_with_fd(socket: BorrowedFd<'_>, bytes: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let rights = [ControlMessage::ScmRights(&fds)];
    let mut cmsgs = if fds.is_empty() { &rights[..0] } else { &rights[..] };
    let mut sent = 0;
    while sent < bytes.len() {
        let iov = [io::IoSlice::new(&bytes[sent..])];
        match sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => {
                sent += n;
                cmsgs = &rights[..0];
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Launcher: the setup message. `outcome` is an error when the spec's security settings
/// cannot be compiled; the shim then reports it and ends.
pub(crate) fn send_setup(
    socket: BorrowedFd<'_>,
    outcome: &Result<(), String>,
    spec_json: &[u8],
    seccomp: &[u8],
) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(spec_json.len() + seccomp.len() + 64);
    frame(&mut bytes, &outcome_text(outcome));
    frame(&mut bytes, spec_json);
    frame(&mut bytes, seccomp);
    send_with_fd(socket, &bytes, None)
}

/// Launcher: the resources message: whether the cgroup is made, and the network namespace made
/// for the container, if any.
pub(crate) fn send_resources(
    socket: BorrowedFd<'_>,
    outcome: &Result<(), String>,
    netns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut bytes = Vec::new();
    frame(&mut bytes, &outcome_text(outcome));
    send_with_fd(socket, &bytes, netns.map(|fd| fd.as_raw_fd()))
}

/// Launcher: the commit message.
pub(crate) fn send_commit(socket: BorrowedFd<'_>, outcome: &Result<(), String>) -> io::Result<()> {
    let mut bytes = Vec::new();
    frame(&mut bytes, &outcome_text(outcome));
    send_with_fd(socket, &bytes, None)
}

/// The shim's end of the handoff: reads the launcher's messages in order. Bytes of a later
/// message that arrive with an earlier one wait in the buffer.
#[derive(Debug)]
pub(crate) struct Launcher {
    socket: OwnedFd,
    buf: Vec<u8>,
    /// Fds passed with the messages, in order.
    fds: Vec<OwnedFd>,
}

impl Launcher {
    /// The shim's end of the handoff socket.
    pub(crate) fn new(socket: OwnedFd) -> Self {
        Launcher { socket, buf: Vec::new(), fds: Vec::new() }
    }

    /// Reads until `n` bytes are buffered; the launcher going away is an error.
    fn fill(&mut self, n: usize) -> Result<(), String> {
        while self.buf.len() < n {
            // Straight into the buffer: room for what is missing, and for small messages
            // that follow it in the same read.
            let have = self.buf.len();
            self.buf.resize(have + (n - have).max(4096), 0);
            let mut cmsg = nix::cmsg_space!([RawFd; 2]);
            let mut iov = [io::IoSliceMut::new(&mut self.buf[have..])];
            let msg = match recvmsg::<()>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EINTR) => {
                    self.buf.truncate(have);
                    continue;
                }
                Err(e) => return Err(format!("reading from the launcher: {e}")),
            };
            for c in msg.cmsgs().into_iter().flatten() {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    // SAFETY: the kernel gave us these fds with the message; nothing else owns
                    // them.
                    self.fds.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
            let got = msg.bytes;
            self.buf.truncate(have + got);
            if got == 0 {
                return Err("the launcher went away".into());
            }
        }
        Ok(())
    }

    fn frame(&mut self) -> Result<Vec<u8>, String> {
        self.fill(4)?;
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(format!("the launcher sent a frame of {len} bytes"));
        }
        self.fill(4 + len)?;
        let rest = self.buf.split_off(4 + len);
        let mut framed = std::mem::replace(&mut self.buf, rest);
        Ok(framed.split_off(4))
    }

    /// The setup message, or why the container cannot be made.
    pub(crate) fn setup(&mut self) -> Result<Setup, String> {
        let outcome = self.frame()?;
        let spec_json = self.frame()?;
        let seccomp = self.frame()?;
        parse_outcome(&outcome)?;
        Ok(Setup { spec_json, seccomp })
    }

    /// The resources message: the network namespace made for the container, if any, or why
    /// the container cannot be made.
    pub(crate) fn resources(&mut self) -> Result<Option<OwnedFd>, String> {
        parse_outcome(&self.frame()?)?;
        Ok(self.fds.pop())
    }

    /// The commit message; an error says why the container must not run.
    pub(crate) fn commit(&mut self) -> Result<(), String> {
        parse_outcome(&self.frame()?)
    }
}

/// The one byte that lets the container's first process go on to `execve`.
pub(crate) fn release(write_end: OwnedFd) {
    let _ = std::fs::File::from(write_end).write_all(b"g");
}

/// The container's first process: waits for [`release`]; false when the shim closed the pipe
/// without it (the start was called off).
pub(crate) fn wait_for_release(read_end: RawFd) -> bool {
    // SAFETY: the shim made this pipe for us and it stays open until execve (close-on-exec);
    // ManuallyDrop keeps it open for the caller.
    let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(read_end) });
    let mut byte = [0u8; 1];
    loop {
        match file.read(&mut byte) {
            Ok(1) => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_three_messages_arrive_whole_with_the_namespace_fd() {
        let (launcher, shim) = UnixStream::pair().unwrap();
        let mut shim = Launcher::new(shim.into());
        let passed = std::fs::File::open("/dev/null").unwrap();
        let spec = br#"{"id":"abc"}"#.repeat(20_000);
        let (go_on, wait_for_shim) = std::sync::mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            send_setup(launcher.as_fd(), &Ok(()), &spec, b"\x01\x02").unwrap();
            wait_for_shim.recv().unwrap();
            send_resources(launcher.as_fd(), &Ok(()), Some(passed.as_fd())).unwrap();
            wait_for_shim.recv().unwrap();
            send_commit(launcher.as_fd(), &Err("disk full".into())).unwrap();
            spec
        });
        let setup = shim.setup().unwrap();
        go_on.send(()).unwrap();
        let netns = shim.resources().unwrap();
        go_on.send(()).unwrap();
        let commit = shim.commit();
        let spec = writer.join().unwrap();
        assert_eq!(setup.spec_json, spec);
        assert_eq!(setup.seccomp, b"\x01\x02");
        assert!(netns.is_some());
        assert_eq!(commit, Err("disk full".to_string()));
    }

    #[test]
    fn messages_sent_at_once_are_read_one_by_one() {
        let (launcher, shim) = UnixStream::pair().unwrap();
        let mut shim = Launcher::new(shim.into());
        send_setup(launcher.as_fd(), &Ok(()), b"{}", b"").unwrap();
        send_resources(launcher.as_fd(), &Ok(()), None).unwrap();
        send_commit(launcher.as_fd(), &Ok(())).unwrap();
        assert_eq!(shim.setup().unwrap().spec_json, b"{}");
        assert!(shim.resources().unwrap().is_none());
        assert_eq!(shim.commit(), Ok(()));
    }

    #[test]
    fn a_failed_step_or_a_vanished_launcher_is_an_error() {
        let (launcher, shim) = UnixStream::pair().unwrap();
        let mut shim = Launcher::new(shim.into());
        send_setup(launcher.as_fd(), &Err("seccomp: unknown syscall".into()), b"{}", b"").unwrap();
        assert_eq!(shim.setup().unwrap_err(), "seccomp: unknown syscall");
        // The frames of a failed setup are still read, so the next message lines up.
        send_resources(launcher.as_fd(), &Err("cgroup: no memory controller".into()), None).unwrap();
        drop(launcher);
        assert_eq!(shim.resources().unwrap_err(), "cgroup: no memory controller");
        assert_eq!(shim.commit().unwrap_err(), "the launcher went away");
    }

    #[test]
    fn release_lets_the_waiter_go_and_a_closed_pipe_does_not() {
        let (r, w) = nix::unistd::pipe().unwrap();
        release(w);
        assert!(wait_for_release(r.as_raw_fd()));
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(w);
        assert!(!wait_for_release(r.as_raw_fd()));
    }
}
