//! `spiderctl inject`: what the seed's webhook does to a pod, done to a manifest. A workload
//! whose pod template carries `cni.spidernet.io/rdma-resource-inject: <group>` (or
//! `cni.spidernet.io/network-resource-inject`) gets the `k8s.v1.cni.cncf.io/networks`
//! annotation listing every SpiderMultusConfig of that group, and one of each of their RDMA
//! resources in its first container's limits (spiderpool's rule: a resource some container
//! already requests is left alone).
//!
//! The core is pure and JSON-based so an admission webhook can reuse it: [`patch`] computes
//! the RFC 6902 operations (what an AdmissionReview response carries), and [`inject`] applies
//! them to a YAML document, keeping the author's key order.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use ipam_store::manifest;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::fsutil::write_if_changed;
use crate::manifests::{self, Document, MultusConfig, RawMultusConfig};

pub const RDMA_INJECT: &str = "cni.spidernet.io/rdma-resource-inject";
pub const NETWORK_INJECT: &str = "cni.spidernet.io/network-resource-inject";
pub const NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// The seed: "do not add other network configuration annotations (such as
/// k8s.v1.cni.cncf.io/networks and ipam.spidernet.io/ippools)"; spiderpool's single-pool
/// annotation conflicts the same way.
const CONFLICTING: [&str; 3] = [
    NETWORKS,
    "ipam.spidernet.io/ippools",
    "ipam.spidernet.io/ippool",
];
/// Kinds whose pods are described by a template, and where the template is.
const KINDS: [(&str, &str); 5] = [
    ("Pod", ""),
    ("Deployment", "/spec/template"),
    ("DaemonSet", "/spec/template"),
    ("StatefulSet", "/spec/template"),
    ("Job", "/spec/template"),
];

/// Why a workload cannot be injected; the message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

/// One RFC 6902 operation. Only `add` is needed: it creates a member or replaces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    pub op: String,
    pub path: String,
    pub value: Value,
}

impl PatchOp {
    fn add(path: String, value: Value) -> PatchOp {
        PatchOp {
            op: "add".into(),
            path,
            value,
        }
    }
}

/// The injection group a workload asks for: (annotation, value), or None when its pod
/// template carries neither annotation (a webhook lets such a pod pass unchanged). The first
/// annotation wins when both are there, as in spiderpool.
pub fn group(workload: &Value) -> Result<Option<(&'static str, String)>, Error> {
    let template = Template::of(workload)?;
    for key in [RDMA_INJECT, NETWORK_INJECT] {
        match template.annotations.and_then(|a| a.get(key)) {
            None => {}
            Some(Value::String(v)) if !v.is_empty() => return Ok(Some((key, v.clone()))),
            Some(other) => {
                return Err(Error(format!(
                    "{}.{key}: {other} must name a group, e.g. {key}: rdma-network",
                    template.annotations_field()
                )))
            }
        }
    }
    Ok(None)
}

