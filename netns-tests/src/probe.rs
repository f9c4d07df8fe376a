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

/// Pings `target` from inside `ns` (bound to `dev` if given), one echo of at
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

fn ip_json(ns: &Netns, args: &[&str]) -> Result<Vec<Value>, String> {
    let json_args: Vec<&str> = std::iter::once("-j").chain(args.iter().copied()).collect();
    let out = ns.ip(&json_args)?;
    match serde_json::from_str(&out) {
        Ok(Value::Array(items)) => Ok(items),
        _ => Err(format!("ip {}: unexpected output {out:?}", args.join(" "))),
    }
}
