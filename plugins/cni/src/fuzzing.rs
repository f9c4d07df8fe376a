//! What the plugins' property tests share (feature `proptest`, enabled by dev-dependencies
//! only, so no plugin binary carries it): the case count, arbitrary and hostile JSON, configs
//! that are almost right, and byte-level mutations of a good config.
//!
//! The property everywhere: a parser fed anything returns, without panicking, either a value
//! or a [`crate::Error`] whose code is one of the documented codes.

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

/// Cases per property when `PROPTEST_CASES` is not set: a few seconds per crate in CI.
pub const CI_CASES: u32 = 2_000;

/// [`CI_CASES`] per property, or `PROPTEST_CASES` (e.g. `PROPTEST_CASES=1000000` for a long
/// run). No regression files are written into the source tree: a failure prints its minimal
/// input, which then belongs in a unit test.
pub fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CI_CASES);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Points the plugin log at /dev/null for the rest of the process. The log is opened once per
/// process from the first config that names a file, and a generated config must never make a
/// test write wherever it likes.
pub fn mute_logs() {
    crate::log::init(
        Path::new("/dev/null"),
        crate::log::Level::Error,
        u64::MAX,
        "fuzz",
    );
}

/// Strings that are sometimes plausible and often hostile: path tricks, NUL and control
/// characters, non-ASCII, very long, empty.
pub fn nasty_string() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z0-9][a-z0-9._-]{0,15}",
        2 => any::<String>(),
        1 => prop::sample::select(vec![
            "", ".", "..", "../../etc/passwd", "a/b", "a\0b", "net1\n", " ", "\u{202e}x",
            "0", "-1", "1e400", "true", "null", "bridge", "spiderpool",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z]{200,300}",
    ]
    .boxed()
}

/// Any JSON value, a few levels deep, with hostile strings and keys.
pub fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // serde_json has no NaN or infinity: those come out as null.
        any::<f64>().prop_map(Value::from),
        nasty_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((nasty_string(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A field's value: usually one of `plausible` (the values that reach deep into a parser),
/// sometimes anything at all.
pub fn field(plausible: Vec<Value>) -> BoxedStrategy<Value> {
    prop_oneof![3 => prop::sample::select(plausible), 1 => any_json()].boxed()
}

/// An object holding any subset of `fields`, plus sometimes keys nobody knows.
pub fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let picks: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(key, value)| {
            proptest::option::of(value.prop_map(move |v| (key.to_owned(), v))).boxed()
        })
        .collect();
    let unknown = prop::collection::vec((nasty_string(), any_json()), 0..2);
    (picks, unknown)
        .prop_map(|(picked, unknown)| {
            let mut map: Map<String, Value> = unknown.into_iter().collect();
            map.extend(picked.into_iter().flatten());
            Value::Object(map)
        })
        .boxed()
}

/// A network config around `fields`: a `cniVersion` and `name` that are mostly valid, the
/// plugin's `type`, and the plugin's own keys.
pub fn network_config(
    plugin: &'static str,
    mut fields: Vec<(&'static str, BoxedStrategy<Value>)>,
) -> BoxedStrategy<Value> {
    let versions = [
        "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0", "0.2.0", "9.9.9", "",
    ];
    fields.extend([
        (
            "cniVersion",
            field(versions.iter().map(|v| Value::from(*v)).collect()),
        ),
        (
            "name",
            field(vec!["gpu1-macvlan".into(), "n".into(), "../x".into()]),
        ),
        ("type", field(vec![plugin.into()])),
    ]);
    object(fields)
}

/// `seed` with a few bytes changed, inserted or removed: inputs that get past the first
/// byte of a parser and break somewhere inside.
pub fn mutated(seed: Vec<u8>) -> BoxedStrategy<Vec<u8>> {
    let edits = prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..6);
    edits
        .prop_map(move |edits| {
            let mut bytes = seed.clone();
            for (at, byte, op) in edits {
                let i = at.index(bytes.len() + 1);
                match op {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => bytes.insert(i, byte),
                }
            }
            bytes
        })
        .boxed()
}

/// Bytes of every kind: random, and mutations of `seed` (a good config).
pub fn any_bytes(seed: &Value) -> BoxedStrategy<Vec<u8>> {
    let seed = seed.to_string().into_bytes();
    prop_oneof![prop::collection::vec(any::<u8>(), 0..256), mutated(seed),].boxed()
}

/// Whether `result` is a value or an error with one of `codes`; the message otherwise.
pub fn check_codes<T>(result: Result<T, crate::Error>, codes: &[u32]) -> Result<(), TestCaseError> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if codes.contains(&e.code()) => Ok(()),
        Err(e) => Err(TestCaseError::fail(format!(
            "code {} is not one of {codes:?}: {e}",
            e.code()
        ))),
    }
}

