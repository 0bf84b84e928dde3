//! Shell completions and man pages generated from the clap definitions (`berth completion
//! SHELL`, the hidden `berth man`), and the docker compose plug-in entry: called as
//! `docker-compose` (a symlink, or `~/.docker/cli-plugins/docker-compose`), berth answers the
//! docker CLI's plug-in handshake and takes `docker compose ARGS` as `berth ARGS`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};

use super::output::{self, outln};
use super::{Cli, CliError, CliResult};

/// `berth completion` arguments.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell: bash, zsh, fish, elvish or powershell
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell`.
pub fn run_completion(args: &CompletionArgs) -> CliResult<()> {
    let mut cmd = Cli::command();
    let mut out = output::Stdout;
    clap_complete::generate(args.shell, &mut cmd, "berth", &mut out);
    std::io::Write::flush(&mut out).map_err(output::stream_error)
}

/// `berth man` arguments.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write berth.1 and one berth-COMMAND.1 page per command into this folder (default: print
    /// berth.1 to standard output)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Prints berth(1), or writes every command's page into `args.dir`.
pub fn run_man(args: &ManArgs) -> CliResult<()> {
    let cmd = Cli::command();
    match &args.dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| CliError::context(dir.display(), e))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| CliError::context(dir.display(), e))
        }
        None => {
            let mut out = output::Stdout;
            clap_mangen::Man::new(cmd).render(&mut out).map_err(output::stream_error)?;
            std::io::Write::flush(&mut out).map_err(output::stream_error)
        }
    }
}

/// The docker CLI's plug-in handshake argument.
const METADATA: &str = "docker-cli-plugin-metadata";

/// What berth was called as: itself, or docker compose.
pub enum Entry {
    /// Parse these arguments as berth's.
    Args(Vec<OsString>),
    /// The docker CLI asks for the plug-in's metadata.
    Metadata,
    /// A command line berth cannot honour (a remote Docker daemon): why.
    Refused(Refusal),
}

/// Why berth cannot honour a docker-compose command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A flag that would reach another Docker daemon.
    #[error(
        "{flag} {value}: berth runs containers on this host without a Docker daemon; a remote or other \
         daemon is not supported"
    )]
    NoDaemon {
        /// The flag.
        flag: String,
        /// Its value (or what it means, for a flag without one).
        value: String,
    },
    /// A flag without its value.
    #[error("flag needs an argument: '{0}'")]
    NoValue(String),
}

/// berth's arguments from the process's: called as `docker-compose` (a plug-in or a standalone
/// symlink) it is docker compose's command line, which berth's matches; the docker CLI calls a
/// plug-in as `docker-compose compose ARGS`, and first with `docker-cli-plugin-metadata`.
pub fn entry(mut argv: Vec<OsString>) -> Entry {
    let called = argv.first().map(|a| Path::new(a).file_name().map(OsString::from).unwrap_or_default());
    if called.as_deref() != Some(std::ffi::OsStr::new("docker-compose")) {
        return Entry::Args(argv);
    }
    match argv.get(1).and_then(|a| a.to_str()) {
        Some(METADATA) => return Entry::Metadata,
        Some("compose") => {
            argv.remove(1);
        }
        // Standalone, the v1 name: docker compose v2 converts the command line first.
        _ => match convert_standalone(argv.split_off(1)) {
            Ok(rest) => argv.extend(rest),
            Err(why) => return Entry::Refused(why),
        },
    }
    argv[0] = "berth".into();
    Entry::Args(argv)
}

/// What docker compose v2 does to its arguments when it runs standalone as `docker-compose`
/// (its `compatibility.Convert`): among the flags before the first other argument, the docker
/// CLI's own are taken out and given to the docker CLI, and `--verbose` becomes docker's
/// `--debug`; the rest is compose's. berth has no Docker daemon: `-D`/`--debug`/`--verbose`
/// and `--log-level` set how much it says on standard error; `-H`/`--host` is accepted for a
/// local socket (`unix://`; berth's containers are this host's) and `--context` for `default`,
/// and a remote daemon (another host or context, TLS) is refused with the reason.
fn convert_standalone(args: Vec<OsString>) -> Result<Vec<OsString>, Refusal> {
    let no_daemon =
        |flag: &str, value: &str| Refusal::NoDaemon { flag: flag.to_string(), value: value.to_string() };
    let mut out = Vec::with_capacity(args.len());
    let mut rest = args.into_iter();
    while let Some(arg) = rest.next() {
        // The command, or a value of a compose flag (`-f FILE`): the rest goes as it is.
        let Some(text) = arg.to_str().filter(|t| t.starts_with('-')).map(str::to_string) else {
            out.push(arg);
            break;
        };
        match text.as_str() {
            "--verbose" | "--debug" | "-D" => {
                out.push("--verbose".into());
                continue;
            }
            "--tls" | "--tlsverify" => return Err(no_daemon(&text, "(TLS to a daemon)")),
            _ => {}
        }
        let valued = ["--tlscacert", "--tlscert", "--tlskey", "--host", "-H", "--context", "--log-level"];
        let Some((flag, inline)) = valued.iter().find_map(|f| {
            if text == *f {
                Some((*f, None))
            } else {
                text.strip_prefix(f).and_then(|t| t.strip_prefix('=')).map(|v| (*f, Some(v.to_string())))
            }
        }) else {
            out.push(arg);
            continue;
        };
        let value = match inline {
            Some(v) => v,
            None => match rest.next() {
                Some(v) => v.to_string_lossy().into_owned(),
                None => return Err(Refusal::NoValue(flag.to_string())),
            },
        };
        match flag {
            "--host" | "-H" if value.starts_with("unix://") => {}
            "--context" if value == "default" => {}
            "--log-level" => out.extend(["--log-level".into(), value.into()]),
            _ => return Err(no_daemon(flag, &value)),
        }
    }
    out.extend(rest);
    Ok(out)
}

