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
    // Another build of napster may be measured in its place (a before/after comparison).
    let bin = std::env::var("NAPSTER_SCALE_BIN").unwrap_or_else(|_| BIN.to_owned());
    let mut child = Killed(
        Command::new(bin)
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
    let failed = errors.load(Ordering::Relaxed);
    if failed > 0 {
        // Said, not fatal: a backend that fails under load is a result too.
        println!("  {failed} requests failed or answered wrongly");
    }
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

/// The processes that serve the requests (index servers, and the database's when there
/// is one), whose CPU time each request costs.
struct Servers<'a> {
    napster: Vec<u32>,
    pg: Option<&'a pg::Postgres>,
}

impl Servers<'_> {
    /// CPU time the serving processes have spent so far.
    fn cpu(&self) -> Duration {
        let mut pids = self.napster.clone();
        pids.extend(self.pg.map(|pg| pg.pids()).unwrap_or_default());
        pids.into_iter().filter_map(cpu_time).sum()
    }
}

/// CPU microseconds per request of the servers and of this process (the clients) while
/// `run` makes `requests()` requests.
fn cpu_per_request<T>(
    servers: &Servers,
    run: impl FnOnce() -> T,
    requests: impl Fn(&T) -> usize,
) -> (T, (f64, f64)) {
    let me = std::process::id();
    let (s0, c0) = (servers.cpu(), cpu_time(me).unwrap_or_default());
    let out = run();
    let (s1, c1) = (servers.cpu(), cpu_time(me).unwrap_or_default());
    let n = requests(&out).max(1) as f64;
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let per_request = (per(s1.saturating_sub(s0)), per(c1.saturating_sub(c0)));
    (out, per_request)
}

/// The machine's load average over the last minute.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_owned()
}

/// Send `request`s at `rate` per second for `secs` over `clients` connections, each
/// timed from when it was due (not from when a connection was free to send it, which
/// would hide the queue): returns (requests/s done, sorted µs).
fn open_loop<F, Fut>(
    addrs: &[SocketAddr],
    clients: usize,
    rate: f64,
    secs: u64,
    request: F,
) -> (f64, Vec<u32>)
where
    F: Fn(IndexClient, u64) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = (IndexClient, bool)> + Send,
{
    let (due_tx, due_rx) = smol::channel::unbounded::<Instant>();
    let errors = Arc::new(AtomicU64::new(0));
    let connected: Vec<IndexClient> = smol::block_on(async {
        let mut all = Vec::new();
        for c in 0..clients {
            let addr = addrs[c % addrs.len()];
            all.push(IndexClient::connect(addr, Limits::default()).await.unwrap());
        }
        all
    });
    let tasks: Vec<_> = connected
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let (due_rx, errors, request) = (due_rx.clone(), errors.clone(), request.clone());
            runtime::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = c as u64 * 7919;
                while let Ok(due) = due_rx.recv().await {
                    let (back, ok) = request(client, i).await;
                    client = back;
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies.push(due.elapsed().as_micros() as u32);
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let started = Instant::now();
    for k in 0..(rate * secs as f64) as u64 {
        // Pacing the sender, not waiting for a result.
        let due = started + Duration::from_secs_f64(k as f64 / rate);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        due_tx.send_blocking(due).unwrap();
    }
    drop(due_tx);
    let mut all: Vec<u32> = smol::block_on(async {
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await);
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let failed = errors.load(Ordering::Relaxed);
    if failed > 0 {
        // Said, not fatal: a backend that fails under load is a result too.
        println!("  {failed} requests failed or answered wrongly");
    }
    all.sort_unstable();
    (all.len() as f64 / elapsed, all)
}

/// Latency and cost of one kind of request: with [`CLIENTS`] clients each sending the
/// next request as soon as the last is answered (closed loop: under saturation that
/// measures the queue), then at half the rate that reached, paced (open loop).
struct Form {
    /// (requests/s, p50 ms, p99 ms) in closed loop.
    closed: (f64, f64, f64),
    /// CPU µs per request: the servers' (index and database) and the clients'.
    cpu: (f64, f64),
    /// (requests/s, p50 ms, p99 ms) in open loop.
    open: (f64, f64, f64),
}

/// Figures of one backend.
struct Figures {
    registration: f64,
    exact: Form,
    substring: Form,
    /// Substrings of 3 or more characters that match a tenth of the names.
    common: Form,
    one: (f64, f64),
    /// Index memory per idle connected session, bytes.
    idle_session: Option<f64>,
}

fn summary(latencies: &[u32], rate: f64) -> (f64, f64, f64) {
    (
        rate,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
    )
}

/// Where a backend runs.
struct Setup<'a> {
    label: &'a str,
    /// Its index servers.
    addrs: Vec<SocketAddr>,
    /// The processes to charge CPU time to.
    servers: Servers<'a>,
    /// The index process whose memory is measured, when there is one.
    rss_pid: Option<u32>,
    /// The database's URL, when there is one.
    database: Option<&'a str>,
}

/// Run one kind of request closed loop, then open loop; print and return its figures.
fn form<F, Fut>(name: &str, setup: &Setup, secs: u64, request: F) -> Form
where
    F: Fn(IndexClient, u64) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = (IndexClient, bool)> + Send,
{
    let closed = || hammer(&setup.addrs, CLIENTS, secs, request.clone());
    let ((rate, latencies), cpu) = cpu_per_request(&setup.servers, closed, |r| r.1.len());
    let closed = summary(&latencies, rate);
    println!(
        "  {name:<10} {rate:>7.0} req/s, {CLIENTS} clients closed loop: p50 {:.3} ms, p99 {:.3} ms; \
         CPU {:.0} µs per request = servers {:.0} + clients {:.0}; load {}",
        closed.1,
        closed.2,
        cpu.0 + cpu.1,
        cpu.0,
        cpu.1,
        load()
    );
    let (done, latencies) = open_loop(&setup.addrs, CLIENTS, rate / 2.0, secs, request);
    let open = summary(&latencies, done);
    println!(
        "  {name:<10} {done:>7.0} req/s, open loop at half that rate: p50 {:.3} ms, p99 {:.3} ms",
        open.1, open.2
    );
    Form { closed, cpu, open }
}

/// Register `peers` peers of `per_peer` files each, 50 at once, every peer keeping its
/// session open; returns the sessions and the seconds it took.
fn register_all(addrs: &[SocketAddr], peers: u64, per_peer: u64) -> (Vec<IndexClient>, f64) {
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
    let sessions = smol::block_on(async {
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.await);
        }
        all
    });
    (sessions, started.elapsed().as_secs_f64())
}

