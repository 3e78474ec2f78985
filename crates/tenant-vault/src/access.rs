//! Who may do what: capabilities, policies of path globs, role presets and
//! principals.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::path::Slug;
use crate::store::ScopeId;

/// One thing a policy rule can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Capability {
    /// Read values (`get`) and metadata.
    Read,
    /// List names and read metadata.
    List,
    /// Write new versions and change metadata.
    Write,
    /// Soft-delete and undelete versions.
    Delete,
    /// Destroy versions for good.
    Destroy,
    /// Manage the tenant: its tokens, status and key rotation.
    Admin,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 6] = [
        Capability::Read,
        Capability::List,
        Capability::Write,
        Capability::Delete,
        Capability::Destroy,
        Capability::Admin,
    ];

    /// The name used in policies: `read`, `list`, `write`, `delete`,
    /// `destroy` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Read => "read",
            Capability::List => "list",
            Capability::Write => "write",
            Capability::Delete => "delete",
            Capability::Destroy => "destroy",
            Capability::Admin => "admin",
        }
    }

    /// Parses a name given by [`Capability::as_str`].
    pub fn parse(s: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn bit(self) -> u8 {
        match self {
            Capability::Read => 1,
            Capability::List => 2,
            Capability::Write => 4,
            Capability::Delete => 8,
            Capability::Destroy => 16,
            Capability::Admin => 32,
        }
    }
}

/// A policy rule: a glob over secret names inside the tenant, and what it
/// allows. `*` matches within one path segment, `**` across segments, `?` one
/// character other than `/`; everything else matches itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Name glob, e.g. `db/**` or `*/api-key`.
    pub path: String,
    /// Capabilities granted on matching names.
    pub capabilities: Vec<Capability>,
}

/// A list of rules; a capability is granted on a name if any rule matching
/// the name grants it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The rules.
    pub rules: Vec<Rule>,
}

impl Policy {
    /// Parses a policy from JSON (`{"rules": [{"path": "...", "capabilities": [...]}]}`).
    pub fn from_json(s: &str) -> Result<Policy> {
        let p: Policy =
            serde_json::from_str(s).map_err(|e| Error::InvalidArgument(format!("policy: {e}")))?;
        p.validate()?;
        Ok(p)
    }

    /// The policy as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<()> {
        for r in &self.rules {
            if r.path.is_empty() || r.path.len() > 255 || !r.path.is_ascii() {
                return Err(Error::InvalidArgument(format!(
                    "policy rule path `{}` must be 1 to 255 ASCII characters",
                    r.path
                )));
            }
        }
        Ok(())
    }

    /// True if `cap` is granted on the name `name`.
    pub fn allows(&self, name: &str, cap: Capability) -> bool {
        self.rules.iter().any(|r| {
            r.capabilities.contains(&cap) && glob_match(r.path.as_bytes(), name.as_bytes())
        })
    }

    /// True if `cap` is granted on every name (a rule `**`).
    pub fn allows_everywhere(&self, cap: Capability) -> bool {
        self.rules
            .iter()
            .any(|r| r.capabilities.contains(&cap) && r.path == "**")
    }

    fn mask(&self) -> u8 {
        self.rules
            .iter()
            .flat_map(|r| r.capabilities.iter())
            .fold(0, |m, c| m | c.bit())
    }

    /// True if every capability this policy grants anywhere, `other` grants
    /// everywhere (used so that a tenant admin cannot mint a stronger token).
    pub fn is_within(&self, other: &Policy) -> bool {
        let mut everywhere = 0u8;
        for r in &other.rules {
            if r.path == "**" {
                everywhere |= r.capabilities.iter().fold(0, |m, c| m | c.bit());
            }
        }
        self.mask() & !everywhere == 0
    }
}

/// Glob matching over bytes with `*`, `**` and `?` (dynamic programming, so
/// no pattern can make it slow).
pub(crate) fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    // reach[j]: the pattern prefix read so far can match name[..j].
    let mut reach = vec![false; name.len() + 1];
    reach[0] = true;
    let mut i = 0;
    while i < pat.len() {
        let mut next = vec![false; name.len() + 1];
        match pat[i] {
            b'*' if pat.get(i + 1) == Some(&b'*') => {
                // `**`: any run of characters, `/` included.
                let mut on = false;
                for j in 0..=name.len() {
                    on |= reach[j];
                    next[j] = on;
                }
                i += 2;
            }
            b'*' => {
                for j in 0..=name.len() {
                    if reach[j] {
                        next[j] = true;
                        let mut k = j;
                        while k < name.len() && name[k] != b'/' {
                            k += 1;
                            next[k] = true;
                        }
                    }
                }
                i += 1;
            }
            c => {
                for j in 0..name.len() {
                    if reach[j] && (name[j] == c || (c == b'?' && name[j] != b'/')) {
                        next[j + 1] = true;
                    }
                }
                i += 1;
            }
        }
        reach = next;
    }
    reach[name.len()]
}

