//! `git prune-tags`: deletes local build tags older than a retention.

use time::{Duration, OffsetDateTime};

use super::names::parse_build_tag;
use super::repo::Repo;

/// Deletes (unless `dry_run`) the build tags whose timestamp is before
/// `now - retention`; returns their names, sorted. Malformed tags are kept.
pub(crate) fn prune_tags(
    repo: &Repo,
    retention: Duration,
    now: OffsetDateTime,
    dry_run: bool,
) -> anyhow::Result<Vec<String>> {
    let cutoff = now - retention;
    let mut old: Vec<String> = repo
        .refs("refs/tags/bld/")?
        .into_iter()
        .filter_map(|(name, _)| parse_build_tag(&name).ok())
        .filter(|tag| tag.time < cutoff)
        .map(|tag| tag.name)
        .collect();
    old.sort();
    if !dry_run && !old.is_empty() {
        let script: String = old
            .iter()
            .map(|name| format!("delete refs/tags/{name}\n"))
            .collect();
        repo.run_with(&["update-ref", "--stdin"], &[], Some(script.as_bytes()))?;
    }
    Ok(old)
}
