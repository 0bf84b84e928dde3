//! What networking does to the kernel and to the DNS process, behind three narrow traits (as
//! netavark puts networks and firewalls behind driver traits, and youki every system call
//! behind its `Syscall`): [`LinkDriver`] (bridges, network namespaces, veth pairs, addresses,
//! routes), [`FirewallDriver`] (the root's nftables table) and [`DnsDriver`] (the `berth-dns`
//! process). [`Networks`](super::Networks) decides what to make and in which order, and keeps
//! its records; the drivers only carry out one step each. The production drivers here are
//! netlink, `nft -j` and the process; the unit tests give a recording fake
//! (`netns::fake`), so the order of records and kernel objects, rollback and teardown are
//! tested without root.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use super::error::NetError;
use super::netlink::Netlink;
use super::record::{EndpointRecord, EndpointState, NetworkRecord};
use super::{bridge, dns, firewall, nsfile};
use crate::state::{Dirs, Reaps};

/// One interface inside a container's network namespace, as it is to be configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceSetup {
    /// Its name in the namespace (`eth0`, ...).
    pub name: String,
    /// Its addresses with their subnet's prefix length.
    pub addresses: Vec<IpNet>,
    /// It has an IPv6 address: duplicate address detection is turned off and IPv6 on.
    pub ipv6: bool,
}

/// Everything done inside a new network namespace once its interfaces are there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetnsSetup {
    /// Interfaces to address and set up, in order (loopback is always set up first).
    pub interfaces: Vec<InterfaceSetup>,
    /// Default routes, one per address family, via these gateways.
    pub default_routes: Vec<IpAddr>,
    /// Network sysctls (`net.*`) of the namespace, set last.
    pub sysctls: BTreeMap<String, String>,
}

/// Links and network namespaces: every step of making and taking away a network's bridge and
/// a container's endpoints. Each step is idempotent where the kernel lets it be (deleting what
/// is gone is no error), so a teardown can be repeated until it is complete.
pub trait LinkDriver: Send + Sync + std::fmt::Debug {
    /// Every route destination and interface address of the host, to keep new subnets clear.
    fn host_prefixes(&self) -> Result<Vec<IpNet>, NetError>;
    /// The bridge of `net` exists, is up and has its gateway addresses, and the host forwards;
    /// also repairs a bridge that vanished (a reboot).
    fn ensure_bridge(&self, net: &NetworkRecord) -> Result<(), NetError>;
    /// Whether a link of this name exists on the host.
    fn link_exists(&self, name: &str) -> bool;
    /// Deletes a host link (bridge or veth; a veth takes its peer with it). Gone is fine.
    fn delete_link(&self, name: &str) -> Result<(), NetError>;
    /// Makes a new, empty network namespace pinned at `path`.
    fn create_netns(&self, path: &Path) -> Result<(), NetError>;
    /// Unpins and removes the namespace file at `path`. Gone is fine.
    fn remove_netns(&self, path: &Path) -> Result<(), NetError>;
    /// Makes endpoint `ep`'s veth pair: `net`'s bridge made sure of first (as
    /// [`ensure_bridge`](LinkDriver::ensure_bridge)), then the host side on it and the peer
    /// created straight inside the namespace at `netns`, with the endpoint's MAC.
    fn add_endpoint(&self, netns: &Path, ep: &EndpointState, net: &NetworkRecord) -> Result<(), NetError>;
    /// Configures the inside of the namespace at `netns`: loopback, then `setup`.
    fn configure_netns(&self, netns: &Path, setup: &NetnsSetup) -> Result<(), NetError>;
}

/// The firewall: the whole table of one root, regenerated from the records.
pub trait FirewallDriver: Send + Sync + std::fmt::Debug {
    /// Makes table `table` hold exactly the rules of these networks and published ports (no
    /// table when there are no networks).
    fn sync(&self, table: &str, networks: &[NetworkRecord], endpoints: &[EndpointRecord]) -> Result<(), NetError>;
}

/// The run dir's DNS process.
pub trait DnsDriver: Send + Sync + std::fmt::Debug {
    /// Whether it runs.
    fn alive(&self) -> bool;
    /// Tells it to reload, starting it when it does not run.
    fn start_or_reload(&self) -> Result<(), NetError>;
    /// Tells it to reload when it runs.
    fn reload(&self) -> Result<(), NetError>;
    /// Stops it (and any copy of it that lost its pid file).
    fn stop(&self) -> Result<(), NetError>;
}

