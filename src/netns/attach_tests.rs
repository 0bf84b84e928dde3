//! `Networks` on the recording fake (`netns::fake`): the order of records and kernel objects,
//! rollback of a failed attach, teardown that keeps going, what a killed command leaves for
//! the next one, and the choice of subnets. No root, no kernel objects.

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use super::fake::FakeNet;
use super::record;
use super::{AttachRequest, EndpointRequest, IpamPool, NetError, NetMode, NetworkSpec, Networks, PortRequest};
use crate::state::Dirs;

struct World {
    _dir: tempfile::TempDir,
    dirs: Dirs,
    fake: Arc<FakeNet>,
    nets: Networks,
}

impl World {
    fn new() -> World {
        let dir = tempfile::Builder::new().prefix("berth-").tempdir().unwrap();
        let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
        let fake = FakeNet::new(&dirs);
        let nets = Networks::new(&dirs).with_drivers(fake.drivers());
        World { _dir: dir, dirs, fake, nets }
    }

    /// The next command: a new `Networks` on the same host.
    fn next_command(&self) -> Networks {
        let mut st = self.fake.state();
        st.crashed = false;
        st.crash_after = None;
        st.fail_on.clear();
        drop(st);
        Networks::new(&self.dirs).with_drivers(self.fake.drivers())
    }

    fn bridge(&self, net: &str) -> String {
        super::bridge::bridge_name(&super::scope(&self.dirs.root), net)
    }

    fn links(&self) -> BTreeSet<String> {
        self.fake.state().links.clone()
    }

    fn bridges(&self, nets: &[&str]) -> BTreeSet<String> {
        nets.iter().map(|n| self.bridge(n)).collect()
    }

    /// Every kernel object the fake holds is claimed by a record (network or endpoint).
    fn all_claimed(&self) -> Result<(), String> {
        let nets = record::all_networks(&self.dirs).unwrap();
        let eps = record::all_endpoints(&self.dirs).unwrap();
        let st = self.fake.state();
        for l in &st.links {
            let ok = nets.iter().any(|n| &n.bridge == l)
                || eps.iter().any(|r| r.endpoints.iter().any(|e| &e.host_veth == l));
            if !ok {
                return Err(format!("link {l} has no record"));
            }
        }
        for ns in &st.netns {
            if !eps.iter().any(|r| r.netns.as_deref() == Some(ns.as_path())) {
                return Err(format!("netns {} has no record", ns.display()));
            }
        }
        Ok(())
    }

    fn fail_on(&self, needles: &[&str]) {
        self.fake.state().fail_on = needles.iter().map(|s| s.to_string()).collect();
    }
}

fn spec(name: &str) -> NetworkSpec {
    NetworkSpec { name: name.into(), ..NetworkSpec::default() }
}

fn request(id: &str, networks: &[&str]) -> AttachRequest {
    AttachRequest {
        container_id: id.into(),
        container_name: format!("p-{id}-1"),
        hostname: id.into(),
        mode: NetMode::Bridge(
            networks
                .iter()
                .map(|n| EndpointRequest { network: n.to_string(), aliases: vec![id.into()], ..Default::default() })
                .collect(),
        ),
        ports: Vec::new(),
        extra_hosts: Vec::new(),
        dns: Vec::new(),
        dns_search: Vec::new(),
        dns_opt: Vec::new(),
        sysctls: Default::default(),
    }
}

/// A request publishing container port 80 on an ephemeral host port of 127.0.0.1.
fn with_port(mut req: AttachRequest) -> AttachRequest {
    req.ports.push(PortRequest {
        host_ip: Some("127.0.0.1".parse().unwrap()),
        host_port: None,
        container_port: (80, 80),
        ..PortRequest::default()
    });
    req
}

/// Two networks, `p_a` and `p_b`, made, and the calls forgotten.
fn two_networks() -> World {
    let w = World::new();
    w.nets.create(&spec("p_a")).unwrap();
    w.nets.create(&spec("p_b")).unwrap();
    w.fake.take_calls();
    w
}

fn veth(id: &str, net: &str) -> String {
    super::bridge::veth_name(id, net)
}

