//! The builder's adapter to the Dockerfile frontend (parser, `.dockerignore`), so that the rest
//! of the builder does not depend on their exact signatures.

use std::path::Path;

use super::builder::BuildError;
use super::context::{Filter, path_match};
use super::dockerfile::{Dockerfile, Instruction};

/// Parses a Dockerfile.
pub fn parse(text: &str, file: &str) -> Result<Dockerfile, BuildError> {
    super::parse::parse(text, file).map_err(|e| BuildError::Dockerfile(e.to_string()))
}

/// Parses an ONBUILD trigger of a base image (run at line `line` of `file`).
pub fn parse_trigger(trigger: &str, line: usize, file: &str) -> Result<Instruction, BuildError> {
    let text = format!("FROM scratch\n{trigger}\n");
    let df = parse(&text, file)?;
    let mut ins =
        df.stages.into_iter().next().and_then(|s| s.instructions.into_iter().next()).ok_or_else(|| {
            BuildError::Step { file: file.into(), line, message: format!("ONBUILD {trigger}: empty trigger") }
        })?;
    ins.line = line;
    Ok(ins)
}

/// `.dockerignore` rules: patterns in order, the last match deciding, `!` re-including.
struct IgnoreRules(Vec<(bool, String)>);

impl Filter for IgnoreRules {
    fn excluded(&self, rel: &str, _is_dir: bool) -> bool {
        let mut out = false;
        let parts: Vec<&str> = rel.split('/').collect();
        for (negate, p) in &self.0 {
            // A pattern matches a path or any of its parents.
            let hit = (1..=parts.len()).any(|n| path_match(p, &parts[..n].join("/")));
            if hit {
                out = !negate;
            }
        }
        out
    }
}

/// The context's filter: `<Dockerfile>.dockerignore` beside the Dockerfile, else
/// `.dockerignore` at the context's root.
pub fn context_filter(
    context: &Path,
    dockerfile: Option<&Path>,
) -> Result<Box<dyn Filter + Send + Sync>, BuildError> {
    let df = dockerfile.map(|d| if d.is_absolute() { d.to_path_buf() } else { context.join(d) });
    let specific = df.map(|d| {
        let mut s = d.into_os_string();
        s.push(".dockerignore");
        std::path::PathBuf::from(s)
    });
    let path = specific.filter(|p| p.is_file()).unwrap_or_else(|| context.join(".dockerignore"));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(BuildError::Io { path: path.display().to_string(), source: e }),
    };
    let rules = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.strip_prefix('!') {
            Some(p) => (true, p.trim().trim_start_matches('/').to_string()),
            None => (false, l.trim_start_matches('/').to_string()),
        })
        .collect();
    Ok(Box::new(IgnoreRules(rules)))
}
