//! What the query commands pick of a project's containers (`ps`, `logs`, `exec`, `port`,
//! `top`, `stats`, and the services of a project known only by name), decided on the host
//! traits so that the choices are unit-tested on the in-memory fake: which services, which
//! replica, one-offs or not, which states. Also what they read of the engine's state
//! ([`Engine::size_rw`], [`Engine::image_names`], [`Engine::log_follower`],
//! [`Engine::event_follower`]), so that the command line never knows where it is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::netns::ports::PublishedPort;
use crate::runtime::ExecSpec;
use crate::runtime::status::{ContainerStatus, State};

use super::Engine;
use super::error::{EngineError, Result};
use super::host::{ContainerHost, Host};
use super::logs::{LogFollower, LogFormat};
use super::observe::{ProjectContainer, containers_of, is_running};

/// Which states a listing keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum States {
    /// Every state.
    #[default]
    Any,
    /// Running or restarting (`ps` without `-a`).
    Up,
    /// Running with a shim that watches it (`top`, `stats` without `-a`).
    Watched,
    /// These states by docker's words (`ps --status running --status exited`).
    Words(Vec<String>),
}

impl States {
    fn keeps(&self, st: &ContainerStatus) -> bool {
        match self {
            States::Any => true,
            States::Up => matches!(st.state, State::Running | State::Restarting),
            States::Watched => is_running(st),
            States::Words(words) => words.iter().any(|w| w == st.state_word()),
        }
    }
}

/// Which of a project's containers a listing keeps.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only these services (all when empty).
    pub services: Vec<String>,
    /// Services left out unless named in `services` (`logs` leaves out `attach: false`).
    pub quiet: Vec<String>,
    /// The compose file's services, when a listing keeps only theirs unless `services` names
    /// others (`logs` with a compose file leaves out orphans, as docker compose's does).
    pub defined: Option<Vec<String>>,
    /// One-off containers (`run`'s) too.
    pub oneoffs: bool,
    /// Only replica number `index` (every one when 0).
    pub index: u32,
    /// Which states.
    pub states: States,
}

/// A container with its status as read.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The container.
    pub container: ProjectContainer,
    /// Its status.
    pub status: ContainerStatus,
}

/// The containers of `project` that `sel` keeps, sorted by service then number, with their
/// status (read once each).
pub fn select(host: &dyn ContainerHost, project: &str, sel: &Selection) -> Result<Vec<Listed>> {
    let named = |s: &String| sel.services.is_empty() || sel.services.contains(s);
    let quiet = |s: &String| sel.services.is_empty() && sel.quiet.contains(s);
    let orphan = |s: &String| sel.services.is_empty() && sel.defined.as_ref().is_some_and(|d| !d.contains(s));
    let chosen: Vec<ProjectContainer> = containers_of(host, project)?
        .into_iter()
        .filter(|c| {
            !((c.oneoff && !sel.oneoffs)
                || !named(&c.service)
                || quiet(&c.service)
                || orphan(&c.service)
                || (sel.index != 0 && c.number != sel.index))
        })
        .collect();
    let statuses = crate::state::parallel_map(&chosen, |c| host.status(&c.id));
    Ok(chosen
        .into_iter()
        .zip(statuses)
        .filter(|(_, status)| sel.states.keeps(status))
        .map(|(container, status)| Listed { container, status })
        .collect())
}

/// The services that have containers in `project` (one-offs too): what a project known only
/// by name has, for "no such service".
pub fn services(host: &dyn ContainerHost, project: &str) -> Result<BTreeSet<String>> {
    Ok(containers_of(host, project)?.into_iter().map(|c| c.service).collect())
}

/// The container `index` of `service` (1-based; 0: the first by number), as docker compose
/// picks the target of `exec` and `port`: one-off containers only when the service has no
/// other.
pub fn pick(host: &dyn ContainerHost, project: &str, service: &str, index: u32) -> Result<ProjectContainer> {
    let mut mine: Vec<ProjectContainer> =
        containers_of(host, project)?.into_iter().filter(|c| c.service == service).collect();
    mine.sort_by_key(|c| (c.oneoff, c.number));
    let found =
        if index == 0 { mine.into_iter().next() } else { mine.into_iter().find(|c| c.number == index) };
    found.ok_or_else(|| EngineError::NotRunning { service: service.to_string(), index })
}

