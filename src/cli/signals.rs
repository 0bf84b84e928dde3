//! Ctrl-C and SIGTERM for attached commands: counted, not fatal, so that the first one stops
//! the project gracefully and the second one kills it, as docker compose does.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

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

/// Signals caught for `--sig-proxy` and not yet passed on: bit N is signal N. Coalesced, as
/// Go's signal delivery (docker's) coalesces them.
static PROXIED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Signals that mean a fault of the process itself when the kernel sends them.
const FAULTS: [Signal; 5] =
    [Signal::SIGSEGV, Signal::SIGBUS, Signal::SIGFPE, Signal::SIGILL, Signal::SIGTRAP];

extern "C" fn note(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo with SA_SIGINFO.
    let code = if info.is_null() { 0 } else { unsafe { (*info).si_code } };
    let fault = FAULTS.iter().any(|f| *f as libc::c_int == sig);
    if fault && code > 0 {
        // berth's own fault (si_code > 0: sent by the kernel, not by a process): the default
        // action when the instruction runs again, so that it dies as it would have.
        // SAFETY: signal() is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        return;
    }
    if (1..64).contains(&sig) {
        PROXIED.fetch_or(1 << sig, Ordering::SeqCst);
    }
}

/// The signals `--sig-proxy` passes on to the container, as docker's `ForwardAllSignals`
/// does: every signal the process can catch except SIGCHLD and SIGPIPE (its own children's
/// and its own pipes' business) and SIGURG (Go's runtime's; docker never forwards it). On a
/// terminal SIGWINCH is left out too (`with_winch` false): there a new size is passed on as a
/// resize of the container's terminal, whose kernel side signals the process itself.
/// Realtime signals are not passed on (the shim delivers named signals only).
pub fn proxied_signals(with_winch: bool) -> Vec<Signal> {
    Signal::iterator()
        .filter(|s| {
            !matches!(
                s,
                Signal::SIGKILL | Signal::SIGSTOP | Signal::SIGCHLD | Signal::SIGPIPE | Signal::SIGURG
            )
        })
        .filter(|s| with_winch || *s != Signal::SIGWINCH)
        .collect()
}

/// From now on the signals of [`proxied_signals`] are caught, to be passed on to a container
/// (`take_proxied`) instead of acting on berth: SIGINT and SIGTERM no longer end it, SIGTSTP
/// no longer stops it (as with docker, whose CLI catches them all for `--sig-proxy`).
pub fn install_proxy(with_winch: bool) {
    let action = SigAction::new(
        SigHandler::SigAction(note),
        SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    for sig in proxied_signals(with_winch) {
        // SAFETY: the handler only touches an atomic (or restores the default on a fault).
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// The signals caught since the last call, lowest number first.
pub fn take_proxied() -> Vec<Signal> {
    let bits = PROXIED.swap(0, Ordering::SeqCst);
    (1..64).filter(|n| bits & (1u64 << n) != 0).filter_map(|n| Signal::try_from(n).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxied_signals_are_docker_s() {
        let all = proxied_signals(true);
        for s in [
            Signal::SIGINT,
            Signal::SIGTERM,
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGUSR1,
            Signal::SIGUSR2,
        ] {
            assert!(all.contains(&s), "{s}");
        }
        for s in [Signal::SIGWINCH, Signal::SIGTSTP, Signal::SIGCONT, Signal::SIGALRM, Signal::SIGSEGV] {
            assert!(all.contains(&s), "{s}");
        }
        for s in [Signal::SIGCHLD, Signal::SIGPIPE, Signal::SIGURG, Signal::SIGKILL, Signal::SIGSTOP] {
            assert!(!all.contains(&s), "{s}");
        }
        let on_tty = proxied_signals(false);
        assert!(!on_tty.contains(&Signal::SIGWINCH));
        assert_eq!(on_tty.len() + 1, all.len());
    }

    #[test]
    fn caught_signals_are_taken_once_in_order() {
        // Only SIGUSR2 here: the other tests of this process keep their dispositions.
        let action = SigAction::new(
            SigHandler::SigAction(note),
            SaFlags::SA_RESTART | SaFlags::SA_SIGINFO,
            SigSet::empty(),
        );
        // SAFETY: as in install_proxy.
        let old = unsafe { sigaction(Signal::SIGUSR2, &action) }.unwrap();
        // A signal sent by a process (si_code SI_USER/SI_TKILL) is noted, even a fault's
        // number would be; twice before a take counts once.
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        assert_eq!(take_proxied(), [Signal::SIGUSR2]);
        assert!(take_proxied().is_empty());
        // SAFETY: puts the test process's disposition back.
        unsafe { sigaction(Signal::SIGUSR2, &old) }.unwrap();
    }
}
