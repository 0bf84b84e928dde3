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
