//! Output formats: human, JSON, SARIF 2.1.0 and JUnit XML.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde_json::{Value, json};

use crate::{Finding, FindingKind, RuleSet, ScanReport, Severity};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// One finding per block, for people; coloured on request.
    Human,
    /// The findings and a summary as one JSON document.
    Json,
    /// SARIF 2.1.0, as accepted by GitHub code scanning.
    Sarif,
    /// JUnit XML, one test case per finding.
    Junit,
}

/// How to render a report.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ReportOptions {
    /// Use ANSI colours (human format only).
    pub color: bool,
    /// Print full secrets where findings carry them.
    pub show_secrets: bool,
}

impl ReportOptions {
    /// Sets [`ReportOptions::color`].
    pub fn color(mut self, yes: bool) -> Self {
        self.color = yes;
        self
    }
    /// Sets [`ReportOptions::show_secrets`].
    pub fn show_secrets(mut self, yes: bool) -> Self {
        self.show_secrets = yes;
        self
    }
}

const TOOL: &str = "tenant-guard";
const VERSION: &str = env!("CARGO_PKG_VERSION");
const INFO_URI: &str = "https://example.invalid/tenant-vault/docs/SCANNER.md";

/// Writes `report` (its unsuppressed findings, in report order) to `out`.
/// Output is buffered here (and flushed at the end): standard output is
/// line-buffered, which made a pretty-printed JSON report one `write` per
/// line.
pub fn write_report(
    out: &mut dyn Write,
    format: Format,
    report: &ScanReport,
    rules: &RuleSet,
    options: &ReportOptions,
) -> io::Result<()> {
    let mut out = io::BufWriter::with_capacity(64 << 10, out);
    write_formatted(&mut out, format, report, rules, options)?;
    out.flush()
}

fn write_formatted(
    out: &mut dyn Write,
    format: Format,
    report: &ScanReport,
    rules: &RuleSet,
    options: &ReportOptions,
) -> io::Result<()> {
    match format {
        Format::Human => human(out, report, options),
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &json_report(report, options))?;
            writeln!(out)
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &sarif(report, rules))?;
            writeln!(out)
        }
        Format::Junit => junit(out, report, options),
    }
}

fn suppressed(report: &ScanReport) -> usize {
    report.findings.len() - report.active().count()
}

fn paint(color: bool, severity: Severity) -> (&'static str, &'static str) {
    if !color {
        return ("", "");
    }
    let start = match severity {
        Severity::Critical => "\x1b[1;31m",
        Severity::High => "\x1b[31m",
        Severity::Medium => "\x1b[33m",
        Severity::Low => "\x1b[36m",
        Severity::Info => "\x1b[2m",
    };
    (start, "\x1b[0m")
}

fn human(out: &mut dyn Write, report: &ScanReport, options: &ReportOptions) -> io::Result<()> {
    for f in report.active() {
        let (on, off) = paint(options.color, f.severity);
        let severity = f.severity.as_str().to_ascii_uppercase();
        writeln!(
            out,
            "{on}{severity:<8}{off} {}:{}:{}  {} [{}]",
            f.path,
            f.line,
            f.column,
            f.rule_id,
            f.kind.as_str()
        )?;
        writeln!(out, "         {}", f.message)?;
        if !f.redacted.is_empty() {
            writeln!(out, "         match: {}", f.redacted)?;
        }
        if let (true, Some(secret)) = (options.show_secrets, &f.secret) {
            writeln!(out, "         secret: {}", secret.expose())?;
        }
        if let Some(note) = &f.note {
            writeln!(out, "         note: {note}")?;
        }
        writeln!(out, "         fingerprint: {}", f.fingerprint)?;
    }
    let active = report.active().count();
    writeln!(
        out,
        "{} finding{} ({} suppressed) in {} files, {:.1} MiB scanned",
        active,
        if active == 1 { "" } else { "s" },
        suppressed(report),
        report.files,
        report.bytes as f64 / (1024.0 * 1024.0)
    )
}

fn json_report(report: &ScanReport, options: &ReportOptions) -> Value {
    let findings: Vec<Value> = report
        .active()
        .map(|f| {
            let mut v = serde_json::to_value(f).expect("a finding serializes");
            if let (true, Some(secret)) = (options.show_secrets, &f.secret) {
                v["secret"] = Value::String(secret.expose().to_string());
            }
            v
        })
        .collect();
    json!({
        "tool": TOOL,
        "version": VERSION,
        "findings": findings,
        "summary": {
            "findings": report.active().count(),
            "suppressed": suppressed(report),
            "files": report.files,
            "bytes": report.bytes,
        }
    })
}

fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub's `security-severity` score for a severity.
fn security_severity(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "1.0",
    }
}

