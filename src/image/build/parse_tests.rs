use super::*;

fn p(text: &str) -> Dockerfile {
    match parse(text, "Dockerfile") {
        Ok(d) => d,
        Err(e) => panic!("{e}\n--- input:\n{text}"),
    }
}

fn perr(text: &str) -> DockerfileError {
    match parse(text, "Dockerfile") {
        Ok(d) => panic!("expected an error, got {d:#?}\n--- input:\n{text}"),
        Err(e) => e,
    }
}

/// The instructions of the only stage.
fn ins(text: &str) -> Vec<Instruction> {
    let d = p(text);
    assert_eq!(d.stages.len(), 1);
    d.stages.into_iter().next().map(|s| s.instructions).unwrap_or_default()
}

fn kinds(text: &str) -> Vec<InstructionKind> {
    ins(text).into_iter().map(|i| i.kind).collect()
}

fn shell(s: &str) -> CommandForm {
    CommandForm::Shell(s.to_string())
}

fn exec(v: &[&str]) -> CommandForm {
    CommandForm::Exec(v.iter().map(|s| s.to_string()).collect())
}

fn run_cmd(k: &InstructionKind) -> &CommandForm {
    match k {
        InstructionKind::Run(r) => &r.command,
        other => panic!("not RUN: {other:?}"),
    }
}

fn copy_of(k: &InstructionKind) -> &CopyInstruction {
    match k {
        InstructionKind::Copy(c) | InstructionKind::Add(c) => c,
        other => panic!("not COPY/ADD: {other:?}"),
    }
}

#[test]
fn minimal_and_stages() {
    let d = p("FROM alpine\nRUN echo hi\n");
    assert_eq!(d.escape, '\\');
    assert_eq!(d.stages[0].base, "alpine");
    assert_eq!(d.stages[0].line, 1);
    let i = &d.stages[0].instructions[0];
    assert_eq!(i.line, 2);
    assert_eq!(i.original, "RUN echo hi");
    assert_eq!(run_cmd(&i.kind), &shell("echo hi"));

    let d = p("ARG BASE=debian\nARG V\nfrom --platform=$BUILDPLATFORM ${BASE} As Build\nrun make\n\
               FROM scratch AS final\nCOPY --from=build /out /\n");
    assert_eq!(
        d.global_args,
        [
            ArgDecl { name: "BASE".into(), default: Some("debian".into()) },
            ArgDecl { name: "V".into(), default: None }
        ]
    );
    assert_eq!(d.stages.len(), 2);
    assert_eq!(d.stages[0].name.as_deref(), Some("build"));
    assert_eq!(d.stages[0].base, "${BASE}");
    assert_eq!(d.stages[0].platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(d.stages[1].name.as_deref(), Some("final"));
    assert_eq!(d.stages[1].line, 5);
    assert_eq!(copy_of(&d.stages[1].instructions[0].kind).from.as_deref(), Some("build"));
}

#[test]
fn errors_name_file_and_line() {
    let e = perr("FROM a\n\nRUN x\n# c\nRUNN y\n");
    assert_eq!(e.line, 5);
    assert_eq!(e.to_string(), "Dockerfile:5: unknown instruction: RUNN (did you mean RUN?)");
    let e = perr("FROM a\nFOOBAR x\n");
    assert_eq!(e.to_string(), "Dockerfile:2: unknown instruction: FOOBAR");
    let e = perr("RUN x\nFROM a\n");
    assert_eq!(e.line, 1);
    assert!(e.message.contains("no build stage in current context"), "{e}");
    let e = perr("FROM a\nCOPY --chwon=1 a b\n");
    assert_eq!(e.to_string(), "Dockerfile:2: unknown flag: --chwon (did you mean chown?)");
    let e = perr("FROM a\nRUN --foo=bar x\n");
    assert!(e.message.starts_with("unknown flag: --foo"), "{e}");
    assert!(perr("").message.contains("file with no instructions"));
    assert!(perr("# only\n# comments\n\n").message.contains("file with no instructions"));
    assert!(perr("ARG A=1\n").message.contains("no stages"));
    assert!(perr("FROM\n").message.contains("FROM requires either one or three arguments"));
    assert!(perr("FROM a b\n").message.contains("FROM requires either one or three arguments"));
    assert!(perr("FROM a AS 1x\n").message.contains("invalid name for build stage"));
    let e = perr("FROM a AS x\nFROM b AS X\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("duplicate stage name \"x\""), "{e}");
    assert!(
        perr("FROM a\nSHELL /bin/bash -c\n")
            .message
            .contains("SHELL requires the arguments to be in JSON form")
    );
    assert!(perr("FROM a\nSHELL []\n").message.contains("SHELL requires at least one argument"));
    assert!(perr("FROM a\nCMD [\"a\", 1]\n").message.contains("arrays must be comprised of strings only"));
    assert!(perr("FROM a\nWORKDIR\n").message.contains("WORKDIR requires exactly one argument"));
    assert!(perr("FROM a\nUSER\n").message.contains("USER requires exactly one argument"));
    assert!(perr("FROM a\nENV\n").message.contains("ENV requires at least one argument"));
    assert!(perr("FROM a\nENV a\n").message.contains("ENV must have two arguments"));
    assert!(perr("FROM a\nENV a=b c\n").message.contains("can't find = in \"c\""));
    assert!(perr("FROM a\nENV =b\n").message.contains("ENV names can not be blank"));
    assert!(perr("FROM a\nARG\n").message.contains("ARG requires at least one argument"));
    assert!(perr("FROM a\nARG =x\n").message.contains("ARG names can not be blank"));
    assert!(perr("FROM a\nCOPY a\n").message.contains("COPY requires at least two arguments"));
    assert!(perr("FROM a\nADD a\n").message.contains("ADD requires at least two arguments"));
    assert!(perr("FROM a\nEXPOSE\n").message.contains("EXPOSE requires at least one argument"));
    assert!(perr("FROM a\nVOLUME\n").message.contains("VOLUME requires at least one argument"));
    assert!(perr("FROM a\nVOLUME [\"\"]\n").message.contains("can not be an empty string"));
    assert!(perr("FROM a\nRUN\n").message.contains("RUN requires at least one argument"));
    assert!(perr("FROM a\nCMD\n").message.contains("CMD requires at least one argument"));
    assert!(perr("FROM a\nSTOPSIGNAL\n").message.contains("STOPSIGNAL requires exactly one argument"));
    assert!(perr("FROM a\nMAINTAINER\n").message.contains("MAINTAINER requires exactly one argument"));
    assert!(perr("FROM a\nONBUILD\n").message.contains("ONBUILD requires at least one argument"));
    assert!(perr("FROM a\nHEALTHCHECK\n").message.contains("HEALTHCHECK requires at least one argument"));
    assert!(
        perr("FROM a\nCOPY --link=maybe a b\n").message.contains("expecting boolean value for flag --link")
    );
    assert!(perr("FROM a\nCOPY --link= a b\n").message.contains("missing a value on flag: --link"));
    assert!(perr("FROM a\nCOPY --from a b\n").message.contains("missing a value on flag: --from"));
    assert!(
        perr("FROM a\nCOPY --from=x --from=y a b\n").message.contains("duplicate flag specified: --from")
    );
    assert!(perr("FROM a\nENV --x=1 a=b\n").message.contains("unknown flag: --x"));
}

