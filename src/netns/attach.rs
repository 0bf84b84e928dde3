//! Creating and removing networks, attaching and detaching containers. Every change writes its
//! record first and then makes the kernel match, so an interrupted change leaves a record that
//! the next detach or remove finishes from; a teardown removes the record only once what it
//! claims is gone, so a teardown that fails half-way is finished by the next one. The kernel
//! and the DNS process are reached through [`super::driver`].

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::error::NetError;
use super::driver::{InterfaceSetup, NetnsSetup};
use super::hosts::{self, FilesSpec};
use super::record::{
    self, EndpointRecord, EndpointState, ModeRecord, NetworkRecord, SubnetRecord, all_endpoints, all_networks,
};
use super::{
    AttachRequest, AttachedEndpoint, Attachment, EndpointRequest, NetMode, NetworkSpec, Networks,
    OPT_BRIDGE_NAME, OPT_MTU, bridge, firewall, ipam, ports,
};

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

pub(super) fn parse_mac(s: &str) -> Result<[u8; 6], NetError> {
    let parts: Vec<&str> = s.split(':').collect();
    let bad = || NetError::Invalid(format!("invalid MAC address {s:?}"));
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

/// A locally administered MAC: 02:42 and the IPv4 address (as Docker does), or hash bytes.
fn make_mac(ipv4: Option<std::net::Ipv4Addr>, seed: &str) -> [u8; 6] {
    match ipv4 {
        Some(ip) => {
            let o = ip.octets();
            [0x02, 0x42, o[0], o[1], o[2], o[3]]
        }
        None => {
            let d = Sha256::digest(seed.as_bytes());
            [0x02, 0x42, d[0], d[1], d[2], d[3]]
        }
    }
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

impl Networks {
    /// Creates a network (bridge, gateway addresses, firewall rules, DNS). Creating a network
    /// that exists with the same spec returns it (repairing its bridge if needed); with another
    /// spec it is an error.
    pub fn create(&self, spec: &NetworkSpec) -> Result<NetworkRecord, NetError> {
        if !valid_name(&spec.name) {
            return Err(NetError::Invalid(format!("invalid network name {:?}", spec.name)));
        }
        if !(spec.driver.is_empty() || spec.driver == "bridge") {
            return Err(NetError::Invalid(format!("network driver {:?} is not supported", spec.driver)));
        }
        let _lock = self.lock()?;
        if let Some(existing) = record::read_network(&self.dirs, &spec.name)? {
            if spec.external || existing.spec == *spec {
                self.realize_network(&existing)?;
                return Ok(existing);
            }
            return Err(NetError::Conflict(spec.name.clone()));
        }
        if spec.external {
            return Err(NetError::NotFound(spec.name.clone()));
        }
        let mtu = match spec.driver_opts.get(OPT_MTU) {
            Some(m) => Some(
                m.parse::<u32>()
                    .ok()
                    .filter(|m| (68..=65535).contains(m))
                    .ok_or_else(|| NetError::Invalid(format!("invalid MTU {m:?}")))?,
            ),
            None => None,
        };
        let bridge = match spec.driver_opts.get(OPT_BRIDGE_NAME) {
            Some(b) if b.is_empty() || b.len() > 15 || b.contains(['/', ' ', ':']) => {
                return Err(NetError::Invalid(format!("invalid bridge name {b:?}")));
            }
            Some(b) => b.clone(),
            None => bridge::bridge_name(&super::scope(&self.dirs.root), &spec.name),
        };
        let others = all_networks(&self.dirs)?;
        if let Some(o) = others.iter().find(|o| o.bridge == bridge) {
            return Err(NetError::Invalid(format!("bridge {bridge} is already used by network {}", o.name)));
        }
        // Another berth (another root or run dir: a test's own stack) may be choosing a subnet
        // from the same host view right now; the host-wide lock lasts until the bridge has its
        // address, which every later choice then sees.
        let _host_lock = super::host_lock::SubnetLock::acquire()?;
        let host = self.drivers.link.host_prefixes()?;
        let subnets: Vec<SubnetRecord> =
            ipam::plan_subnets(&spec.ipam, spec.enable_ipv6, &host, &ipam::berth_subnets(&others))?;
        let created = now();
        let id = hex::encode(Sha256::digest(format!("{}\0{}\0{}", spec.name, created, std::process::id())));
        let rec = NetworkRecord {
            name: spec.name.clone(),
            id,
            driver: "bridge".into(),
            bridge,
            ipv6: subnets.iter().any(|s| s.subnet.addr().is_ipv6()),
            subnets,
            internal: spec.internal,
            mtu,
            labels: spec.labels.clone(),
            options: spec.driver_opts.clone(),
            created,
            spec: spec.clone(),
        };
        record::write_network(&self.dirs, &rec)?;
        if let Err(e) = self.realize_network(&rec) {
            let _ = self.remove_locked(&rec.name);
            return Err(e);
        }
        Ok(rec)
    }

    /// Makes the kernel match a network record: bridge, addresses, firewall, DNS.
    fn realize_network(&self, rec: &NetworkRecord) -> Result<(), NetError> {
        self.drivers.link.ensure_bridge(rec)?;
        self.sync_firewall()?;
        self.drivers.dns.start_or_reload()
    }

    fn sync_firewall(&self) -> Result<(), NetError> {
        self.drivers.firewall.sync(
            &firewall::table_name(&self.dirs.root),
            &all_networks(&self.dirs)?,
            &all_endpoints(&self.dirs)?,
        )
    }

    /// Removes a network: refuses while containers are attached; otherwise deletes the bridge,
    /// its rules and the record, and stops the DNS process with the last network.
    pub fn remove(&self, name: &str) -> Result<(), NetError> {
        let _lock = self.lock()?;
        if record::read_network(&self.dirs, name)?.is_none() {
            return Err(NetError::NotFound(name.to_string()));
        }
        let attached = self.attached(name)?;
        if !attached.is_empty() {
            return Err(NetError::InUse { name: name.to_string(), containers: attached.join(", ") });
        }
        self.remove_locked(name)
    }

    fn remove_locked(&self, name: &str) -> Result<(), NetError> {
        let mut errors = Vec::new();
        if let Some(rec) = record::read_network(&self.dirs, name)? {
            match self.drivers.link.delete_link(&rec.bridge) {
                // The record claims the bridge until it is gone: the next remove finishes.
                Err(e) => errors.push(e),
                Ok(()) => {
                    let path = record::network_path(&self.dirs, name);
                    // The copy first: a record left without its copy is whole, a copy left
                    // alone is litter that only `forget` would find.
                    let _ = std::fs::remove_file(crate::state::copy_path(&path));
                    if let Err(e) = std::fs::remove_file(&path)
                        && e.kind() != std::io::ErrorKind::NotFound
                    {
                        errors.push(NetError::sys(format!("remove {}", path.display()), e));
                    }
                }
            }
        }
        if let Err(e) = self.sync_firewall() {
            errors.push(e);
        }
        let remaining = all_networks(&self.dirs).map(|n| n.len()).unwrap_or(0);
        let r = if remaining == 0 { self.drivers.dns.stop() } else { self.drivers.dns.reload() };
        if let Err(e) = r {
            errors.push(e);
        }
        NetError::collect(errors)
    }

    /// Takes away what network `name` left without a readable record (damaged, or lost by a
    /// command killed half-way): its bridge (found by its name, which the network's name
    /// gives, unless it had a custom one), its record file, its firewall rules; the DNS
    /// process stops with the last network. Containers still attached to it must be removed
    /// first. A network with a readable record is left alone.
    pub fn forget(&self, name: &str) -> Result<(), NetError> {
        if !valid_name(name) {
            return Err(NetError::Invalid(format!("invalid network name {name:?}")));
        }
        let _lock = self.lock()?;
        let mut errors = Vec::new();
        let path = record::network_path(&self.dirs, name);
        match record::read_network(&self.dirs, name) {
            // A network with a readable record is removed with `remove`, never forgotten.
            Ok(Some(_)) => return Ok(()),
            Ok(None) | Err(NetError::State(crate::state::StateError::Json { .. })) => {}
            Err(e) => return Err(e),
        }
        // The copy of a record that is damaged or gone has served (see `damaged`).
        let _ = std::fs::remove_file(crate::state::copy_path(&path));
        let bridge = bridge::bridge_name(&super::scope(&self.dirs.root), name);
        // Nothing left (the usual case, after a `down` that finished): nothing to change.
        if !path.exists() && !self.drivers.link.link_exists(&bridge) {
            return Ok(());
        }
        match self.drivers.link.delete_link(&bridge) {
            // The damaged record stays while its bridge does: the next command finds both.
            Err(e) => errors.push(e),
            Ok(()) => {
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    errors.push(NetError::sys(format!("remove {}", path.display()), e));
                }
            }
        }
        if let Err(e) = self.sync_firewall() {
            errors.push(e);
        }
        NetError::collect(errors)?;
        self.sync_dns_locked()
    }

    /// Network records that cannot be read, for the engine to report and take away.
    /// The copies of the readable ones are written anew where damaged (see
    /// `state::repair_copy`), under the network lock so that no write of a record is between.
    pub fn damaged(&self) -> Vec<crate::state::DamagedRecord> {
        let damaged = record::damaged(&self.dirs.networks());
        if let Ok(_lock) = self.lock() {
            for rec in record::all_networks(&self.dirs).unwrap_or_default() {
                crate::state::repair_copy(&record::network_path(&self.dirs, &rec.name));
            }
        }
        damaged
    }

    /// Endpoint records that cannot be read (named by their container's id).
    pub fn damaged_endpoints(&self) -> Vec<crate::state::DamagedRecord> {
        record::damaged(&record::endpoints_dir(&self.dirs))
    }

    /// Ids of the containers that have an endpoint record (readable or not), a netns file or a
    /// files dir.
    pub fn endpoint_ids(&self) -> Vec<String> {
        record::endpoint_ids(&self.dirs)
    }

    /// Ids of the containers attached to network `name`, by their endpoint records.
    pub fn attached_ids(&self, name: &str) -> Vec<String> {
        all_endpoints(&self.dirs)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.endpoints.iter().any(|e| e.network == name))
            .map(|r| r.container_id)
            .collect()
    }

    /// Makes the DNS process agree with the networks: started (again) when networks exist and
    /// it does not run (killed, say), stopped when none is left (also when only its pid file
    /// or its process tells it runs).
    pub fn sync_dns(&self) -> Result<(), NetError> {
        let _lock = self.lock()?;
        self.sync_dns_locked()
    }

    fn sync_dns_locked(&self) -> Result<(), NetError> {
        let dns = &self.drivers.dns;
        if all_networks(&self.dirs)?.is_empty() {
            return dns.stop();
        }
        if dns.alive() {
            return Ok(());
        }
        // One whose pid file is lost or damaged would answer from a stale table: it goes.
        dns.stop()?;
        dns.start_or_reload()
    }

    fn files_dir(&self, id: &str) -> PathBuf {
        self.dirs.run.join("netns-files").join(id)
    }

    /// Attaches a container: makes its network namespace (`<run>/netns/<id>`), one veth per
    /// network with the peer created straight inside it (eth0, eth1, ...), addresses, routes,
    /// sysctls, published ports, DNS names, and its hosts/resolv.conf/hostname files under
    /// `<run>/netns-files/<id>/`. On failure everything made so far is undone.
    pub fn attach(&self, req: &AttachRequest) -> Result<Attachment, NetError> {
        if !valid_name(&req.container_id) {
            return Err(NetError::Invalid(format!("invalid container id {:?}", req.container_id)));
        }
        let _lock = self.lock()?;
        if record::read_endpoint(&self.dirs, &req.container_id)?.is_some() {
            // A leftover of an earlier run of this container: finish its teardown first.
            self.detach_locked(&req.container_id)?;
        }
        let result = self.attach_locked(req);
        if result.is_err() {
            let _ = self.detach_locked(&req.container_id);
        }
        result
    }

    fn attach_locked(&self, req: &AttachRequest) -> Result<Attachment, NetError> {
        let id = &req.container_id;
        let files = self.files_dir(id);
        let (hosts_file, resolv_conf, hostname_file) = hosts::paths(&files);
        let base = EndpointRecord {
            container_id: id.clone(),
            container_name: req.container_name.clone(),
            hostname: req.hostname.clone(),
            mode: ModeRecord::None,
            netns: None,
            endpoints: Vec::new(),
            ports: Vec::new(),
            dns: req.dns.clone(),
            files: files.clone(),
        };
        let netns_path = self.dirs.netns().join(id);
        match &req.mode {
            NetMode::Host => {
                let rec = EndpointRecord { mode: ModeRecord::Host, ..base };
                record::write_endpoint(&self.dirs, &rec)?;
                let extra = resolve_extra_hosts(&req.extra_hosts, None)?;
                let spec = FilesSpec {
                    hostname: &req.hostname,
                    extra_hosts: extra,
                    search: &req.dns_search,
                    options: &req.dns_opt,
                    host_hosts: true,
                    ..FilesSpec::default()
                };
                hosts::write(&files, &spec)?;
                Ok(Attachment {
                    netns_path: None,
                    hosts_file,
                    resolv_conf,
                    hostname_file,
                    endpoints: Vec::new(),
                    ports: Vec::new(),
                })
            }
            NetMode::Container(other) => {
                let target = record::read_endpoint(&self.dirs, other)?
                    .ok_or_else(|| NetError::Invalid(format!("container {other} has no network attached")))?;
                let ns = match &target.mode {
                    ModeRecord::Host => None,
                    _ => target.netns.clone().or_else(|| Some(self.dirs.netns().join(other))),
                };
                let rec = EndpointRecord { mode: ModeRecord::Container(other.clone()), ..base };
                record::write_endpoint(&self.dirs, &rec)?;
                let (h, r, n) = hosts::paths(&target.files);
                Ok(Attachment {
                    netns_path: ns,
                    hosts_file: h,
                    resolv_conf: r,
                    hostname_file: n,
                    endpoints: Vec::new(),
                    ports: Vec::new(),
                })
            }
            NetMode::None => {
                let rec = EndpointRecord { mode: ModeRecord::None, netns: Some(netns_path.clone()), ..base };
                record::write_endpoint(&self.dirs, &rec)?;
                self.drivers.link.create_netns(&netns_path)?;
                let setup = NetnsSetup { sysctls: req.sysctls.clone(), ..NetnsSetup::default() };
                self.drivers.link.configure_netns(&netns_path, &setup)?;
                let spec = FilesSpec {
                    hostname: &req.hostname,
                    extra_hosts: resolve_extra_hosts(&req.extra_hosts, None)?,
                    search: &req.dns_search,
                    options: &req.dns_opt,
                    ..FilesSpec::default()
                };
                hosts::write(&files, &spec)?;
                Ok(Attachment {
                    netns_path: Some(netns_path),
                    hosts_file,
                    resolv_conf,
                    hostname_file,
                    endpoints: Vec::new(),
                    ports: Vec::new(),
                })
            }
            NetMode::Bridge(eps) => self.attach_bridge(req, eps, base, netns_path),
        }
    }

    fn attach_bridge(
        &self,
        req: &AttachRequest,
        eps: &[EndpointRequest],
        base: EndpointRecord,
        netns_path: PathBuf,
    ) -> Result<Attachment, NetError> {
        let id = &req.container_id;
        let mut eps: Vec<&EndpointRequest> = eps.iter().collect();
        // Higher priority first (stable, so equal priorities keep the caller's order).
        eps.sort_by_key(|e| std::cmp::Reverse(e.priority));
        let mut nets = Vec::new();
        for ep in &eps {
            if nets.iter().any(|n: &NetworkRecord| n.name == ep.network) {
                return Err(NetError::Invalid(format!("network {} given twice", ep.network)));
            }
            nets.push(
                record::read_network(&self.dirs, &ep.network)?
                    .ok_or_else(|| NetError::NotFound(ep.network.clone()))?,
            );
        }
        let others: Vec<EndpointRecord> =
            all_endpoints(&self.dirs)?.into_iter().filter(|r| r.container_id != *id).collect();

        let mut states = Vec::new();
        for (i, (ep, net)) in eps.iter().zip(&nets).enumerate() {
            let used: HashSet<IpAddr> = others
                .iter()
                .flat_map(|r| &r.endpoints)
                .filter(|e| e.network == net.name)
                .flat_map(|e| e.ipv4.map(IpAddr::V4).into_iter().chain(e.ipv6.map(IpAddr::V6)))
                .collect();
            let pick = |v6: bool, requested: Option<IpAddr>| -> Result<Option<IpAddr>, NetError> {
                match net.subnets.iter().find(|s| s.subnet.addr().is_ipv6() == v6) {
                    Some(s) => ipam::allocate(s, requested, &used).map(Some),
                    None if requested.is_some() => Err(NetError::Invalid(format!(
                        "network {} has no {} subnet for the requested address",
                        net.name,
                        if v6 { "IPv6" } else { "IPv4" }
                    ))),
                    None => Ok(None),
                }
            };
            let ipv4 = match pick(false, ep.ipv4_address.map(IpAddr::V4))? {
                Some(IpAddr::V4(a)) => Some(a),
                _ => None,
            };
            let ipv6 = match pick(true, ep.ipv6_address.map(IpAddr::V6))? {
                Some(IpAddr::V6(a)) => Some(a),
                _ => None,
            };
            let mac = match &ep.mac_address {
                Some(m) => parse_mac(m)?,
                None => make_mac(ipv4, &format!("{id}{}", net.name)),
            };
            states.push(EndpointState {
                network: net.name.clone(),
                bridge: net.bridge.clone(),
                host_veth: bridge::veth_name(id, &net.name),
                interface: format!("eth{i}"),
                ipv4,
                ipv6,
                mac: fmt_mac(mac),
                aliases: ep.aliases.clone(),
            });
        }
        let published = ports::resolve(&req.ports, &others, |network, want_v6| {
            let st = match network {
                Some(n) => states
                    .iter()
                    .find(|s| s.network == n)
                    .ok_or_else(|| NetError::Invalid(format!("port published on network {n}, not joined")))?,
                None => states
                    .first()
                    .ok_or_else(|| NetError::Invalid("ports published without a network".into()))?,
            };
            let (v4, v6) = (st.ipv4.map(IpAddr::V4), st.ipv6.map(IpAddr::V6));
            let ip = if want_v6 { v6.or(v4) } else { v4.or(v6) }
                .ok_or_else(|| NetError::Invalid(format!("no address on network {}", st.network)))?;
            Ok((ip, st.network.clone(), st.bridge.clone()))
        })?;
        let rec = EndpointRecord {
            mode: ModeRecord::Bridge,
            netns: Some(netns_path.clone()),
            endpoints: states.clone(),
            ports: published.clone(),
            ..base
        };
        // The record goes first: from here on, a crash leaves what detach needs.
        record::write_endpoint(&self.dirs, &rec)?;

        let link = &self.drivers.link;
        link.create_netns(&netns_path)?;
        for (st, net) in states.iter().zip(&nets) {
            link.add_endpoint(&netns_path, st, net)?;
        }
        // The default route: the non-internal network with the highest gateway priority.
        let gw_net = eps
            .iter()
            .zip(&nets)
            .enumerate()
            .filter(|(_, (_, n))| !n.internal)
            .max_by_key(|(i, (e, _))| (e.gw_priority, std::cmp::Reverse(*i)))
            .map(|(_, (_, n))| n);
        link.configure_netns(&netns_path, &netns_setup(&states, &nets, gw_net, &req.sysctls)?)?;
        // Rules depend on networks and published ports only; a container without ports changes
        // nothing there, and skipping nft keeps attach fast.
        if !published.is_empty() {
            self.sync_firewall()?;
        }

        let first = nets.first();
        let extra =
            resolve_extra_hosts(&req.extra_hosts, first.and_then(|n| n.gateway_v4()).map(IpAddr::V4))?;
        let mut nameservers: Vec<IpAddr> = Vec::new();
        for n in &nets {
            for g in n.gateways() {
                if !nameservers.contains(&g) && nameservers.len() < 3 {
                    nameservers.push(g);
                }
            }
        }
        let own: Vec<IpAddr> = states
            .iter()
            .flat_map(|s| s.ipv4.map(IpAddr::V4).into_iter().chain(s.ipv6.map(IpAddr::V6)))
            .collect();
        let spec = FilesSpec {
            hostname: &req.hostname,
            own,
            extra_hosts: extra,
            nameservers,
            search: &req.dns_search,
            options: &req.dns_opt,
            host_hosts: false,
        };
        hosts::write(&rec.files, &spec)?;
        self.drivers.dns.start_or_reload()?;
        let (hosts_file, resolv_conf, hostname_file) = hosts::paths(&rec.files);
        Ok(Attachment {
            netns_path: Some(netns_path),
            hosts_file,
            resolv_conf,
            hostname_file,
            endpoints: states
                .iter()
                .map(|s| AttachedEndpoint {
                    network: s.network.clone(),
                    ipv4: s.ipv4,
                    ipv6: s.ipv6,
                    mac: s.mac.clone(),
                    interface: s.interface.clone(),
                })
                .collect(),
            ports: published,
        })
    }

    /// Undoes an attach fully: veths, netns file, files, record, firewall rules, DNS names.
    /// Keeps going when a step fails and returns every failure; the record then stays, as it
    /// still claims what is left, so that the next detach finishes. Detaching a container
    /// that is not attached is not an error.
    pub fn detach(&self, container_id: &str) -> Result<(), NetError> {
        if !valid_name(container_id) {
            return Err(NetError::Invalid(format!("invalid container id {container_id:?}")));
        }
        // Deleting a veth waits for the kernel's RCU grace period (tens of milliseconds). Done
        // before the run dir's network lock is taken, the deletions of containers that `down`
        // removes in parallel overlap instead of queueing behind the lock one by one. The
        // record is only read here (records are replaced atomically); under the lock the
        // deletion is done again, which finds nothing left, and any failure is reported then.
        if let Ok(Some(rec)) = record::read_endpoint(&self.dirs, container_id) {
            for ep in &rec.endpoints {
                let _ = self.drivers.link.delete_link(&ep.host_veth);
            }
        }
        let _lock = self.lock()?;
        self.detach_locked(container_id)
    }

    fn detach_locked(&self, id: &str) -> Result<(), NetError> {
        let link = &self.drivers.link;
        // Failures to take away what the record claims: the record stays while there are any.
        let mut left = Vec::new();
        let (rec, damaged) = match record::read_endpoint(&self.dirs, id) {
            Ok(r) => (r, false),
            // A damaged record: the veths are found by their names, which the container's id
            // and each network's name give.
            Err(NetError::State(crate::state::StateError::Json { .. })) => (None, true),
            Err(e) => {
                left.push(e);
                (None, false)
            }
        };
        let veths: Vec<String> = match &rec {
            Some(rec) => rec.endpoints.iter().map(|ep| ep.host_veth.clone()).collect(),
            None if damaged => all_networks(&self.dirs)
                .unwrap_or_default()
                .iter()
                .map(|net| bridge::veth_name(id, &net.name))
                .collect(),
            None => Vec::new(),
        };
        for veth in &veths {
            // Deleting the host side deletes its peer in the container too.
            if let Err(e) = link.delete_link(veth) {
                left.push(e);
            }
        }
        let had_ports = damaged || rec.as_ref().is_some_and(|r| !r.ports.is_empty());
        // Only our own netns file and files dir: container mode shares another's.
        if let Err(e) = link.remove_netns(&self.dirs.netns().join(id)) {
            left.push(e);
        }
        let files = self.files_dir(id);
        if let Err(e) = std::fs::remove_dir_all(&files)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            left.push(NetError::sys(format!("remove {}", files.display()), e));
        }
        let mut errors = left;
        if errors.is_empty() {
            let path = record::endpoint_path(&self.dirs, id);
            if let Err(e) = std::fs::remove_file(&path)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                errors.push(NetError::sys(format!("remove {}", path.display()), e));
            }
        }
        if had_ports && let Err(e) = self.sync_firewall() {
            errors.push(e);
        }
        if let Err(e) = self.drivers.dns.reload() {
            errors.push(e);
        }
        NetError::collect(errors)
    }
}

