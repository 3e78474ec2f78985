//! The Secret MCP server, end to end: real servers on 127.0.0.1:0 over real
//! SQLite vaults, called through the generated gRPC stubs, so the contract in
//! `proto/` is what is tested.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use secret_mcp_grpc::pb::{
    self, secrets_client::SecretsClient, system_client::SystemClient, tenants_client::TenantsClient,
};
use secret_mcp_grpc::{Server, ServerOptions, ServerTls};
use tenant_vault::{
    KdfParams, ScopeKind, Secret, Slug, SqliteStore, TokenSpec, Unlock, Vault, VaultOptions,
    create_key_file,
};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request};

fn options() -> VaultOptions {
    let mut o = VaultOptions::default();
    o.kdf = KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };
    o
}

struct TestServer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    vault: Arc<Vault>,
    operator: String,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), secret_mcp_grpc::Error>>,
}

impl TestServer {
    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("vault.db")
    }

    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("vault.key")
    }

    async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn stop(mut self) -> Result<(), secret_mcp_grpc::Error> {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.handle).await.unwrap()
    }

    /// Audit records of `outcome`, read straight from the database.
    fn audit_count(&self, outcome: &str) -> i64 {
        self.vault.flush_audit().unwrap();
        rusqlite::Connection::open(self.db())
            .unwrap()
            .query_row(
                "SELECT count(*) FROM audit_log WHERE outcome = ?1",
                [outcome],
                |r| r.get(0),
            )
            .unwrap()
    }

    fn issue(&self, tenant: Option<&str>, role: Option<tenant_vault::Role>) -> String {
        let t = self
            .vault
            .root_session()
            .issue_token(&TokenSpec {
                tenant: tenant.map(|t| Slug::parse(t).unwrap()),
                role,
                ..Default::default()
            })
            .unwrap();
        String::from_utf8(t.token.expose().to_vec()).unwrap()
    }
}

/// A key-file vault with tenants `acme` and `globex`, served on 127.0.0.1:0.
async fn start(server_options: ServerOptions) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vault.key");
    create_key_file(&key).unwrap();
    let vault = Arc::new(
        Vault::init(
            SqliteStore::open(dir.path().join("vault.db")).unwrap(),
            &Unlock::KeyFile(key),
            options(),
        )
        .unwrap(),
    );
    serve(dir, vault, server_options, "127.0.0.1:0").await
}

