//! Reading the manifests operators write (the seed's YAML works verbatim): SpiderIPPool and
//! SpiderMultusConfig documents from YAML files (any number of `---` documents) or JSON.
//!
//! A SpiderMultusConfig is first read as a [`RawMultusConfig`] (its metadata and its spec as
//! written) and validated into a [`MultusConfig`] only when it is used, because `inject` must
//! not fail on a config of another group that it would never use. Every error names the file,
//! the document, the object, the field, the value and the fix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use cni::CniVersion;
use ipam_store::fields::Mapping;
use ipam_store::names::NameKind;
use ipam_store::{manifest, pattern};
use serde::Serialize;
use serde_json::Value;

use docs::{CoordinatorDoc, MacvlanDoc, MetadataDoc, PoolsDoc, SpecDoc};

mod docs;

pub const API_VERSION: &str = "spiderpool.spidernet.io/v2beta1";
pub const KIND_POOL: &str = "SpiderIPPool";
pub const KIND_MULTUS_CONFIG: &str = "SpiderMultusConfig";
pub const KIND_RESERVED: &str = "SpiderReservedIP";
/// spiderpool's annotation choosing the rendered list's `cniVersion`.
pub const ANNOTATION_CNI_VERSION: &str = "multus.spidernet.io/cni-version";
/// spiderpool's annotation naming the NetworkAttachmentDefinition (and so the network)
/// differently from the SpiderMultusConfig.
pub const ANNOTATION_CR_NAME: &str = "multus.spidernet.io/cr-name";
/// Our plugins speak every version; 1.0.0 is what the DESIGN's example and Multus 4 use
/// (spiderpool's own default, 0.3.1, predates CHECK).
pub const DEFAULT_CNI_VERSION: CniVersion = CniVersion::V1_0_0;
pub const SUPPORTED_CNI_TYPES: &str = "macvlan";

/// Where a document came from: `FILE document N`, 1-based in file order (the items of a
/// `kind: List` or a JSON array count one each, as in ipam-store's pool errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub document: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} document {}", self.file, self.document)
    }
}

/// A problem with the manifests; the message carries file, document, object, field and value.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file, its syntax, or a SpiderIPPool (ipam-store's own messages).
    #[error(transparent)]
    Manifest(#[from] ipam_store::ManifestError),

    #[error("{origin}: {object}{error}")]
    Document {
        origin: Origin,
        /// `SpiderMultusConfig spiderpool/gpu1-macvlan: `, or empty before the object is known.
        object: String,
        error: FieldError,
    },
}

/// A problem with one field; the message starts with the field path and holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}{message}")]
pub struct FieldError {
    pub field: String,
    /// Starts with `: ` or ` ` so that the field reads as the sentence's subject.
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One document of an input file.
#[derive(Clone, Debug)]
pub enum Document {
    /// A SpiderIPPool or a SpiderReservedIP: what ipam-store's parser reads.
    Pool {
        origin: Origin,
        value: Value,
    },
    MultusConfig(RawMultusConfig),
    Other {
        origin: Origin,
        kind: String,
    },
}

/// A SpiderMultusConfig as written: metadata read, spec not yet validated.
#[derive(Clone, Debug)]
pub struct RawMultusConfig {
    pub origin: Origin,
    pub name: String,
    pub namespace: Option<String>,
    pub annotations: BTreeMap<String, String>,
    /// A mapping.
    pub spec: Value,
}

/// A validated SpiderMultusConfig with `cniType: macvlan`: what the renderer needs.
#[derive(Clone, Debug, PartialEq)]
pub struct MultusConfig {
    pub origin: Origin,
    pub name: String,
    pub namespace: Option<String>,
    /// The NetworkAttachmentDefinition's and the conflist's name: the
    /// `multus.spidernet.io/cr-name` annotation, else `metadata.name`.
    pub network: String,
    pub annotations: BTreeMap<String, String>,
    pub cni_version: CniVersion,
    /// As the macvlan plugin gets it: `<master>.<vlanID>` for a nonzero VLAN.
    pub master: String,
    pub mtu: Option<u32>,
    pub rdma_resource_name: Option<String>,
    pub ipv4_pools: Vec<String>,
    pub ipv6_pools: Vec<String>,
    /// False with `disableIPAM: true`: the macvlan gets no `ipam` section.
    pub ipam: bool,
    /// None with `enableCoordinator: false`.
    pub coordinator: Option<Coordinator>,
    /// `chainCNIJsonData`: plugin objects appended after the coordinator.
    pub chain: Vec<Value>,
}

/// The coordinator plugin's entry, serialised with the coordinator's own config keys. The
/// defaults are written out so a rendered list says what the pod gets: the cluster NIC is
/// `eth0`, and the gateway is checked (the seed: "Spiderpool will test gateway connectivity").
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coordinator {
    #[serde(rename = "type")]
    pub plugin_type: &'static str,
    pub pod_default_cni_nic: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_default_route_nic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tune_pod_routes: Option<bool>,
    #[serde(rename = "podRPFilter", skip_serializing_if = "Option::is_none")]
    pub pod_rp_filter: Option<i64>,
    pub detect_gateway: bool,
    #[serde(rename = "detectIPConflict", skip_serializing_if = "Option::is_none")]
    pub detect_ip_conflict: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detect_options: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_options: Option<Value>,
}

impl Default for Coordinator {
    fn default() -> Self {
        Coordinator {
            plugin_type: "coordinator",
            pod_default_cni_nic: "eth0".into(),
            pod_default_route_nic: None,
            tune_pod_routes: None,
            pod_rp_filter: None,
            detect_gateway: true,
            detect_ip_conflict: None,
            detect_options: None,
            log_options: None,
        }
    }
}

/// The files named on the command line; a directory stands for its `*.yaml`, `*.yml` and
/// `*.json` files in name order (hidden ones skipped), as with `kubectl apply -f DIR`.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for path in paths {
        match path.is_dir() {
            // The very listing the IPAM plugin reads its pool dir with.
            true => files.extend(manifest::list_dir(path)?),
            false => files.push(path.clone()),
        }
    }
    Ok(files)
}

