//! The spec's data: network config parsing and the result object, in every version we speak.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;
use crate::version::CniVersion;

/// Parses a typed config, so that an error names the field that is wrong: broken JSON is
/// code 6 (cannot decode), well-formed JSON with a wrong or missing field is code 7.
pub fn parse_config<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let field = if path == "." {
                    String::new()
                } else {
                    format!("field {path}: ")
                };
                Error::InvalidConfig(format!("{what}: {field}{inner}"))
            }
            _ => Error::decode(what, inner),
        }
    })?;
    // Whitespace may follow the object, nothing else: `{...}}` is not a config (Go's
    // json.Unmarshal, which the reference plugins use, refuses it too).
    de.end().map_err(|e| Error::decode(what, e))?;
    Ok(value)
}

/// What every config carries; read first so that errors can answer in the right version.
#[derive(Debug, Deserialize)]
pub struct ConfHeader {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
}

/// The `ipam` section of a config: only its type matters to the plugin that delegates.
#[derive(Debug, Clone, Deserialize)]
pub struct IpamRef {
    #[serde(rename = "type")]
    pub plugin: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// 1.1.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0 only.
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    /// 1.1.0 only.
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0 only, as are the fields below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// A result in the newest shape; older versions are produced from it by `to_json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

const INTERFACE_FIELDS_SINCE_1_1: [&str; 3] = ["mtu", "socketPath", "pciID"];
const ROUTE_FIELDS_SINCE_1_1: [&str; 5] = ["mtu", "advmss", "priority", "table", "scope"];

impl CniResult {
    /// Reads a result of any version (IPAM output, `prevResult`); `version` in `ips` is ignored.
    pub fn from_value(value: Value, what: &str) -> Result<Self, Error> {
        serde_path_to_error::deserialize(value)
            .map_err(|e| Error::InvalidConfig(format!("{what}: field {}: {}", e.path(), e.inner())))
    }

    /// The result object as `version` defines it.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut v = serde_json::to_value(self).expect("result serialises");
        let obj = v.as_object_mut().expect("result is an object");
        if version < CniVersion::V1_1_0 {
            strip(obj.get_mut("interfaces"), &INTERFACE_FIELDS_SINCE_1_1);
            strip(obj.get_mut("routes"), &ROUTE_FIELDS_SINCE_1_1);
        }
        if version.ips_carry_version() {
            if let Some(Value::Array(ips)) = obj.get_mut("ips") {
                for (ip, conf) in ips.iter_mut().zip(&self.ips) {
                    let family = if conf.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    ip["version"] = Value::from(family);
                }
            }
        }
        obj.insert("cniVersion".into(), Value::from(version.as_str()));
        v
    }
}

fn strip(list: Option<&mut Value>, fields: &[&str]) {
    if let Some(Value::Array(items)) = list {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            for f in fields {
                item.remove(*f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "net1".into(),
                mac: "02:00:00:00:00:01".into(),
                mtu: Some(1480),
                sandbox: "/run/netns/p".into(),
                ..Default::default()
            }],
            ips: vec![
                IpConfig {
                    address: "172.16.11.1/16".parse().unwrap(),
                    gateway: Some("172.16.11.254".parse().unwrap()),
                    interface: Some(0),
                },
                IpConfig {
                    address: "fd00::1/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                },
            ],
            routes: vec![Route {
                table: Some(100),
                ..Route::new("0.0.0.0/0".parse().unwrap(), None)
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn old_versions_carry_ip_version_and_lack_1_1_fields() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let j = sample().to_json(v);
            assert_eq!(j["cniVersion"], v.as_str());
            assert_eq!(j["ips"][0]["version"], "4");
            assert_eq!(j["ips"][1]["version"], "6");
            assert!(j["interfaces"][0].get("mtu").is_none());
            assert!(j["routes"][0].get("table").is_none());
        }
    }

    #[test]
    fn v1_lacks_ip_version_and_only_1_1_has_new_fields() {
        let j = sample().to_json(CniVersion::V1_0_0);
        assert!(j["ips"][0].get("version").is_none());
        assert!(j["interfaces"][0].get("mtu").is_none());
        let j = sample().to_json(CniVersion::V1_1_0);
        assert_eq!(j["interfaces"][0]["mtu"], 1480);
        assert_eq!(j["routes"][0]["table"], 100);
    }

    #[test]
    fn round_trips_through_any_version() {
        for v in CniVersion::ALL {
            let back = CniResult::from_value(sample().to_json(v), "result").unwrap();
            assert_eq!(back.ips, sample().ips);
        }
    }

    #[test]
    fn config_errors_name_the_field_and_pick_the_code() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct C {
            mtu: u32,
        }
        let e = parse_config::<C>(br#"{"mtu":"big"}"#, "macvlan config").unwrap_err();
        assert_eq!(e.code(), 7);
        assert!(e.to_string().contains("field mtu"), "{e}");
        let e = parse_config::<C>(b"{not json", "macvlan config").unwrap_err();
        assert_eq!(e.code(), 6);
        let e = parse_config::<C>(b"{\"mtu\":1}}", "macvlan config").unwrap_err();
        assert_eq!(e.code(), 6);
        assert!(e.to_string().contains("trailing characters"), "{e}");
        assert_eq!(parse_config::<C>(b" {\"mtu\":1}\n", "c").unwrap().mtu, 1);
    }
}
