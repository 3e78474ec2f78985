//! tenant-guard: leak scanning and cross-tenant checks for CI.
//!
//! Exit codes: 0 clean, 1 findings at or above `--fail-on` (or failing
//! rules for `rules check`), 2 on any error (bad config, path, regex...).

mod adr_cmd;
mod baseline_cmd;
mod ci_cmd;
mod common;
mod cross_cmd;
mod git;
mod git_cmd;
mod init_cmd;
mod rules_cmd;
mod scan_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Leak scanning and cross-tenant checks for CI.
#[derive(Debug, Parser)]
#[command(name = "tenant-guard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Scan files, directories and build outputs (archives included) for leaked secrets.
    Scan(scan_cmd::ScanArgs),
    /// List or check the detection rules.
    #[command(subcommand)]
    Rules(rules_cmd::RulesCommand),
    /// Record current findings as known, under an exception id.
    #[command(subcommand)]
    Baseline(baseline_cmd::BaselineCommand),
    /// Check the exceptions register or record a new exception.
    #[command(subcommand)]
    Adr(adr_cmd::AdrCommand),
    /// Write a commented starter tenant-guard.toml in the current directory.
    Init(init_cmd::InitArgs),
    /// Check and apply the platform's Git conventions (tenant branches, build tags).
    #[command(subcommand)]
    Git(git_cmd::GitCommand),
    /// Run every CI check in one step: both scans, git check and adr check.
    Ci(ci_cmd::CiArgs),
    /// Cross-tenant leak tests: run a build per tenant with planted canaries,
    /// find each tenant's canaries in the others' outputs, probe the vault's isolation.
    Cross(cross_cmd::CrossArgs),
}

/// What a command found, mapped to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Nothing to report (exit 0).
    Clean,
    /// Findings or failing rules (exit 1).
    Failed,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => scan_cmd::run(args),
        Command::Rules(cmd) => rules_cmd::run(cmd),
        Command::Baseline(cmd) => baseline_cmd::run(cmd),
        Command::Adr(cmd) => adr_cmd::run(cmd),
        Command::Init(args) => init_cmd::run(args),
        Command::Git(cmd) => git_cmd::run(cmd),
        Command::Ci(args) => ci_cmd::run(args),
        Command::Cross(args) => cross_cmd::run(args),
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::from(1),
        Err(e) => {
            eprintln!("tenant-guard: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
