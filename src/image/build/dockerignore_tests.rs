use super::*;

fn ig(text: &str) -> Ignore {
    Ignore::parse(text).unwrap()
}

#[track_caller]
fn check(text: &str, ignored: &[&str], kept: &[&str]) {
    let i = ig(text);
    for p in ignored {
        assert!(i.matches(p), "{p:?} should be ignored by {text:?}");
    }
    for p in kept {
        assert!(!i.matches(p), "{p:?} should be kept with {text:?}");
    }
}

#[test]
fn reading_the_file() {
    let i = ig(
        "\u{feff}# comment\n  # not a comment\n\n  *.o  \n!  keep.o\n/abs/path\n./a/../b/./c/\n//x//y//\r\n",
    );
    assert_eq!(i.patterns(), ["# not a comment", "*.o", "!keep.o", "abs/path", "b/c", "x/y"]);
    assert!(ig("").is_empty());
    assert!(ig("# only\n\n").is_empty());
    assert!(Ignore::parse("!\n").is_err());
    assert!(Ignore::parse("  !  \n").is_err());
    let e = Ignore::parse("ok\n[abc\n").unwrap_err();
    assert!(e.to_string().contains("syntax error in pattern"), "{e}");
    assert!(Ignore::parse("a\\\n").is_err());
    assert!(Ignore::parse("[]a]\n").is_err());
    assert!(Ignore::parse("[a-]\n").is_err());
}

#[test]
fn basic_globs() {
    check("*.md\n", &["README.md", "a.md"], &["docs/a.md", "a.mdx", "md"]);
    check("*/*.md\n", &["docs/a.md"], &["a.md", "x/docs/a.md"]);
    check("temp?\n", &["temp1", "tempA"], &["temp", "temp12", "temp/"]);
    check("[a-c]*.txt\n", &["a.txt", "c1.txt"], &["d.txt"]);
    check("[^a]*.txt\n", &["b.txt"], &["a.txt"]);
    check("\\*.txt\n", &["*.txt"], &["a.txt"]);
    check("a.b+(c)|{d}$\n", &["a.b+(c)|{d}$"], &["axb+(c)|{d}$"]);
    check("/bin\n", &["bin", "bin/x"], &["src/bin"]);
}

#[test]
fn directories_exclude_their_contents() {
    check("node_modules\n", &["node_modules", "node_modules/a/b.js"], &["src/node_modules", "node_modules2"]);
    check("a/b\n", &["a/b", "a/b/c/d"], &["a", "a/bc", "x/a/b"]);
    check("*\n", &["a", "a/b/c", ".git"], &[]);
}

#[test]
fn double_star() {
    check("**/*.go\n", &["a.go", "x/a.go", "x/y/z.go"], &["a.go.txt", "x/a.gox"]);
    check("**/foo\n", &["foo", "a/foo", "a/b/foo", "foo/bar"], &["afoo", "foo2"]);
    check("a/**/b\n", &["a/b", "a/x/b", "a/x/y/b", "a/b/c"], &["ab", "a/xb", "b"]);
    check("a/**\n", &["a/x", "a/x/y"], &["a", "ab"]);
    check("**\n", &["a", "a/b"], &[]);
    check("**.log\n", &["x.log", "a/b.log", "dir.log/x"], &["alog", "a.log.1"]);
    check("a**b\n", &["ab", "a/x/b"], &["axb", "b"]);
}

#[test]
fn exceptions() {
    // The documented example: all markdown files but README.md.
    check("*.md\n!README.md\n", &["CHANGES.md"], &["README.md", "main.go"]);
    // Last match wins.
    check("*.md\n!README*.md\nREADME-secret.md\n", &["README-secret.md", "x.md"], &["README.md"]);
    check("!README.md\n*.md\n", &["README.md"], &[]);
    // Re-including something inside an excluded directory.
    check("docs\n!docs/keep\n", &["docs", "docs/a", "docs/sub/x"], &["docs/keep", "docs/keep/inner.txt"]);
    check("**\n!src/**/*.go\n", &["Makefile", "src/a.txt"], &["src/main.go", "src/x/y.go"]);
    check("*\n!go.mod\n!cmd\n", &["a", "b/c"], &["go.mod", "cmd", "cmd/x/main.go"]);
}

