//! A small synchronous rtnetlink client: one `NETLINK_ROUTE` socket in the network namespace of
//! the thread that opened it, request/ack in lock step. Synchronous on purpose (as netavark
//! does): callers that must act in another namespace do so on a dedicated thread, and nothing
//! here needs an async runtime.

use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::error::NetError;

/// An address or route seen on the host, used to keep new subnets clear of existing ones.
#[derive(Debug, Clone)]
pub struct HostPrefix {
    /// The prefix (network address with its length).
    pub net: ipnet::IpNet,
}

/// A rtnetlink socket bound in the current thread's network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Netlink, NetError> {
        let nl = |e: std::io::Error| NetError::Netlink { op: "open socket".into(), source: e };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(nl)?;
        socket.bind_auto().map_err(nl)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(nl)?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request and collects the replies until the ack (or end of dump).
    fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NetError> {
        let err = |source: std::io::Error| NetError::Netlink { op: op.to_string(), source };
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0).map_err(err)?;

        let mut out = Vec::new();
        let mut rbuf = vec![0u8; 65536];
        loop {
            let n = self.socket.recv(&mut &mut rbuf[..], 0).map_err(err)?;
            let mut offset = 0;
            while offset < n {
                let reply: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&rbuf[offset..n]).map_err(|e| {
                        err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
                    })?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                None => Ok(out),
                                Some(_) => Err(err(e.to_io())),
                            };
                        }
                        NetlinkPayload::InnerMessage(m) => {
                            out.push(m);
                            if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
                                return Ok(out);
                            }
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    /// The index of the link called `name`, or `None` when there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(&format!("get link {name}"), RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })),
            Err(NetError::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Names of all links in this namespace (berth's integration tests look for leftovers).
    #[cfg(feature = "internals")]
    pub fn link_names(&mut self) -> Result<Vec<String>, NetError> {
        let replies =
            self.request("dump links", RouteNetlinkMessage::GetLink(LinkMessage::default()), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => l.attributes.into_iter().find_map(|a| match a {
                    LinkAttribute::IfName(n) => Some(n),
                    _ => None,
                }),
                _ => None,
            })
            .collect())
    }

    /// Creates a bridge (fails with EEXIST if one of that name exists).
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]));
        self.request(
            &format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Creates a veth pair: `host` here, attached to bridge `master`, and its peer `peer` created
    /// straight inside the namespace `peer_netns` (so it never appears on the host).
    pub fn create_veth(
        &mut self,
        host: &str,
        master: u32,
        peer: &str,
        peer_netns: RawFd,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<(), NetError> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes.push(LinkAttribute::IfName(peer.to_string()));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns));
        if let Some(mtu) = mtu {
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = peer_mac {
            peer_msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        msg.attributes.push(LinkAttribute::Controller(master));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(
            &format!("create veth {host}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )?;
        Ok(())
    }

    /// Sets a link up.
    pub fn set_up(&mut self, index: u32) -> Result<(), NetError> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(&format!("set link {index} up"), RouteNetlinkMessage::SetLink(msg), NLM_F_ACK)?;
        Ok(())
    }

    /// Deletes a link by name; a link that is already gone is not an error.
    pub fn delete_link(&mut self, name: &str) -> Result<(), NetError> {
        let Some(index) = self.link_index(name)? else { return Ok(()) };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.request(&format!("delete link {name}"), RouteNetlinkMessage::DelLink(msg), NLM_F_ACK) {
            Err(NetError::Netlink { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Adds an address to a link; an address that is already there is not an error.
    pub fn add_address(&mut self, index: u32, net: ipnet::IpNet) -> Result<(), NetError> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = net.prefix_len();
        msg.header.family = family(net.addr());
        msg.attributes.push(AddressAttribute::Local(net.addr()));
        msg.attributes.push(AddressAttribute::Address(net.addr()));
        if let ipnet::IpNet::V4(v4) = net {
            msg.attributes.push(AddressAttribute::Broadcast(v4.broadcast()));
        }
        match self.request(
            &format!("add address {net}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(NetError::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Adds a default route via `gateway` (with a metric, so several networks can each have one).
    pub fn add_default_route(&mut self, gateway: IpAddr, metric: u32) -> Result<(), NetError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(gateway);
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Universe;
        msg.header.kind = RouteType::Unicast;
        msg.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gateway)));
        msg.attributes.push(RouteAttribute::Priority(metric));
        match self.request(
            &format!("add default route via {gateway}"),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(NetError::Netlink { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Every route destination and interface address in this namespace (main table and local
    /// addresses), so that a new subnet can be kept clear of what the host already uses.
    pub fn host_prefixes(&mut self) -> Result<Vec<HostPrefix>, NetError> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = fam;
            for reply in self.request("dump routes", RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)? {
                let RouteNetlinkMessage::NewRoute(r) = reply else { continue };
                if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.destination_prefix_length == 0 {
                    continue;
                }
                let dest = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
                    _ => None,
                });
                if let Some(net) =
                    dest.and_then(|d| ipnet::IpNet::new(d, r.header.destination_prefix_length).ok())
                {
                    out.push(HostPrefix { net: net.trunc() });
                }
            }
        }
        let replies = self.request(
            "dump addresses",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        for reply in replies {
            let RouteNetlinkMessage::NewAddress(a) = reply else { continue };
            let addr = a.attributes.iter().find_map(|x| match x {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(net) = addr.and_then(|ip| ipnet::IpNet::new(ip, a.header.prefix_len).ok()) {
                out.push(HostPrefix { net: net.trunc() });
            }
        }
        Ok(out)
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}
