//! Peers behind NAT, on loopback (`docs/NAT.md`): reachability is what the index could
//! connect to at the address it observed; a sharer it cannot reach is reached by a
//! reverse connection, which goes only to the address the index observed for the asking
//! peer, is bounded per asking key and address for each sharer (and per connection), is
//! carried out by the sharer within its own bounds whatever its index asks, and is
//! handed only to the download that waits for its one-time token.
//!
//! "Behind NAT" on loopback: the sharer's file server listens on 127.0.0.2 while its
//! session reaches the index from 127.0.0.1, so the index's connect-back to
//! 127.0.0.1:<port> finds nothing, as it would at a home router's public address.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{WAIT, client_limits, share_folder, sharing_settings, start_index};
use napster::client::{Dialer, IndexClient, Push, Route, Via};
use napster::download::{self, Job};
use napster::error::Error;
use napster::identity::Identity;
use napster::index;
use napster::peer::{Sharing, SharingSettings};
use napster::protocol::{self, ErrorCode, Hit, IndexRequest, IndexResponse};
use napster::rendezvous::{self, Rendezvous};

const BEHIND_NAT: [u8; 4] = [127, 0, 0, 2];

/// Settings of a peer whose file server listens on `host`, with downloads handed over
/// by `rendezvous`.
fn peer_settings(host: Option<[u8; 4]>, rendezvous: &Arc<Rendezvous>) -> SharingSettings {
    let mut settings = sharing_settings(8, Duration::from_secs(30));
    settings.host = host.map(IpAddr::from);
    settings.server.rendezvous = Some(rendezvous.clone());
    settings
}

/// A folder holding `files`, shared with `index` under `settings`.
async fn share(
    index: SocketAddr,
    files: &[(&str, &[u8])],
    settings: &SharingSettings,
) -> (Sharing, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    common::write_files(dir.path(), files);
    (share_folder(dir.path(), index, settings).await, dir)
}

async fn lookup(index: SocketAddr, name: &str) -> Vec<Hit> {
    let mut client = IndexClient::connect(index, client_limits()).await.unwrap();
    client.lookup(name).await.unwrap()
}

/// A downloader that shares (reachably) from 127.0.0.1, and so can be connected to.
struct Downloader {
    sharing: Sharing,
    _dir: tempfile::TempDir,
    settings: SharingSettings,
    rendezvous: Arc<Rendezvous>,
}

impl Downloader {
    async fn start(index: SocketAddr) -> Downloader {
        let rendezvous = Arc::new(Rendezvous::default());
        let settings = peer_settings(None, &rendezvous);
        let (sharing, dir) = share(index, &[], &settings).await;
        Downloader {
            sharing,
            _dir: dir,
            settings,
            rendezvous,
        }
    }

    fn dialer(&self, index: SocketAddr) -> Dialer {
        Dialer::new(
            client_limits(),
            Some(Via {
                index,
                identity: self.settings.server.identity.clone(),
                pins: Default::default(),
                rendezvous: Some(self.rendezvous.clone()),
                // These tests are about reverse connections and what follows them.
                punch: false,
            }),
        )
    }
}

#[test]
fn the_index_tells_who_is_reachable_at_the_address_it_observed() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let none = Arc::new(Rendezvous::default());
        let (open, _a) = share(index, &[("open.txt", b"o")], &peer_settings(None, &none)).await;
        let (natted, _b) = share(
            index,
            &[("natted.txt", b"n")],
            &peer_settings(Some(BEHIND_NAT), &none),
        )
        .await;
        let open_reach = open.state().reach.expect("registered");
        assert!(open_reach.reachable, "{open_reach:?}");
        assert_eq!(open_reach.addr, open.addr);
        let natted_reach = natted.state().reach.expect("registered");
        assert!(!natted_reach.reachable, "{natted_reach:?}");
        // The index checked the address it saw the session come from, not the one the
        // peer listens on.
        assert_eq!(natted_reach.addr.ip(), IpAddr::from([127, 0, 0, 1]));
        assert_eq!(natted.addr.ip(), IpAddr::from(BEHIND_NAT));
        assert!(lookup(index, "open.txt").await[0].reachable);
        assert!(!lookup(index, "natted.txt").await[0].reachable);
        let mut client = IndexClient::connect(index, client_limits()).await.unwrap();
        let peers = client.peers().await.unwrap();
        let flag = |id: u64| peers.iter().find(|p| p.peer_id == id).unwrap().reachable;
        assert!(flag(open.state().peer_id));
        assert!(!flag(natted.state().peer_id));
    });
}

