//! The CLI's error: one readable message (a library error with its cause chain) and an exit
//! code.

use std::fmt;

/// What a failed command prints, and the exit code it returns.
#[derive(Debug)]
pub struct CliError {
    message: String,
    /// Exit code (1 unless a command says otherwise).
    pub code: u8,
}

impl CliError {
    /// An error with a message and exit code 1.
    pub fn msg(message: impl Into<String>) -> CliError {
        CliError { message: message.into(), code: 1 }
    }

    /// `error` with its cause chain, after `what` (`service web: push web:1: ...`).
    pub fn context(what: impl fmt::Display, error: impl std::error::Error) -> CliError {
        let inner = CliError::from(error);
        CliError { message: format!("{what}: {}", inner.message), code: inner.code }
    }

    /// Ends the command with `code` and prints nothing (the command said all there was).
    pub fn exit(code: u8) -> CliError {
        CliError { message: String::new(), code }
    }

    /// Ends the command as a container's process ended: `Ok` for 0, else its exit code
    /// (kept within 1..=255, as a shell sees it).
    pub fn exit_status(code: i32) -> Result<(), CliError> {
        if code == 0 { Ok(()) } else { Err(CliError::exit(u8::try_from(code.clamp(1, 255)).unwrap_or(1))) }
    }

    /// Whether there is a message to print.
    pub fn is_silent(&self) -> bool {
        self.message.is_empty()
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> CliError {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = s.source();
        }
        CliError { message, code: 1 }
    }
}

/// Result of a CLI command.
pub type CliResult<T> = std::result::Result<T, CliError>;
