//! Options shared by the commands that scan.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tenant_guard_scan::{
    ArchiveLimits, CONFIG_FILE_NAME, Config, DEFAULT_REGISTER_PATH, ExceptionCheck, FingerprintSet,
    IsoDate, MIN_FINGERPRINT_LEN, Progress, Register, RuleSet, ScanOptions, ScanReport,
    WalkOptions, builtin_rules, scan_paths,
};

/// What to scan and how.
#[derive(Debug, Args)]
pub(crate) struct ScanInput {
    /// Files and directories to scan.
    #[arg(default_value = ".")]
    pub(crate) paths: Vec<PathBuf>,
    /// Scan everything, ignoring .gitignore (build outputs are usually ignored).
    #[arg(long, visible_alias = "no-ignore")]
    pub(crate) artifacts: bool,
    /// Configuration file (default: tenant-guard.toml at the scan root, if any;
    /// the scan root is the first path when it is a directory, else the current directory).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Exceptions register suppressions are checked against
    /// (default: docs/adr_exceptions.md at the scan root, if any).
    #[arg(long, value_name = "FILE")]
    pub(crate) exceptions: Option<PathBuf>,
    /// Worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub(crate) threads: usize,
    /// How many archives deep to descend.
    #[arg(long, default_value_t = 8)]
    pub(crate) max_archive_depth: usize,
    /// Bytes that may be decompressed out of one file.
    #[arg(long, default_value_t = 1 << 30)]
    pub(crate) max_expanded_bytes: u64,
    /// Largest expansion ratio of an archive entry (N means N:1).
    #[arg(long, default_value_t = 100)]
    pub(crate) max_expansion_ratio: u64,
    /// Also recognise the vault secrets fingerprinted in FILE (written by
    /// `secret-mcp fingerprints export`), raw and encoded; repeatable.
    #[arg(long, value_name = "FILE")]
    pub(crate) fingerprints: Vec<PathBuf>,
}

/// Loads the `--fingerprints` files, saying on stderr what each one covers
/// and which versions its export skipped.
fn load_fingerprints(files: &[PathBuf]) -> anyhow::Result<Vec<Arc<FingerprintSet>>> {
    let mut sets = Vec::new();
    for file in files {
        let set = FingerprintSet::load(file)?;
        eprintln!(
            "fingerprints {}: {} secret version(s) of tenant {}",
            file.display(),
            set.versions().len(),
            set.tenant()
        );
        if !set.skipped().is_empty() {
            let list: Vec<String> = set
                .skipped()
                .iter()
                .map(|v| format!("{} (version {})", v.path, v.version))
                .collect();
            eprintln!(
                "fingerprints {}: not searched, shorter than {MIN_FINGERPRINT_LEN} bytes and so \
                 too short to fingerprint safely: {}",
                file.display(),
                list.join(", ")
            );
        }
        sets.push(Arc::new(set));
    }
    Ok(sets)
}

/// The directory the implicit configuration and register are looked up in:
/// the first path when it is a directory, the current directory when it is
/// a file (a list of files, as a pre-commit hook passes), none without paths.
fn scan_root(roots: &[PathBuf]) -> Option<PathBuf> {
    let first = roots.first()?;
    if first.is_dir() {
        Some(first.clone())
    } else {
        Some(PathBuf::from("."))
    }
}

/// Loads the configuration named by `--config`, or the one at the scan root.
/// Returns it with its path (`None` when there is no configuration).
pub(crate) fn load_config(
    explicit: Option<&Path>,
    roots: &[PathBuf],
) -> anyhow::Result<(Config, Option<PathBuf>)> {
    if let Some(path) = explicit {
        return Ok((Config::load(path)?, Some(path.to_path_buf())));
    }
    let implicit = scan_root(roots).map(|r| r.join(CONFIG_FILE_NAME));
    match implicit {
        Some(path) if path.is_file() => Ok((Config::load(&path)?, Some(path))),
        _ => Ok((Config::default(), None)),
    }
}

/// The exception check for a scan: against the register named by
/// `--exceptions` or found at the scan root (`docs/adr_exceptions.md`), or,
/// when there is none, accepting every well-formed id. A register that cannot
/// be read or is malformed is an error.
pub(crate) fn exception_check(
    explicit: Option<&Path>,
    roots: &[PathBuf],
) -> anyhow::Result<ExceptionCheck> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let implicit = scan_root(roots).map(|r| r.join(DEFAULT_REGISTER_PATH));
            match implicit {
                Some(path) if path.is_file() => path,
                _ => return Ok(ExceptionCheck::accept_all()),
            }
        }
    };
    let register = Register::load(&path)?;
    let today = IsoDate::today_utc();
    Ok(ExceptionCheck::new(move |id| register.validity(id, today)))
}

