//! `berth login` and `berth logout`: credentials for registries, kept where docker keeps them.

use std::io::{BufRead, IsTerminal, Write};

use clap::Args;

use super::output::{self, outln};
use super::{CliError, CliResult, GlobalOptions};
use crate::image::registry::credentials::config_key;
use crate::image::registry::{Credentials, Registry, RegistryOptions};

/// `berth login` arguments.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Username
    #[arg(short, long)]
    username: Option<String>,
    /// Password (`-p` works too, as with docker; prefer --password-stdin)
    #[arg(long)]
    password: Option<String>,
    /// Take the password from standard input
    #[arg(long)]
    password_stdin: bool,
    /// The registry (default: Docker Hub)
    server: Option<String>,
}

/// `berth logout` arguments.
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub)
    server: Option<String>,
}

/// The registry host a `login`/`logout` argument names (`docker.io` when none).
fn server_host(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

fn prompt(label: &str, hide: bool) -> CliResult<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::msg(format!(
            "login: no {} given and standard input is not a terminal (use -u and --password-stdin)",
            label.to_lowercase()
        )));
    }
    // The prompt goes to standard error, as docker's; its failure leaves nothing to report.
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{label}: ").and_then(|()| err.flush());
    drop(err);
    let saved = if hide {
        use nix::sys::termios::{self, LocalFlags, SetArg};
        let fd = std::io::stdin();
        termios::tcgetattr(&fd).ok().inspect(|t| {
            let mut quiet = t.clone();
            quiet.local_flags.remove(LocalFlags::ECHO);
            let _ = termios::tcsetattr(&fd, SetArg::TCSANOW, &quiet);
        })
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = saved {
        let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, &t);
        output::warn(format_args!(""));
    }
    read.map_err(|e| CliError::context("login", e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// Runs `berth login`. The global `-p` (project name) is docker login's `-p PASSWORD` here.
pub fn run_login(global: &GlobalOptions, args: &LoginArgs) -> CliResult<()> {
    let host = server_host(args.server.as_deref());
    let given_password = args.password.clone().or_else(|| global.project_name.clone());
    if given_password.is_some() && args.password_stdin {
        return Err(CliError::msg("login: --password and --password-stdin are mutually exclusive"));
    }
    if given_password.is_some() {
        output::warn(format_args!(
            "WARNING! Using --password via the CLI is insecure. Use --password-stdin."
        ));
    }
    let username = match &args.username {
        Some(u) => u.clone(),
        None if args.password_stdin => {
            return Err(CliError::msg("login: --password-stdin needs a username (-u)"));
        }
        None => prompt("Username", false)?,
    };
    let password = match given_password {
        Some(p) => p,
        None if args.password_stdin => {
            let mut text = String::new();
            std::io::stdin()
                .lock()
                .read_to_string_lossy(&mut text)
                .map_err(|e| CliError::context("login: reading the password", e))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        None => prompt("Password", true)?,
    };
    if username.is_empty() || password.is_empty() {
        return Err(CliError::msg("login: username and password must not be empty"));
    }
    let opts = RegistryOptions::from_env();
    let store = opts.credentials.clone();
    let registry = Registry::new(opts);
    registry.login(&host, &username, &password).map_err(|e| CliError::context("login failed", e))?;
    store
        .store(&host, &Credentials { username, password, identity_token: None })
        .map_err(|e| CliError::context("login: saving the credentials", e))?;
    outln!("Login Succeeded")
}

trait ReadAll {
    fn read_to_string_lossy(&mut self, out: &mut String) -> std::io::Result<()>;
}

impl<R: std::io::Read> ReadAll for R {
    fn read_to_string_lossy(&mut self, out: &mut String) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        self.read_to_end(&mut bytes)?;
        out.push_str(&String::from_utf8_lossy(&bytes));
        Ok(())
    }
}

/// Runs `berth logout`.
pub fn run_logout(_global: &GlobalOptions, args: &LogoutArgs) -> CliResult<()> {
    let host = server_host(args.server.as_deref());
    let store = RegistryOptions::from_env().credentials;
    let removed = store.erase(&host).map_err(|e| CliError::context("logout", e))?;
    if removed {
        outln!("Removing login credentials for {}", config_key(&host))
    } else {
        outln!("Not logged in to {}", config_key(&host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_name_hosts() {
        assert_eq!(server_host(None), "docker.io");
        assert_eq!(server_host(Some("https://index.docker.io/v1/")), "docker.io");
        assert_eq!(server_host(Some("localhost:5000")), "localhost:5000");
        assert_eq!(server_host(Some("http://127.0.0.1:5000/")), "127.0.0.1:5000");
    }
}
