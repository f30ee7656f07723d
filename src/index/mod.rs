//! The index server: the shared accept loop, one task per connection, and the
//! [`Store`] behind them. A connection that registers becomes its peer's session: the
//! peer's files live exactly as long as it does (closed, timed out or replaced by a
//! newer session). What each request does is [`handler`]'s.

pub mod budget;
pub mod handler;
pub mod metrics;
mod nat;
pub mod reach;
pub mod reject;
pub mod relay;
pub mod store;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use smol::Async;
use smol::future::FutureExt;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::Result;
use crate::gate::{self, Admission};
use crate::identity::Identity;
use crate::net;
use crate::protocol::{self, Connection, ErrorCode, IndexRequest, IndexResponse, Limits, Reply};
use crate::runtime::{self, Shutdown};
use handler::Session;
pub use metrics::Metrics;
pub use store::{MemoryStore, NameMatch, PgStore, Query, Registration, Store, StoreError, Usage};

/// How often the reaper looks for peers whose sessions went silent.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// What an index server enforces.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The key this index proves to everyone who connects.
    pub identity: Identity,
    /// Wire limits.
    pub limits: Limits,
    /// How long a silent connection (peer session or client) lives.
    pub session_ttl: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections served at once from one source address.
    pub max_connections_per_address: usize,
    /// Most TLS handshakes in flight at once.
    pub max_handshakes: usize,
    /// Most TLS handshakes in flight at once from one source address.
    pub max_handshakes_per_address: usize,
    /// Most rows one search returns.
    pub max_results: usize,
    /// Most files one peer may share.
    pub max_files_per_peer: usize,
    /// Most files the peers at one address may share together.
    pub max_files_per_address: usize,
    /// Most files the whole index holds.
    pub max_index_files: usize,
    /// Most bytes of file names the whole index holds.
    pub max_index_name_bytes: usize,
    /// Longest file name accepted, in bytes.
    pub max_name_len: usize,
    /// Fewest characters (besides `*` and `?`) a search pattern must have.
    pub min_pattern_len: usize,
    /// How long the connect-back check at `register` may take; `None` skips it (every
    /// peer counts as reachable), for tests of other things at unroutable addresses.
    pub connect_back: Option<Duration>,
    /// What the relay allows.
    pub relay: relay::Limits,
    /// How many pushes one asker may cause a given sharer per window.
    pub pushes: budget::PushLimits,
}

impl Settings {
    /// The settings of a config.
    /// (With this process's in-memory identity: `serve` sets the configured one.)
    pub fn from_config(config: &Config) -> Self {
        Settings {
            identity: Identity::ephemeral(),
            limits: config.limits(),
            session_ttl: config.session_ttl(),
            max_connections: config.index.max_connections,
            max_connections_per_address: config.index.max_connections_per_address,
            max_handshakes: config.index.max_handshakes,
            max_handshakes_per_address: config.index.max_handshakes_per_address,
            max_results: config.index.max_results,
            max_files_per_peer: config.index.max_files_per_peer,
            max_files_per_address: config.index.max_files_per_address,
            max_index_files: config.index.max_index_files,
            max_index_name_bytes: config.index.max_index_name_bytes,
            max_name_len: config.index.max_name_len,
            min_pattern_len: config.index.min_pattern_len,
            connect_back: Some(reach::CONNECT_BACK_TIMEOUT),
            relay: relay::Limits {
                enabled: config.index.relay,
                rate: config.index.relay_rate.0,
                quota: config.index.relay_quota.0,
                pipes: config.index.relay_pipes,
                pipes_per_key: config.index.relay_pipes_per_key,
                pipes_per_address: config.index.relay_pipes_per_address,
            },
            pushes: budget::PushLimits {
                per_key: config.index.pushes_per_key,
                per_address: config.index.pushes_per_address,
            },
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_config(&Config::default())
    }
}

/// One index server: its store and settings, shared by every connection.
pub struct Server<S> {
    store: Arc<S>,
    settings: Settings,
    next_session: AtomicU64,
    /// Held from checking the capacity limits to storing, so that two writes cannot both
    /// pass the check and together exceed them.
    admit: smol::lock::Mutex<()>,
    /// Registered sessions with an open connection: session → peer.
    open: Mutex<HashMap<u64, u64>>,
    /// What it counts, when metrics are on.
    metrics: Option<Arc<Metrics>>,
    /// The registered sessions it can push to.
    pushes: reach::Pushes,
    /// Its relay.
    relay: Arc<relay::Relay>,
    /// What askers have made each sharer do lately.
    budget: budget::PushBudget,
}

impl<S: Store> Server<S> {
    /// A server over `store`.
    pub fn new(store: Arc<S>, settings: Settings) -> Self {
        Server {
            store,
            next_session: AtomicU64::new(0),
            admit: smol::lock::Mutex::new(()),
            open: Mutex::default(),
            metrics: None,
            pushes: reach::Pushes::default(),
            relay: relay::Relay::new(settings.relay, None),
            budget: budget::PushBudget::new(settings.pushes),
            settings,
        }
    }

