//! The transfer engine: one file from every peer that has it, chunk by chunk.
//!
//! One worker thread per peer asks the [`Scheduler`] for runs of chunks and writes what
//! it receives at their offsets in the [`PartFile`]. A sequencer thread feeds the chunks
//! to the whole-file SHA-256 in order (from memory when it can, from the page cache when
//! a slow peer holds the line back). With several peers each chunk is checked against
//! the peer's chunk list (itself checked against the index) as it arrives: a bad chunk
//! is fetched again elsewhere and its sender dropped. With one peer the streaming
//! whole-file hash is the check, and the chunk list only locates damage.
//!
//! Why plain threads, not tasks: the bytes of a transfer are received, hashed and
//! written at GiB/s, all of it CPU-bound work that would hold an executor thread for
//! the whole download (starving the file server and the index session that share the
//! executor) or yield every 64 KiB. A blocking socket with a read timeout, a positioned
//! write and a hasher on their own threads is the simplest code that reaches the
//! single-core SHA-256 rate (README, Figures). Only the short request/answer exchanges
//! between runs use the async [`PeerClient`]; a worker drives them with
//! `smol::block_on`, which is sound because its thread belongs to no executor. The bytes
//! of a range come through a [`crate::client::RangeReader`]: the socket blocks (with the
//! timeout) and the worker decrypts on its own thread, with no reactor or timer per read.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use sha2::{Digest, Sha256};

use super::part_file::{PartFile, ResumeState};
use super::place::{existing_copy, safe_file_name};
use super::scheduler::{RUN, Scheduler};
use super::sequencer::sequence;
use super::shared::{Delivery, MAX_SOURCES, PIECE, Shared, hash_range, peer_name};
use super::worker::work;
use super::{Downloaded, Job};
use crate::client::{PeerClient, Route};
use crate::error::{Error, IoContext, Result};
use crate::protocol::{self, Hit};
use crate::runtime;

/// Run a download to the end (blocking); see the module's description.
pub fn run(job: Job) -> Result<Downloaded> {
    let started = Instant::now();
    let file_name = safe_file_name(&job.file.name)?;
    std::fs::create_dir_all(&job.dir)
        .context(|| format!("cannot use the downloads folder {}", job.dir.display()))?;
    let size = job.file.size;
    if let Some(copy) = existing_copy(&job.dir, &file_name, &job.file.sha256, size) {
        return Ok(Downloaded {
            path: job.dir.join(copy),
            size,
            elapsed: started.elapsed(),
            already_there: true,
            resumed: 0,
            peers: Vec::new(),
            paths: Vec::new(),
            refetched: 0,
        });
    }
    let (part, resume) = PartFile::open(&job.dir, &file_name, &job.file)?;
    let chunk_size = protocol::chunk_size(size);
    let resumed: u64 = (0..protocol::chunk_count(size))
        .filter(|&i| resume.received[i as usize])
        .map(|i| (size - i * chunk_size).min(chunk_size))
        .sum();
    job.status.total.store(size, Ordering::Relaxed);
    job.status.done.store(resumed, Ordering::Relaxed);
    job.status.resumed.store(resumed, Ordering::Relaxed);
    (job.progress)(resumed);

    let (peers, paths, digests) = match connect_all(&job) {
        Ok(found) => found,
        Err(e) => {
            if resumed == 0 {
                part.discard();
            }
            return Err(e);
        }
    };
    let verify_chunks = peers.len() > 1;
    let shared = Arc::new(Shared {
        part,
        chunk_size,
        digests,
        verify_chunks,
        scheduler: Mutex::new(Scheduler::new(
            &resume.received,
            if verify_chunks { RUN } else { u64::MAX },
        )),
        changed: Condvar::new(),
        pool: Mutex::default(),
        contributors: Mutex::default(),
        paths: Mutex::new(paths),
        job,
    });
    let (digest, failures) = transfer(&shared, resume, peers);
    let shared = Arc::into_inner(shared).expect("every thread of the transfer has ended");
    let mut done = conclude(shared, digest?, &failures, &file_name)?;
    done.elapsed = started.elapsed();
    done.resumed = resumed;
    Ok(done)
}

/// Peers said hello to, best round-trip first, how each was reached, and the verified
/// chunk list.
type Connected = (Vec<(Hit, PeerClient)>, BTreeMap<u64, Route>, Vec<[u8; 32]>);

