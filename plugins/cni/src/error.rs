//! Every failure a plugin can report, and the one place that maps each to its CNI code.
//!
//! Codes 1-11 and 50 are the spec's. Ours (> 100) are listed in the README's error table:
//!
//! | code | meaning |
//! | --- | --- |
//! | 101 | MTU above the master's MTU |
//! | 102 | master link missing or down |
//! | 103 | IP pool(s) exhausted |
//! | 104 | gateway unreachable |
//! | 105 | IP address conflict |
//! | 106 | interface name already taken in the pod |
//! | 107 | CHECK found the attachment differs from what ADD made |
//! | 108 | the kernel refused a network operation |
//! | 109 | a requested IP address (`runtimeConfig.ips`, `CNI_ARGS` `IP=`) cannot be given |
//! | 110 | no pool of the network may serve this pod here (`nodeName`, `nodeAffinity`, `namespaceName`, `multusName` excluded each) |
//! | 999 | internal error (a bug; the message says where) |

use std::io;

use serde::Serialize;

use crate::version::CniVersion;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("incompatible CNI version {0:?}: this plugin supports {list}", list = CniVersion::supported_list())]
    IncompatibleVersion(String),

    #[error(
        "CNI_COMMAND {command} needs cniVersion {needs} or later, the config asks for {asked}"
    )]
    CommandNotInVersion {
        command: &'static str,
        needs: CniVersion,
        asked: CniVersion,
    },

    #[error("unsupported field {field}: {reason}")]
    UnsupportedField { field: String, reason: String },

    #[error("netns {path} does not exist: the container is gone or was never created")]
    UnknownContainer { path: String },

    #[error("environment variable {name}: {reason}")]
    InvalidEnv { name: &'static str, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("cannot decode {what}: {reason}")]
    Decode { what: String, reason: String },

    #[error("invalid network config: {0}")]
    InvalidConfig(String),

    #[error("{0}; try again later")]
    TryAgainLater(String),

    #[error("not available: {0}")]
    NotAvailable(String),

    #[error("mtu {mtu} is above master {master} mtu {master_mtu}: set mtu to at most {master_mtu}, or 0 to inherit it")]
    MtuAboveMaster {
        mtu: u32,
        master: String,
        master_mtu: u32,
    },

    #[error("master {master} {reason}")]
    MasterUnusable { master: String, reason: String },

    #[error("{0}")]
    PoolExhausted(String),

    #[error("{0}")]
    GatewayUnreachable(String),

    #[error("{0}")]
    IpConflict(String),

    #[error("interface {ifname} already exists in netns {netns}: choose another CNI_IFNAME or delete the old attachment first")]
    InterfaceExists { ifname: String, netns: String },

    #[error("check failed: {0}")]
    CheckFailed(String),

    /// A static request (`runtimeConfig.ips`, `CNI_ARGS` `IP=`) that cannot be honoured
    /// exactly: refused, never replaced by another address.
    #[error("{0}")]
    RequestRefused(String),

    /// Every pool the network lists was excluded by its filters for this pod on this node;
    /// the message names each pool and the filter.
    #[error("{0}")]
    NoCandidatePool(String),

    #[error("netlink {op}: {source}")]
    Netlink {
        op: String,
        #[source]
        source: io::Error,
    },

    /// A bug: a panic turned into an error object rather than a backtrace.
    #[error("{0}")]
    Internal(String),

    /// An error reported by a plugin we delegated to (IPAM); its code passes through unchanged.
    #[error("{plugin}: {msg}")]
    Delegated {
        plugin: String,
        code: u32,
        msg: String,
        details: String,
    },
}

impl Error {
    /// The one mapping from an error to its CNI code.
    pub fn code(&self) -> u32 {
        match self {
            Error::IncompatibleVersion(_) | Error::CommandNotInVersion { .. } => 1,
            Error::UnsupportedField { .. } => 2,
            Error::UnknownContainer { .. } => 3,
            Error::InvalidEnv { .. } => 4,
            Error::Io { .. } => 5,
            Error::Decode { .. } => 6,
            Error::InvalidConfig(_) => 7,
            Error::TryAgainLater(_) => 11,
            Error::NotAvailable(_) => 50,
            Error::MtuAboveMaster { .. } => 101,
            Error::MasterUnusable { .. } => 102,
            Error::PoolExhausted(_) => 103,
            Error::GatewayUnreachable(_) => 104,
            Error::IpConflict(_) => 105,
            Error::InterfaceExists { .. } => 106,
            Error::CheckFailed(_) => 107,
            Error::Netlink { .. } => 108,
            Error::RequestRefused(_) => 109,
            Error::NoCandidatePool(_) => 110,
            Error::Internal(_) => 999,
            Error::Delegated { code, .. } => *code,
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn netlink(op: impl Into<String>, source: io::Error) -> Self {
        Error::Netlink {
            op: op.into(),
            source,
        }
    }

    pub fn decode(what: impl Into<String>, reason: impl ToString) -> Self {
        Error::Decode {
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    fn details(&self) -> String {
        match self {
            Error::Delegated { details, .. } => details.clone(),
            Error::Io { source, .. } | Error::Netlink { source, .. } => source
                .raw_os_error()
                .map(|e| format!("errno {e}"))
                .unwrap_or_default(),
            _ => String::new(),
        }
    }

    /// The spec's error object, printed on stdout with a non-zero exit.
    pub fn to_json(&self, version: CniVersion) -> String {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "cniVersion")]
            cni_version: &'a str,
            code: u32,
            msg: String,
            #[serde(skip_serializing_if = "String::is_empty")]
            details: String,
        }
        let msg = match self {
            // A delegated message already names its plugin in `msg`'s own words.
            Error::Delegated { msg, .. } => msg.clone(),
            other => other.to_string(),
        };
        serde_json::to_string(&Wire {
            cni_version: version.as_str(),
            code: self.code(),
            msg,
            details: self.details(),
        })
        .expect("error object serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_code_message_and_version() {
        let e = Error::MtuAboveMaster {
            mtu: 9000,
            master: "enp11s0f0np0".into(),
            master_mtu: 1500,
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json(CniVersion::V1_0_0)).unwrap();
        assert_eq!(v["code"], 101);
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["msg"]
            .as_str()
            .unwrap()
            .starts_with("mtu 9000 is above master enp11s0f0np0 mtu 1500"));
    }

    #[test]
    fn delegated_code_passes_through() {
        let e = Error::Delegated {
            plugin: "host-local".into(),
            code: 999,
            msg: "no IP addresses available".into(),
            details: "d".into(),
        };
        let v: serde_json::Value = serde_json::from_str(&e.to_json(CniVersion::V0_4_0)).unwrap();
        assert_eq!(v["code"], 999);
        assert_eq!(v["msg"], "no IP addresses available");
        assert_eq!(v["details"], "d");
    }
}
