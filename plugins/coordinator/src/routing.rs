//! Per-NIC policy routing: for a NIC that does not own the pod's main default route, a table
//! of its own (its subnet with `src`, and `default via <gateway>`), a rule
//! `from <ip> lookup <table>`, and its default route taken out of the main table. Replies then
//! leave by the NIC they belong to, even when every NIC's subnet is the same /16.
//!
//! Table numbers and rule priorities come from the NIC's name alone, so they are the same
//! whatever order the chains run in and never depend on the pod's state: `netN` (Multus's
//! names) gets table 100 + N; any other name a hashed table above 2000.

use std::net::IpAddr;

use cni::netlink::{Family, Netlink, RouteEntry, RouteSpec, Rule, MAIN_TABLE};
use cni::Error;
use ipnet::IpNet;

const NET_TABLE_BASE: u32 = 100;
const HASHED_TABLE_BASE: u32 = 2000;
const HASHED_TABLES: u32 = 10_000;
/// Below `from all lookup main` (32766), above what `ip rule add` picks by default.
const PRIORITY_BASE: u32 = 20_000;

/// The table of NIC `ifname`.
pub fn table_for(ifname: &str) -> u32 {
    let number = ifname
        .strip_prefix("net")
        .filter(|digits| is_canonical_number(digits))
        .and_then(|digits| digits.parse::<u32>().ok());
    match number {
        Some(n) if n < HASHED_TABLE_BASE - NET_TABLE_BASE => NET_TABLE_BASE + n,
        _ => HASHED_TABLE_BASE + fnv1a(ifname.as_bytes()) % HASHED_TABLES,
    }
}

/// Digits only, no leading zero: `net01` must not take `net1`'s table.
fn is_canonical_number(digits: &str) -> bool {
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
}

