//! Property tests of the coordinator config parser: any stdin and configs that are almost
//! right (durations of every size and unit above all) give a config or an error with a
//! documented code, never a panic. 2,000 cases per property; `PROPTEST_CASES` for a long run
//! (see `cni::fuzzing`).

use std::time::Duration;

use cni::fuzzing::{any_bytes, any_json, check_codes, config, field, mute_logs};
use cni::fuzzing::{network_config, object};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::CoordinatorConf;

/// cannot decode (6), invalid config (7).
const CODES: [u32; 2] = [6, 7];

fn parse(stdin: &[u8]) -> Result<CoordinatorConf, cni::Error> {
    mute_logs();
    CoordinatorConf::parse(stdin)
}

fn seed() -> Value {
    json!({"cniVersion": "1.0.0", "name": "gpu1-macvlan", "type": "coordinator",
           "podDefaultCniNic": "eth0", "detectGateway": true,
           "detectOptions": {"retries": 3, "interval": "100ms", "timeout": 250}})
}

/// Go-style duration strings ("1.5s") with any number and unit, and bare milliseconds.
fn duration() -> BoxedStrategy<Value> {
    let unit = prop::sample::select(vec!["us", "µs", "ms", "s", "m", "h", "", "sec"]);
    prop_oneof![
        (any::<f64>(), unit.clone()).prop_map(|(n, unit)| json!(format!("{n}{unit}"))),
        (any::<u64>(), unit).prop_map(|(n, unit)| json!(format!("{n}{unit}"))),
        any::<u64>().prop_map(|ms| json!(ms)),
        field(vec![
            json!("100ms"),
            json!("1e300s"),
            json!("-1s"),
            json!("1e-300s")
        ]),
    ]
    .boxed()
}

fn flag() -> BoxedStrategy<Value> {
    field(vec![json!(true), json!(false)])
}

fn coordinator_config() -> BoxedStrategy<Value> {
    let nic = || field(vec![json!("eth0"), json!("net1"), json!("")]);
    network_config(
        "coordinator",
        vec![
            ("podDefaultCniNic", nic()),
            ("podDefaultRouteNic", nic()),
            ("tunePodRoutes", flag()),
            (
                "podRPFilter",
                field(vec![
                    json!(-1),
                    json!(0),
                    json!(2),
                    json!(3),
                    json!(i64::MAX),
                ]),
            ),
            ("detectGateway", flag()),
            ("detectIPConflict", flag()),
            (
                "detectOptions",
                object(vec![
                    (
                        "retries",
                        field(vec![json!(0), json!(1), json!(u32::MAX), json!(-1)]),
                    ),
                    ("interval", duration()),
                    ("timeout", duration()),
                ]),
            ),
            (
                "logOptions",
                object(vec![("logLevel", field(vec![json!("debug")]))]),
            ),
        ],
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_give_a_config_or_a_documented_code(bytes in any_bytes(&seed())) {
        check_codes(parse(&bytes), &CODES)?;
    }

    #[test]
    fn any_json_gives_a_config_or_a_documented_code(value in any_json()) {
        check_codes(parse(value.to_string().as_bytes()), &CODES)?;
    }

    #[test]
    fn near_valid_configs_give_a_sound_config_or_a_documented_code(
        value in coordinator_config(),
    ) {
        let parsed = parse(value.to_string().as_bytes());
        if let Ok(conf) = &parsed {
            // The detection budget the probes trust: at least one try, each wait in 1ms..=60s.
            let budget = conf.budget;
            prop_assert!(budget.retries >= 1);
            for wait in [budget.interval, budget.timeout] {
                prop_assert!(!wait.is_zero() && wait <= Duration::from_secs(60), "{wait:?}");
            }
        }
        check_codes(parsed, &CODES)?;
    }
}

/// What the properties found, pinned.
#[test]
fn durations_found_by_the_properties() {
    let timeout = |value: Value| {
        parse(
            json!({"cniVersion": "1.0.0", "name": "n", "detectOptions": {"timeout": value}})
                .to_string()
                .as_bytes(),
        )
        .map(|conf| conf.budget.timeout)
    };
    // Finite floats beyond any Duration were a panic (`Duration::from_secs_f64`).
    for huge in ["1e300s", "2.7e200ms", "1e30m"] {
        let err = timeout(json!(huge)).unwrap_err();
        assert_eq!(err.code(), 7, "{huge}: {err}");
        assert!(err.to_string().contains(huge), "{err}");
    }
    // Go's micro units were refused: the split looked for an ASCII letter.
    for micro in ["500us", "500\u{b5}s", "500\u{3bc}s"] {
        assert_eq!(
            timeout(json!(micro)).unwrap(),
            Duration::from_micros(500),
            "{micro}"
        );
    }
}
