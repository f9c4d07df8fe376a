//! The `ipam` section of the network config, as spiderpool's own plugin reads it. Parsed once
//! into typed values; the rest of the plugin trusts them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cni::types::parse_config;
use cni::{log_debug, log_info, Error};
use ipam_store::StoreConfig;
use serde::Deserialize;
use serde_json::Value;

use ipam_store::defaults::{DEFAULT_DATA_DIR, DEFAULT_IPPOOL_DIR, DEFAULT_NODE_LABELS_FILE};
/// spiderpool's `log_file_max_size` default, in MiB.
const DEFAULT_LOG_MAX_MIB: u64 = 100;

/// spiderpool's keys that only make sense with its agent, or that our single rotated log file
/// does not need: accepted so its configs work verbatim, and logged as ignored.
const IGNORED_SPIDERPOOL_KEYS: [&str; 4] = [
    "log_file_max_age",
    "log_file_max_count",
    "match_master_subnet",
    "ipam_unix_socket_path",
];

#[derive(Debug, Deserialize)]
struct Stdin {
    ipam: Wire,
}

#[derive(Debug, Deserialize)]
struct Wire {
    #[serde(default)]
    default_ipv4_ippool: Vec<String>,
    #[serde(default)]
    default_ipv6_ippool: Vec<String>,
    ippool_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    node_labels_file: Option<PathBuf>,
    log_file_path: Option<PathBuf>,
    #[serde(default)]
    log_level: String,
    log_file_max_size: Option<Mib>,
    #[serde(default)]
    clean_gateway: bool,
    /// Where allocations live: absent or `{"type": "file"}` for `data_dir`, or etcd.
    #[serde(default)]
    store: StoreConfig,
    /// `type` and every key not named above.
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

/// A size in MiB, written as a number (`100`, as spiderpool's code reads it) or as a string of
/// digits (`"100"`, as spiderpool's documents write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mib(u64);

impl<'de> Deserialize<'de> for Mib {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mib, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mib;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size in MiB: a number or a string of digits, e.g. 100 or \"100\"")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Mib, E> {
                Ok(Mib(v))
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Mib, E> {
                match v.parse() {
                    Ok(mib) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(Mib(mib)),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug)]
pub struct IpamConf {
    /// Pools tried in order for each family; both empty means "the pools marked default".
    pub v4_pools: Vec<String>,
    pub v6_pools: Vec<String>,
    pub ippool_dir: PathBuf,
    pub data_dir: PathBuf,
    pub node_labels_file: PathBuf,
    /// Leave the pool's gateway out of the result (spiderpool's `clean_gateway`).
    pub clean_gateway: bool,
    pub store: StoreConfig,
}

impl IpamConf {
    pub fn parse(stdin: &[u8]) -> Result<IpamConf, Error> {
        let w = parse_config::<Stdin>(stdin, "spiderpool ipam config")?.ipam;
        let max_mib = w
            .log_file_max_size
            .map_or(DEFAULT_LOG_MAX_MIB, |Mib(mib)| mib);
        cni::log::init_from_config(
            w.log_file_path.as_deref(),
            &w.log_level,
            max_mib << 20,
            "spiderpool",
        );
        for (key, value) in &w.rest {
            if key == "type" {
                continue;
            }
            if IGNORED_SPIDERPOOL_KEYS.contains(&key.as_str()) {
                log_debug!(
                    "ipam.{key} = {value} is ignored: not needed without spiderpool's agent"
                );
            } else {
                log_info!("ipam.{key} is not a spiderpool key: ignored");
            }
        }
        if let StoreConfig::Etcd(etcd) = &w.store {
            etcd.validate()
                .map_err(|reason| Error::InvalidConfig(format!("ipam.{reason}")))?;
        }
        for (key, list) in [
            ("default_ipv4_ippool", &w.default_ipv4_ippool),
            ("default_ipv6_ippool", &w.default_ipv6_ippool),
        ] {
            for (i, entry) in list.iter().enumerate() {
                ipam_store::pattern::validate(entry)
                    .map_err(|reason| Error::InvalidConfig(format!("ipam.{key}[{i}]: {reason}")))?;
            }
        }
        Ok(IpamConf {
            v4_pools: w.default_ipv4_ippool,
            v6_pools: w.default_ipv6_ippool,
            ippool_dir: w.ippool_dir.unwrap_or_else(|| DEFAULT_IPPOOL_DIR.into()),
            data_dir: w.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            node_labels_file: w
                .node_labels_file
                .unwrap_or_else(|| DEFAULT_NODE_LABELS_FILE.into()),
            clean_gateway: w.clean_gateway,
            store: w.store,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_ipam_section_parses_with_defaults() {
        let conf = IpamConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"macvlan",
                 "ipam":{"type":"spiderpool","default_ipv4_ippool":["gpu1-net11"],
                         "log_file_max_count":3,"match_master_subnet":false}}"#,
        )
        .unwrap();
        assert_eq!(conf.v4_pools, ["gpu1-net11"]);
        assert!(conf.v6_pools.is_empty());
        assert_eq!(conf.ippool_dir, PathBuf::from(DEFAULT_IPPOOL_DIR));
        assert_eq!(conf.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(!conf.clean_gateway);
    }

    #[test]
    fn a_pool_list_of_the_wrong_type_names_the_field() {
        let err = IpamConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"spiderpool","default_ipv4_ippool":"gpu1-net11"}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(
            err.to_string().contains("ipam.default_ipv4_ippool"),
            "{err}"
        );
    }

    #[test]
    fn log_file_max_size_is_a_number_or_a_string_of_digits() {
        let size = |value: &str| {
            let stdin = format!(
                r#"{{"cniVersion":"1.0.0","name":"n","ipam":{{"type":"spiderpool","log_file_max_size":{value}}}}}"#
            );
            parse_config::<Stdin>(stdin.as_bytes(), "c").map(|s| s.ipam.log_file_max_size)
        };
        assert_eq!(size("100").unwrap(), Some(Mib(100)));
        assert_eq!(size(r#""100""#).unwrap(), Some(Mib(100)));
        for bad in [
            r#""100MB""#,
            r#""-1""#,
            r#""+5""#,
            r#""""#,
            "-1",
            "1.5",
            "true",
        ] {
            let err = size(bad).unwrap_err();
            assert_eq!(err.code(), 7, "{bad}: {err}");
            assert!(
                err.to_string().contains("ipam.log_file_max_size"),
                "{bad}: {err}"
            );
        }
        // The whole config parses with the string form.
        IpamConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"spiderpool","log_file_max_size":"100"}}"#,
        )
        .unwrap();
    }

    #[test]
    fn a_config_without_ipam_is_refused() {
        let err = IpamConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap_err();
        assert_eq!(err.code(), 7);
        assert!(err.to_string().contains("ipam"), "{err}");
    }
}

#[cfg(test)]
mod fuzz;
