//! The subset of Go's `text/template` that docker's `--format` flags are used with, over JSON
//! values: `{{.Field.Sub}}`, `{{.}}`, pipelines (`{{.X | json}}`), the functions docker adds
//! (`json`, `join`, `split`, `lower`, `upper`, `title`, `truncate`, `pad`, `println`) and Go's
//! (`index`, `len`, `printf`, `print`), `{{range}}`, `{{if}}`/`{{else}}`, `{{with}}`, and the
//! `{{-`/`-}}` trim markers. Values print as Go prints them (`[a b]`, `map[k:v]`).

use serde_json::Value;

/// A template that does not parse or cannot be applied to a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template: {0}")]
pub struct TemplateError(String);

fn err<T>(msg: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError(msg.into()))
}

#[derive(Debug, Clone, PartialEq)]
enum Arg {
    /// `.A.B` (empty: `.`).
    Field(Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Func(String),
    /// `(pipeline)`.
    Sub(Vec<Vec<Arg>>),
}

type Pipeline = Vec<Vec<Arg>>;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Action(Pipeline),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    If(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

enum Token {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Token>, TemplateError> {
    let mut out = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_before = after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_before {
            text = text.trim_end();
        }
        if !text.is_empty() {
            out.push(Token::Text(text.to_string()));
        }
        let body_start = if trim_before { 1 } else { 0 };
        let Some(end) = find_close(after) else { return err("unclosed action (missing }})") };
        let mut body = &after[body_start..end];
        trim_next = false;
        if body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-") {
            body = &body[..body.len() - 1];
            trim_next = true;
        }
        out.push(Token::Action(body.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        out.push(Token::Text(text.to_string()));
    }
    Ok(out)
}

/// The `}}` that closes an action, skipping quoted strings.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn parse_pipeline(src: &str) -> Result<Pipeline, TemplateError> {
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    let p = pipeline_at(&chars, &mut i)?;
    if i < chars.len() {
        return err(format!("unexpected {:?} in {src:?}", chars[i]));
    }
    Ok(p)
}

fn pipeline_at(c: &[char], i: &mut usize) -> Result<Pipeline, TemplateError> {
    let mut pipeline = vec![Vec::new()];
    loop {
        while *i < c.len() && c[*i].is_whitespace() {
            *i += 1;
        }
        if *i >= c.len() || c[*i] == ')' {
            break;
        }
        let ch = c[*i];
        let Some(last) = pipeline.last_mut() else { return err("empty pipeline") };
        match ch {
            '|' => {
                *i += 1;
                if last.is_empty() {
                    return err("missing command before |");
                }
                pipeline.push(Vec::new());
            }
            '(' => {
                *i += 1;
                let sub = pipeline_at(c, i)?;
                if *i >= c.len() || c[*i] != ')' {
                    return err("unclosed (");
                }
                *i += 1;
                last.push(Arg::Sub(sub));
            }
            '"' => {
                *i += 1;
                let mut s = String::new();
                loop {
                    let Some(&ch) = c.get(*i) else { return err("unterminated string") };
                    *i += 1;
                    match ch {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = c.get(*i) else { return err("unterminated string") };
                            *i += 1;
                            s.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            });
                        }
                        other => s.push(other),
                    }
                }
                last.push(Arg::Str(s));
            }
            '`' => {
                *i += 1;
                let start = *i;
                while *i < c.len() && c[*i] != '`' {
                    *i += 1;
                }
                if *i >= c.len() {
                    return err("unterminated raw string");
                }
                last.push(Arg::Str(c[start..*i].iter().collect()));
                *i += 1;
            }
            _ => {
                let start = *i;
                while *i < c.len() && !c[*i].is_whitespace() && !"|()".contains(c[*i]) {
                    *i += 1;
                }
                let word: String = c[start..*i].iter().collect();
                last.push(if word == "." {
                    Arg::Field(Vec::new())
                } else if let Some(path) = word.strip_prefix('.') {
                    if path.split('.').any(str::is_empty) {
                        return err(format!("bad field {word:?}"));
                    }
                    Arg::Field(path.split('.').map(str::to_string).collect())
                } else if word == "true" || word == "false" {
                    Arg::Bool(word == "true")
                } else if let Ok(n) = word.parse::<f64>() {
                    Arg::Num(n)
                } else if word.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_') {
                    Arg::Func(word)
                } else {
                    return err(format!("unexpected {word:?}"));
                });
            }
        }
    }
    if pipeline.iter().any(Vec::is_empty) {
        return err("empty command");
    }
    Ok(pipeline)
}

