//! Translating a compose service into the runtime's input ([`ContainerSpec`]) and the network
//! module's ([`AttachRequest`]), as docker compose and docker do: image defaults under the
//! service's settings, compose's labels, docker's defaults where the file is silent. Pure
//! functions: nothing on the host is touched, so a bad service fails before `up` changes
//! anything.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::compose::model::{HealthCheckConfig, Project, ServiceConfig, Ulimit};
use crate::image::ResolvedImage;
use crate::netns::{AttachRequest, EndpointRequest, NetMode, PortRequest, Protocol};
use crate::runtime::process::combine_args;
use crate::runtime::spec::{
    ContainerSpec, DeviceSpec, HealthcheckSpec, IpcNamespace, LogSpec, RestartPolicy, SeccompMode, UlimitSpec,
};

use crate::labels;

/// A reference to another container (`service:NAME` / `container:NAME`) in `pid`, `ipc`,
/// `network_mode` or `volumes_from`.
pub use crate::volume::PeerRef;

/// Everything the translation needs about one container of a service.
pub struct ServiceContext<'a> {
    /// The project.
    pub project: &'a Project,
    /// The service's name.
    pub service_name: &'a str,
    /// The service.
    pub service: &'a ServiceConfig,
    /// Its image.
    pub image: &'a ResolvedImage,
    /// The container's id (64 hex digits).
    pub container_id: &'a str,
    /// The container's name.
    pub container_name: &'a str,
    /// The container's number within the service (1-based).
    pub replica: u32,
    /// The service's config hash.
    pub config_hash: &'a str,
    /// The project directory (relative paths in `security_opt` and the working-dir label).
    pub project_dir: &'a Path,
    /// The compose files.
    pub config_files: &'a [PathBuf],
    /// Finds the container a `service:` / `container:` reference means; `None` when there is
    /// none.
    pub peer: &'a dyn Fn(PeerRef<'_>) -> Option<String>,
}

/// A container spec, with what could not be honoured.
#[derive(Debug, Clone)]
pub struct BuiltSpec {
    /// The spec; `mounts`, `etc_files` and `namespaces.net` are left for the engine.
    pub spec: ContainerSpec,
    /// Settings berth ignores, each naming the service and field.
    pub warnings: Vec<String>,
}

/// A service setting that cannot become a container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {service}: {field}: {message}")]
pub struct SpecError {
    /// The service.
    pub service: String,
    /// The attribute, e.g. `ports[1]`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ServiceContext<'_> {
    fn error(&self, field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError { service: self.service_name.to_string(), field: field.into(), message: message.into() }
    }

    fn peer_of(&self, field: &str, value: &str) -> Result<Option<String>, SpecError> {
        let reference = if let Some(s) = value.strip_prefix("service:") {
            PeerRef::Service(s)
        } else if let Some(c) = value.strip_prefix("container:") {
            PeerRef::Container(c)
        } else {
            return Ok(None);
        };
        match (self.peer)(reference) {
            Some(id) => Ok(Some(id)),
            None => Err(self.error(field, format!("{value}: no such container"))),
        }
    }
}

