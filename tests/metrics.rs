//! The index server's Prometheus endpoint, scraped from a real `napster serve` process
//! while real peers and clients use it: the numbers move with the traffic.

mod common;
mod pg;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::process::{Napster, last_word, text};
use common::{WAIT, http_host, scrape, wait_until};

const NAPSTER: Napster = Napster {
    log: "error",
    patience: Some(Duration::from_secs(20)),
};

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
    // client is closed at once (before TLS), and counted as busy.
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

/// A TCP connection to `addr` (`host:port`) from the loopback address `from`: Linux
/// routes all of 127/8 to the loopback interface, so 127.0.0.2 is another host.
fn connect_from(from: [u8; 4], addr: &str) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    bind(&fd, &std::net::SocketAddr::from((from, 0))).unwrap();
    connect(&fd, &addr).unwrap();
    TcpStream::from(fd)
}

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// How many threads process `pid` runs.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .count()
}

/// A `napster serve` with metrics on and `extra` lines in its `[index]` table; the
/// process and its metrics URL.
fn metrics_server(dir: &std::path::Path, extra: &str) -> (common::process::Running, String) {
    std::fs::write(
        dir.join("napster.toml"),
        format!("[index]\nmetrics = \"127.0.0.1:0\"\n{extra}"),
    )
    .unwrap();
    let mut index = NAPSTER.start(dir, "serve 0\n");
    index.wait_for("index server listening on");
    let url = last_word(&index.wait_for("metrics on"));
    (index, url)
}

/// Whether the server closed `stream` within `within` (a reset counts; bytes it sends
/// first, such as an error status, are read and ignored).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = std::time::Instant::now() + within;
    let mut buf = [0; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    }
}

#[test]
fn a_256_mib_header_line_is_refused_after_a_few_kib() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, url) = metrics_server(tmp.path(), "");
    let host = http_host(&url);
    assert!(scrape(&url).0.contains("200"));
    let before = rss(index.id());

    let mut stream = TcpStream::connect(host).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {host}\r\nX-Huge: ").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    let refused = loop {
        if sent >= 256 << 20 {
            break None;
        }
        match stream.write_all(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(e) => break Some(e),
        }
    };
    // The server stopped reading (and closed) long before the end: what was sent is what
    // the two sockets' buffers hold, not the line.
    let refused = refused.unwrap_or_else(|| panic!("all 256 MiB of one header line were read"));
    assert!(
        matches!(
            refused.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ),
        "the server neither read nor closed: {refused} after {sent} bytes"
    );
    assert!(
        sent < 64 << 20,
        "{sent} bytes of one header line were taken"
    );
    let grown = rss(index.id()).saturating_sub(before);
    assert!(grown < 16 << 20, "the index grew by {grown} bytes");

    // A normal scrape still works, and the refusal was counted.
    let (status, body) = scrape(&url);
    assert!(status.contains("200"), "{status}");
    let counted = r#"napster_index_metrics_refused_total{reason="head_too_large"}"#;
    assert_eq!(sample(&body, counted), 1.0, "{body}");
}

#[test]
fn slow_scrapers_grow_no_threads_and_are_cut_at_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let (index, url) = metrics_server(tmp.path(), "");
    let host = http_host(&url);
    assert!(scrape(&url).0.contains("200"));
    let before = threads(index.id());

    // 300 connections from one host, each sending half a request head and no more.
    let started = std::time::Instant::now();
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = connect_from([127, 0, 0, 2], host);
            // Those beyond the address's share may be closed already.
            let _ = write!(stream, "GET /metrics HTTP/1.1\r\nHost: {host}\r\n");
            stream
        })
        .collect();

    // A scrape from another address works meanwhile, and the index runs no more threads.
    let (status, _) = scrape(&url);
    assert!(status.contains("200"), "{status}");
    let during = threads(index.id());
    assert!(
        during <= before + 2,
        "{before} threads before 300 slow scrapers, {during} with them"
    );

    // Every slow connection is closed: at once beyond the address's share, the others
    // at the deadline for a request head (5 s by default).
    let deadline = Duration::from_secs(5);
    for (i, stream) in slow.iter_mut().enumerate() {
        assert!(
            closed_within(stream, deadline + Duration::from_secs(5)),
            "slow connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= deadline.mul_f64(0.9),
        "closed before the deadline"
    );
    let body = scrape(&url).1;
    let cut = r#"napster_index_metrics_refused_total{reason="head_timeout"}"#;
    assert!(sample(&body, cut) >= 1.0, "{body}");
    let address = r#"napster_index_metrics_refused_total{reason="address"}"#;
    assert!(sample(&body, address) >= 250.0, "{body}");
}
