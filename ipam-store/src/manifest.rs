//! Reading SpiderIPPool and SpiderReservedIP manifests: YAML (any number of `---` documents)
//! or JSON, from text, a file or a directory. Objects of other kinds (SpiderMultusConfig...)
//! are skipped, and so are spec fields this crate does not use (vlan). Fields a node cannot
//! evaluate (podAffinity, namespaceAffinity) are refused, never ignored.
//!
//! Documents are read into `serde_json::Value` first (YAML and JSON alike), then each `spec`
//! into a serde struct ([`spec`]), so that a wrong type is reported with its field path and
//! value (`spec.ips[2] must be a string (quote numbers and booleans), not 1`).

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{ManifestError, PoolError};
use crate::pool::{Pool, PoolWarning};
use crate::range::IpRanges;

mod spec;

/// Larger manifest files are refused rather than read into memory.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

const KIND: &str = "SpiderIPPool";
const KIND_RESERVED: &str = "SpiderReservedIP";
const API_VERSION: &str = "spiderpool.spidernet.io/v2beta1";

/// A [`PoolWarning`] with the file and pool it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub source: String,
    pub pool: String,
    pub warning: PoolWarning,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: pool {}: {}", self.source, self.pool, self.warning)
    }
}

/// The pools found in one or more manifests, in file order then document order, with the
/// SpiderReservedIPs already taken out of their allocatable addresses.
#[derive(Clone, Debug, Default)]
pub struct Manifest {
    pub pools: Vec<Pool>,
    pub reserved: Vec<Reserved>,
    /// To be logged once by the caller.
    pub warnings: Vec<Warning>,
}

/// A SpiderReservedIP: addresses no pool hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reserved {
    pub name: String,
    pub ips: IpRanges,
    /// The file (or etcd key) it was read from.
    pub source: String,
}

impl Manifest {
    /// The pool named `name`. A linear search: a node has a handful of pools.
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name() == name)
    }
}

impl<'a> IntoIterator for &'a Manifest {
    type Item = &'a Pool;
    type IntoIter = std::slice::Iter<'a, Pool>;

    fn into_iter(self) -> Self::IntoIter {
        self.pools.iter()
    }
}

/// Parses manifest text. `source_name` is used in messages, and picks the format: a name
/// ending in `.json` is JSON, anything else YAML.
pub fn parse(text: &str, source_name: &str) -> Result<Manifest, ManifestError> {
    let mut manifest = Manifest::default();
    let mut seen = HashMap::new();
    for (i, doc) in documents(text, source_name)?.into_iter().enumerate() {
        match object_from_document(&doc, i + 1, source_name)? {
            Object::Pool(pool, warnings) => {
                check_unique(&mut seen, pool.name(), source_name)?;
                manifest
                    .warnings
                    .extend(warnings.into_iter().map(|warning| Warning {
                        source: source_name.to_string(),
                        pool: pool.name().to_string(),
                        warning,
                    }));
                manifest.pools.push(pool);
            }
            Object::Reserved(reserved) => {
                check_unique(&mut seen, &reserved.name, source_name)?;
                manifest.reserved.push(reserved);
            }
            Object::Other => {}
        }
    }
    manifest.apply_reserved();
    Ok(manifest)
}

impl Manifest {
    /// Takes every reserved address out of the pools (idempotent).
    fn apply_reserved(&mut self) {
        for reserved in &self.reserved {
            for pool in &mut self.pools {
                pool.reserve(&reserved.ips);
            }
        }
    }

    /// Adds `other`'s objects, refusing a name defined in both.
    fn merge(
        &mut self,
        other: Manifest,
        seen: &mut HashMap<String, String>,
        source: &str,
    ) -> Result<(), ManifestError> {
        let names = other.pools.iter().map(Pool::name);
        for name in names.chain(other.reserved.iter().map(|r| r.name.as_str())) {
            check_unique(seen, name, source)?;
        }
        self.pools.extend(other.pools);
        self.reserved.extend(other.reserved);
        self.warnings.extend(other.warnings);
        Ok(())
    }
}

/// Reads and parses one manifest file (at most [`MAX_MANIFEST_BYTES`]).
pub fn load_file(path: &Path) -> Result<Manifest, ManifestError> {
    parse(&read_text(path)?, &path.display().to_string())
}

