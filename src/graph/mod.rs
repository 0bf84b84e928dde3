//! The dependency graph of a compose project: services, networks and volumes as a petgraph
//! DAG, with edges from what must exist first to what needs it.
//!
//! Edges come from `depends_on` (with its condition), `network_mode: service:x`,
//! `ipc`/`pid: service:x`, `volumes_from`, `links`, and the networks and named volumes a
//! service uses. The graph gives start order by levels (each level can start in parallel once
//! the earlier ones are up), stop order, and the closures that `up svc` and `stop svc` need.
//! It knows nothing about containers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::compose::model::Project;
use crate::compose::node::pointer_to_path;
use crate::compose::{LoadError, LoadedProject, ProjectOptions};

/// A vertex: something that must exist before what depends on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GraphNode {
    /// A project network, by key.
    Network(String),
    /// A project volume, by key.
    Volume(String),
    /// A service, by name.
    Service(String),
}

impl GraphNode {
    fn sort_key(&self) -> (u8, &str) {
        match self {
            GraphNode::Network(n) => (0, n),
            GraphNode::Volume(n) => (1, n),
            GraphNode::Service(n) => (2, n),
        }
    }

    fn dot_id(&self) -> String {
        match self {
            GraphNode::Network(n) => format!("\"network:{n}\""),
            GraphNode::Volume(n) => format!("\"volume:{n}\""),
            GraphNode::Service(n) => format!("\"{n}\""),
        }
    }
}

/// Why one vertex comes before another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeKind {
    /// `depends_on`.
    DependsOn {
        /// `service_started`, `service_healthy` or `service_completed_successfully`.
        condition: String,
        /// Whether the dependency must exist.
        required: bool,
        /// Restart the dependent when the dependency restarts.
        restart: bool,
    },
    /// `network_mode: service:x`.
    NetworkMode,
    /// `ipc: service:x`.
    Ipc,
    /// `pid: service:x`.
    Pid,
    /// `volumes_from: x`.
    VolumesFrom,
    /// `links: x`.
    Link,
    /// The service is attached to the network.
    Network,
    /// The service mounts the named volume.
    Volume,
}

impl EdgeKind {
    fn label(&self) -> String {
        match self {
            EdgeKind::DependsOn { condition, required, restart } => {
                let mut s = condition.clone();
                if !required {
                    s.push_str(", optional");
                }
                if *restart {
                    s.push_str(", restart");
                }
                s
            }
            EdgeKind::NetworkMode => "network_mode".into(),
            EdgeKind::Ipc => "ipc".into(),
            EdgeKind::Pid => "pid".into(),
            EdgeKind::VolumesFrom => "volumes_from".into(),
            EdgeKind::Link => "link".into(),
            EdgeKind::Network => "network".into(),
            EdgeKind::Volume => "volume".into(),
        }
    }
}

/// Why a graph cannot be built or asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    /// A service refers to a service that does not exist.
    #[error("service {service:?} {relation} undefined service {target:?}")]
    UndefinedService {
        /// The referring service.
        service: String,
        /// How it refers (`depends on`, `links to`, ...).
        relation: &'static str,
        /// The missing service.
        target: String,
    },
    /// Services depend on each other in a circle (first name repeated at the end).
    #[error("dependency cycle detected: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A name given by the caller is no service of the project.
    #[error("no such service: {0}")]
    UnknownService(String),
}

/// Loads a project as docker compose does (`compose::load_project`), then, unless
/// consistency checks are off, builds its dependency graph to find cycles and references the
/// loader's tree checks do not cover: the error points at the `depends_on` of the first
/// service concerned, in its file. The loader itself knows nothing of the graph; this is the
/// entry the commands and the library load through.
pub fn load_project(opts: &ProjectOptions) -> Result<LoadedProject, LoadError> {
    let loaded = crate::compose::load_project(opts)?;
    if opts.consistency {
        check(&loaded)?;
    }
    Ok(loaded)
}

