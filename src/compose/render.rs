//! Rendering a project as `docker compose config` prints it: JSON (two-space indent) or YAML
//! (through saphyr's emitter), with every literal `$` written as `$$` so the output reads back
//! the same.

use saphyr::{Scalar, Yaml};

/// Converts a JSON value to a YAML document node, keeping key order.
fn to_yaml(value: &serde_json::Value) -> Yaml<'static> {
    use serde_json::Value as J;
    match value {
        J::Null => Yaml::Value(Scalar::Null),
        J::Bool(b) => Yaml::Value(Scalar::Boolean(*b)),
        J::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Yaml::Value(Scalar::Integer(i)),
            (None, Some(f)) => Yaml::Value(Scalar::FloatingPoint(f.into())),
            (None, None) => Yaml::Value(Scalar::String(n.to_string().into())),
        },
        J::String(s) => Yaml::Value(Scalar::String(s.clone().into())),
        J::Array(items) => Yaml::Sequence(items.iter().map(to_yaml).collect()),
        J::Object(map) => Yaml::Mapping(
            map.iter().map(|(k, v)| (Yaml::Value(Scalar::String(k.clone().into())), to_yaml(v))).collect(),
        ),
    }
}

/// Renders a JSON value as a YAML document (no `---` header), ending with a newline.
pub(crate) fn yaml_text(value: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut emitter = saphyr::YamlEmitter::new(&mut out);
    emitter.multiline(true);
    // Writing into a String cannot fail.
    let _ = emitter.dump(&to_yaml(value));
    let body = out.strip_prefix("---\n").unwrap_or(&out);
    // saphyr writes null as `~`; docker compose writes `null`. A string "~" is always quoted
    // by the emitter, so a bare `~` at the end of a line can only be a null.
    // Lines of a literal block scalar (`|`) are content, not nodes: they are left alone.
    let mut text = String::with_capacity(body.len() + 16);
    let mut block_indent: Option<usize> = None;
    for line in body.lines() {
        let indent = line.len() - line.trim_start().len();
        if block_indent.is_some_and(|b| indent > b || line.trim().is_empty()) {
            text.push_str(line);
            text.push('\n');
            continue;
        }
        block_indent = None;
        let trimmed = line.trim_end();
        if trimmed.ends_with('|') || trimmed.ends_with("|-") || trimmed.ends_with("|+") {
            block_indent = Some(indent);
        }
        match line.strip_suffix('~') {
            Some(head) if head.is_empty() || head.ends_with(": ") || head.ends_with("- ") => {
                text.push_str(head);
                text.push_str("null");
            }
            _ => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

/// Output format of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML, as `docker compose config` prints by default.
    Yaml,
    /// JSON with two-space indentation.
    Json,
}

/// Renders a value (a project, or part of one) in `format`. With `escape_dollars`, each `$`
/// is written `$$`, as docker compose does unless `--no-interpolate` is given.
pub fn render<T: serde::Serialize>(
    value: &T,
    format: Format,
    escape_dollars: bool,
) -> Result<String, serde_json::Error> {
    let json = serde_json::to_value(value)?;
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&json)? + "\n",
        Format::Yaml => yaml_text(&json),
    };
    Ok(if escape_dollars { text.replace('$', "$$") } else { text })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_escapes_dollars_when_asked() {
        let v = serde_json::json!({"a": "$x"});
        assert_eq!(render(&v, Format::Json, true).ok().as_deref(), Some("{\n  \"a\": \"$$x\"\n}\n"));
        assert_eq!(render(&v, Format::Yaml, false).ok().as_deref(), Some("a: $x\n"));
    }

    #[test]
    fn yaml_keeps_order_and_quotes_ambiguous_strings() {
        let v = serde_json::json!({"name": "demo", "services": {"web": {"ports": [{"target": 80, "published": "8080"}], "command": null}}});
        let text = yaml_text(&v);
        assert!(text.starts_with("name: demo\nservices:\n"), "{text}");
        assert!(text.contains("published: \"8080\""), "{text}");
        assert!(text.contains("command: null\n"), "{text}");
        let tilde = yaml_text(&serde_json::json!({"a": "~", "b": [null]}));
        assert_eq!(tilde, "a: \"~\"\nb:\n  - null\n");
        let block = yaml_text(&serde_json::json!({"s": "line one\nx: ~\n", "n": null}));
        assert!(block.contains("  x: ~\n"), "{block}");
        assert!(block.ends_with("n: null\n") || block.contains("n: null\n"), "{block}");
    }
}
