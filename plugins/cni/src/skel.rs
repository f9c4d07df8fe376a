//! The plugin entry point: read the environment and stdin once, gate the command on the
//! config's version, dispatch, and print either the result or the error object.

use std::io::Read;

use crate::env::{Command, Env};
use crate::error::Error;
use crate::types::{parse_config, CniResult, ConfHeader};
use crate::version::CniVersion;

/// stdin above this is refused rather than read into memory (a conflist is a few KiB).
const MAX_STDIN: u64 = 1 << 20;

/// One invocation, as the runtime made it.
pub struct Invocation {
    pub env: Env,
    pub stdin: Vec<u8>,
    pub version: CniVersion,
    /// The network name (`name`), used to key state.
    pub network: String,
}

impl Invocation {
    /// The `prevResult` the runtime passed (CHECK, DEL, chained ADD), if any.
    pub fn prev_result(&self) -> Result<Option<CniResult>, Error> {
        #[derive(serde::Deserialize)]
        struct Prev {
            #[serde(rename = "prevResult")]
            prev_result: Option<serde_json::Value>,
        }
        let prev: Prev = parse_config(&self.stdin, "network config")?;
        prev.prev_result
            .map(|value| CniResult::from_value(value, "prevResult"))
            .transpose()
    }
}

pub trait Plugin {
    fn add(&self, inv: &Invocation) -> Result<CniResult, Error>;
    fn del(&self, inv: &Invocation) -> Result<(), Error>;
    fn check(&self, inv: &Invocation) -> Result<(), Error>;
    fn gc(&self, inv: &Invocation) -> Result<(), Error>;
    fn status(&self, inv: &Invocation) -> Result<(), Error>;
}

/// Runs the plugin and exits the process with the protocol's status.
pub fn run(plugin: &impl Plugin) -> ! {
    // A panic is a bug, but the runtime must still get an error object on stdout, never a
    // backtrace: keep the message and turn it into code 999.
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        dispatch(plugin, Env::from_process(), &mut std::io::stdin())
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Reply::Error(
            Error::Internal(format!("internal error, please report: {what}")),
            CniVersion::LATEST,
        )
    });
    std::process::exit(outcome.print())
}

pub enum Reply {
    Silent,
    Json(String),
    Error(Error, CniVersion),
}

impl Reply {
    /// Prints the reply on stdout and returns the exit status.
    pub fn print(self) -> i32 {
        match self {
            Reply::Silent => 0,
            Reply::Json(s) => {
                println!("{s}");
                0
            }
            Reply::Error(e, v) => {
                crate::log_error!("{e}");
                println!("{}", e.to_json(v));
                1
            }
        }
    }
}

pub fn dispatch(plugin: &impl Plugin, env: Result<Env, Error>, stdin: &mut impl Read) -> Reply {
    let env = match env {
        Ok(env) => env,
        Err(e) => return Reply::Error(e, CniVersion::LATEST),
    };
    if env.command == Command::Version {
        return Reply::Json(version_reply());
    }
    let inv = match read_invocation(env, stdin) {
        Ok(inv) => inv,
        Err((e, v)) => return Reply::Error(e, v),
    };
    let v = inv.version;
    let done = match inv.env.command {
        Command::Add => plugin.add(&inv).map(|r| Some(r.to_json(v).to_string())),
        Command::Del => plugin.del(&inv).map(|_| None),
        Command::Check => plugin.check(&inv).map(|_| None),
        Command::Gc => plugin.gc(&inv).map(|_| None),
        Command::Status => plugin.status(&inv).map(|_| None),
        Command::Version => unreachable!("answered above"),
    };
    match done {
        Ok(Some(json)) => Reply::Json(json),
        Ok(None) => Reply::Silent,
        Err(e) => Reply::Error(e, v),
    }
}

fn version_reply() -> String {
    serde_json::json!({
        "cniVersion": CniVersion::LATEST.as_str(),
        "supportedVersions": CniVersion::ALL.map(CniVersion::as_str),
    })
    .to_string()
}

