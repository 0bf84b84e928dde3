//! Running a process in a running container (`exec`, and the shim's healthchecks): join its
//! cgroup and namespaces, then fork (a pid namespace applies to children only) and exec with
//! the container's user, environment, capabilities and seccomp filter.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::path::Path;

use caps::Capability;
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::unistd::{ForkResult, dup2_stderr, dup2_stdin, dup2_stdout, execve, fork};

use super::cgroups::Cgroup;
use super::process::{find_program, process_env, resolve_user};
use super::spec::ContainerSpec;
use super::syscall::{Linux, Syscall};

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
    // Realtime signals too (nix's `Signal` has none); libc refuses its own 32 and 33.
    for sig in (1..=super::signal::SIGRTMAX).filter(|s| *s != libc::SIGKILL && *s != libc::SIGSTOP) {
        // SAFETY: installing the default disposition has no handler to be unsafe about.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn fail(message: &str) -> ! {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "berth exec: {message}");
    // SAFETY: _exit in a forked child leaves the parent's state alone.
    unsafe { libc::_exit(126) }
}

/// The namespaces a process joining a container enters, in this order: the cgroup namespace
/// right after the cgroup (so that it is rooted there), the mount namespace last (its `/proc`
/// is the container's).
const JOINED: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Why joining a container failed; keeps the errno.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JoinError {
    /// Its namespace files could not be opened: the process ended.
    #[error("container process {pid} is gone: {source}")]
    Gone {
        /// The container's first process.
        pid: i32,
        /// The failed open.
        #[source]
        source: std::io::Error,
    },
    /// Its cgroup could not be joined.
    #[error(transparent)]
    Cgroup(#[from] super::cgroups::CgroupError),
    /// `setns` into one of its namespaces failed.
    #[error("join {namespace} namespace: {source}")]
    Setns {
        /// The namespace (`net`, `pid`, ...).
        namespace: &'static str,
        /// The failed call.
        #[source]
        source: std::io::Error,
    },
}

/// Joins container `id`, whose first process is `pid`: opens all its namespace files first
/// (once in its mount namespace, the host's `/proc/PID` is out of sight), joins its cgroup,
/// then enters each namespace of [`JOINED`]. The pid namespace applies to children only: the
/// caller forks next. An error says which step failed.
pub(crate) fn join_container(sys: &dyn Syscall, id: &str, pid: i32) -> Result<(), JoinError> {
    let mut namespaces = Vec::new();
    for (name, flag) in JOINED {
        match sys.open_namespace(Path::new(&format!("/proc/{pid}/ns/{name}"))) {
            Ok(fd) => namespaces.push((name, flag, fd)),
            Err(source) => return Err(JoinError::Gone { pid, source }),
        }
    }
    Cgroup::for_container(id).join_self(sys)?;
    for (name, flag, fd) in &namespaces {
        sys.setns(fd.as_fd(), *flag).map_err(|source| JoinError::Setns { namespace: name, source })?;
    }
    Ok(())
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
    if let Err(e) = join_container(&Linux, &spec.id, pid) {
        fail(&e.to_string());
    }
    // SAFETY: single-threaded.
    match unsafe { fork() } {
        // Decoded by hand: nix refuses the status of a realtime signal.
        Ok(ForkResult::Parent { child }) => loop {
            match super::signal::wait_child(child.as_raw(), false) {
                Some(super::signal::Reaped { code: Some(code), .. }) => std::process::exit(code),
                Some(_) => continue,
                None => fail(&format!("wait: {}", std::io::Error::last_os_error())),
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
    Linux.set_user_and_caps(caps, user)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::Recorder;

    #[test]
    fn join_opens_every_namespace_then_joins_the_cgroup_then_each_in_order() {
        let sys = Recorder::default();
        join_container(&sys, "c1", 42).unwrap();
        let calls = sys.calls();
        let opens: Vec<&String> = calls.iter().filter(|c| c.starts_with("open ")).collect();
        assert_eq!(opens.len(), 6, "{calls:#?}");
        let first_write = calls.iter().position(|c| !c.starts_with("open ")).unwrap();
        assert!(calls[..first_write].iter().all(|c| c.starts_with("open ")), "{calls:#?}");
        assert!(calls[first_write].contains("c1"), "the cgroup is joined before any namespace: {calls:#?}");
        let joins: Vec<String> = sys.calls_starting("setns");
        let expected: Vec<String> =
            JOINED.iter().map(|(name, flag)| format!("setns /proc/42/ns/{name} {flag:?}")).collect();
        assert_eq!(joins, expected);
    }

    #[test]
    fn a_gone_process_or_a_refused_namespace_is_named() {
        let sys =
            Recorder { fail_on: Some(("open /proc/42/ns/net".into(), libc::ENOENT)), ..Recorder::default() };
        let e = join_container(&sys, "c1", 42).unwrap_err();
        assert!(matches!(&e, JoinError::Gone { pid: 42, source } if source.raw_os_error() == Some(libc::ENOENT)));
        assert!(e.to_string().starts_with("container process 42 is gone"), "{e}");
        assert!(sys.calls_starting("setns").is_empty());
        let sys = Recorder { fail_on: Some(("CLONE_NEWPID".into(), libc::EPERM)), ..Recorder::default() };
        let e = join_container(&sys, "c1", 42).unwrap_err();
        assert!(
            matches!(&e, JoinError::Setns { namespace: "pid", source } if source.raw_os_error() == Some(libc::EPERM))
        );
        assert!(e.to_string().starts_with("join pid namespace"), "{e}");
        assert_eq!(sys.calls_starting("setns").len(), 4);
    }
}
