//! The transfer engine: one file from every peer that has it, chunk by chunk.
//!
//! One worker thread per peer asks the scheduler for runs of chunks and writes what it
//! receives at their offsets in a hidden part file. A sequencer thread feeds the chunks
//! to the whole-file SHA-256 in order (from memory when it can, from the page cache
//! when a slow peer holds the line back). With several peers each chunk is checked
//! against the peer's chunk list (itself checked against the index) as it arrives: a
//! bad chunk is fetched again elsewhere and its sender dropped. With one peer the
//! streaming whole-file hash is the check, and the chunk list only locates damage.
//!
//! The part file and its state (chunks received, and the SHA-256 state over the prefix
//! already hashed) survive an interruption, so `get` again resumes without fetching or
//! hashing those bytes again.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use smol::Async;
use tracing::{debug, warn};

use crate::error::{Error, IoContext, Result};
use crate::peer::download::{Cancel, Downloaded, PART_SUFFIX, place, safe_file_name, same_content};
use crate::peer::limit::RateLimit;
use crate::peer::resume::ResumeState;
use crate::peer::share::{chunks_root, to_hex};
use crate::protocol::{self, Connection, FileEntry, Hit, Limits, PeerRequest, PeerResponse};

/// Chunks a peer is asked for at once when several peers share the work.
const RUN: u64 = 4;

/// Bytes of out-of-order chunks the sequencer keeps in memory before it lets the page
/// cache hold them instead.
const STASH: u64 = 64 << 20;

/// How often the resume state is saved while data arrives.
const SAVE_EVERY: Duration = Duration::from_millis(500);

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
}

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Pending,
    InFlight(u8),
    Done,
}

/// Which chunk goes to which peer.
struct Scheduler {
    chunks: Vec<Chunk>,
    run: u64,
}

impl Scheduler {
    /// The next chunks for a peer: a run of pending ones, or in the end game one that
    /// another peer is still fetching.
    fn next_run(&mut self) -> Option<std::ops::Range<u64>> {
        if let Some(start) = self.chunks.iter().position(|c| *c == Chunk::Pending) {
            let mut end = start;
            while end < self.chunks.len()
                && self.chunks[end] == Chunk::Pending
                && ((end - start) as u64) < self.run
            {
                self.chunks[end] = Chunk::InFlight(1);
                end += 1;
            }
            return Some(start as u64..end as u64);
        }
        let slow = self.chunks.iter().position(|c| *c == Chunk::InFlight(1))?;
        self.chunks[slow] = Chunk::InFlight(2);
        Some(slow as u64..slow as u64 + 1)
    }

    /// Record a chunk as in place; false if another peer was first.
    fn complete(&mut self, i: u64) -> bool {
        let chunk = &mut self.chunks[i as usize];
        let first = *chunk != Chunk::Done;
        *chunk = Chunk::Done;
        first
    }

    fn is_done(&self, i: u64) -> bool {
        self.chunks[i as usize] == Chunk::Done
    }

    /// Hand back chunks a peer will not deliver.
    fn give_back(&mut self, range: std::ops::Range<u64>) {
        for i in range {
            let chunk = &mut self.chunks[i as usize];
            *chunk = match *chunk {
                Chunk::InFlight(n) if n > 1 => Chunk::InFlight(n - 1),
                Chunk::InFlight(_) => Chunk::Pending,
                other => other,
            };
        }
    }

    fn received(&self) -> Vec<bool> {
        self.chunks.iter().map(|c| *c == Chunk::Done).collect()
    }

    fn all_done(&self) -> bool {
        self.chunks.iter().all(|c| *c == Chunk::Done)
    }
}

/// What the workers share.
struct Shared {
    job: Job,
    part: File,
    chunk_size: u64,
    digests: Vec<[u8; 32]>,
    verify_chunks: bool,
    scheduler: Mutex<Scheduler>,
    pool: Mutex<Vec<Vec<u8>>>,
    /// Peers that delivered at least one chunk.
    contributors: Mutex<std::collections::BTreeSet<u64>>,
}

impl Shared {
    fn chunk_len(&self, i: u64) -> u64 {
        let size = self.job.file.size;
        (size - i * self.chunk_size).min(self.chunk_size)
    }

    fn buffer(&self) -> Vec<u8> {
        let spare = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        spare.unwrap_or_else(|| vec![0; self.chunk_size as usize])
    }

