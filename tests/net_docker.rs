//! berth beside Docker Engine: Docker sets the forward policy of `ip filter` to drop and keeps
//! a `DOCKER-USER` chain for its users. Simulated in a throwaway network namespace: forwarded
//! traffic of a berth network (a container reaching its own network's published port through
//! the host) still flows, Docker's own rules stay, and berth's accepts leave with its network.

mod net_support;

use std::time::Duration;

use berth::netns::PortRequest;
use net_support::*;

fn docker_like_filter() {
    let rules = serde_json::json!({"nftables": [
        {"add": {"table": {"family": "ip", "name": "filter"}}},
        {"add": {"chain": {"family": "ip", "table": "filter", "name": "FORWARD", "type": "filter",
            "hook": "forward", "prio": 0, "policy": "drop"}}},
        {"add": {"chain": {"family": "ip", "table": "filter", "name": "DOCKER-USER"}}},
        {"add": {"rule": {"family": "ip", "table": "filter", "chain": "FORWARD",
            "expr": [{"jump": {"target": "DOCKER-USER"}}]}}},
    ]});
    let parsed: nftables::schema::Nftables = serde_json::from_value(rules).unwrap();
    nftables::helper::apply_ruleset(&parsed).unwrap();
}

#[test]
fn forwarded_traffic_flows_with_dockers_drop_policy() {
    in_netns(|| {
        docker_like_filter();
        let env = Env::new();
        let net = env.nets.create(&env.network("p_default", "10.231.12.0/24")).unwrap();
        let mut req = env.request("web1", &[("p_default", &["web"])]);
        req.ports = vec![PortRequest {
            host_port: Some((18090, 18090)),
            container_port: (80, 80),
            ..Default::default()
        }];
        let web = env.nets.attach(&req).unwrap();
        let client = env.nets.attach(&env.request("client1", &[("p_default", &["client"])])).unwrap();
        let _server = httpd(&web, env.dir.path(), 80, "through docker's drop");
        // The client reaches the published port on its gateway: DNAT'ed back into the same
        // bridge, which is routed (forwarded), not switched.
        let fetched = eventually(Duration::from_secs(5), || {
            let out = run(
                bb(&client, &["wget", "-q", "-O", "-", "http://10.231.12.1:18090/"]),
                Duration::from_secs(4),
            );
            String::from_utf8_lossy(&out.stdout).contains("through docker's drop")
        });
        assert!(fetched, "forwarded traffic was dropped");
        let rules = ruleset_text();
        assert!(rules.contains("DOCKER-USER") && rules.contains(&net.bridge), "accepts in DOCKER-USER");

        env.nets.detach("web1").unwrap();
        env.nets.detach("client1").unwrap();
        env.nets.remove("p_default").unwrap();
        let rules = ruleset_text();
        assert!(!rules.contains(&net.bridge), "berth's accepts must leave with its network: {rules}");
        assert!(rules.contains("\"policy\":\"drop\""), "Docker's own chain stays");
        assert!(!berth_table_exists());
    });
}
