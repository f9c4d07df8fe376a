//! The release index: `attachments/<network>/<container id>:<ifname>` lists the `{pool, ip}`
//! an attachment holds, so release finds its addresses without scanning any pool. It is only
//! an index: an entry is trusted only after the pool's record confirms the owner.
//!
//! Entries are changed atomically (rename) but not flushed: every process in this boot sees
//! each change whole, and a power cut, which ends every attachment of the node, can at worst
//! lose or zero an entry. The record stays the truth: a held address whose entry is gone is
//! found by gc, which re-indexes it for a live attachment and releases it otherwise. So the
//! flushes an ADD waits for are the record's alone.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::fsutil;
use crate::names::NameKind;
use crate::record::{check_name, Key};

/// An attachment file lists a few entries; anything bigger was not written by the store.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Serialises read-modify-write of the network's attachment files. Taken after a pool lock,
/// never before one, so the two cannot deadlock. Attachment names always contain ':', so
/// this and [`TMP`] never collide with one.
const LOCK: &str = "lock";
const TMP: &str = "update.tmp";

/// One address an attachment holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Held {
    pub pool: String,
    pub ip: IpAddr,
}

#[derive(Debug)]
pub(crate) struct Attachments {
    dir: PathBuf,
}

impl Attachments {
    pub fn new(dir: PathBuf) -> Attachments {
        Attachments { dir }
    }

    fn network_dir(&self, network: &str) -> PathBuf {
        self.dir.join(network)
    }

    /// What `key` holds per its file (empty if none). Needs no lock: the file is only ever
    /// replaced by rename, so a reader sees the old or the new list.
    pub fn read(&self, key: Key<'_>) -> Result<Vec<Held>, StoreError> {
        let path = self.network_dir(key.network).join(key.file_name());
        let bytes = match fsutil::read_small(&path, MAX_FILE_BYTES)? {
            // Torn by a power cut: it confirms nothing, as if it were gone (see above).
            Some(bytes) if !fsutil::is_torn(&bytes) => bytes,
            _ => return Ok(Vec::new()),
        };
        let damaged = |what: String| StoreError::Corrupt {
            path: path.clone(),
            reason: format!(
                "{what}: delete it, then run gc, which re-indexes the addresses of live \
                 attachments and releases the others"
            ),
        };
        let held: Vec<Held> = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(format!("not a JSON list of {{pool, ip}} ({e})")))?;
        // Pool names become paths: one that is not a valid name was not written by the store.
        match held.iter().find(|h| !NameKind::Pool.is_valid(&h.pool)) {
            Some(bad) => Err(damaged(format!("{:?} is not a pool name", bad.pool))),
            None => Ok(held),
        }
    }

    /// Changes `key`'s list atomically (temp, rename) under the network lock; an emptied list
    /// removes the file.
    pub fn update(
        &self,
        key: Key<'_>,
        change: impl FnOnce(&mut Vec<Held>),
    ) -> Result<(), StoreError> {
        let dir = self.network_dir(key.network);
        fsutil::ensure_dir(&dir)?;
        let _lock = fsutil::lock(&dir.join(LOCK))?;
        let before = self.read(key)?;
        let mut after = before.clone();
        change(&mut after);
        let name = key.file_name();
        if after.is_empty() {
            // Also drops a torn file, which reads as empty.
            return fsutil::remove(&dir.join(&name)).map(drop);
        }
        if after == before {
            return Ok(());
        }
        let bytes = serde_json::to_vec(&after).expect("a list of {pool, ip} serialises");
        fsutil::replace_unflushed(&dir, TMP, &name, &bytes)
    }

    /// `(container id, ifname)` of every attachment file of `network`, sorted.
    pub fn list(&self, network: &str) -> Result<Vec<(String, String)>, StoreError> {
        check_name(NameKind::Network, network)?;
        let names = fsutil::list(&self.network_dir(network))?;
        Ok(names
            .into_iter()
            .filter_map(|name| {
                let (id, ifname) = name.split_once(':')?;
                Some((id.to_string(), ifname.to_string()))
            })
            .collect())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
