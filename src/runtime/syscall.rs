//! The privileged calls the runtime makes to build a container, behind one trait (as youki's
//! libcontainer does), so that the order and arguments of those calls can be unit-tested
//! without root: [`Linux`] makes the calls; the test double (`Recorder`, tests only) writes them
//! down and answers from what the test set up.
//!
//! Covered: mount, umount, pivot_root, chdir, setns/unshare, sethostname/setdomainname, the
//! user and capabilities switch, mknod/chmod/symlink as the rootfs code uses them, and the
//! reads, writes and mkdirs of cgroup files (and the v2 device filter). Plain path lookups
//! (`secure_join`, making mount points) stay on the real file system: tests give them a
//! temporary dir.
//!
//! Every method is allocation-free on the [`Linux`] side except where the call itself needs a
//! C string, so the container's first process (a copy of the single-threaded shim) makes the
//! same allocations as before; callers take a `&dyn Syscall`.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use caps::Capability;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{Mode, SFlag};

use super::devices_bpf::DeviceRule;
use super::process::ResolvedUser;

/// A step of switching to the container's user and capabilities that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct CredError {
    /// What was being done (`setuid`, `drop CAP_SYS_ADMIN`, ...).
    pub step: String,
    /// The underlying error.
    pub source: CredCause,
}

