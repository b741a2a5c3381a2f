//! Which `lifecycle-worker` executable the tool drives (as the system under
//! test and as the simulator).
//!
//! The numbers mean something only for the release build of the source being
//! measured. `cargo bench` used to build it as a side effect; a crate of its
//! own cannot name another package's binary (`CARGO_BIN_EXE_*` is for a
//! package's own tests and benches, artifact dependencies are unstable). So,
//! unless `--worker-bin` names one, the tool has cargo build it (a no-op when
//! it is up to date) and takes the path cargo reports: a stale or debug worker
//! can never be measured by accident.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace's manifest, from this crate's own place in it.
const WORKSPACE_MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");

/// `explicit` if given, else the freshly built release worker.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_path_buf())
        } else {
            Err(format!("--worker-bin {}: no such file", path.display()))
        };
    }
    // `cargo run` tells its program which cargo it is; else the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building the release worker (cargo build --release --locked --bin lifecycle-worker)"
    );
    let out = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "--bin",
            "lifecycle-worker",
        ])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(WORKSPACE_MANIFEST)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{}: {e} (or pass --worker-bin)", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!("building the worker failed ({})", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(executable)
        .ok_or_else(|| "cargo built no lifecycle-worker executable".to_owned())
}

/// The executable of a cargo `compiler-artifact` message for the worker binary.
fn executable(line: &str) -> Option<PathBuf> {
    let msg: serde_json::Value = serde_json::from_str(line).ok()?;
    let is_worker = msg["reason"] == "compiler-artifact"
        && msg["target"]["name"] == "lifecycle-worker"
        && msg["target"]["kind"][0] == "bin";
    if !is_worker {
        return None;
    }
    msg["executable"].as_str().map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_binary_among_cargo_messages() {
        let lib = r#"{"reason":"compiler-artifact","target":{"name":"lifecycle_worker","kind":["lib"]},"executable":null}"#;
        let bin = r#"{"reason":"compiler-artifact","target":{"name":"lifecycle-worker","kind":["bin"]},"executable":"/t/release/lifecycle-worker","fresh":true}"#;
        assert_eq!(executable(lib), None);
        assert_eq!(
            executable(bin),
            Some(PathBuf::from("/t/release/lifecycle-worker"))
        );
        assert_eq!(executable("Compiling ..."), None);
    }
}
