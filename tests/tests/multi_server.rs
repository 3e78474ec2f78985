//! Several stateless `secret-mcp serve` processes on one PostgreSQL
//! database (a throwaway cluster started by the test), as a deployment
//! behind a gRPC load balancer runs them:
//!
//! - a write through one server is read through the others;
//! - concurrent check-and-set writers spread over the servers: exactly one
//!   winner per version, versions contiguous, no version handed out twice;
//! - a tenant key rotated (and the tenant re-encrypted) through one server
//!   is used by the others, for old versions and new writes;
//! - a token revoked through one server is refused at once by the others
//!   (their token caches are invalidated by the database's change marker);
//! - a Watch on one server sees changes made through another;
//! - a server killed (SIGKILL) with writes in flight loses nothing that
//!   either server acknowledged, and the survivor serves on;
//! - a server whose database is gone answers UNAVAILABLE.
//!
//! The crash suite (`crash.rs`) also runs on PostgreSQL: kills and restarts
//! of one server, checked for partial and unaudited writes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use secret_mcp_grpc::Client;
use tenant_vault::{ListPrefix, Secret, Slug};
use tenant_vault_tests::process::{CliEnv, ServerProc, code, path};
use tokio::sync::Barrier;

const SERVERS: usize = 3;

/// A vault initialized on a fresh database, with tenant `acme` and three
/// servers on it.
struct Fleet {
    env: CliEnv,
    servers: Vec<ServerProc>,
    owner: String,
    operator: String,
}

impl Fleet {
    fn start() -> Fleet {
        let url = pg_harness::PgCluster::shared().fresh_database();
        let env = CliEnv::new(Some(url));
        env.init_with_key_file();
        env.ok(&["tenant", "create", "acme"]);
        env.ok(&["tenant", "limits", "acme", "--rate", "1000000"]);
        let owner = env
            .ok(&["token", "issue", "--tenant", "acme", "--role", "owner"])
            .trim()
            .to_owned();
        let operator = env.ok(&["token", "issue", "--operator"]).trim().to_owned();
        let servers = (0..SERVERS).map(|i| env.serve(&i.to_string())).collect();
        Fleet {
            env,
            servers,
            owner,
            operator,
        }
    }

    async fn clients(&self, token: &str) -> Vec<Client> {
        let mut out = Vec::new();
        for s in &self.servers {
            out.push(s.client(token).await);
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_on_one_database_share_writes_keys_tokens_and_watches() {
    let fleet = Fleet::start();
    let c = fleet.clients(&fleet.owner).await;
    let ops = fleet.clients(&fleet.operator).await;

    // A write through each server is read through every other.
    for (i, writer) in c.iter().enumerate() {
        let p = path(&format!("tenant/acme/from-{i}"));
        let v = writer
            .put(&p, &Secret::from(format!("value {i}")), None)
            .await
            .unwrap();
        assert_eq!(v, 1);
        for reader in &c {
            let got = reader.get(&p, None).await.unwrap();
            assert_eq!(got.version, 1);
            assert_eq!(got.value.expose(), format!("value {i}").as_bytes());
        }
    }

    // A Watch on server 2 sees a change made through server 0.
    let mut watch = c[2]
        .watch(&ListPrefix::parse("tenant/acme/").unwrap())
        .await
        .unwrap();
    let watched = path("tenant/acme/watched");
    c[0].put(&watched, &Secret::from("w"), None).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ch = watch.next().await.expect("the stream is open").unwrap();
            if ch.path.as_ref() == Some(&watched) {
                return ch;
            }
        }
    })
    .await
    .expect("the watch on another server saw the put within 10 s");
    assert_eq!(change.operation, "put");
    assert_eq!(change.version, Some(1));

    // The tenant key rotated and the tenant re-encrypted through server 1:
    // servers 0 and 2 (whose caches hold key 1) read every old version and
    // write new ones that server 1 reads.
    let acme = Slug::parse("acme").unwrap();
    let (key_version, moved) = ops[1].rotate_key(&acme, true).await.unwrap();
    assert_eq!(key_version, 2);
    assert!(moved >= 4, "the versions written so far were re-encrypted");
    for s in [0, 2] {
        let status = ops[s].scope_status(&acme).await.unwrap();
        assert_eq!(status.scope.key_version, 2, "server {s}");
        for i in 0..SERVERS {
            let got = c[s]
                .get(&path(&format!("tenant/acme/from-{i}")), None)
                .await
                .unwrap();
            assert_eq!(got.value.expose(), format!("value {i}").as_bytes());
        }
        let p = path(&format!("tenant/acme/after-rotation-{s}"));
        c[s].put(&p, &Secret::from("new"), None).await.unwrap();
        assert_eq!(c[1].get(&p, None).await.unwrap().value.expose(), b"new");
    }

    // A token used (and cached) on servers 0 and 2, revoked through server
    // 1, is refused by both at once.
    let issued = fleet.env.ok(&[
        "token",
        "issue",
        "--tenant",
        "acme",
        "--role",
        "user",
        "--description",
        "to revoke",
    ]);
    let user_token = issued.trim().to_owned();
    let users = fleet.clients(&user_token).await;
    for s in [0, 2] {
        users[s]
            .get(&path("tenant/acme/from-0"), None)
            .await
            .unwrap();
    }
    let id = ops[1]
        .list_tokens(Some(&acme))
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.description == "to revoke")
        .expect("the token is listed")
        .id;
    c[1].revoke_token(&id).await.unwrap();
    for s in [0, 2] {
        let e = users[s]
            .get(&path("tenant/acme/from-0"), None)
            .await
            .unwrap_err();
        assert_eq!(
            code(&e),
            Some(tonic::Code::Unauthenticated),
            "server {s}: {e}"
        );
    }

    // Every server's audit records went into one chain, which verifies.
    assert!(ops[0].verify_audit().await.unwrap().is_ok());
}

