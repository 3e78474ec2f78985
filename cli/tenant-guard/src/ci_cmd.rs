//! `tenant-guard ci`: every check of a pipeline in one step, with one report
//! and one exit code (docs/SCANNER.md, "CI pipelines").

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Deserialize;
use serde_json::{Value, json};
use tenant_guard_scan::{
    CONFIG_FILE_NAME, DEFAULT_REGISTER_PATH, ExceptionCheck, Format, IsoDate, Register,
    RegisterProblem, ReportOptions, RuleSet, ScanReport, Severity, Validity, write_report,
};
use time::OffsetDateTime;

use crate::Outcome;
use crate::common::{Case, ScanInput, load_config, plural, rule_set, scan_with, write_testcases};
use crate::cross_cmd::{CrossReport, CrossVerdict, Plan, parse_duration};
use crate::git::check::{Report as GitReport, check};
use crate::scan_cmd::{FormatArg, SeverityArg};

/// A step of `tenant-guard ci`, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Step {
    /// Scan of the sources, .gitignore respected.
    Sources,
    /// Scan of the build outputs, everything and archives included.
    Artifacts,
    /// `git check`.
    Git,
    /// `adr check`.
    Adr,
    /// `cross`, when `[ci] cross` is configured.
    Cross,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Sources => "sources",
            Step::Artifacts => "artifacts",
            Step::Git => "git",
            Step::Adr => "adr",
            Step::Cross => "cross",
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CiArgs {
    /// Source files and directories, scanned with .gitignore respected.
    #[arg(long, value_name = "PATH", num_args = 1.., default_value = ".")]
    sources: Vec<PathBuf>,
    /// Build outputs, scanned as by `scan --artifacts` (default: the `artifacts`
    /// list of the `[ci]` table; the step is skipped when there are none).
    #[arg(long, value_name = "PATH", num_args = 1..)]
    artifacts: Vec<PathBuf>,
    /// Configuration file (default: tenant-guard.toml in the current directory, if any).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Exceptions register, checked and used for suppressions
    /// (default: docs/adr_exceptions.md; the adr step is skipped when it does not exist).
    #[arg(long, value_name = "FILE")]
    exceptions: Option<PathBuf>,
    /// Output format of the combined report.
    #[arg(long, value_enum, default_value = "human")]
    format: FormatArg,
    /// Write the report to FILE instead of standard output (a human summary,
    /// secrets redacted, then goes to standard error for the job's log).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// A scan step fails when a finding at or above this severity remains.
    #[arg(long, value_enum, default_value = "low")]
    fail_on: SeverityArg,
    /// A step not to run (repeatable).
    #[arg(long, value_enum, value_name = "STEP")]
    skip: Vec<Step>,
}

/// The `[ci]` table of `tenant-guard.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CiTable {
    /// Build outputs for the artifacts step, relative to the current directory.
    artifacts: Vec<PathBuf>,
    /// Cross-tenant tests (`tenant-guard cross`), run after the other steps.
    cross: Option<CrossTable>,
}

/// `[ci] cross`: the options of `tenant-guard cross`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CrossTable {
    tenants: Vec<String>,
    /// The build command and its arguments; `{tenant}` is replaced.
    command: Vec<String>,
    #[serde(default)]
    artifacts: Option<String>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    parallel: bool,
    /// `ENV=NAME` entries, as `--inject`.
    #[serde(default)]
    inject: Vec<String>,
    /// An existing Secret MCP server; the operator token comes from
    /// TENANT_GUARD_OPERATOR_TOKEN.
    #[serde(default)]
    vault: Option<String>,
}

