//! The download queue (`get -b`, `transfers`, `cancel`, `pause`, `resume`, `clear`):
//! downloads that run in the background while the shell stays usable, at most
//! `[peer] max_downloads` at once, the rest waiting their turn. A service with no user
//! interface: the shell's commands drive it and present its [`Row`]s.
//!
//! - [`mod@file`]: the queue kept in the downloads folder: a napster started again there
//!   shows it and resumes what was unfinished, finding the peers again by content on the
//!   index each download came from. What had arrived is in each part file with its hash
//!   state, so it is neither fetched nor hashed again.
//! - `entry`: one download of the queue, and the row it shows as.
//! - `launch`: starting one download: finding its sources, then the job.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use smol::Task;
use smol::future::FutureExt;
use tracing::{info, warn};

use crate::download::{self, Cancel};
use crate::error::{Error, Result};
use crate::protocol::Hit;
use crate::runtime;
use file::{QueueFile, Queued, Stage};

mod entry;
pub mod file;
mod launch;

pub use entry::Row;
use entry::{Entry, Intent, kept, row, shown_name};
pub use launch::{Launch, QueueDialer};
use launch::{discard, run};

/// How long stopping the background downloads may take: each saves what arrived.
const STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    launch: Option<Launch>,
    file: Option<QueueFile>,
    /// Why the queue is not kept across restarts, when it is not.
    unkept: Option<String>,
    stopping: bool,
}

/// The download queue of this shell.
#[derive(Default)]
pub struct Transfers {
    inner: Mutex<Inner>,
}

impl Transfers {
    /// Whether the queue was opened.
    pub fn is_open(&self) -> bool {
        self.inner.lock().launch.is_some()
    }

    /// Take the queue kept in the downloads folder (or keep it in memory only, saying
    /// why, when another napster holds it) and start downloads with `launch`.
    pub fn open(&self, launch: Launch) -> Option<String> {
        let mut inner = self.inner.lock();
        if inner.launch.is_some() {
            return None;
        }
        match QueueFile::open(&launch.downloads) {
            Ok((file, saved)) => {
                inner.entries = saved
                    .into_iter()
                    .map(|q| {
                        let entry = Entry::new(q, None);
                        let kept = kept(&launch.downloads, &entry.q);
                        entry.status.done.store(kept, Ordering::Relaxed);
                        entry.status.resumed.store(kept, Ordering::Relaxed);
                        entry
                    })
                    .collect();
                inner.file = Some(file);
            }
            Err(e) => inner.unkept = Some(e.to_string()),
        }
        inner.launch = Some(launch);
        inner.unkept.clone()
    }

    /// Why the queue is not kept across restarts, if it is not.
    pub fn unkept(&self) -> Option<String> {
        self.inner.lock().unkept.clone()
    }

    /// The queue kept in `dir` when this shell has not opened it.
    pub fn saved_in(dir: &std::path::Path) -> Vec<Row> {
        file::read(dir)
            .into_iter()
            .map(|q| {
                let entry = Entry::new(q, None);
                let kept = kept(dir, &entry.q);
                entry.status.done.store(kept, Ordering::Relaxed);
                row(&entry)
            })
            .collect()
    }

    /// The number and state of a running download of these contents, if any: a `get`
    /// of the same file meanwhile is told so (not that "another napster" has it).
    pub fn running_of(&self, sha256: &str) -> Option<(u64, String)> {
        let inner = self.inner.lock();
        inner
            .entries
            .iter()
            .find(|e| e.running && e.q.file.sha256 == sha256)
            .map(|e| (e.q.number, row(e).state))
    }

    /// Add a download of `q` (its number is given here), found at `sources`; returns its
    /// number, or refuses one of the same contents into the same place still in the queue.
    pub fn add(self: &Arc<Self>, mut q: Queued, sources: Vec<Hit>) -> Result<u64> {
        let number = {
            let mut inner = self.inner.lock();
            if let Some(same) = inner.entries.iter().find(|e| {
                e.q.stage.is_open() && e.q.file.sha256 == q.file.sha256 && e.q.folder == q.folder
            }) {
                return Err(Error::msg(format!(
                    "{} is already in the queue as download {} ({}); `transfers` shows it",
                    q.file.name,
                    same.q.number,
                    row(same).state
                )));
            }
            q.number = inner.entries.iter().map(|e| e.q.number).max().unwrap_or(0) + 1;
            let number = q.number;
            inner.entries.push(Entry::new(q, Some(sources)));
            save(&inner);
            number
        };
        self.pump();
        Ok(number)
    }

