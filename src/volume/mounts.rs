//! A service's mounts, in the runtime's terms: `volumes` (named, anonymous, bind, tmpfs),
//! `tmpfs`, `volumes_from`, `secrets` and `configs`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::compose::model::{FileObjectConfig, Project, ServiceConfig, ServiceFileRef, ServiceVolumeConfig};
use crate::image::ResolvedImage;
use crate::runtime::spec::{MountKind, MountSpec};

use super::copyup::copy_up;
use super::{LABEL_ANONYMOUS, VolumeError, VolumeKind, VolumeSpec, Volumes, io_err, parse_size, volume_name};

/// Another container, as compose names it: `service:NAME` (the service's first container) or
/// `container:NAME` (by name or id), in `volumes_from`, `network_mode`, `ipc` and `pid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRef<'a> {
    /// A service's container.
    Service(&'a str),
    /// A container by name or id.
    Container(&'a str),
}

/// What [`service_mounts`] needs to know about the container.
pub struct MountRequest<'a> {
    /// The project.
    pub project: &'a Project,
    /// The service's name.
    pub service_name: &'a str,
    /// The service.
    pub service: &'a ServiceConfig,
    /// The container's id; secrets and configs are written under its dir.
    pub container_id: &'a str,
    /// The container's number.
    pub replica: u32,
    /// Its image (for copy-up).
    pub image: &'a ResolvedImage,
    /// The mounts of another container, for `volumes_from`.
    pub peer_mounts: &'a dyn Fn(PeerRef<'_>) -> Option<Vec<MountSpec>>,
    /// Recreate anonymous volumes instead of reusing them (`up -V`).
    pub renew_anonymous: bool,
    /// The project's environment (secrets from `environment`).
    pub environment: &'a HashMap<String, String>,
}

impl MountRequest<'_> {
    fn error(&self, field: &str, message: impl std::fmt::Display) -> VolumeError {
        VolumeError::Invalid(format!("service {}: {field}: {message}", self.service_name))
    }
}

/// The name of the anonymous volume a container's mount at `target` gets: the same for every
/// recreation of that container, so that its data survives a recreate as docker compose
/// keeps it.
pub fn anonymous_volume_name(project: &str, service: &str, replica: u32, target: &str) -> String {
    hex::encode(Sha256::digest(format!("{project}\0{service}\0{replica}\0{target}").as_bytes()))
}

fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false)
}

fn clean_target(req: &MountRequest<'_>, field: &str, target: &str) -> Result<String, VolumeError> {
    if !target.starts_with('/') {
        return Err(req.error(field, format!("mount target {target:?} must be an absolute path")));
    }
    if Path::new(target).components().any(|c| c == Component::ParentDir) {
        return Err(req.error(field, format!("mount target {target:?} must not contain ..")));
    }
    Ok(target.to_string())
}

