//! How a downloader obtains its connection to a sharer (`docs/NAT.md`): directly when
//! the index could reach the sharer, else by a reverse connection (the index tells the
//! sharer, over its session, to connect out to our file server) when we are reachable,
//! else by hole punching (both connect to each other at once, `punch.rs`), else through
//! the index's relay.
//! Whatever the path, the TCP stream then carries the same TLS handshake, with us as
//! the TLS client checking the sharer's key from the search hit, and the same requests.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use smol::io::AsyncWriteExt;

use crate::client::{IndexClient, KnownIndexes, PeerClient};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::protocol::Connection;
use crate::protocol::{Hit, Limits};
use crate::punch;
use crate::rendezvous::{self, Rendezvous};

/// Longest a connection to a sharer's local address (behind the same NAT) may take
/// before the other ways are tried.
pub const LOCAL_WAIT: Duration = Duration::from_secs(2);

/// How a source was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// We connected to its file server at its address inside the NAT we share with it.
    Local,
    /// We connected to its file server.
    Direct,
    /// It connected to ours, asked to by the index.
    Reverse,
    /// Both connected to each other at once, through both NATs (hole punching).
    Punched,
    /// Both connected to the index's relay, which passes the (encrypted) bytes on.
    Relayed,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Local => "local",
            Route::Direct => "direct",
            Route::Reverse => "reverse",
            Route::Punched => "punched",
            Route::Relayed => "relayed",
        })
    }
}

/// What the ways around a NAT need: the index to ask (as the key our share registered
/// with, when we share), and, when we share, where our file server hands reverse
/// connections over.
#[derive(Clone)]
pub struct Via {
    /// The index our sharing session is with, else the one we use.
    pub index: SocketAddr,
    /// Our key.
    pub identity: Identity,
    /// The key each index must prove (the process's one source of pins).
    pub pins: KnownIndexes,
    /// Where our file server hands reverse connections over; `None` when we share
    /// nothing.
    pub rendezvous: Option<Arc<Rendezvous>>,
    /// Whether to try hole punching (a TCP simultaneous open) before the relay.
    pub punch: bool,
}

/// Obtains connections to sharers, by whichever path each one allows.
#[derive(Clone)]
pub struct Dialer {
    limits: Limits,
    via: Option<Via>,
    /// The key proved to file servers (theirs `uploads` then names us).
    identity: Identity,
}

impl Dialer {
    /// Direct connections only, proving a throwaway key.
    pub fn direct(limits: Limits) -> Self {
        Dialer {
            limits,
            via: None,
            identity: Identity::ephemeral(),
        }
    }

    /// Direct connections, and the ways around a NAT through `via`, proving `via`'s key
    /// (else a throwaway one).
    pub fn new(limits: Limits, via: Option<Via>) -> Self {
        let identity = via
            .as_ref()
            .map_or_else(Identity::ephemeral, |v| v.identity.clone());
        Dialer {
            limits,
            via,
            identity,
        }
    }

