//! The DNS server loop: UDP and TCP port 53 on every gateway address, plain threads (a few
//! containers' queries do not need an async runtime), signals handled synchronously in the
//! main thread (SIGHUP reloads, SIGTERM exits).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::socket::SockaddrStorage;

use super::table::{Answer, Table};
use super::{PROCESS_NAME, pid_path};
use crate::netns::error::NetError;
use crate::state::{Dirs, write_atomic};

const TTL: u32 = 10;

struct Shared {
    table: RwLock<Table>,
    rotate: AtomicUsize,
    rotate_v6: AtomicUsize,
}

/// Runs the DNS server for the run dir in `dirs` until SIGTERM, or until a reload finds no
/// network left.
pub fn serve(dirs: &Dirs) -> Result<(), NetError> {
    // It outlives the command that started it: it must not keep that command's files open
    // (a lock taken by whoever ran the command, say, held for as long as the DNS runs).
    // SAFETY: close_range on fds this process never uses (stdio stays).
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let _ = nix::sys::prctl::set_name(c"berth-dns");
    debug_assert_eq!(PROCESS_NAME, "berth-dns");
    // Signals are taken synchronously by this thread; block them before any thread exists so
    // every thread inherits the mask.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGHUP, Signal::SIGTERM, Signal::SIGINT] {
        sigs.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None)
        .map_err(|e| NetError::sys("block signals", e))?;

    let shared = Arc::new(Shared {
        table: RwLock::new(Table::default()),
        rotate: AtomicUsize::new(0),
        rotate_v6: AtomicUsize::new(0),
    });
    let mut listeners: HashMap<IpAddr, Arc<AtomicBool>> = HashMap::new();
    let reload = |listeners: &mut HashMap<IpAddr, Arc<AtomicBool>>| -> Result<bool, NetError> {
        let table = Table::load(dirs)?;
        let wanted = table.listen_addrs();
        let empty = table.networks.is_empty();
        *shared.table.write().unwrap_or_else(|e| e.into_inner()) = table;
        listeners.retain(|ip, stop| {
            let keep = wanted.contains(ip);
            if !keep {
                stop.store(true, Ordering::Relaxed);
            }
            keep
        });
        for ip in wanted {
            if listeners.contains_key(&ip) {
                continue;
            }
            match start_listeners(ip, &shared) {
                Ok(stop) => {
                    listeners.insert(ip, stop);
                }
                Err(e) => tracing::warn!("berth-dns: cannot listen on {ip}: {e}"),
            }
        }
        Ok(!empty)
    };
    reload(&mut listeners)?;
    let pid = std::process::id().to_string();
    write_atomic(&pid_path(dirs), pid.as_bytes())?;
    loop {
        match sigs.wait() {
            Ok(Signal::SIGHUP) => match reload(&mut listeners) {
                Ok(true) => {}
                Ok(false) => break,
                // Its log may be gone; a failed write must not end the DNS (eprintln! panics).
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "berth-dns: reload: {e}");
                }
            },
            Ok(_) => break,
            Err(e) => return Err(NetError::sys("wait for signals", e)),
        }
    }
    // Remove the pid file only if it is still ours.
    if std::fs::read_to_string(pid_path(dirs)).is_ok_and(|t| t.trim() == pid) {
        let _ = std::fs::remove_file(pid_path(dirs));
    }
    Ok(())
}

/// A socket bound to `addr` with IP_FREEBIND, so an address that is still being set up (or an
/// IPv6 address in DAD) does not make the bind fail.
fn bound_socket(addr: SocketAddr, stream: bool) -> std::io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    let kind = if stream { libc::SOCK_STREAM } else { libc::SOCK_DGRAM };
    // SAFETY: plain socket(2); the returned fd is owned below.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for (level, opt) in [(libc::SOL_IP, libc::IP_FREEBIND), (libc::SOL_SOCKET, libc::SO_REUSEADDR)] {
        // SAFETY: setsockopt with a pointer to a c_int that outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    nix::sys::socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    if stream {
        nix::sys::socket::listen(&fd, nix::sys::socket::Backlog::new(64)?)?;
    }
    Ok(fd)
}

fn start_listeners(ip: IpAddr, shared: &Arc<Shared>) -> std::io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let addr = SocketAddr::new(ip, 53);
    let udp = UdpSocket::from(bound_socket(addr, false)?);
    let tcp = TcpListener::from(bound_socket(addr, true)?);
    udp.set_read_timeout(Some(Duration::from_millis(300)))?;
    tcp.set_nonblocking(true)?;
    {
        let (stop, shared) = (stop.clone(), shared.clone());
        std::thread::spawn(move || udp_loop(udp, ip, &stop, &shared));
    }
    {
        let (stop, shared) = (stop.clone(), shared.clone());
        std::thread::spawn(move || tcp_loop(tcp, ip, &stop, &shared));
    }
    Ok(stop)
}

