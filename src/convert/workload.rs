//! Workloads: a service's pod (its container, probes, security context, resources, init
//! containers for `depends_on`) inside a Deployment, a StatefulSet or a Job, and the report of
//! every service key that has no Kubernetes counterpart.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, ContainerPort, DownwardAPIProjection,
    DownwardAPIVolumeFile, EnvVar, ExecAction, HostAlias, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PodDNSConfig, PodDNSConfigOption, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ProjectedVolumeSource, ResourceRequirements, SecurityContext, ServiceAccount,
    ServiceAccountTokenProjection, Sysctl, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value as Json;

use super::names::{dns_label, is_annotation_key, is_label};
use super::services::{container_ports, selector};
use super::storage::{is_stateful, mounts};
use super::{ConvertError, ConvertOptions, Out, ServiceExt, service_error};
use crate::compose::model::{HealthCheckConfig, Project, ServiceConfig, units::Duration};

/// The image of the init containers that wait for a Service's name or port.
pub const WAIT_IMAGE: &str = "busybox:1.36";
/// The image of the init containers that wait for a Job (kubectl, no shell).
pub const KUBECTL_IMAGE: &str = "registry.k8s.io/kubectl:v1.33.0";
/// The ServiceAccount (and Role) that may read Jobs, for those init containers only.
pub const JOB_WAITER: &str = "berth-job-waiter";

/// Services some other service waits for with `service_completed_successfully`: Jobs.
pub(crate) fn job_services(project: &Project) -> BTreeSet<&str> {
    project
        .services
        .values()
        .flat_map(|s| &s.depends_on)
        .filter(|(dep, d)| {
            d.condition == "service_completed_successfully" && project.services.contains_key(*dep)
        })
        .map(|(dep, _)| dep.as_str())
        .collect()
}

/// Whole seconds, rounded up, at least `min`.
fn seconds(d: Duration, min: i64) -> i64 {
    let ns = d.0.max(0);
    (ns / 1_000_000_000 + i64::from(ns % 1_000_000_000 != 0)).max(min)
}

/// `$(` and `$$` mean something to Kubernetes in command, args and env values; compose
/// values are literal, so those are escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' && matches!(chars.peek(), Some('$' | '(')) {
            out.push('$');
        }
    }
    out
}

fn escape_all(v: &[String]) -> Vec<String> {
    v.iter().map(|s| escape(s)).collect()
}

fn probe_command(name: &str, test: &[String]) -> Result<Option<Vec<String>>, ConvertError> {
    match test.first().map(String::as_str) {
        None | Some("NONE") => Ok(None),
        Some("CMD") => Ok(Some(escape_all(&test[1..]))),
        Some("CMD-SHELL") => Ok(Some(vec!["/bin/sh".into(), "-c".into(), escape(&test[1..].join(" "))])),
        Some(other) => {
            Err(service_error(name, format!("healthcheck.test: {other:?} is not CMD, CMD-SHELL or NONE")))
        }
    }
}

/// The probes of a container: readiness, liveness, startup.
#[derive(Debug, Default)]
struct Probes {
    readiness: Option<Probe>,
    liveness: Option<Probe>,
    startup: Option<Probe>,
}

/// healthcheck → readinessProbe (and livenessProbe when asked), start_period → startupProbe.
fn probes(
    name: &str,
    hc: &HealthCheckConfig,
    ext: &ServiceExt,
    out: &mut Out,
) -> Result<Probes, ConvertError> {
    let scope = format!("service {name:?}");
    if hc.disable {
        return Ok(Probes::default());
    }
    let Some(command) = probe_command(name, &hc.test)? else {
        if hc.test.is_empty() {
            out.report.dropped(
                &scope,
                "healthcheck",
                "without test, the image's HEALTHCHECK cannot be read from here",
            );
        }
        return Ok(Probes::default());
    };
    let interval = hc.interval.unwrap_or(Duration(30_000_000_000));
    let timeout = hc.timeout.unwrap_or(Duration(30_000_000_000));
    let retries = hc.retries.unwrap_or(3).clamp(1, i64::from(i32::MAX));
    for (key, d) in
        [("interval", Some(interval)), ("timeout", Some(timeout)), ("start_interval", hc.start_interval)]
    {
        if d.is_some_and(|d| d.0 % 1_000_000_000 != 0) {
            out.report.note(&scope, &format!("healthcheck.{key}"), "probes count whole seconds: rounded up");
        }
    }
    let exec = Some(ExecAction { command: Some(command) });
    let period = seconds(interval, 1) as i32;
    let probe = Probe {
        exec: exec.clone(),
        period_seconds: Some(period),
        timeout_seconds: Some(seconds(timeout, 1) as i32),
        failure_threshold: Some(retries as i32),
        ..Default::default()
    };
    let startup = match hc.start_period.filter(|d| d.0 > 0) {
        None => None,
        Some(start) => {
            let every = seconds(hc.start_interval.unwrap_or(Duration(5_000_000_000)), 1);
            // Failures during the start period do not count; after it, `retries` more.
            let tries = (seconds(start, 1) + every - 1) / every + retries;
            Some(Probe {
                exec,
                period_seconds: Some(every as i32),
                timeout_seconds: Some(seconds(timeout, 1) as i32),
                failure_threshold: Some(tries.min(i64::from(i32::MAX)) as i32),
                ..Default::default()
            })
        }
    };
    let liveness = ext.liveness.then(|| probe.clone());
    Ok(Probes { readiness: Some(probe), liveness, startup })
}

