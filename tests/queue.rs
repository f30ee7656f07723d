//! The download queue and the ways of naming files to get, through the real binary:
//! a queue that outlives a restart without fetching again what arrived, a downloader's
//! place in an uploader's line as both sides see it, several names, wildcards, folders,
//! hashes and links, and a folder download that cannot be steered outside the
//! downloads folder.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::process::{Napster, Running, last_word, text};
use common::{noise_words, share_folder, sharing_settings, start_index, wait_until, write_files};
use napster::download::queue::file::{Queued, Stage};
use napster::limit::RateLimit;

const MIB: usize = 1 << 20;

const NAPSTER: Napster = Napster {
    log: "error",
    patience: Some(Duration::from_secs(30)),
};

/// How long a download in these tests may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// Ask `process` (started with `--json`) `command` until one of the lines it prints
/// satisfies `wanted`; returns all of them.
fn ask_until(process: &mut Running, command: &str, wanted: impl Fn(&str) -> bool) -> Vec<String> {
    let mut last = Vec::new();
    wait_until(&format!("`{command}` to show it"), PATIENCE, || {
        last = process.ask(command);
        last.iter().any(|l| wanted(l))
    });
    last
}

/// A `serve 0` process and its address.
fn index_process(dir: &Path) -> (Running, String) {
    let mut index = NAPSTER.start(dir, "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    (index, addr)
}

/// A downloader stopped mid-way keeps its queue in the downloads folder; the next
/// napster there resumes it by itself, and the file server sends only what was missing.
#[test]
fn the_queue_outlives_a_restart_and_resumes_without_fetching_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let size = 8 * MIB;
    let contents = noise_words(13, size);
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("big.bin"), &contents).unwrap();
    let mut settings = sharing_settings(8, Duration::from_secs(30));
    let upload = Arc::new(RateLimit::new(4 << 20));
    settings.server.upload = upload.clone();
    let sharing = smol::block_on(share_folder(&share, index, &settings));
    let uploads = sharing.uploads().clone();

    let downloader = tmp.path().join("downloader");
    std::fs::create_dir_all(&downloader).unwrap();
    let mut first = NAPSTER.start(&downloader, &format!("connect {index}\nget -b big.bin\n"));
    wait_until("3 MiB sent", PATIENCE, || uploads.sent() >= 3 * MIB as u64);
    // End of the script: the download stops, its part file and queue are kept.
    assert!(first.wait().success());
    let before = uploads.sent();
    assert!(
        before < size as u64,
        "it stopped before the end ({before} bytes)"
    );
    let saved = downloader.join("downloads/big.bin");
    assert!(!saved.exists(), "nothing half-done under the final name");
    // The kept queue, with what arrived, as the one-shot CLI shows it (without
    // resuming it).
    let out = NAPSTER.run_args(&downloader, &["--json", "transfers"]);
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["state"], "queued", "{row}");
    let kept = row["done"].as_u64().unwrap();
    assert!(
        kept >= MIB as u64 && kept <= before,
        "{row} ({before} bytes sent)"
    );
    upload.set(0);

    // Started again in the same place, with nothing typed: the queue resumes.
    let mut second = NAPSTER.start_with(&downloader, &["--json"], "");
    wait_until("the resumed download to be saved", PATIENCE, || {
        saved.exists()
    });
    let rows = ask_until(&mut second, "transfers", |l| {
        l.contains("\"state\":\"done\"")
    });
    assert!(rows[0].contains("\"transfer\":1"), "{rows:?}");
    assert_eq!(std::fs::read(&saved).unwrap(), contents);
    let again = uploads.sent() - before;
    assert!(
        again + 2 * MIB as u64 <= size as u64,
        "after the restart {again} bytes of {size} were sent ({before} before it): \
         what had arrived was fetched again"
    );
    drop(sharing);
}

