//! Downloads that run in the background while the shell stays usable (`get -b`), and
//! the `transfers` listing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::download::{self, Cancel, Job, Status};
use crate::runtime;
use smol::Task;
use smol::future::FutureExt;

use super::render;

/// One background download.
struct Entry {
    id: usize,
    name: String,
    sha256: String,
    status: Arc<Status>,
    cancel: Cancel,
    started: Instant,
    outcome: Arc<Mutex<Option<String>>>,
    task: Option<Task<()>>,
}

/// How long stopping the background downloads may take: each saves what arrived.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// The background downloads of this shell.
#[derive(Default)]
pub struct Transfers {
    entries: Mutex<Vec<Entry>>,
}

impl Transfers {
    /// Start `job` in the background; returns its number.
    pub fn start(&self, job: Job) -> usize {
        let mut entries = self.entries.lock();
        let id = entries.len() + 1;
        let outcome = Arc::new(Mutex::new(None));
        let name = job.file.name.clone();
        let sha256 = job.file.sha256.clone();
        let status = job.status.clone();
        let cancel = job.cancel.clone();
        let done = outcome.clone();
        let entry_name = name.clone();
        let task = runtime::spawn(async move {
            let text = match download::fetch(job).await {
                Ok(done) => {
                    info!("background download {id} finished: {}", done.path.display());
                    format!("saved {} (sha256 ok)", done.path.display())
                }
                Err(e) => {
                    warn!("background download {id} ({name}) failed: {e}");
                    format!("failed: {e}")
                }
            };
            *done.lock() = Some(text);
        });
        entries.push(Entry {
            id,
            name: entry_name,
            sha256,
            status,
            cancel,
            started: Instant::now(),
            outcome,
            task: Some(task),
        });
        id
    }

    /// The number of the running background download of these contents, if any.
    pub fn running_of(&self, sha256: &str) -> Option<usize> {
        let entries = self.entries.lock();
        entries
            .iter()
            .find(|e| e.sha256 == sha256 && e.outcome.lock().is_none())
            .map(|e| e.id)
    }

    /// How many background downloads are still running.
    pub fn running(&self) -> usize {
        let entries = self.entries.lock();
        entries
            .iter()
            .filter(|e| e.outcome.lock().is_none())
            .count()
    }

    /// Stop every running background download, keeping what arrived for a resume, and
    /// wait (a moment at most) for each to save its state; returns how many were stopped.
    pub async fn stop_all(&self) -> usize {
        let tasks: Vec<Task<()>> = {
            let mut entries = self.entries.lock();
            entries
                .iter_mut()
                .filter(|e| e.outcome.lock().is_none())
                .filter_map(|e| {
                    e.cancel.cancel();
                    e.task.take()
                })
                .collect()
        };
        let stopped = tasks.len();
        async {
            for task in tasks {
                task.await;
            }
        }
        .or(async {
            smol::Timer::after(STOP_GRACE).await;
        })
        .await;
        stopped
    }

    /// The `transfers` table, or `None` when there were none.
    pub fn render(&self) -> Option<String> {
        let entries = self.entries.lock();
        if entries.is_empty() {
            return None;
        }
        let mut table = Table::new();
        table
            .load_style(UTF8_FULL_CONDENSED)
            .set_header(vec!["#", "File", "Progress", "Rate", "Peers", "State"]);
        for e in entries.iter() {
            let total = e.status.total.load(Ordering::Relaxed);
            let done = e.status.done.load(Ordering::Relaxed);
            let percent = if total == 0 {
                100.0
            } else {
                done as f64 * 100.0 / total as f64
            };
            let outcome = e.outcome.lock().clone();
            table.add_row(vec![
                e.id.to_string(),
                e.name.clone(),
                format!("{percent:.0}% of {}", render::size(total)),
                // Only this run's bytes: a resume's bytes already there are no speed.
                render::rate(
                    done.saturating_sub(e.status.resumed.load(Ordering::Relaxed)),
                    e.started.elapsed(),
                ),
                e.status.peers.load(Ordering::Relaxed).to_string(),
                outcome.unwrap_or_else(|| "running".into()),
            ]);
        }
        Some(table.to_string())
    }
}