/// The index's memory per idle session: its RSS growth while `n` clients connect (TLS
/// handshake and hello) and then wait, divided by `n`.
fn idle_sessions(addr: SocketAddr, pid: u32, n: u64) -> f64 {
    let before = rss_kib(pid);
    let clients: Vec<IndexClient> = smol::block_on(async {
        let mut all = Vec::new();
        for _ in 0..n {
            all.push(IndexClient::connect(addr, Limits::default()).await.unwrap());
        }
        all
    });
    let per = (rss_kib(pid).saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "  idle sessions: {n} connected clients, index RSS {:.1} MiB more = {per:.0} B per idle session",
        (rss_kib(pid).saturating_sub(before)) as f64 / 1024.0
    );
    drop(clients);
    per
}

/// `EXPLAIN (ANALYZE, BUFFERS)` of each search form and its total, written to a file.
fn explain(url: &str, peers: u64, per_peer: u64) {
    use napster::index::store::{NameMatch, PgStore, Query};
    let path = std::env::var("NAPSTER_SCALE_EXPLAIN").unwrap_or("target/scale-explain.txt".into());
    let forms = [
        (
            "exact name",
            Query::by(NameMatch::Exact(name(peers / 2, 7))),
        ),
        (
            "substring, one match",
            Query::pattern(&format!("{:05}-007", peers / 2)),
        ),
        ("substring, common word", Query::pattern("love")),
        ("substring, 3 characters", Query::pattern("ech")),
        ("browse one peer", {
            let mut q = Query::by(NameMatch::Any);
            q.peer = Some(1);
            q
        }),
    ];
    let text = smol::block_on(async {
        let store = PgStore::connect(url).await.unwrap();
        let mut text = format!("{peers} peers × {per_peer} files\n\n");
        for (label, query) in forms {
            let plans = store.explain(&query, 100, 100_000).await.unwrap();
            text.push_str(&format!("== {label}: {query:?}\n{plans}"));
        }
        text
    });
    std::fs::write(&path, text).unwrap();
    println!("  EXPLAIN ANALYZE of each search form and its total: {path}");
}

/// How many statements the database logged as slow (`log_min_duration_statement`).
fn slow_statements(pg: Option<&pg::Postgres>) -> usize {
    pg.map_or(0, |pg| pg.log().matches("duration:").count())
}

