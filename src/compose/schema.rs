//! Validation of one compose file against the Compose Specification's JSON schema.
//!
//! The schema is `schema/compose-spec.json`, a verbatim copy of
//! `shared/compose-spec/compose-spec.json` (a test keeps the two equal). It is compiled once
//! per process. Errors are turned into one line naming file:line:col and the attribute path.

use std::sync::OnceLock;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{ValidationError, Validator};

use super::error::LoadError;
use super::node::{Node, pointer_to_path};

/// The Compose Specification schema, as shipped.
pub const COMPOSE_SPEC_SCHEMA: &str = include_str!("../../schema/compose-spec.json");

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        // The schema is a constant of this build: failing to compile it is a bug in berth,
        // caught by the unit test below, never a user error.
        let schema: serde_json::Value =
            serde_json::from_str(COMPOSE_SPEC_SCHEMA).expect("embedded compose schema is JSON");
        jsonschema::draft202012::new(&schema).expect("embedded compose schema compiles")
    })
}

/// Validates an interpolated compose file tree. The first error (in file order) is returned.
/// The loader goes through [`validate_cached`]; the tests check the schema's verdicts here.
#[cfg(test)]
pub fn validate(root: &Node) -> Result<(), LoadError> {
    validate_instance(root, &root.to_json())
}

/// The schema's identity, worked out at compile time (FNV-1a): a cache of trees found valid
/// is kept per schema, so a berth with another schema never trusts this one's verdicts.
const SCHEMA_ID: u64 = {
    let bytes = COMPOSE_SPEC_SCHEMA.as_bytes();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
};

/// Past this many entries the cache is emptied before a new one goes in (files change; old
/// verdicts are only litter).
const CACHE_ENTRIES: usize = 512;

/// [`validate`], remembering trees found valid in `cache` (a folder; `None`: no cache).
///
/// Compiling the schema costs a few milliseconds of CPU at every command (it is most of the
/// work of loading a small project), while the tree is the same from one command to the next
/// in nearly every case. Validity is a function of the tree and the schema alone, so a tree
/// already found valid is recognised by the SHA-256 of its JSON form, in a folder per schema
/// ([`SCHEMA_ID`]): an empty file named by the digest. Only valid trees are remembered (an
/// invalid one is validated again, for its message). A cache that cannot be read or written
/// only costs the validation.
pub fn validate_cached(root: &Node, cache: Option<&std::path::Path>) -> Result<(), LoadError> {
    use sha2::Digest;
    let instance = root.to_json();
    let Some(cache) = cache else { return validate_instance(root, &instance) };
    let Ok(text) = serde_json::to_vec(&instance) else { return validate_instance(root, &instance) };
    let dir = cache.join(format!("{SCHEMA_ID:016x}"));
    let entry = dir.join(hex::encode(sha2::Sha256::digest(&text)));
    if entry.exists() {
        return Ok(());
    }
    validate_instance(root, &instance)?;
    remember(&dir, &entry);
    Ok(())
}

/// Notes a valid tree's digest; failures are ignored (the next command validates again).
fn remember(dir: &std::path::Path, entry: &std::path::Path) {
    if std::fs::read_dir(dir).is_ok_and(|d| d.count() >= CACHE_ENTRIES) {
        let _ = std::fs::remove_dir_all(dir);
    }
    if std::fs::create_dir_all(dir).is_ok() {
        let _ = std::fs::File::create(entry);
    }
}

