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
//! Each message is a run of frames: a 4-byte little-endian length, then that many bytes. The
//! first frame is a [`Header`] as JSON (which message, and the launcher's [`Failure`] if the
//! step failed); a setup message then has the spec and the filters as raw frames.
//!
//! The shim reports the first start on its ready pipe as one JSON line, a [`Ready`].

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

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

/// A failure as it crosses a process boundary: the text users see, and the errno when the
/// failing call gave one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What went wrong, rendered.
    pub message: String,
    /// The errno behind it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

impl Failure {
    /// The failure of `error`: its text and the errno on its chain of sources.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Failure {
        Failure { message: error.to_string(), errno: super::syscall::errno_of(error) }
    }

    /// A failure with no errno.
    pub fn message(message: impl Into<String>) -> Failure {
        Failure { message: message.into(), errno: None }
    }
}

/// The first frame of each message of the handoff: which one, and whether the launcher's step
/// failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "message", rename_all = "snake_case")]
pub(crate) enum Header {
    /// The spec and the filters follow, as two frames (empty when `failed`).
    Setup {
        /// Why the spec's security settings could not be compiled.
        failed: Option<Failure>,
    },
    /// The cgroup is made (or not); a network namespace may come with it.
    Resources {
        /// Why the cgroup could not be made.
        failed: Option<Failure>,
    },
    /// The records are durable (or not).
    Commit {
        /// Why the records could not be written: the container must not run.
        failed: Option<Failure>,
    },
}

impl Header {
    fn name(&self) -> &'static str {
        match self {
            Header::Setup { .. } => "setup",
            Header::Resources { .. } => "resources",
            Header::Commit { .. } => "commit",
        }
    }

    fn failed(self) -> Option<Failure> {
        match self {
            Header::Setup { failed } | Header::Resources { failed } | Header::Commit { failed } => failed,
        }
    }
}

/// The shim's report of the first start, on the ready pipe: one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ready", rename_all = "snake_case")]
pub(crate) enum Ready {
    /// The container's process has exec'd.
    Started,
    /// The start failed.
    Failed {
        /// Why.
        #[serde(flatten)]
        failure: Failure,
    },
}

impl Ready {
    /// The line written to the ready pipe.
    pub(crate) fn line(&self) -> String {
        // A plain enum of strings and numbers always serializes.
        let mut line =
            serde_json::to_string(self).unwrap_or_else(|_| r#"{"ready":"failed","message":"?"}"#.into());
        line.push('\n');
        line
    }

    /// The report read from the ready pipe (`line` as read, maybe empty when the shim died).
    pub(crate) fn parse(line: &str) -> Ready {
        let line = line.trim();
        if line.is_empty() {
            return Ready::Failed { failure: Failure::message("the shim exited without a word") };
        }
        serde_json::from_str(line).unwrap_or_else(|_| Ready::Failed {
            failure: Failure::message(format!("the shim answered {line:?}")),
        })
    }
}

/// The shim's end of the handoff failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandoffError {
    /// The socket could not be read.
    #[error("reading from the launcher: {0}")]
    Read(#[source] nix::errno::Errno),
    /// The launcher closed its end.
    #[error("the launcher went away")]
    Gone,
    /// A length beyond any real message.
    #[error("the launcher sent a frame of {0} bytes")]
    TooLarge(usize),
    /// A header that is not JSON of a [`Header`].
    #[error("the launcher's message: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A message other than the one due.
    #[error("the launcher sent its {got} message where {expected} was due")]
    OutOfOrder {
        /// The message due.
        expected: &'static str,
        /// The one sent.
        got: &'static str,
    },
    /// The launcher's step failed: the container cannot be made (or must not run).
    #[error("{0}")]
    Refused(#[source] Failure),
}

fn frame(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn header_frame(out: &mut Vec<u8>, header: &Header) {
    // A header is strings and numbers: it always serializes.
    frame(out, &serde_json::to_vec(header).unwrap_or_default());
}

/// The launcher's outcome of a step, as the header carries it.
fn failed(outcome: Result<(), &Failure>) -> Option<Failure> {
    outcome.err().cloned()
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
    outcome: Result<(), &Failure>,
    spec_json: &[u8],
    seccomp: &[u8],
) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(spec_json.len() + seccomp.len() + 64);
    header_frame(&mut bytes, &Header::Setup { failed: failed(outcome) });
    frame(&mut bytes, spec_json);
    frame(&mut bytes, seccomp);
    send_with_fd(socket, &bytes, None)
}

/// Launcher: the resources message: whether the cgroup is made, and the network namespace made
/// for the container, if any.
pub(crate) fn send_resources(
    socket: BorrowedFd<'_>,
    outcome: Result<(), &Failure>,
    netns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut bytes = Vec::new();
    header_frame(&mut bytes, &Header::Resources { failed: failed(outcome) });
    send_with_fd(socket, &bytes, netns.map(|fd| fd.as_raw_fd()))
}

/// Launcher: the commit message.
pub(crate) fn send_commit(socket: BorrowedFd<'_>, outcome: Result<(), &Failure>) -> io::Result<()> {
    let mut bytes = Vec::new();
    header_frame(&mut bytes, &Header::Commit { failed: failed(outcome) });
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
    fn fill(&mut self, n: usize) -> Result<(), HandoffError> {
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
                Err(e) => return Err(HandoffError::Read(e)),
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
                return Err(HandoffError::Gone);
            }
        }
        Ok(())
    }