impl CrossTable {
    fn plan(&self, config: Option<&Path>, fail_on: Severity) -> anyhow::Result<Plan> {
        let mut plan = Plan::new(self.tenants.clone(), &self.inject, self.command.clone())
            .context("[ci] cross")?;
        plan.artifacts = self.artifacts.clone();
        if let Some(t) = &self.timeout {
            plan.timeout = parse_duration(t).map_err(|e| anyhow::anyhow!("[ci] cross: {e}"))?;
        }
        plan.parallel = self.parallel;
        plan.vault = self.vault.clone();
        plan.operator_token = std::env::var("TENANT_GUARD_OPERATOR_TOKEN")
            .ok()
            .filter(|t| !t.is_empty());
        plan.config = config.map(Path::to_path_buf);
        plan.fail_on = fail_on;
        Ok(plan)
    }
}

impl CiTable {
    fn load(path: &Path) -> anyhow::Result<CiTable> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        match table.remove("ci") {
            None => Ok(CiTable::default()),
            Some(v @ toml::Value::Table(_)) => v
                .try_into()
                .with_context(|| format!("{}: [ci]", path.display())),
            Some(_) => bail!("{}: `ci` must be a table", path.display()),
        }
    }
}

/// How a step ended.
#[derive(Debug)]
enum Verdict {
    Passed,
    Failed,
    Skipped(String),
    Error(String),
}

impl Verdict {
    fn as_str(&self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Skipped(_) => "skipped",
            Verdict::Error(_) => "error",
        }
    }

    fn note(&self) -> Option<&str> {
        match self {
            Verdict::Skipped(s) | Verdict::Error(s) => Some(s),
            _ => None,
        }
    }
}

/// What a step looked at and found.
#[derive(Debug)]
enum Detail {
    None,
    Scan(ScanReport),
    Git(GitReport),
    Adr {
        file: PathBuf,
        exceptions: usize,
        problems: Vec<RegisterProblem>,
    },
    Cross(Box<CrossReport>),
}

#[derive(Debug)]
struct StepResult {
    step: Step,
    verdict: Verdict,
    detail: Detail,
}

impl StepResult {
    fn bare(step: Step, verdict: Verdict) -> StepResult {
        StepResult {
            step,
            verdict,
            detail: Detail::None,
        }
    }
}

