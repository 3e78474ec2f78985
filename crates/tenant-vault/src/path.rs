//! Secret addressing: `tenant/<slug>/<name>`.
//!
//! Parsing is strict and never normalizes: a string is either exactly a valid
//! path or it is rejected with a [`PathError`] that says what is wrong.

use std::fmt;
use std::str::FromStr;

/// Longest slug, in bytes (a DNS label).
pub const MAX_SLUG_LEN: usize = 63;
/// Longest secret name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

const TENANT_PREFIX: &str = "tenant/";

/// Why a path, slug or name was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path does not start with `tenant/`.
    #[error("a secret path starts with `tenant/` (tenant/<slug>/<name>)")]
    MissingTenantPrefix,
    /// The slug is empty.
    #[error("the tenant slug is empty")]
    EmptySlug,
    /// The slug is longer than 63 bytes.
    #[error("the tenant slug is {0} bytes long, at most {MAX_SLUG_LEN} are allowed")]
    SlugTooLong(usize),
    /// The slug holds a character outside `a-z0-9-`.
    #[error("the tenant slug may hold only a-z, 0-9 and `-` (byte {0} is not)")]
    SlugInvalidChar(usize),
    /// The slug starts or ends with `-`.
    #[error("the tenant slug may not start or end with `-`")]
    SlugHyphenAtEdge,
    /// The path has no `/<name>` after the slug.
    #[error("the path has no secret name after the tenant slug")]
    MissingName,
    /// The name is longer than 255 bytes.
    #[error("the secret name is {0} bytes long, at most {MAX_NAME_LEN} are allowed")]
    NameTooLong(usize),
    /// The name holds an empty segment (`//`, or a leading or trailing `/`).
    #[error("the secret name has an empty segment (segment {0})")]
    EmptySegment(usize),
    /// The name holds a `.` or `..` segment.
    #[error("the secret name may not hold `.` or `..` segments (segment {0})")]
    DotSegment(usize),
    /// The name holds a character outside `A-Za-z0-9._-` and `/`.
    #[error("the secret name may hold only A-Z, a-z, 0-9, `.`, `_`, `-` and `/` (byte {0} is not)")]
    NameInvalidChar(usize),
}

/// A tenant slug: a DNS label (`a-z0-9` and `-`, 1 to 63 bytes, no `-` at
/// either end).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Slug(String);

impl Slug {
    /// Parses a slug.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::EmptySlug);
        }
        if s.len() > MAX_SLUG_LEN {
            return Err(PathError::SlugTooLong(s.len()));
        }
        if let Some(i) = s
            .bytes()
            .position(|b| !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
        {
            return Err(PathError::SlugInvalidChar(i));
        }
        if s.starts_with('-') || s.ends_with('-') {
            return Err(PathError::SlugHyphenAtEdge);
        }
        Ok(Slug(s.to_owned()))
    }

    /// The slug as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Slug({})", self.0)
    }
}

impl FromStr for Slug {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        Slug::parse(s)
    }
}

/// A secret's name inside its tenant: 1 to 255 bytes of `/`-separated
/// segments of `[A-Za-z0-9._-]`, none empty, `.` or `..`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretName(String);

impl SecretName {
    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        if s.is_empty() {
            return Err(PathError::MissingName);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(PathError::NameTooLong(s.len()));
        }
        if let Some(i) = s.bytes().position(|b| !is_name_byte(b) && b != b'/') {
            return Err(PathError::NameInvalidChar(i));
        }
        for (i, seg) in s.split('/').enumerate() {
            match seg {
                "" => return Err(PathError::EmptySegment(i + 1)),
                "." | ".." => return Err(PathError::DotSegment(i + 1)),
                _ => {}
            }
        }
        Ok(SecretName(s.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretName({})", self.0)
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// A full secret address: `tenant/<slug>/<name>`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretPath {
    slug: Slug,
    name: SecretName,
}

impl SecretPath {
    /// Parses `tenant/<slug>/<name>`.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let rest = s
            .strip_prefix(TENANT_PREFIX)
            .ok_or(PathError::MissingTenantPrefix)?;
        let (slug, name) = rest.split_once('/').ok_or_else(|| {
            // Say the more useful thing: a bad slug beats a missing name.
            match Slug::parse(rest) {
                Err(e) => e,
                Ok(_) => PathError::MissingName,
            }
        })?;
        Ok(SecretPath {
            slug: Slug::parse(slug)?,
            name: SecretName::parse(name)?,
        })
    }

    /// Builds a path from its parts.
    pub fn new(slug: Slug, name: SecretName) -> Self {
        SecretPath { slug, name }
    }

    /// The tenant.
    pub fn slug(&self) -> &Slug {
        &self.slug
    }

    /// The name inside the tenant.
    pub fn name(&self) -> &SecretName {
        &self.name
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TENANT_PREFIX}{}/{}", self.slug, self.name)
    }
}

impl fmt::Debug for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretPath({self})")
    }
}

impl FromStr for SecretPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, PathError> {
        SecretPath::parse(s)
    }
}

/// A listing prefix: `tenant/<slug>/` followed by an optional name prefix
/// (whole segments and optionally a partial last segment), e.g.
/// `tenant/acme/`, `tenant/acme/db/`, `tenant/acme/db/pa`. `tenant/acme`
/// (without the trailing slash) lists the whole tenant too.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ListPrefix {
    slug: Slug,
    prefix: String,
}

