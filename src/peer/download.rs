//! The downloader's front: which peers to fetch a file from, the name it may have on
//! disk, and giving the verified file its final name without replacing anything. The
//! transfer itself is [`crate::peer::transfer`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::debug;

use crate::error::{Error, IoContext, Result};
use crate::peer::limit::RateLimit;
use crate::peer::share::hash_file;
use crate::peer::transfer::{self, Job};
use crate::protocol::{self, Hit, Limits};

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
    /// Bytes an earlier, interrupted download had already fetched.
    pub resumed: u64,
    /// Peer IDs of the peers that sent data.
    pub peers: Vec<u64>,
    /// Bytes fetched twice: bad chunks, and end-game duplicates.
    pub refetched: u64,
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
    // Names of napster's own part and state files are never download targets.
    if clean.is_empty() || clean == "." || clean == ".." || clean.contains(PART_SUFFIX) {
        return Err(Error::msg(format!(
            "refusing to save {:?}: no safe file name is left in it",
            protocol::truncate(name)
        )));
    }
    Ok(clean)
}

/// Download `hit` into `dir` from that one peer, telling `progress` of every block.
pub async fn download(
    hit: &Hit,
    dir: &Path,
    limits: Limits,
    cancel: Cancel,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Downloaded> {
    let job = Job {
        file: hit.file.clone(),
        sources: vec![hit.clone()],
        dir: dir.to_owned(),
        limits,
        cancel,
        bandwidth: Arc::new(RateLimit::new(0)),
        status: Arc::default(),
        progress,
    };
    fetch(job).await
}

/// Run a download job on a blocking thread.
pub async fn fetch(job: Job) -> Result<Downloaded> {
    let name = job.file.name.clone();
    let downloaded = smol::unblock(move || transfer::run(job)).await?;
    debug!(
        "downloaded {name} ({} bytes, {} resumed) from {} peer(s) in {:.3}s",
        downloaded.size,
        downloaded.resumed,
        downloaded.peers.len(),
        downloaded.elapsed.as_secs_f64()
    );
    Ok(downloaded)
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

/// Give the verified `temp` its final name without ever replacing a different file:
/// an identical file already there is kept, a different one makes `name (1).ext`.
pub fn place(
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

/// Whether `path` is a file with exactly this size and SHA-256.
pub fn same_content(path: &Path, sha256: &str, size: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
        && hash_file(path, &|_| {}).is_ok_and(|d| d.sha256 == sha256)
}