/// The text of one manifest file, refusing files over [`MAX_MANIFEST_BYTES`]. Public so that
/// `spiderctl`, which reads SpiderMultusConfigs from the same files, reads them the same way.
pub fn read_text(path: &Path) -> Result<String, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: path.into(),
        source,
    };
    let too_large = || ManifestError::TooLarge {
        path: path.into(),
        limit: MAX_MANIFEST_BYTES,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    if file.metadata().map_err(read_error)?.len() > MAX_MANIFEST_BYTES {
        return Err(too_large());
    }
    // The size can change between the check and the read; the `take` bounds the read anyway.
    let mut text = String::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(too_large());
    }
    Ok(text)
}

/// Loads every `*.yaml`, `*.yml` and `*.json` file of `dir`, in name order. Hidden entries are
/// skipped: a Kubernetes ConfigMap volume keeps its real files under `..data`, behind the
/// visible symlinks, which are followed.
pub fn load_dir(dir: &Path) -> Result<Manifest, ManifestError> {
    let texts = list_dir(dir)?
        .iter()
        .map(|path| Ok((path.display().to_string(), read_text(path)?)))
        .collect::<Result<Vec<_>, ManifestError>>()?;
    parse_all(texts)
}

/// The manifest files of `dir`, as [`load_dir`] reads them, in name order.
pub fn list_dir(dir: &Path) -> Result<Vec<std::path::PathBuf>, ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: dir.into(),
        source,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let wanted = !name.starts_with('.')
            && [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext));
        if wanted && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths)
}

/// Parses several manifests, `(source name, text)` in the order given, into one: a pool
/// defined in two of them is an error naming both.
pub fn parse_all(
    sources: impl IntoIterator<Item = (String, String)>,
) -> Result<Manifest, ManifestError> {
    let parsed = sources
        .into_iter()
        .map(|(source, text)| {
            let part = parse(&text, &source)?;
            Ok((source, part))
        })
        .collect::<Result<Vec<_>, ManifestError>>()?;
    combine(parsed)
}

/// Combines manifests parsed one by one, `(source name, manifest)`, as [`parse_all`] does.
pub fn combine(
    parts: impl IntoIterator<Item = (String, Manifest)>,
) -> Result<Manifest, ManifestError> {
    let mut manifest = Manifest::default();
    let mut seen = HashMap::new();
    for (source, part) in parts {
        manifest.merge(part, &mut seen, &source)?;
    }
    manifest.apply_reserved();
    Ok(manifest)
}

fn check_unique(
    seen: &mut HashMap<String, String>,
    pool: &str,
    source: &str,
) -> Result<(), ManifestError> {
    match seen.insert(pool.to_string(), source.to_string()) {
        Some(first) => Err(ManifestError::Duplicate {
            pool: pool.to_string(),
            first,
            second: source.to_string(),
        }),
        None => Ok(()),
    }
}

