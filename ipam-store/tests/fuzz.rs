//! Property tests of what the plugin reads from operators: SpiderIPPool manifests (YAML and
//! JSON, free text and structured documents) and the `ips` range syntax. Fed anything, the
//! parsers return a value or an error naming the file, without panicking and in bounded time;
//! what they accept is sound (every allocatable address inside the pool's subnet).
//!
//! 2,000 cases per property in CI (a few seconds); set `PROPTEST_CASES` for a long run, e.g.
//! `PROPTEST_CASES=1000000 cargo test --release -p ipam-store --test fuzz`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipam_store::manifest::{parse, MAX_MANIFEST_BYTES};
use ipam_store::range::parse_entry;
use ipam_store::{Family, Manifest, ManifestError};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

/// Far above what a few KiB of input takes: exceeding it means time grows faster than the
/// input (the flow-nesting bound in `manifest` exists because it once did).
const SLOW: Duration = Duration::from_secs(1);

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Parses with a time bound, checking what any outcome must satisfy.
fn parse_checked(text: &str, source: &str) -> Result<Option<Manifest>, TestCaseError> {
    let started = Instant::now();
    let parsed = parse(text, source);
    let took = started.elapsed();
    prop_assert!(took < SLOW, "{} bytes took {took:?}", text.len());
    match parsed {
        Ok(manifest) => {
            for pool in &manifest {
                let subnet = pool.subnet();
                let family = if subnet.addr().is_ipv4() {
                    Family::V4
                } else {
                    Family::V6
                };
                prop_assert_eq!(pool.family(), family);
                prop_assert_eq!(pool.allocatable().family(), family);
                prop_assert_eq!(u128::from(pool.size()), pool.allocatable().len());
                for (first, last) in pool.allocatable().ranges() {
                    prop_assert!(
                        subnet.contains(&first) && subnet.contains(&last),
                        "{pool:?}"
                    );
                }
            }
            Ok(Some(manifest))
        }
        Err(e) => {
            // Every refusal tells the operator which file.
            prop_assert!(e.to_string().contains(source), "{e}");
            Ok(None)
        }
    }
}

/// Pieces of YAML and of the SpiderIPPool vocabulary, glued at random: text that gets deep
/// into the YAML parser and the manifest reader, unlike uniformly random characters.
fn yamlish() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "apiVersion: spiderpool.spidernet.io/v2beta1\n",
        "kind: SpiderIPPool\n",
        "kind: List\n",
        "items:\n",
        "metadata:\n",
        "  name: p1\n",
        "  name: P_1\n",
        "spec:\n",
        "  subnet: ",
        "172.16.0.0/16",
        "172.16.11.0/16",
        "fd00::/120",
        "10.0.0.0/33",
        "  ips:\n",
        "    - ",
        "  excludeIPs: ",
        "  gateway: ",
        "  routes:\n",
        "    - dst: ",
        "      gw: ",
        "  ipVersion: ",
        "  disable: ",
        "  default: ",
        "172.16.11.1-172.16.11.200",
        "10.0.0.9-10.0.0.1",
        "fd00::1-fd00::ff",
        "0.0.0.0-255.255.255.255",
        "::-ffff::",
        "4",
        "6",
        "true",
        "~",
        "null",
        "---\n",
        "...\n",
        "\n",
        "  ",
        "- ",
        ": ",
        ", ",
        "[",
        "]",
        "{",
        "}",
        "&a ",
        "*a",
        "!!str ",
        "!!binary ",
        "? ",
        "|\n",
        ">-\n",
        "'",
        "\"",
        "#",
        "\t",
        "\\",
        "1e309",
        "-1",
        "0x1F",
        "\u{feff}",
        "\u{0}",
        "é",
    ]);
    prop::collection::vec(tokens, 0..64).prop_map(|t| t.concat())
}

fn ipv4() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        (0u32..1024).prop_map(|n| IpAddr::V4(Ipv4Addr::from(0xac10_0000 + n))),
    ]
}

fn ipv6() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
        (0u128..1024).prop_map(|n| IpAddr::V6(Ipv6Addr::from((0xfd00u128 << 112) + n))),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![ipv4(), ipv6()]
}

/// A subnet and addresses near it: inside mostly, sometimes past its end.
#[derive(Clone, Copy, Debug)]
struct Net {
    cidr: &'static str,
    base: IpAddr,
    /// Offsets drawn go a little past this, to overrun small subnets now and then.
    size: u32,
}