#[test]
fn directives() {
    let d = p("# escape=`\nFROM windows\nRUN dir c:\\ `\n  && echo hi\n");
    assert_eq!(d.escape, '`');
    assert_eq!(run_cmd(&d.stages[0].instructions[0].kind), &shell("dir c:\\   && echo hi"));

    // Directive keys are case-insensitive, spaces are allowed around `=`.
    let d = p("#ESCAPE = `\n# syntax=docker/dockerfile:1.7\n# check=skip=all\nFROM a\n");
    assert_eq!(d.escape, '`');
    assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1.7"));

    // After any other line (a comment, an empty line, an instruction), it is just a comment.
    for text in ["# hello\n# escape=`\nFROM a\n", "\n# escape=`\nFROM a\n", "FROM a\n# escape=`\n"] {
        assert_eq!(p(text).escape, '\\', "{text}");
    }
    // An unknown directive ends the directives.
    assert_eq!(p("# foo=bar\n# escape=`\nFROM a\n").escape, '\\');
    let e = perr("# escape=`\n# escape=\\\nFROM a\n");
    assert!(e.message.contains("only one escape parser directive can be used"), "{e}");
    assert_eq!(e.line, 2);
    assert!(perr("# escape=x\nFROM a\n").message.contains("invalid escape token"));
    // BOM and CRLF.
    let d = p("\u{feff}# escape=`\r\nFROM a\r\nRUN a `\r\n b\r\n");
    assert_eq!(d.escape, '`');
    assert_eq!(run_cmd(&d.stages[0].instructions[0].kind), &shell("a  b"));
}

#[test]
fn windows_paths_with_backtick_escape() {
    let text = "# escape=`\n\nFROM mcr.microsoft.com/windows/servercore\nCOPY testfile.txt c:\\\n\
                RUN dir c:\\\nWORKDIR c:\\Users\\app\nENV GOPATH `\n\\go\n";
    let k = kinds(text);
    assert_eq!(copy_of(&k[0]).dest, "c:\\");
    assert_eq!(run_cmd(&k[1]), &shell("dir c:\\"));
    assert_eq!(k[2], InstructionKind::Workdir("c:\\Users\\app".into()));
    assert_eq!(k[3], InstructionKind::Env(vec![("GOPATH".into(), "\\go".into())]));
    // With the default escape the same COPY line would continue onto the next one.
    let k = kinds("FROM a\nCOPY testfile.txt c:\\\nRUN dir c:\\\n");
    assert_eq!(k.len(), 1);
    assert_eq!(copy_of(&k[0]).sources, ["testfile.txt", "c:RUN", "dir"]);
}

