//! Address management: choosing subnets that clash with nothing on the host or in berth, and
//! handing out container addresses from a network's range.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::IpamPool;
use super::error::NetError;
use super::record::{NetworkRecord, SubnetRecord};

/// Where default IPv4 subnets come from: /24s of 172.28.0.0/14, then of 10.89.0.0/16.
const DEFAULT_V4_POOLS: &[(&str, u8)] = &[("172.28.0.0/14", 24), ("10.89.0.0/16", 24)];
/// Where default IPv6 subnets come from: /64s of a ULA /48 ("berth"-ish bits), clear of the
/// fd00::/64 that hosts often use.
const DEFAULT_V6_POOL: (&str, u8) = ("fd62:6572:7468::/48", 64);

fn parse_net(s: &str, what: &str) -> Result<IpNet, NetError> {
    s.trim().parse::<IpNet>().map_err(|_| NetError::Invalid(format!("invalid {what} {s:?}")))
}

fn parse_ip(s: &str, what: &str) -> Result<IpAddr, NetError> {
    s.trim().parse::<IpAddr>().map_err(|_| NetError::Invalid(format!("invalid {what} {s:?}")))
}

/// First usable host address of a subnet (the conventional gateway).
fn first_host(net: IpNet) -> Option<IpAddr> {
    match net {
        IpNet::V4(n) => n.hosts().next().map(IpAddr::V4),
        IpNet::V6(n) => n.hosts().nth(1).map(IpAddr::V6),
    }
}