/// docker's default hostname: the first 12 digits of the id.
fn default_hostname(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Builds the container spec of one container of a service.
pub fn container_spec(ctx: &ServiceContext<'_>) -> Result<BuiltSpec, SpecError> {
    let svc = ctx.service;
    let image_cfg = ctx.image.config.config().clone().unwrap_or_default();
    let mut warnings = Vec::new();
    let mut spec = ContainerSpec {
        id: ctx.container_id.to_string(),
        name: ctx.container_name.to_string(),
        image_id: Some(ctx.image.id.clone()),
        image: Some(svc.image.clone().unwrap_or_else(|| {
            crate::labels::image_name(&ctx.project.name, ctx.service_name, ctx.project.compatibility)
        })),
        ..ContainerSpec::default()
    };
    spec.rootfs.lower_dirs = ctx.image.layer_dirs.clone();
    spec.rootfs.read_only = svc.read_only;

    // The process.
    let image_entry = image_cfg.entrypoint().clone().unwrap_or_default();
    let image_cmd = image_cfg.cmd().clone().unwrap_or_default();
    spec.process.args =
        combine_args(&image_entry, &image_cmd, svc.entrypoint.as_deref(), svc.command.as_deref());
    if spec.process.args.is_empty() {
        return Err(ctx.error(
            "command",
            "no command: the image has no Cmd or Entrypoint and the service sets neither",
        ));
    }
    spec.process.env = environment(image_cfg.env().as_deref().unwrap_or_default(), &svc.environment);
    spec.process.cwd =
        svc.working_dir.clone().or_else(|| image_cfg.working_dir().clone()).unwrap_or_default();
    spec.process.user = svc.user.clone().or_else(|| image_cfg.user().clone()).filter(|u| !u.is_empty());
    spec.process.group_add = svc.group_add.clone();
    spec.process.tty = svc.tty;
    spec.process.stdin_open = svc.stdin_open;
    spec.process.init = svc.init.unwrap_or(false);

    spec.hostname = svc.hostname.clone().unwrap_or_else(|| default_hostname(ctx.container_id));
    spec.domainname = svc.domainname.clone();

    // Namespaces.
    match svc.pid.as_deref() {
        None | Some("") => {}
        Some("host") => spec.namespaces.pid_host = true,
        Some(other) => return Err(ctx.error("pid", format!("{other:?} is not supported (only \"host\")"))),
    }
    spec.namespaces.ipc = match svc.ipc.as_deref() {
        None | Some("") | Some("private") | Some("shareable") => IpcNamespace::Private,
        Some("host") => IpcNamespace::Host,
        Some(other) => match ctx.peer_of("ipc", other)? {
            Some(id) => IpcNamespace::Container(id),
            None => return Err(ctx.error("ipc", format!("invalid mode {other:?}"))),
        },
    };
    spec.namespaces.uts_host =
        svc.uts.as_deref() == Some("host") || svc.network_mode.as_deref() == Some("host");
    match svc.userns_mode.as_deref() {
        None | Some("") | Some("host") => {}
        Some(other) => {
            return Err(ctx.error(
                "userns_mode",
                format!("{other:?} is not supported (user namespaces are not implemented)"),
            ));
        }
    }

    // Security.
    spec.security.privileged = svc.privileged;
    spec.security.cap_add = svc.cap_add.clone();
    spec.security.cap_drop = svc.cap_drop.clone();
    for (i, opt) in svc.security_opt.iter().enumerate() {
        let field = format!("security_opt[{i}]");
        let (key, value) = opt.split_once(['=', ':']).unwrap_or((opt.as_str(), ""));
        match key {
            "seccomp" => {
                spec.security.seccomp = match value {
                    "unconfined" => SeccompMode::Unconfined,
                    "" => {
                        return Err(ctx.error(field, "seccomp needs a value (unconfined or a profile file)"));
                    }
                    path => {
                        let full = ctx.project_dir.join(path);
                        let text = std::fs::read_to_string(&full).map_err(|e| {
                            ctx.error(&field, format!("seccomp profile {}: {e}", full.display()))
                        })?;
                        SeccompMode::Profile(text)
                    }
                }
            }
            "no-new-privileges" => {
                spec.security.no_new_privileges = match value {
                    "" | "true" => true,
                    "false" => false,
                    other => {
                        return Err(ctx.error(field, format!("no-new-privileges: invalid value {other:?}")));
                    }
                }
            }
            "apparmor" | "label" | "systempaths" => {
                warnings.push(format!(
                    "service {}: {field}: {opt:?} is ignored (not supported by berth)",
                    ctx.service_name
                ));
            }
            _ => return Err(ctx.error(field, format!("unknown security option {opt:?}"))),
        }
    }

    resources(ctx, &mut spec)?;
    for (name, limit) in &svc.ulimits {
        let (soft, hard) = match limit {
            Ulimit::Single(n) => (*n, *n),
            Ulimit::Pair { soft, hard } => (*soft, *hard),
        };
        let to_u64 = |n: i64| {
            if n == -1 {
                Ok(u64::MAX)
            } else {
                u64::try_from(n)
                    .map_err(|_| ctx.error(format!("ulimits.{name}"), format!("invalid limit {n}")))
            }
        };
        let (soft, hard) = (to_u64(soft)?, to_u64(hard)?);
        if soft > hard {
            return Err(ctx.error(
                format!("ulimits.{name}"),
                format!("soft limit {soft} is above the hard limit {hard}"),
            ));
        }
        spec.ulimits.push(UlimitSpec { name: name.clone(), soft, hard });
    }
    spec.sysctls = svc
        .sysctls
        .iter()
        .filter(|(k, _)| !k.starts_with("net."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for d in &svc.devices {
        let target = if d.target.is_empty() { d.source.clone() } else { d.target.clone() };
        spec.devices.push(DeviceSpec {
            host_path: PathBuf::from(&d.source),
            container_path: target,
            permissions: d.permissions.clone().unwrap_or_else(|| "rwm".into()),
        });
    }
    spec.shm_size = svc.shm_size.map(|b| b.0.max(0) as u64);
    spec.stop_signal = svc.stop_signal.clone().or_else(|| image_cfg.stop_signal().clone());
    // As docker refuses it at create, not when the container is stopped.
    if let Some(Err(e)) = spec.stop_signal.as_deref().map(str::parse::<crate::runtime::signal::SignalName>) {
        return Err(ctx.error("stop_signal", e.to_string()));
    }
    spec.stop_grace_ms = svc.stop_grace_period.map(|d| d.to_std().as_millis() as u64);
    spec.restart = restart_policy(ctx)?;
    spec.healthcheck = healthcheck(ctx, svc.healthcheck.as_ref())?;
    spec.log = log_spec(ctx, &mut warnings)?;
    spec.labels = labels(ctx);
    unsupported(ctx, &mut warnings);
    Ok(BuiltSpec { spec, warnings })
}

/// The image's `Env` overlaid by the service's `environment` (a variable without a value,
/// which the loader could not find either, is left out, as docker compose does).
fn environment(image_env: &[String], service: &BTreeMap<String, Option<String>>) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match out.iter_mut().find(|(key, _)| key == k) {
        Some(entry) => entry.1 = v.to_string(),
        None => out.push((k.to_string(), v.to_string())),
    };
    for e in image_env {
        let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
        set(k, v);
    }
    for (k, v) in service {
        if let Some(v) = v {
            set(k, v);
        }
    }
    out.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn resources(ctx: &ServiceContext<'_>, spec: &mut ContainerSpec) -> Result<(), SpecError> {
    let svc = ctx.service;
    let deploy = svc.deploy.as_ref().and_then(|d| d.resources.as_ref());
    let limits = deploy.and_then(|r| r.limits.as_ref());
    let reservations = deploy.and_then(|r| r.reservations.as_ref());
    let r = &mut spec.resources;
    // deploy.resources wins over the service-level keys, as docker compose applies it last.
    r.memory = limits.and_then(|l| l.memory).or(svc.mem_limit).map(|b| b.0);
    r.memory_reservation = reservations.and_then(|l| l.memory).or(svc.mem_reservation).map(|b| b.0);
    r.memory_swap = svc.memswap_limit.map(|b| b.0);
    if let (Some(swap), Some(mem)) = (r.memory_swap, r.memory)
        && swap > 0
        && swap < mem
    {
        return Err(ctx.error("memswap_limit", "must not be less than mem_limit"));
    }
    let cpus = limits.and_then(|l| l.cpus).or(svc.cpus);
    if let Some(cpus) = cpus {
        if cpus < 0.0 {
            return Err(ctx.error("cpus", format!("invalid value {cpus}")));
        }
        if cpus > 0.0 {
            r.cpu_period = Some(100_000);
            r.cpu_quota = Some((f64::from(cpus) * 100_000.0).round() as i64);
        }
    }
    if let Some(q) = svc.cpu_quota {
        r.cpu_quota = Some(q);
    }
    if let Some(p) = svc.cpu_period {
        r.cpu_period =
            Some(u64::try_from(p).map_err(|_| ctx.error("cpu_period", format!("invalid value {p}")))?);
    }
    if let Some(s) = svc.cpu_shares {
        r.cpu_shares =
            Some(u64::try_from(s).map_err(|_| ctx.error("cpu_shares", format!("invalid value {s}")))?);
    }
    r.cpuset_cpus = svc.cpuset.clone();
    r.pids_limit = limits.and_then(|l| l.pids).or(svc.pids_limit);
    if let Some(adj) = svc.oom_score_adj {
        if !(-1000..=1000).contains(&adj) {
            return Err(ctx.error("oom_score_adj", format!("{adj} is outside -1000..1000")));
        }
        r.oom_score_adj = Some(adj as i32);
    }
    Ok(())
}

fn restart_policy(ctx: &ServiceContext<'_>) -> Result<RestartPolicy, SpecError> {
    let svc = ctx.service;
    if let Some(text) = svc.restart.as_deref() {
        return match text.split_once(':') {
            None if text == "no" || text.is_empty() => Ok(RestartPolicy::No),
            None if text == "always" => Ok(RestartPolicy::Always),
            None if text == "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            None if text == "on-failure" => Ok(RestartPolicy::OnFailure(None)),
            Some(("on-failure", n)) => n
                .parse::<u32>()
                .map(|n| RestartPolicy::OnFailure(Some(n)))
                .map_err(|_| ctx.error("restart", format!("invalid maximum retry count {n:?}"))),
            _ => Err(ctx.error(
                "restart",
                format!("invalid policy {text:?} (no, always, on-failure[:N], unless-stopped)"),
            )),
        };
    }
    let Some(policy) = svc.deploy.as_ref().and_then(|d| d.restart_policy.as_ref()) else {
        return Ok(RestartPolicy::No);
    };
    let attempts = policy.max_attempts.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
    match policy.condition.as_deref() {
        Some("none") => Ok(RestartPolicy::No),
        Some("on-failure") => Ok(RestartPolicy::OnFailure(attempts)),
        None | Some("any") => Ok(match attempts {
            // docker compose turns a bounded `any` into on-failure-like retries; berth keeps
            // the bound by counting every exit.
            Some(n) => RestartPolicy::OnFailure(Some(n)),
            None => RestartPolicy::Always,
        }),
        Some(other) => {
            Err(ctx.error("deploy.restart_policy.condition", format!("invalid condition {other:?}")))
        }
    }
}

fn healthcheck(
    ctx: &ServiceContext<'_>,
    hc: Option<&HealthCheckConfig>,
) -> Result<Option<HealthcheckSpec>, SpecError> {
    let Some(hc) = hc else { return Ok(None) };
    if hc.disable || hc.test.is_empty() {
        return Ok(None);
    }
    let command = match hc.test[0].as_str() {
        "NONE" => return Ok(None),
        "CMD" => hc.test[1..].to_vec(),
        "CMD-SHELL" => vec!["/bin/sh".into(), "-c".into(), hc.test[1..].join(" ")],
        _ => vec!["/bin/sh".into(), "-c".into(), hc.test.join(" ")],
    };
    if command.is_empty() {
        return Err(ctx.error("healthcheck.test", "no command"));
    }
    let ms = |d: Option<crate::compose::model::Duration>, default: u64| {
        d.map(|d| d.to_std().as_millis() as u64).filter(|m| *m > 0).unwrap_or(default)
    };
    let retries = match hc.retries {
        None => 3,
        Some(n) => {
            u32::try_from(n).map_err(|_| ctx.error("healthcheck.retries", format!("invalid value {n}")))?
        }
    };
    Ok(Some(HealthcheckSpec {
        command,
        interval_ms: ms(hc.interval, 30_000),
        timeout_ms: ms(hc.timeout, 30_000),
        retries,
        start_period_ms: hc.start_period.map(|d| d.to_std().as_millis() as u64).unwrap_or(0),
        start_interval_ms: ms(hc.start_interval, 5_000),
    }))
}

/// docker's size syntax for `max-size` (`10m`, `1k`, `100`; powers of 1024).
fn parse_size(text: &str) -> Option<u64> {
    crate::compose::model::Bytes::parse(text.trim())
        .ok()
        .and_then(|b| u64::try_from(b.0).ok())
        .filter(|n| *n > 0)
}

fn log_spec(ctx: &ServiceContext<'_>, warnings: &mut Vec<String>) -> Result<LogSpec, SpecError> {
    let Some(logging) = &ctx.service.logging else { return Ok(LogSpec::default()) };
    if let Some(driver) = logging.driver.as_deref()
        && !matches!(driver, "json-file" | "local")
    {
        warnings.push(format!(
            "service {}: logging.driver {driver:?} is not supported; logs go to berth's json-file log",
            ctx.service_name
        ));
    }
    let mut log = LogSpec::default();
    if let Some(size) = logging.options.get("max-size") {
        log.max_size = Some(
            parse_size(size)
                .ok_or_else(|| ctx.error("logging.options.max-size", format!("invalid size {size:?}")))?,
        );
    }
    if let Some(n) = logging.options.get("max-file") {
        let n: u32 = n
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ctx.error("logging.options.max-file", format!("invalid count {n:?}")))?;
        log.max_file = Some(n);
    }
    Ok(log)
}

fn labels(ctx: &ServiceContext<'_>) -> BTreeMap<String, String> {
    let svc = ctx.service;
    let mut labels = svc.labels.clone();
    let set = |labels: &mut BTreeMap<String, String>, k: &str, v: String| {
        labels.insert(k.to_string(), v);
    };
    set(&mut labels, labels::PROJECT, ctx.project.name.clone());
    set(&mut labels, labels::SERVICE, ctx.service_name.to_string());
    set(&mut labels, labels::NUMBER, ctx.replica.to_string());
    set(&mut labels, labels::CONFIG_HASH, ctx.config_hash.to_string());
    set(&mut labels, labels::ONEOFF, "False".into());
    set(&mut labels, labels::WORKING_DIR, ctx.project_dir.display().to_string());
    let files: Vec<String> = ctx.config_files.iter().map(|f| f.display().to_string()).collect();
    set(&mut labels, labels::CONFIG_FILES, files.join(","));
    set(&mut labels, labels::IMAGE, ctx.image.id.clone());
    set(&mut labels, labels::VERSION, labels::VERSION_VALUE.into());
    let deps: Vec<String> =
        svc.depends_on.iter().map(|(name, d)| format!("{name}:{}:{}", d.condition, d.restart)).collect();
    set(&mut labels, labels::DEPENDS_ON, deps.join(","));
    labels
}

/// Warns about settings berth does not honour, so that nothing is ignored silently.
fn unsupported(ctx: &ServiceContext<'_>, warnings: &mut Vec<String>) {
    let svc = ctx.service;
    let mut ignored: Vec<&str> = Vec::new();
    let checks: [(&str, bool); 16] = [
        ("runtime", svc.runtime.is_some()),
        ("isolation", svc.isolation.is_some()),
        ("cgroup_parent", svc.cgroup_parent.is_some()),
        ("cgroup", svc.cgroup.is_some()),
        ("gpus", svc.gpus.is_some()),
        ("platform", svc.platform.is_some()),
        ("volume_driver", svc.volume_driver.is_some()),
        ("storage_opt", !svc.storage_opt.is_empty()),
        ("blkio_config", svc.blkio_config.is_some()),
        ("cpu_rt_period", svc.cpu_rt_period.is_some()),
        ("cpu_rt_runtime", svc.cpu_rt_runtime.is_some()),
        ("cpu_count", svc.cpu_count.is_some()),
        ("cpu_percent", svc.cpu_percent.is_some()),
        ("mem_swappiness", svc.mem_swappiness.is_some()),
        ("device_cgroup_rules", !svc.device_cgroup_rules.is_empty()),
        ("credential_spec", svc.credential_spec.is_some()),
    ];
    for (field, set) in checks {
        if set {
            ignored.push(field);
        }
    }
    if svc.oom_kill_disable {
        ignored.push("oom_kill_disable");
    }
    for field in ignored {
        warnings
            .push(format!("service {}: {field} is not supported by berth and is ignored", ctx.service_name));
    }
}

/// Builds the network request of one container of a service.
pub fn attach_request(ctx: &ServiceContext<'_>, hostname: &str) -> Result<AttachRequest, SpecError> {
    let svc = ctx.service;
    let mode = match svc.network_mode.as_deref() {
        Some("host") => NetMode::Host,
        Some("none") => NetMode::None,
        Some(m) if m.starts_with("service:") || m.starts_with("container:") => {
            match ctx.peer_of("network_mode", m)? {
                Some(id) => NetMode::Container(id),
                None => return Err(ctx.error("network_mode", format!("invalid mode {m:?}"))),
            }
        }
        Some("bridge") | Some("default") | None => NetMode::Bridge(endpoints(ctx)?),
        Some(other) => {
            return Err(ctx.error(
                "network_mode",
                format!(
                    "{other:?} is not supported (host, none, service:NAME, container:NAME; or use networks)"
                ),
            ));
        }
    };
    let ports = ports(ctx)?;
    if !ports.is_empty() && !matches!(mode, NetMode::Bridge(_)) {
        return Err(ctx.error(
            "ports",
            "ports can only be published on the service's own networks (not with this network_mode)",
        ));
    }
    let mut extra_hosts = Vec::new();
    for (host, addrs) in &svc.extra_hosts {
        for a in addrs {
            extra_hosts.push((host.clone(), a.clone()));
        }
    }
    Ok(AttachRequest {
        container_id: ctx.container_id.to_string(),
        container_name: ctx.container_name.to_string(),
        hostname: hostname.to_string(),
        mode,
        ports,
        extra_hosts,
        dns: svc.dns.clone(),
        dns_search: svc.dns_search.clone(),
        dns_opt: svc.dns_opt.clone(),
        sysctls: svc
            .sysctls
            .iter()
            .filter(|(k, _)| k.starts_with("net."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    })
}

fn endpoints(ctx: &ServiceContext<'_>) -> Result<Vec<EndpointRequest>, SpecError> {
    let svc = ctx.service;
    let Some(networks) = &svc.networks else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for (i, (key, cfg)) in networks.iter().enumerate() {
        let field = format!("networks.{key}");
        let net = ctx.project.networks.get(key);
        let name = net
            .and_then(|n| n.name.clone())
            .unwrap_or_else(|| crate::labels::resource_name(&ctx.project.name, key));
        let cfg = cfg.clone().unwrap_or_default();
        let mut aliases = vec![ctx.service_name.to_string()];
        for a in &cfg.aliases {
            if !aliases.contains(a) {
                aliases.push(a.clone());
            }
        }
        let ipv4_address = match cfg.ipv4_address.as_deref() {
            None | Some("") => None,
            Some(a) => Some(a.parse().map_err(|_| ctx.error(&field, format!("invalid ipv4_address {a:?}")))?),
        };
        let ipv6_address = match cfg.ipv6_address.as_deref() {
            None | Some("") => None,
            Some(a) => Some(a.parse().map_err(|_| ctx.error(&field, format!("invalid ipv6_address {a:?}")))?),
        };
        let mac_address =
            cfg.mac_address.clone().or_else(|| if i == 0 { svc.mac_address.clone() } else { None });
        let to_i32 = |v: Option<i64>, what: &str| -> Result<i32, SpecError> {
            v.map_or(Ok(0), |n| {
                i32::try_from(n).map_err(|_| ctx.error(&field, format!("invalid {what} {n}")))
            })
        };
        out.push(EndpointRequest {
            network: name,
            aliases,
            ipv4_address,
            ipv6_address,
            mac_address,
            priority: to_i32(cfg.priority, "priority")?,
            gw_priority: to_i32(cfg.gw_priority, "gw_priority")?,
        });
    }
    // Higher priority first (eth0), then by name, as docker orders them.
    out.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.network.cmp(&b.network)));
    Ok(out)
}

fn port_range(text: &str) -> Option<(u16, u16)> {
    match text.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let p = text.trim().parse().ok()?;
            Some((p, p))
        }
    }
}

