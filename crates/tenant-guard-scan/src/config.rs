//! A repository's `tenant-guard.toml`: extra rules, disabled rules, rule
//! overrides and a path allowlist.

use std::path::Path;

use globset::{Glob, GlobMatcher};
use serde::Deserialize;

use crate::suppress::suppress;
use crate::{
    Error, ExceptionCheck, ExceptionId, Finding, FollowedBy, Rule, Severity, SuppressionSource,
};

/// The name of the configuration file looked for at the scan root.
pub const CONFIG_FILE_NAME: &str = "tenant-guard.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    disable: Vec<String>,
    #[serde(default, rename = "override")]
    overrides: Vec<Override>,
    #[serde(default)]
    allowlist: AllowlistFile,
    /// `tenant-guard git`'s policy: read and validated by the `git` command,
    /// accepted here so that one file configures both.
    #[serde(default, rename = "git")]
    _git: Option<serde::de::IgnoredAny>,
    /// `tenant-guard ci`'s settings: read and validated by the `ci` command.
    #[serde(default, rename = "ci")]
    _ci: Option<serde::de::IgnoredAny>,
    /// `tenant-guard cross`'s policy: read and validated by the `cross` command.
    #[serde(default, rename = "cross")]
    _cross: Option<serde::de::IgnoredAny>,
}

/// Changes to one existing rule; every field but `id` is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    id: String,
    name: Option<String>,
    description: Option<String>,
    regex: Option<String>,
    keywords: Option<Vec<String>>,
    severity: Option<Severity>,
    entropy: Option<f64>,
    max_match_len: Option<usize>,
    multiline: Option<bool>,
    generic: Option<bool>,
    followed_by: Option<FollowedBy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistFile {
    #[serde(default)]
    paths: Vec<PathEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathEntry {
    glob: String,
    exception: Option<String>,
}

/// A loaded, validated configuration.
#[derive(Debug, Default)]
pub struct Config {
    file: ConfigFile,
    allowlist: Vec<(GlobMatcher, ExceptionId)>,
}

impl Config {
    /// Parses configuration text; `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Config, Error> {
        let file: ConfigFile = toml::from_str(text).map_err(|e| Error::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        let mut allowlist = Vec::new();
        for entry in &file.allowlist.paths {
            let exception = entry
                .exception
                .as_deref()
                .ok_or_else(|| {
                    Error::Config(format!(
                        "allowlist path `{}` has no exception id: every suppression names one (ADR-NNN)",
                        entry.glob
                    ))
                })
                .and_then(|s| {
                    ExceptionId::parse(s).ok_or_else(|| {
                        Error::Config(format!("allowlist path `{}`: `{s}` is not an exception id (ADR-NNN)", entry.glob))
                    })
                })?;
            let glob = Glob::new(&entry.glob)
                .map_err(|e| Error::Config(format!("allowlist glob `{}`: {e}", entry.glob)))?;
            allowlist.push((glob.compile_matcher(), exception));
        }
        Ok(Config { file, allowlist })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&path.display().to_string(), &text)
    }

    /// Applies `disable`, `[[override]]` and `[[rules]]` to `rules`. Naming a
    /// rule that does not exist is an error.
    pub fn apply_rules(&self, mut rules: Vec<Rule>) -> Result<Vec<Rule>, Error> {
        for id in &self.file.disable {
            let before = rules.len();
            rules.retain(|r| &r.id != id);
            if rules.len() == before {
                return Err(Error::Config(format!("disable: no rule `{id}`")));
            }
        }
        for o in &self.file.overrides {
            let rule = rules
                .iter_mut()
                .find(|r| r.id == o.id)
                .ok_or_else(|| Error::Config(format!("override: no rule `{}`", o.id)))?;
            let o = o.clone();
            rule.name = o.name.unwrap_or(std::mem::take(&mut rule.name));
            rule.description = o
                .description
                .unwrap_or(std::mem::take(&mut rule.description));
            rule.regex = o.regex.unwrap_or(std::mem::take(&mut rule.regex));
            rule.keywords = o.keywords.unwrap_or(std::mem::take(&mut rule.keywords));
            rule.severity = o.severity.unwrap_or(rule.severity);
            rule.entropy = o.entropy.or(rule.entropy);
            rule.max_match_len = o.max_match_len.unwrap_or(rule.max_match_len);
            rule.multiline = o.multiline.unwrap_or(rule.multiline);
            rule.generic = o.generic.unwrap_or(rule.generic);
            if o.followed_by.is_some() {
                rule.followed_by = o.followed_by;
            }
        }
        rules.extend(self.file.rules.iter().cloned());
        Ok(rules)
    }

    /// Marks findings under an allowlisted path as suppressed. A path
    /// matches when the glob matches the whole path or the file on disk
    /// that holds it (the part before the first `!/`).
    pub fn apply_allowlist(&self, findings: &mut [Finding], check: &ExceptionCheck) {
        for f in findings.iter_mut().filter(|f| f.suppression.is_none()) {
            let outer = f.path.split("!/").next().unwrap_or(&f.path);
            let Some((_, id)) = self
                .allowlist
                .iter()
                .find(|(g, _)| g.is_match(&f.path) || g.is_match(outer))
            else {
                continue;
            };
            suppress(f, SuppressionSource::Allowlist, id, check);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::rule;

    #[test]
    fn disable_override_and_add() {
        let cfg = Config::parse(
            "t",
            r#"
disable = ["b"]
[[override]]
id = "a"
severity = "critical"
entropy = 4.0
[[rules]]
id = "c"
name = "C"
description = "c"
regex = "c+"
keywords = ["c"]
severity = "low"
"#,
        )
        .unwrap();
        let rules = cfg
            .apply_rules(vec![rule("a", "a", &["a"]), rule("b", "b", &["b"])])
            .unwrap();
        let ids: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(rules[0].severity, Severity::Critical);
        assert_eq!(rules[0].entropy, Some(4.0));
    }

    #[test]
    fn unknown_ids_and_missing_exceptions_are_errors() {
        let cfg = Config::parse("t", "disable = [\"nope\"]").unwrap();
        assert!(cfg.apply_rules(vec![]).is_err());
        let e = Config::parse("t", "[allowlist]\npaths = [{ glob = \"a/**\" }]").unwrap_err();
        assert!(e.to_string().contains("no exception id"), "{e}");
        assert!(
            Config::parse(
                "t",
                "[allowlist]\npaths = [{ glob = \"a/**\", exception = \"ADR-7\" }]"
            )
            .is_err()
        );
        assert!(Config::parse("t", "unknown = 1").is_err());
    }
}
