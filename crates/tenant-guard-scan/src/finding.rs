//! What a scan reports: findings, their kinds, redaction and fingerprints.

use serde::Serialize;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::{Severity, Suppression};

/// What kind of problem a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FindingKind {
    /// A secret matched by a rule.
    Secret,
    /// A secret inside a `.env` file: global `.env` files must hold none.
    Dotenv,
    /// An archive entry whose name escapes the archive (`../x`, `/etc/x`).
    PathTraversal,
    /// An archive that was not followed: too deep, too large, or an entry
    /// expanding beyond the allowed ratio (a zip bomb).
    ArchiveLimit,
    /// A file or archive entry that could not be read.
    Unreadable,
    /// The value of a vault secret, recognised by its fingerprint
    /// (`scan --fingerprints`). Reported with the secret's path and version,
    /// never with any part of the value.
    VaultSecret,
}

impl FindingKind {
    /// The kebab-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Secret => "secret",
            FindingKind::Dotenv => "dotenv",
            FindingKind::PathTraversal => "path-traversal",
            FindingKind::ArchiveLimit => "archive-limit",
            FindingKind::Unreadable => "unreadable",
            FindingKind::VaultSecret => "vault-secret",
        }
    }
}

/// A secret value shown on purpose (`--show-secrets`). It is zeroized on
/// drop and its `Debug` output is redacted; call [`RevealedSecret::expose`].
#[derive(Clone)]
pub struct RevealedSecret(Zeroizing<String>);

impl RevealedSecret {
    /// The full secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RevealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevealedSecret(..)")
    }
}

/// One reported problem. Holds the secret only in redacted and hashed form,
/// plus the full value when the scan was asked to show secrets.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// The rule id, or the kind's name for findings not made by a rule.
    pub rule_id: String,
    /// What kind of finding this is.
    pub kind: FindingKind,
    /// Path relative to the scan root, `/`-separated, with `!/` between an
    /// archive and the entry inside it.
    pub path: String,
    /// 1-based line (1 for binary content, where `column` is the byte offset + 1).
    pub line: u64,
    /// 1-based column in bytes.
    pub column: u64,
    /// Severity (raised to at least `high` for `.env` files).
    pub severity: Severity,
    /// Human message.
    pub message: String,
    /// A short prefix of the secret and its length, e.g. `xoxb…(56 chars)`.
    pub redacted: String,
    /// Hex SHA-256 of the secret (or of the entry name for non-secret kinds).
    pub secret_sha256: String,
    /// Stable fingerprint used by baselines (see docs/SCANNER.md).
    pub fingerprint: String,
    /// Why a suppression attempt was refused, if one was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The suppression that applies, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppression: Option<Suppression>,
    /// The full secret, only with `--show-secrets`.
    #[serde(skip)]
    pub secret: Option<RevealedSecret>,
}

impl Finding {
    /// Builds a finding for `value` (the secret bytes, or the name of the
    /// thing reported for non-secret kinds). `value` is hashed and redacted
    /// here and not kept unless `reveal` is true.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rule_id: &str,
        kind: FindingKind,
        path: &str,
        line: u64,
        column: u64,
        severity: Severity,
        message: String,
        value: &[u8],
        reveal: bool,
    ) -> Finding {
        let secret_sha256 = hex::encode(Sha256::digest(value));
        Finding {
            rule_id: rule_id.to_string(),
            kind,
            path: path.to_string(),
            line,
            column,
            severity,
            message,
            redacted: redact(value),
            fingerprint: fingerprint(rule_id, path, &secret_sha256),
            secret_sha256,
            note: None,
            suppression: None,
            secret: reveal.then(|| {
                RevealedSecret(Zeroizing::new(String::from_utf8_lossy(value).into_owned()))
            }),
        }
    }

    /// A finding made by the walk itself (archive limits, traversal, I/O).
    pub(crate) fn notice(
        kind: FindingKind,
        path: &str,
        severity: Severity,
        message: String,
    ) -> Finding {
        let rule = kind.as_str();
        let mut f = Finding::new(
            rule,
            kind,
            path,
            1,
            1,
            severity,
            message,
            path.as_bytes(),
            false,
        );
        f.redacted = String::new();
        f
    }

    /// The order findings are reported in: path, line, column, rule id.
    pub fn sort_key(&self) -> (&str, u64, u64, &str) {
        (&self.path, self.line, self.column, &self.rule_id)
    }
}

/// `prefix…(N chars)`: at most 4 characters, a quarter of the secret at most.
pub(crate) fn redact(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let len = text.chars().count();
    let shown: String = text.chars().take((len / 4).min(4)).collect();
    format!("{shown}…({len} chars)")
}

/// Hex of SHA-256 over `rule_id NUL path NUL hex(sha256(secret))`, first 32 hex digits.
pub(crate) fn fingerprint(rule_id: &str, path: &str, secret_sha256_hex: &str) -> String {
    let mut h = Sha256::new();
    h.update(rule_id.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    h.update([0]);
    h.update(secret_sha256_hex.as_bytes());
    let mut out = hex::encode(h.finalize());
    out.truncate(32);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_shows_a_short_prefix_only() {
        assert_eq!(
            redact(b"xoxb-123456789012-1234567890123-abcdefghijklmnopqrstuvwx"),
            "xoxb…(56 chars)"
        );
        assert_eq!(redact(b"abcdefgh"), "ab…(8 chars)");
        assert_eq!(redact(b"abc"), "…(3 chars)");
    }

    #[test]
    fn fingerprint_depends_on_rule_path_and_secret() {
        let a = fingerprint("r", "p", "00");
        assert_eq!(a.len(), 32);
        assert_eq!(a, fingerprint("r", "p", "00"));
        assert_ne!(a, fingerprint("r2", "p", "00"));
        assert_ne!(a, fingerprint("r", "p2", "00"));
        assert_ne!(a, fingerprint("r", "p", "01"));
    }

    #[test]
    fn revealed_secret_debug_is_redacted() {
        let f = Finding::new(
            "r",
            FindingKind::Secret,
            "p",
            1,
            1,
            Severity::Low,
            String::new(),
            b"hunter2hunter2",
            true,
        );
        let dbg = format!("{f:?}");
        assert!(!dbg.contains("hunter2hunter2"));
        assert_eq!(f.secret.unwrap().expose(), "hunter2hunter2");
    }
}
