//! Planning: compare the project with what this host has (by config hash) and decide, per
//! resource, what `up`, `down`, `start` and `stop` do. Planning is pure: it reads what
//! [`observe`](super::observe::observe) found and touches nothing. The plan is data;
//! `up --dry-run` prints it and stops, `execute` carries it out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::compose::LoadedProject;
use crate::graph::{EdgeKind, GraphNode, ServiceGraph};
use crate::image::ResolvedImage;
use crate::labels;
use crate::netns::{IpamPool, NetworkSpec};
use crate::runtime::status::State;
use crate::volume::{VolumeSpec, project_volume_specs};

use super::error::{EngineError, Result};
use super::hash::config_hash;
use super::observe::{Observed, ProjectContainer, Scope, is_running};
use super::spec::{PeerRef, ServiceContext, attach_request, container_spec};

/// Which images `down --rmi` removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveImages {
    /// Images without a custom tag (those `build` names `<project>-<service>`).
    Local,
    /// Every image a service uses.
    All,
}

/// What `down` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct DownOptions {
    /// Also remove containers of services no longer in the file.
    pub remove_orphans: bool,
    /// Also remove named volumes declared in the file and anonymous volumes.
    pub volumes: bool,
    /// Also remove images.
    pub rmi: Option<RemoveImages>,
    /// Stop timeout (each container's grace time when absent).
    pub timeout: Option<Duration>,
    /// Only these services and their dependents (docker compose 2.x `down SERVICE...`):
    /// networks and volumes other containers still use stay. All when empty.
    pub services: Vec<String>,
}

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
    /// Recreate the named services' dependencies even when unchanged (`--always-recreate-deps`).
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
    /// Stop and remove (scale down, `down`).
    Remove {
        /// The container.
        existing: ProjectContainer,
    },
    /// Stop, keeping the container (`stop`).
    Stop {
        /// The container.
        existing: ProjectContainer,
    },
    /// Send a signal (`kill`).
    Kill {
        /// The container.
        existing: ProjectContainer,
        /// The signal's name or number.
        signal: String,
    },
    /// Freeze its processes (`pause`).
    Pause {
        /// The container.
        existing: ProjectContainer,
    },
    /// Thaw its processes (`unpause`).
    Unpause {
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
            | ContainerAction::Remove { existing: c }
            | ContainerAction::Stop { existing: c }
            | ContainerAction::Kill { existing: c, .. }
            | ContainerAction::Pause { existing: c }
            | ContainerAction::Unpause { existing: c } => &c.name,
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
            ContainerAction::Restart { existing } => format!("restart container {}", existing.name),
            ContainerAction::Keep { existing } => format!("keep container {} (up to date)", existing.name),
            ContainerAction::Remove { existing } => {
                format!("remove container {} (scale down)", existing.name)
            }
            ContainerAction::Stop { existing } => format!("stop container {}", existing.name),
            ContainerAction::Kill { existing, signal } => {
                format!("send {signal} to container {}", existing.name)
            }
            ContainerAction::Pause { existing } => format!("pause container {}", existing.name),
            ContainerAction::Unpause { existing } => format!("unpause container {}", existing.name),
        }
    }
}

/// One network of the project.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
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
    /// Its image (`None` in plans that create nothing).
    pub image: Option<ResolvedImage>,
    /// Its config hash.
    pub config_hash: String,
    /// What happens to each of its containers, by number.
    pub actions: Vec<ContainerAction>,
}

/// In which order the executor takes the services of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// A service's dependencies first (`up`, `start`): each waits for its dependencies in
    /// the plan, and for their `depends_on` conditions when the plan says so.
    DependenciesFirst,
    /// A service's dependents first (`down`, `stop`).
    DependentsFirst,
}

/// What a command will do.
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
    /// In which order services go.
    pub order: Order,
    /// Wait for `depends_on` conditions (`service_healthy`, `service_completed_successfully`)
    /// before starting a dependent.
    pub wait_conditions: bool,
    /// Keep going past a failed step and report every failure at the end (teardown), instead
    /// of failing the dependents of what failed.
    pub keep_going: bool,
    /// Networks to remove after the containers (real names).
    pub remove_networks: Vec<String>,
    /// Volumes to remove after the containers.
    pub remove_volumes: Vec<String>,
    /// Images to remove at the end (references).
    pub remove_images: Vec<String>,
    /// Remove the anonymous volumes of the containers the plan removes (`rm -v`).
    pub remove_anonymous_volumes: bool,
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
}

