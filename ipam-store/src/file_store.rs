//! The node-local allocation store: files under a data dir, changed under one lock per pool.
//!
//! ```text
//! <data dir>/                                       0700
//!   pools/<pool>/lock                               flock'd around every change to the pool
//!   pools/<pool>/ips/<ip>                           one record per held address: the truth
//!   pools/<pool>/bitmap                             allocation hint (bitmap.rs)
//!   pools/<pool>/claim.tmp                          a record about to be linked into ips/
//!   attachments/<network>/<container id>:<ifname>   release index (attachment.rs)
//!   attachments/<network>/lock, update.tmp
//! ```
//!
//! Crash safety rests on three orders, each chosen so that a crash between two steps leaves
//! only a state that is harmless and repaired later:
//! - allocation writes the attachment entry before it claims the record, so a killed process
//!   leaves at most an entry naming an address nobody holds. Entries are trusted only when the
//!   record confirms them, a retried ADD claims that same address, and DEL or gc drops the
//!   entry. The opposite order would leave a held address that DEL cannot find.
//! - release removes the record before the entry, for the same reason.
//! - the bitmap bit is set after the claim and cleared before the release, so the hint can only
//!   be wrong towards "clear but held", which costs one probe and fixes itself.
//!
//! Durability: a record's content is flushed before it is linked into `ips/`, and `ips/` is
//! flushed before ADD or DEL answers, after the pool's lock is given up (other processes see
//! the new name at once; only a power cut could undo it, and that ends the pods too). Entries
//! are not flushed (attachment.rs): after a power cut the record is the truth and gc repairs
//! the index, so two flushes per ADD and one per DEL.
//!
//! Claims are exclusive even without the lock (a hard link never replaces a file), so the
//! lock serialises work but uniqueness does not depend on it.

use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::attachment::{Attachments, Held};
use crate::bitmap::Bitmap;
use crate::error::{Refusal, StoreError};
use crate::fsutil;
use crate::names::NameKind;
use crate::pool::Pool;
use crate::record::{check_name, Key, Owner, Record};
use crate::store::{Allocations, Attachment};

/// A record is one small JSON object; anything bigger was not written by the store.
const MAX_RECORD_BYTES: u64 = 16 * 1024;

/// The store under one data dir. It keeps no state in memory, so any number of instances, in
/// any number of threads and processes, can share a data dir.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    pools: PathBuf,
    attachments: Attachments,
}