/// Every document of every file (directories expanded), in order.
pub fn read(paths: &[PathBuf]) -> Result<Vec<Document>, Error> {
    let mut docs = Vec::new();
    for path in expand(paths)? {
        let text = manifest::read_text(&path)?;
        docs.extend(parse(&text, &path.display().to_string())?);
    }
    Ok(docs)
}

/// The documents of one file's text; `file` names it in messages and picks the format as in
/// ipam-store (a name ending in `.json` is JSON, anything else YAML).
pub fn parse(text: &str, file: &str) -> Result<Vec<Document>, Error> {
    manifest::documents(text, file)?
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            classify(
                value,
                Origin {
                    file: file.to_string(),
                    document: i + 1,
                },
            )
        })
        .collect()
}

/// Every SpiderMultusConfig of `docs`, validated.
pub fn multus_configs(docs: &[Document]) -> Result<Vec<MultusConfig>, Error> {
    docs.iter()
        .filter_map(|doc| match doc {
            Document::MultusConfig(raw) => Some(raw.validate()),
            _ => None,
        })
        .collect()
}

fn classify(value: Value, origin: Origin) -> Result<Document, Error> {
    let doc_error = |field: &str, message: String| Error::Document {
        origin: origin.clone(),
        object: String::new(),
        error: FieldError::new(field, message),
    };
    let Value::Object(mut obj) = value else {
        return Err(doc_error(
            "document",
            format!(
                " is {}, not a Kubernetes object: write a mapping with apiVersion, kind, metadata \
                 and spec",
                show(&value)
            ),
        ));
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == KIND_POOL || kind == KIND_RESERVED {
        return Ok(Document::Pool {
            origin,
            value: Value::Object(obj),
        });
    }
    if kind != KIND_MULTUS_CONFIG {
        let kind = if kind.is_empty() { "(none)" } else { kind };
        return Ok(Document::Other {
            origin,
            kind: kind.to_string(),
        });
    }
    let api_version = obj.get("apiVersion").unwrap_or(&Value::Null);
    if api_version.as_str() != Some(API_VERSION) {
        return Err(doc_error(
            "apiVersion",
            format!(
                ": {} is not supported for a {KIND_MULTUS_CONFIG}: write {API_VERSION}",
                show(api_version)
            ),
        ));
    }
    let in_doc = |e: FieldError| Error::Document {
        origin: origin.clone(),
        object: format!("{KIND_MULTUS_CONFIG}: "),
        error: e,
    };
    // A metadata that is no mapping reads as empty: the missing name then says what to do.
    let metadata = match obj.get("metadata") {
        Some(m @ Value::Object(_)) => docs::read::<MetadataDoc>(m, "metadata").map_err(in_doc)?,
        _ => MetadataDoc::default(),
    };
    let name = metadata.name.ok_or_else(|| {
        in_doc(FieldError::new(
            "metadata.name",
            " is required: name the SpiderMultusConfig",
        ))
    })?;
    let (namespace, annotations) = (metadata.namespace, metadata.annotations);
    let spec = match obj.remove("spec") {
        Some(spec @ Value::Object(_)) => spec,
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(other) => {
            return Err(in_doc(FieldError::new(
                "spec",
                format!(": {} must be a mapping", show(&other)),
            )))
        }
    };
    Ok(Document::MultusConfig(RawMultusConfig {
        origin,
        name,
        namespace,
        annotations,
        spec,
    }))
}

impl RawMultusConfig {
    /// `SpiderMultusConfig spiderpool/gpu1-macvlan`, for messages.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{KIND_MULTUS_CONFIG} {ns}/{}", self.name),
            None => format!("{KIND_MULTUS_CONFIG} {}", self.name),
        }
    }

    /// Wraps a field error with where it is.
    pub fn error(&self, error: FieldError) -> Error {
        Error::Document {
            origin: self.origin.clone(),
            object: format!("{}: ", self.describe()),
            error,
        }
    }

    pub fn validate(&self) -> Result<MultusConfig, Error> {
        self.validate_fields().map_err(|e| self.error(e))
    }

    fn validate_fields(&self) -> Result<MultusConfig, FieldError> {
        object_name("metadata.name", &self.name)?;
        let network = match self.annotations.get(ANNOTATION_CR_NAME) {
            Some(cr_name) => {
                object_name(
                    &format!("metadata.annotations.{ANNOTATION_CR_NAME}"),
                    cr_name,
                )?;
                cr_name.clone()
            }
            None => self.name.clone(),
        };
        let cni_version = match self.annotations.get(ANNOTATION_CNI_VERSION) {
            None => DEFAULT_CNI_VERSION,
            Some(v) => v.parse().map_err(|_| {
                FieldError::new(
                    format!("metadata.annotations.{ANNOTATION_CNI_VERSION}"),
                    format!(
                        ": {v:?} is not a CNI version these plugins speak: use one of {}",
                        CniVersion::supported_list()
                    ),
                )
            })?,
        };

        let spec: SpecDoc = docs::read(&self.spec, "spec")?;
        let cni_type = spec.cni_type.as_deref().ok_or_else(|| {
            FieldError::new(
                "spec.cniType",
                format!(
                    " is required: set cniType: macvlan (spiderpool's default, custom, is not \
                     supported; supported: {SUPPORTED_CNI_TYPES})"
                ),
            )
        })?;
        if cni_type != "macvlan" {
            return Err(FieldError::new(
                "spec.cniType",
                format!(
                    ": {cni_type:?} is not supported by these plugins: supported: \
                     {SUPPORTED_CNI_TYPES}"
                ),
            ));
        }
        if let Some(key) = spec.other_section() {
            return Err(FieldError::new(
                format!("spec.{key}"),
                format!(" belongs to cniType {key}, not macvlan: remove it"),
            ));
        }
        let Some(Mapping(macvlan)) = &spec.macvlan else {
            return Err(FieldError::new(
                "spec.macvlan",
                " is required for cniType macvlan: add macvlan: {master: [<host NIC>]}",
            ));
        };
        let master = master(macvlan)?;
        let mtu = match macvlan.mtu {
            None | Some(0) => None,
            Some(m @ 68..=65535) => Some(m as u32),
            Some(m) => {
                return Err(FieldError::new(
                    "spec.macvlan.mtu",
                    format!(": {m} is not a usable MTU: use 68-65535, or 0 for the master's MTU"),
                ))
            }
        };

        let rdma_resource_name = self.either(
            "rdmaResourceName",
            spec.rdma_resource_name.as_ref(),
            macvlan.rdma_resource_name.as_ref(),
        )?;
        if let Some(name) = rdma_resource_name {
            let at = if spec.rdma_resource_name.is_some() {
                "spec.rdmaResourceName"
            } else {
                "spec.macvlan.rdmaResourceName"
            };
            check_resource_name(at, name)?;
        }
        let pools = match self.either(
            "ippools",
            spec.ippools.as_ref().map(|Mapping(p)| p),
            macvlan.ippools.as_ref().map(|Mapping(p)| p),
        )? {
            None => Default::default(),
            Some(p) if spec.ippools.is_some() => pools(p, "spec.ippools")?,
            Some(p) => pools(p, "spec.macvlan.ippools")?,
        };

        let ipam = !spec.disable_ipam.unwrap_or(false);
        let names_pools = !pools.0.is_empty() || !pools.1.is_empty();
        if !ipam && names_pools {
            return Err(FieldError::new(
                "spec.disableIPAM",
                ": true, but ippools are set: with IPAM disabled no pool is used; remove the \
                 ippools or set disableIPAM: false",
            ));
        }
        let coordinator = match (
            spec.enable_coordinator.unwrap_or(true),
            spec.coordinator.as_ref(),
        ) {
            (true, overrides) => Some(coordinator(overrides.map(|Mapping(o)| o))?),
            (false, None) => None,
            (false, Some(_)) => {
                return Err(FieldError::new(
                    "spec.coordinator",
                    " is set but enableCoordinator is false: remove one of them",
                ))
            }
        };
        let chain = chain(spec.chain.as_ref())?;

        Ok(MultusConfig {
            origin: self.origin.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            network,
            annotations: self.annotations.clone(),
            cni_version,
            master,
            mtu,
            rdma_resource_name: rdma_resource_name.cloned(),
            ipv4_pools: pools.0,
            ipv6_pools: pools.1,
            ipam,
            coordinator,
            chain,
        })
    }

    /// A field the seed writes under `spec` in one place and under `spec.macvlan` in another:
    /// either is read, and both are accepted when they agree.
    fn either<'a, T: PartialEq>(
        &self,
        key: &str,
        in_spec: Option<&'a T>,
        in_macvlan: Option<&'a T>,
    ) -> Result<Option<&'a T>, FieldError> {
        match (in_spec, in_macvlan) {
            (Some(a), Some(b)) if a != b => Err(FieldError::new(
                format!("spec.{key}"),
                format!(
                    ": {} and spec.macvlan.{key} {} differ: keep one of them",
                    show(&self.spec[key]),
                    show(&self.spec["macvlan"][key])
                ),
            )),
            (a, b) => Ok(a.or(b)),
        }
    }
}

