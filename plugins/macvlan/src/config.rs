//! The macvlan config, field-compatible with the reference plugin and spiderpool's renderer.
//! Parsed once into typed values; after `MacvlanConf::parse` the rest of the plugin trusts it.

use std::path::PathBuf;

use cni::netlink::parse_mac;
use cni::types::{parse_config, Dns, IpamRef};
use cni::{Error, Invocation};
use netlink_packet_route::link::MacVlanMode;
use serde::Deserialize;

/// The smallest MTU IPv4 allows; the kernel refuses less on an Ethernet link.
const MIN_MTU: u32 = 68;

#[derive(Debug, Deserialize)]
struct Wire {
    master: Option<String>,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    mac: String,
    #[serde(default, rename = "linkInContainer")]
    link_in_container: bool,
    /// The length of the master's queue for broadcast and multicast; 0: the kernel's default.
    #[serde(default)]
    bcqueuelen: u32,
    ipam: Option<IpamRef>,
    #[serde(default)]
    dns: Dns,
    #[serde(default, rename = "runtimeConfig")]
    runtime_config: RuntimeConfig,
    log_file_path: Option<PathBuf>,
    #[serde(default)]
    log_level: String,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    mac: String,
}

#[derive(Debug)]
pub struct MacvlanConf {
    pub master: String,
    pub mode: MacVlanMode,
    /// None: inherit the master's.
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    /// `bcqueuelen` when set (not 0): asked of the kernel and verified on the link.
    pub bc_queue_len: Option<u32>,
    /// The IPAM plugin to delegate to; None makes a layer-2-only interface.
    pub ipam: Option<String>,
    /// Put into the result, as the reference plugin does (when it says anything).
    pub dns: Dns,
}

impl MacvlanConf {
    pub fn parse(inv: &Invocation) -> Result<Self, Error> {
        let w: Wire = parse_config(&inv.stdin, "macvlan config")?;
        cni::log::init_from_config(
            w.log_file_path.as_deref(),
            &w.log_level,
            10 << 20,
            "macvlan",
        );
        let master = match w.master {
            Some(m) if !m.is_empty() => m,
            _ => return Err(Error::InvalidConfig(
                "field master is required: name the host NIC to attach to, e.g. \"enp11s0f0np0\""
                    .into(),
            )),
        };
        cni::env::validate_ifname(&master).map_err(|_| {
            Error::InvalidConfig(format!(
                "field master: {master:?} is not a valid interface name"
            ))
        })?;
        if w.link_in_container {
            return Err(Error::UnsupportedField {
                field: "linkInContainer".into(),
                reason: "true is not supported: the master must be in the host netns".into(),
            });
        }
        if w.mtu != 0 && w.mtu < MIN_MTU {
            return Err(Error::InvalidConfig(format!(
                "field mtu: {} is below the minimum {MIN_MTU}: use {MIN_MTU} or more, or 0 to inherit the master's",
                w.mtu
            )));
        }
        // Precedence as in the reference plugin: runtimeConfig, then CNI_ARGS MAC, then mac.
        let mac_src = [
            ("runtimeConfig.mac", w.runtime_config.mac.as_str()),
            ("CNI_ARGS MAC", inv.env.arg("MAC").unwrap_or("")),
            ("mac", w.mac.as_str()),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_empty());
        let mac = mac_src
            .map(|(field, v)| {
                parse_mac(v).ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "field {field}: {v:?} is not a MAC address like 02:00:ac:10:0b:01"
                    ))
                })
            })
            .transpose()?;
        Ok(MacvlanConf {
            master,
            mode: parse_mode(&w.mode)?,
            mtu: (w.mtu != 0).then_some(w.mtu),
            mac,
            bc_queue_len: (w.bcqueuelen != 0).then_some(w.bcqueuelen),
            ipam: w.ipam.map(|i| i.plugin).filter(|t| !t.is_empty()),
            dns: w.dns,
        })
    }
}

fn parse_mode(s: &str) -> Result<MacVlanMode, Error> {
    Ok(match s {
        "" | "bridge" => MacVlanMode::Bridge,
        "private" => MacVlanMode::Private,
        "vepa" => MacVlanMode::Vepa,
        "passthru" => MacVlanMode::Passthrough,
        other => {
            return Err(Error::InvalidConfig(format!(
                "field mode: {other:?} is not a macvlan mode: use bridge (default), private, vepa or passthru"
            )))
        }
    })
}

