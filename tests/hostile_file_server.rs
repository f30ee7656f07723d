//! The peer's file server under hostile requests: path traversal in every spelling,
//! symlinks out of the shared folder, unregistered files, out-of-range offsets, bad
//! frames, and many downloaders at once. Every refusal is checked, and that the same
//! server still serves a normal request afterwards.

mod common;

use std::os::unix::fs::symlink;
use std::time::Duration;

use common::*;
use napster::protocol::{self, ErrorCode, PeerRequest, PeerResponse};

const HELLO: &[u8] = b"hello, world\n";
const INNER: &[u8] = b"inside a sub folder\n";

fn big() -> Vec<u8> {
    noise(42, 300 * 1024 + 17)
}

fn standard_server() -> FileServer {
    let big = big();
    start_file_server(&[
        ("hello.txt", HELLO),
        ("sub/inner.txt", INNER),
        ("big.bin", &big),
    ])
}

/// Whether `got` is a refusal of a name (not found, or a bad request).
fn is_name_refusal(got: &Got) -> bool {
    matches!(got, Got::Error(ErrorCode::NotFound | ErrorCode::BadRequest))
}

#[test]
fn traversal_and_malformed_names_are_refused() {
    let server = standard_server();
    let names = [
        "../secret",
        "../../secret",
        "/etc/passwd",
        "/etc/hostname",
        "%2e%2e/secret",
        "%2e%2e%2fsecret",
        "..%2fsecret",
        "a\\..\\b",
        "..\\secret",
        "hello.txt\0",
        "hello\0.txt",
        "sub/../../x",
        "sub/../hello.txt",
        "./hello.txt",
        "sub//inner.txt",
        "sub/inner.txt/",
        "sub",
        "..",
        ".",
        "",
        "outside/secret",
        "share/hello.txt",
        "HELLO.TXT",
    ];
    let secret_path = server.tmp.path().join("secret");
    let absolute_secret = secret_path.to_str().unwrap();
    let long_name = "a/".repeat(600) + "x";
    // All on one connection, then a good request on it: refusals do not break it.
    let mut raw = server.connect();
    for name in names
        .iter()
        .copied()
        .chain([absolute_secret, long_name.as_str()])
    {
        let got = get_on(&mut raw, name, 0, None);
        assert!(
            is_name_refusal(&got),
            "{:?} was not refused: {got:?}",
            &name[..name.len().min(60)]
        );
    }
    assert_eq!(
        get_on(&mut raw, "hello.txt", 0, None),
        Got::Data {
            size: HELLO.len() as u64,
            offset: 0,
            bytes: HELLO.to_vec()
        }
    );
    server.assert_serves("sub/inner.txt", INNER);
}

#[test]
fn a_symlink_leading_out_is_never_shared() {
    let (tmp, root) = prepare_folder(&[("hello.txt", HELLO)]);
    // Made before the scan: a file link and a folder link leading out, and, for
    // contrast, a link to a file inside the folder.
    symlink(tmp.path().join("secret"), root.join("escape.txt")).unwrap();
    symlink(tmp.path().join("outside"), root.join("escape_dir")).unwrap();
    symlink("/etc/passwd", root.join("passwd")).unwrap();
    let server = start_file_server_on(tmp, root);

    let shared: Vec<String> = server
        .folder
        .read()
        .entries()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(shared.contains(&"hello.txt".to_string()), "{shared:?}");
    for name in ["escape.txt", "escape_dir/secret", "passwd"] {
        assert!(
            !shared.iter().any(|s| s == name),
            "{name} is shared: {shared:?}"
        );
        let got = server.get(name, 0, None);
        assert!(is_name_refusal(&got), "{name} was served: {got:?}");
    }
    server.assert_serves("hello.txt", HELLO);
}

