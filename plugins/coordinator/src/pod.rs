//! What the pod's routing looks like now: its links, addresses, rules and routes, read in one
//! go while the pod's lock is held, and what follows from them about the NICs the coordinator
//! has set up.

use std::net::IpAddr;

use cni::netlink::{Family, Link, Netlink, RouteEntry, Rule};
use cni::Error;
use ipnet::IpNet;

use crate::tables::{priority_for, table_for};

/// The alias a coordinator DEL gives its NIC: on its way out, it no longer counts as one of
/// the pod's NICs. An alias, not setting the link down: bringing a link down waits for an
/// RCU grace period (measured: 12 ms more per DEL, a quarter of the 16-way DEL rate).
pub const LEAVING: &str = "spider-cni: leaving";

pub fn is_leaving(link: &Link) -> bool {
    link.alias.as_deref() == Some(LEAVING)
}

pub struct Pod {
    pub links: Vec<Link>,
    addresses: Vec<(u32, IpNet)>,
    pub rules: Vec<Rule>,
    pub routes: Vec<RouteEntry>,
}

impl Pod {
    pub fn read(nl: &mut Netlink) -> Result<Pod, Error> {
        let mut rules = nl.rules(Family::V4)?;
        rules.extend(nl.rules(Family::V6)?);
        let mut routes = nl.all_routes(Family::V4)?;
        routes.extend(nl.all_routes(Family::V6)?);
        Ok(Pod {
            links: nl.links()?,
            addresses: nl.all_addresses()?,
            rules,
            routes,
        })
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// Whether link `index` holds `ip`.
    pub fn holds(&self, index: u32, ip: IpAddr) -> bool {
        self.addresses
            .iter()
            .any(|(i, a)| *i == index && a.addr() == ip)
    }

    /// The link holding `ip`, if any.
    pub fn holder(&self, ip: IpAddr) -> Option<&Link> {
        let (index, _) = self.addresses.iter().find(|(_, a)| a.addr() == ip)?;
        self.link_by_index(*index)
    }

    /// Whether `link` has been set up by a coordinator: a rule of its table's priority
    /// pointing at its table from one of its addresses.
    pub fn is_coordinated(&self, link: &Link) -> bool {
        let table = table_for(&link.name);
        self.rules.iter().any(|r| {
            r.table == table
                && r.priority == priority_for(table)
                && self.holds(link.index, r.src.addr())
        })
    }

    /// The gateway of a coordinated link in `family`: its table's default route.
    pub fn gateway(&self, link: &Link, family: Family) -> Option<IpAddr> {
        let table = table_for(&link.name);
        self.routes
            .iter()
            .find(|r| {
                r.table == table
                    && r.dst.prefix_len() == 0
                    && r.oif == Some(link.index)
                    && Family::of(r.dst.addr()) == family
            })
            .and_then(|r| r.gw)
    }

    /// The default routes of the main table in `family`.
    pub fn main_defaults(&self, family: Family) -> impl Iterator<Item = &RouteEntry> {
        self.routes.iter().filter(move |r| {
            r.table == cni::netlink::MAIN_TABLE
                && r.dst.prefix_len() == 0
                && Family::of(r.dst.addr()) == family
        })
    }
}
