//! What a node keeps of block mode in its data dir, next to the file store's own state:
//!
//! ```text
//! <data dir>/blocks/<pool>.json                    the node's blocks of the pool (flushed)
//! <data dir>/blocks/<pool>.lock                    held around every allocation and lease change
//! <data dir>/blocks/borrowed/<network>/<cid>:<if>  the attachment also holds an etcd record
//! <data dir>/blocks/manifests.json                 the pool manifests as last read from etcd
//! ```
//!
//! The local state only ever claims less than etcd grants: a block is added after its lease
//! transaction succeeded, and marked `sharing` or `returning` (so no allocation uses it)
//! before the transaction that shares or returns it. A crash in between leaves a block etcd
//! grants and the node does not use, which the next reconcile settles.
// What only the lease side (leased.rs) uses is unused in a build without the etcd client.
#![cfg_attr(not(feature = "etcd"), allow(dead_code))]

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{MANIFESTS_FOR_S, RETRY_AFTER_S};
use crate::error::StoreError;
use crate::fsutil;
use crate::record::Key;

/// State files are small; anything bigger was not written here.
const MAX_STATE_BYTES: u64 = 1 << 20;
/// The manifests of a large cluster can be a few MB.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Use {
    /// Allocations go here.
    Exclusive,
    /// Being shared: no new allocation here.
    Sharing,
    /// Being returned: no new allocation here.
    Returning,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalBlock {
    pub start: IpAddr,
    #[serde(rename = "use")]
    pub used_for: Use,
}

/// `<pool>.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PoolState {
    /// The block size the blocks were leased with.
    #[serde(default)]
    pub size: u32,
    pub blocks: Vec<LocalBlock>,
    /// When the node last wrote its heartbeat with this state settled (Unix seconds): what
    /// `gc --dead-node` goes by, so the node allocates from its blocks for `offline_s` after
    /// it at most.
    #[serde(default)]
    pub confirmed: u64,
    /// When it last tried and could not reach etcd.
    #[serde(default)]
    pub tried: u64,
}

impl PoolState {
    /// The blocks allocations may use.
    pub fn exclusive(&self) -> Vec<IpAddr> {
        self.blocks
            .iter()
            .filter(|b| b.used_for == Use::Exclusive)
            .map(|b| b.start)
            .collect()
    }

    pub fn find(&self, start: IpAddr) -> Option<Use> {
        self.blocks
            .iter()
            .find(|b| b.start == start)
            .map(|b| b.used_for)
    }

    pub fn set(&mut self, start: IpAddr, used_for: Use) {
        self.blocks.retain(|b| b.start != start);
        self.blocks.push(LocalBlock { start, used_for });
        self.blocks.sort_by_key(|b| b.start);
    }

    pub fn remove(&mut self, start: IpAddr) {
        self.blocks.retain(|b| b.start != start);
    }
}

/// `manifests.json`: the `(source name, YAML text)` pairs etcd gave at `time`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Manifests {
    pub time: u64,
    /// When the node last tried and could not reach etcd.
    #[serde(default)]
    pub tried: u64,
    pub manifests: Vec<(String, String)>,
}

impl Manifests {
    /// Fresh enough to use without asking etcd: read within [`MANIFESTS_FOR_S`], or etcd
    /// failed within [`RETRY_AFTER_S`] (each try may wait `store.timeout_ms`).
    pub fn usable(&self, now: u64) -> bool {
        now.saturating_sub(self.time) < MANIFESTS_FOR_S
            || now.saturating_sub(self.tried) < RETRY_AFTER_S
    }
}

