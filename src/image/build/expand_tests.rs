use std::collections::HashMap;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn word(w: &str, vars: &HashMap<String, String>) -> Result<String, ExpandError> {
    expand_word(w, &|k| vars.get(k).cloned(), '\\')
}

fn words(w: &str, vars: &HashMap<String, String>) -> Vec<String> {
    expand_words(w, &|k| vars.get(k).cloned(), '\\').unwrap()
}

#[test]
fn quotes_and_escapes() {
    let v = env(&[("PWD", "/home")]);
    let ok = |w: &str, want: &str| assert_eq!(word(w, &v).unwrap(), want, "{w}");
    ok("hello", "hello");
    ok("he'll'o", "hello");
    ok("he\\'llo", "he'llo");
    ok("abc\\tdef", "abctdef");
    ok("\"abc\\tdef\"", "abc\\tdef");
    ok("\"abc\\\\tdef\"", "abc\\tdef");
    ok("'abc\\tdef'", "abc\\tdef");
    ok("hello\\", "hello");
    ok("hello\\\\", "hello\\");
    ok("\"hel'lo\"", "hel'lo");
    ok("'hello\\'", "hello\\");
    ok("\"''\"", "''");
    ok("$.", "$.");
    ok("he$1x", "hex");
    ok("he$.x", "he$.x");
    ok("he$pwd.", "he.");
    ok("he$PWD", "he/home");
    ok("he\\$PWD", "he$PWD");
    ok("he\\\\$PWD", "he\\/home");
    ok("\"he\\$PWD\"", "he$PWD");
    ok("\\${}", "${}");
    ok("'$PWD'", "$PWD");
    ok("\"he'$PWD'\"", "he'/home'");
    ok("안'녕'하세요", "안녕하세요");
    for bad in ["he'llo", "he\\\\'llo", "\"hello", "\"hello\\\"", "'hello", "${}", "he${}xx", "he${.}"] {
        assert!(word(bad, &v).is_err(), "{bad} should fail");
    }
}

#[test]
fn parameter_operators() {
    let v = env(&[("PWD", "/home"), ("SHELL", "bash"), ("NULL", "")]);
    let ok = |w: &str, want: &str| assert_eq!(word(w, &v).unwrap(), want, "{w}");
    ok("he${hi}xx", "hexx");
    ok("he${PWD}", "he/home");
    ok("he${XXX:-000}xx", "he000xx");
    ok("he${PWD:-000}xx", "he/homexx");
    ok("he${XXX:-$PWD}xx", "he/homexx");
    ok("he${XXX:-${PWD:-yyy}}xx", "he/homexx");
    ok("he${XXX:-${YYY:-yyy}}xx", "heyyyxx");
    ok("he${PWD?}", "he/home");
    ok("he${NULL?}", "he");
    ok("he${XXX:+${PWD}}xx", "hexx");
    ok("he${PWD:+${SHELL}}xx", "hebashxx");
    ok("he${PWD:+${PWD}:}xx", "he/home:xx");
    ok("he${XXX:-\\$PWD:}xx", "he$PWD:xx");
    ok("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx");
    ok("${aaa}}", "}");
    ok("${aaa:-bbb}}", "bbb}");
    ok("${aaa:-bbb {foo}", "bbb {foo");
    ok("${NULL-x}", "");
    ok("${NULL:-x}", "x");
    ok("${NULL+x}", "x");
    ok("${NULL:+x}", "");
    ok("${1:-bbb}", "bbb");
    ok("$999aaa", "aaa");
    ok("$@@@", "@@");
    ok("${#:-bbb}", "bbb");
    ok("${A:-\"q u\"}", "q u");
    for bad in [
        "he${XXX:YYY}",
        "he${XXX?}",
        "he${XXX:?}",
        "he${NULL:?}",
        "he${PWD",
        "he${PWD:=000}xx",
        "${{aaa}",
        "${aaa",
        "${aaa:-bbb",
        "${aaa:-bbb ${foo}",
        "${:}",
        "${:-bbb}",
        "${PWD:#x}",
        "${PWD:%%x}",
    ] {
        assert!(word(bad, &v).is_err(), "{bad} should fail");
    }
    let e = word("${XXX:?is required}", &v).unwrap_err();
    assert_eq!(e.kind, ExpandErrorKind::Required { name: "XXX".into(), message: "is required".into() });
    assert!(e.to_string().contains("XXX: is required"), "{e}");
    let e = word("${NULL:?}", &v).unwrap_err();
    assert!(e.to_string().ends_with("NULL: is not allowed to be empty"), "{e}");
    assert_eq!(word("${A:-x", &v).unwrap_err().kind, ExpandErrorKind::MissingBrace);
}