#[test]
fn create_records_the_network_before_its_bridge_and_remove_deletes_the_bridge_first() {
    let w = World::new();
    let rec = w.nets.create(&spec("p_a")).unwrap();
    let br = w.bridge("p_a");
    assert_eq!(
        w.fake.take_calls(),
        [
            "host prefixes".to_string(),
            format!("ensure bridge {br} of p_a"),
            "firewall berth [\"p_a\"] ports []".into(),
            "dns start".into(),
        ]
    );
    assert_eq!(rec.subnets[0].subnet.to_string(), "172.28.0.0/24");
    // Creating it again with the same spec repairs and returns it; nothing new is chosen.
    assert_eq!(w.nets.create(&spec("p_a")).unwrap(), rec);
    w.fake.take_calls();
    w.nets.remove("p_a").unwrap();
    assert_eq!(
        w.fake.take_calls(),
        [format!("delete link {br}"), "firewall berth [] ports []".into(), "dns stop".into()]
    );
    assert!(record::read_network(&w.dirs, "p_a").unwrap().is_none());
    assert!(w.links().is_empty());
    assert_eq!(w.fake.state().unclaimed, Vec::<String>::new());
}

#[test]
fn attach_records_the_endpoints_first_and_detach_removes_the_record_last() {
    let w = two_networks();
    let (ba, bb, va, vb) = (w.bridge("p_a"), w.bridge("p_b"), veth("c1", "p_a"), veth("c1", "p_b"));
    let att = w.nets.attach(&request("c1", &["p_a", "p_b"])).unwrap();
    assert_eq!(
        w.fake.take_calls(),
        [
            "create netns /netns/c1".to_string(),
            format!("add endpoint {va} in /netns/c1 on {ba}"),
            format!("add endpoint {vb} in /netns/c1 on {bb}"),
            "configure /netns/c1: eth0=172.28.0.2/24 eth1=172.28.1.2/24 default via 172.28.0.1".into(),
            "dns reload".into(),
        ]
    );
    assert_eq!(att.netns_path, Some(w.dirs.netns().join("c1")));
    assert_eq!(att.endpoints.iter().map(|e| e.interface.as_str()).collect::<Vec<_>>(), ["eth0", "eth1"]);
    assert!(att.hosts_file.exists());
    let rec = record::read_endpoint(&w.dirs, "c1").unwrap().expect("endpoint record");
    assert_eq!(rec.endpoints.iter().map(|e| e.host_veth.as_str()).collect::<Vec<_>>(), [&va, &vb]);

    w.nets.detach("c1").unwrap();
    let calls = w.fake.take_calls();
    // Each veth goes before the lock (in parallel with other detaches), and is gone by then.
    assert_eq!(
        calls,
        [
            format!("delete link {va}"),
            format!("delete link {vb}"),
            format!("delete link {va}"),
            format!("delete link {vb}"),
            "remove netns /netns/c1".into(),
            "dns reload".into(),
        ]
    );
    assert!(record::read_endpoint(&w.dirs, "c1").unwrap().is_none());
    assert!(!w.dirs.netns().join("c1").exists());
    assert!(!w.dirs.run.join("netns-files").join("c1").exists());
    assert_eq!(w.links(), w.bridges(&["p_a", "p_b"]));
    assert_eq!(w.fake.state().unclaimed, Vec::<String>::new());
}

#[test]
fn the_default_route_goes_via_the_highest_gateway_priority_and_never_an_internal_network() {
    let w = World::new();
    w.nets.create(&spec("p_a")).unwrap();
    w.nets.create(&NetworkSpec { internal: true, ..spec("p_i") }).unwrap();
    w.nets.create(&spec("p_b")).unwrap();
    w.fake.take_calls();
    let mut req = request("c1", &["p_i", "p_a", "p_b"]);
    if let NetMode::Bridge(eps) = &mut req.mode {
        eps[0].gw_priority = 10; // internal: no way out, so never the default route
        eps[2].gw_priority = 5;
    }
    w.nets.attach(&req).unwrap();
    let configure: Vec<String> = w.fake.take_calls().into_iter().filter(|c| c.starts_with("configure")).collect();
    assert_eq!(
        configure,
        ["configure /netns/c1: eth0=172.28.1.2/24 eth1=172.28.0.2/24 eth2=172.28.2.2/24 default via 172.28.2.1"]
    );
}

