//! Identities under attack: key files that were damaged, replaced or exposed, and TLS
//! clients whose certificate is not self-consistent (someone else's certificate, or one
//! whose self-signature is broken). Every case is refused with a clear error, and the
//! server keeps serving.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use common::*;
use napster::identity::Identity;
use napster::index::Settings;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};

const WHAT: &str = "[peer] key";

fn error_of(result: napster::Result<Identity>) -> String {
    match result {
        Ok(identity) => panic!("accepted as {identity:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_key_file_others_may_read_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    let made = Identity::load_or_create(&path, WHAT).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = error_of(Identity::load_or_create(&path, WHAT));
    assert!(err.contains("chmod 600"), "{err}");
    assert!(err.contains(WHAT), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the key file was changed"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let again = Identity::load_or_create(&path, WHAT).unwrap();
    assert_eq!(again.fingerprint(), made.fingerprint());
}

#[test]
fn a_truncated_or_garbled_key_file_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    Identity::load_or_create(&path, WHAT).unwrap();
    let whole = std::fs::read(&path).unwrap();
    for damaged in [
        whole[..whole.len() / 2].to_vec(),
        Vec::new(),
        noise(3, 200),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
    ] {
        std::fs::write(&path, &damaged).unwrap();
        let err = error_of(Identity::load_or_create(&path, WHAT));
        assert!(err.contains("not a usable key"), "{err}");
        assert!(err.contains("delete it to make a new identity"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            damaged,
            "the key file was replaced"
        );
    }
}

#[test]
fn a_directory_in_place_of_the_key_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::create_dir(&path).unwrap();
    let err = error_of(Identity::load_or_create(&path, WHAT));
    assert!(err.contains("is a directory"), "{err}");
    assert!(path.is_dir());
}

/// The attacker's side accepts any server: only the server's check is under test.
#[derive(Debug)]
struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::ED25519,
            SignatureScheme::ECDSA_NISTP256_SHA256,
        ]
    }
}

