//! What `ADD <url>` downloaded, kept for the next build as BuildKit's `source/http` keeps it:
//! per URL (and the file name it is saved under) the content and its validators, so that the
//! next download of the URL can ask `If-None-Match` and, on a match, take the kept content
//! without transferring it again.
//!
//! Layout, under `<root>/build-cache/http/`: `<key>.json` (the record: URL, ETag,
//! `Last-Modified`, sha256 and size of the content) and `<key>.<sha256>` (the content, mode
//! 0600, with the download's mtime), where `<key>` is the sha256 of the URL and the file name.
//! Only downloads whose server sent an ETag are kept (BuildKit keeps no others either).
//!
//! Crash safety: the content is written under a temp name (`.<name>.tmp<pid>`), fsynced and
//! renamed before the record that names it is written (atomically, `state::write_atomic`);
//! the record names its content by digest, so a record never points at other content than
//! it describes. A kill in between leaves a temp file or a content file no record names;
//! [`Downloads::prune`] removes both (and, with `all`, everything).

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One kept download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The URL, as the Dockerfile gave it (for `prune` and for people reading the folder).
    pub url: String,
    /// The ETag the server sent, without a weak `W/` prefix (as BuildKit compares them).
    pub etag: String,
    /// `Last-Modified` as seconds since the epoch, when the server sent one.
    pub modified: Option<u64>,
    /// The content's sha256, hex.
    pub sha256: String,
    /// The content's size.
    pub size: u64,
}

/// The kept downloads of one root.
#[derive(Debug, Clone)]
pub struct Downloads {
    dir: PathBuf,
}

/// Writes of records in this process, one at a time: parallel stages may download one URL
/// at once, and `write_atomic`'s temp name is per process.
static WRITING: Mutex<()> = Mutex::new(());

impl Downloads {
    /// The kept downloads in `dir` (made when something is kept).
    pub fn new(dir: PathBuf) -> Downloads {
        Downloads { dir }
    }

    /// The key of `url` saved as `name` (BuildKit's `urlHash`: the URL and the file name).
    fn key(url: &str, name: &str) -> String {
        let mut text = url.as_bytes().to_vec();
        text.push(0);
        text.extend_from_slice(name.as_bytes());
        crate::image::digest_of(&text)[7..].to_string()
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    fn content_path(&self, key: &str, sha256: &str) -> PathBuf {
        self.dir.join(format!("{key}.{sha256}"))
    }

    /// What is kept of `url` saved as `name`, when its record reads and its content is there
    /// with the size the record says.
    pub fn lookup(&self, url: &str, name: &str) -> Option<Kept> {
        let key = Self::key(url, name);
        let kept: Kept = serde_json::from_slice(&fs::read(self.record_path(&key)).ok()?).ok()?;
        if kept.url != url || kept.etag.is_empty() {
            return None;
        }
        let m = fs::symlink_metadata(self.content_path(&key, &kept.sha256)).ok()?;
        (m.is_file() && m.len() == kept.size).then_some(kept)
    }

    /// Puts the kept content of `kept` (for `url` as `name`) at `dest`: a hard link (the
    /// content is never changed in place), a copy where links cannot be made.
    pub fn materialize(&self, url: &str, name: &str, kept: &Kept, dest: &Path) -> io::Result<()> {
        let src = self.content_path(&Self::key(url, name), &kept.sha256);
        match fs::hard_link(&src, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(e),
            Err(_) => {
                fs::copy(&src, dest)?;
                let f = fs::File::options().write(true).open(dest)?;
                f.set_permissions(fs::Permissions::from_mode(0o600))?;
                let t = UNIX_EPOCH + Duration::from_secs(kept.modified.unwrap_or(0));
                f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            }
        }
    }

    /// Keeps `file` (the download of `url` saved as `name`) as `kept` says, replacing what was
    /// kept of the URL before. Errors are for the caller to log: a download that could not
    /// be kept is still a good download.
    pub fn keep(&self, name: &str, file: &Path, kept: &Kept) -> io::Result<()> {
        let key = Self::key(&kept.url, name);
        let _one = WRITING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fs::create_dir_all(&self.dir)?;
        let previous: Option<Kept> =
            fs::read(self.record_path(&key)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let content = self.content_path(&key, &kept.sha256);
        if !content.exists() {
            let tmp = self.dir.join(format!(".{key}.{}.tmp{}", kept.sha256, std::process::id()));
            let _ = fs::remove_file(&tmp);
            let made = (|| {
                if fs::hard_link(file, &tmp).is_err() {
                    fs::copy(file, &tmp)?;
                    let t = UNIX_EPOCH + Duration::from_secs(kept.modified.unwrap_or(0));
                    let f = fs::File::options().write(true).open(&tmp)?;
                    f.set_permissions(fs::Permissions::from_mode(0o600))?;
                    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))?;
                }
                fs::File::open(&tmp)?.sync_all()?;
                fs::rename(&tmp, &content)
            })();
            if made.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            made?;
        }
        let bytes = serde_json::to_vec(kept).map_err(io::Error::other)?;
        crate::state::write_atomic(&self.record_path(&key), &bytes).map_err(io::Error::other)?;
        if let Some(p) = previous
            && p.sha256 != kept.sha256
        {
            let _ = fs::remove_file(self.content_path(&key, &p.sha256));
        }
        Ok(())
    }