/// Register, then search, through the index servers of `setup`.
#[allow(
    clippy::too_many_lines,
    reason = "one measured run and its report, read top to bottom"
)]
fn measure(
    setup: &Setup,
    pg: Option<&pg::Postgres>,
    peers: u64,
    per_peer: u64,
    secs: u64,
) -> Figures {
    let total = peers * per_peer;
    let addrs = setup.addrs.clone();
    println!(
        "{}: {} index server(s); {peers} peers × {per_peer} files = {total} files; load {}",
        setup.label,
        addrs.len(),
        load()
    );
    let rss_before = setup.rss_pid.map(rss_kib);
    let slow_before = slow_statements(pg);
    let (sessions, registering) = register_all(&addrs, peers, per_peer);
    let loaded = Instant::now();
    let slow_loading = slow_statements(pg) - slow_before;
    println!(
        "  registration:  {total} files in {registering:.1} s = {:.0} files/s ({:.0} peers/s)",
        total as f64 / registering,
        peers as f64 / registering
    );
    if let (Some(pid), Some(before)) = (setup.rss_pid, rss_before) {
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
    let exact = form("exact", setup, secs, move |mut c, i| async move {
        let p = (i * 31) % peers;
        let k = i % per_peer;
        let ok = c.lookup(&name(p, k)).await.is_ok_and(|h| h.len() == 1);
        (c, ok)
    });
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
    let tag = form("substring", setup, secs, substring);
    let (one_rate, one) = hammer(&addrs, 1, secs, substring);
    println!(
        "  substring  {one_rate:>7.0} req/s, 1 client: p50 {:.3} ms, p99 {:.3} ms (a tag found in one name of {total})",
        percentile(&one, 0.5),
        percentile(&one, 0.99)
    );
    let common = form("common", setup, secs, move |mut c, i| async move {
        // A word found in about a tenth of the names, whole or its first 3 characters.
        let word = WORDS[(i % WORDS.len() as u64) as usize];
        let pattern = if i % 2 == 0 { word } else { &word[..3] };
        let search = Search {
            pattern: pattern.to_owned(),
            limit: Some(100),
            ..Search::default()
        };
        let ok = c.find(&search).await.is_ok_and(|(h, _)| h.len() == 100);
        (c, ok)
    });
    if let Some(pg) = pg {
        // The rest of the minute after the load, searching, for slow statements.
        let after = Duration::from_secs(env_or("NAPSTER_SCALE_AFTER", 60));
        let left = after.saturating_sub(loaded.elapsed()).as_secs();
        if left > 0 {
            hammer(&addrs, 10, left, substring);
        }
        println!(
            "  slow statements (over log_min_duration_statement): {slow_loading} while registering, {} in the {:.0} s after",
            slow_statements(Some(pg)) - slow_before - slow_loading,
            loaded.elapsed().as_secs_f64()
        );
    }
    if let Some(url) = setup.database
        && std::env::var("NAPSTER_SCALE_EXPLAIN").as_deref() != Ok("off")
    {
        explain(url, peers, per_peer);
    }
    let idle_session = setup.rss_pid.map(|pid| {
        let n = env_or("NAPSTER_SCALE_IDLE", 5000);
        idle_sessions(addrs[0], pid, n)
    });
    drop(sessions);
    Figures {
        registration: total as f64 / registering,
        exact,
        substring: tag,
        common,
        one: (percentile(&one, 0.5), percentile(&one, 0.99)),
        idle_session,
    }
}

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
        let setup = Setup {
            label: "in memory",
            addrs: vec![addr],
            servers: Servers {
                napster: vec![index.0.id()],
                pg: None,
            },
            rss_pid: Some(index.0.id()),
            database: None,
        };
        let figures = measure(&setup, None, peers, per_peer, secs);
        drop(index);
        redis_reference(&figures);
        rows.push(("in memory, 1 server", figures));
    }
    if backends.contains("metrics") {
        metrics_cost(dir.path(), peers, per_peer, secs);
    }
    if backends.contains("postgres") {
        // Every statement over 200 ms is logged, to count them.
        let pg = pg::Postgres::start_with(&["log_min_duration_statement=200"]);
        let url = pg.fresh_database();
        let (a, addr_a) = start_index(&dir.path().join("a"), Some(&url));
        let (b, addr_b) = start_index(&dir.path().join("b"), Some(&url));
        let setup = Setup {
            label: "PostgreSQL",
            addrs: vec![addr_a, addr_b],
            servers: Servers {
                napster: vec![a.0.id(), b.0.id()],
                pg: Some(&pg),
            },
            rss_pid: None,
            database: Some(&url),
        };
        let figures = measure(&setup, Some(&pg), peers, per_peer, secs);
        drop((a, b));
        rows.push(("PostgreSQL, 2 servers", figures));
    }
    table(&rows);
}

