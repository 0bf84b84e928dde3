//! What the DNS server knows, rebuilt from state files on every reload: which gateway address
//! belongs to which network, the names registered on each network, and which container asks
//! from which address.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::netns::error::NetError;
use crate::netns::hosts::{host_resolv_conf, nameservers};
use crate::netns::record::{all_endpoints, all_networks};
use crate::state::Dirs;

/// One network as the DNS server sees it.
#[derive(Debug, Clone)]
pub struct NetInfo {
    /// Network name.
    pub name: String,
    /// Its subnets (askers must be in one).
    pub subnets: Vec<ipnet::IpNet>,
    /// Its gateway addresses (where the server listens).
    pub gateways: Vec<IpAddr>,
}

/// A container known by its address.
#[derive(Debug, Clone, Default)]
pub struct Asker {
    /// The networks it is attached to.
    pub networks: Vec<String>,
    /// DNS servers it asked for (empty: the host's).
    pub dns: Vec<IpAddr>,
}

/// The lookup tables.
#[derive(Debug, Default)]
pub struct Table {
    /// Networks.
    pub networks: Vec<NetInfo>,
    /// (network, lower-case name) to addresses.
    pub names: HashMap<(String, String), Vec<IpAddr>>,
    /// Containers by address.
    pub askers: HashMap<IpAddr, Asker>,
    /// The host's upstream resolvers.
    pub upstream: Vec<IpAddr>,
}

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// The asker is not on the network of the address it asked.
    Refused,
    /// A name registered here, with its addresses (may be empty for this record type).
    Local(Vec<IpAddr>),
    /// Not ours: forward to these resolvers.
    Forward(Vec<IpAddr>),
}

impl Table {
    /// Builds the tables from the records under `dirs`.
    pub fn load(dirs: &Dirs) -> Result<Table, NetError> {
        let mut t = Table { upstream: nameservers(&host_resolv_conf()), ..Table::default() };
        for n in all_networks(dirs)? {
            t.networks.push(NetInfo {
                name: n.name.clone(),
                subnets: n.subnets.iter().map(|s| s.subnet).collect(),
                gateways: n.gateways(),
            });
        }
        for rec in all_endpoints(dirs)? {
            let dns: Vec<IpAddr> = rec.dns.iter().filter_map(|s| s.parse().ok()).collect();
            let networks: Vec<String> = rec.endpoints.iter().map(|e| e.network.clone()).collect();
            for ep in &rec.endpoints {
                let ips: Vec<IpAddr> =
                    ep.ipv4.map(IpAddr::V4).into_iter().chain(ep.ipv6.map(IpAddr::V6)).collect();
                for ip in &ips {
                    t.askers.insert(*ip, Asker { networks: networks.clone(), dns: dns.clone() });
                }
                let mut names: Vec<String> = ep.aliases.clone();
                names.push(rec.container_name.clone());
                names.push(rec.hostname.clone());
                names.push(rec.container_id.chars().take(12).collect());
                names.sort();
                names.dedup();
                for name in names.into_iter().filter(|n| !n.is_empty()) {
                    let entry = t.names.entry((ep.network.clone(), name.to_ascii_lowercase())).or_default();
                    for ip in &ips {
                        if !entry.contains(ip) {
                            entry.push(*ip);
                        }
                    }
                }
            }
        }
        Ok(t)
    }

    /// Every address the server should listen on.
    pub fn listen_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.networks.iter().flat_map(|n| n.gateways.iter().copied()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Looks `name` up for an asker at `from` that sent its query to `local` (a gateway).
    pub fn lookup(&self, name: &str, from: IpAddr, local: IpAddr) -> Answer {
        let Some(net) = self.networks.iter().find(|n| n.gateways.contains(&local)) else {
            return Answer::Refused;
        };
        if !net.subnets.iter().any(|s| s.contains(&from)) {
            return Answer::Refused;
        }
        let asker = self.askers.get(&from);
        let nets: Vec<&str> = match asker {
            Some(a) if !a.networks.is_empty() => a.networks.iter().map(String::as_str).collect(),
            _ => vec![net.name.as_str()],
        };
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        let mut found: Option<Vec<IpAddr>> = None;
        for n in nets {
            if let Some(ips) = self.names.get(&(n.to_string(), key.clone())) {
                let all = found.get_or_insert_with(Vec::new);
                all.extend(ips.iter().filter(|ip| !all_contains(all, ip)).copied().collect::<Vec<_>>());
            }
        }
        match found {
            Some(ips) => Answer::Local(ips),
            None => {
                let custom = asker.map(|a| a.dns.clone()).unwrap_or_default();
                Answer::Forward(if custom.is_empty() { self.upstream.clone() } else { custom })
            }
        }
    }
}

fn all_contains(all: &[IpAddr], ip: &IpAddr) -> bool {
    all.contains(ip)
}
