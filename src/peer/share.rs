//! The folders a peer shares: scanning them (with the ignore rule), hashing what changed
//! (through the hash cache), telling what changed since the last scan, and opening a
//! file for a downloader only when it was registered and really lies inside its folder.
//!
//! The rule for symlinks: a scan follows a symlink only when it leads inside its folder,
//! and records the path it resolved to. Hashing and every request then open that
//! resolved path beneath the folder's handle through no symlink at all ([`Dir`]), and
//! take only the very file (device and inode) the scan saw. Whatever is swapped in
//! afterwards (a symlink out, a FIFO, another file) is refused until a scan looks at it;
//! a symlink re-pointed inside the folder keeps serving the file it led to at scan time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::warn;

use crate::client::Changes;
use crate::digest::{FileDigest, hash_open};
use crate::disk::{self, Dir};
use crate::error::{Error, IoContext, Result};
use crate::peer::cache::{HashCache, Stamp};
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
    roots: Vec<PathBuf>,
    files: BTreeMap<String, SharedFile>,
}

/// One file found by a scan.
#[derive(Debug, Clone)]
struct Found {
    name: String,
    path: PathBuf,
    resolved: PathBuf,
    stamp: Stamp,
    root: usize,
}

/// Files found by a scan, before hashing.
pub struct Listing {
    roots: Vec<PathBuf>,
    found: Vec<Found>,
}

/// What a hashing pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Files whose contents were read and hashed.
    pub hashed_files: usize,
    /// Bytes read to hash them.
    pub hashed_bytes: u64,
    /// Files whose digests came from the hash cache, unread.
    pub cached_files: usize,
}

impl Listing {
    /// Number of files found.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// Whether the folders have no shareable file.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Sum of their sizes.
    pub fn bytes(&self) -> u64 {
        self.found.iter().map(|f| f.stamp.size()).sum()
    }

    /// Leave out the files that changed less than `settle` ago, except those `known`
    /// (already shared as they are); returns the names left out.
    pub fn settle(
        &mut self,
        settle: Duration,
        known: impl Fn(&str, &Stamp) -> bool,
    ) -> Vec<String> {
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let mut left_out = Vec::new();
        self.found.retain(|f| {
            let settled = known(&f.name, &f.stamp)
                || now_ns - f.stamp.changed_ns() >= settle.as_nanos() as i128;
            if !settled {
                left_out.push(f.name.clone());
            }
            settled
        });
        left_out
    }

    /// Sum of the sizes of the files the cache does not know: what hashing will read.
    pub fn bytes_to_hash(&self, cache: &HashCache) -> u64 {
        self.found
            .iter()
            .filter(|f| cache.get(&f.path, &f.stamp).is_none())
            .map(|f| f.stamp.size())
            .sum()
    }

    /// Hash every file, on every core; `progress` is told of bytes hashed.
    pub fn hash(self, progress: &(dyn Fn(u64) + Sync)) -> Result<Share> {
        let cache = Mutex::new(HashCache::in_memory());
        Ok(self.hash_with(&cache, progress)?.0)
    }

