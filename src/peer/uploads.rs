//! Who downloads what from this peer right now (`uploads`): one row per downloader
//! connection and file, sending or waiting for an upload slot, kept by the file server
//! and dropped when the connection ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocol::Fingerprint;

/// Every upload of one file server.
#[derive(Default)]
pub struct Uploads {
    rows: Mutex<BTreeMap<u64, Arc<Upload>>>,
    next: AtomicU64,
    sent: AtomicU64,
}

/// One downloader connection's upload.
pub struct Upload {
    /// Where the downloader connects from.
    pub from: SocketAddr,
    /// The key it proved.
    pub fingerprint: Fingerprint,
    /// When it connected.
    pub since: Instant,
    file: Mutex<(String, u64)>,
    sent: AtomicU64,
    /// Its position in the line for a slot, or 0 while it holds one.
    waiting: AtomicU64,
}

/// What `uploads` shows of one upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    /// Where the downloader connects from.
    pub from: SocketAddr,
    /// The key it proved.
    pub fingerprint: Fingerprint,
    /// The file it asked for last.
    pub name: String,
    /// Its size.
    pub size: u64,
    /// Bytes of it sent on this connection.
    pub sent: u64,
    /// How long the connection has been open.
    pub elapsed: Duration,
    /// Its position in the line for an upload slot, if it waits for one.
    pub waiting: Option<u64>,
}

/// A connection's row, removed when dropped.
pub struct Tracked {
    uploads: Arc<Uploads>,
    id: u64,
    /// The row.
    pub upload: Arc<Upload>,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("rows", &self.rows.lock().len())
            .field("sent", &self.sent())
            .finish()
    }
}

impl Uploads {
    /// A row for the connection from `from`, proven by `fingerprint`, once it asks for
    /// `name` of `size` bytes.
    pub fn track(self: &Arc<Self>, from: SocketAddr, fingerprint: Fingerprint) -> Tracked {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let upload = Arc::new(Upload {
            from,
            fingerprint,
            since: Instant::now(),
            file: Mutex::default(),
            sent: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
        });
        Tracked {
            uploads: self.clone(),
            id,
            upload,
        }
    }

    /// Every upload asking for a file now, sending ones first.
    pub fn rows(&self) -> Vec<UploadRow> {
        let mut rows: Vec<UploadRow> = self
            .rows
            .lock()
            .values()
            .map(|u| {
                let (name, size) = u.file.lock().clone();
                let waiting = u.waiting.load(Ordering::Relaxed);
                UploadRow {
                    from: u.from,
                    fingerprint: u.fingerprint,
                    name,
                    size,
                    sent: u.sent.load(Ordering::Relaxed),
                    elapsed: u.since.elapsed(),
                    waiting: (waiting > 0).then_some(waiting),
                }
            })
            .collect();
        rows.sort_by_key(|r| r.waiting.unwrap_or(0));
        rows
    }

    /// Bytes of files sent since this file server started.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Tracked {
    /// The connection asks for `name` (of `size` bytes): the row shows it from now on.
    pub fn asking(&self, name: &str, size: u64) {
        let mut file = self.upload.file.lock();
        if file.0 != name {
            *file = (name.to_owned(), size);
            self.upload.sent.store(0, Ordering::Relaxed);
        }
        drop(file);
        self.uploads
            .rows
            .lock()
            .entry(self.id)
            .or_insert_with(|| self.upload.clone());
    }

    /// Its position in line for a slot (0: it holds one).
    pub fn waiting(&self, position: u64) {
        self.upload.waiting.store(position, Ordering::Relaxed);
    }

    /// `n` more bytes were sent.
    pub fn sent(&self, n: u64) {
        self.upload.sent.fetch_add(n, Ordering::Relaxed);
        self.uploads.sent.fetch_add(n, Ordering::Relaxed);
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.uploads.rows.lock().remove(&self.id);
    }
}
