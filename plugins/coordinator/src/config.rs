//! The coordinator's config, with spiderpool's coordinator keys. Parsed once into typed values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cni::types::parse_config;
use cni::{log_info, Error};
use serde::Deserialize;
use serde_json::Value;

/// The detection budget when the config sets none: 3 tries of 100 ms.
const DEFAULT_RETRIES: u32 = 3;
const DEFAULT_WAIT: Duration = Duration::from_millis(100);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    pod_default_cni_nic: Option<String>,
    pod_default_route_nic: Option<String>,
    tune_pod_routes: Option<bool>,
    #[serde(rename = "podRPFilter")]
    pod_rp_filter: Option<i32>,
    detect_gateway: Option<bool>,
    #[serde(rename = "detectIPConflict")]
    detect_ip_conflict: Option<bool>,
    #[serde(default)]
    detect_options: DetectOptions,
    #[serde(default)]
    log_options: LogOptions,
    /// Standard keys and everything we do not implement.
    #[serde(flatten)]
    rest: BTreeMap<String, Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DetectOptions {
    retries: Option<u32>,
    interval: Option<DurationValue>,
    timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogOptions {
    log_file_path: Option<PathBuf>,
    #[serde(default)]
    log_level: String,
}

/// spiderpool writes durations as Go strings ("100ms", "1s"); a bare number is milliseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Millis(u64),
    Text(String),
}

/// How hard to look for an answer: `retries` requests, each waiting `timeout` for the reply,
/// sent `interval` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub retries: u32,
    pub interval: Duration,
    pub timeout: Duration,
}

impl std::fmt::Display for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tries x {} ms",
            self.retries,
            self.timeout.max(self.interval).as_millis()
        )
    }
}

#[derive(Debug)]
pub struct CoordinatorConf {
    /// The cluster network's NIC: its default route stays in the main table.
    pub pod_default_cni_nic: String,
    /// Who owns the main default route when the pod has it (see `main_default`).
    pub pod_default_route_nic: Option<String>,
    pub tune_pod_routes: bool,
    /// rp_filter for the pod's NICs; None (-1): leave it.
    pub pod_rp_filter: Option<u8>,
    pub detect_gateway: bool,
    pub detect_ip_conflict: bool,
    pub budget: Budget,
}

/// Keys of the CNI contract and of spiderpool's coordinator that need no handling here.
const KNOWN_ELSEWHERE: [&str; 6] = [
    "cniVersion",
    "name",
    "type",
    "prevResult",
    "runtimeConfig",
    "args",
];

impl CoordinatorConf {
    pub fn parse(stdin: &[u8]) -> Result<CoordinatorConf, Error> {
        let w: Wire = parse_config(stdin, "coordinator config")?;
        cni::log::init_from_config(
            w.log_options.log_file_path.as_deref(),
            &w.log_options.log_level,
            10 << 20,
            "coordinator",
        );
        for key in w
            .rest
            .keys()
            .filter(|k| !KNOWN_ELSEWHERE.contains(&k.as_str()))
        {
            log_info!("coordinator: {key} is not implemented here: ignored");
        }
        let pod_rp_filter = match w.pod_rp_filter.unwrap_or(0) {
            -1 => None,
            v @ 0..=2 => Some(v as u8),
            v => {
                return Err(Error::InvalidConfig(format!(
                    "field podRPFilter: {v} is not a valid rp_filter: use 0 (off), 1 (strict), \
                     2 (loose) or -1 (leave the pod's setting)"
                )))
            }
        };
        let options = &w.detect_options;
        let budget =
            Budget {
                retries: match options.retries.unwrap_or(DEFAULT_RETRIES) {
                    0 => return Err(Error::InvalidConfig(
                        "field detectOptions.retries: 0 would never send a probe: use 1 or more"
                            .into(),
                    )),
                    n => n,
                },
                interval: duration("detectOptions.interval", options.interval.as_ref())?,
                timeout: duration("detectOptions.timeout", options.timeout.as_ref())?,
            };
        Ok(CoordinatorConf {
            pod_default_cni_nic: w.pod_default_cni_nic.unwrap_or_else(|| "eth0".into()),
            pod_default_route_nic: w.pod_default_route_nic.filter(|n| !n.is_empty()),
            tune_pod_routes: w.tune_pod_routes.unwrap_or(true),
            pod_rp_filter,
            detect_gateway: w.detect_gateway.unwrap_or(true),
            detect_ip_conflict: w.detect_ip_conflict.unwrap_or(false),
            budget,
        })
    }
}

fn duration(field: &str, value: Option<&DurationValue>) -> Result<Duration, Error> {
    let parsed = match value {
        None => return Ok(DEFAULT_WAIT),
        Some(DurationValue::Millis(ms)) => Some(Duration::from_millis(*ms)),
        Some(DurationValue::Text(text)) => parse_go_duration(text),
    };
    match parsed {
        Some(d) if !d.is_zero() && d <= Duration::from_secs(60) => Ok(d),
        _ => Err(Error::InvalidConfig(format!(
            "field {field}: {} is not a duration between 1ms and 60s: write e.g. \"100ms\" or \"1s\"",
            match value {
                Some(DurationValue::Millis(ms)) => ms.to_string(),
                Some(DurationValue::Text(t)) => format!("{t:?}"),
                None => unreachable!("defaults return early"),
            }
        ))),
    }
}

/// "100ms", "1s", "1.5s", "500us": the units spiderpool's configs use.
fn parse_go_duration(text: &str) -> Option<Duration> {
    // Not `is_ascii_alphabetic`: the unit "µs" starts with a non-ASCII letter.
    let split = text.find(char::is_alphabetic)?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        // Go accepts the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    // `try_`: "1e300s" is a finite float but no Duration; `from_secs_f64` would panic.
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<CoordinatorConf, Error> {
        CoordinatorConf::parse(json.as_bytes())
    }

    #[test]
    fn defaults_follow_the_issue() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"n","type":"coordinator"}"#).unwrap();
        assert_eq!(c.pod_default_cni_nic, "eth0");
        assert_eq!(c.pod_default_route_nic, None);
        assert!(c.tune_pod_routes && c.detect_gateway && !c.detect_ip_conflict);
        assert_eq!(c.pod_rp_filter, Some(0));
        assert_eq!(
            c.budget,
            Budget {
                retries: 3,
                interval: DEFAULT_WAIT,
                timeout: DEFAULT_WAIT
            }
        );
    }

    #[test]
    fn spiderpool_duration_strings_and_numbers_are_read() {
        let c = parse(
            r#"{"cniVersion":"1.0.0","name":"n","detectOptions":{"retries":5,"interval":"10ms","timeout":250},"mode":"auto"}"#,
        )
        .unwrap();
        assert_eq!(c.budget.retries, 5);
        assert_eq!(c.budget.interval, Duration::from_millis(10));
        assert_eq!(c.budget.timeout, Duration::from_millis(250));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn wrong_types_and_values_are_code_7_naming_the_field() {
        for (json, field) in [
            (
                r#"{"cniVersion":"1.0.0","name":"n","detectGateway":"yes"}"#,
                "detectGateway",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","podRPFilter":7}"#,
                "podRPFilter",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","detectOptions":{"timeout":"soon"}}"#,
                "detectOptions.timeout",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","detectOptions":{"retries":0}}"#,
                "detectOptions.retries",
            ),
        ] {
            let err = parse(json).unwrap_err();
            assert_eq!(err.code(), 7, "{json}");
            assert!(err.to_string().contains(field), "{err}");
        }
    }
}

#[cfg(test)]
mod fuzz;
