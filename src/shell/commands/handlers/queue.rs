//! The commands of the download queue and of uploads: `transfers`, `cancel`, `pause`,
//! `resume`, `clear`, `uploads`, `link`. The queue itself is
//! [`crate::download::queue`]'s.

use std::sync::Arc;
use std::time::Duration;

use crate::download;
use crate::download::queue::file::QUEUE_FILE;
use crate::download::queue::{Launch, Transfers};
use crate::error::Result;
use crate::protocol::PeerRef;
use crate::shell::Shell;
use crate::shell::commands::link;
use crate::shell::commands::outcome::{Change, Changed, Link, Outcome, Transfers as Queue, Upload};

impl Shell {
    /// Open the download queue kept in the downloads folder, if this shell has not yet.
    pub(in crate::shell) fn open_queue(&mut self) -> Result<Arc<Transfers>> {
        let transfers = self.services.transfers().clone();
        if !transfers.is_open() {
            let launch = Launch {
                downloads: self.config.peer.downloads.clone(),
                limits: self.config.limits(),
                bandwidth: self.download.clone(),
                identity: self.identity()?,
                pins: self.pins()?,
                max: self.config.peer.max_downloads,
                dialer: self.queue_dialer()?,
            };
            if let Some(why) = transfers.open(launch) {
                tracing::warn!("{why}; this shell's queue is not kept across a restart");
            }
        }
        Ok(transfers)
    }

    /// Open the queue and resume what it holds (when the shell starts), if the
    /// downloads folder keeps one.
    pub fn resume_queue(&mut self) {
        let kept = self.config.peer.downloads.join(QUEUE_FILE);
        if std::fs::symlink_metadata(kept).is_err() {
            return;
        }
        match self.open_queue() {
            Ok(transfers) => transfers.pump(),
            Err(e) => tracing::warn!("the download queue cannot start: {e}"),
        }
    }

    pub(in crate::shell) fn transfers(&mut self) -> Result<Outcome> {
        let kept = self.config.peer.downloads.join(QUEUE_FILE);
        let untouched = !self.services.transfers().is_open() && !kept.exists();
        let mut rows = if untouched {
            Vec::new()
        } else {
            match self.open_queue() {
                Ok(transfers) => transfers.rows(),
                // No key to find peers with: the queue can still be shown.
                Err(_) => Transfers::saved_in(&self.config.peer.downloads),
            }
        };
        let unkept = self.services.transfers().unkept();
        if unkept.is_some() && rows.is_empty() {
            // The other napster's queue, as last saved.
            rows = Transfers::saved_in(&self.config.peer.downloads);
        }
        Ok(Outcome::Transfers(Queue { unkept, rows }))
    }

    /// `cancel N`: stop it and remove what arrived.
    pub(in crate::shell) async fn cancel(&mut self, number: u64) -> Result<Outcome> {
        let name = self.open_queue()?.cancel(number).await?;
        Ok(changed(number, name, Change::Cancelled))
    }

    /// `pause N`: stop it, keeping what arrived.
    pub(in crate::shell) async fn pause(&mut self, number: u64) -> Result<Outcome> {
        let name = self.open_queue()?.pause(number).await?;
        Ok(changed(number, name, Change::Paused))
    }

    /// `resume N`: back in the queue, its peers found on this shell's index.
    pub(in crate::shell) fn resume(&mut self, number: u64) -> Result<Outcome> {
        let name = self.open_queue()?.resume(number, self.index.clone())?;
        Ok(changed(number, name, Change::Queued))
    }

    pub(in crate::shell) fn clear(&mut self) -> Result<Outcome> {
        let count = self.open_queue()?.clear() as u64;
        Ok(Outcome::Cleared { count })
    }

    pub(in crate::shell) fn uploads(&mut self) -> Result<Outcome> {
        let Some(sharing) = self.services.sharing() else {
            return Ok(Outcome::Uploads(None));
        };
        let rows = sharing.uploads().rows();
        let rows = rows
            .into_iter()
            .map(|r| Upload {
                peer_id: crate::index::store::peer_id_of(&r.fingerprint),
                rate: (r.waiting.is_none() && r.elapsed > Duration::ZERO)
                    .then(|| r.sent as f64 / r.elapsed.as_secs_f64()),
                fingerprint: r.fingerprint,
                from: r.from,
                name: r.name,
                size: r.size,
                sent: r.sent,
                position: r.waiting,
            })
            .collect();
        Ok(Outcome::Uploads(Some(rows)))
    }

    pub(in crate::shell) async fn link(
        &mut self,
        name: &str,
        peer: Option<PeerRef>,
    ) -> Result<Outcome> {
        let hits = self.client().await?.lookup(name).await?;
        let sources = download::sources(name, peer.as_ref(), hits)?;
        let file = &sources[0].file;
        let saved_as = download::safe_file_name(&file.name)?;
        let link = link::Link {
            sha256: file.sha256.clone(),
            name: saved_as.clone(),
            size: Some(file.size),
        };
        Ok(Outcome::Link(Link {
            link: link.text(),
            name: saved_as,
            size: file.size,
            sha256: file.sha256.clone(),
        }))
    }
}

fn changed(transfer: u64, name: String, state: Change) -> Outcome {
    Outcome::Changed(Changed {
        transfer,
        name,
        state,
    })
}

/// A `get` of one word that is not a file name: `sha256:HEX`, or a link.
pub(in crate::shell) fn is_content_word(word: &str) -> bool {
    word.to_lowercase().starts_with("sha256:") || link::is_link(word)
}