    fn frame(&mut self) -> Result<Vec<u8>, HandoffError> {
        self.fill(4)?;
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_FRAME {
            return Err(HandoffError::TooLarge(len));
        }
        self.fill(4 + len)?;
        let rest = self.buf.split_off(4 + len);
        let mut framed = std::mem::replace(&mut self.buf, rest);
        Ok(framed.split_off(4))
    }

    /// The header of the message due: the launcher's failure when its step failed.
    fn header(&mut self, expected: &'static str) -> Result<Result<(), Failure>, HandoffError> {
        let header: Header = serde_json::from_slice(&self.frame()?).map_err(HandoffError::Malformed)?;
        if header.name() != expected {
            return Err(HandoffError::OutOfOrder { expected, got: header.name() });
        }
        Ok(header.failed().map_or(Ok(()), Err))
    }

    /// The setup message, or why the container cannot be made.
    pub(crate) fn setup(&mut self) -> Result<Setup, HandoffError> {
        let outcome = self.header("setup")?;
        // The frames of a failed setup are read too, so that the next message lines up.
        let spec_json = self.frame()?;
        let seccomp = self.frame()?;
        outcome.map_err(HandoffError::Refused)?;
        Ok(Setup { spec_json, seccomp })
    }

    /// The resources message: the network namespace made for the container, if any, or why
    /// the container cannot be made.
    pub(crate) fn resources(&mut self) -> Result<Option<OwnedFd>, HandoffError> {
        self.header("resources")?.map_err(HandoffError::Refused)?;
        Ok(self.fds.pop())
    }

    /// The commit message; an error says why the container must not run.
    pub(crate) fn commit(&mut self) -> Result<(), HandoffError> {
        self.header("commit")?.map_err(HandoffError::Refused)
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
            send_setup(launcher.as_fd(), Ok(()), &spec, b"\x01\x02").unwrap();
            wait_for_shim.recv().unwrap();
            send_resources(launcher.as_fd(), Ok(()), Some(passed.as_fd())).unwrap();
            wait_for_shim.recv().unwrap();
            let full = Failure::of(&io::Error::from_raw_os_error(libc::ENOSPC));
            send_commit(launcher.as_fd(), Err(&full)).unwrap();
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
        let Err(HandoffError::Refused(failure)) = commit else { panic!("{commit:?}") };
        assert_eq!(failure.errno, Some(libc::ENOSPC));
        assert_eq!(failure.to_string(), io::Error::from_raw_os_error(libc::ENOSPC).to_string());
    }

    #[test]
    fn messages_sent_at_once_are_read_one_by_one() {
        let (launcher, shim) = UnixStream::pair().unwrap();
        let mut shim = Launcher::new(shim.into());
        send_setup(launcher.as_fd(), Ok(()), b"{}", b"").unwrap();
        send_resources(launcher.as_fd(), Ok(()), None).unwrap();
        send_commit(launcher.as_fd(), Ok(())).unwrap();
        assert_eq!(shim.setup().unwrap().spec_json, b"{}");
        assert!(shim.resources().unwrap().is_none());
        shim.commit().unwrap();
    }

    #[test]
    fn a_failed_step_or_a_vanished_launcher_is_an_error() {
        let (launcher, shim) = UnixStream::pair().unwrap();
        let mut shim = Launcher::new(shim.into());
        send_setup(launcher.as_fd(), Err(&Failure::message("seccomp: unknown syscall")), b"{}", b"").unwrap();
        assert_eq!(shim.setup().unwrap_err().to_string(), "seccomp: unknown syscall");
        // The frames of a failed setup are still read, so the next message lines up.
        send_resources(launcher.as_fd(), Err(&Failure::message("cgroup: no memory controller")), None)
            .unwrap();
        drop(launcher);
        assert_eq!(shim.resources().unwrap_err().to_string(), "cgroup: no memory controller");
        assert!(matches!(shim.commit(), Err(HandoffError::Gone)));
        assert_eq!(HandoffError::Gone.to_string(), "the launcher went away");
    }

    #[test]
    fn a_message_out_of_order_or_not_json_is_refused() {
        let (launcher, shim) = UnixStream::pair().unwrap();
        let mut shim = Launcher::new(shim.into());
        send_commit(launcher.as_fd(), Ok(())).unwrap();
        let err = shim.setup().unwrap_err();
        assert!(matches!(err, HandoffError::OutOfOrder { expected: "setup", got: "commit" }), "{err:?}");
        let mut bytes = Vec::new();
        frame(&mut bytes, b"ok");
        send_with_fd(launcher.as_fd(), &bytes, None).unwrap();
        assert!(matches!(shim.resources(), Err(HandoffError::Malformed(_))));
    }

    #[test]
    fn the_ready_line_round_trips_and_silence_is_a_failure() {
        let started = Ready::Started.line();
        assert_eq!(started, "{\"ready\":\"started\"}\n");
        assert_eq!(Ready::parse(&started), Ready::Started);
        let failed =
            Ready::Failed { failure: Failure { message: "exec \"x\": ENOENT".into(), errno: Some(2) } };
        assert_eq!(Ready::parse(&failed.line()), failed);
        assert_eq!(
            Ready::parse(""),
            Ready::Failed { failure: Failure::message("the shim exited without a word") }
        );
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