impl FileStore {
    /// Opens the store in `data_dir`, creating it (0700) and its parents if needed.
    pub fn open(data_dir: &Path) -> Result<FileStore, StoreError> {
        if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Parents get the usual mode (only the data dir itself holds secrets), explicitly:
            // under a runtime's umask 000 a world-writable parent would let anyone swap the
            // data dir for their own.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(StoreError::io("create directory", parent))?;
        }
        let store = FileStore::at(data_dir);
        store.ensure_dirs()?;
        Ok(store)
    }

    /// Opens the store in `data_dir` as it is, creating nothing, for readers (`spiderctl
    /// status`, `gc`): to them a missing data dir is a mistyped path, not an empty store, so
    /// it is an error. Missing subdirectories read as empty.
    pub fn open_existing(data_dir: &Path) -> Result<FileStore, StoreError> {
        let meta = std::fs::metadata(data_dir).map_err(StoreError::io("open", data_dir))?;
        if !meta.is_dir() {
            let not_dir = std::io::Error::from(std::io::ErrorKind::NotADirectory);
            return Err(StoreError::io("open", data_dir)(not_dir));
        }
        Ok(FileStore::at(data_dir))
    }

    fn at(data_dir: &Path) -> FileStore {
        FileStore {
            root: data_dir.into(),
            pools: data_dir.join("pools"),
            attachments: Attachments::new(data_dir.join("attachments")),
        }
    }

    /// The data dir.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ensure_dirs(&self) -> Result<(), StoreError> {
        for dir in [&self.root, &self.pools, self.attachments.dir()] {
            fsutil::ensure_dir(dir)?;
        }
        Ok(())
    }

    /// [`FileStore::allocate`] and [`FileStore::allocate_exact`] (`want`) under the pool's
    /// lock, up to the flush of `ips/`.
    fn allocate_locked(
        &self,
        dir: &PoolDir,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        want: Option<IpAddr>,
    ) -> Result<IpAddr, StoreError> {
        let key = Key::checked(network, &owner.container_id, &owner.ifname)?;
        let refused = |ip, why| StoreError::Refused {
            pool: pool.name().into(),
            ip,
            why,
        };
        // An address the pool does not have is refused before anything is created.
        let wanted = match want {
            Some(ip) => match pool.allocatable().index_of(ip) {
                Some(index) => Some((ip, index)),
                None => return Err(refused(ip, Refusal::NotInPool)),
            },
            None => None,
        };
        // A disabled pool without state has nothing a repeated ADD could get back: refuse
        // before creating its directory, so that the refusal leaves the data dir as it was.
        if pool.disabled() && !dir.is_present()? {
            return Err(StoreError::Disabled {
                pool: pool.name().into(),
            });
        }
        dir.create()?;
        let _lock = fsutil::lock(&dir.lock())?;

        let earlier = self
            .attachments
            .read(key)?
            .into_iter()
            .find(|held| held.pool == pool.name())
            .map(|held| held.ip);
        if let Some(ip) = earlier {
            if dir.read_record(ip)?.is_some_and(|record| key.owns(&record)) {
                return match wanted {
                    Some((asked, _)) if asked != ip => Err(refused(asked, Refusal::HoldsOther(ip))),
                    _ => Ok(ip),
                };
            }
        }
        // Checked after the repeat case: a disabled pool keeps serving what it already gave.
        if pool.disabled() {
            return Err(StoreError::Disabled {
                pool: pool.name().into(),
            });
        }
        let record = |ip| Record {
            ip,
            pool: pool.name().into(),
            network: network.into(),
            owner: owner.clone(),
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        if let Some((ip, index)) = wanted {
            return self.claim_exact(dir, pool, key, &record(ip), index);
        }

        let ranges = pool.allocatable();
        let mut rebuilt = false;
        let mut bitmap = Bitmap::open(&dir.bitmap(), ranges, || {
            rebuilt = true;
            dir.held_ips()
        })?;
        // An entry without its record: the earlier attempt died before claiming. Retrying
        // that address first keeps a retried ADD on the address it may already have reported.
        let mut retry = earlier.and_then(|ip| ranges.index_of(ip));
        loop {
            let index = match retry.take() {
                Some(index) => index,
                None => match bitmap.next_clear()? {
                    Some(index) => index,
                    // Full per the hint; the hint may miss a release lost in a power cut, so
                    // ask the records once before giving up.
                    None if !rebuilt => {
                        bitmap.rebuild(&dir.held_ips()?)?;
                        rebuilt = true;
                        continue;
                    }
                    None => {
                        return Err(StoreError::Exhausted {
                            pool: pool.name().into(),
                            size: pool.size(),
                        })
                    }
                },
            };
            let ip = ranges
                .ip_at(index)
                .expect("bitmap indexes are below the pool size");
            // Held already (the hint was clear but wrong): skip the entry write.
            if !fsutil::exists(&dir.record_path(ip))? {
                self.attachments.update(key, |list| {
                    list.retain(|held| held.pool != pool.name());
                    list.push(Held {
                        pool: pool.name().into(),
                        ip,
                    });
                })?;
                // On an error the entry stays: it is harmless unconfirmed, and if the claim did
                // land (an fsync failed after the link) it is what lets DEL find the record.
                if dir.claim(&record(ip))? {
                    bitmap.set(index, true)?;
                    bitmap.advance_past(index)?;
                    return Ok(ip);
                }
            }
            bitmap.set(index, true)?;
        }
    }

    /// Under the pool's lock: claims `record`'s address (at `index` of the pool) for `key`, in
    /// the order of any allocation (entry, claim, bitmap bit), unless it is held. Held by `key`
    /// itself (its entry was lost: what gc repairs) it is `key`'s again.
    fn claim_exact(
        &self,
        dir: &PoolDir,
        pool: &Pool,
        key: Key<'_>,
        record: &Record,
        index: u64,
    ) -> Result<IpAddr, StoreError> {
        let ip = record.ip;
        let held = Held {
            pool: pool.name().into(),
            ip,
        };
        let point_entry_here = |list: &mut Vec<Held>| {
            list.retain(|h| h.pool != pool.name());
            list.push(held.clone());
        };
        let held_by = |holder: Record| StoreError::Refused {
            pool: pool.name().into(),
            ip,
            why: Refusal::HeldBy {
                network: holder.network,
                container_id: holder.owner.container_id,
                ifname: holder.owner.ifname,
            },
        };
        match dir.read_record(ip)? {
            Some(holder) if key.owns(&holder) => {
                self.attachments.update(key, point_entry_here)?;
                return Ok(ip);
            }
            Some(holder) => return Err(held_by(holder)),
            None => {}
        }
        self.attachments.update(key, point_entry_here)?;
        if dir.claim(record)? {
            let bitmap = Bitmap::open(&dir.bitmap(), pool.allocatable(), || dir.held_ips())?;
            bitmap.set(index, true)?;
            return Ok(ip);
        }
        // Claimed meanwhile (claims are exclusive even without the lock): the refusal takes
        // back the entry it wrote.
        self.attachments
            .update(key, |list| list.retain(|h| h != &held))?;
        match dir.read_record(ip)? {
            Some(holder) => Err(held_by(holder)),
            None => Err(StoreError::Contended {
                what: format!("{ip} in pool {}", pool.name()),
                attempts: 1,
            }),
        }
    }

    /// Under the pool's lock, checks `held` (an entry of `key`) against its record. A confirmed
    /// entry is released (record, then entry) when `release`, else kept; an unconfirmed one
    /// is dropped. Returns the released record.
    fn settle(
        &self,
        key: Key<'_>,
        held: &Held,
        release: bool,
    ) -> Result<Option<Record>, StoreError> {
        let dir = self.pool_dir(&held.pool)?;
        // Held by the lock from before the record is read until the entry is gone, so an
        // allocation in this pool never sees half of it.
        let lock = match dir.is_present()? {
            true => Some(fsutil::lock(&dir.lock())?),
            false => None,
        };
        let record = match lock {
            Some(_) => dir.read_record(held.ip)?.filter(|r| key.owns(r)),
            None => None,
        };
        match record {
            Some(_) if !release => return Ok(None),
            Some(_) => dir.remove_record(held.ip)?,
            None => {}
        }
        self.attachments
            .update(key, |list| list.retain(|h| h != held))?;
        drop(lock);
        if record.is_some() {
            fsutil::sync_dir(&dir.ips())?;
        }
        Ok(record)
    }

    /// An allocation, durable when it returns.
    fn allocate_flushed(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        want: Option<IpAddr>,
    ) -> Result<IpAddr, StoreError> {
        let ip = self.allocate_unflushed(pool, network, owner, want)?;
        // Outside the lock: the flush is what takes time, and nobody else needs to wait for it.
        self.flush(pool.name())?;
        Ok(ip)
    }

    /// An allocation ([`Allocations::allocate`], or `allocate_exact` with `want`) whose name
    /// in `ips/` is not flushed yet: [`FileStore::flush`] before answering. For callers that
    /// hold a lock of their own around it (block mode) and flush after giving it up.
    pub(crate) fn allocate_unflushed(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        want: Option<IpAddr>,
    ) -> Result<IpAddr, StoreError> {
        let dir = self.pool_dir(pool.name())?;
        self.allocate_locked(&dir, pool, network, owner, want)
    }

    /// Makes the allocations of pool `name` durable.
    pub(crate) fn flush(&self, name: &str) -> Result<(), StoreError> {
        fsutil::sync_dir(&self.pool_dir(name)?.ips())
    }

    fn pool_dir(&self, name: &str) -> Result<PoolDir, StoreError> {
        check_name(NameKind::Pool, name)?;
        Ok(PoolDir {
            name: name.into(),
            dir: self.pools.join(name),
        })
    }
}

