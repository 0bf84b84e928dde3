//! Layer unpacking: a layer tar (plain, gzip or zstd) becomes a dir usable as an overlayfs
//! lower layer. Modes, owners, times, hard links, symlinks, device nodes and xattrs are kept;
//! `.wh.NAME` becomes a 0:0 character device (overlayfs's whiteout) and `.wh..wh..opq` the
//! opaque xattr on its dir. Entries that would land outside the layer are refused.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

/// A layer that cannot be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry's path leaves the layer (`..`), or goes through a symlink.
    #[error("entry {entry:?} escapes the layer: {why}")]
    Escape {
        /// The entry's path as the archive gives it.
        entry: String,
        /// How.
        why: String,
    },
    /// Reading or writing failed.
    #[error("entry {entry:?}: {source}")]
    Io {
        /// The entry.
        entry: String,
        /// The error.
        source: io::Error,
    },
    /// The tar stream itself is broken.
    #[error("not a valid tar stream: {0}")]
    Tar(io::Error),
}

/// How a blob is compressed, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer so compressed.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Looks at the first bytes of `reader` without consuming them.
pub fn detect(reader: &mut impl BufRead) -> io::Result<Compression> {
    let head = reader.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// `reader` decompressed as its magic bytes say.
pub fn decompressed<'a, R: Read + 'a>(reader: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut buffered = BufReader::new(reader);
    let kind = detect(&mut buffered)?;
    let out: Box<dyn Read> = match kind {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    };
    Ok((kind, out))
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// Reads what is left and returns `sha256:<hex>` of everything read.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The relative path of an entry, refused when it climbs out with `..`.
fn clean_relative(entry: &str, path: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(UnpackError::Escape { entry: entry.to_string(), why: "it contains '..'".into() });
            }
        }
    }
    Ok(out)
}

