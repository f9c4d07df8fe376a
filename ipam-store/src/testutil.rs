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
pub const SEED_YAML: &str = r#"apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderIPPool
metadata:
  name: gpu1-net11
spec:
  gateway: 172.16.11.254
  subnet: 172.16.11.0/16
  ips:
    - 172.16.11.1-172.16.11.200
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata:
  name: gpu1-macvlan
  namespace: spiderpool
spec:
  cniType: macvlan
  rdmaResourceName: spidernet.io/shared_cx5_gpu1
  macvlan:
    master: ["enp11s0f0np0"]
    ippools:
      ipv4: ["gpu1-net11"]
"#;

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
