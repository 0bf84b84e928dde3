//! `ADD` of a git repository, as BuildKit's `source/git` does it, with the host's `git`:
//! the ref is resolved to a commit with `git ls-remote` (that commit, not the ref, is what the
//! step's cache key holds), and only on a cache miss is the commit fetched (shallow) and
//! checked out.
//!
//! git runs with nothing of the host's configuration: no system or global config
//! (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`), `HOME` a private empty dir, no
//! terminal prompts (`GIT_TERMINAL_PROMPT=0`, ssh in batch mode with `-F /dev/null`), local
//! repositories refused as submodules (`protocol.file.allow=user`), and only `PATH`, the proxy
//! variables and (for ssh remotes, when the build was given `--ssh default`) `SSH_AUTH_SOCK`
//! from the environment.
//!
//! Every git command runs in a process group of its own, under a time limit
//! ([`DEFAULT_TIMEOUT`], or `BERTH_GIT_TIMEOUT` seconds) and the build's cancel flag: past the
//! limit, or once the build is cancelled (Ctrl-C, SIGTERM), the whole group (git and the ssh or
//! `git-remote-https` it started) is killed, as a cancelled `RUN` step's container is.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::remote::{GitRef, RemoteError};

/// What a ref resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The commit whose tree is taken (an annotated tag peeled).
    pub commit: String,
    /// What is fetched: the full ref (`refs/heads/main`, `refs/tags/v1`) or the commit itself.
    pub fetch: String,
}

impl Resolved {
    /// What a step's cache key holds of this source: the commit and everything that changes
    /// the files taken from it (BuildKit's `shaToCacheKey`).
    pub fn cache_identity(&self, g: &GitRef) -> Value {
        let keep = g.keep_git_dir.unwrap_or(false);
        json!({
            "commit": self.commit,
            "keep_git_dir": keep,
            // A kept .git names the ref it was fetched by.
            "ref": if keep { self.fetch.as_str() } else { "" },
            "subdir": g.subdir,
            "submodules": g.submodules.unwrap_or(true),
            "mtime": if g.mtime_commit { "commit" } else { "checkout" },
        })
    }
}

/// Whether `s` is a full commit id (sha1 or sha256).
pub fn is_commit_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// BuildKit's choice among `git ls-remote REMOTE REF REF^{}` lines: the exact ref, else the
/// branch, else the tag (an annotated tag peeled to its commit). `None` when nothing matches.
pub fn pick_ref(ls_remote: &str, reference: &str) -> Option<Resolved> {
    let bare = reference.strip_prefix("refs/").unwrap_or(reference);
    let partial = format!("refs/{bare}");
    let head = format!("refs/heads/{}", reference.strip_prefix("refs/heads/").unwrap_or(reference));
    let tag = format!("refs/tags/{}", reference.strip_prefix("refs/tags/").unwrap_or(reference));
    let peeled = format!("{tag}^{{}}");
    let (mut exact, mut branch, mut tagged, mut annotated) = (None, None, None, None);
    for line in ls_remote.lines() {
        let Some((sha, name)) = line.split_once('\t') else { continue };
        let sha = sha.trim().to_string();
        if name == partial {
            exact = Some((sha, name.to_string()));
        } else if name == head {
            branch = Some((sha, name.to_string()));
        } else if name == tag {
            tagged = Some((sha, name.to_string()));
        } else if name == peeled {
            annotated = Some(sha);
        }
    }
    if let Some((sha, name)) = exact.or(branch) {
        // An exact or branch match wins; a peeled tag of the same name does not apply then,
        // unless the exact match is that tag.
        let commit = if name == tag { annotated.unwrap_or_else(|| sha.clone()) } else { sha };
        return Some(Resolved { commit, fetch: name });
    }
    let (sha, name) = tagged?;
    Some(Resolved { commit: annotated.unwrap_or(sha), fetch: name })
}

/// The default branch from `git ls-remote --symref REMOTE HEAD` (`ref: refs/heads/main\tHEAD`).
pub fn default_branch(ls_remote: &str) -> Option<String> {
    ls_remote.lines().find_map(|l| {
        let (target, name) = l.strip_prefix("ref:")?.split_once('\t')?;
        (name.trim() == "HEAD").then(|| target.trim().to_string())
    })
}

