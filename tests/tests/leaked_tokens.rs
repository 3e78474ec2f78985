//! A token the vault issues is recognised by the scanner wherever it leaks,
//! and only a real one: the checksum keeps look-alikes out.

use std::sync::Arc;

use tenant_guard_scan::{FindingKind, RuleSet, ScanOptions, Scanner};
use tenant_vault::{
    Role, ScopeKind, Slug, SqliteStore, TokenSpec, Unlock, Vault, VaultOptions, create_key_file,
};

fn issued_tokens() -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    create_key_file(&key).unwrap();
    let vault = Vault::init(
        SqliteStore::open(dir.path().join("v.db")).unwrap(),
        &Unlock::KeyFile(key),
        VaultOptions::default(),
    )
    .unwrap();
    let root = vault.root_session();
    root.create_scope(&Slug::parse("acme").unwrap(), ScopeKind::Enterprise)
        .unwrap();
    let mut tokens = Vec::new();
    for spec in [
        TokenSpec {
            tenant: Some(Slug::parse("acme").unwrap()),
            role: Some(Role::Viewer),
            ..Default::default()
        },
        TokenSpec::default(), // an operator token
    ] {
        let t = root.issue_token(&spec).unwrap();
        tokens.push(String::from_utf8(t.token.expose().to_vec()).unwrap());
    }
    tokens
}

fn secret_mcp_findings(scanner: &mut Scanner, path: &str, text: &str) -> usize {
    scanner
        .scan_bytes(path, text.as_bytes())
        .iter()
        .filter(|f| f.rule_id == "secret-mcp-token" && f.kind != FindingKind::PathTraversal)
        .count()
}

#[test]
fn issued_tokens_are_found_where_they_leak_and_typos_are_not() {
    let mut scanner = Scanner::new(
        Arc::new(RuleSet::builtin().unwrap()),
        ScanOptions::default(),
    );
    for token in issued_tokens() {
        for (path, text) in [
            ("deploy.sh", format!("export SECRET_MCP_TOKEN={token}\n")),
            ("config.yaml", format!("vault:\n  token: \"{token}\"\n")),
            (
                "build.log",
                format!("[12:00:01] using token {token} for tenant acme\n"),
            ),
        ] {
            assert_eq!(secret_mcp_findings(&mut scanner, path, &text), 1, "{path}");
        }
        // One changed character: same shape, wrong checksum, no finding.
        let mut typo = token.clone().into_bytes();
        typo[30] = if typo[30] == b'x' { b'y' } else { b'x' };
        let typo = String::from_utf8(typo).unwrap();
        let text = format!("export SECRET_MCP_TOKEN={typo}\n");
        assert_eq!(secret_mcp_findings(&mut scanner, "deploy.sh", &text), 0);
        // The report never carries the whole token.
        let findings = scanner.scan_bytes("deploy.sh", format!("T={token}\n").as_bytes());
        let shown = format!("{findings:?}");
        assert!(!shown.contains(&token[10..]), "a finding shows the token");
    }
}
