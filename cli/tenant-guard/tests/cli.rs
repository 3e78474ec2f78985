//! Runs the real `tenant-guard` binary on fixtures written into temp dirs.

mod exceptions;
mod util;

use util::{Dir, fixture_findings, gzip_bytes, stderr, stdout, tar_bytes, token, zip_bytes};

fn line_with(secret: &str) -> String {
    format!("import os\n\nAPI = \"{secret}\"\nprint(API)\n")
}

#[test]
fn json_reports_redacted_findings_and_exit_1() {
    let d = Dir::new();
    d.write("src/app.py", line_with(&token(1)));
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 1);
    let f = fixture_findings(&json);
    assert_eq!(
        f,
        vec![(
            "src/app.py".into(),
            3,
            8,
            "fixture-token".into(),
            "secret".into()
        )]
    );
    let text = json.to_string();
    assert!(
        !text.contains(&token(1)),
        "full secret leaked into the report"
    );
    let finding = &json["findings"][0];
    assert_eq!(finding["redacted"], "tgt_…(36 chars)");
    assert_eq!(finding["fingerprint"].as_str().unwrap().len(), 32);
    assert_eq!(finding["severity"], "high");
}

#[test]
fn show_secrets_prints_the_value() {
    let d = Dir::new();
    d.write("a.py", line_with(&token(2)));
    let (_, json) = d.scan_json(&["--show-secrets"]);
    assert_eq!(json["findings"][0]["secret"], token(2).as_str());
    let human = stdout(&d.run(&["scan", "--show-secrets"]));
    assert!(human.contains(&token(2)));
    let human = stdout(&d.run(&["scan"]));
    assert!(!human.contains(&token(2)));
}

