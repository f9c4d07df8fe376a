//! Who owns the pod's main default route, and making the main table say so.
//!
//! The owner follows from the pod's NICs alone, never from the order their chains ran in:
//! `podDefaultRouteNic` when the pod has that NIC, else the cluster NIC `podDefaultCniNic`
//! when the pod has it, else the coordinated NIC whose name sorts first (shorter names first,
//! then bytewise: net1, net2, ..., net10). When the owner is one of ours, the main table holds
//! `default via <its gateway> dev <owner>` and no default via another of our NICs; when it is
//! not (a cluster NIC made by another plugin), main keeps no default via any of ours. Default
//! routes via NICs that are not ours are never touched. NICs marked leaving do not count.

use std::net::IpAddr;

use cni::netlink::{Family, Netlink, MAIN_TABLE};
use cni::{log_info, log_warn, Error};

use crate::config::CoordinatorConf;
use crate::pod::{self, Pod};
use crate::routing::{default_route, Nic};

/// What this invocation changes about the set of coordinated NICs.
#[derive(Clone, Copy)]
pub enum Change<'a> {
    /// ADD or CHECK of this NIC: it counts as coordinated, whatever `pod` says.
    Joining(&'a Nic<'a>),
    /// DEL of the NIC with this index (None: its link is already gone): it no longer counts.
    Leaving(Option<u32>),
}

/// One of our NICs, which may own the main default.
struct Candidate<'a> {
    name: &'a str,
    index: u32,
}

/// The coordinated NICs after `change`.
fn ours<'a>(pod: &'a Pod, change: Change<'a>) -> Vec<Candidate<'a>> {
    let (joining, leaving) = match change {
        Change::Joining(nic) => (Some(nic), None),
        Change::Leaving(index) => (None, index),
    };
    let mut ours: Vec<Candidate> = pod
        .links
        .iter()
        .filter(|l| Some(l.index) != leaving && Some(l.index) != joining.map(|n| n.index))
        .filter(|l| !pod::is_leaving(l) && pod.is_coordinated(l))
        .map(|l| Candidate {
            name: &l.name,
            index: l.index,
        })
        .collect();
    ours.extend(joining.map(|n| Candidate {
        name: n.name,
        index: n.index,
    }));
    ours
}

/// The owner's index (ours or not).
fn owner(pod: &Pod, conf: &CoordinatorConf, change: Change, ours: &[Candidate]) -> Option<u32> {
    let leaving = match change {
        Change::Leaving(index) => index,
        Change::Joining(_) => None,
    };
    // A NIC on its way out (its coordinator DEL done, its link not yet deleted) does not
    // count: it must never be taken for the owner by another NIC's coordinator meanwhile.
    let present = |name: &str| {
        pod.link(name)
            .filter(|l| !pod::is_leaving(l))
            .map(|l| l.index)
            .or_else(|| ours.iter().find(|c| c.name == name).map(|c| c.index))
            .filter(|&i| Some(i) != leaving)
    };
    conf.pod_default_route_nic
        .as_deref()
        .and_then(present)
        .or_else(|| present(&conf.pod_default_cni_nic))
        .or_else(|| {
            ours.iter()
                .min_by_key(|c| (c.name.len(), c.name))
                .map(|c| c.index)
        })
}

/// The gateway of one of our NICs in `family`.
fn gateway(pod: &Pod, change: Change, index: u32, family: Family) -> Option<IpAddr> {
    if let Change::Joining(nic) = change {
        if nic.index == index {
            return nic
                .addresses
                .iter()
                .filter_map(|a| a.gateway)
                .find(|gw| Family::of(*gw) == family);
        }
    }
    pod.gateway(pod.link_by_index(index)?, family)
}

/// The main default route `family` must have: (NIC index, gateway), when the owner is ours
/// and has a gateway in that family.
fn wanted(
    pod: &Pod,
    conf: &CoordinatorConf,
    change: Change,
    ours: &[Candidate],
    family: Family,
) -> Option<(u32, IpAddr)> {
    let index = owner(pod, conf, change, ours)?;
    ours.iter().find(|c| c.index == index)?;
    Some((index, gateway(pod, change, index, family)?))
}

/// Makes the main table's default routes match the owner, per family.
pub fn reconcile(
    nl: &mut Netlink,
    pod: &Pod,
    conf: &CoordinatorConf,
    change: Change,
) -> Result<(), Error> {
    let ours = ours(pod, change);
    let is_ours = |oif: Option<u32>| {
        oif.is_some_and(|o| {
            ours.iter().any(|c| c.index == o)
                || matches!(change, Change::Leaving(Some(i)) if i == o)
        })
    };
    for family in [Family::V4, Family::V6] {
        let want = wanted(pod, conf, change, &ours, family);
        let mut present = false;
        let mut foreign = None;
        for r in pod.main_defaults(family) {
            if want.is_some_and(|(oif, gw)| r.oif == Some(oif) && r.gw == Some(gw)) {
                present = true;
            } else if is_ours(r.oif) {
                nl.delete_route(r)?;
            } else {
                foreign = Some(r);
            }
        }
        let Some((oif, gw)) = want.filter(|_| !present) else {
            continue;
        };
        let name = ours.iter().find(|c| c.index == oif).map_or("?", |c| c.name);
        match foreign {
            Some(other) => log_warn!(
                "main default via {gw} dev {name} not added: the main table already has \
                 default via {:?} (oif {:?}), which is not ours",
                other.gw,
                other.oif
            ),
            None => {
                nl.add_route(&default_route(gw, oif, MAIN_TABLE))?;
                log_info!("main default route: via {gw} dev {name}");
            }
        }
    }
    Ok(())
}

/// CHECK: the main table agrees with the owner as far as `nic` is concerned.
pub fn verify(pod: &Pod, conf: &CoordinatorConf, nic: &Nic) -> Result<(), String> {
    let change = Change::Joining(nic);
    let ours = ours(pod, change);
    let families: Vec<Family> = nic
        .addresses
        .iter()
        .map(|a| Family::of(a.address.addr()))
        .collect();
    for family in [Family::V4, Family::V6] {
        if !families.contains(&family) {
            continue;
        }
        let want = wanted(pod, conf, change, &ours, family).filter(|(oif, _)| *oif == nic.index);
        let via_nic: Vec<Option<IpAddr>> = pod
            .main_defaults(family)
            .filter(|r| r.oif == Some(nic.index))
            .map(|r| r.gw)
            .collect();
        match want {
            Some((_, gw)) if !via_nic.contains(&Some(gw)) => {
                return Err(format!(
                    "{} owns the main default route but main lacks default via {gw}",
                    nic.name
                ))
            }
            None if !via_nic.is_empty() => {
                return Err(format!(
                    "main has a default route via {}, which does not own it",
                    nic.name
                ))
            }
            _ => {}
        }
    }
    Ok(())
}
