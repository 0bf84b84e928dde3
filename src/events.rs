//! Container events (`create`, `start`, `die`, `kill`, `stop`, `destroy`, `pause`, `unpause`,
//! `restart`, `oom`, `health_status: healthy`, ...), as docker's daemon reports them, without a
//! daemon: every berth process acting on a project (the CLI's executor, each container's
//! shim) appends what it did to the project's event log, `<run>/projects/<project>/events.jsonl`,
//! and `berth events` follows that file.
//!
//! Each event is one JSON line written with one `write(2)` on an `O_APPEND` descriptor, so
//! that lines from concurrent writers never interleave. The log is bounded: a writer that
//! finds it past [`MAX_LOG_BYTES`] renames it to `events.jsonl.1` (replacing the previous
//! one) under an exclusive `flock`, so at most twice that is kept. `down` removes the log
//! with the project ([`remove_project`]).
//!
//! The events are recorded as docker's are: an actor id and attributes made of the
//! container's labels, its `name` and `image`, plus the action's own (`exitCode`,
//! `signal`). Readers (`berth events`) drop the compose labels and one-off containers, as
//! docker compose does.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::labels;
use crate::runtime::spec::ContainerSpec;
use crate::runtime::status::{ContainerStatus, HealthState, State};
use crate::state::Dirs;

/// The log's file name in the project's run dir.
pub const LOG_FILE: &str = "events.jsonl";
/// The rotated log's file name.
pub const ROTATED_FILE: &str = "events.jsonl.1";
/// Past this size, the next writer rotates the log.
pub const MAX_LOG_BYTES: u64 = 1 << 20;

/// One event, as the log keeps it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened, in nanoseconds since the epoch.
    pub time: i64,
    /// The kind of object (`container`).
    #[serde(rename = "type")]
    pub kind: String,
    /// What happened (`start`, `die`, `health_status: healthy`, ...).
    pub action: String,
    /// The container's id.
    pub id: String,
    /// The container's labels, `name`, `image`, and the action's own attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Event {
    /// The project the event's container belongs to (its compose label).
    pub fn project(&self) -> Option<&str> {
        self.attributes.get(labels::PROJECT).map(String::as_str)
    }

    /// The service the event's container belongs to (its compose label).
    pub fn service(&self) -> &str {
        self.attributes.get(labels::SERVICE).map_or("", String::as_str)
    }

    /// Whether the container was made by `run` (docker compose does not show those).
    pub fn oneoff(&self) -> bool {
        self.attributes.get(labels::ONEOFF).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The attributes a user sees: all but the compose labels (docker compose drops them).
    pub fn shown_attributes(&self) -> BTreeMap<&str, &str> {
        self.attributes
            .iter()
            .filter(|(k, _)| !k.starts_with(labels::PREFIX))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The time as a `SystemTime`.
    pub fn system_time(&self) -> SystemTime {
        match u64::try_from(self.time) {
            Ok(n) => UNIX_EPOCH + Duration::from_nanos(n),
            Err(_) => UNIX_EPOCH,
        }
    }
}

/// The container an event is about.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The image it runs, as the user named it (or its id).
    pub image: &'a str,
    /// Its labels (the compose labels among them name the project and service).
    pub labels: &'a BTreeMap<String, String>,
}

