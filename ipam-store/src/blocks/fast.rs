//! Block mode without the etcd client: what `spiderpool` (built without it) serves itself,
//! the ADDs and DELs inside the node's exclusive blocks while its manifests copy is fresh.
//! Everything else needs etcd and is handed over (`escalate`: `spiderpool` execs
//! `spiderpool-etcd` with the same invocation, which redoes it whole; what was done here is
//! found again, a repeated ADD getting its address back).

use std::net::IpAddr;
use std::path::Path;

use super::local::LocalDir;
use super::{allocate_in_blocks, check_request, due, now, silent_for};
use crate::error::StoreError;
use crate::file_store::FileStore;
use crate::names::NameKind;
use crate::pool::Pool;
use crate::record::{check_name, Key, Owner, Record};
use crate::store::{Allocations, Attachment, EtcdConfig, PoolStore};

/// Called when etcd is needed: returns only if handing over failed.
pub type Escalate = Box<dyn Fn() -> StoreError>;

pub struct LocalBlocks {
    config: EtcdConfig,
    local: FileStore,
    dir: LocalDir,
    escalate: Escalate,
}

impl LocalBlocks {
    /// The node's local store in `data_dir`, as it is: a missing one needs etcd (a first
    /// lease), so it is handed over, not created.
    pub fn open(
        config: &EtcdConfig,
        data_dir: &Path,
        escalate: Escalate,
    ) -> Result<LocalBlocks, StoreError> {
        let local = match FileStore::open_existing(data_dir) {
            Ok(local) => local,
            Err(_) => return Err(escalate()),
        };
        Ok(LocalBlocks {
            config: config.clone(),
            dir: LocalDir::new(local.root()),
            local,
            escalate,
        })
    }

    fn allocate_with(
        &self,
        pool: &Pool,
        network: &str,
        owner: &Owner,
        want: Option<IpAddr>,
    ) -> Result<IpAddr, StoreError> {
        Key::checked(network, &owner.container_id, &owner.ifname)?;
        check_name(NameKind::Pool, pool.name())?;
        let size = self.config.block_size;
        let ip = {
            let _lock = self.dir.lock(pool.name())?;
            let state = self.dir.read(pool.name())?;
            check_request(pool, &state, size, want)?;
            let now = now();
            let offline_s = self.config.offline_s;
            if due(&state, now, offline_s) || silent_for(&state, now, offline_s).is_some() {
                return Err((self.escalate)());
            }
            allocate_in_blocks(&self.local, pool, &state, size, network, owner, want)?
        };
        let Some(ip) = ip else {
            return Err((self.escalate)());
        };
        self.local.flush(pool.name())?;
        Ok(ip)
    }
}

impl Allocations for LocalBlocks {
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

    /// Local; an attachment that borrowed also has an etcd record: handed over after the
    /// local release, which the other binary finds done.
    fn release(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<(String, IpAddr)>, StoreError> {
        let key = Key::checked(network, container_id, ifname)?;
        let released = self.local.release(network, container_id, ifname)?;
        if self.dir.is_borrowed(key)? {
            return Err((self.escalate)());
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

    fn gc(&self, _: &str, _: &dyn Fn(&str, &str) -> bool) -> Result<Vec<Record>, StoreError> {
        Err((self.escalate)())
    }

    fn node_records(&self) -> Result<Vec<Record>, StoreError> {
        self.local.node_records()
    }

    fn held(&self, pool: &str) -> Result<Vec<(IpAddr, Record)>, StoreError> {
        self.local.held(pool)
    }

    fn pools(&self) -> Result<Vec<String>, StoreError> {
        self.local.pools()
    }

    fn attachments(&self, network: &str) -> Result<Vec<Attachment>, StoreError> {
        self.local.attachments(network)
    }

    fn check_ready(&self) -> Result<(), StoreError> {
        Err((self.escalate)())
    }

    fn describe(&self) -> String {
        format!(
            "etcd {} (prefix {}, blocks of {}, local store {})",
            self.config.endpoints.join(","),
            self.config.prefix,
            self.config.block_size,
            self.local.root().display()
        )
    }
}

impl PoolStore for LocalBlocks {
    /// The node's copy, while fresh.
    fn manifests(&self) -> Result<Vec<(String, String)>, StoreError> {
        match self.dir.manifests().ok().flatten() {
            Some(cached) if cached.usable(now()) => Ok(cached.manifests),
            _ => Err((self.escalate)()),
        }
    }
}
