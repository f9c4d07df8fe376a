//! Pool edits never strand a live pod, as spiderpool's webhook guards them: a change that
//! would leave a held address outside its pool (narrower `ips`, new `excludeIPs`, another
//! `subnet`, a SpiderReservedIP over it) is refused, naming each such address and its pod,
//! unless forced. Addresses outside their pool already (a forced or hand edit) do not block
//! again. Forced or not, the stores never hand out a held address, and DEL releases it.

use ipam_store::{Allocations, Manifest, Record};

use crate::status::pod_name;

/// A held address the new definitions put outside its pool.
pub struct Stranded {
    pub pool: String,
    pub ip: std::net::IpAddr,
    pub record: Record,
}

/// The held addresses of `new`'s pools that `old` (the definitions in force) had inside.
pub fn stranded(
    old: &Manifest,
    new: &Manifest,
    store: &dyn Allocations,
) -> Result<Vec<Stranded>, String> {
    let mut out = Vec::new();
    for pool in new {
        let was = old.get(pool.name());
        for (ip, record) in store.held(pool.name()).map_err(|e| e.to_string())? {
            let newly_outside = !pool.allocatable().contains(ip)
                && was.is_none_or(|old| old.allocatable().contains(ip));
            if newly_outside {
                out.push(Stranded {
                    pool: pool.name().into(),
                    ip,
                    record,
                });
            }
        }
    }
    Ok(out)
}

/// The refusal: every stranded address with its holder, and the way out.
pub fn refusal(stranded: &[Stranded]) -> String {
    let lines: Vec<String> = stranded
        .iter()
        .map(|s| {
            format!(
                "  {} of pool {} held by {} ({} {} in network {})",
                s.ip,
                s.pool,
                pod_name(&s.record.owner.pod_namespace, &s.record.owner.pod_name),
                s.record.owner.container_id,
                s.record.owner.ifname,
                s.record.network
            )
        })
        .collect();
    format!(
        "refused: the change would leave {} held address(es) outside their pool:\n{}\n\
         delete those pods first, or apply with --force (the addresses stay held, are never \
         handed out again, and are released by their DEL)",
        stranded.len(),
        lines.join("\n")
    )
}
