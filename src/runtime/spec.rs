//! What one container is: the runtime's input, written by the engine (or a test) to
//! `<root>/containers/<id>/spec.json` and read back by the shim. It knows nothing of compose:
//! every name is already resolved to a path, a number or a list of arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A whole container: its root filesystem, process, namespaces, mounts, security and resources,
/// plus what the shim does around it (logs, restart, healthcheck, stop).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerSpec {
    /// Unique id (64 hex digits); names the container's dirs, cgroup and socket.
    pub id: String,
    /// Human name, e.g. `proj-web-1`.
    pub name: String,
    /// The image the rootfs comes from (`sha256:...`), so that the image store can tell it is used.
    pub image_id: Option<String>,
    /// The image as the user named it (`busybox:latest`), which docker reports (events, `ps`).
    pub image: Option<String>,
    /// The root filesystem.
    pub rootfs: RootfsSpec,
    /// The process to run.
    pub process: ProcessSpec,
    /// Hostname inside the container (UTS namespace).
    pub hostname: String,
    /// NIS domain name inside the container.
    pub domainname: Option<String>,
    /// Which namespaces are new and which are joined.
    pub namespaces: NamespacesSpec,
    /// Extra mounts (binds, volumes, tmpfs), applied in order after the standard ones.
    pub mounts: Vec<MountSpec>,
    /// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` written by the network module.
    pub etc_files: EtcFiles,
    /// Capabilities, seccomp, privileges.
    pub security: SecuritySpec,
    /// cgroup limits and the OOM score.
    pub resources: ResourcesSpec,
    /// rlimits as (name, soft, hard), e.g. ("nofile", 1024, 2048).
    pub ulimits: Vec<UlimitSpec>,
    /// Namespaced sysctls to set inside the container, e.g. `net.ipv4.ip_forward`.
    pub sysctls: BTreeMap<String, String>,
    /// Host devices to make available.
    pub devices: Vec<DeviceSpec>,
    /// Size of `/dev/shm` in bytes (64 MiB when absent, as docker).
    pub shm_size: Option<u64>,
    /// Signal that asks the process to stop (name such as `SIGTERM` or a number).
    pub stop_signal: Option<String>,
    /// How long to wait after the stop signal before SIGKILL, in milliseconds (10 s when absent).
    pub stop_grace_ms: Option<u64>,
    /// What the shim does when the process exits.
    pub restart: RestartPolicy,
    /// The healthcheck the shim runs, if any.
    pub healthcheck: Option<HealthcheckSpec>,
    /// Log rotation.
    pub log: LogSpec,
    /// Labels kept with the container (compose labels among them).
    pub labels: BTreeMap<String, String>,
}

/// The root filesystem: read-only image layers under a writable upper dir of the container's own.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RootfsSpec {
    /// Unpacked image layers, bottom layer first.
    pub lower_dirs: Vec<PathBuf>,
    /// Mount the rootfs read-only (`read_only: true`).
    pub read_only: bool,
}

/// The container's main process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in `PATH` inside the container when it has no slash.
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Working directory inside the container (`/` when empty); created when missing.
    pub cwd: String,
    /// `uid[:gid]` or `name[:group]` looked up in the container's `/etc/passwd` and `/etc/group`.
    pub user: Option<String>,
    /// Extra groups, by number or name.
    pub group_add: Vec<String>,
    /// Give the process a pseudo-terminal.
    pub tty: bool,
    /// Keep stdin open (the shim holds a pipe to it).
    pub stdin_open: bool,
    /// The process is attached to the stdio of whoever starts the container (a foreground
    /// `run`): with `tty`, the shim relays between the caller's terminal and the process's
    /// own (and logs its output); without, it reads the caller's stdin (with `stdin_open`; /dev/null otherwise) and its
    /// output goes to the log and to the caller's stdout and stderr. Its first run only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub attach_stdio: bool,
    /// Run berth's small init as pid 1, which reaps zombies and forwards signals.
    pub init: bool,
}

/// How each namespace is set up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespacesSpec {
    /// The network namespace.
    pub net: NetNamespace,
    /// Share the host's pid namespace (`pid: host`).
    pub pid_host: bool,
    /// The IPC namespace.
    pub ipc: IpcNamespace,
    /// Share the host's UTS namespace (with host networking, as docker does).
    pub uts_host: bool,
}

/// Where the container's network namespace comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetNamespace {
    /// A fresh namespace with only `lo` (`network_mode: none`, and the runtime's own tests).
    #[default]
    None,
    /// The host's namespace (`network_mode: host`).
    Host,
    /// Join the namespace bind-mounted at this path (made by the network module, or another
    /// container's for `service:` / `container:` modes).
    Path(PathBuf),
}

