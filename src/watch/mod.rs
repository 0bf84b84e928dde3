//! `develop.watch`: a service's watch rules, typed, and the pure decision of what a burst of
//! file changes means for each service (which files to sync where, which to delete, whether to
//! restart, run a hook or rebuild). The watcher ([`run`]) feeds it file events and carries the
//! decisions out with the runtime's copy and the engine's plans.

pub mod run;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::compose::model::ServiceConfig;
use crate::image::build::dockerignore::{self, Ignore, IgnoreError};

/// A `develop.watch` rule that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("service {service:?}: develop.watch[{index}]: {problem}")]
pub struct WatchError {
    /// The service.
    pub service: String,
    /// The rule's position.
    pub index: usize,
    /// What is wrong.
    #[source]
    pub problem: RuleProblem,
}

/// What is wrong with a `develop.watch` rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleProblem {
    /// A value is missing or not one berth knows (worded for the user).
    #[error("{0}")]
    Invalid(String),
    /// `exec.command` is a string the shell would not split.
    #[error("exec.command: {0}")]
    Command(#[source] shell_words::ParseError),
    /// An `ignore`/`include` pattern, or the build context's `.dockerignore`, cannot be used.
    #[error(transparent)]
    Ignore(#[from] IgnoreError),
}

/// What a rule does when a file under its path changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Copy the changed files into the running container (and delete the deleted ones).
    Sync,
    /// Sync, then restart the container.
    SyncRestart,
    /// Sync, then run the rule's `exec` command in the container.
    SyncExec,
    /// Restart the container.
    Restart,
    /// Build the image again and recreate the service's containers.
    Rebuild,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "sync" => Action::Sync,
            "sync+restart" => Action::SyncRestart,
            "sync+exec" => Action::SyncExec,
            "restart" => Action::Restart,
            "rebuild" => Action::Rebuild,
            _ => return None,
        })
    }

    /// Whether files are copied.
    pub fn syncs(self) -> bool {
        matches!(self, Action::Sync | Action::SyncRestart | Action::SyncExec)
    }
}

/// The command of a `sync+exec` rule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecHook {
    /// argv.
    pub command: Vec<String>,
    /// User.
    pub user: Option<String>,
    /// `KEY=value` entries.
    pub environment: Vec<String>,
    /// Working dir.
    pub working_dir: Option<String>,
    /// All capabilities.
    pub privileged: bool,
}

/// One rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// What it does.
    pub action: Action,
    /// The host path watched (absolute).
    pub path: PathBuf,
    /// Where syncs go in the container (absolute).
    pub target: Option<String>,
    /// Paths (relative to `path`) whose changes are ignored.
    pub ignore: Ignore,
    /// When set, only paths matching these patterns count.
    pub include: Option<Ignore>,
    /// Sync everything once when watching starts.
    pub initial_sync: bool,
    /// The `sync+exec` command.
    pub exec: Option<ExecHook>,
}

/// A service's rules and the build context's ignore file.
#[derive(Debug, Clone)]
pub struct ServiceWatch {
    /// The service.
    pub service: String,
    /// Its rules, in the file's order.
    pub rules: Vec<Rule>,
    /// The build context and its `.dockerignore`, for a service that builds.
    pub context: Option<(PathBuf, Ignore)>,
}

/// File names editors and tools write beside the real files (swap, backup and probe files)
/// and version-control folders: never a reason to act, as docker compose ignores them too.
fn ephemeral(rel: &Path) -> bool {
    rel.components().any(|c| {
        let n = c.as_os_str().to_string_lossy();
        n == ".git"
            || n.ends_with('~')
            || (n.starts_with('#') && n.ends_with('#') && n.len() > 1)
            || n.starts_with(".#")
            || (n.starts_with('.') && [".swp", ".swx", ".swo", ".swpx"].iter().any(|s| n.ends_with(s)))
            || n == "4913"
            || n == ".DS_Store"
            || n.ends_with("___jb_old___")
            || n.ends_with("___jb_tmp___")
    })
}

