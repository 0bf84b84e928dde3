//! `berth port`: the host address a container port is published on.

use clap::Args;

use super::output::outln;
use super::project;
use super::{CliError, CliResult, GlobalOptions};
use crate::netns::record::read_endpoint;

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
    let ports = read_endpoint(target.engine.dirs(), &container.id)?.map(|e| e.ports).unwrap_or_default();
    let found = ports
        .iter()
        .find(|p| p.container_port == args.private_port && p.protocol.as_str() == args.protocol)
        .ok_or_else(|| {
            CliError::msg(format!(
                "no port {}/{} is published for container {}",
                args.private_port, args.protocol, container.name
            ))
        })?;
    let ip = found.host_ip.map(|ip| ip.to_string()).unwrap_or_else(|| "0.0.0.0".into());
    outln!("{ip}:{}", found.host_port)
}
