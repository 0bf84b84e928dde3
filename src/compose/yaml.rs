//! YAML text to [`Node`] trees, with positions, anchors, aliases, merge keys and merge tags.
//!
//! We read events from `saphyr-parser` (the maintained successor of yaml-rust, which reports a
//! span for every event) and build our own tree, because every later step needs the file and
//! line of each value and no serde-level YAML crate keeps them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use super::node::{Key, Map, Mark, MergeTag, Node, Value};

/// A YAML syntax or structure error, with where it is.
#[derive(Debug, thiserror::Error)]
#[error("{mark}: {message}")]
pub struct YamlError {
    /// Where the problem is.
    pub mark: Mark,
    /// What is wrong.
    pub message: String,
}

/// How deep collections may nest, aliases included. Every later step of the loader walks the
/// tree recursively, so the depth has to be bounded for a hostile file to fail cleanly instead
/// of overflowing the stack; the parser itself stops flow collections at 255 levels, and no
/// real compose file comes near either.
pub const MAX_DEPTH: usize = 256;

/// Aliases may not expand a document much past its own size ("billion laughs": a few lines of
/// aliases of aliases that stand for billions of nodes). Like go-yaml v3, which compose-go
/// uses, the share of nodes that aliases (and anchors, which we copy) may add shrinks as the
/// document grows: up to 99% of the nodes of a small document, down to 10% past four million
/// nodes. Below [`ALIAS_FREE_NODES`] copied nodes anything goes.
const ALIAS_FREE_NODES: usize = 10_000;

/// The share of all nodes that may come from aliases in a document of `total` nodes.
fn allowed_alias_ratio(total: usize) -> f64 {
    const SMALL: f64 = 400_000.0;
    const LARGE: f64 = 4_000_000.0;
    let total = total as f64;
    if total <= SMALL {
        0.99
    } else if total >= LARGE {
        0.10
    } else {
        0.99 - 0.89 * ((total - SMALL) / (LARGE - SMALL))
    }
}

/// Parses every document of `text`. `file` is the name used in marks and messages.
pub fn parse_documents(text: &str, file: &Arc<str>) -> Result<Vec<Node>, YamlError> {
    let mut builder = Builder {
        file: file.clone(),
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        direct_nodes: 0,
        copied_nodes: 0,
    };
    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| YamlError {
            mark: Mark {
                file: file.clone(),
                line: e.marker().line() as u32,
                col: e.marker().col() as u32 + 1,
            },
            message: e.info().to_string(),
        })?;
        builder.event(event, span)?;
    }
    Ok(builder.docs)
}

/// Parses a file that holds one document (or none: an empty file is an empty mapping).
pub fn parse(text: &str, file: &Arc<str>) -> Result<Node, YamlError> {
    let mut docs = parse_documents(text, file)?;
    match docs.len() {
        0 => Ok(Node::map(&Mark { file: file.clone(), line: 1, col: 1 })),
        1 => Ok(docs.remove(0)),
        _ => Err(YamlError {
            mark: docs[1].mark.clone(),
            message: "a compose file holds one YAML document; found another one here".into(),
        }),
    }
}

/// A collection being built. `depth` is how many levels its finished content reaches below it
/// (an alias brings the depth of what it stands for).
enum Frame {
    Seq {
        node: Node,
        anchor: usize,
        depth: usize,
    },
    Map {
        node: Node,
        anchor: usize,
        pending_key: Option<Key>,
        merges: Vec<Node>,
        depth: usize,
        /// The keys so far, once the mapping is large enough for linear lookups to hurt
        /// (a mapping of 40,000 services must not take 40,000² comparisons).
        keys: Option<HashSet<String>>,
    },
}

/// Entries a mapping may have before its duplicate-key check switches to a hash set.
const LINEAR_KEYS: usize = 16;

/// A finished anchored node: the node, how many nodes it holds and how deep it reaches.
struct Anchored {
    node: Node,
    size: usize,
    depth: usize,
}

struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Anchored>,
    docs: Vec<Node>,
    /// Nodes made from the text's own events.
    direct_nodes: usize,
    /// Nodes made by copying (aliases, and the copy kept of each anchored node).
    copied_nodes: usize,
}

