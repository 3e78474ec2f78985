//! Rules as data: the schema of `policies/rules/*.toml`, the built-in set and
//! the compiled form the engine runs.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use aho_corasick::{dfa::DFA, nfa::contiguous::NFA};
use regex::bytes::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::keyword_dfa::KeywordDfa;
use crate::{Checksum, Error};

/// Default regex confirmation window around a keyword hit, in bytes.
pub const DEFAULT_MAX_MATCH_LEN: usize = 512;

/// How serious a finding is. Ordered from `Info` (least) to `Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, not a leak by itself.
    Info,
    /// Low impact.
    Low,
    /// Medium impact.
    Medium,
    /// High impact: a working credential with limited reach.
    High,
    /// A credential that gives broad control.
    Critical,
}

impl Severity {
    /// The lowercase name used in rule files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => {
                return Err(format!(
                    "unknown severity `{s}` (critical|high|medium|low|info)"
                ));
            }
        })
    }
}

fn default_max_match_len() -> usize {
    DEFAULT_MAX_MATCH_LEN
}

/// One detection rule, exactly as written in a rule file (see docs/SCANNER.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Rule {
    /// Unique kebab-case id.
    pub id: String,
    /// Short human name.
    pub name: String,
    /// What the secret is and what it grants.
    pub description: String,
    /// Rust `regex` syntax; the secret is group `secret`, else group 1, else
    /// the whole match.
    pub regex: String,
    /// Literals (ASCII-case-insensitive) of which every true match contains one.
    pub keywords: Vec<String>,
    /// Severity of a finding.
    pub severity: Severity,
    /// Minimum Shannon entropy (bits per byte) of the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    /// A checksum validator the secret must pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
    /// Regex confirmation window around a keyword hit, in bytes.
    #[serde(default = "default_max_match_len")]
    pub max_match_len: usize,
    /// True if a match may span lines.
    #[serde(default)]
    pub multiline: bool,
    /// A cheap check on each keyword hit before the regex runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followed_by: Option<FollowedBy>,
    /// True for a catch-all rule (assignments, `Authorization` headers, JWTs,
    /// URL passwords, PEM keys) whose match is dropped where a non-generic
    /// rule reports an overlapping secret.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generic: bool,
    /// Links about the secret's format and revocation.
    #[serde(default)]
    pub references: Vec<String>,
    /// Optional tags (reported as SARIF `properties.tags`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Texts each of which must yield a finding of this rule.
    #[serde(default)]
    pub examples: Vec<String>,
    /// Texts none of which may yield a finding of this rule.
    #[serde(default)]
    pub negative_examples: Vec<String>,
}

/// A check on the bytes after a keyword hit, run before the regex: one of
/// the bytes of `any_of` must occur within `within` bytes after the keyword.
/// It lets a rule keep a short keyword that ordinary text is full of (`pat`
/// of every `path`) without paying a regex run for each occurrence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FollowedBy {
    /// The bytes looked for (ASCII).
    pub any_of: String,
    /// How many bytes after the keyword are looked at.
    pub within: usize,
}

