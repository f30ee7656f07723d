//! One source's worker thread: asks the scheduler for runs of chunks, requests them
//! from its peer, and receives them — into a whole-chunk buffer when one fits in the
//! download's memory (checked before it is written), otherwise streamed through one
//! piece straight to the part file — at the peer's pace or not at all.
//!
//! Pieces of at most [`PIECE`] are written to the part file: on this kind of virtual
//! machine, writes of a megabyte and more into the page cache cost several times what
//! smaller ones do.

use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tracing::warn;

use super::shared::{Delivery, PIECE, Shared, peer_name};
use crate::client::{PeerClient, RangeReader};
use crate::error::{Error, IoContext, Result};
use crate::limit::Pace;
use crate::protocol::{self, Hit};

/// How a run of chunks ended.
enum RunEnd {
    /// Every chunk arrived; the connection can take the next request.
    Whole,
    /// The rest of the run is unwanted (another peer won a chunk, or we are stopping):
    /// the connection, with bytes still in flight, is dropped.
    Stopped,
}

/// What a worker needs besides the shared state: its peer, its pace, and its piece
/// buffer for chunks that do not fit in memory.
struct Worker<'a> {
    shared: &'a Shared,
    hit: &'a Hit,
    pace: Pace,
    piece: Vec<u8>,
    to_sequencer: &'a mpsc::Sender<Delivery>,
}

/// One peer's worker: fetch runs until none are left or the peer fails.
pub(super) fn work(
    shared: &Shared,
    hit: &Hit,
    mut peer: PeerClient,
    to_sequencer: &mpsc::Sender<Delivery>,
) -> Result<()> {
    let size = shared.job.file.size;
    let limits = shared.job.limits;
    let mut worker = Worker {
        shared,
        hit,
        pace: Pace::new(limits.min_rate, limits.timeout),
        piece: Vec::new(),
        to_sequencer,
    };
    loop {
        if shared.cancelled() {
            return Ok(());
        }
        // The end game (a second copy of a chunk in flight) is only for a worker that
        // can check the chunk before writing it.
        let spare = shared.buffer();
        let mut scheduler = shared.scheduler();
        let Some(run) = scheduler.next_run(spare.is_some()) else {
            if scheduler.all_done() {
                return Ok(());
            }
            // Chunks are in flight elsewhere: wait in case they are handed back.
            if let Some(buf) = spare {
                shared.recycle(buf);
            }
            shared.wait_for_change(scheduler);
            continue;
        };
        drop(scheduler);
        let offset = run.start * shared.chunk_size;
        let length = (run.end * shared.chunk_size).min(size) - offset;
        let status = &shared.job.status;
        let wanted = |position: u64| {
            status.queued_at.store(hit.peer_id, Ordering::Relaxed);
            status.queued.store(position, Ordering::Relaxed);
            !shared.cancelled() && !shared.scheduler().is_done(run.start)
        };
        let file = shared.job.file_at(hit);
        let asked = smol::block_on(peer.request_range(&file, offset, length, wanted))
            .and_then(|()| peer.into_range())
            .and_then(|range| range.stop_when(shared.job.cancel.flag()));
        if status.queued_at.load(Ordering::Relaxed) == hit.peer_id {
            status.queued.store(0, Ordering::Relaxed);
        }
        let mut range = match asked {
            Ok(range) => range,
            Err(e) => {
                if let Some(buf) = spare {
                    shared.recycle(buf);
                }
                give_back(shared, run);
                return Err(e);
            }
        };
        peer = match worker.receive_run(&mut range, run, spare)? {
            RunEnd::Whole => range.into_client()?,
            RunEnd::Stopped if shared.cancelled() => return Ok(()),
            RunEnd::Stopped => smol::block_on(shared.job.dialer.connect(hit))?.0,
        };
    }
}

/// Hand chunks back to the scheduler and wake the idle workers to take them.
fn give_back(shared: &Shared, chunks: Range<u64>) {
    shared.scheduler().give_back(chunks);
    shared.notify();
}

