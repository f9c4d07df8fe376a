//! What a pod's routing must be, checked inside its network namespace the way an operator
//! would look: `ip rule`, `ip route show table all`, `ip route get`, and pings.
//!
//! The spec (DESIGN.md "Policy routing", issue 14): every macvlan NIC, the main default's
//! owner included, has one rule `from <its address> lookup <its table>` and a table of its own
//! (never 0, 253, 254 or 255) holding its subnet route with `src` and `default via <its
//! gateway> dev <it>`; the main table has exactly one default route, via the owner; traffic
//! sourced from any NIC's address leaves by that NIC whatever connected routes the other NICs
//! left in main. The checks collect every way a pod differs instead of stopping at the
//! first, so a run over many sandboxes can say how often each kind of failure happened.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::netns::command_in;

/// The kernel's own tables: unspecified, `default`, `main`, `local`.
const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];
/// An address outside every rail's subnet: where the main default route decides the way.
/// Only asked of `ip route get`, never sent to.
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);
const PING_ATTEMPTS: u32 = 2;

/// A pod's network namespace, entered by path (a `/proc/<pid>/ns/net` of its process).
#[derive(Debug, Clone)]
pub struct PodNet {
    ns_file: PathBuf,
}

impl PodNet {
    /// The network namespace process `pid` is in.
    pub fn of_pid(pid: u32) -> PodNet {
        PodNet {
            ns_file: PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    pub fn ns_file(&self) -> &Path {
        &self.ns_file
    }

    /// The namespace's inode (what `net:[inode]` names), to tell later that it is gone.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.ns_file)
            .unwrap_or_else(|e| panic!("{}: {e}", self.ns_file.display()))
            .ino()
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        command_in(&self.ns_file, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.ns_file.display()))
    }

    /// `ip -j args...` parsed; an empty list when `ip` prints nothing.
    pub fn ip_json(&self, args: &[&str]) -> Result<Vec<Value>, String> {
        let mut full = vec!["ip", "-j"];
        full.extend_from_slice(args);
        let out = self.exec(&full);
        if !out.status.success() {
            return Err(format!(
                "`{}`: {}",
                full.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        match serde_json::from_str(&text) {
            Ok(Value::Array(items)) => Ok(items),
            _ => Err(format!("`{}`: unexpected output {text:?}", full.join(" "))),
        }
    }

    /// The IPv4 addresses of `ifname` as (address, prefix length); empty if it is absent.
    pub fn ipv4(&self, ifname: &str) -> Vec<(Ipv4Addr, u8)> {
        let links = self
            .ip_json(&["-4", "addr", "show", "dev", ifname])
            .unwrap_or_default();
        links
            .iter()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| {
                let ip = a["local"].as_str()?.parse().ok()?;
                let len = u8::try_from(a["prefixlen"].as_u64()?).ok()?;
                Some((ip, len))
            })
            .collect()
    }

    /// Names of the pod's links, `lo` excepted.
    pub fn links(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .ip_json(&["link", "show"])
            .unwrap_or_default()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .filter(|n| n != "lo")
            .collect();
        names.sort();
        names
    }

    /// An echo to `target` with `ping -I <bind>` (an address: bound to that source address
    /// only, so the routing decides the way; an interface name: bound to the device), up to
    /// [`PING_ATTEMPTS`] tries of 1 s: a second try only absorbs a reply lost on a loaded
    /// machine, a wrong route fails every try.
    pub fn ping(&self, bind: &str, target: Ipv4Addr) -> bool {
        let target = target.to_string();
        let args = [
            "ping", "-n", "-q", "-c", "1", "-W", "1", "-I", bind, &target,
        ];
        (0..PING_ATTEMPTS).any(|_| self.exec(&args).status.success())
    }
}

/// A NIC the pod must have: its name and the gateway of its rail.
#[derive(Debug, Clone)]
pub struct Expected {
    pub ifname: String,
    pub gateway: Ipv4Addr,
}

/// What a NIC turned out to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub ifname: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The table and priority of its rule, when it has exactly one.
    pub rule: Option<(u32, u32)>,
}

/// One way the pod differs from the spec: a kind (to count over many pods) and the details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: &'static str,
    pub detail: String,
}

