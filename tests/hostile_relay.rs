//! The index's relay, on loopback (`docs/NAT.md`): two peers behind NATs transfer
//! through it, end-to-end encrypted; a token is used once and only by the key that
//! asked; the quota cuts a pipe and refuses its key; the bandwidth cap holds; an index
//! that does not relay says so. A punched connection, like a relayed one, serves only
//! the key that asked, after the token it opens with.
//!
//! "Behind NAT" on loopback: a file server listening on 127.0.0.2 while its session
//! reaches the index from 127.0.0.1, so the index's connect-back finds nothing.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client_limits, share_folder, sharing_settings, start_index};
use napster::client::{Dialer, IndexClient, PeerClient, Route, Via};
use napster::download::{self, Downloaded, Job};
use napster::error::Error;
use napster::identity::Identity;
use napster::index;
use napster::peer::Sharing;
use napster::protocol::{ErrorCode, Hit};
use napster::rendezvous::{self, Rendezvous};
use smol::io::AsyncWriteExt;

/// A sharer behind a NAT, sharing `name` with `contents`.
async fn natted_sharer(
    index: SocketAddr,
    name: &str,
    contents: &[u8],
) -> (Sharing, tempfile::TempDir) {
    natted_sharer_of(index, &[(name, contents)]).await
}

/// A sharer behind a NAT, sharing `files`.
async fn natted_sharer_of(
    index: SocketAddr,
    files: &[(&str, &[u8])],
) -> (Sharing, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    common::write_files(dir.path(), files);
    let mut settings = sharing_settings(8, Duration::from_secs(30));
    settings.host = Some(IpAddr::from([127, 0, 0, 2]));
    (share_folder(dir.path(), index, &settings).await, dir)
}

async fn lookup(index: SocketAddr, name: &str) -> Vec<Hit> {
    let mut client = IndexClient::connect(index, client_limits()).await.unwrap();
    client.lookup(name).await.unwrap()
}

/// Download `hits` as `identity` asking the index at `index`, with `rendezvous` when we
/// share.
async fn fetch(
    index: SocketAddr,
    hits: Vec<Hit>,
    identity: &Identity,
    rendezvous: Option<Arc<Rendezvous>>,
) -> (napster::Result<Downloaded>, tempfile::TempDir) {
    let into = tempfile::tempdir().unwrap();
    let mut job = Job::new(hits[0].file.clone(), hits, into.path(), client_limits());
    let via = Via {
        index,
        identity: identity.clone(),
        pins: Default::default(),
        rendezvous,
        // The relay is under test (punching is tested on real NATs, `nat_paths`).
        punch: false,
    };
    job.dialer = Dialer::new(client_limits(), Some(via));
    (download::fetch(job).await, into)
}

fn relay_settings(rate: u64, quota: u64) -> index::Settings {
    let mut settings = index::Settings::default();
    settings.relay.rate = rate;
    settings.relay.quota = quota;
    settings
}

#[test]
fn two_peers_behind_nats_transfer_through_the_relay() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let contents = common::noise_words(11, 3 << 20);
        let (_sharer, _dir) = natted_sharer(index, "tape.ogg", &contents).await;
        let hits = lookup(index, "tape.ogg").await;
        assert!(!hits[0].reachable);
        // A downloader that shares nothing: the relay is its only way.
        let (done, _into) = fetch(index, hits.clone(), &Identity::generate().unwrap(), None).await;
        let done = done.unwrap();
        assert_eq!(std::fs::read(&done.path).unwrap(), contents);
        assert_eq!(done.paths[0].1, Route::Relayed);
        assert!(done.summary().ends_with(" relayed"), "{}", done.summary());
        // A downloader behind a NAT too: the reverse connection is refused (the index
        // cannot reach it either), and the relay carries the download.
        let rendezvous = Arc::new(Rendezvous::default());
        let mut settings = sharing_settings(8, Duration::from_secs(30));
        settings.host = Some(IpAddr::from([127, 0, 0, 3]));
        settings.server.rendezvous = Some(rendezvous.clone());
        let folder = tempfile::tempdir().unwrap();
        let downloader = share_folder(folder.path(), index, &settings).await;
        assert!(!downloader.state().reach.unwrap().reachable);
        let identity = settings.server.identity.clone();
        let (done, _into) = fetch(index, hits, &identity, Some(rendezvous)).await;
        let done = done.unwrap();
        assert_eq!(std::fs::read(&done.path).unwrap(), contents);
        assert_eq!(done.paths[0].1, Route::Relayed);
        downloader.stop().await;
    });
}

