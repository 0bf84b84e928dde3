//! Normalization of the merged tree (compose-go `loader/normalize.go` and the project
//! options `docker compose config` applies): resource names, the implicit `default` network,
//! build defaults, implicit dependencies, and `env_file`/`label_file` folded into
//! `environment`/`labels` (so the printed model is what containers get).

use std::collections::HashMap;
use std::path::Path;

use super::environment::{self, Environment};
use super::error::LoadError;
use super::input;
use super::node::{Key, Map, MapBuilder, Mark, Node, Value};

/// Normalizes a merged canonical tree for project `name`; `env` resolves bare `environment`
/// keys and interpolates env files. Without `full` (compose-go's normalization turned off:
/// `config --no-normalize` or `--compatibility`), only what docker compose's `config` does
/// apart from it: env and label files folded in, bare `environment` keys resolved, secrets'
/// default targets; no `default` network, resource names, build defaults, `pull_policy`
/// spelling or implicit dependencies.
pub fn normalize(tree: &mut Node, name: &str, env: &Environment, full: bool) -> Result<(), LoadError> {
    let root_mark = tree.mark.clone();
    let Some(root) = tree.as_map_mut() else { return Ok(()) };
    let mut uses_default = false;
    if let Some(services) = root.get_mut("services").and_then(Node::as_map_mut) {
        for (key, service) in services.entries.iter_mut() {
            if full {
                uses_default |= normalize_service(&key.name, service, env)?;
            } else {
                resolve_service(&key.name, service, env)?;
            }
        }
    }
    if !full {
        return Ok(());
    }
    if uses_default {
        ensure_section(root, "networks", &root_mark);
        if let Some(networks) = root.get_mut("networks").and_then(Node::as_map_mut)
            && !networks.contains("default")
        {
            networks.insert(Key { name: "default".into(), mark: root_mark.clone() }, Node::map(&root_mark));
        }
    }
    for section in ["networks", "volumes", "secrets", "configs"] {
        if let Some(items) = root.get_mut(section).and_then(Node::as_map_mut) {
            for (key, item) in items.entries.iter_mut() {
                set_name_from_key(name, &key.name, item);
            }
        }
    }
    Ok(())
}

fn ensure_section(root: &mut Map, section: &str, mark: &Mark) {
    match root.get_mut(section) {
        Some(n) if n.as_map().is_some() => {}
        Some(n) => *n = Node::map(mark),
        None => root.insert(Key { name: section.into(), mark: mark.clone() }, Node::map(mark)),
    }
}

/// `name` defaults to `<project>_<key>`, or to the key for external resources.
fn set_name_from_key(project: &str, key: &str, item: &mut Node) {
    if item.is_null() {
        *item = Node::map(&item.mark);
    }
    let Some(map) = item.as_map_mut() else { return };
    if map.get("name").is_some_and(|n| !n.is_null()) {
        return;
    }
    let external = matches!(map.get("external").map(|n| &n.value), Some(Value::Bool(true)));
    let name = if external { key.to_string() } else { crate::labels::resource_name(project, key) };
    let mark = map.entries.first().map(|(k, _)| k.mark.clone()).unwrap_or_else(|| item.mark.clone());
    let Some(map) = item.as_map_mut() else { return };
    map.insert(Key { name: "name".into(), mark: mark.clone() }, Node::str(name, &mark));
}

fn key(name: &str, mark: &Mark) -> Key {
    Key { name: name.into(), mark: mark.clone() }
}

