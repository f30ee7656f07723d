//! What the workers and the sequencer of one download share: the job, the part file,
//! the chunk list, the scheduler, and a pool of chunk buffers within [`MEMORY`].

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use sha2::{Digest, Sha256};

use super::Job;
use super::part_file::PartFile;
use super::scheduler::Scheduler;
use crate::client::Route;
use crate::protocol::Hit;

/// A chunk on its way from a worker to the sequencer: its index, and its bytes when the
/// worker still holds them.
pub(super) type Delivery = (u64, Option<Vec<u8>>);

/// Most bytes of whole-chunk buffers one download holds, whatever its size and number
/// of sources. Chunks are received into a buffer while one fits (checked before they are
/// written, and hashed from memory); past it they stream through a [`PIECE`] buffer to
/// the part file and are hashed back from the page cache.
pub const MEMORY: u64 = 64 << 20;

/// The piece a chunk streams through when no chunk buffer fits in [`MEMORY`]; also the
/// largest single write to, and read from, the part file.
pub const PIECE: usize = 256 * 1024;

/// Most sources one download fetches from at once (each holds one [`PIECE`]).
pub const MAX_SOURCES: usize = 16;

/// The most a download holds in buffers of received data, whatever the file's size and
/// the number of sources: [`MEMORY`], a [`PIECE`] per source, and the sequencer's piece.
pub const fn memory_bound(sources: usize) -> u64 {
    let sources = if sources < MAX_SOURCES {
        sources
    } else {
        MAX_SOURCES
    };
    MEMORY + (sources as u64 + 1) * PIECE as u64
}

/// Chunk buffers: those free for reuse, and how many exist.
#[derive(Default)]
pub(super) struct Pool {
    free: Vec<Vec<u8>>,
    alive: u64,
}

/// What the workers and the sequencer share.
pub(super) struct Shared {
    pub(super) job: Job,
    pub(super) part: PartFile,
    pub(super) chunk_size: u64,
    pub(super) digests: Vec<[u8; 32]>,
    pub(super) verify_chunks: bool,
    pub(super) scheduler: Mutex<Scheduler>,
    /// Told whenever a chunk is completed or handed back, for idle workers.
    pub(super) changed: Condvar,
    pub(super) pool: Mutex<Pool>,
    /// Peers that delivered at least one chunk, and how many each delivered first.
    pub(super) contributors: Mutex<BTreeMap<u64, u64>>,
    /// How each source was reached.
    pub(super) paths: Mutex<BTreeMap<u64, Route>>,
}

impl Shared {
    pub(super) fn chunk_len(&self, i: u64) -> u64 {
        (self.job.file.size - i * self.chunk_size).min(self.chunk_size)
    }

    /// A whole-chunk buffer, when one fits in [`MEMORY`].
    pub(super) fn buffer(&self) -> Option<Vec<u8>> {
        let mut pool = self.pool.lock();
        if let Some(buf) = pool.free.pop() {
            return Some(buf);
        }
        if (pool.alive + 1) * self.chunk_size > MEMORY {
            return None;
        }
        pool.alive += 1;
        Some(vec![0; self.chunk_size as usize])
    }

    pub(super) fn recycle(&self, buf: Vec<u8>) {
        self.pool.lock().free.push(buf);
    }

    pub(super) fn scheduler(&self) -> MutexGuard<'_, Scheduler> {
        self.scheduler.lock()
    }

    /// Wake the workers waiting for work.
    pub(super) fn notify(&self) {
        self.changed.notify_all();
    }

    /// Wait (a bounded while) for a chunk to be completed or handed back.
    pub(super) fn wait_for_change(&self, mut scheduler: MutexGuard<'_, Scheduler>) {
        const RECHECK: Duration = Duration::from_millis(200);
        self.changed.wait_for(&mut scheduler, RECHECK);
    }

    pub(super) fn cancelled(&self) -> bool {
        self.job.cancel.is_cancelled()
    }
}

/// Feed `len` bytes of `file` at `offset` to `hasher`, through `buf`.
pub(super) fn hash_range(
    file: &std::fs::File,
    offset: u64,
    len: u64,
    buf: &mut [u8],
    hasher: &mut Sha256,
) -> std::io::Result<()> {
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], offset + at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

/// How a source is named in messages.
pub(super) fn peer_name(hit: &Hit) -> String {
    format!("peer {} ({})", hit.peer_id, hit.addr)
}
