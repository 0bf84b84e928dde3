//! Copying files into and out of a container's file system, running or stopped (`berth cp`,
//! and the file syncs of `berth watch`).
//!
//! The work is done by berth re-executed as the hidden `berth copy-helper ID ...`, so that the
//! process that changes its mount namespace starts single-threaded. For a running container
//! the helper joins the container's mount namespace (`setns` on `/proc/PID/ns/mnt`), which
//! also makes the container's root its root and shows its volumes; for a stopped one it makes
//! a private mount namespace, mounts the container's overlay (image layers under its upper
//! dir) there with its volumes and binds on it, and `chroot`s into it, and the mount ends with the helper. Either way every path,
//! and every symlink met on the way, resolves inside the container's root, as docker's
//! `FollowSymlinkInScope` does: a link to `/etc` is the container's `/etc`.
//!
//! Data moves as a tar stream on the helper's stdin (into the container) or stdout (out of it),
//! which is also what `berth cp -` reads and writes.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use nix::mount::MsFlags;
use nix::sched::{CloneFlags, setns, unshare};
use serde::{Deserialize, Serialize};

use super::status::State;
use super::{Runtime, RuntimeError};
use crate::state::Dirs;

/// What a path in a container is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    /// Something is there.
    pub exists: bool,
    /// It is a directory (after following a final symlink when asked).
    pub is_dir: bool,
    /// It is a symlink (not followed).
    pub is_symlink: bool,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
}

/// Failures of a copy.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The runtime could not tell about the container.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The helper process failed; its message.
    #[error("{0}")]
    Helper(String),
    /// Starting or talking to the helper failed.
    #[error("copy helper: {0}")]
    Io(#[from] io::Error),
}

/// How files are put into a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Create the destination dir (and its parents) when missing.
    pub mkdir: bool,
    /// Keep the archive's owners (`cp -a`); otherwise files belong to root, as with docker.
    pub archive: bool,
    /// Paths under the destination to remove before unpacking (a watch sync's deletions).
    pub remove: Vec<PathBuf>,
}

impl Runtime {
    fn copy_helper(&self, id: &str) -> Command {
        let mut cmd = Command::new(self.exe.as_path());
        cmd.arg("--root").arg(&self.dirs.root).arg("--run").arg(&self.dirs.run).arg("copy-helper").arg(id);
        cmd
    }

    /// What `path` (absolute, inside the container) is; a final symlink is followed when
    /// `follow`.
    pub fn copy_stat(&self, id: &str, path: &str, follow: bool) -> Result<PathStat, CopyError> {
        let mut cmd = self.copy_helper(id);
        cmd.arg("stat").arg(path);
        if follow {
            cmd.arg("--follow");
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(helper_error(&out.stderr));
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| CopyError::Helper(format!("copy helper answered: {e}")))
    }

    /// Streams `src` (inside the container) as a tar archive to `read`: its top entry is named
    /// `name`, or, with `contents`, the dir's entries are at the archive's top (`SRC/.`).
    pub fn copy_out(
        &self,
        id: &str,
        src: &str,
        name: &str,
        contents: bool,
        follow: bool,
        read: impl FnOnce(&mut dyn Read) -> io::Result<()>,
    ) -> Result<(), CopyError> {
        let mut cmd = self.copy_helper(id);
        cmd.arg("get").arg(src).arg("--name").arg(name);
        if contents {
            cmd.arg("--contents");
        }
        if follow {
            cmd.arg("--follow");
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let mut stdout = child.stdout.take().ok_or_else(|| io::Error::other("no stdout"))?;
        let result = read(&mut stdout);
        // Drain what the reader left, so that the helper is not stuck on a full pipe.
        let _ = io::copy(&mut stdout, &mut io::sink());
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(helper_error(&out.stderr));
        }
        Ok(result?)
    }

