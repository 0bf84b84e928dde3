//! `berth cp`: copies files and folders between a service's container and the host, with
//! docker's rules for where things land (an existing dest folder receives the source under its
//! own name; `SRC/.` copies a folder's contents; a missing dest is created as the copy).

use std::fs;
use std::io;
use std::path::Path;

use clap::Args;

use super::output::statusln;
use super::project;
use super::{CliError, CliResult, GlobalOptions};
use crate::engine::observe::project_containers;
use crate::runtime::copy::{PutOptions, tar_host_path, untar_host};

/// `berth cp` flags.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Include containers created by the run command
    #[arg(long)]
    all: bool,
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    follow_link: bool,
    /// Index of the container if the service has several (default: all of them when copying
    /// to the service, the first when copying from it)
    #[arg(long, default_value_t = 0)]
    index: u32,
    /// SERVICE:SRC_PATH, or a host path (`-` reads a tar stream from standard input)
    source: String,
    /// SERVICE:DEST_PATH, or a host path (`-` writes a tar stream to standard output)
    destination: String,
}

/// Where a copy lands: the folder to unpack into and the name of the copy's top entry there,
/// or the folder whose contents receive the source folder's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Landing {
    /// The folder the archive is unpacked into.
    pub dir: String,
    /// The top entry's name (unused with `contents`).
    pub name: String,
    /// The source folder's entries go straight into `dir` (`SRC/.` onto an existing folder).
    pub contents: bool,
}

/// What is at the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DestInfo {
    pub exists: bool,
    pub is_dir: bool,
}

/// `SERVICE:PATH` split, or `None` for a host path (absolute, relative with a dot, or with a
/// slash before any colon), as docker's `splitCpArg` decides.
fn split_arg(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    let (service, path) = arg.split_once(':')?;
    (!service.is_empty() && !service.contains('/')).then_some((service, path))
}

fn base_name(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

fn parent_of(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
        None => ".".to_string(),
    }
}

/// A copy docker's rules refuse (the paths as given).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LandingError {
    /// The source ends with `/` or `/.` but is not a folder.
    #[error("{0}: not a directory")]
    NotDir(String),
    /// A folder onto a file.
    #[error("cannot copy a directory to a file: {0}")]
    DirOntoFile(String),
    /// A file into a folder (`dst/`) that does not exist.
    #[error("destination directory {0} does not exist")]
    NoDestDir(String),
    /// A destination without a name (`.`, `..`, empty).
    #[error("invalid destination {0:?}")]
    BadDest(String),
}

/// Where a copy of `src` (a folder or not) lands at `dst`, by docker's rules.
pub(crate) fn landing(
    src: &str,
    src_is_dir: bool,
    dst: &str,
    info: DestInfo,
) -> Result<Landing, LandingError> {
    let wants_contents = src.ends_with("/.") || src == "." || src.trim_end_matches('/').is_empty();
    if !src_is_dir && (src.ends_with('/') || src.ends_with("/.")) {
        return Err(LandingError::NotDir(src.to_string()));
    }
    if info.exists && info.is_dir {
        return Ok(if wants_contents {
            Landing { dir: dst.to_string(), name: String::new(), contents: true }
        } else {
            Landing { dir: dst.to_string(), name: base_name(src).to_string(), contents: false }
        });
    }
    if info.exists && src_is_dir {
        return Err(LandingError::DirOntoFile(dst.to_string()));
    }
    if !info.exists && !src_is_dir && dst.ends_with('/') {
        return Err(LandingError::NoDestDir(dst.to_string()));
    }
    let name = base_name(dst);
    if name.is_empty() || name == "." || name == ".." {
        return Err(LandingError::BadDest(dst.to_string()));
    }
    Ok(Landing { dir: parent_of(dst), name: name.to_string(), contents: false })
}

/// A container path as given, made absolute (docker takes relative ones from `/`).
fn container_path(path: &str) -> String {
    if path.starts_with('/') { path.to_string() } else { format!("/{path}") }
}

/// Runs `berth cp`.
pub fn run(global: &GlobalOptions, args: &CpArgs) -> CliResult<()> {
    let (from, to) = (split_arg(&args.source), split_arg(&args.destination));
    let (service, to_service) = match (from, to) {
        (Some(_), Some(_)) => return Err(CliError::msg("copying between services is not supported")),
        (None, None) => return Err(CliError::msg("one of source or destination must be SERVICE:PATH")),
        (Some((s, _)), None) => (s, false),
        (None, Some((s, _))) => (s, true),
    };
    let ctx = project::open(global)?;
    project::check_services(&ctx.loaded, &[service.to_string()])?;
    let runtime = &ctx.engine.runtime;
    let mut containers: Vec<_> = project_containers(runtime, &ctx.loaded.project.name)?
        .into_iter()
        .filter(|c| c.service == service && (args.all || !c.oneoff))
        .filter(|c| args.index == 0 || c.number == args.index)
        .collect();
    containers.sort_by_key(|c| (c.oneoff, c.number));
    if containers.is_empty() {
        return Err(CliError::msg(match args.index {
            0 => format!("no container found for service {service:?}"),
            n => format!("service {service:?} has no container number {n}"),
        }));
    }
    if to_service {
        let (_, dst) = to.unwrap_or_default();
        let dst = container_path(dst);
        for c in &containers {
            copy_to(runtime, &c.id, &c.name, &args.source, &dst, args)?;
        }
    } else {
        let (_, src) = from.unwrap_or_default();
        let c = &containers[0];
        copy_from(runtime, &c.id, &c.name, &container_path(src), &args.destination, args)?;
    }
    Ok(())
}