/// The kernel and firewall steps of attaching `c1` to `p_a` and `p_b` with a published port,
/// in order; the firewall's is the sync that adds the port (a rollback's own sync has none).
fn attach_steps() -> Vec<String> {
    vec![
        "create netns".to_string(),
        format!("add endpoint {}", veth("c1", "p_a")),
        format!("add endpoint {}", veth("c1", "p_b")),
        "configure".into(),
        "ports [80]".into(),
    ]
}

#[test]
fn a_failed_attach_step_undoes_every_earlier_step_and_leaves_no_record() {
    let mut steps = attach_steps();
    steps.push("dns reload".into());
    for step in &steps {
        let w = two_networks();
        w.fail_on(&[step]);
        let err = w.nets.attach(&with_port(request("c1", &["p_a", "p_b"]))).unwrap_err();
        assert!(err.to_string().contains(step.as_str()), "{step}: {err}");
        assert_eq!(w.links(), w.bridges(&["p_a", "p_b"]), "after a failed {step}");
        assert!(w.fake.state().netns.is_empty(), "after a failed {step}");
        assert!(record::read_endpoint(&w.dirs, "c1").unwrap().is_none(), "after a failed {step}");
        assert!(!w.dirs.netns().join("c1").exists());
        assert!(!w.dirs.run.join("netns-files").join("c1").exists(), "after a failed {step}");
        assert_eq!(w.fake.state().unclaimed, Vec::<String>::new(), "after a failed {step}");
        let rules = w.fake.state().rules.clone().unwrap();
        assert!(rules.1.is_empty(), "after a failed {step}, the firewall still has {:?}", rules.1);
        // What the failed step would have made is not taken for made: the next attach works.
        w.fake.state().fail_on.clear();
        w.nets.attach(&with_port(request("c1", &["p_a", "p_b"]))).unwrap();
        assert_eq!(w.fake.state().rules.clone().unwrap().1, [80]);
    }
}

#[test]
fn a_command_killed_during_attach_leaves_records_that_the_next_detach_finishes() {
    let steps = attach_steps();
    for step in &steps {
        let w = two_networks();
        w.fake.state().crash_after = Some(step.clone());
        let killed =
            catch_unwind(AssertUnwindSafe(|| w.nets.attach(&with_port(request("c1", &["p_a", "p_b"])))));
        assert!(killed.is_err(), "the attach was not killed after {step}");
        w.all_claimed().unwrap_or_else(|e| panic!("killed after {step}: {e}"));
        let next = w.next_command();
        assert!(next.endpoint_ids().contains(&"c1".to_string()), "killed after {step}");
        next.detach("c1").unwrap();
        assert_eq!(w.links(), w.bridges(&["p_a", "p_b"]), "killed after {step}");
        assert!(w.fake.state().netns.is_empty(), "killed after {step}");
        assert!(record::read_endpoint(&w.dirs, "c1").unwrap().is_none());
        assert!(next.endpoint_ids().is_empty(), "killed after {step}: {:?}", next.endpoint_ids());
        assert_eq!(w.fake.state().rules.clone().unwrap().1, Vec::<u16>::new(), "killed after {step}");
        assert_eq!(w.fake.state().unclaimed, Vec::<String>::new(), "killed after {step}");
    }
}

#[test]
fn a_command_killed_during_detach_leaves_what_is_left_on_record() {
    let (va, vb) = (veth("c1", "p_a"), veth("c1", "p_b"));
    for step in [format!("delete link {va}"), format!("delete link {vb}"), "remove netns".into()] {
        let w = two_networks();
        w.nets.attach(&request("c1", &["p_a", "p_b"])).unwrap();
        w.fake.state().crash_after = Some(step.clone());
        let killed = catch_unwind(AssertUnwindSafe(|| w.nets.detach("c1")));
        // The last kernel step may be the last call: the process then ended normally.
        if killed.is_err() {
            w.all_claimed().unwrap_or_else(|e| panic!("killed after {step}: {e}"));
        }
        w.next_command().detach("c1").unwrap();
        assert_eq!(w.links(), w.bridges(&["p_a", "p_b"]), "killed after {step}");
        assert!(w.fake.state().netns.is_empty());
        assert!(record::read_endpoint(&w.dirs, "c1").unwrap().is_none());
    }
}