/// Why a credentials step failed.
#[derive(Debug, thiserror::Error)]
pub enum CredCause {
    /// The kernel refused (the errno).
    #[error("{0}")]
    Sys(#[source] nix::errno::Errno),
    /// The capabilities crate refused.
    #[error("{0}")]
    Caps(#[source] caps::errors::CapsError),
}

/// The errno behind an error: the first `io::Error` with an OS error, `Errno`, or error from
/// another process that carries one ([`Failure`](super::handoff::Failure),
/// [`InitError`](super::init::InitError)) on its chain of sources.
pub fn errno_of(error: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut e = Some(error);
    while let Some(current) = e {
        if let Some(f) = current.downcast_ref::<super::handoff::Failure>() {
            return f.errno;
        }
        if let Some(f) = current.downcast_ref::<super::init::InitError>() {
            return f.errno;
        }
        if let Some(errno) = current.downcast_ref::<nix::errno::Errno>() {
            return Some(*errno as i32);
        }
        if let Some(io) = current.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
            if let Some(inner) = io.get_ref() {
                return errno_of(inner);
            }
        }
        e = current.source();
    }
    None
}

/// The privileged calls of the runtime. All errors are `io::Error`s that keep the errno.
pub trait Syscall {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// umount2(2).
    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> io::Result<()>;
    /// The flags the kernel locks on the mount at `path` (nosuid, nodev, noexec), which a
    /// remount must repeat (from statvfs(2)).
    fn locked_flags(&self, path: &Path) -> io::Result<MsFlags>;
    /// mknod(2) of a device node, then chmod to `perm` (mknod honours the umask).
    fn mknod(&self, path: &Path, kind: SFlag, perm: u32, dev: u64) -> io::Result<()>;
    /// symlink(2): `link` pointing at `dest`.
    fn symlink(&self, dest: &Path, link: &Path) -> io::Result<()>;
    /// setns(2).
    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> io::Result<()>;
    /// Opens a namespace file (`/proc/PID/ns/NAME`) to join it later, close-on-exec.
    fn open_namespace(&self, path: &Path) -> io::Result<OwnedFd>;
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> io::Result<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// setdomainname(2).
    fn setdomainname(&self, name: &str) -> io::Result<()>;
    /// Becomes `user` keeping exactly `caps` (bounding, then ids, then the other sets).
    fn set_user_and_caps(&self, caps: &HashSet<Capability>, user: &ResolvedUser) -> Result<(), CredError>;
    /// mkdir(2) of one dir (cgroup dirs).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// Makes a dir and its missing parents.
    fn mkdir_all(&self, path: &Path) -> io::Result<()>;
    /// rmdir(2).
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// Whether `path` exists.
    fn exists(&self, path: &Path) -> bool;
    /// Reads a (cgroup) file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// Writes `data` to an existing (cgroup) file in one write(2).
    fn write(&self, path: &Path, data: &str) -> io::Result<()>;
    /// Writes each record with its own write(2), all on one open file (cgroup v1 device rules,
    /// which the kernel takes one per write).
    fn write_each(&self, path: &Path, records: &[String]) -> io::Result<()>;
    /// Loads an eBPF device filter for `rules` and attaches it to the cgroup v2 dir `dir`.
    fn attach_device_filter(&self, dir: &Path, rules: &[DeviceRule]) -> io::Result<()>;
}

/// The real calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Linux;

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        Ok(nix::mount::mount(source, target, fstype, flags, data)?)
    }

    fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
        Ok(nix::mount::umount2(target, flags)?)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
        Ok(nix::unistd::pivot_root(new_root, put_old)?)
    }

    fn chdir(&self, path: &Path) -> io::Result<()> {
        Ok(nix::unistd::chdir(path)?)
    }

    fn locked_flags(&self, path: &Path) -> io::Result<MsFlags> {
        use nix::sys::statvfs::FsFlags;
        let statfs = nix::sys::statvfs::statvfs(path)?;
        let mut flags = MsFlags::empty();
        for (f, m) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ] {
            if statfs.flags().contains(f) {
                flags |= m;
            }
        }
        Ok(flags)
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: u32, dev: u64) -> io::Result<()> {
        nix::sys::stat::mknod(path, kind, Mode::from_bits_truncate(perm), dev)?;
        fs::set_permissions(path, fs::Permissions::from_mode(perm))
    }

    fn symlink(&self, dest: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(dest, link)
    }

    fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::setns(fd, nstype)?)
    }

    fn open_namespace(&self, path: &Path) -> io::Result<OwnedFd> {
        // std opens with O_CLOEXEC.
        Ok(fs::File::open(path)?.into())
    }

    fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
        Ok(nix::sched::unshare(flags)?)
    }

    fn sethostname(&self, name: &str) -> io::Result<()> {
        Ok(nix::unistd::sethostname(name)?)
    }

    fn setdomainname(&self, name: &str) -> io::Result<()> {
        // SAFETY: setdomainname reads len bytes from a valid buffer.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        if rc != 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    fn set_user_and_caps(&self, caps: &HashSet<Capability>, user: &ResolvedUser) -> Result<(), CredError> {
        use caps::CapSet;
        use nix::unistd::{Gid, Uid};
        let step = |step: &'static str| {
            move |e: nix::errno::Errno| CredError { step: step.into(), source: CredCause::Sys(e) }
        };
        let caps_step = |step: &'static str| {
            move |e: caps::errors::CapsError| CredError { step: step.into(), source: CredCause::Caps(e) }
        };
        for cap in caps::all() {
            if !caps.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                caps::drop(None, CapSet::Bounding, cap)
                    .map_err(|e| CredError { step: format!("drop {cap}"), source: CredCause::Caps(e) })?;
            }
        }
        nix::sys::prctl::set_keepcaps(true).map_err(step("keep capabilities"))?;
        let groups: Vec<Gid> = user.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        nix::unistd::setgroups(&groups).map_err(step("setgroups"))?;
        let gid = Gid::from_raw(user.gid);
        nix::unistd::setresgid(gid, gid, gid).map_err(step("setgid"))?;
        let uid = Uid::from_raw(user.uid);
        nix::unistd::setresuid(uid, uid, uid).map_err(step("setuid"))?;
        nix::sys::prctl::set_keepcaps(false).map_err(step("keep capabilities"))?;
        caps::clear(None, CapSet::Ambient).map_err(caps_step("ambient capabilities"))?;
        caps::set(None, CapSet::Inheritable, &HashSet::new())
            .map_err(caps_step("inheritable capabilities"))?;
        caps::set(None, CapSet::Effective, caps).map_err(caps_step("effective capabilities"))?;
        caps::set(None, CapSet::Permitted, caps).map_err(caps_step("permitted capabilities"))?;
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)
    }

    fn mkdir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn write(&self, path: &Path, data: &str) -> io::Result<()> {
        fs::write(path, data)
    }

    fn write_each(&self, path: &Path, records: &[String]) -> io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).open(path)?;
        for record in records {
            io::Write::write_all(&mut file, record.as_bytes())?;
        }
        Ok(())
    }

    fn attach_device_filter(&self, dir: &Path, rules: &[DeviceRule]) -> io::Result<()> {
        super::devices_bpf::attach(dir, rules)
    }
}

