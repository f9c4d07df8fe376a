//! The one place where the pool model's and the store's errors become CNI errors.

use std::io;

use cni::Error;
use ipam_store::names::NameKind;
use ipam_store::{ManifestError, StoreError};

pub fn store_error(e: StoreError) -> Error {
    let message = e.to_string();
    match e {
        StoreError::Exhausted { .. } | StoreError::Disabled { .. } => Error::PoolExhausted(message),
        StoreError::Refused { .. } => Error::RequestRefused(message),
        // Container ids and ifnames were checked against the same rules by `cni::env`; only
        // the network name (the conflist's `name`) can get here.
        StoreError::InvalidName { what, .. } => match what {
            NameKind::ContainerId => invalid_env("CNI_CONTAINERID", message),
            NameKind::Ifname => invalid_env("CNI_IFNAME", message),
            NameKind::Network | NameKind::Pool => Error::InvalidConfig(message),
            NameKind::Node => invalid_env("SPIDERPOOL_NODE_NAME", message),
        },
        StoreError::Io { op, path, source } => Error::Io {
            context: format!("cannot {op} {}", path.display()),
            source,
        },
        StoreError::Handover { what, source } => Error::Io {
            context: what,
            source,
        },
        StoreError::Corrupt { path, reason } => Error::Io {
            context: format!("store file {} is damaged", path.display()),
            source: io::Error::new(io::ErrorKind::InvalidData, reason),
        },
        // The runtime retries ADD on code 11; a retry is safe, each change being one
        // transaction.
        StoreError::Unavailable { .. }
        | StoreError::Contended { .. }
        | StoreError::Asked { .. }
        | StoreError::Offline { .. } => Error::TryAgainLater(message),
        StoreError::BlockSize { .. } => Error::InvalidConfig(message),
        StoreError::Etcd { .. } | StoreError::DamagedKey { .. } | StoreError::NodeAlive { .. } => {
            Error::Io {
                context: "etcd store".into(),
                source: io::Error::other(message),
            }
        }
    }
}

pub fn manifest_error(e: ManifestError) -> Error {
    match e {
        ManifestError::Read { path, source } if source.kind() != io::ErrorKind::NotFound => {
            Error::Io {
                context: format!("cannot read pool manifests {}", path.display()),
                source,
            }
        }
        other => Error::InvalidConfig(other.to_string()),
    }
}

fn invalid_env(name: &'static str, reason: String) -> Error {
    Error::InvalidEnv { name, reason }
}
