//! The seed's walk-through, in-process: an index, two peers whose folders overlap, and a
//! downloader, all on port 0.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{share_folder, sharing_settings, start_index};
use napster::Error;
use napster::client::IndexClient;
use napster::download::{self, Cancel};
use napster::index;
use napster::peer::SharingSettings;
use napster::protocol::{Hit, Limits, PeerRef};

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    dir
}

/// How these tests' peers share: up to 16 uploads at once, a 30 s session TTL.
fn peer_settings() -> SharingSettings {
    sharing_settings(16, Duration::from_secs(30))
}

async fn get(hit: &Hit, into: &Path) -> napster::Result<download::Downloaded> {
    download::download(
        hit,
        into,
        Limits::default(),
        Cancel::default(),
        Arc::new(|_| {}),
    )
    .await
}

/// Poll `condition` until it holds or a generous deadline passes.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

#[test]
fn seed_walk_through_with_two_overlapping_peers() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let one = folder(&[("1.txt", "one"), ("6.txt", "six, the shared one")]);
        let two = folder(&[("6.txt", "six, the shared one"), ("7.txt", "seven")]);
        let peer1 = share_folder(one.path(), index, &peer_settings()).await;
        let peer2 = share_folder(two.path(), index, &peer_settings()).await;
        let (id1, id2) = (peer1.state().peer_id, peer2.state().peer_id);
        assert_ne!(id1, id2);

        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();
        let (hits, truncated) = client.search("6.txt").await.unwrap();
        assert!(!truncated);
        let mut ids: Vec<u64> = hits.iter().map(|h| h.peer_id).collect();
        ids.sort();
        assert_eq!(ids, vec![id1.min(id2), id1.max(id2)]);
        for hit in &hits {
            assert_eq!(hit.addr.ip().to_string(), "127.0.0.1");
            assert_eq!(hit.file.size, 19);
        }
        let (wild, _) = client.search("*.TXT").await.unwrap();
        assert_eq!(wild.len(), 4);

        // Get from each peer by ID; both verify.
        for (peer, sharing) in [(id1, &peer1), (id2, &peer2)] {
            let into = tempfile::tempdir().unwrap();
            let hit = hits.iter().find(|h| h.peer_id == peer).unwrap();
            assert_eq!(hit.addr, sharing.addr);
            let done = get(hit, into.path()).await.unwrap();
            assert_eq!(done.path, into.path().join("6.txt"));
            assert_eq!(std::fs::read(&done.path).unwrap(), b"six, the shared one");
            assert!(!done.already_there);
        }
    });
}

#[test]
fn unknown_file_and_unknown_peer_are_clear_errors() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let dir = folder(&[("6.txt", "six")]);
        let peer = share_folder(dir.path(), index, &peer_settings()).await;
        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();

        let hits = client.lookup("nope.txt").await.unwrap();
        let err = download::sources("nope.txt", None, hits)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no peer shares \"nope.txt\""), "{err}");

        let hits = client.lookup("6.txt").await.unwrap();
        let missing = peer.state().peer_id + 100;
        let err = download::sources("6.txt", Some(&PeerRef::Id(missing)), hits.clone())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("peer {missing} does not share")),
            "{err}"
        );
        assert_eq!(download::sources("6.txt", None, hits).unwrap().len(), 1);
    });
}

#[test]
fn different_contents_under_one_name_ask_which_peer() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let a = folder(&[("song.mp3", "version a")]);
        let b = folder(&[("song.mp3", "version b")]);
        let _pa = share_folder(a.path(), index, &peer_settings()).await;
        let _pb = share_folder(b.path(), index, &peer_settings()).await;
        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();
        let hits = client.lookup("song.mp3").await.unwrap();
        let err = download::sources("song.mp3", None, hits.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("different contents"), "{err}");
        assert!(err.contains("get song.mp3 <peer>"), "{err}");
        // `link` hits the same ambiguity: the message says how to pick one for it too.
        assert!(err.contains("link song.mp3 <peer>"), "{err}");
        // A word too short for a fingerprint prefix says so.
        let err = client
            .find_peer(&PeerRef::Word("J5T".into()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs at least 4 characters"), "{err}");
        assert_eq!(
            download::sources("song.mp3", Some(&PeerRef::Id(hits[1].peer_id)), hits)
                .unwrap()
                .len(),
            1
        );
    });
}

#[test]
fn file_changed_after_registering_is_never_kept() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let dir = folder(&[("same-size.txt", "original!"), ("grown.txt", "short")]);
        let _peer = share_folder(dir.path(), index, &peer_settings()).await;
        std::fs::write(dir.path().join("same-size.txt"), "tampered!").unwrap();
        std::fs::write(dir.path().join("grown.txt"), "much longer now").unwrap();
        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();
        let into = tempfile::tempdir().unwrap();

        let hit = &client.lookup("same-size.txt").await.unwrap()[0];
        match get(hit, into.path()).await {
            Err(Error::ChecksumMismatch {
                expected, outcome, ..
            }) => {
                assert_eq!(expected, hit.file.sha256);
                assert!(outcome.contains("all 1 chunks were corrupt"), "{outcome}");
            }
            other => panic!("expected a checksum mismatch, got {other:?}"),
        }
        let hit = &client.lookup("grown.txt").await.unwrap()[0];
        let err = get(hit, into.path()).await.unwrap_err().to_string();
        assert!(err.contains("changed after it was registered"), "{err}");

        // Nothing under a final name; corrupt chunks are forgotten, not kept as good.
        let left: Vec<String> = std::fs::read_dir(into.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(left.iter().all(|n| n.starts_with('.')), "{left:?}");
        assert!(!into.path().join("same-size.txt").exists());
        assert!(!into.path().join("grown.txt").exists());
    });
}

#[test]
fn existing_identical_file_is_kept_and_different_one_is_not_overwritten() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let dir = folder(&[("a.txt", "peer's contents")]);
        let _peer = share_folder(dir.path(), index, &peer_settings()).await;
        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();
        let hit = client.lookup("a.txt").await.unwrap().remove(0);
        let into = tempfile::tempdir().unwrap();
        std::fs::write(into.path().join("a.txt"), "my own different file").unwrap();

        let first = get(&hit, into.path()).await.unwrap();
        assert_eq!(first.path, into.path().join("a (1).txt"));
        assert_eq!(
            std::fs::read_to_string(into.path().join("a.txt")).unwrap(),
            "my own different file"
        );
        let second = get(&hit, into.path()).await.unwrap();
        assert!(second.already_there);
        assert_eq!(second.path, into.path().join("a (1).txt"));
    });
}

#[test]
fn a_peer_that_leaves_leaves_search_results() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let a = folder(&[("shared.txt", "x")]);
        let b = folder(&[("shared.txt", "x")]);
        let pa = share_folder(a.path(), index, &peer_settings()).await;
        let pb = share_folder(b.path(), index, &peer_settings()).await;
        let gone = pa.state().peer_id;
        let stays = pb.state().peer_id;
        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();
        assert_eq!(client.search("shared").await.unwrap().0.len(), 2);
        pa.stop().await;
        // A clean stop withdraws the files before it returns.
        let (hits, _) = client.search("shared").await.unwrap();
        assert_eq!(
            hits.iter().map(|h| h.peer_id).collect::<Vec<_>>(),
            vec![stays]
        );
        let peers = client.peers().await.unwrap();
        assert!(peers.iter().all(|p| p.peer_id != gone));
        drop(pb);
        // Dropping without a clean stop closes the session; the index notices.
        eventually("the dropped peer leaves", async || {
            client.search("shared").await.unwrap().0.is_empty()
        })
        .await;
    });
}
