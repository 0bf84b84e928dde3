//! On-disk records of networks (`<root>/networks/<name>.json`) and of containers' endpoints
//! (`<run>/endpoints/<container id>.json`). Everything teardown, the firewall and the DNS
//! server need is in them, so each can work from state alone, also after a crash.
//!
//! Endpoint records live in the run dir on purpose: they describe network namespaces and veths
//! that a reboot removes, so a reboot removes the records with them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::NetError;
use super::{NetworkSpec, PublishedPort};
use crate::state::{DamagedRecord, Dirs, StateError, read_json, write_json};

/// One subnet of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRecord {
    /// The subnet.
    pub subnet: ipnet::IpNet,
    /// The gateway (the bridge's address).
    pub gateway: IpAddr,
    /// The range containers' addresses are taken from, when narrower than the subnet.
    pub ip_range: Option<ipnet::IpNet>,
}

/// A network as berth made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// Full name, e.g. `proj_default`.
    pub name: String,
    /// 64 hex digits, derived from the name and creation time.
    pub id: String,
    /// Driver (always `bridge` for now).
    pub driver: String,
    /// Linux bridge name.
    pub bridge: String,
    /// Subnets with their gateways.
    pub subnets: Vec<SubnetRecord>,
    /// No way out, no masquerade.
    pub internal: bool,
    /// Has an IPv6 subnet.
    pub ipv6: bool,
    /// MTU of the bridge and veths, when set.
    pub mtu: Option<u32>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options as given.
    pub options: BTreeMap<String, String>,
    /// Creation time, seconds since the epoch.
    pub created: u64,
    /// The spec this network was created from, to make `create` idempotent.
    pub spec: NetworkSpec,
}

impl NetworkRecord {
    /// The gateway addresses (one per subnet).
    pub fn gateways(&self) -> Vec<IpAddr> {
        self.subnets.iter().map(|s| s.gateway).collect()
    }

    /// The first IPv4 gateway.
    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.subnets.iter().find_map(|s| match s.gateway {
            IpAddr::V4(a) => Some(a),
            _ => None,
        })
    }
}

/// How a container is networked, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeRecord {
    /// Own netns with bridge endpoints.
    Bridge,
    /// The host's network.
    Host,
    /// Own netns with loopback only.
    None,
    /// Another container's netns.
    Container(String),
}

/// One endpoint of a container on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    /// Network name.
    pub network: String,
    /// The network's bridge.
    pub bridge: String,
    /// Host-side veth name.
    pub host_veth: String,
    /// Interface inside the container (`eth0`, ...).
    pub interface: String,
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// MAC address.
    pub mac: String,
    /// Names this endpoint answers to in DNS on this network.
    pub aliases: Vec<String>,
}

/// Everything attach made for one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// Container id.
    pub container_id: String,
    /// Container name.
    pub container_name: String,
    /// Hostname.
    pub hostname: String,
    /// Networking mode.
    pub mode: ModeRecord,
    /// The netns file this attach created (None for host mode and container mode).
    pub netns: Option<PathBuf>,
    /// Endpoints, eth0 first.
    pub endpoints: Vec<EndpointState>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// DNS servers the container asked for (forwarded to instead of the host's).
    pub dns: Vec<String>,
    /// Directory holding hosts, resolv.conf and hostname.
    pub files: PathBuf,
}

/// Path of a network record.
pub fn network_path(dirs: &Dirs, name: &str) -> PathBuf {
    dirs.networks().join(format!("{name}.json"))
}

/// `<run>/endpoints`.
pub fn endpoints_dir(dirs: &Dirs) -> PathBuf {
    dirs.run.join("endpoints")
}

/// Path of an endpoint record.
pub fn endpoint_path(dirs: &Dirs, container_id: &str) -> PathBuf {
    endpoints_dir(dirs).join(format!("{container_id}.json"))
}

/// Reads a network record; `None` when there is none.
pub fn read_network(dirs: &Dirs, name: &str) -> Result<Option<NetworkRecord>, NetError> {
    read_opt(&network_path(dirs, name))
}

/// Writes a network record.
pub fn write_network(dirs: &Dirs, rec: &NetworkRecord) -> Result<(), NetError> {
    Ok(crate::state::write_json_with_copy(&network_path(dirs, &rec.name), rec)?)
}

