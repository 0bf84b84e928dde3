//! `.dockerignore` as BuildKit reads and applies it (`moby/patternmatcher` and its
//! `ignorefile`, walked the way `tonistiigi/fsutil` walks a build context).
//!
//! The file: one pattern per line; a line *starting* with `#` is a comment; whitespace around a
//! pattern is trimmed; `!pattern` is an exception; patterns are cleaned like Go's
//! `filepath.Clean` and a leading `/` is dropped, so every pattern is anchored at the context
//! root.
//!
//! Matching, on slash-separated paths relative to the context: `*` is any run of characters but
//! `/`, `?` one character but `/`, `[...]` a character class (`[^...]` negated, ranges, `\`
//! escapes), `\x` the character `x`, `**` any number of directories (`**/x`, `a/**/b`, `a/**`).
//! The last pattern that matches decides; a pattern that matches a directory matches everything
//! under it, so `!dir/keep` after `dir` re-includes `dir/keep` (so the context's walker
//! descends into every directory and asks about each file).
//!
//! Where berth differs from moby's patternmatcher, which turns patterns into Go regular
//! expressions: `\x` is always the literal `x` (Go would read `\d` as a digit class), and `*` or
//! `?` inside `[...]` are literal characters of the class.
//!
//! The Dockerfile and the `.dockerignore` file themselves are always sent to the builder even
//! when a pattern matches them (BuildKit reads them separately); the builder is the one to
//! apply that rule, not this module.

use std::path::{Path, PathBuf};

/// A `.dockerignore` that could not be read or has a bad pattern.
#[derive(Debug, thiserror::Error)]
pub enum IgnoreError {
    /// The file exists but could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A pattern that does not parse (an unclosed `[`, a lone `!`...).
    #[error("{}invalid pattern {pattern:?}: {reason}", file.as_ref().map(|(f, l)| format!("{}:{l}: ", f.display())).unwrap_or_default())]
    Pattern {
        /// File and 1-based line, when the pattern came from a file.
        file: Option<(PathBuf, usize)>,
        /// The pattern as written.
        pattern: String,
        /// What is wrong.
        reason: String,
    },
}

/// A set of ignore patterns, in order.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

/// What [`Ignore::matches_with_parent`] learnt about a directory, handed to its children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchInfo {
    parent_matched: Vec<bool>,
}

