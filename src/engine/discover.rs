//! Projects found by what they left on the host, as docker compose finds them by labels: the
//! list of projects (`ls`), and a project known only by its name (`-p NAME` with no compose
//! file) rebuilt from its containers' labels, so that `start`, `stop`, `ps`, `logs`, `exec`
//! and `port` work without the file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::compose::LoadedProject;
use crate::compose::model::{Project, ServiceConfig, ServiceDependency};
use crate::compose::node::{Map, Mark, Node, Value};
use crate::labels;
use crate::runtime::status::State;

use super::error::{EngineError, Result};
use super::host::ContainerHost;
use super::observe::{ProjectContainer, containers_of};

/// One project on this host, as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProjectSummary {
    /// The project's name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Its containers counted by state, states sorted: `exited(1), running(3)`.
    #[serde(rename = "Status")]
    pub status: String,
    /// The compose files its containers were made from, comma-separated, each once.
    #[serde(rename = "ConfigFiles")]
    pub config_files: String,
}

/// Every project with a container on this host (with `all`), or with a running one: docker
/// compose's `ls`, which counts only running containers unless `-a`. Sorted by name.
pub fn list_projects(host: &dyn ContainerHost, all: bool) -> Result<Vec<ProjectSummary>> {
    let records = host.records().map_err(EngineError::runtime("list containers"))?;
    // Per project: state counts, and config files in first-seen order.
    let mut found: BTreeMap<String, (BTreeMap<&'static str, usize>, Vec<String>)> = BTreeMap::new();
    for r in records {
        let Some(project) = r.labels.get(labels::PROJECT) else { continue };
        // docker compose lists containers that carry a config hash: those `up` and `run` made.
        if !r.labels.contains_key(labels::CONFIG_HASH) {
            continue;
        }
        let state = host.status(&r.id).state;
        if !all && !matches!(state, State::Running | State::Restarting) {
            continue;
        }
        let (counts, files) = found.entry(project.clone()).or_default();
        *counts.entry(state.as_str()).or_default() += 1;
        for f in r.labels.get(labels::CONFIG_FILES).map(String::as_str).unwrap_or("").split(',') {
            if !f.is_empty() && !files.iter().any(|x| x == f) {
                files.push(f.to_string());
            }
        }
    }
    Ok(found
        .into_iter()
        .map(|(name, (counts, files))| ProjectSummary {
            name,
            status: counts.iter().map(|(s, n)| format!("{s}({n})")).collect::<Vec<_>>().join(", "),
            config_files: files.join(","),
        })
        .collect())
}

/// The project `name` as its containers describe it (docker compose's `projectFromName`): one
/// service per service label, its scale the number of its containers, its `depends_on` from the
/// `com.docker.compose.depends_on` label, its image the one `image_name` gives for the
/// container's image id (when the store still names it). One-off containers are left out.
/// An error when the project has no container.
pub fn project_from_containers(
    host: &dyn ContainerHost,
    name: &str,
    image_name: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedProject> {
    let containers = containers_of(host, name)?;
    project_from(name, &containers, image_name)
}

fn project_from(
    name: &str,
    containers: &[ProjectContainer],
    image_name: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedProject> {
    let mut services: BTreeMap<String, ServiceConfig> = BTreeMap::new();
    let mut working_dir = None;
    let mut files: Vec<PathBuf> = Vec::new();
    for c in containers.iter().filter(|c| !c.oneoff) {
        let svc = services.entry(c.service.clone()).or_insert_with(|| ServiceConfig {
            image: c.image_id.as_deref().and_then(image_name).or_else(|| c.image_id.clone()),
            depends_on: depends_on(c.labels.get(labels::DEPENDS_ON).map(String::as_str).unwrap_or("")),
            ..ServiceConfig::default()
        });
        svc.scale = Some(svc.scale.unwrap_or(0) + 1);
        if working_dir.is_none() {
            working_dir = c.labels.get(labels::WORKING_DIR).map(PathBuf::from);
        }
        for f in c.labels.get(labels::CONFIG_FILES).map(String::as_str).unwrap_or("").split(',') {
            if !f.is_empty() && !files.iter().any(|x| x.as_os_str() == f) {
                files.push(PathBuf::from(f));
            }
        }
    }
    if services.is_empty() {
        return Err(EngineError::Msg(format!("no container found for project {name:?}")));
    }
    let project = Project { name: name.to_string(), services, ..Project::default() };
    Ok(LoadedProject {
        project,
        tree: Node { value: Value::Map(Map::default()), mark: Mark::default(), tag: None },
        files,
        project_dir: working_dir.unwrap_or_default(),
        environment: Default::default(),
        disabled_services: Vec::new(),
    })
}

/// `db:service_healthy:true,cache:service_started:false` (older containers: `db,cache`).
fn depends_on(label: &str) -> BTreeMap<String, ServiceDependency> {
    label
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| {
            let mut parts = d.split(':');
            let service = parts.next().unwrap_or_default().to_string();
            let condition = parts.next().unwrap_or("service_started").to_string();
            let restart = parts.next().is_none_or(|r| r.eq_ignore_ascii_case("true"));
            (service, ServiceDependency { condition, restart, required: true })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{Fake, exited, load};
    use crate::engine::plan::UpOptions;

    const YAML: &str = "services:\n  db:\n    image: img\n  web:\n    image: img\n    scale: 2\n    depends_on:\n      db:\n        condition: service_started\n        restart: true\n";

    #[test]
    fn a_project_is_rebuilt_from_its_containers_labels() {
        let fake = Fake::with_images(&["img"]);
        let (_dir, loaded, graph) = load(YAML);
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        let named = |_: &str| Some("img:latest".to_string());
        let rebuilt = project_from_containers(&fake, "p", &named).unwrap();
        let p = &rebuilt.project;
        assert_eq!(p.services.keys().collect::<Vec<_>>(), ["db", "web"]);
        assert_eq!(p.services["web"].scale, Some(2));
        let dep = &p.services["web"].depends_on["db"];
        assert_eq!((dep.condition.as_str(), dep.restart), ("service_started", true));
        assert!(p.services["db"].depends_on.is_empty());
        assert_eq!(rebuilt.files, loaded.files);
        // The rebuilt project has a graph: start and stop order by it.
        crate::graph::ServiceGraph::from_project(p).unwrap();
        let missing = project_from_containers(&fake, "other", &named).unwrap_err();
        assert!(missing.to_string().contains("no container found for project \"other\""), "{missing}");
    }

    #[test]
    fn ls_counts_states_and_lists_config_files_once() {
        let fake = Fake::with_images(&["img"]);
        let (_dir, loaded, graph) = load(YAML);
        fake.up(&loaded, &graph, &UpOptions::default()).unwrap();
        let running = list_projects(&fake, false).unwrap();
        let files: Vec<String> = loaded.files.iter().map(|f| f.display().to_string()).collect();
        assert_eq!(
            running,
            [ProjectSummary { name: "p".into(), status: "running(3)".into(), config_files: files.join(",") }]
        );
        fake.set_status("p-db-1", exited(0));
        assert_eq!(list_projects(&fake, false).unwrap()[0].status, "running(2)");
        assert_eq!(list_projects(&fake, true).unwrap()[0].status, "exited(1), running(2)");
        for n in ["p-web-1", "p-web-2"] {
            fake.set_status(n, exited(1));
        }
        assert!(list_projects(&fake, false).unwrap().is_empty());
    }

    #[test]
    fn dependency_labels_of_old_and_new_form() {
        let d = depends_on("a:service_completed_successfully:false,b");
        assert_eq!(d["a"].condition, "service_completed_successfully");
        assert!(!d["a"].restart);
        assert_eq!((d["b"].condition.as_str(), d["b"].restart), ("service_started", true));
        assert!(depends_on("").is_empty());
    }
}
