//! The container's first process, from the clone to execve (DESIGN.md "How a container is
//! made"). It runs in a copy of the single-threaded shim, so allocating is safe; every failure
//! is written to the error pipe as an [`InitError`] in JSON (close-on-exec, so the shim reads
//! EOF when execve succeeds) and ends the process with status 127.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};
use std::path::PathBuf;

use caps::Capability;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{ForkResult, close, dup2_stderr, dup2_stdin, dup2_stdout, execve, fork, pipe2, read};
use seccompiler::BpfProgram;
use serde::{Deserialize, Serialize};

use super::cgroups::Cgroup;
use super::process::{find_program, process_env, resolve_user};
use super::rootfs::{self, RootfsDirs};
use super::spec::ContainerSpec;
use super::syscall::{Linux, Syscall, errno_of};

/// Why the container's first process failed: the step, what went wrong, and the errno when a
/// call gave one. Shown as `step: message` (or the message alone), as the text it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct InitError {
    /// The step that failed (`rootfs`, `join cgroup`, `exec "/app"`), if it has a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// What went wrong.
    pub message: String,
    /// The errno, when a system call failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
}

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.step {
            Some(step) => write!(f, "{step}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl InitError {
    /// Step `step` failed with `error`.
    pub fn at(step: impl Into<String>, error: &(dyn std::error::Error + 'static)) -> InitError {
        InitError { step: Some(step.into()), message: error.to_string(), errno: errno_of(error) }
    }

    /// A failure that is not a call's.
    pub fn message(message: impl Into<String>) -> InitError {
        InitError { step: None, message: message.into(), errno: None }
    }

    /// The error as the shim reads it from the error pipe; text that is not one (a process
    /// that wrote something else there) is kept as the message.
    pub fn decode(bytes: &[u8]) -> InitError {
        serde_json::from_slice(bytes).unwrap_or_else(|_| InitError::message(String::from_utf8_lossy(bytes)))
    }
}

/// Everything the child needs, prepared by the shim before the clone.
pub(crate) struct InitContext<'a> {
    pub spec: &'a ContainerSpec,
    pub dirs: &'a RootfsDirs,
    pub caps: &'a HashSet<Capability>,
    pub seccomp: &'a [BpfProgram],
    /// Network namespace to join.
    pub netns: Option<RawFd>,
    /// IPC namespace to join.
    pub ipcns: Option<RawFd>,
    /// The container's cgroup, which the child joins first.
    pub cgroup: &'a Cgroup,
    /// Errors go here; close-on-exec.
    pub error_write: RawFd,
    /// The shim's go-ahead for `execve` (see `handoff::release`); close-on-exec.
    pub release: RawFd,
    /// The child's stdio.
    pub stdio: [RawFd; 3],
    /// The pty slave to make the controlling terminal and `/dev/console`.
    pub console: Option<PathBuf>,
    /// The shim's own fds that the child must not keep.
    pub close: Vec<RawFd>,
}

fn die(error_write: RawFd, error: InitError) -> ! {
    // SAFETY: the fd is the error pipe the shim gave us and stays open until we exit.
    let mut pipe = unsafe { fs::File::from_raw_fd(error_write) };
    // One write: the shim reads to EOF, which comes at our exit.
    let _ = pipe.write_all(&serde_json::to_vec(&error).unwrap_or_default());
    std::mem::forget(pipe);
    // SAFETY: _exit ends the process without running the shim's atexit handlers or destructors.
    unsafe { libc::_exit(127) }
}

macro_rules! step {
    ($ctx:expr, $what:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => die($ctx.error_write, InitError::at($what, &err)),
        }
    };
}

