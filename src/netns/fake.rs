//! The networking drivers' test double: a pretend kernel, firewall and DNS process that write
//! down every call as one line (`add endpoint bv… in /netns/c1 on berth…`), keep the links and
//! namespaces that exist, and fail a call on demand. At each change it also checks the records
//! on disk: a kernel object made or taken away while no record claims it is listed in
//! `unclaimed`, so that tests can hold `Networks` to "record first, kernel after; kernel gone
//! first, record after".

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use super::driver::{Drivers, DnsDriver, FirewallDriver, LinkDriver, NetnsSetup};
use super::error::NetError;
use super::record::{self, EndpointRecord, EndpointState, NetworkRecord};
use crate::state::Dirs;

/// What the fake kernel holds and has seen.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Every call that succeeded, in order.
    pub calls: Vec<String>,
    /// Links on the host: bridges and host-side veths.
    pub links: BTreeSet<String>,
    /// Network namespace files (also made on disk, as the kernel's bind mount would be).
    pub netns: BTreeSet<PathBuf>,
    /// Host routes and addresses.
    pub host: Vec<IpNet>,
    /// A call whose line contains one of these fails with EIO (and is not recorded).
    pub fail_on: Vec<String>,
    /// Once a call whose line contains this has succeeded, the next call panics: the process
    /// was killed right after that step.
    pub crash_after: Option<String>,
    /// The crash point has passed.
    pub crashed: bool,
    /// Changes made while no record claimed the object.
    pub unclaimed: Vec<String>,
    /// The DNS process runs.
    pub dns_alive: bool,
    /// The networks and published ports of the last firewall sync.
    pub rules: Option<(Vec<String>, Vec<u16>)>,
}

/// The fake; one shared by the three drivers of a `Networks`.
#[derive(Debug)]
pub(crate) struct FakeNet {
    dirs: Dirs,
    state: Mutex<State>,
}

impl FakeNet {
    /// A fake kernel for networks kept under `dirs`.
    pub(crate) fn new(dirs: &Dirs) -> Arc<FakeNet> {
        Arc::new(FakeNet { dirs: dirs.clone(), state: Mutex::new(State::default()) })
    }

    /// The drivers, all on this fake.
    pub(crate) fn drivers(self: &Arc<Self>) -> Drivers {
        Drivers { link: self.clone(), firewall: self.clone(), dns: self.clone() }
    }

    /// The state, to set up or look at.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The calls so far, forgotten.
    pub(crate) fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut self.state().calls)
    }

    /// Shows a path under the run dir from `/` (`/netns/c1`).
    fn show(&self, path: &Path) -> String {
        match path.strip_prefix(&self.dirs.run) {
            Ok(rest) => Path::new("/").join(rest).display().to_string(),
            Err(_) => path.display().to_string(),
        }
    }

    /// Records `line`, or fails it as asked. After the crash point, the call panics: the
    /// test catches the unwind, and nothing after that step is done, as when the process is
    /// killed (only the locks are let go, as the kernel lets go of a dead process's locks).
    fn call(&self, line: String) -> Result<(), NetError> {
        let mut st = self.state();
        if st.crashed {
            drop(st);
            panic!("killed before {line}");
        }
        if st.fail_on.iter().any(|n| line.contains(n.as_str())) {
            return Err(NetError::sys(line, std::io::Error::from_raw_os_error(libc::EIO)));
        }
        if st.crash_after.as_ref().is_some_and(|n| line.contains(n.as_str())) {
            st.crashed = true;
        }
        st.calls.push(line);
        Ok(())
    }

    fn note_unclaimed(&self, what: String) {
        self.state().unclaimed.push(what);
    }

    fn networks(&self) -> Vec<NetworkRecord> {
        record::all_networks(&self.dirs).unwrap_or_default()
    }

    fn endpoints(&self) -> Vec<EndpointRecord> {
        record::all_endpoints(&self.dirs).unwrap_or_default()
    }

    /// Whether a record claims link `name`: a network's bridge, an endpoint's veth, or any
    /// record that cannot be read (whose objects are found by their names).
    fn link_claimed(&self, name: &str) -> bool {
        self.networks().iter().any(|n| n.bridge == name)
            || self.endpoints().iter().any(|r| r.endpoints.iter().any(|e| e.host_veth == name))
            || !record::damaged(&self.dirs.networks()).is_empty()
            || !record::damaged(&record::endpoints_dir(&self.dirs)).is_empty()
    }

    fn netns_claimed(&self, path: &Path) -> bool {
        let id = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        self.endpoints().iter().any(|r| r.netns.as_deref() == Some(path))
            || record::endpoint_path(&self.dirs, &id).exists()
    }
}

impl LinkDriver for FakeNet {
    fn host_prefixes(&self) -> Result<Vec<IpNet>, NetError> {
        self.call("host prefixes".into())?;
        Ok(self.state().host.clone())
    }