#[test]
fn pattern_operators() {
    let v = env(&[("FOO", "xxyy"), ("BAR", "x"), ("P", "/a/b/c.tar.gz"), ("NL", "ab\ncd")]);
    let ok = |w: &str, want: &str| assert_eq!(word(w, &v).unwrap(), want, "{w}");
    ok("${FOO#*x*y}", "y");
    ok("${FOO#*}", "xxyy");
    ok("${FOO#$BAR}", "xyy");
    ok("${FOO#}", "xxyy");
    ok("${FOO##*x}", "yy");
    ok("${FOO##}", "xxyy");
    ok("${FOO%y}", "xxy");
    ok("${FOO%%y*}", "xx");
    ok("${FOO%x}", "xxyy");
    ok("${P##*/}", "c.tar.gz");
    ok("${P#*/}", "a/b/c.tar.gz");
    ok("${P%.*}", "/a/b/c.tar");
    ok("${P%%.*}", "/a/b/c");
    ok("${P%/*}", "/a/b");
    ok("${P#/?/}", "b/c.tar.gz");
    // Brackets are literal, as in BuildKit.
    ok("${FOO#[x]}", "xxyy");
    // `*` and `?` do not cross newlines.
    ok("${NL#*}", "ab\ncd");
    ok("${NL##*}", "\ncd");
    ok("${NL%%*}", "ab\n");
    ok("${UNSET#x}", "");
    assert!(word("${FOO#\\a}", &v).is_err());
}

#[test]
fn pattern_escapes() {
    let v = env(&[("FOO", "()[]{}^$.*?|\\x"), ("S", "**a*"), ("Q", "??y")]);
    assert_eq!(word("${FOO#()[]{\\}^$.\\*\\?|\\\\}", &v).unwrap(), "x");
    assert_eq!(word("${S%%\\**}", &v).unwrap(), "");
    assert_eq!(word("${S#\\*}", &v).unwrap(), "*a*");
    assert_eq!(word("${Q#?\\?}", &v).unwrap(), "y");
}

#[test]
fn replace_operators() {
    let v = env(&[
        ("FOO", "/tmp/foo.txt"),
        ("F2", "/foo/bar/c.txt"),
        ("NEEDLE", "/*/"),
        ("R", "/tmp/bar.txt"),
        ("X", "xxyy"),
    ]);
    let ok = |w: &str, want: &str| assert_eq!(word(w, &v).unwrap(), want, "{w}");
    ok("${FOO/o/0}", "/tmp/f0o.txt");
    ok("${FOO//o/0}", "/tmp/f00.txt");
    ok("${FOO//\\//\\/}", "\\/tmp\\/foo.txt");
    ok("${F2/$NEEDLE/.}", ".c.txt");
    ok("${R/\\/tmp/}", "/bar.txt");
    ok("${X/x/}", "xyy");
    ok("${X//x/}", "yy");
    ok("${X/?y/-}", "x-y");
    ok("${X//y*/Z}", "xxZ");
    ok("${UNSET/a/b}", "");
    // An empty pattern matches at every position: Go's replace-all semantics.
    ok("${X///-}", "-x-x-y-y-");
    ok("${X//*/[$0]}", "[]");
    // A `$` that survives the shell lexing is Go's template syntax.
    ok("${X//*/['$0']}", "[xxyy]");
    ok("${X//*/'$$'}", "$");
    assert_eq!(word("${X/x", &v).unwrap_err().kind, ExpandErrorKind::MissingSlash);
    assert_eq!(word("${X/x/y", &v).unwrap_err().kind, ExpandErrorKind::MissingBrace);
}