impl Builder {
    fn mark(&self, span: &Span) -> Mark {
        Mark { file: self.file.clone(), line: span.start.line() as u32, col: span.start.col() as u32 + 1 }
    }

    fn err(&self, mark: Mark, message: impl Into<String>) -> YamlError {
        YamlError { mark, message: message.into() }
    }

    fn merge_tag(&self, tag: Option<&Tag>, mark: &Mark) -> Result<Option<MergeTag>, YamlError> {
        let Some(tag) = tag else { return Ok(None) };
        if tag.handle == "!" {
            return match tag.suffix.as_str() {
                "reset" => Ok(Some(MergeTag::Reset)),
                "override" => Ok(Some(MergeTag::Override)),
                other => Err(self
                    .err(mark.clone(), format!("unknown tag !{other} (compose knows !reset and !override)"))),
            };
        }
        Ok(None)
    }

    fn event(&mut self, event: Event<'_>, span: Span) -> Result<(), YamlError> {
        let mark = self.mark(&span);
        match event {
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => Ok(()),
            Event::DocumentEnd => {
                self.anchors.clear();
                Ok(())
            }
            Event::Alias(id) => {
                let Some(anchored) = self.anchors.get(&id) else {
                    return Err(self.err(mark, "alias to an unknown anchor"));
                };
                let (size, depth) = (anchored.size, anchored.depth);
                self.check_depth(depth, &mark)?;
                self.count_copies(size, &mark)?;
                let node = self.anchors.get(&id).map(|a| a.node.clone()).unwrap_or_else(|| Node::map(&mark));
                self.push_value(node, mark, true, depth)
            }
            Event::Scalar(text, style, anchor, tag) => {
                let merge_tag = self.merge_tag(tag.as_deref(), &mark)?;
                let value = resolve_scalar(&text, style, tag.as_deref());
                let node = Node { value, mark: mark.clone(), tag: merge_tag };
                self.direct_nodes += 1;
                if anchor > 0 {
                    self.anchor(anchor, &node, 0, &mark)?;
                }
                self.push_value(node, mark, false, 0)
            }
            Event::SequenceStart(anchor, tag) => {
                let merge_tag = self.merge_tag(tag.as_deref(), &mark)?;
                self.check_depth(1, &mark)?;
                self.direct_nodes += 1;
                let node = Node { value: Value::Seq(Vec::new()), mark, tag: merge_tag };
                self.stack.push(Frame::Seq { node, anchor, depth: 1 });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                let merge_tag = self.merge_tag(tag.as_deref(), &mark)?;
                self.check_depth(1, &mark)?;
                self.direct_nodes += 1;
                let node = Node { value: Value::Map(Map::default()), mark, tag: merge_tag };
                self.stack.push(Frame::Map {
                    node,
                    anchor,
                    pending_key: None,
                    merges: Vec::new(),
                    depth: 1,
                    keys: None,
                });
                Ok(())
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq { node, anchor, depth }) = self.stack.pop() else {
                    return Err(self.err(mark, "unbalanced sequence end"));
                };
                if anchor > 0 {
                    self.anchor(anchor, &node, depth, &mark)?;
                }
                let at = node.mark.clone();
                self.push_value(node, at, false, depth)
            }
            Event::MappingEnd => {
                let Some(Frame::Map { mut node, anchor, merges, depth, .. }) = self.stack.pop() else {
                    return Err(self.err(mark, "unbalanced mapping end"));
                };
                apply_merge_keys(&mut node, merges);
                if anchor > 0 {
                    self.anchor(anchor, &node, depth, &mark)?;
                }
                let at = node.mark.clone();
                self.push_value(node, at, false, depth)
            }
        }
    }

    /// Refuses a value reaching `depth` levels below the collections open around it when that
    /// goes past [`MAX_DEPTH`].
    fn check_depth(&self, depth: usize, mark: &Mark) -> Result<(), YamlError> {
        if self.stack.len() + depth > MAX_DEPTH {
            return Err(self.err(
                mark.clone(),
                format!("collections nested more than {MAX_DEPTH} levels deep (aliases included)"),
            ));
        }
        Ok(())
    }

    /// Counts `size` nodes about to be copied, and refuses the document once copies outgrow it.
    fn count_copies(&mut self, size: usize, mark: &Mark) -> Result<(), YamlError> {
        self.copied_nodes = self.copied_nodes.saturating_add(size);
        let total = self.copied_nodes.saturating_add(self.direct_nodes);
        if self.copied_nodes > ALIAS_FREE_NODES
            && self.copied_nodes as f64 > allowed_alias_ratio(total) * total as f64
        {
            return Err(self.err(
                mark.clone(),
                format!(
                    "excessive aliasing: aliases expand this document to more than {} nodes from {} written ones",
                    self.copied_nodes, self.direct_nodes
                ),
            ));
        }
        Ok(())
    }

    /// Keeps a copy of an anchored node for the aliases to it.
    fn anchor(&mut self, anchor: usize, node: &Node, depth: usize, mark: &Mark) -> Result<(), YamlError> {
        let size = node_count(node);
        self.count_copies(size, mark)?;
        self.anchors.insert(anchor, Anchored { node: node.clone(), size, depth });
        Ok(())
    }

    /// Places a finished value into its parent: a sequence item, a mapping key, a mapping value,
    /// or a whole document. `depth` is how many levels the value has (0 for a scalar).
    fn push_value(
        &mut self,
        node: Node,
        mark: Mark,
        from_alias: bool,
        depth: usize,
    ) -> Result<(), YamlError> {
        let file = self.file.clone();
        match self.stack.last_mut() {
            None => {
                self.docs.push(node);
                Ok(())
            }
            Some(Frame::Seq { node: seq, depth: seq_depth, .. }) => {
                *seq_depth = (*seq_depth).max(depth + 1);
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
                Ok(())
            }
            Some(Frame::Map { node: map_node, pending_key, merges, depth: map_depth, keys, .. }) => {
                match pending_key.take() {
                    None => {
                        let name = match node.scalar_text() {
                            Some(k) => k,
                            None if node.is_null() => "null".to_string(),
                            None => {
                                return Err(YamlError {
                                    mark,
                                    message: "a mapping key must be a scalar".into(),
                                });
                            }
                        };
                        if from_alias && name == "<<" {
                            return Err(YamlError { mark, message: "an alias cannot be a merge key".into() });
                        }
                        *pending_key = Some(Key { name, mark });
                        Ok(())
                    }
                    Some(key) => {
                        *map_depth = (*map_depth).max(depth + 1);
                        let Value::Map(map) = &mut map_node.value else { return Ok(()) };
                        if key.name == "<<" {
                            merges.push(node);
                            return Ok(());
                        }
                        let duplicate = match keys {
                            Some(keys) => !keys.insert(key.name.clone()),
                            None => {
                                let found = map.contains(&key.name);
                                if map.len() >= LINEAR_KEYS {
                                    let mut set: HashSet<String> =
                                        map.entries.iter().map(|(k, _)| k.name.clone()).collect();
                                    set.insert(key.name.clone());
                                    *keys = Some(set);
                                }
                                found
                            }
                        };
                        if duplicate {
                            return Err(YamlError {
                                mark: key.mark.clone(),
                                message: format!("mapping key {:?} is already defined in {}", key.name, file),
                            });
                        }
                        map.entries.push((key, node));
                        Ok(())
                    }
                }
            }
        }
    }
}

