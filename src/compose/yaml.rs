//! YAML text to [`Node`] trees, with positions, anchors, aliases, merge keys and merge tags.
//!
//! We read events from `saphyr-parser` (the maintained successor of yaml-rust, which reports a
//! span for every event) and build our own tree, because every later step needs the file and
//! line of each value and no serde-level YAML crate keeps them.

use std::collections::HashMap;
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

/// Parses every document of `text`. `file` is the name used in marks and messages.
pub fn parse_documents(text: &str, file: &Arc<str>) -> Result<Vec<Node>, YamlError> {
    let mut builder =
        Builder { file: file.clone(), stack: Vec::new(), anchors: HashMap::new(), docs: Vec::new() };
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

enum Frame {
    Seq { node: Node, anchor: usize },
    Map { node: Node, anchor: usize, pending_key: Option<Key>, merges: Vec<Node> },
}

struct Builder {
    file: Arc<str>,
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
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
                let node = self
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| self.err(mark.clone(), "alias to an unknown anchor"))?;
                // An alias used as a value is that node; keep where the alias was written too.
                let node = Node { mark: node.mark.clone(), ..node };
                self.push_value(node, mark, true)
            }
            Event::Scalar(text, style, anchor, tag) => {
                let merge_tag = self.merge_tag(tag.as_deref(), &mark)?;
                let value = resolve_scalar(&text, style, tag.as_deref());
                let node = Node { value, mark: mark.clone(), tag: merge_tag };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                self.push_value(node, mark, false)
            }
            Event::SequenceStart(anchor, tag) => {
                let merge_tag = self.merge_tag(tag.as_deref(), &mark)?;
                let node = Node { value: Value::Seq(Vec::new()), mark, tag: merge_tag };
                self.stack.push(Frame::Seq { node, anchor });
                Ok(())
            }
            Event::MappingStart(anchor, tag) => {
                let merge_tag = self.merge_tag(tag.as_deref(), &mark)?;
                let node = Node { value: Value::Map(Map::default()), mark, tag: merge_tag };
                self.stack.push(Frame::Map { node, anchor, pending_key: None, merges: Vec::new() });
                Ok(())
            }
            Event::SequenceEnd => {
                let Some(Frame::Seq { node, anchor }) = self.stack.pop() else {
                    return Err(self.err(mark, "unbalanced sequence end"));
                };
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                let at = node.mark.clone();
                self.push_value(node, at, false)
            }
            Event::MappingEnd => {
                let Some(Frame::Map { mut node, anchor, merges, .. }) = self.stack.pop() else {
                    return Err(self.err(mark, "unbalanced mapping end"));
                };
                apply_merge_keys(&mut node, merges);
                if anchor > 0 {
                    self.anchors.insert(anchor, node.clone());
                }
                let at = node.mark.clone();
                self.push_value(node, at, false)
            }
        }
    }

    /// Places a finished value into its parent: a sequence item, a mapping key, a mapping value,
    /// or a whole document.
    fn push_value(&mut self, node: Node, mark: Mark, from_alias: bool) -> Result<(), YamlError> {
        let file = self.file.clone();
        match self.stack.last_mut() {
            None => {
                self.docs.push(node);
                Ok(())
            }
            Some(Frame::Seq { node: seq, .. }) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
                Ok(())
            }
            Some(Frame::Map { node: map_node, pending_key, merges, .. }) => match pending_key.take() {
                None => {
                    let name = match node.scalar_text() {
                        Some(k) => k,
                        None if node.is_null() => "null".to_string(),
                        None => {
                            return Err(YamlError { mark, message: "a mapping key must be a scalar".into() });
                        }
                    };
                    if from_alias && name == "<<" {
                        return Err(YamlError { mark, message: "an alias cannot be a merge key".into() });
                    }
                    *pending_key = Some(Key { name, mark });
                    Ok(())
                }
                Some(key) => {
                    let Value::Map(map) = &mut map_node.value else { return Ok(()) };
                    if key.name == "<<" {
                        merges.push(node);
                        return Ok(());
                    }
                    if map.contains(&key.name) {
                        return Err(YamlError {
                            mark: key.mark.clone(),
                            message: format!("mapping key {:?} is already defined in {}", key.name, file),
                        });
                    }
                    map.entries.push((key, node));
                    Ok(())
                }
            },
        }
    }
}

/// YAML merge keys (`<<: *base` or `<<: [*a, *b]`): keys written in the mapping win, then
/// earlier merged mappings over later ones.
fn apply_merge_keys(node: &mut Node, merges: Vec<Node>) {
    let Value::Map(map) = &mut node.value else { return };
    for merge in merges {
        let sources: Vec<Node> = match merge.value {
            Value::Seq(items) => items,
            _ => vec![merge],
        };
        for source in sources {
            if let Value::Map(src) = source.value {
                for (k, v) in src.entries {
                    if !map.contains(&k.name) {
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
    fn empty_file_is_an_empty_mapping() {
        assert_eq!(p("").as_map().map(Map::len), Some(0));
    }
}