#[test]
fn detach_keeps_going_past_failures_and_keeps_the_record_until_all_is_gone() {
    let w = two_networks();
    let (va, vb) = (veth("c1", "p_a"), veth("c1", "p_b"));
    w.nets.attach(&with_port(request("c1", &["p_a", "p_b"]))).unwrap();
    w.fake.take_calls();
    w.fail_on(&[&format!("delete link {va}"), "remove netns"]);
    let err = w.nets.detach("c1").unwrap_err();
    match &err {
        NetError::Many(all) => assert_eq!(all.len(), 2, "{err}"),
        other => panic!("expected both failures, got {other}"),
    }
    // Everything else went; the record still claims the veth and the namespace.
    assert!(!w.links().contains(&vb));
    assert!(w.links().contains(&va));
    assert!(!w.dirs.run.join("netns-files").join("c1").exists());
    let rec = record::read_endpoint(&w.dirs, "c1").unwrap().expect("the record stays");
    assert_eq!(rec.endpoints[0].host_veth, va);
    let calls = w.fake.take_calls();
    assert!(calls.contains(&"dns reload".to_string()), "{calls:?}");
    assert!(calls.iter().any(|c| c.starts_with("firewall")), "{calls:?}");
    assert_eq!(w.fake.state().rules.clone().unwrap().1, [80], "the ports stay while the record does");

    w.fake.state().fail_on.clear();
    w.nets.detach("c1").unwrap();
    assert_eq!(w.links(), w.bridges(&["p_a", "p_b"]));
    assert!(w.fake.state().netns.is_empty());
    assert!(record::read_endpoint(&w.dirs, "c1").unwrap().is_none());
    assert_eq!(w.fake.state().rules.clone().unwrap().1, Vec::<u16>::new());
    assert_eq!(w.fake.state().unclaimed, Vec::<String>::new());
}

#[test]
fn a_damaged_endpoint_record_is_detached_by_the_names_of_its_veths() {
    let w = two_networks();
    w.nets.attach(&request("c1", &["p_a", "p_b"])).unwrap();
    std::fs::write(record::endpoint_path(&w.dirs, "c1"), "{\"container_id\": \"c").unwrap();
    w.fake.take_calls();
    w.nets.detach("c1").unwrap();
    let calls = w.fake.take_calls();
    assert!(calls.contains(&format!("delete link {}", veth("c1", "p_a"))), "{calls:?}");
    assert!(calls.contains(&format!("delete link {}", veth("c1", "p_b"))), "{calls:?}");
    // It might have had published ports: the firewall is made again from the records.
    assert!(calls.iter().any(|c| c.starts_with("firewall")), "{calls:?}");
    assert_eq!(w.links(), w.bridges(&["p_a", "p_b"]));
    assert!(w.fake.state().netns.is_empty());
    assert!(!record::endpoint_path(&w.dirs, "c1").exists());
}

#[test]
fn network_mode_none_gets_a_namespace_with_loopback_and_its_sysctls() {
    let w = World::new();
    let mut req = request("c2", &[]);
    req.mode = NetMode::None;
    req.sysctls.insert("net.ipv4.ping_group_range".into(), "0 0".into());
    let att = w.nets.attach(&req).unwrap();
    assert_eq!(att.netns_path, Some(w.dirs.netns().join("c2")));
    assert_eq!(
        w.fake.take_calls(),
        ["create netns /netns/c2", "configure /netns/c2: net.ipv4.ping_group_range=0 0"]
    );
    w.nets.detach("c2").unwrap();
    assert_eq!(w.fake.take_calls(), ["remove netns /netns/c2"]);
    assert!(record::read_endpoint(&w.dirs, "c2").unwrap().is_none());
}

#[test]
fn a_failed_create_takes_away_its_bridge_and_record() {
    let w = World::new();
    w.fail_on(&["firewall berth [\"p_a\"]"]);
    assert!(w.nets.create(&spec("p_a")).is_err());
    let br = w.bridge("p_a");
    let calls = w.fake.take_calls();
    assert_eq!(
        calls,
        [
            "host prefixes".to_string(),
            format!("ensure bridge {br} of p_a"),
            format!("delete link {br}"),
            "firewall berth [] ports []".into(),
            "dns stop".into(),
        ]
    );
    assert!(w.links().is_empty());
    assert!(record::read_network(&w.dirs, "p_a").unwrap().is_none());
    assert_eq!(w.fake.state().unclaimed, Vec::<String>::new());
}

