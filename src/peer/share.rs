//! The folder a peer shares: scanning it, hashing its files, and opening a file for a
//! downloader only when it was registered and really lies inside the folder.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use tracing::warn;

use crate::error::{Error, IoContext, Result};
use crate::protocol::{self, FileEntry};

/// Size of the buffer files are hashed and sent with.
pub const IO_BUFFER: usize = 256 * 1024;

/// Lowercase hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// What hashing a file yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Bytes hashed.
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    /// SHA-256 of each chunk (see [`protocol::chunk_size`]).
    pub chunks: Vec<[u8; 32]>,
}

/// The hex SHA-256 of a chunk list: what the index records as a file's `chunks`.
pub fn chunks_root(chunks: &[[u8; 32]]) -> String {
    let mut hasher = Sha256::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    to_hex(&hasher.finalize())
}

/// The digests of a file's chunks, from blocks fed in order.
struct ChunkHasher {
    chunk_size: u64,
    chunk: Sha256,
    in_chunk: u64,
    chunks: Vec<[u8; 32]>,
}

impl ChunkHasher {
    /// For a file of `size` bytes (which fixes the chunk size).
    fn new(size: u64) -> Self {
        ChunkHasher {
            chunk_size: protocol::chunk_size(size),
            chunk: Sha256::new(),
            in_chunk: 0,
            chunks: Vec::with_capacity(protocol::chunk_count(size) as usize),
        }
    }

    fn update(&mut self, mut block: &[u8]) {
        while !block.is_empty() {
            let take = block.len().min((self.chunk_size - self.in_chunk) as usize);
            self.chunk.update(&block[..take]);
            self.in_chunk += take as u64;
            if self.in_chunk == self.chunk_size {
                self.chunks.push(self.chunk.finalize_reset().into());
                self.in_chunk = 0;
            }
            block = &block[take..];
        }
    }

    fn finish(mut self) -> Vec<[u8; 32]> {
        if self.in_chunk > 0 {
            self.chunks.push(self.chunk.finalize().into());
        }
        self.chunks
    }
}

/// The digest of bytes in memory, exactly as [`hash_file`] would compute it.
pub fn digest_bytes(bytes: &[u8]) -> FileDigest {
    let mut chunks = ChunkHasher::new(bytes.len() as u64);
    chunks.update(bytes);
    FileDigest {
        size: bytes.len() as u64,
        sha256: to_hex(&Sha256::digest(bytes)),
        chunks: chunks.finish(),
    }
}

/// Files at least this large hash their chunks on a second thread.
const PARALLEL_FROM: u64 = 8 << 20;

/// SHA-256 of a file and of each of its chunks, in one read; `progress` is told of
/// every block hashed. The whole-file hash and the chunk hashes of a large file are
/// computed on two threads at once.
pub fn hash_file(path: &Path, progress: &dyn Fn(u64)) -> Result<FileDigest> {
    let mut file = File::open(path).context(|| format!("opening {}", path.display()))?;
    let expected = file
        .metadata()
        .context(|| format!("reading {}", path.display()))?
        .len();
    let mut whole = Sha256::new();
    let mut size = 0u64;
    let mut read = |block: &mut Vec<u8>| -> Result<usize> {
        let n = file
            .read(block)
            .context(|| format!("reading {}", path.display()))?;
        whole.update(&block[..n]);
        size += n as u64;
        progress(n as u64);
        Ok(n)
    };
    let chunks = if expected < PARALLEL_FROM {
        let mut chunks = ChunkHasher::new(expected);
        let mut buf = vec![0; IO_BUFFER];
        loop {
            let n = read(&mut buf)?;
            if n == 0 {
                break;
            }
            chunks.update(&buf[..n]);
        }
        chunks.finish()
    } else {
        let (to_chunks, blocks) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(8);
        let (to_reader, spare) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::scope(|scope| -> Result<Vec<[u8; 32]>> {
            let chunker = scope.spawn(move || {
                let mut chunks = ChunkHasher::new(expected);
                for (block, n) in blocks {
                    chunks.update(&block[..n]);
                    let _ = to_reader.send(block);
                }
                chunks.finish()
            });
            loop {
                let mut buf = spare.try_recv().unwrap_or_else(|_| vec![0; IO_BUFFER]);
                let n = read(&mut buf)?;
                if n == 0 {
                    break;
                }
                if to_chunks.send((buf, n)).is_err() {
                    break;
                }
            }
            drop(to_chunks);
            chunker
                .join()
                .map_err(|_| Error::msg("the chunk hashing thread failed"))
        })?
    };
    if size != expected {
        return Err(Error::msg(format!(
            "{} changed while it was being hashed; try again",
            path.display()
        )));
    }
    Ok(FileDigest {
        size,
        sha256: to_hex(&whole.finalize()),
        chunks,
    })
}

/// Whether a file name is left out of a share: hidden files, editor backups and
/// napster's own partial downloads.
pub fn is_ignored(file_name: &str) -> bool {
    file_name.starts_with('.') || file_name.ends_with('~') || file_name.ends_with(".napster-part")
}

/// One shared file.
#[derive(Debug, Clone)]
pub struct SharedFile {
    /// What the index is told.
    pub entry: FileEntry,
    /// Where it lies on disk.
    pub path: PathBuf,
    /// SHA-256 of each chunk, as computed when the file was hashed.
    pub chunks: Vec<[u8; 32]>,
}

