//! Where the pools come from, and which of them an ADD may allocate from, per IP family, in
//! the order the config lists them (a pattern's matches in name order), after the pools'
//! filters (`nodeName`, `nodeAffinity`, `namespaceName`, `multusName`) had their say.

use cni::{log_debug, log_info, Error, Invocation};
use ipam_store::filters::{Context, NodeLabels};
use ipam_store::pool_dir::{self, Loaded, Wanted};
use ipam_store::{
    pattern, store, Allocations, EtcdConfig, Family, FileStore, Pool, PoolStore, StoreConfig,
};

use crate::config::IpamConf;
use crate::errors::{manifest_error, store_error};

/// How a binary reaches a shared store (etcd): `spiderpool-etcd` connects; `spiderpool`, built
/// without the etcd client, hands the invocation over to `spiderpool-etcd` and does not return.
pub type Connect =
    fn(&Invocation, &EtcdConfig, &std::path::Path) -> Result<Box<dyn PoolStore>, Error>;

/// At most this many excluded pools are named in a message (a wildcard can match a thousand).
const MAX_NAMED: usize = 20;

/// The pools of one family, tried in order.
pub struct Candidates<'m> {
    pub family: Family,
    pub pools: Vec<&'m Pool>,
}

/// What the filters see of one ADD: this node and its labels, the pod's namespace, the network.
pub struct Target {
    node: String,
    labels: NodeLabels,
    namespace: Option<String>,
    network: String,
}

impl Target {
    pub fn of(inv: &Invocation, conf: &IpamConf) -> Target {
        Target {
            // Without a name no nodeName matches: the message says "(unknown)".
            node: store::this_node().unwrap_or_else(|| "(unknown)".into()),
            labels: NodeLabels::from_file(&conf.node_labels_file),
            namespace: inv.env.arg("K8S_POD_NAMESPACE").map(str::to_owned),
            network: inv.network.clone(),
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            node: &self.node,
            labels: &self.labels,
            namespace: self.namespace.as_deref(),
            network: &self.network,
        }
    }
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
            StoreConfig::Etcd(etcd) => PoolSource::Shared(connect(inv, etcd, &conf.data_dir)?),
        })
    }

    /// The pools the config's lists can name, enough to choose the candidates from: through
    /// the pool dir's index when that suffices, else every manifest (so that a refusal can
    /// name every pool considered).
    pub fn load(&self, conf: &IpamConf, target: &Target) -> Result<Loaded, Error> {
        let entries: Vec<&str> = conf
            .v4_pools
            .iter()
            .chain(&conf.v6_pools)
            .map(String::as_str)
            .collect();
        let wanted = match entries.is_empty() {
            true => Wanted::Defaults,
            false => Wanted::Entries(&entries),
        };
        let mut loaded = self.read(conf, target, &wanted, false)?;
        if !loaded.complete && candidates(conf, &loaded, "", target).is_err() {
            loaded = self.read(conf, target, &wanted, true)?;
        }
        for warning in &loaded.manifest.warnings {
            // Every ADD reads the manifests: spiderctl is where operators see warnings.
            log_debug!("{warning}");
        }
        for skipped in &loaded.skipped {
            log_info!(
                "pool manifest {} skipped: it defines no pool this network uses: {}",
                skipped.source,
                skipped.error
            );
        }
        Ok(loaded)
    }

    fn read(
        &self,
        conf: &IpamConf,
        target: &Target,
        wanted: &Wanted,
        complete: bool,
    ) -> Result<Loaded, Error> {
        match self {
            PoolSource::Dir => {
                let dir = &conf.ippool_dir;
                if !dir.is_dir() {
                    return Err(Error::InvalidConfig(format!(
                        "ipam.ippool_dir {} does not exist: put the SpiderIPPool manifests there \
                         or point ippool_dir at them",
                        dir.display()
                    )));
                }
                match complete {
                    true => pool_dir::load_all(dir, &target.node, wanted),
                    false => pool_dir::load(dir, &target.node, wanted),
                }
                .map_err(manifest_error)
            }
            PoolSource::Shared(store) => {
                let sources = store.manifests().map_err(store_error)?;
                // Keys are `<prefix>/ippools/<pool>`: the last part names the pool.
                let stem = |key: &str| key.rsplit('/').next().unwrap_or(key).to_owned();
                pool_dir::parse_tolerant(sources, wanted, stem).map_err(manifest_error)
            }
        }
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

/// The pools each family may allocate from (v4 first): the listed ones, or those marked
/// `spec.default: true` when the config lists none, that this pod may use on this node.
pub fn candidates<'m>(
    conf: &IpamConf,
    loaded: &'m Loaded,
    origin: &str,
    target: &Target,
) -> Result<Vec<Candidates<'m>>, Error> {
    let manifest = &loaded.manifest;
    let lists = [
        (Family::V4, "default_ipv4_ippool", &conf.v4_pools),
        (Family::V6, "default_ipv6_ippool", &conf.v6_pools),
    ];
    let by_default = conf.v4_pools.is_empty() && conf.v6_pools.is_empty();
    let names: Vec<&str> = manifest.into_iter().map(Pool::name).collect();
    let context = target.context();
    let mut plan = Vec::new();
    let mut excluded_defaults = Vec::new();
    for (family, key, list) in lists {
        let considered: Vec<&Pool> = if by_default {
            manifest
                .into_iter()
                .filter(|p| p.is_default() && p.family() == family)
                .collect()
        } else {
            for entry in list.iter().filter(|e| !pattern::is_pattern(e)) {
                named(loaded, origin, key, entry, family)?;
            }
            pattern::expand(list, &names)
                .into_iter()
                .filter_map(|name| manifest.get(name))
                // A pattern may match pools of the other family: those are the other list's.
                .filter(|p| p.family() == family)
                .collect()
        };
        let mut exclusions = Vec::new();
        let pools: Vec<&Pool> = considered
            .into_iter()
            .filter(|pool| match pool.filters().check(&context) {
                Ok(()) => true,
                Err(why) => {
                    exclusions.push(format!("{}: {why}", pool.name()));
                    false
                }
            })
            .collect();
        if !pools.is_empty() {
            plan.push(Candidates { family, pools });
        } else if by_default {
            excluded_defaults.extend(exclusions);
        } else if !list.is_empty() {
            return Err(no_candidate(target, family, key, list, &exclusions, loaded));
        }
    }
    if plan.is_empty() && !excluded_defaults.is_empty() {
        let key = "pools marked spec.default";
        return Err(no_candidate(
            target,
            Family::V4,
            key,
            &[],
            &excluded_defaults,
            loaded,
        ));
    }
    if plan.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "no pool to allocate from: list pools in ipam.default_ipv4_ippool / \
             default_ipv6_ippool, or mark one spec.default: true in {origin}"
        )));
    }
    Ok(plan)
}

