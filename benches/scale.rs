//! The index at scale: 1 000 000 files from 10 000 peers, against redis as the reference
//! ceiling for a request/response server on this machine.
//!
//! Reports, from one run: index memory per file (the index's RSS growth, it runs as the
//! real binary in another process), registration rate, exact-name and substring search
//! latency (p50/p99) and throughput with 50 concurrent clients, and
//! `redis-benchmark -t get -c 50` against a redis-server this benchmark starts on
//! loopback (skipped, with a note, where redis is not installed).
//!
//! Then the same through two index servers sharing one PostgreSQL database (a throwaway
//! server the benchmark starts), next to the in-memory figures.
//!
//! With `metrics` among the backends, the in-memory index runs again with and without
//! `[index] metrics`, alternating, and the cost of recording metrics on the exact-name
//! rate is printed (`RESULT metrics_cost=…`).
//!
//! `cargo bench --bench scale`; `NAPSTER_SCALE_PEERS` (10000), `NAPSTER_SCALE_FILES`
//! (per peer, 100), `NAPSTER_SCALE_SECS` (per search phase, 5), `NAPSTER_SCALE_BACKENDS`
//! (`memory,metrics,postgres`), `NAPSTER_SCALE_ROUNDS` (metrics off/on pairs, 2).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use napster::client::IndexClient;
use napster::protocol::SearchQuery as Search;
use napster::protocol::{FileEntry, Limits};
use napster::runtime;
use process::{BIN, HOME_ENV, Killed, cpu_time, last_word};

#[path = "../tests/pg/mod.rs"]
mod pg;
#[path = "../tests/common/process.rs"]
mod process;

const CLIENTS: usize = 50;

const WORDS: &[&str] = &[
    "love", "night", "river", "dance", "blue", "fire", "dream", "heart", "city", "rain", "golden",
    "shadow", "summer", "winter", "electric", "silver", "wild", "ocean", "storm", "paper", "moon",
    "road", "home", "light", "echo", "velvet", "glass", "thunder", "honey", "northern", "broken",
    "secret",
];

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A realistic, deterministic file name for file `k` of peer `p`.
fn name(p: u64, k: u64) -> String {
    let mut x = (p * 1_000_003 + k).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut word = || {
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        WORDS[(x % WORDS.len() as u64) as usize]
    };
    let (a, b, c, d) = (word(), word(), word(), word());
    format!("{a} {b} - {c} {d} {p:05}-{k:03}.mp3")
}

