//! Image names as docker reads them: `busybox` is `docker.io/library/busybox:latest`, stored in
//! full and shown short (`busybox:latest`).

/// A name that is not a valid image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid reference format {0:?}: repository name must be lowercase letters, digits and separators")]
pub struct BadReference(pub String);

/// A parsed `[registry/]repository[:tag]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io/library/busybox`.
    pub repository: String,
    /// `latest` when not given.
    pub tag: String,
}

impl Reference {
    /// Parses and normalizes a reference (a digest suffix `@sha256:...` is not a tag: refused).
    pub fn parse(input: &str) -> Result<Reference, BadReference> {
        let bad = || BadReference(input.to_string());
        let s = input.trim();
        if s.is_empty() || s.contains('@') || s.contains(char::is_whitespace) {
            return Err(bad());
        }
        // A colon after the last slash separates the tag; one before it is a registry port.
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i..].contains('/') => (&s[..i], &s[i + 1..]),
            _ => (s, "latest"),
        };
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !tag.starts_with(['.', '-']);
        if name.is_empty() || !tag_ok {
            return Err(bad());
        }
        let mut parts: Vec<&str> = name.split('/').collect();
        let has_registry = parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost");
        let registry = if has_registry { parts.remove(0).to_string() } else { "docker.io".to_string() };
        for p in &parts {
            let ok = !p.is_empty()
                && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
                && p.starts_with(|c: char| c.is_ascii_alphanumeric())
                && p.ends_with(|c: char| c.is_ascii_alphanumeric());
            if !ok {
                return Err(bad());
            }
        }
        if registry == "docker.io" && parts.len() == 1 {
            parts.insert(0, "library");
        }
        Ok(Reference { repository: format!("{registry}/{}", parts.join("/")), tag: tag.to_string() })
    }

    /// `docker.io/library/busybox:latest`.
    pub fn full(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }

    /// The repository as docker shows it: `busybox`, `me/app`, `registry:5000/app`.
    pub fn short_repository(&self) -> String {
        let r = self.repository.strip_prefix("docker.io/").unwrap_or(&self.repository);
        r.strip_prefix("library/").unwrap_or(r).to_string()
    }

    /// `busybox:latest`.
    pub fn short(&self) -> String {
        format!("{}:{}", self.short_repository(), self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_like_docker() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.full(), "docker.io/library/busybox:latest");
        assert_eq!(r.short(), "busybox:latest");
        assert_eq!(Reference::parse("me/app:1.0").unwrap().full(), "docker.io/me/app:1.0");
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(
            (r.full(), r.short()),
            ("localhost:5000/app:latest".into(), "localhost:5000/app:latest".into())
        );
        assert_eq!(
            Reference::parse("berth-example/busybox:latest").unwrap().short(),
            "berth-example/busybox:latest"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "Busybox", "a b", "app:", "app:-x", "x@sha256:00", "/app", "app//x"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?}");
        }
    }
}