pub(crate) fn run(args: CiArgs) -> anyhow::Result<Outcome> {
    let config = match &args.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(CONFIG_FILE_NAME)).filter(|p| p.is_file()),
    };
    let ci = match &config {
        Some(path) => CiTable::load(path)?,
        None => CiTable::default(),
    };
    let threshold = Severity::from(args.fail_on);
    let cross_plan = match &ci.cross {
        Some(table) => Some(table.plan(config.as_deref(), threshold)?),
        None => None,
    };
    let artifacts = if args.artifacts.is_empty() {
        ci.artifacts
    } else {
        args.artifacts.clone()
    };
    let register = args
        .exceptions
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_REGISTER_PATH));
    let scan_exceptions = args
        .exceptions
        .clone()
        .or_else(|| Some(register.clone()).filter(|p| p.is_file()));
    let check = match &scan_exceptions {
        Some(path) => scan_check(path)?,
        None => ExceptionCheck::accept_all(),
    };
    let skipped = |s: Step| args.skip.contains(&s);
    let skip_note = || Verdict::Skipped("skipped with --skip".into());

    let mut rules: Option<Arc<RuleSet>> = None;
    let mut steps = Vec::new();
    for (step, paths, artifacts_walk) in [
        (Step::Sources, &args.sources, false),
        (Step::Artifacts, &artifacts, true),
    ] {
        if skipped(step) {
            steps.push(StepResult::bare(step, skip_note()));
            continue;
        }
        if paths.is_empty() {
            steps.push(StepResult::bare(
                step,
                Verdict::Skipped("no artifacts: give --artifacts or [ci] artifacts".into()),
            ));
            continue;
        }
        let input = ScanInput {
            paths: paths.clone(),
            artifacts: artifacts_walk,
            config: config.clone(),
            exceptions: None,
            threads: 0,
            max_archive_depth: 8,
            max_expanded_bytes: 1 << 30,
            max_expansion_ratio: 100,
            fingerprints: Vec::new(),
        };
        steps.push(match scan_with(&input, false, check.clone()) {
            Ok((mut report, set, _)) => {
                rebase(&mut report, paths);
                rules.get_or_insert(set);
                let failed = report.active().any(|f| f.severity >= threshold);
                StepResult {
                    step,
                    verdict: if failed {
                        Verdict::Failed
                    } else {
                        Verdict::Passed
                    },
                    detail: Detail::Scan(report),
                }
            }
            Err(e) => StepResult::bare(step, Verdict::Error(format!("{e:#}"))),
        });
    }

    steps.push(if skipped(Step::Git) {
        StepResult::bare(Step::Git, skip_note())
    } else {
        git_step(args.config.as_deref())
    });

    steps.push(if skipped(Step::Adr) {
        StepResult::bare(Step::Adr, skip_note())
    } else if !register.is_file() {
        StepResult::bare(
            Step::Adr,
            Verdict::Skipped(format!("no register at {}", register.display())),
        )
    } else {
        match crate::adr_cmd::check_file(&register, IsoDate::today_utc()) {
            Ok((exceptions, problems)) => StepResult {
                step: Step::Adr,
                verdict: if problems.is_empty() {
                    Verdict::Passed
                } else {
                    Verdict::Failed
                },
                detail: Detail::Adr {
                    file: register.clone(),
                    exceptions,
                    problems,
                },
            },
            Err(e) => StepResult::bare(Step::Adr, Verdict::Error(format!("{e:#}"))),
        }
    });

    // Cross-tenant tests: only when configured.
    if let Some(plan) = &cross_plan {
        steps.push(if skipped(Step::Cross) {
            StepResult::bare(Step::Cross, skip_note())
        } else {
            match crate::cross_cmd::execute(plan) {
                Ok(report) => StepResult {
                    step: Step::Cross,
                    verdict: match report.verdict() {
                        CrossVerdict::Passed => Verdict::Passed,
                        CrossVerdict::Failed => Verdict::Failed,
                        CrossVerdict::Error(e) => Verdict::Error(e),
                    },
                    detail: Detail::Cross(Box::new(report)),
                },
                Err(e) => StepResult::bare(Step::Cross, Verdict::Error(format!("{e:#}"))),
            }
        });
    }

    let rules = match rules {
        Some(r) => r,
        None => Arc::new(rule_set(&load_config(config.as_deref(), &[])?.0)?),
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    if args.output.is_some() {
        // The report goes to a file (SARIF for code scanning, JUnit for the
        // merge request): the job's log still says what failed and where.
        let mut err = std::io::stderr().lock();
        human(&mut err, &steps, &rules, threshold).context("cannot write to standard error")?;
    }
    match args.format {
        FormatArg::Human => human(&mut out, &steps, &rules, threshold),
        FormatArg::Json => json_report(&mut out, &steps, &rules),
        FormatArg::Sarif => sarif(&mut out, &steps, &rules),
        FormatArg::Junit => junit(&mut out, &steps, threshold),
    }
    .and_then(|()| out.flush())
    .context("cannot write the report")?;

    if let Some(e) = steps.iter().find_map(|s| match &s.verdict {
        Verdict::Error(e) => Some((s.step, e)),
        _ => None,
    }) {
        bail!("ci step {} could not run: {}", e.0.name(), e.1);
    }
    Ok(
        if steps.iter().any(|s| matches!(s.verdict, Verdict::Failed)) {
            Outcome::Failed
        } else {
            Outcome::Clean
        },
    )
}

