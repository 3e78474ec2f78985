//! Helpers for the cross-crate integration tests in `tests/`.
//!
//! The binaries under test belong to other packages of the workspace, so
//! [`bin`] builds them with the same cargo that runs the tests (a no-op when
//! they are fresh) and returns their path: a test never runs a stale binary.

pub mod fuzz;
pub mod process;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// Path of a workspace binary, built first if needed.
pub fn bin(package: &str, name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let target_dir = target_dir();
    if !built.iter().any(|b| b == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", package, "--bin", name])
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build -p {package} failed");
        built.push(name.to_owned());
    }
    target_dir.join("debug").join(name)
}

/// The target directory the test binary itself was built in.
fn target_dir() -> PathBuf {
    // target/debug/deps/<test-binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .and_then(|debug| debug.parent())
        .expect("test binary lives in target/debug/deps")
        .to_owned()
}
