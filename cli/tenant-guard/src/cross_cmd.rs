//! `tenant-guard cross`: crossed tests between tenants (docs/SCANNER.md,
//! "Cross-tenant tests"). Canaries are planted in each tenant's scope of a
//! vault, the build runs once per tenant with that tenant's token, and every
//! tenant's artifacts and logs are searched for every tenant's canaries, raw
//! and encoded; the vault's isolation is probed with each tenant's token.

use std::collections::HashSet;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use rand::Rng;
use rand::seq::SliceRandom;
use secret_mcp_grpc::pb::{self, secrets_client::SecretsClient, tenants_client::TenantsClient};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tenant_guard_scan::{
    ArchiveLimits, CONFIG_FILE_NAME, Canary, CanaryMatch, CanarySet, ExceptionCheck, Finding,
    RuleSet, ScanOptions, Scanner, Severity, Visitor, WalkOptions, visit_bytes, walk,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use crate::Outcome;
use crate::common::{Case, exception_check, load_config, plural, rule_set, write_testcases};
use crate::scan_cmd::SeverityArg;

/// The canaries planted in each tenant's scope, by name.
pub(crate) const CANARY_NAMES: [&str; 2] = ["api-token", "db-password"];
/// The name under which a tenant's own vault token is searched for.
const TOKEN_CANARY: &str = "vault-token";
/// Where canaries live in a tenant's scope.
const CANARY_DIR: &str = "tenant-guard-canary";
/// Environment variables never passed to a tenant's run.
const WITHHELD_ENV: [&str; 3] = [
    "TENANT_GUARD_OPERATOR_TOKEN",
    "SECRET_MCP_TOKEN",
    "SECRET_MCP_ADDR",
];
/// Captured output kept per stream; the rest is read and dropped.
const MAX_LOG_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CrossFormat {
    Human,
    Json,
    Junit,
}

#[derive(Debug, Args)]
pub(crate) struct CrossArgs {
    /// Tenants to cross, comma-separated (at least two slugs).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    tenants: Vec<String>,
    /// An existing Secret MCP server (http://HOST:PORT); default: an ephemeral
    /// embedded vault served on loopback.
    #[arg(long, value_name = "ADDR")]
    vault: Option<String>,
    /// Operator token for --vault (scopes, tenant tokens).
    #[arg(
        long,
        env = "TENANT_GUARD_OPERATOR_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    operator_token: Option<String>,
    /// Each tenant's build outputs, `{tenant}` replaced by its slug (e.g. 'out/{tenant}').
    #[arg(long, value_name = "PATH")]
    artifacts: Option<String>,
    /// Time allowed to each run (e.g. 10m, 90s, 1h30m); the run is then killed.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    timeout: Duration,
    /// Run the tenants' builds at the same time instead of one after another.
    #[arg(long)]
    parallel: bool,
    /// Pass a canary to each run in an environment variable: ENV=NAME, where
    /// NAME is api-token or db-password (repeatable).
    #[arg(long, value_name = "ENV=NAME")]
    inject: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: CrossFormat,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Configuration file (default: tenant-guard.toml in the current directory, if any).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Scan findings (the normal rules) fail at or above this severity.
    #[arg(long, value_enum, default_value = "low")]
    fail_on: SeverityArg,
    /// The build command, run once per tenant; `{tenant}` is replaced by its slug.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Parses `10m`, `90s`, `1h30m`, `500ms`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration `{s}`: use e.g. 10m, 90s, 1h30m, 500ms");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let d = match &rest[..unit] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            _ => return Err(bad()),
        };
        total += d;
        rest = &rest[unit..];
    }
    if total.is_zero() {
        return Err(bad());
    }
    Ok(total)
}

/// The `[cross]` policy table of `tenant-guard.toml`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Policy {
    /// A tenant's own canary in its own logs passes (it still fails in artifacts).
    pub(crate) allow_own_in_logs: bool,
}

impl Policy {
    fn load(path: Option<&Path>) -> anyhow::Result<Policy> {
        let Some(path) = path else {
            return Ok(Policy::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        match table.remove("cross") {
            None => Ok(Policy::default()),
            Some(v @ toml::Value::Table(_)) => v
                .try_into()
                .with_context(|| format!("{}: [cross]", path.display())),
            Some(_) => bail!("{}: `cross` must be a table", path.display()),
        }
    }
}

/// Everything a cross-tenant test needs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) tenants: Vec<String>,
    pub(crate) vault: Option<String>,
    pub(crate) operator_token: Option<String>,
    pub(crate) artifacts: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) parallel: bool,
    /// (environment variable, canary name).
    pub(crate) inject: Vec<(String, String)>,
    pub(crate) command: Vec<String>,
    pub(crate) config: Option<PathBuf>,
    pub(crate) fail_on: Severity,
}

