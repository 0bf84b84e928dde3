//! `image import`: a root filesystem (a tarball, plain or compressed, or a folder) becomes a
//! one-layer image, as `docker import` makes it, with `--change` lines for its config.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::{ImageError, ImageStore, Reference, io_at};

type Result<T> = std::result::Result<T, ImageError>;

/// Where the root filesystem comes from.
pub enum ImportSource<'a> {
    /// A tar file (plain, gzip or zstd).
    File(&'a Path),
    /// A folder, archived as it is (symlinks kept as links).
    Dir(&'a Path),
    /// A tar stream.
    Reader(&'a mut dyn Read),
}

/// A `--change` line that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--change {line:?}: {message}")]
pub struct BadChange {
    /// The line.
    pub line: String,
    /// What is wrong.
    pub message: String,
}

/// `CMD`/`ENTRYPOINT` values: a JSON array, or a shell form run by `/bin/sh -c`.
fn command_form(value: &str) -> Vec<String> {
    if value.trim_start().starts_with('[')
        && let Ok(list) = serde_json::from_str::<Vec<String>>(value)
    {
        return list;
    }
    vec!["/bin/sh".into(), "-c".into(), value.to_string()]
}

/// `ENV`/`LABEL` words that are not `KEY=value`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum WordsError {
    /// Unbalanced quotes.
    #[error(transparent)]
    Quotes(#[from] shell_words::ParseError),
    /// Nothing after the instruction.
    #[error("needs a value")]
    Empty,
    /// A word without `=`.
    #[error("{0:?} is not KEY=value")]
    NotKeyValue(String),
}

/// `k=v k2="v 2"` or the legacy `k v` form.
fn key_values(value: &str, legacy_space: bool) -> std::result::Result<Vec<(String, String)>, WordsError> {
    let words = shell_words::split(value)?;
    if words.is_empty() {
        return Err(WordsError::Empty);
    }
    if legacy_space && !words[0].contains('=') {
        let (k, v) = value.trim().split_once(char::is_whitespace).unwrap_or((value.trim(), ""));
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    words
        .into_iter()
        .map(|w| {
            w.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| WordsError::NotKeyValue(w.clone()))
        })
        .collect()
}

/// Applies `--change` lines to an image config's `config` object (docker's field names).
pub fn apply_changes(
    config: &mut Map<String, Value>,
    changes: &[String],
) -> std::result::Result<(), BadChange> {
    for line in changes {
        let bad = |message: String| BadChange { line: line.clone(), message };
        let trimmed = line.trim();
        let (instr, value) = trimmed.split_once(char::is_whitespace).unwrap_or((trimmed, ""));
        let value = value.trim();
        if value.is_empty() {
            return Err(bad("needs a value".into()));
        }
        match instr.to_ascii_uppercase().as_str() {
            "CMD" => {
                config.insert("Cmd".into(), json!(command_form(value)));
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), json!(command_form(value)));
            }
            "ENV" => {
                let env = config.entry("Env").or_insert_with(|| json!([]));
                let list = env.as_array_mut().ok_or_else(|| bad("Env is not a list".into()))?;
                for (k, v) in key_values(value, true).map_err(|e| bad(e.to_string()))? {
                    list.retain(|e| e.as_str().and_then(|e| e.split('=').next()) != Some(k.as_str()));
                    list.push(json!(format!("{k}={v}")));
                }
            }
            "LABEL" => {
                let labels = config.entry("Labels").or_insert_with(|| json!({}));
                for (k, v) in key_values(value, false).map_err(|e| bad(e.to_string()))? {
                    labels[k] = json!(v);
                }
            }
            "WORKDIR" => {
                config.insert("WorkingDir".into(), json!(value));
            }
            "USER" => {
                config.insert("User".into(), json!(value));
            }
            "STOPSIGNAL" => {
                config.insert("StopSignal".into(), json!(value));
            }
            "EXPOSE" => {
                let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
                for p in value.split_whitespace() {
                    let p = if p.contains('/') { p.to_string() } else { format!("{p}/tcp") };
                    ports[p] = json!({});
                }
            }
            "VOLUME" => {
                let vols = config.entry("Volumes").or_insert_with(|| json!({}));
                for v in command_form(value)
                    .into_iter()
                    .filter(|_| value.starts_with('['))
                    .chain(value.split_whitespace().map(str::to_string).filter(|_| !value.starts_with('[')))
                {
                    vols[v] = json!({});
                }
            }
            other => return Err(bad(format!("{other} is not a change docker import accepts"))),
        }
    }
    Ok(())
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Appends the tree at `dir` (named `rel` in the archive) to `builder`, parents before
/// children, names sorted so that the same folder gives the same layer. A file seen before
/// under another name (same device and inode) becomes a hard link entry, as `tar` writes it,
/// so that the layer keeps one inode rather than copies.
fn append_tree<W: std::io::Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    rel: &Path,
    seen: &mut HashMap<(u64, u64), PathBuf>,
) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let mut names: Vec<_> =
        fs::read_dir(dir)?.map(|e| e.map(|e| e.file_name())).collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let entry_name = rel.join(&name);
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            builder.append_path_with_name(&path, &entry_name)?;
            append_tree(builder, &path, &entry_name, seen)?;
            continue;
        }
        if meta.nlink() > 1 {
            if let Some(first) = seen.get(&(meta.dev(), meta.ino())) {
                let mut header = tar::Header::new_gnu();
                header.set_metadata(&meta);
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                builder.append_link(&mut header, &entry_name, first)?;
                continue;
            }
            seen.insert((meta.dev(), meta.ino()), entry_name.clone());
        }
        builder.append_path_with_name(&path, &entry_name)?;
    }
    Ok(())
}

