//! Transfer benchmark: how fast does a verified napster download (TLS 1.3, AES-GCM: napster
//! has no plaintext mode) go over loopback, compared with a plain TCP copy of the same bytes
//! and with single-core SHA-256 of them?
//!
//! Run with `cargo bench --bench transfer`. Environment:
//! - `NAPSTER_BENCH_BYTES`: size of the test file (default 1 GiB);
//! - `NAPSTER_BENCH_RUNS`: runs of each measurement (default 3).
//!
//! The serving napster is the real binary in another process (index + file server, driven
//! by a piped script); the downloader is the library in this process. The raw TCP baseline
//! is served by this very executable re-run with `--raw-server FILE`.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use napster::client::IndexClient;
use napster::download::{self, Cancel};
use napster::protocol::Limits;
use sha2::{Digest, Sha256};

/// Block size of every plain read/write loop in this benchmark.
const BLOCK: usize = 256 * 1024;

/// Name of the shared file.
const FILE_NAME: &str = "bench.bin";

/// How long a child process may take to print what we wait for (hashing 1 GiB included).
const STARTUP: Duration = Duration::from_secs(300);

const GIB: f64 = (1u64 << 30) as f64;

type BoxError = Box<dyn std::error::Error>;

#[path = "transfer/parts.rs"]
mod parts;
#[path = "../tests/common/process.rs"]
mod process;

use process::{cpu_time, stat_cpu};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--raw-server") {
        let Some(path) = args.get(i + 1) else {
            eprintln!("--raw-server needs a file");
            std::process::exit(2);
        };
        if let Err(e) = raw_server(Path::new(path)) {
            eprintln!("raw server: {e}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench` passes `--bench`; nothing else is expected.
    let mut guard = Guard::default();
    let outcome = run(&mut guard);
    drop(guard);
    if let Err(e) = outcome {
        eprintln!("transfer bench failed: {e}");
        std::process::exit(1);
    }
}

/// Everything to undo at the end, even after an error or a panic.
#[derive(Default)]
struct Guard {
    children: Vec<(&'static str, Child)>,
    dirs: Vec<PathBuf>,
    /// Where the serving napster's stderr goes, printed if it fails.
    napster_log: Option<PathBuf>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        for (name, child) in &mut self.children {
            stop(name, child);
        }
        if std::thread::panicking() {
            self.print_napster_log();
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Guard {
    fn print_napster_log(&self) {
        if let Some(log) = &self.napster_log
            && let Ok(text) = std::fs::read_to_string(log)
            && !text.is_empty()
        {
            eprintln!("--- serving napster's stderr ---\n{text}--- end ---");
        }
    }
}

/// SIGTERM, a few seconds to exit cleanly, then SIGKILL.
fn stop(name: &str, child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{name} (pid {}) ignored SIGTERM; killing it", child.id());
    let _ = child.kill();
    let _ = child.wait();
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("{name}={text:?} is not a valid number").into()),
        Err(_) => Ok(default),
    }
}

fn unique_dir(tag: &str) -> Result<PathBuf, BoxError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "napster-bench-{tag}-{}-{nanos:x}",
        std::process::id()
    ));
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

