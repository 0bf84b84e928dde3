//! Progress of `up`, `down`, `start` and `stop`: a live view on a terminal, plain lines
//! otherwise, JSON lines or nothing, as `--progress` asks.

use std::io::Write;
use std::sync::Mutex;

use console::{Term, style};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live view redrawn in place.
    Tty,
    /// One line per change.
    Plain,
    /// One JSON object per change.
    Json,
    /// Nothing but warnings.
    Quiet,
}

impl ProgressMode {
    /// `auto`: the live view when standard error is a terminal, plain lines otherwise.
    pub fn auto() -> ProgressMode {
        if Term::stderr().is_term() { ProgressMode::Tty } else { ProgressMode::Plain }
    }
}

#[derive(Debug)]
struct Line {
    key: String,
    status: String,
    done: bool,
    failed: bool,
}

/// Collects resource events and shows them.
#[derive(Debug)]
pub struct Progress {
    mode: ProgressMode,
    lines: Mutex<(Vec<Line>, usize)>,
}

impl Progress {
    /// A reporter in `mode`.
    pub fn new(mode: ProgressMode) -> Progress {
        Progress { mode, lines: Mutex::new((Vec::new(), 0)) }
    }

    /// Resource `kind` (`Network`, `Volume`, `Container`) named `name` is now in `status`
    /// (`Creating`, `Created`, `Started`, ...); `done` when it reached its end state.
    pub fn event(&self, kind: &str, name: &str, status: &str, done: bool) {
        self.record(kind, name, status, done, false);
    }

    /// As [`Progress::event`], for a failure.
    pub fn failed(&self, kind: &str, name: &str, status: &str) {
        self.record(kind, name, status, true, true);
    }

    fn record(&self, kind: &str, name: &str, status: &str, done: bool, failed: bool) {
        let key = format!("{kind} {name}");
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        match self.mode {
            ProgressMode::Quiet => {}
            ProgressMode::Plain => line(&format!(" {key}  {status}")),
            ProgressMode::Json => {
                let v = serde_json::json!({"id": key, "status": status, "done": done, "error": failed});
                line(&v.to_string());
            }
            ProgressMode::Tty => {
                let (lines, shown) = &mut *guard;
                match lines.iter_mut().find(|l| l.key == key) {
                    Some(l) => {
                        l.status = status.to_string();
                        l.done = done;
                        l.failed = failed;
                    }
                    None => lines.push(Line { key, status: status.to_string(), done, failed }),
                }
                *shown = redraw(lines, *shown);
            }
        }
    }

    /// A warning, shown in every mode.
    pub fn warn(&self, text: &str) {
        self.message(Some("WARN"), text);
    }

    /// A line of output that belongs to no resource (a hook's output, say); not shown when
    /// quiet.
    pub fn info(&self, text: &str) {
        if self.mode != ProgressMode::Quiet {
            self.message(None, text);
        }
    }

    fn message(&self, prefix: Option<&str>, text: &str) {
        let mut guard = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let text_line = match prefix {
            Some(p) => format!("{} {text}", style(p).yellow()),
            None => text.to_string(),
        };
        match self.mode {
            ProgressMode::Json => {
                let key = if prefix.is_some() { "warning" } else { "text" };
                line(&serde_json::json!({ key: text }).to_string());
            }
            ProgressMode::Tty => {
                let (lines, shown) = &mut *guard;
                let term = Term::stderr();
                let _ = term.clear_last_lines(*shown);
                let _ = writeln!(&term, "{text_line}");
                *shown = redraw(lines, 0);
            }
            _ => line(&console::strip_ansi_codes(&text_line)),
        }
    }
}

/// Writes one line to standard error; a closed stderr (`berth down 2>&1 | head`) must not
/// stop a teardown half-way, so failures are ignored.
fn line(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// Draws the view again over the `shown` lines drawn last; returns how many it drew.
fn redraw(lines: &[Line], shown: usize) -> usize {
    let term = Term::stderr();
    let _ = term.clear_last_lines(shown);
    let done = lines.iter().filter(|l| l.done).count();
    let header = if done == lines.len() { "[+]" } else { "[~]" };
    let _ = writeln!(&term, " {} Running {done}/{}", style(header).bold(), lines.len());
    for l in lines {
        let mark = if l.failed {
            style("✘").red()
        } else if l.done {
            style("✔").green()
        } else {
            style("⠿").blue()
        };
        let _ = writeln!(&term, "  {mark} {:<40} {}", l.key, l.status);
    }
    lines.len() + 1
}
