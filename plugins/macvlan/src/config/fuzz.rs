//! Property tests of the macvlan config parser: any stdin, any `CNI_ARGS` MAC, and configs
//! that are almost right give a config or an error with a documented code, never a panic.
//! 2,000 cases per property; `PROPTEST_CASES` for a long run (see `cni::fuzzing`).

use cni::fuzzing::{any_bytes, any_json, check_codes, config, field, mute_logs, nasty_string};
use cni::fuzzing::{network_config, object};
use cni::{CniVersion, Env, Error, Invocation};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::MacvlanConf;

/// unsupported field (2), cannot decode (6), invalid config (7).
const CODES: [u32; 3] = [2, 6, 7];

fn parse(stdin: Vec<u8>, mac_arg: Option<String>) -> Result<MacvlanConf, Error> {
    mute_logs();
    let mut env = Env::from_lookup(|k| {
        Some(match k {
            "CNI_COMMAND" => "ADD".to_owned(),
            "CNI_CONTAINERID" => "c1".into(),
            "CNI_NETNS" => "/run/netns/p".into(),
            "CNI_IFNAME" => "net1".into(),
            "CNI_PATH" => "/opt/cni/bin".into(),
            _ => return None,
        })
    })
    .expect("a valid environment");
    // Set directly: `CNI_ARGS` parsing would refuse some values before the config sees them.
    env.args = mac_arg.into_iter().map(|mac| ("MAC".into(), mac)).collect();
    MacvlanConf::parse(&Invocation {
        env,
        stdin,
        version: CniVersion::V1_0_0,
        network: "gpu1-macvlan".into(),
    })
}

fn seed() -> Value {
    json!({"cniVersion": "1.0.0", "name": "gpu1-macvlan", "type": "macvlan",
           "master": "enp11s0f0np0", "mode": "bridge", "mtu": 1480,
           "ipam": {"type": "spiderpool", "default_ipv4_ippool": ["gpu1-net11"]}})
}

fn mac() -> BoxedStrategy<Value> {
    field(vec![
        json!("02:00:ac:10:0b:01"),
        json!("02:00:AC:10:0B:01"),
        json!("02:00:ac:10:0b"),
        json!("02:00:ac:10:0b:01:02"),
        json!("zz:zz:zz:zz:zz:zz"),
        json!(""),
    ])
}

/// Every key the parser reads, with values that reach each of its branches.
fn macvlan_config() -> BoxedStrategy<Value> {
    network_config(
        "macvlan",
        vec![
            (
                "master",
                field(vec![
                    json!("enp11s0f0np0"),
                    json!(""),
                    json!("a/b"),
                    json!("enp11s0f0np0123"),
                    json!("enp11s0f0np01234"),
                    json!(".."),
                ]),
            ),
            (
                "mode",
                field(
                    ["bridge", "private", "vepa", "passthru", "source", "", "l2"]
                        .map(Value::from)
                        .to_vec(),
                ),
            ),
            (
                "mtu",
                field(vec![
                    json!(0),
                    json!(67),
                    json!(68),
                    json!(9000),
                    json!(u32::MAX),
                    json!(u64::from(u32::MAX) + 1),
                    json!(-1),
                    json!(1480.5),
                ]),
            ),
            ("mac", mac()),
            ("linkInContainer", field(vec![json!(true), json!(false)])),
            (
                "ipam",
                object(vec![(
                    "type",
                    field(vec![json!("spiderpool"), json!(""), json!("../x")]),
                )]),
            ),
            ("runtimeConfig", object(vec![("mac", mac())])),
            ("log_level", field(vec![json!("debug"), json!("nonsense")])),
        ],
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_give_a_config_or_a_documented_code(bytes in any_bytes(&seed())) {
        check_codes(parse(bytes, None), &CODES)?;
    }

    #[test]
    fn any_json_gives_a_config_or_a_documented_code(value in any_json()) {
        check_codes(parse(value.to_string().into_bytes(), None), &CODES)?;
    }

    #[test]
    fn near_valid_configs_give_a_sound_config_or_a_documented_code(
        value in macvlan_config(),
        mac_arg in proptest::option::of(nasty_string()),
    ) {
        let parsed = parse(value.to_string().into_bytes(), mac_arg);
        if let Ok(conf) = &parsed {
            // What the rest of the plugin trusts without looking again.
            prop_assert!(!conf.master.is_empty() && conf.master.len() <= 15);
            prop_assert!(conf.mtu.is_none_or(|mtu| mtu >= 68));
        }
        check_codes(parsed, &CODES)?;
    }
}
