//! Merging of compose file trees (spec `13-merge.md`), used for `-f` files, override files and
//! `extends`.
//!
//! Both trees are in canonical (long) form, so most attributes merge as plain mappings. The
//! exceptions: shell commands are replaced, the "unique resources" (ports, volumes, secrets,
//! configs, ...) are appended and then made unique by their key, other sequences are appended
//! without duplicates, and `logging` is replaced when the driver changes. `!reset` and
//! `!override` are taken out of a file before it is validated ([`take_merge_tags`]) and applied
//! here by path.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::node::{MergeTag, Node, Value};

/// Attribute paths (keys only, from the file's root) that a file tagged `!reset` or `!override`.
#[derive(Debug, Default, Clone)]
pub struct MergeTags {
    /// Paths whose value the file removes from what earlier files set.
    pub reset: Vec<Vec<String>>,
    /// Paths whose value replaces, rather than merges with, what earlier files set.
    pub replace: Vec<Vec<String>>,
}

/// Removes every `!reset` node from the tree and clears every `!override` tag, recording their
/// paths. A `!reset` value is ignored by the spec ("a valid value must be provided, but will be
/// ignored"), so it must not be validated or canonicalised either.
pub fn take_merge_tags(root: &mut Node) -> MergeTags {
    let mut tags = MergeTags::default();
    let mut path = Vec::new();
    walk_tags(root, &mut path, &mut tags);
    tags
}

fn walk_tags(node: &mut Node, path: &mut Vec<String>, tags: &mut MergeTags) {
    match &mut node.value {
        Value::Map(map) => {
            map.entries.retain(|(k, v)| {
                if v.tag == Some(MergeTag::Reset) {
                    let mut p = path.clone();
                    p.push(k.name.clone());
                    tags.reset.push(p);
                    false
                } else {
                    true
                }
            });
            for (k, v) in map.entries.iter_mut() {
                path.push(k.name.clone());
                if v.tag == Some(MergeTag::Override) {
                    v.tag = None;
                    tags.replace.push(path.clone());
                }
                walk_tags(v, path, tags);
                path.pop();
            }
        }
        Value::Seq(items) => {
            // Tags on sequence items have no path that survives canonicalisation; a reset item
            // is simply dropped.
            items.retain(|v| v.tag != Some(MergeTag::Reset));
            for v in items.iter_mut() {
                v.tag = None;
            }
        }
        _ => {}
    }
}

/// Merges `over` (a later file) onto `base`, honouring the later file's merge tags.
pub fn merge_files(base: &mut Node, over: Node, tags: &MergeTags) {
    for path in &tags.reset {
        remove_path(base, path);
    }
    let mut path = Vec::new();
    merge_node(base, over, &mut path, tags);
}

/// Merges one service definition onto another (for `extends`), with the same rules as files.
pub fn merge_service(base: &mut Node, over: Node) {
    let mut path = vec!["services".to_string(), "*".to_string()];
    merge_node(base, over, &mut path, &MergeTags::default());
}

/// Removes from `base` (the service `name` extends) every attribute that the extending file
/// tagged `!reset` or `!override` under `services.<name>`, so the extending value (or none)
/// is what remains after the merge.
pub fn reset_service(base: &mut Node, tags: &MergeTags, name: &str) {
    for path in tags.reset.iter().chain(&tags.replace) {
        if let [services, service, rest @ ..] = path.as_slice()
            && services == "services"
            && service == name
            && !rest.is_empty()
        {
            remove_path(base, rest);
        }
    }
}

