//! Volumes and the other files a container mounts: named volumes of the local driver
//! (`<root>/volumes/<name>/_data`, or a tmpfs or bind per `driver_opts`), docker's copy-up of
//! an image's content into a new volume, anonymous volumes, binds, tmpfs mounts,
//! `volumes_from`, and secrets and configs written with their owner and mode.

mod copyup;
mod mounts;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compose::model::Project;
use crate::runtime::spec::{ContainerSpec, MountKind};
use crate::state::{Dirs, StateError, read_json};

pub use mounts::{MountRequest, PeerRef, service_mounts};

/// `com.docker.volume.anonymous`: marks volumes made for a mount without a source.
pub const LABEL_ANONYMOUS: &str = "com.docker.volume.anonymous";

/// What can go wrong with volumes and mounts.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// No such volume.
    #[error("no such volume: {0}")]
    NotFound(String),
    /// The volume exists with another configuration.
    #[error("volume {0} exists but doesn't match the configuration (driver or driver_opts); remove it first")]
    Conflict(String),
    /// Containers use the volume.
    #[error("volume {name} is in use by container(s) {containers}")]
    InUse {
        /// The volume.
        name: String,
        /// The containers, comma separated.
        containers: String,
    },
    /// A bad name, option or mount.
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io { path: path.display().to_string(), source }
}

/// A volume to create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeSpec {
    /// Name.
    pub name: String,
    /// Driver (`local`, or empty for local).
    pub driver: String,
    /// Driver options (`type`, `device`, `o`).
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A volume on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The data directory.
    pub mountpoint: PathBuf,
    /// Creation time (RFC 3339).
    pub created: String,
    /// Always `local`.
    pub scope: String,
}

/// How a volume is mounted into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VolumeKind {
    /// Its `_data` directory.
    Data,
    /// A fresh tmpfs (`type: tmpfs`).
    Tmpfs { size: Option<u64>, mode: Option<u32> },
    /// A host directory (`type: none`, `o: bind`, `device: PATH`).
    Bind(PathBuf),
}

impl VolumeRecord {
    /// What mounting it means, from its driver options.
    pub(crate) fn kind(&self) -> Result<VolumeKind, VolumeError> {
        volume_kind(&self.name, &self.driver_opts)
    }

    /// The mount a container gets for it.
    pub(crate) fn mount_kind(&self) -> Result<MountKind, VolumeError> {
        Ok(match self.kind()? {
            VolumeKind::Data => {
                MountKind::Bind { source: self.mountpoint.clone(), propagation: None, non_recursive: false }
            }
            VolumeKind::Bind(p) => MountKind::Bind { source: p, propagation: None, non_recursive: false },
            VolumeKind::Tmpfs { size, mode } => MountKind::Tmpfs { size, mode },
        })
    }
}

/// Parses `1g`, `512m`, `64k`, `100` (powers of 1024).
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    crate::compose::model::Bytes::parse(text).ok().and_then(|b| u64::try_from(b.0).ok())
}