#[cfg(test)]
pub(crate) use recorder::Recorder;

#[cfg(test)]
mod recorder {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    /// The test double: records every call as one line of text (`mount tmpfs /r/dev tmpfs
    /// NOSUID|STRICTATIME mode=755`), with paths under `strip` shown from `/`, and answers
    /// reads from `files` (writes land there too). A call whose line contains `fail_on.0`
    /// fails with errno `fail_on.1` (and is not recorded).
    #[derive(Debug, Default)]
    pub(crate) struct Recorder {
        pub calls: RefCell<Vec<String>>,
        pub files: RefCell<BTreeMap<PathBuf, String>>,
        /// Locked flags by mount point (none when absent).
        pub locked: BTreeMap<PathBuf, MsFlags>,
        /// The root whose prefix is cut from recorded paths.
        pub strip: Option<PathBuf>,
        pub fail_on: Option<(String, i32)>,
        /// Paths of the namespace files opened, by the fd that stands for each.
        pub opened: RefCell<BTreeMap<i32, String>>,
    }

    /// `NOSUID|NODEV`: the flags' names without `MS_`, in bit order; `-` when none.
    pub(crate) fn flag_names(flags: MsFlags) -> String {
        let names: Vec<&str> = flags.iter_names().map(|(n, _)| n.trim_start_matches("MS_")).collect();
        if names.is_empty() { "-".into() } else { names.join("|") }
    }

    impl Recorder {
        /// A recorder showing paths under `root` from `/`.
        pub(crate) fn under(root: &Path) -> Recorder {
            Recorder { strip: Some(root.to_path_buf()), ..Recorder::default() }
        }

        fn show(&self, path: &Path) -> String {
            match self.strip.as_ref().and_then(|r| path.strip_prefix(r).ok()) {
                Some(rest) => Path::new("/").join(rest).display().to_string(),
                None => path.display().to_string(),
            }
        }

        fn record(&self, line: String) -> io::Result<()> {
            if let Some((needle, errno)) = &self.fail_on
                && line.contains(needle.as_str())
            {
                return Err(io::Error::from_raw_os_error(*errno));
            }
            self.calls.borrow_mut().push(line);
            Ok(())
        }

        /// The recorded calls.
        pub(crate) fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }

        /// The recorded calls that start with `prefix`.
        pub(crate) fn calls_starting(&self, prefix: &str) -> Vec<String> {
            self.calls.borrow().iter().filter(|c| c.starts_with(prefix)).cloned().collect()
        }