/// The result of [`check`]: what each NIC has, and every failure.
#[derive(Debug, Clone)]
pub struct Report {
    pub nics: Vec<Observed>,
    pub failures: Vec<Failure>,
}

impl Report {
    pub fn nic(&self, ifname: &str) -> &Observed {
        self.nics
            .iter()
            .find(|n| n.ifname == ifname)
            .unwrap_or_else(|| panic!("no {ifname} in {:?}", self.nics))
    }
}

/// Checks the pod's routing for `nics` with `owner` as the main default's owner.
pub fn check(pod: &PodNet, nics: &[Expected], owner: &str) -> Report {
    let mut failures = Vec::new();
    let mut fail = |kind: &'static str, detail: String| failures.push(Failure { kind, detail });

    let mut observed = Vec::new();
    for nic in nics {
        match pod.ipv4(&nic.ifname).as_slice() {
            [(address, prefix)] => observed.push(Observed {
                ifname: nic.ifname.clone(),
                address: *address,
                prefix: *prefix,
                rule: None,
            }),
            other => fail(
                "nic missing or without exactly one IPv4 address",
                format!("{}: {other:?}", nic.ifname),
            ),
        }
    }
    if observed.len() != nics.len() {
        return Report {
            nics: observed,
            failures,
        };
    }

    let rules = pod.ip_json(&["-4", "rule", "show"]).unwrap_or_else(|e| {
        fail("ip rule failed", e);
        Vec::new()
    });
    let routes = pod
        .ip_json(&["-4", "route", "show", "table", "all"])
        .unwrap_or_else(|e| {
            fail("ip route failed", e);
            Vec::new()
        });

    // Rules: the kernel's three, and exactly one `from <address> lookup <table>` per NIC.
    for rule in &rules {
        let src = rule["src"].as_str().unwrap_or("");
        let kernel = src == "all" && ["local", "main", "default"].contains(&table_of(rule));
        let ours = observed.iter().any(|n| src == n.address.to_string());
        if !kernel && !ours {
            fail("a rule that is not one NIC's", rule.to_string());
        }
    }
    for nic in &mut observed {
        let address = nic.address.to_string();
        let mine: Vec<&Value> = rules.iter().filter(|r| r["src"] == address).collect();
        let [rule] = mine.as_slice() else {
            fail(
                "nic without exactly one rule",
                format!("{} {address}: {} rules {mine:?}", nic.ifname, mine.len()),
            );
            continue;
        };
        if rule.get("srclen").is_some_and(|l| l != 32) {
            fail("rule not for the address alone", rule.to_string());
        }
        let Ok(table) = table_of(rule).parse::<u32>() else {
            fail("rule to a kernel table", format!("{}: {rule}", nic.ifname));
            continue;
        };
        let priority = rule["priority"].as_u64().unwrap_or(0) as u32;
        if RESERVED_TABLES.contains(&table) {
            fail("reserved table", format!("{}: table {table}", nic.ifname));
        }
        nic.rule = Some((table, priority));
    }
    let tables: Vec<u32> = observed
        .iter()
        .filter_map(|n| n.rule)
        .map(|r| r.0)
        .collect();
    let mut distinct = tables.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() != tables.len() {
        fail("two NICs share a table", format!("{observed:?}"));
    }

    // Each NIC's table: its subnet route with its address as src, its default route, and
    // nothing through another device.
    for (nic, expected) in observed.iter().zip(nics) {
        let Some((table, _)) = nic.rule else { continue };
        let table = table.to_string();
        let in_table: Vec<&Value> = routes.iter().filter(|r| table_of(r) == table).collect();
        let subnet = subnet_of(nic.address, nic.prefix);
        let address = nic.address.to_string();
        let gateway = expected.gateway.to_string();
        if !in_table
            .iter()
            .any(|r| r["dst"] == subnet && r["dev"] == nic.ifname && r["prefsrc"] == address)
        {
            fail(
                "table without the subnet route",
                format!(
                    "{} table {table}: want {subnet} dev {} src {address}, have {in_table:?}",
                    nic.ifname, nic.ifname
                ),
            );
        }
        if !in_table
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == gateway && r["dev"] == nic.ifname)
        {
            fail(
                "table without the default route",
                format!(
                    "{} table {table}: want default via {gateway} dev {}, have {in_table:?}",
                    nic.ifname, nic.ifname
                ),
            );
        }
        if let Some(r) = in_table.iter().find(|r| r["dev"] != nic.ifname) {
            fail(
                "table with another device's route",
                format!("{} table {table}: {r}", nic.ifname),
            );
        }
    }

    // Main: one default route, via the owner's gateway.
    let owner_gateway = nics
        .iter()
        .find(|n| n.ifname == owner)
        .map(|n| n.gateway.to_string());
    let defaults: Vec<&Value> = routes
        .iter()
        .filter(|r| table_of(r) == "main" && r["dst"] == "default")
        .collect();
    match defaults.as_slice() {
        [d] if d["dev"] == owner
            && Some(d["gateway"].as_str().unwrap_or("").to_owned()) == owner_gateway => {}
        other => fail(
            "main default not exactly one via the owner",
            format!("owner {owner}: main defaults {other:?}"),
        ),
    }
    if let Ok(got) = pod.ip_json(&["-4", "route", "get", &OUTSIDE.to_string()]) {
        if got.first().is_none_or(|r| r["dev"] != owner) {
            fail(
                "traffic to outside does not leave by the owner",
                format!("owner {owner}: {got:?}"),
            );
        }
    }

    // Traffic sourced from each NIC's address, to its own gateway.
    for (nic, expected) in observed.iter().zip(nics) {
        let address = nic.address.to_string();
        let gateway = expected.gateway.to_string();
        match pod.ip_json(&["-4", "route", "get", &gateway, "from", &address]) {
            Ok(got) if got.first().is_some_and(|r| r["dev"] == nic.ifname) => {}
            Ok(got) => fail(
                "route from the address leaves by another NIC",
                format!(
                    "ip route get {gateway} from {address}: {got:?}, want dev {}",
                    nic.ifname
                ),
            ),
            Err(e) => fail("route from the address leaves by another NIC", e),
        }
        if !pod.ping(&address, expected.gateway) {
            fail(
                "ping from the address (unbound) fails",
                format!("ping -I {address} {gateway} ({})", nic.ifname),
            );
        }
        if !pod.ping(&nic.ifname, expected.gateway) {
            fail(
                "ping bound to the NIC fails",
                format!("ping -I {} {gateway}", nic.ifname),
            );
        }
    }

    Report {
        nics: observed,
        failures,
    }
}