/// Container name of replica `number` of `service`.
pub fn container_name(loaded: &LoadedProject, service: &str, number: u32) -> String {
    match loaded.project.services.get(service).and_then(|s| s.container_name.clone()) {
        Some(name) => name,
        None => labels::container_name(&loaded.project.name, service, number, loaded.project.compatibility),
    }
}

/// The network spec of project network `key`, with compose's labels.
pub fn network_spec(loaded: &LoadedProject, key: &str) -> Option<NetworkSpec> {
    let project = &loaded.project;
    let net = project.networks.get(key)?;
    let name = net.name.clone().unwrap_or_else(|| labels::resource_name(&project.name, key));
    let mut labels = net.labels.clone();
    if !net.external {
        labels.insert(labels::PROJECT.into(), project.name.clone());
        labels.insert(labels::NETWORK.into(), key.to_string());
        labels.insert(labels::VERSION.into(), labels::VERSION_VALUE.into());
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
        None if svc.build.is_some() => {
            Some(labels::image_name(&loaded.project.name, service, loaded.project.compatibility))
        }
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

/// What [`plan`] needs observed: the project's networks and volumes (declared and
/// external) and the images of the services `up` works on.
pub fn up_scope(loaded: &LoadedProject, graph: &ServiceGraph, opts: &UpOptions) -> Result<Scope> {
    let project = &loaded.project;
    let mut scope = Scope {
        networks: project.networks.keys().filter_map(|k| network_spec(loaded, k)).map(|n| n.name).collect(),
        ..Scope::default()
    };
    for (key, vol) in &project.volumes {
        if vol.external {
            scope.volumes.push(vol.name.clone().unwrap_or_else(|| key.clone()));
        }
    }
    scope.volumes.extend(project_volume_specs(project).into_iter().map(|v| v.name));
    for name in selected_services(loaded, graph, opts)? {
        if let Some(r) = image_reference(loaded, &name) {
            scope.images.push(r);
        }
    }
    Ok(scope)
}

/// Makes `up`'s plan from what the host has (`observed`, read with [`up_scope`]); reads
/// nothing itself. Checks everything that can be checked without changing the host: images
/// present, external networks and volumes present, every container spec buildable.
pub fn plan(
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    observed: &Observed,
    opts: &UpOptions,
) -> Result<Plan> {
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
        let exists = observed.networks.contains(&spec.name);
        if spec.external && !exists {
            return Err(EngineError::ExternalMissing { kind: "network", name: spec.name });
        }
        networks.push(NetworkPlan { spec, exists });
    }
    for (key, vol) in &project.volumes {
        if vol.external {
            let name = vol.name.clone().unwrap_or_else(|| key.clone());
            if !observed.volumes.contains(&name) {
                return Err(EngineError::ExternalMissing { kind: "volume", name });
            }
        }
    }
    let volumes = project_volume_specs(project)
        .into_iter()
        .map(|spec| VolumePlan { exists: observed.volumes.contains(&spec.name), spec })
        .collect();

    let existing = &observed.containers;
    let mut services: Vec<ServicePlan> = Vec::new();
    let mut recreated: BTreeSet<String> = BTreeSet::new();
    for name in graph.start_order() {
        if !selected.contains(&name) {
            continue;
        }
        let reference = image_reference(loaded, &name).ok_or_else(|| EngineError::NoImage(name.clone()))?;
        let image = observed
            .images
            .get(&reference)
            .cloned()
            .ok_or_else(|| EngineError::MissingImage { service: name.clone(), image: reference })?;
        check_spec(loaded, &name, &image)?;
        let hash = config_hash(project, &name, &image.id);
        // docker compose's two strategies: the services asked for follow --force-recreate,
        // their dependencies --always-recreate-deps (either one alone).
        let force = if requested.contains(&name) { opts.force_recreate } else { opts.always_recreate_deps };
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
            let st = observed.status(&c.id);
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
                ContainerAction::Start { existing: (*c).clone(), reset: needs_reset(st.state) }
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
        services.push(ServicePlan { name, image: Some(image), config_hash: hash, actions });
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
        order: Order::DependenciesFirst,
        wait_conditions: true,
        keep_going: false,
        remove_networks: Vec::new(),
        remove_volumes: Vec::new(),
        remove_images: Vec::new(),
        remove_anonymous_volumes: false,
    })
}

/// A container not running under a shim: whether what is left must be cleared before it
/// starts again (its process outlived its shim, or its shim died).
fn needs_reset(state: State) -> bool {
    matches!(state, State::Dead | State::Running | State::Restarting)
}

