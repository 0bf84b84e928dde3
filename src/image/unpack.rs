//! Layer unpacking: a layer tar (plain, gzip or zstd) becomes a dir usable as an overlayfs
//! lower layer. Modes, owners, times, hard links, symlinks, device nodes and xattrs are kept;
//! `.wh.NAME` becomes a 0:0 character device (overlayfs's whiteout) and `.wh..wh..opq` the
//! opaque xattr on its dir. Entries that would land outside the layer are refused.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use sha2::{Digest, Sha256};

use super::integrity::Shape;

/// A layer that cannot be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry's path leaves the layer (`..`), or goes through a symlink.
    #[error("entry {entry:?} escapes the layer: {why}")]
    Escape {
        /// The entry's path as the archive gives it.
        entry: String,
        /// How.
        why: String,
    },
    /// Reading or writing failed.
    #[error("entry {entry:?}: {source}")]
    Io {
        /// The entry.
        entry: String,
        /// The error.
        source: io::Error,
    },
    /// The tar stream itself is broken.
    #[error("not a valid tar stream: {0}")]
    Tar(io::Error),
}

/// How a blob is compressed, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// The OCI media type of a layer so compressed.
    pub fn layer_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Looks at the first bytes of `reader` without consuming them.
pub fn detect(reader: &mut impl BufRead) -> io::Result<Compression> {
    let head = reader.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// `reader` decompressed as its magic bytes say.
pub fn decompressed<'a, R: Read + 'a>(reader: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    // Big reads of the compressed stream: fewer decoder calls per byte.
    decompressed_buffered(BufReader::with_capacity(128 * 1024, reader))
}

/// [`decompressed`] of a reader that buffers already (a [`ChunkReader`]): the decoder reads
/// its buffer in place, without a copy into another one.
pub fn decompressed_buffered<'a, R: BufRead + 'a>(mut reader: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let kind = detect(&mut reader)?;
    let out: Box<dyn Read> = match kind {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
    };
    Ok((kind, out))
}

/// How many bytes of a stream [`check_archive_head`] wants to see.
pub const HEAD_LEN: usize = 64 * 1024;

/// Why the start of a stream shows it cannot be a tar archive (plain, gzip or zstd).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a tar archive (plain, gzip or zstd): {0}")]
pub struct NotAnArchive(pub String);

/// Checks that the first 512-byte block of a tar stream is a tar header: ustar (POSIX or GNU)
/// magic and a matching checksum. An all-zero block is an end-of-archive marker: an archive
/// that starts with it holds nothing.
pub fn check_tar_header(block: &[u8]) -> Result<(), NotAnArchive> {
    let bad = |why: &str| Err(NotAnArchive(why.to_string()));
    if block.is_empty() {
        return bad("it is empty");
    }
    if block.len() < 512 {
        return bad("it is shorter than one tar block");
    }
    let block = &block[..512];
    if block.iter().all(|b| *b == 0) {
        return bad("it starts with an end-of-archive block (an empty archive, or zeros)");
    }
    let magic = &block[257..263];
    if magic != b"ustar\0" && magic != b"ustar " {
        return bad("its first block has no tar (ustar) magic");
    }
    let field = &block[148..156];
    let digits: Vec<u8> =
        field.iter().copied().skip_while(|b| *b == b' ').take_while(|b| (b'0'..=b'7').contains(b)).collect();
    let stored = std::str::from_utf8(&digits).ok().and_then(|d| u32::from_str_radix(d, 8).ok());
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| if (148..156).contains(&i) { u32::from(b' ') } else { u32::from(*b) })
        .sum();
    if stored != Some(sum) {
        return bad("its first block's tar header checksum does not match");
    }
    Ok(())
}

/// Checks the start of a stream that should be a tar archive, plain or gzip or zstd
/// compressed: `head` is its first [`HEAD_LEN`] bytes (fewer when `complete`: the whole
/// stream). Refuses early what cannot be one (`/dev/zero`, text, another compression), so that
/// no one waits for an endless stream to end.
pub fn check_archive_head(head: &[u8], complete: bool) -> Result<Compression, NotAnArchive> {
    if head.starts_with(b"BZh") {
        return Err(NotAnArchive("it is bzip2-compressed; decompress it first".into()));
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(NotAnArchive("it is xz-compressed; decompress it first".into()));
    }
    let (kind, mut plain) =
        decompressed(head).map_err(|e| NotAnArchive(format!("its compressed data is broken: {e}")))?;
    let mut block = Vec::with_capacity(512);
    let read = (&mut plain).take(512).read_to_end(&mut block);
    match read {
        Ok(_) if block.len() == 512 => {}
        // A compressed head may end mid-stream: only a complete stream is judged by its end.
        Ok(_) | Err(_) if kind != Compression::None && !complete => return Ok(kind),
        Ok(_) => {}
        Err(e) => return Err(NotAnArchive(format!("its compressed data is broken: {e}"))),
    }
    check_tar_header(&block)?;
    Ok(kind)
}

/// Reads up to [`HEAD_LEN`] bytes of `reader`: (the bytes, whether that is the whole stream).
pub fn read_head(reader: &mut dyn Read) -> io::Result<(Vec<u8>, bool)> {
    let mut head = Vec::with_capacity(HEAD_LEN);
    (&mut *reader).take(HEAD_LEN as u64).read_to_end(&mut head)?;
    let complete = head.len() < HEAD_LEN;
    Ok((head, complete))
}

/// A reader that hashes what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new() }
    }

    /// Reads what is left and returns `sha256:<hex>` of everything read.
    pub fn finish(mut self) -> io::Result<String> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(format!("sha256:{}", hex::encode(self.hasher.finalize())))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The relative path of an entry, refused when it climbs out with `..`.
fn clean_relative(entry: &str, path: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(UnpackError::Escape { entry: entry.to_string(), why: "it contains '..'".into() });
            }
        }
    }
    Ok(out)
}

/// The dir that entries are being written into, held open (`O_PATH`) so that each entry's
/// system calls resolve one component below it (through `/proc/self/fd/N/NAME`), not the whole
/// path from the layer's root again: a path of k components costs O(k) once, not O(k) per
/// call per entry, and entries of one dir cost O(1) each. Every step down is opened with
/// `O_NOFOLLOW`, so no symlink of the layer (or a concurrent swap) can lead out of it.
struct DirCursor {
    root: Arc<OwnedFd>,
    /// The dir's path relative to the root, and the open dir (None: the root). Shared, so
    /// that file writers of other threads keep the dir they were given while this moves on.
    rel: PathBuf,
    fd: Option<Arc<OwnedFd>>,
    /// Whether `/proc/self/fd` can be used; without it, plain paths from `dest`.
    proc_fd: bool,
    dest: PathBuf,
    /// Whether the current dir (and the root) has the set-group-id bit: inodes made in it
    /// take its group, so their owner must be set even when it is the process's own.
    setgid: bool,
    root_setgid: bool,
}

