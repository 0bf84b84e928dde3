//! Published ports: TCP and UDP on 127.0.0.1, ephemeral host ports, and a clean failure for a
//! port in use. Runs in a throwaway network namespace.

mod net_support;

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::time::Duration;

use berth::netns::{PortRequest, Protocol};
use net_support::*;

fn localhost() -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

#[test]
fn tcp_and_udp_published_on_localhost() {
    in_netns(|| {
        let env = Env::new();
        env.nets.create(&env.network("p_default", "10.231.5.0/24")).unwrap();
        let mut req = env.request("web1", &[("p_default", &["web"])]);
        req.ports = vec![
            PortRequest {
                host_ip: localhost(),
                host_port: Some((18080, 18080)),
                container_port: (80, 80),
                ..Default::default()
            },
            PortRequest { host_ip: None, host_port: None, container_port: (81, 81), ..Default::default() },
            PortRequest {
                host_ip: localhost(),
                host_port: Some((15353, 15353)),
                container_port: (53, 53),
                protocol: Protocol::Udp,
                network: None,
            },
        ];
        let att = env.nets.attach(&req).unwrap();
        assert_eq!(att.ports.len(), 3);
        let ephemeral = att.ports[1].host_port;
        assert_ne!(ephemeral, 0);

        let _web = httpd(&att, env.dir.path(), 80, "published");
        let _web81 = httpd(&att, env.dir.path(), 81, "ephemeral!");
        let get = |port: u16| {
            let out = run(
                {
                    let mut c = std::process::Command::new("busybox");
                    c.args(["wget", "-q", "-O-", &format!("http://127.0.0.1:{port}/")]);
                    c
                },
                Duration::from_secs(5),
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(get(18080), "published");
        assert_eq!(get(ephemeral), "ephemeral!");

        // UDP: a listener in the container's namespace (busybox's nc has no UDP mode here, so
        // a thread of ours) receives what the host sends to the published port.
        let ns = att.netns_path.clone().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let listener = std::thread::spawn(move || {
            berth::netns::nsfile::run_in(&ns, move || {
                let sock = std::net::UdpSocket::bind("0.0.0.0:53").unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                tx.send(()).unwrap();
                let mut buf = [0u8; 64];
                let (n, _) = sock.recv_from(&mut buf).unwrap();
                Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
            })
        });
        rx.recv().unwrap();
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.send_to(b"ping-udp", "127.0.0.1:15353").unwrap();
        let got = listener.join().unwrap().unwrap();
        assert_eq!(got, "ping-udp");

        env.nets.detach("web1").unwrap();
        assert!(!ruleset_text().contains("18080"), "DNAT rules go with the container");
        env.nets.remove("p_default").unwrap();
    });
}

#[test]
fn port_in_use_fails_cleanly() {
    in_netns(|| {
        let env = Env::new();
        env.nets.create(&env.network("p_default", "10.231.6.0/24")).unwrap();
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let mut req = env.request("web1", &[("p_default", &[])]);
        req.ports = vec![PortRequest {
            host_ip: localhost(),
            host_port: Some((port, port)),
            container_port: (80, 80),
            ..Default::default()
        }];
        let err = env.nets.attach(&req).unwrap_err().to_string();
        assert!(err.contains(&port.to_string()), "{err}");
        // Nothing half-made.
        assert!(!env.dirs().netns().join("web1").exists());
        assert!(berth::netns::record::read_endpoint(env.dirs(), "web1").unwrap().is_none());
        assert!(links().iter().all(|l| !l.starts_with("bv")));

        // A port published by another berth container is refused too (DNAT holds no socket).
        drop(taken);
        env.nets.attach(&req).unwrap();
        req.container_id = "web2".into();
        let err = env.nets.attach(&req).unwrap_err().to_string();
        assert!(err.contains(&port.to_string()), "{err}");
        env.nets.detach("web1").unwrap();
        env.nets.remove("p_default").unwrap();
    });
}
