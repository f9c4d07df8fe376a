//! IPAM delegation: run the plugin named by `ipam.type` from CNI_PATH with our environment
//! and stdin, and read back its result or error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};

use serde::Deserialize;

use crate::env::{Command, Env};
use crate::error::Error;
use crate::types::CniResult;

/// The first executable named `plugin` in CNI_PATH.
pub fn find(plugin: &str, path: &[PathBuf]) -> Result<PathBuf, Error> {
    if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(Error::InvalidConfig(format!(
            "ipam.type {plugin:?} is not a plugin name: give the binary's file name, e.g. \"spiderpool\""
        )));
    }
    path.iter()
        .map(|dir| dir.join(plugin))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            Error::InvalidConfig(format!(
                "ipam.type {plugin:?}: no executable of that name in CNI_PATH {}: install it there or fix the type",
                std::env::join_paths(path).unwrap_or_default().to_string_lossy()
            ))
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

pub fn add(env: &Env, plugin: &str, stdin: &[u8]) -> Result<CniResult, Error> {
    let out = exec(env, plugin, Command::Add, stdin)?;
    let value: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| Error::decode(format!("result of IPAM plugin {plugin}"), e))?;
    CniResult::from_value(value, &format!("result of IPAM plugin {plugin}"))
}

/// Runs a command whose success carries no result (DEL, CHECK, GC, STATUS).
pub fn run(env: &Env, plugin: &str, command: Command, stdin: &[u8]) -> Result<(), Error> {
    exec(env, plugin, command, stdin).map(drop)
}

fn exec(env: &Env, plugin: &str, command: Command, stdin: &[u8]) -> Result<Vec<u8>, Error> {
    start(env, plugin, command, stdin)?.finish()
}

/// An IPAM plugin started by [`start`] and not yet waited for.
pub struct Running<'a> {
    plugin: &'a str,
    command: Command,
    path: PathBuf,
    child: Child,
}

/// Starts the IPAM plugin and hands it `stdin`, so the caller can work while it runs (DEL
/// removes the link meanwhile); [`Running::finish`] waits for its answer.
pub fn start<'a>(
    env: &Env,
    plugin: &'a str,
    command: Command,
    stdin: &[u8],
) -> Result<Running<'a>, Error> {
    let path = find(plugin, &env.path)?;
    let mut child = Process::new(&path)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::io(format!("start IPAM plugin {}", path.display()), e))?;
    // A plugin that exits without reading all of stdin closes the pipe; its exit status
    // and stdout still tell what happened, so a write error here is not the story.
    let _ = child.stdin.take().expect("piped stdin").write_all(stdin);
    Ok(Running {
        plugin,
        command,
        path,
        child,
    })
}

impl Running<'_> {
    /// Waits for the plugin: its stdout on success, its CNI error otherwise.
    pub fn finish(self) -> Result<Vec<u8>, Error> {
        let Running {
            plugin,
            command,
            path,
            child,
        } = self;
        let out = child
            .wait_with_output()
            .map_err(|e| Error::io(format!("wait for IPAM plugin {}", path.display()), e))?;
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
