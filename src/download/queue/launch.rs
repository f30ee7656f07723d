//! Starting one download of the queue ([`super`]): finding its peers again
//! by content on the index it came from (after a restart they may have moved or
//! renamed it), the folder it goes in, and the job itself; and removing the part file
//! of a cancelled one.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::warn;

use super::file::Queued;
use crate::client::{Dialer, KnownIndexes};
use crate::download::part_file::PartFile;
use crate::download::{self, Cancel, Job, Status};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::limit::RateLimit;
use crate::protocol::{Hit, Limits, SearchQuery};

/// Most peers asked for when a queued download looks for its sources again.
const MOST_SOURCES: u32 = 1000;

/// How a queued download reaches its sources, decided as it starts.
pub type QueueDialer = Arc<dyn Fn(&Queued) -> Dialer + Send + Sync>;

/// What starting a queued download takes: where it goes, how it may use the network,
/// and how to find its peers again on the index.
#[derive(Clone)]
pub struct Launch {
    /// The downloads folder.
    pub downloads: PathBuf,
    /// Wire limits.
    pub limits: Limits,
    /// Download bandwidth shared by every transfer.
    pub bandwidth: Arc<RateLimit>,
    /// The key this process proves to the index.
    pub identity: Identity,
    /// The index keys it trusts: the shell's one source of pins, shared (a key pinned by
    /// `connect` applies to the next lookup).
    pub pins: KnownIndexes,
    /// Most downloads at once.
    pub max: usize,
    /// How a queued download reaches its sources (around NATs through the index our
    /// share is with, else the download's).
    pub dialer: QueueDialer,
}

impl Launch {
    /// Every peer sharing the contents of `q` now (only `q.peer` when one was named).
    async fn sources(&self, q: &Queued) -> Result<Vec<Hit>> {
        let (mut client, note) = self
            .pins
            .connect(&q.index, &self.identity, self.limits)
            .await?;
        if let Some(note) = note {
            tracing::info!("{note}");
        }
        let query = SearchQuery {
            sha256: Some(q.file.sha256.clone()),
            limit: Some(MOST_SOURCES),
            ..SearchQuery::default()
        };
        let (hits, _) = client.find(&query).await?;
        let hits: Vec<Hit> = hits
            .into_iter()
            .filter(|h| {
                h.file.sha256 == q.file.sha256
                    && h.file.size == q.file.size
                    && h.file.chunks == q.file.chunks
                    && q.peer.is_none_or(|p| p == h.peer_id)
            })
            .collect();
        if hits.is_empty() {
            return Err(Error::NotFound(format!(
                "no peer shares {} right now{}; `resume` tries again",
                q.file.name,
                q.peer
                    .map(|p| format!(" (asked of peer {p})"))
                    .unwrap_or_default()
            )));
        }
        Ok(hits)
    }
}

/// Find its peers (again, after a restart), then download it.
pub(super) async fn run(
    launch: &Launch,
    q: Queued,
    sources: Option<Vec<Hit>>,
    status: Arc<Status>,
    cancel: Cancel,
) -> Result<download::Downloaded> {
    status.total.store(q.file.size, Ordering::Relaxed);
    let sources = match sources {
        Some(sources) => sources,
        None => launch.sources(&q).await?,
    };
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let dir = download::make_folder(&launch.downloads, &q.folder)?;
    let dialer = (launch.dialer)(&q);
    let job = Job {
        file: q.file,
        sources,
        dir,
        limits: launch.limits,
        cancel,
        bandwidth: launch.bandwidth.clone(),
        status,
        progress: Arc::new(|_| {}),
        dialer,
    };
    download::fetch(job).await
}

/// Remove the part file of a cancelled download.
pub(super) fn discard(downloads: &std::path::Path, q: &Queued) {
    let removed = download::check_folder(downloads, &q.folder).and_then(|dir| {
        download::safe_file_name(&q.file.name)
            .and_then(|name| PartFile::remove(&dir, &name, &q.file))
    });
    if let Err(e) = removed {
        warn!("cannot remove the part file of {}: {e}", q.file.name);
    }
}
