//! One behaviour, two backends: the same suite runs against the in-memory index and the
//! PostgreSQL one (a throwaway server, a fresh database per case), so that they cannot
//! drift apart.

mod pg;

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use napster::index::PgStore;
use napster::index::{MemoryStore, NameMatch, Query, Registration, Store, StoreError};
use napster::protocol::{FileEntry, Hit};

fn entry(name: &str, size: u64) -> FileEntry {
    FileEntry {
        name: name.into(),
        size,
        sha256: format!("{:02x}{}", size % 256, "a".repeat(62)),
        chunks: "c".repeat(64),
    }
}

fn registration(token: char, session: u64, port: u16, files: &[(&str, u64)]) -> Registration {
    Registration {
        token: token.to_string().repeat(32),
        fingerprint: napster::protocol::Fingerprint::of_public_key(token.to_string().as_bytes()),
        session,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        reachable: true,
        files: files.iter().map(|&(n, s)| entry(n, s)).collect(),
    }
}

fn names(hits: &[Hit]) -> BTreeSet<String> {
    hits.iter().map(|h| h.file.name.clone()).collect()
}

async fn find<S: Store>(store: &S, query: Query) -> BTreeSet<String> {
    names(&store.search(&query, 1000).await.unwrap().0)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn registers_and_searches<S: Store>(store: Arc<S>) {
    let files = [
        ("Blue Moon.mp3", 3_000),
        ("blue river.ogg", 12_000),
        ("red moon.mp3", 500),
        ("x/notes.txt", 10),
    ];
    let id = store
        .register(registration('a', 1, 5000, &files))
        .await
        .unwrap();
    assert_eq!(
        find(&*store, Query::pattern("MOON")).await,
        set(&["Blue Moon.mp3", "red moon.mp3"])
    );
    assert_eq!(
        find(&*store, Query::pattern("b*.mp?")).await,
        set(&["Blue Moon.mp3"])
    );
    assert_eq!(
        find(&*store, Query::pattern("r?d*")).await,
        set(&["red moon.mp3"])
    );
    assert_eq!(
        find(&*store, Query::by(NameMatch::Exact("x/notes.txt".into()))).await,
        set(&["x/notes.txt"])
    );
    assert!(
        find(&*store, Query::by(NameMatch::Exact("X/NOTES.TXT".into())))
            .await
            .is_empty()
    );
    // Characters LIKE would take for wildcards are literal in a substring.
    assert!(find(&*store, Query::pattern("b_ue")).await.is_empty());
    let mut sized = Query::pattern("blue");
    sized.min_size = Some(5_000);
    assert_eq!(find(&*store, sized).await, set(&["blue river.ogg"]));
    let mut small = Query::pattern("moon");
    small.max_size = Some(3_000);
    small.min_size = Some(3_000);
    assert_eq!(find(&*store, small).await, set(&["Blue Moon.mp3"]));
    let mut by_hash = Query::by(NameMatch::Any);
    by_hash.sha256_prefix = Some(format!("{:02x}aa", 500 % 256));
    assert_eq!(find(&*store, by_hash).await, set(&["red moon.mp3"]));
    let (hits, _) = store.search(&Query::pattern("notes"), 10).await.unwrap();
    assert_eq!(hits[0].peer_id, id);
    assert_eq!(hits[0].addr, SocketAddr::from(([127, 0, 0, 1], 5000)));
    assert_eq!(hits[0].file, entry("x/notes.txt", 10));
    let (limited, truncated) = store.search(&Query::pattern("o"), 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    assert!(truncated);
}

async fn browses_and_lists_peers<S: Store>(store: Arc<S>) {
    let a = store
        .register(registration('a', 1, 5001, &[("b.txt", 2), ("a.txt", 1)]))
        .await
        .unwrap();
    let b = store
        .register(registration('b', 2, 5002, &[("c.txt", 3)]))
        .await
        .unwrap();
    let mut browse = Query::by(NameMatch::Any);
    browse.peer = Some(a);
    let (hits, _) = store.search(&browse, 100).await.unwrap();
    let listed: Vec<&str> = hits.iter().map(|h| h.file.name.as_str()).collect();
    assert_eq!(listed, ["a.txt", "b.txt"], "browse lists by name");
    let peers = store.peers().await.unwrap();
    assert_eq!(peers.len(), 2);
    let pa = peers.iter().find(|p| p.peer_id == a).unwrap();
    assert_eq!((pa.files, pa.bytes), (2, 3));
    assert!(peers.iter().any(|p| p.peer_id == b && p.files == 1));
}

async fn changes_files_and_unregisters<S: Store>(store: Arc<S>) {
    let id = store
        .register(registration(
            'a',
            1,
            5000,
            &[("one.txt", 1), ("two.txt", 2)],
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .add_files(id, 1, vec![entry("three.txt", 3), entry("one.txt", 11)])
            .await
            .unwrap(),
        3
    );
    let (hits, _) = store.search(&Query::pattern("one.txt"), 10).await.unwrap();
    assert_eq!(
        hits.len(),
        1,
        "a file added again under its name replaces it"
    );
    assert_eq!(hits[0].file.size, 11);
    assert_eq!(
        store
            .remove_files(id, 1, vec!["two.txt".into(), "absent".into()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        find(&*store, Query::pattern(".txt")).await,
        set(&["one.txt", "three.txt"])
    );
    store.unregister(id, 1).await.unwrap();
    assert!(find(&*store, Query::pattern(".txt")).await.is_empty());
    assert!(store.peers().await.unwrap().is_empty());
    // The same token gets the same Peer ID back.
    let again = store
        .register(registration('a', 2, 5000, &[("one.txt", 1)]))
        .await
        .unwrap();
    assert_eq!(again, id);
}

async fn only_the_owning_session_changes_a_peer<S: Store>(store: Arc<S>) {
    let id = store
        .register(registration('a', 1, 5000, &[("mine.txt", 1)]))
        .await
        .unwrap();
    let other = store
        .register(registration('b', 2, 5001, &[("theirs.txt", 1)]))
        .await
        .unwrap();
    for wrong in [2, 99] {
        let refused = store.remove_files(id, wrong, vec!["mine.txt".into()]).await;
        assert!(matches!(refused, Err(StoreError::NotOwner)), "{refused:?}");
        assert!(
            store
                .add_files(id, wrong, vec![entry("evil.txt", 1)])
                .await
                .is_err()
        );
        assert!(store.touch(id, wrong).await.is_err());
        store.unregister(id, wrong).await.unwrap();
    }
    assert_eq!(
        find(&*store, Query::pattern("mine")).await,
        set(&["mine.txt"])
    );
    // A newer session of the same peer takes over; the old one can no longer act.
    let same = store
        .register(registration(
            'a',
            3,
            5003,
            &[("mine.txt", 1), ("new.txt", 2)],
        ))
        .await
        .unwrap();
    assert_eq!(same, id);
    assert!(
        store
            .add_files(id, 1, vec![entry("late.txt", 1)])
            .await
            .is_err()
    );
    store.unregister(id, 1).await.unwrap();
    assert_eq!(
        find(&*store, Query::pattern(".txt")).await,
        set(&["mine.txt", "new.txt", "theirs.txt"])
    );
    let (hits, _) = store.search(&Query::pattern("new"), 10).await.unwrap();
    assert_eq!(hits[0].addr.port(), 5003);
    assert_ne!(other, id);
    // The peer appears once.
    assert_eq!(store.peers().await.unwrap().len(), 2);
}

async fn silent_peers_expire<S: Store>(store: Arc<S>) {
    let quiet = store
        .register(registration('a', 1, 5000, &[("quiet.txt", 1)]))
        .await
        .unwrap();
    let busy = store
        .register(registration('b', 2, 5001, &[("busy.txt", 1)]))
        .await
        .unwrap();
    assert_eq!(store.expire(Duration::from_secs(60)).await.unwrap(), 0);
    smol::Timer::after(Duration::from_millis(1000)).await;
    store.touch(busy, 2).await.unwrap();
    assert_eq!(store.expire(Duration::from_millis(500)).await.unwrap(), 1);
    assert_eq!(
        find(&*store, Query::pattern(".txt")).await,
        set(&["busy.txt"])
    );
    assert!(
        store.touch(quiet, 1).await.is_err(),
        "an expired session is gone"
    );
    // Expired, it registers again under the same ID.
    let back = store
        .register(registration('a', 3, 5000, &[("quiet.txt", 1)]))
        .await
        .unwrap();
    assert_eq!(back, quiet);
}

async fn counts_stay_right<S: Store>(store: Arc<S>) {
    let counts = |peers: Vec<napster::protocol::PeerInfo>| -> Vec<(u64, u64, u64)> {
        peers
            .iter()
            .map(|p| (p.peer_id, p.files, p.bytes))
            .collect()
    };
    let id = store
        .register(registration('a', 1, 5000, &[("x", 1), ("y", 2)]))
        .await
        .unwrap();
    assert_eq!(counts(store.peers().await.unwrap()), [(id, 2, 3)]);
    store
        .add_files(id, 1, vec![entry("z", 4), entry("x", 10)])
        .await
        .unwrap();
    assert_eq!(counts(store.peers().await.unwrap()), [(id, 3, 16)]);
    store.remove_files(id, 1, vec!["y".into()]).await.unwrap();
    assert_eq!(counts(store.peers().await.unwrap()), [(id, 2, 14)]);
    store
        .register(registration('a', 2, 5000, &[("w", 5)]))
        .await
        .unwrap();
    assert_eq!(counts(store.peers().await.unwrap()), [(id, 1, 5)]);
    assert!(store.is_live(id).await.unwrap());
    store.unregister(id, 2).await.unwrap();
    assert!(store.peers().await.unwrap().is_empty());
    assert!(!store.is_live(id).await.unwrap());
    assert!(!store.is_live(id + 1000).await.unwrap());
}

/// A newer session of a peer is never withdrawn by the old one: not by its late
/// unregister, not by the old session going silent.
async fn an_old_session_never_removes_a_newer_one<S: Store>(store: Arc<S>) {
    let id = store
        .register(registration('a', 1, 5000, &[("kept.txt", 1)]))
        .await
        .unwrap();
    smol::Timer::after(Duration::from_millis(600)).await;
    assert_eq!(
        store
            .register(registration('a', 2, 5000, &[("kept.txt", 1)]))
            .await
            .unwrap(),
        id
    );
    store.unregister(id, 1).await.unwrap();
    assert_eq!(store.expire(Duration::from_millis(500)).await.unwrap(), 0);
    assert_eq!(
        find(&*store, Query::pattern("kept")).await,
        set(&["kept.txt"])
    );
    assert!(store.is_live(id).await.unwrap());
}

/// What the index's capacity limits are checked against, the same on both backends.
async fn usage_is_counted<S: Store>(store: Arc<S>) {
    use napster::index::Usage;
    let here: std::net::IpAddr = [127, 0, 0, 1].into();
    let there: std::net::IpAddr = [127, 0, 0, 2].into();
    let a = "a".repeat(32);
    let id = store
        .register(registration('a', 1, 5000, &[("x", 1), ("yy", 2)]))
        .await
        .unwrap();
    store
        .register(registration('b', 2, 5001, &[("zzz", 1)]))
        .await
        .unwrap();
    let usage = store.usage(here, Some(&a)).await.unwrap();
    let expected = Usage {
        files: 3,
        name_bytes: 6,
        files_from: 3,
        own_files: 2,
        own_name_bytes: 3,
    };
    assert_eq!(usage, expected);
    store.remove_files(id, 1, vec!["x".into()]).await.unwrap();
    let usage = store.usage(there, None).await.unwrap();
    let expected = Usage {
        files: 2,
        name_bytes: 5,
        ..Usage::default()
    };
    assert_eq!(usage, expected);
    store.unregister(id, 1).await.unwrap();
    assert_eq!(store.usage(here, Some(&a)).await.unwrap().own_files, 0);
    assert_eq!(store.usage(here, None).await.unwrap().files, 1);
}

type Case<S> = fn(Arc<S>) -> Pin<Box<dyn Future<Output = ()>>>;

/// A peer's ID is its key's own ([`peer_id_of`]): the same on a fresh store (an index
/// restarted, in memory or on a new database) and on every server; hits and peer rows
/// carry the fingerprint it proved.
async fn peer_ids_are_bound_to_keys<S: Store>(store: Arc<S>) {
    let a = registration('a', 1, 5001, &[("a.txt", 1)]);
    let fingerprint = a.fingerprint;
    let id = store.register(a).await.unwrap();
    assert_eq!(id, napster::index::store::peer_id_of(&fingerprint));
    let (hits, _) = store.search(&Query::pattern("a.txt"), 10).await.unwrap();
    assert_eq!(hits[0].fingerprint, fingerprint);
    let peers = store.peers().await.unwrap();
    assert_eq!(peers[0].fingerprint, fingerprint);
    // Gone and back (a restart of the peer): the same ID.
    store.unregister(id, 1).await.unwrap();
    let again = store
        .register(registration('a', 2, 5002, &[("a.txt", 1)]))
        .await
        .unwrap();
    assert_eq!(again, id);
}

/// Nicknames: first come first served regardless of case, kept by the key across its
/// restarts, shown in hits and the peer list, released only by the key itself.
async fn nicknames_are_first_come_and_bound_to_keys<S: Store>(store: Arc<S>) {
    let a = store
        .register(registration('a', 1, 5001, &[("a.txt", 1)]))
        .await
        .unwrap();
    let b = store
        .register(registration('b', 2, 5002, &[("b.txt", 1)]))
        .await
        .unwrap();
    let granted = store.bind_nickname(a, Some("Alice")).await.unwrap();
    assert_eq!(granted.as_deref(), Some("Alice"));
    // Another key asking for the same name, in any case, does not get it.
    assert_eq!(store.bind_nickname(b, Some("alice")).await.unwrap(), None);
    assert_eq!(
        store
            .bind_nickname(b, Some("bob"))
            .await
            .unwrap()
            .as_deref(),
        Some("bob")
    );
    let (hits, _) = store.search(&Query::pattern("a.txt"), 10).await.unwrap();
    assert_eq!(hits[0].nickname.as_deref(), Some("Alice"));
    let peers = store.peers().await.unwrap();
    let nick = |id: u64| {
        peers
            .iter()
            .find(|p| p.peer_id == id)
            .unwrap()
            .nickname
            .clone()
    };
    assert_eq!(nick(a).as_deref(), Some("Alice"));
    assert_eq!(nick(b).as_deref(), Some("bob"));
    // The holder leaves and comes back: the name is still its, and still not b's.
    store.unregister(a, 1).await.unwrap();
    assert_eq!(store.bind_nickname(b, Some("ALICE")).await.unwrap(), None);
    let again = store
        .register(registration('a', 3, 5003, &[("a.txt", 1)]))
        .await
        .unwrap();
    assert_eq!(again, a);
    assert_eq!(
        store
            .bind_nickname(a, Some("alice"))
            .await
            .unwrap()
            .as_deref(),
        Some("alice")
    );
    // Nor may it take a look-alike of it (`aIice`, `A1ICE`): one nickname per
    // skeleton, in both stores.
    for look_alike in ["aIice", "A1ICE", "al1ce"] {
        assert_eq!(
            store.bind_nickname(b, Some(look_alike)).await.unwrap(),
            None,
            "{look_alike} beside alice"
        );
    }
    // The holder gives it up; then another key may take it.
    assert_eq!(store.bind_nickname(a, None).await.unwrap(), None);
    assert_eq!(
        store
            .bind_nickname(b, Some("alice"))
            .await
            .unwrap()
            .as_deref(),
        Some("alice")
    );
}

macro_rules! cases {
    ($store:ty) => {{
        let cases: Vec<(&str, Case<$store>)> = vec![
            ("registers_and_searches", |s| {
                Box::pin(registers_and_searches(s))
            }),
            ("browses_and_lists_peers", |s| {
                Box::pin(browses_and_lists_peers(s))
            }),
            ("changes_files_and_unregisters", |s| {
                Box::pin(changes_files_and_unregisters(s))
            }),
            ("only_the_owning_session_changes_a_peer", |s| {
                Box::pin(only_the_owning_session_changes_a_peer(s))
            }),
            ("silent_peers_expire", |s| Box::pin(silent_peers_expire(s))),
            ("counts_stay_right", |s| Box::pin(counts_stay_right(s))),
            ("usage_is_counted", |s| Box::pin(usage_is_counted(s))),
            ("an_old_session_never_removes_a_newer_one", |s| {
                Box::pin(an_old_session_never_removes_a_newer_one(s))
            }),
            ("peer_ids_are_bound_to_keys", |s| {
                Box::pin(peer_ids_are_bound_to_keys(s))
            }),
            ("nicknames_are_first_come_and_bound_to_keys", |s| {
                Box::pin(nicknames_are_first_come_and_bound_to_keys(s))
            }),
            ("shared_at_is_each_files_own", |s| {
                Box::pin(shared_at_is_each_files_own(s))
            }),
            ("pages_cover_everything_with_true_totals", |s| {
                Box::pin(pages_cover_everything_with_true_totals(s))
            }),
        ];
        cases
    }};
}

/// The shared_at of `name` in `hits`.
fn shared_at(hits: &[Hit], name: &str) -> i64 {
    hits.iter()
        .find(|h| h.file.name == name)
        .unwrap_or_else(|| panic!("{name} not found"))
        .shared_at
}

/// Wait (bounded) until the clock has passed `second`: times are whole seconds.
fn after_second(second: i64) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let now = chrono::Utc::now().timestamp();
        if now > second {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stands still"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// "Shared at" is the file's: when the index first saw that name from that peer. A file
/// added later is later, one that changed takes the time of the change, and one shared
/// again unchanged (a re-registration) keeps its time.
async fn shared_at_is_each_files_own<S: Store>(store: Arc<S>) {
    let id = store
        .register(registration(
            'a',
            1,
            5000,
            &[("first.txt", 1), ("same.txt", 2)],
        ))
        .await
        .unwrap();
    let browse = || {
        let mut q = Query::by(NameMatch::Any);
        q.peer = Some(id);
        q
    };
    let before = store.search(&browse(), 100).await.unwrap().0;
    let first = shared_at(&before, "first.txt");
    assert_eq!(shared_at(&before, "same.txt"), first);
    after_second(first);
    store
        .add_files(id, 1, vec![entry("later.txt", 3), entry("first.txt", 4)])
        .await
        .unwrap();
    let after = store.search(&browse(), 100).await.unwrap().0;
    assert!(shared_at(&after, "later.txt") > first, "{after:?}");
    assert!(
        shared_at(&after, "first.txt") > first,
        "a changed file keeps its old time"
    );
    assert_eq!(shared_at(&after, "same.txt"), first);
    // A new session re-registers: unchanged files keep their time, changed ones don't.
    let later = shared_at(&after, "later.txt");
    after_second(later);
    store
        .register(registration(
            'a',
            2,
            5000,
            &[("same.txt", 2), ("later.txt", 5)],
        ))
        .await
        .unwrap();
    let again = store.search(&browse(), 100).await.unwrap().0;
    assert_eq!(names(&again), set(&["same.txt", "later.txt"]));
    assert_eq!(shared_at(&again, "same.txt"), first);
    assert!(shared_at(&again, "later.txt") > later);
    // Search hits carry the same per-file time.
    let hits = store.search(&Query::pattern("same"), 10).await.unwrap().0;
    assert_eq!(shared_at(&hits, "same.txt"), first);
}

/// Pages from an offset cover every match once, in a stable order, each with the true
/// total; a total beyond the counting bound says "more than".
async fn pages_cover_everything_with_true_totals<S: Store>(store: Arc<S>) {
    let names: Vec<String> = (0..25).map(|i| format!("tune-{i:02}.ogg")).collect();
    let files: Vec<(&str, u64)> = names.iter().map(|n| (n.as_str(), 7)).collect();
    let a = store
        .register(registration('a', 1, 5000, &files))
        .await
        .unwrap();
    store
        .register(registration('b', 2, 5001, &files[..5]))
        .await
        .unwrap();
    for (query, all) in [
        (Query::pattern("tune"), 30),
        (
            {
                let mut q = Query::by(NameMatch::Any);
                q.peer = Some(a);
                q
            },
            25,
        ),
    ] {
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let mut q = query.clone();
            q.offset = offset;
            let page = store.page(&q, 7, 1000).await.unwrap();
            assert_eq!(
                page.total,
                napster::protocol::Total {
                    count: all,
                    more: false
                },
                "{query:?} from {offset}"
            );
            assert_eq!(page.truncated, offset + 7 < all, "{query:?} from {offset}");
            offset += page.hits.len() as u64;
            seen.extend(page.hits.iter().map(|h| (h.peer_id, h.file.name.clone())));
            if !page.truncated {
                break;
            }
        }
        let distinct: BTreeSet<_> = seen.iter().cloned().collect();
        assert_eq!(seen.len(), all as usize, "{query:?}: {seen:?}");
        assert_eq!(distinct.len(), all as usize, "{query:?}: a row came twice");
    }
    // A browse comes by name.
    let mut q = Query::by(NameMatch::Any);
    q.peer = Some(a);
    q.offset = 20;
    let tail = store.page(&q, 100, 1000).await.unwrap();
    let tail: Vec<String> = tail.hits.into_iter().map(|h| h.file.name).collect();
    assert_eq!(tail, names[20..].to_vec());
    // Past the end: nothing, and still the total.
    q.offset = 99;
    let past = store.page(&q, 10, 1000).await.unwrap();
    assert!(past.hits.is_empty() && !past.truncated);
    assert_eq!(past.total.count, 25);
    // Counting stops at the bound.
    let capped = store.page(&Query::pattern("tune"), 5, 12).await.unwrap();
    assert_eq!(capped.hits.len(), 5);
    assert_eq!(
        capped.total,
        napster::protocol::Total {
            count: 12,
            more: true
        }
    );
}

#[test]
fn the_in_memory_index_behaves() {
    for (name, case) in cases!(MemoryStore) {
        eprintln!("memory: {name}");
        smol::block_on(case(Arc::new(MemoryStore::new())));
    }
}

#[test]
fn the_postgresql_index_behaves_the_same() {
    let pg = pg::Postgres::start();
    for (name, case) in cases!(PgStore) {
        eprintln!("postgres: {name}");
        let url = pg.fresh_database();
        smol::block_on(async {
            let store = PgStore::connect(&url).await.unwrap();
            case(Arc::new(store)).await;
        });
    }
}

/// Departed peers' rows are deleted beyond the most recent ones remembered: the tables
/// stay bounded by the live peers however many have come and gone.
#[test]
fn departed_peers_rows_are_reaped() {
    let pg = pg::Postgres::start();
    let url = pg.fresh_database();
    smol::block_on(async {
        let store = PgStore::connect(&url).await.unwrap().remember_departed(10);
        let live = store
            .register(registration('z', 1, 5000, &[("stays.txt", 1)]))
            .await
            .unwrap();
        for n in 0..200u64 {
            let mut departing = registration('a', 100 + n, 5001, &[("gone.txt", 1)]);
            departing.token = format!("{n:032x}");
            let id = store.register(departing).await.unwrap();
            store.unregister(id, 100 + n).await.unwrap();
        }
        store.reap_departed().await.unwrap();
        let (peers, files) = store.row_counts().await.unwrap();
        assert!(peers <= 11, "{peers} peer rows after 200 departures");
        assert_eq!(files, 1);
        assert!(store.is_live(live).await.unwrap());
        assert_eq!(
            find(&store, Query::pattern("stays")).await,
            set(&["stays.txt"])
        );
    });
}

/// Poll `condition` every 20 ms until it holds; panic naming `what` after `within`.
fn wait_for(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// While the database is down a request fails fast, saying so; and after an outage
/// longer than the session TTL, a peer whose connection stayed open is never missing
/// from the results (neither the reaper nor a late message removes it).
#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn a_database_outage_fails_fast_and_live_peers_stay() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use napster::client::IndexClient;
    use napster::index::Settings;
    use napster::protocol::{ErrorCode, Limits};

    let pg = pg::Postgres::start();
    let url = pg.fresh_database();
    let store = Arc::new(smol::block_on(PgStore::connect(&url)).unwrap());
    let listener = smol::Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    let (_trigger, shutdown) = napster::runtime::shutdown_pair();
    let ttl = Duration::from_secs(3);
    let settings = Settings {
        session_ttl: ttl,
        ..Settings::default()
    };
    napster::runtime::spawn(napster::index::run(listener, store, settings, shutdown)).detach();
    let limits = Limits {
        timeout: Duration::from_secs(10),
        ..Limits::default()
    };

    // The peer: registered once, then pinging on its open connection (errors or not)
    // until `quiet`, holding the connection open until `stop`. It goes quiet as the
    // database comes back, so only the server can note it alive before the reaper runs.
    let registered = Arc::new(AtomicBool::new(false));
    let quiet = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let pinger = {
        let (registered, quiet, stop) = (registered.clone(), quiet.clone(), stop.clone());
        std::thread::spawn(move || {
            smol::block_on(async {
                let mut peer = IndexClient::connect(addr, limits).await.unwrap();
                peer.register(5000, &"ab".repeat(16), &[entry("live.txt", 1)])
                    .await
                    .unwrap();
                registered.store(true, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    if !quiet.load(Ordering::SeqCst) {
                        let _ = peer.ping().await;
                    }
                    smol::Timer::after(Duration::from_millis(100)).await;
                }
            })
        })
    };
    wait_for("the peer to register", Duration::from_secs(10), || {
        registered.load(Ordering::SeqCst)
    });
    // A new client each time: a silent client connection is closed after a TTL too.
    let found = || {
        smol::block_on(async {
            let mut client = IndexClient::connect(addr, limits).await?;
            client.search("live").await.map(|(hits, _)| hits.len())
        })
    };
    assert_eq!(found().unwrap(), 1);
    let mut client = smol::block_on(IndexClient::connect(addr, limits)).unwrap();

    pg.pause();
    let asked = std::time::Instant::now();
    match smol::block_on(client.search("live")) {
        Err(napster::Error::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::Internal);
            assert!(message.contains("database unavailable"), "{message}");
        }
        other => panic!("a search while the database is down: {other:?}"),
    }
    let waited = asked.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "failed only after {waited:?}"
    );
    // The outage itself: longer than the session TTL.
    std::thread::sleep(ttl + Duration::from_millis(300));
    quiet.store(true, Ordering::SeqCst);
    pg.resume();

    wait_for(
        "the database to answer again",
        Duration::from_secs(10),
        || found().is_ok(),
    );
    // Through the reaper's next ticks (one a second), every search finds the live peer,
    // whose connection is open and within its TTL.
    let watch = std::time::Instant::now();
    while watch.elapsed() < Duration::from_millis(1300) {
        assert_eq!(
            found().unwrap(),
            1,
            "the live peer vanished {:?} after the database came back",
            watch.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    pinger.join().unwrap();
}