impl Allocations for FileStore {
    /// For CNI STATUS: whether a file can be created and flushed in the data dir (fails on a
    /// read-only or full file system, or a damaged layout).
    fn check_ready(&self) -> Result<(), StoreError> {
        self.ensure_dirs()?;
        // Unique per call, so concurrent checks never trip over each other's probe.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let probe = self.root.join(format!(
            "writable-check.{}.{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A probe left by a killed process whose pid was reused.
        fsutil::remove(&probe)?;
        fsutil::create_synced(&probe, b"ok\n")?;
        fsutil::remove(&probe).map(drop)
    }

    fn allocate(&self, pool: &Pool, network: &str, owner: &Owner) -> Result<IpAddr, StoreError> {
        self.allocate_flushed(pool, network, owner, None)
    }

    fn allocate_exact(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        ip: IpAddr,
    ) -> Result<IpAddr, StoreError> {
        self.allocate_flushed(pool, network, owner, Some(ip))
    }

    /// Releases everything `(network, container_id, ifname)` holds, found through its
    /// attachment entry; returns `(pool, ip)` of each released address. Releasing what is not
    /// held (never allocated, released twice) is not an error.
    fn release(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError> {
        let key = Key::checked(network, container_id, ifname)?;
        let mut released = Vec::new();
        for held in self.attachments.read(key)? {
            if self.settle(key, &held, true)?.is_some() {
                released.push((held.pool, held.ip));
            }
        }
        Ok(released)
    }

    /// Releases every allocation of `network` whose attachment `keep(container id, ifname)`
    /// rejects, and repairs what crashes or hand edits left. Returns the released records.
    ///
    /// Scans every pool's records, so it costs what the pools hold; it is for CNI GC and
    /// `spiderctl gc`, not for the ADD/DEL path.
    fn gc(
        &self,
        network: &str,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        check_name(NameKind::Network, network)?;
        let mut released = Vec::new();
        // Records no entry points to. The store leaves one only after a power cut (entries
        // are not flushed), and a deleted or damaged attachment file does too: a live
        // attachment gets its entry back (releasing its address would hand it out twice), a
        // gone one or a second address from the same pool goes.
        for pool in self.pools()? {
            let dir = self.pool_dir(&pool)?;
            if !dir.is_present()? {
                continue;
            }
            let released_before = released.len();
            let lock = fsutil::lock(&dir.lock())?;
            for ip in dir.held_ips()? {
                let Some(record) = dir.read_record(ip)? else {
                    continue;
                };
                if record.network != network {
                    continue;
                }
                let key = record.key();
                let entries = self.attachments.read(key)?;
                let held = Held {
                    pool: pool.clone(),
                    ip,
                };
                if entries.contains(&held) {
                    continue;
                }
                let owner = &record.owner;
                if keep(&owner.container_id, &owner.ifname)
                    && !entries.iter().any(|e| e.pool == pool)
                {
                    self.attachments.update(key, |list| list.push(held))?;
                } else {
                    dir.remove_record(ip)?;
                    released.push(record);
                }
            }
            drop(lock);
            if released.len() > released_before {
                fsutil::sync_dir(&dir.ips())?;
            }
        }
        // Entries: everything of a gone attachment is released, and entries no record
        // confirms (a crash between entry and claim) are dropped.
        for (container_id, ifname) in self.attachments.list(network)? {
            let key = Key {
                network,
                container_id: &container_id,
                ifname: &ifname,
            };
            let release = !keep(&container_id, &ifname);
            let entries = self.attachments.read(key)?;
            if entries.is_empty() {
                // Torn by a power cut: it names nothing, so it goes.
                self.attachments.update(key, |_| {})?;
            }
            for held in entries {
                released.extend(self.settle(key, &held, release)?);
            }
        }
        Ok(released)
    }

    /// Every record: the node's own store.
    fn node_records(&self) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        for pool in self.pools()? {
            out.extend(self.held(&pool)?.into_iter().map(|(_, r)| r));
        }
        Ok(out)
    }

