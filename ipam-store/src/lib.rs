//! The pool model (SpiderIPPool manifests, validated pools) and the node-local, crash-safe
//! allocation store the `spiderpool` IPAM plugin and `spiderctl` are built on.
pub mod error;
pub mod manifest;
pub mod names;
pub mod pool;
pub mod range;
pub mod record;
pub mod store;

mod attachment;
mod bitmap;
mod fsutil;
#[cfg(test)]
mod testutil;

pub use error::{ManifestError, PoolError, StoreError};
pub use manifest::Manifest;
pub use pool::Pool;
pub use range::Family;
pub use record::{Owner, Record};
pub use store::{Attachment, FileStore};
