//! Runs the `git` command line in one repository.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};

/// A non-bare repository, addressed by its top-level directory.
#[derive(Debug)]
pub(crate) struct Repo {
    top: PathBuf,
}

impl Repo {
    /// The repository holding `dir`.
    pub(crate) fn open(dir: &Path) -> anyhow::Result<Repo> {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["rev-parse", "--show-toplevel"])
            .output()
            .context("cannot run git")?;
        if !out.status.success() {
            bail!(
                "{} is not in a git work tree: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let top = String::from_utf8(out.stdout).context("git: non-UTF-8 path")?;
        Ok(Repo {
            top: PathBuf::from(top.trim_end_matches('\n')),
        })
    }

    /// The top-level directory of the work tree.
    pub(crate) fn top(&self) -> &Path {
        &self.top
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.arg("-C").arg(&self.top).args(args);
        c.env("GIT_TERMINAL_PROMPT", "0");
        c
    }

    fn output(&self, mut c: Command, stdin: Option<&[u8]>) -> anyhow::Result<Output> {
        c.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = c.spawn().context("cannot run git")?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(input).context("cannot write to git")?;
        }
        child.wait_with_output().context("cannot run git")
    }

    /// Runs `git ARGS` (with extra environment and input); its standard
    /// output, or an error naming the command and its message.
    pub(crate) fn run_with(
        &self,
        args: &[&str],
        env: &[(&str, &Path)],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<String> {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = self.output(c, stdin)?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).with_context(|| format!("git {}: non-UTF-8 output", args[0]))
    }

    /// Runs `git ARGS`; its standard output.
    pub(crate) fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_with(args, &[], None)
    }

    /// Runs `git ARGS`, which may fail: `None` when it does.
    pub(crate) fn try_run(&self, args: &[&str]) -> anyhow::Result<Option<String>> {
        let out = self.output(self.command(args), None)?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }

    /// The commit `rev` names, if any.
    pub(crate) fn commit(&self, rev: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .try_run(&["rev-parse", "--verify", "-q", &format!("{rev}^{{commit}}")])?
            .map(|s| s.trim().to_string()))
    }

    /// The branch checked out (`None` on a detached HEAD).
    pub(crate) fn current_branch(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .try_run(&["symbolic-ref", "-q", "HEAD"])?
            .and_then(|s| s.trim().strip_prefix("refs/heads/").map(str::to_string)))
    }

    /// `(name, object)` of each ref under `prefix` (e.g. `refs/tags/bld/`),
    /// names without the first two components (`refs/tags/`).
    pub(crate) fn refs(&self, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
        let out = self.run(&[
            "for-each-ref",
            "--format=%(refname:strip=2)%00%(objectname)",
            prefix,
        ])?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once('\0'))
            .map(|(n, o)| (n.to_string(), o.to_string()))
            .collect())
    }

    /// Commits of `git rev-list ARGS`, each with the fields of `format`
    /// (git placeholders separated by `%x1f`).
    pub(crate) fn commits(&self, args: &[&str], format: &str) -> anyhow::Result<Vec<Vec<String>>> {
        let format = format!("--format={format}");
        let mut all = vec!["rev-list", &format];
        all.extend_from_slice(args);
        all.push("--");
        let out = self.run(&all)?;
        // Each commit is a `commit <id>` line, then its formatted line.
        Ok(out
            .lines()
            .skip(1)
            .step_by(2)
            .map(|l| l.split('\x1f').map(str::to_string).collect())
            .collect())
    }
}