/// Ask the index, as `identity`, to relay to `peer` with a fresh token; the token.
async fn ask_relay(index: SocketAddr, identity: &Identity, peer: u64) -> napster::Result<String> {
    let token = rendezvous::new_token();
    let mut client = IndexClient::connect_as(index, identity, None, client_limits()).await?;
    client.relay_request(peer, &token).await?;
    Ok(token)
}

/// Join the relay at `index` with `token` and say hello to the sharer inside, as
/// `identity`.
async fn join(
    index: SocketAddr,
    token: &str,
    sharer: &Hit,
    identity: &Identity,
) -> napster::Result<PeerClient> {
    let mut stream = smol::Async::<std::net::TcpStream>::connect(index)
        .await
        .unwrap();
    stream
        .write_all(&rendezvous::preamble(token))
        .await
        .unwrap();
    PeerClient::over_as(stream, sharer.fingerprint, identity, client_limits()).await
}

#[test]
fn a_relay_token_serves_only_the_key_that_asked_and_only_once() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let (_sharer, _dir) = natted_sharer(index, "a.bin", b"abc").await;
        let hit = lookup(index, "a.bin").await.remove(0);
        let asker = Identity::generate().unwrap();
        let thief = Identity::generate().unwrap();
        // Another key that learnt the token gets through the relay, but the sharer
        // refuses it inside: it serves only the key that asked.
        let token = ask_relay(index, &asker, hit.peer_id).await.unwrap();
        let stolen = join(index, &token, &hit, &thief).await;
        assert!(stolen.is_err(), "the sharer served a thief");
        // The token is spent: the asker cannot use it again.
        assert!(join(index, &token, &hit, &asker).await.is_err());
        // A fresh request of the asker's own goes through.
        let token = ask_relay(index, &asker, hit.peer_id).await.unwrap();
        let mut client = join(index, &token, &hit, &asker).await.unwrap();
        client.ping().await.unwrap();
        // A token nobody asked for is dropped at once.
        let made_up = rendezvous::new_token();
        assert!(join(index, &made_up, &hit, &asker).await.is_err());
    });
}

/// The quota charges the downloader's key only (E5: charging the sharer's too let one
/// downloader cut a sharer off from everyone for the hour).
#[test]
fn the_relay_quota_cuts_a_pipe_and_refuses_its_key() {
    smol::block_on(async {
        // Below the file, above a download's first chunks.
        let quota = 256 * 1024;
        let (index, _stop) = start_index(relay_settings(0, quota));
        let contents = common::noise_words(12, 2 << 20);
        let small = common::noise_words(15, 64 << 10);
        let files = [("big.bin", &contents[..]), ("small.bin", &small[..])];
        let (_sharer, _dir) = natted_sharer_of(index, &files).await;
        let hits = lookup(index, "big.bin").await;
        let peer = hits[0].peer_id;
        let identity = Identity::generate().unwrap();
        let (done, into) = fetch(index, hits, &identity, None).await;
        assert!(done.is_err(), "the quota did not stop the download");
        assert!(!into.path().join("big.bin").exists());
        let err = ask_relay(index, &identity, peer).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    code: ErrorCode::Full,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("quota"), "{err}");
        // E5: the sharer was not charged; another downloader is relayed to it in full.
        let hits = lookup(index, "small.bin").await;
        let (done, _into) = fetch(index, hits, &Identity::generate().unwrap(), None).await;
        let done = done.expect("another downloader is relayed to the same sharer");
        assert_eq!(std::fs::read(&done.path).unwrap(), small);
    });
}

