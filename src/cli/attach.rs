//! `berth attach SERVICE`: this process's stdio on a service's running container, as docker
//! compose's `attach` (docker's `attach`) has it. The container's live output comes from its
//! shim (an attach request); with stdin attached (unless `--no-stdin`, and only for a
//! container created with `stdin_open`) what is typed goes to the process, on its terminal
//! (`tty: true`) with this terminal in raw mode and its size passed on. The detach keys
//! (`--detach-keys`, else `detachKeys` of docker's `config.json`, else ctrl-p,ctrl-q) leave
//! the container running; without a terminal, every signal docker's CLI forwards is passed
//! on (`--sig-proxy`, the default). When the process exits while attached, berth exits with
//! its code, also when the restart policy starts it again or `restart` stops it: as docker's
//! attach (and so docker compose's), an attach ends at the process's end and does not follow
//! the next start (attach again for that; `up` and `logs -f` follow restarts).

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;

use super::project;
use super::{CliError, CliResult, GlobalOptions, signals};
use crate::engine::observe::{is_running, status_of};
use crate::runtime::shim::{Frame, read_frame};
use crate::runtime::status::{ContainerStatus, State};

/// `berth attach` flags (docker compose's).
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// Override the key sequence for detaching from a container
    #[arg(long, value_name = "KEYS")]
    detach_keys: Option<String>,
    /// Index of the container if the service has multiple replicas (default: the first)
    #[arg(long, default_value_t = 0)]
    index: u32,
    /// Do not attach STDIN
    #[arg(long)]
    no_stdin: bool,
    /// Proxy all received signals to the process
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_name = "BOOL")]
    sig_proxy: bool,
    /// The service
    service: String,
}

/// docker's default detach sequence: ctrl-p, ctrl-q.
const DEFAULT_DETACH_KEYS: &[u8] = &[0x10, 0x11];

/// Reads docker's detach-key notation: comma-separated keys, each one character or
/// `ctrl-X` with X one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`.
fn parse_detach_keys(text: &str) -> CliResult<Vec<u8>> {
    let bad = |key: &str| CliError::msg(format!("invalid detach keys {text:?}: unknown key {key:?}"));
    let mut keys = Vec::new();
    for key in text.split(',') {
        let bytes = key.as_bytes();
        if bytes.len() == 1 {
            keys.push(bytes[0]);
            continue;
        }
        let lower = key.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix("ctrl-") else { return Err(bad(key)) };
        let code = match rest.as_bytes() {
            [c @ b'a'..=b'z'] => c - b'a' + 1,
            [b'@'] => 0,
            [b'['] => 27,
            [b'\\'] => 28,
            [b']'] => 29,
            [b'^'] => 30,
            [b'_'] => 31,
            _ => return Err(bad(key)),
        };
        keys.push(code);
    }
    Ok(keys)
}