/// The exception check of both scans: against the register at `path`. A
/// register that does not parse is the adr step's failure, not an error:
/// every suppression is then refused (nothing is suppressed on the word of a
/// register that cannot be read), and each finding says why.
fn scan_check(path: &Path) -> anyhow::Result<ExceptionCheck> {
    match Register::load(path) {
        Ok(register) => {
            let today = IsoDate::today_utc();
            Ok(ExceptionCheck::new(move |id| register.validity(id, today)))
        }
        Err(tenant_guard_scan::Error::Register { .. }) => {
            let file = path.display().to_string();
            Ok(ExceptionCheck::new(move |id| {
                Validity::Invalid(format!(
                    "exception {id} cannot be checked: the exceptions register {file} does not \
                     parse (see the adr step): the finding is not suppressed"
                ))
            }))
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs `git check` on the repository of the current directory, if it is one.
fn git_step(config: Option<&Path>) -> StepResult {
    if crate::git::repo::Repo::open(Path::new(".")).is_err() {
        return StepResult::bare(Step::Git, Verdict::Skipped("not a git work tree".into()));
    }
    let result = crate::git_cmd::open(Path::new("."), config)
        .and_then(|(repo, policy)| check(&repo, &policy, OffsetDateTime::now_utc()));
    match result {
        Ok(report) => StepResult {
            step: Step::Git,
            verdict: if report.violations.is_empty() {
                Verdict::Passed
            } else {
                Verdict::Failed
            },
            detail: Detail::Git(report),
        },
        Err(e) => StepResult::bare(Step::Git, Verdict::Error(format!("{e:#}"))),
    }
}

/// Makes finding paths relative to the current directory when the scan had
/// one directory root (the scanner shows them relative to that root), so
/// that both scans' findings name their files unambiguously.
fn rebase(report: &mut ScanReport, roots: &[PathBuf]) {
    let [root] = roots else { return };
    if !root.is_dir() {
        return;
    }
    let prefix = root.to_string_lossy().replace('\\', "/");
    let prefix = prefix.trim_start_matches("./").trim_end_matches('/');
    if prefix.is_empty() || prefix == "." {
        return;
    }
    for f in &mut report.findings {
        f.path = format!("{prefix}/{}", f.path);
    }
}

fn summary(s: &StepResult, threshold: Severity) -> String {
    match (&s.detail, &s.verdict) {
        (_, Verdict::Skipped(note) | Verdict::Error(note)) => note.clone(),
        (Detail::Scan(r), _) => format!(
            "{} at or above {}, {} in total, in {}",
            plural(
                r.active().filter(|f| f.severity >= threshold).count(),
                "finding"
            ),
            threshold.as_str(),
            r.active().count(),
            plural(r.files as usize, "file")
        ),
        (Detail::Git(r), _) => format!(
            "{} on {}, {} and {} checked",
            plural(r.violations.len(), "violation"),
            r.branch.as_deref().unwrap_or("a detached HEAD"),
            plural(r.commits, "commit"),
            plural(r.build_tags, "build tag")
        ),
        (
            Detail::Adr {
                file,
                exceptions,
                problems,
            },
            _,
        ) => format!(
            "{}: {}, {}",
            file.display(),
            plural(*exceptions, "exception"),
            plural(problems.len(), "problem")
        ),
        (Detail::Cross(r), _) => r.summary(),
        (Detail::None, _) => String::new(),
    }
}

fn human(
    out: &mut dyn Write,
    steps: &[StepResult],
    rules: &RuleSet,
    threshold: Severity,
) -> std::io::Result<()> {
    for s in steps {
        writeln!(
            out,
            "{}: {}: {}",
            s.step.name(),
            s.verdict.as_str(),
            summary(s, threshold)
        )?;
        match &s.detail {
            Detail::Scan(r) if r.active().next().is_some() => {
                let mut buf = Vec::new();
                write_report(&mut buf, Format::Human, r, rules, &ReportOptions::default())?;
                for line in String::from_utf8_lossy(&buf).lines() {
                    writeln!(out, "    {line}")?;
                }
            }
            Detail::Git(r) => {
                for v in &r.violations {
                    writeln!(out, "    {}: {}", v.rule, v.message)?;
                }
            }
            Detail::Cross(r) => {
                let mut buf = Vec::new();
                r.human(&mut buf, false)?;
                for line in String::from_utf8_lossy(&buf).lines() {
                    writeln!(out, "    {line}")?;
                }
            }
            Detail::Adr { file, problems, .. } => {
                for p in problems {
                    writeln!(
                        out,
                        "    {}:{}: {}: {}",
                        file.display(),
                        p.line,
                        p.id,
                        p.kind
                    )?;
                }
            }
            _ => {}
        }
    }
    let count = |v: &str| steps.iter().filter(|s| s.verdict.as_str() == v).count();
    writeln!(
        out,
        "ci: {} passed, {} failed, {} skipped, {} errors",
        count("passed"),
        count("failed"),
        count("skipped"),
        count("error")
    )
}

fn scan_json(report: &ScanReport, rules: &RuleSet, format: Format) -> std::io::Result<Value> {
    let mut buf = Vec::new();
    write_report(&mut buf, format, report, rules, &ReportOptions::default())?;
    Ok(serde_json::from_slice(&buf)?)
}

fn json_report(out: &mut dyn Write, steps: &[StepResult], rules: &RuleSet) -> std::io::Result<()> {
    let mut sections = serde_json::Map::new();
    for s in steps {
        let mut section = json!({ "verdict": s.verdict.as_str() });
        if let Some(note) = s.verdict.note() {
            section["note"] = json!(note);
        }
        match &s.detail {
            Detail::Scan(r) => section["report"] = scan_json(r, rules, Format::Json)?,
            Detail::Git(r) => section["report"] = serde_json::to_value(r)?,
            Detail::Cross(r) => section["report"] = r.json(),
            Detail::Adr {
                file,
                exceptions,
                problems,
            } => {
                section["report"] = json!({
                    "file": file.to_string_lossy(),
                    "exceptions": exceptions,
                    "problems": problems.iter().map(|p| json!({
                        "line": p.line,
                        "id": p.id,
                        "message": p.kind.to_string(),
                    })).collect::<Vec<_>>(),
                });
            }
            Detail::None => {}
        }
        sections.insert(s.step.name().into(), section);
    }
    let doc = json!({
        "tool": "tenant-guard",
        "version": env!("CARGO_PKG_VERSION"),
        "steps": sections,
    });
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

/// The scan findings of both scans, and the register's problems as results of
/// the synthetic rule `adr-register`.
fn sarif(out: &mut dyn Write, steps: &[StepResult], rules: &RuleSet) -> std::io::Result<()> {
    let mut all = ScanReport::default();
    for s in steps {
        if let Detail::Scan(r) = &s.detail {
            all.findings.extend(r.findings.iter().cloned());
            all.files += r.files;
            all.bytes += r.bytes;
        }
    }
    all.sort();
    let mut doc = scan_json(&all, rules, Format::Sarif)?;
    let problems: Vec<(&PathBuf, &RegisterProblem)> = steps
        .iter()
        .filter_map(|s| match &s.detail {
            Detail::Adr { file, problems, .. } => Some(problems.iter().map(move |p| (file, p))),
            _ => None,
        })
        .flatten()
        .collect();
    if !problems.is_empty() {
        let run = &mut doc["runs"][0];
        let index = run["tool"]["driver"]["rules"]
            .as_array()
            .map_or(0, Vec::len);
        if let Some(list) = run["tool"]["driver"]["rules"].as_array_mut() {
            list.push(json!({
                "id": "adr-register",
                "name": "Exceptions register problem",
                "shortDescription": { "text": "Exceptions register problem" },
                "fullDescription": { "text": "An entry of the exceptions register is malformed or past its withdrawal date (tenant-guard adr check)." },
                "defaultConfiguration": { "level": "error" },
                "properties": { "tags": ["maintainability"] },
            }));
        }
        if let Some(results) = run["results"].as_array_mut() {
            for (file, p) in problems {
                results.push(json!({
                    "ruleId": "adr-register",
                    "ruleIndex": index,
                    "level": "error",
                    "message": { "text": format!("{}: {}", p.id, p.kind) },
                    "locations": [{ "physicalLocation": {
                        "artifactLocation": {
                            "uri": file.to_string_lossy().replace('\\', "/").trim_start_matches("./"),
                            "uriBaseId": "%SRCROOT%",
                        },
                        "region": { "startLine": p.line },
                    }}],
                }));
            }
        }
    }
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    writeln!(out)
}

/// The test cases of a step: one per finding or violation, or one for the
/// step itself when it passed, was skipped or could not run.
fn cases(s: &StepResult, threshold: Severity) -> Vec<Case> {
    let step = s.step.name().to_string();
    let mut cases: Vec<Case> = Vec::new();
    match &s.detail {
        Detail::Scan(r) => {
            for f in r.active() {
                let name = format!("{} at {}:{}:{}", f.rule_id, f.path, f.line, f.column);
                let body = format!(
                    "{} [{}] {}\nmatch: {}\nfingerprint: {}",
                    f.rule_id,
                    f.kind.as_str(),
                    f.message,
                    f.redacted,
                    f.fingerprint
                );
                let failure = (f.severity >= threshold)
                    .then(|| ("failure", f.severity.as_str().to_string(), body));
                cases.push((f.path.clone(), name, failure));
            }
        }
        Detail::Git(r) => {
            for v in &r.violations {
                cases.push((
                    step.clone(),
                    format!("{}: {}", v.rule, v.message),
                    Some(("failure", v.rule.to_string(), v.message.clone())),
                ));
            }
        }
        Detail::Adr { file, problems, .. } => {
            for p in problems {
                let text = format!("{}:{}: {}: {}", file.display(), p.line, p.id, p.kind);
                cases.push((
                    step.clone(),
                    text.clone(),
                    Some(("failure", "adr-register".into(), text)),
                ));
            }
        }
        Detail::Cross(r) => cases.extend(r.junit_cases()),
        Detail::None => {}
    }
    match &s.verdict {
        Verdict::Skipped(note) => cases.push((
            step.clone(),
            step,
            Some(("skipped", String::new(), note.clone())),
        )),
        Verdict::Error(note) => cases.push((
            step.clone(),
            step,
            Some(("error", "error".into(), note.clone())),
        )),
        _ if cases.is_empty() => cases.push((step, format!("{} passed", s.step.name()), None)),
        _ => {}
    }
    cases
}

fn junit(out: &mut dyn Write, steps: &[StepResult], threshold: Severity) -> std::io::Result<()> {
    let suites: Vec<(&StepResult, Vec<Case>)> =
        steps.iter().map(|s| (s, cases(s, threshold))).collect();
    let count = |cases: &[Case], kind: &str| {
        cases
            .iter()
            .filter(|c| c.2.as_ref().is_some_and(|o| o.0 == kind))
            .count()
    };
    let all: Vec<Case> = suites.iter().flat_map(|(_, c)| c.iter().cloned()).collect();
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="tenant-guard ci" tests="{}" failures="{}" errors="{}" skipped="{}">"#,
        all.len(),
        count(&all, "failure"),
        count(&all, "error"),
        count(&all, "skipped")
    )?;
    for (s, cases) in &suites {
        writeln!(
            out,
            r#"  <testsuite name="{}" tests="{}" failures="{}" errors="{}" skipped="{}">"#,
            s.step.name(),
            cases.len(),
            count(cases, "failure"),
            count(cases, "error"),
            count(cases, "skipped")
        )?;
        write_testcases(out, cases)?;
        writeln!(out, "  </testsuite>")?;
    }
    writeln!(out, "</testsuites>")
}