#[test]
fn a_sharer_behind_nat_is_reached_by_a_reverse_connection() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let contents = common::noise_words(3, 3 << 20);
        let none = Arc::new(Rendezvous::default());
        let (_sharer, _dir) = share(
            index,
            &[("song.ogg", &contents)],
            &peer_settings(Some(BEHIND_NAT), &none),
        )
        .await;
        let downloader = Downloader::start(index).await;
        let hits = lookup(index, "song.ogg").await;
        assert!(!hits[0].reachable);
        let into = tempfile::tempdir().unwrap();
        // Without a way back, the sharer cannot be reached, and the error says why.
        let job = Job::new(
            hits[0].file.clone(),
            hits.clone(),
            into.path(),
            client_limits(),
        );
        let err = download::fetch(job).await.unwrap_err().to_string();
        assert!(err.contains("behind a NAT"), "{err}");
        let mut job = Job::new(hits[0].file.clone(), hits, into.path(), client_limits());
        job.dialer = downloader.dialer(index);
        let done = download::fetch(job).await.unwrap();
        assert_eq!(std::fs::read(&done.path).unwrap(), contents);
        assert_eq!(done.paths.len(), 1);
        assert_eq!(done.paths[0].1, Route::Reverse);
        assert!(
            done.summary().starts_with("from 1 peer: "),
            "{}",
            done.summary()
        );
        assert!(done.summary().ends_with(" reverse"), "{}", done.summary());
        assert_eq!(downloader.rendezvous.waiting(), 0, "the token is forgotten");
        downloader.sharing.stop().await;
    });
}

/// A registered peer's session, over a raw index client, to see what the index pushes.
async fn raw_session(index: SocketAddr, port: u16) -> (IndexClient, u64, Identity) {
    let identity = Identity::generate().unwrap();
    let mut client = IndexClient::connect_as(index, &identity, None, client_limits())
        .await
        .unwrap();
    let id = client
        .register(port, &common::token(1), &[common::entry("x.bin", 5)])
        .await
        .unwrap();
    (client, id, identity)
}

/// Ping until the index's push arrives.
async fn next_push(client: &mut IndexClient) -> Push {
    let started = Instant::now();
    loop {
        client.ping().await.unwrap();
        if let Some(push) = client.take_push() {
            return push;
        }
        assert!(started.elapsed() < WAIT, "no push arrived");
        smol::Timer::after(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_sharer_is_only_sent_to_the_address_the_index_observed_for_the_asker() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let (mut sharer, sharer_id, _) = raw_session(index, 9).await;
        let downloader = Downloader::start(index).await;
        let identity = downloader.settings.server.identity.clone();
        let mut asker = IndexClient::connect_as(index, &identity, None, client_limits())
            .await
            .unwrap();
        // An address of the asker's choosing is no part of the message: refused.
        let claimed = format!(
            r#"{{"type":"connect","peer_id":{sharer_id},"token":"{}","addr":"192.0.2.1:80"}}"#,
            common::token(2)
        );
        assert!(serde_json::from_str::<IndexRequest>(&claimed).is_err());
        let stream = TcpStream::connect(index).unwrap();
        let mut raw = common::Raw::client_as(stream, &identity, None).unwrap();
        raw.index_hello();
        raw.send_body(claimed.as_bytes()).unwrap();
        let reply: IndexResponse = raw.recv();
        assert_eq!(common::index_error_code(&reply), ErrorCode::BadRequest);
        // A well-formed request: the sharer is told the downloader's observed address.
        asker
            .connect_request(sharer_id, &common::token(3))
            .await
            .unwrap();
        let push = next_push(&mut sharer).await;
        let expected = Push::Connect {
            addr: downloader.sharing.addr,
            token: common::token(3),
        };
        assert_eq!(push, expected);
        downloader.sharing.stop().await;
    });
}

#[test]
fn only_a_registered_reachable_peer_may_ask_for_a_reverse_connection() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let (_sharer, sharer_id, _) = raw_session(index, 9).await;
        // Not registered at all.
        let mut stranger = IndexClient::connect(index, client_limits()).await.unwrap();
        let err = stranger
            .connect_request(sharer_id, &common::token(4))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    code: ErrorCode::NotRegistered,
                    ..
                }
            ),
            "{err}"
        );
        // Registered, but the index could not reach it (nothing listens at port 9).
        let (mut natted, _, _) = raw_session(index, 9).await;
        let err = natted
            .connect_request(sharer_id, &common::token(5))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    code: ErrorCode::NotRegistered,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("reachable"), "{err}");
    });
}