pub(crate) struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    pub fn new(data_dir: &Path) -> LocalDir {
        LocalDir {
            dir: data_dir.join("blocks"),
        }
    }

    pub fn ensure(&self) -> Result<(), StoreError> {
        fsutil::ensure_dir(&self.dir)
    }

    /// Held while a pool's allocations and lease changes run.
    pub fn lock(&self, pool: &str) -> Result<std::fs::File, StoreError> {
        self.ensure()?;
        fsutil::lock(&self.dir.join(format!("{pool}.lock")))
    }

    /// This data dir's id, made on first use: what its leases name, so that two data dirs of
    /// one node never use each other's blocks.
    pub fn store_id(&self) -> Result<String, StoreError> {
        let path = self.dir.join("id");
        if let Some(id) = fsutil::read_small(&path, 64)? {
            return Ok(String::from_utf8_lossy(&id).trim().to_owned());
        }
        self.ensure()?;
        let _lock = fsutil::lock(&self.dir.join("id.lock"))?;
        if let Some(id) = fsutil::read_small(&path, 64)? {
            return Ok(String::from_utf8_lossy(&id).trim().to_owned());
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let id = format!(
            "{:016x}",
            std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                (seed, std::process::id())
            )
        );
        fsutil::create_synced(&path, id.as_bytes())?;
        fsutil::sync_dir(&self.dir)?;
        Ok(id)
    }

    /// The pools this node has block state for.
    pub fn pools(&self) -> Result<Vec<String>, StoreError> {
        Ok(fsutil::list(&self.dir)?
            .into_iter()
            .filter_map(|name| name.strip_suffix(".json").map(str::to_owned))
            .filter(|name| name != "manifests")
            .collect())
    }

    pub fn read(&self, pool: &str) -> Result<PoolState, StoreError> {
        let path = self.dir.join(format!("{pool}.json"));
        read_json(&path, MAX_STATE_BYTES).map(Option::unwrap_or_default)
    }

    /// Under the pool's lock.
    pub fn write(&self, pool: &str, state: &PoolState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).expect("state serialises");
        fsutil::replace_synced(
            &self.dir,
            &format!("{pool}.json.tmp"),
            &format!("{pool}.json"),
            &bytes,
        )
    }

    pub fn manifests(&self) -> Result<Option<Manifests>, StoreError> {
        read_json(&self.dir.join("manifests.json"), MAX_MANIFEST_BYTES)
    }

    /// A cache: not flushed, and two writers racing leave one of their copies.
    pub fn write_manifests(&self, manifests: &Manifests) -> Result<(), StoreError> {
        self.ensure()?;
        let bytes = serde_json::to_vec(manifests).expect("manifests serialise");
        let tmp = format!("manifests.json.{}.tmp", std::process::id());
        fsutil::replace_unflushed(&self.dir, &tmp, "manifests.json", &bytes)
    }

    fn borrowed_dir(&self, network: &str) -> PathBuf {
        self.dir.join("borrowed").join(network)
    }

    fn borrowed(&self, key: Key<'_>) -> PathBuf {
        self.borrowed_dir(key.network).join(key.file_name())
    }

    /// Marks that `key` may hold an etcd record, before the transaction that creates it.
    pub fn mark_borrowed(&self, key: Key<'_>) -> Result<(), StoreError> {
        let dir = self.borrowed_dir(key.network);
        fsutil::ensure_dir(&self.dir.join("borrowed"))?;
        fsutil::ensure_dir(&dir)?;
        let path = self.borrowed(key);
        if !fsutil::exists(&path)? {
            fsutil::create_synced(&path, b"")?;
            fsutil::sync_dir(&dir)?;
        }
        Ok(())
    }

    pub fn is_borrowed(&self, key: Key<'_>) -> Result<bool, StoreError> {
        fsutil::exists(&self.borrowed(key))
    }

    pub fn unmark_borrowed(&self, key: Key<'_>) -> Result<(), StoreError> {
        fsutil::remove(&self.borrowed(key)).map(drop)
    }

    /// The attachments of `network` marked as borrowing: `(container id, ifname)`.
    pub fn borrowers(&self, network: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(fsutil::list(&self.borrowed_dir(network))?
            .into_iter()
            .filter_map(|name| {
                let (id, ifname) = name.split_once(':')?;
                Some((id.to_owned(), ifname.to_owned()))
            })
            .collect())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    limit: u64,
) -> Result<Option<T>, StoreError> {
    let Some(bytes) = fsutil::read_small(path, limit)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.into(),
            reason: format!(
                "not block state ({e}): move it aside; the node's next contact with etcd \
                 rebuilds it from its leases"
            ),
        })
}