/// Imports a root filesystem as a one-layer image named `name` (untagged when `None`).
/// Returns the image id.
pub fn import(
    store: &ImageStore,
    source: ImportSource<'_>,
    name: Option<&Reference>,
    changes: &[String],
    message: Option<&str>,
) -> Result<String> {
    let mut config_obj = Map::new();
    apply_changes(&mut config_obj, changes)
        .map_err(|e| ImageError::Invalid {
            source_name: "import".into(),
            message: e.to_string(),
            cause: Some(e.into()),
        })?;
    // The staging dir is this process's (locked): the input is read into it before the
    // store's lock is taken, so that a slow stream does not hold up the store.
    let staging = store.staging()?;
    let (label, tar_path) = match source {
        ImportSource::File(p) => {
            let label = p.display().to_string();
            let mut f = fs::File::open(p).map_err(io_at(p))?;
            let path = super::spool_archive(&mut f, staging.path(), "blob", &label)?;
            (label, path)
        }
        ImportSource::Reader(r) => ("-".to_string(), super::spool_archive(r, staging.path(), "blob", "-")?),
        ImportSource::Dir(dir) => {
            let path = staging.path().join("layer.tar");
            let file = fs::File::create(&path).map_err(io_at(&path))?;
            let mut builder = tar::Builder::new(file);
            builder.follow_symlinks(false);
            append_tree(&mut builder, dir, Path::new(""), &mut HashMap::new()).map_err(io_at(dir))?;
            builder.into_inner().map_err(io_at(&path))?;
            (dir.display().to_string(), path)
        }
    };
    let _lock = store.lock()?;
    let result = (|| {
        // The tar is in the staging dir (a file given is copied, so that it stays as it is).
        let copy = tar_path;
        let mut head = std::io::BufReader::new(fs::File::open(&copy).map_err(io_at(&copy))?);
        let kind = super::unpack::detect(&mut head).map_err(io_at(&copy))?;
        let (digest, size) = store.put_blob_file(&copy, None, &label)?;
        let (diff_id, _) = store.ensure_layer(&digest, None, None, &label)?;
        let created = crate::runtime::timefmt::now();
        let mut history = json!({ "created": created, "created_by": "berth image import" });
        if let Some(m) = message {
            history["comment"] = json!(m);
        }
        let config = json!({
            "created": created,
            "architecture": host_arch(),
            "os": "linux",
            "config": config_obj,
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
            "history": [history],
        });
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| ImageError::Invalid {
                source_name: label.clone(),
                message: e.to_string(),
                cause: Some(e.into()),
            })?;
        serde_json::from_slice::<oci_spec::image::ImageConfiguration>(&bytes)
            .map_err(|e| ImageError::Invalid {
                source_name: label.clone(),
                message: e.to_string(),
                cause: Some(e.into()),
            })?;
        let layer = json!({ "mediaType": kind.layer_media_type(), "digest": digest, "size": size });
        let names: Vec<Reference> = name.into_iter().cloned().collect();
        let config_digest = store.put_blob(&bytes)?;
        let manifest = super::oci_manifest(&config_digest, bytes.len(), vec![layer]);
        let mbytes = serde_json::to_vec(&manifest)
            .map_err(|e| ImageError::Invalid {
                source_name: label.clone(),
                message: e.to_string(),
                cause: Some(e.into()),
            })?;
        let mdigest = store.put_blob(&mbytes)?;
        store.add_manifest(&mdigest, mbytes.len() as u64, &names)?;
        Ok(config_digest)
    })();
    if result.is_err() {
        let _ = store.gc();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_map_to_config_fields() {
        let mut c = Map::new();
        let lines: Vec<String> = [
            "CMD [\"httpd\", \"-f\"]",
            "ENTRYPOINT /bin/echo hi",
            "ENV A=1 B=\"two words\"",
            "ENV LEGACY some value",
            "WORKDIR /srv",
            "USER 65534",
            "EXPOSE 80 53/udp",
            "LABEL a=b",
            "STOPSIGNAL SIGINT",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        apply_changes(&mut c, &lines).unwrap();
        assert_eq!(c["Cmd"], json!(["httpd", "-f"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/bin/echo hi"]));
        assert_eq!(c["Env"], json!(["A=1", "B=two words", "LEGACY=some value"]));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!((c["WorkingDir"].as_str(), c["User"].as_str()), (Some("/srv"), Some("65534")));
        assert!(apply_changes(&mut c, &["RUN make".to_string()]).is_err());
        assert!(apply_changes(&mut c, &["CMD".to_string()]).is_err());
    }
}