fn volume_kind(name: &str, opts: &BTreeMap<String, String>) -> Result<VolumeKind, VolumeError> {
    let bad = |m: String| VolumeError::Invalid(format!("volume {name}: {m}"));
    let o: Vec<&str> = opts
        .get("o")
        .map(|o| o.split(',').map(str::trim).filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    match opts.get("type").map(String::as_str) {
        None if opts.is_empty() => Ok(VolumeKind::Data),
        Some("tmpfs") => {
            let (mut size, mut mode) = (None, None);
            for opt in o {
                match opt.split_once('=') {
                    Some(("size", v)) => {
                        size = Some(parse_size(v).ok_or_else(|| bad(format!("invalid size {v:?}")))?)
                    }
                    Some(("mode", v)) => {
                        mode =
                            Some(u32::from_str_radix(v, 8).map_err(|_| bad(format!("invalid mode {v:?}")))?)
                    }
                    _ => {}
                }
            }
            Ok(VolumeKind::Tmpfs { size, mode })
        }
        Some("none") | None if o.contains(&"bind") => {
            let device =
                opts.get("device").ok_or_else(|| bad("a bind volume needs driver_opts.device".into()))?;
            let path = PathBuf::from(device);
            if !path.is_absolute() {
                return Err(bad(format!("device {device:?} must be an absolute path")));
            }
            Ok(VolumeKind::Bind(path))
        }
        other => Err(bad(format!(
            "driver_opts {:?} are not supported (type: tmpfs, or type: none with o: bind and device)",
            other.unwrap_or("")
        ))),
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The volumes of one root.
#[derive(Debug, Clone)]
pub struct Volumes {
    dirs: Dirs,
}

impl Volumes {
    /// Volumes under `dirs`.
    pub fn new(dirs: &Dirs) -> Volumes {
        Volumes { dirs: dirs.clone() }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.dirs.volumes().join(name)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir(name).join("volume.json")
    }

    /// Creates a volume; an existing one with the same driver and options is returned as it
    /// is. Returns whether it was made now.
    pub fn create(&self, spec: &VolumeSpec) -> Result<(VolumeRecord, bool), VolumeError> {
        if !valid_name(&spec.name) {
            return Err(VolumeError::Invalid(format!(
                "invalid volume name {:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                spec.name
            )));
        }
        let driver = if spec.driver.is_empty() { "local".to_string() } else { spec.driver.clone() };
        if driver != "local" {
            return Err(VolumeError::Invalid(format!(
                "volume {}: driver {driver:?} is not supported (local)",
                spec.name
            )));
        }
        volume_kind(&spec.name, &spec.driver_opts)?;
        if let Some(existing) = self.get(&spec.name)? {
            if existing.driver != driver || existing.driver_opts != spec.driver_opts {
                return Err(VolumeError::Conflict(spec.name.clone()));
            }
            return Ok((existing, false));
        }
        // The volume's folder is closed as docker's; `_data` has the usual mode, and gets the
        // image's by copy-up.
        self.dirs.create_dir(&self.dir(&spec.name), crate::state::mode::VOLUMES)?;
        let data = self.dir(&spec.name).join("_data");
        fs::create_dir_all(&data).map_err(io_err(&data))?;
        let record = VolumeRecord {
            name: spec.name.clone(),
            driver,
            driver_opts: spec.driver_opts.clone(),
            labels: spec.labels.clone(),
            mountpoint: data,
            created: crate::runtime::timefmt::now(),
            scope: "local".into(),
        };
        crate::state::write_json_with_copy(&self.record_path(&spec.name), &record)?;
        Ok((record, true))
    }

    /// A volume's record.
    pub fn get(&self, name: &str) -> Result<Option<VolumeRecord>, VolumeError> {
        if !valid_name(name) {
            return Ok(None);
        }
        let path = self.record_path(name);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(read_json(&path)?))
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeRecord>, VolumeError> {
        let Ok(entries) = fs::read_dir(self.dirs.volumes()) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            match self.get(&name) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                // Listed by `damaged`, for the engine to report and repair.
                Err(VolumeError::State(StateError::Json { .. })) => {}
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Volumes whose record cannot be read (cut short, not JSON) or is missing (a command
    /// killed between making the folder and writing the record, or between removing the
    /// record and the folder). Temp files of writes that a killed command left go first.
    pub fn damaged(&self) -> Vec<crate::state::DamagedRecord> {
        let Ok(entries) = fs::read_dir(self.dirs.volumes()) else { return Vec::new() };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !valid_name(&name) {
                continue;
            }
            crate::state::sweep_temp_files(&e.path());
            let path = self.record_path(&name);
            match read_json::<serde::de::IgnoredAny>(&path) {
                Err(StateError::Json { source, .. }) => {
                    let labels = crate::state::labels_of_copy(&path);
                    out.push(crate::state::DamagedRecord {
                        name,
                        file: path,
                        reason: source.to_string(),
                        labels,
                    });
                }
                Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    let labels = crate::state::labels_of_copy(&path);
                    out.push(crate::state::DamagedRecord {
                        name,
                        file: path,
                        reason: "missing".into(),
                        labels,
                    });
                }
                // Whole: its copy is kept whole too (see `state::repair_copy`).
                Ok(_) => {
                    crate::state::repair_copy(&path);
                }
                _ => {}
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Writes the record of local volume `name` anew around the data it has: from the copy
    /// kept beside it (see `state::write_json_with_copy`) when that can be read, so that its
    /// driver options, labels and creation time are kept; otherwise a plain local volume
    /// with `labels` (a record written before copies were kept).
    pub fn repair(&self, name: &str, labels: BTreeMap<String, String>) -> Result<VolumeRecord, VolumeError> {
        if !valid_name(name) {
            return Err(VolumeError::Invalid(format!("invalid volume name {name:?}")));
        }
        let data = self.dir(name).join("_data");
        fs::create_dir_all(&data).map_err(io_err(&data))?;
        if let Some(mut record) =
            crate::state::read_copy::<VolumeRecord>(&self.record_path(name)).filter(|r| r.name == name)
        {
            record.mountpoint = data;
            crate::state::write_json_with_copy(&self.record_path(name), &record)?;
            return Ok(record);
        }
        let record = VolumeRecord {
            name: name.to_string(),
            driver: "local".into(),
            driver_opts: BTreeMap::new(),
            labels,
            mountpoint: data,
            created: crate::runtime::timefmt::now(),
            scope: "local".into(),
        };
        crate::state::write_json_with_copy(&self.record_path(name), &record)?;
        Ok(record)
    }

    /// Which containers use which volumes (by the sources of their mounts).
    pub fn in_use(&self) -> Result<BTreeMap<String, Vec<String>>, VolumeError> {
        let volumes = self.list()?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let Ok(entries) = fs::read_dir(self.dirs.containers()) else { return Ok(out) };
        for e in entries.flatten() {
            let Ok(spec) = read_json::<ContainerSpec>(&e.path().join("spec.json")) else { continue };
            for m in &spec.mounts {
                for v in &volumes {
                    let uses = m.volume.as_deref() == Some(v.name.as_str())
                        || matches!(&m.kind, MountKind::Bind { source, .. } if source.starts_with(&v.mountpoint));
                    if uses {
                        let users = out.entry(v.name.clone()).or_default();
                        if !users.contains(&spec.name) {
                            users.push(spec.name.clone());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Removes a volume and its data; one that containers use is refused unless `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), VolumeError> {
        if self.get(name)?.is_none() {
            return Err(VolumeError::NotFound(name.to_string()));
        }
        if !force && let Some(users) = self.in_use()?.get(name) {
            return Err(VolumeError::InUse { name: name.to_string(), containers: users.join(", ") });
        }
        // The record first: a folder left without one (a command killed half-way) is found
        // by `damaged` and adopted again, while a record left without its data would not be.
        let path = self.record_path(name);
        fs::remove_file(&path).map_err(io_err(&path))?;
        let dir = self.dir(name);
        fs::remove_dir_all(&dir).map_err(io_err(&dir))
    }

    /// Removes unused volumes: anonymous ones, or all with `all`. Returns their names.
    pub fn prune(&self, all: bool) -> Result<Vec<String>, VolumeError> {
        let used = self.in_use()?;
        let mut removed = Vec::new();
        for v in self.list()? {
            if used.contains_key(&v.name) || (!all && !v.labels.contains_key(LABEL_ANONYMOUS)) {
                continue;
            }
            self.remove(&v.name, false)?;
            removed.push(v.name);
        }
        Ok(removed)
    }
}

/// The volumes a project declares (not external ones), named and labelled as docker compose
/// does.
pub fn project_volume_specs(project: &Project) -> Vec<VolumeSpec> {
    project
        .volumes
        .iter()
        .filter(|(_, v)| !v.external)
        .map(|(key, v)| {
            let mut labels = v.labels.clone();
            labels.insert(crate::labels::PROJECT.into(), project.name.clone());
            labels.insert(crate::labels::VOLUME.into(), key.clone());
            labels.insert(crate::labels::VERSION.into(), crate::labels::VERSION_VALUE.into());
            VolumeSpec {
                name: v.name.clone().unwrap_or_else(|| crate::labels::resource_name(&project.name, key)),
                driver: v.driver.clone().unwrap_or_default(),
                driver_opts: v.driver_opts.clone(),
                labels,
            }
        })
        .collect()
}

/// The real name of project volume `key`.
pub fn volume_name(project: &Project, key: &str) -> Option<String> {
    let v = project.volumes.get(key)?;
    Some(match (&v.name, v.external) {
        (Some(n), _) => n.clone(),
        (None, true) => key.to_string(),
        (None, false) => crate::labels::resource_name(&project.name, key),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Volumes) {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
        (dir, Volumes::new(&dirs))
    }

    #[test]
    fn a_damaged_record_is_written_anew_from_its_copy_with_options_and_labels() {
        let (_d, vols) = store();
        let spec = VolumeSpec {
            name: "custom".into(),
            driver_opts: BTreeMap::from([
                ("type".to_string(), "tmpfs".to_string()),
                ("o".to_string(), "size=1m".to_string()),
            ]),
            labels: BTreeMap::from([("com.docker.compose.project".to_string(), "p".to_string())]),
            ..VolumeSpec::default()
        };
        let (made, _) = vols.create(&spec).unwrap();
        fs::write(vols.record_path("custom"), "{\"name\":").unwrap();
        assert!(vols.list().unwrap().is_empty());
        let damaged = vols.damaged();
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].labels.as_ref(), Some(&spec.labels));
        let repaired = vols.repair("custom", BTreeMap::new()).unwrap();
        assert_eq!(repaired, made);
        assert_eq!(vols.get("custom").unwrap(), Some(made));
        // Without a copy (a record from before copies were kept): a plain local volume.
        fs::remove_file(crate::state::copy_path(&vols.record_path("custom"))).unwrap();
        fs::write(vols.record_path("custom"), "").unwrap();
        assert_eq!(vols.damaged()[0].labels, None);
        let plain = vols.repair("custom", BTreeMap::new()).unwrap();
        assert!(plain.driver_opts.is_empty() && plain.labels.is_empty());
        // Removal takes the copy with the folder.
        vols.remove("custom", false).unwrap();
        assert!(!vols.dir("custom").exists());
    }

    #[test]
    fn create_is_idempotent_and_refuses_a_different_configuration() {
        let (_d, vols) = store();
        let spec = VolumeSpec { name: "p_data".into(), ..VolumeSpec::default() };
        let (rec, made) = vols.create(&spec).unwrap();
        assert!(made && rec.mountpoint.ends_with("volumes/p_data/_data") && rec.mountpoint.is_dir());
        assert!(!vols.create(&spec).unwrap().1);
        let mut other = spec.clone();
        other.driver_opts.insert("type".into(), "tmpfs".into());
        assert!(matches!(vols.create(&other), Err(VolumeError::Conflict(_))));
        assert!(vols.create(&VolumeSpec { name: "../x".into(), ..VolumeSpec::default() }).is_err());
        assert_eq!(vols.list().unwrap().len(), 1);
        vols.remove("p_data", false).unwrap();
        assert!(vols.get("p_data").unwrap().is_none());
        assert!(matches!(vols.remove("p_data", false), Err(VolumeError::NotFound(_))));
    }

    #[test]
    fn driver_opts_select_tmpfs_or_bind() {
        let opts =
            |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(
            volume_kind("v", &opts(&[("type", "tmpfs"), ("o", "size=1m,mode=700")])).unwrap(),
            VolumeKind::Tmpfs { size: Some(1 << 20), mode: Some(0o700) }
        );
        assert_eq!(
            volume_kind("v", &opts(&[("type", "none"), ("o", "bind"), ("device", "/srv")])).unwrap(),
            VolumeKind::Bind("/srv".into())
        );
        let e = volume_kind("v", &opts(&[("type", "nfs"), ("o", "addr=1.2.3.4")])).unwrap_err();
        assert!(e.to_string().contains("volume v"), "{e}");
    }

    #[test]
    fn prune_takes_unused_anonymous_volumes_unless_all() {
        let (_d, vols) = store();
        let mut anon = VolumeSpec { name: "a".repeat(64), ..VolumeSpec::default() };
        anon.labels.insert(LABEL_ANONYMOUS.into(), String::new());
        vols.create(&anon).unwrap();
        vols.create(&VolumeSpec { name: "named".into(), ..VolumeSpec::default() }).unwrap();
        assert_eq!(vols.prune(false).unwrap(), vec!["a".repeat(64)]);
        assert_eq!(vols.prune(true).unwrap(), vec!["named".to_string()]);
    }
}
