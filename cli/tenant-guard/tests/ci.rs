//! `tenant-guard ci` on real repositories built in temp dirs: one exit code and
//! one report for the scans of sources and artifacts, `git check` and `adr check`.

#[allow(dead_code)]
mod util;

use std::path::Path;
use std::process::{Command, Output};

use util::{FIXTURE_RULES, gzip_bytes, stderr, stdout, tar_bytes, token, zip_bytes};

/// A register entry with the given id and withdrawal date.
fn entry(id: &str, withdraw_by: &str) -> String {
    format!(
        "## {id}: Test fixtures\n- Date: 2026-01-01\n- Context: fixtures\n- Cause: tests\n- Decision: allow\n- Withdrawal: delete them by {withdraw_by}\n"
    )
}

/// A register whose only exception stays in force for a long time.
fn valid_register() -> String {
    format!(
        "# Exceptions register\n\n{}",
        entry("ADR-001", "2099-12-31")
    )
}

fn isolate(c: &mut Command, home: &Path) {
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", home)
        .env("GIT_AUTHOR_DATE", "2026-11-01T12:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-11-01T12:00:00Z")
        .env_remove("GIT_DIR")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_WORK_TREE")
        .env_remove("NO_COLOR")
        .env("CI", "true");
}

/// A throwaway repository, independent of the user's and the system's git configuration.
struct Repo {
    tmp: tempfile::TempDir,
}

impl Repo {
    /// A repository whose root commit on `main` holds the configuration
    /// (fixture rules, `extra_config` appended), a `.gitignore` ignoring
    /// `dist/`, and a valid register; then checked out on a new branch
    /// `tenant/acme` with one commit in `app/flows/acme/`.
    fn tenant(extra_config: &str) -> Repo {
        let r = Repo {
            tmp: tempfile::tempdir().unwrap(),
        };
        r.git(&["-c", "init.defaultBranch=main", "init", "-q"]);
        r.git(&["config", "user.name", "Test"]);
        r.git(&["config", "user.email", "test@example.invalid"]);
        r.git(&["config", "commit.gpgsign", "false"]);
        r.commit_files(
            "initial",
            &[
                ("README.md", "hello\n"),
                (
                    "tenant-guard.toml",
                    &format!("{FIXTURE_RULES}\n{extra_config}"),
                ),
                (".gitignore", "dist/\n"),
                ("docs/adr_exceptions.md", &valid_register()),
            ],
        );
        r.git(&["switch", "-q", "-c", "tenant/acme"]);
        r.commit_files("acme flow", &[("app/flows/acme/flow.yaml", "steps: 1\n")]);
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

    fn write(&self, rel: &str, contents: impl AsRef<[u8]>) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, contents).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap()
    }

    /// Writes the files and commits them on the current branch.
    fn commit_files(&self, subject: &str, files: &[(&str, &str)]) {
        for (rel, contents) in files {
            self.write(rel, contents);
            self.git(&["add", rel]);
        }
        self.git(&["commit", "-q", "-m", subject]);
    }

    fn short_head(&self) -> String {
        self.git(&["rev-parse", "--short", "HEAD"])
            .trim()
            .to_string()
    }

    /// Runs `tenant-guard ARGS` in the repository.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tenant-guard"));
        c.args(args).current_dir(self.path());
        isolate(&mut c, self.path());
        c.output().unwrap()
    }

    /// Runs `tenant-guard ci ARGS`: exit code, standard output and error.
    fn ci(&self, args: &[&str]) -> (i32, String, String) {
        let mut all = vec!["ci"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        (out.status.code().unwrap(), stdout(&out), stderr(&out))
    }

    /// `ci --format json ARGS`: exit code and the report.
    fn ci_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.ci(&all);
        let json =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("bad json ({e}): {out}\n{err}"));
        (code, json)
    }
}