/// What ended a list of nodes.
enum Stop {
    Eof,
    End,
    Else,
}

fn parse_nodes(tokens: &[Token], pos: &mut usize) -> Result<(Vec<Node>, Stop), TemplateError> {
    let mut nodes = Vec::new();
    while *pos < tokens.len() {
        let t = &tokens[*pos];
        *pos += 1;
        match t {
            Token::Text(s) => nodes.push(Node::Text(s.clone())),
            Token::Action(a) if a.starts_with("/*") => {}
            Token::Action(a) if a == "end" => return Ok((nodes, Stop::End)),
            Token::Action(a) if a == "else" => return Ok((nodes, Stop::Else)),
            Token::Action(a) => {
                let (word, rest) = a.split_once(char::is_whitespace).unwrap_or((a, ""));
                match word {
                    "range" | "if" | "with" => {
                        let p = parse_pipeline(rest)?;
                        let (body, end) = parse_nodes(tokens, pos)?;
                        let otherwise = match end {
                            Stop::Else => {
                                let (o, end) = parse_nodes(tokens, pos)?;
                                if !matches!(end, Stop::End) {
                                    return err(format!("{word} without end"));
                                }
                                o
                            }
                            Stop::End => Vec::new(),
                            Stop::Eof => return err(format!("{word} without end")),
                        };
                        nodes.push(match word {
                            "range" => Node::Range(p, body, otherwise),
                            "if" => Node::If(p, body, otherwise),
                            _ => Node::With(p, body, otherwise),
                        });
                    }
                    _ => nodes.push(Node::Action(parse_pipeline(a)?)),
                }
            }
        }
    }
    Ok((nodes, Stop::Eof))
}

