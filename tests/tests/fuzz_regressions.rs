//! Replays the fuzz targets' committed inputs in the normal suite: every file
//! under `fuzz/regressions/<target>/` (inputs that once crashed a target, and
//! crafted edge cases) and the small seed corpus `fuzz/seeds/<target>/`, each
//! through the same check function the `cargo fuzz` target calls
//! (`tenant_vault_tests::fuzz`). See `fuzz/README.md`.

use std::path::{Path, PathBuf};

use tenant_vault_tests::fuzz::{self, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join("fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted; the directory must exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs every regression and seed input of `target`; returns how many ran.
fn replay(target: &str) -> usize {
    let regressions = inputs("regressions", target);
    assert!(
        !regressions.is_empty(),
        "fuzz/regressions/{target}/ holds no input"
    );
    let seeds = inputs("seeds", target);
    assert!(!seeds.is_empty(), "fuzz/seeds/{target}/ holds no input");
    let mut ran = 0;
    for file in regressions.iter().chain(&seeds) {
        let data = std::fs::read(file).expect("reading a fuzz input");
        let result = std::panic::catch_unwind(|| fuzz::run(target, &data));
        assert!(
            result.is_ok(),
            "fuzz target {target} fails on {}",
            file.display()
        );
        ran += 1;
    }
    ran
}

#[test]
fn every_target_has_its_directories_and_nothing_else() {
    for kind in ["regressions", "seeds"] {
        let mut found: Vec<String> = std::fs::read_dir(fuzz_dir().join(kind))
            .expect("reading the fuzz directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        found.sort();
        let mut want: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
        want.sort();
        assert_eq!(found, want, "fuzz/{kind}/ holds one directory per target");
    }
    // Every target has a fuzz_targets/<target>.rs calling its function.
    for target in TARGETS {
        let src =
            std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{target}.rs")))
                .expect("reading a fuzz target");
        assert!(
            src.contains(&format!("tenant_vault_tests::fuzz::{target}(")),
            "fuzz_targets/{target}.rs calls tenant_vault_tests::fuzz::{target}"
        );
    }
}

#[test]
fn the_oracles_can_fail() {
    // A check function that never panicked would replay anything: make sure
    // a broken invariant is caught by the harness itself.
    let result = std::panic::catch_unwind(|| fuzz::run("no_such_target", b""));
    assert!(result.is_err());
}

#[test]
fn path_parser_regressions() {
    assert!(replay("path_parser") > 0);
}

#[test]
fn token_parse_regressions() {
    assert!(replay("token_parse") > 0);
}

#[test]
fn rules_policy_regressions() {
    assert!(replay("rules_policy") > 0);
}

#[test]
fn exceptions_register_regressions() {
    assert!(replay("exceptions_register") > 0);
}

#[test]
fn archive_walker_regressions() {
    assert!(replay("archive_walker") > 0);
}

#[test]
fn grpc_handlers_regressions() {
    assert!(replay("grpc_handlers") > 0);
}
