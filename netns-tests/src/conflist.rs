//! Network configuration lists as the tests write them: the seed's macvlan on
//! one rail, with the reference `host-local` or our `spiderpool` as IPAM, and
//! the SpiderIPPool manifests `spiderpool` reads.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::topology::{gateway_ip, master_name, RAIL_PREFIX_LEN};

/// Every spec version the plugins speak, oldest first.
pub const SPEC_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A conflist named `name` of `plugins`, at `version`.
pub fn list(version: &str, name: &str, plugins: &[Value]) -> Value {
    json!({"cniVersion": version, "name": name, "plugins": plugins})
}

/// A macvlan plugin entry on rail N's master; `ipam` may be `Value::Null`.
pub fn macvlan(rail: u8, ipam: Value) -> Value {
    let mut plugin = json!({"type": "macvlan", "master": master_name(rail), "mode": "bridge"});
    if !ipam.is_null() {
        plugin["ipam"] = ipam;
    }
    plugin
}

/// The reference `host-local` IPAM handing out `172.16.(10+N).first ..= .last`
/// of the seed's rail-N /16, with the rail's gateway and its state in `data_dir`.
pub fn host_local(rail: u8, first: u8, last: u8, data_dir: &Path) -> Value {
    let gateway = gateway_ip(rail);
    let host = |last_octet: u8| {
        let [a, b, c, _] = gateway.octets();
        Ipv4Addr::new(a, b, c, last_octet).to_string()
    };
    let [a, b, _, _] = gateway.octets();
    json!({
        "type": "host-local",
        "dataDir": data_dir,
        "ranges": [[{
            "subnet": format!("{a}.{b}.0.0/{RAIL_PREFIX_LEN}"),
            "rangeStart": host(first),
            "rangeEnd": host(last),
            "gateway": gateway.to_string(),
        }]],
    })
}

/// Our `spiderpool` IPAM drawing from the pools `v4` (tried in order) and `v6`
/// (likewise; an empty list leaves that family out), with the SpiderIPPool
/// manifests in `ippool_dir` and the allocation store in `data_dir`.
pub fn spiderpool(v4: &[&str], v6: &[&str], ippool_dir: &Path, data_dir: &Path) -> Value {
    json!({
        "type": "spiderpool",
        "default_ipv4_ippool": v4,
        "default_ipv6_ippool": v6,
        "ippool_dir": ippool_dir,
        "data_dir": data_dir,
    })
}

/// The SpiderIPPool / SpiderMultusConfig manifest of the seed's "Create CNI
/// config and IPPool" step, verbatim: pool `gpu1-net11` hands out
/// `172.16.11.1-172.16.11.200` (200 addresses) with gateway `172.16.11.254`,
/// in a subnet written `172.16.11.0/16` (host bits set, as the seed has it).
pub const SEED_IPPOOL_YAML: &str =
    include_str!("../../conf/seed-verbatim/create-cni-config-and-ippool.yaml");

/// Name of the seed's pool in [`SEED_IPPOOL_YAML`].
pub const SEED_POOL: &str = "gpu1-net11";
/// Number of addresses the seed's pool hands out.
pub const SEED_POOL_SIZE: usize = 200;

/// Writes [`SEED_IPPOOL_YAML`] as `dir/gpu1-net11.yaml`, as an operator would
/// apply it to a node's `ippool_dir`; returns the file's path.
pub fn write_seed_ippool(dir: &Path) -> PathBuf {
    write_file(&dir.join(format!("{SEED_POOL}.yaml")), SEED_IPPOOL_YAML)
}

/// A SpiderIPPool object named `name` with `spec` as given (`subnet`, `ips`,
/// `excludeIPs`, `gateway`, `routes`, `disable`, `default`, ...).
pub fn ippool(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "spiderpool.spidernet.io/v2beta1",
        "kind": "SpiderIPPool",
        "metadata": {"name": name},
        "spec": spec,
    })
}

/// Writes `pools` (built with [`ippool`]) as one JSON manifest `dir/file`
/// (`file` should end in `.json`); returns its path.
pub fn write_ippools(dir: &Path, file: &str, pools: &[Value]) -> PathBuf {
    let text = serde_json::to_string_pretty(pools).expect("pools serialise");
    write_file(&dir.join(file), &text)
}

fn write_file(path: &Path, text: &str) -> PathBuf {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    path.to_path_buf()
}
