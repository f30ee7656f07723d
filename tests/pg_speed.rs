//! The PostgreSQL index's speed, checked by its structure rather than by the clock
//! (`benches/scale.rs` measures the clock): a registration is one round trip, a search
//! counts its total from the files alone, and a burst of registrations leaves neither
//! stale statistics nor a trigram pending list for the searches after it to scan.

mod pg;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use napster::index::{NameMatch, PgStore, Query, Registration, Store};
use napster::protocol::{FileEntry, Fingerprint};

/// Peer `p` sharing `files` files whose names carry a tag of their own.
fn registration(p: u32, files: u32) -> Registration {
    Registration {
        token: format!("{p:032x}"),
        fingerprint: Fingerprint::of_public_key(&p.to_be_bytes()),
        session: u64::from(p),
        addr: SocketAddr::from(([127, 0, 0, 1], 5000)),
        reachable: true,
        files: (0..files)
            .map(|k| FileEntry {
                name: format!("song {p:05}-{k:03} of the summer.mp3"),
                size: 1000 + u64::from(k),
                sha256: format!("{:064x}", u64::from(p) * 1000 + u64::from(k)),
                chunks: "c".repeat(64),
            })
            .collect(),
    }
}

/// Poll `condition` every 50 ms until it holds; panic naming `what` after `within`.
fn wait_for(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Statements the server logged (`log_statement = all`): the simple ones (`BEGIN`,
/// `COMMIT`) and the executions of prepared ones.
fn statements(pg: &pg::Postgres) -> usize {
    let log = pg.log();
    log.matches("LOG:  statement:").count() + log.matches("LOG:  execute").count()
}

/// Each statement is a round trip from the index server to the database, and under load
/// a registration's six (BEGIN, four statements, COMMIT) cost more than its rows.
#[test]
fn a_registration_is_one_round_trip() {
    let pg = pg::Postgres::start_with(&["log_statement=all"]);
    let url = pg.fresh_database();
    smol::block_on(async {
        let store = PgStore::connect(&url).await.unwrap();
        store.register(registration(1, 3)).await.unwrap();
        let before = statements(&pg);
        let id = store.register(registration(2, 3)).await.unwrap();
        assert_eq!(statements(&pg) - before, 1, "{}", pg.log());
        // And it did all a registration does.
        let query = Query::pattern("00002-001");
        let (hits, _) = store.search(&query, 10).await.unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].peer_id, id);
        let peers = store.peers().await.unwrap();
        let peer = peers.iter().find(|p| p.peer_id == id).unwrap();
        assert_eq!((peer.files, peer.bytes), (3, 3003));
    });
}

/// A total is counted from the files alone (only live peers have files), and a page is
/// cut from the files before its rows are joined to their peers.
#[test]
fn searches_join_peers_only_for_the_page() {
    let pg = pg::Postgres::start();
    let name = pg.fresh_database_name();
    smol::block_on(async {
        let store = PgStore::connect(&pg.url(&name)).await.unwrap();
        for p in 0..300 {
            store.register(registration(p, 10)).await.unwrap();
        }
        pg.sql(&name, "ANALYZE");
        for query in [
            Query::pattern("00123-004"),
            Query::pattern("summer"),
            Query::by(NameMatch::Exact("song 00007-001 of the summer.mp3".into())),
        ] {
            let plans = store.explain(&query, 100, 100_000).await.unwrap();
            let (search, count) = plans.split_once("\n\n").unwrap();
            assert!(!count.contains("peers"), "the count joins peers:\n{count}");
            // The page's limit sits below the join, inside the subquery on files.
            let join = search.find("Join").or(search.find("Nested Loop")).unwrap();
            let limit = search.rfind("Limit").unwrap();
            assert!(limit > join, "the join runs before the limit:\n{search}");
        }
    });
}

/// After a burst of registrations the server refreshes the statistics and merges the
/// trigram index's pending list, which every substring search would otherwise scan.
#[test]
fn a_burst_of_registrations_leaves_no_pending_list() {
    let pg = pg::Postgres::start();
    let name = pg.fresh_database_name();
    pg.sql(&name, "CREATE EXTENSION pgstattuple");
    let pending = || {
        pg.query(
            &name,
            "SELECT pending_pages FROM pgstatginindex('files_lower_name_trgm')",
        )
        .parse::<u64>()
        .unwrap()
    };
    smol::block_on(async {
        let store = PgStore::connect(&pg.url(&name))
            .await
            .unwrap()
            .settle_every(1000);
        // Exactly the rows after which the server settles the tables.
        for p in 0..20 {
            store.register(registration(p, 50)).await.unwrap();
        }
    });
    wait_for(
        "the pending list to be merged",
        Duration::from_secs(30),
        || pending() == 0,
    );
    let analyzed = pg.query(
        &name,
        "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('files', 'peers') \
         AND last_analyze IS NOT NULL",
    );
    assert_eq!(analyzed, "2");
}
