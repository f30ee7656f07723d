//! The real binary, scripted on stdin, several processes at once: what a user piping
//! commands into `napster` sees on stdout, stderr and in the exit status.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::process::{BIN, HOME_ENV, Napster, last_word, text};

/// These processes log warnings, and may take 20 s to print an expected line.
const NAPSTER: Napster = Napster {
    log: "warn",
    patience: Some(Duration::from_secs(20)),
};

fn peer_id(line: &str) -> u64 {
    let after = line.split("registered as peer ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

fn write_files(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).unwrap();
    }
    dir.to_owned()
}

/// The seed's walk-through with three processes plus the downloader.
#[test]
fn walk_through_in_separate_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = NAPSTER.start(tmp.path(), "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    index.end_input();

    let one = write_files(
        &tmp.path().join("one"),
        &[("1.txt", "first"), ("6.txt", "sixth file")],
    );
    let two = write_files(
        &tmp.path().join("two"),
        &[("6.txt", "sixth file"), ("7.txt", "seventh")],
    );
    // Each peer its own home, so its own key file: its own identity. The second runs
    // as the README's terminal 3 does: in its folder, `--home` elsewhere, `register .`.
    let (home1, home2) = (tmp.path().join("home1"), tmp.path().join("home2"));
    std::fs::create_dir_all(&home1).unwrap();
    let mut peer1 = NAPSTER.start(
        &home1,
        &format!("connect {addr}\nregister {} 0\n", one.display()),
    );
    let id1 = peer_id(&peer1.wait_for("registered as peer"));
    let home2_arg = home2.display().to_string();
    let mut peer2 = NAPSTER.start_with(
        &two,
        &["--home", &home2_arg],
        &format!("connect {addr}\nregister . 0\n"),
    );
    let id2 = peer_id(&peer2.wait_for("registered as peer"));
    assert!(home2.join(".napster-key").exists());
    assert!(!two.join(".napster-key").exists(), "the key is in the home");
    peer1.end_input();
    peer2.end_input();

    let downloader = tmp.path().join("downloader");
    std::fs::create_dir_all(&downloader).unwrap();
    let out = NAPSTER.run(
        &downloader,
        &format!("connect {addr}\nsearch 6.txt\nget 6.txt {id1}\nget 6.txt {id2}\nget 7.txt\n"),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("6.txt")).collect();
    assert!(
        rows.iter().any(|r| r.contains(&format!(" {id1} ┆"))),
        "{stdout}"
    );
    assert!(
        rows.iter().any(|r| r.contains(&format!(" {id2} ┆"))),
        "{stdout}"
    );
    assert!(stdout.contains("2 files on 2 peers"), "{stdout}");
    assert!(stdout.contains("sha256 ok, "), "{stdout}");
    assert!(stdout.contains(&format!("from peer {id1})")), "{stdout}");
    assert!(
        stdout.contains("already there with the same contents"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(downloader.join("downloads/6.txt")).unwrap(),
        b"sixth file"
    );
    assert_eq!(
        std::fs::read(downloader.join("downloads/7.txt")).unwrap(),
        b"seventh"
    );

    // SIGTERM: the peer withdraws its files at once and exits cleanly.
    assert!(peer1.terminate().success());
    let out = NAPSTER.run(&downloader, &format!("connect {addr}\nsearch 6.txt\n"));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1 file on 1 peer"), "{stdout}");
    assert!(!stdout.contains(&format!(" {id1} ┆")), "{stdout}");
    assert!(peer2.terminate().success());
    assert!(index.terminate().success());
}

#[test]
fn failures_go_to_stderr_and_set_the_exit_status() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = NAPSTER.start(tmp.path(), "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    let out = NAPSTER.run(
        tmp.path(),
        &format!(
            "connect {addr}\nbogus\nsearch nothing-like-this\nget missing.txt\nget x no/peer\nserve 70000\npeers\n"
        ),
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("no file matches \"nothing-like-this\""),
        "{stdout}"
    );
    assert!(stdout.contains("no peer is registered"), "{stdout}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 4, "{stderr}");
    assert!(errors[0].contains("unknown command \"bogus\""), "{stderr}");
    assert!(
        errors[1].contains("no peer shares \"missing.txt\""),
        "{stderr}"
    );
    // `get x notanumber` asks for two files now; neither is shared.
    assert!(errors[2].contains("2 files not fetched"), "{stderr}");
    assert!(errors[3].contains("not a port"), "{stderr}");
}

#[test]
fn a_script_that_succeeds_exits_zero_and_one_without_an_index_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let out = NAPSTER.run(tmp.path(), "help\nhelp get\n# a comment\n\nquit\n");
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("usage: get [-b] [-r] <file>... [peer]"),
        "{stdout}"
    );
    assert!(stdout.contains("register [dir] [port]"), "{stdout}");

    // Port 1 on loopback has no index: a clear error, not a hang.
    let out = NAPSTER.run(tmp.path(), "connect 127.0.0.1:1\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: cannot reach the index at 127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn quit_stops_a_serving_process() {
    let tmp = tempfile::tempdir().unwrap();
    let out = NAPSTER.run(tmp.path(), "serve 0\nquit\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("index server listening on 127.0.0.1:"));
}

#[test]
fn ipv6_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("napster.toml"), "[index]\nhost = \"::1\"\n").unwrap();
    let mut index = NAPSTER.start(tmp.path(), "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    assert!(addr.starts_with("[::1]:"), "{addr}");
    let files = write_files(&tmp.path().join("share"), &[("v6.txt", "over ipv6")]);
    let mut peer = NAPSTER.start(
        tmp.path(),
        &format!("connect {addr}\nregister {} 0\n", files.display()),
    );
    let line = peer.wait_for("registered as peer");
    assert!(line.contains("serving on [::1]:"), "{line}");
    let out = NAPSTER.run(
        tmp.path(),
        &format!("connect {addr}\nsearch v6\nget v6.txt\n"),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("┆ ::1 "), "{stdout}");
    assert_eq!(
        std::fs::read(tmp.path().join("downloads/v6.txt")).unwrap(),
        b"over ipv6"
    );
}

