//! `tenant-guard adr check|new`: the exceptions register.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use tenant_guard_scan::{
    DEFAULT_REGISTER_PATH, ExceptionDraft, IsoDate, Register, RegisterProblem, append_exception,
    check_register,
};

use crate::Outcome;

#[derive(Debug, Subcommand)]
pub(crate) enum AdrCommand {
    /// Check the register: every field present, ids well-formed and unique,
    /// dates valid, no withdrawal date in the past.
    Check {
        /// The register.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_REGISTER_PATH)]
        file: PathBuf,
        /// Check withdrawal dates against this day instead of today (UTC).
        #[arg(long, value_name = "YYYY-MM-DD")]
        today: Option<IsoDate>,
    },
    /// Append a new exception under the next free id, dated today, and print its id.
    New {
        /// The heading's title: what is excepted.
        #[arg(long)]
        title: String,
        /// What the rules would otherwise report.
        #[arg(long)]
        context: String,
        /// Why the finding cannot simply be fixed.
        #[arg(long)]
        cause: String,
        /// What is suppressed, and how.
        #[arg(long)]
        decision: String,
        /// The plan to remove the exception.
        #[arg(long)]
        withdrawal: String,
        /// The last day the exception is in force.
        #[arg(long, value_name = "YYYY-MM-DD")]
        withdraw_by: IsoDate,
        /// The register (created with a short header if missing).
        #[arg(long, value_name = "FILE", default_value = DEFAULT_REGISTER_PATH)]
        file: PathBuf,
    },
}

pub(crate) fn run(cmd: AdrCommand) -> anyhow::Result<Outcome> {
    match cmd {
        AdrCommand::Check { file, today } => check(&file, today.unwrap_or_else(IsoDate::today_utc)),
        AdrCommand::New {
            title,
            context,
            cause,
            decision,
            withdrawal,
            withdraw_by,
            file,
        } => {
            let draft = ExceptionDraft {
                title,
                context,
                cause,
                decision,
                withdrawal_plan: withdrawal,
                withdraw_by,
            };
            new(&file, &draft)
        }
    }
}

/// Checks the register in `file`: how many exceptions it holds (0 when it is
/// malformed) and its problems, in line order.
pub(crate) fn check_file(
    file: &Path,
    today: IsoDate,
) -> anyhow::Result<(usize, Vec<RegisterProblem>)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let problems = check_register(&text, today);
    let n = Register::parse(&text).map_or(0, |r| r.exceptions().len());
    Ok((n, problems))
}

fn check(file: &Path, today: IsoDate) -> anyhow::Result<Outcome> {
    let (n, problems) = check_file(file, today)?;
    if problems.is_empty() {
        println!(
            "{}: {n} exception{}, no problems",
            file.display(),
            if n == 1 { "" } else { "s" }
        );
        return Ok(Outcome::Clean);
    }
    for p in &problems {
        eprintln!("{}:{}: {}: {}", file.display(), p.line, p.id, p.kind);
    }
    eprintln!(
        "{}: {} problem{}",
        file.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    Ok(Outcome::Failed)
}

fn new(file: &Path, draft: &ExceptionDraft) -> anyhow::Result<Outcome> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    let (id, text) = append_exception(
        &file.display().to_string(),
        &text,
        draft,
        IsoDate::today_utc(),
    )?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(file, text).with_context(|| format!("cannot write {}", file.display()))?;
    println!("{id}");
    Ok(Outcome::Clean)
}
