//! The exceptions register: `adr check`, `adr new`, `init`, and the register
//! deciding which suppressions apply.

use crate::util::{Dir, stderr, stdout, token};

/// A register entry with the given id and withdrawal date.
fn entry(id: &str, withdraw_by: &str) -> String {
    format!(
        "## {id}: Test fixtures\n- Date: 2026-01-01\n- Context: fixtures\n- Cause: tests\n- Decision: allow\n- Withdrawal: delete them by {withdraw_by}\n"
    )
}

/// Runs `adr check --file reg.md --today 2026-11-23` on `text`.
fn check(text: &str) -> (i32, String, String) {
    let d = Dir::bare();
    d.write("reg.md", text);
    let out = d.run(&["adr", "check", "--file", "reg.md", "--today", "2026-11-23"]);
    (out.status.code().unwrap(), stdout(&out), stderr(&out))
}

#[test]
fn adr_check_clean_register() {
    let text = format!(
        "# Register\n\n{}\n{}",
        entry("ADR-001", "2027-05-31"),
        entry("ADR-002", "2026-11-23")
    );
    let (code, out, err) = check(&text);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "reg.md: 2 exceptions, no problems\n");
}

#[test]
fn adr_check_reports_each_failure_with_line_and_id() {
    let cases = [
        (
            entry("ADR-001", "2027-01-01").replace("- Cause: tests\n", ""),
            "reg.md:1: ADR-001: missing field `Cause`",
        ),
        (
            format!("intro\n\n{}", entry("ADR-7", "2027-01-01")),
            "reg.md:3: ADR-7: malformed id",
        ),
        (
            format!(
                "{}\n{}",
                entry("ADR-004", "2027-01-01"),
                entry("ADR-004", "2027-01-01")
            ),
            "reg.md:8: ADR-004: duplicate id: already used on line 1",
        ),
        (
            entry("ADR-005", "2027-01-01").replace("2026-01-01", "2026-1-1"),
            "reg.md:2: ADR-005: malformed date `2026-1-1`",
        ),
        (
            entry("ADR-006", "2027-02-30"),
            "reg.md:6: ADR-006: malformed date `2027-02-30` in `Withdrawal`",
        ),
        (
            entry("ADR-007", "2026-11-22"),
            "reg.md:1: ADR-007: withdrawal date 2026-11-22 is in the past (today is 2026-11-23)",
        ),
    ];
    for (text, want) in cases {
        let (code, out, err) = check(&text);
        assert_eq!(code, 1, "{want}: {out}{err}");
        assert!(err.contains(want), "want {want:?} in:\n{err}");
    }
}

#[test]
fn adr_check_today_decides_expiry() {
    let text = entry("ADR-001", "2027-05-31");
    let d = Dir::bare();
    d.write("reg.md", &text);
    let run = |today: &str| {
        d.run(&["adr", "check", "--file", "reg.md", "--today", today])
            .status
            .code()
    };
    assert_eq!(run("2027-05-31"), Some(0));
    assert_eq!(run("2027-06-01"), Some(1));
}