impl DirCursor {
    fn open_dir(at: std::os::fd::BorrowedFd<'_>, name: &Path) -> nix::Result<std::os::fd::OwnedFd> {
        use nix::fcntl::OFlag;
        nix::fcntl::openat(
            at,
            name,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
    }

    fn new(dest: &Path) -> io::Result<DirCursor> {
        let root = Arc::new(Self::open_dir(nix::fcntl::AT_FDCWD, dest)?);
        let root_setgid = Self::is_setgid(std::os::fd::AsFd::as_fd(&*root));
        Ok(DirCursor {
            root,
            rel: PathBuf::new(),
            fd: None,
            proc_fd: Path::new("/proc/self/fd").is_dir(),
            dest: dest.to_path_buf(),
            setgid: root_setgid,
            root_setgid,
        })
    }

    /// Whether the dir has the set-group-id bit (true when it cannot be told: owners are then
    /// always set).
    fn is_setgid(fd: std::os::fd::BorrowedFd<'_>) -> bool {
        nix::sys::stat::fstat(fd).map_or(true, |st| st.st_mode & libc::S_ISGID != 0)
    }

    /// Back at the root.
    fn reset(&mut self) {
        self.rel = PathBuf::new();
        self.fd = None;
        self.setgid = self.root_setgid;
    }

    fn current(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fd.as_ref().map_or(self.root.as_fd(), |f| f.as_fd())
    }

    /// Moves to the dir `rel` (relative to the root), making missing dirs (0755) when `create`.
    fn enter(&mut self, entry: &str, rel: &Path, create: bool) -> Result<(), UnpackError> {
        if self.rel == rel {
            return Ok(());
        }
        let rest = match rel.strip_prefix(&self.rel) {
            Ok(rest) => rest.to_path_buf(),
            Err(_) => {
                self.reset();
                rel.to_path_buf()
            }
        };
        for c in rest.components() {
            let name = Path::new(c.as_os_str());
            let at = self.current();
            let opened = match Self::open_dir(at, name) {
                Err(nix::errno::Errno::ENOENT) if create => {
                    match nix::sys::stat::mkdirat(at, name, nix::sys::stat::Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                        Err(e) => return Err(io_err(entry)(e.into())),
                    }
                    Self::open_dir(at, name)
                }
                other => other,
            };
            let fd = match opened {
                Ok(fd) => fd,
                Err(e @ (nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR)) => {
                    let link = nix::sys::stat::fstatat(at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
                    let prefix = self.rel.join(name);
                    self.reset();
                    if link {
                        return Err(UnpackError::Escape {
                            entry: entry.to_string(),
                            why: format!("its parent {} is a symlink", prefix.display()),
                        });
                    }
                    return Err(io_err(entry)(e.into()));
                }
                Err(e) => {
                    self.reset();
                    return Err(io_err(entry)(e.into()));
                }
            };
            self.rel.push(name);
            self.fd = Some(Arc::new(fd));
        }
        self.setgid = Self::is_setgid(self.current());
        Ok(())
    }

    /// The current dir, to be kept by another thread.
    fn shared(&self) -> Arc<OwnedFd> {
        self.fd.as_ref().unwrap_or(&self.root).clone()
    }

    /// A path to the current dir that resolves in O(1).
    fn dir_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        if self.proc_fd {
            PathBuf::from(format!("/proc/self/fd/{}", self.current().as_raw_fd()))
        } else {
            self.dest.join(&self.rel)
        }
    }

    /// Sets an xattr on the current dir itself (an `O_PATH` fd, or the magic link to it, takes
    /// none: the dir is opened for it).
    fn set_dir_xattr(&self, key: &str, value: &[u8]) -> io::Result<()> {
        use nix::fcntl::OFlag;
        let fd = nix::fcntl::openat(
            self.current(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        xattr::FileExt::set_xattr(&fs::File::from(fd), key, value)
    }

    /// A path to `name` in the current dir.
    fn path(&self, name: &std::ffi::OsStr) -> PathBuf {
        self.dir_path().join(name)
    }

    /// Forgets the open dir when `rel` (being replaced or whited out) is it or above it.
    fn invalidate(&mut self, rel: &Path) {
        if self.rel.starts_with(rel) {
            self.reset();
        }
    }
}

fn io_err(entry: &str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { entry: entry.to_string(), source }
}

/// The `trusted.overlay.*` xattrs that `entry`'s PAX headers set.
fn overlay_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<String>> {
    let Some(extensions) = entry.pax_extensions()? else { return Ok(Vec::new()) };
    let mut keys = Vec::new();
    for extension in extensions {
        let extension = extension?;
        if let Ok(key) = extension.key()
            && let Some(xattr) = key.strip_prefix("SCHILY.xattr.")
            && xattr.starts_with("trusted.overlay.")
        {
            keys.push(xattr.to_string());
        }
    }
    Ok(keys)
}

/// Regular files up to this size are written by [`FileWriters`]; bigger ones in line, so
/// that the queue holds at most `QUEUE` batches of about `BATCH_BYTES` (plus one file) each.
const PARALLEL_MAX: u64 = 1 << 20;
/// Batches read ahead of the writers.
const QUEUE: usize = 8;
/// A batch is sent once it holds this many files or bytes: one channel message and one
/// progress update per batch, not per file (per-file wake-ups cost more than small files).
const BATCH_FILES: usize = 32;
const BATCH_BYTES: usize = 1 << 20;

/// What a new inode gets without asking: the owner of the unpacking process and the mode
/// less its umask. An entry's `fchown`/`fchmod` is made only when it would change something.
#[derive(Clone, Copy)]
struct Defaults {
    uid: u32,
    gid: u32,
    /// The process's umask; all bits when it cannot be read, so that every mode is set.
    umask: u32,
}

impl Defaults {
    fn of_process() -> Defaults {
        // /proc/self/status tells the umask without changing it (umask(2) would, for every
        // thread of the process, for a moment).
        let umask = fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o7777);
        Defaults { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw(), umask }
    }

    /// Whether an inode created in a dir (`setgid`: the dir has the set-group-id bit, so its
    /// new inodes take its group) needs a chown to get `uid:gid`.
    fn needs_chown(&self, uid: u64, gid: u64, setgid_dir: bool) -> bool {
        setgid_dir || uid != u64::from(self.uid) || gid != u64::from(self.gid)
    }

    /// Whether an inode created with `mode & 0o777` (less the umask) needs a chmod to get
    /// `mode`: set-id and sticky bits are set only by chmod (after the chown, which clears them).
    fn needs_chmod(&self, mode: u32) -> bool {
        mode & 0o7000 != 0 || mode & 0o777 & self.umask != 0
    }
}

/// A regular file to create: its dir, name, content (a range of its batch's buffer) and
/// metadata from the tar header.
struct FileJob {
    dir: Arc<OwnedFd>,
    name: OsString,
    entry: String,
    data: std::ops::Range<usize>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    chown: bool,
    chmod: bool,
}

/// Creates a file as the tar crate's unpack does (a new inode, never written through an
/// existing one; owner, then mode, so set-id bits stay; mtime 0 read as 1), relative to the
/// job's open dir (`O_NOFOLLOW`: the name itself cannot be a symlink leading out). The owner
/// and mode are set only when the new inode does not have them already.
fn write_file(j: &FileJob, data: &[u8]) -> io::Result<()> {
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::Mode;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(j.mode & 0o777);
    let fd = match openat(&*j.dir, j.name.as_os_str(), flags, mode) {
        Err(nix::errno::Errno::EEXIST) => {
            nix::unistd::unlinkat(&*j.dir, j.name.as_os_str(), nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            openat(&*j.dir, j.name.as_os_str(), flags, mode)?
        }
        other => other?,
    };
    let mut f = fs::File::from(fd);
    f.write_all(&data[j.data.clone()])?;
    if j.chown {
        let (uid, gid) = owner_ids(j.uid, j.gid)?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
    }
    if j.chmod || j.chown {
        f.set_permissions(fs::Permissions::from_mode(j.mode))?;
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(j.mtime.max(1));
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
}

/// Files written (or failed) so far and the first failure, with a condvar for each change.
type Progress = (Mutex<(usize, Option<UnpackError>)>, Condvar);

/// Files to create and the buffer that holds their contents, one after the other.
struct Batch {
    data: Vec<u8>,
    jobs: Vec<FileJob>,
}

/// A batch's buffer: room for [`BATCH_BYTES`] and then one more file of up to
/// [`PARALLEL_MAX`], so that every small file fits in a batch of its own.
const BATCH_BUFFER: usize = BATCH_BYTES + PARALLEL_MAX as usize;

/// Threads creating the small regular files of a layer while the tar stream is read on: file
/// creation (a few system calls each, thousands per layer) is what an unpack waits for. Order
/// matters only between entries of one path (a later entry replaces an earlier one, a hard
/// link needs its target, a whiteout removes its file): the reader [`FileWriters::settle`]s
/// before such an entry, waiting for every file sent so far. Files go in batches, their
/// contents read straight into the batch's buffer; the writers hand written buffers back to
/// be filled again (no allocation, zeroing or page faults per file or per batch).
struct FileWriters {
    tx: Option<std::sync::mpsc::SyncSender<Batch>>,
    /// Buffers the writers are done with.
    spent: std::sync::mpsc::Receiver<Vec<u8>>,
    /// Files written (or failed), and the first failure.
    state: Arc<Progress>,
    sent: usize,
    /// Files not sent yet, and how much of the batch's buffer they fill.
    batch: Batch,
    batch_bytes: usize,
    /// Paths sent (or batched) since the last settle.
    pending: HashSet<PathBuf>,
}

impl FileWriters {
    fn start<'s>(scope: &'s std::thread::Scope<'s, '_>, threads: usize) -> FileWriters {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(QUEUE);
        let (spent_tx, spent) = std::sync::mpsc::channel::<Vec<u8>>();
        let rx = Arc::new(Mutex::new(rx));
        let state: Arc<Progress> = Arc::default();
        for _ in 0..threads {
            let (rx, state, spent_tx) = (rx.clone(), state.clone(), spent_tx.clone());
            scope.spawn(move || {
                loop {
                    let batch = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    let Ok(Batch { data, jobs }) = batch else { return };
                    let n = jobs.len();
                    let mut failed = None;
                    for job in jobs {
                        if let Err(source) = write_file(&job, &data) {
                            failed = Some(UnpackError::Io { entry: job.entry, source });
                            break;
                        }
                    }
                    // The reader may be gone (a failed unpack): then the buffer just goes.
                    let _ = spent_tx.send(data);
                    let (m, cv) = &*state;
                    if let Ok(mut st) = m.lock() {
                        st.0 += n;
                        if let Some(e) = failed
                            && st.1.is_none()
                        {
                            st.1 = Some(e);
                        }
                        cv.notify_all();
                    }
                }
            });
        }
        FileWriters {
            tx: Some(tx),
            spent,
            state,
            sent: 0,
            batch: Batch { data: Vec::new(), jobs: Vec::with_capacity(BATCH_FILES) },
            batch_bytes: 0,
            pending: HashSet::new(),
        }
    }

    /// The first failure of a writer, taken.
    fn failure(&self) -> Option<UnpackError> {
        self.state.0.lock().ok().and_then(|mut st| st.1.take())
    }

    /// Reads the `size` bytes of a file's content from `entry` into the batch: the range of
    /// the batch's buffer that holds them. Sends the batch first when they would not fit.
    fn read_data(&mut self, entry: &mut impl Read, size: usize) -> Result<std::ops::Range<usize>, UnpackError> {
        if self.batch_bytes + size > self.batch.data.len() && !self.batch.jobs.is_empty() {
            self.flush()?;
        }
        if self.batch.data.len() < BATCH_BUFFER {
            // A buffer a writer is done with (its bytes written already), else a new one.
            self.batch.data = self.spent.try_recv().unwrap_or_else(|_| vec![0; BATCH_BUFFER]);
        }
        let range = self.batch_bytes..self.batch_bytes + size;
        entry.read_exact(&mut self.batch.data[range.clone()]).map_err(UnpackError::Tar)?;
        self.batch_bytes += size;
        Ok(range)
    }

    fn send(&mut self, rel: PathBuf, job: FileJob) -> Result<(), UnpackError> {
        self.batch.jobs.push(job);
        self.pending.insert(rel);
        if self.batch.jobs.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Sends the files batched so far.
    fn flush(&mut self) -> Result<(), UnpackError> {
        if self.batch.jobs.is_empty() {
            return Ok(());
        }
        if let Some(e) = self.failure() {
            return Err(e);
        }
        let batch = std::mem::replace(
            &mut self.batch,
            Batch { data: Vec::new(), jobs: Vec::with_capacity(BATCH_FILES) },
        );
        self.batch_bytes = 0;
        let n = batch.jobs.len();
        let entry = batch.jobs[0].entry.clone();
        let tx = self.tx.as_ref().ok_or_else(|| io_err(&entry)(io::Error::other("writers stopped")))?;
        tx.send(batch).map_err(|_| io_err(&entry)(io::Error::other("writers stopped")))?;
        self.sent += n;
        Ok(())
    }

    /// Whether a file at `rel` may still be being written.
    fn pending(&self, rel: &Path) -> bool {
        self.pending.contains(rel)
    }

    /// Waits until every file sent is written; the first failure, if any.
    fn settle(&mut self) -> Result<(), UnpackError> {
        self.flush()?;
        let (m, cv) = &*self.state;
        let mut st = m.lock().map_err(|_| io_err(".")(io::Error::other("a file writer panicked")))?;
        while st.0 < self.sent && st.1.is_none() {
            st = cv.wait(st).map_err(|_| io_err(".")(io::Error::other("a file writer panicked")))?;
        }
        self.pending.clear();
        match st.1.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Settles and stops the threads.
    fn finish(mut self) -> Result<(), UnpackError> {
        let r = self.settle();
        self.tx = None;
        r
    }
}

/// What a layer's path holds once its entry is made, as [`super::integrity::shape_of`] counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Made {
    Dir,
    /// A regular file of so many bytes.
    File(u64),
    /// A symlink, device, FIFO or whiteout.
    Other,
}

impl Made {
    /// What is at `name` in `dir` now (`None`: nothing).
    fn at(dir: std::os::fd::BorrowedFd<'_>, name: &std::ffi::OsStr) -> io::Result<Option<Made>> {
        match nix::sys::stat::fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => Made::Dir,
                libc::S_IFREG => Made::File(u64::try_from(st.st_size).unwrap_or(0)),
                _ => Made::Other,
            })),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// Every path an unpack made, with what it holds: the layer's [`Shape`] (its completion
/// marker's) is known when the unpack ends, without walking the folder again (for a Debian
/// base layer the walk was a serial tail of tens of milliseconds on a pull). Paths are
/// relative to the layer; entries that replace one another keep the last.
#[derive(Debug, Default)]
struct MadeTree {
    paths: HashMap<PathBuf, Made>,
}

impl MadeTree {
    fn made(&mut self, rel: &Path, what: Made) {
        self.paths.insert(rel.to_path_buf(), what);
    }

    /// Records what is at `rel` now (an entry the tar crate made, whatever its type).
    fn look(&mut self, cursor: &DirCursor, rel: &Path, name: &std::ffi::OsStr) -> io::Result<()> {
        match Made::at(cursor.current(), name)? {
            Some(what) => self.made(rel, what),
            None => {
                self.paths.remove(rel);
            }
        }
        Ok(())
    }

    /// `dir` and the dirs above it, which entering it made where they were missing.
    fn dirs(&mut self, mut dir: &Path) {
        while !dir.as_os_str().is_empty() && !self.paths.contains_key(dir) {
            self.paths.insert(dir.to_path_buf(), Made::Dir);
            dir = dir.parent().unwrap_or(Path::new(""));
        }
    }

    fn shape(&self) -> Shape {
        let bytes = self.paths.values().map(|m| if let Made::File(n) = m { *n } else { 0 }).sum();
        Shape { entries: self.paths.len() as u64, bytes }
    }
}

/// Whether the entry's PAX headers carry xattrs (such files are written in line, by the tar
/// crate, which sets them).
fn has_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<bool> {
    let Some(extensions) = entry.pax_extensions()? else { return Ok(false) };
    for extension in extensions {
        if extension?.key().is_ok_and(|k| k.starts_with("SCHILY.xattr.")) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Bytes of the tar stream handed from the reading thread to the unpacking one at a time.
const CHUNK: usize = 256 * 1024;
/// Chunks read ahead of the unpacking thread.
const CHUNKS: usize = 8;

/// A byte stream that another thread hands on in chunks over a channel (the tar stream to the
/// unpacking thread; a layer's download to its unpacker); the sender hanging up ends it. A
/// chunk is a buffer and how many of its first bytes count: read out, the buffer goes back to
/// the sender (when it gave a way back) to be filled again, so that no buffer is allocated,
/// zeroed or faulted in per chunk.
pub(crate) struct ChunkReader {
    rx: std::sync::mpsc::Receiver<(Vec<u8>, usize)>,
    back: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    buf: Vec<u8>,
    len: usize,
    pos: usize,
}

impl ChunkReader {
    /// Reads what arrives on `rx`, in order, sending each chunk's buffer back on `back`.
    pub(crate) fn new(
        rx: std::sync::mpsc::Receiver<(Vec<u8>, usize)>,
        back: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    ) -> ChunkReader {
        ChunkReader { rx, back, buf: Vec::new(), len: 0, pos: 0 }
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos == self.len {
            match self.rx.recv() {
                Ok((chunk, len)) => {
                    let spent = std::mem::replace(&mut self.buf, chunk);
                    if let Some(back) = &self.back
                        && spent.capacity() > 0
                        && back.send(spent).is_err()
                    {
                        self.back = None;
                    }
                    self.len = len.min(self.buf.len());
                    self.pos = 0;
                }
                Err(_) => return Ok(&[]),
            }
        }
        Ok(&self.buf[self.pos..self.len])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.len);
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let have = self.fill_buf()?;
        let n = out.len().min(have.len());
        out[..n].copy_from_slice(&have[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Reads into `buf` until it is full or the stream ends; how much was read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What [`unpack`] made of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The layer's diff id (`sha256:` of the tar stream).
    pub diff_id: String,
    /// The unpacked folder's shape, for its completion marker.
    pub(crate) shape: Shape,
}

/// Unpacks the (decompressed) layer tar `reader` into `dest`, which must exist and be empty.
/// Returns the layer's diff id and the shape of what it made.
///
/// Four stages overlap: this thread reads `reader` (for a registry layer: decompression), a
/// second thread hashes the stream, a third reads the tar entries and makes dirs, links and
/// big files, and [`FileWriters`] create the small files. Hashing has a thread of its own
/// because decompression and hashing together were the slowest stage of a pull: the download
/// waited for them.
pub fn unpack(mut reader: impl Read, dest: &Path) -> Result<Unpacked, UnpackError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 4) * 2;
    let failed = AtomicBool::new(false);
    let (tar, read, hashed) = std::thread::scope(|scope| {
        // Chunks go reader → hasher → tar side; read out, their buffers come back to the reader.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(CHUNKS);
        let (hashed_tx, hashed_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(CHUNKS);
        let (back, spent) = std::sync::mpsc::channel::<Vec<u8>>();
        let failed = &failed;
        let hash_back = back.clone();
        let hash_side = scope.spawn(move || {
            let mut hasher = Sha256::new();
            let mut sending = true;
            for (buf, n) in rx {
                hasher.update(&buf[..n.min(buf.len())]);
                // Past the tar's end the rest of the stream still counts for the diff id; after
                // a failed unpack nothing more is worth reading (the reader stops when this
                // thread hangs up).
                let unsent = if sending {
                    match hashed_tx.send((buf, n)) {
                        Ok(()) => continue,
                        Err(std::sync::mpsc::SendError((buf, _))) => {
                            sending = false;
                            buf
                        }
                    }
                } else {
                    buf
                };
                if failed.load(Ordering::SeqCst) {
                    break;
                }
                let _ = hash_back.send(unsent);
            }
            hasher
        });
        let tar_side = scope.spawn(move || {
            let mut chunks = ChunkReader::new(hashed_rx, Some(back));
            let r = std::thread::scope(|writer_scope| {
                let mut writers = FileWriters::start(writer_scope, threads);
                let r = unpack_entries(&mut chunks, dest, &mut writers);
                // Every file sent is written (or failed) before the layer counts as unpacked.
                let done = writers.finish();
                r.and_then(|shape| done.map(|()| shape))
            });
            // Set before `chunks` (the hasher's way on) goes: the hasher, finding it gone,
            // reads this to tell a failed unpack from the tar's early end.
            if r.is_err() {
                failed.store(true, Ordering::SeqCst);
            }
            r
        });
        let read = loop {
            // A chunk the tar side has read out, else (while 2 * CHUNKS + 3 are not made yet) a new one.
            let mut buf = spent.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
            let n = match read_full(&mut reader, &mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            // The hasher hangs up only after a failed unpack.
            if tx.send((buf, n)).is_err() {
                break Ok(());
            }
        };
        drop(tx);
        let hashed = hash_side.join().map_err(|_| io::Error::other("the hashing thread panicked"));
        let tar = tar_side
            .join()
            .unwrap_or_else(|_| Err(io_err(".")(io::Error::other("the unpacking thread panicked"))));
        (tar, read, hashed)
    });
    // A stream that breaks off shows as its own error, not as the tar's early end.
    read.map_err(UnpackError::Tar)?;
    let shape = tar?;
    let hasher = hashed.map_err(UnpackError::Tar)?;
    Ok(Unpacked { diff_id: format!("sha256:{}", hex::encode(hasher.finalize())), shape })
}

fn unpack_entries<R: Read>(
    reader: &mut R,
    dest: &Path,
    writers: &mut FileWriters,
) -> Result<Shape, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    let defaults = Defaults::of_process();
    let mut cursor = DirCursor::new(dest).map_err(io_err("."))?;
    // The parents of hard link targets, walked apart so as not to move `cursor`.
    let mut link_cursor = DirCursor::new(dest).map_err(io_err("."))?;
    let mut made = MadeTree::default();
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let raw_path = entry.path().map_err(UnpackError::Tar)?.into_owned();
        let name = raw_path.display().to_string();
        let rel = clean_relative(&name, &raw_path)?;
        let Some(file_name) = rel.file_name().map(|n| n.to_os_string()) else { continue };
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let kind = entry.header().entry_type();
        // An entry of a path a writer may still be creating waits for it.
        if writers.pending(&rel) {
            writers.settle()?;
        }
        cursor.enter(&name, parent_rel, true)?;
        made.dirs(parent_rel);
        if !kind.is_dir() {
            link_cursor.invalidate(&rel);
        }
        let file_str = file_name.to_string_lossy();
        if file_str == ".wh..wh..opq" {
            cursor.set_dir_xattr("trusted.overlay.opaque", b"y").map_err(io_err(&name))?;
            continue;
        }
        if let Some(hidden) = file_str.strip_prefix(".wh.") {
            if hidden.is_empty() || hidden == "." || hidden == ".." {
                return Err(UnpackError::Escape {
                    entry: name,
                    why: "a whiteout must name a file in its dir".into(),
                });
            }
            let hidden_rel = rel.with_file_name(hidden);
            if writers.pending(&hidden_rel) {
                writers.settle()?;
            }
            link_cursor.invalidate(&hidden_rel);
            let hidden = std::ffi::OsStr::new(hidden);
            let _ = nix::unistd::unlinkat(cursor.current(), hidden, nix::unistd::UnlinkatFlags::NoRemoveDir);
            nix::sys::stat::mknodat(
                cursor.current(),
                hidden,
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|e| io_err(&name)(e.into()))?;
            made.made(&hidden_rel, Made::Other);
            continue;
        }
        if kind == tar::EntryType::Link {
            // Hard links are made here, relative to the layer (tar's own code would read the
            // target relative to the working directory); a hard link to a symlink is legal
            // in tar and links the symlink itself (linkat without AT_SYMLINK_FOLLOW).
            let link = entry.link_name().map_err(UnpackError::Tar)?.unwrap_or_default().into_owned();
            let link_rel = clean_relative(&name, &link)?;
            let Some(target_name) = link_rel.file_name() else {
                return Err(UnpackError::Escape { entry: name, why: "it links to the layer's root".into() });
            };
            if writers.pending(&link_rel) {
                writers.settle()?;
            }
            link_cursor.enter(&name, link_rel.parent().unwrap_or(Path::new("")), false)?;
            let flags = nix::fcntl::AtFlags::empty();
            let linked = |c: &DirCursor, l: &DirCursor| {
                nix::unistd::linkat(l.current(), target_name, c.current(), file_name.as_os_str(), flags)
            };
            match linked(&cursor, &link_cursor) {
                Err(nix::errno::Errno::EEXIST) => {
                    let _ = nix::unistd::unlinkat(
                        cursor.current(),
                        file_name.as_os_str(),
                        nix::unistd::UnlinkatFlags::NoRemoveDir,
                    );
                    linked(&cursor, &link_cursor)
                }
                other => other,
            }
            .map_err(|e| io_err(&name)(e.into()))?;
            // A hard link is what its target is (a file counts at each of its names).
            match made.paths.get(&link_rel) {
                Some(&what) => made.made(&rel, what),
                None => made.look(&cursor, &rel, &file_name).map_err(io_err(&name))?,
            }
            continue;
        }
        if kind == tar::EntryType::Directory {
            make_dir(&cursor, &file_name, entry.header(), &defaults, &name, &rel)?;
            made.made(&rel, Made::Dir);
            continue;
        }
        if kind == tar::EntryType::Symlink {
            make_symlink(&cursor, &file_name, &entry, &defaults).map_err(io_err(&name))?;
            made.made(&rel, Made::Other);
            continue;
        }
        let path = cursor.path(&file_name);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo) {
            // The tar crate writes these as empty regular files: made here as what they are.
            make_special(&entry, kind, &path)
                .map_err(|e| UnpackError::Io { entry: name.clone(), source: e })?;
            made.made(&rel, Made::Other);
            continue;
        }
        if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous)
            && entry.size() <= PARALLEL_MAX
            && !has_xattrs(&mut entry).map_err(UnpackError::Tar)?
        {
            let h = entry.header();
            let (mode, uid, gid, mtime) = (
                h.mode().map_err(UnpackError::Tar)?,
                h.uid().map_err(UnpackError::Tar)?,
                h.gid().map_err(UnpackError::Tar)?,
                h.mtime().map_err(UnpackError::Tar)?,
            );
            let size = entry.size() as usize;
            let data = writers.read_data(&mut entry, size)?;
            made.made(&rel, Made::File(entry.size()));
            let (chown, chmod) = (defaults.needs_chown(uid, gid, cursor.setgid), defaults.needs_chmod(mode));
            let job = FileJob {
                dir: cursor.shared(),
                name: file_name,
                entry: name,
                data,
                mode,
                uid,
                gid,
                mtime,
                chown,
                chmod,
            };
            writers.send(rel, job)?;
            continue;
        }
        let overlay_xattrs = overlay_xattrs(&mut entry).map_err(UnpackError::Tar)?;
        // `unpack` (not `unpack_in`): the parent is open already (`cursor`), and `unpack_in`
        // would resolve every parent with readlink again for each entry (a hundred thousand
        // system calls for a Debian base layer).
        entry.unpack(&path).map_err(|e| UnpackError::Io { entry: name.clone(), source: e })?;
        // overlayfs reads `trusted.overlay.*` on its layers (opaque dirs, redirects,
        // metacopy); only this unpacker may set them, never the layer's content.
        for key in overlay_xattrs {
            let _ = xattr::remove(&path, key);
        }
        // Whatever the tar crate made of it (or did not: a type it skips).
        made.look(&cursor, &rel, &file_name).map_err(io_err(&name))?;
    }
    Ok(made.shape())
}

/// A dir entry, relative to the cursor's dir: made with its mode, or kept when it exists
/// (made for an earlier entry below it); its owner and mode set only when they differ. As
/// the tar crate's entry unpack, the dir's mtime is left to the entries made in it.
fn make_dir(
    cursor: &DirCursor,
    file_name: &std::ffi::OsStr,
    h: &tar::Header,
    defaults: &Defaults,
    name: &str,
    rel: &Path,
) -> Result<(), UnpackError> {
    use nix::fcntl::AtFlags;
    use nix::sys::stat::{FchmodatFlags, Mode, fchmodat, fstatat, mkdirat};
    let at = cursor.current();
    let fail = |e: nix::errno::Errno| io_err(name)(e.into());
    let mode = h.mode().map_err(UnpackError::Tar)?;
    let (uid, gid) = (h.uid().map_err(UnpackError::Tar)?, h.gid().map_err(UnpackError::Tar)?);
    let (chown, chmod) = match mkdirat(at, file_name, Mode::from_bits_truncate(mode & 0o777)) {
        Ok(()) => (defaults.needs_chown(uid, gid, cursor.setgid), defaults.needs_chmod(mode)),
        Err(nix::errno::Errno::EEXIST) => {
            let st = fstatat(at, file_name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(fail)?;
            match st.st_mode & libc::S_IFMT {
                libc::S_IFDIR => {}
                libc::S_IFLNK => {
                    // tar would take the symlink's target as the folder and change its mode.
                    return Err(UnpackError::Escape {
                        entry: name.to_string(),
                        why: format!("{} is a symlink in the layer", rel.display()),
                    });
                }
                _ => return Err(fail(nix::errno::Errno::EEXIST)),
            }
            let chown = u64::from(st.st_uid) != uid || u64::from(st.st_gid) != gid;
            (chown, st.st_mode & 0o7777 != mode & 0o7777)
        }
        Err(e) => return Err(fail(e)),
    };
    if chown {
        lchown_at(at, file_name, uid, gid).map_err(fail)?;
    }
    // After the chown, which may clear set-id bits.
    if chmod || chown {
        fchmodat(at, file_name, Mode::from_bits_retain(mode & 0o7777), FchmodatFlags::FollowSymlink)
            .map_err(fail)?;
    }
    Ok(())
}

/// A tar header's owner ids as the kernel takes them. An id past 32 bits names no user: taking
/// its low bits would give the file to another one, so it is an error.
fn owner_ids(uid: u64, gid: u64) -> io::Result<(u32, u32)> {
    match (u32::try_from(uid), u32::try_from(gid)) {
        (Ok(uid), Ok(gid)) => Ok((uid, gid)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidData, format!("owner {uid}:{gid} is past 32 bits"))),
    }
}

/// Sets the owner of `file_name` in `at` from a tar header's ids, not following a symlink.
fn lchown_at<Fd: std::os::fd::AsFd>(at: Fd, file_name: &std::ffi::OsStr, uid: u64, gid: u64) -> nix::Result<()> {
    let (uid, gid) = owner_ids(uid, gid).map_err(|_| nix::errno::Errno::EINVAL)?;
    nix::unistd::fchownat(
        at,
        file_name,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// A symlink entry, relative to the cursor's dir (replacing what is there, unless a dir), with
/// its owner (when it differs from the new link's) and mtime.
fn make_symlink<R: Read>(
    cursor: &DirCursor,
    file_name: &std::ffi::OsStr,
    entry: &tar::Entry<'_, R>,
    defaults: &Defaults,
) -> io::Result<()> {
    let at = cursor.current();
    let target = entry.link_name()?.unwrap_or_default();
    if target.as_os_str().is_empty() {
        return Err(io::Error::other("its symlink target is empty"));
    }
    match nix::unistd::symlinkat(target.as_ref(), at, file_name) {
        Err(nix::errno::Errno::EEXIST) => {
            nix::unistd::unlinkat(at, file_name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            nix::unistd::symlinkat(target.as_ref(), at, file_name)?;
        }
        other => other?,
    }
    let h = entry.header();
    let (uid, gid) = (h.uid()?, h.gid()?);
    if defaults.needs_chown(uid, gid, cursor.setgid) {
        lchown_at(at, file_name, uid, gid)?;
    }
    let mtime = nix::sys::time::TimeSpec::new(h.mtime()?.max(1) as i64, 0);
    nix::sys::stat::utimensat(
        at,
        file_name,
        &mtime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )?;
    Ok(())
}

/// A device node or FIFO entry at `path`, with its mode, owner and mtime.
fn make_special<R: Read>(entry: &tar::Entry<'_, R>, kind: tar::EntryType, path: &Path) -> io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    let h = entry.header();
    let flag = match kind {
        tar::EntryType::Char => SFlag::S_IFCHR,
        tar::EntryType::Block => SFlag::S_IFBLK,
        _ => SFlag::S_IFIFO,
    };
    let dev = match kind {
        tar::EntryType::Fifo => 0,
        _ => makedev(u64::from(h.device_major()?.unwrap_or(0)), u64::from(h.device_minor()?.unwrap_or(0))),
    };
    if fs::symlink_metadata(path).is_ok_and(|m| !m.is_dir()) {
        fs::remove_file(path)?;
    }
    let mode = h.mode()? & 0o7777;
    mknod(path, flag, Mode::from_bits_truncate(mode), dev).map_err(io::Error::from)?;
    // An empty owner field is 0, as GNU tar reads it.
    let (uid, gid) = owner_ids(h.uid().unwrap_or(0), h.gid().unwrap_or(0))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    // mknod applies the umask; the layer's mode is what counts.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    let mtime = nix::sys::time::TimeSpec::new(h.mtime().unwrap_or(0) as i64, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &mtime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_ids_past_32_bits_are_refused_not_cut() {
        assert_eq!(owner_ids(0, 0).unwrap(), (0, 0));
        assert_eq!(owner_ids(u64::from(u32::MAX), 100).unwrap(), (u32::MAX, 100));
        let e = owner_ids(1 << 32, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("4294967296:0"), "{e}");
        assert!(owner_ids(0, 1 << 33).is_err());
    }

    /// Unpacks `t` into `dir`, checks that the shape the unpack kept is the one a walk of
    /// `dir` finds, and returns the diff id.
    fn unpack_walked(t: &[u8], dir: &Path) -> String {
        let unpacked = unpack(t, dir).unwrap();
        assert_eq!(unpacked.shape, crate::image::integrity::shape_of(dir).unwrap());
        unpacked.diff_id
    }

    /// A header of `kind` for `size` bytes (owned by root, 0755 dirs, 0644 the rest), its
    /// path left to the caller.
    fn header(kind: tar::EntryType, size: usize, link: Option<&str>) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
        h.set_size(size as u64);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h
    }

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = header(*kind, data.len(), *link);
            // set_path refuses '..'; write the raw name so that the escape attempt is real.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn escapes_are_refused() {
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let up = tar_with(&[("../evil", Regular, b"x", None)]);
        assert!(matches!(unpack(&up[..], dir.path()), Err(UnpackError::Escape { .. })));
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let through = tar_with(&[("link", Symlink, b"", Some("/etc")), ("link/passwd", Regular, b"x", None)]);
        let err = unpack(&through[..], dir.path()).unwrap_err();
        assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
    }

    #[test]
    fn the_shape_kept_is_what_a_walk_finds() {
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let add = |b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>| {
            b.append_data(&mut header(kind, data.len(), link), path, data).unwrap();
        };
        // Parents made for entries below them, and a dir entry for one made so.
        add(&mut b, "a/b/c/file", Regular, b"12345", None);
        add(&mut b, "a/b", Directory, b"", None);
        // A file replaced by a longer one, a symlink by a file, a file by a symlink.
        add(&mut b, "a/again", Regular, b"1", None);
        add(&mut b, "a/again", Regular, b"123", None);
        add(&mut b, "a/was-link", Symlink, b"", Some("file"));
        add(&mut b, "a/was-link", Regular, b"1234", None);
        add(&mut b, "a/was-file", Regular, b"12", None);
        add(&mut b, "a/was-file", Symlink, b"", Some("again"));
        // Hard links: to a file (counted at each name), to a symlink, to a big file.
        add(&mut b, "a/hard", Link, b"", Some("a/again"));
        add(&mut b, "a/hard-to-link", Link, b"", Some("a/was-file"));
        let big = vec![7u8; PARALLEL_MAX as usize + 10];
        add(&mut b, "big", Regular, &big, None);
        add(&mut b, "big-link", Link, b"", Some("big"));
        // Whiteouts: of a file of this layer and of one of a layer below; an opaque dir.
        add(&mut b, "a/.wh.again", Regular, b"", None);
        add(&mut b, "w/.wh.below", Regular, b"", None);
        add(&mut b, "o/.wh..wh..opq", Regular, b"", None);
        add(&mut b, "fifo", Fifo, b"", None);
        // A file with xattrs (written by the tar crate), and a global PAX header (made nothing).
        b.append_pax_extensions([("SCHILY.xattr.user.berth", &b"x"[..])]).unwrap();
        add(&mut b, "x/with-xattr", Regular, b"xattr", None);
        add(&mut b, "global", XGlobalHeader, b"8 a=bcd\n", None);
        let t = b.into_inner().unwrap();
        unpack_walked(&t, dir.path());
        let shape = crate::image::integrity::shape_of(dir.path()).unwrap();
        assert_eq!(shape.bytes, 5 + 4 + 3 + 2 * big.len() as u64 + 5, "{shape:?}");
    }

    /// The diff id is of the whole stream, also the bytes after the tar's end (more of them
    /// than the stages hold, so that the hasher goes on after the tar side has stopped); a
    /// failed unpack with as long a tail still returns its own error.
    #[test]
    fn the_diff_id_counts_the_stream_past_the_tar_end() {
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let mut t = tar_with(&[("a", Regular, b"x", None)]);
        t.resize(t.len() + 4 * CHUNKS * CHUNK + 17, 0);
        let diff_id = unpack_walked(&t[..], dir.path());
        assert_eq!(diff_id, format!("sha256:{}", hex::encode(Sha256::digest(&t))));
        assert_eq!(fs::read(dir.path().join("a")).unwrap(), b"x");
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let mut bad = tar_with(&[("../evil", Regular, b"x", None)]);
        bad.resize(bad.len() + 4 * CHUNKS * CHUNK, 0);
        assert!(matches!(unpack(&bad[..], dir.path()), Err(UnpackError::Escape { .. })));
    }

    /// One PAX record, `LEN KEY=VALUE\n`, LEN counting itself.
    fn pax_record(key: &str, value: &str) -> String {
        let body = format!(" {key}={value}\n");
        let mut len = body.len() + 1;
        while format!("{len}{body}").len() != len {
            len += 1;
        }
        format!("{len}{body}")
    }

    /// A path of 2,000 components (each dir its own entry, then files at the bottom) unpacks
    /// in linear time: each entry resolves one component, not the whole path again.
    #[test]
    fn deep_paths_unpack_in_linear_time() {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut path = String::new();
        let entry = |b: &mut tar::Builder<Vec<u8>>, path: &str, kind: tar::EntryType, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o755);
            h.set_size(data.len() as u64);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            b.append_data(&mut h, path, data).unwrap();
        };
        for _ in 0..2000 {
            path.push_str("d/");
            entry(&mut b, &path, tar::EntryType::Directory, b"");
        }
        for i in 0..100 {
            entry(&mut b, &format!("{path}f{i}"), tar::EntryType::Regular, b"x");
        }
        entry(&mut b, &format!("{path}.wh.f0"), tar::EntryType::Regular, b"");
        let t = b.into_inner().unwrap();
        // CPU time of this thread (user and system): wall time on a busy machine says little.
        let cpu = || {
            let r = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD).unwrap();
            use nix::sys::time::TimeValLike;
            let micros = r.user_time().num_microseconds() + r.system_time().num_microseconds();
            std::time::Duration::from_micros(u64::try_from(micros).unwrap_or(0))
        };
        let started = cpu();
        unpack_walked(&t[..], dir.path());
        let spent = cpu() - started;
        assert!(spent < std::time::Duration::from_secs(3), "{spent:?}");
        // The deepest dir holds the files (reached one component at a time: past PATH_MAX).
        let mut fd = DirCursor::new(dir.path()).unwrap();
        fd.enter("check", Path::new(path.trim_end_matches('/')), false).unwrap();
        assert_eq!(fs::read(fd.path(std::ffi::OsStr::new("f99"))).unwrap(), b"x");
    }

