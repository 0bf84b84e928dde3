//! One-off containers (`run`): a service's container with the command line's changes
//! (command, entrypoint, user, working dir, environment, labels, volumes, ports,
//! capabilities, tty), labelled one-off and named `<project>-<service>-run-<12 hex>`, as
//! docker compose makes them. The service's restart policy does not apply; its network
//! aliases only with `use_aliases`; its ports only with `service_ports`.

use std::collections::BTreeMap;

use crate::compose::LoadedProject;
use crate::compose::model::{ServiceConfig, ServicePortConfig, ServiceVolumeConfig};
use crate::image::ResolvedImage;
use crate::labels;
use crate::netns::NetMode;
use crate::runtime::new_id;
use crate::volume::MountRequest;

use super::error::{EngineError, Result};
use super::execute::Executor;
use super::hash::config_hash;
use super::spec::{PeerRef, ServiceContext, attach_request, container_spec};

/// What `run` changes in the service, from its command line.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The service.
    pub service: String,
    /// The command (the service's when empty).
    pub command: Vec<String>,
    /// `--entrypoint`, split into words.
    pub entrypoint: Option<Vec<String>>,
    /// `-u`.
    pub user: Option<String>,
    /// `-w`.
    pub workdir: Option<String>,
    /// `-e`: `KEY=VALUE` set, a bare `KEY` taken from the environment when it has it.
    pub environment: Vec<(String, Option<String>)>,
    /// `-l`: labels added or replaced.
    pub labels: BTreeMap<String, String>,
    /// `-v`: mounts added.
    pub volumes: Vec<ServiceVolumeConfig>,
    /// `-p`: the ports published (the service's own only with `service_ports`).
    pub ports: Vec<ServicePortConfig>,
    /// `--service-ports`.
    pub service_ports: bool,
    /// `--use-aliases`.
    pub use_aliases: bool,
    /// `--name`.
    pub name: Option<String>,
    /// `--cap-add`.
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// A pseudo-terminal of the shim's (an attached run's is relayed to the caller's).
    pub tty: bool,
    /// Keep stdin open (an attached run reads the caller's).
    pub interactive: bool,
    /// A foreground run: the process is attached to the caller's stdio (see
    /// `ProcessSpec::attach_stdio`); its output is logged as well.
    pub attach: bool,
}

