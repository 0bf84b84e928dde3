//! The config hash a container is labelled with: when it changes, `up` recreates the
//! container. It covers the service's normalized configuration (as docker compose's
//! `ServiceHash`: without build, pull policy and scale), the image it runs, and the
//! configuration of every network, volume, secret and config the service uses.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::compose::hash::service_hash;
use crate::compose::model::Project;

/// The config hash of `service` in `project` when it runs image `image_id`.
pub fn config_hash(project: &Project, service: &str, image_id: &str) -> String {
    let Some(svc) = project.services.get(service) else { return String::new() };
    let svc_json = serde_json::to_value(svc).unwrap_or(Value::Null);
    let mut used = Map::new();
    let pick = |keys: Vec<String>, all: Value| -> Value {
        let mut out = Map::new();
        for k in keys {
            if let Some(v) = all.get(&k) {
                out.insert(k, v.clone());
            }
        }
        Value::Object(out)
    };
    let networks: Vec<String> =
        svc.networks.as_ref().map(|n| n.keys().cloned().collect()).unwrap_or_default();
    used.insert("networks".into(), pick(networks, json!(project.networks)));
    let volumes: Vec<String> =
        svc.volumes.iter().filter(|v| v.r#type == "volume").filter_map(|v| v.source.clone()).collect();
    used.insert("volumes".into(), pick(volumes, json!(project.volumes)));
    let secrets = svc.secrets.iter().map(|s| s.source.clone()).collect();
    used.insert("secrets".into(), pick(secrets, json!(project.secrets)));
    let configs = svc.configs.iter().map(|s| s.source.clone()).collect();
    used.insert("configs".into(), pick(configs, json!(project.configs)));
    let whole = json!({
        "service": service_hash(&svc_json),
        "image": image_id,
        "uses": Value::Object(used),
    });
    hex::encode(Sha256::digest(whole.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(v: Value) -> Project {
        Project::from_json(v).expect("decodes")
    }

    #[test]
    fn changes_with_the_service_the_image_and_what_it_uses_only() {
        let base = json!({"name": "p", "services": {
            "a": {"image": "x", "environment": {"A": "1"}, "networks": {"default": null}, "volumes": [{"type": "volume", "source": "data", "target": "/d"}]},
            "b": {"image": "x"}},
            "networks": {"default": {"name": "p_default"}}, "volumes": {"data": {"name": "p_data"}}});
        let p = project(base.clone());
        let h = config_hash(&p, "a", "sha256:1");
        assert_eq!(h, config_hash(&p, "a", "sha256:1"));
        assert_ne!(h, config_hash(&p, "a", "sha256:2"));

        let mut env = base.clone();
        env["services"]["a"]["environment"]["A"] = json!("2");
        assert_ne!(h, config_hash(&project(env), "a", "sha256:1"));

        let mut other = base.clone();
        other["services"]["b"]["environment"] = json!({"B": "1"});
        assert_eq!(h, config_hash(&project(other), "a", "sha256:1"));

        let mut vol = base.clone();
        vol["volumes"]["data"]["labels"] = json!({"k": "v"});
        assert_ne!(h, config_hash(&project(vol), "a", "sha256:1"));

        let mut scale = base;
        scale["services"]["a"]["scale"] = json!(3);
        assert_eq!(h, config_hash(&project(scale), "a", "sha256:1"));
    }
}
