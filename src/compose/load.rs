//! The loading pipeline: files to one canonical, merged, normalized tree, then to the typed
//! [`Project`].
//!
//! Per file: parse, take out merge tags, interpolate, validate against the schema,
//! canonicalise short syntax, make paths absolute, resolve `extends` and `include`. Then the
//! files are merged in order, profiles applied, the model normalized (names, default network,
//! `env_file` and `label_file` folded in) and checked for consistency, and finally decoded.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::environment::{self, Environment};
use super::error::LoadError;
use super::interpolate;
use super::merge::{self, MergeTags};
use super::model::Project;
use super::node::{Key, Mark, Node, Value, pointer_to_path};
use super::options::{Normalization, ProjectOptions};
use super::{canonical, input, paths, schema, yaml};

/// How many services an `extends` chain may go through. Resolving it recurses, so the length
/// must be bounded; real chains are two or three long.
pub const MAX_EXTENDS_DEPTH: usize = 64;
/// How deep `include`s may nest (cycles are reported as such before this).
pub const MAX_INCLUDE_DEPTH: usize = 64;

/// File names looked for, in order, in the working dir and its parents.
pub const DEFAULT_FILE_NAMES: [&str; 4] =
    ["compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"];
/// Override file names merged over a discovered file, first found wins.
pub const DEFAULT_OVERRIDE_NAMES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];

/// A loaded project with what it was loaded from.
#[derive(Debug, Clone)]
pub struct LoadedProject {
    /// The typed model.
    pub project: Project,
    /// The merged, normalized tree (marks point at the files), for locating later errors.
    pub tree: Node,
    /// The compose files, in merge order.
    pub files: Vec<PathBuf>,
    /// The project directory.
    pub project_dir: PathBuf,
    /// The interpolation environment, including `COMPOSE_PROJECT_NAME`.
    pub environment: Environment,
    /// Services left out because none of their profiles is active.
    pub disabled_services: Vec<String>,
}

/// One compose file's text and how it is named in messages.
struct Source {
    path: PathBuf,
    display: Arc<str>,
    text: String,
}

/// Loads a project and keeps the details (files, tree, environment).
pub fn load_project(opts: &ProjectOptions) -> Result<LoadedProject, LoadError> {
    // As docker compose: the `.env` of the directory known before the files are chosen is read
    // first, so it may set COMPOSE_FILE, COMPOSE_PROFILES, COMPOSE_PROJECT_NAME...; then the
    // project directory's `.env`, if another, adds what is not set yet.
    let first_dir = match &opts.project_dir {
        Some(dir) => paths::clean(&opts.working_dir.join(dir)),
        None => opts
            .files
            .iter()
            .find(|f| f.as_os_str() != "-")
            .and_then(|f| paths::clean(&opts.working_dir.join(f)).parent().map(Path::to_path_buf))
            .unwrap_or_else(|| opts.working_dir.clone()),
    };
    let first_files = env_files(opts, &first_dir)?;
    let mut env = environment::with_env_files(&opts.environment, &first_files)?;
    let sources = read_sources(opts, &env, &first_dir)?;
    let project_dir = match &opts.project_dir {
        Some(_) => first_dir.clone(),
        None => match sources.first() {
            Some(s) if s.path.as_os_str() != "-" => {
                s.path.parent().map(Path::to_path_buf).unwrap_or_else(|| opts.working_dir.clone())
            }
            _ => opts.working_dir.clone(),
        },
    };
    let project_files = env_files(opts, &project_dir)?;
    if project_files != first_files {
        env = environment::with_env_files(&env, &project_files)?;
    }

    // Parse everything first: the project name may come from a file's `name`, and it must be
    // known (as COMPOSE_PROJECT_NAME) before anything else is interpolated.
    let mut parsed = Vec::with_capacity(sources.len());
    for source in &sources {
        if source.text.trim().is_empty() {
            return Err(LoadError::Project(format!("{}: empty compose file", source.display)));
        }
        let mut tree = yaml::parse(&source.text, &source.display)?;
        let tags = merge::take_merge_tags(&mut tree);
        parsed.push((tree, tags));
    }
    let name = project_name(opts, &env, &parsed, &project_dir)?;
    env.insert("COMPOSE_PROJECT_NAME".into(), name.clone());

    let home = env.get("HOME").cloned();
    let ctx = FileContext::new(&env, opts, home.as_deref(), Vec::new());
    let mut merged: Option<Node> = None;
    for (tree, tags) in parsed {
        let tree = ctx.process(tree, &tags, &project_dir, &mut Vec::new())?;
        match merged.as_mut() {
            None => merged = Some(tree),
            Some(base) => merge::merge_files(base, tree, &tags),
        }
    }
    let mut tree = merged.unwrap_or_else(|| Node::map(&Mark::default()));
    if let Some(map) = tree.as_map_mut() {
        map.remove("version");
        let name_mark = map.get("name").map(|n| n.mark.clone()).unwrap_or_default();
        map.insert(Key { name: "name".into(), mark: name_mark.clone() }, Node::str(name.clone(), &name_mark));
    }

    let disabled = apply_profiles(&mut tree, opts, &env)?;
    // docker compose reads the variable as its `StringToBool`: y, or what Go's ParseBool takes.
    let truthy = |v: &str| matches!(v.trim().to_ascii_lowercase().as_str(), "y" | "1" | "t" | "true");
    let compatibility = opts.compatibility || env.get("COMPOSE_COMPATIBILITY").is_some_and(|v| truthy(v));
    let full = match opts.normalize {
        Normalization::Yes => true,
        Normalization::No => false,
        Normalization::UnlessCompatibility => !compatibility,
    };
    super::normalize::normalize(&mut tree, &name, &env, full)?;
    if opts.consistency {
        super::consistency::check(&tree)?;
    }
    let mut project = decode(&tree)?;
    if !opts.all_resources {
        project.without_unnecessary_resources();
    }
    project.compatibility = compatibility;
    Ok(LoadedProject {
        project,
        tree,
        files: sources.into_iter().map(|s| s.path).collect(),
        project_dir,
        environment: env,
        disabled_services: disabled,
    })
}