#[derive(Debug, Clone)]
struct Pattern {
    /// Cleaned, without `!` (the tests read the patterns back).
    #[cfg(test)]
    cleaned: String,
    exclusion: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    /// A leading `**` with only literal text after it: the path ends with the text.
    Suffix(String),
    /// Anything else, matched against the whole path.
    Tokens(Vec<Tok>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`
    Any,
    /// `*`
    Star,
    /// `**` before more pattern: `(.*/)?`
    DirStar,
    /// `**` at the end: `.*`
    TailStar,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Ignore {
    /// Reads `.dockerignore` text (patterns as BuildKit's `ignorefile.ReadAll` cleans them);
    /// berth reads the file with [`load_for`].
    #[cfg(test)]
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        Self::parse_file(text, None)
    }

    fn parse_file(text: &str, file: Option<&Path>) -> Result<Ignore, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (i, line) in text.lines().enumerate() {
            // Only a `#` in the first column makes a comment.
            if line.starts_with('#') {
                continue;
            }
            let mut p = line.trim();
            if p.is_empty() {
                continue;
            }
            let invert = p.starts_with('!');
            if invert {
                p = p[1..].trim();
            }
            let mut cleaned = if p.is_empty() { String::new() } else { clean(p) };
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let full = if invert { format!("!{cleaned}") } else { cleaned };
            patterns.push((full, file.map(|f| (f.to_path_buf(), i + 1))));
        }
        Self::build(patterns)
    }

    /// Builds a matcher from patterns as written (`COPY --exclude=` uses the same rules).
    pub fn from_patterns<I, S>(patterns: I) -> Result<Ignore, IgnoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(patterns.into_iter().map(|p| (p.as_ref().to_string(), None)).collect())
    }

    fn build(raw: Vec<(String, Option<(PathBuf, usize)>)>) -> Result<Ignore, IgnoreError> {
        let mut out = Ignore::default();
        for (p, file) in raw {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let mut p = clean(p);
            let mut exclusion = false;
            if let Some(rest) = p.strip_prefix('!') {
                if rest.is_empty() {
                    return Err(IgnoreError::Pattern {
                        file,
                        pattern: p.clone(),
                        reason: "illegal exclusion pattern: \"!\"".to_string(),
                    });
                }
                exclusion = true;
                p = rest.to_string();
            }
            let kind = compile(&p).map_err(|e| IgnoreError::Pattern {
                file: file.clone(),
                pattern: p.clone(),
                reason: e.to_string(),
            })?;
            out.patterns.push(Pattern {
                #[cfg(test)]
                cleaned: p,
                exclusion,
                kind,
            });
        }
        Ok(out)
    }

    /// The cleaned patterns, exceptions with their `!` (the tests).
    #[cfg(test)]
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| if p.exclusion { format!("!{}", p.cleaned) } else { p.cleaned.clone() })
            .collect()
    }

    /// Whether there are no patterns at all (the tests).
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `rel_path` (relative to the context, `/`-separated) is ignored. Its parent
    /// directories are evaluated first, as a walk of the context does; the context root itself
    /// is never ignored.
    pub fn matches(&self, rel_path: &str) -> bool {
        let path = normalize(rel_path);
        if path.is_empty() || self.patterns.is_empty() {
            return false;
        }
        let mut info = MatchInfo::default();
        let mut end = 0;
        loop {
            let next = path[end..].find('/').map(|i| end + i);
            let prefix = match next {
                Some(i) => &path[..i],
                None => path.as_str(),
            };
            let (m, i) = self.matches_with_parent(prefix, &info);
            match next {
                Some(n) => end = n + 1,
                None => return m,
            }
            info = i;
        }
    }

    /// One step of a walk (BuildKit's `MatchesUsingParentResults`): whether `rel_path` is
    /// ignored, given what its parent directory's step returned (`MatchInfo::default()` for
    /// entries of the context root). Keep the returned [`MatchInfo`] for a directory's children.
    pub fn matches_with_parent(&self, rel_path: &str, parent: &MatchInfo) -> (bool, MatchInfo) {
        let path = normalize(rel_path);
        let parent = &parent.parent_matched;
        let has_parent = parent.len() == self.patterns.len() && !parent.is_empty();
        let mut matched = false;
        let mut info = MatchInfo { parent_matched: vec![false; self.patterns.len()] };
        for (i, p) in self.patterns.iter().enumerate() {
            let mut m = has_parent && parent[i];
            if !m {
                if p.exclusion != matched {
                    continue;
                }
                m = p.matches(&path);
                if !m && !has_parent {
                    // No information about the parents: check them (`a/b` against `a`).
                    let mut idx = 0;
                    while let Some(j) = path[idx..].find('/') {
                        if p.matches(&path[..idx + j]) {
                            m = true;
                            break;
                        }
                        idx += j + 1;
                    }
                }
            }
            info.parent_matched[i] = m;
            if m {
                matched = !p.exclusion;
            }
        }
        (matched, info)
    }
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str()) || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Tokens(toks) => match_tokens(toks, path),
        }
    }
}

/// Relative, cleaned, `/`-separated; `""` for the root.
fn normalize(p: &str) -> String {
    let c = clean(p.trim_start_matches('/'));
    if c == "." { String::new() } else { c }
}

/// Go's `filepath.Clean` on `/`-separated paths.
fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_string();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// A pattern Go's `filepath.Match` refuses (an unclosed `[`, a trailing `\\`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("syntax error in pattern")]
struct PatternSyntax;

/// Compiles a cleaned pattern (without `!`) the way patternmatcher does, checking the syntax
/// as Go's `filepath.Match` would.
fn compile(p: &str) -> Result<Kind, PatternSyntax> {
    let bad = || PatternSyntax;
    let chars: Vec<char> = p.chars().collect();
    let mut toks = Vec::new();
    let mut only_literal_after_leading = true;
    let mut leading_double = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if toks.is_empty() && i <= 3 && !leading_double {
                        leading_double = true;
                    } else {
                        only_literal_after_leading = false;
                    }
                    if i >= chars.len() {
                        toks.push(Tok::TailStar);
                    } else {
                        toks.push(Tok::DirStar);
                    }
                } else {
                    only_literal_after_leading = false;
                    toks.push(Tok::Star);
                }
            }
            '?' => {
                only_literal_after_leading = false;
                toks.push(Tok::Any);
            }
            '\\' => match chars.get(i) {
                Some(&e) => {
                    i += 1;
                    only_literal_after_leading = false;
                    toks.push(Tok::Lit(e));
                }
                // filepath.Match refuses a trailing backslash.
                None => return Err(bad()),
            },
            '[' => {
                only_literal_after_leading = false;
                let mut negated = false;
                if chars.get(i) == Some(&'^') {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    match chars.get(i) {
                        None => return Err(bad()),
                        Some(']') if !ranges.is_empty() => {
                            i += 1;
                            break;
                        }
                        _ => {}
                    }
                    let lo = class_char(&chars, &mut i).ok_or_else(bad)?;
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') {
                        i += 1;
                        hi = class_char(&chars, &mut i).ok_or_else(bad)?;
                    }
                    ranges.push((lo, hi));
                }
                toks.push(Tok::Class { negated, ranges });
            }
            ']' => {
                only_literal_after_leading = false;
                toks.push(Tok::Lit(']'));
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    if leading_double && only_literal_after_leading {
        // patternmatcher's suffix match: the text after the leading `**`.
        return Ok(Kind::Suffix(p.get(2..).unwrap_or_default().to_string()));
    }
    Ok(Kind::Tokens(toks))
}