/// How many nodes `node` holds, itself included.
fn node_count(node: &Node) -> usize {
    // Iterative: the tree is at most MAX_DEPTH deep, but counting needs no stack either way.
    let mut count = 0usize;
    let mut todo = vec![node];
    while let Some(n) = todo.pop() {
        count += 1;
        match &n.value {
            Value::Seq(items) => todo.extend(items.iter()),
            Value::Map(map) => todo.extend(map.entries.iter().map(|(_, v)| v)),
            _ => {}
        }
    }
    count
}

/// YAML merge keys (`<<: *base` or `<<: [*a, *b]`): keys written in the mapping win, then
/// earlier merged mappings over later ones.
fn apply_merge_keys(node: &mut Node, merges: Vec<Node>) {
    let Value::Map(map) = &mut node.value else { return };
    if merges.is_empty() {
        return;
    }
    // A set of the keys so far: merging a large mapping must not compare every pair of keys.
    let mut present: HashSet<String> = map.entries.iter().map(|(k, _)| k.name.clone()).collect();
    for merge in merges {
        let sources: Vec<Node> = match merge.value {
            Value::Seq(items) => items,
            _ => vec![merge],
        };
        for source in sources {
            if let Value::Map(src) = source.value {
                for (k, v) in src.entries {
                    if present.insert(k.name.clone()) {
                        map.entries.push((k, v));
                    }
                }
            }
        }
    }
}