#[test]
fn continuations_and_comments() {
    let k = kinds(
        "FROM a\nRUN echo hello\\\n  world\\\n  goodnight  \\\n  moon\\\n  light\\\nning\n\
         RUN echo hello  \\  \nworld\n\
         RUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\n\
         RUN echo hello \\\n# this is a comment\n\n# another, blank lines around\n\n  more stuff\n\
         RUN foo \\\n\nbar \\\n\nbaz\n",
    );
    let cmds: Vec<_> = k.iter().map(run_cmd).cloned().collect();
    assert_eq!(
        cmds,
        [
            shell("echo hello  world  goodnight    moon  lightning"),
            shell("echo hello  world"),
            shell("echo hi   world  goodnight"),
            shell("echo hello   more stuff"),
            shell("foo bar baz"),
        ]
    );
    // Lines and original text.
    let i = ins("FROM a\n\nRUN a \\\n  b\nRUN c\n");
    assert_eq!((i[0].line, i[0].original.as_str()), (3, "RUN a   b"));
    assert_eq!(i[1].line, 5);
    // An escaped escape at the end does not continue; `ENV C trailing\\` stays one line.
    let k = kinds(
        "FROM a\nENV C trailing\\\\\nENV D next\nENV E hello\\\n\\\nworld\nENV F hello\\\n \\\nworld\n",
    );
    assert_eq!(
        k,
        [
            InstructionKind::Env(vec![("C".into(), "trailing\\\\".into())]),
            InstructionKind::Env(vec![("D".into(), "next".into())]),
            InstructionKind::Env(vec![("E".into(), "helloworld".into())]),
            InstructionKind::Env(vec![("F".into(), "hello world".into())]),
        ]
    );
    // A continuation at the end of the file.
    assert_eq!(run_cmd(&kinds("FROM a\nRUN a \\")[0]), &shell("a"));
    // Indented instructions and comments.
    let k = kinds("  FROM a\n    # comment\n\tRUN x\n");
    assert_eq!(run_cmd(&k[0]), &shell("x"));
    // `#` inside a line is not a comment.
    assert_eq!(run_cmd(&kinds("FROM a\nRUN echo # not a comment\n")[0]), &shell("echo # not a comment"));
}

#[test]
fn exec_and_shell_forms() {
    let k = kinds(
        "FROM a\nCMD [\"/bin/sh\", \"-c\", \"echo hi\"]\nENTRYPOINT [ \"\\/usr\\\\\\\"/bin/znc\", \"-f\" ]\n\
         CMD [\"unterminated\"\nCMD ['single']\nRUN [\"a\"] trailing\nENTRYPOINT []\nCMD {\"a\": 1}\n",
    );
    assert_eq!(k[0], InstructionKind::Cmd(exec(&["/bin/sh", "-c", "echo hi"])));
    assert_eq!(k[1], InstructionKind::Entrypoint(exec(&["/usr\\\"/bin/znc", "-f"])));
    assert_eq!(k[2], InstructionKind::Cmd(shell("[\"unterminated\"")));
    assert_eq!(k[3], InstructionKind::Cmd(shell("['single']")));
    assert_eq!(run_cmd(&k[4]), &shell("[\"a\"] trailing"));
    assert_eq!(k[5], InstructionKind::Entrypoint(exec(&[])));
    assert_eq!(k[6], InstructionKind::Cmd(shell("{\"a\": 1}")));
    let k = kinds("FROM a\nSHELL [\"powershell\", \"-command\"]\nVOLUME [\"/a\", \"/b\"]\nVOLUME /c /d\n");
    assert_eq!(k[0], InstructionKind::Shell(vec!["powershell".into(), "-command".into()]));
    assert_eq!(k[1], InstructionKind::Volume(vec!["/a".into(), "/b".into()]));
    assert_eq!(k[2], InstructionKind::Volume(vec!["/c".into(), "/d".into()]));
    let k = kinds("FROM a\nCOPY [\"a b\", \"/c d/\"]\nADD \"a b\" /x\n");
    assert_eq!(copy_of(&k[0]).sources, ["a b"]);
    assert_eq!(copy_of(&k[0]).dest, "/c d/");
    // Shell-form sources are split on whitespace only; quotes are the expander's job.
    assert_eq!(copy_of(&k[1]).sources, ["\"a", "b\""]);
}

