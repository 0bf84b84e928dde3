//! The process a container runs: its argv from image and service, its user from the
//! container's own `/etc/passwd` and `/etc/group`, and the environment docker adds.


/// The PATH docker sets when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Combines the image's `Entrypoint`/`Cmd` with the service's `entrypoint`/`command`, as docker
/// does: a service entrypoint replaces the image's and drops the image's Cmd; a service command
/// replaces the Cmd; the result is entrypoint followed by cmd.
pub fn combine_args(
    image_entrypoint: &[String],
    image_cmd: &[String],
    entrypoint: Option<&[String]>,
    command: Option<&[String]>,
) -> Vec<String> {
    let (entry, default_cmd): (&[String], &[String]) = match entrypoint {
        Some(e) => (e, &[]),
        None => (image_entrypoint, image_cmd),
    };
    let cmd = command.unwrap_or(default_cmd);
    entry.iter().chain(cmd.iter()).cloned().collect()
}

/// Who the process runs as, resolved inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups: the user's groups from `/etc/group`, then `group_add`.
    pub groups: Vec<u32>,
    /// Home directory from `/etc/passwd` (`/` when the user has no entry).
    pub home: String,
}

/// A user or group that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A name has no entry in the container's passwd file.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    /// A name has no entry in the container's group file.
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
}

/// One line of `/etc/passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

/// One line of `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || line.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 || line.starts_with('#') {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3].split(',').filter(|m| !m.is_empty()).map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Resolves `user` (`uid`, `uid:gid`, `name`, `name:group`, empty for root) and `group_add`
/// against the container's passwd and group files (their text; empty when absent). Numbers need
/// no entry, as with docker; names must have one.
pub fn resolve_user(
    user: Option<&str>,
    group_add: &[String],
    passwd: &str,
    group: &str,
) -> Result<ResolvedUser, UserError> {
    let users = parse_passwd(passwd);
    let groups = parse_group(group);
    let spec = user.unwrap_or("").trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => users.iter().find(|e| e.uid == uid).cloned().or(Some(PasswdEntry {
            name: String::new(),
            uid,
            gid: 0,
            home: "/".into(),
        })),
        Err(_) => users.iter().find(|e| e.name == user_part).cloned(),
    }
    .ok_or_else(|| UserError::UnknownUser(user_part.to_string()))?;
    let lookup_group = |g: &str| -> Result<u32, UserError> {
        match g.parse::<u32>() {
            Ok(gid) => Ok(gid),
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| UserError::UnknownGroup(g.to_string())),
        }
    };
    let gid = match group_part {
        Some(g) if !g.is_empty() => lookup_group(g)?,
        _ => entry.gid,
    };
    let mut supplementary: Vec<u32> = Vec::new();
    // As docker: with an explicit group, the user's other groups are not added.
    if group_part.is_none() && !entry.name.is_empty() {
        for g in &groups {
            if g.members.iter().any(|m| m == &entry.name) && !supplementary.contains(&g.gid) {
                supplementary.push(g.gid);
            }
        }
    }
    for g in group_add {
        let gid = lookup_group(g)?;
        if !supplementary.contains(&gid) {
            supplementary.push(gid);
        }
    }
    let home = if entry.home.is_empty() { "/".to_string() } else { entry.home.clone() };
    Ok(ResolvedUser { uid: entry.uid, gid, groups: supplementary, home })
}

/// The environment the process gets: the spec's, plus `PATH`, `HOSTNAME`, `HOME` and (with a
/// tty) `TERM` where the spec has none, as docker adds them.
pub fn process_env(env: &[String], hostname: &str, home: &str, tty: bool) -> Vec<String> {
    let has = |key: &str| env.iter().any(|e| e.split('=').next() == Some(key));
    let mut out = Vec::with_capacity(env.len() + 4);
    if !has("PATH") {
        out.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOSTNAME") {
        out.push(format!("HOSTNAME={hostname}"));
    }
    out.extend(env.iter().cloned());
    if tty && !has("TERM") {
        out.push("TERM=xterm".into());
    }
    if !has("HOME") {
        out.push(format!("HOME={home}"));
    }
    out
}

/// Finds `program` in the `PATH` of `env` (a name with a slash is taken as it is), checking files
/// relative to the current root; the container's root after pivot_root.
pub fn find_program(program: &str, env: &[String]) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return Some(program.to_string());
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
    path.split(':').filter(|d| !d.is_empty()).find_map(|dir| {
        let candidate = format!("{}/{program}", dir.trim_end_matches('/'));
        let meta = std::fs::metadata(&candidate).ok()?;
        (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then_some(candidate)
    })
}

pub use super::signal::SignalName;

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entrypoint_override_drops_image_cmd() {
        let (ie, ic) = (v(&["/entry"]), v(&["serve"]));
        assert_eq!(combine_args(&ie, &ic, None, None), v(&["/entry", "serve"]));
        assert_eq!(combine_args(&ie, &ic, Some(&v(&["/bin/sh"])), None), v(&["/bin/sh"]));
        assert_eq!(combine_args(&ie, &ic, None, Some(&v(&["x"]))), v(&["/entry", "x"]));
        assert_eq!(combine_args(&ie, &ic, Some(&v(&["a"])), Some(&v(&["b"]))), v(&["a", "b"]));
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:app,other\n";

    #[test]
    fn users_resolve_by_number_and_name() {
        let r = resolve_user(None, &[], PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let r = resolve_user(Some("65534:65534"), &[], PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid), (65534, 65534));
        let r = resolve_user(Some("app"), &[], PASSWD, GROUP).unwrap();
        assert_eq!((r.uid, r.gid, r.groups.clone()), (1000, 1000, vec![10, 29]));
        let r = resolve_user(Some("app:nogroup"), &v(&["wheel", "7"]), PASSWD, GROUP).unwrap();
        assert_eq!((r.gid, r.groups), (65534, vec![10, 7]));
        let r = resolve_user(Some("4242"), &[], "", "").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (4242, 0, "/"));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve_user(Some("ghost"), &[], PASSWD, GROUP),
            Err(UserError::UnknownUser("ghost".into()))
        );
        assert_eq!(
            resolve_user(Some("app:ghosts"), &[], PASSWD, GROUP),
            Err(UserError::UnknownGroup("ghosts".into()))
        );
    }

    #[test]
    fn env_gets_docker_defaults() {
        let env = process_env(&v(&["A=1"]), "h1", "/root", true);
        assert_eq!(
            env,
            v(&[&format!("PATH={DEFAULT_PATH}"), "HOSTNAME=h1", "A=1", "TERM=xterm", "HOME=/root"])
        );
        let env = process_env(&v(&["PATH=/x", "HOME=/h"]), "h1", "/root", false);
        assert_eq!(env, v(&["HOSTNAME=h1", "PATH=/x", "HOME=/h"]));
    }
}
