//! Whether an unpacked layer (`layers/<chain id>`, an overlay lower dir) is whole, told cheaply
//! enough for every container start: its completion marker `layers/<chain id>.done`, written
//! atomically just before the unpacked folder is renamed into place, names the diff id and the
//! folder's shape (how many entries, how many bytes of regular files). Checking walks the
//! folder with `lstat` only (no file is read, nothing is hashed): a folder cut short, emptied,
//! filled with other files, or a file cut or grown, changes the shape; a lost or damaged
//! marker is a damaged layer too. What the check cannot see: a file overwritten in place with
//! as many bytes. The blob a layer is unpacked from again is verified as it is read (its
//! digest and the diff id).

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Digest;

/// The suffix of a layer's completion marker, beside its folder.
pub(crate) const MARKER_SUFFIX: &str = ".done";

/// How many entries, and bytes of regular files, an unpacked layer has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Every entry under the folder (files, dirs, links, whiteouts), the folder not counted.
    pub entries: u64,
    /// The sum of the regular files' sizes (a hard link counted at each of its names).
    pub bytes: u64,
}

/// The shape of `dir`, symlinks not followed.
pub(crate) fn shape_of(dir: &Path) -> io::Result<Shape> {
    let mut shape = Shape { entries: 0, bytes: 0 };
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            // The type as the dir listing tells it (an lstat only where the file system does
            // not): only regular files are lstat'ed, for their size. A pull walks every
            // entry of a layer once after unpacking it.
            let kind = entry.file_type()?;
            shape.entries += 1;
            if kind.is_dir() {
                todo.push(entry.path());
            } else if kind.is_file() {
                // lstat: `DirEntry::metadata` does not follow links.
                shape.bytes += entry.metadata()?.len();
            }
        }
    }
    Ok(shape)
}

/// The marker of the layer folder `layer` (`<layer>.done`).
pub(crate) fn marker_path(layer: &Path) -> PathBuf {
    let mut name = layer.as_os_str().to_owned();
    name.push(MARKER_SUFFIX);
    PathBuf::from(name)
}

/// A marker's text: `<diff id> <entries> <bytes>` and a newline.
pub(crate) fn marker_text(diff_id: &Digest, shape: Shape) -> String {
    format!("{diff_id} {} {}\n", shape.entries, shape.bytes)
}

/// A marker's diff id and shape; `None` for anything else (cut short, emptied, overwritten).
pub(crate) fn parse_marker(text: &[u8]) -> Option<(Digest, Shape)> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('\n')?;
    let mut words = text.split(' ');
    let diff = Digest::parse(words.next()?).ok()?;
    let entries = words.next()?.parse().ok()?;
    let bytes = words.next()?.parse().ok()?;
    words.next().is_none().then_some((diff, Shape { entries, bytes }))
}

/// What the check of an unpacked layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LayerState {
    /// The folder is there, its marker names the diff id, and its shape is the marker's.
    Whole,
    /// Neither the folder nor anything at its path.
    Missing,
    /// The folder's marker is missing (a layer unpacked by a berth without markers, or a kill
    /// between the rename and the marker): the folder may be whole or not.
    Unmarked,
    /// Something is wrong with it; what.
    Damaged(String),
}

/// Layers found whole by this process: a command that resolves an image for each of a dozen
/// services walks each layer once. Forgotten when a layer is installed.
static WHOLE: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Forgets that `layer` was found whole (it is being replaced).
pub(crate) fn forget(layer: &Path) {
    if let Ok(mut whole) = WHOLE.lock() {
        whole.remove(layer);
    }
}

/// Checks the unpacked layer `layer` against its marker and the diff id `diff_id`.
pub(crate) fn check(layer: &Path, diff_id: &Digest) -> LayerState {
    if WHOLE.lock().is_ok_and(|whole| whole.contains(layer)) {
        return LayerState::Whole;
    }
    let state = check_uncached(layer, diff_id);
    if state == LayerState::Whole
        && let Ok(mut whole) = WHOLE.lock()
    {
        whole.insert(layer.to_path_buf());
    }
    state
}

