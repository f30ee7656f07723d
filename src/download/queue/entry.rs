//! One download of the queue as [`super`] keeps it ([`Entry`]: what it is,
//! how far it got, whether it runs and why it is being stopped) and as `transfers` shows
//! it ([`Row`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use smol::Task;

use super::file::{Queued, Stage};
use crate::download::{self, Cancel, Status, part_file};
use crate::protocol::Hit;

/// Why a running download is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intent {
    Run,
    Pause,
    Cancel,
    Exit,
}

/// One download of the queue.
pub(super) struct Entry {
    pub(super) q: Queued,
    pub(super) status: Arc<Status>,
    pub(super) cancel: Cancel,
    pub(super) intent: Intent,
    pub(super) running: bool,
    pub(super) started: Option<Instant>,
    pub(super) sources: Option<Vec<Hit>>,
    pub(super) task: Option<Task<()>>,
}

impl Entry {
    pub(super) fn new(q: Queued, sources: Option<Vec<Hit>>) -> Self {
        Entry {
            q,
            status: Arc::default(),
            cancel: Cancel::default(),
            intent: Intent::Run,
            running: false,
            started: None,
            sources,
            task: None,
        }
    }
}

/// What `transfers` shows of one download.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Its number.
    pub number: u64,
    /// The file, with its folder below the downloads folder.
    pub name: String,
    /// Where it stands, in one word: queued, running, waiting, pausing, paused,
    /// cancelling, cancelled, done or failed.
    pub stage: &'static str,
    /// Where it stands, in words.
    pub state: String,
    /// Bytes in place.
    pub done: u64,
    /// Its size.
    pub size: u64,
    /// Bytes per second that arrived in this run.
    pub rate: Option<f64>,
    /// Seconds left at that rate.
    pub eta_seconds: Option<f64>,
    /// Peers sending now.
    pub peers: usize,
    /// While waiting for an upload slot: the peer and the position in its line.
    pub waiting: Option<(u64, u64)>,
}

/// The name a download is shown with: its folder below the downloads folder, and its
/// file name there.
pub(super) fn shown_name(q: &Queued) -> String {
    let base = download::safe_file_name(&q.file.name).unwrap_or_else(|_| q.file.name.clone());
    q.folder.join(base).display().to_string()
}

/// Bytes a download kept from an earlier run has in its part file.
pub(super) fn kept(downloads: &std::path::Path, q: &Queued) -> u64 {
    // A folder that would lead outside the downloads folder is not even looked in.
    let dir = download::check_folder(downloads, &q.folder);
    match (dir, download::safe_file_name(&q.file.name)) {
        (Ok(dir), Ok(name)) => part_file::kept_bytes(&dir, &name, &q.file),
        _ => 0,
    }
}

pub(super) fn row(e: &Entry) -> Row {
    let size = e.q.file.size;
    let done = match &e.q.stage {
        Stage::Done(_) => size,
        _ => e.status.done.load(Ordering::Relaxed),
    };
    let position = e.status.queued.load(Ordering::Relaxed);
    let waiting =
        (e.running && position > 0).then(|| (e.status.queued_at.load(Ordering::Relaxed), position));
    let (stage, state) = match (&e.q.stage, e.running) {
        (_, true) if e.intent == Intent::Pause => ("pausing", "pausing".to_owned()),
        (_, true) if e.intent == Intent::Cancel => ("cancelling", "cancelling".to_owned()),
        (_, true) => match waiting {
            Some((peer, position)) => (
                "waiting",
                format!("waiting for a slot at peer {peer}, position {position}"),
            ),
            None => ("running", "running".to_owned()),
        },
        (Stage::Queued, false) => ("queued", "queued".to_owned()),
        (Stage::Paused, false) => ("paused", "paused".to_owned()),
        (Stage::Done(path), false) => ("done", format!("done: {path}")),
        (Stage::Failed(why), false) => ("failed", format!("failed: {why}")),
        (Stage::Cancelled, false) => ("cancelled", "cancelled".to_owned()),
    };
    let arrived = done.saturating_sub(e.status.resumed.load(Ordering::Relaxed));
    let elapsed = e.started.map(|s| s.elapsed()).unwrap_or_default();
    let rate = (e.running && arrived > 0 && elapsed > Duration::ZERO)
        .then(|| arrived as f64 / elapsed.as_secs_f64());
    let eta_seconds = rate.map(|r| size.saturating_sub(done) as f64 / r);
    Row {
        number: e.q.number,
        name: shown_name(&e.q),
        stage,
        state,
        done,
        size,
        rate,
        eta_seconds,
        peers: e.status.peers.load(Ordering::Relaxed),
        waiting,
    }
}
