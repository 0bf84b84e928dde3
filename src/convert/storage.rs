//! Storage: named volumes to PersistentVolumeClaims (or a StatefulSet's claim templates),
//! secrets and configs to Secrets and ConfigMaps mounted file by file, bind-mounted files to
//! ConfigMaps, folders to `hostPath` only when asked, tmpfs and `shm_size` to memory-backed
//! `emptyDir` volumes.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, KeyToPath,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Secret,
    SecretVolumeSource, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::names::{data_key, dns_label, is_label, short_hash, with_suffix};
use super::{ConvertError, ConvertOptions, Out, VolumeExt, service_error};
use crate::compose::model::{FileObjectConfig, Project, ServiceConfig, ServiceFileRef, VolumeConfig};

/// ConfigMaps and Secrets hold at most 1 MiB.
const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// The pod-level storage of one service.
#[derive(Debug, Default)]
pub(crate) struct Mounts {
    /// Pod volumes.
    pub volumes: Vec<Volume>,
    /// The container's mounts.
    pub mounts: Vec<VolumeMount>,
    /// A StatefulSet's claim templates (one claim per replica).
    pub claim_templates: Vec<PersistentVolumeClaim>,
    /// The group secret and config files get (`fsGroup`), from their `gid`.
    pub fs_group: Option<i64>,
}

fn volume_ext(key: &str, v: &VolumeConfig) -> Result<VolumeExt, ConvertError> {
    let Some(x) = v.extensions.get(super::EXTENSION) else { return Ok(VolumeExt::default()) };
    serde_json::from_value(x.clone()).map_err(|e| ConvertError::Resource {
        scope: format!("volume {key:?}"),
        message: format!("{}: {e} (known: size, storage_class, access_mode)", super::EXTENSION),
    })
}

/// Whether a service's named volumes are per replica (a StatefulSet's claim templates).
pub(crate) fn uses_named_volumes(s: &ServiceConfig) -> bool {
    s.volumes.iter().any(|v| v.r#type == "volume" && v.source.as_deref().is_some_and(|s| !s.is_empty()))
}

fn pvc(out: &Out, key: &str, v: &VolumeConfig) -> Result<PersistentVolumeClaim, ConvertError> {
    let ext = volume_ext(key, v)?;
    let size = ext.size.clone().unwrap_or_else(|| "1Gi".into());
    let mode = ext.access_mode.clone().unwrap_or_else(|| "ReadWriteOnce".into());
    if !matches!(mode.as_str(), "ReadWriteOnce" | "ReadWriteMany" | "ReadOnlyMany" | "ReadWriteOncePod") {
        return Err(ConvertError::Resource {
            scope: format!("volume {key:?}"),
            message: format!("{}.access_mode {mode:?} is not a Kubernetes access mode", super::EXTENSION),
        });
    }
    let mut meta = out.meta(&dns_label(key));
    for (k, val) in &v.labels {
        if is_label(k, val) {
            meta.labels.get_or_insert_default().insert(k.clone(), val.clone());
        }
    }
    Ok(PersistentVolumeClaim {
        metadata: meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![mode]),
            storage_class_name: ext.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(size))])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The content of a secret or config.
fn content(
    kind: &str,
    key: &str,
    def: &FileObjectConfig,
    opts: &ConvertOptions,
) -> Result<Vec<u8>, ConvertError> {
    let err = |message: String| ConvertError::Resource { scope: format!("{kind} {key:?}"), message };
    let bytes = if let Some(file) = &def.file {
        std::fs::read(file).map_err(|e| err(format!("{file}: {e}")))?
    } else if let Some(var) = &def.environment {
        opts.environment
            .get(var)
            .map(|v| v.as_bytes().to_vec())
            .ok_or_else(|| err(format!("environment variable {var} is not set")))?
    } else if let Some(text) = &def.content {
        text.as_bytes().to_vec()
    } else {
        return Err(err("has no file, environment or content".into()));
    };
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(err(format!(
            "{} bytes is more than a {} can hold (1 MiB)",
            bytes.len(),
            if kind == "secret" { "Secret" } else { "ConfigMap" }
        )));
    }
    Ok(bytes)
}