/// Connect to every source at once and fetch a chunk list that matches the index's.
fn connect_all(job: &Job) -> Result<Connected> {
    let attempts: Vec<_> = job
        .sources
        .iter()
        .take(MAX_SOURCES)
        .cloned()
        .map(|hit| {
            let dialer = job.dialer.clone();
            runtime::spawn(async move {
                let started = Instant::now();
                let client = dialer.connect(&hit).await;
                (hit, client, started.elapsed())
            })
        })
        .collect();
    let mut connected = Vec::new();
    let mut paths = BTreeMap::new();
    let mut errors = Vec::new();
    for attempt in attempts {
        match smol::block_on(attempt) {
            (hit, Ok((client, path)), rtt) => {
                paths.insert(hit.peer_id, path);
                connected.push((rtt, hit, client));
            }
            (hit, Err(e), _) => errors.push(format!("{}: {e}", peer_name(&hit))),
        }
    }
    connected.sort_by_key(|(rtt, _, _)| *rtt);
    let mut digests = None;
    for (_, hit, client) in connected.iter_mut() {
        match smol::block_on(client.chunk_list(&job.file_at(hit))) {
            Ok(list) => {
                digests = Some(list);
                break;
            }
            Err(e) => errors.push(format!("{}: {e}", peer_name(hit))),
        }
    }
    let peers = connected.into_iter().map(|(_, hit, c)| (hit, c)).collect();
    match digests {
        Some(digests) => Ok((peers, paths, digests)),
        None if errors.len() == 1 && job.sources.len() == 1 => Err(Error::msg(errors.remove(0))),
        None => Err(Error::msg(format!(
            "no peer sharing {} could be used: {}",
            job.file.name,
            errors.join("; ")
        ))),
    }
}

/// Run the workers and the sequencer until every chunk is in place, every peer has
/// failed, or the download is cancelled; returns the whole-file digest (when every
/// chunk was hashed) and what went wrong with each peer that failed.
fn transfer(
    shared: &Arc<Shared>,
    resume: ResumeState,
    peers: Vec<(Hit, PeerClient)>,
) -> (Result<Option<String>>, Vec<String>) {
    let (to_sequencer, from_workers) = mpsc::channel::<Delivery>();
    let sequencer = {
        let shared = shared.clone();
        std::thread::spawn(move || sequence(&shared, resume, from_workers))
    };
    let workers: Vec<_> = peers
        .into_iter()
        .map(|(hit, client)| {
            let shared = shared.clone();
            let to_sequencer = to_sequencer.clone();
            std::thread::spawn(move || {
                let status = &shared.job.status;
                status.peers.fetch_add(1, Ordering::Relaxed);
                let result = work(&shared, &hit, client, &to_sequencer);
                status.peers.fetch_sub(1, Ordering::Relaxed);
                result.err().map(|e| format!("{}: {e}", peer_name(&hit)))
            })
        })
        .collect();
    drop(to_sequencer);
    let failures = workers
        .into_iter()
        .filter_map(|w| w.join().unwrap_or_else(|_| Some("a worker failed".into())))
        .collect();
    let digest = sequencer
        .join()
        .unwrap_or_else(|_| Err(Error::msg("the hashing thread failed")));
    (digest, failures)
}

/// The end of a transfer: the verified file takes its final name, or the part file is
/// kept for a resume (or discarded when nothing in it is worth keeping).
fn conclude(
    shared: Shared,
    digest: Option<String>,
    failures: &[String],
    file_name: &str,
) -> Result<Downloaded> {
    if shared.cancelled() {
        return Err(Error::Cancelled);
    }
    let status = &shared.job.status;
    let size = shared.job.file.size;
    if !shared.scheduler().all_done() {
        let failures = failures.join("; ");
        let done = status.done.load(Ordering::Relaxed);
        let name = shared.job.file.name.clone();
        if done == 0 {
            shared.part.discard();
            return Err(Error::msg(format!("cannot download {name}: {failures}")));
        }
        return Err(Error::msg(format!(
            "{name} stopped at {} of {} ({failures}); what arrived is kept: run get again to resume",
            indicatif::HumanBytes(done),
            indicatif::HumanBytes(size)
        )));
    }
    // Every chunk is in place, so the sequencer has hashed the whole file in order;
    // should it not have (a worker ended between its last chunk and the hash), the part
    // file is kept and the download fails instead of the process.
    let Some(digest) = digest else {
        return Err(Error::msg(format!(
            "{}: every chunk arrived but the whole-file hash did not finish; what arrived \
             is kept: get it again to verify and finish",
            shared.job.file.name
        )));
    };
    if digest != shared.job.file.sha256 {
        return Err(locate_damage(shared, &digest));
    }
    let refetched = status.refetched.load(Ordering::Relaxed);
    let peers = shared.contributors.lock().keys().copied().collect();
    let paths = {
        let reached = shared.paths.lock();
        let contributors = shared.contributors.lock();
        contributors
            .iter()
            .map(|(&peer, &chunks)| {
                (
                    peer,
                    reached.get(&peer).copied().unwrap_or(Route::Direct),
                    chunks,
                )
            })
            .collect()
    };
    let Shared { job, part, .. } = shared;
    let (path, already_there) = part.finish(&job.dir, file_name, &job.file)?;
    Ok(Downloaded {
        path,
        size,
        elapsed: Duration::ZERO,
        already_there,
        resumed: 0,
        peers,
        paths,
        refetched,
    })
}