impl<'a> Actor<'a> {
    /// The container a spec describes.
    pub fn of_spec(spec: &'a ContainerSpec) -> Actor<'a> {
        let image = spec.image.as_ref().or(spec.image_id.as_ref()).map_or("", String::as_str);
        Actor { id: &spec.id, name: &spec.name, image, labels: &spec.labels }
    }

    /// The event `action` of this container now, with the action's own `extra` attributes.
    pub fn event(&self, action: &str, extra: &[(&str, &str)]) -> Event {
        let mut attributes = self.labels.clone();
        attributes.insert("name".into(), self.name.to_string());
        attributes.insert("image".into(), self.image.to_string());
        for (k, v) in extra {
            attributes.insert(k.to_string(), v.to_string());
        }
        Event {
            time: now_nanos(),
            kind: "container".into(),
            action: action.into(),
            id: self.id.into(),
            attributes,
        }
    }
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// `<run>/projects/<project>`: the project's run-time files (its event log).
pub fn project_run_dir(dirs: &Dirs, project: &str) -> PathBuf {
    dirs.run.join("projects").join(project)
}

/// The project's event log.
pub fn log_path(dirs: &Dirs, project: &str) -> PathBuf {
    project_run_dir(dirs, project).join(LOG_FILE)
}

/// Records `action` of `actor` in its project's log, making the log's folder if need be: for
/// commands acting on a project (the executor, `kill`, `pause`, ...). A container without a
/// project label has no log; a failure to write is ignored, as an event must never fail the
/// action it reports.
pub fn emit(dirs: &Dirs, actor: &Actor<'_>, action: &str, extra: &[(&str, &str)]) {
    let _ = record(dirs, &actor.event(action, extra), true);
}

/// Records `action` of `actor` only if its project's log folder exists: for the shims, which
/// may outlive their project's `down` by a moment and must not make its folder again.
pub fn emit_existing(dirs: &Dirs, actor: &Actor<'_>, action: &str, extra: &[(&str, &str)]) {
    let _ = record(dirs, &actor.event(action, extra), false);
}

/// Appends `event` to its project's log (`create`: make the folder when missing).
pub fn record(dirs: &Dirs, event: &Event, create: bool) -> io::Result<()> {
    let Some(project) = event.project() else { return Ok(()) };
    if project.is_empty() || project.contains('/') || project.starts_with('.') {
        return Ok(());
    }
    let dir = project_run_dir(dirs, project);
    if create && !dir.is_dir() {
        crate::state::ensure_dir(&dirs.run.join("projects"), crate::state::mode::PRIVATE)
            .and_then(|()| crate::state::ensure_dir(&dir, crate::state::mode::PRIVATE))
            .map_err(io::Error::other)?;
    }
    append(&dir.join(LOG_FILE), event, MAX_LOG_BYTES)
}

/// Appends `event` as one line with one write, then rotates the log when it has grown past
/// `max` bytes.
pub fn append(path: &Path, event: &Event, max: u64) -> io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut file = OpenOptions::new().read(true).append(true).create(true).mode(0o600).open(path)?;
    // Every line written here ends the file with a newline, so one that does not was cut
    // short (or overwritten); a line appended to it would be glued to the rest and lost with
    // it. It starts on a line of its own. (Another writer's line still being written can
    // look unfinished too: then an empty line results, which readers skip.)
    if !ends_with_newline(&file)? {
        line.insert(0, b'\n');
    }
    // One write(2) of the whole line: O_APPEND makes it land whole at the end.
    let n = file.write(&line)?;
    if n != line.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "event line cut short"));
    }
    if file.metadata()?.len() > max {
        rotate(path, &file)?;
    }
    Ok(())
}

/// Whether `file` is empty or its last byte is a newline.
fn ends_with_newline(file: &File) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    let mut last = [0u8];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] == b'\n')
}

/// Renames the log to its `.1` name, once: under an exclusive lock on it, and only if the path
/// still names the file this writer has (another writer may have rotated it meanwhile).
fn rotate(path: &Path, file: &File) -> io::Result<()> {
    use std::os::fd::AsFd;
    nix::fcntl::Flock::lock(file.as_fd().try_clone_to_owned()?, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io::Error::from(e))
        .and_then(|_lock| {
            let ours = file.metadata()?;
            match fs::metadata(path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {
                    fs::rename(path, path.with_file_name(ROTATED_FILE))
                }
                _ => Ok(()),
            }
        })
}

/// Removes the project's event log and folder (`down`).
pub fn remove_project(dirs: &Dirs, project: &str) {
    if project.is_empty() || project.contains('/') || project.starts_with('.') {
        return;
    }
    let _ = fs::remove_dir_all(project_run_dir(dirs, project));
}

/// Reads the events of a log and follows it as it grows, is rotated, removed and made again.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<BufReader<File>>,
    /// (dev, inode) of the open file.
    ident: Option<(u64, u64)>,
    partial: Vec<u8>,
}

impl Follower {
    /// Follows `path`. `from_start`: the events already in the log are read first, the rotated
    /// file's before them; otherwise only events appended from now on.
    pub fn new(path: &Path, from_start: bool) -> Follower {
        let mut f = Follower { path: path.to_path_buf(), file: None, ident: None, partial: Vec::new() };
        if from_start {
            // The rotated file, read whole now: its events come first.
            f.file = File::open(path.with_file_name(ROTATED_FILE)).ok().map(BufReader::new);
            f.ident = None;
        } else if let Ok(file) = File::open(path) {
            let mut file = file;
            let _ = file.seek(SeekFrom::End(0));
            f.ident = file.metadata().ok().map(|m| (m.dev(), m.ino()));
            f.file = Some(BufReader::new(file));
        }
        if f.file.is_none() {
            f.open_current();
        }
        f
    }