/// A Kubernetes object name: also the network name and part of a file name, so it must not
/// hold a `/`.
fn object_name(field: &str, name: &str) -> Result<(), FieldError> {
    if NameKind::Pool.is_valid(name) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(": {name:?} is not a valid name: {}", NameKind::Pool.rule()),
        ))
    }
}

/// `spec.macvlan.master` with `vlanID` applied: exactly one interface.
fn master(macvlan: &MacvlanDoc) -> Result<String, FieldError> {
    let field = "spec.macvlan.master";
    let name =
        match macvlan.master.as_deref().unwrap_or_default() {
            [] => return Err(FieldError::new(
                field,
                " is required: list the host NIC the macvlan hangs off, e.g. [\"enp11s0f0np0\"]",
            )),
            [one] => one.clone(),
            several => {
                return Err(FieldError::new(
                    field,
                    format!(
                    ": {} lists {} interfaces: several masters need a bond (spec.macvlan.bond, \
                     made by spiderpool's ifacer plugin), and bond masters are not supported \
                     here: list one master (or create the bond on the node and list it)",
                    show(&Value::from(several.to_vec())),
                    several.len()
                ),
                ))
            }
        };
    if !NameKind::Ifname.is_valid(&name) {
        return Err(FieldError::new(
            format!("{field}[0]"),
            format!(
                ": {name:?} is not an interface name: {}",
                NameKind::Ifname.rule()
            ),
        ));
    }
    if let Some(bond) = macvlan.bond.as_ref().filter(|b| !b.is_null()) {
        return Err(FieldError::new(
            "spec.macvlan.bond",
            format!(
                ": {} is not supported here (no ifacer plugin makes bonds): create the bond on \
                 the node and list it as the one master",
                show(bond)
            ),
        ));
    }
    match macvlan.vlan_id {
        None | Some(0) => Ok(name),
        Some(vlan @ 1..=4094) => {
            // The VLAN interface itself must exist on the node (spiderpool's ifacer would
            // create it; we have none), and the kernel limits its name to 15 bytes.
            let vlan_master = format!("{name}.{vlan}");
            if NameKind::Ifname.is_valid(&vlan_master) {
                Ok(vlan_master)
            } else {
                Err(FieldError::new(
                    "spec.macvlan.vlanID",
                    format!(
                        ": {vlan} makes the master {vlan_master}, {} bytes, over the kernel's \
                         15-byte interface name limit: create the VLAN interface on the node \
                         under a shorter name and list that name as master with vlanID 0",
                        vlan_master.len()
                    ),
                ))
            }
        }
        Some(vlan) => Err(FieldError::new(
            "spec.macvlan.vlanID",
            format!(": {vlan} is outside 0-4094: use a VLAN id from 1 to 4094, or 0 for none"),
        )),
    }
}