/// Finds the detach sequence in typed input: bytes that may begin it are held back until it
/// is complete (detach) or broken (then they are passed on after all).
struct DetachKeys {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachKeys {
    /// What of `input` goes on to the container, and whether the sequence was completed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            if self.matched > 0 {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
            }
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// What the reader threads tell the main one.
enum Event {
    Output(usize, Vec<u8>),
    Exit(i32),
    /// The shim hung up without an exit (the container stopped otherwise, or it let us go).
    Closed,
    Detached,
}

/// Runs `berth attach`.
pub fn run(global: &GlobalOptions, args: &AttachArgs) -> CliResult<()> {
    let config = crate::image::registry::CredentialStore::from_env().config_path();
    let keys = detach_keys(args.detach_keys.as_deref(), &config)?;
    let target = project::open_or_name(global)?;
    let container = target.container(&args.service, args.index)?;
    let runtime = &target.engine.runtime;
    if let Some(why) = refusal(&status_of(runtime, &container.id)) {
        return Err(CliError::msg(format!("cannot attach to container {}: {why}", container.name)));
    }
    let spec = runtime.spec(&container.id)?;
    let tty = spec.process.tty;
    let stdin = !args.no_stdin && spec.process.stdin_open;
    let stream = runtime.attach(&container.id, stdin)?;
    // Bounded: when this side's output is slow, the frames wait in the socket and the shim
    // lets this reader go rather than the frames piling up here.
    let (tx, rx) = mpsc::sync_channel(64);
    {
        let mut reader = stream.try_clone().map_err(|e| CliError::context("attach", e))?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            loop {
                match read_frame(&mut reader) {
                    Ok(Some(Frame::Output { stream, data })) => {
                        if tx.send(Event::Output(stream, data)).is_err() {
                            return;
                        }
                    }
                    Ok(Some(Frame::Exit(code))) => {
                        let _ = tx.send(Event::Exit(code));
                        return;
                    }
                    Ok(None) | Err(_) => {
                        let _ = tx.send(Event::Closed);
                        return;
                    }
                }
            }
        });
    }
    // The terminal is raw only while keys go to the container's terminal.
    let raw = if stdin && tty { crate::runtime::exec_tty::RawMode::enter() } else { None };
    if stdin {
        let writer = stream.try_clone().map_err(|e| CliError::context("attach", e))?;
        std::thread::spawn(move || forward_stdin(writer, DetachKeys { keys, matched: 0 }, tx));
    }
    if tty {
        signals::install_winch();
        resize(runtime, &container.id);
    }
    // docker passes signals on only without a terminal (on one, Ctrl-C is a key).
    let proxy = args.sig_proxy && !tty;
    if proxy {
        signals::install_proxy(true);
    }
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    let end = loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Event::Output(s, data)) => {
                let w: &mut dyn Write = if s == 0 { &mut out } else { &mut err };
                // This side gone (a closed pipe): nothing more to show.
                if w.write_all(&data).and_then(|()| w.flush()).is_err() {
                    break Ok(0);
                }
            }
            Ok(Event::Exit(code)) => break Ok(code),
            Ok(Event::Detached) => {
                let _ = stream.shutdown(Shutdown::Both);
                break Ok(0);
            }
            Ok(Event::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The end came otherwise (a stop from elsewhere, or this reader was too slow and
                // let go): its exit code when it has one.
                let st = status_of(runtime, &container.id);
                break match st.exit_code {
                    Some(code) if !is_running(&st) => Ok(code),
                    _ => Err(CliError::msg(format!("lost the output of container {}", container.name))),
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if proxy {
            // As kills, as docker's `ForwardAllSignals` sends them (ContainerKill): for a
            // container without its own stop signal, the restart policy no longer applies. By
            // number, which carries the realtime signals too.
            for sig in signals::take_proxied() {
                let _ = runtime.kill(&container.id, Some(&sig.to_string()));
            }
        }
        if tty && signals::window_changed() {
            resize(runtime, &container.id);
        }
    };
    drop(raw);
    CliError::exit_status(end?)
}

/// Why a container in state `st` cannot be attached to (docker's reasons), if it cannot.
fn refusal(st: &ContainerStatus) -> Option<&'static str> {
    if !is_running(st) {
        Some("it is stopped, start it first")
    } else if st.paused {
        Some("it is paused, unpause it first")
    } else if st.state == State::Restarting {
        Some("it is restarting, wait until it is running")
    } else {
        None
    }
}

/// The detach sequence: `--detach-keys` when given (and not empty), else `detachKeys` of
/// docker's config file `config` (as docker's CLI and docker compose read it), else
/// ctrl-p,ctrl-q. A config file that cannot be read is warned about and passed over, as
/// docker does; a bad sequence in it is an error naming the file.
fn detach_keys(flag: Option<&str>, config: &Path) -> CliResult<Vec<u8>> {
    if let Some(text) = flag.filter(|t| !t.is_empty()) {
        return parse_detach_keys(text);
    }
    let configured = match std::fs::read(config) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            warn_config(config, &e.to_string());
            None
        }
        Ok(bytes) => match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Err(e) => {
                warn_config(config, &e.to_string());
                None
            }
            Ok(v) => match v.get("detachKeys") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(text)) => Some(text.clone()),
                Some(other) => {
                    warn_config(config, &format!("detachKeys is {other}, not a string"));
                    None
                }
            },
        },
    };
    match configured.filter(|t| !t.is_empty()) {
        Some(text) => parse_detach_keys(&text)
            .map_err(|e| CliError::msg(format!("{e} (detachKeys in {})", config.display()))),
        None => Ok(DEFAULT_DETACH_KEYS.to_vec()),
    }
}

fn warn_config(config: &Path, why: &str) {
    // Standard error's failures have nowhere to go (see cli::output).
    let _ = writeln!(std::io::stderr(), "WARNING: Error loading config file: {}: {why}", config.display());
}

/// Passes this terminal's size to the container's.
fn resize(runtime: &crate::runtime::Runtime, id: &str) {
    if let Some(ws) = crate::runtime::exec_tty::stdin_window_size() {
        let _ = runtime.resize(id, ws.ws_row, ws.ws_col);
    }
}

