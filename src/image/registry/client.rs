//! HTTP to registries: one ureq agent per host (its TLS trust and client certificate), the
//! scheme each host speaks, the auth challenge it sent, bearer tokens per scope with their
//! expiry, statuses mapped to typed errors, and bounded retries with back-off.

use std::collections::HashMap;
use std::fs;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use ureq::http::{Response, StatusCode};
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::credentials::Credentials;
use super::{RegistryError, RegistryOptions};

/// How a host asked to be authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    None,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

#[derive(Debug)]
struct Host {
    agent: Agent,
    /// `https://host:port` or `http://...`.
    base: String,
    challenge: Challenge,
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    expires: Instant,
}

/// A request the caller builds and sends, given the agent, the base URL and the
/// `Authorization` header value to use (none when anonymous).
pub(crate) type SendRequest<'a> =
    dyn Fn(&Agent, &str, Option<&str>) -> Result<Response<Body>, ureq::Error> + 'a;

/// The shared HTTP state of a `Registry`.
pub(crate) struct Client {
    opts: RegistryOptions,
    hosts: Mutex<HashMap<String, Arc<Host>>>,
    /// Serializes the first contact with each host (so parallel pulls ping once).
    host_init: Mutex<()>,
    tokens: Mutex<HashMap<(String, String), Token>>,
    /// Credentials given for this process (`login`), before any store.
    given: Mutex<HashMap<String, Credentials>>,
}

/// Whether docker would allow plain HTTP to `host` (`host[:port]`) without configuration.
pub(crate) fn is_local(host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host
            .rsplit_once(':')
            .map_or(host, |(h, p)| if p.chars().all(|c| c.is_ascii_digit()) { h } else { host }),
    };
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => false,
    }
}