/// An extended resource name as kubelet knows it: `<prefix>/<name>`, as the
/// k8s-rdma-shared-dev-plugin reports `resourcePrefix` + `resourceName`.
fn check_resource_name(field: &str, name: &str) -> Result<(), FieldError> {
    let valid_part = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match name.split_once('/') {
        Some((prefix, rest)) if valid_part(prefix) && valid_part(rest) => Ok(()),
        _ => Err(FieldError::new(
            field,
            format!(
                ": {name:?} is not a resource name: write <resourcePrefix>/<resourceName> as in \
                 the k8s-rdma-shared-dev-plugin config, e.g. spidernet.io/shared_cx5_gpu1"
            ),
        )),
    }
}

/// `ippools: {ipv4: [...], ipv6: [...]}`, at `path`.
fn pools(doc: &PoolsDoc, path: &str) -> Result<(Vec<String>, Vec<String>), FieldError> {
    let family = |key: &str, names: &Option<Vec<String>>| -> Result<Vec<String>, FieldError> {
        let names = names.clone().unwrap_or_default();
        for (i, name) in names.iter().enumerate() {
            let field = || format!("{path}.{key}[{i}]");
            // A pattern (`gpu1-*`) picks pools by name, as spiderpool allows.
            if pattern::is_pattern(name) {
                pattern::validate(name)
                    .map_err(|reason| FieldError::new(field(), format!(": {reason}")))?;
            } else if !NameKind::Pool.is_valid(name) {
                return Err(FieldError::new(
                    field(),
                    format!(": {name:?} is not a pool name: {}", NameKind::Pool.rule()),
                ));
            }
        }
        Ok(names)
    };
    Ok((family("ipv4", &doc.ipv4)?, family("ipv6", &doc.ipv6)?))
}

