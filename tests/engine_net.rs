//! Networking through `berth up` with real containers: discovery by service name, container
//! name and alias, replicas, published ports on 127.0.0.1, isolation between projects,
//! internal networks, port conflicts and the host / none / service: modes. Traffic goes only
//! to 127.0.0.1 and to the tests' own containers.

mod stack;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use stack::Stack;

const WEB: &str = r#"    image: berth-test/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]"#;

fn net(subnet: u8) -> String {
    format!("networks:\n  default:\n    ipam:\n      config:\n        - subnet: 10.214.{subnet}.0/24\n")
}

/// GET / on 127.0.0.1:port, retried for a while (the server may still be starting).
fn get_local(port: u16) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })();
        match attempt {
            Ok(body) if body.contains("200") => return body,
            other => assert!(Instant::now() < end, "127.0.0.1:{port}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `wget` from inside service `from`, retried while the target starts.
fn wget(s: &Stack, from: &str, url: &str) -> String {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let r = s.exec(from, &["timeout", "3", "wget", "-q", "-O", "-", url]);
        if r.ok {
            return r.stdout;
        }
        assert!(Instant::now() < end, "wget {url} from {from}: {}", r.stderr);
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn names_aliases_replicas_and_published_ports() {
    let yaml = format!(
        r#"services:
  web:
{WEB}
    scale: 2
    networks:
      default:
        aliases: [www]
  api:
{WEB}
    ports: ["127.0.0.1:28411:80", "127.0.0.1::80"]
  client:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
{}"#,
        net(1)
    );
    let s = Stack::new("enet-names", &yaml);
    s.ok(&["up", "-d"]);
    let api_host = wget(&s, "client", "http://api/");
    // Reverse lookups name the container.
    let api_ip = s.exec("api", &["hostname", "-i"]).stdout.trim().to_string();
    let ptr = s.exec("client", &["nslookup", &api_ip]).stdout;
    assert!(ptr.contains("enet-names-api-1"), "{ptr}");
    assert_eq!(wget(&s, "client", "http://enet-names-api-1/"), api_host);
    assert!(wget(&s, "client", "http://www/").len() > 1);
    // The service name resolves to both replicas (in rotating order; glibc clients re-sort
    // what they get, so each replica is then fetched by its address).
    let mut first = BTreeSet::new();
    let mut all = BTreeSet::new();
    for _ in 0..4 {
        let out = s.exec("client", &["nslookup", "web"]).stdout;
        let addrs: Vec<String> = out
            .lines()
            .skip_while(|l| !l.starts_with("Name:"))
            .filter_map(|l| l.strip_prefix("Address:"))
            .map(|a| a.trim().to_string())
            .collect();
        first.insert(addrs.first().cloned().unwrap_or_default());
        all.extend(addrs);
    }
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(first.len(), 2, "the order does not rotate: {first:?}");
    let hosts: BTreeSet<String> =
        all.iter().map(|ip| wget(&s, "client", &format!("http://{ip}/")).trim().to_string()).collect();
    assert_eq!(hosts.len(), 2, "{hosts:?}");
    // Published ports answer on 127.0.0.1, the fixed one and the ephemeral one.
    assert!(get_local(28411).contains(api_host.trim()));
    let api = s.container("enet-names-api-1").unwrap();
    let ports: Vec<u64> =
        api["Publishers"].as_array().unwrap().iter().map(|p| p["PublishedPort"].as_u64().unwrap()).collect();
    assert_eq!(ports.len(), 2, "{api:#?}");
    let ephemeral = ports.into_iter().find(|p| *p != 28411).unwrap();
    assert!(get_local(ephemeral as u16).contains(api_host.trim()));
    let port = s.ok(&["port", "api", "80"]).stdout;
    assert!(port == "127.0.0.1:28411\n" || port == format!("127.0.0.1:{ephemeral}\n"), "{port}");
}

#[test]
fn projects_are_isolated_and_a_taken_port_fails_cleanly() {
    let a = Stack::new(
        "enet-a",
        &format!(
            "services:\n  web:\n{WEB}\n    ports: [\"127.0.0.1:28412:80\"]\n  client:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n{}",
            net(2)
        ),
    );
    let b = a.sibling("enet-b", &format!("services:\n  other:\n{WEB}\n{}", net(3)));
    a.ok(&["up", "-d"]);
    b.ok(&["up", "-d"]);
    let b_ip = b.exec("other", &["hostname", "-i"]).stdout.trim().to_string();
    assert!(b_ip.starts_with("10.214.3."), "{b_ip}");
    let r = a.exec("client", &["nslookup", "other"]);
    assert!(!r.stdout.contains("10.214.3."), "{}", r.stdout);
    let r = a.exec("client", &["timeout", "3", "wget", "-q", "-O", "-", &format!("http://{b_ip}/")]);
    assert!(!r.ok, "project a reached project b: {}", r.stdout);
    assert!(!wget(&a, "client", "http://web/").is_empty());

    let c = a.sibling(
        "enet-c",
        &format!("services:\n  clash:\n{WEB}\n    ports: [\"127.0.0.1:28412:80\"]\n{}", net(4)),
    );
    let r = c.berth(&["up", "-d"]);
    assert!(!r.ok);
    assert!(r.stderr.contains("clash") && r.stderr.contains("28412"), "{}", r.stderr);
    assert!(c.ps().is_empty(), "the failed container must not stay");
    // The first project still answers on its port.
    get_local(28412);
}

#[test]
fn internal_networks_have_no_way_to_other_networks() {
    let yaml = r#"services:
  inside:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    networks: [private]
  outside:
    image: berth-test/busybox:latest
    command: ["sh", "-c", "mkdir -p /www && echo out > /www/index.html && exec httpd -f -p 80 -h /www"]
    networks: [public]
networks:
  private:
    internal: true
    ipam:
      config:
        - subnet: 10.214.5.0/24
  public:
    ipam:
      config:
        - subnet: 10.214.6.0/24
"#;
    let s = Stack::new("enet-internal", yaml);
    s.ok(&["up", "-d"]);
    let ip = s.exec("outside", &["hostname", "-i"]).stdout.trim().to_string();
    assert!(ip.starts_with("10.214.6."), "{ip}");
    let r = s.exec("inside", &["timeout", "3", "wget", "-q", "-O", "-", &format!("http://{ip}/")]);
    assert!(!r.ok, "internal reached another network: {}", r.stdout);
}

#[test]
fn host_none_and_service_network_modes() {
    let yaml = format!(
        r#"services:
  web:
{WEB}
  sidecar:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    network_mode: "service:web"
  alone:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    network_mode: none
  hosted:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
    network_mode: host
{}"#,
        net(7)
    );
    let s = Stack::new("enet-modes", &yaml);
    s.ok(&["up", "-d"]);
    // The sidecar shares web's namespace: web's server is on its localhost.
    assert!(!wget(&s, "sidecar", "http://127.0.0.1/").is_empty());
    let ifaces = |svc: &str| {
        let r = s.exec(svc, &["cat", "/proc/net/dev"]);
        r.stdout
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|n| n.trim().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ifaces("alone"), vec!["lo".to_string()]);
    let host: Vec<String> = std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|n| n.trim().to_string())
        .collect();
    let hosted = ifaces("hosted");
    assert!(hosted.iter().any(|i| host.contains(i) && i != "lo"), "{hosted:?} vs {host:?}");
}

#[test]
fn two_roots_on_one_host_keep_their_own_rules() {
    let a = Stack::new(
        "enet-root-a",
        &format!(
            "services:\n  web:\n{WEB}\n    ports: [\"127.0.0.1:28421:80\"]\n  client:\n    image: berth-test/busybox:latest\n    command: [\"sleep\", \"1000\"]\n{}",
            net(8)
        ),
    );
    // The same project and network names in another root: its own bridge and table.
    let b = Stack::new(
        "enet-root-a",
        &format!("services:\n  web:\n{WEB}\n    ports: [\"127.0.0.1:28422:80\"]\n{}", net(9)),
    );
    a.ok(&["up", "-d"]);
    b.ok(&["up", "-d"]);
    let body = |port: u16| get_local(port).rsplit("\r\n\r\n").next().unwrap_or_default().to_string();
    let a_host = body(28421);
    let b_host = body(28422);
    assert_ne!(a_host, b_host);
    let b_ip = b.exec("web", &["hostname", "-i"]).stdout.trim().to_string();
    let r = a.exec("client", &["timeout", "3", "wget", "-q", "-O", "-", &format!("http://{b_ip}/")]);
    assert!(!r.ok, "a container of one root reached another root's network: {}", r.stdout);
    a.ok(&["down", "-t", "0"]);
    // The other root's rules survive the first one's teardown.
    assert_eq!(body(28422), b_host);
    let tables = std::process::Command::new("nft").args(["list", "tables"]).output().unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    let scope_a = berth::netns::scope(&a.root());
    let scope_b = berth::netns::scope(&b.root());
    assert!(!tables.contains(&format!("berth_{scope_a}")), "{tables}");
    assert!(tables.contains(&format!("berth_{scope_b}")), "{tables}");
}

#[test]
fn ipv6_networks_resolve_and_carry_traffic() {
    let yaml = format!(
        r#"services:
  web:
{WEB}
  client:
    image: berth-test/busybox:latest
    command: ["sleep", "1000"]
networks:
  default:
    enable_ipv6: true
    ipam:
      config:
        - subnet: 10.214.10.0/24
        - subnet: fd42:b3:10::/64
"#
    );
    let s = Stack::new("enet-v6", &yaml);
    s.ok(&["up", "-d"]);
    let out = s.exec("client", &["nslookup", "-type=AAAA", "web"]).stdout;
    let v6 = out
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .find(|a| a.starts_with("fd42:b3:10:"))
        .unwrap_or_else(|| panic!("no AAAA answer: {out}"));
    let body = wget(&s, "client", &format!("http://[{v6}]/"));
    assert_eq!(body, wget(&s, "client", "http://web/"));
    // IPv6 loopback cannot be forwarded: a clear refusal, and nothing left half-made.
    let lo6 = s.sibling(
        "enet-v6-lo",
        &format!("services:\n  web:\n{WEB}\n    ports: [\"[::1]:28431:80\"]\n{}", net(11)),
    );
    let r = lo6.berth(&["up", "-d"]);
    assert!(!r.ok && r.stderr.contains("::1") && r.stderr.contains("web"), "{}", r.stderr);
    assert!(lo6.ps().is_empty());
}
