//! BuildKit's word expansion (`frontend/dockerfile/shell/lex.go`): quotes, the escape character,
//! `$VAR`, `${VAR}` and the `${VAR<op>word}` forms, with the same results and errors as the
//! Dockerfile frontend.
//!
//! What is supported, as BuildKit does it:
//! - single quotes: everything literal up to the next `'`;
//! - double quotes: literal except `$` expansions, and the escape character before `"`, `$` or
//!   itself (any other escaped character keeps its escape character);
//! - the escape character outside quotes takes the next character literally; a trailing escape
//!   character is dropped;
//! - `$NAME`, `${NAME}`, positional (`$1`, `${10}`) and special (`$@`, `$#`, ...) parameters,
//!   which are simply looked up;
//! - `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?w}`, `${V?w}`;
//! - `${V#p}`, `${V##p}`, `${V%p}`, `${V%%p}`, `${V/p/r}`, `${V//p/r}` where the pattern knows
//!   `*` and `?` (neither matches a newline) and `\` escapes; brackets are literal, as in
//!   BuildKit;
//! - words inside the braces are expanded themselves (`${A:-${B:-c}}`), up to [`MAX_DEPTH`]
//!   levels.
//!
//! Where berth differs from BuildKit, on purpose: an unterminated `${NAME` reports the missing
//! `}` (BuildKit reports an unsupported modifier); words are split correctly after a nested
//! `${A:-b}` (BuildKit's shared word buffer drops what came before it in the word); nesting is
//! limited to [`MAX_DEPTH`]; the name characters are Rust's alphanumerics (Go's letters and
//! digits differ on a few Unicode characters).
//!
//! Unset variables expand to the empty string. The expander is a recursive descent whose depth
//! is bounded by [`MAX_DEPTH`], so any input gives a result or an error without overflowing the
//! stack, in time linear in the input (pattern operators are linear in the pattern times the
//! value, and refuse a pattern and value whose product is beyond 2^28).

use std::collections::BTreeSet;

/// How deeply `${...}` forms may nest before expansion gives up with [`ExpandErrorKind::TooDeep`].
pub const MAX_DEPTH: usize = 128;

/// Why a word could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandErrorKind {
    /// `${` without its closing `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// `${/p/r` without the second `/`.
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    /// `${}`, `${:x}`, `${{x}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// `${V:=x}`, `${V.}`, `${V:#x}`...
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// A quote without its closing quote.
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    /// `${V?msg}` / `${V:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required {
        /// The variable.
        name: String,
        /// The word after `?`, or BuildKit's default message.
        message: String,
    },
    /// A pattern with an escape that is not `\*`, `\?`, `\\`, `\}` or `\/`.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern as expanded.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `${` nested deeper than [`MAX_DEPTH`].
    #[error("expansion nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// A word that could not be expanded, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {kind}")]
pub struct ExpandError {
    /// The word as given (truncated to 200 characters).
    pub word: String,
    /// Why.
    pub kind: ExpandErrorKind,
}

/// The outcome of expanding one word.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Expansion {
    /// The whole word expanded, quotes removed, whitespace kept.
    pub result: String,
    /// The word expanded and split on unquoted whitespace (whitespace inside quotes, escaped
    /// whitespace and whitespace from `"$VAR"` does not split; whitespace from an unquoted
    /// `$VAR` does). Empty words (`""`) are dropped, as BuildKit does.
    pub words: Vec<String>,
    /// Variables that were looked up and found (even if their value was not used, as in
    /// `${A:+x}`).
    pub matched: BTreeSet<String>,
    /// Variables that were looked up and not found.
    pub unmatched: BTreeSet<String>,
}

impl Expansion {
    /// Every variable the word referenced, found or not: what a cache key must include.
    pub fn referenced(&self) -> BTreeSet<String> {
        self.matched.union(&self.unmatched).cloned().collect()
    }
}

