//! berth's networking: bridge networks with IPAM, a network namespace per container with veth
//! endpoints, published ports and isolation in nftables (one `inet` table per root: `berth`
//! for the default root, `berth_<8 hex>` for others), a DNS server for service names, and the
//! container's `/etc/hosts`, `resolv.conf` and `hostname` files.
//!
//! All kernel work is netlink messages of our own and `nft -j`; nothing here runs `ip`.
//! State lives in records (see [`record`]), so [`Networks::detach`] and [`Networks::remove`]
//! work from state alone, also after a crash. The kernel and the DNS process are reached only
//! through the drivers of [`driver`], which the unit tests replace with a recording fake.

mod attach;
#[cfg(test)]
mod attach_tests;
pub mod bridge;
pub mod dns;
pub mod driver;
mod error;
#[cfg(test)]
mod fake;
pub mod firewall;
mod host_lock;
pub mod hosts;
pub mod ipam;
pub mod netlink;
pub mod nsfile;
pub mod ports;
pub mod record;

pub use error::NetError;
pub use ports::{PortRequest, Protocol, PublishedPort};
pub use record::{EndpointRecord, NetworkRecord};

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::state::{Dirs, Lock};

/// The default root, whose names stay short and stable (`berth` table, bridge names from the
/// network name alone).
pub const DEFAULT_ROOT: &str = "/var/lib/berth";

/// What sets one root's host-wide names apart from another root's: empty for the default
/// root, else 8 hex digits of the root's path.
pub fn scope(root: &std::path::Path) -> String {
    if root == std::path::Path::new(DEFAULT_ROOT) {
        return String::new();
    }
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(root.as_os_str().as_encoded_bytes()))[..8].to_string()
}

/// Driver option naming the MTU.
pub const OPT_MTU: &str = "com.docker.network.driver.mtu";
/// Driver option naming the bridge.
pub const OPT_BRIDGE_NAME: &str = "com.docker.network.bridge.name";

/// One IPAM pool of a network, as compose's `ipam.config` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpamPool {
    /// Subnet in CIDR form.
    pub subnet: Option<String>,
    /// Range containers' addresses come from (CIDR, inside the subnet).
    pub ip_range: Option<String>,
    /// Gateway address.
    pub gateway: Option<String>,
}

/// A network to create.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Full name, e.g. `proj_default`.
    pub name: String,
    /// Driver; only `bridge` (or empty, meaning bridge) is supported.
    pub driver: String,
    /// No way out of the network and no masquerade.
    pub internal: bool,
    /// Give the network an IPv6 subnet too.
    pub enable_ipv6: bool,
    /// IPAM pools.
    pub ipam: Vec<IpamPool>,
    /// Driver options (`com.docker.network.driver.mtu`, `com.docker.network.bridge.name`).
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The network is managed outside the project: it must exist, berth does not create it.
    pub external: bool,
}

/// How a container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetMode {
    /// Own network namespace with one endpoint per network.
    Bridge(Vec<EndpointRequest>),
    /// The host's network namespace.
    Host,
    /// Own network namespace with loopback only.
    None,
    /// The network namespace of another (attached) container, by id.
    Container(String),
}

/// One network a container joins.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndpointRequest {
    /// Network name.
    pub network: String,
    /// DNS names on this network (service name, container name, aliases).
    pub aliases: Vec<String>,
    /// Fixed IPv4 address.
    pub ipv4_address: Option<Ipv4Addr>,
    /// Fixed IPv6 address.
    pub ipv6_address: Option<Ipv6Addr>,
    /// Fixed MAC address.
    pub mac_address: Option<String>,
    /// Higher priority networks get the lower interface numbers (eth0 first).
    pub priority: i32,
    /// The network with the highest gateway priority provides the default route.
    pub gw_priority: i32,
}

/// What the runtime asks for when it makes a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// Container id (names the netns file and records).
    pub container_id: String,
    /// Container name (a DNS name).
    pub container_name: String,
    /// Hostname (a DNS name, and in /etc/hosts and /etc/hostname).
    pub hostname: String,
    /// Networking mode.
    pub mode: NetMode,
    /// Ports to publish.
    pub ports: Vec<PortRequest>,
    /// Extra /etc/hosts entries (name, address); the address may be `host-gateway`.
    pub extra_hosts: Vec<(String, String)>,
    /// DNS servers (the DNS server forwards to these instead of the host's).
    pub dns: Vec<String>,
    /// resolv.conf search domains.
    pub dns_search: Vec<String>,
    /// resolv.conf options.
    pub dns_opt: Vec<String>,
    /// Network sysctls (`net.*`) set inside the container's namespace.
    pub sysctls: BTreeMap<String, String>,
}

