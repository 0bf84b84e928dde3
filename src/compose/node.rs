//! The YAML tree that every loading step works on: values with the place they came from.
//!
//! Compose files are interpolated, validated, canonicalised and merged as trees before they
//! become the typed [`crate::compose::model::Project`]. Each node keeps its file, line and
//! column so that any step can report an error where the user wrote the value.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A position in a compose file: file name as shown to the user, 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Mark {
    /// The file as shown in messages (relative to the working dir where possible).
    pub file: Arc<str>,
    /// 1-based line; 0 when the value was made by berth rather than read from a file.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub col: u32,
}

impl Mark {
    /// A mark for values berth made itself, still naming the file they belong to.
    pub fn synthetic(file: &Arc<str>) -> Mark {
        Mark { file: file.clone(), line: 0, col: 0 }
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.col) {
            (0, _) => write!(f, "{}", self.file),
            (l, 0) => write!(f, "{}:{}", self.file, l),
            (l, c) => write!(f, "{}:{}:{}", self.file, l, c),
        }
    }
}

/// The compose merge tags (`13-merge.md`): `!reset` removes a value set by an earlier file,
/// `!override` replaces it instead of merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeTag {
    /// `!reset`
    Reset,
    /// `!override`
    Override,
}

/// A scalar or collection, with YAML 1.2 core-schema typing of plain scalars.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`, `~` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating point number.
    Float(f64),
    /// Any string (quoted, or plain that is no other type).
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order.
    Map(Map),
}

/// One node of the tree.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The value.
    pub value: Value,
    /// Where it starts.
    pub mark: Mark,
    /// A merge tag, when the file put one on it.
    pub tag: Option<MergeTag>,
}

/// A mapping key with its own position (so an unknown attribute is reported where it is).
#[derive(Clone, Debug, PartialEq)]
pub struct Key {
    /// The key text.
    pub name: String,
    /// Where the key is written.
    pub mark: Mark,
}

/// A mapping that keeps file order. Lookups are linear: compose mappings are small.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Map {
    /// The entries, in order, keys unique.
    pub entries: Vec<(Key, Node)>,
}

impl Map {
    /// The value under `name`.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.entries.iter().find(|(k, _)| k.name == name).map(|(_, v)| v)
    }

    /// The value under `name`, mutable.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Node> {
        self.entries.iter_mut().find(|(k, _)| k.name == name).map(|(_, v)| v)
    }

    /// The key entry for `name` (for its mark).
    pub fn key(&self, name: &str) -> Option<&Key> {
        self.entries.iter().find(|(k, _)| k.name == name).map(|(k, _)| k)
    }

    /// Sets `name` to `node`, keeping the position of an existing entry.
    pub fn insert(&mut self, key: Key, node: Node) {
        match self.entries.iter_mut().find(|(k, _)| k.name == key.name) {
            Some((_, v)) => *v = node,
            None => self.entries.push((key, node)),
        }
    }

    /// Removes and returns the value under `name`.
    pub fn remove(&mut self, name: &str) -> Option<Node> {
        let at = self.entries.iter().position(|(k, _)| k.name == name)?;
        Some(self.entries.remove(at).1)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Iterates over key names and values.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, v)| (k.name.as_str(), v))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no entries.
    #[allow(dead_code, reason = "a type with len() has is_empty() (clippy::len_without_is_empty)")]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A [`Map`] being filled key by key, with an index so that each insert is O(1). [`Map`]
/// looks keys up linearly, which suits the small mappings of a compose file; a list turned into
/// a mapping (`environment`, `depends_on`, an env file...) may have tens of thousands of keys.
#[derive(Default)]
pub struct MapBuilder {
    map: Map,
    index: HashMap<String, usize>,
}

impl MapBuilder {
    /// Sets `key` to `node`, keeping the position of an existing entry (as [`Map::insert`]).
    pub fn insert(&mut self, key: Key, node: Node) {
        match self.index.get(&key.name) {
            Some(&at) => self.map.entries[at].1 = node,
            None => {
                self.index.insert(key.name.clone(), self.map.entries.len());
                self.map.entries.push((key, node));
            }
        }
    }

    /// The mapping built.
    pub fn finish(self) -> Map {
        self.map
    }
}

impl Node {
    /// A node made by berth (no file position of its own), placed at `mark`.
    pub fn new(value: Value, mark: Mark) -> Node {
        Node { value, mark, tag: None }
    }

    /// A string node at `mark`.
    pub fn str(s: impl Into<String>, mark: &Mark) -> Node {
        Node::new(Value::Str(s.into()), mark.clone())
    }

    /// An empty mapping node at `mark`.
    pub fn map(mark: &Mark) -> Node {
        Node::new(Value::Map(Map::default()), mark.clone())
    }