#[test]
fn walk_semantics() {
    // A walk evaluates parents first (fsutil): `!a` came too early to apply to `a/b`.
    let i = ig("a/b\n!a\n");
    assert!(i.matches("a/b"));
    assert!(i.matches("a/b/c"));
    assert!(!i.matches("a"));
    assert!(!i.matches("a/c"));
    // The step API gives the same answers.
    let (m_a, info_a) = i.matches_with_parent("a", &MatchInfo::default());
    let (m_ab, info_ab) = i.matches_with_parent("a/b", &info_a);
    let (m_abc, _) = i.matches_with_parent("a/b/c", &info_ab);
    assert_eq!((m_a, m_ab, m_abc), (false, true, true));
    // Without parent information the parents are checked directly.
    assert!(ig("a\n").matches_with_parent("a/b/c", &MatchInfo::default()).0);
    // Paths are cleaned; the root is never ignored.
    assert!(ig("a/b\n").matches("./a//b/"));
    assert!(ig("a/b\n").matches("/a/b"));
    assert!(!ig("*\n").matches("."));
    assert!(!ig("*\n").matches(""));
}

#[test]
fn from_patterns_like_copy_exclude() {
    let i = Ignore::from_patterns(["*.txt", "!keep.txt", "/abs"]).unwrap();
    assert!(i.matches("a.txt"));
    assert!(!i.matches("keep.txt"));
    // --exclude patterns are not made relative (BuildKit passes them through).
    assert!(!i.matches("abs"));
    assert!(Ignore::from_patterns(["!"]).is_err());
}

#[test]
fn load_for_prefers_the_dockerfile_specific_file() {
    let dir = tempfile::tempdir().unwrap();
    let ctx = dir.path();
    assert!(load_for(ctx, &ctx.join("Dockerfile")).unwrap().is_empty());
    std::fs::write(ctx.join(".dockerignore"), "general\n").unwrap();
    assert_eq!(load_for(ctx, &ctx.join("Dockerfile")).unwrap().patterns(), ["general"]);
    std::fs::create_dir(ctx.join("build")).unwrap();
    std::fs::write(ctx.join("build/dev.Dockerfile.dockerignore"), "specific\n").unwrap();
    assert_eq!(load_for(ctx, &ctx.join("build/dev.Dockerfile")).unwrap().patterns(), ["specific"]);
    assert_eq!(load_for(ctx, &ctx.join("build/other.Dockerfile")).unwrap().patterns(), ["general"]);
    std::fs::write(ctx.join("Dockerfile.dockerignore"), "mine\n").unwrap();
    assert_eq!(load_for(ctx, &ctx.join("Dockerfile")).unwrap().patterns(), ["mine"]);
    std::fs::write(ctx.join(".dockerignore"), "[bad\n").unwrap();
    let e = load_for(ctx, &ctx.join("x/Dockerfile")).unwrap_err();
    assert!(e.to_string().contains(".dockerignore:1:"), "{e}");
}

#[test]
fn hostile_patterns_are_fast() {
    let long = "a".repeat(10_000);
    let pattern = "*a".repeat(500);
    let i = Ignore::from_patterns([pattern.as_str(), "**/**/**/**/**/x"]).unwrap();
    let start = std::time::Instant::now();
    assert!(!i.matches(&format!("{long}b")));
    assert!(!i.matches(&"a/".repeat(1_000)));
    assert!(start.elapsed().as_secs() < 20);
}

#[test]
fn random_input_never_panics() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let alphabet = b"ab/*?[]^-\\!#. \n\r\t**";
    for _ in 0..2_000 {
        let len = (next() % 64) as usize;
        let text: String =
            (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize] as char).collect();
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        for t in [text.clone(), String::from_utf8_lossy(&bytes).into_owned()] {
            if let Ok(i) = Ignore::parse(&t) {
                for p in ["a", "a/b", "ab/ba/a", ".", "", "[", "a/*"] {
                    let _ = i.matches(p);
                }
                let _ = i.matches(&text);
            }
        }
    }
}