pub fn mode_name(mode: MacVlanMode) -> &'static str {
    match mode {
        MacVlanMode::Private => "private",
        MacVlanMode::Vepa => "vepa",
        MacVlanMode::Passthrough => "passthru",
        MacVlanMode::Source => "source",
        _ => "bridge",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cni::{CniVersion, Env};

    fn inv(conf: &str, cni_args: &str) -> Invocation {
        let args = cni_args.to_string();
        Invocation {
            env: Env::from_lookup(|k| match k {
                "CNI_COMMAND" => Some("ADD".into()),
                "CNI_CONTAINERID" => Some("c".into()),
                "CNI_NETNS" => Some("/run/netns/x".into()),
                "CNI_IFNAME" => Some("net1".into()),
                "CNI_PATH" => Some("/opt/cni/bin".into()),
                "CNI_ARGS" => Some(args.clone()),
                _ => None,
            })
            .unwrap(),
            stdin: conf.as_bytes().to_vec(),
            version: CniVersion::V1_0_0,
            network: "n".into(),
        }
    }

    fn parse(conf: &str) -> Result<MacvlanConf, Error> {
        MacvlanConf::parse(&inv(conf, ""))
    }

    #[test]
    fn seed_conf_parses_with_defaults() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"gpu1-macvlan","type":"macvlan","master":"enp11s0f0np0","mtu":1480,"ipam":{"type":"spiderpool","default_ipv4_ippool":["gpu1-net11"]}}"#).unwrap();
        assert_eq!(c.master, "enp11s0f0np0");
        assert_eq!(c.mode, MacVlanMode::Bridge);
        assert_eq!(c.mtu, Some(1480));
        assert_eq!(c.ipam.as_deref(), Some("spiderpool"));
        assert!(c.mac.is_none());
        assert!(c.bc_queue_len.is_none());
        assert!(c.dns.nameservers.is_empty());
    }

    #[test]
    fn bcqueuelen_and_dns_are_read_as_the_reference_names_them() {
        let c = parse(
            r#"{"master":"m","bcqueuelen":2000,
                "dns":{"nameservers":["10.0.0.10"],"domain":"svc","search":["a.b"],"options":["ndots:2"]}}"#,
        )
        .unwrap();
        assert_eq!(c.bc_queue_len, Some(2000));
        assert_eq!(c.dns.nameservers, ["10.0.0.10"]);
        assert_eq!(c.dns.domain, "svc");
        assert_eq!(c.dns.search, ["a.b"]);
        assert_eq!(c.dns.options, ["ndots:2"]);
        assert_eq!(
            parse(r#"{"master":"m","bcqueuelen":0}"#)
                .unwrap()
                .bc_queue_len,
            None
        );
    }

    #[test]
    fn mac_precedence_follows_the_reference() {
        let conf = r#"{"master":"m","mac":"02:00:00:00:00:01","runtimeConfig":{"mac":"02:00:00:00:00:03"}}"#;
        let c = MacvlanConf::parse(&inv(conf, "MAC=02:00:00:00:00:02")).unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 3]));
        let c = MacvlanConf::parse(&inv(
            r#"{"master":"m","mac":"02:00:00:00:00:01"}"#,
            "MAC=02:00:00:00:00:02",
        ))
        .unwrap();
        assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 2]));
    }

    #[test]
    fn bad_fields_are_named() {
        for (conf, code, names) in [
            (r#"{"mode":"bridge"}"#, 7, "field master"),
            (r#"{"master":""}"#, 7, "field master"),
            (r#"{"master":"a/b"}"#, 7, "field master"),
            (r#"{"master":"m","mode":"l2"}"#, 7, "field mode: \"l2\""),
            (r#"{"master":"m","mtu":40}"#, 7, "field mtu: 40"),
            (r#"{"master":"m","mtu":-1}"#, 7, "field mtu"),
            (r#"{"master":"m","mac":"zz"}"#, 7, "field mac: \"zz\""),
            (
                r#"{"master":"m","mac":"+2:+0:00:00:00:01"}"#,
                7,
                "field mac: \"+2:+0:00:00:00:01\"",
            ),
            (r#"{"master":"m","bcqueuelen":-1}"#, 7, "field bcqueuelen"),
            (
                r#"{"master":"m","bcqueuelen":"big"}"#,
                7,
                "field bcqueuelen",
            ),
            (
                r#"{"master":"m","dns":{"nameservers":"x"}}"#,
                7,
                "field dns.nameservers",
            ),
            (
                r#"{"master":"m","linkInContainer":true}"#,
                2,
                "linkInContainer",
            ),
        ] {
            let e = parse(conf).unwrap_err();
            assert_eq!(e.code(), code, "{conf}: {e}");
            assert!(e.to_string().contains(names), "{conf}: {e}");
        }
    }
}

#[cfg(test)]
mod fuzz;
