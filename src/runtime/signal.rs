//! Signals by number, the realtime ones (SIGRTMIN..SIGRTMAX) included. nix's `Signal` names
//! only the standard ones (and its decoding of a wait status or a `sigwait` refuses or panics
//! on a realtime one), so the runtime carries raw numbers and decodes waits itself.
//!
//! Names are read as docker reads them (moby/sys `signal.ParseSignal` and its Linux map): with
//! or without `SIG`, in any case, or a number; `RTMIN`, `RTMIN+n`, `RTMAX-n`, `RTMAX` for the
//! realtime signals (the kernel's numbers, 34 to 64: glibc keeps 32 and 33 for itself, and
//! docker's map leaves them out as well).

use std::fmt;
use std::io;

/// The first realtime signal as docker numbers it (the kernel's 32 and 33 are glibc's).
pub const SIGRTMIN: i32 = 34;
/// The last realtime signal.
pub const SIGRTMAX: i32 = 64;

/// The standard signals by name, without `SIG`. The first name of a number is the one shown.
const NAMES: [(&str, i32); 34] = [
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
    // Other names of the same numbers, accepted as docker accepts them.
    ("CLD", libc::SIGCHLD),
    ("IOT", libc::SIGABRT),
    ("POLL", libc::SIGIO),
];

/// A signal given by name (`SIGTERM`, `TERM`, `term`, `SIGRTMIN+3`, `rtmax-2`) or number,
/// held as its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalName(pub i32);

/// A signal that is not known; the message names the value and what would be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid signal {0:?} (a name such as SIGTERM, TERM or SIGRTMIN+3, or a number from 1 to 31 \
     or {SIGRTMIN} to {SIGRTMAX})"
)]
pub struct BadSignal(pub String);

/// Whether `n` is a signal a container's process can be sent (docker's
/// `ValidSignalForPlatform` on Linux).
pub fn is_valid(n: i32) -> bool {
    (1..=31).contains(&n) || (SIGRTMIN..=SIGRTMAX).contains(&n)
}

/// `RTMIN`, `RTMIN+n`, `RTMAX-n`, `RTMAX` (already upper case, without `SIG`), when within
/// the realtime range.
fn realtime(name: &str) -> Option<i32> {
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix(sign)?;
        // Only plain digits: `RTMIN++3` or `RTMIN+-3` are not names.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i32>().ok()
    };
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        SIGRTMIN.checked_add(offset(rest, '+')?)?
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        SIGRTMAX.checked_sub(offset(rest, '-')?)?
    } else {
        return None;
    };
    (SIGRTMIN..=SIGRTMAX).contains(&n).then_some(n)
}

impl std::str::FromStr for SignalName {
    type Err = BadSignal;
    fn from_str(s: &str) -> Result<Self, BadSignal> {
        let bad = || BadSignal(s.into());
        let t = s.trim();
        if t.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+') {
            return t.parse::<i32>().ok().filter(|n| is_valid(*n)).map(SignalName).ok_or_else(bad);
        }
        let upper = t.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, number)| *number)
            .or_else(|| realtime(name))
            .map(SignalName)
            .ok_or_else(bad)
    }
}

impl fmt::Display for SignalName {
    /// The signal's name as docker's map has it (`SIGTERM`, `SIGRTMIN+3`, `SIGRTMAX-2`), or its
    /// number when it has none.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if let Some((name, _)) = NAMES.iter().find(|(_, number)| *number == n) {
            return write!(f, "SIG{name}");
        }
        match n {
            SIGRTMIN => f.write_str("SIGRTMIN"),
            SIGRTMAX => f.write_str("SIGRTMAX"),
            // docker's map names the first sixteen from RTMIN and the rest from RTMAX.
            _ if (SIGRTMIN + 1..=SIGRTMIN + 15).contains(&n) => write!(f, "SIGRTMIN+{}", n - SIGRTMIN),
            _ if (SIGRTMIN + 16..SIGRTMAX).contains(&n) => write!(f, "SIGRTMAX-{}", SIGRTMAX - n),
            _ => write!(f, "{n}"),
        }
    }
}

/// Sends signal number `sig` to process `pid`.
pub fn send(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers.
    if unsafe { libc::kill(pid, sig) } == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The exit status docker reports for a raw wait status: the exit code, or 128 plus the
/// signal that ended the process; `None` for a stop or a continue.
pub fn exit_code(status: i32) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// A child that changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Its process id.
    pub pid: i32,
    /// Its exit status (see [`exit_code`]); `None` when it only stopped or continued.
    pub code: Option<i32>,
}