/// A plan with no resources and no services, to fill in.
fn empty_plan(project: &str, order: Order) -> Plan {
    Plan {
        project: project.to_string(),
        networks: Vec::new(),
        volumes: Vec::new(),
        services: Vec::new(),
        orphans: Vec::new(),
        remove_orphans: false,
        options: UpOptions::default(),
        order,
        wait_conditions: false,
        keep_going: order == Order::DependentsFirst,
        remove_networks: Vec::new(),
        remove_volumes: Vec::new(),
        remove_images: Vec::new(),
        remove_anonymous_volumes: false,
    }
}

/// One service's part per service, in `graph`'s start order; services the graph does not
/// know (orphans, or every service without a compose file) first, by name.
fn by_service(
    graph: Option<&ServiceGraph>,
    containers: &[ProjectContainer],
    action: impl Fn(&ProjectContainer) -> Option<ContainerAction>,
) -> Vec<ServicePlan> {
    let order = graph.map(ServiceGraph::start_order).unwrap_or_default();
    let mut names: Vec<String> = containers.iter().map(|c| c.service.clone()).collect();
    names.sort();
    names.dedup();
    let (known, mut all): (Vec<String>, Vec<String>) = names.into_iter().partition(|n| order.contains(n));
    all.extend(order.into_iter().filter(|n| known.contains(n)));
    all.into_iter()
        .map(|name| {
            let actions = containers.iter().filter(|c| c.service == name).filter_map(&action).collect();
            ServicePlan { name, image: None, config_hash: String::new(), actions }
        })
        .filter(|sp| !sp.actions.is_empty())
        .collect()
}

/// What [`plan_down`] needs observed.
pub fn down_scope(loaded: Option<&LoadedProject>, opts: &DownOptions) -> Scope {
    let mut scope = Scope { labelled_networks: true, labelled_volumes: opts.volumes, ..Scope::default() };
    if let (Some(l), true) = (loaded, opts.volumes) {
        scope.volumes = project_volume_specs(&l.project).into_iter().map(|v| v.name).collect();
    }
    scope
}

/// `down`'s plan: every container of the project (orphans too with `remove_orphans`)
/// stopped and removed dependents first, then the networks the file declares (not external
/// ones) and any other labelled with the project, then with `-v` the volumes, with `--rmi`
/// the images. `loaded` is `None` when only the project's name is known.
pub fn plan_down(
    project: &str,
    loaded: Option<&LoadedProject>,
    graph: Option<&ServiceGraph>,
    observed: &Observed,
    opts: &DownOptions,
) -> Plan {
    let mut plan = empty_plan(project, Order::DependentsFirst);
    plan.options.timeout = opts.timeout;
    let known = |c: &ProjectContainer| loaded.is_none_or(|l| l.project.services.contains_key(&c.service));
    // `down SERVICE...`: those services and what depends on them (as docker compose's
    // WithRootNodesAndDown); names the file does not have are ignored here (the CLI refuses
    // them when there is a file: without one, a service may just have no containers left).
    let chosen: Option<BTreeSet<String>> = (!opts.services.is_empty()).then(|| {
        let named: Vec<String> = opts
            .services
            .iter()
            .filter(|s| loaded.is_none_or(|l| l.project.services.contains_key(*s)))
            .cloned()
            .collect();
        match graph.and_then(|g| g.dependents_closure(&named).ok()) {
            Some(all) => all.into_iter().collect(),
            None => named.into_iter().collect(),
        }
    });
    let in_scope = |c: &ProjectContainer| chosen.as_ref().is_none_or(|set| set.contains(&c.service));
    // Orphans removed are part of the services below; the rest are only warned about.
    if !opts.remove_orphans {
        plan.orphans = observed.containers.iter().filter(|c| !known(c)).cloned().collect();
    }
    let targets: Vec<ProjectContainer> = observed
        .containers
        .iter()
        .filter(|c| (known(c) && in_scope(c)) || (opts.remove_orphans && !known(c)))
        .cloned()
        .collect();
    plan.services = by_service(graph, &targets, |c| Some(ContainerAction::Remove { existing: c.clone() }));
    // With `down SERVICE...`, only what no container that stays needs.
    let (keep_networks, keep_volumes) = if chosen.is_some() {
        let staying: Vec<&ProjectContainer> =
            observed.containers.iter().filter(|c| !targets.iter().any(|t| t.id == c.id)).collect();
        match loaded {
            Some(l) => used_by(l, staying.iter().map(|c| c.service.as_str())),
            // Without the file, what the others use is unknown: keep everything while any stays.
            None if !staying.is_empty() => return plan,
            None => (BTreeSet::new(), BTreeSet::new()),
        }
    } else {
        (BTreeSet::new(), BTreeSet::new())
    };
    let mut networks: BTreeSet<String> = BTreeSet::new();
    if let Some(l) = loaded {
        for key in l.project.networks.keys() {
            if let Some(spec) = network_spec(l, key)
                && !spec.external
            {
                networks.insert(spec.name);
            }
        }
    }
    networks.extend(observed.labelled_networks.iter().cloned());
    plan.remove_networks = networks.into_iter().filter(|n| !keep_networks.contains(n)).collect();
    if opts.volumes {
        let mut volumes: BTreeSet<String> = observed.volumes.iter().cloned().collect();
        volumes.extend(observed.labelled_volumes.iter().cloned());
        plan.remove_volumes = volumes.into_iter().filter(|v| !keep_volumes.contains(v)).collect();
        plan.remove_anonymous_volumes = chosen.is_some();
    }
    if chosen.is_some() {
        return plan;
    }
    if let (Some(rmi), Some(l)) = (opts.rmi, loaded) {
        let mut refs: BTreeSet<String> = BTreeSet::new();
        for (name, svc) in &l.project.services {
            let custom = svc.image.is_some();
            if (rmi == RemoveImages::All || !custom)
                && let Some(r) = image_reference(l, name)
            {
                refs.insert(r);
            }
        }
        plan.remove_images = refs.into_iter().collect();
    }
    plan
}

