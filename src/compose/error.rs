//! Errors of the compose loader: each names where (file:line:col) and what (attribute path).

use std::path::PathBuf;

use super::node::Mark;

/// Anything that stops a compose project from loading.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A value in a file is wrong; `path` is the attribute path (`services.web.ports[0]`).
    #[error("{mark}: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Invalid {
        /// Where the value is.
        mark: Mark,
        /// The attribute path, may be empty for file-level problems.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// YAML syntax.
    #[error(transparent)]
    Yaml(#[from] super::yaml::YamlError),
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No compose file was found.
    #[error("no configuration file provided: not found (looked for compose.yaml, compose.yml, docker-compose.yaml, docker-compose.yml in {} and its parents)", .0.display())]
    NoComposeFile(PathBuf),
    /// A problem with the whole project rather than one value (bad project name, bad option).
    #[error("{0}")]
    Project(String),
}

impl LoadError {
    /// An error about the value at `mark`, attribute `path`.
    pub fn invalid(mark: &Mark, path: impl Into<String>, message: impl Into<String>) -> LoadError {
        LoadError::Invalid { mark: mark.clone(), path: path.into(), message: message.into() }
    }
}
