//! The ways around a NAT, measured (`docs/NAT.md`), in one run:
//!
//! 1. Time from `get` to the first byte on each path — direct, reverse, relayed — on
//!    loopback in this process (median of `NAPSTER_NAT_TRIES`, default 15).
//! 2. Relayed throughput as a share of direct: one `NAPSTER_NAT_MIB` file (default 256)
//!    both ways, best of 3 each.
//! 3. NAT → NAT downloads with the real binary in the namespace internet of
//!    `tests/netns` (needs root; skipped otherwise): success over 20 tries behind
//!    full-cone (`MASQUERADE`) and symmetric (`--random-fully`) routers, the path each
//!    took (punched or relayed) and the median time of a whole download by each path.
//!
//! `cargo bench --bench nat`.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use napster::client::{Dialer, IndexClient, Via};
use napster::download::{self, Job};
use napster::identity::Identity;
use napster::index;
use napster::peer::{Sharing, SharingSettings};
use napster::protocol::{Hit, Limits};
use napster::rendezvous::Rendezvous;
use napster::runtime::{self, ShutdownTrigger};
use parking_lot::Mutex;
use process::{Napster, text};

#[path = "../tests/common/process.rs"]
mod process;

#[path = "../tests/netns/mod.rs"]
mod netns;

const MIB: u64 = 1 << 20;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn write_noise(path: &Path, len: u64) {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut block = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(MIB);
        file.write_all(&block[..n as usize]).unwrap();
        left -= n;
    }
}

fn start_index() -> (SocketAddr, ShutdownTrigger) {
    let listener = smol::Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    let (trigger, shutdown) = runtime::shutdown_pair();
    let store = Arc::new(index::MemoryStore::new());
    runtime::spawn(index::run(
        listener,
        store,
        index::Settings::default(),
        shutdown,
    ))
    .detach();
    (addr, trigger)
}

/// Share `dir` from `host` (127.0.0.2: "behind NAT", the index cannot connect back).
fn share(
    dir: &Path,
    index: SocketAddr,
    host: [u8; 4],
    rendezvous: &Arc<Rendezvous>,
    identity: &Identity,
) -> Sharing {
    let mut settings = SharingSettings {
        host: Some(IpAddr::from(host)),
        ..SharingSettings::default()
    };
    settings.server.identity = identity.clone();
    settings.server.rendezvous = Some(rendezvous.clone());
    let share = napster::peer::scan::scan(dir)
        .unwrap()
        .hash(&|_| {})
        .unwrap();
    smol::block_on(Sharing::start(share, &[index], &settings)).unwrap()
}

fn lookup(index: SocketAddr, name: &str) -> Vec<Hit> {
    smol::block_on(async {
        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();
        client.lookup(name).await.unwrap()
    })
}

/// Download `hit` with `dialer` into a fresh folder; seconds to the first byte and in all.
fn fetch(hit: &Hit, dialer: &Dialer, into: &Path) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(into);
    let mut job = Job::new(hit.file.clone(), vec![hit.clone()], into, Limits::default());
    job.dialer = dialer.clone();
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = first.clone();
    // Told once with the resumed bytes (0) before anything is connected; the first
    // call with bytes is the first byte.
    job.progress = Arc::new(move |n| {
        if n > 0 {
            seen.lock().get_or_insert_with(Instant::now);
        }
    });
    let started = Instant::now();
    smol::block_on(download::fetch(job)).expect("the download verifies");
    let total = started.elapsed().as_secs_f64();
    let first = first
        .lock()
        .map_or(total, |at| (at - started).as_secs_f64());
    (first, total)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

