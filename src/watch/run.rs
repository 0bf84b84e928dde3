//! Carrying out `develop.watch`: inotify events on the rules' paths (the `notify` crate),
//! debounced into one batch per burst, turned into per-service actions by
//! [`super::plan_batch`] and done here: syncs through the runtime's copy helper, restarts
//! through the engine's stop and start, `exec` hooks in the running containers, rebuilds
//! through the image builder (with its cache) and `up`'s sequence for that service alone. A
//! failed action is reported and the watcher goes on; the service keeps what it runs.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use super::{Debounce, Rule, ServiceBatch, ServiceWatch, SyncSet, WatchError, plan_batch, service_watch};
use crate::compose::LoadedProject;
use crate::engine::images::{ImageOptions, ImageProvider};
use crate::engine::observe::{is_running, project_containers, status_of};
use crate::engine::plan::UpOptions;
use crate::engine::progress::{Progress, ProgressMode};
use crate::engine::provider::EngineImages;
use crate::engine::up::{UpRequest, UpSink, bring_up};
use crate::engine::{Engine, EngineError};
use crate::graph::ServiceGraph;
use crate::image::ImageError;
use crate::image::events::{ImageEvents, NoEvents};
use crate::runtime::ExecSpec;
use crate::runtime::copy::PutOptions;

/// How long a burst must pause before it is acted on, and the longest it is held.
const QUIET: Duration = Duration::from_millis(50);
const LONGEST: Duration = Duration::from_millis(1500);

/// Why watching could not start (once it runs, failed actions are reported, not returned).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A rule cannot be used.
    #[error(transparent)]
    Rule(#[from] WatchError),
    /// A rule's path cannot be read.
    #[error("service {service:?}: develop.watch path {}: {source}", path.display())]
    Path {
        /// The service.
        service: String,
        /// The rule's path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// inotify could not be set up on a path (none: at all).
    #[error("cannot watch {}: {source}", path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "files".into()))]
    Notify {
        /// The path.
        path: Option<PathBuf>,
        /// The cause.
        #[source]
        source: notify::Error,
    },
    /// A rebuild failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The image store failed (`--prune`).
    #[error(transparent)]
    Store(#[from] ImageError),
}

/// How actions are carried out.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchOptions {
    /// After a rebuild, remove the image it replaced if nothing names it any more.
    pub prune: bool,
    /// No build output.
    pub quiet: bool,
}

/// The project a watcher acts on.
#[derive(Debug, Clone, Copy)]
pub struct Project<'a> {
    /// The engine on the project's dirs.
    pub engine: &'a Engine,
    /// The project.
    pub loaded: &'a LoadedProject,
    /// Its graph.
    pub graph: &'a ServiceGraph,
}

/// Where a watcher reports.
pub trait WatchSink: Sync {
    /// One short line: watching began, what changed and what was done about it (and how long
    /// it took), or why it could not be done.
    fn line(&self, text: &str);
    /// A rebuild's build progress (not used with [`WatchOptions::quiet`]).
    fn image_events(&self) -> &dyn ImageEvents;
    /// A flag that stops a running rebuild when it becomes true.
    fn cancel(&self) -> Option<&'static AtomicBool> {
        None
    }
}

/// The watch rules of `services` (all the project's when empty) that have some.
pub fn watches_of(loaded: &LoadedProject, services: &[String]) -> Result<Vec<ServiceWatch>, RunError> {
    let mut out = Vec::new();
    for (name, config) in &loaded.project.services {
        if !services.is_empty() && !services.contains(name) {
            continue;
        }
        if let Some(w) = service_watch(&loaded.project_dir, name, config)? {
            out.push(w);
        }
    }
    Ok(out)
}