impl FollowedBy {
    /// True if one of the bytes occurs in `hay[at..at + within]`.
    pub(crate) fn found(&self, hay: &[u8], at: usize) -> bool {
        let end = at.saturating_add(self.within).min(hay.len());
        let after = &hay[at.min(end)..end];
        match *self.any_of.as_bytes() {
            [a] => memchr::memchr(a, after).is_some(),
            [a, b] => memchr::memchr2(a, b, after).is_some(),
            [a, b, c] => memchr::memchr3(a, b, c, after).is_some(),
            ref set => after.iter().any(|b| set.contains(b)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    #[serde(default)]
    rules: Vec<Rule>,
}

/// The rule files compiled into the binary: `(file name, contents)`.
const BUILTIN_FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

/// Parses the text of one rule file (`[[rules]]` tables).
pub fn parse_rules(origin: &str, text: &str) -> Result<Vec<Rule>, Error> {
    toml::from_str::<RuleFile>(text)
        .map(|f| f.rules)
        .map_err(|e| Error::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })
}

/// The built-in rules: every file of `policies/rules/`, in file-name order.
pub fn builtin_rules() -> Result<Vec<Rule>, Error> {
    let mut all = Vec::new();
    for (name, text) in BUILTIN_FILES {
        all.extend(parse_rules(&format!("policies/rules/{name}"), text)?);
    }
    Ok(all)
}

/// Returns true for ids made of `[a-z0-9]` words joined by single dashes.
pub(crate) fn is_kebab_case(id: &str) -> bool {
    !id.is_empty()
        && id.split('-').all(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Per-rule problems that prevent compiling it; the first one found.
pub(crate) fn static_problem(rule: &Rule) -> Option<String> {
    field_problem(rule).or_else(|| compile_regex(&rule.regex).err())
}

/// The problems of [`static_problem`] but the regex's.
fn field_problem(rule: &Rule) -> Option<String> {
    if !is_kebab_case(&rule.id) {
        return Some("id must be kebab-case ([a-z0-9]+ joined by `-`)".into());
    }
    if rule.keywords.is_empty() || rule.keywords.iter().any(|k| k.is_empty()) {
        return Some("keywords must be a non-empty list of non-empty literals".into());
    }
    if rule.max_match_len == 0 {
        return Some("max_match_len must be positive".into());
    }
    if let Some(f) = &rule.followed_by {
        if f.any_of.is_empty() || !f.any_of.is_ascii() || f.within == 0 {
            return Some(
                "followed_by needs non-empty ASCII `any_of` and a positive `within`".into(),
            );
        }
    }
    if let Some(e) = rule.entropy {
        if !(0.0..=8.0).contains(&e) {
            return Some("entropy must be between 0 and 8 bits per byte".into());
        }
    }
    None
}

fn compile_regex(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(1 << 24)
        .build()
        .map_err(|e| format!("regex does not compile: {e}"))
}

/// The regexes of the built-in rules. Those compile (a test proves it), so
/// a rule set compiles them on first use only: most rules never see a
/// keyword hit in a scan, and compiling all 170 took 8% of a 1 GiB scan.
fn builtin_regexes() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        builtin_rules()
            .map(|rules| rules.into_iter().map(|r| r.regex).collect())
            .unwrap_or_default()
    })
}

/// A rule's compiled regex and the group holding the secret.
#[derive(Debug)]
pub(crate) struct Matcher {
    pub(crate) regex: Regex,
    /// Capture group holding the secret (0 = whole match).
    pub(crate) group: usize,
}

impl Matcher {
    fn new(regex: Regex) -> Matcher {
        let group = if regex.capture_names().any(|n| n == Some("secret")) {
            regex
                .capture_names()
                .position(|n| n == Some("secret"))
                .unwrap_or(0)
        } else if regex.captures_len() > 1 {
            1
        } else {
            0
        };
        Matcher { regex, group }
    }
}

/// A rule ready to run. Its regex is compiled when the rule set is built,
/// or, for a built-in rule's regex, on the rule's first keyword hit.
#[derive(Debug)]
pub(crate) struct CompiledRule {
    pub(crate) rule: Rule,
    matcher: OnceLock<Matcher>,
}

impl CompiledRule {
    /// The rule with its regex compiled now, or on first use if `lazy`
    /// (only for regexes known to compile).
    fn new(rule: Rule, lazy: bool) -> Result<CompiledRule, Error> {
        let matcher = OnceLock::new();
        if !lazy {
            let regex = compile_regex(&rule.regex).map_err(|problem| Error::InvalidRule {
                id: rule.id.clone(),
                problem,
            })?;
            let _ = matcher.set(Matcher::new(regex));
        }
        Ok(CompiledRule { rule, matcher })
    }

    /// The compiled regex, compiled now if this is its first use.
    pub(crate) fn matcher(&self) -> &Matcher {
        self.matcher.get_or_init(|| {
            let regex = compile_regex(&self.rule.regex)
                .expect("built-in rule regexes compile (tested by builtin_rules_parse)");
            Matcher::new(regex)
        })
    }
}

/// The keyword automaton: a compact copy of the full DFA, the full DFA when
/// the copy does not fit, or a contiguous NFA for keyword sets too large for
/// the DFA's size limit.
#[derive(Debug)]
pub(crate) enum Prefilter {
    Compact(KeywordDfa),
    Dfa(DFA),
    Nfa(NFA),
}

/// A compiled, validated set of rules with its literal prefilter.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) prefilter: Prefilter,
    /// For each prefilter pattern, the rules that use that keyword.
    pub(crate) keyword_rules: Vec<Vec<u32>>,
    /// For each prefilter pattern, its length in bytes.
    pub(crate) keyword_lens: Vec<usize>,
    /// The longest keyword's length in bytes.
    pub(crate) max_keyword: usize,
    /// The largest `max_match_len` of any rule.
    pub(crate) max_window: usize,
}