/// `waitpid(pid)` (-1: any child), decoded here rather than by nix, which refuses a status of
/// a realtime signal after the child is already reaped. `None` when no child has changed
/// (with `nohang`) or there is none; an interrupted wait is retried.
pub fn wait_child(pid: i32, nohang: bool) -> Option<Reaped> {
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into our integer.
        let got = unsafe { libc::waitpid(pid, &mut status, flags) };
        if got > 0 {
            return Some(Reaped { pid: got, code: exit_code(status) });
        }
        if got < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<i32, BadSignal> {
        s.parse::<SignalName>().map(|s| s.0)
    }

    #[test]
    fn names_parse_with_or_without_sig_in_any_case() {
        assert_eq!(parse("SIGTERM"), Ok(libc::SIGTERM));
        assert_eq!(parse("TERM"), Ok(libc::SIGTERM));
        assert_eq!(parse("term"), Ok(libc::SIGTERM));
        assert_eq!(parse("sigint"), Ok(libc::SIGINT));
        assert_eq!(parse("SigUsr1"), Ok(libc::SIGUSR1));
        assert_eq!(parse("CLD"), Ok(libc::SIGCHLD));
        assert_eq!(parse("IOT"), Ok(libc::SIGABRT));
        assert_eq!(parse("POLL"), Ok(libc::SIGIO));
        assert_eq!(parse("STKFLT"), Ok(16));
    }

    #[test]
    fn realtime_names_count_from_either_end() {
        assert_eq!(parse("SIGRTMIN"), Ok(34));
        assert_eq!(parse("RTMIN"), Ok(34));
        assert_eq!(parse("SIGRTMIN+3"), Ok(37));
        assert_eq!(parse("rtmin+3"), Ok(37));
        assert_eq!(parse("RTMIN+0"), Ok(34));
        assert_eq!(parse("RTMIN+30"), Ok(64));
        assert_eq!(parse("SIGRTMAX"), Ok(64));
        assert_eq!(parse("SIGRTMAX-2"), Ok(62));
        assert_eq!(parse("rtmax-30"), Ok(34));
    }

    #[test]
    fn numbers_parse_within_the_platform_s_range() {
        assert_eq!(parse("9"), Ok(9));
        assert_eq!(parse("31"), Ok(31));
        assert_eq!(parse("34"), Ok(34));
        assert_eq!(parse("37"), Ok(37));
        assert_eq!(parse("64"), Ok(64));
        assert_eq!(parse("+9"), Ok(9));
        for bad in ["0", "32", "33", "65", "-9", "99999999999"] {
            assert_eq!(parse(bad), Err(BadSignal(bad.into())), "{bad}");
        }
    }

    #[test]
    fn unknown_names_are_errors_that_name_the_value() {
        for bad in [
            "", "SIG", "SIGNOPE", "RTMIN+31", "RTMAX-31", "RTMIN-1", "RTMAX+1", "RTMIN+", "RTMIN++3",
            "RTMIN+-3", "RTMIN3", "SIGSIGTERM", "TERM9",
        ] {
            assert_eq!(parse(bad), Err(BadSignal(bad.into())), "{bad}");
        }
        let message = "SIGRTMIN+99".parse::<SignalName>().unwrap_err().to_string();
        assert!(message.starts_with("invalid signal \"SIGRTMIN+99\""), "{message}");
        assert!(message.contains("34 to 64"), "{message}");
    }

    #[test]
    fn names_are_shown_as_docker_s_map_has_them() {
        let shown = |n: i32| SignalName(n).to_string();
        assert_eq!(shown(libc::SIGTERM), "SIGTERM");
        assert_eq!(shown(libc::SIGCHLD), "SIGCHLD");
        assert_eq!(shown(libc::SIGABRT), "SIGABRT");
        assert_eq!(shown(34), "SIGRTMIN");
        assert_eq!(shown(37), "SIGRTMIN+3");
        assert_eq!(shown(49), "SIGRTMIN+15");
        assert_eq!(shown(50), "SIGRTMAX-14");
        assert_eq!(shown(62), "SIGRTMAX-2");
        assert_eq!(shown(64), "SIGRTMAX");
        assert_eq!(shown(33), "33");
        // Every valid number reads back as itself.
        for n in (1..=64).filter(|n| is_valid(*n)) {
            assert_eq!(parse(&shown(n)), Ok(n), "{n}");
        }
    }

    #[test]
    fn wait_statuses_decode_to_docker_s_exit_codes() {
        // Status words as the kernel makes them: exit code in the second byte, signal in the
        // low seven bits, 0x7f for a stop.
        assert_eq!(exit_code(3 << 8), Some(3));
        assert_eq!(exit_code(libc::SIGKILL), Some(137));
        assert_eq!(exit_code(37), Some(128 + 37));
        assert_eq!(exit_code(64 | 0x80), Some(192));
        assert_eq!(exit_code((libc::SIGSTOP << 8) | 0x7f), None);
    }

    #[test]
    fn a_child_ended_by_a_realtime_signal_is_reaped_with_its_code() {
        // SAFETY: the child only pauses until the signal ends it.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: async-signal-safe calls only, in the forked child.
            unsafe {
                libc::pause();
                libc::_exit(0);
            }
        }
        assert!(pid > 0);
        send(pid, SIGRTMIN + 3).unwrap();
        assert_eq!(wait_child(pid, false), Some(Reaped { pid, code: Some(128 + 37) }));
        assert_eq!(wait_child(pid, true), None);
    }
}
