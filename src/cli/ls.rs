//! `berth ls`: the compose projects on this host, found by their containers' labels (docker
//! compose's `ls`), and `berth version`.

use clap::Args;

use super::output::{out, outln};
use super::project;
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::discover::{ProjectSummary, list_projects};

/// `berth ls` flags (docker compose's).
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Show all stopped Compose projects
    #[arg(short = 'a', long)]
    all: bool,
    /// Only display project names
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Filter output based on conditions provided (name=REGEX; repeatable)
    #[arg(long, value_name = "KEY=VALUE")]
    filter: Vec<String>,
    /// Format the output: table or json
    #[arg(long, default_value = "table")]
    format: String,
}

/// Whether project `name` passes the `name=` filters: any equal to it, or any regular expression
/// that matches part of it (docker's filter matching).
fn name_matches(patterns: &[String], name: &str) -> CliResult<bool> {
    if patterns.is_empty() || patterns.iter().any(|p| p == name) {
        return Ok(true);
    }
    for p in patterns {
        // An invalid expression matches nothing, as in docker.
        if let Ok(re) = regex::Regex::new(p)
            && re.is_match(name)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Columns padded as Go's tabwriter with `minwidth` and 3 spaces of padding pads them.
fn pretty(lines: &[Vec<String>], minwidth: usize) -> String {
    let cols = lines.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for l in lines {
        for (i, c) in l.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut text = String::new();
    for l in lines {
        for (i, c) in l.iter().enumerate() {
            if i + 1 == l.len() {
                text.push_str(c);
            } else {
                let w = (widths[i] + 3).max(minwidth);
                text.push_str(&format!("{c:<w$}"));
            }
        }
        text.push('\n');
    }
    text
}

/// Runs `berth ls`.
pub fn run(global: &GlobalOptions, args: &LsArgs) -> CliResult<()> {
    let mut names = Vec::new();
    for f in &args.filter {
        match f.split_once('=') {
            Some(("name", v)) => names.push(v.to_string()),
            Some((k, _)) => return Err(CliError::msg(format!("invalid filter '{k}'"))),
            None => return Err(CliError::msg(format!("bad format of filter (expected name=value): {f}"))),
        }
    }
    let format = args.format.to_lowercase();
    if !matches!(format.as_str(), "table" | "pretty" | "" | "json" | "{{json .}}") {
        return Err(CliError::msg(format!(
            "format value {:?} could not be parsed: parsing failed",
            args.format
        )));
    }
    let engine = project::engine(global)?;
    let mut projects: Vec<ProjectSummary> = Vec::new();
    for p in list_projects(&engine.runtime, args.all)? {
        if name_matches(&names, &p.name)? {
            projects.push(p);
        }
    }
    if args.quiet {
        for p in &projects {
            outln!("{}", p.name)?;
        }
        return Ok(());
    }
    let json = |v: &dyn erased::Json| v.to_json().map_err(CliError::from);
    match format.as_str() {
        // One array on one line, as docker compose prints it.
        "json" => outln!("{}", json(&projects)?),
        // The legacy `{{json .}}`: one object per line.
        "{{json .}}" => {
            for p in &projects {
                outln!("{}", json(p)?)?;
            }
            Ok(())
        }
        _ => {
            let mut lines = vec![vec!["NAME".to_string(), "STATUS".into(), "CONFIG FILES".into()]];
            lines.extend(
                projects.iter().map(|p| vec![p.name.clone(), p.status.clone(), p.config_files.clone()]),
            );
            out!("{}", pretty(&lines, 20))
        }
    }
}

mod erased {
    /// Anything serde can write as JSON, behind a reference.
    pub trait Json {
        fn to_json(&self) -> serde_json::Result<String>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Result<String> {
            serde_json::to_string(self)
        }
    }
}

/// `berth version` flags (docker compose's).
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Format the output: pretty or json
    #[arg(short = 'f', long, default_value = "pretty")]
    format: String,
    /// Shows only the Docker Compose version number berth stands in for
    #[arg(long)]
    short: bool,
}

/// The docker compose release whose command line berth follows, which `version` reports.
/// Tools that drive docker compose (python-on-whales, IDEs, Makefiles) check its version
/// (`>= 2`, or a minimum per feature) before using it; berth's own `0.x` would be refused.
/// 2.29 is the last release whose commands berth has in full (one-object-per-line `ps`
/// JSON of 2.21, `watch`, `attach`, `scale`, `wait --down-project`); later ones add commands
/// berth lacks (`volumes`, `export`, `commit`, `publish`), so a tool gating on those keeps
/// away from them. Raise it when berth gains them.
pub const COMPOSE_VERSION: &str = "2.29.0";

/// The version berth reports where docker compose reports its own: `v` and the number.
pub fn version() -> String {
    format!("v{COMPOSE_VERSION}")
}

/// The long form (`version`, `--version`): docker compose's line, so that tools reading
/// `Docker Compose version vX.Y.Z` find it, then berth's own version.
pub fn long_version() -> String {
    format!("Docker Compose version {} (berth v{})", version(), env!("CARGO_PKG_VERSION"))
}

/// `version`'s output for `args`.
fn version_text(args: &VersionArgs) -> CliResult<String> {
    if args.short {
        return Ok(COMPOSE_VERSION.to_string());
    }
    match args.format.as_str() {
        // docker compose's one field, plus berth's own (a reader ignores what it does not know).
        "json" => Ok(serde_json::json!({
            "version": version(),
            "berth": format!("v{}", env!("CARGO_PKG_VERSION")),
        })
        .to_string()),
        "pretty" | "" => Ok(long_version()),
        other => Err(CliError::msg(format!("--format {other:?}: expected pretty or json"))),
    }
}

/// Runs `berth version`.
pub fn run_version(args: &VersionArgs) -> CliResult<()> {
    outln!("{}", version_text(args)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_reports_a_docker_compose_2_version_and_berths_own() {
        let args = |format: &str, short: bool| VersionArgs { format: format.into(), short };
        let short = version_text(&args("pretty", true)).unwrap();
        let major: u32 = short.split('.').next().unwrap().parse().unwrap();
        assert!(major >= 2 && short.split('.').count() == 3, "{short}");
        let long = version_text(&args("pretty", false)).unwrap();
        let berth = format!("(berth v{})", env!("CARGO_PKG_VERSION"));
        assert_eq!(long, format!("Docker Compose version v{short} {berth}"));
        let json: serde_json::Value =
            serde_json::from_str(&version_text(&args("json", false)).unwrap()).unwrap();
        assert_eq!(json["version"], format!("v{short}"));
        assert_eq!(json["berth"], format!("v{}", env!("CARGO_PKG_VERSION")));
        assert!(version_text(&args("yaml", false)).is_err());
    }

    #[test]
    fn names_match_exactly_or_by_expression() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(name_matches(&[], "x").unwrap());
        assert!(name_matches(&p(&["web"]), "web").unwrap());
        assert!(name_matches(&p(&["^we"]), "web").unwrap());
        assert!(!name_matches(&p(&["^db$", "("]), "web").unwrap());
    }

    #[test]
    fn tables_pad_like_go_tabwriter() {
        let t = pretty(
            &[
                vec!["NAME".into(), "STATUS".into(), "CONFIG FILES".into()],
                vec!["p".into(), "running(3)".into(), "/a.yaml".into()],
            ],
            20,
        );
        assert_eq!(
            t,
            "NAME                STATUS              CONFIG FILES\np                   running(3)          /a.yaml\n"
        );
    }
}