/// Go's truth: false, 0, nil, and empty strings, lists and maps are false.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A value as Go's `fmt` prints it (`%v`); `field` names where it came from, so that a null
/// list or map of docker's types prints as Go prints the empty ones.
fn go_print(v: &Value, field: Option<&str>) -> String {
    match v {
        Value::Null => match field {
            Some(
                "Cmd" | "Entrypoint" | "Env" | "RepoTags" | "RepoDigests" | "Layers" | "Shell" | "OnBuild",
            ) => "[]".into(),
            Some("Labels" | "ExposedPorts" | "Volumes" | "Annotations") => "map[]".into(),
            _ => "<nil>".into(),
        },
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.to_string(),
            (_, Some(u)) => u.to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(|x| go_print(x, None)).collect::<Vec<_>>().join(" ")),
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys.iter().map(|k| format!("{k}:{}", go_print(&o[*k], None))).collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

/// A value with the name of the field it was read from (for printing nulls as Go would).
#[derive(Clone)]
struct Val {
    v: Value,
    field: Option<String>,
    /// A map key that was not there: prints as `<no value>`.
    missing: bool,
}

impl Val {
    fn plain(v: Value) -> Val {
        Val { v, field: None, missing: false }
    }

    fn print(&self) -> String {
        if self.missing { "<no value>".into() } else { go_print(&self.v, self.field.as_deref()) }
    }
}

fn as_str(v: &Val) -> String {
    match &v.v {
        Value::String(s) => s.clone(),
        _ => v.print(),
    }
}

fn call(name: &str, args: Vec<Val>) -> Result<Val, TemplateError> {
    let want = |n: usize| -> Result<(), TemplateError> {
        if args.len() == n { Ok(()) } else { err(format!("{name}: wants {n} arguments, got {}", args.len())) }
    };
    let s = |v: String| Ok(Val::plain(Value::String(v)));
    match name {
        "json" => {
            want(1)?;
            s(serde_json::to_string(&args[0].v).map_err(|e| TemplateError(e.to_string()))?)
        }
        "join" => {
            want(2)?;
            let sep = as_str(&args[1]);
            match &args[0].v {
                Value::Array(a) => {
                    s(a.iter().map(|x| as_str(&Val::plain(x.clone()))).collect::<Vec<_>>().join(&sep))
                }
                Value::Null => s(String::new()),
                _ => err("join: wants a list"),
            }
        }
        "split" => {
            want(2)?;
            let (text, sep) = (as_str(&args[0]), as_str(&args[1]));
            Ok(Val::plain(Value::Array(text.split(sep.as_str()).map(|p| Value::String(p.into())).collect())))
        }
        "lower" => {
            want(1)?;
            s(as_str(&args[0]).to_lowercase())
        }
        "upper" => {
            want(1)?;
            s(as_str(&args[0]).to_uppercase())
        }
        "title" => {
            want(1)?;
            let t = as_str(&args[0]);
            let mut out = String::new();
            let mut start = true;
            for ch in t.chars() {
                out.extend(if start { ch.to_uppercase().collect::<Vec<_>>() } else { vec![ch] });
                start = ch.is_whitespace();
            }
            s(out)
        }
        "truncate" => {
            want(2)?;
            let n = args[1].v.as_f64().unwrap_or(0.0).max(0.0) as usize;
            s(as_str(&args[0]).chars().take(n).collect())
        }
        "pad" => {
            want(3)?;
            let (l, r) =
                (args[1].v.as_f64().unwrap_or(0.0) as usize, args[2].v.as_f64().unwrap_or(0.0) as usize);
            s(format!("{}{}{}", " ".repeat(l), as_str(&args[0]), " ".repeat(r)))
        }
        "len" => {
            want(1)?;
            let n = match &args[0].v {
                Value::Array(a) => a.len(),
                Value::Object(o) => o.len(),
                Value::String(t) => t.len(),
                Value::Null => 0,
                _ => return err("len of a number"),
            };
            Ok(Val::plain(Value::from(n)))
        }
        "index" => {
            if args.len() < 2 {
                return err("index: wants a value and keys");
            }
            let mut cur = args[0].v.clone();
            for k in &args[1..] {
                cur = match (&cur, &k.v) {
                    (Value::Object(o), Value::String(key)) => o.get(key).cloned().unwrap_or(Value::Null),
                    (Value::Array(a), Value::Number(n)) => {
                        let i = n.as_u64().unwrap_or(u64::MAX) as usize;
                        match a.get(i) {
                            Some(x) => x.clone(),
                            None => return err(format!("index out of range: {i}")),
                        }
                    }
                    (Value::Null, _) => Value::Null,
                    _ => return err("index: cannot index that"),
                };
            }
            Ok(Val::plain(cur))
        }
        "print" => s(args.iter().map(Val::print).collect::<Vec<_>>().join("")),
        "println" => s(format!("{}\n", args.iter().map(Val::print).collect::<Vec<_>>().join(" "))),
        "printf" => {
            let Some((fmt, rest)) = args.split_first() else { return err("printf: wants a format") };
            let fmt = as_str(fmt);
            let mut out = String::new();
            let mut rest = rest.iter();
            let mut chars = fmt.chars().peekable();
            while let Some(ch) = chars.next() {
                if ch != '%' {
                    out.push(ch);
                    continue;
                }
                match chars.next() {
                    Some('%') => out.push('%'),
                    Some('s' | 'v' | 'd') => match rest.next() {
                        Some(v) => out.push_str(&v.print()),
                        None => out.push_str("%!v(MISSING)"),
                    },
                    Some('q') => match rest.next() {
                        Some(v) => out.push_str(&format!("{:?}", as_str(v))),
                        None => out.push_str("%!q(MISSING)"),
                    },
                    Some(other) => return err(format!("printf: verb %{other} is not supported")),
                    None => out.push_str("%!(NOVERB)"),
                }
            }
            s(out)
        }
        "not" => {
            want(1)?;
            Ok(Val::plain(Value::Bool(!truthy(&args[0].v))))
        }
        "eq" | "ne" => {
            want(2)?;
            let same = args[0].v == args[1].v
                || matches!((args[0].v.as_f64(), args[1].v.as_f64()), (Some(a), Some(b)) if a == b);
            Ok(Val::plain(Value::Bool(same == (name == "eq"))))
        }
        other => err(format!("function {other:?} not defined")),
    }
}

fn field(dot: &Val, path: &[String]) -> Val {
    let mut cur = dot.clone();
    for key in path {
        cur = match &cur.v {
            Value::Object(o) => match o.get(key) {
                Some(v) => Val { v: v.clone(), field: Some(key.clone()), missing: false },
                None => Val { v: Value::Null, field: Some(key.clone()), missing: true },
            },
            _ => Val { v: Value::Null, field: Some(key.clone()), missing: true },
        };
    }
    cur
}

fn eval_arg(a: &Arg, dot: &Val) -> Result<Val, TemplateError> {
    Ok(match a {
        Arg::Field(p) => field(dot, p),
        Arg::Str(s) => Val::plain(Value::String(s.clone())),
        Arg::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => Val::plain(Value::from(*n as i64)),
        Arg::Num(n) => Val::plain(serde_json::Number::from_f64(*n).map(Value::Number).unwrap_or(Value::Null)),
        Arg::Bool(b) => Val::plain(Value::Bool(*b)),
        Arg::Func(f) => call(f, Vec::new())?,
        Arg::Sub(p) => eval_pipeline(p, dot)?,
    })
}

fn eval_pipeline(p: &Pipeline, dot: &Val) -> Result<Val, TemplateError> {
    let mut prev: Option<Val> = None;
    for cmd in p {
        let v = match &cmd[0] {
            Arg::Func(f) => {
                let mut args = cmd[1..].iter().map(|a| eval_arg(a, dot)).collect::<Result<Vec<_>, _>>()?;
                args.extend(prev.take());
                call(f, args)?
            }
            first => {
                if cmd.len() > 1 || prev.is_some() {
                    return err("only functions take arguments");
                }
                eval_arg(first, dot)?
            }
        };
        prev = Some(v);
    }
    prev.map_or_else(|| err("empty pipeline"), Ok)
}

fn exec(nodes: &[Node], dot: &Val, out: &mut String) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&eval_pipeline(p, dot)?.print()),
            Node::If(p, body, otherwise) => {
                let v = eval_pipeline(p, dot)?;
                exec(if truthy(&v.v) { body } else { otherwise }, dot, out)?;
            }
            Node::With(p, body, otherwise) => {
                let v = eval_pipeline(p, dot)?;
                if truthy(&v.v) {
                    exec(body, &v, out)?;
                } else {
                    exec(otherwise, dot, out)?;
                }
            }
            Node::Range(p, body, otherwise) => {
                let v = eval_pipeline(p, dot)?;
                let items: Vec<Value> = match &v.v {
                    Value::Array(a) => a.clone(),
                    Value::Object(o) => {
                        let mut keys: Vec<&String> = o.keys().collect();
                        keys.sort();
                        keys.into_iter().map(|k| o[k].clone()).collect()
                    }
                    Value::Null => Vec::new(),
                    _ => return err(format!("range can't iterate over {}", v.print())),
                };
                if items.is_empty() {
                    exec(otherwise, dot, out)?;
                }
                for item in items {
                    exec(body, &Val::plain(item), out)?;
                }
            }
        }
    }
    Ok(())
}