/// One endpoint as attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachedEndpoint {
    /// Network name.
    pub network: String,
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// MAC address.
    pub mac: String,
    /// Interface name inside the container.
    pub interface: String,
}

/// What attach made: where the runtime finds the netns and the files to bind into the
/// container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// Network namespace file to join (None: host networking).
    pub netns_path: Option<PathBuf>,
    /// File to mount on /etc/hosts.
    pub hosts_file: PathBuf,
    /// File to mount on /etc/resolv.conf.
    pub resolv_conf: PathBuf,
    /// File to mount on /etc/hostname.
    pub hostname_file: PathBuf,
    /// Endpoints, eth0 first.
    pub endpoints: Vec<AttachedEndpoint>,
    /// Published ports, with the host ports actually chosen.
    pub ports: Vec<PublishedPort>,
}

/// The networking library's entry point.
#[derive(Debug, Clone)]
pub struct Networks {
    dirs: Dirs,
    exe: PathBuf,
    /// Where the wait for a stopped DNS process to be reaped goes (see
    /// [`crate::state::Reaps`]).
    reaps: std::sync::Arc<crate::state::Reaps>,
    /// The kernel and the DNS process.
    drivers: driver::Drivers,
}

impl Networks {
    /// Networks kept under `dirs`; the DNS process is this same executable (`berth dns`).
    pub fn new(dirs: &Dirs) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berth"));
        let reaps: std::sync::Arc<crate::state::Reaps> = Default::default();
        let drivers = driver::Drivers {
            link: std::sync::Arc::new(driver::KernelLinks),
            firewall: std::sync::Arc::new(driver::Nftables),
            dns: std::sync::Arc::new(driver::DnsProcess::new(dirs, &exe, reaps.clone())),
        };
        Networks { dirs: dirs.clone(), exe, reaps, drivers }
    }

    /// Sends the wait for a stopped DNS process to be reaped to `reaps`, shared with the
    /// runtime, so that one deferral covers the shims and the DNS process of a teardown.
    pub fn with_reaps(mut self, reaps: std::sync::Arc<crate::state::Reaps>) -> Self {
        self.reaps = reaps;
        self.drivers.dns = std::sync::Arc::new(driver::DnsProcess::new(&self.dirs, &self.exe, self.reaps.clone()));
        self
    }

    /// Uses `exe` as the berth binary that runs `berth dns` (for library users and tests whose
    /// own executable is not berth).
    pub fn with_exe(mut self, exe: impl Into<PathBuf>) -> Self {
        self.exe = exe.into();
        self.drivers.dns = std::sync::Arc::new(driver::DnsProcess::new(&self.dirs, &self.exe, self.reaps.clone()));
        self
    }

    /// Works through `drivers` instead of the kernel and the DNS process (the unit tests'
    /// recording fake).
    #[cfg(test)]
    pub(crate) fn with_drivers(mut self, drivers: driver::Drivers) -> Self {
        self.drivers = drivers;
        self
    }

    /// The dirs this instance works in.
    pub fn dirs(&self) -> &Dirs {
        &self.dirs
    }

    /// Serializes every change to networks and endpoints of this run dir.
    fn lock(&self) -> Result<Lock, NetError> {
        Ok(Lock::acquire(&self.dirs.run.join("network.lock"))?)
    }

    /// Lists networks, sorted by name.
    pub fn list(&self) -> Result<Vec<NetworkRecord>, NetError> {
        record::all_networks(&self.dirs)
    }

    /// One network's record.
    pub fn inspect(&self, name: &str) -> Result<NetworkRecord, NetError> {
        record::read_network(&self.dirs, name)?.ok_or_else(|| NetError::NotFound(name.to_string()))
    }

    /// Containers attached to `name`.
    pub fn attached(&self, name: &str) -> Result<Vec<String>, NetError> {
        Ok(record::all_endpoints(&self.dirs)?
            .into_iter()
            .filter(|r| r.endpoints.iter().any(|e| e.network == name))
            .map(|r| r.container_name)
            .collect())
    }
}
