//! Ctrl-C and SIGTERM for attached commands: counted, not fatal, so that the first one stops
//! the project gracefully and the second one kills it, as docker compose does.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

use crate::runtime::signal::SIGRTMAX;

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

/// Set by the first interrupt: long work that polls it (a build) stops and cleans up.
static CANCEL: AtomicBool = AtomicBool::new(false);

extern "C" fn count(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
    CANCEL.store(true, Ordering::SeqCst);
}

/// The flag an interrupt sets (for `Builder::with_cancel`).
pub fn cancel_flag() -> &'static AtomicBool {
    &CANCEL
}

/// SIGINT and SIGTERM end the process again (after [`install`] for work that must clean up).
pub fn restore_default() {
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: restores the default disposition.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// From now on SIGINT and SIGTERM only count.
pub fn install() {
    let action = SigAction::new(SigHandler::Handler(count), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

static WINCH: AtomicBool = AtomicBool::new(false);

extern "C" fn winch(_: libc::c_int) {
    WINCH.store(true, Ordering::SeqCst);
}

/// From now on SIGWINCH (the terminal's size changed) is noted, for [`window_changed`].
pub fn install_winch() {
    let action = SigAction::new(SigHandler::Handler(winch), SaFlags::SA_RESTART, SigSet::empty());
    // SAFETY: the handler only touches an atomic.
    let _ = unsafe { sigaction(Signal::SIGWINCH, &action) };
}

/// Whether the terminal's size changed since the last call.
pub fn window_changed() -> bool {
    WINCH.swap(false, Ordering::SeqCst)
}

/// How many interrupts arrived.
pub fn interrupts() -> usize {
    INTERRUPTS.load(Ordering::SeqCst)
}

/// Signals caught for `--sig-proxy` and not yet passed on: bit N-1 is signal N (1 to 64, the
/// realtime ones included). Coalesced, as Go's signal delivery (docker's) coalesces them.
static PROXIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Signals that mean a fault of the process itself when the kernel sends them.
const FAULTS: [libc::c_int; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGFPE, libc::SIGILL, libc::SIGTRAP];

extern "C" fn note(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let code = if info.is_null() { 0 } else { unsafe { (*info).si_code } };
    if FAULTS.contains(&sig) && code > 0 {
        // berth's own fault (si_code > 0: sent by the kernel, not by a process): the default
        // action when the instruction runs again, so that it dies as it would have.
        // SAFETY: signal() is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        return;
    }
    if (1..=64).contains(&sig) {
        PROXIED.fetch_or(1 << (sig - 1), Ordering::SeqCst);
    }
}

/// The signals `--sig-proxy` passes on to the container, as docker's `ForwardAllSignals`
/// does: every signal of docker's map that the process can catch, the realtime ones
/// (SIGRTMIN to SIGRTMAX) included, except SIGCHLD and SIGPIPE (its own children's and its
/// own pipes' business) and SIGURG (Go's runtime's; docker never forwards it). On a terminal
/// SIGWINCH is left out too (`with_winch` false): there a new size is passed on as a resize
/// of the container's terminal, whose kernel side signals the process itself.
pub fn proxied_signals(with_winch: bool) -> Vec<libc::c_int> {
    const NEVER: [libc::c_int; 5] =
        [libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD, libc::SIGPIPE, libc::SIGURG];
    (1..=SIGRTMAX)
        .filter(|s| crate::runtime::signal::is_valid(*s) && !NEVER.contains(s))
        .filter(|s| with_winch || *s != libc::SIGWINCH)
        .collect()
}

/// From now on the signals of [`proxied_signals`] are caught, to be passed on to a container
/// (`take_proxied`) instead of acting on berth: SIGINT and SIGTERM no longer end it, SIGTSTP
/// no longer stops it (as with docker, whose CLI catches them all for `--sig-proxy`).
pub fn install_proxy(with_winch: bool) {
    for sig in proxied_signals(with_winch) {
        catch(sig);
    }
}

/// Catches `sig` with [`note`] (by number: nix's `sigaction` takes no realtime signal).
fn catch(sig: libc::c_int) -> libc::sigaction {
    // SAFETY: a zeroed sigaction is a valid value to fill in; the handler only touches an
    // atomic (or restores the default on a fault).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = note as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, &action, &mut old);
        old
    }
}

/// The signals caught since the last call (their numbers), lowest first.
pub fn take_proxied() -> Vec<libc::c_int> {
    let bits = PROXIED.swap(0, Ordering::SeqCst);
    (1..=64).filter(|n| bits & (1u64 << (n - 1)) != 0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxied_signals_are_docker_s() {
        let all = proxied_signals(true);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2] {
            assert!(all.contains(&s), "{s}");
        }
        for s in [libc::SIGWINCH, libc::SIGTSTP, libc::SIGCONT, libc::SIGALRM, libc::SIGSEGV] {
            assert!(all.contains(&s), "{s}");
        }
        // The realtime signals, every one of them.
        for s in crate::runtime::signal::SIGRTMIN..=SIGRTMAX {
            assert!(all.contains(&s), "{s}");
        }
        for s in [libc::SIGCHLD, libc::SIGPIPE, libc::SIGURG, libc::SIGKILL, libc::SIGSTOP, 32, 33] {
            assert!(!all.contains(&s), "{s}");
        }
        let on_tty = proxied_signals(false);
        assert!(!on_tty.contains(&libc::SIGWINCH));
        assert_eq!(on_tty.len() + 1, all.len());
    }

    #[test]
    fn caught_signals_are_taken_once_in_order() {
        // Only SIGUSR2 and SIGRTMAX here: the other tests of this process keep their
        // dispositions.
        let old = [catch(libc::SIGUSR2), catch(SIGRTMAX)];
        // A signal sent by a process (si_code SI_USER/SI_TKILL) is noted, even a fault's
        // number would be; twice before a take counts once.
        for sig in [SIGRTMAX, libc::SIGUSR2, libc::SIGUSR2] {
            // SAFETY: raise takes a plain number; the handler above catches it.
            assert_eq!(unsafe { libc::raise(sig) }, 0);
        }
        let taken = take_proxied();
        assert_eq!(taken, [libc::SIGUSR2, SIGRTMAX]);
        assert!(take_proxied().is_empty());
        for (sig, old) in [libc::SIGUSR2, SIGRTMAX].into_iter().zip(old) {
            // SAFETY: puts the test process's dispositions back.
            unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
        }
    }
}