impl Plan {
    /// Checks the tenants, the injections and the command.
    pub(crate) fn new(
        tenants: Vec<String>,
        inject: &[String],
        command: Vec<String>,
    ) -> anyhow::Result<Plan> {
        let mut seen = HashSet::new();
        for t in &tenants {
            tenant_vault::Slug::parse(t).map_err(|e| anyhow!("invalid tenant `{t}`: {e}"))?;
            if !seen.insert(t.clone()) {
                bail!("tenant `{t}` is given twice");
            }
        }
        if tenants.len() < 2 {
            bail!("cross-tenant tests need at least two tenants (--tenants a,b)");
        }
        let mut pairs = Vec::new();
        for i in inject {
            let (env, name) = i
                .split_once('=')
                .ok_or_else(|| anyhow!("--inject `{i}`: expected ENV=NAME"))?;
            if env.is_empty()
                || !env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || env.as_bytes()[0].is_ascii_digit()
            {
                bail!("--inject `{i}`: `{env}` is not an environment variable name");
            }
            if !CANARY_NAMES.contains(&name) {
                bail!(
                    "--inject `{i}`: unknown canary `{name}` (one of: {})",
                    CANARY_NAMES.join(", ")
                );
            }
            pairs.push((env.to_string(), name.to_string()));
        }
        if command.is_empty() {
            bail!("no command: give it after `--`");
        }
        Ok(Plan {
            tenants,
            vault: None,
            operator_token: None,
            artifacts: None,
            timeout: Duration::from_secs(600),
            parallel: false,
            inject: pairs,
            command,
            config: None,
            fail_on: Severity::Low,
        })
    }
}

/// How a tenant's run ended.
#[derive(Debug, Clone)]
pub(crate) enum RunStatus {
    Exited(i32),
    Signaled,
    TimedOut,
    NotStarted(String),
}

#[derive(Debug)]
pub(crate) struct Run {
    tenant: String,
    status: RunStatus,
    duration: Duration,
    artifacts: Option<String>,
    artifacts_missing: bool,
    stdout_bytes: usize,
    stderr_bytes: usize,
    files: u64,
}

impl Run {
    fn error(&self) -> Option<String> {
        match &self.status {
            RunStatus::Exited(0) => None,
            RunStatus::Exited(c) => Some(format!("the command exited with code {c}")),
            RunStatus::Signaled => Some("the command was killed by a signal".into()),
            RunStatus::TimedOut => Some(format!(
                "timed out after {:.1} s: killed",
                self.duration.as_secs_f64()
            )),
            RunStatus::NotStarted(e) => Some(format!("the command could not start: {e}")),
        }
    }

