//! A SpiderMultusConfig's `metadata` and `spec` as written, read by serde derive through
//! ipam-store's field-checked path ([`ipam_store::fields`]). Inside `spec`, a misspelt field
//! must not be silently ignored, so those structs deny unknown fields; `metadata` carries
//! much we do not read (labels, uid, ...) and is read leniently, as is `status` (not read).

use std::collections::BTreeMap;

use ipam_store::fields::{self, null_as_default, Expecting, FieldProblem, Mapping, Problem};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::FieldError;

#[derive(Default, Deserialize)]
pub struct MetadataDoc {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub annotations: BTreeMap<String, String>,
}

/// spiderpool's SpiderMultusConfig fields that belong to other CNI types: read so that they
/// are refused by name ("belongs to cniType sriov") rather than as unknown.
pub const OTHER_CNI_SECTIONS: [&str; 6] =
    ["ipvlan", "sriov", "ovs", "ibsriov", "ipoib", "customCNI"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecDoc {
    pub cni_type: Option<String>,
    pub macvlan: Option<Mapping<MacvlanDoc>>,
    pub enable_coordinator: Option<bool>,
    #[serde(rename = "disableIPAM")]
    pub disable_ipam: Option<bool>,
    pub coordinator: Option<Mapping<CoordinatorDoc>>,
    /// Checked item by item (JSON strings or mappings) in `chain`.
    #[serde(rename = "chainCNIJsonData")]
    pub chain: Option<Value>,
    pub rdma_resource_name: Option<String>,
    pub ippools: Option<Mapping<PoolsDoc>>,
    ipvlan: Option<IgnoredAny>,
    sriov: Option<IgnoredAny>,
    ovs: Option<IgnoredAny>,
    ibsriov: Option<IgnoredAny>,
    ipoib: Option<IgnoredAny>,
    #[serde(rename = "customCNI")]
    custom_cni: Option<IgnoredAny>,
}

impl SpecDoc {
    /// The first section of another CNI type that is set.
    pub fn other_section(&self) -> Option<&'static str> {
        [
            self.ipvlan.is_some(),
            self.sriov.is_some(),
            self.ovs.is_some(),
            self.ibsriov.is_some(),
            self.ipoib.is_some(),
            self.custom_cni.is_some(),
        ]
        .iter()
        .position(|&set| set)
        .map(|i| OTHER_CNI_SECTIONS[i])
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MacvlanDoc {
    #[serde(default, deserialize_with = "fields::strings")]
    pub master: Option<Vec<String>>,
    pub mtu: Option<i64>,
    #[serde(rename = "vlanID")]
    pub vlan_id: Option<i64>,
    /// Read only to be refused, showing what was written.
    pub bond: Option<Value>,
    pub rdma_resource_name: Option<String>,
    pub ippools: Option<Mapping<PoolsDoc>>,
}

#[derive(PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolsDoc {
    #[serde(default, deserialize_with = "fields::strings")]
    pub ipv4: Option<Vec<String>>,
    #[serde(default, deserialize_with = "fields::strings")]
    pub ipv6: Option<Vec<String>>,
}

/// spiderpool's `spec.coordinator`: the fields our coordinator implements, and those of
/// spiderpool's that are accepted only where they ask for nothing we lack.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CoordinatorDoc {
    #[serde(rename = "podDefaultRouteNIC")]
    pub pod_default_route_nic_crd: Option<String>,
    /// spiderpool's CRD spells it podDefaultRouteNIC, its CNI config podDefaultRouteNic.
    pub pod_default_route_nic: Option<String>,
    pub pod_default_cni_nic: Option<String>,
    pub tune_pod_routes: Option<bool>,
    #[serde(rename = "podRPFilter")]
    pub pod_rp_filter: Option<i64>,
    pub detect_gateway: Option<bool>,
    #[serde(rename = "detectIPConflict")]
    pub detect_ip_conflict: Option<bool>,
    pub detect_options: Option<Mapping<DetectOptionsDoc>>,
    pub log_options: Option<Mapping<LogOptionsDoc>>,
    pub mode: Option<String>,
    // The next three are only type-checked, never used. podCIDRType only feeds the overlay
    // routes, refused with `mode`; hostRuleTable is the table of those host routes;
    // hostRPFilter is a node sysctl, and these plugins never change the node.
    #[allow(dead_code)]
    #[serde(rename = "podCIDRType")]
    pod_cidr_type: Option<String>,
    #[allow(dead_code)]
    host_rule_table: Option<i64>,
    #[allow(dead_code)]
    #[serde(rename = "hostRPFilter")]
    host_rp_filter: Option<i64>,
    #[serde(rename = "hijackCIDR", default, deserialize_with = "fields::strings")]
    pub hijack_cidr: Option<Vec<String>>,
    #[serde(rename = "podMACPrefix")]
    pub pod_mac_prefix: Option<String>,
    pub tx_queue_len: Option<i64>,
}

/// Passed through to the coordinator plugin as written (absent keys stay absent).
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DetectOptionsDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// A duration string (`"100ms"`) or milliseconds: checked in `coordinator`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Value>,
}

/// Passed through to the coordinator plugin as written.
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogOptionsDoc {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_file_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
}

impl Expecting for SpecDoc {
    const EXPECTING: &'static str = "a mapping";
}
impl Expecting for MacvlanDoc {
    const EXPECTING: &'static str = "a mapping";
}
impl Expecting for PoolsDoc {
    const EXPECTING: &'static str = "a mapping";
}
impl Expecting for CoordinatorDoc {
    const EXPECTING: &'static str = "a mapping";
}
impl Expecting for DetectOptionsDoc {
    const EXPECTING: &'static str = "a mapping";
}
impl Expecting for LogOptionsDoc {
    const EXPECTING: &'static str = "a mapping";
}
impl Expecting for MetadataDoc {
    const EXPECTING: &'static str = "a mapping";
}

/// Reads `value` (the part at `prefix`) into `T`, wording serde's complaint as spiderctl's
/// other field errors are: field, value, what it must be.
pub fn read<'de, T: Deserialize<'de> + Expecting>(
    value: &'de Value,
    prefix: &str,
) -> Result<T, FieldError> {
    let problem = match fields::deserialize::<Mapping<T>>(value, prefix) {
        Ok(Mapping(doc)) => return Ok(doc),
        Err(problem) => problem,
    };
    let FieldProblem { field, problem } = problem;
    let message = match problem {
        Problem::Missing => " is required".to_string(),
        Problem::WrongType { value, expected } => format!(": {value} must be {expected}"),
        Problem::Unknown { known } => {
            let parent = field.rsplit_once('.').map_or(prefix, |(parent, _)| parent);
            let known: Vec<_> = known
                .iter()
                .filter(|k| !OTHER_CNI_SECTIONS.contains(&k.as_str()))
                .map(String::as_str)
                .collect();
            format!(
                " is not a field read here: fix its spelling or remove it (the fields of \
                 {parent} are {})",
                known.join(", ")
            )
        }
        Problem::Other(reason) => format!(": {reason}"),
    };
    Err(FieldError::new(field, message))
}
