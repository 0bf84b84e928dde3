//! Kubernetes names and labels: DNS-1123 labels made from compose names, deterministically,
//! and the label syntax check that decides whether a compose label can be a Kubernetes one.

use sha2::{Digest, Sha256};

/// A DNS-1123 label (and RFC 1035: starts with a letter, as Service names must) made from
/// `name`: lower case, other characters as `-`, at most 63 characters. A name that had to be
/// shortened ends with 6 hex digits of its hash, so different long names stay different.
pub fn dns_label(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "x-");
    }
    if out == "x-" {
        out.push('0');
    }
    if out.len() > 63 {
        let digest = Sha256::digest(name.as_bytes());
        let mut short: String = out.chars().take(56).collect();
        while short.ends_with('-') {
            short.pop();
        }
        short.push('-');
        short.push_str(&hex::encode(&digest[..3]));
        out = short;
    }
    out
}

/// `name` joined to `suffix` with `-`, still a DNS label of 63 characters at most.
pub fn with_suffix(name: &str, suffix: &str) -> String {
    dns_label(&format!("{name}-{suffix}"))
}

/// Six hex digits of the hash of `text`: short, stable parts of generated names.
pub fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..3])
}

fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|p| {
            let b = p.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Whether `key: value` is a valid Kubernetes label (else it can only be an annotation).
pub fn is_label(key: &str, value: &str) -> bool {
    let key_ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    };
    key_ok && (value.is_empty() || is_name_part(value))
}

/// Whether `key` is a valid annotation key (same syntax as a label key; any value).
pub fn is_annotation_key(key: &str) -> bool {
    is_label(key, "")
}

/// A key of a ConfigMap's or Secret's data: `[-._a-zA-Z0-9]+`.
pub fn data_key(name: &str) -> String {
    let key: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' })
        .collect();
    match key.as_str() {
        "" | "." | ".." => format!("x{key}"),
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_made_valid_and_stable() {
        assert_eq!(dns_label("web"), "web");
        assert_eq!(dns_label("My_Service.v2"), "my-service-v2");
        assert_eq!(dns_label("1db"), "x-1db");
        assert_eq!(dns_label("__"), "x-0");
        let long = "a".repeat(80);
        let l = dns_label(&long);
        assert_eq!(l.len(), 63);
        assert_eq!(l, dns_label(&long));
        assert_ne!(l, dns_label(&"a".repeat(81)));
        assert_eq!(with_suffix("web", "published"), "web-published");
    }

    #[test]
    fn label_syntax() {
        assert!(is_label("tier", "frontend"));
        assert!(is_label("com.example/team", "a_b.c-d"));
        assert!(is_label("com.example.team", ""));
        assert!(!is_label("com.example.description", "Accounting webapp"));
        assert!(!is_label("bad key", "v"));
        assert!(!is_label("Example.COM/x", "v"));
        assert!(!is_label("k", &"v".repeat(64)));
        assert_eq!(data_key("api token"), "api-token");
    }
}
