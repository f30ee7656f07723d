//! The downloader: fetch a file from a peer into the downloads folder, hashing while
//! receiving, writing to a temporary file that takes its final name only once its
//! SHA-256 matches the index's.
//!
//! Receiving and writing happen on one thread while another hashes, so a download runs
//! at the speed of the slower of the two rather than of their sum.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tracing::{debug, info};

use crate::error::{Error, IoContext, Result};
use crate::peer::share::{hash_file, to_hex};
use crate::protocol::{self, Connection, Hit, Limits, PeerRequest, PeerResponse};

/// Size of each buffer in flight between the receiving and the hashing thread.
const CHUNK: usize = 1 << 20;

/// Buffers in flight; enough to keep both threads busy.
const DEPTH: usize = 8;

/// Longest file name written to disk, in bytes.
const MAX_FILE_NAME: usize = 255;

/// Suffix of temporary files; scans skip them.
pub const PART_SUFFIX: &str = ".napster-part";

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
}

/// Set to stop a download; the partial file is removed.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// Ask the download to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The name a file from the network may have on disk: its base name without control
/// characters, or an error when nothing safe is left.
pub fn safe_file_name(name: &str) -> Result<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut clean: String = base.chars().filter(|c| !c.is_control()).collect();
    while clean.len() > MAX_FILE_NAME {
        clean.pop();
    }
    if clean.is_empty() || clean == "." || clean == ".." || clean.ends_with(PART_SUFFIX) {
        return Err(Error::msg(format!(
            "refusing to save {:?}: no safe file name is left in it",
            protocol::truncate(name)
        )));
    }
    Ok(clean)
}

