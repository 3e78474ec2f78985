//! Baselines: known findings, recorded by fingerprint under an exception id,
//! that later scans do not report again. A baseline holds no secret.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::suppress::suppress;
use crate::{Error, ExceptionCheck, ExceptionId, Finding, SuppressionSource};

/// The baseline file format version.
const VERSION: u32 = 1;

/// One recorded finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineEntry {
    /// The finding's fingerprint.
    pub fingerprint: String,
    /// The rule that made it.
    pub rule_id: String,
    /// Where it was.
    pub path: String,
    /// The exception it is recorded under (the file's if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionId>,
}

/// A baseline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Format version (1).
    pub version: u32,
    /// The exception every entry without its own is recorded under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<ExceptionId>,
    /// The entries, sorted by path, rule id and fingerprint.
    pub entries: Vec<BaselineEntry>,
}

impl Baseline {
    /// A baseline of every unsuppressed finding, recorded under `exception`.
    pub fn from_findings<'a>(
        findings: impl IntoIterator<Item = &'a Finding>,
        exception: ExceptionId,
    ) -> Baseline {
        let mut b = Baseline {
            version: VERSION,
            exception: Some(exception),
            entries: Vec::new(),
        };
        b.add(findings, None);
        b
    }

    fn add<'a>(
        &mut self,
        findings: impl IntoIterator<Item = &'a Finding>,
        exception: Option<&ExceptionId>,
    ) {
        for f in findings.into_iter().filter(|f| f.suppression.is_none()) {
            if self.entries.iter().all(|e| e.fingerprint != f.fingerprint) {
                self.entries.push(BaselineEntry {
                    fingerprint: f.fingerprint.clone(),
                    rule_id: f.rule_id.clone(),
                    path: f.path.clone(),
                    exception: exception.cloned(),
                });
            }
        }
        self.entries.sort_by(|a, b| {
            (&a.path, &a.rule_id, &a.fingerprint).cmp(&(&b.path, &b.rule_id, &b.fingerprint))
        });
    }

    /// Brings the baseline up to date with a fresh scan (with inline and
    /// allowlist suppressions applied, the baseline not): entries no longer
    /// found are dropped, new unsuppressed findings are added under `exception` (the
    /// file's exception if `None`). Returns (added, removed) counts.
    pub fn update<'a>(
        &mut self,
        findings: impl IntoIterator<Item = &'a Finding> + Clone,
        exception: Option<ExceptionId>,
    ) -> (usize, usize) {
        let present: std::collections::HashSet<&str> = findings
            .clone()
            .into_iter()
            .map(|f| f.fingerprint.as_str())
            .collect();
        let before = self.entries.len();
        self.entries
            .retain(|e| present.contains(e.fingerprint.as_str()));
        let removed = before - self.entries.len();
        let kept = self.entries.len();
        let entry_exception = exception.filter(|e| Some(e) != self.exception.as_ref());
        self.add(findings, entry_exception.as_ref());
        (self.entries.len() - kept, removed)
    }

    /// Parses a baseline; every entry must resolve to an exception id.
    pub fn parse(path: &Path, text: &str) -> Result<Baseline, Error> {
        let err = |problem: String| Error::Baseline {
            path: path.to_path_buf(),
            problem,
        };
        let b: Baseline = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        if b.version != VERSION {
            return Err(err(format!("unsupported version {}", b.version)));
        }
        if let Some(e) = b
            .entries
            .iter()
            .find(|e| e.exception.is_none() && b.exception.is_none())
        {
            return Err(err(format!(
                "entry {} ({}) has no exception id: every suppression names one (ADR-NNN)",
                e.fingerprint, e.path
            )));
        }
        Ok(b)
    }

    /// Reads a baseline file.
    pub fn load(path: &Path) -> Result<Baseline, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Baseline {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        Baseline::parse(path, &text)
    }

    /// Writes the baseline as pretty JSON.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let mut text = serde_json::to_string_pretty(self).expect("a baseline serializes");
        text.push('\n');
        std::fs::write(path, text).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Marks findings recorded in this baseline as suppressed.
    pub fn apply(&self, findings: &mut [Finding], check: &ExceptionCheck) {
        let by_fp: HashMap<&str, &BaselineEntry> = self
            .entries
            .iter()
            .map(|e| (e.fingerprint.as_str(), e))
            .collect();
        for f in findings.iter_mut().filter(|f| f.suppression.is_none()) {
            let Some(entry) = by_fp.get(f.fingerprint.as_str()) else {
                continue;
            };
            let Some(id) = entry.exception.as_ref().or(self.exception.as_ref()) else {
                continue;
            };
            suppress(f, SuppressionSource::Baseline, id, check);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FindingKind, Severity};

    fn finding(path: &str, secret: &[u8]) -> Finding {
        Finding::new(
            "r",
            FindingKind::Secret,
            path,
            1,
            1,
            Severity::High,
            String::new(),
            secret,
            false,
        )
    }

    #[test]
    fn round_trip_and_apply() {
        let adr = ExceptionId::parse("ADR-001").unwrap();
        let found = vec![finding("a", b"s1"), finding("b", b"s2")];
        let b = Baseline::from_findings(&found, adr.clone());
        let text = serde_json::to_string(&b).unwrap();
        assert!(!text.contains("s1\""));
        let back = Baseline::parse(Path::new("b.json"), &text).unwrap();
        assert_eq!(back, b);
        let mut again = vec![finding("a", b"s1"), finding("c", b"s3")];
        back.apply(&mut again, &ExceptionCheck::accept_all());
        assert_eq!(again[0].suppression.as_ref().unwrap().exception, adr);
        assert!(again[1].suppression.is_none());
    }

    #[test]
    fn update_adds_and_drops() {
        let mut b = Baseline::from_findings(
            &[finding("a", b"s1"), finding("b", b"s2")],
            ExceptionId::parse("ADR-001").unwrap(),
        );
        let now = vec![finding("a", b"s1"), finding("c", b"s3")];
        let (added, removed) = b.update(&now, Some(ExceptionId::parse("ADR-002").unwrap()));
        assert_eq!((added, removed), (1, 1));
        let c = b.entries.iter().find(|e| e.path == "c").unwrap();
        assert_eq!(c.exception.as_ref().unwrap().as_str(), "ADR-002");
    }

    #[test]
    fn entries_need_an_exception() {
        let text = r#"{"version":1,"entries":[{"fingerprint":"f","rule_id":"r","path":"p"}]}"#;
        assert!(Baseline::parse(Path::new("b"), text).is_err());
        let text = r#"{"version":1,"exception":"ADR-9","entries":[]}"#;
        assert!(Baseline::parse(Path::new("b"), text).is_err());
    }
}
