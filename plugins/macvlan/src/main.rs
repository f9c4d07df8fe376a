//! The macvlan CNI plugin: one macvlan per attachment on a host NIC, addressed by a
//! delegated IPAM plugin. A failed ADD leaves nothing behind.

mod config;

use cni::netlink::{format_mac, Link, Netlink, NewMacvlan, RouteSpec, MAIN_TABLE};
use cni::netns::NetNs;
use cni::types::{CniResult, Interface};
use cni::{ipam, log_info, log_warn, Command, Error, Invocation, Plugin};
use netlink_packet_route::link::InfoKind;

use config::{mode_name, MacvlanConf};

struct Macvlan;

impl Plugin for Macvlan {
    fn add(&self, inv: &Invocation) -> Result<CniResult, Error> {
        let conf = MacvlanConf::parse(inv)?;
        let netns = NetNs::open(&inv.env.netns)?;
        let mut host = Netlink::open()?;
        let master = usable_master(&mut host, &conf)?;
        create_link(&mut host, &conf, master.index, &netns, &inv.env.ifname)?;

        // The link exists from here on: any failure must remove it and release the IPs.
        let mut pod = Netlink::open_in(&netns)?;
        let attached = attach(inv, &conf, &netns, &mut pod);
        if attached.is_err() {
            undo_add(inv, &conf, &mut pod);
        }
        attached
    }

    fn del(&self, inv: &Invocation) -> Result<(), Error> {
        let conf = MacvlanConf::parse(inv)?;
        // Release always, even when the netns is gone: the IPs must come back. The IPAM
        // plugin runs while the link is removed, which mostly waits on the kernel (RCU).
        let release = match &conf.ipam {
            Some(plugin) => Some(ipam::start(&inv.env, plugin, Command::Del, &inv.stdin)?),
            None => None,
        };
        let removed = remove_pod_link(inv);
        if let Some(release) = release {
            release.finish()?;
        }
        removed
    }

    fn check(&self, inv: &Invocation) -> Result<(), Error> {
        let conf = MacvlanConf::parse(inv)?;
        let prev = prev_result(inv)?;
        if let Some(plugin) = &conf.ipam {
            ipam::run(&inv.env, plugin, Command::Check, &inv.stdin)?;
        }
        let netns = NetNs::open(&inv.env.netns)?;
        let mut host = Netlink::open()?;
        let master = host
            .link(&conf.master)?
            .ok_or_else(|| Error::MasterUnusable {
                master: conf.master.clone(),
                reason: "does not exist in the host netns".into(),
            })?;
        let mut pod = Netlink::open_in(&netns)?;
        check_link(inv, &conf, &prev, &master, &mut pod)
    }

    fn gc(&self, inv: &Invocation) -> Result<(), Error> {
        delegate(inv, Command::Gc)
    }

    fn status(&self, inv: &Invocation) -> Result<(), Error> {
        delegate(inv, Command::Status)
    }
}

/// Removes the attachment's link from the pod, if the pod's netns still exists.
fn remove_pod_link(inv: &Invocation) -> Result<(), Error> {
    let Some(netns) = NetNs::open_if_exists(&inv.env.netns)? else {
        return Ok(());
    };
    let mut pod = Netlink::open_in(&netns)?;
    remove_link(&mut pod, &inv.env.ifname)
}

/// GC and STATUS concern only the IPAM plugin's state.
fn delegate(inv: &Invocation, command: Command) -> Result<(), Error> {
    match MacvlanConf::parse(inv)?.ipam {
        Some(plugin) => ipam::run(&inv.env, &plugin, command, &inv.stdin),
        None => Ok(()),
    }
}

/// The master must exist and be up, and must carry the MTU we ask for.
fn usable_master(host: &mut Netlink, conf: &MacvlanConf) -> Result<Link, Error> {
    let master = host
        .link(&conf.master)?
        .ok_or_else(|| Error::MasterUnusable {
            master: conf.master.clone(),
            reason: "does not exist in the host netns: check the config's master against `ip link`"
                .into(),
        })?;
    if !master.up {
        return Err(Error::MasterUnusable {
            master: conf.master.clone(),
            reason: "is down: bring it up (`ip link set <master> up`) before attaching pods".into(),
        });
    }
    if let Some(mtu) = conf.mtu.filter(|&mtu| mtu > master.mtu) {
        return Err(Error::MtuAboveMaster {
            mtu,
            master: conf.master.clone(),
            master_mtu: master.mtu,
        });
    }
    Ok(master)
}

fn create_link(
    host: &mut Netlink,
    conf: &MacvlanConf,
    master: u32,
    netns: &NetNs,
    ifname: &str,
) -> Result<(), Error> {
    let spec = NewMacvlan {
        name: ifname,
        master,
        mode: conf.mode,
        mtu: conf.mtu,
        mac: conf.mac,
        netns,
    };
    host.create_macvlan(&spec)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EEXIST) => Error::InterfaceExists {
                ifname: ifname.to_string(),
                netns: netns.path().to_string(),
            },
            _ => Error::netlink(
                format!(
                    "create macvlan {ifname} on {} in {}",
                    conf.master,
                    netns.path()
                ),
                e,
            ),
        })
}

