//! `tenant-guard rules list|check`.

use std::path::PathBuf;

use clap::Subcommand;
use tenant_guard_scan::{builtin_rules, check_rules};

use crate::Outcome;
use crate::common::load_config;

#[derive(Debug, Subcommand)]
pub(crate) enum RulesCommand {
    /// Print each rule's id, severity and description.
    List {
        /// Configuration file adding, disabling or overriding rules.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Prove every rule against its examples and negative examples; exit 1 on any failure.
    Check {
        /// Configuration file adding, disabling or overriding rules.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: RulesCommand) -> anyhow::Result<Outcome> {
    let here = [PathBuf::from(".")];
    match cmd {
        RulesCommand::List { config } => {
            let (config, _) = load_config(config.as_deref(), &here)?;
            let rules = config.apply_rules(builtin_rules()?)?;
            let width = rules.iter().map(|r| r.id.len()).max().unwrap_or(0);
            for r in &rules {
                println!(
                    "{:<width$}  {:<8}  {}",
                    r.id,
                    r.severity.as_str(),
                    r.description
                );
            }
            println!("{} rules", rules.len());
            Ok(Outcome::Clean)
        }
        RulesCommand::Check { config } => {
            let (config, _) = load_config(config.as_deref(), &here)?;
            let rules = config.apply_rules(builtin_rules()?)?;
            let failures = check_rules(&rules);
            for f in &failures {
                println!("FAIL {}", f.id);
                for p in &f.problems {
                    println!("  - {p}");
                }
            }
            println!("{} rules checked, {} failed", rules.len(), failures.len());
            Ok(if failures.is_empty() && !rules.is_empty() {
                Outcome::Clean
            } else {
                Outcome::Failed
            })
        }
    }
}
