//! Which capabilities a container's process keeps: docker's default set, changed by
//! `cap_add` / `cap_drop`, or everything for `privileged`.

use std::collections::HashSet;

use caps::Capability;

/// docker's default capability set (CapEff `00000000a80425fb`).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// A capability name that is not known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}")]
pub struct UnknownCapability(pub String);

/// Parses `NET_ADMIN`, `CAP_NET_ADMIN` or `net_admin`. `ALL` is handled by the caller.
pub fn parse_capability(name: &str) -> Result<Capability, UnknownCapability> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    full.parse::<Capability>().map_err(|_| UnknownCapability(name.to_string()))
}

/// The capabilities the host lets us hand out: those in our own bounding set.
pub fn host_capabilities() -> HashSet<Capability> {
    caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all())
}

/// The set the process keeps. `cap_drop: [ALL]` empties the set before `cap_add`, as docker
/// applies it; `cap_add: [ALL]` and `privileged` grant every capability the host has.
pub fn effective_set(
    privileged: bool,
    cap_add: &[String],
    cap_drop: &[String],
    host: &HashSet<Capability>,
) -> Result<HashSet<Capability>, UnknownCapability> {
    if privileged {
        return Ok(host.clone());
    }
    let is_all =
        |s: &String| s.trim().eq_ignore_ascii_case("ALL") || s.trim().eq_ignore_ascii_case("CAP_ALL");
    let mut set: HashSet<Capability> = DEFAULT_CAPABILITIES.into_iter().collect();
    if cap_drop.iter().any(is_all) {
        set.clear();
    } else {
        for name in cap_drop {
            set.remove(&parse_capability(name)?);
        }
    }
    if cap_add.iter().any(is_all) {
        set.extend(host.iter().copied());
    } else {
        for name in cap_add {
            set.insert(parse_capability(name)?);
        }
    }
    set.retain(|c| host.contains(c));
    Ok(set)
}

/// The set as the kernel prints it in `/proc/PID/status` (`CapEff`), for the tests to compare
/// with docker's.
#[cfg(test)]
pub fn mask(set: &HashSet<Capability>) -> u64 {
    set.iter().fold(0u64, |m, c| m | c.bitmask())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(items: &[&str]) -> Vec<String> {
        items.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_set_matches_docker() {
        let host = caps::all();
        let set = effective_set(false, &[], &[], &host).unwrap();
        assert_eq!(format!("{:016x}", mask(&set)), "00000000a80425fb");
    }

    #[test]
    fn drop_all_then_add() {
        let host = caps::all();
        assert_eq!(mask(&effective_set(false, &[], &s(&["ALL"]), &host).unwrap()), 0);
        let set = effective_set(false, &s(&["net_admin"]), &s(&["ALL"]), &host).unwrap();
        assert_eq!(set, [Capability::CAP_NET_ADMIN].into_iter().collect());
        let set = effective_set(false, &[], &s(&["CAP_CHOWN", "KILL"]), &host).unwrap();
        assert!(!set.contains(&Capability::CAP_CHOWN) && !set.contains(&Capability::CAP_KILL));
    }

    #[test]
    fn unknown_names_and_host_limits() {
        assert!(effective_set(false, &s(&["FLY"]), &[], &caps::all()).is_err());
        let mut host = caps::all();
        host.remove(&Capability::CAP_SYS_RESOURCE);
        let set = effective_set(true, &[], &[], &host).unwrap();
        assert!(!set.contains(&Capability::CAP_SYS_RESOURCE));
        assert!(set.contains(&Capability::CAP_SYS_ADMIN));
    }
}
