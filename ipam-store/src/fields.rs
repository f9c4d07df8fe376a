//! The one field-checked deserialisation path of manifests: a document's part (a `spec`, a
//! `metadata`) is read from its `serde_json::Value` into a serde derive struct through
//! `serde_path_to_error`, and serde's complaint is turned into a [`FieldProblem`] that names
//! the field path, the value as written and what it must be. ipam-store's pool errors and
//! spiderctl's SpiderMultusConfig errors are both worded from it.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// What is wrong with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldProblem {
    /// The path, e.g. `spec.routes[0].gw`.
    pub field: String,
    pub problem: Problem,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Absent or `null`, and required.
    Missing,
    /// `value` (as JSON) is of the wrong type; `expected` is worded for an operator
    /// ("a list", "true or false").
    WrongType { value: String, expected: String },
    /// A field the struct does not read; `known` are those it does.
    Unknown { known: Vec<String> },
    /// A message of a field's own check (its `deserialize_with`), or anything else serde said.
    Other(String),
}

/// Deserialises `value`, reporting a problem at its path under `prefix` (`spec`).
pub fn deserialize<'de, T: Deserialize<'de>>(
    value: &'de Value,
    prefix: &str,
) -> Result<T, FieldProblem> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = at_path(value, e.path());
        let mut field = prefix.to_string();
        for segment in e.path().iter() {
            use serde_path_to_error::Segment;
            match segment {
                Segment::Seq { index } => field.push_str(&format!("[{index}]")),
                Segment::Map { key } => field.push_str(&format!(".{key}")),
                Segment::Enum { variant } => field.push_str(&format!(".{variant}")),
                Segment::Unknown => field.push_str(".?"),
            }
        }
        problem(field, at, &e.into_inner().to_string())
    })
}

/// The value the path points at, if the path exists in `value`.
fn at_path<'a>(value: &'a Value, path: &serde_path_to_error::Path) -> Option<&'a Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(value, |at, segment| match segment {
        Segment::Seq { index } => at.get(index),
        Segment::Map { key } => at.get(key),
        _ => None,
    })
}

/// Words serde's message (its wording is that of `serde::de::Error`'s provided methods:
/// `missing field`, `invalid type: ..., expected ...`, `unknown field`).
fn problem(field: String, at: Option<&Value>, message: &str) -> FieldProblem {
    let backticked = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    if let Some(rest) = message.strip_prefix("missing field ") {
        let name = backticked(rest).concat();
        return FieldProblem {
            field: format!("{field}.{name}"),
            problem: Problem::Missing,
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        // The path already ends at the unknown field.
        let mut names = backticked(rest);
        names.remove(0);
        return FieldProblem {
            field,
            problem: Problem::Unknown { known: names },
        };
    }
    let problem = match (message.strip_prefix("invalid type: "), at) {
        (Some(_), None | Some(Value::Null)) => Problem::Missing,
        (Some(rest), Some(value)) => {
            let expected = rest.rsplit_once(", expected ").map_or("", |(_, e)| e);
            Problem::WrongType {
                value: value.to_string(),
                expected: operator_words(expected).to_string(),
            }
        }
        (None, _) => Problem::Other(message.to_string()),
    };
    FieldProblem { field, problem }
}

/// serde's names of the types a manifest holds, as an operator writes them.
fn operator_words(expected: &str) -> &str {
    match expected {
        "a sequence" => "a list",
        "a boolean" => "true or false",
        // YAML reads an unquoted 1 or true as a number or a boolean.
        "a string" => "a string (quote numbers and booleans)",
        "a map" => "a mapping",
        "i64" | "u64" | "i32" | "u32" | "u16" | "u8" => "a whole number",
        other => other,
    }
}

/// A struct read only from a mapping. serde's derived structs also take a list, filling the
/// fields in order (`routes: [[10.0.0.0/8, 10.0.0.1]]`); a manifest that writes one has a
/// mistake in it. `T::EXPECTING` says what was wanted.
#[derive(Debug, PartialEq, Eq)]
pub struct Mapping<T>(pub T);

/// What a [`Mapping`] expects, for the message when it gets something else.
pub trait Expecting {
    const EXPECTING: &'static str;
}

impl<'de, T: Deserialize<'de> + Expecting> Deserialize<'de> for Mapping<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Only<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Expecting> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(T::EXPECTING)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Only(std::marker::PhantomData))
            .map(Mapping)
    }
}