impl RuleSet {
    /// Compiles `rules`. Fails on the first invalid rule or duplicate id.
    pub fn new(rules: Vec<Rule>) -> Result<RuleSet, Error> {
        let builtin = builtin_regexes();
        RuleSet::build(rules, |rule| builtin.contains(&rule.regex))
    }

    /// Compiles `rules`, leaving the regexes of those for which `lazy` is
    /// true to their first use: `lazy` must only accept regexes known to
    /// compile.
    fn build(rules: Vec<Rule>, lazy: impl Fn(&Rule) -> bool) -> Result<RuleSet, Error> {
        let mut seen = BTreeSet::new();
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            if let Some(problem) = field_problem(&rule) {
                return Err(Error::InvalidRule {
                    id: rule.id,
                    problem,
                });
            }
            if !seen.insert(rule.id.clone()) {
                return Err(Error::InvalidRule {
                    id: rule.id,
                    problem: "duplicate id".into(),
                });
            }
            let lazy = lazy(&rule);
            compiled.push(CompiledRule::new(rule, lazy)?);
        }
        let mut keyword_ids: HashMap<String, usize> = HashMap::new();
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<u32>> = Vec::new();
        for (i, c) in compiled.iter().enumerate() {
            for k in &c.rule.keywords {
                let k = k.to_ascii_lowercase();
                let slot = *keyword_ids.entry(k.clone()).or_insert_with(|| {
                    keywords.push(k);
                    keyword_rules.push(Vec::new());
                    keyword_rules.len() - 1
                });
                let i = u32::try_from(i).expect("fewer than 2^32 rules");
                if !keyword_rules[slot].contains(&i) {
                    keyword_rules[slot].push(i);
                }
            }
        }
        // A full DFA is the fastest search; very large keyword sets that
        // exceed its size limit fall back to a contiguous NFA.
        // No automaton prefilter: with one, the start state is "special" and
        // every return to it would leave the search loop's fast path.
        let prefilter = aho_corasick::dfa::Builder::new()
            .ascii_case_insensitive(true)
            .prefilter(false)
            .build(&keywords)
            .map(|dfa| match KeywordDfa::new(&dfa) {
                Some(compact) => Prefilter::Compact(compact),
                None => Prefilter::Dfa(dfa),
            })
            .or_else(|_| {
                aho_corasick::nfa::contiguous::Builder::new()
                    .ascii_case_insensitive(true)
                    .prefilter(false)
                    .build(&keywords)
                    .map(Prefilter::Nfa)
            })
            .map_err(|e| Error::InvalidRule {
                id: "*".into(),
                problem: format!("keyword automaton: {e}"),
            })?;
        let keyword_lens: Vec<usize> = keywords.iter().map(String::len).collect();
        let max_keyword = keyword_lens.iter().copied().max().unwrap_or(0);
        let max_window = compiled
            .iter()
            .map(|c| c.rule.max_match_len)
            .max()
            .unwrap_or(DEFAULT_MAX_MATCH_LEN);
        Ok(RuleSet {
            rules: compiled,
            prefilter,
            keyword_rules,
            keyword_lens,
            max_keyword,
            max_window,
        })
    }

    /// The built-in rules, compiled.
    pub fn builtin() -> Result<RuleSet, Error> {
        RuleSet::new(builtin_rules()?)
    }

    /// The rules in this set, in order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter().map(|c| &c.rule)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when the set holds no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Finds a rule by id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules().find(|r| r.id == id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn rule(id: &str, regex: &str, keywords: &[&str]) -> Rule {
        Rule {
            id: id.into(),
            name: id.into(),
            description: format!("test rule {id}"),
            regex: regex.into(),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            severity: Severity::High,
            entropy: None,
            checksum: None,
            max_match_len: DEFAULT_MAX_MATCH_LEN,
            multiline: false,
            followed_by: None,
            generic: false,
            references: vec![],
            tags: vec![],
            examples: vec![],
            negative_examples: vec![],
        }
    }

    #[test]
    fn kebab_case() {
        assert!(is_kebab_case("slack-bot-token"));
        assert!(is_kebab_case("aws2"));
        for bad in ["", "Slack", "a--b", "-a", "a-", "a_b"] {
            assert!(!is_kebab_case(bad), "{bad}");
        }
    }

    #[test]
    fn rejects_bad_rules() {
        let bad_regex = rule("bad-regex", "(", &["x"]);
        assert!(matches!(
            RuleSet::new(vec![bad_regex]),
            Err(Error::InvalidRule { .. })
        ));
        let no_kw = rule("no-kw", "abc", &[]);
        assert!(RuleSet::new(vec![no_kw]).is_err());
        let dup = vec![rule("a", "a", &["a"]), rule("a", "b", &["b"])];
        assert!(RuleSet::new(dup).is_err());
    }

    #[test]
    fn secret_group_selection() {
        let set = RuleSet::new(vec![
            rule("named", r"k=(x)(?P<secret>y+)", &["k="]),
            rule("first", r"k=(y+)", &["k="]),
            rule("whole", r"k=y+", &["k="]),
        ])
        .unwrap();
        let groups: Vec<usize> = set.rules.iter().map(|c| c.matcher().group).collect();
        assert_eq!(groups, vec![2, 1, 0]);
    }

    #[test]
    fn parse_rejects_unknown_fields_and_checksums() {
        let text = "[[rules]]\nid='a'\nname='a'\ndescription='a'\nregex='a'\nkeywords=['a']\nseverity='low'\nentorpy=3.0\n";
        assert!(parse_rules("t", text).is_err());
        let text = "[[rules]]\nid='a'\nname='a'\ndescription='a'\nregex='a'\nkeywords=['a']\nseverity='low'\nchecksum='crc'\n";
        assert!(parse_rules("t", text).is_err());
        let text = "[[rules]]\nid='a'\nname='a'\ndescription='a'\nregex='a'\nkeywords=['a']\nseverity='low'\nchecksum='github'\n";
        assert_eq!(
            parse_rules("t", text).unwrap()[0].checksum,
            Some(Checksum::Github)
        );
    }

    #[test]
    fn builtin_rules_parse() {
        // Whatever is in policies/rules must parse and compile (their
        // regexes are compiled lazily in scans, on this promise).
        let set = RuleSet::builtin().unwrap();
        for c in &set.rules {
            compile_regex(&c.rule.regex).unwrap();
        }
    }

    #[test]
    fn lazy_and_eager_rules_find_the_same() {
        use crate::{ScanOptions, Scanner};
        use std::sync::Arc;
        let rules = builtin_rules().unwrap();
        let lazy = RuleSet::build(rules.clone(), |_| true).unwrap();
        assert!(lazy.rules.iter().all(|c| c.matcher.get().is_none()));
        let eager = RuleSet::build(rules.clone(), |_| false).unwrap();
        let mut text = String::new();
        for r in &rules {
            for e in r.examples.iter().chain(&r.negative_examples) {
                text.push_str(e);
                text.push('\n');
            }
        }
        let scan = |set: RuleSet| {
            let mut s = Scanner::new(Arc::new(set), ScanOptions::default());
            s.scan_bytes("x", text.as_bytes())
        };
        let key = |f: Vec<crate::Finding>| {
            f.into_iter()
                .map(|f| (f.rule_id, f.line, f.column, f.fingerprint))
                .collect::<Vec<_>>()
        };
        let (a, b) = (key(scan(lazy)), key(scan(eager)));
        assert!(!a.is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn user_regexes_are_checked_at_load() {
        // Not a built-in regex: compiled eagerly, so a bad one fails now.
        let bad = rule("bad", "a{99999999}", &["a"]);
        assert!(matches!(
            RuleSet::new(vec![bad]),
            Err(Error::InvalidRule { .. })
        ));
    }
}
