//! Ctrl-C and SIGTERM for attached commands: counted, not fatal, so that the first one stops
//! the project gracefully and the second one kills it, as docker compose does.

use std::sync::atomic::{AtomicUsize, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::SeqCst);
}

/// From now on SIGINT and SIGTERM only count.
pub fn install() {
    let action = SigAction::new(SigHandler::Handler(count), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// How many interrupts arrived.
pub fn interrupts() -> usize {
    INTERRUPTS.load(Ordering::SeqCst)
}
