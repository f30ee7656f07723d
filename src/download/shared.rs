//! What the workers and the sequencer of one download share: the job, the part file,
//! the chunk list, the scheduler, and a pool of chunk buffers.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use super::Job;
use super::part_file::PartFile;
use super::scheduler::Scheduler;

/// A chunk on its way from a worker to the sequencer: its index, and its bytes when the
/// worker still holds them.
pub(super) type Delivery = (u64, Option<Vec<u8>>);

/// What the workers and the sequencer share.
pub(super) struct Shared {
    pub(super) job: Job,
    pub(super) part: PartFile,
    pub(super) chunk_size: u64,
    pub(super) digests: Vec<[u8; 32]>,
    pub(super) verify_chunks: bool,
    pub(super) scheduler: Mutex<Scheduler>,
    pub(super) pool: Mutex<Vec<Vec<u8>>>,
    /// Peers that delivered at least one chunk.
    pub(super) contributors: Mutex<BTreeSet<u64>>,
}

/// Lock a mutex; a thread that panicked while holding it left nothing half-done that
/// matters more than finishing the download.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn chunk_len(&self, i: u64) -> u64 {
        (self.job.file.size - i * self.chunk_size).min(self.chunk_size)
    }

    pub(super) fn buffer(&self) -> Vec<u8> {
        lock(&self.pool)
            .pop()
            .unwrap_or_else(|| vec![0; self.chunk_size as usize])
    }

    pub(super) fn recycle(&self, buf: Vec<u8>) {
        lock(&self.pool).push(buf);
    }

    pub(super) fn scheduler(&self) -> MutexGuard<'_, Scheduler> {
        lock(&self.scheduler)
    }

    pub(super) fn cancelled(&self) -> bool {
        self.job.cancel.is_cancelled()
    }
}