/// The main-default owner the coordinator documents for our conflists (they set no
/// `podDefaultRouteNic`): the cluster NIC `podDefaultCniNic` (`eth0`) when the pod has it,
/// else the NIC whose name sorts first, shorter names first (`net2` before `net10`).
pub fn expected_owner(ifnames: &[&str]) -> String {
    if ifnames.contains(&"eth0") {
        return "eth0".to_owned();
    }
    ifnames
        .iter()
        .min_by_key(|n| (n.len(), **n))
        .expect("a pod with NICs")
        .to_string()
}

/// A rule's or route's table as `ip -j` prints it (main-table routes carry none).
fn table_of(v: &Value) -> &str {
    v["table"].as_str().unwrap_or("main")
}

fn subnet_of(address: Ipv4Addr, prefix: u8) -> String {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    format!("{}/{prefix}", Ipv4Addr::from(u32::from(address) & mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_eth0_when_present_else_the_shortest_then_lowest_name() {
        assert_eq!(expected_owner(&["eth1", "eth0"]), "eth0");
        assert_eq!(expected_owner(&["net2", "net1"]), "net1");
        assert_eq!(expected_owner(&["net10", "net2"]), "net2");
    }

    #[test]
    fn subnet_of_clears_host_bits() {
        assert_eq!(
            subnet_of(Ipv4Addr::new(172, 16, 12, 5), 16),
            "172.16.0.0/16"
        );
        assert_eq!(subnet_of(Ipv4Addr::new(10, 1, 2, 3), 32), "10.1.2.3/32");
        assert_eq!(subnet_of(Ipv4Addr::new(10, 1, 2, 3), 0), "0.0.0.0/0");
    }
}
