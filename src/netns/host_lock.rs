//! A lock over the whole host, for choices that must see every berth on it: two `berth`
//! processes with different roots or run dirs (two test stacks) must not pick the same default
//! subnet from the same view of the host's routes.
//!
//! It is an abstract Unix socket name bound for as long as the lock is held: the kernel
//! refuses a second bind, releases the name when the process dies however it dies, and leaves
//! no file behind.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::time::{Duration, Instant};

use super::error::NetError;

/// The abstract socket name; one per host network namespace, which is where berth runs.
const NAME: &[u8] = b"berth-subnet-lock";
/// How long to wait for another berth's network creation (milliseconds of work normally).
const WAIT: Duration = Duration::from_secs(60);

/// Held while a subnet is chosen and its bridge given its address; released on drop.
#[derive(Debug)]
pub struct SubnetLock {
    _socket: UnixListener,
}

impl SubnetLock {
    /// Takes the lock, waiting (polling every 2 ms) while another process holds it.
    pub fn acquire() -> Result<SubnetLock, NetError> {
        let addr = SocketAddr::from_abstract_name(NAME).map_err(|e| NetError::sys("subnet lock name", e))?;
        let deadline = Instant::now() + WAIT;
        loop {
            match UnixListener::bind_addr(&addr) {
                Ok(socket) => return Ok(SubnetLock { _socket: socket }),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(NetError::sys("waiting for another berth choosing a subnet", e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_for_the_first() {
        let first = SubnetLock::acquire().expect("first");
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _second = SubnetLock::acquire().expect("second");
            tx.send(Instant::now()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(50));
        let released = Instant::now();
        drop(first);
        let got = rx.recv().unwrap();
        assert!(got >= released, "the second holder got the lock before the first let go");
        t.join().unwrap();
    }
}
