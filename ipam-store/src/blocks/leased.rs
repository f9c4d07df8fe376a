use std::cell::OnceCell;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::StoreError;
use crate::etcd::{EtcdStore, Guard, Heartbeat, Lease, LeaseState, Versioned};
use crate::file_store::FileStore;
use crate::names::NameKind;
use crate::pool::Pool;
use crate::record::{check_name, Key, Owner, Record};
#[cfg(test)]
use crate::store::DEFAULT_RETURN_AFTER_S;
use crate::store::{Allocations, Attachment, EtcdConfig, PoolStore};

use super::layout;
use super::local::{LocalDir, Manifests, PoolState, Use};
use super::{allocate_in_blocks, check_request, due, now, silent_for};

/// Blocks of other nodes asked to be shared at once, when none is free.
const ASK_AT_ONCE: usize = 4;
/// Races for a free block lost before giving up on leasing (each lost race means another
/// node leased one).
const LEASE_TRIES: usize = 16;

pub struct BlockStore {
    config: EtcdConfig,
    node: String,
    local: FileStore,
    dir: LocalDir,
    /// Connected on first use: an ADD served from the node's blocks never connects.
    etcd: OnceLock<EtcdStore>,
}

impl BlockStore {
    /// Opens block mode for `node` with its local store in `data_dir` (created if missing).
    pub fn open(
        config: &EtcdConfig,
        data_dir: &Path,
        node: Option<String>,
    ) -> Result<BlockStore, StoreError> {
        BlockStore::with(config, node, FileStore::open(data_dir)?)
    }

    /// As [`BlockStore::open`], creating nothing (see [`FileStore::open_existing`]).
    pub fn open_existing(
        config: &EtcdConfig,
        data_dir: &Path,
        node: Option<String>,
    ) -> Result<BlockStore, StoreError> {
        BlockStore::with(config, node, FileStore::open_existing(data_dir)?)
    }

    fn with(
        config: &EtcdConfig,
        node: Option<String>,
        local: FileStore,
    ) -> Result<BlockStore, StoreError> {
        let node = node.unwrap_or_default();
        check_name(NameKind::Node, &node)?;
        Ok(BlockStore {
            config: config.clone(),
            dir: LocalDir::new(local.root()),
            node,
            local,
            etcd: OnceLock::new(),
        })
    }

    fn etcd(&self) -> Result<&EtcdStore, StoreError> {
        if let Some(etcd) = self.etcd.get() {
            return Ok(etcd);
        }
        let etcd = EtcdStore::open(&self.config, Some(self.node.clone()))?;
        Ok(self.etcd.get_or_init(|| etcd))
    }

    fn size(&self) -> u32 {
        self.config.block_size
    }

    /// [`Allocations::allocate`] and, with `want`, [`Allocations::allocate_exact`]: under the
    /// pool's lock, then flushed once it is given up.
    fn allocate_with(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        want: Option<IpAddr>,
    ) -> Result<IpAddr, StoreError> {
        let key = Key::checked(network, &owner.container_id, &owner.ifname)?;
        check_name(NameKind::Pool, pool.name())?;
        let ip = {
            let _lock = self.dir.lock(pool.name())?;
            let mut state = self.dir.read(pool.name())?;
            check_request(pool, &state, self.size(), want)?;
            self.allocate_locked(pool, &mut state, key, owner, want)?
        };
        self.local.flush(pool.name())?;
        Ok(ip)
    }

    fn allocate_locked(
        &self,
        pool: &Pool,
        state: &mut PoolState,
        key: Key<'_>,
        owner: &Owner,
        want: Option<IpAddr>,
    ) -> Result<IpAddr, StoreError> {
        let network = key.network;
        let now = now();
        let mut settled = false;
        if self.due(state, now) {
            settled = self.settle_if_reachable(pool.name(), state, now)?;
        }
        self.check_offline(state, now)?;
        if let Some(ip) = self.allocate_locally(pool, state, network, owner, want)? {
            return Ok(ip);
        }
        // The node's blocks cannot serve it: etcd from here on.
        if !settled {
            self.settle(pool.name(), state, now, None)?;
            if let Some(ip) = self.allocate_locally(pool, state, network, owner, want)? {
                return Ok(ip);
            }
        }
        if self.lease_block(pool, state, want, now)? {
            if let Some(ip) = self.allocate_locally(pool, state, network, owner, want)? {
                return Ok(ip);
            }
        }
        self.borrow(pool, key, owner, want)
    }