/// Normalizes one service; returns whether it is attached to the `default` network.
fn normalize_service(name: &str, service: &mut Node, env: &Environment) -> Result<bool, LoadError> {
    let mark = service.mark.clone();
    if service.is_null() {
        *service = Node::map(&mark);
    }
    let Some(svc) = service.as_map_mut() else { return Ok(false) };

    let network_mode = svc.get("network_mode").and_then(Node::as_str).map(String::from);
    if network_mode.is_none() && svc.get("networks").is_none_or(Node::is_null) {
        let mut nets = Map::default();
        nets.insert(key("default", &mark), Node::new(Value::Null, mark.clone()));
        svc.insert(key("networks", &mark), Node::new(Value::Map(nets), mark.clone()));
    }
    let uses_default = svc.get("networks").and_then(Node::as_map).is_some_and(|m| m.contains("default"));

    if let Some(build) = svc.get_mut("build").and_then(Node::as_map_mut)
        && !build.contains("dockerfile")
        && !build.contains("dockerfile_inline")
    {
        let m = build.entries.first().map(|(k, _)| k.mark.clone()).unwrap_or_else(|| mark.clone());
        build.insert(key("dockerfile", &m), Node::str("Dockerfile", &m));
    }

    if svc.get("pull_policy").and_then(Node::as_str) == Some("if_not_present")
        && let Some(policy) = svc.get_mut("pull_policy")
    {
        policy.value = Value::Str("missing".into());
    }
    if let Some(args) = svc.get_mut("build").and_then(Node::as_map_mut).and_then(|b| b.get_mut("args")) {
        resolve_build_args(args, env);
    }
    add_implicit_dependencies(svc, &mark);
    resolve_service(name, service, env)?;
    Ok(uses_default)
}

/// What docker compose's `config` does to a service whether or not it normalizes: secrets'
/// default targets, env and label files folded into `environment` and `labels`.
fn resolve_service(name: &str, service: &mut Node, env: &Environment) -> Result<(), LoadError> {
    let mark = service.mark.clone();
    if service.is_null() {
        *service = Node::map(&mark);
    }
    let Some(svc) = service.as_map_mut() else { return Ok(()) };
    if let Some(secrets) = svc.get_mut("secrets").and_then(Node::as_seq_mut) {
        for secret in secrets.iter_mut() {
            default_secret_target(secret);
        }
    }
    fold_env_files(name, svc, env, &mark)?;
    fold_label_files(name, svc, env, &mark)?;
    Ok(())
}

/// A build arg without a value takes it from `env`, and is dropped when `env` has none
/// (compose-go `resolve(args, env, keepEmpty=false)`).
fn resolve_build_args(args: &mut Node, env: &Environment) {
    let Some(map) = args.as_map_mut() else { return };
    map.entries.retain_mut(|(k, v)| {
        if !v.is_null() {
            return true;
        }
        match env.get(&k.name) {
            Some(found) => {
                v.value = Value::Str(found.clone());
                true
            }
            None => false,
        }
    });
}

/// A service secret without `target` is mounted at `/run/secrets/<source>` (compose-go
/// `defaultSecretMount`); configs get no default in the model.
fn default_secret_target(secret: &mut Node) {
    let mark = secret.mark.clone();
    let Some(m) = secret.as_map_mut() else { return };
    if m.contains("target") {
        return;
    }
    let Some(source) = m.get("source").and_then(Node::scalar_text) else { return };
    m.insert(key("target", &mark), Node::str(format!("/run/secrets/{source}"), &mark));
}

/// Services reached through `links`, a `service:` namespace (network_mode, ipc, pid, uts,
/// cgroup) or `volumes_from` must start first: compose-go records them as dependencies
/// (`service_started`, required), restarting with the other service except for
/// `volumes_from`. An explicit `depends_on` entry is kept as written.
fn add_implicit_dependencies(svc: &mut Map, mark: &Mark) {
    let mut implicit: Vec<(String, bool)> = Vec::new();
    for link in svc.get("links").and_then(Node::as_seq).into_iter().flatten().filter_map(Node::as_str) {
        implicit.push((link.split(':').next().unwrap_or(link).to_string(), true));
    }
    for attr in ["network_mode", "ipc", "pid", "uts", "cgroup"] {
        if let Some(target) = svc.get(attr).and_then(Node::as_str).and_then(|m| m.strip_prefix("service:")) {
            implicit.push((target.to_string(), true));
        }
    }
    for from in svc.get("volumes_from").and_then(Node::as_seq).into_iter().flatten().filter_map(Node::as_str)
    {
        if !from.starts_with("container:") {
            let service = from.strip_prefix("service:").unwrap_or(from);
            implicit.push((service.split(':').next().unwrap_or(service).to_string(), false));
        }
    }
    if implicit.is_empty() {
        return;
    }
    if svc.get("depends_on").is_none_or(|n| n.as_map().is_none()) {
        svc.insert(key("depends_on", mark), Node::map(mark));
    }
    let Some(deps) = svc.get_mut("depends_on").and_then(Node::as_map_mut) else { return };
    for (dep, restart) in implicit {
        if deps.contains(&dep) {
            continue;
        }
        let mut spec = Map::default();
        spec.insert(key("condition", mark), Node::str("service_started", mark));
        spec.insert(key("restart", mark), Node::new(Value::Bool(restart), mark.clone()));
        spec.insert(key("required", mark), Node::new(Value::Bool(true), mark.clone()));
        deps.insert(key(&dep, mark), Node::new(Value::Map(spec), mark.clone()));
    }
}