#[test]
fn a_registered_file_swapped_for_a_symlink_out_is_refused() {
    let server = start_file_server(&[
        ("hello.txt", HELLO),
        ("victim.txt", b"harmless"),
        ("swapdir/secret", b"harmless too"),
    ]);
    // After the scan: the file, and then a folder on the path, become links leading out.
    std::fs::remove_file(server.root.join("victim.txt")).unwrap();
    symlink(
        server.tmp.path().join("secret"),
        server.root.join("victim.txt"),
    )
    .unwrap();
    std::fs::remove_dir_all(server.root.join("swapdir")).unwrap();
    symlink(
        server.tmp.path().join("outside"),
        server.root.join("swapdir"),
    )
    .unwrap();

    for name in ["victim.txt", "swapdir/secret"] {
        let got = server.get(name, 0, None);
        assert!(is_name_refusal(&got), "{name} was served: {got:?}");
    }
    server.assert_serves("hello.txt", HELLO);
}

#[test]
fn a_file_created_after_the_scan_is_not_served() {
    let server = start_file_server(&[("hello.txt", HELLO)]);
    write_files(&server.root, &[("late.txt", b"not registered")]);
    write_files(&server.root, &[("sub/late.txt", b"not registered")]);
    for name in ["late.txt", "sub/late.txt"] {
        assert_eq!(
            server.get(name, 0, None),
            Got::Error(ErrorCode::NotFound),
            "{name}"
        );
    }
    server.assert_serves("hello.txt", HELLO);
}

#[test]
fn offsets_and_lengths_are_checked_against_the_file() {
    let server = standard_server();
    let big = big();
    let size = big.len() as u64;
    let mut raw = server.connect();

    // Past the end: a range error.
    for offset in [size + 1, size + 1_000_000, u64::MAX] {
        assert_eq!(
            get_on(&mut raw, "big.bin", offset, None),
            Got::Error(ErrorCode::Range),
            "offset {offset}"
        );
        assert_eq!(
            get_on(&mut raw, "big.bin", offset, Some(1)),
            Got::Error(ErrorCode::Range),
            "offset {offset}, length 1"
        );
    }
    // At the end: zero bytes, fine.
    assert_eq!(
        get_on(&mut raw, "big.bin", size, None),
        Got::Data {
            size,
            offset: size,
            bytes: vec![]
        }
    );
    assert_eq!(
        get_on(&mut raw, "big.bin", size, Some(10)),
        Got::Data {
            size,
            offset: size,
            bytes: vec![]
        }
    );
    // A length beyond the end is clamped.
    assert_eq!(
        get_on(&mut raw, "big.bin", size - 10, Some(1000)),
        Got::Data {
            size,
            offset: size - 10,
            bytes: big[big.len() - 10..].to_vec()
        }
    );
    assert_eq!(
        get_on(&mut raw, "big.bin", 0, Some(u64::MAX)),
        Got::Data {
            size,
            offset: 0,
            bytes: big.clone()
        }
    );
    assert_eq!(
        get_on(&mut raw, "big.bin", 1, Some(u64::MAX)),
        Got::Data {
            size,
            offset: 1,
            bytes: big[1..].to_vec()
        }
    );
    // A range inside is exact, and the stream stayed in step through all of the above.
    assert_eq!(
        get_on(&mut raw, "hello.txt", 7, Some(5)),
        Got::Data {
            size: HELLO.len() as u64,
            offset: 7,
            bytes: b"world".to_vec()
        }
    );
    server.assert_serves("big.bin", &big);
}

