//! Warnings about pools (a CIDR with host bits set, nothing left to allocate): said once per
//! pool in a run, however many files or steps meet the pool, on stderr; `--quiet` silences
//! them. A command's errors are never silenced.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use ipam_store::manifest::Warning;

static QUIET: AtomicBool = AtomicBool::new(false);
/// The pools warned about so far in this run.
static SAID: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Prints the warnings of each pool not warned about yet, as one line per pool.
pub fn pools(warnings: &[Warning]) {
    for line in lines(
        warnings,
        &mut SAID.lock().unwrap_or_else(|e| e.into_inner()),
    ) {
        if !QUIET.load(Ordering::Relaxed) {
            eprintln!("{line}");
        }
    }
}

/// The lines for the pools of `warnings` that are not in `said`, which they are added to.
fn lines(warnings: &[Warning], said: &mut BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for w in warnings {
        if said.contains(&w.pool) {
            continue;
        }
        let all: Vec<String> = warnings
            .iter()
            .filter(|o| o.pool == w.pool)
            .map(|o| o.warning.to_string())
            .collect();
        out.push(format!(
            "warning: pool {} ({}): {}",
            w.pool,
            w.source,
            all.join("; ")
        ));
        said.insert(w.pool.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam_store::pool::PoolWarning;

    fn warning(pool: &str, source: &str, warning: PoolWarning) -> Warning {
        Warning {
            source: source.into(),
            pool: pool.into(),
            warning,
        }
    }

    #[test]
    fn each_pool_is_warned_about_once_with_all_its_warnings() {
        let host_bits = PoolWarning::HostBitsSet {
            field: "spec.subnet".into(),
            written: "10.0.0.1/24".into(),
            network: "10.0.0.0/24".parse().unwrap(),
        };
        let first = [
            warning("a", "a.yaml", host_bits.clone()),
            warning("a", "a.yaml", PoolWarning::NoAddresses),
            warning("b", "b.yaml", host_bits.clone()),
        ];
        let mut said = BTreeSet::new();
        let lines1 = lines(&first, &mut said);
        assert_eq!(lines1.len(), 2, "{lines1:?}");
        assert!(lines1[0].starts_with("warning: pool a (a.yaml): spec.subnet: 10.0.0.1/24"));
        assert!(
            lines1[0].contains("; no allocatable addresses"),
            "{lines1:?}"
        );
        // The same pools met again (another file, another step): nothing more is said.
        assert!(lines(&first, &mut said).is_empty());
        let more = [warning("c", "c.yaml", host_bits)];
        assert_eq!(lines(&more, &mut said).len(), 1);
    }
}