#[test]
fn exit_codes() {
    let d = Dir::new();
    d.write("README.md", "nothing to see here\n");
    assert_eq!(d.run(&["scan"]).status.code(), Some(0));
    d.write("low.yaml", "id: tglow_q3v9lm2pr7sk1wz8\n");
    assert_eq!(d.run(&["scan"]).status.code(), Some(1));
    assert_eq!(
        d.run(&["scan", "--fail-on", "medium"]).status.code(),
        Some(0)
    );
    let out = d.run(&["scan", "no/such/path"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no such file"), "{}", stderr(&out));
    // A bad regex in the configuration.
    let bad = Dir::bare();
    bad.write(
        "tenant-guard.toml",
        "[[rules]]\nid='bad'\nname='b'\ndescription='b'\nregex='('\nkeywords=['x']\nseverity='low'\n",
    );
    assert_eq!(bad.run(&["scan"]).status.code(), Some(2));
    // An allowlist entry without an exception id.
    let bad = Dir::bare();
    bad.write(
        "tenant-guard.toml",
        "[allowlist]\npaths = [{ glob = \"vendor/**\" }]\n",
    );
    let out = bad.run(&["scan"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("exception"), "{}", stderr(&out));
}

#[test]
fn human_output_and_colour() {
    let d = Dir::new();
    d.write("cfg/app.properties", format!("a=1\ntoken={}\n", token(3)));
    let out = d.run(&["scan"]);
    let text = stdout(&out);
    assert!(
        text.contains("cfg/app.properties:2:7  fixture-token"),
        "{text}"
    );
    assert!(text.contains("tgt_…(36 chars)"));
    assert!(!text.contains('\x1b'), "no colour when piped");
    let text = stdout(&d.run(&["scan", "--color", "always"]));
    assert!(text.contains("\x1b[31m"), "{text}");
}

#[test]
fn sarif_is_valid_sarif_2_1_0() {
    let d = Dir::new();
    d.write("src/a b.py", line_with(&token(4)));
    d.write(".env", format!("T={}\n", token(5)));
    d.write(
        "dist/app.zip",
        zip_bytes(&[
            (
                "config/app.properties",
                format!("x\nt={}\n", token(6)).as_bytes(),
            ),
            ("../evil.txt", b"x"),
        ]),
    );
    let out = d.run(&["scan", "--format", "sarif"]);
    assert_eq!(out.status.code(), Some(1));
    let sarif: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("data/sarif-schema-2.1.0.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(sarif["version"], "2.1.0");
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    let fixture = rules.iter().find(|r| r["id"] == "fixture-token").unwrap();
    for key in [
        "shortDescription",
        "fullDescription",
        "helpUri",
        "defaultConfiguration",
        "properties",
    ] {
        assert!(!fixture[key].is_null(), "rule metadata lacks {key}");
    }
    let results = run["results"].as_array().unwrap();
    let uris: Vec<&str> = results
        .iter()
        .map(|r| {
            r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(uris.contains(&"src/a%20b.py"), "{uris:?}");
    assert!(
        uris.contains(&"dist/app.zip!/config/app.properties"),
        "{uris:?}"
    );
    for r in results {
        assert!(
            r["partialFingerprints"]
                .as_object()
                .is_some_and(|o| !o.is_empty())
        );
        assert!(
            r["locations"][0]["physicalLocation"]["region"]["startLine"]
                .as_u64()
                .unwrap()
                >= 1
        );
        let idx = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[idx]["id"], r["ruleId"]);
    }
}

#[test]
fn junit_has_one_failing_testcase_per_finding() {
    let d = Dir::new();
    d.write("a.py", line_with(&token(7)));
    d.write("b.py", line_with(&token(8)));
    let out = d.run(&["scan", "--format", "junit", "--output", "report.xml"]);
    assert_eq!(out.status.code(), Some(1));
    let xml = std::fs::read_to_string(d.path().join("report.xml")).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert_eq!(
        xml.matches("<testcase ").count(),
        xml.matches("<failure ").count()
    );
    assert!(xml.matches("<failure ").count() >= 2);
    assert!(xml.contains(r#"name="fixture-token at a.py:3:8""#), "{xml}");
    assert!(!xml.contains(&token(7)));
    let clean = Dir::new();
    clean.write("a.txt", "hello\n");
    let out = clean.run(&["scan", "--format", "junit"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("no leaks found"));
    assert!(!stdout(&out).contains("<failure"));
}

#[test]
fn baseline_round_trip() {
    let d = Dir::new();
    d.write("a.py", line_with(&token(9)));
    let out = d.run(&[
        "baseline",
        "create",
        "--output",
        "baseline.json",
        "--exception",
        "ADR-007",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(d.path().join("baseline.json")).unwrap();
    assert!(!text.contains(&token(9)));
    assert!(text.contains("ADR-007") && text.contains("fixture-token") && text.contains("a.py"));
    let (code, json) = d.scan_json(&["--baseline", "baseline.json"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["summary"]["suppressed"], 1);
    // A new secret is reported; the known one is not.
    d.write("b.py", line_with(&token(10)));
    let (code, json) = d.scan_json(&["--baseline", "baseline.json"]);
    assert_eq!(code, 1);
    let paths: Vec<String> = fixture_findings(&json).into_iter().map(|f| f.0).collect();
    assert_eq!(paths, vec!["b.py".to_string()]);
    // Update records it under a new exception.
    let out = d.run(&[
        "baseline",
        "update",
        "--output",
        "baseline.json",
        "--exception",
        "ADR-008",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let (code, _) = d.scan_json(&["--baseline", "baseline.json"]);
    assert_eq!(code, 0);
    let text = std::fs::read_to_string(d.path().join("baseline.json")).unwrap();
    assert!(text.contains("ADR-008"));
    // Baseline without exception ids is refused.
    d.write(
        "bad.json",
        r#"{"version":1,"entries":[{"fingerprint":"x","rule_id":"r","path":"p"}]}"#,
    );
    assert_eq!(
        d.run(&["scan", "--baseline", "bad.json"]).status.code(),
        Some(2)
    );
    assert_eq!(
        d.run(&[
            "baseline",
            "create",
            "--output",
            "x.json",
            "--exception",
            "ADR-1"
        ])
        .status
        .code(),
        Some(2)
    );
}

#[test]
fn inline_allow_needs_an_exception_id() {
    let d = Dir::new();
    d.write(
        "a.py",
        format!(
            "T = \"{}\"  # tenant-guard:allow ADR-012 test fixture\n",
            token(11)
        ),
    );
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["summary"]["suppressed"], 1);
    d.write(
        "b.py",
        format!("T = \"{}\"  # tenant-guard:allow\n", token(12)),
    );
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 1);
    let f = &json["findings"][0];
    assert_eq!(f["path"], "b.py");
    assert!(
        f["note"]
            .as_str()
            .unwrap()
            .contains("without an exception id")
    );
}

#[test]
fn allowlist_suppresses_with_an_exception() {
    let d = Dir::bare();
    d.write(
        "tenant-guard.toml",
        format!(
            "{}\n[allowlist]\npaths = [{{ glob = \"testdata/**\", exception = \"ADR-003\" }}]\n",
            util::FIXTURE_RULES
        ),
    );
    d.write("testdata/keys.txt", line_with(&token(13)));
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["summary"]["suppressed"], 1);
}

#[test]
fn archives_of_every_kind_nested() {
    let d = Dir::new();
    let props = format!("# app\nkey={}\n", token(20));
    let jar = zip_bytes(&[("config/app.properties", props.as_bytes())]);
    let tgz = gzip_bytes(&tar_bytes(&[
        ("lib/app.jar", &jar),
        (
            "etc/pw.yaml",
            format!("x: 1\nv: {}\n", token(21)).as_bytes(),
        ),
    ]));
    let outer = zip_bytes(&[("bundle.tar.gz", &tgz)]);
    d.write("dist/release.zip", &outer);
    d.write(
        "dist/plain.tar",
        tar_bytes(&[("a/b.txt", format!("{}\n", token(22)).as_bytes())]),
    );
    d.write(
        "dist/log.txt.gz",
        gzip_bytes(format!("l1\nl2\n{}\n", token(23)).as_bytes()),
    );
    d.write(
        "dist/pkg.whl",
        zip_bytes(&[("pkg/settings.py", line_with(&token(24)).as_bytes())]),
    );
    // Detected by magic bytes, whatever the name.
    d.write(
        "dist/blob.bin",
        zip_bytes(&[("inside.txt", format!("{}\n", token(25)).as_bytes())]),
    );
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 1);
    let got: Vec<(String, u64)> = fixture_findings(&json)
        .into_iter()
        .map(|f| (f.0, f.1))
        .collect();
    let want: Vec<(String, u64)> = vec![
        ("dist/blob.bin!/inside.txt".into(), 1),
        ("dist/log.txt.gz".into(), 3),
        ("dist/pkg.whl!/pkg/settings.py".into(), 3),
        ("dist/plain.tar!/a/b.txt".into(), 1),
        ("dist/release.zip!/bundle.tar.gz!/etc/pw.yaml".into(), 2),
        (
            "dist/release.zip!/bundle.tar.gz!/lib/app.jar!/config/app.properties".into(),
            2,
        ),
    ];
    assert_eq!(got, want);
    // Too deep: depth 1 stops at the first archive's archives.
    let (_, json) = d.scan_json(&["--max-archive-depth", "1"]);
    let kinds: Vec<(String, String)> = fixture_findings(&json)
        .into_iter()
        .map(|f| (f.0, f.4))
        .collect();
    assert!(
        kinds.contains(&(
            "dist/release.zip!/bundle.tar.gz".into(),
            "archive-limit".into()
        )),
        "{kinds:?}"
    );
}

#[test]
fn zip_bomb_is_reported_not_followed() {
    let d = Dir::new();
    let mut big = vec![b'0'; 8 << 20];
    big.extend_from_slice(format!("\n{}\n", token(30)).as_bytes());
    d.write(
        "bomb.zip",
        zip_bytes(&[("huge.txt", &big), ("ok.txt", b"fine\n")]),
    );
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 1);
    let f = fixture_findings(&json);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].0.as_str(), f[0].4.as_str()),
        ("bomb.zip!/huge.txt", "archive-limit")
    );
    // With a generous ratio the entry is read and the secret found.
    let (_, json) = d.scan_json(&["--max-expansion-ratio", "100000"]);
    let f = fixture_findings(&json);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].3, "fixture-token");
    // A gzip bomb too.
    let g = Dir::new();
    g.write("bomb.gz", gzip_bytes(&big));
    let (_, json) = g.scan_json(&[]);
    let f = fixture_findings(&json);
    assert_eq!(
        (f[0].0.as_str(), f[0].4.as_str()),
        ("bomb.gz", "archive-limit"),
        "{f:?}"
    );
}

#[test]
fn path_traversal_entries_are_reported_and_never_written() {
    let d = Dir::new();
    d.write(
        "sub/evil.zip",
        zip_bytes(&[("../../escaped.txt", b"x\n"), ("/etc/abs.txt", b"y\n")]),
    );
    let (code, json) = d.scan_json(&["sub"]);
    assert_eq!(code, 1);
    let f = fixture_findings(&json);
    let got: Vec<(&str, &str)> = f.iter().map(|f| (f.0.as_str(), f.4.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("evil.zip!/../../escaped.txt", "path-traversal"),
            ("evil.zip!//etc/abs.txt", "path-traversal")
        ]
    );
    assert!(!d.path().join("escaped.txt").exists());
    assert!(!d.path().parent().unwrap().join("escaped.txt").exists());
}

#[test]
fn binary_files_are_scanned_as_strings() {
    let d = Dir::new();
    let mut bin = vec![0x7f, b'E', b'L', b'F', 0, 0, 1, 2, 3];
    bin.extend_from_slice(token(40).as_bytes());
    bin.extend_from_slice(&[0, 0xff, 0xfe, 0]);
    d.write("target/app", &bin);
    let (_, json) = d.scan_json(&[]);
    let f = fixture_findings(&json);
    assert_eq!(
        f,
        vec![(
            "target/app".into(),
            1,
            10,
            "fixture-token".into(),
            "secret".into()
        )]
    );
}

#[test]
fn gitignore_is_respected_unless_scanning_artifacts() {
    let d = Dir::new();
    d.write(".gitignore", "dist/\n");
    d.write("dist/bundle.js", format!("var t=\"{}\";\n", token(50)));
    d.write(".git/config", format!("token={}\n", token(51)));
    d.write("src/ok.js", "var x = 1;\n");
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 0, "{json}");
    let (code, json) = d.scan_json(&["--artifacts"]);
    assert_eq!(code, 1);
    let paths: Vec<String> = fixture_findings(&json).into_iter().map(|f| f.0).collect();
    assert_eq!(paths, vec!["dist/bundle.js".to_string()]);
    let (_, json) = d.scan_json(&["--no-ignore"]);
    assert_eq!(fixture_findings(&json).len(), 1);
}

#[test]
fn dotenv_findings_have_their_own_kind() {
    let d = Dir::new();
    d.write(".env.production", "id=tglow_q3v9lm2pr7sk1wz8\n");
    d.write(".env.example", "id=tglow_z3v9lm2pr7sk1wq8\n");
    let (_, json) = d.scan_json(&[]);
    let findings = json["findings"].as_array().unwrap();
    let prod = findings
        .iter()
        .find(|f| f["path"] == ".env.production")
        .unwrap();
    assert_eq!(prod["kind"], "dotenv");
    assert_eq!(prod["severity"], "high");
    assert!(prod["message"].as_str().unwrap().contains(".env"));
    let example = findings
        .iter()
        .find(|f| f["path"] == ".env.example")
        .unwrap();
    assert_eq!(example["kind"], "secret");
    assert_eq!(example["severity"], "low");
}

#[test]
fn multiline_keys_are_found() {
    let d = Dir::new();
    let key = "-----BEGIN TGTEST KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\nKUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END TGTEST KEY-----\n";
    d.write("keys/id.pem", format!("# key\n{key}"));
    let (_, json) = d.scan_json(&[]);
    let f = fixture_findings(&json);
    assert_eq!(
        f,
        vec![(
            "keys/id.pem".into(),
            2,
            1,
            "fixture-private-key".into(),
            "secret".into()
        )]
    );
}

#[test]
fn output_order_is_deterministic() {
    let d = Dir::new();
    for i in 0..60 {
        d.write(
            &format!("d{}/f{}.txt", i % 7, i),
            format!("{}\n\n{} {}\n", token(i), token(i + 100), token(i + 200)),
        );
    }
    let a = d.run(&["scan", "--format", "json", "--threads", "4"]);
    let b = d.run(&["scan", "--format", "json", "--threads", "2"]);
    assert_eq!(stdout(&a), stdout(&b));
    let json: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let f = fixture_findings(&json);
    assert_eq!(f.len(), 180);
    let mut sorted = f.clone();
    sorted.sort_by(|x, y| (&x.0, x.1, x.2, &x.3).cmp(&(&y.0, y.1, y.2, &y.3)));
    assert_eq!(f, sorted);
}

#[test]
fn rules_list_and_check_with_a_config() {
    let d = Dir::bare();
    d.write("tg.toml", util::FIXTURE_RULES);
    let out = d.run(&["rules", "list", "--config", "tg.toml"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("fixture-token"));
    let broken = util::FIXTURE_RULES.replace("tglow_q3v9lm2pr7sk1wz8", "tglow_q3v9");
    d.write("broken.toml", broken);
    let out = d.run(&["rules", "check", "--config", "broken.toml"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("FAIL fixture-low") && text.contains("example #1 yields no finding"),
        "{text}"
    );
    assert!(!text.contains("FAIL fixture-token"), "{text}");
}

/// `rules check` on the real built-in set in policies/rules.
#[test]
fn builtin_rules_pass_rules_check() {
    let d = Dir::bare();
    let out = d.run(&["rules", "check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

/// `len` characters of `alphabet`, varied by `seed`.
fn body(seed: usize, len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|k| alphabet[(seed * 31 + k * 17 + k * k * 7) % alphabet.len()] as char)
        .collect()
}

#[test]
fn one_finding_per_secret_in_generic_assignments() {
    const B62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let slack = format!(
        "xoxb-{}-{}-{}",
        body(1, 12, b"0123456789"),
        body(2, 13, b"0123456789"),
        body(3, 24, B62)
    );
    let aws = format!("AKIA{}", body(4, 16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"));
    let stripe = format!("sk_live_{}", body(5, 24, B62));
    let generic = body(6, 32, B62);
    let d = Dir::bare();
    d.write(
        "deploy/.env",
        format!(
            "SLACK_BOT_TOKEN={slack}\nAWS_ACCESS_KEY_ID={aws}\nSTRIPE_SECRET_KEY=\"{stripe}\"\n\
             APP_SECRET={generic}\nAuthorization: Bearer {slack}\n"
        ),
    );
    let (code, json) = d.scan_json(&[]);
    assert_eq!(code, 1);
    let got: Vec<(u64, &str)> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["line"].as_u64().unwrap(), f["rule_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "slack-bot-token"),
            (2, "aws-access-key-id"),
            (3, "stripe-live-secret-key"),
            (4, "generic-secret-assignment"),
            (5, "slack-bot-token"),
        ],
        "{json}"
    );
}
