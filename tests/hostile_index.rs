//! The index server under hostile input: garbage, oversized and malformed frames,
//! absurd registrations, slow clients, connection floods, session hijacking, expiry.
//! Every case checks the refusal (error code or closed connection) and that the same
//! index still serves a well-behaved client afterwards.

// The counting allocator below is the one place napster code uses `unsafe`: it wraps
// the system allocator to prove that no huge buffer is ever allocated.
#![allow(unsafe_code)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use napster::Error;
use napster::client::IndexClient;
use napster::identity::Identity;
use napster::index::Settings;
use napster::protocol::{self, ErrorCode, IndexRequest, IndexResponse, SearchQuery};
use napster::runtime::ShutdownTrigger;
use serde_json::json;

// ---------------------------------------------------------------------------------------
// An allocator that counts huge allocations, so "nothing allocated" can be checked.

/// Any single allocation this large counts as "allocated what the header claimed".
const HUGE: usize = 256 << 20;

static HUGE_ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

struct CountingAllocator;

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE {
            HUGE_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= HUGE {
            HUGE_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= HUGE {
            HUGE_ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// ---------------------------------------------------------------------------------------
// A running index with one registered "canary" peer, to check it still serves.

const CANARY: &str = "canary-file.txt";

struct Fixture {
    addr: SocketAddr,
    settings: Settings,
    canary: IndexClient,
    _trigger: ShutdownTrigger,
}

fn fixture(settings: Settings) -> Fixture {
    let (addr, trigger) = start_index(settings.clone());
    let mut canary = index_client(addr).expect("connecting the canary");
    smol::block_on(canary.register(40_001, &token(0xca11a7), &[entry(CANARY, 3)]))
        .expect("registering the canary");
    Fixture {
        addr,
        settings,
        canary,
        _trigger: trigger,
    }
}

impl Fixture {
    fn hostile() -> Fixture {
        fixture(hostile_index_settings())
    }

    /// A raw connection that has not said hello.
    fn raw(&self) -> Raw {
        Raw::connect(self.addr)
    }

    /// A raw connection that said hello.
    fn raw_hello(&self) -> Raw {
        let mut raw = self.raw();
        raw.index_hello();
        raw
    }

    /// Time within which a refused connection must be closed.
    fn close_within(&self) -> Duration {
        self.settings.limits.timeout + Duration::from_secs(3)
    }

    /// The index still answers a new, well-behaved client: ping and search.
    fn assert_serves(&self) {
        let mut client = index_client(self.addr).expect("a normal client can no longer connect");
        smol::block_on(client.ping()).expect("a normal client's ping failed");
        let (hits, truncated) =
            smol::block_on(client.search("canary")).expect("a normal client's search failed");
        assert!(!truncated);
        assert_eq!(hits.len(), 1, "the canary should be found: {hits:?}");
        assert_eq!(hits[0].file.name, CANARY);
    }

    /// Number of registered peers, as a normal client sees it.
    fn peer_count(&self) -> usize {
        let mut client = index_client(self.addr).expect("connecting");
        smol::block_on(client.peers()).expect("listing peers").len()
    }
}

/// Decode `frame` as an index reply and return its error code.
fn error_code_of(frame: &[u8]) -> ErrorCode {
    let response: IndexResponse = serde_json::from_slice(frame).unwrap_or_else(|e| {
        panic!(
            "undecodable reply {:?}: {e}",
            String::from_utf8_lossy(frame)
        )
    });
    index_error_code(&response)
}

/// Expect exactly one error reply with `code`, then a closed connection.
fn expect_error_then_close(raw: &mut Raw, code: ErrorCode, within: Duration, what: &str) {
    let frames = raw.frames_until_closed(within);
    assert_eq!(
        frames.len(),
        1,
        "{what}: expected one error reply then a close, got {} frame(s): {:?}",
        frames.len(),
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect::<Vec<_>>()
    );
    assert_eq!(error_code_of(&frames[0]), code, "{what}");
}

/// Longest a connection over a connection cap may stay open: it is closed at once, before
/// any TLS, so only scheduling delays it.
const CLOSED_AT_ONCE: Duration = Duration::from_secs(2);

/// Open a TCP connection to `addr` (from `from`) and check that the index closes it at
/// once, without a word (no TLS handshake is spent on it).
fn expect_closed_at_once(from: [u8; 4], addr: SocketAddr, what: &str) {
    use std::io::Read;
    let mut raw = raw_tcp_from(from, addr);
    raw.set_read_timeout(Some(CLOSED_AT_ONCE)).unwrap();
    let started = std::time::Instant::now();
    let mut byte = [0u8; 1];
    match raw.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "{what}: not closed at once ({other:?} after {:?})",
            started.elapsed()
        ),
    }
}

/// Send a JSON value as one frame on a connection that said hello and return the reply.
fn send_json(raw: &mut Raw, value: &serde_json::Value) -> IndexResponse {
    raw.send_body(value.to_string().as_bytes())
        .expect("sending a request");
    raw.recv()
}

// ---------------------------------------------------------------------------------------
// Garbage and malformed frames.

#[test]
fn random_bytes_get_bad_request_or_a_close() {
    let fx = Fixture::hostile();
    for seed in 1..=6u64 {
        for after_hello in [false, true] {
            let what = format!("seed {seed}, after hello {after_hello}");
            let mut raw = if after_hello {
                fx.raw_hello()
            } else {
                fx.raw()
            };
            let _ = raw.send_bytes(&noise(seed, 512));
            raw.shutdown_write();
            // Whatever the noise decodes to, every answer is a bad-request error and the
            // connection ends (it cannot be a welcome or a result).
            let frames = raw.frames_until_closed(fx.close_within());
            for frame in &frames {
                assert_eq!(error_code_of(frame), ErrorCode::BadRequest, "{what}");
            }
        }
    }
    fx.assert_serves();
}

#[test]
fn an_http_request_gets_bad_request_and_a_close() {
    let fx = Fixture::hostile();
    // "GET " read as a length is about 1.2 GB: refused on the header alone.
    let mut raw = fx.raw();
    raw.send_bytes(b"GET / HTTP/1.1\r\nHost: index\r\n\r\n")
        .unwrap();
    expect_error_then_close(&mut raw, ErrorCode::BadRequest, fx.close_within(), "http");
    fx.assert_serves();
}

#[test]
fn a_4_gib_header_is_refused_without_allocating() {
    let fx = Fixture::hostile();
    for after_hello in [false, true] {
        let mut raw = if after_hello {
            fx.raw_hello()
        } else {
            fx.raw()
        };
        raw.send_bytes(&[0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
        expect_error_then_close(
            &mut raw,
            ErrorCode::BadRequest,
            fx.close_within(),
            &format!("0xFFFFFFFF header, after hello {after_hello}"),
        );
    }
    assert_eq!(
        HUGE_ALLOCATIONS.load(Ordering::SeqCst),
        0,
        "something allocated {HUGE} bytes or more for a frame header"
    );
    fx.assert_serves();
}

#[test]
fn a_frame_just_over_max_frame_is_refused_and_one_at_the_limit_is_not() {
    let fx = Fixture::hostile();
    let max = fx.settings.limits.max_frame as usize;

    // Exactly max_frame bytes: a ping padded with JSON whitespace is still a ping.
    let mut raw = fx.raw_hello();
    let mut body = br#"{"type":"ping"}"#.to_vec();
    body.resize(max, b' ');
    raw.send_body(&body).unwrap();
    assert_eq!(raw.recv::<IndexResponse>(), IndexResponse::Pong {});

    // One byte more: refused on the header, closed.
    for after_hello in [false, true] {
        let mut raw = if after_hello {
            fx.raw_hello()
        } else {
            fx.raw()
        };
        raw.send_bytes(&(max as u32 + 1).to_be_bytes()).unwrap();
        expect_error_then_close(
            &mut raw,
            ErrorCode::BadRequest,
            fx.close_within(),
            &format!("max_frame + 1, after hello {after_hello}"),
        );
    }
    fx.assert_serves();
}

#[test]
fn invalid_utf8_is_a_bad_request() {
    let fx = Fixture::hostile();
    let bodies: [&[u8]; 3] = [
        b"\xff\xfe\xfd\xfc",
        b"{\"type\":\"search\",\"pattern\":\"\xff\xfe\"}",
        b"{\"type\":\"ping\"\xc0}",
    ];
    for body in bodies {
        let mut raw = fx.raw_hello();
        raw.send_body(body).unwrap();
        let reply = raw.recv::<IndexResponse>();
        assert_eq!(
            index_error_code(&reply),
            ErrorCode::BadRequest,
            "body {body:?}"
        );
    }
    // Before hello: refused and closed.
    let mut raw = fx.raw();
    raw.send_body(b"\xff\xfe\xfd\xfc").unwrap();
    expect_error_then_close(
        &mut raw,
        ErrorCode::BadRequest,
        fx.close_within(),
        "invalid utf-8 before hello",
    );
    fx.assert_serves();
}

#[test]
fn unknown_or_misshapen_messages_are_bad_requests() {
    let fx = Fixture::hostile();
    let bodies = [
        json!({"type": "launch_missiles"}),
        json!({"type": "search", "pattern": "x", "extra": 1}),
        json!({"type": "hello", "version": 1, "extra": 1}),
        json!({"type": "search"}),
        json!({"type": "search", "pattern": 42}),
        json!({"type": "Search", "pattern": "x"}),
        json!({"pattern": "x"}),
        json!({}),
        json!([]),
        json!("ping"),
        json!(null),
        json!(12345),
    ];
    let mut raw = fx.raw_hello();
    for body in &bodies {
        let reply = send_json(&mut raw, body);
        assert!(
            matches!(
                reply,
                IndexResponse::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "body {body}: expected bad_request, got {reply:?}"
        );
    }
    // The connection survived its bad requests.
    assert_eq!(
        raw.index_request(&IndexRequest::Ping {}),
        IndexResponse::Pong {}
    );
    // Before hello, an unknown type is refused and the connection closed.
    let mut raw = fx.raw();
    raw.send_body(json!({"type": "launch_missiles"}).to_string().as_bytes())
        .unwrap();
    expect_error_then_close(
        &mut raw,
        ErrorCode::BadRequest,
        fx.close_within(),
        "unknown type before hello",
    );
    fx.assert_serves();
}

#[test]
fn unknown_fields_on_field_less_messages_are_bad_requests() {
    let fx = Fixture::hostile();
    let mut raw = fx.raw_hello();
    for body in [
        json!({"type": "ping", "extra": 1}),
        json!({"type": "peers", "pattern": "x"}),
        json!({"type": "unregister", "token": "x"}),
    ] {
        let reply = send_json(&mut raw, &body);
        assert!(
            matches!(
                reply,
                IndexResponse::Error {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "body {body}: expected bad_request, got {reply:?}"
        );
    }
    fx.assert_serves();
}

#[test]
fn a_message_before_hello_is_refused() {
    let fx = Fixture::hostile();
    let requests = [
        IndexRequest::Ping {},
        IndexRequest::Search(SearchQuery::pattern("canary")),
        IndexRequest::Peers {},
        IndexRequest::Register {
            port: 4000,
            token: token(7),
            files: vec![entry("sneaky.txt", 1)],
            name: None,
            local: None,
            mapped_port: None,
        },
    ];
    for request in &requests {
        let mut raw = fx.raw();
        raw.send(request);
        expect_error_then_close(
            &mut raw,
            ErrorCode::Version,
            fx.close_within(),
            &format!("{request:?} before hello"),
        );
    }
    assert_eq!(fx.peer_count(), 1, "a register before hello registered");
    fx.assert_serves();
}

#[test]
fn a_wrong_protocol_version_is_refused() {
    let fx = Fixture::hostile();
    for version in [0, protocol::VERSION + 1, u32::MAX] {
        let mut raw = fx.raw();
        raw.send(&IndexRequest::Hello { version });
        expect_error_then_close(
            &mut raw,
            ErrorCode::Version,
            fx.close_within(),
            &format!("version {version}"),
        );
    }
    // A version that is not even a u32 is a malformed message.
    for version in [json!(-1), json!("1"), json!(4_294_967_296u64), json!(1.5)] {
        let mut raw = fx.raw();
        raw.send_body(
            json!({"type": "hello", "version": version})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        expect_error_then_close(
            &mut raw,
            ErrorCode::BadRequest,
            fx.close_within(),
            &format!("version {version}"),
        );
    }
    // Hello twice is a bad request, not a reset of the session.
    let mut raw = fx.raw_hello();
    let reply = raw.index_request(&IndexRequest::Hello {
        version: protocol::VERSION,
    });
    assert_eq!(index_error_code(&reply), ErrorCode::BadRequest);
    fx.assert_serves();
}

// ---------------------------------------------------------------------------------------
// Absurd fields.

const GOOD_SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A well-formed file entry as JSON (built from the typed entry, so that it has every
/// field the protocol wants), named `name`; tests then spoil one field at a time.
fn file_json(name: &str) -> serde_json::Value {
    let mut file = serde_json::to_value(entry("ok.txt", 10)).unwrap();
    file["name"] = json!(name);
    file["sha256"] = json!(GOOD_SHA);
    file
}

/// A well-formed file entry as JSON with one field replaced.
fn file_json_with(field: &str, value: serde_json::Value) -> serde_json::Value {
    let mut file = file_json("ok.txt");
    file[field] = value;
    file
}

fn register_json(
    port: serde_json::Value,
    token: &str,
    files: serde_json::Value,
) -> serde_json::Value {
    json!({"type": "register", "port": port, "token": token, "files": files})
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn registrations_with_absurd_fields_are_refused() {
    let fx = Fixture::hostile();
    let tok = token(0xabc);
    let long_name = "a".repeat(10_000);
    let bad_names = [
        long_name.as_str(),
        "../secret",
        "a/../../b",
        "..",
        ".",
        "./a",
        "/etc/passwd",
        "/",
        "a\0b",
        "a\nb",
        "a\rb",
        "\u{1b}[31mred",
        "tab\there",
        "del\u{7f}",
        "a\\..\\b",
        "",
        "a//b",
        "dir/",
    ];
    let mut cases: Vec<(String, serde_json::Value)> = bad_names
        .iter()
        .map(|name| {
            (
                format!("name {:?}", &name[..name.len().min(40)]),
                register_json(json!(4000), &tok, json!([file_json(name)])),
            )
        })
        .collect();
    let bad_shas = [
        GOOD_SHA.to_uppercase(),
        GOOD_SHA[..63].to_string(),
        format!("{GOOD_SHA}0"),
        "g".repeat(64),
        " ".repeat(64),
        String::new(),
    ];
    for sha in &bad_shas {
        cases.push((
            format!("sha256 {sha:?}"),
            register_json(
                json!(4000),
                &tok,
                json!([file_json_with("sha256", json!(sha))]),
            ),
        ));
    }
    // The chunk-list root obeys the same rule as the SHA-256, and is required.
    for chunks in &bad_shas {
        cases.push((
            format!("chunks {chunks:?}"),
            register_json(
                json!(4000),
                &tok,
                json!([file_json_with("chunks", json!(chunks))]),
            ),
        ));
    }
    for chunks in [json!(null), json!(42), json!([GOOD_SHA])] {
        cases.push((
            format!("chunks {chunks}"),
            register_json(json!(4000), &tok, json!([file_json_with("chunks", chunks)])),
        ));
    }
    for field in ["chunks", "sha256", "size", "name"] {
        let mut file = file_json("ok.txt");
        file.as_object_mut().unwrap().remove(field);
        cases.push((
            format!("no {field}"),
            register_json(json!(4000), &tok, json!([file])),
        ));
    }
    let bad_sizes = [
        json!(-1),
        json!(9_223_372_036_854_775_808u64), // i64::MAX + 1
        json!(u64::MAX),
        json!(1e30),
        json!(1.5),
        json!("10"),
        json!(null),
    ];
    for size in &bad_sizes {
        cases.push((
            format!("size {size}"),
            register_json(
                json!(4000),
                &tok,
                json!([file_json_with("size", size.clone())]),
            ),
        ));
    }
    let too_many: Vec<serde_json::Value> = (0..=fx.settings.max_files_per_peer)
        .map(|i| file_json(&format!("file{i}.txt")))
        .collect();
    cases.push((
        format!("{} files", too_many.len()),
        register_json(json!(4000), &tok, json!(too_many)),
    ));
    let unicode_token = "é".repeat(16);
    let bad_tokens = [
        tok[..31].to_string(),
        format!("{tok}0"),
        "g".repeat(32),
        String::new(),
        unicode_token,
        format!("{}\n", &tok[..31]),
    ];
    for bad in &bad_tokens {
        cases.push((
            format!("token {bad:?}"),
            register_json(json!(4000), bad, json!([file_json("ok.txt")])),
        ));
    }
    for port in [
        json!(0),
        json!(-1),
        json!(65_536),
        json!("4000"),
        json!(null),
    ] {
        cases.push((
            format!("port {port}"),
            register_json(port, &tok, json!([file_json("ok.txt")])),
        ));
    }

    let mut raw = fx.raw_hello();
    for (what, body) in &cases {
        let reply = send_json(&mut raw, body);
        assert_eq!(index_error_code(&reply), ErrorCode::BadRequest, "{what}");
    }
    // A size above u64::MAX cannot be built with serde_json's numbers: spell it out.
    let body = register_json(
        json!(4000),
        &tok,
        json!([file_json_with("size", json!("SIZE"))]),
    )
    .to_string()
    .replace(r#""SIZE""#, "18446744073709551616");
    raw.send_body(body.as_bytes()).unwrap();
    let reply = raw.recv::<IndexResponse>();
    assert_eq!(index_error_code(&reply), ErrorCode::BadRequest, "size 2^64");

    // Nothing got registered, not even partly.
    assert_eq!(
        fx.peer_count(),
        1,
        "a refused registration left a peer behind"
    );
    let mut client = index_client(fx.addr).unwrap();
    let peers = smol::block_on(client.peers()).unwrap();
    let files: u64 = peers.iter().map(|p| p.files).sum();
    assert_eq!(files, 1, "only the canary should be shared: {peers:?}");

    // Control: the same request with nothing spoilt is accepted, so each refusal above
    // was for its spoilt field.
    let reply = send_json(
        &mut raw,
        &register_json(json!(4000), &tok, json!([file_json("ok.txt")])),
    );
    assert!(
        matches!(reply, IndexResponse::Registered { files: 1, .. }),
        "a well-formed registration was refused: {reply:?}"
    );
    fx.assert_serves();
}

#[test]

fn unknown_fields_in_a_file_entry_are_bad_requests() {
    // "Unknown fields are errors" (docs/PROTOCOL.md), in the entries of a register or
    // add_files as in the message itself.
    let fx = Fixture::hostile();
    let mut raw = fx.raw_hello();
    let mut extra = file_json("extra-field.txt");
    extra["owner"] = json!("root");
    let reply = send_json(
        &mut raw,
        &register_json(json!(4000), &token(0xe7a), json!([extra.clone()])),
    );
    assert!(
        matches!(
            reply,
            IndexResponse::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "register with an unknown field in an entry: {reply:?}"
    );
    let reply = send_json(
        &mut raw,
        &register_json(json!(4000), &token(0xe7a), json!([file_json("ok.txt")])),
    );
    assert!(
        matches!(reply, IndexResponse::Registered { files: 1, .. }),
        "{reply:?}"
    );
    let reply = send_json(&mut raw, &json!({"type": "add_files", "files": [extra]}));
    assert!(
        matches!(
            reply,
            IndexResponse::Error {
                code: ErrorCode::BadRequest,
                ..
            }
        ),
        "add_files with an unknown field in an entry: {reply:?}"
    );
    let mut client = index_client(fx.addr).unwrap();
    let (hits, _) = smol::block_on(client.search("extra-field")).unwrap();
    assert!(hits.is_empty(), "{hits:?}");
    fx.assert_serves();
}

#[test]
fn add_files_with_absurd_fields_or_beyond_the_limit_are_refused() {
    let fx = Fixture::hostile();
    let mut raw = fx.raw_hello();
    let start: Vec<_> = (0..fx.settings.max_files_per_peer - 1)
        .map(|i| entry(&format!("mine{i}.txt"), i as u64))
        .collect();
    match raw.index_request(&IndexRequest::Register {
        port: 4000,
        token: token(0xadd),
        files: start.clone(),
        name: None,
        local: None,
        mapped_port: None,
    }) {
        IndexResponse::Registered { files, .. } => assert_eq!(files, start.len() as u64),
        other => panic!("registering: {other:?}"),
    }
    for name in ["../up.txt", "/abs.txt", "nul\0.txt", "a\\b"] {
        let reply = send_json(
            &mut raw,
            &json!({"type": "add_files", "files": [file_json(name)]}),
        );
        assert_eq!(index_error_code(&reply), ErrorCode::BadRequest, "{name:?}");
    }
    // Two more would pass the per-peer limit.
    let reply = raw.index_request(&IndexRequest::AddFiles {
        files: vec![entry("extra1.txt", 1), entry("extra2.txt", 2)],
    });
    assert_eq!(
        index_error_code(&reply),
        ErrorCode::BadRequest,
        "over the limit"
    );
    // One more, built like the refused ones but unspoilt, is fine, and the count shows
    // nothing bad slipped in.
    assert_eq!(
        send_json(
            &mut raw,
            &json!({"type": "add_files", "files": [file_json("extra1.txt")]}),
        ),
        IndexResponse::Done {
            files: fx.settings.max_files_per_peer as u64
        }
    );
    fx.assert_serves();
}

#[test]
fn searches_with_absurd_patterns_are_refused() {
    let fx = Fixture::hostile();
    let mut raw = fx.raw_hello();
    let too_long = "a".repeat(protocol::MAX_PATTERN + 1);
    let patterns = [
        "",
        "   ",
        "\t",
        too_long.as_str(),
        "can\0ary",
        "can\nary",
        "\u{1b}[2J",
        "canary\u{7f}",
    ];
    for pattern in patterns {
        let reply = raw.index_request(&IndexRequest::Search(SearchQuery::pattern(pattern)));
        assert_eq!(
            index_error_code(&reply),
            ErrorCode::BadRequest,
            "pattern {:?}",
            &pattern[..pattern.len().min(40)]
        );
    }
    // At the limit is fine.
    let at_limit = "a".repeat(protocol::MAX_PATTERN);
    match raw.index_request(&IndexRequest::Search(SearchQuery::pattern(at_limit))) {
        IndexResponse::Results { hits, .. } => assert!(hits.is_empty()),
        other => panic!("a pattern at the limit: {other:?}"),
    }
    // Lookups of names that cannot exist are refused the same way.
    for name in ["../x", "/etc/passwd", "a\0b", ""] {
        let reply = raw.index_request(&IndexRequest::Lookup { name: name.into() });
        assert_eq!(
            index_error_code(&reply),
            ErrorCode::BadRequest,
            "lookup {name:?}"
        );
    }
    fx.assert_serves();
}

#[test]
fn changes_without_registering_are_not_registered_errors() {
    let fx = Fixture::hostile();
    let mut raw = fx.raw_hello();
    let requests = [
        IndexRequest::AddFiles {
            files: vec![entry("x.txt", 1)],
        },
        IndexRequest::RemoveFiles {
            names: vec![CANARY.into()],
        },
        IndexRequest::Unregister {},
    ];
    for request in &requests {
        let reply = raw.index_request(request);
        assert_eq!(
            index_error_code(&reply),
            ErrorCode::NotRegistered,
            "{request:?}"
        );
    }
    // And once registered then unregistered, it is back to not registered.
    match raw.index_request(&IndexRequest::Register {
        port: 4000,
        token: token(0x1),
        files: vec![entry("brief.txt", 1)],
        name: None,
        local: None,
        mapped_port: None,
    }) {
        IndexResponse::Registered { .. } => {}
        other => panic!("registering: {other:?}"),
    }
    assert_eq!(
        raw.index_request(&IndexRequest::Unregister {}),
        IndexResponse::Done { files: 0 }
    );
    for request in &requests {
        let reply = raw.index_request(request);
        assert_eq!(
            index_error_code(&reply),
            ErrorCode::NotRegistered,
            "after unregister: {request:?}"
        );
    }
    // The canary, which nobody but its own session may remove, is still there.
    fx.assert_serves();
}

// ---------------------------------------------------------------------------------------
// Slow clients and floods.

#[test]
fn a_slow_client_is_cut_off_while_others_are_served() {
    let mut settings = hostile_index_settings();
    settings.limits.timeout = Duration::from_secs(1);
    let timeout = settings.limits.timeout;
    let fx = fixture(settings);

    // One byte of a frame before hello, one after hello, and a silent connection.
    let mut before = fx.raw();
    let mut after = fx.raw_hello();
    let mut silent = fx.raw();
    let started = Instant::now();
    before.send_bytes(&[0]).unwrap();
    after.send_bytes(&[0]).unwrap();

    // A dripping client: one byte of a valid frame every 100 ms would take seconds.
    let mut drip = fx.raw_hello();
    let dripping = std::thread::spawn(move || {
        let mut body = br#"{"type":"ping"}"#.to_vec();
        body.resize(200, b' ');
        let frame = [&(body.len() as u32).to_be_bytes()[..], &body].concat();
        for byte in frame {
            if drip.send_bytes(&[byte]).is_err() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    });

    // Meanwhile a normal client is served, and the stalled ones are still open.
    fx.assert_serves();
    assert!(
        started.elapsed() < timeout,
        "serving a normal client took longer than the frame timeout"
    );
    assert!(before.is_open_and_quiet(), "closed before the timeout");
    assert!(after.is_open_and_quiet(), "closed before the timeout");

    for (what, raw) in [
        ("one byte before hello", &mut before),
        ("one byte after hello", &mut after),
        ("silent before hello", &mut silent),
    ] {
        raw.expect_closed(timeout + Duration::from_secs(3));
        let elapsed = started.elapsed();
        assert!(
            elapsed >= timeout.mul_f64(0.9),
            "{what}: closed after {elapsed:?}, before the frame timeout"
        );
        assert!(
            elapsed < timeout + Duration::from_secs(3),
            "{what}: closed only after {elapsed:?}"
        );
    }
    let cut = dripping
        .join()
        .unwrap()
        .expect("the dripping client could send a whole 200-byte frame at 10 bytes/s");
    assert!(
        cut >= timeout.mul_f64(0.9) && cut < timeout + Duration::from_secs(3),
        "dripping: cut off after {cut:?}, not at the frame timeout {timeout:?}"
    );
    fx.assert_serves();
}

#[test]
fn a_connection_flood_is_closed_at_once_and_service_resumes() {
    let mut settings = hostile_index_settings();
    settings.max_connections = 8;
    let mut fx = fixture(settings.clone());

    // The canary holds one connection; fill the other seven.
    let held: Vec<Raw> = (0..settings.max_connections - 1)
        .map(|_| fx.raw_hello())
        .collect();
    for i in 0..5 {
        expect_closed_at_once(LOCAL, fx.addr, &format!("extra connection {i}"));
    }
    // Connections already in are still served during the flood.
    let (hits, _) = smol::block_on(fx.canary.search("canary")).expect("the canary's search");
    assert_eq!(hits.len(), 1);

    drop(held);
    wait_until("the index to accept connections again", WAIT, || {
        let mut client = match index_client(fx.addr) {
            Ok(client) => client,
            Err(_) => return false,
        };
        smol::block_on(client.search("canary")).is_ok_and(|(hits, _)| hits.len() == 1)
    });
    fx.assert_serves();
}

#[test]
fn duplicate_names_in_one_registration_are_refused() {
    let fx = Fixture::hostile();
    let mut client = index_client(fx.addr).unwrap();
    let twice = [
        entry("same.txt", 1),
        entry("other.txt", 2),
        entry("same.txt", 3),
    ];
    let refused = smol::block_on(client.register(5400, &token(0xd0b), &twice));
    match refused {
        Err(Error::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::BadRequest);
            assert!(message.contains("same.txt"), "{message}");
        }
        other => panic!("a registration naming a file twice was accepted: {other:?}"),
    }
    smol::block_on(client.register(5400, &token(0xd0b), &[entry("same.txt", 1)])).unwrap();
    let added = smol::block_on(client.add_files(vec![entry("b.txt", 1), entry("b.txt", 2)]));
    assert!(
        matches!(
            added,
            Err(Error::Refused {
                code: ErrorCode::BadRequest,
                ..
            })
        ),
        "{added:?}"
    );
    fx.assert_serves();
}

/// Register `files` on a raw connection from `from`; the reply.
fn register_from(
    from: [u8; 4],
    addr: SocketAddr,
    n: u128,
    files: Vec<protocol::FileEntry>,
) -> IndexResponse {
    let mut raw = raw_from(from, addr);
    raw.index_hello();
    raw.send(&IndexRequest::Register {
        port: 5500,
        token: token(n),
        files,
        name: None,
        local: None,
        mapped_port: None,
    });
    let reply = raw.recv::<IndexResponse>();
    // Keep the session (and its files) for the rest of the test.
    std::mem::forget(raw);
    reply
}

fn files(prefix: &str, n: usize, name_len: usize) -> Vec<protocol::FileEntry> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i:03}-");
            let pad = "x".repeat(name_len.saturating_sub(name.len()));
            entry(&format!("{name}{pad}"), 1)
        })
        .collect()
}

fn assert_full(reply: &IndexResponse, what: &str, says: &str) {
    match reply {
        IndexResponse::Error { code, message } => {
            assert_eq!(*code, ErrorCode::Full, "{what}: {message}");
            assert!(message.contains(says), "{what}: {message}");
        }
        other => panic!("{what}: accepted beyond the index's capacity: {other:?}"),
    }
}

#[test]
fn the_index_has_a_capacity_in_all_and_per_address() {
    let mut settings = hostile_index_settings();
    settings.max_files_per_address = 10;
    settings.max_index_files = 16;
    settings.max_index_name_bytes = 1000;
    let fx = fixture(settings);
    let local = [127, 0, 0, 1];
    let other = [127, 0, 0, 2];

    // 127.0.0.1: the canary's 1 file and 8 more; 5 more would pass its 10.
    let eight = register_from(local, fx.addr, 0xa1, files("a", 8, 10));
    assert!(
        matches!(eight, IndexResponse::Registered { files: 8, .. }),
        "{eight:?}"
    );
    let too_many = register_from(local, fx.addr, 0xa2, files("b", 5, 10));
    assert_full(&too_many, "a 10th file from one address", "your address");
    // Another address still has room: 14 files in all.
    let five = register_from(other, fx.addr, 0xb1, files("c", 5, 10));
    assert!(
        matches!(five, IndexResponse::Registered { files: 5, .. }),
        "{five:?}"
    );
    // The index holds 16 at most.
    let beyond = register_from(other, fx.addr, 0xb2, files("d", 3, 10));
    assert_full(&beyond, "a 17th file in the index", "at most 16 files");
    // ... and 1000 bytes of names at most (14 files hold about 150 now).
    let long = register_from(other, fx.addr, 0xb3, files("e", 2, 500));
    assert_full(&long, "1000 bytes of names", "bytes of file names");
    // A peer registering again replaces its own files: they are not counted twice
    // (127.0.0.1 is exactly at its 10).
    let mut client = index_client(fx.addr).unwrap();
    smol::block_on(client.register(5501, &token(0xc1), &files("f", 1, 10))).unwrap();
    smol::block_on(client.register(5501, &token(0xc1), &files("f", 1, 10)))
        .expect("registering the same file again");
    fx.assert_serves();
}

/// A raw connection to `addr` from the loopback address `from` (Linux routes all of
/// 127/8 to the loopback interface, so 127.0.0.2 is another host as the index sees it).
fn raw_from(from: [u8; 4], addr: SocketAddr) -> Raw {
    Raw::from_stream(raw_tcp_from(from, addr))
}

/// [`raw_from`] before any TLS: the TCP connection.
fn raw_tcp_from(from: [u8; 4], addr: SocketAddr) -> std::net::TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("a socket");
    bind(&fd, &SocketAddr::from((from, 0))).expect("binding the client's address");
    connect(&fd, &addr).expect("connecting");
    std::net::TcpStream::from(fd)
}

/// The loopback address tests connect from unless they say otherwise.
const LOCAL: [u8; 4] = [127, 0, 0, 1];

#[test]
fn one_address_cannot_hold_every_connection() {
    let mut settings = hostile_index_settings();
    settings.max_connections = 16;
    settings.max_connections_per_address = 4;
    let fx = fixture(settings);

    // The canary holds one connection from 127.0.0.1; three more fill its share.
    let held: Vec<Raw> = (0..3).map(|_| fx.raw_hello()).collect();
    for i in 0..5 {
        expect_closed_at_once(
            LOCAL,
            fx.addr,
            &format!("extra connection {i} from 127.0.0.1"),
        );
    }
    // Another address is served while 127.0.0.1 is at its share.
    let mut other = raw_from([127, 0, 0, 2], fx.addr);
    other.index_hello();
    other.send(&IndexRequest::Ping {});
    assert_eq!(other.recv::<IndexResponse>(), IndexResponse::Pong {});

    // Closing one gives 127.0.0.1 its slot back.
    drop(held);
    wait_until("127.0.0.1 to be served again", WAIT, || {
        index_client(fx.addr).is_ok_and(|mut c| smol::block_on(c.ping()).is_ok())
    });
    fx.assert_serves();
}

// ---------------------------------------------------------------------------------------
// Sessions: ownership, leaving, expiry.

fn search_hits(client: &mut IndexClient, pattern: &str) -> Vec<napster::protocol::Hit> {
    smol::block_on(client.search(pattern)).expect("searching").0
}

/// Connect a client, retrying while the index is at its connection limit.
fn connect_when_free(addr: SocketAddr) -> IndexClient {
    connect_when_free_as(addr, &Identity::generate().unwrap())
}

/// [`connect_when_free`], proving `identity`.
fn connect_when_free_as(addr: SocketAddr, identity: &Identity) -> IndexClient {
    let mut client = None;
    wait_until("a free connection slot", WAIT, || {
        client = index_client_as(addr, identity).ok();
        client.is_some()
    });
    client.unwrap()
}

fn index_client_as(addr: SocketAddr, identity: &Identity) -> napster::Result<IndexClient> {
    smol::block_on(IndexClient::connect_as(
        addr,
        identity,
        None,
        client_limits(),
    ))
}

#[test]
fn a_peer_s_files_belong_to_its_key_and_latest_session() {
    // Three connections at most: the canary plus two. A connection is only accepted once
    // an earlier one has been completely torn down, which tells when a close took effect.
    let mut settings = hostile_index_settings();
    settings.max_connections = 3;
    let fx = fixture(settings);
    let ta = token(0xA);
    let tb = token(0xB);
    let key_a = Identity::generate().unwrap();

    let mut a = index_client_as(fx.addr, &key_a).unwrap();
    let pa = smol::block_on(a.register(5001, &ta, &[entry("alpha.txt", 10)])).unwrap();

    // Another peer (another key), even with A's token, cannot remove or replace A's
    // files: a stolen or replayed token is worth nothing without A's key.
    let mut b = index_client(fx.addr).unwrap();
    let pb = smol::block_on(b.register(5002, &ta, &[entry("beta.txt", 20)])).unwrap();
    assert_ne!(pa, pb);
    assert_eq!(
        smol::block_on(b.remove_files(vec!["alpha.txt".into()])).unwrap(),
        1,
        "B's own count"
    );
    smol::block_on(b.unregister()).unwrap();
    let hits = search_hits(&mut a, "alpha");
    assert_eq!(hits.len(), 1, "B removed A's file: {hits:?}");
    assert_eq!(hits[0].peer_id, pa);
    drop(b);

    // A new session proving A's key takes over with the same Peer ID (whatever token).
    let mut c = connect_when_free_as(fx.addr, &key_a);
    let pc =
        smol::block_on(c.register(5003, &tb, &[entry("alpha.txt", 10), entry("gamma.txt", 30)]))
            .unwrap();
    assert_eq!(pc, pa, "the same key must get the same peer id");
    let hits = search_hits(&mut c, "alpha");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].addr.port(), 5003, "the new session's port is used");

    // The old session no longer owns the files.
    match smol::block_on(a.remove_files(vec!["alpha.txt".into()])) {
        Err(Error::Refused { code, .. }) => assert_eq!(code, ErrorCode::NotRegistered),
        other => panic!("the old session removed files: {other:?}"),
    }
    match smol::block_on(a.add_files(vec![entry("delta.txt", 40)])) {
        Err(Error::Refused { code, .. }) => assert_eq!(code, ErrorCode::NotRegistered),
        other => panic!("the old session added files: {other:?}"),
    }
    assert_eq!(search_hits(&mut c, "alpha").len(), 1);
    assert!(search_hits(&mut c, "delta").is_empty());

    // The old session closing afterwards withdraws nothing.
    drop(a);
    let mut d = connect_when_free(fx.addr);
    let hits = search_hits(&mut d, "*a.txt");
    let names: Vec<_> = hits.iter().map(|h| h.file.name.as_str()).collect();
    assert_eq!(names, ["alpha.txt", "gamma.txt"], "{hits:?}");
    assert!(
        hits.iter()
            .all(|h| h.peer_id == pa && h.addr.port() == 5003)
    );
    drop(c);
    drop(d);
    // With three connections at most, wait until the closes above took effect.
    let mut e = connect_when_free(fx.addr);
    smol::block_on(e.ping()).expect("the index still answers");
    // C owned the files; its close withdrew them.
    assert!(search_hits(&mut e, "gamma").is_empty());
}

#[test]
fn a_peer_that_leaves_leaves_the_search_results() {
    let fx = Fixture::hostile();
    let mut peer = index_client(fx.addr).unwrap();
    smol::block_on(peer.register(5100, &token(0x1ea5e), &[entry("leaving-file.bin", 5)])).unwrap();
    let mut searcher = index_client(fx.addr).unwrap();
    assert_eq!(search_hits(&mut searcher, "leaving").len(), 1);
    drop(peer);
    wait_until("the departed peer's files to leave", WAIT, || {
        search_hits(&mut searcher, "leaving").is_empty()
    });
    fx.assert_serves();
}

#[test]
fn a_connection_that_registers_twice_leaves_nothing_behind_when_it_closes() {
    // Registering again on the same connection under another token either is refused
    // or replaces the first registration; either way, once the connection closes,
    // none of its files may stay in the index.
    let fx = Fixture::hostile();
    let mut twice = index_client(fx.addr).unwrap();
    smol::block_on(twice.register(5400, &token(0x7001), &[entry("first-reg.txt", 1)])).unwrap();
    let _ = smol::block_on(twice.register(5400, &token(0x7002), &[entry("second-reg.txt", 1)]));
    drop(twice);
    let mut searcher = index_client(fx.addr).unwrap();
    let deadline = Instant::now() + WAIT;
    let left = loop {
        let left: Vec<String> = search_hits(&mut searcher, "-reg.txt")
            .into_iter()
            .map(|h| h.file.name)
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        left.is_empty(),
        "{left:?} still shared {WAIT:?} after the connection closed"
    );
    fx.assert_serves();
}

#[test]
fn search_results_larger_than_a_frame_still_reach_the_client() {
    // Default settings: 1 MiB frames, 1000 results. A peer shares 1000 files with long
    // (valid) names; a search matching them all must still give the client an answer
    // it can read (cut short and marked truncated if need be), not an oversized frame.
    let (addr, _trigger) = start_index(Settings::default());
    let mut hostile = smol::block_on(IndexClient::connect(addr, protocol::Limits::default()))
        .expect("connecting");
    let files: Vec<_> = (0..1000)
        .map(|i| entry(&format!("{i:04}-{}", "x".repeat(1000)), i))
        .collect();
    smol::block_on(hostile.register(5500, &token(0xf111), &files)).expect("registering");

    let mut victim = smol::block_on(IndexClient::connect(addr, protocol::Limits::default()))
        .expect("connecting");
    let (hits, truncated) = smol::block_on(victim.search("xxxx"))
        .expect("a search matching many long names could not be read");
    assert!(!hits.is_empty());
    assert!(
        hits.len() == 1000 || truncated,
        "{} hits, not marked truncated",
        hits.len()
    );
    smol::block_on(victim.ping()).expect("the client's connection is still usable");
}

#[test]
fn a_silent_peer_is_dropped_after_the_session_ttl() {
    let mut settings = hostile_index_settings();
    settings.session_ttl = Duration::from_millis(500);
    let (addr, _trigger) = start_index(settings.clone());

    let mut silent = index_client(addr).unwrap();
    smol::block_on(silent.register(5200, &token(0x511e), &[entry("silent-file.txt", 1)])).unwrap();
    let registered = Instant::now();
    let mut live = index_client(addr).unwrap();
    smol::block_on(live.register(5201, &token(0x11fe), &[entry("live-file.txt", 1)])).unwrap();
    let mut searcher = index_client(addr).unwrap();
    assert_eq!(search_hits(&mut searcher, "silent-file").len(), 1);

    wait_until("the silent peer to be dropped", WAIT, || {
        smol::block_on(live.ping()).expect("the live peer's ping");
        assert_eq!(
            search_hits(&mut searcher, "live-file").len(),
            1,
            "a peer that pings was dropped"
        );
        search_hits(&mut searcher, "silent-file").is_empty()
    });
    assert!(
        registered.elapsed() >= settings.session_ttl,
        "dropped after {:?}, before the TTL",
        registered.elapsed()
    );
    // The silent session is over: it can no longer act for its peer.
    assert!(smol::block_on(silent.ping()).is_err());
    let mut fresh = index_client(addr).unwrap();
    assert_eq!(search_hits(&mut fresh, "live-file").len(), 1);
}

#[test]
fn a_registered_peer_busy_with_other_requests_is_not_silent() {
    // "How long a silent connection lives": a peer whose session keeps sending requests
    // (searches, here) is not silent, and must keep its files.
    let mut settings = hostile_index_settings();
    settings.session_ttl = Duration::from_millis(500);
    let (addr, _trigger) = start_index(settings);

    let mut busy = index_client(addr).unwrap();
    smol::block_on(busy.register(5300, &token(0xb5e), &[entry("busy-file.txt", 1)])).unwrap();
    let started = Instant::now();
    // Long enough for the TTL to pass three times and the reaper to run.
    while started.elapsed() < Duration::from_millis(1600) {
        let hits = search_hits(&mut busy, "busy-file");
        assert_eq!(
            hits.len(),
            1,
            "the peer's files vanished after {:?} although its session never went silent",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// A hostile index, as the shell (the real binary) sees it.

/// These processes log warnings; none waits for a line.
const NAPSTER: process::Napster = process::Napster {
    log: "warn",
    patience: None,
};

/// A hit on a fake peer for `name` with `sha256` as the index claims it.
fn lying_hit(name: &str, sha256: &str) -> napster::protocol::Hit {
    let mut file = entry(name, 3);
    file.sha256 = sha256.into();
    napster::protocol::Hit {
        peer_id: 9,
        addr: closed_addr(),
        reachable: true,
        local: None,
        file,
        shared_at: 0,
        fingerprint: napster::protocol::Fingerprint::of_public_key(b"a lying index's peer"),
        nickname: None,
    }
}

/// Run `script` in a fresh folder; exit code, stdout and stderr.
fn run_script(script: &str) -> (Option<i32>, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let out = NAPSTER.run(tmp.path(), script);
    (
        out.status.code(),
        process::text(&out.stdout),
        process::text(&out.stderr),
    )
}

#[test]
fn a_hit_with_a_short_or_cut_sha256_is_a_clear_error_not_a_panic() {
    // 15 hex digits then `é` (bytes 15 and 16): 64 bytes, but byte 16 is inside a char.
    let cut = format!("{}é{}", &GOOD_SHA[..15], &GOOD_SHA[..47]);
    assert_eq!(cut.len(), 64);
    for sha in ["abc".to_owned(), cut] {
        let lie = lying_hit("song.mp3", &sha);
        let index = fake_index(move |_| results(vec![lie.clone()]));
        let (code, _, stderr) = run_script(&format!("connect {index}\nget song.mp3\n"));
        assert_eq!(code, Some(1), "sha256 {sha:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "sha256 {sha:?}: {stderr}");
        assert!(
            stderr.contains("invalid reply") && stderr.contains("not 64 lowercase hex digits"),
            "sha256 {sha:?}: {stderr}"
        );
    }
    // The library refuses it as well, whoever calls it.
    let lie = lying_hit("song.mp3", "abc");
    let index = fake_index(move |_| results(vec![lie.clone()]));
    let mut client = index_client(index).unwrap();
    let refused = smol::block_on(client.lookup("song.mp3")).unwrap_err();
    assert!(
        matches!(refused, Error::Protocol(protocol::Error::Malformed(_))),
        "{refused}"
    );
}

#[test]
fn a_peer_list_with_an_unusable_address_is_a_clear_error() {
    let index = fake_index(|_| IndexResponse::Peers {
        peers: vec![protocol::PeerInfo {
            peer_id: 3,
            addr: "127.0.0.1:0".parse().unwrap(),
            reachable: true,
            files: 1,
            bytes: 1,
            shared_at: 0,
            fingerprint: napster::protocol::Fingerprint::of_public_key(b"a peer"),
            nickname: None,
        }],
    });
    let (code, _, stderr) = run_script(&format!("connect {index}\npeers\nping 3\n"));
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(stderr.matches("unusable address").count(), 2, "{stderr}");
}

#[test]
fn hostile_names_from_the_index_never_reach_the_terminal_raw() {
    let index = fake_index(|request| match request {
        IndexRequest::Search(query) if query.pattern == "osc" => results(vec![lying_hit(
            "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mevil.mp3",
            GOOD_SHA,
        )]),
        _ => results(vec![
            lying_hit("fine.mp3", GOOD_SHA),
            lying_hit("invoice\u{202e}fdp.exe", GOOD_SHA),
        ]),
    });
    let (code, stdout, stderr) = run_script(&format!(
        "connect {index}\nsearch osc\nsearch rlo\nfiles 9\n"
    ));
    assert_eq!(code, Some(1), "{stderr}");
    let all = format!("{stdout}{stderr}");
    for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(!all.contains(raw), "{raw:?} reached the terminal: {all:?}");
    }
    assert!(all.contains(r"invoice\u{202e}fdp.exe"), "{all}");
    assert!(all.contains(r"\u{1b}]0;pwned"), "{all}");
}

#[test]
fn names_with_bidi_overrides_or_invisible_characters_are_refused_at_registration() {
    let fx = Fixture::hostile();
    for name in [
        "invoice\u{202e}fdp.exe",
        "zero\u{200b}width.mp3",
        "\u{feff}bom.txt",
        "isolate\u{2066}.txt",
    ] {
        let mut client = index_client(fx.addr).unwrap();
        let refused = smol::block_on(client.register(4000, &token(0xb1d1), &[entry(name, 3)]))
            .expect_err(name);
        assert!(
            matches!(
                refused,
                Error::Refused {
                    code: ErrorCode::BadRequest,
                    ..
                }
            ),
            "{name:?}: {refused}"
        );
        assert!(refused.to_string().contains("bidi"), "{refused}");
    }
    fx.assert_serves();
}

#[test]
fn after_a_failed_connect_commands_fail_until_a_connect_succeeds() {
    // The default index in napster.toml is a real one: before the fix, `search`
    // quietly used it after `connect` to another had failed.
    let fx = Fixture::hostile();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("napster.toml"),
        format!("[index]\nserver = \"{}\"\n", fx.addr),
    )
    .unwrap();
    let script = format!(
        "connect {}\nsearch nothing-here\nconnect {}\nsearch nothing-here\n",
        closed_addr(),
        fx.addr
    );
    let out = NAPSTER.run(tmp.path(), &script);
    let (stdout, stderr) = (process::text(&out.stdout), process::text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr
            .matches("not connected: the last `connect` failed")
            .count(),
        1,
        "{stderr}"
    );
    assert!(stderr.contains("run `connect` again"), "{stderr}");
    assert_eq!(stdout.matches("no file matches").count(), 1, "{stdout}");
}

#[test]
fn a_sharing_peer_skips_names_with_bidi_overrides_and_warns_once() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    write_files(
        &shared,
        &[("invoice\u{202e}fdp.exe", b"MZ"), ("fine.txt", b"fine")],
    );
    let script = format!(
        "serve 0\nregister {} 0\nrefresh\nrefresh\nquit\n",
        shared.display()
    );
    let out = NAPSTER.run(tmp.path(), &script);
    let (stdout, stderr) = (process::text(&out.stdout), process::text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stdout.contains(": 1 file,"), "{stdout}");
    assert_eq!(stderr.matches("skipping").count(), 1, "{stderr}");
    assert!(stderr.contains(r"invoice\u{202e}fdp.exe"), "{stderr}");
    assert!(!format!("{stdout}{stderr}").contains('\u{202e}'));
}

// ---------------------------------------------------------------------------------------
// The encrypted transport: what arrives instead of a proper TLS handshake.

#[test]
fn garbage_instead_of_a_tls_handshake_is_closed_and_the_index_serves_on() {
    let fx = Fixture::hostile();
    let within = fx.close_within();
    // A TLS record header announcing a handshake, then noise; and noise that is not
    // even a record.
    let mut record = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    record.extend(noise(7, 64));
    for garbage in [record, noise(8, 300)] {
        let mut raw = Raw::plain(fx.addr);
        let _ = raw.send_bytes(&garbage);
        raw.read_timeout(within);
        let mut buf = [0u8; 4096];
        let started = Instant::now();
        // Whatever comes back (a TLS alert, or an old-version refusal), the connection
        // ends, and promptly.
        loop {
            match std::io::Read::read(&mut raw.stream, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(started.elapsed() < within, "still open after {within:?}"),
            }
        }
        assert!(started.elapsed() < within, "closed only after {within:?}");
    }
    fx.assert_serves();
}

#[test]
fn a_stalled_tls_handshake_is_cut_at_the_frame_timeout() {
    let fx = Fixture::hostile();
    let timeout = fx.settings.limits.timeout;
    // Silent after connecting, and stalled half-way through a ClientHello.
    let mut silent = Raw::plain(fx.addr);
    let mut half = Raw::plain(fx.addr);
    half.send_bytes(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01])
        .unwrap();
    let started = Instant::now();
    fx.assert_serves();
    for (what, raw) in [("silent", &mut silent), ("half a hello", &mut half)] {
        raw.expect_closed(timeout + Duration::from_secs(3));
        let elapsed = started.elapsed();
        assert!(
            elapsed < timeout + Duration::from_secs(3),
            "{what}: closed only after {elapsed:?}"
        );
    }
    fx.assert_serves();
}

#[test]
fn an_older_unencrypted_napster_is_told_to_upgrade() {
    let fx = Fixture::hostile();
    // Protocol version 1 spoke plaintext frames; its hello is refused in its own terms.
    let mut old = Raw::plain(fx.addr);
    old.send(&json!({"type": "hello", "version": 1}));
    match old.recv::<IndexResponse>() {
        IndexResponse::Error { code, message } => {
            assert_eq!(code, ErrorCode::Version);
            assert!(message.contains("upgrade"), "{message}");
            assert!(message.contains("encrypted"), "{message}");
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    old.expect_closed(fx.close_within());
    // A downgrade inside TLS (an old version number in hello) is refused too.
    let mut downgrade = fx.raw();
    downgrade.send(&IndexRequest::Hello { version: 1 });
    assert_eq!(
        index_error_code(&downgrade.recv::<IndexResponse>()),
        ErrorCode::Version
    );
    fx.assert_serves();
}

#[test]
fn a_new_napster_reaching_an_old_plaintext_server_says_to_upgrade_it() {
    // An "old index": answers any first frame with a plaintext error, as version 1 did
    // for the TLS ClientHello (whose length field looks absurd).
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let old = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut raw = Raw {
            stream: RawStream::Plain(stream),
        };
        raw.read_timeout(WAIT);
        let mut header = [0u8; 5];
        let _ = raw.read_exact(&mut header);
        let _ = raw.send_bytes(&protocol::encode(&IndexResponse::Error {
            code: ErrorCode::BadRequest,
            message: "message of 369295616 bytes exceeds the limit".into(),
        }));
    });
    let err = match index_client(addr) {
        Ok(_) => panic!("a plaintext server was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("older napster"), "{err}");
    old.join().unwrap();
}

#[test]
fn a_replayed_registration_from_another_key_takes_nothing_over() {
    let fx = Fixture::hostile();
    let victim_key = Identity::generate().unwrap();
    let mut victim = index_client_as(fx.addr, &victim_key).unwrap();
    let secret = token(0x5ec2e7);
    let id = smol::block_on(victim.register(6001, &secret, &[entry("victim.txt", 10)])).unwrap();
    // The attacker replays the victim's very registration message on its own connection
    // (it proves its own key), then tries to withdraw what it hopes is the victim's.
    let register = IndexRequest::Register {
        port: 6001,
        token: secret.clone(),
        files: vec![entry("victim.txt", 10)],
        name: None,
        local: None,
        mapped_port: None,
    };
    let mut attacker = fx.raw_hello();
    let stolen = match attacker.index_request(&register) {
        IndexResponse::Registered { peer_id, .. } => peer_id,
        other => panic!("expected registered, got {other:?}"),
    };
    assert_ne!(
        stolen, id,
        "the replayed registration took the victim's Peer ID"
    );
    attacker.index_request(&IndexRequest::Unregister {});
    drop(attacker);
    let hits = search_hits(&mut victim, "victim");
    assert!(
        hits.iter().any(|h| h.peer_id == id
            && h.fingerprint == victim_key.fingerprint()
            && h.addr.port() == 6001),
        "the victim's file is gone or changed hands: {hits:?}"
    );
    // The victim's session still owns its files.
    assert_eq!(
        smol::block_on(victim.add_files(vec![entry("more.txt", 3)])).unwrap(),
        2
    );
    fx.assert_serves();
}

#[test]
fn hits_carry_the_fingerprint_the_sharer_proved_not_one_it_claims() {
    let fx = Fixture::hostile();
    let key = Identity::generate().unwrap();
    let mut peer = index_client_as(fx.addr, &key).unwrap();
    // The token field looks like another key's fingerprint; the index ignores it.
    let other = Identity::generate().unwrap().fingerprint();
    let claimed: String = other
        .plain()
        .chars()
        .take(32)
        .collect::<String>()
        .to_lowercase();
    let claimed: String = claimed
        .chars()
        .map(|c| if c.is_ascii_hexdigit() { c } else { 'a' })
        .collect();
    smol::block_on(peer.register(6100, &claimed, &[entry("proved.txt", 1)])).unwrap();
    let hits = search_hits(&mut peer, "proved");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].fingerprint, key.fingerprint());
    let peers = smol::block_on(peer.peers()).unwrap();
    assert!(peers.iter().any(|p| p.fingerprint == key.fingerprint()));
    assert!(peers.iter().all(|p| p.fingerprint != other));
}
