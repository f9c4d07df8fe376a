//! Where the pools come from, and which of them an ADD may allocate from, per IP family, in
//! the order the config lists them.

use cni::{log_debug, Error, Invocation};
use ipam_store::{
    manifest, Allocations, EtcdConfig, Family, FileStore, Manifest, Pool, PoolStore, StoreConfig,
};

use crate::config::IpamConf;
use crate::errors::{manifest_error, store_error};

/// How a binary reaches a shared store (etcd): `spiderpool-etcd` connects; `spiderpool`, built
/// without the etcd client, hands the invocation over to `spiderpool-etcd` and does not return.
pub type Connect = fn(&Invocation, &EtcdConfig) -> Result<Box<dyn PoolStore>, Error>;

/// The pools of one family, tried in order.
pub struct Candidates<'m> {
    pub family: Family,
    pub pools: Vec<&'m Pool>,
}

/// Where the SpiderIPPool manifests are: the files of `ippool_dir` with the file store, the
/// shared store (where `spiderctl apply --store` puts them) with etcd, so that every node
/// allocates from the same definitions.
pub enum PoolSource {
    Dir,
    Shared(Box<dyn PoolStore>),
}

impl PoolSource {
    /// Connects to the shared store if that is the store; the file store is opened only by
    /// [`PoolSource::into_store`], after the pools were checked, so that a config error leaves
    /// the data dir as it was.
    pub fn open(inv: &Invocation, conf: &IpamConf, connect: Connect) -> Result<PoolSource, Error> {
        Ok(match &conf.store {
            StoreConfig::File => PoolSource::Dir,
            StoreConfig::Etcd(etcd) => PoolSource::Shared(connect(inv, etcd)?),
        })
    }

    /// Reads every pool manifest, logging its warnings.
    pub fn load(&self, conf: &IpamConf) -> Result<Manifest, Error> {
        let manifest = match self {
            PoolSource::Dir => {
                let dir = &conf.ippool_dir;
                if !dir.is_dir() {
                    return Err(Error::InvalidConfig(format!(
                        "ipam.ippool_dir {} does not exist: put the SpiderIPPool manifests there \
                         or point ippool_dir at them",
                        dir.display()
                    )));
                }
                manifest::load_dir(dir).map_err(manifest_error)?
            }
            PoolSource::Shared(store) => {
                manifest::parse_all(store.manifests().map_err(store_error)?)
                    .map_err(manifest_error)?
            }
        };
        for warning in &manifest.warnings {
            // Every ADD reads the manifests: spiderctl is where operators see warnings.
            log_debug!("{warning}");
        }
        Ok(manifest)
    }

    /// Where the pools were read, for messages.
    pub fn describe(&self, conf: &IpamConf) -> String {
        match self {
            PoolSource::Dir => conf.ippool_dir.display().to_string(),
            PoolSource::Shared(store) => format!("{}/ippools/", store.describe()),
        }
    }

    pub fn into_store(self, conf: &IpamConf) -> Result<Box<dyn Allocations>, Error> {
        Ok(match self {
            PoolSource::Dir => Box::new(FileStore::open(&conf.data_dir).map_err(store_error)?),
            PoolSource::Shared(store) => store,
        })
    }
}

/// The store alone, for the commands that need no pools (DEL, CHECK, GC).
pub fn open_store(
    inv: &Invocation,
    conf: &IpamConf,
    connect: Connect,
) -> Result<Box<dyn Allocations>, Error> {
    PoolSource::open(inv, conf, connect)?.into_store(conf)
}

/// The configured pools for each family that has any (v4 first), or the pools marked
/// `spec.default: true` when the config names none.
pub fn candidates<'m>(
    conf: &IpamConf,
    manifest: &'m Manifest,
    origin: &str,
) -> Result<Vec<Candidates<'m>>, Error> {
    let lists = [
        (Family::V4, "default_ipv4_ippool", &conf.v4_pools),
        (Family::V6, "default_ipv6_ippool", &conf.v6_pools),
    ];
    let by_default = conf.v4_pools.is_empty() && conf.v6_pools.is_empty();
    let mut plan = Vec::new();
    for (family, key, names) in lists {
        let pools = if by_default {
            manifest
                .into_iter()
                .filter(|p| p.is_default() && p.family() == family)
                .collect()
        } else {
            names
                .iter()
                .map(|name| named(manifest, origin, key, name, family))
                .collect::<Result<Vec<_>, _>>()?
        };
        if !pools.is_empty() {
            plan.push(Candidates { family, pools });
        }
    }
    if plan.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "no pool to allocate from: list pools in ipam.default_ipv4_ippool / \
             default_ipv6_ippool, or mark one spec.default: true in {origin}"
        )));
    }
    Ok(plan)
}

fn named<'m>(
    manifest: &'m Manifest,
    origin: &str,
    key: &str,
    name: &str,
    family: Family,
) -> Result<&'m Pool, Error> {
    let pool = manifest.get(name).ok_or_else(|| {
        let known: Vec<&str> = manifest.into_iter().map(Pool::name).collect();
        Error::InvalidConfig(format!(
            "ipam.{key}: pool {name:?} not found in {origin} (pools there: {}): apply its \
             SpiderIPPool or fix the name",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ))
    })?;
    if pool.family() != family {
        return Err(Error::InvalidConfig(format!(
            "ipam.{key}: pool {name} is an {} pool (subnet {}): list it under {}",
            pool.family(),
            pool.subnet(),
            if family == Family::V4 {
                "default_ipv6_ippool"
            } else {
                "default_ipv4_ippool"
            }
        )));
    }
    Ok(pool)
}
