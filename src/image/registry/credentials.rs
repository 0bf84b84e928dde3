//! Registry credentials where docker and podman keep them.
//!
//! Lookup order for a registry host, as docker does, then podman:
//! 1. `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`): `credHelpers[host]`, then
//!    `credsStore` (both run `docker-credential-NAME get` with the server on stdin and read
//!    `{"Username","Secret"}`; a `<token>` user means the secret is an identity token), then
//!    `auths[host]` (`auth`: base64 `user:password`, or `identitytoken`);
//! 2. podman's `$REGISTRY_AUTH_FILE`, `${XDG_RUNTIME_DIR}/containers/auth.json`,
//!    `~/.config/containers/auth.json` (`auths[host].auth`).
//!
//! Docker Hub's key is `https://index.docker.io/v1/`; other keys are matched by host, with or
//! without a scheme or path (`https://host:5000/v1/` finds `host:5000`).

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// The config key docker uses for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// Failures reading or writing credentials.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A config file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: io::Error,
    },
    /// A config file is not valid JSON, or an entry is malformed.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A credential helper failed or could not be run.
    #[error("credential helper docker-credential-{helper} ({action} for {server}): {message}")]
    Helper {
        /// The helper's name.
        helper: String,
        /// `get`, `store` or `erase`.
        action: String,
        /// The server asked about.
        server: String,
        /// What went wrong.
        message: String,
    },
}

type Result<T> = std::result::Result<T, CredentialsError>;

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// The user name (empty with an identity token).
    pub username: String,
    /// The password (empty with an identity token).
    pub password: String,
    /// An OAuth2 refresh token that docker's login got from the registry's token server.
    pub identity_token: Option<String>,
}

/// The config key for a registry host: Docker Hub's is `https://index.docker.io/v1/`.
pub fn config_key(host: &str) -> String {
    match normalize(host).as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.to_string(),
        h => h.to_string(),
    }
}

/// A key or server name reduced to its host[:port] (`https://h:5000/v1/` → `h:5000`).
fn normalize(key: &str) -> String {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// Where credentials are looked up and stored.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    /// docker's config dir (`$DOCKER_CONFIG`, `~/.docker`).
    pub docker_config_dir: PathBuf,
    /// podman's auth files, first found first.
    pub podman_auth_files: Vec<PathBuf>,
}

