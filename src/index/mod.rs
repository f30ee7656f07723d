//! The index server: an accept loop, one task per connection, and the [`Store`] behind
//! them. A connection that registers becomes its peer's session: the peer's files live
//! exactly as long as it does (closed, timed out or replaced by a newer session).

pub mod postgres;
pub mod store;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use smol::Async;
use smol::future::FutureExt;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::protocol::{
    self, Connection, ErrorCode, IndexRequest, IndexResponse, Limits, MAX_PATTERN, TOKEN_HEX,
};
use crate::runtime::{self, Shutdown};
pub use store::{MemoryStore, NameMatch, Query, Registration, Store};

/// How often the reaper looks for peers whose sessions went silent.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Pause after a failed `accept` (say, out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What an index server enforces.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Wire limits.
    pub limits: Limits,
    /// How long a silent connection (peer session or client) lives.
    pub session_ttl: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most rows one search returns.
    pub max_results: usize,
    /// Most files one peer may share.
    pub max_files_per_peer: usize,
    /// Longest file name accepted, in bytes.
    pub max_name_len: usize,
    /// Fewest characters (besides `*` and `?`) a search pattern must have.
    pub min_pattern_len: usize,
}

impl Settings {
    /// The settings of a config.
    pub fn from_config(config: &Config) -> Self {
        Settings {
            limits: config.limits(),
            session_ttl: config.session_ttl(),
            max_connections: config.index.max_connections,
            max_results: config.index.max_results,
            max_files_per_peer: config.index.max_files_per_peer,
            max_name_len: config.index.max_name_len,
            min_pattern_len: config.index.min_pattern_len,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings::from_config(&Config::default())
    }
}

struct Server<S> {
    store: Arc<S>,
    settings: Settings,
    connections: AtomicUsize,
    next_session: AtomicU64,
}

/// Serve the index on `listener` until `shutdown` fires.
pub async fn run<S: Store>(
    listener: Async<TcpListener>,
    store: Arc<S>,
    settings: Settings,
    shutdown: Shutdown,
) -> Result<()> {
    let server = Arc::new(Server {
        store,
        settings,
        connections: AtomicUsize::new(0),
        next_session: AtomicU64::new(0),
    });
    let reaper = {
        let server = server.clone();
        runtime::spawn(async move {
            loop {
                smol::Timer::after(EXPIRE_EVERY).await;
                match server.store.expire(server.settings.session_ttl).await {
                    Ok(0) => {}
                    Ok(n) => info!("expired {n} silent peer(s)"),
                    Err(e) => warn!("expiring peers: {e}"),
                }
            }
        })
    };
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shutdown.wait().await;
                None
            })
            .await;
        let (stream, addr) = match accepted {
            None => break,
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                warn!("accept failed: {e}");
                smol::Timer::after(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let server = server.clone();
        let shutdown = shutdown.clone();
        runtime::spawn(async move {
            let count = server.connections.fetch_add(1, Ordering::SeqCst) + 1;
            let result = if count > server.settings.max_connections {
                refuse_busy(stream, server.settings.limits).await
            } else {
                server.serve(stream, addr, shutdown).await
            };
            server.connections.fetch_sub(1, Ordering::SeqCst);
            if let Err(e) = result {
                debug!("connection from {addr} ended: {e}");
            }
        })
        .detach();
    }
    reaper.cancel().await;
    Ok(())
}

async fn refuse_busy(stream: Async<std::net::TcpStream>, limits: Limits) -> Result<()> {
    warn!("refusing a connection: at the connection limit");
    let mut conn = Connection::new(stream, limits)?;
    conn.send(&IndexResponse::Error {
        code: ErrorCode::Busy,
        message: "the index is at its connection limit; try again shortly".into(),
    })
    .await
}

fn error(code: ErrorCode, message: impl Into<String>) -> IndexResponse {
    IndexResponse::Error {
        code,
        message: message.into(),
    }
}

/// What a connection is: a plain client, or the session of a registered peer.
struct Session {
    id: u64,
    peer: Option<u64>,
    /// How many files the peer shares, as the store last said.
    files: u64,
    from: SocketAddr,
}