    fn status_str(&self) -> &'static str {
        match self.status {
            RunStatus::Exited(0) => "passed",
            RunStatus::Exited(_) => "failed",
            RunStatus::Signaled => "killed",
            RunStatus::TimedOut => "timed-out",
            RunStatus::NotStarted(_) => "not-started",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Artifact,
    Log,
}

impl Where {
    fn as_str(self) -> &'static str {
        match self {
            Where::Artifact => "artifact",
            Where::Log => "log",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeakKind {
    /// Another tenant's canary: always fails.
    CrossTenant,
    /// The tenant's own canary in its artifacts: fails.
    PlaintextInArtifact,
    /// The tenant's own canary in its logs: fails unless the policy allows it.
    PlaintextInLog,
}

impl LeakKind {
    fn as_str(self) -> &'static str {
        match self {
            LeakKind::CrossTenant => "cross-tenant",
            LeakKind::PlaintextInArtifact => "plaintext-in-artifact",
            LeakKind::PlaintextInLog => "plaintext-in-log",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Leak {
    kind: LeakKind,
    allowed: bool,
    source: String,
    canary: String,
    tenant: String,
    place: Where,
    path: String,
    line: u64,
    offset: u64,
    encoding: &'static str,
}

impl Leak {
    fn describe(&self) -> String {
        let whose = if self.kind == LeakKind::CrossTenant {
            format!("{}'s {}", self.source, self.canary)
        } else {
            format!("its own {}", self.canary)
        };
        format!(
            "{}: {whose} in {}'s {} {}:{} ({}, byte {})",
            self.kind.as_str(),
            self.tenant,
            self.place.as_str(),
            self.path,
            self.line,
            self.encoding,
            self.offset
        )
    }
}

#[derive(Debug)]
pub(crate) struct Probe {
    actor: String,
    target: String,
    operation: &'static str,
    path: String,
    code: Code,
}

impl Probe {
    fn passed(&self) -> bool {
        self.code == Code::PermissionDenied
    }

    fn name(&self) -> String {
        format!(
            "probe {} -> {}: {} {}",
            self.actor, self.target, self.operation, self.path
        )
    }

    fn outcome(&self) -> String {
        if self.code == Code::Ok {
            "OK (allowed)".to_string()
        } else {
            code_name(self.code)
        }
    }
}

fn code_name(code: Code) -> String {
    let debug = format!("{code:?}");
    let mut out = String::new();
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The result of a cross-tenant test.
#[derive(Debug)]
pub(crate) struct CrossReport {
    tenants: Vec<String>,
    policy: Policy,
    vault: String,
    runs: Vec<Run>,
    leaks: Vec<Leak>,
    probes: Vec<Probe>,
    /// (tenant, finding) of the normal rules.
    findings: Vec<(String, Finding)>,
    fail_on: Severity,
}

/// The overall verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CrossVerdict {
    Passed,
    Failed,
    Error(String),
}

impl CrossReport {
    pub(crate) fn verdict(&self) -> CrossVerdict {
        let errors: Vec<String> = self
            .runs
            .iter()
            .filter_map(|r| r.error().map(|e| format!("{}: {e}", r.tenant)))
            .collect();
        if !errors.is_empty() {
            return CrossVerdict::Error(errors.join("; "));
        }
        if self.failed_leaks().next().is_some()
            || self.probes.iter().any(|p| !p.passed())
            || self.failing_findings().next().is_some()
        {
            CrossVerdict::Failed
        } else {
            CrossVerdict::Passed
        }
    }

    fn failed_leaks(&self) -> impl Iterator<Item = &Leak> {
        self.leaks.iter().filter(|l| !l.allowed)
    }

    fn failing_findings(&self) -> impl Iterator<Item = &(String, Finding)> {
        self.findings
            .iter()
            .filter(|(_, f)| f.suppression.is_none() && f.severity >= self.fail_on)
    }

    pub(crate) fn summary(&self) -> String {
        let cross = self
            .leaks
            .iter()
            .filter(|l| l.kind == LeakKind::CrossTenant)
            .count();
        let failed_probes = self.probes.iter().filter(|p| !p.passed()).count();
        format!(
            "{} tenants, {} ({} cross-tenant, {} allowed by policy), {} ({} not denied), {} at or above {}",
            self.tenants.len(),
            plural(self.leaks.len(), "canary leak"),
            cross,
            self.leaks.iter().filter(|l| l.allowed).count(),
            plural(self.probes.len(), "isolation probe"),
            failed_probes,
            plural(self.failing_findings().count(), "scan finding"),
            self.fail_on.as_str()
        )
    }

    /// The leak matrix cell of (source, found in).
    fn cell(&self, source: &str, tenant: &str) -> (usize, usize, bool) {
        let (mut a, mut l, mut failing) = (0, 0, false);
        for leak in self
            .leaks
            .iter()
            .filter(|x| x.source == source && x.tenant == tenant)
        {
            match leak.place {
                Where::Artifact => a += 1,
                Where::Log => l += 1,
            }
            failing |= !leak.allowed;
        }
        (a, l, failing)
    }

    /// The human report; `color` adds ANSI colours.
    pub(crate) fn human(&self, out: &mut dyn Write, color: bool) -> std::io::Result<()> {
        let paint = |text: &str, code: &str| {
            if color {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_string()
            }
        };
        writeln!(
            out,
            "cross-tenant test of {} on {}",
            self.tenants.join(", "),
            self.vault
        )?;
        for r in &self.runs {
            let files = match (&r.artifacts, r.artifacts_missing) {
                (None, _) => "no artifacts path".to_string(),
                (Some(p), true) => format!("artifacts {p}: missing"),
                (Some(p), false) => format!("artifacts {p}: {}", plural(r.files as usize, "file")),
            };
            let status = match r.error() {
                None => paint("ok", "32"),
                Some(e) => paint(&format!("error: {e}"), "31"),
            };
            writeln!(
                out,
                "run {}: {status} in {:.1} s; {files}; logs {} + {} bytes",
                r.tenant,
                r.duration.as_secs_f64(),
                r.stdout_bytes,
                r.stderr_bytes
            )?;
        }
        writeln!(out)?;
        writeln!(
            out,
            "leak matrix (rows: whose canary; columns: where found; a = artifacts, l = logs)"
        )?;
        let width = self
            .tenants
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(8)
            + 2;
        let header: String = self.tenants.iter().map(|t| format!("{t:width$}")).collect();
        writeln!(out, "{:width$}{}", "", header.trim_end())?;
        for source in &self.tenants {
            write!(out, "{source:width$}")?;
            for tenant in &self.tenants {
                let (a, l, failing) = self.cell(source, tenant);
                let text = match (a, l) {
                    (0, 0) => ".".to_string(),
                    (a, 0) => format!("{a}a"),
                    (0, l) => format!("{l}l"),
                    (a, l) => format!("{a}a+{l}l"),
                };
                let padded = if tenant == self.tenants.last().unwrap_or(tenant) {
                    text
                } else {
                    format!("{text:width$}")
                };
                let code = if a + l == 0 {
                    "32"
                } else if failing {
                    "1;31"
                } else {
                    "33"
                };
                write!(out, "{}", paint(&padded, code))?;
            }
            writeln!(out)?;
        }
        if !self.leaks.is_empty() {
            writeln!(out)?;
        }
        for l in &self.leaks {
            let tag = if l.allowed {
                paint("ALLOWED", "33")
            } else {
                paint("FAIL", "1;31")
            };
            writeln!(out, "{tag} {}", l.describe())?;
        }
        writeln!(out)?;
        for p in &self.probes {
            let tag = if p.passed() {
                paint("ok", "32")
            } else {
                paint("FAIL", "1;31")
            };
            writeln!(out, "{tag} {}: {}", p.name(), p.outcome())?;
        }
        let failing: Vec<&(String, Finding)> = self.failing_findings().collect();
        if !failing.is_empty() {
            writeln!(out)?;
        }
        for (t, f) in failing {
            writeln!(
                out,
                "{} scan finding in {t}'s outputs: {} at {}:{}:{} ({}, {})",
                paint("FAIL", "1;31"),
                f.rule_id,
                f.path,
                f.line,
                f.column,
                f.severity.as_str(),
                f.redacted
            )?;
        }
        writeln!(out)?;
        let verdict = match self.verdict() {
            CrossVerdict::Passed => paint("passed", "32"),
            CrossVerdict::Failed => paint("failed", "1;31"),
            CrossVerdict::Error(e) => paint(&format!("error: {e}"), "1;31"),
        };
        writeln!(out, "cross: {verdict}: {}", self.summary())
    }

    pub(crate) fn json(&self) -> Value {
        let verdict = self.verdict();
        let mut matrix = serde_json::Map::new();
        for s in &self.tenants {
            let mut row = serde_json::Map::new();
            for t in &self.tenants {
                let (a, l, _) = self.cell(s, t);
                row.insert(t.clone(), json!({ "artifacts": a, "logs": l }));
            }
            matrix.insert(s.clone(), Value::Object(row));
        }
        let mut doc = json!({
            "tool": "tenant-guard",
            "version": env!("CARGO_PKG_VERSION"),
            "verdict": match &verdict {
                CrossVerdict::Passed => "passed",
                CrossVerdict::Failed => "failed",
                CrossVerdict::Error(_) => "error",
            },
            "tenants": self.tenants,
            "vault": self.vault,
            "policy": { "allow_own_in_logs": self.policy.allow_own_in_logs },
            "runs": self.runs.iter().map(|r| {
                let mut v = json!({
                    "tenant": r.tenant,
                    "status": r.status_str(),
                    "duration_ms": r.duration.as_millis() as u64,
                    "artifacts": r.artifacts,
                    "artifacts_missing": r.artifacts_missing,
                    "files": r.files,
                    "stdout_bytes": r.stdout_bytes,
                    "stderr_bytes": r.stderr_bytes,
                });
                if let RunStatus::Exited(c) = r.status {
                    v["exit_code"] = json!(c);
                }
                if let Some(e) = r.error() {
                    v["error"] = json!(e);
                }
                v
            }).collect::<Vec<_>>(),
            "matrix": matrix,
            "leaks": self.leaks.iter().map(|l| json!({
                "kind": l.kind.as_str(),
                "verdict": if l.allowed { "allowed" } else { "failed" },
                "source": l.source,
                "canary": l.canary,
                "tenant": l.tenant,
                "where": l.place.as_str(),
                "path": l.path,
                "line": l.line,
                "offset": l.offset,
                "encoding": l.encoding,
            })).collect::<Vec<_>>(),
            "probes": self.probes.iter().map(|p| json!({
                "actor": p.actor,
                "target": p.target,
                "operation": p.operation,
                "path": p.path,
                "code": code_name(p.code),
                "passed": p.passed(),
            })).collect::<Vec<_>>(),
            "findings": self.findings.iter().map(|(t, f)| {
                let mut v = serde_json::to_value(f).unwrap_or(Value::Null);
                v["tenant"] = json!(t);
                v
            }).collect::<Vec<_>>(),
            "summary": self.summary(),
        });
        if let CrossVerdict::Error(e) = verdict {
            doc["error"] = json!(e);
        }
        doc
    }

    /// JUnit test cases: one per run, one per ordered tenant pair, one per
    /// probe, and one per scan finding (or one passing scan case).
    pub(crate) fn junit_cases(&self) -> Vec<Case> {
        let mut cases = Vec::new();
        for r in &self.runs {
            let name = format!("run {}", r.tenant);
            cases.push((
                "cross.runs".to_string(),
                name,
                r.error().map(|e| ("error", "run".to_string(), e)),
            ));
        }
        for s in &self.tenants {
            for t in &self.tenants {
                let name = if s == t {
                    format!("{s} -> {t} (own canaries)")
                } else {
                    format!("{s} -> {t}")
                };
                let failing: Vec<String> = self
                    .leaks
                    .iter()
                    .filter(|l| &l.source == s && &l.tenant == t && !l.allowed)
                    .map(Leak::describe)
                    .collect();
                let outcome = (!failing.is_empty()).then(|| {
                    let kind = if s == t {
                        "plaintext-secret"
                    } else {
                        "cross-tenant-leak"
                    };
                    ("failure", kind.to_string(), failing.join("\n"))
                });
                cases.push(("cross.leaks".to_string(), name, outcome));
            }
        }
        for p in &self.probes {
            let outcome = (!p.passed()).then(|| {
                (
                    "failure",
                    "isolation-probe".to_string(),
                    format!(
                        "{}: expected PERMISSION_DENIED, got {}",
                        p.name(),
                        p.outcome()
                    ),
                )
            });
            cases.push(("cross.probes".to_string(), p.name(), outcome));
        }
        let mut any = false;
        for (t, f) in self.failing_findings() {
            any = true;
            cases.push((
                format!("cross.scan.{t}"),
                format!("{} at {}:{}:{}", f.rule_id, f.path, f.line, f.column),
                Some((
                    "failure",
                    f.severity.as_str().to_string(),
                    format!("{} {}\nmatch: {}", f.rule_id, f.message, f.redacted),
                )),
            ));
        }
        if !any {
            cases.push((
                "cross.scan".to_string(),
                "scan of outputs".to_string(),
                None,
            ));
        }
        cases
    }
}

fn junit(out: &mut dyn Write, cases: &[Case]) -> std::io::Result<()> {
    let count = |kind: &str| {
        cases
            .iter()
            .filter(|c| c.2.as_ref().is_some_and(|o| o.0 == kind))
            .count()
    };
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="tenant-guard cross" tests="{}" failures="{}" errors="{}">"#,
        cases.len(),
        count("failure"),
        count("error")
    )?;
    writeln!(
        out,
        r#"  <testsuite name="cross" tests="{}" failures="{}" errors="{}">"#,
        cases.len(),
        count("failure"),
        count("error")
    )?;
    write_testcases(out, cases)?;
    writeln!(out, "  </testsuite>")?;
    writeln!(out, "</testsuites>")
}

pub(crate) fn run(args: CrossArgs) -> anyhow::Result<Outcome> {
    let mut plan = Plan::new(args.tenants, &args.inject, args.command)?;
    plan.vault = args.vault;
    plan.operator_token = args.operator_token;
    plan.artifacts = args.artifacts;
    plan.timeout = args.timeout;
    plan.parallel = args.parallel;
    plan.config = args.config;
    plan.fail_on = Severity::from(args.fail_on);
    let report = execute(&plan)?;

    let to_terminal = args.output.is_none() && std::io::stdout().is_terminal();
    let color = to_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    if args.output.is_some() {
        report
            .human(&mut std::io::stderr().lock(), false)
            .context("cannot write to standard error")?;
    }
    match args.format {
        CrossFormat::Human => report.human(&mut out, color),
        CrossFormat::Json => serde_json::to_writer_pretty(&mut out, &report.json())
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        CrossFormat::Junit => junit(&mut out, &report.junit_cases()),
    }
    .and_then(|()| out.flush())
    .context("cannot write the report")?;
    match report.verdict() {
        CrossVerdict::Passed => Ok(Outcome::Clean),
        CrossVerdict::Failed => Ok(Outcome::Failed),
        CrossVerdict::Error(e) => bail!("cross-tenant test could not complete: {e}"),
    }
}

// ---- the vault ------------------------------------------------------------

/// A vault the test talks to over gRPC: an embedded one served in-process on
/// loopback, or an existing server.
struct VaultConn {
    rt: tokio::runtime::Runtime,
    addr: String,
    channel: Channel,
    operator: String,
    embedded: Option<Embedded>,
}

struct Embedded {
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), secret_mcp_grpc::Error>>,
}

fn req<T>(msg: T, token: &str) -> anyhow::Result<Request<T>> {
    let mut r = Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}")
            .parse()
            .map_err(|_| anyhow!("the token is not a valid header value"))?,
    );
    Ok(r)
}

impl VaultConn {
    fn open(plan: &Plan) -> anyhow::Result<VaultConn> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let (addr, operator, embedded) = match &plan.vault {
            Some(addr) => {
                let operator = plan.operator_token.clone().ok_or_else(|| {
                    anyhow!(
                        "--vault needs an operator token: --operator-token or \
                         TENANT_GUARD_OPERATOR_TOKEN"
                    )
                })?;
                let addr = if addr.contains("://") {
                    addr.clone()
                } else {
                    format!("http://{addr}")
                };
                (addr, operator, None)
            }
            None => {
                let (addr, operator, embedded) = rt.block_on(start_embedded())?;
                (addr, operator, Some(embedded))
            }
        };
        let channel = rt
            .block_on(async {
                Endpoint::from_shared(addr.clone())?
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(30))
                    .connect()
                    .await
            })
            .with_context(|| format!("cannot connect to the vault at {addr}"))?;
        Ok(VaultConn {
            rt,
            addr,
            channel,
            operator,
            embedded,
        })
    }

    fn close(mut self) {
        if let Some(mut e) = self.embedded.take() {
            if let Some(stop) = e.stop.take() {
                let _ = stop.send(());
            }
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), &mut e.server).await
            });
        }
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

