//! All rtnetlink traffic goes through this one small synchronous socket wrapper: typed
//! messages, a sequence check, and kernel errors mapped to `Error::Netlink` in one place.
//! No async runtime: a plugin lives a few milliseconds.

use std::io;
use std::net::IpAddr;

use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::error::Error;
use crate::netns::NetNs;

/// What we read back about a link.
#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Administratively up (IFF_UP).
    pub up: bool,
    pub mac: Vec<u8>,
    pub kind: Option<InfoKind>,
    pub macvlan_mode: Option<MacVlanMode>,
    /// The broadcast queue length this macvlan asked for (`IFLA_MACVLAN_BC_QUEUE_LEN`), when
    /// the kernel reports one.
    pub macvlan_bc_queue_len: Option<u32>,
    /// `IFLA_IFALIAS`, the link's free-text description.
    pub alias: Option<String>,
}

/// A macvlan to create on `master` (an index in the socket's netns), placed into `netns`.
pub struct NewMacvlan<'a> {
    pub name: &'a str,
    pub master: u32,
    pub mode: MacVlanMode,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// `IFLA_MACVLAN_BC_QUEUE_LEN`; None leaves the kernel's default.
    pub bc_queue_len: Option<u32>,
    pub netns: &'a NetNs,
}

/// A route to add; `table` 254 is main.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: u32,
    pub table: u32,
    pub src: Option<IpAddr>,
    pub priority: Option<u32>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
}

pub const MAIN_TABLE: u32 = RouteHeader::RT_TABLE_MAIN as u32;

pub use crate::family::Family;

fn address_family(family: Family) -> AddressFamily {
    match family {
        Family::V4 => AddressFamily::Inet,
        Family::V6 => AddressFamily::Inet6,
    }
}

/// IPv6 duplicate address detection of one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dad {
    /// Usable: DAD passed (or never ran, as for IPv4).
    Done,
    /// Still probing: the kernel drops what is sent to it.
    Tentative,
    /// Another node answered for it.
    Failed,
}

/// A unicast route as a dump reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteEntry {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    pub oif: Option<u32>,
    pub table: u32,
    pub src: Option<IpAddr>,
    pub priority: Option<u32>,
}

/// A policy routing rule `from <src> lookup <table>` at `priority`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub src: IpNet,
    pub table: u32,
    pub priority: u32,
}

pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's current netns.
    pub fn open() -> Result<Self, Error> {
        let nl = |e| Error::netlink("open socket", e);
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(nl)?;
        socket.bind_auto().map_err(nl)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(nl)?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// A socket bound to `ns`: it keeps working in that netns after the thread leaves it,
    /// so one netns switch serves every later request.
    pub fn open_in(ns: &NetNs) -> Result<Self, Error> {
        ns.run(Self::open)
    }

    pub fn link(&mut self, name: &str) -> Result<Option<Link>, Error> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK) {
            Ok(mut replies) => match replies.pop() {
                Some(RouteNetlinkMessage::NewLink(m)) => Ok(Some(parse_link(m))),
                _ => Ok(None),
            },
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(Error::netlink(format!("get link {name}"), e)),
        }
    }

    /// Every link of the netns.
    pub fn links(&mut self) -> Result<Vec<Link>, Error> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_DUMP,
            )
            .map_err(|e| Error::netlink("dump links", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(m) => Some(parse_link(m)),
                _ => None,
            })
            .collect())
    }

    /// Creates the macvlan directly inside the target netns, so it never exists in the
    /// host netns. The name is checked in the target netns: EEXIST means the pod has it.
    pub fn create_macvlan(&mut self, m: &NewMacvlan) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(m.name.to_string()));
        msg.attributes.push(LinkAttribute::Link(m.master));
        let mut data = vec![InfoMacVlan::Mode(m.mode)];
        data.extend(m.bc_queue_len.map(InfoMacVlan::BcQueueLen));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(data)),
        ]));
        if let Some(mtu) = m.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = m.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        msg.attributes
            .push(LinkAttribute::NetNsFd(std::os::fd::AsRawFd::as_raw_fd(
                &m.netns.fd(),
            )));
        self.request(
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), Error> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| Error::netlink(format!("set link {index} up"), e))
    }

    /// Sets the link's alias (`IFLA_IFALIAS`); an empty one removes it.
    pub fn set_alias(&mut self, index: u32, alias: &str) -> Result<(), Error> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_string()));
        self.ack(RouteNetlinkMessage::SetLink(msg), 0)
            .map_err(|e| Error::netlink(format!("set alias of link {index}"), e))
    }

    /// Deletes a link; one that is already gone is not an error.
    pub fn delete_link(&mut self, index: u32) -> Result<(), Error> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match self.ack(RouteNetlinkMessage::DelLink(msg), 0) {
            Err(e) if e.raw_os_error() != Some(libc::ENODEV) => {
                Err(Error::netlink(format!("delete link {index}"), e))
            }
            _ => Ok(()),
        }
    }

    pub fn add_address(&mut self, index: u32, addr: IpNet) -> Result<(), Error> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr.addr());
        msg.header.prefix_len = addr.prefix_len();
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(addr.addr()));
        msg.attributes.push(AddressAttribute::Address(addr.addr()));
        if let IpNet::V4(v4) = addr {
            msg.attributes
                .push(AddressAttribute::Broadcast(v4.broadcast()));
        }
        self.ack(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|e| Error::netlink(format!("add address {addr} to link {index}"), e))
    }

    /// The addresses of one link, IPv4 and IPv6.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<IpNet>, Error> {
        Ok(self
            .all_addresses()?
            .into_iter()
            .filter_map(|(i, ip)| (i == index).then_some(ip))
            .collect())
    }

    /// Every address of the netns with the index of its link, in one dump.
    pub fn all_addresses(&mut self) -> Result<Vec<(u32, IpNet)>, Error> {
        Ok(self
            .address_messages()?
            .into_iter()
            .filter_map(|a| {
                a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => IpNet::new(*ip, a.header.prefix_len)
                        .ok()
                        .map(|ip| (a.header.index, ip)),
                    _ => None,
                })
            })
            .collect())
    }

    /// The kernel's address messages of every link.
    fn address_messages(&mut self) -> Result<Vec<AddressMessage>, Error> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_DUMP,
            )
            .map_err(|e| Error::netlink("dump addresses", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(a) => Some(a),
                _ => None,
            })
            .collect())
    }

    /// Every address of link `index` with where its duplicate address detection stands.
    pub fn dad_states(&mut self, index: u32) -> Result<Vec<(IpAddr, Dad)>, Error> {
        Ok(self
            .address_messages()?
            .into_iter()
            .filter(|a| a.header.index == index)
            .filter_map(|a| {
                let ip = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })?;
                // IFA_FLAGS (32 bits) supersedes the header's 8-bit copy when present.
                let flags = a
                    .attributes
                    .iter()
                    .find_map(|attr| match attr {
                        AddressAttribute::Flags(f) => Some(*f),
                        _ => None,
                    })
                    .unwrap_or_else(|| {
                        AddressFlags::from_bits_truncate(u32::from(a.header.flags.bits()))
                    });
                let dad = if flags.contains(AddressFlags::Dadfailed) {
                    Dad::Failed
                } else if flags.contains(AddressFlags::Tentative) {
                    Dad::Tentative
                } else {
                    Dad::Done
                };
                Some((ip, dad))
            })
            .collect())
    }

    /// Asks the kernel to resolve `ip` on link `index` now (ARP or neighbour solicitation,
    /// from the link's own address), as if traffic were waiting for it (`NTF_USE`).
    pub fn resolve_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<(), Error> {
        let mut msg = neighbour_message(index, ip);
        msg.header.flags = NeighbourFlags::Use;
        self.ack(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE)
            .map_err(|e| Error::netlink(format!("resolve neighbour {ip}"), e))
    }

    /// Whether the kernel has a link-layer address for `ip` on link `index`: `Some(mac)` once
    /// resolved, `None` while unknown, pending or failed.
    pub fn neighbour(&mut self, index: u32, ip: IpAddr) -> Result<Option<Vec<u8>>, Error> {
        let msg = neighbour_message(index, ip);
        let replies = match self.request(RouteNetlinkMessage::GetNeighbour(msg), NLM_F_ACK) {
            Ok(replies) => replies,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(Error::netlink(format!("get neighbour {ip}"), e)),
        };
        for reply in replies {
            let RouteNetlinkMessage::NewNeighbour(n) = reply else {
                continue;
            };
            let resolved = matches!(
                n.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
            );
            let mac = n.attributes.into_iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(mac) => Some(mac),
                _ => None,
            });
            if resolved {
                return Ok(mac);
            }
        }
        Ok(None)
    }

    /// Forgets `ip` on link `index` (an unanswered resolution); already gone is fine.
    pub fn delete_neighbour(&mut self, index: u32, ip: IpAddr) -> Result<(), Error> {
        match self.ack(
            RouteNetlinkMessage::DelNeighbour(neighbour_message(index, ip)),
            0,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => other.map_err(|e| Error::netlink(format!("delete neighbour {ip}"), e)),
        }
    }

    pub fn add_route(&mut self, r: &RouteSpec) -> Result<(), Error> {
        self.ack(
            RouteNetlinkMessage::NewRoute(route_message(r)),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map_err(|e| {
            let via = r.gw.map(|gw| format!(" via {gw}")).unwrap_or_default();
            Error::netlink(format!("add route {}{via} table {}", r.dst, r.table), e)
        })
    }

    /// The unicast routes of `table` (the kernel dumps every table; the filter is ours).
    pub fn routes(&mut self, family: Family, table: u32) -> Result<Vec<RouteEntry>, Error> {
        let mut routes = self.all_routes(family)?;
        routes.retain(|r| r.table == table);
        Ok(routes)
    }

    /// The unicast routes of every table, in one dump.
    pub fn all_routes(&mut self, family: Family) -> Result<Vec<RouteEntry>, Error> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = address_family(family);
        let replies = self
            .request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)
            .map_err(|e| Error::netlink("list routes", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(m) if m.header.kind == RouteType::Unicast => {
                    parse_route(m)
                }
                _ => None,
            })
            .collect())
    }

    /// Deletes a route read back by [`Netlink::routes`]; one already gone is fine.
    pub fn delete_route(&mut self, r: &RouteEntry) -> Result<(), Error> {
        let spec = RouteSpec {
            dst: r.dst,
            gw: r.gw,
            oif: r.oif.unwrap_or(0),
            table: r.table,
            src: None,
            priority: r.priority,
            mtu: None,
            advmss: None,
        };
        let mut msg = route_message(&spec);
        // Match any scope and protocol: the kernel's own routes are deleted as well.
        msg.header.scope = RouteScope::NoWhere;
        msg.header.protocol = RouteProtocol::Unspec;
        if spec.oif == 0 {
            msg.attributes
                .retain(|a| !matches!(a, RouteAttribute::Oif(_)));
        }
        match self.ack(RouteNetlinkMessage::DelRoute(msg), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            other => other.map_err(|e| {
                Error::netlink(format!("delete route {} table {}", r.dst, r.table), e)
            }),
        }
    }

    /// Adds `rule`; the same rule already there is fine (a repeated ADD).
    pub fn add_rule(&mut self, rule: &Rule) -> Result<(), Error> {
        match self.ack(
            RouteNetlinkMessage::NewRule(rule_message(rule)),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            other => other.map_err(|e| Error::netlink(format!("add rule {}", describe(rule)), e)),
        }
    }

    /// The `lookup <table>` rules of `family` (`from all` ones, such as the kernel's defaults,
    /// with the family's /0 as source); rules of other actions are left out.
    pub fn rules(&mut self, family: Family) -> Result<Vec<Rule>, Error> {
        let mut msg = RuleMessage::default();
        msg.header.family = address_family(family);
        let replies = self
            .request(RouteNetlinkMessage::GetRule(msg), NLM_F_DUMP)
            .map_err(|e| Error::netlink("list rules", e))?;
        Ok(replies
            .into_iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRule(m) => parse_rule(m),
                _ => None,
            })
            .collect())
    }

    /// Deletes `rule`; one already gone is fine.
    pub fn delete_rule(&mut self, rule: &Rule) -> Result<(), Error> {
        match self.ack(RouteNetlinkMessage::DelRule(rule_message(rule)), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            other => {
                other.map_err(|e| Error::netlink(format!("delete rule {}", describe(rule)), e))
            }
        }
    }

    fn ack(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.request(msg, flags | NLM_F_ACK).map(drop)
    }

    /// Sends one request and collects its replies up to the ACK (or DONE for a dump).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let len = packet.buffer_len();
        if len > self.buf.len() {
            self.buf.resize(len, 0);
        }
        packet.serialize(&mut self.buf[..len]);
        self.socket.send(&self.buf[..len], 0)?;

        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let size = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < size {
                let reply =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..size])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let length = reply.header.length as usize;
                if reply.header.sequence_number != self.seq {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "netlink reply for sequence {} while waiting for {}",
                            reply.header.sequence_number, self.seq
                        ),
                    ));
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    NetlinkPayload::Error(e) if e.code.is_some() => return Err(e.to_io()),
                    NetlinkPayload::Error(_) => return Ok(replies),
                    NetlinkPayload::Done(_) if dump => return Ok(replies),
                    _ => {}
                }
                if length == 0 {
                    break;
                }
                offset += length;
            }
        }
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn route_message(r: &RouteSpec) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(r.dst.addr());
    msg.header.destination_prefix_length = r.dst.prefix_len();
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    // A route without a gateway reaches its destination directly on the link.
    msg.header.scope = if r.gw.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    // Tables above 255 only fit in the attribute; the header byte then says "see attribute".
    msg.header.table = u8::try_from(r.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.attributes.push(RouteAttribute::Table(r.table));
    if r.dst.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                r.dst.network(),
            )));
    }
    if let Some(gw) = r.gw {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some(src) = r.src {
        msg.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    msg.attributes.push(RouteAttribute::Oif(r.oif));
    if let Some(p) = r.priority {
        msg.attributes.push(RouteAttribute::Priority(p));
    }
    let metrics: Vec<RouteMetric> = [
        r.mtu.map(RouteMetric::Mtu),
        r.advmss.map(RouteMetric::Advmss),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !metrics.is_empty() {
        msg.attributes.push(RouteAttribute::Metrics(metrics));
    }
    msg
}

fn neighbour_message(index: u32, ip: IpAddr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = family(ip);
    msg.header.ifindex = index;
    msg.attributes
        .push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(v4) => NeighbourAddress::Inet(v4),
            IpAddr::V6(v6) => NeighbourAddress::Inet6(v6),
        }));
    msg
}

