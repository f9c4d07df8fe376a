//! The `coordinator` plugin, chained after macvlan: per-NIC policy routing so replies leave by
//! the NIC they belong to, a gateway reachability check and an optional IP conflict check on
//! ADD. It passes `prevResult` through unchanged. (The gratuitous ARP that tells neighbours the
//! new MAC is the kernel's: macvlan sets `arp_notify` before bringing the link up.)

mod config;
mod main_default;
mod pod;
mod probe;
mod routing;
mod tables;

use std::net::IpAddr;
use std::time::Duration;

use cni::netlink::{format_mac, Dad, Link, Netlink};
use cni::netns::NetNs;
use cni::types::CniResult;
use cni::{log_info, Error, Invocation, Plugin};

use config::CoordinatorConf;
use main_default::Change;
use pod::Pod;
use routing::{Nic, NicAddress};

struct Coordinator;

impl Plugin for Coordinator {
    fn add(&self, inv: &Invocation) -> Result<CniResult, Error> {
        let Attached {
            conf,
            prev,
            addresses,
            netns,
            mut pod,
            link,
        } = Attached::read(inv)?;
        let ifname = &inv.env.ifname;
        let probed = probe::Nic {
            index: link.index,
            mac: link.mac.as_slice().try_into().map_err(|_| {
                Error::InvalidConfig(format!("{ifname} has no Ethernet address: not a macvlan?"))
            })?,
        };

        // Checks first: when one fails, nothing of ours exists yet. An IPv6 address is of no
        // use (and answers nothing) until the kernel's duplicate address detection is over,
        // which is also the IPv6 conflict check.
        if conf.detect_ip_conflict || conf.detect_gateway {
            wait_for_dad(&mut pod, link.index, ifname, &addresses)?;
        }
        if conf.detect_ip_conflict {
            detect_conflicts(&netns, &probed, ifname, &addresses, &conf)?;
        }
        if conf.detect_gateway {
            detect_gateways(&mut pod, link.index, ifname, &addresses, &conf)?;
        }
        if let Some(value) = conf.pod_rp_filter {
            set_rp_filter(&netns, ifname, value)?;
        }
        if conf.tune_pod_routes {
            let nic = Nic {
                name: ifname,
                index: link.index,
                addresses: &addresses,
            };
            // One coordinator at a time per pod: the chains of a pod may run all at once
            // (containerd's CRI attaches its networks in parallel).
            let _lock = netns.lock()?;
            if let Err(e) = set_up_routing(&mut pod, &conf, &nic) {
                // Best effort: the error being returned is the one that matters.
                let _ = take_away(&mut pod, &conf, ifname);
                return Err(e);
            }
        }
        log_info!(
            "ADD {} {ifname}: table {} for {:?}",
            inv.env.container_id,
            tables::table_for(ifname),
            addresses
                .iter()
                .map(|a| a.address.to_string())
                .collect::<Vec<_>>()
        );
        Ok(prev)
    }

    fn del(&self, inv: &Invocation) -> Result<(), Error> {
        let conf = CoordinatorConf::parse(&inv.stdin)?;
        if !conf.tune_pod_routes {
            return Ok(());
        }
        let Some(netns) = NetNs::open_if_live(&inv.env.netns)? else {
            return Ok(());
        };
        let mut pod = Netlink::open_in(&netns)?;
        let _lock = netns.lock()?;
        take_away(&mut pod, &conf, &inv.env.ifname)
    }

    fn check(&self, inv: &Invocation) -> Result<(), Error> {
        let Attached {
            conf,
            addresses,
            netns,
            mut pod,
            link,
            ..
        } = Attached::read(inv)?;
        if !conf.tune_pod_routes {
            return Ok(());
        }
        let nic = Nic {
            name: &inv.env.ifname,
            index: link.index,
            addresses: &addresses,
        };
        let state = {
            let _lock = netns.lock()?;
            Pod::read(&mut pod)?
        };
        routing::verify(&state, &nic)
            .and_then(|()| main_default::verify(&state, &conf, &nic))
            .map_err(|what| Error::CheckFailed(format!("{} in {}: {what}", nic.name, netns.path())))
    }

