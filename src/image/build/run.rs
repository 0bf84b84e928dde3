//! One `RUN` step as a container of berth's runtime: the stage's layers as lower dirs under a
//! fresh upper dir, networking from berth's own `Networks` (the build's bridge, the host's, or
//! none), mounts as the step asks. Output is streamed as it comes (the shim writes the
//! container's log; this side follows it). Whatever happens, the container, its network
//! attachment and its dirs are removed when the step is done with them (a guard).

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::image::events::ImageEvents;
use crate::netns::{AttachRequest, EndpointRequest, NetMode, Networks};
use crate::runtime::spec::{ContainerSpec, EtcFiles, MountSpec, NetNamespace};
use crate::runtime::{Runtime, State};
use crate::state::Dirs;

/// Lines of output kept for the error of a failed step.
pub const TAIL_LINES: usize = 20;

/// Where a step's container is networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunNet {
    /// Loopback only.
    None,
    /// The host's network namespace.
    Host,
    /// The build's bridge network (by name).
    Bridge(String),
}

/// What one step runs.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// argv.
    pub args: Vec<String>,
    /// `KEY=value`.
    pub env: Vec<String>,
    /// `user[:group]`.
    pub user: Option<String>,
    /// Working dir (made when missing).
    pub cwd: String,
    /// The stage's layers, bottom first.
    pub lower_dirs: Vec<PathBuf>,
    /// Extra mounts.
    pub mounts: Vec<MountSpec>,
    /// Networking.
    pub net: RunNet,
    /// `--add-host` entries.
    pub extra_hosts: Vec<(String, String)>,
    /// `/dev/shm` size.
    pub shm_size: Option<u64>,
    /// Step name for output lines.
    pub label: String,
    /// `--security=insecure`: all capabilities, no seccomp (as BuildKit's entitlement).
    pub privileged: bool,
    /// The build this step belongs to (its token; see [`BuildOwner`]).
    pub owner: String,
}

/// The label that names the build a step container belongs to.
pub const OWNER_LABEL: &str = "dev.berth.build";

