//! Multi-source transfers against real peer processes with upload limits.
//!
//! 1. One peer limited to R: napster's rate vs R (does the limit hold?).
//! 2. Four peers each limited to R: napster's rate vs 4R.
//! 3. One of the four serving corrupt data: the download still verifies; bytes refetched.
//!
//! `cargo bench --bench swarm`; `NAPSTER_SWARM_RATE` (R in MiB/s, default 16) and
//! `NAPSTER_SWARM_SECS` (seconds each transfer should take, default 10).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use napster::client::IndexClient;
use napster::download::{self, Cancel};
use napster::download::{Job, Status};
use napster::limit::RateLimit;
use napster::protocol::{Hit, Limits};
use process::{Napster, Running, last_word};

#[path = "../tests/common/process.rs"]
mod process;

const MIB: u64 = 1 << 20;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The peers and the index log errors only; their lines are awaited without a limit.
const NAPSTER: Napster = Napster {
    log: "error",
    patience: None,
};

/// Start napster in `dir` with `config`, feed it `script` and close its input; the
/// process (killed when dropped) and its first stdout line containing `needle`.
fn start(dir: &Path, config: &str, script: &str, needle: &str) -> (Running, String) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("napster.toml"), config).unwrap();
    let mut process = NAPSTER.start(dir, script);
    process.end_input();
    let line = process.wait_for(needle);
    (process, line)
}

fn write_noise(path: &Path, len: u64) {
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
        let n = left.min(MIB) as usize;
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
}

fn fetch(sources: Vec<Hit>, into: &Path) -> (f64, u64, usize) {
    let _ = std::fs::remove_dir_all(into);
    let job = Job {
        file: sources[0].file.clone(),
        sources,
        dir: into.to_owned(),
        limits: Limits::default(),
        cancel: Cancel::default(),
        bandwidth: Arc::new(RateLimit::new(0)),
        status: Arc::new(Status::default()),
        progress: Arc::new(|_| {}),
        dialer: napster::client::Dialer::direct(Limits::default()),
    };
    let started = Instant::now();
    let done = smol::block_on(download::fetch(job)).expect("the download verifies");
    let secs = started.elapsed().as_secs_f64();
    (done.size as f64 / secs, done.refetched, done.peers.len())
}

#[allow(
    clippy::too_many_lines,
    reason = "one measured run and its report, read top to bottom"
)]
fn main() {
    let rate = env_or("NAPSTER_SWARM_RATE", 16) * MIB;
    let secs = env_or("NAPSTER_SWARM_SECS", 10);
    let work = tempfile::tempdir().unwrap();
    let root = work.path();
    let original = root.join("original.bin");
    // Sized so that four limited peers need `secs` seconds.
    let size = 4 * rate * secs;
    write_noise(&original, size);

    let (_index, line) = start(&root.join("index"), "", "serve 0\n", "listening on");
    let index: SocketAddr = last_word(&line).parse().unwrap();
    let config = format!("[peer]\nupload_limit = \"{rate}B/s\"\n");
    let mut peers = Vec::new();
    let mut folders: Vec<PathBuf> = Vec::new();
    for i in 0..4 {
        let folder = root.join(format!("peer{i}/share"));
        std::fs::create_dir_all(&folder).unwrap();
        // The fourth peer's copy is its own (it rots below); the others share one.
        if i == 3 {
            std::fs::copy(&original, folder.join("swarm.bin")).unwrap();
        } else {
            std::fs::hard_link(&original, folder.join("swarm.bin")).unwrap();
        }
        let script = format!("connect {index}\nregister share 0\n");
        peers.push(
            start(
                &root.join(format!("peer{i}")),
                &config,
                &script,
                "registered as peer",
            )
            .0,
        );
        folders.push(folder);
    }
    let sources = smol::block_on(async {
        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();
        download::sources("swarm.bin", None, client.lookup("swarm.bin").await.unwrap()).unwrap()
    });
    assert_eq!(sources.len(), 4);
    let into = root.join("downloads");
    let r = rate as f64;
    println!(
        "file {} MiB; each peer's upload limit R = {} MiB/s (separate processes)",
        size / MIB,
        rate / MIB
    );

    // 1. One limited peer, for `secs` seconds' worth of bytes: a ranged copy of the
    //    file would do, but the whole file at R takes 4 × secs; use a quarter-size file.
    let quarter = root.join("quarter/share");
    std::fs::create_dir_all(&quarter).unwrap();
    {
        let mut src = std::fs::File::open(&original).unwrap();
        let mut dst = std::fs::File::create(quarter.join("one.bin")).unwrap();
        std::io::copy(&mut std::io::Read::take(&mut src, rate * secs), &mut dst).unwrap();
    }
    let (_one, _) = start(
        &root.join("quarter"),
        &config,
        &format!("connect {index}\nregister share 0\n"),
        "registered as peer",
    );
    let single = smol::block_on(async {
        let mut client = IndexClient::connect(index, Limits::default())
            .await
            .unwrap();
        client.lookup("one.bin").await.unwrap()
    });
    let (one_rate, _, _) = fetch(single, &into);
    println!(
        "1 peer limited to R:      {:7.2} MiB/s = {:.3} × R",
        one_rate / MIB as f64,
        one_rate / r
    );

    // 2. Four limited peers.
    let (four_rate, refetched, used) = fetch(sources.clone(), &into);
    println!(
        "4 peers each limited to R: {:7.2} MiB/s = {:.3} × 4R ({used} peers sent data, {} MiB refetched)",
        four_rate / MIB as f64,
        four_rate / (4.0 * r),
        refetched / MIB
    );

    // 3. The fourth peer's copy rots after registering, in place (a file renamed over
    //    it would be another file, which its file server refuses until it rescans).
    {
        use std::os::unix::fs::FileExt;
        let copy = std::fs::OpenOptions::new()
            .write(true)
            .open(folders[3].join("swarm.bin"))
            .unwrap();
        let good = std::fs::File::open(&original).unwrap();
        let mut byte = [0u8; 1];
        for offset in (0..size).step_by(4096) {
            good.read_exact_at(&mut byte, offset).unwrap();
            copy.write_all_at(&[byte[0] ^ 0xFF], offset).unwrap();
        }
    }
    let (bad_rate, refetched, used) = fetch(sources, &into);
    println!(
        "1 of 4 peers corrupt:      {:7.2} MiB/s = {:.3} × 4R; verified; {} MiB refetched; {used} peers contributed",
        bad_rate / MIB as f64,
        bad_rate / (4.0 * r),
        refetched as f64 / MIB as f64
    );
    println!(
        "RESULT one_peer={:.3}xR four_peers={:.3}x4R corrupt_peer_refetched_bytes={refetched}",
        one_rate / r,
        four_rate / (4.0 * r)
    );
    drop(peers);
}