/// `cpus` as a Kubernetes quantity in millicores.
fn cpu(c: f32) -> Quantity {
    Quantity(format!("{}m", (f64::from(c) * 1000.0).round() as i64))
}

fn resources(s: &ServiceConfig, scope: &str, out: &mut Out) -> Option<ResourceRequirements> {
    let r = s.deploy.as_ref().and_then(|d| d.resources.as_ref());
    let lim = r.and_then(|r| r.limits.as_ref());
    let res = r.and_then(|r| r.reservations.as_ref());
    let mut limits = BTreeMap::new();
    let mut requests = BTreeMap::new();
    if let Some(c) = lim.and_then(|l| l.cpus).or(s.cpus).filter(|c| *c > 0.0) {
        limits.insert("cpu".to_string(), cpu(c));
    }
    if let Some(m) = lim.and_then(|l| l.memory).or(s.mem_limit).filter(|m| m.0 > 0) {
        limits.insert("memory".to_string(), Quantity(m.0.to_string()));
    }
    if let Some(c) = res.and_then(|l| l.cpus).filter(|c| *c > 0.0) {
        requests.insert("cpu".to_string(), cpu(c));
    }
    if let Some(m) = res.and_then(|l| l.memory).or(s.mem_reservation).filter(|m| m.0 > 0) {
        requests.insert("memory".to_string(), Quantity(m.0.to_string()));
    }
    for (key, r) in [("limits", lim), ("reservations", res)] {
        let Some(r) = r else { continue };
        if r.pids.is_some() {
            out.report.dropped(
                scope,
                &format!("deploy.resources.{key}.pids"),
                "a pod's process limit is the kubelet's setting",
            );
        }
        if r.devices.is_some() || r.generic_resources.is_some() {
            out.report.dropped(
                scope,
                &format!("deploy.resources.{key}.devices"),
                "devices come from device plugins (resource names of the cluster)",
            );
        }
    }
    (!limits.is_empty() || !requests.is_empty()).then(|| ResourceRequirements {
        limits: (!limits.is_empty()).then_some(limits),
        requests: (!requests.is_empty()).then_some(requests),
        ..Default::default()
    })
}

/// A `user:` Kubernetes cannot take (a name, as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum IdError {
    /// The user is a name.
    #[error("user {0:?} is a name: Kubernetes needs a numeric uid")]
    User(String),
    /// The group is a name.
    #[error("group {0:?} is a name: Kubernetes needs a numeric gid")]
    Group(String),
}

/// `uid[:gid]` as numbers; names cannot be resolved without the image.
fn user_ids(user: &str) -> Result<(i64, Option<i64>), IdError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid =
        u.parse::<i64>().map_err(|_| IdError::User(u.to_string()))?;
    let gid = g
        .map(|g| {
            g.parse::<i64>().map_err(|_| IdError::Group(g.to_string()))
        })
        .transpose()?;
    Ok((uid, gid))
}

fn capability(c: &str) -> String {
    let c = c.to_ascii_uppercase();
    c.strip_prefix("CAP_").map(str::to_string).unwrap_or(c)
}