    /// Hash the files the cache does not know, on every core, and remember them in it.
    pub fn hash_with(
        self,
        cache: &Mutex<HashCache>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(Share, HashStats)> {
        let next = AtomicU64::new(0);
        let results = Mutex::new(Vec::with_capacity(self.found.len()));
        let stats = Mutex::new(HashStats::default());
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let first_error = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads.min(self.found.len()).max(1) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(found) = self.found.get(i) else {
                            break;
                        };
                        let known = locked(cache).get(&found.path, &found.stamp);
                        let digest = match known {
                            Some(digest) => {
                                locked(&stats).cached_files += 1;
                                digest
                            }
                            None => match hash_unchanged(found, &self.roots, progress) {
                                Ok(Some(digest)) => {
                                    let mut s = locked(&stats);
                                    s.hashed_files += 1;
                                    s.hashed_bytes += digest.size;
                                    drop(s);
                                    locked(cache).put(found.path.clone(), found.stamp, &digest);
                                    digest
                                }
                                // Changed while we read it: the next scan takes it.
                                Ok(None) => continue,
                                Err(e) => {
                                    locked(&first_error).get_or_insert(e);
                                    continue;
                                }
                            },
                        };
                        let entry = FileEntry {
                            name: found.name.clone(),
                            size: digest.size,
                            sha256: digest.sha256,
                            chunks: protocol::chunks_root(&digest.chunks),
                        };
                        locked(&results).push(SharedFile {
                            entry,
                            path: found.path.clone(),
                            resolved: found.resolved.clone(),
                            chunks: digest.chunks,
                            stamp: found.stamp,
                            root: found.root,
                        });
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
            return Err(e);
        }
        let files = results
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .map(|f| (f.entry.name.clone(), f))
            .collect();
        let stats = stats.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok((
            Share {
                roots: self.roots,
                files,
            },
            stats,
        ))
    }
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hash a found file, or `None` if it changed since the scan or while it was being read.
///
/// The file is opened as a request opens it (its resolved path beneath its folder,
/// through no symlink, see [`Dir::open_beneath`]) and must be the very file the scan
/// saw: a symlink or a FIFO swapped in since is skipped, never read.
fn hash_unchanged(
    found: &Found,
    roots: &[PathBuf],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Option<FileDigest>> {
    let root = &roots[found.root];
    let opened = Dir::open(root).and_then(|dir| dir.open_beneath(&found.resolved));
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            warn!("skipping {}: {e}", found.path.display());
            return Ok(None);
        }
        Err(e) => return Err(Error::io(format!("opening {}", found.path.display()), e)),
    };
    let stamp = |file: &File| file.metadata().map(|m| Stamp::of(&m)).ok();
    if stamp(&file) != Some(found.stamp) {
        return Ok(None);
    }
    let digest = match hash_open(&file, &found.path, progress) {
        Ok(digest) => digest,
        Err(Error::ChangedWhileReading(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok((stamp(&file) == Some(found.stamp)).then_some(digest))
}

/// The canonical path of a folder that can be shared, or why it cannot.
pub fn shareable_folder(dir: &Path) -> Result<PathBuf> {
    let root = dir
        .canonicalize()
        .context(|| format!("cannot share {}", dir.display()))?;
    if !root.is_dir() {
        return Err(Error::msg(format!(
            "cannot share {}: not a folder",
            dir.display()
        )));
    }
    Ok(root)
}

/// List the regular files under `dir`, recursively, with `/`-separated relative names,
/// leaving out what the default ignore rule names.
pub fn scan(dir: &Path) -> Result<Listing> {
    scan_roots(&[dir.to_owned()], &Ignore::default())
}

/// List the regular files under every folder of `roots`, recursively, with names
/// relative to their folder (`/`-separated); the first folder wins a name clash.
///
/// Symlinks are followed only when they lead inside their shared folder; names the
/// protocol cannot carry are skipped with a warning. Files still being written are left
/// out afterwards, by [`Listing::settle`].
pub fn scan_roots(roots: &[PathBuf], ignore: &Ignore) -> Result<Listing> {
    let canonical = roots
        .iter()
        .map(|dir| shareable_folder(dir))
        .collect::<Result<Vec<_>>>()?;
    let mut found: Vec<Found> = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (index, root) in canonical.iter().enumerate() {
        let mut here = Vec::new();
        walk(root, ignore, &mut here)?;
        here.sort_by(|a: &Walked, b| a.0.cmp(&b.0));
        for (name, path, resolved, stamp) in here {
            if !names.insert(name.clone()) {
                warn!(
                    "skipping {}: another shared folder has {name}",
                    path.display()
                );
                continue;
            }
            found.push(Found {
                name,
                path,
                resolved,
                stamp,
                root: index,
            });
        }
    }
    Ok(Listing {
        roots: canonical,
        found,
    })
}

/// Most paths remembered as already warned about; beyond, warnings may repeat.
const MAX_WARNED: usize = 4096;

/// Paths skipped for their name and already warned about: rescans stay quiet.
static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Warn, once per path, that a file is skipped because of its name; the path is quoted
/// with its hidden characters escaped.
fn warn_skipped(path: &Path, problem: &str) {
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.contains(path) {
        return;
    }
    if warned.len() < MAX_WARNED {
        warned.insert(path.to_owned());
    }
    warn!("skipping {path:?}: the name {problem}");
}

/// A file found under a root: name, path, resolved path relative to the root, stamp.
type Walked = (String, PathBuf, PathBuf, Stamp);

/// The files under `root`.
fn walk(root: &Path, ignore: &Ignore, found: &mut Vec<Walked>) -> Result<()> {
    let mut pending = vec![root.to_owned()];
    while let Some(folder) = pending.pop() {
        let entries =
            std::fs::read_dir(&folder).context(|| format!("reading {}", folder.display()))?;
        for entry in entries {
            let entry = entry.context(|| format!("reading {}", folder.display()))?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                warn_skipped(&path, "is not UTF-8");
                continue;
            };
            if ignore.matches(&file_name) {
                continue;
            }
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if !real.starts_with(root) {
                warn!(
                    "skipping {}: it leads outside the shared folder",
                    path.display()
                );
                continue;
            }
            let Ok(meta) = std::fs::metadata(&real) else {
                continue;
            };
            if meta.is_dir() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    pending.push(path);
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if let Some(problem) = protocol::name_problem(&name) {
                warn_skipped(&path, problem);
                continue;
            }
            let resolved = real.strip_prefix(root).unwrap_or(&real).to_owned();
            found.push((name, path, resolved, Stamp::of(&meta)));
        }
    }
    Ok(())
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
        let opened =
            Dir::open(&self.roots[shared.root]).and_then(|dir| dir.open_beneath(&shared.resolved));
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
