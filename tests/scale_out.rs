//! Two index servers on one PostgreSQL database behave as one index, with real
//! processes and a real (throwaway) PostgreSQL; and the database's failures are clear.

mod common;
mod pg;

use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{Napster, last_word, text};

/// The processes log errors only, and may take 30 s to print an expected line.
const NAPSTER: Napster = Napster {
    log: "error",
    patience: Some(Duration::from_secs(30)),
};

/// Rows of `search` for `pattern` through the index at `index`: (peer id, port).
fn rows(cwd: &Path, index: &str, pattern: &str) -> Vec<(u64, u16)> {
    let out = NAPSTER.run(cwd, &format!("connect {index}\nsearch {pattern}\n"));
    text(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('│') && l.contains(pattern))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('│').split('┆').map(str::trim).collect();
            (cells[0].parse().unwrap(), cells[2].parse().unwrap())
        })
        .collect()
}

fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn two_index_servers_on_one_database_are_one_index() {
    let pg = pg::Postgres::start();
    let url = pg.fresh_database();
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    std::fs::write(
        cwd.join("napster.toml"),
        "[index]\nsession_ttl = 2\n[log]\nlevel = \"error\"\n",
    )
    .unwrap();
    let mut a = NAPSTER.start(cwd, &format!("serve 0 {url}\n"));
    let index_a = last_word(&a.wait_for("listening on"));
    let mut b = NAPSTER.start(cwd, &format!("serve 0 {url}\n"));
    let index_b = last_word(&b.wait_for("listening on"));

    // P1 knows both servers and starts on A; P2 knows only A.
    let one = cwd.join("one");
    std::fs::create_dir(&one).unwrap();
    std::fs::write(one.join("shared-by-one.txt"), "from peer one").unwrap();
    // Each peer its own home (config copied), so its own key file: its own identity.
    let home = |name: &str| {
        let home = cwd.join(name);
        std::fs::create_dir_all(&home).unwrap();
        std::fs::copy(cwd.join("napster.toml"), home.join("napster.toml")).unwrap();
        home
    };
    let mut p1 = NAPSTER.start(
        &home("home1"),
        &format!(
            "connect {index_a} {index_b}\nregister {} 0\n",
            one.display()
        ),
    );
    let registered = p1.wait_for("registered as peer");
    assert!(
        registered.contains(&format!("with the index at {index_a}")),
        "{registered}"
    );
    let two = cwd.join("two");
    std::fs::create_dir(&two).unwrap();
    std::fs::write(two.join("shared-by-two.txt"), "from peer two").unwrap();
    let mut p2 = NAPSTER.start(
        &home("home2"),
        &format!("connect {index_a}\nregister {} 0\n", two.display()),
    );
    p2.wait_for("registered as peer");

    // Registered on A, found through B, downloaded through B.
    let found = rows(cwd, &index_b, "shared-by-one");
    assert_eq!(found.len(), 1, "{found:?}");
    let (p1_id, _) = found[0];
    let out = NAPSTER.run(cwd, &format!("connect {index_b}\nget shared-by-one.txt\n"));
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(cwd.join("downloads/shared-by-one.txt")).unwrap(),
        "from peer one"
    );

    // A dies. P1 moves to B by itself, keeps its Peer ID, and is never listed twice;
    // P2, which knew only A, expires within the TTL, noticed by B.
    a.kill();
    until("P2's files expire", || {
        rows(cwd, &index_b, "shared-by-two").is_empty()
    });
    until("P1 is registered on B", || {
        let out = NAPSTER.run(cwd, &format!("connect {index_b}\npeers\n"));
        text(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('│'))
            .count()
            == 2
    });
    let found = rows(cwd, &index_b, "shared-by-one");
    assert_eq!(
        found,
        vec![(p1_id, found[0].1)],
        "once, under the same Peer ID"
    );
    drop(p1);
    drop(p2);
    drop(b);
}

