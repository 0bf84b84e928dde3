//! What the project commands share: loading the project with its graph, the engine on the
//! chosen dirs, and the progress view; and, for the commands that can work from the
//! containers alone, the project found by name when no compose file loads ([`open_or_name`]).

use crate::compose::LoadedProject;
use crate::engine::Engine;
use crate::engine::discover::project_from_containers;
use crate::engine::execute::Executor;
use crate::engine::observe::{Observed, ProjectContainer, Scope, observe};
use crate::engine::progress::{Progress, ProgressMode};
use crate::engine::query;
use crate::graph::ServiceGraph;

use super::{CliError, CliResult, GlobalOptions};

/// A loaded project and what works on it.
pub struct ProjectCtx {
    /// The project.
    pub loaded: LoadedProject,
    /// Its dependency graph.
    pub graph: ServiceGraph,
    /// The engine.
    pub engine: Engine,
    /// Progress output.
    pub progress: Progress,
}

/// The engine on the dirs `global` names, re-executing this binary.
pub fn engine(global: &GlobalOptions) -> CliResult<Engine> {
    let exe =
        std::env::current_exe().map_err(|e| CliError::context("cannot find berth's own executable", e))?;
    Ok(Engine::new(&global.dirs(), exe))
}

/// The progress view `--progress` asks for.
pub fn progress(global: &GlobalOptions) -> Progress {
    use super::Progress as Flag;
    Progress::new(match global.progress {
        Flag::Auto => ProgressMode::auto(),
        Flag::Tty => ProgressMode::Tty,
        Flag::Plain => ProgressMode::Plain,
        Flag::Quiet => ProgressMode::Quiet,
        Flag::Json => ProgressMode::Json,
    })
}

/// Loads the project and makes its graph and engine.
pub fn open(global: &GlobalOptions) -> CliResult<ProjectCtx> {
    let loaded = super::load(&global.project_options()?)?;
    let graph = ServiceGraph::from_project(&loaded.project)?;
    Ok(ProjectCtx { loaded, graph, engine: engine(global)?, progress: progress(global) })
}

/// Checks that every name in `services` is a service of the project.
pub fn check_services(loaded: &LoadedProject, services: &[String]) -> CliResult<()> {
    for s in services {
        if !loaded.project.services.contains_key(s) {
            return Err(CliError::msg(format!("no such service: {s}")));
        }
    }
    Ok(())
}

/// The project a command that can work from its containers alone acts on: loaded from its
/// compose file when there is one, else known by name only (`-p NAME` or
/// `COMPOSE_PROJECT_NAME`; what it has is found by its containers' labels). Every command that
/// takes `-p NAME` without a file opens it with [`open_or_name`].
pub struct Target {
    /// The project's name.
    pub name: String,
    /// The loaded project, when its file could be read.
    pub loaded: Option<LoadedProject>,
    /// Its dependency graph, when its file could be read.
    pub graph: Option<ServiceGraph>,
    /// The engine.
    pub engine: Engine,
    /// Progress output.
    pub progress: Progress,
}

impl Target {
    /// Takes the project's lock, saying so when another berth command holds it.
    pub fn lock(&self) -> CliResult<crate::state::Lock> {
        let name = &self.name;
        Ok(self.engine.lock_project(name, || {
            self.progress.warn(&format!("waiting for another berth command on project {name} to finish"))
        })?)
    }

    /// The executor on the real host, with the project and graph when the file was read.
    pub fn executor(&self) -> Executor<'_> {
        Executor {
            host: self.engine.host(),
            loaded: self.loaded.as_ref(),
            graph: self.graph.as_ref(),
            progress: &self.progress,
        }
    }

    /// What the host has of the project's containers (no networks, volumes or images).
    pub fn observe(&self) -> CliResult<Observed> {
        Ok(observe(&self.engine.host(), &self.name, &Scope::default())?)
    }

    /// Checks that every name in `services` is a service of the project: of its file when
    /// it has one, else of its containers (docker compose's "no such service").
    pub fn check_services(&self, services: &[String]) -> CliResult<()> {
        match &self.loaded {
            Some(loaded) => check_services(loaded, services),
            None => {
                let have = query::services(self.engine.host().containers, &self.name)?;
                match services.iter().find(|s| !have.contains(*s)) {
                    Some(s) => Err(CliError::msg(format!("no such service: {s}"))),
                    None => Ok(()),
                }
            }
        }
    }

    /// The container `index` of `service` (1-based; 0: the first by number), as docker
    /// compose picks the target of `exec` and `port` (`engine::query::pick`).
    pub fn container(&self, service: &str, index: u32) -> CliResult<ProjectContainer> {
        self.check_services(std::slice::from_ref(&service.to_string()))?;
        Ok(query::pick(self.engine.host().containers, &self.name, service, index)?)
    }

    /// The loaded project, or the one its containers' labels describe (docker compose's
    /// `projectFromName`), with its graph: for `start` and `stop`, which order by it.
    pub fn project(&self) -> CliResult<(std::borrow::Cow<'_, LoadedProject>, ServiceGraph)> {
        let loaded = match &self.loaded {
            Some(l) => std::borrow::Cow::Borrowed(l),
            None => {
                let names = self.engine.image_names();
                let named = |id: &str| names.get(id).cloned();
                std::borrow::Cow::Owned(project_from_containers(&self.engine.runtime, &self.name, &named)?)
            }
        };
        let graph = ServiceGraph::from_project(&loaded.project)?;
        Ok((loaded, graph))
    }
}

/// docker compose's `projectOrName`: the project of the compose file; with `-p NAME` (or
/// `COMPOSE_PROJECT_NAME`) and no file that loads, the project of that name as found by its
/// containers' labels. `-p` with `-f` insists on the file.
pub fn open_or_name(global: &GlobalOptions) -> CliResult<Target> {
    let engine = engine(global)?;
    let progress = progress(global);
    let opts = global.project_options()?;
    match super::load(&opts) {
        Ok(loaded) => {
            let graph = ServiceGraph::from_project(&loaded.project)?;
            let name = loaded.project.name.clone();
            Ok(Target { name, loaded: Some(loaded), graph: Some(graph), engine, progress })
        }
        Err(e) => {
            let from_flag = global.project_name.clone().filter(|_| global.files.is_empty());
            let from_env = || std::env::var("COMPOSE_PROJECT_NAME").ok().filter(|n| !n.is_empty());
            match from_flag.or_else(from_env) {
                Some(name) => Ok(Target { name, loaded: None, graph: None, engine, progress }),
                None => Err(e),
            }
        }
    }
}