/// The networks (real names) and named volumes that containers of `services` use.
fn used_by<'s>(
    loaded: &LoadedProject,
    services: impl Iterator<Item = &'s str>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let project = &loaded.project;
    let (mut networks, mut volumes) = (BTreeSet::new(), BTreeSet::new());
    for name in services {
        let Some(svc) = project.services.get(name) else { continue };
        let keys: Vec<String> = match (&svc.networks, &svc.network_mode) {
            (Some(n), _) => n.keys().cloned().collect(),
            (None, None) => vec!["default".to_string()],
            (None, Some(_)) => Vec::new(),
        };
        networks.extend(keys.iter().filter_map(|k| network_spec(loaded, k)).map(|s| s.name));
        for v in &svc.volumes {
            if v.r#type == "volume"
                && let Some(src) = &v.source
                && let Some(real) = crate::volume::volume_name(project, src)
            {
                volumes.insert(real);
            }
        }
    }
    (networks, volumes)
}

/// `restart`'s plan: every container of `services` (all when empty) and, unless `no_deps`,
/// of the services that depend on them with `restart: true`, stopped (with `pre_stop`
/// hooks) and started again (with `post_start` hooks) in dependency order, each waiting for
/// its dependencies' conditions, as docker compose's restart does. Stopped containers are
/// started. Keeps every container.
pub fn plan_restart(
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    observed: &Observed,
    services: &[String],
    no_deps: bool,
    timeout: Option<Duration>,
) -> Result<Plan> {
    check_known(loaded, services)?;
    let project = &loaded.project;
    let mut chosen: BTreeSet<String> = if services.is_empty() {
        project.services.keys().cloned().collect()
    } else {
        services.iter().cloned().collect()
    };
    if !no_deps && !services.is_empty() {
        // Dependents through `restart: true` edges, to a fixed point.
        loop {
            let more: Vec<String> = project
                .services
                .keys()
                .filter(|s| !chosen.contains(*s))
                .filter(|s| {
                    graph.direct_dependencies(s).into_iter().any(|(node, kind)| {
                        matches!(node, GraphNode::Service(ref d) if chosen.contains(d))
                            && matches!(kind, EdgeKind::DependsOn { restart: true, .. })
                    })
                })
                .cloned()
                .collect();
            if more.is_empty() {
                break;
            }
            chosen.extend(more);
        }
    }
    let mut plan = empty_plan(&project.name, Order::DependenciesFirst);
    plan.options.timeout = timeout;
    plan.wait_conditions = true;
    let targets: Vec<ProjectContainer> =
        observed.containers.iter().filter(|c| !c.oneoff && chosen.contains(&c.service)).cloned().collect();
    plan.services =
        by_service(Some(graph), &targets, |c| Some(ContainerAction::Restart { existing: c.clone() }));
    Ok(plan)
}