/// What one key, and one address, may make a sharer do is counted over all their
/// connections (E6: 20 connections x 32 requests were all accepted): beyond
/// `pushes_per_key` for the key, `pushes_per_address` for the address, `busy`, counted in
/// the metrics by the bound; another sharer is another budget.
#[test]
fn pushes_are_bounded_per_key_and_address_for_each_sharer_not_per_connection() {
    smol::block_on(async {
        let mut settings = index::Settings::default();
        // Less than two keys' worth per address, so that a second key meets the address's.
        settings.pushes.per_address = settings.pushes.per_key * 3 / 2;
        let limits = settings.pushes;
        let (index, _stop, metrics) = common::start_index_with_metrics(settings);
        let (mut sharer, sharer_id, _) = raw_session(index, 9).await;
        let (mut other, other_id, _) = raw_session(index, 9).await;
        let downloader = Downloader::start(index).await;
        let identity = downloader.settings.server.identity.clone();
        // One key on 20 connections, asking for reverse connections and holes by turns.
        let mut accepted = 0;
        let mut refusals = Vec::new();
        for n in 0..20u128 {
            let mut asker = IndexClient::connect_as(index, &identity, None, client_limits())
                .await
                .unwrap();
            for m in 0..4u128 {
                // The sharer's pushes are read as they come, so its queue never fills.
                sharer.ping().await.unwrap();
                while sharer.take_push().is_some() {}
                let token = common::token(n * 10 + m);
                let asked = if m % 2 == 0 {
                    asker.connect_request(sharer_id, &token).await
                } else {
                    asker.punch_request(sharer_id, &token).await.map(drop)
                };
                match asked {
                    Ok(()) => accepted += 1,
                    Err(e) => refusals.push(e),
                }
            }
        }
        assert_eq!(accepted, limits.per_key, "pushes accepted from one key");
        assert_busy(&refusals[0], "your key");
        // Another key from the same address: what is left of the address's budget.
        let stranger = Identity::generate().unwrap();
        let connect = || IndexClient::connect_as(index, &stranger, None, client_limits());
        let mut accepted = 0;
        let refused = loop {
            sharer.ping().await.unwrap();
            while sharer.take_push().is_some() {}
            // A fresh connection each time: the connection's own budget stays out of it.
            let mut asker = connect().await.unwrap();
            match asker
                .punch_request(sharer_id, &common::token(900 + accepted))
                .await
            {
                Ok(_) => accepted += 1,
                Err(e) => break e,
            }
            assert!(
                accepted <= limits.per_address as u128,
                "no bound per address"
            );
        };
        assert_eq!(accepted as usize, limits.per_address - limits.per_key);
        assert_busy(&refused, "your address");
        // Another sharer is another budget; the index serves on.
        connect()
            .await
            .unwrap()
            .punch_request(other_id, &common::token(999))
            .await
            .unwrap();
        other.ping().await.unwrap();
        let refused = |reason: &str| {
            common::metric(
                &metrics,
                &format!("napster_index_pushes_refused_total{{reason=\"{reason}\"}}"),
            )
        };
        assert_eq!(refused("pushes_per_key"), refusals.len() as f64);
        assert_eq!(refused("pushes_per_address"), 1.0);
        downloader.sharing.stop().await;
    });
}

/// `err` is a `busy` refusal whose message names `who`.
fn assert_busy(err: &Error, who: &str) {
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
    assert!(err.to_string().contains(who), "{err}");
}

/// Open a TCP connection to `addr` and send `bytes`; whether the other side then
/// closed it without a word.
fn closed_after(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(bytes).unwrap();
    let mut buf = [0; 1];
    matches!(stream.read(&mut buf), Ok(0) | Err(_))
}

