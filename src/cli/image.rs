//! `berth image ...`: the local image store.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

use super::output::{self, out, outln, statusln};
use super::{CliError, CliResult, GlobalOptions};
use crate::image::events::ImageEvents;
use crate::image::import::{ImportSource, import};
use crate::image::registry::{Platform, Registry, RegistryError, RegistryOptions};
use crate::image::{ImageStore, Reference, load::load};

pub(super) mod list;

/// `berth image` subcommands.
#[derive(Debug, Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Import a root filesystem (tarball, folder or `-`) as a one-layer image
    Import {
        /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, STOPSIGNAL, VOLUME)
        #[arg(short = 'c', long = "change", value_name = "LINE")]
        changes: Vec<String>,
        /// Commit message kept in the image history
        #[arg(short, long)]
        message: Option<String>,
        /// Tarball, folder, or `-` for standard input
        source: PathBuf,
        /// Name for the image (`repository[:tag]`)
        name: Option<String>,
    },
    /// Load images from a docker-archive or OCI archive
    Load {
        /// Read from this file instead of standard input
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Print nothing
        #[arg(short, long)]
        quiet: bool,
    },
    /// Download an image from a registry
    Pull {
        /// Download all tagged images in the repository
        #[arg(short, long)]
        all_tags: bool,
        /// Platform to pull (`os/arch[/variant]`; default: this host's)
        #[arg(long)]
        platform: Option<String>,
        /// Print only the image's full name
        #[arg(short, long)]
        quiet: bool,
        /// The image (`name[:tag|@digest]`)
        reference: String,
    },
    /// Upload an image to a registry
    Push {
        /// Print only the manifest digest
        #[arg(short, long)]
        quiet: bool,
        /// The image (`name[:tag]`)
        reference: String,
    },
    /// List images
    #[command(alias = "list")]
    Ls {
        /// Show all images (berth makes no intermediate images: the same as without it)
        #[arg(short, long)]
        all: bool,
        /// Show digests
        #[arg(long)]
        digests: bool,
        /// Filter output (dangling=true|false, reference=PATTERN, before=IMAGE, since=IMAGE,
        /// label=KEY[=VALUE])
        #[arg(short, long = "filter", value_name = "FILTER")]
        filters: Vec<String>,
        /// Don't truncate output
        #[arg(long)]
        no_trunc: bool,
        /// Only ids
        #[arg(short, long)]
        quiet: bool,
        /// Output format: table, json, or a Go template
        #[arg(long, default_value = "table")]
        format: String,
        /// Only images of this repository (`name[:tag]`)
        reference: Option<String>,
    },
    /// Remove images (refuses images containers use, unless -f)
    #[command(alias = "remove")]
    Rm {
        /// Remove even when containers use it
        #[arg(short, long)]
        force: bool,
        /// Names or ids
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show images as JSON
    Inspect {
        /// Format the output using a Go template (`{{.Id}}`, `{{json .Config}}`)
        #[arg(short, long)]
        format: Option<String>,
        /// Names or ids
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove untagged images that no container uses, and unreferenced content
    Prune {
        /// Remove all images no container uses, not only untagged ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation (berth never prompts)
        #[arg(short, long)]
        force: bool,
        /// Only images that match: `until=TIMESTAMP|DURATION` (created before),
        /// `label=KEY[=VALUE]`, `label!=KEY[=VALUE]`
        #[arg(long, value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// Give an image another name (TARGET_IMAGE[:TAG])
    Tag {
        /// The image (name or id)
        source: String,
        /// The new name
        target: String,
    },
    /// Save images to a docker-archive (standard output by default); `docker load` and
    /// `berth image load` read it
    Save {
        /// Write to a file instead of standard output
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Images (names or ids)
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show the history of an image
    History {
        /// Don't truncate output
        #[arg(long)]
        no_trunc: bool,
        /// Only show image ids
        #[arg(short, long)]
        quiet: bool,
        /// Print sizes and dates in human readable format
        #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
        human: bool,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The image
        image: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

pub(super) fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

pub(super) fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < units.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{bytes}B") } else { format!("{v:.3}{}", units[u]).replace(".000", "") }
}

/// `image save`: to a file (written beside it and renamed, so a failure leaves no partial
/// archive), or to standard output when that is not a terminal.
fn save(store: &ImageStore, output: Option<&std::path::Path>, images: &[String]) -> CliResult<()> {
    let err = |e: crate::image::ImageError| CliError::from(e);
    match output {
        Some(path) => {
            // Written into the path as docker does (a device or a symlink stays what it is); a
            // failed save into a new file removes it.
            let existed = path.exists();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(|e| CliError::context(path.display(), e))?;
            let mut buf = std::io::BufWriter::new(file);
            let result = store
                .save(images, &mut buf)
                .map_err(err)
                .and_then(|()| buf.flush().map_err(|e| CliError::context(path.display(), e)));
            drop(buf);
            if result.is_err() && !existed && path.is_file() {
                let _ = std::fs::remove_file(path);
            }
            result?;
        }
        None => {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                return Err(CliError::msg(
                    "image save: cowardly refusing to write an archive to a terminal; use -o FILE or redirect",
                ));
            }
            let mut out = std::io::BufWriter::new(output::Stdout);
            store.save(images, &mut out).map_err(|e| output::stream_error(err(e)))?;
            out.flush().map_err(output::stream_error)?;
        }
    }
    Ok(())
}

/// `2 days ago`, as docker prints an image's age.
pub(super) fn created_since(created: &str) -> String {
    let text = crate::runtime::timefmt::human_since(created);
    if text.is_empty() { text } else { format!("{text} ago") }
}

/// An archive read from standard input cannot come from a terminal: rather than wait for
/// one to be typed, say what to do (docker: "requested load from stdin, but stdin is empty").
fn refuse_terminal_stdin(command: &str, hint: &str) -> CliResult<()> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Err(CliError::msg(format!("{command}: standard input is a terminal; {hint}")));
    }
    Ok(())
}

/// Runs `berth image ...`.
pub fn run(global: &GlobalOptions, args: &ImageArgs) -> CliResult<()> {
    let store = ImageStore::open(&global.dirs()).map_err(CliError::from)?;
    let err = |e: crate::image::ImageError| CliError::from(e);
    match &args.command {
        ImageCommand::Pull { all_tags, platform, quiet, reference } => {
            return pull(&store, platform.as_deref(), *quiet, *all_tags, reference);
        }
        ImageCommand::Push { quiet, reference } => return push(&store, *quiet, reference),
        _ => {}
    }
    match &args.command {
        ImageCommand::Import { changes, message, source, name } => {
            let reference = name.as_deref().map(Reference::parse).transpose().map_err(CliError::from)?;
            let mut stdin = std::io::stdin().lock();
            let src = if source.as_os_str() == "-" {
                refuse_terminal_stdin("image import -", "pipe a tarball in, or give a FILE or DIR")?;
                ImportSource::Reader(&mut stdin)
            } else if source.is_dir() {
                ImportSource::Dir(source)
            } else if source.is_file() {
                ImportSource::File(source)
            } else {
                return Err(CliError::msg(format!("{}: no such file or directory", source.display())));
            };
            let id = import(&store, src, reference.as_ref(), changes, message.as_deref()).map_err(err)?;
            outln!("{id}")?;
        }
        ImageCommand::Load { input, quiet } => {
            let loaded = match input {
                Some(path) => {
                    let mut f =
                        std::fs::File::open(path).map_err(|e| CliError::context(path.display(), e))?;
                    load(&store, &mut f, &path.display().to_string()).map_err(err)?
                }
                None => {
                    refuse_terminal_stdin("image load", "pipe an archive in, or give one with -i FILE")?;
                    load(&store, &mut std::io::stdin().lock(), "standard input").map_err(err)?
                }
            };
            if !quiet {
                for image in loaded {
                    if image.names.is_empty() {
                        outln!("Loaded image ID: {}", image.id)?;
                    }
                    for n in image.names {
                        outln!("Loaded image: {n}")?;
                    }
                }
            }
        }
        ImageCommand::Pull { all_tags, platform, quiet, reference } => {
            pull(&store, platform.as_deref(), *quiet, *all_tags, reference)?
        }
        ImageCommand::Push { quiet, reference } => push(&store, *quiet, reference)?,
        ImageCommand::Ls { all: _, digests, filters, no_trunc, quiet, format, reference } => {
            let text =
                list::render(&store, filters, reference.as_deref(), *quiet, *digests, *no_trunc, format)?;
            out!("{text}")?;
        }
        ImageCommand::Rm { force, images } => {
            let mut failed = None;
            for image in images {
                match store.remove(image, *force) {
                    Ok(lines) => {
                        for l in lines {
                            statusln!("{l}");
                        }
                    }
                    Err(e) => {
                        output::warn(format_args!("berth: {e}"));
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(CliError::msg(format!("not every image was removed (last error: {e})")));
            }
        }
        ImageCommand::Inspect { format, images } => {
            let template = format
                .as_deref()
                .map(|f| super::template::Template::parse(&f.replace("\\t", "\t").replace("\\n", "\n")))
                .transpose()
                .map_err(|e| CliError::context("image inspect --format", e))?;
            let mut all = Vec::new();
            for image in images {
                all.push(store.inspect(image).map_err(err)?);
            }
            let text = match &template {
                // docker: the template applied to each image, one line each.
                Some(t) => {
                    let mut text = String::new();
                    for v in &all {
                        let line = t.render(v).map_err(|e| CliError::context("image inspect --format", e))?;
                        text.push_str(&line);
                        text.push('\n');
                    }
                    text
                }
                None => serde_json::to_string_pretty(&all).map_err(CliError::from)? + "\n",
            };
            out!("{text}")?;
        }
        ImageCommand::Tag { source, target } => {
            store.tag(source, target).map_err(err)?;
        }
        ImageCommand::Save { output, images } => save(&store, output.as_deref(), images)?,
        ImageCommand::History { no_trunc, quiet, human, format, image } => {
            let rows = store.history(image).map_err(err)?;
            if *quiet {
                for r in &rows {
                    let id = if *no_trunc { r.id.clone() } else { short_id(&r.id).to_string() };
                    outln!("{id}")?;
                }
            } else if *format == Format::Json {
                for r in &rows {
                    let text = serde_json::to_string(r).map_err(CliError::from)?;
                    outln!("{text}")?;
                }
            } else {
                outln!(
                    "{:<12}   {:<18}   {:<45}   {:<9}   COMMENT",
                    "IMAGE",
                    "CREATED",
                    "CREATED BY",
                    "SIZE"
                )?;
                for r in &rows {
                    let id = if r.id == "<missing>" || *no_trunc {
                        r.id.clone()
                    } else {
                        short_id(&r.id).to_string()
                    };
                    let created = if *human { created_since(&r.created) } else { r.created.clone() };
                    let by = r.created_by.replace('\t', " ");
                    let by = if *no_trunc || by.chars().count() <= 45 {
                        by
                    } else {
                        format!("{}…", by.chars().take(44).collect::<String>())
                    };
                    let size = if *human { human_size(r.size) } else { r.size.to_string() };
                    outln!("{id:<12}   {created:<18}   {by:<45}   {size:<9}   {}", r.comment)?;
                }
            }
        }
        ImageCommand::Prune { all, force: _, filter } => {
            let (removed, freed) = if filter.is_empty() {
                store.prune(*all).map_err(err)?
            } else {
                let filters = list::PruneFilters::parse(filter, std::time::SystemTime::now())?;
                let chosen = filters.select(&store)?;
                store.prune_selected(*all, &|id| chosen.contains(id)).map_err(err)?
            };
            // docker's report: the names untagged and the ids deleted, then the total.
            let mut seen = std::collections::BTreeSet::new();
            if !removed.is_empty() {
                outln!("Deleted Images:")?;
                for (id, names) in &removed {
                    for n in names {
                        outln!("untagged: {n}")?;
                    }
                    if seen.insert(id.clone()) {
                        outln!("deleted: {id}")?;
                    }
                }
                outln!()?;
            }
            outln!("Total reclaimed space: {}", human_size(freed))?;
        }
    }
    Ok(())
}

/// Prints layer progress as docker does without a terminal: one line per state change, byte
/// counts left out.
struct LinePrinter {
    quiet: bool,
}

impl ImageEvents for LinePrinter {
    fn event(&self, kind: &str, name: &str, status: &str, _done: bool) {
        let bytes = status.starts_with("Downloading ") || status.starts_with("Pushing ");
        if !self.quiet && kind == "Layer" && !bytes {
            statusln!("{name}: {status}");
        }
    }

    fn failed(&self, kind: &str, name: &str, status: &str) {
        if !self.quiet && kind == "Layer" {
            statusln!("{name}: {status}");
        }
    }
}

fn pull(
    store: &ImageStore,
    platform: Option<&str>,
    quiet: bool,
    all_tags: bool,
    reference: &str,
) -> CliResult<()> {
    let r = Reference::parse(reference).map_err(CliError::from)?;
    let platform = platform.map(Platform::parse).transpose().map_err(CliError::from)?;
    let registry = Registry::new(RegistryOptions::from_env());
    // Say which image when the cause only names the registry.
    let failed = |what: &str, e: RegistryError| match e {
        RegistryError::Unreachable { .. } | RegistryError::Timeout { .. } => {
            CliError::context(format!("pull {what}"), e)
        }
        e => CliError::from(e),
    };
    let last = reference.rsplit('/').next().unwrap_or(reference);
    let names: Vec<Reference> = if all_tags {
        if last.contains([':', '@']) {
            return Err(CliError::msg(format!("pull {reference}: tag can't be used with --all-tags/-a")));
        }
        let tags = registry.tags(reference).map_err(|e| failed(&r.repository, e))?;
        if tags.is_empty() {
            return Err(CliError::msg(format!("pull {}: the repository has no tags", r.repository)));
        }
        tags.iter()
            .map(|t| Reference { tag: t.clone(), digest: None, repository: r.repository.clone() })
            .collect()
    } else {
        if !quiet && !last.contains([':', '@']) {
            statusln!("Using default tag: {}", r.tag);
        }
        vec![r.clone()]
    };
    let mut updated = false;
    let mut pulled_names = Vec::new();
    for name in &names {
        if !quiet {
            statusln!("{}: Pulling from {}", name.tag_or_digest(), name.path());
        }
        let pulled = registry
            .pull(store, &name.full(), platform.as_ref(), &LinePrinter { quiet })
            .map_err(|e| failed(&name.short(), e))?;
        if !quiet {
            outln!("Digest: {}", pulled.manifest_digest)?;
        }
        updated |= pulled.updated;
        pulled_names.push(pulled.reference);
    }
    // docker names the repository after an --all-tags pull, the image otherwise.
    let (shown, full) = if all_tags {
        (r.short_repository(), r.repository.clone())
    } else {
        (r.short(), pulled_names.pop().unwrap_or_else(|| r.full()))
    };
    if !quiet {
        if updated {
            outln!("Status: Downloaded newer image for {shown}")?;
        } else {
            outln!("Status: Image is up to date for {shown}")?;
        }
    }
    outln!("{full}")
}

fn push(store: &ImageStore, quiet: bool, reference: &str) -> CliResult<()> {
    let r = Reference::parse(reference).map_err(CliError::from)?;
    if !quiet {
        statusln!("The push refers to repository [{}]", r.repository);
    }
    let registry = Registry::new(RegistryOptions::from_env());
    let digest = registry.push(store, reference, &LinePrinter { quiet }).map_err(|e| match e {
        RegistryError::Unreachable { .. } | RegistryError::Timeout { .. } => {
            CliError::context(format!("push {}", r.short()), e)
        }
        e => CliError::from(e),
    })?;
    if quiet {
        outln!("{digest}")
    } else {
        let size = store.manifest_of(&r.full()).map(|(_, _, b)| b.len()).unwrap_or(0);
        outln!("{}: digest: {digest} size: {size}", r.tag)
    }
}