    /// Start queued downloads while fewer than the most allowed run.
    pub fn pump(self: &Arc<Self>) {
        let mut inner = self.inner.lock();
        let Some(launch) = inner.launch.clone() else {
            return;
        };
        if inner.stopping {
            return;
        }
        let mut running = inner.entries.iter().filter(|e| e.running).count();
        for entry in inner.entries.iter_mut() {
            if running >= launch.max {
                break;
            }
            if entry.running || entry.q.stage != Stage::Queued {
                continue;
            }
            running += 1;
            entry.running = true;
            entry.intent = Intent::Run;
            entry.cancel = Cancel::default();
            entry.status = Arc::default();
            entry.started = Some(Instant::now());
            let (q, sources) = (entry.q.clone(), entry.sources.take());
            let (status, cancel) = (entry.status.clone(), entry.cancel.clone());
            let (this, launch) = (self.clone(), launch.clone());
            entry.task = Some(runtime::spawn(async move {
                let number = q.number;
                let result = run(&launch, q, sources, status, cancel).await;
                this.finished(number, result);
            }));
        }
    }

    /// A download's task ended with `result`.
    fn finished(self: &Arc<Self>, number: u64, result: Result<download::Downloaded>) {
        {
            let mut inner = self.inner.lock();
            let downloads = inner.launch.as_ref().map(|l| l.downloads.clone());
            let Some(entry) = inner.entries.iter_mut().find(|e| e.q.number == number) else {
                return;
            };
            entry.running = false;
            if let Some(task) = entry.task.take() {
                task.detach();
            }
            let name = entry.q.file.name.clone();
            entry.q.stage = match (result, entry.intent) {
                (Ok(done), _) => {
                    info!("download {number} finished: {}", done.path.display());
                    Stage::Done(done.path.display().to_string())
                }
                (Err(_), Intent::Pause) => Stage::Paused,
                (Err(_), Intent::Exit) => Stage::Queued,
                (Err(_), Intent::Cancel) => {
                    if let Some(downloads) = downloads {
                        discard(&downloads, &entry.q);
                    }
                    Stage::Cancelled
                }
                (Err(e), Intent::Run) => {
                    warn!("download {number} ({name}) failed: {e}");
                    Stage::Failed(queue_advice(&e.to_string(), number))
                }
            };
            save(&inner);
        }
        self.pump();
    }

    /// How many downloads are running.
    pub fn running(&self) -> usize {
        self.inner
            .lock()
            .entries
            .iter()
            .filter(|e| e.running)
            .count()
    }

    /// Running, queued and paused downloads.
    pub fn counts(&self) -> (usize, usize, usize) {
        let inner = self.inner.lock();
        let count = |f: &dyn Fn(&Entry) -> bool| inner.entries.iter().filter(|e| f(e)).count();
        (
            count(&|e| e.running),
            count(&|e| !e.running && e.q.stage == Stage::Queued),
            count(&|e| e.q.stage == Stage::Paused),
        )
    }

    /// The rows of `transfers`.
    pub fn rows(&self) -> Vec<Row> {
        self.inner.lock().entries.iter().map(row).collect()
    }

    /// Stop download `number` for `intent` and wait (a moment at most) for it to save
    /// what arrived; `Ok(false)` when it was not running.
    async fn stop(&self, number: u64, intent: Intent) -> Result<bool> {
        let task = {
            let mut inner = self.inner.lock();
            let entry = find(&mut inner, number)?;
            if !entry.running {
                return Ok(false);
            }
            entry.intent = intent;
            entry.cancel.cancel();
            entry.task.take()
        };
        if let Some(mut task) = task {
            let ended = async {
                (&mut task).await;
                true
            }
            .or(async {
                smol::Timer::after(STOP_GRACE).await;
                false
            })
            .await;
            // Dropping a task cancels it: its end, which records the new state, would
            // never run and the row would say `pausing` for ever. Let it end in its time.
            if !ended {
                task.detach();
            }
        }
        Ok(true)
    }

