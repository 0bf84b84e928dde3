//! What this host has of a project: its containers, found by their compose labels, with
//! their live status, and the networks, volumes and images a plan needs to know about, read
//! once ([`observe`]) so that planning reads nothing.

use std::collections::{BTreeMap, BTreeSet};

use crate::labels;
use crate::runtime::status::{ContainerStatus, State};
use crate::runtime::{ContainerRecord, Runtime};

use crate::image::{ImageError, ResolvedImage};

use super::error::{EngineError, Result};
use super::host::{ContainerHost, Host};

/// One container of a project, as its record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectContainer {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Service it belongs to.
    pub service: String,
    /// Its number within the service (1-based).
    pub number: u32,
    /// The config hash it was made from.
    pub config_hash: String,
    /// Made by `run` rather than `up`.
    pub oneoff: bool,
    /// Image id.
    pub image_id: Option<String>,
    /// Creation time (RFC 3339).
    pub created: String,
    /// All labels.
    pub labels: BTreeMap<String, String>,
}

impl ProjectContainer {
    pub(crate) fn from_record(record: ContainerRecord) -> Option<ProjectContainer> {
        let label = |k: &str| record.labels.get(k).cloned();
        Some(ProjectContainer {
            service: label(labels::SERVICE)?,
            number: label(labels::NUMBER).and_then(|n| n.parse().ok()).unwrap_or(0),
            config_hash: label(labels::CONFIG_HASH).unwrap_or_default(),
            oneoff: label(labels::ONEOFF).is_some_and(|v| v.eq_ignore_ascii_case("true")),
            id: record.id,
            name: record.name,
            image_id: record.image_id,
            created: record.created,
            labels: record.labels,
        })
    }
}

/// What to look at besides the project's containers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Networks (real names) whose existence matters.
    pub networks: Vec<String>,
    /// Volumes (real names) whose existence matters.
    pub volumes: Vec<String>,
    /// Image references to resolve.
    pub images: Vec<String>,
    /// Also list every network labelled with the project (`down`).
    pub labelled_networks: bool,
    /// Also list every volume labelled with the project (`down -v`).
    pub labelled_volumes: bool,
}

/// What the host has of a project, read once.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The project's name.
    pub project: String,
    /// Its containers (one-offs too), sorted by service then number.
    pub containers: Vec<ProjectContainer>,
    /// Each container's status, by id.
    pub status: BTreeMap<String, ContainerStatus>,
    /// Which of the scope's networks exist.
    pub networks: BTreeSet<String>,
    /// Which of the scope's volumes exist.
    pub volumes: BTreeSet<String>,
    /// The scope's images that are present, by reference.
    pub images: BTreeMap<String, ResolvedImage>,
    /// Networks labelled with the project (with [`Scope::labelled_networks`]).
    pub labelled_networks: Vec<String>,
    /// Volumes labelled with the project (with [`Scope::labelled_volumes`]).
    pub labelled_volumes: Vec<String>,
}

impl Observed {
    /// The status of container `id` (dead when it was not seen).
    pub fn status(&self, id: &str) -> ContainerStatus {
        self.status
            .get(id)
            .cloned()
            .unwrap_or(ContainerStatus { state: State::Dead, ..ContainerStatus::default() })
    }
}

/// Reads what the host has of `project`: its containers and their status, and what `scope`
/// asks about. Nothing is changed.
pub fn observe(host: &Host<'_>, project: &str, scope: &Scope) -> Result<Observed> {
    let containers = containers_of(host.containers, project)?;
    let status = containers.iter().map(|c| (c.id.clone(), host.containers.status(&c.id))).collect();
    let mut out = Observed { project: project.to_string(), containers, status, ..Observed::default() };
    for name in &scope.networks {
        if host.networks.exists(name).map_err(EngineError::net(format!("network {name}")))? {
            out.networks.insert(name.clone());
        }
    }
    for name in &scope.volumes {
        if host.volumes.exists(name).map_err(EngineError::volume("volume"))? {
            out.volumes.insert(name.clone());
        }
    }
    for reference in &scope.images {
        match host.images.resolve(reference) {
            Ok(image) => {
                out.images.insert(reference.clone(), image);
            }
            Err(ImageError::NotFound(_)) => {}
            Err(source) => return Err(EngineError::Image { service: "-".into(), source }),
        }
    }
    let mine = |l: &BTreeMap<String, String>| l.get(labels::PROJECT).map(String::as_str) == Some(project);
    if scope.labelled_networks {
        let nets = host.networks.list().map_err(EngineError::net("list networks"))?;
        out.labelled_networks = nets.into_iter().filter(|n| mine(&n.labels)).map(|n| n.name).collect();
    }
    if scope.labelled_volumes {
        let vols = host.volumes.list().map_err(EngineError::volume("volume"))?;
        out.labelled_volumes = vols.into_iter().filter(|v| mine(&v.labels)).map(|v| v.name).collect();
    }
    Ok(out)
}

/// Every container whose project label is `project`, sorted by service then number.
pub fn containers_of(host: &dyn ContainerHost, project: &str) -> Result<Vec<ProjectContainer>> {
    let records = host.records().map_err(EngineError::runtime("list containers"))?;
    let mut out: Vec<ProjectContainer> = records
        .into_iter()
        .filter(|r| r.labels.get(labels::PROJECT).map(String::as_str) == Some(project))
        .filter_map(ProjectContainer::from_record)
        .collect();
    out.sort_by(|a, b| (&a.service, a.number, &a.name).cmp(&(&b.service, b.number, &b.name)));
    Ok(out)
}

/// Every container whose project label is `project`, sorted by service then number.
pub fn project_containers(runtime: &Runtime, project: &str) -> Result<Vec<ProjectContainer>> {
    containers_of(runtime, project)
}

/// Names of every project that has containers on this host.
pub fn all_projects(runtime: &Runtime) -> Result<Vec<String>> {
    let records = ContainerHost::records(runtime).map_err(EngineError::runtime("list containers"))?;
    let mut names: Vec<String> =
        records.into_iter().filter_map(|r| r.labels.get(labels::PROJECT).cloned()).collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The container's status; a container whose records went away in between reads as dead.
pub fn status_of(runtime: &Runtime, id: &str) -> ContainerStatus {
    ContainerHost::status(runtime, id)
}

/// Whether the container runs and a shim watches it.
pub fn is_running(st: &ContainerStatus) -> bool {
    matches!(st.state, State::Running | State::Restarting) && st.shim_pid > 0
}
