//! Which pools an ADD may allocate from, per IP family, in the order the config lists them.

use std::path::Path;

use cni::{log_debug, Error};
use ipam_store::{manifest, Family, Manifest, Pool};

use crate::config::IpamConf;
use crate::errors::manifest_error;

/// The pools of one family, tried in order.
pub struct Candidates<'m> {
    pub family: Family,
    pub pools: Vec<&'m Pool>,
}

/// Reads every pool manifest of `ippool_dir`, logging its warnings.
pub fn load(dir: &Path) -> Result<Manifest, Error> {
    if !dir.is_dir() {
        return Err(Error::InvalidConfig(format!(
            "ipam.ippool_dir {} does not exist: put the SpiderIPPool manifests there or point \
             ippool_dir at them",
            dir.display()
        )));
    }
    let manifest = manifest::load_dir(dir).map_err(manifest_error)?;
    for warning in &manifest.warnings {
        // Every ADD reads the manifests: spiderctl is where operators see warnings.
        log_debug!("{warning}");
    }
    Ok(manifest)
}

/// The configured pools for each family that has any (v4 first), or the pools marked
/// `spec.default: true` when the config names none.
pub fn candidates<'m>(
    conf: &IpamConf,
    manifest: &'m Manifest,
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
                .map(|name| named(manifest, conf, key, name, family))
                .collect::<Result<Vec<_>, _>>()?
        };
        if !pools.is_empty() {
            plan.push(Candidates { family, pools });
        }
    }
    if plan.is_empty() {
        return Err(Error::InvalidConfig(format!(
            "no pool to allocate from: list pools in ipam.default_ipv4_ippool / \
             default_ipv6_ippool, or mark one spec.default: true in {}",
            conf.ippool_dir.display()
        )));
    }
    Ok(plan)
}

fn named<'m>(
    manifest: &'m Manifest,
    conf: &IpamConf,
    key: &str,
    name: &str,
    family: Family,
) -> Result<&'m Pool, Error> {
    let pool = manifest.get(name).ok_or_else(|| {
        let known: Vec<&str> = manifest.into_iter().map(Pool::name).collect();
        Error::InvalidConfig(format!(
            "ipam.{key}: pool {name:?} not found in {} (pools there: {}): apply its \
             SpiderIPPool or fix the name",
            conf.ippool_dir.display(),
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
