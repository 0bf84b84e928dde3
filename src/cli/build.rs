//! The project's image commands, as docker compose has them: `pull`, `push`, `build` and
//! `images`, and the image step of `up` (pull and build what the services need).

use std::collections::BTreeMap;
use std::time::SystemTime;

use clap::{Args, ValueEnum};

use super::output::outln;
use super::project::{self, ProjectCtx};
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::images::{
    ImageOptions, ImageOutcome, PullPolicy, ServiceImage, execute, plan_images, service_images,
};
use crate::engine::provider::EngineImages;
use crate::image::Reference;
use crate::image::events::ImageEvents;

/// `berth pull` flags.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Pull without printing progress information
    #[arg(short, long)]
    quiet: bool,
    /// Pull what it can and ignore images with pull failures
    #[arg(long)]
    ignore_pull_failures: bool,
    /// Ignore images that can be built
    #[arg(long)]
    ignore_buildable: bool,
    /// Also pull services declared as dependencies
    #[arg(long)]
    include_deps: bool,
    /// Apply pull policy ("missing"|"always")
    #[arg(long, value_name = "POLICY", value_parser = ["missing", "always"])]
    policy: Option<String>,
    /// Services (default: all)
    services: Vec<String>,
}

/// `berth push` flags.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Push what it can and ignore images with push failures
    #[arg(long)]
    ignore_push_failures: bool,
    /// Also push images of services declared as dependencies
    #[arg(long)]
    include_deps: bool,
    /// Push without printing progress information
    #[arg(short, long)]
    quiet: bool,
    /// Services (default: all)
    services: Vec<String>,
}

/// `berth build` flags.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Do not use cache when building the image
    #[arg(long)]
    no_cache: bool,
    /// Always attempt to pull a newer version of the base images
    #[arg(long)]
    pull: bool,
    /// Set build-time variables for services (KEY=VALUE; a bare KEY takes its value from the
    /// environment)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    build_args: Vec<String>,
    /// Set SSH authentications used when building service images (`default` for your
    /// SSH agent, or ID=SOCKET|KEY[,KEY])
    #[arg(long, value_name = "default|ID=PATH")]
    ssh: Vec<String>,
    /// Don't print anything to stdout
    #[arg(short, long)]
    quiet: bool,
    /// Also build dependencies (transitively)
    #[arg(long)]
    with_dependencies: bool,
    /// Services (default: all that have `build:`)
    services: Vec<String>,
}

/// `berth images` flags.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Format the output
    #[arg(long, value_enum, default_value_t = ImagesFormat::Table)]
    format: ImagesFormat,
    /// Only display image ids
    #[arg(short, long)]
    quiet: bool,
    /// Services (default: all)
    services: Vec<String>,
}

/// Output formats of `berth images`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ImagesFormat {
    Table,
    Json,
}

/// The services a command works on: the named ones (all when none), with their dependencies
/// when asked.
fn services_of(ctx: &ProjectCtx, named: &[String], with_deps: bool) -> CliResult<Vec<String>> {
    project::check_services(&ctx.loaded, named)?;
    let order = ctx.graph.start_order();
    if named.is_empty() {
        return Ok(order);
    }
    let wanted: Vec<String> = if with_deps { ctx.graph.dependencies_closure(named)? } else { named.to_vec() };
    Ok(order.into_iter().filter(|s| wanted.contains(s)).collect())
}

/// Pulls and builds what `services` need, as `up` does before making containers.
pub fn ensure_images(ctx: &ProjectCtx, services: &[String], opts: &ImageOptions) -> CliResult<ImageOutcome> {
    ensure_images_with(ctx, services, opts, &ctx.progress)
}

/// As [`ensure_images`], reporting to `events`.
pub fn ensure_images_with(
    ctx: &ProjectCtx,
    services: &[String],
    opts: &ImageOptions,
    events: &dyn ImageEvents,
) -> CliResult<ImageOutcome> {
    let provider = EngineImages::new(&ctx.engine, &ctx.loaded)
        .map_err(CliError::from)?
        .with_cancel(super::signals::cancel_flag());
    run_images(&provider, service_images(&ctx.loaded, services)?, opts, events)
}

