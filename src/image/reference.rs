//! Image names as docker reads them: `busybox` is `docker.io/library/busybox:latest`, stored in
//! full and shown short (`busybox:latest`). A reference may name a manifest by digest
//! (`busybox@sha256:<64 hex>`, or `busybox:1.36@sha256:...`, where the digest wins).

/// A name that is not a valid image reference: the name (cut to 100 characters) and the rule
/// it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format {:?}: {}", shown(.0), .1)]
pub struct BadReference(pub String, pub &'static str);

/// The rule of docker's reference grammar most names break.
const GRAMMAR: &str = "repository name must be lowercase letters, digits and separators, with an optional :tag and @sha256:<64 hex digits>";

/// docker's bound on a repository name (`docker.io/library/...` counted).
pub const NAME_TOTAL_LENGTH_MAX: usize = 255;

fn shown(input: &str) -> String {
    if input.chars().count() <= 100 {
        input.to_string()
    } else {
        format!("{}…", input.chars().take(99).collect::<String>())
    }
}

/// The registry host that docker's short names live on.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed `[registry/]repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io/library/busybox`: the registry host and the repository path.
    pub repository: String,
    /// `latest` when neither tag nor digest is given; empty when only a digest is.
    pub tag: String,
    /// `sha256:<hex>` when the reference names a manifest by digest.
    pub digest: Option<String>,
}

fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)))
}

impl Reference {
    /// Parses and normalizes a reference.
    pub fn parse(input: &str) -> Result<Reference, BadReference> {
        let bad = || BadReference(input.to_string(), GRAMMAR);
        let s = input.trim();
        if s.is_empty() || s.contains(char::is_whitespace) {
            return Err(bad());
        }
        let (s, digest) = match s.split_once('@') {
            Some((name, d)) if valid_digest(d) => (name, Some(d.to_string())),
            Some(_) => return Err(bad()),
            None => (s, None),
        };
        // A colon after the last slash separates the tag; one before it is a registry port.
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, if digest.is_some() { "" } else { "latest" }),
        };
        let tag_ok = tag.len() <= 128
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !tag.starts_with(['.', '-'])
            && (!tag.is_empty() || digest.is_some() && !s.ends_with(':'));
        if name.is_empty() || !tag_ok {
            return Err(bad());
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let has_registry = parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost");
        let registry = if has_registry { parts.remove(0).to_string() } else { DOCKER_HUB.to_string() };
        let registry_ok = !registry.is_empty()
            && registry.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
            && !registry.starts_with(['-', '.', ':']);
        if !registry_ok {
            return Err(bad());
        }
        for p in &parts {
            let ok = !p.is_empty()
                && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && p.starts_with(|c: char| c.is_ascii_alphanumeric())
                && p.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !ok {
                return Err(bad());
            }
        }
        // `index.docker.io/x` is docker.io too.
        let registry = if registry == "index.docker.io" { DOCKER_HUB.to_string() } else { registry };
        if registry == DOCKER_HUB && parts.len() == 1 {
            parts.insert(0, "library");
        }
        let repository = format!("{registry}/{}", parts.join("/"));
        if repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(BadReference(
                input.to_string(),
                "repository name must not be more than 255 characters",
            ));
        }
        Ok(Reference { repository, tag: tag.to_string(), digest })
    }

    /// The registry as named (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        self.repository.split_once('/').map_or(self.repository.as_str(), |(r, _)| r)
    }

    /// The host the distribution API is reached on: docker.io's is `registry-1.docker.io`.
    pub fn api_host(&self) -> &str {
        match self.registry() {
            DOCKER_HUB => "registry-1.docker.io",
            other => other,
        }
    }

    /// The repository path inside its registry (`library/busybox`).
    pub fn path(&self) -> &str {
        self.repository.split_once('/').map_or("", |(_, p)| p)
    }

    /// What the registry is asked for: the digest when given, else the tag.
    pub fn tag_or_digest(&self) -> &str {
        self.digest.as_deref().unwrap_or(&self.tag)
    }

    fn suffix(&self) -> String {
        let mut s = String::new();
        if !self.tag.is_empty() {
            s.push(':');
            s.push_str(&self.tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// `docker.io/library/busybox:latest` (or `...busybox@sha256:...`).
    pub fn full(&self) -> String {
        format!("{}{}", self.repository, self.suffix())
    }

    /// The repository as docker shows it: `busybox`, `me/app`, `registry:5000/app`.
    pub fn short_repository(&self) -> String {
        let r = self.repository.strip_prefix("docker.io/").unwrap_or(&self.repository);
        r.strip_prefix("library/").unwrap_or(r).to_string()
    }

    /// `busybox:latest` (or `busybox@sha256:...`).
    pub fn short(&self) -> String {
        format!("{}{}", self.short_repository(), self.suffix())
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn long_names_are_refused_as_docker_does() {
        // docker counts the normalized name: `docker.io/library/` is 18 of the 255.
        assert!(Reference::parse(&"a".repeat(237)).is_ok());
        let e = Reference::parse(&"a".repeat(238)).unwrap_err().to_string();
        assert!(e.contains("must not be more than 255 characters") && e.contains('…'), "{e}");
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn names_normalize_like_docker() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.full(), "docker.io/library/busybox:latest");
        assert_eq!(r.short(), "busybox:latest");
        assert_eq!(
            (r.registry(), r.api_host(), r.path()),
            ("docker.io", "registry-1.docker.io", "library/busybox")
        );
        assert_eq!(Reference::parse("me/app:1.0").unwrap().full(), "docker.io/me/app:1.0");
        assert_eq!(
            Reference::parse("index.docker.io/redis").unwrap().full(),
            "docker.io/library/redis:latest"
        );
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(
            (r.full(), r.short()),
            ("localhost:5000/app:latest".into(), "localhost:5000/app:latest".into())
        );
        assert_eq!((r.registry(), r.api_host(), r.path()), ("localhost:5000", "localhost:5000", "app"));
        let r = Reference::parse("localhost/x").unwrap();
        assert_eq!((r.registry(), r.path()), ("localhost", "x"));
        let r = Reference::parse("127.0.0.1:5000/a/b/c:v1").unwrap();
        assert_eq!((r.registry(), r.path(), r.tag.as_str()), ("127.0.0.1:5000", "a/b/c", "v1"));
        assert_eq!(
            Reference::parse("berth-example/busybox:latest").unwrap().short(),
            "berth-example/busybox:latest"
        );
    }

    #[test]
    fn digests_are_kept() {
        let r = Reference::parse(&format!("redis@{D}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.tag, "");
        assert_eq!(r.full(), format!("docker.io/library/redis@{D}"));
        assert_eq!(r.short(), format!("redis@{D}"));
        assert_eq!(r.tag_or_digest(), D);
        assert_eq!(Reference::parse(&r.full()).unwrap(), r);
        let r = Reference::parse(&format!("host:5000/app:1.0@{D}")).unwrap();
        assert_eq!((r.tag.as_str(), r.tag_or_digest()), ("1.0", D));
        assert_eq!(r.full(), format!("host:5000/app:1.0@{D}"));
        assert_eq!(Reference::parse(&r.full()).unwrap(), r);
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "Busybox",
            "a b",
            "app:",
            "app:-x",
            "x@sha256:00",
            "/app",
            "app//x",
            "x@md5:0123",
            "x:@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "x@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
