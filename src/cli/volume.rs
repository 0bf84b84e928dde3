//! `berth volume ls|create|rm|inspect|prune`.

use clap::{Args, Subcommand};

use super::output::{outln, statusln};
use super::{CliError, CliResult, GlobalOptions, key_values};
use crate::volume::{VolumeRecord, VolumeSpec, Volumes};

/// `berth volume ...`
#[derive(Debug, Args)]
pub struct VolumeArgs {
    #[command(subcommand)]
    command: VolumeCommand,
}

#[derive(Debug, Subcommand)]
enum VolumeCommand {
    /// List volumes
    #[command(alias = "list")]
    Ls {
        /// Only names
        #[arg(short, long)]
        quiet: bool,
        /// Output format (table or json)
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Create a volume
    Create {
        /// Driver (only local)
        #[arg(short, long, default_value = "local")]
        driver: String,
        /// Driver option KEY=VALUE (type, device, o)
        #[arg(short, long)]
        opt: Vec<String>,
        /// Label KEY=VALUE
        #[arg(long)]
        label: Vec<String>,
        /// Volume name
        name: String,
    },
    /// Remove volumes
    #[command(alias = "remove")]
    Rm {
        /// Remove even when containers use it (no -f: the global --file flag owns it)
        #[arg(long)]
        force: bool,
        /// Volume names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show volumes as JSON
    Inspect {
        /// Volume names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused ones with --all)
    Prune {
        /// Also named volumes
        #[arg(short, long)]
        all: bool,
        /// Don't ask (berth never asks; accepted for compatibility)
        #[arg(short, long)]
        force: bool,
    },
}

fn inspect_json(v: &VolumeRecord) -> serde_json::Value {
    serde_json::json!({
        "CreatedAt": v.created,
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": v.driver_opts,
        "Scope": v.scope,
    })
}

/// Runs `berth volume ...`.
pub fn run(global: &GlobalOptions, args: &VolumeArgs) -> CliResult<()> {
    let vols = Volumes::new(&global.dirs());
    match &args.command {
        VolumeCommand::Ls { quiet, format } => {
            let list = vols.list()?;
            if *quiet {
                for v in &list {
                    outln!("{}", v.name)?;
                }
            } else if format == "json" {
                for v in &list {
                    outln!("{}", inspect_json(v))?;
                }
            } else if format == "table" {
                outln!("DRIVER     VOLUME NAME")?;
                for v in &list {
                    outln!("{:<10} {}", v.driver, v.name)?;
                }
            } else {
                return Err(CliError::msg(format!("--format {format:?}: expected table or json")));
            }
        }
        VolumeCommand::Create { driver, opt, label, name } => {
            let spec = VolumeSpec {
                name: name.clone(),
                driver: driver.clone(),
                driver_opts: key_values(opt, "--opt")?,
                labels: key_values(label, "--label")?,
            };
            vols.create(&spec)?;
            outln!("{name}")?;
        }
        VolumeCommand::Rm { force, names } => {
            let mut failed = Vec::new();
            for name in names {
                match vols.remove(name, *force) {
                    Ok(()) => statusln!("{name}"),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if !failed.is_empty() {
                return Err(CliError::msg(failed.join("; ")));
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for name in names {
                let v = vols.get(name)?.ok_or_else(|| CliError::msg(format!("no such volume: {name}")))?;
                out.push(inspect_json(&v));
            }
            outln!("{}", serde_json::to_string_pretty(&out).map_err(CliError::from)?)?;
        }
        VolumeCommand::Prune { all, force: _ } => {
            let removed = vols.prune(*all)?;
            if !removed.is_empty() {
                outln!("Deleted Volumes:")?;
                for name in &removed {
                    outln!("{name}")?;
                }
            }
        }
    }
    Ok(())
}
