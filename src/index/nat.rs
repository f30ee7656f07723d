//! What the index does with the requests that get peers around NATs (`docs/NAT.md`):
//! `connect` (a reverse connection), `punch` (hole punching) and `relay`. All are
//! rate-limited per connection, and all send a sharer only where the index itself
//! decides: the asking peer's observed address, or the index's own relay.

use std::net::SocketAddr;

use tracing::{info, warn};

use super::Server;
use super::handler::{Handled, Reject, Session};
use super::reach::{CONNECT_WINDOW, MAX_CONNECTS, Refusal};
use super::relay;
use super::store::Store;
use crate::protocol::{self, ErrorCode, IndexResponse};

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

impl<S: Store> Server<S> {
    /// Set up a relayed pipe between the asking key and a sharer, and tell the sharer
    /// over its session to join it.
    pub(super) fn relay(&self, session: &mut Session, peer_id: u64, token: String) -> Handled {
        if let Some(problem) = protocol::token_problem(&token) {
            return Err(Reject::bad(problem));
        }
        if !session.connects.take() {
            return Err(too_many(session));
        }
        let no_session = || {
            let message = format!("peer {peer_id} has no session on this index server");
            Reject::new(ErrorCode::NotFound, message)
        };
        let sharer = self.pushes.key_of(peer_id).ok_or_else(no_session)?;
        let downloader = session.fingerprint;
        let theirs = self
            .relay
            .offer(downloader, &token, sharer, peer_id)
            .map_err(|refusal| match refusal {
                relay::Refusal::Off => Reject::bad("this index server does not relay"),
                relay::Refusal::Busy => Reject::new(
                    ErrorCode::Busy,
                    "the relay is at its limit of pipes; try again shortly",
                ),
                relay::Refusal::Quota(key) => Reject::new(
                    ErrorCode::Full,
                    format!("the relay quota of {key} is used up for this hour; try again later"),
                ),
                relay::Refusal::Taken => Reject::bad("that token is already in use"),
            })?;
        let push = IndexResponse::RelayTo {
            token: theirs,
            downloader,
        };
        self.pushes
            .push(peer_id, push)
            .map_err(|_| Reject::new(ErrorCode::Busy, "the peer is busy; try again shortly"))?;
        info!("relaying between {} and peer {peer_id}", session.from);
        Ok(IndexResponse::Relaying {})
    }

    /// Tell a sharer behind a NAT, over its session, to punch a hole to the asking
    /// connection at the address this index observed for it, and tell the asker where
    /// the sharer's session comes from: a TCP simultaneous open.
    pub(super) fn punch(&self, session: &mut Session, peer_id: u64, token: String) -> Handled {
        if let Some(problem) = protocol::token_problem(&token) {
            return Err(Reject::bad(problem));
        }
        if !session.connects.take() {
            return Err(too_many(session));
        }
        let from = SocketAddr::new(session.from.ip().to_canonical(), session.from.port());
        match self.pushes.punch(from, session.fingerprint, peer_id, token) {
            Ok(addr) => {
                info!("peer {peer_id} at {addr} told to punch a hole to {from}");
                Ok(IndexResponse::Punching { addr })
            }
            Err(Refusal::NoSession | Refusal::AskerUnreachable) => Err(Reject::new(
                ErrorCode::NotFound,
                format!("peer {peer_id} has no session on this index server"),
            )),
            Err(Refusal::Full) => Err(Reject::new(
                ErrorCode::Busy,
                format!("peer {peer_id} has too many connections waiting; try again shortly"),
            )),
        }
    }

    /// Tell a sharer behind a NAT, over its session, to connect out to the asking peer's
    /// file server at the address this index observed for it.
    pub(super) fn connect(&self, session: &mut Session, peer_id: u64, token: String) -> Handled {
        if let Some(problem) = protocol::token_problem(&token) {
            return Err(Reject::bad(problem));
        }
        if !session.connects.take() {
            return Err(too_many(session));
        }
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
            Err(Refusal::NoSession) => Err(Reject::new(
                ErrorCode::NotFound,
                format!("peer {peer_id} has no session on this index server"),
            )),
            Err(Refusal::Full) => Err(Reject::new(
                ErrorCode::Busy,
                format!("peer {peer_id} has too many connections waiting; try again shortly"),
            )),
        }
    }
}
