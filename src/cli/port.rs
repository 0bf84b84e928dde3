//! `berth port`: the host address a container port is published on.

use clap::Args;

use super::output::outln;
use super::project;
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::observe::project_containers;
use crate::netns::record::read_endpoint;

/// `berth port` flags.
#[derive(Debug, Args)]
pub struct PortArgs {
    /// tcp or udp
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// Which replica of the service (1-based)
    #[arg(long, default_value_t = 1)]
    index: u32,
    /// The service
    service: String,
    /// The container port
    private_port: u16,
}

/// Runs `berth port`.
pub fn run(global: &GlobalOptions, args: &PortArgs) -> CliResult<()> {
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, std::slice::from_ref(&args.service))?;
    let container = project_containers(&ctx.engine.runtime, &ctx.loaded.project.name)?
        .into_iter()
        .find(|c| c.service == args.service && c.number == args.index && !c.oneoff)
        .ok_or_else(|| {
            CliError::msg(format!("service {:?} has no container number {}", args.service, args.index))
        })?;
    let ports = read_endpoint(ctx.engine.dirs(), &container.id)?.map(|e| e.ports).unwrap_or_default();
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
