//! `napster daemon` through its HTTP API, as scripts use it: real daemons (the binary,
//! on port 0, their printed address read back) sharing with a real index, driven with a
//! real HTTP client. Search, browse, download by name and watch it over Server-Sent
//! Events until it is done; pause, resume and cancel; the CLI's error codes with their
//! HTTP statuses; an index that answers late; the checks against DNS rebinding,
//! cross-site requests and path traversal; a clean stop on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::process::Napster;
use common::web::{Daemon, daemon_dir};
use common::{noise_words, start_index, wait_until};
use serde_json::{Value, json};

const NAPSTER: Napster = Napster {
    log: "warn",
    patience: Some(Duration::from_secs(60)),
};

/// How long sharing, a download or an event may take here.
const PATIENCE: Duration = Duration::from_secs(60);

/// Wait until the daemon shares with the index (its status names a Peer ID).
fn wait_sharing(daemon: &Daemon) -> u64 {
    let mut peer = 0;
    wait_until("the daemon to share with the index", PATIENCE, || {
        let status = daemon.get("/api/status").json();
        peer = status["sharing"]["peer_id"].as_u64().unwrap_or(0);
        peer != 0
    });
    peer
}

/// Follow `/api/events` until `wanted` accepts an event (name, data); every event seen.
fn follow(daemon: &Daemon, wanted: impl Fn(&str, &Value) -> bool) -> Vec<(String, Value)> {
    let mut stream = TcpStream::connect(daemon.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        daemon.addr, daemon.token
    )
    .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    let mut name = String::new();
    for line in BufReader::new(stream).lines() {
        assert!(
            Instant::now() < deadline,
            "no such event within {PATIENCE:?}: {seen:#?}"
        );
        let line = line.expect("the event stream stays open");
        if let Some(event) = line.strip_prefix("event: ") {
            name = event.to_owned();
        } else if let Some(data) = line.strip_prefix("data: ") {
            let data: Value = serde_json::from_str(data).unwrap();
            let done = wanted(&name, &data);
            seen.push((name.clone(), data));
            if done {
                return seen;
            }
        }
    }
    panic!("the event stream ended: {seen:#?}");
}

#[test]
fn a_script_searches_downloads_and_follows_the_transfer_over_http() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let contents = noise_words(7, 3 << 20);
    let sharer_dir = daemon_dir(tmp.path(), "sharer", index, &[("big.bin", &contents)], "");
    let sharer = Daemon::start(&NAPSTER, &sharer_dir, &[]);
    let sharer_id = wait_sharing(&sharer);
    let getter_dir = daemon_dir(tmp.path(), "getter", index, &[], "");
    let getter = Daemon::start(&NAPSTER, &getter_dir, &[]);

    let found = getter.get("/api/search?q=big.bin&limit=10");
    assert_eq!(found.status, 200, "{}", found.body);
    assert_eq!(found.header("x-total-count"), Some("1"));
    let hits = found.json();
    assert_eq!(hits[0]["type"], "hit");
    assert_eq!(hits[0]["peer_id"], sharer_id);
    // The same record `--json` prints for the same search.
    let cli = NAPSTER.run_args(&getter_dir, &["--json", "search", "big.bin"]);
    let line: Value =
        serde_json::from_slice(cli.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line, hits[0]);

    let peers = getter.get("/api/peers").json();
    assert!(
        peers
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["peer_id"] == sharer_id),
        "{peers}"
    );
    let files = getter.get(&format!("/api/peers/{sharer_id}/files"));
    assert_eq!(files.json()[0]["name"], "big.bin", "{}", files.body);
    assert_eq!(files.header("x-total-count"), Some("1"));

    let queued = getter.post("/api/downloads", &json!({ "file": "big.bin" }));
    assert_eq!(queued.status, 201, "{}", queued.body);
    let number = queued.json()["transfer"].as_u64().unwrap();
    follow(&getter, |name, data| {
        name == "state" && data["transfer"] == number && data["state"] == "done"
    });
    let row = getter.download(number);
    assert_eq!(row["done"], contents.len());
    assert_eq!(
        std::fs::read(getter_dir.join("downloads/big.bin")).unwrap(),
        contents
    );
    // The sharer saw it go: its uploads list is readable too.
    assert_eq!(sharer.get("/api/uploads").status, 200);
}

