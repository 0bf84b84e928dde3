//! A container's recorded state (`<root>/containers/<id>/status.json`), written by the shim at
//! every change so that `ps` can read it without asking the shim.

use serde::{Deserialize, Serialize};

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Made, never started.
    #[default]
    Created,
    /// Its process runs.
    Running,
    /// It exited and the restart policy will start it again.
    Restarting,
    /// It exited (or was stopped) and nothing will start it again.
    Exited,
    /// Its shim disappeared without recording how it ended.
    Dead,
}

impl State {
    /// docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Exited => "exited",
            State::Dead => "dead",
        }
    }
}

/// The healthcheck's verdict.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Not yet decided (start period, or no check has passed yet).
    #[default]
    Starting,
    /// The last check passed.
    Healthy,
    /// `retries` checks in a row failed.
    Unhealthy,
}

impl HealthState {
    /// docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Starting => "starting",
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// One healthcheck run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResult {
    /// When it started.
    pub start: String,
    /// When it ended.
    pub end: String,
    /// Its exit code (-1 when it timed out or could not run).
    pub exit_code: i32,
    /// The first 4 KiB of its output.
    pub output: String,
}

/// Health as docker's inspect shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The verdict.
    pub status: HealthState,
    /// Failed checks in a row.
    pub failing_streak: u32,
    /// The last five runs.
    pub log: Vec<HealthResult>,
}

/// Everything recorded about a container's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerStatus {
    /// The state.
    pub state: State,
    /// Host pid of the container's pid 1 (0 when not running).
    pub pid: i32,
    /// The shim's pid (0 when no shim runs).
    pub shim_pid: i32,
    /// When the process last started.
    pub started_at: Option<String>,
    /// When it last ended.
    pub finished_at: Option<String>,
    /// Its last exit code (128+n when killed by signal n).
    pub exit_code: Option<i32>,
    /// Whether the OOM killer ended it.
    pub oom_killed: bool,
    /// How many times the restart policy started it again.
    pub restart_count: u32,
    /// The healthcheck's state, when it has one.
    pub health: Option<Health>,
    /// Why it could not start, when it could not.
    pub error: Option<String>,
    /// Stopped by a user (`stop`, `kill`): restart policies no longer apply.
    pub stopped_by_user: bool,
    /// The kernel boot id when this was written; another boot id means the record is stale.
    pub boot_id: String,
    /// Its processes are frozen (`pause`). Read from the cgroup's freezer by
    /// `Runtime::status`, never recorded: the freezer is the truth.
    #[serde(skip)]
    pub paused: bool,
}

impl ContainerStatus {
    /// docker's word for the state: `paused` for a running container whose processes are
    /// frozen, else the state's own word.
    pub fn state_word(&self) -> &'static str {
        if self.paused && self.state == State::Running { "paused" } else { self.state.as_str() }
    }
}

/// This boot's id, to tell records of an earlier boot.
pub fn boot_id() -> String {
    // Read once per process: it cannot change while the process lives, and every status
    // read compares with it.
    static BOOT_ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BOOT_ID
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        })
        .clone()
}