/// The graph's verdict on a loaded project, located in its files.
fn check(loaded: &LoadedProject) -> Result<(), LoadError> {
    ServiceGraph::from_project(&loaded.project).map(drop).map_err(|e| {
        let first = match &e {
            GraphError::Cycle(names) => names.first().cloned(),
            GraphError::UndefinedService { service, .. } => Some(service.clone()),
            GraphError::UnknownService(_) => None,
        };
        match first {
            Some(service) => {
                let pointer = format!("/services/{service}/depends_on");
                let node = loaded.tree.locate(&pointer);
                LoadError::invalid(&node.mark, pointer_to_path(&loaded.tree, &pointer), e.to_string())
            }
            None => LoadError::Project(e.to_string()),
        }
    })
}

/// The project's dependency graph.
#[derive(Debug, Clone)]
pub struct ServiceGraph {
    graph: DiGraph<GraphNode, EdgeKind>,
    services: BTreeMap<String, NodeIndex>,
}

/// `service:x` → `x`.
fn service_ref(value: Option<&str>) -> Option<&str> {
    value.and_then(|v| v.strip_prefix("service:"))
}

/// The services whose container `service`'s containers are made from (`network_mode`, `ipc`,
/// `pid: service:X`, `volumes_from`): theirs must exist before one of these can be created.
/// The loader records these as `depends_on` too, so the graph's edges do not tell them apart.
pub fn made_from(service: &crate::compose::model::ServiceConfig) -> Vec<&str> {
    let mut out: Vec<&str> = [service.network_mode.as_deref(), service.ipc.as_deref(), service.pid.as_deref()]
        .into_iter()
        .filter_map(service_ref)
        .collect();
    for from in &service.volumes_from {
        if from.starts_with("container:") {
            continue;
        }
        let t = from.strip_prefix("service:").unwrap_or(from);
        out.push(t.split(':').next().unwrap_or(t));
    }
    out
}