fn remove_path(node: &mut Node, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut cur = node;
    for p in parents {
        match cur.as_map_mut().and_then(|m| m.get_mut(p)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_map_mut() {
        m.remove(last);
    }
}

/// How a path merges, by its shape (`services.*.ports`, ...).
enum Rule {
    /// The later value replaces the earlier one.
    Replace,
    /// Sequences appended, then an entry with the key of an earlier one replaces it.
    UniqueBy(fn(&Node) -> Option<String>),
    /// Mappings merged, sequences appended without exact duplicates, scalars replaced.
    Default,
    /// `logging`: merged only while the driver stays the same.
    Logging,
}

fn rule_for(path: &[String]) -> Rule {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        ["services", _, "command" | "entrypoint"] => Rule::Replace,
        ["services", _, "healthcheck", "test"] => Rule::Replace,
        ["services", _, "ports"] => Rule::UniqueBy(port_key),
        ["services", _, "volumes"] => Rule::UniqueBy(|n| text_of(n, "target")),
        // Keyed by where they are mounted (compose-go mountIndexer).
        ["services", _, "secrets"] => Rule::UniqueBy(|n| {
            text_of(n, "target").or_else(|| text_of(n, "source").map(|s| format!("/run/secrets/{s}")))
        }),
        ["services", _, "configs"] => {
            Rule::UniqueBy(|n| text_of(n, "target").or_else(|| text_of(n, "source").map(|s| format!("/{s}"))))
        }
        ["services", _, "env_file"] => Rule::UniqueBy(|n| text_of(n, "path")),
        ["services", _, "devices"] => Rule::UniqueBy(|n| text_of(n, "target")),
        ["services", _, "logging"] => Rule::Logging,
        ["services", _, "ulimits", _] => Rule::Replace,
        _ => Rule::Default,
    }
}

fn text_of(node: &Node, key: &str) -> Option<String> {
    node.get(key).and_then(Node::scalar_text)
}

fn port_key(n: &Node) -> Option<String> {
    let part = |k: &str| text_of(n, k).unwrap_or_default();
    Some(format!("{}|{}|{}|{}", part("host_ip"), part("published"), part("target"), part("protocol")))
}

fn merge_node(base: &mut Node, over: Node, path: &mut Vec<String>, tags: &MergeTags) {
    if tags.replace.iter().any(|p| p == path) {
        *base = over;
        return;
    }
    let rule = rule_for(path);
    if matches!(rule, Rule::Replace) {
        *base = over;
        return;
    }
    if matches!(rule, Rule::Logging) {
        let driver = |n: &Node| text_of(n, "driver");
        if let (Some(a), Some(b)) = (driver(base), driver(&over))
            && a != b
        {
            *base = over;
            return;
        }
    }
    match (&mut base.value, over.value) {
        (Value::Map(bm), Value::Map(om)) => {
            // Two large mappings (two files of thousands of services) are matched by an index,
            // not by scanning one for each key of the other.
            let mut positions: Option<HashMap<String, usize>> = (om.len() > 16 && bm.len() > 16)
                .then(|| bm.entries.iter().enumerate().map(|(i, (k, _))| (k.name.clone(), i)).collect());
            for (key, value) in om.entries {
                path.push(key.name.clone());
                let at = match &positions {
                    Some(p) => p.get(&key.name).copied(),
                    None => bm.entries.iter().position(|(k, _)| k.name == key.name),
                };
                match at {
                    Some(i) => merge_node(&mut bm.entries[i].1, value, path, tags),
                    None => {
                        if let Some(p) = positions.as_mut() {
                            p.insert(key.name.clone(), bm.entries.len());
                        }
                        bm.entries.push((key, value))
                    }
                }
                path.pop();
            }
        }
        (Value::Seq(bs), Value::Seq(os)) => {
            bs.extend(os);
            match rule {
                Rule::UniqueBy(key) => unique_by_key(bs, key),
                _ => unique_exact(bs),
            }
        }
        // A later `null` keeps a collection (e.g. `networks: {front: ~}` over `front: {...}`).
        (Value::Map(_) | Value::Seq(_), Value::Null) => {}
        (_, value) => {
            base.value = value;
            base.mark = over.mark;
        }
    }
}

/// Keeps the first position of each key; a later entry with the same key replaces it whole
/// (compose-go `EnforceUnicity`: a volume of a later file for the same target is that volume).
fn unique_by_key(items: &mut Vec<Node>, key: fn(&Node) -> Option<String>) {
    let mut out: Vec<Node> = Vec::with_capacity(items.len());
    // Position in `out` of each key, so long lists merge in linear time.
    let mut keys: HashMap<String, usize> = HashMap::with_capacity(items.len());
    for item in items.drain(..) {
        let k = key(&item);
        match k.as_ref().and_then(|k| keys.get(k).copied()) {
            Some(at) => out[at] = item,
            None => {
                if let Some(k) = k {
                    keys.insert(k, out.len());
                }
                out.push(item);
            }
        }
    }
    *items = out;
}

fn unique_exact(items: &mut Vec<Node>) {
    let mut out: Vec<Node> = Vec::with_capacity(items.len());
    // Positions in `out` by hash of the value: only equal hashes are compared.
    let mut seen: HashMap<u64, Vec<usize>> = HashMap::with_capacity(items.len());
    for item in items.drain(..) {
        let mut hasher = DefaultHasher::new();
        hash_value(&item.value, &mut hasher);
        let same = seen.entry(hasher.finish()).or_default();
        if !same.iter().any(|&i| out[i].value == item.value) {
            same.push(out.len());
            out.push(item);
        }
    }
    *items = out;
}

/// Hashes a value consistently with its `==` (floats by their bits, so NaN never matches any
/// more than `==` lets it, and `0.0`/`-0.0` hash apart but merely get compared less).
fn hash_value(value: &Value, h: &mut impl Hasher) {
    std::mem::discriminant(value).hash(h);
    match value {
        Value::Null => {}
        Value::Bool(b) => b.hash(h),
        Value::Int(i) => i.hash(h),
        // -0.0 == 0.0 must hash alike: normalise the zero.
        Value::Float(f) => (if *f == 0.0 { 0.0f64 } else { *f }).to_bits().hash(h),
        Value::Str(s) => s.hash(h),
        Value::Seq(items) => {
            items.len().hash(h);
            items.iter().for_each(|n| hash_value(&n.value, h));
        }
        Value::Map(m) => {
            m.len().hash(h);
            for (k, n) in &m.entries {
                k.name.hash(h);
                hash_value(&n.value, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compose::yaml;

    fn tree(text: &str) -> Node {
        yaml::parse(text, &Arc::from("t.yaml")).expect("yaml")
    }

    fn merged(a: &str, b: &str) -> serde_json::Value {
        let mut base = tree(a);
        let mut over = tree(b);
        let tags = take_merge_tags(&mut over);
        merge_files(&mut base, over, &tags);
        base.to_json()
    }

    #[test]
    fn mappings_merge_and_scalars_replace() {
        let v = merged(
            "services: {web: {image: a, environment: {A: '1'}}}",
            "services: {web: {image: b, environment: {B: '2'}}}",
        );
        assert_eq!(v["services"]["web"]["image"], "b");
        assert_eq!(v["services"]["web"]["environment"], serde_json::json!({"A": "1", "B": "2"}));
    }

    #[test]
    fn commands_are_replaced_and_sequences_appended_without_duplicates() {
        let v = merged(
            "services: {web: {command: [a, b], dns: [1.1.1.1], healthcheck: {test: [CMD, x]}}}",
            "services: {web: {command: [c], dns: [1.1.1.1, 8.8.8.8], healthcheck: {test: [NONE]}}}",
        );
        assert_eq!(v["services"]["web"]["command"], serde_json::json!(["c"]));
        assert_eq!(v["services"]["web"]["dns"], serde_json::json!(["1.1.1.1", "8.8.8.8"]));
        assert_eq!(v["services"]["web"]["healthcheck"]["test"], serde_json::json!(["NONE"]));
    }

    #[test]
    fn unique_resources_merge_by_key() {
        let v = merged(
            "services: {w: {volumes: [{type: volume, source: foo, target: /work, read_only: true}], ports: [{target: 80, published: '8080', protocol: tcp}]}}",
            "services: {w: {volumes: [{type: volume, source: bar, target: /work}], ports: [{target: 80, published: '8080', protocol: tcp}, {target: 81, protocol: tcp}]}}",
        );
        assert_eq!(v["services"]["w"]["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(v["services"]["w"]["volumes"][0]["source"], "bar");
        assert!(v["services"]["w"]["volumes"][0].get("read_only").is_none(), "replaced, not merged");
        assert_eq!(v["services"]["w"]["ports"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn reset_removes_and_override_replaces() {
        let v = merged(
            "services: {app: {ports: [{target: 80}, {target: 443}], environment: {FOO: bar, KEEP: me}, build: {context: .}}}",
            "services: {app: {ports: !override [{target: 443, published: '9443'}], environment: {FOO: !reset null}, build: !reset}}",
        );
        let app = &v["services"]["app"];
        assert_eq!(app["ports"], serde_json::json!([{"target": 443, "published": "9443"}]));
        assert_eq!(app["environment"], serde_json::json!({"KEEP": "me"}));
        assert!(app.get("build").is_none());
    }

    #[test]
    fn secrets_are_keyed_by_their_mount_path() {
        let v = merged(
            "services: {w: {secrets: [{source: a}, {source: b, target: /run/secrets/x}], configs: [{source: c, target: /c, mode: 0400}]}}",
            "services: {w: {secrets: [{source: x}, {source: a, target: /run/secrets/a, uid: '1'}], configs: [{source: c}]}}",
        );
        let w = &v["services"]["w"];
        assert_eq!(
            w["secrets"],
            serde_json::json!([{"source": "a", "target": "/run/secrets/a", "uid": "1"}, {"source": "x"}])
        );
        assert_eq!(w["configs"], serde_json::json!([{"source": "c"}]));
    }

    #[test]
    fn reset_service_takes_tagged_attributes_out_of_a_base() {
        let mut base = tree("{image: x, ports: [{target: 80}], environment: {A: '1', B: '2'}}");
        let mut file =
            tree("services: {web: {ports: !reset [], environment: {B: !reset }}, other: {image: !reset }}");
        let tags = take_merge_tags(&mut file);
        reset_service(&mut base, &tags, "web");
        assert_eq!(base.to_json(), serde_json::json!({"image": "x", "environment": {"A": "1"}}));
    }

    #[test]
    fn logging_is_replaced_when_the_driver_changes() {
        let v = merged(
            "services: {a: {logging: {driver: json-file, options: {max-size: 1m}}}, b: {logging: {driver: syslog, options: {x: '1'}}}}",
            "services: {a: {logging: {driver: syslog}}, b: {logging: {options: {y: '2'}}}}",
        );
        assert_eq!(v["services"]["a"]["logging"], serde_json::json!({"driver": "syslog"}));
        assert_eq!(v["services"]["b"]["logging"]["options"], serde_json::json!({"x": "1", "y": "2"}));
    }

    #[test]
    fn null_does_not_erase_a_collection() {
        let v = merged(
            "services: {a: {networks: {front: {aliases: [x]}}}}",
            "services: {a: {networks: {front: }}}",
        );
        assert_eq!(v["services"]["a"]["networks"]["front"]["aliases"], serde_json::json!(["x"]));
    }
}
