//! The index server's Prometheus endpoint, scraped from a real `napster serve` process
//! while real peers and clients use it: the numbers move with the traffic.

mod common;
mod pg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::process::{Napster, last_word, text};
use common::{WAIT, wait_until};

const NAPSTER: Napster = Napster {
    log: "error",
    patience: Some(Duration::from_secs(20)),
};

/// GET `url` (`http://host:port/path`); the status line and the body.
fn scrape(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = TcpStream::connect(host).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample named `name` (with its labels, as printed), 0 if absent.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[test]
fn the_metrics_endpoint_counts_real_traffic() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("napster.toml"),
        "[index]\nmetrics = \"127.0.0.1:0\"\nmax_connections = 3\n",
    )
    .unwrap();
    let mut index = NAPSTER.start(tmp.path(), "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    let url = last_word(&index.wait_for("metrics on"));

    let (status, body) = scrape(&url);
    assert!(status.contains("200"), "{status}");
    assert_eq!(sample(&body, "napster_index_peers"), 0.0, "{body}");
    assert!(body.ends_with("# EOF\n"), "OpenMetrics text: {body}");
    let (status, _) = scrape(&url.replace("/metrics", "/other"));
    assert!(status.contains("404"), "{status}");

    let share = tmp.path().join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("a.txt"), b"a").unwrap();
    std::fs::write(share.join("b.txt"), b"b").unwrap();
    let mut peer = NAPSTER.start(
        tmp.path(),
        &format!("connect {addr}\nregister {} 0\n", share.display()),
    );
    peer.wait_for("registered as peer");
    for _ in 0..3 {
        let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "search", "a.txt"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "files", "99"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let body = scrape(&url).1;
    assert_eq!(sample(&body, "napster_index_peers"), 1.0, "{body}");
    assert_eq!(sample(&body, "napster_index_files"), 2.0, "{body}");
    let searches = r#"napster_index_requests_total{kind="search",outcome="ok"}"#;
    assert!(sample(&body, searches) >= 3.0, "{body}");
    let registers = r#"napster_index_requests_total{kind="register",outcome="ok"}"#;
    assert_eq!(sample(&body, registers), 1.0, "{body}");
    let refused = r#"napster_index_requests_total{kind="browse",outcome="error"}"#;
    assert_eq!(sample(&body, refused), 1.0, "{body}");
    assert!(
        sample(&body, "napster_index_search_seconds_count") >= 3.0,
        "{body}"
    );
    assert!(
        sample(&body, "napster_index_search_seconds_sum") > 0.0,
        "{body}"
    );
    let busy = r#"napster_index_connections_refused_total{reason="busy"}"#;
    assert_eq!(sample(&body, busy), 0.0, "{body}");

    // The peer holds two of the three connections (its shell's and its session) and a
    // silent socket the third: the next
    // client is told busy, and counted.
    let _silent = TcpStream::connect(&addr).unwrap();
    wait_until("a client is refused as busy", WAIT, || {
        let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "peers"]);
        out.status.code() == Some(1) && sample(&scrape(&url).1, busy) >= 1.0
    });

    // The peer leaves: the gauges follow.
    peer.kill();
    wait_until("the peer's files leave", WAIT, || {
        let body = scrape(&url).1;
        sample(&body, "napster_index_peers") == 0.0 && sample(&body, "napster_index_files") == 0.0
    });
}

#[test]
fn on_postgresql_the_pool_and_database_errors_are_counted() {
    let pg = pg::Postgres::start();
    let url = pg.fresh_database();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("napster.toml"),
        "[index]\nmetrics = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut index = NAPSTER.start(tmp.path(), &format!("serve 0 {url}\n"));
    let addr = last_word(&index.wait_for("index server listening on"));
    let url = last_word(&index.wait_for("metrics on"));
    let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "search", "anything"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let body = scrape(&url).1;
    let max = r#"napster_index_db_pool_connections{state="max"}"#;
    assert!(sample(&body, max) >= 1.0, "{body}");
    assert_eq!(
        sample(&body, "napster_index_store_errors_total"),
        0.0,
        "{body}"
    );

    pg.pause();
    let out = NAPSTER.run_args(tmp.path(), &["--index", &addr, "search", "anything"]);
    pg.resume();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let body = scrape(&url).1;
    assert!(
        sample(&body, "napster_index_store_errors_total") >= 1.0,
        "{body}"
    );
    let failed = r#"napster_index_requests_total{kind="search",outcome="error"}"#;
    assert!(sample(&body, failed) >= 1.0, "{body}");
}
