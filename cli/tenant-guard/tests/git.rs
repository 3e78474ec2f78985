//! `tenant-guard git ...` on real repositories built in temp dirs.

use std::path::Path;
use std::process::{Command, Output};

/// A throwaway repository, independent of the user's and the system's git configuration.
struct Repo {
    tmp: tempfile::TempDir,
}

fn isolate(c: &mut Command, home: &Path) {
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", home)
        .env("GIT_AUTHOR_DATE", "2026-11-01T12:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-11-01T12:00:00Z")
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_WORK_TREE");
}

impl Repo {
    /// A repository on `main` with one root commit.
    fn new() -> Repo {
        let r = Repo {
            tmp: tempfile::tempdir().unwrap(),
        };
        r.git(&["-c", "init.defaultBranch=main", "init", "-q"]);
        r.git(&["config", "user.name", "Test"]);
        r.git(&["config", "user.email", "test@example.invalid"]);
        r.git(&["config", "commit.gpgsign", "false"]);
        r.commit_files("initial", &[("README.md", "hello\n")]);
        r
    }

    fn path(&self) -> &Path {
        self.tmp.path()
    }

    fn git(&self, args: &[&str]) -> String {
        let mut c = Command::new("git");
        c.args(args).current_dir(self.path());
        isolate(&mut c, self.path());
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn write(&self, rel: &str, contents: &str) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    /// Writes the files and commits them on the current branch.
    fn commit_files(&self, subject: &str, files: &[(&str, &str)]) {
        for (rel, contents) in files {
            self.write(rel, contents);
            self.git(&["add", rel]);
        }
        self.git(&["commit", "-q", "-m", subject]);
    }

    fn tag(&self, name: &str) {
        self.git(&["tag", name]);
    }

    /// Runs `tenant-guard ARGS` in the repository.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tenant-guard"));
        c.args(args).current_dir(self.path());
        isolate(&mut c, self.path());
        c.output().unwrap()
    }

    /// Runs `tenant-guard git check --now ... ARGS`: exit code and standard output.
    fn check(&self, args: &[&str]) -> (i32, String) {
        let mut all = vec!["git", "check", "--now", "2026-11-20T00:00:00Z"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        (out.status.code().unwrap(), text(&out))
    }

    /// `git check --format json`: exit code and the rules of its violations.
    fn check_rules(&self) -> (i32, Vec<String>, serde_json::Value) {
        let (code, out) = self.check(&["--format", "json"]);
        let json: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad json ({e}): {out}"));
        let rules = json["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["rule"].as_str().unwrap().to_string())
            .collect();
        (code, rules, json)
    }

    /// Every ref, HEAD and the work tree's status: what must not change.
    fn state(&self) -> (String, String, String) {
        (
            self.git(&["for-each-ref", "--format=%(refname) %(objectname)"]),
            self.git(&["rev-parse", "--symbolic-full-name", "HEAD"])
                + &self.git(&["rev-parse", "HEAD"]),
            self.git(&["status", "--porcelain", "--untracked-files=all"]),
        )
    }

    fn tags(&self) -> Vec<String> {
        self.git(&["tag", "--list"])
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

// ---- branch and tenant paths ----------------------------------------------

#[test]
fn clean_tenant_branch_passes() {
    let r = Repo::new();
    r.git(&["switch", "-q", "-c", "tenant/acme"]);
    r.commit_files("acme flow", &[("app/flows/acme/flow.yaml", "a: 1\n")]);
    r.commit_files("acme flow 2", &[("app/flows/acme/sub/b.yaml", "b: 1\n")]);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("git check: ok on tenant/acme, 2 commits"),
        "{out}"
    );
}

#[test]
fn commit_touching_another_tenant_fails_and_is_named() {
    let r = Repo::new();
    r.git(&["switch", "-q", "-c", "tenant/acme"]);
    r.commit_files("acme flow", &[("app/flows/acme/flow.yaml", "a: 1\n")]);
    r.commit_files(
        "peek at globex",
        &[("app/flows/globex/steal.yaml", "x: 1\n")],
    );
    let short = r.git(&["rev-parse", "--short", "HEAD"]);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "tenant-paths: {} \"peek at globex\" touches app/flows/globex/steal.yaml, the folder of tenant `globex`",
            short.trim()
        )),
        "{out}"
    );
    assert!(!out.contains("acme flow"), "{out}");
    let (code, rules, json) = r.check_rules();
    assert_eq!((code, rules), (1, vec!["tenant-paths".to_string()]));
    assert_eq!(
        json["violations"][0]["paths"][0],
        "app/flows/globex/steal.yaml"
    );
    assert_eq!(json["violations"][0]["commit"], short.trim());
}