#[test]
fn a_reverse_stream_with_a_wrong_or_used_token_is_dropped() {
    smol::block_on(async {
        let (index, _stop) = start_index(index::Settings::default());
        let downloader = Downloader::start(index).await;
        let addr = downloader.sharing.addr;
        let waiter = downloader.rendezvous.expect();
        let token = waiter.token().to_owned();
        // A wrong token, a malformed one, a cut preamble: closed, the wait goes on.
        assert!(closed_after(addr, &rendezvous::preamble(&common::token(7))));
        assert!(closed_after(
            addr,
            &rendezvous::preamble("NOT-A-TOKEN-AT-ALL-xxxxxxxxxxxxx")
        ));
        assert!(closed_after(addr, &rendezvous::MAGIC));
        assert_eq!(downloader.rendezvous.waiting(), 1);
        // The right one is handed to the waiting download, once.
        let mut right = TcpStream::connect(addr).unwrap();
        right.write_all(&rendezvous::preamble(&token)).unwrap();
        let arrived = waiter.arrive(WAIT).await.expect("handed over");
        assert_eq!(
            arrived.get_ref().peer_addr().unwrap(),
            right.local_addr().unwrap()
        );
        assert!(closed_after(addr, &rendezvous::preamble(&token)));
        // The file server still speaks TLS to everyone else.
        let mut raw = common::Raw::connect(addr);
        raw.peer_hello();
        drop(waiter);
        assert_eq!(downloader.rendezvous.waiting(), 0);
        assert!(protocol::token_problem(&token).is_none());
        downloader.sharing.stop().await;
    });
}

#[test]
fn a_punching_sharer_is_only_sent_to_the_asking_connections_observed_address() {
    smol::block_on(async {
        // Budgets per key and address out of the way: the connection's own is under test.
        let mut settings = index::Settings::default();
        settings.pushes.per_key = 1000;
        settings.pushes.per_address = 1000;
        let (index, _stop) = start_index(settings);
        let (mut sharer, sharer_id, _) = raw_session(index, 9).await;
        let identity = Identity::generate().unwrap();
        // An address of the asker's choosing is no part of the message: refused.
        let claimed = format!(
            r#"{{"type":"punch","peer_id":{sharer_id},"token":"{}","addr":"192.0.2.1:80"}}"#,
            common::token(2)
        );
        assert!(serde_json::from_str::<IndexRequest>(&claimed).is_err());
        let stream = TcpStream::connect(index).unwrap();
        let mut raw = common::Raw::client_as(stream, &identity, None).unwrap();
        raw.index_hello();
        raw.send_body(claimed.as_bytes()).unwrap();
        let reply: IndexResponse = raw.recv();
        assert_eq!(common::index_error_code(&reply), ErrorCode::BadRequest);
        // Any key may ask (it need not share), and is told where the sharer's session
        // comes from; the sharer is told where the asking connection comes from.
        let mut asker = IndexClient::connect_as(index, &identity, None, client_limits())
            .await
            .unwrap();
        let to = asker
            .punch_request(sharer_id, &common::token(3))
            .await
            .unwrap();
        assert_eq!(to, sharer.local_addr().unwrap());
        let push = next_push(&mut sharer).await;
        let expected = Push::Punch {
            addr: asker.local_addr().unwrap(),
            token: common::token(3),
            downloader: identity.fingerprint(),
        };
        assert_eq!(push, expected);
        // A peer without a session here cannot be punched to.
        let err = asker
            .punch_request(sharer_id + 1, &common::token(4))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Refused {
                    code: ErrorCode::NotFound,
                    ..
                }
            ),
            "{err}"
        );
        // Punching shares the budget of `connect` and `relay`: a flood is told `busy`.
        let mut refused = None;
        for n in 2..=index::reach::MAX_CONNECTS as u128 {
            sharer.ping().await.unwrap();
            while sharer.take_push().is_some() {}
            if let Err(e) = asker.punch_request(sharer_id, &common::token(n + 10)).await {
                refused = Some((n, e));
                break;
            }
        }
        assert_stopped_at_the_limit(refused);
    });
}

/// A flood of requests was stopped, with `busy`, at the per-connection limit.
fn assert_stopped_at_the_limit(refused: Option<(u128, Error)>) {
    let (n, err) = refused.expect("the flood was stopped");
    assert_eq!(n, index::reach::MAX_CONNECTS as u128);
    assert!(
        matches!(
            err,
            Error::Refused {
                code: ErrorCode::Busy,
                ..
            }
        ),
        "{err}"
    );
}

/// An index that bounds nothing (as one that lies may): any key may push any number of
/// times, and every peer counts as reachable at the port it registers.
fn unbounded_index() -> (SocketAddr, napster::runtime::ShutdownTrigger) {
    let mut settings = index::Settings::default();
    settings.pushes.per_key = usize::MAX;
    settings.pushes.per_address = usize::MAX;
    settings.connect_back = None;
    start_index(settings)
}