/// Types a scalar by the YAML 1.2 core schema (as go-yaml v3, which compose-go uses, does;
/// including its acceptance of `0755` as an octal integer).
fn resolve_scalar(text: &str, style: ScalarStyle, tag: Option<&Tag>) -> Value {
    if let Some(tag) = tag.filter(|t| t.handle == "tag:yaml.org,2002:" || t.handle == "!!") {
        match tag.suffix.as_str() {
            "str" => return Value::Str(text.to_string()),
            "null" => return Value::Null,
            _ => {}
        }
    }
    if style != ScalarStyle::Plain {
        return Value::Str(text.to_string());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Value::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Value::Int(i);
    }
    if let Some(f) = looks_like_float(text).then(|| text.replace('_', "").parse::<f64>().ok()).flatten() {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

fn parse_int(text: &str) -> Option<i64> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if body.is_empty() {
        return None;
    }
    let body = body.replace('_', "");
    let value = if let Some(hex) = body.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()?
    } else if let Some(oct) = body.strip_prefix("0o") {
        i64::from_str_radix(oct, 8).ok()?
    } else if body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| b.is_ascii_digit()) {
        i64::from_str_radix(&body[1..], 8).ok()?
    } else if body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i64>().ok()?
    } else {
        return None;
    };
    Some(if neg { -value } else { value })
}

