//! Kubernetes label selectors (`matchLabels` and `matchExpressions`), as SpiderIPPool's
//! `nodeAffinity` holds one, evaluated against a node's labels.

use std::collections::BTreeMap;
use std::fmt;

/// One `matchExpressions` entry's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Operator {
    pub fn parse(value: &str) -> Option<Operator> {
        Some(match value {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return None,
        })
    }

    /// Whether the operator takes `values` (In, NotIn) or must have none.
    pub fn takes_values(self) -> bool {
        matches!(self, Operator::In | Operator::NotIn)
    }
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => !value.is_some_and(|v| self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A label selector: every `matchLabels` pair and every requirement must hold. An empty one
/// matches every node, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<String, String>,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }
}

/// As `kubectl` prints selectors: `rail=1,zone in (a,b),!gpu`.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.extend(self.match_expressions.iter().map(|r| match r.operator {
            Operator::In => format!("{} in ({})", r.key, r.values.join(",")),
            Operator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
            Operator::Exists => r.key.clone(),
            Operator::DoesNotExist => format!("!{}", r.key),
        }));
        if parts.is_empty() {
            f.write_str("(every node)")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn requirement(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn every_operator_and_match_labels_hold_together() {
        let node = labels(&[("rail", "1"), ("zone", "a")]);
        let selector = |match_labels: &[(&str, &str)], exprs: Vec<Requirement>| LabelSelector {
            match_labels: labels(match_labels),
            match_expressions: exprs,
        };
        let cases = [
            (selector(&[("rail", "1")], vec![]), true),
            (selector(&[("rail", "2")], vec![]), false),
            (selector(&[("gpu", "1")], vec![]), false),
            (
                selector(&[], vec![requirement("zone", Operator::In, &["a", "b"])]),
                true,
            ),
            (
                selector(&[], vec![requirement("zone", Operator::NotIn, &["a"])]),
                false,
            ),
            (
                selector(&[], vec![requirement("gpu", Operator::NotIn, &["a"])]),
                true,
            ),
            (
                selector(&[], vec![requirement("rail", Operator::Exists, &[])]),
                true,
            ),
            (
                selector(&[], vec![requirement("rail", Operator::DoesNotExist, &[])]),
                false,
            ),
            (
                selector(
                    &[("rail", "1")],
                    vec![requirement("zone", Operator::In, &["b"])],
                ),
                false,
            ),
            (LabelSelector::default(), true),
        ];
        for (selector, expected) in cases {
            assert_eq!(selector.matches(&node), expected, "{selector}");
        }
    }

    #[test]
    fn selectors_print_as_kubectl_writes_them() {
        let selector = LabelSelector {
            match_labels: labels(&[("rail", "1")]),
            match_expressions: vec![
                requirement("zone", Operator::In, &["a", "b"]),
                requirement("gpu", Operator::DoesNotExist, &[]),
            ],
        };
        assert_eq!(selector.to_string(), "rail=1,zone in (a,b),!gpu");
    }
}