    fn recycle(&self, buf: Vec<u8>) {
        self.pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buf);
    }

    fn scheduler(&self) -> std::sync::MutexGuard<'_, Scheduler> {
        self.scheduler.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Longest file name kept in a part file's name, so that the part file and its state
/// file stay within the usual 255-byte limit.
const PART_NAME_KEEP: usize = 192;

/// The hidden part file of a download: named after the file and its content, so that a
/// later `get` of the same content finds and resumes it.
fn part_name(file_name: &str, sha256: &str) -> String {
    let mut keep = file_name.len().min(PART_NAME_KEEP);
    while !file_name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!(".{}.{}{PART_SUFFIX}", &file_name[..keep], &sha256[..16])
}

fn peer_name(hit: &Hit) -> String {
    format!("peer {} ({})", hit.peer_id, hit.addr)
}

/// Run a download to the end (blocking); see the module's description.
pub fn run(job: Job) -> Result<Downloaded> {
    let started = Instant::now();
    let file_name = safe_file_name(&job.file.name)?;
    let dir = job.dir.clone();
    std::fs::create_dir_all(&dir)
        .context(|| format!("cannot use the downloads folder {}", dir.display()))?;
    let size = job.file.size;
    let final_path = dir.join(&file_name);
    if same_content(&final_path, &job.file.sha256, size) {
        return Ok(Downloaded {
            path: final_path,
            size,
            elapsed: started.elapsed(),
            already_there: true,
            resumed: 0,
            peers: Vec::new(),
            refetched: 0,
        });
    }
    let part_path = dir.join(part_name(&file_name, &job.file.sha256));
    let state_path = ResumeState::path_for(&part_path);
    let part_existed = part_path.exists();
    let part = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part_path)
        .context(|| format!("creating {}", part_path.display()))?;
    if part.try_lock().is_err() {
        return Err(Error::msg(format!(
            "another napster is downloading {file_name} into {} right now",
            dir.display()
        )));
    }
    part.set_len(size)
        .context(|| format!("making room for {file_name}"))?;
    let chunk_size = protocol::chunk_size(size);
    let count = protocol::chunk_count(size);
    // A state without its part file describes nothing that exists: never trust it.
    let saved = if part_existed {
        ResumeState::load(&state_path, &job.file, &part)
    } else {
        None
    };
    let resume = saved.unwrap_or_else(|| ResumeState::fresh(&job.file));
    let resumed_bytes: u64 = (0..count)
        .filter(|&i| resume.received[i as usize])
        .map(|i| (size - i * chunk_size).min(chunk_size))
        .sum();
    job.status.total.store(size, Ordering::Relaxed);
    job.status.done.store(resumed_bytes, Ordering::Relaxed);
    job.status.resumed.store(resumed_bytes, Ordering::Relaxed);
    (job.progress)(resumed_bytes);

    let (connections, digests) = match connect_all(&job) {
        Ok(found) => found,
        Err(e) => {
            if resumed_bytes == 0 {
                drop(part.unlock());
                let _ = std::fs::remove_file(&part_path);
                let _ = std::fs::remove_file(&state_path);
            }
            return Err(e);
        }
    };
    let verify_chunks = connections.len() > 1;
    let chunks = resume
        .received
        .iter()
        .map(|&r| if r { Chunk::Done } else { Chunk::Pending })
        .collect();
    let shared = Arc::new(Shared {
        part,
        chunk_size,
        digests,
        verify_chunks,
        scheduler: Mutex::new(Scheduler {
            chunks,
            run: if verify_chunks { RUN } else { u64::MAX },
        }),
        pool: Mutex::new(Vec::new()),
        contributors: Mutex::default(),
        job,
    });
    let (to_sequencer, from_workers) = mpsc::channel::<(u64, Option<Vec<u8>>)>();
    let sequencer = {
        let shared = shared.clone();
        let state_path = state_path.clone();
        std::thread::spawn(move || sequence(&shared, resume, &state_path, from_workers))
    };
    let failures = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = connections
        .into_iter()
        .map(|(hit, conn)| {
            let shared = shared.clone();
            let to_sequencer = to_sequencer.clone();
            let failures = failures.clone();
            std::thread::spawn(move || {
                shared.job.status.peers.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = work(&shared, &hit, conn, &to_sequencer) {
                    failures
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("{}: {e}", peer_name(&hit)));
                }
                shared.job.status.peers.fetch_sub(1, Ordering::Relaxed);
            })
        })
        .collect();
    drop(to_sequencer);
    for worker in workers {
        let _ = worker.join();
    }
    let digest = sequencer
        .join()
        .map_err(|_| Error::msg("the hashing thread failed"))??;
    let status = &shared.job.status;
    let complete = shared.scheduler().all_done();
    if shared.job.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    if !complete {
        let failures = failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("; ");
        let done = status.done.load(Ordering::Relaxed);
        if done == 0 {
            // Nothing to resume from: leave nothing behind.
            drop(shared.part.unlock());
            let _ = std::fs::remove_file(&part_path);
            let _ = std::fs::remove_file(&state_path);
            return Err(Error::msg(format!(
                "cannot download {}: {failures}",
                shared.job.file.name
            )));
        }
        return Err(Error::msg(format!(
            "{} stopped at {} of {} ({failures}); what arrived is kept: run get again to resume",
            shared.job.file.name,
            indicatif::HumanBytes(done),
            indicatif::HumanBytes(size)
        )));
    }
    let digest = digest.expect("a complete transfer is fully hashed");
    if digest != shared.job.file.sha256 {
        return Err(locate_damage(&shared, &part_path, &state_path, &digest));
    }
    drop(shared.part.unlock());
    let (path, already_there) = place(&part_path, &dir, &file_name, &shared.job.file.sha256, size)?;
    let _ = std::fs::remove_file(&part_path);
    let _ = std::fs::remove_file(&state_path);
    Ok(Downloaded {
        path,
        size,
        elapsed: started.elapsed(),
        already_there,
        resumed: resumed_bytes,
        peers: shared
            .contributors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .collect(),
        refetched: status.refetched.load(Ordering::Relaxed),
    })
}

