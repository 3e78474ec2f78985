//! `tenant-guard scan`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tenant_guard_scan::{Baseline, Format, ReportOptions, Severity, write_report};

use crate::Outcome;
use crate::common::{ScanInput, scan};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    Human,
    Json,
    Sarif,
    Junit,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ColorArg {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum SeverityArg {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Severity {
        match s {
            SeverityArg::Info => Severity::Info,
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ScanArgs {
    #[command(flatten)]
    input: ScanInput,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: FormatArg,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Colour (human format): auto uses colour on a terminal unless NO_COLOR is set.
    #[arg(long, value_enum, default_value = "auto")]
    color: ColorArg,
    /// Exit 1 when a finding at or above this severity remains.
    #[arg(long, value_enum, default_value = "low")]
    fail_on: SeverityArg,
    /// Report only findings whose fingerprint is not in this baseline file.
    #[arg(long, value_name = "FILE")]
    baseline: Option<PathBuf>,
    /// Print full secret values (never stored anywhere else).
    #[arg(long)]
    show_secrets: bool,
}

pub(crate) fn run(args: ScanArgs) -> anyhow::Result<Outcome> {
    let baseline = args.baseline.as_deref().map(Baseline::load).transpose()?;
    let (mut report, rules, check) = scan(&args.input, args.show_secrets)?;
    if let Some(b) = &baseline {
        b.apply(&mut report.findings, &check);
    }
    let format = match args.format {
        FormatArg::Human => Format::Human,
        FormatArg::Json => Format::Json,
        FormatArg::Sarif => Format::Sarif,
        FormatArg::Junit => Format::Junit,
    };
    let to_terminal = args.output.is_none() && std::io::stdout().is_terminal();
    let color = match args.color {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => to_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
    };
    let options = ReportOptions::default()
        .color(color)
        .show_secrets(args.show_secrets);
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    write_report(&mut out, format, &report, &rules, &options).context("cannot write the report")?;
    out.flush().context("cannot write the report")?;
    let threshold = Severity::from(args.fail_on);
    Ok(if report.active().any(|f| f.severity >= threshold) {
        Outcome::Failed
    } else {
        Outcome::Clean
    })
}
