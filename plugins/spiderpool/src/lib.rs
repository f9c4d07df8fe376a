//! The `spiderpool` IPAM plugin: addresses from SpiderIPPool pools, kept in a node-local
//! store under `data_dir` or in etcd, shared by every node. One address per configured family,
//! all or nothing. Two binaries run it: `spiderpool`, without the etcd client, and
//! `spiderpool-etcd`, with it (see [`connect`]).

mod config;
pub mod connect;
mod errors;
mod pools;
mod requests;

use std::collections::HashSet;
use std::net::IpAddr;

use cni::types::{CniResult, IpConfig, Route};
use cni::{log_info, Error, Invocation, Plugin};
use ipam_store::{store, Allocations, Owner, Pool, StoreError};
use ipnet::IpNet;
use serde::Deserialize;

use config::IpamConf;
use errors::store_error;
use pools::{open_store, Candidates, PoolSource, Target};
use requests::{RequestedIp, Requests};

pub use pools::Connect;

/// The plugin; `connect` is how this binary reaches a shared store.
pub struct Spiderpool {
    pub connect: Connect,
}

impl Plugin for Spiderpool {
    fn add(&self, inv: &Invocation) -> Result<CniResult, Error> {
        let conf = IpamConf::parse(&inv.stdin)?;
        let requests = Requests::of(&inv.stdin, inv.env.arg("IP"))?;
        let source = PoolSource::open(inv, &conf, self.connect)?;
        let target = Target::of(inv, &conf);
        let loaded = source.load(&conf, &target)?;
        let plan = pools::candidates(&conf, &loaded, &source.describe(&conf), &target)?;
        check_requests(&requests, &plan, &inv.network)?;
        let store = source.into_store(&conf)?;
        let owner = owner(inv);

        let mut result = CniResult::default();
        for candidates in &plan {
            let allocated = match requests.get(candidates.family) {
                Some(request) => {
                    allocate_requested(store.as_ref(), candidates, &inv.network, &owner, request)
                }
                None => allocate(store.as_ref(), candidates, &inv.network, &owner),
            };
            match allocated {
                Ok((pool, ip)) => add_to_result(&mut result, pool, ip, &conf),
                Err(e) => {
                    // All or nothing: give back what the other families got.
                    release(store.as_ref(), inv)?;
                    return Err(e);
                }
            }
        }
        log_info!(
            "ADD {} {} in {}: {:?}",
            owner.container_id,
            owner.ifname,
            inv.network,
            result
                .ips
                .iter()
                .map(|ip| ip.address.to_string())
                .collect::<Vec<_>>()
        );
        Ok(result)
    }

    fn del(&self, inv: &Invocation) -> Result<(), Error> {
        let conf = IpamConf::parse(&inv.stdin)?;
        let store = open_store(inv, &conf, self.connect)?;
        release(store.as_ref(), inv)
    }

    fn check(&self, inv: &Invocation) -> Result<(), Error> {
        let conf = IpamConf::parse(&inv.stdin)?;
        let store = open_store(inv, &conf, self.connect)?;
        let held: HashSet<IpAddr> = store
            .held_by(&inv.network, &inv.env.container_id, &inv.env.ifname)
            .map_err(store_error)?
            .into_iter()
            .map(|(_, ip)| ip)
            .collect();
        if held.is_empty() {
            return Err(Error::CheckFailed(format!(
                "container {} ifname {} holds no address in network {}",
                inv.env.container_id, inv.env.ifname, inv.network
            )));
        }
        let prev = inv.prev_result()?.unwrap_or_default();
        match prev
            .ips
            .iter()
            .find(|ip| !held.contains(&ip.address.addr()))
        {
            Some(ip) => Err(Error::CheckFailed(format!(
                "prevResult lists {} but the store holds {:?} for container {} ifname {}",
                ip.address, held, inv.env.container_id, inv.env.ifname
            ))),
            None => Ok(()),
        }
    }