impl Template {
    /// Parses `src`.
    pub fn parse(src: &str) -> Result<Template, TemplateError> {
        let tokens = lex(src)?;
        let mut pos = 0;
        let (nodes, end) = parse_nodes(&tokens, &mut pos)?;
        match end {
            Stop::Eof => Ok(Template { nodes }),
            Stop::End => err("unexpected {{end}}"),
            Stop::Else => err("unexpected {{else}}"),
        }
    }

    /// Applies the template to `value`.
    pub fn render(&self, value: &Value) -> Result<String, TemplateError> {
        let mut out = String::new();
        exec(&self.nodes, &Val::plain(value.clone()), &mut out)?;
        Ok(out)
    }
}

/// How a `--format` value reads: docker's `table` and `json` words, or a template (`table`
/// followed by a template prints a header row of the fields' names first).
#[derive(Debug, Clone)]
pub enum FormatSpec {
    /// The default table.
    Table,
    /// One JSON object per line.
    Json,
    /// A Go template; `header` when it began with `table `.
    Template {
        /// The parsed template.
        template: Template,
        /// Whether to print a header row.
        header: bool,
        /// The template text (for the header).
        text: String,
    },
}

impl FormatSpec {
    /// Reads a `--format` value.
    pub fn parse(s: &str) -> Result<FormatSpec, TemplateError> {
        let t = s.trim();
        if t.is_empty() || t == "table" {
            return Ok(FormatSpec::Table);
        }
        if t == "json" || t == "{{json .}}" {
            return Ok(FormatSpec::Json);
        }
        let (header, text) = match t.strip_prefix("table ") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s.to_string()),
        };
        // docker reads `\t` and `\n` written literally on a command line as the characters.
        let text = text.replace("\\t", "\t").replace("\\n", "\n");
        Ok(FormatSpec::Template { template: Template::parse(&text)?, header, text })
    }

    /// The header row of a `table` template: each `{{.Field}}` as docker's column name.
    pub fn header(text: &str, names: &[(&str, &str)]) -> String {
        let mut out = text.to_string();
        for (field, title) in names {
            out = out.replace(&format!("{{{{.{field}}}}}"), title);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: &Value) -> String {
        Template::parse(t).unwrap().render(v).unwrap()
    }

    #[test]
    fn fields_functions_and_go_printing() {
        let v = json!({
            "Id": "sha256:abc",
            "RepoTags": ["a:1", "b:2"],
            "Size": 1234567,
            "Config": { "Env": ["A=1", "B=2"], "Labels": null, "Cmd": null, "User": "" },
            "Map": { "b": 2, "a": "x" },
        });
        assert_eq!(r("{{.Id}}", &v), "sha256:abc");
        assert_eq!(r("{{.RepoTags}}", &v), "[a:1 b:2]");
        assert_eq!(r("{{.Size}}", &v), "1234567");
        assert_eq!(r("{{json .Config.Env}}", &v), r#"["A=1","B=2"]"#);
        assert_eq!(r("{{.Config.Env | json}}", &v), r#"["A=1","B=2"]"#);
        assert_eq!(r("{{.Config.Labels}} {{.Config.Cmd}} {{json .Config.Labels}}", &v), "map[] [] null");
        assert_eq!(r("{{.Map}}", &v), "map[a:x b:2]");
        assert_eq!(r("{{.Nope}}", &v), "<no value>");
        assert_eq!(r("{{join .RepoTags \", \"}}", &v), "a:1, b:2");
        assert_eq!(r("{{index .Map \"a\"}}-{{index .RepoTags 1}}", &v), "x-b:2");
        assert_eq!(r("{{len .RepoTags}} {{upper (index .RepoTags 0)}}", &v), "2 A:1");
        assert_eq!(r("{{range .Config.Env}}[{{.}}]{{end}}", &v), "[A=1][B=2]");
        assert_eq!(r("{{range .Nothing}}x{{else}}none{{end}}", &json!({})), "none");
        assert_eq!(r("{{if .Config.User}}u{{else}}root{{end}}", &v), "root");
        assert_eq!(r("{{with .Config}}{{.Env}}{{end}}", &v), "[A=1 B=2]");
        assert_eq!(r("{{printf \"%s=%d\" .Id .Size}}", &v), "sha256:abc=1234567");
        assert_eq!(r("a {{- \" b \" -}} c", &v), "a b c");
        assert_eq!(r("{{.}}", &json!("x")), "x");
    }

    #[test]
    fn bad_templates_are_errors() {
        for bad in ["{{.Id", "{{range .X}}", "{{end}}", "{{nosuch .X}}", "{{.A..B}}", "{{\"x}}"] {
            let parsed = Template::parse(bad);
            let failed = match parsed {
                Err(_) => true,
                Ok(t) => t.render(&json!({})).is_err(),
            };
            assert!(failed, "{bad}");
        }
    }

    #[test]
    fn format_specs() {
        assert!(matches!(FormatSpec::parse("table").unwrap(), FormatSpec::Table));
        assert!(matches!(FormatSpec::parse("json").unwrap(), FormatSpec::Json));
        let FormatSpec::Template { header, text, .. } =
            FormatSpec::parse("table {{.ID}}\\t{{.Tag}}").unwrap()
        else {
            panic!()
        };
        assert!(header);
        assert_eq!(FormatSpec::header(&text, &[("ID", "IMAGE ID"), ("Tag", "TAG")]), "IMAGE ID\tTAG");
    }
}
