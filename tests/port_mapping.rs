//! Port mapping against a real router: miniupnpd in a home router's namespace (see
//! `tests/netns`). A sharing peer behind it asks for a mapping, registers the public port,
//! and is then downloaded from directly by a peer on the wan; quitting removes the
//! mapping; without a UPnP router, or with `[peer] port_mapping = false`, `status` says
//! so and sharing is not held up. Skipped (with a "skipped: …" line) where namespaces,
//! iptables or miniupnpd are missing.

mod common;
mod netns;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::process::{Napster, Running, last_word, text};
use netns::{Home, Host, Internet, Nat, internet_or_skip};

/// These processes log what they do, and may take 20 s to print an expected line.
const NAPSTER: Napster = Napster {
    log: "info",
    patience: Some(Duration::from_secs(20)),
};

/// Longest wait for a mapping to appear in `status`: the router's search timeout with
/// room to spare on a loaded machine.
const MAPPED_WITHIN: Duration = Duration::from_secs(15);

/// A folder `name` under `root` holding `napster.toml` with `config`.
fn home_dir(root: &Path, name: &str, config: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("napster.toml"), config).unwrap();
    dir
}

/// An index server on `host`, on every address; its address.
fn start_index(host: &Host, root: &Path) -> (Running, SocketAddrV4) {
    let dir = home_dir(root, "index", "[index]\nhost = \"0.0.0.0\"\n");
    let (index, port) = NAPSTER.serve_in(&host.ns, &dir);
    (index, host.addr(port))
}

/// A peer on `host` sharing one file, `name`, with `config` as its napster.toml; the
/// running process (stdin still open) and its file server's address.
fn start_sharer(
    host: &Host,
    root: &Path,
    name: &str,
    config: &str,
    index: SocketAddrV4,
) -> (Running, SocketAddrV4) {
    let dir = home_dir(root, name, config);
    let shared = dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join(format!("{name}.ogg")), format!("{name} sings")).unwrap();
    let mut peer = NAPSTER.start_in(
        Some(&host.ns),
        &dir,
        &[],
        &format!("connect {index}\nregister {} 0\n", shared.display()),
    );
    let serving = last_word(&peer.wait_for("registered as peer"));
    (peer, serving.parse().unwrap())
}