fn strings(v: Option<&Json>) -> Vec<String> {
    match v {
        Some(Json::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        Some(Json::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The watch rules of `service` (`None` without `develop.watch`); relative rule paths are
/// taken from `project_dir` (the loader makes them absolute already).
pub fn service_watch(
    project_dir: &Path,
    service: &str,
    config: &ServiceConfig,
) -> Result<Option<ServiceWatch>, WatchError> {
    let Some(rules) = config.develop.as_ref().and_then(|d| d.get("watch")).and_then(Json::as_array) else {
        return Ok(None);
    };
    let err = |index: usize, problem: RuleProblem| WatchError { service: service.to_string(), index, problem };
    let invalid = |index: usize, message: String| err(index, RuleProblem::Invalid(message));
    let context = match &config.build {
        Some(b) if !b.context.as_deref().unwrap_or(".").contains("://") => {
            let dir = project_dir.join(b.context.as_deref().unwrap_or("."));
            let dockerfile = dir.join(b.dockerfile.as_deref().unwrap_or("Dockerfile"));
            let ignore = dockerignore::load_for(&dir, &dockerfile).map_err(|e| err(0, e.into()))?;
            Some((dir, ignore))
        }
        _ => None,
    };
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        let action = r.get("action").and_then(Json::as_str).unwrap_or_default();
        let action = Action::parse(action).ok_or_else(|| invalid(i, format!("unknown action {action:?}")))?;
        let path = r.get("path").and_then(Json::as_str).ok_or_else(|| invalid(i, "no path".into()))?;
        let path = crate::compose::paths::clean(&project_dir.join(path));
        let target = r
            .get("target")
            .and_then(Json::as_str)
            .map(|t| if t.starts_with('/') { t.to_string() } else { format!("/{t}") });
        if action.syncs() && target.is_none() {
            return Err(invalid(i, format!("action {:?} needs a target", action_name(action))));
        }
        if action == Action::Rebuild && config.build.is_none() {
            return Err(invalid(i, "action \"rebuild\" needs a build section".into()));
        }
        let ignore = Ignore::from_patterns(strings(r.get("ignore"))).map_err(|e| err(i, e.into()))?;
        let include = strings(r.get("include"));
        let include = if include.is_empty() {
            None
        } else {
            Some(Ignore::from_patterns(include).map_err(|e| err(i, e.into()))?)
        };
        let exec = match r.get("exec") {
            Some(e) if action == Action::SyncExec => Some(exec_hook(e).map_err(|p| err(i, p))?),
            None if action == Action::SyncExec => {
                return Err(invalid(i, "action \"sync+exec\" needs exec".into()));
            }
            _ => None,
        };
        out.push(Rule {
            action,
            path,
            target,
            ignore,
            include,
            initial_sync: r.get("initial_sync").and_then(Json::as_bool).unwrap_or(false),
            exec,
        });
    }
    Ok(Some(ServiceWatch { service: service.to_string(), rules: out, context }))
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Sync => "sync",
        Action::SyncRestart => "sync+restart",
        Action::SyncExec => "sync+exec",
        Action::Restart => "restart",
        Action::Rebuild => "rebuild",
    }
}

fn exec_hook(e: &Json) -> Result<ExecHook, RuleProblem> {
    let command = match e.get("command") {
        Some(Json::String(s)) => shell_words::split(s).map_err(RuleProblem::Command)?,
        Some(Json::Array(_)) => strings(e.get("command")),
        _ => return Err(RuleProblem::Invalid("exec needs a command".into())),
    };
    if command.is_empty() {
        return Err(RuleProblem::Invalid("exec.command is empty".into()));
    }
    let environment = match e.get("environment") {
        Some(Json::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Json::String(s) => format!("{k}={s}"),
                Json::Null => k.clone(),
                other => format!("{k}={other}"),
            })
            .collect(),
        other => strings(other),
    };
    Ok(ExecHook {
        command,
        user: e.get("user").and_then(Json::as_str).map(str::to_string),
        environment,
        working_dir: e.get("working_dir").and_then(Json::as_str).map(str::to_string),
        privileged: e.get("privileged").and_then(Json::as_bool).unwrap_or(false),
    })
}

impl ServiceWatch {
    /// The path of `host` relative to rule `rule`'s path (empty for the path itself), when the
    /// rule watches it and none of its patterns, the build context's `.dockerignore` or the
    /// editors' temporary names set it aside.
    pub fn accepts(&self, rule: &Rule, host: &Path) -> Option<PathBuf> {
        let rel = host.strip_prefix(&rule.path).ok()?;
        if ephemeral(rel) {
            return None;
        }
        let text = rel.to_string_lossy();
        if !text.is_empty() {
            if rule.ignore.matches(&text) {
                return None;
            }
            if let Some(include) = &rule.include
                && !include.matches(&text)
            {
                return None;
            }
        }
        if let Some((dir, ignore)) = &self.context
            && let Ok(in_context) = host.strip_prefix(dir)
            && ignore.matches(&in_context.to_string_lossy())
        {
            return None;
        }
        Some(rel.to_path_buf())
    }
}

/// The files of one rule to bring into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSet {
    /// The rule's position in the service's rules.
    pub rule: usize,
    /// Paths relative to the rule's path (empty: the path itself, a single file).
    pub paths: BTreeSet<PathBuf>,
}

