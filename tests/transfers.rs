//! The transfer engine end to end: several peers at once, a corrupt peer, a dying peer,
//! and resuming a cancelled download.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::process::{Napster, signal};
use common::{noise_words, share_folder, sharing_settings, start_index};
use napster::client::IndexClient;
use napster::download::{self, Cancel, Downloaded};
use napster::download::{Job, Status};
use napster::index;
use napster::limit::RateLimit;
use napster::peer::Sharing;
use napster::protocol::{Hit, Limits};

const MIB: usize = 1 << 20;

/// The peer process that dies logs errors only; its lines are awaited without a limit.
const NAPSTER: Napster = Napster {
    log: "error",
    patience: None,
};

async fn share_bytes(
    index: SocketAddr,
    name: &str,
    contents: &[u8],
) -> (Sharing, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), contents).unwrap();
    let settings = sharing_settings(8, Duration::from_secs(30));
    (share_folder(dir.path(), index, &settings).await, dir)
}

fn job(
    sources: Vec<Hit>,
    dir: &Path,
    cancel: Cancel,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Job {
    Job {
        file: sources[0].file.clone(),
        sources,
        dir: dir.to_owned(),
        limits: Limits::default(),
        cancel,
        bandwidth: Arc::new(RateLimit::new(0)),
        status: Arc::new(Status::default()),
        progress,
        dialer: napster::client::Dialer::direct(Limits::default()),
    }
}

async fn lookup(index: SocketAddr, name: &str) -> Vec<Hit> {
    let mut client = IndexClient::connect(index, Limits::default())
        .await
        .unwrap();
    download::sources(name, None, client.lookup(name).await.unwrap()).unwrap()
}

fn assert_saved(done: &Downloaded, contents: &[u8]) {
    assert!(!done.already_there);
    assert_eq!(std::fs::read(&done.path).unwrap(), contents);
    let leftovers: Vec<_> = std::fs::read_dir(done.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "part files left behind: {leftovers:?}"
    );
}

#[test]
fn chunks_come_from_every_peer_that_has_the_file() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let contents = noise_words(1, 24 * MIB + 12345);
        let mut peers = Vec::new();
        for _ in 0..3 {
            peers.push(share_bytes(index, "album.flac", &contents).await);
        }
        let sources = lookup(index, "album.flac").await;
        assert_eq!(sources.len(), 3);
        let into = tempfile::tempdir().unwrap();
        let done = download::fetch(job(
            sources,
            into.path(),
            Cancel::default(),
            Arc::new(|_| {}),
        ))
        .await
        .unwrap();
        assert_saved(&done, &contents);
        let mut expected: Vec<u64> = peers.iter().map(|(p, _)| p.state().peer_id).collect();
        expected.sort();
        assert_eq!(done.peers, expected, "every peer should have sent chunks");
        assert_eq!(done.refetched, 0, "no chunk failed its check");
    });
}

#[test]
fn a_corrupt_peer_is_dropped_and_its_chunks_fetched_elsewhere() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let contents = noise_words(2, 16 * MIB);
        let (good1, _d1) = share_bytes(index, "movie.mkv", &contents).await;
        let (bad, bad_dir) = share_bytes(index, "movie.mkv", &contents).await;
        let (good2, _d2) = share_bytes(index, "movie.mkv", &contents).await;
        // The bad peer's file rots after it registered: same size, other bytes.
        std::fs::write(
            bad_dir.path().join("movie.mkv"),
            noise_words(99, contents.len()),
        )
        .unwrap();
        let sources = lookup(index, "movie.mkv").await;
        let into = tempfile::tempdir().unwrap();
        let done = download::fetch(job(
            sources,
            into.path(),
            Cancel::default(),
            Arc::new(|_| {}),
        ))
        .await
        .unwrap();
        assert_eq!(std::fs::read(&done.path).unwrap(), contents);
        let bad_id = bad.state().peer_id;
        assert!(!done.peers.contains(&bad_id), "{:?}", done.peers);
        assert!(
            done.peers.contains(&good1.state().peer_id)
                || done.peers.contains(&good2.state().peer_id)
        );
        assert!(
            done.refetched >= MIB as u64,
            "the bad chunk was fetched again: {}",
            done.refetched
        );
    });
}

#[test]
fn a_peer_that_dies_mid_download_hands_its_chunks_to_the_others() {
    let tmp = tempfile::tempdir().unwrap();
    let contents = noise_words(3, 48 * MIB);
    let (index, _stop) = start_index(index::Settings::default());
    // The peer that will die is a separate process, so that it can really be killed.
    let share_dir = tmp.path().join("share");
    std::fs::create_dir(&share_dir).unwrap();
    std::fs::write(share_dir.join("big.iso"), &contents).unwrap();
    let script = format!("connect {index}\nregister {} 0\n", share_dir.display());
    let mut child = NAPSTER.start(tmp.path(), &script);
    child.end_input();
    child.wait_for("registered as peer");
    let pid = child.id();

    smol::block_on(async {
        let (survivor, _dir) = share_bytes(index, "big.iso", &contents).await;
        let sources = lookup(index, "big.iso").await;
        assert_eq!(sources.len(), 2);
        let into = tempfile::tempdir().unwrap();
        let received = Arc::new(AtomicU64::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let progress = {
            let killed = killed.clone();
            Arc::new(move |n: u64| {
                if received.fetch_add(n, Ordering::SeqCst) + n >= 8 << 20
                    && !killed.swap(true, Ordering::SeqCst)
                {
                    let _ = signal(pid, "KILL");
                }
            })
        };
        let done = download::fetch(job(sources, into.path(), Cancel::default(), progress))
            .await
            .unwrap();
        assert!(killed.load(Ordering::SeqCst));
        assert_saved(&done, &contents);
        assert!(done.peers.contains(&survivor.state().peer_id));
    });
}

#[test]
fn a_cancelled_download_resumes_without_fetching_again() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let contents = noise_words(4, 20 * MIB + 7);
        let (_peer, _dir) = share_bytes(index, "talk.ogg", &contents).await;
        let sources = lookup(index, "talk.ogg").await;
        let into = tempfile::tempdir().unwrap();

        let cancel = Cancel::default();
        let received = Arc::new(AtomicU64::new(0));
        let progress = {
            let (cancel, received) = (cancel.clone(), received.clone());
            Arc::new(move |n: u64| {
                if received.fetch_add(n, Ordering::SeqCst) + n >= 6 << 20 {
                    cancel.cancel();
                }
            })
        };
        let first = download::fetch(job(sources.clone(), into.path(), cancel, progress)).await;
        assert!(matches!(first, Err(napster::Error::Cancelled)), "{first:?}");
        assert!(!into.path().join("talk.ogg").exists());

        let fetched = Arc::new(AtomicU64::new(0));
        let progress = {
            let fetched = fetched.clone();
            Arc::new(move |n: u64| {
                fetched.fetch_add(n, Ordering::SeqCst);
            })
        };
        let done = download::fetch(job(sources, into.path(), Cancel::default(), progress))
            .await
            .unwrap();
        assert_saved(&done, &contents);
        assert!(
            done.resumed >= 6 * MIB as u64,
            "resumed only {}",
            done.resumed
        );
        // Progress reports the resumed bytes once, then only what was fetched anew.
        let anew = fetched.load(Ordering::SeqCst) - done.resumed;
        assert_eq!(anew, contents.len() as u64 - done.resumed);
    });
}
