//! A loaded [`Project`] to Kubernetes objects (`berth convert`): typed `k8s-openapi` objects for
//! the 1.33 API, written as multi-document YAML or a JSON `List`, in a deterministic order, with a
//! [`Report`] of every compose key that was not converted (or behaves differently) and why.
//!
//! The mapping (README, "Kubernetes"): a service becomes a Deployment, a StatefulSet (replicas
//! and named volumes) or a Job (a dependent waits for `service_completed_successfully`), plus a
//! Service so its name resolves as on berth; `depends_on` conditions become init containers;
//! named volumes become PersistentVolumeClaims; secrets, configs and bind-mounted files become
//! Secrets and ConfigMaps. Nothing here touches the host beyond reading the files a project
//! names (bind-mounted files, secret and config files).

mod names;
mod report;
mod services;
mod storage;
mod workload;

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde_json::Value as Json;

use crate::compose::model::{Project, ServiceConfig};

pub use names::dns_label;
pub use report::{Level, Report};

/// The extension field that carries Kubernetes-only settings, on a service or a volume.
pub const EXTENSION: &str = "x-berth-kubernetes";

/// A conversion that cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A service (or what it uses) cannot be expressed.
    #[error("service {service:?}: {message}")]
    Service {
        /// The compose service.
        service: String,
        /// What is wrong.
        message: String,
    },
    /// A top-level element (volume, secret, config) cannot be expressed.
    #[error("{scope}: {message}")]
    Resource {
        /// `volume "data"`, `secret "token"`.
        scope: String,
        /// What is wrong.
        message: String,
    },
    /// `--strict` and some keys were not converted.
    #[error("{0} compose key(s) could not be converted (listed above); nothing was written (--strict)")]
    Strict(usize),
    /// Writing the manifests as text (or an object as JSON) failed.
    #[error("cannot render the manifests: {}{source}", kind.map(|k| format!("{k}: ")).unwrap_or_default())]
    Render {
        /// The kind of object, when one object failed.
        kind: Option<&'static str>,
        /// Why.
        source: serde_json::Error,
    },
}

fn service_error(service: &str, message: impl Into<String>) -> ConvertError {
    ConvertError::Service { service: service.to_string(), message: message.into() }
}

/// How to convert.
#[derive(Debug, Clone, Default)]
pub struct ConvertOptions {
    /// Namespace written into every object (none: the one `kubectl` uses).
    pub namespace: Option<String>,
    /// Bind-mounted folders become `hostPath` volumes (else they are an error: a folder on
    /// this host does not exist on the cluster's nodes).
    pub host_path: bool,
    /// The project's interpolation environment (secrets given by `environment:`).
    pub environment: HashMap<String, String>,
}

/// One Kubernetes object.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `Deployment`, `Service`...
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// The object as the API reads it (with `apiVersion` and `kind`).
    pub value: Json,
}

/// The result of [`convert`].
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The objects, in apply order (see [`kind_rank`]), then by name.
    pub manifests: Vec<Manifest>,
    /// What was not converted, and what behaves differently.
    pub report: Report,
}

/// Kubernetes-only settings of a service (`x-berth-kubernetes:` on the service).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServiceExt {
    /// `NodePort` or `LoadBalancer`: published ports get a Service of this type.
    pub service_type: Option<String>,
    /// The healthcheck is also the liveness probe (restart the container when it fails).
    pub liveness: bool,
}

/// Kubernetes-only settings of a named volume (`x-berth-kubernetes:` on the volume).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct VolumeExt {
    /// Requested size (a Kubernetes quantity, `1Gi` by default).
    pub size: Option<String>,
    /// Storage class (the cluster's default when unset).
    pub storage_class: Option<String>,
    /// Access mode (`ReadWriteOnce` by default; `ReadWriteMany` when the storage allows).
    pub access_mode: Option<String>,
}

pub(crate) fn service_ext(name: &str, s: &ServiceConfig) -> Result<ServiceExt, ConvertError> {
    let Some(v) = s.extensions.get(EXTENSION) else { return Ok(ServiceExt::default()) };
    let ext: ServiceExt = serde_json::from_value(v.clone())
        .map_err(|e| service_error(name, format!("{EXTENSION}: {e} (known: service_type, liveness)")))?;
    match ext.service_type.as_deref() {
        None | Some("NodePort" | "LoadBalancer") => Ok(ext),
        Some(other) => Err(service_error(
            name,
            format!("{EXTENSION}.service_type: {other:?} is not NodePort or LoadBalancer"),
        )),
    }
}

/// Everything one conversion builds: objects by (kind rank, name), and the report.
pub(crate) struct Out {
    objects: BTreeMap<(u8, String, String), Json>,
    pub report: Report,
    pub namespace: Option<String>,
    pub project: String,
}

