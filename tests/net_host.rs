//! On the host itself (not a throwaway namespace): a network with a default subnet, one
//! container, then detach and remove leave no link, netns file, nft table or DNS process.

mod net_support;

use berth::netns::NetworkSpec;
use net_support::*;

#[test]
fn host_network_lifecycle_leaves_nothing() {
    let env = Env::new();
    let spec = NetworkSpec { name: "berthtest_default".into(), ..NetworkSpec::default() };
    let net = env.nets.create(&spec).unwrap();
    let subnet = net.subnets[0].subnet;
    assert!(subnet.to_string().starts_with("172.") || subnet.to_string().starts_with("10.89."));
    let att = env.nets.attach(&env.request("hostc1", &[("berthtest_default", &["svc"])])).unwrap();
    assert!(att.netns_path.as_ref().unwrap().exists());
    assert!(berth::netns::dns::running(env.dirs()).is_some());
    assert!(links().contains(&net.bridge));

    env.nets.detach("hostc1").unwrap();
    env.nets.remove("berthtest_default").unwrap();
    assert!(!att.netns_path.as_ref().unwrap().exists());
    assert!(links().iter().all(|l| l != &net.bridge && !l.starts_with("bv")));
    assert!(berth::netns::dns::running(env.dirs()).is_none());
    assert!(!berth_table_exists());
}
