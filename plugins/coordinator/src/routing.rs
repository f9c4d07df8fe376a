//! One NIC's policy routing: a table of its own (its subnet with `src`, and
//! `default via <gateway>`) and a rule `from <ip> lookup <table>` per address. Every NIC the
//! coordinator handles gets both, the main default route's owner included, so traffic sourced
//! from a NIC's address leaves by that NIC whatever connected routes the other NICs left in
//! the main table (the seed's eight pools share one /16).
//!
//! Only what is ours is ever changed: a table or priority the NIC's name maps to that holds
//! something else is refused, and removal takes exactly this NIC's rules and routes.

use std::net::IpAddr;

use cni::netlink::{Netlink, RouteEntry, RouteSpec, Rule};
use cni::Error;
use ipnet::IpNet;

use crate::pod::Pod;
use crate::tables::{priority_for, table_for};

/// One address of the NIC and its gateway, from `prevResult`.
#[derive(Debug, Clone, Copy)]
pub struct NicAddress {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// The NIC a coordinator runs for.
pub struct Nic<'a> {
    pub name: &'a str,
    pub index: u32,
    pub addresses: &'a [NicAddress],
}

impl Nic<'_> {
    fn table(&self) -> u32 {
        table_for(self.name)
    }

    fn owns_address(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|a| a.address.addr() == ip)
    }
}

/// What the NIC's table must hold for `a`.
fn table_routes(a: &NicAddress, oif: u32, table: u32) -> Vec<RouteSpec> {
    let subnet = RouteSpec {
        dst: a.address.trunc(),
        gw: None,
        oif,
        table,
        src: Some(a.address.addr()),
        priority: None,
        mtu: None,
        advmss: None,
    };
    let default = a.gateway.map(|gw| default_route(gw, oif, table));
    std::iter::once(subnet).chain(default).collect()
}

pub fn default_route(gw: IpAddr, oif: u32, table: u32) -> RouteSpec {
    RouteSpec {
        dst: IpNet::new(unspecified(gw), 0).expect("prefix 0 is valid"),
        gw: Some(gw),
        oif,
        table,
        src: None,
        priority: None,
        mtu: None,
        advmss: None,
    }
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::from([0u8; 4]),
        IpAddr::V6(_) => IpAddr::from([0u16; 8]),
    }
}

fn rule(a: &NicAddress, table: u32) -> Rule {
    let host = IpNet::new(a.address.addr(), a.address.max_prefix_len()).expect("host prefix");
    Rule {
        src: host,
        table,
        priority: priority_for(table),
    }
}

fn same_route(have: &RouteEntry, want: &RouteSpec) -> bool {
    have.table == want.table
        && have.dst == want.dst
        && have.gw == want.gw
        && have.oif == Some(want.oif)
}

fn describe_rule(r: &Rule) -> String {
    format!("{}: from {} lookup {}", r.priority, r.src, r.table)
}

/// Installs the NIC's table and rules (a repeated ADD finds them there). Before any change,
/// refuses a table or priority that something else uses; rules of this table's shape left by
/// an earlier NIC of this name whose address no link holds any more are ours, and go.
pub fn install(nl: &mut Netlink, pod: &Pod, nic: &Nic) -> Result<(), Error> {
    let table = nic.table();
    let priority = priority_for(table);
    let mut stale = Vec::new();
    for r in &pod.rules {
        let ours_shape = r.table == table && r.priority == priority;
        if ours_shape && nic.owns_address(r.src.addr()) {
            continue;
        }
        if ours_shape {
            match pod.holder(r.src.addr()) {
                None => stale.push(r.clone()),
                Some(other) => {
                    return Err(Error::InvalidConfig(format!(
                        "table {table} of {} is already used by the rule from {} of {} (its \
                         name maps to the same table): name the pod's NICs net1, net2...",
                        nic.name, r.src, other.name
                    )))
                }
            }
        } else if r.table == table || r.priority == priority {
            return Err(foreign(nic, &format!("rule {}", describe_rule(r))));
        }
    }
    if let Some(r) = pod
        .routes
        .iter()
        .find(|r| r.table == table && r.oif != Some(nic.index))
    {
        let dev = r
            .oif
            .and_then(|i| pod.link_by_index(i))
            .map(|l| format!(" dev {}", l.name))
            .unwrap_or_default();
        return Err(foreign(
            nic,
            &format!("route {}{dev} in table {table}", r.dst),
        ));
    }

    for r in &stale {
        nl.delete_rule(r)?;
    }
    for a in nic.addresses {
        for route in table_routes(a, nic.index, table) {
            if !pod.routes.iter().any(|have| same_route(have, &route)) {
                nl.add_route(&route)?;
            }
        }
        nl.add_rule(&rule(a, table))?;
    }
    Ok(())
}

fn foreign(nic: &Nic, what: &str) -> Error {
    let table = nic.table();
    Error::InvalidConfig(format!(
        "table {table} and rule priority {} that {} maps to are in use by {what}, which the \
         coordinator did not make: remove it, or give the NIC another name",
        priority_for(table),
        nic.name
    ))
}

/// Removes exactly this NIC's rules (those of its table's shape from its addresses, or from an
/// address no link holds any more) and its routes in its table. `index` is None when the link
/// is already gone (and the kernel took its routes with it).
pub fn remove(nl: &mut Netlink, pod: &Pod, ifname: &str, index: Option<u32>) -> Result<(), Error> {
    let table = table_for(ifname);
    let priority = priority_for(table);
    for r in pod.rules.iter().filter(|r| {
        r.table == table
            && r.priority == priority
            && match pod.holder(r.src.addr()) {
                None => true,
                Some(holder) => Some(holder.index) == index,
            }
    }) {
        nl.delete_rule(r)?;
    }
    if let Some(index) = index {
        for route in pod
            .routes
            .iter()
            .filter(|r| r.table == table && r.oif == Some(index))
        {
            nl.delete_route(route)?;
        }
    }
    Ok(())
}

/// CHECK: the rules and the table are there and point where they should.
pub fn verify(pod: &Pod, nic: &Nic) -> Result<(), String> {
    let table = nic.table();
    for a in nic.addresses {
        let want = rule(a, table);
        if !pod.rules.contains(&want) {
            return Err(format!("rule {} is missing", describe_rule(&want)));
        }
        for route in table_routes(a, nic.index, table) {
            if !pod.routes.iter().any(|have| same_route(have, &route)) {
                let via = route.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(format!(
                    "table {table} lacks {}{via} dev {}",
                    route.dst, nic.name
                ));
            }
        }
    }
    Ok(())
}