/// Splits the text into Kubernetes objects; a JSON array or a `kind: List` (what `kubectl get
/// -o yaml` prints) contributes each of its items. Public so that `spiderctl` numbers the
/// documents of a file exactly as the pool errors here do.
pub fn documents(text: &str, source_name: &str) -> Result<Vec<Value>, ManifestError> {
    let syntax = |format, reason: String| ManifestError::Syntax {
        source_name: source_name.to_string(),
        format,
        reason,
    };
    let raw: Vec<Value> = if source_name.ends_with(".json") {
        vec![serde_json::from_str(text).map_err(|e| syntax("JSON", e.to_string()))?]
    } else {
        check_flow_depth(text).map_err(|reason| syntax("YAML", reason))?;
        yaml_serde::Deserializer::from_str(text)
            .map(|doc| Value::deserialize(doc).map_err(|e| syntax("YAML", e.to_string())))
            .collect::<Result<_, _>>()?
    };
    let mut out = Vec::new();
    let mut pending = raw;
    pending.reverse();
    while let Some(value) = pending.pop() {
        match value {
            Value::Null => {} // an empty document, e.g. after a trailing `---`
            Value::Array(items) => pending.extend(items.into_iter().rev()),
            Value::Object(mut obj) if obj.get("kind") == Some(&Value::from("List")) => {
                if let Some(Value::Array(items)) = obj.remove("items") {
                    pending.extend(items.into_iter().rev());
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// Deeper nesting of `[` and `{` than this is refused before the YAML parser runs: the
/// parser scans a whole document before its recursion limit (128) applies, in time that grows
/// with the square of the flow depth (a 400 KB file of `{a: ` took a minute, so a 4 MiB one
/// would stall every ADD for hours). Deserialization stops at 128 levels anyway.
const MAX_FLOW_DEPTH: usize = 128;

/// Refuses text whose brackets nest deeper than [`MAX_FLOW_DEPTH`]. Quotes and comments are
/// not parsed, so brackets inside strings count too: the bound can only err towards refusing,
/// which takes over a hundred unmatched ones in a string.
fn check_flow_depth(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for (number, line) in text.lines().enumerate() {
        for b in line.bytes() {
            match b {
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_FLOW_DEPTH {
                return Err(format!(
                    "brackets nest deeper than {MAX_FLOW_DEPTH} levels at line {}: no \
                     SpiderIPPool needs that, fix the file",
                    number + 1
                ));
            }
        }
    }
    Ok(())
}

/// What one document defines.
enum Object {
    Pool(Pool, Vec<PoolWarning>),
    Reserved(Reserved),
    Other,
}

fn object_from_document(
    doc: &Value,
    number: usize,
    source_name: &str,
) -> Result<Object, ManifestError> {
    let document_error = |reason: &str| ManifestError::Document {
        source_name: source_name.to_string(),
        document: number,
        reason: reason.to_string(),
    };
    let Some(obj) = doc.as_object() else {
        return Err(document_error(
            "is not a Kubernetes object (a mapping with apiVersion, kind, metadata, spec)",
        ));
    };
    let kind = match obj.get("kind").and_then(Value::as_str) {
        Some(KIND) => KIND,
        Some(KIND_RESERVED) => KIND_RESERVED,
        _ => return Ok(Object::Other),
    };
    let Some(name) = doc.pointer("/metadata/name").and_then(Value::as_str) else {
        return Err(document_error(&format!(
            "{kind} without metadata.name: give it a name"
        )));
    };
    let pool_error = |error| ManifestError::Pool {
        source_name: source_name.to_string(),
        kind,
        pool: name.to_string(),
        error: Box::new(error),
    };
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api_version != API_VERSION {
        return Err(ManifestError::ApiVersion {
            source_name: source_name.to_string(),
            pool: name.to_string(),
            api_version: api_version.to_string(),
        });
    }
    let spec = match obj.get("spec") {
        None | Some(Value::Null) => {
            return Err(pool_error(PoolError::Missing {
                field: "spec".into(),
            }))
        }
        Some(spec) if kind == KIND_RESERVED => {
            let ips = spec::reserved(spec).map_err(pool_error)?;
            if !crate::names::NameKind::Pool.is_valid(name) {
                return Err(pool_error(PoolError::InvalidName { name: name.into() }));
            }
            return Ok(Object::Reserved(Reserved {
                name: name.into(),
                ips,
                source: source_name.into(),
            }));
        }
        Some(spec) => spec::pool(spec).map_err(pool_error)?,
    };
    let (pool, warnings) = Pool::new(name, &spec).map_err(pool_error)?;
    Ok(Object::Pool(pool, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{TempDir, SEED_YAML};

    fn pool_yaml(name: &str, body: &str) -> String {
        format!(
            "apiVersion: {API_VERSION}\nkind: SpiderIPPool\nmetadata:\n  name: {name}\nspec:\n{body}"
        )
    }

    fn error(text: &str, source_name: &str) -> String {
        parse(text, source_name).unwrap_err().to_string()
    }

    #[test]
    fn seed_manifest_parses_verbatim() {
        let manifest = parse(SEED_YAML, "seed.yaml").unwrap();
        assert_eq!(manifest.pools.len(), 1, "the SpiderMultusConfig is skipped");
        let pool = manifest.get("gpu1-net11").unwrap();
        assert_eq!(pool.subnet().to_string(), "172.16.0.0/16");
        assert_eq!(pool.gateway(), Some("172.16.11.254".parse().unwrap()));
        assert_eq!(pool.allocatable().to_string(), "172.16.11.1-172.16.11.200");
        assert_eq!(pool.size(), 200);
        assert!(!pool.disabled() && !pool.is_default());
        assert_eq!(manifest.warnings.len(), 1);
        assert_eq!(
            manifest.warnings[0].to_string(),
            "seed.yaml: pool gpu1-net11: spec.subnet: 172.16.11.0/16 has host bits set, using the \
             network 172.16.0.0/16 (write 172.16.0.0/16 to silence this)"
        );
        assert!(manifest.get("gpu1-macvlan").is_none());
        assert_eq!((&manifest).into_iter().count(), 1);
    }

    #[test]
    fn every_spec_field_is_read() {
        let yaml = pool_yaml(
            "full",
            "  ipVersion: 4\n  subnet: 10.1.0.0/24\n  ips: [10.1.0.10-10.1.0.20, 10.1.0.30]\n  \
             excludeIPs: [10.1.0.15]\n  gateway: 10.1.0.1\n  routes:\n    - dst: 10.2.0.0/16\n      \
             gw: 10.1.0.1\n  disable: true\n  default: true\n  vlan: 0\n",
        );
        let manifest = parse(&yaml, "full.yaml").unwrap();
        let pool = manifest.get("full").unwrap();
        assert_eq!(
            pool.allocatable().to_string(),
            "10.1.0.10-10.1.0.14,10.1.0.16-10.1.0.20,10.1.0.30"
        );
        assert_eq!(pool.routes().len(), 1);
        assert_eq!(pool.routes()[0].dst.to_string(), "10.2.0.0/16");
        assert!(pool.disabled() && pool.is_default());
        assert!(manifest.warnings.is_empty());
    }

    #[test]
    fn json_objects_arrays_and_lists_are_read() {
        let object = r#"{"apiVersion":"spiderpool.spidernet.io/v2beta1","kind":"SpiderIPPool",
            "metadata":{"name":"v6"},"spec":{"subnet":"fd00::/120","ips":["fd00::1-fd00::10"]}}"#;
        let manifest = parse(object, "pools.json").unwrap();
        assert_eq!(manifest.get("v6").unwrap().family(), crate::Family::V6);
        let array = format!("[{object}, {}]", object.replace("\"v6\"", "\"v6b\""));
        assert_eq!(parse(&array, "pools.json").unwrap().pools.len(), 2);
        let list = format!("{{\"kind\":\"List\",\"items\":[{object}]}}");
        assert_eq!(parse(&list, "pools.json").unwrap().pools.len(), 1);
    }

    #[test]
    fn errors_name_file_pool_and_field() {
        let bad = pool_yaml("p1", "  subnet: 10.0.0.0/24\n  ips: [10.0.0.9-10.0.0.1]\n");
        assert_eq!(
            error(&bad, "a.yaml"),
            "a.yaml: pool p1: spec.ips[0]: range 10.0.0.9-10.0.0.1 is reversed (its start is above \
             its end): write 10.0.0.1-10.0.0.9"
        );
        let cases = [
            (
                "  subnet: 10.0.0.0/24\n  gateway: 10.9.0.1\n",
                "pool p1: spec.gateway: 10.9.0.1 is outside subnet 10.0.0.0/24",
            ),
            (
                "  subnet: 10.0.0.0/24\n  ips: [fd00::1]\n",
                "pool p1: spec.ips[0]: fd00::1 is not IPv4 like the subnet",
            ),
            ("  ips: [10.0.0.1]\n", "pool p1: spec.subnet is required"),
            (
                "  subnet: 10.0.0.0/24\n  ips: 10.0.0.1\n",
                "pool p1: spec.ips must be a list, not \"10.0.0.1\"",
            ),
            (
                "  subnet: 10.0.0.0/24\n  ips: [1]\n",
                "pool p1: spec.ips[0] must be a string (quote numbers and booleans), not 1",
            ),
            (
                "  subnet: 10.0.0.0/24\n  disable: yes\n",
                "pool p1: spec.disable must be true or false",
            ),
            (
                "  subnet: 10.0.0.0/24\n  routes: [{dst: 10.1.0.0/16}]\n",
                "pool p1: spec.routes[0].gw is required",
            ),
            // A list where a mapping belongs is refused, not read field by field in order.
            (
                "  subnet: 10.0.0.0/24\n  routes: [[10.1.0.0/16, 10.0.0.1]]\n",
                "pool p1: spec.routes[0] must be a mapping with dst and gw, not [\"10.1.0.0/16\",\"10.0.0.1\"]",
            ),
            ("  subnet: 10.0.0.0/24\n  ipVersion: 300\n", "spec.ipVersion: 300 is not an IP version: write 4 or 6"),
            ("  subnet: null\n", "pool p1: spec.subnet is required"),
        ];
        for (body, expected) in cases {
            let err = error(&pool_yaml("p1", body), "a.yaml");
            assert!(
                err.starts_with("a.yaml: ") && err.contains(expected),
                "{err:?} lacks {expected:?}"
            );
        }
        let old = pool_yaml("p1", "  subnet: 10.0.0.0/24\n").replace("v2beta1", "v1");
        assert!(error(&old, "a.yaml")
            .contains("apiVersion \"spiderpool.spidernet.io/v1\" is not supported"));
        assert!(error("kind: [", "a.yaml").starts_with("a.yaml: cannot parse as YAML"));
        assert!(error("{", "a.json").starts_with("a.json: cannot parse as JSON"));
        assert!(
            error("- 1\n", "a.yaml").starts_with("a.yaml: document 1: is not a Kubernetes object")
        );
    }

    #[test]
    fn filters_are_read_and_what_a_node_cannot_evaluate_is_refused() {
        let yaml = pool_yaml(
            "gpu1-node2",
            "  subnet: 10.1.0.0/27\n  nodeName: [node2]\n  namespaceName: [ai]\n  \
             multusName: [spiderpool/gpu1-macvlan]\n  nodeAffinity:\n    matchLabels:\n      \
             rail: \"1\"\n    matchExpressions:\n      - {key: zone, operator: In, values: [a]}\n",
        );
        let manifest = parse(&yaml, "f.yaml").unwrap();
        let filters = manifest.get("gpu1-node2").unwrap().filters();
        assert_eq!(filters.node_name, ["node2"]);
        assert_eq!(filters.namespace_name, ["ai"]);
        assert_eq!(filters.multus_name, ["spiderpool/gpu1-macvlan"]);
        assert_eq!(
            filters.node_affinity.as_ref().unwrap().to_string(),
            "rail=1,zone in (a)"
        );
        // namespaceName decides alone, so namespaceAffinity beside it is accepted.
        let both = "  subnet: 10.1.0.0/27\n  namespaceName: [ai]\n  namespaceAffinity: \
                    {matchLabels: {team: x}}\n";
        assert!(parse(&pool_yaml("p1", both), "f.yaml").is_ok());
        // An empty selector binds no node.
        let empty = pool_yaml("p1", "  subnet: 10.1.0.0/27\n  nodeAffinity: {}\n");
        assert!(!parse(&empty, "f.yaml").unwrap().pools[0]
            .filters()
            .binds_nodes());
        let cases = [
            (
                "  subnet: 10.0.0.0/24\n  podAffinity: {matchLabels: {app: x}}\n",
                "spec.podAffinity is not supported: a pod's labels do not reach the IPAM plugin",
            ),
            (
                "  subnet: 10.0.0.0/24\n  namespaceAffinity: {matchLabels: {team: x}}\n",
                "spec.namespaceAffinity is not supported: a namespace's labels are not known",
            ),
            (
                "  subnet: 10.0.0.0/24\n  nodeName: node1\n",
                "spec.nodeName must be a list, not \"node1\"",
            ),
            (
                "  subnet: 10.0.0.0/24\n  nodeAffinity: [rail]\n",
                "spec.nodeAffinity must be a label selector mapping",
            ),
            (
                "  subnet: 10.0.0.0/24\n  nodeAffinity: {matchLabels: {rail: 1}}\n",
                "spec.nodeAffinity.matchLabels.rail must be a string (quote numbers",
            ),
            (
                "  subnet: 10.0.0.0/24\n  nodeAffinity: {matchExpressions: [{key: a, operator: Has}]}\n",
                "spec.nodeAffinity.matchExpressions[0].operator: \"Has\" is not an operator",
            ),
            (
                "  subnet: 10.0.0.0/24\n  nodeAffinity: {matchExpressions: [{key: a, operator: In}]}\n",
                "spec.nodeAffinity.matchExpressions[0].values: operator In needs a non-empty list",
            ),
            (
                "  subnet: 10.0.0.0/24\n  nodeAffinity: {matchExpressions: [{key: a, operator: Exists, values: [x]}]}\n",
                "spec.nodeAffinity.matchExpressions[0].values: operator Exists takes no values",
            ),
            (
                "  subnet: 10.0.0.0/24\n  nodeAffinity: {matchExpressions: [{operator: Exists}]}\n",
                "spec.nodeAffinity.matchExpressions[0].key is required",
            ),
        ];
        for (body, expected) in cases {
            let err = error(&pool_yaml("p1", body), "a.yaml");
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
    }

    fn reserved_yaml(name: &str, body: &str) -> String {
        format!(
            "apiVersion: {API_VERSION}\nkind: SpiderReservedIP\nmetadata:\n  name: {name}\nspec:\n{body}"
        )
    }

    #[test]
    fn reserved_ips_leave_every_pool_of_their_family_across_files() {
        let pools = pool_yaml("p1", "  subnet: 10.0.0.0/24\n  ips: [10.0.0.1-10.0.0.10]\n");
        let v6 = pool_yaml("p6", "  subnet: fd00::/120\n  ips: [fd00::1-fd00::4]\n");
        let reserved = reserved_yaml("keep", "  ips: [10.0.0.2-10.0.0.3, 10.0.0.9]\n");
        let manifest = parse_all([
            ("a.yaml".to_string(), format!("{pools}---\n{v6}")),
            ("b.yaml".to_string(), reserved.clone()),
        ])
        .unwrap();
        assert_eq!(
            manifest.get("p1").unwrap().allocatable().to_string(),
            "10.0.0.1,10.0.0.4-10.0.0.8,10.0.0.10"
        );
        assert_eq!(manifest.get("p6").unwrap().size(), 4);
        assert_eq!(manifest.reserved.len(), 1);
        assert_eq!(manifest.reserved[0].source, "b.yaml");
        let cases = [
            (
                "  ipVersion: 4\n",
                "SpiderReservedIP r1: spec.ips is required",
            ),
            (
                "  ips: [10.0.0.1, fd00::1]\n",
                "SpiderReservedIP r1: spec.ips[1]: fd00::1 is not IPv4",
            ),
            (
                "  ipVersion: 6\n  ips: [10.0.0.1]\n",
                "spec.ips[0]: 10.0.0.1 is not IPv6",
            ),
            (
                "  ips: [10.0.0.9-10.0.0.1]\n",
                "spec.ips[0]: range 10.0.0.9-10.0.0.1 is reversed",
            ),
        ];
        for (body, expected) in cases {
            let err = error(&reserved_yaml("r1", body), "r.yaml");
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
        }
        // A reserved set and a pool share one namespace of names.
        let clash = format!("{pools}---\n{}", reserved_yaml("p1", "  ips: [10.0.0.1]\n"));
        assert!(error(&clash, "c.yaml").contains("p1 is defined twice"));
    }

    #[test]
    fn duplicate_pool_names_are_refused_within_and_across_files() {
        let one = pool_yaml("dup", "  subnet: 10.0.0.0/24\n");
        assert_eq!(
            error(&format!("{one}---\n{one}"), "a.yaml"),
            "pool dup is defined twice, in a.yaml and in a.yaml: names of pools and reserved IPs \
             must be unique, rename or delete one"
        );
        let dir = TempDir::new("dup");
        std::fs::write(dir.path().join("a.yaml"), &one).unwrap();
        std::fs::write(dir.path().join("b.yml"), &one).unwrap();
        let err = load_dir(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("a.yaml and in ") && err.contains("b.yml"),
            "{err}"
        );
    }

    #[test]
    fn load_dir_reads_manifests_in_name_order_and_skips_the_rest() {
        let dir = TempDir::new("dir");
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("b.yaml", &pool_yaml("second", "  subnet: 10.0.1.0/24\n"));
        write("a.yaml", SEED_YAML);
        write("notes.txt", "not a manifest");
        write(".hidden.yaml", "{{{ broken");
        let manifest = load_dir(dir.path()).unwrap();
        let names: Vec<_> = manifest.pools.iter().map(Pool::name).collect();
        assert_eq!(names, ["gpu1-net11", "second"]);
        assert!(manifest.warnings[0].source.ends_with("a.yaml"));
        let err = load_dir(&dir.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read ") && err.contains("missing"),
            "{err}"
        );
    }
}