    /// The addresses held in pool `pool_name`, with their records, in address order. Takes no
    /// lock: records appear and vanish whole, so this sees each one or not.
    fn held(&self, pool_name: &str) -> Result<Vec<(IpAddr, Record)>, StoreError> {
        let dir = self.pool_dir(pool_name)?;
        if !dir.is_present()? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for ip in dir.held_ips()? {
            // Gone since the listing: released meanwhile.
            if let Some(record) = dir.read_record(ip)? {
                out.push((ip, record));
            }
        }
        Ok(out)
    }

    /// The names of the pools that have state in the store, whether or not a manifest still
    /// defines them.
    fn pools(&self) -> Result<Vec<String>, StoreError> {
        let names = fsutil::list(&self.pools)?;
        match names.iter().find(|n| !NameKind::Pool.is_valid(n)) {
            Some(bad) => Err(StoreError::Corrupt {
                path: self.pools.join(bad),
                reason: "its name is not a pool name, so the store did not create it: move it \
                         out of the data dir"
                    .into(),
            }),
            None => Ok(names),
        }
    }

    /// The attachments of `network` that hold addresses, with those confirmed by the
    /// records. Takes no lock, like [`FileStore::held`].
    fn attachments(&self, network: &str) -> Result<Vec<Attachment>, StoreError> {
        let mut out = Vec::new();
        for (container_id, ifname) in self.attachments.list(network)? {
            let addresses = self.held_by(network, &container_id, &ifname)?;
            if !addresses.is_empty() {
                out.push(Attachment {
                    container_id,
                    ifname,
                    addresses,
                });
            }
        }
        Ok(out)
    }