/// Why a build could not claim its token.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// No random token could be had.
    #[error(transparent)]
    Id(#[from] crate::runtime::RuntimeError),
    /// The token's lock file could not be taken.
    #[error(transparent)]
    Lock(#[from] crate::state::StateError),
}

/// One running build's claim on what it makes: a lock file `<run>/builds/<token>.lock` held
/// while it runs. Its step containers carry the token ([`OWNER_LABEL`]) and its network is
/// `berth-build-<token>`, so that what a killed build (SIGKILL) left can be told from what a
/// running one uses, and removed by the next build ([`reap_stale`]).
#[derive(Debug)]
pub struct BuildOwner {
    /// 10 hex digits.
    pub token: String,
    _lock: crate::state::Lock,
}

impl BuildOwner {
    /// Claims a new token.
    pub fn claim(runtime: &Runtime) -> Result<BuildOwner, OwnerError> {
        Self::claim_in(runtime.dirs())
    }

    /// Claims a new token in the run dir of `dirs`.
    pub(crate) fn claim_in(dirs: &Dirs) -> Result<BuildOwner, OwnerError> {
        let token = crate::runtime::new_id()?[..10].to_string();
        let path = owners_dir(dirs).join(format!("{token}.lock"));
        let lock = crate::state::Lock::acquire(&path)?;
        Ok(BuildOwner { token, _lock: lock })
    }

    /// The build's network name.
    pub fn network(&self) -> String {
        format!("berth-build-{}", self.token)
    }
}

impl Drop for BuildOwner {
    fn drop(&mut self) {
        // Every step has removed its note by now; the folder goes before the lock, so that a
        // reader never finds notes of a build whose lock is gone.
        if let Some(dir) = self._lock.path().parent() {
            let _ = fs::remove_dir_all(dir.join(&self.token));
        }
        // Removed while still held: nobody can take a lock on it after this.
        let _ = fs::remove_file(self._lock.path());
    }
}

fn owners_dir(dirs: &Dirs) -> PathBuf {
    dirs.run.join("builds")
}

/// Where build `token` notes the step containers it is making.
fn notes_dir(dirs: &Dirs, token: &str) -> PathBuf {
    owners_dir(dirs).join(token)
}

/// A build's note of a step container it is making (`<run>/builds/<token>/<id>`), written
/// before the step is attached to its network and removed only after it is detached, as the
/// executor notes a service container in `pending/`: between the attach and the container's
/// records (and while its spec is written but its record not yet), a reconcile of any
/// project in this root would otherwise take the attachment (or the container) for a
/// leftover. Reconcile honours the notes of builds whose owner lock is held
/// ([`steps_being_made`]).
#[derive(Debug)]
pub(crate) struct StepNote(PathBuf);

impl StepNote {
    /// Notes step container `id` of build `token`.
    pub(crate) fn write(dirs: &Dirs, token: &str, id: &str) -> std::io::Result<StepNote> {
        let dir = notes_dir(dirs, token);
        fs::create_dir_all(&dir)?;
        let path = dir.join(id);
        // Its existence is the note; the run dir does not outlive a reboot, so no fsync.
        fs::File::create(&path)?;
        Ok(StepNote(path))
    }
}

impl Drop for StepNote {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// A build token, if `name` is a lock file of one (`<10 hex>.lock`).
fn lock_token(name: &str) -> Option<&str> {
    name.strip_suffix(".lock").filter(|t| t.len() == 10 && t.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Whether the owner lock at `path` is held by a running build. It is only probed: a missing
/// file (the build ended) is not made again, and a free lock is let go at once.
fn lock_held(path: &Path) -> bool {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg};
    let Ok(mut file) = fs::File::open(path) else { return false };
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // Taken, so free; let go as the guard drops.
            Ok(_free) => return false,
            Err((_, Errno::EWOULDBLOCK)) => return true,
            Err((f, Errno::EINTR)) => file = f,
            // Cannot tell: the build's own teardown (or the next build's) still takes it.
            Err(_) => return true,
        }
    }
}

/// Ids of the step containers that running builds (their owner lock held) note as being
/// made in the run dir of `dirs`: their attachments, and their containers while records are
/// being written, are not leftovers.
pub fn steps_being_made(dirs: &Dirs) -> Vec<String> {
    let Ok(entries) = fs::read_dir(owners_dir(dirs)) else { return Vec::new() };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(token) = name.to_str().and_then(lock_token) else { continue };
        // Notes first, then the lock: a note read from a build that has ended since belongs
        // to a step that detached itself, so honouring it leaves nothing behind.
        let noted = step_notes(dirs, token);
        if !noted.is_empty() && lock_held(&entry.path()) {
            out.extend(noted);
        }
    }
    out.sort();
    out
}

/// The step containers build `token` notes.
fn step_notes(dirs: &Dirs, token: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(notes_dir(dirs, token)) else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Removes what builds that are no longer running left (their process was killed): step
/// containers, their network attachments, the build network, the lock file. Builds that run
/// hold their lock and are left alone.
pub fn reap_stale(runtime: &Runtime, networks: &Networks) {
    let dirs = runtime.dirs();
    let Ok(entries) = fs::read_dir(owners_dir(dirs)) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(token) = path.file_name().and_then(|n| n.to_str()).and_then(lock_token).map(str::to_string)
        else {
            continue;
        };
        let Ok(Some(_held)) = crate::state::Lock::try_acquire(&path) else { continue };
        // Steps killed between their attach and their records have only the note and the
        // attachment.
        for id in step_notes(dirs, &token) {
            let _ = networks.detach(&id);
        }
        for id in runtime.list().unwrap_or_default() {
            let Ok(spec) = runtime.spec(&id) else { continue };
            if spec.labels.get(OWNER_LABEL) != Some(&token) {
                continue;
            }
            let _ = runtime.remove(&id, true);
            let _ = fs::remove_dir_all(dirs.container_run(&id));
            let _ = fs::remove_dir_all(dirs.container(&id));
            let _ = networks.detach(&id);
        }
        let _ = networks.remove(&format!("berth-build-{token}"));
        let _ = fs::remove_dir_all(notes_dir(dirs, &token));
        let _ = fs::remove_file(&path);
    }
}

/// How a step ended when it did not succeed.
#[derive(Debug)]
pub enum RunFailure {
    /// The command exited non-zero (or by a signal: 128+n).
    Exit {
        /// The code.
        code: i32,
        /// The last lines of output.
        tail: Vec<String>,
    },
    /// The container could not be made, run or committed.
    Setup(StepError),
    /// The build was cancelled.
    Cancelled,
}

