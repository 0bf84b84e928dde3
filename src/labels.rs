//! The labels and resource names docker compose gives what it makes, defined once: the
//! engine finds a project's containers, networks and volumes by them, and other tools (and
//! docker compose itself) read them, so they must not drift between the places that set them.

/// What every compose label starts with (docker compose hides them from event attributes).
pub const PREFIX: &str = "com.docker.compose.";
/// `com.docker.compose.project`: the project a container, network or volume belongs to.
pub const PROJECT: &str = "com.docker.compose.project";
/// `com.docker.compose.service`.
pub const SERVICE: &str = "com.docker.compose.service";
/// `com.docker.compose.container-number`: the replica number, 1-based.
pub const NUMBER: &str = "com.docker.compose.container-number";
/// `com.docker.compose.config-hash`: the hash `up` compares to decide on recreation.
pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
/// `com.docker.compose.oneoff`: `True` for containers made by `run`.
pub const ONEOFF: &str = "com.docker.compose.oneoff";
/// `com.docker.compose.network` (on networks): the network's key in the file.
pub const NETWORK: &str = "com.docker.compose.network";
/// `com.docker.compose.volume` (on volumes): the volume's key in the file.
pub const VOLUME: &str = "com.docker.compose.volume";
/// `com.docker.compose.version`: the version of the tool that made the resource.
pub const VERSION: &str = "com.docker.compose.version";
/// `com.docker.compose.project.working_dir`.
pub const WORKING_DIR: &str = "com.docker.compose.project.working_dir";
/// `com.docker.compose.project.config_files`: the compose files, comma-separated.
pub const CONFIG_FILES: &str = "com.docker.compose.project.config_files";
/// `com.docker.compose.image`: the image id a container was made from.
pub const IMAGE: &str = "com.docker.compose.image";
/// `com.docker.compose.depends_on`: `service:condition:restart`, comma-separated.
pub const DEPENDS_ON: &str = "com.docker.compose.depends_on";
/// `com.docker.compose.slug`: the random id of a one-off container (its name ends with the
/// first 12 hex digits).
pub const SLUG: &str = "com.docker.compose.slug";

/// The value of [`VERSION`]: berth's own version.
pub const VERSION_VALUE: &str = env!("CARGO_PKG_VERSION");

/// The name of a project-scoped resource without an explicit `name:` (a network or volume
/// declared under key `key`): `<project>_<key>`.
pub fn resource_name(project: &str, key: &str) -> String {
    format!("{project}_{key}")
}

/// Whether `name` can be a container's name (docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`):
/// a name read back from a file that may be damaged is printed only if it is one.
pub fn valid_container_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// docker compose's separator in the names it makes: `-`, or `_` in its compatibility mode
/// with docker-compose v1 (`--compatibility`, `COMPOSE_COMPATIBILITY`).
pub fn separator(compatibility: bool) -> char {
    if compatibility { '_' } else { '-' }
}

/// The name of replica `number` of `service` without a `container_name`:
/// `<project>-<service>-<number>` (`_` in compatibility mode).
pub fn container_name(project: &str, service: &str, number: u32, compatibility: bool) -> String {
    let s = separator(compatibility);
    format!("{project}{s}{service}{s}{number}")
}

/// The name `build` gives a service's image when the service names none:
/// `<project>-<service>` (`_` in compatibility mode).
pub fn image_name(project: &str, service: &str, compatibility: bool) -> String {
    format!("{project}{}{service}", separator(compatibility))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_compose() {
        assert_eq!(resource_name("p", "default"), "p_default");
        assert_eq!(container_name("p", "web", 2, false), "p-web-2");
        assert_eq!(image_name("p", "web", false), "p-web");
        // docker compose --compatibility (v1's names).
        assert_eq!(container_name("p", "web", 2, true), "p_web_2");
        assert_eq!(image_name("p", "web", true), "p_web");
    }
}