/// A shared folder and the files registered from it.
#[derive(Debug)]
pub struct Share {
    root: PathBuf,
    files: BTreeMap<String, SharedFile>,
}

/// Files found by a scan, before hashing.
pub struct Listing {
    root: PathBuf,
    found: Vec<(String, PathBuf, u64)>,
}

impl Listing {
    /// Number of files found.
    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// Whether the folder has no shareable file.
    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// Sum of their sizes.
    pub fn bytes(&self) -> u64 {
        self.found.iter().map(|(_, _, size)| size).sum()
    }

    /// Hash every file, on every core; `progress` is told of bytes hashed.
    pub fn hash(self, progress: &(dyn Fn(u64) + Sync)) -> Result<Share> {
        let next = AtomicU64::new(0);
        let results = Mutex::new(Vec::with_capacity(self.found.len()));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let first_error = Mutex::new(None);
        std::thread::scope(|scope| {
            for _ in 0..threads.min(self.found.len()).max(1) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                        let Some((name, path, _)) = self.found.get(i) else {
                            break;
                        };
                        match hash_file(path, progress) {
                            Ok(digest) => {
                                let entry = FileEntry {
                                    name: name.clone(),
                                    size: digest.size,
                                    sha256: digest.sha256,
                                    chunks: chunks_root(&digest.chunks),
                                };
                                let file = SharedFile {
                                    entry,
                                    path: path.clone(),
                                    chunks: digest.chunks,
                                };
                                results.lock().unwrap_or_else(|e| e.into_inner()).push(file);
                            }
                            Err(e) => {
                                let mut slot =
                                    first_error.lock().unwrap_or_else(|e| e.into_inner());
                                slot.get_or_insert(e);
                            }
                        }
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
        Ok(Share {
            root: self.root,
            files,
        })
    }
}

/// List the regular files under `dir`, recursively, with `/`-separated relative names.
///
/// Symlinks are followed only when they lead to a file inside the folder; names the
/// protocol cannot carry are skipped with a warning.
pub fn scan(dir: &Path) -> Result<Listing> {
    let root = dir
        .canonicalize()
        .context(|| format!("cannot share {}", dir.display()))?;
    if !root.is_dir() {
        return Err(Error::msg(format!(
            "cannot share {}: not a folder",
            dir.display()
        )));
    }
    let mut found = Vec::new();
    let mut pending = vec![root.clone()];
    while let Some(folder) = pending.pop() {
        let entries =
            std::fs::read_dir(&folder).context(|| format!("reading {}", folder.display()))?;
        for entry in entries {
            let entry = entry.context(|| format!("reading {}", folder.display()))?;
            let path = entry.path();
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                warn!("skipping {}: the name is not UTF-8", path.display());
                continue;
            };
            if is_ignored(&file_name) {
                continue;
            }
            let Ok(real) = path.canonicalize() else {
                continue;
            };
            if !real.starts_with(&root) {
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
            let relative = path.strip_prefix(&root).unwrap_or(&path);
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if let Some(problem) = protocol::name_problem(&name) {
                warn!("skipping {}: the name {problem}", path.display());
                continue;
            }
            found.push((name, path, meta.len()));
        }
    }
    found.sort();
    Ok(Listing { root, found })
}

impl Share {
    /// The canonical path of the shared folder.
    pub fn root(&self) -> &Path {
        &self.root
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

    /// The chunk digests of a registered file, as raw bytes, with its registered size.
    pub fn chunk_list(&self, name: &str) -> Option<(u64, Vec<u8>)> {
        let shared = self.files.get(name)?;
        Some((shared.entry.size, shared.chunks.concat()))
    }

    /// Open a registered file for sending, with its current size.
    ///
    /// Refuses names the protocol forbids, names never registered, and files that now
    /// resolve outside the folder (a symlink swapped in after registering).
    pub fn open(&self, name: &str) -> std::result::Result<(File, u64), String> {
        if let Some(problem) = protocol::name_problem(name) {
            return Err(format!("the file name {problem}"));
        }
        let shared = self
            .files
            .get(name)
            .ok_or_else(|| format!("{:?} is not shared here", protocol::truncate(name)))?;
        let real = shared
            .path
            .canonicalize()
            .map_err(|_| format!("{name} is no longer on disk"))?;
        if !real.starts_with(&self.root) {
            warn!("refusing {name}: it now leads outside the shared folder");
            return Err(format!("{name} is not shared here"));
        }
        let file = File::open(&real).map_err(|e| format!("cannot open {name}: {e}"))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot read {name}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{name} is not a regular file"));
        }
        Ok((file, meta.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hash_as_bytes_do_on_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0,
            1,
            IO_BUFFER + 7,
            (PARALLEL_FROM + 3 * IO_BUFFER as u64 + 5) as usize,
        ] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{size}"));
            std::fs::write(&path, &bytes).unwrap();
            let counted = std::sync::atomic::AtomicU64::new(0);
            let from_disk = hash_file(&path, &|n| {
                counted.fetch_add(n, Ordering::Relaxed);
            })
            .unwrap();
            assert_eq!(from_disk, digest_bytes(&bytes), "size {size}");
            assert_eq!(counted.into_inner(), size as u64);
            assert_eq!(
                from_disk.chunks.len() as u64,
                protocol::chunk_count(size as u64)
            );
        }
    }
}
