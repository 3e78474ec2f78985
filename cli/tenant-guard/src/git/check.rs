//! `git check`: the checked-out branch, its commits, the base branch's
//! history, build tag names and the build quota.

use std::collections::BTreeMap;

use anyhow::bail;
use serde::Serialize;
use time::{Duration, OffsetDateTime};

use super::names::{FLOWS_DIR, format_ts, parse_build_tag, tenant_of_branch};
use super::policy::Policy;
use super::repo::Repo;

/// One broken convention.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Violation {
    /// `branch`, `tenant-paths`, `direct-commit`, `build-tag` or `build-quota`.
    pub(crate) rule: &'static str,
    /// What is wrong, for people.
    pub(crate) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    paths: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<u32>,
}

/// What `git check` looked at and found.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// The branch checked out (`None`: detached HEAD).
    pub(crate) branch: Option<String>,
    /// Commits whose paths or merges were checked.
    pub(crate) commits: usize,
    /// Tags under `bld/`.
    pub(crate) build_tags: usize,
    /// Everything that breaks the conventions, in rule order.
    pub(crate) violations: Vec<Violation>,
}

/// Checks the repository against the policy; `now` bounds build timestamps.
pub(crate) fn check(repo: &Repo, policy: &Policy, now: OffsetDateTime) -> anyhow::Result<Report> {
    if repo.commit("HEAD")?.is_none() {
        bail!("the repository has no commits");
    }
    let branch = repo.current_branch()?;
    let mut report = Report {
        branch: branch.clone(),
        commits: 0,
        build_tags: 0,
        violations: Vec::new(),
    };
    match branch.as_deref() {
        None => report.violations.push(Violation {
            rule: "branch",
            message: "HEAD is detached: check out tenant/<slug> or a shared branch".into(),
            ..Violation::default()
        }),
        Some(b) if !policy.allows_branch(b) => report.violations.push(Violation {
            rule: "branch",
            message: format!(
                "branch `{b}` is neither tenant/<slug> nor a shared branch ({})",
                shared_list(policy)
            ),
            ..Violation::default()
        }),
        Some(b) => {
            if let Some(tenant) = tenant_of_branch(b) {
                check_tenant_paths(repo, policy, tenant, &mut report)?;
            } else if b == policy.base_branch {
                check_base_history(repo, policy, &mut report)?;
            }
        }
    }
    check_build_tags(repo, policy, now, &mut report)?;
    Ok(report)
}

fn shared_list(policy: &Policy) -> String {
    let mut names = vec![policy.base_branch.as_str()];
    names.extend(
        policy
            .shared_branches
            .iter()
            .map(String::as_str)
            .filter(|b| *b != policy.base_branch),
    );
    names.join(", ")
}

/// Every non-merge commit on the tenant branch and not on the base branch
/// touches only the tenant's folder and the shared paths.
fn check_tenant_paths(
    repo: &Repo,
    policy: &Policy,
    tenant: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let base = &policy.base_branch;
    if repo.commit(base)?.is_none() {
        bail!("the base branch `{base}` does not exist");
    }
    let own = format!("{FLOWS_DIR}{tenant}/");
    let commits = repo.commits(&["--no-merges", &format!("{base}..HEAD")], "%H%x1f%h%x1f%s")?;
    report.commits += commits.len();
    for c in commits.iter().rev() {
        let [id, short, subject] = &c[..] else {
            bail!("git rev-list: unexpected output");
        };
        let out = repo.run(&[
            "diff-tree",
            "--root",
            "--no-commit-id",
            "--no-renames",
            "--name-only",
            "-r",
            "-z",
            id,
        ])?;
        let offending: Vec<String> = out
            .split('\0')
            .filter(|p| !p.is_empty())
            .filter(|p| !p.starts_with(&own) && !policy.shared_paths.is_match(p))
            .map(str::to_string)
            .collect();
        let Some(first) = offending.first() else {
            continue;
        };
        let whose = match first
            .strip_prefix(FLOWS_DIR)
            .and_then(|rest| rest.split_once('/'))
        {
            Some((other, _)) => format!("the folder of tenant `{other}`"),
            None => format!("outside {own} and the shared paths"),
        };
        let more = match offending.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        report.violations.push(Violation {
            rule: "tenant-paths",
            message: format!("{short} \"{subject}\" touches {first}, {whose}{more}"),
            commit: Some(short.clone()),
            subject: Some(subject.clone()),
            paths: offending,
            tenant: Some(tenant.to_string()),
            ..Violation::default()
        });
    }
    Ok(())
}

/// The branch a merge commit merged, from its subject: git's `Merge branch
/// 'B'` (and `... into X`, `... of URL`), `Merge remote-tracking branch
/// 'R/B'` and GitHub's `Merge pull request #N from OWNER/B`.
fn merged_branch_from_subject(subject: &str) -> Option<&str> {
    if let Some(rest) = subject.strip_prefix("Merge branch '") {
        return rest.split_once('\'').map(|(b, _)| b);
    }
    if let Some(rest) = subject.strip_prefix("Merge remote-tracking branch '") {
        let (remote_branch, _) = rest.split_once('\'')?;
        return remote_branch.split_once('/').map(|(_, b)| b);
    }
    if let Some(rest) = subject.strip_prefix("Merge pull request #") {
        let (_, from) = rest.split_once(" from ")?;
        let from = from.split_whitespace().next()?;
        return from.split_once('/').map(|(_, b)| b);
    }
    None
}

