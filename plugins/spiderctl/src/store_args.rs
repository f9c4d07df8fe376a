//! `--store` and its options: which store a command reads and writes, as the IPAM config's
//! `data_dir` and `store` say it; the defaults are the plugin's.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use ipam_store::store::{DEFAULT_ETCD_PREFIX, DEFAULT_ETCD_TIMEOUT_MS};
use ipam_store::{
    manifest, store, Allocations, EtcdConfig, Manifest, PoolStore, Store, StoreConfig,
};

use crate::DEFAULT_DATA_DIR;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// Files in the node's data dir; pools in the ippool dir.
    File,
    /// etcd, shared by every node; the pools live there too.
    Etcd,
}

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Where allocations live.
    #[arg(long, value_enum, default_value = "file")]
    pub store: StoreKind,
    /// The file store (the plugin's `data_dir`).
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// etcd members, comma-separated: http://host:port or https://host:port.
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_endpoints: Vec<String>,
    /// Prefix of every key the store writes in etcd.
    #[arg(long, default_value = DEFAULT_ETCD_PREFIX)]
    pub etcd_prefix: String,
    /// Budget of one store operation, in ms.
    #[arg(long, default_value_t = DEFAULT_ETCD_TIMEOUT_MS)]
    pub etcd_timeout_ms: u64,
    /// PEM CA of the etcd members (https endpoints).
    #[arg(long)]
    pub etcd_ca_file: Option<PathBuf>,
    /// PEM client certificate, for members started with --client-cert-auth.
    #[arg(long)]
    pub etcd_cert_file: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(long)]
    pub etcd_key_file: Option<PathBuf>,
}

impl StoreArgs {
    /// The IPAM config's `store` object these options describe, checked; file paths made
    /// absolute, as the plugin runs in the runtime's working directory, not ours.
    pub fn config(&self) -> Result<StoreConfig, String> {
        if self.store == StoreKind::File {
            return Ok(StoreConfig::File);
        }
        let config = EtcdConfig {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            timeout_ms: self.etcd_timeout_ms,
            ca_file: absolute(self.etcd_ca_file.as_deref())?,
            cert_file: absolute(self.etcd_cert_file.as_deref())?,
            key_file: absolute(self.etcd_key_file.as_deref())?,
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
}

/// The pools `store`'s users allocate from, and where they were read: etcd's for the etcd
/// store, `ippool_dir`'s files for the file store.
pub fn load_pools(store: &Store, ippool_dir: &Path) -> Result<(Manifest, String), String> {
    let (manifest, origin) = match store {
        Store::Etcd(etcd) => (
            etcd.manifests()
                .map_err(|e| e.to_string())
                .and_then(|texts| manifest::parse_all(texts).map_err(|e| e.to_string())),
            format!("{}/ippools/", etcd.describe()),
        ),
        Store::File(_) => (
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