#[test]
fn word_splitting() {
    let v = env(&[("space", "abc  def"), ("leading", "  ab c"), ("trailing", "ab c   ")]);
    let w = |s: &str| words(s, &v);
    assert_eq!(w("hello"), ["hello"]);
    assert_eq!(w("hello${space}bye"), ["helloabc", "defbye"]);
    assert_eq!(w("hello\"${space}\"bye"), ["helloabc  defbye"]);
    assert_eq!(w("hello \"${space}\"bye"), ["hello", "abc  defbye"]);
    assert_eq!(w("hello${leading}def"), ["hello", "ab", "cdef"]);
    assert_eq!(w("hello\"${leading}\" def"), ["hello  ab c", "def"]);
    assert_eq!(w("hello${trailing}d"), ["helloab", "c", "d"]);
    assert_eq!(w("hello\" there  \""), ["hello there  "]);
    assert_eq!(w("hello there     "), ["hello", "there"]);
    assert_eq!(w("hello\\ there"), ["hello there"]);
    assert_eq!(w("hello\\\" there"), ["hello\"", "there"]);
    assert_eq!(w("80/tcp  ${UNSET} 443"), ["80/tcp", "443"]);
    assert_eq!(w("a \"\" b"), ["a", "b"]);
    assert_eq!(w("ab${UNSET:-x}cd"), ["abxcd"]);
    assert!(expand_words("hello\" there", &|_| None, '\\').is_err());
}

#[test]
fn backtick_escape() {
    let v = env(&[("D", "c:\\dir")]);
    let w = |s: &str| expand_word(s, &|k| v.get(k).cloned(), '`').unwrap();
    assert_eq!(w("c:\\windows\\system32"), "c:\\windows\\system32");
    assert_eq!(w("a` b"), "a b");
    assert_eq!(w("`$D"), "$D");
    assert_eq!(w("$D\\x"), "c:\\dir\\x");
    assert_eq!(w("\"`\"q\""), "\"q");
}

#[test]
fn tracks_referenced_variables() {
    let v = env(&[("VERSION", "v1"), ("TARGETOS", "linux"), ("TARGETARCH", "arm"), ("TARGETVARIANT", "v7")]);
    let w = "something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz";
    let e = expand_word_tracked(w, &|k| v.get(k).cloned(), '\\').unwrap();
    assert_eq!(e.result, "something-v1.linux-arm-v7.tar.gz");
    assert_eq!(e.matched.len(), 4);
    assert!(e.unmatched.is_empty());

    let e = expand_word_tracked("x ${UNUSED} $FOO '$NOT' \"$DQ\"", &|_| None, '\\').unwrap();
    assert_eq!(e.result, "x   $NOT ");
    assert!(e.matched.is_empty());
    assert_eq!(e.unmatched.into_iter().collect::<Vec<_>>(), ["DQ", "FOO", "UNUSED"]);

    let r = referenced_vars("${A:-$B} ${C/x/$D} \\$E", '\\').unwrap();
    assert_eq!(r.into_iter().collect::<Vec<_>>(), ["A", "B", "C", "D"]);
}

#[test]
fn skip_unset_keeps_references() {
    let mut x = Expander::new('\\');
    x.skip_unset = true;
    let e = x.expand("$A ${B} ${C:-d} ${E/f/g}", &|_| None).unwrap();
    assert_eq!(e.result, "$A ${B} ${C:-d} ${E/f/g}");
}

#[test]
fn depth_limit() {
    let depth = 50_000;
    let mut w = String::new();
    for _ in 0..depth {
        w.push_str("${A:-");
    }
    w.push('x');
    for _ in 0..depth {
        w.push('}');
    }
    let e = word(&w, &HashMap::new()).unwrap_err();
    assert_eq!(e.kind, ExpandErrorKind::TooDeep);
    assert!(e.to_string().len() < 400);

    let mut ok = String::new();
    for _ in 0..100 {
        ok.push_str("${A:-");
    }
    ok.push('x');
    for _ in 0..100 {
        ok.push('}');
    }
    assert_eq!(word(&ok, &HashMap::new()).unwrap(), "x");

    // Quotes inside braces inside quotes.
    let mut q = String::new();
    for _ in 0..10_000 {
        q.push_str("\"${A:-");
    }
    assert!(word(&q, &HashMap::new()).is_err());
}

#[test]
fn big_pattern_inputs_are_linear() {
    let long = "a".repeat(100_000);
    let v = env(&[("L", &long)]);
    let start = std::time::Instant::now();
    assert_eq!(word("${L%%*a}", &v).unwrap(), "");
    assert_eq!(word("${L#*b}", &v).unwrap(), long);
    assert_eq!(word("${L//a/b}", &v).unwrap().len(), 100_000);
    assert_eq!(word("${L/*b/}", &v).unwrap(), long);
    assert!(start.elapsed().as_secs() < 10);
}
