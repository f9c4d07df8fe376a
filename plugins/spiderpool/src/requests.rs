//! Static requests: the addresses a runtime asks for, as `runtimeConfig.ips` (the `ips`
//! capability: Multus' network selection `ips`, podman's `--network net:ip=...`) and as the
//! `CNI_ARGS` `IP=` comma list (which Multus and podman send too). Parsed once, here: at most
//! one address per family, and the two sources, when both are given, naming the same
//! addresses. A request is then honoured exactly or refused (code 109), never replaced.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use cni::types::parse_config;
use cni::Error;
use ipam_store::Family;
use serde::Deserialize;

/// `172.16.11.150` or `172.16.11.150/16`, as CNI's conventions write an entry of `ips`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestedIp {
    pub ip: IpAddr,
    /// When given, it must be the pool's prefix: the address is configured with the pool's.
    pub prefix: Option<u8>,
}

impl RequestedIp {
    pub fn family(&self) -> Family {
        Family::of(self.ip)
    }
}

impl FromStr for RequestedIp {
    type Err = String;

    fn from_str(s: &str) -> Result<RequestedIp, String> {
        let bad = || {
            format!(
                "{s:?} is not an IP address: write one address, with or without its prefix \
                 (172.16.11.150, 172.16.11.150/16, fd00::5/64)"
            )
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u8>() {
                    Ok(len) if len <= width => Some(len),
                    _ => return Err(bad()),
                }
            }
            Some(_) => return Err(bad()),
            None => None,
        };
        Ok(RequestedIp { ip, prefix })
    }
}

impl<'de> Deserialize<'de> for RequestedIp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RequestedIp, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RequestedIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix {
            Some(len) => write!(f, "{}/{len}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// The requested address of each family, from both sources.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Requests {
    v4: Option<RequestedIp>,
    v6: Option<RequestedIp>,
}

/// Where a request came from, for messages.
const RUNTIME_CONFIG: &str = "runtimeConfig.ips";
const CNI_ARGS: &str = "CNI_ARGS IP";

impl Requests {
    /// The requests of an ADD: its stdin's `runtimeConfig.ips` and `CNI_ARGS` `IP=`.
    pub fn of(stdin: &[u8], cni_args_ip: Option<&str>) -> Result<Requests, Error> {
        #[derive(Deserialize)]
        struct Stdin {
            #[serde(default, rename = "runtimeConfig")]
            runtime_config: RuntimeConfig,
        }
        #[derive(Default, Deserialize)]
        struct RuntimeConfig {
            #[serde(default)]
            ips: Vec<RequestedIp>,
        }
        let listed = parse_config::<Stdin>(stdin, "spiderpool ipam config")?
            .runtime_config
            .ips;
        let from_args = match cni_args_ip {
            Some(list) => list
                .split(',')
                .map(|entry| {
                    entry.parse().map_err(|reason| Error::InvalidEnv {
                        name: "CNI_ARGS",
                        reason: format!("IP={list}: {reason}"),
                    })
                })
                .collect::<Result<Vec<RequestedIp>, Error>>()?,
            None => Vec::new(),
        };
        Requests::merge(
            Requests::one_per_family(&listed, RUNTIME_CONFIG)?,
            Requests::one_per_family(&from_args, CNI_ARGS)?,
        )
    }

    fn one_per_family(list: &[RequestedIp], source: &str) -> Result<Requests, Error> {
        let mut requests = Requests::default();
        for &request in list {
            let slot = requests.slot(request.family());
            if let Some(first) = slot {
                return Err(Error::RequestRefused(format!(
                    "{source} asks for two {} addresses, {first} and {request}: an interface \
                     gets one address per family; ask for one",
                    request.family()
                )));
            }
            *slot = Some(request);
        }
        Ok(requests)
    }