async fn start_embedded() -> anyhow::Result<(String, String, Embedded)> {
    use tenant_vault::{SqliteStore, TokenSpec, Unlock, Vault, VaultOptions, create_key_file};
    let dir = tempfile::Builder::new()
        .prefix("tenant-guard-cross-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let key = dir.path().join("vault.key");
    create_key_file(&key).context("cannot create the embedded vault's key file")?;
    let store =
        SqliteStore::open(dir.path().join("vault.db")).context("cannot open the embedded vault")?;
    let vault = Arc::new(
        Vault::init(store, &Unlock::KeyFile(key), VaultOptions::default())
            .context("cannot initialize the embedded vault")?,
    );
    let issued = vault
        .root_session()
        .issue_token(&TokenSpec {
            description: "tenant-guard cross".into(),
            ..TokenSpec::default()
        })
        .context("cannot issue the operator token")?;
    let operator =
        String::from_utf8(issued.token.expose().to_vec()).context("operator token is not UTF-8")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = secret_mcp_grpc::Server::new(vault, secret_mcp_grpc::ServerOptions::default());
    let handle = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    Ok((
        format!("http://{addr}"),
        operator,
        Embedded {
            _dir: dir,
            stop: Some(tx),
            server: handle,
        },
    ))
}

/// A tenant's set-up: its token and its canaries (in memory only).
struct TenantSetup {
    slug: String,
    token_id: String,
    token: zeroize::Zeroizing<String>,
    canaries: Vec<(String, zeroize::Zeroizing<String>)>,
}

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn random_base62(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

/// A canary value shaped like a real credential of kind `name`, in a format
/// no provider uses, with enough randomness never to occur by chance.
fn canary_value(name: &str) -> String {
    let mut rng = rand::rngs::OsRng;
    match name {
        // An API token: a prefix, then 40 base62 characters (238 bits).
        "api-token" => format!("tgcanary_{}", random_base62(&mut rng, 40)),
        // A database password: base62 with punctuation that needs escaping
        // in JSON, shells and URLs.
        _ => {
            let mut chars: Vec<char> = random_base62(&mut rng, 20).chars().collect();
            let punct = ['"', '\'', '\\', '$', '/', '+', '%', '=', '!', '#', '@', '&'];
            for _ in 0..4 {
                chars.push(punct[rng.gen_range(0..punct.len())]);
            }
            chars.shuffle(&mut rng);
            chars.into_iter().collect()
        }
    }
}

impl VaultConn {
    fn setup(&self, slug: &str, timeout: Duration) -> anyhow::Result<TenantSetup> {
        let mut tenants = TenantsClient::new(self.channel.clone());
        let mut secrets = SecretsClient::new(self.channel.clone());
        self.rt.block_on(async {
            tenants
                .create_scope(req(
                    pb::CreateScopeRequest {
                        slug: slug.to_string(),
                        kind: 0,
                    },
                    &self.operator,
                )?)
                .await
                .with_context(|| format!("cannot create the scope of {slug}"))?;
            let issued = tenants
                .issue_token(req(
                    pb::IssueTokenRequest {
                        tenant: slug.to_string(),
                        role: "user".into(),
                        ttl_seconds: timeout.as_secs() + 3600,
                        description: "tenant-guard cross".into(),
                        ..Default::default()
                    },
                    &self.operator,
                )?)
                .await
                .with_context(|| format!("cannot issue a token for {slug}"))?
                .into_inner();
            let token = zeroize::Zeroizing::new(issued.token);
            let mut canaries = Vec::new();
            for name in CANARY_NAMES {
                let value = zeroize::Zeroizing::new(canary_value(name));
                secrets
                    .put(req(
                        pb::PutRequest {
                            path: format!("tenant/{slug}/{CANARY_DIR}/{name}"),
                            value: value.as_bytes().to_vec(),
                            cas: None,
                        },
                        &token,
                    )?)
                    .await
                    .with_context(|| format!("cannot plant the canary {name} of {slug}"))?;
                canaries.push((name.to_string(), value));
            }
            Ok(TenantSetup {
                slug: slug.to_string(),
                token_id: issued.id,
                token,
                canaries,
            })
        })
    }

    /// With `actor`'s token, get, list and put on `target`'s paths.
    fn probe(&self, actor: &TenantSetup, target: &str) -> anyhow::Result<Vec<Probe>> {
        let mut secrets = SecretsClient::new(self.channel.clone());
        let token: &str = &actor.token;
        let get_path = format!("tenant/{target}/{CANARY_DIR}/{}", CANARY_NAMES[0]);
        let list_path = format!("tenant/{target}/");
        let put_path = format!("tenant/{target}/{CANARY_DIR}/probe-from-{}", actor.slug);
        let code = |r: Result<Code, tonic::Status>| match r {
            Ok(c) => c,
            Err(s) => s.code(),
        };
        self.rt.block_on(async {
            let get = code(
                secrets
                    .get(req(
                        pb::GetRequest {
                            path: get_path.clone(),
                            version: None,
                        },
                        token,
                    )?)
                    .await
                    .map(|_| Code::Ok),
            );
            let list = code(
                secrets
                    .list(req(
                        pb::ListRequest {
                            prefix: list_path.clone(),
                            after: String::new(),
                            limit: 10,
                        },
                        token,
                    )?)
                    .await
                    .map(|_| Code::Ok),
            );
            let put = code(
                secrets
                    .put(req(
                        pb::PutRequest {
                            path: put_path.clone(),
                            value: random_base62(&mut rand::rngs::OsRng, 24).into_bytes(),
                            cas: None,
                        },
                        token,
                    )?)
                    .await
                    .map(|_| Code::Ok),
            );
            let probe = |operation, path: &String, code| Probe {
                actor: actor.slug.clone(),
                target: target.to_string(),
                operation,
                path: path.clone(),
                code,
            };
            Ok(vec![
                probe("get", &get_path, get),
                probe("list", &list_path, list),
                probe("put", &put_path, put),
            ])
        })
    }

    /// Revokes the tenant tokens issued on a server that outlives the test.
    fn revoke(&self, setups: &[TenantSetup]) {
        if self.embedded.is_some() {
            return;
        }
        let mut tenants = TenantsClient::new(self.channel.clone());
        for s in setups {
            let Ok(r) = req(
                pb::RevokeTokenRequest {
                    id: s.token_id.clone(),
                },
                &self.operator,
            ) else {
                continue;
            };
            if let Err(e) = self.rt.block_on(tenants.revoke_token(r)) {
                eprintln!(
                    "tenant-guard: warning: cannot revoke the token of {}: {}",
                    s.slug,
                    e.message()
                );
            }
        }
    }
}

// ---- running the builds ---------------------------------------------------

struct Captured {
    status: RunStatus,
    duration: Duration,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn substitute(s: &str, tenant: &str) -> String {
    s.replace("{tenant}", tenant)
}

fn reader_thread(
    mut pipe: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let handle = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut v = b.lock().unwrap_or_else(|e| e.into_inner());
                    let room = MAX_LOG_BYTES.saturating_sub(v.len());
                    v.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
        }
    });
    (buf, handle)
}

