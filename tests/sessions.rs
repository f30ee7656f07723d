//! Liveness: a peer's files live exactly as long as its session, and a peer whose index
//! restarts registers again by itself.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{share_folder, sharing_settings, start_index_at};
use napster::client::IndexClient;
use napster::index;
use napster::protocol::Limits;

fn settings(ttl: Duration) -> index::Settings {
    index::Settings {
        session_ttl: ttl,
        ..index::Settings::default()
    }
}

/// Poll the index until `pattern` finds `count` files, or fail after a deadline.
async fn wait_for_hits(index: SocketAddr, pattern: &str, count: usize) -> Duration {
    let started = Instant::now();
    loop {
        if let Ok(mut client) = IndexClient::connect(index, Limits::default()).await
            && let Ok((hits, _)) = client.search(pattern).await
            && hits.len() == count
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{pattern:?} never had {count} hits"
        );
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

#[test]
fn peers_register_again_by_themselves_when_the_index_restarts() {
    smol::block_on(async {
        let ttl = Duration::from_secs(30);
        let (addr, trigger, task) = start_index_at(([127, 0, 0, 1], 0).into(), settings(ttl));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("survivor.txt"), "still here").unwrap();
        let peer = share_folder(dir.path(), addr, &sharing_settings(4, ttl)).await;
        wait_for_hits(addr, "survivor", 1).await;

        // The index goes away: everything it knew is lost.
        trigger.trigger();
        task.await.unwrap();
        let (again, _trigger2, _task2) = start_index_at(addr, settings(ttl));
        assert_eq!(again, addr);
        // The session notices the closed connection at once (not at its next heartbeat,
        // 10 s away) and registers again after a short backoff.
        let took = wait_for_hits(addr, "survivor", 1).await;
        assert!(
            took < Duration::from_secs(5),
            "re-registration took {took:?}"
        );
        assert!(peer.state().connected);
    });
}

#[test]
fn a_silent_session_expires_after_the_ttl() {
    smol::block_on(async {
        let ttl = Duration::from_millis(600);
        let (addr, _trigger, _task) = start_index_at(([127, 0, 0, 1], 0).into(), settings(ttl));
        // A raw client registers and then says nothing at all.
        let mut silent = IndexClient::connect(addr, Limits::default()).await.unwrap();
        let file = napster::protocol::FileEntry {
            tags: None,
            name: "ghost.txt".into(),
            size: 1,
            sha256: "a".repeat(64),
            chunks: "b".repeat(64),
        };
        silent
            .register(4242, &"1".repeat(32), &[file])
            .await
            .unwrap();
        wait_for_hits(addr, "ghost", 1).await;
        let gone_after = wait_for_hits(addr, "ghost", 0).await;
        assert!(
            gone_after >= Duration::from_millis(300),
            "expired too early: {gone_after:?}"
        );
    });
}

#[test]
fn a_live_peer_with_heartbeats_outlives_the_ttl() {
    smol::block_on(async {
        // Heartbeats come every third of the TTL: a busy machine has slack.
        let ttl = Duration::from_millis(1000);
        let (addr, _trigger, _task) = start_index_at(([127, 0, 0, 1], 0).into(), settings(ttl));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alive.txt"), "beating").unwrap();
        let peer = share_folder(dir.path(), addr, &sharing_settings(4, ttl)).await;
        let id = peer.state().peer_id;
        // Several TTLs later the files are still there, under the same Peer ID.
        smol::Timer::after(ttl * 3).await;
        let mut client = IndexClient::connect(addr, Limits::default()).await.unwrap();
        let (hits, _) = client.search("alive").await.unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].peer_id, id);
        assert_eq!(peer.state().peer_id, id);
    });
}