fn udp_loop(sock: UdpSocket, local: IpAddr, stop: &AtomicBool, shared: &Arc<Shared>) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let query = buf[..n].to_vec();
        match answer(&query, from.ip(), local, shared) {
            Reply::Now(bytes) => {
                let _ = sock.send_to(&bytes, from);
            }
            Reply::Forward(servers) => {
                // Forwarding may wait on a slow upstream; do not hold the listener.
                let Ok(sock) = sock.try_clone() else { continue };
                std::thread::spawn(move || {
                    let bytes = forward(&query, &servers).unwrap_or_else(|| servfail(&query));
                    let _ = sock.send_to(&bytes, from);
                });
            }
            Reply::Nothing => {}
        }
    }
}

fn tcp_loop(listener: TcpListener, local: IpAddr, stop: &AtomicBool, shared: &Arc<Shared>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, from)) => {
                let shared = shared.clone();
                std::thread::spawn(move || tcp_conn(conn, from.ip(), local, &shared));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn tcp_conn(mut conn: TcpStream, from: IpAddr, local: IpAddr, shared: &Shared) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    loop {
        let mut len = [0u8; 2];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let mut query = vec![0u8; u16::from_be_bytes(len) as usize];
        if conn.read_exact(&mut query).is_err() {
            return;
        }
        let bytes = match answer(&query, from, local, shared) {
            Reply::Now(b) => b,
            Reply::Forward(servers) => forward(&query, &servers).unwrap_or_else(|| servfail(&query)),
            Reply::Nothing => return,
        };
        let Ok(n) = u16::try_from(bytes.len()) else { return };
        if conn.write_all(&n.to_be_bytes()).and_then(|_| conn.write_all(&bytes)).is_err() {
            return;
        }
    }
}

enum Reply {
    Now(Vec<u8>),
    Forward(Vec<IpAddr>),
    Nothing,
}

fn answer(query: &[u8], from: IpAddr, local: IpAddr, shared: &Shared) -> Reply {
    let Ok(req) = Message::from_vec(query) else { return Reply::Nothing };
    if req.metadata.message_type != MessageType::Query {
        return Reply::Nothing;
    }
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.metadata.recursion_available = true;
    resp.queries = req.queries.clone();
    let Some(q) = req.queries.first().filter(|_| req.metadata.op_code == OpCode::Query) else {
        resp.metadata.response_code = ResponseCode::NotImp;
        return encode(&resp);
    };
    let name = q.name().to_ascii();
    let found = shared.table.read().unwrap_or_else(|e| e.into_inner()).lookup(&name, from, local);
    match found {
        Answer::Refused => {
            resp.metadata.response_code = ResponseCode::Refused;
            encode(&resp)
        }
        Answer::Forward(servers) => Reply::Forward(servers),
        Answer::Pointer(target) => {
            resp.metadata.authoritative = true;
            if q.query_type() == RecordType::PTR
                && let Ok(name) = Name::from_ascii(format!("{target}."))
            {
                resp.answers.push(Record::from_rdata(q.name().clone(), TTL, RData::PTR(PTR(name))));
            }
            encode(&resp)
        }
        Answer::Local(ips) => {
            resp.metadata.authoritative = true;
            let want_v6 = q.query_type() == RecordType::AAAA;
            let mut ips: Vec<IpAddr> = ips.into_iter().filter(|ip| ip.is_ipv6() == want_v6).collect();
            // Several containers under one name: all addresses, in a rotating order, so clients
            // that take the first spread their load. A and AAAA rotate apart: a client asks
            // both for each lookup, and one shared counter would step twice per lookup.
            if ips.len() > 1 {
                let counter = if want_v6 { &shared.rotate_v6 } else { &shared.rotate };
                let k = counter.fetch_add(1, Ordering::Relaxed) % ips.len();
                ips.rotate_left(k);
            }
            for ip in ips {
                let rdata = match (ip, q.query_type()) {
                    (IpAddr::V4(a), RecordType::A) => RData::A(A::from(a)),
                    (IpAddr::V6(a), RecordType::AAAA) => RData::AAAA(AAAA::from(a)),
                    _ => continue,
                };
                resp.answers.push(Record::from_rdata(q.name().clone(), TTL, rdata));
            }
            encode(&resp)
        }
    }
}

fn encode(resp: &Message) -> Reply {
    match resp.to_vec() {
        Ok(b) => Reply::Now(b),
        Err(_) => Reply::Nothing,
    }
}

fn servfail(query: &[u8]) -> Vec<u8> {
    let Ok(req) = Message::from_vec(query) else { return Vec::new() };
    let mut resp = Message::error_msg(req.metadata.id, req.metadata.op_code, ResponseCode::ServFail);
    resp.queries = req.queries;
    resp.to_vec().unwrap_or_default()
}

/// Sends the query to each upstream in turn over UDP; the first answer wins.
fn forward(query: &[u8], servers: &[IpAddr]) -> Option<Vec<u8>> {
    for server in servers {
        let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().ok()?;
        let Ok(sock) = UdpSocket::bind(bind) else { continue };
        let _ = sock.set_read_timeout(Some(Duration::from_secs(3)));
        if sock.connect(SocketAddr::new(*server, 53)).is_err() || sock.send(query).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        if let Ok(n) = sock.recv(&mut buf) {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}
