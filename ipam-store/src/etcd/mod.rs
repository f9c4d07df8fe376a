//! The etcd store: the same pools shared by every node, each change one transaction.
//!
//! The key layout is in keys.rs. What makes it safe:
//! - an allocation is one transaction that creates the address's record only if it does not
//!   exist (`create_revision == 0`) and rewrites the attachment's entry only if nobody changed
//!   it since it was read (`mod_revision`): two nodes can never both take an address, and the
//!   record and its entry appear together or not at all;
//! - a release deletes the records and the entry in one transaction, guarded the same way;
//! - a transaction whose answer is lost (etcd died, the deadline passed) either happened or
//!   did not: a retried ADD finds what it got, a retried DEL releases it.
//!
//! Finding a free address starts at a random point of the pool (so concurrent allocations
//! pick different addresses) and reads the record keys of a few addresses there, in address
//! order; when those are all held, counts of held keys per window and per slice (which etcd
//! answers from memory) lead to a slice with room: a handful of requests however full the
//! pool is (see `find_free`).

mod conn;
mod keys;
mod leases;

use std::collections::hash_map::RandomState;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::{Compare, CompareOp, GetOptions, KeyValue, KvClient, Txn, TxnOp, TxnOpResponse};
use serde::de::DeserializeOwned;

use crate::attachment::Held;
use crate::error::{Refusal, StoreError};
use crate::names::NameKind;
use crate::pool::Pool;
use crate::record::{check_name, Key, Owner, Record};
use crate::store::{Allocations, Attachment, EtcdConfig, PoolStore};

use conn::Conn;
use keys::{ip_of, prefix_end, successor, Keys};
pub use leases::{BlockLease, DEAD_MARGIN_S};
pub(crate) use leases::{Heartbeat, Lease, LeaseState};

/// An operation gives up after losing this many races in a row. Each lost race means another
/// change succeeded, so the cluster as a whole always makes progress.
const MAX_ATTEMPTS: u32 = 64;
/// Keys read per request when listing a prefix.
const BATCH: i64 = 512;
/// Looking for a free address: addresses whose keys one request reads at most, addresses
/// whose keys one count covers, and counts per request (etcd allows 128 operations in one
/// transaction).
const SLICE: u64 = 16;
const WINDOW: u64 = 256;
const PROBES: u64 = 16;
/// The store writes small values; a bigger one was not written by it.
const MAX_VALUE_BYTES: usize = 64 * 1024;

pub struct EtcdStore {
    conn: Conn,
    keys: Keys,
    /// Written into each record; [`EtcdStore::gc`] judges only this node's allocations.
    node: Option<String>,
}

/// A record and the revision it was read at, for a compare-and-delete.
pub(crate) type Versioned<T> = (T, i64);

/// What else an allocation's transaction checks, besides the address being free.
pub(crate) enum Guard {
    /// Per-address mode: the pool has no blocks (no node leases it in block mode).
    NoBlocks,
    /// A borrow in block mode: the block's lease (key, revision) is still as read, shared.
    Lease(String, i64),
}

impl EtcdStore {
    pub fn open(config: &EtcdConfig, node: Option<String>) -> Result<EtcdStore, StoreError> {
        Ok(EtcdStore {
            conn: Conn::open(config)?,
            keys: Keys::new(&config.prefix),
            node,
        })
    }

