//! `tenant-guard baseline create|update`.

use std::path::PathBuf;

use clap::Subcommand;
use tenant_guard_scan::{Baseline, ExceptionId};

use crate::Outcome;
use crate::common::{ScanInput, scan};

fn exception_id(s: &str) -> Result<ExceptionId, String> {
    ExceptionId::parse(s)
        .ok_or_else(|| format!("`{s}` is not an exception id (ADR- and 3+ digits)"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum BaselineCommand {
    /// Scan and record every finding in a new baseline file.
    Create {
        /// The baseline file to write.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// The exception (ADR-NNN) the findings are recorded under.
        #[arg(long, value_parser = exception_id)]
        exception: ExceptionId,
        #[command(flatten)]
        input: ScanInput,
    },
    /// Scan again: drop entries no longer found, add new findings.
    Update {
        /// The baseline file to update in place.
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// The exception new findings are recorded under (default: the file's).
        #[arg(long, value_parser = exception_id)]
        exception: Option<ExceptionId>,
        #[command(flatten)]
        input: ScanInput,
    },
}

pub(crate) fn run(cmd: BaselineCommand) -> anyhow::Result<Outcome> {
    match cmd {
        BaselineCommand::Create {
            output,
            exception,
            input,
        } => {
            let (report, ..) = scan(&input, false)?;
            let baseline = Baseline::from_findings(&report.findings, exception);
            baseline.save(&output)?;
            println!(
                "baseline: {} entries written to {}",
                baseline.entries.len(),
                output.display()
            );
        }
        BaselineCommand::Update {
            output,
            exception,
            input,
        } => {
            let mut baseline = Baseline::load(&output)?;
            if exception.is_none() && baseline.exception.is_none() {
                anyhow::bail!(
                    "{} has no exception id of its own: pass --exception ADR-NNN",
                    output.display()
                );
            }
            let (report, ..) = scan(&input, false)?;
            let (added, removed) = baseline.update(&report.findings, exception);
            baseline.save(&output)?;
            println!(
                "baseline: {added} added, {removed} removed, {} entries in {}",
                baseline.entries.len(),
                output.display()
            );
        }
    }
    Ok(Outcome::Clean)
}
