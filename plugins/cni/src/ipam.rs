//! IPAM delegation: run the plugin named by `ipam.type` from CNI_PATH with our environment
//! (the runtime's `CNI_*`, with `CNI_COMMAND` set to the command) and stdin, and read back
//! its result or error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};

use serde::Deserialize;

use crate::env::Command;
use crate::error::Error;
use crate::types::CniResult;

/// An IPAM plugin found on CNI_PATH: looked up once, when the config is read, so that a
/// missing plugin is refused before anything is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipam {
    /// `ipam.type`.
    name: String,
    /// The first executable of that name in CNI_PATH.
    path: PathBuf,
}

impl Ipam {
    /// The first executable named `plugin` in CNI_PATH.
    pub fn find(plugin: &str, path: &[PathBuf]) -> Result<Ipam, Error> {
        if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
            return Err(Error::InvalidConfig(format!(
                "ipam.type {plugin:?} is not a plugin name: give the binary's file name, e.g. \"spiderpool\""
            )));
        }
        let found = path
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|p| is_executable(p))
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "ipam.type {plugin:?}: no executable of that name in CNI_PATH {}: install it there or fix the type",
                    std::env::join_paths(path).unwrap_or_default().to_string_lossy()
                ))
            })?;
        Ok(Ipam {
            name: plugin.to_owned(),
            path: found,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn add(&self, stdin: &[u8]) -> Result<CniResult, Error> {
        let out = self.exec(Command::Add, stdin)?;
        let what = format!("result of IPAM plugin {}", self.name);
        let value: serde_json::Value =
            serde_json::from_slice(&out).map_err(|e| Error::decode(&what, e))?;
        CniResult::from_value(value, &what)
    }

    /// Runs a command whose success carries no result (DEL, CHECK, GC, STATUS).
    pub fn run(&self, command: Command, stdin: &[u8]) -> Result<(), Error> {
        self.exec(command, stdin).map(drop)
    }

    fn exec(&self, command: Command, stdin: &[u8]) -> Result<Vec<u8>, Error> {
        self.start(command, stdin)?.finish()
    }

    /// Starts the plugin and hands it `stdin`, so the caller can work while it runs (DEL
    /// removes the link meanwhile); [`Running::finish`] waits for its answer.
    pub fn start(&self, command: Command, stdin: &[u8]) -> Result<Running<'_>, Error> {
        let mut child = Process::new(&self.path)
            .env("CNI_COMMAND", command.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io(format!("start IPAM plugin {}", self.path.display()), e))?;
        // A plugin that exits without reading all of stdin closes the pipe; its exit status
        // and stdout still tell what happened, so a write error here is not the story.
        let _ = child.stdin.take().expect("piped stdin").write_all(stdin);
        Ok(Running {
            ipam: self,
            command,
            child,
        })
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// An IPAM plugin started by [`Ipam::start`] and not yet waited for.
pub struct Running<'a> {
    ipam: &'a Ipam,
    command: Command,
    child: Child,
}

impl Running<'_> {
    /// Waits for the plugin: its stdout on success, its CNI error otherwise.
    pub fn finish(self) -> Result<Vec<u8>, Error> {
        let Running {
            ipam,
            command,
            child,
        } = self;
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io(format!("wait for IPAM plugin {}", ipam.path.display()), e))?;
        let plugin = &ipam.name;
        if out.status.success() {
            return Ok(out.stdout);
        }
        #[derive(Deserialize)]
        struct Wire {
            code: u32,
            #[serde(default)]
            msg: String,
            #[serde(default)]
            details: String,
        }
        match serde_json::from_slice::<Wire>(&out.stdout) {
            Ok(w) => Err(Error::Delegated {
                plugin: plugin.to_string(),
                code: w.code,
                msg: w.msg,
                details: w.details,
            }),
            Err(_) => Err(Error::io(
                format!(
                    "IPAM plugin {plugin} {command:?} failed ({}) without a CNI error: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout).trim()
                ),
                std::io::Error::other("no error object on stdout"),
            )),
        }
    }
}