/// Makes (or finds) every volume, file and directory the service's container mounts, and
/// returns the mounts, parents before children.
pub fn service_mounts(vols: &Volumes, req: &MountRequest<'_>) -> Result<Vec<MountSpec>, VolumeError> {
    let svc = req.service;
    let mut mounts: Vec<MountSpec> = Vec::new();
    for (i, v) in svc.volumes.iter().enumerate() {
        let field = format!("volumes[{i}]");
        let target = clean_target(req, &field, &v.target)?;
        let mut volume = None;
        let kind = match v.r#type.as_str() {
            "volume" => {
                let (kind, name) = volume_mount(vols, req, &field, v)?;
                volume = Some(name);
                kind
            }
            "bind" => bind_mount(req, &field, v)?,
            "tmpfs" => MountKind::Tmpfs {
                size: v.tmpfs.as_ref().and_then(|t| t.size).and_then(|b| u64::try_from(b.0).ok()),
                mode: v.tmpfs.as_ref().and_then(|t| t.mode),
            },
            other => return Err(req.error(&field, format!("volume type {other:?} is not supported"))),
        };
        mounts.push(MountSpec { target, kind, read_only: v.read_only, volume });
    }
    for (i, t) in svc.tmpfs.iter().enumerate() {
        let field = format!("tmpfs[{i}]");
        let (path, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        let target = clean_target(req, &field, path)?;
        let (mut size, mut mode) = (None, None);
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some(("size", v)) => {
                    size =
                        Some(parse_size(v).ok_or_else(|| req.error(&field, format!("invalid size {v:?}")))?)
                }
                Some(("mode", v)) => {
                    mode = Some(
                        u32::from_str_radix(v, 8)
                            .map_err(|_| req.error(&field, format!("invalid mode {v:?}")))?,
                    )
                }
                _ => {}
            }
        }
        mounts.push(MountSpec {
            target,
            kind: MountKind::Tmpfs { size, mode },
            read_only: false,
            volume: None,
        });
    }
    for (i, from) in svc.volumes_from.iter().enumerate() {
        let field = format!("volumes_from[{i}]");
        let (name, mode) = match from.rsplit_once(':') {
            Some((n, m)) if m == "ro" || m == "rw" => (n, Some(m)),
            _ => (from.as_str(), None),
        };
        let peer = match name.strip_prefix("container:") {
            Some(c) => PeerRef::Container(c),
            None => PeerRef::Service(name.strip_prefix("service:").unwrap_or(name)),
        };
        let theirs =
            (req.peer_mounts)(peer).ok_or_else(|| req.error(&field, format!("{name}: no such container")))?;
        for mut m in theirs.into_iter().filter(|m| matches!(m.kind, MountKind::Bind { .. })) {
            if let Some(mode) = mode {
                m.read_only = mode == "ro";
            }
            if !mounts.iter().any(|x| x.target == m.target) {
                mounts.push(m);
            }
        }
    }
    let files = vols.dirs.container(req.container_id).join("files");
    for (i, r) in svc.secrets.iter().enumerate() {
        let def = req.project.secrets.get(&r.source);
        mounts.push(file_mount(req, &format!("secrets[{i}]"), r, def, &files.join("secrets"), true)?);
    }
    for (i, r) in svc.configs.iter().enumerate() {
        let def = req.project.configs.get(&r.source);
        mounts.push(file_mount(req, &format!("configs[{i}]"), r, def, &files.join("configs"), false)?);
    }
    for (i, m) in mounts.iter().enumerate() {
        if mounts[..i].iter().any(|o| o.target == m.target) {
            return Err(req.error("volumes", format!("duplicate mount target {}", m.target)));
        }
    }
    // Parents before children, so that a mount inside another mount lands in it.
    mounts.sort_by_key(|m| Path::new(&m.target).components().count());
    Ok(mounts)
}

fn volume_mount(
    vols: &Volumes,
    req: &MountRequest<'_>,
    field: &str,
    v: &ServiceVolumeConfig,
) -> Result<(MountKind, String), VolumeError> {
    let record = match v.source.as_deref().filter(|s| !s.is_empty()) {
        Some(key) => {
            let name = volume_name(req.project, key).ok_or_else(|| {
                req.error(field, format!("volume {key:?} is not declared in the top-level volumes"))
            })?;
            match vols.get(&name)? {
                Some(r) => r,
                None if req.project.volumes.get(key).is_some_and(|d| d.external) => {
                    return Err(req.error(field, format!("external volume {name} does not exist")));
                }
                None => return Err(req.error(field, format!("volume {name} has not been created"))),
            }
        }
        None => {
            let name = anonymous_volume_name(&req.project.name, req.service_name, req.replica, &v.target);
            if req.renew_anonymous && vols.get(&name)?.is_some() {
                vols.remove(&name, true)?;
            }
            let mut spec = VolumeSpec { name, ..VolumeSpec::default() };
            spec.labels.insert(LABEL_ANONYMOUS.into(), String::new());
            spec.labels.insert(crate::labels::PROJECT.into(), req.project.name.clone());
            spec.labels.insert(crate::labels::SERVICE.into(), req.service_name.to_string());
            vols.create(&spec)?.0
        }
    };
    let nocopy = v.volume.as_ref().is_some_and(|o| o.nocopy);
    let subpath = v.volume.as_ref().and_then(|o| o.subpath.clone()).filter(|s| !s.is_empty());
    if record.kind()? == VolumeKind::Data && !nocopy && subpath.is_none() && is_empty_dir(&record.mountpoint)
    {
        copy_up(&req.image.layer_dirs, &v.target, &record.mountpoint)?;
    }
    let mut kind = record.mount_kind()?;
    if let Some(sub) = subpath {
        let MountKind::Bind { source, .. } = &mut kind else {
            return Err(req.error(field, "volume.subpath needs a volume with data (not a tmpfs volume)"));
        };
        let rel = Path::new(&sub);
        if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(
                req.error(field, format!("volume.subpath {sub:?} must be a relative path inside the volume"))
            );
        }
        let full = source.join(rel);
        // Refuse a subpath that leaves the volume through a symlink.
        let real =
            fs::canonicalize(&full).map_err(|e| req.error(field, format!("volume.subpath {sub:?}: {e}")))?;
        let base = fs::canonicalize(&*source).map_err(io_err(source))?;
        if !real.starts_with(&base) {
            return Err(req.error(field, format!("volume.subpath {sub:?} leaves the volume")));
        }
        *source = real;
    }
    Ok((kind, record.name))
}