/// Refuses a path whose existing parent components include a symlink: writing there would
/// follow it, possibly out of the layer. `safe` holds parents already seen to be real
/// directories, so that each is checked once per layer, not once per entry.
fn check_parents(
    root: &Path,
    entry: &str,
    rel: &Path,
    safe: &mut HashSet<PathBuf>,
) -> Result<(), UnpackError> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    if parent.as_os_str().is_empty() || safe.contains(parent) {
        return Ok(());
    }
    let mut prefix = PathBuf::new();
    for c in parent.components() {
        prefix.push(c);
        if safe.contains(&prefix) {
            continue;
        }
        match fs::symlink_metadata(root.join(&prefix)) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Escape {
                    entry: entry.to_string(),
                    why: format!("its parent {} is a symlink", prefix.display()),
                });
            }
            Ok(m) if m.is_dir() => {
                safe.insert(prefix.clone());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Forgets what `safe` knew of `rel` and below (it is being replaced or whited out).
fn forget(safe: &mut HashSet<PathBuf>, rel: &Path) {
    if safe.contains(rel) {
        safe.retain(|p| !p.starts_with(rel));
    }
}

fn io_err(entry: &str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { entry: entry.to_string(), source }
}

/// The `trusted.overlay.*` xattrs that `entry`'s PAX headers set.
fn overlay_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<String>> {
    let Some(extensions) = entry.pax_extensions()? else { return Ok(Vec::new()) };
    let mut keys = Vec::new();
    for extension in extensions {
        let extension = extension?;
        if let Ok(key) = extension.key()
            && let Some(xattr) = key.strip_prefix("SCHILY.xattr.")
            && xattr.starts_with("trusted.overlay.")
        {
            keys.push(xattr.to_string());
        }
    }
    Ok(keys)
}

/// Unpacks the (decompressed) layer tar `reader` into `dest`, which must exist and be empty.
/// Returns the layer's diff id (`sha256:` of the tar stream).
pub fn unpack(reader: impl Read, dest: &Path) -> Result<String, UnpackError> {
    let mut hashing = HashingReader::new(reader);
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_unpack_xattrs(true);
        archive.set_preserve_mtime(true);
        archive.set_overwrite(true);
        let mut safe: HashSet<PathBuf> = HashSet::new();
        for entry in archive.entries().map_err(UnpackError::Tar)? {
            let mut entry = entry.map_err(UnpackError::Tar)?;
            let raw_path = entry.path().map_err(UnpackError::Tar)?.into_owned();
            let name = raw_path.display().to_string();
            let rel = clean_relative(&name, &raw_path)?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            check_parents(dest, &name, &rel, &mut safe)?;
            let kind = entry.header().entry_type();
            if !kind.is_dir() {
                forget(&mut safe, &rel);
            }
            let file_name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
            if file_name == ".wh..wh..opq" {
                fs::create_dir_all(&parent).map_err(io_err(&name))?;
                xattr::set(&parent, "trusted.overlay.opaque", b"y").map_err(io_err(&name))?;
                continue;
            }
            if let Some(hidden) = file_name.strip_prefix(".wh.") {
                if hidden.is_empty() || hidden == "." || hidden == ".." {
                    return Err(UnpackError::Escape {
                        entry: name,
                        why: "a whiteout must name a file in its dir".into(),
                    });
                }
                fs::create_dir_all(&parent).map_err(io_err(&name))?;
                forget(&mut safe, &rel.with_file_name(hidden));
                let target = parent.join(hidden);
                let _ = fs::remove_file(&target);
                nix::sys::stat::mknod(
                    &target,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    nix::sys::stat::makedev(0, 0),
                )
                .map_err(|e| io_err(&name)(e.into()))?;
                continue;
            }
            let path = dest.join(&rel);
            if !parent.is_dir() {
                // The existing part of the parent was checked above: no symlink to follow.
                fs::create_dir_all(&parent).map_err(io_err(&name))?;
            }
            if kind == tar::EntryType::Link {
                // Hard links are made here, relative to the layer (tar's own code would read the
                // target relative to the working directory); a hard link to a symlink is legal
                // in tar and links the symlink itself.
                let link = entry.link_name().map_err(UnpackError::Tar)?.unwrap_or_default().into_owned();
                let link_rel = clean_relative(&name, &link)?;
                check_parents(dest, &name, &link_rel, &mut safe)?;
                let target = dest.join(&link_rel);
                if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_dir()) {
                    let _ = fs::remove_file(&path);
                }
                fs::hard_link(&target, &path).map_err(io_err(&name))?;
                continue;
            }
            if kind.is_dir() && fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
                // tar would take the symlink's target as the folder and change its mode.
                return Err(UnpackError::Escape { entry: name, why: "it is a symlink in the layer".into() });
            }
            if matches!(kind, tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) {
                // The tar crate writes these as empty regular files: made here as what they are.
                make_special(&entry, kind, &path)
                    .map_err(|e| UnpackError::Io { entry: name.clone(), source: e })?;
                continue;
            }
            let overlay_xattrs = overlay_xattrs(&mut entry).map_err(UnpackError::Tar)?;
            // `unpack` (not `unpack_in`): the path is already made safe above, and `unpack_in`
            // would resolve every parent with readlink again for each entry (a hundred thousand
            // system calls for a Debian base layer).
            entry.unpack(&path).map_err(|e| UnpackError::Io { entry: name.clone(), source: e })?;
            // overlayfs reads `trusted.overlay.*` on its layers (opaque dirs, redirects,
            // metacopy); only this unpacker may set them, never the layer's content.
            for key in overlay_xattrs {
                let _ = xattr::remove(&path, key);
            }
        }
    }
    hashing.finish().map_err(UnpackError::Tar)
}

