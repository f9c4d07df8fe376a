//! What the agent counts and measures, and its Prometheus text exposition (format 0.0.4).
//! Names follow Prometheus' conventions (`promtool check metrics` passes on them): a
//! `spiderpool_agent_` prefix, base units, `_total` only on counters.

use std::fmt::Write;
use std::sync::Mutex;

/// One pool's addresses: `total` from its manifest (none when only the store knows the pool),
/// `allocated` from the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolUsage {
    pub name: String,
    pub total: Option<u64>,
    pub allocated: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Values {
    pub pools: Vec<PoolUsage>,
    pub gc_released: u64,
    pub gc_pending: u64,
    pub gc_passes: u64,
    pub last_gc_success: Option<f64>,
    pub config_applies: u64,
    pub config_failures: u64,
    pub store_errors: u64,
    pub plugin_updates: u64,
    pub install_failures: u64,
}

#[derive(Default)]
pub struct Metrics {
    values: Mutex<Values>,
}

impl Metrics {
    /// Changes the values under the lock (a scrape sees all of one pass's changes or none).
    pub fn update(&self, change: impl FnOnce(&mut Values)) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut values);
    }

    pub fn snapshot(&self) -> Values {
        self.values
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The exposition of the current values.
    pub fn render(&self) -> String {
        let v = self.snapshot();
        let mut out = String::new();
        let pool_family = |out: &mut String,
                           name: &str,
                           help: &str,
                           value: &dyn Fn(&PoolUsage) -> Option<u64>| {
            family(out, name, "gauge", help);
            for pool in &v.pools {
                if let Some(n) = value(pool) {
                    let _ = writeln!(out, "{name}{{pool=\"{}\"}} {n}", escape(&pool.name));
                }
            }
        };
        pool_family(
            &mut out,
            "spiderpool_agent_pool_addresses",
            "Addresses the pool hands out (its manifest's ips less excludeIPs).",
            &|p| p.total,
        );
        pool_family(
            &mut out,
            "spiderpool_agent_pool_allocated_addresses",
            "Addresses of the pool held in the store.",
            &|p| Some(p.allocated),
        );
        pool_family(
            &mut out,
            "spiderpool_agent_pool_free_addresses",
            "Addresses of the pool not held.",
            &|p| p.total.map(|t| t.saturating_sub(p.allocated)),
        );
        let scalars: [(&str, &str, &str, Option<f64>); 9] = [
            (
                "spiderpool_agent_gc_released_total",
                "counter",
                "Allocations released by GC since the agent started.",
                Some(v.gc_released as f64),
            ),
            (
                "spiderpool_agent_gc_pending_releases",
                "gauge",
                "Allocations whose netns is gone, waiting for more consecutive misses.",
                Some(v.gc_pending as f64),
            ),
            (
                "spiderpool_agent_gc_passes_total",
                "counter",
                "GC passes completed.",
                Some(v.gc_passes as f64),
            ),
            (
                "spiderpool_agent_gc_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last GC pass that completed.",
                v.last_gc_success,
            ),
            (
                "spiderpool_agent_config_applies_total",
                "counter",
                "Successful applies of the config dir.",
                Some(v.config_applies as f64),
            ),
            (
                "spiderpool_agent_config_apply_failures_total",
                "counter",
                "Applies of the config dir that were refused (the last good config stays).",
                Some(v.config_failures as f64),
            ),
            (
                "spiderpool_agent_store_errors_total",
                "counter",
                "Failed operations on the IPAM store.",
                Some(v.store_errors as f64),
            ),
            (
                "spiderpool_agent_plugin_updates_total",
                "counter",
                "Plugin binaries written into the CNI bin dir.",
                Some(v.plugin_updates as f64),
            ),
            (
                "spiderpool_agent_plugin_install_failures_total",
                "counter",
                "Install passes that failed.",
                Some(v.install_failures as f64),
            ),
        ];
        for (name, kind, help, value) in scalars {
            family(&mut out, name, kind, help);
            if let Some(value) = value {
                let _ = writeln!(out, "{name} {value}");
            }
        }
        out
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format quotes it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_pools_and_counters() {
        let metrics = Metrics::default();
        metrics.update(|v| {
            v.pools = vec![
                PoolUsage {
                    name: "gpu1-net11".into(),
                    total: Some(200),
                    allocated: 3,
                },
                PoolUsage {
                    name: "gone".into(),
                    total: None,
                    allocated: 1,
                },
            ];
            v.gc_released = 2;
        });
        let text = metrics.render();
        assert!(
            text.contains("spiderpool_agent_pool_free_addresses{pool=\"gpu1-net11\"} 197\n"),
            "{text}"
        );
        assert!(
            text.contains("spiderpool_agent_pool_allocated_addresses{pool=\"gone\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("spiderpool_agent_pool_addresses{pool=\"gone\"}"),
            "{text}"
        );
        assert!(
            text.contains("spiderpool_agent_gc_released_total 2\n"),
            "{text}"
        );
        assert!(
            !text.contains("\nspiderpool_agent_gc_last_success_timestamp_seconds "),
            "{text}"
        );
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