/// Peers said hello to, and the verified chunk list.
type Connected = (Vec<(Hit, Connection)>, Vec<[u8; 32]>);

/// Connect to every source (in parallel), best round-trip first, and fetch a chunk list
/// that matches the index's.
fn connect_all(job: &Job) -> Result<Connected> {
    let attempts: Vec<_> = job
        .sources
        .iter()
        .cloned()
        .map(|hit| {
            let limits = job.limits;
            std::thread::spawn(move || {
                let started = Instant::now();
                let conn = smol::block_on(hello(&hit, limits));
                (hit, conn, started.elapsed())
            })
        })
        .collect();
    let mut connected = Vec::new();
    let mut errors = Vec::new();
    for attempt in attempts {
        let (hit, conn, rtt) = attempt
            .join()
            .map_err(|_| Error::msg("a connecting thread failed"))?;
        match conn {
            Ok(conn) => connected.push((rtt, hit, conn)),
            Err(e) => errors.push(format!("{}: {e}", peer_name(&hit))),
        }
    }
    connected.sort_by_key(|(rtt, _, _)| *rtt);
    let mut digests = None;
    for (_, hit, conn) in connected.iter_mut() {
        match smol::block_on(chunk_list(conn, &job.file)) {
            Ok(list) => {
                digests = Some(list);
                break;
            }
            Err(e) => errors.push(format!("{}: {e}", peer_name(hit))),
        }
    }
    match digests {
        Some(digests) => Ok((
            connected
                .into_iter()
                .map(|(_, hit, conn)| (hit, conn))
                .collect(),
            digests,
        )),
        None if errors.len() == 1 && job.sources.len() == 1 => Err(Error::msg(errors.remove(0))),
        None => Err(Error::msg(format!(
            "no peer sharing {} could be used: {}",
            job.file.name,
            errors.join("; ")
        ))),
    }
}

async fn hello(hit: &Hit, limits: Limits) -> Result<Connection> {
    let peer = peer_name(hit);
    let mut conn = Connection::connect(hit.addr, limits)
        .await
        .map_err(|e| Error::msg(format!("unreachable: {e}")))?;
    conn.send(&PeerRequest::Hello {
        version: protocol::VERSION,
    })
    .await?;
    match conn.recv_reply().await? {
        PeerResponse::Welcome { .. } => Ok(conn),
        PeerResponse::Error { message, .. } => Err(Error::msg(format!(
            "refused us: {}",
            protocol::clean_text(&message)
        ))),
        other => Err(Error::Malformed(format!(
            "{peer} answered out of turn: {other:?}"
        ))),
    }
}