fn validate_instance(root: &Node, instance: &serde_json::Value) -> Result<(), LoadError> {
    let mut errors: Vec<LoadError> = Vec::new();
    for error in validator().iter_errors(instance) {
        errors.push(describe(root, &error));
    }
    // Report the error that comes first in the file, so fixing top to bottom works.
    errors.sort_by_key(|e| match e {
        LoadError::Invalid { mark, .. } => (mark.line, mark.col),
        _ => (u32::MAX, u32::MAX),
    });
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Turns one schema error into a located, readable error.
fn describe(root: &Node, error: &ValidationError<'_>) -> LoadError {
    // oneOf/anyOf failures say little; the branch that got furthest into the value says most.
    if let ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } =
        error.kind()
    {
        let best = context
            .iter()
            .filter_map(|branch| branch.iter().max_by_key(|e| e.instance_path().as_str().len()))
            .max_by_key(|e| e.instance_path().as_str().len());
        if let Some(best) = best
            && best.instance_path().as_str().len() > error.instance_path().as_str().len()
        {
            return describe(root, best);
        }
    }
    let pointer = error.instance_path().as_str();
    let node = root.locate(pointer);
    let path = pointer_to_path(root, pointer);
    match error.kind() {
        ValidationErrorKind::AdditionalProperties { unexpected } => {
            let first = unexpected.first().map(String::as_str).unwrap_or_default();
            let mark = node.as_map().and_then(|m| m.key(first)).map(|k| &k.mark).unwrap_or(&node.mark);
            let what = if unexpected.len() == 1 { "property" } else { "properties" };
            let message = format!("additional {what} {} not allowed", quote_list(unexpected));
            LoadError::invalid(mark, path, message)
        }
        ValidationErrorKind::Type { .. } => {
            let message = format!("{} {}", short_value(error.instance()), type_message(error));
            LoadError::invalid(&node.mark, path, message)
        }
        _ => LoadError::invalid(&node.mark, path, error.to_string()),
    }
}

fn quote_list(items: &[String]) -> String {
    items.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
}

/// The value in a message: short enough to read on one line.
fn short_value(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 { format!("{}…", text.chars().take(57).collect::<String>()) } else { text }
}

/// "is not of type ..." without the value jsonschema puts in front.
fn type_message(error: &ValidationError<'_>) -> String {
    let full = error.to_string();
    match full.find(" is not of type") {
        Some(at) => full[at + 1..].to_string(),
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compose::yaml;

    fn check(text: &str) -> Result<(), LoadError> {
        validate(&yaml::parse(text, &Arc::from("compose.yaml")).expect("yaml"))
    }

    #[test]
    fn valid_file_passes() {
        check("services:\n  web:\n    image: nginx\n    ports: ['80:80']\n").expect("valid");
    }

    #[test]
    fn unknown_attribute_is_named_at_its_key() {
        let e = check("services:\n  web:\n    imagee: nginx\n").unwrap_err().to_string();
        assert_eq!(e, "compose.yaml:3:5: services.web: additional property \"imagee\" not allowed");
    }

    #[test]
    fn wrong_type_names_path_and_line() {
        let e = check("services:\n  web:\n    image: nginx\n    privileged: [1]\n").unwrap_err().to_string();
        assert!(e.starts_with("compose.yaml:4:17: services.web.privileged: [1] is not of type"), "{e}");
    }

    #[test]
    fn the_cache_remembers_valid_trees_only_and_what_it_remembers_is_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let parse = |t: &str| yaml::parse(t, &Arc::from("compose.yaml")).expect("yaml");
        let valid = parse("services:\n  web:\n    image: nginx\n");
        let invalid = parse("services:\n  web:\n    imagee: nginx\n");
        let entries = || {
            std::fs::read_dir(dir.path().join(format!("{SCHEMA_ID:016x}"))).map(|d| d.count()).unwrap_or(0)
        };
        validate_cached(&valid, Some(dir.path())).expect("valid");
        assert_eq!(entries(), 1);
        validate_cached(&valid, Some(dir.path())).expect("valid, from the cache");
        assert_eq!(entries(), 1);
        // An invalid tree is never remembered, and is reported every time.
        for _ in 0..2 {
            let e = validate_cached(&invalid, Some(dir.path())).unwrap_err().to_string();
            assert!(e.contains("additional property \"imagee\""), "{e}");
        }
        assert_eq!(entries(), 1);
        // What the cache knows is the tree's content: a changed value is validated again.
        let changed = parse("services:\n  web:\n    image: nginx\n    privileged: [1]\n");
        assert!(validate_cached(&changed, Some(dir.path())).is_err());
        assert_eq!(entries(), 1);
    }

    #[test]
    fn vendored_schema_matches_shared_copy() {
        let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/compose-spec/compose-spec.json");
        if let Ok(text) = std::fs::read_to_string(shared) {
            assert_eq!(text, COMPOSE_SPEC_SCHEMA, "schema/compose-spec.json differs from {shared}: copy it");
        }
    }
}