    /// The same, proving `identity` to file servers.
    pub fn proving(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// A connection to `hit`'s file server, proving the key the hit names, and how it
    /// was obtained: directly when the index could reach the sharer; else by a reverse
    /// connection when we share, else (or when that fails) by hole punching, else
    /// through the relay.
    pub async fn connect(&self, hit: &Hit) -> Result<(PeerClient, Route)> {
        if let Some(local) = hit.local {
            // Behind the same NAT: its address inside it, key checked (a wrong host
            // there is refused); within a short wait, then the other ways.
            let limits = Limits {
                timeout: self.limits.timeout.min(LOCAL_WAIT),
                ..self.limits
            };
            let key = Some(hit.fingerprint);
            if let Ok(client) = PeerClient::connect_as(local, key, &self.identity, limits).await {
                return Ok((client, Route::Local));
            }
        }
        let direct =
            || PeerClient::connect_as(hit.addr, Some(hit.fingerprint), &self.identity, self.limits);
        if hit.reachable {
            return Ok((direct().await?, Route::Direct));
        }
        let Some(via) = &self.via else {
            return match direct().await {
                Ok(client) => Ok((client, Route::Direct)),
                Err(e) => Err(Error::msg(format!(
                    "peer {} is behind a NAT (the index could not connect to it), and this \
                     download has no index to ask for a way around it ({e})",
                    hit.peer_id
                ))),
            };
        };
        let mut failed = Vec::new();
        if let Some(rendezvous) = &via.rendezvous {
            match self.reverse(via, rendezvous, hit).await {
                Ok(client) => return Ok((client, Route::Reverse)),
                Err(e) => failed.push(format!("a reverse connection failed: {e}")),
            }
        }
        if via.punch {
            match self.punched(via, hit).await {
                Ok(client) => return Ok((client, Route::Punched)),
                Err(e) => failed.push(format!("hole punching failed: {e}")),
            }
        }
        match self.relayed(via, hit).await {
            Ok(client) => Ok((client, Route::Relayed)),
            Err(e) => {
                failed.push(format!("the relay failed: {e}"));
                Err(Error::msg(format!(
                    "peer {} is behind a NAT and could not be reached: {}",
                    hit.peer_id,
                    failed.join("; ")
                )))
            }
        }
    }

    /// A connection to the index `via` names, as our key.
    async fn index(&self, via: &Via) -> Result<IndexClient> {
        let (client, note) = via
            .pins
            .connect(&[via.index], &via.identity, self.limits)
            .await?;
        if let Some(note) = note {
            tracing::info!("{note}");
        }
        Ok(client)
    }

    /// Ask the index to have `hit`'s peer connect out to us, and wait for it.
    async fn reverse(
        &self,
        via: &Via,
        rendezvous: &Arc<Rendezvous>,
        hit: &Hit,
    ) -> Result<PeerClient> {
        let waiter = rendezvous.expect();
        let mut index = self.index(via).await?;
        index.connect_request(hit.peer_id, waiter.token()).await?;
        // The sharer's connection must come within the timeout, like any connection.
        let wait = self.limits.timeout;
        let stream = waiter.arrive(wait).await.ok_or_else(|| {
            Error::msg(format!(
                "peer {} did not connect back to us within {:.1} s",
                hit.peer_id,
                wait.as_secs_f64()
            ))
        })?;
        PeerClient::over(stream, hit.fingerprint, self.limits).await
    }

    /// Ask the index to have `hit`'s peer punch a hole to us while we punch one to it,
    /// each from the port of its connection to the index (ours is this request's), and
    /// take the connection where the two meet within [`punch::PUNCH_WAIT`]. The sharer
    /// opens it with our token; over it we are the TLS client proving our key (the
    /// sharer serves only the key that asked).
    async fn punched(&self, via: &Via, hit: &Hit) -> Result<PeerClient> {
        let token = rendezvous::new_token();
        let mut index = self.index(via).await?;
        let local = index.local_addr()?;
        let to = index.punch_request(hit.peer_id, &token).await?;
        let mut stream = punch::punch(local, to, punch::PUNCH_WAIT)
            .await
            .map_err(|e| Error::io(format!("punching a hole from {local} to {to}"), e))?;
        drop(index);
        let wait = self.limits.timeout.min(punch::PUNCH_WAIT);
        let said = rendezvous::read_preamble(&mut stream, wait).await;
        if said.as_deref() != Some(token.as_str()) {
            return Err(Error::msg(format!(
                "the connection punched to {to} did not open with our token"
            )));
        }
        PeerClient::over_as(stream, hit.fingerprint, &via.identity, self.limits).await
    }

    /// Ask the index to relay between us and `hit`'s peer, and join the relay; our TLS
    /// to the peer runs inside, proving our key (the sharer serves only the key that
    /// asked).
    async fn relayed(&self, via: &Via, hit: &Hit) -> Result<PeerClient> {
        let token = rendezvous::new_token();
        self.index(via)
            .await?
            .relay_request(hit.peer_id, &token)
            .await?;
        let mut stream = Connection::dial(via.index, self.limits).await?;
        stream
            .write_all(&rendezvous::preamble(&token))
            .await
            .map_err(|e| Error::io(format!("joining the relay at {}", via.index), e))?;
        PeerClient::over_as(stream, hit.fingerprint, &via.identity, self.limits).await
    }
}