/// `env_file` contents under `environment` (which wins), then bare keys from `env`.
fn fold_env_files(name: &str, svc: &mut Map, env: &Environment, mark: &Mark) -> Result<(), LoadError> {
    let mut merged: Vec<(String, Option<String>)> = Vec::new();
    // Where each key is in `merged`: env files of tens of thousands of lines are read in
    // linear time.
    let mut index: HashMap<String, usize> = HashMap::new();
    // Env file values may refer to the project environment first, then to the service's own
    // `environment`, then to what earlier files set (compose-go WithServicesEnvironmentResolved).
    let explicit_env: Environment = svc
        .get("environment")
        .and_then(Node::as_map)
        .into_iter()
        .flat_map(|m| m.iter())
        .filter_map(|(k, v)| v.scalar_text().or_else(|| env.get(k).cloned()).map(|v| (k.to_string(), v)))
        .collect();
    if let Some(files) = svc.remove("env_file") {
        for (i, file) in files.as_seq().into_iter().flatten().enumerate() {
            let Some(path) = file.get("path").and_then(Node::as_str) else { continue };
            let required = !matches!(file.get("required").map(|r| &r.value), Some(Value::Bool(false)));
            let raw = file.get("format").and_then(Node::as_str) == Some("raw");
            let kind = input::Kind::of(Path::new(path));
            // Only a missing file may be optional: a folder or a device is a mistake either way.
            if let Some(problem) = kind.problem().filter(|_| required || kind != input::Kind::Missing) {
                return Err(LoadError::invalid(
                    &file.mark,
                    format!("services.{name}.env_file[{i}]"),
                    format!("env file {path} {problem}"),
                ));
            }
            if kind == input::Kind::Missing {
                continue;
            }
            let mut earlier: Environment =
                merged.iter().filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v))).collect();
            earlier.extend(explicit_env.iter().map(|(k, v)| (k.clone(), v.clone())));
            for (k, v) in environment::read_env_file(Path::new(path), env, &earlier, raw)? {
                let v = v.or_else(|| env.get(&k).cloned());
                let Some(v) = v else { continue };
                match index.get(&k) {
                    Some(&at) => merged[at].1 = Some(v),
                    None => {
                        index.insert(k.clone(), merged.len());
                        merged.push((k, Some(v)));
                    }
                }
            }
        }
    }
    let has_env = svc.get("environment").is_some();
    if merged.is_empty() && !has_env {
        return Ok(());
    }
    let explicit = svc.remove("environment").and_then(|n| match n.value {
        Value::Map(m) => Some(m),
        _ => None,
    });
    let mut out = MapBuilder::default();
    for (k, v) in merged {
        let value = v.map(Value::Str).unwrap_or(Value::Null);
        out.insert(key(&k, mark), Node::new(value, mark.clone()));
    }
    for (k, mut v) in explicit.map(|m| m.entries).unwrap_or_default() {
        if v.is_null()
            && let Some(found) = env.get(&k.name)
        {
            v.value = Value::Str(found.clone());
        }
        out.insert(k, v);
    }
    svc.insert(key("environment", mark), Node::new(Value::Map(out.finish()), mark.clone()));
    Ok(())
}

