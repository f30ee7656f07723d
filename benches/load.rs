//! Load on the index: many clients searching while peers register, re-register and leave.
//!
//! The index runs as the real binary in another process; this process runs the clients
//! and the churning peers on napster's executor. At the end the index's view must equal
//! the truth the peers know: no ghost peers, no lost files.
//!
//! `cargo bench --bench load`; `NAPSTER_LOAD_SECS` (default 30), `NAPSTER_LOAD_CLIENTS`
//! (default 1000) and `NAPSTER_LOAD_PEERS` (default 100) change the shape.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use napster::client::IndexClient;
use napster::protocol::{FileEntry, Limits};
use napster::runtime;
use process::{BIN, HOME_ENV, Killed};

#[path = "../tests/common/process.rs"]
mod process;

const FILES_PER_PEER: usize = 20;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Start the index as a separate process in `dir`; the process (killed when dropped)
/// and the address it listens on.
fn start_index(dir: &std::path::Path) -> (Killed, SocketAddr) {
    std::fs::write(
        dir.join("napster.toml"),
        "[index]\nmax_connections = 16384\nmax_connections_per_address = 16384\nmax_handshakes = 16384\nmax_handshakes_per_address = 16384\nmax_results = 100000\n[log]\nlevel = \"warn\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .env(HOME_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting napster");
    child.stdin.take().unwrap().write_all(b"serve 0\n").unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let addr = line
        .strip_prefix("index server listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (Killed(child), addr)
}

fn files(peer: usize, generation: u64) -> Vec<FileEntry> {
    (0..FILES_PER_PEER)
        .map(|k| FileEntry {
            name: format!("peer{peer:04}-gen{generation}-track{k:02}.ogg"),
            size: (peer * 1000 + k) as u64,
            sha256: format!("{:064x}", peer * 1000 + k),
            chunks: format!("{:064x}", peer * 1000 + k + 1),
        })
        .collect()
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    errors: AtomicU64,
    registrations: AtomicU64,
    departures: AtomicU64,
}

/// One peer: registers, then re-registers with new files, leaves cleanly, or drops its
/// connection, at random, until `stop`. Returns the files it shares at the end, and its
/// session, to be kept open until the final check.
async fn churn(
    peer: usize,
    index: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> (Vec<String>, Option<IndexClient>) {
    let token = format!("{:032x}", peer + 1);
    let mut generation = 0u64;
    let mut session: Option<IndexClient> = None;
    let mut shared: Vec<String> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        smol::Timer::after(Duration::from_millis(50 + fastrand::u64(0..200))).await;
        let result: napster::Result<()> = async {
            match (session.as_mut(), fastrand::u8(0..4)) {
                (None, _) => {
                    generation += 1;
                    let mut client = IndexClient::connect(index, Limits::default()).await?;
                    let list = files(peer, generation);
                    client.register(40000 + peer as u16, &token, &list).await?;
                    shared = list.into_iter().map(|f| f.name).collect();
                    session = Some(client);
                    counters.registrations.fetch_add(1, Ordering::Relaxed);
                }
                (Some(client), 0) => {
                    generation += 1;
                    let list = files(peer, generation);
                    client.register(40000 + peer as u16, &token, &list).await?;
                    shared = list.into_iter().map(|f| f.name).collect();
                    counters.registrations.fetch_add(1, Ordering::Relaxed);
                }
                (Some(client), 1) => {
                    client.unregister().await?;
                    session = None;
                    shared.clear();
                    counters.departures.fetch_add(1, Ordering::Relaxed);
                }
                (Some(_), 2) => {
                    // Vanish without a word: the index must notice the closed socket.
                    session = None;
                    shared.clear();
                    counters.departures.fetch_add(1, Ordering::Relaxed);
                }
                (Some(client), _) => {
                    client.ping().await?;
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            eprintln!("peer {peer}: {e}");
            counters.errors.fetch_add(1, Ordering::Relaxed);
            session = None;
            shared.clear();
        }
    }
    (shared, session)
}

/// One searching client; returns its latencies in microseconds.
async fn search(index: SocketAddr, stop: Arc<AtomicBool>, counters: Arc<Counters>) -> Vec<u32> {
    let mut latencies = Vec::new();
    let mut client = match IndexClient::connect(index, Limits::default()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("client: {e}");
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return latencies;
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let pattern = match fastrand::u8(0..3) {
            0 => format!("peer{:04}", fastrand::usize(0..100)),
            1 => format!("track{:02}.ogg", fastrand::usize(0..FILES_PER_PEER)),
            _ => format!("peer00{}?-*-track0*", fastrand::u8(0..10)),
        };
        let started = Instant::now();
        match client.search(&pattern).await {
            Ok(_) => {
                latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                counters.requests.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("search: {e}");
                counters.errors.fetch_add(1, Ordering::Relaxed);
                return latencies;
            }
        }
    }
    latencies
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[allow(
    clippy::too_many_lines,
    reason = "one measured run and its report, read top to bottom"
)]
fn main() {
    let secs = env_or("NAPSTER_LOAD_SECS", 30);
    let clients = env_or("NAPSTER_LOAD_CLIENTS", 1000) as usize;
    let peers = env_or("NAPSTER_LOAD_PEERS", 100) as usize;
    let dir = tempfile::tempdir().unwrap();
    let (_index, addr) = start_index(dir.path());
    println!(
        "index (separate process) at {addr}; {clients} searching clients, {peers} churning peers, {secs} s"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let peer_tasks: Vec<_> = (0..peers)
        .map(|p| runtime::spawn(churn(p, addr, stop.clone(), counters.clone())))
        .collect();
    let client_tasks: Vec<_> = (0..clients)
        .map(|_| runtime::spawn(search(addr, stop.clone(), counters.clone())))
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();

    let mut latencies: Vec<u32> = Vec::new();
    let mut truth: BTreeSet<String> = BTreeSet::new();
    let mut sessions = Vec::new();
    smol::block_on(async {
        for task in client_tasks {
            latencies.extend(task.await);
        }
        for task in peer_tasks {
            let (shared, session) = task.await;
            truth.extend(shared);
            sessions.push(session);
        }
    });
    latencies.sort_unstable();

    // The index's view must converge on the truth (a vanished peer's socket close is
    // noticed asynchronously), and then stay equal.
    let check_started = Instant::now();
    let view = smol::block_on(async {
        let mut client = IndexClient::connect(addr, Limits::default()).await.unwrap();
        loop {
            let (hits, truncated) = client.search("track").await.unwrap();
            assert!(!truncated, "raise max_results for the check");
            let view: BTreeSet<String> = hits.into_iter().map(|h| h.file.name).collect();
            if view == truth || check_started.elapsed() > Duration::from_secs(5) {
                return view;
            }
            smol::Timer::after(Duration::from_millis(20)).await;
        }
    });
    let converged = check_started.elapsed();
    drop(sessions);
    let ghosts = view.difference(&truth).count();
    let lost = truth.difference(&view).count();

    let requests = counters.requests.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    println!(
        "searches:        {requests} in {:.1} s = {:.0} req/s",
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency (ms):    p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    println!(
        "peers:           {} registrations, {} departures",
        counters.registrations.load(Ordering::Relaxed),
        counters.departures.load(Ordering::Relaxed)
    );
    println!("protocol errors: {errors}");
    println!(
        "final view:      {} files shared; index shows {} ({ghosts} ghost, {lost} lost) after {:.0} ms",
        truth.len(),
        view.len(),
        converged.as_secs_f64() * 1e3
    );
    let ok = errors == 0 && ghosts == 0 && lost == 0;
    println!("RESULT {}", if ok { "ok" } else { "FAILED" });
    if !ok {
        std::process::exit(1);
    }
}