#[test]
fn downloads_pause_resume_and_cancel_and_errors_carry_the_cli_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let contents = noise_words(9, 4 << 20);
    // Slow enough to be caught running.
    let slow = "upload_limit = \"256KiB/s\"";
    let sharer_dir = daemon_dir(
        tmp.path(),
        "sharer",
        index,
        &[("slow.bin", &contents)],
        slow,
    );
    let sharer = Daemon::start(&NAPSTER, &sharer_dir, &[]);
    let sharer_id = wait_sharing(&sharer);
    let getter = Daemon::start(
        &NAPSTER,
        &daemon_dir(tmp.path(), "getter", index, &[], ""),
        &[],
    );
    let peer = sharer_id.to_string();
    let queued = getter.post(
        "/api/downloads",
        &json!({ "file": "slow.bin", "peer": peer }),
    );
    assert_eq!(queued.status, 201, "{}", queued.body);
    let n = queued.json()["transfer"].as_u64().unwrap();
    wait_until("some bytes to arrive", PATIENCE, || {
        getter.download(n)["done"].as_u64() > Some(0)
    });

    let paused = getter.post(&format!("/api/downloads/{n}/pause"), &json!({}));
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.json()["state"], "paused");
    // The row may say `pausing` a moment, while the download saves what arrived.
    wait_until("the row to say paused", PATIENCE, || {
        getter.download(n)["state"] == "paused"
    });
    let resumed = getter.post(&format!("/api/downloads/{n}/resume"), &json!({}));
    assert_eq!(resumed.json()["state"], "queued", "{}", resumed.body);
    wait_until("it to run again", PATIENCE, || {
        getter.download(n)["state"] == "running"
    });
    let cancelled = getter.post(&format!("/api/downloads/{n}/cancel"), &json!({}));
    assert_eq!(cancelled.json()["state"], "cancelled", "{}", cancelled.body);
    wait_until("the row to say cancelled", PATIENCE, || {
        getter.download(n)["state"] == "cancelled"
    });

    // The CLI's codes, each with its status.
    let again = getter.post(&format!("/api/downloads/{n}/pause"), &json!({}));
    assert_eq!(
        (again.status, again.code().as_str()),
        (409, "failed"),
        "{}",
        again.body
    );
    let missing = getter.post("/api/downloads/999/resume", &json!({}));
    assert_eq!(
        (missing.status, missing.code().as_str()),
        (404, "not_found"),
        "{}",
        missing.body
    );
    let nothing = getter.post("/api/downloads", &json!({ "file": "no-such-file.bin" }));
    assert_eq!(nothing.status, 404, "{}", nothing.body);
    let bad = getter.post("/api/downloads", &json!({ "files": "x" }));
    assert_eq!(
        (bad.status, bad.code().as_str()),
        (400, "usage"),
        "{}",
        bad.body
    );
    let no_query = getter.get("/api/search");
    assert_eq!((no_query.status, no_query.code().as_str()), (400, "usage"));
    assert_eq!(getter.get("/api/nothing").status, 404);
    let cleared = getter.send("DELETE", "/api/downloads", &json!({}));
    assert_eq!(cleared.json()["count"], 1, "{}", cleared.body);
    assert!(getter.downloads().is_empty());
}

#[test]
fn an_index_that_answers_late_is_asked_again() {
    let tmp = tempfile::tempdir().unwrap();
    // A port nobody listens on yet, kept for the index that comes later.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let dir = daemon_dir(tmp.path(), "sharer", addr, &[("a.txt", b"a")], "");
    let daemon = Daemon::start(&NAPSTER, &dir, &[]);
    let status = daemon.get("/api/status").json();
    assert!(status["sharing"].is_null(), "{status}");
    let (_, _stop, task) = common::start_index_at(addr, napster::index::Settings::default());
    task.detach();
    wait_sharing(&daemon);
}

#[test]
fn the_token_is_required_and_never_shown() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let daemon = Daemon::start(&NAPSTER, &daemon_dir(tmp.path(), "d", index, &[], ""), &[]);
    let host = daemon.addr;
    let none = daemon.raw(&format!("GET /api/status HTTP/1.1\r\nHost: {host}"));
    assert_eq!((none.status, none.code().as_str()), (401, "unauthorized"));
    let wrong = daemon.raw(&format!(
        "GET /api/status HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}x",
        daemon.token
    ));
    assert_eq!(wrong.status, 401);
    let status = daemon.get("/api/status");
    assert_eq!(status.status, 200);
    assert!(!status.body.contains(&daemon.token), "{}", status.body);
    let token_file = daemon.dir.join("web-token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // The printed address: a cookie the page's scripts cannot read, sent to this site only.
    let login = daemon.raw(&format!(
        "GET /?token={} HTTP/1.1\r\nHost: {host}",
        daemon.token
    ));
    assert_eq!(login.status, 303);
    let cookie = login.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let by_cookie = daemon.raw(&format!(
        "GET /api/downloads HTTP/1.1\r\nHost: {host}\r\nCookie: {pair}"
    ));
    assert_eq!(by_cookie.status, 200, "{}", by_cookie.body);
}

