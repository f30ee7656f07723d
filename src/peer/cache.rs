//! The hash cache: what hashing a file gave (and the media tags read from it), keyed by what identifies its contents on
//! disk, so that a peer restarting with 100 000 unchanged files reads none of them.
//!
//! The key is the file's device, inode, size, modification time and status-change time
//! (ctime), all to the nanosecond. Writing a file changes its ctime, which no user can
//! set back, so a changed file never meets its old entry.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::digest::FileDigest;
use crate::protocol::Tags;

/// Version of the cache file's format. 2 added media tags: a cache of format 1 is read
/// as empty, so that every audio file is read for its tags once.
const FORMAT: u32 = 2;

/// What identifies a file's contents on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    /// The stamp of a file's metadata (following symlinks).
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        }
    }

    /// Which file it is: device and inode.
    pub fn identity(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Nanoseconds since the epoch of the later of its modification and change times.
    pub fn changed_ns(&self) -> i128 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    stamp: Stamp,
    sha256: String,
    /// The chunk digests, hex, back to back.
    chunks: String,
    /// The media tags read from it, if it is an audio file that has some.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tags: Option<Tags>,
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    files: Vec<(PathBuf, Cached)>,
}

/// Digests by path, valid while the file's [`Stamp`] is unchanged.
#[derive(Debug, Default)]
pub struct HashCache {
    path: Option<PathBuf>,
    entries: HashMap<PathBuf, Cached>,
}

impl HashCache {
    /// A cache kept in memory only.
    pub fn in_memory() -> Self {
        HashCache::default()
    }

    /// The cache saved at `path` (empty if there is none or it cannot be read).
    pub fn load(path: &Path) -> Self {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|bytes| match serde_json::from_slice::<OnDisk>(&bytes) {
                Ok(disk) if disk.format == FORMAT => Some(disk.files.into_iter().collect()),
                Ok(_) => None,
                Err(e) => {
                    warn!("ignoring the hash cache {}: {e}", path.display());
                    None
                }
            })
            .unwrap_or_default();
        HashCache {
            path: Some(path.to_owned()),
            entries,
        }
    }

    /// Number of files remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The digest of `path` if it was hashed with exactly this stamp.
    pub fn get(&self, path: &Path, stamp: &Stamp) -> Option<FileDigest> {
        let cached = self.entries.get(path).filter(|c| c.stamp == *stamp)?;
        let chunks = hex::decode(&cached.chunks)
            .ok()?
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunks"))
            .collect();
        Some(FileDigest {
            size: stamp.size,
            sha256: cached.sha256.clone(),
            chunks,
        })
    }

    /// The media tags of `path` if it was read with exactly this stamp and had some.
    pub fn tags(&self, path: &Path, stamp: &Stamp) -> Option<Tags> {
        let cached = self.entries.get(path).filter(|c| c.stamp == *stamp)?;
        cached.tags.clone()
    }

    /// Remember what hashing `path` with `stamp` gave, and the tags read from it.
    pub fn put(&mut self, path: PathBuf, stamp: Stamp, digest: &FileDigest, tags: Option<Tags>) {
        let cached = Cached {
            stamp,
            sha256: digest.sha256.clone(),
            chunks: hex::encode(digest.chunks.concat()),
            tags,
        };
        self.entries.insert(path, cached);
    }

    /// Forget the files under `root` that `keep` does not want.
    pub fn prune(&mut self, root: &Path, keep: impl Fn(&Path) -> bool) {
        self.entries
            .retain(|path, _| !path.starts_with(root) || keep(path));
    }

    /// Write the cache to its file (atomically: a temporary file renamed over it).
    pub fn save(&self) {
        let Some(path) = &self.path else { return };
        let disk = OnDisk {
            format: FORMAT,
            files: self
                .entries
                .iter()
                .map(|(p, c)| (p.clone(), c.clone()))
                .collect(),
        };
        let temp = path.with_extension("tmp");
        let written = serde_json::to_vec(&disk)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&temp, bytes))
            .and_then(|()| std::fs::rename(&temp, path));
        if let Err(e) = written {
            warn!("cannot save the hash cache {}: {e}", path.display());
        }
    }
}