/// Turns the requested pools into subnets, filling in defaults.
///
/// `taken` is every prefix already in use (host routes and addresses, other berth networks);
/// explicit subnets only have to be clear of other berth networks (the user chose them), default
/// ones of everything.
pub fn plan_subnets(
    pools: &[IpamPool],
    enable_ipv6: bool,
    host: &[IpNet],
    berth: &[IpNet],
) -> Result<Vec<SubnetRecord>, NetError> {
    let mut out: Vec<SubnetRecord> = Vec::new();
    for pool in pools {
        let Some(subnet) = pool.subnet.as_deref() else {
            if pool.ip_range.is_some() || pool.gateway.is_some() {
                return Err(NetError::Invalid("ip_range and gateway need a subnet".into()));
            }
            continue;
        };
        let subnet = parse_net(subnet, "subnet")?.trunc();
        if let Some(clash) = berth.iter().chain(out.iter().map(|s| &s.subnet)).find(|n| overlaps(n, &subnet))
        {
            return Err(NetError::Invalid(format!(
                "subnet {subnet} overlaps with {clash} of another network"
            )));
        }
        let ip_range = pool.ip_range.as_deref().map(|r| parse_net(r, "ip_range")).transpose()?;
        if let Some(r) = ip_range
            && !subnet.contains(&r)
        {
            return Err(NetError::Invalid(format!("ip_range {r} is not within subnet {subnet}")));
        }
        let gateway = match pool.gateway.as_deref() {
            Some(g) => parse_ip(g, "gateway")?,
            None => first_host(subnet)
                .ok_or_else(|| NetError::Invalid(format!("subnet {subnet} has no room for a gateway")))?,
        };
        if !subnet.contains(&gateway) {
            return Err(NetError::Invalid(format!("gateway {gateway} is not within subnet {subnet}")));
        }
        out.push(SubnetRecord { subnet, gateway, ip_range });
    }
    let used: Vec<IpNet> = host.iter().chain(berth).copied().collect();
    if !out.iter().any(|s| s.subnet.addr().is_ipv4()) {
        let subnet = DEFAULT_V4_POOLS
            .iter()
            .find_map(|(pool, len)| free_subnet(pool, *len, &used))
            .ok_or_else(|| NetError::Exhausted("no free IPv4 subnet left in the default pools".into()))?;
        out.insert(
            0,
            SubnetRecord { subnet, gateway: first_host(subnet).expect("/24 has hosts"), ip_range: None },
        );
    }
    if enable_ipv6 && !out.iter().any(|s| s.subnet.addr().is_ipv6()) {
        let subnet = free_subnet(DEFAULT_V6_POOL.0, DEFAULT_V6_POOL.1, &used)
            .ok_or_else(|| NetError::Exhausted("no free IPv6 subnet left in the default pool".into()))?;
        out.push(SubnetRecord {
            subnet,
            gateway: first_host(subnet).expect("/64 has hosts"),
            ip_range: None,
        });
    }
    if !enable_ipv6 && out.iter().any(|s| s.subnet.addr().is_ipv6()) {
        return Err(NetError::Invalid("an IPv6 subnet needs enable_ipv6".into()));
    }
    Ok(out)
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn free_subnet(pool: &str, len: u8, used: &[IpNet]) -> Option<IpNet> {
    let pool: IpNet = pool.parse().ok()?;
    let mut subnets = pool.subnets(len).ok()?;
    subnets.find(|s| !used.iter().any(|u| u.prefix_len() > 0 && overlaps(u, s)))
}

/// Picks an address for a container on `subnet`: the requested one if it is free and inside, or
/// the first free one of the range. `used` holds addresses already handed out on the network.
pub fn allocate(
    subnet: &SubnetRecord,
    requested: Option<IpAddr>,
    used: &HashSet<IpAddr>,
) -> Result<IpAddr, NetError> {
    if let Some(ip) = requested {
        if !subnet.subnet.contains(&ip) {
            return Err(NetError::Invalid(format!("address {ip} is not within subnet {}", subnet.subnet)));
        }
        if ip == subnet.gateway || used.contains(&ip) {
            return Err(NetError::Invalid(format!("address {ip} is already in use")));
        }
        return Ok(ip);
    }
    let range = subnet.ip_range.unwrap_or(subnet.subnet);
    let free = |ip: &IpAddr| *ip != subnet.gateway && !used.contains(ip);
    let found = match range {
        IpNet::V4(r) => hosts_v4(r).find(|ip| free(ip)),
        // Skip the subnet-router anycast address (the first of a v6 subnet).
        IpNet::V6(r) => hosts_v6(r).find(|ip| free(ip) && Some(*ip) != first_anycast(subnet.subnet)),
    };
    found.ok_or_else(|| NetError::Exhausted(format!("no free address left in {range}")))
}

fn hosts_v4(r: Ipv4Net) -> impl Iterator<Item = IpAddr> {
    r.hosts().map(IpAddr::V4)
}

fn hosts_v6(r: Ipv6Net) -> impl Iterator<Item = IpAddr> {
    r.hosts().map(IpAddr::V6).take(1 << 20)
}

fn first_anycast(net: IpNet) -> Option<IpAddr> {
    match net {
        IpNet::V6(n) => Some(IpAddr::V6(n.network())),
        IpNet::V4(_) => None,
    }
}

/// All subnets of the given networks.
pub fn berth_subnets(nets: &[NetworkRecord]) -> Vec<IpNet> {
    nets.iter().flat_map(|n| n.subnets.iter().map(|s| s.subnet)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_subnet_avoids_host_and_berth() {
        let host: Vec<IpNet> = vec!["172.28.0.0/24".parse().unwrap()];
        let berth: Vec<IpNet> = vec!["172.28.1.0/24".parse().unwrap()];
        let s = plan_subnets(&[], false, &host, &berth).unwrap();
        assert_eq!(s[0].subnet.to_string(), "172.28.2.0/24");
        assert_eq!(s[0].gateway.to_string(), "172.28.2.1");
    }

    #[test]
    fn explicit_pool_and_allocation() {
        let pool = IpamPool {
            subnet: Some("10.5.0.0/16".into()),
            ip_range: Some("10.5.3.0/24".into()),
            gateway: Some("10.5.0.254".into()),
        };
        let s = plan_subnets(&[pool], false, &[], &[]).unwrap();
        assert_eq!(s.len(), 1);
        let mut used = HashSet::new();
        let a = allocate(&s[0], None, &used).unwrap();
        assert_eq!(a.to_string(), "10.5.3.1");
        used.insert(a);
        assert_eq!(allocate(&s[0], None, &used).unwrap().to_string(), "10.5.3.2");
        assert!(allocate(&s[0], Some("10.6.0.1".parse().unwrap()), &used).is_err());
        assert!(allocate(&s[0], Some(a), &used).is_err());
    }

    #[test]
    fn ipv6_default_pool() {
        let s = plan_subnets(&[], true, &[], &[]).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].subnet.to_string(), "fd62:6572:7468::/64");
        assert_eq!(s[1].gateway.to_string(), "fd62:6572:7468::1");
    }
}