#[test]
fn remove_keeps_the_record_while_the_bridge_stays() {
    let w = two_networks();
    let ba = w.bridge("p_a");
    w.fail_on(&[&format!("delete link {ba}")]);
    assert!(w.nets.remove("p_a").is_err());
    assert!(record::read_network(&w.dirs, "p_a").unwrap().is_some());
    // The other network is still there: the DNS process reloads, it does not stop.
    assert_eq!(w.fake.take_calls(), ["firewall berth [\"p_a\", \"p_b\"] ports []", "dns reload"]);
    w.fake.state().fail_on.clear();
    w.nets.remove("p_a").unwrap();
    assert!(record::read_network(&w.dirs, "p_a").unwrap().is_none());
    assert_eq!(w.links(), w.bridges(&["p_b"]));
}

#[test]
fn a_command_killed_during_create_leaves_a_network_that_remove_finishes() {
    for step in ["host prefixes", "ensure bridge", "firewall"] {
        let w = World::new();
        w.fake.state().crash_after = Some(step.into());
        assert!(catch_unwind(AssertUnwindSafe(|| w.nets.create(&spec("p_a")))).is_err(), "{step}");
        w.all_claimed().unwrap_or_else(|e| panic!("killed after {step}: {e}"));
        // Each time, the record was written before the process was killed.
        let next = w.next_command();
        next.remove("p_a").unwrap_or_else(|e| panic!("killed after {step}: {e}"));
        assert!(w.links().is_empty(), "killed after {step}");
        assert!(next.list().unwrap().is_empty());
    }
}

#[test]
fn default_subnets_keep_clear_of_host_routes_and_other_networks() {
    let w = World::new();
    w.fake.state().host = vec!["172.28.0.0/16".parse().unwrap(), "172.29.1.0/24".parse().unwrap()];
    let a = w.nets.create(&spec("p_a")).unwrap();
    assert_eq!(a.subnets[0].subnet.to_string(), "172.29.0.0/24");
    let b = w.nets.create(&spec("p_b")).unwrap();
    assert_eq!(b.subnets[0].subnet.to_string(), "172.29.2.0/24");
    // Every default pool taken: an error, and nothing made.
    w.fake.state().host = vec!["172.28.0.0/14".parse().unwrap(), "10.89.0.0/16".parse().unwrap()];
    w.fake.take_calls();
    assert!(matches!(w.nets.create(&spec("p_c")), Err(NetError::Exhausted(_))));
    assert_eq!(w.fake.take_calls(), ["host prefixes"]);
    assert!(record::read_network(&w.dirs, "p_c").unwrap().is_none());
}

#[test]
fn an_explicit_subnet_may_cover_a_host_route_but_not_another_network() {
    let w = World::new();
    w.fake.state().host = vec!["192.168.0.0/16".parse().unwrap()];
    w.nets.create(&spec("p_a")).unwrap();
    let pool = |s: &str| IpamPool { subnet: Some(s.into()), ..IpamPool::default() };
    // The user's choice: only other networks are in its way.
    let mine = w.nets.create(&NetworkSpec { ipam: vec![pool("192.168.5.0/24")], ..spec("p_b") }).unwrap();
    assert_eq!(mine.subnets[0].subnet.to_string(), "192.168.5.0/24");
    w.fake.take_calls();
    let err = w.nets.create(&NetworkSpec { ipam: vec![pool("172.28.0.128/25")], ..spec("p_c") }).unwrap_err();
    assert!(err.to_string().contains("overlaps with 172.28.0.0/24"), "{err}");
    assert_eq!(w.fake.take_calls(), ["host prefixes"]);
    assert!(record::read_network(&w.dirs, "p_c").unwrap().is_none());
}

#[test]
fn the_dns_process_runs_exactly_while_networks_exist() {
    let w = World::new();
    w.nets.sync_dns().unwrap();
    assert_eq!(w.fake.take_calls(), ["dns stop"]);
    w.nets.create(&spec("p_a")).unwrap();
    w.fake.take_calls();
    w.nets.sync_dns().unwrap();
    assert_eq!(w.fake.take_calls(), Vec::<String>::new());
    // Killed: one that lost its pid file is stopped before a new one starts.
    w.fake.state().dns_alive = false;
    w.nets.sync_dns().unwrap();
    assert_eq!(w.fake.take_calls(), ["dns stop", "dns start"]);
    w.nets.remove("p_a").unwrap();
    assert!(!w.fake.state().dns_alive);
}