/// Options of the expander; [`Expander::new`] gives BuildKit's defaults for an escape character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expander {
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Keep quote characters in the result (BuildKit's `RawQuotes`).
    pub raw_quotes: bool,
    /// Keep escape characters in the result (BuildKit's `RawEscapes`).
    pub raw_escapes: bool,
    /// Leave references to unset variables as written (BuildKit's `SkipUnsetEnv`).
    pub skip_unset: bool,
}

impl Expander {
    /// An expander with `escape` and all other options off.
    pub fn new(escape: char) -> Self {
        Expander { escape, raw_quotes: false, raw_escapes: false, skip_unset: false }
    }

    /// Expands `word`, looking variables up with `vars`.
    pub fn expand(
        &self,
        word: &str,
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Expansion, ExpandError> {
        let mut sw = ShellWord {
            opts: *self,
            src: word,
            pos: 0,
            vars,
            raw_escapes: self.raw_escapes,
            depth: 0,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        match sw.process_stop_on(None, self.raw_escapes, true) {
            Ok((result, words)) => {
                Ok(Expansion { result, words, matched: sw.matched, unmatched: sw.unmatched })
            }
            Err(kind) => Err(ExpandError { word: truncate(word, 200), kind }),
        }
    }
}

/// Expands one word (BuildKit's `ProcessWord`): the result with quotes removed and variables
/// replaced; whitespace is kept. The builder tracks references ([`expand_word_tracked`]); the
/// tests check BuildKit's rules here.
#[cfg(test)]
pub fn expand_word(
    word: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    Expander::new(escape).expand(word, vars).map(|e| e.result)
}

/// Expands `word` and splits it on unquoted whitespace (BuildKit's `ProcessWords`, used for
/// `EXPOSE`).
pub fn expand_words(
    word: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    Expander::new(escape).expand(word, vars).map(|e| e.words)
}

/// Expands one word and also reports which variables it referenced (see [`Expansion`]).
pub fn expand_word_tracked(
    word: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Expansion, ExpandError> {
    Expander::new(escape).expand(word, vars)
}

/// The variables `word` references, whatever their values (expansion with nothing set; the
/// tests).
#[cfg(test)]
pub fn referenced_vars(word: &str, escape: char) -> Result<BTreeSet<String>, ExpandError> {
    let mut opts = Expander::new(escape);
    opts.skip_unset = true;
    opts.expand(word, &|_| None).map(|e| e.referenced())
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// BuildKit's `wordsStruct`: splits on unquoted whitespace.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        for ch in s.chars() {
            self.add_char(ch);
        }
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct ShellWord<'a> {
    opts: Expander,
    src: &'a str,
    pos: usize,
    vars: &'a dyn Fn(&str) -> Option<String>,
    raw_escapes: bool,
    depth: usize,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

type Kind = ExpandErrorKind;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek()?;
        self.pos += ch.len_utf8();
        Some(ch)
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match (self.vars)(name) {
            Some(v) => {
                if !self.matched.contains(name) {
                    self.matched.insert(name.to_string());
                }
                Some(v)
            }
            None => {
                if !self.unmatched.contains(name) {
                    self.unmatched.insert(name.to_string());
                }
                None
            }
        }
    }

    /// Processes up to `stop` (consumed) or the end of the input when `stop` is `None`.
    fn process_stop_on(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
        want_words: bool,
    ) -> Result<(String, Vec<String>), Kind> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Kind::TooDeep);
        }
        let saved_raw = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_stop_on_inner(stop, want_words);
        self.raw_escapes = saved_raw;
        self.depth -= 1;
        r
    }

    fn process_stop_on_inner(
        &mut self,
        stop: Option<char>,
        want_words: bool,
    ) -> Result<(String, Vec<String>), Kind> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.next();
                return Ok((result, if want_words { words.finish() } else { Vec::new() }));
            }
            match ch {
                '$' => {
                    let tmp = self.process_dollar()?;
                    result.push_str(&tmp);
                    if want_words {
                        words.add_string(&tmp);
                    }
                }
                '\'' => {
                    let tmp = self.process_single_quote()?;
                    result.push_str(&tmp);
                    if want_words {
                        words.add_raw_string(&tmp);
                    }
                }
                '"' => {
                    let tmp = self.process_double_quote()?;
                    result.push_str(&tmp);
                    if want_words {
                        words.add_raw_string(&tmp);
                    }
                }
                '<' => {
                    let tmp = self.process_possible_heredoc();
                    result.push_str(&tmp);
                    if want_words {
                        words.add_raw_string(&tmp);
                    }
                }
                _ => {
                    self.next();
                    if ch == self.opts.escape {
                        if self.raw_escapes {
                            if want_words {
                                words.add_raw_char(ch);
                            }
                            result.push(ch);
                        }
                        let Some(escaped) = self.next() else { break };
                        if want_words {
                            words.add_raw_char(escaped);
                        }
                        result.push(escaped);
                    } else {
                        if want_words {
                            words.add_char(ch);
                        }
                        result.push(ch);
                    }
                }
            }
        }
        if stop.is_some() {
            // Only `}` and `/` are ever asked for; callers turn this into their message.
            return Err(Kind::MissingBrace);
        }
        Ok((result, if want_words { words.finish() } else { Vec::new() }))
    }

    fn process_single_quote(&mut self) -> Result<String, Kind> {
        let mut result = String::new();
        let open = self.next();
        if self.opts.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.next() {
                None => return Err(Kind::Unterminated("single-quote")),
                Some('\'') => {
                    if self.opts.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(ch) => result.push(ch),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, Kind> {
        let mut result = String::new();
        let open = self.next();
        if self.opts.raw_quotes {
            result.extend(open);
        }
        loop {
            match self.peek() {
                None => return Err(Kind::Unterminated("double-quote")),
                Some('"') => {
                    self.next();
                    if self.opts.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    result.push_str(&v);
                }
                Some(_) => {
                    let Some(mut ch) = self.next() else { continue };
                    if ch == self.opts.escape {
                        if self.raw_escapes {
                            result.push(ch);
                        }
                        match self.peek() {
                            // A trailing escape: the quote is unterminated anyway.
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.opts.escape => {
                                self.next();
                                ch = c;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_possible_heredoc(&mut self) -> String {
        self.next();
        if self.peek() != Some('<') {
            return "<".to_string();
        }
        self.next();
        let mut result = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            self.next();
            result.push(c);
        }
        result
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && is_special_param(ch) {
                self.next();
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        name
    }

    /// BuildKit reports any error inside `${...}` that ran to the end of the input as the
    /// missing delimiter.
    fn at_eof(&self, e: Kind, missing: Kind) -> Kind {
        if self.peek().is_none() && e != Kind::TooDeep { missing } else { e }
    }

    fn process_dollar(&mut self) -> Result<String, Kind> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".to_string());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next();
        match self.peek() {
            None => return Err(Kind::MissingBrace),
            Some('{' | '}' | ':') => return Err(Kind::BadSubstitution),
            Some(_) => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else { return Err(Kind::MissingBrace) };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.opts.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if ch == ':' {
                    null_is_unset = true;
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            chs.push(c);
                        }
                        None => return Err(Kind::MissingBrace),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(Kind::UnsupportedModifier(chs));
                }
                let (word, _) = self
                    .process_stop_on(Some('}'), raw, false)
                    .map_err(|e| self.at_eof(e, Kind::MissingBrace))?;
                let value = self.get_env(&name);
                if self.opts.skip_unset && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let set = value.is_some();
                let value = value.unwrap_or_default();
                match ch {
                    '-' => Ok(if !set || (null_is_unset && value.is_empty()) { word } else { value }),
                    '+' => Ok(if !set || (null_is_unset && value.is_empty()) { String::new() } else { word }),
                    '?' => {
                        if !set {
                            let message =
                                if word.is_empty() { "is not allowed to be unset".to_string() } else { word };
                            return Err(Kind::Required { name, message });
                        }
                        if null_is_unset && value.is_empty() {
                            let message =
                                if word.is_empty() { "is not allowed to be empty".to_string() } else { word };
                            return Err(Kind::Required { name, message });
                        }
                        Ok(value)
                    }
                    '%' | '#' => {
                        let (greedy, pattern) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest),
                            None => (false, word.as_str()),
                        };
                        let tokens = compile_pattern(pattern)?;
                        check_work(&tokens, &value, pattern)?;
                        if ch == '%' {
                            Ok(trim_suffix(&tokens, &value, greedy))
                        } else {
                            Ok(trim_prefix(&tokens, &value, greedy))
                        }
                    }
                    _ => Err(Kind::UnsupportedModifier(chs)),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.next();
                }
                let (pattern, _) = self
                    .process_stop_on(Some('/'), true, false)
                    .map_err(|e| self.at_eof(e, Kind::MissingSlash))?;
                let (replacement, _) = self
                    .process_stop_on(Some('}'), true, false)
                    .map_err(|e| self.at_eof(e, Kind::MissingBrace))?;
                let value = self.get_env(&name);
                let Some(value) = value else {
                    if self.opts.skip_unset {
                        return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
                    }
                    return replace_in("", &pattern, &replacement, replace_all);
                };
                replace_in(&value, &pattern, &replacement, replace_all)
            }
            _ => Err(Kind::UnsupportedModifier(chs)),
        }
    }
}

fn is_special_param(ch: char) -> bool {
    matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0')
}

// ---------------------------------------------------------------------------------------------
// Shell patterns, matched as BuildKit's regular expressions match them: `*` is `.*` (greedy) or
// `.*?` (lazy), `?` is `.`, neither matches `\n`, and the leftmost match with Perl's preference
// order wins. A small Pike VM keeps that linear in the pattern times the text.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Lit(char),
    Any,
    Star,
}

fn compile_pattern(pattern: &str) -> Result<Vec<Tok>, Kind> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => match chars.peek().copied() {
                // `}` and `/` are escaped in `${}` but the escape is not part of the pattern.
                Some('}' | '/') => {}
                Some(e @ ('*' | '?' | '\\')) => {
                    chars.next();
                    out.push(Tok::Lit(e));
                }
                other => {
                    let shown = other.map(String::from).unwrap_or_default();
                    return Err(Kind::InvalidPattern {
                        pattern: pattern.to_string(),
                        reason: format!("invalid escape '\\{shown}'"),
                    });
                }
            },
            c => out.push(Tok::Lit(c)),
        }
    }
    Ok(out)
}

