//! Downloads across real NATs (`docs/NAT.md`), in the namespace internet of `tests/netns`:
//! the real napster binary runs on public hosts and behind home routers that masquerade,
//! and each case checks how the index saw each peer and which path the download took.
//! Skipped (with a "skipped: …" line) where namespaces cannot be made.

mod common;
mod netns;

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::process::{Napster, Running, text};
use netns::{Host, Internet, Nat, internet_or_skip};

/// These processes log warnings, and may take 20 s to print an expected line.
const NAPSTER: Napster = Napster {
    log: "warn",
    patience: Some(Duration::from_secs(20)),
};

const SONG: &[u8] = b"la la la, a song shared from wherever it is";

/// A folder `name` under `root` with an empty `napster.toml`, and `shared/` in it holding
/// `files`.
fn peer_dir(root: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    std::fs::write(dir.join("napster.toml"), "").unwrap();
    for (file, contents) in files {
        std::fs::write(dir.join("shared").join(file), contents).unwrap();
    }
    dir
}

/// An index server on a public host of `net`: the process and its address.
fn start_index(net: &mut Internet, root: &Path) -> (Running, SocketAddrV4) {
    let host = net.public_host();
    let dir = root.join("index");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("napster.toml"), "[index]\nhost = \"0.0.0.0\"\n").unwrap();
    let (index, port) = NAPSTER.serve_in(&host.ns, &dir);
    (index, host.addr(port))
}

/// A peer on `host` sharing `files` with the index at `index`, registered; the process
/// and the line saying how the index sees it.
fn start_sharer(
    host: &Host,
    root: &Path,
    name: &str,
    index: SocketAddrV4,
    files: &[(&str, &[u8])],
) -> (Running, String) {
    let dir = peer_dir(root, name, files);
    let mut peer = NAPSTER.start_in(
        Some(&host.ns),
        &dir,
        &[],
        &format!("connect {index}\nregister shared 0\n"),
    );
    peer.wait_for("registered as peer");
    let reach = peer.wait_for("reach");
    (peer, reach)
}

/// A peer on `host` that shares an empty folder (so that sharers can connect back to it)
/// and downloads `song.ogg`; its stdout and stderr.
fn download(host: &Host, root: &Path, name: &str, index: SocketAddrV4) -> (String, String) {
    let dir = peer_dir(root, name, &[]);
    let out = NAPSTER.run_in(
        Some(&host.ns),
        &dir,
        &format!("connect {index}\nregister shared 0\nget song.ogg\nunregister\n"),
    );
    let saved = dir.join("downloads").join("song.ogg");
    if out.status.success() {
        assert_eq!(std::fs::read(saved).unwrap(), SONG);
    }
    (text(&out.stdout), text(&out.stderr))
}

#[test]
fn public_to_nat_goes_by_a_reverse_connection() {
    let Some(mut net) = internet_or_skip("public_to_nat_goes_by_a_reverse_connection") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (index, index_addr) = start_index(&mut net, tmp.path());
    let home = net.home(Nat::Cone);
    let behind = net.home_host(&home);
    let (sharer, reach) = start_sharer(&behind, tmp.path(), "s", index_addr, &[("song.ogg", SONG)]);
    assert!(reach.contains("behind NAT"), "{reach}");
    assert!(reach.contains(&home.router.ip.to_string()), "{reach}");
    let public = net.public_host();
    let (out, err) = download(&public, tmp.path(), "d", index_addr);
    assert!(out.contains("reachable at"), "{out}\n{err}");
    assert!(out.contains("from 1 peer: 1 reverse"), "{out}\n{err}");
    drop((sharer, index));
}

#[test]
fn nat_to_public_goes_direct() {
    let Some(mut net) = internet_or_skip("nat_to_public_goes_direct") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (index, index_addr) = start_index(&mut net, tmp.path());
    let public = net.public_host();
    let (sharer, reach) = start_sharer(&public, tmp.path(), "s", index_addr, &[("song.ogg", SONG)]);
    assert!(
        reach.contains(&format!("reachable at {}", public.ip)),
        "{reach}"
    );
    let home = net.home(Nat::Cone);
    let behind = net.home_host(&home);
    let (out, err) = download(&behind, tmp.path(), "d", index_addr);
    assert!(out.contains("behind NAT"), "{out}\n{err}");
    assert!(out.contains("from 1 peer: 1 direct"), "{out}\n{err}");
    drop((sharer, index));
}

