//! The library against the fixture rules and the built-in rules.

use tenant_guard_scan::{builtin_rules, check_rules, parse_rules};

const FIXTURE_RULES: &str = include_str!("fixtures/test-rules.toml");

#[test]
fn fixture_rules_pass_their_own_examples() {
    let rules = parse_rules("test-rules.toml", FIXTURE_RULES).unwrap();
    assert_eq!(rules.len(), 5);
    let failures = check_rules(&rules);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_broken_example_is_caught() {
    let mut rules = parse_rules("test-rules.toml", FIXTURE_RULES).unwrap();
    // Swap the github-style example for one with a wrong checksum.
    rules[4].examples = vec!["refresh=ghr_M7H4jxUDDWHP4kZ6A4dxlQYsQIWJuq11T4V3".into()]; // tenant-guard:allow ADR-001 (test value)
    let failures = check_rules(&rules);
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].id, "fixture-github");
}

/// The real rule set in policies/rules: every rule must prove itself.
#[test]
fn builtin_rules_pass_rules_check() {
    let rules = builtin_rules().expect("policies/rules parses");
    assert!(!rules.is_empty(), "policies/rules holds no rules");
    let failures = check_rules(&rules);
    assert!(failures.is_empty(), "failing built-in rules: {failures:#?}");
}