    #[test]
    fn whiteouts_of_dot_and_dot_dot_are_refused() {
        use tar::EntryType::*;
        for bad in ["d/.wh..", "d/.wh...", "d/.wh."] {
            let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
            let t = tar_with(&[("d", Directory, b"", None), (bad, Regular, b"", None)]);
            let err = unpack(&t[..], dir.path()).unwrap_err();
            assert!(matches!(err, UnpackError::Escape { .. }), "{bad}: {err}");
        }
    }

    #[test]
    fn overlay_xattrs_from_the_layer_are_dropped() {
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let pax = pax_record("SCHILY.xattr.trusted.overlay.redirect", "/elsewhere")
            + &pax_record("SCHILY.xattr.user.kept", "yes");
        let t = tar_with(&[("d/PaxHeaders/f", XHeader, pax.as_bytes(), None), ("f", Regular, b"x", None)]);
        unpack_walked(&t[..], dir.path());
        let f = dir.path().join("f");
        assert_eq!(xattr::get(&f, "trusted.overlay.redirect").unwrap(), None);
        // user.* xattrs need a file system that has them (tmpfs before 6.6 does not).
        if xattr::set(dir.path(), "user.probe", b"1").is_ok() {
            assert_eq!(xattr::get(&f, "user.kept").unwrap(), Some(b"yes".to_vec()));
        }
    }

