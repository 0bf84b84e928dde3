//! The Dockerfile parser: text to [`Dockerfile`], as BuildKit's frontend
//! (`frontend/dockerfile/parser` and `instructions`) reads it.
//!
//! In order, as BuildKit does:
//! - a UTF-8 BOM is dropped; lines end with `\n` or `\r\n`;
//! - parser directives (`# escape=`, `# syntax=`, `# check=`, case-insensitive keys) are only
//!   recognised in the comment lines at the very top; the first line that is not a directive
//!   (an instruction, an empty line, any other comment) ends them; a repeated directive is an
//!   error;
//! - full-line comments (`#` after optional whitespace) are dropped, also in the middle of a
//!   continuation run; a line ending with the escape character (then optional spaces or tabs)
//!   continues on the next line, and empty lines inside a continuation run are skipped;
//! - the first word is the instruction (case-insensitive); `--name[=value]` words after it are
//!   flags, up to the first word that does not start with `--` (or a bare `--`);
//! - `RUN`, `COPY` and `ADD` in shell form (also as `ONBUILD` triggers) may use heredocs: every
//!   `<<WORD`, `<<-WORD`, `<<"WORD"`, `<<'WORD'` word of the line takes the following lines up
//!   to a line that is exactly `WORD` (after removing leading tabs for `<<-`);
//! - the rest is read per instruction: exec form is a JSON array of strings (any other JSON
//!   value, or invalid JSON, is shell form; a JSON array with a non-string is an error).
//!
//! Words are kept as written; the builder expands them with [`super::expand`] when it knows the
//! stage's variables. An `ONBUILD` trigger is kept as text and only checked for `ONBUILD`,
//! `FROM` and `MAINTAINER`, as BuildKit does; it is parsed when a build `FROM` the image runs it.
//!
//! The parser is a loop over lines with no recursion, linear in the input.
//!
//! Where berth differs from BuildKit, on purpose:
//! - checks BuildKit makes when it builds rather than when it parses are made here: duplicate
//!   stage names (a warning in BuildKit), no stage at all, `RUN --mount` keys and values (values
//!   with a `$` are left to the builder);
//! - `RUN`, `CMD` and `ENTRYPOINT` without arguments are errors (`ENTRYPOINT []` and `CMD []`
//!   are fine); `RUN --device` is refused as unsupported;
//! - lines longer than 64 KiB are accepted (BuildKit's scanner refuses them);
//! - heredoc bodies have their line endings normalised to `\n`;
//! - error messages quote at most 300 characters of the input.

use std::collections::{BTreeMap, HashSet};

use super::dockerfile::{
    ArgDecl, CommandForm, CopyInstruction, Dockerfile, HealthcheckInstruction, Heredoc, Instruction,
    InstructionKind, RunInstruction, RunMount, Stage,
};
use super::expand::Expander;

/// A Dockerfile that could not be parsed: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct DockerfileError {
    /// The file name given to [`parse`].
    pub file: String,
    /// 1-based line of the instruction (or directive) at fault.
    pub line: usize,
    /// What is wrong, in BuildKit's words where it has them.
    pub message: String,
}