/// Where the container's IPC namespace comes from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpcNamespace {
    /// A private namespace (docker's `private` and `shareable` both make one).
    #[default]
    Private,
    /// The host's.
    Host,
    /// Join this container's (by id), as `ipc: service:x` / `container:x`.
    Container(String),
}

/// One mount inside the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute path inside the container.
    pub target: String,
    /// What is mounted.
    pub kind: MountKind,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
    /// The named volume the mount comes from, if any (so that a volume in use is known even
    /// when its mount has no host path, as a tmpfs volume).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}

/// The kinds of mount a container can have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// Bind a host path (file or directory); `propagation` is `rprivate` when absent.
    Bind {
        /// Host path.
        source: PathBuf,
        /// `private`, `rprivate`, `shared`, `rshared`, `slave`, `rslave`.
        #[serde(default)]
        propagation: Option<String>,
        /// Do not bind submounts of the source (docker binds recursively by default).
        #[serde(default)]
        non_recursive: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Size in bytes (unlimited when absent, half of RAM by the kernel's default).
        #[serde(default)]
        size: Option<u64>,
        /// Octal mode of the root dir (1777 when absent).
        #[serde(default)]
        mode: Option<u32>,
    },
}

/// Files the network module writes for the container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EtcFiles {
    /// Bound onto `/etc/hosts`.
    pub hosts: Option<PathBuf>,
    /// Bound onto `/etc/resolv.conf`.
    pub resolv_conf: Option<PathBuf>,
    /// Bound onto `/etc/hostname`.
    pub hostname: Option<PathBuf>,
}

/// Privileges of the process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecuritySpec {
    /// All capabilities, no seccomp, no masked paths, all devices (`privileged: true`).
    pub privileged: bool,
    /// Capabilities added to docker's default set (`CAP_` prefix optional, `ALL` allowed).
    pub cap_add: Vec<String>,
    /// Capabilities removed (`ALL` removes every one before `cap_add` is applied).
    pub cap_drop: Vec<String>,
    /// The seccomp filter.
    pub seccomp: SeccompMode,
    /// Set `no_new_privs`, so that setuid binaries and file capabilities grant nothing.
    pub no_new_privileges: bool,
}

/// Which seccomp filter the process gets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// berth's default, blocking what docker's default profile blocks.
    #[default]
    Default,
    /// No filter (`seccomp=unconfined`).
    Unconfined,
    /// A profile in docker's JSON format (the file's content, read when the spec was made).
    Profile(String),
}

/// cgroup limits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourcesSpec {
    /// Memory limit in bytes.
    pub memory: Option<i64>,
    /// Memory plus swap limit in bytes (-1: unlimited swap).
    pub memory_swap: Option<i64>,
    /// Soft limit in bytes.
    pub memory_reservation: Option<i64>,
    /// CFS quota in microseconds per period.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds (100000 when a quota is set without one).
    pub cpu_period: Option<u64>,
    /// Relative CPU weight (docker's shares: 2..262144, 1024 default).
    pub cpu_shares: Option<u64>,
    /// CPUs allowed, e.g. `0-1`.
    pub cpuset_cpus: Option<String>,
    /// Memory nodes allowed.
    pub cpuset_mems: Option<String>,
    /// Maximum number of tasks (`pids_limit`); -1 or 0 is unlimited.
    pub pids_limit: Option<i64>,
    /// OOM score adjustment (-1000..1000).
    pub oom_score_adj: Option<i32>,
}

/// One rlimit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UlimitSpec {
    /// Name as compose writes it: `nofile`, `nproc`, `core`, ...
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// A host device made available inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    /// Path of the device node on the host.
    pub host_path: PathBuf,
    /// Path inside the container.
    pub container_path: String,
    /// cgroup permissions, a subset of `rwm`.
    pub permissions: String,
}

/// What happens when the process exits (docker's restart policies).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Always restart, unless stopped by a user.
    Always,
    /// Restart on a non-zero exit, at most this many times (unlimited when `None`).
    OnFailure(Option<u32>),
    /// As `Always`; differs from it only across a restart of the host.
    UnlessStopped,
}

/// A healthcheck the shim runs inside the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthcheckSpec {
    /// argv run in the container; exit 0 is healthy.
    pub command: Vec<String>,
    /// Time between checks, ms (30 s default).
    pub interval_ms: u64,
    /// Time a check may take, ms (30 s default).
    pub timeout_ms: u64,
    /// Consecutive failures that make the container unhealthy (3 default).
    pub retries: u32,
    /// Grace time after start during which failures don't count, ms.
    pub start_period_ms: u64,
    /// Time between checks during the start period, ms (5 s default).
    pub start_interval_ms: u64,
}

/// Log rotation settings (`logging.options`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogSpec {
    /// Rotate when the log reaches this many bytes (never when absent).
    pub max_size: Option<u64>,
    /// Keep this many files in all (1 when absent).
    pub max_file: Option<u32>,
}
