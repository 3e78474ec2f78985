//! The typed client against a real server on 127.0.0.1:0: every method, the
//! vault's types both ways, and which calls are retried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use secret_mcp_grpc::{Client, ClientOptions, Error, Server, ServerOptions};
use tenant_vault::{
    LimitChange, ListPrefix, MetadataUpdate, Role, ScopeKind, Secret, SecretPath, Slug,
    SqliteStore, TokenSpec, Unlock, Vault, VaultOptions, create_key_file,
};

struct Running {
    _dir: tempfile::TempDir,
    addr: String,
    operator: Secret,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.handle).await.unwrap().unwrap();
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vault.key");
    create_key_file(&key).unwrap();
    let vault = Arc::new(
        Vault::init(
            SqliteStore::open(dir.path().join("vault.db")).unwrap(),
            &Unlock::KeyFile(key),
            VaultOptions::default(),
        )
        .unwrap(),
    );
    let operator = vault
        .root_session()
        .issue_token(&TokenSpec {
            read_grants: vec![Slug::parse("acme").unwrap()],
            ..TokenSpec::default()
        })
        .unwrap()
        .token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(Server::new(vault, ServerOptions::default()).serve(
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    Running {
        _dir: dir,
        addr,
        operator,
        stop: Some(tx),
        handle,
    }
}

async fn client(addr: &str, token: &Secret, retries: u32) -> Client {
    Client::connect(
        addr,
        ClientOptions {
            token: Some(token.clone()),
            retries,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap()
}

fn code(e: &Error) -> tonic::Code {
    match e {
        Error::Status { code, .. } => *code,
        other => panic!("not a status: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_round_trips_the_vault_types() {
    let s = start().await;
    let op = client(&s.addr, &s.operator, 3).await;
    let acme = Slug::parse("acme").unwrap();

    // Tenants.
    let c = op.create_scope(&acme, ScopeKind::Freelance).await.unwrap();
    assert!(c.created);
    assert_eq!(c.scope.kind, ScopeKind::Freelance);
    let again = op.create_scope(&acme, ScopeKind::Enterprise).await.unwrap();
    assert!(!again.created, "idempotent");
    assert_eq!(again.scope, c.scope);
    assert_eq!(op.list_scopes().await.unwrap(), vec![c.scope.clone()]);
    let issued = op
        .issue_token(&TokenSpec {
            tenant: Some(acme.clone()),
            role: Some(Role::Owner),
            description: "client test".into(),
            ..TokenSpec::default()
        })
        .await
        .unwrap();
    assert!(issued.token.expose().starts_with(b"smcpt_"));
    let owner = client(&s.addr, &issued.token, 3).await;

    // Secrets.
    let path = SecretPath::parse("tenant/acme/db/password").unwrap();
    let value: Vec<u8> = (0..=255u8).collect();
    assert_eq!(
        owner
            .put(&path, &Secret::new(value.clone()), Some(0))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        owner.put(&path, &Secret::from("two"), None).await.unwrap(),
        2
    );
    let e = owner
        .put(&path, &Secret::from("stale"), Some(1))
        .await
        .unwrap_err();
    assert_eq!(code(&e), tonic::Code::FailedPrecondition);
    let got = owner.get(&path, Some(1)).await.unwrap();
    assert_eq!((got.version, got.value.expose()), (1, value.as_slice()));
    assert_eq!(owner.get(&path, None).await.unwrap().value.expose(), b"two");
    owner
        .put(
            &SecretPath::parse("tenant/acme/db/user").unwrap(),
            &Secret::from("u"),
            None,
        )
        .await
        .unwrap();
    let prefix = ListPrefix::parse("tenant/acme/db/").unwrap();
    let page = owner.list(&prefix, None, 1).await.unwrap();
    assert_eq!(page.paths, vec![path.clone()]);
    let page2 = owner.list(&prefix, page.next.as_deref(), 10).await.unwrap();
    assert_eq!(page2.paths.len(), 1);
    assert_eq!(page2.next, None);

    assert_eq!(owner.delete(&path, &[]).await.unwrap(), vec![2]);
    let e = owner.get(&path, None).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::NotFound);
    assert_eq!(
        e.to_string(),
        "secret `tenant/acme/db/password` version 2 is deleted (Some requested entity was not found)"
    );
    assert_eq!(owner.undelete(&path, &[2]).await.unwrap(), vec![2]);
    assert_eq!(owner.destroy(&path, &[1]).await.unwrap(), vec![1]);
    let md = owner
        .update_metadata(
            &path,
            &MetadataUpdate {
                max_versions: Some(5),
                custom: Some([("owner".to_owned(), "team".to_owned())].into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(md.max_versions, 5);
    assert_eq!(owner.metadata(&path).await.unwrap(), md);
    assert_eq!(md.current_version, 2);
    assert!(md.versions[0].destroyed);

    // Watch sees a change made after it started.
    let mut watch = owner
        .watch(&ListPrefix::parse("tenant/acme/").unwrap())
        .await
        .unwrap();
    owner
        .put(&path, &Secret::from("three"), None)
        .await
        .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("a change within 10 s")
        .unwrap()
        .unwrap();
    assert_eq!(change.operation, "put");
    assert_eq!(change.path.as_ref(), Some(&path));
    assert_eq!(change.version, Some(3));
    drop(watch);

    // Scope status, keys, limits.
    let st = op.scope_status(&acme).await.unwrap();
    assert_eq!(st.secrets, 2);
    let (v, moved) = op.rotate_key(&acme, true).await.unwrap();
    assert_eq!(v, 2);
    assert!(moved >= 1);
    let l = op
        .set_limits(
            &acme,
            &LimitChange {
                plan: Some("pro".into()),
                max_secrets: Some(77),
                ..LimitChange::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((l.plan.as_str(), l.max_secrets), ("pro", 77));
    assert_eq!(op.limits(&acme).await.unwrap(), l);

    // Tokens: listed without the token, revoked at once.
    let viewer = op
        .issue_token(&TokenSpec {
            tenant: Some(acme.clone()),
            role: Some(Role::Viewer),
            ..TokenSpec::default()
        })
        .await
        .unwrap();
    let tokens = owner.list_tokens(Some(&acme)).await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(
        tokens
            .iter()
            .any(|t| t.id == viewer.id && t.role == "viewer")
    );
    let as_viewer = client(&s.addr, &viewer.token, 3).await;
    as_viewer.ping().await.unwrap();
    let e = as_viewer
        .put(&path, &Secret::from("no"), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), tonic::Code::PermissionDenied);
    op.revoke_token(&viewer.id).await.unwrap();
    let e = as_viewer.ping().await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::Unauthenticated);

    // System.
    let (sealed, version) = op.status().await.unwrap();
    assert!(!sealed);
    assert!(!version.is_empty());
    let n = op.verify_audit().await.unwrap().unwrap();
    assert!(n > 10, "{n}");
    let tail = op.audit_tail(3).await.unwrap();
    assert_eq!(tail.len(), 3);
    assert!(tail[0].seq < tail[2].seq);
    let e = owner.audit_tail(3).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::PermissionDenied);

    // No token: Status only.
    let anon = Client::connect(&s.addr, ClientOptions::default())
        .await
        .unwrap();
    assert!(!anon.status().await.unwrap().0);
    assert_eq!(
        code(&anon.ping().await.unwrap_err()),
        tonic::Code::Unauthenticated
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_is_retried_only_for_calls_safe_to_repeat() {
    let s = start().await;
    let op = client(&s.addr, &s.operator, 5).await;
    let acme = Slug::parse("acme").unwrap();
    op.create_scope(&acme, ScopeKind::Enterprise).await.unwrap();
    let owner = op
        .issue_token(&TokenSpec {
            tenant: Some(acme.clone()),
            role: Some(Role::Owner),
            ..TokenSpec::default()
        })
        .await
        .unwrap();
    let owner = client(&s.addr, &owner.token, 5).await;
    op.seal().await.unwrap();
    assert!(op.status().await.unwrap().0);
    let path = SecretPath::parse("tenant/acme/x").unwrap();

    // Retried 5 times: 50 + 100 + 200 + 400 + 800 ms of pauses at least.
    let t = Instant::now();
    let e = owner.get(&path, None).await.unwrap_err();
    let retried = t.elapsed();
    assert_eq!(code(&e), tonic::Code::Unavailable);
    assert_eq!(
        e.to_string(),
        "the vault is sealed (The service is currently unavailable)"
    );
    assert!(retried >= Duration::from_millis(1550), "{retried:?}");

    // Not retried: puts (with or without check-and-set), a delete of the
    // current version, a token issue, a rotation.
    let t = Instant::now();
    for cas in [None, Some(0)] {
        let e = owner.put(&path, &Secret::from("v"), cas).await.unwrap_err();
        assert_eq!(code(&e), tonic::Code::Unavailable);
    }
    let e = owner.delete(&path, &[]).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::Unavailable);
    let e = op.issue_token(&TokenSpec::default()).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::Unavailable);
    let e = op.rotate_key(&acme, false).await.unwrap_err();
    assert_eq!(code(&e), tonic::Code::Unavailable);
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_is_retried_until_the_server_is_up() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let t = Instant::now();
    let e = Client::connect(
        &addr.to_string(),
        ClientOptions {
            retries: 2,
            ..ClientOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_server_is_a_transport_error() {
    let s = start().await;
    let op = client(&s.addr, &s.operator, 1).await;
    op.ping().await.unwrap();
    s.stop().await;
    let e = op.ping().await.unwrap_err();
    assert!(matches!(e, Error::Transport(_)), "{e:?}");
}