/// The host address container port `port`/`protocol` of `c` is published on.
pub fn published(host: &Host<'_>, c: &ProjectContainer, port: u16, protocol: &str) -> Result<PublishedPort> {
    let endpoint =
        host.networks.endpoint(&c.id).map_err(EngineError::net(format!("container {}", c.name)))?;
    endpoint
        .into_iter()
        .flat_map(|e| e.ports)
        .find(|p| p.container_port == port && p.protocol.as_str() == protocol)
        .ok_or_else(|| {
            EngineError::Msg(format!("no port {port}/{protocol} is published for container {}", c.name))
        })
}

/// Checks that container `c` runs, and runs the DNS process (one that was killed is started
/// again), before a command is run in `c`: it resolves names through it. Only this step of
/// `reconcile`: an exec changes no container, so takes no project lock.
pub fn ready_for_exec(host: &Host<'_>, c: &ProjectContainer) -> Result<()> {
    if !is_running(&host.containers.status(&c.id)) {
        return Err(EngineError::Msg(format!("container {} is not running", c.name)));
    }
    host.networks.sync_dns().map_err(EngineError::net("DNS process"))
}

/// Runs `exec` in container `c` attached to this process's stdio (`tty`: on this terminal),
/// once [`ready_for_exec`]; its exit code.
pub fn exec(host: &Host<'_>, c: &ProjectContainer, exec: &ExecSpec, tty: bool) -> Result<i32> {
    ready_for_exec(host, c)?;
    host.containers
        .exec_attached(&c.id, exec, tty)
        .map_err(EngineError::runtime(format!("container {}", c.name)))
}

/// What the query commands read of the engine's state.
impl Engine {
    /// The bytes of regular files in container `id`'s writable layer (`ps --size`'s
    /// `SizeRw`; 0 when it has none).
    pub fn size_rw(&self, id: &str) -> u64 {
        dir_size(&self.dirs.container(id).join("upper"))
    }

    /// Image ids to a name each has in the store (the first), to show what a container was
    /// made from when no compose file says it; empty when the store cannot be read.
    pub fn image_names(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Ok(list) = crate::image::ImageStore::open(&self.dirs).and_then(|s| s.list()) {
            for i in list.into_iter().filter(|i| i.repository != "<none>") {
                out.entry(i.id).or_insert_with(|| format!("{}:{}", i.repository, i.tag));
            }
        }
        out
    }

    /// The image store, for `images`' details of the images containers use.
    pub fn image_store(&self) -> std::result::Result<crate::image::ImageStore, crate::image::ImageError> {
        crate::image::ImageStore::open(&self.dirs)
    }

    /// A follower of containers' logs, printing in `format` (`logs`, an attached `up`).
    pub fn log_follower(&self, format: LogFormat) -> LogFollower {
        LogFollower::new(&self.dirs, format)
    }

    /// A follower of `project`'s event log (`events`); `from_start`: also the events the log
    /// already holds.
    pub fn event_follower(&self, project: &str, from_start: bool) -> crate::events::Follower {
        crate::events::Follower::new(&crate::events::log_path(&self.dirs, project), from_start)
    }
}