#[test]
fn database_failures_are_clear() {
    let pg = pg::Postgres::start();
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();

    // Unreachable at start.
    let out = NAPSTER.run(
        cwd,
        "serve 0 postgres://postgres@%2Fnonexistent-napster-socket/db\n",
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: cannot use the database at"),
        "{stderr}"
    );

    // Wrong credentials: a role that does not exist.
    let name = pg.fresh_database_name();
    let wrong = pg.url(&name).replace("postgres@", "nobody@");
    let out = NAPSTER.run(cwd, &format!("serve 0 {wrong}\n"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("role \"nobody\" does not exist"),
        "{stderr}"
    );

    // A schema from a newer napster.
    let url = pg.url(&name);
    let out = NAPSTER.run(cwd, &format!("serve 0 {url}\nquit\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    pg.sql(
        &name,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, '\\x00', 0)",
    );
    let out = NAPSTER.run(cwd, &format!("serve 0 {url}\n"));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("schema version 9999, newer than this napster knows"),
        "{stderr}"
    );

    // Lost mid-run: the server keeps answering, with an error, and recovers by itself.
    let url = pg.fresh_database();
    let mut index = NAPSTER.start(cwd, &format!("serve 0 {url}\n"));
    let addr = last_word(&index.wait_for("listening on"));
    pg.pause();
    let out = NAPSTER.run(cwd, &format!("connect {addr}\nsearch anything\n"));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("error: database unavailable"), "{stderr}");
    assert!(
        !stderr.contains("sqlx") && !stderr.contains("pool"),
        "no raw database text: {stderr}"
    );
    pg.resume();
    until("the index works again", || {
        let out = NAPSTER.run(cwd, &format!("connect {addr}\nsearch anything\n"));
        out.status.success() && text(&out.stdout).contains("no file matches")
    });
}

/// Hits for `pattern` through the index at `index` (a fresh connection each time: a
/// silent client connection is closed after a TTL); an error as its text.
fn hits(index: &str, pattern: &str) -> Result<usize, String> {
    let addr = index.parse().unwrap();
    smol::block_on(async {
        let mut client = napster::client::IndexClient::connect(addr, common::client_limits())
            .await
            .map_err(|e| e.to_string())?;
        let (hits, _) = client.search(pattern).await.map_err(|e| e.to_string())?;
        Ok(hits.len())
    })
}

/// D14 with two servers (E12): three real peers on two servers, the database stopped for
/// longer than the session TTL, then started. The peers' sessions stay connected through
/// the outage (their heartbeats are still answered), so once the database answers every
/// search on either server finds all three, through the time the reapers run again.
#[test]
fn a_database_outage_longer_than_the_ttl_loses_no_live_peer_on_two_servers() {
    const TTL: Duration = Duration::from_secs(2);
    const OUTAGE: Duration = Duration::from_secs(12);
    let pg = pg::Postgres::start();
    let url = pg.fresh_database();
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let config = format!(
        "[index]\nsession_ttl = {}\n[peer]\nport_mapping = false\n[log]\nlevel = \"error\"\n",
        TTL.as_secs()
    );
    std::fs::write(cwd.join("napster.toml"), &config).unwrap();
    let mut a = NAPSTER.start(cwd, &format!("serve 0 {url}\n"));
    let index_a = last_word(&a.wait_for("listening on"));
    let mut b = NAPSTER.start(cwd, &format!("serve 0 {url}\n"));
    let index_b = last_word(&b.wait_for("listening on"));
    // Peers 1 and 2 on A, peer 3 on B; each its own home, so its own key.
    let mut peers = Vec::new();
    for (n, index) in [(1, &index_a), (2, &index_a), (3, &index_b)] {
        let home = cwd.join(format!("home{n}"));
        let share = home.join("share");
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(home.join("napster.toml"), &config).unwrap();
        std::fs::write(share.join(format!("outage-{n}.txt")), format!("peer {n}")).unwrap();
        let mut peer = NAPSTER.start(
            &home,
            &format!("connect {index}\nregister {} 0\n", share.display()),
        );
        peer.wait_for("registered as peer");
        peers.push(peer);
    }
    for index in [&index_a, &index_b] {
        assert_eq!(hits(index, "outage-"), Ok(3));
    }

    pg.pause();
    // The outage itself: well past the TTL, so every session's last sign of life in the
    // database is older than it when the database comes back; and past a peer's longest
    // pause between attempts to register again (10 s), so a peer that lost its session
    // would be away for seconds after the database is back.
    std::thread::sleep(OUTAGE);
    pg.resume();
    until("the database answers again", || {
        hits(&index_a, "outage-").is_ok()
    });
    // Searches every 100 ms on both servers, past the reapers' grace, several TTLs and
    // a peer's longest pause: every one finds all three peers.
    let watch = Instant::now();
    while watch.elapsed() < OUTAGE {
        for index in [&index_a, &index_b] {
            assert_eq!(
                hits(index, "outage-"),
                Ok(3),
                "{:.1} s after the database answered again",
                watch.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(peers);
    drop((a, b));
}