fn copy_to(
    runtime: &crate::runtime::Runtime,
    id: &str,
    name: &str,
    src: &str,
    dst: &str,
    args: &CpArgs,
) -> CliResult<()> {
    let options = PutOptions { archive: args.archive, ..PutOptions::default() };
    if src == "-" {
        // A tar stream goes into an existing folder as it is, as with docker.
        let info = runtime.copy_stat(id, dst, true)?;
        if !info.is_dir {
            return Err(CliError::msg(format!("destination {name}:{dst} must be a directory")));
        }
        runtime.copy_in(id, dst, &options, |w| io::copy(&mut io::stdin().lock(), w).map(drop))?;
        return Ok(());
    }
    let meta = if args.follow_link { fs::metadata(src) } else { fs::symlink_metadata(src) }
        .map_err(|e| CliError::context(src, e))?;
    let st = runtime.copy_stat(id, dst, true)?;
    let land = landing(src, meta.is_dir(), dst, DestInfo { exists: st.exists, is_dir: st.is_dir })
        .map_err(|e| CliError::context(name, e))?;
    runtime
        .copy_in(id, &land.dir, &options, |w| {
            tar_host_path(Path::new(src), &land.name, land.contents, args.follow_link, w)
        })
        .map_err(|e| CliError::context(format!("copy {src} to {name}:{dst}"), e))?;
    statusln!("Copied {src} to {name}:{dst}");
    Ok(())
}

fn copy_from(
    runtime: &crate::runtime::Runtime,
    id: &str,
    name: &str,
    src: &str,
    dst: &str,
    args: &CpArgs,
) -> CliResult<()> {
    let st = runtime.copy_stat(id, src, args.follow_link)?;
    if !st.exists {
        return Err(CliError::msg(format!("no such file or directory: {name}:{src}")));
    }
    if dst == "-" {
        let top = base_name(src).to_string();
        runtime.copy_out(id, src, &top, false, args.follow_link, |r| {
            io::copy(r, &mut io::stdout().lock()).map(drop)
        })?;
        return Ok(());
    }
    let info = match fs::metadata(dst) {
        Ok(m) => DestInfo { exists: true, is_dir: m.is_dir() },
        Err(e) if e.kind() == io::ErrorKind::NotFound => DestInfo::default(),
        Err(e) => return Err(CliError::context(dst, e)),
    };
    let land = landing(src, st.is_dir, dst, info).map_err(|e| CliError::context(name, e))?;
    let dir = Path::new(&land.dir);
    if !dir.is_dir() {
        return Err(CliError::msg(format!("destination directory {} does not exist", land.dir)));
    }
    runtime
        .copy_out(id, src, &land.name, land.contents, args.follow_link, |r| untar_host(dir, args.archive, r))
        .map_err(|e| CliError::context(format!("copy {name}:{src} to {dst}"), e))?;
    statusln!("Copied {name}:{src} to {dst}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: DestInfo = DestInfo { exists: false, is_dir: false };
    const DIR: DestInfo = DestInfo { exists: true, is_dir: true };
    const FILE: DestInfo = DestInfo { exists: true, is_dir: false };

    fn l(dir: &str, name: &str, contents: bool) -> Result<Landing, LandingError> {
        Ok(Landing { dir: dir.into(), name: name.into(), contents })
    }

    #[test]
    fn arguments_name_a_service_or_a_host_path() {
        assert_eq!(split_arg("web:/etc/x"), Some(("web", "/etc/x")));
        assert_eq!(split_arg("/abs:x"), None);
        assert_eq!(split_arg("./a:b"), None);
        assert_eq!(split_arg("a/b:c"), None);
        assert_eq!(split_arg("plain"), None);
        assert_eq!(split_arg("-"), None);
    }

    #[test]
    fn copies_land_where_docker_puts_them() {
        // Into an existing folder: under the source's name, or its contents with `/.`.
        assert_eq!(landing("/a/src", true, "/d", DIR), l("/d", "src", false));
        assert_eq!(landing("/a/src/", true, "/d", DIR), l("/d", "src", false));
        assert_eq!(landing("/a/src/.", true, "/d", DIR), l("/d", "", true));
        assert_eq!(landing("f.txt", false, "/d/", DIR), l("/d/", "f.txt", false));
        // A missing destination becomes the copy.
        assert_eq!(landing("/a/src", true, "/d/new", NONE), l("/d", "new", false));
        assert_eq!(landing("/a/src/.", true, "/d/new", NONE), l("/d", "new", false));
        assert_eq!(landing("/a/f", false, "/new", NONE), l("/", "new", false));
        assert_eq!(landing("/a/f", false, "rel", NONE), l(".", "rel", false));
        // A file over a file.
        assert_eq!(landing("/a/f", false, "/d/g", FILE), l("/d", "g", false));
        // Refusals.
        assert!(landing("/a/src", true, "/d/g", FILE).is_err());
        assert!(landing("/a/f", false, "/d/missing/", NONE).is_err());
        assert!(landing("/a/f/", false, "/d", DIR).is_err());
    }
}
