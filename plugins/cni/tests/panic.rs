//! A panic inside a plugin must reach the runtime as a CNI error object on stdout (code 999)
//! with a non-zero exit, never as a Rust backtrace. No input the plugins accept is known to
//! panic (the fuzz tests look for one), so a stand-in plugin that does is run through the real
//! entry point, `skel::run`, which exits its process: in a child process of this test binary.

use std::io::Write;
use std::process::{Command, Stdio};

use cni::{CniResult, Error, Invocation, Plugin};
use serde_json::Value;

/// Set in the child's environment: the one place where [`child`] acts.
const CHILD: &str = "CNI_PANIC_TEST_CHILD";

struct Panicking;

impl Plugin for Panicking {
    fn add(&self, _: &Invocation) -> Result<CniResult, Error> {
        // A `&str` payload.
        panic!("boom in ADD");
    }
    fn del(&self, inv: &Invocation) -> Result<(), Error> {
        // A formatted (`String`) payload, as most real panics carry.
        let index = inv.stdin.len();
        let _ = inv.stdin[index];
        Ok(())
    }
    fn check(&self, _: &Invocation) -> Result<(), Error> {
        // Neither: the message is lost, the error object still comes.
        std::panic::panic_any(42u8);
    }
    fn gc(&self, _: &Invocation) -> Result<(), Error> {
        Ok(())
    }
    fn status(&self, _: &Invocation) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn child() {
    if std::env::var_os(CHILD).is_some() {
        cni::skel::run(&Panicking);
    }
}

#[test]
fn a_panic_is_a_cni_error_on_stdout_never_a_backtrace() {
    for (command, said) in [
        ("ADD", "boom in ADD"),
        ("DEL", "index out of bounds"),
        ("CHECK", "unknown panic"),
    ] {
        let mut plugin = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            // Asked for, and still never printed.
            .env("RUST_BACKTRACE", "full")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "c1")
            .env("CNI_NETNS", "/run/netns/none")
            .env("CNI_IFNAME", "net1")
            .env("CNI_PATH", "/nonexistent")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = plugin.stdin.take().unwrap();
        stdin
            .write_all(br#"{"cniVersion":"1.0.0","name":"n"}"#)
            .unwrap();
        drop(stdin);
        let out = plugin.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);

        assert_eq!(out.status.code(), Some(1), "{command}: {stdout}{stderr}");
        // libtest prints its own lines before the test runs; the plugin's answer comes last.
        let at = stdout
            .find(r#"{"cniVersion""#)
            .unwrap_or_else(|| panic!("{command}: no error object in {stdout:?}"));
        let error: Value = serde_json::from_str(stdout[at..].trim()).unwrap();
        assert_eq!(error["code"], 999, "{command}: {error}");
        let msg = error["msg"].as_str().unwrap();
        assert!(
            msg.contains("internal error") && msg.contains(said),
            "{msg}"
        );
        for trace in ["panicked at", "stack backtrace", "RUST_BACKTRACE"] {
            assert!(
                !stderr.contains(trace),
                "{command}: {trace} on stderr: {stderr}"
            );
            assert!(
                !stdout.contains(trace),
                "{command}: {trace} on stdout: {stdout}"
            );
        }
    }
}
