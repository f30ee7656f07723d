//! The files a peer shares ([`Share`]): what the index is told, what changed since the
//! last scan, and opening a file for a downloader only when it was registered and is
//! still the very file that was hashed. Scanning and hashing the folders is [`super::scan`]'s.
//!
//! The rule for symlinks: a scan follows a symlink only when it leads inside its folder,
//! and records the path it resolved to. Hashing and every request then open that
//! resolved path beneath the folder's handle through no symlink at all ([`Dir`]), and
//! take only the very file (device and inode) the scan saw. Whatever is swapped in
//! afterwards (a symlink out, a FIFO, another file) is refused until a scan looks at it;
//! a symlink re-pointed inside the folder keeps serving the file it led to at scan time.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::client::Changes;
use crate::disk::{self, Dir};
use crate::peer::cache::Stamp;
use crate::protocol::{self, FileEntry};

pub use super::ignore::Ignore;

/// One shared file.
#[derive(Debug, Clone)]
pub struct SharedFile {
    /// What the index is told.
    pub entry: FileEntry,
    /// Where it lies on disk.
    pub path: PathBuf,
    /// Where it really lies, relative to its shared folder, with every symlink resolved
    /// (at scan time): what a request opens, through no symlink at all.
    pub resolved: PathBuf,
    /// SHA-256 of each chunk, as computed when the file was hashed.
    pub chunks: Vec<[u8; 32]>,
    /// What the file looked like when it was hashed.
    pub stamp: Stamp,
    /// Which shared folder it is in.
    pub root: usize,
}

/// Shared folders and the files registered from them.
#[derive(Debug)]
pub struct Share {
    pub(super) roots: Vec<PathBuf>,
    pub(super) files: BTreeMap<String, SharedFile>,
}

impl Share {
    /// The canonical path of the first shared folder.
    pub fn root(&self) -> &Path {
        &self.roots[0]
    }

    /// Every shared folder, canonical.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// What the index is told.
    pub fn entries(&self) -> Vec<FileEntry> {
        self.files.values().map(|f| f.entry.clone()).collect()
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether nothing is shared.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Sum of the files' sizes.
    pub fn bytes(&self) -> u64 {
        self.files.values().map(|f| f.entry.size).sum()
    }

    /// Keep sharing `older`'s entries for `names` (files changing on disk right now:
    /// until they settle, what was announced stays announced).
    pub fn carry_over(&mut self, older: &Share, names: &[String]) {
        for name in names {
            if let Some(file) = older.files.get(name)
                && older.roots.get(file.root) == self.roots.get(file.root)
            {
                self.files.insert(name.clone(), file.clone());
            }
        }
    }

    /// Leave out the files `drop` names (by name or by path).
    pub fn without(mut self, drop: impl Fn(&SharedFile) -> bool) -> Share {
        self.files.retain(|_, f| !drop(f));
        self
    }

    /// What the index must be told to go from `self` to `newer`.
    pub fn changes_to(&self, newer: &Share) -> Changes {
        let upsert = newer
            .files
            .values()
            .filter(|f| {
                self.files
                    .get(&f.entry.name)
                    .is_none_or(|old| old.entry != f.entry)
            })
            .map(|f| f.entry.clone())
            .collect();
        let removed = self
            .files
            .keys()
            .filter(|name| !newer.files.contains_key(*name))
            .cloned()
            .collect();
        Changes { upsert, removed }
    }

    /// Whether `name` is shared as the file with this stamp.
    pub fn has(&self, name: &str, stamp: &Stamp) -> bool {
        self.files.get(name).is_some_and(|f| f.stamp == *stamp)
    }

    /// Whether a shared file lies at `path`.
    pub fn contains_path(&self, path: &Path) -> bool {
        self.files.values().any(|f| f.path == path)
    }

    /// The chunk digests of a registered file, as raw bytes, with its registered size.
    pub fn chunk_list(&self, name: &str) -> Option<(u64, Vec<u8>)> {
        let shared = self.files.get(name)?;
        Some((shared.entry.size, shared.chunks.concat()))
    }

    /// Open a registered file for sending, with its current size.
    ///
    /// Refuses names the protocol forbids and names never registered. The file is opened
    /// at the path it resolved to when it was scanned, beneath its folder's handle,
    /// through no symlink at all and without blocking (see [`Dir::open_beneath`]); and the
    /// opened handle must be a regular file and the very file (device and inode) that
    /// was hashed. So a symlink, FIFO or other file swapped in after registering is
    /// refused until the next scan looks at it, whatever the timing. Blocking: call it
    /// off the executor's threads.
    pub fn open(&self, name: &str) -> std::result::Result<(File, u64), String> {
        if let Some(problem) = protocol::name_problem(name) {
            return Err(format!("the file name {problem}"));
        }
        let shared = self
            .files
            .get(name)
            .ok_or_else(|| format!("{:?} is not shared here", protocol::truncate(name)))?;
        let opened = Dir::open(folder_of(&self.roots[shared.root]))
            .and_then(|dir| dir.open_beneath(&shared.resolved));
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(format!("{name} is no longer on disk"));
            }
            Err(e) => {
                warn!("refusing {name}: {e}");
                return Err(format!("{name} cannot be sent: {e}"));
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        if disk::identity(&meta) != shared.stamp.identity() {
            warn!("refusing {name}: another file took its place after it was shared");
            return Err(format!(
                "{name} was replaced on disk since it was shared; ask again after its owner rescans"
            ));
        }
        Ok((file, meta.len()))
    }
}

/// The folder a shared root's files are opened beneath: the root itself, or the folder
/// holding it when a single file is shared (`share ./song.ogg`).
pub fn folder_of(root: &Path) -> &Path {
    match root.parent() {
        Some(parent) if std::fs::metadata(root).is_ok_and(|m| m.is_file()) => parent,
        _ => root,
    }
}
