//! What the project commands share: loading the project with its graph, the engine on the
//! chosen dirs, and the progress view.

use crate::compose::LoadedProject;
use crate::engine::Engine;
use crate::engine::progress::{Progress, ProgressMode};
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
    let exe = std::env::current_exe()
        .map_err(|e| CliError::msg(format!("cannot find berth's own executable: {e}")))?;
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