/// The role presets our platforms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// Everything, and counts as the tenant's owner (the last one cannot be revoked).
    Owner,
    /// Everything, including managing the tenant's tokens.
    Admin,
    /// Read, list, write and delete.
    Manager,
    /// Read, list and write.
    User,
    /// Read and list.
    Viewer,
}

impl Role {
    /// Every preset.
    pub const ALL: [Role; 5] = [
        Role::Owner,
        Role::Admin,
        Role::Manager,
        Role::User,
        Role::Viewer,
    ];

    /// The preset's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::User => "user",
            Role::Viewer => "viewer",
        }
    }

    /// Parses a preset name.
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The preset's policy: its capabilities on every name of the tenant.
    pub fn policy(self) -> Policy {
        use Capability::*;
        let caps = match self {
            Role::Owner | Role::Admin => Capability::ALL.to_vec(),
            Role::Manager => vec![Read, List, Write, Delete],
            Role::User => vec![Read, List, Write],
            Role::Viewer => vec![Read, List],
        };
        Policy {
            rules: vec![Rule {
                path: "**".into(),
                capabilities: caps,
            }],
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Principal {
    /// The holder of the root key's unlock material (local, embedded use).
    Root,
    /// An operator token: manages scopes and tokens; reads secrets only of
    /// the tenants it was explicitly granted.
    Operator {
        /// Token id.
        token_id: String,
        /// Tenants whose secrets it may read and list.
        read_grants: Vec<Slug>,
    },
    /// A tenant token: reaches its own tenant only, within its policy.
    Tenant {
        /// Token id.
        token_id: String,
        /// The tenant's scope id (never reused).
        scope: ScopeId,
        /// The tenant.
        slug: Slug,
        /// Role preset name or `custom`.
        role: String,
        /// What it may do.
        policy: Policy,
        /// Requests per second.
        rate_per_sec: f64,
        /// Bucket size.
        burst: u64,
    },
}

impl Principal {
    /// The name audit records carry: the token id, or `root`.
    pub fn audit_name(&self) -> &str {
        match self {
            Principal::Root => "root",
            Principal::Operator { token_id, .. } | Principal::Tenant { token_id, .. } => token_id,
        }
    }
}

/// What an operator token may be issued with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperatorPolicy {
    pub(crate) read_grants: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn globs() {
        let m = |p: &str, n: &str| glob_match(p.as_bytes(), n.as_bytes());
        assert!(m("**", "a/b/c"));
        assert!(m("db/*", "db/password"));
        assert!(!m("db/*", "db/prod/password"));
        assert!(m("db/**", "db/prod/password"));
        assert!(!m("db/**", "dbx/a"));
        assert!(m("*/api-key", "svc/api-key"));
        assert!(!m("*/api-key", "a/b/api-key"));
        assert!(m("**/api-key", "a/b/api-key"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "a/c"));
        assert!(m("exact", "exact"));
        assert!(!m("exact", "exact2"));
        assert!(m("*", "x"));
        assert!(!m("*", "x/y"));
        assert!(m("a*", "a"));
    }

    #[test]
    fn role_presets() {
        use Capability::*;
        let v = Role::Viewer.policy();
        assert!(v.allows("x", Read) && v.allows("x", List) && !v.allows("x", Write));
        let u = Role::User.policy();
        assert!(u.allows("a/b", Write) && !u.allows("a/b", Delete));
        let m = Role::Manager.policy();
        assert!(m.allows("a", Delete) && !m.allows("a", Destroy) && !m.allows("a", Admin));
        assert!(Role::Admin.policy().allows("a", Admin));
        assert!(Role::Viewer.policy().is_within(&Role::Admin.policy()));
        assert!(!Role::Admin.policy().is_within(&Role::Manager.policy()));
        assert_eq!(Role::parse("owner"), Some(Role::Owner));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn policies_parse_from_json() {
        let p = Policy::from_json(r#"{"rules":[{"path":"db/*","capabilities":["read","list"]}]}"#)
            .unwrap();
        assert!(p.allows("db/x", Capability::Read));
        assert!(Policy::from_json(r#"{"rules":[{"path":"x","capabilities":["fly"]}]}"#).is_err());
        assert!(Policy::from_json(r#"{"rules":[],"extra":1}"#).is_err());
        assert_eq!(Policy::from_json(&p.to_json()).unwrap(), p);
    }

    /// A naive backtracking matcher as the model.
    fn naive(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => (0..=n.len()).any(|k| naive(&p[2..], &n[k..])),
            Some(b'*') => {
                let seg = n.iter().position(|&b| b == b'/').unwrap_or(n.len());
                (0..=seg).any(|k| naive(&p[1..], &n[k..]))
            }
            Some(b'?') => !n.is_empty() && n[0] != b'/' && naive(&p[1..], &n[1..]),
            Some(&c) => !n.is_empty() && n[0] == c && naive(&p[1..], &n[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_matches_the_naive_model(p in "[ab/*?]{0,8}", n in "[ab/]{0,8}") {
            prop_assert_eq!(glob_match(p.as_bytes(), n.as_bytes()), naive(p.as_bytes(), n.as_bytes()));
        }
    }
}