#[allow(
    clippy::too_many_lines,
    reason = "one measured run and its report, read top to bottom"
)]
fn loopback() {
    let tries = env_or("NAPSTER_NAT_TRIES", 15) as usize;
    let big = env_or("NAPSTER_NAT_MIB", 256) * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let (index, _stop) = start_index();
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    write_noise(&shared.join("small.bin"), MIB);
    write_noise(&shared.join("big.bin"), big);
    let none = Arc::new(Rendezvous::default());
    let open = share(
        &shared,
        index,
        [127, 0, 0, 1],
        &none,
        &Identity::generate().unwrap(),
    );
    let natted = share(
        &shared,
        index,
        [127, 0, 0, 2],
        &none,
        &Identity::generate().unwrap(),
    );
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let rendezvous = Arc::new(Rendezvous::default());
    // The downloader's key: the index finds its registration for a reverse connection.
    let own = Identity::generate().unwrap();
    let downloader = share(&empty, index, [127, 0, 0, 1], &rendezvous, &own);
    let identity = Identity::generate().unwrap();
    let via = |rendezvous: Option<Arc<Rendezvous>>, identity: &Identity| Via {
        index,
        identity: identity.clone(),
        pins: Default::default(),
        rendezvous,
        // Loopback has no NAT to punch through; the namespace rows show punching.
        punch: false,
    };
    // Without a rendezvous (and as a key that shares nothing) a dialer takes the relay.
    let paths = [
        (
            "direct",
            open.state().peer_id,
            Dialer::direct(Limits::default()),
        ),
        (
            "reverse",
            natted.state().peer_id,
            Dialer::new(Limits::default(), Some(via(Some(rendezvous.clone()), &own))),
        ),
        (
            "relayed",
            natted.state().peer_id,
            Dialer::new(Limits::default(), Some(via(None, &identity))),
        ),
    ];
    let hits = |name: &str, peer: u64| {
        lookup(index, name)
            .into_iter()
            .find(|h| h.peer_id == peer)
            .unwrap()
    };
    let into = tmp.path().join("into");
    println!("time from get to the first byte (1 MiB file, median of {tries}):");
    let mut direct_first = 0.0;
    for (name, peer, dialer) in &paths {
        let hit = hits("small.bin", *peer);
        let firsts: Vec<f64> = (0..tries).map(|_| fetch(&hit, dialer, &into).0).collect();
        let first = median(firsts);
        if *name == "direct" {
            direct_first = first;
        }
        println!(
            "  {name:8} {:7.2} ms  ({:.2}× direct)",
            first * 1e3,
            first / direct_first
        );
    }
    println!("throughput ({} MiB, best of 3):", big / MIB);
    let mut direct_rate = 0.0;
    for (name, peer, dialer) in &paths {
        let hit = hits("big.bin", *peer);
        let best = (0..3)
            .map(|_| fetch(&hit, dialer, &into).1)
            .fold(f64::INFINITY, f64::min);
        let rate = big as f64 / best / MIB as f64;
        if *name == "direct" {
            direct_rate = rate;
        }
        println!(
            "  {name:8} {rate:8.1} MiB/s  ({:.2}× direct)",
            rate / direct_rate
        );
    }
    smol::block_on(async {
        downloader.stop().await;
        natted.stop().await;
        open.stop().await;
    });
}

const NAPSTER: Napster = Napster {
    log: "error",
    patience: Some(Duration::from_secs(30)),
};

/// NAT → NAT with the real binary, 20 tries each on full-cone and symmetric routers.
fn namespaces() {
    for (label, nat) in [
        ("full-cone", netns::Nat::Cone),
        ("symmetric", netns::Nat::Symmetric),
    ] {
        let Some(mut net) = netns::internet_or_skip("NAT to NAT") else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let index_host = net.public_host();
        let dir = tmp.path().join("index");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("napster.toml"), "[index]\nhost = \"0.0.0.0\"\n").unwrap();
        let mut index = NAPSTER.start_in(Some(&index_host.ns), &dir, &[], "serve 0\n");
        let bound = process::last_word(&index.wait_for("index server listening on"));
        let port: u16 = bound.rsplit(':').next().unwrap().parse().unwrap();
        let index_addr = index_host.addr(port);
        let home = net.home(nat);
        let sharer_host = net.home_host(&home);
        let sdir = tmp.path().join("sharer");
        std::fs::create_dir_all(sdir.join("shared")).unwrap();
        std::fs::write(sdir.join("napster.toml"), "").unwrap();
        write_noise(&sdir.join("shared").join("song.bin"), 4 * MIB);
        let mut sharer = NAPSTER.start_in(
            Some(&sharer_host.ns),
            &sdir,
            &[],
            &format!("connect {index_addr}\nregister shared 0\n"),
        );
        sharer.wait_for("registered as peer");
        let other = net.home(nat);
        let downloader = net.home_host(&other);
        let (mut ok, mut routes) = (0, std::collections::BTreeMap::<String, Vec<f64>>::new());
        for n in 0..20 {
            let ddir = tmp.path().join(format!("d{n}"));
            std::fs::create_dir_all(&ddir).unwrap();
            std::fs::write(ddir.join("napster.toml"), "").unwrap();
            let started = Instant::now();
            let out = NAPSTER.run_in(
                Some(&downloader.ns),
                &ddir,
                &format!("connect {index_addr}\nget song.bin\n"),
            );
            let took = started.elapsed().as_secs_f64();
            let stdout = text(&out.stdout);
            if out.status.success() {
                ok += 1;
            }
            if let Some(line) = stdout.lines().find(|l| l.starts_with("from 1 peer: ")) {
                let route = line.rsplit(' ').next().unwrap_or("").to_owned();
                routes.entry(route).or_default().push(took);
            }
        }
        let paths: Vec<String> = routes
            .into_iter()
            .map(|(route, times)| {
                let n = times.len();
                format!("{n} {route} (median {:.2} s each)", median(times))
            })
            .collect();
        println!(
            "NAT → NAT, {label}: {ok}/20 succeeded; paths: {} (a whole `connect; get` of 4 MiB \
             in a fresh process)",
            paths.join(", ")
        );
        drop((sharer, index));
    }
}

fn main() {
    loopback();
    namespaces();
}
