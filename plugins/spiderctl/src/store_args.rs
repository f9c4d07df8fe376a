//! `--store` and its options: which store a command reads and writes, as the IPAM config's
//! `data_dir` and `store` say it; the defaults are the plugin's.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use ipam_store::store::{DEFAULT_ETCD_PREFIX, DEFAULT_ETCD_TIMEOUT_MS, DEFAULT_OFFLINE_S};
use ipam_store::{manifest, store, EtcdConfig, Manifest, Store, StoreConfig};

use crate::DEFAULT_DATA_DIR;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// Files in the node's data dir; pools in the ippool dir.
    File,
    /// etcd, shared by every node; the pools live there too.
    Etcd,
}

/// Each flag falls back to an environment variable (`SPIDERCTL_*`; the etcd endpoints and TLS
/// files also to etcdctl's `ETCDCTL_*`), then to the plugin's default.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Where allocations live.
    #[arg(long, value_enum, env = "SPIDERCTL_STORE", default_value = "file")]
    pub store: StoreKind,
    /// The file store (the plugin's `data_dir`).
    #[arg(long, env = "SPIDERCTL_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// etcd members, comma-separated: http://host:port or https://host:port (default
    /// http://127.0.0.1:2379). Also read from ETCDCTL_ENDPOINTS, where host:port means
    /// http://, or https:// with a CA.
    #[arg(long, value_delimiter = ',', env = "SPIDERCTL_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<Vec<String>>,
    /// Prefix of every key the store writes in etcd.
    #[arg(long, env = "SPIDERCTL_ETCD_PREFIX", default_value = DEFAULT_ETCD_PREFIX)]
    pub etcd_prefix: String,
    /// Budget of one store operation, in ms.
    #[arg(long, env = "SPIDERCTL_ETCD_TIMEOUT_MS", default_value_t = DEFAULT_ETCD_TIMEOUT_MS)]
    pub etcd_timeout_ms: u64,
    /// PEM CA of the etcd members (https endpoints); also read from ETCDCTL_CACERT.
    #[arg(long, env = "SPIDERCTL_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate, for members started with --client-cert-auth; also read from
    /// ETCDCTL_CERT.
    #[arg(long, env = "SPIDERCTL_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM key of the client certificate; also read from ETCDCTL_KEY.
    #[arg(long, env = "SPIDERCTL_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<PathBuf>,
    /// Block mode: blocks of this many addresses (a power of two, 4 to 1024) leased per node
    /// and allocated in the node's data dir; 0 is per-address mode. Every node of a pool uses
    /// the same.
    #[arg(long, env = "SPIDERCTL_ETCD_BLOCK_SIZE", default_value_t = 0)]
    pub etcd_block_size: u32,
    /// Block mode: seconds a node goes on allocating from its blocks without reaching etcd.
    #[arg(long, env = "SPIDERCTL_ETCD_OFFLINE_S", default_value_t = DEFAULT_OFFLINE_S)]
    pub etcd_offline_s: u64,
}

/// The etcd endpoint when neither a flag nor the environment names one.
const DEFAULT_ETCD_ENDPOINT: &str = "http://127.0.0.1:2379";

impl StoreArgs {
    /// The IPAM config's `store` object these options describe, checked; file paths made
    /// absolute, as the plugin runs in the runtime's working directory, not ours.
    pub fn config(&self) -> Result<StoreConfig, String> {
        self.config_with(|name| std::env::var_os(name))
    }

    /// [`StoreArgs::config`], with `env` for the etcdctl variables.
    fn config_with(&self, env: impl Fn(&str) -> Option<OsString>) -> Result<StoreConfig, String> {
        if self.store == StoreKind::File {
            return Ok(StoreConfig::File);
        }
        let etcdctl_path = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let ca_file = self
            .etcd_ca_file
            .clone()
            .or_else(|| etcdctl_path("ETCDCTL_CACERT"));
        let endpoints = match &self.etcd_endpoints {
            Some(endpoints) => endpoints.clone(),
            None => match env("ETCDCTL_ENDPOINTS") {
                Some(list) if !list.is_empty() => {
                    etcdctl_endpoints(&list.to_string_lossy(), ca_file.is_some())
                }
                _ => vec![DEFAULT_ETCD_ENDPOINT.to_owned()],
            },
        };
        let config = EtcdConfig {
            endpoints,
            block_size: self.etcd_block_size,
            offline_s: self.etcd_offline_s,
            prefix: self.etcd_prefix.clone(),
            timeout_ms: self.etcd_timeout_ms,
            ca_file: absolute(ca_file.as_deref())?,
            cert_file: absolute(
                self.etcd_cert_file
                    .clone()
                    .or_else(|| etcdctl_path("ETCDCTL_CERT"))
                    .as_deref(),
            )?,
            key_file: absolute(
                self.etcd_key_file
                    .clone()
                    .or_else(|| etcdctl_path("ETCDCTL_KEY"))
                    .as_deref(),
            )?,
        };
        config
            .validate()
            .map_err(|e| format!("--etcd-* options: {e}"))?;
        Ok(StoreConfig::Etcd(config))
    }

