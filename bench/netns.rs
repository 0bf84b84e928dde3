//! Times making a container's network: a new netns pinned to a file, one veth into it from a
//! bridge, address, routes (the part of `Networks::attach` that is kernel work), and the whole
//! `attach` (plus records, hosts files and the DNS reload). Prints the medians. Runs in a
//! throwaway network namespace of its own. `cargo bench --bench netns`; target ≤ 3 ms.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use berth::netns::netlink::Netlink;
use berth::netns::{AttachRequest, EndpointRequest, IpamPool, NetMode, NetworkSpec, Networks, nsfile};
use berth::state::Dirs;

const ROUNDS: usize = 50;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (run as root)");
        let dir = tempfile::Builder::new().prefix("berth-bench-").tempdir().unwrap();
        let dirs = Dirs::new(dir.path().join("root"), dir.path().join("run"));
        let exe = std::env::var("BERTH_EXE").unwrap_or_else(|_| {
            let mut p = std::env::current_exe().unwrap();
            p.pop();
            p.pop();
            p.join("berth").to_string_lossy().into_owned()
        });
        let nets = Networks::new(&dirs).with_exe(exe);
        let spec = NetworkSpec {
            name: "bench_default".into(),
            ipam: vec![IpamPool { subnet: Some("10.232.0.0/16".into()), ..IpamPool::default() }],
            ..NetworkSpec::default()
        };
        let net = nets.create(&spec).unwrap();
        let mut nl = Netlink::open().unwrap();
        let br = nl.link_index(&net.bridge).unwrap().unwrap();

        let mut core = Vec::new();
        for i in 0..ROUNDS {
            let path = dirs.netns().join(format!("core{i}"));
            let t = Instant::now();
            nsfile::create(&path).unwrap();
            let ns = nsfile::open(&path).unwrap();
            nl.create_veth(&format!("bvbench{i}"), br, "eth0", ns.as_raw_fd(), None, None).unwrap();
            let addr: ipnet::IpNet = format!("10.232.1.{}/16", i + 2).parse().unwrap();
            nsfile::run_in(&path, move || {
                let mut nl = Netlink::open()?;
                let lo = nl.link_index("lo")?.unwrap();
                nl.set_up(lo)?;
                let eth = nl.link_index("eth0")?.unwrap();
                nl.add_address(eth, addr)?;
                nl.set_up(eth)?;
                nl.add_default_route("10.232.0.1".parse().unwrap(), 0)
            })
            .unwrap();
            core.push(t.elapsed());
            nl.delete_link(&format!("bvbench{i}")).unwrap();
            nsfile::remove(&path).unwrap();
        }

        let mut full = Vec::new();
        for i in 0..ROUNDS {
            let req = AttachRequest {
                container_id: format!("bench{i}"),
                container_name: format!("bench{i}"),
                hostname: format!("bench{i}"),
                mode: NetMode::Bridge(vec![EndpointRequest {
                    network: "bench_default".into(),
                    aliases: vec!["svc".into()],
                    ..EndpointRequest::default()
                }]),
                ports: vec![],
                extra_hosts: vec![],
                dns: vec![],
                dns_search: vec![],
                dns_opt: vec![],
                sysctls: Default::default(),
            };
            let t = Instant::now();
            nets.attach(&req).unwrap();
            full.push(t.elapsed());
            nets.detach(&req.container_id).unwrap();
        }
        nets.remove("bench_default").unwrap();
        println!("netns + veth + address + routes: median {:?} over {ROUNDS}", median(core));
        println!("Networks::attach (no ports):     median {:?} over {ROUNDS}", median(full));
    })
    .join()
    .unwrap();
}