    fn gc(&self, _inv: &Invocation) -> Result<(), Error> {
        // Everything of ours lives in pod netns and goes with them.
        Ok(())
    }

    fn status(&self, inv: &Invocation) -> Result<(), Error> {
        CoordinatorConf::parse(&inv.stdin).map(drop)
    }
}

/// What ADD and CHECK start from: the config, the chain's result, this NIC's addresses in
/// it, and the NIC itself in the pod.
struct Attached {
    conf: CoordinatorConf,
    prev: CniResult,
    addresses: Vec<NicAddress>,
    netns: NetNs,
    pod: Netlink,
    link: Link,
}

impl Attached {
    fn read(inv: &Invocation) -> Result<Attached, Error> {
        let conf = CoordinatorConf::parse(&inv.stdin)?;
        let prev = chained_result(inv)?;
        let addresses = nic_addresses(&prev, &inv.env.ifname)?;
        let netns = NetNs::open(&inv.env.netns)?;
        let mut pod = Netlink::open_in(&netns)?;
        let link = nic_link(&mut pod, &inv.env.ifname, &netns)?;
        Ok(Attached {
            conf,
            prev,
            addresses,
            netns,
            pod,
            link,
        })
    }
}

fn chained_result(inv: &Invocation) -> Result<CniResult, Error> {
    inv.prev_result()?.ok_or_else(|| {
        Error::InvalidConfig(
            "field prevResult is missing: coordinator is a chained plugin, list it after macvlan \
             in the same conflist"
                .into(),
        )
    })
}

/// The addresses `prevResult` gives `ifname` (all of them when it names no interfaces).
fn nic_addresses(prev: &CniResult, ifname: &str) -> Result<Vec<NicAddress>, Error> {
    let index = prev.interfaces.iter().position(|i| i.name == ifname);
    let addresses: Vec<NicAddress> = prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == index)
        .map(|ip| NicAddress {
            address: ip.address,
            gateway: ip.gateway,
        })
        .collect();
    if addresses.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "prevResult has no IP address for {ifname}: the coordinator needs the IPAM result \
             of this NIC (is ipam set on the plugin before it?)"
        )));
    }
    Ok(addresses)
}

fn nic_link(pod: &mut Netlink, ifname: &str, netns: &NetNs) -> Result<Link, Error> {
    pod.link(ifname)?.ok_or_else(|| {
        Error::InvalidConfig(format!(
            "{ifname} does not exist in {}: the coordinator must come after the plugin that \
             creates it",
            netns.path()
        ))
    })
}

/// IPv4 only: IPv6 conflicts are found by the kernel's duplicate address detection.
fn detect_conflicts(
    netns: &NetNs,
    nic: &probe::Nic,
    ifname: &str,
    addresses: &[NicAddress],
    conf: &CoordinatorConf,
) -> Result<(), Error> {
    for a in addresses {
        let IpAddr::V4(ip) = a.address.addr() else {
            continue;
        };
        let answer = netns.run(|| {
            probe::conflicting_owner(nic, ip, &conf.budget)
                .map_err(|e| Error::io(format!("ARP probe for {ip} on {ifname}"), e))
        })?;
        if let Some(mac) = answer {
            return Err(Error::IpConflict(format!(
                "{ip} of {ifname} is already used by {} on the segment: release it there or \
                 exclude it from the pool",
                format_mac(&mac)
            )));
        }
    }
    Ok(())
}