    fn ensure_bridge(&self, net: &NetworkRecord) -> Result<(), NetError> {
        self.call(format!("ensure bridge {} of {}", net.bridge, net.name))?;
        if !self.state().links.contains(&net.bridge) && !self.link_claimed(&net.bridge) {
            self.note_unclaimed(format!("bridge {} made", net.bridge));
        }
        self.state().links.insert(net.bridge.clone());
        Ok(())
    }

    fn link_exists(&self, name: &str) -> bool {
        self.state().links.contains(name)
    }

    fn delete_link(&self, name: &str) -> Result<(), NetError> {
        self.call(format!("delete link {name}"))?;
        if self.state().links.contains(name) && !self.link_claimed(name) {
            self.note_unclaimed(format!("link {name} deleted"));
        }
        self.state().links.remove(name);
        Ok(())
    }

    fn create_netns(&self, path: &Path) -> Result<(), NetError> {
        self.call(format!("create netns {}", self.show(path)))?;
        if !self.netns_claimed(path) {
            self.note_unclaimed(format!("netns {} made", self.show(path)));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| NetError::sys("create netns dir", e))?;
        }
        std::fs::write(path, "").map_err(|e| NetError::sys("create netns file", e))?;
        self.state().netns.insert(path.to_path_buf());
        Ok(())
    }

    fn remove_netns(&self, path: &Path) -> Result<(), NetError> {
        let exists = self.state().netns.contains(path);
        if !exists {
            // Nothing to remove: no call, as the kernel's umount of nothing changes nothing.
            return Ok(());
        }
        self.call(format!("remove netns {}", self.show(path)))?;
        if !self.netns_claimed(path) {
            self.note_unclaimed(format!("netns {} removed", self.show(path)));
        }
        let _ = std::fs::remove_file(path);
        self.state().netns.remove(path);
        Ok(())
    }

    fn add_endpoint(&self, netns: &Path, ep: &EndpointState, net: &NetworkRecord) -> Result<(), NetError> {
        self.call(format!("add endpoint {} in {} on {}", ep.host_veth, self.show(netns), net.bridge))?;
        let claimed = self.endpoints().iter().any(|r| {
            r.netns.as_deref() == Some(netns) && r.endpoints.iter().any(|e| e.host_veth == ep.host_veth)
        });
        if !claimed {
            self.note_unclaimed(format!("veth {} made", ep.host_veth));
        }
        if !self.state().links.contains(&net.bridge) && !self.link_claimed(&net.bridge) {
            self.note_unclaimed(format!("bridge {} made", net.bridge));
        }
        let mut st = self.state();
        if !st.netns.contains(netns) {
            return Err(NetError::Invalid(format!("veth {}: no namespace", ep.host_veth)));
        }
        st.links.insert(net.bridge.clone());
        st.links.insert(ep.host_veth.clone());
        Ok(())
    }

    fn configure_netns(&self, netns: &Path, setup: &NetnsSetup) -> Result<(), NetError> {
        let mut line = format!("configure {}:", self.show(netns));
        for i in &setup.interfaces {
            let addrs: Vec<String> = i.addresses.iter().map(|a| a.to_string()).collect();
            line.push_str(&format!(" {}={}", i.name, addrs.join(",")));
        }
        for gw in &setup.default_routes {
            line.push_str(&format!(" default via {gw}"));
        }
        for (k, v) in &setup.sysctls {
            line.push_str(&format!(" {k}={v}"));
        }
        self.call(line)
    }
}

impl FirewallDriver for FakeNet {
    fn sync(&self, table: &str, networks: &[NetworkRecord], endpoints: &[EndpointRecord]) -> Result<(), NetError> {
        let nets: Vec<String> = networks.iter().map(|n| n.name.clone()).collect();
        let ports: Vec<u16> = endpoints.iter().flat_map(|r| r.ports.iter().map(|p| p.container_port)).collect();
        let table = if table.starts_with("berth") { "berth" } else { table };
        self.call(format!("firewall {table} {nets:?} ports {ports:?}"))?;
        self.state().rules = Some((nets, ports));
        Ok(())
    }
}

impl DnsDriver for FakeNet {
    fn alive(&self) -> bool {
        self.state().dns_alive
    }

    fn start_or_reload(&self) -> Result<(), NetError> {
        let alive = self.state().dns_alive;
        self.call(if alive { "dns reload".into() } else { "dns start".into() })?;
        self.state().dns_alive = true;
        Ok(())
    }

    fn reload(&self) -> Result<(), NetError> {
        if self.state().dns_alive {
            self.call("dns reload".into())?;
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), NetError> {
        self.call("dns stop".into())?;
        self.state().dns_alive = false;
        Ok(())
    }
}