fn run_images(
    provider: &EngineImages,
    images: Vec<ServiceImage>,
    opts: &ImageOptions,
    events: &dyn ImageEvents,
) -> CliResult<ImageOutcome> {
    use crate::engine::images::ImageProvider;
    let plan = plan_images(&images, &|r| provider.local(r), opts, SystemTime::now());
    // A build must clean up what its running step made (container, mounts, network): Ctrl-C
    // cancels it instead of killing berth, and then ends the command as an interrupt would.
    let builds = !plan.builds.is_empty() || !plan.fallback_builds.is_empty();
    if builds {
        super::signals::install();
    }
    let result =
        execute(&plan, provider, events, opts.ignore_pull_failures, ImageProvider::parallel_pulls(provider));
    if builds {
        super::signals::restore_default();
        if super::signals::cancel_flag().load(std::sync::atomic::Ordering::SeqCst) {
            let mut e = CliError::msg("interrupted");
            e.code = 130;
            return Err(e);
        }
    }
    Ok(result?)
}

/// Runs `berth pull`.
pub fn run_pull(global: &GlobalOptions, args: &PullArgs) -> CliResult<()> {
    let mut ctx = project::open(global)?;
    if args.quiet {
        ctx.progress = crate::engine::progress::Progress::new(crate::engine::progress::ProgressMode::Quiet);
    }
    let services = services_of(&ctx, &args.services, args.include_deps)?;
    let policy =
        args.policy.as_deref().map(|p| PullPolicy::parse(Some(p))).transpose().map_err(CliError::from)?;
    let mut images = service_images(&ctx.loaded, &services)?;
    // docker compose's `pull`: `never` and `build` services are skipped, an explicit `missing`
    // pulls only what is absent, everything else is pulled; `--policy` replaces all but the
    // skipped ones.
    images.retain(|i| !matches!(i.policy, PullPolicy::Never | PullPolicy::Build));
    for i in &mut images {
        let explicit_missing = matches!(
            ctx.loaded.project.services[&i.service].pull_policy.as_deref(),
            Some("missing" | "if_not_present")
        );
        i.policy = match policy {
            Some(p) => p,
            None if explicit_missing => PullPolicy::Missing,
            None => PullPolicy::Always,
        };
    }
    let opts = ImageOptions {
        pull_only: true,
        ignore_pull_failures: args.ignore_pull_failures,
        ignore_buildable: args.ignore_buildable,
        ..Default::default()
    };
    let provider = EngineImages::new(&ctx.engine, &ctx.loaded)
        .map_err(CliError::from)?
        .with_cancel(super::signals::cancel_flag());
    let outcome = run_images(&provider, images, &opts, &ctx.progress)?;
    let buildable: Vec<String> = outcome
        .pull_failures
        .iter()
        .flat_map(|(svcs, _)| svcs.clone())
        .filter(|s| ctx.loaded.project.services[s].build.is_some())
        .collect();
    if !buildable.is_empty() {
        ctx.progress.warn(&format!(
            "Some service image(s) must be built from source by running:\n    berth build {}",
            buildable.join(" ")
        ));
    }
    Ok(())
}

/// Runs `berth build`.
pub fn run_build(global: &GlobalOptions, args: &BuildArgs) -> CliResult<()> {
    let mut ctx = project::open(global)?;
    if args.quiet {
        ctx.progress = crate::engine::progress::Progress::new(crate::engine::progress::ProgressMode::Quiet);
    }
    let services = services_of(&ctx, &args.services, args.with_dependencies)?;
    let mut build_args = BTreeMap::new();
    for kv in &args.build_args {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                build_args.insert(k.to_string(), v.to_string());
            }
            // docker: a bare KEY takes its value from the environment, and is dropped when unset.
            None if !kv.is_empty() => {
                if let Ok(v) = std::env::var(kv) {
                    build_args.insert(kv.clone(), v);
                }
            }
            _ => return Err(CliError::msg(format!("invalid --build-arg {kv:?}: expected KEY=VALUE"))),
        }
    }
    let services: Vec<String> =
        services.into_iter().filter(|s| ctx.loaded.project.services[s].build.is_some()).collect();
    let opts = ImageOptions {
        build_only: true,
        no_cache: args.no_cache,
        pull_base: args.pull,
        build_args,
        ssh: args.ssh.clone(),
        ..Default::default()
    };
    ensure_images(&ctx, &services, &opts)?;
    Ok(())
}