/// Copies stdin to the container until its end (then the container's stdin stays open, as
/// docker keeps it for a container without `stdin_once`) or the detach keys.
fn forward_stdin(mut to: UnixStream, mut keys: DetachKeys, tx: mpsc::SyncSender<Event>) {
    let mut stdin = std::io::stdin();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let (pass, detached) = keys.feed(&buf[..n]);
        if !pass.is_empty() && to.write_all(&pass).is_err() {
            return;
        }
        if detached {
            let _ = tx.send(Event::Detached);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_are_read_as_docker_writes_them() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), DEFAULT_DETACH_KEYS);
        assert_eq!(
            parse_detach_keys("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_").unwrap(),
            [0, 27, 28, 29, 30, 31]
        );
        assert_eq!(parse_detach_keys("a,CTRL-A,b").unwrap(), [b'a', 1, b'b']);
        let e = parse_detach_keys("ctrl-p,ctrl-1").unwrap_err().to_string();
        assert!(e.contains("\"ctrl-1\""), "{e}");
        assert!(parse_detach_keys("shift-a").is_err());
    }

    #[test]
    fn detach_keys_are_held_back_until_complete_or_broken() {
        let mut k = DetachKeys { keys: DEFAULT_DETACH_KEYS.to_vec(), matched: 0 };
        assert_eq!(k.feed(b"ab"), (b"ab".to_vec(), false));
        // A sequence split across reads.
        assert_eq!(k.feed(b"x\x10"), (b"x".to_vec(), false));
        assert_eq!(k.feed(b"\x11rest"), (Vec::new(), true));
        // Broken: the held-back key is passed on, and a new start is held again.
        let mut k = DetachKeys { keys: DEFAULT_DETACH_KEYS.to_vec(), matched: 0 };
        assert_eq!(k.feed(b"\x10y"), (b"\x10y".to_vec(), false));
        assert_eq!(k.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(k.feed(b"\x11"), (Vec::new(), true));
        let mut one = DetachKeys { keys: vec![b'q'], matched: 0 };
        assert_eq!(one.feed(b"abq"), (b"ab".to_vec(), true));
    }

    #[test]
    fn detach_keys_come_from_the_flag_then_docker_s_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        // No file: the default.
        assert_eq!(detach_keys(None, &config).unwrap(), DEFAULT_DETACH_KEYS);
        std::fs::write(&config, r#"{"auths": {}, "detachKeys": "ctrl-x,y"}"#).unwrap();
        assert_eq!(detach_keys(None, &config).unwrap(), [24, b'y']);
        // An empty flag is no flag (docker's check is `!= ""`).
        assert_eq!(detach_keys(Some(""), &config).unwrap(), [24, b'y']);
        assert_eq!(detach_keys(Some("ctrl-a"), &config).unwrap(), [1]);
        // Without the key, or with a file docker cannot load (it warns): the default.
        std::fs::write(&config, r#"{"auths": {}}"#).unwrap();
        assert_eq!(detach_keys(None, &config).unwrap(), DEFAULT_DETACH_KEYS);
        std::fs::write(&config, "{not json").unwrap();
        assert_eq!(detach_keys(None, &config).unwrap(), DEFAULT_DETACH_KEYS);
        // A bad sequence in the file is an error that names it.
        std::fs::write(&config, r#"{"detachKeys": "ctrl-1"}"#).unwrap();
        let e = detach_keys(None, &config).unwrap_err().to_string();
        assert!(e.contains("ctrl-1") && e.contains("config.json"), "{e}");
    }

    #[test]
    fn only_a_running_container_is_attached_to() {
        let st = |state, paused| ContainerStatus { state, paused, shim_pid: 7, ..Default::default() };
        assert_eq!(refusal(&st(State::Running, false)), None);
        assert!(refusal(&st(State::Running, true)).unwrap().contains("unpause"));
        assert!(refusal(&st(State::Restarting, false)).unwrap().contains("restarting"));
        assert!(refusal(&st(State::Exited, false)).unwrap().contains("stopped"));
        assert!(
            refusal(&ContainerStatus { shim_pid: 0, ..st(State::Running, false) })
                .unwrap()
                .contains("stopped")
        );
    }

    #[test]
    fn flags_are_docker_compose_s() {
        use clap::Parser;
        let parse = |args: &[&str]| match crate::cli::Cli::try_parse_from(
            ["berth", "attach"].iter().chain(args).copied(),
        )
        .expect("parses")
        .command
        {
            crate::cli::Command::Attach(a) => a,
            other => panic!("{other:?}"),
        };
        let a = parse(&["web"]);
        assert!(a.sig_proxy && !a.no_stdin && a.index == 0 && a.detach_keys.is_none());
        let a = parse(&["--sig-proxy=false", "--no-stdin", "--index", "2", "--detach-keys", "ctrl-a", "web"]);
        assert!(!a.sig_proxy && a.no_stdin && a.index == 2);
        assert_eq!(a.detach_keys.as_deref(), Some("ctrl-a"));
    }
}
