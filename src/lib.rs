//! berth: a daemonless compose orchestrator for Linux.
//!
//! Everything the `berth` command does is available here: load a compose project
//! ([`compose`]), build its dependency graph ([`graph`]).

// `println!` and friends panic when the write fails (a closed pipe, a full disk): output goes
// through `cli::output`, diagnostics through writes whose failure is handled.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod cli;
pub mod compose;
pub mod convert;
pub mod engine;
pub mod events;
pub mod graph;
pub mod image;
pub mod labels;
pub mod netns;
pub mod runtime;
pub mod stack;
pub mod state;
pub mod volume;
pub mod watch;
