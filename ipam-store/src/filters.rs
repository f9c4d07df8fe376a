//! Which pods, on which nodes and networks, a pool may serve: SpiderIPPool's `nodeName`,
//! `nodeAffinity`, `namespaceName` and `multusName`, evaluated where the plugin runs.
//! Precedence is spiderpool's: a non-empty `nodeName` decides alone (its `nodeAffinity` is not
//! looked at), and so does a non-empty `namespaceName` over `namespaceAffinity` (which a node
//! cannot evaluate at all, see [`crate::pool`]).

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::manifest;
use crate::selector::LabelSelector;

/// A pool's filters; all empty means every pod on every node and network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub node_name: Vec<String>,
    pub node_affinity: Option<LabelSelector>,
    pub namespace_name: Vec<String>,
    /// `name` or `namespace/name` of the network (the conflist's `name`); the namespace part
    /// is not compared, a node does not know it (Multus does not pass it).
    pub multus_name: Vec<String>,
}

impl Filters {
    /// Whether the pool is tied to some nodes: without that, two nodes with their own file
    /// stores hand out the same addresses.
    pub fn binds_nodes(&self) -> bool {
        !self.node_name.is_empty() || self.node_affinity.is_some()
    }

    /// Why the pool may not serve `context`, if it may not.
    pub fn check(&self, context: &Context) -> Result<(), Exclusion> {
        if !self.node_name.is_empty() {
            if !self.node_name.iter().any(|n| n == context.node) {
                return Err(Exclusion::NodeName {
                    names: self.node_name.clone(),
                    node: context.node.into(),
                });
            }
        } else if let Some(selector) = &self.node_affinity {
            let labels = context
                .labels
                .get()
                .map_err(|reason| Exclusion::NoNodeLabels {
                    reason: reason.to_string(),
                })?;
            if !selector.matches(labels) {
                return Err(Exclusion::NodeAffinity {
                    selector: selector.to_string(),
                    node: context.node.into(),
                    labels_from: context.labels.source(),
                });
            }
        }
        if !self.namespace_name.is_empty()
            && !context
                .namespace
                .is_some_and(|ns| self.namespace_name.iter().any(|n| n == ns))
        {
            return Err(Exclusion::NamespaceName {
                names: self.namespace_name.clone(),
                namespace: context.namespace.map(str::to_owned),
            });
        }
        if !self.multus_name.is_empty()
            && !self
                .multus_name
                .iter()
                .any(|n| n.rsplit('/').next() == Some(context.network))
        {
            return Err(Exclusion::MultusName {
                names: self.multus_name.clone(),
                network: context.network.into(),
            });
        }
        Ok(())
    }
}

/// What an ADD is for: this node, the pod's namespace, the network.
pub struct Context<'a> {
    pub node: &'a str,
    pub labels: &'a NodeLabels,
    /// `K8S_POD_NAMESPACE` of CNI_ARGS; runtimes outside Kubernetes send none.
    pub namespace: Option<&'a str>,
    pub network: &'a str,
}

/// Why a pool was not a candidate; the message reads after the pool's name and a colon.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Exclusion {
    #[error("nodeName [{}] does not include {node}", names.join(", "))]
    NodeName { names: Vec<String>, node: String },

    #[error("nodeAffinity {selector} does not match the labels of {node} (from {labels_from})")]
    NodeAffinity {
        selector: String,
        node: String,
        labels_from: String,
    },

    #[error("nodeAffinity cannot be evaluated: {reason}")]
    NoNodeLabels { reason: String },

    #[error(
        "namespaceName [{}] does not include {}", names.join(", "),
        namespace.as_deref().unwrap_or("the pod's namespace (none given: no K8S_POD_NAMESPACE in CNI_ARGS)")
    )]
    NamespaceName {
        names: Vec<String>,
        namespace: Option<String>,
    },

    #[error("multusName [{}] does not include {network}", names.join(", "))]
    MultusName { names: Vec<String>, network: String },
}

/// This node's labels, for `nodeAffinity`: a file (YAML or JSON, a mapping of label to value,
/// as `kubectl get node NAME -o jsonpath='{.metadata.labels}'` prints them) read when a pool
/// first needs it. A missing or unreadable file matches no selector: a pool bound by
/// `nodeAffinity` serves no pod on a node whose labels are not known.
pub struct NodeLabels {
    source: Source,
    loaded: OnceCell<Result<BTreeMap<String, String>, String>>,
}

enum Source {
    File(PathBuf),
    Given,
}

impl NodeLabels {
    pub fn from_file(path: &Path) -> NodeLabels {
        NodeLabels {
            source: Source::File(path.into()),
            loaded: OnceCell::new(),
        }
    }

    /// Labels known already (spiderctl's `--node-label`, tests).
    pub fn given(labels: BTreeMap<String, String>) -> NodeLabels {
        NodeLabels {
            source: Source::Given,
            loaded: OnceCell::from(Ok(labels)),
        }
    }

    pub fn get(&self) -> Result<&BTreeMap<String, String>, &str> {
        self.loaded
            .get_or_init(|| match &self.source {
                Source::File(path) => read_labels(path),
                Source::Given => Ok(BTreeMap::new()),
            })
            .as_ref()
            .map_err(String::as_str)
    }

