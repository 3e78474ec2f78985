//! `tenant-guard git check|init-tenant|prune-tags`: the platform's Git conventions.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tenant_guard_scan::CONFIG_FILE_NAME;
use time::{Duration, OffsetDateTime};

use crate::Outcome;
use crate::git::check::check;
use crate::git::init::{Created, init_tenant};
use crate::git::names::{parse_now, parse_retention, parse_slug};
use crate::git::policy::Policy;
use crate::git::prune::prune_tags;
use crate::git::repo::Repo;

#[derive(Debug, Subcommand)]
pub(crate) enum GitCommand {
    /// Check the branch, its commits and the build tags against the `[git]` policy.
    Check(CheckArgs),
    /// Create tenant/SLUG from the base branch with app/flows/SLUG/.gitkeep (idempotent).
    InitTenant(InitArgs),
    /// Delete local build tags older than a retention.
    PruneTags(PruneArgs),
}

/// The repository and its policy.
#[derive(Debug, Args)]
pub(crate) struct RepoArgs {
    /// A directory in the repository.
    #[arg(long, value_name = "DIR", default_value = ".")]
    repo: PathBuf,
    /// Configuration file with a `[git]` table (default: tenant-guard.toml at the repository top, if any).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl RepoArgs {
    fn open(&self) -> anyhow::Result<(Repo, Policy)> {
        open(&self.repo, self.config.as_deref())
    }
}

/// The repository holding `dir` and the `[git]` policy of `config` (default:
/// tenant-guard.toml at the repository top, if any).
pub(crate) fn open(dir: &Path, config: Option<&Path>) -> anyhow::Result<(Repo, Policy)> {
    let repo = Repo::open(dir)?;
    let policy = match config {
        Some(path) => Policy::load(path)?,
        None => {
            let implicit = repo.top().join(CONFIG_FILE_NAME);
            if implicit.is_file() {
                Policy::load(&implicit)?
            } else {
                Policy::default()
            }
        }
    };
    Ok((repo, policy))
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum GitFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The current time, RFC 3339 (default: the clock); build tags may not be dated later.
    #[arg(long, value_name = "RFC3339", value_parser = parse_now)]
    now: Option<OffsetDateTime>,
    /// Output format.
    #[arg(long, value_enum, default_value = "human")]
    format: GitFormat,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// The tenant slug (a DNS label).
    #[arg(value_parser = parse_slug)]
    slug: String,
    #[command(flatten)]
    repo: RepoArgs,
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Delete build tags dated before now minus this (Nd or Nh, e.g. 30d).
    #[arg(long, value_name = "DURATION", value_parser = parse_retention)]
    older_than: Duration,
    /// Print what would be deleted and delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// The current time, RFC 3339 (default: the clock).
    #[arg(long, value_name = "RFC3339", value_parser = parse_now)]
    now: Option<OffsetDateTime>,
    #[command(flatten)]
    repo: RepoArgs,
}

pub(crate) fn run(cmd: GitCommand) -> anyhow::Result<Outcome> {
    match cmd {
        GitCommand::Check(args) => run_check(args),
        GitCommand::InitTenant(args) => {
            let (repo, policy) = args.repo.open()?;
            let branch = format!("tenant/{}", args.slug);
            match init_tenant(&repo, &policy, &args.slug)? {
                Created::Branch(commit) => println!(
                    "created {branch} at {} with app/flows/{}/ (from {})",
                    &commit[..commit.len().min(12)],
                    args.slug,
                    policy.base_branch
                ),
                Created::AlreadyCreated => println!("{branch}: already created"),
            }
            Ok(Outcome::Clean)
        }
        GitCommand::PruneTags(args) => {
            let (repo, _) = args.repo.open()?;
            let now = args.now.unwrap_or_else(OffsetDateTime::now_utc);
            let removed = prune_tags(&repo, args.older_than, now, args.dry_run)?;
            let verb = if args.dry_run {
                "would delete"
            } else {
                "deleted"
            };
            for name in &removed {
                println!("{verb} {name}");
            }
            println!("prune-tags: {} build tags {verb}", removed.len());
            Ok(Outcome::Clean)
        }
    }
}

fn run_check(args: CheckArgs) -> anyhow::Result<Outcome> {
    let (repo, policy) = args.repo.open()?;
    let now = args.now.unwrap_or_else(OffsetDateTime::now_utc);
    let report = check(&repo, &policy, now)?;
    match args.format {
        GitFormat::Json => {
            let json = serde_json::to_string_pretty(&report).context("cannot write the report")?;
            println!("{json}");
        }
        GitFormat::Human => {
            for v in &report.violations {
                println!("{}: {}", v.rule, v.message);
            }
            println!(
                "git check: {} on {}, {} commits and {} build tags checked",
                match report.violations.len() {
                    0 => "ok".to_string(),
                    n => format!("{n} violations"),
                },
                report.branch.as_deref().unwrap_or("a detached HEAD"),
                report.commits,
                report.build_tags
            );
        }
    }
    Ok(if report.violations.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Failed
    })
}