#[test]
fn nat_to_nat_goes_by_hole_punching() {
    let Some(mut net) = internet_or_skip("nat_to_nat_goes_by_hole_punching") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (index, index_addr) = start_index(&mut net, tmp.path());
    let home = net.home(Nat::Cone);
    let behind = net.home_host(&home);
    let (sharer, _) = start_sharer(&behind, tmp.path(), "s", index_addr, &[("song.ogg", SONG)]);
    let other_home = net.home(Nat::Cone);
    let other = net.home_host(&other_home);
    let (out, err) = download(&other, tmp.path(), "d", index_addr);
    assert!(out.contains("behind NAT"), "{out}\n{err}");
    assert!(out.contains("from 1 peer: 1 punched"), "{out}\n{err}");
    drop((sharer, index));
}

#[test]
fn symmetric_nats_go_through_the_relay() {
    let Some(mut net) = internet_or_skip("symmetric_nats_go_through_the_relay") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (index, index_addr) = start_index(&mut net, tmp.path());
    let home = net.home(Nat::Symmetric);
    let behind = net.home_host(&home);
    let (sharer, reach) = start_sharer(&behind, tmp.path(), "s", index_addr, &[("song.ogg", SONG)]);
    assert!(reach.contains("behind NAT"), "{reach}");
    let other_home = net.home(Nat::Symmetric);
    let other = net.home_host(&other_home);
    let (out, err) = download(&other, tmp.path(), "d", index_addr);
    assert!(out.contains("from 1 peer: 1 relayed"), "{out}\n{err}");
    drop((sharer, index));
}

#[test]
fn one_download_draws_on_a_direct_a_reverse_and_a_relayed_source() {
    let Some(mut net) =
        internet_or_skip("one_download_draws_on_a_direct_a_reverse_and_a_relayed_source")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (index, index_addr) = start_index(&mut net, tmp.path());
    let big = common::noise_words(5, 24 << 20);
    let files: &[(&str, &[u8])] = &[("big.bin", &big)];
    let public = net.public_host();
    let (open, _) = start_sharer(&public, tmp.path(), "open", index_addr, files);
    let home = net.home(Nat::Cone);
    let behind = net.home_host(&home);
    let (natted, reach) = start_sharer(&behind, tmp.path(), "natted", index_addr, files);
    assert!(reach.contains("behind NAT"), "{reach}");
    // A third home whose router lets nothing through to the downloader: its sharer
    // cannot connect back, so only the relay is left for it.
    let downloader = net.public_host();
    let walled_home = net.home(Nat::Cone);
    let walled = net.home_host(&walled_home);
    let (walled_sharer, _) = start_sharer(&walled, tmp.path(), "walled", index_addr, files);
    let to_downloader = downloader.ip.to_string();
    net.exec_ok(
        &walled_home.router.ns,
        "iptables",
        &["-I", "FORWARD", "-d", &to_downloader, "-j", "REJECT"],
    );
    // The downloader waits 2 s (its timeout) for a reverse connection before the relay.
    let dir = peer_dir(tmp.path(), "d", &[]);
    std::fs::write(dir.join("napster.toml"), "[protocol]\ntimeout = 2\n").unwrap();
    let out = NAPSTER.run_in(
        Some(&downloader.ns),
        &dir,
        &format!("connect {index_addr}\nregister shared 0\nget big.bin\nunregister\n"),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(std::fs::read(dir.join("downloads/big.bin")).unwrap(), big);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("from 3 peers: "))
        .unwrap_or_else(|| panic!("{stdout}\n{stderr}"));
    for route in [" direct", " reverse", " relayed"] {
        assert!(summary.contains(route), "{summary}");
    }
    drop((open, natted, walled_sharer, index));
}

#[test]
fn peers_behind_the_same_nat_connect_inside_it() {
    let Some(mut net) = internet_or_skip("peers_behind_the_same_nat_connect_inside_it") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (index, index_addr) = start_index(&mut net, tmp.path());
    let home = net.home(Nat::Cone);
    let sharer_host = net.home_host(&home);
    let (sharer, reach) = start_sharer(
        &sharer_host,
        tmp.path(),
        "s",
        index_addr,
        &[("song.ogg", SONG)],
    );
    assert!(reach.contains("behind NAT"), "{reach}");
    let neighbour = net.home_host(&home);
    let (out, err) = download(&neighbour, tmp.path(), "d", index_addr);
    assert!(out.contains("from 1 peer: 1 local"), "{out}\n{err}");
    drop((sharer, index));
}
