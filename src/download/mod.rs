//! Downloading: one file from every peer that has the same contents, verified by SHA-256,
//! resumable, written where nothing half-done is ever visible under its final name.
//!
//! - [`sources`](mod@sources): which peers to fetch from.
//! - [`scheduler`]: which chunk goes to which peer.
//! - [`engine`]: the transfer itself (one worker thread per source, damage); its
//!   sequencer feeds the whole-file hash in order. A download holds at most
//!   [`memory_bound`] in buffers of received data, whatever the file's size and number
//!   of sources, and drops a source slower than `protocol.min_rate`.
//! - [`part_file`]: the part file and its resume state, from creation to removal.
//! - [`place`]: a safe name on disk, and the final name without replacing anything.
//! - [`queue`]: the download queue, background downloads kept in the downloads folder.
//!
//! A download stopped by [`Cancel`] (Ctrl-C, `quit`) keeps what arrived for a resume:
//! `get` the same file again and only the missing chunks are fetched.

pub mod engine;
pub mod part_file;
pub mod place;
pub mod queue;
pub mod scheduler;
mod sequencer;
mod shared;
pub mod sources;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tracing::debug;

use crate::client::{Dialer, Route};
use crate::error::Result;
use crate::limit::RateLimit;
use crate::protocol::{FileEntry, Hit, Limits};

pub use place::{PART_SUFFIX, check_folder, is_own_file, make_folder, safe_file_name, safe_folder};
pub use shared::{MAX_SOURCES, MEMORY, PIECE, memory_bound};
pub use sources::sources;

/// One download to run.
pub struct Job {
    /// The file as the index describes it.
    pub file: FileEntry,
    /// Peers that share exactly this content, best first.
    pub sources: Vec<Hit>,
    /// Downloads folder.
    pub dir: PathBuf,
    /// Wire limits; the timeout also bounds every read of a transfer.
    pub limits: Limits,
    /// Set to stop; what was received is kept for a resume.
    pub cancel: Cancel,
    /// Download bandwidth shared by every transfer.
    pub bandwidth: Arc<RateLimit>,
    /// Live figures.
    pub status: Arc<Status>,
    /// Told of every block received.
    pub progress: Arc<dyn Fn(u64) + Send + Sync>,
    /// How each source is connected to: at its local address, directly, by a reverse
    /// connection, by hole punching, or through the index's relay.
    pub dialer: Dialer,
}

impl Job {
    /// A job for `file` from `sources` into `dir`, with no bandwidth limit, a fresh
    /// status and no progress callback.
    pub fn new(file: FileEntry, sources: Vec<Hit>, dir: &Path, limits: Limits) -> Self {
        Job {
            file,
            sources,
            dir: dir.to_owned(),
            limits,
            cancel: Cancel::default(),
            bandwidth: Arc::new(RateLimit::new(0)),
            status: Arc::default(),
            progress: Arc::new(|_| {}),
            dialer: Dialer::direct(limits),
        }
    }
}

impl Job {
    /// The file as `hit` names it: peers sharing the same bytes may name them
    /// differently (`get sha256:…`), and each is asked by its own name.
    pub fn file_at(&self, hit: &Hit) -> FileEntry {
        FileEntry {
            name: hit.file.name.clone(),
            ..self.file.clone()
        }
    }
}

/// Live figures of a transfer, for progress bars and `transfers`.
#[derive(Debug, Default)]
pub struct Status {
    /// Size of the file.
    pub total: AtomicU64,
    /// Bytes in place (resumed ones included).
    pub done: AtomicU64,
    /// Peers sending right now.
    pub peers: AtomicUsize,
    /// Bytes that failed their chunk check and were fetched again from another peer.
    pub refetched: AtomicU64,
    /// Bytes fetched twice in the end game (a slow peer's chunk also asked of a fast one).
    pub duplicated: AtomicU64,
    /// Bytes an earlier, interrupted download had already fetched.
    pub resumed: AtomicU64,
    /// Position in a peer's upload line while a request waits for a slot (0: none).
    pub queued: AtomicU64,
    /// The Peer ID of the peer whose line that is.
    pub queued_at: AtomicU64,
}

/// A finished download.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Where the file is.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// How long the transfer took.
    pub elapsed: Duration,
    /// True when an identical file was already there and nothing was written.
    pub already_there: bool,
    /// Bytes an earlier, interrupted download had already fetched.
    pub resumed: u64,
    /// Peer IDs of the peers that sent data.
    pub peers: Vec<u64>,
    /// How each of them was reached, and how many chunks it delivered.
    pub paths: Vec<(u64, Route, u64)>,
    /// Bytes fetched twice: bad chunks, and end-game duplicates.
    pub refetched: u64,
}

impl Downloaded {
    /// Chunks delivered by each path (`local`, `direct`, `reverse`, `punched`,
    /// `relayed`).
    pub fn routes(&self) -> std::collections::BTreeMap<String, u64> {
        let mut by_route = std::collections::BTreeMap::<Route, u64>::new();
        for &(_, route, chunks) in &self.paths {
            *by_route.entry(route).or_default() += chunks;
        }
        by_route
            .into_iter()
            .map(|(route, chunks)| (route.to_string(), chunks))
            .collect()
    }

    /// How the sources were reached, in chunks per path: `from 3 peers: 12 direct, 40
    /// reverse`.
    pub fn summary(&self) -> String {
        let paths: Vec<String> = self
            .routes()
            .iter()
            .map(|(route, chunks)| format!("{chunks} {route}"))
            .collect();
        let n = self.paths.len();
        let s = if n == 1 { "" } else { "s" };
        format!("from {n} peer{s}: {}", paths.join(", "))
    }
}

/// Set to stop a download; what arrived is kept for a resume.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Ask the download to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The flag itself, for a read that must notice a stop while it waits.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }

    /// Whether it was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Download `hit` into `dir` from that one peer, telling `progress` of every block.
pub async fn download(
    hit: &Hit,
    dir: &Path,
    limits: Limits,
    cancel: Cancel,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Downloaded> {
    let mut job = Job::new(hit.file.clone(), vec![hit.clone()], dir, limits);
    job.cancel = cancel;
    job.progress = progress;
    fetch(job).await
}

/// Run a download job to its end on a blocking thread (see [`engine`] for why).
pub async fn fetch(job: Job) -> Result<Downloaded> {
    let name = job.file.name.clone();
    let downloaded = smol::unblock(move || engine::run(job)).await?;
    debug!(
        "downloaded {name} ({} bytes, {} resumed) from {} peer(s) in {:.3}s",
        downloaded.size,
        downloaded.resumed,
        downloaded.peers.len(),
        downloaded.elapsed.as_secs_f64()
    );
    Ok(downloaded)
}
