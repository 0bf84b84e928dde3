//! Reference checks over the normalized tree (compose-go `checkConsistency`): every service,
//! network, volume, secret and config a service names must exist. Errors point at the
//! reference in the file.

use std::collections::HashSet;

use super::error::LoadError;
use super::node::{Map, Node, Value};

/// Checks references in a normalized tree; the first problem found is returned.
pub fn check(tree: &Node) -> Result<(), LoadError> {
    let empty = Map::default();
    let section = |name: &str| tree.get(name).and_then(Node::as_map).unwrap_or(&empty);
    let services = section("services");
    // Names as sets: thousands of services each naming others must not scan the lists.
    let names = |name: &str| -> HashSet<&str> { section(name).iter().map(|(k, _)| k).collect() };
    let (service_names, networks, volumes, secrets, configs) =
        (names("services"), names("networks"), names("volumes"), names("secrets"), names("configs"));

    for (name, service) in services.iter() {
        let at = |attr: &str| format!("services.{name}.{attr}");
        let err = |node: &Node, attr: &str, msg: String| Err(LoadError::invalid(&node.mark, at(attr), msg));
        if service.get("image").is_none() && service.get("build").is_none() {
            return Err(LoadError::invalid(
                &service.mark,
                format!("services.{name}"),
                format!("service {name:?} has neither an image nor a build context specified"),
            ));
        }
        if let Some(deps) = service.get("depends_on").and_then(Node::as_map) {
            for (dep, spec) in deps.iter() {
                let required = !matches!(spec.get("required").map(|r| &r.value), Some(Value::Bool(false)));
                if required && !service_names.contains(dep) {
                    return err(
                        spec,
                        "depends_on",
                        format!("service {name:?} depends on undefined service {dep:?}"),
                    );
                }
            }
        }
        if let Some(nets) = service.get("networks").and_then(Node::as_map) {
            for (net, spec) in nets.iter() {
                if !networks.contains(net) {
                    return err(
                        spec,
                        "networks",
                        format!("service {name:?} refers to undefined network {net:?}"),
                    );
                }
            }
        }
        for (attr, prefix) in [("network_mode", "service:"), ("ipc", "service:"), ("pid", "service:")] {
            if let Some(node) = service.get(attr)
                && let Some(target) = node.as_str().and_then(|m| m.strip_prefix(prefix))
                && !service_names.contains(target)
            {
                return err(node, attr, format!("service {name:?} refers to undefined service {target:?}"));
            }
        }
        if service.get("network_mode").is_some() && service.get("networks").is_some() {
            let node = service.get("network_mode").unwrap_or(service);
            return err(node, "network_mode", "network_mode and networks cannot be combined".into());
        }
        for (i, from) in service.get("volumes_from").and_then(Node::as_seq).into_iter().flatten().enumerate()
        {
            let Some(text) = from.as_str() else { continue };
            if text.starts_with("container:") {
                continue;
            }
            let target = text.strip_prefix("service:").unwrap_or(text).split(':').next().unwrap_or_default();
            if !service_names.contains(target) {
                return err(
                    from,
                    &format!("volumes_from[{i}]"),
                    format!("service {name:?} refers to undefined service {target:?}"),
                );
            }
        }
        for (i, link) in service.get("links").and_then(Node::as_seq).into_iter().flatten().enumerate() {
            let target = link.as_str().and_then(|l| l.split(':').next()).unwrap_or_default();
            if !service_names.contains(target) {
                return err(
                    link,
                    &format!("links[{i}]"),
                    format!("service {name:?} links to undefined service {target:?}"),
                );
            }
        }
        for (i, volume) in service.get("volumes").and_then(Node::as_seq).into_iter().flatten().enumerate() {
            if volume.get("type").and_then(Node::as_str) != Some("volume") {
                continue;
            }
            if let Some(source) = volume.get("source").and_then(Node::as_str)
                && !volumes.contains(source)
            {
                return err(
                    volume,
                    &format!("volumes[{i}]"),
                    format!("service {name:?} refers to undefined volume {source:?}"),
                );
            }
        }
        for (attr, defined) in [("secrets", &secrets), ("configs", &configs)] {
            for (i, item) in service.get(attr).and_then(Node::as_seq).into_iter().flatten().enumerate() {
                let Some(source) = item.get("source").and_then(Node::as_str) else { continue };
                if !defined.contains(source) {
                    let kind = attr.trim_end_matches('s');
                    return err(
                        item,
                        &format!("{attr}[{i}]"),
                        format!("service {name:?} refers to undefined {kind} {source:?}"),
                    );
                }
            }
        }
        if let Some(restart) = service.get("restart") {
            let policy = restart.scalar_text().unwrap_or_default();
            if !valid_restart(&policy) {
                return err(
                    restart,
                    "restart",
                    format!(
                        "invalid restart policy {policy:?}: expected no, always, on-failure[:N] or unless-stopped"
                    ),
                );
            }
        }
        if let Some(cn) = service.get("container_name") {
            // compose-go CheckContainerNameUnicity, over the merged and extended services.
            let text = cn.scalar_text().unwrap_or_default();
            let same =
                |s: &Node| s.get("container_name").and_then(Node::scalar_text).as_deref() == Some(&text);
            if let Some((other, _)) = services.iter().take_while(|(n, _)| *n != name).find(|(_, s)| same(s)) {
                return err(
                    cn,
                    "container_name",
                    format!("container name {text:?} is already in use by service {other:?}"),
                );
            }
            let scale = |n: Option<&Node>| n.and_then(Node::scalar_text).and_then(|s| s.parse::<i64>().ok());
            let replicas = scale(service.get("scale"))
                .or_else(|| scale(service.get("deploy").and_then(|d| d.get("replicas"))));
            if replicas.is_some_and(|r| r > 1) {
                return err(
                    cn,
                    "container_name",
                    format!(
                        "service {name:?} sets container_name but has more than one replica: container names must be unique"
                    ),
                );
            }
        }
    }
    Ok(())
}