/// `remote` without a password, for messages and a kept `.git`'s `origin`.
fn redact(remote: &str) -> String {
    super::remote::redact(remote)
}

/// `?fetch-by-commit`: the checksum is the commit, trusted without `ls-remote` (nothing is
/// asked of the remote until the step runs and fetches that commit); the ref, when given,
/// is only the name a kept `.git` gives it (`refs/heads/` before an unqualified one).
/// `None` without the flag, or when the ref is itself a commit (which needs no remote
/// either). BuildKit's rules and words.
pub fn by_commit(g: &GitRef, checksum: Option<&str>) -> Result<Option<Resolved>, RemoteError> {
    if !g.fetch_by_commit || is_commit_sha(&g.reference) {
        return Ok(None);
    }
    let Some(c) = checksum else {
        return Err(RemoteError::Git("fetch-by-commit requires a checksum or a commit SHA ref".into()));
    };
    if !is_commit_sha(c) {
        return Err(RemoteError::Git(format!("fetch-by-commit requires a full commit SHA checksum, got {c:?}")));
    }
    let fetch = match g.reference.as_str() {
        "" => c.to_string(),
        r if r.starts_with("refs/") => r.to_string(),
        r => format!("refs/heads/{r}"),
    };
    Ok(Some(Resolved { commit: c.to_string(), fetch }))
}

