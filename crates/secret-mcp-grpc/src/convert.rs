//! Conversions between the wire messages and the vault's types, used by both
//! the server and the client so both sides agree on every field.

use std::time::Duration;

use tenant_vault::{
    AuditEntry, AuditRecord, Capability, Change, Limits, Policy, Role, Rule, ScopeInfo, ScopeKind,
    ScopeStatus, SecretMetadata, SecretPath, Slug, Timestamp, TokenInfo, TokenSpec,
    VersionMetadata,
};

use crate::pb;

/// A malformed field in a message: the server answers `INVALID_ARGUMENT`,
/// the client reports a protocol error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadField(pub(crate) String);

type Result<T> = std::result::Result<T, BadField>;

fn bad(field: &str, why: impl std::fmt::Display) -> BadField {
    BadField(format!("{field}: {why}"))
}

pub(crate) fn ts(t: Timestamp) -> pb::Timestamp {
    pb::Timestamp { unix_millis: t.0 }
}

pub(crate) fn opt_ts(t: Option<Timestamp>) -> Option<pb::Timestamp> {
    t.map(ts)
}

pub(crate) fn from_ts(t: Option<pb::Timestamp>) -> Timestamp {
    Timestamp(t.map_or(0, |t| t.unix_millis))
}

pub(crate) fn from_opt_ts(t: Option<pb::Timestamp>) -> Option<Timestamp> {
    t.map(|t| Timestamp(t.unix_millis))
}

pub(crate) fn kind(k: ScopeKind) -> pb::ScopeKind {
    match k {
        ScopeKind::Freelance => pb::ScopeKind::Freelance,
        _ => pb::ScopeKind::Enterprise,
    }
}

/// Unspecified means enterprise, the default of the command line too.
pub(crate) fn from_kind(k: i32) -> Result<ScopeKind> {
    match pb::ScopeKind::try_from(k) {
        Ok(pb::ScopeKind::Unspecified | pb::ScopeKind::Enterprise) => Ok(ScopeKind::Enterprise),
        Ok(pb::ScopeKind::Freelance) => Ok(ScopeKind::Freelance),
        Err(_) => Err(bad("kind", format!("unknown scope kind {k}"))),
    }
}

pub(crate) fn slug(field: &str, s: &str) -> Result<Slug> {
    Slug::parse(s).map_err(|e| bad(field, e))
}

pub(crate) fn path(field: &str, s: &str) -> Result<SecretPath> {
    SecretPath::parse(s).map_err(|e| bad(field, e))
}

pub(crate) fn scope(s: &ScopeInfo) -> pb::Scope {
    pb::Scope {
        slug: s.slug.to_string(),
        kind: kind(s.kind) as i32,
        created_at: Some(ts(s.created_at)),
        key_version: s.key_version,
    }
}

pub(crate) fn from_scope(s: Option<pb::Scope>) -> Result<ScopeInfo> {
    let s = s.ok_or_else(|| bad("scope", "missing"))?;
    Ok(ScopeInfo {
        slug: slug("scope.slug", &s.slug)?,
        kind: from_kind(s.kind)?,
        created_at: from_ts(s.created_at),
        key_version: s.key_version,
    })
}

pub(crate) fn status(s: &ScopeStatus) -> pb::GetScopeStatusResponse {
    pb::GetScopeStatusResponse {
        scope: Some(scope(&s.scope)),
        secrets: s.secrets,
        stored_bytes: s.stored_bytes,
    }
}

pub(crate) fn from_status(s: pb::GetScopeStatusResponse) -> Result<ScopeStatus> {
    Ok(ScopeStatus {
        scope: from_scope(s.scope)?,
        secrets: s.secrets,
        stored_bytes: s.stored_bytes,
    })
}

pub(crate) fn metadata(m: &SecretMetadata) -> pb::SecretMetadata {
    pb::SecretMetadata {
        path: m.path.to_string(),
        current_version: m.current_version,
        oldest_version: m.oldest_version,
        max_versions: m.max_versions,
        created_at: Some(ts(m.created_at)),
        updated_at: Some(ts(m.updated_at)),
        custom: m.custom.clone().into_iter().collect(),
        versions: m
            .versions
            .iter()
            .map(|v| pb::VersionMetadata {
                version: v.version,
                created_at: Some(ts(v.created_at)),
                deleted_at: opt_ts(v.deleted_at),
                destroyed: v.destroyed,
            })
            .collect(),
    }
}

pub(crate) fn from_metadata(m: Option<pb::SecretMetadata>) -> Result<SecretMetadata> {
    let m = m.ok_or_else(|| bad("metadata", "missing"))?;
    Ok(SecretMetadata {
        path: path("metadata.path", &m.path)?,
        current_version: m.current_version,
        oldest_version: m.oldest_version,
        max_versions: m.max_versions,
        created_at: from_ts(m.created_at),
        updated_at: from_ts(m.updated_at),
        custom: m.custom.into_iter().collect(),
        versions: m
            .versions
            .into_iter()
            .map(|v| VersionMetadata {
                version: v.version,
                created_at: from_ts(v.created_at),
                deleted_at: from_opt_ts(v.deleted_at),
                destroyed: v.destroyed,
            })
            .collect(),
    })
}

pub(crate) fn limits(l: &Limits) -> pb::Limits {
    pb::Limits {
        plan: l.plan.clone(),
        max_secrets: l.max_secrets,
        max_bytes: l.max_bytes,
        max_tokens: l.max_tokens,
        rate_per_sec: l.rate_per_sec,
        burst: l.burst,
    }
}

