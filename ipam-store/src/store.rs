//! Where allocations live: the node-local file store (the default) or etcd, shared by every
//! node. The IPAM config's `store` object picks one; both offer the same operations with the
//! same guarantees, so the plugin and `spiderctl` do not care which they hold.

use std::net::IpAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[cfg(feature = "etcd")]
use crate::blocks::BlockStore;
use crate::error::StoreError;
#[cfg(feature = "etcd")]
use crate::etcd::EtcdStore;
use crate::file_store::FileStore;
use crate::pool::Pool;
use crate::record::{Owner, Record};

pub const DEFAULT_ETCD_PREFIX: &str = "/spiderpool";
pub const DEFAULT_ETCD_TIMEOUT_MS: u64 = 3000;
/// Block mode: how long a node goes on allocating from its blocks without reaching etcd.
pub const DEFAULT_OFFLINE_S: u64 = 3600;
/// Block mode: a gc pass returns an empty block leased longer ago than this.
pub const DEFAULT_RETURN_AFTER_S: u64 = 300;
const MAX_OFFLINE_S: u64 = 7 * 24 * 3600;
const BLOCK_SIZES: std::ops::RangeInclusive<u32> = 4..=1024;
/// Kubelet gives a whole CNI ADD a few minutes at most; a store that needs more is down.
const MAX_ETCD_TIMEOUT_MS: u64 = 60_000;

/// The IPAM config's `store` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StoreConfig {
    /// Files under the IPAM config's `data_dir`, on this node.
    #[default]
    File,
    /// etcd v3: one store for every node, pools included.
    Etcd(EtcdConfig),
}

/// How to reach etcd. TLS is used when the endpoints are `https://`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// `http://host:port` or `https://host:port`, any member of the cluster.
    pub endpoints: Vec<String>,
    /// Every key the store writes starts with it.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The budget of one store operation (an allocation is a few requests), in ms.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM CA bundle that signed the members' certificates (https endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for members started with --client-cert-auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Block mode when not 0: the node leases blocks of this many addresses and allocates in
    /// them in its local store (the IPAM config's `data_dir`), without etcd per ADD.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub block_size: u32,
    /// Block mode: how long the node goes on allocating from its blocks without reaching
    /// etcd; `spiderctl gc --dead-node` waits at least this long.
    #[serde(
        default = "default_offline_s",
        skip_serializing_if = "is_default_offline"
    )]
    pub offline_s: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_offline_s() -> u64 {
    DEFAULT_OFFLINE_S
}

fn is_default_offline(s: &u64) -> bool {
    *s == DEFAULT_OFFLINE_S
}

fn default_prefix() -> String {
    DEFAULT_ETCD_PREFIX.into()
}

fn default_timeout_ms() -> u64 {
    DEFAULT_ETCD_TIMEOUT_MS
}