/// The init containers for `depends_on`, and whether one needs the Job waiter's token.
fn waits(
    project: &Project,
    name: &str,
    s: &ServiceConfig,
    out: &mut Out,
) -> Result<(Vec<Container>, bool), ConvertError> {
    let scope = format!("service {name:?}");
    let mut inits = Vec::new();
    let mut needs_token = false;
    for (dep, d) in &s.depends_on {
        let Some(target) = project.services.get(dep) else { continue };
        let host = dns_label(dep);
        if d.restart {
            out.report.dropped(
                &scope,
                &format!("depends_on.{dep}.restart"),
                "pods are not restarted when a dependency restarts",
            );
        }
        let (image, command) = match d.condition.as_str() {
            "service_completed_successfully" => {
                needs_token = true;
                (
                    KUBECTL_IMAGE,
                    vec![
                        "kubectl".into(),
                        "wait".into(),
                        "--for=condition=complete".into(),
                        "--timeout=24h".into(),
                        format!("job/{host}"),
                    ],
                )
            }
            cond => {
                let ports = container_ports(dep, target)?;
                let script = match (cond, ports.first()) {
                    // A ClusterIP Service forwards only to ready pods: a connection that
                    // succeeds means a pod passed its readiness probe (the healthcheck).
                    ("service_healthy", Some(p)) if p.protocol == "TCP" => format!(
                        "until nc -z -w 2 {host} {port}; do echo waiting for {host}:{port} to be ready; sleep 2; done",
                        port = p.port
                    ),
                    // Otherwise the name: a headless Service's name resolves once a pod is
                    // ready; a ClusterIP Service's once it exists. Each search domain is tried
                    // as an absolute name, as busybox's nslookup does not search.
                    _ => format!(
                        "while :; do for d in '' `sed -n 's/^search //p' /etc/resolv.conf`; do \
                         nslookup {host}${{d:+.$d}}. >/dev/null 2>&1 && exit 0; done; \
                         echo waiting for {host}; sleep 2; done"
                    ),
                };
                if cond == "service_healthy"
                    && target.healthcheck.as_ref().is_none_or(|h| h.disable || h.test.is_empty())
                {
                    out.report.note(&scope, &format!("depends_on.{dep}"), format!(
                        "{dep:?} has no healthcheck here (readiness probe): waiting for healthy waits for it to run"
                    ));
                }
                if cond == "service_healthy" && ports.first().is_some_and(|p| p.protocol != "TCP") {
                    out.report.note(
                        &scope,
                        &format!("depends_on.{dep}"),
                        "waits for the name only: the first port is not TCP",
                    );
                }
                (WAIT_IMAGE, vec!["sh".into(), "-c".into(), script])
            }
        };
        let mut c = Container {
            name: dns_label(&format!("wait-for-{dep}")),
            image: Some(image.into()),
            command: Some(command),
            ..Default::default()
        };
        if image == KUBECTL_IMAGE {
            c.volume_mounts = Some(vec![VolumeMount {
                name: "job-waiter-token".into(),
                mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                read_only: Some(true),
                ..Default::default()
            }]);
        }
        inits.push(c);
    }
    Ok((inits, needs_token))
}

/// The ServiceAccount, Role and RoleBinding that let init containers watch Jobs.
fn job_waiter(out: &mut Out) -> Result<(), ConvertError> {
    if out.has("ServiceAccount", JOB_WAITER) {
        return Ok(());
    }
    let scope = "depends_on";
    out.add(
        scope,
        JOB_WAITER,
        &ServiceAccount {
            metadata: out.meta(JOB_WAITER),
            automount_service_account_token: Some(false),
            ..Default::default()
        },
    )?;
    let role = Role {
        metadata: out.meta(JOB_WAITER),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["batch".into()]),
            resources: Some(vec!["jobs".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    };
    out.add(scope, JOB_WAITER, &role)?;
    let binding = RoleBinding {
        metadata: out.meta(JOB_WAITER),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: JOB_WAITER.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: JOB_WAITER.into(),
            namespace: out.namespace.clone(),
            ..Default::default()
        }]),
    };
    out.add(scope, JOB_WAITER, &binding)
}

/// The token volume only the Job-waiting init containers mount (the service's own container
/// gets none: `automountServiceAccountToken: false`).
fn token_volume() -> Volume {
    Volume {
        name: "job-waiter-token".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                api_version: None,
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
            default_mode: None,
        }),
        ..Default::default()
    }
}

/// Keys handled (fully, or with their own findings) by this module, services.rs or
/// storage.rs; every other key set on a service is reported as not converted.
const HANDLED: &[&str] = &[
    "annotations",
    "build",
    "cap_add",
    "cap_drop",
    "command",
    "configs",
    "cpus",
    "depends_on",
    "deploy",
    "dns",
    "dns_opt",
    "dns_search",
    "entrypoint",
    "environment",
    "expose",
    "extra_hosts",
    "healthcheck",
    "hostname",
    "image",
    "init",
    "ipc",
    "labels",
    "links",
    "mem_limit",
    "mem_reservation",
    "network_mode",
    "networks",
    "pid",
    "platform",
    "ports",
    "post_start",
    "pre_stop",
    "privileged",
    "profiles",
    "pull_policy",
    "read_only",
    "restart",
    "scale",
    "secrets",
    "security_opt",
    "shm_size",
    "stdin_open",
    "stop_grace_period",
    "sysctls",
    "tmpfs",
    "tty",
    "user",
    "volumes",
    "working_dir",
    "attach",
];