    fn source(&self) -> String {
        match &self.source {
            Source::File(path) => path.display().to_string(),
            Source::Given => "the given labels".into(),
        }
    }
}

impl fmt::Debug for NodeLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeLabels({})", self.source())
    }
}

fn read_labels(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let name = path.display();
    if !path.exists() {
        return Err(format!(
            "the node labels file {name} does not exist: write this node's labels there \
             (a mapping such as {{\"rail\": \"1\"}}), or bind the pool with nodeName"
        ));
    }
    let text = manifest::read_text(path).map_err(|e| e.to_string())?;
    let docs = manifest::documents(&text, &name.to_string()).map_err(|e| e.to_string())?;
    match docs.as_slice() {
        [serde_json::Value::Object(map)] => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(format!(
                    "the node labels file {name}: label {k} is {other}, not a string: quote it"
                )),
            })
            .collect(),
        _ => Err(format!(
            "the node labels file {name} is not one mapping of label to value, e.g. \
             {{\"rail\": \"1\"}}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::{Operator, Requirement};
    use crate::testutil::TempDir;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn rail(value: &str) -> LabelSelector {
        LabelSelector {
            match_labels: [("rail".to_string(), value.to_string())].into(),
            match_expressions: vec![],
        }
    }

    #[test]
    fn node_name_wins_over_node_affinity() {
        let labels = NodeLabels::given([("rail".into(), "1".into())].into());
        let context = Context {
            node: "node1",
            labels: &labels,
            namespace: Some("default"),
            network: "gpu1-macvlan",
        };
        let filters = Filters {
            node_name: strings(&["node1"]),
            node_affinity: Some(rail("2")),
            ..Filters::default()
        };
        assert_eq!(filters.check(&context), Ok(()));
        let filters = Filters {
            node_name: strings(&["node2", "node3"]),
            node_affinity: Some(rail("1")),
            ..Filters::default()
        };
        assert_eq!(
            filters.check(&context).unwrap_err().to_string(),
            "nodeName [node2, node3] does not include node1"
        );
        let filters = Filters {
            node_affinity: Some(rail("2")),
            ..Filters::default()
        };
        assert_eq!(
            filters.check(&context).unwrap_err().to_string(),
            "nodeAffinity rail=2 does not match the labels of node1 (from the given labels)"
        );
        assert!(filters.binds_nodes() && !Filters::default().binds_nodes());
    }

    #[test]
    fn namespace_and_multus_name_filter_the_pod_and_network() {
        let labels = NodeLabels::given(BTreeMap::new());
        let context = |namespace, network| Context {
            node: "n",
            labels: &labels,
            namespace,
            network,
        };
        let filters = Filters {
            namespace_name: strings(&["ai"]),
            multus_name: strings(&["spiderpool/gpu1-macvlan", "gpu2-macvlan"]),
            ..Filters::default()
        };
        assert_eq!(filters.check(&context(Some("ai"), "gpu1-macvlan")), Ok(()));
        assert_eq!(filters.check(&context(Some("ai"), "gpu2-macvlan")), Ok(()));
        let cases = [
            (
                context(Some("web"), "gpu1-macvlan"),
                "namespaceName [ai] does not include web",
            ),
            (
                context(None, "gpu1-macvlan"),
                "namespaceName [ai] does not include the pod's namespace (none given",
            ),
            (
                context(Some("ai"), "gpu3-macvlan"),
                "multusName [spiderpool/gpu1-macvlan, gpu2-macvlan] does not include gpu3-macvlan",
            ),
        ];
        for (context, expected) in cases {
            let err = filters.check(&context).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{err}");
        }
    }

    #[test]
    fn node_labels_come_from_a_file_and_a_missing_one_matches_nothing() {
        let dir = TempDir::new("labels");
        let path = dir.path().join("labels.json");
        let filters = Filters {
            node_affinity: Some(LabelSelector {
                match_labels: BTreeMap::new(),
                match_expressions: vec![Requirement {
                    key: "rail".into(),
                    operator: Operator::DoesNotExist,
                    values: vec![],
                }],
            }),
            ..Filters::default()
        };
        let check = |labels: &NodeLabels| {
            filters.check(&Context {
                node: "n",
                labels,
                namespace: None,
                network: "net",
            })
        };
        let missing = check(&NodeLabels::from_file(&path))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("labels.json does not exist") && missing.contains("nodeName"),
            "{missing}"
        );
        std::fs::write(&path, "{\"zone\": \"a\"}").unwrap();
        assert_eq!(check(&NodeLabels::from_file(&path)), Ok(()));
        std::fs::write(&path, "{\"rail\": \"1\"}").unwrap();
        assert!(check(&NodeLabels::from_file(&path)).is_err());
        let yaml = dir.path().join("labels.yaml");
        std::fs::write(&yaml, "rail: 1\n").unwrap();
        let path = yaml;
        let err = check(&NodeLabels::from_file(&path))
            .unwrap_err()
            .to_string();
        assert!(err.contains("label rail is 1, not a string"), "{err}");
    }
}