    fn gc(&self, inv: &Invocation) -> Result<(), Error> {
        let conf = IpamConf::parse(&inv.stdin)?;
        let valid = valid_attachments(inv)?;
        let store = open_store(inv, &conf, self.connect)?;
        let keep = |id: &str, ifname: &str| valid.contains(&(id.to_owned(), ifname.to_owned()));
        let released = store.gc(&inv.network, &keep).map_err(store_error)?;
        // Block mode: the releasing is done; blocks that wait for a share or a return wait
        // for the next pass if etcd does not answer now.
        if let Err(e) = store.upkeep(store::DEFAULT_RETURN_AFTER_S) {
            log_info!("GC {}: block upkeep: {e}", inv.network);
        }
        for record in &released {
            log_info!(
                "GC {}: released {} of {} {} (pool {})",
                inv.network,
                record.ip,
                record.owner.container_id,
                record.owner.ifname,
                record.pool
            );
        }
        Ok(())
    }

    fn status(&self, inv: &Invocation) -> Result<(), Error> {
        let ready = || -> Result<(), Error> {
            let conf = IpamConf::parse(&inv.stdin)?;
            let source = PoolSource::open(inv, &conf, self.connect)?;
            let target = Target::of(inv, &conf);
            let loaded = source.load(&conf, &target)?;
            pools::candidates(&conf, &loaded, &source.describe(&conf), &target)?;
            source.into_store(&conf)?.check_ready().map_err(store_error)
        };
        ready().map_err(|e| Error::NotAvailable(e.to_string()))
    }
}

fn owner(inv: &Invocation) -> Owner {
    let arg = |key| inv.env.arg(key).map(str::to_owned);
    Owner {
        container_id: inv.env.container_id.clone(),
        ifname: inv.env.ifname.clone(),
        netns: inv.env.netns.clone(),
        pod_namespace: arg("K8S_POD_NAMESPACE"),
        pod_name: arg("K8S_POD_NAME"),
        node: store::this_node(),
    }
}