/// `label_file` contents under `labels` (which win).
fn fold_label_files(name: &str, svc: &mut Map, env: &Environment, mark: &Mark) -> Result<(), LoadError> {
    let Some(files) = svc.remove("label_file") else { return Ok(()) };
    let mut out = MapBuilder::default();
    for (i, file) in files.as_seq().into_iter().flatten().enumerate() {
        let Some(path) = file.as_str() else { continue };
        if let Some(problem) = input::Kind::of(Path::new(path)).problem() {
            return Err(LoadError::invalid(
                &file.mark,
                format!("services.{name}.label_file[{i}]"),
                format!("label file {path} {problem}"),
            ));
        }
        for (k, v) in environment::read_env_file(Path::new(path), env, &Environment::new(), false)? {
            out.insert(key(&k, mark), Node::str(v.unwrap_or_default(), mark));
        }
    }
    if let Some(labels) = svc.remove("labels").and_then(|n| match n.value {
        Value::Map(m) => Some(m),
        _ => None,
    }) {
        for (k, v) in labels.entries {
            out.insert(k, v);
        }
    }
    svc.insert(key("labels", mark), Node::new(Value::Map(out.finish()), mark.clone()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compose::yaml;

    fn normalized(text: &str, env: &[(&str, &str)]) -> serde_json::Value {
        processed(text, env, true)
    }

    fn processed(text: &str, env: &[(&str, &str)], full: bool) -> serde_json::Value {
        let mut tree = yaml::parse(text, &Arc::from("c.yaml")).expect("yaml");
        let env: Environment = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        normalize(&mut tree, "proj", &env, full).expect("normalizes");
        tree.to_json()
    }

    #[test]
    fn without_normalization_only_environment_labels_and_secret_targets_are_resolved() {
        let text = "services:
  a:
    image: x
    pull_policy: if_not_present
    build: {context: ., args: {FROM_ENV: }}
    links: [b]
    environment: {BARE: , SET: '1'}
    secrets: [{source: s}]
  b: {image: x, network_mode: 'service:a'}
networks: {front: }
volumes: {data: }
secrets: {s: {file: ./s}}
";
        let v = processed(text, &[("BARE", "b"), ("FROM_ENV", "e")], false);
        let a = &v["services"]["a"];
        assert!(a.get("networks").is_none(), "no default network: {a}");
        assert!(v["networks"].get("default").is_none());
        assert!(v["networks"]["front"].get("name").is_none(), "no names from keys: {v}");
        assert!(v["volumes"]["data"].get("name").is_none());
        assert!(v["secrets"]["s"].get("name").is_none());
        assert_eq!(a["pull_policy"], "if_not_present");
        assert!(a["build"].get("dockerfile").is_none());
        assert_eq!(a["build"]["args"], serde_json::json!({"FROM_ENV": null}));
        assert!(a.get("depends_on").is_none(), "no implicit dependencies: {a}");
        assert!(v["services"]["b"].get("depends_on").is_none());
        // What docker compose's `config` resolves apart from normalization.
        assert_eq!(a["environment"], serde_json::json!({"BARE": "b", "SET": "1"}));
        assert_eq!(a["secrets"][0]["target"], "/run/secrets/s");

        let v = processed(text, &[("BARE", "b"), ("FROM_ENV", "e")], true);
        let a = &v["services"]["a"];
        assert_eq!(a["networks"], serde_json::json!({"default": null}));
        assert_eq!(v["networks"]["front"]["name"], "proj_front");
        assert_eq!(a["pull_policy"], "missing");
        assert_eq!(a["build"]["dockerfile"], "Dockerfile");
        assert_eq!(a["build"]["args"], serde_json::json!({"FROM_ENV": "e"}));
        assert_eq!(a["depends_on"]["b"]["condition"], "service_started");
    }

    #[test]
    fn default_network_is_added_only_when_used() {
        let v = normalized("services: {a: {image: x}, b: {image: x, network_mode: host}}", &[]);
        assert_eq!(v["services"]["a"]["networks"], serde_json::json!({"default": null}));
        assert!(v["services"]["b"].get("networks").is_none());
        assert_eq!(v["networks"]["default"]["name"], "proj_default");
        let v = normalized("services: {a: {image: x, networks: {front: }}}\nnetworks: {front: }", &[]);
        assert!(v["networks"].get("default").is_none());
        assert_eq!(v["networks"]["front"]["name"], "proj_front");
    }

    #[test]
    fn names_come_from_keys_unless_set_or_external() {
        let v = normalized(
            "volumes: {a: {}, b: {name: custom}, c: {external: true}}\nsecrets: {s: {file: /x}}\nconfigs: {c: {external: true}}",
            &[],
        );
        assert_eq!(v["volumes"]["a"]["name"], "proj_a");
        assert_eq!(v["volumes"]["b"]["name"], "custom");
        assert_eq!(v["volumes"]["c"]["name"], "c");
        assert_eq!(v["secrets"]["s"]["name"], "proj_s");
        assert_eq!(v["configs"]["c"]["name"], "c");
    }

    #[test]
    fn build_gets_default_dockerfile() {
        let v = normalized(
            "services: {a: {build: {context: /src}}, b: {build: {context: /src, dockerfile_inline: 'FROM x'}}}",
            &[],
        );
        assert_eq!(v["services"]["a"]["build"]["dockerfile"], "Dockerfile");
        assert!(v["services"]["b"]["build"].get("dockerfile").is_none());
    }

    #[test]
    fn bare_environment_keys_resolve_from_env() {
        let v =
            normalized("services: {a: {image: x, environment: {SET: , UNSET: , V: '1'}}}", &[("SET", "s")]);
        assert_eq!(
            v["services"]["a"]["environment"],
            serde_json::json!({"SET": "s", "UNSET": null, "V": "1"})
        );
    }

    #[test]
    fn network_mode_links_and_volumes_from_become_dependencies() {
        let v = normalized(
            "services: {a: {image: x, network_mode: 'service:b', links: ['c:alias'], volumes_from: ['d:ro', 'container:e'], ipc: 'service:f', pid: 'service:g', uts: host, depends_on: {g: {condition: service_healthy}}}}",
            &[],
        );
        let deps = &v["services"]["a"]["depends_on"];
        let started = |restart: bool| serde_json::json!({"condition": "service_started", "restart": restart, "required": true});
        for dep in ["b", "c", "f"] {
            assert_eq!(deps[dep], started(true), "{dep}");
        }
        assert_eq!(deps["d"], started(false));
        assert_eq!(deps["g"], serde_json::json!({"condition": "service_healthy"}));
        assert!(deps.get("e").is_none() && deps.get("host").is_none());
    }

    #[test]
    fn pull_policy_build_args_and_secret_targets() {
        let v = normalized(
            "services: {a: {pull_policy: if_not_present, build: {context: /s, args: {SET: , UNSET: , V: '1'}}, secrets: [{source: s}, {source: t, target: mine}]}}",
            &[("SET", "s")],
        );
        let a = &v["services"]["a"];
        assert_eq!(a["pull_policy"], "missing");
        assert_eq!(a["build"]["args"], serde_json::json!({"SET": "s", "V": "1"}));
        assert_eq!(
            a["secrets"],
            serde_json::json!([{"source": "s", "target": "/run/secrets/s"}, {"source": "t", "target": "mine"}])
        );
    }

    #[test]
    fn env_files_see_the_project_environment_then_the_service_environment() {
        let dir = tempfile::tempdir().expect("tmp");
        let env_path = dir.path().join("a.env");
        std::fs::write(&env_path, "URL=http://${HOST}\nSELF=${MINE}-seen\nA=1\nB=${A}2\nHOST=file\n")
            .expect("write");
        let text = format!(
            "services: {{s: {{image: x, env_file: [{{path: '{}'}}], environment: {{MINE: mine}}}}}}",
            env_path.display()
        );
        let v = normalized(&text, &[("HOST", "proj")]);
        assert_eq!(
            v["services"]["s"]["environment"],
            serde_json::json!({"URL": "http://proj", "SELF": "mine-seen", "A": "1", "B": "12", "HOST": "file", "MINE": "mine"})
        );
    }

    #[test]
    fn env_and_label_files_are_folded_in() {
        let dir = tempfile::tempdir().expect("tmp");
        let env_path = dir.path().join("a.env");
        let label_path = dir.path().join("a.labels");
        std::fs::write(&env_path, "A=1\nB=2\nFROM_HOST\n").expect("write");
        std::fs::write(&label_path, "L=file\nM=file\n").expect("write");
        let text = format!(
            "services: {{s: {{image: x, env_file: [{{path: '{}', required: true}}], environment: {{B: over}}, label_file: ['{}'], labels: {{M: mine}}}}}}",
            env_path.display(),
            label_path.display()
        );
        let v = normalized(&text, &[("FROM_HOST", "h")]);
        let s = &v["services"]["s"];
        assert_eq!(s["environment"], serde_json::json!({"A": "1", "B": "over", "FROM_HOST": "h"}));
        assert_eq!(s["labels"], serde_json::json!({"L": "file", "M": "mine"}));
        assert!(s.get("env_file").is_none() && s.get("label_file").is_none());
    }
}