/// Watches until `stop` says so: sets up inotify on every rule's path, runs the initial syncs,
/// then acts on each debounced burst of changes.
pub fn watch(
    project: Project<'_>,
    watches: &[ServiceWatch],
    opts: WatchOptions,
    sink: &dyn WatchSink,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<(), RunError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .map_err(|source| RunError::Notify { path: None, source })?;
    let mut roots = BTreeSet::new();
    for w in watches {
        for r in &w.rules {
            let (path, mode) = match fs::metadata(&r.path) {
                Ok(m) if m.is_dir() => (r.path.clone(), RecursiveMode::Recursive),
                Ok(_) => {
                    (r.path.parent().unwrap_or(Path::new("/")).to_path_buf(), RecursiveMode::NonRecursive)
                }
                Err(source) => {
                    return Err(RunError::Path { service: w.service.clone(), path: r.path.clone(), source });
                }
            };
            if roots.insert(path.clone()) {
                watcher
                    .watch(&path, mode)
                    .map_err(|source| RunError::Notify { path: Some(path.clone()), source })?;
            }
        }
    }
    for w in watches {
        for (i, r) in w.rules.iter().enumerate() {
            if r.initial_sync && r.action.syncs() {
                let batch = ServiceBatch {
                    service: w.service.clone(),
                    changed: [r.path.clone()].into(),
                    syncs: vec![SyncSet { rule: i, paths: [PathBuf::new()].into() }],
                    ..ServiceBatch::default()
                };
                act(project, w, &batch, opts, sink);
            }
        }
    }
    sink.line("Watch enabled");
    let mut debounce = Debounce::new(QUIET, LONGEST);
    while !stop() {
        let wait = debounce.wait(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(ev) => Some(ev),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        for ev in first.into_iter().chain(rx.try_iter()) {
            match ev {
                Ok(ev) if ev.need_rescan() => {
                    // The kernel's queue overflowed: every rule's tree counts as changed.
                    let all = watches.iter().flat_map(|w| w.rules.iter().map(|r| r.path.clone()));
                    debounce.add(all, Instant::now());
                }
                Ok(ev) if matches!(ev.kind, EventKind::Access(_)) => {}
                Ok(ev) => debounce.add(ev.paths, Instant::now()),
                Err(e) => sink.line(&format!("watch: {e}")),
            }
        }
        if let Some(changed) = debounce.take(Instant::now()) {
            for batch in plan_batch(watches, &changed) {
                if let Some(w) = watches.iter().find(|w| w.service == batch.service) {
                    act(project, w, &batch, opts, sink);
                }
            }
        }
    }
    drop(watcher);
    Ok(())
}

fn describe(changed: &BTreeSet<PathBuf>, base: &Path) -> String {
    match changed.len() {
        1 => {
            let p = changed.iter().next().map(|p| p.strip_prefix(base).unwrap_or(p)).unwrap_or(Path::new(""));
            p.display().to_string()
        }
        n => format!("{n} files"),
    }
}

/// Carries out one service's batch and reports one line about it.
fn act(
    project: Project<'_>,
    w: &ServiceWatch,
    batch: &ServiceBatch,
    opts: WatchOptions,
    sink: &dyn WatchSink,
) {
    let start = Instant::now();
    let what = describe(&batch.changed, &project.loaded.project_dir);
    let s = &batch.service;
    let ms = |t: Instant| t.elapsed().as_millis();
    if batch.rebuild {
        sink.line(&format!("Rebuilding service {s:?} after changes to {what}"));
        match rebuild(project, s, opts, sink) {
            Ok(pruned) => {
                if pruned > 0 {
                    sink.line(&format!(
                        "pruned {pruned} dangling image{}",
                        if pruned == 1 { "" } else { "s" }
                    ));
                }
                sink.line(&format!("service {s:?} rebuilt and recreated ({} ms)", ms(start)));
            }
            Err(e) => {
                sink.line(&format!("service {s:?}: rebuild failed, the running container is kept: {e}"))
            }
        }
        return;
    }
    let runtime = &project.engine.runtime;
    let containers: Vec<_> = match project_containers(runtime, &project.loaded.project.name) {
        Ok(cs) => cs
            .into_iter()
            .filter(|c| &c.service == s && !c.oneoff && is_running(&status_of(runtime, &c.id)))
            .collect(),
        Err(e) => {
            sink.line(&format!("service {s:?}: {e}"));
            return;
        }
    };
    if containers.is_empty() {
        sink.line(&format!("service {s:?} has no running container: {what} not applied"));
        return;
    }
    let mut done = Vec::new();
    let mut files = 0;
    for sync in &batch.syncs {
        let rule = &w.rules[sync.rule];
        let target = rule.target.as_deref().unwrap_or("/");
        let mut ok = true;
        for c in &containers {
            match sync_rule(runtime, &c.id, w, rule, &sync.paths) {
                Ok(n) => files = files.max(n),
                Err(e) => {
                    sink.line(&format!(
                        "service {s:?}: sync to {target} failed, nothing more is done for this change: {e}"
                    ));
                    ok = false;
                }
            }
        }
        if !ok {
            return;
        }
    }
    if !batch.syncs.is_empty() {
        done.push(format!("synced {files} path{}", if files == 1 { "" } else { "s" }));
    }
    if batch.restart {
        let quiet = Progress::new(ProgressMode::Quiet);
        let services = [s.clone()];
        let (engine, loaded, graph) = (project.engine, project.loaded, project.graph);
        let restarted = crate::engine::down::stop(engine, loaded, graph, &services, None, &quiet)
            .and_then(|()| crate::engine::down::start(engine, loaded, graph, &services, &quiet));
        match restarted {
            Ok(()) => done.push("restarted".into()),
            Err(e) => {
                sink.line(&format!("service {s:?}: restart failed: {e}"));
                return;
            }
        }
    }
    for &i in &batch.execs {
        let Some(hook) = &w.rules[i].exec else { continue };
        let exec = ExecSpec {
            args: hook.command.clone(),
            env: hook.environment.clone(),
            user: hook.user.clone(),
            cwd: hook.working_dir.clone(),
            privileged: hook.privileged,
        };
        for c in &containers {
            match runtime.exec_output(&c.id, &exec) {
                Ok((0, _, _)) => {}
                Ok((code, _, err)) => sink.line(&format!(
                    "service {s:?}: {:?} exited with code {code}: {}",
                    hook.command.join(" "),
                    String::from_utf8_lossy(&err).trim()
                )),
                Err(e) => sink.line(&format!("service {s:?}: exec {:?} failed: {e}", hook.command.join(" "))),
            }
        }
        done.push(format!("ran {:?}", hook.command.join(" ")));
    }
    sink.line(&format!("service {s:?}: {what} changed, {} ({} ms)", done.join(", "), ms(start)));
}

/// Brings one rule's changed paths into container `id`: existing ones copied (a folder with
/// what it holds, less what the rule ignores), missing ones deleted. Returns how many paths
/// were copied or deleted.
fn sync_rule(
    runtime: &crate::runtime::Runtime,
    id: &str,
    w: &ServiceWatch,
    rule: &Rule,
    paths: &BTreeSet<PathBuf>,
) -> Result<usize, crate::runtime::copy::CopyError> {
    let target = rule.target.as_deref().unwrap_or("/");
    let single_file = !rule.path.is_dir() && paths.iter().all(|p| p.as_os_str().is_empty());
    let (dir, entries): (String, Vec<(PathBuf, PathBuf)>) = if single_file {
        let name = Path::new(target).file_name().map(PathBuf::from).unwrap_or_default();
        let parent = Path::new(target).parent().unwrap_or(Path::new("/")).display().to_string();
        (parent, vec![(rule.path.clone(), name)])
    } else {
        (target.to_string(), paths.iter().map(|rel| (rule.path.join(rel), rel.clone())).collect())
    };
    let mut remove = Vec::new();
    let mut present = Vec::new();
    for (host, rel) in entries {
        if fs::symlink_metadata(&host).is_ok() {
            present.push((host, rel));
        } else if !rel.as_os_str().is_empty() {
            remove.push(rel);
        }
    }
    let count = present.len() + remove.len();
    let options = PutOptions { mkdir: true, archive: false, remove };
    runtime.copy_in(id, &dir, &options, |out| {
        let mut tar = tar::Builder::new(out);
        tar.follow_symlinks(false);
        for (host, rel) in &present {
            append_tree(&mut tar, w, rule, host, rel)?;
        }
        tar.into_inner()?.flush()
    })?;
    Ok(count)
}

/// Appends `host` as `rel` (a folder's accepted contents too).
fn append_tree(
    tar: &mut tar::Builder<&mut dyn Write>,
    w: &ServiceWatch,
    rule: &Rule,
    host: &Path,
    rel: &Path,
) -> io::Result<()> {
    let meta = fs::symlink_metadata(host)?;
    if !meta.is_dir() {
        return tar.append_path_with_name(host, rel);
    }
    if !rel.as_os_str().is_empty() {
        tar.append_dir(rel, host)?;
    }
    let mut names: Vec<_> = fs::read_dir(host)?.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
    names.sort();
    for n in names {
        let child = host.join(&n);
        if w.accepts(rule, &child).is_some() {
            append_tree(tar, w, rule, &child, &rel.join(&n))?;
        }
    }
    Ok(())
}

/// How a rebuild runs `up`'s sequence: no resource progress, build output unless quiet,
/// waiting silently for another command's lock.
struct RebuildSink<'a> {
    quiet: Progress,
    images: &'a dyn ImageEvents,
    cancel: Option<&'static AtomicBool>,
}