fn bind_mount(
    req: &MountRequest<'_>,
    field: &str,
    v: &ServiceVolumeConfig,
) -> Result<MountKind, VolumeError> {
    let source = v
        .source
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| req.error(field, "a bind mount needs a source"))?;
    let path = PathBuf::from(source);
    if !path.is_absolute() {
        return Err(req.error(field, format!("bind source {source:?} must be an absolute path")));
    }
    let create = v.bind.as_ref().is_none_or(|b| b.create_host_path);
    if !path.exists() {
        if !create {
            return Err(req.error(
                field,
                format!("bind source path {source} does not exist (create_host_path is false)"),
            ));
        }
        fs::create_dir_all(&path).map_err(io_err(&path))?;
    }
    let bind = v.bind.as_ref();
    let propagation = bind.and_then(|b| b.propagation.clone());
    if let Some(p) = &propagation
        && !matches!(p.as_str(), "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave")
    {
        return Err(req.error(field, format!("invalid bind propagation {p:?}")));
    }
    let non_recursive = matches!(bind.and_then(|b| b.recursive.as_deref()), Some("disabled"));
    Ok(MountKind::Bind { source: path, propagation, non_recursive })
}

fn parse_id(
    req: &MountRequest<'_>,
    field: &str,
    what: &str,
    value: Option<&str>,
) -> Result<u32, VolumeError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| req.error(field, format!("invalid {what} {v:?} (a number)"))),
    }
}

