//! `spiderctl doctor`: cross-checks, on this node and in this network namespace, what the
//! plugins will need when a pod arrives: each macvlan network's master exists and is up, its
//! MTU fits the master's, its pools exist and have addresses, no two pools hand out the same
//! address, and each RDMA resource is offered by the k8s-rdma-shared-dev-plugin on that master.
//! Prints one row per finding and fails when any is a problem.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use cni::netlink::{Link, Netlink};
use ipam_store::defaults::DEFAULT_NODE_LABELS_FILE;
use ipam_store::filters::{Context, NodeLabels};
use ipam_store::manifest;
use ipam_store::pattern;
use ipam_store::pool::PoolWarning;
use ipam_store::{
    Allocations, EtcdConfig, EtcdStore, Family, ManifestError, Pool, PoolStore, StoreConfig,
};
use serde::Serialize;
use serde_json::Value;

use crate::manifests;
use crate::output::{Format, OutputArgs, Table};

/// The k8s-rdma-shared-dev-plugin's prefix when `resourcePrefix` is absent.
const RDMA_DEFAULT_PREFIX: &str = "rdma";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

#[derive(Serialize)]
struct Finding {
    status: Status,
    check: &'static str,
    subject: String,
    detail: String,
}

/// What `-o json|yaml` prints (README: spiderctl output).
#[derive(Default, Serialize)]
struct Report {
    findings: Vec<Finding>,
    /// The FAIL findings: doctor exits non-zero when there are any.
    problems: usize,
}

impl Report {
    fn add(&mut self, status: Status, check: &'static str, subject: &str, detail: String) {
        self.findings.push(Finding {
            status,
            check,
            subject: subject.to_string(),
            detail,
        });
    }

    fn ok(&mut self, check: &'static str, subject: &str, detail: String) {
        self.add(Status::Ok, check, subject, detail);
    }

    fn warn(&mut self, check: &'static str, subject: &str, detail: String) {
        self.add(Status::Warn, check, subject, detail);
    }

    fn fail(&mut self, check: &'static str, subject: &str, detail: String) {
        self.add(Status::Fail, check, subject, detail);
    }

    /// The table (every column is shown already, so `wide` is the table), or one
    /// `status/check/subject` per finding for `name`.
    fn print(&self, output: &OutputArgs) {
        if output.format == Some(Format::Name) {
            for f in &self.findings {
                println!(
                    "{}/{}/{}",
                    f.status.to_string().to_lowercase(),
                    f.check,
                    f.subject
                );
            }
            return;
        }
        let mut table = Table::new(&["STATUS", "CHECK", "SUBJECT", "DETAIL"]);
        for f in &self.findings {
            table.row(vec![
                f.status.to_string(),
                f.check.to_owned(),
                f.subject.clone(),
                f.detail.clone(),
            ]);
        }
        print!("{}", table.render("", output.no_headers));
        if self.problems == 0 {
            println!("\nno problems found");
        }
    }
}

pub fn run(
    cni_conf_dir: &Path,
    ippool_dir: &Path,
    rdma_config: Option<&Path>,
    cluster_network: Option<&str>,
    output: &OutputArgs,
) -> Result<(), String> {
    let mut report = Report::default();
    examine(
        &mut report,
        cni_conf_dir,
        ippool_dir,
        rdma_config,
        cluster_network,
    );
    report.problems = report
        .findings
        .iter()
        .filter(|f| f.status == Status::Fail)
        .count();
    if !output.print_structured(&report)? {
        report.print(output);
    }
    match report.problems {
        0 => Ok(()),
        problems => Err(format!("{problems} problem(s) found (FAIL findings)")),
    }
}

/// A macvlan plugin entry of one network config, as doctor needs it.
struct Network {
    file: PathBuf,
    name: String,
    master: Option<String>,
    mtu: Option<u32>,
    rdma_resource_name: Option<String>,
    ipam: Option<Value>,
}