pub(crate) fn from_limits(l: Option<pb::Limits>) -> Result<Limits> {
    let l = l.ok_or_else(|| bad("limits", "missing"))?;
    Ok(Limits {
        plan: l.plan,
        max_secrets: l.max_secrets,
        max_bytes: l.max_bytes,
        max_tokens: l.max_tokens,
        rate_per_sec: l.rate_per_sec,
        burst: l.burst,
    })
}

pub(crate) fn token_info(t: &TokenInfo) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        kind: t.kind.to_owned(),
        tenant: t
            .tenant
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        role: t.role.clone(),
        description: t.description.clone(),
        created_at: Some(ts(t.created_at)),
        expires_at: opt_ts(t.expires_at),
        revoked_at: opt_ts(t.revoked_at),
    }
}

pub(crate) fn from_token_info(t: pb::TokenInfo) -> Result<TokenInfo> {
    Ok(TokenInfo {
        id: t.id,
        kind: match t.kind.as_str() {
            "tenant" => "tenant",
            "operator" => "operator",
            other => return Err(bad("token.kind", format!("unknown kind `{other}`"))),
        },
        tenant: if t.tenant.is_empty() {
            None
        } else {
            Some(slug("token.tenant", &t.tenant)?)
        },
        role: t.role,
        description: t.description,
        created_at: from_ts(t.created_at),
        expires_at: from_opt_ts(t.expires_at),
        revoked_at: from_opt_ts(t.revoked_at),
    })
}

/// The request for a token spec (client side).
pub(crate) fn issue_request(spec: &TokenSpec) -> pb::IssueTokenRequest {
    pb::IssueTokenRequest {
        tenant: spec
            .tenant
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        role: spec.role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
        rules: spec
            .policy
            .as_ref()
            .map(|p| {
                p.rules
                    .iter()
                    .map(|r| pb::PolicyRule {
                        path: r.path.clone(),
                        capabilities: r
                            .capabilities
                            .iter()
                            .map(|c| c.as_str().to_owned())
                            .collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ttl_seconds: spec.ttl.map_or(0, |d| d.as_secs().max(1)),
        description: spec.description.clone(),
        read_grants: spec.read_grants.iter().map(ToString::to_string).collect(),
    }
}

/// The token spec of a request (server side).
pub(crate) fn token_spec(r: &pb::IssueTokenRequest) -> Result<TokenSpec> {
    let tenant = if r.tenant.is_empty() {
        None
    } else {
        Some(slug("tenant", &r.tenant)?)
    };
    if !r.role.is_empty() && !r.rules.is_empty() {
        return Err(bad("role", "give a role or rules, not both"));
    }
    let role = if r.role.is_empty() {
        None
    } else {
        Some(Role::parse(&r.role).ok_or_else(|| {
            bad(
                "role",
                format!(
                    "unknown role `{}` (owner, admin, manager, user or viewer)",
                    r.role
                ),
            )
        })?)
    };
    let policy = if r.rules.is_empty() {
        None
    } else {
        let mut rules = Vec::with_capacity(r.rules.len());
        for rule in &r.rules {
            let mut capabilities = Vec::with_capacity(rule.capabilities.len());
            for c in &rule.capabilities {
                capabilities.push(Capability::parse(c).ok_or_else(|| {
                    bad(
                        "rules.capabilities",
                        format!(
                            "unknown capability `{c}` (read, list, write, delete, destroy or admin)"
                        ),
                    )
                })?);
            }
            rules.push(Rule {
                path: rule.path.clone(),
                capabilities,
            });
        }
        Some(Policy { rules })
    };
    let mut read_grants = Vec::with_capacity(r.read_grants.len());
    for g in &r.read_grants {
        read_grants.push(slug("read_grants", g)?);
    }
    Ok(TokenSpec {
        tenant,
        role,
        policy,
        ttl: (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds)),
        description: r.description.clone(),
        read_grants,
    })
}

pub(crate) fn audit_record(r: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        seq: r.seq,
        time: Some(ts(r.entry.time)),
        request_id: r.entry.request_id.clone(),
        principal: r.entry.principal.clone(),
        tenant: r.entry.tenant.clone(),
        operation: r.entry.operation.clone(),
        path: r.entry.path.clone(),
        version: r.entry.version,
        outcome: r.entry.outcome.clone(),
        prev_hash: r.prev_hash.clone(),
        hash: r.hash.clone(),
    }
}

pub(crate) fn from_audit_record(r: pb::AuditRecord) -> AuditRecord {
    AuditRecord {
        seq: r.seq,
        entry: AuditEntry {
            time: from_ts(r.time),
            request_id: r.request_id,
            principal: r.principal,
            tenant: r.tenant,
            operation: r.operation,
            path: r.path,
            version: r.version,
            outcome: r.outcome,
        },
        prev_hash: r.prev_hash,
        hash: r.hash,
    }
}

pub(crate) fn change(c: &Change) -> pb::WatchResponse {
    pb::WatchResponse {
        seq: c.seq,
        time: Some(ts(c.time)),
        operation: c.operation.clone(),
        path: c.path.as_ref().map(ToString::to_string).unwrap_or_default(),
        version: c.version,
    }
}

pub(crate) fn from_change(c: pb::WatchResponse) -> Result<Change> {
    Ok(Change {
        seq: c.seq,
        time: from_ts(c.time),
        path: if c.path.is_empty() {
            None
        } else {
            Some(path("path", &c.path)?)
        },
        operation: c.operation,
        version: c.version,
    })
}