impl EtcdConfig {
    /// A config for `endpoints` with every other key at its default, as serde fills them.
    pub fn new(endpoints: Vec<String>) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: default_prefix(),
            timeout_ms: default_timeout_ms(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            block_size: 0,
            offline_s: default_offline_s(),
        }
    }

    /// Checks what serde cannot; the message names the field (under `store.`) and the fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err(
                "store.endpoints is empty: list at least one etcd member, e.g. \
                 [\"http://127.0.0.1:2379\"]"
                    .into(),
            );
        }
        let mut schemes = Vec::new();
        for endpoint in &self.endpoints {
            let scheme = endpoint_scheme(endpoint).ok_or_else(|| {
                format!(
                    "store.endpoints: {endpoint:?} is not an etcd endpoint: write \
                     http://host:port or https://host:port"
                )
            })?;
            if !schemes.contains(&scheme) {
                schemes.push(scheme);
            }
        }
        let tls =
            match schemes.as_slice() {
                ["https"] => true,
                ["http"] => false,
                _ => return Err(
                    "store.endpoints mixes http:// and https://: one cluster speaks one of them"
                        .into(),
                ),
            };
        if tls && self.ca_file.is_none() {
            return Err(
                "store.ca_file is required with https:// endpoints: the PEM CA that \
                        signed the etcd members' certificates"
                    .into(),
            );
        }
        if !tls && (self.ca_file.is_some() || self.cert_file.is_some()) {
            return Err(
                "store.ca_file / cert_file are set but the endpoints are http://: \
                        write https:// endpoints or drop the TLS files"
                    .into(),
            );
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(
                "store.cert_file and store.key_file go together: set both or neither".into(),
            );
        }
        let prefix_ok = self.prefix.len() > 1
            && self.prefix.starts_with('/')
            && !self.prefix.ends_with('/')
            && self.prefix.bytes().all(|b| b.is_ascii_graphic());
        if !prefix_ok {
            return Err(format!(
                "store.prefix {:?} is not a key prefix: write a path such as {DEFAULT_ETCD_PREFIX} \
                 (starts with '/', no trailing '/', no spaces)",
                self.prefix
            ));
        }
        if self.block_size != 0
            && !(BLOCK_SIZES.contains(&self.block_size) && self.block_size.is_power_of_two())
        {
            return Err(format!(
                "store.block_size {} is not a block size: write a power of two from {} to {} \
                 (e.g. 16), or 0 for per-address mode",
                self.block_size,
                BLOCK_SIZES.start(),
                BLOCK_SIZES.end()
            ));
        }
        if !(1..=MAX_OFFLINE_S).contains(&self.offline_s) {
            return Err(format!(
                "store.offline_s {} is out of range: write 1 to {MAX_OFFLINE_S} (default \
                 {DEFAULT_OFFLINE_S})",
                self.offline_s
            ));
        }
        if !(1..=MAX_ETCD_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(format!(
                "store.timeout_ms {} is out of range: write 1 to {MAX_ETCD_TIMEOUT_MS} (default \
                 {DEFAULT_ETCD_TIMEOUT_MS})",
                self.timeout_ms
            ));
        }
        Ok(())
    }
}

/// `http` or `https` for `scheme://host:port[/]`, else `None`.
fn endpoint_scheme(endpoint: &str) -> Option<&'static str> {
    let (scheme, rest) = endpoint.split_once("://")?;
    let scheme = ["http", "https"].into_iter().find(|s| *s == scheme)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':')?;
    let valid = !host.is_empty()
        && !authority.contains(['/', '@', '?', '#'])
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    valid.then_some(scheme)
}

/// An attachment and the addresses it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// `(pool, ip)`, each confirmed by the pool's record.
    pub addresses: Vec<(String, IpAddr)>,
}

/// What every store offers, with the same guarantees; see [`FileStore`] and `EtcdStore`
/// (feature `etcd`) for how each keeps them.
pub trait Allocations {
    /// Gives `owner` an address from `pool` in `network`, or the one it already has there: a
    /// repeated ADD for the same (network, container id, ifname) gets the same address.
    fn allocate(&self, pool: &Pool, network: &str, owner: &Owner) -> Result<IpAddr, StoreError>;

    /// Gives `owner` exactly `ip` of `pool` in `network` (a static request), with the same
    /// guarantees as [`Allocations::allocate`]: never to two attachments, and a repeated ADD
    /// that asks for it again gets it again. Refused ([`StoreError::Refused`]) when `ip` is not
    /// one of the pool's addresses, another attachment holds it, or `owner` holds another
    /// address of the pool; a disabled pool is [`StoreError::Disabled`] unless `owner` holds
    /// `ip` already. A refusal changes nothing.
    fn allocate_exact(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        ip: IpAddr,
    ) -> Result<IpAddr, StoreError>;

