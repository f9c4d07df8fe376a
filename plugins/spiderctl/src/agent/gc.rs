//! The agent's GC pass: this node's allocations whose netns is gone are released only once
//! they were found gone on `misses` consecutive passes, so a pod between its netns and its ADD,
//! or a netns path read at an unlucky moment, is never reclaimed. The counts live in
//! `<data-dir>/agent-gc-misses.json` (written whole: temp file, fsync, rename), so they count
//! across `--once` runs and agent restarts as well as within one process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipam_store::{Record, Store};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_if_changed;
use crate::gc::{self as store_gc, AttachmentKey};

const STATE_FILE: &str = "agent-gc-misses.json";

/// One attachment found gone, and on how many consecutive passes.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Missing {
    network: String,
    container_id: String,
    ifname: String,
    misses: u32,
}

/// What one pass did.
#[derive(Debug)]
pub struct PassReport {
    pub released: Vec<Record>,
    /// Attachments found gone that are not released yet.
    pub pending: usize,
}

pub struct MissCounter {
    path: PathBuf,
    needed: u32,
}

impl MissCounter {
    pub fn new(data_dir: &Path, needed: u32) -> MissCounter {
        MissCounter {
            path: data_dir.join(STATE_FILE),
            needed,
        }
    }

    /// One pass over `store`: judge, count, release what reached the count, save the counts.
    pub fn pass(&self, store: &Store) -> Result<PassReport, String> {
        let counts = self.load();
        let scan = store_gc::scan(store)?;
        let mut judged: BTreeMap<AttachmentKey, bool> = BTreeMap::new();
        let mut next: BTreeMap<AttachmentKey, u32> = BTreeMap::new();
        for (key, alive) in scan.live {
            let keep = alive || {
                let misses = counts.get(&key).copied().unwrap_or(0) + 1;
                let keep = misses < self.needed;
                if keep {
                    next.insert(key.clone(), misses);
                }
                keep
            };
            judged.insert(key, keep);
        }
        let released = if judged.values().all(|&keep| keep) {
            Vec::new()
        } else {
            store_gc::release(store, &judged)?
        };
        self.save(&next)?;
        store
            .upkeep(ipam_store::store::DEFAULT_RETURN_AFTER_S)
            .map_err(|e| format!("block upkeep: {e}"))?;
        Ok(PassReport {
            released,
            pending: next.len(),
        })
    }

    /// The saved counts; none when there are none yet. A file that does not parse (never
    /// written by us: writes are whole) is reported and counting starts over, which only
    /// delays a release.
    fn load(&self) -> BTreeMap<AttachmentKey, u32> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
            Err(e) => {
                eprintln!(
                    "agent: gc: cannot read {}: {e}: counting starts over",
                    self.path.display()
                );
                return BTreeMap::new();
            }
        };
        match serde_json::from_str::<Vec<Missing>>(&text) {
            Ok(list) => list
                .into_iter()
                .map(|m| ((m.network, m.container_id, m.ifname), m.misses))
                .collect(),
            Err(e) => {
                eprintln!(
                    "agent: gc: {} does not parse ({e}): counting starts over",
                    self.path.display()
                );
                BTreeMap::new()
            }
        }
    }

    fn save(&self, counts: &BTreeMap<AttachmentKey, u32>) -> Result<(), String> {
        let list: Vec<Missing> = counts
            .iter()
            .map(|((network, container_id, ifname), &misses)| Missing {
                network: network.clone(),
                container_id: container_id.clone(),
                ifname: ifname.clone(),
                misses,
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).expect("plain data serializes") + "\n";
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        write_if_changed(&self.path, &text)
            .map(|_| ())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }
}
