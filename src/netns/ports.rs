//! Published ports: resolving requests into concrete host ports (free ephemeral ones for 0),
//! and refusing ports that are taken, before anything is made. See PORTS.md for why the
//! forwarding itself is DNAT in nftables and not a userspace proxy.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use super::error::NetError;
use super::record::EndpointRecord;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl std::str::FromStr for Protocol {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" | "" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(NetError::Invalid(format!("unsupported protocol {other:?}"))),
        }
    }
}

/// A port to publish, as the compose file asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortRequest {
    /// Host address to listen on (None: all addresses).
    pub host_ip: Option<IpAddr>,
    /// Host port range (inclusive); `None` or `(0, 0)` picks free ephemeral ports.
    pub host_port: Option<(u16, u16)>,
    /// Container port range (inclusive).
    pub container_port: (u16, u16),
    /// tcp or udp.
    pub protocol: Protocol,
    /// Network whose address receives the traffic (default: the first endpoint's).
    pub network: Option<String>,
}

/// A port as published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    /// Host address (None: all addresses of the host).
    pub host_ip: Option<IpAddr>,
    /// Host port.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// tcp or udp.
    pub protocol: Protocol,
    /// The container address traffic is sent to.
    pub container_ip: IpAddr,
    /// The network of that address.
    pub network: String,
    /// The bridge of that network.
    pub bridge: String,
}

/// Tries to bind `ip:port` to learn whether it is free (port 0: asks the kernel for one).
fn probe(ip: IpAddr, port: u16, proto: Protocol) -> std::io::Result<u16> {
    let addr = SocketAddr::new(ip, port);
    match proto {
        Protocol::Tcp => TcpListener::bind(addr)?.local_addr().map(|a| a.port()),
        Protocol::Udp => UdpSocket::bind(addr)?.local_addr().map(|a| a.port()),
    }
}

fn taken_by_berth(others: &[EndpointRecord], ip: Option<IpAddr>, port: u16, proto: Protocol) -> bool {
    others.iter().flat_map(|r| &r.ports).any(|p| {
        p.host_port == port && p.protocol == proto && (p.host_ip.is_none() || ip.is_none() || p.host_ip == ip)
    })
}

/// Resolves requests into published ports: picks ephemeral ports, checks every host port is
/// free (on the host and among berth's own DNAT rules, which hold no socket), and fails with
/// the first taken port before anything is made. `target` maps a network name (or None for the
/// default) and the family wanted (IPv6 when the host address is IPv6) to the container address
/// and bridge.
pub fn resolve(
    requests: &[PortRequest],
    others: &[EndpointRecord],
    target: impl Fn(Option<&str>, bool) -> Result<(IpAddr, String, String), NetError>,
) -> Result<Vec<PublishedPort>, NetError> {
    let mut out: Vec<PublishedPort> = Vec::new();
    for req in requests {
        let want_v6 = matches!(req.host_ip, Some(IpAddr::V6(ip)) if !ip.is_unspecified());
        let (container_ip, network, bridge) = target(req.network.as_deref(), want_v6)?;
        match req.host_ip {
            // IPv6 has no route_localnet, so DNAT from ::1 cannot leave the host (PORTS.md).
            Some(IpAddr::V6(ip)) if ip.is_loopback() => {
                return Err(NetError::Invalid(format!(
                    "publishing on [::1]:{} is not supported (IPv6 loopback cannot be forwarded); use 127.0.0.1",
                    req.host_port.map_or(0, |p| p.0)
                )));
            }
            Some(IpAddr::V6(ip)) if container_ip.is_ipv4() && !ip.is_unspecified() => {
                return Err(NetError::Invalid(format!(
                    "publishing on {ip} needs an IPv6 address in the container, and network {network} gives it none"
                )));
            }
            _ => {}
        }
        let (c0, c1) = req.container_port;
        if c0 == 0 || c1 < c0 {
            return Err(NetError::Invalid(format!("invalid container port range {c0}-{c1}")));
        }
        let bind_ip = req.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let in_use = |port: u16, out: &[PublishedPort]| {
            taken_by_berth(others, req.host_ip, port, req.protocol)
                || out.iter().any(|p| {
                    p.host_port == port
                        && p.protocol == req.protocol
                        && (p.host_ip.is_none() || req.host_ip.is_none() || p.host_ip == req.host_ip)
                })
        };
        let err = |port: u16, reason: String| NetError::PortInUse {
            host_ip: bind_ip.to_string(),
            port,
            proto: req.protocol.as_str().into(),
            reason,
        };
        let host_ports: Vec<u16> = match req.host_port {
            None | Some((0, 0)) => {
                let mut ports = Vec::new();
                for _ in c0..=c1 {
                    // The kernel hands out a free ephemeral port; retry if berth already
                    // published it (a DNAT rule holds no socket).
                    let mut found = None;
                    for _ in 0..32 {
                        let p = probe(bind_ip, 0, req.protocol).map_err(|e| err(0, e.to_string()))?;
                        if !in_use(p, &out) && !ports.contains(&p) {
                            found = Some(p);
                            break;
                        }
                    }
                    ports.push(found.ok_or_else(|| err(0, "no free ephemeral port".into()))?);
                }
                ports
            }
            Some((h0, h1)) if h1 < h0 || h0 == 0 => {
                return Err(NetError::Invalid(format!("invalid host port range {h0}-{h1}")));
            }
            Some((h0, h1)) if h1 - h0 == c1 - c0 => {
                let mut ports = Vec::new();
                for p in h0..=h1 {
                    if in_use(p, &out) {
                        return Err(err(p, "already published by another berth container".into()));
                    }
                    probe(bind_ip, p, req.protocol).map_err(|e| err(p, e.to_string()))?;
                    ports.push(p);
                }
                ports
            }
            Some((h0, h1)) if c0 == c1 => {
                // One container port, a host range: the first free port of the range.
                let p = (h0..=h1)
                    .find(|p| !in_use(*p, &out) && probe(bind_ip, *p, req.protocol).is_ok())
                    .ok_or_else(|| err(h0, format!("no free port in {h0}-{h1}")))?;
                vec![p]
            }
            Some((h0, h1)) => {
                return Err(NetError::Invalid(format!(
                    "host port range {h0}-{h1} does not match container port range {c0}-{c1}"
                )));
            }
        };
        for (host_port, container_port) in host_ports.into_iter().zip(c0..=c1) {
            out.push(PublishedPort {
                host_ip: req.host_ip,
                host_port,
                container_port,
                protocol: req.protocol,
                container_ip,
                network: network.clone(),
                bridge: bridge.clone(),
            });
        }
    }
    Ok(out)
}
