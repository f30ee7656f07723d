//! Content hashing: a file's SHA-256 and its chunk list, in one read, on two threads for
//! a large file. Used by the sharing side to announce files and by the downloader to
//! recognise a file it already has.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::disk;
use crate::error::{Error, IoContext, Result};
use crate::protocol;

/// Size of the buffer files are hashed and sent with.
pub const IO_BUFFER: usize = 256 * 1024;

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
        sha256: hex::encode(Sha256::digest(bytes)),
        chunks: chunks.finish(),
    }
}

/// Files at least this large hash their chunks on a second thread.
const PARALLEL_FROM: u64 = 8 << 20;

/// SHA-256 of a file and of each of its chunks, in one read; `progress` is told of
/// every block hashed. The whole-file hash and the chunk hashes of a large file are
/// computed on two threads at once.
///
/// Only a regular file is hashed: the open neither blocks on a FIFO nor follows a
/// symlink in the path's last component (see [`disk::open_regular`]).
pub fn hash_file(path: &Path, progress: &dyn Fn(u64)) -> Result<FileDigest> {
    let file = disk::open_regular(path).context(|| format!("opening {}", path.display()))?;
    hash_open(&file, path, progress)
}

/// [`hash_file`] of a file already open (`path` only names it in errors).
pub fn hash_open(file: &File, path: &Path, progress: &dyn Fn(u64)) -> Result<FileDigest> {
    let mut file = file;
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
        return Err(Error::ChangedWhileReading(path.to_owned()));
    }
    Ok(FileDigest {
        size,
        sha256: hex::encode(whole.finalize()),
        chunks,
    })
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
                counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
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

    /// A FIFO (or a symlink) at the path is refused at once, never waited on.
    #[test]
    fn a_fifo_or_a_symlink_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let mode = rustix::fs::Mode::from_raw_mode(0o600);
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, mode).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        std::thread::spawn(move || tx.send(hash_file(&path, &|_| {}).map_err(|e| e.to_string())));
        let got = rx.recv_timeout(std::time::Duration::from_secs(2));
        let e = got.expect("hashing a FIFO blocked").unwrap_err();
        assert!(e.contains("FIFO"), "{e}");
        std::fs::write(dir.path().join("file"), b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("file"), &link).unwrap();
        let e = hash_file(&link, &|_| {}).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
    }
}