    /// Writes pool manifests, `(pool name, YAML text)`, in one transaction, so nodes see all
    /// of them or none; returns, per manifest, whether its stored text changed.
    pub fn put_manifests(&self, manifests: &[(String, String)]) -> Result<Vec<bool>, StoreError> {
        for (name, _) in manifests {
            check_name(NameKind::Pool, name)?;
        }
        self.conn.block(async {
            let mut kv = self.conn.kv();
            for _ in 0..MAX_ATTEMPTS {
                let mut compares = Vec::new();
                let mut puts = Vec::new();
                let mut changed = Vec::new();
                for (name, text) in manifests {
                    let key = self.keys.manifest(name);
                    let current = self.get(&mut kv, &key).await?;
                    let rev = current.as_ref().map_or(0, KeyValue::mod_revision);
                    let differs = current.is_none_or(|kv| kv.value() != text.as_bytes());
                    if differs {
                        compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, rev));
                        puts.push(TxnOp::put(key, text.as_bytes(), None));
                    }
                    changed.push(differs);
                }
                if puts.is_empty() {
                    return Ok(changed);
                }
                let txn = Txn::new().when(compares).and_then(puts);
                if kv
                    .txn(txn)
                    .await
                    .map_err(self.conn.error("write pools to"))?
                    .succeeded()
                {
                    return Ok(changed);
                }
            }
            Err(StoreError::Contended {
                what: "writing pool manifests".into(),
                attempts: MAX_ATTEMPTS,
            })
        })
    }

    /// A free address of `pool`, looked for from index `start` (mod the pool size); `None`
    /// when every address is held.
    ///
    /// etcd reads every key of a range from its backend, even keys-only, but answers a count
    /// from its in-memory index: so the keys read are those of one slice of a few addresses,
    /// found by counting. First the slice at `start` (what an ADD in a pool with room needs),
    /// then windows from there, each answered by a count, then the slices of the first window
    /// with room. Counts may overstate (an excluded address still held counts, a race fills a
    /// slice), never understate, so when they find nothing an exact walk has the last word.
    async fn find_free(
        &self,
        kv: &mut KvClient,
        pool: &Pool,
        start: u64,
    ) -> Result<Option<IpAddr>, StoreError> {
        let size = pool.size();
        if size == 0 {
            return Ok(None);
        }
        let start = start % size;
        if let Some(ip) = self
            .walk(kv, pool, start, (start + SLICE).min(size))
            .await?
        {
            return Ok(Some(ip));
        }
        let windows = size.div_ceil(WINDOW);
        let first = start / WINDOW;
        let span = |unit: u64, i: u64| (i * unit, ((i + 1) * unit).min(size));
        for batch in (0..windows).step_by(PROBES as usize) {
            let spans: Vec<(u64, u64)> = (batch..(batch + PROBES).min(windows))
                .map(|i| span(WINDOW, (first + i) % windows))
                .collect();
            let Some((low, high)) = self.roomy(kv, pool, &spans).await? else {
                continue;
            };
            let slices: Vec<(u64, u64)> = (low / SLICE..high.div_ceil(SLICE))
                .map(|i| span(SLICE, i))
                .collect();
            if let Some((low, high)) = self.roomy(kv, pool, &slices).await? {
                if let Some(ip) = self.walk(kv, pool, low, high).await? {
                    return Ok(Some(ip));
                }
            }
        }
        for (low, high) in [(start, size), (0, start)] {
            if let Some(ip) = self.walk(kv, pool, low, high).await? {
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }

    /// The first of `spans` (index ranges of `pool`) holding fewer keys than addresses, by
    /// counting all of them in one read-only transaction.
    async fn roomy(
        &self,
        kv: &mut KvClient,
        pool: &Pool,
        spans: &[(u64, u64)],
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let counts = spans.iter().map(|&(low, high)| {
            let (from, end) = self.span_keys(pool, low, high);
            TxnOp::get(
                from,
                Some(GetOptions::new().with_range(end).with_count_only()),
            )
        });
        let response = kv
            .txn(Txn::new().and_then(counts.collect::<Vec<_>>()))
            .await
            .map_err(self.conn.error("read from"))?;
        Ok(spans
            .iter()
            .zip(response.op_responses())
            .find(|((low, high), answer)| match answer {
                TxnOpResponse::Get(got) => (got.count() as u64) < high - low,
                _ => false,
            })
            .map(|(span, _)| *span))
    }

    /// The first free address with an index in `low..high`, by reading the held keys in
    /// windows of [`WINDOW`] addresses.
    async fn walk(
        &self,
        kv: &mut KvClient,
        pool: &Pool,
        low: u64,
        high: u64,
    ) -> Result<Option<IpAddr>, StoreError> {
        let ranges = pool.allocatable();
        let mut cursor = low;
        while cursor < high {
            let last = (cursor + WINDOW).min(high);
            let (from, end) = self.span_keys(pool, cursor, last);
            let options = GetOptions::new().with_range(end).with_keys_only();
            let response = kv
                .get(from, Some(options))
                .await
                .map_err(self.conn.error("read from"))?;
            for held in response.kvs() {
                // Keys between the ranges (an excluded address held from before) do not
                // count; keys come in address order, so the first one above the cursor
                // leaves the cursor free.
                let Some(index) = ip_of(&key_text(held)).and_then(|ip| ranges.index_of(ip)) else {
                    continue;
                };
                if index > cursor {
                    break;
                }
                cursor = cursor.max(index + 1);
            }
            if cursor < last {
                return Ok(ranges.ip_at(cursor));
            }
        }
        Ok(None)
    }

    /// The etcd range `[from, end)` of the record keys of indexes `low..high` of `pool`.
    fn span_keys(&self, pool: &Pool, low: u64, high: u64) -> (String, Vec<u8>) {
        let ranges = pool.allocatable();
        let at = |index: u64| {
            ranges
                .ip_at(index)
                .expect("indexes are below the pool size")
        };
        let from = self.keys.record(pool.name(), at(low));
        let end = successor(self.keys.record(pool.name(), at(high - 1)).as_bytes());
        (from, end)
    }

    /// [`Allocations::allocate`], or with `want` [`Allocations::allocate_exact`], in a
    /// transaction that also checks `guard`.
    pub(crate) fn allocate_with(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        want: Option<IpAddr>,
        guard: &Guard,
    ) -> Result<IpAddr, StoreError> {
        let key = Key::checked(network, &owner.container_id, &owner.ifname)?;
        check_name(NameKind::Pool, pool.name())?;
        let refused = |ip, why| StoreError::Refused {
            pool: pool.name().into(),
            ip,
            why,
        };
        if let Some(ip) = want.filter(|&ip| !pool.allocatable().contains(ip)) {
            return Err(refused(ip, Refusal::NotInPool));
        }
        let entry_key = self.keys.attachment(key);
        let random = RandomState::new();
        self.conn.block(async {
            let mut kv = self.conn.kv();
            for attempt in 0..MAX_ATTEMPTS {
                let (mut list, entry_rev) = self.read_entry(&mut kv, &entry_key).await?;
                if let Some(held) = list.iter().find(|h| h.pool == pool.name()) {
                    let record = self.read_record(&mut kv, &held.pool, held.ip).await?;
                    if record.is_some_and(|(r, _)| key.owns(&r)) {
                        return match want {
                            Some(asked) if asked != held.ip => {
                                Err(refused(asked, Refusal::HoldsOther(held.ip)))
                            }
                            _ => Ok(held.ip),
                        };
                    }
                }
                // After the repeat case: a disabled pool keeps serving what it already gave.
                if pool.disabled() {
                    return Err(StoreError::Disabled {
                        pool: pool.name().into(),
                    });
                }
                let ip = match want {
                    Some(ip) => match self.read_record(&mut kv, pool.name(), ip).await? {
                        // Ours, but the entry does not name it (only a hand edit leaves
                        // that): the entry is pointed at it, the record kept.
                        Some((holder, _)) if key.owns(&holder) => {
                            if self
                                .point_entry(&mut kv, key, entry_rev, list, pool, ip)
                                .await?
                            {
                                return Ok(ip);
                            }
                            continue;
                        }
                        Some((holder, _)) => {
                            return Err(refused(
                                ip,
                                Refusal::HeldBy {
                                    network: holder.network,
                                    container_id: holder.owner.container_id,
                                    ifname: holder.owner.ifname,
                                },
                            ))
                        }
                        None => ip,
                    },
                    None => {
                        let start = random.hash_one(attempt);
                        let Some(ip) = self.find_free(&mut kv, pool, start).await? else {
                            return Err(StoreError::Exhausted {
                                pool: pool.name().into(),
                                size: pool.size(),
                            });
                        };
                        ip
                    }
                };
                point_at(&mut list, pool, ip);
                let record = Record {
                    ip,
                    pool: pool.name().into(),
                    network: network.into(),
                    owner: Owner {
                        node: self.node.clone(),
                        ..owner.clone()
                    },
                    time: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                };
                let record_key = self.keys.record(pool.name(), ip);
                let guarded = match guard {
                    Guard::NoBlocks => Compare::create_revision(
                        self.keys.block_size(pool.name()),
                        CompareOp::Equal,
                        0,
                    ),
                    Guard::Lease(key, rev) => {
                        Compare::mod_revision(key.clone(), CompareOp::Equal, *rev)
                    }
                };
                let mut writes = vec![
                    TxnOp::put(record_key.clone(), to_json(&record), None),
                    TxnOp::put(entry_key.clone(), to_json(&list), None),
                ];
                writes.extend(self.index_put(key));
                let txn = Txn::new()
                    .when([
                        Compare::create_revision(record_key, CompareOp::Equal, 0),
                        Compare::mod_revision(entry_key.clone(), CompareOp::Equal, entry_rev),
                        guarded,
                    ])
                    .and_then(writes);
                let response = kv.txn(txn).await.map_err(self.conn.error("allocate in"))?;
                if response.succeeded() {
                    return Ok(ip);
                }
                self.check_guard(&mut kv, pool, guard).await?;
            }
            Err(StoreError::Contended {
                what: format!("pool {}", pool.name()),
                attempts: MAX_ATTEMPTS,
            })
        })
    }

    /// After a lost race: an error if `guard` no longer holds (a retry would lose again).
    async fn check_guard(
        &self,
        kv: &mut KvClient,
        pool: &Pool,
        guard: &Guard,
    ) -> Result<(), StoreError> {
        match guard {
            Guard::NoBlocks => match self.get(kv, &self.keys.block_size(pool.name())).await? {
                Some(found) => Err(StoreError::BlockSize {
                    pool: pool.name().into(),
                    theirs: parse(&found, "a block size")?,
                    ours: 0,
                }),
                None => Ok(()),
            },
            Guard::Lease(key, rev) => match self.get(kv, key).await? {
                Some(found) if found.mod_revision() == *rev => Ok(()),
                _ => Err(StoreError::Contended {
                    what: format!("block {key} of pool {}", pool.name()),
                    attempts: 1,
                }),
            },
        }
    }

    /// Rewrites the entry of `key` (read at `entry_rev`) to name `ip` of `pool`, if nobody
    /// changed it since; `false` if somebody did.
    async fn point_entry(
        &self,
        kv: &mut KvClient,
        key: Key<'_>,
        entry_rev: i64,
        mut list: Vec<Held>,
        pool: &Pool,
        ip: IpAddr,
    ) -> Result<bool, StoreError> {
        point_at(&mut list, pool, ip);
        let entry_key = self.keys.attachment(key);
        let mut writes = vec![TxnOp::put(entry_key.clone(), to_json(&list), None)];
        writes.extend(self.index_put(key));
        let txn = Txn::new()
            .when([Compare::mod_revision(
                entry_key,
                CompareOp::Equal,
                entry_rev,
            )])
            .and_then(writes);
        Ok(kv
            .txn(txn)
            .await
            .map_err(self.conn.error("allocate in"))?
            .succeeded())
    }

    /// The put of this node's index entry for `key` (none without a node name).
    fn index_put(&self, key: Key<'_>) -> Option<TxnOp> {
        let node = self.node.as_deref()?;
        Some(TxnOp::put(self.keys.node_attachment(node, key), "", None))
    }

    /// The attachment entry at `key` and its revision (0 when there is none).
    async fn read_entry(
        &self,
        kv: &mut KvClient,
        key: &str,
    ) -> Result<Versioned<Vec<Held>>, StoreError> {
        match self.get(kv, key).await? {
            Some(found) => Ok((parse(&found, "an attachment entry")?, found.mod_revision())),
            None => Ok((Vec::new(), 0)),
        }
    }

    /// The record of `ip` in `pool`, if it is held, with its revision.
    async fn read_record(
        &self,
        kv: &mut KvClient,
        pool: &str,
        ip: IpAddr,
    ) -> Result<Option<Versioned<Record>>, StoreError> {
        match self.get(kv, &self.keys.record(pool, ip)).await? {
            Some(found) => Ok(Some((self.record(&found)?, found.mod_revision()))),
            None => Ok(None),
        }
    }

    /// The records of `list` that `key` owns.
    async fn confirmed(
        &self,
        kv: &mut KvClient,
        key: Key<'_>,
        list: Vec<Held>,
    ) -> Result<Vec<Versioned<Record>>, StoreError> {
        let mut out = Vec::new();
        for held in list {
            if let Some((record, rev)) = self.read_record(kv, &held.pool, held.ip).await? {
                if key.owns(&record) {
                    out.push((record, rev));
                }
            }
        }
        Ok(out)
    }

    /// Deletes `records`, the entry of `key` and `node`'s index entry of it in one
    /// transaction, if none changed since read; `false` if one did.
    async fn remove(
        &self,
        kv: &mut KvClient,
        key: Key<'_>,
        node: Option<&str>,
        entry_rev: i64,
        records: &[(&Record, i64)],
    ) -> Result<bool, StoreError> {
        let entry_key = self.keys.attachment(key);
        let mut compares = vec![Compare::mod_revision(
            entry_key.clone(),
            CompareOp::Equal,
            entry_rev,
        )];
        let mut deletes = vec![TxnOp::delete(entry_key, None)];
        if let Some(node) = node {
            deletes.push(TxnOp::delete(self.keys.node_attachment(node, key), None));
        }
        for (record, rev) in records {
            let key = self.keys.record(&record.pool, record.ip);
            compares.push(Compare::mod_revision(key.clone(), CompareOp::Equal, *rev));
            deletes.push(TxnOp::delete(key, None));
        }
        let txn = Txn::new().when(compares).and_then(deletes);
        Ok(kv
            .txn(txn)
            .await
            .map_err(self.conn.error("release in"))?
            .succeeded())
    }

    /// Every record under `prefix`, checked, with its revision.
    async fn records(
        &self,
        kv: &mut KvClient,
        prefix: &str,
    ) -> Result<Vec<Versioned<Record>>, StoreError> {
        let kvs = self.scan(kv, prefix, false).await?;
        kvs.iter()
            .map(|found| Ok((self.record(found)?, found.mod_revision())))
            .collect()
    }

    /// Every attachment entry of `network`: `(key, list, revision)`.
    async fn entries(
        &self,
        kv: &mut KvClient,
        network: &str,
    ) -> Result<Vec<(String, Vec<Held>, i64)>, StoreError> {
        let kvs = self
            .scan(kv, &self.keys.attachments(network), false)
            .await?;
        kvs.iter()
            .map(|found| {
                let list = parse(found, "an attachment entry")?;
                Ok((key_text(found), list, found.mod_revision()))
            })
            .collect()
    }

    /// [`Allocations::gc`] as `node` over every record: judges the allocations of `node` only,
    /// and also releases its records no entry lists (only a hand edit leaves one).
    fn gc_full(
        &self,
        node: Option<&str>,
        network: &str,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        check_name(NameKind::Network, network)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let mut records: HashMap<(String, IpAddr), Versioned<Record>> = HashMap::new();
            for (record, rev) in self.records(&mut kv, &self.keys.pools()).await? {
                if record.network == network {
                    records.insert((record.pool.clone(), record.ip), (record, rev));
                }
            }
            let ours = |r: &Record| r.owner.node.as_deref() == node;
            let mut released = Vec::new();
            let mut listed = BTreeSet::new();
            for (entry_key, list, entry_rev) in self.entries(&mut kv, network).await? {
                let name = &entry_key[self.keys.attachments(network).len()..];
                let Some((container_id, ifname)) = name.split_once(':') else {
                    continue;
                };
                let key = Key {
                    network,
                    container_id,
                    ifname,
                };
                let confirmed: Vec<(&Record, i64)> = list
                    .iter()
                    .filter_map(|h| records.get(&(h.pool.clone(), h.ip)))
                    .filter(|(r, _)| key.owns(r))
                    .map(|(r, rev)| (r, *rev))
                    .collect();
                listed.extend(confirmed.iter().map(|(r, _)| (r.pool.clone(), r.ip)));
                let gone = confirmed.iter().all(|(r, _)| ours(r)) && !keep(container_id, ifname);
                if (confirmed.is_empty() || gone)
                    && self
                        .remove(&mut kv, key, node, entry_rev, &confirmed)
                        .await?
                {
                    released.extend(confirmed.into_iter().map(|(r, _)| r.clone()));
                }
                // A lost race means the attachment changed meanwhile: judged at the next gc.
            }
            // Records no entry lists (only a hand edit leaves one): this node's gone ones go.
            for (id, (record, rev)) in &records {
                let owner = &record.owner;
                if listed.contains(id) || !ours(record) || keep(&owner.container_id, &owner.ifname)
                {
                    continue;
                }
                let record_key = self.keys.record(&record.pool, record.ip);
                let txn = Txn::new()
                    .when([Compare::mod_revision(
                        record_key.clone(),
                        CompareOp::Equal,
                        *rev,
                    )])
                    .and_then([TxnOp::delete(record_key, None)]);
                if kv
                    .txn(txn)
                    .await
                    .map_err(self.conn.error("release in"))?
                    .succeeded()
                {
                    released.push(record.clone());
                }
            }
            Ok(released)
        })
    }

    /// [`Allocations::gc`] as `node` through its index: reads only its attachments of
    /// `network` and their records.
    fn gc_indexed(
        &self,
        node: &str,
        network: &str,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        check_name(NameKind::Network, network)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let mut released = Vec::new();
            for (owned, index_key) in self.indexed_entries(&mut kv, node, Some(network)).await? {
                let key = owned.as_key();
                let (list, entry_rev) =
                    self.read_entry(&mut kv, &self.keys.attachment(key)).await?;
                if entry_rev == 0 {
                    // Released meanwhile, or indexed by a backfill racing its DEL.
                    kv.delete(index_key, None)
                        .await
                        .map_err(self.conn.error("release in"))?;
                    continue;
                }
                let confirmed = self.confirmed(&mut kv, key, list).await?;
                let ours = confirmed
                    .iter()
                    .all(|(r, _)| r.owner.node.as_deref() == Some(node));
                let gone = ours && !keep(key.container_id, key.ifname);
                let records: Vec<(&Record, i64)> =
                    confirmed.iter().map(|(r, rev)| (r, *rev)).collect();
                if (confirmed.is_empty() || gone)
                    && self
                        .remove(&mut kv, key, Some(node), entry_rev, &records)
                        .await?
                {
                    released.extend(confirmed.into_iter().map(|(r, _)| r));
                }
                // A lost race means the attachment changed meanwhile: judged at the next gc.
            }
            Ok(released)
        })
    }

    /// `node`'s index entries (of `network`, or of all), as attachment keys and index keys.
    async fn indexed_entries(
        &self,
        kv: &mut KvClient,
        node: &str,
        network: Option<&str>,
    ) -> Result<Vec<(OwnedKey, String)>, StoreError> {
        let prefix = self.keys.node_attachments(node, None);
        let kvs = self
            .scan(kv, &self.keys.node_attachments(node, network), true)
            .await?;
        Ok(kvs
            .iter()
            .filter_map(|found| {
                let index_key = key_text(found);
                let (network, name) = index_key[prefix.len()..].split_once('/')?;
                let (container_id, ifname) = name.split_once(':')?;
                let owned = OwnedKey {
                    network: network.into(),
                    container_id: container_id.into(),
                    ifname: ifname.into(),
                };
                Some((owned, index_key))
            })
            .collect())
    }

    /// Builds `node`'s index from every record once (a store written before the index, or
    /// by a node without a name before), then marks it built.
    fn ensure_index(&self, node: &str) -> Result<(), StoreError> {
        check_name(NameKind::Node, node)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            if self.get(&mut kv, &self.keys.indexed(node)).await?.is_some() {
                return Ok(());
            }
            let records = self.records(&mut kv, &self.keys.pools()).await?;
            let index: BTreeSet<String> = records
                .iter()
                .filter(|(r, _)| r.owner.node.as_deref() == Some(node))
                .map(|(r, _)| self.keys.node_attachment(node, r.key()))
                .collect();
            let mut puts: Vec<TxnOp> = index.into_iter().map(|k| TxnOp::put(k, "", None)).collect();
            puts.push(TxnOp::put(self.keys.indexed(node), "", None));
            // etcd takes at most 128 operations per transaction; the marker comes last.
            for batch in puts.chunks(100) {
                kv.txn(Txn::new().and_then(batch.to_vec()))
                    .await
                    .map_err(self.conn.error("index in"))?;
            }
            Ok(())
        })
    }

    /// [`Allocations::release`], returning the released records.
    pub(crate) fn release_records(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<Record>, StoreError> {
        let key = Key::checked(network, container_id, ifname)?;
        let entry_key = self.keys.attachment(key);
        self.conn.block(async {
            let mut kv = self.conn.kv();
            for _ in 0..MAX_ATTEMPTS {
                let (list, entry_rev) = self.read_entry(&mut kv, &entry_key).await?;
                if entry_rev == 0 {
                    return Ok(Vec::new());
                }
                let confirmed = self.confirmed(&mut kv, key, list).await?;
                let records: Vec<(&Record, i64)> =
                    confirmed.iter().map(|(r, rev)| (r, *rev)).collect();
                if self
                    .remove(&mut kv, key, self.node.as_deref(), entry_rev, &records)
                    .await?
                {
                    return Ok(confirmed.into_iter().map(|(r, _)| r).collect());
                }
            }
            Err(StoreError::Contended {
                what: format!("release of {container_id} {ifname} in {network}"),
                attempts: MAX_ATTEMPTS,
            })
        })
    }

    /// Releases every allocation `node` made, of every network (`gc --dead-node`).
    pub(crate) fn release_node_records(&self, node: &str) -> Result<Vec<Record>, StoreError> {
        let networks: BTreeSet<String> = self.conn.block(async {
            let mut kv = self.conn.kv();
            let records = self.records(&mut kv, &self.keys.pools()).await?;
            Ok(records
                .into_iter()
                .filter(|(r, _)| r.owner.node.as_deref() == Some(node))
                .map(|(r, _)| r.network)
                .collect())
        })?;
        let mut released = Vec::new();
        for network in networks {
            released.extend(self.gc_full(Some(node), &network, &|_, _| false)?);
        }
        Ok(released)
    }

    /// A record read from etcd, checked to be one the store wrote under that key.
    fn record(&self, found: &KeyValue) -> Result<Record, StoreError> {
        let key = key_text(found);
        let record: Record = parse(found, "an allocation record")?;
        let damaged = |reason: String| StoreError::DamagedKey {
            key: key.clone(),
            reason,
        };
        if self.keys.record(&record.pool, record.ip) != key {
            return Err(damaged(format!(
                "it says {} in pool {}, which belongs under another key: delete it if the \
                 address is free, else put it back under {}",
                record.ip,
                record.pool,
                self.keys.record(&record.pool, record.ip)
            )));
        }
        record
            .key()
            .validate()
            .map_err(|e| damaged(format!("it names an invalid owner ({e})")))?;
        Ok(record)
    }

    async fn get(&self, kv: &mut KvClient, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut response = kv
            .get(key, None)
            .await
            .map_err(self.conn.error("read from"))?;
        Ok(response.take_kvs().into_iter().next())
    }

    /// Every key (and value, unless `keys_only`) under `prefix`, read in batches so that no
    /// answer grows with the pool.
    async fn scan(
        &self,
        kv: &mut KvClient,
        prefix: &str,
        keys_only: bool,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let end = prefix_end(prefix);
        let mut from = prefix.as_bytes().to_vec();
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(BATCH);
            if keys_only {
                options = options.with_keys_only();
            }
            let mut response = kv
                .get(from.clone(), Some(options))
                .await
                .map_err(self.conn.error("read from"))?;
            let more = response.more();
            let batch = response.take_kvs();
            match batch.last() {
                Some(last) if more => from = successor(last.key()),
                _ => {
                    out.extend(batch);
                    return Ok(out);
                }
            }
            out.extend(batch);
        }
    }
}

