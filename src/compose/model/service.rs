//! A service, as compose-go's `types.ServiceConfig`: same JSON names, order and omission rules,
//! so that `config --format json` prints what `docker compose config` prints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::lenient;
use super::units::{Bytes, Duration};

fn is_false(b: &bool) -> bool {
    !*b
}

/// `KEY: value` where a value may be missing (`environment`, build `args`).
pub type MappingWithEquals = BTreeMap<String, Option<String>>;

/// One service of the project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// Profiles that enable the service.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    /// OCI annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Whether `up` attaches to the service's logs.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub attach: Option<bool>,
    /// How to build the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<BuildConfig>,
    /// `develop` (watch rules), kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub develop: Option<Json>,
    /// Block IO weights and limits, kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blkio_config: Option<Json>,
    /// Capabilities to add.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities to drop.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Parent cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// Cgroup namespace mode (`host` or `private`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// CPU count (Windows).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub cpu_count: Option<i64>,
    /// CPU percent (Windows).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f32")]
    pub cpu_percent: Option<f32>,
    /// CFS period in microseconds.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub cpu_period: Option<i64>,
    /// CFS quota in microseconds.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub cpu_quota: Option<i64>,
    /// Real-time period.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub cpu_rt_period: Option<i64>,
    /// Real-time runtime.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub cpu_rt_runtime: Option<i64>,
    /// Number of CPUs.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f32")]
    pub cpus: Option<f32>,
    /// CPUs the service may run on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Relative CPU weight.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub cpu_shares: Option<i64>,
    /// Command override: `None` keeps the image's, `Some([])` clears it. Printed as `null`
    /// when unset, as compose-go does.
    pub command: Option<Vec<String>>,
    /// Configs mounted into the container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub configs: Vec<ServiceFileRef>,
    /// Fixed container name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Credential spec (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential_spec: Option<Json>,
    /// Services to start first, with the condition to wait for.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub depends_on: BTreeMap<String, ServiceDependency>,
    /// Deployment settings (replicas, resources, restart policy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeployConfig>,
    /// Device cgroup rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub device_cgroup_rules: Vec<String>,
    /// Devices mapped into the container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
    /// DNS servers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS options.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    /// DNS search domains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// Domain name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// Entrypoint override; same null/empty rules as `command`.
    pub entrypoint: Option<Vec<String>>,
    /// Environment; a `None` value is a variable declared without a value.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: MappingWithEquals,
    /// Env files, already folded into `environment` by the loader (not printed).
    #[serde(skip_serializing)]
    pub env_file: Vec<EnvFile>,
    /// Exposed ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// External links.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub external_links: Vec<String>,
    /// Extra `/etc/hosts` entries: host to addresses.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", serialize_with = "hosts_as_list")]
    pub extra_hosts: BTreeMap<String, Vec<String>>,
    /// Supplementary groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// GPU requests, kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpus: Option<Json>,
    /// Hostname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheckConfig>,
    /// Image reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Run an init process as pid 1.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub init: Option<bool>,
    /// IPC namespace mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    /// Isolation (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Label files, already folded into `labels` by the loader (not printed).
    #[serde(skip_serializing)]
    pub label_file: Vec<String>,
    /// Links to other services.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Logging driver and options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingConfig>,
    /// Memory limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_limit: Option<Bytes>,
    /// Memory soft limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_reservation: Option<Bytes>,
    /// Memory plus swap limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<Bytes>,
    /// Swappiness.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub mem_swappiness: Option<i64>,
    /// MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Network mode (`host`, `none`, `service:x`, `container:x`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// Networks the service is attached to (`None` value: attached with defaults).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<BTreeMap<String, Option<ServiceNetworkConfig>>>,
    /// Disable the OOM killer.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub oom_kill_disable: bool,
    /// OOM score adjustment.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub oom_score_adj: Option<i64>,
    /// PID namespace mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    /// Maximum number of processes.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub pids_limit: Option<i64>,
    /// Platform (`linux/amd64`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Published ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePortConfig>,
    /// Extended privileges.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub privileged: bool,
    /// When to pull the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_policy: Option<String>,
    /// Read-only root filesystem.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub read_only: bool,
    /// Restart policy (`no`, `always`, `on-failure[:N]`, `unless-stopped`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// OCI runtime name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Number of replicas.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub scale: Option<i64>,
    /// Secrets mounted into the container.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<ServiceFileRef>,
    /// Security options (`no-new-privileges`, `seccomp=...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Size of `/dev/shm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Bytes>,
    /// Keep stdin open.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub stdin_open: bool,
    /// Time to wait after the stop signal before killing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_grace_period: Option<Duration>,
    /// Stop signal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Storage driver options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub storage_opt: BTreeMap<String, String>,
    /// Namespaced kernel parameters.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// tmpfs mounts (`/run`, `/tmp:size=64m`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<String>,
    /// Allocate a terminal.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub tty: bool,
    /// Resource limits.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// User (`uid[:gid]` or names).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub user: Option<String>,
    /// User namespace mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    /// UTS namespace mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    /// Default volume driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_driver: Option<String>,
    /// Mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<ServiceVolumeConfig>,
    /// Services or containers whose volumes are mounted too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Commands run in the container after it starts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_start: Vec<ServiceHook>,
    /// Commands run in the container before it stops.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pre_stop: Vec<ServiceHook>,
    /// `x-` extensions of the service (kept, not printed, as compose-go).
    #[serde(flatten, skip_serializing)]
    pub extensions: BTreeMap<String, Json>,
}