/// Decodes the normalized tree; a value the model refuses is reported where it is written.
fn decode(tree: &Node) -> Result<Project, LoadError> {
    let json = tree.to_json();
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(json, &mut track);
    serde::Deserialize::deserialize(de).map_err(|e: serde_json::Error| {
        let pointer: String = track
            .path()
            .iter()
            .map(|seg| match seg {
                serde_path_to_error::Segment::Seq { index } => format!("/{index}"),
                serde_path_to_error::Segment::Map { key } => {
                    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
                }
                serde_path_to_error::Segment::Enum { variant } => format!("/{variant}"),
                serde_path_to_error::Segment::Unknown => String::new(),
            })
            .collect();
        let node = tree.locate(&pointer);
        LoadError::invalid(&node.mark, pointer_to_path(tree, &pointer), e.to_string())
    })
}

/// Shared state of loading one project's files.
struct FileContext<'a> {
    env: &'a Environment,
    opts: &'a ProjectOptions,
    home: Option<&'a str>,
    /// The files (by [`FileContext::identity`]) whose `include` led here, outermost first, to
    /// report include cycles.
    includes: Vec<PathBuf>,
    /// Where each service is in the `services` of a file (by the file's name in marks), so
    /// that resolving the `extends` of thousands of services does not scan them all each time.
    /// A hint only: [`FileContext::service`] checks what it finds.
    positions: RefCell<HashMap<Arc<str>, HashMap<String, usize>>>,
}