    /// The mapping inside, if this is one.
    pub fn as_map(&self) -> Option<&Map> {
        match &self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The mapping inside, mutable, if this is one.
    pub fn as_map_mut(&mut self) -> Option<&mut Map> {
        match &mut self.value {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The sequence inside, if this is one.
    pub fn as_seq(&self) -> Option<&Vec<Node>> {
        match &self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The sequence inside, mutable, if this is one.
    pub fn as_seq_mut(&mut self) -> Option<&mut Vec<Node>> {
        match &mut self.value {
            Value::Seq(s) => Some(s),
            _ => None,
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is null.
    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// A scalar as text, the way compose turns numbers and booleans into strings
    /// (`environment`, `labels`, ...). `None` for null and collections.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Str(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Int(i) => Some(i.to_string()),
            Value::Float(f) => Some(format_float(*f)),
            _ => None,
        }
    }

    /// The value under a mapping key, if this is a mapping.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.as_map().and_then(|m| m.get(name))
    }

    /// The node a JSON Pointer (`/services/web/ports/0`) names, with the mark of the deepest
    /// node found on the way (so an error about a missing child still points near it).
    pub fn locate(&self, pointer: &str) -> &Node {
        let mut node = self;
        for part in pointer.split('/').skip(1) {
            let part = part.replace("~1", "/").replace("~0", "~");
            let next = match &node.value {
                Value::Map(m) => m.get(&part),
                Value::Seq(s) => part.parse::<usize>().ok().and_then(|i| s.get(i)),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node
    }

    /// Converts to JSON (for schema validation and typed decoding). Marks and tags are dropped.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(s) => J::Array(s.iter().map(Node::to_json).collect()),
            Value::Map(m) => J::Object(m.iter().map(|(k, v)| (k.to_string(), v.to_json())).collect()),
        }
    }

    /// Visits every string scalar (not keys) with its attribute path, depth first.
    pub fn walk_strings_mut<E>(
        &mut self,
        path: &mut Vec<PathPart>,
        f: &mut impl FnMut(&[PathPart], &mut String, &Mark) -> Result<(), E>,
    ) -> Result<(), E> {
        match &mut self.value {
            Value::Str(s) => f(path, s, &self.mark),
            Value::Seq(items) => {
                for (i, n) in items.iter_mut().enumerate() {
                    path.push(PathPart::Index(i));
                    let r = n.walk_strings_mut(path, f);
                    path.pop();
                    r?;
                }
                Ok(())
            }
            Value::Map(m) => {
                for (k, n) in m.entries.iter_mut() {
                    path.push(PathPart::Key(k.name.clone()));
                    let r = n.walk_strings_mut(path, f);
                    path.pop();
                    r?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// Formats a float the way Go's `strconv.FormatFloat(f, 'g', -1, 64)` does for ordinary values
/// (`2.5`, `0.001`, `3`), which is what compose prints for a float turned into a string.
pub fn format_float(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 { format!("{}", f as i64) } else { format!("{f}") }
}

/// One step of an attribute path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathPart {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Formats an attribute path the way errors show it: `services.web.ports[0]`.
pub fn path_to_string(path: &[PathPart]) -> String {
    let mut out = String::new();
    for p in path {
        match p {
            PathPart::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathPart::Index(i) => {
                out.push_str(&format!("[{i}]"));
            }
        }
    }
    out
}

/// Turns a JSON Pointer into the attribute path form (`/services/web/ports/0` to
/// `services.web.ports[0]`). Numeric parts are shown as indexes when the tree has a sequence
/// there.
pub fn pointer_to_path(root: &Node, pointer: &str) -> String {
    let mut parts = Vec::new();
    let mut node = Some(root);
    for raw in pointer.split('/').skip(1) {
        let part = raw.replace("~1", "/").replace("~0", "~");
        match node.map(|n| &n.value) {
            Some(Value::Seq(s)) => {
                let i = part.parse::<usize>().unwrap_or(usize::MAX);
                node = s.get(i);
                parts.push(PathPart::Index(i));
            }
            Some(Value::Map(m)) => {
                node = m.get(&part);
                parts.push(PathPart::Key(part));
            }
            _ => {
                node = None;
                parts.push(PathPart::Key(part));
            }
        }
    }
    path_to_string(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(line: u32) -> Mark {
        Mark { file: Arc::from("c.yaml"), line, col: 1 }
    }

    #[test]
    fn locate_follows_pointer_and_stops_at_deepest_found() {
        let mut ports = Map::default();
        ports.insert(
            Key { name: "ports".into(), mark: mark(2) },
            Node::new(Value::Seq(vec![Node::str("80", &mark(3))]), mark(3)),
        );
        let root = Node::new(Value::Map(ports), mark(1));
        assert_eq!(root.locate("/ports/0").mark.line, 3);
        assert_eq!(root.locate("/ports/7").mark.line, 3);
        assert_eq!(root.locate("/nope").mark.line, 1);
        assert_eq!(pointer_to_path(&root, "/ports/0"), "ports[0]");
    }

    #[test]
    fn mark_display_omits_unknown_parts() {
        assert_eq!(mark(4).to_string(), "c.yaml:4:1");
        assert_eq!(Mark::synthetic(&Arc::from("x.yaml")).to_string(), "x.yaml");
    }

    #[test]
    fn floats_print_like_go() {
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(0.001), "0.001");
    }
}