/// The coordinator entry: ours by default, with spiderpool's `spec.coordinator` fields mapped
/// onto the coordinator plugin's keys.
fn coordinator(overrides: Option<&CoordinatorDoc>) -> Result<Coordinator, FieldError> {
    let mut c = Coordinator::default();
    let Some(o) = overrides else {
        return Ok(c);
    };
    let at = |key: &str| format!("spec.coordinator.{key}");
    let ifname = |key: &str, value: &Option<String>| -> Result<Option<String>, FieldError> {
        match value.as_deref() {
            None | Some("") => Ok(None),
            Some(name) if NameKind::Ifname.is_valid(name) => Ok(Some(name.to_string())),
            Some(name) => Err(FieldError::new(
                at(key),
                format!(
                    ": {name:?} is not an interface name: {}",
                    NameKind::Ifname.rule()
                ),
            )),
        }
    };
    c.pod_default_route_nic = ifname("podDefaultRouteNIC", &o.pod_default_route_nic_crd)?
        .or(ifname("podDefaultRouteNic", &o.pod_default_route_nic)?);
    if let Some(nic) = ifname("podDefaultCniNic", &o.pod_default_cni_nic)? {
        c.pod_default_cni_nic = nic;
    }
    c.tune_pod_routes = o.tune_pod_routes;
    c.pod_rp_filter = match o.pod_rp_filter {
        None => None,
        // spiderpool: any negative number leaves the pod's setting; the plugin writes -1.
        Some(v) if v < 0 => Some(-1),
        Some(v @ 0..=2) => Some(v),
        Some(v) => {
            return Err(FieldError::new(
                at("podRPFilter"),
                format!(
                    ": {v} is not an rp_filter value: use 0 (off), 1 (strict), 2 (loose) or a \
                     negative number to leave the pod's setting"
                ),
            ))
        }
    };
    if let Some(detect) = o.detect_gateway {
        c.detect_gateway = detect;
    }
    c.detect_ip_conflict = o.detect_ip_conflict;
    if let Some(Mapping(options)) = &o.detect_options {
        if let Some(retries) = options.retries.filter(|&r| r < 1) {
            return Err(FieldError::new(
                at("detectOptions.retries"),
                format!(": {retries} would never send a probe: use 1 or more"),
            ));
        }
        for (key, value) in [
            ("interval", &options.interval),
            ("timeout", &options.timeout),
        ] {
            match value {
                None | Some(Value::String(_)) => {}
                Some(v) if v.as_u64().is_some() => {}
                Some(v) => {
                    return Err(FieldError::new(
                        at(&format!("detectOptions.{key}")),
                        format!(
                            ": {} is not a duration: write e.g. \"100ms\" or a number of \
                             milliseconds",
                            show(v)
                        ),
                    ))
                }
            }
        }
        c.detect_options = Some(passed_through(options));
    }
    c.log_options = o.log_options.as_ref().map(|Mapping(l)| passed_through(l));

    // spiderpool fields our coordinator does not implement. Their "do nothing" values are
    // accepted, so that `kubectl get -o yaml` output (defaults filled in) applies; a value that
    // asks for something is refused rather than silently dropped. podCIDRType, hostRuleTable
    // and hostRPFilter are only type-checked (see CoordinatorDoc).
    match o.mode.as_deref() {
        // Our coordinator decides from the pod's NICs, as spiderpool's auto mode does.
        None | Some("auto") | Some("underlay") => {}
        Some("disabled") => {
            return Err(FieldError::new(
                at("mode"),
                ": \"disabled\": set spec.enableCoordinator: false instead",
            ))
        }
        Some(mode) => {
            return Err(FieldError::new(
                at("mode"),
                format!(
                    ": {mode:?} is not supported (the overlay mode's veth and host routes are not \
                     implemented): use auto or underlay"
                ),
            ))
        }
    }
    if let Some(cidrs) = o.hijack_cidr.as_ref().filter(|c| !c.is_empty()) {
        return Err(FieldError::new(
            at("hijackCIDR"),
            format!(
                ": {} is not supported (no routes through the host are made): remove it",
                show(&Value::from(cidrs.clone()))
            ),
        ));
    }
    if let Some(prefix) = o.pod_mac_prefix.as_deref().filter(|p| !p.is_empty()) {
        return Err(FieldError::new(
            at("podMACPrefix"),
            format!(": {prefix:?} is not supported: remove it (the macvlan plugin's mac field fixes a MAC)"),
        ));
    }
    if let Some(len) = o.tx_queue_len.filter(|&l| l != 0) {
        return Err(FieldError::new(
            at("txQueueLen"),
            format!(": {len} is not supported: remove it or write 0"),
        ));
    }
    Ok(c)
}