/// The plug-in metadata the docker CLI reads (its `SchemaVersion` 0.1.0 format).
pub fn print_metadata() -> CliResult<()> {
    let meta = serde_json::json!({
        "SchemaVersion": "0.1.0",
        "Vendor": "berth",
        "Version": super::ls::version(),
        "ShortDescription": "Docker Compose (berth: a daemonless compose orchestrator)",
    });
    outln!("{meta}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn parsed(v: &[&str]) -> Vec<String> {
        match entry(args(v)) {
            Entry::Args(a) => a.iter().map(|s| s.to_string_lossy().into_owned()).collect(),
            Entry::Metadata => vec!["<metadata>".into()],
            Entry::Refused(why) => vec![format!("<refused: {why}>")],
        }
    }

    #[test]
    fn standalone_docker_compose_takes_v1_command_lines_as_docker_compose_v2_does() {
        // The docker CLI's flags before the command: debug output, a local daemon.
        assert_eq!(
            parsed(&[
                "docker-compose",
                "--verbose",
                "-H",
                "unix:///var/run/docker.sock",
                "up",
                "--build",
                "-d"
            ]),
            ["berth", "--verbose", "up", "--build", "-d"]
        );
        assert_eq!(
            parsed(&[
                "docker-compose",
                "-D",
                "--log-level=warn",
                "--context",
                "default",
                "-f",
                "a.yml",
                "ps"
            ]),
            ["berth", "--verbose", "--log-level", "warn", "-f", "a.yml", "ps"]
        );
        assert_eq!(parsed(&["docker-compose", "--host=unix:///run/d.sock", "ps"]), ["berth", "ps"]);
        // compose's own flags stay (--no-ansi, --compatibility, --workdir are berth's too).
        assert_eq!(
            parsed(&["docker-compose", "--no-ansi", "-p", "x", "logs"]),
            ["berth", "--no-ansi", "-p", "x", "logs"]
        );
        // Only before the first other argument, as docker compose converts: after `-f FILE`
        // the rest is compose's as it is.
        assert_eq!(
            parsed(&["docker-compose", "-f", "a.yml", "-D", "ps"]),
            ["berth", "-f", "a.yml", "-D", "ps"]
        );
        assert_eq!(
            parsed(&["docker-compose", "exec", "web", "-H", "x"]),
            ["berth", "exec", "web", "-H", "x"]
        );
        // A daemon elsewhere is refused, named.
        for argv in [
            &["docker-compose", "-H", "tcp://10.0.0.1:2376", "ps"][..],
            &["docker-compose", "--context", "remote", "ps"],
            &["docker-compose", "--tlsverify", "ps"],
            &["docker-compose", "--tlscert=/c.pem", "ps"],
        ] {
            let out = parsed(argv);
            assert!(
                out[0].starts_with("<refused: ") && out[0].contains("without a Docker daemon"),
                "{out:?}"
            );
        }
        assert!(parsed(&["docker-compose", "-H"])[0].contains("flag needs an argument: '-H'"));
        // As a plug-in, the docker CLI has taken its own flags already.
        assert_eq!(parsed(&["docker-compose", "compose", "--verbose", "ps"]), ["berth", "--verbose", "ps"]);
    }

    #[test]
    fn docker_compose_names_are_berth() {
        assert_eq!(parsed(&["/usr/bin/berth", "ps"]), ["/usr/bin/berth", "ps"]);
        assert_eq!(
            parsed(&["/root/.docker/cli-plugins/docker-compose", "compose", "-p", "x", "ps"]),
            ["berth", "-p", "x", "ps"]
        );
        assert_eq!(parsed(&["docker-compose", "ps", "-a"]), ["berth", "ps", "-a"]);
        assert_eq!(parsed(&["docker-compose", METADATA]), ["<metadata>"]);
        // A berth binary named otherwise is berth, even asked for metadata.
        assert_eq!(parsed(&["berth", METADATA]), ["berth", METADATA]);
    }

    #[test]
    fn completions_and_man_pages_come_from_the_definitions() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "berth", &mut buf);
            let text = String::from_utf8(buf).unwrap();
            assert!(
                text.contains("berth") && text.contains("logs") && text.contains("no-log-prefix"),
                "{shell}"
            );
        }
        let mut buf = Vec::new();
        clap_mangen::Man::new(Cli::command()).render(&mut buf).unwrap();
        let text = String::from_utf8(buf).unwrap();
        assert!(text.starts_with(".ie") || text.contains(".TH berth"), "{}", &text[..200.min(text.len())]);
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        clap_mangen::generate_to(Cli::command(), dir.path()).unwrap();
        assert!(dir.path().join("berth.1").exists() && dir.path().join("berth-ps.1").exists());
    }
}
