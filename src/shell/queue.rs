//! The commands of the download queue and of uploads: `transfers`, `cancel`, `pause`,
//! `resume`, `clear`, `uploads`, `link`, and what `status` says of them. The queue
//! itself is [`super::transfers`]'s.

use std::sync::Arc;
use std::time::Duration;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};

use super::output::Record;
use super::{Shell, link, render};
use crate::download;
use crate::download::queue::file::QUEUE_FILE;
use crate::download::queue::{Launch, Row, Transfers};
use crate::error::Result;
use crate::limit::show_rate;
use crate::protocol::PeerRef;

fn table(header: &[&str], right_aligned: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for &i in right_aligned {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// `1h02m`, `3m05s`, `12s`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

fn per_second(bytes_per_second: Option<f64>) -> String {
    bytes_per_second.map_or_else(|| "-".into(), |r| format!("{}/s", render::size(r as u64)))
}

fn transfer_record(r: &Row) -> Record {
    Record::Transfer {
        transfer: r.number,
        name: r.name.clone(),
        state: r.stage.to_owned(),
        detail: r.state.clone(),
        done: r.done,
        size: r.size,
        rate: r.rate,
        eta_seconds: r.eta.map(|e| e.as_secs_f64()),
        peers: r.peers as u64,
        waiting_at: r.waiting.map(|w| w.0),
        position: r.waiting.map(|w| w.1),
    }
}

impl Shell {
    /// Open the download queue kept in the downloads folder, if this shell has not yet.
    pub(super) fn open_queue(&mut self) -> Result<Arc<Transfers>> {
        let transfers = self.services.transfers().clone();
        if !transfers.is_open() {
            let launch = Launch {
                downloads: self.config.peer.downloads.clone(),
                limits: self.config.limits(),
                bandwidth: self.download.clone(),
                identity: self.identity()?,
                pins: self.pins()?,
                known: self.config.peer.known_indexes.clone(),
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

    pub(super) fn transfers(&mut self) -> Result<String> {
        let mut out = String::new();
        self.rows = true;
        let kept = self.config.peer.downloads.join(QUEUE_FILE);
        let untouched = !self.services.transfers().is_open() && !kept.exists();
        let rows = if untouched {
            Vec::new()
        } else {
            match self.open_queue() {
                Ok(transfers) => transfers.rows(),
                // No key to find peers with: the queue can still be shown.
                Err(_) => Transfers::saved_in(&self.config.peer.downloads),
            }
        };
        let mut rows = rows;
        if let Some(why) = self.services.transfers().unkept() {
            put!(out, "note: {why}");
            if rows.is_empty() {
                // The other napster's queue, as last saved.
                rows = Transfers::saved_in(&self.config.peer.downloads);
            }
        }
        if rows.is_empty() {
            put!(out, "no downloads in the queue (`get -b <file>` adds one)");
            return Ok(out);
        }
        self.records.extend(rows.iter().map(transfer_record));
        let mut t = table(
            &["#", "File", "State", "Progress", "Rate", "ETA", "Peers"],
            &[0, 3, 4, 5, 6],
        );
        for r in &rows {
            let percent = if r.size == 0 {
                100.0
            } else {
                r.done as f64 * 100.0 / r.size as f64
            };
            t.add_row(vec![
                r.number.to_string(),
                render::shown(&r.name),
                render::shown(&r.state),
                format!("{percent:.0}% of {}", render::size(r.size)),
                per_second(r.rate),
                r.eta.map_or_else(|| "-".into(), duration),
                r.peers.to_string(),
            ]);
        }
        put!(out, "{t}");
        Ok(out)
    }

    /// `cancel N`: stop it and remove what arrived.
    pub(super) async fn cancel(&mut self, number: u64) -> Result<String> {
        let name = self.open_queue()?.cancel(number).await?;
        Ok(self.changed(
            number,
            name,
            "cancelled",
            "cancelled; what arrived is removed",
        ))
    }

    /// `pause N`: stop it, keeping what arrived.
    pub(super) async fn pause(&mut self, number: u64) -> Result<String> {
        let name = self.open_queue()?.pause(number).await?;
        let said = "paused; what arrived is kept (`resume` goes on)";
        Ok(self.changed(number, name, "paused", said))
    }

    /// `resume N`: back in the queue, its peers found on this shell's index.
    pub(super) fn resume(&mut self, number: u64) -> Result<String> {
        let name = self.open_queue()?.resume(number, self.index.clone())?;
        let said = "back in the queue; only what is missing is fetched";
        Ok(self.changed(number, name, "queued", said))
    }

    fn changed(&mut self, number: u64, name: String, state: &str, said: &str) -> String {
        self.emit(Record::Changed {
            transfer: number,
            name: name.clone(),
            state: state.to_owned(),
        });
        format!("download {number} ({}) {said}\n", render::shown(&name))
    }

    pub(super) fn clear(&mut self) -> Result<String> {
        let cleared = self.open_queue()?.clear();
        self.emit(Record::Cleared {
            count: cleared as u64,
        });
        Ok(format!(
            "cleared {} that ended\n",
            render::count(cleared as u64, "download")
        ))
    }

    pub(super) fn uploads(&mut self) -> Result<String> {
        let mut out = String::new();
        self.rows = true;
        let Some(sharing) = self.services.sharing() else {
            put!(
                out,
                "not sharing anything, so nobody downloads from here (`register` shares a folder)"
            );
            return Ok(out);
        };
        let rows = sharing.uploads().rows();
        if rows.is_empty() {
            put!(out, "nobody is downloading from this peer");
            return Ok(out);
        }
        let mut t = table(
            &["Peer ID", "Key", "From", "File", "Sent", "Rate", "State"],
            &[0, 4, 5],
        );
        for r in &rows {
            let peer_id = crate::index::store::peer_id_of(&r.fingerprint);
            let rate = (r.waiting.is_none() && r.elapsed > Duration::ZERO)
                .then(|| r.sent as f64 / r.elapsed.as_secs_f64());
            self.emit(Record::Upload {
                peer_id,
                fingerprint: r.fingerprint.to_string(),
                at: r.from.into(),
                name: r.name.clone(),
                size: r.size,
                sent: r.sent,
                rate,
                position: r.waiting,
            });
            t.add_row(vec![
                peer_id.to_string(),
                r.fingerprint.short(),
                r.from.to_string(),
                render::shown(&r.name),
                format!("{} of {}", render::size(r.sent), render::size(r.size)),
                per_second(rate),
                match r.waiting {
                    Some(position) => format!("waiting for a slot, position {position}"),
                    None => "sending".into(),
                },
            ]);
        }
        put!(out, "{t}");
        let waiting = rows.iter().filter(|r| r.waiting.is_some()).count() as u64;
        put!(
            out,
            "{} sending, {} waiting for a slot",
            rows.len() as u64 - waiting,
            waiting
        );
        Ok(out)
    }

    pub(super) async fn link(&mut self, name: &str, peer: Option<PeerRef>) -> Result<String> {
        let hits = self.client().await?.lookup(name).await?;
        let sources = download::sources(name, peer.as_ref(), hits)?;
        let file = &sources[0].file;
        let saved_as = download::safe_file_name(&file.name)?;
        let link = link::Link {
            sha256: file.sha256.clone(),
            name: saved_as.clone(),
            size: Some(file.size),
        };
        self.emit(Record::Link {
            link: link.text(),
            name: saved_as,
            size: file.size,
            sha256: file.sha256.clone(),
        });
        Ok(format!("{}\n", link.text()))
    }

    /// What `status` says of limits, downloads and uploads.
    pub(super) fn activity(&mut self) -> String {
        let mut out = String::new();
        put!(
            out,
            "limits: upload {}, download {}",
            show_rate(self.upload.rate()),
            show_rate(self.download.rate())
        );
        let transfers = self.services.transfers();
        let (running, queued, paused) = transfers.counts();
        put!(
            out,
            "transfers: {running} running, {queued} queued, {paused} paused (at most {} at once; `transfers` lists them)",
            self.config.peer.max_downloads
        );
        if let Some(sharing) = self.services.sharing() {
            let rows = sharing.uploads().rows();
            let waiting = rows.iter().filter(|r| r.waiting.is_some()).count();
            put!(
                out,
                "uploads: {} sending, {waiting} waiting for a slot (`uploads` lists them)",
                rows.len() - waiting
            );
        }
        out
    }
}

/// A `get` of one word that is not a file name: `sha256:HEX`, or a link.
pub(super) fn is_content_word(word: &str) -> bool {
    word.to_lowercase().starts_with("sha256:") || link::is_link(word)
}