/// What is done inside a new namespace for these endpoints (`states`, on `nets`, in order):
/// each interface gets its address on each of its network's subnets and is set up; the
/// default routes go via `gw_net`'s first gateway of each family; the sysctls come last.
fn netns_setup(
    states: &[EndpointState],
    nets: &[NetworkRecord],
    gw_net: Option<&NetworkRecord>,
    sysctls: &std::collections::BTreeMap<String, String>,
) -> Result<NetnsSetup, NetError> {
    let mut interfaces = Vec::new();
    for (st, net) in states.iter().zip(nets) {
        let mut addresses = Vec::new();
        for s in &net.subnets {
            let ip = match s.subnet.addr() {
                IpAddr::V4(_) => st.ipv4.map(IpAddr::V4),
                IpAddr::V6(_) => st.ipv6.map(IpAddr::V6),
            };
            if let Some(ip) = ip {
                addresses.push(
                    ipnet::IpNet::new(ip, s.subnet.prefix_len()).map_err(|e| NetError::Invalid(e.to_string()))?,
                );
            }
        }
        interfaces.push(InterfaceSetup { name: st.interface.clone(), addresses, ipv6: st.ipv6.is_some() });
    }
    let mut default_routes: Vec<IpAddr> = Vec::new();
    for s in gw_net.map(|n| n.subnets.as_slice()).unwrap_or_default() {
        if !default_routes.iter().any(|g| g.is_ipv6() == s.gateway.is_ipv6()) {
            default_routes.push(s.gateway);
        }
    }
    Ok(NetnsSetup { interfaces, default_routes, sysctls: sysctls.clone() })
}

/// Resolves `host-gateway` in extra hosts to the given gateway (127.0.0.1 without one, as in
/// host networking), and checks the other addresses.
fn resolve_extra_hosts(
    extra: &[(String, String)],
    gateway: Option<IpAddr>,
) -> Result<Vec<(String, String)>, NetError> {
    extra
        .iter()
        .map(|(name, ip)| {
            let ip = if ip == "host-gateway" {
                gateway.map(|g| g.to_string()).unwrap_or_else(|| "127.0.0.1".into())
            } else {
                ip.trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .map_err(|_| NetError::Invalid(format!("invalid address {ip:?} for extra host {name}")))?
                    .to_string()
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(NetError::Invalid(format!("invalid extra host name {name:?}")));
            }
            Ok((name.clone(), ip))
        })
        .collect()
}
