//! The engine's errors: each names the service, container, network or volume it is about.

use crate::graph::GraphError;
use crate::image::ImageError;
use crate::image::build::BuildError;
use crate::image::registry::RegistryError;
use crate::netns::NetError;
use crate::runtime::RuntimeError;
use crate::state::StateError;
use crate::volume::VolumeError;

use super::spec::SpecError;

/// A `pull_policy` value berth does not know (the value as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid pull_policy {0:?}: expected always, missing, never, build, daily, weekly or every_<duration> (e.g. every_12h)"
)]
pub struct BadPullPolicy(pub String);

/// Why one pull, build or push of an [`super::images::ImageProvider`] failed; the cause is kept as its
/// source, so the CLI's message ends with the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum ImageJobError {
    /// The registry client failed (a bad name or platform, the network, the registry).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store holds a damaged copy of the image and pulling it again failed: the damage is
    /// what the user must hear of, the pull's failure is its cause.
    #[error("{damaged} (pulling it again failed: {source})")]
    Damaged {
        /// What is wrong with the stored image.
        damaged: Box<ImageError>,
        /// Why the pull that should have replaced it failed.
        #[source]
        source: RegistryError,
    },
    /// The builder failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The compose `build:` section cannot become a build here (worded for the user; there
    /// is no underlying error).
    #[error("{0}")]
    Invalid(String),
    /// A `build.ssh` entry is not one berth reads.
    #[error(transparent)]
    Ssh(#[from] crate::image::build::ssh::SshError),
    /// The thread running the build panicked.
    #[error("the build thread panicked")]
    Panicked,
}

/// Why a dependency's `depends_on` condition does not hold.
#[derive(Debug, thiserror::Error)]
pub enum Unmet {
    /// Its container never will be where the condition wants it (exited, unhealthy, no
    /// healthcheck) or the wait timed out: worded for the user.
    #[error("{0}")]
    Never(String),
    /// The dependency's own start failed, or its containers could not be read: that error.
    #[error(transparent)]
    Failed(std::sync::Arc<EngineError>),
}

/// What can go wrong while planning or applying.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The dependency graph could not be built or queried.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A service's image is not in the store (build and pull come later).
    #[error(
        "service {service}: image {image} is not present locally; import or load it first (berth image import|load)"
    )]
    MissingImage {
        /// The service.
        service: String,
        /// The image reference.
        image: String,
    },
    /// A service has neither `image` nor a usable `build`.
    #[error("service {0}: no image given, and building images is not supported yet")]
    NoImage(String),
    /// The image store failed.
    #[error("service {service}: {source}")]
    Image {
        /// The service.
        service: String,
        /// The cause.
        #[source]
        source: ImageError,
    },
    /// A service's configuration cannot be turned into a container.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A volume, bind, secret or config failed.
    #[error("service {service}: {source}")]
    Volume {
        /// The service (or `volume` for project volumes).
        service: String,
        /// The cause.
        #[source]
        source: VolumeError,
    },
    /// A network operation failed.
    #[error("{what}: {source}")]
    Net {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: NetError,
    },
    /// A container operation failed.
    #[error("{what}: {source}")]
    Runtime {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: RuntimeError,
    },
    /// Reading or writing a record failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// No container of the service to act on (with `index`: not that replica).
    #[error("service {service:?} is not running{}", if *index == 0 { String::new() } else { format!(" container #{index}") })]
    NotRunning {
        /// The service.
        service: String,
        /// The replica asked for (0: any).
        index: u32,
    },
    /// A named service does not exist in the project.
    #[error("no such service: {0}")]
    NoSuchService(String),
    /// An external network or volume does not exist.
    #[error("{kind} {name} declared as external, but could not be found")]
    ExternalMissing {
        /// `network` or `volume`.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A dependency's condition cannot hold any more.
    #[error("service {service}: dependency {dependency} failed: {reason}")]
    Dependency {
        /// The waiting service.
        service: String,
        /// The dependency.
        dependency: String,
        /// Why.
        #[source]
        reason: Unmet,
    },
    /// A service's `pull_policy` is not one berth knows.
    #[error("service {service}: {source}")]
    PullPolicy {
        /// The service.
        service: String,
        /// The value refused.
        #[source]
        source: BadPullPolicy,
    },
    /// Pulling a service's image failed (and it cannot be built instead).
    #[error("service {services}: pull {image}: {source}")]
    Pull {
        /// The services that use the image, comma-separated.
        services: String,
        /// The image's short name.
        image: String,
        /// The cause.
        #[source]
        source: Box<ImageJobError>,
    },
    /// Building a service's image failed.
    #[error("service {services}: build: {source}")]
    Build {
        /// The services the build is for, comma-separated.
        services: String,
        /// The cause.
        #[source]
        source: Box<ImageJobError>,
    },
    /// A lifecycle hook failed.
    #[error("container {container}: {hook} hook {command:?} exited with code {code}")]
    Hook {
        /// The container.
        container: String,
        /// `post_start` or `pre_stop`.
        hook: &'static str,
        /// The command.
        command: Vec<String>,
        /// Its exit code.
        code: i32,
    },
    /// `--wait` gave up.
    #[error("{0}")]
    Wait(String),
    /// Several independent steps failed (teardown keeps going and reports all).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<EngineError>),
    /// The image store could not be opened.
    #[error(transparent)]
    Store(ImageError),
    /// The user interrupted the command (Ctrl-C during a build).
    #[error("interrupted")]
    Interrupted,
    /// An error also held by the dependents that waited on its service (reported once).
    #[error(transparent)]
    Shared(std::sync::Arc<EngineError>),
    /// Anything else, already worded for the user.
    #[error("{0}")]
    Msg(String),
}

impl EngineError {
    /// Wraps a runtime error with what was being done.
    pub fn runtime(what: impl Into<String>) -> impl FnOnce(RuntimeError) -> EngineError {
        let what = what.into();
        move |source| EngineError::Runtime { what, source }
    }

    /// Wraps a network error with what was being done.
    pub fn net(what: impl Into<String>) -> impl FnOnce(NetError) -> EngineError {
        let what = what.into();
        move |source| EngineError::Net { what, source }
    }

    /// Wraps a volume error with the service it concerns.
    pub fn volume(service: impl Into<String>) -> impl FnOnce(VolumeError) -> EngineError {
        let service = service.into();
        move |source| EngineError::Volume { service, source }
    }

    /// `Ok` when `errors` is empty, the one error, or all of them.
    pub fn collect(mut errors: Vec<EngineError>) -> Result<(), EngineError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(EngineError::Many(errors)),
        }
    }
}

/// The engine's result type.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