#[test]
fn bad_frames_are_refused() {
    let server = standard_server();
    // A request before hello.
    let mut raw = Raw::connect(server.addr);
    raw.send(&PeerRequest::Get {
        name: "hello.txt".into(),
        offset: 0,
        length: None,
    });
    match raw.recv::<PeerResponse>() {
        PeerResponse::Error { code, .. } => assert_eq!(code, ErrorCode::Version),
        other => panic!("get before hello: {other:?}"),
    }
    raw.expect_closed(WAIT);
    // A wrong version.
    let mut raw = Raw::connect(server.addr);
    raw.send(&PeerRequest::Hello {
        version: protocol::VERSION + 1,
    });
    match raw.recv::<PeerResponse>() {
        PeerResponse::Error { code, .. } => assert_eq!(code, ErrorCode::Version),
        other => panic!("wrong version: {other:?}"),
    }
    raw.expect_closed(WAIT);
    // A 4 GiB header, before and after hello.
    for after_hello in [false, true] {
        let mut raw = if after_hello {
            server.connect()
        } else {
            Raw::connect(server.addr)
        };
        raw.send_bytes(&[0xFF; 4]).unwrap();
        match raw.recv::<PeerResponse>() {
            PeerResponse::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest),
            other => panic!("4 GiB header: {other:?}"),
        }
        raw.expect_closed(WAIT);
    }
    // Garbage JSON after hello: a bad request, and the connection still works.
    let mut raw = server.connect();
    for body in [
        &b"\xff\xfe"[..],
        br#"{"type":"get","name":"hello.txt","offset":-1,"length":null}"#,
        br#"{"type":"get","name":"hello.txt","offset":0,"length":-5}"#,
        br#"{"type":"get","name":"hello.txt"}"#,
        br#"{"type":"delete","name":"hello.txt"}"#,
        br#"{"type":"chunks"}"#,
        br#"{"type":"chunks","name":7}"#,
        br#"{"type":"chunks","name":"hello.txt","offset":0}"#,
        br#"{"type":"ping","extra":1}"#,
        br#"{"type":"ping","name":"hello.txt"}"#,
    ] {
        raw.send_body(body).unwrap();
        match raw.recv::<PeerResponse>() {
            PeerResponse::Error { code, .. } => assert_eq!(
                code,
                ErrorCode::BadRequest,
                "{}",
                String::from_utf8_lossy(body)
            ),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    raw.send(&PeerRequest::Ping {});
    assert_eq!(raw.recv::<PeerResponse>(), PeerResponse::Pong {});
    assert_eq!(
        get_on(&mut raw, "hello.txt", 0, None),
        Got::Data {
            size: HELLO.len() as u64,
            offset: 0,
            bytes: HELLO.to_vec()
        }
    );
    server.assert_serves("hello.txt", HELLO);
}

// ---------------------------------------------------------------------------------------
// Chunk lists.

/// A file of more than two chunks, the last one short.
fn multi_chunk() -> Vec<u8> {
    let len = 2 * protocol::MIN_CHUNK as usize + 12_345;
    noise(7, len)
}

/// Assert that `got` is the true chunk list of `contents`.
fn assert_chunk_list_of(got: Chunked, contents: &[u8], what: &str) {
    let size = contents.len() as u64;
    let want = napster::digest::digest_bytes(contents).chunks;
    match got {
        Chunked::List {
            size: s,
            count,
            digests,
        } => {
            assert_eq!(s, size, "{what}: size");
            assert_eq!(count, protocol::chunk_count(size), "{what}: count");
            assert_eq!(digests.len() as u64, count, "{what}");
            assert!(digests == want, "{what}: the digests are not the file's");
        }
        other => panic!("{what}: expected a chunk list, got {other:?}"),
    }
}

#[test]
fn the_chunk_list_of_a_registered_file_is_its_true_one() {
    let multi = multi_chunk();
    let big = big();
    let server = start_file_server(&[
        ("hello.txt", HELLO),
        ("sub/inner.txt", INNER),
        ("big.bin", &big),
        ("multi.bin", &multi),
        ("empty.txt", b""),
    ]);
    assert_eq!(protocol::chunk_count(multi.len() as u64), 3);
    // All on one connection, chunk lists and gets interleaved: the raw digests after a
    // chunk list keep the stream in step.
    let mut raw = server.connect();
    for (name, contents) in [
        ("hello.txt", HELLO),
        ("sub/inner.txt", INNER),
        ("big.bin", &big[..]),
        ("multi.bin", &multi[..]),
        ("empty.txt", b""),
    ] {
        assert_chunk_list_of(chunks_on(&mut raw, name), contents, name);
        assert_eq!(
            get_on(&mut raw, name, 0, None),
            Got::Data {
                size: contents.len() as u64,
                offset: 0,
                bytes: contents.to_vec()
            },
            "{name}"
        );
    }
    // What the server sends is what the index was told: the root of the list is the
    // entry's `chunks`.
    let entries = server.folder.read().entries();
    let multi_entry = entries.iter().find(|e| e.name == "multi.bin").unwrap();
    assert_eq!(multi_entry.chunks, real_entry("multi.bin", &multi).chunks);
    assert_eq!(multi_entry, &real_entry("multi.bin", &multi));
    server.assert_serves("multi.bin", &multi);
}

#[test]
fn chunk_lists_of_traversal_and_unregistered_names_are_refused() {
    let server = standard_server();
    write_files(&server.root, &[("late.txt", b"not registered")]);
    let secret_path = server.tmp.path().join("secret");
    let absolute_secret = secret_path.to_str().unwrap().to_owned();
    let long_name = "a/".repeat(600) + "x";
    let names = [
        "../secret",
        "../x",
        "../../secret",
        "sub/../../secret",
        "sub/../hello.txt",
        "./hello.txt",
        "/etc/passwd",
        absolute_secret.as_str(),
        "hello.txt\0",
        "hello\0.txt",
        "\0",
        "..\\secret",
        "outside/secret",
        "share/hello.txt",
        "HELLO.TXT",
        "sub",
        "sub/",
        "..",
        ".",
        "",
        "late.txt",
        "never-heard-of-it.bin",
        long_name.as_str(),
    ];
    // All on one connection, then a good one on it: refusals do not break it.
    let mut raw = server.connect();
    for name in names {
        let got = chunks_on(&mut raw, name);
        assert!(
            matches!(
                got,
                Chunked::Error(ErrorCode::NotFound | ErrorCode::BadRequest)
            ),
            "the chunk list of {:?} was not refused: {got:?}",
            &name[..name.len().min(60)]
        );
    }
    assert_chunk_list_of(chunks_on(&mut raw, "hello.txt"), HELLO, "after refusals");
    // A fresh connection, for each kind, also gets a refusal and not a list.
    for name in ["../x", "/etc/passwd", "a\0b", "late.txt"] {
        assert!(
            matches!(
                server.chunks(name),
                Chunked::Error(ErrorCode::NotFound | ErrorCode::BadRequest)
            ),
            "{name:?}"
        );
    }
    server.assert_serves("hello.txt", HELLO);
}

#[test]
fn a_chunk_list_before_hello_is_refused() {
    let server = standard_server();
    let mut raw = Raw::connect(server.addr);
    raw.send(&PeerRequest::Chunks {
        name: "hello.txt".into(),
    });
    match raw.recv::<PeerResponse>() {
        PeerResponse::Error { code, .. } => assert_eq!(code, ErrorCode::Version),
        other => panic!("chunks before hello: {other:?}"),
    }
    raw.expect_closed(WAIT);
    server.assert_serves("hello.txt", HELLO);
}

#[test]
fn a_thousand_concurrent_gets_all_get_the_right_bytes() {
    let server = standard_server();
    let big = std::sync::Arc::new(big());
    let addr = server.addr;
    let workers: Vec<_> = (0..1000u64)
        .map(|i| {
            let big = big.clone();
            std::thread::spawn(move || {
                let mut raw = Raw::connect(addr);
                raw.read_timeout(Duration::from_secs(15));
                raw.peer_hello();
                // Every fourth asks for the whole file, the others for a slice.
                let (offset, length) = if i % 4 == 0 {
                    (0, None)
                } else {
                    ((i * 997) % (big.len() as u64 / 2), Some(50_000))
                };
                let got = get_on(&mut raw, "big.bin", offset, length);
                let end = length.map_or(big.len(), |l| ((offset + l) as usize).min(big.len()));
                let want = Got::Data {
                    size: big.len() as u64,
                    offset,
                    bytes: big[offset as usize..end].to_vec(),
                };
                assert!(got == want, "request {i} got the wrong answer or bytes");
            })
        })
        .collect();
    let failures = workers
        .into_iter()
        .map(|w| w.join())
        .filter(Result::is_err)
        .count();
    assert_eq!(failures, 0, "{failures} of 1000 concurrent gets failed");
    server.assert_serves("hello.txt", HELLO);
}

// ---------------------------------------------------------------------------------------
// Swaps on disk while serving (a local attacker who can write in the shared folder).

/// Whether a `Get` returned the secret kept outside the shared folder.
fn leaked(got: &Got) -> bool {
    matches!(got, Got::Data { bytes, .. } if bytes.windows(10).any(|w| w == &SECRET[..10]))
}

#[test]
fn a_symlink_exchanged_in_while_downloading_never_leaks_the_outside_file() {
    let server = start_file_server(&[("hello.txt", HELLO), ("victim.txt", b"harmless")]);
    // A link out, beside the registered file; a thread swaps the two names atomically,
    // again and again, while the file is asked for.
    let link = server.root.join("swap");
    symlink(server.tmp.path().join("secret"), &link).unwrap();
    let victim = server.root.join("victim.txt");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && swaps < 10_000_000 {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &victim,
                    rustix::fs::CWD,
                    &link,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let started = std::time::Instant::now();
    let mut raw = server.connect();
    let (mut served, mut refused, mut leaks) = (0, 0, 0);
    for _ in 0..300 {
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
        let got = get_on(&mut raw, "victim.txt", 0, None);
        if leaked(&got) {
            leaks += 1;
        } else if matches!(got, Got::Data { .. }) {
            assert_eq!(
                got,
                Got::Data {
                    size: 8,
                    offset: 0,
                    bytes: b"harmless".to_vec()
                }
            );
            served += 1;
        } else {
            assert!(is_name_refusal(&got), "{got:?}");
            refused += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert_eq!(
        leaks, 0,
        "the outside file was sent {leaks} times ({served} served, {refused} refused, {swaps} swaps)"
    );
    assert!(swaps > 0 && served + refused > 0);
    server.assert_serves("hello.txt", HELLO);
}

#[test]
fn a_registered_file_replaced_by_another_file_is_refused_until_rescanned() {
    let server = start_file_server(&[("hello.txt", HELLO), ("victim.txt", b"harmless")]);
    // Another file renamed over the registered one: not the file that was hashed.
    write_files(server.tmp.path(), &[("other.txt", b"something else")]);
    std::fs::rename(
        server.tmp.path().join("other.txt"),
        server.root.join("victim.txt"),
    )
    .unwrap();
    assert_eq!(
        server.get("victim.txt", 0, None),
        Got::Error(ErrorCode::NotFound)
    );
    server.assert_serves("hello.txt", HELLO);
}

#[test]
fn a_symlink_inside_the_folder_is_served_as_the_file_it_led_to_at_scan_time() {
    let (tmp, root) = prepare_folder(&[("hello.txt", HELLO), ("sub/inner.txt", INNER)]);
    symlink("sub/inner.txt", root.join("alias.txt")).unwrap();
    let server = start_file_server_on(tmp, root);
    server.assert_serves("alias.txt", INNER);
    // Re-pointed out of the folder after the scan: still the file that was scanned.
    std::fs::remove_file(server.root.join("alias.txt")).unwrap();
    symlink(
        server.tmp.path().join("secret"),
        server.root.join("alias.txt"),
    )
    .unwrap();
    server.assert_serves("alias.txt", INNER);
}

#[test]
fn a_fifo_swapped_in_for_a_shared_file_is_refused_and_the_server_keeps_serving() {
    let server = start_file_server(&[("hello.txt", HELLO), ("victim.txt", b"harmless")]);
    std::fs::remove_file(server.root.join("victim.txt")).unwrap();
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        server.root.join("victim.txt"),
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .unwrap();
    // More requests at once than the executor has threads: a blocking open of the FIFO
    // on an executor thread would freeze every one of them, and the whole peer with it.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) + 2;
    let mut conns: Vec<Raw> = (0..threads).map(|_| server.connect()).collect();
    for raw in &mut conns {
        raw.send(&PeerRequest::Get {
            name: "victim.txt".into(),
            offset: 0,
            length: None,
        });
    }
    let started = std::time::Instant::now();
    for raw in &mut conns {
        raw.read_timeout(Duration::from_secs(2));
        match raw.recv::<PeerResponse>() {
            PeerResponse::Error { code, message } => {
                assert_eq!(code, ErrorCode::NotFound);
                assert!(message.contains("FIFO"), "{message}");
            }
            other => panic!("a FIFO was answered with {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    // The same connections and the same server go on answering.
    for raw in &mut conns {
        raw.send(&PeerRequest::Ping {});
        assert!(matches!(raw.recv::<PeerResponse>(), PeerResponse::Pong {}));
    }
    server.assert_serves("hello.txt", HELLO);
}

#[test]
fn a_fifo_or_a_symlink_swapped_in_between_scan_and_hashing_is_skipped_at_once() {
    let (tmp, root) = prepare_folder(&[
        ("hello.txt", HELLO),
        ("fifo.txt", b"soon a FIFO"),
        ("link.txt", b"soon a link"),
    ]);
    let listing = napster::peer::scan::scan(&root).unwrap();
    std::fs::remove_file(root.join("fifo.txt")).unwrap();
    let mode = rustix::fs::Mode::from_raw_mode(0o600);
    rustix::fs::mkfifoat(rustix::fs::CWD, root.join("fifo.txt"), mode).unwrap();
    std::fs::remove_file(root.join("link.txt")).unwrap();
    symlink(tmp.path().join("secret"), root.join("link.txt")).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let share = listing.hash(&|_| {}).map_err(|e| e.to_string());
        tx.send(share.map(|s| s.entries())).unwrap();
    });
    let entries = rx
        .recv_timeout(Duration::from_secs(3))
        .expect("hashing waited on the FIFO")
        .unwrap();
    let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["hello.txt"]);
}

// ---------------------------------------------------------------------------------------
// Upload slots: slow readers, one address, the line.

/// A file larger than what the socket buffers of a connection hold, so that a
/// downloader that does not read holds its upload slot.
const SLOW_FILE: usize = 24 << 20;

/// A file server with `max_uploads` slots, `per_address` per address, the `timeout`
/// and `min_rate` given, serving `big.bin` (of [`SLOW_FILE`] bytes) on `ip`.
fn slot_server(
    max_uploads: usize,
    per_address: usize,
    timeout: Duration,
    min_rate: u64,
    ip: std::net::IpAddr,
) -> (
    std::net::SocketAddr,
    tempfile::TempDir,
    napster::runtime::ShutdownTrigger,
) {
    let (tmp, root) = prepare_folder(&[("big.bin", &noise(9, SLOW_FILE))]);
    let mut settings = file_server_settings();
    settings.max_uploads = max_uploads;
    settings.max_uploads_per_address = per_address;
    settings.limits.timeout = timeout;
    settings.limits.min_rate = min_rate;
    let (addr, _folder, trigger) = serve_folder_with(&root, settings, ip);
    (addr, tmp, trigger)
}

/// Ask for the whole of `big.bin` on a new connection to `addr` and return the first
/// answer, without reading any of the bytes.
fn get_without_reading(addr: std::net::SocketAddr) -> (Raw, PeerResponse) {
    let mut raw = Raw::connect(addr);
    raw.peer_hello();
    raw.send(&PeerRequest::Get {
        name: "big.bin".into(),
        offset: 0,
        length: None,
    });
    let answer = raw.recv::<PeerResponse>();
    (raw, answer)
}

/// The first answer that is not a (repeated) `queued`.
fn after_the_line(raw: &mut Raw) -> PeerResponse {
    loop {
        match raw.recv::<PeerResponse>() {
            PeerResponse::Queued { .. } => {}
            answer => return answer,
        }
    }
}

/// Read the bytes after a `sending` and check there are `SLOW_FILE` of them.
fn read_all_of_big(raw: &mut Raw) {
    let mut bytes = vec![0; SLOW_FILE];
    raw.read_exact(&mut bytes).expect("the whole file");
}

#[test]
fn slow_readers_from_one_address_cannot_take_every_upload_slot() {
    // Listening on every address of both families, so that 127.0.0.1 and ::1 are two
    // different downloaders.
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    };
    drop(probe);
    let (addr, _tmp, _trigger) = slot_server(
        4,
        2,
        Duration::from_secs(10),
        0,
        std::net::Ipv6Addr::UNSPECIFIED.into(),
    );
    let v4 = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    let v6 = std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()));
    // One address asks for four uploads and reads none of them.
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let (raw, answer) = get_without_reading(v4);
        assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
        hogs.push(raw);
    }
    for _ in 0..2 {
        let (_raw, answer) = get_without_reading(v4);
        match answer {
            PeerResponse::Error { code, message } => {
                assert_eq!(code, ErrorCode::Busy);
                assert!(message.contains("finish one first"), "{message}");
            }
            other => panic!("a third upload to one address: {other:?}"),
        }
    }
    // Another address is served at once.
    let (mut other, answer) = get_without_reading(v6);
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    read_all_of_big(&mut other);
}