fn read_invocation(env: Env, stdin: &mut impl Read) -> Result<Invocation, (Error, CniVersion)> {
    let latest = |e| (e, CniVersion::LATEST);
    let mut bytes = Vec::new();
    stdin
        .take(MAX_STDIN + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| latest(Error::io("read network config from stdin", e)))?;
    if bytes.len() as u64 > MAX_STDIN {
        return Err(latest(Error::decode(
            "network config on stdin",
            format!("it is larger than {MAX_STDIN} bytes"),
        )));
    }
    let header: ConfHeader = parse_config(&bytes, "network config").map_err(latest)?;
    let version: CniVersion = header.cni_version.parse().map_err(latest)?;
    let command = env.command;
    let needs = match command {
        Command::Check => (!version.has_check()).then_some(CniVersion::V0_4_0),
        Command::Gc | Command::Status => {
            (!version.has_gc_and_status()).then_some(CniVersion::V1_1_0)
        }
        _ => None,
    };
    if let Some(needs) = needs {
        return Err((
            Error::CommandNotInVersion {
                command: command.as_str(),
                needs,
                asked: version,
            },
            version,
        ));
    }
    validate_network_name(&header.name).map_err(|e| (e, version))?;
    Ok(Invocation {
        env,
        stdin: bytes,
        version,
        network: header.name,
    })
}

/// Network names key state on disk, so they follow the container id alphabet.
fn validate_network_name(name: &str) -> Result<(), Error> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "field name: {name:?} is not a valid network name: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<Command>>,
    }

    impl Plugin for Recorder {
        fn add(&self, inv: &Invocation) -> Result<CniResult, Error> {
            self.calls.borrow_mut().push(inv.env.command);
            Ok(CniResult::default())
        }
        fn del(&self, inv: &Invocation) -> Result<(), Error> {
            self.calls.borrow_mut().push(inv.env.command);
            Ok(())
        }
        fn check(&self, inv: &Invocation) -> Result<(), Error> {
            self.calls.borrow_mut().push(inv.env.command);
            Ok(())
        }
        fn gc(&self, inv: &Invocation) -> Result<(), Error> {
            self.calls.borrow_mut().push(inv.env.command);
            Ok(())
        }
        fn status(&self, inv: &Invocation) -> Result<(), Error> {
            self.calls.borrow_mut().push(inv.env.command);
            Err(Error::NotAvailable("store is read-only".into()))
        }
    }

    fn env(command: &str) -> Result<Env, Error> {
        let m: HashMap<&str, &str> = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "net1"),
            ("CNI_PATH", "/opt/cni/bin"),
        ]
        .into();
        Env::from_lookup(|k| m.get(k).map(|v| v.to_string()))
    }

    fn run(command: &str, conf: &str) -> (Reply, Vec<Command>) {
        let p = Recorder::default();
        let reply = dispatch(&p, env(command), &mut conf.as_bytes());
        (reply, p.calls.into_inner())
    }

    fn error_code(reply: &Reply) -> u32 {
        match reply {
            Reply::Error(e, _) => e.code(),
            _ => 0,
        }
    }

    #[test]
    fn version_lists_all_supported() {
        let (reply, calls) = run("VERSION", "");
        let Reply::Json(s) = reply else {
            panic!("no json")
        };
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["supportedVersions"].as_array().unwrap().len(), 5);
        assert!(calls.is_empty());
    }

    #[test]
    fn add_answers_in_the_asked_version() {
        let (reply, calls) = run("ADD", r#"{"cniVersion":"0.3.1","name":"n"}"#);
        let Reply::Json(s) = reply else {
            panic!("no json")
        };
        assert!(s.contains(r#""cniVersion":"0.3.1""#), "{s}");
        assert_eq!(calls, [Command::Add]);
    }

    #[test]
    fn version_gates() {
        for (cmd, ver, code) in [
            ("CHECK", "0.3.1", 1),
            ("CHECK", "0.4.0", 0),
            ("GC", "1.0.0", 1),
            ("STATUS", "1.0.0", 1),
            ("STATUS", "1.1.0", 50),
            ("ADD", "0.2.0", 1),
            ("ADD", "2.0.0", 1),
        ] {
            let conf = format!(r#"{{"cniVersion":"{ver}","name":"n"}}"#);
            assert_eq!(error_code(&run(cmd, &conf).0), code, "{cmd} {ver}");
        }
    }

    #[test]
    fn malformed_oversized_and_nameless_configs_are_refused_before_the_plugin_runs() {
        let big = format!(
            r#"{{"cniVersion":"1.0.0","name":"n","x":"{}"}}"#,
            "a".repeat(2 << 20)
        );
        for (conf, code) in [
            ("{", 6),
            ("", 6),
            (r#"{"name":"n"}"#, 7),
            (r#"{"cniVersion":"1.0.0","name":"../x"}"#, 7),
            (r#"{"cniVersion":"1.0.0"}"#, 7),
            (big.as_str(), 6),
        ] {
            let (reply, calls) = run("ADD", conf);
            assert_eq!(error_code(&reply), code, "{}", &conf[..conf.len().min(40)]);
            assert!(calls.is_empty());
        }
    }
}
