//! The etcd key layout, under the configured prefix P:
//!
//! ```text
//! P/ippools/<pool>                                 SpiderIPPool manifest (YAML), from spiderctl apply
//! P/pools/<pool>/ips/<address in hex>              one record per held address: the truth
//! P/attachments/<network>/<container id>:<ifname>  release index: [{pool, ip}]
//!
//! block mode (store.block_size > 0; docs/block-leases.md):
//! P/blocks/<pool>                                  the pool's block size, fixed by its first lease
//! P/blocks/<pool>/<block start in hex>             a block's lease: the truth
//! P/nodes/<node>/blocks/<pool>/<block start>       the same lease, for reads of one node's
//! P/nodes/<node>/heartbeat                         when the node last reached etcd
//!
//! the per-node index (both modes), so one node's gc reads only its own attachments:
//! P/nodes/<node>/attachments/<network>/<cid>:<if>  empty: the node's attachment holds records
//! P/nodes/<node>/indexed                           every attachment of the node is indexed
//! ```
//!
//! Addresses are fixed-width hex (8 digits for IPv4, 32 for IPv6) so that key order is address
//! order: a range read over a pool's records walks its addresses in order, which is how an
//! allocation finds a free one without reading the whole pool.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::record::Key;

pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn manifests(&self) -> String {
        format!("{}/ippools/", self.prefix)
    }

    pub fn manifest(&self, pool: &str) -> String {
        format!("{}{pool}", self.manifests())
    }

    /// Every pool's records.
    pub fn pools(&self) -> String {
        format!("{}/pools/", self.prefix)
    }

    pub fn records(&self, pool: &str) -> String {
        format!("{}{pool}/ips/", self.pools())
    }

    pub fn record(&self, pool: &str, ip: IpAddr) -> String {
        format!("{}{}", self.records(pool), hex(ip))
    }

    pub fn attachments(&self, network: &str) -> String {
        format!("{}/attachments/{network}/", self.prefix)
    }

    pub fn attachment(&self, key: Key<'_>) -> String {
        format!("{}{}", self.attachments(key.network), key.file_name())
    }

    /// The key holding `pool`'s block size.
    pub fn block_size(&self, pool: &str) -> String {
        format!("{}/blocks/{pool}", self.prefix)
    }

    /// Every lease of `pool`.
    pub fn leases(&self, pool: &str) -> String {
        format!("{}/", self.block_size(pool))
    }

    pub fn lease(&self, pool: &str, start: IpAddr) -> String {
        format!("{}{}", self.leases(pool), hex(start))
    }

    /// Everything kept per node.
    pub fn node(&self, node: &str) -> String {
        format!("{}/nodes/{node}/", self.prefix)
    }

    /// The copies of `node`'s leases, of every pool.
    pub fn node_leases(&self, node: &str) -> String {
        format!("{}blocks/", self.node(node))
    }

    pub fn node_lease(&self, node: &str, pool: &str, start: IpAddr) -> String {
        format!("{}{pool}/{}", self.node_leases(node), hex(start))
    }

    /// `node`'s index entries of `network`, or of every network when `None`.
    pub fn node_attachments(&self, node: &str, network: Option<&str>) -> String {
        match network {
            Some(network) => format!("{}attachments/{network}/", self.node(node)),
            None => format!("{}attachments/", self.node(node)),
        }
    }

    pub fn node_attachment(&self, node: &str, key: Key<'_>) -> String {
        format!(
            "{}{}",
            self.node_attachments(node, Some(key.network)),
            key.file_name()
        )
    }

    pub fn indexed(&self, node: &str) -> String {
        format!("{}indexed", self.node(node))
    }

    pub fn heartbeat(&self, node: &str) -> String {
        format!("{}heartbeat", self.node(node))
    }

    /// The pool whose records `key` belongs to (`P/pools/<pool>/ips/...`).
    pub fn pool_of<'k>(&self, key: &'k str) -> Option<&'k str> {
        let rest = key.strip_prefix(&self.pools())?;
        let (pool, _) = rest.split_once("/ips/")?;
        Some(pool)
    }
}

fn hex(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

/// The address a record key ends with, if it is one the store writes.
pub(crate) fn ip_of(key: &str) -> Option<IpAddr> {
    let (_, digits) = key.rsplit_once('/')?;
    if !digits
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return None;
    }
    match digits.len() {
        8 => Some(Ipv4Addr::from(u32::from_str_radix(digits, 16).ok()?).into()),
        32 => Some(Ipv6Addr::from(u128::from_str_radix(digits, 16).ok()?).into()),
        _ => None,
    }
}

/// The end of the range of keys starting with `prefix` (etcd ranges are half-open).
pub(crate) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    // Prefixes here end in '/', never 0xff, so incrementing the last byte is enough.
    *end.last_mut().expect("prefixes are not empty") += 1;
    end
}

/// The first key after `key` in etcd's byte order.
pub(crate) fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_keys_sort_as_addresses_and_parse_back() {
        let keys = Keys::new("/spiderpool");
        let ips: Vec<IpAddr> = [
            "172.16.11.9",
            "172.16.11.10",
            "172.16.12.1",
            "fd00::1",
            "fd00::a",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let mut names: Vec<String> = ips.iter().map(|ip| keys.record("p", *ip)).collect();
        let in_order = names.clone();
        names.sort();
        assert_eq!(names, in_order);
        for (name, ip) in names.iter().zip(&ips) {
            assert_eq!(ip_of(name), Some(*ip));
            assert_eq!(keys.pool_of(name), Some("p"));
        }
        assert_eq!(keys.record("p", ips[0]), "/spiderpool/pools/p/ips/ac100b09");
        assert_eq!(ip_of("/spiderpool/pools/p/ips/AC100B09"), None);
        assert_eq!(ip_of("/spiderpool/pools/p/ips/ac100b0"), None);
    }

    #[test]
    fn ranges_cover_exactly_the_prefix() {
        assert_eq!(prefix_end("/p/pools/"), b"/p/pools0".to_vec());
        assert_eq!(successor(b"/p/a"), b"/p/a\0".to_vec());
    }
}