/// A device node or FIFO entry at `path`, with its mode, owner and mtime.
fn make_special<R: Read>(entry: &tar::Entry<'_, R>, kind: tar::EntryType, path: &Path) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let h = entry.header();
    let flag = match kind {
        tar::EntryType::Char => SFlag::S_IFCHR,
        tar::EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    let dev = match kind {
        tar::EntryType::Fifo => 0,
        _ => makedev(u64::from(h.device_major()?.unwrap_or(0)), u64::from(h.device_minor()?.unwrap_or(0))),
    };
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        fs::remove_file(path)?;
    }
    let mode = h.mode()? & 0o7777;
    mknod(path, flag, Mode::from_bits_truncate(mode), dev).map_err(io::Error::from)?;
    // An empty owner field is 0, as GNU tar reads it.
    std::os::unix::fs::lchown(path, Some(h.uid().unwrap_or(0) as u32), Some(h.gid().unwrap_or(0) as u32))?;
    // mknod applies the umask; the layer's mode is what counts.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    let mtime = nix::sys::time::TimeSpec::new(h.mtime().unwrap_or(0) as i64, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &mtime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            // set_path refuses '..'; write the raw name so that the escape attempt is real.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn escapes_are_refused() {
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let up = tar_with(&[("../evil", Regular, b"x", None)]);
        assert!(matches!(unpack(&up[..], dir.path()), Err(UnpackError::Escape { .. })));
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let through = tar_with(&[("link", Symlink, b"", Some("/etc")), ("link/passwd", Regular, b"x", None)]);
        let err = unpack(&through[..], dir.path()).unwrap_err();
        assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    }

    /// One PAX record, `LEN KEY=VALUE\n`, LEN counting itself.
    fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}")
    }

    #[test]
    fn whiteouts_of_dot_and_dot_dot_are_refused() {
        use tar::EntryType::*;
        for bad in ["d/.wh..", "d/.wh...", "d/.wh."] {
            let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
            let t = tar_with(&[("d", Directory, b"", None), (bad, Regular, b"", None)]);
            let err = unpack(&t[..], dir.path()).unwrap_err();
            assert!(matches!(err, UnpackError::Escape { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn overlay_xattrs_from_the_layer_are_dropped() {
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let pax = pax_record("SCHILY.xattr.trusted.overlay.redirect", "/elsewhere")
            + &pax_record("SCHILY.xattr.user.kept", "yes");
        let t = tar_with(&[("d/PaxHeaders/f", XHeader, pax.as_bytes(), None), ("f", Regular, b"x", None)]);
        unpack(&t[..], dir.path()).unwrap();
        let f = dir.path().join("f");
        assert_eq!(xattr::get(&f, "trusted.overlay.redirect").unwrap(), None);
        // user.* xattrs need a file system that has them (tmpfs before 6.6 does not).
        if xattr::set(dir.path(), "user.probe", b"1").is_ok() {
            assert_eq!(xattr::get(&f, "user.kept").unwrap(), Some(b"yes".to_vec()));
        }
    }

    #[test]
    fn hard_links_and_whiteouts() {
        use std::os::unix::fs::MetadataExt;
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let t = tar_with(&[
            ("d", Directory, b"", None),
            ("d/a", Regular, b"hello", None),
            ("d/b", Link, b"", Some("d/a")),
            ("d/.wh.gone", Regular, b"", None),
            ("o/.wh..wh..opq", Regular, b"", None),
        ]);
        let diff_id = unpack(&t[..], dir.path()).unwrap();
        assert_eq!(diff_id, format!("sha256:{}", hex::encode(Sha256::digest(&t))));
        let (a, b) =
            (fs::metadata(dir.path().join("d/a")).unwrap(), fs::metadata(dir.path().join("d/b")).unwrap());
        assert_eq!(a.ino(), b.ino());
        let gone = fs::symlink_metadata(dir.path().join("d/gone")).unwrap();
        assert_eq!(gone.rdev(), 0);
        assert_eq!(xattr::get(dir.path().join("o"), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()));
    }

    #[test]
    fn fifos_and_devices_stay_what_they_are() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        // Making a device node needs CAP_MKNOD: only tried as root.
        let root = nix::unistd::geteuid().is_root();
        let mut entries = vec![("pipe", tar::EntryType::Fifo, 0, 0)];
        if root {
            entries.push(("null", tar::EntryType::Char, 1, 3));
        }
        for (name, kind, major, minor) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o640);
            h.set_size(0);
            h.set_mtime(1000);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            b.append_data(&mut h, name, io::empty()).unwrap();
        }
        let t = b.into_inner().unwrap();
        unpack(&t[..], dir.path()).unwrap();
        let pipe = fs::symlink_metadata(dir.path().join("pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
        assert_eq!((pipe.mode() & 0o7777, pipe.mtime()), (0o640, 1000));
        if root {
            let null = fs::symlink_metadata(dir.path().join("null")).unwrap();
            assert!(null.file_type().is_char_device());
            assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        }
    }
}