#[allow(
    clippy::too_many_lines,
    reason = "one measured run and its report, read top to bottom"
)]
fn run(guard: &mut Guard) -> Result<(), BoxError> {
    let bytes: u64 = env_or("NAPSTER_BENCH_BYTES", 1u64 << 30)?;
    let runs: usize = env_or("NAPSTER_BENCH_RUNS", 3usize)?;
    if bytes == 0 || runs == 0 {
        return Err("NAPSTER_BENCH_BYTES and NAPSTER_BENCH_RUNS must be positive".into());
    }

    let root = unique_dir("transfer")?;
    guard.dirs.push(root.clone());
    let shared = root.join("shared");
    let downloads = root.join("downloads");
    let cwd = root.join("cwd");
    for dir in [&shared, &downloads, &cwd] {
        std::fs::create_dir(dir)?;
    }
    let source = shared.join(FILE_NAME);

    if let Some(load) = load_average() {
        println!("load average: {load}");
    }
    println!(
        "transfer bench: {bytes} bytes ({:.3} GiB), {runs} runs each, in {}",
        bytes as f64 / GIB,
        root.display()
    );
    let started = Instant::now();
    let reference = write_random_file(&source, bytes)?;
    println!(
        "wrote the test file in {:.2}s; sha256 {reference}",
        started.elapsed().as_secs_f64()
    );

    // The serving napster: index server and file server in one other process.
    let log = root.join("napster-stderr.log");
    guard.napster_log = Some(log.clone());
    let started = Instant::now();
    let mut napster = Command::new(env!("CARGO_BIN_EXE_napster"))
        .current_dir(&cwd)
        .env(napster::home::HOME_ENV, &cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(File::create(&log)?)
        .spawn()?;
    let script = format!("serve 0\nregister {} 0\n", shared.display());
    let stdin = napster.stdin.take();
    let stdout = napster.stdout.take();
    guard.children.push(("serving napster", napster));
    // Closing stdin after the script is fine: at end of input a serving process serves on.
    stdin.ok_or("no stdin")?.write_all(script.as_bytes())?;
    let lines = line_reader(stdout.ok_or("no stdout")?);
    let index: SocketAddr = wait_for(&lines, Some(&log), "index server listening on ", |rest| {
        rest.trim().parse().ok()
    })
    .map_err(|e| with_log(guard, e))?;
    let serving: SocketAddr = wait_for(&lines, Some(&log), "registered as peer ", |rest| {
        rest.rsplit_once("; serving on ")?.1.trim().parse().ok()
    })
    .map_err(|e| with_log(guard, e))?;
    println!(
        "napster serving: index {index}, files {serving} (started and hashed in {:.2}s)",
        started.elapsed().as_secs_f64()
    );

    // The raw TCP server: this executable again.
    let mut raw = Command::new(std::env::current_exe()?)
        .args(["--raw-server".as_ref(), source.as_os_str()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let raw_stdout = raw.stdout.take();
    guard.children.push(("raw TCP server", raw));
    let raw_lines = line_reader(raw_stdout.ok_or("no stdout")?);
    let raw_addr: SocketAddr = wait_for(&raw_lines, None, "raw server listening on ", |rest| {
        rest.trim().parse().ok()
    })?;

    let limits = Limits::default();
    let hit = smol::block_on(async {
        let mut client = IndexClient::connect(index, limits).await?;
        client.lookup(FILE_NAME).await
    })?
    .into_iter()
    .find(|hit| hit.addr == serving)
    .ok_or("the index does not list the file from the serving napster")?;
    if hit.file.size != bytes || hit.file.sha256 != reference {
        return Err(format!(
            "the index lists {} bytes, sha256 {}; expected {bytes} bytes, sha256 {reference}",
            hit.file.size, hit.file.sha256
        )
        .into());
    }

    let napster_pid = guard.children[0].1.id();
    let raw_pid = guard.children[1].1.id();
    let mut napster_runs = Vec::new();
    let mut raw_runs = Vec::new();
    let mut sha_runs = Vec::new();
    let mut parts_runs = Vec::new();
    println!();
    println!("run  napster GiB/s  raw_tcp GiB/s  sha256 GiB/s  (odd runs: napster first)");
    let raw_dest = downloads.join("raw.bin");
    let napster_once = || -> Result<Sample, BoxError> {
        // The download is deleted outside the timing.
        let mut path = None;
        let sample = measure(napster_pid, || {
            path = Some(napster_download(&hit, &downloads, limits, bytes)?);
            Ok(())
        })
        .map_err(|e| with_log(guard, e))?;
        if let Some(path) = path {
            std::fs::remove_file(path)?;
        }
        Ok(sample)
    };
    let raw_once = || -> Result<Sample, BoxError> {
        let sample = measure(raw_pid, || raw_download(raw_addr, &raw_dest, bytes));
        let _ = std::fs::remove_file(&raw_dest);
        sample
    };
    for run in 1..=runs {
        // Whichever copy runs second gets the memory the first has just freed, which is
        // faster to write to on this kind of VM (freed memory goes back to the host after
        // a few seconds), so they take turns.
        let (napster_run, raw_run) = if run % 2 == 1 {
            let napster_run = napster_once()?;
            (napster_run, raw_once()?)
        } else {
            let raw_run = raw_once()?;
            (napster_once()?, raw_run)
        };
        let sha_run = measure(0, || {
            let digest = sha256_file(&source)?;
            if digest != reference {
                return Err(format!("sha256 of the file changed: {digest}").into());
            }
            Ok(())
        })?;
        println!(
            "{run:>3}  {:>13.3}  {:>13.3}  {:>12.3}",
            rate(bytes, napster_run.wall),
            rate(bytes, raw_run.wall),
            rate(bytes, sha_run.wall)
        );
        napster_runs.push(napster_run);
        raw_runs.push(raw_run);
        sha_runs.push(sha_run);
        parts_runs.push(parts::measure(bytes, raw_addr, raw_pid, &downloads)?);
    }
    let napster_times: Vec<Duration> = napster_runs.iter().map(|r| r.wall).collect();
    let raw_times: Vec<Duration> = raw_runs.iter().map(|r| r.wall).collect();
    let sha_times: Vec<Duration> = sha_runs.iter().map(|r| r.wall).collect();

    let napster = Summary::of(bytes, &napster_times);
    let raw = Summary::of(bytes, &raw_times);
    let sha = Summary::of(bytes, &sha_times);
    println!();
    println!("{:<22} {:>11} {:>13}", "", "best GiB/s", "median GiB/s");
    for (name, s) in [
        ("napster TLS download", &napster),
        ("raw TCP copy", &raw),
        ("SHA-256 (one core)", &sha),
    ] {
        println!("{name:<22} {:>11.3} {:>13.3}", s.best, s.median);
    }
    println!(
        "{:<22} {:>11.3} {:>13.3}",
        "napster / raw TCP",
        napster.best / raw.best,
        napster.median / raw.median
    );
    println!(
        "{:<22} {:>11.3} {:>13.3}",
        "napster / SHA-256",
        napster.best / sha.best,
        napster.median / sha.median
    );
    if let Some(load) = load_average() {
        println!("load average now: {load} (other work on the machine skews the figures)");
    }
    print_cpu(
        bytes,
        &[
            ("napster TLS download", &napster_runs),
            ("raw TCP copy", &raw_runs),
            ("SHA-256 (one core)", &sha_runs),
        ],
    );
    let (client_parts, server_parts) = parts::print(&parts_runs, &napster_runs, bytes);
    println!();
    println!(
        "RESULT bytes={bytes} runs={runs} napster={:.3} GiB/s raw_tcp={:.3} GiB/s sha256={:.3} GiB/s \
         napster/raw={:.3} napster/sha256={:.3} (best of {runs}; medians napster={:.3} raw_tcp={:.3} \
         sha256={:.3}; CPU s/GiB downloader={} (parts {client_parts:.3}) server={} (parts \
         {server_parts:.3}))",
        napster.best,
        raw.best,
        sha.best,
        napster.best / raw.best,
        napster.best / sha.best,
        napster.median,
        raw.median,
        sha.median,
        show(
            median(napster_runs.iter().map(|s| s.client_cpu).collect()),
            bytes
        ),
        show(
            median(napster_runs.iter().map(|s| s.server_cpu).collect()),
            bytes
        ),
    );
    Ok(())
}

/// One timed run: wall time, and CPU time (user + system) of this process (the client
/// side) and of the serving process, when `/proc` tells.
struct Sample {
    wall: Duration,
    client_cpu: Option<Duration>,
    server_cpu: Option<Duration>,
}

/// Time `f`, and the CPU this process and `server` (0: none) spend meanwhile.
fn measure(server: u32, f: impl FnOnce() -> Result<(), BoxError>) -> Result<Sample, BoxError> {
    let client = std::process::id();
    let before = (cpu_time(client), cpu_time(server));
    let started = Instant::now();
    f()?;
    let wall = started.elapsed();
    let after = (cpu_time(client), cpu_time(server));
    let spent = |a: Option<Duration>, b: Option<Duration>| Some(b?.saturating_sub(a?));
    Ok(Sample {
        wall,
        client_cpu: spent(before.0, after.0),
        server_cpu: spent(before.1, after.1),
    })
}

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg` (Linux only).
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The median of CPU times, when every sample has one.
fn median(times: Vec<Option<Duration>>) -> Option<Duration> {
    let mut times: Vec<Duration> = times.into_iter().collect::<Option<_>>()?;
    times.sort();
    times.get(times.len() / 2).copied()
}

/// CPU seconds per GiB, or `-`.
fn show(time: Option<Duration>, bytes: u64) -> String {
    time.map_or_else(
        || "-".to_owned(),
        |t| format!("{:.3}", t.as_secs_f64() * GIB / bytes as f64),
    )
}

/// Median CPU seconds per GiB on each side: where the cores go.
fn print_cpu(bytes: u64, rows: &[(&str, &Vec<Sample>)]) {
    let median = |mut v: Vec<f64>| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    };
    let per_gib = |samples: &Vec<Sample>, pick: fn(&Sample) -> Option<Duration>| {
        let v: Option<Vec<f64>> = samples
            .iter()
            .map(|s| Some(pick(s)?.as_secs_f64() * GIB / bytes as f64))
            .collect();
        median(v?)
    };
    let show = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"));
    println!();
    println!(
        "{:<22} {:>11} {:>13} {:>13}",
        "CPU s per GiB (median)", "wall", "this process", "server proc"
    );
    for (name, samples) in rows {
        println!(
            "{name:<22} {:>11} {:>13} {:>13}",
            show(per_gib(samples, |s| Some(s.wall))),
            show(per_gib(samples, |s| s.client_cpu)),
            show(per_gib(samples, |s| s.server_cpu)),
        );
    }
}

/// Adds the serving napster's stderr to an error, since that is where its side of it is.
fn with_log(guard: &Guard, e: BoxError) -> BoxError {
    guard.print_napster_log();
    e
}

struct Summary {
    best: f64,
    median: f64,
}

impl Summary {
    fn of(bytes: u64, times: &[Duration]) -> Summary {
        let mut rates: Vec<f64> = times.iter().map(|t| rate(bytes, *t)).collect();
        rates.sort_by(f64::total_cmp);
        let n = rates.len();
        let median = if n % 2 == 1 {
            rates[n / 2]
        } else {
            (rates[n / 2 - 1] + rates[n / 2]) / 2.0
        };
        Summary {
            best: rates[n - 1],
            median,
        }
    }
}

fn rate(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / GIB / time.as_secs_f64()
}

/// Write `bytes` of xorshift output to `path`, flushed to disk so that write-back does
/// not run during the measurements; returns its SHA-256 in hex.
fn write_random_file(path: &Path, bytes: u64) -> Result<String, BoxError> {
    let mut file = File::create(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos() as u64;
    let mut left = bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(BLOCK as u64) as usize;
        file.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    file.sync_all()?;
    Ok(hex(&hasher.finalize()))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lines of a child's stdout, read on a thread so that waiting can time out; the thread
/// keeps draining the pipe until the child closes it.
fn line_reader(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Wait for a line starting with `prefix` and parse the rest of it.
/// Gives up early when `errors` (the child's stderr) shows an `error:` line.
fn wait_for<T>(
    lines: &mpsc::Receiver<String>,
    errors: Option<&Path>,
    prefix: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, BoxError> {
    let deadline = Instant::now() + STARTUP;
    loop {
        let line = match lines.recv_timeout(Duration::from_millis(100)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let failed = errors
                    .and_then(|path| std::fs::read_to_string(path).ok())
                    .and_then(|text| {
                        text.lines()
                            .find(|l| l.starts_with("error:"))
                            .map(str::to_owned)
                    });
                if let Some(error) = failed {
                    return Err(format!("the child failed: {error}").into());
                }
                if Instant::now() >= deadline {
                    return Err(format!("timed out waiting for a line {prefix:?}...").into());
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(format!("the child exited before printing {prefix:?}...").into());
            }
        };
        if let Some(rest) = line.strip_prefix(prefix) {
            return parse(rest).ok_or_else(|| format!("cannot parse {line:?}").into());
        }
    }
}

/// One napster download, checked; returns where it is.
fn napster_download(
    hit: &napster::protocol::Hit,
    downloads: &Path,
    limits: Limits,
    bytes: u64,
) -> Result<PathBuf, BoxError> {
    let done = smol::block_on(download::download(
        hit,
        downloads,
        limits,
        Cancel::default(),
        Arc::new(|_| {}),
    ))?;
    let on_disk = std::fs::metadata(&done.path)?.len();
    if done.already_there || done.size != bytes || on_disk != bytes {
        let _ = std::fs::remove_file(&done.path);
        return Err(format!(
            "the download is wrong: {} bytes ({on_disk} on disk), already there: {}",
            done.size, done.already_there
        )
        .into());
    }
    Ok(done.path)
}

/// One plain TCP copy into `dest`.
fn raw_download(addr: SocketAddr, dest: &Path, bytes: u64) -> Result<(), BoxError> {
    let mut socket = TcpStream::connect(addr)?;
    let mut file = File::create(dest)?;
    let mut buf = vec![0u8; BLOCK];
    let mut received = 0u64;
    loop {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        received += n as u64;
    }
    if received != bytes {
        return Err(format!("the raw copy got {received} bytes of {bytes}").into());
    }
    Ok(())
}

/// SHA-256 of a file read in blocks (from the page cache).
fn sha256_file(path: &Path) -> Result<String, BoxError> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// `--raw-server FILE`: send FILE whole to every connection, one at a time.
fn raw_server(path: &Path) -> Result<(), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("raw server listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let mut buf = vec![0u8; BLOCK];
    for stream in listener.incoming() {
        let mut socket = stream?;
        let mut file = File::open(path)?;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if let Err(e) = socket.write_all(&buf[..n]) {
                eprintln!("raw server: sending: {e}");
                break;
            }
        }
    }
    Ok(())
}