/// The skeleton's and the protocol types' own properties.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::skel::{dispatch, Invocation, Plugin, Reply};
    use crate::types::{parse_config, ConfHeader};
    use crate::{CniResult, Command, Env, Error};
    use serde_json::json;

    /// Accepts whatever reaches it, reading `prevResult` on CHECK as the plugins do: what is
    /// refused is refused by the skeleton and the types.
    struct Accepting;

    impl Plugin for Accepting {
        fn add(&self, _: &Invocation) -> Result<CniResult, Error> {
            Ok(CniResult::default())
        }
        fn del(&self, _: &Invocation) -> Result<(), Error> {
            Ok(())
        }
        fn check(&self, inv: &Invocation) -> Result<(), Error> {
            inv.prev_result().map(drop)
        }
        fn gc(&self, _: &Invocation) -> Result<(), Error> {
            Ok(())
        }
        fn status(&self, _: &Invocation) -> Result<(), Error> {
            Ok(())
        }
    }

    /// What the skeleton may answer a valid environment with: a version it does not speak
    /// (1), bytes that are not JSON or too many (6), JSON that is not a config (7).
    const SKELETON_CODES: [u32; 3] = [1, 6, 7];

    fn env(command: &str) -> Result<Env, Error> {
        Env::from_lookup(|k| {
            Some(match k {
                "CNI_COMMAND" => command.to_owned(),
                "CNI_CONTAINERID" => "c1".into(),
                "CNI_NETNS" => "/run/netns/p".into(),
                "CNI_IFNAME" => "net1".into(),
                "CNI_PATH" => "/opt/cni/bin".into(),
                _ => return None,
            })
        })
    }

    fn command() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"])
    }

    fn answer(command: &str, stdin: &[u8]) -> Result<(), TestCaseError> {
        match dispatch(&Accepting, env(command), &mut &stdin[..]) {
            Reply::Error(e, _) => check_codes(Err::<(), _>(e), &SKELETON_CODES),
            Reply::Json(json) => {
                serde_json::from_str::<Value>(&json)
                    .map_err(|e| TestCaseError::fail(format!("reply is not JSON: {e}")))?;
                Ok(())
            }
            Reply::Silent => Ok(()),
        }
    }

    /// A result as an IPAM plugin or a runtime's `prevResult` has it, with values that are
    /// right, wrong, or of the wrong type.
    fn result() -> BoxedStrategy<Value> {
        let address = field(vec![
            json!("172.16.11.1/16"),
            json!("fd00::1/64"),
            json!("172.16.11.1"),
            json!("300.1.1.1/16"),
            json!("172.16.11.1/33"),
        ]);
        let gateway = field(vec![json!("172.16.11.254"), json!("fd00::ff"), json!("x")]);
        let ip = object(vec![
            ("address", address),
            ("gateway", gateway),
            ("interface", field(vec![json!(0), json!(-1), json!(99)])),
            ("version", field(vec![json!("4"), json!("6"), json!(4)])),
        ]);
        let route = object(vec![
            (
                "dst",
                field(vec![json!("0.0.0.0/0"), json!("::/0"), json!("10.0.0.0/8")]),
            ),
            ("gw", field(vec![json!("172.16.11.254"), json!("")])),
            ("mtu", field(vec![json!(1500), json!(-1)])),
            ("table", field(vec![json!(100), json!(u64::MAX)])),
            ("scope", field(vec![json!(0), json!(253), json!(256)])),
        ]);
        let interface = object(vec![
            ("name", field(vec![json!("net1")])),
            ("mac", field(vec![json!("02:00:00:00:00:01")])),
            ("mtu", field(vec![json!(1480)])),
            ("sandbox", field(vec![json!("/run/netns/p")])),
        ]);
        object(vec![
            ("cniVersion", field(vec![json!("1.0.0")])),
            (
                "ips",
                prop::collection::vec(ip, 0..3)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
            (
                "routes",
                prop::collection::vec(route, 0..3)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
            (
                "interfaces",
                prop::collection::vec(interface, 0..2)
                    .prop_map(Value::Array)
                    .boxed(),
            ),
            ("dns", any_json()),
        ])
    }

    fn seed() -> Value {
        json!({"cniVersion": "1.0.0", "name": "gpu1-macvlan", "type": "macvlan",
               "prevResult": {"cniVersion": "1.0.0", "ips": [{"address": "172.16.11.1/16"}]}})
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn the_skeleton_answers_any_bytes_with_a_result_or_a_documented_code(
            bytes in any_bytes(&seed()),
            command in command(),
        ) {
            answer(command, &bytes)?;
        }

        #[test]
        fn the_skeleton_answers_any_json_with_a_result_or_a_documented_code(
            conf in prop_oneof![
                any_json(),
                network_config("macvlan", vec![("prevResult", result())]),
            ],
            command in command(),
        ) {
            answer(command, conf.to_string().as_bytes())?;
        }

        #[test]
        fn a_header_is_parsed_or_refused_with_6_or_7(bytes in any_bytes(&seed())) {
            check_codes(parse_config::<ConfHeader>(&bytes, "network config"), &[6, 7])?;
        }

        #[test]
        fn a_result_is_read_or_refused_with_7_and_survives_every_version(value in result()) {
            if let Ok(read) = CniResult::from_value(value, "prevResult") {
                for version in crate::CniVersion::ALL {
                    let again = CniResult::from_value(read.to_json(version), "result");
                    let again = again.map_err(|e| TestCaseError::fail(format!("{version}: {e}")))?;
                    prop_assert_eq!(&again.ips, &read.ips);
                }
            }
        }

        #[test]
        fn the_environment_is_parsed_or_refused_with_4(
            vars in prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME",
                        "CNI_ARGS", "CNI_PATH",
                    ]),
                    prop_oneof![
                        nasty_string(),
                        prop::sample::select(vec!["ADD", "DEL", "CHECK", "GC", "STATUS"])
                            .prop_map(str::to_owned),
                    ],
                ),
                0..8,
            ),
        ) {
            let lookup = |k: &str| vars.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
            let env = Env::from_lookup(lookup);
            if let Ok(env) = &env {
                // The commands of an attachment use both as file names in the store: what
                // passes is one harmless path component. (GC and STATUS ignore both.)
                if matches!(env.command, Command::Add | Command::Del | Command::Check) {
                    for name in [&env.container_id, &env.ifname] {
                        prop_assert!(!name.is_empty() && !name.contains(['/', '\0']), "{name:?}");
                        prop_assert!(name != "." && name != "..", "{name:?}");
                    }
                    prop_assert!(env.ifname.len() <= 15);
                }
            }
            check_codes(env, &[4])?;
        }
    }
}
