//! `berth convert`: the project as Kubernetes manifests (see [`crate::convert`]), with the
//! report of what was not converted on standard error.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::output::{out, warn};
use super::{CliError, CliResult, GlobalOptions};
use crate::convert::{self, ConvertOptions, Format, Level};

/// Target platform of `convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Kubernetes 1.33 or later (Deployments, StatefulSets, Jobs, Services, claims)
    Kubernetes,
}

/// Output format of `convert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConvertFormat {
    /// YAML documents separated by `---` (default)
    Yaml,
    /// JSON (one `List` object; one object per file with `-o DIR`)
    Json,
}

/// Flags of `berth convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// What to convert to
    #[arg(long = "to", value_enum, default_value_t = Target::Kubernetes)]
    to: Target,
    /// Write to this file, or to this folder (one file per object) if it is one or ends in '/'
    #[arg(short, long, value_name = "FILE|DIR")]
    output: Option<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = ConvertFormat::Yaml)]
    format: ConvertFormat,
    /// Namespace written into every object
    #[arg(short, long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// Fail (and write nothing) if any compose key could not be converted
    #[arg(long)]
    strict: bool,
    /// Mount bind-mounted folders from each node's filesystem (hostPath) instead of refusing them
    #[arg(long)]
    host_path: bool,
    /// Services to convert (with what they depend on; default: all)
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
}

/// Runs `berth convert`.
pub fn run(global: &GlobalOptions, args: &ConvertArgs) -> CliResult<()> {
    let Target::Kubernetes = args.to;
    let mut opts = global.project_options()?;
    opts.services = args.services.clone();
    let loaded = super::load(&opts)?;
    let mut project = loaded.project.clone();
    if !args.services.is_empty() {
        let keep = super::graph::with_dependencies(&loaded, &args.services)?;
        project.services.retain(|name, _| keep.contains(name));
        if !opts.all_resources {
            project.without_unnecessary_resources();
        }
    }
    let options = ConvertOptions {
        namespace: args.namespace.clone(),
        host_path: args.host_path,
        environment: loaded.environment.clone(),
    };
    let conversion = convert::convert(&project, &options)?;
    for finding in conversion.report.findings() {
        warn(format_args!("{finding}"));
    }
    let dropped = conversion.report.dropped_count();
    if args.strict && dropped > 0 {
        return Err(convert::ConvertError::Strict(dropped).into());
    }
    if conversion.report.findings().iter().any(|f| f.level == Level::Note && f.key == "build") {
        warn(format_args!(
            "berth: run `berth push` before applying: the cluster pulls the images services build"
        ));
    }
    let format = match args.format {
        ConvertFormat::Yaml => Format::Yaml,
        ConvertFormat::Json => Format::Json,
    };
    let Some(path) = &args.output else {
        return out!("{}", convert::render(&conversion.manifests, format)?);
    };
    let is_dir = path.is_dir() || path.as_os_str().to_string_lossy().ends_with('/');
    if is_dir {
        std::fs::create_dir_all(path)
            .map_err(|e| CliError::context(format!("cannot create {}", path.display()), e))?;
        for m in &conversion.manifests {
            let file = path.join(convert::file_name(m, format));
            write(&file, &convert::render_one(m, format)?)?;
        }
        Ok(())
    } else {
        write(path, &convert::render(&conversion.manifests, format)?)
    }
}

/// Writes `text` to `path` through a temporary file in the same folder, renamed into place.
fn write(path: &std::path::Path, text: &str) -> CliResult<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let fail = |e: std::io::Error| CliError::context(format!("cannot write {}", path.display()), e);
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}