/// The child's whole life: never returns.
pub(crate) fn container_main(ctx: &InitContext<'_>) -> ! {
    let spec = ctx.spec;
    // Not dumpable: nothing in the container may open /proc/1/exe (our binary) before execve
    // replaces it (CVE-2019-5736).
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let _ = nix::sys::prctl::set_name(c"init");
    super::exec::reset_signals();
    for fd in &ctx.close {
        let _ = close(*fd);
    }
    // The cgroup comes first, so that everything below is accounted and limited. The child
    // joins by itself (see join_self: no wait for the shim, no global lock).
    let sys: &dyn Syscall = &Linux;
    step!(ctx, "join cgroup", ctx.cgroup.join_self(sys));
    if let Some(adj) = spec.resources.oom_score_adj {
        // The host's /proc is still mounted here; /proc/self is this process.
        step!(ctx, "oom_score_adj", fs::write("/proc/self/oom_score_adj", adj.to_string()));
    }

    if let Some(fd) = ctx.netns {
        // SAFETY: the shim opened this namespace fd and keeps it open across the clone.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        step!(ctx, "join network namespace", sys.setns(fd, CloneFlags::CLONE_NEWNET));
    }
    if let Some(fd) = ctx.ipcns {
        // SAFETY: as above.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        step!(ctx, "join ipc namespace", sys.setns(fd, CloneFlags::CLONE_NEWIPC));
    }
    // A cgroup namespace made now is rooted at the container's own cgroup.
    step!(ctx, "new cgroup namespace", sys.unshare(CloneFlags::CLONE_NEWCGROUP));
    if !spec.namespaces.uts_host {
        step!(ctx, "set hostname", sys.sethostname(&spec.hostname));
        if let Some(domain) = &spec.domainname {
            step!(ctx, "set domainname", sys.setdomainname(domain));
        }
    }

    // Open the terminal before the host's /dev/pts disappears with the old root.
    let console_fd = ctx
        .console
        .as_ref()
        .map(|path| step!(ctx, "open terminal", fs::OpenOptions::new().read(true).write(true).open(path)));

    step!(ctx, "rootfs", rootfs::build(sys, spec, ctx.dirs, ctx.console.as_deref(), ctx.cgroup));
    step!(ctx, "sysctls", rootfs::write_sysctls(sys, &spec.sysctls));
    if !spec.security.privileged {
        step!(ctx, "masked paths", rootfs::protect_paths(sys, std::path::Path::new("/")));
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let user = step!(
        ctx,
        "user",
        resolve_user(spec.process.user.as_deref(), &spec.process.group_add, &passwd, &group)
    );
    step!(ctx, "working dir", rootfs::ensure_workdir(&spec.process.cwd, user.uid, user.gid));
    if spec.rootfs.read_only {
        step!(ctx, "read-only rootfs", rootfs::make_root_readonly(sys));
    }
    let cwd = if spec.process.cwd.is_empty() { "/" } else { spec.process.cwd.as_str() };
    step!(ctx, "chdir", nix::unistd::chdir(cwd));
    step!(ctx, "ulimits", super::limits::apply(&spec.ulimits));

    // stdio, session and controlling terminal.
    step!(ctx, "setsid", nix::unistd::setsid());
    if let Some(file) = &console_fd {
        use std::os::fd::AsFd;
        let fd = file.as_fd();
        step!(ctx, "stdin", dup2_stdin(fd));
        step!(ctx, "stdout", dup2_stdout(fd));
        step!(ctx, "stderr", dup2_stderr(fd));
        // SAFETY: TIOCSCTTY on our own terminal fd (now stdin) with an int argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
            die(ctx.error_write, InitError::at("controlling terminal", &std::io::Error::last_os_error()));
        }
    } else {
        // SAFETY: the stdio fds were opened by the shim for this child.
        let [i, o, e] = ctx.stdio.map(|fd| unsafe { BorrowedFd::borrow_raw(fd) });
        step!(ctx, "stdin", dup2_stdin(i));
        step!(ctx, "stdout", dup2_stdout(o));
        step!(ctx, "stderr", dup2_stderr(e));
    }
    drop(console_fd);
    // Everything above stdio is closed at execve (the error pipe is close-on-exec already).
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };

    let env = process_env(&spec.process.env, &spec.hostname, &user.home, spec.process.tty);
    if !spec.security.no_new_privileges {
        // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while we have it.
        step!(ctx, "seccomp", super::seccomp::install(ctx.seccomp));
    }
    step!(ctx, "capabilities", sys.set_user_and_caps(ctx.caps, &user));
    if spec.security.no_new_privileges {
        step!(ctx, "no_new_privs", nix::sys::prctl::set_no_new_privs());
        step!(ctx, "seccomp", super::seccomp::install(ctx.seccomp));
    }

    let Some(program) = spec.process.args.first() else {
        die(
            ctx.error_write,
            InitError::message("no command given: the image has no Cmd or Entrypoint and the service none"),
        );
    };
    let Some(path) = find_program(program, &env) else {
        die(
            ctx.error_write,
            InitError {
                step: Some(format!("exec: {program:?}")),
                message: "executable file not found in $PATH".into(),
                errno: Some(libc::ENOENT),
            },
        );
    };
    // Everything is ready; the user's command runs only with the shim's go-ahead, which says
    // the container is on record.
    if !super::handoff::wait_for_release(ctx.release) {
        die(ctx.error_write, InitError::message("the start was called off"));
    }
    // `create` refuses NUL bytes; a record changed since is refused here rather than run
    // with a cut or empty argument.
    let to_c = |s: &String| CString::new(s.as_str()).ok();
    let (Some(argv), Some(envp), Ok(path)) = (
        spec.process.args.iter().map(to_c).collect::<Option<Vec<CString>>>(),
        env.iter().map(to_c).collect::<Option<Vec<CString>>>(),
        CString::new(path),
    ) else {
        die(ctx.error_write, InitError::message("the command or environment contains a NUL byte"));
    };
    if spec.process.init {
        run_init(ctx.error_write, &path, &argv, &envp);
    }
    let err = execve(&path, &argv, &envp).unwrap_err();
    die(ctx.error_write, InitError::at(format!("exec {program:?}"), &err));
}

