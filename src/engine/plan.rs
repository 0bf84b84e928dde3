//! Planning: compare the project with what this host has (by config hash) and decide, per
//! resource, what `up` does. The plan is pure data; `up --dry-run` prints it and stops.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::compose::LoadedProject;
use crate::graph::{EdgeKind, GraphNode, ServiceGraph};
use crate::image::{ImageError, ImageStore, ResolvedImage};
use crate::netns::{IpamPool, NetError, NetworkSpec};
use crate::runtime::status::State;
use crate::volume::{VolumeSpec, project_volume_specs};

use super::Engine;
use super::error::{EngineError, Result};
use super::hash::config_hash;
use super::observe::{
    LABEL_NETWORK, LABEL_PROJECT, ProjectContainer, is_running, project_containers, status_of,
};
use super::spec::{PeerRef, ServiceContext, attach_request, container_spec};

/// What `up` was asked to do, beyond the project itself.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Only these services (and, unless `no_deps`, what they depend on); all when empty.
    pub services: Vec<String>,
    /// Don't bring up the named services' dependencies.
    pub no_deps: bool,
    /// Recreate containers even when their configuration is unchanged.
    pub force_recreate: bool,
    /// Never recreate existing containers.
    pub no_recreate: bool,
    /// Recreate dependencies too (with `force_recreate`).
    pub always_recreate_deps: bool,
    /// Replica counts that override the file's (`--scale svc=n`).
    pub scale: BTreeMap<String, u32>,
    /// Remove containers of services that are no longer in the file.
    pub remove_orphans: bool,
    /// Recreate anonymous volumes instead of reusing them (`-V`).
    pub renew_anon_volumes: bool,
    /// Create containers without starting them.
    pub no_start: bool,
    /// Stop timeout for containers that are recreated or removed.
    pub timeout: Option<Duration>,
}

/// What happens to one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerAction {
    /// Make a new container.
    Create {
        /// Its number.
        number: u32,
        /// Its name.
        name: String,
    },
    /// Replace an existing container by a new one with the same number and name.
    Recreate {
        /// The container replaced.
        old: ProjectContainer,
    },
    /// Start an existing container that is not running (`reset`: its process outlived its
    /// shim or its shim died, so what is left is cleared first).
    Start {
        /// The container.
        existing: ProjectContainer,
        /// Clear leftovers first.
        reset: bool,
    },
    /// Stop and start again because a dependency with `restart: true` was recreated.
    Restart {
        /// The container.
        existing: ProjectContainer,
    },
    /// Up to date and running: nothing to do.
    Keep {
        /// The container.
        existing: ProjectContainer,
    },
    /// Remove (scale down).
    Remove {
        /// The container.
        existing: ProjectContainer,
    },
}

impl ContainerAction {
    /// The container's name.
    pub fn name(&self) -> &str {
        match self {
            ContainerAction::Create { name, .. } => name,
            ContainerAction::Recreate { old: c }
            | ContainerAction::Start { existing: c, .. }
            | ContainerAction::Restart { existing: c }
            | ContainerAction::Keep { existing: c }
            | ContainerAction::Remove { existing: c } => &c.name,
        }
    }

    /// Whether a new container is made.
    pub fn makes_container(&self) -> bool {
        matches!(self, ContainerAction::Create { .. } | ContainerAction::Recreate { .. })
    }

    fn describe(&self) -> String {
        match self {
            ContainerAction::Create { name, .. } => format!("create container {name}"),
            ContainerAction::Recreate { old } => {
                format!("recreate container {} (configuration changed)", old.name)
            }
            ContainerAction::Start { existing, .. } => format!("start container {}", existing.name),
            ContainerAction::Restart { existing } => {
                format!("restart container {} (a dependency is recreated)", existing.name)
            }
            ContainerAction::Keep { existing } => format!("keep container {} (up to date)", existing.name),
            ContainerAction::Remove { existing } => {
                format!("remove container {} (scale down)", existing.name)
            }
        }
    }
}

