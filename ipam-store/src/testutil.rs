//! Helpers for the crate's tests.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::manifest;
use crate::pool::Pool;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("ipam-store-test-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The seed's first `kubectl apply` input, verbatim: the pool `gpu1-net11` and, in a second
/// document, the SpiderMultusConfig that uses it.
pub const SEED_YAML: &str =
    include_str!("../../conf/seed-verbatim/create-cni-config-and-ippool.yaml");

/// The one pool of a YAML manifest.
pub fn pool_from_yaml(yaml: &str) -> Pool {
    let mut manifest = manifest::parse(yaml, "test.yaml").unwrap();
    assert_eq!(manifest.pools.len(), 1);
    manifest.pools.remove(0)
}

/// The seed's pool `gpu1-net11` (200 addresses).
pub fn seed_pool() -> Pool {
    pool_from_yaml(SEED_YAML)
}