/// The verdict of every step of a JSON report, in step order.
fn verdicts(json: &serde_json::Value) -> Vec<(String, String)> {
    ["sources", "artifacts", "git", "adr"]
        .iter()
        .map(|s| {
            (
                s.to_string(),
                json["steps"][s]["verdict"]
                    .as_str()
                    .unwrap_or("missing")
                    .to_string(),
            )
        })
        .collect()
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(s, v)| (s.to_string(), v.to_string()))
        .collect()
}

/// A clean build output: a zip, a tar.gz and a plain file without secrets.
fn clean_dist(r: &Repo) {
    r.write(
        "dist/app.zip",
        zip_bytes(&[("config/app.properties", b"level=info\n")]),
    );
    r.write(
        "dist/site.tar.gz",
        gzip_bytes(&tar_bytes(&[("etc/app.yaml", b"port: 8080\n")])),
    );
    r.write("dist/build.log", "built in 3s\n");
}

// ---- a clean repository -----------------------------------------------------

#[test]
fn clean_tenant_repo_passes_every_step() {
    let r = Repo::tenant("[ci]\nartifacts = [\"dist\"]\n");
    clean_dist(&r);
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with("sources: passed: 0 findings at or above low, 0 in total, in "),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "artifacts: passed: 0 findings at or above low, 0 in total, in 3 files"
    );
    assert_eq!(
        lines[2],
        "git: passed: 0 violations on tenant/acme, 1 commit and 0 build tags checked"
    );
    assert_eq!(
        lines[3],
        "adr: passed: docs/adr_exceptions.md: 1 exception, 0 problems"
    );
    assert_eq!(lines[4], "ci: 4 passed, 0 failed, 0 skipped, 0 errors");

    let (code, json) = r.ci_json(&[]);
    assert_eq!(code, 0);
    assert_eq!(json["tool"], "tenant-guard");
    assert_eq!(
        verdicts(&json),
        expect(&[
            ("sources", "passed"),
            ("artifacts", "passed"),
            ("git", "passed"),
            ("adr", "passed")
        ])
    );
    assert_eq!(json["steps"]["git"]["report"]["branch"], "tenant/acme");
    assert_eq!(json["steps"]["adr"]["report"]["exceptions"], 1);
}

#[test]
fn without_artifacts_or_repository_those_steps_are_skipped() {
    let r = Repo::tenant("");
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("artifacts: skipped: no artifacts: give --artifacts or [ci] artifacts\n"),
        "{out}"
    );
    assert!(
        out.contains("ci: 3 passed, 0 failed, 1 skipped, 0 errors"),
        "{out}"
    );
    // Outside a git work tree the git step is skipped, not failed.
    let d = util::Dir::new();
    d.write("a.txt", "hello\n");
    let out = d.run(&["ci"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("git: skipped: not a git work tree"), "{text}");
    assert!(
        text.contains("adr: skipped: no register at docs/adr_exceptions.md"),
        "{text}"
    );
}

// ---- each kind of violation -----------------------------------------------

#[test]
fn a_secret_in_the_sources_fails_the_sources_step() {
    let r = Repo::tenant("");
    r.commit_files(
        "acme config",
        &[(
            "app/flows/acme/config.yaml",
            &format!("name: acme\napi_token: {}\n", token(1)),
        )],
    );
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("sources: failed: 1 finding at or above low, 1 in total, in "),
        "{out}"
    );
    assert!(
        out.contains("    app/flows/acme/config.yaml:2:12  fixture-token"),
        "{out}"
    );
    assert!(out.contains("git: passed"), "{out}");
    assert!(out.contains("adr: passed"), "{out}");
    assert!(
        out.contains("ci: 2 passed, 1 failed, 1 skipped, 0 errors"),
        "{out}"
    );
    assert!(
        !out.contains(&token(1)),
        "the secret leaked into the report"
    );

    let (code, json) = r.ci_json(&[]);
    assert_eq!(code, 1);
    assert_eq!(json["steps"]["sources"]["verdict"], "failed");
    let findings = json["steps"]["sources"]["report"]["findings"]
        .as_array()
        .unwrap();
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0]["path"], "app/flows/acme/config.yaml");
    assert_eq!(findings[0]["rule_id"], "fixture-token");
    // Below --fail-on the finding is reported but does not fail.
    let (code, out, _) = r.ci(&["--fail-on", "critical"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("sources: passed: 0 findings at or above critical, 1 in total"),
        "{out}"
    );
}