#[test]
fn paths_outside_the_tenant_folder_need_a_shared_path() {
    let r = Repo::new();
    r.git(&["switch", "-q", "-c", "tenant/acme"]);
    r.commit_files(
        "shared schema",
        &[
            ("app/flows/acme/flow.yaml", "a: 1\n"),
            ("app/shared/schema/flow.json", "{}\n"),
        ],
    );
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("touches app/shared/schema/flow.json, outside app/flows/acme/"),
        "{out}"
    );
    // The policy (left untracked here) allows the shared path.
    r.write(
        "tenant-guard.toml",
        "[git]\nshared_paths = [\"app/shared/**\"]\n",
    );
    let (code, out) = r.check(&[]);
    assert_eq!(code, 0, "{out}");
    // `*` stays within one directory.
    r.write(
        "tenant-guard.toml",
        "[git]\nshared_paths = [\"app/shared/*\"]\n",
    );
    assert_eq!(r.check(&[]).0, 1);
}

#[test]
fn branch_must_be_tenant_or_shared() {
    let r = Repo::new();
    r.git(&["switch", "-q", "-c", "feature/x"]);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("branch: branch `feature/x` is neither"),
        "{out}"
    );
    r.git(&["switch", "-q", "-c", "tenant/Bad_Slug"]);
    assert_eq!(r.check(&[]).0, 1);
    r.git(&["switch", "-q", "-c", "release"]);
    assert_eq!(r.check(&[]).0, 1);
    r.write(
        "tenant-guard.toml",
        "[git]\nshared_branches = [\"release\"]\n",
    );
    let (code, out) = r.check(&[]);
    assert_eq!(code, 0, "{out}");
    r.git(&["switch", "-q", "--detach"]);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("HEAD is detached"), "{out}");
}

#[test]
fn repo_and_config_options() {
    let r = Repo::new();
    r.git(&["switch", "-q", "-c", "release"]);
    r.write("sub/dir/x.txt", "x\n");
    r.write(
        "policy/git.toml",
        "[git]\nshared_branches = [\"release\"]\n",
    );
    // Run from elsewhere: --repo names any directory of the work tree.
    let elsewhere = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenant-guard"));
    c.args(["git", "check", "--repo"])
        .arg(r.path().join("sub/dir"))
        .arg("--config")
        .arg(r.path().join("policy/git.toml"))
        .current_dir(elsewhere.path());
    isolate(&mut c, elsewhere.path());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("ok on release"), "{}", text(&out));
    // Without --config the default policy applies: release is not a shared branch.
    assert_eq!(r.check(&["--repo", "sub/dir"]).0, 1);
}

// ---- the base branch -------------------------------------------------------

#[test]
fn direct_commit_on_main_fails_merge_from_tenant_passes() {
    let r = Repo::new();
    r.git(&["switch", "-q", "-c", "tenant/acme"]);
    r.commit_files("acme flow", &[("app/flows/acme/flow.yaml", "a: 1\n")]);
    r.git(&["switch", "-q", "main"]);
    r.git(&["merge", "-q", "--no-ff", "--no-edit", "tenant/acme"]);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok on main, 2 commits"), "{out}");

    r.commit_files("hotfix", &[("README.md", "hotfix\n")]);
    let short = r.git(&["rev-parse", "--short", "HEAD"]);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "direct-commit: {} \"hotfix\" on main is a direct commit",
            short.trim()
        )),
        "{out}"
    );
    // The history before main_since is not checked.
    r.write("tenant-guard.toml", "[git]\nmain_since = \"HEAD\"\n");
    assert_eq!(r.check(&[]).0, 0);
}

#[test]
fn merges_are_identified_by_subject_or_branch_tip() {
    let r = Repo::new();
    r.git(&["switch", "-q", "-c", "feature/x"]);
    r.commit_files("feature", &[("f.txt", "f\n")]);
    r.git(&["switch", "-q", "main"]);
    r.git(&["merge", "-q", "--no-ff", "--no-edit", "feature/x"]);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("merges `feature/x`, which is neither"),
        "{out}"
    );

    // A merge whose subject names no branch: the second parent is the tip of tenant/acme.
    let r = Repo::new();
    r.git(&["switch", "-q", "-c", "tenant/acme"]);
    r.commit_files("acme flow", &[("app/flows/acme/flow.yaml", "a: 1\n")]);
    r.git(&["switch", "-q", "main"]);
    r.git(&["merge", "-q", "--no-ff", "-m", "Ship acme", "tenant/acme"]);
    assert_eq!(r.check(&[]).0, 0);
    // Once the branch moves on, nothing identifies the merged branch.
    r.git(&["branch", "-q", "-f", "tenant/acme", "main"]);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot be identified"), "{out}");
}