/// How long one git command may run when `BERTH_GIT_TIMEOUT` does not say: a shallow fetch of
/// a big repository over a slow link fits, a server that stopped answering does not hang the
/// build for ever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The time limit of one git command: `BERTH_GIT_TIMEOUT` (whole seconds, more than 0) or
/// [`DEFAULT_TIMEOUT`].
pub fn timeout_from_env() -> Duration {
    std::env::var("BERTH_GIT_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// Runs git with a private, empty configuration (see the module's rules), under a time limit
/// and the build's cancel flag.
pub struct Git<'a> {
    home: PathBuf,
    ssh_auth_sock: Option<PathBuf>,
    timeout: Duration,
    cancel: Option<&'a AtomicBool>,
}

impl<'a> Git<'a> {
    /// A runner whose `HOME` is a new empty dir under `work`; `ssh_auth_sock` is given to ssh
    /// remotes. Its time limit is [`timeout_from_env`]'s; nothing cancels it.
    pub fn new(work: &Path, ssh_auth_sock: Option<PathBuf>) -> Result<Git<'a>, RemoteError> {
        let home = work.join("home");
        fs::create_dir_all(&home)
            .map_err(|source| RemoteError::Io { path: home.display().to_string(), source })?;
        Ok(Git { home, ssh_auth_sock, timeout: timeout_from_env(), cancel: None })
    }

    /// Stops each git command after `timeout` (the unit tests' short limit; berth itself
    /// takes [`timeout_from_env`]'s).
    #[cfg(test)]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Stops git (and fails with [`RemoteError::Cancelled`]) once `flag` is set.
    pub fn with_cancel(mut self, flag: Option<&'a AtomicBool>) -> Self {
        self.cancel = flag;
        self
    }

    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
    }

    fn run(&self, dir: Option<&Path>, args: &[&str]) -> Result<String, RemoteError> {
        let mut cmd = Command::new("git");
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_SSH_COMMAND", "ssh -F /dev/null -o BatchMode=yes -o StrictHostKeyChecking=no")
            .env("LC_ALL", "C");
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "NO_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "no_proxy",
            "all_proxy",
        ] {
            if let Some(val) = std::env::var_os(v) {
                cmd.env(v, val);
            }
        }
        if let Some(s) = &self.ssh_auth_sock {
            cmd.env("SSH_AUTH_SOCK", s);
        }
        cmd.args(["-c", "protocol.file.allow=user", "-c", "advice.detachedHead=false"]);
        if let Some(d) = dir {
            cmd.arg("-C").arg(d);
        }
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // A group of its own, so that a stop reaches the helpers git starts (ssh,
        // git-remote-https), and a terminal's Ctrl-C reaches berth, which stops them.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let what = args.iter().find(|a| !a.starts_with('-')).copied().unwrap_or("git");
        if self.cancelled() {
            return Err(RemoteError::Cancelled);
        }
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                RemoteError::Git("git is not installed (ADD of a git source runs the host's git)".into())
            } else {
                RemoteError::Git(format!("git: {e}"))
            }
        })?;
        let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut out = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut out);
                }
                out
            })
        };
        let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(5);
        let stopped = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) => {}
                Err(e) => break Err(RemoteError::Git(format!("git {what}: {e}"))),
            }
            let why = if self.cancelled() {
                Some(RemoteError::Cancelled)
            } else if Instant::now() >= deadline {
                Some(RemoteError::GitTimeout { command: what.to_string(), seconds: self.timeout.as_secs() })
            } else {
                None
            };
            if let Some(why) = why {
                // The group's id is git's pid (process_group(0)).
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break Err(why);
            }
            // Short pauses first: most git commands here end in milliseconds.
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        };
        // The pipes close once the group is gone (or done).
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        let status = stopped?;
        if !status.success() {
            let err = String::from_utf8_lossy(&err);
            let lines: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let tail = lines[lines.len().saturating_sub(3)..].join("; ");
            return Err(RemoteError::Git(format!("git {what} failed: {tail}")));
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The commit `g` names now (one `ls-remote`; nothing is fetched), checked against its
    /// checksum. With `?fetch-by-commit` the checksum is the commit, trusted without asking
    /// the remote (BuildKit's rules and words).
    pub fn resolve(&self, g: &GitRef) -> Result<Resolved, RemoteError> {
        if let Some(c) = &g.checksum
            && (c.is_empty() || !c.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(RemoteError::Git(format!("invalid checksum {c} for Git URL, expected hex commit hash")));
        }
        let checksum = g.checksum.as_ref().map(|c| c.to_ascii_lowercase());
        if let Some(r) = by_commit(g, checksum.as_deref())? {
            return Ok(r);
        }
        let reference = if g.reference.is_empty() {
            let out = self.run(None, &["ls-remote", "--symref", "--", &g.remote, "HEAD"])?;
            default_branch(&out)
                .ok_or_else(|| RemoteError::Git("the repository has no default branch".into()))?
        } else {
            g.reference.clone()
        };
        // What ls-remote lists for the ref: for an annotated tag the tag object, which a
        // checksum may name as well as the commit (BuildKit).
        let mut listed = None;
        let r = if is_commit_sha(&reference) {
            Resolved { commit: reference.clone(), fetch: reference.clone() }
        } else {
            let peeled = format!("{reference}^{{}}");
            let out = self.run(None, &["ls-remote", "--", &g.remote, &reference, &peeled])?;
            let r = pick_ref(&out, &reference)
                .ok_or_else(|| RemoteError::Git(format!("the repository does not contain ref {reference}")))?;
            listed = out.lines().find_map(|l| {
                let (sha, name) = l.split_once('\t')?;
                (name == r.fetch).then(|| sha.trim().to_string())
            });
            r
        };
        if !is_commit_sha(&r.commit) {
            return Err(RemoteError::Git(format!("invalid commit {:?} for {reference}", r.commit)));
        }
        if let Some(c) = &checksum
            && !r.commit.starts_with(c.as_str())
            && !listed.as_deref().is_some_and(|o| o.starts_with(c.as_str()))
        {
            return Err(RemoteError::Git(format!(
                "{reference}: expected checksum to match {c}, got {}",
                r.commit
            )));
        }
        Ok(r)
    }

    /// Fetches `r` of `g` into the new repository `dest` and checks it out; returns the dir
    /// whose contents the step takes (`dest` or its subdir). Without `keep_git_dir` the
    /// `.git` dir is gone afterwards.
    pub fn checkout(&self, g: &GitRef, r: &Resolved, dest: &Path) -> Result<PathBuf, RemoteError> {
        let d = Some(dest);
        let dest_str = dest.to_string_lossy();
        self.run(None, &["-c", "init.defaultBranch=master", "init", "-q", &dest_str])?;
        let by_commit = g.fetch_by_commit && r.fetch != r.commit;
        let spec = if by_commit || is_commit_sha(&r.fetch) {
            r.commit.clone()
        } else {
            format!("+{0}:{0}", r.fetch)
        };
        let fetched = self.run(d, &["fetch", "-q", "--depth=1", "--no-tags", "--", &g.remote, &spec]);
        // Only a refusal is worth the fallback: not a stop (cancel, time limit). Fetching by
        // commit assumes a server that gives commits by id (BuildKit: no fallback).
        if matches!(fetched, Err(RemoteError::Git(_))) && is_commit_sha(&r.fetch) && !g.fetch_by_commit {
            // A server that does not give commits by id: everything, then the commit.
            self.run(d, &["fetch", "-q", "--tags", "--", &g.remote, "+refs/heads/*:refs/remotes/origin/*"])?;
        } else {
            fetched?;
        }
        let got = self.run(d, &["rev-parse", "--verify", "-q", &format!("{}^{{commit}}", r.commit)]);
        if got.map(|s| s.trim().to_string()).ok().as_deref() != Some(r.commit.as_str()) {
            return Err(RemoteError::Git(format!(
                "{} no longer points to {} (it changed during the build; build again)",
                r.fetch, r.commit
            )));
        }
        self.run(d, &["checkout", "-q", "--detach", &r.commit])?;
        if g.submodules != Some(false) && dest.join(".gitmodules").exists() {
            self.run(d, &["submodule", "update", "--init", "--recursive", "--depth=1"])?;
        }
        if g.mtime_commit {
            let t = self.run(d, &["log", "-1", "--format=%ct", &r.commit])?;
            let secs: u64 = t.trim().parse().map_err(|_| RemoteError::Git(format!("commit time {t:?}")))?;
            set_mtimes(dest, std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        }
        let keep = g.keep_git_dir.unwrap_or(false);
        if keep && g.subdir.is_empty() {
            if by_commit {
                // The ref the user named, applied here: the remote was never asked for it.
                self.run(d, &["update-ref", "--no-deref", &r.fetch, &r.commit])?;
            }
            self.run(d, &["remote", "add", "origin", &redact(&g.remote)])?;
            self.run(d, &["reflog", "expire", "--all", "--expire=now"])?;
            let _ = fs::remove_file(dest.join(".git/FETCH_HEAD"));
        } else {
            let git_dir = dest.join(".git");
            fs::remove_dir_all(&git_dir)
                .map_err(|source| RemoteError::Io { path: git_dir.display().to_string(), source })?;
        }
        normalize_modes(dest)
            .map_err(|source| RemoteError::Io { path: dest.display().to_string(), source })?;
        let mut root = dest.to_path_buf();
        for c in Path::new(&g.subdir).components() {
            let Component::Normal(n) = c else { continue };
            root.push(n);
            // Only real dirs: a symlink could lead out of the checkout.
            match fs::symlink_metadata(&root) {
                Ok(m) if m.is_dir() => {}
                _ => {
                    return Err(RemoteError::Git(format!(
                        "subdir {:?} is not a directory of the repository at {}",
                        g.subdir, r.fetch
                    )));
                }
            }
        }
        Ok(root)
    }
}

/// Modes as git means them whatever the umask: 0755 for dirs and executables, 0644 else.
fn normalize_modes(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = fs::symlink_metadata(e.path())?;
        if m.file_type().is_symlink() {
            continue;
        }
        let mode = if m.is_dir() || m.permissions().mode() & 0o111 != 0 { 0o755 } else { 0o644 };
        fs::set_permissions(e.path(), fs::Permissions::from_mode(mode))?;
        if m.is_dir() {
            normalize_modes(&e.path())?;
        }
    }
    Ok(())
}