    /// Removes the leftovers of killed writes (temp files whose writer is gone, content no
    /// record names) and, with `all`, every kept download. Returns the bytes freed.
    pub fn prune(&self, all: bool) -> u64 {
        let _one = WRITING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Ok(rd) = fs::read_dir(&self.dir) else { return 0 };
        let mut named = std::collections::BTreeSet::new();
        let mut files = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(key) = name.strip_suffix(".json")
                && !name.starts_with('.')
            {
                match fs::read(e.path()).ok().and_then(|b| serde_json::from_slice::<Kept>(&b).ok()) {
                    Some(k) if !all => {
                        named.insert(format!("{key}.{}", k.sha256));
                    }
                    _ => {
                        // Unreadable (or all): the record goes, and with it its content.
                        let _ = fs::remove_file(e.path());
                        continue;
                    }
                }
            }
            files.push((name, e.path()));
        }
        let mut freed = 0;
        for (name, path) in files {
            if name.ends_with(".json") && !name.starts_with('.') {
                continue;
            }
            let doomed = if crate::state::is_temp_name(&name) {
                // A temp file of a live writer (another build now) stays.
                let pid = name.rsplit_once(".tmp").and_then(|(_, p)| p.parse::<i32>().ok()).unwrap_or(0);
                pid as u32 != std::process::id() && !crate::state::process_runs(pid)
            } else {
                !named.contains(&name)
            };
            if doomed {
                let size = fs::symlink_metadata(&path).map(|m| m.size()).unwrap_or(0);
                if fs::remove_file(&path).is_ok() {
                    freed += size;
                }
            }
        }
        freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(url: &str, etag: &str, body: &[u8]) -> Kept {
        Kept {
            url: url.into(),
            etag: etag.into(),
            modified: Some(1000),
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body)),
            size: body.len() as u64,
        }
    }

    #[test]
    fn kept_downloads_round_trip_and_replace_the_previous() {
        let d = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dl = Downloads::new(d.path().join("http"));
        let url = "http://127.0.0.1/f.txt";
        assert_eq!(dl.lookup(url, "f.txt"), None);
        let file = d.path().join("f.txt");
        fs::write(&file, b"one").unwrap();
        let k1 = kept(url, "\"a\"", b"one");
        dl.keep("f.txt", &file, &k1).unwrap();
        assert_eq!(dl.lookup(url, "f.txt"), Some(k1.clone()));
        // Another name for the same URL is another download.
        assert_eq!(dl.lookup(url, "g.txt"), None);
        let out = d.path().join("out");
        dl.materialize(url, "f.txt", &k1, &out).unwrap();
        assert_eq!(fs::read(&out).unwrap(), b"one");
        // New content replaces the old, whose file goes.
        let file2 = d.path().join("f2");
        fs::write(&file2, b"two!").unwrap();
        let k2 = kept(url, "\"b\"", b"two!");
        dl.keep("f.txt", &file2, &k2).unwrap();
        assert_eq!(dl.lookup(url, "f.txt"), Some(k2));
        let names: Vec<String> = fs::read_dir(d.path().join("http"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // Content cut short or gone: nothing to reuse.
        let key = Downloads::key(url, "f.txt");
        fs::write(dl.content_path(&key, &kept(url, "", b"two!").sha256), b"tw").unwrap();
        assert_eq!(dl.lookup(url, "f.txt"), None);
    }

    #[test]
    fn prune_takes_leftovers_and_with_all_everything() {
        let d = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dl = Downloads::new(d.path().join("http"));
        let file = d.path().join("f");
        fs::write(&file, b"data").unwrap();
        let url = "http://127.0.0.1/f";
        let k = kept(url, "\"e\"", b"data");
        dl.keep("f", &file, &k).unwrap();
        let http = d.path().join("http");
        // What a kill leaves: content no record names, a temp file of a dead writer, a
        // damaged record.
        fs::write(http.join(format!("{}.{}", "0".repeat(64), "1".repeat(64))), b"orphan").unwrap();
        fs::write(http.join(".x.tmp999999999"), b"tmp").unwrap();
        fs::write(http.join(format!("{}.json", "2".repeat(64))), b"{cut").unwrap();
        assert_eq!(dl.prune(false), 9);
        assert_eq!(dl.lookup(url, "f"), Some(k));
        assert_eq!(fs::read_dir(&http).unwrap().count(), 2);
        assert_eq!(dl.prune(true), 4);
        assert_eq!(dl.lookup(url, "f"), None);
        assert_eq!(fs::read_dir(&http).unwrap().count(), 0);
    }
}