// ---- build tags and quota --------------------------------------------------

#[test]
fn malformed_build_tags_fail_and_are_named() {
    let r = Repo::new();
    r.tag("bld/acme/20261101T120000Z-web");
    r.tag("v1.0");
    let (code, out) = r.check(&[]);
    assert_eq!(code, 0, "{out}");
    for bad in [
        "bld/acme/2026-11-01-web",
        "bld/Acme/20261101T120000Z-web",
        "bld/acme/20261101T120000Z-",
        "bld/acme/20261131T120000Z-web",
        "bld/nightly",
    ] {
        r.tag(bad);
        let (code, out) = r.check(&[]);
        assert_eq!(code, 1, "{bad}: {out}");
        assert!(
            out.contains(&format!("malformed build tag {bad}:")),
            "{out}"
        );
        r.git(&["tag", "-d", bad]);
    }
    // Dated after --now.
    r.tag("bld/acme/20261120T000001Z-web");
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("dated after now"), "{out}");
}

/// Tags `count` builds of `tenant`, one every `minutes` minutes from 2026-11-10 00:00 UTC.
fn tag_builds(r: &Repo, tenant: &str, count: u32, minutes: u32) {
    for i in 0..count {
        let m = i * minutes;
        r.tag(&format!(
            "bld/{tenant}/20261110T{:02}{:02}00Z-web",
            m / 60,
            m % 60
        ));
    }
}