/// The built-in rules with the configuration applied.
pub(crate) fn rule_set(config: &Config) -> anyhow::Result<RuleSet> {
    let rules = config.apply_rules(builtin_rules()?)?;
    RuleSet::new(rules).context("invalid rule set")
}

/// Scans per `input`, with inline and allowlist suppressions applied.
/// Returns the exception check used, for a baseline applied afterwards.
pub(crate) fn scan(
    input: &ScanInput,
    show_secrets: bool,
) -> anyhow::Result<(ScanReport, Arc<RuleSet>, ExceptionCheck)> {
    let check = exception_check(input.exceptions.as_deref(), &input.paths)?;
    scan_with(input, show_secrets, check)
}

/// Scans per `input` like [`scan`], with `check` deciding which exceptions
/// are in force (`input.exceptions` is not read).
pub(crate) fn scan_with(
    input: &ScanInput,
    show_secrets: bool,
    check: ExceptionCheck,
) -> anyhow::Result<(ScanReport, Arc<RuleSet>, ExceptionCheck)> {
    let (config, config_path) = load_config(input.config.as_deref(), &input.paths)?;
    let rules = Arc::new(rule_set(&config)?);
    let mut walk = WalkOptions::default()
        .artifacts(input.artifacts)
        .threads(input.threads)
        .limits(
            ArchiveLimits::default()
                .max_depth(input.max_archive_depth)
                .max_expanded_bytes(input.max_expanded_bytes)
                .max_ratio(input.max_expansion_ratio),
        );
    if let Some(path) = config_path {
        // Its rules' examples would match themselves.
        walk = walk.skip_file(path);
    }
    let mut options = ScanOptions::default()
        .show_secrets(show_secrets)
        .exception_check(check.clone());
    for set in load_fingerprints(&input.fingerprints)? {
        options = options.fingerprints(set);
    }
    let progress = ProgressLine::start();
    let result = scan_paths(
        &input.paths,
        &walk,
        rules.clone(),
        &options,
        progress.counters(),
    );
    drop(progress);
    let mut report = result?;
    config.apply_allowlist(&mut report.findings, &check);
    Ok((report, rules, check))
}

/// A one-line progress counter on stderr, shown only on a terminal outside CI.
pub(crate) struct ProgressLine {
    counters: Option<Arc<Progress>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressLine {
    fn start() -> ProgressLine {
        let stop = Arc::new(AtomicBool::new(false));
        if !std::io::stderr().is_terminal() || std::env::var_os("CI").is_some() {
            return ProgressLine {
                counters: None,
                stop,
                thread: None,
            };
        }
        let counters = Arc::new(Progress::default());
        let (c, s) = (counters.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let files = c.files.load(Ordering::Relaxed);
                let mib = c.bytes.load(Ordering::Relaxed) as f64 / (1024.0 * 1024.0);
                eprint!("\r\x1b[2Kscanning: {files} files, {mib:.1} MiB");
            }
            eprint!("\r\x1b[2K");
        });
        ProgressLine {
            counters: Some(counters),
            stop,
            thread: Some(thread),
        }
    }

    fn counters(&self) -> Option<Arc<Progress>> {
        self.counters.clone()
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Escapes text for XML attributes and content (JUnit reports).
pub(crate) fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// `1 finding`, `2 findings`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// One JUnit test case: class, name, and its outcome (`None`: passed):
/// `("failure" | "error", type, text)` or `("skipped", _, note)`.
pub(crate) type Case = (String, String, Option<(&'static str, String, String)>);

/// Writes the `<testcase>` elements of a JUnit suite.
pub(crate) fn write_testcases(out: &mut dyn std::io::Write, cases: &[Case]) -> std::io::Result<()> {
    for (class, name, outcome) in cases {
        let (class, name) = (xml(class), xml(name));
        match outcome {
            None => writeln!(out, r#"    <testcase classname="{class}" name="{name}"/>"#)?,
            Some(("skipped", _, note)) => writeln!(
                out,
                r#"    <testcase classname="{class}" name="{name}"><skipped message="{}"/></testcase>"#,
                xml(note)
            )?,
            Some((kind, kind_type, body)) => {
                writeln!(out, r#"    <testcase classname="{class}" name="{name}">"#)?;
                writeln!(
                    out,
                    r#"      <{kind} type="{}" message="{}">{}</{kind}>"#,
                    xml(kind_type),
                    xml(body.lines().next().unwrap_or_default()),
                    xml(body)
                )?;
                writeln!(out, "    </testcase>")?;
            }
        }
    }
    Ok(())
}