#[test]
fn a_secret_in_an_artifact_fails_the_artifacts_step() {
    let r = Repo::tenant("[ci]\nartifacts = [\"dist\"]\n");
    r.write("dist/build.log", format!("deploying with {}\n", token(2)));
    r.write(
        "dist/app.zip",
        zip_bytes(&[(
            "config/app.properties",
            format!("level=info\ntoken={}\n", token(3)).as_bytes(),
        )]),
    );
    r.write(
        "dist/site.tar.gz",
        gzip_bytes(&tar_bytes(&[(
            "etc/app.yaml",
            format!("port: 8080\nkey: {}\n", token(4)).as_bytes(),
        )])),
    );
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 1, "{out}{err}");
    // dist/ is ignored by git: the source scan does not see it.
    assert!(
        out.contains("sources: passed: 0 findings at or above low, 0 in total"),
        "{out}"
    );
    assert!(
        out.contains("artifacts: failed: 3 findings at or above low, 3 in total, in 3 files"),
        "{out}"
    );
    for want in [
        "    dist/build.log:1:16  fixture-token",
        "    dist/app.zip!/config/app.properties:2:7  fixture-token",
        "    dist/site.tar.gz!/etc/app.yaml:2:6  fixture-token",
    ] {
        assert!(out.contains(want), "want {want:?} in:\n{out}");
    }
    assert!(
        out.contains("ci: 3 passed, 1 failed, 0 skipped, 0 errors"),
        "{out}"
    );
    for n in 2..=4 {
        assert!(
            !out.contains(&token(n)),
            "the secret leaked into the report"
        );
    }
    // --artifacts replaces the configured list.
    r.write("other/clean.txt", "nothing\n");
    let (code, out, _) = r.ci(&["--artifacts", "other"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("artifacts: passed: 0 findings at or above low, 0 in total, in 1 file\n"),
        "{out}"
    );
}

#[test]
fn a_commit_touching_another_tenant_fails_the_git_step() {
    let r = Repo::tenant("");
    r.commit_files(
        "peek at globex",
        &[("app/flows/globex/steal.yaml", "x: 1\n")],
    );
    let short = r.short_head();
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("git: failed: 1 violation on tenant/acme, 2 commits and 0 build tags checked"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "    tenant-paths: {short} \"peek at globex\" touches app/flows/globex/steal.yaml, the folder of tenant `globex`"
        )),
        "{out}"
    );
    assert!(out.contains("sources: passed"), "{out}");
    assert!(
        out.contains("ci: 2 passed, 1 failed, 1 skipped, 0 errors"),
        "{out}"
    );
    let (code, json) = r.ci_json(&[]);
    assert_eq!(code, 1);
    let v = &json["steps"]["git"]["report"]["violations"][0];
    assert_eq!(v["rule"], "tenant-paths");
    assert_eq!(v["paths"][0], "app/flows/globex/steal.yaml");
}

#[test]
fn a_direct_commit_on_main_and_an_unknown_branch_fail_the_git_step() {
    let r = Repo::tenant("");
    r.git(&["switch", "-q", "main"]);
    r.commit_files("hotfix", &[("README.md", "hello again\n")]);
    let short = r.short_head();
    let (code, out, _) = r.ci(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "    direct-commit: {short} \"hotfix\" on main is a direct commit, not a merge"
        )),
        "{out}"
    );
    r.git(&["switch", "-q", "-c", "feature/x"]);
    let (code, out, _) = r.ci(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("    branch: branch `feature/x` is neither tenant/<slug> nor a shared branch"),
        "{out}"
    );
}