/// With one upload slot taken, a second downloader waits in line: its `transfers`
/// shows its position, and the uploader's `uploads` shows one sending, one waiting.
#[test]
fn a_downloader_waiting_for_a_slot_sees_its_place_and_the_uploader_sees_both() {
    let tmp = tempfile::tempdir().unwrap();
    let (_index, addr) = index_process(tmp.path());
    let sharer_dir = tmp.path().join("sharer");
    write_files(
        &sharer_dir,
        &[("napster.toml", "[peer]\nmax_uploads = 1\n".as_bytes())],
    );
    write_files(
        &sharer_dir.join("share"),
        &[("big.bin", &noise_words(5, 2 * MIB))],
    );
    let mut sharer = NAPSTER.start_with(
        &sharer_dir,
        &["--json"],
        &format!("connect {addr}\nlimit up 128kB/s\nregister share 0\n"),
    );
    sharer.wait_for("\"type\":\"registered\"");

    let mut downloaders = Vec::new();
    for name in ["first", "second"] {
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = NAPSTER.start_with(&dir, &["--json"], &format!("connect {addr}\n"));
        d.wait_for("\"type\":\"connected\"");
        d.send("get -b big.bin");
        d.wait_for("\"type\":\"started\"");
        if downloaders.is_empty() {
            ask_until(&mut sharer, "uploads", |l| l.contains("\"position\":null"));
        }
        downloaders.push(d);
    }
    let rows = ask_until(&mut downloaders[1], "transfers", |l| {
        l.contains("\"state\":\"waiting\"") && l.contains("\"position\":1")
    });
    assert!(rows[0].contains("\"waiting_at\":"), "{rows:?}");
    let rows = ask_until(&mut sharer, "uploads", |l| l.contains("\"position\":1"));
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows[0]["position"].is_null() && rows[1]["position"] == 1,
        "{rows:?}"
    );
    assert_ne!(
        rows[0]["peer_id"], rows[1]["peer_id"],
        "two downloaders, two keys"
    );
    assert!(
        rows.iter()
            .all(|r| r["name"] == "big.bin" && r["size"] == 2 * MIB)
    );

    // The one-shot CLI prints the link as a record.
    let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "--json", "link", "big.bin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let link: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sha = napster::digest::digest_bytes(&noise_words(5, 2 * MIB)).sha256;
    assert_eq!(
        link["link"],
        format!("napster:?xt=urn:sha256:{sha}&dn=big.bin&xl={}", 2 * MIB)
    );
}

/// Several names, a wildcard, a folder, a hash prefix and a link, in one script.
#[test]
fn several_names_wildcards_folders_hashes_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    write_files(
        &share,
        &[
            ("a.txt", b"alpha".as_slice()),
            ("b.txt", b"bravo"),
            ("one.ogg", b"first song"),
            ("two.ogg", b"second song"),
            ("live/x.ogg", b"live x"),
            ("live/deep/y.ogg", b"live y"),
            ("other/copy.bin", b"same bytes"),
            ("renamed.bin", b"same bytes"),
        ],
    );
    let sha = napster::digest::digest_bytes(b"same bytes").sha256;
    let song = napster::digest::digest_bytes(b"first song").sha256;
    let link = format!("napster:?xt=urn:sha256:{song}&dn=one.ogg&xl=10");
    let script = format!(
        "serve 0\nregister {} 0\nget a.txt b.txt\nget '*.ogg'\nget -r live/\nget sha256:{}\n\
         link one.ogg\nget napster:?xt=urn:sha256:{song}&dn=linked%20song.ogg\nquit\n",
        share.display(),
        &sha[..12]
    );
    let out = NAPSTER.run(tmp.path(), &script);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let downloads = tmp.path().join("downloads");
    let read = |name: &str| std::fs::read(downloads.join(name)).unwrap_or_default();
    assert_eq!(read("a.txt"), b"alpha");
    assert_eq!(read("b.txt"), b"bravo");
    // The wildcard takes every .ogg, each under its own name.
    assert_eq!(read("one.ogg"), b"first song");
    assert_eq!(read("two.ogg"), b"second song");
    // The folder keeps its relative paths.
    assert_eq!(read("live/x.ogg"), b"live x");
    assert_eq!(read("live/deep/y.ogg"), b"live y");
    // The same bytes under two names: fetched once, under one of them.
    let by_hash = ["copy.bin", "renamed.bin"]
        .iter()
        .filter(|n| read(n) == b"same bytes")
        .count();
    assert_eq!(by_hash, 1, "{stdout}");
    assert!(stdout.contains(&link), "link prints {link}: {stdout}");
    assert_eq!(read("linked song.ogg"), b"first song");
}

