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
    /// (network, address) to the container's name, for PTR answers.
    pub reverse: HashMap<(String, IpAddr), String>,
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
    /// The name of a container address (a PTR answer).
    Pointer(String),
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, `...ip6.arpa`) stands for.
pub fn reverse_address(name: &str) -> Option<IpAddr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut parts: Vec<u8> = v4.split('.').map(|p| p.parse().ok()).collect::<Option<Vec<u8>>>()?;
        if parts.len() != 4 {
            return None;
        }
        parts.reverse();
        return Some(IpAddr::from([parts[0], parts[1], parts[2], parts[3]]));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = v6
        .split('.')
        .map(|p| u8::from_str_radix(p, 16).ok().filter(|n| *n < 16))
        .collect::<Option<Vec<u8>>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.iter().rev().collect::<Vec<_>>().chunks(2).enumerate() {
        bytes[i] = (pair[0] << 4) | pair[1];
    }
    Some(IpAddr::from(bytes))
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
                    t.reverse.insert((ep.network.clone(), *ip), rec.container_name.clone());
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
        if let Some(ip) = reverse_address(name) {
            // Only addresses of the asker's own networks are named here; others go upstream.
            if let Some(n) = nets.iter().find_map(|n| self.reverse.get(&(n.to_string(), ip))) {
                return Answer::Pointer(n.clone());
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_parse_for_both_families() {
        assert_eq!(reverse_address("4.3.2.10.in-addr.arpa."), Some("10.2.3.4".parse().unwrap()));
        let v6: IpAddr = "fd00::1:2".parse().unwrap();
        let name = "2.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(reverse_address(name), Some(v6));
        assert_eq!(reverse_address("web."), None);
        assert_eq!(reverse_address("1.2.in-addr.arpa"), None);
    }

    #[test]
    fn pointers_only_for_the_askers_networks() {
        let net = |name: &str, subnet: &str, gw: &str| NetInfo {
            name: name.into(),
            subnets: vec![subnet.parse().unwrap()],
            gateways: vec![gw.parse().unwrap()],
        };
        let mut t = Table {
            networks: vec![net("a", "10.1.0.0/24", "10.1.0.1"), net("b", "10.2.0.0/24", "10.2.0.1")],
            ..Table::default()
        };
        let (web, other, asker): (IpAddr, IpAddr, IpAddr) =
            ("10.1.0.5".parse().unwrap(), "10.2.0.5".parse().unwrap(), "10.1.0.9".parse().unwrap());
        t.reverse.insert(("a".into(), web), "p-web-1".into());
        t.reverse.insert(("b".into(), other), "q-db-1".into());
        t.askers.insert(asker, Asker { networks: vec!["a".into()], dns: vec![] });
        let gw: IpAddr = "10.1.0.1".parse().unwrap();
        assert_eq!(t.lookup("5.0.1.10.in-addr.arpa", asker, gw), Answer::Pointer("p-web-1".into()));
        assert!(matches!(t.lookup("5.0.2.10.in-addr.arpa", asker, gw), Answer::Forward(_)));
    }
}