        /// Sets a file's content, as the kernel would show it.
        pub(crate) fn file(&self, path: impl Into<PathBuf>, content: &str) {
            self.files.borrow_mut().insert(path.into(), content.to_string());
        }
    }

    impl Syscall for Recorder {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: MsFlags,
            data: Option<&str>,
        ) -> io::Result<()> {
            let mut line = format!(
                "mount {} {} {} {}",
                source.map_or("-".to_string(), |s| self.show(s)),
                self.show(target),
                fstype.unwrap_or("-"),
                flag_names(flags)
            );
            if let Some(data) = data {
                line.push(' ');
                line.push_str(data);
            }
            self.record(line)
        }

        fn umount(&self, target: &Path, flags: MntFlags) -> io::Result<()> {
            self.record(format!("umount {} {:?}", self.show(target), flags))
        }

        fn pivot_root(&self, new_root: &Path, put_old: &Path) -> io::Result<()> {
            self.record(format!("pivot_root {} {}", self.show(new_root), self.show(put_old)))
        }

        fn chdir(&self, path: &Path) -> io::Result<()> {
            self.record(format!("chdir {}", self.show(path)))
        }

        fn locked_flags(&self, path: &Path) -> io::Result<MsFlags> {
            Ok(self.locked.get(path).copied().unwrap_or(MsFlags::empty()))
        }

        fn mknod(&self, path: &Path, kind: SFlag, perm: u32, dev: u64) -> io::Result<()> {
            let kind = if kind == SFlag::S_IFBLK { 'b' } else { 'c' };
            let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
            self.record(format!("mknod {} {kind} {major}:{minor} {perm:o}", self.show(path)))
        }

        fn symlink(&self, dest: &Path, link: &Path) -> io::Result<()> {
            self.record(format!("symlink {} -> {}", self.show(link), dest.display()))
        }

        fn setns(&self, fd: BorrowedFd<'_>, nstype: CloneFlags) -> io::Result<()> {
            use std::os::fd::AsRawFd;
            let raw = fd.as_raw_fd();
            let shown = self.opened.borrow().get(&raw).cloned().unwrap_or_else(|| raw.to_string());
            self.record(format!("setns {shown} {nstype:?}"))
        }

        fn open_namespace(&self, path: &Path) -> io::Result<OwnedFd> {
            use std::os::fd::AsRawFd;
            self.record(format!("open {}", path.display()))?;
            // A real fd (of /dev/null) stands for the namespace, so that setns shows its path.
            let fd: OwnedFd = std::fs::File::open("/dev/null")?.into();
            self.opened.borrow_mut().insert(fd.as_raw_fd(), path.display().to_string());
            Ok(fd)
        }

        fn unshare(&self, flags: CloneFlags) -> io::Result<()> {
            self.record(format!("unshare {flags:?}"))
        }

        fn sethostname(&self, name: &str) -> io::Result<()> {
            self.record(format!("sethostname {name}"))
        }

        fn setdomainname(&self, name: &str) -> io::Result<()> {
            self.record(format!("setdomainname {name}"))
        }

        fn set_user_and_caps(
            &self,
            caps: &HashSet<Capability>,
            user: &ResolvedUser,
        ) -> Result<(), CredError> {
            let mut names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
            names.sort();
            self.record(format!(
                "set_user {}:{} {:?} caps {}",
                user.uid,
                user.gid,
                user.groups,
                names.join(",")
            ))
            .map_err(|e| CredError {
                step: "setuid".into(),
                source: CredCause::Sys(nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))),
            })
        }

        fn mkdir(&self, path: &Path) -> io::Result<()> {
            self.record(format!("mkdir {}", self.show(path)))
        }

        fn mkdir_all(&self, path: &Path) -> io::Result<()> {
            self.record(format!("mkdir -p {}", self.show(path)))
        }

        fn rmdir(&self, path: &Path) -> io::Result<()> {
            self.record(format!("rmdir {}", self.show(path)))
        }

        fn exists(&self, path: &Path) -> bool {
            self.files.borrow().contains_key(path)
        }

        fn read(&self, path: &Path) -> io::Result<String> {
            self.files.borrow().get(path).cloned().ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))
        }

        fn write(&self, path: &Path, data: &str) -> io::Result<()> {
            self.record(format!("write {} {data}", self.show(path)))?;
            self.files.borrow_mut().insert(path.to_path_buf(), data.to_string());
            Ok(())
        }

        fn write_each(&self, path: &Path, records: &[String]) -> io::Result<()> {
            for r in records {
                self.record(format!("write {} {r}", self.show(path)))?;
            }
            Ok(())
        }

        fn attach_device_filter(&self, dir: &Path, rules: &[DeviceRule]) -> io::Result<()> {
            self.record(format!("attach device filter {} {:?}", self.show(dir), rules))
        }
    }
}
