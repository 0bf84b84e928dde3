//! Integration tests as a Rust project would write them with berth as a library: each test
//! brings up a stack of its own (a unique project name, subnets no other stack uses) and
//! leaves the cleanup to `Drop`, which runs even when the test panics.
//!
//! They need root, the `berth` executable (`BERTH_EXE`), and the images `busybox:latest` and
//! `berth/debian:bookworm` in the store `BERTH_ROOT` names; scripts/rust-test-example prepares
//! all of it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use berth::stack::Stack;

/// A web server on busybox: `/www/index.html` says `greeting`, served on port 8080, which is
/// published on a host port of berth's choosing.
fn web_yaml(greeting: &str) -> String {
    format!(
        r#"
services:
  web:
    image: busybox:latest
    command: ["sh", "-c", "mkdir -p /www && echo {greeting} > /www/index.html && exec httpd -f -p 8080 -h /www"]
    ports:
      - "127.0.0.1::8080"
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]
      interval: 1s
      start_interval: 200ms
      start_period: 10s
  probe:
    image: busybox:latest
    command: ["sleep", "3600"]
    depends_on:
      web:
        condition: service_healthy
"#
    )
}

/// One HTTP/1.0 GET; the whole answer.
fn get(addr: SocketAddr, path: &str) -> String {
    let mut conn = TcpStream::connect(addr).expect("connect to the published port");
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(conn, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn a_web_server_answers_through_its_published_port() {
    let stack = Stack::from_yaml(web_yaml("hello-from-berth")).up().expect("stack up");
    let web = stack.service("web").expect("service web");

    let addr = web.host_port(8080).expect("published port");
    assert!(addr.ip().is_loopback(), "{addr}");
    let answer = get(addr, "/");
    assert!(answer.lines().next().is_some_and(|l| l.contains(" 200 ")), "{answer}");
    assert!(answer.contains("hello-from-berth"), "{answer}");

    // The other container reaches web by its service name, through berth's DNS.
    let probe = stack.service("probe").unwrap();
    let out = probe.exec(["wget", "-q", "-O", "-", "http://web:8080/"]).unwrap();
    assert!(out.success(), "wget in probe: {}", out.stderr_text());
    assert_eq!(out.stdout_text().trim(), "hello-from-berth");

    // Its address on the project's network is one the probe can reach too.
    let ip = web.ip().unwrap();
    let out = probe.exec(["wget", "-q", "-O", "-", &format!("http://{ip}:8080/")]).unwrap();
    assert_eq!(out.stdout_text().trim(), "hello-from-berth");

    // A command's exit code and both streams come back.
    let out = web.exec(["sh", "-c", "echo out; echo err >&2; exit 3"]).unwrap();
    assert_eq!((out.code, out.stdout_text(), out.stderr_text()), (3, "out\n".into(), "err\n".into()));

    // Stop and start again: the same container, serving again.
    let name = web.container_name().unwrap();
    web.stop().unwrap();
    assert!(!web.is_running().unwrap());
    web.start().unwrap();
    assert!(web.is_running().unwrap());
    assert_eq!(web.container_name().unwrap(), name);
    assert!(stack.service("nope").is_err());
    stack.down().expect("stack down");
}

#[test]
fn stacks_in_parallel_do_not_collide() {
    let stacks: Vec<Stack> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                s.spawn(move || Stack::from_yaml(web_yaml(&format!("stack-{i}"))).up().expect("stack up"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut subnets = Vec::new();
    for (i, stack) in stacks.iter().enumerate() {
        let web = stack.service("web").unwrap();
        assert!(get(web.host_port(8080).unwrap(), "/").contains(&format!("stack-{i}")));
        let ip = web.ip().unwrap().to_string();
        subnets.push(ip.rsplit_once('.').unwrap().0.to_string());
    }
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 3, "each stack has a subnet of its own");
}

#[test]
#[should_panic(expected = "on purpose")]
fn a_panicking_test_still_leaves_nothing() {
    let stack = Stack::from_yaml(web_yaml("doomed")).up().expect("stack up");
    assert!(stack.service("web").unwrap().is_running().unwrap());
    // Drop takes the stack down while this panic unwinds; scripts/rust-test-example checks
    // afterwards that nothing of it is left on the host.
    panic!("on purpose");
}

#[test]
fn postgres_answers_a_query_through_the_published_port() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stack = Stack::from_file(here.join("compose.yaml"))
        .wait_timeout(Duration::from_secs(300))
        .up()
        .expect("stack up");
    let db = stack.service("db").unwrap();
    let addr = db.host_port(5432).unwrap();

    let mut client = postgres::Client::connect(
        &format!("host={} port={} user=notes password=notes-secret dbname=notes", addr.ip(), addr.port()),
        postgres::NoTls,
    )
    .expect("connect to PostgreSQL");
    client.batch_execute("CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL)").unwrap();
    client.execute("INSERT INTO notes (body) VALUES ($1), ($2)", &[&"buy milk", &"walk the dog"]).unwrap();
    let rows = client.query("SELECT body FROM notes ORDER BY id", &[]).unwrap();
    let bodies: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(bodies, ["buy milk", "walk the dog"]);

    // The same rows seen from inside the container.
    let out = db.exec(["psql", "-U", "notes", "-d", "notes", "-tAc", "SELECT count(*) FROM notes"]).unwrap();
    assert!(out.success(), "psql: {}", out.stderr_text());
    assert_eq!(out.stdout_text().trim(), "2");
    assert!(db.logs().unwrap().contains("database system is ready to accept connections"));
}
