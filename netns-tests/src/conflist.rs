//! Network configuration lists as the tests write them: the seed's macvlan on
//! one rail, with the reference `host-local` as IPAM until a test picks
//! another.

use std::net::Ipv4Addr;
use std::path::Path;

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