    /// Count what it does in `metrics`.
    pub fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Self {
        self.relay = relay::Relay::new(self.settings.relay, metrics.clone());
        self.metrics = metrics;
        self
    }

    /// Note which peer `session` holds now (none once it unregistered or closed).
    fn note(&self, session: u64, peer: Option<u64>) {
        let mut open = self.open.lock();
        match peer {
            Some(peer) => open.insert(session, peer),
            None => open.remove(&session),
        };
    }

    /// The (peer, session) pairs of the open, registered connections.
    fn open_sessions(&self) -> Vec<(u64, u64)> {
        let open = self.open.lock();
        open.iter()
            .map(|(&session, &peer)| (peer, session))
            .collect()
    }

    /// Withdraw silent peers, every [`EXPIRE_EVERY`], until cancelled.
    ///
    /// A session with an open connection is not silent (its connection closes after a
    /// TTL of silence), so every quarter TTL the reaper first marks this server's open
    /// sessions alive. After the store failed (say, the database was down for longer than
    /// a TTL, so no sign of life could be noted), nothing is expired for one TTL after it
    /// answers again: every server then has the time to mark its sessions alive, and live
    /// peers do not vanish from results.
    async fn reap(&self) {
        let ttl = self.settings.session_ttl;
        let mut refreshed: Option<Instant> = None;
        let mut grace_until: Option<Instant> = None;
        let mut failing = false;
        loop {
            smol::Timer::after(EXPIRE_EVERY).await;
            if refreshed.is_none_or(|at| at.elapsed() >= ttl / 4) {
                match self.store.keep_alive(&self.open_sessions()).await {
                    Ok(()) => refreshed = Some(Instant::now()),
                    Err(e) => {
                        warn!("noting open sessions alive: {e}");
                        refreshed = None;
                        failing = true;
                        continue;
                    }
                }
            }
            if failing {
                failing = false;
                grace_until = Some(Instant::now() + ttl);
                info!("the store answers again: expiring nothing for {ttl:?}");
            }
            if grace_until.is_some_and(|until| Instant::now() < until) {
                continue;
            }
            match self.store.expire(ttl).await {
                Ok(0) => {}
                Ok(n) => {
                    if let Some(metrics) = &self.metrics {
                        metrics.expired(n as u64);
                    }
                    info!("expired {n} silent peer(s)");
                }
                Err(e) => {
                    warn!("expiring peers: {e}");
                    refreshed = None;
                    failing = true;
                }
            }
        }
    }
}

/// Serve the index on `listener` until `shutdown` fires.
pub async fn run<S: Store>(
    listener: Async<TcpListener>,
    store: Arc<S>,
    settings: Settings,
    shutdown: Shutdown,
) -> Result<()> {
    run_with_metrics(listener, store, settings, shutdown, None).await
}

/// [`run`], counting what the server does in `metrics` (see [`metrics`]).
pub async fn run_with_metrics<S: Store>(
    listener: Async<TcpListener>,
    store: Arc<S>,
    settings: Settings,
    shutdown: Shutdown,
    metrics: Option<Arc<Metrics>>,
) -> Result<()> {
    let on_refused = metrics
        .clone()
        .map(|m| Arc::new(move |full| m.refused(full)) as net::OnRefused);
    let identity = settings.identity.clone();
    let bounds = gate::Bounds {
        connections: settings.max_connections,
        connections_per_address: settings.max_connections_per_address,
        handshakes: settings.max_handshakes,
        handshakes_per_address: settings.max_handshakes_per_address,
    };
    let admission = Admission::new(settings.limits, bounds, "index server");
    let server = Arc::new(Server::new(store, settings).with_metrics(metrics));
    let handoff = Some(server.relay.handoff());
    let reaper = {
        let server = server.clone();
        runtime::spawn(async move { server.reap().await })
    };
    net::accept_loop::<IndexRequest, IndexResponse, _, _>(
        listener,
        identity,
        admission,
        shutdown,
        net::Hooks {
            on_refused,
            handoff,
        },
        move |conn, shutdown| {
            let server = server.clone();
            async move { server.serve(conn, shutdown).await }
        },
    )
    .await;
    reaper.cancel().await;
    Ok(())
}

/// What woke a connection's task: a request (or its end), or a push for its peer.
enum Incoming {
    Request(std::result::Result<Option<IndexRequest>, protocol::Error>),
    Push(IndexResponse),
}

impl<S: Store> Server<S> {
    /// Serve one connection after its handshake, and withdraw its peer when it ends.
    async fn serve(&self, mut conn: Connection, shutdown: Shutdown) -> Result<()> {
        let id = self.next_session.fetch_add(1, Ordering::SeqCst);
        let mut session = Session::new(id, conn.peer_addr(), conn.peer_fingerprint());
        let result = self.requests(&mut conn, &mut session, &shutdown).await;
        self.note(session.id, None);
        if let Some(peer) = session.peer {
            self.pushes.forget(peer, session.id);
        }
        // A server shutting down leaves its peers' files to the store: with a shared
        // database the peers register again on another server, keeping their rows.
        if let Some(peer) = session.peer
            && !shutdown.is_triggered()
        {
            if let Err(e) = self.store.unregister(peer, session.id).await {
                warn!("withdrawing peer {peer}: {e}");
            }
            info!("peer {peer} at {} left", session.from);
        }
        result
    }