/// The operations that inject the group's networks and resources into `workload`, a Pod or
/// a workload with a pod template. `configs` may hold SpiderMultusConfigs of any group:
/// only those of the workload's group are validated and used.
pub fn patch(workload: &Value, configs: &[RawMultusConfig]) -> Result<Vec<PatchOp>, Error> {
    let template = Template::of(workload)?;
    let Some((key, group)) = group(workload)? else {
        return Err(Error(format!(
            "{} carries neither {RDMA_INJECT} nor {NETWORK_INJECT}: add {RDMA_INJECT}: <group> \
             there to inject the SpiderMultusConfigs of that group",
            template.annotations_field()
        )));
    };
    for conflicting in CONFLICTING {
        if let Some(value) = template.annotations.and_then(|a| a.get(conflicting)) {
            return Err(Error(format!(
                "{}.{conflicting} is already set ({value}): it conflicts with {key}: remove it, \
                 inject writes {NETWORKS} from the SpiderMultusConfigs of group {group}",
                template.annotations_field()
            )));
        }
    }
    let networks = members(configs, key, &group)?;

    let annotations = format!("{}/metadata/annotations", template.pointer);
    let mut ops = vec![PatchOp::add(
        format!("{annotations}/{}", escape(NETWORKS)),
        Value::String(networks_annotation(&networks)),
    )];

    let containers = workload
        .pointer(&format!("{}/spec/containers", template.pointer))
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Error(format!(
                "{}spec.containers is missing or empty: a pod needs a container to hold the \
                 RDMA resources",
                template.field_prefix()
            ))
        })?;
    let requested = |resource: &str| {
        containers.iter().any(|c| {
            c.pointer("/resources/limits")
                .and_then(Value::as_object)
                .is_some_and(|limits| limits.contains_key(resource))
        })
    };
    let mut missing: Vec<&str> = Vec::new();
    for resource in networks
        .iter()
        .filter_map(|n| n.rdma_resource_name.as_deref())
    {
        if !requested(resource) && !missing.contains(&resource) {
            missing.push(resource);
        }
    }
    if missing.is_empty() {
        return Ok(ops);
    }
    let first = format!("{}/spec/containers/0", template.pointer);
    let one_each = |names: &[&str]| -> Value {
        Value::Object(names.iter().map(|r| (r.to_string(), json!(1))).collect())
    };
    match containers[0].get("resources") {
        None | Some(Value::Null) => ops.push(PatchOp::add(
            format!("{first}/resources"),
            json!({ "limits": one_each(&missing) }),
        )),
        Some(resources) => match resources.get("limits") {
            None | Some(Value::Null) => ops.push(PatchOp::add(
                format!("{first}/resources/limits"),
                one_each(&missing),
            )),
            Some(_) => ops.extend(missing.iter().map(|r| {
                PatchOp::add(format!("{first}/resources/limits/{}", escape(r)), json!(1))
            })),
        },
    }
    Ok(ops)
}

/// The workload with `patch`'s operations applied. YAML in, YAML out, so the manifest keeps its
/// key order; the core stays JSON for the webhook.
pub fn inject(
    workload: &yaml_serde::Value,
    configs: &[RawMultusConfig],
) -> Result<yaml_serde::Value, Error> {
    let json = to_json(workload)?;
    let ops = patch(&json, configs)?;
    let mut out = workload.clone();
    apply_patch(&mut out, &ops)?;
    Ok(out)
}

/// Applies `add` operations to a YAML document (RFC 6902 `add` on object members and array
/// indices).
pub fn apply_patch(doc: &mut yaml_serde::Value, ops: &[PatchOp]) -> Result<(), Error> {
    use yaml_serde::Value as Y;
    for op in ops {
        let bad = |why: &str| Error(format!("patch {} {}: {why}", op.op, op.path));
        if op.op != "add" {
            return Err(bad("only add is implemented"));
        }
        let tokens: Vec<String> = op
            .path
            .strip_prefix('/')
            .ok_or_else(|| bad("a path starts with /"))?
            .split('/')
            .map(unescape)
            .collect();
        let (last, parents) = tokens.split_last().expect("split gives one token at least");
        let mut at = &mut *doc;
        for token in parents {
            at = match at {
                Y::Mapping(m) => m.get_mut(token.as_str()),
                Y::Sequence(s) => token.parse::<usize>().ok().and_then(|i| s.get_mut(i)),
                _ => None,
            }
            .ok_or_else(|| bad(&format!("{token} does not exist")))?;
        }
        let value = yaml_serde::to_value(&op.value).map_err(|e| bad(&format!("value: {e}")))?;
        match at {
            Y::Mapping(m) => {
                m.insert(Y::String(last.clone()), value);
            }
            Y::Sequence(s) => {
                let index = match last.as_str() {
                    "-" => s.len(),
                    i => i
                        .parse()
                        .ok()
                        .filter(|&i| i <= s.len())
                        .ok_or_else(|| bad("index out of range"))?,
                };
                s.insert(index, value);
            }
            _ => return Err(bad("the parent is neither a mapping nor a list")),
        }
    }
    Ok(())
}

