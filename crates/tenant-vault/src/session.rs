//! Sessions: every request of a principal goes through one, which checks the
//! token's rate, authorizes the request against the principal's reach and
//! policy, and audits it, allowed or denied.

use std::time::Duration;

use crate::access::{Capability, OperatorPolicy, Policy, Principal, Role};
use crate::audit::Pending;
use crate::error::{Error, Result};
use crate::path::{ListPrefix, SecretPath, Slug};
use crate::secret::Secret;
use crate::store::{AuditEntry, LimitChange, Limits, ScopeKind, Timestamp, VersionChange};
use crate::vault::{
    ListPage, MetadataUpdate, ScopeCreated, ScopeInfo, ScopeStatus, SecretMetadata, Vault,
    VersionedSecret,
};

/// What to issue a token for ([`Session::issue_token`]).
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    /// The tenant of a tenant token; `None` issues an operator token.
    pub tenant: Option<Slug>,
    /// A role preset (tenant tokens). Default: `user`.
    pub role: Option<Role>,
    /// A custom policy instead of a preset (tenant tokens).
    pub policy: Option<Policy>,
    /// Lifetime; `None`: until revoked.
    pub ttl: Option<Duration>,
    /// Free text shown in listings.
    pub description: String,
    /// Operator tokens: tenants whose secrets it may read and list.
    pub read_grants: Vec<Slug>,
}

/// A newly issued token. The token string is shown once and never stored.
#[derive(Debug)]
pub struct IssuedToken {
    /// Public id.
    pub id: String,
    /// The token itself.
    pub token: Secret,
    /// Expiry, if any.
    pub expires_at: Option<Timestamp>,
}

/// A token as listed: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Public id.
    pub id: String,
    /// `tenant` or `operator`.
    pub kind: &'static str,
    /// Tenant of a tenant token.
    pub tenant: Option<Slug>,
    /// Role preset or `custom` (`operator` for operator tokens).
    pub role: String,
    /// Free text.
    pub description: String,
    /// Issue time.
    pub created_at: Timestamp,
    /// Expiry.
    pub expires_at: Option<Timestamp>,
    /// Revocation time.
    pub revoked_at: Option<Timestamp>,
}

/// A watch of the secrets under a prefix ([`Session::watch`]).
#[derive(Debug, Clone)]
pub struct Watch {
    prefix: ListPrefix,
    /// Last audit record seen.
    cursor: u64,
    /// The store's change marker when everything up to it was read.
    marker: Option<u64>,
}

impl Watch {
    /// The prefix watched.
    pub fn prefix(&self) -> &ListPrefix {
        &self.prefix
    }
}

/// A change to a secret, as [`Session::watch_poll`] reports it: never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Position of the change in the audit trail (increasing).
    pub seq: u64,
    /// When it happened.
    pub time: Timestamp,
    /// `put`, `delete`, `undelete`, `destroy`, `update-metadata`, or
    /// `delete-scope` (the whole tenant is gone).
    pub operation: String,
    /// The secret; `None` for `delete-scope`.
    pub path: Option<SecretPath>,
    /// The version written or concerned, when there is one.
    pub version: Option<u64>,
}

/// Whether a request changes stored state (which decides how it is audited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    Read,
    Mutate,
}

/// A principal's view of the vault. Cheap to create; create one per request
/// (or reuse it, with a new request id per request).
#[derive(Debug)]
pub struct Session<'v> {
    vault: &'v Vault,
    principal: Principal,
    request_id: String,
}

/// The short name of an error kind for audit outcomes.
fn outcome_of(e: &Error) -> String {
    let kind = match e {
        Error::CrossTenant { .. } => return "cross-tenant-denied".into(),
        Error::PermissionDenied(_) => return "denied".into(),
        Error::RateLimited { .. } => return "rate-limited".into(),
        Error::Unauthenticated(_) => return "unauthenticated".into(),
        Error::ScopeNotFound(_)
        | Error::SecretNotFound(_)
        | Error::VersionNotFound { .. }
        | Error::TokenNotFound(_) => "not-found",
        Error::VersionDeleted { .. } => "deleted",
        Error::VersionDestroyed { .. } => "destroyed",
        Error::CasMismatch { .. } => "cas-mismatch",
        Error::ValueTooLarge { .. } | Error::QuotaExceeded { .. } => "limit",
        Error::Integrity(_) => "integrity",
        Error::Sealed => "sealed",
        Error::InvalidArgument(_) | Error::InvalidPath(_) => "invalid-argument",
        Error::LastOwner(_) => "last-owner",
        _ => "failed",
    };
    format!("error:{kind}")
}