impl Net {
    fn at(self, offset: u32) -> IpAddr {
        match self.base {
            IpAddr::V4(b) => IpAddr::V4(Ipv4Addr::from(u32::from(b).wrapping_add(offset))),
            IpAddr::V6(b) => IpAddr::V6(Ipv6Addr::from(u128::from(b) + u128::from(offset))),
        }
    }
}

fn net() -> impl Strategy<Value = Net> {
    let net = |cidr: &'static str, base: &str, size| Net {
        cidr,
        base: base.parse().unwrap(),
        size,
    };
    prop::sample::select(vec![
        net("172.16.0.0/16", "172.16.0.0", 4096),
        // The seed's spelling, host bits set.
        net("172.16.11.0/16", "172.16.0.0", 4096),
        net("172.16.0.0/22", "172.16.0.0", 1024),
        net("fd00::/120", "fd00::", 256),
        net("fd00::/64", "fd00::", 4096),
    ])
}

/// An `ips` / `excludeIPs` entry for `net`: mostly a range or address in it (a /22 or a /120
/// is overrun now and then), sometimes anything.
fn entry(net: Net) -> BoxedStrategy<Value> {
    let reach = net.size + net.size / 16;
    prop_oneof![
        24 => (0..reach, 0..net.size / 8, any::<bool>()).prop_map(move |(at, len, spaced)| {
            let (a, b) = (net.at(at), net.at(at + len));
            json!(if spaced { format!("{a} - {b}") } else { format!("{a}-{b}") })
        }),
        8 => (0..reach).prop_map(move |at| json!(net.at(at).to_string())),
        1 => (ip(), ip()).prop_map(|(a, b)| json!(format!("{a}-{b}"))),
        1 => any::<String>().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
    ]
    .boxed()
}

