//! The download queue kept in the downloads folder (`get -b`): what to fetch, from which
//! index, into which folder, and how far each download got, so that a napster started
//! again in the same place shows the queue and resumes it. The bytes themselves are in
//! each download's part file (`part_file`): the queue only says which to resume.
//!
//! One process owns a folder's queue at a time: it holds a lock on a file beside it.
//! The queue is written to a temporary file and renamed, so a crash leaves the old queue
//! or the new one.

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::disk::Dir;
use crate::error::{Error, IoContext, Result};
use crate::protocol::{self, FileEntry};

pub use crate::download::place::QUEUE_FILE;
use crate::download::place::{check_folder, safe_file_name};

/// The lock the owner of a folder's queue holds.
const LOCK_FILE: &str = ".napster-queue.lock";

/// Most bytes of a queue file read: far more than any queue a person keeps.
const MAX_QUEUE_BYTES: u64 = 64 << 20;

/// Where a queued download stands, as kept across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Waiting for its turn (or running when the queue was saved).
    Queued,
    /// Stopped by `pause`, its part file kept.
    Paused,
    /// Saved; the text says where.
    Done(String),
    /// Stopped by an error; the text says why.
    Failed(String),
    /// Stopped by `cancel`, its part file removed.
    Cancelled,
}

impl Stage {
    /// Whether it still has work to do (queued, running or paused).
    pub fn is_open(&self) -> bool {
        matches!(self, Stage::Queued | Stage::Paused)
    }
}

/// One download of the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// Its number in `transfers`.
    pub number: u64,
    /// The file: its contents (size, SHA-256, chunk list) and the name it is saved as.
    pub file: FileEntry,
    /// The folder below the downloads folder it is saved in (`get -r`), or empty.
    #[serde(default)]
    pub folder: PathBuf,
    /// Only from this peer, when one was named.
    #[serde(default)]
    pub peer: Option<u64>,
    /// The index servers to find its peers with.
    pub index: Vec<SocketAddr>,
    /// Where it stands.
    pub stage: Stage,
}

/// The queue file of one downloads folder, locked by this process.
pub struct QueueFile {
    dir: PathBuf,
    _lock: File,
}

impl QueueFile {
    /// Take the queue of the downloads folder `dir` (made if need be) and read it;
    /// refused while another napster holds it.
    pub fn open(dir: &Path) -> Result<(QueueFile, Vec<Queued>)> {
        std::fs::create_dir_all(dir)
            .context(|| format!("cannot use the downloads folder {}", dir.display()))?;
        let folder = Dir::open(dir)
            .context(|| format!("cannot use the downloads folder {}", dir.display()))?;
        let lock = folder
            .create(LOCK_FILE)
            .context(|| format!("cannot lock the download queue in {}", dir.display()))?;
        if lock.try_lock().is_err() {
            return Err(Error::msg(format!(
                "another napster keeps the download queue in {} right now; its downloads \
                 are not this one's to run (use another [peer] downloads folder to run \
                 both)",
                dir.display()
            )));
        }
        let queue = QueueFile {
            dir: dir.to_owned(),
            _lock: lock,
        };
        Ok((queue, read(dir)))
    }

    /// Write `entries` as the queue.
    pub fn save(&self, entries: &[Queued]) {
        let saved = Dir::open(&self.dir).and_then(|folder| {
            let temp = format!("{QUEUE_FILE}.tmp");
            let text = serde_json::to_string_pretty(entries).expect("the queue serializes");
            let _ = folder.remove(&temp);
            let mut file = folder.create_new(&temp)?;
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_data()?;
            folder.rename(&temp, QUEUE_FILE)
        });
        if let Err(e) = saved {
            warn!(
                "cannot save the download queue in {}: {e}",
                self.dir.display()
            );
        }
    }
}

/// The queue kept in `dir`, without taking it (what `transfers` shows while another
/// napster runs it); an unreadable queue is reported and left alone.
pub fn read(dir: &Path) -> Vec<Queued> {
    let opened = Dir::open(dir).and_then(|folder| folder.open_file(QUEUE_FILE));
    let mut text = String::new();
    match opened {
        Ok(file) => {
            if let Err(e) = file.take(MAX_QUEUE_BYTES).read_to_string(&mut text) {
                warn!("cannot read the download queue in {}: {e}", dir.display());
                return Vec::new();
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!("cannot read the download queue in {}: {e}", dir.display());
            return Vec::new();
        }
    }
    match serde_json::from_str::<Vec<Queued>>(&text) {
        Ok(entries) => entries.into_iter().map(|q| checked(dir, q)).collect(),
        Err(e) => {
            warn!(
                "ignoring the download queue in {}: it is not one napster wrote ({e})",
                dir.display()
            );
            Vec::new()
        }
    }
}

/// The entry as read, or, when its folder or name would lead outside `dir`, stopped
/// as failed with the reason: a queue file is only text, and whoever can write it
/// chooses both. The folder meets the same check as every folder a download is
/// written in (`place::check_folder`); the name, the rule of a name from an index.
fn checked(dir: &Path, mut q: Queued) -> Queued {
    if !q.stage.is_open() {
        return q;
    }
    let name_problem = || {
        protocol::check_entry(&q.file).err().or_else(|| {
            (safe_file_name(&q.file.name).ok().as_ref() != Some(&q.file.name)).then(|| {
                format!(
                    "the file name \"{}\" is not a plain file name",
                    protocol::visible(&protocol::truncate(&q.file.name))
                )
            })
        })
    };
    let problem = match check_folder(dir, &q.folder) {
        Err(e) => Some(e.to_string()),
        Ok(_) => name_problem(),
    };
    if let Some(problem) = problem {
        let why = format!("refused when the queue was read: {problem}");
        warn!(
            "download {} in the queue in {}: {why}; it is not resumed",
            q.number,
            dir.display()
        );
        q.stage = Stage::Failed(why);
    }
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_survives_a_restart_and_has_one_owner() {
        let dir = tempfile::tempdir().unwrap();
        let downloads = dir.path().join("downloads");
        let (queue, entries) = QueueFile::open(&downloads).unwrap();
        assert!(entries.is_empty());
        let entry = Queued {
            number: 1,
            file: FileEntry {
                name: "a.ogg".into(),
                size: 3,
                sha256: "1".repeat(64),
                chunks: "2".repeat(64),
            },
            folder: "live".into(),
            peer: Some(7),
            index: vec!["127.0.0.1:9".parse().unwrap()],
            stage: Stage::Paused,
        };
        queue.save(std::slice::from_ref(&entry));
        let second = QueueFile::open(&downloads).err().unwrap().to_string();
        assert!(second.contains("another napster keeps"), "{second}");
        assert_eq!(read(&downloads), vec![entry.clone()]);
        drop(queue);
        let (_queue, entries) = QueueFile::open(&downloads).unwrap();
        assert_eq!(entries, vec![entry]);
    }
}
