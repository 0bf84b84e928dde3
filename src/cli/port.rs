//! `berth port`: the host address a container port is published on.

use clap::Args;

use super::output::outln;
use super::project;
use super::{CliResult, GlobalOptions};
use crate::engine::query;

/// `berth port` flags.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// tcp or udp
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// Index of the container if the service has multiple replicas (default: the first)
    #[arg(long, default_value_t = 0)]
    index: u32,
    /// The service
    service: String,
    /// The container port
    private_port: u16,
}

/// Runs `berth port`; without a compose file, `-p NAME` finds the project by its containers.
pub fn run(global: &GlobalOptions, args: &PortArgs) -> CliResult<()> {
    let target = project::open_or_name(global)?;
    let container = target.container(&args.service, args.index)?;
    let found = query::published(&target.engine.host(), &container, args.private_port, &args.protocol)?;
    let ip = found.host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into());
    outln!("{ip}:{}", found.host_port)
}