fn entry(p: u64, k: u64) -> FileEntry {
    FileEntry {
        name: name(p, k),
        size: 3_000_000 + p * 100 + k,
        sha256: format!("{:064x}", p * 1000 + k),
        chunks: format!("{:064x}", p * 1000 + k + 7),
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn start_index(dir: &std::path::Path, database: Option<&str>) -> (Killed, SocketAddr) {
    start_index_with(dir, database, false)
}

fn start_index_with(
    dir: &std::path::Path,
    database: Option<&str>,
    metrics: bool,
) -> (Killed, SocketAddr) {
    std::fs::create_dir_all(dir).unwrap();
    // Every simulated peer connects from 127.0.0.1: the per-address caps would refuse them.
    std::fs::write(
        dir.join("napster.toml"),
        format!(
            "[index]\nmax_connections = 30000\nmax_connections_per_address = 30000\nmax_handshakes = 30000\nmax_handshakes_per_address = 30000\nmax_files_per_address = 2000000\nsession_ttl = 600\ndatabase = \"{}\"\nmetrics = \"{}\"\n[log]\nlevel = \"warn\"\n",
            database.unwrap_or_default(),
            if metrics { "127.0.0.1:0" } else { "" }
        ),
    )
    .unwrap();
    let mut child = Killed(
        Command::new(BIN)
            .current_dir(dir)
            .env(HOME_ENV, dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting napster"),
    );
    child
        .0
        .stdin
        .take()
        .unwrap()
        .write_all(b"serve 0\n")
        .unwrap();
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let addr = last_word(&line).parse().unwrap();
    (child, addr)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// Run `clients` clients doing `request` for `secs`; returns (requests/s, sorted µs).
fn hammer<F, Fut>(addrs: &[SocketAddr], clients: usize, secs: u64, request: F) -> (f64, Vec<u32>)
where
    F: Fn(IndexClient, u64) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = (IndexClient, bool)> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients as u64)
        .map(|c| {
            let (stop, errors, request) = (stop.clone(), errors.clone(), request.clone());
            // Clients are spread over the servers.
            let addr = addrs[c as usize % addrs.len()];
            runtime::spawn(async move {
                let mut client = IndexClient::connect(addr, Limits::default()).await.unwrap();
                let mut latencies = Vec::new();
                let mut i = c * 7919;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let (back, ok) = request(client, i).await;
                    client = back;
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies.push(started.elapsed().as_micros() as u32);
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u32> = smol::block_on(async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await);
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(errors.load(Ordering::Relaxed), 0, "requests failed");
    all.sort_unstable();
    (all.len() as f64 / elapsed, all)
}

/// `redis-benchmark -t get -c 50` against a redis-server started here: requests/s, and
/// CPU microseconds per request of the server and of redis-benchmark.
fn redis_get_rate() -> Option<(f64, (f64, f64))> {
    let free = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    let port = free.local_addr().ok()?.port();
    drop(free);
    let _server = Killed(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .ok()?,
    );
    // Wait until it answers (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let server_before = cpu_time(_server.0.id())?;
    let children_before = children_cpu();
    const REQUESTS: f64 = 300_000.0;
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "get",
            "-c",
            "50",
            "-n",
            "300000",
            "-q",
        ])
        .output()
        .ok()?;
    let server = (cpu_time(_server.0.id())? - server_before).as_secs_f64();
    let benchmark = (children_cpu() - children_before).as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    // Progress lines, then "GET: 81234.56 requests per second, p50=0.311 msec".
    let rate = text
        .split("GET:")
        .last()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let micros = |secs: f64| secs * 1e6 / REQUESTS;
    Some((rate, (micros(server), micros(benchmark))))
}

/// CPU time of this process's children that have been waited for (`cutime` and
/// `cstime` of `/proc/self/stat`, in clock ticks of 10 ms on Linux).
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().skip(13).take(2))
        .into_iter()
        .flatten()
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// CPU microseconds per request of the index and of this process (the clients) while
/// `run` makes `requests()` requests.
fn cpu_per_request<T>(
    index: Option<u32>,
    run: impl FnOnce() -> T,
    requests: impl Fn(&T) -> usize,
) -> (T, Option<(f64, f64)>) {
    let me = std::process::id();
    let before = index.and_then(cpu_time).zip(cpu_time(me));
    let out = run();
    let after = index.and_then(cpu_time).zip(cpu_time(me));
    let n = requests(&out).max(1) as f64;
    let per = before.zip(after).map(|((i0, c0), (i1, c1))| {
        (
            (i1 - i0).as_secs_f64() * 1e6 / n,
            (c1 - c0).as_secs_f64() * 1e6 / n,
        )
    });
    (out, per)
}

/// Figures of one backend.
struct Figures {
    registration: f64,
    exact: (f64, f64, f64),
    /// CPU µs per exact-name request: the index's and the clients'.
    exact_cpu: Option<(f64, f64)>,
    substring: (f64, f64, f64),
    one: (f64, f64),
}

fn summary(latencies: &[u32], rate: f64) -> (f64, f64, f64) {
    (
        rate,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
    )
}

/// Register, then search, through the index servers at `addrs`.
#[allow(
    clippy::too_many_lines,
    reason = "one measured run and its report, read top to bottom"
)]
fn measure(
    label: &str,
    addrs: &[SocketAddr],
    rss_pid: Option<u32>,
    peers: u64,
    per_peer: u64,
    secs: u64,
) -> Figures {
    let total = peers * per_peer;
    println!(
        "{label}: {} index server(s); {peers} peers × {per_peer} files = {total} files",
        addrs.len()
    );
    let rss_before = rss_pid.map(rss_kib);
    // Registration: every peer keeps its session open, 50 registering at once.
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let next = next.clone();
            let addr = addrs[w % addrs.len()];
            runtime::spawn(async move {
                let mut sessions = Vec::new();
                loop {
                    let p = next.fetch_add(1, Ordering::Relaxed);
                    if p >= peers {
                        return sessions;
                    }
                    let mut client = IndexClient::connect(addr, Limits::default()).await.unwrap();
                    let files: Vec<FileEntry> = (0..per_peer).map(|k| entry(p, k)).collect();
                    client
                        .register(
                            40000 + (p % 20000) as u16,
                            &format!("{:032x}", p + 1),
                            &files,
                        )
                        .await
                        .unwrap();
                    sessions.push(client);
                }
            })
        })
        .collect();
    let sessions: Vec<Vec<IndexClient>> = smol::block_on(async {
        let mut all = Vec::new();
        for w in workers {
            all.push(w.await);
        }
        all
    });
    let registering = started.elapsed().as_secs_f64();
    println!(
        "  registration:  {total} files in {registering:.1} s = {:.0} files/s ({:.0} peers/s)",
        total as f64 / registering,
        peers as f64 / registering
    );
    if let (Some(pid), Some(before)) = (rss_pid, rss_before) {
        let rss_after = rss_kib(pid);
        let names: u64 = (0..peers)
            .step_by(97)
            .flat_map(|p| (0..per_peer).map(move |k| name(p, k).len() as u64))
            .sum::<u64>()
            / ((0..peers).step_by(97).count() as u64 * per_peer);
        let per_file = (rss_after - before) as f64 * 1024.0 / total as f64;
        println!(
            "  index memory:  {:.0} MiB more RSS = {per_file:.0} B per file; names average {names} B, kept twice \
             (as given and lowercased for search): {:.0} B per file beyond its name",
            (rss_after - before) as f64 / 1024.0,
            per_file - 2.0 * names as f64
        );
    }
    let lookups = || {
        hammer(addrs, CLIENTS, secs, move |mut c, i| async move {
            let p = (i * 31) % peers;
            let k = i % per_peer;
            let ok = c.lookup(&name(p, k)).await.is_ok_and(|h| h.len() == 1);
            (c, ok)
        })
    };
    let ((exact_rate, exact), exact_cpu) = cpu_per_request(rss_pid, lookups, |r| r.1.len());
    println!(
        "  exact-name:    {exact_rate:.0} req/s with {CLIENTS} clients; p50 {:.3} ms, p99 {:.3} ms",
        percentile(&exact, 0.5),
        percentile(&exact, 0.99)
    );
    if let Some((index, clients)) = exact_cpu {
        println!(
            "  exact-name CPU: {:.1} µs per request = index {index:.1} + clients {clients:.1}",
            index + clients
        );
    }
    let substring = move |mut c: IndexClient, i: u64| async move {
        // A tag found in exactly one name of them all.
        let p = (i * 37) % peers;
        let search = Search {
            pattern: format!("{p:05}-{:03}", i % per_peer),
            limit: Some(100),
            ..Search::default()
        };
        let ok = c.find(&search).await.is_ok_and(|(h, _)| h.len() == 1);
        (c, ok)
    };
    let (sub_rate, sub) = hammer(addrs, CLIENTS, secs, substring);
    println!(
        "  substring:     {sub_rate:.0} req/s with {CLIENTS} clients; p50 {:.3} ms, p99 {:.3} ms (a tag found in one name of {total})",
        percentile(&sub, 0.5),
        percentile(&sub, 0.99)
    );
    let (one_rate, one) = hammer(addrs, 1, secs, substring);
    println!(
        "  substring:     {one_rate:.0} req/s with 1 client;  p50 {:.3} ms, p99 {:.3} ms (one search at a time)",
        percentile(&one, 0.5),
        percentile(&one, 0.99)
    );
    drop(sessions);
    Figures {
        registration: total as f64 / registering,
        exact: summary(&exact, exact_rate),
        exact_cpu,
        substring: summary(&sub, sub_rate),
        one: (percentile(&one, 0.5), percentile(&one, 0.99)),
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one measured run and its report, read top to bottom"
)]
fn main() {
    let peers = env_or("NAPSTER_SCALE_PEERS", 10_000);
    let per_peer = env_or("NAPSTER_SCALE_FILES", 100);
    let secs = env_or("NAPSTER_SCALE_SECS", 5);
    let backends = std::env::var("NAPSTER_SCALE_BACKENDS")
        .unwrap_or_else(|_| "memory,metrics,postgres".into());
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    if backends.contains("memory") {
        let (index, addr) = start_index(&dir.path().join("memory"), None);
        let figures = measure(
            "in memory",
            &[addr],
            Some(index.0.id()),
            peers,
            per_peer,
            secs,
        );
        drop(index);
        match redis_get_rate() {
            Some((redis, (server, bench))) => {
                println!(
                    "  redis GET:     {redis:.0} req/s (redis-benchmark -t get -c 50, same machine, same run)"
                );
                println!(
                    "  redis GET CPU: {:.1} µs per request = redis-server {server:.1} + redis-benchmark {bench:.1}",
                    server + bench
                );
                if let Some((index, clients)) = figures.exact_cpu {
                    // On a saturated machine the rate is the cores over the CPU each
                    // request costs: this ratio is the load-independent form of the one
                    // above, and the index's own share of it.
                    println!(
                        "  RESULT exact/redis_by_cpu={:.2} (both sides) index/redis-server_by_cpu={:.2}",
                        (server + bench) / (index + clients),
                        server / index
                    );
                }
                println!(
                    "  RESULT exact/redis={:.2} substring_p99_ms={:.2} (50 clients) {:.2} (1 client)",
                    figures.exact.0 / redis,
                    figures.substring.2,
                    figures.one.1
                );
            }
            None => println!(
                "  redis GET:     skipped: redis-server and redis-benchmark are not installed (apt-get install redis-server)"
            ),
        }
        rows.push(("in memory, 1 server", figures));
    }
    if backends.contains("metrics") {
        let rounds = env_or("NAPSTER_SCALE_ROUNDS", 2);
        let (mut rates_off, mut rates_on) = (Vec::new(), Vec::new());
        // A fresh index process for every measurement, alternating off and on.
        for round in 1..=rounds {
            for (on, rates) in [(false, &mut rates_off), (true, &mut rates_on)] {
                let state = if on { "on" } else { "off" };
                let folder = dir.path().join(format!("metrics-{state}-{round}"));
                let (index, addr) = start_index_with(&folder, None, on);
                let label = format!("metrics {state}, round {round}");
                rates.push(
                    measure(&label, &[addr], None, peers, per_peer, secs)
                        .exact
                        .0,
                );
                drop(index);
            }
        }
        let median = |rates: &mut Vec<f64>| {
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
        };
        let (off_rate, on_rate) = (median(&mut rates_off), median(&mut rates_on));
        println!(
            "  RESULT metrics_cost={:.1}% (exact-name req/s, median of {rounds}: {off_rate:.0} off, {on_rate:.0} on; \
             every round off: {rates_off:.0?}, on: {rates_on:.0?})",
            (1.0 - on_rate / off_rate) * 100.0
        );
    }
    if backends.contains("postgres") {
        let pg = pg::Postgres::start();
        let url = pg.fresh_database();
        let (a, addr_a) = start_index(&dir.path().join("a"), Some(&url));
        let (b, addr_b) = start_index(&dir.path().join("b"), Some(&url));
        let figures = measure("PostgreSQL", &[addr_a, addr_b], None, peers, per_peer, secs);
        drop((a, b));
        rows.push(("PostgreSQL, 2 servers", figures));
    }
    println!();
    println!(
        "backend                 register files/s   exact req/s  p50 ms  p99 ms   substring req/s  p50 ms  p99 ms"
    );
    for (label, f) in &rows {
        println!(
            "{label:<23} {:>16.0} {:>13.0} {:>7.2} {:>7.2} {:>17.0} {:>7.2} {:>7.2}",
            f.registration,
            f.exact.0,
            f.exact.1,
            f.exact.2,
            f.substring.0,
            f.substring.1,
            f.substring.2
        );
    }
}
