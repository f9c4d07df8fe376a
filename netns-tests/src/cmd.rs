//! Running a helper program and turning its failure into a readable error.

use std::process::Command;

/// Runs `cmd` to completion; `Ok(stdout)` on exit 0, else an error naming the
/// command line and carrying its stderr, so an `unwrap` says what failed.
pub(crate) fn run(cmd: &mut Command) -> Result<String, String> {
    let line = describe(cmd);
    let out = cmd
        .output()
        .map_err(|e| format!("`{line}`: cannot start: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