/// Writes a secret's or config's content into the container's own dir with its owner and
/// mode, and binds it read-only where the service wants it.
fn file_mount(
    req: &MountRequest<'_>,
    field: &str,
    r: &ServiceFileRef,
    def: Option<&FileObjectConfig>,
    dir: &Path,
    secret: bool,
) -> Result<MountSpec, VolumeError> {
    let kind = if secret { "secret" } else { "config" };
    let def = def
        .ok_or_else(|| req.error(field, format!("{kind} {:?} is not declared at the top level", r.source)))?;
    if def.external {
        return Err(req
            .error(field, format!("external {kind} {:?} needs swarm, which berth does not have", r.source)));
    }
    let content: Vec<u8> = if let Some(file) = &def.file {
        fs::read(file).map_err(|e| req.error(field, format!("{kind} {:?}: {file}: {e}", r.source)))?
    } else if let Some(var) = &def.environment {
        req.environment.get(var).map(|v| v.as_bytes().to_vec()).ok_or_else(|| {
            req.error(field, format!("{kind} {:?}: environment variable {var} is not set", r.source))
        })?
    } else if let Some(text) = &def.content {
        text.as_bytes().to_vec()
    } else {
        return Err(req.error(field, format!("{kind} {:?} has no file, environment or content", r.source)));
    };
    let target = match r.target.as_deref().filter(|t| !t.is_empty()) {
        Some(t) if t.starts_with('/') => t.to_string(),
        Some(t) if secret => format!("/run/secrets/{t}"),
        Some(t) => format!("/{t}"),
        None if secret => format!("/run/secrets/{}", r.source),
        None => format!("/{}", r.source),
    };
    let target = clean_target(req, field, &target)?;
    let uid = parse_id(req, field, "uid", r.uid.as_deref())?;
    let gid = parse_id(req, field, "gid", r.gid.as_deref())?;
    let mode = r.mode.unwrap_or(0o444);
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    let path = dir.join(&r.source);
    fs::write(&path, &content).map_err(io_err(&path))?;
    std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io_err(&path))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777)).map_err(io_err(&path))?;
    Ok(MountSpec {
        target,
        kind: MountKind::Bind { source: path, propagation: None, non_recursive: false },
        read_only: true,
        volume: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Dirs;

    #[test]
    fn anonymous_names_are_stable_per_container_and_target() {
        let a = anonymous_volume_name("p", "web", 1, "/data");
        assert_eq!(a, anonymous_volume_name("p", "web", 1, "/data"));
        assert_ne!(a, anonymous_volume_name("p", "web", 2, "/data"));
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn mounts_secrets_and_errors() {
        let tmp = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dirs = Dirs::new(tmp.path().join("root"), tmp.path().join("run"));
        let vols = Volumes::new(&dirs);
        let secret_file = tmp.path().join("token");
        fs::write(&secret_file, "t0ken").unwrap();
        let host_dir = tmp.path().join("made-by-bind");
        let project = Project::from_json(serde_json::json!({
            "name": "p",
            "services": {"web": {
                "volumes": [
                    {"type": "volume", "source": "data", "target": "/data"},
                    {"type": "volume", "target": "/anon"},
                    {"type": "bind", "source": host_dir.to_str().unwrap(), "target": "/data/inner", "read_only": true},
                    {"type": "tmpfs", "target": "/scratch", "tmpfs": {"size": "1024"}}
                ],
                "tmpfs": ["/run/t:size=64k,mode=700"],
                "secrets": [{"source": "tok", "mode": 256, "uid": "65534"}, {"source": "env", "target": "e"}],
                "configs": [{"source": "conf"}]
            },
            "bad": {"volumes": [{"type": "volume", "source": "nope", "target": "/x"}]},
            "rel": {"volumes": [{"type": "tmpfs", "target": "relative"}]}},
            "volumes": {"data": {}},
            "secrets": {"tok": {"file": secret_file.to_str().unwrap()}, "env": {"environment": "SECRET_VAR"}},
            "configs": {"conf": {"content": "x=1"}}
        }))
        .unwrap();
        vols.create(&super::super::project_volume_specs(&project)[0]).unwrap();
        let image = ResolvedImage {
            id: "sha256:x".into(),
            config: oci_spec::image::ImageConfiguration::default(),
            layer_dirs: vec![],
        };
        let env = HashMap::from([("SECRET_VAR".to_string(), "from-env".to_string())]);
        let none = |_: PeerRef<'_>| None;
        let req = |svc: &'static str| MountRequest {
            project: &project,
            service_name: svc,
            service: &project.services[svc],
            container_id: "c1",
            replica: 1,
            image: &image,
            peer_mounts: &none,
            renew_anonymous: false,
            environment: &env,
        };
        let mounts = service_mounts(&vols, &req("web")).unwrap();
        let targets: Vec<&str> = mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "/data",
                "/anon",
                "/scratch",
                "/conf",
                "/data/inner",
                "/run/t",
                "/run/secrets/tok",
                "/run/secrets/e"
            ]
        );
        assert!(host_dir.is_dir(), "short bind syntax creates the host dir");
        let tok = mounts.iter().find(|m| m.target == "/run/secrets/tok").unwrap();
        let MountKind::Bind { source, .. } = &tok.kind else { panic!("bind") };
        let meta = fs::metadata(source).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.mode() & 0o777, meta.uid(), tok.read_only), (0o400, 65534, true));
        let env_secret = mounts.iter().find(|m| m.target == "/run/secrets/e").unwrap();
        let MountKind::Bind { source, .. } = &env_secret.kind else { panic!("bind") };
        assert_eq!(fs::read_to_string(source).unwrap(), "from-env");
        assert_eq!(
            mounts.iter().find(|m| m.target == "/run/t").unwrap().kind,
            MountKind::Tmpfs { size: Some(65536), mode: Some(0o700) }
        );
        assert!(vols.list().unwrap().iter().any(|v| v.labels.contains_key(LABEL_ANONYMOUS)));
        let e = service_mounts(&vols, &req("bad")).unwrap_err().to_string();
        assert!(e.contains("service bad: volumes[0]"), "{e}");
        let e = service_mounts(&vols, &req("rel")).unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
    }
}