/// Presents a fixed certificate with a fixed signing key, consistent or not.
#[derive(Debug)]
struct Present(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for Present {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Try a TLS handshake with the index at `addr` presenting `key`; Ok when the index
/// accepted it (answered our hello).
fn handshake_as(addr: std::net::SocketAddr, key: CertifiedKey) -> Result<(), String> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer))
    .with_client_cert_resolver(Arc::new(Present(Arc::new(key))));
    let name = ServerName::try_from("napster").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let mut raw = Raw {
        stream: RawStream::Client(Box::new(rustls::StreamOwned::new(conn, tcp))),
    };
    raw.send_bytes(&napster::protocol::encode(
        &napster::protocol::IndexRequest::Hello {
            version: napster::protocol::VERSION,
        },
    ))
    .map_err(|e| e.to_string())?;
    match raw.read_frame() {
        Frame::Body(_) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[test]
fn a_client_certificate_that_is_not_self_consistent_is_refused() {
    let (addr, _stop) = start_index(Settings::default());
    let victim = Identity::generate().unwrap();
    let attacker = Identity::generate().unwrap();
    let (victim_key, attacker_key) = (victim.certified_key(), attacker.certified_key());
    // The honest control: the attacker's own certificate with its own key is accepted.
    handshake_as(
        addr,
        CertifiedKey::new(attacker_key.cert.clone(), attacker_key.key.clone()),
    )
    .expect("a self-consistent certificate is accepted");
    // The victim's certificate, signed for with the attacker's key.
    let stolen = CertifiedKey::new(victim_key.cert.clone(), attacker_key.key.clone());
    assert!(
        handshake_as(addr, stolen).is_err(),
        "a stolen certificate passed"
    );
    // The attacker's certificate with its self-signature broken.
    let mut broken = attacker_key.cert[0].to_vec();
    let last = broken.len() - 1;
    broken[last] ^= 0x55;
    let forged = CertifiedKey::new(vec![CertificateDer::from(broken)], attacker_key.key.clone());
    assert!(
        handshake_as(addr, forged).is_err(),
        "a broken certificate passed"
    );
    // The index serves on.
    let mut client = index_client(addr).unwrap();
    smol::block_on(client.ping()).unwrap();
}

const NAPSTER: common::process::Napster = common::process::Napster {
    log: "error",
    patience: Some(std::time::Duration::from_secs(20)),
};

#[test]
fn an_index_whose_key_changed_is_refused_until_the_new_key_is_accepted() {
    let home = tempfile::tempdir().unwrap();
    let first = Identity::generate().unwrap();
    let settings = |identity: &Identity| Settings {
        identity: identity.clone(),
        ..Settings::default()
    };
    let (addr, stop, task) = start_index_at(([127, 0, 0, 1], 0).into(), settings(&first));
    // First contact pins the key, and says so.
    let out = NAPSTER.run(home.path(), &format!("connect {addr}\n"));
    let stdout = common::process::text(&out.stdout);
    assert!(stdout.contains("first connection"), "{stdout}");
    assert!(
        stdout.contains(&first.fingerprint().to_string()),
        "{stdout}"
    );
    // Someone else takes over the address with another key.
    drop(stop);
    smol::block_on(task).unwrap();
    let impostor = Identity::generate().unwrap();
    let (_, _stop, _task) = start_index_at(addr, settings(&impostor));
    let out = NAPSTER.run(home.path(), &format!("connect {addr}\nsearch anything\n"));
    let (stdout, stderr) = (
        common::process::text(&out.stdout),
        common::process::text(&out.stderr),
    );
    let accept = format!("connect {addr}#{}", impostor.fingerprint());
    assert!(stderr.contains("is pinned"), "{stdout}\n{stderr}");
    assert!(stderr.contains(&accept), "{stderr}");
    assert!(!stdout.contains("connected to the index"), "{stdout}");
    // Accepting the new key explicitly works, and pins it from then on.
    let out = NAPSTER.run(home.path(), &format!("{accept}\n"));
    let stdout = common::process::text(&out.stdout);
    assert!(stdout.contains("connected to the index"), "{stdout}");
    let out = NAPSTER.run(home.path(), &format!("connect {addr}\n"));
    let stdout = common::process::text(&out.stdout);
    assert!(stdout.contains("connected to the index"), "{stdout}");
    assert!(!stdout.contains("first connection"), "{stdout}");
}

#[test]
fn a_peer_keeps_its_id_across_restarts_of_the_in_memory_index() {
    let key = Identity::generate().unwrap();
    let register = |addr| {
        let mut client = smol::block_on(napster::client::IndexClient::connect_as(
            addr,
            &key,
            None,
            client_limits(),
        ))
        .unwrap();
        smol::block_on(client.register(7001, &token(1), &[entry("kept.txt", 1)])).unwrap()
    };
    let (addr, stop, task) = start_index_at(([127, 0, 0, 1], 0).into(), Settings::default());
    let before = register(addr);
    drop(stop);
    smol::block_on(task).unwrap();
    // A new index process's memory knows nothing; the ID comes from the key alone.
    let (addr, _stop, _task) = start_index_at(([127, 0, 0, 1], 0).into(), Settings::default());
    let other = {
        let mut client = index_client(addr).unwrap();
        smol::block_on(client.register(7002, &token(2), &[entry("other.txt", 1)])).unwrap()
    };
    assert_eq!(register(addr), before);
    assert_ne!(other, before);
}

/// How long a step of the trust tests may take (a session's reconnection backs off up
/// to 10 s).
const TRUST_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// A home whose `napster.toml` names the index at `addr`, with `share/` holding `files`.
fn trust_home(
    root: &std::path::Path,
    name: &str,
    addr: std::net::SocketAddr,
) -> std::path::PathBuf {
    let home = root.join(name);
    write_files(&home, &[("share/mine.txt", b"mine".as_slice())]);
    let config = format!("[index]\nserver = \"{addr}\"\n");
    std::fs::write(home.join("napster.toml"), config).unwrap();
    home
}

/// The key recorded for `addr` in the known-indexes file of `home`, if any.
fn pinned(home: &std::path::Path, addr: std::net::SocketAddr) -> Option<String> {
    let text = std::fs::read_to_string(home.join(".napster-known-indexes")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{addr} ")).map(str::to_owned))
}

/// `register` in the README's service form (`napster register share 0`, no `connect`)
/// and a one-shot `search` pin the index's key on their first connection, as `connect`
/// does: a later index with another key at that address is refused by name. (Only
/// `connect` used to pin: a peer that only registered silently registered with
/// whichever key answered.)
#[test]
fn the_first_connection_of_any_kind_pins_the_index_key() {
    let tmp = tempfile::tempdir().unwrap();
    let first = Identity::generate().unwrap();
    let settings = |identity: &Identity| Settings {
        identity: identity.clone(),
        ..Settings::default()
    };
    let (addr, stop, task) = start_index_at(([127, 0, 0, 1], 0).into(), settings(&first));
    let key = first.fingerprint().to_string();
    let sharer = trust_home(tmp.path(), "sharer", addr);
    let mut service = NAPSTER.start_with(&sharer, &["register", "share", "0"], "");
    wait_until("`register` to pin the index key", TRUST_PATIENCE, || {
        pinned(&sharer, addr).as_deref() == Some(key.as_str())
    });
    let searcher = trust_home(tmp.path(), "searcher", addr);
    let out = NAPSTER.run_args(&searcher, &["search", "mine"]);
    assert!(out.status.success(), "{}", process::text(&out.stderr));
    assert_eq!(pinned(&searcher, addr), Some(key));

    drop(stop);
    smol::block_on(task).unwrap();
    let impostor = Identity::generate().unwrap();
    let (_, _stop, _task) = start_index_at(addr, settings(&impostor));
    let out = NAPSTER.run_args(&searcher, &["search", "mine"]);
    let stderr = process::text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is pinned"), "{stderr}");
    assert!(
        stderr.contains(&format!("connect {addr}#{}", impostor.fingerprint())),
        "{stderr}"
    );
    service.kill();
}

/// A new pin reaches running work at once: after the index came back with a new key
/// and `connect host:port#NEWKEY` accepted it, the share re-registers and a queued
/// download resumes, without a restart. (The share and the queue used to keep a
/// snapshot of the pins: the share kept reconnecting against the old key and every
/// `resume N` failed naming it.)
#[test]
fn a_new_pin_applies_at_once_to_the_share_and_the_queue() {
    use napster::limit::RateLimit;

    let tmp = tempfile::tempdir().unwrap();
    let settings = |identity: &Identity| Settings {
        identity: identity.clone(),
        ..Settings::default()
    };
    let (addr, stop, task) = start_index_at(
        ([127, 0, 0, 1], 0).into(),
        settings(&Identity::generate().unwrap()),
    );
    // A sharer that follows its index whatever its key (no known-indexes file), its
    // uploads held back until the end.
    let contents = noise(18, 256 * 1024);
    write_files(
        &tmp.path().join("source"),
        &[("song.ogg", contents.as_slice())],
    );
    let mut sharing = sharing_settings(8, std::time::Duration::from_secs(30));
    let upload = Arc::new(RateLimit::new(1));
    sharing.server.upload = upload.clone();
    let source = smol::block_on(share_folder(&tmp.path().join("source"), addr, &sharing));

    let home = trust_home(tmp.path(), "home", addr);
    let me = Identity::load_or_create(&home.join(".napster-key"), "key").unwrap();
    let my_id = napster::index::store::peer_id_of(&me.fingerprint());
    let mut shell = NAPSTER.start_with(&home, &["--json"], "");
    shell.ask(&format!("connect {addr}"));
    shell.ask("register share 0");
    shell.ask("get -b song.ogg");
    shell.ask("pause 1");

    drop(stop);
    smol::block_on(task).unwrap();
    let new = Identity::generate().unwrap();
    let (_, _stop, _task) = start_index_at(addr, settings(&new));
    let registered = |id: u64| {
        let peers = smol::block_on(async { index_client(addr)?.peers().await });
        peers.is_ok_and(|peers| peers.iter().any(|p| p.peer_id == id))
    };
    wait_until("the sharer to follow the index", TRUST_PATIENCE, || {
        registered(source.state().peer_id)
    });
    let accepted = shell.ask(&format!("connect {addr}#{}", new.fingerprint()));
    assert!(
        accepted
            .iter()
            .any(|l| l.contains("\"type\":\"connected\"")),
        "{accepted:?}"
    );
    wait_until(
        "the share to register with the new key",
        TRUST_PATIENCE,
        || registered(my_id),
    );
    upload.set(0);
    shell.ask("resume 1");
    let mut rows = Vec::new();
    wait_until(
        "the queued download to resume and finish",
        TRUST_PATIENCE,
        || {
            rows = shell.ask("transfers");
            rows.iter()
                .any(|l| l.contains("\"state\":\"done\"") || l.contains("\"state\":\"failed\""))
        },
    );
    assert!(rows[0].contains("\"state\":\"done\""), "{rows:?}");
    assert_eq!(
        std::fs::read(home.join("downloads/song.ogg")).unwrap(),
        contents
    );
    shell.kill();
    drop(source);
}