/// A ConfigMap holding `bytes` under `key` (as text when it is UTF-8).
fn config_map(out: &Out, name: &str, key: &str, bytes: Vec<u8>) -> ConfigMap {
    let (data, binary_data) = match String::from_utf8(bytes) {
        Ok(text) => (Some(BTreeMap::from([(key.to_string(), text)])), None),
        Err(e) => (None, Some(BTreeMap::from([(key.to_string(), ByteString(e.into_bytes()))]))),
    };
    ConfigMap { metadata: out.meta(name), data, binary_data, ..Default::default() }
}

/// The project-wide objects: claims for named volumes that some Deployment or Job shares,
/// Secrets and ConfigMaps for the secrets and configs services use.
pub(crate) fn resources(project: &Project, opts: &ConvertOptions, out: &mut Out) -> Result<(), ConvertError> {
    let jobs = super::workload::job_services(project);
    for (key, v) in &project.volumes {
        let users: Vec<&String> = project
            .services
            .iter()
            .filter(|(_, s)| {
                s.volumes.iter().any(|m| m.r#type == "volume" && m.source.as_deref() == Some(key))
            })
            .map(|(n, _)| n)
            .collect();
        if users.is_empty() {
            continue;
        }
        let scope = format!("volume {key:?}");
        if v.external {
            out.report.note(
                &scope,
                "external",
                format!(
                    "a PersistentVolumeClaim named {:?} must exist in the namespace",
                    dns_label(v.name.as_deref().unwrap_or(key))
                ),
            );
            continue;
        }
        if v.driver.as_deref().is_some_and(|d| d != "local") || !v.driver_opts.is_empty() {
            out.report.dropped(
                &scope,
                "driver_opts",
                "storage comes from the claim's storage class; set x-berth-kubernetes.storage_class",
            );
        }
        let shared = users
            .iter()
            .filter(|n| !is_stateful(&project.services[n.as_str()], jobs.contains(n.as_str())))
            .count();
        if shared > 0 {
            out.add(&scope, &dns_label(key), &pvc(out, key, v)?)?;
        }
        if users.len() > 1 {
            let ext = volume_ext(key, v)?;
            if ext.access_mode.as_deref().is_none_or(|m| m == "ReadWriteOnce") {
                out.report.note(
                    &scope,
                    "volumes",
                    format!(
                        "shared by services {}: a ReadWriteOnce claim mounts on one node only, so their \
                     pods must be scheduled together (or set x-berth-kubernetes.access_mode: ReadWriteMany)",
                        users.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ")
                    ),
                );
            }
        }
    }
    let used = |pick: fn(&ServiceConfig) -> &Vec<ServiceFileRef>, key: &str| {
        project.services.values().any(|s| pick(s).iter().any(|r| r.source == key))
    };
    for (key, def) in &project.secrets {
        if !used(|s| &s.secrets, key) {
            continue;
        }
        let scope = format!("secret {key:?}");
        if def.external {
            out.report.note(
                &scope,
                "external",
                format!(
                    "a Secret named {:?} with the key {:?} must exist in the namespace",
                    dns_label(def.name.as_deref().unwrap_or(key)),
                    data_key(key)
                ),
            );
            continue;
        }
        let bytes = content("secret", key, def, opts)?;
        let secret = Secret {
            metadata: out.meta(&dns_label(key)),
            data: Some(BTreeMap::from([(data_key(key), ByteString(bytes))])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        out.add(&scope, &dns_label(key), &secret)?;
    }
    for (key, def) in &project.configs {
        if !used(|s| &s.configs, key) {
            continue;
        }
        let scope = format!("config {key:?}");
        if def.external {
            out.report.note(
                &scope,
                "external",
                format!(
                    "a ConfigMap named {:?} with the key {:?} must exist in the namespace",
                    dns_label(def.name.as_deref().unwrap_or(key)),
                    data_key(key)
                ),
            );
            continue;
        }
        let bytes = content("config", key, def, opts)?;
        let name = dns_label(key);
        out.add(&scope, &name, &config_map(out, &name, &data_key(key), bytes))?;
    }
    Ok(())
}

/// Whether a service runs as a StatefulSet: several replicas, each with its own named volumes.
pub(crate) fn is_stateful(s: &ServiceConfig, job: bool) -> bool {
    !job && s.replicas() > 1 && uses_named_volumes(s)
}

fn file_name(path: &str) -> String {
    Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "file".into())
}

/// The volumes and mounts of one service.
pub(crate) fn mounts(
    project: &Project,
    name: &str,
    s: &ServiceConfig,
    stateful: bool,
    opts: &ConvertOptions,
    out: &mut Out,
) -> Result<Mounts, ConvertError> {
    let scope = format!("service {name:?}");
    let k8s = dns_label(name);
    let mut m = Mounts::default();
    let mount = |m: &mut Mounts, volume: Volume, path: &str, sub_path: Option<String>, read_only: bool| {
        m.mounts.push(VolumeMount {
            name: volume.name.clone(),
            mount_path: path.to_string(),
            sub_path,
            read_only: read_only.then_some(true),
            ..Default::default()
        });
        if !m.volumes.iter().any(|v| v.name == volume.name) {
            m.volumes.push(volume);
        }
    };
    for (i, v) in s.volumes.iter().enumerate() {
        let at = format!("volumes[{i}]");
        let source = v.source.as_deref().filter(|s| !s.is_empty());
        match (v.r#type.as_str(), source) {
            ("volume", Some(key)) => {
                let def = project.volumes.get(key).cloned().unwrap_or_default();
                let claim =
                    if def.external { dns_label(def.name.as_deref().unwrap_or(key)) } else { dns_label(key) };
                let sub_path = v.volume.as_ref().and_then(|o| o.subpath.clone());
                if v.volume.as_ref().is_none_or(|o| !o.nocopy) {
                    out.report.note(&scope, &at, format!(
                        "Kubernetes does not copy the image's files at {} into a new claim, as berth and docker do",
                        v.target
                    ));
                }
                if stateful && !def.external {
                    if !m.claim_templates.iter().any(|c| c.metadata.name.as_deref() == Some(claim.as_str())) {
                        let mut t = pvc(out, key, &def)?;
                        t.metadata.labels = None;
                        m.claim_templates.push(t);
                    }
                    m.mounts.push(VolumeMount {
                        name: claim,
                        mount_path: v.target.clone(),
                        sub_path,
                        read_only: v.read_only.then_some(true),
                        ..Default::default()
                    });
                } else {
                    let volume = Volume {
                        name: claim.clone(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: claim,
                            read_only: None,
                        }),
                        ..Default::default()
                    };
                    mount(&mut m, volume, &v.target, sub_path, v.read_only);
                }
            }
            ("volume", None) => {
                out.report.note(
                    &scope,
                    &at,
                    "an anonymous volume becomes an emptyDir: it lives as long as the pod",
                );
                let volume = Volume {
                    name: format!("anon-{i}"),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Default::default()
                };
                mount(&mut m, volume, &v.target, None, v.read_only);
            }
            ("tmpfs", _) => {
                let size = v.tmpfs.as_ref().and_then(|t| t.size).map(|b| Quantity(b.0.to_string()));
                if v.tmpfs.as_ref().is_some_and(|t| t.mode.is_some()) {
                    out.report.dropped(
                        &scope,
                        &format!("{at}.tmpfs.mode"),
                        "an emptyDir's mode is not configurable",
                    );
                }
                let volume = Volume {
                    name: format!("tmpfs-{i}"),
                    empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), size_limit: size }),
                    ..Default::default()
                };
                mount(&mut m, volume, &v.target, None, v.read_only);
            }
            ("bind", Some(path)) => {
                let meta = std::fs::metadata(path);
                if meta.as_ref().is_ok_and(|md| md.is_file()) {
                    let bytes =
                        std::fs::read(path).map_err(|e| service_error(name, format!("{at}: {path}: {e}")))?;
                    if bytes.len() > MAX_OBJECT_BYTES {
                        return Err(service_error(
                            name,
                            format!("{at}: {path} is larger than a ConfigMap can hold (1 MiB)"),
                        ));
                    }
                    let cm = with_suffix(&k8s, &format!("file-{}", short_hash(&v.target)));
                    let key = data_key(&file_name(path));
                    if !out.has("ConfigMap", &cm) {
                        out.add(&scope, &cm, &config_map(out, &cm, &key, bytes))?;
                    }
                    out.report.note(&scope, &at, format!(
                        "the file {path} is copied into ConfigMap {cm:?}: read-only, and later changes need a new convert"
                    ));
                    let volume = Volume {
                        name: format!("bind-{i}"),
                        config_map: Some(ConfigMapVolumeSource { name: cm, ..Default::default() }),
                        ..Default::default()
                    };
                    mount(&mut m, volume, &v.target, Some(key), true);
                } else if opts.host_path {
                    out.report.note(
                        &scope,
                        &at,
                        format!(
                            "{path} becomes a hostPath volume: it must exist on every node the pod may run on"
                        ),
                    );
                    let create = v.bind.as_ref().is_none_or(|b| b.create_host_path);
                    // A socket or device is mounted as it is; only folders are created.
                    let special = meta.as_ref().is_ok_and(|md| !md.is_dir());
                    let volume = Volume {
                        name: format!("bind-{i}"),
                        host_path: Some(HostPathVolumeSource {
                            path: path.to_string(),
                            type_: (!special)
                                .then(|| if create { "DirectoryOrCreate" } else { "Directory" }.into()),
                        }),
                        ..Default::default()
                    };
                    mount(&mut m, volume, &v.target, None, v.read_only);
                } else {
                    return Err(service_error(
                        name,
                        format!(
                            "{at}: the bind-mounted {} {path} does not exist on a cluster's nodes; use a named \
                         volume, or --host-path to mount the same path from each node",
                            if meta.as_ref().is_ok_and(|md| !md.is_dir()) { "path" } else { "folder" }
                        ),
                    ));
                }
            }
            (other, _) => {
                out.report.dropped(
                    &scope,
                    &at,
                    format!("a mount of type {other:?} has no Kubernetes equivalent"),
                );
            }
        }
    }
    for (field, refs, secret) in [("secrets", &s.secrets, true), ("configs", &s.configs, false)] {
        for (i, r) in refs.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let defs = if secret { &project.secrets } else { &project.configs };
            let Some(def) = defs.get(&r.source) else {
                return Err(service_error(
                    name,
                    format!("{at}: {:?} is not declared at the top level", r.source),
                ));
            };
            let target = match r.target.as_deref().filter(|t| !t.is_empty()) {
                Some(t) if t.starts_with('/') => t.to_string(),
                Some(t) if secret => format!("/run/secrets/{t}"),
                Some(t) => format!("/{t}"),
                None if secret => format!("/run/secrets/{}", r.source),
                None => format!("/{}", r.source),
            };
            let object = dns_label(def.name.as_deref().filter(|_| def.external).unwrap_or(&r.source));
            let path = file_name(&target);
            // Compose's default mode is 0444; Kubernetes' would be 0644.
            let mode = i32::try_from(r.mode.unwrap_or(0o444)).ok();
            let items = Some(vec![KeyToPath { key: data_key(&r.source), path: path.clone(), mode }]);
            let vname = format!("{}-{i}", if secret { "secret" } else { "config" });
            let volume = if secret {
                Volume {
                    name: vname,
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(object),
                        items,
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                Volume {
                    name: vname,
                    config_map: Some(ConfigMapVolumeSource { name: object, items, ..Default::default() }),
                    ..Default::default()
                }
            };
            mount(&mut m, volume, &target, Some(path), true);
            if let Some(uid) = r.uid.as_deref().filter(|u| !u.is_empty() && *u != "0") {
                out.report.dropped(&scope, &format!("{at}.uid"), format!(
                    "files of Secret and ConfigMap volumes belong to root; uid {uid} cannot be set (fsGroup sets their group)"
                ));
            }
            if let Some(gid) = r.gid.as_deref().filter(|g| !g.is_empty()) {
                let gid: i64 = gid
                    .parse()
                    .map_err(|_| service_error(name, format!("{at}.gid: {gid:?} is not a number")))?;
                match m.fs_group {
                    Some(g) if g != gid => out.report.dropped(
                        &scope,
                        &format!("{at}.gid"),
                        format!("a pod has one fsGroup ({g}); gid {gid} cannot be set too"),
                    ),
                    _ => {
                        m.fs_group = Some(gid);
                        out.report.note(&scope, &format!("{at}.gid"), format!(
                            "becomes the pod's fsGroup {gid}, which also owns every other volume of the pod"
                        ));
                    }
                }
            }
        }
    }
    if let Some(size) = s.shm_size {
        let volume = Volume {
            name: "dshm".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".into()),
                size_limit: Some(Quantity(size.0.to_string())),
            }),
            ..Default::default()
        };
        mount(&mut m, volume, "/dev/shm", None, false);
    }
    for (i, t) in s.tmpfs.iter().enumerate() {
        let mut parts = t.split(':');
        let path = parts.next().unwrap_or_default().to_string();
        let mut size = None;
        for opt in parts.flat_map(|o| o.split(',')) {
            match opt.strip_prefix("size=") {
                Some(v) => {
                    let b = crate::compose::model::Bytes::parse(v)
                        .map_err(|e| service_error(name, format!("tmpfs {t:?}: {e}")))?;
                    size = Some(Quantity(b.0.to_string()));
                }
                None if opt.is_empty() => {}
                None => out.report.dropped(
                    &scope,
                    &format!("tmpfs[{i}]"),
                    format!("option {opt:?} of an emptyDir cannot be set"),
                ),
            }
        }
        let volume = Volume {
            name: format!("tmpfs-x{i}"),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), size_limit: size }),
            ..Default::default()
        };
        mount(&mut m, volume, &path, None, false);
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::tests::{conv, get, try_conv};
    use super::super::{ConvertOptions, Level};

    #[test]
    fn named_volumes_become_claims_shared_with_a_warning() {
        let c = conv(json!({
            "services": {
                "a": {"image": "x", "volumes": [{"type": "volume", "source": "data", "target": "/d"}]},
                "b": {"image": "y", "volumes": [{"type": "volume", "source": "data", "target": "/e", "read_only": true}]}
            },
            "volumes": {"data": {"x-berth-kubernetes": {"size": "5Gi", "storage_class": "fast"}}}
        }));
        let pvc = get(&c, "PersistentVolumeClaim", "data");
        assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");
        assert_eq!(pvc["spec"]["storageClassName"], "fast");
        assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));
        assert!(c.report.has("volume \"data\"", "volumes", Level::Note));
        let b = get(&c, "Deployment", "b");
        assert_eq!(b["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "data");
        assert_eq!(
            b["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0],
            json!({"mountPath": "/e", "name": "data", "readOnly": true})
        );
    }

    #[test]
    fn replicas_with_named_volumes_make_a_stateful_set() {
        let c = conv(json!({
            "services": {"db": {"image": "x", "deploy": {"replicas": 3}, "volumes": [{"type": "volume", "source": "data", "target": "/d"}]}},
            "volumes": {"data": {}}
        }));
        let ss = get(&c, "StatefulSet", "db");
        assert_eq!(ss["spec"]["replicas"], 3);
        assert_eq!(ss["spec"]["serviceName"], "db");
        assert_eq!(ss["spec"]["volumeClaimTemplates"][0]["metadata"]["name"], "data");
        assert!(!c.manifests.iter().any(|m| m.kind == "PersistentVolumeClaim"));
    }

    #[test]
    fn secrets_configs_and_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("nginx.conf");
        std::fs::write(&file, "worker_processes 1;\n").expect("write");
        let token = dir.path().join("token");
        std::fs::write(&token, b"\xff\x00secret").expect("write");
        let c = conv(json!({
            "services": {"web": {"image": "nginx",
                "volumes": [{"type": "bind", "source": file, "target": "/etc/nginx/nginx.conf"},
                            {"type": "tmpfs", "target": "/cache", "tmpfs": {"size": "1048576"}}],
                "secrets": [{"source": "token", "mode": 0o400, "gid": "101"}],
                "configs": [{"source": "site", "target": "/etc/site.conf", "uid": "33"}],
                "shm_size": "67108864", "tmpfs": ["/run:size=1m"]}},
            "secrets": {"token": {"file": token}},
            "configs": {"site": {"content": "hello"}}
        }));
        assert_eq!(get(&c, "Secret", "token")["data"]["token"], "/wBzZWNyZXQ=");
        assert_eq!(get(&c, "ConfigMap", "site")["data"]["site"], "hello");
        let pod = &get(&c, "Deployment", "web")["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["fsGroup"], 101);
        let vols = pod["volumes"].as_array().expect("volumes");
        let secret = vols.iter().find(|v| v["name"] == "secret-0").expect("secret volume");
        assert_eq!(secret["secret"]["items"][0], json!({"key": "token", "path": "token", "mode": 0o400}));
        let mounts = pod["containers"][0]["volumeMounts"].as_array().expect("mounts");
        assert!(mounts.contains(&json!({"mountPath": "/run/secrets/token", "name": "secret-0", "readOnly": true, "subPath": "token"})));
        assert!(mounts.contains(&json!({"mountPath": "/etc/site.conf", "name": "config-0", "readOnly": true, "subPath": "site.conf"})));
        assert!(mounts.iter().any(|m| m["mountPath"] == "/dev/shm"));
        let tmp = vols.iter().find(|v| v["name"] == "tmpfs-1").expect("tmpfs");
        assert_eq!(tmp["emptyDir"], json!({"medium": "Memory", "sizeLimit": "1048576"}));
        let run = vols.iter().find(|v| v["name"] == "tmpfs-x0").expect("tmpfs list");
        assert_eq!(run["emptyDir"]["sizeLimit"], "1048576");
        let cm = c
            .manifests
            .iter()
            .find(|m| m.kind == "ConfigMap" && m.name.starts_with("web-file-"))
            .expect("bind configmap");
        assert_eq!(cm.value["data"]["nginx.conf"], "worker_processes 1;\n");
        assert!(c.report.has("service \"web\"", "configs[0].uid", Level::Dropped));
    }

    #[test]
    fn bind_folders_need_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = json!({"services": {"a": {"image": "x", "volumes": [{"type": "bind", "source": dir.path(), "target": "/d"}]}}});
        let err = try_conv(project.clone(), ConvertOptions::default()).expect_err("refused");
        assert!(err.to_string().contains("--host-path"), "{err}");
        let c =
            try_conv(project, ConvertOptions { host_path: true, ..Default::default() }).expect("converts");
        let pod = &get(&c, "Deployment", "a")["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"][0]["hostPath"]["type"], "DirectoryOrCreate");
    }

    #[test]
    fn secret_from_a_missing_environment_variable_is_an_error() {
        let p = json!({"services": {"a": {"image": "x", "secrets": [{"source": "s"}]}}, "secrets": {"s": {"environment": "NOPE_X"}}});
        assert!(try_conv(p, ConvertOptions::default()).is_err());
    }
}
