//! berth: a daemonless compose orchestrator for Linux.
//!
//! Everything the `berth` command does is available here: load a compose project
//! ([`compose`]), build its dependency graph ([`graph`]).

pub mod cli;
pub mod compose;
pub mod engine;
pub mod graph;
pub mod image;
pub mod netns;
pub mod runtime;
pub mod state;
pub mod volume;
