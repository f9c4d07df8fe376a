//! Block leases on etcd (block mode; the protocol and why it never hands out an address twice
//! are in docs/block-leases.md). Every change is one transaction guarded by the lease's
//! `mod_revision`, and writes the lease and its per-node copy together.

use std::net::IpAddr;

use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, KvClient, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::{key_text, parse, to_json, EtcdStore, Versioned};
use crate::error::StoreError;
use crate::names::NameKind;
use crate::record::{check_name, Record};

/// How much longer than a node's `offline_s` `gc --dead-node` waits: the clocks of the node
/// and of the machine running gc may disagree by less than this.
pub const DEAD_MARGIN_S: u64 = 60;

/// What a node may do with a block it leased.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Only the node allocates in it, in its local store, without etcd.
    Exclusive,
    /// Every node allocates in it per address (one transaction each), except the addresses
    /// in `held`, which the leasing node holds in its local store.
    Shared,
    /// On its way back: no new allocation until it is deleted or shared again.
    Closing,
}

/// A block's lease, the value of `P/blocks/<pool>/<start>` and of its per-node copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub pool: String,
    /// The block's first address (aligned to `size`); its addresses are the pool's between
    /// `start` and `start + size - 1`.
    pub start: IpAddr,
    pub size: u32,
    pub node: String,
    /// The id of the local store (data dir) that allocates in it: one node name may run
    /// several data dirs (two conflists), and each must keep to its own blocks.
    pub store: String,
    pub state: LeaseState,
    /// Shared: the addresses the node held locally when it shared the block (or at its last
    /// refresh); nobody else takes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<IpAddr>,
    /// Another node found no free block and asked for this one to be shared.
    #[serde(default)]
    pub asked: bool,
    /// Addresses the node held locally in it, as of `time` (for status).
    #[serde(default)]
    pub used: u32,
    /// When it was leased, and when it was last written (Unix seconds).
    pub since: u64,
    pub time: u64,
}

/// A block's lease as status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLease {
    pub pool: String,
    pub start: IpAddr,
    pub size: u32,
    pub node: String,
    /// `exclusive`, `shared` or `closing`.
    pub state: &'static str,
    /// Addresses the node held in it when it last wrote the lease (exclusive), or still
    /// holds there (shared).
    pub used: u32,
    /// Unix seconds of that write.
    pub time: u64,
}

/// `P/nodes/<node>/heartbeat`: when the node last reached etcd, and how long it goes on
/// allocating from its blocks without reaching it (so `gc --dead-node` can wait that out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub time: u64,
    pub offline_s: u64,
}

