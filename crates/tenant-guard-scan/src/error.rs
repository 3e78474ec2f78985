//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading rules or configuration or while
/// scanning. No variant ever carries a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A rule file or configuration file is not valid TOML for its schema.
    #[error("{origin}: {message}")]
    Parse {
        /// Where the text came from (a file name).
        origin: String,
        /// What the parser said.
        message: String,
    },
    /// A rule is invalid (bad id, bad regex, no keywords, duplicate id...).
    #[error("rule `{id}`: {problem}")]
    InvalidRule {
        /// The rule's id as written.
        id: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A configuration file is well-formed TOML but says something invalid,
    /// for example a suppression without an exception id.
    #[error("configuration: {0}")]
    Config(String),
    /// A baseline file is missing, unreadable or invalid.
    #[error("baseline {path}: {problem}")]
    Baseline {
        /// The baseline file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// The exceptions register is malformed; every problem is listed, each
    /// with its line and entry id.
    #[error("exceptions register {origin}: {}", problem_lines(problems))]
    Register {
        /// Where the text came from (a file name).
        origin: String,
        /// What is wrong, in line order.
        problems: Vec<crate::RegisterProblem>,
    },
    /// An exception to be recorded in the register is invalid (for example,
    /// its withdrawal date is in the past).
    #[error("exception: {0}")]
    Exception(String),
    /// A fingerprint file is unreadable, of an unknown format or version, or
    /// malformed.
    #[error("fingerprints {origin}: {problem}")]
    Fingerprints {
        /// Where the text came from (a file name).
        origin: String,
        /// What is wrong with it (with the line number when there is one).
        problem: String,
    },
    /// A path given to scan does not exist.
    #[error("no such file or directory: {0}")]
    NoSuchPath(PathBuf),
    /// An I/O error on a file that had to be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The problems of a register, one per line.
fn problem_lines(problems: &[crate::RegisterProblem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}