/// The SpiderMultusConfigs of the group, validated and in a stable order: by network name,
/// digits compared as numbers (gpu2 before gpu10), then namespace.
fn members(
    configs: &[RawMultusConfig],
    key: &str,
    group: &str,
) -> Result<Vec<MultusConfig>, Error> {
    let mut members = Vec::new();
    for raw in configs {
        if raw.annotations.get(key).map(String::as_str) != Some(group) {
            continue;
        }
        let config = raw.validate().map_err(|e| Error(e.to_string()))?;
        if key == RDMA_INJECT && config.rdma_resource_name.is_none() {
            return Err(Error(format!(
                "{}: {}: {key}: {group} asks for RDMA resources but it has no rdmaResourceName: \
                 set spec.macvlan.rdmaResourceName, or use {NETWORK_INJECT} for a group without \
                 RDMA",
                raw.origin,
                raw.describe()
            )));
        }
        members.push(config);
    }
    if members.is_empty() {
        return Err(Error(format!(
            "no SpiderMultusConfig in the --networks files carries {key}: {group}: annotate the \
             configs of this group with it"
        )));
    }
    members.sort_by(|a, b| {
        natural_cmp(&a.network, &b.network).then_with(|| a.namespace.cmp(&b.namespace))
    });
    for pair in members.windows(2) {
        if pair[0].network == pair[1].network && pair[0].namespace == pair[1].namespace {
            return Err(Error(format!(
                "{} and {} both define network {}: a pod cannot attach one network twice by \
                 name; drop one",
                pair[0].origin, pair[1].origin, pair[0].network
            )));
        }
    }
    Ok(members)
}

/// `[{"name":..,"namespace":..},\n{...}]`, one network per line as the seed shows it. A
/// config without a namespace leaves it out: Multus then looks in the pod's namespace.
fn networks_annotation(networks: &[MultusConfig]) -> String {
    let items: Vec<String> = networks
        .iter()
        .map(|n| {
            let mut item = Map::new();
            item.insert("name".into(), Value::String(n.network.clone()));
            if let Some(ns) = &n.namespace {
                item.insert("namespace".into(), Value::String(ns.clone()));
            }
            Value::Object(item).to_string()
        })
        .collect();
    format!("[{}]", items.join(",\n"))
}

/// Where a workload's pod template is, and its annotations.
struct Template<'a> {
    kind: &'static str,
    /// JSON pointer of the template: "" for a Pod.
    pointer: &'static str,
    annotations: Option<&'a Map<String, Value>>,
}

impl<'a> Template<'a> {
    fn of(workload: &'a Value) -> Result<Template<'a>, Error> {
        let kind = workload.get("kind").and_then(Value::as_str).unwrap_or("");
        let Some(&(kind, pointer)) = KINDS.iter().find(|(k, _)| *k == kind) else {
            return Err(Error(format!(
                "kind {kind:?} is not supported: inject handles {}",
                KINDS.map(|(k, _)| k).join(", ")
            )));
        };
        let mut template = Template {
            kind,
            pointer,
            annotations: None,
        };
        template.annotations = match workload.pointer(&format!("{pointer}/metadata/annotations")) {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(other) => {
                return Err(Error(format!(
                    "{}: {other} must be a mapping",
                    template.annotations_field()
                )))
            }
        };
        Ok(template)
    }

    /// `spec.template.` for a workload, empty for a Pod: the prefix of field names.
    fn field_prefix(&self) -> &'static str {
        if self.pointer.is_empty() {
            ""
        } else {
            "spec.template."
        }
    }

    fn annotations_field(&self) -> String {
        format!("{} {}metadata.annotations", self.kind, self.field_prefix())
    }
}

