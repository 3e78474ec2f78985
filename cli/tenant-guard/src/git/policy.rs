//! The `[git]` table of `tenant-guard.toml`.
//!
//! Only that table is read (the rest of the file is the scanner's), so the
//! scanner's configuration types are not involved.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;

use super::names::is_slug;

/// Build tags allowed per tenant in any 24 h window when its plan sets no other.
pub(crate) const DEFAULT_QUOTA: u32 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct GitTable {
    base_branch: String,
    shared_branches: Vec<String>,
    shared_paths: Vec<String>,
    main_since: Option<String>,
    quota: u32,
    plans: BTreeMap<String, u32>,
    tenants: BTreeMap<String, String>,
}

impl Default for GitTable {
    fn default() -> GitTable {
        GitTable {
            base_branch: "main".to_string(),
            shared_branches: vec!["main".to_string()],
            shared_paths: Vec::new(),
            main_since: None,
            quota: DEFAULT_QUOTA,
            plans: BTreeMap::new(),
            tenants: BTreeMap::new(),
        }
    }
}

/// The Git policy, validated.
#[derive(Debug)]
pub(crate) struct Policy {
    /// The branch tenant branches start from and merge into.
    pub(crate) base_branch: String,
    /// Branches other than `tenant/*` that may be checked out and merged.
    pub(crate) shared_branches: Vec<String>,
    /// Paths any tenant branch may touch.
    pub(crate) shared_paths: GlobSet,
    /// The base branch is checked for direct commits after this commit only.
    pub(crate) main_since: Option<String>,
    quota: u32,
    plans: BTreeMap<String, u32>,
    tenants: BTreeMap<String, String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::from_table(GitTable::default()).expect("the default policy is valid")
    }
}

impl Policy {
    /// Reads the `[git]` table of a configuration file.
    pub(crate) fn load(path: &Path) -> anyhow::Result<Policy> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Policy::parse(&text).with_context(|| format!("{}: [git]", path.display()))
    }

    /// Parses the `[git]` table of configuration text (defaults when absent).
    pub(crate) fn parse(text: &str) -> anyhow::Result<Policy> {
        let mut table: toml::Table = toml::from_str(text)?;
        let git = match table.remove("git") {
            None => GitTable::default(),
            Some(v @ toml::Value::Table(_)) => v.try_into()?,
            Some(_) => bail!("`git` must be a table"),
        };
        Policy::from_table(git)
    }

    fn from_table(t: GitTable) -> anyhow::Result<Policy> {
        if t.base_branch.is_empty() {
            bail!("base_branch is empty");
        }
        let mut globs = GlobSetBuilder::new();
        for p in &t.shared_paths {
            let glob = GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .with_context(|| format!("shared_paths: bad glob `{p}`"))?;
            globs.add(glob);
        }
        for (tenant, plan) in &t.tenants {
            if !is_slug(tenant) {
                bail!("tenants: `{tenant}` is not a tenant slug");
            }
            if !t.plans.contains_key(plan) {
                bail!("tenants: `{tenant}` is on plan `{plan}`, which [git.plans] does not define");
            }
        }
        Ok(Policy {
            shared_paths: globs.build().context("shared_paths")?,
            base_branch: t.base_branch,
            shared_branches: t.shared_branches,
            main_since: t.main_since,
            quota: t.quota,
            plans: t.plans,
            tenants: t.tenants,
        })
    }

    /// The build quota of a tenant and the plan it comes from (`None`: the default).
    pub(crate) fn quota(&self, tenant: &str) -> (u32, Option<&str>) {
        match self.tenants.get(tenant) {
            Some(plan) => (self.plans[plan], Some(plan)),
            None => (self.quota, None),
        }
    }

    /// Whether `branch` may be checked out: a tenant branch, the base branch or a shared one.
    pub(crate) fn allows_branch(&self, branch: &str) -> bool {
        super::names::tenant_of_branch(branch).is_some()
            || branch == self.base_branch
            || self.shared_branches.iter().any(|b| b == branch)
    }

    /// Whether a merge of `branch` into the base branch is allowed: a tenant
    /// branch or a shared branch other than the base branch itself.
    pub(crate) fn allows_merge_of(&self, branch: &str) -> bool {
        branch != self.base_branch && self.allows_branch(branch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_plans() {
        let p = Policy::parse("[allowlist]\npaths = []\n").unwrap();
        assert_eq!(p.base_branch, "main");
        assert_eq!(p.quota("acme"), (DEFAULT_QUOTA, None));
        let p = Policy::parse(
            "[git]\nquota = 7\nshared_paths = ['app/shared/**']\n\
             [git.plans]\nstarter = 20\n[git.tenants]\nacme = 'starter'\n",
        )
        .unwrap();
        assert_eq!(p.quota("acme"), (20, Some("starter")));
        assert_eq!(p.quota("globex"), (7, None));
        assert!(p.shared_paths.is_match("app/shared/a/b.yaml"));
        assert!(!p.shared_paths.is_match("app/flows/a.yaml"));
    }

    #[test]
    fn bad_policies() {
        for bad in [
            "git = 1",
            "[git]\nunknown = 1",
            "[git]\nbase_branch = ''",
            "[git]\nshared_paths = ['a[']",
            "[git.tenants]\nacme = 'gold'",
            "[git.tenants]\nAcme = 'gold'\n[git.plans]\ngold = 1",
            "[git.plans]\ngold = -1",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }
}