/// Every entry under `dir` (links themselves) gets time `t` (`?mtime=commit`).
fn set_mtimes(dir: &Path, t: std::time::SystemTime) {
    let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) else { return };
    let ts = nix::sys::time::TimeSpec::new(d.as_secs() as i64, 0);
    fn walk(p: &Path, ts: &nix::sys::time::TimeSpec) {
        if let Ok(rd) = fs::read_dir(p) {
            for e in rd.flatten() {
                let path = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&path, ts);
                }
                let _ = nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    &path,
                    ts,
                    ts,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                );
            }
        }
    }
    walk(dir, &ts);
    let _ = nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        dir,
        &ts,
        &ts,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const C1: &str = "1111111111111111111111111111111111111111";
    const C2: &str = "2222222222222222222222222222222222222222";
    const T1: &str = "3333333333333333333333333333333333333333";

    /// A git daemon on 127.0.0.1 that takes connections and never answers; its port.
    fn silent_server() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                held.push(conn);
            }
        });
        port
    }

    fn silent_ref(port: u16) -> GitRef {
        let src = format!("git://127.0.0.1:{port}/repo.git#main");
        match super::super::remote::classify(&src).unwrap() {
            super::super::remote::Source::Git(g) => g,
            other => panic!("{other:?}"),
        }
    }

    /// A server that stops answering fails the command at the time limit, not never.
    #[test]
    fn git_commands_stop_at_the_time_limit() {
        if Command::new("git").arg("--version").output().is_err() {
            return;
        }
        let work = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let git = Git::new(work.path(), None).unwrap().with_timeout(Duration::from_millis(700));
        let started = Instant::now();
        let err = git.resolve(&silent_ref(silent_server())).unwrap_err();
        assert!(
            matches!(err, RemoteError::GitTimeout { ref command, .. } if command == "ls-remote"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    /// Setting the build's cancel flag stops a running git command at once.
    #[test]
    fn git_commands_stop_when_the_build_is_cancelled() {
        if Command::new("git").arg("--version").output().is_err() {
            return;
        }
        let work = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let flag = AtomicBool::new(false);
        let git = Git::new(work.path(), None).unwrap().with_cancel(Some(&flag));
        let started = Instant::now();
        let err = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                flag.store(true, Ordering::SeqCst);
            });
            git.resolve(&silent_ref(silent_server())).unwrap_err()
        });
        assert!(matches!(err, RemoteError::Cancelled), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        // Cancelled before it starts: git is not run at all.
        let err = git.resolve(&silent_ref(silent_server())).unwrap_err();
        assert!(matches!(err, RemoteError::Cancelled), "{err}");
    }

    #[test]
    fn refs_resolve_as_buildkit_picks_them() {
        let ls = format!("{C1}\trefs/heads/main\n{T1}\trefs/tags/v1\n{C2}\trefs/tags/v1^{{}}\n");
        assert_eq!(
            pick_ref(&ls, "main"),
            Some(Resolved { commit: C1.into(), fetch: "refs/heads/main".into() })
        );
        // An annotated tag: the commit it points to, fetched by the tag.
        assert_eq!(pick_ref(&ls, "v1"), Some(Resolved { commit: C2.into(), fetch: "refs/tags/v1".into() }));
        assert_eq!(
            pick_ref(&ls, "refs/tags/v1"),
            Some(Resolved { commit: C2.into(), fetch: "refs/tags/v1".into() })
        );
        assert_eq!(pick_ref(&ls, "nope"), None);
        // A branch and a tag of one name: the branch, as git checkout prefers.
        let both = format!("{C2}\trefs/tags/x\n{C1}\trefs/heads/x\n");
        assert_eq!(pick_ref(&both, "x").unwrap().commit, C1);
        assert_eq!(
            default_branch(&format!("ref: refs/heads/trunk\tHEAD\n{C1}\tHEAD\n")).as_deref(),
            Some("refs/heads/trunk")
        );
        assert_eq!(default_branch(""), None);
        assert!(is_commit_sha(C1) && is_commit_sha(&"ab".repeat(32)) && !is_commit_sha("main"));
        assert!(!is_commit_sha(&"AB".repeat(20)) && !is_commit_sha(&C1[1..]));
    }

    #[test]
    fn fetch_by_commit_trusts_the_checksum_as_buildkit() {
        let g = |q: &str| crate::image::build::remote::parse_git_ref(&format!("https://h/r.git{q}")).unwrap().unwrap();
        let by = |g: &GitRef| by_commit(g, g.checksum.as_deref());
        assert_eq!(by(&g(&format!("?checksum={C1}"))).unwrap(), None, "without the flag: ls-remote");
        let r = by(&g(&format!("?fetch-by-commit&checksum={C1}#main"))).unwrap().unwrap();
        assert_eq!(r, Resolved { commit: C1.into(), fetch: "refs/heads/main".into() });
        let r = by(&g(&format!("?fetch-by-commit=true&commit={C1}&tag=v1"))).unwrap().unwrap();
        assert_eq!(r.fetch, "refs/tags/v1");
        let r = by(&g(&format!("?fetch-by-commit=1&checksum={C1}"))).unwrap().unwrap();
        assert_eq!(r, Resolved { commit: C1.into(), fetch: C1.into() });
        assert_eq!(by(&g(&format!("?fetch-by-commit=false&checksum={C1}"))).unwrap(), None);
        // A commit for a ref needs no remote anyway.
        assert_eq!(by(&g(&format!("?fetch-by-commit#{C2}"))).unwrap(), None);
        let e = by(&g("?fetch-by-commit#main")).unwrap_err().to_string();
        assert_eq!(e, "fetch-by-commit requires a checksum or a commit SHA ref");
        let e = by(&g("?fetch-by-commit&checksum=abc123")).unwrap_err().to_string();
        assert_eq!(e, "fetch-by-commit requires a full commit SHA checksum, got \"abc123\"");
        assert!(crate::image::build::remote::parse_git_ref("https://h/r.git?fetch-by-commit=maybe")
            .unwrap_err()
            .to_string()
            .contains("invalid fetch-by-commit value: \"maybe\""));
    }

    /// A repository on disk (file://), with two commits on main; (path, first, second).
    fn local_repo(dir: &Path) -> (PathBuf, String, String) {
        let repo = dir.join("origin");
        fs::create_dir_all(&repo).unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .current_dir(&repo)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .args(["-c", "user.name=t", "-c", "user.email=t@e", "-c", "init.defaultBranch=main"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["init", "-q"]);
        // Fetching a commit by id from a file:// remote needs the server's permission.
        git(&["config", "uploadpack.allowAnySHA1InWant", "true"]);
        fs::write(repo.join("f"), "one\n").unwrap();
        git(&["add", "f"]);
        git(&["commit", "-q", "-m", "one"]);
        let first = git(&["rev-parse", "HEAD"]);
        fs::write(repo.join("f"), "two\n").unwrap();
        git(&["commit", "-q", "-am", "two"]);
        let second = git(&["rev-parse", "HEAD"]);
        (repo, first, second)
    }

    /// `?fetch-by-commit`: the pinned commit is checked out although the branch moved on,
    /// without an ls-remote, and a kept `.git` names it by the ref given.
    #[test]
    fn fetch_by_commit_checks_out_the_pinned_commit() {
        if Command::new("git").arg("--version").output().is_err() {
            return;
        }
        let work = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let (repo, first, _) = local_repo(work.path());
        let g = GitRef {
            remote: format!("file://{}", repo.display()),
            reference: "main".into(),
            checksum: Some(first.clone()),
            keep_git_dir: Some(true),
            fetch_by_commit: true,
            ..GitRef::default()
        };
        let git = Git::new(&work.path().join("w"), None).unwrap();
        let r = git.resolve(&g).unwrap();
        assert_eq!(r, Resolved { commit: first.clone(), fetch: "refs/heads/main".into() });
        let dest = work.path().join("w/repo");
        let root = git.checkout(&g, &r, &dest).unwrap();
        assert_eq!(fs::read_to_string(root.join("f")).unwrap(), "one\n");
        let head = git.run(Some(&dest), &["rev-parse", "HEAD", "refs/heads/main"]).unwrap();
        assert_eq!(head.lines().collect::<Vec<_>>(), [first.as_str(), first.as_str()]);
        // Without the flag the checksum is compared with what the branch is now.
        let plain = GitRef { fetch_by_commit: false, ..g.clone() };
        let e = git.resolve(&plain).unwrap_err().to_string();
        assert!(e.contains(&format!("expected checksum to match {first}")), "{e}");
        // Checksums are hex.
        let bad = GitRef { checksum: Some("xyz".into()), ..g };
        assert_eq!(
            git.resolve(&bad).unwrap_err().to_string(),
            "invalid checksum xyz for Git URL, expected hex commit hash"
        );
    }

    #[test]
    fn cache_identity_follows_what_changes_the_files() {
        let r = Resolved { commit: C1.into(), fetch: "refs/heads/main".into() };
        let g = GitRef { remote: "git://h/r.git".into(), ..GitRef::default() };
        let base = r.cache_identity(&g);
        assert_eq!(base["ref"], "", "without .git the ref does not matter, only the commit");
        let sub = r.cache_identity(&GitRef { subdir: "docs".into(), ..g.clone() });
        let keep = r.cache_identity(&GitRef { keep_git_dir: Some(true), ..g.clone() });
        assert_ne!(base, sub);
        assert_ne!(base, keep);
        assert_eq!(keep["ref"], "refs/heads/main");
        let other = Resolved { commit: C2.into(), ..r.clone() }.cache_identity(&g);
        assert_ne!(base, other);
    }
}
