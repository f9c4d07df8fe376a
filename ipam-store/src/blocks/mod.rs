//! Block mode of the etcd store (`store.block_size` > 0): a pool shared by every node, cut
//! into blocks that nodes lease on etcd; a node allocates and releases inside its blocks in
//! its local file store, so an ADD or DEL needs etcd only to lease a block or to borrow.
//!
//! The protocol, the layout and why no address is ever handed out twice are in
//! docs/block-leases.md. In short:
//! - a lease is one transaction creating the block's key (`create_revision == 0`), so two
//!   nodes never hold one block; the local state adds a block only after that transaction;
//! - when no block is free, a node allocates per address (as the per-address mode does) in
//!   blocks their holders *shared*, guarded by the lease's revision; a holder shares a block
//!   (publishing what it holds there) when asked, at its next contact with etcd;
//! - a node allocates locally only while it reached etcd within `store.offline_s`, and
//!   `spiderctl gc --dead-node` waits longer than that before taking a node's blocks.
//!
//! [`BlockStore`] (feature `etcd`) does all of it; [`LocalBlocks`], built without the etcd
//! client, serves what needs no etcd (the common ADD and DEL) and hands the rest over.

mod fast;
mod layout;
#[cfg(feature = "etcd")]
mod leased;
mod local;

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Refusal, StoreError};
use crate::file_store::FileStore;
use crate::pool::Pool;
use crate::record::Owner;

pub use fast::LocalBlocks;
#[cfg(feature = "etcd")]
pub use leased::BlockStore;
use local::PoolState;

/// A node's manifests are read from etcd again when older than this.
const MANIFESTS_FOR_S: u64 = 10;
/// After a failed try, etcd is not tried again for this long (each try may wait
/// `store.timeout_ms`).
const RETRY_AFTER_S: u64 = 10;

/// What no block can change: `want` must be one of the pool's addresses, and the node's
/// blocks must have been leased with the configured size (read with another they would
/// overlap other nodes' blocks).
fn check_request(
    pool: &Pool,
    state: &PoolState,
    size: u32,
    want: Option<IpAddr>,
) -> Result<(), StoreError> {
    if let Some(ip) = want.filter(|&ip| !pool.allocatable().contains(ip)) {
        return Err(StoreError::Refused {
            pool: pool.name().into(),
            ip,
            why: Refusal::NotInPool,
        });
    }
    if !state.blocks.is_empty() && state.size != size {
        return Err(StoreError::BlockSize {
            pool: pool.name().into(),
            theirs: state.size,
            ours: size,
        });
    }
    Ok(())
}

/// Under the pool's lock: an address of the node's exclusive blocks (`want`, if asked for)
/// from the local store, not flushed yet; `None` when they have no room for it.
fn allocate_in_blocks(
    local: &FileStore,
    pool: &Pool,
    state: &PoolState,
    size: u32,
    network: &str,
    owner: &Owner,
    want: Option<IpAddr>,
) -> Result<Option<IpAddr>, StoreError> {
    let view = pool.restricted_to(&layout::addresses(pool, &state.exclusive(), size));
    if want.is_some_and(|ip| !view.allocatable().contains(ip)) {
        return Ok(None);
    }
    match local.allocate_unflushed(&view, network, owner, want) {
        Ok(ip) => Ok(Some(ip)),
        Err(StoreError::Exhausted { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the node should settle its state with etcd before allocating: every
/// `offline_s / 4`, unless it failed to reach etcd within [`RETRY_AFTER_S`].
fn due(state: &PoolState, now: u64, offline_s: u64) -> bool {
    let stale = now.saturating_sub(state.confirmed) >= offline_s / 4;
    stale && now.saturating_sub(state.tried) >= RETRY_AFTER_S
}

/// How long the node has been silent, when that is longer than it may allocate from its
/// blocks without etcd.
fn silent_for(state: &PoolState, now: u64, offline_s: u64) -> Option<u64> {
    let silent_s = now.saturating_sub(state.confirmed);
    (!state.exclusive().is_empty() && silent_s > offline_s).then_some(silent_s)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