/// RFC 6901: `~` is `~0` and `/` is `~1` inside a token.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn to_json(doc: &yaml_serde::Value) -> Result<Value, Error> {
    serde_json::to_value(doc).map_err(|e| Error(format!("not representable as JSON: {e}")))
}

/// Orders strings with runs of digits compared by value, so `gpu2` sorts before `gpu10`.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        let (Some(ca), Some(cb)) = (a.chars().next(), b.chars().next()) else {
            return a.len().cmp(&b.len());
        };
        if ca.is_ascii_digit() && cb.is_ascii_digit() {
            let end_a = a.find(|c: char| !c.is_ascii_digit()).unwrap_or(a.len());
            let end_b = b.find(|c: char| !c.is_ascii_digit()).unwrap_or(b.len());
            let (na, nb) = (
                a[..end_a].trim_start_matches('0'),
                b[..end_b].trim_start_matches('0'),
            );
            let by_value = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if by_value != Ordering::Equal {
                return by_value;
            }
            (a, b) = (&a[end_a..], &b[end_b..]);
        } else {
            if ca != cb {
                return ca.cmp(&cb);
            }
            (a, b) = (&a[ca.len_utf8()..], &b[cb.len_utf8()..]);
        }
    }
}

/// One document of the workload file, for messages.
struct Doc<'a> {
    file: &'a Path,
    number: usize,
    value: &'a Value,
}

impl fmt::Display for Doc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self
            .value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("object");
        let name = self
            .value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)");
        write!(
            f,
            "{} document {} ({kind} {name})",
            self.file.display(),
            self.number
        )
    }
}

/// The CLI: injects every workload of `workload_file` that asks for it (other documents pass
/// through unchanged) and writes the result to `output` or stdout.
/// The SpiderMultusConfigs of the `--networks` files (other kinds in them are skipped).
pub fn read_networks(networks: &[PathBuf]) -> Result<Vec<RawMultusConfig>, String> {
    Ok(manifests::read(networks)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|doc| match doc {
            Document::MultusConfig(raw) => Some(raw),
            _ => None,
        })
        .collect())
}

pub fn run(
    networks: &[PathBuf],
    workload_file: &Path,
    output: Option<&Path>,
) -> Result<(), String> {
    let configs = read_networks(networks)?;
    let text = manifest::read_text(workload_file).map_err(|e| e.to_string())?;
    let mut docs = Vec::new();
    for doc in yaml_serde::Deserializer::from_str(&text) {
        let value = yaml_serde::Value::deserialize(doc)
            .map_err(|e| format!("{}: cannot parse as YAML: {e}", workload_file.display()))?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    let mut injected = 0;
    for (i, doc) in docs.iter_mut().enumerate() {
        let json = to_json(doc).map_err(|e| format!("{}: {e}", workload_file.display()))?;
        let at = Doc {
            file: workload_file,
            number: i + 1,
            value: &json,
        };
        let wanted = KINDS
            .iter()
            .any(|(k, _)| json.get("kind") == Some(&json!(k)))
            && group(&json).map_err(|e| format!("{at}: {e}"))?.is_some();
        if wanted {
            *doc = inject(doc, &configs).map_err(|e| format!("{at}: {e}"))?;
            injected += 1;
        }
    }
    if injected == 0 {
        return Err(format!(
            "{}: no {} carries {RDMA_INJECT} or {NETWORK_INJECT} on its pod template \
             (spec.template.metadata.annotations; metadata.annotations for a Pod): add \
             {RDMA_INJECT}: <group> there",
            workload_file.display(),
            KINDS.map(|(k, _)| k).join(", ")
        ));
    }
    let out = docs
        .iter()
        .map(|d| yaml_serde::to_string(d).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?
        .join("---\n");
    match output {
        None => print!("{out}"),
        Some(path) => {
            let change = write_if_changed(path, &out)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("{} {change}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