/// IPAM, addresses, link up, routes: everything after the link exists.
fn attach(
    inv: &Invocation,
    conf: &MacvlanConf,
    netns: &NetNs,
    pod: &mut Netlink,
) -> Result<CniResult, Error> {
    let ifname = &inv.env.ifname;
    let link = pod.link(ifname)?.ok_or_else(|| {
        Error::Internal(format!(
            "macvlan {ifname} vanished from {} right after creation",
            netns.path()
        ))
    })?;
    let mut result = match &conf.ipam {
        Some(plugin) => ipam::add(&inv.env, plugin, &inv.stdin)?,
        None => CniResult::default(),
    };
    for ip in &mut result.ips {
        ip.interface = Some(0);
        pod.add_address(link.index, ip.address)?;
    }
    announce_on_up(netns, ifname)?;
    pod.set_up(link.index)?;
    for route in &result.routes {
        // Like the reference plugins: a route without a gateway goes via the IP's gateway.
        let gw = route.gw.or_else(|| {
            result
                .ips
                .iter()
                .find(|ip| ip.address.addr().is_ipv4() == route.dst.addr().is_ipv4())
                .and_then(|ip| ip.gateway)
        });
        pod.add_route(&RouteSpec {
            dst: route.dst,
            gw,
            oif: link.index,
            table: route.table.unwrap_or(MAIN_TABLE),
            src: None,
            priority: route.priority,
            mtu: route.mtu,
            advmss: route.advmss,
        })?;
    }
    result.interfaces = vec![Interface {
        name: ifname.clone(),
        mac: format_mac(&link.mac),
        mtu: Some(link.mtu),
        sandbox: netns.path().to_string(),
        ..Default::default()
    }];
    log_info!(
        "ADD {} {ifname}: macvlan on {} mode {} mtu {} ips {:?}",
        inv.env.container_id,
        conf.master,
        mode_name(conf.mode),
        link.mtu,
        result
            .ips
            .iter()
            .map(|i| i.address.to_string())
            .collect::<Vec<_>>()
    );
    Ok(result)
}

/// `arp_notify` makes the kernel send a gratuitous ARP for the link's addresses when it comes
/// up, so neighbours forget a previous owner's MAC at once (and no packet socket is needed).
fn announce_on_up(netns: &NetNs, ifname: &str) -> Result<(), Error> {
    netns.run(|| {
        let path = format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify");
        std::fs::write(&path, "1").map_err(|e| Error::io(format!("set {path}"), e))
    })
}

/// Rolls back a failed ADD: release the IPs (a no-op if none were taken) and remove the link.
fn undo_add(inv: &Invocation, conf: &MacvlanConf, pod: &mut Netlink) {
    if let Some(plugin) = &conf.ipam {
        if let Err(e) = ipam::run(&inv.env, plugin, Command::Del, &inv.stdin) {
            log_warn!(
                "rollback of {}: IPAM release failed: {e}",
                inv.env.container_id
            );
        }
    }
    if let Err(e) = remove_link(pod, &inv.env.ifname) {
        log_warn!("rollback of {}: {e}", inv.env.container_id);
    }
}

/// Removes our macvlan by name; nothing there, or a link that is not a macvlan, is left alone.
fn remove_link(pod: &mut Netlink, ifname: &str) -> Result<(), Error> {
    match pod.link(ifname)? {
        Some(link) if link.kind == Some(InfoKind::MacVlan) => pod.delete_link(link.index),
        Some(_) => {
            log_warn!("DEL: {ifname} is not a macvlan, leaving it alone");
            Ok(())
        }
        None => Ok(()),
    }
}

fn prev_result(inv: &Invocation) -> Result<CniResult, Error> {
    inv.prev_result()?.ok_or_else(|| {
        Error::InvalidConfig(
            "field prevResult is required for CHECK: the runtime must pass the ADD result".into(),
        )
    })
}

/// CHECK: the link is still the macvlan ADD made, with the mode, MTU, MAC and addresses it promised.
fn check_link(
    inv: &Invocation,
    conf: &MacvlanConf,
    prev: &CniResult,
    master: &Link,
    pod: &mut Netlink,
) -> Result<(), Error> {
    let ifname = &inv.env.ifname;
    let fail = |what: String| {
        Err(Error::CheckFailed(format!(
            "{ifname} in {}: {what}",
            inv.env.netns
        )))
    };
    let Some(link) = pod.link(ifname)? else {
        return fail("the interface does not exist".into());
    };
    if link.kind != Some(InfoKind::MacVlan) {
        return fail(format!("is a {:?} link, not a macvlan", link.kind));
    }
    if link.macvlan_mode != Some(conf.mode) {
        return fail(format!(
            "mode is {}, the config says {}",
            link.macvlan_mode.map_or("unknown", mode_name),
            mode_name(conf.mode)
        ));
    }
    let want_mtu = conf.mtu.unwrap_or(master.mtu);
    if link.mtu != want_mtu {
        return fail(format!("mtu is {}, expected {want_mtu}", link.mtu));
    }
    let Some(index) = prev.interfaces.iter().position(|i| &i.name == ifname) else {
        return fail("prevResult lists no such interface".into());
    };
    let promised = &prev.interfaces[index];
    if !promised.mac.is_empty() && !promised.mac.eq_ignore_ascii_case(&format_mac(&link.mac)) {
        return fail(format!(
            "mac is {}, ADD returned {}",
            format_mac(&link.mac),
            promised.mac
        ));
    }
    let have = pod.addresses(link.index)?;
    for ip in prev.ips.iter().filter(|ip| ip.interface == Some(index)) {
        if !have.contains(&ip.address) {
            return fail(format!("address {} is missing", ip.address));
        }
    }
    Ok(())
}

fn main() {
    cni::skel::run(&Macvlan)
}
