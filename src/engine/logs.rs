//! Showing containers' logs as `docker compose logs` and attached `up` do: each line
//! prefixed with the container's name in its service's colour, optionally with its time,
//! following the log files as they grow (and across rotation).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::SystemTime;

use console::{Color, Style};

use crate::runtime::log::{LogEntry, read_all};
use crate::runtime::timefmt::parse_rfc3339;
use crate::state::Dirs;

use super::observe::ProjectContainer;

/// How log lines are printed.
#[derive(Debug, Clone, Default)]
pub struct LogFormat {
    /// Print each line's time.
    pub timestamps: bool,
    /// No colours.
    pub no_color: bool,
    /// No `name | ` prefix.
    pub no_prefix: bool,
}

const COLORS: [Color; 6] =
    [Color::Cyan, Color::Yellow, Color::Green, Color::Magenta, Color::Blue, Color::Red];

/// The prefix name of a container: its name without the `<project>-` part, as docker
/// compose prints it (`<project>_` for a name made in compatibility mode).
pub fn display_name(c: &ProjectContainer) -> String {
    let project = c.labels.get(crate::labels::PROJECT).map(String::as_str).unwrap_or("");
    if let Some(rest) = c.name.strip_prefix(&format!("{project}-")) {
        return rest.to_string();
    }
    if c.name == crate::labels::container_name(project, &c.service, c.number, true) {
        return c.name[project.len() + 1..].to_string();
    }
    c.name.clone()
}

struct Source {
    id: String,
    prefix: String,
    style: Style,
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
}

/// Follows the logs of several containers.
pub struct LogFollower {
    dirs: Dirs,
    format: LogFormat,
    sources: Vec<Source>,
    width: usize,
    services: Vec<String>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
}

impl LogFollower {
    /// A follower printing in `format`.
    pub fn new(dirs: &Dirs, format: LogFormat) -> LogFollower {
        LogFollower {
            dirs: dirs.clone(),
            format,
            sources: Vec::new(),
            width: 0,
            services: Vec::new(),
            since: None,
            until: None,
        }
    }

    /// Shows only lines written at or after `since` and before `until` (`logs --since`,
    /// `--until`).
    pub fn window(mut self, since: Option<SystemTime>, until: Option<SystemTime>) -> LogFollower {
        self.since = since;
        self.until = until;
        self
    }

    /// Whether an entry's time is inside the window.
    fn shown(&self, e: &LogEntry) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(t) = parse_rfc3339(&e.time) else { return true };
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }

    /// Adds several containers and prints what their logs already hold, the lines of all of
    /// them in time order (`tail`: each one's last lines only).
    pub fn add_all(
        &mut self,
        cs: &[ProjectContainer],
        tail: Option<usize>,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        let mut lines: Vec<(usize, LogEntry)> = Vec::new();
        for c in cs {
            if self.has(&c.id) {
                continue;
            }
            let path = self.register(c);
            let entries: Vec<LogEntry> =
                read_all(&path).unwrap_or_default().into_iter().filter(|e| self.shown(e)).collect();
            let skip = tail.map_or(0, |t| entries.len().saturating_sub(t));
            let i = self.sources.len() - 1;
            lines.extend(entries.into_iter().skip(skip).map(|e| (i, e)));
        }
        lines.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        for (i, e) in &lines {
            self.print(&self.sources[*i], e, out)?;
        }
        out.flush()
    }

    /// Starts following container `c` from the end of its log; returns the log's path.
    fn register(&mut self, c: &ProjectContainer) -> PathBuf {
        let color_index = match self.services.iter().position(|s| *s == c.service) {
            Some(i) => i,
            None => {
                self.services.push(c.service.clone());
                self.services.len() - 1
            }
        };
        let prefix = display_name(c);
        self.width = self.width.max(prefix.len());
        let path = self.dirs.container(&c.id).join("log");
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        self.sources.push(Source {
            id: c.id.clone(),
            prefix,
            style: Style::new().fg(COLORS[color_index % COLORS.len()]),
            path: path.clone(),
            offset: size,
            partial: Vec::new(),
        });
        path
    }

    /// Whether container `id` is followed.
    pub fn has(&self, id: &str) -> bool {
        self.sources.iter().any(|s| s.id == id)
    }

    /// Ids of the followed containers.
    pub fn ids(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.id.clone()).collect()
    }

    /// Adds a container; `tail` prints only its last lines first (`None`: all), and
    /// `from_end` starts after what is already written (nothing old is printed).
    pub fn add(
        &mut self,
        c: &ProjectContainer,
        tail: Option<usize>,
        from_end: bool,
        out: &mut dyn Write,
    ) -> io::Result<()> {
        if self.has(&c.id) {
            return Ok(());
        }
        let path = self.register(c);
        if !from_end {
            let entries: Vec<LogEntry> =
                read_all(&path).unwrap_or_default().into_iter().filter(|e| self.shown(e)).collect();
            let skip = tail.map_or(0, |t| entries.len().saturating_sub(t));
            if let Some(source) = self.sources.last() {
                for e in &entries[skip..] {
                    self.print(source, e, out)?;
                }
            }
        }
        Ok(())
    }

    /// Prints what was appended since the last call; whether anything was.
    pub fn poll(&mut self, out: &mut dyn Write) -> io::Result<bool> {
        let mut any = false;
        let mut lines: Vec<(usize, LogEntry)> = Vec::new();
        for (i, s) in self.sources.iter_mut().enumerate() {
            let Ok(mut file) = File::open(&s.path) else { continue };
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            if size < s.offset {
                // Rotated: the file was renamed away and a new one begun.
                s.offset = 0;
                s.partial.clear();
            }
            if size == s.offset {
                continue;
            }
            file.seek(SeekFrom::Start(s.offset))?;
            let mut buf = Vec::new();
            file.take(size - s.offset).read_to_end(&mut buf)?;
            s.offset += buf.len() as u64;
            s.partial.extend_from_slice(&buf);
            while let Some(pos) = s.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = s.partial.drain(..=pos).collect();
                if let Ok(entry) = serde_json::from_slice::<LogEntry>(&line) {
                    lines.push((i, entry));
                }
            }
        }
        // Lines of different containers in time order.
        lines.retain(|(_, e)| self.shown(e));
        lines.sort_by(|a, b| a.1.time.cmp(&b.1.time));
        for (i, entry) in &lines {
            any = true;
            let source = &self.sources[*i];
            self.print(source, entry, out)?;
        }
        out.flush()?;
        Ok(any)
    }

    fn print(&self, s: &Source, e: &LogEntry, out: &mut dyn Write) -> io::Result<()> {
        let text = e.log.strip_suffix('\n').unwrap_or(&e.log);
        let mut line = String::new();
        if !self.format.no_prefix {
            let prefix = format!("{:<width$} | ", s.prefix, width = self.width);
            if self.format.no_color {
                line.push_str(&prefix);
            } else {
                line.push_str(&s.style.apply_to(prefix).to_string());
            }
        }
        if self.format.timestamps {
            line.push_str(&e.time);
            line.push(' ');
        }
        line.push_str(text);
        writeln!(out, "{line}")
    }
}
