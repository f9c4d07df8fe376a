//! The macvlan CNI plugin: one macvlan per attachment on a host NIC, addressed by a
//! delegated IPAM plugin. A failed ADD leaves nothing behind.

mod config;

use cni::ipam::Ipam;
use cni::netlink::{format_mac, Link, Netlink, NewMacvlan, RouteSpec, MAIN_TABLE};
use cni::netns::NetNs;
use cni::types::{CniResult, Interface};
use cni::{log_info, log_warn, Command, Error, Invocation, Plugin};
use netlink_packet_route::link::InfoKind;

use config::{mode_name, MacvlanConf};

struct Macvlan;

impl Plugin for Macvlan {
    fn add(&self, inv: &Invocation) -> Result<CniResult, Error> {
        let conf = MacvlanConf::parse(inv)?;
        // Everything that can fail without a link is done first: the IPAM plugin is found,
        // and both netlink sockets are open, so that a failure after the link exists is one
        // that the rollback below (which needs the pod's socket) can undo.
        let ipam = find_ipam(&conf, inv)?;
        let netns = NetNs::open(&inv.env.netns)?;
        let mut host = Netlink::open()?;
        let mut pod = Netlink::open_in(&netns)?;
        let master = usable_master(&mut host, &conf)?;
        create_link(&mut host, &conf, master.index, &netns, &inv.env.ifname)?;

        // The link exists from here on: any failure must remove it and release the IPs.
        let attached = attach(inv, &conf, ipam.as_ref(), &netns, &mut pod);
        if attached.is_err() {
            undo_add(inv, ipam.as_ref(), &mut pod);
        }
        attached
    }

    fn del(&self, inv: &Invocation) -> Result<(), Error> {
        let conf = MacvlanConf::parse(inv)?;
        // Release always, even when the netns is gone: the IPs must come back. The IPAM
        // plugin runs while the link is removed, which mostly waits on the kernel (RCU).
        let ipam = find_ipam(&conf, inv)?;
        let release = match &ipam {
            Some(ipam) => Some(ipam.start(Command::Del, &inv.stdin)?),
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
        if let Some(ipam) = find_ipam(&conf, inv)? {
            ipam.run(Command::Check, &inv.stdin)?;
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
    let Some(netns) = NetNs::open_if_live(&inv.env.netns)? else {
        return Ok(());
    };
    let mut pod = Netlink::open_in(&netns)?;
    remove_link(&mut pod, &inv.env.ifname)
}

/// GC and STATUS concern only the IPAM plugin's state.
fn delegate(inv: &Invocation, command: Command) -> Result<(), Error> {
    match find_ipam(&MacvlanConf::parse(inv)?, inv)? {
        Some(ipam) => ipam.run(command, &inv.stdin),
        None => Ok(()),
    }
}

/// The config's IPAM plugin on CNI_PATH; None for a layer-2-only interface.
fn find_ipam(conf: &MacvlanConf, inv: &Invocation) -> Result<Option<Ipam>, Error> {
    conf.ipam
        .as_deref()
        .map(|name| Ipam::find(name, &inv.env.path))
        .transpose()
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
        bc_queue_len: conf.bc_queue_len,
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
                    "create macvlan {ifname} on {} in {}{}",
                    conf.master,
                    netns.path(),
                    conf.bc_queue_len
                        .map(|len| format!(" with bcqueuelen {len}"))
                        .unwrap_or_default()
                ),
                e,
            ),
        })
}