#[test]
fn env_label_arg_forms() {
    let k = kinds(
        "FROM a\nENV name value\nENV name=value\nENV a=1 b=2\nENV name=\"value value1\"\nENV name=value\\ value2\n\
         ENV name='v \"dq\" v'\nENV legacy with many  words\nLABEL maintainer Erik \\\\Hollensbe <e@h.org>\\\"\n\
         LABEL \"com.example.vendor\"=\"ACME\" version=1.0\n",
    );
    let env = |pairs: &[(&str, &str)]| {
        InstructionKind::Env(pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect())
    };
    assert_eq!(k[0], env(&[("name", "value")]));
    assert_eq!(k[1], env(&[("name", "value")]));
    assert_eq!(k[2], env(&[("a", "1"), ("b", "2")]));
    assert_eq!(k[3], env(&[("name", "\"value value1\"")]));
    assert_eq!(k[4], env(&[("name", "value\\ value2")]));
    assert_eq!(k[5], env(&[("name", "'v \"dq\" v'")]));
    assert_eq!(k[6], env(&[("legacy", "with many  words")]));
    assert_eq!(
        k[7],
        InstructionKind::Label(vec![("maintainer".into(), "Erik \\\\Hollensbe <e@h.org>\\\"".into())])
    );
    assert_eq!(
        k[8],
        InstructionKind::Label(vec![
            ("\"com.example.vendor\"".into(), "\"ACME\"".into()),
            ("version".into(), "1.0".into())
        ])
    );
    // A multi-line ENV.
    let k = kinds(
        "FROM a\nENV name=value \\\n    name1=value1 \\\n    name2=\"value2a \\\n           value2b\" \\\n",
    );
    assert_eq!(
        k[0],
        env(&[("name", "value"), ("name1", "value1"), ("name2", "\"value2a            value2b\"")])
    );
    let k = kinds("FROM a\nARG a b=c d=\"e f\" g=\n");
    assert_eq!(
        k[0],
        InstructionKind::Arg(vec![
            ArgDecl { name: "a".into(), default: None },
            ArgDecl { name: "b".into(), default: Some("c".into()) },
            ArgDecl { name: "d".into(), default: Some("\"e f\"".into()) },
            ArgDecl { name: "g".into(), default: Some("".into()) },
        ])
    );
}

#[test]
fn simple_instructions() {
    let k = kinds(
        "FROM a\nworkdir /app dir\nUSER 1000:1000\nEXPOSE 8080 80/tcp 53/udp\nSTOPSIGNAL SIGKILL\n\
         MAINTAINER Jane <j@x>\n",
    );
    assert_eq!(k[0], InstructionKind::Workdir("/app dir".into()));
    assert_eq!(k[1], InstructionKind::User("1000:1000".into()));
    assert_eq!(k[2], InstructionKind::Expose(vec!["53/udp".into(), "80/tcp".into(), "8080".into()]));
    assert_eq!(k[3], InstructionKind::StopSignal("SIGKILL".into()));
    assert_eq!(k[4], InstructionKind::Maintainer("Jane <j@x>".into()));
}

#[test]
fn copy_and_add_flags() {
    let k = kinds(
        "FROM a\nCOPY --from=build --chown=1:2 --chmod=0755 --link --exclude=*.md --exclude='a b' --parents \
         a b /dst/\nADD --keep-git-dir=true --checksum=sha256:abc --link=false --unpack=false https://x/y.tgz /\n\
         COPY --link=TRUE -- --weird /d\n",
    );
    let c = copy_of(&k[0]);
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1:2"));
    assert_eq!(c.chmod.as_deref(), Some("0755"));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, ["*.md", "a b"]);
    assert_eq!(c.sources, ["a", "b"]);
    assert_eq!(c.dest, "/dst/");
    let a = copy_of(&k[1]);
    assert!(matches!(k[1], InstructionKind::Add(_)));
    assert!(a.keep_git_dir && !a.link);
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert_eq!(a.unpack, Some(false));
    let c = copy_of(&k[2]);
    assert!(c.link);
    assert_eq!(c.sources, ["--weird"]);
    // COPY has no --checksum, ADD has no --from.
    assert!(perr("FROM a\nCOPY --checksum=x a b\n").message.contains("unknown flag: --checksum"));
    assert!(perr("FROM a\nADD --from=x a b\n").message.contains("unknown flag: --from"));
}

#[test]
fn secret_mounts_as_environment_variables() {
    let k = kinds(
        "FROM a\nRUN --mount=type=secret,id=aws,env=AWS_KEY \\\n\
         --mount=type=secret,id=tok,target=/t,env=TOKEN,required=true \\\n\
         --mount=type=secret,source=s,env=S,required=false \\\n\
         --mount=type=secret,id=e,env=$NAME make\n",
    );
    let InstructionKind::Run(r) = &k[0] else { panic!() };
    let m = &r.mounts;
    assert_eq!(
        (m[0].id.as_deref(), m[0].env.as_deref(), m[0].target.as_deref()),
        (Some("aws"), Some("AWS_KEY"), None)
    );
    assert!(!m[0].required, "secrets are optional unless required");
    assert_eq!((m[1].target.as_deref(), m[1].env.as_deref()), (Some("/t"), Some("TOKEN")));
    assert!(m[1].required);
    assert_eq!((m[2].source.as_deref(), m[2].id.as_deref()), (Some("s"), None));
    assert!(!m[2].required);
    assert_eq!(m[3].env.as_deref(), Some("$NAME"), "expanded by the builder");
    // env alone names no secret.
    let e = perr("FROM a\nRUN --mount=type=secret,env=X ls\n");
    assert!(e.message.contains("invalid secret mount"), "{e}");
    let e = perr("FROM a\nRUN --mount=type=secret,id=x,required=maybe ls\n");
    assert!(e.message.contains("invalid value for required: maybe"), "{e}");
}