#[test]
fn adr_check_unreadable_file_is_exit_2() {
    let d = Dir::bare();
    let out = d.run(&["adr", "check", "--file", "missing.md"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.md"), "{}", stderr(&out));
    // The default file is docs/adr_exceptions.md.
    let out = d.run(&["adr", "check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("docs/adr_exceptions.md"));
}

fn adr_new(d: &Dir, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "adr",
        "new",
        "--title",
        "Vendored test keys",
        "--context",
        "vendor/ holds keys",
        "--cause",
        "upstream tests need them",
        "--decision",
        "allowlist vendor/**",
        "--withdrawal",
        "drop the vendored tests",
    ];
    args.extend_from_slice(extra);
    d.run(&args)
}

#[test]
fn adr_new_appends_entries_that_pass_check() {
    let d = Dir::bare();
    let out = adr_new(&d, &["--withdraw-by", "2099-12-31"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "ADR-001\n");
    let out = adr_new(&d, &["--withdraw-by", "2099-01-01"]);
    assert_eq!(stdout(&out), "ADR-002\n", "{}", stderr(&out));
    let text = std::fs::read_to_string(d.path().join("docs/adr_exceptions.md")).unwrap();
    assert!(text.starts_with("# Exceptions register\n"), "{text}");
    assert!(
        text.contains("## ADR-002: Vendored test keys\n- Date: 20",),
        "{text}"
    );
    assert!(text.contains("- Withdrawal: drop the vendored tests by 2099-01-01\n"));
    let out = d.run(&["adr", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 exceptions, no problems"));

    // Appending to an existing file with another name keeps what was there.
    d.write(
        "other.md",
        format!("# Mine\n\n{}", entry("ADR-041", "2099-01-01")),
    );
    let out = adr_new(&d, &["--withdraw-by", "2099-12-31", "--file", "other.md"]);
    assert_eq!(stdout(&out), "ADR-042\n", "{}", stderr(&out));
    let out = d.run(&["adr", "check", "--file", "other.md"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn adr_new_refuses_a_past_withdrawal_date() {
    let d = Dir::bare();
    let out = adr_new(&d, &["--withdraw-by", "2020-01-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("in the past"), "{}", stderr(&out));
    assert!(!d.path().join("docs/adr_exceptions.md").exists());
    // A malformed register is not appended to.
    d.write("docs/adr_exceptions.md", "## ADR-1: broken\n");
    let out = adr_new(&d, &["--withdraw-by", "2099-01-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("line 1: ADR-1: malformed id"),
        "{}",
        stderr(&out)
    );
}

/// A scan root whose `a.py` holds a fixture token allowed inline under `id`,
/// with a register holding ADR-001 (valid) and ADR-002 (expired).
fn inline_allow_fixture(id: &str) -> Dir {
    let d = Dir::new();
    d.write(
        "docs/adr_exceptions.md",
        format!(
            "# Register\n\n{}\n{}",
            entry("ADR-001", "2099-12-31"),
            entry("ADR-002", "2026-01-31")
        ),
    );
    d.write(
        "a.py",
        format!("T = \"{}\"  # tenant-guard:allow {id}\n", token(21)),
    );
    d
}

#[test]
fn a_valid_exception_suppresses() {
    let d = inline_allow_fixture("ADR-001");
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["summary"]["suppressed"], 1);
}

#[test]
fn an_expired_exception_does_not_suppress() {
    let d = inline_allow_fixture("ADR-002");
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 1, "{json}");
    assert_eq!(json["summary"]["suppressed"], 0);
    let f = &json["findings"][0];
    assert_eq!(f["path"], "a.py");
    assert_eq!(
        f["note"],
        "inline allow ADR-002 refused: exception ADR-002 expired after its withdrawal date 2026-01-31: the finding is no longer suppressed"
    );
}

#[test]
fn an_unknown_exception_does_not_suppress() {
    let d = inline_allow_fixture("ADR-003");
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 1, "{json}");
    let note = json["findings"][0]["note"].as_str().unwrap();
    assert!(
        note.contains("exception ADR-003 is not in the exceptions register"),
        "{note}"
    );
    // Without a register every well-formed id is accepted.
    std::fs::remove_file(d.path().join("docs/adr_exceptions.md")).unwrap();
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 0, "{json}");
}

#[test]
fn the_register_also_decides_allowlists_and_baselines() {
    let d = Dir::bare();
    d.write(
        "tenant-guard.toml",
        format!(
            "{}\n[allowlist]\npaths = [{{ glob = \"testdata/**\", exception = \"ADR-002\" }}]\n",
            crate::util::FIXTURE_RULES
        ),
    );
    d.write("testdata/keys.txt", format!("K = \"{}\"\n", token(22)));
    d.write("src/app.py", format!("K = \"{}\"\n", token(23)));
    let out = d.run(&[
        "baseline",
        "create",
        "-o",
        "base.json",
        "--exception",
        "ADR-002",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // No register: both suppressed.
    let (code, json) = d.scan_json(&["--baseline", "base.json"]);
    assert_eq!(
        (code, &json["summary"]["suppressed"]),
        (0, &2.into()),
        "{json}"
    );
    // A register (given with --exceptions) where ADR-002 has expired.
    d.write(
        "reg.md",
        format!(
            "{}\n{}",
            entry("ADR-001", "2099-12-31"),
            entry("ADR-002", "2026-01-31")
        ),
    );
    let (code, json) = d.scan_json(&["--baseline", "base.json", "--exceptions", "reg.md"]);
    assert_eq!(code, 1, "{json}");
    let notes: Vec<&str> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["note"].as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 2, "{json}");
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("allowlist ADR-002 refused: exception ADR-002 expired"))
    );
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("baseline ADR-002 refused: exception ADR-002 expired"))
    );
    // A missing or malformed register named on the command line is an error.
    let out = d.run(&["scan", "--exceptions", "nope.md"]);
    assert_eq!(out.status.code(), Some(2));
    d.write("bad.md", "## ADR-1: x\n");
    let out = d.run(&["scan", "--exceptions", "bad.md"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("line 1: ADR-1: malformed id"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn init_writes_a_starter_config_that_loads() {
    let d = Dir::bare();
    let out = d.run(&["init"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let path = d.path().join("tenant-guard.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# tenant-guard configuration"));
    tenant_guard_scan::Config::load(&path).unwrap();
    // The scan picks it up without complaint.
    d.write("README.md", "nothing here\n");
    assert_eq!(d.run(&["scan"]).status.code(), Some(0));
    // It is not overwritten without --force.
    std::fs::write(&path, "disable = []\n").unwrap();
    let out = d.run(&["init"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "disable = []\n");
    assert_eq!(d.run(&["init", "--force"]).status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn this_repositorys_register_passes_check() {
    let register =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/adr_exceptions.md");
    let d = Dir::bare();
    let out = d.run(&["adr", "check", "--file", register.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 exception, no problems"),
        "{}",
        stdout(&out)
    );
}