/// Why a directive or an instruction is refused, before [`parse`] names the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Problem {
    /// A rule of the Dockerfile syntax, in BuildKit's words where it has them.
    #[error("{0}")]
    Invalid(String),
    /// A heredoc word BuildKit's lexer refuses.
    #[error(transparent)]
    Word(#[from] super::expand::ExpandError),
    /// A `HEALTHCHECK` duration flag.
    #[error(transparent)]
    Duration(#[from] DurationError),
}

/// A [`Problem::Invalid`] with `message`.
fn invalid(message: impl Into<String>) -> Problem {
    Problem::Invalid(message.into())
}

/// The instructions BuildKit knows, lowercase.
const INSTRUCTIONS: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Parses a Dockerfile. `file_name` is only used in error messages (`Dockerfile:7: ...`).
///
/// Every input gives a [`Dockerfile`] with at least one stage or an error; the time is linear in
/// the input.
pub fn parse(text: &str, file_name: &str) -> Result<Dockerfile, DockerfileError> {
    let err = |line: usize, problem: Problem| DockerfileError {
        file: file_name.to_string(),
        line,
        message: shorten(problem.to_string()),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let nodes = parse_nodes(text).map_err(|(line, message)| err(line, message))?;

    let mut df = Dockerfile { escape: nodes.escape, syntax: nodes.syntax, ..Dockerfile::default() };
    let mut names = HashSet::new();
    for node in nodes.nodes {
        let line = node.line;
        let lower = node.cmd.to_ascii_lowercase();
        if lower == "from" {
            let stage = parse_from(&node).map_err(|m| err(line, m))?;
            if let Some(name) = &stage.name
                && !names.insert(name.clone())
            {
                return Err(err(
                    line,
                    invalid(format!("duplicate stage name {name:?}, stage names should be unique")),
                ));
            }
            df.stages.push(stage);
            continue;
        }
        let kind = parse_instruction(&node).map_err(|m| err(line, m))?;
        match df.stages.last_mut() {
            Some(stage) => stage.instructions.push(Instruction {
                line,
                original: node.original.trim().to_string(),
                kind,
            }),
            None => match kind {
                InstructionKind::Arg(args) => df.global_args.extend(args),
                _ => {
                    return Err(err(
                        line,
                        invalid(format!(
                            "no build stage in current context: {} before the first FROM (only ARG may \
                             come before FROM)",
                            node.cmd.to_ascii_uppercase()
                        )),
                    ));
                }
            },
        }
    }
    if df.stages.is_empty() {
        return Err(err(nodes.last_line.max(1), invalid("dockerfile contains no stages to build")));
    }
    Ok(df)
}

/// Messages quote the input; keep them readable whatever the input is.
fn shorten(mut message: String) -> String {
    const MAX: usize = 300;
    if let Some((i, _)) = message.char_indices().nth(MAX) {
        message.truncate(i);
        message.push_str("...");
    }
    message
}

// ---------------------------------------------------------------------------------------------
// Lines to nodes (BuildKit's parser package).

/// A heredoc as read: the body is unchomped, lines joined with `\n`.
#[derive(Debug, Clone)]
struct RawHeredoc {
    name: String,
    chomp: bool,
    expand: bool,
    body: String,
}

/// One instruction as the line parser sees it.
#[derive(Debug, Clone, Default)]
struct Node {
    /// The instruction word as written.
    cmd: String,
    flags: Vec<String>,
    /// BuildKit's node arguments for this instruction.
    args: Vec<String>,
    /// The arguments were a JSON array.
    json: bool,
    /// The joined line.
    original: String,
    line: usize,
    heredocs: Vec<RawHeredoc>,
    /// For `ONBUILD`: the trigger's instruction word, and whether it may take heredocs.
    sub_cmd: Option<String>,
}

struct Nodes {
    escape: char,
    syntax: Option<String>,
    nodes: Vec<Node>,
    last_line: usize,
}

type LineError = (usize, Problem);

/// Parser directives: only at the very top, each once.
struct Directives {
    done: bool,
    seen: HashSet<String>,
    escape: char,
    syntax: Option<String>,
}

impl Directives {
    /// Looks at a (newline-trimmed) line; returns whether it was a directive.
    fn line(&mut self, line: &str) -> Result<bool, Problem> {
        if self.done {
            return Ok(false);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(false);
        };
        let rest = rest.trim_start();
        let Some((key, value)) = directive_match(rest) else {
            self.done = true;
            return Ok(false);
        };
        let key = key.to_ascii_lowercase();
        if !matches!(key.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(false);
        }
        if !self.seen.insert(key.clone()) {
            return Err(invalid(format!("only one {key} parser directive can be used")));
        }
        match key.as_str() {
            "escape" => match value {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                _ => return Err(invalid(format!("invalid escape token '{value}' does not match ` or \\"))),
            },
            "syntax" => self.syntax = Some(value.to_string()),
            _ => {}
        }
        Ok(true)
    }
}

/// BuildKit's `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`.
fn directive_match(s: &str) -> Option<(&str, &str)> {
    let first = s.chars().next()?;
    if !first.is_ascii_alphabetic() {
        return None;
    }
    let key_end = s.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(s.len());
    let key = &s[..key_end];
    let rest = s[key_end..].trim_start_matches(is_re_space);
    let rest = rest.strip_prefix('=')?;
    let value = rest.trim_matches(is_re_space);
    if value.is_empty() || value.contains('\n') {
        return None;
    }
    Some((key, value))
}

/// RE2's `\s`.
fn is_re_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0c' | '\r' | ' ')
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
fn is_ws_sep(c: char) -> bool {
    matches!(c, '\t' | '\x0b' | '\x0c' | '\r' | ' ')
}

fn trim_newline(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// BuildKit's line continuation: the escape character, then only spaces and tabs, at the end of
/// the line, not itself escaped. Returns the line without it and whether the line is complete.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let body = line.trim_end_matches([' ', '\t']);
    let Some(before) = body.strip_suffix(escape) else { return (line, true) };
    if before.ends_with(escape) {
        // `\\` at the end: an escaped escape, not a continuation.
        return (line, true);
    }
    (before, false)
}

fn parse_nodes(text: &str) -> Result<Nodes, LineError> {
    let mut dirs = Directives { done: false, seen: HashSet::new(), escape: '\\', syntax: None };
    let mut lines = text.split_inclusive('\n');
    let mut current = 0usize;
    let mut nodes = Vec::new();

    while let Some(raw) = lines.next() {
        let trimmed = trim_newline(raw).trim_start();
        let was_directive = dirs.line(trimmed).map_err(|m| (current + 1, m))?;
        current += 1;
        let start = current;
        if was_directive || is_comment(trimmed) {
            continue;
        }
        let (first, mut complete) = trim_continuation(trimmed, dirs.escape);
        if complete && first.is_empty() {
            continue;
        }
        let mut buf = String::from(first);
        while !complete {
            let Some(raw) = lines.next() else { break };
            let l = trim_newline(raw);
            dirs.line(l).map_err(|m| (current + 1, m))?;
            current += 1;
            if is_comment(l) || l.trim_start().is_empty() {
                continue;
            }
            let (l, c) = trim_continuation(l, dirs.escape);
            complete = c;
            buf.push_str(l);
        }

        let mut node = node_from_line(&buf, dirs.escape).map_err(|m| (start, m))?;
        node.line = start;

        if node_can_contain_heredoc(&node) && buf.contains("<<") {
            for (name, chomp, expand) in heredocs_from_line(&buf).map_err(|m| (start, m))? {
                let mut body = String::new();
                let mut terminated = false;
                for raw in lines.by_ref() {
                    current += 1;
                    let content = trim_newline(raw);
                    let candidate = if chomp { content.trim_start_matches('\t') } else { content };
                    if candidate == name {
                        terminated = true;
                        break;
                    }
                    body.push_str(content);
                    body.push('\n');
                }
                if !terminated {
                    return Err((start, invalid(format!("unterminated heredoc {name:?}"))));
                }
                node.heredocs.push(RawHeredoc { name, chomp, expand, body });
            }
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err((current.max(1), invalid("file with no instructions")));
    }
    Ok(Nodes { escape: dirs.escape, syntax: dirs.syntax, nodes, last_line: current })
}

fn node_can_contain_heredoc(node: &Node) -> bool {
    let cmd = match &node.sub_cmd {
        Some(sub) => sub,
        None => &node.cmd,
    };
    matches!(cmd.to_ascii_lowercase().as_str(), "run" | "copy" | "add") && !node.json
}

/// BuildKit's `splitCommand` and the per-instruction line parsers.
fn node_from_line(line: &str, escape: char) -> Result<Node, Problem> {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(is_ws_sep) {
        Some(i) => (&trimmed[..i], trimmed[i..].trim_start_matches(is_ws_sep)),
        None => (trimmed, ""),
    };
    let (args_text, flags) = extract_builder_flags(rest, escape);
    let args_text = args_text.trim();
    let mut node = Node { cmd: cmd.to_string(), flags, original: line.to_string(), ..Node::default() };
    let lower = cmd.to_ascii_lowercase();
    let (args, json) = match lower.as_str() {
        "add" | "copy" | "volume" => parse_maybe_json_to_list(args_text)?,
        "cmd" | "entrypoint" | "run" | "shell" => parse_maybe_json(args_text)?,
        "env" | "label" => (parse_name_val(args_text, &lower.to_ascii_uppercase(), escape)?, false),
        "arg" => (parse_words(args_text, escape), false),
        "expose" | "from" => (split_ws(args_text), false),
        "healthcheck" => parse_health_config(args_text)?,
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            (if args_text.is_empty() { Vec::new() } else { vec![args_text.to_string()] }, false)
        }
        "onbuild" => {
            if args_text.is_empty() {
                (Vec::new(), false)
            } else {
                // The trigger is parsed as an instruction line of its own; only its word and
                // whether it is JSON matter here. `ONBUILD ONBUILD` is refused before any
                // nesting.
                let sub_word = args_text.split(is_ws_sep).next().unwrap_or_default();
                if sub_word.eq_ignore_ascii_case("onbuild") {
                    return Err(invalid("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"));
                }
                let sub = node_from_line(args_text, escape)?;
                node.json = sub.json;
                node.sub_cmd = Some(sub.cmd.clone());
                let mut args = vec![sub.cmd];
                args.extend(sub.args);
                (args, false)
            }
        }
        _ => (Vec::new(), false),
    };
    node.args = args;
    node.json = node.json || json;
    Ok(node)
}

/// BuildKit's `extractBuilderFlags`: leading `--flag[=value]` words (quotes and escapes
/// processed), and the rest of the line.
fn extract_builder_flags(line: &str, escape: char) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut buf = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut pos = 0;
    loop {
        let ch = line[pos..].chars().next();
        let width = ch.map_or(0, char::len_utf8);
        if phase == Phase::Spaces {
            let Some(c) = ch else { break };
            if c.is_whitespace() {
                pos += width;
                continue;
            }
            if c != '-' || !line[pos + 1..].starts_with('-') {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        let Some(mut c) = ch else {
            if buf != "--" && (blank_ok || !buf.is_empty()) {
                words.push(buf);
            }
            break;
        };
        if phase == Phase::Word {
            if c.is_whitespace() {
                phase = Phase::Spaces;
                if buf == "--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !buf.is_empty() {
                    words.push(std::mem::take(&mut buf));
                }
                buf.clear();
                blank_ok = false;
                pos += width;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
                pos += width;
                continue;
            }
            if c == escape {
                if pos + width == line.len() {
                    pos += width;
                    continue;
                }
                pos += width;
                c = line[pos..].chars().next().unwrap_or(c);
            }
            buf.push(c);
            pos += c.len_utf8();
            continue;
        }
        // In quotes.
        if c == quote {
            phase = Phase::Word;
            pos += width;
            continue;
        }
        if c == escape {
            if pos + width == line.len() {
                phase = Phase::Word;
                pos += width;
                continue;
            }
            pos += width;
            c = line[pos..].chars().next().unwrap_or(c);
        }
        buf.push(c);
        pos += c.len_utf8();
    }
    ("", words)
}

/// BuildKit's `parseWords`: whitespace-separated words, quotes and escapes kept.
fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut buf = String::new();
    let mut chars = rest.chars().peekable();
    loop {
        let ch = chars.next();
        if phase == Phase::Spaces {
            let Some(c) = ch else { break };
            if c.is_whitespace() {
                continue;
            }
            phase = Phase::Word;
        }
        let Some(c) = ch else {
            if blank_ok || !buf.is_empty() {
                words.push(buf);
            }
            break;
        };
        if phase == Phase::Word {
            if c.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !buf.is_empty() {
                    words.push(std::mem::take(&mut buf));
                }
                blank_ok = false;
                continue;
            }
            if c == '\'' || c == '"' {
                quote = c;
                blank_ok = true;
                phase = Phase::Quote;
            }
            if c == escape {
                let Some(next) = chars.next() else { continue };
                buf.push(c);
                buf.push(next);
                continue;
            }
            buf.push(c);
            continue;
        }
        // In quotes.
        if c == quote {
            phase = Phase::Word;
        }
        if c == escape && quote != '\'' {
            let Some(next) = chars.next() else {
                phase = Phase::Word;
                continue;
            };
            buf.push(c);
            buf.push(next);
            continue;
        }
        buf.push(c);
    }
    words
}