    /// Either source alone, or both when they name the same addresses.
    fn merge(config: Requests, args: Requests) -> Result<Requests, Error> {
        if config.is_empty() || args.is_empty() {
            return Ok(if config.is_empty() { args } else { config });
        }
        let disagree = || {
            Error::RequestRefused(format!(
                "{RUNTIME_CONFIG} asks for {} but {CNI_ARGS}= for {}: when a runtime passes both \
                 they must name the same addresses; fix the request",
                config.describe(),
                args.describe()
            ))
        };
        let mut merged = Requests::default();
        for family in [Family::V4, Family::V6] {
            *merged.slot(family) = match (config.get(family), args.get(family)) {
                (None, None) => None,
                (Some(a), Some(b)) if a.ip == b.ip => match (a.prefix, b.prefix) {
                    (Some(x), Some(y)) if x != y => return Err(disagree()),
                    (x, y) => Some(RequestedIp {
                        ip: a.ip,
                        prefix: x.or(y),
                    }),
                },
                _ => return Err(disagree()),
            };
        }
        Ok(merged)
    }

    fn slot(&mut self, family: Family) -> &mut Option<RequestedIp> {
        match family {
            Family::V4 => &mut self.v4,
            Family::V6 => &mut self.v6,
        }
    }

    /// The address requested in `family`, if any.
    pub fn get(&self, family: Family) -> Option<RequestedIp> {
        match family {
            Family::V4 => self.v4,
            Family::V6 => self.v6,
        }
    }

    /// Every request, IPv4 first.
    pub fn iter(&self) -> impl Iterator<Item = RequestedIp> {
        self.v4.into_iter().chain(self.v6)
    }

    fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }

    fn describe(&self) -> String {
        self.iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stdin(ips: &str) -> Vec<u8> {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"type":"spiderpool"}},"runtimeConfig":{{"ips":{ips}}}}}"#
        )
        .into_bytes()
    }

    fn req(s: &str) -> RequestedIp {
        s.parse().unwrap()
    }

    #[test]
    fn entries_are_addresses_with_or_without_a_prefix() {
        assert_eq!(
            req("172.16.11.150"),
            RequestedIp {
                ip: "172.16.11.150".parse().unwrap(),
                prefix: None
            }
        );
        assert_eq!(req("172.16.11.150/16").prefix, Some(16));
        assert_eq!(req("fd00::5/64").prefix, Some(64));
        assert_eq!(req("fd00::5/64").to_string(), "fd00::5/64");
        for bad in [
            "",
            "172.16.11",
            "172.16.11.150/",
            "172.16.11.150/33",
            "172.16.11.150/+16",
            "172.16.11.150/-1",
            "fd00::5/129",
            " 172.16.11.150",
            "172.16.11.150/16/1",
            "host.example",
        ] {
            let err = bad.parse::<RequestedIp>().unwrap_err();
            assert!(err.contains("is not an IP address"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn both_sources_are_read_and_must_agree() {
        let none = Requests::of(br#"{"cniVersion":"1.0.0","name":"n"}"#, None).unwrap();
        assert_eq!(none, Requests::default());
        // podman sends both, the same address; Multus' list may carry the prefix.
        let both = Requests::of(&stdin(r#"["172.16.11.150/16"]"#), Some("172.16.11.150")).unwrap();
        assert_eq!(both.get(Family::V4), Some(req("172.16.11.150/16")));
        assert_eq!(both.get(Family::V6), None);
        let dual = Requests::of(&stdin("[]"), Some("172.16.11.150,fd00::5")).unwrap();
        assert_eq!(dual.iter().count(), 2);
        let only_config = Requests::of(&stdin(r#"["fd00::5"]"#), None).unwrap();
        assert_eq!(only_config.get(Family::V6), Some(req("fd00::5")));

        for (ips, arg) in [
            (r#"["172.16.11.150"]"#, "172.16.11.151"),
            (r#"["172.16.11.150/16"]"#, "172.16.11.150/24"),
            (r#"["172.16.11.150","fd00::5"]"#, "172.16.11.150"),
        ] {
            let err = Requests::of(&stdin(ips), Some(arg)).unwrap_err();
            assert_eq!(err.code(), 109, "{ips} {arg}: {err}");
            assert!(err.to_string().contains("must name the same"), "{err}");
        }
    }

    #[test]
    fn one_address_per_family_and_bad_entries_name_their_source() {
        let err = Requests::of(&stdin(r#"["172.16.11.1","172.16.11.2"]"#), None).unwrap_err();
        assert_eq!(err.code(), 109);
        assert!(
            err.to_string()
                .contains("two IPv4 addresses, 172.16.11.1 and 172.16.11.2"),
            "{err}"
        );
        let err = Requests::of(&stdin("[]"), Some("fd00::1,fd00::2")).unwrap_err();
        assert!(
            err.to_string().contains("CNI_ARGS IP asks for two IPv6"),
            "{err}"
        );

        let err = Requests::of(&stdin(r#"["nope"]"#), None).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("runtimeConfig.ips[0]"), "{err}");
        let err = Requests::of(&stdin(r#""172.16.11.1""#), None).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("runtimeConfig.ips"), "{err}");
        for arg in ["nope", "", "172.16.11.1,", "172.16.11.1;x"] {
            let err = Requests::of(&stdin("[]"), Some(arg)).unwrap_err();
            assert_eq!(err.code(), 4, "{arg:?}: {err}");
            assert!(err.to_string().contains("CNI_ARGS"), "{err}");
        }
    }

    use cni::fuzzing::{any_json, check_codes, config, nasty_string};
    use proptest::prelude::*;

    /// Request entries: good ones of both families, with and without prefixes, and junk.
    fn entry() -> BoxedStrategy<String> {
        prop_oneof![
            2 => (1u8..=254, prop::option::of(0u8..=40))
                .prop_map(|(host, len)| match len {
                    Some(len) => format!("172.16.11.{host}/{len}"),
                    None => format!("172.16.11.{host}"),
                }),
            1 => (1u16..=300, prop::option::of(0u8..=140))
                .prop_map(|(host, len)| match len {
                    Some(len) => format!("fd00::{host:x}/{len}"),
                    None => format!("fd00::{host:x}"),
                }),
            1 => nasty_string(),
        ]
        .boxed()
    }

    proptest! {
        #![proptest_config(config())]

        /// Any runtimeConfig.ips and IP= give requests or an error with a documented code;
        /// what is accepted has at most one address per family, each one that was asked for.
        #[test]
        fn any_requests_give_requests_or_a_documented_code(
            listed in prop::collection::vec(entry(), 0..4),
            args in prop::option::of(prop::collection::vec(entry(), 0..3)),
            junk in any_json(),
            use_junk in any::<bool>(),
        ) {
            let ips = if use_junk { junk } else { serde_json::json!(listed) };
            let stdin = serde_json::json!({"cniVersion": "1.0.0", "name": "n",
                                           "runtimeConfig": {"ips": &ips}}).to_string();
            let arg = args.map(|a| a.join(","));
            let result = Requests::of(stdin.as_bytes(), arg.as_deref());
            if let Ok(requests) = &result {
                let sent = ips.as_array().into_iter().flatten().filter_map(|v| v.as_str());
                let asked: Vec<String> = sent.map(str::to_owned)
                    .chain(arg.iter().flat_map(|a| a.split(',').map(str::to_owned)))
                    .collect();
                for request in requests.iter() {
                    prop_assert!(asked.iter().any(|a| a.parse::<RequestedIp>()
                        .is_ok_and(|r| r.ip == request.ip)), "{request} was not asked for");
                }
                prop_assert!(requests.iter().filter(|r| r.ip.is_ipv4()).count() <= 1);
            }
            check_codes(result, &[4, 6, 7, 109])?;
        }
    }
}
