//! What the index does with each request: one function per request, dispatched from one
//! `match` ([`Server::handle`]). A handler answers with a response, or with a [`Reject`]:
//! the error reply the client gets, its connection left open.

use std::net::SocketAddr;

use tracing::{info, warn};

use super::Server;
use super::metrics::{Kind, kind};
use super::reach::{self, ConnectBudget};
pub use super::reject::Reject;
use super::store::{NameMatch, Page, Query, Registration, Store, StoreError, Usage};
use crate::protocol::Fingerprint;
use crate::protocol::{
    self, ErrorCode, FileEntry, Hit, IndexRequest, IndexResponse, MAX_PATTERN, Reply, SearchQuery,
    TOKEN_HEX,
};

/// How far the index counts the matches of a search for its total: beyond this the
/// total says "more than" (a browse counts one peer's files, which this also bounds).
pub const COUNT_BOUND: u64 = 100_000;

/// What a connection is: a plain client, or the session of a registered peer.
#[derive(Debug)]
pub struct Session {
    /// Unique for the life of the server.
    pub id: u64,
    /// The Peer ID this connection registered, if it did.
    pub peer: Option<u64>,
    /// How many files the peer shares, as the store last said.
    pub files: u64,
    /// The address the connection comes from: the peer's host, whatever it claims.
    pub from: SocketAddr,
    /// The key the connection proved in its TLS handshake: the peer, whatever it claims.
    pub fingerprint: Fingerprint,
    /// What the index pushes to this session's peer, once it registered.
    pub pushes: Option<smol::channel::Receiver<IndexResponse>>,
    /// The `connect` requests it made lately.
    pub connects: ConnectBudget,
}

impl Session {
    /// A connection from `from`, proving `fingerprint`, that has not registered.
    pub fn new(id: u64, from: SocketAddr, fingerprint: Fingerprint) -> Self {
        Session {
            id,
            peer: None,
            files: 0,
            from,
            fingerprint,
            pushes: None,
            connects: ConnectBudget::default(),
        }
    }
}

/// What a handler returns.
pub(super) type Handled = Result<IndexResponse, Reject>;

fn registered(session: &Session) -> Result<u64, Reject> {
    session
        .peer
        .ok_or_else(|| Reject::new(ErrorCode::NotRegistered, "register first"))
}

impl<S: Store> Server<S> {
    /// Answer one request of `session` (after the handshake).
    pub async fn handle(&self, session: &mut Session, request: IndexRequest) -> IndexResponse {
        let Some(metrics) = self.metrics.as_ref() else {
            return self.dispatch(session, request).await;
        };
        let kind = kind(&request);
        let started = (kind == Kind::Search).then(std::time::Instant::now);
        let response = self.dispatch(session, request).await;
        if let Some(started) = started {
            metrics.search_took(started.elapsed());
        }
        let refused = match &response {
            IndexResponse::Error { code, .. } => Some(*code),
            _ => None,
        };
        if refused == Some(ErrorCode::Internal) {
            metrics.store_error();
        }
        metrics.request(kind, refused.is_none());
        response
    }

    async fn dispatch(&self, session: &mut Session, request: IndexRequest) -> IndexResponse {
        let handled = match request {
            IndexRequest::Hello { .. } => Err(Reject::bad("hello was already said")),
            IndexRequest::Ping {} => self.ping(session).await,
            IndexRequest::Register {
                port,
                token,
                files,
                name,
                local,
                mapped_port,
            } => {
                let local = local.filter(|a| reach::is_local(a.ip()) && a.port() != 0);
                self.register(session, port, token, files, (name, local, mapped_port))
                    .await
            }
            IndexRequest::AddFiles { files } => self.add_files(session, files).await,
            IndexRequest::RemoveFiles { names } => self.remove_files(session, names).await,
            IndexRequest::Unregister {} => self.unregister(session).await,
            IndexRequest::Search(query) => self.search(query).await,
            IndexRequest::Browse {
                peer_id,
                limit,
                offset,
            } => self.browse(peer_id, limit, offset).await,
            IndexRequest::Lookup { name } => self.lookup(name).await,
            IndexRequest::Peers {} => self.peers().await,
            IndexRequest::Connect { peer_id, token } => self.connect(session, peer_id, token),
            IndexRequest::Relay { peer_id, token } => self.relay(session, peer_id, token),
            IndexRequest::Punch { peer_id, token } => self.punch(session, peer_id, token),
        };
        let mut response =
            handled.unwrap_or_else(|reject| IndexResponse::error(reject.code, reject.message));
        if let IndexResponse::Results { hits, .. } = &mut response {
            self.pushes.localize(session.from.ip().to_canonical(), hits);
        }
        response
    }

