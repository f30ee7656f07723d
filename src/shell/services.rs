//! What this process runs in the background (the index server, the share, background
//! downloads), reachable both from the shell and from the signal handler that shuts it
//! down.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use smol::Task;

use crate::error::Result;
use crate::index::{MemoryStore, PgStore, Store};
use crate::peer::Sharing;
use crate::rendezvous::Rendezvous;
use crate::runtime::ShutdownTrigger;

use super::commands::outcome::{IndexServer, Sharing as SharingStatus};
use crate::download::queue::Transfers;

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
    /// Its metrics endpoint, when `[index] metrics` is set.
    pub metrics: Option<crate::index::metrics::Endpoint>,
}

/// The background services of this process.
#[derive(Default)]
pub struct Services {
    serving: Mutex<Option<Serving>>,
    sharing: Mutex<Option<Arc<Sharing>>>,
    transfers: Arc<Transfers>,
    rendezvous: Arc<Rendezvous>,
}

impl Services {
    /// The URL of the index server's metrics, if it serves them.
    pub fn metrics_url(&self) -> Option<String> {
        self.serving
            .lock()
            .as_ref()
            .and_then(|s| s.metrics.as_ref().map(|m| m.url()))
    }

    /// Whether anything is served (so the process must not exit at end of input).
    pub fn is_serving(&self) -> bool {
        self.serving.lock().is_some() || self.sharing.lock().is_some()
    }

    /// Where the index server listens, if it runs.
    pub fn index_addr(&self) -> Option<SocketAddr> {
        self.serving.lock().as_ref().map(|s| s.addr)
    }

    /// Record the index server.
    pub fn set_serving(&self, serving: Serving) {
        *self.serving.lock() = Some(serving);
    }

    /// Record the sharing peer.
    pub fn set_sharing(&self, sharing: Sharing) {
        *self.sharing.lock() = Some(Arc::new(sharing));
    }

    /// The sharing peer, left in place (a signal can still stop it meanwhile).
    pub fn sharing(&self) -> Option<Arc<Sharing>> {
        self.sharing.lock().clone()
    }

    /// Take the sharing peer out, to stop it.
    pub fn take_sharing(&self) -> Option<Arc<Sharing>> {
        self.sharing.lock().take()
    }

    /// Where the file server hands reverse connections to this process's downloads.
    pub fn rendezvous(&self) -> &Arc<Rendezvous> {
        &self.rendezvous
    }

    /// The background downloads.
    pub fn transfers(&self) -> &Arc<Transfers> {
        &self.transfers
    }

    /// The index server, for `status`.
    pub async fn serving_status(&self) -> Option<IndexServer> {
        let (addr, backend) = {
            let serving = self.serving.lock();
            let s = serving.as_ref()?;
            (s.addr, s.backend.clone())
        };
        let peers = backend.peers().await.unwrap_or_default();
        Some(IndexServer {
            addr,
            backend: backend.name(),
            peers: peers.len() as u64,
            files: peers.iter().map(|p| p.files).sum(),
        })
    }

    /// What `status` says of the router's port mapping of the file server, while sharing.
    pub fn mapping_summary(&self) -> Option<String> {
        let sharing = self.sharing.lock();
        Some(sharing.as_ref()?.mapping().to_string())
    }

    /// The share, for `status`: folders, Peer ID, files, server, index.
    pub fn sharing_status(&self) -> Option<SharingStatus> {
        let sharing = self.sharing.lock();
        let s = sharing.as_ref()?;
        let state = s.state();
        let folder = s.folder().read();
        Some(SharingStatus {
            roots: folder
                .roots()
                .iter()
                .map(|r| r.display().to_string())
                .collect(),
            peer_id: state.peer_id,
            nickname: state.nickname.clone(),
            files: folder.len() as u64,
            bytes: folder.bytes(),
            addr: s.addr,
            index: state.index,
            connected: state.connected,
            reach: state.reach.into(),
        })
    }

    /// Stop background downloads (keeping what arrived), withdraw shared files from the
    /// index and stop every server.
    pub async fn shutdown(&self) {
        let stopped = self.transfers.stop_all().await;
        if stopped > 0 {
            eprintln!(
                "napster: stopped {}; what arrived is kept, and napster started again in \
                 this folder resumes the queue",
                super::present::table::count(stopped as u64, "background download")
            );
        }
        let sharing = self.sharing.lock().take();
        if let Some(sharing) = sharing {
            sharing.stop().await;
        }
        let serving = self.serving.lock().take();
        if let Some(serving) = serving {
            serving.trigger.trigger();
            let _ = serving.task.await;
        }
    }
}