    /// `cancel N`: stop it and remove its part file.
    pub async fn cancel(self: &Arc<Self>, number: u64) -> Result<String> {
        if !self.stop(number, Intent::Cancel).await? {
            let mut inner = self.inner.lock();
            let downloads = inner.launch.as_ref().map(|l| l.downloads.clone());
            let entry = find(&mut inner, number)?;
            if !entry.q.stage.is_open() {
                return Err(Error::msg(format!(
                    "download {number} has ended ({}); `clear` drops it from the list",
                    row(entry).state
                )));
            }
            if let Some(downloads) = downloads {
                discard(&downloads, &entry.q);
            }
            entry.q.stage = Stage::Cancelled;
            save(&inner);
        }
        Ok(self.name(number))
    }

    /// `pause N`: stop it and keep what arrived.
    pub async fn pause(self: &Arc<Self>, number: u64) -> Result<String> {
        if !self.stop(number, Intent::Pause).await? {
            let mut inner = self.inner.lock();
            let entry = find(&mut inner, number)?;
            if entry.q.stage != Stage::Queued {
                return Err(Error::msg(format!(
                    "download {number} is not running or queued ({}); nothing to pause",
                    row(entry).state
                )));
            }
            entry.q.stage = Stage::Paused;
            save(&inner);
        }
        Ok(self.name(number))
    }

    /// `resume N`: a paused or failed download goes back in the queue, to find its
    /// peers on `index` (the shell's index now) when given.
    pub fn resume(
        self: &Arc<Self>,
        number: u64,
        index: Option<Vec<std::net::SocketAddr>>,
    ) -> Result<String> {
        {
            let mut inner = self.inner.lock();
            let entry = find(&mut inner, number)?;
            if let Some(index) = index {
                entry.q.index = index;
            }
            match entry.q.stage {
                Stage::Paused | Stage::Failed(_) => entry.q.stage = Stage::Queued,
                _ => {
                    return Err(Error::msg(format!(
                        "download {number} is {}; only a paused or failed one resumes",
                        row(entry).state
                    )));
                }
            }
            save(&inner);
        }
        self.pump();
        Ok(self.name(number))
    }

    /// `clear`: drop finished, failed and cancelled downloads; returns how many.
    pub fn clear(&self) -> usize {
        let mut inner = self.inner.lock();
        let before = inner.entries.len();
        inner.entries.retain(|e| e.running || e.q.stage.is_open());
        let cleared = before - inner.entries.len();
        save(&inner);
        cleared
    }

    fn name(&self, number: u64) -> String {
        let inner = self.inner.lock();
        inner
            .entries
            .iter()
            .find(|e| e.q.number == number)
            .map(|e| shown_name(&e.q))
            .unwrap_or_default()
    }

    /// Stop every running download, keeping what arrived and its place in the queue
    /// (a napster started here again resumes it), and wait (a moment at most) for each
    /// to save its state; returns how many were stopped.
    pub async fn stop_all(&self) -> usize {
        let tasks: Vec<Task<()>> = {
            let mut inner = self.inner.lock();
            inner.stopping = true;
            inner
                .entries
                .iter_mut()
                .filter(|e| e.running)
                .filter_map(|e| {
                    e.intent = Intent::Exit;
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
        save(&self.inner.lock());
        stopped
    }
}

fn find(inner: &mut Inner, number: u64) -> Result<&mut Entry> {
    inner
        .entries
        .iter_mut()
        .find(|e| e.q.number == number)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no download {number} in the queue; `transfers` lists them"
            ))
        })
}

fn save(inner: &Inner) {
    if let Some(file) = &inner.file {
        let entries: Vec<Queued> = inner.entries.iter().map(|e| e.q.clone()).collect();
        file.save(&entries);
    }
}

/// The download engine's advice is a one-shot `get`'s ("run get again"); in the queue the
/// same action is `resume N`, so a failed row says that instead.
fn queue_advice(why: &str, number: u64) -> String {
    let resume = format!("`resume {number}`");
    [
        ("run get again to resume", format!("{resume} continues it")),
        (
            "get it again to verify and finish",
            format!("{resume} verifies and finishes it"),
        ),
        ("`get` again (from another peer)", resume.clone()),
        ("run get again", format!("{resume} starts over")),
    ]
    .iter()
    .fold(why.to_owned(), |text, (one_shot, queued)| {
        text.replace(one_shot, queued)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_row_names_the_queues_action() {
        let why = "a.bin stopped at 1 MiB of 4 MiB (peer 3 went away); what arrived is kept: \
                   run get again to resume";
        let advice = super::queue_advice(why, 7);
        assert!(
            advice.ends_with("what arrived is kept: `resume 7` continues it"),
            "{advice}"
        );
        assert!(!advice.contains("get"), "{advice}");
    }
}