impl<S: Store> Server<S> {
    async fn serve(
        &self,
        stream: Async<std::net::TcpStream>,
        from: SocketAddr,
        shutdown: Shutdown,
    ) -> Result<()> {
        let mut conn = Connection::new(stream, self.settings.limits)?;
        debug!("connection from {from}");
        match conn.recv_reply::<IndexRequest>().await {
            Ok(IndexRequest::Hello { version }) if version == protocol::VERSION => {
                conn.send(&IndexResponse::Welcome {
                    version: protocol::VERSION,
                })
                .await?;
            }
            Ok(IndexRequest::Hello { version }) => {
                warn!("refusing {from}: protocol version {version}");
                let message = format!(
                    "this index speaks protocol version {}, not {version}",
                    protocol::VERSION
                );
                return conn.send(&error(ErrorCode::Version, message)).await;
            }
            Ok(_) => {
                let message = "the first message must be hello";
                return conn.send(&error(ErrorCode::Version, message)).await;
            }
            Err(e) => return self.reply_to_bad_frame(&mut conn, e).await,
        }
        let mut session = Session {
            id: self.next_session.fetch_add(1, Ordering::SeqCst),
            peer: None,
            files: 0,
            from,
        };
        let result = self.requests(&mut conn, &mut session, &shutdown).await;
        // A server shutting down leaves its peers' files to the store: with a shared
        // database the peers register again on another server, keeping their rows.
        if let Some(peer) = session.peer
            && !shutdown.is_triggered()
        {
            self.store.unregister(peer, session.id).await?;
            info!("peer {peer} at {from} left");
        }
        result
    }

    async fn requests(
        &self,
        conn: &mut Connection,
        session: &mut Session,
        shutdown: &Shutdown,
    ) -> Result<()> {
        loop {
            let received = conn
                .recv::<IndexRequest>(self.settings.session_ttl)
                .or(async {
                    shutdown.wait().await;
                    Ok(None)
                })
                .await;
            let request = match received {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(e @ Error::Malformed(_)) => {
                    warn!("bad request from {}: {e}", session.from);
                    conn.send(&error(ErrorCode::BadRequest, e.to_string()))
                        .await?;
                    continue;
                }
                Err(e) => return self.reply_to_bad_frame(conn, e).await,
            };
            // Any request is a sign of life, not only heartbeats.
            if let Some(peer) = session.peer {
                let _ = self.store.touch(peer, session.id).await;
            }
            let response = match self.handle(session, request).await {
                Ok(response) => response,
                Err(Error::Remote { code, message }) => error(code, message),
                Err(e @ Error::Malformed(_)) => error(ErrorCode::BadRequest, e.to_string()),
                Err(e) => {
                    warn!("request from {} failed: {e}", session.from);
                    error(ErrorCode::Internal, e.to_string())
                }
            };
            conn.send(&response).await?;
        }
    }

    /// Answer a frame that could not be read, where the stream allows an answer at all.
    async fn reply_to_bad_frame(&self, conn: &mut Connection, e: Error) -> Result<()> {
        if let Error::FrameTooLarge { .. } | Error::Malformed(_) = e {
            warn!("closing {}: {e}", conn.peer_addr());
            conn.send(&error(ErrorCode::BadRequest, e.to_string()))
                .await
                .ok();
        }
        Err(e)
    }