/// A new request id: 8 random bytes in hex, from the thread's generator (a
/// correlation id, not a secret, so no system call per request). Servers
/// use it for calls that bring no id of their own.
pub fn new_request_id() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

impl<'v> Session<'v> {
    pub(crate) fn new(vault: &'v Vault, principal: Principal) -> Self {
        Session::with_id(vault, principal, new_request_id())
    }

    pub(crate) fn with_id(vault: &'v Vault, principal: Principal, request_id: String) -> Self {
        Session {
            vault,
            principal,
            request_id,
        }
    }

    /// Uses the caller's request id in audit records (a server passes its own).
    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = id.into();
        self
    }

    /// Who this session speaks for.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    fn entry(
        &self,
        op: &str,
        tenant: &str,
        path: String,
        version: Option<u64>,
        outcome: String,
    ) -> AuditEntry {
        AuditEntry {
            time: Timestamp::now(),
            request_id: self.request_id.clone(),
            principal: self.principal.audit_name().to_owned(),
            tenant: tenant.to_owned(),
            operation: op.to_owned(),
            path,
            version,
            outcome,
        }
    }

    /// Rate check and authorization; a refusal is audited and returned.
    fn admit(
        &self,
        op: &str,
        tenant: &str,
        path: &str,
        check: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let verdict = self.rate().and_then(|()| check());
        if let Err(e) = verdict {
            self.vault.auditor().record(self.entry(
                op,
                tenant,
                path.to_owned(),
                None,
                outcome_of(&e),
            ))?;
            return Err(e);
        }
        Ok(())
    }

    fn rate(&self) -> Result<()> {
        let (id, rate, burst) = match &self.principal {
            Principal::Root => return Ok(()),
            Principal::Operator { token_id, .. } => (token_id, 1000.0, 2000),
            Principal::Tenant {
                token_id,
                rate_per_sec,
                burst,
                ..
            } => (token_id, *rate_per_sec, *burst),
        };
        if self.vault.take_rate(id, rate, burst) {
            Ok(())
        } else {
            Err(Error::RateLimited {
                token_id: id.clone(),
                per_sec: rate,
            })
        }
    }

    /// May this principal use `cap` on `name` in tenant `slug`?
    fn may(&self, slug: &Slug, name: &str, cap: Capability) -> Result<()> {
        match &self.principal {
            Principal::Root => Ok(()),
            Principal::Operator { read_grants, .. } => {
                if matches!(cap, Capability::Read | Capability::List) && read_grants.contains(slug)
                {
                    Ok(())
                } else {
                    Err(Error::PermissionDenied(format!(
                        "operator tokens do not reach tenant secrets unless granted (tenant `{slug}`)"
                    )))
                }
            }
            Principal::Tenant {
                slug: own, policy, ..
            } => {
                if own != slug {
                    Err(Error::CrossTenant {
                        own: own.to_string(),
                        other: slug.to_string(),
                    })
                } else if policy.allows(name, cap) {
                    Ok(())
                } else {
                    Err(Error::PermissionDenied(
                        format!("the token's policy does not allow {cap:?} on `{name}`")
                            .to_lowercase(),
                    ))
                }
            }
        }
    }

    /// May this principal list under `prefix` at all? A policy may grant
    /// listing on some names only (results are then filtered); a policy with
    /// no listing at all is refused.
    fn may_list(&self, prefix: &ListPrefix) -> Result<()> {
        match &self.principal {
            Principal::Tenant { slug, .. } if slug != prefix.slug() => Err(Error::CrossTenant {
                own: slug.to_string(),
                other: prefix.slug().to_string(),
            }),
            Principal::Tenant { policy, .. } => {
                if policy
                    .rules
                    .iter()
                    .any(|r| r.capabilities.contains(&Capability::List))
                {
                    Ok(())
                } else {
                    Err(Error::PermissionDenied(
                        "the token's policy allows no listing".into(),
                    ))
                }
            }
            _ => self.may(prefix.slug(), prefix.name_prefix(), Capability::List),
        }
    }

    /// Operators and root manage tenants; a tenant token with `admin`
    /// everywhere manages its own tenant.
    fn may_manage(&self, slug: Option<&Slug>) -> Result<()> {
        match (&self.principal, slug) {
            (Principal::Root | Principal::Operator { .. }, _) => Ok(()),
            (Principal::Tenant { slug: own, .. }, Some(s)) if own != s => Err(Error::CrossTenant {
                own: own.to_string(),
                other: s.to_string(),
            }),
            (Principal::Tenant { policy, .. }, Some(_))
                if policy.allows_everywhere(Capability::Admin) =>
            {
                Ok(())
            }
            _ => Err(Error::PermissionDenied(
                "this needs an operator token or tenant admin rights".into(),
            )),
        }
    }

    /// Operators only; a tenant token aiming at another tenant is refused
    /// (and audited) as a cross-tenant attempt.
    fn may_operate_on(&self, slug: &Slug) -> Result<()> {
        match &self.principal {
            Principal::Tenant { slug: own, .. } if own != slug => Err(Error::CrossTenant {
                own: own.to_string(),
                other: slug.to_string(),
            }),
            _ => self.may_operate(),
        }
    }

    fn may_operate(&self) -> Result<()> {
        match &self.principal {
            Principal::Root | Principal::Operator { .. } => Ok(()),
            Principal::Tenant { .. } => Err(Error::PermissionDenied(
                "this needs an operator token".into(),
            )),
        }
    }

    /// Runs an authorized request and audits its outcome. A read's record
    /// is accepted (buffered) before its result is returned. A mutation first
    /// writes every pending record (if that fails, nothing changes); `f`
    /// hands its record to the store, which commits it with the change; a
    /// refusal or failure is recorded, and written, before it is returned.
    fn run<T>(
        &self,
        effect: Effect,
        op: &str,
        tenant: &str,
        path: String,
        f: impl FnOnce(Option<&Pending>) -> Result<T>,
        version: impl Fn(&T) -> Option<u64>,
    ) -> Result<T> {
        if effect == Effect::Read {
            let r = f(None);
            let (v, outcome) = match &r {
                Ok(t) => (version(t), "ok".to_owned()),
                Err(e) => (None, outcome_of(e)),
            };
            self.vault
                .auditor()
                .record(self.entry(op, tenant, path, v, outcome))?;
            return r;
        }
        self.vault.auditor().flush()?;
        let pending = Pending::new(self.entry(op, tenant, path, None, "ok".to_owned()));
        let r = f(Some(&pending));
        if pending.is_written() && r.is_ok() {
            // Committed with the change.
            self.vault.auditor().committed();
            return r;
        }
        let (v, outcome) = match &r {
            Ok(t) => (version(t), "ok".to_owned()),
            Err(e) => (None, outcome_of(e)),
        };
        self.vault
            .auditor()
            .record_now(pending.into_entry(v, outcome))?;
        r
    }

    fn read<T>(
        &self,
        op: &str,
        tenant: &str,
        path: String,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.run(Effect::Read, op, tenant, path, |_| f(), |_| None)
    }

    fn mutate<T>(
        &self,
        op: &str,
        tenant: &str,
        path: String,
        f: impl FnOnce(Option<&Pending>) -> Result<T>,
    ) -> Result<T> {
        self.run(Effect::Mutate, op, tenant, path, f, |_| None)
    }

    /// Admits and runs an operation on one secret that needs `cap` on it.
    fn on_secret<T>(
        &self,
        op: &str,
        cap: Capability,
        path: &SecretPath,
        effect: Effect,
        f: impl FnOnce(Option<&Pending>) -> Result<T>,
        version: impl Fn(&T) -> Option<u64>,
    ) -> Result<T> {
        let (t, p) = (path.slug().as_str(), path.to_string());
        self.admit(op, t, &p, || {
            self.may(path.slug(), path.name().as_str(), cap)
        })?;
        self.run(effect, op, t, p, f, version)
    }

    // ----- secrets ------------------------------------------------------

    /// Reads the current version.
    pub fn get(&self, path: &SecretPath) -> Result<VersionedSecret> {
        self.on_secret(
            "get",
            Capability::Read,
            path,
            Effect::Read,
            |_| self.vault.get(path),
            |s| Some(s.version),
        )
    }

    /// Reads a given version.
    pub fn get_version(&self, path: &SecretPath, version: u64) -> Result<VersionedSecret> {
        self.on_secret(
            "get",
            Capability::Read,
            path,
            Effect::Read,
            |_| self.vault.get_version(path, version),
            |s| Some(s.version),
        )
    }

    /// Writes a new version (see [`Vault::put`]).
    pub fn put(&self, path: &SecretPath, value: &Secret, cas: Option<u64>) -> Result<u64> {
        self.on_secret(
            "put",
            Capability::Write,
            path,
            Effect::Mutate,
            |a| self.vault.put_audited(path, value, cas, a),
            |v| Some(*v),
        )
    }

    /// Lists the names under `prefix` the principal may list.
    pub fn list(&self, prefix: &ListPrefix, after: Option<&str>, limit: usize) -> Result<ListPage> {
        let (t, p) = (prefix.slug().as_str(), prefix.to_string());
        self.admit("list", t, &p, || self.may_list(prefix))?;
        self.read("list", t, p, || {
            let mut page = self.vault.list(prefix, after, limit)?;
            if let Principal::Tenant { policy, .. } = &self.principal {
                page.paths
                    .retain(|p| policy.allows(p.name().as_str(), Capability::List));
            }
            Ok(page)
        })
    }

    /// Starts watching the secrets under `prefix` for changes (needs
    /// listing, as [`Session::list`]). The watch begins at the current end of
    /// the audit trail: [`Session::watch_poll`] then returns what changes
    /// after this call, made by this process or any other sharing the store.
    pub fn watch(&self, prefix: &ListPrefix) -> Result<Watch> {
        let (t, p) = (prefix.slug().as_str(), prefix.to_string());
        self.admit("watch", t, &p, || self.may_list(prefix))?;
        self.read("watch", t, p, || {
            Ok(Watch {
                prefix: prefix.clone(),
                cursor: self.vault.store().last_audit_seq()?,
                marker: None,
            })
        })
    }

    /// The changes under the watched prefix since the last poll, oldest
    /// first, at most `limit`; empty when nothing changed. Cheap when the
    /// store has not changed since the last poll. Changes to names the
    /// principal may neither list nor read are left out. Polls are not
    /// audited (the watch itself was); the principal should be the one that
    /// started the watch, re-authenticated, so a revoked token stops seeing
    /// changes.
    pub fn watch_poll(&self, watch: &mut Watch, limit: usize) -> Result<Vec<Change>> {
        self.may_list(&watch.prefix)?;
        let marker = self.vault.store().change_marker()?;
        if watch.marker == Some(marker) {
            return Ok(Vec::new());
        }
        let slug = watch.prefix.slug().clone();
        let mut out = Vec::new();
        loop {
            let page =
                self.vault
                    .store()
                    .audit_changes(slug.as_str(), watch.cursor, limit.max(1))?;
            let full = page.len() >= limit.max(1);
            for r in page {
                watch.cursor = r.seq;
                let path = if r.entry.operation == "delete-scope" {
                    None
                } else {
                    match SecretPath::parse(&r.entry.path) {
                        Ok(p) if p.name().as_str().starts_with(watch.prefix.name_prefix()) => {
                            let name = p.name().as_str();
                            if self.may(&slug, name, Capability::List).is_err()
                                && self.may(&slug, name, Capability::Read).is_err()
                            {
                                continue;
                            }
                            Some(p)
                        }
                        _ => continue,
                    }
                };
                out.push(Change {
                    seq: r.seq,
                    time: r.entry.time,
                    operation: r.entry.operation,
                    path,
                    version: r.entry.version,
                });
                if out.len() >= limit {
                    return Ok(out);
                }
            }
            if !full {
                break;
            }
        }
        watch.marker = Some(marker);
        Ok(out)
    }

    fn versions_op(
        &self,
        op: &str,
        cap: Capability,
        path: &SecretPath,
        versions: &[u64],
        f: impl FnOnce(Option<&Pending>) -> Result<Vec<u64>>,
    ) -> Result<Vec<u64>> {
        let single = (versions.len() == 1).then(|| versions[0]);
        self.on_secret(op, cap, path, Effect::Mutate, f, |vs| {
            if vs.len() == 1 { Some(vs[0]) } else { single }
        })
    }

    /// Soft-deletes versions (see [`Vault::delete`]).
    pub fn delete(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>> {
        self.versions_op("delete", Capability::Delete, path, versions, |a| {
            let at = VersionChange::Delete(Timestamp::now());
            self.vault.change(path, versions, at, a)
        })
    }

    /// Restores versions (see [`Vault::undelete`]).
    pub fn undelete(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>> {
        self.versions_op("undelete", Capability::Delete, path, versions, |a| {
            self.vault
                .change(path, versions, VersionChange::Undelete, a)
        })
    }

    /// Destroys versions (see [`Vault::destroy`]).
    pub fn destroy(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>> {
        self.versions_op("destroy", Capability::Destroy, path, versions, |a| {
            self.vault.change(path, versions, VersionChange::Destroy, a)
        })
    }

    /// A secret's metadata (needs `list` or `read`).
    pub fn metadata(&self, path: &SecretPath) -> Result<SecretMetadata> {
        let (t, p) = (path.slug().as_str(), path.to_string());
        self.admit("metadata", t, &p, || {
            self.may(path.slug(), path.name().as_str(), Capability::List)
                .or_else(|_| self.may(path.slug(), path.name().as_str(), Capability::Read))
        })?;
        self.run(
            Effect::Read,
            "metadata",
            t,
            p,
            |_| self.vault.metadata(path),
            |m| Some(m.current_version),
        )
    }

    /// Changes a secret's metadata (needs `write`).
    pub fn update_metadata(&self, path: &SecretPath, update: &MetadataUpdate) -> Result<()> {
        self.on_secret(
            "update-metadata",
            Capability::Write,
            path,
            Effect::Mutate,
            |a| self.vault.update_metadata_audited(path, update, a),
            |_| None,
        )
    }

    // ----- tenants ------------------------------------------------------

    /// Creates a tenant (operators).
    pub fn create_scope(&self, slug: &Slug, kind: ScopeKind) -> Result<ScopeCreated> {
        self.admit("create-scope", slug.as_str(), "", || self.may_operate())?;
        self.mutate("create-scope", slug.as_str(), String::new(), |a| {
            self.vault.create_scope_audited(slug, kind, a)
        })
    }

    /// Deletes a tenant, crypto-shredding it (operators).
    pub fn delete_scope(&self, slug: &Slug) -> Result<()> {
        self.admit("delete-scope", slug.as_str(), "", || {
            self.may_operate_on(slug)
        })?;
        self.mutate("delete-scope", slug.as_str(), String::new(), |a| {
            self.vault.delete_scope_audited(slug, a)
        })
    }

    /// Lists tenants (operators).
    pub fn list_scopes(&self) -> Result<Vec<ScopeInfo>> {
        self.admit("list-scopes", "", "", || self.may_operate())?;
        self.read("list-scopes", "", String::new(), || {
            self.vault.list_scopes()
        })
    }

    /// A tenant's status (operators, or the tenant's admins).
    pub fn scope_status(&self, slug: &Slug) -> Result<ScopeStatus> {
        self.admit("scope-status", slug.as_str(), "", || {
            self.may_manage(Some(slug))
        })?;
        self.read("scope-status", slug.as_str(), String::new(), || {
            self.vault.scope_status(slug)
        })
    }

    /// Rotates a tenant's data key, optionally re-encrypting older versions
    /// (operators, or the tenant's admins). Returns the new key version and
    /// the number of versions moved.
    pub fn rotate_key(&self, slug: &Slug, rewrap: bool) -> Result<(u32, u64)> {
        self.admit("rotate-key", slug.as_str(), "", || {
            self.may_manage(Some(slug))
        })?;
        self.run(
            Effect::Mutate,
            "rotate-key",
            slug.as_str(),
            String::new(),
            |a| {
                let v = self.vault.rotate_tenant_key_audited(slug, a)?;
                let moved = if rewrap { self.vault.rewrap(slug)? } else { 0 };
                Ok((v, moved))
            },
            |(v, _): &(u32, u64)| Some(u64::from(*v)),
        )
    }

    /// A tenant's limits (operators, or the tenant's admins).
    pub fn limits(&self, slug: &Slug) -> Result<Limits> {
        self.admit("limits", slug.as_str(), "", || self.may_manage(Some(slug)))?;
        self.read("limits", slug.as_str(), String::new(), || {
            self.vault.limits(slug)
        })
    }

    /// Changes a tenant's plan or limits (operators).
    pub fn set_limits(&self, slug: &Slug, change: &LimitChange) -> Result<()> {
        self.admit("set-limits", slug.as_str(), "", || {
            self.may_operate_on(slug)
        })?;
        self.mutate("set-limits", slug.as_str(), String::new(), |a| {
            self.vault.set_limits_audited(slug, change, a)
        })
    }

    // ----- tokens -------------------------------------------------------

    /// Issues a token. Operators issue any; a tenant admin issues tokens of
    /// its own tenant no stronger than its own (and owners only if owner).
    pub fn issue_token(&self, spec: &TokenSpec) -> Result<IssuedToken> {
        let tenant = spec.tenant.as_ref().map_or("", |s| s.as_str());
        self.admit("issue-token", tenant, "", || {
            match (&self.principal, &spec.tenant) {
                (Principal::Tenant { .. }, None) => Err(Error::PermissionDenied(
                    "tenant tokens cannot issue operator tokens".into(),
                )),
                (Principal::Tenant { role, policy, .. }, Some(s)) => {
                    self.may_manage(Some(s))?;
                    let wanted = spec
                        .policy
                        .clone()
                        .unwrap_or_else(|| spec.role.unwrap_or(Role::User).policy());
                    if spec.role == Some(Role::Owner) && role != "owner" {
                        return Err(Error::PermissionDenied(
                            "only an owner can issue owner tokens".into(),
                        ));
                    }
                    if !wanted.is_within(policy) {
                        return Err(Error::PermissionDenied(
                            "a token cannot grant more than its issuer holds".into(),
                        ));
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })?;
        // The record names the issued token by id (never the token).
        self.mutate("issue-token", tenant, String::new(), |a| {
            self.vault.issue_token(spec, a)
        })
    }

    /// Revokes a token at once. The tenant's last live owner cannot be revoked.
    pub fn revoke_token(&self, id: &str) -> Result<()> {
        let own_scope = match &self.principal {
            Principal::Tenant { scope, slug, .. } => {
                let slug = slug.clone();
                self.admit("revoke-token", slug.as_str(), id, || {
                    self.may_manage(Some(&slug))
                })?;
                Some(scope.clone())
            }
            _ => {
                self.admit("revoke-token", "", id, || self.may_operate())?;
                None
            }
        };
        self.mutate("revoke-token", "", id.to_owned(), |a| {
            self.vault.revoke_token(id, own_scope.as_ref(), a)
        })
    }

    /// Lists tokens, of one tenant or all (never the tokens themselves).
    pub fn list_tokens(&self, tenant: Option<&Slug>) -> Result<Vec<TokenInfo>> {
        let t = tenant.map_or("", |s| s.as_str());
        self.admit("list-tokens", t, "", || match (&self.principal, tenant) {
            (Principal::Tenant { .. }, None) => {
                Err(Error::PermissionDenied("name the tenant".into()))
            }
            _ => self.may_manage(tenant),
        })?;
        self.read("list-tokens", t, String::new(), || {
            self.vault.list_tokens(tenant)
        })
    }
}

pub(crate) fn operator_policy_json(grants: &[Slug]) -> String {
    serde_json::to_string(&OperatorPolicy {
        read_grants: grants.iter().map(ToString::to_string).collect(),
    })
    .unwrap_or_default()
}

pub(crate) fn operator_grants(json: &str) -> Vec<Slug> {
    serde_json::from_str::<OperatorPolicy>(json)
        .map(|p| {
            p.read_grants
                .iter()
                .filter_map(|s| Slug::parse(s).ok())
                .collect()
        })
        .unwrap_or_default()
}