#[test]
fn a_waiting_downloader_is_told_its_place_in_line() {
    let (addr, _tmp, _trigger) =
        slot_server(1, 8, Duration::from_secs(10), 0, [127, 0, 0, 1].into());
    let (mut first, answer) = get_without_reading(addr);
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    let (mut second, answer) = get_without_reading(addr);
    assert_eq!(answer, PeerResponse::Queued { position: 1 });
    let (mut third, answer) = get_without_reading(addr);
    assert_eq!(answer, PeerResponse::Queued { position: 2 });
    // The first finishes: the second is sent the file, the third moves up.
    read_all_of_big(&mut first);
    assert!(matches!(
        after_the_line(&mut second),
        PeerResponse::Sending { .. }
    ));
    assert_eq!(
        third.recv::<PeerResponse>(),
        PeerResponse::Queued { position: 1 }
    );
    read_all_of_big(&mut second);
    assert!(matches!(
        after_the_line(&mut third),
        PeerResponse::Sending { .. }
    ));
    read_all_of_big(&mut third);
}

#[test]
fn a_reader_that_stops_is_dropped_after_the_write_timeout_and_frees_its_slot() {
    let timeout = Duration::from_millis(500);
    let (addr, _tmp, _trigger) = slot_server(1, 8, timeout, 0, [127, 0, 0, 1].into());
    let (_stopped, answer) = get_without_reading(addr);
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    let started = std::time::Instant::now();
    let (mut waiting, answer) = get_without_reading(addr);
    assert_eq!(answer, PeerResponse::Queued { position: 1 });
    let answer = after_the_line(&mut waiting);
    let waited = started.elapsed();
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    read_all_of_big(&mut waiting);
    assert!(
        waited < Duration::from_secs(3),
        "the slot was freed only after {waited:?}"
    );
}

