//! `spiderctl agent`: the long-running process of the node DaemonSet. Each pass installs the
//! plugins ([`install`]), applies the config dir when it changed ([`sync`]) and reclaims this
//! node's leaked allocations ([`gc`]); in between, the config dir is polled. `/metrics`,
//! `/healthz` and `/readyz` are served on `--metrics-addr` ([`endpoints`], [`metrics`]).
//! SIGTERM ends the loop after the pass under way ([`signals`]). `--once` runs one pass and
//! exits, non-zero if any part of it failed (for init containers and tests).

mod endpoints;
mod gc;
mod install;
mod metrics;
mod signals;
mod sync;

use crate::duration;
use crate::gc::held_counts;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use endpoints::Health;
use gc::MissCounter;
use metrics::{Metrics, PoolUsage};
use sync::ConfigWatch;

use crate::store_args::{load_pools, StoreArgs};
use crate::DEFAULT_IPPOOL_DIR;

/// How often the loop looks at the stop flag while it waits.
const TICK: Duration = Duration::from_millis(100);

#[derive(clap::Args)]
pub struct AgentArgs {
    /// The host's CNI plugin dir, where the plugins are installed.
    #[arg(long, default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
    /// The host's CNI config dir, where the conflists go.
    #[arg(long, default_value = crate::DEFAULT_CNI_CONF_DIR)]
    pub cni_conf_dir: PathBuf,
    /// SpiderIPPool / SpiderMultusConfig manifests to keep applied (a mounted ConfigMap);
    /// without it nothing is applied.
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// Where the pool files go (file store).
    #[arg(long, default_value = DEFAULT_IPPOOL_DIR)]
    pub ippool_dir: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Time between GC passes (Go-style: 30s, 5m, 1h).
    #[arg(long, default_value = "5m", value_parser = duration::parse)]
    pub gc_interval: Duration,
    /// Consecutive passes an allocation's netns must be found gone before it is released.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub gc_misses: u32,
    /// How often the config dir is compared with what was applied (Go-style).
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    pub config_poll: Duration,
    /// Address of /metrics, /healthz and /readyz; port 0 picks a free port (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:9641")]
    pub metrics_addr: SocketAddr,
    /// Where the plugins to install are (default: the agent executable's directory).
    #[arg(long)]
    pub plugins_from: Option<PathBuf>,
    /// One pass of everything, then exit (no HTTP server).
    #[arg(long)]
    pub once: bool,
}

pub fn run(args: &AgentArgs) -> Result<(), String> {
    signals::install()?;
    let plugins = install::source_dir(args.plugins_from.as_deref())?;
    let metrics = Arc::new(Metrics::default());
    // A loop that has not got round in three intervals (or a minute) is stuck.
    let health = Arc::new(Health::new(
        (args.gc_interval * 3).max(Duration::from_secs(60)),
    ));
    if !args.once {
        let bound = endpoints::serve(args.metrics_addr, Arc::clone(&metrics), Arc::clone(&health))?;
        eprintln!("agent: serving /metrics /healthz /readyz on http://{bound}");
    }
    let mut agent = Agent {
        args,
        plugins,
        watch: args.config_dir.as_deref().map(ConfigWatch::new),
        misses: MissCounter::new(&args.store.data_dir, args.gc_misses),
        metrics,
        health,
        installed: false,
        config_in_force: args.config_dir.is_none(),
    };
    loop {
        let failures = agent.pass();
        if args.once {
            return match failures.as_slice() {
                [] => Ok(()),
                _ => Err(format!("the pass failed: {}", failures.join("; "))),
            };
        }
        if !agent.wait(Instant::now() + args.gc_interval) {
            eprintln!("agent: stopping on signal, after a complete pass");
            return Ok(());
        }
    }
}

struct Agent<'a> {
    args: &'a AgentArgs,
    plugins: PathBuf,
    watch: Option<ConfigWatch>,
    misses: MissCounter,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    installed: bool,
    /// Whether some config was applied (a bad edit later leaves it in force).
    config_in_force: bool,
}

