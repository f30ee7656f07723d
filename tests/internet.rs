//! The namespace internet of `tests/netns` itself: a home behind a NAT router reaches the
//! index on the wan and registers, the index sees the router's address, and nothing on the
//! wan can connect into the home. Skipped (with a "skipped: …" line) where namespaces
//! cannot be made.

mod common;
mod netns;

use std::net::SocketAddrV4;
use std::time::Duration;

use common::process::{Napster, last_word, text};
use netns::{Nat, internet_or_skip};

/// These processes log warnings, and may take 20 s to print an expected line.
const NAPSTER: Napster = Napster {
    log: "warn",
    patience: Some(Duration::from_secs(20)),
};

/// A folder `name` under `root` holding `napster.toml` with `config`.
fn home_dir(root: &std::path::Path, name: &str, config: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("napster.toml"), config).unwrap();
    dir
}

#[test]
fn a_peer_behind_nat_registers_from_the_routers_address_and_cannot_be_reached() {
    let Some(mut net) = internet_or_skip("a_peer_behind_nat_registers…") else {
        return;
    };
    let index_host = net.public_host();
    let outsider = net.public_host();
    let home = net.home(Nat::Cone);
    let sharer = net.home_host(&home);
    let tmp = tempfile::tempdir().unwrap();

    // The index binds every address of its host: it is on the wan.
    let index_dir = home_dir(tmp.path(), "index", "[index]\nhost = \"0.0.0.0\"\n");
    let mut index = NAPSTER.start_in(Some(&index_host.ns), &index_dir, &[], "serve 0\n");
    let bound = last_word(&index.wait_for("index server listening on"));
    let port: u16 = bound.rsplit(':').next().unwrap().parse().unwrap();
    let index_addr = index_host.addr(port);

    let sharer_dir = home_dir(tmp.path(), "sharer", "");
    let shared = sharer_dir.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("song.ogg"), "la la la").unwrap();
    let mut peer = NAPSTER.start_in(
        Some(&sharer.ns),
        &sharer_dir,
        &[],
        &format!("connect {index_addr}\nregister {} 0\n", shared.display()),
    );
    let registered = peer.wait_for("registered as peer");
    let serving: SocketAddrV4 = last_word(&registered).parse().unwrap();
    assert_eq!(*serving.ip(), sharer.ip, "{registered}");

    // The index knows the peer by its router's wan address: that is all it can see.
    let outsider_dir = home_dir(tmp.path(), "outsider", "");
    let out = NAPSTER.run_in(
        Some(&outsider.ns),
        &outsider_dir,
        &format!("connect {index_addr}\nformat json\npeers\n"),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let router_ip = format!("\"host\":\"{}\"", home.router.ip);
    assert!(stdout.contains(&router_ip), "{stdout}");

    // Inside the home the file server answers; from the wan, neither the router's address
    // nor the home address itself leads to it.
    assert!(net.tcp_connects(&home.router.ns, serving));
    assert!(!net.tcp_connects(&outsider.ns, home.router.addr(serving.port())));
    // Even a wan host that routes the home's private range to the router gets nowhere.
    let [a, b, c, _] = home.gateway.octets();
    let home_net = format!("{a}.{b}.{c}.0/24");
    let via = home.router.ip.to_string();
    net.exec_ok(
        &outsider.ns,
        "ip",
        &["route", "add", &home_net, "via", &via],
    );
    assert!(!net.tcp_connects(&outsider.ns, serving));
    // The wan itself is reachable from the home.
    assert!(net.tcp_connects(&sharer.ns, index_addr));

    assert!(peer.terminate().success());
    assert!(index.terminate().success());
}