/// The drivers a [`Networks`](super::Networks) works through.
#[derive(Debug, Clone)]
pub struct Drivers {
    /// Links and namespaces.
    pub link: Arc<dyn LinkDriver>,
    /// The firewall.
    pub firewall: Arc<dyn FirewallDriver>,
    /// The DNS process.
    pub dns: Arc<dyn DnsDriver>,
}

/// [`LinkDriver`] on the kernel: rtnetlink messages of our own, and namespace files.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelLinks;

impl LinkDriver for KernelLinks {
    fn host_prefixes(&self) -> Result<Vec<IpNet>, NetError> {
        Ok(Netlink::open()?.host_prefixes()?.into_iter().map(|p| p.net).collect())
    }

    fn ensure_bridge(&self, net: &NetworkRecord) -> Result<(), NetError> {
        bridge::ensure(&mut Netlink::open()?, net).map(drop)
    }

    fn link_exists(&self, name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        Netlink::open()?.delete_link(name)
    }

    fn create_netns(&self, path: &Path) -> Result<(), NetError> {
        nsfile::create(path)
    }

    fn remove_netns(&self, path: &Path) -> Result<(), NetError> {
        nsfile::remove(path)
    }

    fn add_endpoint(&self, netns: &Path, ep: &EndpointState, net: &NetworkRecord) -> Result<(), NetError> {
        let ns = nsfile::open(netns)?;
        let mut nl = Netlink::open()?;
        let master = bridge::ensure(&mut nl, net)?;
        let mac = super::attach::parse_mac(&ep.mac)?;
        nl.create_veth(&ep.host_veth, master, &ep.interface, ns.as_raw_fd(), net.mtu, Some(mac))
    }

    fn configure_netns(&self, netns: &Path, setup: &NetnsSetup) -> Result<(), NetError> {
        let setup = setup.clone();
        nsfile::run_in(netns, move || {
            let mut nl = Netlink::open()?;
            if let Some(lo) = nl.link_index("lo")? {
                nl.set_up(lo)?;
            }
            for iface in &setup.interfaces {
                let idx = nl
                    .link_index(&iface.name)?
                    .ok_or_else(|| NetError::Invalid(format!("{} missing in the namespace", iface.name)))?;
                if iface.ipv6 {
                    // No DAD: the address is ours by IPAM, and must work at once.
                    let _ = nsfile::sysctl_if("ipv6", &iface.name, "accept_dad", "0");
                    let _ = nsfile::sysctl_if("ipv6", &iface.name, "disable_ipv6", "0");
                }
                for addr in &iface.addresses {
                    nl.add_address(idx, *addr)?;
                }
                nl.set_up(idx)?;
            }
            for gw in &setup.default_routes {
                nl.add_default_route(*gw, 0)?;
            }
            for (k, v) in &setup.sysctls {
                nsfile::sysctl(k, v)?;
            }
            Ok(())
        })
    }
}

/// [`FirewallDriver`] on nftables (`nft -j`), with Docker's `DOCKER-USER` chain kept letting
/// berth's bridges through when Docker is there.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nftables;

impl FirewallDriver for Nftables {
    fn sync(&self, table: &str, networks: &[NetworkRecord], endpoints: &[EndpointRecord]) -> Result<(), NetError> {
        firewall::apply(table, networks, endpoints)
    }
}

/// [`DnsDriver`] on the `berth dns` process of a run dir.
#[derive(Debug, Clone)]
pub struct DnsProcess {
    dirs: Dirs,
    exe: PathBuf,
    reaps: Arc<Reaps>,
}

impl DnsProcess {
    /// The DNS process of `dirs`, run as `exe dns`; the wait for a stopped one to be reaped
    /// goes to `reaps`.
    pub fn new(dirs: &Dirs, exe: &Path, reaps: Arc<Reaps>) -> Self {
        DnsProcess { dirs: dirs.clone(), exe: exe.to_path_buf(), reaps }
    }
}

impl DnsDriver for DnsProcess {
    fn alive(&self) -> bool {
        dns::running(&self.dirs).is_some()
    }

    fn start_or_reload(&self) -> Result<(), NetError> {
        dns::notify(&self.dirs, &self.exe)
    }

    fn reload(&self) -> Result<(), NetError> {
        match dns::running(&self.dirs) {
            Some(pid) => nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP)
                .map_err(|e| NetError::sys("signal the DNS process", e)),
            None => Ok(()),
        }
    }

    fn stop(&self) -> Result<(), NetError> {
        dns::stop(&self.dirs, &self.reaps)
    }
}