/// Writers on every server race check-and-set puts on one path: each round
/// has exactly one winner, and the versions are 2, 3, 4, ... (after the
/// first, written before the race) with no gap and no version handed out
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_set_races_across_servers_have_one_winner_per_version() {
    const WRITERS_PER_SERVER: usize = 2;
    const ROUNDS: u64 = 25;
    let fleet = Fleet::start();
    let hot = path("tenant/acme/hot");
    fleet.env.ok(&["put", &hot.to_string(), "--value", "first"]);
    fleet
        .env
        .ok(&["metadata", &hot.to_string(), "--max-versions", "100"]);
    let writers = WRITERS_PER_SERVER * SERVERS;
    let barrier = Arc::new(Barrier::new(writers));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = fleet.servers[w % SERVERS].client(&fleet.owner).await;
        let barrier = barrier.clone();
        let hot = hot.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for round in 0..ROUNDS {
                barrier.wait().await;
                let value = Secret::from(format!("writer {w} round {round}"));
                match client.put(&hot, &value, Some(round + 1)).await {
                    Ok(v) => {
                        assert_eq!(v, round + 2, "a check-and-set on {} wrote {v}", round + 1);
                        won.push(v);
                    }
                    Err(e) => assert_eq!(
                        code(&e),
                        Some(tonic::Code::FailedPrecondition),
                        "writer {w} round {round}: {e}"
                    ),
                }
                barrier.wait().await;
            }
            (w, won)
        }));
    }
    let mut winners = vec![Vec::new(); ROUNDS as usize];
    for t in tasks {
        let (w, won) = t.await.unwrap();
        for v in won {
            winners[(v - 2) as usize].push(w);
        }
    }
    for (i, w) in winners.iter().enumerate() {
        assert_eq!(w.len(), 1, "version {}: winners {w:?}", i + 2);
    }
    // What is stored agrees, read through every server.
    for s in &fleet.servers {
        let c = s.client(&fleet.owner).await;
        let meta = c.metadata(&hot).await.unwrap();
        assert_eq!(meta.current_version, ROUNDS + 1);
        let versions: BTreeSet<u64> = meta.versions.iter().map(|v| v.version).collect();
        assert_eq!(versions, (1..=ROUNDS + 1).collect::<BTreeSet<_>>());
        for v in 2..=ROUNDS + 1 {
            let got = c.get(&hot, Some(v)).await.unwrap();
            let w = winners[(v - 2) as usize][0];
            assert_eq!(
                got.value.expose(),
                format!("writer {w} round {}", v - 2).as_bytes()
            );
        }
    }
}

/// A server whose database is gone answers UNAVAILABLE (what clients and
/// load balancers retry elsewhere), not INTERNAL, and names no password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_database_is_gone_answers_unavailable() {
    let cluster = pg_harness::PgCluster::start();
    let env = CliEnv::new(Some(cluster.fresh_database()));
    env.init_with_key_file();
    env.ok(&["tenant", "create", "acme"]);
    let owner = env
        .ok(&["token", "issue", "--tenant", "acme", "--role", "owner"])
        .trim()
        .to_owned();
    let server = env.serve("0");
    let c = server.client(&owner).await;
    let p = path("tenant/acme/db");
    c.put(&p, &Secret::from("v"), None).await.unwrap();
    drop(cluster);
    for _ in 0..2 {
        let e = c.get(&p, None).await.unwrap_err();
        assert_eq!(code(&e), Some(tonic::Code::Unavailable), "{e}");
        assert!(e.to_string().contains("storage unavailable"), "{e}");
    }
}

/// Writers on two servers; one server is killed (SIGKILL) while writes are
/// in flight. Every write acknowledged by either server is then read back,
/// at its version and with its value, through the survivor, which goes on
/// serving; the shared audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_write_loses_nothing_acknowledged() {
    let mut fleet = Fleet::start();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let client = fleet.servers[w % 2].client(&fleet.owner).await;
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let p = path(&format!("tenant/acme/w{w}/{n}"));
                let value = format!("writer {w} write {n}");
                if let Ok(v) = client.put(&p, &Secret::from(value.clone()), None).await {
                    acked.push((p, v, value));
                }
                n += 1;
            }
            acked
        }));
    }
    // Let writes through both servers be acknowledged, then kill server 0
    // with writes in flight.
    tokio::time::sleep(Duration::from_millis(700)).await;
    fleet.servers[0].kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(
        acked.len() > 20,
        "writes were acknowledged: {}",
        acked.len()
    );

    let survivor = fleet.servers[1].client(&fleet.owner).await;
    for (p, v, value) in &acked {
        let got = survivor.get(p, Some(*v)).await.unwrap();
        assert_eq!(got.value.expose(), value.as_bytes(), "{p} version {v}");
    }
    let after = path("tenant/acme/after-the-kill");
    survivor
        .put(&after, &Secret::from("x"), None)
        .await
        .unwrap();
    let op = fleet.servers[1].client(&fleet.operator).await;
    assert!(op.verify_audit().await.unwrap().is_ok());
    println!(
        "multi-server kill: {} acknowledged writes read back through the survivor",
        acked.len()
    );
}
