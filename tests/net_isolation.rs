//! Two berth networks cannot reach each other; an internal network cannot leave. Runs in a
//! throwaway network namespace.

mod net_support;

use std::time::Duration;

use net_support::*;

#[test]
fn networks_are_isolated_and_internal_cannot_leave() {
    in_netns(|| {
        let env = Env::new();
        env.nets.create(&env.network("p_front", "10.231.2.0/24")).unwrap();
        env.nets.create(&env.network("p_back", "10.231.3.0/24")).unwrap();
        let mut internal = env.network("p_private", "10.231.4.0/24");
        internal.internal = true;
        let internal_rec = env.nets.create(&internal).unwrap();

        let front = env.nets.attach(&env.request("front1", &[("p_front", &["front"])])).unwrap();
        let back = env.nets.attach(&env.request("back1", &[("p_back", &["back"])])).unwrap();
        let both = env.nets.attach(&env.request("both1", &[("p_front", &[]), ("p_back", &[])])).unwrap();
        let private = env.nets.attach(&env.request("priv1", &[("p_private", &["priv"])])).unwrap();
        assert_eq!(both.endpoints[1].interface, "eth1");
        let ip = |a: &berth::netns::Attachment, i: usize| a.endpoints[i].ipv4.unwrap().to_string();

        let ping = |from: &berth::netns::Attachment, to: &str| {
            run(bb(from, &["ping", "-c", "1", "-W", "1", to]), Duration::from_secs(4)).status.success()
        };
        // On a shared network: yes. Across networks through the host: no.
        assert!(ping(&both, &ip(&front, 0)));
        assert!(ping(&both, &ip(&back, 0)));
        assert!(!ping(&front, &ip(&back, 0)), "front reached back across networks");
        assert!(!ping(&back, &ip(&front, 0)), "back reached front across networks");
        // The container on both networks resolves names of both.
        let ns = run(bb(&both, &["nslookup", "-type=a", "back", "10.231.2.1"]), Duration::from_secs(5));
        assert!(String::from_utf8_lossy(&ns.stdout).contains(&ip(&back, 0)));
        // A name from another network is not answered locally to an outsider.
        let ns = run(bb(&front, &["nslookup", "-type=a", "back", "10.231.2.1"]), Duration::from_secs(8));
        assert!(!String::from_utf8_lossy(&ns.stdout).contains(&ip(&back, 0)));

        // Internal: no default route, and the firewall drops whatever tries to leave its bridge.
        assert!(!ping(&private, &ip(&front, 0)));
        assert!(!ping(&front, &ip(&private, 0)));
        let rules = ruleset_text();
        assert!(rules.contains(&internal_rec.bridge), "internal bridge has rules");
        assert!(
            !rules.contains("10.231.4.0\",\"len\":24}}}},{\"match\":{\"op\":\"!=\""),
            "no masquerade for internal"
        );

        for id in ["front1", "back1", "both1", "priv1"] {
            env.nets.detach(id).unwrap();
        }
        for n in ["p_front", "p_back", "p_private"] {
            env.nets.remove(n).unwrap();
        }
        assert!(!berth_table_exists());
        assert!(links().iter().all(|l| !l.starts_with("berth") && !l.starts_with("bv")));
    });
}
