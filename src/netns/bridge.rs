//! Bridges: one per network, named `berth` + 8 hex digits of a hash of the network name, with
//! the gateway address(es) on it.

use sha2::{Digest, Sha256};

use super::error::NetError;
use super::netlink::Netlink;
use super::nsfile::{sysctl, sysctl_if};
use super::record::NetworkRecord;

/// The bridge name of a network: `berth` + 8 hex digits (13 characters, under IFNAMSIZ) of
/// its name and, outside the default root, the root's [`super::scope`], so that two roots'
/// networks of the same name get different bridges.
pub fn bridge_name(scope: &str, network: &str) -> String {
    let key = if scope.is_empty() { network.to_string() } else { format!("{scope}\0{network}") };
    format!("berth{}", &hex::encode(Sha256::digest(key.as_bytes()))[..8])
}

/// The host-side veth name of a container's endpoint: `bv` + 10 hex digits.
pub fn veth_name(container_id: &str, network: &str) -> String {
    let digest = Sha256::digest(format!("{container_id}\0{network}").as_bytes());
    format!("bv{}", &hex::encode(digest)[..10])
}

/// Makes sure the bridge of `net` exists, is up and has its gateway addresses, and that the
/// host forwards. Idempotent, so it also repairs a network whose bridge vanished (reboot).
pub fn ensure(nl: &mut Netlink, net: &NetworkRecord) -> Result<u32, NetError> {
    let index = match nl.link_index(&net.bridge)? {
        Some(i) => i,
        None => {
            nl.create_bridge(&net.bridge, net.mtu)?;
            nl.link_index(&net.bridge)?
                .ok_or_else(|| NetError::Invalid(format!("bridge {} vanished after creation", net.bridge)))?
        }
    };
    if net.ipv6 {
        // DAD would keep the gateway address tentative for a while, and the DNS server could not
        // bind to it; the bridge is ours, so no one else can hold the address.
        sysctl_if("ipv6", &net.bridge, "accept_dad", "0")?;
        sysctl_if("ipv6", &net.bridge, "disable_ipv6", "0")?;
    }
    for s in &net.subnets {
        let addr = ipnet::IpNet::new(s.gateway, s.subnet.prefix_len())
            .map_err(|e| NetError::Invalid(format!("gateway {}: {e}", s.gateway)))?;
        nl.add_address(index, addr)?;
    }
    // Published ports answer on 127.0.0.1: the DNAT'ed packet keeps its loopback source while
    // it is routed out of the bridge, which the kernel only allows with route_localnet.
    sysctl_if("ipv4", &net.bridge, "route_localnet", "1")?;
    nl.set_up(index)?;
    if !net.internal {
        sysctl("net.ipv4.ip_forward", "1")?;
        if net.ipv6 {
            sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
    }
    Ok(index)
}
