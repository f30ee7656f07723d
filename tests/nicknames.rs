//! Nicknames (`[peer] name`): bound to a key, first come first served on an index, and
//! usable wherever a Peer ID is (`get`, `files`, `ping`), as is a fingerprint prefix.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{Napster, last_word, text};
use napster::identity::Identity;
use napster::index::store::peer_id_of;

const NAPSTER: Napster = Napster {
    log: "warn",
    patience: Some(Duration::from_secs(20)),
};

/// A home folder with a share and a `napster.toml` asking for `name`; returns the Peer
/// ID and fingerprint its key gives.
fn home(root: &Path, dir: &str, name: &str, files: &[(&str, &str)]) -> (u64, String) {
    let home = root.join(dir);
    std::fs::create_dir_all(home.join("share")).unwrap();
    for (file, contents) in files {
        std::fs::write(home.join("share").join(file), contents).unwrap();
    }
    std::fs::write(
        home.join("napster.toml"),
        format!("[peer]\nname = \"{name}\"\n"),
    )
    .unwrap();
    let key = Identity::load_or_create(&home.join(".napster-key"), "key").unwrap();
    (peer_id_of(&key.fingerprint()), key.fingerprint().plain())
}

#[test]
fn nicknames_and_fingerprints_name_peers_first_come_first_served() {
    let tmp = tempfile::tempdir().unwrap();
    let mut index = NAPSTER.start(tmp.path(), "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    index.end_input();

    let (id1, _) = home(
        tmp.path(),
        "one",
        "alice",
        &[("6.txt", "six"), ("1.txt", "one")],
    );
    let (id2, fp2) = home(
        tmp.path(),
        "two",
        "ALICE",
        &[("6.txt", "six"), ("2.txt", "two")],
    );
    let mut alice = NAPSTER.start(
        &tmp.path().join("one"),
        &format!("connect {addr}\nregister share 0\n"),
    );
    let line = alice.wait_for("registered as peer");
    assert!(line.contains(&format!("peer {id1} (alice)")), "{line}");
    // The second key asks for the same name in other letters: it shares without it.
    let mut second = NAPSTER.start(
        &tmp.path().join("two"),
        &format!("connect {addr}\nregister share 0\n"),
    );
    let line = second.wait_for("registered as peer");
    assert!(line.contains(&format!("peer {id2} with")), "{line}");
    let refused = second.wait_for("nickname");
    assert!(refused.contains("ALICE is taken"), "{refused}");
    alice.end_input();
    second.end_input();

    let downloader = tmp.path().join("downloader");
    std::fs::create_dir_all(&downloader).unwrap();
    let prefix = &fp2[..8];
    let out = NAPSTER.run(
        &downloader,
        &format!(
            "connect {addr}\npeers\nget 6.txt Alice\nfiles alice\nfiles {prefix}\n\
             ping alice\nget 2.txt alice\n"
        ),
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!(" {id1} (alice) ")), "{stdout}");
    assert!(stdout.contains(&format!("from peer {id1})")), "{stdout}");
    assert!(
        stdout.contains(&format!("peer {id1} shares 2 files")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("peer {id2} shares 2 files")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("peer {id1} (127.0.0.1:")),
        "{stdout}"
    );
    assert!(
        stderr.contains("peer alice does not share \"2.txt\""),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(downloader.join("downloads/6.txt")).unwrap(),
        b"six"
    );
    drop(alice);
    drop(second);
    assert!(index.terminate().success());
}

#[test]
fn a_bad_nickname_in_the_config_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("napster.toml"),
        "[peer]\nname = \"9lives\"\n",
    )
    .unwrap();
    let out = NAPSTER.run(tmp.path(), "status\n");
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("peer.name") && stderr.contains("must start with a letter"),
        "{stderr}"
    );
}

/// A nickname equal to another peer's short key (what tables show of it) used to
/// capture that peer: `files N5M3NWTL` listed the squatter's files. The index now
/// refuses such a nickname with the reason, so the short key names its peer; and a
/// look-alike of a nickname another key holds (`aIice` beside `alice`) is not granted.
#[test]
fn a_nickname_that_reads_as_a_shown_key_or_looks_like_anothers_is_refused() {
    use common::{client_limits, entry, index_client, start_index, token};
    use napster::client::IndexClient;
    use napster::protocol::PeerRef;

    let (addr, _stop) = start_index(napster::index::Settings::default());
    let connect = |key: &Identity| {
        smol::block_on(IndexClient::connect_as(addr, key, None, client_limits())).unwrap()
    };
    // Only a key whose short form starts with a letter could be a nickname at all
    // (one starting with a digit is refused for that first), so the victim has one.
    let victim = (0..1000)
        .map(|_| Identity::generate().unwrap())
        .find(|k| {
            k.fingerprint()
                .short()
                .starts_with(|c: char| c.is_ascii_alphabetic())
        })
        .expect("a key starting with a letter");
    let mut session = connect(&victim);
    let files = [entry("victim.txt", 1)];
    let (one, two) = (token(1), token(2));
    let registered = session.register_as(7001, &one, &files, Some("alice"), None);
    let (victim_id, _) = smol::block_on(registered).unwrap();

    let squatter = Identity::generate().unwrap();
    let short = victim.fingerprint().short().to_lowercase();
    let files = [entry("squat.txt", 1)];
    let mut first = connect(&squatter);
    let refused = smol::block_on(first.register_as(7002, &two, &files, Some(&short), None))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("start of a key"), "{refused}");
    let mut second = connect(&squatter);
    let registered = second.register_as(7002, &two, &files, Some("aIice"), None);
    let (squatter_id, granted) = smol::block_on(registered).unwrap();
    assert_eq!(granted, None, "a look-alike of alice was granted");

    let mut looking = index_client(addr).unwrap();
    for word in [short.to_uppercase(), short.clone(), "alice".into()] {
        let wanted = PeerRef::parse(&word).unwrap();
        let found = smol::block_on(looking.find_peer(&wanted)).unwrap();
        assert_eq!(found.peer_id, victim_id, "{word} named {squatter_id}");
    }
    drop((session, second));
}
