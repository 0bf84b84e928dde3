//! Work dirs inside the store (`images/.staging-*`, `layers/.tmp-*`) that a killed process
//! cannot leave behind for good.
//!
//! Each dir `P` has a lock file `P.lock` beside it. Its owner creates the lock file, takes an
//! exclusive flock on it and checks that the file it locked is still the one at that path,
//! and only then makes `P`; when done it removes `P`, then the lock file, then lets the lock
//! go. So a dir whose lock file is missing, or whose lock file nobody holds, belongs to a dead
//! process, and [`sweep`] (run by every store operation) removes it. A live owner's dir is
//! never touched: it holds the lock from before the dir exists until after it is gone.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// A work dir that is removed when dropped, and by the next [`sweep`] if its process dies.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    lock_path: PathBuf,
    _lock: Flock<File>,
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    // It cannot fail on Linux ≥ 3.17 for 8 bytes; a clock-derived name is a fallback.
    if got != bytes.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = ((nanos as u64) ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}

fn lock_path_of(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl Staging {
    /// Makes `<parent>/<prefix><random>` (and its lock file), owned by this process.
    pub fn create(parent: &Path, prefix: &str) -> io::Result<Staging> {
        loop {
            let path = parent.join(format!("{prefix}{}", random_suffix()));
            let lock_path = lock_path_of(&path);
            let mut file = match OpenOptions::new().write(true).create_new(true).open(&lock_path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            };
            let lock = loop {
                match Flock::lock(file, FlockArg::LockExclusive) {
                    Ok(l) => break l,
                    Err((f, nix::errno::Errno::EINTR)) => file = f,
                    Err((_, errno)) => return Err(errno.into()),
                }
            };
            // A sweep may have taken the brand-new lock file for a dead one and removed it
            // before we locked it: then the lock guards nothing, and we start again.
            let ours = lock.metadata()?;
            match fs::metadata(&lock_path) {
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev() => {}
                _ => continue,
            }
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let _ = fs::remove_file(&lock_path);
                    continue;
                }
                Err(e) => {
                    let _ = fs::remove_file(&lock_path);
                    return Err(e);
                }
            }
            return Ok(Staging { path, lock_path, _lock: lock });
        }
    }

    /// The dir.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // The dir may have been renamed into place (a finished layer): then only the lock goes.
        let _ = fs::remove_dir_all(&self.path);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// Mount points at or under `dir` (deepest first), from `/proc/self/mountinfo`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if bytes[i] == b'\\'
            && let Some(d) = octal
            && let Ok(v) = u8::try_from(
                u32::from(d[0] - b'0') * 64 + u32::from(d[1] - b'0') * 8 + u32::from(d[2] - b'0'),
            )
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Removes a dead owner's dir: first what a killed build may have left mounted in it (so that
/// the removal cannot reach through a mount), then the dir. False when a mount would not go.
fn remove_dead(dir: &Path) -> bool {
    if fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return fs::remove_file(dir).is_ok();
    }
    for m in mounts_under(dir) {
        if nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).is_err() {
            tracing::warn!(dir = %dir.display(), mount = %m.display(), "left behind: a mount in it would not go");
            return false;
        }
    }
    match fs::remove_dir_all(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a leftover work dir");
            false
        }
    }
}

/// Removes the `<prefix>*` dirs in `parent` whose owners are gone (see the module doc), with
/// their lock files. Returns how many dirs went. Never fails: what cannot go stays for the
/// next sweep.
pub fn sweep(parent: &Path, prefix: &str) -> usize {
    let Ok(entries) = fs::read_dir(parent) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        if let Some(dir_name) = name.strip_suffix(".lock") {
            let Ok(file) = OpenOptions::new().write(true).open(&path) else { continue };
            // Held: a live owner. Free: its owner died (or is about to check, and will see
            // the file gone and start again).
            let Ok(_held) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else { continue };
            let dir = parent.join(dir_name);
            let existed = fs::symlink_metadata(&dir).is_ok();
            if !existed || remove_dead(&dir) {
                removed += usize::from(existed);
                let _ = fs::remove_file(&path);
            }
        } else if !lock_path_of(&path).exists() {
            // Owners make the lock file before the dir and remove it after: a dir without one
            // is a dead owner's (or was just removed by a finishing one).
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                removed += usize::from(remove_dead(&path));
            } else {
                let _ = fs::remove_file(&path);
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_dir_stays_and_a_dead_ones_goes() {
        let root = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let live = Staging::create(root.path(), ".staging-").unwrap();
        fs::write(live.path().join("f"), b"x").unwrap();
        // A dead owner's: a dir with a lock file nobody holds, and one without a lock file.
        let dead = root.path().join(".staging-dead");
        fs::create_dir_all(dead.join("a/b")).unwrap();
        fs::write(root.path().join(".staging-dead.lock"), b"").unwrap();
        let old = root.path().join(".staging-old");
        fs::create_dir(&old).unwrap();
        fs::write(root.path().join("unrelated"), b"").unwrap();
        assert_eq!(sweep(root.path(), ".staging-"), 2);
        assert!(live.path().join("f").is_file(), "the live dir is untouched");
        assert!(!dead.exists() && !root.path().join(".staging-dead.lock").exists() && !old.exists());
        assert!(root.path().join("unrelated").exists());
        let path = live.path().to_path_buf();
        drop(live);
        assert!(!path.exists() && !lock_path_of(&path).exists());
        let names: Vec<_> = fs::read_dir(root.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("unrelated")]);
    }

    #[test]
    fn mountinfo_escapes_are_read() {
        assert_eq!(unescape_mountinfo("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape_mountinfo("/plain\\"), "/plain\\");
    }
}