/// For `#[serde(default, deserialize_with = "strings")]` on an `Option<Vec<String>>`: `null` is
/// absent, and a wrong type is reported as not "a list of strings" (serde's own word for any
/// list is "a sequence").
pub fn strings<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    struct Strings;
    impl<'de> Visitor<'de> for Strings {
        type Value = Option<Vec<String>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            Ok(Some(items))
        }
    }
    deserializer.deserialize_option(Strings)
}

/// For `#[serde(default, deserialize_with = "null_as_default")]`: `null` counts as absent, as
/// Kubernetes reads it (`kubectl get -o yaml` writes `ips: null`-style empty fields).
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Spec {
        name: String,
        #[serde(default, deserialize_with = "null_as_default")]
        items: Vec<Mapping<Item>>,
        #[serde(default, deserialize_with = "null_as_default")]
        on: bool,
        #[serde(default, deserialize_with = "strings")]
        names: Option<Vec<String>>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        key: String,
    }

    impl Expecting for Item {
        const EXPECTING: &'static str = "a mapping with a key";
    }

    fn problem_of(value: Value) -> FieldProblem {
        deserialize::<Spec>(&value, "spec").unwrap_err()
    }

    #[test]
    fn serde_complaints_become_field_problems_with_the_value() {
        let wrong = |field: &str, value: &str, expected: &str| FieldProblem {
            field: field.into(),
            problem: Problem::WrongType {
                value: value.into(),
                expected: expected.into(),
            },
        };
        assert_eq!(
            problem_of(json!({"items": []})),
            FieldProblem {
                field: "spec.name".into(),
                problem: Problem::Missing
            }
        );
        assert_eq!(problem_of(json!({"name": null})).problem, Problem::Missing);
        assert_eq!(
            problem_of(json!({"name": "a", "items": [{"key": 1}]})),
            wrong(
                "spec.items[0].key",
                "1",
                "a string (quote numbers and booleans)"
            )
        );
        assert_eq!(
            problem_of(json!({"name": "a", "items": "x"})),
            wrong("spec.items", "\"x\"", "a list")
        );
        assert_eq!(
            problem_of(json!({"name": "a", "items": [7]})),
            wrong("spec.items[0]", "7", "a mapping with a key")
        );
        assert_eq!(
            problem_of(json!({"name": "a", "items": [["k"]]})),
            wrong("spec.items[0]", "[\"k\"]", "a mapping with a key")
        );
        assert_eq!(
            problem_of(json!({"name": "a", "on": "yes"})),
            wrong("spec.on", "\"yes\"", "true or false")
        );
        assert_eq!(
            problem_of(json!({"name": "a", "of": 1})),
            FieldProblem {
                field: "spec.of".into(),
                problem: Problem::Unknown {
                    known: vec!["name".into(), "items".into(), "on".into(), "names".into()]
                }
            }
        );
        assert_eq!(
            problem_of(json!({"name": "a", "names": "x"})),
            wrong("spec.names", "\"x\"", "a list of strings")
        );
        assert_eq!(
            problem_of(json!({"name": "a", "names": ["x", true]})),
            wrong(
                "spec.names[1]",
                "true",
                "a string (quote numbers and booleans)"
            )
        );
        let spec: Spec =
            deserialize(&json!({"name": "a", "items": null, "names": ["x"]}), "spec").unwrap();
        assert!(spec.items.is_empty() && !spec.on);
        assert_eq!(spec.names, Some(vec!["x".to_string()]));
    }
}