impl ServiceConfig {
    /// How many containers the service runs: `scale`, else `deploy.replicas`, else 1.
    pub fn replicas(&self) -> u32 {
        let n = self.scale.or_else(|| self.deploy.as_ref().and_then(|d| d.replicas)).unwrap_or(1);
        u32::try_from(n.max(0)).unwrap_or(u32::MAX)
    }
}

fn hosts_as_list<S: serde::Serializer>(
    hosts: &BTreeMap<String, Vec<String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    // compose-go prints extra hosts as `host=address` entries, sorted as strings.
    let mut list: Vec<String> =
        hosts.iter().flat_map(|(h, ips)| ips.iter().map(move |ip| format!("{h}={ip}"))).collect();
    list.sort();
    list.serialize(s)
}

/// How to build a service's image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildConfig {
    /// Build context (absolute path or URL).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Dockerfile, relative to the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<String>,
    /// Dockerfile content given inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dockerfile_inline: Option<String>,
    /// Extra privileges the build may use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entitlements: Vec<String>,
    /// Build arguments.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub args: MappingWithEquals,
    /// SSH agent sockets or keys, kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<Json>,
    /// Image labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Cache sources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_from: Vec<String>,
    /// Cache destinations.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cache_to: Vec<String>,
    /// Build without cache.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub no_cache: bool,
    /// Named additional contexts.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub additional_contexts: BTreeMap<String, String>,
    /// Always pull base images.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub pull: bool,
    /// Extra hosts during the build.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", serialize_with = "hosts_as_list")]
    pub extra_hosts: BTreeMap<String, Vec<String>>,
    /// Isolation (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    /// Network during RUN steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Build stage.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Secrets available during the build.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<ServiceFileRef>,
    /// Additional tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Resource limits during the build.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    /// Target platforms.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Privileged build.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub privileged: bool,
    /// Size of `/dev/shm` during the build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<Bytes>,
    /// `x-` extensions.
    #[serde(flatten, skip_serializing)]
    pub extensions: BTreeMap<String, Json>,
}

/// A dependency on another service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDependency {
    /// `service_started`, `service_healthy` or `service_completed_successfully`.
    pub condition: String,
    /// Restart this service when the dependency restarts.
    #[serde(default, skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub restart: bool,
    /// Whether a missing dependency is an error (else tolerated).
    #[serde(default = "yes", deserialize_with = "lenient::bool")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// An `env_file` entry (folded into `environment` by the loader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvFile {
    /// Absolute path.
    pub path: String,
    /// Whether a missing file is an error.
    #[serde(default = "yes", deserialize_with = "lenient::bool")]
    pub required: bool,
    /// `raw` to take values literally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A published port, long form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServicePortConfig {
    /// Port name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ingress` or `host`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Host address to bind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// Container port.
    pub target: u32,
    /// Host port or range (`"8080"`, `"8000-8010"`); none picks a free port.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub published: Option<String>,
    /// `tcp`, `udp` or `sctp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Application protocol (`http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

/// A mount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceVolumeConfig {
    /// `bind`, `volume`, `tmpfs`, `image`, `npipe` or `cluster`.
    pub r#type: String,
    /// Host path (bind) or volume name; none for anonymous volumes and tmpfs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Path in the container.
    pub target: String,
    /// Mount read-only.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub read_only: bool,
    /// Consistency (macOS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consistency: Option<String>,
    /// Bind options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<VolumeBind>,
    /// Volume options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeVolume>,
    /// tmpfs options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<VolumeTmpfs>,
    /// Image mount options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Json>,
}

