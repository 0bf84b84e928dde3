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
            std::fs::create_dir_all(dir).map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| CliError::msg(format!("{}: {e}", dir.display())))
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
        _ => {}
    }
    argv[0] = "berth".into();
    Entry::Args(argv)
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
        }
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