fn examine(
    report: &mut Report,
    cni_conf_dir: &Path,
    ippool_dir: &Path,
    rdma_config: Option<&Path>,
    cluster_network: Option<&str>,
) {
    let rdma = rdma_config.and_then(|path| match RdmaConfig::load(path) {
        Ok(config) => Some(config),
        Err(e) => {
            report.fail("rdma-config", &path.display().to_string(), e);
            None
        }
    });
    let files = conf_files(report, cni_conf_dir);
    if let Some(first) = files.first() {
        check_first(report, cni_conf_dir, first, cluster_network);
    }
    let networks = networks(report, cni_conf_dir, &files);
    let mut netlink = match Netlink::open() {
        Ok(nl) => Some(nl),
        Err(e) => {
            report.fail("netlink", "-", format!("cannot open a netlink socket: {e}"));
            None
        }
    };
    // Pools by where they are read: a network may name its own `ippool_dir`, or etcd. The
    // default dir is checked when it exists or a network reads it.
    let mut pool_sets: BTreeMap<String, PoolSet> = BTreeMap::new();
    if ippool_dir.is_dir() {
        pool_sets.insert(dir_key(ippool_dir), PoolSet::load(report, ippool_dir));
    }
    let mut unchecked_rdma = 0;

    for net in &networks {
        let link = match (&net.master, netlink.as_mut()) {
            (None, _) => {
                report.fail(
                    "master",
                    &net.name,
                    format!("{}: the macvlan plugin has no master", net.file.display()),
                );
                None
            }
            (Some(master), Some(nl)) => check_master(report, nl, net, master),
            (Some(_), None) => None,
        };
        if let Some(link) = &link {
            check_mtu(report, net, link);
        }
        if let Some(ipam) = &net.ipam {
            check_ipam(report, net, ipam, ippool_dir, &mut pool_sets);
        }
        match (&net.rdma_resource_name, &rdma, &net.master) {
            (Some(resource), Some(rdma), Some(master)) => {
                rdma.check(report, &net.name, resource, master)
            }
            (Some(_), None, _) => unchecked_rdma += 1,
            _ => {}
        }
    }
    if unchecked_rdma > 0 && rdma_config.is_none() {
        report.warn(
            "rdma",
            "-",
            format!(
                "{unchecked_rdma} network(s) name an RDMA resource: not checked, pass --rdma-config \
                 <the k8s-rdma-shared-dev-plugin config.json>"
            ),
        );
    }
    for set in pool_sets.values() {
        set.check(report);
    }
}

/// One file of the CNI config dir; `list` is None when it could not be read or parsed
/// (reported already).
struct ConfFile {
    path: PathBuf,
    list: Option<Value>,
}

impl ConfFile {
    /// The list's `name`.
    fn name(&self) -> &str {
        self.list
            .as_ref()
            .and_then(|l| l["name"].as_str())
            .unwrap_or("(unnamed)")
    }

    /// The plugins: a `.conf` is one plugin, a list holds `plugins`.
    fn plugins(&self) -> Vec<&Value> {
        match &self.list {
            Some(list) => match list.get("plugins").and_then(Value::as_array) {
                Some(plugins) => plugins.iter().collect(),
                None => vec![list],
            },
            None => Vec::new(),
        }
    }
}

/// The files of the CNI config dir as libcni lists them (`*.conf`, `*.conflist`, `*.json`,
/// in name order), each parsed once; unreadable and broken ones are reported.
fn conf_files(report: &mut Report, dir: &Path) -> Vec<ConfFile> {
    let subject = dir.display().to_string();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            report.fail("cni-conf-dir", &subject, format!("cannot read it: {e}"));
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            !name.starts_with('.')
                && [".conf", ".conflist", ".json"]
                    .iter()
                    .any(|ext| name.ends_with(ext))
        })
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let shown = path.display().to_string();
            let list = match manifest::read_text(&path) {
                Ok(text) => match serde_json::from_str(&text) {
                    Ok(list) => Some(list),
                    Err(e) => {
                        report.fail(
                            "network",
                            &shown,
                            format!(
                                "not valid JSON ({e}): the runtime cannot use it; fix or remove it"
                            ),
                        );
                        None
                    }
                },
                Err(e) => {
                    report.fail("network", &shown, e.to_string());
                    None
                }
            };
            ConfFile { path, list }
        })
        .collect()
}

