//! `berth graph`: the project's dependency graph, as text by start levels or as Graphviz DOT.

use std::collections::BTreeSet;

use clap::{Args, ValueEnum};

use super::output::out;
use super::{CliError, CliResult, GlobalOptions};
use crate::compose::LoadedProject;
use crate::graph;

/// Output format of `graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Start order by levels, with what each service waits for
    Text,
    /// Graphviz DOT
    Dot,
}

/// Flags of `berth graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    format: GraphFormat,
    /// Only these services and what they depend on
    #[arg(value_name = "SERVICE")]
    services: Vec<String>,
}

/// Runs `berth graph`.
pub fn run(global: &GlobalOptions, args: &GraphArgs) -> CliResult<()> {
    let mut opts = global.project_options()?;
    opts.services = args.services.clone();
    let loaded = super::load(&opts)?;
    let mut project = loaded.project.clone();
    if !args.services.is_empty() {
        let keep = with_dependencies(&loaded, &args.services)?;
        project.services.retain(|name, _| keep.contains(name));
    }
    let g = graph::ServiceGraph::from_project(&project)?;
    let text = match args.format {
        GraphFormat::Text => g.to_text(),
        GraphFormat::Dot => g.to_dot(),
    };
    out!("{text}")
}

/// The named services and everything they transitively depend on.
pub(crate) fn with_dependencies(loaded: &LoadedProject, names: &[String]) -> CliResult<BTreeSet<String>> {
    for name in names {
        if !loaded.project.services.contains_key(name) {
            return Err(CliError::msg(format!("no such service: {name}")));
        }
    }
    let g = graph::ServiceGraph::from_project(&loaded.project)?;
    Ok(g.dependencies_closure(names)?.into_iter().collect())
}