    /// Opens the store, as this node.
    pub fn open(&self) -> Result<Store, String> {
        Store::open(&self.config()?, &self.data_dir, store::this_node()).map_err(|e| e.to_string())
    }

    /// Opens the store to read it, creating nothing: a file store whose data dir is missing
    /// is an error naming the path and the flag, not an empty store.
    pub fn open_existing(&self) -> Result<Store, String> {
        let config = self.config()?;
        let local = match &config {
            StoreConfig::File => true,
            StoreConfig::Etcd(etcd) => etcd.block_size > 0,
        };
        if local && !self.data_dir.is_dir() {
            return Err(format!(
                "the data dir {} does not exist or is no directory (--data-dir or \
                 SPIDERCTL_DATA_DIR; the plugin's default is {DEFAULT_DATA_DIR}): name the data \
                 dir of the IPAM config; nothing was created",
                self.data_dir.display()
            ));
        }
        Store::open_existing(&config, &self.data_dir, store::this_node()).map_err(|e| e.to_string())
    }
}

/// `ETCDCTL_ENDPOINTS` as etcdctl reads it: comma-separated, `host:port` without a scheme
/// meaning plain HTTP, or TLS when a CA is given.
fn etcdctl_endpoints(list: &str, tls: bool) -> Vec<String> {
    let scheme = if tls { "https" } else { "http" };
    list.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| match e.contains("://") {
            true => e.to_owned(),
            false => format!("{scheme}://{e}"),
        })
        .collect()
}

/// The pools `store`'s users allocate from, and where they were read: etcd's for the etcd
/// store, `ippool_dir`'s files for the file store.
pub fn load_pools(store: &Store, ippool_dir: &Path) -> Result<(Manifest, String), String> {
    let (manifest, origin) = match store.shared().map_err(|e| e.to_string())? {
        Some(shared) => (
            shared
                .manifests()
                .map_err(|e| e.to_string())
                .and_then(|texts| manifest::parse_all(texts).map_err(|e| e.to_string())),
            format!("{}/ippools/", shared.describe()),
        ),
        None => (
            manifest::load_dir(ippool_dir).map_err(|e| e.to_string()),
            ippool_dir.display().to_string(),
        ),
    };
    Ok((manifest?, origin))
}

fn absolute(path: Option<&Path>) -> Result<Option<PathBuf>, String> {
    path.map(|p| {
        std::path::absolute(p).map_err(|e| format!("cannot make {} absolute: {e}", p.display()))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
    }

    /// The etcd config of `args` with `vars` as the only etcdctl variables.
    fn etcd(args: &[&str], vars: &[(&str, &str)]) -> Result<EtcdConfig, String> {
        let cli = Cli::try_parse_from([&["spiderctl", "--store", "etcd"][..], args].concat())
            .map_err(|e| e.to_string())?;
        let env = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        };
        match cli.store.config_with(env)? {
            StoreConfig::Etcd(config) => Ok(config),
            StoreConfig::File => unreachable!("--store etcd"),
        }
    }

    #[test]
    fn etcdctl_variables_are_the_fallback_of_the_flags() {
        assert_eq!(etcd(&[], &[]).unwrap().endpoints, [DEFAULT_ETCD_ENDPOINT]);
        let plain = etcd(
            &[],
            &[("ETCDCTL_ENDPOINTS", "10.0.0.1:2379, http://10.0.0.2:2379")],
        );
        assert_eq!(
            plain.unwrap().endpoints,
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        let tls = etcd(
            &[],
            &[
                ("ETCDCTL_ENDPOINTS", "10.0.0.1:2379"),
                ("ETCDCTL_CACERT", "/ca.pem"),
                ("ETCDCTL_CERT", "/c.pem"),
                ("ETCDCTL_KEY", "/k.pem"),
            ],
        )
        .unwrap();
        assert_eq!(tls.endpoints, ["https://10.0.0.1:2379"]);
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(tls.cert_file.as_deref(), Some(Path::new("/c.pem")));
        assert_eq!(tls.key_file.as_deref(), Some(Path::new("/k.pem")));
        // A flag wins over the variable.
        let flag = etcd(
            &["--etcd-endpoints", "http://10.9.9.9:2379"],
            &[("ETCDCTL_ENDPOINTS", "10.0.0.1:2379")],
        );
        assert_eq!(flag.unwrap().endpoints, ["http://10.9.9.9:2379"]);
        // What the variables say is checked like the flags.
        let err = etcd(&[], &[("ETCDCTL_CERT", "/c.pem")]).unwrap_err();
        assert!(err.contains("store.ca_file / cert_file"), "{err}");
    }
}