/// Runtimes that take one network from the conf dir take the lexically first file as every
/// pod's network: containerd's CRI with its default `max_conf_num = 1`, `ctr run --cni`,
/// CRI-O, kubelet's own. That file must be the cluster network (Multus' `00-multus.conf`,
/// Calico's `10-calico.conflist`...). Warned about: one of ours (a macvlan rail, spiderpool,
/// coordinator: an extra network, never the pod's first), a runtime's default network
/// (podman's `87-podman-bridge.conflist` sorts before our `90-*` files), or, with
/// `--cluster-network`, any network but that one.
fn check_first(report: &mut Report, dir: &Path, first: &ConfFile, cluster_network: Option<&str>) {
    if first.list.is_none() {
        // Reported as broken already; a runtime that loads it fails every pod.
        return;
    }
    let subject = "first-network";
    let file = first
        .path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let name = first.name();
    let takers = format!(
        "runtimes that take the first file of {} as the pod network (containerd's CRI with \
         max_conf_num 1, ctr run --cni, CRI-O)",
        dir.display()
    );
    let fix = "rename the cluster network's file so that it sorts first (e.g. 00-multus.conf, \
               10-calico.conflist)";
    let types: Vec<&str> = first
        .plugins()
        .into_iter()
        .filter_map(|p| p["type"].as_str())
        .collect();
    let ours = first.plugins().into_iter().any(|p| {
        p["type"] == "macvlan" || p["type"] == "coordinator" || p["ipam"]["type"] == "spiderpool"
    });
    let runtime_default = match name {
        "podman" => Some("podman's default bridge"),
        "containerd-net" => Some("containerd's example bridge"),
        _ if file.starts_with("87-podman") => Some("podman's default bridge"),
        _ => None,
    };
    let detail = format!("{file} (network {name}, plugins {})", types.join(", "));
    match cluster_network {
        Some(expected) if expected != name => report.warn(
            subject,
            &file,
            format!("{detail} sorts first, not {expected}: {takers} give every pod {name}; {fix}"),
        ),
        Some(_) => report.ok(subject, &file, format!("{detail} sorts first, as expected")),
        None if ours => report.warn(
            subject,
            &file,
            format!(
                "{detail} sorts first: {takers} would make this macvlan rail every pod's \
                 first NIC instead of the cluster network; it is an extra network (Multus \
                 attaches it by annotation); {fix}"
            ),
        ),
        None => match runtime_default {
            Some(what) => report.warn(
                subject,
                &file,
                format!("{detail} is {what} and sorts first: {takers} attach pods to it; {fix}"),
            ),
            None => report.ok(
                subject,
                &file,
                format!("{detail} sorts first: the pod network of {takers}"),
            ),
        },
    }
}

/// The macvlan networks among `files`. Networks without a macvlan are not ours and are
/// skipped.
fn networks(report: &mut Report, dir: &Path, files: &[ConfFile]) -> Vec<Network> {
    let mut networks = Vec::new();
    for file in files {
        let Some(list) = &file.list else {
            continue;
        };
        for plugin in file
            .plugins()
            .into_iter()
            .filter(|p| p["type"] == "macvlan")
        {
            networks.push(Network {
                file: file.path.clone(),
                name: file.name().to_string(),
                master: plugin["master"].as_str().map(str::to_string),
                mtu: plugin["mtu"].as_u64().filter(|&m| m > 0).map(|m| m as u32),
                rdma_resource_name: list["rdmaResourceName"].as_str().map(str::to_string),
                ipam: plugin.get("ipam").cloned(),
            });
        }
    }
    if networks.is_empty() {
        report.warn(
            "networks",
            &dir.display().to_string(),
            "no network with a macvlan plugin: nothing applied here yet (spiderctl apply)".into(),
        );
    }
    networks
}

fn check_master(
    report: &mut Report,
    nl: &mut Netlink,
    net: &Network,
    master: &str,
) -> Option<Link> {
    match nl.link(master) {
        Err(e) => {
            report.fail("master", &net.name, format!("cannot look up {master}: {e}"));
            None
        }
        Ok(None) => {
            report.fail(
                "master",
                &net.name,
                format!(
                    "{master} does not exist in this network namespace: fix the master of {} \
                     (spec.macvlan.master) or run doctor on the node that has it",
                    net.file.display()
                ),
            );
            None
        }
        Ok(Some(link)) if !link.up => {
            report.fail(
                "master",
                &net.name,
                format!("{master} is down: pods cannot attach; ip link set {master} up"),
            );
            Some(link)
        }
        Ok(Some(link)) => {
            report.ok(
                "master",
                &net.name,
                format!("{master} is up, mtu {}", link.mtu),
            );
            Some(link)
        }
    }
}

