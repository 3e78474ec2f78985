//! `git init-tenant`: the tenant branch and folder, created with plumbing so
//! that HEAD, the index and the work tree are left alone.

use std::path::PathBuf;

use anyhow::bail;

use super::names::{FLOWS_DIR, TENANT_BRANCH_PREFIX};
use super::policy::Policy;
use super::repo::Repo;

/// What `init-tenant` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// The branch was created at this commit.
    Branch(String),
    /// The branch already existed with the tenant's folder: nothing changed.
    AlreadyCreated,
}

/// Creates `tenant/<slug>` from the base branch, with `app/flows/<slug>/.gitkeep`
/// committed on it unless the base branch already has that file.
pub(crate) fn init_tenant(repo: &Repo, policy: &Policy, slug: &str) -> anyhow::Result<Created> {
    let branch = format!("{TENANT_BRANCH_PREFIX}{slug}");
    let folder = format!("{FLOWS_DIR}{slug}");
    let keep = format!("{folder}/.gitkeep");
    if repo.commit(&format!("refs/heads/{branch}"))?.is_some() {
        let has_folder = repo
            .try_run(&["cat-file", "-e", &format!("refs/heads/{branch}:{folder}")])?
            .is_some();
        if has_folder {
            return Ok(Created::AlreadyCreated);
        }
        bail!("{branch} exists but has no {folder}/: add it there by hand");
    }
    let base = &policy.base_branch;
    let Some(base_id) = repo.commit(&format!("refs/heads/{base}"))? else {
        bail!("the base branch `{base}` does not exist");
    };
    let commit = if repo
        .try_run(&["cat-file", "-e", &format!("{base_id}:{keep}")])?
        .is_some()
    {
        base_id.clone()
    } else {
        let tree = tree_with_empty_file(repo, &base_id, &keep)?;
        let message = format!("{branch}: create {folder}/");
        repo.run(&["commit-tree", &tree, "-p", &base_id, "-m", &message])?
            .trim()
            .to_string()
    };
    // The empty old value makes this fail if the branch appeared meanwhile.
    repo.run(&[
        "update-ref",
        "-m",
        "tenant-guard git init-tenant",
        &format!("refs/heads/{branch}"),
        &commit,
        "",
    ])?;
    Ok(Created::Branch(commit))
}

/// The tree of `base` with an empty file added at `path`, built in a
/// temporary index so the real one is untouched.
fn tree_with_empty_file(repo: &Repo, base: &str, path: &str) -> anyhow::Result<String> {
    let index = repo.run(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        &format!("tenant-guard-index.{}", std::process::id()),
    ])?;
    let index = PathBuf::from(index.trim_end_matches('\n'));
    let _remove = RemoveOnDrop(index.clone());
    let env = [("GIT_INDEX_FILE", index.as_path())];
    repo.run_with(&["read-tree", base], &env, None)?;
    let blob = repo.run_with(&["hash-object", "-w", "--stdin"], &[], Some(b""))?;
    let info = format!("100644,{},{path}", blob.trim());
    repo.run_with(&["update-index", "--add", "--cacheinfo", &info], &env, None)?;
    Ok(repo
        .run_with(&["write-tree"], &env, None)?
        .trim()
        .to_string())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