/// `get -r` never writes outside the downloads folder: a symlink planted where a
/// folder of the download goes is refused, and what it points at stays untouched.
#[test]
fn a_folder_download_is_never_steered_outside_the_downloads_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    write_files(&share, &[("live/x.ogg", b"live x".as_slice())]);
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let downloads = tmp.path().join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::os::unix::fs::symlink(&outside, downloads.join("live")).unwrap();
    let script = format!(
        "serve 0\nregister {} 0\nget -r live/\nquit\n",
        share.display()
    );
    let out = NAPSTER.run(tmp.path(), &script);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("symlink is never followed"), "{stderr}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

/// A queue file is only text: an entry whose folder is absolute, has an empty, `.` or
/// `..` part, or meets a symlink, is refused when the queue is read (failed, with the
/// reason) and nothing is written outside the downloads folder; a sound entry beside
/// them is resumed as usual.
#[test]
fn a_queue_file_cannot_steer_a_download_outside_the_downloads_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let contents = b"queued song".as_slice();
    let share = tmp.path().join("share");
    write_files(&share, &[("song.ogg", contents)]);
    let settings = sharing_settings(8, Duration::from_secs(30));
    let sharing = smol::block_on(share_folder(&share, index, &settings));

    let downloader = tmp.path().join("downloader");
    let downloads = downloader.join("downloads");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(&downloads).unwrap();
    std::os::unix::fs::symlink(&outside, downloads.join("link")).unwrap();
    let absolute = tmp.path().join("absolute");
    let folders = [
        "fine".into(),
        "../escaped".into(),
        "sub/../../escaped".into(),
        absolute.clone(),
        "a//b".into(),
        "./dot".into(),
        "link".into(),
    ];
    let entries: Vec<Queued> = folders
        .iter()
        .enumerate()
        .map(|(n, folder)| Queued {
            number: n as u64 + 1,
            file: common::real_entry("song.ogg", contents),
            folder: folder.clone(),
            peer: None,
            index: vec![index],
            stage: Stage::Queued,
        })
        .collect();
    write_files(
        &downloads,
        &[(
            ".napster-queue",
            serde_json::to_vec(&entries).unwrap().as_slice(),
        )],
    );
    let mut napster = NAPSTER.start_with(&downloader, &["--json"], "");
    let rows = ask_until(&mut napster, "transfers", |l| {
        l.contains("\"transfer\":1") && l.contains("\"state\":\"done\"")
    });
    assert_eq!(
        std::fs::read(downloads.join("fine/song.ogg")).unwrap(),
        contents
    );
    for n in 2..=folders.len() {
        let row = rows
            .iter()
            .find(|l| l.contains(&format!("\"transfer\":{n},")))
            .unwrap_or_else(|| panic!("no row {n}: {rows:?}"));
        assert!(
            row.contains("\"state\":\"failed\"") && row.contains("refused when the queue was read"),
            "{row}"
        );
    }
    assert!(
        !tmp.path().join("escaped").exists(),
        "written above the downloads folder"
    );
    assert!(!absolute.exists(), "written at an absolute path");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "written through a symlink"
    );
    napster.kill();
    drop(sharing);
}

/// A link's name obeys the rule of a name from an index: a right-to-left override in
/// its `dn` (`invoice\u{202e}fdp.exe` shows as `invoiceexe.pdf`) is refused, shown
/// escaped, and nothing is saved.
#[test]
fn a_link_whose_name_hides_a_bidi_override_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let contents = b"not really a pdf".as_slice();
    let share = tmp.path().join("share");
    write_files(&share, &[("invoice.pdf", contents)]);
    let sha256 = common::real_entry("invoice.pdf", contents).sha256;
    let script = format!(
        "serve 0\nregister {} 0\nget napster:?xt=urn:sha256:{sha256}&dn=invoice%E2%80%AEfdp.exe\nquit\n",
        share.display()
    );
    let out = NAPSTER.run(tmp.path(), &script);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bidi"), "{stderr}");
    assert!(
        stderr.contains("invoice\\u{202e}fdp.exe"),
        "shown escaped: {stderr}"
    );
    assert!(!stderr.contains('\u{202e}'), "printed raw: {stderr}");
    let downloads = tmp.path().join("downloads");
    let saved = std::fs::read_dir(&downloads).map_or(0, |d| d.count());
    assert_eq!(saved, 0, "something was saved");
}