/// No direct commits on the base branch: each commit of its first-parent
/// history after `main_since` (the root commit excepted) merges an allowed branch.
fn check_base_history(repo: &Repo, policy: &Policy, report: &mut Report) -> anyhow::Result<()> {
    let base = &policy.base_branch;
    let mut args = vec!["--first-parent".to_string(), base.clone()];
    if let Some(since) = &policy.main_since {
        let Some(id) = repo.commit(since)? else {
            bail!("main_since: `{since}` is not a commit");
        };
        args.push(format!("^{id}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let commits = repo.commits(&args, "%h%x1f%P%x1f%s")?;
    report.commits += commits.len();
    let tips: BTreeMap<String, String> = repo
        .refs("refs/heads/")?
        .into_iter()
        .filter(|(name, _)| policy.allows_merge_of(name))
        .map(|(name, id)| (id, name))
        .collect();
    for c in commits.iter().rev() {
        let [short, parents, subject] = &c[..] else {
            bail!("git rev-list: unexpected output");
        };
        let parents: Vec<&str> = parents.split_whitespace().collect();
        let problem = match parents[..] {
            [] => None,
            [_] => Some("is a direct commit, not a merge".to_string()),
            [_, second] => {
                let merged = merged_branch_from_subject(subject)
                    .or_else(|| tips.get(second).map(String::as_str));
                match merged {
                    Some(b) if policy.allows_merge_of(b) => None,
                    Some(b) => Some(format!(
                        "merges `{b}`, which is neither tenant/<slug> nor a shared branch"
                    )),
                    None => Some("merges a branch that cannot be identified".to_string()),
                }
            }
            _ => Some("is an octopus merge".to_string()),
        };
        if let Some(problem) = problem {
            report.violations.push(Violation {
                rule: "direct-commit",
                message: format!("{short} \"{subject}\" on {base} {problem}"),
                commit: Some(short.clone()),
                subject: Some(subject.clone()),
                ..Violation::default()
            });
        }
    }
    Ok(())
}

/// Tags under `bld/` are well formed, not dated after `now`, and within quota.
fn check_build_tags(
    repo: &Repo,
    policy: &Policy,
    now: OffsetDateTime,
    report: &mut Report,
) -> anyhow::Result<()> {
    let tags = repo.refs("refs/tags/bld/")?;
    report.build_tags = tags.len();
    let mut per_tenant: BTreeMap<String, Vec<OffsetDateTime>> = BTreeMap::new();
    for (name, _) in tags {
        match parse_build_tag(&name) {
            Ok(tag) if tag.time > now => report.violations.push(Violation {
                rule: "build-tag",
                message: format!("build tag {name} is dated after now ({})", format_ts(now)),
                tag: Some(name),
                tenant: Some(tag.tenant),
                ..Violation::default()
            }),
            Ok(tag) => per_tenant.entry(tag.tenant).or_default().push(tag.time),
            Err(why) => report.violations.push(Violation {
                rule: "build-tag",
                message: format!("malformed build tag {name}: {why}"),
                tag: Some(name),
                ..Violation::default()
            }),
        }
    }
    for (tenant, mut times) in per_tenant {
        times.sort();
        let (count, start) = busiest_day(&times);
        let (limit, plan) = policy.quota(&tenant);
        if count > limit as usize {
            let plan = match plan {
                Some(p) => format!("plan {p}"),
                None => "default quota".to_string(),
            };
            report.violations.push(Violation {
                rule: "build-quota",
                message: format!(
                    "tenant {tenant}: {count} build tags in the 24 h from {} (limit {limit}, {plan})",
                    format_ts(start)
                ),
                tenant: Some(tenant),
                count: Some(count),
                limit: Some(limit),
                ..Violation::default()
            });
        }
    }
    Ok(())
}

/// The most times (sorted) within one window `[t, t + 24 h)`, and its start.
fn busiest_day(times: &[OffsetDateTime]) -> (usize, OffsetDateTime) {
    let mut best = (0, times[0]);
    let mut end = 0;
    for (start, t) in times.iter().enumerate() {
        while end < times.len() && times[end] - *t < Duration::hours(24) {
            end += 1;
        }
        if end - start > best.0 {
            best = (end - start, *t);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::names::parse_ts;

    #[test]
    fn merge_subjects() {
        for (subject, branch) in [
            ("Merge branch 'tenant/acme'", Some("tenant/acme")),
            ("Merge branch 'tenant/acme' into main", Some("tenant/acme")),
            (
                "Merge branch 'tenant/acme' into 'main'",
                Some("tenant/acme"),
            ),
            (
                "Merge remote-tracking branch 'origin/tenant/acme'",
                Some("tenant/acme"),
            ),
            (
                "Merge pull request #12 from someone/tenant/acme",
                Some("tenant/acme"),
            ),
            ("Fix the build", None),
        ] {
            assert_eq!(merged_branch_from_subject(subject), branch, "{subject}");
        }
    }

    #[test]
    fn windows() {
        let t = |s| parse_ts(s).unwrap();
        let times = [
            t("20261101T000000Z"),
            t("20261101T120000Z"),
            t("20261102T000000Z"),
            t("20261102T115959Z"),
            t("20261103T000000Z"),
        ];
        // [Nov 1 12:00, Nov 2 12:00) holds three; Nov 2 00:00 is outside Nov 1's window.
        assert_eq!(busiest_day(&times), (3, times[1]));
    }
}