#[test]
fn dns_rebinding_and_cross_site_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let daemon = Daemon::start(&NAPSTER, &daemon_dir(tmp.path(), "d", index, &[], ""), &[]);
    let (host, token) = (daemon.addr, daemon.token.clone());
    let port = host.port();
    // DNS rebinding: the attacker's name, resolved to 127.0.0.1, is in `Host`.
    for forged in [
        format!("evil.example:{port}"),
        "evil.example".into(),
        format!("127.0.0.1.evil.example:{port}"),
    ] {
        let answer = daemon.raw(&format!(
            "GET /api/status HTTP/1.1\r\nHost: {forged}\r\nAuthorization: Bearer {token}"
        ));
        assert_eq!(
            (answer.status, answer.code().as_str()),
            (421, "bad_host"),
            "{forged}"
        );
        assert_eq!(
            daemon
                .raw(&format!("GET / HTTP/1.1\r\nHost: {forged}"))
                .status,
            421
        );
    }
    assert_eq!(daemon.raw(&format!("GET /api/status HTTP/1.1\r\nHost: localhost:{port}\r\nAuthorization: Bearer {token}")).status, 200);

    // Cross-site: another page's Origin is refused, even with the token.
    let foreign = daemon.raw(&format!(
        "POST /api/downloads/clear HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\nAuthorization: Bearer {token}\r\nContent-Length: 0"
    ));
    assert_eq!(
        (foreign.status, foreign.code().as_str()),
        (403, "bad_origin")
    );
    // The cookie alone does not change anything without the page's own Origin.
    let cookie_only = daemon.raw(&format!(
        "POST /api/downloads/clear HTTP/1.1\r\nHost: {host}\r\nCookie: napster_token={token}\r\nContent-Length: 0"
    ));
    assert_eq!(cookie_only.status, 403, "{}", cookie_only.body);
    let from_page = daemon.raw(&format!(
        "POST /api/downloads/clear HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nCookie: napster_token={token}\r\nContent-Length: 0"
    ));
    assert_eq!(from_page.status, 200, "{}", from_page.body);
    // No state change on GET, and no CORS: a preflight gets no permission.
    let get_change = daemon.raw(&format!(
        "GET /api/downloads/clear HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}"
    ));
    assert_eq!(get_change.status, 405);
    let preflight = daemon.raw(&format!(
        "OPTIONS /api/downloads HTTP/1.1\r\nHost: {host}\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: POST"
    ));
    assert_ne!(preflight.status, 200);
    for answer in [&foreign, &from_page, &preflight] {
        assert!(
            answer
                .headers
                .iter()
                .all(|(n, _)| !n.starts_with("access-control-")),
            "{answer:?}"
        );
    }
}

#[test]
fn only_the_embedded_page_is_served_no_path_reaches_the_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let dir = daemon_dir(
        tmp.path(),
        "d",
        index,
        &[("secret.txt", b"top secret words")],
        "",
    );
    let daemon = Daemon::start(&NAPSTER, &dir, &[]);
    let host = daemon.addr;
    let page = daemon.raw(&format!("GET / HTTP/1.1\r\nHost: {host}"));
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>napster</title>"));
    assert_eq!(
        daemon
            .raw(&format!("GET /app.js HTTP/1.1\r\nHost: {host}"))
            .status,
        200
    );
    for path in [
        "/../napster.toml",
        "/%2e%2e/napster.toml",
        "/share/secret.txt",
        "/app.js/../share/secret.txt",
        "/..%2f..%2fetc%2fpasswd",
        "//etc/passwd",
        "/web-token",
        "/napster.toml",
    ] {
        let answer = daemon.raw(&format!("GET {path} HTTP/1.1\r\nHost: {host}"));
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert!(
            !answer.body.contains("top secret")
                && !answer.body.contains(&daemon.token)
                && !answer.body.contains("[peer]"),
            "{path}"
        );
    }
}

#[test]
fn a_listen_address_beyond_loopback_needs_a_reverse_proxy_and_sigterm_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index(napster::index::Settings::default());
    let dir = daemon_dir(tmp.path(), "d", index, &[("a.txt", b"a")], "");
    let refused = NAPSTER.run_args(&dir, &["daemon", "--listen", "0.0.0.0:0"]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("reverse_proxy") && stderr.contains("loopback"),
        "{stderr}"
    );

    let daemon = Daemon::start(&NAPSTER, &dir, &[]);
    wait_sharing(&daemon);
    assert!(daemon.process.terminate().success());
}
