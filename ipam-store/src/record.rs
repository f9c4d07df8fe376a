//! Who holds an address: the owner of an allocation and the record stored for it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::names::NameKind;

/// Who an allocation is for, within a network: the CNI attachment (container id, ifname) and
/// what `spiderctl status` shows about it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub container_id: String,
    pub ifname: String,
    /// `CNI_NETNS`, so `spiderctl gc` can tell a live attachment from a leaked one.
    pub netns: String,
    /// `K8S_POD_NAMESPACE` from `CNI_ARGS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME` from `CNI_ARGS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// The node that allocated it: with a cluster-wide store, GC on a node judges only the
    /// attachments of that node (the others are not in its list of valid attachments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One held address, stored as JSON in `pools/<pool>/ips/<ip>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub ip: IpAddr,
    pub pool: String,
    /// The CNI network name (the conflist's `name`).
    pub network: String,
    #[serde(flatten)]
    pub owner: Owner,
    /// When it was allocated, in Unix seconds.
    pub time: u64,
}

impl Record {
    pub(crate) fn key(&self) -> Key<'_> {
        Key {
            network: &self.network,
            container_id: &self.owner.container_id,
            ifname: &self.owner.ifname,
        }
    }
}

/// What identifies an attachment: (network, container id, ifname), as CNI DEL and GC name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl<'a> Key<'a> {
    /// The key of an attachment, its parts checked: they become file names.
    pub fn checked(
        network: &'a str,
        container_id: &'a str,
        ifname: &'a str,
    ) -> Result<Key<'a>, StoreError> {
        let key = Key {
            network,
            container_id,
            ifname,
        };
        key.validate()?;
        Ok(key)
    }

    /// The parts become file names, so they are checked before any path is built.
    pub fn validate(&self) -> Result<(), StoreError> {
        check_name(NameKind::Network, self.network)?;
        check_name(NameKind::ContainerId, self.container_id)?;
        check_name(NameKind::Ifname, self.ifname)
    }

    /// `<container id>:<ifname>`: the attachment file's name (container ids have no ':').
    pub fn file_name(&self) -> String {
        format!("{}:{}", self.container_id, self.ifname)
    }

    pub fn owns(&self, record: &Record) -> bool {
        record.key() == *self
    }
}

pub(crate) fn check_name(what: NameKind, value: &str) -> Result<(), StoreError> {
    if what.is_valid(value) {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what,
            value: value.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_json_is_flat_and_round_trips() {
        let record = Record {
            ip: "172.16.11.7".parse().unwrap(),
            pool: "gpu1-net11".into(),
            network: "gpu1-macvlan".into(),
            owner: Owner {
                container_id: "abc".into(),
                ifname: "net1".into(),
                netns: "/var/run/netns/x".into(),
                pod_namespace: Some("default".into()),
                pod_name: None,
                node: None,
            },
            time: 1_700_000_000,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(
            json,
            r#"{"ip":"172.16.11.7","pool":"gpu1-net11","network":"gpu1-macvlan","container_id":"abc","ifname":"net1","netns":"/var/run/netns/x","pod_namespace":"default","time":1700000000}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&json).unwrap(), record);
    }

    #[test]
    fn keys_are_validated() {
        let key = |c, i| Key {
            network: "net",
            container_id: c,
            ifname: i,
        };
        assert!(key("abc", "net1").validate().is_ok());
        let err = key("../etc", "net1").validate().unwrap_err().to_string();
        assert!(err.starts_with("invalid container id \"../etc\""), "{err}");
        let err = key("abc", "net:1").validate().unwrap_err().to_string();
        assert!(err.starts_with("invalid interface name \"net:1\""), "{err}");
    }
}