#[test]
fn run_flags_and_mounts() {
    let k = kinds(
        "FROM a\nRUN --mount=type=cache,target=/root/.cache,sharing=locked,id=c1 \\\n\
         --mount=type=secret,id=tok,env=TOKEN,required \\\n\
         --mount=type=bind,from=build,source=/out,target=/in,rw \\\n\
         --mount=type=tmpfs,dst=/tmp,size=64m \\\n\
         --mount=target=/b,source=a \\\n\
         --mount=type=ssh --network=none --security=insecure make\n",
    );
    let InstructionKind::Run(r) = &k[0] else { panic!() };
    assert_eq!(r.command, shell("make"));
    assert_eq!(r.network.as_deref(), Some("none"));
    assert_eq!(r.security.as_deref(), Some("insecure"));
    let m = &r.mounts;
    assert_eq!(m.len(), 6);
    assert_eq!(m[0].kind, "cache");
    assert_eq!(m[0].target.as_deref(), Some("/root/.cache"));
    assert_eq!(m[0].sharing.as_deref(), Some("locked"));
    assert_eq!(m[0].id.as_deref(), Some("c1"));
    assert!(m[0].read_write);
    assert_eq!(m[1].kind, "secret");
    assert_eq!(m[1].env.as_deref(), Some("TOKEN"));
    assert!(m[1].required && !m[1].read_write);
    assert_eq!(m[2].from.as_deref(), Some("build"));
    assert_eq!(m[2].source.as_deref(), Some("/out"));
    assert!(m[2].read_write);
    assert_eq!(m[3].kind, "tmpfs");
    assert_eq!(m[3].size.as_deref(), Some("64m"));
    assert!(m[3].read_write);
    assert_eq!(m[4].kind, "bind");
    assert_eq!(m[4].source.as_deref(), Some("a"));
    assert!(!m[4].read_write);
    assert_eq!(m[5].kind, "ssh");

    // The flag's quotes are removed first, then the value is CSV.
    let e = perr("FROM a\nRUN --mount=target=/b,\"source=a,b\" ls\n");
    assert!(e.message.contains("invalid field 'b' must be a key=value pair"), "{e}");
    let k = kinds("FROM a\nRUN --mount='type=bind,\"source=a,b\",target=/t' ls\n");
    let InstructionKind::Run(r) = &k[0] else { panic!() };
    assert_eq!(r.mounts[0].source.as_deref(), Some("a,b"));
    // Variables in values are kept for the builder.
    let k = kinds("FROM a\nRUN --mount=type=cache,target=$HOME/.cache,id=$ID,mode=$M ls\n");
    let InstructionKind::Run(r) = &k[0] else { panic!() };
    assert_eq!(r.mounts[0].target.as_deref(), Some("$HOME/.cache"));
    assert_eq!(r.mounts[0].mode.as_deref(), Some("$M"));

    for (bad, msg) in [
        ("type=nfs", "unsupported mount type \"nfs\""),
        ("type=bind,foo=bar", "unexpected key 'foo' in 'foo=bar'"),
        ("type=bind,target", "invalid field 'target' must be a key=value pair"),
        ("required,type=secret,id=x", "unexpected key 'required' for mount type 'bind'"),
        ("type=bind,size=1m", "unexpected key 'size' for mount type 'bind'"),
        ("type=cache,target=/c,sharing=maybe", "unsupported sharing value"),
        ("type=bind,target=/c,sharing=locked", "invalid cache sharing set for bind mount"),
        ("type=bind,target=/c,mode=0700", "mode not allowed for \"bind\" type mounts"),
        ("type=cache,target=/c,mode=9", "invalid value 9 for mode"),
        ("type=cache,target=/c,uid=x", "invalid value x for uid"),
        ("type=secret", "invalid secret mount"),
        ("type=secret,id=a,source=b", "both source and id can't be set"),
        ("type=secret,id=a,from=b", "secret mount should not have a from"),
        ("type=bind,from=$STAGE,target=/x", "doesn't support variable expansion"),
        ("type=bind,ro=maybe", "invalid value for ro: maybe"),
        ("'type=bind,\"target=/x'", "failed to parse csv mounts"),
        ("'type=bind,tar\"get=/x'", "failed to parse csv mounts"),
    ] {
        let e = perr(&format!("FROM a\nRUN --mount={bad} ls\n"));
        assert!(e.message.contains(msg), "{bad}: {e}");
        assert_eq!(e.line, 2);
    }
    assert!(perr("FROM a\nRUN --network=bridge ls\n").message.contains("invalid network mode \"bridge\""));
    assert!(perr("FROM a\nRUN --security=x ls\n").message.contains("security \"x\" is not valid"));
    assert!(perr("FROM a\nRUN --mount ls\n").message.contains("missing a value on flag: --mount"));
}