impl Worker<'_> {
    /// Receive the chunks of `run`, check them (with several peers), write them in place
    /// and pass them to the sequencer; `spare` is a buffer for the first.
    fn receive_run(
        &mut self,
        range: &mut RangeReader,
        run: Range<u64>,
        mut spare: Option<Vec<u8>>,
    ) -> Result<RunEnd> {
        let shared = self.shared;
        for i in run.clone() {
            if shared.cancelled() || shared.scheduler().is_done(i) {
                if let Some(buf) = spare {
                    shared.recycle(buf);
                }
                give_back(shared, i..run.end);
                return Ok(RunEnd::Stopped);
            }
            let buffer = spare.take().or_else(|| shared.buffer());
            let received = match buffer {
                Some(buf) => self.receive_whole(range, i, buf).map(|buf| Some(Some(buf))),
                None => self.stream(range, i).map(|whole| whole.then_some(None)),
            };
            // Ok(Some(bytes in memory, if any)), or Ok(None) when the chunk is not ours.
            match received {
                Ok(Some(buf)) => self.deliver(i, buf),
                Ok(None) => {
                    give_back(shared, i..run.end);
                    return Ok(RunEnd::Stopped);
                }
                Err(e) => {
                    give_back(shared, i..run.end);
                    return Err(e);
                }
            }
        }
        Ok(RunEnd::Whole)
    }

    /// Chunk `i` into `buf`, checked (with several peers) before it is written.
    fn receive_whole(
        &mut self,
        range: &mut RangeReader,
        i: u64,
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>> {
        let shared = self.shared;
        let len = shared.chunk_len(i) as usize;
        let checked = receive(range, &mut buf[..len], shared, &mut self.pace).and_then(|()| {
            if shared.verify_chunks {
                self.check(i, Sha256::digest(&buf[..len]).as_slice())?;
            }
            write_chunk(shared.part.file(), &buf[..len], i * shared.chunk_size)
                .context(|| format!("writing {}", shared.job.file.name))
        });
        match checked {
            Ok(()) => Ok(buf),
            Err(e) => {
                shared.recycle(buf);
                Err(e)
            }
        }
    }

    /// Chunk `i` through the piece buffer straight to the part file, hashed as it
    /// goes; false when another peer started fetching it too (it is theirs now: only a
    /// peer fetching a chunk alone writes it unchecked).
    fn stream(&mut self, range: &mut RangeReader, i: u64) -> Result<bool> {
        let shared = self.shared;
        let len = shared.chunk_len(i);
        self.piece.resize(PIECE, 0);
        let mut hasher = Sha256::new();
        let mut at = 0;
        while at < len {
            let n = (len - at).min(PIECE as u64) as usize;
            receive(range, &mut self.piece[..n], shared, &mut self.pace)?;
            if shared.verify_chunks {
                hasher.update(&self.piece[..n]);
            }
            let scheduler = shared.scheduler();
            if !scheduler.sole(i) {
                return Ok(false);
            }
            shared
                .part
                .file()
                .write_all_at(&self.piece[..n], i * shared.chunk_size + at)
                .context(|| format!("writing {}", shared.job.file.name))?;
            drop(scheduler);
            at += n as u64;
        }
        if shared.verify_chunks {
            self.check(i, hasher.finalize().as_slice())?;
        }
        Ok(true)
    }

    /// With several peers, chunk `i` must match the chunk list; a bad one drops its
    /// sender.
    fn check(&self, i: u64, digest: &[u8]) -> Result<()> {
        let shared = self.shared;
        if digest == shared.digests[i as usize] {
            return Ok(());
        }
        let len = shared.chunk_len(i);
        shared
            .job
            .status
            .refetched
            .fetch_add(len, Ordering::Relaxed);
        warn!(
            "{} sent a bad chunk {i} of {}; dropping it",
            peer_name(self.hit),
            shared.job.file.name
        );
        Err(Error::msg(format!("sent a corrupt chunk ({i})")))
    }

    /// Record chunk `i` as in place and pass it on (with its bytes when they are in
    /// memory), unless another peer was first.
    fn deliver(&self, i: u64, buf: Option<Vec<u8>>) {
        let shared = self.shared;
        let len = shared.chunk_len(i);
        let status = &shared.job.status;
        let first = shared.scheduler().complete(i);
        shared.notify();
        if first {
            status.done.fetch_add(len, Ordering::Relaxed);
            *shared
                .contributors
                .lock()
                .entry(self.hit.peer_id)
                .or_default() += 1;
            let _ = self.to_sequencer.send((i, buf));
        } else {
            status.duplicated.fetch_add(len, Ordering::Relaxed);
            if let Some(buf) = buf {
                shared.recycle(buf);
            }
        }
    }
}

fn write_chunk(part: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    for (i, piece) in data.chunks(PIECE).enumerate() {
        part.write_all_at(piece, offset + (i * PIECE) as u64)?;
    }
    Ok(())
}

/// Fill `buf` from the socket, within the bandwidth limit and at the peer's pace.
fn receive(socket: &mut impl Read, buf: &mut [u8], shared: &Shared, pace: &mut Pace) -> Result<()> {
    let limit = &shared.job.bandwidth;
    let mut filled = 0;
    while filled < buf.len() {
        let end = buf.len().min(filled + limit.block(buf.len()));
        let asked = Instant::now();
        match socket.read(&mut buf[filled..end]) {
            Ok(0) => return Err(protocol::Error::Closed("the peer part-way through".into()).into()),
            Ok(n) => {
                filled += n;
                (shared.job.progress)(n as u64);
                pace.record(asked.elapsed(), n).map_err(|slow| {
                    protocol::Error::Timeout(format!(
                        "waiting for data: the peer is too slow: {slow}"
                    ))
                })?;
                // A pause or cancel meanwhile ends the wait: the download stops at
                // once instead of after the debt (a low limit's can be an hour).
                if !limit.throttle_while(n, || !shared.cancelled()) {
                    return Err(Error::Cancelled);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                let stalled = "waiting for data: the peer stalled".into();
                return Err(protocol::Error::Timeout(stalled).into());
            }
            Err(e) => return Err(Error::io("receiving", e)),
        }
    }
    Ok(())
}
