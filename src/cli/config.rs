//! `berth config`: the project as `docker compose config` prints it.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::output::out;
use super::{CliError, CliResult, GlobalOptions};
use crate::compose::Normalization;
use crate::compose::hash::service_hash;
use crate::compose::render::{Format, render};

/// Output format of `config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigFormat {
    /// YAML (default)
    Yaml,
    /// JSON
    Json,
}

/// Flags of `berth config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Format the output
    #[arg(long, value_enum, default_value_t = ConfigFormat::Yaml)]
    format: ConfigFormat,
    /// Only validate the configuration, don't print anything
    #[arg(short, long)]
    quiet: bool,
    /// Don't check model consistency (references between services, networks, volumes...)
    #[arg(long)]
    no_consistency: bool,
    /// Don't interpolate environment variables
    #[arg(long)]
    no_interpolate: bool,
    /// Don't resolve file paths
    #[arg(long)]
    no_path_resolution: bool,
    /// Don't normalize compose model (also with `--compatibility`, as docker compose)
    #[arg(long)]
    no_normalize: bool,
    /// Print the service names, one per line
    #[arg(long)]
    services: bool,
    /// Print the volume names, one per line
    #[arg(long)]
    volumes: bool,
    /// Print the network names, one per line
    #[arg(long)]
    networks: bool,
    /// Print the profile names, one per line
    #[arg(long = "profiles", id = "list_profiles")]
    list_profiles: bool,
    /// Print the image names, one per line
    #[arg(long)]
    images: bool,
    /// Print the service config hash, one per line ("*" for all services, or a comma list)
    #[arg(long, value_name = "SERVICES")]
    hash: Option<String>,
    /// Save to a file instead of printing
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Services to print (with what they depend on)
    #[arg(value_name = "SERVICE")]
    service_names: Vec<String>,
}

/// Runs `berth config`.
pub fn run(global: &GlobalOptions, args: &ConfigArgs) -> CliResult<()> {
    let mut opts = global.project_options()?;
    opts.consistency = !args.no_consistency;
    opts.interpolate = !args.no_interpolate;
    opts.resolve_paths = !args.no_path_resolution;
    // docker compose's `config` normalizes only outside compatibility mode (its PreRunE).
    opts.normalize = if args.no_normalize { Normalization::No } else { Normalization::UnlessCompatibility };
    opts.services = args.service_names.clone();
    if args.list_profiles {
        // Every profile the files define, whether active or not.
        opts.profiles.push("*".into());
    }
    let loaded = super::load(&opts)?;
    if args.quiet {
        return Ok(());
    }
    let mut selected = loaded.project.clone();
    if !args.service_names.is_empty() {
        let keep = super::graph::with_dependencies(&loaded, &args.service_names)?;
        selected.services.retain(|name, _| keep.contains(name));
        // As docker compose: only what the selected services use is printed.
        if !opts.all_resources {
            selected.without_unnecessary_resources();
        }
    }
    let project = &selected;
    let json =
        serde_json::to_value(project).map_err(|e| CliError::context("cannot render the project", e))?;
    let names = |section: &str| -> Vec<String> {
        json.get(section)
            .and_then(serde_json::Value::as_object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let text = if args.services {
        lines(names("services"))
    } else if args.volumes {
        lines(names("volumes"))
    } else if args.networks {
        lines(names("networks"))
    } else if args.list_profiles {
        let mut all: Vec<String> =
            loaded.project.services.values().flat_map(|s| s.profiles.iter().cloned()).collect();
        all.sort();
        all.dedup();
        lines(all)
    } else if args.images {
        lines(
            project
                .services
                .iter()
                .map(|(name, s)| {
                    s.image.clone().unwrap_or_else(|| {
                        crate::labels::image_name(&project.name, name, project.compatibility)
                    })
                })
                .collect(),
        )
    } else if let Some(selection) = &args.hash {
        let wanted: Vec<&str> = selection.split(',').map(str::trim).collect();
        let services =
            json.get("services").and_then(serde_json::Value::as_object).cloned().unwrap_or_default();
        for name in &wanted {
            if *name != "*" && !services.contains_key(*name) {
                return Err(CliError::msg(format!("no such service: {name}")));
            }
        }
        lines(
            services
                .iter()
                .filter(|(name, _)| wanted.contains(&"*") || wanted.contains(&name.as_str()))
                .map(|(name, s)| format!("{name} {}", service_hash(s)))
                .collect(),
        )
    } else {
        let format = match args.format {
            ConfigFormat::Json => Format::Json,
            ConfigFormat::Yaml => Format::Yaml,
        };
        render(&json, format, !args.no_interpolate)
            .map_err(|e| CliError::context("cannot render the project", e))?
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| CliError::context(format!("cannot write {}", path.display()), e))?,
        None => out!("{text}")?,
    }
    Ok(())
}

fn lines(items: Vec<String>) -> String {
    items.into_iter().map(|s| s + "\n").collect()
}