    /// Releases everything `(network, container_id, ifname)` holds; returns `(pool, ip)` of
    /// each released address. Releasing what is not held is not an error.
    fn release(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError>;

    /// What `(network, container id, ifname)` holds, as `(pool, ip)` confirmed by the
    /// pools' records.
    fn held_by(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError>;

    /// Releases every allocation of `network` whose attachment `keep(container id, ifname)`
    /// rejects, and repairs what crashes left; returns the released records. On a shared
    /// store only this node's allocations are judged: `keep` knows only this node's
    /// attachments.
    fn gc(
        &self,
        network: &str,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<Record>, StoreError>;

    /// Block mode's upkeep (shares blocks other nodes asked for, returns blocks empty and
    /// leased longer than `return_after_s` ago); nothing for the other stores. For gc passes.
    fn upkeep(&self, return_after_s: u64) -> Result<(), StoreError> {
        let _ = return_after_s;
        Ok(())
    }

    /// The records of the allocations this node judges (what gc looks at): every record of
    /// a node-local store; on etcd, this node's, read through its index.
    fn node_records(&self) -> Result<Vec<Record>, StoreError>;

    /// The addresses held in `pool`, with their records, in address order.
    fn held(&self, pool: &str) -> Result<Vec<(IpAddr, Record)>, StoreError>;

    /// How many addresses of `pool` are held (every node's).
    fn held_count(&self, pool: &str) -> Result<u64, StoreError> {
        Ok(self.held(pool)?.len() as u64)
    }

    /// The names of the pools that have state in the store.
    fn pools(&self) -> Result<Vec<String>, StoreError>;

    /// The attachments of `network` that hold addresses, confirmed by the records.
    fn attachments(&self, network: &str) -> Result<Vec<Attachment>, StoreError>;

    /// For CNI STATUS: whether the store can take an allocation now.
    fn check_ready(&self) -> Result<(), StoreError>;

    /// The store in words, for messages: `file store DIR` or `etcd ENDPOINTS (prefix P)`.
    fn describe(&self) -> String;
}

/// A store that every node shares and that also keeps the pool manifests (etcd), so every
/// node allocates from the same definitions.
pub trait PoolStore: Allocations {
    /// The SpiderIPPool manifests, as `(source name, YAML text)`.
    fn manifests(&self) -> Result<Vec<(String, String)>, StoreError>;
}

/// One of the stores, for callers that need to know which (spiderctl); the operations are
/// [`Allocations`], reached through `Deref`.
pub enum Store {
    File(FileStore),
    /// Boxed: the client and its runtime are large, and only one store is opened per run.
    #[cfg(feature = "etcd")]
    Etcd(Box<EtcdStore>),
    /// etcd in block mode (`store.block_size` > 0), with this node's local store.
    #[cfg(feature = "etcd")]
    Blocks(Box<BlockStore>),
}

impl Store {
    /// Opens the store `config` names. `data_dir` is the file store's; `node` is this node's
    /// name, recorded with each allocation and used by gc on a shared store.
    pub fn open(
        config: &StoreConfig,
        data_dir: &Path,
        node: Option<String>,
    ) -> Result<Store, StoreError> {
        Store::open_with(config, data_dir, node, false)
    }

    /// As [`Store::open`], but creating nothing: a missing file store is an error (see
    /// [`FileStore::open_existing`]).
    pub fn open_existing(
        config: &StoreConfig,
        data_dir: &Path,
        node: Option<String>,
    ) -> Result<Store, StoreError> {
        Store::open_with(config, data_dir, node, true)
    }

    fn open_with(
        config: &StoreConfig,
        data_dir: &Path,
        node: Option<String>,
        existing: bool,
    ) -> Result<Store, StoreError> {
        Ok(match config {
            StoreConfig::File if existing => Store::File(FileStore::open_existing(data_dir)?),
            StoreConfig::File => Store::File(FileStore::open(data_dir)?),
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(etcd) if etcd.block_size > 0 && existing => {
                Store::Blocks(Box::new(BlockStore::open_existing(etcd, data_dir, node)?))
            }
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(etcd) if etcd.block_size > 0 => {
                Store::Blocks(Box::new(BlockStore::open(etcd, data_dir, node)?))
            }
            #[cfg(feature = "etcd")]
            StoreConfig::Etcd(etcd) => Store::Etcd(Box::new(EtcdStore::open(etcd, node)?)),
            #[cfg(not(feature = "etcd"))]
            StoreConfig::Etcd(etcd) => {
                let _ = (node, data_dir);
                return Err(StoreError::Etcd {
                    endpoints: etcd.endpoints.join(","),
                    op: "connect to",
                    reason: "this build has no etcd client (build ipam-store with the `etcd` \
                             feature)"
                        .into(),
                });
            }
        })
    }
}

impl Store {
    /// The etcd store beneath (per-address or block mode), which also keeps the manifests;
    /// `None` for the file store.
    pub fn shared(&self) -> Result<Option<&dyn PoolStore>, StoreError> {
        match self {
            Store::File(_) => Ok(None),
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => Ok(Some(s.as_ref())),
            #[cfg(feature = "etcd")]
            Store::Blocks(s) => Ok(Some(s.shared()?)),
        }
    }

    /// The etcd store beneath, to write manifests to.
    #[cfg(feature = "etcd")]
    pub fn etcd(&self) -> Result<Option<&EtcdStore>, StoreError> {
        match self {
            Store::File(_) => Ok(None),
            Store::Etcd(s) => Ok(Some(s)),
            Store::Blocks(s) => Ok(Some(s.shared()?)),
        }
    }
}

impl Deref for Store {
    type Target = dyn Allocations;

    fn deref(&self) -> &(dyn Allocations + 'static) {
        match self {
            Store::File(s) => s,
            #[cfg(feature = "etcd")]
            Store::Etcd(s) => s.as_ref(),
            #[cfg(feature = "etcd")]
            Store::Blocks(s) => s.as_ref(),
        }
    }
}

/// This node's name: `SPIDERPOOL_NODE_NAME` (as spiderpool's agent reads it), else the host
/// name, which is the Kubernetes node name unless kubelet was told otherwise.
pub fn this_node() -> Option<String> {
    let from_env = std::env::var("SPIDERPOOL_NODE_NAME").ok();
    let name = from_env.or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(json: &str) -> Result<EtcdConfig, String> {
        let config: StoreConfig = serde_json::from_str(json).map_err(|e| e.to_string())?;
        match config {
            StoreConfig::Etcd(etcd) => etcd.validate().map(|()| etcd),
            StoreConfig::File => Err("file".into()),
        }
    }

    #[test]
    fn defaults_and_file() {
        let config = etcd(r#"{"type":"etcd","endpoints":["http://127.0.0.1:2379"]}"#).unwrap();
        assert_eq!(config.prefix, DEFAULT_ETCD_PREFIX);
        assert_eq!(config.timeout_ms, DEFAULT_ETCD_TIMEOUT_MS);
        let file: StoreConfig = serde_json::from_str(r#"{"type":"file"}"#).unwrap();
        assert_eq!(file, StoreConfig::File);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (
                r#"{"type":"etcd","endpoints":[]}"#,
                "store.endpoints is empty",
            ),
            (
                r#"{"type":"etcd","endpoints":["127.0.0.1:2379"]}"#,
                "\"127.0.0.1:2379\"",
            ),
            (
                r#"{"type":"etcd","endpoints":["http://h:0"]}"#,
                "http://h:0",
            ),
            (
                r#"{"type":"etcd","endpoints":["http://h:1/v3"]}"#,
                "http://h:1/v3",
            ),
            (
                r#"{"type":"etcd","endpoints":["http://a:1","https://b:1"]}"#,
                "mixes",
            ),
            (
                r#"{"type":"etcd","endpoints":["https://a:1"]}"#,
                "store.ca_file",
            ),
            (
                r#"{"type":"etcd","endpoints":["https://a:1"],"ca_file":"c","cert_file":"x"}"#,
                "store.key_file",
            ),
            (
                r#"{"type":"etcd","endpoints":["http://a:1"],"prefix":"/x/"}"#,
                "store.prefix \"/x/\"",
            ),
            (
                r#"{"type":"etcd","endpoints":["http://a:1"],"timeout_ms":0}"#,
                "store.timeout_ms 0",
            ),
            (
                r#"{"type":"etcd","endpoints":["http://a:1"],"block_size":12}"#,
                "store.block_size 12",
            ),
            (
                r#"{"type":"etcd","endpoints":["http://a:1"],"block_size":2048}"#,
                "store.block_size 2048",
            ),
            (
                r#"{"type":"etcd","endpoints":["http://a:1"],"offline_s":0}"#,
                "store.offline_s 0",
            ),
            (r#"{"type":"etcd","endpoint":["http://a:1"]}"#, "endpoint"),
            (r#"{"type":"consul"}"#, "consul"),
        ];
        for (json, fragment) in cases {
            let err = etcd(json).unwrap_err();
            assert!(err.contains(fragment), "{json}: {err}");
        }
        etcd(r#"{"type":"etcd","endpoints":["https://a:1"],"ca_file":"c","cert_file":"x","key_file":"y"}"#)
            .unwrap();
    }

    #[test]
    fn the_config_round_trips_as_rendered() {
        for json in [
            r#"{"type":"etcd","endpoints":["http://10.0.0.1:2379"],"prefix":"/p","timeout_ms":500}"#,
            r#"{"type":"etcd","endpoints":["http://10.0.0.1:2379"],"prefix":"/p","timeout_ms":500,"block_size":16,"offline_s":60}"#,
        ] {
            let config: StoreConfig = serde_json::from_str(json).unwrap();
            assert_eq!(serde_json::to_string(&config).unwrap(), json);
        }
    }
}