#[test]
fn the_relay_holds_its_bandwidth_cap() {
    smol::block_on(async {
        let rate = 4 << 20;
        let (index, _stop) = start_index(relay_settings(rate, 0));
        let contents = common::noise_words(13, 3 << 20);
        let (_sharer, _dir) = natted_sharer(index, "capped.bin", &contents).await;
        let hits = lookup(index, "capped.bin").await;
        let started = Instant::now();
        let (done, _into) = fetch(index, hits, &Identity::generate().unwrap(), None).await;
        let took = started.elapsed();
        assert_eq!(std::fs::read(done.unwrap().path).unwrap(), contents);
        // 3 MiB at 4 MiB/s (a burst of 0.05 s allowed): at least about 0.7 s.
        assert!(took >= Duration::from_millis(650), "{took:?}");
    });
}

#[test]
fn an_index_that_does_not_relay_says_so() {
    smol::block_on(async {
        let mut settings = index::Settings::default();
        settings.relay.enabled = false;
        let (index, _stop) = start_index(settings);
        let (_sharer, _dir) = natted_sharer(index, "b.bin", b"b").await;
        let hit = lookup(index, "b.bin").await.remove(0);
        let err = ask_relay(index, &Identity::generate().unwrap(), hit.peer_id)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not relay"), "{err}");
        let (done, _into) = fetch(index, vec![hit], &Identity::generate().unwrap(), None).await;
        let err = done.unwrap_err().to_string();
        assert!(
            err.contains("behind a NAT") && err.contains("relay"),
            "{err}"
        );
    });
}

#[test]
fn relayed_bytes_are_counted_in_the_metrics() {
    smol::block_on(async {
        let listener = smol::Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let index = listener.get_ref().local_addr().unwrap();
        let metrics = Arc::new(index::Metrics::new());
        let (_stop, shutdown) = napster::runtime::shutdown_pair();
        let store = Arc::new(index::MemoryStore::new());
        let settings = index::Settings::default();
        napster::runtime::spawn(index::run_with_metrics(
            listener,
            store,
            settings,
            shutdown,
            Some(metrics.clone()),
        ))
        .detach();
        let contents = common::noise_words(14, 1 << 20);
        let (_sharer, _dir) = natted_sharer(index, "counted.bin", &contents).await;
        let hits = lookup(index, "counted.bin").await;
        let (done, _into) = fetch(index, hits, &Identity::generate().unwrap(), None).await;
        assert_eq!(done.unwrap().paths[0].1, Route::Relayed);
        // The pipe is counted once it closes, after the download let go of it.
        let relayed = || {
            metrics
                .encode()
                .lines()
                .find_map(|l| l.strip_prefix("napster_index_relayed_bytes_total "))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        common::wait_until("the relayed bytes are counted", common::WAIT, || {
            relayed() >= contents.len() as f64
        });
    });
}

/// Ask the index, as `identity`, to punch a hole to `peer`, and listen where the sharer
/// will come: the local port of the asking connection (which, like every index
/// connection, others of ours may bind). Returns the token and the stream the sharer's
/// attempt opened, its preamble read.
async fn punched_to_us(
    index: SocketAddr,
    identity: &Identity,
    peer: u64,
) -> (String, Option<String>, smol::Async<std::net::TcpStream>) {
    use rustix::net::{AddressFamily, SocketType, bind, listen, socket, sockopt};
    let mut asker = IndexClient::connect_as(index, identity, None, client_limits())
        .await
        .unwrap();
    let local = asker.local_addr().unwrap();
    let fd = socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_reuseaddr(&fd, true).unwrap();
    sockopt::set_socket_reuseport(&fd, true).unwrap();
    bind(&fd, &local).unwrap();
    listen(&fd, 4).unwrap();
    let listener = smol::Async::new(std::net::TcpListener::from(fd)).unwrap();
    let token = rendezvous::new_token();
    let sharer = asker.punch_request(peer, &token).await.unwrap();
    let (mut stream, from) = listener.accept().await.unwrap();
    assert_eq!(from, sharer, "the sharer punched from its session's port");
    let said = rendezvous::read_preamble(&mut stream, common::WAIT).await;
    (token, said, stream)
}

#[test]
fn a_punched_connection_serves_only_the_key_that_asked() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let (_sharer, _dir) = natted_sharer(index, "p.bin", b"abc").await;
        let hit = lookup(index, "p.bin").await.remove(0);
        let asker = Identity::generate().unwrap();
        let thief = Identity::generate().unwrap();
        // The sharer opens with the asker's token, then refuses any other key.
        let (token, said, stream) = punched_to_us(index, &asker, hit.peer_id).await;
        assert_eq!(said.as_deref(), Some(token.as_str()));
        let stolen = PeerClient::over_as(stream, hit.fingerprint, &thief, client_limits()).await;
        assert!(stolen.is_err(), "the sharer served a key that did not ask");
        // The key that asked is served.
        let (token, said, stream) = punched_to_us(index, &asker, hit.peer_id).await;
        assert_eq!(said.as_deref(), Some(token.as_str()));
        let mut client = PeerClient::over_as(stream, hit.fingerprint, &asker, client_limits())
            .await
            .unwrap();
        client.ping().await.unwrap();
    });
}