fn detect_gateways(
    pod: &mut Netlink,
    index: u32,
    ifname: &str,
    addresses: &[NicAddress],
    conf: &CoordinatorConf,
) -> Result<(), Error> {
    for a in addresses {
        let Some(gateway) = a.gateway else { continue };
        if !probe::gateway_answers(pod, index, gateway, &conf.budget)? {
            let how = if gateway.is_ipv4() {
                "ARP"
            } else {
                "neighbour solicitation"
            };
            return Err(Error::GatewayUnreachable(format!(
                "gateway {gateway} did not answer {how} on {ifname} ({}) within {}: check the \
                 rail's gateway and the pool's spec.gateway, or set detectGateway: false",
                a.address.addr(),
                conf.budget
            )));
        }
    }
    Ok(())
}

/// Bound on waiting for IPv6 duplicate address detection (one probe takes a second by
/// default).
const DAD_POLLS: u32 = 500;
const DAD_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Waits until no address of the link is tentative. Our IPv6 addresses answer nothing before,
/// and the kernel sends no neighbour solicitation while the link-local one is tentative.
fn wait_for_dad(
    pod: &mut Netlink,
    index: u32,
    ifname: &str,
    addresses: &[NicAddress],
) -> Result<(), Error> {
    if addresses.iter().all(|a| a.address.addr().is_ipv4()) {
        return Ok(());
    }
    let mut states = pod.dad_states(index)?;
    for _ in 0..DAD_POLLS {
        if states.iter().all(|(_, dad)| *dad != Dad::Tentative) {
            break;
        }
        std::thread::sleep(DAD_POLL_INTERVAL);
        states = pod.dad_states(index)?;
    }
    for (ip, dad) in states {
        match dad {
            Dad::Done => {}
            Dad::Failed => {
                return Err(Error::IpConflict(format!(
                    "{ip} of {ifname} failed duplicate address detection: another node on the \
                     segment uses it; release it there or exclude it from the pool"
                )))
            }
            Dad::Tentative => {
                return Err(Error::GatewayUnreachable(format!(
                    "{ip} of {ifname} is still tentative after {} ms of duplicate address \
                     detection: the gateway cannot be checked",
                    (DAD_POLL_INTERVAL * DAD_POLLS).as_millis()
                )))
            }
        }
    }
    Ok(())
}

/// rp_filter of the NIC and of `all` (the kernel uses the larger of the two), inside the pod.
fn set_rp_filter(netns: &NetNs, ifname: &str, value: u8) -> Result<(), Error> {
    netns.run(|| {
        for dev in [ifname, "all"] {
            let path = format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter");
            std::fs::write(&path, value.to_string())
                .map_err(|e| Error::io(format!("set {path} to {value}"), e))?;
        }
        Ok(())
    })
}

/// The NIC's table and rules, then the main default route as the pod's NICs now imply.
/// Called with the pod's lock held.
fn set_up_routing(pod: &mut Netlink, conf: &CoordinatorConf, nic: &Nic) -> Result<(), Error> {
    let state = Pod::read(pod)?;
    // A link that comes back (a device plugin's, moved out and in again) is no longer leaving.
    if state.link_by_index(nic.index).is_some_and(pod::is_leaving) {
        pod.set_alias(nic.index, "")?;
    }
    routing::install(pod, &state, nic)?;
    main_default::reconcile(pod, &state, conf, Change::Joining(nic))
}

/// Marks the NIC leaving (no other coordinator may take it for the owner from now on),
/// removes its table and rules, and hands the main default route to the next owner. Called
/// with the pod's lock held.
fn take_away(pod: &mut Netlink, conf: &CoordinatorConf, ifname: &str) -> Result<(), Error> {
    if let Some(link) = pod.link(ifname)? {
        pod.set_alias(link.index, pod::LEAVING)?;
    }
    let state = Pod::read(pod)?;
    let index = state.link(ifname).map(|l| l.index);
    routing::remove(pod, &state, ifname, index)?;
    main_default::reconcile(pod, &state, conf, Change::Leaving(index))
}

fn main() {
    cni::skel::run(&Coordinator)
}