fn unconverted_reason(key: &str) -> &'static str {
    match key {
        "container_name" => "Kubernetes names pods itself; the Service gives the stable name",
        "ulimits" => "rlimits are the container runtime's settings on each node",
        "logging" => "logs are collected by the cluster's logging, not per pod",
        "devices" | "device_cgroup_rules" => "devices come from device plugins",
        "cpu_shares" | "cpu_period" | "cpu_quota" | "cpu_rt_period" | "cpu_rt_runtime" | "cpuset"
        | "cpu_count" | "cpu_percent" => "only cpu requests and limits exist (deploy.resources, cpus)",
        "memswap_limit" | "mem_swappiness" | "oom_kill_disable" | "oom_score_adj" | "pids_limit"
        | "blkio_config" => "the kubelet sets this per node, not per pod",
        "develop" => "develop.watch is for a local berth up --watch",
        "stop_signal" => "the stop signal is the image's (Kubernetes 1.33 has no stable field for it)",
        "domainname" | "mac_address" => "pod networking is the cluster's",
        "volumes_from" => "pods cannot mount another pod's volumes; share a named volume",
        "gpus" => "GPUs come from device plugins (resources.limits of the cluster's GPU resource)",
        "group_add" => "supplementalGroups is per pod; not converted from group names",
        "external_links" => "containers outside the project do not exist on the cluster",
        "userns_mode" | "uts" | "cgroup" | "cgroup_parent" | "runtime" | "isolation" | "storage_opt"
        | "volume_driver" | "credential_spec" => "node-level runtime setting",
        _ => "no Kubernetes equivalent",
    }
}

