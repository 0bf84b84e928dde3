//! What this host has of a project: its containers, found by their compose labels, with
//! their live status, and the networks, volumes and images a plan needs to know about, read
//! once ([`observe`]) so that planning reads nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use crate::labels;
use crate::runtime::status::{ContainerStatus, State};
use crate::runtime::{ContainerRecord, Runtime, RuntimeError};
use crate::state::{is_temp_name, sweep_temp_files};

use crate::image::{ImageError, ResolvedImage};

use super::error::{EngineError, Result};
use super::host::{ContainerHost, Host};
use super::progress::Progress;

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
    let status =
        crate::state::parallel_map(&containers, |c| (c.id.clone(), host.containers.status(&c.id))).into_iter().collect();
    let mut out = Observed { containers, status, ..Observed::default() };
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
    // Services often share an image: each is resolved once (a resolve reads the store's
    // index, the manifest and the config, and lists the layers).
    let mut seen = std::collections::BTreeSet::new();
    for reference in &scope.images {
        if !seen.insert(reference.as_str()) {
            continue;
        }
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

/// The container's status; a container whose records went away in between reads as dead.
pub fn status_of(runtime: &Runtime, id: &str) -> ContainerStatus {
    ContainerHost::status(runtime, id)
}

/// Whether the container runs and a shim watches it.
pub fn is_running(st: &ContainerStatus) -> bool {
    matches!(st.state, State::Running | State::Restarting) && st.shim_pid > 0
}

/// Makes the host and the records of `project` agree before a command plans (`up`, `down`),
/// under the project's lock, so that whatever a killed command or a damaged file left, the
/// next command converges:
/// - containers noted as being made (`pending/`) whose making did not complete are removed
///   with their network attachment, so that the plan makes them again;
/// - a container whose record or spec cannot be read is reported once, by file, and removed
///   with what it made (its processes, its network attachment, its folders), so that the
///   plan makes it again; one that tells no project is removed by any project's command;
/// - a container whose network attachment record cannot be read is removed likewise;
/// - a network of the project whose record cannot be read is removed with the containers on
///   it (bridge by its name, firewall rules) and made again by the plan;
/// - a volume of the project whose record cannot be read gets a new one around its data;
/// - a network attachment (endpoint record, veths, netns file, published ports) of a
///   container that no longer exists is taken away: a command killed between removing a
///   container and detaching it leaves one, which would hold its network and its ports;
/// - temp files of interrupted writes are swept; the DNS process runs when networks exist
///   (started again when it was killed) and not when none do.
///
/// Every step is idempotent, so a kill during this one leaves work the next one finishes.
pub fn reconcile(host: &Host<'_>, project: &str, progress: &Progress) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(dir) = host.pending_dir(project) {
        sweep_temp_files(&dir);
        for (id, path) in notes(&dir) {
            // The note holds the container's name; a damaged one (cut short, overwritten) is
            // no name to print: the id is.
            let name = fs::read_to_string(&path)
                .ok()
                .filter(|n| labels::valid_container_name(n))
                .unwrap_or_else(|| id.clone());
            progress.warn(&format!("cleaning up container {name}, left half-made by an interrupted command"));
            if remove_container(host, &id, &name, &mut errors) {
                let _ = fs::remove_file(&path);
            }
        }
    }
    let damaged = host.containers.damaged().map_err(EngineError::runtime("list containers"))?;
    let pending = all_pending(host);
    for d in &damaged {
        let whose = d.labels.as_ref().and_then(|l| l.get(labels::PROJECT));
        // Another project's container is its own commands' business; one that tells no
        // project is everyone's, unless a command is making it.
        if whose.is_some_and(|p| p != project) || (whose.is_none() && pending.contains(&d.id)) {
            continue;
        }
        let name = d.name.clone().unwrap_or_else(|| d.id.clone());
        progress.warn(&format!(
            "{}: damaged record ({}); removing container {name}, to be made again",
            d.file.display(),
            d.reason
        ));
        remove_container(host, &d.id, &name, &mut errors);
    }
    // Shims and cgroups of containers that have no folder at all (no record to find them by).
    for what in host.containers.sweep_unrecorded() {
        progress.warn(&format!("removed {what}, left without a container record"));
    }
    // A container whose network record is damaged has lost its names and published ports
    // (the DNS table and the firewall are made from these records): it is made again.
    let endpoints = host.networks.damaged_endpoints();
    if !endpoints.is_empty() {
        let records = host.containers.records().map_err(EngineError::runtime("list containers"))?;
        for d in endpoints {
            let record = records.iter().find(|r| r.id == d.name);
            let whose = record.and_then(|r| r.labels.get(labels::PROJECT));
            if whose.is_some_and(|p| p != project) {
                continue;
            }
            let name = record.map_or_else(|| d.name.clone(), |r| r.name.clone());
            progress.warn(&format!(
                "{}: damaged record ({}); removing container {name}, to be made again",
                d.file.display(),
                d.reason
            ));
            remove_container(host, &d.name, &name, &mut errors);
        }
    }
    let prefix = format!("{project}_");
    for d in host.networks.damaged().into_iter().filter(|d| belongs(d, project)) {
        progress.warn(&format!(
            "{}: damaged record ({}); removing network {} and its containers, to be made again",
            d.file.display(),
            d.reason,
            d.name
        ));
        let records = host.containers.records().unwrap_or_default();
        for id in host.networks.attached_ids(&d.name) {
            let name = records.iter().find(|r| r.id == id).map_or_else(|| id.clone(), |r| r.name.clone());
            remove_container(host, &id, &name, &mut errors);
        }
        if let Err(e) = host.networks.forget(&d.name) {
            errors.push(EngineError::net(format!("remove network {}", d.name))(e));
        }
    }
    for d in host.volumes.damaged().into_iter().filter(|d| belongs(d, project)) {
        let how = if d.labels.is_some() { "from its copy" } else { "as a plain local volume" };
        progress.warn(&format!(
            "{}: damaged record ({}); written anew for volume {} {how} (its data is kept)",
            d.file.display(),
            d.reason,
            d.name
        ));
        // Used only without a readable copy (which keeps the labels it was made with).
        let mut volume_labels = BTreeMap::new();
        volume_labels.insert(labels::PROJECT.to_string(), project.to_string());
        let short = d.name.strip_prefix(&prefix).unwrap_or(&d.name);
        volume_labels.insert(labels::VOLUME.to_string(), short.to_string());
        volume_labels.insert(labels::VERSION.to_string(), labels::VERSION_VALUE.to_string());
        if let Err(e) = host.volumes.repair(&d.name, volume_labels) {
            errors.push(EngineError::volume("volume")(e));
        }
    }
    // Read in this order (attachments, notes, records): a container being made by another
    // command is noted before it is attached and recorded before its note goes, so it is
    // always seen in one of the last two.
    let attached = host.networks.endpoint_ids();
    if !attached.is_empty() {
        let pending = all_pending(host);
        // Every container with a folder, whole or damaged (its folder is listed, no record
        // read).
        let known: BTreeSet<String> =
            host.containers.ids().map_err(EngineError::runtime("list containers"))?.into_iter().collect();
        for id in attached.into_iter().filter(|id| !known.contains(id) && !pending.contains(id)) {
            if let Err(e) = host.networks.detach(&id) {
                errors.push(EngineError::net(format!("detach removed container {id}"))(e));
            }
        }
    }
    if let Err(e) = host.networks.sync_dns() {
        errors.push(EngineError::net("DNS process")(e));
    }
    EngineError::collect(errors)
}