impl Allocations for EtcdStore {
    fn describe(&self) -> String {
        format!(
            "etcd {} (prefix {})",
            self.conn.endpoints(),
            self.keys.prefix()
        )
    }

    fn allocate(&self, pool: &Pool, network: &str, owner: &Owner) -> Result<IpAddr, StoreError> {
        self.allocate_with(pool, network, owner, None, &Guard::NoBlocks)
    }

    fn allocate_exact(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        ip: IpAddr,
    ) -> Result<IpAddr, StoreError> {
        self.allocate_with(pool, network, owner, Some(ip), &Guard::NoBlocks)
    }

    fn release(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError> {
        let released = self.release_records(network, container_id, ifname)?;
        Ok(released.into_iter().map(|r| (r.pool, r.ip)).collect())
    }

    fn held_by(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError> {
        let key = Key::checked(network, container_id, ifname)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let (list, _) = self.read_entry(&mut kv, &self.keys.attachment(key)).await?;
            let confirmed = self.confirmed(&mut kv, key, list).await?;
            Ok(confirmed.into_iter().map(|(r, _)| (r.pool, r.ip)).collect())
        })
    }

    /// Releases this node's allocations of `network` whose attachment `keep` rejects, and
    /// drops entries no record confirms. Other nodes' allocations are left alone: `keep` only
    /// knows this node's attachments. Reads every record: for GC, not for ADD/DEL.
    fn gc(
        &self,
        network: &str,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        match self.node.as_deref() {
            Some(node) => {
                self.ensure_index(node)?;
                self.gc_indexed(node, network, keep)
            }
            None => self.gc_full(None, network, keep),
        }
    }

