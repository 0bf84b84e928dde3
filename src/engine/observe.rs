//! What this host has of a project: its containers, found by their compose labels, with
//! their live status.

use std::collections::BTreeMap;

use crate::labels;
use crate::runtime::status::{ContainerStatus, State};
use crate::runtime::{ContainerRecord, Runtime};
use crate::state::{Dirs, read_json};

use super::error::{EngineError, Result};

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
    fn from_record(record: ContainerRecord) -> Option<ProjectContainer> {
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

/// Every container whose project label is `project`, sorted by service then number.
pub fn project_containers(runtime: &Runtime, project: &str) -> Result<Vec<ProjectContainer>> {
    let ids = runtime.list().map_err(EngineError::runtime("list containers"))?;
    let mut out = Vec::new();
    for id in ids {
        let Some(record) = read_record(runtime.dirs(), &id) else { continue };
        if record.labels.get(labels::PROJECT).map(String::as_str) != Some(project) {
            continue;
        }
        if let Some(c) = ProjectContainer::from_record(record) {
            out.push(c);
        }
    }
    out.sort_by(|a, b| (&a.service, a.number, &a.name).cmp(&(&b.service, b.number, &b.name)));
    Ok(out)
}

/// Names of every project that has containers on this host.
pub fn all_projects(runtime: &Runtime) -> Result<Vec<String>> {
    let ids = runtime.list().map_err(EngineError::runtime("list containers"))?;
    let mut names: Vec<String> = ids
        .iter()
        .filter_map(|id| read_record(runtime.dirs(), id))
        .filter_map(|r| r.labels.get(labels::PROJECT).cloned())
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn read_record(dirs: &Dirs, id: &str) -> Option<ContainerRecord> {
    read_json(&dirs.container(id).join("record.json")).ok()
}

/// The container's status; a container whose records went away in between reads as dead.
pub fn status_of(runtime: &Runtime, id: &str) -> ContainerStatus {
    runtime.status(id).unwrap_or(ContainerStatus { state: State::Dead, ..ContainerStatus::default() })
}

/// Whether the container runs and a shim watches it.
pub fn is_running(st: &ContainerStatus) -> bool {
    matches!(st.state, State::Running | State::Restarting) && st.shim_pid > 0
}