/// One network of the project.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    /// Key in the file.
    pub key: String,
    /// What to create (its `name` is the real name).
    pub spec: NetworkSpec,
    /// Already on the host.
    pub exists: bool,
}

/// One volume of the project.
#[derive(Debug, Clone)]
pub struct VolumePlan {
    /// What to create.
    pub spec: VolumeSpec,
    /// Already on the host.
    pub exists: bool,
}

/// One service's part of the plan.
#[derive(Debug, Clone)]
pub struct ServicePlan {
    /// Service name.
    pub name: String,
    /// Its image.
    pub image: ResolvedImage,
    /// Its config hash.
    pub config_hash: String,
    /// What happens to each of its containers, by number.
    pub actions: Vec<ContainerAction>,
}

/// What `up` will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Project name.
    pub project: String,
    /// Networks, in file order.
    pub networks: Vec<NetworkPlan>,
    /// Volumes.
    pub volumes: Vec<VolumePlan>,
    /// Services in start order.
    pub services: Vec<ServicePlan>,
    /// Containers of services that left the file.
    pub orphans: Vec<ProjectContainer>,
    /// Remove the orphans (else only warn).
    pub remove_orphans: bool,
    /// The options it was made with.
    pub options: UpOptions,
}

impl Plan {
    /// The plan as lines, for `--dry-run`.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        for n in &self.networks {
            if n.spec.external {
                out.push(format!("use external network {}", n.spec.name));
            } else if !n.exists {
                out.push(format!("create network {}", n.spec.name));
            }
        }
        for v in &self.volumes {
            if !v.exists {
                out.push(format!("create volume {}", v.spec.name));
            }
        }
        for o in &self.orphans {
            if self.remove_orphans {
                out.push(format!("remove orphan container {}", o.name));
            } else {
                out.push(format!("found orphan container {} (kept; --remove-orphans removes it)", o.name));
            }
        }
        for s in &self.services {
            for a in &s.actions {
                let mut line = a.describe();
                if !self.options.no_start
                    && matches!(a, ContainerAction::Create { .. } | ContainerAction::Recreate { .. })
                {
                    line.push_str(" and start it");
                }
                out.push(format!("{}: {line}", s.name));
            }
        }
        out
    }

    /// The plan of one service.
    pub fn service(&self, name: &str) -> Option<&ServicePlan> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Container name of replica `number` of `service`.
pub fn container_name(loaded: &LoadedProject, service: &str, number: u32) -> String {
    match loaded.project.services.get(service).and_then(|s| s.container_name.clone()) {
        Some(name) => name,
        None => format!("{}-{service}-{number}", loaded.project.name),
    }
}