    async fn handle(&self, session: &mut Session, request: IndexRequest) -> Result<IndexResponse> {
        let max_results = self.settings.max_results;
        Ok(match request {
            IndexRequest::Hello { .. } => error(ErrorCode::BadRequest, "hello was already said"),
            IndexRequest::Ping {} => {
                if let Some(peer) = session.peer {
                    self.store.touch(peer, session.id).await?;
                }
                IndexResponse::Pong {}
            }
            IndexRequest::Register { port, token, files } => {
                if port == 0 {
                    return Err(bad(
                        "port 0 cannot be reached; register the port you listen on",
                    ));
                }
                if token.len() != TOKEN_HEX || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad(format!("token must be {TOKEN_HEX} hex digits")));
                }
                self.check_files(&files, 0)?;
                let count = files.len() as u64;
                // The peer's host is the one this connection comes from, never a claim.
                let addr = SocketAddr::new(session.from.ip().to_canonical(), port);
                let registration = Registration {
                    token,
                    session: session.id,
                    addr,
                    files,
                };
                let peer_id = self.store.register(registration).await?;
                // Registering again under another token replaces the first registration.
                if let Some(old) = session.peer.filter(|&old| old != peer_id) {
                    self.store.unregister(old, session.id).await?;
                }
                session.peer = Some(peer_id);
                session.files = count;
                info!("peer {peer_id} registered {count} file(s), serving at {addr}");
                IndexResponse::Registered {
                    peer_id,
                    files: count,
                }
            }
            IndexRequest::AddFiles { files } => {
                let peer = registered(session)?;
                self.check_files(&files, session.files as usize)?;
                let files = self.store.add_files(peer, session.id, files).await?;
                session.files = files;
                IndexResponse::Done { files }
            }
            IndexRequest::RemoveFiles { names } => {
                let peer = registered(session)?;
                let files = self.store.remove_files(peer, session.id, names).await?;
                session.files = files;
                IndexResponse::Done { files }
            }
            IndexRequest::Unregister {} => {
                let peer = registered(session)?;
                self.store.unregister(peer, session.id).await?;
                session.peer = None;
                info!("peer {peer} at {} unregistered", session.from);
                IndexResponse::Done { files: 0 }
            }
            IndexRequest::Search {
                pattern,
                sha256,
                min_size,
                max_size,
                limit,
            } => {
                let mut query = self.search_query(&pattern, sha256)?;
                if let (Some(min), Some(max)) = (min_size, max_size)
                    && min > max
                {
                    return Err(bad(format!("no size is at least {min} and at most {max}")));
                }
                query.min_size = min_size;
                query.max_size = max_size;
                let limit = limit.map_or(max_results, |l| (l as usize).clamp(1, max_results));
                let found = self.store.search(&query, limit).await?;
                self.results(found)
            }
            IndexRequest::Browse { peer_id, limit } => {
                let mut query = Query::by(NameMatch::Any);
                query.peer = Some(peer_id);
                let limit = limit.map_or(max_results, |l| (l as usize).clamp(1, max_results));
                let found = self.store.search(&query, limit).await?;
                if found.0.is_empty()
                    && !self
                        .store
                        .peers()
                        .await?
                        .iter()
                        .any(|p| p.peer_id == peer_id)
                {
                    return Err(Error::Remote {
                        code: ErrorCode::NotFound,
                        message: format!("peer {peer_id} is not registered"),
                    });
                }
                self.results(found)
            }
            IndexRequest::Lookup { name } => {
                if let Some(problem) = protocol::name_problem(&name) {
                    return Err(bad(format!("file name {problem}")));
                }
                let query = Query::by(NameMatch::Exact(name));
                let found = self.store.search(&query, max_results).await?;
                self.results(found)
            }
            IndexRequest::Peers {} => IndexResponse::Peers {
                peers: self.store.peers().await?,
            },
        })
    }

    /// The query a search asks for, or why it is refused: a pattern too short to be
    /// selective (it would return half the index), or nothing to search by at all.
    fn search_query(&self, pattern: &str, sha256: Option<String>) -> Result<Query> {
        if pattern.len() > MAX_PATTERN {
            return Err(bad(format!(
                "the search pattern is longer than {MAX_PATTERN} bytes"
            )));
        }
        if pattern.chars().any(char::is_control) {
            return Err(bad("the search pattern contains control characters"));
        }
        if let Some(prefix) = &sha256
            && (prefix.len() < 4
                || prefix.len() > 64
                || !prefix
                    .bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        {
            return Err(bad("sha256: takes 4 to 64 lowercase hex digits"));
        }
        let pattern = pattern.trim();
        let literal = pattern.chars().filter(|c| !matches!(c, '*' | '?')).count();
        let min = self.settings.min_pattern_len;
        if literal == 0 && sha256.is_none() {
            return Err(bad(if pattern.is_empty() {
                "the search pattern is empty".to_owned()
            } else {
                format!("the pattern needs at least {min} characters besides * and ?")
            }));
        }
        if literal > 0 && literal < min {
            return Err(bad(format!(
                "the pattern needs at least {min} characters besides * and ?, so that one search \
                 cannot list the whole index"
            )));
        }
        let mut query = Query::pattern(if literal == 0 { "" } else { pattern });
        query.sha256_prefix = sha256;
        Ok(query)
    }

    /// A results message cut to what one frame can carry.
    fn results(&self, (mut hits, mut truncated): (Vec<protocol::Hit>, bool)) -> IndexResponse {
        // Room for the envelope; each hit costs at most its bound plus a comma. The
        // bound spares encoding every hit twice on the search path.
        let mut room = (self.settings.limits.max_frame as usize).saturating_sub(256);
        let fits = hits
            .iter()
            .take_while(|hit| {
                let cost = protocol::hit_json_bound(hit) + 1;
                room = room.saturating_sub(cost);
                room > 0
            })
            .count();
        if fits < hits.len() {
            hits.truncate(fits);
            truncated = true;
        }
        IndexResponse::Results { hits, truncated }
    }

    fn check_files(&self, files: &[protocol::FileEntry], already: usize) -> Result<()> {
        let max = self.settings.max_files_per_peer;
        if files.len().saturating_add(already) > max {
            return Err(bad(format!("a peer may share at most {max} files")));
        }
        let longest = self.settings.max_name_len;
        if let Some(long) = files.iter().find(|f| f.name.len() > longest) {
            return Err(bad(format!(
                "file name {:?}... is longer than {longest} bytes",
                protocol::truncate(&long.name)
            )));
        }
        files.iter().try_for_each(protocol::check_entry)
    }
}

fn bad(message: impl Into<String>) -> Error {
    Error::Remote {
        code: ErrorCode::BadRequest,
        message: message.into(),
    }
}

fn registered(session: &Session) -> Result<u64> {
    session.peer.ok_or_else(|| Error::Remote {
        code: ErrorCode::NotRegistered,
        message: "register first".into(),
    })
}