fn split_ws(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(is_ws_sep).filter(|w| !w.is_empty()).map(str::to_string).collect()
}

const NOT_STRING_ARRAY: &str = "when using JSON array syntax, arrays must be comprised of strings only";

/// A JSON array of strings, `Ok(None)` when the text is not a JSON array at all, an error when
/// it is one with something else than strings.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, Problem> {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return Ok(None);
    }
    let Ok(values) = serde_json::from_str::<Vec<serde_json::Value>>(rest) else { return Ok(None) };
    values
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(invalid(NOT_STRING_ARRAY)),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), Problem> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest)? {
        Some(v) => Ok((v, true)),
        None => Ok((vec![rest.to_string()], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), Problem> {
    match parse_json(rest)? {
        Some(v) => Ok((v, true)),
        None => Ok((split_ws(rest), false)),
    }
}

/// `HEALTHCHECK TYPE rest`: the type word, then `rest` as [`parse_maybe_json`].
fn parse_health_config(rest: &str) -> Result<(Vec<String>, bool), Problem> {
    let sep = rest.find(|c: char| c.is_whitespace()).unwrap_or(rest.len());
    if sep == 0 {
        return Ok((Vec::new(), false));
    }
    let typ = &rest[..sep];
    let (cmd, json) = parse_maybe_json(rest[sep..].trim_start())?;
    let mut args = vec![typ.to_string()];
    args.extend(cmd);
    Ok((args, json))
}

/// `ENV`/`LABEL`: triples flattened as `[key, value, ...]` pairs.
fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, Problem> {
    let words = parse_words(rest, escape);
    let Some(first) = words.first() else { return Ok(Vec::new()) };
    if !first.contains('=') {
        // Legacy `ENV name value...`.
        let Some(i) = rest.find(is_ws_sep) else {
            return Err(invalid(format!("{key} must have two arguments")));
        };
        let value = rest[i..].trim_start_matches(is_ws_sep);
        return Ok(vec![rest[..i].to_string(), value.to_string()]);
    }
    let mut out = Vec::with_capacity(words.len() * 2);
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(invalid(format!("Syntax error - can't find = in {word:?}. Must be of the form: name=value")));
        };
        out.push(k.to_string());
        out.push(v.to_string());
    }
    Ok(out)
}