/// Leftmost-first match of `toks` in `text` starting the search at byte `from`; `anchored`
/// only tries a match starting at `from`. Returns byte offsets.
fn find(toks: &[Tok], text: &str, from: usize, greedy: bool, anchored: bool) -> Option<(usize, usize)> {
    let n = toks.len();
    // marks[pc] == generation when pc is already in the list being built.
    let mut marks = vec![usize::MAX; n + 1];
    let mut clist: Vec<(usize, usize)> = Vec::new();
    let mut nlist: Vec<(usize, usize)> = Vec::new();
    let mut best: Option<(usize, usize)> = None;

    // Adds the thread at `pc` (start `start`) and what it reaches without consuming, in
    // priority order.
    let add = |list: &mut Vec<(usize, usize)>,
               marks: &mut Vec<usize>,
               generation: usize,
               pc: usize,
               start: usize| {
        // Stars from pc up to the first non-star.
        let mut end = pc;
        while end < n && toks[end] == Tok::Star {
            end += 1;
        }
        let mut push = |p: usize| {
            if marks[p] != generation {
                marks[p] = generation;
                list.push((p, start));
            }
        };
        if greedy {
            for p in pc..=end {
                push(p);
            }
        } else {
            push(end);
            for p in (pc..end).rev() {
                push(p);
            }
        }
    };

    let mut pos = from;
    let mut generation = 0usize;
    add(&mut clist, &mut marks, generation, 0, pos);
    loop {
        let ch = text[pos..].chars().next();
        generation += 1;
        nlist.clear();
        for &(pc, start) in clist.iter() {
            if pc == n {
                best = Some((start, pos));
                // Lower-priority threads can't win any more.
                break;
            }
            let Some(c) = ch else { continue };
            match toks[pc] {
                Tok::Star => {
                    if c != '\n' {
                        add(&mut nlist, &mut marks, generation, pc, start);
                    }
                }
                Tok::Any => {
                    if c != '\n' {
                        add(&mut nlist, &mut marks, generation, pc + 1, start);
                    }
                }
                Tok::Lit(l) => {
                    if l == c {
                        add(&mut nlist, &mut marks, generation, pc + 1, start);
                    }
                }
            }
        }
        let Some(c) = ch else { break };
        pos += c.len_utf8();
        std::mem::swap(&mut clist, &mut nlist);
        if best.is_none() && !anchored {
            add(&mut clist, &mut marks, generation, 0, pos);
        }
        if clist.is_empty() {
            break;
        }
    }
    best
}