    /// Unpacks the tar archive that `write` produces into `dest` (an absolute dir inside the
    /// container).
    pub fn copy_in(
        &self,
        id: &str,
        dest: &str,
        options: &PutOptions,
        write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> Result<(), CopyError> {
        let mut cmd = self.copy_helper(id);
        cmd.arg("put").arg(dest);
        if options.mkdir {
            cmd.arg("--mkdir");
        }
        if options.archive {
            cmd.arg("--archive");
        }
        for r in &options.remove {
            cmd.arg("--remove").arg(r);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let mut stdin = child.stdin.take().ok_or_else(|| io::Error::other("no stdin"))?;
        let result = write(&mut stdin);
        drop(stdin);
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(helper_error(&out.stderr));
        }
        Ok(result?)
    }

    /// The body of `berth copy-helper`: moves this (single-threaded) process into container
    /// `id`'s file system, the running container's mount namespace or a private mount of a
    /// stopped one's overlay.
    pub fn enter_filesystem(&self, id: &str) -> Result<(), CopyError> {
        let spec = self.spec(id)?;
        let st = self.status(id)?;
        // The joining process must not be dumpable (CVE-2019-5736), as for exec.
        let _ = nix::sys::prctl::set_dumpable(false);
        if st.state == State::Running && st.pid > 0 {
            let ns = fs::File::open(format!("/proc/{}/ns/mnt", st.pid))
                .map_err(|e| CopyError::Helper(format!("container {} is gone: {e}", spec.name)))?;
            setns(&ns, CloneFlags::CLONE_NEWNS)
                .map_err(|e| CopyError::Helper(format!("join the mount namespace of {}: {e}", spec.name)))?;
            // setns resets root and cwd to the namespace's root, the container's after its
            // pivot_root; say so explicitly all the same.
            std::env::set_current_dir("/")?;
            return Ok(());
        }
        mount_stopped(&self.dirs, id, &spec.rootfs.lower_dirs, &spec.mounts)
            .map_err(|e| CopyError::Helper(format!("mount the file system of {}: {e}", spec.name)))
    }
}

fn helper_error(stderr: &[u8]) -> CopyError {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("copy helper failed");
    CopyError::Helper(line.strip_prefix("berth: ").unwrap_or(line).to_string())
}

/// Mounts a stopped container's overlay in a mount namespace of this process's own, with its
/// volumes and binds on it as the container has them (so that a copy under a volume's mount
/// point lands in the volume, as docker's does), and makes it the root. A tmpfs is left out
/// on purpose, as docker's view of a container for `cp` leaves it out (moby's `setupMounts`
/// skips tmpfs mount points): the container's would be a new, empty one at its next start, so
/// a copy to a path under a tmpfs mount point lands in the container's own layer beneath it,
/// where it lasts, hidden by the tmpfs while the container runs (tests/cp.rs).
fn mount_stopped(
    dirs: &Dirs,
    id: &str,
    lowers: &[PathBuf],
    mounts: &[super::spec::MountSpec],
) -> io::Result<()> {
    let base = dirs.container(id);
    let rootfs = super::rootfs::RootfsDirs {
        rootfs: dirs.run.clone(),
        upper: base.join("upper"),
        work: base.join("work"),
        empty: base.join("empty"),
    };
    for d in [&rootfs.upper, &rootfs.work] {
        fs::create_dir_all(d)?;
    }
    if lowers.is_empty() {
        fs::create_dir_all(&rootfs.empty)?;
    }
    unshare(CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
    // A work dir the container used is marked volatile; this mount is not volatile (a copy
    // into a stopped container should last), so the mark goes, as the shim removes it too.
    let _ = fs::remove_dir_all(rootfs.work.join("work/incompat/volatile"));
    let options = super::rootfs::overlay_options(&rootfs, lowers);
    // The mount point only needs to exist: the run dir, hidden from this process alone.
    nix::mount::mount(
        Some("overlay"),
        &rootfs.rootfs,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )?;
    for m in mounts.iter().filter(|m| matches!(m.kind, super::spec::MountKind::Bind { .. })) {
        super::rootfs::mount_one(&super::syscall::Linux, &rootfs.rootfs, m)
            .map_err(|e| io::Error::other(format!("volume at {}: {e}", m.target)))?;
    }
    nix::unistd::chroot(&rootfs.rootfs)?;
    std::env::set_current_dir("/")?;
    Ok(())
}

/// `stat` in the helper, after [`Runtime::enter_filesystem`].
pub fn helper_stat(path: &Path, follow: bool) -> io::Result<PathStat> {
    let meta = if follow { fs::metadata(path) } else { fs::symlink_metadata(path) };
    match meta {
        Ok(m) => Ok(PathStat {
            exists: true,
            is_dir: m.is_dir()
                || (!follow && m.file_type().is_symlink() && fs::metadata(path).is_ok_and(|t| t.is_dir())),
            is_symlink: m.file_type().is_symlink(),
            mode: m.permissions().mode() & 0o7777,
            size: m.size(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PathStat::default()),
        Err(e) => Err(e),
    }
}

/// `get` in the helper: writes `src` as a tar archive to `out` (see [`Runtime::copy_out`]).
pub fn helper_get(src: &Path, name: &str, contents: bool, follow: bool, out: impl Write) -> io::Result<()> {
    let meta =
        fs::symlink_metadata(src).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
    let src =
        if follow && meta.file_type().is_symlink() { fs::canonicalize(src)? } else { src.to_path_buf() };
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Complete);
    let meta = fs::symlink_metadata(&src)?;
    if meta.is_dir() {
        if contents {
            for entry in sorted_dir(&src)? {
                let child = src.join(&entry);
                if fs::symlink_metadata(&child)?.is_dir() {
                    tar.append_dir_all(&entry, &child)?;
                } else {
                    tar.append_path_with_name(&child, &entry)?;
                }
            }
        } else {
            tar.append_dir_all(name, &src)?;
        }
    } else {
        if contents {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", src.display()),
            ));
        }
        tar.append_path_with_name(&src, name)?;
    }
    tar.into_inner()?.flush()
}

fn sorted_dir(dir: &Path) -> io::Result<Vec<std::ffi::OsString>> {
    let mut names = fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<Vec<_>>>()?;
    names.sort();
    Ok(names)
}

/// `put` in the helper: removes `options.remove` under `dest`, then unpacks the tar archive
/// from `input` there. Modes and mtimes are kept; owners only with `archive`.
pub fn helper_put(dest: &Path, options: &PutOptions, input: impl Read) -> io::Result<()> {
    if options.mkdir {
        fs::create_dir_all(dest).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dest.display())))?;
    }
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dest.display()),
            ));
        }
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dest.display()))),
    }
    for rel in &options.remove {
        let Some(rel) = relative_inside(rel) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} leaves {}", rel.display(), dest.display()),
            ));
        };
        let path = dest.join(rel);
        let result = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("remove {}: {e}", path.display()))),
        }
    }
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(options.archive);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    archive.unpack(dest)
}