/// What one burst of changes means for one service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceBatch {
    /// The service.
    pub service: String,
    /// Changed host paths that count, for the report.
    pub changed: BTreeSet<PathBuf>,
    /// Files to sync, per rule.
    pub syncs: Vec<SyncSet>,
    /// Restart the containers after the syncs.
    pub restart: bool,
    /// Rules whose `exec` runs after the syncs.
    pub execs: Vec<usize>,
    /// Build and recreate instead (nothing else is done then).
    pub rebuild: bool,
}

/// What `changed` (host paths from one debounced burst) asks of each service. Every rule that
/// accepts a path acts on it; a rebuild makes the rest moot.
pub fn plan_batch(watches: &[ServiceWatch], changed: &BTreeSet<PathBuf>) -> Vec<ServiceBatch> {
    let mut out = Vec::new();
    for w in watches {
        let mut batch = ServiceBatch { service: w.service.clone(), ..ServiceBatch::default() };
        let mut syncs: BTreeMap<usize, BTreeSet<PathBuf>> = BTreeMap::new();
        let mut execs = BTreeSet::new();
        for path in changed {
            for (i, rule) in w.rules.iter().enumerate() {
                let Some(rel) = w.accepts(rule, path) else { continue };
                batch.changed.insert(path.clone());
                match rule.action {
                    Action::Rebuild => batch.rebuild = true,
                    Action::Restart => batch.restart = true,
                    a => {
                        syncs.entry(i).or_default().insert(rel);
                        if a == Action::SyncRestart {
                            batch.restart = true;
                        }
                        if a == Action::SyncExec {
                            execs.insert(i);
                        }
                    }
                }
            }
        }
        if batch.changed.is_empty() {
            continue;
        }
        if batch.rebuild {
            batch.restart = false;
        } else {
            batch.syncs = syncs.into_iter().map(|(rule, paths)| SyncSet { rule, paths }).collect();
            batch.execs = execs.into_iter().collect();
        }
        out.push(batch);
    }
    out
}

/// Coalesces a burst of file events: a batch is ready once no event came for `quiet`, or
/// `longest` after its first event (a checkout that never pauses still syncs).
#[derive(Debug)]
pub struct Debounce {
    quiet: std::time::Duration,
    longest: std::time::Duration,
    pending: BTreeSet<PathBuf>,
    first: Option<std::time::Instant>,
    last: Option<std::time::Instant>,
}

impl Debounce {
    /// A debouncer with these windows.
    pub fn new(quiet: std::time::Duration, longest: std::time::Duration) -> Debounce {
        Debounce { quiet, longest, pending: BTreeSet::new(), first: None, last: None }
    }

    /// Notes changed paths seen at `now`.
    pub fn add(&mut self, paths: impl IntoIterator<Item = PathBuf>, now: std::time::Instant) {
        let before = self.pending.len();
        self.pending.extend(paths);
        if self.pending.len() > before || self.first.is_some() {
            self.first.get_or_insert(now);
            self.last = Some(now);
        }
    }

    /// The batch, when it is ready at `now`.
    pub fn take(&mut self, now: std::time::Instant) -> Option<BTreeSet<PathBuf>> {
        let (first, last) = (self.first?, self.last?);
        if now.duration_since(last) >= self.quiet || now.duration_since(first) >= self.longest {
            self.first = None;
            self.last = None;
            return Some(std::mem::take(&mut self.pending));
        }
        None
    }