/// The one-shot CLI lists the queue kept in the downloads folder as JSON.
#[test]
fn one_shot_transfers_reads_the_kept_queue() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = NAPSTER.run_args(tmp.path(), &["--json", "transfers"]);
    assert!(empty.status.success(), "{}", text(&empty.stderr));
    assert_eq!(text(&empty.stdout), "");
    assert!(
        !tmp.path().join("downloads").exists(),
        "looking at no queue makes no folder"
    );

    let kept = Queued {
        number: 4,
        file: napster::protocol::FileEntry {
            name: "song.ogg".into(),
            size: 10,
            sha256: "a".repeat(64),
            chunks: "b".repeat(64),
        },
        folder: "live".into(),
        peer: None,
        index: vec![common::closed_addr()],
        stage: Stage::Paused,
    };
    write_files(
        &tmp.path().join("downloads"),
        &[(
            ".napster-queue",
            serde_json::to_vec(&[kept]).unwrap().as_slice(),
        )],
    );
    let out = NAPSTER.run_args(tmp.path(), &["--json", "transfers"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let row: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(row["type"], "transfer");
    assert_eq!(
        (row["transfer"].as_u64(), row["state"].as_str()),
        (Some(4), Some("paused"))
    );
    assert_eq!(row["name"], "live/song.ogg");

    let out = NAPSTER.run_args(tmp.path(), &["--json", "uploads"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "", "no rows: nobody downloads from here");
}

/// `pause` keeps the part file, `resume` goes on, `cancel` removes it, `clear` drops
/// what ended; with `[peer] max_downloads = 1` the second download waits its turn.
#[test]
fn pause_resume_cancel_clear_and_one_download_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let share = tmp.path().join("share");
    write_files(
        &share,
        &[
            ("one.bin", noise_words(1, 2 * MIB).as_slice()),
            ("two.bin", noise_words(2, 2 * MIB).as_slice()),
        ],
    );
    let mut settings = sharing_settings(8, Duration::from_secs(30));
    settings.server.upload = Arc::new(RateLimit::new(1 << 20));
    let sharing = smol::block_on(share_folder(&share, index, &settings));

    let dir = tmp.path().join("downloader");
    write_files(
        &dir,
        &[("napster.toml", b"[peer]\nmax_downloads = 1\n".as_slice())],
    );
    let mut d = NAPSTER.start_with(&dir, &["--json"], &format!("connect {index}\n"));
    d.wait_for("\"type\":\"connected\"");
    d.send("get -b one.bin two.bin");
    d.wait_for("\"name\":\"two.bin\"");
    let rows = ask_until(&mut d, "transfers", |l| l.contains("\"state\":\"running\""));
    assert!(rows[0].contains("\"state\":\"running\""), "{rows:?}");
    assert!(
        rows[1].contains("\"state\":\"queued\""),
        "only one at once: {rows:?}"
    );
    // A second napster in the same folder does not take the queue; it shows it.
    let other = NAPSTER.run_args(&dir, &["transfers"]);
    let shown = text(&other.stdout);
    assert!(
        shown.contains("another napster keeps the download queue") && shown.contains("two.bin"),
        "{shown}"
    );

    let downloads = dir.join("downloads");
    let part_files = || {
        std::fs::read_dir(&downloads)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".napster-part"))
            .count()
    };
    wait_until("bytes of one.bin to arrive", PATIENCE, || {
        !d.ask("transfers")[0].contains("\"done\":0,")
    });
    let paused = d.ask("pause 1");
    assert!(paused[0].contains("\"state\":\"paused\""), "{paused:?}");
    // The slot it left goes to the next in the queue; its part file stays.
    ask_until(&mut d, "transfers", |l| {
        l.contains("\"transfer\":2") && l.contains("\"state\":\"running\"")
    });
    assert!(part_files() >= 1);
    let cancelled = d.ask("cancel 2");
    assert!(
        cancelled[0].contains("\"state\":\"cancelled\""),
        "{cancelled:?}"
    );
    d.ask("resume 1");
    // The file is renamed into place a moment before its row says so: wait for the row.
    ask_until(&mut d, "transfers", |l| {
        l.contains("\"transfer\":1") && l.contains("\"state\":\"done\"")
    });
    assert!(downloads.join("one.bin").exists());
    assert_eq!(part_files(), 0, "the cancelled one's part file is removed");
    assert!(!downloads.join("two.bin").exists());
    let cleared = d.ask("clear");
    assert!(cleared[0].contains("\"count\":2"), "{cleared:?}");
    assert!(d.ask("transfers").is_empty());
    drop(sharing);
}