/// One character of a class (`\x` or a plain character other than `-` and `]`).
fn class_char(chars: &[char], i: &mut usize) -> Option<char> {
    let c = *chars.get(*i)?;
    match c {
        '-' | ']' => None,
        '\\' => {
            let e = *chars.get(*i + 1)?;
            *i += 2;
            Some(e)
        }
        c => {
            *i += 1;
            Some(c)
        }
    }
}

/// Whole-path match of the tokens, as the regular expression patternmatcher builds would match
/// (`.` in `**` does not match `\n`). A Thompson simulation: linear in the path times the
/// pattern.
fn match_tokens(toks: &[Tok], path: &str) -> bool {
    let n = toks.len();
    // at[pc]: ready to match token pc; inside[pc]: inside the `.*` of a DirStar at pc.
    let mut at = vec![false; n + 1];
    let mut inside = vec![false; n + 1];
    let mut next_at = vec![false; n + 1];
    let mut next_inside = vec![false; n + 1];
    at[0] = true;
    close(toks, &mut at, &mut inside);
    for c in path.chars() {
        next_at.iter_mut().for_each(|b| *b = false);
        next_inside.iter_mut().for_each(|b| *b = false);
        let mut any = false;
        for pc in 0..n {
            if inside[pc] && c != '\n' {
                next_inside[pc] = true;
                any = true;
                if c == '/' {
                    next_at[pc + 1] = true;
                }
            }
            if !at[pc] {
                continue;
            }
            let ok_next = match &toks[pc] {
                Tok::Lit(l) => *l == c,
                Tok::Any => c != '/',
                Tok::Class { negated, ranges } => {
                    ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                }
                Tok::Star => {
                    if c != '/' {
                        next_at[pc] = true;
                        any = true;
                    }
                    false
                }
                Tok::TailStar => {
                    if c != '\n' {
                        next_at[pc] = true;
                        any = true;
                    }
                    false
                }
                Tok::DirStar => false,
            };
            if ok_next {
                next_at[pc + 1] = true;
                any = true;
            }
        }
        std::mem::swap(&mut at, &mut next_at);
        std::mem::swap(&mut inside, &mut next_inside);
        if !any && !at[n] {
            return false;
        }
        close(toks, &mut at, &mut inside);
    }
    at[n]
}

/// Follows the moves that consume nothing (they only go forward).
fn close(toks: &[Tok], at: &mut [bool], inside: &mut [bool]) {
    for pc in 0..toks.len() {
        if !at[pc] {
            continue;
        }
        match toks[pc] {
            Tok::Star | Tok::TailStar => at[pc + 1] = true,
            Tok::DirStar => {
                at[pc + 1] = true;
                inside[pc] = true;
            }
            _ => {}
        }
    }
}

/// The ignore file for a build: `<Dockerfile name>.dockerignore` next to the Dockerfile if it
/// exists (as BuildKit prefers it), else `<context>/.dockerignore`, else no patterns.
pub fn load_for(context: &Path, dockerfile: &Path) -> Result<Ignore, IgnoreError> {
    let mut candidates = Vec::new();
    if let Some(name) = dockerfile.file_name() {
        let mut n = name.to_os_string();
        n.push(".dockerignore");
        let specific = match dockerfile.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(&n),
            _ => context.join(&n),
        };
        candidates.push(specific);
    }
    candidates.push(context.join(".dockerignore"));
    for path in candidates {
        // A FIFO or device would block the read forever (or never end).
        if std::fs::metadata(&path).is_ok_and(|m| !m.is_file()) {
            return Err(IgnoreError::Io {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
            });
        }
        match std::fs::read(&path) {
            Ok(bytes) => return Ignore::parse_file(&String::from_utf8_lossy(&bytes), Some(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
            Err(source) => return Err(IgnoreError::Io { path, source }),
        }
    }
    Ok(Ignore::default())
}

#[cfg(test)]
#[path = "dockerignore_tests.rs"]
mod tests;