/// The whole file arrived but its SHA-256 is wrong: find the bad chunks with the chunk
/// list, forget them (keeping the good ones for a resume), and say so.
fn locate_damage(shared: Shared, digest: &str) -> Error {
    let count = protocol::chunk_count(shared.job.file.size);
    let mut buf = vec![0; PIECE];
    let mut received = vec![true; count as usize];
    let mut bad = 0;
    for i in 0..count {
        let mut hasher = Sha256::new();
        let ok = hash_range(
            shared.part.file(),
            i * shared.chunk_size,
            shared.chunk_len(i),
            &mut buf,
            &mut hasher,
        )
        .is_ok()
            && hasher.finalize().as_slice() == shared.digests[i as usize];
        if !ok {
            received[i as usize] = false;
            bad += 1;
        }
    }
    let Shared { job, part, .. } = shared;
    if bad == 0 {
        // The index lied about the contents: nothing here is worth resuming.
        part.discard();
    } else {
        let mut resume = ResumeState::fresh(&job.file);
        part.save(&mut resume, received, 0, &Sha256::new());
    }
    let peers: Vec<String> = job.sources.iter().map(peer_name).collect();
    let outcome = match bad {
        0 => "every chunk matches the peer's chunk list, so the index's checksum is wrong; nothing was kept".to_owned(),
        bad if bad == count => format!("all {count} chunks were corrupt and were discarded"),
        bad => format!(
            "{bad} of {count} chunks were corrupt and were discarded; the good ones are kept, so `get` again (from another peer) fetches only those"
        ),
    };
    Error::ChecksumMismatch {
        name: job.file.name,
        peer: peers.join(", "),
        expected: job.file.sha256,
        actual: digest.to_owned(),
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A download that an earlier one saved as `6 (1).txt` (beside a different `6.txt`)
    /// is found there before any peer is asked: the only source here answers nothing.
    #[test]
    fn a_copy_saved_under_a_numbered_name_is_found_without_fetching() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("6.txt"), b"other contents").unwrap();
        std::fs::write(dir.path().join("6 (1).txt"), b"six").unwrap();
        let digest = crate::digest::hash_file(&dir.path().join("6 (1).txt"), &|_| {}).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let hit = Hit {
            peer_id: 1,
            addr,
            file: protocol::FileEntry {
                tags: None,
                name: "6.txt".into(),
                size: 3,
                sha256: digest.sha256,
                chunks: "0".repeat(64),
            },
            shared_at: 0,
            fingerprint: protocol::Fingerprint::of_public_key(b"test key"),
            nickname: None,
            reachable: true,
            local: None,
        };
        let job = Job::new(hit.file.clone(), vec![hit], dir.path(), Default::default());
        let done = run(job).expect("found without a peer");
        assert!(done.already_there);
        assert_eq!(done.path, dir.path().join("6 (1).txt"));
    }

    #[test]
    fn chunk_arithmetic_holds_past_four_gib() {
        let size = (6u64 << 30) + 3;
        let chunk = protocol::chunk_size(size);
        let count = protocol::chunk_count(size);
        assert!(count <= protocol::MAX_CHUNKS);
        assert_eq!((count - 1) * chunk + (size - (count - 1) * chunk), size);
        // The last chunk starts past 4 GiB and is the short remainder.
        assert!((count - 1) * chunk > u32::MAX as u64);
        assert_eq!(size - (count - 1) * chunk, 3);
    }
}