/// Whether a damaged network or volume record is `project`'s: by the project label that its
/// copy keeps; by its name (`<project>_...`) only when no copy can be read (a record written
/// before copies were kept, or both damaged), since a name can also be chosen by hand.
fn belongs(d: &crate::state::DamagedRecord, project: &str) -> bool {
    match &d.labels {
        Some(l) => l.get(labels::PROJECT).is_some_and(|p| p == project),
        None => d.name.starts_with(&format!("{project}_")),
    }
}

/// Removes a container and then its network attachment; whether both went.
fn remove_container(host: &Host<'_>, id: &str, name: &str, errors: &mut Vec<EngineError>) -> bool {
    match host.containers.remove(id, true) {
        Ok(()) | Err(RuntimeError::NotFound(_)) => {}
        Err(e) => {
            errors.push(EngineError::runtime(format!("remove container {name}"))(e));
            return false;
        }
    }
    match host.networks.detach(id) {
        Ok(()) => true,
        Err(e) => {
            errors.push(EngineError::net(format!("detach container {name}"))(e));
            false
        }
    }
}

/// The notes in a `pending/` folder (container id, path); temp files of writes are not notes.
fn notes(dir: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut out: Vec<(String, std::path::PathBuf)> = entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| !name.starts_with('.') && !is_temp_name(name))
        .collect();
    out.sort();
    out
}