/// One document: mostly a coherent SpiderIPPool (which then must give a sound pool), with
/// any field now and then wrong or of the wrong type, or an object of another kind.
fn document() -> BoxedStrategy<Value> {
    let name = prop_oneof![
        12 => "[a-z][a-z0-9-]{0,10}",
        1 => any::<String>(),
    ];
    let spec = net().prop_flat_map(|net| {
        let subnet = prop_oneof![
            12 => Just(json!(net.cidr)),
            1 => (ip(), 0u8..140).prop_map(|(a, len)| json!(format!("{a}/{len}"))),
            1 => any::<bool>().prop_map(Value::from),
        ];
        let route = (0..net.size).prop_map(move |gw| {
            let dst = if net.base.is_ipv4() {
                "10.20.0.0/16"
            } else {
                "fd01::/64"
            };
            json!({"dst": dst, "gw": net.at(gw).to_string()})
        });
        let version = if net.base.is_ipv4() { 4 } else { 6 };
        (
            subnet,
            prop::collection::vec(entry(net), 0..4),
            prop::collection::vec(entry(net), 0..3),
            proptest::option::of((0..net.size).prop_map(move |g| net.at(g).to_string())),
            prop::collection::vec(route, 0..2),
            prop::sample::select(vec![
                json!(null),
                json!(null),
                json!(null),
                json!(version),
                json!(version),
                json!(version),
                json!(10 - version),
                json!("4"),
            ]),
            any::<bool>(),
            any::<bool>(),
        )
    });
    let spec = spec.prop_map(
        |(subnet, ips, exclude, gateway, routes, version, disable, default)| {
            json!({
                "subnet": subnet, "ips": ips, "excludeIPs": exclude, "gateway": gateway,
                "routes": routes, "ipVersion": version, "disable": disable, "default": default,
            })
        },
    );
    let kind = prop::sample::select(vec![
        "SpiderIPPool",
        "SpiderIPPool",
        "SpiderIPPool",
        "SpiderMultusConfig",
    ]);
    let api = prop_oneof![12 => Just("spiderpool.spidernet.io/v2beta1"), 1 => Just("v1")];
    (kind, api, name, spec)
        .prop_map(|(kind, api, name, spec)| {
            json!({"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec})
        })
        .boxed()
}

/// How many pools a successful parse of `docs` must hold.
fn pools_in(docs: &[Value]) -> usize {
    docs.iter().filter(|d| d["kind"] == "SpiderIPPool").count()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_text_is_read_or_refused_naming_the_file(text in any::<String>()) {
        parse_checked(&text, "pools.yaml")?;
        parse_checked(&text, "pools.json")?;
    }

    #[test]
    fn yaml_ish_text_is_read_or_refused_in_bounded_time(text in yamlish()) {
        parse_checked(&text, "pools.yaml")?;
    }

    #[test]
    fn structured_documents_give_sound_pools_or_a_named_refusal(
        docs in prop::collection::vec(document(), 1..4),
    ) {
        let yaml: String = docs
            .iter()
            .map(|d| format!("---\n{}", yaml_serde::to_string(d).unwrap()))
            .collect();
        let json = Value::Array(docs.clone()).to_string();
        let from_yaml = parse_checked(&yaml, "pools.yaml")?;
        let from_json = parse_checked(&json, "pools.json")?;
        // The two spellings of the same documents mean the same pools.
        prop_assert_eq!(from_yaml.is_some(), from_json.is_some());
        if let (Some(a), Some(b)) = (from_yaml, from_json) {
            prop_assert_eq!(a.pools.len(), pools_in(&docs));
            prop_assert_eq!(a.pools, b.pools);
        }
    }

    #[test]
    fn any_range_entry_is_read_sound_or_refused(text in any::<String>()) {
        if let Ok((first, last)) = parse_entry(&text) {
            prop_assert_eq!(first.is_ipv4(), last.is_ipv4());
            prop_assert!(first <= last);
        }
    }

    #[test]
    fn well_formed_ranges_read_back_exactly(a in ip(), b in ip(), pad in "[ \t]{0,2}") {
        let entry = format!("{pad}{a}{pad}-{pad}{b}{pad}");
        let same_family = a.is_ipv4() == b.is_ipv4();
        match parse_entry(&entry) {
            Ok(range) => prop_assert_eq!(range, (a, b)),
            Err(e) => prop_assert!(!same_family || a > b, "{entry:?}: {e:?}"),
        }
        prop_assert_eq!(parse_entry(&a.to_string()), Ok((a, a)));
    }
}

/// Documents built to be expensive: each must be read or refused within the bound, at the
/// largest size a manifest file may have.
#[test]
fn hostile_manifests_of_the_largest_size_are_bounded() {
    let size = MAX_MANIFEST_BYTES as usize;
    let fill = |unit: &str| unit.repeat(size / unit.len());
    let deepest = format!("- {}{}\n", "{a: ".repeat(127), "}".repeat(127));
    let laughs: String = std::iter::once(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n".to_owned(),
    )
    .chain((b'b'..=b'j').map(|c| {
        let prev = char::from(c - 1);
        let c = char::from(c);
        format!("{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n")
    }))
    .collect();
    for (what, text, refused) in [
        // Took a minute at 400 KB before the flow-depth bound; hours at 4 MiB.
        (
            "unclosed flow mappings",
            fill("{a: "),
            Some("nest deeper than 128"),
        ),
        (
            "unclosed flow sequences",
            fill("["),
            Some("nest deeper than 128"),
        ),
        (
            "the deepest nesting allowed, repeated",
            deepest.repeat(size / deepest.len()),
            None,
        ),
        ("a billion laughs", laughs, Some("repetition limit")),
        (
            "a long flow sequence",
            format!("[{}]", fill("1,")),
            Some("not a Kubernetes object"),
        ),
        ("a long block mapping", fill("? a\n: b\n"), None),
        ("documents only", fill("---\n"), None),
        ("aliases", format!("a: &a [1]\nb: [{}]", fill("*a, ")), None),
    ] {
        let started = Instant::now();
        let parsed = parse(&text, "hostile.yaml");
        let took = started.elapsed();
        // Seconds, not minutes: a 4 MiB file of the worst allowed shape takes about 2 s in a
        // release build (the tests' build); a debug build is several times slower.
        let bound = Duration::from_secs(if cfg!(debug_assertions) { 60 } else { 10 });
        assert!(took < bound, "{what}: {took:?}");
        match (parsed, refused) {
            (Err(e), Some(fragment)) => assert!(e.to_string().contains(fragment), "{what}: {e}"),
            (Ok(manifest), None) => assert!(manifest.pools.is_empty(), "{what}"),
            (Err(ManifestError::Syntax { .. }), None) => {}
            (other, _) => panic!("{what}: unexpected {other:?}"),
        }
    }
}
