//! The `CNI_*` environment: parsed and validated once, then trusted.

use std::path::PathBuf;

use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Gc => "GC",
            Command::Status => "STATUS",
            Command::Version => "VERSION",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            "VERSION" => Command::Version,
            other => {
                return Err(Error::InvalidEnv {
                    name: "CNI_COMMAND",
                    reason: format!(
                        "unknown command {other:?}: expected ADD, DEL, CHECK, GC, STATUS or VERSION"
                    ),
                })
            }
        })
    }

    /// Which variables the spec makes mandatory for this command.
    fn needs(self) -> Needs {
        match self {
            Command::Add | Command::Check => Needs {
                attachment: true,
                netns: true,
                path: true,
            },
            Command::Del => Needs {
                attachment: true,
                netns: false,
                path: true,
            },
            Command::Gc | Command::Status => Needs {
                attachment: false,
                netns: false,
                path: true,
            },
            Command::Version => Needs {
                attachment: false,
                netns: false,
                path: false,
            },
        }
    }
}

struct Needs {
    attachment: bool,
    netns: bool,
    path: bool,
}

/// The runtime's side of one invocation.
#[derive(Debug, Clone)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// Empty when the runtime sent none (allowed for DEL, GC, STATUS).
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs, in order.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

impl Env {
    pub fn from_process() -> Result<Self, Error> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Parses from any lookup, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let var = |k: &str| get(k).unwrap_or_default();
        let command_str = var("CNI_COMMAND");
        if command_str.is_empty() {
            return Err(missing("CNI_COMMAND"));
        }
        let command = Command::parse(&command_str)?;
        let needs = command.needs();
        let env = Env {
            command,
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: parse_args(&var("CNI_ARGS"))?,
            path: std::env::split_paths(&var("CNI_PATH"))
                .filter(|p| !p.as_os_str().is_empty())
                .collect(),
        };
        if needs.attachment {
            validate_container_id(&env.container_id)?;
            validate_ifname(&env.ifname)?;
        }
        if needs.netns && env.netns.is_empty() {
            return Err(missing("CNI_NETNS"));
        }
        if needs.path && env.path.is_empty() {
            return Err(missing("CNI_PATH"));
        }
        Ok(env)
    }

    /// A `CNI_ARGS` value, e.g. `K8S_POD_NAME`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn missing(name: &'static str) -> Error {
    Error::InvalidEnv {
        name,
        reason: "is required for this command but missing or empty".into(),
    }
}

fn parse_args(raw: &str) -> Result<Vec<(String, String)>, Error> {
    raw.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(Error::InvalidEnv {
                name: "CNI_ARGS",
                reason: format!("{kv:?} is not KEY=VALUE; pairs are separated by ';'"),
            }),
        })
        .collect()
}

/// Container ids become file names in the IPAM store, so only the spec's safe alphabet passes.
pub fn validate_container_id(id: &str) -> Result<(), Error> {
    let bad = |reason: String| Error::InvalidEnv {
        name: "CNI_CONTAINERID",
        reason,
    };
    let mut chars = id.chars();
    match chars.next() {
        None => return Err(missing("CNI_CONTAINERID")),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(bad(format!("{id:?} must start with a letter or digit")))
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        return Err(bad(format!(
            "{id:?} contains {c:?}; only letters, digits, '_', '.' and '-' are allowed"
        )));
    }
    Ok(())
}

/// The kernel's rules for an interface name (IFNAMSIZ and dev_valid_name).
pub fn validate_ifname(name: &str) -> Result<(), Error> {
    let bad = |reason: String| Error::InvalidEnv {
        name: "CNI_IFNAME",
        reason,
    };
    if name.is_empty() {
        return Err(missing("CNI_IFNAME"));
    }
    if name.len() > 15 {
        return Err(bad(format!(
            "{name:?} is {} bytes long; interface names have at most 15",
            name.len()
        )));
    }
    if name == "." || name == ".." {
        return Err(bad(format!("{name:?} is not a valid interface name")));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        return Err(bad(format!(
            "{name:?} contains '/', ':', NUL or whitespace, which interface names may not"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, Error> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_lookup(|k| m.get(k).cloned())
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "net1"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    #[test]
    fn parses_a_full_add() {
        let mut pairs = ADD.to_vec();
        pairs.push((
            "CNI_ARGS",
            "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IgnoreUnknown=1",
        ));
        let e = env(&pairs).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(e.path.len(), 2);
        assert_eq!(e.arg("K8S_POD_NAME"), Some("p"));
    }

    #[test]
    fn every_missing_variable_is_code_4_naming_it() {
        for drop in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
        ] {
            let pairs: Vec<_> = ADD.iter().copied().filter(|(k, _)| *k != drop).collect();
            let err = env(&pairs).unwrap_err();
            assert_eq!(err.code(), 4, "{drop}");
            assert!(err.to_string().contains(drop), "{err}");
        }
    }

    #[test]
    fn del_needs_no_netns() {
        let pairs: Vec<_> = ADD
            .iter()
            .map(|&(k, v)| {
                if k == "CNI_COMMAND" {
                    (k, "DEL")
                } else {
                    (k, v)
                }
            })
            .filter(|(k, _)| *k != "CNI_NETNS")
            .collect();
        assert!(env(&pairs).is_ok());
    }

    #[test]
    fn hostile_names_are_refused() {
        for id in ["../etc", "a/b", "a\0b", "-a", ".hidden", "a b"] {
            assert_eq!(validate_container_id(id).unwrap_err().code(), 4, "{id:?}");
        }
        for name in ["a/b", "1234567890123456", "..", "a:b", "a b", "x\0"] {
            assert_eq!(validate_ifname(name).unwrap_err().code(), 4, "{name:?}");
        }
        validate_ifname("enp11s0f0np0").unwrap();
    }

    #[test]
    fn unknown_command_and_bad_args_are_code_4() {
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code(), 4);
        let mut pairs = ADD.to_vec();
        pairs.push(("CNI_ARGS", "novalue"));
        assert_eq!(env(&pairs).unwrap_err().code(), 4);
    }
}