/// IPAM, addresses, link up, routes: everything after the link exists.
fn attach(
    inv: &Invocation,
    conf: &MacvlanConf,
    ipam: Option<&Ipam>,
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
    check_bc_queue_len(conf, &link)?;
    let mut result = match ipam {
        Some(ipam) => ipam.add(&inv.stdin)?,
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
    // As the reference plugin: the config's `dns` is the result's (when it says anything;
    // otherwise what the IPAM plugin returned stays).
    if !conf.dns.is_empty() {
        result.dns = conf.dns.clone();
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

/// A kernel that does not know `IFLA_MACVLAN_BC_QUEUE_LEN` (before 5.11) ignores it rather
/// than refusing it: the length is read back, so that the ADD fails instead of quietly
/// running with the default.
fn check_bc_queue_len(conf: &MacvlanConf, link: &Link) -> Result<(), Error> {
    let Some(asked) = conf.bc_queue_len else {
        return Ok(());
    };
    match link.macvlan_bc_queue_len {
        Some(got) if got == asked => Ok(()),
        got => Err(Error::UnsupportedField {
            field: "bcqueuelen".into(),
            reason: format!(
                "{asked} was asked but the kernel reports {}: it does not support the macvlan \
                 broadcast queue length (Linux 5.11 or later does); remove bcqueuelen",
                got.map_or("none".to_owned(), |g| g.to_string())
            ),
        }),
    }
}

/// `arp_notify` and `ndisc_notify` make the kernel announce the link's addresses when it
/// comes up (a gratuitous ARP, an unsolicited neighbour advertisement), so neighbours forget a
/// previous owner's MAC at once (and no packet socket is needed). Without IPv6 in the kernel
/// (`ipv6.disable=1`) there is no `ndisc_notify` to set.
fn announce_on_up(netns: &NetNs, ifname: &str) -> Result<(), Error> {
    netns.run(|| {
        let set = |path: String| {
            std::fs::write(&path, "1").map_err(|e| Error::io(format!("set {path}"), e))
        };
        set(format!("/proc/sys/net/ipv4/conf/{ifname}/arp_notify"))?;
        if std::path::Path::new("/proc/sys/net/ipv6/conf").is_dir() {
            set(format!("/proc/sys/net/ipv6/conf/{ifname}/ndisc_notify"))?;
        }
        Ok(())
    })
}

/// Rolls back a failed ADD: release the IPs (a no-op if none were taken) and remove the link.
fn undo_add(inv: &Invocation, ipam: Option<&Ipam>, pod: &mut Netlink) {
    if let Some(ipam) = ipam {
        if let Err(e) = ipam.run(Command::Del, &inv.stdin) {
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
    if let Some(want) = conf
        .bc_queue_len
        .filter(|&w| link.macvlan_bc_queue_len != Some(w))
    {
        return fail(format!(
            "bcqueuelen is {:?}, the config says {want}",
            link.macvlan_bc_queue_len
        ));
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

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{CniVersion, Env};

    fn conf(stdin: &str) -> MacvlanConf {
        let env = Env::from_lookup(|k| {
            Some(match k {
                "CNI_COMMAND" => "ADD".to_owned(),
                "CNI_CONTAINERID" => "c".into(),
                "CNI_NETNS" => "/run/netns/x".into(),
                "CNI_IFNAME" => "net1".into(),
                "CNI_PATH" => "/opt/cni/bin".into(),
                _ => return None,
            })
        })
        .unwrap();
        MacvlanConf::parse(&Invocation {
            env,
            stdin: stdin.as_bytes().to_vec(),
            version: CniVersion::V1_0_0,
            network: "n".into(),
        })
        .unwrap()
    }

    fn link(bc_queue_len: Option<u32>) -> Link {
        Link {
            index: 2,
            name: "net1".into(),
            mtu: 1500,
            up: false,
            mac: vec![2, 0, 0, 0, 0, 1],
            kind: Some(InfoKind::MacVlan),
            macvlan_mode: Some(netlink_packet_route::link::MacVlanMode::Bridge),
            macvlan_bc_queue_len: bc_queue_len,
            alias: None,
        }
    }

    #[test]
    fn a_bcqueuelen_the_kernel_did_not_apply_fails_the_add() {
        let asked = conf(r#"{"master":"m","bcqueuelen":2000}"#);
        check_bc_queue_len(&asked, &link(Some(2000))).unwrap();
        // A kernel before 5.11 ignores the attribute and reports none.
        for got in [None, Some(1000)] {
            let err = check_bc_queue_len(&asked, &link(got)).unwrap_err();
            assert_eq!(err.code(), 2, "{err}");
            let msg = err.to_string();
            assert!(msg.contains("bcqueuelen") && msg.contains("2000"), "{msg}");
        }
        // Not asked: whatever the kernel runs with is fine.
        check_bc_queue_len(&conf(r#"{"master":"m"}"#), &link(None)).unwrap();
    }
}