#[cfg(unix)]
fn own_group(c: &mut Command) {
    use std::os::unix::process::CommandExt;
    c.process_group(0);
}

#[cfg(not(unix))]
fn own_group(_c: &mut Command) {}

/// Kills the run's whole process group (what the command started too).
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
}

fn run_one(plan: &Plan, tenant: &TenantSetup, addr: &str, env: &[(String, String)]) -> Captured {
    let start = Instant::now();
    let args: Vec<String> = plan
        .command
        .iter()
        .map(|a| substitute(a, &tenant.slug))
        .collect();
    let mut c = Command::new(&args[0]);
    c.args(&args[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for k in WITHHELD_ENV {
        c.env_remove(k);
    }
    c.env("TENANT_SLUG", &tenant.slug)
        .env("SECRET_MCP_ADDR", addr)
        .env("SECRET_MCP_TOKEN", tenant.token.as_str());
    for (k, v) in env {
        c.env(k, v);
    }
    own_group(&mut c);
    let mut child = match c.spawn() {
        Ok(child) => child,
        Err(e) => {
            return Captured {
                status: RunStatus::NotStarted(format!("{}: {e}", args[0])),
                duration: start.elapsed(),
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
        }
    };
    let (out_buf, out_thread) = reader_thread(child.stdout.take().expect("piped"));
    let (err_buf, err_thread) = reader_thread(child.stderr.take().expect("piped"));
    let deadline = start + plan.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => {
                break match s.code() {
                    Some(code) => RunStatus::Exited(code),
                    None => RunStatus::Signaled,
                };
            }
            Ok(None) if Instant::now() >= deadline => {
                kill_group(&mut child);
                let _ = child.wait();
                break RunStatus::TimedOut;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => break RunStatus::NotStarted(e.to_string()),
        }
    };
    let duration = start.elapsed();
    // Whatever the command left running goes with it, so that its output
    // pipes close; a process that left the group is waited for 2 s at most.
    kill_group(&mut child);
    let until = Instant::now() + Duration::from_secs(2);
    while !(out_thread.is_finished() && err_thread.is_finished()) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    let take =
        |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()));
    Captured {
        status,
        duration,
        stdout: take(&out_buf),
        stderr: take(&err_buf),
    }
}

