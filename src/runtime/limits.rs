//! rlimits (`ulimits`). berth never raises a limit above the hard limit it holds itself: these
//! machines lack CAP_SYS_RESOURCE, and a clear error beats a failed container.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use super::spec::UlimitSpec;

/// A ulimit that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The name is not an rlimit.
    #[error("unknown ulimit {0:?}")]
    Unknown(String),
    /// soft above hard.
    #[error("ulimit {name}: soft limit {soft} is above hard limit {hard}")]
    SoftAboveHard {
        /// The rlimit.
        name: String,
        /// Asked soft limit.
        soft: u64,
        /// Asked hard limit.
        hard: u64,
    },
    /// Above what this process may grant.
    #[error("ulimit {name}: hard limit {hard} is above this host's hard limit {host_hard}")]
    AboveHost {
        /// The rlimit.
        name: String,
        /// Asked hard limit.
        hard: u64,
        /// The host's hard limit.
        host_hard: u64,
    },
    /// The kernel refused.
    #[error("ulimit {name}: {errno}")]
    Set {
        /// The rlimit.
        name: String,
        /// The kernel's answer.
        errno: nix::errno::Errno,
    },
}

/// The rlimit a compose ulimit name stands for.
pub fn resource(name: &str) -> Option<Resource> {
    Some(match name {
        "core" => Resource::RLIMIT_CORE,
        "cpu" => Resource::RLIMIT_CPU,
        "data" => Resource::RLIMIT_DATA,
        "fsize" => Resource::RLIMIT_FSIZE,
        "locks" => Resource::RLIMIT_LOCKS,
        "memlock" => Resource::RLIMIT_MEMLOCK,
        "msgqueue" => Resource::RLIMIT_MSGQUEUE,
        "nice" => Resource::RLIMIT_NICE,
        "nofile" => Resource::RLIMIT_NOFILE,
        "nproc" => Resource::RLIMIT_NPROC,
        "rss" => Resource::RLIMIT_RSS,
        "rtprio" => Resource::RLIMIT_RTPRIO,
        "rttime" => Resource::RLIMIT_RTTIME,
        "sigpending" => Resource::RLIMIT_SIGPENDING,
        "stack" => Resource::RLIMIT_STACK,
        "as" => Resource::RLIMIT_AS,
        _ => return None,
    })
}

/// Checks ulimits against names and this process's hard limits, without applying them, so that
/// a bad one is reported before anything is made.
pub fn check(ulimits: &[UlimitSpec]) -> Result<(), LimitError> {
    for u in ulimits {
        let res = resource(&u.name).ok_or_else(|| LimitError::Unknown(u.name.clone()))?;
        if u.soft > u.hard {
            return Err(LimitError::SoftAboveHard { name: u.name.clone(), soft: u.soft, hard: u.hard });
        }
        let (_, host_hard) =
            getrlimit(res).map_err(|errno| LimitError::Set { name: u.name.clone(), errno })?;
        if u.hard > host_hard {
            return Err(LimitError::AboveHost { name: u.name.clone(), hard: u.hard, host_hard });
        }
    }
    Ok(())
}

/// Applies ulimits to the calling process.
pub fn apply(ulimits: &[UlimitSpec]) -> Result<(), LimitError> {
    check(ulimits)?;
    for u in ulimits {
        let res = resource(&u.name).ok_or_else(|| LimitError::Unknown(u.name.clone()))?;
        setrlimit(res, u.soft, u.hard).map_err(|errno| LimitError::Set { name: u.name.clone(), errno })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_before_use() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let ok = UlimitSpec { name: "nofile".into(), soft: 64, hard: 128.min(hard) };
        assert!(check(&[ok]).is_ok());
        let bad = UlimitSpec { name: "nofile".into(), soft: 10, hard: 5 };
        assert!(matches!(check(&[bad]), Err(LimitError::SoftAboveHard { .. })));
        let unknown = UlimitSpec { name: "wings".into(), soft: 1, hard: 1 };
        assert_eq!(check(&[unknown]), Err(LimitError::Unknown("wings".into())));
        if hard != u64::MAX {
            let above = UlimitSpec { name: "nofile".into(), soft: 1, hard: hard + 1 };
            assert!(matches!(check(&[above]), Err(LimitError::AboveHost { .. })));
        }
    }
}