fn check_mtu(report: &mut Report, net: &Network, link: &Link) {
    match net.mtu {
        None => report.ok("mtu", &net.name, format!("the master's ({})", link.mtu)),
        Some(mtu) if mtu <= link.mtu => report.ok(
            "mtu",
            &net.name,
            format!("{mtu} <= master {} mtu {}", link.name, link.mtu),
        ),
        Some(mtu) => report.fail(
            "mtu",
            &net.name,
            format!(
                "mtu {mtu} is above master {} mtu {}: every pod ADD fails; lower \
                 spec.macvlan.mtu or raise the master's MTU",
                link.name, link.mtu
            ),
        ),
    }
}

fn check_ipam(
    report: &mut Report,
    net: &Network,
    ipam: &Value,
    default_dir: &Path,
    pool_sets: &mut BTreeMap<String, PoolSet>,
) {
    let ipam_type = ipam["type"].as_str().unwrap_or("");
    if ipam_type != "spiderpool" {
        report.ok(
            "pools",
            &net.name,
            format!("ipam {ipam_type:?}: not ours, not checked"),
        );
        return;
    }
    let store = match ipam.get("store").cloned().map(serde_json::from_value) {
        None => StoreConfig::File,
        Some(Ok(store)) => store,
        Some(Err(e)) => {
            report.fail(
                "store",
                &net.name,
                format!("ipam.store: {e}: every pod ADD fails; fix the conflist"),
            );
            return;
        }
    };
    let file_store = store == StoreConfig::File;
    let set = match store {
        StoreConfig::Etcd(etcd) => {
            if let Err(e) = etcd.validate() {
                report.fail("store", &net.name, format!("ipam.{e}"));
                return;
            }
            let key = format!("etcd:{}|{}", etcd.endpoints.join(","), etcd.prefix);
            pool_sets
                .entry(key)
                .or_insert_with(|| PoolSet::load_etcd(report, &etcd))
        }
        // The plugin reads the network's own ippool_dir when it names one.
        StoreConfig::File => {
            let dir = ipam["ippool_dir"]
                .as_str()
                .map(PathBuf::from)
                .unwrap_or_else(|| default_dir.to_path_buf());
            pool_sets
                .entry(dir_key(&dir))
                .or_insert_with(|| PoolSet::load(report, &dir))
        }
    };
    let dir = &set.source;
    let named = |key: &str| -> Vec<String> {
        ipam[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let families = [
        (
            "default_ipv4_ippool",
            Family::V4,
            named("default_ipv4_ippool"),
        ),
        (
            "default_ipv6_ippool",
            Family::V6,
            named("default_ipv6_ippool"),
        ),
    ];
    if families.iter().all(|(_, _, names)| names.is_empty()) {
        let defaults: Vec<&str> = set
            .pools
            .values()
            .filter(|(p, _)| p.is_default())
            .map(|(p, _)| p.name())
            .collect();
        if defaults.is_empty() {
            report.fail(
                "pools",
                &net.name,
                format!(
                    "names no pool (default_ipv4_ippool, default_ipv6_ippool) and no pool of {dir} \
                     is marked spec.default: true: every pod ADD fails; set spec.ippools"
                ),
            );
        } else {
            report.ok(
                "pools",
                &net.name,
                format!("default pools {}", defaults.join(", ")),
            );
        }
        return;
    }
    let labels_file = ipam["node_labels_file"]
        .as_str()
        .unwrap_or(DEFAULT_NODE_LABELS_FILE);
    let labels = NodeLabels::from_file(Path::new(labels_file));
    let node = ipam_store::store::this_node().unwrap_or_else(|| "(unknown)".into());
    let context = Context {
        node: &node,
        labels: &labels,
        namespace: None,
        network: &net.name,
    };
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut found = Vec::new();
    let all: Vec<&str> = set.pools.keys().map(String::as_str).collect();
    for (key, family, names) in &families {
        let mut excluded = Vec::new();
        let mut serving = 0;
        for entry in names {
            if pattern::is_pattern(entry) {
                if pattern::expand(std::slice::from_ref(entry), &all).is_empty() {
                    problems.push(format!("{key}: {entry} matches no pool in {dir}"));
                }
            } else {
                match set.pools.get(entry) {
                    None => problems.push(format!(
                        "{key} names pool {entry}, which is not in {dir}: apply its SpiderIPPool \
                         or fix spec.ippools"
                    )),
                    Some((pool, _)) if pool.family() != *family => problems.push(format!(
                        "{key} names pool {entry}, which is {}: move it to the other family's list",
                        pool.family()
                    )),
                    Some(_) => {}
                }
            }
        }
        for name in pattern::expand(names, &all) {
            let (pool, _) = &set.pools[name];
            if pool.family() != *family {
                continue;
            }
            // The pod's namespace is not known here: only the node and network filters.
            let mut filters = pool.filters().clone();
            filters.namespace_name.clear();
            if let Err(why) = filters.check(&context) {
                excluded.push(format!("{name}: {why}"));
                continue;
            }
            serving += 1;
            if file_store && !pool.filters().binds_nodes() {
                warnings.push(crate::apply::unbound_warning(&net.name, name));
            }
            if pool.size() == 0 {
                problems.push(format!(
                    "pool {name} has no allocatable addresses: add addresses to its spec.ips"
                ));
            } else {
                found.push(format!("{name} ({} addresses)", pool.size()));
            }
        }
        if serving == 0 && !names.is_empty() && !excluded.is_empty() {
            problems.push(format!(
                "{key}: no pool serves node {node} (every pod ADD here fails with code 110): {}",
                excluded.join("; ")
            ));
        }
    }
    if problems.is_empty() {
        report.ok("pools", &net.name, found.join(", "));
    }
    for problem in problems {
        report.fail("pools", &net.name, problem);
    }
    for warning in warnings {
        report.warn("pools", &net.name, warning);
    }
}

fn dir_key(dir: &Path) -> String {
    format!("dir:{}", dir.display())
}

/// The pools of one `ippool_dir` (or of one etcd store), each with the file (or key) it came
/// from. Files are loaded one by one so that one broken file is one finding, not the end of
/// the check.
struct PoolSet {
    /// Where the pools were read, for messages.
    source: String,
    pools: BTreeMap<String, (Pool, String)>,
    warnings: BTreeMap<String, Vec<PoolWarning>>,
}

impl PoolSet {
    fn new(source: String) -> PoolSet {
        PoolSet {
            source,
            pools: BTreeMap::new(),
            warnings: BTreeMap::new(),
        }
    }

    fn load(report: &mut Report, dir: &Path) -> PoolSet {
        let mut set = PoolSet::new(dir.display().to_string());
        if !dir.is_dir() {
            report.fail(
                "ippool-dir",
                &set.source,
                "does not exist: apply the SpiderIPPools (spiderctl apply --ippool-dir)".into(),
            );
            return set;
        }
        let files = match manifests::expand(&[dir.to_path_buf()]) {
            Ok(files) => files,
            Err(e) => {
                report.fail("ippool-dir", &set.source, e.to_string());
                return set;
            }
        };
        for file in files {
            let text = manifest::read_text(&file);
            set.add(report, &file.display().to_string(), text);
        }
        set
    }

    /// The pools a network with the etcd store reads: the manifests under its prefix.
    fn load_etcd(report: &mut Report, config: &EtcdConfig) -> PoolSet {
        let store = match EtcdStore::open(config, None) {
            Ok(store) => store,
            Err(e) => {
                let mut set = PoolSet::new(format!("etcd {}", config.endpoints.join(",")));
                report.fail("store", &set.source.clone(), e.to_string());
                set.source.push_str(" (unreadable)");
                return set;
            }
        };
        let mut set = PoolSet::new(format!("{}/ippools/", store.describe()));
        match store.manifests() {
            Ok(texts) if texts.is_empty() => report.fail(
                "store",
                &set.source,
                "holds no SpiderIPPool: apply them with spiderctl apply --store etcd".into(),
            ),
            Ok(texts) => {
                report.ok("store", &store.describe(), "reachable".into());
                for (source, text) in texts {
                    set.add(report, &source, Ok(text));
                }
            }
            Err(e) => report.fail("store", &store.describe(), e.to_string()),
        }
        set
    }

    /// Adds the pools of one manifest, reporting a broken manifest or a pool defined twice.
    fn add(&mut self, report: &mut Report, source: &str, text: Result<String, ManifestError>) {
        let loaded = match text.and_then(|text| manifest::parse(&text, source)) {
            Ok(m) => m,
            Err(e) => {
                report.fail(
                    "pool",
                    source,
                    format!("{e}: the IPAM plugin refuses all the pools until it is fixed"),
                );
                return;
            }
        };
        for warning in loaded.warnings {
            self.warnings
                .entry(warning.pool)
                .or_default()
                .push(warning.warning);
        }
        for pool in loaded.pools {
            if let Some((_, first)) = self.pools.get(pool.name()) {
                report.fail(
                    "pool",
                    pool.name(),
                    format!(
                        "defined in {first} and in {source}: the IPAM plugin refuses all the \
                         pools; remove one"
                    ),
                );
                continue;
            }
            self.pools
                .insert(pool.name().to_string(), (pool, source.to_owned()));
        }
    }

    fn check(&self, report: &mut Report) {
        for (name, (pool, _)) in &self.pools {
            let mut detail = format!("subnet {}", pool.subnet());
            for warning in self.warnings.get(name).into_iter().flatten() {
                if let PoolWarning::HostBitsSet { written, .. } = warning {
                    detail.push_str(&format!(" (written {written})"));
                }
            }
            detail.push_str(&format!(", {} addresses", pool.size()));
            match pool.gateway() {
                Some(gw) if pool.subnet().contains(&gw) => {
                    detail.push_str(&format!(", gateway {gw}"))
                }
                Some(gw) => {
                    report.fail(
                        "pool",
                        name,
                        format!(
                            "gateway {gw} is outside subnet {}: fix spec.gateway",
                            pool.subnet()
                        ),
                    );
                    continue;
                }
                None => detail.push_str(", no gateway"),
            }
            if pool.size() == 0 {
                report.fail(
                    "pool",
                    name,
                    format!(
                        "{detail}: no allocatable addresses (spec.ips minus excludeIPs and the \
                         gateway is empty): add addresses to spec.ips"
                    ),
                );
            } else if pool.disabled() {
                report.warn(
                    "pool",
                    name,
                    format!("{detail}; disabled (spec.disable: true)"),
                );
            } else {
                report.ok("pool", name, detail);
            }
        }
        self.check_overlaps(report);
    }

    /// Two pools handing out one address would give it to two pods: the store keys
    /// allocations by pool, so it cannot see the clash.
    fn check_overlaps(&self, report: &mut Report) {
        if self.pools.is_empty() {
            return;
        }
        let mut ranges: Vec<(Family, u128, u128, &str)> = self
            .pools
            .values()
            .flat_map(|(pool, _)| {
                pool.allocatable().ranges().map(move |(start, end)| {
                    (pool.family(), to_u128(start), to_u128(end), pool.name())
                })
            })
            .collect();
        ranges.sort_by_key(|&(family, start, end, _)| (family == Family::V6, start, end));
        let mut overlaps = Vec::new();
        // The range reaching furthest so far, per family: anything starting inside it overlaps.
        let mut reach: Option<(Family, u128, &str)> = None;
        for &(family, start, end, name) in &ranges {
            match reach {
                Some((f, far, holder)) if f == family && start <= far && holder != name => {
                    let pair = (holder, name);
                    if !overlaps.iter().any(|(p, _, _, _)| *p == pair) {
                        overlaps.push((pair, family, start, end.min(far)));
                    }
                }
                _ => {}
            }
            if reach.is_none_or(|(f, far, _)| f != family || end > far) {
                reach = Some((family, end, name));
            }
        }
        let dir = &self.source;
        if overlaps.is_empty() {
            report.ok(
                "overlap",
                "all pools",
                format!(
                    "no two of the {} pools in {dir} share an address",
                    self.pools.len()
                ),
            );
        }
        for ((a, b), family, start, end) in overlaps {
            let (start, end) = (from_u128(family, start), from_u128(family, end));
            let span = if start == end {
                start.to_string()
            } else {
                format!("{start}-{end}")
            };
            report.fail(
                "overlap",
                "all pools",
                format!(
                    "pools {a} and {b} both hand out {span} ({dir}): one address would go to two \
                     pods; narrow one pool's spec.ips (or list the shared part in its excludeIPs)"
                ),
            );
        }
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// The k8s-rdma-shared-dev-plugin's `config.json`, or the ConfigMap holding it.
pub(crate) struct RdmaConfig {
    path: PathBuf,
    /// `<resourcePrefix>/<resourceName>` -> `selectors.ifNames` (None: no ifNames selector).
    resources: BTreeMap<String, Option<Vec<String>>>,
}

impl RdmaConfig {
    pub(crate) fn load(path: &Path) -> Result<RdmaConfig, String> {
        let text = manifest::read_text(path).map_err(|e| e.to_string())?;
        // YAML reads JSON too, so the bare config.json and the ConfigMap both parse.
        let mut value: Value = yaml_serde::from_str(&text)
            .map_err(|e| format!("cannot parse as JSON or YAML: {e}"))?;
        if value["kind"] == "ConfigMap" {
            let inner = value["data"]["config.json"].as_str().ok_or(
                "a ConfigMap without data.\"config.json\": point --rdma-config at the device \
                 plugin's config",
            )?;
            value = serde_json::from_str(inner)
                .map_err(|e| format!("data.\"config.json\" is not JSON: {e}"))?;
        }
        let list = value["configList"]
            .as_array()
            .ok_or("no configList: this is not a k8s-rdma-shared-dev-plugin config.json")?;
        let mut resources = BTreeMap::new();
        for (i, entry) in list.iter().enumerate() {
            let name = entry["resourceName"]
                .as_str()
                .ok_or_else(|| format!("configList[{i}].resourceName is missing"))?;
            let prefix = entry["resourcePrefix"]
                .as_str()
                .unwrap_or(RDMA_DEFAULT_PREFIX);
            let if_names = entry["selectors"]["ifNames"].as_array().map(|names| {
                names
                    .iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            });
            resources.insert(format!("{prefix}/{name}"), if_names);
        }
        Ok(RdmaConfig {
            path: path.to_path_buf(),
            resources,
        })
    }

    /// The `selectors.ifNames` of `resource`: None when the config lacks the resource or the
    /// resource has no such selector.
    #[cfg(test)]
    pub(crate) fn if_names(&self, resource: &str) -> Option<&[String]> {
        self.resources.get(resource)?.as_deref()
    }

    fn check(&self, report: &mut Report, network: &str, resource: &str, master: &str) {
        // A VLAN master's RDMA device is its parent's, which is what the selector names.
        let parent = master
            .rsplit_once('.')
            .filter(|(_, vlan)| !vlan.is_empty() && vlan.bytes().all(|b| b.is_ascii_digit()))
            .map(|(parent, _)| parent);
        let config = self.path.display();
        match self.resources.get(resource) {
            None => report.fail(
                "rdma",
                network,
                format!(
                    "{resource} is not in {config}: pods asking for it never schedule; add a \
                     configList entry with that resourcePrefix/resourceName and selectors.ifNames \
                     [{}]",
                    parent.unwrap_or(master)
                ),
            ),
            Some(None) => report.warn(
                "rdma",
                network,
                format!(
                    "{resource} in {config} has no selectors.ifNames: cannot tell whether it \
                     selects {master}"
                ),
            ),
            Some(Some(names))
                if names
                    .iter()
                    .any(|n| n == master || Some(n.as_str()) == parent) =>
            {
                report.ok(
                    "rdma",
                    network,
                    format!("{resource} selects {}", parent.unwrap_or(master)),
                )
            }
            Some(Some(names)) => report.fail(
                "rdma",
                network,
                format!(
                    "{resource} in {config} selects ifNames {names:?}, not the master {master}: \
                     the pod would get another NIC's RDMA device; fix selectors.ifNames or the \
                     master"
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A conf dir holding `files` (name, text), removed on drop.
    struct ConfDir(PathBuf);

    impl ConfDir {
        fn new(label: &str, files: &[(&str, &str)]) -> ConfDir {
            let dir = std::env::temp_dir()
                .join(format!("spiderctl-doctor-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            ConfDir(dir)
        }

        /// The first-network rows, as `(status, subject, detail)`.
        fn first(&self, cluster_network: Option<&str>) -> Vec<(Status, String, String)> {
            let mut report = Report::default();
            let files = conf_files(&mut report, &self.0);
            if let Some(first) = files.first() {
                check_first(&mut report, &self.0, first, cluster_network);
            }
            report
                .findings
                .into_iter()
                .filter(|f| f.check == "first-network")
                .map(|f| (f.status, f.subject, f.detail))
                .collect()
        }
    }

    impl Drop for ConfDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PODMAN: &str = r#"{"cniVersion":"0.4.0","name":"podman","plugins":[
        {"type":"bridge","bridge":"cni-podman0","ipam":{"type":"host-local"}},{"type":"portmap"}]}"#;
    const OURS: &str = r#"{"cniVersion":"1.0.0","name":"gpu1-macvlan","plugins":[
        {"type":"macvlan","master":"enp11s0f0np0","ipam":{"type":"spiderpool"}},{"type":"coordinator"}]}"#;
    const CALICO: &str =
        r#"{"cniVersion":"0.3.1","name":"k8s-pod-network","plugins":[{"type":"calico"}]}"#;
    const MULTUS: &str = r#"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus"}"#;

    #[track_caller]
    fn one(rows: Vec<(Status, String, String)>, status: Status, subject: &str, fragments: &[&str]) {
        assert_eq!(
            rows.len(),
            1,
            "{:?}",
            rows.iter().map(|r| &r.2).collect::<Vec<_>>()
        );
        let (got, file, detail) = &rows[0];
        assert_eq!((*got, file.as_str()), (status, subject), "{detail}");
        for fragment in fragments {
            assert!(detail.contains(fragment), "{fragment:?} not in {detail}");
        }
    }

    #[test]
    fn podmans_bridge_sorting_before_our_files_is_warned_about() {
        let dir = ConfDir::new(
            "podman",
            &[
                ("87-podman-bridge.conflist", PODMAN),
                ("90-gpu1-macvlan.conflist", OURS),
            ],
        );
        one(
            dir.first(None),
            Status::Warn,
            "87-podman-bridge.conflist",
            &[
                "podman's default bridge",
                "network podman",
                "containerd's CRI",
                "sorts first",
            ],
        );
    }

    #[test]
    fn one_of_ours_sorting_first_is_warned_about() {
        // A .conf sorts by name like the rest: 90-a.conf before 90-b.conflist.
        let dir = ConfDir::new(
            "ours",
            &[
                ("90-gpu1-macvlan.conflist", OURS),
                ("99-z.conf", MULTUS),
                ("README.md", "not a network"),
            ],
        );
        one(
            dir.first(None),
            Status::Warn,
            "90-gpu1-macvlan.conflist",
            &[
                "network gpu1-macvlan",
                "macvlan, coordinator",
                "extra network",
                "00-multus.conf",
            ],
        );
    }

    #[test]
    fn a_cluster_network_sorting_first_is_fine() {
        for (file, text, name) in [
            ("00-multus.conf", MULTUS, "multus-cni-network"),
            ("10-calico.conflist", CALICO, "k8s-pod-network"),
        ] {
            let dir = ConfDir::new(
                "cluster",
                &[
                    (file, text),
                    ("87-podman-bridge.conflist", PODMAN),
                    ("90-gpu1-macvlan.conflist", OURS),
                ],
            );
            one(
                dir.first(None),
                Status::Ok,
                file,
                &[&format!("network {name}")],
            );
        }
    }

    #[test]
    fn with_cluster_network_only_that_network_may_sort_first() {
        let dir = ConfDir::new(
            "expected",
            &[
                ("10-calico.conflist", CALICO),
                ("90-gpu1-macvlan.conflist", OURS),
            ],
        );
        one(
            dir.first(Some("k8s-pod-network")),
            Status::Ok,
            "10-calico.conflist",
            &["as expected"],
        );
        one(
            dir.first(Some("multus-cni-network")),
            Status::Warn,
            "10-calico.conflist",
            &["not multus-cni-network", "every pod k8s-pod-network"],
        );
    }

    #[test]
    fn a_broken_first_file_is_a_failure_of_its_own_and_no_first_row() {
        let dir = ConfDir::new(
            "broken",
            &[("05-broken.conflist", "{"), ("10-calico.conflist", CALICO)],
        );
        assert!(dir.first(None).is_empty());
        let mut report = Report::default();
        conf_files(&mut report, &dir.0);
        assert!(report
            .findings
            .iter()
            .any(|f| f.status == Status::Fail && f.check == "network"));
    }
}