fn parse_route(m: RouteMessage) -> Option<RouteEntry> {
    let family_any = match m.header.address_family {
        AddressFamily::Inet => IpAddr::from([0u8; 4]),
        AddressFamily::Inet6 => IpAddr::from([0u16; 8]),
        _ => return None,
    };
    let mut dst = family_any;
    let mut route = RouteEntry {
        dst: IpNet::new(family_any, 0).ok()?,
        gw: None,
        oif: None,
        table: u32::from(m.header.table),
        src: None,
        priority: None,
    };
    for attr in m.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = ip_of(a)?,
            RouteAttribute::Gateway(a) => route.gw = ip_of(a),
            RouteAttribute::PrefSource(a) => route.src = ip_of(a),
            RouteAttribute::Oif(i) => route.oif = Some(i),
            RouteAttribute::Table(t) => route.table = t,
            RouteAttribute::Priority(p) => route.priority = Some(p),
            _ => {}
        }
    }
    route.dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    Some(route)
}

fn ip_of(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(v4.into()),
        RouteAddress::Inet6(v6) => Some(v6.into()),
        _ => None,
    }
}

fn rule_message(rule: &Rule) -> RuleMessage {
    let mut msg = RuleMessage::default();
    msg.header.family = family(rule.src.addr());
    msg.header.src_len = rule.src.prefix_len();
    msg.header.action = RuleAction::ToTable;
    msg.header.table = u8::try_from(rule.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.attributes.push(RuleAttribute::Source(rule.src.addr()));
    msg.attributes.push(RuleAttribute::Table(rule.table));
    msg.attributes.push(RuleAttribute::Priority(rule.priority));
    msg
}

fn parse_rule(m: RuleMessage) -> Option<Rule> {
    if m.header.action != RuleAction::ToTable {
        return None;
    }
    let (mut src, mut table, mut priority) = (None, u32::from(m.header.table), 0);
    for attr in m.attributes {
        match attr {
            RuleAttribute::Source(ip) => src = Some(ip),
            RuleAttribute::Table(t) => table = t,
            RuleAttribute::Priority(p) => priority = p,
            _ => {}
        }
    }
    // A rule without a source is `from all`: the whole family's address space.
    let src = match (src, m.header.family) {
        (Some(ip), _) => IpNet::new(ip, m.header.src_len).ok()?,
        (None, AddressFamily::Inet) => IpNet::new(IpAddr::from([0u8; 4]), 0).ok()?,
        (None, AddressFamily::Inet6) => IpNet::new(IpAddr::from([0u16; 8]), 0).ok()?,
        (None, _) => return None,
    };
    Some(Rule {
        src,
        table,
        priority,
    })
}

fn describe(rule: &Rule) -> String {
    format!("{}: from {} lookup {}", rule.priority, rule.src, rule.table)
}

fn parse_link(m: LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        mac: Vec::new(),
        kind: None,
        macvlan_mode: None,
        macvlan_bc_queue_len: None,
        alias: None,
    };
    for attr in m.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::Address(mac) => link.mac = mac,
            LinkAttribute::IfAlias(alias) => link.alias = Some(alias),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => link.kind = Some(k),
                        LinkInfo::Data(InfoData::MacVlan(data)) => {
                            for d in data {
                                match d {
                                    InfoMacVlan::Mode(mode) => link.macvlan_mode = Some(mode),
                                    InfoMacVlan::BcQueueLen(len) => {
                                        link.macvlan_bc_queue_len = Some(len)
                                    }
                                    _ => {}
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// `aa:bb:cc:dd:ee:ff`
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (case-insensitive): six pairs of hex digits and nothing else
/// (`u8::from_str_radix` alone would take a sign, `+2`).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip_and_rejects() {
        let mac = parse_mac("0A:58:ac:10:0b:01").unwrap();
        assert_eq!(format_mac(&mac), "0a:58:ac:10:0b:01");
        for bad in [
            "",
            "0a:58:ac:10:0b",
            "0a:58:ac:10:0b:01:02",
            "0g:58:ac:10:0b:01",
            "a:58:ac:10:0b:011",
            "+2:+0:00:00:00:01",
            "-0:00:00:00:00:01",
            "0a-58-ac-10-0b-01",
            " a:58:ac:10:0b:01",
        ] {
            assert!(parse_mac(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn reads_loopback_of_its_own_netns() {
        // Read-only: looks at `lo` of the test process's netns, changes nothing.
        let mut nl = Netlink::open().unwrap();
        let lo = nl.link("lo").unwrap().unwrap();
        assert_eq!(lo.name, "lo");
        assert!(lo.mtu > 0);
        assert!(nl.link("no-such-link0").unwrap().is_none());
    }
}