    /// From the node's exclusive blocks, unflushed; `None` when they have no room (or not
    /// `want`).
    fn allocate_locally(
        &self,
        pool: &Pool,
        state: &PoolState,
        network: &str,
        owner: &Owner,
        want: Option<IpAddr>,
    ) -> Result<Option<IpAddr>, StoreError> {
        allocate_in_blocks(&self.local, pool, state, self.size(), network, owner, want)
    }

    fn due(&self, state: &PoolState, now: u64) -> bool {
        due(state, now, self.config.offline_s)
    }

    /// [`BlockStore::settle`], unless etcd cannot be reached (then the try is noted and
    /// allocation goes on from the node's blocks); whether it settled.
    fn settle_if_reachable(
        &self,
        pool: &str,
        state: &mut PoolState,
        now: u64,
    ) -> Result<bool, StoreError> {
        match self.settle(pool, state, now, None) {
            Ok(()) => Ok(true),
            Err(StoreError::Unavailable { .. }) => {
                state.tried = now;
                self.dir.write(pool, state)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn check_offline(&self, state: &PoolState, now: u64) -> Result<(), StoreError> {
        let Some(silent_s) = silent_for(state, now, self.config.offline_s) else {
            return Ok(());
        };
        // The same call that just failed says why.
        let reason = match self.etcd().and_then(|etcd| etcd.check_ready()) {
            Err(e) => e.to_string(),
            Ok(()) => "etcd answers again: retry".into(),
        };
        Err(StoreError::Offline {
            silent_s,
            offline_s: self.config.offline_s,
            reason,
        })
    }

    /// Brings the node's state of `pool` in line with its leases on etcd, under the pool's
    /// lock: adopts leases the state misses (a lease whose answer was lost), finishes shares
    /// and returns a crash interrupted, drops blocks etcd no longer grants, shares blocks
    /// other nodes asked for, and refreshes what its shared blocks hold. With `return_after`
    /// (gc), also returns blocks that are empty and older than that.
    fn settle(
        &self,
        pool: &str,
        state: &mut PoolState,
        now: u64,
        return_after: Option<u64>,
    ) -> Result<(), StoreError> {
        let etcd = self.etcd()?;
        let id = self.dir.store_id()?;
        let leases: Vec<Versioned<Lease>> = etcd
            .node_leases(&self.node)?
            .into_iter()
            .filter(|(lease, _)| lease.pool == pool && lease.store == id)
            .collect();
        if let Some((lease, _)) = leases.iter().find(|(l, _)| l.size != self.size()) {
            return Err(StoreError::BlockSize {
                pool: pool.into(),
                theirs: lease.size,
                ours: self.size(),
            });
        }
        for block in state.blocks.clone() {
            if !leases.iter().any(|(l, _)| l.start == block.start) {
                if block.used_for == Use::Exclusive {
                    cni::log_warn!(
                        "block {} of pool {pool} is no longer leased to node {} (released by \
                         gc --dead-node?): no new allocation from it",
                        block.start,
                        self.node
                    );
                }
                state.remove(block.start);
            }
        }
        // Read only when a block's fate depends on it: it costs a file per held address.
        let held: OnceCell<Vec<IpAddr>> = OnceCell::new();
        let held_in = |start: IpAddr| -> Result<Vec<IpAddr>, StoreError> {
            if held.get().is_none() {
                let ips = self.local.held(pool)?.into_iter().map(|(ip, _)| ip);
                let _ = held.set(ips.collect());
            }
            Ok(held
                .get()
                .expect("set above")
                .iter()
                .copied()
                .filter(|ip| layout::holds(start, self.size(), *ip))
                .collect())
        };
        for (lease, rev) in leases {
            let ours_locally = state.find(lease.start);
            match lease.state {
                LeaseState::Exclusive => {
                    let sharing = ours_locally == Some(Use::Sharing) || lease.asked;
                    let returning = ours_locally == Some(Use::Returning);
                    if !sharing && !returning && return_after.is_none() {
                        if ours_locally.is_none() {
                            state.size = lease.size;
                            state.set(lease.start, Use::Exclusive);
                        }
                        continue;
                    }
                    let inside = held_in(lease.start)?;
                    let old = now.saturating_sub(lease.since) >= return_after.unwrap_or(u64::MAX);
                    if sharing {
                        self.share(state, pool, lease, rev, inside, now)?;
                    } else if returning || (inside.is_empty() && old) {
                        self.give_back(state, pool, lease, rev, &inside)?;
                    } else {
                        if ours_locally.is_none() {
                            state.size = lease.size;
                            state.set(lease.start, Use::Exclusive);
                        }
                        let used = inside.len() as u32;
                        if used != lease.used {
                            let report = Lease {
                                used,
                                time: now,
                                ..lease
                            };
                            etcd.update_lease(&report, rev, Some(self.config.offline_s))?;
                        }
                    }
                }
                LeaseState::Shared | LeaseState::Closing => {
                    state.remove(lease.start);
                    let inside = held_in(lease.start)?;
                    self.refresh_shared(lease, rev, &inside, now, return_after.is_some())?;
                }
            }
        }
        // The heartbeat is what `gc --dead-node` goes by, so `confirmed` (the fence) moves
        // only with one: written here when due, else by the lease transactions.
        if now.saturating_sub(state.confirmed) >= self.config.offline_s / 4 {
            etcd.beat(
                &self.node,
                &Heartbeat {
                    time: now,
                    offline_s: self.config.offline_s,
                },
            )?;
            state.confirmed = now;
        }
        state.tried = 0;
        self.dir.write(pool, state)
    }

    /// Shares an exclusive block: no local allocation from it from now on, and what the
    /// node holds there is published in the lease so that borrowers avoid it.
    fn share(
        &self,
        state: &mut PoolState,
        pool: &str,
        lease: Lease,
        rev: i64,
        inside: Vec<IpAddr>,
        now: u64,
    ) -> Result<(), StoreError> {
        state.set(lease.start, Use::Sharing);
        self.dir.write(pool, state)?;
        let shared = Lease {
            state: LeaseState::Shared,
            used: inside.len() as u32,
            held: inside,
            asked: false,
            time: now,
            ..lease
        };
        if self
            .etcd()?
            .update_lease(&shared, rev, Some(self.config.offline_s))?
            .is_some()
        {
            state.remove(shared.start);
        }
        // Else it changed meanwhile (asked again): it stays `sharing`, unused, and the next
        // settle shares it.
        Ok(())
    }

    /// Returns an exclusive block the node holds nothing in.
    fn give_back(
        &self,
        state: &mut PoolState,
        pool: &str,
        lease: Lease,
        rev: i64,
        inside: &[IpAddr],
    ) -> Result<(), StoreError> {
        if !inside.is_empty() {
            // A crash left it `returning` after an allocation won: it is used again.
            state.set(lease.start, Use::Exclusive);
            return Ok(());
        }
        state.set(lease.start, Use::Returning);
        self.dir.write(pool, state)?;
        if self.etcd()?.drop_lease(&lease, rev)? {
            state.remove(lease.start);
        }
        Ok(())
    }

    /// A shared block of this node: its `held` list follows what the node still holds
    /// there (it only shrinks: no local allocation goes there). With `may_close` (gc), a
    /// block that lists nothing any more is closed, and deleted if no record is left in it.
    fn refresh_shared(
        &self,
        mut lease: Lease,
        mut rev: i64,
        inside: &[IpAddr],
        now: u64,
        may_close: bool,
    ) -> Result<(), StoreError> {
        let etcd = self.etcd()?;
        let offline_s = Some(self.config.offline_s);
        let held: Vec<IpAddr> = lease
            .held
            .iter()
            .copied()
            .filter(|ip| inside.contains(ip))
            .collect();
        if held.is_empty() && may_close {
            // Closing first makes every borrow in flight lose its race (each compares the
            // lease's revision); only then are the records counted.
            if lease.state != LeaseState::Closing {
                let closing = Lease {
                    state: LeaseState::Closing,
                    held: Vec::new(),
                    used: 0,
                    time: now,
                    ..lease
                };
                let Some(new_rev) = etcd.update_lease(&closing, rev, offline_s)? else {
                    return Ok(());
                };
                (lease, rev) = (closing, new_rev);
            }
            let last = layout::last_of(lease.start, lease.size);
            if etcd.records_between(&lease.pool, lease.start, last)? == 0 {
                etcd.drop_lease(&lease, rev)?;
                return Ok(());
            }
        }
        if held != lease.held || lease.state != LeaseState::Shared {
            let update = Lease {
                state: LeaseState::Shared,
                used: held.len() as u32,
                held,
                time: now,
                ..lease
            };
            etcd.update_lease(&update, rev, offline_s)?;
        }
        Ok(())
    }

    /// Leases a free block of `pool` (the one holding `want`, if asked for); whether it got
    /// one.
    fn lease_block(
        &self,
        pool: &Pool,
        state: &mut PoolState,
        want: Option<IpAddr>,
        now: u64,
    ) -> Result<bool, StoreError> {
        let etcd = self.etcd()?;
        let size = self.size();
        let (fixed, leases) = etcd.pool_leases(pool.name())?;
        match fixed {
            Some(theirs) if theirs != size => {
                return Err(StoreError::BlockSize {
                    pool: pool.name().into(),
                    theirs,
                    ours: size,
                })
            }
            Some(_) => {}
            // Before any record is counted: from then on no per-address allocation lands
            // in the pool (each checks that the size key is absent), so a block counted
            // empty stays empty until leased.
            None => etcd.fix_block_size(pool.name(), size)?,
        }
        let taken: Vec<IpAddr> = leases.iter().map(|(l, _)| l.start).collect();
        let id = self.dir.store_id()?;
        let mut free: Vec<IpAddr> = layout::starts(pool, size)
            .into_iter()
            .filter(|start| !taken.contains(start))
            .filter(|start| want.is_none_or(|ip| layout::holds(*start, size, ip)))
            .collect();
        // From a random point, so that nodes leasing at once pick different blocks.
        if !free.is_empty() {
            let at = (RandomState::new().hash_one(now) % free.len() as u64) as usize;
            free.rotate_left(at);
        }
        let mut lost = 0;
        for start in free {
            // Records in a free block are per-address mode's, from before the pool's first
            // lease: the block is not free while they last.
            if etcd.records_between(pool.name(), start, layout::last_of(start, size))? > 0 {
                continue;
            }
            let lease = Lease {
                pool: pool.name().into(),
                start,
                size,
                node: self.node.clone(),
                store: id.clone(),
                state: LeaseState::Exclusive,
                held: Vec::new(),
                asked: false,
                used: 0,
                since: now,
                time: now,
            };
            if etcd.take_block(&lease, self.config.offline_s)?.is_some() {
                state.size = size;
                state.set(start, Use::Exclusive);
                state.confirmed = now;
                self.dir.write(pool.name(), state)?;
                return Ok(true);
            }
            lost += 1;
            if lost == LEASE_TRIES {
                break;
            }
        }
        Ok(false)
    }

    /// No free block: one address per transaction in a shared block, else ask the holders
    /// of exclusive blocks to share theirs.
    fn borrow(
        &self,
        pool: &Pool,
        key: Key<'_>,
        owner: &Owner,
        want: Option<IpAddr>,
    ) -> Result<IpAddr, StoreError> {
        let etcd = self.etcd()?;
        let (_, mut leases) = etcd.pool_leases(pool.name())?;
        if !leases.is_empty() {
            let at = (RandomState::new().hash_one(key.container_id) % leases.len() as u64) as usize;
            leases.rotate_left(at);
        }
        let fresh_mark = !self.dir.is_borrowed(key)?;
        for (lease, rev) in leases.iter().filter(|(l, _)| l.state == LeaseState::Shared) {
            if want.is_some_and(|ip| !layout::holds(lease.start, lease.size, ip)) {
                continue;
            }
            let block = layout::addresses(pool, &[lease.start], lease.size);
            let held = crate::range::IpRanges::new(
                pool.family(),
                lease.held.iter().map(|&ip| {
                    let v = crate::range::to_u128(ip);
                    (v, v)
                }),
            );
            let view = pool.restricted_to(&block.subtract(&held));
            if view.size() == 0 {
                continue;
            }
            // Before the transaction: DEL and gc look for the etcd record only when marked.
            self.dir.mark_borrowed(key)?;
            let guard = Guard::Lease(etcd.lease_key(&lease.pool, lease.start), *rev);
            let got = match etcd.allocate_with(&view, key.network, owner, want, &guard) {
                Ok(ip) => ip,
                Err(StoreError::Exhausted { .. } | StoreError::Contended { .. }) => continue,
                Err(e) => return Err(e),
            };
            let single = pool.restricted_to(&crate::range::IpRanges::new(
                pool.family(),
                [(crate::range::to_u128(got), crate::range::to_u128(got))],
            ));
            return match self
                .local
                .allocate_unflushed(&single, key.network, owner, Some(got))
            {
                Ok(ip) => Ok(ip),
                Err(e) => {
                    // Not both: give the etcd record back. A failure to is what gc mends.
                    let _ = etcd.release(key.network, key.container_id, key.ifname);
                    Err(e)
                }
            };
        }
        if fresh_mark {
            self.dir.unmark_borrowed(key)?;
        }
        let id = self.dir.store_id()?;
        let others: Vec<&Versioned<Lease>> = leases
            .iter()
            .filter(|(l, _)| l.state == LeaseState::Exclusive && l.store != id)
            .filter(|(l, _)| want.is_none_or(|ip| layout::holds(l.start, l.size, ip)))
            .collect();
        if others.is_empty() {
            return Err(match want {
                Some(ip) => StoreError::Refused {
                    pool: pool.name().into(),
                    ip,
                    why: crate::Refusal::NotInPool,
                },
                None => StoreError::Exhausted {
                    pool: pool.name().into(),
                    size: pool.size(),
                },
            });
        }
        let mut nodes: Vec<&str> = Vec::new();
        // The emptiest first, as their holders last reported them.
        let mut unasked: Vec<&&Versioned<Lease>> =
            others.iter().filter(|(l, _)| !l.asked).collect();
        unasked.sort_by_key(|(l, _)| l.used);
        for (lease, rev) in unasked.into_iter().take(ASK_AT_ONCE) {
            let asked = Lease {
                asked: true,
                ..lease.clone()
            };
            // Not the holder's heartbeat: that is the holder's to write.
            etcd.update_lease(&asked, *rev, None)?;
        }
        for (lease, _) in &others {
            if !nodes.contains(&lease.node.as_str()) {
                nodes.push(&lease.node);
            }
        }
        Err(StoreError::Asked {
            pool: pool.name().into(),
            nodes: nodes.join(", "),
        })
    }

    /// The etcd store beneath: manifests, leases of every node, `gc --dead-node`.
    pub fn shared(&self) -> Result<&EtcdStore, StoreError> {
        self.etcd()
    }
}

impl Allocations for BlockStore {
    fn allocate(&self, pool: &Pool, network: &str, owner: &Owner) -> Result<IpAddr, StoreError> {
        self.allocate_with(pool, network, owner, None)
    }

    fn allocate_exact(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        ip: IpAddr,
    ) -> Result<IpAddr, StoreError> {
        self.allocate_with(pool, network, owner, Some(ip))
    }

    /// Local, unless the attachment borrowed: then its etcd record goes too (and with etcd
    /// down the DEL fails with code 11 after the local release, and its retry finishes).
    fn release(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError> {
        let key = Key::checked(network, container_id, ifname)?;
        let mut released = self.local.release(network, container_id, ifname)?;
        if self.dir.is_borrowed(key)? {
            for held in self.etcd()?.release(network, container_id, ifname)? {
                if !released.contains(&held) {
                    released.push(held);
                }
            }
            self.dir.unmark_borrowed(key)?;
        }
        Ok(released)
    }

    fn held_by(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError> {
        self.local.held_by(network, container_id, ifname)
    }

    /// The local store's gc, then the etcd records of the attachments marked as borrowing
    /// (only those: no read of other nodes' records).
    fn gc(
        &self,
        network: &str,
        keep: &dyn Fn(&str, &str) -> bool,
    ) -> Result<Vec<Record>, StoreError> {
        let mut released = self.local.gc(network, keep)?;
        for (container_id, ifname) in self.dir.borrowers(network)? {
            let key = Key::checked(network, &container_id, &ifname)?;
            if keep(&container_id, &ifname) {
                continue;
            }
            let records = self
                .etcd()?
                .release_records(network, &container_id, &ifname)?;
            self.dir.unmark_borrowed(key)?;
            for record in records {
                if !released
                    .iter()
                    .any(|r| r.pool == record.pool && r.ip == record.ip)
                {
                    released.push(record);
                }
            }
        }
        Ok(released)
    }

    /// Shares blocks other nodes asked for, refreshes the shared ones, and returns blocks
    /// empty and leased longer than `return_after_s` ago, for every pool this node has
    /// blocks of (the agent's pass, `spiderctl gc --apply`, CNI GC).
    fn upkeep(&self, return_after_s: u64) -> Result<(), StoreError> {
        let now = now();
        for pool in self.dir.pools()? {
            check_name(NameKind::Pool, &pool)?;
            let _lock = self.dir.lock(&pool)?;
            let mut state = self.dir.read(&pool)?;
            self.settle(&pool, &mut state, now, Some(return_after_s))?;
        }
        Ok(())
    }

    /// This node's: what its local store holds (borrowed addresses included).
    fn held(&self, pool: &str) -> Result<Vec<(IpAddr, Record)>, StoreError> {
        self.local.held(pool)
    }

    fn pools(&self) -> Result<Vec<String>, StoreError> {
        self.local.pools()
    }

    /// The local store's: borrowed addresses are recorded there too.
    fn node_records(&self) -> Result<Vec<Record>, StoreError> {
        self.local.node_records()
    }

    fn attachments(&self, network: &str) -> Result<Vec<Attachment>, StoreError> {
        self.local.attachments(network)
    }

    /// Ready when the node can allocate: its local store works, and it reached etcd within
    /// `store.offline_s` or reaches it now.
    fn check_ready(&self) -> Result<(), StoreError> {
        self.local.check_ready()?;
        match self.etcd().and_then(|etcd| etcd.check_ready()) {
            Ok(()) => Ok(()),
            Err(e @ StoreError::Unavailable { .. }) => {
                let now = now();
                for pool in self.dir.pools()? {
                    let state = self.dir.read(&pool)?;
                    if !state.exclusive().is_empty()
                        && now.saturating_sub(state.confirmed) <= self.config.offline_s
                    {
                        return Ok(());
                    }
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    fn describe(&self) -> String {
        format!(
            "etcd {} (prefix {}, blocks of {} leased by node {}, local store {})",
            self.config.endpoints.join(","),
            self.config.prefix,
            self.size(),
            self.node,
            self.local.root().display()
        )
    }
}

impl PoolStore for BlockStore {
    /// As etcd has them, read at most every [`MANIFESTS_FOR_S`] seconds; while etcd cannot
    /// be reached, as last read (the node goes on allocating from its blocks).
    fn manifests(&self) -> Result<Vec<(String, String)>, StoreError> {
        let now = now();
        let cached = self.dir.manifests().ok().flatten();
        if let Some(cached) = cached.as_ref().filter(|c| c.usable(now)) {
            return Ok(cached.manifests.clone());
        }
        match self.etcd().and_then(|etcd| etcd.manifests()) {
            Ok(manifests) => {
                let copy = Manifests {
                    time: now,
                    tried: 0,
                    manifests,
                };
                self.dir.write_manifests(&copy)?;
                Ok(copy.manifests)
            }
            Err(StoreError::Unavailable { .. }) if cached.is_some() => {
                let mut cached = cached.expect("checked");
                cached.tried = now;
                self.dir.write_manifests(&cached)?;
                Ok(cached.manifests)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
