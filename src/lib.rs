//! berth: a daemonless compose orchestrator for Linux, as a library for integration tests.
//!
//! The public API is [`stack`]: a [`Stack`](stack::Stack) per test, brought up from a compose
//! file with no daemon and taken away with everything it made when it is dropped. The `berth`
//! command is built from the same crate; its engine, runtime, networking and image store are
//! internal, so they can change without breaking a test that uses berth.
//!
//! The cargo feature `internals` (off by default, for berth's own integration tests, benches
//! and fuzz targets) makes the internal modules public; nothing about them is stable.

// `println!` and friends panic when the write fails (a closed pipe, a full disk): output goes
// through `cli::output`, diagnostics through writes whose failure is handled.
#![deny(clippy::print_stdout, clippy::print_stderr)]
// Only the public API has to be documented in full: with `internals` the internal modules
// are public too, and their docs are for berth's developers.
#![cfg_attr(not(feature = "internals"), deny(missing_docs))]

pub mod stack;

/// Declares the internal modules: `pub(crate)` by default, so that the compiler reports what
/// nothing in berth uses (dead code) and rustdoc shows only the public API; `pub` (and
/// hidden from the docs) with the `internals` feature, for berth's own tests.
macro_rules! internal {
    ($($module:ident),* $(,)?) => {
        $(
            #[cfg(feature = "internals")]
            #[doc(hidden)]
            pub mod $module;
            #[cfg(not(feature = "internals"))]
            pub(crate) mod $module;
        )*
    };
}

internal!(compose, engine, events, graph, image, labels, netns, runtime, state, volume, watch);
// Kubernetes manifests (`berth convert`): the `kubernetes` feature, on by default. The fuzz
// targets build without it, which spares them compiling k8s-openapi's generated API types.
#[cfg(feature = "kubernetes")]
internal!(convert);

// The command line is a user of the library, not part of its API: the binary's only way in
// is `run_cli`. It stays in this crate (not the binary's) because it needs the internals, and
// a second crate would have to make them public to reach them.
mod cli;

/// The `berth` command: parses the process's arguments and runs the command (the binary's
/// `main`). Not part of the library's API.
#[doc(hidden)]
pub fn run_cli() -> std::process::ExitCode {
    cli::run()
}