#[test]
fn malformed_config_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("napster.toml"), "[peer]\nport = \"many\"\n").unwrap();
    let out = NAPSTER.run(tmp.path(), "status\n");
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("napster.toml"), "{stderr}");
    assert!(stderr.contains("port"), "{stderr}");

    let out = Command::new(BIN)
        .env(HOME_ENV, tmp.path().join("home"))
        .args(["--config", "/nonexistent/napster.toml"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/napster.toml"));
}

#[test]
fn bandwidth_limits_are_set_in_config_and_at_run_time() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("napster.toml"),
        "[peer]\nupload_limit = \"2MiB/s\"\n",
    )
    .unwrap();
    let out = NAPSTER.run(
        tmp.path(),
        "limit\nlimit down 500kB/s\nlimit up 0\nlimit down fast\nlimit 5\nlimit up 5\n",
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "upload limit: 2.0 MiB/s; download limit: unlimited"
    );
    assert_eq!(
        lines[1],
        "upload limit: 2.0 MiB/s; download limit: 488.3 KiB/s"
    );
    assert_eq!(
        lines[2],
        "upload limit: unlimited; download limit: 488.3 KiB/s"
    );
    assert!(stderr.contains("\"fast\" is not a rate"), "{stderr}");
    // A bare number is refused with the hint, not taken as bytes per second.
    assert_eq!(
        stderr.matches("5 needs a unit: 5MiB/s?").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        stdout.lines().count(),
        3,
        "a bare number set a limit: {stdout}"
    );

    std::fs::write(
        tmp.path().join("napster.toml"),
        "[peer]\ndownload_limit = \"lots\"\n",
    )
    .unwrap();
    let out = NAPSTER.run(tmp.path(), "limit\n");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("download_limit") && text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn ping_measures_a_peer_and_search_can_show_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_files(&tmp.path().join("share"), &[("p.txt", "pong")]);
    // The Peer ID this napster will have: derived from the key in its home.
    let key = napster::identity::Identity::load_or_create(&tmp.path().join(".napster-key"), "key")
        .unwrap();
    let id = napster::index::store::peer_id_of(&key.fingerprint());
    let out = NAPSTER.run(
        tmp.path(),
        &format!(
            "serve 0\nregister {} 0\nping {id}\nsearch -r p.txt\nping 9\nquit\n",
            files.display()
        ),
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("peer {id} (127.0.0.1:")),
        "{stdout}"
    );
    assert!(stdout.contains("): rtt "), "{stdout}");
    assert!(stdout.contains("RTT"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("p.txt") && l.contains(" ms")),
        "{stdout}"
    );
    assert!(stderr.contains("peer 9 is not registered"), "{stderr}");
}

/// `quit` with a background download running stops it, says so, and keeps what arrived
/// for a resume: nothing appears under the final name.
#[test]
fn quit_stops_background_downloads_and_keeps_them_for_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = NAPSTER.start(tmp.path(), "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    index.end_input();
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(shared.join("big.bin"), &big).unwrap();
    // A sharer slow enough that the download is still running when the script quits.
    let mut sharer = NAPSTER.start(
        tmp.path(),
        &format!(
            "connect {addr}\nlimit up 256kB/s\nregister {} 0\n",
            shared.display()
        ),
    );
    sharer.wait_for("registered as peer");
    sharer.end_input();

    let downloader = tmp.path().join("downloader");
    std::fs::create_dir_all(&downloader).unwrap();
    let out = NAPSTER.run(
        &downloader,
        &format!("connect {addr}\nget -b big.bin\nquit\n"),
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("stopped 1 background download"),
        "quit says what it stopped: {stderr}"
    );
    let downloads = downloader.join("downloads");
    assert!(
        !downloads.join("big.bin").exists(),
        "nothing half-done under the final name"
    );
    let kept: Vec<String> = std::fs::read_dir(&downloads)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // What arrived (if anything had yet) is in its part file; the download itself
    // stays in the queue kept in the downloads folder, for the next napster there.
    let queue = std::fs::read_to_string(downloads.join(".napster-queue")).unwrap();
    assert!(
        queue.contains("big.bin") && queue.contains("\"queued\""),
        "the download stays queued for a resume: {kept:?} {queue}"
    );
}

/// Two processes in one folder share one key file: the second cannot share with it
/// while the first does (it would be the same peer and replace the first's files), and
/// says what to do instead.
#[test]
fn a_second_sharer_with_the_same_key_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = NAPSTER.start(tmp.path(), "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    index.end_input();
    let one = write_files(&tmp.path().join("one"), &[("a.txt", "first")]);
    let two = write_files(&tmp.path().join("two"), &[("b.txt", "second")]);
    let mut first = NAPSTER.start(
        tmp.path(),
        &format!("connect {addr}\nregister {} 0\n", one.display()),
    );
    first.wait_for("registered as peer");
    first.end_input();
    let out = NAPSTER.run(
        tmp.path(),
        &format!("connect {addr}\nregister {} 0\nquit\n", two.display()),
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another napster is sharing with the key") && stderr.contains("[peer] key"),
        "{stderr}"
    );
    // The first one's files are still there.
    let out = NAPSTER.run(tmp.path(), &format!("connect {addr}\nsearch a.txt\n"));
    assert!(
        text(&out.stdout).contains("1 file on 1 peer"),
        "{}",
        text(&out.stdout)
    );
}