impl ListPrefix {
    /// Parses a listing prefix.
    pub fn parse(s: &str) -> Result<Self, PathError> {
        let rest = s
            .strip_prefix(TENANT_PREFIX)
            .ok_or(PathError::MissingTenantPrefix)?;
        let (slug, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let slug = Slug::parse(slug)?;
        if prefix.len() > MAX_NAME_LEN {
            return Err(PathError::NameTooLong(prefix.len()));
        }
        if let Some(i) = prefix.bytes().position(|b| !is_name_byte(b) && b != b'/') {
            return Err(PathError::NameInvalidChar(i));
        }
        // Every complete segment (all but the last) must be a valid segment.
        let segments: Vec<&str> = prefix.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match *seg {
                "" if !last => return Err(PathError::EmptySegment(i + 1)),
                "." | ".." if !last => return Err(PathError::DotSegment(i + 1)),
                _ => {}
            }
        }
        Ok(ListPrefix {
            slug,
            prefix: prefix.to_owned(),
        })
    }

    /// The whole tenant.
    pub fn tenant(slug: Slug) -> Self {
        ListPrefix {
            slug,
            prefix: String::new(),
        }
    }

    /// The tenant.
    pub fn slug(&self) -> &Slug {
        &self.slug
    }

    /// The name prefix inside the tenant (may be empty).
    pub fn name_prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Display for ListPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TENANT_PREFIX}{}/{}", self.slug, self.prefix)
    }
}

impl fmt::Debug for ListPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ListPrefix({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn valid_paths_parse_and_print_back_unchanged() {
        for s in [
            "tenant/acme/slack-token",
            "tenant/a/b",
            "tenant/a-1/db/prod/password.v2",
            "tenant/0/_x",
            "tenant/acme/..a",
            "tenant/acme/a..",
        ] {
            let p = SecretPath::parse(s).unwrap();
            assert_eq!(p.to_string(), s);
        }
        let p = SecretPath::parse("tenant/acme/db/pw").unwrap();
        assert_eq!(p.slug().as_str(), "acme");
        assert_eq!(p.name().as_str(), "db/pw");
    }

    #[test]
    fn each_kind_of_bad_path_has_its_own_error() {
        use PathError::*;
        let cases: &[(&str, PathError)] = &[
            ("acme/x", MissingTenantPrefix),
            ("/tenant/acme/x", MissingTenantPrefix),
            ("Tenant/acme/x", MissingTenantPrefix),
            ("tenant//x", EmptySlug),
            ("tenant/acme", MissingName),
            ("tenant/acme/", MissingName),
            ("tenant/Acme/x", SlugInvalidChar(0)),
            ("tenant/ac_me/x", SlugInvalidChar(2)),
            ("tenant/-acme/x", SlugHyphenAtEdge),
            ("tenant/acme-/x", SlugHyphenAtEdge),
            ("tenant/acme/a//b", EmptySegment(2)),
            ("tenant/acme/a/", EmptySegment(2)),
            ("tenant/acme//a", EmptySegment(1)),
            ("tenant/acme/./a", DotSegment(1)),
            ("tenant/acme/a/..", DotSegment(2)),
            ("tenant/acme/a b", NameInvalidChar(1)),
            ("tenant/acme/é", NameInvalidChar(0)),
            ("tenant/acme/a\0", NameInvalidChar(1)),
            ("tenant/acme/a\\b", NameInvalidChar(1)),
        ];
        for (s, want) in cases {
            assert_eq!(SecretPath::parse(s).unwrap_err(), *want, "{s:?}");
        }
        let long_slug = format!("tenant/{}/x", "a".repeat(64));
        assert_eq!(SecretPath::parse(&long_slug).unwrap_err(), SlugTooLong(64));
        let ok_slug = format!("tenant/{}/x", "a".repeat(63));
        assert!(SecretPath::parse(&ok_slug).is_ok());
        let long_name = format!("tenant/a/{}", "n".repeat(256));
        assert_eq!(SecretPath::parse(&long_name).unwrap_err(), NameTooLong(256));
        let ok_name = format!("tenant/a/{}", "n".repeat(255));
        assert!(SecretPath::parse(&ok_name).is_ok());
    }

    #[test]
    fn list_prefixes() {
        for (s, slug, prefix) in [
            ("tenant/acme", "acme", ""),
            ("tenant/acme/", "acme", ""),
            ("tenant/acme/db/", "acme", "db/"),
            ("tenant/acme/db/pa", "acme", "db/pa"),
            ("tenant/acme/.", "acme", "."),
        ] {
            let p = ListPrefix::parse(s).unwrap();
            assert_eq!((p.slug().as_str(), p.name_prefix()), (slug, prefix));
        }
        assert_eq!(
            ListPrefix::parse("tenant/acme//").unwrap_err(),
            PathError::EmptySegment(1)
        );
        assert_eq!(
            ListPrefix::parse("tenant/acme/../").unwrap_err(),
            PathError::DotSegment(1)
        );
        assert_eq!(
            ListPrefix::parse("acme/").unwrap_err(),
            PathError::MissingTenantPrefix
        );
    }

    proptest! {
        /// Parsing never normalizes: whatever parses prints back byte for byte.
        #[test]
        fn parse_is_exact(s in "tenant/[a-z0-9-]{0,5}/[A-Za-z0-9._/-]{0,12}") {
            if let Ok(p) = SecretPath::parse(&s) {
                prop_assert_eq!(p.to_string(), s);
            }
        }

        /// Arbitrary input never panics, and accepted names obey every rule.
        #[test]
        fn accepted_names_obey_the_grammar(s in "\\PC{0,40}") {
            if let Ok(n) = SecretName::parse(&s) {
                prop_assert!(n.as_str().is_ascii());
                prop_assert!(n.as_str().split('/').all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
            }
        }
    }
}