/// The bytes of the regular files under `dir` (symlinks not followed).
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::{Fake, exited, load};
    use crate::engine::plan::UpOptions;
    use crate::netns::ports::Protocol;

    const YAML: &str = "services:\n  web:\n    image: busybox\n    scale: 2\n  db:\n    image: busybox\n";

    fn fake_up() -> (tempfile::TempDir, Fake) {
        let (dir, loaded, graph) = load(YAML);
        let fake = Fake::with_images(&["busybox"]);
        fake.up(&loaded, &graph, &UpOptions::default()).expect("up");
        fake.set_status("p-web-2", exited(0));
        (dir, fake)
    }

    fn names(list: &[Listed]) -> Vec<&str> {
        list.iter().map(|l| l.container.name.as_str()).collect()
    }

    #[test]
    fn selection_by_state_service_replica_and_quiet_services() {
        let (_dir, fake) = fake_up();
        let host = fake.host();
        let all = select(host.containers, "p", &Selection::default()).unwrap();
        assert_eq!(names(&all), ["p-db-1", "p-web-1", "p-web-2"]);
        let up = Selection { states: States::Up, ..Selection::default() };
        assert_eq!(names(&select(host.containers, "p", &up).unwrap()), ["p-db-1", "p-web-1"]);
        let exited_only = Selection { states: States::Words(vec!["exited".into()]), ..Selection::default() };
        assert_eq!(names(&select(host.containers, "p", &exited_only).unwrap()), ["p-web-2"]);
        let second = Selection { services: vec!["web".into()], index: 2, ..Selection::default() };
        assert_eq!(names(&select(host.containers, "p", &second).unwrap()), ["p-web-2"]);
        // A quiet service is left out unless named.
        let quiet = Selection { quiet: vec!["web".into()], ..Selection::default() };
        assert_eq!(names(&select(host.containers, "p", &quiet).unwrap()), ["p-db-1"]);
        let named =
            Selection { quiet: vec!["web".into()], services: vec!["web".into()], ..Selection::default() };
        assert_eq!(names(&select(host.containers, "p", &named).unwrap()).len(), 2);
        // Containers of services the compose file no longer has (orphans) only when asked for.
        let defined = Selection { defined: Some(vec!["db".into()]), ..Selection::default() };
        assert_eq!(names(&select(host.containers, "p", &defined).unwrap()), ["p-db-1"]);
        let asked = Selection { services: vec!["web".into()], ..defined };
        assert_eq!(names(&select(host.containers, "p", &asked).unwrap()).len(), 2);
        assert!(select(host.containers, "other", &Selection::default()).unwrap().is_empty());
        assert_eq!(services(host.containers, "p").unwrap(), BTreeSet::from(["db".into(), "web".into()]));
    }

    #[test]
    fn pick_takes_the_replica_asked_for_and_names_what_is_missing() {
        let (_dir, fake) = fake_up();
        let host = fake.host();
        assert_eq!(pick(host.containers, "p", "web", 0).unwrap().name, "p-web-1");
        assert_eq!(pick(host.containers, "p", "web", 2).unwrap().name, "p-web-2");
        let e = pick(host.containers, "p", "web", 3).unwrap_err().to_string();
        assert_eq!(e, "service \"web\" is not running container #3");
        let e = pick(host.containers, "p", "cache", 0).unwrap_err().to_string();
        assert_eq!(e, "service \"cache\" is not running");
    }

    #[test]
    fn published_finds_the_port_and_protocol() {
        let (_dir, fake) = fake_up();
        let host = fake.host();
        let web = pick(host.containers, "p", "web", 1).unwrap();
        fake.publish(&web.id, 80, Protocol::Tcp, 8080);
        assert_eq!(published(&host, &web, 80, "tcp").unwrap().host_port, 8080);
        let e = published(&host, &web, 80, "udp").unwrap_err().to_string();
        assert_eq!(e, "no port 80/udp is published for container p-web-1");
        let db = pick(host.containers, "p", "db", 0).unwrap();
        assert!(published(&host, &db, 80, "tcp").is_err());
    }

    #[test]
    fn exec_runs_only_in_a_running_container_after_the_dns_process() {
        let (_dir, fake) = fake_up();
        let host = fake.host();
        fake.take_calls();
        let spec = ExecSpec { args: vec!["true".into()], ..ExecSpec::default() };
        let web1 = pick(host.containers, "p", "web", 1).unwrap();
        assert_eq!(exec(&host, &web1, &spec, false).unwrap(), 0);
        assert_eq!(fake.take_calls(), ["dns runs", "exec p-web-1 true"]);
        let web2 = pick(host.containers, "p", "web", 2).unwrap();
        let e = exec(&host, &web2, &spec, true).unwrap_err().to_string();
        assert_eq!(e, "container p-web-2 is not running");
        assert!(fake.take_calls().is_empty());
    }

    #[test]
    fn size_rw_counts_the_files_of_the_writable_layer_only() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dirs = crate::state::Dirs::new(dir.path().join("root"), dir.path().join("run"));
        let engine = Engine::new(&dirs, "berth");
        assert_eq!(engine.size_rw("c1"), 0, "no writable layer");
        let upper = dirs.container("c1").join("upper");
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("a"), [0u8; 10]).unwrap();
        std::fs::write(upper.join("etc").join("b"), [0u8; 5]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", upper.join("link")).unwrap();
        // The container's other files are not its writable layer.
        std::fs::write(dirs.container("c1").join("log"), [0u8; 100]).unwrap();
        assert_eq!(engine.size_rw("c1"), 15);
        assert!(engine.image_names().is_empty());
    }
}
