//! The `spec` of a SpiderIPPool and of a SpiderReservedIP as written, read by serde derive
//! (through [`crate::fields`], so a wrong type names its path, `spec.ips[2]`), then checked
//! into [`PoolSpec`] / [`IpRanges`] once.
//!
//! Fields not named here are skipped on purpose: spiderpool's CRD has more than a node uses
//! (`vlan`, and whatever `kubectl get -o yaml` fills in), so these structs do not deny unknown
//! fields. The filters a node cannot evaluate are read only to be refused.

use std::collections::BTreeMap;

use serde::de::{Error as _, IgnoredAny};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::PoolError;
use crate::fields::{self, null_as_default, Expecting, Mapping};
use crate::filters::Filters;
use crate::pool::{entry_error, PoolSpec, RouteSpec};
use crate::range::{parse_entry, to_u128, Family, IpRanges};
use crate::selector::{LabelSelector, Operator, Requirement};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PoolDoc {
    subnet: String,
    #[serde(default, deserialize_with = "null_as_default")]
    ips: Vec<String>,
    #[serde(default, rename = "excludeIPs", deserialize_with = "null_as_default")]
    exclude_ips: Vec<String>,
    gateway: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    routes: Vec<Mapping<RouteSpec>>,
    #[serde(default, deserialize_with = "ip_version")]
    ip_version: Option<u8>,
    #[serde(default, deserialize_with = "null_as_default")]
    disable: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    default: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    node_name: Vec<String>,
    node_affinity: Option<Mapping<SelectorDoc>>,
    #[serde(default, deserialize_with = "null_as_default")]
    namespace_name: Vec<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    multus_name: Vec<String>,
    /// Read only to be refused.
    pod_affinity: Option<IgnoredAny>,
    /// Refused unless `namespaceName` decides.
    namespace_affinity: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SelectorDoc {
    #[serde(default, deserialize_with = "null_as_default")]
    match_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "null_as_default")]
    match_expressions: Vec<Mapping<RequirementDoc>>,
}

#[derive(Deserialize)]
struct RequirementDoc {
    key: String,
    operator: String,
    #[serde(default, deserialize_with = "null_as_default")]
    values: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReservedDoc {
    #[serde(default, deserialize_with = "null_as_default")]
    ips: Vec<String>,
    #[serde(default, deserialize_with = "ip_version")]
    ip_version: Option<u8>,
}

impl Expecting for PoolDoc {
    const EXPECTING: &'static str = "a mapping";
}

impl Expecting for ReservedDoc {
    const EXPECTING: &'static str = "a mapping";
}

impl Expecting for SelectorDoc {
    const EXPECTING: &'static str = "a label selector mapping";
}

impl Expecting for RequirementDoc {
    const EXPECTING: &'static str = "a mapping with key, operator and values";
}

impl Expecting for RouteSpec {
    const EXPECTING: &'static str = "a mapping with dst and gw";
}

/// `ipVersion`: a small whole number (4 or 6 is checked where the family is known).
fn ip_version<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u8>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("{v} is not an IP version: write 4 or 6"))),
    }
}

/// A SpiderIPPool's `spec`, with its filters checked.
pub(super) fn pool(spec: &Value) -> Result<PoolSpec, PoolError> {
    let Mapping(doc): Mapping<PoolDoc> = fields::deserialize(spec, "spec")?;
    if doc.pod_affinity.is_some() {
        return Err(PoolError::Unsupported {
            field: "spec.podAffinity".into(),
            why: "a pod's labels do not reach the IPAM plugin (CNI_ARGS carries only the pod's \
                  namespace and name): list the pool in the network's ippools, or bind it with \
                  namespaceName",
        });
    }
    // spiderpool: a non-empty namespaceName decides alone, namespaceAffinity is not looked at.
    if doc.namespace_name.is_empty() && doc.namespace_affinity.is_some() {
        return Err(PoolError::Unsupported {
            field: "spec.namespaceAffinity".into(),
            why: "a namespace's labels are not known on the node: list the namespaces in \
                  namespaceName instead",
        });
    }
    let node_affinity = doc
        .node_affinity
        .map(|Mapping(s)| selector(s, "spec.nodeAffinity"))
        .transpose()?
        // An empty selector matches every node, as no selector does.
        .filter(|s| *s != LabelSelector::default());
    Ok(PoolSpec {
        subnet: doc.subnet,
        ips: doc.ips,
        exclude_ips: doc.exclude_ips,
        gateway: doc.gateway,
        routes: doc.routes.into_iter().map(|Mapping(r)| r).collect(),
        ip_version: doc.ip_version,
        disable: doc.disable,
        default: doc.default,
        filters: Filters {
            node_name: doc.node_name,
            node_affinity,
            namespace_name: doc.namespace_name,
            multus_name: doc.multus_name,
        },
    })
}

fn selector(doc: SelectorDoc, prefix: &str) -> Result<LabelSelector, PoolError> {
    let match_expressions = doc
        .match_expressions
        .into_iter()
        .enumerate()
        .map(|(i, Mapping(expr))| {
            let field = |key: &str| format!("{prefix}.matchExpressions[{i}].{key}");
            let operator =
                Operator::parse(&expr.operator).ok_or_else(|| PoolError::BadOperator {
                    field: field("operator"),
                    value: expr.operator.clone(),
                })?;
            if operator.takes_values() == expr.values.is_empty() {
                return Err(PoolError::OperatorValues {
                    field: field("values"),
                    operator: expr.operator,
                    takes: operator.takes_values(),
                });
            }
            Ok(Requirement {
                key: expr.key,
                operator,
                values: expr.values,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(LabelSelector {
        match_labels: doc.match_labels,
        match_expressions,
    })
}

/// A SpiderReservedIP's `spec`: `ips` (addresses and ranges of one family) and an optional
/// `ipVersion` that must agree with them.
pub(super) fn reserved(spec: &Value) -> Result<IpRanges, PoolError> {
    let Mapping(doc): Mapping<ReservedDoc> = fields::deserialize(spec, "spec")?;
    if doc.ips.is_empty() {
        return Err(PoolError::Missing {
            field: "spec.ips".into(),
        });
    }
    let mut family = match doc.ip_version {
        None => None,
        Some(4) => Some(Family::V4),
        Some(6) => Some(Family::V6),
        Some(v) => {
            return Err(PoolError::BadIpVersion {
                value: v.to_string(),
            })
        }
    };
    let mut ranges = Vec::new();
    for (i, entry) in doc.ips.iter().enumerate() {
        let field = format!("spec.ips[{i}]");
        let (start, end) = parse_entry(entry)
            .map_err(|e| entry_error(&field, entry, e, family.unwrap_or(Family::V4)))?;
        let of_entry = Family::of(start);
        match family {
            Some(f) if f != of_entry => {
                return Err(PoolError::MixedFamily {
                    field,
                    value: entry.clone(),
                    family: f,
                })
            }
            _ => family = Some(of_entry),
        }
        ranges.push((to_u128(start), to_u128(end)));
    }
    let family = family.expect("at least one entry");
    Ok(IpRanges::new(family, ranges))
}