/// Builds the workload (and what it needs) of one service.
#[allow(clippy::too_many_arguments)]
pub(crate) fn workload(
    project: &Project,
    name: &str,
    s: &ServiceConfig,
    ext: &ServiceExt,
    job: bool,
    opts: &ConvertOptions,
    out: &mut Out,
) -> Result<(), ConvertError> {
    let scope = format!("service {name:?}");
    let k8s = dns_label(name);
    let tree = serde_json::to_value(s).map_err(|source| ConvertError::Render { kind: None, source })?;
    if let Some(map) = tree.as_object() {
        for (key, value) in map {
            let set = !matches!(value, Json::Null) && value != &Json::Bool(false);
            if set && !HANDLED.contains(&key.as_str()) {
                out.report.dropped(&scope, key, unconverted_reason(key));
            }
        }
    }
    for key in s.extensions.keys().filter(|k| !k.starts_with("x-")) {
        out.report.dropped(&scope, key, "not a Kubernetes setting");
    }
    if s.init == Some(true) {
        out.report.dropped(&scope, "init", "no init process is injected; use an image with one (tini)");
    }

    // The image: a built one must have been pushed where the cluster pulls from.
    let image = match (&s.image, &s.build) {
        (Some(i), None) => i.clone(),
        (image, Some(_)) => {
            let i = image
                .clone()
                .unwrap_or_else(|| crate::labels::image_name(&project.name, name, project.compatibility));
            out.report.note(&scope, "build", format!(
                "the cluster pulls {i:?}: run `berth push {name}` first (to a registry the cluster can reach)"
            ));
            i
        }
        (None, None) => return Err(service_error(name, "has neither image nor build")),
    };
    let pull = match s.pull_policy.as_deref() {
        Some("always") => Some("Always"),
        Some("never") => Some("Never"),
        Some("missing" | "if_not_present") => Some("IfNotPresent"),
        Some("build") => {
            out.report.note(
                &scope,
                "pull_policy",
                "\"build\": the cluster pulls the pushed image (IfNotPresent)",
            );
            Some("IfNotPresent")
        }
        Some(other) => {
            out.report.dropped(&scope, "pull_policy", format!("{other:?} has no Kubernetes equivalent"));
            None
        }
        None => None,
    };

    // Environment (env_file is folded in by the loader). A variable declared without a
    // value and not set at load time is not set in the container either.
    let env: Vec<EnvVar> = s
        .environment
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref().map(|v| EnvVar { name: k.clone(), value: Some(escape(v)), value_from: None })
        })
        .collect();

    let mut sc = SecurityContext::default();
    let mut pod_sc = PodSecurityContext::default();
    if let Some(user) = s.user.as_deref().filter(|u| !u.is_empty()) {
        match user_ids(user) {
            Ok((uid, gid)) => {
                sc.run_as_user = Some(uid);
                sc.run_as_group = gid;
            }
            Err(e) => out.report.dropped(&scope, "user", e.to_string()),
        }
    }
    if !s.cap_add.is_empty() || !s.cap_drop.is_empty() {
        sc.capabilities = Some(Capabilities {
            add: (!s.cap_add.is_empty()).then(|| s.cap_add.iter().map(|c| capability(c)).collect()),
            drop: (!s.cap_drop.is_empty()).then(|| s.cap_drop.iter().map(|c| capability(c)).collect()),
        });
    }
    if s.privileged {
        sc.privileged = Some(true);
    }
    if s.read_only {
        sc.read_only_root_filesystem = Some(true);
    }
    for opt in &s.security_opt {
        match opt.as_str() {
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => {
                sc.allow_privilege_escalation = Some(false)
            }
            other => out.report.dropped(
                &scope,
                "security_opt",
                format!("{other:?}: seccomp and AppArmor profiles are files on the nodes"),
            ),
        }
    }
    if !s.sysctls.is_empty() {
        pod_sc.sysctls =
            Some(s.sysctls.iter().map(|(k, v)| Sysctl { name: k.clone(), value: v.clone() }).collect());
        out.report.note(
            &scope,
            "sysctls",
            "sysctls outside Kubernetes' safe set must be allowed by each kubelet",
        );
    }

    let Probes { readiness, liveness, startup } = match &s.healthcheck {
        Some(hc) => probes(name, hc, ext, out)?,
        None => Probes::default(),
    };
    if s.healthcheck.is_none() && ext.liveness {
        out.report.dropped(&scope, "x-berth-kubernetes.liveness", "the service has no healthcheck");
    }

    let ports = container_ports(name, s)?;
    let lifecycle = {
        let hook = |hooks: &[crate::compose::model::ServiceHook], key: &str, out: &mut Out| {
            if hooks.len() > 1 {
                out.report.dropped(
                    &scope,
                    key,
                    "a container has one hook of each kind: only the first is converted",
                );
            }
            hooks.first().and_then(|h| {
                if h.user.is_some() || h.privileged || h.working_dir.is_some() || !h.environment.is_empty() {
                    out.report.dropped(&scope, key, "a hook runs as the container runs: its user, privileged, working_dir and environment are not converted");
                }
                h.command.as_ref().map(|c| LifecycleHandler { exec: Some(ExecAction { command: Some(escape_all(c)) }), ..Default::default() })
            })
        };
        let post_start = hook(&s.post_start, "post_start", out);
        let pre_stop = hook(&s.pre_stop, "pre_stop", out);
        (post_start.is_some() || pre_stop.is_some()).then_some(Lifecycle {
            post_start,
            pre_stop,
            ..Default::default()
        })
    };
    if s.entrypoint.as_ref().is_some_and(Vec::is_empty) {
        out.report.dropped(
            &scope,
            "entrypoint",
            "an empty entrypoint cannot clear the image's on Kubernetes",
        );
    }

    let stateful = is_stateful(s, job);
    let storage = mounts(project, name, s, stateful, opts, out)?;
    if let Some(g) = storage.fs_group {
        pod_sc.fs_group = Some(g);
    }
    let container = Container {
        name: k8s.clone(),
        image: Some(image),
        image_pull_policy: pull.map(str::to_string),
        command: s.entrypoint.as_ref().filter(|e| !e.is_empty()).map(|e| escape_all(e)),
        args: s.command.as_ref().map(|c| escape_all(c)),
        env: (!env.is_empty()).then_some(env),
        working_dir: s.working_dir.clone().filter(|w| !w.is_empty()),
        ports: (!ports.is_empty()).then(|| {
            ports
                .iter()
                .map(|p| ContainerPort {
                    container_port: p.port,
                    protocol: Some(p.protocol.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        resources: resources(s, &scope, out),
        security_context: (sc != SecurityContext::default()).then_some(sc),
        readiness_probe: readiness,
        liveness_probe: liveness,
        startup_probe: startup,
        lifecycle,
        tty: s.tty.then_some(true),
        stdin: s.stdin_open.then_some(true),
        volume_mounts: (!storage.mounts.is_empty()).then(|| storage.mounts.clone()),
        ..Default::default()
    };

    // Labels: compose `labels` and `deploy.labels` on the workload and its pods; those that
    // are not valid Kubernetes labels become annotations.
    let mut labels = out.common_labels();
    let mut annotations: BTreeMap<String, String> = BTreeMap::new();
    let deploy_labels = s.deploy.as_ref().map(|d| d.labels.clone()).unwrap_or_default();
    for (k, v) in s.labels.iter().chain(&deploy_labels) {
        if is_label(k, v) {
            labels.insert(k.clone(), v.clone());
        } else if is_annotation_key(k) {
            annotations.insert(k.clone(), v.clone());
        } else {
            out.report.dropped(
                &scope,
                "labels",
                format!("{k:?} is neither a valid label nor annotation key"),
            );
        }
    }
    for (k, v) in &s.annotations {
        if is_annotation_key(k) {
            annotations.insert(k.clone(), v.clone());
        } else {
            out.report.dropped(&scope, "annotations", format!("{k:?} is not a valid annotation key"));
        }
    }
    let select = selector(out, name);
    labels.extend(select.clone());

    let mut host_aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (host, ips) in &s.extra_hosts {
        for ip in ips {
            if ip.parse::<std::net::IpAddr>().is_ok() {
                host_aliases.entry(ip.clone()).or_default().push(host.clone());
            } else {
                out.report.dropped(
                    &scope,
                    "extra_hosts",
                    format!("{host}={ip}: only IP addresses can be host aliases"),
                );
            }
        }
    }
    let (inits, needs_token) = waits(project, name, s, out)?;
    let mut volumes = storage.volumes;
    if needs_token {
        job_waiter(out)?;
        volumes.push(token_volume());
    }
    let mut node_selector = BTreeMap::new();
    if let Some(platform) = &s.platform {
        let mut parts = platform.split('/');
        if let Some(os) = parts.next().filter(|o| !o.is_empty()) {
            node_selector.insert("kubernetes.io/os".to_string(), os.to_string());
        }
        if let Some(arch) = parts.next() {
            node_selector.insert("kubernetes.io/arch".to_string(), arch.to_string());
        }
        if parts.next().is_some() {
            out.report.dropped(&scope, "platform", "the variant cannot be selected by node labels");
        }
    }
    let dns_config =
        (!s.dns.is_empty() || !s.dns_search.is_empty() || !s.dns_opt.is_empty()).then(|| PodDNSConfig {
            nameservers: (!s.dns.is_empty()).then(|| s.dns.clone()),
            searches: (!s.dns_search.is_empty()).then(|| s.dns_search.clone()),
            options: (!s.dns_opt.is_empty()).then(|| {
                s.dns_opt
                    .iter()
                    .map(|o| match o.split_once(':') {
                        Some((n, v)) => {
                            PodDNSConfigOption { name: Some(n.to_string()), value: Some(v.to_string()) }
                        }
                        None => PodDNSConfigOption { name: Some(o.clone()), value: None },
                    })
                    .collect()
            }),
        });
    let mut host_network = None;
    match s.network_mode.as_deref() {
        None | Some("bridge" | "default") => {}
        Some("host") => host_network = Some(true),
        Some(other) => {
            out.report.dropped(&scope, "network_mode", format!("{other:?}: pods have a network of their own"))
        }
    }
    let host_ns = |v: Option<&str>, key: &str, out: &mut Out| match v {
        None | Some("" | "private" | "shareable") => None,
        Some("host") => Some(true),
        Some(other) => {
            out.report.dropped(&scope, key, format!("{other:?}: only host or private exist on Kubernetes"));
            None
        }
    };
    let host_pid = host_ns(s.pid.as_deref(), "pid", out);
    let host_ipc = host_ns(s.ipc.as_deref(), "ipc", out);
    if let Some(h) = &s.hostname
        && dns_label(h) != *h
    {
        return Err(service_error(
            name,
            format!("hostname {h:?} is not a DNS-1123 label, as a pod's hostname must be"),
        ));
    }

    // Restart policy: Deployments and StatefulSets always restart their pods; Jobs follow
    // `restart` (no → Never, on-failure[:N] → OnFailure with N retries).
    let restart = s.restart.as_deref().unwrap_or("no");
    let restart_condition =
        s.deploy.as_ref().and_then(|d| d.restart_policy.as_ref()).and_then(|r| r.condition.as_deref());
    let (pod_restart, backoff) = if job {
        match (restart.split_once(':').map_or(restart, |(a, _)| a), restart_condition) {
            ("on-failure", _) | (_, Some("on-failure")) => {
                let n = restart.split_once(':').and_then(|(_, n)| n.parse::<i32>().ok()).unwrap_or(6);
                ("OnFailure", n)
            }
            ("always" | "unless-stopped", _) => {
                out.report.dropped(
                    &scope,
                    "restart",
                    "a Job that others wait for to complete cannot restart forever",
                );
                ("Never", 0)
            }
            _ => ("Never", 0),
        }
    } else {
        if s.restart.as_deref().is_some_and(|r| r == "no" || r.starts_with("on-failure")) {
            out.report.dropped(&scope, "restart", format!(
                "{restart:?}: a Deployment's pods always restart (a Job would run once: only for a service others wait for with service_completed_successfully)"
            ));
        }
        ("Always", 0)
    };
    if let Some(d) = &s.deploy {
        if d.mode.as_deref() == Some("global") {
            out.report.dropped(&scope, "deploy.mode", "\"global\" would be a DaemonSet: not converted");
        }
        for (key, set) in [
            ("deploy.placement", d.placement.is_some()),
            ("deploy.update_config", d.update_config.is_some()),
            ("deploy.rollback_config", d.rollback_config.is_some()),
            ("deploy.endpoint_mode", d.endpoint_mode.is_some()),
            ("deploy.restart_policy", d.restart_policy.is_some() && !job),
        ] {
            if set {
                out.report.dropped(&scope, key, "swarm setting with no direct Kubernetes equivalent");
            }
        }
    }

    let pod = PodSpec {
        containers: vec![container],
        init_containers: (!inits.is_empty()).then_some(inits),
        volumes: (!volumes.is_empty()).then_some(volumes),
        hostname: s.hostname.clone(),
        host_aliases: (!host_aliases.is_empty()).then(|| {
            host_aliases
                .into_iter()
                .map(|(ip, hostnames)| HostAlias { ip, hostnames: Some(hostnames) })
                .collect()
        }),
        termination_grace_period_seconds: s.stop_grace_period.map(|d| seconds(d, 0)),
        security_context: (pod_sc != PodSecurityContext::default()).then_some(pod_sc),
        restart_policy: Some(pod_restart.into()),
        node_selector: (!node_selector.is_empty()).then_some(node_selector),
        dns_config,
        host_network,
        host_pid,
        host_ipc,
        service_account_name: needs_token.then(|| JOB_WAITER.to_string()),
        automount_service_account_token: needs_token.then_some(false),
        ..Default::default()
    };
    let template = PodTemplateSpec {
        metadata: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            labels: Some(labels.clone()),
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
            ..Default::default()
        }),
        spec: Some(pod),
    };
    let mut meta = out.meta(&k8s);
    meta.labels = Some(labels);
    meta.annotations = (!annotations.is_empty()).then_some(annotations);
    let replicas = i32::try_from(s.replicas()).unwrap_or(i32::MAX);
    let label_selector = LabelSelector { match_labels: Some(select), ..Default::default() };
    if job {
        if s.replicas() != 1 {
            out.report.dropped(&scope, "deploy.replicas", "a Job that others wait for runs once");
        }
        let j = Job {
            metadata: meta,
            spec: Some(JobSpec { template, backoff_limit: Some(backoff), ..Default::default() }),
            ..Default::default()
        };
        out.add(&scope, &k8s, &j)
    } else if stateful {
        let ss = StatefulSet {
            metadata: meta,
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                selector: label_selector,
                service_name: Some(k8s.clone()),
                template,
                volume_claim_templates: Some(storage.claim_templates),
                ..Default::default()
            }),
            ..Default::default()
        };
        out.add(&scope, &k8s, &ss)
    } else {
        let d = Deployment {
            metadata: meta,
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                selector: label_selector,
                template,
                ..Default::default()
            }),
            ..Default::default()
        };
        out.add(&scope, &k8s, &d)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Level;
    use super::super::tests::{conv, get, try_conv};
    use super::*;

    #[test]
    fn container_basics() {
        let c = conv(json!({"services": {"app": {
            "image": "app:1", "entrypoint": ["/init"], "command": ["run", "$(HOME)"], "working_dir": "/srv",
            "environment": {"A": "1", "B": null, "C": "x$$y"}, "user": "1000:1000",
            "cap_add": ["NET_ADMIN"], "cap_drop": ["CAP_ALL"], "read_only": true, "privileged": true,
            "security_opt": ["no-new-privileges:true"],
            "stop_grace_period": "1m30s", "hostname": "box", "extra_hosts": {"db": ["10.0.0.1"], "cache": ["10.0.0.1"]},
            "mem_limit": "52428800", "cpus": 0.5, "deploy": {"resources": {"reservations": {"cpus": 0.25, "memory": "1048576"}}},
            "tty": true, "stdin_open": true, "platform": "linux/arm64", "pull_policy": "always"
        }}}));
        let d = get(&c, "Deployment", "app");
        let pod = &d["spec"]["template"]["spec"];
        let ctr = &pod["containers"][0];
        assert_eq!(ctr["command"], json!(["/init"]));
        assert_eq!(ctr["args"], json!(["run", "$$(HOME)"]));
        assert_eq!(ctr["env"], json!([{"name": "A", "value": "1"}, {"name": "C", "value": "x$$$y"}]));
        assert_eq!(ctr["workingDir"], "/srv");
        assert_eq!(ctr["imagePullPolicy"], "Always");
        assert_eq!(
            ctr["securityContext"],
            json!({
                "allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                "privileged": true, "readOnlyRootFilesystem": true, "runAsGroup": 1000, "runAsUser": 1000
            })
        );
        assert_eq!(
            ctr["resources"],
            json!({"limits": {"cpu": "500m", "memory": "52428800"}, "requests": {"cpu": "250m", "memory": "1048576"}})
        );
        assert_eq!(pod["terminationGracePeriodSeconds"], 90);
        assert_eq!(pod["hostname"], "box");
        assert_eq!(pod["hostAliases"], json!([{"ip": "10.0.0.1", "hostnames": ["cache", "db"]}]));
        assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/arch": "arm64", "kubernetes.io/os": "linux"}));
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(ctr["tty"], true);
        assert_eq!(d["spec"]["replicas"], 1);
    }

    #[test]
    fn healthcheck_becomes_readiness_startup_and_liveness_on_request() {
        let c = conv(json!({"services": {
            "db": {"image": "pg", "healthcheck": {"test": ["CMD-SHELL", "pg_isready"], "interval": "10s", "timeout": "500ms", "retries": 5, "start_period": "60s", "start_interval": "2s"}},
            "web": {"image": "w", "healthcheck": {"test": ["CMD", "true"]}, "x-berth-kubernetes": {"liveness": true}},
            "off": {"image": "o", "healthcheck": {"disable": true}}
        }}));
        let db = &get(&c, "Deployment", "db")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            db["readinessProbe"],
            json!({"exec": {"command": ["/bin/sh", "-c", "pg_isready"]}, "failureThreshold": 5, "periodSeconds": 10, "timeoutSeconds": 1})
        );
        assert_eq!(db["startupProbe"]["periodSeconds"], 2);
        assert_eq!(db["startupProbe"]["failureThreshold"], 35);
        assert!(db.get("livenessProbe").is_none());
        let web = &get(&c, "Deployment", "web")["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(web["livenessProbe"], web["readinessProbe"]);
        assert_eq!(web["readinessProbe"]["periodSeconds"], 30);
        let off = &get(&c, "Deployment", "off")["spec"]["template"]["spec"]["containers"][0];
        assert!(off.get("readinessProbe").is_none());
        assert!(c.report.has("service \"db\"", "healthcheck.timeout", Level::Note));
    }

    #[test]
    fn depends_on_becomes_init_containers_and_jobs() {
        let c = conv(json!({"services": {
            "migrate": {"image": "m", "restart": "no"},
            "db": {"image": "pg", "expose": ["5432"], "healthcheck": {"test": ["CMD", "true"]}},
            "cache": {"image": "redis"},
            "app": {"image": "a", "depends_on": {
                "migrate": {"condition": "service_completed_successfully", "required": true},
                "db": {"condition": "service_healthy", "required": true},
                "cache": {"condition": "service_started", "required": true, "restart": true}
            }}
        }}));
        let job = get(&c, "Job", "migrate");
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        let pod = &get(&c, "Deployment", "app")["spec"]["template"]["spec"];
        let inits = pod["initContainers"].as_array().expect("init containers");
        assert_eq!(inits.len(), 3);
        assert_eq!(inits[0]["name"], "wait-for-cache");
        assert!(inits[0]["command"][2].as_str().is_some_and(|s| s.contains("nslookup cache${d:+.$d}.")));
        assert_eq!(inits[1]["name"], "wait-for-db");
        assert!(inits[1]["command"][2].as_str().is_some_and(|s| s.starts_with("until nc -z -w 2 db 5432;")));
        assert_eq!(inits[2]["image"], KUBECTL_IMAGE);
        assert_eq!(
            inits[2]["command"],
            json!(["kubectl", "wait", "--for=condition=complete", "--timeout=24h", "job/migrate"])
        );
        assert_eq!(pod["serviceAccountName"], JOB_WAITER);
        assert_eq!(pod["automountServiceAccountToken"], false);
        assert!(pod["volumes"].as_array().is_some_and(|v| v.iter().any(|v| v["name"] == "job-waiter-token")));
        assert!(pod["containers"][0].get("volumeMounts").is_none());
        get(&c, "ServiceAccount", JOB_WAITER);
        get(&c, "Role", JOB_WAITER);
        assert_eq!(get(&c, "RoleBinding", JOB_WAITER)["roleRef"]["name"], JOB_WAITER);
        assert!(c.report.has("service \"app\"", "depends_on.cache.restart", Level::Dropped));
    }

    #[test]
    fn labels_reach_workloads_and_pods() {
        let c = conv(json!({"services": {"web": {"image": "w",
            "labels": {"tier": "front", "com.example.description": "The web tier"},
            "deploy": {"labels": {"team": "shop"}}}}}));
        let d = get(&c, "Deployment", "web");
        for meta in [&d["metadata"], &d["spec"]["template"]["metadata"]] {
            assert_eq!(meta["labels"]["tier"], "front");
            assert_eq!(meta["labels"]["team"], "shop");
            assert_eq!(meta["labels"]["com.docker.compose.service"], "web");
            assert_eq!(meta["annotations"]["com.example.description"], "The web tier");
        }
        assert_eq!(
            d["spec"]["selector"]["matchLabels"],
            json!({"com.docker.compose.project": "demo", "com.docker.compose.service": "web"})
        );
    }

    #[test]
    fn unconverted_keys_are_reported() {
        let c =
            conv(json!({"services": {"a": {"image": "x", "ulimits": {"nofile": 1024}, "container_name": "c",
            "user": "www-data", "restart": "no", "logging": {"driver": "json-file"}}}}));
        for key in ["ulimits", "container_name", "user", "restart", "logging"] {
            assert!(c.report.has("service \"a\"", key, Level::Dropped), "{key}: {:?}", c.report.findings());
        }
        assert_eq!(c.report.dropped_count(), 5);
        let clean = conv(json!({"services": {"a": {"image": "x", "environment": {"A": "b"}}}}));
        assert_eq!(clean.report.findings().len(), 0, "{:?}", clean.report.findings());
    }

    #[test]
    fn build_services_use_their_image_reference() {
        let c = conv(json!({"services": {"app": {"build": {"context": "/src"}}}}));
        assert_eq!(
            get(&c, "Deployment", "app")["spec"]["template"]["spec"]["containers"][0]["image"],
            "demo-app"
        );
        assert!(c.report.has("service \"app\"", "build", Level::Note));
        assert!(
            try_conv(
                json!({"services": {"a": {"image": "x", "hostname": "Not_Valid"}}}),
                ConvertOptions::default()
            )
            .is_err()
        );
    }

    #[test]
    fn durations_round_up() {
        assert_eq!(seconds(Duration(1), 0), 1);
        assert_eq!(seconds(Duration(2_000_000_000), 1), 2);
        assert_eq!(seconds(Duration(0), 1), 1);
        assert_eq!(escape("a$b$(c)$$"), "a$b$$(c)$$$");
    }
}
