//! How the index knows and uses each peer's reachability (`docs/NAT.md`): the
//! connect-back check at `register` (a TLS handshake to the observed address that must
//! prove the registering key), and the push channel of each registered session, over
//! which the index tells a peer behind a NAT to connect out to a downloader for a
//! reverse connection. A sharer is only ever sent to the address this index observed for
//! the asking peer's registration, never to one anybody claims, and each connection may
//! ask only so often.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;

use crate::identity::Identity;
use crate::net;
use crate::protocol::{Fingerprint, Hit, IndexResponse, Limits, PeerRequest, PeerResponse};

/// How long the index waits for a registering peer's file server to answer its
/// connect-back (TCP and TLS handshake) before calling it unreachable.
pub const CONNECT_BACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Most `connect` requests one connection may make per [`CONNECT_WINDOW`]; beyond that
/// it is told `busy`, so that nobody can make sharers connect out in a flood.
pub const MAX_CONNECTS: usize = 32;

/// The window [`MAX_CONNECTS`] counts over.
pub const CONNECT_WINDOW: Duration = Duration::from_secs(10);

/// Pushes queued for one session; when it is full, further `connect` requests for that
/// sharer are told `busy`.
const PUSH_QUEUE: usize = 16;

/// Whether the file server at `addr` answers within `timeout` and proves `expected`.
pub async fn connect_back(
    identity: &Identity,
    addr: SocketAddr,
    expected: Fingerprint,
    timeout: Duration,
) -> bool {
    let limits = Limits {
        timeout,
        ..Limits::default()
    };
    async {
        let Ok(mut conn) = net::connect(addr, identity, Some(expected), limits).await else {
            return false;
        };
        net::greet::<PeerRequest, PeerResponse>(&mut conn)
            .await
            .is_ok()
    }
    .or(async {
        smol::Timer::after(timeout).await;
        false
    })
    .await
}

/// Whether `ip` is an address inside a home or office network (RFC 1918, IPv6 unique
/// local, link-local): the only local addresses the index passes on. Loopback and
/// public addresses are not, so a peer cannot steer others to its own machine's loopback
/// or to a third party.
pub fn is_local(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.is_private() || v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00 || v6.is_unicast_link_local(),
    }
}

/// A registered session this server can push to.
struct Pushable {
    session: u64,
    fingerprint: Fingerprint,
    /// The peer's file server as the index observed it (source IP, registered port).
    addr: SocketAddr,
    /// Its address inside its own network, as it said (a private address).
    local: Option<SocketAddr>,
    /// Where its session's connection comes from, as observed (source IP and port):
    /// where a hole-punching downloader connects to.
    session_from: SocketAddr,
    reachable: bool,
    to: Sender<IndexResponse>,
}

/// The registered sessions of this server, by Peer ID, and what they can be told.
#[derive(Default)]
pub struct Pushes {
    peers: Mutex<HashMap<u64, Pushable>>,
    by_key: Mutex<HashMap<Fingerprint, u64>>,
}

/// Why a `connect` cannot be passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The asking key has no registration on this server that the index could reach.
    AskerUnreachable,
    /// The sharer has no session on this server.
    NoSession,
    /// The sharer's queue of pushes is full.
    Full,
}

impl Pushes {
    /// `session`, coming from `session_from`, registered `peer` with `addr` (observed)
    /// and its `local` address, and `reachable`: pushes for the peer go to it from now
    /// on; returns where they arrive.
    pub fn register(
        &self,
        (peer, session, session_from): (u64, u64, SocketAddr),
        fingerprint: Fingerprint,
        (addr, local): (SocketAddr, Option<SocketAddr>),
        reachable: bool,
    ) -> Receiver<IndexResponse> {
        let session_from = SocketAddr::new(session_from.ip().to_canonical(), session_from.port());
        let (to, from) = smol::channel::bounded(PUSH_QUEUE);
        let entry = Pushable {
            session,
            fingerprint,
            addr,
            local,
            session_from,
            reachable,
            to,
        };
        self.peers.lock().insert(peer, entry);
        self.by_key.lock().insert(fingerprint, peer);
        from
    }

    /// `session` no longer holds `peer` (closed, unregistered): forget it, unless a newer
    /// session took the peer over.
    pub fn forget(&self, peer: u64, session: u64) {
        let mut peers = self.peers.lock();
        if peers.get(&peer).is_some_and(|p| p.session == session) {
            let gone = peers.remove(&peer).expect("present");
            self.by_key.lock().remove(&gone.fingerprint);
        }
    }

    /// Give each hit of a peer at the public address `asker` (behind the same NAT as the
    /// asking connection) the local address its peer registered, if any.
    pub fn localize(&self, asker: IpAddr, hits: &mut [Hit]) {
        let peers = self.peers.lock();
        for hit in hits.iter_mut().filter(|h| h.addr.ip() == asker) {
            hit.local = peers.get(&hit.peer_id).and_then(|p| p.local);
        }
    }

    /// The key of `peer`'s session on this server.
    pub fn key_of(&self, peer: u64) -> Option<Fingerprint> {
        self.peers.lock().get(&peer).map(|p| p.fingerprint)
    }

    /// Push `message` to `peer`'s session.
    pub fn push(&self, peer: u64, message: IndexResponse) -> Result<(), Refusal> {
        let peers = self.peers.lock();
        let target = peers.get(&peer).ok_or(Refusal::NoSession)?;
        target.to.try_send(message).map_err(|_| Refusal::Full)
    }

    /// Tell `sharer` to connect to the file server of the peer with key `asker`, as the
    /// index observed it, opening with `token`; returns that address.
    pub fn connect(
        &self,
        asker: Fingerprint,
        sharer: u64,
        token: String,
    ) -> Result<SocketAddr, Refusal> {
        let asker = self.by_key.lock().get(&asker).copied();
        let peers = self.peers.lock();
        let addr = asker
            .and_then(|id| peers.get(&id))
            .filter(|p| p.reachable)
            .map(|p| p.addr)
            .ok_or(Refusal::AskerUnreachable)?;
        let target = peers.get(&sharer).ok_or(Refusal::NoSession)?;
        target
            .to
            .try_send(IndexResponse::ConnectTo { addr, token })
            .map_err(|_| Refusal::Full)?;
        Ok(addr)
    }
}

impl Pushes {
    /// Tell `sharer` to punch a hole to the asking connection, which comes from `asker`
    /// (observed) and proved `downloader`, opening with `token`; returns where the
    /// sharer's session comes from, for the asker to connect to.
    pub fn punch(
        &self,
        asker: SocketAddr,
        downloader: Fingerprint,
        sharer: u64,
        token: String,
    ) -> Result<SocketAddr, Refusal> {
        let peers = self.peers.lock();
        let target = peers.get(&sharer).ok_or(Refusal::NoSession)?;
        let push = IndexResponse::PunchTo {
            addr: asker,
            token,
            downloader,
        };
        target.to.try_send(push).map_err(|_| Refusal::Full)?;
        Ok(target.session_from)
    }
}

/// The `connect` requests of one connection within the last [`CONNECT_WINDOW`].
#[derive(Debug, Default)]
pub struct ConnectBudget {
    recent: VecDeque<Instant>,
}

impl ConnectBudget {
    /// Count one request; false when the connection already made [`MAX_CONNECTS`] in the
    /// window.
    pub fn take(&mut self) -> bool {
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) >= CONNECT_WINDOW)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= MAX_CONNECTS {
            return false;
        }
        self.recent.push_back(now);
        true
    }
}
