//! `berth watch` and `up --watch`: inotify events on the paths of the services' `develop.watch`
//! rules (the `notify` crate), debounced into one batch per burst, turned into per-service
//! actions by [`crate::watch::plan_batch`] and carried out here: syncs through the runtime's
//! copy helper, restarts and recreates through the engine's plans, rebuilds through the image
//! builder (with its cache). A failed action is reported and the watcher goes on; the service
//! keeps what it runs.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use clap::Args;
use notify::{EventKind, RecursiveMode, Watcher};

use super::output::statusln;
use super::project::{self, ProjectCtx};
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::execute::{Executor, recover};
use crate::engine::images::{ImageOptions, execute as run_image_plan, plan_images, service_images};
use crate::engine::observe::{is_running, observe, project_containers, status_of};
use crate::engine::plan::{UpOptions, plan, up_scope};
use crate::engine::progress::{Progress, ProgressMode};
use crate::engine::provider::EngineImages;
use crate::runtime::ExecSpec;
use crate::runtime::copy::PutOptions;
use crate::watch::{Debounce, Rule, ServiceBatch, ServiceWatch, plan_batch, service_watch};

/// `berth watch` flags.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Do not build & start services before watching
    #[arg(long)]
    no_up: bool,
    /// Prune dangling images on rebuild
    #[arg(long)]
    prune: bool,
    /// hide build output
    #[arg(long)]
    quiet: bool,
    /// Services to watch (default: all that have develop.watch rules)
    services: Vec<String>,
}

/// How actions are carried out.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchOptions {
    /// Remove dangling images after a rebuild.
    pub prune: bool,
    /// No build output.
    pub quiet: bool,
}

/// How long a burst must pause before it is acted on, and the longest it is held.
const QUIET: Duration = Duration::from_millis(50);
const LONGEST: Duration = Duration::from_millis(1500);

/// Runs `berth watch`.
pub fn run(global: &GlobalOptions, args: &WatchArgs) -> CliResult<()> {
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, &args.services)?;
    let watches = watches_of(&ctx, &args.services)?;
    if watches.is_empty() {
        return Err(CliError::msg(
            "none of the selected services is configured for watch, consider setting a 'develop' section",
        ));
    }
    if !args.no_up {
        up_detached(&ctx, &args.services, args.quiet)?;
    }
    signals::install();
    watch(&ctx, &watches, WatchOptions { prune: args.prune, quiet: args.quiet }, &|| {
        signals::interrupts() > 0
    })
}

/// The watch rules of `services` (all the project's when empty) that have some.
pub fn watches_of(ctx: &ProjectCtx, services: &[String]) -> CliResult<Vec<ServiceWatch>> {
    let mut out = Vec::new();
    for (name, config) in &ctx.loaded.project.services {
        if !services.is_empty() && !services.contains(name) {
            continue;
        }
        if let Some(w) = service_watch(&ctx.loaded.project_dir, name, config)? {
            out.push(w);
        }
    }
    Ok(out)
}

/// What `up -d SERVICES` does: images, then the plan, under the project's lock.
fn up_detached(ctx: &ProjectCtx, services: &[String], quiet: bool) -> CliResult<()> {
    let name = ctx.loaded.project.name.clone();
    let host = ctx.engine.host();
    let _lock = ctx.engine.lock_project(&name, || {
        ctx.progress.warn(&format!("waiting for another berth command on project {name} to finish"))
    })?;
    recover(&host, &name, &ctx.progress)?;
    let opts = UpOptions { services: services.to_vec(), ..UpOptions::default() };
    let needed = crate::engine::plan::selected_services(&ctx.loaded, &ctx.graph, &opts)?;
    let quiet_progress = Progress::new(ProgressMode::Quiet);
    let events = if quiet { &quiet_progress } else { &ctx.progress };
    super::build::ensure_images_with(ctx, &needed, &ImageOptions::default(), events)?;
    let observed = observe(&host, &name, &up_scope(&ctx.loaded, &ctx.graph, &opts)?)?;
    let plan = plan(&ctx.loaded, &ctx.graph, &observed, &opts)?;
    Executor { host, loaded: Some(&ctx.loaded), graph: Some(&ctx.graph), progress: &ctx.progress }
        .execute(&plan)?;
    Ok(())
}

