//! Layer-2 probes from inside the pod netns through one NIC: is the gateway there (ARP for
//! IPv4, neighbour solicitation for IPv6), does anyone else answer for our address (ARP probe
//! with sender 0.0.0.0, RFC 5227), and the gratuitous ARP that tells neighbours our new MAC.
//!
//! Sockets are created by the caller while inside the pod netns and bound to the NIC's index,
//! so nothing is ever sent anywhere else.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use crate::config::Budget;

const ETH_P_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const BROADCAST: [u8; 6] = [0xff; 6];
const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;
const ICMPV6_NEIGHBOR_ADVERT: u8 = 136;

/// The NIC a probe goes out of.
pub struct Nic {
    pub index: u32,
    pub mac: [u8; 6],
}

/// What answered: the MAC, as `aa:bb:..`.
pub type Answer = [u8; 6];

/// Sends up to `budget.retries` requests for `target` and returns the first answer's MAC.
/// `sender` is our address, or `None` for a conflict probe (RFC 5227: sender 0.0.0.0).
pub fn resolve(
    nic: &Nic,
    sender: Option<IpAddr>,
    target: IpAddr,
    budget: &Budget,
) -> io::Result<Option<Answer>> {
    match target {
        IpAddr::V4(target) => {
            let sender = match sender {
                Some(IpAddr::V4(ip)) => ip,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            let socket = ArpSocket::open(nic)?;
            let request = arp_packet(ARP_REQUEST, &nic.mac, sender, target);
            retry(
                budget,
                || socket.send(&request),
                |deadline| socket.wait_reply(target, &nic.mac, deadline),
            )
        }
        IpAddr::V6(target) => {
            let socket = NdpSocket::open(nic, sender)?;
            let solicit = neighbor_solicit(&nic.mac, target);
            retry(
                budget,
                || socket.send(&solicit, target),
                |deadline| socket.wait_advert(target, &nic.mac, deadline),
            )
        }
    }
}

/// Tells the segment that `ip` is now at `nic`'s MAC (a gratuitous ARP request); IPv6
/// neighbours learn from the solicitations the kernel sends anyway.
pub fn announce(nic: &Nic, ip: Ipv4Addr) -> io::Result<()> {
    let socket = ArpSocket::open(nic)?;
    socket.send(&arp_packet(ARP_REQUEST, &nic.mac, ip, ip))
}

fn retry(
    budget: &Budget,
    mut send: impl FnMut() -> io::Result<()>,
    mut wait: impl FnMut(Instant) -> io::Result<Option<Answer>>,
) -> io::Result<Option<Answer>> {
    for attempt in 0..budget.retries {
        let sent = Instant::now();
        send()?;
        if let Some(answer) = wait(sent + budget.timeout)? {
            return Ok(Some(answer));
        }
        // Requests go out `interval` apart: a protocol pacing, not a wait for a condition.
        let next = sent + budget.interval;
        if attempt + 1 < budget.retries {
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    }
    Ok(None)
}

fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Waits until `fd` is readable or `deadline` passes; false on timeout.
fn readable(fd: &OwnedFd, deadline: Instant) -> io::Result<bool> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = left.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    match n {
        n if n < 0 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(Instant::now() < deadline)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}

fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

struct ArpSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl ArpSocket {
    fn open(nic: &Nic) -> io::Result<ArpSocket> {
        // SOCK_DGRAM: the kernel builds the Ethernet header from the sockaddr.
        let fd = socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM,
            i32::from(ETH_P_ARP.to_be()),
        )?;
        let addr = link_addr(nic.index, [0; 6]);
        // SAFETY: addr is a valid sockaddr_ll of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        })?;
        Ok(ArpSocket {
            fd,
            ifindex: nic.index,
        })
    }

    fn send(&self, packet: &[u8]) -> io::Result<()> {
        let to = link_addr(self.ifindex, BROADCAST);
        // SAFETY: packet and to are valid for the sizes given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// An ARP reply from `target`, from a MAC other than ours, before `deadline`.
    fn wait_reply(
        &self,
        target: Ipv4Addr,
        ours: &[u8; 6],
        deadline: Instant,
    ) -> io::Result<Option<Answer>> {
        let mut buf = [0u8; 64];
        while readable(&self.fd, deadline)? {
            let n = recv(&self.fd, &mut buf)?;
            if let Some((op, sha, spa)) = parse_arp(&buf[..n]) {
                if op == ARP_REPLY && spa == target && &sha != ours {
                    return Ok(Some(sha));
                }
            }
        }
        Ok(None)
    }
}

fn link_addr(ifindex: u32, mac: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr = [0u8; 8];
    addr[..6].copy_from_slice(&mac);
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: addr,
    }
}

/// An Ethernet/IPv4 ARP packet (RFC 826) without the Ethernet header.
fn arp_packet(op: u16, sha: &[u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> [u8; 28] {
    let mut p = [0u8; 28];
    p[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    p[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    p[4] = 6;
    p[5] = 4;
    p[6..8].copy_from_slice(&op.to_be_bytes());
    p[8..14].copy_from_slice(sha);
    p[14..18].copy_from_slice(&spa.octets());
    // Target hardware address: unknown, zero.
    p[24..28].copy_from_slice(&tpa.octets());
    p
}

fn parse_arp(p: &[u8]) -> Option<(u16, [u8; 6], Ipv4Addr)> {
    if p.len() < 28 || p[0..6] != [0, 1, 8, 0, 6, 4] {
        return None;
    }
    let op = u16::from_be_bytes([p[6], p[7]]);
    let sha: [u8; 6] = p[8..14].try_into().ok()?;
    let spa = Ipv4Addr::new(p[14], p[15], p[16], p[17]);
    Some((op, sha, spa))
}

struct NdpSocket {
    fd: OwnedFd,
}

impl NdpSocket {
    fn open(nic: &Nic, sender: Option<IpAddr>) -> io::Result<NdpSocket> {
        let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
        let set = |level, name, value: libc::c_int| {
            // SAFETY: an int option of the right size.
            check(unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    level,
                    name,
                    (&value as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as u32,
                )
            })
        };
        // Neighbour discovery requires hop limit 255 (RFC 4861 section 7.1).
        set(libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, 255)?;
        set(libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 255)?;
        set(
            libc::IPPROTO_IPV6,
            libc::IPV6_MULTICAST_IF,
            nic.index as i32,
        )?;
        // Our address may still be tentative (DAD running): bind to it anyway.
        set(libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1)?;
        let mut local: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        local.sin6_family = libc::AF_INET6 as u16;
        if let Some(IpAddr::V6(ip)) = sender {
            local.sin6_addr.s6_addr = ip.octets();
        }
        local.sin6_scope_id = nic.index;
        // SAFETY: local is a valid sockaddr_in6 of the size given.
        check(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&local as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as u32,
            )
        })?;
        Ok(NdpSocket { fd })
    }

    fn send(&self, packet: &[u8], target: Ipv6Addr) -> io::Result<()> {
        let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        to.sin6_family = libc::AF_INET6 as u16;
        to.sin6_addr.s6_addr = solicited_node(target).octets();
        // SAFETY: packet and to are valid for the sizes given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A neighbour advertisement for `target` with a link-layer address other than ours.
    fn wait_advert(
        &self,
        target: Ipv6Addr,
        ours: &[u8; 6],
        deadline: Instant,
    ) -> io::Result<Option<Answer>> {
        let mut buf = [0u8; 256];
        while readable(&self.fd, deadline)? {
            let n = recv(&self.fd, &mut buf)?;
            let p = &buf[..n];
            if n < 24 || p[0] != ICMPV6_NEIGHBOR_ADVERT || p[8..24] != target.octets() {
                continue;
            }
            // Option 2: target link-layer address.
            let mac = options(&p[24..]).find_map(|(kind, data)| {
                (kind == 2 && data.len() >= 6).then(|| <[u8; 6]>::try_from(&data[..6]).ok())?
            });
            match mac {
                Some(mac) if &mac != ours => return Ok(Some(mac)),
                Some(_) => {}
                // No option: the sender is on-link and answered; its MAC is unknown here.
                None => return Ok(Some([0; 6])),
            }
        }
        Ok(None)
    }
}

fn options(mut p: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (kind, units) = (*p.first()?, *p.get(1)? as usize);
        if units == 0 || p.len() < units * 8 {
            return None;
        }
        let (opt, rest) = p.split_at(units * 8);
        p = rest;
        Some((kind, &opt[2..]))
    })
}

/// ff02::1:ffXX:XXXX, where a node listens for solicitations of `ip`.
fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// ICMPv6 neighbour solicitation; the kernel fills the checksum of raw ICMPv6 sockets.
fn neighbor_solicit(mac: &[u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut p = [0u8; 32];
    p[0] = ICMPV6_NEIGHBOR_SOLICIT;
    p[8..24].copy_from_slice(&target.octets());
    p[24] = 1; // source link-layer address
    p[25] = 1; // in units of 8 bytes
    p[26..32].copy_from_slice(mac);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_packets_round_trip() {
        let mac = [2, 0, 0, 0, 0, 1];
        let p = arp_packet(
            ARP_REPLY,
            &mac,
            Ipv4Addr::new(172, 16, 11, 254),
            Ipv4Addr::new(172, 16, 11, 1),
        );
        assert_eq!(
            parse_arp(&p),
            Some((ARP_REPLY, mac, Ipv4Addr::new(172, 16, 11, 254)))
        );
        assert_eq!(parse_arp(&p[..27]), None);
    }

    #[test]
    fn solicited_node_address_takes_the_low_24_bits() {
        let ip: Ipv6Addr = "fd00::12:3456".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn nd_options_are_walked_and_bad_lengths_stop() {
        let opts = [2, 1, 1, 2, 3, 4, 5, 6, 9, 0];
        let found: Vec<_> = options(&opts).collect();
        assert_eq!(found, vec![(2u8, &[1u8, 2, 3, 4, 5, 6][..])]);
    }
}
