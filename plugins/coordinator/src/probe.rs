//! Layer-2 probes through one NIC of the pod.
//!
//! Is the gateway there: the kernel's own neighbour resolution (ARP for IPv4, neighbour
//! solicitation for IPv6), started over netlink and watched until it resolves or the budget
//! runs out. A packet socket would do the same but costs an RCU grace period (10-20 ms) when
//! it is bound and again when it is closed; the kernel's resolver costs nothing of the kind.
//!
//! Does anyone else answer for our IPv4 address: an ARP probe with sender 0.0.0.0 (RFC 5227),
//! which the kernel cannot send, so a packet socket (created inside the pod netns, bound to the
//! NIC) pays that grace period once; it is opt-in. IPv6 has the kernel's duplicate address
//! detection for this.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use cni::netlink::Netlink;
use cni::Error;

use crate::config::Budget;

const ETH_P_ARP: u16 = 0x0806;
const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
const BROADCAST: [u8; 6] = [0xff; 6];

/// The NIC a probe goes out of.
pub struct Nic {
    pub index: u32,
    pub mac: [u8; 6],
}

/// What answered: the MAC, as `aa:bb:..`.
pub type Answer = [u8; 6];

/// Whether `gateway` answers on link `index` within the budget: each try asks the kernel to
/// resolve it and watches the neighbour entry; an unanswered entry is removed so the next try
/// sends a fresh request, and so nothing is left behind.
pub fn gateway_answers(
    pod: &mut Netlink,
    index: u32,
    gateway: IpAddr,
    budget: &Budget,
) -> Result<bool, Error> {
    for attempt in 0..budget.retries {
        let sent = Instant::now();
        pod.resolve_neighbour(index, gateway)?;
        while sent.elapsed() < budget.timeout {
            if pod.neighbour(index, gateway)?.is_some() {
                return Ok(true);
            }
            // Polling a kernel table: the reply usually lands within a millisecond.
            std::thread::sleep(NEIGHBOUR_POLL);
        }
        pod.delete_neighbour(index, gateway)?;
        if attempt + 1 < budget.retries {
            std::thread::sleep((sent + budget.interval).saturating_duration_since(Instant::now()));
        }
    }
    Ok(false)
}

const NEIGHBOUR_POLL: Duration = Duration::from_micros(250);

/// An ARP probe (sender 0.0.0.0) for `ip`: the MAC of whoever answers, other than us.
pub fn conflicting_owner(nic: &Nic, ip: Ipv4Addr, budget: &Budget) -> io::Result<Option<Answer>> {
    let socket = ArpSocket::open(nic)?;
    let request = arp_packet(ARP_REQUEST, &nic.mac, Ipv4Addr::UNSPECIFIED, ip);
    retry(
        budget,
        || socket.send(&request),
        |deadline| socket.wait_reply(ip, &nic.mac, deadline),
    )
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
        // SOCK_DGRAM: the kernel builds the Ethernet header from the sockaddr. Protocol 0:
        // no receive hook yet, so the bind below adds one without first removing a catch-all
        // one (which would cost a grace period).
        let fd = socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0)?;
        let addr = link_addr(nic.index, [0; 6]);
        // sll_protocol of the address: receive ARP only, on this NIC only.
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
}
