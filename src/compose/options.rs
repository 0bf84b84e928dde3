//! What a caller says about a project before it is loaded: files, name, directory, profiles,
//! env files, environment. The CLI fills this from flags and `COMPOSE_*` variables.

use std::collections::HashMap;
use std::path::PathBuf;

/// Inputs of [`crate::compose::load_project`].
#[derive(Debug, Clone, Default)]
pub struct ProjectOptions {
    /// `-f` files in order (`-` reads standard input). Empty: `COMPOSE_FILE`, then discovery.
    pub files: Vec<PathBuf>,
    /// `-p`: wins over `COMPOSE_PROJECT_NAME`, the top-level `name` and the folder name.
    pub project_name: Option<String>,
    /// `--project-directory`: base of relative paths; default the first file's folder.
    pub project_dir: Option<PathBuf>,
    /// `--profile`s (added to `COMPOSE_PROFILES`).
    pub profiles: Vec<String>,
    /// `--env-file`s; when empty, `COMPOSE_ENV_FILES`, then `.env` in the project dir.
    pub env_files: Vec<PathBuf>,
    /// The folder commands run in (discovery starts here; relative `-f` paths are from here).
    pub working_dir: PathBuf,
    /// The process environment (highest precedence for interpolation).
    pub environment: HashMap<String, String>,
    /// Services named on the command line: their profiles are enabled.
    pub services: Vec<String>,
    /// Check references between services, networks, volumes, secrets and configs.
    pub consistency: bool,
    /// Substitute `${VAR}` (off for `config --no-interpolate`).
    pub interpolate: bool,
    /// Resolve relative paths to absolute ones.
    pub resolve_paths: bool,
    /// Keep networks, volumes, secrets and configs no service uses (`--all-resources`).
    pub all_resources: bool,
    /// docker compose's `--compatibility`: names made with `_` (as `COMPOSE_COMPATIBILITY`,
    /// from the environment or `.env`, also asks).
    pub compatibility: bool,
    /// Normalize the model (compose-go's `WithNormalization`): the implicit `default` network,
    /// resource names, build defaults, implicit dependencies. Off only for `config`'s output.
    pub normalize: Normalization,
    /// A folder where digests of file trees found valid against the schema are kept, so that
    /// an unchanged file is not validated (the schema compiled) at every command; `None`: no
    /// cache (see `schema::validate_cached`).
    pub schema_cache: Option<PathBuf>,
}

/// Whether a project is normalized when loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Normalization {
    /// Always (every command that acts on the project needs the normalized model).
    #[default]
    Yes,
    /// Never (`config --no-normalize`).
    No,
    /// Unless in compatibility mode (`--compatibility` or `COMPOSE_COMPATIBILITY`): docker
    /// compose's `config` turns normalization off there, so that it prints the model as v1
    /// did.
    UnlessCompatibility,
}

impl ProjectOptions {
    /// Options for a project in `working_dir` with the given process environment and the
    /// defaults of `docker compose` (interpolation, consistency checks, absolute paths).
    pub fn new(working_dir: PathBuf, environment: HashMap<String, String>) -> ProjectOptions {
        ProjectOptions {
            working_dir,
            environment,
            consistency: true,
            interpolate: true,
            resolve_paths: true,
            normalize: Normalization::Yes,
            ..ProjectOptions::default()
        }
    }

    /// Options for the current process: its working directory and environment.
    pub fn from_process() -> std::io::Result<ProjectOptions> {
        Ok(ProjectOptions::new(std::env::current_dir()?, std::env::vars().collect()))
    }
}
