//! Layers a build makes: a directory tree (a RUN container's overlay upper dir, or a tree that
//! COPY/ADD/WORKDIR staged) becomes an uncompressed layer tar, its sha256 is the diff id, and
//! the tar is stored gzip-compressed as the blob.
//!
//! An overlay upper dir speaks overlayfs: a 0/0 character device (or a file with the
//! `*.overlay.whiteout` xattr) hides a lower file and becomes `.wh.<name>`; a dir with
//! `trusted.overlay.opaque=y` (or `user.overlay.opaque`) hides the lower dir's contents and gets
//! a `.wh..wh..opq` entry. overlayfs's own xattrs never reach the layer.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A layer tar written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerTar {
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Number of entries (0: the tree had no change).
    pub entries: usize,
}

/// A writer that hashes what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether an xattr is overlayfs's bookkeeping (never part of a layer).
fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

fn has_xattr_value(path: &Path, names: &[&str], value: Option<&[u8]>) -> bool {
    names.iter().any(|n| match xattr::get(path, n) {
        Ok(Some(v)) => value.is_none_or(|want| v == want),
        _ => false,
    })
}

/// Whether `path` (with `meta`) is an overlayfs whiteout.
fn is_whiteout(path: &Path, meta: &fs::Metadata) -> bool {
    if meta.file_type().is_char_device() && meta.rdev() == 0 {
        return true;
    }
    meta.is_file()
        && meta.len() == 0
        && has_xattr_value(path, &["trusted.overlay.whiteout", "user.overlay.whiteout"], None)
}

/// A PAX extended header record (`<len> key=value\n`, the length counting itself).
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // space, '=', newline
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

/// Appends the PAX header carrying `path`'s xattrs (overlayfs's own left out), if it has any.
fn append_xattrs<W: Write>(b: &mut tar::Builder<W>, path: &Path) -> io::Result<()> {
    let Ok(names) = xattr::list(path) else { return Ok(()) };
    let mut names: Vec<String> = names.map(|n| n.to_string_lossy().into_owned()).collect();
    names.sort();
    let mut data = Vec::new();
    for name in names.iter().filter(|n| !is_overlay_xattr(n)) {
        if let Ok(Some(value)) = xattr::get(path, name) {
            data.extend(pax_record(&format!("SCHILY.xattr.{name}"), &value));
        }
    }
    if data.is_empty() {
        return Ok(());
    }
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeader")?;
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, data.as_slice())
}

fn header_for(meta: &fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h.set_mode(meta.mode() & 0o7777);
    h
}

/// An empty regular file entry named `name` (whiteouts, as docker writes them).
fn append_marker<W: Write>(b: &mut tar::Builder<W>, name: &Path, mtime: u64) -> io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0);
    h.set_mtime(mtime);
    b.append_data(&mut h, name, io::empty())
}

struct Walk<W: Write> {
    builder: tar::Builder<W>,
    /// First name of each multiply-linked inode, to write later names as hard links.
    seen: HashMap<(u64, u64), PathBuf>,
    entries: usize,
    overlay: bool,
}