#[test]
fn a_past_withdrawal_date_fails_the_adr_step_and_stops_suppressing() {
    let r = Repo::tenant("");
    r.write(
        "docs/adr_exceptions.md",
        format!("# Register\n\n{}", entry("ADR-001", "2020-01-31")),
    );
    // An inline allow naming the expired exception no longer suppresses.
    r.commit_files(
        "acme config",
        &[(
            "app/flows/acme/config.yaml",
            &format!("api_token: {}  # tenant-guard:allow ADR-001\n", token(5)),
        )],
    );
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("adr: failed: docs/adr_exceptions.md: 1 exception, 1 problem"),
        "{out}"
    );
    assert!(
        out.contains(
            "    docs/adr_exceptions.md:3: ADR-001: withdrawal date 2020-01-31 is in the past"
        ),
        "{out}"
    );
    assert!(out.contains("sources: failed: 1 finding"), "{out}");
    assert!(
        out.contains("expired after its withdrawal date 2020-01-31"),
        "{out}"
    );
    assert!(
        out.contains("ci: 1 passed, 2 failed, 1 skipped, 0 errors"),
        "{out}"
    );
    // In force again: both steps pass.
    r.write("docs/adr_exceptions.md", valid_register());
    let (code, out, _) = r.ci(&[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_malformed_register_fails_the_adr_step_with_exit_1() {
    let r = Repo::tenant("");
    r.write(
        "docs/adr_exceptions.md",
        format!(
            "# Register\n\n{}",
            entry("ADR-001", "2099-12-31").replace("- Cause: tests\n", "")
        ),
    );
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("    docs/adr_exceptions.md:3: ADR-001: missing field `Cause`"),
        "{out}"
    );
    assert!(out.contains("adr: failed"), "{out}");
    assert!(out.contains("sources: passed"), "{out}");
    assert!(
        out.contains("ci: 2 passed, 1 failed, 1 skipped, 0 errors"),
        "{out}"
    );
    // Suppressions cannot be checked against a malformed register: they are refused.
    r.write(
        "app/flows/acme/config.yaml",
        format!("api_token: {}  # tenant-guard:allow ADR-001\n", token(6)),
    );
    let (code, out, _) = r.ci(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("sources: failed: 1 finding"), "{out}");
    assert!(out.contains("does not parse"), "{out}");
}

// ---- formats and options ----------------------------------------------------

/// A repository with one violation of each step: a secret in the sources, one
/// in an artifact, a commit in another tenant's folder, an expired exception.
fn every_violation() -> Repo {
    let r = Repo::tenant("[ci]\nartifacts = [\"dist\"]\n");
    r.commit_files(
        "acme config",
        &[(
            "app/flows/acme/config.yaml",
            &format!("api_token: {}\n", token(7)),
        )],
    );
    r.commit_files(
        "peek at globex",
        &[("app/flows/globex/steal.yaml", "x: 1\n")],
    );
    r.write(
        "dist/app.zip",
        zip_bytes(&[(
            "config/app.properties",
            format!("token={}\n", token(8)).as_bytes(),
        )]),
    );
    r.write(
        "docs/adr_exceptions.md",
        format!("# Register\n\n{}", entry("ADR-001", "2020-01-31")),
    );
    r
}

/// Checks that `xml` is well formed as far as these reports go: one
/// declaration, then properly nested elements with quoted attributes and
/// only the five predefined entities.
fn assert_well_formed_xml(xml: &str) {
    let body = xml
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
        .unwrap_or_else(|| panic!("no XML declaration:\n{xml}"));
    let tag = regex::Regex::new(
        r#"^<(/?)([A-Za-z][A-Za-z0-9_-]*)((?:\s+[A-Za-z_][A-Za-z0-9_-]*="[^"<]*")*)\s*(/?)>"#,
    )
    .unwrap();
    let entity = regex::Regex::new(r"^&(amp|lt|gt|quot|apos);").unwrap();
    let mut stack: Vec<String> = Vec::new();
    let mut rest = body;
    let mut roots = 0;
    while !rest.is_empty() {
        if rest.starts_with('<') {
            let c = tag
                .captures(rest)
                .unwrap_or_else(|| panic!("malformed tag at: {}", &rest[..rest.len().min(80)]));
            let name = c[2].to_string();
            for attr in c[3].split('"').skip(1).step_by(2) {
                check_text(attr, &entity);
            }
            if &c[1] == "/" {
                assert_eq!(stack.pop().as_deref(), Some(name.as_str()), "unbalanced");
            } else if &c[4] != "/" {
                if stack.is_empty() {
                    roots += 1;
                }
                stack.push(name);
            }
            rest = &rest[c[0].len()..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..end];
            assert!(
                !stack.is_empty() || text.trim().is_empty(),
                "text outside the root element: {text:?}"
            );
            check_text(text, &entity);
            rest = &rest[end..];
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    assert_eq!(roots, 1, "one root element");
}

fn check_text(text: &str, entity: &regex::Regex) {
    for (i, _) in text.match_indices('&') {
        assert!(entity.is_match(&text[i..]), "bad entity in {text:?}");
    }
    assert!(!text.contains('<'), "raw < in {text:?}");
}

#[test]
fn junit_has_a_failure_per_violation() {
    let r = every_violation();
    let out = r.run(&["ci", "--format", "junit", "--output", "junit.xml"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "the report goes to the file");
    let xml = r.read("junit.xml");
    assert_well_formed_xml(&xml);
    assert!(
        xml.contains(
            r#"<testsuites name="tenant-guard ci" tests="4" failures="4" errors="0" skipped="0">"#
        ),
        "{xml}"
    );
    for suite in ["sources", "artifacts", "git", "adr"] {
        assert!(
            xml.contains(&format!(
                r#"<testsuite name="{suite}" tests="1" failures="1" errors="0" skipped="0">"#
            )),
            "{suite}: {xml}"
        );
    }
    assert_eq!(xml.matches("<failure ").count(), 4, "{xml}");
    assert!(
        xml.contains(r#"name="fixture-token at app/flows/acme/config.yaml:1:12""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"name="fixture-token at dist/app.zip!/config/app.properties:1:7""#),
        "{xml}"
    );
    assert!(xml.contains(r#"<failure type="tenant-paths""#), "{xml}");
    assert!(
        xml.contains("touches app/flows/globex/steal.yaml, the folder of tenant `globex`"),
        "{xml}"
    );
    assert!(xml.contains(r#"<failure type="adr-register""#), "{xml}");
    assert!(
        xml.contains("ADR-001: withdrawal date 2020-01-31 is in the past"),
        "{xml}"
    );
    assert!(!xml.contains(&token(7)) && !xml.contains(&token(8)));

    // A clean run: one passing test case per step, no failure.
    let clean = Repo::tenant("");
    let out = clean.run(&["ci", "--format", "junit"]);
    assert_eq!(out.status.code(), Some(0));
    let xml = stdout(&out);
    assert_well_formed_xml(&xml);
    assert!(!xml.contains("<failure"), "{xml}");
    assert!(
        xml.contains(r#"<testcase classname="git" name="git passed"/>"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<skipped message="no artifacts: give --artifacts or [ci] artifacts"/>"#),
        "{xml}"
    );
}

#[test]
fn the_xml_checker_rejects_broken_xml() {
    let decl = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    for bad in [
        "<a><b></a></b>",
        "<a>x & y</a>",
        "<a x=\"1\">",
        "<a/><b/>",
        "<a>1 < 2</a>",
    ] {
        let xml = format!("{decl}{bad}\n");
        let r = std::panic::catch_unwind(|| assert_well_formed_xml(&xml));
        assert!(r.is_err(), "accepted {bad:?}");
    }
    assert_well_formed_xml(&format!("{decl}<a x=\"&amp;\"><b/>t &lt; u</a>\n"));
}

#[test]
fn sarif_is_valid_with_scan_and_register_results() {
    let r = every_violation();
    let out = r.run(&["ci", "--format", "sarif", "--output", "tg.sarif"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let sarif: serde_json::Value = serde_json::from_str(&r.read("tg.sarif")).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("data/sarif-schema-2.1.0.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let results = run["results"].as_array().unwrap();
    let mut got: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            let idx = r["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rules[idx]["id"], r["ruleId"]);
            (
                r["ruleId"].as_str().unwrap().to_string(),
                r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "adr-register".to_string(),
                "docs/adr_exceptions.md".to_string()
            ),
            (
                "fixture-token".to_string(),
                "app/flows/acme/config.yaml".to_string()
            ),
            (
                "fixture-token".to_string(),
                "dist/app.zip!/config/app.properties".to_string()
            ),
        ]
    );
    let text = r.read("tg.sarif");
    assert!(!text.contains(&token(7)) && !text.contains(&token(8)));
}

#[test]
fn output_file_also_gets_a_summary_on_stderr() {
    let r = every_violation();
    let out = r.run(&["ci", "--format", "sarif", "--output", "tg.sarif"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("sources: failed: 1 finding"), "{err}");
    assert!(
        err.contains("touches app/flows/globex/steal.yaml, the folder of tenant `globex`"),
        "{err}"
    );
    assert!(
        err.contains("ci: 0 passed, 4 failed, 0 skipped, 0 errors"),
        "{err}"
    );
    assert!(!err.contains(&token(7)) && !err.contains(&token(8)));
}

#[test]
fn skip_leaves_steps_out() {
    let r = every_violation();
    let (code, out, _) = r.ci(&["--skip", "git", "--skip", "adr", "--skip", "sources"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("git: skipped: skipped with --skip"), "{out}");
    assert!(out.contains("adr: skipped: skipped with --skip"), "{out}");
    assert!(
        out.contains("sources: skipped: skipped with --skip"),
        "{out}"
    );
    assert!(out.contains("artifacts: failed"), "{out}");
    assert!(
        out.contains("ci: 0 passed, 1 failed, 3 skipped, 0 errors"),
        "{out}"
    );
    let (code, json) = r.ci_json(&["--skip", "artifacts", "--skip", "git"]);
    assert_eq!(code, 1);
    assert_eq!(
        verdicts(&json),
        expect(&[
            ("sources", "failed"),
            ("artifacts", "skipped"),
            ("git", "skipped"),
            ("adr", "failed")
        ])
    );
    assert_eq!(json["steps"]["git"]["note"], "skipped with --skip");
    let (code, out, _) = r.ci(&[
        "--skip",
        "sources",
        "--skip",
        "artifacts",
        "--skip",
        "git",
        "--skip",
        "adr",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ci: 0 passed, 0 failed, 4 skipped, 0 errors"),
        "{out}"
    );
    // An unknown step is a usage error.
    let (code, _, err) = r.ci(&["--skip", "lint"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid value 'lint'"), "{err}");
}

#[test]
fn configured_cross_runs_as_a_step() {
    // A build writing one artifact per tenant: the cross step passes.
    let r = Repo::tenant(
        "[ci]\ncross = { tenants = [\"acme\", \"globex\"], artifacts = \"dist/{tenant}\", command = [\"sh\", \"-c\", \"mkdir -p dist/{tenant} && echo built > dist/{tenant}/app.txt\"] }\n",
    );
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("cross: passed: 2 tenants, 0 canary leaks"),
        "{out}"
    );
    assert!(out.contains("ok probe acme -> globex: get"), "{out}");
    assert!(
        out.contains("ci: 4 passed, 0 failed, 1 skipped, 0 errors"),
        "{out}"
    );
    let (code, json, err) = r.ci(&["--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["steps"]["cross"]["verdict"], "passed", "{json:#}");
    assert_eq!(
        json["steps"]["cross"]["report"]["probes"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    // JUnit: the pairs and the probes are test cases of the cross suite.
    let (code, xml, _) = r.ci(&["--format", "junit"]);
    assert_eq!(code, 0);
    assert!(
        xml.contains(r#"<testsuite name="cross" tests="13""#),
        "{xml}"
    );
    // --skip cross skips it.
    let (code, out, _) = r.ci(&["--skip", "cross"]);
    assert_eq!(code, 0);
    assert!(out.contains("cross: skipped: skipped with --skip"), "{out}");

    // A build that leaks a tenant's token into another's artifacts fails the step.
    r.write(
        "tenant-guard.toml",
        format!(
            "{FIXTURE_RULES}\n[ci]\ncross = {{ tenants = [\"acme\", \"globex\"], artifacts = \"dist/{{tenant}}\", command = [\"sh\", \"-c\", \"mkdir -p dist/{{tenant}} shared && cat shared/* > dist/{{tenant}}/app.txt 2>/dev/null; printf %s \\\"$SECRET_MCP_TOKEN\\\" | base64 > shared/{{tenant}}\"] }}\n"
        ),
    );
    let (code, out, err) = r.ci(&["--skip", "sources"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("cross: failed:"), "{out}");
    assert!(
        out.contains("FAIL cross-tenant: acme's vault-token in globex's artifact dist/globex/app.txt:1 (base64"),
        "{out}"
    );

    // Mistakes in the cross table are configuration errors.
    r.write(
        "tenant-guard.toml",
        format!(
            "{FIXTURE_RULES}\n[ci]\ncross = {{ tenants = [\"acme\"], command = [\"true\"] }}\n"
        ),
    );
    let (code, out, err) = r.ci(&[]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(out, "", "no report when the configuration is refused");
    assert!(err.contains("at least two tenants"), "{err}");
    r.write(
        "tenant-guard.toml",
        format!("{FIXTURE_RULES}\n[ci]\ncross = {{ tenants = [\"acme\", \"globex\"] }}\n"),
    );
    let (code, _, err) = r.ci(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing field `command`"), "{err}");
    // Other mistakes in the [ci] table are errors too.
    r.write(
        "tenant-guard.toml",
        format!("{FIXTURE_RULES}\n[ci]\nartifact = [\"dist\"]\n"),
    );
    let (code, _, err) = r.ci(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown field `artifact`"), "{err}");
    r.write("tenant-guard.toml", format!("ci = 1\n{FIXTURE_RULES}"));
    let (code, _, err) = r.ci(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("`ci` must be a table"), "{err}");
}

// ---- the pre-commit hook: `tenant-guard scan FILE...` ---------------------

#[test]
fn scan_of_staged_files_applies_the_repository_config_and_register() {
    // What `.pre-commit-hooks.yaml` runs: `tenant-guard scan` with the staged
    // files as arguments, in the repository's top directory.
    let d = util::Dir::bare();
    d.write(
        "tenant-guard.toml",
        format!(
            "[allowlist]\npaths = [{{ glob = \"testdata/**\", exception = \"ADR-001\" }}]\n{FIXTURE_RULES}"
        ),
    );
    d.write("docs/adr_exceptions.md", valid_register());
    d.write("src/app.py", format!("API = \"{}\"\n", token(9)));
    d.write("testdata/sample.env.txt", format!("T={}\n", token(10)));
    d.write("README.md", "hello\n");
    let files = [
        "src/app.py",
        "testdata/sample.env.txt",
        "README.md",
        "tenant-guard.toml",
    ];
    let mut args = vec!["scan", "--format", "json"];
    args.extend_from_slice(&files);
    let (code, json) = {
        let out = d.run(&args);
        (
            out.status.code().unwrap(),
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .unwrap_or_else(|e| panic!("{e}: {}", stderr(&out))),
        )
    };
    assert_eq!(code, 1);
    let paths: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    // The fixture rules of tenant-guard.toml apply, its allowlist suppresses
    // testdata/, and the configuration file itself is not scanned.
    assert_eq!(paths, vec!["src/app.py"], "{json}");
    assert_eq!(json["summary"]["suppressed"], 1, "{json}");
    // The register applies too: an expired exception stops suppressing.
    d.write(
        "docs/adr_exceptions.md",
        format!("# Register\n\n{}", entry("ADR-001", "2020-01-31")),
    );
    let out = d.run(&["scan", "testdata/sample.env.txt"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("expired after its withdrawal date 2020-01-31"),
        "{}",
        stdout(&out)
    );
}