/// Why a step's container could not be made, run or committed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The runtime failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    /// The build's note of the container could not be written.
    #[error("note of step container: {0}")]
    Note(#[source] std::io::Error),
    /// The container could not be attached to its network.
    #[error("network: {0}")]
    Network(#[source] crate::netns::NetError),
    /// The container died before its command ran (the runtime's record of why).
    #[error("{0}")]
    Died(String),
    /// What was to be done with the container's upper dir failed.
    #[error(transparent)]
    Done(Box<dyn std::error::Error + Send + Sync>),
}

/// Removes the step's container, network attachment and dirs when dropped.
struct ContainerGuard<'a> {
    runtime: &'a Runtime,
    networks: &'a Networks,
    id: String,
    attached: bool,
    /// Dropped after the body of `drop`, so the note outlives the attachment.
    _note: StepNote,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let _ = self.runtime.remove(&self.id, true);
        // Removal of a container that never got records leaves its dirs: take them too.
        let dirs = self.runtime.dirs();
        let _ = fs::remove_dir_all(dirs.container_run(&self.id));
        let _ = fs::remove_dir_all(dirs.container(&self.id));
        if self.attached {
            let _ = self.networks.detach(&self.id);
        }
    }
}

/// Paths the runtime makes in the rootfs as mount points: when the image lacks them, they are
/// not the step's work and stay out of its layer (as BuildKit's mount stub cleaner does).
fn stub_targets(step: &RunStep) -> Vec<String> {
    let mut v: Vec<String> = ["/proc", "/sys", "/dev", "/etc/hosts", "/etc/resolv.conf", "/etc/hostname"]
        .map(String::from)
        .to_vec();
    v.extend(step.mounts.iter().map(|m| m.target.clone()));
    v
}

/// Whether `rel` exists in any of `lowers` (not as a whiteout).
fn in_lowers(lowers: &[PathBuf], rel: &Path) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for l in lowers.iter().rev() {
        if let Ok(m) = fs::symlink_metadata(l.join(rel)) {
            return !(m.file_type().is_char_device() && m.rdev() == 0);
        }
    }
    false
}

/// Removes mount stubs from `upper`: each target the lowers lack, if still an empty file or
/// dir, and then its parents that only exist for it.
pub fn remove_stubs(upper: &Path, lowers: &[PathBuf], targets: &[String]) {
    for t in targets {
        let rel = PathBuf::from(t.trim_start_matches('/'));
        let mut cur = Some(rel.as_path());
        while let Some(r) = cur {
            if r.as_os_str().is_empty() || in_lowers(lowers, r) {
                break;
            }
            let p = upper.join(r);
            let Ok(m) = fs::symlink_metadata(&p) else { break };
            let removed = if m.is_dir() {
                fs::remove_dir(&p).is_ok()
            } else if m.is_file() && m.len() == 0 {
                fs::remove_file(&p).is_ok()
            } else {
                false
            };
            if !removed {
                break;
            }
            cur = r.parent();
        }
    }
}