/// berth's init (`init: true`): pid 1 that starts the command, forwards every signal to it,
/// reaps every zombie, and exits with the command's status (128+n for a signal, like tini).
fn run_init(error_write: RawFd, path: &CString, argv: &[CString], envp: &[CString]) -> ! {
    let all = SigSet::all();
    let mut old = SigSet::empty();
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&all), Some(&mut old));
    let (started_read, started_write) = match pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => die(error_write, InitError::at("init: pipe", &e)),
    };
    // SAFETY: this process is single-threaded.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
            let err = execve(path, argv, envp).unwrap_err();
            die(error_write, InitError::at(format!("exec {:?}", argv[0]), &err));
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => die(error_write, InitError::at("init: fork", &e)),
    };
    drop(started_write);
    // EOF once the command has exec'd (or died): then the shim may see our error pipe close.
    let mut buf = [0u8; 1];
    let _ = read(&started_read, &mut buf);
    drop(started_read);
    // Keep nothing of the shim's: the error pipe (the shim waits for its EOF) and any fd that
    // reached us are closed; pid 1 needs only signals and waitpid from here.
    let _ = close(error_write);
    // SAFETY: closes our own fds from 3 up; nothing below uses them.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // Signals and waits by number: nix's `SigSet::wait` panics on a realtime signal and its
    // waitpid refuses a status of one, and both must reach the command or end it.
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait reads the set and writes the signal's number into `sig`.
        if unsafe { libc::sigwait(all.as_ref(), &mut sig) } != 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            let _ = super::signal::send(child.as_raw(), sig);
            continue;
        }
        while let Some(reaped) = super::signal::wait_child(-1, true) {
            if reaped.pid == child.as_raw()
                && let Some(code) = reaped.code
            {
                std::process::exit(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_keeps_its_errno_and_reads_as_before() {
        let e = InitError::at("join network namespace", &nix::errno::Errno::EINVAL);
        assert_eq!(e.errno, Some(libc::EINVAL));
        assert_eq!(e.to_string(), format!("join network namespace: {}", nix::errno::Errno::EINVAL));
        // Through the pipe and back.
        assert_eq!(InitError::decode(&serde_json::to_vec(&e).unwrap()), e);
        // A rootfs step: the errno under the rootfs error's path.
        let rootfs = rootfs::RootfsError {
            what: "mount overlay",
            path: "/r".into(),
            source: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        let e = InitError::at("rootfs", &rootfs);
        assert_eq!(e.errno, Some(libc::EPERM));
        assert_eq!(e.to_string(), format!("rootfs: mount overlay /r: {}", rootfs.source));
        let e = InitError::message("the start was called off");
        assert_eq!(e.to_string(), "the start was called off");
        assert_eq!(InitError::decode(b"not json"), InitError::message("not json"));
    }
}
