//! The configuration hash of a service, as docker compose computes it (`ServiceHash`): the
//! SHA-256 of the service's canonical JSON without what does not change a container (build
//! instructions, pull policy, scale and replica count).

use sha2::{Digest, Sha256};

/// Hash of a service's configuration, hex encoded. `service` is the service's canonical JSON
/// (what `config --format json` prints under `services.<name>`).
pub fn service_hash(service: &serde_json::Value) -> String {
    let mut v = service.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("build");
        map.remove("pull_policy");
        map.remove("scale");
        if let Some(deploy) = map.get_mut("deploy").and_then(serde_json::Value::as_object_mut) {
            deploy.insert("replicas".into(), serde_json::Value::from(1));
        }
    }
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scale_and_build_do_not_change_the_hash() {
        let a = json!({"image": "x", "deploy": {"replicas": 3}, "build": {"context": "."}, "scale": 2});
        let b = json!({"image": "x", "deploy": {"replicas": 1}});
        assert_eq!(service_hash(&a), service_hash(&b));
        assert_ne!(service_hash(&a), service_hash(&json!({"image": "y", "deploy": {"replicas": 1}})));
        assert_eq!(service_hash(&b).len(), 64);
    }
}
