//! Refreshing a share: scan its folders again, hash what changed, and tell the index
//! (through the session) what is new, changed or gone.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::scan::{self, HashStats};
use super::serve::SharedFolder;
use super::{Living, session};
use crate::client::Changes;
use crate::error::Result;

/// What a refresh did.
#[derive(Debug, Clone, Default)]
pub struct Refreshed {
    /// What the index was told.
    pub changes: Changes,
    /// What hashing read.
    pub stats: HashStats,
    /// Files left out for now because they are still changing.
    pub unsettled: usize,
}

/// What the sharing peer and its background refresher share.
pub(super) struct Shared {
    pub(super) folder: SharedFolder,
    pub(super) roots: Mutex<Vec<PathBuf>>,
    pub(super) excluded: Mutex<BTreeSet<String>>,
    pub(super) living: Living,
    pub(super) updates: session::Updater,
    /// One refresh at a time.
    pub(super) refreshing: smol::lock::Mutex<()>,
}

impl Shared {
    /// Scan the folders again and tell the index what changed.
    pub(super) async fn refresh(self: &Arc<Self>) -> Result<Refreshed> {
        let _one = self.refreshing.lock().await;
        let me = self.clone();
        smol::unblock(move || me.refresh_now()).await
    }

    fn refresh_now(&self) -> Result<Refreshed> {
        let roots = self.roots.lock().clone();
        let excluded = self.excluded.lock().clone();
        let mut listing = scan::scan_roots(&roots, &self.living.ignore)?;
        // Files shared as they are now are settled whatever their age; new or changed
        // ones must have stopped changing first. A shared file that is changing (or
        // whose metadata alone changed: a chmod, a new hard link) stays announced as it
        // was until it settles; a downloader catches any difference by its hash.
        let unsettled = {
            let current = self.folder.read();
            listing.settle(self.living.settle, |name, stamp| current.has(name, stamp))
        };
        let (mut share, stats) = listing.hash_with(&self.living.cache, &|_| {})?;
        share.carry_over(&self.folder.read(), &unsettled);
        let unsettled = unsettled.len();
        let share = share.without(|f| {
            excluded.contains(&f.entry.name)
                || excluded.contains(&f.path.to_string_lossy().into_owned())
        });
        let changes = self.folder.read().changes_to(&share);
        if stats.hashed_files > 0 || !changes.removed.is_empty() {
            let mut cache = self.living.cache.lock();
            for root in share.roots() {
                cache.prune(root, |path| path.exists());
            }
            cache.save();
        }
        *self.folder.write() = share;
        if !changes.is_empty() {
            self.updates.update(changes.clone());
        }
        Ok(Refreshed {
            changes,
            stats,
            unsettled,
        })
    }
}