/// Bind mount options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeBind {
    /// Mount propagation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagation: Option<String>,
    /// Create a missing host path (default true; printed only when false).
    #[serde(skip_serializing_if = "Clone::clone", deserialize_with = "lenient::bool")]
    pub create_host_path: bool,
    /// SELinux relabeling (`z` or `Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selinux: Option<String>,
    /// Recursive read-only handling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recursive: Option<String>,
}

impl Default for VolumeBind {
    fn default() -> VolumeBind {
        VolumeBind { propagation: None, create_host_path: true, selinux: None, recursive: None }
    }
}

/// Volume mount options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeVolume {
    /// Don't copy the image's content into a new volume.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub nocopy: bool,
    /// Mount a subpath of the volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subpath: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// tmpfs mount options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeTmpfs {
    /// Size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<Bytes>,
    /// File mode.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_mode")]
    pub mode: Option<u32>,
}

/// A secret or config given to a service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceFileRef {
    /// Name of the top-level secret or config.
    pub source: String,
    /// Path (or name under `/run/secrets`) in the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Owner uid.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uid: Option<String>,
    /// Owner gid.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub gid: Option<String>,
    /// File mode.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_mode")]
    pub mode: Option<u32>,
}

/// A device mapping.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeviceMapping {
    /// Host device.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// cgroup permissions (`rwm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
}

/// Health check.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthCheckConfig {
    /// `["CMD", ...]`, `["CMD-SHELL", cmd]` or `["NONE"]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    /// Time a check may take.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Time between checks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Failures before unhealthy.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub retries: Option<i64>,
    /// Grace period after start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_period: Option<Duration>,
    /// Time between checks during the start period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<Duration>,
    /// Disable the image's health check.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub disable: bool,
}

/// Logging driver and options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// Driver name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Driver options (`max-size`, `max-file`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// A resource limit: one number for both soft and hard, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ulimit {
    /// Soft and hard limit alike.
    Single(i64),
    /// Separate limits.
    Pair {
        /// Soft limit.
        soft: i64,
        /// Hard limit.
        hard: i64,
    },
}

/// A network attachment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceNetworkConfig {
    /// Default-route priority.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub priority: Option<i64>,
    /// Gateway priority.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub gw_priority: Option<i64>,
    /// Extra DNS names on this network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Fixed IPv4 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    /// Fixed IPv6 address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    /// Link-local addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_local_ips: Vec<String>,
    /// MAC address on this network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Driver options.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub driver_opts: BTreeMap<String, String>,
    /// Interface name in the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
}

/// A lifecycle hook (`post_start`, `pre_stop`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceHook {
    /// Command to run.
    pub command: Option<Vec<String>>,
    /// User to run it as.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub user: Option<String>,
    /// Run privileged.
    #[serde(skip_serializing_if = "is_false", deserialize_with = "lenient::bool")]
    pub privileged: bool,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Extra environment.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: MappingWithEquals,
}

/// Deployment settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeployConfig {
    /// `replicated` or `global`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Number of containers.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub replicas: Option<i64>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Rolling update settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_config: Option<UpdateConfig>,
    /// Rollback settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_config: Option<UpdateConfig>,
    /// Limits and reservations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Restart policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// Placement (swarm), kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Json>,
    /// `vip` or `dnsrr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_mode: Option<String>,
}

/// Rolling update or rollback settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UpdateConfig {
    /// Containers at a time.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub parallelism: Option<i64>,
    /// Wait between groups.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// `continue`, `rollback` or `pause`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_action: Option<String>,
    /// Time to watch for failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub monitor: Option<Duration>,
    /// Failure rate tolerated.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f32")]
    pub max_failure_ratio: Option<f32>,
    /// `stop-first` or `start-first`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// Resource limits and reservations.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Upper limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Resource>,
    /// Guaranteed amounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservations: Option<Resource>,
}

/// One set of resource amounts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resource {
    /// CPUs (printed as a number).
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_f32")]
    pub cpus: Option<f32>,
    /// Memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Bytes>,
    /// Process count.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub pids: Option<i64>,
    /// Device requests, kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Json>,
    /// Generic resources, kept as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generic_resources: Option<Json>,
}

/// The `deploy.restart_policy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartPolicy {
    /// `none`, `on-failure` or `any`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Wait between restarts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Maximum attempts.
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub max_attempts: Option<i64>,
    /// Window to decide whether a restart succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}
