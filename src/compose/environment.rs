//! The variables that interpolation sees: the process environment over `--env-file`s or the
//! project's `.env` (compose-go `WithOsEnv` + `WithDotEnv`: the process environment wins).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::dotenv;
use super::error::LoadError;
use super::node::Mark;

/// Interpolation variables, by name.
pub type Environment = HashMap<String, String>;

/// Reads dotenv `files` in order (later files win over earlier ones) and puts `process` on top.
/// A bare `KEY` line takes its value from the process environment, or is skipped.
pub fn with_env_files(process: &Environment, files: &[PathBuf]) -> Result<Environment, LoadError> {
    let mut from_files: Environment = HashMap::new();
    for file in files {
        for (key, value) in read_env_file(file, process, &from_files, false)? {
            if let Some(value) = value.or_else(|| process.get(&key).cloned()) {
                from_files.insert(key, value);
            }
        }
    }
    from_files.extend(process.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(from_files)
}

/// Parses one dotenv file; values may refer to `process` and to variables set before.
/// `raw` selects env_file's `format: raw` (values taken literally).
pub fn read_env_file(
    file: &Path,
    process: &Environment,
    earlier: &Environment,
    raw: bool,
) -> Result<Vec<(String, Option<String>)>, LoadError> {
    let text = super::input::read_text(file)?;
    let lookup = |name: &str| process.get(name).or_else(|| earlier.get(name)).cloned();
    let parsed = if raw { dotenv::parse_raw(&text) } else { dotenv::parse(&text, &lookup) };
    parsed.map_err(|e| LoadError::Invalid {
        mark: Mark { file: file.to_string_lossy().into(), line: e.line as u32, col: 0 },
        path: String::new(),
        message: e.message,
    })
}
