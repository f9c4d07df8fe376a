//! The pool model (SpiderIPPool manifests, validated pools) and the allocation stores the
//! `spiderpool` IPAM plugin and `spiderctl` are built on: node-local files, crash-safe, or
//! etcd, shared by every node.
pub mod defaults;
pub mod error;
pub mod fields;
pub mod filters;
pub mod manifest;
pub mod names;
pub mod pattern;
pub mod pool;
pub mod pool_dir;
pub mod range;
pub mod record;
pub mod selector;
pub mod store;
#[cfg(all(feature = "etcd", any(test, feature = "testing")))]
pub mod testing;

mod attachment;
mod bitmap;
pub mod blocks;
#[cfg(feature = "etcd")]
mod etcd;
mod file_store;
mod fsutil;
#[cfg(test)]
mod testutil;

#[cfg(feature = "etcd")]
pub use blocks::BlockStore;
pub use blocks::LocalBlocks;
pub use error::{ManifestError, PoolError, Refusal, StoreError};
#[cfg(feature = "etcd")]
pub use etcd::{BlockLease, EtcdStore, DEAD_MARGIN_S};
pub use file_store::FileStore;
pub use manifest::Manifest;
pub use pool::Pool;
pub use range::Family;
pub use record::{Owner, Record};
pub use store::{Allocations, Attachment, EtcdConfig, PoolStore, Store, StoreConfig};
