//! docker's copy-up: a new, empty volume mounted over a path the image has content at gets
//! a copy of that content. The image is a stack of unpacked layers with overlayfs whiteouts
//! (0:0 character devices) and opaque directories (`trusted.overlay.opaque`), so the copy is
//! made from their merged view, as the container would see it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

use super::{VolumeError, io_err};

fn is_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    xattr::get(dir, "trusted.overlay.opaque").ok().flatten().is_some_and(|v| v == b"y")
}

/// The path inside the image, relative, refusing `..`.
fn relative(target: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(target).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            _ => return None,
        }
    }
    Some(out)
}

/// Copies what the image (`layers`, bottom first) has at `target` into `dest` (an existing,
/// empty dir). Nothing is copied when the image has no directory there. Returns whether
/// anything was.
pub fn copy_up(layers: &[PathBuf], target: &str, dest: &Path) -> Result<bool, VolumeError> {
    let Some(rel) = relative(target) else { return Ok(false) };
    let all: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    let visible = showing_dir(&all, &rel);
    if visible.is_empty() {
        return Ok(false);
    }
    let top = visible[visible.len() - 1].join(&rel);
    copy_owner_and_mode(&top, dest)?;
    copy_dir(&visible, &rel, dest)?;
    Ok(true)
}

/// The layers (bottom first) whose directory `rel` shows in the merged view: from the top
/// down to the first that hides what is below (an opaque dir, or the path as a non-directory).
fn showing_dir<'a>(layers: &[&'a Path], rel: &Path) -> Vec<&'a Path> {
    let mut visible: Vec<&Path> = Vec::new();
    for layer in layers.iter().rev() {
        let path = layer.join(rel);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                visible.push(layer);
                if is_opaque(&path) {
                    break;
                }
            }
            Ok(_) => break,
            Err(_) => {}
        }
    }
    visible.reverse();
    visible
}

/// Copies the merged directory `rel` of `layers` (bottom first, all showing it) into `dest`.
fn copy_dir(layers: &[&Path], rel: &Path, dest: &Path) -> Result<(), VolumeError> {
    // Name -> index of the top-most layer that has it (or None: whited out).
    let mut entries: BTreeMap<OsString, Option<usize>> = BTreeMap::new();
    for (i, layer) in layers.iter().enumerate() {
        let dir = layer.join(rel);
        if is_opaque(&dir) {
            entries.clear();
        }
        let Ok(read) = fs::read_dir(&dir) else { continue };
        for e in read.flatten() {
            let meta = fs::symlink_metadata(e.path()).map_err(io_err(&e.path()))?;
            entries.insert(e.file_name(), if is_whiteout(&meta) { None } else { Some(i) });
        }
    }
    for (name, at) in entries {
        let Some(i) = at else { continue };
        let src = layers[i].join(rel).join(&name);
        let out = dest.join(&name);
        let meta = fs::symlink_metadata(&src).map_err(io_err(&src))?;
        if meta.is_dir() {
            fs::create_dir(&out).map_err(io_err(&out))?;
            copy_owner_and_mode(&src, &out)?;
            let child = rel.join(&name);
            copy_dir(&showing_dir(&layers[..=i], &child), &child, &out)?;
        } else if meta.file_type().is_symlink() {
            let link = fs::read_link(&src).map_err(io_err(&src))?;
            symlink(&link, &out).map_err(io_err(&out))?;
            let _ = std::os::unix::fs::lchown(&out, Some(meta.uid()), Some(meta.gid()));
        } else if meta.is_file() {
            fs::copy(&src, &out).map_err(io_err(&out))?;
            copy_owner_and_mode(&src, &out)?;
        } else {
            // Devices, fifos and sockets: made anew with the same type and numbers.
            let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            let perm = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777);
            nix::sys::stat::mknod(&out, kind, perm, meta.rdev())
                .map_err(|e| VolumeError::Io { path: out.display().to_string(), source: e.into() })?;
            copy_owner_and_mode(&src, &out)?;
        }
    }
    Ok(())
}

fn copy_owner_and_mode(src: &Path, dest: &Path) -> Result<(), VolumeError> {
    let meta = fs::symlink_metadata(src).map_err(io_err(src))?;
    std::os::unix::fs::chown(dest, Some(meta.uid()), Some(meta.gid())).map_err(io_err(dest))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(meta.mode() & 0o7777)).map_err(io_err(dest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_view_with_whiteouts_and_opaque_dirs() {
        let tmp = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let (l1, l2, dest) = (tmp.path().join("l1"), tmp.path().join("l2"), tmp.path().join("dest"));
        for d in [l1.join("site/sub"), l1.join("site/gone"), l1.join("site/wiped"), l2.join("site/wiped")] {
            fs::create_dir_all(d).unwrap();
        }
        fs::create_dir_all(&dest).unwrap();
        fs::write(l1.join("site/a"), "old a").unwrap();
        fs::write(l1.join("site/sub/b"), "b").unwrap();
        fs::write(l1.join("site/wiped/old"), "x").unwrap();
        fs::write(l2.join("site/a"), "new a").unwrap();
        fs::write(l2.join("site/wiped/new"), "y").unwrap();
        fs::set_permissions(l2.join("site/a"), fs::Permissions::from_mode(0o640)).unwrap();
        symlink("a", l2.join("site/link")).unwrap();
        let whiteout = |p: PathBuf| {
            nix::sys::stat::mknod(&p, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
                .unwrap()
        };
        whiteout(l2.join("site/gone"));
        xattr::set(l2.join("site/wiped"), "trusted.overlay.opaque", b"y").unwrap();

        assert!(copy_up(&[l1.clone(), l2.clone()], "/site", &dest).unwrap());
        assert_eq!(fs::read_to_string(dest.join("a")).unwrap(), "new a");
        assert_eq!(fs::metadata(dest.join("a")).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read_to_string(dest.join("sub/b")).unwrap(), "b");
        assert_eq!(fs::read_link(dest.join("link")).unwrap(), Path::new("a"));
        assert!(!dest.join("gone").exists());
        assert!(dest.join("wiped/new").exists() && !dest.join("wiped/old").exists());
        assert!(!copy_up(&[l1, l2], "/nothing", &dest).unwrap());
    }
}