/// Reads an endpoint record; `None` when there is none.
pub fn read_endpoint(dirs: &Dirs, id: &str) -> Result<Option<EndpointRecord>, NetError> {
    read_opt(&endpoint_path(dirs, id))
}

/// Writes an endpoint record.
pub fn write_endpoint(dirs: &Dirs, rec: &EndpointRecord) -> Result<(), NetError> {
    Ok(write_json(&endpoint_path(dirs, &rec.container_id), rec)?)
}

fn read_opt<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, NetError> {
    match read_json(path) {
        Ok(v) => Ok(Some(v)),
        Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn read_all<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<Vec<T>, NetError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(NetError::sys(format!("read {}", dir.display()), e)),
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "json")
                && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        match read_opt(&p) {
            Ok(Some(v)) => out.push(v),
            Ok(None) => {}
            // A damaged record must not stop every command: it is listed by [`damaged`], and
            // the engine reports it and removes what it described.
            Err(NetError::State(StateError::Json { .. })) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Records in `dir` (`<name>.json`) that cannot be read as JSON: name, path, what is wrong.
/// Temp files of writes that a killed command left there go first.
pub fn damaged(dir: &Path) -> Vec<DamagedRecord> {
    crate::state::sweep_temp_files(dir);
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json").filter(|_| !name.starts_with('.')) else { continue };
        if let Err(StateError::Json { path, source }) = read_json::<serde::de::IgnoredAny>(&e.path()) {
            let labels = crate::state::labels_of_copy(&path);
            out.push(DamagedRecord {
                name: stem.to_string(),
                file: path,
                reason: source.to_string(),
                labels,
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Container ids that have an endpoint record (readable or not).
/// Also those with only a netns file (`<run>/netns/<id>`) or files dir (`<run>/netns-files/<id>`):
/// an attach killed before it wrote the record leaves these, and they are detached likewise.
pub fn endpoint_ids(dirs: &Dirs) -> Vec<String> {
    let dir = endpoints_dir(dirs);
    crate::state::sweep_temp_files(&dir);
    let names = |dir: &Path| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect()
    };
    let mut ids: Vec<String> =
        names(&dir).into_iter().filter_map(|n| n.strip_suffix(".json").map(str::to_string)).collect();
    ids.extend(names(&dirs.netns()));
    ids.extend(names(&dirs.run.join("netns-files")));
    ids.sort();
    ids.dedup();
    ids
}

/// All network records, sorted by name.
pub fn all_networks(dirs: &Dirs) -> Result<Vec<NetworkRecord>, NetError> {
    read_all(&dirs.networks())
}

/// All endpoint records.
pub fn all_endpoints(dirs: &Dirs) -> Result<Vec<EndpointRecord>, NetError> {
    read_all(&endpoints_dir(dirs))
}

#[cfg(test)]
mod copy_tests {
    use super::*;

    #[test]
    fn attachments_are_known_by_record_netns_file_or_files_dir() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
        for d in [endpoints_dir(&dirs), dirs.netns(), dirs.run.join("netns-files").join("c")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(endpoint_path(&dirs, "a"), "{}").unwrap();
        std::fs::write(dirs.netns().join("a"), "").unwrap();
        std::fs::write(dirs.netns().join("b"), "").unwrap();
        std::fs::write(endpoints_dir(&dirs).join(".a.json.tmp1"), "").unwrap();
        assert_eq!(endpoint_ids(&dirs), ["a", "b", "c"]);
    }

    #[test]
    fn a_damaged_record_tells_its_labels_from_its_copy() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let rec = serde_json::json!({"name": "web", "labels": {"com.docker.compose.project": "p"}});
        let path = dir.path().join("web.json");
        crate::state::write_json_with_copy(&path, &rec).unwrap();
        crate::state::write_json(&dir.path().join("old.json"), &rec).unwrap();
        // The copy is no record: nothing else is listed, nothing is damaged yet.
        assert!(damaged(dir.path()).is_empty());
        for p in [&path, &dir.path().join("old.json")] {
            std::fs::write(p, "{\"name\": \"we").unwrap();
        }
        let found = damaged(dir.path());
        assert_eq!(found.len(), 2);
        assert_eq!((found[0].name.as_str(), found[0].labels.as_ref()), ("old", None));
        assert_eq!(found[1].name, "web");
        let labels = found[1].labels.as_ref().unwrap();
        assert_eq!(labels.get("com.docker.compose.project").map(String::as_str), Some("p"));
    }
}
