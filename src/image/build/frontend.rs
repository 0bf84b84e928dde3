//! The builder's adapter to the Dockerfile frontend (parser, `.dockerignore`), so that the rest
//! of the builder does not depend on their exact signatures.

use std::path::Path;

use super::builder::BuildError;
use super::context::Filter;
use super::dockerfile::{Dockerfile, Instruction};

/// Parses a Dockerfile.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile, BuildError> {
    Ok(super::parse::parse(text, file)?)
}

/// Parses an ONBUILD trigger of a base image (run at line `line` of `file`).
pub fn parse_trigger(trigger: &str, line: usize, file: &str) -> Result<Instruction, BuildError> {
    let text = format!("FROM scratch\n{trigger}\n");
    let df = parse(&text, file)?;
    let mut ins =
        df.stages.into_iter().next().and_then(|s| s.instructions.into_iter().next()).ok_or_else(|| {
            BuildError::Step { file: file.into(), line, message: format!("ONBUILD {trigger}: empty trigger"),
                source: None,
            }
        })?;
    ins.line = line;
    Ok(ins)
}

/// The `.dockerignore` rules of the frontend as the builder's filter.
struct IgnoreFilter(super::dockerignore::Ignore);

impl Filter for IgnoreFilter {
    fn excluded(&self, rel: &str, _is_dir: bool) -> bool {
        self.0.matches(rel)
    }
}

/// The context's filter: `<Dockerfile>.dockerignore` beside the Dockerfile, else
/// `.dockerignore` at the context's root (the frontend's [`super::dockerignore::load_for`]).
pub fn context_filter(
    context: &Path,
    dockerfile: Option<&Path>,
) -> Result<Box<dyn Filter + Send + Sync>, BuildError> {
    let df = dockerfile.unwrap_or(Path::new("Dockerfile"));
    let df = if df.is_absolute() { df.to_path_buf() } else { context.join(df) };
    let ignore = super::dockerignore::load_for(context, &df)?;
    Ok(Box::new(IgnoreFilter(ignore)))
}