// ---- scanning the outputs -------------------------------------------------

/// Runs the normal rules and the canary search on the same content.
struct CrossVisitor<'a> {
    scanner: Scanner,
    canaries: &'a CanarySet,
    findings: Vec<Finding>,
    hits: Vec<(String, CanaryMatch)>,
    files: u64,
}

struct Tee<'a, 'b> {
    inner: &'a mut dyn Read,
    stream: &'a mut tenant_guard_scan::CanaryStream<'b>,
}

impl Read for Tee<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.stream.feed(&buf[..n]);
        Ok(n)
    }
}

impl Visitor for CrossVisitor<'_> {
    fn content(&mut self, path: &str, content: &mut dyn Read) -> std::io::Result<()> {
        let mut stream = self.canaries.stream();
        let mut tee = Tee {
            inner: content,
            stream: &mut stream,
        };
        let result = self
            .scanner
            .scan_reader(path, &mut tee, &mut self.findings)
            .and_then(|()| std::io::copy(&mut tee, &mut std::io::sink()).map(|_| ()));
        self.files += 1;
        self.hits
            .extend(stream.finish().into_iter().map(|m| (path.to_string(), m)));
        result
    }

    fn notice(&mut self, finding: Finding) {
        self.findings.push(finding);
    }
}

/// Everything found in one tenant's outputs.
#[derive(Default)]
struct Outputs {
    findings: Vec<Finding>,
    /// (where, path, match).
    hits: Vec<(Where, String, CanaryMatch)>,
    files: u64,
}

