//! Errors of the networking library.

use std::path::PathBuf;

use crate::state::StateError;

/// Everything that can go wrong creating, attaching, detaching or removing networks.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed.
    #[error("netlink: {op}")]
    Netlink {
        /// What was being done.
        op: String,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// A system call or file operation failed.
    #[error("{op}")]
    Sys {
        /// What was being done.
        op: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a record failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// No network of that name exists.
    #[error("network {0} not found")]
    NotFound(String),
    /// A network of that name exists with a different configuration.
    #[error("network {0} already exists with a different configuration")]
    Conflict(String),
    /// The network still has containers attached.
    #[error("network {name} has active endpoints ({containers})")]
    InUse {
        /// The network.
        name: String,
        /// The attached containers, comma separated.
        containers: String,
    },
    /// The request itself is wrong (bad subnet, unknown driver, ...).
    #[error("{0}")]
    Invalid(String),
    /// No free subnet or address is left.
    #[error("{0}")]
    Exhausted(String),
    /// A host port cannot be published.
    #[error("cannot publish {proto} port {host_ip}:{port}: {reason}")]
    PortInUse {
        /// Host address.
        host_ip: String,
        /// Host port.
        port: u16,
        /// tcp or udp.
        proto: String,
        /// Why.
        reason: String,
    },
    /// Applying firewall rules failed.
    #[error("nftables: {0}")]
    Firewall(#[source] nftables::helper::NftablesError),
    /// berth's ruleset is not one the nftables schema takes.
    #[error("nftables: building ruleset: {0}")]
    Ruleset(#[source] serde_json::Error),
    /// A path that should hold a network namespace does not.
    #[error("{0}: not a network namespace")]
    NotNetns(PathBuf),
    /// Several steps of a teardown failed; all of them are listed.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Many(Vec<NetError>),
}

impl NetError {
    /// Wraps an I/O error with what was being done.
    pub fn sys(op: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        NetError::Sys { op: op.into(), source: source.into() }
    }

    /// Folds collected teardown errors into one result.
    pub fn collect(mut errors: Vec<NetError>) -> Result<(), NetError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(NetError::Many(errors)),
        }
    }
}
