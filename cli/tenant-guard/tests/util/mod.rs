//! A temporary directory to write fixtures into and the real binary to run in it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The fixture rules, added through the scan root's tenant-guard.toml.
pub(crate) const FIXTURE_RULES: &str =
    include_str!("../../../../crates/tenant-guard-scan/tests/fixtures/test-rules.toml");

/// A fixture token of the `fixture-token` rule, different for each `n`.
pub(crate) fn token(n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let body: String = (0..32)
        .map(|k| ALPHABET[(n * 31 + k * 17 + k * k * 7) % 62] as char)
        .collect();
    format!("tgt_{body}")
}

pub(crate) struct Dir {
    pub(crate) tmp: tempfile::TempDir,
}

impl Dir {
    /// A new directory whose tenant-guard.toml holds the fixture rules.
    pub(crate) fn new() -> Dir {
        let d = Dir::bare();
        d.write("tenant-guard.toml", FIXTURE_RULES);
        d
    }

    /// A new empty directory.
    pub(crate) fn bare() -> Dir {
        Dir {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub(crate) fn write(&self, rel: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::File::create(&p)
            .unwrap()
            .write_all(contents.as_ref())
            .unwrap();
        p
    }

    /// Runs `tenant-guard ARGS` in this directory.
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tenant-guard"))
            .args(args)
            .current_dir(self.path())
            .env_remove("NO_COLOR")
            .env("CI", "true")
            .output()
            .unwrap()
    }

    /// Runs `tenant-guard ARGS` in this directory with extra environment variables.
    #[allow(dead_code)]
    pub(crate) fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tenant-guard"));
        c.args(args)
            .current_dir(self.path())
            .env_remove("NO_COLOR")
            .env("CI", "true");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Runs `tenant-guard scan --format json ARGS` and parses its report.
    pub(crate) fn scan_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["scan", "--format", "json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let code = out.status.code().unwrap();
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("bad json ({e}): {}\n{}", stdout(&out), stderr(&out)));
        (code, json)
    }
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The fixture-rule findings of a JSON report as `(path, line, column, rule, kind)`.
pub(crate) fn fixture_findings(
    json: &serde_json::Value,
) -> Vec<(String, u64, u64, String, String)> {
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| {
            let id = f["rule_id"].as_str().unwrap();
            id.starts_with("fixture-")
                || !f["kind"].as_str().unwrap().starts_with("secret") && f["kind"] != "dotenv"
        })
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["line"].as_u64().unwrap(),
                f["column"].as_u64().unwrap(),
                f["rule_id"].as_str().unwrap().to_string(),
                f["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub(crate) fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

pub(crate) fn tar_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub(crate) fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}
