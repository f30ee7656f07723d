//! The peer: the folder it shares ([`share`]), the file server that serves it
//! ([`server`]), its session with the index ([`session`]) and the downloader
//! ([`download`]).

pub mod download;
pub mod limit;
pub mod resume;
pub mod server;
pub mod session;
pub mod share;
pub mod transfer;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use smol::{Async, Task};

use crate::client::IndexClient;
use crate::error::{IoContext, Result};
use crate::runtime::{self, ShutdownTrigger};
use server::SharedFolder;
use session::{Session, SessionConfig, SessionState};
use share::Share;

/// Round-trip time of a ping to the file server at `addr` (after connecting).
pub async fn ping(addr: SocketAddr, limits: crate::protocol::Limits) -> Result<Duration> {
    use crate::error::Error;
    use crate::protocol::{self, Connection, PeerRequest, PeerResponse};
    let mut conn = Connection::connect(addr, limits).await?;
    conn.send(&PeerRequest::Hello {
        version: protocol::VERSION,
    })
    .await?;
    if !matches!(conn.recv_reply().await?, PeerResponse::Welcome { .. }) {
        return Err(Error::msg(format!("{addr} did not say hello")));
    }
    let started = std::time::Instant::now();
    conn.send(&PeerRequest::Ping {}).await?;
    match conn.recv_reply().await? {
        PeerResponse::Pong {} => Ok(started.elapsed()),
        other => Err(Error::Malformed(format!(
            "{addr} answered a ping with {other:?}"
        ))),
    }
}

/// Longest interval between heartbeats, whatever the session TTL.
const MAX_HEARTBEAT: Duration = Duration::from_secs(10);

/// How a peer shares.
#[derive(Debug, Clone)]
pub struct SharingSettings {
    /// Address to serve files on; `None` means the address we reach the index from.
    pub host: Option<IpAddr>,
    /// Port to serve files on (0 = any).
    pub port: u16,
    /// The file server's bounds.
    pub server: server::Settings,
    /// The index's session TTL, which sets how often we send heartbeats.
    pub session_ttl: Duration,
}

/// A folder being shared: file server running, registered with the index.
pub struct Sharing {
    /// Where the file server listens.
    pub addr: SocketAddr,
    /// The index we are registered with.
    pub index: SocketAddr,
    folder: SharedFolder,
    session: Session,
    server: Task<Result<()>>,
    stop_server: ShutdownTrigger,
}

impl Sharing {
    /// Start serving `share` and register it with the index at `index`.
    pub async fn start(
        share: Share,
        index: SocketAddr,
        settings: &SharingSettings,
    ) -> Result<Sharing> {
        let limits = settings.server.limits;
        let mut client = IndexClient::connect(index, limits).await?;
        let host = match settings.host {
            Some(host) => host,
            None => client.local_addr()?.ip(),
        };
        let listener = Async::<TcpListener>::bind(SocketAddr::new(host, settings.port))
            .context(|| format!("cannot serve files on {host} port {}", settings.port))?;
        let addr = listener
            .get_ref()
            .local_addr()
            .context(|| "reading the bound address".into())?;
        let token = session::new_token();
        let files = share.entries();
        let peer_id = client.register(addr.port(), &token, &files).await?;
        let folder: SharedFolder = Arc::new(RwLock::new(share));
        let (stop_server, shutdown) = runtime::shutdown_pair();
        let server = runtime::spawn(server::run(
            listener,
            folder.clone(),
            settings.server.clone(),
            shutdown,
        ));
        let config = SessionConfig {
            index,
            port: addr.port(),
            token,
            limits,
            heartbeat: (settings.session_ttl / 3).min(MAX_HEARTBEAT),
        };
        let session = Session::spawn(client, peer_id, config, folder.clone());
        Ok(Sharing {
            addr,
            index,
            folder,
            session,
            server,
            stop_server,
        })
    }

    /// The session's state (Peer ID, connected).
    pub fn state(&self) -> SessionState {
        self.session.state()
    }

    /// The shared folder.
    pub fn folder(&self) -> &SharedFolder {
        &self.folder
    }

    /// Withdraw the files from the index and stop serving them.
    pub async fn stop(self) {
        self.session.stop().await;
        self.stop_server.trigger();
        let _ = self.server.await;
    }
}