async fn serve(
    dir: tempfile::TempDir,
    vault: Arc<Vault>,
    server_options: ServerOptions,
    bind: &str,
) -> TestServer {
    let root = vault.root_session();
    if !vault.is_sealed() {
        for t in ["acme", "globex"] {
            root.create_scope(&Slug::parse(t).unwrap(), ScopeKind::Enterprise)
                .unwrap();
        }
    }
    // A sealed vault issues no tokens: the caller sets `operator` itself.
    let operator = if vault.is_sealed() {
        String::new()
    } else {
        let t = root.issue_token(&TokenSpec::default()).unwrap();
        String::from_utf8(t.token.expose().to_vec()).unwrap()
    };
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let server = Server::new(vault.clone(), server_options);
    let handle = tokio::spawn(server.serve(listener, async move {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        dir,
        vault,
        operator,
        stop: Some(tx),
        handle,
    }
}

fn req<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match r {
        Ok(x) => panic!("expected an error, got {x:?}"),
        Err(s) => s.code(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_works_for_its_own_tenant() {
    let ts = start(ServerOptions::default()).await;
    let ch = ts.channel().await;
    let (mut sec, mut ten, mut sys) = (
        SecretsClient::new(ch.clone()),
        TenantsClient::new(ch.clone()),
        SystemClient::new(ch.clone()),
    );
    let op = ts.operator.clone();

    // Tenants, as the operator.
    let created = ten
        .create_scope(req(
            pb::CreateScopeRequest {
                slug: "initech".into(),
                kind: pb::ScopeKind::Freelance as i32,
            },
            &op,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.created);
    assert_eq!(created.scope.unwrap().kind, pb::ScopeKind::Freelance as i32);
    let again = ten
        .create_scope(req(
            pb::CreateScopeRequest {
                slug: "initech".into(),
                kind: 0,
            },
            &op,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !again.created,
        "an existing scope is a success, created = false"
    );
    let scopes = ten
        .list_scopes(req(pb::ListScopesRequest {}, &op))
        .await
        .unwrap()
        .into_inner()
        .scopes;
    let slugs: Vec<&str> = scopes.iter().map(|s| s.slug.as_str()).collect();
    assert_eq!(slugs, ["acme", "globex", "initech"]);
    let owner = ten
        .issue_token(req(
            pb::IssueTokenRequest {
                tenant: "acme".into(),
                role: "owner".into(),
                description: "ci".into(),
                ..Default::default()
            },
            &op,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(owner.token.starts_with("smcpt_") && owner.id.starts_with("tok_"));
    let tok = owner.token.clone();

    // Secrets, as the tenant.
    let put = |value: &str, cas: Option<u64>| pb::PutRequest {
        path: "tenant/acme/db/password".into(),
        value: value.as_bytes().to_vec(),
        cas,
    };
    assert_eq!(
        sec.put(req(put("one", Some(0)), &tok))
            .await
            .unwrap()
            .into_inner()
            .version,
        1
    );
    assert_eq!(
        sec.put(req(put("two", None), &tok))
            .await
            .unwrap()
            .into_inner()
            .version,
        2
    );
    assert_eq!(
        code(sec.put(req(put("three", Some(1)), &tok)).await),
        Code::FailedPrecondition,
        "check-and-set mismatch"
    );
    let got = sec
        .get(req(
            pb::GetRequest {
                path: "tenant/acme/db/password".into(),
                version: None,
            },
            &tok,
        ))
        .await
        .unwrap();
    assert!(got.metadata().get("x-request-id").is_some());
    let got = got.into_inner();
    assert_eq!((got.version, got.value.as_slice()), (2, &b"two"[..]));
    let v1 = sec
        .get(req(
            pb::GetRequest {
                path: "tenant/acme/db/password".into(),
                version: Some(1),
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v1.value, b"one");
    sec.put(req(
        pb::PutRequest {
            path: "tenant/acme/api/key".into(),
            value: b"k".to_vec(),
            cas: None,
        },
        &tok,
    ))
    .await
    .unwrap();
    let page = sec
        .list(req(
            pb::ListRequest {
                prefix: "tenant/acme/".into(),
                after: String::new(),
                limit: 1,
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.paths, ["tenant/acme/api/key"]);
    let page2 = sec
        .list(req(
            pb::ListRequest {
                prefix: "tenant/acme/".into(),
                after: page.next.clone(),
                limit: 10,
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page2.paths, ["tenant/acme/db/password"]);
    assert!(page2.next.is_empty());
    let md = sec
        .update_metadata(req(
            pb::UpdateMetadataRequest {
                path: "tenant/acme/db/password".into(),
                max_versions: Some(5),
                custom: Some(pb::CustomMetadata {
                    entries: [("owner".to_string(), "team-db".to_string())].into(),
                }),
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner()
        .metadata
        .unwrap();
    assert_eq!((md.max_versions, md.current_version), (5, 2));
    assert_eq!(md.custom["owner"], "team-db");
    let md = sec
        .get_metadata(req(
            pb::GetMetadataRequest {
                path: "tenant/acme/db/password".into(),
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner()
        .metadata
        .unwrap();
    assert_eq!(md.versions.len(), 2);
    let path = || "tenant/acme/db/password".to_string();
    let deleted = sec
        .delete(req(
            pb::DeleteRequest {
                path: path(),
                versions: vec![],
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.versions, [2]);
    let gone = sec
        .get(req(
            pb::GetRequest {
                path: path(),
                version: Some(2),
            },
            &tok,
        ))
        .await;
    assert_eq!(code(gone), Code::NotFound);
    let restored = sec
        .undelete(req(
            pb::UndeleteRequest {
                path: path(),
                versions: vec![2],
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(restored.versions, [2]);
    let destroyed = sec
        .destroy(req(
            pb::DestroyRequest {
                path: path(),
                versions: vec![1],
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(destroyed.versions, [1]);

    // Tenant management.
    let status = ten
        .get_scope_status(req(
            pb::GetScopeStatusRequest {
                slug: "acme".into(),
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.secrets, 2);
    let rotated = ten
        .rotate_key(req(
            pb::RotateKeyRequest {
                slug: "acme".into(),
                rewrap: true,
            },
            &op,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rotated.key_version, 2);
    let after = sec
        .get(req(
            pb::GetRequest {
                path: path(),
                version: None,
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.value, b"two", "readable after rotation and rewrap");
    let limits = ten
        .set_limits(req(
            pb::SetLimitsRequest {
                slug: "acme".into(),
                plan: Some("pro".into()),
                max_secrets: Some(7),
                ..Default::default()
            },
            &op,
        ))
        .await
        .unwrap()
        .into_inner()
        .limits
        .unwrap();
    assert_eq!((limits.plan.as_str(), limits.max_secrets), ("pro", 7));
    let limits = ten
        .get_limits(req(
            pb::GetLimitsRequest {
                slug: "acme".into(),
            },
            &op,
        ))
        .await
        .unwrap()
        .into_inner()
        .limits
        .unwrap();
    assert_eq!(limits.max_secrets, 7);
    let viewer = ten
        .issue_token(req(
            pb::IssueTokenRequest {
                tenant: "acme".into(),
                rules: vec![pb::PolicyRule {
                    path: "api/**".into(),
                    capabilities: vec!["read".into()],
                }],
                ttl_seconds: 3600,
                ..Default::default()
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(viewer.expires_at.is_some());
    let tokens = ten
        .list_tokens(req(
            pb::ListTokensRequest {
                tenant: "acme".into(),
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens
            .iter()
            .all(|t| t.tenant == "acme" && t.kind == "tenant")
    );
    ten.revoke_token(req(
        pb::RevokeTokenRequest {
            id: viewer.id.clone(),
        },
        &tok,
    ))
    .await
    .unwrap();
    let revoked = sec
        .get(req(
            pb::GetRequest {
                path: "tenant/acme/api/key".into(),
                version: None,
            },
            &viewer.token,
        ))
        .await;
    assert_eq!(code(revoked), Code::Unauthenticated);
    assert_eq!(
        code(
            ten.revoke_token(req(pb::RevokeTokenRequest { id: owner.id }, &op))
                .await
        ),
        Code::FailedPrecondition,
        "the last owner cannot be revoked"
    );

    // System.
    let st = sys
        .status(Request::new(pb::StatusRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(!st.sealed);
    sys.ping(req(pb::PingRequest {}, &tok)).await.unwrap();
    assert_eq!(
        code(sys.ping(Request::new(pb::PingRequest {})).await),
        Code::Unauthenticated
    );
    let verified = sys
        .verify_audit(req(pb::VerifyAuditRequest {}, &op))
        .await
        .unwrap()
        .into_inner();
    assert!(verified.intact && verified.records > 10);
    let tail = sys
        .audit_tail(req(pb::AuditTailRequest { lines: 5 }, &op))
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(tail.len(), 5);
    assert_eq!(
        code(
            sys.audit_tail(req(pb::AuditTailRequest { lines: 5 }, &tok))
                .await
        ),
        Code::PermissionDenied,
        "tenant tokens do not read the audit trail"
    );

    // Health and reflection are served too.
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "secret_mcp.v1.Secrets".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let services = reflected_services(ch.clone()).await;
    for s in [
        "secret_mcp.v1.Secrets",
        "secret_mcp.v1.Tenants",
        "secret_mcp.v1.System",
        "grpc.health.v1.Health",
    ] {
        assert!(services.iter().any(|x| x == s), "{s} in {services:?}");
    }

    // Deleting a scope shreds it.
    ten.delete_scope(req(
        pb::DeleteScopeRequest {
            slug: "initech".into(),
        },
        &op,
    ))
    .await
    .unwrap();
    assert_eq!(
        code(
            ten.get_scope_status(req(
                pb::GetScopeStatusRequest {
                    slug: "initech".into()
                },
                &op
            ))
            .await
        ),
        Code::NotFound
    );
    ts.stop().await.unwrap();
}

async fn reflected_services(ch: Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut client = ServerReflectionClient::new(ch);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let msg = stream.message().await.unwrap().unwrap();
    match msg.message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_never_reaches_another_tenant_on_any_rpc() {
    let ts = start(ServerOptions::default()).await;
    let ch = ts.channel().await;
    let (mut sec, mut ten) = (
        SecretsClient::new(ch.clone()),
        TenantsClient::new(ch.clone()),
    );
    let acme = ts.issue(Some("acme"), Some(tenant_vault::Role::Owner));
    let globex = ts.issue(Some("globex"), Some(tenant_vault::Role::Owner));
    let secret = "globex-database-password-value";
    ts.vault
        .root_session()
        .put(
            &tenant_vault::SecretPath::parse("tenant/globex/db/password").unwrap(),
            &Secret::from(secret),
            None,
        )
        .unwrap();
    let before = ts.audit_count("cross-tenant-denied");
    let p = || "tenant/globex/db/password".to_string();
    let mut codes = vec![
        code(
            sec.put(req(
                pb::PutRequest {
                    path: p(),
                    value: b"overwritten".to_vec(),
                    cas: None,
                },
                &acme,
            ))
            .await,
        ),
        code(
            sec.get(req(
                pb::GetRequest {
                    path: p(),
                    version: None,
                },
                &acme,
            ))
            .await,
        ),
        code(
            sec.get(req(
                pb::GetRequest {
                    path: p(),
                    version: Some(1),
                },
                &acme,
            ))
            .await,
        ),
        code(
            sec.list(req(
                pb::ListRequest {
                    prefix: "tenant/globex/".into(),
                    ..Default::default()
                },
                &acme,
            ))
            .await,
        ),
        code(
            sec.delete(req(
                pb::DeleteRequest {
                    path: p(),
                    versions: vec![],
                },
                &acme,
            ))
            .await,
        ),
        code(
            sec.undelete(req(
                pb::UndeleteRequest {
                    path: p(),
                    versions: vec![1],
                },
                &acme,
            ))
            .await,
        ),
        code(
            sec.destroy(req(
                pb::DestroyRequest {
                    path: p(),
                    versions: vec![1],
                },
                &acme,
            ))
            .await,
        ),
        code(
            sec.get_metadata(req(pb::GetMetadataRequest { path: p() }, &acme))
                .await,
        ),
        code(
            sec.update_metadata(req(
                pb::UpdateMetadataRequest {
                    path: p(),
                    max_versions: Some(1),
                    custom: None,
                },
                &acme,
            ))
            .await,
        ),
        code(
            sec.watch(req(
                pb::WatchRequest {
                    prefix: "tenant/globex/".into(),
                },
                &acme,
            ))
            .await
            .map(|r| r.map(|_| ())),
        ),
        code(
            ten.get_scope_status(req(
                pb::GetScopeStatusRequest {
                    slug: "globex".into(),
                },
                &acme,
            ))
            .await,
        ),
        code(
            ten.rotate_key(req(
                pb::RotateKeyRequest {
                    slug: "globex".into(),
                    rewrap: false,
                },
                &acme,
            ))
            .await,
        ),
        code(
            ten.get_limits(req(
                pb::GetLimitsRequest {
                    slug: "globex".into(),
                },
                &acme,
            ))
            .await,
        ),
        code(
            ten.set_limits(req(
                pb::SetLimitsRequest {
                    slug: "globex".into(),
                    max_secrets: Some(1),
                    ..Default::default()
                },
                &acme,
            ))
            .await,
        ),
        code(
            ten.issue_token(req(
                pb::IssueTokenRequest {
                    tenant: "globex".into(),
                    role: "owner".into(),
                    ..Default::default()
                },
                &acme,
            ))
            .await,
        ),
        code(
            ten.list_tokens(req(
                pb::ListTokensRequest {
                    tenant: "globex".into(),
                },
                &acme,
            ))
            .await,
        ),
        code(
            ten.delete_scope(req(
                pb::DeleteScopeRequest {
                    slug: "globex".into(),
                },
                &acme,
            ))
            .await,
        ),
    ];
    let cross = codes.len() as i64;
    assert!(
        codes.iter().all(|c| *c == Code::PermissionDenied),
        "{codes:?}"
    );
    // Revoking another tenant's token, by id.
    let globex_id = ts
        .vault
        .root_session()
        .list_tokens(Some(&Slug::parse("globex").unwrap()))
        .unwrap()[0]
        .id
        .clone();
    codes.push(code(
        ten.revoke_token(req(pb::RevokeTokenRequest { id: globex_id }, &acme))
            .await,
    ));
    assert!(
        matches!(codes.last(), Some(Code::PermissionDenied | Code::NotFound)),
        "{codes:?}"
    );
    // Operator-only calls.
    for c in [
        code(ten.list_scopes(req(pb::ListScopesRequest {}, &acme)).await),
        code(
            ten.create_scope(req(
                pb::CreateScopeRequest {
                    slug: "evil".into(),
                    kind: 0,
                },
                &acme,
            ))
            .await,
        ),
    ] {
        assert_eq!(c, Code::PermissionDenied);
    }
    // Every cross-tenant attempt is audited as such.
    assert_eq!(ts.audit_count("cross-tenant-denied"), before + cross);
    // And globex is untouched.
    let v = SecretsClient::new(ch.clone())
        .get(req(
            pb::GetRequest {
                path: p(),
                version: None,
            },
            &globex,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((v.version, v.value.as_slice()), (1, secret.as_bytes()));
    // A malformed path is a typed INVALID_ARGUMENT, and no message carries a value.
    let bad = sec
        .get(req(
            pb::GetRequest {
                path: "tenant/acme/../globex/db".into(),
                version: None,
            },
            &acme,
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(!bad.message().contains(secret));
    ts.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
    let ts = start(ServerOptions::default()).await;
    let mut sec = SecretsClient::new(ts.channel().await);
    let get = || pb::GetRequest {
        path: "tenant/acme/x".into(),
        version: None,
    };
    assert_eq!(
        code(sec.get(Request::new(get())).await),
        Code::Unauthenticated
    );
    assert_eq!(
        code(sec.get(req(get(), "not-a-token")).await),
        Code::Unauthenticated
    );
    let mut typo = ts.issue(Some("acme"), None).into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let e = sec.get(req(get(), &typo)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(!e.message().contains(&typo[6..]), "the token is not echoed");
    let mut basic = Request::new(get());
    basic
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwYXNz".parse().unwrap());
    assert_eq!(code(sec.get(basic).await), Code::Unauthenticated);
    ts.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_server_refuses_until_unsealed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vault.db");
    let passphrase = "correct horse battery staple";
    let (tok, operator) = {
        let v = Vault::init(
            SqliteStore::open(&db).unwrap(),
            &Unlock::Passphrase(Secret::from(passphrase)),
            options(),
        )
        .unwrap();
        v.root_session()
            .create_scope(&Slug::parse("acme").unwrap(), ScopeKind::Enterprise)
            .unwrap();
        v.root_session()
            .put(
                &tenant_vault::SecretPath::parse("tenant/acme/k").unwrap(),
                &Secret::from("v"),
                None,
            )
            .unwrap();
        let issue = |spec: TokenSpec| {
            let t = v.root_session().issue_token(&spec).unwrap();
            String::from_utf8(t.token.expose().to_vec()).unwrap()
        };
        (
            issue(TokenSpec {
                tenant: Some(Slug::parse("acme").unwrap()),
                role: Some(tenant_vault::Role::Owner),
                ..Default::default()
            }),
            issue(TokenSpec::default()),
        )
    };
    let vault = Arc::new(Vault::open_sealed(SqliteStore::open(&db).unwrap(), options()).unwrap());
    assert!(vault.is_sealed());
    let mut ts = serve(dir, vault, ServerOptions::default(), "127.0.0.1:0").await;
    ts.operator = operator;
    let ch = ts.channel().await;
    let (mut sec, mut sys) = (
        SecretsClient::new(ch.clone()),
        SystemClient::new(ch.clone()),
    );
    let get = || pb::GetRequest {
        path: "tenant/acme/k".into(),
        version: None,
    };
    let status = |sys: &mut SystemClient<Channel>| {
        let mut sys = sys.clone();
        async move {
            sys.status(Request::new(pb::StatusRequest {}))
                .await
                .unwrap()
                .into_inner()
                .sealed
        }
    };
    assert!(status(&mut sys).await);
    assert_eq!(code(sec.get(req(get(), &tok)).await), Code::Unavailable);
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        h.status,
        tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
    );
    assert_eq!(
        code(
            sys.unseal(Request::new(pb::UnsealRequest {
                passphrase: "wrong".into()
            }))
            .await
        ),
        Code::PermissionDenied
    );
    assert!(status(&mut sys).await, "a wrong passphrase changes nothing");
    sys.unseal(Request::new(pb::UnsealRequest {
        passphrase: passphrase.into(),
    }))
    .await
    .unwrap();
    assert!(!status(&mut sys).await);
    assert_eq!(
        code(
            sys.unseal(Request::new(pb::UnsealRequest {
                passphrase: passphrase.into()
            }))
            .await
        ),
        Code::AlreadyExists
    );
    assert_eq!(
        sec.get(req(get(), &tok)).await.unwrap().into_inner().value,
        b"v"
    );
    // Tenants cannot seal; operators can.
    assert_eq!(
        code(sys.seal(req(pb::SealRequest {}, &tok)).await),
        Code::PermissionDenied
    );
    sys.seal(req(pb::SealRequest {}, &ts.operator))
        .await
        .unwrap();
    assert!(status(&mut sys).await);
    assert_eq!(code(sec.get(req(get(), &tok)).await), Code::Unavailable);
    ts.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_off_loopback_unless_explicitly_allowed() {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    create_key_file(dir.path().join("k")).unwrap();
    let vault = Arc::new(
        Vault::init(
            SqliteStore::open(dir.path().join("v.db")).unwrap(),
            &Unlock::KeyFile(dir.path().join("k")),
            options(),
        )
        .unwrap(),
    );
    let e = Server::new(vault.clone(), ServerOptions::default())
        .serve(listener, async {})
        .await
        .unwrap_err();
    assert!(
        matches!(e, secret_mcp_grpc::Error::PlaintextNotLoopback(_)),
        "{e}"
    );
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let allowed = ServerOptions {
        allow_plaintext_non_loopback: true,
        ..Default::default()
    };
    Server::new(vault, allowed)
        .serve(listener, async {})
        .await
        .unwrap();
}

/// A CA, a server certificate for `localhost` and a client certificate.
struct Pki {
    ca: Vec<u8>,
    server: (Vec<u8>, Vec<u8>),
    client: (Vec<u8>, Vec<u8>),
    other_ca: Vec<u8>,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    };
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Pki {
        ca: ca.pem().into_bytes(),
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["client.acme".into()]),
        other_ca: other.self_signed(&other_key).unwrap().pem().into_bytes(),
    }
}

async fn tls_channel(
    addr: SocketAddr,
    ca: &[u8],
    identity: Option<&(Vec<u8>, Vec<u8>)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

async fn ping(ch: Channel, token: &str) -> Result<(), tonic::Status> {
    SystemClient::new(ch)
        .ping(req(pb::PingRequest {}, token))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls() {
    let pki = pki();
    let tls = |client_ca: Option<Vec<u8>>| ServerOptions {
        tls: Some(ServerTls {
            cert_pem: pki.server.0.clone(),
            key_pem: zeroize::Zeroizing::new(pki.server.1.clone()),
            client_ca_pem: client_ca,
        }),
        ..Default::default()
    };
    // TLS: a client trusting the CA gets in; plaintext and a client trusting
    // another CA do not.
    let ts = start(tls(None)).await;
    let ch = tls_channel(ts.addr, &pki.ca, None).await.unwrap();
    ping(ch, &ts.operator).await.unwrap();
    let plain = Endpoint::from_shared(format!("http://{}", ts.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(
            ping(ch, &ts.operator).await.is_err(),
            "plaintext on a TLS port"
        );
    }
    let wrong = tls_channel(ts.addr, &pki.other_ca, None).await;
    if let Ok(ch) = wrong {
        assert!(
            ping(ch, &ts.operator).await.is_err(),
            "untrusted server cert"
        );
    }
    ts.stop().await.unwrap();

    // mTLS: a client certificate from the CA is required.
    let ts = start(tls(Some(pki.ca.clone()))).await;
    let ch = tls_channel(ts.addr, &pki.ca, Some(&pki.client))
        .await
        .unwrap();
    ping(ch, &ts.operator).await.unwrap();
    let anonymous = tls_channel(ts.addr, &pki.ca, None).await;
    if let Ok(ch) = anonymous {
        assert!(
            ping(ch, &ts.operator).await.is_err(),
            "no client certificate under mTLS"
        );
    }
    ts.stop().await.unwrap();
}

async fn next(s: &mut tonic::Streaming<pb::WatchResponse>) -> pb::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), s.message())
        .await
        .expect("a change within 10 s")
        .unwrap()
        .expect("the stream is open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_changes_from_this_server_and_other_processes() {
    let ts = start(ServerOptions {
        watch_interval: Duration::from_millis(50),
        ..Default::default()
    })
    .await;
    let tok = ts.issue(Some("acme"), Some(tenant_vault::Role::Owner));
    let ch = ts.channel().await;
    let mut sec = SecretsClient::new(ch.clone());
    let mut stream = sec
        .watch(req(
            pb::WatchRequest {
                prefix: "tenant/acme/db/".into(),
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();
    let put = |path: &str| pb::PutRequest {
        path: path.into(),
        value: b"v".to_vec(),
        cas: None,
    };
    sec.put(req(put("tenant/acme/other"), &tok)).await.unwrap();
    sec.put(req(put("tenant/acme/db/password"), &tok))
        .await
        .unwrap();
    let c = next(&mut stream).await;
    assert_eq!(
        (c.operation.as_str(), c.path.as_str(), c.version),
        ("put", "tenant/acme/db/password", Some(1))
    );
    // Another process writing to the same database file.
    let other = Vault::open(
        SqliteStore::open(ts.db()).unwrap(),
        &Unlock::KeyFile(ts.key()),
        options(),
    )
    .unwrap();
    other
        .root_session()
        .put(
            &tenant_vault::SecretPath::parse("tenant/acme/db/user").unwrap(),
            &Secret::from("u"),
            None,
        )
        .unwrap();
    let c = next(&mut stream).await;
    assert_eq!(
        (c.operation.as_str(), c.path.as_str()),
        ("put", "tenant/acme/db/user")
    );
    sec.delete(req(
        pb::DeleteRequest {
            path: "tenant/acme/db/user".into(),
            versions: vec![],
        },
        &tok,
    ))
    .await
    .unwrap();
    let c = next(&mut stream).await;
    assert_eq!(
        (c.operation.as_str(), c.path.as_str()),
        ("delete", "tenant/acme/db/user")
    );
    // Changes carry no value.
    assert!(!format!("{c:?}").contains("\"u\""));
    // Shutdown ends the stream; the server stops.
    ts.stop().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends at shutdown");
    assert!(!matches!(end, Ok(Some(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_calls_in_flight_and_loses_nothing() {
    let ts = start(ServerOptions::default()).await;
    let tok = ts.issue(Some("acme"), Some(tenant_vault::Role::Owner));
    ts.vault
        .root_session()
        .set_limits(
            &Slug::parse("acme").unwrap(),
            &tenant_vault::LimitChange {
                rate_per_sec: Some(1e9),
                ..Default::default()
            },
        )
        .unwrap();
    let ch = ts.channel().await;
    let mut tasks = Vec::new();
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..64 {
        let mut sec = SecretsClient::new(ch.clone());
        let tok = tok.clone();
        let answered = answered.clone();
        tasks.push(tokio::spawn(async move {
            let r = sec
                .put(req(
                    pb::PutRequest {
                        path: format!("tenant/acme/k{i}"),
                        value: vec![b'x'; 32 * 1024],
                        cas: None,
                    },
                    &tok,
                ))
                .await
                .map(|r| (i, r.into_inner().version));
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            r
        }));
    }
    // Stop once the first put is answered, while the others are in flight
    // (however loaded the machine is).
    while answered.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let TestServer {
        dir,
        vault,
        stop,
        handle,
        ..
    } = ts;
    let _ = stop.unwrap().send(());
    handle.await.unwrap().unwrap();
    drop(vault);
    let mut ok = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok((i, v)) => ok.push((i, v)),
            Err(s) => assert!(
                matches!(
                    s.code(),
                    Code::Unavailable | Code::Cancelled | Code::Unknown
                ),
                "a refused call says so: {s:?}"
            ),
        }
    }
    assert!(!ok.is_empty(), "some calls were in flight and finished");
    // Every acknowledged write is there after the server stopped, and the
    // audit chain is intact.
    let reopened = Vault::open(
        SqliteStore::open(dir.path().join("vault.db")).unwrap(),
        &Unlock::KeyFile(dir.path().join("vault.key")),
        options(),
    )
    .unwrap();
    for (i, v) in &ok {
        let got = reopened
            .root_session()
            .get(&tenant_vault::SecretPath::parse(&format!("tenant/acme/k{i}")).unwrap())
            .unwrap();
        assert_eq!(got.version, *v);
    }
    assert!(reopened.verify_audit().unwrap().is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_message_limits() {
    let ts = start(ServerOptions {
        max_message_bytes: 64 * 1024,
        ..Default::default()
    })
    .await;
    let tok = ts.issue(Some("acme"), Some(tenant_vault::Role::Owner));
    let mut sec = SecretsClient::new(ts.channel().await);
    let mut r = req(
        pb::PutRequest {
            path: "tenant/acme/a".into(),
            value: b"v".to_vec(),
            cas: None,
        },
        &tok,
    );
    r.metadata_mut()
        .insert("x-request-id", "trace-4242".parse().unwrap());
    let resp = sec.put(r).await.unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "trace-4242");
    let tail = ts.vault.audit_tail(5).unwrap();
    assert!(tail.iter().any(|r| r.entry.request_id == "trace-4242"));
    // Over the message limit: refused, nothing stored.
    let big = sec
        .put(req(
            pb::PutRequest {
                path: "tenant/acme/big".into(),
                value: vec![0u8; 128 * 1024],
                cas: None,
            },
            &tok,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(big.code(), Code::ResourceExhausted | Code::OutOfRange),
        "{big:?}"
    );
    assert!(
        ts.vault
            .root_session()
            .get(&tenant_vault::SecretPath::parse("tenant/acme/big").unwrap())
            .is_err()
    );
    ts.stop().await.unwrap();
}
