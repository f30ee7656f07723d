//! The whole-file SHA-256 of a download, fed chunk by chunk in order as the workers
//! deliver them out of order, and the resume state saved as it goes.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::debug;

use super::part_file::ResumeState;
use super::shared::{Delivery, MEMORY, PIECE, Shared, hash_range};
use crate::error::{IoContext, Result};
use crate::protocol;

/// Bytes of out-of-order chunks kept in memory before the page cache holds them instead
/// (half of the download's [`MEMORY`], so that the workers keep buffers to receive in).
const STASH: u64 = MEMORY / 2;

/// How often the resume state is saved while data arrives.
const SAVE_EVERY: Duration = Duration::from_millis(500);

/// The whole-file hash, fed chunk by chunk in order.
struct Sequencer<'a> {
    shared: &'a Shared,
    /// Chunks that were in the part file before this run.
    already: Vec<bool>,
    hasher: Sha256,
    /// The next chunk to hash.
    next: u64,
    /// Chunks that arrived ahead of `next`: their bytes, or `None` when they are to be
    /// read back from the part file.
    stash: BTreeMap<u64, Option<Vec<u8>>>,
    stashed: u64,
    scratch: Vec<u8>,
}

impl Sequencer<'_> {
    /// Hash every chunk now available in order: from the stash, or from disk when it
    /// was received before this run or left there to spare memory.
    fn advance(&mut self) -> Result<()> {
        let shared = self.shared;
        let count = protocol::chunk_count(shared.job.file.size);
        while self.next < count {
            let next = self.next;
            let len = shared.chunk_len(next) as usize;
            match self.stash.remove(&next) {
                Some(Some(buf)) => {
                    self.stashed -= len as u64;
                    self.hasher.update(&buf[..len]);
                    shared.recycle(buf);
                }
                Some(None) => self.hash_from_disk(next, len)?,
                None if self.already[next as usize] => self.hash_from_disk(next, len)?,
                None => break,
            }
            self.next += 1;
        }
        Ok(())
    }

    fn hash_from_disk(&mut self, i: u64, len: usize) -> Result<()> {
        self.scratch.resize(PIECE, 0);
        let shared = self.shared;
        hash_range(
            shared.part.file(),
            i * shared.chunk_size,
            len as u64,
            &mut self.scratch,
            &mut self.hasher,
        )
        .context(|| "reading back the part file".into())
    }

    /// Take a chunk that arrived: its bytes stay in memory up to [`STASH`].
    fn accept(&mut self, (i, buf): Delivery) {
        let len = self.shared.chunk_len(i);
        let keep = match buf {
            Some(buf) if self.stashed + len <= STASH => {
                self.stashed += len;
                Some(buf)
            }
            Some(buf) => {
                self.shared.recycle(buf);
                None
            }
            None => None,
        };
        self.stash.insert(i, keep);
    }
}

/// Feed chunks to the whole-file hash in order; returns the hex digest when every
/// chunk was hashed. Saves the resume state as it goes.
pub(super) fn sequence(
    shared: &Shared,
    mut resume: ResumeState,
    from_workers: mpsc::Receiver<Delivery>,
) -> Result<Option<String>> {
    let mut seq = Sequencer {
        shared,
        already: resume.received.clone(),
        hasher: resume.hasher(),
        next: resume.hashed,
        stash: BTreeMap::new(),
        stashed: 0,
        scratch: Vec::new(),
    };
    let save = |resume: &mut ResumeState, seq: &Sequencer| {
        let received = shared.scheduler().received();
        shared.part.save(resume, received, seq.next, &seq.hasher);
    };
    let mut last_save = Instant::now();
    let mut dirty = false;
    loop {
        seq.advance()?;
        if dirty && last_save.elapsed() >= SAVE_EVERY {
            save(&mut resume, &seq);
            last_save = Instant::now();
            dirty = false;
        }
        // Wake up now and then even when no chunk comes (a stalled peer), so that what
        // did arrive is recorded before anything can kill us.
        match from_workers.recv_timeout(SAVE_EVERY) {
            Ok(delivery) => {
                dirty = true;
                seq.accept(delivery);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    save(&mut resume, &seq);
    let count = protocol::chunk_count(shared.job.file.size);
    debug!(
        "hashed {} of {count} chunks of {}",
        seq.next, shared.job.file.name
    );
    Ok((seq.next == count).then(|| hex::encode(seq.hasher.finalize())))
}
