//! `tenant-guard init`: a commented starter `tenant-guard.toml`.

use std::path::Path;

use anyhow::Context;
use clap::Args;
use tenant_guard_scan::CONFIG_FILE_NAME;

use crate::Outcome;

/// The starter configuration: every setting shown, commented out, so it
/// loads as the default configuration until edited.
pub(crate) const STARTER: &str = r#"# tenant-guard configuration, read from the scan root (or given with --config).
# Reference: docs/SCANNER.md, "Configuration". Unknown keys are an error.

# Built-in rules to turn off, by id (`tenant-guard rules list`).
# disable = ["generic-secret-assignment"]

# Change fields of a built-in rule.
# [[override]]
# id = "aws-access-key-id"
# severity = "critical"

# Rules of your own, with the schema of policies/rules/*.toml;
# `tenant-guard rules check` proves them with their examples.
# [[rules]]
# id = "acme-internal-token"
# name = "ACME internal token"
# description = "A token for ACME's internal API."
# regex = '''\b(acme_[A-Za-z0-9]{32})\b'''
# keywords = ["acme_"]
# severity = "high"
# examples = []                            # texts that must yield a finding

# Paths whose findings are suppressed. Each names an exception recorded in
# docs/adr_exceptions.md (`tenant-guard adr new`); an unknown or expired
# exception does not suppress.
# [allowlist]
# paths = [{ glob = "testdata/**", exception = "ADR-001" }]
"#;

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Overwrite an existing tenant-guard.toml.
    #[arg(long)]
    force: bool,
}

pub(crate) fn run(args: InitArgs) -> anyhow::Result<Outcome> {
    let path = Path::new(CONFIG_FILE_NAME);
    if path.exists() && !args.force {
        anyhow::bail!("{CONFIG_FILE_NAME} already exists: pass --force to overwrite it");
    }
    std::fs::write(path, STARTER).with_context(|| format!("cannot write {CONFIG_FILE_NAME}"))?;
    println!("wrote {CONFIG_FILE_NAME}");
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starter_loads_and_its_examples_load_uncommented() {
        tenant_guard_scan::Config::parse("starter", STARTER).unwrap();
        // Uncommenting every setting gives a valid configuration too.
        let uncommented: String = STARTER
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                l.starts_with('[')
                    || l.split_once(" = ")
                        .is_some_and(|(k, _)| !k.contains(' ') && !k.is_empty())
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(uncommented.contains("[allowlist]"), "{uncommented}");
        let config = tenant_guard_scan::Config::parse("uncommented", &uncommented)
            .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        let rules = tenant_guard_scan::builtin_rules().unwrap();
        let rules = config.apply_rules(rules).unwrap();
        assert!(rules.iter().any(|r| r.id == "acme-internal-token"));
    }
}
