//! Two containers on one network reach each other by address and by name (through berth's DNS),
//! aliases and two-replica names resolve, and detach/remove leave nothing. Runs in a throwaway
//! network namespace.

mod net_support;

use std::time::Duration;

use net_support::*;

#[test]
fn same_network_by_ip_and_name_then_clean() {
    in_netns(|| {
        let env = Env::new();
        let net = env.nets.create(&env.network("p_default", "10.231.1.0/24")).unwrap();
        assert!(net.bridge.starts_with("berth") && net.bridge.len() == 13);
        // Same spec again: idempotent.
        assert_eq!(env.nets.create(&env.network("p_default", "10.231.1.0/24")).unwrap().id, net.id);

        let a = env.nets.attach(&env.request("web1", &[("p_default", &["web", "www"])])).unwrap();
        let b = env.nets.attach(&env.request("cli1", &[("p_default", &["cli"])])).unwrap();
        let c = env.nets.attach(&env.request("web2", &[("p_default", &["web"])])).unwrap();
        let a_ip = a.endpoints[0].ipv4.unwrap().to_string();
        assert_eq!(a.endpoints[0].interface, "eth0");
        let resolv = std::fs::read_to_string(&b.resolv_conf).unwrap();
        assert!(resolv.contains("nameserver 10.231.1.1"), "{resolv}");
        let hosts = std::fs::read_to_string(&a.hosts_file).unwrap();
        assert!(
            hosts.contains("127.0.0.1\tlocalhost") && hosts.contains(&format!("{a_ip}\tweb1")),
            "{hosts}"
        );

        let ping = run(bb(&b, &["ping", "-c", "1", "-W", "2", &a_ip]), Duration::from_secs(5));
        assert!(ping.status.success(), "ping: {}", String::from_utf8_lossy(&ping.stdout));

        let _web = httpd(&a, env.dir.path(), 8080, "hello from web1");
        let got = run(bb(&b, &["wget", "-q", "-O-", "http://www:8080/"]), Duration::from_secs(10));
        assert_eq!(String::from_utf8_lossy(&got.stdout), "hello from web1", "{:?}", got);

        // Two replicas under one name: both addresses answer.
        let c_ip = c.endpoints[0].ipv4.unwrap().to_string();
        let ns = run(bb(&b, &["nslookup", "-type=a", "web", "10.231.1.1"]), Duration::from_secs(5));
        let text = String::from_utf8_lossy(&ns.stdout);
        assert!(text.contains(&a_ip) && text.contains(&c_ip), "{text}");
        // Container name and hostname resolve too.
        let ns = run(bb(&a, &["nslookup", "-type=a", "cli1", "10.231.1.1"]), Duration::from_secs(5));
        assert!(String::from_utf8_lossy(&ns.stdout).contains(&b.endpoints[0].ipv4.unwrap().to_string()));

        assert!(env.nets.remove("p_default").is_err(), "refuses while containers are attached");
        for id in ["web1", "cli1", "web2"] {
            env.nets.detach(id).unwrap();
        }
        assert!(!a.netns_path.as_ref().unwrap().exists());
        assert!(links().iter().all(|l| !l.starts_with("bv")), "{:?}", links());
        env.nets.remove("p_default").unwrap();
        assert!(links().iter().all(|l| !l.starts_with("berth")), "{:?}", links());
        assert!(!berth_table_exists());
        assert!(berth::netns::dns::running(env.dirs()).is_none());
    });
}