/// A one-off container made by [`create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOff {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The service as `run` changes it (docker compose's run options applied to the model).
pub fn oneoff_service(
    svc: &ServiceConfig,
    opts: &RunOptions,
    environment: &dyn Fn(&str) -> Option<String>,
) -> ServiceConfig {
    let mut s = svc.clone();
    if !opts.command.is_empty() {
        s.command = Some(opts.command.clone());
    }
    if let Some(e) = &opts.entrypoint {
        s.entrypoint = Some(e.clone());
        // docker: a new entrypoint drops the image's command; the service's stays unless
        // the command line gives one.
    }
    if opts.user.is_some() {
        s.user = opts.user.clone();
    }
    if opts.workdir.is_some() {
        s.working_dir = opts.workdir.clone();
    }
    for (k, v) in &opts.environment {
        match v {
            Some(v) => {
                s.environment.insert(k.clone(), Some(v.clone()));
            }
            None => {
                if let Some(v) = environment(k) {
                    s.environment.insert(k.clone(), Some(v));
                }
            }
        }
    }
    s.labels.extend(opts.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    s.volumes.extend(opts.volumes.iter().cloned());
    if !opts.service_ports {
        s.ports = opts.ports.clone();
    }
    s.cap_add.extend(opts.cap_add.iter().cloned());
    s.cap_drop.extend(opts.cap_drop.iter().cloned());
    s.tty = opts.tty;
    s.stdin_open = opts.interactive;
    // A one-off runs once: no restart policy, no fixed name of the service's.
    s.restart = None;
    if let Some(d) = s.deploy.as_mut() {
        d.restart_policy = None;
    }
    s.container_name = None;
    s
}

/// `<project>-<service>-run-<first 12 hex of slug>` (`_` in compatibility mode).
pub fn oneoff_name(project: &str, service: &str, slug: &str, compatibility: bool) -> String {
    let short: String = slug.chars().take(12).collect();
    let s = crate::labels::separator(compatibility);
    format!("{project}{s}{service}{s}run{s}{short}")
}

impl Executor<'_> {
    /// Waits until the `depends_on` conditions of `service` hold (its dependencies run,
    /// are healthy, or completed, as each asks): what a one-off waits for before it starts.
    pub fn dependencies_ready(&self, project: &str, service: &str) -> Result<()> {
        let Some(graph) = self.graph else { return Ok(()) };
        let mut errors = Vec::new();
        for (node, kind) in graph.direct_dependencies(service) {
            let crate::graph::GraphNode::Service(dep) = node else { continue };
            let (condition, required) = match &kind {
                crate::graph::EdgeKind::DependsOn { condition, required, .. } => {
                    (condition.clone(), *required)
                }
                _ => continue,
            };
            if let Err(reason) = self.condition(project, &dep, &condition)
                && required
            {
                errors.push(EngineError::Dependency {
                    service: service.to_string(),
                    dependency: dep.clone(),
                    reason,
                });
            }
        }
        EngineError::collect(errors)
    }

    /// Makes the one-off container of `opts.service` from `image` (not started).
    pub fn create_oneoff(&self, image: &ResolvedImage, opts: &RunOptions) -> Result<OneOff> {
        let loaded: &LoadedProject =
            self.loaded.ok_or_else(|| EngineError::Msg("run needs the project's compose file".into()))?;
        let project = &loaded.project;
        let svc = project
            .services
            .get(&opts.service)
            .ok_or_else(|| EngineError::NoSuchService(opts.service.clone()))?;
        let env = |k: &str| loaded.environment.get(k).cloned().or_else(|| std::env::var(k).ok());
        let service = oneoff_service(svc, opts, &env);
        let id = new_id().map_err(EngineError::runtime("create a one-off container"))?;
        let slug = new_id().map_err(EngineError::runtime("create a one-off container"))?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| oneoff_name(&project.name, &opts.service, &slug, project.compatibility));
        if self
            .host
            .containers
            .records()
            .map_err(EngineError::runtime("list containers"))?
            .iter()
            .any(|r| r.name == name)
        {
            return Err(EngineError::Msg(format!("a container named {name} exists already")));
        }
        // Anonymous volumes are named by replica: a one-off's must be its own.
        let replica = u32::from_str_radix(&slug[..8], 16).unwrap_or(1) | 0x8000_0000;
        let hash = config_hash(project, &opts.service, &image.id);
        let peer = |r: PeerRef<'_>| self.peer(&project.name, r);
        let ctx = ServiceContext {
            project,
            service_name: &opts.service,
            service: &service,
            image,
            container_id: &id,
            container_name: &name,
            replica: 1,
            config_hash: &hash,
            project_dir: &loaded.project_dir,
            config_files: &loaded.files,
            peer: &peer,
        };
        let built = container_spec(&ctx)?;
        for w in &built.warnings {
            self.progress.warn(w);
        }
        let mut spec = built.spec;
        spec.labels.insert(labels::ONEOFF.into(), "True".into());
        spec.labels.insert(labels::SLUG.into(), slug.clone());
        spec.process.attach_stdio = opts.attach;
        let peer_mounts = |r: PeerRef<'_>| self.host.containers.spec(&peer(r)?).ok().map(|s| s.mounts);
        let request = MountRequest {
            project,
            service_name: &opts.service,
            service: &service,
            container_id: &id,
            replica,
            image,
            peer_mounts: &peer_mounts,
            renew_anonymous: false,
            environment: &loaded.environment,
        };
        spec.mounts = self.host.volumes.mounts(&request).map_err(EngineError::volume(&opts.service))?;
        let mut attach_req = attach_request(&ctx, &spec.hostname)?;
        if !opts.use_aliases
            && let NetMode::Bridge(endpoints) = &mut attach_req.mode
        {
            for e in endpoints {
                e.aliases.clear();
            }
        }
        self.progress.event("Container", &name, "Creating", false);
        let made = self.attach_and_create(&mut spec, &attach_req, &name);
        if let Err(e) = made {
            let _ = self.host.containers.remove(&id, true);
            let _ = self.host.networks.detach(&id);
            self.progress.failed("Container", &name, "Error");
            return Err(e);
        }
        self.progress.event("Container", &name, "Created", true);
        Ok(OneOff { id, name })
    }

    /// Starts a one-off container and runs its service's `post_start` hooks.
    pub fn start_oneoff(&self, service: &str, oneoff: &OneOff) -> Result<()> {
        self.start_container(service, &oneoff.id, &oneoff.name)
    }

    /// Removes a one-off container (by force) with its network attachment and, with
    /// `anonymous_volumes`, the anonymous volumes it mounts (`run --rm`).
    pub fn remove_oneoff(&self, oneoff: &OneOff, anonymous_volumes: bool) -> Result<()> {
        let c = super::observe::ProjectContainer {
            id: oneoff.id.clone(),
            name: oneoff.name.clone(),
            service: String::new(),
            number: 0,
            config_hash: String::new(),
            oneoff: true,
            image_id: None,
            created: String::new(),
            labels: BTreeMap::new(),
        };
        self.remove_with_volumes(&c, anonymous_volumes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{Fake, load, quiet};
    use crate::engine::plan::UpOptions;
    use crate::runtime::status::State;

    const STACK: &str = r#"
services:
  db: {image: x}
  web:
    image: x
    restart: always
    container_name: fixed
    command: [serve]
    ports: ["8080:80"]
    environment: {A: "1"}
    depends_on: [db]
"#;

    #[test]
    fn the_service_is_changed_as_docker_compose_run_changes_it() {
        let (_d, loaded, _g) = load(STACK);
        let svc = &loaded.project.services["web"];
        let opts = RunOptions {
            service: "web".into(),
            command: vec!["sh".into(), "-c".into(), "exit 3".into()],
            user: Some("1000".into()),
            workdir: Some("/tmp".into()),
            environment: vec![
                ("B".into(), Some("2".into())),
                ("FROM_ENV".into(), None),
                ("MISSING".into(), None),
            ],
            labels: BTreeMap::from([("l".to_string(), "v".to_string())]),
            cap_add: vec!["NET_ADMIN".into()],
            ..RunOptions::default()
        };
        let env = |k: &str| (k == "FROM_ENV").then(|| "yes".to_string());
        let s = oneoff_service(svc, &opts, &env);
        assert_eq!(s.command.as_deref(), Some(&opts.command[..]));
        assert_eq!((s.user.as_deref(), s.working_dir.as_deref()), (Some("1000"), Some("/tmp")));
        assert_eq!(s.environment.get("A"), Some(&Some("1".to_string())));
        assert_eq!(s.environment.get("B"), Some(&Some("2".to_string())));
        assert_eq!(s.environment.get("FROM_ENV"), Some(&Some("yes".to_string())));
        assert!(!s.environment.contains_key("MISSING"));
        assert_eq!(s.labels.get("l").map(String::as_str), Some("v"));
        assert_eq!(s.cap_add, ["NET_ADMIN"]);
        // No restart policy, no fixed name, no ports unless asked.
        assert_eq!((s.restart.as_deref(), s.container_name.as_deref()), (None, None));
        assert!(s.ports.is_empty());
        let s = oneoff_service(svc, &RunOptions { service_ports: true, ..opts.clone() }, &env);
        assert_eq!(s.ports.len(), 1);
        // Without a command, the service's stays.
        let s = oneoff_service(svc, &RunOptions::default(), &env);
        assert_eq!(s.command, Some(vec!["serve".to_string()]));
        assert_eq!(oneoff_name("p", "web", "0123456789abcdef", false), "p-web-run-0123456789ab");
        assert_eq!(oneoff_name("p", "web", "0123456789abcdef", true), "p_web_run_0123456789ab");
    }

    #[test]
    fn a_one_off_is_labelled_named_and_kept_apart_from_the_service() {
        let (_d, loaded, graph) = load(STACK);
        let fake = Fake::with_images(&["x"]);
        fake.up(&loaded, &graph, &UpOptions { services: vec!["db".into()], ..UpOptions::default() }).unwrap();
        fake.take_calls();
        let progress = quiet();
        let x =
            Executor { host: fake.host(), loaded: Some(&loaded), graph: Some(&graph), progress: &progress };
        x.dependencies_ready("p", "web").unwrap();
        let image = crate::engine::fake::image("x");
        let opts =
            RunOptions { service: "web".into(), command: vec!["true".into()], ..RunOptions::default() };
        let one = x.create_oneoff(&image, &opts).unwrap();
        assert!(
            one.name.starts_with("p-web-run-") && one.name.len() == "p-web-run-".len() + 12,
            "{}",
            one.name
        );
        let records = crate::engine::host::ContainerHost::records(&fake).unwrap();
        let r = records.iter().find(|r| r.id == one.id).unwrap();
        assert_eq!(r.labels.get(labels::ONEOFF).map(String::as_str), Some("True"));
        assert_eq!(r.labels.get(labels::SERVICE).map(String::as_str), Some("web"));
        let spec = crate::engine::host::ContainerHost::spec(&fake, &one.id).unwrap();
        assert_eq!(spec.process.args, ["true"]);
        assert_eq!(spec.restart, crate::runtime::spec::RestartPolicy::default());
        // up does not count it as the service's container.
        let plan = fake.plan_up(&loaded, &graph, &UpOptions::default()).unwrap();
        assert!(
            plan.describe().iter().any(|l| l.contains("create container fixed")),
            "{:?}",
            plan.describe()
        );
        x.start_oneoff("web", &one).unwrap();
        assert!(fake.containers().contains(&(one.name.clone(), State::Running)));
        // A name in use is refused.
        let again = RunOptions { name: Some(one.name.clone()), ..opts };
        assert!(x.create_oneoff(&image, &again).unwrap_err().to_string().contains("exists already"));
        x.remove_oneoff(&one, true).unwrap();
        assert!(!fake.containers().iter().any(|(n, _)| *n == one.name));
        let calls = fake.take_calls();
        assert!(calls.contains(&format!("detach {}", one.name)), "{calls:?}");
    }
}