/// Ask `peer` for its `status` until its port mapping line contains none of `pending`;
/// that line.
fn mapping_line(peer: &mut Running, pending: &[&str]) -> String {
    let deadline = Instant::now() + MAPPED_WITHIN;
    loop {
        peer.send("status");
        let line = peer.wait_for("port mapping:");
        if !pending.iter().any(|p| line.contains(p)) || Instant::now() > deadline {
            return line;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ask `peer` for its `status` until its line starting `prefix` contains `wanted` (or
/// [`MAPPED_WITHIN`] passed); that line.
fn status_line(peer: &mut Running, prefix: &str, wanted: &str) -> String {
    let deadline = Instant::now() + MAPPED_WITHIN;
    loop {
        peer.send("status");
        let line = peer.wait_for(prefix);
        if line.contains(wanted) || Instant::now() > deadline {
            return line;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The wan, an index on it, a downloader on it, and a home whose router runs miniupnpd;
/// `None` (after a "skipped" line) where this machine cannot build that.
struct World {
    index_addr: SocketAddrV4,
    downloader: Host,
    sharer: Host,
    home: Home,
    router: Host,
    upnpd: netns::upnp::Upnpd,
    _index: Running,
    net: Internet,
}

fn world(test: &str, tmp: &Path) -> Option<World> {
    let mut net = internet_or_skip(test)?;
    let index_host = net.public_host();
    let downloader = net.public_host();
    let home = net.home(Nat::Cone);
    let sharer = net.home_host(&home);
    let upnpd = match net.upnpd(&home) {
        Ok(upnpd) => upnpd,
        Err(why) => {
            eprintln!("skipped: {test}: {why}");
            return None;
        }
    };
    let (index, index_addr) = start_index(&index_host, tmp);
    Some(World {
        index_addr,
        downloader,
        sharer,
        router: home.router.clone(),
        home,
        upnpd,
        _index: index,
        net,
    })
}

/// The public address in a `port mapping: PUBLIC → LOCAL via UPnP` line.
fn public_addr(line: &str) -> SocketAddrV4 {
    let after = line.split("port mapping: ").nth(1).unwrap();
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// Two peers behind one router both serve on port 25000: the first gets public port
/// 25000, the second another one, and the index tells downloaders each peer's public
/// port, so a downloader on the wan fetches from both straight through the router.
#[test]
fn peers_behind_a_upnp_router_map_their_ports_and_are_downloaded_from_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut w) = world("peers_behind_a_upnp_router_map…", tmp.path()) else {
        return;
    };
    let second_host = w.net.home_host(&w.home);
    let config = "[peer]\nport = 25000\n";
    let mut peers = Vec::new();
    for (host, name) in [(&w.sharer, "first"), (&second_host, "second")] {
        let dir = home_dir(tmp.path(), name, config);
        let shared = dir.join("shared");
        std::fs::create_dir_all(&shared).unwrap();
        std::fs::write(shared.join(format!("{name}.ogg")), format!("{name} sings")).unwrap();
        let script = format!("connect {}\nregister {}\n", w.index_addr, shared.display());
        let mut peer = NAPSTER.start_in(Some(&host.ns), &dir, &[], &script);
        let serving: SocketAddrV4 = last_word(&peer.wait_for("registered as peer"))
            .parse()
            .unwrap();
        assert_eq!(serving, host.addr(25000));
        // One at a time, so that the first is the one that gets port 25000.
        let line = mapping_line(&mut peer, &["asking"]);
        assert!(
            line.contains(&format!(" → {serving} via UPnP")),
            "{line}\nminiupnpd:\n{}",
            w.upnpd.log()
        );
        peers.push((peer, public_addr(&line)));
    }
    let (first, second) = (peers[0].1, peers[1].1);
    assert_eq!(first, w.router.addr(25000));
    assert_eq!(*second.ip(), w.router.ip);
    assert_ne!(second.port(), 25000);
    assert_eq!(w.upnpd.redirects().len(), 2, "{:?}", w.upnpd.redirects());
    // Both file servers are reachable from the wan now, at the router's address.
    assert!(w.net.tcp_connects(&w.downloader.ns, first));
    assert!(w.net.tcp_connects(&w.downloader.ns, second));

    // The index tells others the router's address and each peer's public port (once
    // the peer registered again with it).
    let dir = home_dir(tmp.path(), "downloader", "");
    let deadline = Instant::now() + MAPPED_WITHIN;
    let told = |stdout: &str| {
        [first, second]
            .iter()
            .all(|p| stdout.contains(&format!("\"addr\":\"{p}\"")))
    };
    let stdout = loop {
        let out = NAPSTER.run_in(
            Some(&w.downloader.ns),
            &dir,
            &format!("connect {}\nformat json\npeers\n", w.index_addr),
        );
        let stdout = text(&out.stdout);
        if told(&stdout) || Instant::now() > deadline {
            break stdout;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(told(&stdout), "{stdout}");
    // The index's connect-back check went through the mapping too: each peer is told
    // it is reachable at its public address.
    for (peer, public) in &mut peers {
        let line = status_line(peer, "sharing:", &format!("reachable at {public}"));
        assert!(line.contains(&format!("reachable at {public}")), "{line}");
    }
    // A downloader on the wan fetches each file straight from its peer.
    let out = NAPSTER.run_in(
        Some(&w.downloader.ns),
        &dir,
        &format!("connect {}\nget first.ogg\nget second.ogg\n", w.index_addr),
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\nminiupnpd:\n{}",
        text(&out.stderr),
        w.upnpd.log()
    );
    for name in ["first", "second"] {
        assert_eq!(
            std::fs::read(dir.join(format!("downloads/{name}.ogg"))).unwrap(),
            format!("{name} sings").as_bytes()
        );
    }
    for (peer, _) in peers {
        assert!(peer.terminate().success());
    }
}

#[test]
fn quitting_removes_the_mapping_from_the_router() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut w) = world("quitting_removes_the_mapping…", tmp.path()) else {
        return;
    };
    let (mut peer, serving) = start_sharer(&w.sharer, tmp.path(), "tune", "", w.index_addr);
    let line = mapping_line(&mut peer, &["asking"]);
    assert!(line.contains("via UPnP"), "{line}\n{}", w.upnpd.log());
    assert_eq!(w.upnpd.redirects().len(), 1, "{:?}", w.upnpd.redirects());
    // Leased for an hour (napster's LEASE, renewed every half hour), not for ever: a
    // peer that dies leaves no mapping behind for long.
    let left = lease_end(&w.upnpd).saturating_sub(now());
    assert!(
        (3500..=3600).contains(&left),
        "{:?}: {left} s left",
        w.upnpd.leases()
    );
    let public = w.router.addr(serving.port());
    assert!(w.net.tcp_connects(&w.downloader.ns, public));

    peer.send("quit");
    peer.end_input();
    assert!(peer.wait().success());
    assert_eq!(w.upnpd.redirects(), Vec::<String>::new());
    assert!(!w.net.tcp_connects(&w.downloader.ns, public));
}

/// The lease's end, in seconds since the epoch, of the one mapping `upnpd` holds.
fn lease_end(upnpd: &netns::upnp::Upnpd) -> u64 {
    let leases = upnpd.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    leases[0].split(':').nth(4).unwrap().parse().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_mapping_is_renewed_before_its_lease_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(mut w) = world("a_mapping_is_renewed…", tmp.path()) else {
        return;
    };
    let config = "[peer]\nport_mapping_lease = 2\n";
    let (mut peer, serving) = start_sharer(&w.sharer, tmp.path(), "loop", config, w.index_addr);
    let line = mapping_line(&mut peer, &["asking"]);
    assert!(line.contains("via UPnP"), "{line}\n{}", w.upnpd.log());
    let first = lease_end(&w.upnpd);
    assert!(first <= now() + 2, "{:?}", w.upnpd.leases());
    // Renewed every second: well past the first lease's end, the mapping is still
    // there, leased on, and still works.
    let deadline = Instant::now() + Duration::from_secs(8);
    while now() <= first + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(now() > first + 1);
    assert!(lease_end(&w.upnpd) >= now(), "{:?}", w.upnpd.leases());
    assert_eq!(w.upnpd.redirects().len(), 1, "{:?}", w.upnpd.redirects());
    assert!(
        w.net
            .tcp_connects(&w.downloader.ns, w.router.addr(serving.port()))
    );
    assert!(peer.terminate().success());
    assert_eq!(w.upnpd.redirects(), Vec::<String>::new());
}

#[test]
fn without_a_upnp_router_or_with_mapping_off_status_says_so_and_sharing_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let test = "without_a_upnp_router…";
    let Some(mut net) = internet_or_skip(test) else {
        return;
    };
    let index_host = net.public_host();
    let home = net.home(Nat::Cone);
    let (asking, off) = (net.home_host(&home), net.home_host(&home));
    let (_index, index_addr) = start_index(&index_host, tmp.path());

    // No router answers: sharing starts at once all the same, and status says why.
    let started = Instant::now();
    let (mut peer, _) = start_sharer(&asking, tmp.path(), "lonely", "", index_addr);
    let line = mapping_line(&mut peer, &["asking"]);
    assert!(line.contains("no router answered"), "{line}");
    assert!(started.elapsed() < MAPPED_WITHIN, "{:?}", started.elapsed());

    let config = "[peer]\nport_mapping = false\n";
    let (mut quiet, _) = start_sharer(&off, tmp.path(), "quiet", config, index_addr);
    quiet.send("status");
    let line = quiet.wait_for("port mapping:");
    assert!(line.contains("off ([peer] port_mapping = false)"), "{line}");

    assert!(peer.terminate().success());
    assert!(quiet.terminate().success());
}