fn percent(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`).
fn parse_challenge(header: &str) -> Challenge {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Challenge::Basic;
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Challenge::None;
    }
    let mut params = HashMap::new();
    let mut s = rest.trim();
    while !s.is_empty() {
        let Some((key, after)) = s.split_once('=') else { break };
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(key, value.to_string());
        s = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    match params.remove("realm") {
        Some(realm) => Challenge::Bearer { realm, service: params.remove("service") },
        None => Challenge::None,
    }
}

/// Longest registry message kept in an error (an error page can be megabytes of HTML).
const MAX_MESSAGE: usize = 200;

/// `text` cut to `MAX_MESSAGE` characters on one line.
fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= MAX_MESSAGE {
        flat
    } else {
        format!("{}…", flat.chars().take(MAX_MESSAGE - 1).collect::<String>())
    }
}

/// The gist of an error body: the distribution spec's `errors` (`message (CODE)`, at most
/// three), an HTML page's `<title>`, else its first non-empty line; one line, bounded.
pub(crate) fn summarize_body(text: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<Value>(text)
        && let Some(errors) = v["errors"].as_array()
    {
        let msgs: Vec<String> = errors
            .iter()
            .take(3)
            .map(|e| {
                let code = e["code"].as_str().unwrap_or_default();
                let msg = one_line(e["message"].as_str().unwrap_or_default());
                match (code.is_empty(), msg.is_empty()) {
                    (true, _) => msg,
                    (false, true) => code.to_string(),
                    (false, false) => format!("{msg} ({code})"),
                }
            })
            .filter(|m| !m.is_empty())
            .collect();
        if !msgs.is_empty() {
            let more = errors.len().saturating_sub(3);
            let tail = if more > 0 { format!(" (and {more} more)") } else { String::new() };
            return Some(format!("{}{tail}", msgs.join("; ")));
        }
    }
    let lower = text.to_ascii_lowercase();
    if let (Some(start), Some(end)) = (lower.find("<title>"), lower.find("</title>"))
        && start + 7 <= end
    {
        let title = one_line(&text[start + 7..end]);
        if !title.is_empty() {
            return Some(title);
        }
    }
    text.lines()
        .map(|l| {
            // Markup is dropped: what is left of a line of HTML is its words.
            let mut out = String::new();
            let mut in_tag = false;
            for c in l.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' if in_tag => in_tag = false,
                    c if !in_tag => out.push(c),
                    _ => {}
                }
            }
            one_line(&out)
        })
        .find(|l| !l.is_empty())
}

/// The registry's own words for a failure (see [`summarize_body`]), or the status's reason.
pub(crate) fn error_text(resp: Response<Body>) -> String {
    let status = resp.status();
    let mut body = resp.into_body();
    let text = body.with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
    summarize_body(&text).unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string())
}

/// A failing response as a typed error about `what`.
pub(crate) fn status_error(what: &str, registry: &str, resp: Response<Body>) -> RegistryError {
    let status = resp.status().as_u16();
    let message = error_text(resp);
    let what = what.to_string();
    match status {
        401 => RegistryError::Unauthorized { what, registry: registry.to_string(), message },
        403 => RegistryError::Denied { what, message },
        404 => RegistryError::NotFound { what, message },
        _ => RegistryError::Status { what, status, message },
    }
}

/// Whether a transport error is worth another attempt: a reset or refused connection is; a
/// timeout is not (a registry that answered nothing for the whole bound would only make the
/// user wait that long again, as often as there are attempts).
pub(crate) fn transient(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(_) | ureq::Error::ConnectionFailed | ureq::Error::Protocol(_))
        && !matches!(e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
}

/// A transport error as a typed error about `registry`; timeouts say which bound was hit.
fn unreachable(opts: &RegistryOptions, registry: &str, e: &ureq::Error) -> RegistryError {
    use ureq::Timeout as T;
    let timeout = match e {
        ureq::Error::Timeout(T::Connect | T::Resolve) => Some(("connect", opts.connect_timeout)),
        ureq::Error::Timeout(T::Global | T::PerCall) => Some(("response", opts.ping_timeout)),
        ureq::Error::Timeout(_) => Some(("read", opts.read_timeout)),
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Some(("read", opts.read_timeout)),
        _ => None,
    };
    match timeout {
        Some((phase, d)) => RegistryError::Timeout {
            registry: registry.to_string(),
            seconds: d.as_secs_f64().ceil() as u64,
            phase,
        },
        None => RegistryError::Unreachable { registry: registry.to_string(), message: e.to_string() },
    }
}

/// A read error of a response body as a typed error (a stall past the read bound is a
/// [`RegistryError::Timeout`]).
pub(crate) fn body_error(
    opts: &RegistryOptions,
    registry: &str,
    e: &std::io::Error,
    what: &str,
) -> RegistryError {
    if e.kind() == std::io::ErrorKind::TimedOut {
        RegistryError::Timeout {
            registry: registry.to_string(),
            seconds: opts.read_timeout.as_secs_f64().ceil() as u64,
            phase: "read",
        }
    } else {
        RegistryError::Unreachable { registry: registry.to_string(), message: format!("{what}: {e}") }
    }
}

fn tls_config(opts: &RegistryOptions, host: &str) -> Result<TlsConfig, RegistryError> {
    let io = |p: &std::path::Path| {
        let path = p.display().to_string();
        move |source| RegistryError::Io { path, source }
    };
    let mut roots: Vec<Certificate<'static>> = Vec::new();
    let mut add_pem = |bytes: &[u8]| {
        for item in ureq::tls::parse_pem(bytes).flatten() {
            if let ureq::tls::PemItem::Certificate(c) = item {
                roots.push(c);
            }
        }
    };
    if let Ok(bytes) = fs::read(&opts.system_roots) {
        add_pem(&bytes);
    }
    let mut client_cert = None;
    let dir = opts.certs_dir.join(host);
    if let Ok(entries) = fs::read_dir(&dir) {
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in &files {
            match f.extension().and_then(|e| e.to_str()) {
                Some("crt") => add_pem(&fs::read(f).map_err(io(f))?),
                Some("cert") => {
                    let key_path = f.with_extension("key");
                    let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(&fs::read(f).map_err(io(f))?)
                        .flatten()
                        .filter_map(|i| match i {
                            ureq::tls::PemItem::Certificate(c) => Some(c),
                            _ => None,
                        })
                        .collect();
                    let key_bytes = fs::read(&key_path).map_err(io(&key_path))?;
                    let key = PrivateKey::from_pem(&key_bytes).map_err(|e| RegistryError::Key {
                        path: key_path.display().to_string(),
                        source: Box::new(e),
                    })?;
                    client_cert = Some(ClientCert::new_with_certs(&certs, key));
                }
                _ => {}
            }
        }
    }
    Ok(TlsConfig::builder().root_certs(RootCerts::new_with_certs(&roots)).client_cert(client_cert).build())
}

/// An HTTP agent for `host` (`host[:port]`) as registries get one: the system roots plus the
/// CAs and client certificate of `<certs dir>/HOST/`, the timeouts of `opts`, proxies from the
/// environment (ureq's default), statuses returned rather than raised. `ADD <url>` downloads
/// through it too, so a build trusts what a pull trusts.
pub(crate) fn agent(opts: &RegistryOptions, host: &str) -> Result<Agent, RegistryError> {
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_per_read(Some(opts.read_timeout))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls_config(opts, host)?)
        .build();
    Ok(Agent::new_with_config(config))
}

impl Client {
    pub(crate) fn new(opts: RegistryOptions) -> Client {
        Client {
            opts,
            hosts: Mutex::new(HashMap::new()),
            host_init: Mutex::new(()),
            tokens: Mutex::new(HashMap::new()),
            given: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn opts(&self) -> &RegistryOptions {
        &self.opts
    }

    fn insecure(&self, host: &str) -> bool {
        is_local(host) || self.opts.insecure_registries.iter().any(|h| h == host)
    }

    fn agent(&self, host: &str) -> Result<Agent, RegistryError> {
        agent(&self.opts, host)
    }

    /// The host's state, pinging `/v2/` on first contact to learn its scheme and challenge.
    fn host(&self, host: &str) -> Result<Arc<Host>, RegistryError> {
        if let Some(h) = self.hosts.lock().ok().and_then(|m| m.get(host).cloned()) {
            return Ok(h);
        }
        let _init = self.host_init.lock();
        if let Some(h) = self.hosts.lock().ok().and_then(|m| m.get(host).cloned()) {
            return Ok(h);
        }
        let agent = self.agent(host)?;
        let mut schemes = vec!["https"];
        if self.insecure(host) {
            schemes.push("http");
        }
        let mut last = None;
        let mut tls_error: Option<ureq::Error> = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let base = format!("{scheme}://{host}");
            let mut attempt = 0;
            let resp = loop {
                // The whole ping is bounded (docker: 15 s), so a server that takes the
                // connection and then says nothing fails in that time, not the read bound's.
                let ping = agent
                    .get(format!("{base}/v2/"))
                    .config()
                    .timeout_global(Some(self.opts.ping_timeout))
                    .build()
                    .call();
                match ping {
                    Ok(r) if r.status().is_server_error() && attempt + 1 < self.opts.attempts => {}
                    Err(e) if transient(&e) && i + 1 == schemes.len() && attempt + 1 < self.opts.attempts => {
                    }
                    other => break other,
                }
                std::thread::sleep(self.opts.backoff * 2u32.saturating_pow(attempt));
                attempt += 1;
            };
            match resp {
                // Plain HTTP to a TLS server gets a 400 (not a registry's answer): the TLS
                // failure is what the user must hear about.
                Ok(r)
                    if *scheme == "http"
                        && !matches!(r.status().as_u16(), 200..=299 | 401)
                        && tls_error.is_some() =>
                {
                    if let Some(e) = tls_error.take() {
                        return Err(unreachable(&self.opts, host, &e));
                    }
                }
                Ok(r) => {
                    let challenge = match r.status() {
                        StatusCode::UNAUTHORIZED => r
                            .headers()
                            .get_all("www-authenticate")
                            .iter()
                            .filter_map(|v| v.to_str().ok())
                            .map(parse_challenge)
                            .find(|c| *c != Challenge::None)
                            .unwrap_or(Challenge::None),
                        _ => Challenge::None,
                    };
                    if r.status().is_server_error() {
                        return Err(status_error(&format!("registry {host}"), host, r));
                    }
                    tracing::debug!(host, base = %base, challenge = ?challenge, "registry contacted");
                    let h = Arc::new(Host { agent, base, challenge });
                    if let Ok(mut m) = self.hosts.lock() {
                        m.insert(host.to_string(), h.clone());
                    }
                    return Ok(h);
                }
                Err(e) => {
                    if *scheme == "https" {
                        tls_error = Some(e);
                    } else {
                        last = Some(e);
                    }
                }
            }
        }
        let last = match (tls_error, last) {
            // Both failed: the HTTPS error says more unless the host is not there at all.
            (Some(t), Some(l)) if !matches!(l, ureq::Error::ConnectionFailed) => Some(t),
            (Some(t), None) => Some(t),
            (_, l) => l,
        };
        Err(match last {
            Some(e) => unreachable(&self.opts, host, &e),
            None => {
                RegistryError::Unreachable { registry: host.to_string(), message: "no scheme to try".into() }
            }
        })
    }

    fn credentials(&self, host: &str) -> Result<Option<Credentials>, RegistryError> {
        if let Some(c) = self.given.lock().ok().and_then(|m| m.get(host).cloned()) {
            return Ok(Some(c));
        }
        let lookup = if host == "registry-1.docker.io" { "docker.io" } else { host };
        Ok(self.opts.credentials.get(lookup)?)
    }

    /// A bearer token for `scopes` at `host`, from the cache unless `fresh`.
    fn token(
        &self,
        host: &str,
        h: &Host,
        scopes: &[String],
        fresh: bool,
    ) -> Result<Option<String>, RegistryError> {
        let Challenge::Bearer { realm, service } = &h.challenge else { return Ok(None) };
        let key = (host.to_string(), scopes.join(" "));
        if !fresh
            && let Some(t) = self.tokens.lock().ok().and_then(|m| m.get(&key).cloned())
            && t.expires > Instant::now() + Duration::from_secs(5)
        {
            return Ok(Some(t.value));
        }
        let creds = self.credentials(host)?;
        let what = format!("token for {} at {realm}", if scopes.is_empty() { host } else { &key.1 });
        let send = |r: Result<Response<Body>, ureq::Error>| r.map_err(|e| unreachable(&self.opts, realm, &e));
        let resp = match creds.as_ref().and_then(|c| c.identity_token.clone()) {
            // docker's refresh-token flow: POST the identity token to the OAuth endpoint.
            Some(refresh) => {
                let mut form =
                    format!("grant_type=refresh_token&refresh_token={}&client_id=berth", percent(&refresh));
                if let Some(s) = service {
                    form.push_str(&format!("&service={}", percent(s)));
                }
                if !scopes.is_empty() {
                    form.push_str(&format!("&scope={}", percent(&scopes.join(" "))));
                }
                send(
                    h.agent
                        .post(realm)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .send(form.as_bytes()),
                )?
            }
            None => {
                let mut url = realm.clone();
                let mut sep = if url.contains('?') { '&' } else { '?' };
                if let Some(s) = service {
                    url.push_str(&format!("{sep}service={}", percent(s)));
                    sep = '&';
                }
                for s in scopes {
                    url.push_str(&format!("{sep}scope={}", percent(s)));
                    sep = '&';
                }
                let mut req = h.agent.get(&url);
                if let Some(c) = &creds {
                    let basic = STANDARD.encode(format!("{}:{}", c.username, c.password));
                    req = req.header("Authorization", format!("Basic {basic}"));
                }
                send(req.call())?
            }
        };
        if !resp.status().is_success() {
            return Err(status_error(&what, host, resp));
        }
        let body =
            resp.into_body().with_config().limit(1 << 20).read_to_vec().map_err(|e| {
                RegistryError::Unreachable { registry: realm.clone(), message: e.to_string() }
            })?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|source| RegistryError::Malformed { what: what.clone(), source })?;
        let value = v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| RegistryError::Invalid {
                what: what.clone(),
                message: "no token in the answer".into(),
            })?
            .to_string();
        // docker's rule: a token lives 60 s unless the server says longer.
        let lifetime = v["expires_in"].as_u64().unwrap_or(60).max(60);
        let token = Token { value: value.clone(), expires: Instant::now() + Duration::from_secs(lifetime) };
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(key, token);
        }
        Ok(Some(value))
    }

    fn authorization(
        &self,
        host: &str,
        h: &Host,
        scopes: &[String],
        fresh: bool,
    ) -> Result<Option<String>, RegistryError> {
        match &h.challenge {
            Challenge::None => Ok(None),
            Challenge::Basic => Ok(self
                .credentials(host)?
                .map(|c| format!("Basic {}", STANDARD.encode(format!("{}:{}", c.username, c.password))))),
            Challenge::Bearer { .. } => {
                Ok(self.token(host, h, scopes, fresh)?.map(|t| format!("Bearer {t}")))
            }
        }
    }

    /// Sends a request built by `send` to `host` with auth for `scopes`: re-challenged once on
    /// 401; retried with back-off on connection errors and 5xx when `retry` (idempotent).
    /// Returns the response whatever its status (callers map statuses with `status_error`).
    pub(crate) fn request(
        &self,
        host: &str,
        scopes: &[String],
        retry: bool,
        send: &SendRequest<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        let h = self.host(host)?;
        let mut auth = self.authorization(host, &h, scopes, false)?;
        let mut reauthed = false;
        let mut attempt = 0u32;
        loop {
            let result = send(&h.agent, &h.base, auth.as_deref());
            let again = match &result {
                Ok(r)
                    if r.status() == StatusCode::UNAUTHORIZED
                        && !reauthed
                        && h.challenge != Challenge::None =>
                {
                    // An expired or revoked token: ask for a new one, once.
                    reauthed = true;
                    auth = self.authorization(host, &h, scopes, true)?;
                    true
                }
                Ok(r) => retry && r.status().is_server_error() && attempt + 1 < self.opts.attempts,
                Err(e) => retry && transient(e) && attempt + 1 < self.opts.attempts,
            };
            if !again {
                return result.map_err(|e| unreachable(&self.opts, host, &e));
            }
            if !matches!(&result, Ok(r) if r.status() == StatusCode::UNAUTHORIZED) {
                tracing::debug!(host, attempt, "request failed; retrying");
                std::thread::sleep(self.opts.backoff * 2u32.saturating_pow(attempt));
                attempt += 1;
            }
        }
    }

    /// Sleeps the back-off of attempt `n` (0-based).
    pub(crate) fn backoff(&self, n: u32) {
        std::thread::sleep(self.opts.backoff * 2u32.saturating_pow(n));
    }

    /// `login`: checks the credentials against `server`, as docker does (a token request
    /// without scope for bearer registries, `/v2/` with basic auth otherwise).
    pub(crate) fn login(&self, server: &str, username: &str, password: &str) -> Result<(), RegistryError> {
        let host =
            match server.trim_start_matches("https://").trim_start_matches("http://").split('/').next() {
                Some("docker.io" | "index.docker.io" | "registry-1.docker.io") | None | Some("") => {
                    "registry-1.docker.io"
                }
                Some(h) => h,
            }
            .to_string();
        if let Ok(mut m) = self.given.lock() {
            m.insert(
                host.clone(),
                Credentials {
                    username: username.to_string(),
                    password: password.to_string(),
                    identity_token: None,
                },
            );
        }
        let h = self.host(&host)?;
        match &h.challenge {
            Challenge::Bearer { .. } => self.token(&host, &h, &[], true).map(|_| ()),
            _ => {
                let resp = self.request(&host, &[], true, &|agent, base, auth| {
                    let mut req = agent.get(format!("{base}/v2/"));
                    if let Some(a) = auth {
                        req = req.header("Authorization", a);
                    }
                    req.call()
                })?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(status_error(&format!("login to {server}"), &host, resp))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            }
        );
        assert_eq!(parse_challenge(r#"Basic realm="Registry Realm""#), Challenge::Basic);
        assert_eq!(
            parse_challenge("Bearer realm=http://x/t, service=y"),
            Challenge::Bearer { realm: "http://x/t".into(), service: Some("y".into()) }
        );
        assert_eq!(parse_challenge("Negotiate"), Challenge::None);
    }

    #[test]
    fn local_hosts_may_be_plain_http() {
        for h in ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1"] {
            assert!(is_local(h), "{h}");
        }
        for h in ["docker.io", "10.0.0.1:5000", "example.com:443", "[2001:db8::1]:5000"] {
            assert!(!is_local(h), "{h}");
        }
    }

    #[test]
    fn error_bodies_are_one_bounded_line() {
        let page = format!(
            "<html>\n<head><title>501 Not Implemented</title></head><body>{}</body>",
            "x".repeat(9000)
        );
        assert_eq!(summarize_body(&page).unwrap(), "501 Not Implemented");
        let json = r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:x"}]}"#;
        assert_eq!(summarize_body(json).unwrap(), "blob unknown to registry (BLOB_UNKNOWN)");
        let many = serde_json::json!({"errors": (0..5).map(|i| serde_json::json!({"code": format!("C{i}")})).collect::<Vec<_>>()});
        assert_eq!(summarize_body(&many.to_string()).unwrap(), "C0; C1; C2 (and 2 more)");
        let long = format!("\n\n  <p>{}</p>\nsecond line", "word ".repeat(100));
        let got = summarize_body(&long).unwrap();
        assert!(got.chars().count() == MAX_MESSAGE && got.ends_with('…') && !got.contains('<'), "{got}");
        assert_eq!(summarize_body("  \n "), None);
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
    }
}
