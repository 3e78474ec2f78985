//! Suppressions: every one names an exception id (`ADR-NNN`). Inline
//! `tenant-guard:allow ADR-NNN` comments, baseline entries and path
//! allowlists all resolve to a [`Suppression`].

use serde::{Deserialize, Serialize};

use crate::Finding;

/// An exception id: `ADR-` followed by three or more digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ExceptionId(String);

impl ExceptionId {
    /// Parses `ADR-` + 3 or more ASCII digits.
    pub fn parse(s: &str) -> Option<ExceptionId> {
        let digits = s.strip_prefix("ADR-")?;
        (digits.len() >= 3 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| ExceptionId(s.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ExceptionId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ExceptionId::parse(&s)
            .ok_or_else(|| format!("`{s}` is not an exception id (ADR- and 3+ digits)"))
    }
}

impl From<ExceptionId> for String {
    fn from(id: ExceptionId) -> String {
        id.0
    }
}

impl std::fmt::Display for ExceptionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether an exception id may be used, as decided by an [`ExceptionCheck`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Validity {
    /// The exception exists and is in force.
    Valid,
    /// The exception is unknown or expired; the reason is reported.
    Invalid(String),
}

/// The hook that decides whether an exception id is in force (for example
/// against the exceptions register). Cheap to clone; shared by every thread
/// of a scan.
#[derive(Clone)]
pub struct ExceptionCheck(std::sync::Arc<dyn Fn(&ExceptionId) -> Validity + Send + Sync>);

impl ExceptionCheck {
    /// A check made of `f`.
    pub fn new(f: impl Fn(&ExceptionId) -> Validity + Send + Sync + 'static) -> Self {
        ExceptionCheck(std::sync::Arc::new(f))
    }

    /// Accepts every well-formed id (used when no register exists).
    pub fn accept_all() -> Self {
        ExceptionCheck::new(|_| Validity::Valid)
    }

    /// Decides about `id`.
    pub fn check(&self, id: &ExceptionId) -> Validity {
        (self.0)(id)
    }
}

impl Default for ExceptionCheck {
    fn default() -> Self {
        ExceptionCheck::accept_all()
    }
}

impl std::fmt::Debug for ExceptionCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExceptionCheck(..)")
    }
}

/// Where a suppression came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum SuppressionSource {
    /// A `tenant-guard:allow ADR-NNN` comment on the finding's line.
    Inline,
    /// A baseline file entry.
    Baseline,
    /// A path allowlist entry of the configuration.
    Allowlist,
}

/// A finding's suppression: its source and the exception it is recorded under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Suppression {
    /// Where it came from.
    pub source: SuppressionSource,
    /// The exception id it names.
    pub exception: ExceptionId,
}

/// Applies a suppression to `finding` if `check` accepts `id`; otherwise
/// leaves the finding reported with a note saying why.
pub(crate) fn suppress(
    finding: &mut Finding,
    source: SuppressionSource,
    id: &ExceptionId,
    check: &ExceptionCheck,
) {
    match check.check(id) {
        Validity::Valid => {
            finding.suppression = Some(Suppression {
                source,
                exception: id.clone(),
            });
        }
        Validity::Invalid(reason) => {
            let what = match source {
                SuppressionSource::Inline => "inline allow",
                SuppressionSource::Baseline => "baseline",
                SuppressionSource::Allowlist => "allowlist",
            };
            finding.note = Some(format!("{what} {id} refused: {reason}"));
        }
    }
}

/// The marker of an inline allow comment.
pub(crate) const INLINE_MARK: &[u8] = b"tenant-guard:allow";

/// What a line says about inline suppression.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum InlineAllow {
    /// No marker on the line.
    None,
    /// A marker followed by a valid exception id.
    Id(ExceptionId),
    /// A marker without a well-formed exception id: does not suppress.
    MissingId,
}

/// Looks for `tenant-guard:allow ADR-NNN` in `line`.
pub(crate) fn inline_allow(line: &[u8]) -> InlineAllow {
    let Some(at) = memchr::memmem::find(line, INLINE_MARK) else {
        return InlineAllow::None;
    };
    let rest = &line[at + INLINE_MARK.len()..];
    let rest = rest.strip_prefix(b":").unwrap_or(rest);
    let start = rest
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let rest = &rest[start..];
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'-'))
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(ExceptionId::parse)
        .map_or(InlineAllow::MissingId, InlineAllow::Id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exception_ids() {
        assert!(ExceptionId::parse("ADR-007").is_some());
        assert!(ExceptionId::parse("ADR-1234").is_some());
        for bad in ["ADR-07", "adr-007", "ADR-00x", "ADR007", ""] {
            assert!(ExceptionId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn inline_markers() {
        assert_eq!(inline_allow(b"key = 1"), InlineAllow::None);
        assert_eq!(
            inline_allow(b"key = 1 # tenant-guard:allow ADR-012 test fixture"),
            InlineAllow::Id(ExceptionId::parse("ADR-012").unwrap())
        );
        assert_eq!(
            inline_allow(b"key = 1 // tenant-guard:allow"),
            InlineAllow::MissingId
        );
        assert_eq!(
            inline_allow(b"key = 1 // tenant-guard:allow ADR-1"),
            InlineAllow::MissingId
        );
    }
}