/// `rm`'s plan: the stopped containers of `services` (all when empty; one-offs are not
/// included, as with docker compose), or with `stop` the running ones too (stopped first,
/// dependents first); with `anonymous_volumes` their anonymous volumes go with them. An empty
/// plan means there is nothing to remove.
pub fn plan_rm(
    project: &str,
    loaded: Option<&LoadedProject>,
    graph: Option<&ServiceGraph>,
    observed: &Observed,
    services: &[String],
    stop: bool,
    anonymous_volumes: bool,
) -> Result<Plan> {
    if let Some(l) = loaded {
        check_known(l, services)?;
    }
    let mut plan = empty_plan(project, Order::DependentsFirst);
    plan.keep_going = false;
    plan.remove_anonymous_volumes = anonymous_volumes;
    let targets: Vec<ProjectContainer> = observed
        .containers
        .iter()
        .filter(|c| !c.oneoff && (services.is_empty() || services.contains(&c.service)))
        .filter(|c| loaded.is_none_or(|l| l.project.services.contains_key(&c.service)))
        .filter(|c| stop || !matches!(observed.status(&c.id).state, State::Running | State::Restarting))
        .cloned()
        .collect();
    plan.services = by_service(graph, &targets, |c| Some(ContainerAction::Remove { existing: c.clone() }));
    Ok(plan)
}

/// `kill`'s plan: `signal` to every running or restarting container of `services` (all when empty),
/// one-offs included; containers of services that left the file only with
/// `remove_orphans`, as docker compose does. An empty plan means nothing runs.
pub fn plan_kill(
    project: &str,
    loaded: Option<&LoadedProject>,
    observed: &Observed,
    services: &[String],
    signal: &str,
    remove_orphans: bool,
) -> Result<Plan> {
    if let Some(l) = loaded {
        check_known(l, services)?;
    }
    if let Err(e) = signal.parse::<crate::runtime::signal::SignalName>() {
        return Err(EngineError::Msg(e.to_string()));
    }
    let mut plan = empty_plan(project, Order::DependentsFirst);
    plan.keep_going = true;
    let targets: Vec<ProjectContainer> = observed
        .containers
        .iter()
        .filter(|c| services.is_empty() || services.contains(&c.service))
        .filter(|c| remove_orphans || loaded.is_none_or(|l| l.project.services.contains_key(&c.service)))
        // A restarting container too, as docker lists it as running: the kill may call its
        // restart off.
        .filter(|c| matches!(observed.status(&c.id).state, State::Running | State::Restarting))
        .cloned()
        .collect();
    // No ordering between services: a kill is immediate, as docker compose sends them all at
    // once.
    plan.services = by_service(None, &targets, |c| {
        Some(ContainerAction::Kill { existing: c.clone(), signal: signal.into() })
    });
    Ok(plan)
}

/// `pause`'s plan (`pause: true`) or `unpause`'s: every running container of `services` (all
/// when empty) that is not paused yet, or every paused one. An empty plan means nothing to do.
pub fn plan_pause(
    project: &str,
    loaded: Option<&LoadedProject>,
    observed: &Observed,
    services: &[String],
    pause: bool,
) -> Result<Plan> {
    if let Some(l) = loaded {
        check_known(l, services)?;
    }
    let mut plan = empty_plan(project, Order::DependentsFirst);
    plan.keep_going = true;
    let targets: Vec<ProjectContainer> = observed
        .containers
        .iter()
        .filter(|c| services.is_empty() || services.contains(&c.service))
        .filter(|c| {
            let st = observed.status(&c.id);
            st.state == State::Running && st.paused != pause
        })
        .cloned()
        .collect();
    plan.services = by_service(None, &targets, |c| {
        Some(if pause {
            ContainerAction::Pause { existing: c.clone() }
        } else {
            ContainerAction::Unpause { existing: c.clone() }
        })
    });
    Ok(plan)
}

fn check_known(loaded: &LoadedProject, services: &[String]) -> Result<()> {
    match services.iter().find(|s| !loaded.project.services.contains_key(*s)) {
        Some(s) => Err(EngineError::NoSuchService(s.clone())),
        None => Ok(()),
    }
}

/// `stop`'s plan: the project's containers (of `services`, or all) stopped, dependents first.
pub fn plan_stop(
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    observed: &Observed,
    services: &[String],
    timeout: Option<Duration>,
) -> Result<Plan> {
    check_known(loaded, services)?;
    let mut plan = empty_plan(&loaded.project.name, Order::DependentsFirst);
    plan.options.timeout = timeout;
    let targets: Vec<ProjectContainer> = observed
        .containers
        .iter()
        .filter(|c| services.is_empty() || services.contains(&c.service))
        .cloned()
        .collect();
    plan.services =
        by_service(Some(graph), &targets, |c| Some(ContainerAction::Stop { existing: c.clone() }));
    Ok(plan)
}