impl CredentialStore {
    /// The usual places, as the environment sets them.
    pub fn from_env() -> CredentialStore {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        let docker_config_dir =
            std::env::var_os("DOCKER_CONFIG").map(PathBuf::from).unwrap_or_else(|| home.join(".docker"));
        let mut podman_auth_files = Vec::new();
        if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
            podman_auth_files.push(PathBuf::from(f));
        }
        if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
            podman_auth_files.push(PathBuf::from(run).join("containers/auth.json"));
        }
        podman_auth_files.push(home.join(".config/containers/auth.json"));
        CredentialStore { docker_config_dir, podman_auth_files }
    }

    /// `config.json`'s path.
    pub fn config_path(&self) -> PathBuf {
        self.docker_config_dir.join("config.json")
    }

    fn read_config(&self) -> Result<Option<Map<String, Value>>> {
        read_json_object(&self.config_path())
    }

    /// The credentials for registry `host` (`docker.io`, `localhost:5000`), if any.
    pub fn get(&self, host: &str) -> Result<Option<Credentials>> {
        let wanted = normalize(host);
        let key = config_key(host);
        if let Some(config) = self.read_config()? {
            let path = self.config_path().display().to_string();
            let helper = config
                .get("credHelpers")
                .and_then(Value::as_object)
                .and_then(|h| h.iter().find(|(k, _)| normalize(k) == wanted).map(|(_, v)| v))
                .or_else(|| config.get("credsStore"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            if let Some(helper) = helper {
                return helper_get(helper, &key);
            }
            if let Some(c) = from_auths(&config, &wanted, &path)? {
                return Ok(Some(c));
            }
        }
        for file in &self.podman_auth_files {
            if let Some(config) = read_json_object(file)?
                && let Some(c) = from_auths(&config, &wanted, &file.display().to_string())?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// Stores credentials for `host` as docker login does: through the helper `credHelpers` or
    /// `credsStore` names, else base64 in `auths`. The file is written atomically, mode 0600,
    /// keeping its other keys.
    pub fn store(&self, host: &str, creds: &Credentials) -> Result<()> {
        let key = config_key(host);
        let mut config = self.read_config()?.unwrap_or_default();
        if let Some(helper) = self.helper_for(&config, host) {
            let (user, secret) = match &creds.identity_token {
                Some(t) => ("<token>".to_string(), t.clone()),
                None => (creds.username.clone(), creds.password.clone()),
            };
            let input = json!({ "ServerURL": key, "Username": user, "Secret": secret }).to_string();
            run_helper(&helper, "store", &key, &input)?;
            // docker keeps an empty entry in `auths` so that `docker info` lists the registry.
            let auths = config.entry("auths").or_insert_with(|| json!({}));
            if let Some(a) = auths.as_object_mut() {
                a.insert(key, json!({}));
            }
        } else {
            let auths = config.entry("auths").or_insert_with(|| json!({}));
            if !auths.is_object() {
                *auths = json!({});
            }
            if let Some(a) = auths.as_object_mut() {
                a.retain(|k, _| normalize(k) != normalize(host));
                let entry = match &creds.identity_token {
                    Some(t) => json!({ "identitytoken": t }),
                    None => {
                        json!({ "auth": STANDARD.encode(format!("{}:{}", creds.username, creds.password)) })
                    }
                };
                a.insert(key, entry);
            }
        }
        self.write_config(&config)
    }

    /// Removes the credentials of `host`; false when there were none.
    pub fn erase(&self, host: &str) -> Result<bool> {
        let key = config_key(host);
        let Some(mut config) = self.read_config()? else { return Ok(false) };
        let mut found = false;
        if let Some(helper) = self.helper_for(&config, host) {
            found = run_helper(&helper, "erase", &key, &key).is_ok();
        }
        if let Some(a) = config.get_mut("auths").and_then(Value::as_object_mut) {
            let before = a.len();
            a.retain(|k, _| normalize(k) != normalize(host));
            found |= a.len() != before;
        }
        if found {
            self.write_config(&config)?;
        }
        Ok(found)
    }

    fn helper_for(&self, config: &Map<String, Value>, host: &str) -> Option<String> {
        let wanted = normalize(host);
        config
            .get("credHelpers")
            .and_then(Value::as_object)
            .and_then(|h| h.iter().find(|(k, _)| normalize(k) == wanted).map(|(_, v)| v))
            .or_else(|| config.get("credsStore"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    }

    fn write_config(&self, config: &Map<String, Value>) -> Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let path = self.config_path();
        let io_err = |p: &Path| {
            let p = p.display().to_string();
            move |source| CredentialsError::Io { path: p, source }
        };
        fs::create_dir_all(&self.docker_config_dir).map_err(io_err(&self.docker_config_dir))?;
        let text = serde_json::to_vec_pretty(&Value::Object(config.clone())).map_err(|e| {
            CredentialsError::Invalid { path: path.display().to_string(), message: e.to_string() }
        })?;
        let tmp = self.docker_config_dir.join(format!(".config.json.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(io_err(&tmp))?;
            f.write_all(&text).map_err(io_err(&tmp))?;
            f.write_all(b"\n").map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            fs::rename(&tmp, &path).map_err(io_err(&path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

fn read_json_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CredentialsError::Io { path: path.display().to_string(), source }),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(Map::new()));
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(CredentialsError::Invalid {
            path: path.display().to_string(),
            message: "not a JSON object".into(),
        }),
        Err(e) => Err(CredentialsError::Invalid { path: path.display().to_string(), message: e.to_string() }),
    }
}

fn from_auths(config: &Map<String, Value>, wanted: &str, path: &str) -> Result<Option<Credentials>> {
    let Some(auths) = config.get("auths").and_then(Value::as_object) else { return Ok(None) };
    let Some((key, entry)) = auths.iter().find(|(k, _)| normalize(k) == wanted) else { return Ok(None) };
    let invalid = |message: String| CredentialsError::Invalid { path: path.to_string(), message };
    if let Some(t) = entry.get("identitytoken").and_then(Value::as_str).filter(|t| !t.is_empty()) {
        let username = match entry.get("auth").and_then(Value::as_str) {
            Some(a) => decode_auth(a).map(|(u, _)| u).unwrap_or_default(),
            None => String::new(),
        };
        return Ok(Some(Credentials {
            username,
            password: String::new(),
            identity_token: Some(t.to_string()),
        }));
    }
    if let Some(a) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
        let (username, password) = decode_auth(a)
            .ok_or_else(|| invalid(format!("auths[{key:?}].auth is not base64 of user:password")))?;
        return Ok(Some(Credentials { username, password, identity_token: None }));
    }
    let user = entry.get("username").and_then(Value::as_str);
    let pass = entry.get("password").and_then(Value::as_str);
    if let (Some(u), Some(p)) = (user, pass) {
        return Ok(Some(Credentials { username: u.into(), password: p.into(), identity_token: None }));
    }
    Ok(None)
}

fn decode_auth(a: &str) -> Option<(String, String)> {
    let bytes = STANDARD.decode(a.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

fn helper_error(helper: &str, action: &str, server: &str, message: impl Into<String>) -> CredentialsError {
    CredentialsError::Helper {
        helper: helper.to_string(),
        action: action.to_string(),
        server: server.to_string(),
        message: message.into(),
    }
}

/// Runs `docker-credential-HELPER ACTION` with `input` on stdin; returns its stdout.
fn run_helper(helper: &str, action: &str, server: &str, input: &str) -> Result<Vec<u8>> {
    let mut child = Command::new(helper_command(helper))
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| helper_error(helper, action, server, e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A helper that exits without reading shows in its status and output, below.
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| helper_error(helper, action, server, e.to_string()))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let said = if text.is_empty() { err } else { text };
        // One bounded line: a helper can print a whole stack trace.
        let first = said.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
        let mut line: String = first.chars().take(200).collect();
        if line.len() < first.len() {
            line.push('…');
        }
        return Err(helper_error(helper, action, server, line));
    }
    Ok(out.stdout)
}

fn helper_get(helper: &str, server: &str) -> Result<Option<Credentials>> {
    let out = match run_helper(helper, "get", server, server) {
        Ok(o) => o,
        // The protocol's answer for "nothing stored".
        Err(CredentialsError::Helper { message, .. }) if message.contains("credentials not found") => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let answer: BTreeMap<String, Value> = serde_json::from_slice(&out)
        .map_err(|e| helper_error(helper, "get", server, format!("answer is not JSON: {e}")))?;
    let field = |k: &str| answer.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let (user, secret) = (field("Username"), field("Secret"));
    if secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(if user == "<token>" {
        Credentials { username: String::new(), password: String::new(), identity_token: Some(secret) }
    } else {
        Credentials { username: user, password: secret, identity_token: None }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store_in(dir: &Path) -> CredentialStore {
        CredentialStore {
            docker_config_dir: dir.join("docker"),
            podman_auth_files: vec![dir.join("auth.json")],
        }
    }

    #[test]
    fn keys_follow_docker() {
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("registry-1.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("localhost:5000"), "localhost:5000");
        assert_eq!(normalize("https://h:5000/v1/"), "h:5000");
        assert_eq!(normalize(DOCKER_HUB_KEY), "docker.io");
    }

    #[test]
    fn auths_then_podman() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store_in(tmp.path());
        assert_eq!(s.get("h:5000").unwrap(), None);
        fs::create_dir_all(tmp.path().join("docker")).unwrap();
        let auth = STANDARD.encode("me:se:cret");
        fs::write(
            s.config_path(),
            json!({ "auths": { "https://h:5000/v1/": { "auth": auth }, DOCKER_HUB_KEY: { "identitytoken": "tok" } } })
                .to_string(),
        )
        .unwrap();
        let c = s.get("h:5000").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("me", "se:cret"));
        assert_eq!(s.get("docker.io").unwrap().unwrap().identity_token.as_deref(), Some("tok"));
        fs::write(
            tmp.path().join("auth.json"),
            json!({ "auths": { "p:1": { "auth": STANDARD.encode("pu:pp") } } }).to_string(),
        )
        .unwrap();
        assert_eq!(s.get("p:1").unwrap().unwrap().username, "pu");
        fs::write(s.config_path(), "{not json").unwrap();
        assert!(matches!(s.get("h:5000"), Err(CredentialsError::Invalid { .. })));
    }

    #[test]
    fn store_and_erase_keep_other_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store_in(tmp.path());
        fs::create_dir_all(&s.docker_config_dir).unwrap();
        fs::write(s.config_path(), r#"{"psFormat":"x","auths":{"other:1":{"auth":"b3RoZXI6eA=="}}}"#)
            .unwrap();
        let creds = Credentials { username: "u".into(), password: "p".into(), identity_token: None };
        s.store("localhost:5000", &creds).unwrap();
        let mode = fs::metadata(s.config_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let v: Value = serde_json::from_slice(&fs::read(s.config_path()).unwrap()).unwrap();
        assert_eq!(v["psFormat"], "x");
        assert_eq!(v["auths"]["localhost:5000"]["auth"], STANDARD.encode("u:p"));
        assert_eq!(s.get("localhost:5000").unwrap(), Some(creds));
        assert!(s.erase("localhost:5000").unwrap());
        assert!(!s.erase("localhost:5000").unwrap());
        assert_eq!(s.get("localhost:5000").unwrap(), None);
        assert_eq!(s.get("other:1").unwrap().unwrap().username, "other");
    }

    #[test]
    fn helpers_are_asked_first() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir_all(&bin).unwrap();
        let log = tmp.path().join("helper.log");
        let script = format!(
            "#!/bin/sh\nread server\necho \"$1 $server\" >> {log}\ncase \"$1\" in\n get) if [ \"$server\" = h:1 ]; then echo '{{\"ServerURL\":\"h:1\",\"Username\":\"hu\",\"Secret\":\"hs\"}}'; else echo 'credentials not found in native keychain'; exit 1; fi;;\n *) exit 0;;\nesac\n",
            log = log.display()
        );
        let helper = bin.join("docker-credential-fake-berth-test");
        fs::write(&helper, script).unwrap();
        fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
        let s = store_in(tmp.path());
        fs::create_dir_all(&s.docker_config_dir).unwrap();
        fs::write(
            s.config_path(),
            r#"{"credHelpers":{"h:1":"fake-berth-test"},"auths":{"h:1":{"auth":"eDp5"}}}"#,
        )
        .unwrap();
        HELPER_DIR.with(|d| *d.borrow_mut() = Some(bin.clone()));
        let c = s.get("h:1").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("hu", "hs"));
        fs::write(s.config_path(), r#"{"credsStore":"fake-berth-test"}"#).unwrap();
        assert_eq!(s.get("nothing:2").unwrap(), None);
        let creds = Credentials { username: "u".into(), password: "p".into(), identity_token: None };
        s.store("nothing:2", &creds).unwrap();
        let v: Value = serde_json::from_slice(&fs::read(s.config_path()).unwrap()).unwrap();
        assert_eq!(v["auths"]["nothing:2"], json!({}));
        HELPER_DIR.with(|d| *d.borrow_mut() = None);
        let text = fs::read_to_string(&log).unwrap();
        assert!(text.contains("get h:1") && text.contains("store"), "{text}");
    }
}

#[cfg(test)]
thread_local! {
    /// Tests point helper lookup at their own dir without touching the process's PATH.
    static HELPER_DIR: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
fn helper_command(helper: &str) -> PathBuf {
    let name = format!("docker-credential-{helper}");
    HELPER_DIR.with(|d| d.borrow().as_ref().map(|dir| dir.join(&name))).unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(not(test))]
fn helper_command(helper: &str) -> PathBuf {
    PathBuf::from(format!("docker-credential-{helper}"))
}
