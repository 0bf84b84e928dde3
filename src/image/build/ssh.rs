//! `RUN --mount=type=ssh`: an ssh agent of the host reached from a step. The step never gets
//! the host's socket itself but a socket of its own (in the build's run dir, with the mount's
//! uid, gid and mode) whose connections are relayed to the agent while the step runs. An agent
//! given as key files is an `ssh-agent` this build starts with those keys, for the step only.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Errors of ssh forwarding.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// `default` was asked for and `SSH_AUTH_SOCK` is not set.
    #[error("ssh {0}: SSH_AUTH_SOCK is not set (start an ssh-agent or give id=PATH)")]
    NoAgent(String),
    /// A `--ssh` value that is not `default|ID[=SOCKET|KEY[,KEY...]]` (as written).
    #[error("invalid ssh {0:?}: expected default|ID[=SOCKET|KEY[,KEY...]]")]
    Spec(String),
    /// A path given cannot be read.
    #[error("ssh {id}: {}: {source}", path.display())]
    Path {
        /// The ssh id.
        id: String,
        /// The path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A path given is neither a socket nor a key file.
    #[error("ssh {id}: {}: neither an agent socket nor a key file", path.display())]
    NotKey {
        /// The ssh id.
        id: String,
        /// The path.
        path: PathBuf,
    },
    /// The agent for key files could not be started or loaded.
    #[error("ssh {id}: {message}")]
    Agent {
        /// The ssh id.
        id: String,
        /// What went wrong.
        message: String,
    },
    /// The relay socket could not be made.
    #[error("ssh {id}: relay socket {path}: {source}")]
    Relay {
        /// The ssh id.
        id: String,
        /// The socket.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Parses one `--ssh` value or compose `build.ssh` entry: `default`, `ID`, `ID=PATH[,PATH...]`.
/// No paths means the agent of `$SSH_AUTH_SOCK`.
pub fn parse_spec(s: &str) -> Result<(String, Vec<PathBuf>), SshError> {
    let (id, paths) = match s.split_once('=') {
        Some((id, p)) => (id.trim(), p.split(',').filter(|x| !x.is_empty()).map(PathBuf::from).collect()),
        None => (s.trim(), Vec::new()),
    };
    if id.is_empty() || id.contains(',') {
        return Err(SshError::Spec(s.to_string()));
    }
    Ok((id.to_string(), paths))
}

/// The agent socket to relay for `paths` (as [`parse_spec`] gives them): `$SSH_AUTH_SOCK`
/// for none, a socket as it is, or an agent started with key files. The agent, when one is
/// started, lives as long as the returned value.
pub fn agent_for(id: &str, paths: &[PathBuf], dir: &Path) -> Result<(PathBuf, Option<OwnAgent>), SshError> {
    if paths.is_empty() {
        let sock = std::env::var_os("SSH_AUTH_SOCK")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SshError::NoAgent(id.to_string()))?;
        return Ok((PathBuf::from(sock), None));
    }
    let path_err =
        |p: &Path, source: io::Error| SshError::Path { id: id.to_string(), path: p.to_path_buf(), source };
    if let [one] = paths {
        let m = std::fs::metadata(one).map_err(|e| path_err(one, e))?;
        if m.file_type().is_socket() {
            return Ok((one.clone(), None));
        }
    }
    for p in paths {
        let m = std::fs::metadata(p).map_err(|e| path_err(p, e))?;
        if !m.is_file() {
            return Err(SshError::NotKey { id: id.to_string(), path: p.to_path_buf() });
        }
    }
    let agent = OwnAgent::start(id, paths, dir)?;
    Ok((agent.sock.clone(), Some(agent)))
}

/// An `ssh-agent` holding key files, killed when dropped.
#[derive(Debug)]
pub struct OwnAgent {
    child: Child,
    sock: PathBuf,
}

impl OwnAgent {
    fn start(id: &str, keys: &[PathBuf], dir: &Path) -> Result<OwnAgent, SshError> {
        let err = |message: String| SshError::Agent { id: id.to_string(), message };
        let sock = dir.join(format!("agent-{}", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| err(format!("ssh-agent (openssh-client) for key files: {e}")))?;
        let mut agent = OwnAgent { child, sock };
        let deadline = Instant::now() + Duration::from_secs(5);
        while UnixStream::connect(&agent.sock).is_err() {
            if Instant::now() > deadline || agent.child.try_wait().ok().flatten().is_some() {
                return Err(err("ssh-agent did not start".into()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = Command::new("ssh-add")
            .args(keys)
            .env("SSH_AUTH_SOCK", &agent.sock)
            .env("SSH_ASKPASS_REQUIRE", "never")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("ssh-add: {e}")))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let _ = agent.child.kill();
            return Err(err(format!("ssh-add: {msg}")));
        }
        Ok(agent)
    }
}

impl Drop for OwnAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// A socket at `path` whose connections are relayed to `upstream`; stopped (and its socket
/// removed) when dropped.
#[derive(Debug)]
pub struct Relay {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on `path` (owned by `uid`:`gid`, mode `mode`) and relays to `upstream`.
    pub fn start(
        id: &str,
        path: &Path,
        upstream: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
    ) -> Result<Relay, SshError> {
        let err =
            |source: io::Error| SshError::Relay { id: id.to_string(), path: path.to_path_buf(), source };
        let listener = UnixListener::bind(path).map_err(err)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        // Polled, not blocking: the loop must end when dropped even if the socket file is gone
        // by then (a wake-up connection could not reach it).
        listener.set_nonblocking(true).map_err(err)?;
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                };
                if client.set_nonblocking(false).is_err() {
                    continue;
                }
                let upstream = upstream.clone();
                // One pair of copiers per connection; they end when either side closes.
                std::thread::spawn(move || {
                    let Ok(server) = UnixStream::connect(&upstream) else { return };
                    let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone()) else { return };
                    let up = std::thread::spawn(move || {
                        let mut c = client;
                        let mut s = server;
                        let _ = io::copy(&mut c, &mut s);
                        let _ = s.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = io::copy(&mut s2, &mut c2);
                    let _ = c2.shutdown(std::net::Shutdown::Write);
                    let _ = up.join();
                });
            }
        });
        Ok(Relay { path: path.to_path_buf(), stop, thread: Some(thread) })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn specs() {
        assert_eq!(parse_spec("default").unwrap(), ("default".into(), vec![]));
        assert_eq!(
            parse_spec("gh=/k/a,/k/b").unwrap(),
            ("gh".into(), vec![PathBuf::from("/k/a"), PathBuf::from("/k/b")])
        );
        assert_eq!(parse_spec("x=/run/agent.sock").unwrap().1, [PathBuf::from("/run/agent.sock")]);
        assert!(parse_spec("").is_err() && parse_spec("=/a").is_err());
    }

    #[test]
    fn missing_paths_are_clear_errors() {
        let d = tempfile::tempdir().unwrap();
        let e = agent_for("gh", &[d.path().join("nope")], d.path()).unwrap_err();
        assert!(e.to_string().starts_with("ssh gh: "), "{e}");
        let e = agent_for("gh", &[d.path().to_path_buf()], d.path()).unwrap_err();
        assert!(e.to_string().contains("neither an agent socket nor a key file"), "{e}");
    }

    #[test]
    fn relay_forwards_both_ways_and_goes_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let up = d.path().join("up");
        let server = UnixListener::bind(&up).unwrap();
        let echo = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b.map(|c| c.to_ascii_uppercase())).unwrap();
        });
        let path = d.path().join("relay");
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let relay = Relay::start("x", &path, up.clone(), uid, gid, 0o600).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut c = UnixStream::connect(&path).unwrap();
        c.write_all(b"hello").unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "HELLO");
        echo.join().unwrap();
        drop(relay);
        assert!(!path.exists());
        // Its dir removed first (as a step's temp dir can be): dropping still ends.
        let relay = Relay::start("x", &path, up, uid, gid, 0o600).unwrap();
        drop(d);
        drop(relay);
    }
}
