//! Property tests (fuzzing) of everything that parses bytes or names from the network:
//! no input makes a decoder panic, and whatever the checks accept is safe.
//!
//! The case counts are set per test; `PROPTEST_CASES` overrides them all.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use napster::download::safe_file_name;
use napster::protocol::{
    self, FileEntry, IndexRequest, IndexResponse, PeerRequest, PeerResponse, decode, encode,
};
use proptest::prelude::*;

/// Decoding arbitrary bytes as any message type returns, never panics.
fn decode_all(bytes: &[u8]) {
    let _ = decode::<IndexRequest>(bytes);
    let _ = decode::<IndexResponse>(bytes);
    let _ = decode::<PeerRequest>(bytes);
    let _ = decode::<PeerResponse>(bytes);
}

/// JSON-shaped noise: the decoders' deeper paths, not just "not JSON".
fn jsonish() -> impl Strategy<Value = String> {
    let types = prop::sample::select(vec![
        "hello",
        "register",
        "add_files",
        "remove_files",
        "unregister",
        "search",
        "lookup",
        "peers",
        "ping",
        "get",
        "sending",
        "welcome",
        "error",
        "results",
    ]);
    let value = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        "\"[^\"\\\\]{0,20}\"",
        Just("null".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("1e400".to_owned()),
        Just("-0".to_owned()),
        Just("[{\"name\":\"a\",\"size\":-1,\"sha256\":\"x\"}]".to_owned()),
    ];
    let field = prop::sample::select(vec![
        "version", "port", "token", "files", "names", "pattern", "name", "offset", "length",
        "size", "sha256", "chunks", "count", "code", "message", "extra",
    ]);
    (types, prop::collection::vec((field, value), 0..5)).prop_map(|(t, fields)| {
        let mut s = format!("{{\"type\":\"{t}\"");
        for (f, v) in fields {
            s.push_str(&format!(",\"{f}\":{v}"));
        }
        s.push('}');
        s
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5_000))]

    #[test]
    fn decoders_never_panic_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_json_shaped_input(text in jsonish()) {
        decode_all(text.as_bytes());
    }

    #[test]
    fn accepted_names_are_relative_and_clean(name in "\\PC{0,40}|[./\\\\a-z%\\x00-\\x1f]{0,20}") {
        if protocol::name_problem(&name).is_none() {
            prop_assert!(!name.starts_with('/'));
            prop_assert!(!name.contains('\\'));
            prop_assert!(!name.chars().any(char::is_control));
            prop_assert!(name.split('/').all(|c| !c.is_empty() && c != "." && c != ".."));
        }
    }

    #[test]
    fn saved_names_never_leave_the_folder(name in "\\PC{0,40}|[./\\\\a-z\\x00-\\x1f]{0,20}") {
        if let Ok(saved) = safe_file_name(&name) {
            prop_assert!(!saved.is_empty());
            prop_assert!(!saved.contains('/') && !saved.contains('\\'));
            prop_assert!(saved != "." && saved != "..");
            prop_assert!(!saved.chars().any(char::is_control));
            prop_assert!(saved.len() <= 255);
        }
    }

    #[test]
    fn a_hit_never_encodes_longer_than_its_bound(name in "[^\\p{Cc}]{1,200}") {
        let hit = protocol::Hit {
            peer_id: u64::MAX,
            fingerprint: protocol::Fingerprint([0xff; 32]),
            nickname: Some("n".repeat(protocol::MAX_NICKNAME)),
            addr: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".parse().unwrap(),
            reachable: false,
            local: Some("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535".parse().unwrap()),
            file: FileEntry { tags: None, name, size: u64::MAX, sha256: "f".repeat(64), chunks: "e".repeat(64) },
            shared_at: i64::MIN,
        };
        let encoded = serde_json::to_vec(&hit).unwrap().len();
        prop_assert!(encoded <= protocol::hit_json_bound(&hit), "{} > {}", encoded, protocol::hit_json_bound(&hit));
    }

    #[test]
    fn entries_round_trip(name in "[a-z0-9 ._-]{1,30}(/[a-z0-9._-]{1,10}){0,2}", size in 0u64..=i64::MAX as u64, sha in "[0-9a-f]{64}", chunks in "[0-9a-f]{64}") {
        let entry = FileEntry { tags: None, name, size, sha256: sha, chunks };
        let message = IndexRequest::AddFiles { files: vec![entry] };
        let frame = encode(&message);
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, frame.len() - 4);
        prop_assert_eq!(decode::<IndexRequest>(&frame[4..]).unwrap(), message);
    }
}

proptest! {
    // Each case is a real connection to a real index: fewer of them.
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn a_live_index_survives_random_streams(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let addr = live_index();
        smol::block_on(async {
            use smol::io::AsyncWriteExt;
            let mut raw = smol::Async::<std::net::TcpStream>::connect(addr).await.unwrap();
            let _ = raw.write_all(&bytes).await;
            drop(raw);
            let mut client = napster::client::IndexClient::connect(addr, protocol::Limits::default())
                .await
                .expect("the index still accepts clients");
            client.ping().await.expect("the index still answers");
        });
    }
}

/// One index for the whole file, started on first use.
fn live_index() -> SocketAddr {
    static INDEX: std::sync::OnceLock<(SocketAddr, napster::runtime::ShutdownTrigger)> =
        std::sync::OnceLock::new();
    INDEX
        .get_or_init(|| {
            let listener = smol::Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
            let addr = listener.get_ref().local_addr().unwrap();
            let (trigger, shutdown) = napster::runtime::shutdown_pair();
            let store = Arc::new(napster::index::MemoryStore::new());
            let settings = napster::index::Settings::default();
            napster::runtime::spawn(napster::index::run(listener, store, settings, shutdown))
                .detach();
            (addr, trigger)
        })
        .0
}