fn ports(ctx: &ServiceContext<'_>) -> Result<Vec<PortRequest>, SpecError> {
    let mut out = Vec::new();
    for (i, p) in ctx.service.ports.iter().enumerate() {
        let field = format!("ports[{i}]");
        let protocol = match p.protocol.as_deref().unwrap_or("tcp") {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(ctx.error(field, format!("protocol {other:?} is not supported (tcp or udp)")));
            }
        };
        let target = u16::try_from(p.target)
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| ctx.error(&field, format!("invalid container port {}", p.target)))?;
        let host_port = match p.published.as_deref() {
            None | Some("") | Some("0") => None,
            Some(text) => Some(
                port_range(text)
                    .ok_or_else(|| ctx.error(&field, format!("invalid published port {text:?}")))?,
            ),
        };
        let host_ip: Option<IpAddr> = match p.host_ip.as_deref() {
            None | Some("") => None,
            Some(ip) => Some(ip.parse().map_err(|_| ctx.error(&field, format!("invalid host_ip {ip:?}")))?),
        };
        out.push(PortRequest {
            host_ip,
            host_port,
            container_port: (target, target),
            protocol,
            network: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};
    use serde_json::{Value, json};

    use super::*;

    fn image(entry: &[&str], cmd: &[&str], env: &[&str], user: &str) -> ResolvedImage {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let config = ConfigBuilder::default()
            .entrypoint(s(entry))
            .cmd(s(cmd))
            .env(s(env))
            .user(user.to_string())
            .working_dir("/srv".to_string())
            .stop_signal("SIGQUIT".to_string())
            .build()
            .expect("config");
        ResolvedImage {
            id: "sha256:abc".into(),
            config: ImageConfigurationBuilder::default().config(config).build().expect("image config"),
            layer_dirs: vec![PathBuf::from("/layers/1")],
        }
    }

    fn project(services: Value) -> Project {
        Project::from_json(json!({"name": "p", "services": services, "networks": {"default": {"name": "p_default"}, "back": {"name": "p_back"}}}))
            .expect("project")
    }

    fn build(p: &Project, img: &ResolvedImage, svc: &str) -> Result<BuiltSpec, SpecError> {
        with_ctx(p, img, svc, container_spec)
    }

    fn with_ctx<T>(p: &Project, img: &ResolvedImage, svc: &str, f: impl Fn(&ServiceContext<'_>) -> T) -> T {
        let peers: HashMap<&str, &str> = HashMap::from([("db", "d".repeat(64).leak() as &str)]);
        let peer = move |r: PeerRef<'_>| match r {
            PeerRef::Service(s) => peers.get(s).map(|s| s.to_string()),
            PeerRef::Container(_) => None,
        };
        let id = "a".repeat(64);
        let ctx = ServiceContext {
            project: p,
            service_name: svc,
            service: &p.services[svc],
            image: img,
            container_id: &id,
            container_name: "p-web-1",
            replica: 1,
            config_hash: "h",
            project_dir: Path::new("/proj"),
            config_files: &[],
            peer: &peer,
        };
        f(&ctx)
    }

    #[test]
    fn entrypoint_and_command_combine_as_docker_does() {
        let img = image(&["/entry"], &["def"], &[], "");
        let p = project(
            json!({"a": {}, "b": {"command": ["x"]}, "c": {"entrypoint": ["/e"]}, "d": {"entrypoint": ["/e"], "command": ["y"]}}),
        );
        assert_eq!(build(&p, &img, "a").unwrap().spec.process.args, ["/entry", "def"]);
        assert_eq!(build(&p, &img, "b").unwrap().spec.process.args, ["/entry", "x"]);
        assert_eq!(build(&p, &img, "c").unwrap().spec.process.args, ["/e"]);
        assert_eq!(build(&p, &img, "d").unwrap().spec.process.args, ["/e", "y"]);
        let empty = image(&[], &[], &[], "");
        let err = build(&p, &empty, "a").unwrap_err();
        assert!(err.to_string().starts_with("service a: command: no command"), "{err}");
    }

    #[test]
    fn environment_user_workdir_and_stop_signal_fall_back_to_the_image() {
        let img = image(&[], &["sh"], &["PATH=/bin", "A=image", "B=image"], "1000");
        let p = project(
            json!({"a": {"environment": {"A": "svc", "C": "new", "D": null}}, "b": {"user": "0:0", "working_dir": "/w", "stop_signal": "SIGINT"}}),
        );
        let a = build(&p, &img, "a").unwrap().spec;
        assert_eq!(a.process.env, ["PATH=/bin", "A=svc", "B=image", "C=new"]);
        assert_eq!(a.process.user.as_deref(), Some("1000"));
        assert_eq!(a.process.cwd, "/srv");
        assert_eq!(a.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(a.hostname, "aaaaaaaaaaaa");
        let b = build(&p, &img, "b").unwrap().spec;
        assert_eq!(b.process.user.as_deref(), Some("0:0"));
        assert_eq!(b.process.cwd, "/w");
        assert_eq!(b.stop_signal.as_deref(), Some("SIGINT"));
    }

    #[test]
    fn a_stop_signal_is_checked_at_create_realtime_ones_included() {
        let img = image(&[], &["sh"], &[], "");
        let p = project(json!({"a": {"stop_signal": "SIGRTMIN+3"}, "b": {"stop_signal": "SIGRTMIN+99"}}));
        assert_eq!(build(&p, &img, "a").unwrap().spec.stop_signal.as_deref(), Some("SIGRTMIN+3"));
        let err = build(&p, &img, "b").unwrap_err().to_string();
        assert!(err.starts_with("service b: stop_signal: invalid signal \"SIGRTMIN+99\""), "{err}");
    }

    #[test]
    fn resources_with_deploy_limits_winning() {
        let img = image(&[], &["sh"], &[], "");
        let p = project(json!({
            "a": {"cpus": 0.5, "mem_limit": "64m", "pids_limit": 10, "cpu_shares": 512, "cpuset": "0", "oom_score_adj": 100},
            "b": {"mem_limit": "64m", "cpus": 2, "deploy": {"resources": {"limits": {"memory": "32m", "cpus": "1.5", "pids": 5}, "reservations": {"memory": "16m"}}}},
            "c": {"oom_score_adj": 2000}
        }));
        let a = build(&p, &img, "a").unwrap().spec.resources;
        assert_eq!((a.cpu_quota, a.cpu_period), (Some(50_000), Some(100_000)));
        assert_eq!(a.memory, Some(64 << 20));
        assert_eq!(
            (a.pids_limit, a.cpu_shares, a.cpuset_cpus.as_deref(), a.oom_score_adj),
            (Some(10), Some(512), Some("0"), Some(100))
        );
        let b = build(&p, &img, "b").unwrap().spec.resources;
        assert_eq!(
            (b.memory, b.memory_reservation, b.cpu_quota, b.pids_limit),
            (Some(32 << 20), Some(16 << 20), Some(150_000), Some(5))
        );
        assert!(build(&p, &img, "c").unwrap_err().to_string().contains("oom_score_adj"));
    }

    #[test]
    fn restart_policies_and_healthchecks() {
        let img = image(&[], &["sh"], &[], "");
        let p = project(json!({
            "a": {"restart": "on-failure:3", "healthcheck": {"test": ["CMD", "true"], "interval": "1s"}},
            "b": {"restart": "unless-stopped", "healthcheck": {"test": ["CMD-SHELL", "test -f /x"]}},
            "c": {"deploy": {"restart_policy": {"condition": "on-failure", "max_attempts": 2}}, "healthcheck": {"test": ["NONE"]}},
            "d": {"restart": "sometimes"},
            "e": {"healthcheck": {"disable": true, "test": ["CMD", "x"]}}
        }));
        let a = build(&p, &img, "a").unwrap().spec;
        assert_eq!(a.restart, RestartPolicy::OnFailure(Some(3)));
        let hc = a.healthcheck.unwrap();
        assert_eq!(
            (hc.command.as_slice(), hc.interval_ms, hc.timeout_ms, hc.retries),
            (&["true".to_string()][..], 1000, 30_000, 3)
        );
        let b = build(&p, &img, "b").unwrap().spec;
        assert_eq!(b.restart, RestartPolicy::UnlessStopped);
        assert_eq!(b.healthcheck.unwrap().command, ["/bin/sh", "-c", "test -f /x"]);
        let c = build(&p, &img, "c").unwrap().spec;
        assert_eq!((c.restart, c.healthcheck), (RestartPolicy::OnFailure(Some(2)), None));
        assert!(build(&p, &img, "d").unwrap_err().to_string().contains("restart"));
        assert!(build(&p, &img, "e").unwrap().spec.healthcheck.is_none());
    }

    #[test]
    fn security_options_and_namespaces() {
        let img = image(&[], &["sh"], &[], "");
        let p = project(json!({
            "a": {"security_opt": ["no-new-privileges:true", "seccomp=unconfined", "apparmor=x"], "pid": "host", "ipc": "service:db", "cap_drop": ["ALL"]},
            "b": {"security_opt": ["seccomp=missing.json"]},
            "c": {"userns_mode": "keep-id"},
            "d": {"ipc": "service:nowhere"}
        }));
        let a = build(&p, &img, "a").unwrap();
        assert!(a.spec.security.no_new_privileges && a.spec.namespaces.pid_host);
        assert_eq!(a.spec.security.seccomp, SeccompMode::Unconfined);
        assert_eq!(a.spec.namespaces.ipc, IpcNamespace::Container("d".repeat(64)));
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
        let b = build(&p, &img, "b").unwrap_err().to_string();
        assert!(b.contains("service b: security_opt[0]") && b.contains("/proj/missing.json"), "{b}");
        assert!(build(&p, &img, "c").unwrap_err().to_string().contains("userns_mode"));
        assert!(build(&p, &img, "d").unwrap_err().to_string().contains("service:nowhere"));
    }

    #[test]
    fn logging_ulimits_labels() {
        let img = image(&[], &["sh"], &[], "");
        let p = project(json!({"a": {
            "logging": {"driver": "json-file", "options": {"max-size": "10k", "max-file": "3"}},
            "ulimits": {"nofile": {"soft": 100, "hard": 200}, "nproc": 50},
            "labels": {"mine": "1"}, "sysctls": {"net.ipv4.ip_forward": "1", "kernel.msgmax": "65536"},
            "depends_on": {"db": {"condition": "service_healthy", "restart": true}}
        }, "db": {}}));
        let s = build(&p, &img, "a").unwrap().spec;
        assert_eq!((s.log.max_size, s.log.max_file), (Some(10 * 1024), Some(3)));
        assert_eq!(s.ulimits.len(), 2);
        assert_eq!(s.sysctls.keys().collect::<Vec<_>>(), ["kernel.msgmax"]);
        assert_eq!(s.labels["mine"], "1");
        assert_eq!(s.labels[labels::PROJECT], "p");
        assert_eq!(s.labels[labels::SERVICE], "a");
        assert_eq!(s.labels[labels::CONFIG_HASH], "h");
        assert_eq!(s.labels[labels::DEPENDS_ON], "db:service_healthy:true");
        let req = with_ctx(&p, &img, "a", |ctx| attach_request(ctx, "host")).unwrap();
        assert_eq!(req.sysctls.keys().collect::<Vec<_>>(), ["net.ipv4.ip_forward"]);
    }

    #[test]
    fn networks_ports_and_modes() {
        let img = image(&[], &["sh"], &[], "");
        let p = project(json!({
            "a": {"networks": {"default": null, "back": {"aliases": ["x"], "ipv4_address": "10.1.0.5", "priority": 10}},
                  "ports": [{"target": 80, "published": "8080", "host_ip": "127.0.0.1"}, {"target": 53, "protocol": "udp"}, {"target": 90, "published": "9000-9010"}],
                  "extra_hosts": {"h": ["1.2.3.4"]}, "dns": ["9.9.9.9"]},
            "b": {"network_mode": "service:db"},
            "c": {"network_mode": "host", "ports": [{"target": 1}]},
            "d": {"ports": [{"target": 1, "protocol": "sctp"}]},
            "e": {"networks": {"default": {"ipv4_address": "nope"}}}
        }));
        let req = with_ctx(&p, &img, "a", |ctx| attach_request(ctx, "hn")).unwrap();
        let NetMode::Bridge(eps) = &req.mode else { panic!("bridge") };
        assert_eq!(eps[0].network, "p_back");
        assert_eq!(eps[0].aliases, ["a", "x"]);
        assert_eq!(eps[0].ipv4_address, Some("10.1.0.5".parse().unwrap()));
        assert_eq!(eps[1].network, "p_default");
        assert_eq!(req.ports[0].host_port, Some((8080, 8080)));
        assert_eq!(req.ports[0].host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((req.ports[1].host_port, req.ports[1].protocol), (None, Protocol::Udp));
        assert_eq!(req.ports[2].host_port, Some((9000, 9010)));
        assert_eq!(req.extra_hosts, [("h".to_string(), "1.2.3.4".to_string())]);
        assert_eq!(req.hostname, "hn");
        let b = with_ctx(&p, &img, "b", |ctx| attach_request(ctx, "hn")).unwrap();
        assert_eq!(b.mode, NetMode::Container("d".repeat(64)));
        for (svc, field) in [("c", "ports"), ("d", "ports[0]"), ("e", "networks.default")] {
            let e = with_ctx(&p, &img, svc, |ctx| attach_request(ctx, "hn")).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }
}