/// A third party's port: counts the connections that arrive and holds them open
/// (`hold`) or closes them at once.
fn target(hold: bool) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = arrived.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if hold {
                held.push(stream);
            }
        }
    });
    (port, arrived)
}

/// Have the index push `n` reverse connections to the target at `port` on `sharer`,
/// one after the other as the sharer takes each; returns the sharer's counts.
async fn aim(index: SocketAddr, sharer: &Sharing, port: u16, n: u128) -> (u64, u64) {
    let (mut asker, _, _) = raw_session(index, port).await;
    let peer = sharer.state().peer_id;
    for k in 0..n {
        asker
            .connect_request(peer, &common::token(k))
            .await
            .unwrap();
        let counts = || sharer.pushes().obeyed + sharer.pushes().ignored;
        common::wait_until("the sharer takes the push", WAIT, || {
            counts() == k as u64 + 1
        });
    }
    (sharer.pushes().obeyed, sharer.pushes().ignored)
}

/// E6/E7, the sharer's own bound: whatever its index asks, a sharer carries out at most
/// `[peer] max_pushes` pushes per window, and the rest never leave it.
#[test]
fn a_sharer_obeys_at_most_max_pushes_per_window_whatever_its_index_says() {
    smol::block_on(async {
        let (index, _stop) = unbounded_index();
        let none = Arc::new(Rendezvous::default());
        let mut settings = peer_settings(Some(BEHIND_NAT), &none);
        settings.pushes.per_window = 6;
        let (sharer, _dir) = share(index, &[("s.bin", b"s")], &settings).await;
        let (port, arrived) = target(false);
        assert_eq!(aim(index, &sharer, port, 20).await, (6, 14));
        common::wait_until("the obeyed pushes arrive", WAIT, || {
            arrived.load(std::sync::atomic::Ordering::SeqCst) == 6
        });
        sharer.stop().await;
    });
}

/// E6/E7: a sharer carries out at most `[peer] max_pushes_at_once` pushes at once (here
/// held open by the target, which never answers), ignoring the others.
#[test]
fn a_sharer_carries_out_at_most_max_pushes_at_once() {
    smol::block_on(async {
        let (index, _stop) = unbounded_index();
        let none = Arc::new(Rendezvous::default());
        let mut settings = peer_settings(Some(BEHIND_NAT), &none);
        settings.pushes.at_once = 2;
        let (sharer, _dir) = share(index, &[("s.bin", b"s")], &settings).await;
        let (port, arrived) = target(true);
        assert_eq!(aim(index, &sharer, port, 20).await, (2, 18));
        common::wait_until("the running pushes arrive", WAIT, || {
            arrived.load(std::sync::atomic::Ordering::SeqCst) == 2
        });
        sharer.stop().await;
    });
}

/// The real binary sharing with `[peer] max_pushes` set in its `napster.toml`: whatever
/// its index asks, it connects out at most that many times per window, and logs each
/// push it ignores.
#[test]
fn max_pushes_in_napster_toml_bounds_a_sharing_process() {
    use common::process::Napster;
    const NAPSTER: Napster = Napster {
        log: "warn",
        patience: Some(WAIT),
    };
    let (index, _stop) = unbounded_index();
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("share")).unwrap();
    std::fs::write(home.path().join("share/flooded.bin"), b"f").unwrap();
    std::fs::write(
        home.path().join("napster.toml"),
        "[peer]\nmax_pushes = 6\nport_mapping = false\n[log]\nfile = \"sharer.log\"\n",
    )
    .unwrap();
    let mut sharer = NAPSTER.start(home.path(), &format!("connect {index}\nregister share 0\n"));
    sharer.wait_for("registered as peer");
    let ignored = || {
        std::fs::read_to_string(home.path().join("sharer.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(": ignored, ") && l.contains("max_pushes"))
            .count()
    };
    let (port, arrived) = target(false);
    let arrived = || arrived.load(std::sync::atomic::Ordering::SeqCst);
    smol::block_on(async {
        let peer = lookup(index, "flooded.bin").await[0].peer_id;
        let (mut asker, _, _) = raw_session(index, port).await;
        for k in 0..20 {
            asker
                .connect_request(peer, &common::token(k))
                .await
                .unwrap();
            common::wait_until("the sharer obeys or ignores the push", WAIT, || {
                arrived() + ignored() == k as usize + 1
            });
        }
    });
    assert_eq!((arrived(), ignored()), (6, 14));
}
