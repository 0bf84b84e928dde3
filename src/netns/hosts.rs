//! The files a container sees as `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::error::NetError;

/// Host resolv.conf; when it names only a loopback stub (systemd-resolved), the real upstream
/// list is in systemd's own file.
pub fn host_resolv_conf() -> String {
    let main = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let ns = nameservers(&main);
    if !ns.is_empty()
        && ns.iter().all(|ip| ip.is_loopback())
        && let Ok(real) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
    {
        return real;
    }
    main
}

/// The `nameserver` addresses of a resolv.conf text.
pub fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|s| s.split('%').next().and_then(|s| s.parse().ok()))
        .collect()
}

/// What goes into a container's files.
#[derive(Debug, Default)]
pub struct FilesSpec<'a> {
    /// Hostname.
    pub hostname: &'a str,
    /// The container's own addresses (each gets a line with the hostname).
    pub own: Vec<IpAddr>,
    /// Extra `/etc/hosts` lines, already resolved (no `host-gateway`).
    pub extra_hosts: Vec<(String, String)>,
    /// Nameservers; empty means a copy of the host's resolv.conf.
    pub nameservers: Vec<IpAddr>,
    /// `search` domains.
    pub search: &'a [String],
    /// `options`.
    pub options: &'a [String],
    /// For host networking: start from the host's /etc/hosts instead of localhost lines.
    pub host_hosts: bool,
}

/// Paths of the three files in `dir`.
pub fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join("hosts"), dir.join("resolv.conf"), dir.join("hostname"))
}

/// Writes hosts, resolv.conf and hostname into `dir`.
pub fn write(dir: &Path, spec: &FilesSpec<'_>) -> Result<(), NetError> {
    std::fs::create_dir_all(dir).map_err(|e| NetError::sys(format!("create {}", dir.display()), e))?;
    let (hosts, resolv, hostname) = paths(dir);

    let mut h = if spec.host_hosts {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_string()
    };
    if !h.is_empty() && !h.ends_with('\n') {
        h.push('\n');
    }
    for ip in &spec.own {
        h.push_str(&format!("{ip}\t{}\n", spec.hostname));
    }
    for (name, ip) in &spec.extra_hosts {
        h.push_str(&format!("{ip}\t{name}\n"));
    }

    let mut r = String::new();
    if spec.nameservers.is_empty() {
        for line in host_resolv_conf().lines() {
            let t = line.trim_start();
            // Our own search/options replace the host's when given.
            if (t.starts_with("search") && !spec.search.is_empty())
                || (t.starts_with("options") && !spec.options.is_empty())
            {
                continue;
            }
            r.push_str(line);
            r.push('\n');
        }
    } else {
        for ns in &spec.nameservers {
            r.push_str(&format!("nameserver {ns}\n"));
        }
    }
    if !spec.search.is_empty() {
        r.push_str(&format!("search {}\n", spec.search.join(" ")));
    }
    if !spec.options.is_empty() {
        r.push_str(&format!("options {}\n", spec.options.join(" ")));
    }

    for (path, text) in [(hosts, h), (resolv, r), (hostname, format!("{}\n", spec.hostname))] {
        std::fs::write(&path, text).map_err(|e| NetError::sys(format!("write {}", path.display()), e))?;
    }
    Ok(())
}
