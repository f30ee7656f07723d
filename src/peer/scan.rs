//! Scanning shared folders: every regular file under them (with the ignore rule, and
//! symlinks followed only when they lead inside their folder), left out while still being
//! written, then hashed through the hash cache into a [`Share`].
//!
//! The rule for symlinks: a scan follows a symlink only when it leads inside its folder,
//! and records the path it resolved to. Hashing and every request then open that
//! resolved path beneath the folder's handle through no symlink at all ([`Dir`]), and
//! take only the very file (device and inode) the scan saw. Whatever is swapped in
//! afterwards (a symlink out, a FIFO, another file) is refused until a scan looks at it;
//! a symlink re-pointed inside the folder keeps serving the file it led to at scan time.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tracing::warn;

use crate::digest::{FileDigest, hash_open};
use crate::disk::Dir;
use crate::error::{Error, IoContext, Result};
use crate::peer::cache::{HashCache, Stamp};
use crate::protocol::{self, FileEntry, Tags};

use super::ignore::Ignore;
use super::share::{Share, SharedFile, folder_of};
use super::tags;

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
        self.hash_until(cache, progress, &AtomicBool::new(false))
    }

    /// [`Listing::hash_with`], stopping with [`Error::Cancelled`] once `stop` is set
    /// (Ctrl-C), after the files being read now; what was hashed stays in the cache.
    pub fn hash_until(
        self,
        cache: &Mutex<HashCache>,
        progress: &(dyn Fn(u64) + Sync),
        stop: &AtomicBool,
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
                        if stop.load(Ordering::Relaxed) {
                            first_error.lock().get_or_insert(Error::Cancelled);
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some(found) = self.found.get(i) else {
                            break;
                        };
                        let (digest, tags) = match cached(cache, found) {
                            Some(known) => {
                                stats.lock().cached_files += 1;
                                known
                            }
                            None => match hash_unchanged(found, &self.roots, progress) {
                                Ok(Some((digest, tags))) => {
                                    let mut s = stats.lock();
                                    s.hashed_files += 1;
                                    s.hashed_bytes += digest.size;
                                    drop(s);
                                    let path = found.path.clone();
                                    cache.lock().put(path, found.stamp, &digest, tags.clone());
                                    (digest, tags)
                                }
                                // Changed while we read it: the next scan takes it.
                                Ok(None) => continue,
                                Err(e) => {
                                    first_error.lock().get_or_insert(e);
                                    continue;
                                }
                            },
                        };
                        let entry = FileEntry {
                            name: found.name.clone(),
                            size: digest.size,
                            sha256: digest.sha256,
                            chunks: protocol::chunks_root(&digest.chunks),
                            tags,
                        };
                        results.lock().push(SharedFile {
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
        if let Some(e) = first_error.into_inner() {
            return Err(e);
        }
        let mut files = results
            .into_inner()
            .into_iter()
            .map(|f| (f.entry.name.clone(), f))
            .collect();
        tags::keep_within_budget(&mut files);
        let stats = stats.into_inner();
        Ok((
            Share {
                roots: self.roots,
                files,
            },
            stats,
        ))
    }
}

/// What the cache knows of a found file: its digest and its tags.
fn cached(cache: &Mutex<HashCache>, found: &Found) -> Option<(FileDigest, Option<Tags>)> {
    let cache = cache.lock();
    let digest = cache.get(&found.path, &found.stamp)?;
    Some((digest, cache.tags(&found.path, &found.stamp)))
}

/// Hash a found file and read its media tags if it is an audio file, or `None` if it
/// changed since the scan or while it was being read.
///
/// The file is opened as a request opens it (its resolved path beneath its folder,
/// through no symlink, see [`Dir::open_beneath`]) and must be the very file the scan
/// saw: a symlink or a FIFO swapped in since is skipped, never read.
fn hash_unchanged(
    found: &Found,
    roots: &[PathBuf],
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Option<(FileDigest, Option<Tags>)>> {
    let root = &roots[found.root];
    let opened = Dir::open(folder_of(root)).and_then(|dir| dir.open_beneath(&found.resolved));
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == ErrorKind::InvalidInput => {
            warn_once(&found.path, &e.to_string());
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
    let tags = tags::is_audio(&found.name)
        .then(|| tags::read(&file, &found.path))
        .flatten();
    Ok((stamp(&file) == Some(found.stamp)).then_some((digest, tags)))
}

/// The canonical path of a folder, or of a single regular file, that can be shared, or
/// why it cannot.
pub fn shareable_folder(dir: &Path) -> Result<PathBuf> {
    let root = dir
        .canonicalize()
        .context(|| format!("cannot share {}", dir.display()))?;
    if !root.is_dir() && !root.is_file() {
        return Err(Error::msg(format!(
            "cannot share {}: neither a folder nor a regular file",
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
                warn_once(&path, &format!("another shared folder has {name}"));
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
    warn_once(path, &format!("the name {problem}"));
}

/// Warn that `path` is skipped because of `why`, once per path: a rescan every
/// `[peer] rescan` seconds finds the same file again, and says nothing new.
fn warn_once(path: &Path, why: &str) -> bool {
    let mut warned = WARNED.lock();
    if warned.contains(path) {
        return false;
    }
    if warned.len() < MAX_WARNED {
        warned.insert(path.to_owned());
    }
    warn!("skipping {path:?}: {why}");
    true
}

/// A file found under a root: name, path, resolved path relative to the root, stamp.
type Walked = (String, PathBuf, PathBuf, Stamp);

/// The files under `root`.
fn walk(root: &Path, ignore: &Ignore, found: &mut Vec<Walked>) -> Result<()> {
    if folder_of(root) != root {
        // A single shared file: named by its own name, whatever the ignore rule says
        // (it was asked for by name).
        let meta = std::fs::metadata(root).context(|| format!("reading {}", root.display()))?;
        let Some(name) = root.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            warn_skipped(root, "is not UTF-8");
            return Ok(());
        };
        if let Some(problem) = protocol::name_problem(&name) {
            warn_skipped(root, problem);
            return Ok(());
        }
        found.push((name.clone(), root.to_owned(), name.into(), Stamp::of(&meta)));
        return Ok(());
    }
    let left_out = ignore.folders_now();
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
                warn_once(&path, "it leads outside the shared folder");
                continue;
            }
            let Ok(meta) = std::fs::metadata(&real) else {
                continue;
            };
            if meta.is_dir() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) && !left_out.contains(&real) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What this thread logs.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A file skipped for its name (a tab) or for leading outside is warned about once,
    /// however many rescans find it again (it was 57 lines in 22 s).
    #[test]
    fn a_skipped_file_is_warned_about_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("share");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("tab\there.txt"), b"x").unwrap();
        std::fs::write(tmp.path().join("outside.txt"), b"y").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("outside.txt"), root.join("out.txt")).unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..5 {
                assert_eq!(scan(&root).unwrap().len(), 0);
            }
        });
        let log = String::from_utf8_lossy(&captured.0.lock()).into_owned();
        assert_eq!(log.matches("tab\\there.txt").count(), 1, "{log}");
        assert_eq!(log.matches("leads outside").count(), 1, "{log}");
    }

    fn names(listing: &Listing) -> Vec<String> {
        let mut names: Vec<String> = listing.found.iter().map(|f| f.name.clone()).collect();
        names.sort();
        names
    }

    /// A downloads folder inside the shared folder is left out, also when it is made
    /// after the rule (at the first download); shared by name, it is shared.
    #[test]
    fn the_downloads_folder_is_left_out_of_a_share_around_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("share");
        let downloads = root.join("downloads");
        std::fs::create_dir_all(root.join("songs")).unwrap();
        std::fs::write(root.join("songs/a.ogg"), b"a").unwrap();
        let ignore = Ignore::default().leaving_out(&downloads);
        let roots = [root.clone()];
        assert_eq!(
            names(&scan_roots(&roots, &ignore).unwrap()),
            ["songs/a.ogg"]
        );
        std::fs::create_dir(&downloads).unwrap();
        std::fs::write(downloads.join("got.ogg"), b"g").unwrap();
        let listing = scan_roots(&roots, &ignore).unwrap();
        assert_eq!(names(&listing), ["songs/a.ogg"]);
        let without_rule = scan_roots(&roots, &Ignore::default()).unwrap();
        assert_eq!(names(&without_rule), ["downloads/got.ogg", "songs/a.ogg"]);
        assert_eq!(
            names(&scan_roots(&[downloads], &ignore).unwrap()),
            ["got.ogg"]
        );
    }
}