/// The network spec of project network `key`, with compose's labels.
pub fn network_spec(loaded: &LoadedProject, key: &str) -> Option<NetworkSpec> {
    let project = &loaded.project;
    let net = project.networks.get(key)?;
    let name = net.name.clone().unwrap_or_else(|| format!("{}_{key}", project.name));
    let mut labels = net.labels.clone();
    if !net.external {
        labels.insert(LABEL_PROJECT.into(), project.name.clone());
        labels.insert(LABEL_NETWORK.into(), key.to_string());
        labels.insert("com.docker.compose.version".into(), env!("CARGO_PKG_VERSION").into());
    }
    Some(NetworkSpec {
        name,
        driver: net.driver.clone().unwrap_or_else(|| "bridge".into()),
        internal: net.internal,
        enable_ipv6: net.enable_ipv6.unwrap_or(false),
        ipam: net
            .ipam
            .as_ref()
            .map(|i| {
                i.config
                    .iter()
                    .map(|p| IpamPool {
                        subnet: p.subnet.clone(),
                        ip_range: p.ip_range.clone(),
                        gateway: p.gateway.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        driver_opts: net.driver_opts.clone(),
        labels,
        external: net.external,
    })
}

/// The image a service runs: `image`, or the name `build` would give it.
pub fn image_reference(loaded: &LoadedProject, service: &str) -> Option<String> {
    let svc = loaded.project.services.get(service)?;
    match &svc.image {
        Some(i) => Some(i.clone()),
        None if svc.build.is_some() => Some(format!("{}-{service}", loaded.project.name)),
        None => None,
    }
}

/// The services `up` works on: the named ones and (unless `no_deps`) what they need.
pub fn selected_services(
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    opts: &UpOptions,
) -> Result<Vec<String>> {
    for s in &opts.services {
        if !loaded.project.services.contains_key(s) {
            return Err(EngineError::NoSuchService(s.clone()));
        }
    }
    if opts.services.is_empty() {
        return Ok(loaded.project.services.keys().cloned().collect());
    }
    if opts.no_deps {
        return Ok(opts.services.clone());
    }
    Ok(graph.dependencies_closure(&opts.services)?)
}

/// Makes the plan. Checks everything that can be checked without changing the host: images
/// present, external networks and volumes present, every container spec buildable.
pub fn plan(engine: &Engine, loaded: &LoadedProject, graph: &ServiceGraph, opts: &UpOptions) -> Result<Plan> {
    let project = &loaded.project;
    for s in opts.scale.keys() {
        if !project.services.contains_key(s) {
            return Err(EngineError::NoSuchService(s.clone()));
        }
    }
    let selected = selected_services(loaded, graph, opts)?;
    let requested: BTreeSet<String> = if opts.services.is_empty() {
        selected.iter().cloned().collect()
    } else {
        opts.services.iter().cloned().collect()
    };

    let mut networks = Vec::new();
    for key in project.networks.keys() {
        let Some(spec) = network_spec(loaded, key) else { continue };
        let exists = match engine.networks.inspect(&spec.name) {
            Ok(_) => true,
            Err(NetError::NotFound(_)) => false,
            Err(e) => return Err(EngineError::net(format!("network {}", spec.name))(e)),
        };
        if spec.external && !exists {
            return Err(EngineError::ExternalMissing { kind: "network", name: spec.name });
        }
        networks.push(NetworkPlan { key: key.clone(), spec, exists });
    }
    for (key, vol) in &project.volumes {
        if vol.external {
            let name = vol.name.clone().unwrap_or_else(|| key.clone());
            if engine.volumes.get(&name).map_err(EngineError::volume("volume"))?.is_none() {
                return Err(EngineError::ExternalMissing { kind: "volume", name });
            }
        }
    }
    let mut volumes = Vec::new();
    for spec in project_volume_specs(project) {
        let exists = engine.volumes.get(&spec.name).map_err(EngineError::volume("volume"))?.is_some();
        volumes.push(VolumePlan { spec, exists });
    }

    let existing = project_containers(&engine.runtime, &project.name)?;
    let store = ImageStore::open(engine.dirs())
        .map_err(|source| EngineError::Image { service: "-".into(), source })?;
    let mut services: Vec<ServicePlan> = Vec::new();
    let mut recreated: BTreeSet<String> = BTreeSet::new();
    for name in graph.start_order() {
        if !selected.contains(&name) {
            continue;
        }
        let reference = image_reference(loaded, &name).ok_or_else(|| EngineError::NoImage(name.clone()))?;
        let image = match store.resolve(&reference) {
            Ok(i) => i,
            Err(ImageError::NotFound(_)) => {
                return Err(EngineError::MissingImage { service: name.clone(), image: reference });
            }
            Err(source) => return Err(EngineError::Image { service: name.clone(), source }),
        };
        check_spec(loaded, &name, &image)?;
        let hash = config_hash(project, &name, &image.id);
        let force = opts.force_recreate && (requested.contains(&name) || opts.always_recreate_deps);
        // A service that shares a recreated service's namespaces or volumes must follow it.
        // Read from the service itself: the loader records these as depends_on too, so the
        // graph's edge between the two may be a DependsOn one.
        let follows = shared_services(&project.services[&name]).any(|d| recreated.contains(d));
        let restart_for_dep = graph.direct_dependencies(&name).into_iter().any(|(node, kind)| {
            matches!(node, GraphNode::Service(ref d) if recreated.contains(d))
                && matches!(kind, EdgeKind::DependsOn { restart: true, .. })
        });
        let want = opts.scale.get(&name).copied().unwrap_or_else(|| project.services[&name].replicas());
        if want > 1 && project.services[&name].container_name.is_some() {
            return Err(EngineError::Msg(format!(
                "service {name}: container_name is set, so the service cannot have {want} replicas"
            )));
        }
        let mut mine: Vec<&ProjectContainer> =
            existing.iter().filter(|c| c.service == name && !c.oneoff).collect();
        mine.sort_by_key(|c| c.number);
        let mut actions = Vec::new();
        // Scale down: the highest numbers go.
        while mine.len() > want as usize {
            if let Some(c) = mine.pop() {
                actions.push(ContainerAction::Remove { existing: c.clone() });
            }
        }
        for c in &mine {
            let st = status_of(&engine.runtime, &c.id);
            let changed = c.config_hash != hash;
            let action = if !opts.no_recreate && (changed || force || follows) {
                ContainerAction::Recreate { old: (*c).clone() }
            } else if is_running(&st) {
                if restart_for_dep && !opts.no_start {
                    ContainerAction::Restart { existing: (*c).clone() }
                } else {
                    ContainerAction::Keep { existing: (*c).clone() }
                }
            } else {
                let reset = st.state == State::Dead || matches!(st.state, State::Running | State::Restarting);
                ContainerAction::Start { existing: (*c).clone(), reset }
            };
            actions.push(action);
        }
        let used: BTreeSet<u32> = mine.iter().map(|c| c.number).collect();
        let mut number = 1;
        while actions.iter().filter(|a| !matches!(a, ContainerAction::Remove { .. })).count() < want as usize
        {
            while used.contains(&number) {
                number += 1;
            }
            actions.push(ContainerAction::Create { number, name: container_name(loaded, &name, number) });
            number += 1;
        }
        if actions.iter().any(ContainerAction::makes_container) {
            recreated.insert(name.clone());
        }
        services.push(ServicePlan { name, image, config_hash: hash, actions });
    }
    let orphans = existing
        .iter()
        .filter(|c| !c.oneoff && !project.services.contains_key(&c.service))
        .filter(|c| !loaded.disabled_services.contains(&c.service))
        .cloned()
        .collect();
    Ok(Plan {
        project: project.name.clone(),
        networks,
        volumes,
        services,
        orphans,
        remove_orphans: opts.remove_orphans,
        options: opts.clone(),
    })
}

/// Builds a service's container spec and network request with stand-in ids, so that a bad
/// configuration fails before anything on the host changes.
/// The services whose namespaces (`network_mode`, `ipc`, `pid`: `service:X`) or volumes
/// (`volumes_from`) a service shares: it must be recreated when one of them is.
fn shared_services(svc: &crate::compose::model::ServiceConfig) -> impl Iterator<Item = &str> {
    let namespaces = [&svc.network_mode, &svc.ipc, &svc.pid]
        .into_iter()
        .filter_map(|m| m.as_deref().and_then(|m| m.strip_prefix("service:")));
    let volumes = svc.volumes_from.iter().filter(|f| !f.starts_with("container:")).map(|f| {
        let f = f.strip_prefix("service:").unwrap_or(f);
        f.split(':').next().unwrap_or(f)
    });
    namespaces.chain(volumes)
}

fn check_spec(loaded: &LoadedProject, name: &str, image: &ResolvedImage) -> Result<()> {
    let placeholder = "0".repeat(64);
    let peer = |_: PeerRef<'_>| Some(placeholder.clone());
    let ctx = ServiceContext {
        project: &loaded.project,
        service_name: name,
        service: &loaded.project.services[name],
        image,
        container_id: &placeholder,
        container_name: &container_name(loaded, name, 1),
        replica: 1,
        config_hash: "",
        project_dir: &loaded.project_dir,
        config_files: &loaded.files,
        peer: &peer,
    };
    let built = container_spec(&ctx)?;
    attach_request(&ctx, &built.spec.hostname)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::compose::{ProjectOptions, load_project};

    fn load(yaml: &str) -> (tempfile::TempDir, LoadedProject, ServiceGraph) {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().expect("temp dir");
        std::fs::write(dir.path().join("compose.yaml"), yaml).expect("write");
        let mut opts = ProjectOptions::new(dir.path().to_path_buf(), HashMap::new());
        opts.project_name = Some("p".into());
        let loaded = load_project(&opts).expect("loads");
        let graph = ServiceGraph::from_project(&loaded.project).expect("graph");
        (dir, loaded, graph)
    }

    const YAML: &str = r#"
services:
  web:
    image: x
    depends_on:
      db: {condition: service_healthy}
      seed: {condition: service_completed_successfully}
  db: {image: x}
  seed: {image: x}
  fixed: {image: x, container_name: the-one}
  other: {image: x, networks: [default, outside]}
networks:
  default:
    labels: {k: v}
    ipam:
      config: [{subnet: 10.9.0.0/24, gateway: 10.9.0.254}]
  outside: {external: true, name: shared}
"#;

    #[test]
    fn selection_follows_dependencies_unless_no_deps() {
        let (_d, loaded, graph) = load(YAML);
        let mut opts = UpOptions { services: vec!["web".into()], ..UpOptions::default() };
        assert_eq!(selected_services(&loaded, &graph, &opts).unwrap(), ["db", "seed", "web"]);
        opts.no_deps = true;
        assert_eq!(selected_services(&loaded, &graph, &opts).unwrap(), ["web"]);
        opts.services = vec!["nope".into()];
        assert!(
            matches!(selected_services(&loaded, &graph, &opts), Err(EngineError::NoSuchService(s)) if s == "nope")
        );
        let all = selected_services(&loaded, &graph, &UpOptions::default()).unwrap();
        assert_eq!(all.len(), 5);
    }

    #[test]
    fn names_and_network_specs_follow_compose() {
        let (_d, loaded, _g) = load(YAML);
        assert_eq!(container_name(&loaded, "web", 2), "p-web-2");
        assert_eq!(container_name(&loaded, "fixed", 1), "the-one");
        let spec = network_spec(&loaded, "default").unwrap();
        assert_eq!(spec.name, "p_default");
        assert_eq!(spec.driver, "bridge");
        assert_eq!(spec.ipam[0].subnet.as_deref(), Some("10.9.0.0/24"));
        assert_eq!(spec.ipam[0].gateway.as_deref(), Some("10.9.0.254"));
        assert_eq!(spec.labels.get(LABEL_PROJECT).map(String::as_str), Some("p"));
        assert_eq!(spec.labels.get("k").map(String::as_str), Some("v"));
        let ext = network_spec(&loaded, "outside").unwrap();
        assert!(ext.external);
        assert_eq!(ext.name, "shared");
        assert!(!ext.labels.contains_key(LABEL_PROJECT));
        assert_eq!(image_reference(&loaded, "web").as_deref(), Some("x"));
    }

    #[test]
    fn wait_counts_needed_one_shots_as_completions() {
        use crate::engine::apply::{WaitFor, wait_targets};
        let (_d, loaded, graph) = load(YAML);
        let all: Vec<String> = loaded.project.services.keys().cloned().collect();
        let targets = wait_targets(&graph, &all);
        assert_eq!(targets["seed"], WaitFor::Completion);
        assert_eq!(targets["db"], WaitFor::Running);
        assert_eq!(targets["web"], WaitFor::Running);
    }
}