#[test]
fn quota_at_the_limit_passes_one_over_fails() {
    let r = Repo::new();
    r.write(
        "tenant-guard.toml",
        "[git.plans]\nstarter = 20\npro = 100\n[git.tenants]\nacme = \"starter\"\n",
    );
    tag_builds(&r, "acme", 20, 60);
    // Another tenant's builds do not count against acme's.
    tag_builds(&r, "globex", 30, 10);
    let (code, out) = r.check(&[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("50 build tags checked"), "{out}");

    // The 21st build is 23:59 after the first: one window holds 21.
    r.tag("bld/acme/20261110T235900Z-api");
    let (code, rules, json) = r.check_rules();
    assert_eq!((code, rules), (1, vec!["build-quota".to_string()]));
    let v = &json["violations"][0];
    assert_eq!(
        (&v["tenant"], &v["count"], &v["limit"]),
        (&"acme".into(), &21.into(), &20.into())
    );
    let (_, out) = r.check(&[]);
    assert!(
        out.contains("build-quota: tenant acme: 21 build tags in the 24 h from 20261110T000000Z (limit 20, plan starter)"),
        "{out}"
    );
    // At 24:00 after the first it falls in the next window: 20 in each.
    r.git(&["tag", "-d", "bld/acme/20261110T235900Z-api"]);
    r.tag("bld/acme/20261111T000000Z-api");
    let (code, out) = r.check(&[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn default_quota_is_100() {
    let r = Repo::new();
    tag_builds(&r, "acme", 100, 1);
    assert_eq!(r.check(&[]).0, 0);
    r.tag("bld/acme/20261110T235959Z-web");
    let (code, out) = r.check(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("101 build tags") && out.contains("default quota"),
        "{out}"
    );
}

// ---- errors ------------------------------------------------------------------

#[test]
fn errors_exit_2() {
    let d = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_tenant-guard"));
    c.args(["git", "check", "--repo"]).arg(d.path());
    isolate(&mut c, d.path());
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not in a git work tree"),
        "{}",
        text(&out)
    );

    let r = Repo::new();
    for bad in [
        "[git]\nunknown = 1\n",
        "[git.tenants]\nacme = \"gold\"\n",
        "[git]\nshared_paths = [\"a[\"]\n",
        "[git]\nmain_since = \"no-such-commit\"\n",
        "[git\n",
    ] {
        r.write("tenant-guard.toml", bad);
        let out = r.run(&["git", "check"]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
    }
    r.write("tenant-guard.toml", "[git]\nbase_branch = \"trunk\"\n");
    r.git(&["switch", "-q", "-c", "tenant/acme"]);
    let out = r.run(&["git", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("`trunk` does not exist"),
        "{}",
        text(&out)
    );
    let out = r.run(&["git", "check", "--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = r.run(&["git", "check", "--now", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

// ---- init-tenant -------------------------------------------------------------

#[test]
fn init_tenant_creates_branch_and_folder_once() {
    let r = Repo::new();
    let main_before = r.git(&["rev-parse", "main"]);
    let out = r.run(&["git", "init-tenant", "acme"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("created tenant/acme"), "{}", text(&out));
    // Branched from main with the folder committed; main, HEAD and the work tree untouched.
    assert_eq!(r.git(&["rev-parse", "tenant/acme~1"]), main_before);
    assert_eq!(r.git(&["rev-parse", "main"]), main_before);
    assert_eq!(
        r.git(&["diff", "--name-status", "main", "tenant/acme"]),
        "A\tapp/flows/acme/.gitkeep\n"
    );
    assert_eq!(r.git(&["symbolic-ref", "HEAD"]), "refs/heads/main\n");
    assert_eq!(
        r.git(&["status", "--porcelain", "--untracked-files=all"]),
        ""
    );

    let before = r.state();
    let out = r.run(&["git", "init-tenant", "acme"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("tenant/acme: already created"),
        "{}",
        text(&out)
    );
    assert_eq!(r.state(), before);

    // Also from the tenant branch itself, which then passes the check.
    r.git(&["switch", "-q", "tenant/acme"]);
    let before = r.state();
    let out = r.run(&["git", "init-tenant", "acme"]);
    assert!(text(&out).contains("already created"), "{}", text(&out));
    assert_eq!(r.state(), before);
    assert_eq!(r.check(&[]).0, 0);
}

#[test]
fn init_tenant_rejects_bad_slugs_and_half_made_branches() {
    let r = Repo::new();
    let before = r.state();
    for bad in ["Acme", "-acme", "acme-", "a_b", "a/b", ""] {
        let out = r.run(&["git", "init-tenant", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out));
    }
    let long = "x".repeat(64);
    assert_eq!(r.run(&["git", "init-tenant", &long]).status.code(), Some(2));
    assert_eq!(r.state(), before);
    // A tenant branch without the folder is not silently changed.
    r.git(&["branch", "tenant/globex"]);
    let before = r.state();
    let out = r.run(&["git", "init-tenant", "globex"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(r.state(), before);
}

// ---- prune-tags --------------------------------------------------------------

#[test]
fn prune_tags_dry_run_then_for_real() {
    let r = Repo::new();
    let old = [
        "bld/acme/20261001T000000Z-web",
        "bld/globex/20261020T235959Z-api.v2",
    ];
    let kept = [
        "bld/acme/20261021T000000Z-web",
        "bld/acme/20261119T000000Z-web",
        "bld/x/1999-bad",
        "v1.0",
    ];
    for t in old.iter().chain(&kept) {
        r.tag(t);
    }
    let args = [
        "git",
        "prune-tags",
        "--older-than",
        "30d",
        "--now",
        "2026-11-20T00:00:00Z",
    ];
    let before = r.state();
    let mut dry = args.to_vec();
    dry.push("--dry-run");
    let out = r.run(&dry);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed: Vec<&str> = text(&out)
        .lines()
        .filter_map(|l| l.strip_prefix("would delete "))
        .map(|s| old.iter().find(|o| **o == s).copied().unwrap_or("?"))
        .collect();
    assert_eq!(listed, old, "{}", text(&out));
    assert_eq!(r.state(), before);

    let out = r.run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("deleted bld/acme/20261001T000000Z-web"),
        "{}",
        text(&out)
    );
    let mut expected: Vec<String> = kept.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(r.tags(), expected);
    // Hours, and nothing left to prune.
    let out = r.run(&[
        "git",
        "prune-tags",
        "--older-than",
        "999h",
        "--now",
        "2026-11-20T00:00:00Z",
    ]);
    assert!(
        text(&out).contains("prune-tags: 0 build tags deleted"),
        "{}",
        text(&out)
    );
    let out = r.run(&["git", "prune-tags", "--older-than", "30m"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn one_config_file_serves_scan_and_git_check() {
    let r = Repo::new();
    r.write(
        "tenant-guard.toml",
        "disable = []\n[git]\nshared_branches = [\"release\"]\n[git.plans]\npro = 100\n",
    );
    r.git(&["switch", "-q", "-c", "release"]);
    assert_eq!(r.run(&["scan", "."]).status.code(), Some(0));
    assert_eq!(r.check(&[]).0, 0);
}