impl<W: Write> Walk<W> {
    fn dir(&mut self, dir: &Path, rel: &Path) -> io::Result<()> {
        let mut names: Vec<_> =
            fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<io::Result<_>>()?;
        // Byte order of names: the same tree always gives the same tar.
        names.sort();
        for name in names {
            self.entry(&dir.join(&name), &rel.join(&name))?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, rel: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(path)?;
        let b = &mut self.builder;
        if self.overlay && is_whiteout(path, &meta) {
            let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let marker = rel.with_file_name(format!(".wh.{name}"));
            append_marker(b, &marker, meta.mtime().max(0) as u64)?;
            self.entries += 1;
            return Ok(());
        }
        append_xattrs(b, path)?;
        let mut h = header_for(&meta);
        let ft = meta.file_type();
        if ft.is_dir() {
            h.set_size(0);
            b.append_data(&mut h, rel, io::empty())?;
            self.entries += 1;
            if self.overlay
                && has_xattr_value(path, &["trusted.overlay.opaque", "user.overlay.opaque"], Some(b"y"))
            {
                append_marker(b, &rel.join(".wh..wh..opq"), meta.mtime().max(0) as u64)?;
                self.entries += 1;
            }
            return self.dir(path, rel);
        }
        self.entries += 1;
        if meta.nlink() > 1 {
            if let Some(first) = self.seen.get(&(meta.dev(), meta.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                return b.append_link(&mut h, rel, first);
            }
            self.seen.insert((meta.dev(), meta.ino()), rel.to_path_buf());
        }
        if ft.is_symlink() {
            let target = fs::read_link(path)?;
            h.set_size(0);
            b.append_link(&mut h, rel, target)
        } else if ft.is_file() {
            let f = fs::File::open(path)?;
            b.append_data(&mut h, rel, f)
        } else if ft.is_char_device() || ft.is_block_device() {
            let dev = meta.rdev();
            h.set_device_major(libc::major(dev))?;
            h.set_device_minor(libc::minor(dev))?;
            h.set_size(0);
            b.append_data(&mut h, rel, io::empty())
        } else if ft.is_fifo() {
            h.set_size(0);
            b.append_data(&mut h, rel, io::empty())
        } else {
            // Sockets cannot be archived; docker leaves them out too.
            self.entries -= 1;
            Ok(())
        }
    }
}

/// Writes the tree at `root` (its contents; `root` itself is not an entry) as a tar to `out`.
/// With `overlay`, overlayfs whiteouts and opaque dirs become docker's `.wh.` markers.
pub fn write_tar(root: &Path, out: impl Write, overlay: bool) -> io::Result<LayerTar> {
    let hashing = HashingWriter { inner: out, hasher: Sha256::new() };
    let mut builder = tar::Builder::new(hashing);
    builder.follow_symlinks(false);
    let mut walk = Walk { builder, seen: HashMap::new(), entries: 0, overlay };
    walk.dir(root, Path::new(""))?;
    let entries = walk.entries;
    let mut hashing = walk.builder.into_inner()?;
    hashing.flush()?;
    Ok(LayerTar { diff_id: format!("sha256:{}", hex::encode(hashing.hasher.finalize())), entries })
}

/// Gzip-compresses `tar` into `gz` (no name or time in the gzip header, so that the same tar
/// gives the same blob).
pub fn gzip_file(tar: &Path, gz: &Path) -> io::Result<()> {
    let mut input = fs::File::open(tar)?;
    let out = fs::File::create(gz)?;
    let mut enc =
        flate2::GzBuilder::new().mtime(0).write(io::BufWriter::new(out), flate2::Compression::fast());
    io::copy(&mut input, &mut enc)?;
    enc.finish()?.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    type Entry = (String, tar::EntryType, u32, Vec<(String, Vec<u8>)>);

    fn entries(tar_bytes: &[u8]) -> Vec<Entry> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let kind = e.header().entry_type();
            let mode = e.header().mode().unwrap();
            let mut xattrs = Vec::new();
            if let Some(ext) = e.pax_extensions().unwrap() {
                for x in ext {
                    let x = x.unwrap();
                    xattrs.push((x.key().unwrap().to_string(), x.value_bytes().to_vec()));
                }
            }
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            out.push((path, kind, mode, xattrs));
        }
        out
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let r = pax_record("k", b"v");
        assert_eq!(r, b"6 k=v\n");
        let long = "x".repeat(95);
        let r = pax_record(&long, b"");
        assert_eq!(r.len().to_string(), String::from_utf8_lossy(&r).split(' ').next().unwrap());
    }

    #[test]
    fn upper_dir_whiteouts_opaque_dirs_links_and_xattrs() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let up = dir.path();
        fs::create_dir_all(up.join("etc/opaque")).unwrap();
        fs::write(up.join("etc/opaque/new"), b"n").unwrap();
        xattr::set(up.join("etc/opaque"), "trusted.overlay.opaque", b"y").unwrap();
        xattr::set(up.join("etc"), "trusted.overlay.origin", b"zz").unwrap();
        nix::sys::stat::mknod(
            &up.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        fs::write(up.join("a"), b"hello").unwrap();
        fs::hard_link(up.join("a"), up.join("b")).unwrap();
        std::os::unix::fs::symlink("a", up.join("c")).unwrap();
        xattr::set(up.join("a"), "user.note", b"kept").unwrap();
        nix::sys::stat::mknod(
            &up.join("null"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            libc::makedev(1, 3),
        )
        .unwrap();
        let mut out = Vec::new();
        let t = write_tar(up, &mut out, true).unwrap();
        let got = entries(&out);
        let names: Vec<&str> = got.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "a",
                "b",
                "c",
                "etc",
                "etc/.wh.gone",
                "etc/opaque",
                "etc/opaque/.wh..wh..opq",
                "etc/opaque/new",
                "null"
            ]
        );
        assert_eq!(t.entries, 9);
        assert_eq!(got[1].1, tar::EntryType::Link);
        assert_eq!(got[2].1, tar::EntryType::Symlink);
        assert_eq!(got[0].3, vec![("SCHILY.xattr.user.note".to_string(), b"kept".to_vec())]);
        assert!(got[3].3.is_empty(), "overlay xattrs are dropped");
        assert_eq!(got[8].1, tar::EntryType::Char);
        // The same tree gives the same tar.
        let mut again = Vec::new();
        assert_eq!(write_tar(up, &mut again, true).unwrap().diff_id, t.diff_id);
        assert_eq!(t.diff_id, crate::image::digest_of(&out));
        // Not an overlay tree: a 0/0 device stays a device.
        let mut plain = Vec::new();
        write_tar(up, &mut plain, false).unwrap();
        assert!(entries(&plain).iter().any(|e| e.0 == "etc/gone"));
    }

    #[test]
    fn empty_tree_has_no_entries() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let mut out = Vec::new();
        assert_eq!(write_tar(dir.path(), &mut out, true).unwrap().entries, 0);
    }
}
