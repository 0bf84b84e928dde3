//! The builder's side of word expansion: the variables a stage sees (ENV over ARG, as BuildKit
//! resolves them) and one function, [`expand`], that every instruction's words go through, so
//! that the expander behind it is in one place.

use std::collections::{BTreeMap, BTreeSet};

/// A word that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpandError(pub String);

/// Expands `word` (quotes removed, `$VAR`, `${VAR}`, `${VAR:-x}`, `${VAR:+x}`, `${VAR-x}`,
/// `${VAR+x}`, `${VAR:?msg}`) with `vars`; returns the text and the names it looked up.
pub fn expand(
    word: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<(String, BTreeSet<String>), ExpandError> {
    let mut used = BTreeSet::new();
    let out = lex(word, vars, escape, &mut used, false)?;
    Ok((out, used))
}

/// Expands several words; the names used by any of them.
pub fn expand_all(
    words: &[String],
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<(Vec<String>, BTreeSet<String>), ExpandError> {
    let mut used = BTreeSet::new();
    let mut out = Vec::with_capacity(words.len());
    for w in words {
        let (s, u) = expand(w, vars, escape)?;
        used.extend(u);
        out.push(s);
    }
    Ok((out, used))
}

fn lex(
    word: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
    used: &mut BTreeSet<String>,
    in_default: bool,
) -> Result<String, ExpandError> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => out.push(c),
            (Some('"'), '"') => quote = None,
            (None, '\'') | (None, '"') if !in_default => quote = Some(c),
            (q, e) if e == escape && i + 1 < chars.len() => {
                let next = chars[i + 1];
                // Inside double quotes only a few characters are escapable, as in a shell.
                if q == Some('"') && !matches!(next, '"' | '$' | '`') && next != escape {
                    out.push(e);
                }
                out.push(next);
                i += 1;
            }
            (_, '$') => {
                let (text, next) = variable(&chars, i + 1, vars, escape, used)?;
                out.push_str(&text);
                i = next;
                continue;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    if quote.is_some() {
        return Err(ExpandError(format!(
            "unexpected end of statement while looking for matching {}",
            quote.unwrap_or('"')
        )));
    }
    Ok(out)
}

fn variable(
    chars: &[char],
    start: usize,
    vars: &BTreeMap<String, String>,
    escape: char,
    used: &mut BTreeSet<String>,
) -> Result<(String, usize), ExpandError> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(start) {
        Some('{') => {
            let mut j = start + 1;
            while j < chars.len() && is_name(chars[j]) {
                j += 1;
            }
            let name: String = chars[start + 1..j].iter().collect();
            if name.is_empty() {
                return Err(ExpandError("bad substitution: missing variable name".into()));
            }
            // The rest up to the matching brace.
            let mut depth = 1;
            let mut k = j;
            while k < chars.len() {
                match chars[k] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            if k >= chars.len() {
                return Err(ExpandError(format!("missing '}}' after ${{{name}")));
            }
            let modifier: String = chars[j..k].iter().collect();
            used.insert(name.clone());
            let value = vars.get(&name);
            let text = if modifier.is_empty() {
                value.cloned().unwrap_or_default()
            } else {
                let (op, rest) = if let Some(r) = modifier.strip_prefix(":-") {
                    (":-", r)
                } else if let Some(r) = modifier.strip_prefix(":+") {
                    (":+", r)
                } else if let Some(r) = modifier.strip_prefix(":?") {
                    (":?", r)
                } else if let Some(r) = modifier.strip_prefix('-') {
                    ("-", r)
                } else if let Some(r) = modifier.strip_prefix('+') {
                    ("+", r)
                } else {
                    return Err(ExpandError(format!("unsupported modifier ({modifier}) in substitution")));
                };
                let set = value.is_some();
                let nonempty = value.is_some_and(|v| !v.is_empty());
                let mut alt = || lex(rest, vars, escape, used, true);
                match op {
                    ":-" if !nonempty => alt()?,
                    "-" if !set => alt()?,
                    ":+" if nonempty => alt()?,
                    "+" if set => alt()?,
                    ":+" | "+" => String::new(),
                    ":?" if !nonempty => return Err(ExpandError(format!("{name}: {rest}"))),
                    _ => value.cloned().unwrap_or_default(),
                }
            };
            Ok((text, k + 1))
        }
        Some(c) if is_name(*c) => {
            let mut j = start;
            while j < chars.len() && is_name(chars[j]) {
                j += 1;
            }
            let name: String = chars[start..j].iter().collect();
            used.insert(name.clone());
            Ok((vars.get(&name).cloned().unwrap_or_default(), j))
        }
        _ => Ok(("$".into(), start)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_a_shell_word() {
        let vars: BTreeMap<String, String> =
            [("A".to_string(), "1".to_string()), ("E".to_string(), String::new())].into();
        let e = |w: &str| expand(w, &vars, '\\').unwrap().0;
        assert_eq!(e("$A/${A}x"), "1/1x");
        assert_eq!(e("'$A'\"$A\""), "$A1");
        assert_eq!(e("${B:-d$A}${E:-e}${E-f}${A:+p}"), "d1ep");
        assert_eq!(e("\\$A"), "$A");
        assert_eq!(expand("${A} $B", &vars, '\\').unwrap().1, ["A".to_string(), "B".to_string()].into());
        assert!(expand("${B:?needed}", &vars, '\\').is_err());
        assert!(expand("'open", &vars, '\\').is_err());
    }
}
