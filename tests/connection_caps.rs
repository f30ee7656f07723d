//! Connections and descriptors under a flood from one address: the file server and the
//! index give one source address a small share of their connections, close what is over
//! it at once (no TLS handshake, no descriptor held), and keep serving other addresses
//! quickly, even when the process may open few files. Linux routes all of 127/8 to the
//! loopback interface, so 127.0.0.2 is another host as the servers see it.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process::{Napster, last_word};
use common::*;
use napster::client::IndexClient;
use napster::peer::serve as file_server;

const NAPSTER: Napster = Napster {
    log: "error",
    patience: Some(Duration::from_secs(20)),
};

/// The flooding host.
const FLOODER: [u8; 4] = [127, 0, 0, 2];

/// Longest a client at another address may wait for an answer during a flood.
const SERVED_WITHIN: Duration = Duration::from_secs(1);

/// A TCP connection to `addr` from the loopback address `from`, or `None` when it
/// cannot be made.
fn connect_from(from: [u8; 4], addr: SocketAddr) -> Option<TcpStream> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).ok()?;
    bind(&fd, &SocketAddr::from((from, 0))).ok()?;
    connect(&fd, &addr).ok()?;
    Some(TcpStream::from(fd))
}

/// Let this test process open as many files as it may (its flood holds over a thousand).
fn raise_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    setrlimit(Resource::Nofile, limit).expect("raising the limit on open files");
}

/// Whether the server closed `stream` (or reset it) within `within`; any bytes it sends
/// first are read and ignored.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + within;
    let mut buf = [0; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                );
            }
        }
    }
}

#[test]
fn one_address_cannot_hold_every_file_server_connection() {
    raise_file_limit();
    let (_tmp, root) = prepare_folder(&[("hello.txt", b"hello\n")]);
    let settings = file_server::Settings {
        identity: napster::identity::Identity::generate().unwrap(),
        ..file_server::Settings::default()
    };
    let (addr, _folder, _trigger) = serve_folder_with(&root, settings, [127, 0, 0, 1].into());

    // More silent connections from one address than the whole server would hold.
    let mut silent: Vec<TcpStream> = (0..1100)
        .map(|i| connect_from(FLOODER, addr).unwrap_or_else(|| panic!("connection {i}")))
        .collect();

    // A downloader at another address is served, and quickly.
    let started = Instant::now();
    let mut raw = Raw::connect(addr);
    raw.read_timeout(WAIT);
    raw.peer_hello();
    let got = get_on(&mut raw, "hello.txt", 0, None);
    assert_eq!(
        got,
        Got::Data {
            size: 6,
            offset: 0,
            bytes: b"hello\n".to_vec()
        }
    );
    let took = started.elapsed();
    assert!(took < SERVED_WITHIN, "served only after {took:?}");

    // The flooder keeps a small share; the rest were closed at once, not held for a
    // handshake.
    let closed = silent
        .iter_mut()
        .rev()
        .take(1000)
        .filter_map(|s| closed_within(s, WAIT).then_some(()))
        .count();
    assert_eq!(
        closed, 1000,
        "connections over the address's share were held"
    );
}

#[test]
fn a_flood_of_silent_connections_under_a_low_file_limit_leaves_others_served() {
    raise_file_limit();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("napster.toml"),
        "[index]\nmetrics = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let mut index = NAPSTER.start_under(
        &["prlimit", "--nofile=1024:1024", "--"],
        tmp.path(),
        "serve 0\n",
    );
    let addr: SocketAddr = last_word(&index.wait_for("index server listening on"))
        .parse()
        .unwrap();

    // One host opens about 1150 connections and keeps them, saying nothing.
    let opened = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (opened, stop) = (opened.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while held.len() < 1150 && !stop.load(Ordering::SeqCst) {
                if let Some(stream) = connect_from(FLOODER, addr) {
                    held.push(stream);
                    opened.fetch_add(1, Ordering::SeqCst);
                }
            }
            held
        })
    };
    wait_until("the flood to open 1100 connections", WAIT, || {
        opened.load(Ordering::SeqCst) >= 1100
    });

    // Meanwhile, a client at another address is answered quickly, every time.
    for i in 0..5 {
        let started = Instant::now();
        let mut client = smol::block_on(IndexClient::connect(addr, client_limits()))
            .unwrap_or_else(|e| panic!("ping {i}: {e}"));
        smol::block_on(client.ping()).unwrap_or_else(|e| panic!("ping {i}: {e}"));
        let took = started.elapsed();
        assert!(took < SERVED_WITHIN, "ping {i} answered after {took:?}");
    }
    stop.store(true, Ordering::SeqCst);
    let held = flood.join().unwrap();
    assert!(held.len() >= 1100);

    // The refusals are counted by reason.
    let url = last_word(&index.wait_for("metrics on"));
    let body = scrape(&url).1;
    let address = r#"napster_index_connections_refused_total{reason="address"}"#;
    assert!(sample(&body, address) >= 900.0, "{body}");
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
