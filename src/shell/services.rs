//! What this process serves in the background, reachable both from the shell and from the
//! signal handler that shuts it down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use smol::Task;

use crate::error::Result;
use crate::index::{MemoryStore, PgStore, Store};
use crate::peer::Sharing;
use crate::runtime::ShutdownTrigger;

/// Where a running index server keeps the index.
#[derive(Clone)]
pub enum Backend {
    /// In memory.
    Memory(Arc<MemoryStore>),
    /// In PostgreSQL.
    Postgres(Arc<PgStore>),
}

impl Backend {
    async fn peers(&self) -> Result<Vec<crate::protocol::PeerInfo>> {
        match self {
            Backend::Memory(store) => store.peers().await,
            Backend::Postgres(store) => store.peers().await,
        }
        .map_err(|e| crate::error::Error::msg(e.to_string()))
    }

    /// Where the index is, in a few words.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "in memory",
            Backend::Postgres(_) => "in PostgreSQL",
        }
    }
}

/// A running index server.
pub struct Serving {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its accept loop.
    pub task: Task<Result<()>>,
    /// Stops it.
    pub trigger: ShutdownTrigger,
    /// Its store, for `status`.
    pub backend: Backend,
}

/// The background services of this process.
#[derive(Default)]
pub struct Services {
    serving: Mutex<Option<Serving>>,
    sharing: Mutex<Option<Sharing>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Services {
    /// Whether anything is served (so the process must not exit at end of input).
    pub fn is_serving(&self) -> bool {
        lock(&self.serving).is_some() || lock(&self.sharing).is_some()
    }

    /// Where the index server listens, if it runs.
    pub fn index_addr(&self) -> Option<SocketAddr> {
        lock(&self.serving).as_ref().map(|s| s.addr)
    }

    /// Record the index server.
    pub fn set_serving(&self, serving: Serving) {
        *lock(&self.serving) = Some(serving);
    }

    /// Record the sharing peer.
    pub fn set_sharing(&self, sharing: Sharing) {
        *lock(&self.sharing) = Some(sharing);
    }

    /// Take the sharing peer out, to stop it.
    pub fn take_sharing(&self) -> Option<Sharing> {
        lock(&self.sharing).take()
    }

    /// Put the sharing peer back and describe it in a few words.
    pub fn set_sharing_and_summarize(&self, sharing: Sharing) -> String {
        let state = sharing.state();
        let files = sharing
            .folder()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        self.set_sharing(sharing);
        format!(
            "peer {} shares {}",
            state.peer_id,
            super::render::count(files as u64, "file")
        )
    }

    /// One line about the index server.
    pub async fn serving_summary(&self) -> Option<String> {
        let (addr, backend) = {
            let serving = lock(&self.serving);
            let s = serving.as_ref()?;
            (s.addr, s.backend.clone())
        };
        let peers = backend.peers().await.unwrap_or_default();
        let files: u64 = peers.iter().map(|p| p.files).sum();
        Some(format!(
            "listening on {addr}, index {} ({}, {})",
            backend.name(),
            super::render::count(peers.len() as u64, "peer"),
            super::render::count(files, "file")
        ))
    }

    /// One line about the shared folder.
    pub fn sharing_summary(&self) -> Option<String> {
        let sharing = lock(&self.sharing);
        let s = sharing.as_ref()?;
        let state = s.state();
        let folder = s.folder().read().unwrap_or_else(|e| e.into_inner());
        let roots: Vec<String> = folder
            .roots()
            .iter()
            .map(|r| r.display().to_string())
            .collect();
        Some(format!(
            "{} as peer {} ({}, {}) on {} with the index at {} ({})",
            roots.join(", "),
            state.peer_id,
            super::render::count(folder.len() as u64, "file"),
            super::render::size(folder.bytes()),
            s.addr,
            state.index,
            if state.connected {
                "connected"
            } else {
                "reconnecting"
            }
        ))
    }

    /// Withdraw shared files from the index and stop every server.
    pub async fn shutdown(&self) {
        let sharing = lock(&self.sharing).take();
        if let Some(sharing) = sharing {
            sharing.stop().await;
        }
        let serving = lock(&self.serving).take();
        if let Some(serving) = serving {
            serving.trigger.trigger();
            let _ = serving.task.await;
        }
    }
}