/// Runs `berth push`.
pub fn run_push(global: &GlobalOptions, args: &PushArgs) -> CliResult<()> {
    let mut ctx = project::open(global)?;
    if args.quiet {
        ctx.progress = crate::engine::progress::Progress::new(crate::engine::progress::ProgressMode::Quiet);
    }
    let services = services_of(&ctx, &args.services, args.include_deps)?;
    let provider = EngineImages::new(&ctx.engine, &ctx.loaded)
        .map_err(CliError::from)?
        .with_cancel(super::signals::cancel_flag());
    let mut pushed: Vec<String> = Vec::new();
    for name in services {
        let svc = &ctx.loaded.project.services[&name];
        // docker compose pushes the images of services it builds; others come from elsewhere.
        let (Some(image), Some(build)) = (&svc.image, &svc.build) else {
            continue;
        };
        let mut names = vec![image.clone()];
        names.extend(build.tags.iter().cloned());
        for n in names {
            let full =
                Reference::parse(&n).map_err(|e| CliError::context(format!("service {name}"), e))?.full();
            if pushed.contains(&full) {
                continue;
            }
            match provider.push(&full, &ctx.progress) {
                Ok(_) => pushed.push(full),
                Err(e) if args.ignore_push_failures => {
                    ctx.progress
                        .warn(&CliError::context(format_args!("service {name}: push {n}"), e).to_string());
                }
                Err(e) => return Err(CliError::context(format_args!("service {name}: push {n}"), e)),
            }
        }
    }
    Ok(())
}

/// One row of `berth images`, with docker compose's JSON field names.
#[derive(Debug, serde::Serialize)]
struct ImageRow {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "ContainerName")]
    container_name: String,
    #[serde(rename = "Repository")]
    repository: String,
    #[serde(rename = "Tag")]
    tag: String,
    #[serde(rename = "Platform")]
    platform: serde_json::Value,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Created")]
    created: String,
    #[serde(rename = "LastTagTime")]
    last_tag_time: String,
}

/// Runs `berth images`: the images the project's containers use.
pub fn run_images_cmd(global: &GlobalOptions, args: &ImagesArgs) -> CliResult<()> {
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, &args.services)?;
    let store = ctx.engine.image_store().map_err(CliError::from)?;
    let containers =
        crate::engine::observe::project_containers(&ctx.engine.runtime, &ctx.loaded.project.name)?;
    let mut rows = Vec::new();
    for c in containers {
        if !args.services.is_empty() && !args.services.contains(&c.service) {
            continue;
        }
        let Ok(spec) = ctx.engine.runtime.spec(&c.id) else { continue };
        let Some(id) = spec.image_id.clone() else { continue };
        let Ok(info) = store.inspect(&id) else { continue };
        let first =
            info["RepoTags"].as_array().and_then(|t| t.first()).and_then(|t| t.as_str()).unwrap_or("");
        let (repository, tag) = match first.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => ("<none>".to_string(), "<none>".to_string()),
        };
        rows.push(ImageRow {
            id,
            container_name: spec.name.clone(),
            repository,
            tag,
            platform: serde_json::json!({
                "architecture": info["Architecture"],
                "os": info["Os"],
            }),
            size: info["Size"].as_u64().unwrap_or(0),
            created: info["Created"].as_str().unwrap_or("").to_string(),
            last_tag_time: store
                .tagged_at(first)
                .map(crate::runtime::timefmt::rfc3339_nanos)
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string()),
        });
    }
    rows.sort_by(|a, b| a.container_name.cmp(&b.container_name));
    if args.quiet {
        let mut seen = Vec::new();
        for r in &rows {
            if !seen.contains(&r.id) {
                outln!("{}", r.id)?;
                seen.push(r.id.clone());
            }
        }
        return Ok(());
    }
    match args.format {
        ImagesFormat::Json => {
            let text = serde_json::to_string(&rows).map_err(CliError::from)?;
            outln!("{text}")?;
        }
        ImagesFormat::Table => {
            let table: Vec<[String; 7]> = rows
                .iter()
                .map(|r| {
                    [
                        r.container_name.clone(),
                        r.repository.clone(),
                        r.tag.clone(),
                        format!(
                            "{}/{}",
                            r.platform["os"].as_str().unwrap_or(""),
                            r.platform["architecture"].as_str().unwrap_or("")
                        ),
                        super::image::short_id(&r.id).to_string(),
                        super::image::human_size(r.size),
                        super::image::created_since(&r.created),
                    ]
                })
                .collect();
            let head = ["CONTAINER", "REPOSITORY", "TAG", "PLATFORM", "IMAGE ID", "SIZE", "CREATED"];
            let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
            for row in &table {
                for (i, c) in row.iter().enumerate() {
                    widths[i] = widths[i].max(c.len());
                }
            }
            let line = |cells: &[String]| {
                let mut s = String::new();
                for (i, c) in cells.iter().enumerate() {
                    if i + 1 == cells.len() {
                        s.push_str(c);
                    } else {
                        s.push_str(&format!("{c:<w$}   ", w = widths[i]));
                    }
                }
                s
            };
            outln!("{}", line(&head.map(String::from)))?;
            for row in &table {
                outln!("{}", line(row))?;
            }
        }
    }
    Ok(())
}
