//! Running a process in a running container (`exec`, and the shim's healthchecks): join its
//! cgroup and namespaces, then fork (a pid namespace applies to children only) and exec with
//! the container's user, environment, capabilities and seccomp filter.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

use caps::Capability;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, execve, fork};

use super::cgroups::Cgroup;
use super::process::{find_program, process_env, resolve_user};
use super::spec::ContainerSpec;
use super::syscall::Linux;

/// A process to run in a running container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSpec {
    /// argv.
    pub args: Vec<String>,
    /// Extra `KEY=value` entries, over the container's.
    pub env: Vec<String>,
    /// User (the container's when absent).
    pub user: Option<String>,
    /// Working dir (the container's when absent).
    pub cwd: Option<String>,
    /// All capabilities and no seccomp (`exec --privileged`).
    pub privileged: bool,
}

/// Puts every signal back to its default and unblocks all: a Rust program ignores SIGPIPE and
/// the shim blocks what it reads from a signalfd, and both would pass through execve.
pub(crate) fn reset_signals() {
    for sig in Signal::iterator() {
        if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
            // SAFETY: installing the default disposition has no handler to be unsafe about.
            let _ = unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn fail(message: &str) -> ! {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "berth exec: {message}");
    // SAFETY: _exit in a forked child leaves the parent's state alone.
    unsafe { libc::_exit(126) }
}

/// In a freshly forked, single-threaded child: joins container `pid` (cgroup, then ipc, uts,
/// net, pid, mount) and runs `exec` there, with `stdio` as its fds 0-2 when given. Exits with
/// the process's status (128+n for signal n). Never returns.
pub(crate) fn join_and_exec(
    spec: &ContainerSpec,
    caps: &HashSet<Capability>,
    seccomp: &[seccompiler::BpfProgram],
    pid: i32,
    exec: &ExecSpec,
    stdio: Option<[RawFd; 3]>,
) -> ! {
    // The joining process must not be dumpable, or the container could open our binary through
    // /proc/PID/exe (CVE-2019-5736).
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if let Some([i, o, e]) = stdio {
        // SAFETY: the caller opened these for us.
        let (i, o, e) =
            unsafe { (BorrowedFd::borrow_raw(i), BorrowedFd::borrow_raw(o), BorrowedFd::borrow_raw(e)) };
        let _ = (dup2_stdin(i), dup2_stdout(o), dup2_stderr(e));
    }
    let mut namespaces = Vec::new();
    for (name, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        match File::open(format!("/proc/{pid}/ns/{name}")) {
            Ok(f) => namespaces.push((name, flag, f)),
            Err(e) => fail(&format!("container process {pid} is gone: {e}")),
        }
    }
    if let Err(e) = Cgroup::for_container(&spec.id).join_self(&Linux) {
        fail(&e.to_string());
    }
    for (name, flag, file) in &namespaces {
        if let Err(e) = setns(file.as_fd(), *flag) {
            fail(&format!("join {name} namespace: {e}"));
        }
    }
    drop(namespaces);
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
                Ok(WaitStatus::Signaled(_, sig, _)) => std::process::exit(128 + sig as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => fail(&format!("wait: {e}")),
            }
        },
        Ok(ForkResult::Child) => {}
        Err(e) => fail(&format!("fork: {e}")),
    }
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    reset_signals();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user_spec = exec.user.as_deref().or(spec.process.user.as_deref());
    let group_add = if exec.user.is_some() { &[][..] } else { &spec.process.group_add[..] };
    let user = match resolve_user(user_spec, group_add, &passwd, &group) {
        Ok(u) => u,
        Err(e) => fail(&e.to_string()),
    };
    let cwd = exec.cwd.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| spec.process.cwd.clone());
    let cwd = if cwd.is_empty() { "/".to_string() } else { cwd };
    if let Err(e) = nix::unistd::chdir(cwd.as_str()) {
        fail(&format!("chdir {cwd}: {e}"));
    }
    let mut env = spec.process.env.clone();
    for extra in &exec.env {
        let key = extra.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(extra.clone());
    }
    let env = process_env(&env, &spec.hostname, &user.home, false);
    let all_caps = super::capabilities::host_capabilities();
    let caps = if exec.privileged { &all_caps } else { caps };
    let seccomp = if exec.privileged { &[][..] } else { seccomp };
    if !spec.security.no_new_privileges
        && let Err(e) = super::seccomp::install(seccomp)
    {
        fail(&e.to_string());
    }
    if let Err(e) = set_user_and_caps(caps, &user) {
        fail(&e.to_string());
    }
    if spec.security.no_new_privileges {
        let _ = nix::sys::prctl::set_no_new_privs();
        if let Err(e) = super::seccomp::install(seccomp) {
            fail(&e.to_string());
        }
    }
    // SAFETY: marks our fds above stdio close-on-exec; touches nothing else.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    let Some(program) = exec.args.first() else { fail("no command given") };
    let Some(path) = find_program(program, &env) else {
        let mut err = std::io::stderr();
        let _ = writeln!(err, "berth exec: {program:?}: executable file not found in $PATH");
        // SAFETY: as above.
        unsafe { libc::_exit(127) }
    };
    let to_c = |s: &String| CString::new(s.as_str()).ok();
    let (Some(argv), Some(envp), Ok(path)) = (
        exec.args.iter().map(to_c).collect::<Option<Vec<CString>>>(),
        env.iter().map(to_c).collect::<Option<Vec<CString>>>(),
        CString::new(path),
    ) else {
        fail("the command or environment contains a NUL byte")
    };
    let err = execve(&path, &argv, &envp).unwrap_err();
    let mut out = std::io::stderr();
    let _ = writeln!(out, "berth exec: {program}: {err}");
    // SAFETY: as above.
    unsafe { libc::_exit(126) }
}

/// Changes to `user` and keeps exactly `caps`: bounding set first (needs CAP_SETPCAP), then
/// ids with keep-caps, then inheritable, effective and permitted; ambient stays empty.
pub(crate) fn set_user_and_caps(
    caps: &HashSet<Capability>,
    user: &super::process::ResolvedUser,
) -> Result<(), super::syscall::CredError> {
    use super::syscall::Syscall;
    Linux.set_user_and_caps(caps, user)
}