    /// This node's records, through its index. Without a node name: the records written
    /// without one, from every record.
    fn node_records(&self) -> Result<Vec<Record>, StoreError> {
        let Some(node) = self.node.as_deref() else {
            return self.conn.block(async {
                let mut kv = self.conn.kv();
                let records = self.records(&mut kv, &self.keys.pools()).await?;
                Ok(records
                    .into_iter()
                    .map(|(r, _)| r)
                    .filter(|r| r.owner.node.is_none())
                    .collect())
            });
        };
        self.ensure_index(node)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let mut out = Vec::new();
            for (key, _) in self.indexed_entries(&mut kv, node, None).await? {
                let key = key.as_key();
                let (list, _) = self.read_entry(&mut kv, &self.keys.attachment(key)).await?;
                let confirmed = self.confirmed(&mut kv, key, list).await?;
                out.extend(
                    confirmed
                        .into_iter()
                        .map(|(r, _)| r)
                        .filter(|r| r.owner.node.as_deref() == Some(node)),
                );
            }
            Ok(out)
        })
    }

    fn held(&self, pool: &str) -> Result<Vec<(IpAddr, Record)>, StoreError> {
        check_name(NameKind::Pool, pool)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let records = self.records(&mut kv, &self.keys.records(pool)).await?;
            Ok(records.into_iter().map(|(r, _)| (r.ip, r)).collect())
        })
    }

    /// Counted by etcd from its index: no record is read.
    fn held_count(&self, pool: &str) -> Result<u64, StoreError> {
        check_name(NameKind::Pool, pool)?;
        let prefix = self.keys.records(pool);
        self.conn.block(async {
            let options = GetOptions::new()
                .with_range(prefix_end(&prefix))
                .with_count_only();
            let response = self
                .conn
                .kv()
                .get(prefix, Some(options))
                .await
                .map_err(self.conn.error("read from"))?;
            Ok(response.count() as u64)
        })
    }

    /// The names of the pools that hold addresses.
    fn pools(&self) -> Result<Vec<String>, StoreError> {
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let keys = self.scan(&mut kv, &self.keys.pools(), true).await?;
            let names: BTreeSet<String> = keys
                .iter()
                .filter_map(|kv| self.keys.pool_of(&key_text(kv)).map(str::to_owned))
                .collect();
            Ok(names.into_iter().collect())
        })
    }

    fn attachments(&self, network: &str) -> Result<Vec<Attachment>, StoreError> {
        check_name(NameKind::Network, network)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let prefix_len = self.keys.attachments(network).len();
            let mut out = Vec::new();
            for (entry_key, list, _) in self.entries(&mut kv, network).await? {
                let Some((container_id, ifname)) = entry_key[prefix_len..].split_once(':') else {
                    continue;
                };
                let key = Key {
                    network,
                    container_id,
                    ifname,
                };
                let confirmed = self.confirmed(&mut kv, key, list).await?;
                if !confirmed.is_empty() {
                    out.push(Attachment {
                        container_id: container_id.into(),
                        ifname: ifname.into(),
                        addresses: confirmed.into_iter().map(|(r, _)| (r.pool, r.ip)).collect(),
                    });
                }
            }
            Ok(out)
        })
    }

    /// For CNI STATUS: a linearizable read, which needs a quorum with a leader.
    fn check_ready(&self) -> Result<(), StoreError> {
        self.conn.block(async {
            let options = GetOptions::new().with_count_only();
            self.conn
                .kv()
                .get(self.keys.prefix(), Some(options))
                .await
                .map_err(self.conn.error("read from"))
                .map(drop)
        })
    }
}

