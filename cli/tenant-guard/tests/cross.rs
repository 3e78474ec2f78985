//! `tenant-guard cross` with the real binary in real temp dirs: the example
//! builds of `examples/cross-tenant/` against an embedded vault.

#[allow(dead_code)]
mod util;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use util::{Dir, stderr, stdout};

fn build_script() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/cross-tenant/build.sh")
        .to_string_lossy()
        .into_owned()
}

/// Runs `tenant-guard cross --tenants acme,globex --artifacts out/{tenant}
/// --inject API_TOKEN=api-token EXTRA -- sh build.sh VARIANT` in `d`.
fn cross(d: &Dir, extra: &[&str], variant: &str) -> std::process::Output {
    let script = build_script();
    let mut args = vec![
        "cross",
        "--tenants",
        "acme,globex",
        "--artifacts",
        "out/{tenant}",
        "--inject",
        "API_TOKEN=api-token",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", &script, variant]);
    d.run(&args)
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad json ({e}): {}\n{}", stdout(out), stderr(out)))
}

fn assert_probes_denied(json: &Value) {
    let probes = json["probes"].as_array().unwrap();
    // Two ordered pairs, get + list + put each.
    assert_eq!(probes.len(), 6, "{json:#}");
    for p in probes {
        assert_eq!(p["code"], "PERMISSION_DENIED", "{p}");
        assert_eq!(p["passed"], true, "{p}");
    }
    let ops: Vec<&str> = probes
        .iter()
        .filter(|p| p["actor"] == "acme")
        .map(|p| p["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["get", "list", "put"]);
    assert!(probes.iter().all(|p| {
        p["path"]
            .as_str()
            .unwrap()
            .starts_with(&format!("tenant/{}/", p["target"].as_str().unwrap()))
    }));
}

#[test]
fn clean_build_passes() {
    let d = Dir::bare();
    let out = cross(&d, &["--format", "json"], "clean");
    let json = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{json:#}\n{}", stderr(&out));
    assert_eq!(json["verdict"], "passed");
    assert_eq!(json["leaks"].as_array().unwrap().len(), 0, "{json:#}");
    assert_eq!(json["findings"].as_array().unwrap().len(), 0, "{json:#}");
    for r in json["runs"].as_array().unwrap() {
        assert_eq!(r["status"], "passed", "{r}");
        assert_eq!(r["files"], 3, "{r}"); // app.txt, config.json, bundle.tar.gz!/./stamp
    }
    assert_eq!(json["matrix"]["acme"]["globex"]["artifacts"], 0);
    assert_probes_denied(&json);
    assert!(d.path().join("out/acme/bundle.tar.gz").is_file());
    assert!(d.path().join("out/globex/bundle.tar.gz").is_file());

    // The human report: the matrix, the probes, the verdict; no colour off a terminal.
    let out = cross(&d, &[], "clean");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("leak matrix"), "{text}");
    assert!(text.contains("ok probe acme -> globex: put"), "{text}");
    assert!(
        text.contains("cross: passed: 2 tenants, 0 canary leaks"),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "{text}");
}

#[test]
fn leaky_build_fails_with_the_leak_pinpointed() {
    let d = Dir::bare();
    let out = cross(&d, &["--format", "json"], "leaky");
    let json = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{json:#}\n{}", stderr(&out));
    assert_eq!(json["verdict"], "failed");
    let leaks = json["leaks"].as_array().unwrap();
    assert_eq!(leaks.len(), 1, "{json:#}");
    let leak = &leaks[0];
    assert_eq!(leak["kind"], "cross-tenant");
    assert_eq!(leak["verdict"], "failed");
    assert_eq!(leak["source"], "acme");
    assert_eq!(leak["canary"], "api-token");
    assert_eq!(leak["tenant"], "globex");
    assert_eq!(leak["where"], "artifact");
    assert_eq!(leak["encoding"], "base64");
    let path = leak["path"].as_str().unwrap();
    assert!(
        path.starts_with("out/globex/bundle.tar.gz!/") && path.ends_with("cache.b64"),
        "{path}"
    );
    assert_eq!(json["matrix"]["acme"]["globex"]["artifacts"], 1);
    assert_eq!(json["matrix"]["globex"]["acme"]["artifacts"], 0);
    assert_probes_denied(&json);

    // JUnit: one case per ordered pair and per probe; only acme -> globex fails.
    let d = Dir::bare();
    let out = cross(
        &d,
        &["--format", "junit", "--output", "report.xml"],
        "leaky",
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The human report goes to standard error for the job's log.
    let log = stderr(&out);
    assert!(
        log.contains(
            "FAIL cross-tenant: acme's api-token in globex's artifact out/globex/bundle.tar.gz!/"
        ),
        "{log}"
    );
    let xml = std::fs::read_to_string(d.path().join("report.xml")).unwrap();
    assert!(xml.contains(r#"name="acme -&gt; globex">"#), "{xml}");
    assert!(
        xml.contains(r#"<failure type="cross-tenant-leak""#),
        "{xml}"
    );
    assert!(xml.contains(r#"name="globex -&gt; acme"/>"#), "{xml}");
    assert!(
        xml.contains(r#"name="acme -&gt; acme (own canaries)"/>"#),
        "{xml}"
    );
    assert_eq!(
        xml.matches("<testcase classname=\"cross.probes\"").count(),
        6,
        "{xml}"
    );
    assert_eq!(
        xml.matches("<testcase classname=\"cross.leaks\"").count(),
        4,
        "{xml}"
    );
}

#[test]
fn own_canary_in_a_log_fails_unless_the_policy_allows_it() {
    let d = Dir::bare();
    let out = cross(&d, &["--format", "json"], "log-own");
    let json = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{json:#}\n{}", stderr(&out));
    let leaks = json["leaks"].as_array().unwrap();
    assert_eq!(leaks.len(), 2, "{json:#}");
    for (leak, tenant) in leaks.iter().zip(["acme", "globex"]) {
        assert_eq!(leak["kind"], "plaintext-in-log", "{leak}");
        assert_eq!(leak["source"], tenant);
        assert_eq!(leak["tenant"], tenant);
        assert_eq!(leak["where"], "log");
        assert_eq!(leak["path"], "stdout");
        assert_eq!(leak["line"], 2);
        assert_eq!(leak["encoding"], "raw");
        assert_eq!(leak["verdict"], "failed");
    }
    // The canary is reported as a canary, not also as a rule finding.
    assert_eq!(json["findings"].as_array().unwrap().len(), 0, "{json:#}");

    d.write("tenant-guard.toml", "[cross]\nallow_own_in_logs = true\n");
    let out = cross(&d, &["--format", "json"], "log-own");
    let json = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{json:#}\n{}", stderr(&out));
    assert!(
        json["leaks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["verdict"] == "allowed"),
        "{json:#}"
    );
    // A typo in the policy is an error.
    d.write("tenant-guard.toml", "[cross]\nallow_own_in_log = true\n");
    let out = cross(&d, &[], "log-own");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown field"), "{}", stderr(&out));
}

#[test]
fn each_run_gets_its_own_tenant_and_token_only() {
    let d = Dir::bare();
    // The whole environment of each run lands in its artifacts: its own
    // token is then a plaintext secret in its artifact, never another's.
    let out = d.run_env(
        &[
            "cross",
            "--tenants",
            "acme,globex,initech",
            "--artifacts",
            "out/{tenant}",
            "--parallel",
            "--format",
            "json",
            "--",
            "sh",
            "-c",
            "mkdir -p out/{tenant} && env > out/{tenant}/env-of-{tenant}.txt",
        ],
        &[("TENANT_GUARD_OPERATOR_TOKEN", "operator-marker-value")],
    );
    let json = json_of(&out);
    assert_eq!(out.status.code(), Some(1), "{json:#}\n{}", stderr(&out));
    let leaks = json["leaks"].as_array().unwrap();
    assert_eq!(leaks.len(), 3, "{json:#}");
    for l in leaks {
        assert_eq!(l["kind"], "plaintext-in-artifact", "{l}");
        assert_eq!(l["canary"], "vault-token", "{l}");
        assert_eq!(l["source"], l["tenant"], "{l}");
    }
    assert_eq!(json["probes"].as_array().unwrap().len(), 18);
    for t in ["acme", "globex", "initech"] {
        let env =
            std::fs::read_to_string(d.path().join(format!("out/{t}/env-of-{t}.txt"))).unwrap();
        assert!(env.contains(&format!("TENANT_SLUG={t}\n")), "{env}");
        assert!(env.contains("SECRET_MCP_ADDR=http://127.0.0.1:"), "{env}");
        assert!(env.contains("SECRET_MCP_TOKEN=smcpt_"), "{env}");
        assert!(!env.contains("operator-marker-value"), "{env}");
    }
}

#[test]
fn timeout_is_an_error() {
    let d = Dir::bare();
    let start = Instant::now();
    let out = d.run(&[
        "cross",
        "--tenants",
        "acme,globex",
        "--timeout",
        "500ms",
        "--format",
        "json",
        "--",
        "sh",
        "-c",
        "echo started {tenant}; sleep 30",
    ]);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("timed out"), "{}", stderr(&out));
    let json = json_of(&out);
    assert_eq!(json["verdict"], "error");
    for r in json["runs"].as_array().unwrap() {
        assert_eq!(r["status"], "timed-out", "{r}");
        assert!(r["stdout_bytes"].as_u64().unwrap() > 0, "{r}");
    }
}

#[test]
fn usage_errors() {
    let d = Dir::bare();
    for (args, message) in [
        (&["--tenants", "acme"][..], "at least two tenants"),
        (&["--tenants", "acme,acme"][..], "given twice"),
        (&["--tenants", "acme,Bad_Slug"][..], "invalid tenant"),
        (
            &["--tenants", "acme,globex", "--inject", "API_TOKEN=nope"][..],
            "unknown canary",
        ),
        (
            &["--tenants", "acme,globex", "--timeout", "soon"][..],
            "invalid duration",
        ),
        (
            &["--tenants", "acme,globex", "--vault", "127.0.0.1:1"][..],
            "operator token",
        ),
    ] {
        let mut all = vec!["cross"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "true"]);
        let out = d.run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{args:?}: {}", stderr(&out));
    }
}
