//! Shares that follow their folders: added, changed, renamed and deleted files reach the
//! index by themselves; the ignore rule; several folders; files still being written wait.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{sharing_settings, start_index};
use napster::client::IndexClient;
use napster::digest::digest_bytes;
use napster::index;
use napster::peer::{Living, Sharing, SharingSettings};
use napster::protocol::{Hit, Limits};

async fn share_with(dir: &Path, index: SocketAddr, living: Living) -> Sharing {
    // As `register` does: through the cache the share keeps using.
    let (share, _) = napster::peer::scan::scan(dir)
        .unwrap()
        .hash_with(&living.cache, &|_| {})
        .unwrap();
    let settings = SharingSettings {
        living,
        ..sharing_settings(4, Duration::from_secs(30))
    };
    Sharing::start(share, &[index], &settings).await.unwrap()
}

fn living(watch: bool, rescan_ms: u64, settle_ms: u64) -> Living {
    Living {
        watch,
        rescan: Duration::from_millis(rescan_ms),
        settle: Duration::from_millis(settle_ms),
        ..Living::default()
    }
}

async fn hits(index: SocketAddr, pattern: &str) -> Vec<Hit> {
    let mut client = IndexClient::connect(index, Limits::default())
        .await
        .unwrap();
    client.search(pattern).await.unwrap().0
}

/// Poll the index until `check` holds for the hits of `pattern`, or fail.
async fn until(index: SocketAddr, pattern: &str, what: &str, check: impl Fn(&[Hit]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = hits(index, pattern).await;
        if check(&found) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never: {what}; last saw {found:?}"
        );
        smol::Timer::after(Duration::from_millis(25)).await;
    }
}

#[test]
fn changes_reach_the_index_by_themselves() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("alpha.txt"), "first version").unwrap();
        // Notifications only: the rescan is far away.
        let _peer = share_with(dir.path(), index, living(true, 600_000, 50)).await;
        until(index, "alpha", "alpha shared", |h| h.len() == 1).await;

        std::fs::write(dir.path().join("beta.txt"), "added later").unwrap();
        until(index, "beta.txt", "an added file appears", |h| h.len() == 1).await;

        std::fs::write(dir.path().join("alpha.txt"), "second version!").unwrap();
        let new_sha = digest_bytes(b"second version!").sha256;
        until(
            index,
            "alpha",
            "a changed file is announced with its new hash",
            |h| h.len() == 1 && h[0].file.sha256 == new_sha && h[0].file.size == 15,
        )
        .await;

        std::fs::rename(dir.path().join("beta.txt"), dir.path().join("gamma.txt")).unwrap();
        until(index, ".txt", "a renamed file moves", |h| {
            h.iter().any(|x| x.file.name == "gamma.txt")
                && h.iter().all(|x| x.file.name != "beta.txt")
        })
        .await;

        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/delta.txt"), "in a subfolder").unwrap();
        until(index, "delta", "a file in a new subfolder appears", |h| {
            h.len() == 1 && h[0].file.name == "sub/delta.txt"
        })
        .await;

        std::fs::remove_file(dir.path().join("alpha.txt")).unwrap();
        until(index, "alpha", "a deleted file leaves", <[Hit]>::is_empty).await;
    });
}

#[test]
fn rescans_catch_what_notifications_miss_and_refresh_forces_one() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let polled = tempfile::tempdir().unwrap();
        std::fs::write(polled.path().join("seed-a.txt"), "a").unwrap();
        let _a = share_with(polled.path(), index, living(false, 200, 0)).await;
        std::fs::write(polled.path().join("polled.txt"), "found by a rescan").unwrap();
        until(index, "polled", "a rescan finds a new file", |h| {
            h.len() == 1
        })
        .await;

        let forced = tempfile::tempdir().unwrap();
        std::fs::write(forced.path().join("seed-b.txt"), "b").unwrap();
        let b = share_with(forced.path(), index, living(false, 600_000, 0)).await;
        std::fs::write(forced.path().join("forced.txt"), "found by refresh").unwrap();
        assert!(
            hits(index, "forced").await.is_empty(),
            "nothing scans this folder by itself"
        );
        let done = b.refresh().await.unwrap();
        assert_eq!(done.changes.upsert.len(), 1);
        assert_eq!(done.stats.hashed_files, 1, "only the new file is read");
        // The session tells the index after refresh returns: wait for it, bounded.
        until(index, "forced", "refresh tells the index", |h| h.len() == 1).await;
    });
}

#[test]
fn the_ignore_rule_and_files_still_being_written() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("keep.txt"), "k").unwrap();
        let peer = share_with(dir.path(), index, living(false, 600_000, 60_000)).await;
        for name in [
            ".hidden.txt",
            "notes.txt~",
            "movie.mkv.part",
            "draft.tmp",
            ".x.napster-part",
        ] {
            std::fs::write(dir.path().join(name), "ignored").unwrap();
        }
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/config.txt"), "ignored").unwrap();
        std::fs::write(dir.path().join("fresh.txt"), "just written").unwrap();
        let done = peer.refresh().await.unwrap();
        // fresh.txt changed less than the settle time ago: not yet.
        assert!(done.changes.is_empty(), "{:?}", done.changes);
        assert_eq!(done.unsettled, 1);
        let names: Vec<String> = hits(index, "txt")
            .await
            .into_iter()
            .map(|h| h.file.name)
            .collect();
        assert_eq!(names, ["keep.txt"]);

        // A shared file being rewritten (or only re-linked, or chmodded) stays announced
        // as it was until it settles: it does not vanish from the index meanwhile.
        let before = hits(index, "keep.txt").await;
        std::fs::write(dir.path().join("keep.txt"), "k, being rewritten").unwrap();
        std::fs::hard_link(dir.path().join("keep.txt"), dir.path().join(".link")).unwrap();
        let done = peer.refresh().await.unwrap();
        assert!(done.changes.is_empty(), "{:?}", done.changes);
        assert_eq!(done.unsettled, 2);
        assert_eq!(hits(index, "keep.txt").await, before);
    });
}

#[test]
fn several_folders_and_unsharing() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let music = tempfile::tempdir().unwrap();
        let films = tempfile::tempdir().unwrap();
        std::fs::write(music.path().join("song.ogg"), "la la").unwrap();
        std::fs::write(music.path().join("other.ogg"), "do re").unwrap();
        std::fs::write(films.path().join("film.mkv"), "frames").unwrap();
        let peer = share_with(music.path(), index, living(false, 600_000, 0)).await;
        let done = peer.share_dir(films.path()).await.unwrap();
        assert_eq!(done.changes.upsert.len(), 1);
        // The session tells the index in the background: wait for it, never race it.
        until(index, "film.mkv", "film.mkv shared", |h| h.len() == 1).await;
        assert!(
            peer.share_dir(films.path()).await.is_err(),
            "already shared"
        );

        let done = peer.unshare("other.ogg").await.unwrap();
        assert_eq!(done.changes.removed, ["other.ogg"]);
        until(index, "other", "other.ogg withdrawn", |h| h.is_empty()).await;
        assert_eq!(hits(index, "song").await.len(), 1);

        let done = peer
            .unshare(&films.path().display().to_string())
            .await
            .unwrap();
        assert_eq!(done.changes.removed, ["film.mkv"]);
        until(index, "film", "film.mkv withdrawn", |h| h.is_empty()).await;
        let err = peer
            .unshare("nothing-like-this")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("neither a shared folder nor a shared file"),
            "{err}"
        );
    });
}