impl PoolStore for EtcdStore {
    /// The SpiderIPPool manifests under `P/ippools/`, as `(source name, YAML text)` in key
    /// order; the source name is `etcd key <key>`.
    fn manifests(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let kvs = self.scan(&mut kv, &self.keys.manifests(), false).await?;
            kvs.iter()
                .map(|kv| {
                    let key = key_text(kv);
                    let text = String::from_utf8(kv.value().to_vec()).map_err(|_| {
                        StoreError::DamagedKey {
                            key: key.clone(),
                            reason: "not UTF-8 text: write the pool again with spiderctl apply \
                                     --store"
                                .into(),
                        }
                    })?;
                    Ok((format!("etcd key {key}"), text))
                })
                .collect()
        })
    }
}

/// A [`Key`] read back from an index key.
struct OwnedKey {
    network: String,
    container_id: String,
    ifname: String,
}

impl OwnedKey {
    fn as_key(&self) -> Key<'_> {
        Key {
            network: &self.network,
            container_id: &self.container_id,
            ifname: &self.ifname,
        }
    }
}

/// An attachment's entry names `ip` as what it holds of `pool`.
fn point_at(list: &mut Vec<Held>, pool: &Pool, ip: IpAddr) {
    list.retain(|h| h.pool != pool.name());
    list.push(Held {
        pool: pool.name().into(),
        ip,
    });
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key_text(kv: &KeyValue) -> String {
    String::from_utf8_lossy(kv.key()).into_owned()
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store values serialise")
}

/// A JSON value the store wrote; anything else names its key and the fix.
fn parse<T: DeserializeOwned>(found: &KeyValue, what: &str) -> Result<T, StoreError> {
    let damaged = |reason: String| StoreError::DamagedKey {
        key: key_text(found),
        reason: format!(
            "{reason}: if it is in use, write it back as the store does (see a neighbouring key); \
             otherwise delete it (etcdctl del KEY)"
        ),
    };
    if found.value().len() > MAX_VALUE_BYTES {
        return Err(damaged(format!(
            "{} bytes, too big for {what}",
            found.value().len()
        )));
    }
    serde_json::from_slice(found.value()).map_err(|e| damaged(format!("not {what} ({e})")))
}

#[cfg(test)]
mod tests;