    async fn requests(
        &self,
        conn: &mut Connection,
        session: &mut Session,
        shutdown: &Shutdown,
    ) -> Result<()> {
        let ttl = self.settings.session_ttl;
        loop {
            let pushes = session.pushes.clone();
            let received = async { Incoming::Request(conn.recv::<IndexRequest>(ttl).await) }
                .or(async {
                    match pushes {
                        Some(pushes) => match pushes.recv().await {
                            Ok(push) => Incoming::Push(push),
                            Err(_) => smol::future::pending().await,
                        },
                        None => smol::future::pending().await,
                    }
                })
                .or(async {
                    shutdown.wait().await;
                    Incoming::Request(Ok(None))
                })
                .await;
            let received = match received {
                Incoming::Request(received) => received,
                // Between answers, so it never splits a request from its answer.
                Incoming::Push(push) => {
                    conn.send(&push).await?;
                    continue;
                }
            };
            let request = match received {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(e @ protocol::Error::Malformed(_)) => {
                    warn!("bad request from {}: {e}", session.from);
                    conn.send(&IndexResponse::error(ErrorCode::BadRequest, e.to_string()))
                        .await?;
                    continue;
                }
                Err(e @ protocol::Error::FrameTooLarge { .. }) => {
                    warn!("closing {}: {e}", session.from);
                    conn.send(&IndexResponse::error(ErrorCode::BadRequest, e.to_string()))
                        .await
                        .ok();
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            };
            // Any request is a sign of life, not only heartbeats.
            if let Some(peer) = session.peer {
                let _ = self.store.touch(peer, session.id).await;
            }
            // Boxed: a connection's task keeps its largest state for as long as it lives,
            // and a handler's (a database round trip's) is far larger than the wait for
            // the next request, where idle sessions spend their lives.
            let response = Box::pin(self.handle(session, request)).await;
            self.note(session.id, session.peer);
            conn.send(&response).await?;
        }
    }
}
