//! `berth network ls|create|rm|inspect|prune`, and the hidden `berth dns` that runs the DNS
//! process.

use clap::{Args, Subcommand};

use super::output::{outln, statusln};
use super::{CliError, CliResult, GlobalOptions, key_values};
use crate::netns::{IpamPool, NetworkRecord, NetworkSpec, Networks};

/// `berth network ...`
#[derive(Debug, Args)]
pub struct NetworkArgs {
    #[command(subcommand)]
    command: NetworkCommand,
}

#[derive(Debug, Subcommand)]
enum NetworkCommand {
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// Only names
        #[arg(short, long)]
        quiet: bool,
        /// Output format (table or json)
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Create a network
    Create {
        /// Driver (only bridge)
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR form (repeatable: one per family)
        #[arg(long)]
        subnet: Vec<String>,
        /// Gateway for the subnet of the same position
        #[arg(long)]
        gateway: Vec<String>,
        /// Address range for the subnet of the same position
        #[arg(long)]
        ip_range: Vec<String>,
        /// No access to the outside
        #[arg(long)]
        internal: bool,
        /// Enable IPv6
        #[arg(long)]
        ipv6: bool,
        /// Label KEY=VALUE
        #[arg(long)]
        label: Vec<String>,
        /// Driver option KEY=VALUE
        #[arg(short, long)]
        opt: Vec<String>,
        /// Network name
        name: String,
    },
    /// Remove networks
    #[command(alias = "remove")]
    Rm {
        /// Names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show networks as JSON
    Inspect {
        /// Names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove all networks without attached containers
    Prune {
        /// Do not ask (berth never asks; accepted for compatibility)
        #[arg(short, long)]
        force: bool,
    },
}

/// `berth dns` (hidden): the DNS process.
#[derive(Debug, Args)]
pub struct DnsArgs {}

fn inspect_json(r: &NetworkRecord) -> serde_json::Value {
    serde_json::json!({
        "Name": r.name,
        "Id": r.id,
        "Created": r.created,
        "Driver": r.driver,
        "EnableIPv6": r.ipv6,
        "Internal": r.internal,
        "IPAM": {"Driver": "default", "Config": r.subnets.iter().map(|s| serde_json::json!({
            "Subnet": s.subnet.to_string(),
            "Gateway": s.gateway.to_string(),
            "IPRange": s.ip_range.map(|x| x.to_string()),
        })).collect::<Vec<_>>()},
        "Options": r.options,
        "Labels": r.labels,
        "Bridge": r.bridge,
    })
}

/// Runs `berth network ...`.
pub fn run(global: &GlobalOptions, args: &NetworkArgs) -> CliResult<()> {
    let nets = Networks::new(&global.dirs());
    match &args.command {
        NetworkCommand::Ls { quiet, format } => {
            let list = nets.list()?;
            if *quiet {
                for n in &list {
                    outln!("{}", n.name)?;
                }
            } else if format == "json" {
                for n in &list {
                    outln!("{}", inspect_json(n))?;
                }
            } else if format == "table" {
                outln!("{:<14}{:<30}{:<10}SUBNETS", "NETWORK ID", "NAME", "DRIVER")?;
                for n in &list {
                    let subnets: Vec<String> = n.subnets.iter().map(|s| s.subnet.to_string()).collect();
                    outln!(
                        "{:<14}{:<30}{:<10}{}",
                        &n.id[..12.min(n.id.len())],
                        n.name,
                        n.driver,
                        subnets.join(",")
                    )?;
                }
            } else {
                return Err(CliError::msg(format!("unknown format {format:?} (table or json)")));
            }
        }
        NetworkCommand::Create { driver, subnet, gateway, ip_range, internal, ipv6, label, opt, name } => {
            if gateway.len() > subnet.len() || ip_range.len() > subnet.len() {
                return Err(CliError::msg("--gateway and --ip-range need a --subnet each"));
            }
            let ipam = subnet
                .iter()
                .enumerate()
                .map(|(i, s)| IpamPool {
                    subnet: Some(s.clone()),
                    gateway: gateway.get(i).cloned(),
                    ip_range: ip_range.get(i).cloned(),
                })
                .collect();
            let spec = NetworkSpec {
                name: name.clone(),
                driver: driver.clone(),
                internal: *internal,
                enable_ipv6: *ipv6,
                ipam,
                driver_opts: key_values(opt, "option")?,
                labels: key_values(label, "label")?,
                external: false,
            };
            let rec = nets.create(&spec)?;
            outln!("{}", rec.id)?;
        }
        NetworkCommand::Rm { names } => {
            let mut failed = Vec::new();
            for n in names {
                match nets.remove(n) {
                    Ok(()) => statusln!("{n}"),
                    Err(e) => failed.push(CliError::from(e).to_string()),
                }
            }
            if !failed.is_empty() {
                return Err(CliError::msg(failed.join("\n")));
            }
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in names {
                out.push(inspect_json(&nets.inspect(n)?));
            }
            let text = serde_json::to_string_pretty(&out).map_err(CliError::from)?;
            outln!("{text}")?;
        }
        NetworkCommand::Prune { force: _ } => {
            for n in nets.list()? {
                if nets.attached(&n.name)?.is_empty() {
                    nets.remove(&n.name)?;
                    statusln!("Deleted Network: {}", n.name);
                }
            }
        }
    }
    Ok(())
}

/// Runs the DNS process (`berth dns`).
pub fn run_dns(global: &GlobalOptions, _args: &DnsArgs) -> CliResult<()> {
    Ok(crate::netns::dns::serve(&global.dirs())?)
}