/// A word that introduces a heredoc (`<<EOF`, `<<-EOF`, `<<"EOF"`, `3<<EOF`): the tests'
/// view of what the parser decides.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocWord {
    /// The delimiter, quotes removed.
    pub name: String,
    /// `<<-`: leading tabs are removed from the body and the delimiter line.
    pub chomp: bool,
    /// The delimiter was not quoted: `$` references in the body are expanded.
    pub expand: bool,
}

/// Whether `word` is exactly one heredoc word, as BuildKit's `ParseHeredoc` decides (a word that
/// does not lex is not one). The tests check BuildKit's rules here; the parser uses the same
/// decision on each instruction.
#[cfg(test)]
pub fn heredoc_word(word: &str) -> Option<HeredocWord> {
    parse_heredoc_word(word).ok().flatten().map(|(name, chomp, expand)| HeredocWord { name, chomp, expand })
}

/// BuildKit's heredoc word: `^(\d*)<<(-?)\s*([^<]*)$`, then the name unquoted. Returns
/// `(name, chomp, expand)`.
fn parse_heredoc_word(word: &str) -> Result<Option<(String, bool, bool)>, Problem> {
    let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(rest) = rest.strip_prefix("<<") else { return Ok(None) };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches(is_re_space);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let mut lex = Expander::new('\\');
    lex.skip_unset = true;
    let words = lex.expand(rest, &|_| None)?.words;
    if words.len() != 1 {
        return Ok(None);
    }
    lex.raw_quotes = true;
    let raw = lex.expand(rest, &|_| None)?.words;
    if raw.len() != 1 {
        return Err(invalid(format!("internal lexing of heredoc produced inconsistent results: {rest}")));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    let expand = quotes(&words[0]) == quotes(&raw[0]);
    Ok(Some((words[0].clone(), chomp, expand)))
}

fn heredocs_from_line(line: &str) -> Result<Vec<(String, bool, bool)>, Problem> {
    let mut lex = Expander::new('\\');
    lex.raw_quotes = true;
    lex.raw_escapes = true;
    lex.skip_unset = true;
    // As BuildKit: a line the lexer rejects has no heredocs.
    let words = lex.expand(line, &|_| None).map(|e| e.words).unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc_word(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Removes the leading tabs of every line (`<<-`).
fn chomp(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    for line in body.split_inclusive('\n') {
        out.push_str(line.trim_start_matches('\t'));
    }
    out
}

fn to_heredoc(h: &RawHeredoc) -> Heredoc {
    Heredoc {
        name: h.name.clone(),
        content: if h.chomp { chomp(&h.body) } else { h.body.clone() },
        expand: h.expand,
    }
}

// ---------------------------------------------------------------------------------------------
// Flags (BuildKit's BFlags).

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagType {
    Bool,
    Str,
    Strs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum FlagValue {
    Bool(bool),
    Str(String),
    Strs(Vec<String>),
}

#[derive(Default)]
struct Flags(BTreeMap<&'static str, FlagValue>);

impl Flags {
    fn string(&self, name: &str) -> Option<String> {
        match self.0.get(name) {
            Some(FlagValue::Str(s)) => Some(s.clone()),
            _ => None,
        }
    }

    fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name) {
            Some(FlagValue::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    fn strings(&self, name: &str) -> Vec<String> {
        match self.0.get(name) {
            Some(FlagValue::Strs(v)) => v.clone(),
            _ => Vec::new(),
        }
    }
}

fn parse_flags(flags: &[String], spec: &[(&'static str, FlagType)]) -> Result<Flags, Problem> {
    let mut out = Flags::default();
    for a in flags {
        if a == "--" {
            break;
        }
        let Some(body) = a.strip_prefix("--") else {
            return Err(invalid(format!("arg should start with -- : {a}")));
        };
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        let flag_name = format!("--{name}");
        let Some(&(key, typ)) = spec.iter().find(|(n, _)| *n == name) else {
            let mut msg = format!("unknown flag: {flag_name}");
            if let Some(s) = suggest(name, spec.iter().map(|(n, _)| *n)) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(invalid(msg));
        };
        match typ {
            FlagType::Bool => {
                if out.0.contains_key(key) {
                    return Err(invalid(format!("duplicate flag specified: {flag_name}")));
                }
                let v = match value {
                    None => true,
                    Some("") => return Err(invalid(format!("missing a value on flag: {flag_name}"))),
                    Some(v) if v.eq_ignore_ascii_case("true") => true,
                    Some(v) if v.eq_ignore_ascii_case("false") => false,
                    Some(v) => return Err(invalid(format!("expecting boolean value for flag {flag_name}, not: {v}"))),
                };
                out.0.insert(key, FlagValue::Bool(v));
            }
            FlagType::Str => {
                if out.0.contains_key(key) {
                    return Err(invalid(format!("duplicate flag specified: {flag_name}")));
                }
                let Some(v) = value else { return Err(invalid(format!("missing a value on flag: {flag_name}"))) };
                out.0.insert(key, FlagValue::Str(v.to_string()));
            }
            FlagType::Strs => {
                let Some(v) = value else { return Err(invalid(format!("missing a value on flag: {flag_name}"))) };
                if let FlagValue::Strs(list) = out.0.entry(key).or_insert_with(|| FlagValue::Strs(Vec::new()))
                {
                    list.push(v.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// The closest of `options` to `word` if it is close enough to be a typo.
fn suggest<'a>(word: &str, options: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    if word.len() > 64 {
        return None;
    }
    let mut best: Option<(usize, &str)> = None;
    for o in options {
        let d = levenshtein(&word, o);
        if d <= 2 && d < o.len() && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, o));
        }
    }
    best.map(|(_, o)| o)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Nodes to instructions (BuildKit's instructions package).

fn at_least_one(cmd: &str) -> String {
    format!("{cmd} requires at least one argument")
}

fn exactly_one(cmd: &str) -> String {
    format!("{cmd} requires exactly one argument")
}

/// `^[a-z][a-z0-9-_.]*$`.
fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

fn parse_from(node: &Node) -> Result<Stage, Problem> {
    let args = &node.args;
    let name = match args.len() {
        3 if args[1].eq_ignore_ascii_case("as") => {
            let name = args[2].to_lowercase();
            if !valid_stage_name(&name) {
                return Err(invalid(format!(
                    "invalid name for build stage: {:?}, name can't start with a number or contain symbols",
                    args[2]
                )));
            }
            Some(name)
        }
        1 => None,
        _ => return Err(invalid("FROM requires either one or three arguments")),
    };
    let flags = parse_flags(&node.flags, &[("platform", FlagType::Str)])?;
    Ok(Stage {
        base: args[0].clone(),
        name,
        platform: flags.string("platform"),
        line: node.line,
        instructions: Vec::new(),
    })
}

fn command_form(node: &Node) -> CommandForm {
    if node.json { CommandForm::Exec(node.args.clone()) } else { CommandForm::Shell(node.args.join(" ")) }
}

fn no_flags(node: &Node) -> Result<(), Problem> {
    parse_flags(&node.flags, &[]).map(|_| ())
}

fn parse_instruction(node: &Node) -> Result<InstructionKind, Problem> {
    let args = &node.args;
    let lower = node.cmd.to_ascii_lowercase();
    let upper = node.cmd.to_ascii_uppercase();
    Ok(match lower.as_str() {
        "env" | "label" => {
            no_flags(node)?;
            if args.is_empty() {
                return Err(invalid(at_least_one(&upper)));
            }
            let mut pairs = Vec::with_capacity(args.len() / 2);
            for kv in args.chunks(2) {
                let [k, v] = kv else { return Err(invalid(format!("Bad input to {upper}, too many arguments"))) };
                if k.is_empty() {
                    return Err(invalid(format!("{upper} names can not be blank")));
                }
                pairs.push((k.clone(), v.clone()));
            }
            if lower == "env" { InstructionKind::Env(pairs) } else { InstructionKind::Label(pairs) }
        }
        "maintainer" => {
            let [m] = args.as_slice() else { return Err(invalid(exactly_one("MAINTAINER"))) };
            no_flags(node)?;
            InstructionKind::Maintainer(m.clone())
        }
        "add" | "copy" => InstructionKind::from_copy(&lower, parse_copy(node, &upper)?),
        "onbuild" => parse_onbuild(node)?,
        "workdir" => {
            let [p] = args.as_slice() else { return Err(invalid(exactly_one("WORKDIR"))) };
            no_flags(node)?;
            InstructionKind::Workdir(p.clone())
        }
        "run" => parse_run(node)?,
        "cmd" | "entrypoint" => {
            no_flags(node)?;
            if args.is_empty() && !node.json {
                return Err(invalid(at_least_one(&upper)));
            }
            let form = command_form(node);
            if lower == "cmd" { InstructionKind::Cmd(form) } else { InstructionKind::Entrypoint(form) }
        }
        "healthcheck" => parse_healthcheck(node)?,
        "expose" => {
            if args.is_empty() {
                return Err(invalid(at_least_one("EXPOSE")));
            }
            no_flags(node)?;
            let mut ports = args.clone();
            ports.sort();
            InstructionKind::Expose(ports)
        }
        "user" => {
            let [u] = args.as_slice() else { return Err(invalid(exactly_one("USER"))) };
            no_flags(node)?;
            InstructionKind::User(u.clone())
        }
        "volume" => {
            if args.is_empty() {
                return Err(invalid(at_least_one("VOLUME")));
            }
            no_flags(node)?;
            let mut vols = Vec::with_capacity(args.len());
            for v in args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(invalid("VOLUME specified can not be an empty string"));
                }
                vols.push(v.to_string());
            }
            InstructionKind::Volume(vols)
        }
        "stopsignal" => {
            // BuildKit does not look at STOPSIGNAL's flags.
            let [s] = args.as_slice() else { return Err(invalid(exactly_one("STOPSIGNAL"))) };
            InstructionKind::StopSignal(s.clone())
        }
        "arg" => {
            // Nor at ARG's.
            if args.is_empty() {
                return Err(invalid(at_least_one("ARG")));
            }
            let mut decls = Vec::with_capacity(args.len());
            for a in args {
                let decl = match a.split_once('=') {
                    Some(("", _)) => return Err(invalid("ARG names can not be blank")),
                    Some((k, v)) => ArgDecl { name: k.to_string(), default: Some(v.to_string()) },
                    None => ArgDecl { name: a.clone(), default: None },
                };
                decls.push(decl);
            }
            InstructionKind::Arg(decls)
        }
        "shell" => {
            no_flags(node)?;
            if args.is_empty() {
                return Err(invalid(at_least_one("SHELL")));
            }
            if !node.json {
                return Err(invalid("SHELL requires the arguments to be in JSON form"));
            }
            InstructionKind::Shell(args.clone())
        }
        _ => {
            let mut msg = format!("unknown instruction: {}", node.cmd);
            if let Some(s) = suggest(&node.cmd, INSTRUCTIONS.iter().copied()) {
                msg.push_str(&format!(" (did you mean {}?)", s.to_ascii_uppercase()));
            }
            return Err(invalid(msg));
        }
    })
}

impl InstructionKind {
    fn from_copy(lower: &str, c: CopyInstruction) -> Self {
        if lower == "add" { InstructionKind::Add(c) } else { InstructionKind::Copy(c) }
    }
}

fn parse_copy(node: &Node, upper: &str) -> Result<CopyInstruction, Problem> {
    let args = &node.args;
    if args.len() < 2 {
        return Err(invalid(format!(
            "{upper} requires at least two arguments, but only one was provided. Destination could not be \
             determined"
        )));
    }
    let is_add = upper == "ADD";
    let flags = if is_add {
        parse_flags(
            &node.flags,
            &[
                ("chown", FlagType::Str),
                ("chmod", FlagType::Str),
                ("link", FlagType::Bool),
                ("keep-git-dir", FlagType::Bool),
                ("checksum", FlagType::Str),
                ("unpack", FlagType::Bool),
                ("exclude", FlagType::Strs),
            ],
        )?
    } else {
        parse_flags(
            &node.flags,
            &[
                ("chown", FlagType::Str),
                ("from", FlagType::Str),
                ("chmod", FlagType::Str),
                ("link", FlagType::Bool),
                ("exclude", FlagType::Strs),
                ("parents", FlagType::Bool),
            ],
        )?
    };
    let (srcs, dest) = args.split_at(args.len() - 1);
    let dest = dest[0].clone();
    // BuildKit's `MustParseHeredoc`: a word that does not lex is a plain path.
    let heredoc_word = |w: &str| parse_heredoc_word(w).ok().flatten();
    if heredoc_word(&dest).is_some() {
        return Err(invalid(format!("{upper} cannot accept a heredoc as a destination")));
    }
    // The last body with each name, as BuildKit's lookup map.
    let bodies: std::collections::HashMap<&str, &str> =
        node.heredocs.iter().map(|h| (h.name.as_str(), h.body.as_str())).collect();
    let mut sources = Vec::with_capacity(srcs.len());
    let mut heredocs = Vec::new();
    for src in srcs {
        match heredoc_word(src) {
            Some((name, chomp_it, expand)) => {
                let body = bodies.get(name.as_str()).copied().unwrap_or_default();
                let content = if chomp_it { chomp(body) } else { body.to_string() };
                sources.push(format!("<<{name}"));
                heredocs.push(Heredoc { name, content, expand });
            }
            None => sources.push(src.clone()),
        }
    }
    Ok(CopyInstruction {
        sources,
        dest,
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link").unwrap_or(false),
        exclude: flags.strings("exclude"),
        parents: flags.bool("parents").unwrap_or(false),
        keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
        checksum: flags.string("checksum"),
        unpack: flags.bool("unpack"),
        heredocs,
    })
}

fn parse_onbuild(node: &Node) -> Result<InstructionKind, Problem> {
    if node.args.is_empty() {
        return Err(invalid(at_least_one("ONBUILD")));
    }
    no_flags(node)?;
    let trigger = node.args[0].trim().to_ascii_uppercase();
    match trigger.as_str() {
        "ONBUILD" => return Err(invalid("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")),
        "MAINTAINER" | "FROM" => return Err(invalid(format!("{trigger} isn't allowed as an ONBUILD trigger"))),
        _ => {}
    }
    // The original line without `ONBUILD` (`(?i)^\s*ONBUILD\s*`), then the heredoc bodies.
    let o = node.original.trim_start_matches(is_re_space);
    let o = if o.len() >= 7 && o.is_char_boundary(7) && o[..7].eq_ignore_ascii_case("onbuild") {
        o[7..].trim_start_matches(is_re_space)
    } else {
        o
    };
    let mut expr = o.to_string();
    for h in &node.heredocs {
        expr.push('\n');
        expr.push_str(&h.body);
        expr.push_str(&h.name);
    }
    Ok(InstructionKind::Onbuild(expr))
}

fn parse_run(node: &Node) -> Result<InstructionKind, Problem> {
    let flags = parse_flags(
        &node.flags,
        &[
            ("mount", FlagType::Strs),
            ("network", FlagType::Str),
            ("security", FlagType::Str),
            ("device", FlagType::Strs),
        ],
    )?;
    if !flags.strings("device").is_empty() {
        return Err(invalid("RUN --device is not supported"));
    }
    let network = flags.string("network");
    if let Some(n) = &network
        && !matches!(n.as_str(), "default" | "none" | "host")
    {
        return Err(invalid(format!("invalid network mode {n:?}")));
    }
    let security = flags.string("security");
    if let Some(s) = &security
        && !matches!(s.as_str(), "sandbox" | "insecure")
    {
        return Err(invalid(format!("security {s:?} is not valid")));
    }
    let mut mounts = Vec::new();
    for m in flags.strings("mount") {
        mounts.push(parse_mount(&m)?);
    }
    if node.args.is_empty() {
        return Err(invalid(at_least_one("RUN")));
    }
    Ok(InstructionKind::Run(RunInstruction {
        command: command_form(node),
        mounts,
        network,
        security,
        heredocs: node.heredocs.iter().map(to_heredoc).collect(),
    }))
}

/// One CSV record as Go's `encoding/csv` (through BuildKit's `csvvalue`) reads it.
fn csv_fields(line: &str) -> Result<Vec<String>, Problem> {
    let line = line.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(line);
    if line.is_empty() {
        return Err(invalid("failed to parse csv mounts: EOF"));
    }
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        if !rest.starts_with('"') {
            let (field, more) = match rest.find(',') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            if field.contains('"') {
                return Err(invalid("failed to parse csv mounts: bare \" in non-quoted-field"));
            }
            fields.push(field.to_string());
            match more {
                Some(m) => {
                    rest = m;
                    continue;
                }
                None => break,
            }
        }
        // Quoted field: `""` is a quote; the closing quote is followed by `,` or the end.
        rest = &rest[1..];
        let mut field = String::new();
        loop {
            let Some(i) = rest.find('"') else {
                return Err(invalid(
                    "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                ));
            };
            field.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('"') {
                field.push('"');
                rest = r;
                continue;
            }
            break;
        }
        fields.push(field);
        if rest.is_empty() {
            break;
        }
        match rest.strip_prefix(',') {
            Some(r) => rest = r,
            None => {
                return Err(invalid(
                    "failed to parse csv mounts: extraneous or missing \" in quoted-field"
                ));
            }
        }
    }
    Ok(fields)
}

/// Go's `strconv.ParseBool`.
fn go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// docker's `units.RAMInBytes`: a number with an optional `b`, `k`, `m`, `g`, `t`, `p` suffix
/// (optionally followed by `b`/`ib`), binary multiples.
fn ram_in_bytes(s: &str) -> Option<u64> {
    let lower = s.to_ascii_lowercase();
    let num_end = lower.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(lower.len());
    let (num, unit) = lower.split_at(num_end);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim_start() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0f64.powi(4),
        "p" | "pb" | "pib" => 1024.0f64.powi(5),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// `RUN --mount=` as BuildKit checks it; values stay as written (the builder expands them). A
/// value with a `$` is not checked here.
fn parse_mount(val: &str) -> Result<RunMount, Problem> {
    let fields = csv_fields(val)?;
    let mut m = RunMount { kind: "bind".to_string(), ..RunMount::default() };
    let mut ro_auto = true;
    let mut read_only = false;
    let known = |t: &str| !t.contains('$');
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    read_only = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    read_only = false;
                    ro_auto = false;
                }
                "required" => {
                    if matches!(m.kind.as_str(), "secret" | "ssh") || !known(&m.kind) {
                        m.required = true;
                    } else {
                        return Err(invalid(format!("unexpected key '{key}' for mount type '{}'", m.kind)));
                    }
                }
                _ => return Err(invalid(format!("invalid field '{field}' must be a key=value pair"))),
            }
            continue;
        };
        let checkable = known(&value);
        let parse_bool = |v: &str| -> Result<bool, Problem> {
            if !checkable {
                return Ok(true);
            }
            go_bool(v).ok_or_else(|| invalid(format!("invalid value for {key}: {v}")))
        };
        match key.as_str() {
            "type" => {
                let v = value.to_ascii_lowercase();
                if checkable && !matches!(v.as_str(), "bind" | "cache" | "tmpfs" | "secret" | "ssh") {
                    return Err(invalid(format!("unsupported mount type {value:?}")));
                }
                m.kind = if checkable { v } else { value };
            }
            "from" => {
                if let Some(i) = value.find('$')
                    && i != value.len() - 1
                {
                    return Err(invalid(format!(
                        "'{key}' doesn't support variable expansion, define alias stage instead"
                    )));
                }
                m.from = Some(value);
            }
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "readonly" | "ro" => {
                read_only = parse_bool(&value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                read_only = !parse_bool(&value)?;
                ro_auto = false;
            }
            "required" => {
                if matches!(m.kind.as_str(), "secret" | "ssh") || !known(&m.kind) {
                    m.required = parse_bool(&value)?;
                } else {
                    return Err(invalid(format!("unexpected key '{key}' for mount type '{}'", m.kind)));
                }
            }
            "size" => {
                if m.kind == "tmpfs" || !known(&m.kind) {
                    if checkable && ram_in_bytes(&value).is_none() {
                        return Err(invalid(format!("invalid value for {key}: {value}")));
                    }
                    m.size = Some(value);
                } else {
                    return Err(invalid(format!("unexpected key '{key}' for mount type '{}'", m.kind)));
                }
            }
            "id" => m.id = Some(value),
            "sharing" => {
                let v = value.to_ascii_lowercase();
                if checkable && !matches!(v.as_str(), "shared" | "private" | "locked") {
                    return Err(invalid(format!("unsupported sharing value {value:?}")));
                }
                m.sharing = Some(if checkable { v } else { value });
            }
            "mode" => {
                if checkable && u32::from_str_radix(&value, 8).is_err() {
                    return Err(invalid(format!("invalid value {value} for mode")));
                }
                m.mode = Some(value);
            }
            "uid" | "gid" => {
                if checkable && value.parse::<u32>().is_err() {
                    return Err(invalid(format!("invalid value {value} for {key}")));
                }
                if key == "uid" {
                    m.uid = Some(value);
                } else {
                    m.gid = Some(value);
                }
            }
            "env" => m.env = Some(value),
            _ => return Err(invalid(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    let kind_known = known(&m.kind);
    if kind_known && !matches!(m.kind.as_str(), "secret" | "ssh" | "cache") {
        for (name, v) in [("mode", &m.mode), ("uid", &m.uid), ("gid", &m.gid)] {
            if v.is_some() {
                return Err(invalid(format!("{name} not allowed for {:?} type mounts", m.kind)));
            }
        }
    }
    if ro_auto {
        read_only = !(m.kind == "cache" || m.kind == "tmpfs");
    }
    m.read_write = !read_only;
    if m.kind == "secret" {
        if m.from.is_some() {
            return Err(invalid("secret mount should not have a from"));
        }
        if m.sharing.is_some() {
            return Err(invalid("secret mount should not define sharing"));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() {
            return Err(invalid("invalid secret mount. one of source, target required"));
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(invalid("both source and id can't be set"));
        }
    }
    if m.sharing.is_some() && kind_known && m.kind != "cache" {
        return Err(invalid(format!("invalid cache sharing set for {} mount", m.kind)));
    }
    Ok(m)
}

fn parse_healthcheck(node: &Node) -> Result<InstructionKind, Problem> {
    let args = &node.args;
    let Some(typ) = args.first() else { return Err(invalid(at_least_one("HEALTHCHECK"))) };
    let typ = typ.to_ascii_uppercase();
    if typ == "NONE" {
        if args.len() != 1 {
            return Err(invalid("HEALTHCHECK NONE takes no arguments"));
        }
        return Ok(InstructionKind::Healthcheck(None));
    }
    let flags = parse_flags(
        &node.flags,
        &[
            ("interval", FlagType::Str),
            ("timeout", FlagType::Str),
            ("start-period", FlagType::Str),
            ("start-interval", FlagType::Str),
            ("retries", FlagType::Str),
        ],
    )?;
    if typ != "CMD" {
        return Err(invalid(format!("Unknown type {:?} in HEALTHCHECK (try CMD)", args[0].to_ascii_uppercase())));
    }
    let cmd = &args[1..];
    if cmd.is_empty() {
        return Err(invalid("Missing command after HEALTHCHECK CMD"));
    }
    let command = if node.json { CommandForm::Exec(cmd.to_vec()) } else { CommandForm::Shell(cmd.join(" ")) };
    for name in ["interval", "timeout", "start-period", "start-interval"] {
        if let Some(v) = flags.string(name) {
            healthcheck_interval(name, &v)?;
        }
    }
    if let Some(r) = flags.string("retries") {
        match r.parse::<i64>() {
            Ok(n) if n < 0 => return Err(invalid(format!("--retries cannot be negative ({n})"))),
            Ok(n) if n > i64::from(i32::MAX) => {
                return Err(invalid(format!("strconv.ParseInt: parsing {r:?}: value out of range")));
            }
            Ok(_) => {}
            Err(_) => return Err(invalid(format!("strconv.ParseInt: parsing {r:?}: invalid syntax"))),
        }
    }
    Ok(InstructionKind::Healthcheck(Some(HealthcheckInstruction {
        command,
        interval: flags.string("interval"),
        timeout: flags.string("timeout"),
        start_period: flags.string("start-period"),
        start_interval: flags.string("start-interval"),
        retries: flags.string("retries"),
    })))
}

/// A duration that Go's `time.ParseDuration` (or BuildKit's `HEALTHCHECK` rules) refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(pub String);

/// A `HEALTHCHECK` duration flag as BuildKit reads it: empty or zero is "not set", otherwise at
/// least 1ms. Returns nanoseconds (0 for not set).
pub fn healthcheck_interval(flag: &str, value: &str) -> Result<u64, DurationError> {
    if value.is_empty() {
        return Ok(0);
    }
    let ns = parse_go_duration(value)?;
    if ns == 0 {
        return Ok(0);
    }
    if ns < 1_000_000 {
        return Err(DurationError(format!("Interval {flag:?} cannot be less than 1ms")));
    }
    u64::try_from(ns).map_err(|_| DurationError(format!("time: invalid duration {value:?}")))
}

/// Go's `time.ParseDuration`: `300ms`, `1.5h`, `2h45m`, `-1s`; nanoseconds (within `i64`).
pub fn parse_go_duration(s: &str) -> Result<i128, DurationError> {
    let bad = || DurationError(format!("time: invalid duration {s:?}"));
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let int_part = &rest[..int_end];
        rest = &rest[int_end..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let fe = r.find(|c: char| !c.is_ascii_digit()).unwrap_or(r.len());
            frac_part = &r[..fe];
            rest = &r[fe..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        let unit_end = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        rest = &rest[unit_end..];
        let mult: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(DurationError(format!("time: missing unit in duration {s:?}"))),
            _ => return Err(DurationError(format!("time: unknown unit {unit:?} in duration {s:?}"))),
        };
        if int_part.len() > 30 {
            return Err(bad());
        }
        let whole: i128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| bad())? };
        let mut v = whole.checked_mul(mult).ok_or_else(bad)?;
        let mut scale = mult;
        for d in frac_part.chars().take(30) {
            scale /= 10;
            if scale == 0 {
                break;
            }
            v = v.saturating_add(i128::from(d.to_digit(10).unwrap_or(0)) * scale);
        }
        total = total.checked_add(v).ok_or_else(bad)?;
        if total > i128::from(i64::MAX) {
            return Err(bad());
        }
    }
    Ok(if neg { -total } else { total })
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