/// The order objects are applied in: what others refer to first.
pub fn kind_rank(kind: &str) -> u8 {
    match kind {
        "ServiceAccount" => 0,
        "Role" => 1,
        "RoleBinding" => 2,
        "Secret" => 3,
        "ConfigMap" => 4,
        "PersistentVolumeClaim" => 5,
        "Service" => 6,
        "Job" => 7,
        "StatefulSet" => 8,
        _ => 9,
    }
}

impl Out {
    /// Adds an object; its namespace is set here. A second object of the same kind and name
    /// is an error (two compose names that became one Kubernetes name).
    pub fn add<T: serde::Serialize + k8s_openapi::Resource>(
        &mut self,
        scope: &str,
        name: &str,
        object: &T,
    ) -> Result<(), ConvertError> {
        let mut value =
            serde_json::to_value(object).map_err(|source| ConvertError::Render { kind: Some(T::KIND), source })?;
        if let (Some(ns), Some(meta)) =
            (&self.namespace, value.get_mut("metadata").and_then(Json::as_object_mut))
        {
            meta.insert("namespace".into(), Json::String(ns.clone()));
        }
        // apiVersion, kind and metadata first, as people write manifests; the rest as the
        // API documents them (alphabetically).
        if let Json::Object(map) = &mut value {
            let mut ordered = serde_json::Map::new();
            for key in ["apiVersion", "kind", "metadata"] {
                if let Some(v) = map.remove(key) {
                    ordered.insert(key.to_string(), v);
                }
            }
            ordered.append(map);
            *map = ordered;
        }
        let key = (kind_rank(T::KIND), T::KIND.to_string(), name.to_string());
        if self.objects.contains_key(&key) {
            return Err(ConvertError::Resource {
                scope: scope.to_string(),
                message: format!(
                    "{} {name:?} is made twice: two compose names give the same Kubernetes name",
                    T::KIND
                ),
            });
        }
        self.objects.insert(key, value);
        Ok(())
    }

    /// Whether an object of this kind and name exists already.
    pub fn has(&self, kind: &str, name: &str) -> bool {
        self.objects.contains_key(&(kind_rank(kind), kind.to_string(), name.to_string()))
    }

    /// The labels every object carries: which project made it, and that berth did.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/managed-by".to_string(), "berth".to_string()),
            (crate::labels::PROJECT.to_string(), dns_label(&self.project)),
        ])
    }

    /// Object metadata with `name` and the common labels.
    pub fn meta(&self, name: &str) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(self.common_labels()),
            ..Default::default()
        }
    }
}

/// Converts `project` (already loaded: interpolated, merged, profiles applied) to Kubernetes
/// objects. Errors name the service or resource that cannot be expressed.
pub fn convert(project: &Project, opts: &ConvertOptions) -> Result<Conversion, ConvertError> {
    if let Some(ns) = &opts.namespace
        && dns_label(ns) != *ns
    {
        return Err(ConvertError::Resource {
            scope: "--namespace".into(),
            message: format!("{ns:?} is not a DNS-1123 label (lower case letters, digits and '-')"),
        });
    }
    let mut out = Out {
        objects: BTreeMap::new(),
        report: Report::default(),
        namespace: opts.namespace.clone(),
        project: project.name.clone(),
    };
    // Two compose names that give one Kubernetes name cannot both resolve.
    let mut seen: BTreeMap<String, &str> = BTreeMap::new();
    for name in project.services.keys() {
        let k = dns_label(name);
        if let Some(other) = seen.insert(k.clone(), name) {
            return Err(service_error(
                name,
                format!("its Kubernetes name {k:?} is also service {other:?}'s; rename one"),
            ));
        }
        if k != *name {
            out.report.note(
                &format!("service {name:?}"),
                "name",
                format!("not a DNS-1123 label: other services reach it as {k:?} on Kubernetes"),
            );
        }
    }
    let user_networks: Vec<&String> = project.networks.keys().filter(|k| *k != "default").collect();
    if !user_networks.is_empty() {
        out.report.dropped(
            "project",
            "networks",
            format!(
                "pods share one flat network on Kubernetes: the isolation of networks {} is not \
                 converted (write NetworkPolicies)",
                user_networks.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
            ),
        );
    }
    let jobs = workload::job_services(project);
    storage::resources(project, opts, &mut out)?;
    for (name, service) in &project.services {
        let ext = service_ext(name, service)?;
        services::services(project, name, service, &ext, &mut out)?;
        workload::workload(project, name, service, &ext, jobs.contains(name.as_str()), opts, &mut out)?;
    }
    let manifests =
        out.objects.into_iter().map(|((_, kind, name), value)| Manifest { kind, name, value }).collect();
    Ok(Conversion { manifests, report: out.report })
}