/// Download `hit` into `dir`, telling `progress` of every block received.
pub async fn download(
    hit: &Hit,
    dir: &Path,
    limits: Limits,
    cancel: Cancel,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Downloaded> {
    let file_name = safe_file_name(&hit.file.name)?;
    std::fs::create_dir_all(dir)
        .context(|| format!("cannot use the downloads folder {}", dir.display()))?;
    let removed = clean_leftovers(dir);
    if removed > 0 {
        info!("removed {removed} partial download(s) left by processes that died");
    }
    let peer = format!("peer {} ({})", hit.peer_id, hit.addr);
    let mut conn = Connection::connect(hit.addr, limits)
        .await
        .map_err(|e| Error::msg(format!("{peer} is unreachable: {e}")))?;
    conn.send(&PeerRequest::Hello {
        version: protocol::VERSION,
    })
    .await?;
    match conn.recv_reply().await? {
        PeerResponse::Welcome { .. } => {}
        PeerResponse::Error { message, .. } => {
            return Err(Error::msg(format!("{peer} refused us: {message}")));
        }
        other => return Err(unexpected(&peer, &other)),
    }
    conn.send(&PeerRequest::Get {
        name: hit.file.name.clone(),
        offset: 0,
        length: None,
    })
    .await?;
    let length = match conn.recv_reply().await? {
        PeerResponse::Sending { size, length, .. } if size == hit.file.size => length,
        PeerResponse::Sending { size, .. } => {
            return Err(Error::msg(format!(
                "{peer}'s copy of {} is {size} bytes but the index says {}: it changed after \
                 it was registered; try another peer",
                hit.file.name, hit.file.size
            )));
        }
        PeerResponse::Error { message, .. } => {
            return Err(Error::msg(format!("{peer} refused: {message}")));
        }
        other => return Err(unexpected(&peer, &other)),
    };
    let socket = conn.into_blocking()?;
    let temp = temp_path(dir, &file_name);
    let started = Instant::now();
    let received = {
        let temp = temp.clone();
        let cancel = cancel.clone();
        smol::unblock(move || receive(socket, &temp, length, &cancel, &*progress)).await
    };
    let result = received
        .map_err(|e| match e {
            Error::Cancelled => Error::Cancelled,
            Error::Closed(_) => Error::msg(format!(
                "{peer} stopped sending {} part-way; run get again",
                hit.file.name
            )),
            other => Error::msg(format!(
                "downloading {} from {peer}: {other}",
                hit.file.name
            )),
        })
        .and_then(|actual| {
            if actual == hit.file.sha256 {
                Ok(())
            } else {
                Err(Error::ChecksumMismatch {
                    name: hit.file.name.clone(),
                    peer: peer.clone(),
                    expected: hit.file.sha256.clone(),
                    actual,
                })
            }
        });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    let elapsed = started.elapsed();
    let placed = place(&temp, dir, &file_name, &hit.file.sha256, length);
    let _ = std::fs::remove_file(&temp);
    let (path, already_there) = placed?;
    debug!(
        "downloaded {} ({length} bytes) from {peer} in {:.3}s",
        hit.file.name,
        elapsed.as_secs_f64()
    );
    Ok(Downloaded {
        path,
        size: length,
        elapsed,
        already_there,
    })
}

/// The peers to download `name` from (only `peer` when given), best first, or why
/// there are none: nobody shares it, `peer` does not, or peers share different contents.
pub fn sources(name: &str, peer: Option<u64>, hits: Vec<Hit>) -> Result<Vec<Hit>> {
    if hits.is_empty() {
        return Err(Error::msg(format!(
            "no peer shares {name:?}; `search` finds names that match part of it"
        )));
    }
    let ids = || {
        hits.iter()
            .map(|h| h.peer_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(peer) = peer {
        return match hits.iter().find(|h| h.peer_id == peer) {
            Some(hit) => Ok(vec![hit.clone()]),
            None => Err(Error::msg(format!(
                "peer {peer} does not share {name:?}; it is shared by peer(s) {}",
                ids()
            ))),
        };
    }
    let first = &hits[0].file.sha256;
    if hits.iter().any(|h| &h.file.sha256 != first) {
        let versions: Vec<String> = hits
            .iter()
            .map(|h| format!("peer {} has sha256 {}", h.peer_id, &h.file.sha256[..12]))
            .collect();
        return Err(Error::msg(format!(
            "peers share different contents under {name:?} ({}); choose one with `get {name} <peer>`",
            versions.join(", ")
        )));
    }
    Ok(hits)
}

fn unexpected(peer: &str, response: &PeerResponse) -> Error {
    Error::Malformed(format!("{peer} answered out of turn: {response:?}"))
}

/// A new hidden temporary file name, tagged with our process ID so that leftovers of a
/// process that died can be told from downloads in progress.
fn temp_path(dir: &Path, file_name: &str) -> PathBuf {
    let tag: u32 = rand::random();
    let pid = std::process::id();
    dir.join(format!(".{file_name}.{pid}-{tag:08x}{PART_SUFFIX}"))
}

/// Remove temporary files in `dir` left by downloading processes that no longer run;
/// returns how many. Files of live processes (another download) are left alone.
pub fn clean_leftovers(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(PART_SUFFIX) else {
            continue;
        };
        let Some((_, tag)) = stem.rsplit_once('.') else {
            continue;
        };
        let Some(pid) = tag.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists();
        if !alive && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Receive `length` bytes into a new file at `temp`; returns their SHA-256.
fn receive(
    mut socket: TcpStream,
    temp: &Path,
    length: u64,
    cancel: &Cancel,
    progress: &dyn Fn(u64),
) -> Result<String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .context(|| format!("creating {}", temp.display()))?;
    let (to_hasher, hasher_rx) = mpsc::sync_channel::<(Vec<u8>, usize)>(DEPTH);
    let (to_pool, pool) = mpsc::sync_channel::<Vec<u8>>(DEPTH);
    for _ in 0..DEPTH {
        to_pool.send(vec![0; CHUNK]).expect("the pool has room");
    }
    let hasher = std::thread::spawn(move || {
        let mut hasher = Sha256::new();
        for (buf, n) in hasher_rx {
            hasher.update(&buf[..n]);
            // The receiver may have stopped; then the buffer is simply dropped.
            let _ = to_pool.send(buf);
        }
        to_hex(&hasher.finalize())
    });
    let written = write_chunks(
        &mut socket,
        &mut file,
        length,
        cancel,
        progress,
        &pool,
        &to_hasher,
    );
    drop(to_hasher);
    let digest = hasher
        .join()
        .map_err(|_| Error::msg("the hashing thread failed"))?;
    written?;
    Ok(digest)
}

fn write_chunks(
    socket: &mut TcpStream,
    file: &mut File,
    length: u64,
    cancel: &Cancel,
    progress: &dyn Fn(u64),
    pool: &mpsc::Receiver<Vec<u8>>,
    to_hasher: &mpsc::SyncSender<(Vec<u8>, usize)>,
) -> Result<()> {
    let mut left = length;
    while left > 0 {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let mut buf = pool
            .recv()
            .map_err(|_| Error::msg("the hashing thread stopped"))?;
        let want = left.min(CHUNK as u64) as usize;
        let mut filled = 0;
        while filled < want {
            match socket.read(&mut buf[filled..want]) {
                Ok(0) => return Err(Error::Closed("the peer".into())),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("receiving", e)),
            }
        }
        file.write_all(&buf[..filled])
            .context(|| "writing the download".into())?;
        left -= filled as u64;
        progress(filled as u64);
        to_hasher
            .send((buf, filled))
            .map_err(|_| Error::msg("the hashing thread stopped"))?;
    }
    Ok(())
}

/// Give the verified `temp` its final name without ever replacing a different file:
/// an identical file already there is kept, a different one makes `name (1).ext`.
fn place(
    temp: &Path,
    dir: &Path,
    file_name: &str,
    sha256: &str,
    size: u64,
) -> Result<(PathBuf, bool)> {
    let (stem, ext) = match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem.to_owned(), format!(".{ext}")),
        _ => (file_name.to_owned(), String::new()),
    };
    for n in 0..1000 {
        let candidate = if n == 0 {
            dir.join(file_name)
        } else {
            dir.join(format!("{stem} ({n}){ext}"))
        };
        // A hard link fails rather than replace an existing file, atomically.
        match std::fs::hard_link(temp, &candidate) {
            Ok(()) => return Ok((candidate, false)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if same_content(&candidate, sha256, size) {
                    return Ok((candidate, true));
                }
            }
            Err(_) if !candidate.exists() => {
                // File systems without hard links: rename, checked just above.
                std::fs::rename(temp, &candidate)
                    .context(|| format!("moving the download to {}", candidate.display()))?;
                return Ok((candidate, false));
            }
            Err(e) => {
                return Err(Error::io(format!("saving {}", candidate.display()), e));
            }
        }
    }
    Err(Error::msg(format!(
        "too many different files named like {file_name} in {}",
        dir.display()
    )))
}

fn same_content(path: &Path, sha256: &str, size: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
        && hash_file(path, &|_| {}).is_ok_and(|(_, hex)| hex == sha256)
}