impl ServiceGraph {
    /// Builds the graph of a loaded project. Undefined service references and cycles are
    /// errors; a `required: false` dependency on an absent service is dropped.
    pub fn from_project(project: &Project) -> Result<ServiceGraph, GraphError> {
        let mut graph = DiGraph::new();
        let networks: BTreeMap<&str, NodeIndex> = project
            .networks
            .keys()
            .map(|n| (n.as_str(), graph.add_node(GraphNode::Network(n.clone()))))
            .collect();
        let volumes: BTreeMap<&str, NodeIndex> = project
            .volumes
            .keys()
            .map(|n| (n.as_str(), graph.add_node(GraphNode::Volume(n.clone()))))
            .collect();
        let services: BTreeMap<String, NodeIndex> = project
            .services
            .keys()
            .map(|n| (n.clone(), graph.add_node(GraphNode::Service(n.clone()))))
            .collect();

        for (name, service) in &project.services {
            let me = services[name];
            let lookup = |target: &str, relation: &'static str| {
                services.get(target).copied().ok_or_else(|| GraphError::UndefinedService {
                    service: name.clone(),
                    relation,
                    target: target.to_string(),
                })
            };
            for (dep, spec) in &service.depends_on {
                let Some(&from) = services.get(dep) else {
                    if spec.required {
                        return Err(lookup(dep, "depends on").unwrap_err());
                    }
                    continue;
                };
                let kind = EdgeKind::DependsOn {
                    condition: spec.condition.clone(),
                    required: spec.required,
                    restart: spec.restart,
                };
                graph.add_edge(from, me, kind);
            }
            // Kinds below only add an edge where depends_on does not already order the pair
            // (the loader records network_mode, links and volumes_from as dependencies too).
            let add = |graph: &mut DiGraph<GraphNode, EdgeKind>, target: &str, kind, relation| {
                let from = lookup(target, relation)?;
                if !service.depends_on.contains_key(target) {
                    graph.add_edge(from, me, kind);
                }
                Ok::<_, GraphError>(())
            };
            if let Some(t) = service_ref(service.network_mode.as_deref()) {
                add(&mut graph, t, EdgeKind::NetworkMode, "uses network_mode of")?;
            }
            if let Some(t) = service_ref(service.ipc.as_deref()) {
                add(&mut graph, t, EdgeKind::Ipc, "shares ipc with")?;
            }
            if let Some(t) = service_ref(service.pid.as_deref()) {
                add(&mut graph, t, EdgeKind::Pid, "shares pid with")?;
            }
            for from in &service.volumes_from {
                if from.starts_with("container:") {
                    continue;
                }
                let t = from.strip_prefix("service:").unwrap_or(from);
                let t = t.split(':').next().unwrap_or(t);
                add(&mut graph, t, EdgeKind::VolumesFrom, "uses volumes_from of")?;
            }
            for link in &service.links {
                let t = link.split(':').next().unwrap_or(link);
                add(&mut graph, t, EdgeKind::Link, "links to")?;
            }
            for net in service.networks.iter().flat_map(|n| n.keys()) {
                if let Some(&n) = networks.get(net.as_str()) {
                    graph.add_edge(n, me, EdgeKind::Network);
                }
            }
            for volume in &service.volumes {
                let named = volume.r#type == "volume";
                if let Some(&v) = volume.source.as_deref().filter(|_| named).and_then(|s| volumes.get(s)) {
                    graph.add_edge(v, me, EdgeKind::Volume);
                }
            }
        }
        let g = ServiceGraph { graph, services };
        g.check_cycles()?;
        Ok(g)
    }

    /// Finds a dependency cycle and names it, starting at its alphabetically first service and
    /// following "depends on" (`a -> b -> a` when a depends on b).
    fn check_cycles(&self) -> Result<(), GraphError> {
        let mut cycles: Vec<Vec<String>> = Vec::new();
        for scc in petgraph::algo::tarjan_scc(&self.graph) {
            let self_loop = scc.len() == 1 && self.graph.contains_edge(scc[0], scc[0]);
            if scc.len() < 2 && !self_loop {
                continue;
            }
            let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
            let Some(start) = scc.iter().copied().min_by(|a, b| self.name(*a).cmp(self.name(*b))) else {
                continue;
            };
            cycles.push(self.cycle_path(start, &members));
        }
        cycles.sort();
        match cycles.into_iter().next() {
            Some(c) => Err(GraphError::Cycle(c)),
            None => Ok(()),
        }
    }

    /// A shortest path from `start` back to itself through its dependencies, within `members`.
    fn cycle_path(&self, start: NodeIndex, members: &BTreeSet<NodeIndex>) -> Vec<String> {
        let mut previous: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            let mut deps: Vec<NodeIndex> = self
                .graph
                .neighbors_directed(node, Direction::Incoming)
                .filter(|d| members.contains(d))
                .collect();
            deps.sort_by(|a, b| self.name(*a).cmp(self.name(*b)));
            deps.dedup();
            for dep in deps {
                if dep == start {
                    let mut path = vec![self.name(start).to_string()];
                    let mut cur = node;
                    let mut back = Vec::new();
                    while cur != start {
                        back.push(self.name(cur).to_string());
                        cur = previous[&cur];
                    }
                    back.reverse();
                    path.extend(back);
                    path.push(self.name(start).to_string());
                    return path;
                }
                if let std::collections::btree_map::Entry::Vacant(e) = previous.entry(dep) {
                    e.insert(node);
                    queue.push_back(dep);
                }
            }
        }
        vec![self.name(start).to_string()]
    }

    fn name(&self, n: NodeIndex) -> &str {
        match &self.graph[n] {
            GraphNode::Network(s) | GraphNode::Volume(s) | GraphNode::Service(s) => s,
        }
    }

    /// Start order as levels: everything in a level depends only on earlier levels. Within a
    /// level: networks, volumes, services, each sorted by name.
    pub fn levels(&self) -> Vec<Vec<GraphNode>> {
        let mut level: BTreeMap<NodeIndex, usize> = BTreeMap::new();
        // The graph is acyclic (checked at build), so a topological order exists.
        let order = petgraph::algo::toposort(&self.graph, None).unwrap_or_default();
        for n in order {
            let l = self
                .graph
                .neighbors_directed(n, Direction::Incoming)
                .map(|p| level.get(&p).copied().unwrap_or(0) + 1)
                .max()
                .unwrap_or(0);
            level.insert(n, l);
        }
        let depth = level.values().copied().max().map_or(0, |m| m + 1);
        let mut out: Vec<Vec<GraphNode>> = vec![Vec::new(); depth];
        for (n, l) in level {
            out[l].push(self.graph[n].clone());
        }
        for l in out.iter_mut() {
            l.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        }
        out
    }

    /// Services in start order.
    pub fn start_order(&self) -> Vec<String> {
        self.levels()
            .into_iter()
            .flatten()
            .filter_map(|n| match n {
                GraphNode::Service(s) => Some(s),
                _ => None,
            })
            .collect()
    }


    fn closure(&self, names: &[String], direction: Direction) -> Result<Vec<String>, GraphError> {
        let mut seen: BTreeSet<NodeIndex> = BTreeSet::new();
        let mut queue = VecDeque::new();
        for name in names {
            let n = *self.services.get(name).ok_or_else(|| GraphError::UnknownService(name.clone()))?;
            if seen.insert(n) {
                queue.push_back(n);
            }
        }
        while let Some(n) = queue.pop_front() {
            for next in self.graph.neighbors_directed(n, direction) {
                if matches!(self.graph[next], GraphNode::Service(_)) && seen.insert(next) {
                    queue.push_back(next);
                }
            }
        }
        let mut out: Vec<String> = seen.into_iter().map(|n| self.name(n).to_string()).collect();
        out.sort();
        Ok(out)
    }

    /// The named services and everything they transitively need (for `up svc`), sorted.
    pub fn dependencies_closure(&self, names: &[String]) -> Result<Vec<String>, GraphError> {
        self.closure(names, Direction::Incoming)
    }

    /// The named services and everything that transitively needs them (for `stop svc`), sorted.
    pub fn dependents_closure(&self, names: &[String]) -> Result<Vec<String>, GraphError> {
        self.closure(names, Direction::Outgoing)
    }

    /// What a service waits for directly: other services with the edge kind, sorted by name.
    pub fn direct_dependencies(&self, name: &str) -> Vec<(GraphNode, EdgeKind)> {
        let Some(&n) = self.services.get(name) else { return Vec::new() };
        let mut out: Vec<(GraphNode, EdgeKind)> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| {
                use petgraph::visit::EdgeRef;
                (self.graph[e.source()].clone(), e.weight().clone())
            })
            .collect();
        out.sort_by(|a, b| a.0.sort_key().cmp(&b.0.sort_key()));
        out
    }

    /// A readable listing by start level, each service with what it waits for.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, level) in self.levels().iter().enumerate() {
            let items: Vec<String> = level
                .iter()
                .map(|n| match n {
                    GraphNode::Network(s) => format!("network {s}"),
                    GraphNode::Volume(s) => format!("volume {s}"),
                    GraphNode::Service(s) => {
                        let waits: Vec<String> = self
                            .direct_dependencies(s)
                            .into_iter()
                            .filter_map(|(d, k)| match d {
                                GraphNode::Service(d) => Some(format!("{d}: {}", k.label())),
                                _ => None,
                            })
                            .collect();
                        if waits.is_empty() { s.clone() } else { format!("{s} (after {})", waits.join(", ")) }
                    }
                })
                .collect();
            let _ = writeln!(out, "level {i}: {}", items.join(", "));
        }
        out
    }

    /// Graphviz DOT: services as boxes, networks as ellipses, volumes as cylinders; edges from
    /// what comes first to what needs it, labelled with the condition or kind.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph \"compose\" {\n  rankdir=LR;\n");
        let mut nodes: Vec<&GraphNode> = self.graph.node_weights().collect();
        nodes.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
        for n in nodes {
            let (shape, label) = match n {
                GraphNode::Network(s) => ("ellipse", format!("network {s}")),
                GraphNode::Volume(s) => ("cylinder", format!("volume {s}")),
                GraphNode::Service(s) => ("box", s.clone()),
            };
            let _ = writeln!(out, "  {} [shape={shape}, label=\"{label}\"];", n.dot_id());
        }
        let mut edges: Vec<(String, String, String)> = self
            .graph
            .raw_edges()
            .iter()
            .map(|e| (self.graph[e.source()].dot_id(), self.graph[e.target()].dot_id(), e.weight.label()))
            .collect();
        edges.sort();
        for (from, to, label) in edges {
            let _ = writeln!(out, "  {from} -> {to} [label=\"{label}\"];");
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn graph(v: serde_json::Value) -> Result<ServiceGraph, GraphError> {
        ServiceGraph::from_project(&Project::from_json(v).expect("project"))
    }

    #[test]
    fn loading_names_the_file_line_of_a_cycle_unless_consistency_checks_are_off() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().expect("temp dir");
        let yaml =
            "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n";
        std::fs::write(dir.path().join("compose.yaml"), yaml).expect("write");
        let mut opts = ProjectOptions::new(dir.path().to_path_buf(), std::collections::HashMap::new());
        opts.project_name = Some("p".into());
        let e = load_project(&opts).unwrap_err().to_string();
        assert!(e.contains("compose.yaml:4:") && e.contains("services.a.depends_on"), "{e}");
        assert!(e.contains("dependency cycle detected: a -> b -> a"), "{e}");
        // The loader alone does not build the graph.
        assert!(crate::compose::load_project(&opts).is_ok());
        opts.consistency = false;
        assert!(load_project(&opts).is_ok());
    }

    fn dep(cond: &str) -> serde_json::Value {
        json!({"condition": cond, "required": true})
    }

    #[test]
    fn levels_follow_dependencies_and_resources() {
        let g = graph(json!({
            "services": {
                "web": {"depends_on": {"api": dep("service_started")}, "networks": {"default": null}},
                "api": {"depends_on": {"db": dep("service_healthy")}, "networks": {"default": null}},
                "db": {"volumes": [{"type": "volume", "source": "data", "target": "/d"}], "networks": {"default": null}}
            },
            "networks": {"default": {}}, "volumes": {"data": {}}
        }))
        .expect("builds");
        assert_eq!(g.start_order(), ["db", "api", "web"]);
        assert_eq!(
            g.to_text(),
            "level 0: network default, volume data\nlevel 1: db\nlevel 2: api (after db: service_healthy)\nlevel 3: web (after api: service_started)\n"
        );
    }

    #[test]
    fn each_edge_kind_orders_services() {
        let g = graph(json!({"services": {
            "a": {}, "b": {"network_mode": "service:a"}, "c": {"ipc": "service:b"}, "d": {"pid": "service:c"},
            "e": {"volumes_from": ["d:ro", "container:outside"]}, "f": {"links": ["e:alias"]}
        }}))
        .expect("builds");
        assert_eq!(g.start_order(), ["a", "b", "c", "d", "e", "f"]);
        let kinds: Vec<EdgeKind> = g.direct_dependencies("f").into_iter().map(|(_, k)| k).collect();
        assert_eq!(kinds, [EdgeKind::Link]);
    }

    #[test]
    fn made_from_names_the_services_whose_container_one_is_made_from() {
        let p = Project::from_json(json!({"services": {
            "a": {"depends_on": {"x": dep("service_started")}, "links": ["x"]},
            "b": {"network_mode": "service:a", "ipc": "service:x", "pid": "host"},
            "e": {"volumes_from": ["d:ro", "service:c", "container:outside"], "network_mode": "host"},
            "c": {}, "d": {}, "x": {}
        }}))
        .expect("project");
        assert!(made_from(&p.services["a"]).is_empty());
        assert_eq!(made_from(&p.services["b"]), ["a", "x"]);
        assert_eq!(made_from(&p.services["e"]), ["d", "c"]);
    }

    #[test]
    fn undefined_references_are_named() {
        let e = graph(json!({"services": {"web": {"depends_on": {"ghost": dep("service_started")}}}}))
            .unwrap_err();
        assert_eq!(e.to_string(), "service \"web\" depends on undefined service \"ghost\"");
        let e = graph(json!({"services": {"web": {"links": ["db"]}}})).unwrap_err();
        assert_eq!(e.to_string(), "service \"web\" links to undefined service \"db\"");
        let ok = graph(
            json!({"services": {"web": {"depends_on": {"ghost": {"condition": "service_started", "required": false}}}}}),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn cycles_are_named_in_order() {
        let e = graph(json!({"services": {"a": {"depends_on": {"b": dep("service_started")}}, "b": {"depends_on": {"a": dep("service_started")}}}})).unwrap_err();
        assert_eq!(e.to_string(), "dependency cycle detected: a -> b -> a");
        let e = graph(json!({"services": {
            "service1": {"depends_on": {"service2": dep("service_started")}},
            "service2": {"depends_on": {"service3": dep("service_started")}},
            "service3": {"depends_on": {"service1": dep("service_started")}}
        }}))
        .unwrap_err();
        assert_eq!(
            e,
            GraphError::Cycle(["service1", "service2", "service3", "service1"].map(String::from).to_vec())
        );
        let e = graph(json!({"services": {"a": {"depends_on": {"a": dep("service_started")}}}})).unwrap_err();
        assert_eq!(e.to_string(), "dependency cycle detected: a -> a");
    }

    #[test]
    fn closures() {
        let g = graph(json!({"services": {
            "web": {"depends_on": {"api": dep("service_started")}}, "api": {"depends_on": {"db": dep("service_started")}},
            "db": {}, "other": {}
        }}))
        .expect("builds");
        assert_eq!(g.dependencies_closure(&["api".into()]).unwrap(), ["api", "db"]);
        assert_eq!(g.dependents_closure(&["api".into()]).unwrap(), ["api", "web"]);
        assert_eq!(
            g.dependencies_closure(&["nope".into()]).unwrap_err().to_string(),
            "no such service: nope"
        );
    }

    #[test]
    fn dot_is_deterministic() {
        let v = json!({"services": {"b": {"depends_on": {"a": dep("service_healthy")}, "networks": {"n": null}}, "a": {}}, "networks": {"n": {}}});
        let one = graph(v.clone()).expect("builds").to_dot();
        assert_eq!(one, graph(v).expect("builds").to_dot());
        assert!(one.contains("\"a\" -> \"b\" [label=\"service_healthy\"];"), "{one}");
        assert!(one.contains("\"network:n\" [shape=ellipse"), "{one}");
    }

    #[test]
    fn two_hundred_services_build_quickly() {
        let mut services = serde_json::Map::new();
        for i in 0..200 {
            let deps =
                if i == 0 { json!({}) } else { json!({format!("s{}", i - 1): dep("service_started")}) };
            services.insert(format!("s{i}"), json!({"depends_on": deps}));
        }
        let project = Project::from_json(json!({"services": services})).expect("project");
        let start = std::time::Instant::now();
        let g = ServiceGraph::from_project(&project).expect("builds");
        assert_eq!(g.levels().len(), 200);
        assert!(start.elapsed() < std::time::Duration::from_millis(200));
    }
}