fn scan_outputs(
    artifacts: Option<&Path>,
    logs: &[(&str, &[u8])],
    rules: &Arc<RuleSet>,
    options: &ScanOptions,
    canaries: &CanarySet,
) -> anyhow::Result<Outputs> {
    let mut out = Outputs::default();
    let make = || CrossVisitor {
        scanner: Scanner::new(rules.clone(), options.clone()),
        canaries,
        findings: Vec::new(),
        hits: Vec::new(),
        files: 0,
    };
    if let Some(dir) = artifacts {
        let shown = dir.to_string_lossy().replace('\\', "/");
        let shown = shown.trim_start_matches("./").trim_end_matches('/');
        let visitors = walk(
            &[dir.to_path_buf()],
            &WalkOptions::default().artifacts(true),
            make,
        )?;
        let prefix = |p: &str| {
            if dir.is_dir() {
                format!("{shown}/{p}")
            } else {
                p.to_string()
            }
        };
        for v in visitors {
            out.files += v.files;
            out.findings.extend(v.findings.into_iter().map(|mut f| {
                f.path = prefix(&f.path);
                f
            }));
            out.hits.extend(
                v.hits
                    .into_iter()
                    .map(|(p, m)| (Where::Artifact, prefix(&p), m)),
            );
        }
    }
    for (name, bytes) in logs {
        let mut v = make();
        visit_bytes(name, bytes, ArchiveLimits::default(), &mut v);
        out.findings.extend(v.findings);
        out.hits
            .extend(v.hits.into_iter().map(|(p, m)| (Where::Log, p, m)));
    }
    Ok(out)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Runs the whole test. Set-up failures are errors; a run that fails or
/// times out is in the report.
pub(crate) fn execute(plan: &Plan) -> anyhow::Result<CrossReport> {
    let config_path = match &plan.config {
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(CONFIG_FILE_NAME)).filter(|p| p.is_file()),
    };
    let policy = Policy::load(config_path.as_deref())?;
    let (config, _) = load_config(config_path.as_deref(), &[])?;
    let rules = Arc::new(rule_set(&config)?);
    let check: ExceptionCheck = exception_check(None, &[PathBuf::from(".")])?;
    let options = ScanOptions::default().exception_check(check.clone());

    let conn = VaultConn::open(plan)?;
    let result = execute_with(plan, &conn, policy, &rules, &options, &config, &check);
    conn.close();
    result
}