    /// How long to wait for more events before looking again.
    pub fn wait(&self, now: std::time::Instant) -> std::time::Duration {
        match (self.first, self.last) {
            (Some(f), Some(l)) => {
                let a = (l + self.quiet).saturating_duration_since(now);
                let b = (f + self.longest).saturating_duration_since(now);
                a.min(b).max(std::time::Duration::from_millis(1))
            }
            _ => std::time::Duration::from_millis(200),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn watch(yaml: serde_json::Value, build: bool) -> ServiceWatch {
        let mut config = ServiceConfig { develop: Some(yaml), ..ServiceConfig::default() };
        if build {
            config.build = Some(Default::default());
        }
        service_watch(Path::new("/p"), "web", &config).unwrap().unwrap()
    }

    fn set(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn rules_decide_per_service() {
        let w = watch(
            serde_json::json!({"watch": [
                {"action": "sync", "path": "./src", "target": "/app/src", "ignore": ["*.tmp", "cache/"]},
                {"action": "sync+restart", "path": "./conf", "target": "etc/app"},
                {"action": "rebuild", "path": "package.json"},
            ]}),
            true,
        );
        assert_eq!(w.rules[1].target.as_deref(), Some("/etc/app"));
        let b = plan_batch(
            std::slice::from_ref(&w),
            &set(&["/p/src/a.js", "/p/src/x.tmp", "/p/src/cache/y", "/p/src/.a.js.swp", "/p/other"]),
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].syncs, vec![SyncSet { rule: 0, paths: set(&["a.js"]) }]);
        assert!(!b[0].restart && !b[0].rebuild);
        assert_eq!(b[0].changed, set(&["/p/src/a.js"]));

        let b = plan_batch(std::slice::from_ref(&w), &set(&["/p/conf/c.ini", "/p/src/a.js"]));
        assert!(b[0].restart);
        assert_eq!(b[0].syncs.len(), 2);

        let b = plan_batch(std::slice::from_ref(&w), &set(&["/p/package.json", "/p/src/a.js"]));
        assert!(b[0].rebuild && b[0].syncs.is_empty());

        assert!(plan_batch(&[w], &set(&["/p/src/b.tmp", "/p/nothing"])).is_empty());
    }

    #[test]
    fn include_and_bad_rules() {
        let w = watch(
            serde_json::json!({"watch": [{"action": "sync+exec", "path": "web", "target": "/w",
                "include": ["*.html"], "exec": {"command": "nginx -s reload", "environment": {"A": "1"}}}]}),
            false,
        );
        let hook = w.rules[0].exec.clone().unwrap();
        assert_eq!(hook.command, ["nginx", "-s", "reload"]);
        assert_eq!(hook.environment, ["A=1"]);
        let b = plan_batch(std::slice::from_ref(&w), &set(&["/p/web/i.html", "/p/web/s.css"]));
        assert_eq!(b[0].syncs[0].paths, set(&["i.html"]));
        assert_eq!(b[0].execs, [0]);

        let mut config = ServiceConfig {
            develop: Some(serde_json::json!({"watch": [{"action": "rebuild", "path": "."}]})),
            ..ServiceConfig::default()
        };
        let e = service_watch(Path::new("/p"), "web", &config).unwrap_err();
        assert!(e.to_string().contains("build"), "{e}");
        config.develop = Some(serde_json::json!({"watch": [{"action": "sync", "path": "."}]}));
        assert!(service_watch(Path::new("/p"), "web", &config).is_err());
    }

    #[test]
    fn bursts_coalesce() {
        let t0 = Instant::now();
        let mut d = Debounce::new(Duration::from_millis(50), Duration::from_millis(1000));
        assert!(d.take(t0).is_none());
        for i in 0..100u64 {
            d.add([PathBuf::from(format!("/f{i}"))], t0 + Duration::from_millis(i));
            assert!(d.take(t0 + Duration::from_millis(i)).is_none());
        }
        let batch = d.take(t0 + Duration::from_millis(160)).unwrap();
        assert_eq!(batch.len(), 100);
        assert!(d.take(t0 + Duration::from_secs(5)).is_none());
        // A burst that never pauses is cut at the longest window.
        for i in 0..30u64 {
            d.add([PathBuf::from(format!("/g{i}"))], t0 + Duration::from_millis(40 * i));
        }
        assert!(d.take(t0 + Duration::from_millis(1000)).is_some());
    }
}
