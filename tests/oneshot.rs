//! The real binary run the way scripts and programs run it: one command per process
//! (`napster search x`), `-e`, `--json` parsed with serde_json field by field as
//! docs/JSON.md documents them, exit statuses, completions, and a serving command kept
//! in the foreground until SIGTERM.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use common::process::{Napster, Running, last_word, text};

const NAPSTER: Napster = Napster {
    log: "warn",
    patience: Some(Duration::from_secs(20)),
};

const SONG: &[u8] = b"la la la, a song shared for scripts\n";

/// The Peer ID in a `registered as peer N …` line.
fn registered_id(line: &str) -> u64 {
    let after = line.split("registered as peer ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// An index and a peer sharing `song.ogg` in one process; its index address and the
/// peer's ID (derived from its key).
fn index_with_a_song(tmp: &Path) -> (Running, String, u64) {
    let share = tmp.join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("song.ogg"), SONG).unwrap();
    let mut process = NAPSTER.start(tmp, &format!("serve 0\nregister {} 0\n", share.display()));
    let addr = last_word(&process.wait_for("index server listening on"));
    let id = registered_id(&process.wait_for("registered as peer"));
    (process, addr, id)
}

/// Every stdout line parsed as a JSON object.
fn records(stdout: &[u8]) -> Vec<Value> {
    text(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The fields every row about a peer's file carries (docs/JSON.md, `hit` and `file`).
fn check_file_row(row: &Value, kind: &str, peer: u64) {
    assert_eq!(row["type"], kind, "{row}");
    assert_eq!(row["peer_id"], peer, "{row}");
    assert_eq!(
        row["fingerprint"].as_str().unwrap().split('-').count(),
        13,
        "{row}"
    );
    assert_eq!(row["name"], "song.ogg", "{row}");
    assert_eq!(row["size"], SONG.len() as u64, "{row}");
    assert_eq!(row["sha256"], sha256_hex(SONG), "{row}");
    assert_eq!(row["host"], "127.0.0.1", "{row}");
    let port = row["port"].as_u64().unwrap();
    assert_eq!(row["addr"], format!("127.0.0.1:{port}"), "{row}");
    assert_eq!(row["reachable"], true, "{row}");
    let shared_at = row["shared_at"].as_str().unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(shared_at).unwrap();
    assert_eq!(at.offset().local_minus_utc(), 0, "UTC: {shared_at}");
    assert!(shared_at.ends_with('Z'), "{shared_at}");
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn one_shot_commands_print_json_lines_with_every_documented_field() {
    let tmp = tempfile::tempdir().unwrap();
    let (_index, addr, id) = index_with_a_song(tmp.path());
    let id_text = id.to_string();
    let client = tmp.path().join("client");
    std::fs::create_dir_all(&client).unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--index", addr.as_str(), "--json"];
        all.extend_from_slice(args);
        NAPSTER.run_args(&client, &all)
    };

    let out = run(&["search", "song"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hits = records(&out.stdout);
    assert_eq!(hits.len(), 1, "one object per row: {hits:?}");
    check_file_row(&hits[0], "hit", id);

    let out = run(&["search", "-r", "song"]);
    let hit = &records(&out.stdout)[0];
    assert!(hit["rtt_ms"].as_f64().unwrap() >= 0.0, "{hit}");

    let out = run(&["search", "-c", "song"]);
    let group = &records(&out.stdout)[0];
    assert_eq!(group["type"], "group");
    assert_eq!(group["peer_ids"], serde_json::json!([id]));
    assert_eq!(group["sha256"], sha256_hex(SONG));
    assert_eq!(group["size"], SONG.len() as u64);
    assert_eq!(group["name"], "song.ogg");

    let out = run(&["files", &id_text]);
    check_file_row(&records(&out.stdout)[0], "file", id);

    let out = run(&["peers"]);
    let peer = &records(&out.stdout)[0];
    assert_eq!(peer["type"], "peer");
    assert_eq!(peer["peer_id"], id);
    assert!(peer["fingerprint"].is_string());
    assert_eq!(peer["files"], 1);
    assert_eq!(peer["bytes"], SONG.len() as u64);
    assert_eq!(peer["reachable"], true);
    assert!(peer["addr"].is_string() && peer["host"].is_string() && peer["port"].is_u64());
    chrono::DateTime::parse_from_rfc3339(peer["shared_at"].as_str().unwrap()).unwrap();

    let out = run(&["ping", &id_text]);
    let pong = &records(&out.stdout)[0];
    assert_eq!(pong["type"], "pong");
    assert!(pong["rtt_ms"].as_f64().unwrap() >= 0.0 && pong["port"].is_u64());

    let out = run(&["--progress", "get", "song.ogg"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let events = records(&out.stdout);
    let saved = events.last().unwrap();
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e["type"] == "progress" && e["size"] == SONG.len() as u64),
        "{events:?}"
    );
    assert_eq!(saved["type"], "saved", "{events:?}");
    assert_eq!(saved["name"], "song.ogg");
    assert_eq!(saved["size"], SONG.len() as u64);
    assert_eq!(saved["sha256"], sha256_hex(SONG));
    assert_eq!(saved["peer_ids"], serde_json::json!([id]));
    assert_eq!(saved["already_there"], false);
    assert_eq!(saved["resumed"], 0);
    assert_eq!(saved["refetched"], 0);
    assert_eq!(saved["routes"], serde_json::json!({"direct": 1}));
    assert!(saved["seconds"].as_f64().unwrap() >= 0.0);
    let path = saved["path"].as_str().unwrap();
    assert_eq!(std::fs::read(client.join(path)).unwrap(), SONG);

    // Nothing matched: its own exit status, and nothing on stdout.
    let out = run(&["search", "nothing-like-this"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());

    // A refusal from the index: an event on stdout, and the error on stderr.
    let out = run(&["files", "99"]);
    assert_eq!(out.status.code(), Some(1));
    let refused = &records(&out.stdout)[0];
    assert_eq!(refused["type"], "refused", "{refused}");
    assert_eq!(refused["code"], "not_found", "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("99"));
    let error: Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");

    // A failure: a JSON error on stderr with a stable code.
    let out = run(&["get", "missing.txt"]);
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("missing.txt")
    );
}

/// `status`, `help` and `format` print typed records, not their text cut into lines: a
/// program reads the index (and the rest) from `status`'s fields.
#[test]
fn status_help_and_format_are_typed_records() {
    let tmp = tempfile::tempdir().unwrap();
    let (_index, addr, _id) = index_with_a_song(tmp.path());
    let client = tmp.path().join("client");
    std::fs::create_dir_all(&client).unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--index", addr.as_str(), "--json"];
        all.extend_from_slice(args);
        NAPSTER.run_args(&client, &all)
    };
    let out = run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let status = records(&out.stdout);
    assert_eq!(status.len(), 2, "status, then its home: {status:?}");
    assert_eq!(status[1]["type"], "home", "{status:?}");
    let status = &status[0];
    assert_eq!(status["type"], "status");
    assert_eq!(status["index"]["addr"], addr.as_str(), "{status}");
    assert!(
        status["index"]["rtt_ms"].as_f64().unwrap() >= 0.0,
        "{status}"
    );
    assert!(status["index"]["fingerprint"].is_string(), "{status}");
    assert!(
        status["index_server"].is_null() && status["sharing"].is_null(),
        "{status}"
    );
    assert_eq!(status["transfers"]["running"], 0, "{status}");
    assert!(status["identity"].is_string(), "{status}");
    let out = run(&["help"]);
    let listed = records(&out.stdout);
    assert!(listed.iter().all(|c| c["type"] == "command"), "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|c| c["name"] == "search" && c["summary"].is_string())
    );
    let out = run(&["help", "get"]);
    let help = &records(&out.stdout)[0];
    assert_eq!(
        (&help["type"], &help["name"]),
        (&"help".into(), &"get".into())
    );
    assert!(
        help["details"].as_str().unwrap().contains("sha256:HEX"),
        "{help}"
    );
}

#[test]
fn usage_errors_exit_two_and_scripts_name_the_failing_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = NAPSTER.run_args(tmp.path(), &["ping", "no/peer"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not a Peer ID"),
        "{}",
        text(&out.stderr)
    );

    let out = NAPSTER.run_args(tmp.path(), &["bogus"]);
    assert_eq!(out.status.code(), Some(2));

    // A usage error clap finds is a JSON record too when --json was asked for.
    for args in [
        &["--json", "bogus"][..],
        &["--json", "cancel"],
        &["--json", "--nope"],
    ] {
        let out = NAPSTER.run_args(tmp.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        let error: Value = serde_json::from_str(stderr.trim())
            .unwrap_or_else(|e| panic!("{args:?}: not one JSON record ({e}): {stderr}"));
        assert_eq!(error["error"]["code"], "usage", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("Usage: napster"), "{message}");
    }

    let out = NAPSTER.run_args(
        tmp.path(),
        &["--json", "--index", "127.0.0.1:99999", "peers"],
    );
    assert_eq!(out.status.code(), Some(2));
    let error: Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert_eq!(error["error"]["code"], "usage", "{error}");

    // -e: several commands; a failing one names its line, and --stop-on-error stops there.
    let script = "limit up 1MiB/s; limit down fast; limit";
    let out = NAPSTER.run_args(tmp.path(), &["-e", script]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stderr).contains("(line 2)"),
        "{}",
        text(&out.stderr)
    );
    let out = NAPSTER.run_args(tmp.path(), &["--stop-on-error", "--json", "-e", script]);
    assert_eq!(out.status.code(), Some(1));
    let limits = records(&out.stdout);
    assert_eq!(limits.len(), 1, "stopped at the failing line: {limits:?}");
    assert_eq!(limits[0]["type"], "limits");
    assert_eq!(limits[0]["upload"], 1 << 20);
    assert_eq!(limits[0]["download"], Value::Null);
    let error: Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert_eq!(error["error"]["line"], 2, "{error}");
    assert_eq!(error["error"]["code"], "usage", "{error}");

    // A metrics address that is not one: a config error naming the key.
    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "[index]\nmetrics = \"everywhere\"\n").unwrap();
    let config = config.display().to_string();
    let out = NAPSTER.run_args(tmp.path(), &["--json", "--config", &config, "serve", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let error: Value = serde_json::from_str(text(&out.stderr).trim()).unwrap();
    assert_eq!(error["error"]["code"], "config", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("index.metrics"), "{message}");

    // `format json` inside a piped script does what --json does.
    let out = NAPSTER.run(tmp.path(), "format json\nlimit\n");
    let lines = records(&out.stdout);
    assert_eq!(lines[0]["type"], "format");
    assert_eq!(lines[0]["format"], "json");
    assert_eq!(lines[1]["type"], "limits");
}

#[test]
fn help_and_completions_come_from_the_command_table() {
    let tmp = tempfile::tempdir().unwrap();
    let out = NAPSTER.run_args(tmp.path(), &["get", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    assert!(help.contains("get [-b] [-r] <file>... [peer]"), "{help}");
    assert!(help.contains("verified by SHA-256"), "{help}");
    for shell in ["bash", "zsh", "fish"] {
        let out = NAPSTER.run_args(tmp.path(), &["completions", shell]);
        assert_eq!(out.status.code(), Some(0));
        let script = text(&out.stdout);
        assert!(
            script.contains("search") && script.contains("register"),
            "{shell}: {script}"
        );
    }
}

/// An index stopped by a signal says it stops the index, not that it withdraws files it
/// never shared.
#[test]
fn a_signal_says_what_it_stops() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = NAPSTER
        .command(tmp.path())
        .args(["serve", "0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("index server listening on") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "no listening line"
        );
    }
    assert!(common::process::signal(child.id(), "TERM"));
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("shutting down (stopping the index server)"),
        "{stderr}"
    );
    assert!(!stderr.contains("withdrawing"), "{stderr}");
}

#[test]
fn a_one_shot_server_stays_in_the_foreground_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = NAPSTER.start_with(tmp.path(), &["serve", "0"], "");
    index.end_input();
    let addr = last_word(&index.wait_for("index server listening on"));
    let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "peers"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("no peer is registered"));

    // A one-shot `register` shares until SIGTERM, then withdraws its files.
    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("song.ogg"), SONG).unwrap();
    let dir = share.display().to_string();
    let mut peer = NAPSTER.start_with(tmp.path(), &["--index", &addr, "register", &dir, "0"], "");
    peer.end_input();
    let id = registered_id(&peer.wait_for("registered as peer")).to_string();
    let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "--json", "files", &id]);
    assert_eq!(records(&out.stdout).len(), 1, "{}", text(&out.stderr));
    assert_eq!(peer.terminate().code(), Some(0));
    let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "peers"]);
    assert!(text(&out.stdout).contains("no peer is registered"));
    assert_eq!(index.terminate().code(), Some(0));
}
