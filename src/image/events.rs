//! How image work (pulls, pushes, builds) reports progress without knowing who shows it: the
//! engine's progress view implements [`ImageEvents`], tests use a collector or [`NoEvents`].

/// Receives progress of image work.
pub trait ImageEvents: Sync {
    /// `kind` (`Image`, `Layer`, `Build`, `Step`) named `name` is now in `status` (`Pulling`,
    /// `Downloading 12.3MB/40MB`, `Pull complete`, `CACHED`, ...); `done` when finished.
    fn event(&self, kind: &str, name: &str, status: &str, done: bool);
    /// As `event`, for a failure.
    fn failed(&self, kind: &str, name: &str, status: &str);
    /// A line of output meant for the user as it is (a build step's output).
    fn output(&self, _name: &str, _line: &str) {}
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoEvents;

impl ImageEvents for NoEvents {
    fn event(&self, _kind: &str, _name: &str, _status: &str, _done: bool) {}
    fn failed(&self, _kind: &str, _name: &str, _status: &str) {}
}

impl ImageEvents for crate::engine::progress::Progress {
    fn event(&self, kind: &str, name: &str, status: &str, done: bool) {
        crate::engine::progress::Progress::event(self, kind, name, status, done);
    }
    fn failed(&self, kind: &str, name: &str, status: &str) {
        crate::engine::progress::Progress::failed(self, kind, name, status);
    }
    fn output(&self, name: &str, line: &str) {
        self.info(&format!("{name}: {line}"));
    }
}