/// Matching costs the pattern's length times the value's: refuse what would take seconds.
const MAX_MATCH_WORK: usize = 1 << 28;

fn check_work(toks: &[Tok], value: &str, pattern: &str) -> Result<(), Kind> {
    if toks.len().saturating_mul(value.len()) > MAX_MATCH_WORK {
        return Err(Kind::InvalidPattern {
            pattern: truncate(pattern, 100),
            reason: format!(
                "pattern of {} characters too large for a value of {} bytes",
                toks.len(),
                value.len()
            ),
        });
    }
    Ok(())
}

fn trim_prefix(toks: &[Tok], value: &str, greedy: bool) -> String {
    match find(toks, value, 0, greedy, true) {
        Some((_, end)) => value[end..].to_string(),
        None => value.to_string(),
    }
}

fn trim_suffix(toks: &[Tok], value: &str, greedy: bool) -> String {
    // Shortest or longest rightmost match: reverse both and match leftmost.
    let rtoks: Vec<Tok> = toks.iter().rev().copied().collect();
    let rvalue: String = value.chars().rev().collect();
    let trimmed = trim_prefix(&rtoks, &rvalue, greedy);
    trimmed.chars().rev().collect()
}

fn replace_in(value: &str, pattern: &str, replacement: &str, all: bool) -> Result<String, Kind> {
    let toks = compile_pattern(pattern)?;
    check_work(&toks, value, pattern)?;
    if !all {
        return Ok(match find(&toks, value, 0, true, false) {
            Some((s, e)) => format!("{}{}{}", &value[..s], replacement, &value[e..]),
            None => value.to_string(),
        });
    }
    // Go's ReplaceAllString: successive non-overlapping matches, an empty match right after a
    // match is not replaced, and the replacement is a template (`$0`, `$$`).
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some((s, e)) = find(&toks, value, search, true, false) else { break };
        out.push_str(&value[last_end..s]);
        if e > last_end || s == 0 {
            expand_template(&mut out, replacement, &value[s..e]);
        }
        last_end = e;
        let width = value[search..].chars().next().map_or(0, char::len_utf8);
        if search + width > e {
            search += width;
        } else if search + 1 > e {
            search += 1;
        } else {
            search = e;
        }
        if width == 0 && search > value.len() {
            break;
        }
    }
    out.push_str(&value[last_end.min(value.len())..]);
    Ok(out)
}

/// Go's `Regexp.Expand` for a regexp without groups: `$$` is `$`, `$0` / `${0}` the match,
/// any other `$name` / `${name}` empty, a `$` not followed by a name literal.
fn expand_template(out: &mut String, template: &str, matched: &str) {
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
            continue;
        }
        let is_name = |c: char| c.is_alphanumeric() || c == '_';
        let (name, after) = if let Some(r) = rest.strip_prefix('{') {
            match r.find('}') {
                Some(j) if j > 0 && r[..j].chars().all(is_name) => (&r[..j], &r[j + 1..]),
                _ => {
                    out.push('$');
                    continue;
                }
            }
        } else {
            let j = rest.find(|c: char| !is_name(c)).unwrap_or(rest.len());
            if j == 0 {
                out.push('$');
                continue;
            }
            (&rest[..j], &rest[j..])
        };
        if name == "0" {
            out.push_str(matched);
        }
        rest = after;
    }
    out.push_str(rest);
}

#[cfg(test)]
#[path = "expand_tests.rs"]
mod tests;
