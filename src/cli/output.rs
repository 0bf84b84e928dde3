//! Every byte the CLI writes to standard output goes through here, and no write panics.
//!
//! `println!` panics when the write fails, so the CLI never uses it (nor `print!`,
//! `eprintln!`). Standard output is written with [`outln!`] / [`out!`] (they return the failure,
//! so that a listing stops at once), [`statusln!`] (for lines printed while a command changes
//! things: the change goes on, the failure is reported when the command ends) or [`Stdout`]
//! (an `io::Write` for streams: logs, archives). The first failure is remembered; later writes
//! are skipped; [`finish`] flushes and turns the failure into the command's result.
//!
//! Failures end the command like this:
//! - A closed pipe (`berth ps | head -1`, EPIPE): the reader had what it wanted, so berth ends
//!   quietly with exit status 0, as ripgrep and cargo do. (docker compose, a Go program, is
//!   killed by SIGPIPE instead: status 141 in the shell.) berth keeps the Rust runtime's
//!   SIGPIPE disposition, ignored, in all its processes (CLI, shim, DNS): a dead reader must
//!   give a write error to handle, not kill a process that is halfway through changing the
//!   host. The processes berth starts (containers, `exec`, helpers) get SIGPIPE back at its
//!   default. A command that fails for its own reason keeps its own error and exit status.
//! - Any other failure (ENOSPC from `/dev/full`, EIO): `berth: cannot write to standard
//!   output: ...` on standard error and exit status 1.
//! - Standard error: its failures are ignored, as there is nowhere left to report them.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use super::{CliError, CliResult};

/// The first failure to write standard output, if any.
static FAILURE: Mutex<Option<io::Error>> = Mutex::new(None);

/// Writes a formatted line to standard output; a failure is returned (see the module doc).
macro_rules! outln {
    () => {
        $crate::cli::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes formatted text (no newline added) to standard output; a failure is returned.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::write(format_args!($($arg)*))
    };
}

/// Writes a formatted line to standard output while a command changes things: a failure does
/// not stop the change; it is kept, and [`finish`] reports it when the command ends.
macro_rules! statusln {
    ($($arg:tt)*) => {
        $crate::cli::output::status(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln, statusln};

fn failure() -> std::sync::MutexGuard<'static, Option<io::Error>> {
    FAILURE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps `e` as the failure (unless there is one already) and returns what it means for the
/// command.
fn fail(e: io::Error) -> CliError {
    let err = stdout_error(&e);
    failure().get_or_insert(e);
    err
}

/// The command's error for a failed write to standard output: silent with status 0 for a
/// closed pipe, a message otherwise.
pub(crate) fn stdout_error(e: &io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::exit(0)
    } else {
        CliError::context("cannot write to standard output", e)
    }
}

/// The error that ended a command after a write to standard output failed (the remembered
/// failure), if one did.
fn recorded() -> Option<CliError> {
    failure().as_ref().map(stdout_error)
}

/// Writes `args` to standard output, or returns the (remembered) failure.
pub(crate) fn write(args: fmt::Arguments<'_>) -> CliResult<()> {
    if let Some(e) = recorded() {
        return Err(e);
    }
    io::stdout().lock().write_fmt(args).map_err(fail)
}

/// Writes `args` to standard output; a failure is only remembered.
pub(crate) fn status(args: fmt::Arguments<'_>) {
    let _ = write(args);
}

/// Turns an error met while streaming to [`Stdout`] into the command's error: the standard
/// output's failure if that is what happened, the error itself otherwise (a log file that
/// could not be read).
pub(crate) fn stream_error(e: impl Into<CliError>) -> CliError {
    recorded().unwrap_or_else(|| e.into())
}

/// Flushes standard output and gives the command's final result: its own error if it failed,
/// else the remembered output failure, if any.
pub(crate) fn finish(result: CliResult<()>) -> CliResult<()> {
    let flushed = io::stdout().lock().flush();
    result?;
    if let Err(e) = flushed {
        remember(&e);
    }
    recorded().map_or(Ok(()), Err)
}

/// Writes a line to standard error; a failure is ignored, as there is nowhere to report it.
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr().lock(), "{args}");
}

/// Standard output as an `io::Write` for streams (logs, archives): failures are remembered
/// like those of [`outln!`] and returned; map them with [`stream_error`].
#[derive(Debug, Default)]
pub(crate) struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if recorded().is_some() {
            return Err(io::Error::other("standard output failed before"));
        }
        io::stdout().lock().write(buf).inspect_err(remember)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush().inspect_err(remember)
    }
}

/// Keeps a copy of `e` as the failure (the original goes back to the writer's caller).
fn remember(e: &io::Error) {
    let copy = e
        .raw_os_error()
        .map_or_else(|| io::Error::new(e.kind(), e.to_string()), io::Error::from_raw_os_error);
    failure().get_or_insert(copy);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_pipe_is_a_quiet_success_and_other_failures_are_messages() {
        let pipe = stdout_error(&io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(pipe.is_silent());
        assert_eq!(pipe.code, 0);
        let full = stdout_error(&io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(full.code, 1);
        assert!(full.to_string().starts_with("cannot write to standard output: No space left"), "{full}");
    }
}