/// redis GET on this machine, next to the in-memory index's exact-name figures.
fn redis_reference(figures: &Figures) {
    match redis_get_rate() {
        Some((redis, (server, bench))) => {
            println!(
                "  redis GET:     {redis:.0} req/s (redis-benchmark -t get -c 50, same machine, same run)"
            );
            println!(
                "  redis GET CPU: {:.1} µs per request = redis-server {server:.1} + redis-benchmark {bench:.1}",
                server + bench
            );
            let (index, clients) = figures.exact.cpu;
            // On a saturated machine the rate is the cores over the CPU each request
            // costs: this ratio is the load-independent form of the one above, and the
            // index's own share of it.
            println!(
                "  RESULT exact/redis_by_cpu={:.2} (both sides) index/redis-server_by_cpu={:.2}",
                (server + bench) / (index + clients),
                server / index
            );
            println!(
                "  RESULT exact/redis={:.2} substring_p99_ms={:.2} (50 clients) {:.2} (1 client)",
                figures.exact.closed.0 / redis,
                figures.substring.closed.2,
                figures.one.1
            );
        }
        None => println!(
            "  redis GET:     skipped: redis-server and redis-benchmark are not installed (apt-get install redis-server)"
        ),
    }
}

/// The in-memory index again with and without `[index] metrics`, alternating: the cost
/// of recording metrics on the exact-name rate.
fn metrics_cost(dir: &std::path::Path, peers: u64, per_peer: u64, secs: u64) {
    let rounds = env_or("NAPSTER_SCALE_ROUNDS", 2);
    let (mut rates_off, mut rates_on) = (Vec::new(), Vec::new());
    // A fresh index process for every measurement, alternating off and on.
    for round in 1..=rounds {
        for (on, rates) in [(false, &mut rates_off), (true, &mut rates_on)] {
            let state = if on { "on" } else { "off" };
            let folder = dir.join(format!("metrics-{state}-{round}"));
            let (index, addr) = start_index_with(&folder, None, on);
            let label = format!("metrics {state}, round {round}");
            let setup = Setup {
                label: &label,
                addrs: vec![addr],
                servers: Servers {
                    napster: vec![index.0.id()],
                    pg: None,
                },
                rss_pid: None,
                database: None,
            };
            rates.push(measure(&setup, None, peers, per_peer, secs).exact.closed.0);
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

/// The backends side by side, and PostgreSQL's figures as ratios to memory's.
fn table(rows: &[(&str, Figures)]) {
    println!();
    println!(
        "backend                register files/s | exact req/s  p99 ms  open p99 | substring req/s  p99 ms  open p99 | common req/s  p99 ms  open p99 | idle session B"
    );
    for (label, f) in rows {
        println!(
            "{label:<22} {:>16.0} | {:>11.0} {:>7.2} {:>9.2} | {:>15.0} {:>7.2} {:>9.2} | {:>12.0} {:>7.2} {:>9.2} | {}",
            f.registration,
            f.exact.closed.0,
            f.exact.closed.2,
            f.exact.open.2,
            f.substring.closed.0,
            f.substring.closed.2,
            f.substring.open.2,
            f.common.closed.0,
            f.common.closed.2,
            f.common.open.2,
            f.idle_session.map_or("-".into(), |b| format!("{b:.0}"))
        );
    }
    if let [(_, memory), (_, pg)] = rows {
        println!(
            "RESULT postgres/memory: registration {:.2}, exact req/s {:.2}, substring req/s {:.2}, common req/s {:.2}; \
             CPU µs per request (servers) exact {:.0}/{:.0}, substring {:.0}/{:.0}, common {:.0}/{:.0}",
            pg.registration / memory.registration,
            pg.exact.closed.0 / memory.exact.closed.0,
            pg.substring.closed.0 / memory.substring.closed.0,
            pg.common.closed.0 / memory.common.closed.0,
            pg.exact.cpu.0,
            memory.exact.cpu.0,
            pg.substring.cpu.0,
            memory.substring.cpu.0,
            pg.common.cpu.0,
            memory.common.cpu.0
        );
    }
}