/// E4: one key, and one address, hold a bounded share of the relay's pipes, pending or
/// running, on all their connections together (288 requests from one key at one address
/// took all 256 pipes); the refusals are counted by the bound.
#[test]
fn relay_pipes_are_bounded_per_key_and_per_address() {
    smol::block_on(async {
        let mut settings = index::Settings::default();
        // The push budgets out of the way: the relay's own bounds are under test.
        settings.pushes.per_key = usize::MAX;
        settings.pushes.per_address = usize::MAX;
        // Less than two keys' worth per address, so that a second key meets the address's.
        settings.relay.pipes_per_address = settings.relay.pipes_per_key * 3 / 2;
        let limits = settings.relay;
        let (index, _stop, metrics) = common::start_index_with_metrics(settings);
        // A sharer that never joins: every pipe stays pending.
        let mut sharer = IndexClient::connect(index, client_limits()).await.unwrap();
        let sharer_id = sharer
            .register(9, &common::token(1), &[common::entry("x.bin", 5)])
            .await
            .unwrap();
        let asker = Identity::generate().unwrap();
        let mut accepted = 0;
        let mut refusals = Vec::new();
        for _ in 0..4 {
            let mut client = IndexClient::connect_as(index, &asker, None, client_limits())
                .await
                .unwrap();
            for _ in 0..8 {
                sharer.ping().await.unwrap();
                while sharer.take_push().is_some() {}
                match client
                    .relay_request(sharer_id, &rendezvous::new_token())
                    .await
                {
                    Ok(()) => accepted += 1,
                    Err(e) => refusals.push(e),
                }
            }
        }
        assert_eq!(accepted, limits.pipes_per_key, "pipes held by one key");
        assert_busy(&refusals[0], "your key holds");
        // Another key at the same address gets what is left of the address's share.
        let other = Identity::generate().unwrap();
        let mut client = IndexClient::connect_as(index, &other, None, client_limits())
            .await
            .unwrap();
        let mut accepted = 0;
        let refused = loop {
            sharer.ping().await.unwrap();
            while sharer.take_push().is_some() {}
            match client
                .relay_request(sharer_id, &rendezvous::new_token())
                .await
            {
                Ok(()) => accepted += 1,
                Err(e) => break e,
            }
            assert!(accepted <= limits.pipes_per_address, "no bound per address");
        };
        assert_eq!(accepted, limits.pipes_per_address - limits.pipes_per_key);
        assert_busy(&refused, "your address holds");
        let refused = |reason: &str| {
            common::metric(
                &metrics,
                &format!("napster_index_pushes_refused_total{{reason=\"{reason}\"}}"),
            )
        };
        assert_eq!(refused("relay_pipes_per_key"), refusals.len() as f64);
        assert_eq!(refused("relay_pipes_per_address"), 1.0);
    });
}

/// `err` is a `busy` refusal whose message says `what`.
fn assert_busy(err: &Error, what: &str) {
    assert!(
        matches!(
            err,
            Error::Refused {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(what), "{err}");
}