/// Options handed to the coordinator plugin as written.
fn passed_through(options: &impl Serialize) -> Value {
    serde_json::to_value(options).expect("plain options serialise")
}

/// `chainCNIJsonData`: spiderpool writes each plugin as a JSON string; a YAML mapping is
/// accepted too. Each must be a plugin object with a `type`.
fn chain(data: Option<&Value>) -> Result<Vec<Value>, FieldError> {
    let items = match data {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(FieldError::new(
                "spec.chainCNIJsonData",
                format!(
                    ": {} must be a list of plugin configs (JSON strings or mappings)",
                    show(other)
                ),
            ))
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = format!("spec.chainCNIJsonData[{i}]");
            let plugin = match item {
                Value::String(text) => serde_json::from_str(text).map_err(|e| {
                    FieldError::new(
                        &field,
                        format!(
                            ": {} is not JSON ({e}): write one plugin object",
                            show(item)
                        ),
                    )
                })?,
                other => other.clone(),
            };
            match plugin.get("type").and_then(Value::as_str) {
                Some(t) if !t.is_empty() => Ok(plugin),
                _ => Err(FieldError::new(
                    field,
                    format!(
                        ": {} is not a plugin config: write an object with a \"type\", e.g. \
                         {{\"type\": \"tuning\"}}",
                        show(item)
                    ),
                )),
            }
        })
        .collect()
}

/// A value as it would be written in JSON, for messages: strings quoted, lists bracketed.
pub fn show(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests;