fn check_uncached(layer: &Path, diff_id: &Digest) -> LayerState {
    match fs::symlink_metadata(layer) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return LayerState::Missing,
        Err(e) => return LayerState::Damaged(e.to_string()),
        Ok(m) if !m.is_dir() => return LayerState::Damaged("it is not a folder".into()),
        Ok(_) => {}
    }
    let marker = marker_path(layer);
    let text = match fs::read(&marker) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return LayerState::Unmarked,
        Err(e) => return LayerState::Damaged(format!("{}: {e}", marker.display())),
        Ok(t) => t,
    };
    let Some((marked, want)) = parse_marker(&text) else {
        return LayerState::Damaged(format!("its completion marker {} is damaged", marker.display()));
    };
    if &marked != diff_id {
        return LayerState::Damaged(format!(
            "its completion marker {} names diff id {marked}, the image {diff_id}",
            marker.display()
        ));
    }
    match shape_of(layer) {
        Err(e) => LayerState::Damaged(e.to_string()),
        Ok(have) if have != want => LayerState::Damaged(format!(
            "it has {} entries and {} bytes of files, unpacked it had {} and {}",
            have.entries, have.bytes, want.entries, want.bytes
        )),
        Ok(_) => LayerState::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer() -> (tempfile::TempDir, PathBuf, Digest) {
        let dir = tempfile::tempdir().unwrap();
        let layer = dir.path().join("l");
        fs::create_dir_all(layer.join("etc/sub")).unwrap();
        fs::write(layer.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(layer.join("etc/sub/a"), vec![7u8; 4000]).unwrap();
        std::os::unix::fs::symlink("/nowhere", layer.join("link")).unwrap();
        let diff = Digest::of(b"layer");
        let shape = shape_of(&layer).unwrap();
        assert_eq!(shape, Shape { entries: 5, bytes: 26 + 4000 });
        fs::write(marker_path(&layer), marker_text(&diff, shape)).unwrap();
        (dir, layer, diff)
    }

    #[test]
    fn a_whole_layer_is_whole_and_each_damage_is_told() {
        let (_dir, layer, diff) = layer();
        assert_eq!(check_uncached(&layer, &diff), LayerState::Whole);
        assert!(matches!(check_uncached(&layer, &Digest::of(b"other")), LayerState::Damaged(m) if m.contains("names diff id")));
        // Cut short: a file cut in half, or half the entries gone.
        let a = layer.join("etc/sub/a");
        fs::write(&a, vec![7u8; 2000]).unwrap();
        assert!(matches!(check_uncached(&layer, &diff), LayerState::Damaged(m) if m.contains("2026 bytes")));
        fs::write(&a, vec![7u8; 4000]).unwrap();
        fs::remove_file(layer.join("link")).unwrap();
        assert!(matches!(check_uncached(&layer, &diff), LayerState::Damaged(_)));
        std::os::unix::fs::symlink("/nowhere", layer.join("link")).unwrap();
        assert_eq!(check_uncached(&layer, &diff), LayerState::Whole);
        // Garbage added.
        fs::write(layer.join("junk"), b"\x00\xff").unwrap();
        assert!(matches!(check_uncached(&layer, &diff), LayerState::Damaged(_)));
        fs::remove_file(layer.join("junk")).unwrap();
        // The marker damaged three ways, then lost.
        let marker = marker_path(&layer);
        let good = fs::read(&marker).unwrap();
        for bad in [&good[..good.len() / 2], b"", b"\x01garbage\n"] {
            fs::write(&marker, bad).unwrap();
            assert!(matches!(check_uncached(&layer, &diff), LayerState::Damaged(m) if m.contains("marker")));
        }
        fs::remove_file(&marker).unwrap();
        assert_eq!(check_uncached(&layer, &diff), LayerState::Unmarked);
        // Emptied, or a file where the folder was; gone.
        fs::write(&marker, &good).unwrap();
        fs::remove_dir_all(&layer).unwrap();
        fs::create_dir(&layer).unwrap();
        assert!(matches!(check_uncached(&layer, &diff), LayerState::Damaged(m) if m.contains("0 entries")));
        fs::remove_dir(&layer).unwrap();
        fs::write(&layer, b"x").unwrap();
        assert!(matches!(check_uncached(&layer, &diff), LayerState::Damaged(_)));
        fs::remove_file(&layer).unwrap();
        assert_eq!(check_uncached(&layer, &diff), LayerState::Missing);
    }

    #[test]
    fn markers_parse_only_whole() {
        let d = Digest::of(b"x");
        let s = Shape { entries: 3, bytes: 9 };
        assert_eq!(parse_marker(marker_text(&d, s).as_bytes()), Some((d.clone(), s)));
        assert_eq!(parse_marker(format!("{d} 3 9").as_bytes()), None, "no newline: cut short");
        assert_eq!(parse_marker(format!("{d} 3 9 1\n").as_bytes()), None);
        assert_eq!(parse_marker(b"sha256:zz 3 9\n"), None);
    }
}