fn looks_like_float(text: &str) -> bool {
    let t = text.trim_start_matches(['-', '+']);
    !t.is_empty()
        && t.bytes().any(|b| b.is_ascii_digit())
        && t.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+' | b'_'))
        && (t.contains('.') || t.contains('e') || t.contains('E'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        parse(text, &Arc::from("t.yaml")).expect("parses")
    }

    #[test]
    fn scalars_are_typed_by_the_core_schema() {
        let n = p("a: 1\nb: \"1\"\nc: true\nd: ~\ne: 2.5\nf: 0440\ng: yes\nh: 0x1F\n");
        let m = n.as_map().unwrap();
        assert_eq!(m.get("a").unwrap().value, Value::Int(1));
        assert_eq!(m.get("b").unwrap().value, Value::Str("1".into()));
        assert_eq!(m.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(m.get("d").unwrap().value, Value::Null);
        assert_eq!(m.get("e").unwrap().value, Value::Float(2.5));
        assert_eq!(m.get("f").unwrap().value, Value::Int(0o440));
        assert_eq!(m.get("g").unwrap().value, Value::Str("yes".into()));
        assert_eq!(m.get("h").unwrap().value, Value::Int(31));
    }

    #[test]
    fn marks_are_one_based() {
        let n = p("services:\n  web:\n    image: x\n");
        let image = n.get("services").unwrap().get("web").unwrap().get("image").unwrap();
        assert_eq!((image.mark.line, image.mark.col), (3, 12));
        let key = n.get("services").unwrap().get("web").unwrap().as_map().unwrap().key("image").unwrap();
        assert_eq!((key.mark.line, key.mark.col), (3, 5));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let n = p("x: &b\n  image: a\n  env: 1\ns:\n  <<: *b\n  env: 2\nt: *b\nu:\n  <<: [*b, {z: 1}]\n");
        let s = n.get("s").unwrap();
        assert_eq!(s.get("image").unwrap().as_str(), Some("a"));
        assert_eq!(s.get("env").unwrap().value, Value::Int(2));
        assert_eq!(n.get("t").unwrap().get("image").unwrap().as_str(), Some("a"));
        assert_eq!(n.get("u").unwrap().get("z").unwrap().value, Value::Int(1));
    }

    #[test]
    fn merge_tags_are_kept() {
        let n = p("a: !reset null\nb: !override [1]\nc: !reset\n");
        assert_eq!(n.get("a").unwrap().tag, Some(MergeTag::Reset));
        assert_eq!(n.get("b").unwrap().tag, Some(MergeTag::Override));
        assert_eq!(n.get("c").unwrap().tag, Some(MergeTag::Reset));
    }

    #[test]
    fn duplicate_keys_and_bad_syntax_name_the_line() {
        let e = parse("a: 1\na: 2\n", &Arc::from("t.yaml")).unwrap_err();
        assert_eq!(e.mark.line, 2);
        let e = parse("a: [1\n", &Arc::from("t.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("t.yaml:"), "{e}");
    }

    #[test]
    fn deep_block_nesting_is_an_error_not_a_stack_overflow() {
        let mut text = String::from("x:\n");
        for i in 0..10_000 {
            text.push_str(&" ".repeat(i + 1));
            text.push_str("k:\n");
        }
        let e = parse(&text, &Arc::from("deep.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("deep.yaml:"), "{e}");
        assert!(e.message.contains("nested more than 256 levels"), "{e}");
        // Sequences too, and right at the limit it still parses.
        let seqs: String = (0..MAX_DEPTH).map(|i| format!("{}-\n", "  ".repeat(i))).collect();
        assert!(parse(&seqs, &Arc::from("t.yaml")).is_ok());
        let seqs: String = (0..=MAX_DEPTH).map(|i| format!("{}-\n", "  ".repeat(i))).collect();
        assert!(parse(&seqs, &Arc::from("t.yaml")).is_err());
    }

    #[test]
    fn aliases_count_towards_the_depth() {
        // Each anchor wraps the previous alias one level deeper: depth grows with no nesting in
        // the text. (Plenty of plain nodes keep the copies below the aliasing limit.)
        let mut text = format!("filler: [{}]\n", vec!["x"; 50_000].join(", "));
        text.push_str("a0: &a0 [x]\n");
        for i in 1..400 {
            text.push_str(&format!("a{i}: &a{i} [*a{}]\n", i - 1));
        }
        let e = parse(&text, &Arc::from("t.yaml")).unwrap_err();
        assert!(e.message.contains("nested more than"), "{e}");
    }

    #[test]
    fn billion_laughs_is_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let (prev, next) = (w[0], w[1]);
            let items = vec![format!("*{prev}"); 9].join(", ");
            text.push_str(&format!("{next}: &{next} [{items}]\n"));
        }
        let e = parse(&text, &Arc::from("lol.yaml")).unwrap_err();
        assert!(e.to_string().starts_with("lol.yaml:"), "{e}");
        assert!(e.message.contains("excessive aliasing"), "{e}");
        // Ordinary reuse of an anchor, even many times, is fine.
        let mut text =
            String::from("x-common: &c {image: busybox, restart: always, labels: {a: b}}\nservices:\n");
        for i in 0..5_000 {
            text.push_str(&format!("  s{i}: *c\n"));
        }
        assert!(parse(&text, &Arc::from("t.yaml")).is_ok());
    }

    #[test]
    fn duplicate_keys_are_found_in_large_mappings() {
        let mut text: String = (0..100).map(|i| format!("k{i}: {i}\n")).collect();
        text.push_str("k7: again\n");
        let e = parse(&text, &Arc::from("t.yaml")).unwrap_err();
        assert_eq!(e.mark.line, 101, "{e}");
        // A merge key does not bring duplicates, however large.
        let n = p(&format!(
            "b: &b {{{}}}\nc:\n  <<: *b\n  k3: 9\n",
            (0..50).map(|i| format!("k{i}: {i}")).collect::<Vec<_>>().join(", ")
        ));
        assert_eq!(n.get("c").unwrap().as_map().unwrap().len(), 50);
        assert_eq!(n.get("c").unwrap().get("k3").unwrap().value, Value::Int(9));
    }

    #[test]
    fn empty_file_is_an_empty_mapping() {
        assert_eq!(p("").as_map().map(Map::len), Some(0));
    }
}
