//! What the index does with the requests that get peers around NATs (`docs/NAT.md`):
//! `connect` (a reverse connection), `punch` (hole punching) and `relay`. All send a
//! sharer only where the index itself decides: the asking peer's observed address, or
//! the index's own relay. Each push counts against the asking connection's budget and
//! against what the asking key and the asking address may make that sharer do
//! ([`super::budget`]); each refusal is counted by the bound that refused it.

use std::net::SocketAddr;

use tracing::{info, warn};

use super::Server;
use super::budget::{Exceeded, PUSH_WINDOW};
use super::handler::{Handled, Reject, Session};
use super::metrics::PushRefusal;
use super::reach::{CONNECT_WINDOW, MAX_CONNECTS, Refusal};
use super::relay;
use super::store::Store;
use crate::protocol::{self, ErrorCode, Fingerprint, IndexResponse};

/// The refusal of a connection that asked for too many reverse connections or relays.
fn too_many(session: &Session) -> Reject {
    warn!(
        "{} asks for too many reverse connections or relays",
        session.from
    );
    Reject::new(
        ErrorCode::Busy,
        format!(
            "too many connect or relay requests: at most {MAX_CONNECTS} per {} s; try again \
             shortly",
            CONNECT_WINDOW.as_secs()
        ),
    )
}

/// The refusal of a push to a peer with no session here.
fn no_session(peer_id: u64) -> Reject {
    Reject::new(
        ErrorCode::NotFound,
        format!("peer {peer_id} has no session on this index server"),
    )
}

impl<S: Store> Server<S> {
    /// Count a refusal at `why` in the metrics.
    fn refused(&self, why: PushRefusal) {
        if let Some(metrics) = &self.metrics {
            metrics.push_refused(why);
        }
    }

    /// Whether `session` may make peer `peer_id` act once more: its connection's own
    /// budget, then what its key and its address may make that sharer do. Returns the
    /// sharer's key.
    fn may_push(&self, session: &mut Session, peer_id: u64) -> Result<Fingerprint, Reject> {
        if !session.connects.take() {
            self.refused(PushRefusal::PerConnection);
            return Err(too_many(session));
        }
        let sharer = self
            .pushes
            .key_of(peer_id)
            .ok_or_else(|| no_session(peer_id))?;
        let (key, from) = (session.fingerprint, session.from.ip());
        self.budget.take(key, from, sharer).map_err(|exceeded| {
            let (why, who, limit) = match exceeded {
                Exceeded::Key => (
                    PushRefusal::PerKey,
                    "your key",
                    self.settings.pushes.per_key,
                ),
                Exceeded::Address => (
                    PushRefusal::PerAddress,
                    "your address",
                    self.settings.pushes.per_address,
                ),
            };
            self.refused(why);
            warn!("{} ({key}) asks too much of peer {peer_id}", session.from);
            Reject::new(
                ErrorCode::Busy,
                format!(
                    "peer {peer_id} was asked to connect too often from {who}: at most {limit} \
                     per {} s, on all your connections; try again shortly",
                    PUSH_WINDOW.as_secs()
                ),
            )
        })?;
        Ok(sharer)
    }

    /// Set up a relayed pipe between the asking key and a sharer, and tell the sharer
    /// over its session to join it.
    pub(super) fn relay(&self, session: &mut Session, peer_id: u64, token: String) -> Handled {
        if let Some(problem) = protocol::token_problem(&token) {
            return Err(Reject::bad(problem));
        }
        let sharer = self.may_push(session, peer_id)?;
        let downloader = (session.fingerprint, session.from.ip());
        let theirs = self
            .relay
            .offer(downloader, &token, sharer, peer_id)
            .map_err(|refusal| self.relay_refused(refusal))?;
        let push = IndexResponse::RelayTo {
            token: theirs,
            downloader: session.fingerprint,
        };
        if self.pushes.push(peer_id, push).is_err() {
            // Nobody will join: the pipe's slots are free for others now.
            self.relay.cancel(&token);
            self.refused(PushRefusal::SharerQueue);
            return Err(Reject::new(
                ErrorCode::Busy,
                "the peer is busy; try again shortly",
            ));
        }
        info!("relaying between {} and peer {peer_id}", session.from);
        Ok(IndexResponse::Relaying {})
    }

    /// The refusal of a relay pipe, counted.
    fn relay_refused(&self, refusal: relay::Refusal) -> Reject {
        let limits = self.settings.relay;
        let (why, reject) = match refusal {
            relay::Refusal::Off => return Reject::bad("this index server does not relay"),
            relay::Refusal::Taken => return Reject::bad("that token is already in use"),
            relay::Refusal::Busy => (
                PushRefusal::RelayPipes,
                Reject::new(
                    ErrorCode::Busy,
                    "the relay is at its limit of pipes; try again shortly",
                ),
            ),
            relay::Refusal::PerKey => (
                PushRefusal::RelayPipesPerKey,
                Reject::new(
                    ErrorCode::Busy,
                    format!(
                        "your key holds {} relay pipes, its most at once; try again when one \
                         ends",
                        limits.pipes_per_key
                    ),
                ),
            ),
            relay::Refusal::PerAddress => (
                PushRefusal::RelayPipesPerAddress,
                Reject::new(
                    ErrorCode::Busy,
                    format!(
                        "your address holds {} relay pipes, its most at once; try again when \
                         one ends",
                        limits.pipes_per_address
                    ),
                ),
            ),
            relay::Refusal::Quota(key) => (
                PushRefusal::RelayQuota,
                Reject::new(
                    ErrorCode::Full,
                    format!("the relay quota of {key} is used up for this hour; try again later"),
                ),
            ),
        };
        self.refused(why);
        reject
    }