/// Output format of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML documents separated by `---`.
    Yaml,
    /// A `v1` `List` holding every object.
    Json,
}

/// Whether a YAML 1.1 reader would take `s`, written plain, for something else than this
/// string. kubectl reads YAML as 1.1 (`y`, `on`, `1_000`, `2024-01-01` are a bool, a number and
/// a time there), while saphyr's emitter quotes only what YAML 1.2 would misread; so every
/// string that starts like a number or is one of those words is written double-quoted.
fn ambiguous_in_yaml_1_1(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
        || matches!(
            s.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~" | ""
        )
}

/// One object as a YAML document (no `---`), with YAML-1.1-ambiguous strings double-quoted.
fn yaml_document(value: &Json) -> String {
    // Such strings are swapped for plain tokens that saphyr writes as they are, and the tokens
    // then for the strings in JSON's double-quoted syntax (which is YAML's).
    fn collect(v: &Json, all: &mut Vec<String>) {
        match v {
            Json::String(s) => all.push(s.clone()),
            Json::Array(items) => items.iter().for_each(|i| collect(i, all)),
            Json::Object(map) => map.iter().for_each(|(k, v)| {
                all.push(k.clone());
                collect(v, all);
            }),
            _ => {}
        }
    }
    fn swap(v: &Json, prefix: &str, quoted: &mut Vec<String>) -> Json {
        let token = |s: &str, quoted: &mut Vec<String>| {
            quoted.push(serde_json::to_string(s).unwrap_or_default());
            format!("{prefix}{}q", quoted.len() - 1)
        };
        match v {
            Json::String(s) if ambiguous_in_yaml_1_1(s) => Json::String(token(s, quoted)),
            Json::Array(items) => Json::Array(items.iter().map(|i| swap(i, prefix, quoted)).collect()),
            Json::Object(map) => Json::Object(
                map.iter()
                    .map(|(k, v)| {
                        let key = if ambiguous_in_yaml_1_1(k) { token(k, quoted) } else { k.clone() };
                        (key, swap(v, prefix, quoted))
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    let mut all = Vec::new();
    collect(value, &mut all);
    let mut prefix = "zberthq".to_string();
    while all.iter().any(|s| s.contains(&prefix)) {
        prefix.insert(0, 'z');
    }
    let mut quoted = Vec::new();
    let swapped = swap(value, &prefix, &mut quoted);
    let mut text = crate::compose::render::yaml_text(&swapped);
    // Highest first, so that token 1 never replaces the start of token 12 (they end in `q`
    // anyway).
    for (i, q) in quoted.iter().enumerate().rev() {
        text = text.replace(&format!("{prefix}{i}q"), q);
    }
    text
}

/// One object as text in `format` (a file of its own).
pub fn render_one(m: &Manifest, format: Format) -> Result<String, ConvertError> {
    match format {
        Format::Yaml => Ok(yaml_document(&m.value)),
        Format::Json => serde_json::to_string_pretty(&m.value)
            .map(|s| s + "\n")
            .map_err(|source| ConvertError::Render { kind: None, source }),
    }
}

/// All objects as one text: YAML documents, each starting with `---`, or a JSON `List`.
pub fn render(manifests: &[Manifest], format: Format) -> Result<String, ConvertError> {
    match format {
        Format::Yaml => {
            let mut text = String::new();
            for m in manifests {
                text.push_str("---\n");
                text.push_str(&yaml_document(&m.value));
            }
            Ok(text)
        }
        Format::Json => {
            let list = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": manifests.iter().map(|m| m.value.clone()).collect::<Vec<_>>(),
            });
            serde_json::to_string_pretty(&list)
                .map(|s| s + "\n")
                .map_err(|source| ConvertError::Render { kind: None, source })
        }
    }
}

/// File name of one object when writing to a folder: `<name>-<kind>.yaml`.
pub fn file_name(m: &Manifest, format: Format) -> String {
    let ext = match format {
        Format::Yaml => "yaml",
        Format::Json => "json",
    };
    format!("{}-{}.{ext}", m.name, m.kind.to_ascii_lowercase())
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// Converts a project given as its normalized JSON tree.
    pub(crate) fn conv(project: Json) -> Conversion {
        try_conv(project, ConvertOptions::default()).expect("converts")
    }

    pub(crate) fn try_conv(project: Json, opts: ConvertOptions) -> Result<Conversion, ConvertError> {
        let mut p = Project::from_json(project).expect("decodes");
        if p.name.is_empty() {
            p.name = "demo".into();
        }
        convert(&p, &opts)
    }

    /// The object of `kind` named `name`.
    pub(crate) fn get<'a>(c: &'a Conversion, kind: &str, name: &str) -> &'a Json {
        c.manifests.iter().find(|m| m.kind == kind && m.name == name).map(|m| &m.value).unwrap_or_else(|| {
            panic!(
                "no {kind} {name}: {:?}",
                c.manifests.iter().map(|m| (&m.kind, &m.name)).collect::<Vec<_>>()
            )
        })
    }

    #[test]
    fn output_is_ordered_and_namespaced() {
        let c = try_conv(
            json!({"services": {"web": {"image": "nginx", "ports": [{"target": 80}]}, "a": {"image": "x"}}}),
            ConvertOptions { namespace: Some("shop".into()), ..Default::default() },
        )
        .expect("converts");
        let kinds: Vec<(&str, &str)> =
            c.manifests.iter().map(|m| (m.kind.as_str(), m.name.as_str())).collect();
        assert_eq!(kinds, [("Service", "a"), ("Service", "web"), ("Deployment", "a"), ("Deployment", "web")]);
        assert_eq!(c.manifests[0].value["metadata"]["namespace"], "shop");
        let yaml = render(&c.manifests, Format::Yaml).expect("renders");
        assert!(yaml.starts_with("---\napiVersion: v1\nkind: Service\nmetadata:\n"), "{yaml}");
        assert_eq!(yaml.matches("---\n").count(), 4);
        let list: Json =
            serde_json::from_str(&render(&c.manifests, Format::Json).expect("renders")).expect("json");
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().map(Vec::len), Some(4));
        assert_eq!(file_name(&c.manifests[3], Format::Yaml), "web-deployment.yaml");
    }

    #[test]
    fn strings_yaml_1_1_would_misread_are_quoted() {
        let v =
            json!({"env": ["y", "on", "1_000", "2024-01-01", "-x", "plain", "zberthq0q", "a\nb"], "y": 1});
        let text = yaml_document(&v);
        assert_eq!(
            text,
            "env:\n  - \"y\"\n  - \"on\"\n  - \"1_000\"\n  - \"2024-01-01\"\n  - \"-x\"\n  - plain\n  - zberthq0q\n  - |-\n    a\n    b\n\"y\": 1\n"
        );
    }

    #[test]
    fn bad_namespace_and_clashing_names_are_errors() {
        let bad = try_conv(
            json!({"services": {"a": {"image": "x"}}}),
            ConvertOptions { namespace: Some("No_Good".into()), ..Default::default() },
        );
        assert!(bad.is_err());
        let clash = try_conv(
            json!({"services": {"a_b": {"image": "x"}, "a-b": {"image": "y"}}}),
            ConvertOptions::default(),
        );
        assert!(matches!(clash, Err(ConvertError::Service { .. })), "{clash:?}");
    }

    #[test]
    fn extension_is_checked() {
        let bad = try_conv(
            json!({"services": {"a": {"image": "x", "x-berth-kubernetes": {"service_type": "Ingress"}}}}),
            ConvertOptions::default(),
        );
        assert!(bad.is_err());
        let unknown = try_conv(
            json!({"services": {"a": {"image": "x", "x-berth-kubernetes": {"replicas": 2}}}}),
            ConvertOptions::default(),
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn converts_what_the_loader_made() {
        // Interpolation from .env, env_file, profiles, extends and configs.content all happen
        // before conversion: the manifests see the loaded project.
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
        write(".env", "TAG=1.2\n");
        write("app.env", "FROM_FILE=yes\n");
        write(
            "compose.yaml",
            "name: loaded\nx-base: &base\n  image: app:${TAG}\nservices:\n  base:\n    <<: *base\n  web:\n    extends: base\n    env_file: app.env\n    configs: [site]\n  debug:\n    image: dbg\n    profiles: [debug]\nconfigs:\n  site:\n    content: hello ${TAG}\n",
        );
        let opts = crate::compose::ProjectOptions::new(dir.path().to_path_buf(), HashMap::new());
        let loaded = crate::compose::load_project(&opts).expect("loads");
        let c = convert(&loaded.project, &ConvertOptions::default()).expect("converts");
        assert!(!c.manifests.iter().any(|m| m.name == "debug"), "the debug profile is not active");
        assert_eq!(
            get(&c, "Deployment", "base")["spec"]["template"]["spec"]["containers"][0]["image"],
            "app:1.2"
        );
        let web = get(&c, "Deployment", "web");
        let ctr = &web["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(ctr["image"], "app:1.2");
        assert_eq!(ctr["env"], json!([{"name": "FROM_FILE", "value": "yes"}]));
        assert_eq!(get(&c, "ConfigMap", "site")["data"]["site"], "hello 1.2");
    }

    #[test]
    fn extra_networks_are_reported() {
        let c = conv(
            json!({"services": {"a": {"image": "x", "networks": {"front": null}}}, "networks": {"front": {}}}),
        );
        assert!(c.report.has("project", "networks", Level::Dropped));
    }
}