    #[test]
    fn files_written_by_threads_keep_the_stream_order() {
        use std::os::unix::fs::MetadataExt;
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let big = vec![7u8; (PARALLEL_MAX + 1) as usize];
        let mut entries: Vec<(String, tar::EntryType, Vec<u8>, Option<&str>)> = Vec::new();
        // Many files in several dirs, so that writers run at once.
        for d in 0..8 {
            entries.push((format!("d{d}"), Directory, Vec::new(), None));
            for f in 0..50 {
                entries.push((format!("d{d}/f{f}"), Regular, format!("{d}-{f}").into_bytes(), None));
            }
        }
        // A later entry of a path replaces the earlier one (file by file, file by symlink);
        // a hard link and a whiteout of files just sent; a big file written in line.
        entries.push(("d0/f1".into(), Regular, b"second".to_vec(), None));
        entries.push(("d0/f2".into(), Symlink, Vec::new(), Some("f3")));
        entries.push(("d1/link".into(), Link, Vec::new(), Some("d1/f49")));
        entries.push(("d2/.wh.f49".into(), Regular, Vec::new(), None));
        entries.push(("d3/big".into(), Regular, big.clone(), None));
        let refs: Vec<(&str, tar::EntryType, &[u8], Option<&str>)> =
            entries.iter().map(|(p, k, d, l)| (p.as_str(), *k, d.as_slice(), *l)).collect();
        let t = tar_with(&refs);
        let diff_id = unpack_walked(&t[..], dir.path());
        assert_eq!(diff_id, format!("sha256:{}", hex::encode(Sha256::digest(&t))));
        let p = |s: &str| dir.path().join(s);
        assert_eq!(fs::read(p("d7/f42")).unwrap(), b"7-42");
        assert_eq!(fs::read(p("d0/f1")).unwrap(), b"second");
        assert_eq!(fs::read_link(p("d0/f2")).unwrap(), Path::new("f3"));
        assert_eq!(fs::metadata(p("d1/link")).unwrap().ino(), fs::metadata(p("d1/f49")).unwrap().ino());
        let wh = fs::symlink_metadata(p("d2/f49")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()) && wh.rdev() == 0);
        assert_eq!(fs::read(p("d3/big")).unwrap(), big);
        // As the tar crate writes them: the header's mode, time 0 read as 1.
        let m = fs::metadata(p("d5/f5")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime(), m.uid()), (0o644, 1, 0));
    }

    /// Owners and modes are right whether or not the new inode had them already: modes the
    /// umask would cut, set-id and sticky bits, other owners, and the group of a set-group-id
    /// dir (which its new inodes would take) for files, dirs and symlinks.
    #[test]
    fn owners_and_modes_are_set_only_where_needed_and_always_right() {
        use std::os::unix::fs::MetadataExt;
        use tar::EntryType::*;
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        // Path, type, mode, owner, group, link target.
        type Entry = (&'static str, tar::EntryType, u32, u64, u64, Option<&'static str>);
        let entries: &[Entry] = &[
            ("open", Regular, 0o666, 0, 0, None),
            ("suid", Regular, 0o4755, 0, 0, None),
            ("user", Regular, 0o640, 1000, 1001, None),
            ("tmp", Directory, 0o1777, 0, 0, None),
            ("home", Directory, 0o750, 1000, 1000, None),
            ("link", Symlink, 0o777, 1000, 1000, Some("open")),
            ("sg", Directory, 0o2775, 0, 50, None),
            ("sg/file", Regular, 0o644, 0, 0, None),
            ("sg/sub", Directory, 0o755, 0, 0, None),
            ("sg/link", Symlink, 0o777, 0, 0, Some("file")),
            // An entry for a dir made before (as a parent) sets its mode and owner.
            ("implied/f", Regular, 0o644, 0, 0, None),
            ("implied", Directory, 0o700, 7, 7, None),
        ];
        for (path, kind, mode, uid, gid, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(*mode);
            h.set_uid(*uid);
            h.set_gid(*gid);
            h.set_mtime(1_000_000);
            h.set_size(if *kind == Regular { 1 } else { 0 });
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            let data: &[u8] = if *kind == Regular { b"x" } else { b"" };
            b.append_data(&mut h, path, data).unwrap();
        }
        let t = b.into_inner().unwrap();
        unpack_walked(&t[..], dir.path());
        for (path, kind, mode, uid, gid, _) in entries {
            let m = fs::symlink_metadata(dir.path().join(path)).unwrap();
            assert_eq!((m.uid(), m.gid()), (*uid as u32, *gid as u32), "{path}");
            if *kind != Symlink {
                assert_eq!(m.mode() & 0o7777, *mode, "{path}");
            }
            if *kind != Directory {
                assert_eq!(m.mtime(), 1_000_000, "{path}");
            }
        }
    }

    #[test]
    fn hard_links_and_whiteouts() {
        use std::os::unix::fs::MetadataExt;
        use tar::EntryType::*;
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let t = tar_with(&[
            ("d", Directory, b"", None),
            ("d/a", Regular, b"hello", None),
            ("d/b", Link, b"", Some("d/a")),
            ("d/.wh.gone", Regular, b"", None),
            ("o/.wh..wh..opq", Regular, b"", None),
        ]);
        let diff_id = unpack_walked(&t[..], dir.path());
        assert_eq!(diff_id, format!("sha256:{}", hex::encode(Sha256::digest(&t))));
        let (a, b) =
            (fs::metadata(dir.path().join("d/a")).unwrap(), fs::metadata(dir.path().join("d/b")).unwrap());
        assert_eq!(a.ino(), b.ino());
        let gone = fs::symlink_metadata(dir.path().join("d/gone")).unwrap();
        assert_eq!(gone.rdev(), 0);
        assert_eq!(xattr::get(dir.path().join("o"), "trusted.overlay.opaque").unwrap(), Some(b"y".to_vec()));
    }

    #[test]
    fn fifos_and_devices_stay_what_they_are() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        // Making a device node needs CAP_MKNOD: only tried as root.
        let root = nix::unistd::geteuid().is_root();
        let mut entries = vec![("pipe", tar::EntryType::Fifo, 0, 0)];
        if root {
            entries.push(("null", tar::EntryType::Char, 1, 3));
        }
        for (name, kind, major, minor) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o640);
            h.set_size(0);
            h.set_mtime(1000);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            b.append_data(&mut h, name, io::empty()).unwrap();
        }
        let t = b.into_inner().unwrap();
        unpack_walked(&t[..], dir.path());
        let pipe = fs::symlink_metadata(dir.path().join("pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
        assert_eq!((pipe.mode() & 0o7777, pipe.mtime()), (0o640, 1000));
        if root {
            let null = fs::symlink_metadata(dir.path().join("null")).unwrap();
            assert!(null.file_type().is_char_device());
            assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        }
    }
}