/// `rel` without `.` parts, when it is relative and never climbs out.
fn relative_inside(rel: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Writes host path `src` into a tar archive as `name` (a dir's tree under it), or a dir's
/// entries at the top when `contents`; a symlink `src` is followed when `follow`. Owners, modes
/// and mtimes go into the headers.
pub fn tar_host_path(
    src: &Path,
    name: &str,
    contents: bool,
    follow: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    helper_get(src, name, contents, follow, out)
}

/// Unpacks a tar archive into host dir `dest`: modes and mtimes kept, owners only with
/// `archive` (otherwise the files are this user's).
pub fn untar_host(dest: &Path, archive: bool, input: &mut dyn Read) -> io::Result<()> {
    helper_put(dest, &PutOptions { archive, ..PutOptions::default() }, input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_stay_under_the_destination() {
        assert_eq!(relative_inside(Path::new("a/./b")), Some(PathBuf::from("a/b")));
        assert_eq!(relative_inside(Path::new("../x")), None);
        assert_eq!(relative_inside(Path::new("/etc")), None);
        assert_eq!(relative_inside(Path::new(".")), None);
    }

    #[test]
    fn a_tree_goes_through_tar_with_modes_and_mtimes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), "hi").unwrap();
        fs::set_permissions(src.join("sub/f"), fs::Permissions::from_mode(0o741)).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let mut buf = Vec::new();
        tar_host_path(&src, "copy", false, false, &mut buf).unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        untar_host(&dest, false, &mut buf.as_slice()).unwrap();
        assert_eq!(fs::read_to_string(dest.join("copy/sub/f")).unwrap(), "hi");
        assert_eq!(fs::metadata(dest.join("copy/sub/f")).unwrap().permissions().mode() & 0o777, 0o741);
        assert_eq!(
            fs::metadata(dest.join("copy/sub/f")).unwrap().mtime(),
            fs::metadata(src.join("sub/f")).unwrap().mtime()
        );
        // The link is copied as a link, not followed.
        assert_eq!(fs::read_link(dest.join("copy/link")).unwrap(), Path::new("/etc/passwd"));

        // Contents only (`SRC/.`), then a removal.
        let mut buf = Vec::new();
        tar_host_path(&src, "ignored", true, false, &mut buf).unwrap();
        let dest2 = tmp.path().join("dest2");
        fs::create_dir(&dest2).unwrap();
        untar_host(&dest2, false, &mut buf.as_slice()).unwrap();
        assert!(dest2.join("sub/f").exists());
        let options = PutOptions { remove: vec!["sub".into()], ..PutOptions::default() };
        helper_put(&dest2, &options, io::empty()).unwrap();
        assert!(!dest2.join("sub").exists());
        assert!(
            helper_put(
                &dest2,
                &PutOptions { remove: vec!["../x".into()], ..PutOptions::default() },
                io::empty()
            )
            .is_err()
        );
    }

    #[test]
    fn stat_tells_dirs_links_and_absence() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("l")).unwrap();
        let st = helper_stat(&tmp.path().join("l"), false).unwrap();
        assert!(st.exists && st.is_symlink && st.is_dir);
        assert!(!helper_stat(&tmp.path().join("none"), false).unwrap().exists);
    }
}