/// Code 110: each pool considered and the filter that excluded it.
fn no_candidate(
    target: &Target,
    family: Family,
    key: &str,
    list: &[String],
    exclusions: &[String],
    loaded: &Loaded,
) -> Error {
    let mut named: Vec<String> = exclusions.iter().take(MAX_NAMED).cloned().collect();
    if exclusions.len() > MAX_NAMED {
        named.push(format!("and {} more", exclusions.len() - MAX_NAMED));
    }
    let considered = match named.is_empty() {
        true => format!("no {family} pool matches {}", list.join(", ")),
        false => named.join("; "),
    };
    Error::NoCandidatePool(format!(
        "no {family} pool of ipam.{key} may serve this pod of network {} on node {}: {considered}; \
         bind a pool to this node/namespace/network or list another{}",
        target.network,
        target.node,
        skipped_note(loaded)
    ))
}

/// ` (skipped, not parsable: a.yaml: ...)`, or nothing.
fn skipped_note(loaded: &Loaded) -> String {
    if loaded.skipped.is_empty() {
        return String::new();
    }
    let files: Vec<String> = loaded
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.source, s.error))
        .collect();
    format!(" (manifests skipped as unparsable: {})", files.join("; "))
}

/// Checks a pool named without wildcards: it exists, and is of the list's family.
fn named(
    loaded: &Loaded,
    origin: &str,
    key: &str,
    name: &str,
    family: Family,
) -> Result<(), Error> {
    let manifest = &loaded.manifest;
    let pool = manifest.get(name).ok_or_else(|| {
        let known: Vec<&str> = manifest.into_iter().map(Pool::name).collect();
        Error::InvalidConfig(format!(
            "ipam.{key}: pool {name:?} not found in {origin} (pools there: {}): apply its \
             SpiderIPPool or fix the name{}",
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            },
            skipped_note(loaded)
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
    Ok(())
}