#[test]
fn a_reader_that_trickles_below_the_minimum_rate_loses_its_slot() {
    // Reads 64 KiB every 50 ms (about 1.2 MiB/s): every write moves well within the
    // 2 s timeout, so only the 4 MiB/s minimum rate can free the slot.
    let timeout = Duration::from_secs(2);
    let (addr, _tmp, _trigger) = slot_server(1, 8, timeout, 4 << 20, [127, 0, 0, 1].into());
    let (mut trickler, answer) = get_without_reading(addr);
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    let started = std::time::Instant::now();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let trickling = std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        while !stopping.load(std::sync::atomic::Ordering::SeqCst)
            && trickler.read_exact(&mut buf).is_ok()
        {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (mut after, answer) = get_without_reading(addr);
    assert_eq!(answer, PeerResponse::Queued { position: 1 });
    let answer = after_the_line(&mut after);
    let waited = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    read_all_of_big(&mut after);
    trickling.join().unwrap();
    assert!(
        waited < Duration::from_secs(8),
        "the slot was freed only after {waited:?}"
    );
}

/// A file server like [`slot_server`] with one upload slot and a 2 s timeout, its
/// uploads limited by `upload`.
fn limited_server(
    upload: std::sync::Arc<napster::limit::RateLimit>,
) -> (
    std::net::SocketAddr,
    tempfile::TempDir,
    napster::runtime::ShutdownTrigger,
) {
    let (tmp, root) = prepare_folder(&[("big.bin", &noise(9, SLOW_FILE))]);
    let mut settings = file_server_settings();
    settings.max_uploads = 1;
    settings.limits.timeout = Duration::from_secs(2);
    settings.limits.min_rate = 0;
    settings.upload = upload;
    let (addr, _folder, trigger) = serve_folder_with(&root, settings, [127, 0, 0, 1].into());
    (addr, tmp, trigger)
}

/// Most a limit change may take to reach a running upload (the throttle sleeps in
/// slices of 100 ms; the rest is room for a loaded machine).
const LIMIT_CHANGE: Duration = Duration::from_secs(2);

/// `limit 5` (5 B/s) used to freeze an upload for the whole debt of its first block
/// (16 KiB at 5 B/s: 55 minutes) in one sleep, and raising the limit woke nothing.
#[test]
fn raising_a_low_limit_reaches_a_running_upload_at_once() {
    let upload = std::sync::Arc::new(napster::limit::RateLimit::new(5));
    let (addr, _tmp, _trigger) = limited_server(upload.clone());
    let (mut reader, answer) = get_without_reading(addr);
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    // The first block goes at once; the upload then waits off its debt.
    let mut first = vec![0; 16 * 1024];
    reader.read_exact(&mut first).expect("the first block");
    upload.set(0);
    let raised = std::time::Instant::now();
    reader.read_timeout(LIMIT_CHANGE * 2);
    let mut next = vec![0; 64 * 1024];
    reader
        .read_exact(&mut next)
        .expect("the upload goes on after the limit was raised");
    let took = raised.elapsed();
    assert!(took < LIMIT_CHANGE, "the new limit applied after {took:?}");
}

/// A downloader that gave up while a limited upload waited used to keep its slot for
/// the whole debt (the sharer's `uploads` showed it "sending" for 5+ minutes while the
/// next downloader waited at position 1); now its slot is freed within the timeout.
#[test]
fn a_departed_downloader_frees_a_limited_upload_slot_within_the_timeout() {
    let upload = std::sync::Arc::new(napster::limit::RateLimit::new(5));
    let (addr, _tmp, _trigger) = limited_server(upload);
    let (mut gone, answer) = get_without_reading(addr);
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    let mut some = vec![0; 1024];
    gone.read_exact(&mut some).expect("the start of the file");
    let (mut next, answer) = get_without_reading(addr);
    assert_eq!(answer, PeerResponse::Queued { position: 1 });
    drop(gone);
    let left = std::time::Instant::now();
    // Told its place at least every half timeout while it waits: a bounded wait.
    let deadline = left + Duration::from_secs(5);
    let answer = loop {
        match next.recv::<PeerResponse>() {
            PeerResponse::Queued { .. } if std::time::Instant::now() < deadline => {}
            answer => break answer,
        }
    };
    let waited = left.elapsed();
    assert!(matches!(answer, PeerResponse::Sending { .. }), "{answer:?}");
    assert!(
        waited < Duration::from_secs(2),
        "the slot was freed only after {waited:?} (timeout 2 s)"
    );
}