    /// What `(network, container id, ifname)` holds, as `(pool, ip)` confirmed by the pools'
    /// records: one file read per address, whatever the pools hold. Takes no lock.
    fn held_by(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError> {
        let key = Key::checked(network, container_id, ifname)?;
        let mut addresses = Vec::new();
        for held in self.attachments.read(key)? {
            let dir = self.pool_dir(&held.pool)?;
            if dir.is_present()? && dir.read_record(held.ip)?.is_some_and(|r| key.owns(&r)) {
                addresses.push((held.pool, held.ip));
            }
        }
        Ok(addresses)
    }

    fn describe(&self) -> String {
        format!("file store {}", self.root.display())
    }
}

/// The files of one pool.
struct PoolDir {
    name: String,
    dir: PathBuf,
}

impl PoolDir {
    fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }

    fn bitmap(&self) -> PathBuf {
        self.dir.join("bitmap")
    }

    fn ips(&self) -> PathBuf {
        self.dir.join("ips")
    }

    fn record_path(&self, ip: IpAddr) -> PathBuf {
        self.ips().join(ip.to_string())
    }

    fn create(&self) -> Result<(), StoreError> {
        fsutil::ensure_dir(&self.dir)?;
        fsutil::ensure_dir(&self.ips())
    }

    /// Whether the pool has state; a symlink in place of a directory is an error, as files
    /// are opened without following only their last component.
    fn is_present(&self) -> Result<bool, StoreError> {
        Ok(fsutil::is_dir(&self.dir)? && fsutil::is_dir(&self.ips())?)
    }

    /// Creates `record`'s file; `false` if its address is held already.
    fn claim(&self, record: &Record) -> Result<bool, StoreError> {
        let bytes = serde_json::to_vec(record).expect("a record serialises");
        fsutil::create_exclusive(
            &self.dir.join("claim.tmp"),
            &self.record_path(record.ip),
            &bytes,
        )
    }

    /// Removes the record of `ip`, clearing its bitmap bit first (see the module comment).
    /// Durable after the caller's flush of `ips/`.
    fn remove_record(&self, ip: IpAddr) -> Result<(), StoreError> {
        if let Some(bitmap) = Bitmap::open_existing(&self.bitmap())? {
            if let Some(index) = bitmap.ranges().index_of(ip) {
                bitmap.set(index, false)?;
            }
        }
        fsutil::remove(&self.record_path(ip)).map(drop)
    }

    /// The record of `ip`, if it is held; checked to be the store's own.
    fn read_record(&self, ip: IpAddr) -> Result<Option<Record>, StoreError> {
        let path = self.record_path(ip);
        let Some(bytes) = fsutil::read_small(&path, MAX_RECORD_BYTES)? else {
            return Ok(None);
        };
        let damaged = |what: String| StoreError::Corrupt {
            path: path.clone(),
            reason: format!(
                "{what}: if the address is in use, write the record back as the store does \
                 (see a neighbouring file); otherwise delete the file to free it"
            ),
        };
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| damaged(format!("not an allocation record ({e})")))?;
        if record.ip != ip || record.pool != self.name {
            return Err(damaged(format!(
                "it says {} in pool {}",
                record.ip, record.pool
            )));
        }
        // Its names become paths when gc looks up the attachment.
        record
            .key()
            .validate()
            .map_err(|e| damaged(format!("it names an invalid owner ({e})")))?;
        Ok(Some(record))
    }

    /// The held addresses, from the names in `ips/` alone (no file is read).
    fn held_ips(&self) -> Result<Vec<IpAddr>, StoreError> {
        let mut ips = fsutil::list(&self.ips())?
            .into_iter()
            .map(|name| match name.parse::<IpAddr>() {
                // Only the canonical spelling: records are looked up by it.
                Ok(ip) if ip.to_string() == name => Ok(ip),
                _ => Err(StoreError::Corrupt {
                    path: self.ips().join(&name),
                    reason: "its name is not an IP address as the store writes it: move it out \
                             of the data dir"
                        .into(),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Name order is not address order (10.0.0.10 < 10.0.0.9 as text).
        ips.sort_unstable();
        Ok(ips)
    }
}

#[cfg(test)]
mod tests;