    async fn peers(&self) -> Handled {
        let peers = self.store.peers().await?;
        Ok(IndexResponse::Peers { peers })
    }

    async fn ping(&self, session: &Session) -> Handled {
        let Some(peer) = session.peer else {
            return Ok(IndexResponse::Pong {});
        };
        match self.store.touch(peer, session.id).await {
            Ok(()) => Ok(IndexResponse::Pong {}),
            Err(e @ StoreError::NotOwner) => Err(e.into()),
            // The open connection is the sign of life, and the reaper notes this server's
            // open sessions alive as soon as the store answers again. Refusing the ping
            // would make the peer drop a session that is fine and stay out of the results
            // until its backoff lets it register again, long after the database is back.
            Err(e @ StoreError::Database(_)) => {
                warn!("noting peer {peer} alive: {e}; its session stays open");
                Ok(IndexResponse::Pong {})
            }
        }
    }

    async fn register(
        &self,
        session: &mut Session,
        port: u16,
        token: String,
        files: Vec<FileEntry>,
        (name, local, mapped_port): (Option<String>, Option<SocketAddr>, Option<u16>),
    ) -> Handled {
        if let Some(problem) = name.as_deref().and_then(protocol::new_nickname_problem) {
            return Err(Reject::bad(format!("nickname {problem}")));
        }
        if port == 0 {
            return Err(Reject::bad(
                "port 0 cannot be reached; register the port you listen on",
            ));
        }
        if mapped_port == Some(0) {
            return Err(Reject::bad(
                "mapped_port 0 cannot be reached; leave it out when the router mapped none",
            ));
        }
        if token.len() != TOKEN_HEX || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Reject::bad(format!("token must be {TOKEN_HEX} hex digits")));
        }
        self.check_files(&files, 0)?;
        // The peer's host is the one this connection comes from, never a claim; its port
        // is the one its router forwards, when it has a port mapping.
        let addr = SocketAddr::new(
            session.from.ip().to_canonical(),
            mapped_port.unwrap_or(port),
        );
        let reachable = match self.settings.connect_back {
            Some(timeout) => {
                let identity = &self.settings.identity;
                reach::connect_back(identity, addr, session.fingerprint, timeout).await
            }
            None => true,
        };
        let _admitted = self.admit.lock().await;
        // The peer is the key it proved on this connection, never a token it claims: a
        // token stolen or replayed from another key's connection gets nothing of its.
        let token = session.fingerprint.plain();
        let usage = self
            .store
            .usage(session.from.ip().to_canonical(), Some(&token));
        self.check_room(usage.await?, &files, true)?;
        let count = files.len() as u64;
        let registration = Registration {
            token,
            fingerprint: session.fingerprint,
            session: session.id,
            addr,
            reachable,
            files,
        };
        let peer_id = self.store.register(registration).await?;
        // Registering again under another token replaces the first registration.
        if let Some(old) = session.peer.filter(|&old| old != peer_id) {
            self.store.unregister(old, session.id).await?;
            self.pushes.forget(old, session.id);
        }
        session.peer = Some(peer_id);
        session.files = count;
        let nickname = self.store.bind_nickname(peer_id, name.as_deref()).await?;
        if let (Some(asked), None) = (&name, &nickname) {
            info!("peer {peer_id} asked for the nickname {asked}, which another key holds");
        }
        session.pushes = Some(self.pushes.register(
            (peer_id, session.id, session.from),
            session.fingerprint,
            (addr, local),
            reachable,
        ));
        let how = if reachable { "reachable" } else { "behind NAT" };
        info!("peer {peer_id} registered {count} file(s), serving at {addr} ({how})");
        Ok(IndexResponse::Registered {
            peer_id,
            files: count,
            nickname,
            addr,
            reachable,
        })
    }

    async fn add_files(&self, session: &mut Session, files: Vec<FileEntry>) -> Handled {
        let peer = registered(session)?;
        self.check_files(&files, session.files as usize)?;
        let _admitted = self.admit.lock().await;
        let usage = self.store.usage(session.from.ip().to_canonical(), None);
        self.check_room(usage.await?, &files, false)?;
        let files = self.store.add_files(peer, session.id, files).await?;
        session.files = files;
        Ok(IndexResponse::Done { files })
    }

    async fn remove_files(&self, session: &mut Session, names: Vec<String>) -> Handled {
        let peer = registered(session)?;
        let files = self.store.remove_files(peer, session.id, names).await?;
        session.files = files;
        Ok(IndexResponse::Done { files })
    }

    async fn unregister(&self, session: &mut Session) -> Handled {
        let peer = registered(session)?;
        self.store.unregister(peer, session.id).await?;
        self.pushes.forget(peer, session.id);
        session.peer = None;
        session.pushes = None;
        info!("peer {peer} at {} unregistered", session.from);
        Ok(IndexResponse::Done { files: 0 })
    }

    async fn search(&self, query: SearchQuery) -> Handled {
        let mut compiled = self.compile(&query)?;
        compiled.offset = query.offset.unwrap_or(0);
        let page = self.page(&compiled, self.limit(query.limit)).await?;
        Ok(self.paged(page))
    }

    /// One page of `query` with its total, counted to [`COUNT_BOUND`] (or past the page).
    async fn page(&self, query: &Query, limit: usize) -> Result<Page, Reject> {
        let bound = COUNT_BOUND.max(query.offset.saturating_add(limit as u64));
        Ok(self.store.page(query, limit, bound).await?)
    }

    async fn browse(&self, peer_id: u64, limit: Option<u32>, offset: Option<u64>) -> Handled {
        if !self.store.is_live(peer_id).await? {
            let message = format!("peer {peer_id} is not registered");
            return Err(Reject::new(ErrorCode::NotFound, message));
        }
        let mut query = Query::by(NameMatch::Any);
        query.peer = Some(peer_id);
        query.offset = offset.unwrap_or(0);
        let page = self.page(&query, self.limit(limit)).await?;
        Ok(self.paged(page))
    }

    async fn lookup(&self, name: String) -> Handled {
        if let Some(problem) = protocol::name_problem(&name) {
            return Err(Reject::bad(format!("file name {problem}")));
        }
        let query = Query::by(NameMatch::Exact(name));
        let found = self.store.search(&query, self.settings.max_results).await?;
        Ok(self.results(found))
    }

    /// The result limit a client asked for, within the server's.
    fn limit(&self, asked: Option<u32>) -> usize {
        let max = self.settings.max_results;
        asked.map_or(max, |l| (l as usize).clamp(1, max))
    }

    /// The store query a search asks for, or why it is refused: a pattern too short to
    /// be selective (it would return half the index), or nothing to search by at all.
    fn compile(&self, search: &SearchQuery) -> Result<Query, Reject> {
        let pattern = &search.pattern;
        if pattern.len() > MAX_PATTERN {
            return Err(Reject::bad(format!(
                "the search pattern is longer than {MAX_PATTERN} bytes"
            )));
        }
        if pattern.chars().any(char::is_control) {
            return Err(Reject::bad(
                "the search pattern contains control characters",
            ));
        }
        if let Some(problem) = search
            .sha256
            .as_deref()
            .and_then(protocol::sha256_prefix_problem)
        {
            return Err(Reject::bad(problem));
        }
        if let (Some(min), Some(max)) = (search.min_size, search.max_size)
            && min > max
        {
            return Err(Reject::bad(format!(
                "no size is at least {min} and at most {max}"
            )));
        }
        let pattern = pattern.trim();
        let literal = pattern.chars().filter(|c| !matches!(c, '*' | '?')).count();
        let min = self.settings.min_pattern_len;
        if literal == 0 && search.sha256.is_none() {
            return Err(Reject::bad(if pattern.is_empty() {
                "the search pattern is empty".to_owned()
            } else {
                format!("the pattern needs at least {min} characters besides * and ?")
            }));
        }
        if literal > 0 && literal < min {
            return Err(Reject::bad(format!(
                "the pattern needs at least {min} characters besides * and ?, so that one search \
                 cannot list the whole index"
            )));
        }
        let mut query = Query::pattern(if literal == 0 { "" } else { pattern });
        query.sha256_prefix = search.sha256.clone();
        query.min_size = search.min_size;
        query.max_size = search.max_size;
        Ok(query)
    }

    /// A results message cut to what one frame can carry.
    fn results(&self, (mut hits, mut truncated): (Vec<Hit>, bool)) -> IndexResponse {
        let max_frame = self.settings.limits.max_frame;
        let fits = protocol::fitting(&hits, max_frame, protocol::hit_json_bound);
        if fits < hits.len() {
            hits.truncate(fits);
            truncated = true;
        }
        IndexResponse::Results {
            hits,
            truncated,
            total: None,
        }
    }

    /// A page's results message, cut to one frame, with the total.
    fn paged(&self, page: Page) -> IndexResponse {
        match self.results((page.hits, page.truncated)) {
            IndexResponse::Results {
                hits, truncated, ..
            } => IndexResponse::Results {
                hits,
                truncated,
                total: Some(page.total),
            },
            other => other,
        }
    }

    /// Refuse `files` with `full` when they would take the index past a capacity limit;
    /// a registration replaces its peer's files, so those do not count.
    fn check_room(&self, usage: Usage, files: &[FileEntry], replaces: bool) -> Result<(), Reject> {
        let (own_files, own_bytes) = match replaces {
            true => (usage.own_files, usage.own_name_bytes),
            false => (0, 0),
        };
        let adding = files.len() as u64;
        let adding_bytes: u64 = files.iter().map(|f| f.name.len() as u64).sum();
        let full = |message: String| Err(Reject::new(ErrorCode::Full, message));
        let max = self.settings.max_index_files as u64;
        if usage.files.saturating_sub(own_files) + adding > max {
            return full(format!(
                "the index is full: it holds at most {max} files; try again later"
            ));
        }
        let max = self.settings.max_index_name_bytes as u64;
        if usage.name_bytes.saturating_sub(own_bytes) + adding_bytes > max {
            return full(format!(
                "the index is full: it holds at most {max} bytes of file names; try again later"
            ));
        }
        let max = self.settings.max_files_per_address as u64;
        if usage.files_from.saturating_sub(own_files) + adding > max {
            return full(format!(
                "the peers at your address already share {} files; one address may share at \
                 most {max}",
                usage.files_from
            ));
        }
        Ok(())
    }

    fn check_files(&self, files: &[FileEntry], already: usize) -> Result<(), Reject> {
        let max = self.settings.max_files_per_peer;
        if files.len().saturating_add(already) > max {
            return Err(Reject::bad(format!("a peer may share at most {max} files")));
        }
        let longest = self.settings.max_name_len;
        if let Some(long) = files.iter().find(|f| f.name.len() > longest) {
            return Err(Reject::bad(format!(
                "file name {:?}... is longer than {longest} bytes",
                protocol::truncate(&long.name)
            )));
        }
        files
            .iter()
            .try_for_each(protocol::check_entry)
            .map_err(|problem| Reject::bad(format!("malformed message: {problem}")))?;
        // Decided here, not by the stores: they would disagree (one keeps the last, the
        // other refuses the whole transaction).
        let mut seen = std::collections::HashSet::with_capacity(files.len());
        if let Some(twice) = files.iter().find(|f| !seen.insert(f.name.as_str())) {
            return Err(Reject::bad(format!(
                "file name {:?} is listed twice; list each file once",
                protocol::truncate(&twice.name)
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::{MemoryStore, Settings};

    /// A server that takes every peer as reachable (its sessions come from TEST-NET
    /// addresses nothing answers at).
    fn server() -> Server<MemoryStore> {
        let settings = Settings {
            connect_back: None,
            ..Settings::default()
        };
        Server::new(Arc::new(MemoryStore::new()), settings)
    }

    fn session(id: u64) -> Session {
        Session::new(
            id,
            ([192, 0, 2, 7], 40000).into(),
            Fingerprint::of_public_key(&id.to_be_bytes()),
        )
    }

    fn entry(name: &str) -> FileEntry {
        FileEntry {
            name: name.into(),
            size: 5,
            sha256: "a".repeat(64),
            chunks: "b".repeat(64),
        }
    }

    fn register(name: &str) -> IndexRequest {
        IndexRequest::Register {
            port: 25000,
            token: "c".repeat(TOKEN_HEX),
            files: vec![entry(name)],
            name: None,
            local: None,
            mapped_port: None,
        }
    }

    fn code(response: IndexResponse) -> ErrorCode {
        match response {
            IndexResponse::Error { code, .. } => code,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    #[test]
    fn register_takes_the_host_from_the_socket_and_search_finds_it() {
        smol::block_on(async {
            let server = server();
            let mut s = session(1);
            let reply = server.handle(&mut s, register("song.ogg")).await;
            assert_eq!(
                reply,
                IndexResponse::Registered {
                    peer_id: crate::index::store::peer_id_of(&s.fingerprint),
                    files: 1,
                    nickname: None,
                    addr: ([192, 0, 2, 7], 25000).into(),
                    reachable: true,
                }
            );
            let IndexResponse::Results {
                hits, truncated, ..
            } = server
                .handle(&mut s, IndexRequest::Search(SearchQuery::pattern("SONG")))
                .await
            else {
                panic!("no results");
            };
            assert!(!truncated);
            assert_eq!(hits.len(), 1);
            assert_eq!(hits[0].addr, ([192, 0, 2, 7], 25000).into());
        });
    }

    #[test]
    fn requests_of_a_peer_need_a_registration() {
        smol::block_on(async {
            let server = server();
            let mut s = session(1);
            for request in [
                IndexRequest::AddFiles { files: vec![] },
                IndexRequest::RemoveFiles { names: vec![] },
                IndexRequest::Unregister {},
            ] {
                assert_eq!(
                    code(server.handle(&mut s, request).await),
                    ErrorCode::NotRegistered
                );
            }
        });
    }

    #[test]
    fn add_remove_and_unregister_keep_the_count() {
        smol::block_on(async {
            let server = server();
            let mut s = session(1);
            server.handle(&mut s, register("a.txt")).await;
            let added = IndexRequest::AddFiles {
                files: vec![entry("b.txt"), entry("c.txt")],
            };
            assert_eq!(
                server.handle(&mut s, added).await,
                IndexResponse::Done { files: 3 }
            );
            let removed = IndexRequest::RemoveFiles {
                names: vec!["a.txt".into()],
            };
            assert_eq!(
                server.handle(&mut s, removed).await,
                IndexResponse::Done { files: 2 }
            );
            let gone = server.handle(&mut s, IndexRequest::Unregister {}).await;
            assert_eq!(gone, IndexResponse::Done { files: 0 });
            assert_eq!(s.peer, None);
        });
    }

    #[test]
    fn bad_registrations_and_searches_are_refused() {
        smol::block_on(async {
            let server = server();
            let mut s = session(1);
            let port0 = IndexRequest::Register {
                port: 0,
                token: "c".repeat(TOKEN_HEX),
                files: vec![],
                name: None,
                local: None,
                mapped_port: None,
            };
            let bad_nickname = IndexRequest::Register {
                port: 1,
                token: "c".repeat(TOKEN_HEX),
                files: vec![],
                name: Some("al ice".into()),
                local: None,
                mapped_port: None,
            };
            let mapped0 = IndexRequest::Register {
                port: 1,
                token: "c".repeat(TOKEN_HEX),
                files: vec![],
                local: None,
                mapped_port: Some(0),
                name: None,
            };
            let short_token = IndexRequest::Register {
                port: 1,
                token: "c".into(),
                files: vec![],
                name: None,
                local: None,
                mapped_port: None,
            };
            let mut bad_hash = entry("x");
            bad_hash.sha256 = "short".into();
            let bad_entry = IndexRequest::Register {
                port: 1,
                token: "c".repeat(TOKEN_HEX),
                files: vec![bad_hash],
                name: None,
                local: None,
                mapped_port: None,
            };
            let too_short = IndexRequest::Search(SearchQuery::pattern("a*"));
            let bad_prefix = IndexRequest::Search(SearchQuery {
                sha256: Some("XYZ".into()),
                ..SearchQuery::default()
            });
            let hello = IndexRequest::Hello { version: 1 };
            let bad = [
                port0,
                bad_nickname,
                mapped0,
                short_token,
                bad_entry,
                too_short,
                bad_prefix,
                hello,
            ];
            for request in bad {
                assert_eq!(
                    code(server.handle(&mut s, request).await),
                    ErrorCode::BadRequest
                );
            }
        });
    }

    #[test]
    fn browse_lookup_peers_and_ping() {
        smol::block_on(async {
            let server = server();
            let mut s = session(1);
            server.handle(&mut s, register("dir/a.txt")).await;
            let browse = IndexRequest::Browse {
                peer_id: crate::index::store::peer_id_of(&s.fingerprint),
                limit: None,
                offset: None,
            };
            let IndexResponse::Results { hits, .. } = server.handle(&mut s, browse).await else {
                panic!("no results");
            };
            assert_eq!(hits[0].file.name, "dir/a.txt");
            let unknown = IndexRequest::Browse {
                peer_id: 9,
                limit: None,
                offset: None,
            };
            assert_eq!(
                code(server.handle(&mut s, unknown).await),
                ErrorCode::NotFound
            );
            let lookup = IndexRequest::Lookup {
                name: "dir/a.txt".into(),
            };
            let IndexResponse::Results { hits, .. } = server.handle(&mut s, lookup).await else {
                panic!("no results");
            };
            assert_eq!(hits.len(), 1);
            let IndexResponse::Peers { peers } =
                server.handle(&mut s, IndexRequest::Peers {}).await
            else {
                panic!("no peers");
            };
            assert_eq!((peers.len(), peers[0].files), (1, 1));
            assert_eq!(
                server.handle(&mut s, IndexRequest::Ping {}).await,
                IndexResponse::Pong {}
            );
        });
    }

    #[test]
    fn a_mapped_port_is_the_port_others_are_told_with_the_observed_host() {
        smol::block_on(async {
            let server = server();
            let mut s = session(1);
            let IndexRequest::Register {
                port, token, files, ..
            } = register("a.txt")
            else {
                unreachable!()
            };
            let mapped = IndexRequest::Register {
                port,
                token,
                files,
                name: None,
                local: None,
                mapped_port: Some(31000),
            };
            server.handle(&mut s, mapped).await;
            let IndexResponse::Peers { peers } =
                server.handle(&mut s, IndexRequest::Peers {}).await
            else {
                panic!("no peers");
            };
            assert_eq!(peers[0].addr, ([192, 0, 2, 7], 31000).into());
            // Registering again without one (the mapping was lost) gives the port back.
            server.handle(&mut s, register("a.txt")).await;
            let IndexResponse::Peers { peers } =
                server.handle(&mut s, IndexRequest::Peers {}).await
            else {
                panic!("no peers");
            };
            assert_eq!(peers[0].addr, ([192, 0, 2, 7], 25000).into());
        });
    }

    #[test]
    fn results_are_cut_to_one_frame() {
        let mut settings = Settings::default();
        settings.limits.max_frame = 4096;
        let server = Server::new(Arc::new(MemoryStore::new()), settings);
        let hit = Hit {
            peer_id: 1,
            fingerprint: Fingerprint([7; 32]),
            nickname: Some("n".repeat(crate::protocol::MAX_NICKNAME)),
            addr: ([127, 0, 0, 1], 1).into(),
            reachable: false,
            local: Some("[fd00::1]:65535".parse().unwrap()),
            file: entry(&"n".repeat(500)),
            shared_at: 0,
        };
        let IndexResponse::Results {
            hits, truncated, ..
        } = server.results((vec![hit; 50], false))
        else {
            panic!("no results");
        };
        assert!(truncated && hits.len() < 50);
        let reply = IndexResponse::Results {
            hits,
            truncated,
            total: None,
        };
        assert!(protocol::encode(&reply).len() <= 4096);
    }

    /// Behind the same NAT (the same observed IP) a hit carries the sharer's local
    /// address; from elsewhere it does not, and a local address that is no private one
    /// (loopback, public) is never passed on.
    #[test]
    fn local_addresses_go_only_to_peers_behind_the_same_nat() {
        smol::block_on(async {
            let server = server();
            let register = |name: &str, local: &str| IndexRequest::Register {
                port: 25000,
                token: "c".repeat(TOKEN_HEX),
                files: vec![entry(name)],
                name: None,
                local: Some(local.parse().unwrap()),
                mapped_port: None,
            };
            let mut home = session(1);
            server
                .handle(&mut home, register("home.txt", "10.0.0.5:25000"))
                .await;
            let mut sly = session(2);
            server
                .handle(&mut sly, register("sly.txt", "127.0.0.1:22"))
                .await;
            let lookup = |name: &str| IndexRequest::Lookup { name: name.into() };
            let local = |response: IndexResponse| match response {
                IndexResponse::Results { hits, .. } => hits[0].local,
                other => panic!("no results: {other:?}"),
            };
            let mut neighbour = session(3);
            assert_eq!(
                local(server.handle(&mut neighbour, lookup("home.txt")).await),
                Some("10.0.0.5:25000".parse().unwrap())
            );
            assert_eq!(
                local(server.handle(&mut neighbour, lookup("sly.txt")).await),
                None
            );
            let mut stranger = Session::new(
                4,
                ([198, 51, 100, 9], 40000).into(),
                Fingerprint::of_public_key(b"stranger"),
            );
            assert_eq!(
                local(server.handle(&mut stranger, lookup("home.txt")).await),
                None
            );
        });
    }
}
