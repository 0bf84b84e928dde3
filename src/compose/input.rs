//! Reading the files a project is made of (compose files, `.env`, `env_file`, `label_file`),
//! with the limits that keep a wrong path from hanging or exhausting memory: only regular files
//! and pipes are read (a pipe for `-f /dev/stdin` or `<(...)`, which docker compose accepts), and
//! nothing larger than [`MAX_FILE_SIZE`].

use std::fs::{File, FileType};
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::error::LoadError;

/// The largest file the loader reads. Compose and env files are kilobytes; this is far above
/// any real one and far below what would hurt the machine (`-f /dev/zero` and the like).
pub const MAX_FILE_SIZE: u64 = 64 << 20;

/// What is at a path the loader is told to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing (or a dangling symlink).
    Missing,
    /// Something that can be read: a regular file or a pipe.
    Readable,
    /// Something else; the text says what (`a directory`, `a character device`...).
    Other(&'static str),
}

impl Kind {
    /// What is at `path`, following symlinks. A path that cannot be examined for another reason
    /// (permissions) is `Readable`: reading it then reports the real error.
    pub fn of(path: &Path) -> Kind {
        match std::fs::metadata(path) {
            Ok(meta) => match describe(&meta.file_type()) {
                None => Kind::Readable,
                Some(what) => Kind::Other(what),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Kind::Missing,
            Err(_) => Kind::Readable,
        }
    }

    /// Why the path cannot be read, as the end of a sentence that starts with its name
    /// (`not found`, `is a directory, not a file`); `None` when it can be.
    pub fn problem(self) -> Option<String> {
        match self {
            Kind::Missing => Some("not found".into()),
            Kind::Readable => None,
            Kind::Other(what) => Some(format!("is {what}, not a file")),
        }
    }
}

/// `None` for the kinds we read; otherwise what the thing is.
fn describe(t: &FileType) -> Option<&'static str> {
    if t.is_file() || t.is_fifo() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

fn io_error(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::Io { path: path.to_path_buf(), source: std::io::Error::other(message.into()) }
}

/// Reads `path` as UTF-8 text: a regular file or a pipe, at most [`MAX_FILE_SIZE`] bytes.
pub fn read_text(path: &Path) -> Result<String, LoadError> {
    let file = File::open(path).map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    // Checked on the open file, so the answer is about what is read, not what was there before.
    let meta = file.metadata().map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    if let Some(what) = describe(&meta.file_type()) {
        return Err(io_error(path, format!("is {what}, not a file")));
    }
    read_capped(file, path)
}

/// Reads standard input (`-f -`) as UTF-8 text, at most [`MAX_FILE_SIZE`] bytes.
pub fn read_stdin() -> Result<String, LoadError> {
    read_capped(std::io::stdin().lock(), &PathBuf::from("-"))
}

/// Reads all of `reader`, refusing more than [`MAX_FILE_SIZE`] bytes.
pub fn read_capped(reader: impl Read, path: &Path) -> Result<String, LoadError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| LoadError::Io { path: path.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(io_error(path, format!("is larger than {} MiB", MAX_FILE_SIZE >> 20)));
    }
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        io_error(path, format!("is not UTF-8 text (invalid byte at offset {at})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        let dir = tempfile::Builder::new().prefix("berth-input-").tempdir().expect("temp dir");
        let file = dir.path().join("f");
        std::fs::write(&file, "a").expect("write");
        assert_eq!(Kind::of(&file), Kind::Readable);
        assert_eq!(Kind::of(&dir.path().join("nope")), Kind::Missing);
        assert_eq!(Kind::of(dir.path()).problem().as_deref(), Some("is a directory, not a file"));
        assert_eq!(Kind::of(Path::new("/dev/null")), Kind::Other("a character device"));
        let fifo = dir.path().join("p");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        assert_eq!(Kind::of(&fifo), Kind::Readable);
    }

    #[test]
    fn devices_and_folders_are_refused_by_name() {
        let e = read_text(Path::new("/dev/zero")).unwrap_err().to_string();
        assert_eq!(e, "/dev/zero: is a character device, not a file");
        let dir = tempfile::Builder::new().prefix("berth-input-").tempdir().expect("temp dir");
        let e = read_text(dir.path()).unwrap_err().to_string();
        assert!(e.ends_with(": is a directory, not a file"), "{e}");
    }

    #[test]
    fn size_is_capped_and_text_must_be_utf8() {
        let big = std::io::repeat(b'a').take(MAX_FILE_SIZE + 10);
        let e = read_capped(big, Path::new("big.yaml")).unwrap_err().to_string();
        assert_eq!(e, "big.yaml: is larger than 64 MiB");
        let exact = std::io::repeat(b'a').take(1000);
        assert_eq!(read_capped(exact, Path::new("x")).expect("reads").len(), 1000);
        let e = read_capped(&b"ab\xffc"[..], Path::new("bin")).unwrap_err().to_string();
        assert_eq!(e, "bin: is not UTF-8 text (invalid byte at offset 2)");
    }

    #[test]
    fn a_pipe_is_read() {
        let dir = tempfile::Builder::new().prefix("berth-input-").tempdir().expect("temp dir");
        let fifo = dir.path().join("p");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        let writer = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::write(fifo, "services: {}\n"))
        };
        assert_eq!(read_text(&fifo).expect("reads"), "services: {}\n");
        writer.join().expect("joins").expect("writes");
    }
}