impl EtcdStore {
    /// `pool`'s block size as fixed by its first lease, and every lease of it, in address
    /// order.
    pub(crate) fn pool_leases(
        &self,
        pool: &str,
    ) -> Result<(Option<u32>, Vec<Versioned<Lease>>), StoreError> {
        check_name(NameKind::Pool, pool)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let size = match self.get(&mut kv, &self.keys.block_size(pool)).await? {
                Some(found) => Some(parse::<u32>(&found, "a block size")?),
                None => None,
            };
            let leases = self.leases_under(&mut kv, &self.keys.leases(pool)).await?;
            Ok((size, leases))
        })
    }

    /// `node`'s leases of every pool, from their per-node copies: one range read. A copy is
    /// written in every transaction that writes its lease, so it has the lease's value and
    /// `mod_revision`, the guard of the next change (a copy that differs, by a hand edit,
    /// only makes that change lose its race).
    pub(crate) fn node_leases(&self, node: &str) -> Result<Vec<Versioned<Lease>>, StoreError> {
        check_name(NameKind::Node, node)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let copies = self
                .leases_under(&mut kv, &self.keys.node_leases(node))
                .await?;
            Ok(copies.into_iter().filter(|(l, _)| l.node == node).collect())
        })
    }

    async fn leases_under(
        &self,
        kv: &mut KvClient,
        prefix: &str,
    ) -> Result<Vec<Versioned<Lease>>, StoreError> {
        let kvs = self.scan(kv, prefix, false).await?;
        kvs.iter()
            .map(|found| Ok((parse(found, "a block lease")?, found.mod_revision())))
            .collect()
    }

    /// Fixes `pool`'s block size to `size` unless it is fixed already (to `size`, or to
    /// another: an error naming both).
    pub(crate) fn fix_block_size(&self, pool: &str, size: u32) -> Result<(), StoreError> {
        let key = self.keys.block_size(pool);
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), to_json(&size), None)]);
            if kv
                .txn(txn)
                .await
                .map_err(self.conn.error("lease in"))?
                .succeeded()
            {
                return Ok(());
            }
            match self.get(&mut kv, &key).await? {
                Some(found) => match parse::<u32>(&found, "a block size")? {
                    theirs if theirs == size => Ok(()),
                    theirs => Err(StoreError::BlockSize {
                        pool: pool.into(),
                        theirs,
                        ours: size,
                    }),
                },
                // Deleted in between (by hand): the next lease fixes it again.
                None => Ok(()),
            }
        })
    }

    /// Leases the block at `lease.start` to `lease.node` if nobody holds it and the pool's
    /// block size is `lease.size`; `None` if another node got it first. The caller fixed the
    /// size ([`EtcdStore::fix_block_size`]) and then checked that no record lies in the
    /// block ([`EtcdStore::records_between`]).
    pub(crate) fn take_block(
        &self,
        lease: &Lease,
        offline_s: u64,
    ) -> Result<Option<i64>, StoreError> {
        let size_key = self.keys.block_size(&lease.pool);
        let key = self.keys.lease(&lease.pool, lease.start);
        self.conn.block(async {
            let txn = Txn::new()
                .when([
                    Compare::value(size_key, CompareOp::Equal, to_json(&lease.size)),
                    Compare::create_revision(key, CompareOp::Equal, 0),
                ])
                .and_then(self.lease_puts(lease, Some(offline_s)));
            let response = self
                .conn
                .kv()
                .txn(txn)
                .await
                .map_err(self.conn.error("lease in"))?;
            Ok(response
                .succeeded()
                .then(|| response.header().map_or(0, |h| h.revision())))
        })
    }

    /// Rewrites a lease read at `rev`: its holder sharing, refreshing or closing it (with
    /// `offline_s`, which also writes the holder's heartbeat), or another node asking for it
    /// (`None`: the holder's heartbeat is not the asker's to write). The new revision, or
    /// `None` if it changed since.
    pub(crate) fn update_lease(
        &self,
        lease: &Lease,
        rev: i64,
        offline_s: Option<u64>,
    ) -> Result<Option<i64>, StoreError> {
        let key = self.keys.lease(&lease.pool, lease.start);
        self.conn.block(async {
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, rev)])
                .and_then(self.lease_puts(lease, offline_s));
            let response = self
                .conn
                .kv()
                .txn(txn)
                .await
                .map_err(self.conn.error("lease in"))?;
            Ok(response
                .succeeded()
                .then(|| response.header().map_or(0, |h| h.revision())))
        })
    }

    /// Deletes a lease read at `rev` and its copy; `false` if it changed since.
    pub(crate) fn drop_lease(&self, lease: &Lease, rev: i64) -> Result<bool, StoreError> {
        let key = self.keys.lease(&lease.pool, lease.start);
        let copy = self.keys.node_lease(&lease.node, &lease.pool, lease.start);
        self.conn.block(async {
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, rev)])
                .and_then([TxnOp::delete(key, None), TxnOp::delete(copy, None)]);
            Ok(self
                .conn
                .kv()
                .txn(txn)
                .await
                .map_err(self.conn.error("release a block in"))?
                .succeeded())
        })
    }

    /// The lease, its per-node copy, and (with `offline_s`) the holder's heartbeat, as the
    /// operations of one transaction.
    fn lease_puts(&self, lease: &Lease, offline_s: Option<u64>) -> Vec<TxnOp> {
        let value = to_json(lease);
        let mut puts = vec![
            TxnOp::put(
                self.keys.lease(&lease.pool, lease.start),
                value.clone(),
                None,
            ),
            TxnOp::put(
                self.keys.node_lease(&lease.node, &lease.pool, lease.start),
                value,
                None,
            ),
        ];
        if let Some(offline_s) = offline_s {
            let heartbeat = Heartbeat {
                time: lease.time,
                offline_s,
            };
            puts.push(TxnOp::put(
                self.keys.heartbeat(&lease.node),
                to_json(&heartbeat),
                None,
            ));
        }
        puts
    }

    /// etcd's current revision: how many changes the cluster has made (tests and the bench
    /// count writes with it).
    pub fn revision(&self) -> Result<i64, StoreError> {
        self.conn.block(async {
            let options = GetOptions::new().with_count_only();
            let response = self
                .conn
                .kv()
                .get(self.keys.prefix(), Some(options))
                .await
                .map_err(self.conn.error("read from"))?;
            Ok(response.header().map_or(0, |h| h.revision()))
        })
    }

    pub(crate) fn lease_key(&self, pool: &str, start: IpAddr) -> String {
        self.keys.lease(pool, start)
    }

    /// Takes back every lease and record of `node`, a node gone for good, if it has not
    /// reached etcd for `silent_for_s` and for longer than its own `offline_s` plus
    /// [`DEAD_MARGIN_S`] (after which it allocates from its blocks no more, clocks agreeing
    /// within the margin). Returns the number of blocks and the released records.
    pub fn release_dead_node(
        &self,
        node: &str,
        silent_for_s: u64,
    ) -> Result<(usize, Vec<Record>), StoreError> {
        let now = super::now();
        if let Some(beat) = self.heartbeat(node)? {
            let silent_s = now.saturating_sub(beat.time);
            let needed_s = silent_for_s.max(beat.offline_s + DEAD_MARGIN_S);
            if silent_s < needed_s {
                return Err(StoreError::NodeAlive {
                    node: node.into(),
                    silent_s,
                    needed_s,
                });
            }
        }
        let leases = self.node_leases(node)?;
        for (lease, rev) in &leases {
            // A lost race: the node wrote meanwhile, so it is not dead; the next run says so.
            self.drop_lease(lease, *rev)?;
        }
        let records = self.release_node_records(node)?;
        self.conn.block(async {
            let prefix = self.keys.node(node);
            self.conn
                .kv()
                .delete(prefix, Some(DeleteOptions::new().with_prefix()))
                .await
                .map_err(self.conn.error("release a node in"))
                .map(drop)
        })?;
        Ok((leases.len(), records))
    }

    /// Records that `node` reached etcd now.
    pub(crate) fn beat(&self, node: &str, heartbeat: &Heartbeat) -> Result<(), StoreError> {
        check_name(NameKind::Node, node)?;
        self.conn.block(async {
            self.conn
                .kv()
                .put(self.keys.heartbeat(node), to_json(heartbeat), None)
                .await
                .map_err(self.conn.error("write to"))
                .map(drop)
        })
    }

    pub(crate) fn heartbeat(&self, node: &str) -> Result<Option<Heartbeat>, StoreError> {
        check_name(NameKind::Node, node)?;
        self.conn.block(async {
            let mut kv = self.conn.kv();
            match self.get(&mut kv, &self.keys.heartbeat(node)).await? {
                Some(found) => Ok(Some(parse(&found, "a heartbeat")?)),
                None => Ok(None),
            }
        })
    }

    /// How many records of `pool` lie between `first` and `last` (inclusive), counted by
    /// etcd from its index.
    pub(crate) fn records_between(
        &self,
        pool: &str,
        first: IpAddr,
        last: IpAddr,
    ) -> Result<u64, StoreError> {
        let from = self.keys.record(pool, first);
        let end = super::keys::successor(self.keys.record(pool, last).as_bytes());
        self.conn.block(async {
            let options = GetOptions::new().with_range(end).with_count_only();
            let response = self
                .conn
                .kv()
                .get(from, Some(options))
                .await
                .map_err(self.conn.error("read from"))?;
            Ok(response.count() as u64)
        })
    }

    /// Every lease of every pool, in key order (pool, then address), for status.
    pub fn block_leases(&self) -> Result<Vec<BlockLease>, StoreError> {
        Ok(self
            .all_leases()?
            .into_iter()
            .map(|(lease, _)| BlockLease {
                state: match lease.state {
                    LeaseState::Exclusive => "exclusive",
                    LeaseState::Shared => "shared",
                    LeaseState::Closing => "closing",
                },
                used: match lease.state {
                    LeaseState::Exclusive => lease.used,
                    _ => lease.held.len() as u32,
                },
                time: lease.time,
                pool: lease.pool,
                start: lease.start,
                size: lease.size,
                node: lease.node,
            })
            .collect())
    }

    /// How many blocks `node` leases, and how long ago it last reached etcd (`None`: it never
    /// leased), for `gc --dead-node` without `--apply`.
    pub fn node_status(&self, node: &str) -> Result<(usize, Option<u64>), StoreError> {
        let blocks = self.node_leases(node)?.len();
        let silent = self
            .heartbeat(node)?
            .map(|beat| super::now().saturating_sub(beat.time));
        Ok((blocks, silent))
    }

    fn all_leases(&self) -> Result<Vec<Versioned<Lease>>, StoreError> {
        self.conn.block(async {
            let mut kv = self.conn.kv();
            let prefix = format!("{}/blocks/", self.keys.prefix());
            let kvs = self.scan(&mut kv, &prefix, false).await?;
            // The size keys (`P/blocks/<pool>`) sit among the leases; they have no '/' after
            // the pool.
            kvs.iter()
                .filter(|found| key_text(found)[prefix.len()..].contains('/'))
                .map(|found| Ok((parse(found, "a block lease")?, found.mod_revision())))
                .collect()
        })
    }
}