#[allow(clippy::too_many_arguments)]
fn execute_with(
    plan: &Plan,
    conn: &VaultConn,
    policy: Policy,
    rules: &Arc<RuleSet>,
    options: &ScanOptions,
    config: &tenant_guard_scan::Config,
    check: &ExceptionCheck,
) -> anyhow::Result<CrossReport> {
    let mut setups = Vec::new();
    for t in &plan.tenants {
        setups.push(conn.setup(t, plan.timeout)?);
    }
    let result = (|| {
        // Isolation probes, before any build could change anything.
        let mut probes = Vec::new();
        for a in &setups {
            for b in &plan.tenants {
                if &a.slug != b {
                    probes.extend(conn.probe(a, b)?);
                }
            }
        }

        // The canaries of every tenant, its vault token included.
        let mut canaries = Vec::new();
        for s in &setups {
            for (name, value) in &s.canaries {
                canaries.push(Canary::new(
                    &s.slug,
                    name.as_str(),
                    value.as_bytes().to_vec(),
                ));
            }
            canaries.push(Canary::new(
                &s.slug,
                TOKEN_CANARY,
                s.token.as_bytes().to_vec(),
            ));
        }
        let hashes: HashSet<String> = canaries.iter().map(|c| sha256_hex(c.value())).collect();
        let set = CanarySet::new(canaries).context("cannot compile the canaries")?;

        // The builds.
        let envs: Vec<Vec<(String, String)>> = setups
            .iter()
            .map(|s| {
                plan.inject
                    .iter()
                    .map(|(env, name)| {
                        let value = s
                            .canaries
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.to_string())
                            .unwrap_or_default();
                        (env.clone(), value)
                    })
                    .collect()
            })
            .collect();
        let captured: Vec<Captured> = if plan.parallel {
            std::thread::scope(|scope| {
                let handles: Vec<_> = setups
                    .iter()
                    .zip(&envs)
                    .map(|(s, env)| scope.spawn(|| run_one(plan, s, &conn.addr, env)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("run thread"))
                    .collect()
            })
        } else {
            setups
                .iter()
                .zip(&envs)
                .map(|(s, env)| run_one(plan, s, &conn.addr, env))
                .collect()
        };

        // The outputs.
        let mut runs = Vec::new();
        let mut leaks = Vec::new();
        let mut findings = Vec::new();
        for (s, cap) in setups.iter().zip(&captured) {
            let artifacts = plan.artifacts.as_deref().map(|a| substitute(a, &s.slug));
            let dir = artifacts.as_deref().map(Path::new);
            let missing = dir.is_some_and(|d| !d.exists());
            let outputs = scan_outputs(
                dir.filter(|_| !missing),
                &[("stdout", &cap.stdout), ("stderr", &cap.stderr)],
                rules,
                options,
                &set,
            )?;
            for (place, path, m) in outputs.hits {
                let c = &set.canaries()[m.canary];
                let kind = if c.owner != s.slug {
                    LeakKind::CrossTenant
                } else if place == Where::Artifact {
                    LeakKind::PlaintextInArtifact
                } else {
                    LeakKind::PlaintextInLog
                };
                leaks.push(Leak {
                    kind,
                    allowed: kind == LeakKind::PlaintextInLog && policy.allow_own_in_logs,
                    source: c.owner.clone(),
                    canary: c.name.clone(),
                    tenant: s.slug.clone(),
                    place,
                    path,
                    line: m.line,
                    offset: m.offset,
                    encoding: m.encoding.as_str(),
                });
            }
            let mut found = outputs.findings;
            // A canary the rules also match is reported once, as a canary.
            found.retain(|f| !hashes.contains(&f.secret_sha256));
            config.apply_allowlist(&mut found, check);
            findings.extend(found.into_iter().map(|f| (s.slug.clone(), f)));
            runs.push(Run {
                tenant: s.slug.clone(),
                status: cap.status.clone(),
                duration: cap.duration,
                artifacts,
                artifacts_missing: missing,
                stdout_bytes: cap.stdout.len(),
                stderr_bytes: cap.stderr.len(),
                files: outputs.files,
            });
        }
        leaks.sort_by(|a, b| {
            (&a.source, &a.tenant, &a.path, a.offset)
                .cmp(&(&b.source, &b.tenant, &b.path, b.offset))
        });
        Ok(CrossReport {
            tenants: plan.tenants.clone(),
            policy,
            vault: if conn.embedded.is_some() {
                format!("an embedded vault at {}", conn.addr)
            } else {
                conn.addr.clone()
            },
            runs,
            leaks,
            probes,
            findings,
            fail_on: plan.fail_on,
        })
    })();
    conn.revoke(&setups);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "10", "m", "5x", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn canaries_are_random_and_long() {
        let a = canary_value("api-token");
        assert_ne!(a, canary_value("api-token"));
        assert!(a.len() >= 40);
        assert_eq!(canary_value("db-password").chars().count(), 24);
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(Code::PermissionDenied), "PERMISSION_DENIED");
        assert_eq!(code_name(Code::Ok), "OK");
    }
}
