//! `rules check`: proves each rule against its own examples with the real
//! engine.

use std::collections::HashMap;
use std::sync::Arc;

use crate::rules::static_problem;
use crate::{Rule, RuleSet, ScanOptions, Scanner};

/// The problems found with one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFailure {
    /// The rule's id.
    pub id: String,
    /// Each problem, in words.
    pub problems: Vec<String>,
}

/// Checks every rule: it compiles, its id is kebab-case and unique, it has
/// keywords and at least one example, each example contains a keyword and
/// yields a finding of the rule, and no negative example does. Returns the
/// failing rules (an empty list means every rule passed).
pub fn check_rules(rules: &[Rule]) -> Vec<RuleFailure> {
    let mut problems: Vec<Vec<String>> = vec![Vec::new(); rules.len()];
    let mut first_with_id: HashMap<&str, usize> = HashMap::new();
    let mut runnable = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(p) = static_problem(rule) {
            problems[i].push(p);
        }
        if let Some(&j) = first_with_id.get(rule.id.as_str()) {
            problems[i].push(format!("duplicate id (also rule #{})", j + 1));
        } else {
            if problems[i].is_empty() {
                runnable.push(i);
            }
            first_with_id.insert(&rule.id, i);
        }
        if rule.examples.is_empty() {
            problems[i].push("no examples".into());
        }
        let keywords: Vec<String> = rule
            .keywords
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        for (n, example) in rule.examples.iter().enumerate() {
            let lower = example.to_ascii_lowercase();
            if !keywords
                .iter()
                .any(|k| !k.is_empty() && lower.contains(k.as_str()))
            {
                problems[i].push(format!("example #{} contains none of the keywords", n + 1));
            }
        }
    }
    match RuleSet::new(runnable.iter().map(|&i| rules[i].clone()).collect()) {
        Ok(set) => {
            let mut scanner = Scanner::new(Arc::new(set), ScanOptions::default().all_matches(true));
            for &i in &runnable {
                let rule = &rules[i];
                let hits = |scanner: &mut Scanner, text: &str| {
                    scanner
                        .scan_bytes("example.txt", text.as_bytes())
                        .iter()
                        .filter(|f| f.rule_id == rule.id)
                        .count()
                };
                for (n, example) in rule.examples.iter().enumerate() {
                    if hits(&mut scanner, example) == 0 {
                        problems[i].push(format!("example #{} yields no finding", n + 1));
                    }
                }
                for (n, example) in rule.negative_examples.iter().enumerate() {
                    if hits(&mut scanner, example) > 0 {
                        problems[i].push(format!("negative example #{} yields a finding", n + 1));
                    }
                }
            }
        }
        Err(e) => {
            for &i in &runnable {
                problems[i].push(format!("rule set does not compile: {e}"));
            }
        }
    }
    rules
        .iter()
        .zip(problems)
        .filter(|(_, p)| !p.is_empty())
        .map(|(r, problems)| RuleFailure {
            id: r.id.clone(),
            problems,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::rule;

    #[test]
    fn reports_each_kind_of_problem() {
        let mut good = rule("good", r"\b(tok_[A-Za-z0-9]{20})\b", &["tok_"]);
        good.examples = vec!["t = tok_Q3v9LmX2pR7sK1wZ8yBn".into()];
        good.negative_examples = vec!["tok_your_token_here_xx".into()];
        let mut weak = good.clone();
        weak.id = "weak".into();
        weak.negative_examples = vec!["tok_R3v9LmX2pR7sK1wZ8yBn".into()];
        weak.examples.push("no keyword here".into());
        let mut bad = rule("Bad_Id", "(", &["x"]);
        bad.examples = vec!["x".into()];
        let failures = check_rules(&[good, weak, bad]);
        let ids: Vec<&str> = failures.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["weak", "Bad_Id"]);
        let weak = &failures[0].problems;
        assert!(
            weak.iter().any(|p| p.contains("none of the keywords")),
            "{weak:?}"
        );
        assert!(
            weak.iter().any(|p| p.contains("negative example #1")),
            "{weak:?}"
        );
    }
}