/// An address from the first pool of `candidates` that has one. A repeated ADD gets the
/// address it already holds, from whichever listed pool holds it, never a second one.
fn allocate<'m>(
    store: &dyn Allocations,
    candidates: &Candidates<'m>,
    network: &str,
    owner: &Owner,
) -> Result<(&'m Pool, IpAddr), Error> {
    let held = store
        .held_by(network, &owner.container_id, &owner.ifname)
        .map_err(store_error)?;
    let holding = candidates
        .pools
        .iter()
        .find(|pool| held.iter().any(|(name, _)| name == pool.name()));
    let order = holding.into_iter().chain(&candidates.pools);
    let mut refusals = Vec::new();
    for &pool in order {
        match store.allocate(pool, network, owner) {
            Ok(ip) => return Ok((pool, ip)),
            Err(e @ (StoreError::Exhausted { .. } | StoreError::Disabled { .. })) => {
                refusals.push(e.to_string())
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(Error::PoolExhausted(format!(
        "no {} address left for {} {}: {}",
        candidates.family,
        owner.container_id,
        owner.ifname,
        refusals.join("; ")
    )))
}

/// Refuses, before the store is touched, a request that no candidate pool could give: in a
/// family the network allocates none of, or in none of that family's pools.
fn check_requests(requests: &Requests, plan: &[Candidates], network: &str) -> Result<(), Error> {
    for request in requests.iter() {
        let family = request.family();
        let Some(candidates) = plan.iter().find(|c| c.family == family) else {
            return Err(Error::RequestRefused(format!(
                "requested {request} is {family}, but network {network} allocates no {family} \
                 address (no {family} pool in its ipam config): drop the request or add {family} \
                 pools"
            )));
        };
        if !candidates
            .pools
            .iter()
            .any(|pool| pool.allocatable().contains(request.ip))
        {
            return Err(Error::RequestRefused(format!(
                "requested {request} is in none of the {family} pools of network {network}: {}; \
                 ask for one of their addresses or add it to a pool's spec.ips",
                describe_pools(&candidates.pools)
            )));
        }
    }
    Ok(())
}

/// `pool (addresses), ...`, for messages.
fn describe_pools(pools: &[&Pool]) -> String {
    pools
        .iter()
        .map(|p| format!("{} ({})", p.name(), p.allocatable()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Exactly `request`, from the first candidate pool that has it and can give it; a refusal
/// names the address and every pool considered with its reason.
fn allocate_requested<'m>(
    store: &dyn Allocations,
    candidates: &Candidates<'m>,
    network: &str,
    owner: &Owner,
    request: RequestedIp,
) -> Result<(&'m Pool, IpAddr), Error> {
    let refuse = |why: String| {
        Error::RequestRefused(format!(
            "requested {request} cannot be given to {} {} in network {network}: {why}",
            owner.container_id, owner.ifname
        ))
    };
    // A repeated ADD asking for another address than the one it holds would end with two.
    let held = store
        .held_by(network, &owner.container_id, &owner.ifname)
        .map_err(store_error)?;
    let other = held
        .iter()
        .find(|(pool, ip)| *ip != request.ip && candidates.pools.iter().any(|p| p.name() == pool));
    if let Some((pool, ip)) = other {
        return Err(refuse(format!(
            "it already holds {ip} from pool {pool}; release it first (DEL)"
        )));
    }
    let mut refusals = Vec::new();
    let having = candidates
        .pools
        .iter()
        .filter(|pool| pool.allocatable().contains(request.ip));
    for &pool in having {
        let pool_prefix = pool.subnet().prefix_len();
        if let Some(asked) = request.prefix.filter(|&len| len != pool_prefix) {
            refusals.push(format!(
                "pool {} is {} (the address would get /{pool_prefix}, not the /{asked} asked for)",
                pool.name(),
                pool.subnet(),
            ));
            continue;
        }
        match store.allocate_exact(pool, network, owner, request.ip) {
            Ok(ip) => return Ok((pool, ip)),
            Err(e @ (StoreError::Refused { .. } | StoreError::Disabled { .. })) => {
                refusals.push(e.to_string())
            }
            Err(e) => return Err(store_error(e)),
        }
    }
    Err(refuse(format!(
        "{}; pools considered: {}",
        refusals.join("; "),
        describe_pools(&candidates.pools)
    )))
}

fn add_to_result(result: &mut CniResult, pool: &Pool, ip: IpAddr, conf: &IpamConf) {
    let address = IpNet::new(ip, pool.subnet().prefix_len()).expect("the pool's prefix fits");
    result.ips.push(IpConfig {
        address,
        gateway: pool.gateway().filter(|_| !conf.clean_gateway),
        interface: None,
    });
    result
        .routes
        .extend(pool.routes().iter().map(|r| Route::new(r.dst, Some(r.gw))));
}

fn release(store: &dyn Allocations, inv: &Invocation) -> Result<(), Error> {
    let released = store
        .release(&inv.network, &inv.env.container_id, &inv.env.ifname)
        .map_err(store_error)?;
    for (pool, ip) in released {
        log_info!(
            "released {ip} (pool {pool}) of {} {}",
            inv.env.container_id,
            inv.env.ifname
        );
    }
    Ok(())
}

/// CNI 1.1 GC: the attachments still in use, under the spec's key or its draft's.
fn valid_attachments(inv: &Invocation) -> Result<HashSet<(String, String)>, Error> {
    #[derive(Deserialize)]
    struct Attachment {
        #[serde(rename = "containerID")]
        container_id: String,
        ifname: String,
    }
    #[derive(Deserialize)]
    struct Gc {
        #[serde(rename = "cni.dev/valid-attachments")]
        valid: Option<Vec<Attachment>>,
        #[serde(rename = "cni.dev/attachments")]
        draft: Option<Vec<Attachment>>,
    }
    let gc: Gc = cni::types::parse_config(&inv.stdin, "GC config")?;
    let Some(list) = gc.valid.or(gc.draft) else {
        return Err(Error::InvalidConfig(
            "GC needs cni.dev/valid-attachments (the attachments still in use): without it \
             every allocation would look stale"
                .into(),
        ));
    };
    Ok(list
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect())
}