/// The peer's chunk list for `file`, checked against the index's.
async fn chunk_list(conn: &mut Connection, file: &FileEntry) -> Result<Vec<[u8; 32]>> {
    conn.send(&PeerRequest::Chunks {
        name: file.name.clone(),
    })
    .await?;
    let count = match conn.recv_reply().await? {
        PeerResponse::ChunkList { size, count }
            if size == file.size && count == protocol::chunk_count(size) =>
        {
            count
        }
        PeerResponse::ChunkList { size, .. } if size != file.size => {
            return Err(Error::msg(format!(
                "its copy of {} is {size} bytes but the index says {}: it changed after it was registered",
                file.name, file.size
            )));
        }
        PeerResponse::ChunkList { count, .. } => {
            return Err(Error::msg(format!(
                "it announced a chunk list of {count} entries for {}, which has {}",
                file.name,
                protocol::chunk_count(file.size)
            )));
        }
        PeerResponse::Error { message, .. } => {
            return Err(Error::msg(format!(
                "refused: {}",
                protocol::clean_text(&message)
            )));
        }
        other => return Err(Error::Malformed(format!("answered out of turn: {other:?}"))),
    };
    let raw = conn.recv_raw(count as usize * 32).await?;
    let digests: Vec<[u8; 32]> = raw
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32-byte chunks"))
        .collect();
    if chunks_root(&digests) != file.chunks {
        return Err(Error::msg("its chunk list does not match the index's"));
    }
    Ok(digests)
}

/// One peer's worker: fetch runs until none are left or the peer fails.
fn work(
    shared: &Shared,
    hit: &Hit,
    mut conn: Connection,
    to_sequencer: &mpsc::Sender<(u64, Option<Vec<u8>>)>,
) -> Result<()> {
    let size = shared.job.file.size;
    loop {
        if shared.job.cancel.is_cancelled() {
            return Ok(());
        }
        let Some(run) = shared.scheduler().next_run() else {
            return Ok(());
        };
        let offset = run.start * shared.chunk_size;
        let length = (run.end * shared.chunk_size).min(size) - offset;
        let request = PeerRequest::Get {
            name: shared.job.file.name.clone(),
            offset,
            length: Some(length),
        };
        let answer = smol::block_on(async {
            conn.send(&request).await?;
            conn.recv_reply::<PeerResponse>().await
        });
        match answer {
            Ok(PeerResponse::Sending {
                size: now,
                offset: o,
                length: l,
            }) if now == size && o == offset && l == length => {}
            Ok(PeerResponse::Sending { size: now, .. }) if now != size => {
                shared.scheduler().give_back(run);
                return Err(Error::msg(format!(
                    "its copy is now {now} bytes but the index says {size}: it changed after it \
                     was registered; try another peer"
                )));
            }
            Ok(PeerResponse::Sending {
                offset: o,
                length: l,
                ..
            }) => {
                shared.scheduler().give_back(run);
                return Err(Error::msg(format!(
                    "it offered {l} bytes at offset {o} when asked for {length} at {offset}"
                )));
            }
            Ok(PeerResponse::Error { message, .. }) => {
                shared.scheduler().give_back(run);
                return Err(Error::msg(protocol::clean_text(&message)));
            }
            Ok(other) => {
                shared.scheduler().give_back(run);
                return Err(Error::Malformed(format!("answered out of turn: {other:?}")));
            }
            Err(e) => {
                shared.scheduler().give_back(run);
                return Err(e);
            }
        }
        let limits = conn.limits();
        // Bytes of the run may already have arrived with its `sending` frame.
        let (socket, received) = conn.into_blocking()?;
        let mut socket = std::io::Cursor::new(received).chain(socket);
        let mut stopped_early = false;
        for i in run.clone() {
            if shared.job.cancel.is_cancelled() || shared.scheduler().is_done(i) {
                // Another peer won this chunk in the end game, or we are stopping: the
                // rest of the run is unwanted, so drop the connection.
                shared.scheduler().give_back(i..run.end);
                stopped_early = true;
                break;
            }
            let mut buf = shared.buffer();
            let len = shared.chunk_len(i) as usize;
            if let Err(e) = receive(&mut socket, &mut buf[..len], shared) {
                shared.recycle(buf);
                shared.scheduler().give_back(i..run.end);
                return Err(e);
            }
            if shared.verify_chunks
                && Sha256::digest(&buf[..len]).as_slice() != shared.digests[i as usize]
            {
                shared.recycle(buf);
                shared
                    .job
                    .status
                    .refetched
                    .fetch_add(len as u64, Ordering::Relaxed);
                shared.scheduler().give_back(i..run.end);
                warn!(
                    "{} sent a bad chunk {i} of {}; dropping it",
                    peer_name(hit),
                    shared.job.file.name
                );
                return Err(Error::msg(format!("sent a corrupt chunk ({i})")));
            }
            write_chunk(&shared.part, &buf[..len], i * shared.chunk_size)
                .context(|| format!("writing {}", shared.job.file.name))?;
            if shared.scheduler().complete(i) {
                shared
                    .job
                    .status
                    .done
                    .fetch_add(len as u64, Ordering::Relaxed);
                shared
                    .contributors
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(hit.peer_id);
                let _ = to_sequencer.send((i, Some(buf)));
            } else {
                shared
                    .job
                    .status
                    .duplicated
                    .fetch_add(len as u64, Ordering::Relaxed);
                shared.recycle(buf);
            }
        }
        if stopped_early {
            if shared.job.cancel.is_cancelled() {
                return Ok(());
            }
            conn = smol::block_on(hello(hit, limits))?;
        } else {
            let (rest, socket) = socket.into_inner();
            let unread = rest.get_ref()[rest.position() as usize..].to_vec();
            conn = Connection::with_received(
                Async::new(socket).context(|| "resuming the connection".into())?,
                limits,
                unread,
            )?;
        }
    }
}