#[test]
fn healthcheck() {
    let k = kinds(
        "FROM a\nHEALTHCHECK --interval=5m --timeout=3s --start-period=1s --start-interval=100ms --retries=3 \\\n\
         CMD curl -f http://localhost/ || exit 1\nHEALTHCHECK CMD [\"/bin/check\", \"-q\"]\nHEALTHCHECK NONE\n\
         healthcheck cmd true\n",
    );
    let InstructionKind::Healthcheck(Some(h)) = &k[0] else { panic!("{:?}", k[0]) };
    assert_eq!(h.command, shell("curl -f http://localhost/ || exit 1"));
    assert_eq!(h.interval.as_deref(), Some("5m"));
    assert_eq!(h.timeout.as_deref(), Some("3s"));
    assert_eq!(h.start_period.as_deref(), Some("1s"));
    assert_eq!(h.start_interval.as_deref(), Some("100ms"));
    assert_eq!(h.retries.as_deref(), Some("3"));
    let InstructionKind::Healthcheck(Some(h)) = &k[1] else { panic!() };
    assert_eq!(h.command, exec(&["/bin/check", "-q"]));
    assert_eq!(k[2], InstructionKind::Healthcheck(None));
    let InstructionKind::Healthcheck(Some(h)) = &k[3] else { panic!() };
    assert_eq!(h.command, shell("true"));

    for (bad, msg) in [
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        ("HEALTHCHECK RUN x", "Unknown type \"RUN\" in HEALTHCHECK (try CMD)"),
        ("HEALTHCHECK --interval=1us CMD x", "cannot be less than 1ms"),
        ("HEALTHCHECK --interval=5 CMD x", "missing unit"),
        ("HEALTHCHECK --timeout=abc CMD x", "invalid duration"),
        ("HEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
        ("HEALTHCHECK --retries=x CMD x", "invalid syntax"),
        ("HEALTHCHECK --bogus=1 CMD x", "unknown flag: --bogus"),
    ] {
        let e = perr(&format!("FROM a\n{bad}\n"));
        assert!(e.message.contains(msg), "{bad}: {e}");
    }
    assert_eq!(parse_go_duration("1h30m").unwrap(), 5_400_000_000_000);
    assert_eq!(parse_go_duration("1.5s").unwrap(), 1_500_000_000);
    assert_eq!(parse_go_duration(".5ms").unwrap(), 500_000);
    assert_eq!(parse_go_duration("0").unwrap(), 0);
    assert_eq!(parse_go_duration("-2µs").unwrap(), -2_000);
    assert_eq!(healthcheck_interval("interval", "0s").unwrap(), 0);
    assert_eq!(healthcheck_interval("interval", "30s").unwrap(), 30_000_000_000);
}

#[test]
fn onbuild() {
    let k = kinds("FROM a\nONBUILD RUN echo hi\nonbuild   copy . /app\nONBUILD ADD [\"a\", \"b\"]\n");
    assert_eq!(k[0], InstructionKind::Onbuild("RUN echo hi".into()));
    assert_eq!(k[1], InstructionKind::Onbuild("copy . /app".into()));
    assert_eq!(k[2], InstructionKind::Onbuild("ADD [\"a\", \"b\"]".into()));
    assert!(perr("FROM a\nONBUILD ONBUILD RUN x\n").message.contains("Chaining ONBUILD"));
    assert!(perr("FROM a\nONBUILD FROM b\n").message.contains("FROM isn't allowed as an ONBUILD trigger"));
    assert!(perr("FROM a\nONBUILD maintainer b\n").message.contains("MAINTAINER isn't allowed"));
    assert!(perr("FROM a\nONBUILD CMD [1]\n").message.contains("strings only"));
    // Heredocs in triggers are kept in the expression.
    let k = kinds("FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\nRUN x\n");
    assert_eq!(k[0], InstructionKind::Onbuild("RUN <<EOF\necho hi\nEOF".into()));
    assert_eq!(run_cmd(&k[1]), &shell("x"));
}

#[test]
fn heredocs() {
    let k = kinds(
        "FROM a\nRUN <<EOF\napt-get update\n  apt-get install -y curl\nEOF\n\
         RUN <<-EOT bash\n\tset -ex\n\t\techo $HOME\n\tEOT\n\
         RUN python3 <<'PY'\nprint(\"$HOME\")\nPY\n\
         COPY <<a <<\"b\" /dst/\nfile a\na\nfile b\nb\n\
         RUN cat <<one && cat << two\n1\none\n2\ntwo\n\
         RUN echo done\n",
    );
    let InstructionKind::Run(r) = &k[0] else { panic!() };
    assert_eq!(r.command, shell("<<EOF"));
    assert_eq!(
        r.heredocs,
        [Heredoc {
            name: "EOF".into(),
            content: "apt-get update\n  apt-get install -y curl\n".into(),
            expand: true
        }]
    );
    let InstructionKind::Run(r) = &k[1] else { panic!() };
    assert_eq!(r.command, shell("<<-EOT bash"));
    assert_eq!(r.heredocs[0].content, "set -ex\necho $HOME\n");
    let InstructionKind::Run(r) = &k[2] else { panic!() };
    assert_eq!(r.heredocs[0].name, "PY");
    assert!(!r.heredocs[0].expand);
    let c = copy_of(&k[3]);
    assert_eq!(c.sources, ["<<a", "<<b"]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(
        c.heredocs,
        [
            Heredoc { name: "a".into(), content: "file a\n".into(), expand: true },
            Heredoc { name: "b".into(), content: "file b\n".into(), expand: false },
        ]
    );
    let InstructionKind::Run(r) = &k[4] else { panic!() };
    assert_eq!(r.heredocs.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["one", "two"]);
    assert_eq!(r.heredocs[1].content, "2\n");
    assert_eq!(run_cmd(&k[5]), &shell("echo done"));
    // Lines after a heredoc are counted.
    let i = ins("FROM a\nRUN <<EOF\n1\n2\nEOF\nRUN x\n");
    assert_eq!(i[1].line, 6);
    // Heredoc bodies are not comments, continuations or directives.
    let k = kinds("FROM a\nCOPY <<EOF /x\n# not a comment\nline \\\n\nEOF\n");
    assert_eq!(copy_of(&k[0]).heredocs[0].content, "# not a comment\nline \\\n\n");
    // Only RUN, COPY, ADD in shell form take heredocs.
    let k = kinds("FROM a\nCMD cat <<EOF\nRUN [\"cat\", \"<<EOF\"]\nLABEL a=<<EOF\n");
    assert_eq!(k.len(), 3);
    // Not heredocs: quoted, here-strings, glued to a word.
    let k = kinds("FROM a\nRUN echo \"<<EOF\" a<<EOF <<<here\nRUN x\n");
    let InstructionKind::Run(r) = &k[0] else { panic!() };
    assert!(r.heredocs.is_empty());
    // CRLF bodies.
    let k = kinds("FROM a\r\nRUN <<EOF\r\necho hi\r\nEOF\r\n");
    let InstructionKind::Run(r) = &k[0] else { panic!() };
    assert_eq!(r.heredocs[0].content, "echo hi\n");

    let e = perr("FROM a\nRUN x\nRUN <<EOF\necho hi\n");
    assert_eq!(e.line, 3);
    assert!(e.message.contains("unterminated heredoc"), "{e}");
    assert!(
        perr("FROM a\nCOPY a <<EOF\nx\nEOF\n").message.contains("cannot accept a heredoc as a destination")
    );
}

/// A tiny deterministic generator for the hostile-input test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn hostile_inputs_terminate_quickly() {
    let start = std::time::Instant::now();
    let check = |text: &str| {
        let t = std::time::Instant::now();
        // Any result is fine; it must come back, quickly, without a panic.
        let r = parse(text, "Dockerfile");
        if let Err(e) = &r {
            assert!(e.to_string().len() < 2_000, "error message too long: {} bytes", e.to_string().len());
        }
        if let Ok(d) = &r {
            // Expand every word we can find, as the builder will.
            for s in &d.stages {
                let _ = super::super::expand::expand_word(&s.base, &|_| None, d.escape);
                for i in &s.instructions {
                    let _ = super::super::expand::expand_words(&i.original, &|_| Some("v".into()), d.escape);
                }
            }
        }
        assert!(t.elapsed().as_secs() < 5, "input of {} bytes took {:?}", text.len(), t.elapsed());
    };

    // 10,000 nested `${` (in a RUN line with a heredoc marker, so the lexer runs on it), and
    // 50,000 nested defaults.
    let nested = "${A:-".repeat(10_000);
    check(&format!("FROM a\nRUN echo {nested} <<EOF\nx\nEOF\n"));
    check(&format!("FROM {}x{}\n", "${A:-".repeat(50_000), "}".repeat(50_000)));
    check(&format!("FROM a\nENV A={nested}\nLABEL {nested}={nested}\nARG {nested}\n"));
    // A 1 MB line, in several instructions.
    let mb = "x".repeat(1 << 20);
    for ins in ["RUN", "ENV", "LABEL a=", "COPY", "FROM", "EXPOSE", "ARG", "HEALTHCHECK CMD", "RUNN", "CMD ["]
    {
        check(&format!("FROM a\n{ins} {mb}\n"));
        check(&format!("FROM a\n{ins} \"{mb}\n"));
    }
    check(&format!("FROM a\nRUN --mount=type=bind,{mb} x\n"));
    check(&format!("FROM a\nRUN {}\n", "<<".repeat(1 << 19)));
    check(&format!("FROM a\nCOPY {} /\n", "<<a ".repeat(100_000)));
    check(&format!("FROM a\nCOPY {} /\n{}", "<<a ".repeat(100_000), "a\n".repeat(100_000)));
    check(&"\\".repeat(1 << 20));
    check(&format!("FROM a\nRUN {}\n", "'\"".repeat(1 << 19)));
    // 100,000 continuation lines; 100,000 comment lines inside one; 100,000 instructions.
    check(&format!("FROM a\nRUN a \\\n{}b\n", "x \\\n".repeat(100_000)));
    check(&format!("FROM a\nRUN a \\\n{}b\n", "# c\n\n".repeat(100_000)));
    check(&format!("FROM a\n{}", "RUN x\n".repeat(100_000)));
    check(&format!("FROM a\n{}", "FROM b\n".repeat(100_000)));
    check(&format!("FROM a\nRUN {}", "\\\n".repeat(100_000)));
    // Deep JSON and many ONBUILDs.
    check(&format!("FROM a\nCMD {}{}\n", "[".repeat(100_000), "]".repeat(100_000)));
    check(&format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(100_000)));
    check(&format!("FROM a\nONBUILD {}\n", "ONBUILD".repeat(100_000)));
    // Random bytes, and random soups of Dockerfile tokens.
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..200 {
        let len = (rng.next() % 4096) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(&String::from_utf8_lossy(&bytes));
    }
    let tokens = [
        "FROM ",
        "RUN ",
        "COPY ",
        "ADD ",
        "ONBUILD ",
        "ENV ",
        "ARG ",
        "HEALTHCHECK ",
        "CMD ",
        "\n",
        "\\\n",
        "`\n",
        "# escape=`\n",
        "<<EOF",
        "<<-EOF",
        "\nEOF\n",
        "\tEOF\n",
        "\"",
        "'",
        "${",
        "}",
        "$A",
        ":-",
        "[",
        "]",
        ",",
        " ",
        "--mount=",
        "--from=",
        "type=cache",
        "=",
        "#",
        "\r\n",
        "AS ",
        "x",
        "NONE",
        "\u{feff}",
        "é",
    ];
    for _ in 0..2_000 {
        let n = (rng.next() % 60) as usize;
        let mut s = String::from(if rng.next().is_multiple_of(2) { "FROM a\n" } else { "" });
        for _ in 0..n {
            s.push_str(tokens[(rng.next() % tokens.len() as u64) as usize]);
        }
        check(&s);
    }
    assert!(start.elapsed().as_secs() < 60, "hostile inputs took {:?}", start.elapsed());
}

