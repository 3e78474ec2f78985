//! The tenant-guard leak scanner.
//!
//! Rules are data (`policies/rules/*.toml`, compiled in; see `docs/SCANNER.md`
//! for the schema). Scanning runs an Aho-Corasick prefilter over every rule's
//! keywords, confirms hits with the rule's regex in a window around each hit,
//! then drops values that fail the rule's entropy floor or checksum or look
//! like documentation placeholders. Directories are walked in parallel, and
//! zip, tar and gzip archives are searched in memory, nested, within limits.
//!
//! Scan bytes with a rule set:
//!
//! ```
//! use std::sync::Arc;
//! use tenant_guard_scan::{parse_rules, RuleSet, ScanOptions, Scanner, FindingKind};
//!
//! let rules = parse_rules("demo.toml", r#"
//! [[rules]]
//! id = "demo-token"
//! name = "Demo token"
//! description = "A demo token."
//! regex = '''\b(demo_[A-Za-z0-9]{24})\b'''
//! keywords = ["demo_"]
//! severity = "high"
//! entropy = 3.0
//! "#)?;
//! let mut scanner = Scanner::new(Arc::new(RuleSet::new(rules)?), ScanOptions::default());
//! let findings = scanner.scan_bytes("config/app.py", b"TOKEN = 'demo_Q3v9LmX2pR7sK1wZ8yBnT4cD'\n"); // tenant-guard:allow ADR-001
//! assert_eq!(findings.len(), 1);
//! assert_eq!(findings[0].rule_id, "demo-token");
//! assert_eq!((findings[0].line, findings[0].column), (1, 10));
//! assert_eq!(findings[0].kind, FindingKind::Secret);
//! assert_eq!(findings[0].redacted, "demo…(29 chars)"); // never the whole secret
//!
//! // The built-in rules are used the same way.
//! let builtin = RuleSet::builtin()?;
//! let _scanner = Scanner::new(Arc::new(builtin), ScanOptions::default());
//! # Ok::<(), tenant_guard_scan::Error>(())
//! ```
//!
//! Walk paths with [`scan_paths`], or with [`walk`] and your own [`Visitor`]
//! to see the same decoded content (archive entries included).
//!
//! Known values are searched in their raw and encoded forms by
//! [`CanarySet`] (canaries the caller holds) and by [`FingerprintSet`]
//! (real secrets recognised by keyed hashes, from a file written with
//! [`FingerprintBuilder`]; set them with [`ScanOptions::fingerprints`]).
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod archive;
mod baseline;
mod canary;
mod check;
mod checksum;
mod config;
mod decoy;
mod engine;
mod error;
mod exceptions;
mod finding;
mod fingerprint;
mod keyword_dfa;
mod report;
mod rules;
mod suppress;
mod walk;

pub use crate::{
    archive::{ArchiveLimits, RATIO_FLOOR, visit_bytes},
    baseline::{Baseline, BaselineEntry},
    canary::{
        Canary, CanaryMatch, CanarySet, CanaryStream, Encoding, MIN_CANARY_LEN, encoded_forms,
        find_canaries,
    },
    check::{RuleFailure, check_rules},
    checksum::Checksum,
    config::{CONFIG_FILE_NAME, Config},
    engine::{ScanOptions, Scanner, is_dotenv_path},
    error::Error,
    exceptions::{
        DEFAULT_REGISTER_PATH, Exception, ExceptionDraft, IsoDate, ProblemKind, REGISTER_HEADER,
        Register, RegisterProblem, append_exception, check_register,
    },
    finding::{Finding, FindingKind, RevealedSecret},
    fingerprint::{
        Added, FINGERPRINT_FORMAT, FINGERPRINT_FORMAT_VERSION, FingerprintBuilder, FingerprintHit,
        FingerprintSet, FingerprintedVersion, GRAM, MIN_FINGERPRINT_LEN, STRIDE,
    },
    report::{Format, ReportOptions, write_report},
    rules::{
        DEFAULT_MAX_MATCH_LEN, FollowedBy, Rule, RuleSet, Severity, builtin_rules, parse_rules,
    },
    suppress::{ExceptionCheck, ExceptionId, Suppression, SuppressionSource, Validity},
    walk::{Progress, ScanReport, Visitor, WalkOptions, scan_paths, walk},
};
