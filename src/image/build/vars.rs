//! The builder's side of word expansion: the variables a stage sees (ENV over ARG, as BuildKit
//! resolves them) and one function, [`expand`], that every instruction's words go through, so
//! that the expander behind it is in one place.

use std::collections::{BTreeMap, BTreeSet};

/// A word that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(transparent)]
pub struct ExpandError(#[from] pub super::expand::ExpandError);

/// Expands `word` with `vars` (BuildKit's rules, by the frontend's [`super::expand`]); returns
/// the text and the names it referenced.
pub fn expand(
    word: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<(String, BTreeSet<String>), ExpandError> {
    let e = super::expand::expand_word_tracked(word, &|k| vars.get(k).cloned(), escape)
        .map_err(ExpandError)?;
    let used = e.referenced();
    Ok((e.result, used))
}

/// Expands `word` and splits it on unquoted whitespace (`EXPOSE`).
pub fn expand_split(
    word: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    super::expand::expand_words(word, &|k| vars.get(k).cloned(), escape)
        .map_err(ExpandError)
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