#[test]
fn heredoc_words_as_buildkit() {
    let text = "FROM alpine\nENV NAME=me\nUSER <<INVALID\nRUN <<EMPTY\nEMPTY\nRUN 3<<EMPTY2\nEMPTY2\n\
                RUN \"<<NOHEREDOC\"\nRUN <<INDENT\n\tfoo\n\tbar\nINDENT\nRUN <<-UNINDENT2\n\tbaz\n\tquux\n\tUNINDENT2\n\
                RUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\nCOPY <<X <<Y /dest\nY\nX\nX\nY\n\
                RUN <<eo'f'\necho foo\neof\nRUN <<eo\\'f\necho foo\neo'f\nRUN <<'e'o\\'f\necho foo\neo'f\n\
                RUN <<'one two'\necho bar\none two\nRUN <<$EOF\n$EOF\nRUN <<  EOF  > foo\nEOF\n\
                RUN <<COMMENT\n# internal comment\necho hi # trailing\nCOMMENT\n\
                COPY <<'EOF /not-a-heredoc\nRUN <<- EOF x\n";
    let k = kinds(text);
    let docs = |k: &InstructionKind| -> Vec<(String, String, bool)> {
        let hs = match k {
            InstructionKind::Run(r) => &r.heredocs,
            InstructionKind::Copy(c) => &c.heredocs,
            _ => return Vec::new(),
        };
        hs.iter().map(|h| (h.name.clone(), h.content.clone(), h.expand)).collect()
    };
    let d = |n: &str, c: &str, e: bool| (n.to_string(), c.to_string(), e);
    assert_eq!(k[1], InstructionKind::User("<<INVALID".into()));
    assert_eq!(docs(&k[2]), [d("EMPTY", "", true)]);
    assert_eq!(docs(&k[3]), [d("EMPTY2", "", true)]);
    assert_eq!(docs(&k[4]), []);
    assert_eq!(docs(&k[5]), [d("INDENT", "\tfoo\n\tbar\n", true)]);
    assert_eq!(docs(&k[6]), [d("UNINDENT2", "baz\nquux\n", true)]);
    assert_eq!(docs(&k[7]), [d("NOEXPAND", "don't expand $NAME\n", false)]);
    assert_eq!(docs(&k[8]), [d("X", "Y\n", true), d("Y", "X\n", true)]);
    assert_eq!(docs(&k[9]), [d("eof", "echo foo\n", false)]);
    assert_eq!(docs(&k[10]), [d("eo'f", "echo foo\n", true)]);
    assert_eq!(docs(&k[11]), [d("eo'f", "echo foo\n", false)]);
    assert_eq!(docs(&k[12]), [d("one two", "echo bar\n", false)]);
    assert_eq!(docs(&k[13]), [d("$EOF", "", true)]);
    assert_eq!(docs(&k[14]), [d("EOF", "", true)]);
    assert_eq!(docs(&k[15]), [d("COMMENT", "# internal comment\necho hi # trailing\n", true)]);
    // A heredoc word that does not lex is a plain path; `<<- EOF` is not a heredoc.
    assert_eq!(copy_of(&k[16]).sources, ["<<'EOF"]);
    assert_eq!(docs(&k[17]), []);
    assert_eq!(k.len(), 18);
}

#[test]
fn public_heredoc_word() {
    let h = heredoc_word("<<-'EOF'").unwrap();
    assert_eq!(h, HeredocWord { name: "EOF".into(), chomp: true, expand: false });
    for w in ["<<EOF", "<<'EOF'", "<<\"EOF\"", "<<-EOF", "<<-\"EOF\"", "<<EO\"F\"", "<< EOF", "2<<EOF"] {
        assert_eq!(heredoc_word(w).map(|h| h.name).as_deref(), Some("EOF"), "{w}");
    }
    for w in ["", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh", "<<'EOF", "<<EOF\"", "a<<EOF"] {
        assert_eq!(heredoc_word(w), None, "{w}");
    }
}