/// The priority of the rules pointing at `table`: one per table, so order never depends on
/// which chain ran first.
pub fn priority_for(table: u32) -> u32 {
    PRIORITY_BASE + table
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// One address of the NIC and its gateway, from `prevResult`.
#[derive(Debug, Clone, Copy)]
pub struct NicAddress {
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// What this NIC's table must hold for `a`.
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

fn default_route(gw: IpAddr, oif: u32, table: u32) -> RouteSpec {
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

/// Installs the NIC's table and rules, then takes its default routes out of main. On failure
/// everything installed here is removed again.
pub fn install(
    nl: &mut Netlink,
    ifname: &str,
    oif: u32,
    addresses: &[NicAddress],
) -> Result<(), Error> {
    let table = table_for(ifname);
    refuse_foreign_rules(nl, ifname, table, addresses)?;
    let installed = (|| {
        for a in addresses {
            for route in table_routes(a, oif, table) {
                nl.add_route(&route)?;
            }
            nl.add_rule(&rule(a, table))?;
        }
        for family in families(addresses) {
            for route in nl.routes(family, MAIN_TABLE)? {
                if route.oif == Some(oif) && route.dst.prefix_len() == 0 {
                    nl.delete_route(&route)?;
                }
            }
        }
        Ok(())
    })();
    if installed.is_err() {
        // Best effort: the error being returned is the one that matters.
        let _ = remove(nl, ifname);
    }
    installed
}

/// Removes every rule pointing at the NIC's table and every route in it: exactly what
/// `install` made for this NIC, nothing of another's.
pub fn remove(nl: &mut Netlink, ifname: &str) -> Result<(), Error> {
    let table = table_for(ifname);
    for family in [Family::V4, Family::V6] {
        for r in nl.rules(family)?.into_iter().filter(|r| r.table == table) {
            nl.delete_rule(&r)?;
        }
        for route in nl.routes(family, table)? {
            nl.delete_route(&route)?;
        }
    }
    Ok(())
}

/// CHECK: the rules and the table are there and point where they should.
pub fn verify(
    nl: &mut Netlink,
    ifname: &str,
    oif: u32,
    addresses: &[NicAddress],
) -> Result<(), String> {
    let table = table_for(ifname);
    for a in addresses {
        let family = Family::of(a.address.addr());
        let want = rule(a, table);
        let rules = nl.rules(family).map_err(|e| e.to_string())?;
        if !rules.contains(&want) {
            return Err(format!(
                "rule {}: from {} lookup {} is missing",
                want.priority, want.src, want.table
            ));
        }
        let have = nl.routes(family, table).map_err(|e| e.to_string())?;
        for route in table_routes(a, oif, table) {
            let present = have
                .iter()
                .any(|r| r.dst == route.dst && r.gw == route.gw && r.oif == Some(oif));
            if !present {
                let via = route.gw.map(|g| format!(" via {g}")).unwrap_or_default();
                return Err(format!(
                    "table {table} lacks {}{via} dev {ifname}",
                    route.dst
                ));
            }
        }
    }
    Ok(())
}

/// A rule of another source already using our table means two NIC names hash alike.
fn refuse_foreign_rules(
    nl: &mut Netlink,
    ifname: &str,
    table: u32,
    addresses: &[NicAddress],
) -> Result<(), Error> {
    for family in families(addresses) {
        let ours: Vec<IpAddr> = addresses.iter().map(|a| a.address.addr()).collect();
        if let Some(other) = nl
            .rules(family)?
            .into_iter()
            .find(|r| r.table == table && !ours.contains(&r.src.addr()))
        {
            return Err(Error::InvalidConfig(format!(
                "table {table} of {ifname} is already used by the rule from {} (another NIC of \
                 this pod whose name maps to the same table): name the pod's NICs net1, net2...",
                other.src
            )));
        }
    }
    Ok(())
}

fn families(addresses: &[NicAddress]) -> Vec<Family> {
    let mut families: Vec<Family> = addresses
        .iter()
        .map(|a| Family::of(a.address.addr()))
        .collect();
    families.dedup();
    families
}

/// The main table's default routes of `family` that leave by another NIC than `oif`.
pub fn main_default_elsewhere(nl: &mut Netlink, family: Family, oif: u32) -> Result<bool, Error> {
    Ok(nl
        .routes(family, MAIN_TABLE)?
        .iter()
        .any(|r: &RouteEntry| r.dst.prefix_len() == 0 && r.oif.is_some_and(|o| o != oif)))
}

/// For the NIC that owns the main default route: `default via <gateway>` in main, unless one
/// is there already (IPAM results carry a gateway, not a route).
pub fn ensure_main_default(
    nl: &mut Netlink,
    oif: u32,
    addresses: &[NicAddress],
) -> Result<(), Error> {
    for a in addresses {
        let Some(gw) = a.gateway else { continue };
        let has_default = nl
            .routes(Family::of(gw), MAIN_TABLE)?
            .iter()
            .any(|r| r.dst.prefix_len() == 0);
        if !has_default {
            nl.add_route(&default_route(gw, oif, MAIN_TABLE))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multus_names_get_100_plus_n_and_others_a_hashed_table() {
        assert_eq!(table_for("net1"), 101);
        assert_eq!(table_for("net8"), 108);
        assert_eq!(table_for("net0"), 100);
        // "net01" is not "net1": it must not share its table.
        assert_ne!(table_for("net01"), table_for("net1"));
        for name in ["eth1", "rdma0", "net01", "netx"] {
            let t = table_for(name);
            assert!(
                (HASHED_TABLE_BASE..HASHED_TABLE_BASE + HASHED_TABLES).contains(&t),
                "{name}: {t}"
            );
        }
        assert_eq!(table_for("eth1"), table_for("eth1"));
    }

    #[test]
    fn priorities_stay_below_the_main_rule() {
        assert!(priority_for(HASHED_TABLE_BASE + HASHED_TABLES - 1) < 32_766);
        assert_eq!(priority_for(101), 20_101);
    }
}