/// `no`, `always`, `unless-stopped`, `on-failure` or `on-failure:N`.
fn valid_restart(policy: &str) -> bool {
    match policy.split_once(':') {
        Some(("on-failure", n)) => n.parse::<u32>().is_ok(),
        None => matches!(policy, "no" | "always" | "on-failure" | "unless-stopped"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::compose::yaml;

    fn check_text(text: &str) -> Result<(), String> {
        check(&yaml::parse(text, &Arc::from("c.yaml")).expect("yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn complete_project_passes() {
        check_text(
            "services:\n  a: {image: x, depends_on: {b: {condition: service_started}}, networks: {n: }, volumes: [{type: volume, source: v, target: /v}], secrets: [{source: s}]}\n  b: {build: {context: .}}\nnetworks: {n: {}}\nvolumes: {v: {}}\nsecrets: {s: {file: /x}}\n",
        )
        .expect("consistent");
    }

    #[test]
    fn each_dangling_reference_is_named() {
        let cases = [
            (
                "services:\n  a: {image: x, depends_on: {b: {required: true}}}\n",
                "depends on undefined service \"b\"",
            ),
            ("services:\n  a: {image: x, networks: {n: }}\n", "undefined network \"n\""),
            (
                "services:\n  a: {image: x, volumes: [{type: volume, source: v, target: /v}]}\n",
                "undefined volume \"v\"",
            ),
            ("services:\n  a: {image: x, configs: [{source: c}]}\n", "undefined config \"c\""),
            ("services:\n  a: {image: x, network_mode: 'service:z'}\n", "undefined service \"z\""),
            ("services:\n  a: {image: x, volumes_from: ['z:ro']}\n", "undefined service \"z\""),
            ("services:\n  a: {image: x, links: ['z:db']}\n", "undefined service \"z\""),
            ("services:\n  a: {container_name: c, image: x, scale: 2}\n", "container_name"),
            (
                "services:\n  {a: {container_name: c, image: x}, b: {container_name: c, image: y}}\n",
                "container name \"c\" is already in use by service \"a\"",
            ),
            ("services:\n  a: {command: [x]}\n", "neither an image nor a build context"),
            ("services:\n  a: {image: x, restart: sometimes}\n", "invalid restart policy \"sometimes\""),
            ("services:\n  a: {image: x, restart: 'on-failure:x'}\n", "invalid restart policy"),
        ];
        for (text, want) in cases {
            let err = check_text(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.starts_with("c.yaml:2:"), "{err}");
        }
    }

    #[test]
    fn optional_dependency_may_be_absent() {
        check_text("services:\n  a: {image: x, depends_on: {b: {required: false}}}\n").expect("tolerated");
    }
}