/// Runs `step` to its end and, when it exits 0, gives its upper dir to `done` (stubs removed)
/// before the container goes.
#[allow(clippy::too_many_arguments)]
pub fn run_step<T>(
    runtime: &Runtime,
    networks: &Networks,
    step: &RunStep,
    events: &dyn ImageEvents,
    cancel: Option<&AtomicBool>,
    done: impl FnOnce(&Path) -> Result<T, Box<dyn std::error::Error + Send + Sync>>,
) -> Result<T, RunFailure> {
    let id = crate::runtime::new_id().map_err(|e| RunFailure::Setup(e.into()))?;
    let name = format!("berth-build-{}", &id[..12]);
    let note = StepNote::write(runtime.dirs(), &step.owner, &id)
        .map_err(|e| RunFailure::Setup(StepError::Note(e)))?;
    let mut guard = ContainerGuard { runtime, networks, id: id.clone(), attached: false, _note: note };
    let mode = match &step.net {
        RunNet::None => NetMode::None,
        RunNet::Host => NetMode::Host,
        RunNet::Bridge(n) => {
            NetMode::Bridge(vec![EndpointRequest { network: n.clone(), ..Default::default() }])
        }
    };
    let req = AttachRequest {
        container_id: id.clone(),
        container_name: name.clone(),
        hostname: "buildkitsandbox".into(),
        mode,
        ports: Vec::new(),
        extra_hosts: step.extra_hosts.clone(),
        dns: Vec::new(),
        dns_search: Vec::new(),
        dns_opt: Vec::new(),
        sysctls: Default::default(),
    };
    guard.attached = true;
    let att = networks.attach(&req).map_err(|e| RunFailure::Setup(StepError::Network(e)))?;
    let mut spec = ContainerSpec {
        id: id.clone(),
        name,
        hostname: "buildkitsandbox".into(),
        ..ContainerSpec::default()
    };
    spec.rootfs.lower_dirs = step.lower_dirs.clone();
    spec.process.args = step.args.clone();
    spec.process.env = step.env.clone();
    spec.process.user = step.user.clone().filter(|u| !u.is_empty());
    spec.process.cwd = step.cwd.clone();
    spec.mounts = step.mounts.clone();
    spec.shm_size = step.shm_size;
    spec.security.privileged = step.privileged;
    spec.stop_grace_ms = Some(1000);
    spec.namespaces.net = match att.netns_path {
        Some(p) => NetNamespace::Path(p),
        None => NetNamespace::Host,
    };
    spec.namespaces.uts_host = step.net == RunNet::Host;
    spec.labels.insert(OWNER_LABEL.to_string(), step.owner.clone());
    spec.etc_files = EtcFiles {
        hosts: Some(att.hosts_file),
        resolv_conf: Some(att.resolv_conf),
        hostname: Some(att.hostname_file),
    };
    runtime.run(&spec).map_err(|e| RunFailure::Setup(e.into()))?;
    let log_path = runtime.dirs().container(&id).join("log");
    let mut follower = LogFollower { path: log_path, offset: 0, tail: VecDeque::new() };
    let status = loop {
        let st =
            runtime.wait(&id, Duration::from_millis(200)).map_err(|e| RunFailure::Setup(e.into()))?;
        follower.read(events, &step.label);
        if matches!(st.state, State::Exited | State::Dead) {
            break st;
        }
        if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
            let _ = runtime.kill(&id, None);
            return Err(RunFailure::Cancelled);
        }
    };
    follower.read(events, &step.label);
    if let Some(err) = status.error.filter(|_| status.exit_code.is_none()) {
        return Err(RunFailure::Setup(StepError::Died(err)));
    }
    let code = status.exit_code.unwrap_or(255);
    if code != 0 {
        return Err(RunFailure::Exit { code, tail: follower.tail.into_iter().collect() });
    }
    let upper = runtime.dirs().container(&id).join("upper");
    remove_stubs(&upper, &step.lower_dirs, &stub_targets(step));
    let out = done(&upper).map_err(|e| RunFailure::Setup(StepError::Done(e)))?;
    drop(guard);
    Ok(out)
}

/// Follows a container's log file from where it last read.
struct LogFollower {
    path: PathBuf,
    offset: u64,
    tail: VecDeque<String>,
}

impl LogFollower {
    fn read(&mut self, events: &dyn ImageEvents, label: &str) {
        let Ok(mut f) = fs::File::open(&self.path) else { return };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(f);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                // A line still being written: read it whole next time.
                Ok(_) if !line.ends_with('\n') => break,
                Ok(n) => {
                    self.offset += n as u64;
                    if let Ok(entry) = serde_json::from_str::<crate::runtime::log::LogEntry>(&line) {
                        let text = entry.log.trim_end_matches('\n').to_string();
                        events.output(label, &text);
                        if self.tail.len() == TAIL_LINES {
                            self.tail.pop_front();
                        }
                        self.tail.push_back(text);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_go_unless_the_image_had_them_or_the_step_wrote_there() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let (upper, lower) = (dir.path().join("u"), dir.path().join("l"));
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::create_dir_all(upper.join("proc")).unwrap();
        fs::create_dir_all(upper.join("run/secrets")).unwrap();
        fs::create_dir_all(upper.join("cache")).unwrap();
        fs::write(upper.join("cache/kept"), b"x").unwrap();
        fs::write(upper.join("etc/hosts"), b"").unwrap();
        remove_stubs(
            &upper,
            std::slice::from_ref(&lower),
            &[
                "/proc".into(),
                "/etc/hosts".into(),
                "/run/secrets/x".into(),
                "/run/secrets".into(),
                "/cache".into(),
            ],
        );
        assert!(!upper.join("proc").exists() && !upper.join("etc/hosts").exists());
        assert!(!upper.join("run").exists());
        assert!(upper.join("etc").exists(), "a dir of the image stays (copied up)");
        assert!(upper.join("cache/kept").exists());
    }
}