    /// Tell a sharer behind a NAT, over its session, to punch a hole to the asking
    /// connection at the address this index observed for it, and tell the asker where
    /// the sharer's session comes from: a TCP simultaneous open.
    pub(super) fn punch(&self, session: &mut Session, peer_id: u64, token: String) -> Handled {
        if let Some(problem) = protocol::token_problem(&token) {
            return Err(Reject::bad(problem));
        }
        self.may_push(session, peer_id)?;
        let from = SocketAddr::new(session.from.ip().to_canonical(), session.from.port());
        match self.pushes.punch(from, session.fingerprint, peer_id, token) {
            Ok(addr) => {
                info!("peer {peer_id} at {addr} told to punch a hole to {from}");
                Ok(IndexResponse::Punching { addr })
            }
            Err(Refusal::NoSession | Refusal::AskerUnreachable) => Err(no_session(peer_id)),
            Err(Refusal::Full) => Err(self.queue_full(peer_id)),
        }
    }

    /// The refusal of a push to a sharer whose queue is full, counted.
    fn queue_full(&self, peer_id: u64) -> Reject {
        self.refused(PushRefusal::SharerQueue);
        Reject::new(
            ErrorCode::Busy,
            format!("peer {peer_id} has too many connections waiting; try again shortly"),
        )
    }

    /// Tell a sharer behind a NAT, over its session, to connect out to the asking peer's
    /// file server at the address this index observed for it.
    pub(super) fn connect(&self, session: &mut Session, peer_id: u64, token: String) -> Handled {
        if let Some(problem) = protocol::token_problem(&token) {
            return Err(Reject::bad(problem));
        }
        self.may_push(session, peer_id)?;
        match self.pushes.connect(session.fingerprint, peer_id, token) {
            Ok(addr) => {
                info!(
                    "peer {peer_id} told to connect to {addr} for {}",
                    session.from
                );
                Ok(IndexResponse::Connecting {})
            }
            Err(Refusal::AskerUnreachable) => Err(Reject::new(
                ErrorCode::NotRegistered,
                "a reverse connection needs you to be registered on this index server with \
                 this key and reachable at the address it saw (you are not): share a folder \
                 from a reachable address, or download through a relay",
            )),
            Err(Refusal::NoSession) => Err(no_session(peer_id)),
            Err(Refusal::Full) => Err(self.queue_full(peer_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::index::{MemoryStore, Settings};
    use crate::protocol::{FileEntry, IndexRequest, TOKEN_HEX};

    fn session(id: u64) -> Session {
        Session::new(
            id,
            ([192, 0, 2, 7], 40000).into(),
            Fingerprint::of_public_key(&id.to_be_bytes()),
        )
    }

    /// Register `session` as a sharer whose pushes nobody reads; its Peer ID.
    async fn sharer(server: &Server<MemoryStore>, session: &mut Session) -> u64 {
        let register = IndexRequest::Register {
            port: 25000,
            token: format!("{:0>width$x}", session.id, width = TOKEN_HEX),
            files: vec![FileEntry {
                name: format!("{}.bin", session.id),
                size: 5,
                sha256: "a".repeat(64),
                chunks: "b".repeat(64),
            }],
            name: None,
            local: None,
            mapped_port: None,
        };
        server.handle(session, register).await;
        session.peer.expect("registered")
    }

    fn token(n: u64) -> String {
        format!("{n:0>TOKEN_HEX$x}")
    }

    /// E4: a relay pipe whose sharer cannot be told to join (its queue of pushes is
    /// full) gives its slots back at once, not after the pair wait.
    #[test]
    fn a_pipe_whose_push_failed_frees_its_slot_at_once() {
        smol::block_on(async {
            let mut settings = Settings {
                connect_back: None,
                ..Settings::default()
            };
            settings.relay.pipes_per_key = 1;
            settings.pushes.per_key = usize::MAX;
            settings.pushes.per_address = usize::MAX;
            let server = Server::new(Arc::new(MemoryStore::new()), settings);
            let (mut stuck, mut live) = (session(1), session(2));
            let stuck_id = sharer(&server, &mut stuck).await;
            let live_id = sharer(&server, &mut live).await;
            // Fill the stuck sharer's queue with holes to punch.
            let mut puncher = session(3);
            let mut n = 0;
            while matches!(
                server.punch(&mut puncher, stuck_id, token(n)),
                Ok(IndexResponse::Punching { .. })
            ) {
                n += 1;
            }
            let mut asker = session(4);
            let from = asker.from.ip();
            let refused = server.relay(&mut asker, stuck_id, token(100)).unwrap_err();
            assert_eq!(refused.code, ErrorCode::Busy, "{refused:?}");
            assert_eq!(server.relay.held(&asker.fingerprint, from), (0, 0, 0));
            // So its one pipe is free for a sharer that can be told.
            let relayed = server.relay(&mut asker, live_id, token(101));
            assert_eq!(relayed, Ok(IndexResponse::Relaying {}));
            assert_eq!(server.relay.held(&asker.fingerprint, from), (1, 1, 1));
        });
    }
}