impl UpSink for RebuildSink<'_> {
    fn progress(&self) -> &Progress {
        &self.quiet
    }
    fn image_events(&self) -> &dyn ImageEvents {
        self.images
    }
    fn waiting_for_lock(&self, _project: &str) {}
    fn cancel(&self) -> Option<&'static AtomicBool> {
        self.cancel
    }
}

/// Builds the service's image (with the build cache) and recreates only its containers;
/// returns how many images `--prune` removed.
fn rebuild(
    project: Project<'_>,
    service: &str,
    opts: WatchOptions,
    sink: &dyn WatchSink,
) -> Result<usize, RunError> {
    let services = [service.to_string()];
    // The image the service ran before: the only one `--prune` may take, once the rebuild has
    // left it without a name (as docker compose prunes only the project's dangling images).
    let previous: Vec<String> = {
        let provider = EngineImages::new(project.engine, project.loaded).map_err(EngineError::Store)?;
        crate::engine::images::service_images(project.loaded, &services)?
            .iter()
            .filter_map(|i| provider.local(&i.reference))
            .map(|l| l.id)
            .collect()
    };
    let request = UpRequest {
        options: UpOptions { services: services.to_vec(), no_deps: true, ..UpOptions::default() },
        images: ImageOptions { build: true, build_only: true, ..ImageOptions::default() },
        wait: None,
    };
    let up_sink = RebuildSink {
        quiet: Progress::new(ProgressMode::Quiet),
        images: if opts.quiet { &NoEvents } else { sink.image_events() },
        cancel: sink.cancel(),
    };
    bring_up(project.engine, project.loaded, project.graph, &request, &up_sink)?;
    if !opts.prune {
        return Ok(0);
    }
    let store = crate::image::ImageStore::open(project.engine.dirs())?;
    let (pruned, _) = store.prune_selected(false, &|id| previous.iter().any(|p| p == id))?;
    Ok(pruned.len())
}
