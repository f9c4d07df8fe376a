//! Property tests of the spiderpool `ipam` section parser: any stdin and configs that are
//! almost right give a config or an error with a documented code, never a panic. 2,000 cases
//! per property; `PROPTEST_CASES` for a long run (see `cni::fuzzing`).

use cni::fuzzing::{any_bytes, any_json, check_codes, config, field, mute_logs};
use cni::fuzzing::{nasty_string, network_config, object};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::IpamConf;

/// cannot decode (6), invalid config (7).
const CODES: [u32; 2] = [6, 7];

fn parse(stdin: &[u8]) -> Result<IpamConf, cni::Error> {
    mute_logs();
    IpamConf::parse(stdin)
}

fn seed() -> Value {
    json!({"cniVersion": "1.0.0", "name": "gpu1-macvlan", "type": "macvlan",
           "ipam": {"type": "spiderpool", "default_ipv4_ippool": ["gpu1-net11"],
                    "ippool_dir": "/etc/cni/net.d/spiderpool/ippools", "clean_gateway": false}})
}

fn pool_list() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => prop::collection::vec(nasty_string(), 0..4).prop_map(|names| json!(names)),
        1 => field(vec![json!("gpu1-net11"), json!([]), json!([1, 2])]),
    ]
    .boxed()
}

/// Every key the parser reads, spiderpool's ignored ones, and unknown ones.
fn ipam_section() -> BoxedStrategy<Value> {
    let path = || {
        field(vec![
            json!("/var/lib/cni/spiderpool"),
            json!(""),
            json!("relative/dir"),
        ])
    };
    object(vec![
        ("type", field(vec![json!("spiderpool")])),
        ("default_ipv4_ippool", pool_list()),
        ("default_ipv6_ippool", pool_list()),
        ("ippool_dir", path()),
        ("data_dir", path()),
        ("log_level", field(vec![json!("debug"), json!("WARNING")])),
        (
            "log_file_max_size",
            field(vec![json!(0), json!(100), json!(u64::MAX), json!(-1)]),
        ),
        ("clean_gateway", field(vec![json!(true), json!(false)])),
        ("log_file_max_count", any_json()),
        ("match_master_subnet", any_json()),
        ("ipam_unix_socket_path", any_json()),
    ])
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
    fn near_valid_configs_give_a_config_or_a_documented_code(
        value in network_config("macvlan", vec![("ipam", ipam_section())]),
    ) {
        check_codes(parse(value.to_string().as_bytes()), &CODES)?;
    }
}
