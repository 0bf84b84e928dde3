//! What berth does when its standard output cannot be written: a closed pipe (`berth ps |
//! head -1`) ends quietly with status 0, any other failure (`> /dev/full`) is one `berth: ...`
//! line and status 1, and nothing panics. Usage errors start with one `berth: ...` line too.

mod stack;

use std::fs::{File, OpenOptions};
use std::process::{Command, Output, Stdio};

use stack::{IMAGE, Stack};

const COMPOSE: &str =
    "services:\n  web:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n";

/// The commands that print something even on an empty project and store.
const COMMANDS: &[&[&str]] = &[
    &["graph"],
    &["graph", "--format", "dot"],
    &["config"],
    &["config", "--services"],
    &["ps"],
    &["ps", "-a"],
    &["volume", "ls"],
    &["network", "ls"],
    &["image", "ls"],
    &["image", "ls", "--format", "json"],
    &["image", "history", IMAGE],
    &["image", "inspect", IMAGE],
    &["image", "save", IMAGE],
    &["images"],
    &["--version"],
    &["image", "ls", "--help"],
];

fn run_with_stdout(stack: &Stack, args: &[&str], stdout: Stdio) -> Output {
    stack.command(args).stdout(stdout).stderr(Stdio::piped()).output().expect("run berth")
}

fn dev_full() -> File {
    OpenOptions::new().write(true).open("/dev/full").expect("/dev/full")
}

/// The write end of a pipe whose reader is already gone.
fn closed_pipe() -> Stdio {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_full_disk_is_one_error_line_and_status_1() {
    let stack = Stack::new("cliout1", COMPOSE);
    for args in COMMANDS {
        let out = run_with_stdout(&stack, args, Stdio::from(dev_full()));
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "berth {args:?}: {err}");
        assert_eq!(
            err, "berth: cannot write to standard output: No space left on device (os error 28)\n",
            "berth {args:?}"
        );
    }
}

#[test]
fn a_closed_pipe_ends_quietly_with_status_0() {
    let stack = Stack::new("cliout2", COMPOSE);
    for args in COMMANDS {
        let out = run_with_stdout(&stack, args, closed_pipe());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "berth {args:?}: {err}");
        assert_eq!(err, "", "berth {args:?}");
    }
}

#[test]
fn work_goes_on_when_its_report_cannot_be_written_and_its_own_failure_still_counts() {
    let stack = Stack::new("cliout3", COMPOSE);
    for name in ["cliout3_a", "cliout3_b"] {
        stack.ok(&["volume", "create", name]);
    }
    // The first name's line fails to print: the other volume is still removed, and the
    // missing one is still an error.
    let out =
        run_with_stdout(&stack, &["volume", "rm", "cliout3_a", "cliout3_nosuch", "cliout3_b"], closed_pipe());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("berth: ") && err.contains("cliout3_nosuch"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(stack.ok(&["volume", "ls", "-q"]).stdout, "", "both volumes are gone");

    stack.ok(&["volume", "create", "cliout3_c"]);
    let out = run_with_stdout(&stack, &["volume", "rm", "cliout3_c"], Stdio::from(dev_full()));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("No space left on device"), "{}", text(&out.stderr));
    assert_eq!(stack.ok(&["volume", "ls", "-q"]).stdout, "", "the volume is gone");
}

fn berth(args: &[&str]) -> Output {
    let dir = tempfile::Builder::new().prefix("berth-").tempdir().expect("temp dir");
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir.path())
        .env("BERTH_ROOT", dir.path().join("root"))
        .env("BERTH_RUN", dir.path().join("run"))
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

#[test]
fn usage_errors_start_with_one_berth_line_and_keep_clap_hints() {
    for (args, first, hint) in [
        (
            &["graph", "--format", "xx"][..],
            "berth: invalid value 'xx' for '--format <FORMAT>'",
            "[possible values: text, dot]",
        ),
        (&["graph", "--bogus"][..], "berth: unexpected argument '--bogus' found", "Usage: berth graph"),
        (&["nosuchcommand"][..], "berth: unrecognized subcommand 'nosuchcommand'", "Usage: berth"),
        (&["--progress", "loud", "ps"][..], "berth: invalid value 'loud' for '--progress", "possible values"),
    ] {
        let out = berth(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "berth {args:?}: {err}");
        assert!(err.lines().next().is_some_and(|l| l.starts_with(first)), "berth {args:?}: {err}");
        assert!(err.contains(hint) && err.contains("For more information, try '--help'."), "{err}");
        assert!(!err.contains("error:"), "{err}");
        assert!(out.stdout.is_empty());
    }
    let version = berth(&["--version"]);
    assert_eq!(version.status.code(), Some(0));
    let long = text(&version.stdout);
    assert!(long.starts_with("Docker Compose version v2."), "{long}");
    assert!(long.ends_with(&format!(" (berth v{})\n", env!("CARGO_PKG_VERSION"))), "{long}");
    assert!(version.stderr.is_empty());
    let help = berth(&["volume", "--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("Usage: berth volume"), "{}", text(&help.stdout));
    assert!(help.stderr.is_empty());
}
