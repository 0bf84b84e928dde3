//! The container log: one JSON object per line, as docker's json-file driver writes it
//! (`{"log":"line\n","stream":"stdout","time":"..."}`), rotated by `max-size` / `max-file`.
//! Rotated files are `log.1` (newest) to `log.N`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::spec::LogSpec;

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The text, with its newline when it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// Writes a container's log, splitting output into lines per stream.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    spec: LogSpec,
    file: File,
    size: u64,
    partial: [Vec<u8>; 2],
}

/// Longest line kept whole; longer output is split, as docker splits at 16 KiB.
const MAX_LINE: usize = 16 * 1024;

impl LogWriter {
    /// Opens (appending) the log at `path`.
    pub fn open(path: &Path, spec: LogSpec) -> io::Result<LogWriter> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogWriter { path: path.to_path_buf(), spec, file, size, partial: [Vec::new(), Vec::new()] })
    }

    /// Adds output of stream 0 (stdout) or 1 (stderr); complete lines are written at once.
    pub fn write(&mut self, stream: usize, bytes: &[u8]) -> io::Result<()> {
        self.partial[stream].extend_from_slice(bytes);
        loop {
            let buf = &self.partial[stream];
            let cut = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if buf.len() >= MAX_LINE => MAX_LINE,
                None => return Ok(()),
            };
            let line: Vec<u8> = self.partial[stream].drain(..cut).collect();
            self.write_line(stream, &line)?;
        }
    }

    /// Writes what is left of unfinished lines (at exit).
    pub fn flush_partial(&mut self) -> io::Result<()> {
        for stream in 0..2 {
            if !self.partial[stream].is_empty() {
                let line = std::mem::take(&mut self.partial[stream]);
                self.write_line(stream, &line)?;
            }
        }
        Ok(())
    }

    fn write_line(&mut self, stream: usize, line: &[u8]) -> io::Result<()> {
        let entry = LogEntry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: if stream == 0 { "stdout" } else { "stderr" }.into(),
            time: super::timefmt::now(),
        };
        let mut text = serde_json::to_vec(&entry).map_err(io::Error::other)?;
        text.push(b'\n');
        if let Some(max) = self.spec.max_size
            && self.size > 0
            && self.size + text.len() as u64 > max
        {
            self.rotate()?;
        }
        self.file.write_all(&text)?;
        self.size += text.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.spec.max_file.unwrap_or(1).max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let rotated = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = fs::remove_file(rotated(keep - 1));
        for n in (1..keep - 1).rev() {
            let _ = fs::rename(rotated(n), rotated(n + 1));
        }
        fs::rename(&self.path, rotated(1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// Reads every entry of the log at `path` (rotated files first, oldest first).
pub fn read_all(path: &Path) -> io::Result<Vec<LogEntry>> {
    let mut files = Vec::new();
    for n in (1..1000).rev() {
        let p = PathBuf::from(format!("{}.{n}", path.display()));
        if p.exists() {
            files.push(p);
        }
    }
    files.push(path.to_path_buf());
    let mut entries = Vec::new();
    for f in files {
        let Ok(file) = File::open(&f) else { continue };
        for line in BufReader::new(file).lines() {
            if let Ok(entry) = serde_json::from_str::<LogEntry>(&line?) {
                entries.push(entry);
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_per_stream_and_rotated() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let path = dir.path().join("log");
        let mut w = LogWriter::open(&path, LogSpec { max_size: Some(300), max_file: Some(3) }).unwrap();
        w.write(0, b"one\ntw").unwrap();
        w.write(1, b"err\n").unwrap();
        w.write(0, b"o\n").unwrap();
        let e = read_all(&path).unwrap();
        let got: Vec<(&str, &str)> = e.iter().map(|e| (e.log.as_str(), e.stream.as_str())).collect();
        assert_eq!(got, [("one\n", "stdout"), ("err\n", "stderr"), ("two\n", "stdout")]);
        for i in 0..40 {
            w.write(0, format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(dir.path().join("log.2").exists() && !dir.path().join("log.3").exists());
        let e = read_all(&path).unwrap();
        assert_eq!(e.last().unwrap().log, "line 39\n");
        let n: Vec<usize> =
            e.iter().filter_map(|e| e.log.strip_prefix("line ")?.trim().parse().ok()).collect();
        assert!(n.windows(2).all(|w| w[1] == w[0] + 1), "kept lines stay in order");
    }
}