impl<'a> FileContext<'a> {
    fn new(
        env: &'a Environment,
        opts: &'a ProjectOptions,
        home: Option<&'a str>,
        includes: Vec<PathBuf>,
    ) -> FileContext<'a> {
        FileContext { env, opts, home, includes, positions: RefCell::default() }
    }

    /// What tells files apart in cycle checks: the real path (symlinks followed) when there is
    /// one, else the clean absolute path. `shown` is a path as marks show it.
    fn identity(&self, shown: &Path) -> PathBuf {
        let path = self.opts.working_dir.join(shown);
        std::fs::canonicalize(&path).unwrap_or_else(|_| paths::clean(&path))
    }

    /// A file identity as messages show it.
    fn shown(&self, identity: &Path) -> String {
        display_name(identity, &self.opts.working_dir).to_string()
    }
    /// Interpolation, validation, canonical form, absolute paths, `extends` and `include` for
    /// one file whose relative paths are relative to `base`; `tags` are the file's `!reset` and
    /// `!override` tags. `chain` holds the `extends` being resolved, to report cycles.
    fn process(
        &self,
        mut tree: Node,
        tags: &MergeTags,
        base: &Path,
        chain: &mut Vec<String>,
    ) -> Result<Node, LoadError> {
        self.prepare(&mut tree, base)?;
        self.apply_extends(&mut tree, tags, chain)?;
        self.apply_include(&mut tree)?;
        Ok(tree)
    }

    /// The steps every file goes through before it is combined with anything.
    fn prepare(&self, tree: &mut Node, base: &Path) -> Result<(), LoadError> {
        if !matches!(tree.value, Value::Map(_)) {
            return Err(LoadError::invalid(
                &tree.mark,
                "",
                "a compose file must be a mapping at the top level",
            ));
        }
        if self.opts.interpolate {
            let env = self.env;
            let lookup = move |name: &str| env.get(name).cloned();
            interpolate::interpolate_tree(tree, &lookup)?;
        }
        schema::validate_cached(tree, self.opts.schema_cache.as_deref())?;
        canonical::canonicalize(tree)?;
        if self.opts.resolve_paths {
            paths::resolve(tree, base, self.home);
        }
        Ok(())
    }

    /// The service `name` of `tree`, found in constant time in large files.
    fn service<'t>(&self, tree: &'t Node, name: &str) -> Option<&'t Node> {
        let services = tree.get("services").and_then(Node::as_map)?;
        if services.len() <= 32 {
            return services.get(name);
        }
        let at = |positions: &HashMap<String, usize>| {
            positions.get(name).and_then(|&i| services.entries.get(i)).filter(|(k, _)| k.name == name)
        };
        if let Some((_, node)) = self.positions.borrow().get(&tree.mark.file).and_then(at) {
            return Some(node);
        }
        // Not indexed, or indexed from another version of the file's tree: index this one.
        let positions: HashMap<String, usize> =
            services.entries.iter().enumerate().map(|(i, (k, _))| (k.name.clone(), i)).collect();
        let found = at(&positions).map(|(_, node)| node);
        self.positions.borrow_mut().insert(tree.mark.file.clone(), positions);
        found
    }

    /// Loads a file by path (for `extends.file`), with its merge tags: they apply to the
    /// services of that file that extend others.
    fn read_tree(&self, path: &Path, base: &Path) -> Result<(Node, MergeTags), LoadError> {
        let text = read_file(path)?;
        let mut tree = yaml::parse(&text, &display_name(path, &self.opts.working_dir))?;
        let tags = merge::take_merge_tags(&mut tree);
        self.prepare(&mut tree, base)?;
        Ok((tree, tags))
    }

    /// Replaces every service that `extends` another with the merged result (spec
    /// `05-services.md#extends`): the base first, the extending service over it.
    fn apply_extends(
        &self,
        tree: &mut Node,
        tags: &MergeTags,
        chain: &mut Vec<String>,
    ) -> Result<(), LoadError> {
        let names: Vec<String> = match tree.get("services").and_then(Node::as_map) {
            Some(services) => services
                .iter()
                .filter(|(_, s)| s.get("extends").is_some())
                .map(|(n, _)| n.to_string())
                .collect(),
            None => return Ok(()),
        };
        let mut resolved = Vec::with_capacity(names.len());
        for name in &names {
            resolved.push(self.resolve_extends(tree, tags, name, chain)?);
        }
        if let Some(services) =
            tree.as_map_mut().and_then(|m| m.get_mut("services")).and_then(Node::as_map_mut)
        {
            let mut resolved: HashMap<&str, Node> = names.iter().map(String::as_str).zip(resolved).collect();
            for (key, slot) in services.entries.iter_mut() {
                if let Some(service) = resolved.remove(key.name.as_str()) {
                    *slot = service;
                }
            }
        }
        Ok(())
    }

    /// The service `name` of `tree` (whose merge tags are `tags`) with its `extends` chain
    /// applied.
    fn resolve_extends(
        &self,
        tree: &Node,
        tags: &MergeTags,
        name: &str,
        chain: &mut Vec<String>,
    ) -> Result<Node, LoadError> {
        let service = self
            .service(tree, name)
            .ok_or_else(|| LoadError::invalid(&tree.mark, "", format!("service {name:?} not found")))?;
        let Some(extends) = service.get("extends") else { return Ok(service.clone()) };
        let file = extends.get("file").and_then(Node::as_str);
        let target = extends.get("service").and_then(Node::as_str).unwrap_or_default().to_string();
        // Services are told apart by the identity of their file, so that `file:` naming the
        // same file (by any path) is seen to be the same place.
        let here_file = self.identity(Path::new(tree.mark.file.as_ref()));
        let there_file = match file {
            Some(f) => self.identity(Path::new(f)),
            None => here_file.clone(),
        };
        let here = extends_ref(&here_file, name);
        let there = extends_ref(&there_file, &target);
        let path = format!("services.{name}.extends");
        if chain.contains(&there) || there == here {
            let mut refs: Vec<String> = chain.clone();
            refs.push(here);
            refs.push(there);
            return Err(LoadError::invalid(
                &extends.mark,
                path,
                format!("extends cycle: {}", self.show_refs(&refs)),
            ));
        }
        if chain.len() >= MAX_EXTENDS_DEPTH {
            return Err(LoadError::invalid(
                &extends.mark,
                path,
                format!("extends chain longer than {MAX_EXTENDS_DEPTH} services"),
            ));
        }
        let other;
        let (base_tree, base_tags, in_file) = match file {
            Some(f) => {
                let file_path = PathBuf::from(f);
                if let Some(problem) = input::Kind::of(&file_path).problem() {
                    return Err(LoadError::invalid(
                        &extends.mark,
                        path,
                        format!("cannot extend service {target:?}: file {f} {problem}"),
                    ));
                }
                let dir = file_path.parent().map(Path::to_path_buf).unwrap_or_default();
                other = self.read_tree(&file_path, &dir)?;
                (&other.0, &other.1, format!(" in {f}"))
            }
            None => (tree, tags, String::new()),
        };
        if self.service(base_tree, &target).is_none() {
            return Err(LoadError::invalid(
                &extends.mark,
                path,
                format!("cannot extend service {target:?}: no such service{in_file}"),
            ));
        }
        chain.push(here);
        let base = self.resolve_extends(base_tree, base_tags, &target, chain);
        chain.pop();
        let mut base = base?;
        // What the extending service tags `!reset` (or `!override`) is taken out of the base
        // first, as compose-go applies the file's reset processor to the extended service.
        merge::reset_service(&mut base, tags, name);
        let mut over = service.clone();
        if let Some(m) = over.as_map_mut() {
            m.remove("extends");
        }
        merge::merge_service(&mut base, over);
        base.mark = service.mark.clone();
        Ok(base)
    }

    /// Imports the resources of each `include` entry (spec `14-include.md`): the included
    /// files form a project of their own (own directory, own `.env`), whose services,
    /// networks, volumes, secrets and configs join this one. Redefining one is an error.
    fn apply_include(&self, tree: &mut Node) -> Result<(), LoadError> {
        let Some(includes) = tree.as_map_mut().and_then(|m| m.remove("include")) else { return Ok(()) };
        let here = self.identity(Path::new(tree.mark.file.as_ref()));
        let mut chain = self.includes.clone();
        chain.push(here);
        for (index, include) in includes.as_seq().into_iter().flatten().enumerate() {
            let attr = format!("include[{index}]");
            let files: Vec<PathBuf> = match include.get("path") {
                Some(Node { value: Value::Seq(items), .. }) => {
                    items.iter().filter_map(Node::as_str).map(PathBuf::from).collect()
                }
                Some(n) => n.as_str().map(PathBuf::from).into_iter().collect(),
                None => Vec::new(),
            };
            let Some(first) = files.first() else {
                return Err(LoadError::invalid(&include.mark, attr, "include needs a path"));
            };
            let dir = match include.get("project_directory").and_then(Node::as_str) {
                Some(d) => PathBuf::from(d),
                None => first.parent().map(Path::to_path_buf).unwrap_or_default(),
            };
            let env_files: Vec<PathBuf> = match include.get("env_file") {
                Some(Node { value: Value::Seq(items), .. }) => {
                    items.iter().filter_map(Node::as_str).map(PathBuf::from).collect()
                }
                Some(n) => n.as_str().map(PathBuf::from).into_iter().collect(),
                None => Some(dir.join(".env")).filter(|p| p.is_file()).into_iter().collect(),
            };
            for file in &files {
                if let Some(problem) = input::Kind::of(file).problem() {
                    return Err(LoadError::invalid(
                        &include.mark,
                        attr,
                        format!("included file {} {problem}", file.display()),
                    ));
                }
                let id = self.identity(file);
                if chain.contains(&id) {
                    let from = chain.iter().position(|c| *c == id).unwrap_or(0);
                    let cycle: Vec<String> =
                        chain[from..].iter().chain([&id]).map(|c| self.shown(c)).collect();
                    return Err(LoadError::invalid(
                        &include.mark,
                        attr,
                        format!("include cycle: {}", cycle.join(" -> ")),
                    ));
                }
                if chain.len() > MAX_INCLUDE_DEPTH {
                    return Err(LoadError::invalid(
                        &include.mark,
                        attr,
                        format!("includes nested more than {MAX_INCLUDE_DEPTH} files deep"),
                    ));
                }
            }
            let env = environment::with_env_files(self.env, &env_files)?;
            let inner = FileContext::new(&env, self.opts, self.home, chain.clone());
            let mut imported: Option<Node> = None;
            for file in &files {
                let text = read_file(file)?;
                let mut t = yaml::parse(&text, &display_name(file, &self.opts.working_dir))?;
                let tags = merge::take_merge_tags(&mut t);
                let t = inner.process(t, &tags, &dir, &mut Vec::new())?;
                match imported.as_mut() {
                    None => imported = Some(t),
                    Some(b) => merge::merge_files(b, t, &tags),
                }
            }
            if let Some(imported) = imported {
                import_resources(tree, imported)?;
            }
        }
        Ok(())
    }
}

