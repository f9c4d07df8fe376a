//! Looking at the result: links, MTUs, addresses, reachability inside a
//! harness namespace.

use std::net::Ipv4Addr;

use serde_json::Value;

use crate::netns::Netns;

/// Names of all links in `ns`.
pub fn link_names(ns: &Netns) -> Vec<String> {
    ip_json(ns, &["link", "show"])
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .filter_map(|link| link["ifname"].as_str().map(str::to_owned))
        .collect()
}

/// MTU of `dev` in `ns`, `None` if there is no such link.
pub fn link_mtu(ns: &Netns, dev: &str) -> Option<u32> {
    let links = ip_json(ns, &["link", "show", "dev", dev]).ok()?;
    let mtu = links.first()?["mtu"].as_u64()?;
    Some(u32::try_from(mtu).expect("MTU fits u32"))
}

/// IPv4 addresses of `dev` in `ns` as `a.b.c.d/len`; empty if `dev` is absent.
pub fn ipv4_addrs(ns: &Netns, dev: &str) -> Vec<String> {
    let Ok(links) = ip_json(ns, &["-4", "addr", "show", "dev", dev]) else {
        return Vec::new();
    };
    links
        .iter()
        .flat_map(|link| link["addr_info"].as_array().into_iter().flatten())
        .filter_map(|a| {
            Some(format!(
                "{}/{}",
                a["local"].as_str()?,
                a["prefixlen"].as_u64()?
            ))
        })
        .collect()
}

/// Pings `target` from inside `ns` (bound to `dev` if given: a NIC, or an address, which
/// makes the source address's routing rules apply), one echo of at
/// most 1 s per attempt, up to `attempts` times; true on the first reply.
/// Since `ns` is a harness namespace whose links all lead to harness
/// namespaces, no packet can leave the test's topology.
pub fn ping_from(ns: &Netns, dev: Option<&str>, target: Ipv4Addr, attempts: u32) -> bool {
    let target = target.to_string();
    let mut args = vec!["ping", "-n", "-q", "-c", "1", "-W", "1"];
    if let Some(dev) = dev {
        args.extend(["-I", dev]);
    }
    args.push(&target);
    (0..attempts).any(|_| ns.exec(&args).status.success())
}

/// Packets `dev` in `ns` has sent.
pub fn tx_packets(ns: &Netns, dev: &str) -> u64 {
    let links = ip_json(ns, &["-s", "link", "show", "dev", dev]).unwrap_or_else(|e| panic!("{e}"));
    links
        .first()
        .and_then(|l| l["stats64"]["tx"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no tx counter of {dev} in {}", ns.name()))
}

/// The route a packet from `from` to `to` takes out of `ns` (`ip route get TO from FROM`):
/// its `dev`, and `gateway` when it is not on-link.
pub fn route_get(ns: &Netns, to: Ipv4Addr, from: Ipv4Addr) -> Value {
    let (to, from) = (to.to_string(), from.to_string());
    let routes =
        ip_json(ns, &["route", "get", &to, "from", &from]).unwrap_or_else(|e| panic!("{e}"));
    routes
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no route to {to} from {from} in {}", ns.name()))
}

/// The NIC by which a packet from `from` to `to` leaves `ns`, per its routing.
pub fn route_dev(ns: &Netns, to: Ipv4Addr, from: Ipv4Addr) -> String {
    let route = route_get(ns, to, from);
    route["dev"].as_str().expect("a route has a dev").to_owned()
}

/// How many IPv4 packets `ns` has forwarded (its `/proc/net/snmp` `Ip: ForwDatagrams`).
pub fn forwarded_datagrams(ns: &Netns) -> u64 {
    // /proc/net is the reading process's namespace's: cat runs inside `ns`.
    let out = ns.exec(&["cat", "/proc/net/snmp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next(), ip.next());
    let field = names.zip(values).and_then(|(n, v)| {
        n.split_whitespace()
            .zip(v.split_whitespace())
            .find(|(n, _)| *n == "ForwDatagrams")
    });
    field.and_then(|(_, v)| v.parse().ok()).unwrap_or_else(|| {
        panic!(
            "no Ip ForwDatagrams in /proc/net/snmp of {}:\n{text}",
            ns.name()
        )
    })
}

fn ip_json(ns: &Netns, args: &[&str]) -> Result<Vec<Value>, String> {
    let json_args: Vec<&str> = std::iter::once("-j").chain(args.iter().copied()).collect();
    let out = ns.ip(&json_args)?;
    match serde_json::from_str(&out) {
        Ok(Value::Array(items)) => Ok(items),
        _ => Err(format!("ip {}: unexpected output {out:?}", args.join(" "))),
    }
}