/// `start`'s plan: the project's existing containers (of `services`, or all) that are not
/// running started, dependencies first; creates nothing, and fails when there is nothing.
pub fn plan_start(
    loaded: &LoadedProject,
    graph: &ServiceGraph,
    observed: &Observed,
    services: &[String],
) -> Result<Plan> {
    check_known(loaded, services)?;
    let mut plan = empty_plan(&loaded.project.name, Order::DependenciesFirst);
    let targets: Vec<ProjectContainer> = observed
        .containers
        .iter()
        .filter(|c| !c.oneoff && (services.is_empty() || services.contains(&c.service)))
        .filter(|c| loaded.project.services.contains_key(&c.service))
        .cloned()
        .collect();
    if targets.is_empty() {
        return Err(EngineError::Msg(format!("project {}: no containers to start", loaded.project.name)));
    }
    plan.services = by_service(Some(graph), &targets, |c| {
        let st = observed.status(&c.id);
        (!is_running(&st))
            .then(|| ContainerAction::Start { existing: c.clone(), reset: needs_reset(st.state) })
    });
    Ok(plan)
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
        // docker compose --compatibility: v1's names; a fixed name stays.
        let mut compat = loaded.clone();
        compat.project.compatibility = true;
        assert_eq!(container_name(&compat, "web", 2), "p_web_2");
        assert_eq!(container_name(&compat, "fixed", 1), "the-one");
        let spec = network_spec(&loaded, "default").unwrap();
        assert_eq!(spec.name, "p_default");
        assert_eq!(spec.driver, "bridge");
        assert_eq!(spec.ipam[0].subnet.as_deref(), Some("10.9.0.0/24"));
        assert_eq!(spec.ipam[0].gateway.as_deref(), Some("10.9.0.254"));
        assert_eq!(spec.labels.get(labels::PROJECT).map(String::as_str), Some("p"));
        assert_eq!(spec.labels.get("k").map(String::as_str), Some("v"));
        let ext = network_spec(&loaded, "outside").unwrap();
        assert!(ext.external);
        assert_eq!(ext.name, "shared");
        assert!(!ext.labels.contains_key(labels::PROJECT));
        assert_eq!(image_reference(&loaded, "web").as_deref(), Some("x"));
    }

    #[test]
    fn wait_counts_needed_one_shots_as_completions() {
        use crate::engine::execute::{WaitFor, wait_targets};
        let (_d, loaded, graph) = load(YAML);
        let all: Vec<String> = loaded.project.services.keys().cloned().collect();
        let targets = wait_targets(&graph, &all);
        assert_eq!(targets["seed"], WaitFor::Completion);
        assert_eq!(targets["db"], WaitFor::Running);
        assert_eq!(targets["web"], WaitFor::Running);
    }

    /// Planning against an in-memory host (`engine::fake`): what `up` decides, by config
    /// hash and options, reading nothing but what was observed.
    mod against_fake {
        use super::*;
        use crate::engine::fake::{Fake, load, reload};
        use crate::runtime::status::ContainerStatus;

        const STACK: &str = r#"
services:
  db: {image: x}
  web:
    image: x
    depends_on: [db]
    volumes: ["data:/data"]
  side:
    image: x
    network_mode: "service:db"
  copy:
    image: x
    volumes_from: [db]
  restarter:
    image: x
    depends_on:
      db: {condition: service_started, restart: true}
  other: {image: x}
volumes:
  data: {}
"#;

        /// The same stack with db's configuration changed.
        fn changed() -> String {
            STACK.replace("db: {image: x}", "db: {image: x, environment: {A: \"2\"}}")
        }

        /// Each service's actions as short words, `name:word`.
        fn words(plan: &Plan) -> Vec<String> {
            let mut out = Vec::new();
            for s in &plan.services {
                for a in &s.actions {
                    let w = match a {
                        ContainerAction::Create { number, .. } => format!("create{number}"),
                        ContainerAction::Recreate { .. } => "recreate".into(),
                        ContainerAction::Start { reset: false, .. } => "start".into(),
                        ContainerAction::Start { reset: true, .. } => "reset-start".into(),
                        ContainerAction::Restart { .. } => "restart".into(),
                        ContainerAction::Keep { .. } => "keep".into(),
                        ContainerAction::Remove { existing } => format!("remove{}", existing.number),
                        ContainerAction::Stop { .. } => "stop".into(),
                        ContainerAction::Kill { signal, .. } => format!("kill-{signal}"),
                        ContainerAction::Pause { .. } => "pause".into(),
                        ContainerAction::Unpause { .. } => "unpause".into(),
                    };
                    out.push(format!("{}:{w}", s.name));
                }
            }
            out
        }

        fn up_all(fake: &Fake, loaded: &LoadedProject, graph: &ServiceGraph) {
            fake.up(loaded, graph, &UpOptions::default()).expect("up");
            fake.take_calls();
        }

        #[test]
        fn a_fresh_project_creates_everything_in_start_order() {
            let (_d, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            let plan = fake.plan_up(&loaded, &graph, &UpOptions::default()).unwrap();
            let w = words(&plan);
            assert_eq!(w.len(), 6);
            assert!(w.iter().all(|w| w.ends_with(":create1")), "{w:?}");
            let pos = |s: &str| w.iter().position(|x| x.starts_with(&format!("{s}:"))).unwrap();
            assert!(pos("db") < pos("web") && pos("db") < pos("side") && pos("db") < pos("copy"));
            assert!(plan.networks.iter().all(|n| !n.exists));
            assert!(plan.volumes.iter().any(|v| v.spec.name == "p_data" && !v.exists));
            assert!(plan.describe().contains(&"create network p_default".to_string()));
            // Planning changed nothing.
            assert!(fake.take_calls().is_empty());
            assert!(fake.containers().is_empty());
        }

        #[test]
        fn an_unchanged_project_keeps_everything() {
            let (_d, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            up_all(&fake, &loaded, &graph);
            let plan = fake.plan_up(&loaded, &graph, &UpOptions::default()).unwrap();
            assert!(words(&plan).iter().all(|w| w.ends_with(":keep")), "{:?}", words(&plan));
            assert!(plan.networks.iter().all(|n| n.exists) && plan.volumes.iter().all(|v| v.exists));
            assert!(plan.describe().iter().all(|l| l.contains("keep container")), "{:?}", plan.describe());
        }

        #[test]
        fn a_changed_service_drags_its_namespace_and_volume_sharers_and_restarts_restart_dependents() {
            let (dir, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            up_all(&fake, &loaded, &graph);
            let (loaded, graph) = reload(&dir, &changed());
            let w = words(&fake.plan_up(&loaded, &graph, &UpOptions::default()).unwrap());
            for expected in [
                "db:recreate",
                "side:recreate",
                "copy:recreate",
                "restarter:restart",
                "web:keep",
                "other:keep",
            ] {
                assert!(w.contains(&expected.to_string()), "{expected} not in {w:?}");
            }
        }

        #[test]
        fn no_recreate_keeps_changed_containers_and_no_start_restarts_nothing() {
            let (dir, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            up_all(&fake, &loaded, &graph);
            let (loaded, graph) = reload(&dir, &changed());
            let opts = UpOptions { no_recreate: true, ..UpOptions::default() };
            let w = words(&fake.plan_up(&loaded, &graph, &opts).unwrap());
            assert!(w.iter().all(|w| w.ends_with(":keep")), "{w:?}");
            let opts = UpOptions { no_start: true, ..UpOptions::default() };
            let w = words(&fake.plan_up(&loaded, &graph, &opts).unwrap());
            assert!(
                w.contains(&"db:recreate".to_string()) && w.contains(&"restarter:keep".to_string()),
                "{w:?}"
            );
        }

        #[test]
        fn force_recreate_touches_the_named_services_and_their_dependencies_only_when_asked() {
            let (_d, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            up_all(&fake, &loaded, &graph);
            let mut opts =
                UpOptions { services: vec!["web".into()], force_recreate: true, ..UpOptions::default() };
            let w = words(&fake.plan_up(&loaded, &graph, &opts).unwrap());
            assert_eq!(w, ["db:keep", "web:recreate"]);
            opts.always_recreate_deps = true;
            let w = words(&fake.plan_up(&loaded, &graph, &opts).unwrap());
            assert_eq!(w, ["db:recreate", "web:recreate"]);
            // --always-recreate-deps alone: the dependencies only (docker compose's
            // dependenciesRecreateStrategy does not need --force-recreate).
            opts.force_recreate = false;
            let w = words(&fake.plan_up(&loaded, &graph, &opts).unwrap());
            assert_eq!(w, ["db:recreate", "web:keep"]);
            // Everything when no service is named.
            let opts = UpOptions { force_recreate: true, ..UpOptions::default() };
            let w = words(&fake.plan_up(&loaded, &graph, &opts).unwrap());
            assert!(w.iter().all(|w| w.ends_with(":recreate")), "{w:?}");
        }

        #[test]
        fn no_deps_plans_only_the_named_services() {
            let (_d, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            let opts = UpOptions { services: vec!["web".into()], no_deps: true, ..UpOptions::default() };
            assert_eq!(words(&fake.plan_up(&loaded, &graph, &opts).unwrap()), ["web:create1"]);
            let opts = UpOptions { services: vec!["web".into()], ..UpOptions::default() };
            assert_eq!(words(&fake.plan_up(&loaded, &graph, &opts).unwrap()), ["db:create1", "web:create1"]);
        }

        #[test]
        fn scaling_adds_the_next_numbers_and_removes_the_highest() {
            let (_d, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            let only_other = |n: u32| UpOptions {
                services: vec!["other".into()],
                scale: BTreeMap::from([("other".to_string(), n)]),
                ..UpOptions::default()
            };
            fake.up(&loaded, &graph, &only_other(3)).unwrap();
            let names: Vec<String> = fake.containers().into_iter().map(|c| c.0).collect();
            assert_eq!(names, ["p-other-1", "p-other-2", "p-other-3"]);
            let w = words(&fake.plan_up(&loaded, &graph, &only_other(1)).unwrap());
            assert_eq!(w, ["other:remove3", "other:remove2", "other:keep"]);
            let w = words(&fake.plan_up(&loaded, &graph, &only_other(4)).unwrap());
            assert_eq!(w, ["other:keep", "other:keep", "other:keep", "other:create4"]);
            // A scale for a service the file does not have is refused.
            let bad = UpOptions { scale: BTreeMap::from([("nope".to_string(), 2)]), ..UpOptions::default() };
            assert!(
                matches!(fake.plan_up(&loaded, &graph, &bad), Err(EngineError::NoSuchService(s)) if s == "nope")
            );
        }

        #[test]
        fn containers_that_are_not_running_are_started_and_dead_ones_reset_first() {
            let (_d, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            up_all(&fake, &loaded, &graph);
            fake.set_status("p-web-1", crate::engine::fake::exited(0));
            fake.set_status(
                "p-other-1",
                ContainerStatus { state: State::Dead, ..ContainerStatus::default() },
            );
            let w = words(&fake.plan_up(&loaded, &graph, &UpOptions::default()).unwrap());
            assert!(
                w.contains(&"web:start".to_string()) && w.contains(&"other:reset-start".to_string()),
                "{w:?}"
            );
        }

        #[test]
        fn orphans_are_kept_unless_asked() {
            let (dir, loaded, graph) = load(STACK);
            let fake = Fake::with_images(&["x"]);
            up_all(&fake, &loaded, &graph);
            let (loaded, graph) = reload(&dir, &STACK.replace("  other: {image: x}\n", ""));
            let plan = fake.plan_up(&loaded, &graph, &UpOptions::default()).unwrap();
            assert_eq!(plan.orphans.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["p-other-1"]);
            assert!(plan.describe().iter().any(|l| l.contains("found orphan container p-other-1 (kept")));
            let opts = UpOptions { remove_orphans: true, ..UpOptions::default() };
            let plan = fake.plan_up(&loaded, &graph, &opts).unwrap();
            assert!(plan.describe().contains(&"remove orphan container p-other-1".to_string()));
        }

        #[test]
        fn missing_images_and_external_resources_fail_before_anything_changes() {
            let (_d, loaded, graph) = load(STACK);
            let fake = Fake::default();
            let e = fake.plan_up(&loaded, &graph, &UpOptions::default()).unwrap_err();
            assert!(matches!(e, EngineError::MissingImage { ref image, .. } if image == "x"), "{e}");
            let (_d, loaded, graph) = load(YAML);
            let fake = Fake::with_images(&["x"]);
            let e = fake.plan_up(&loaded, &graph, &UpOptions::default()).unwrap_err();
            assert!(
                matches!(e, EngineError::ExternalMissing { kind: "network", ref name } if name == "shared"),
                "{e}"
            );
            fake.add_network("shared", None);
            assert!(fake.plan_up(&loaded, &graph, &UpOptions::default()).is_ok());
            assert!(fake.take_calls().is_empty());
        }
    }
}