/// A service of a file, as the `extends` chain records it: `<file identity>#<service>`.
fn extends_ref(file: &Path, service: &str) -> String {
    format!("{}#{service}", file.display())
}

impl FileContext<'_> {
    /// An `extends` chain for messages: service names, with their files when it crosses files.
    fn show_refs(&self, refs: &[String]) -> String {
        let split = |r: &String| -> (String, String) {
            let (file, service) = r.rsplit_once('#').unwrap_or(("", r));
            (file.to_string(), service.to_string())
        };
        let parts: Vec<(String, String)> = refs.iter().map(split).collect();
        let one_file = parts.windows(2).all(|w| w[0].0 == w[1].0);
        let names: Vec<String> = parts
            .iter()
            .map(|(file, service)| {
                if one_file {
                    service.clone()
                } else {
                    format!("{service} ({})", self.shown(Path::new(file)))
                }
            })
            .collect();
        names.join(" -> ")
    }
}

/// Adds the included tree's resources to `tree`; a name defined in both is an error.
fn import_resources(tree: &mut Node, imported: Node) -> Result<(), LoadError> {
    let Value::Map(imported) = imported.value else { return Ok(()) };
    let Some(target) = tree.as_map_mut() else { return Ok(()) };
    for (key, section) in imported.entries {
        if !matches!(key.name.as_str(), "services" | "networks" | "volumes" | "secrets" | "configs") {
            continue;
        }
        let Value::Map(items) = section.value else { continue };
        if !target.contains(&key.name) {
            target.insert(key.clone(), Node::map(&key.mark));
        }
        let Some(dest) = target.get_mut(&key.name).and_then(Node::as_map_mut) else { continue };
        // Where each name is: an included file may define thousands.
        let mut positions: HashMap<String, usize> =
            dest.entries.iter().enumerate().map(|(i, (k, _))| (k.name.clone(), i)).collect();
        for (name, item) in items.entries {
            if let Some(existing) = positions.get(&name.name).map(|&i| &dest.entries[i].1) {
                if existing.to_json() != item.to_json() {
                    let kind = key.name.trim_end_matches('s');
                    return Err(LoadError::invalid(
                        &existing.mark,
                        format!("{}.{}", key.name, name.name),
                        format!("{kind} {:?} is also defined by included file {}", name.name, item.mark.file),
                    ));
                }
                continue;
            }
            positions.insert(name.name.clone(), dest.entries.len());
            dest.entries.push((name, item));
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<String, LoadError> {
    input::read_text(path)
}

/// How a file is named in messages: relative to the working dir when inside it.
fn display_name(path: &Path, working_dir: &Path) -> Arc<str> {
    let shown = path.strip_prefix(working_dir).unwrap_or(path);
    Arc::from(shown.to_string_lossy().as_ref())
}

/// The compose files: `-f`, else `COMPOSE_FILE` (from `env`, which includes the first `.env`),
/// else discovery from `start` (the project directory if given, else the working dir) upwards.
fn read_sources(opts: &ProjectOptions, env: &Environment, start: &Path) -> Result<Vec<Source>, LoadError> {
    let mut files: Vec<PathBuf> = opts.files.clone();
    if files.is_empty()
        && let Some(list) = env.get("COMPOSE_FILE").filter(|s| !s.is_empty())
    {
        let sep = env.get("COMPOSE_PATH_SEPARATOR").map(String::as_str).unwrap_or(":");
        files = list.split(sep).filter(|s| !s.is_empty()).map(PathBuf::from).collect();
    }
    if files.is_empty() {
        files = discover(start)?;
    }
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        if file.as_os_str() == "-" {
            let text = input::read_stdin()?;
            sources.push(Source { path: file, display: Arc::from("-"), text });
            continue;
        }
        let path = paths::clean(&opts.working_dir.join(&file));
        let text = read_file(&path)?;
        sources.push(Source { display: display_name(&path, &opts.working_dir), path, text });
    }
    Ok(sources)
}

/// Finds `compose.yaml` (or another default name) in `start` or its parents, plus an override
/// file beside it.
pub fn discover(start: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut dir = Some(start);
    while let Some(d) = dir {
        if let Some(main) = DEFAULT_FILE_NAMES.iter().map(|n| d.join(n)).find(|p| p.is_file()) {
            let mut files = vec![main];
            if let Some(over) = DEFAULT_OVERRIDE_NAMES.iter().map(|n| d.join(n)).find(|p| p.is_file()) {
                files.push(over);
            }
            return Ok(files);
        }
        dir = d.parent();
    }
    Err(LoadError::NoComposeFile(start.to_path_buf()))
}

/// `--env-file`s, else `COMPOSE_ENV_FILES`, else `.env` in the project dir if it exists.
fn env_files(opts: &ProjectOptions, project_dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let explicit: Vec<PathBuf> = if !opts.env_files.is_empty() {
        opts.env_files.iter().map(|f| opts.working_dir.join(f)).collect()
    } else if let Some(list) = opts.environment.get("COMPOSE_ENV_FILES").filter(|s| !s.is_empty()) {
        list.split(',').map(|f| opts.working_dir.join(f.trim())).collect()
    } else {
        return Ok(Some(project_dir.join(".env")).filter(|p| p.is_file()).into_iter().collect());
    };
    for f in &explicit {
        if let Some(problem) = input::Kind::of(f).problem() {
            return Err(LoadError::Project(format!("env file {} {problem}", f.display())));
        }
    }
    Ok(explicit)
}

/// The project name: `-p`, `COMPOSE_PROJECT_NAME`, the last file's `name`, the folder name.
fn project_name(
    opts: &ProjectOptions,
    env: &Environment,
    parsed: &[(Node, MergeTags)],
    project_dir: &Path,
) -> Result<String, LoadError> {
    if let Some(name) = &opts.project_name {
        return validated_name(name, "-p/--project-name");
    }
    if let Some(name) = env.get("COMPOSE_PROJECT_NAME").filter(|n| !n.is_empty()) {
        return validated_name(name, "COMPOSE_PROJECT_NAME");
    }
    for (tree, _) in parsed.iter().rev() {
        let Some(node) = tree.get("name") else { continue };
        let Some(raw) = node.scalar_text() else { continue };
        let value = if opts.interpolate {
            let lookup = |n: &str| env.get(n).cloned();
            interpolate::interpolate(&raw, &lookup)
                .map_err(|e| LoadError::invalid(&node.mark, "name", e.to_string()))?
        } else {
            raw
        };
        let normalized = normalize_project_name(&value);
        if normalized.is_empty() {
            return Err(LoadError::invalid(&node.mark, "name", format!("invalid project name {value:?}")));
        }
        return Ok(normalized);
    }
    let folder = project_dir.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let normalized = normalize_project_name(&folder);
    if normalized.is_empty() {
        return Err(LoadError::Project(format!(
            "project name {folder:?} (from the folder name) is empty once normalized; set one with -p or `name:`"
        )));
    }
    Ok(normalized)
}

/// Lowercases and drops characters other than `a-z0-9_-`, then leading `_` and `-`
/// (compose-go `NormalizeProjectName`).
pub fn normalize_project_name(name: &str) -> String {
    let lowered: String = name
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-')
        .collect();
    lowered.trim_start_matches(['_', '-']).to_string()
}

/// A name given explicitly must already be valid, as docker compose requires.
fn validated_name(name: &str, from: &str) -> Result<String, LoadError> {
    if !name.is_empty() && normalize_project_name(name) == name {
        Ok(name.to_string())
    } else {
        Err(LoadError::Project(format!(
            "invalid project name {name:?} from {from}: it must contain only lowercase letters, digits, dashes and underscores, and start with a letter or digit"
        )))
    }
}

/// Drops services whose profiles are all inactive. Active: `--profile`s, `COMPOSE_PROFILES`,
/// and the profiles of services named on the command line (`*` activates all). A service that
/// an enabled one requires but that is disabled is an error naming the profiles to enable.
fn apply_profiles(
    tree: &mut Node,
    opts: &ProjectOptions,
    env: &Environment,
) -> Result<Vec<String>, LoadError> {
    let mut active: BTreeSet<String> = opts.profiles.iter().cloned().collect();
    if let Some(list) = env.get("COMPOSE_PROFILES") {
        active.extend(list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
    }
    let Some(services) = tree.as_map_mut().and_then(|m| m.get_mut("services")).and_then(Node::as_map_mut)
    else {
        return Ok(Vec::new());
    };
    let profiles_of = |s: &Node| -> Vec<String> {
        s.get("profiles").and_then(Node::as_seq).into_iter().flatten().filter_map(Node::scalar_text).collect()
    };
    for name in &opts.services {
        if let Some(s) = services.get(name) {
            active.extend(profiles_of(s));
        }
    }
    let all = active.contains("*");
    let enabled = |s: &Node| {
        let p = profiles_of(s);
        all || p.is_empty() || p.iter().any(|x| active.contains(x))
    };
    let disabled: Vec<(String, Vec<String>)> = services
        .iter()
        .filter(|(n, s)| !enabled(s) && !opts.services.iter().any(|x| x == n))
        .map(|(n, s)| (n.to_string(), profiles_of(s)))
        .collect();
    // By name: a project may have thousands of services behind profiles.
    let disabled_by_name: HashMap<&str, &Vec<String>> =
        disabled.iter().map(|(n, p)| (n.as_str(), p)).collect();
    for (name, service) in services.iter() {
        if disabled_by_name.contains_key(name) {
            continue;
        }
        let Some(deps) = service.get("depends_on").and_then(Node::as_map) else { continue };
        for (dep, spec) in deps.iter() {
            let required = !matches!(spec.get("required").map(|r| &r.value), Some(Value::Bool(false)));
            if let Some(profiles) = disabled_by_name.get(dep)
                && required
            {
                return Err(LoadError::invalid(
                    &spec.mark,
                    format!("services.{name}.depends_on.{dep}"),
                    format!(
                        "service {dep:?} is required by {name:?} but is disabled; enable it with --profile {}",
                        profiles.join(" or --profile ")
                    ),
                ));
            }
        }
    }
    services.entries.retain(|(k, _)| !disabled_by_name.contains_key(k.name.as_str()));
    Ok(disabled.into_iter().map(|(n, _)| n).collect())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(opts: &ProjectOptions) -> Result<Project, LoadError> {
        load_project(opts).map(|l| l.project)
    }

    fn project_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::Builder::new().prefix("berth-load-").tempdir().expect("temp dir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn options(dir: &Path, env: &[(&str, &str)]) -> ProjectOptions {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ProjectOptions::new(dir.to_path_buf(), env)
    }

    #[test]
    fn project_name_precedence() {
        let dir = project_dir(&[("app/compose.yaml", "name: fromfile\nservices: {s: {image: x}}\n")]);
        let app = dir.path().join("app");
        let mut opts = options(&app, &[("COMPOSE_PROJECT_NAME", "fromenv")]);
        opts.project_name = Some("fromflag".into());
        assert_eq!(load(&opts).expect("loads").name, "fromflag");
        opts.project_name = None;
        assert_eq!(load(&opts).expect("loads").name, "fromenv");
        assert_eq!(load(&options(&app, &[])).expect("loads").name, "fromfile");
        let plain = project_dir(&[("My.App/compose.yaml", "services: {s: {image: x}}\n")]);
        assert_eq!(load(&options(&plain.path().join("My.App"), &[])).expect("loads").name, "myapp");
    }

    #[test]
    fn discovery_walks_up_and_takes_the_override() {
        let dir = project_dir(&[
            ("docker-compose.yml", "services: {s: {image: a}}\n"),
            ("docker-compose.override.yml", "services: {s: {image: b}}\n"),
            ("x/y/.keep", ""),
        ]);
        let found = discover(&dir.path().join("x/y")).expect("found");
        assert_eq!(found.len(), 2);
        let mut opts = options(&dir.path().join("x/y"), &[]);
        opts.project_name = Some("p".into());
        let loaded = load_project(&opts).expect("loads");
        assert_eq!(loaded.project.services["s"].image.as_deref(), Some("b"));
        assert_eq!(loaded.project_dir, dir.path());
    }

    #[test]
    fn compatibility_mode_comes_from_the_flag_or_compose_compatibility() {
        let dir = project_dir(&[("compose.yaml", "services: {s: {image: x}}\n")]);
        assert!(!load(&options(dir.path(), &[])).expect("loads").compatibility);
        let mut opts = options(dir.path(), &[]);
        opts.compatibility = true;
        assert!(load(&opts).expect("loads").compatibility);
        for (value, on) in
            [("true", true), ("1", true), ("y", true), ("TRUE", true), ("false", false), ("no", false)]
        {
            let p = load(&options(dir.path(), &[("COMPOSE_COMPATIBILITY", value)])).expect("loads");
            assert_eq!(p.compatibility, on, "{value}");
        }
        // From `.env` too, as docker compose reads it from the project's environment.
        let dotenv = project_dir(&[
            ("compose.yaml", "services: {s: {image: x}}\n"),
            (".env", "COMPOSE_COMPATIBILITY=true\n"),
        ]);
        assert!(load(&options(dotenv.path(), &[])).expect("loads").compatibility);
    }

    #[test]
    fn process_environment_beats_dotenv_and_dotenv_feeds_interpolation() {
        let dir = project_dir(&[
            ("compose.yaml", "services: {s: {image: \"${A}:${B}\", environment: [C]}}\n"),
            (".env", "A=dot\nB=dot\nC=dotc\n"),
        ]);
        let mut opts = options(dir.path(), &[("A", "proc")]);
        opts.project_name = Some("p".into());
        let p = load(&opts).expect("loads");
        assert_eq!(p.services["s"].image.as_deref(), Some("proc:dot"));
        assert_eq!(p.services["s"].environment["C"].as_deref(), Some("dotc"));
    }

    #[test]
    fn extends_across_files_resolves_paths_against_the_base_file() {
        let dir = project_dir(&[
            (
                "compose.yaml",
                "services:\n  web:\n    extends: {file: lib/base.yaml, service: b}\n    environment: {X: '1'}\n",
            ),
            (
                "lib/base.yaml",
                "services:\n  b:\n    extends: root\n    volumes: ['./data:/data']\n  root:\n    image: base\n",
            ),
        ]);
        let mut opts = options(dir.path(), &[]);
        opts.project_name = Some("p".into());
        let p = load(&opts).expect("loads");
        let web = &p.services["web"];
        assert_eq!(web.image.as_deref(), Some("base"));
        assert_eq!(
            web.volumes[0].source.as_deref(),
            Some(dir.path().join("lib/data").to_str().expect("utf8"))
        );
        assert!(!p.services.contains_key("b"));
    }

    #[test]
    fn project_names_normalize_like_compose() {
        assert_eq!(normalize_project_name("My_Shop"), "my_shop");
        assert_eq!(normalize_project_name("015-project-name-from-folder"), "015-project-name-from-folder");
        assert_eq!(normalize_project_name("_x.Y z"), "xyz");
        assert!(validated_name("Bad", "-p").is_err());
        assert!(validated_name("good-1", "-p").is_ok());
    }
}