impl Agent<'_> {
    /// Install, sync, GC; returns what failed (each part runs even when another failed).
    fn pass(&mut self) -> Vec<String> {
        eprintln!("agent: pass started");
        let failures: Vec<String> = [self.install(), self.sync(), self.collect()]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        for failure in &failures {
            eprintln!("agent: {failure}");
        }
        self.update_readiness();
        self.health.beat();
        eprintln!("agent: pass done ({} failure(s))", failures.len());
        if signals::stopping() {
            eprintln!("agent: a stop signal arrived during the pass; the pass completed first");
        }
        failures
    }

    /// Waits until `until`, applying the config dir whenever it changes; false when a signal
    /// asked to stop.
    fn wait(&mut self, until: Instant) -> bool {
        let mut next_poll = Instant::now() + self.args.config_poll;
        while Instant::now() < until {
            if signals::stopping() {
                return false;
            }
            if Instant::now() >= next_poll {
                if let Err(e) = self.sync() {
                    eprintln!("agent: {e}");
                }
                self.update_readiness();
                self.health.beat();
                next_poll = Instant::now() + self.args.config_poll;
            }
            std::thread::sleep(TICK.min(until.saturating_duration_since(Instant::now())));
        }
        !signals::stopping()
    }

    fn install(&mut self) -> Result<(), String> {
        match install::install(&self.plugins, &self.args.cni_bin_dir) {
            Ok(changes) => {
                let written = changes
                    .iter()
                    .filter(|(_, c)| *c != crate::fsutil::Change::Unchanged)
                    .inspect(|(name, change)| {
                        eprintln!(
                            "agent: install: {} {change}",
                            self.args.cni_bin_dir.join(name).display()
                        )
                    })
                    .count();
                self.installed = true;
                self.metrics.update(|v| v.plugin_updates += written as u64);
                Ok(())
            }
            Err(e) => {
                self.metrics.update(|v| v.install_failures += 1);
                Err(format!("install: {e}"))
            }
        }
    }

    /// Applies the config dir if it changed since the last attempt.
    fn sync(&mut self) -> Result<(), String> {
        let Some(watch) = self.watch.as_mut() else {
            return Ok(());
        };
        let changed = watch.changed().map_err(|e| {
            self.metrics.update(|v| v.config_failures += 1);
            format!("sync: {e}")
        })?;
        if !changed {
            return Ok(());
        }
        let dir = watch.dir().to_path_buf();
        eprintln!("agent: sync: applying {}", dir.display());
        let applied = crate::apply::run(
            std::slice::from_ref(&dir),
            &self.args.cni_conf_dir,
            &self.args.ippool_dir,
            None,
            &self.args.store,
            // Never forced: an edit that would strand a live pod's address is refused and
            // counted, as any bad edit.
            false,
        );
        match applied {
            Ok(()) => {
                self.config_in_force = true;
                self.metrics.update(|v| v.config_applies += 1);
                // New pools show in the metrics now, not at the next GC pass.
                self.refresh_usage();
                Ok(())
            }
            Err(e) => {
                self.metrics.update(|v| v.config_failures += 1);
                Err(format!(
                    "sync: {} refused, nothing changed, the last good config stays: {e}",
                    dir.display()
                ))
            }
        }
    }

    /// The GC pass, and the pools' usage for the metrics.
    fn collect(&mut self) -> Result<(), String> {
        let result = self.args.store.open().and_then(|store| {
            let report = self.misses.pass(&store)?;
            let pools = usage(&store, &self.args.ippool_dir, &held_counts(&store)?)?;
            Ok((report, pools))
        });
        let (report, pools) = result.map_err(|e| {
            self.metrics.update(|v| v.store_errors += 1);
            format!("gc: {e}")
        })?;
        for record in &report.released {
            eprintln!(
                "agent: gc: released {} (pool {}) pod {} network {} container {} ifname {}: \
                 netns {:?} gone on {} consecutive passes",
                record.ip,
                record.pool,
                crate::status::pod_name(&record.owner.pod_namespace, &record.owner.pod_name),
                record.network,
                record.owner.container_id,
                record.owner.ifname,
                record.owner.netns,
                self.args.gc_misses
            );
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        self.metrics.update(|v| {
            v.gc_released += report.released.len() as u64;
            v.gc_pending = report.pending as u64;
            v.gc_passes += 1;
            v.last_gc_success = Some(now);
            v.pools = pools;
        });
        Ok(())
    }

    /// The pools' usage without a GC pass (which alone may count misses).
    fn refresh_usage(&self) {
        let pools = self
            .args
            .store
            .open()
            .and_then(|store| usage(&store, &self.args.ippool_dir, &held_counts(&store)?));
        match pools {
            Ok(pools) => self.metrics.update(|v| v.pools = pools),
            Err(e) => {
                self.metrics.update(|v| v.store_errors += 1);
                eprintln!("agent: pool usage: {e}");
            }
        }
    }

    fn update_readiness(&self) {
        let not_ready = if !self.installed {
            Some("the plugins are not installed yet".to_owned())
        } else if !self.config_in_force {
            Some("no config from --config-dir has been applied yet".to_owned())
        } else {
            None
        };
        self.health.set_ready(not_ready);
    }
}

/// Each pool of the manifests with its size and held count, then the pools only the store
/// knows (their manifest was removed while addresses were still held).
fn usage(
    store: &ipam_store::Store,
    ippool_dir: &Path,
    held: &std::collections::BTreeMap<String, usize>,
) -> Result<Vec<PoolUsage>, String> {
    // Before the first apply the file store's ippool dir may not exist: no pools yet.
    let no_pools_yet = matches!(store, ipam_store::Store::File(_)) && !ippool_dir.exists();
    let manifest = if no_pools_yet {
        Default::default()
    } else {
        load_pools(store, ippool_dir)?.0
    };
    let mut pools: Vec<PoolUsage> = manifest
        .into_iter()
        .map(|pool| PoolUsage {
            name: pool.name().to_owned(),
            total: Some(pool.size()),
            allocated: held.get(pool.name()).copied().unwrap_or(0) as u64,
        })
        .collect();
    for (name, &count) in held {
        if count > 0 && !pools.iter().any(|p| &p.name == name) {
            pools.push(PoolUsage {
                name: name.clone(),
                total: None,
                allocated: count as u64,
            });
        }
    }
    Ok(pools)
}