/// Watches until `stop` says so: sets up inotify on every rule's path, runs the initial syncs,
/// then acts on each debounced burst of changes.
pub fn watch(
    ctx: &ProjectCtx,
    watches: &[ServiceWatch],
    opts: WatchOptions,
    stop: &(dyn Fn() -> bool + Sync),
) -> CliResult<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |res| {
        let _ = tx.send(res);
    })
    .map_err(|e| CliError::msg(format!("cannot watch files: {e}")))?;
    let mut roots = BTreeSet::new();
    for w in watches {
        for r in &w.rules {
            let (path, mode) = match fs::metadata(&r.path) {
                Ok(m) if m.is_dir() => (r.path.clone(), RecursiveMode::Recursive),
                Ok(_) => {
                    (r.path.parent().unwrap_or(Path::new("/")).to_path_buf(), RecursiveMode::NonRecursive)
                }
                Err(e) => {
                    return Err(CliError::msg(format!(
                        "service {:?}: develop.watch path {}: {e}",
                        w.service,
                        r.path.display()
                    )));
                }
            };
            if roots.insert(path.clone()) {
                watcher
                    .watch(&path, mode)
                    .map_err(|e| CliError::msg(format!("cannot watch {}: {e}", path.display())))?;
            }
        }
    }
    for w in watches {
        for (i, r) in w.rules.iter().enumerate() {
            if r.initial_sync && r.action.syncs() {
                let batch = ServiceBatch {
                    service: w.service.clone(),
                    changed: [r.path.clone()].into(),
                    syncs: vec![crate::watch::SyncSet { rule: i, paths: [PathBuf::new()].into() }],
                    ..ServiceBatch::default()
                };
                act(ctx, w, &batch, opts);
            }
        }
    }
    statusln!("Watch enabled");
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
                Err(e) => statusln!("watch: {e}"),
            }
        }
        if let Some(changed) = debounce.take(Instant::now()) {
            for batch in plan_batch(watches, &changed) {
                if let Some(w) = watches.iter().find(|w| w.service == batch.service) {
                    act(ctx, w, &batch, opts);
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

/// Carries out one service's batch and prints one line about it.
fn act(ctx: &ProjectCtx, w: &ServiceWatch, batch: &ServiceBatch, opts: WatchOptions) {
    let start = Instant::now();
    let what = describe(&batch.changed, &ctx.loaded.project_dir);
    let s = &batch.service;
    let ms = |t: Instant| t.elapsed().as_millis();
    if batch.rebuild {
        statusln!("Rebuilding service {s:?} after changes to {what}");
        match rebuild(ctx, s, opts) {
            Ok(()) => statusln!("service {s:?} rebuilt and recreated ({} ms)", ms(start)),
            Err(e) => statusln!("service {s:?}: rebuild failed, the running container is kept: {e}"),
        }
        return;
    }
    let runtime = &ctx.engine.runtime;
    let containers: Vec<_> = match project_containers(runtime, &ctx.loaded.project.name) {
        Ok(cs) => cs
            .into_iter()
            .filter(|c| &c.service == s && !c.oneoff && is_running(&status_of(runtime, &c.id)))
            .collect(),
        Err(e) => {
            statusln!("service {s:?}: {e}");
            return;
        }
    };
    if containers.is_empty() {
        statusln!("service {s:?} has no running container: {what} not applied");
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
                    statusln!(
                        "service {s:?}: sync to {target} failed, nothing more is done for this change: {e}"
                    );
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
        let restarted =
            crate::engine::down::stop(&ctx.engine, &ctx.loaded, &ctx.graph, &services, None, &quiet)
                .and_then(|()| {
                    crate::engine::down::start(&ctx.engine, &ctx.loaded, &ctx.graph, &services, &quiet)
                });
        match restarted {
            Ok(()) => done.push("restarted".into()),
            Err(e) => {
                statusln!("service {s:?}: restart failed: {e}");
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
                Ok((code, _, err)) => statusln!(
                    "service {s:?}: {:?} exited with code {code}: {}",
                    hook.command.join(" "),
                    String::from_utf8_lossy(&err).trim()
                ),
                Err(e) => statusln!("service {s:?}: exec {:?} failed: {e}", hook.command.join(" ")),
            }
        }
        done.push(format!("ran {:?}", hook.command.join(" ")));
    }
    statusln!("service {s:?}: {what} changed, {} ({} ms)", done.join(", "), ms(start));
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

/// Builds the service's image (with the build cache) and recreates only its containers.
fn rebuild(ctx: &ProjectCtx, service: &str, opts: WatchOptions) -> CliResult<()> {
    let name = ctx.loaded.project.name.clone();
    let host = ctx.engine.host();
    let _lock = ctx.engine.lock_project(&name, || {})?;
    let services = [service.to_string()];
    let provider = EngineImages::new(&ctx.engine, &ctx.loaded)
        .map_err(|e| CliError::msg(e.to_string()))?
        .with_cancel(signals::cancel_flag());
    let image_opts = ImageOptions { build: true, build_only: true, ..ImageOptions::default() };
    let images = service_images(&ctx.loaded, &services)?;
    use crate::engine::images::ImageProvider;
    // The image the service ran before: the only one `--prune` may take, once the rebuild has
    // left it without a name (as docker compose prunes only the project's dangling images).
    let previous: Vec<String> =
        images.iter().filter_map(|i| provider.local(&i.reference)).map(|l| l.id).collect();
    let image_plan = plan_images(&images, &|r| provider.local(r), &image_opts, SystemTime::now());
    let quiet = Progress::new(ProgressMode::Quiet);
    let events = if opts.quiet { &quiet } else { &ctx.progress };
    run_image_plan(&image_plan, &provider, events, false, provider.max_concurrent_pulls())?;
    let up = UpOptions { services: services.to_vec(), no_deps: true, ..UpOptions::default() };
    let observed = observe(&host, &name, &up_scope(&ctx.loaded, &ctx.graph, &up)?)?;
    let plan = plan(&ctx.loaded, &ctx.graph, &observed, &up)?;
    Executor { host, loaded: Some(&ctx.loaded), graph: Some(&ctx.graph), progress: &quiet }.execute(&plan)?;
    if opts.prune {
        let store =
            crate::image::ImageStore::open(ctx.engine.dirs()).map_err(|e| CliError::msg(e.to_string()))?;
        let (pruned, _) = store
            .prune_selected(false, &|id| previous.iter().any(|p| p == id))
            .map_err(|e| CliError::msg(e.to_string()))?;
        if !pruned.is_empty() {
            statusln!("pruned {} dangling image{}", pruned.len(), if pruned.len() == 1 { "" } else { "s" });
        }
    }
    Ok(())
}