/// Largest single write to the part file: on this kind of virtual machine, writes of a
/// megabyte and more into the page cache cost several times what smaller ones do.
const WRITE_PIECE: usize = 256 * 1024;

fn write_chunk(part: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    for (i, piece) in data.chunks(WRITE_PIECE).enumerate() {
        part.write_all_at(piece, offset + (i * WRITE_PIECE) as u64)?;
    }
    Ok(())
}

/// Fill `buf` from the socket, within the bandwidth limit.
fn receive(socket: &mut impl Read, buf: &mut [u8], shared: &Shared) -> Result<()> {
    let limit = &shared.job.bandwidth;
    let mut filled = 0;
    while filled < buf.len() {
        let end = buf.len().min(filled + limit.block(buf.len()));
        match socket.read(&mut buf[filled..end]) {
            Ok(0) => return Err(Error::Closed("the peer part-way through".into())),
            Ok(n) => {
                filled += n;
                (shared.job.progress)(n as u64);
                limit.throttle(n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(Error::Timeout("waiting for data: the peer stalled".into()));
            }
            Err(e) => return Err(Error::io("receiving", e)),
        }
    }
    Ok(())
}

/// Feed chunks to the whole-file hash in order; returns the hex digest when every
/// chunk was hashed. Saves the resume state as it goes.
fn sequence(
    shared: &Shared,
    mut resume: ResumeState,
    state_path: &Path,
    from_workers: mpsc::Receiver<(u64, Option<Vec<u8>>)>,
) -> Result<Option<String>> {
    let count = protocol::chunk_count(shared.job.file.size);
    let already: Vec<bool> = resume.received.clone();
    let mut hasher = resume.hasher();
    let mut next = resume.hashed;
    let mut stash: BTreeMap<u64, Option<Vec<u8>>> = BTreeMap::new();
    let mut stashed = 0u64;
    let save = |resume: &mut ResumeState, hashed: u64, hasher: &Sha256| {
        resume.save(
            state_path,
            &shared.part,
            shared.scheduler().received(),
            hashed,
            hasher,
        );
    };
    let mut last_save = Instant::now();
    let mut dirty = false;
    let mut scratch = Vec::new();
    loop {
        // Hash every chunk now available in order: from the stash, or from disk when it
        // was received before this run or left there to spare memory.
        while next < count {
            let data = match stash.remove(&next) {
                Some(Some(buf)) => {
                    stashed -= shared.chunk_len(next);
                    Some(buf)
                }
                Some(None) => None,
                None if already[next as usize] => None,
                None => break,
            };
            let len = shared.chunk_len(next) as usize;
            match data {
                Some(buf) => {
                    hasher.update(&buf[..len]);
                    shared.recycle(buf);
                }
                None => {
                    scratch.resize(len, 0);
                    shared
                        .part
                        .read_exact_at(&mut scratch, next * shared.chunk_size)
                        .context(|| "reading back the part file".into())?;
                    hasher.update(&scratch);
                }
            }
            next += 1;
        }
        if dirty && last_save.elapsed() >= SAVE_EVERY {
            save(&mut resume, next, &hasher);
            last_save = Instant::now();
            dirty = false;
        }
        // Wake up now and then even when no chunk comes (a stalled peer), so that what
        // did arrive is recorded before anything can kill us.
        let (i, buf) = match from_workers.recv_timeout(SAVE_EVERY) {
            Ok(message) => message,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        dirty = true;
        let keep = buf.filter(|_| stashed + shared.chunk_len(i) <= STASH);
        if keep.is_some() {
            stashed += shared.chunk_len(i);
        }
        stash.insert(i, keep);
    }
    save(&mut resume, next, &hasher);
    let digest = (next == count).then(|| to_hex(&hasher.finalize()));
    debug!(
        "hashed {next} of {count} chunks of {}",
        shared.job.file.name
    );
    Ok(digest)
}

/// The whole file arrived but its SHA-256 is wrong: find the bad chunks with the chunk
/// list, forget them (keeping the good ones for a resume), and say so.
fn locate_damage(shared: &Shared, part_path: &Path, state_path: &Path, digest: &str) -> Error {
    let count = protocol::chunk_count(shared.job.file.size);
    let mut buf = vec![0; shared.chunk_size as usize];
    let mut received = vec![true; count as usize];
    let mut bad = 0;
    for i in 0..count {
        let len = shared.chunk_len(i) as usize;
        let ok = shared
            .part
            .read_exact_at(&mut buf[..len], i * shared.chunk_size)
            .is_ok()
            && Sha256::digest(&buf[..len]).as_slice() == shared.digests[i as usize];
        if !ok {
            received[i as usize] = false;
            bad += 1;
        }
    }
    if bad == 0 {
        // The index lied about the contents: nothing here is worth resuming.
        let _ = std::fs::remove_file(part_path);
        let _ = std::fs::remove_file(state_path);
    } else {
        let mut resume = ResumeState::fresh(&shared.job.file);
        resume.save(state_path, &shared.part, received, 0, &Sha256::new());
    }
    let peers: Vec<String> = shared.job.sources.iter().map(peer_name).collect();
    let outcome = match bad {
        0 => "every chunk matches the peer's chunk list, so the index's checksum is wrong; nothing was kept".to_owned(),
        bad if bad == count => format!("all {count} chunks were corrupt and were discarded"),
        bad => format!(
            "{bad} of {count} chunks were corrupt and were discarded; the good ones are kept, so `get` again (from another peer) fetches only those"
        ),
    };
    Error::ChecksumMismatch {
        name: shared.job.file.name.clone(),
        peer: peers.join(", "),
        expected: shared.job.file.sha256.clone(),
        actual: digest.to_owned(),
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_end_game_duplicates_only_what_is_in_flight() {
        let mut s = Scheduler {
            chunks: vec![Chunk::Pending; 6],
            run: 4,
        };
        assert_eq!(s.next_run(), Some(0..4));
        assert_eq!(s.next_run(), Some(4..6));
        // Nothing pending: a second peer duplicates a chunk still in flight.
        assert_eq!(s.next_run(), Some(0..1));
        assert!(s.complete(0));
        assert!(!s.complete(0), "the slower copy is not counted twice");
        s.give_back(1..4);
        assert_eq!(s.next_run(), Some(1..4));
        for i in 1..6 {
            s.complete(i);
        }
        assert!(s.all_done());
        assert_eq!(s.next_run(), None);
    }

    #[test]
    fn part_names_stay_short() {
        let long = "é".repeat(120);
        let name = part_name(&long, &"a".repeat(64));
        assert!(name.len() + ".state.tmp".len() <= 255, "{}", name.len());
        assert!(name.ends_with(".aaaaaaaaaaaaaaaa.napster-part"));
    }
}