/// Ids of the containers that any project's command, or any running build (its step
/// containers), notes as being made.
fn all_pending(host: &Host<'_>) -> BTreeSet<String> {
    let Some(dirs) = host.projects else { return BTreeSet::new() };
    let mut out = crate::image::build::run::steps_being_made(dirs).into_iter().collect::<BTreeSet<_>>();
    if let Ok(projects) = fs::read_dir(dirs.root.join("projects")) {
        out.extend(projects.flatten().flat_map(|p| notes(&p.path().join("pending"))).map(|(id, _)| id));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::down::DownOptions;
    use crate::engine::fake::{Fake, load, quiet};
    use crate::engine::host::NetworkHost;
    use crate::runtime::DamagedContainer;

    const YAML: &str = "services:\n  a:\n    image: img\n  b:\n    image: img\n    depends_on: [a]\n";

    fn damaged(id: &str, project: Option<&str>) -> DamagedContainer {
        DamagedContainer {
            id: id.to_string(),
            name: project.map(|p| format!("{p}-x-1")),
            labels: project.map(|p| BTreeMap::from([(labels::PROJECT.to_string(), p.to_string())])),
            file: format!("/fake/{id}/spec.json").into(),
            reason: "EOF while parsing".into(),
        }
    }

    #[test]
    fn an_image_that_services_share_is_resolved_once() {
        let (_dir, loaded, graph) = load(YAML);
        let fake = Fake::with_images(&["img"]);
        let scope = crate::engine::plan::up_scope(&loaded, &graph, &crate::engine::UpOptions::default()).unwrap();
        assert_eq!(scope.images.len(), 2, "one per service: {:?}", scope.images);
        let observed = observe(&fake.host(), "p", &scope).unwrap();
        assert_eq!(observed.images.len(), 1);
        assert_eq!(fake.resolves(), 1);
    }

    #[test]
    fn damaged_containers_of_the_project_or_of_none_are_removed_then_detached() {
        let fake = Fake::with_images(&["img"]);
        fake.add_damaged(damaged("c1", Some("p")), &["p_default"]);
        fake.add_damaged(damaged("c2", Some("other")), &["other_default"]);
        fake.add_damaged(damaged("c3", None), &[]);
        reconcile(&fake.host(), "p", &quiet()).unwrap();
        let calls = fake.take_calls();
        assert_eq!(calls, ["remove p-x-1", "detach p-x-1", "remove c3", "detach c3", "dns stopped"]);
        // The other project's stays for its own commands.
        assert_eq!(fake.endpoints(), ["c2"]);
    }

    #[test]
    fn a_container_that_cannot_be_removed_keeps_its_attachment() {
        let fake = Fake::with_images(&["img"]);
        fake.add_damaged(damaged("c1", Some("p")), &["p_default"]);
        fake.fail_remove("p-x-1");
        assert!(reconcile(&fake.host(), "p", &quiet()).is_err());
        assert_eq!(fake.endpoints(), ["c1"]);
        assert!(!fake.take_calls().iter().any(|c| c.starts_with("detach")));
    }

    #[test]
    fn attachments_of_removed_containers_are_taken_away() {
        let (_dir, loaded, graph) = load(YAML);
        let fake = Fake::with_images(&["img"]);
        fake.up(&loaded, &graph, &crate::engine::UpOptions::default()).unwrap();
        let kept = fake.endpoints();
        assert_eq!(kept.len(), 2);
        // A `down` killed between removing a container and detaching it left this one.
        fake.add_endpoint("gone", &["p_default"]);
        fake.take_calls();
        reconcile(&fake.host(), "p", &quiet()).unwrap();
        assert_eq!(fake.take_calls(), ["detach gone", "dns runs"]);
        assert_eq!(fake.endpoints(), kept);
    }

    #[test]
    fn attachments_of_steps_that_a_running_build_is_making_are_left_alone() {
        use crate::image::build::run::{BuildOwner, StepNote};
        let tmp = tempfile::tempdir().unwrap();
        let dirs = crate::state::Dirs::new(tmp.path().join("root"), tmp.path().join("run"));
        let fake = Fake::with_images(&["img"]);
        let host =
            Host { containers: &fake, networks: &fake, volumes: &fake, images: &fake, projects: Some(&dirs) };
        // A running build has attached its step and not yet written the step's records.
        let owner = BuildOwner::claim_in(&dirs).unwrap();
        let note = StepNote::write(&dirs, &owner.token, "step1").unwrap();
        fake.add_endpoint("step1", &[owner.network().as_str()]);
        // A step that the build has finished with (no note) is a leftover as before.
        fake.add_endpoint("step0", &[owner.network().as_str()]);
        reconcile(&host, "p", &quiet()).unwrap();
        assert_eq!(fake.take_calls(), ["detach step0", "dns stopped"]);
        assert_eq!(fake.endpoints(), ["step1"]);
        drop(note);
        drop(owner);
        assert_eq!(std::fs::read_dir(dirs.run.join("builds")).unwrap().count(), 0);

        // A build killed (its lock free) with a step noted: the attachment is a leftover.
        let token = "0123456789";
        std::fs::write(dirs.run.join("builds").join(format!("{token}.lock")), "").unwrap();
        std::mem::forget(StepNote::write(&dirs, token, "step1").unwrap());
        reconcile(&host, "p", &quiet()).unwrap();
        assert_eq!(fake.take_calls(), ["detach step1", "dns stopped"]);
    }

    #[test]
    fn a_damaged_network_goes_with_its_containers_and_is_made_again() {
        let (_dir, loaded, graph) = load(YAML);
        let fake = Fake::with_images(&["img"]);
        fake.up(&loaded, &graph, &crate::engine::UpOptions::default()).unwrap();
        // Its record is damaged: the host lists it as damaged, not as a network.
        NetworkHost::remove(&fake, "p_default").unwrap();
        fake.add_damaged_record(true, "p_default");
        fake.add_damaged_record(true, "other_default");
        fake.take_calls();
        reconcile(&fake.host(), "p", &quiet()).unwrap();
        let calls = fake.take_calls();
        // Each container removed then detached (in the order of their ids), then the network.
        let mut pairs: Vec<&[String]> = calls[..4].chunks(2).collect();
        pairs.sort();
        assert_eq!(pairs, [["remove p-a-1", "detach p-a-1"], ["remove p-b-1", "detach p-b-1"]]);
        assert_eq!(calls[4..], ["network forget p_default", "dns stopped"]);
        fake.up(&loaded, &graph, &crate::engine::UpOptions::default()).unwrap();
        assert_eq!(fake.networks(), ["p_default"]);
        assert_eq!(fake.containers().len(), 2);
    }

    #[test]
    fn a_damaged_volume_of_the_project_gets_a_new_record() {
        let fake = Fake::with_images(&["img"]);
        fake.add_damaged_record(false, "p_data");
        fake.add_damaged_record(false, "other_data");
        reconcile(&fake.host(), "p", &quiet()).unwrap();
        assert_eq!(fake.take_calls(), ["volume repair p_data of p", "dns stopped"]);
    }

    #[test]
    fn damaged_records_belong_by_the_project_their_copy_tells_before_their_name() {
        let fake = Fake::with_images(&["img"]);
        // Named like another project's, but its copy says it is p's (a custom name).
        fake.add_damaged_record_of(false, "shared-data", Some(Some("p")));
        // Named like p's, but its copy tells another project, or none (made by hand).
        fake.add_damaged_record_of(false, "p_theirs", Some(Some("other")));
        fake.add_damaged_record_of(true, "p_manual", Some(None));
        // No copy to read: the name decides.
        fake.add_damaged_record_of(true, "p_old", None);
        reconcile(&fake.host(), "p", &quiet()).unwrap();
        assert_eq!(
            fake.take_calls(),
            ["network forget p_old", "volume repair shared-data of p", "dns stopped"]
        );
    }

    #[test]
    fn down_of_a_container_that_cannot_be_removed_does_not_detach_it() {
        let (_dir, loaded, graph) = load(YAML);
        let fake = Fake::with_images(&["img"]);
        fake.up(&loaded, &graph, &crate::engine::UpOptions::default()).unwrap();
        fake.fail_remove("p-a-1");
        fake.take_calls();
        assert!(fake.down(Some(&loaded), Some(&graph), &DownOptions::default()).is_err());
        let calls = fake.take_calls();
        assert!(calls.contains(&"detach p-b-1".to_string()), "{calls:?}");
        assert!(!calls.contains(&"detach p-a-1".to_string()), "{calls:?}");
        assert_eq!(fake.endpoints().len(), 1);
    }
}