    fn open_current(&mut self) -> bool {
        match File::open(&self.path) {
            Ok(file) => {
                self.ident = file.metadata().ok().map(|m| (m.dev(), m.ino()));
                self.file = Some(BufReader::new(file));
                self.partial.clear();
                true
            }
            Err(_) => false,
        }
    }

    /// The events written since the last call (none when nothing new). Lines that do not parse
    /// are skipped.
    pub fn poll(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        loop {
            self.read_available(&mut out);
            // Is the open file still the log? (rotated, or removed and made again)
            let current = fs::metadata(&self.path).ok().map(|m| (m.dev(), m.ino()));
            if current.is_some() && current != self.ident {
                // The old file is read to its end (above); the new one from its start.
                if self.open_current() {
                    continue;
                }
            }
            return out;
        }
    }

    fn read_available(&mut self, out: &mut Vec<Event>) {
        let Some(reader) = &mut self.file else { return };
        let mut buf = Vec::new();
        let _ = reader.read_to_end(&mut buf);
        self.partial.extend_from_slice(&buf);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            if let Ok(event) = serde_json::from_slice::<Event>(&line[..end]) {
                out.push(event);
            }
        }
    }
}

/// The events a shim reports when its container's status changes from `before` to `after`:
/// `start` (a new start time while running), `oom` then `die` with its `exitCode` (a new end
/// time), and `health_status: healthy|unhealthy` when the verdict changes, in that order.
pub fn status_changes(
    before: &ContainerStatus,
    after: &ContainerStatus,
) -> Vec<(String, Vec<(&'static str, String)>)> {
    let mut out = Vec::new();
    if after.finished_at.is_some() && after.finished_at != before.finished_at {
        if after.oom_killed {
            out.push(("oom".to_string(), Vec::new()));
        }
        out.push(("die".to_string(), vec![("exitCode", after.exit_code.unwrap_or(-1).to_string())]));
    }
    if after.state == State::Running && after.started_at.is_some() && after.started_at != before.started_at {
        out.push(("start".to_string(), Vec::new()));
    }
    let verdict = |s: &ContainerStatus| s.health.as_ref().map(|h| h.status);
    match verdict(after) {
        Some(v @ (HealthState::Healthy | HealthState::Unhealthy)) if verdict(before) != Some(v) => {
            let word = if v == HealthState::Healthy { "healthy" } else { "unhealthy" };
            out.push((format!("health_status: {word}"), Vec::new()));
        }
        _ => {}
    }
    out
}

/// Reads every event of a log file (the unit tests; commands follow the log instead).
#[cfg(test)]
pub fn read_all(path: &Path) -> Vec<Event> {
    let Ok(text) = fs::read(path) else { return Vec::new() };
    text.split(|b| *b == b'\n').filter_map(|l| serde_json::from_slice(l).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(project: &str, service: &str) -> BTreeMap<String, String> {
        [
            (labels::PROJECT.to_string(), project.to_string()),
            (labels::SERVICE.to_string(), service.to_string()),
            ("com.example.team".to_string(), "core".to_string()),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn an_event_carries_labels_name_image_and_its_own_attributes() {
        let l = labels("p", "web");
        let actor = Actor { id: "abc", name: "p-web-1", image: "busybox:latest", labels: &l };
        let e = actor.event("die", &[("exitCode", "3")]);
        assert_eq!(e.kind, "container");
        assert_eq!(e.action, "die");
        assert_eq!(e.project(), Some("p"));
        assert_eq!(e.service(), "web");
        assert!(!e.oneoff());
        let shown: Vec<_> = e.shown_attributes().into_iter().collect();
        assert_eq!(
            shown,
            [
                ("com.example.team", "core"),
                ("exitCode", "3"),
                ("image", "busybox:latest"),
                ("name", "p-web-1")
            ]
        );
        // The line is stable JSON that reads back the same.
        let text = serde_json::to_string(&e).unwrap();
        assert!(text.starts_with(r#"{"time":"#), "{text}");
        assert!(text.contains(r#""type":"container","action":"die","id":"abc""#), "{text}");
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e);
        let spec = ContainerSpec {
            id: "abc".into(),
            name: "p-web-1".into(),
            image_id: Some("sha256:1".into()),
            image: Some("busybox:latest".into()),
            labels: l.clone(),
            ..ContainerSpec::default()
        };
        let a = Actor::of_spec(&spec);
        assert_eq!((a.id, a.name, a.image), ("abc", "p-web-1", "busybox:latest"));
        let no_name = ContainerSpec { image: None, ..spec };
        assert_eq!(Actor::of_spec(&no_name).image, "sha256:1");
    }

    #[test]
    fn status_changes_are_the_events_docker_reports() {
        use crate::runtime::status::Health;
        let created = ContainerStatus::default();
        let running = ContainerStatus {
            state: State::Running,
            started_at: Some("t1".into()),
            ..ContainerStatus::default()
        };
        let names = |b: &ContainerStatus, a: &ContainerStatus| {
            status_changes(b, a)
                .into_iter()
                .map(|(n, attrs)| {
                    let attrs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!(
                        "{n}{}",
                        if attrs.is_empty() { String::new() } else { format!(" {}", attrs.join(",")) }
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&created, &running), ["start"]);
        assert!(names(&running, &running).is_empty());
        let died = ContainerStatus {
            state: State::Restarting,
            finished_at: Some("t2".into()),
            exit_code: Some(137),
            oom_killed: true,
            ..running.clone()
        };
        assert_eq!(names(&running, &died), ["oom", "die exitCode=137"]);
        // A restart by policy: a new start after the die.
        let again = ContainerStatus { state: State::Running, started_at: Some("t3".into()), ..died.clone() };
        assert_eq!(names(&died, &again), ["start"]);
        let health = |h| ContainerStatus {
            health: Some(Health { status: h, failing_streak: 0, log: Vec::new() }),
            ..running.clone()
        };
        assert!(names(&running, &health(HealthState::Starting)).is_empty());
        assert_eq!(
            names(&health(HealthState::Starting), &health(HealthState::Healthy)),
            ["health_status: healthy"]
        );
        assert!(names(&health(HealthState::Healthy), &health(HealthState::Healthy)).is_empty());
        assert_eq!(
            names(&health(HealthState::Healthy), &health(HealthState::Unhealthy)),
            ["health_status: unhealthy"]
        );
    }

    #[test]
    fn the_log_is_written_where_the_project_is_and_removed_with_it() {
        let tmp = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dirs = Dirs::new(tmp.path().join("root"), tmp.path().join("run"));
        let l = labels("p", "web");
        let actor = Actor { id: "abc", name: "p-web-1", image: "busybox", labels: &l };
        // A shim does not make the folder.
        emit_existing(&dirs, &actor, "start", &[]);
        assert!(!project_run_dir(&dirs, "p").exists());
        emit(&dirs, &actor, "create", &[]);
        emit_existing(&dirs, &actor, "start", &[]);
        let got: Vec<String> = read_all(&log_path(&dirs, "p")).into_iter().map(|e| e.action).collect();
        assert_eq!(got, ["create", "start"]);
        // No project label, no log; a strange project name writes nowhere else.
        let none = BTreeMap::new();
        emit(&dirs, &Actor { labels: &none, ..actor }, "create", &[]);
        let odd = labels("../x", "web");
        emit(&dirs, &Actor { labels: &odd, ..actor }, "create", &[]);
        assert_eq!(fs::read_dir(dirs.run.join("projects")).unwrap().count(), 1);
        remove_project(&dirs, "p");
        assert!(!project_run_dir(&dirs, "p").exists());
    }

    #[test]
    fn concurrent_writers_never_interleave_lines_and_rotation_bounds_the_log() {
        let tmp = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = tmp.path().join(LOG_FILE);
        let l = labels("p", "web");
        std::thread::scope(|s| {
            for t in 0..4 {
                let path = &path;
                let l = &l;
                s.spawn(move || {
                    let name = format!("c{t}-{}", "x".repeat(200));
                    let actor = Actor { id: "abc", name: &name, image: "busybox", labels: l };
                    for _ in 0..200 {
                        append(path, &actor.event("start", &[]), 16 * 1024).unwrap();
                    }
                });
            }
        });
        let rotated = path.with_file_name(ROTATED_FILE);
        for p in [&path, &rotated] {
            let text = fs::read_to_string(p).unwrap();
            // Past the limit by at most two lines (each under 1 KiB) per writer: one
            // written before its own check rotates, one into a file another writer has just
            // renamed (it still holds that file open).
            assert!(text.len() as u64 <= 16 * 1024 + 4 * 2 * 1024, "{}", text.len());
            // An empty line is allowed (see `append`: a line still being written by another
            // writer can look unfinished; readers skip it); every other line is one whole event.
            for line in text.lines().filter(|l| !l.is_empty()) {
                serde_json::from_str::<Event>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            }
        }
    }

    #[test]
    fn a_log_cut_short_emptied_or_overwritten_loses_no_later_event() {
        let tmp = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = tmp.path().join(LOG_FILE);
        let l = labels("p", "web");
        let actor = Actor { id: "abc", name: "p-web-1", image: "busybox", labels: &l };
        let garbage: Vec<u8> = (0..300u32).map(|i| (i * 97 % 256) as u8).collect();
        for damage in ["half", "empty", "garbage"] {
            let _ = fs::remove_file(&path);
            append(&path, &actor.event("create", &[]), MAX_LOG_BYTES).unwrap();
            append(&path, &actor.event("start", &[]), MAX_LOG_BYTES).unwrap();
            let whole = fs::read(&path).unwrap();
            match damage {
                "half" => fs::write(&path, &whole[..whole.len() / 2]).unwrap(),
                "empty" => fs::write(&path, b"").unwrap(),
                _ => fs::write(&path, &garbage).unwrap(),
            }
            let mut follower = Follower::new(&path, true);
            let before = follower.poll().len();
            append(&path, &actor.event("die", &[]), MAX_LOG_BYTES).unwrap();
            append(&path, &actor.event("stop", &[]), MAX_LOG_BYTES).unwrap();
            let actions: Vec<String> = read_all(&path).into_iter().map(|e| e.action).collect();
            assert_eq!(actions[actions.len() - 2..], ["die", "stop"], "{damage}: {actions:?}");
            // (A line cut right before its newline is whole once the next one is written.)
            let followed: Vec<String> = follower.poll().into_iter().map(|e| e.action).collect();
            assert!(followed.ends_with(&["die".to_string(), "stop".to_string()]), "{damage}: {followed:?}");
            assert!(before + followed.len() <= 4, "{damage}: {before} read before, then {followed:?}");
        }
    }

    #[test]
    fn the_follower_sees_new_lines_across_rotation_removal_and_recreation() {
        let tmp = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = tmp.path().join(LOG_FILE);
        let l = labels("p", "web");
        let actor = Actor { id: "abc", name: "p-web-1", image: "busybox", labels: &l };
        append(&path, &actor.event("create", &[]), MAX_LOG_BYTES).unwrap();
        // From now on: the create is not seen.
        let mut now = Follower::new(&path, false);
        assert!(now.poll().is_empty());
        // From the start: the create is.
        let mut all = Follower::new(&path, true);
        let actions = |f: &mut Follower| f.poll().into_iter().map(|e| e.action).collect::<Vec<_>>();
        assert_eq!(actions(&mut all), ["create"]);
        append(&path, &actor.event("start", &[]), MAX_LOG_BYTES).unwrap();
        // A half-written line waits for its end.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time\":1,").unwrap();
        assert_eq!(actions(&mut now), ["start"]);
        f.write_all(b"\"type\":\"container\",\"action\":\"kill\",\"id\":\"abc\"}\nnot json\n").unwrap();
        assert_eq!(actions(&mut now), ["kill"]);
        // Rotation (the size limit is 1 byte: every write rotates).
        append(&path, &actor.event("die", &[]), 1).unwrap();
        append(&path, &actor.event("stop", &[]), MAX_LOG_BYTES).unwrap();
        assert_eq!(actions(&mut now), ["die", "stop"]);
        // Removal, then a new log.
        fs::remove_file(&path).unwrap();
        assert!(now.poll().is_empty());
        append(&path, &actor.event("create", &[]), MAX_LOG_BYTES).unwrap();
        assert_eq!(actions(&mut now), ["create"]);
        // With a rotated file, reading from the start reads it first.
        let mut again = Follower::new(&path, true);
        assert_eq!(actions(&mut again), ["create", "start", "kill", "die", "create"]);
        // A log that does not exist yet is followed once it does.
        let later = tmp.path().join("later").join(LOG_FILE);
        let mut waiting = Follower::new(&later, false);
        assert!(waiting.poll().is_empty());
        fs::create_dir(later.parent().unwrap()).unwrap();
        append(&later, &actor.event("create", &[]), MAX_LOG_BYTES).unwrap();
        assert_eq!(actions(&mut waiting), ["create"]);
    }
}