/// Percent-encodes what may not stand in a URI path.
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sarif(report: &ScanReport, rules: &RuleSet) -> Value {
    let mut descriptors: BTreeMap<String, Value> = BTreeMap::new();
    for r in rules.rules() {
        let mut tags = vec!["security".to_string(), "secret".to_string()];
        tags.extend(r.tags.iter().cloned());
        let mut d = json!({
            "id": r.id,
            "name": r.name,
            "shortDescription": { "text": r.name },
            "fullDescription": { "text": r.description },
            "defaultConfiguration": { "level": sarif_level(r.severity) },
            "properties": { "tags": tags, "security-severity": security_severity(r.severity) },
        });
        d["helpUri"] = Value::String(
            r.references
                .first()
                .cloned()
                .unwrap_or_else(|| INFO_URI.into()),
        );
        descriptors.insert(r.id.clone(), d);
    }
    for (kind, severity, text) in [
        (
            FindingKind::PathTraversal,
            Severity::High,
            "An archive entry whose name escapes the archive",
        ),
        (
            FindingKind::ArchiveLimit,
            Severity::Medium,
            "An archive not followed: too deep, too large or a possible bomb",
        ),
        (
            FindingKind::Unreadable,
            Severity::Info,
            "A file or archive entry that could not be read",
        ),
        (
            FindingKind::VaultSecret,
            Severity::Critical,
            "The value of a vault secret, recognised by its fingerprint",
        ),
    ] {
        descriptors.insert(
            kind.as_str().into(),
            json!({
                "id": kind.as_str(),
                "name": kind.as_str(),
                "shortDescription": { "text": text },
                "fullDescription": { "text": text },
                "helpUri": INFO_URI,
                "defaultConfiguration": { "level": sarif_level(severity) },
                "properties": { "tags": ["security"], "security-severity": security_severity(severity) },
            }),
        );
    }
    let index: BTreeMap<&str, usize> = descriptors
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();
    let results: Vec<Value> = report
        .active()
        .map(|f| {
            let mut text = f.message.clone();
            if !f.redacted.is_empty() {
                text.push_str(&format!(" ({})", f.redacted));
            }
            if let Some(note) = &f.note {
                text.push_str(&format!("; {note}"));
            }
            let mut r = json!({
                "ruleId": f.rule_id,
                "level": sarif_level(f.severity),
                "message": { "text": text },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&f.path), "uriBaseId": "%SRCROOT%" },
                        "region": { "startLine": f.line, "startColumn": f.column },
                    }
                }],
                "partialFingerprints": { "tenantGuardFingerprint/v1": f.fingerprint },
                "properties": { "kind": f.kind.as_str(), "severity": f.severity.as_str() },
            });
            if let Some(i) = index.get(f.rule_id.as_str()) {
                r["ruleIndex"] = json!(i);
            }
            r
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": TOOL,
                "version": VERSION,
                "informationUri": INFO_URI,
                "rules": descriptors.into_values().collect::<Vec<_>>(),
            }},
            "results": results,
        }]
    })
}

/// Escapes text for an XML attribute or element.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn junit(out: &mut dyn Write, report: &ScanReport, options: &ReportOptions) -> io::Result<()> {
    let active: Vec<&Finding> = report.active().collect();
    let tests = active.len().max(1);
    writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
    writeln!(
        out,
        r#"<testsuites name="tenant-guard scan" tests="{tests}" failures="{}">"#,
        active.len()
    )?;
    writeln!(
        out,
        r#"  <testsuite name="tenant-guard scan" tests="{tests}" failures="{}" errors="0" skipped="0">"#,
        active.len()
    )?;
    if active.is_empty() {
        writeln!(
            out,
            r#"    <testcase classname="tenant-guard" name="no leaks found"/>"#
        )?;
    }
    for f in active {
        let location = format!("{}:{}:{}", f.path, f.line, f.column);
        writeln!(
            out,
            r#"    <testcase classname="{}" name="{} at {}">"#,
            xml(&f.path),
            xml(&f.rule_id),
            xml(&location)
        )?;
        let mut body = format!(
            "{} [{}] {}\nmatch: {}\nfingerprint: {}",
            f.rule_id,
            f.kind.as_str(),
            f.message,
            f.redacted,
            f.fingerprint
        );
        if let (true, Some(secret)) = (options.show_secrets, &f.secret) {
            body.push_str(&format!("\nsecret: {}", secret.expose()));
        }
        if let Some(note) = &f.note {
            body.push_str(&format!("\nnote: {note}"));
        }
        writeln!(
            out,
            r#"      <failure message="{}" type="{}">{}</failure>"#,
            xml(&format!("{} at {location}", f.message)),
            f.severity.as_str(),
            xml(&body)
        )?;
        writeln!(out, "    </testcase>")?;
    }
    writeln!(out, "  </testsuite>")?;
    writeln!(out, "</testsuites>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(xml("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(uri("dist/app.jar!/a b%.txt"), "dist/app.jar!/a%20b%25.txt");
    }
}
