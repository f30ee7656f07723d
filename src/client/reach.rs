//! How a downloader obtains its connection to a sharer (`docs/NAT.md`): directly when
//! the index could reach the sharer, else by a reverse connection (the index tells the
//! sharer, over its session, to connect out to our file server) when we are reachable.
//! Whatever the path, the TCP stream then carries the same TLS handshake, with us as
//! the TLS client checking the sharer's key from the search hit, and the same requests.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{IndexClient, PeerClient, Pins};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::protocol::{Hit, Limits};
use crate::rendezvous::Rendezvous;

/// How long a downloader waits for the sharer's reverse connection to arrive once the
/// index accepted the request.
pub const REVERSE_WAIT: Duration = Duration::from_secs(10);

/// How a source was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// We connected to its file server.
    Direct,
    /// It connected to ours, asked to by the index.
    Reverse,
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Direct => "direct",
            Route::Reverse => "reverse",
        })
    }
}

/// What a reverse connection needs: the index our share is registered with (as the
/// key it registered with), and where our file server hands arriving streams over.
#[derive(Clone)]
pub struct Reverse {
    /// The index our sharing session is with.
    pub index: SocketAddr,
    /// Our key: the one our share registered with.
    pub identity: Identity,
    /// The key each index must prove.
    pub pins: Pins,
    /// Where our file server hands reverse connections over.
    pub rendezvous: Arc<Rendezvous>,
}

/// Obtains connections to sharers, by whichever path each one allows.
#[derive(Clone)]
pub struct Dialer {
    limits: Limits,
    reverse: Option<Reverse>,
}

impl Dialer {
    /// Direct connections only.
    pub fn direct(limits: Limits) -> Self {
        Dialer {
            limits,
            reverse: None,
        }
    }

    /// Direct connections, and reverse ones through `reverse` when we share.
    pub fn new(limits: Limits, reverse: Option<Reverse>) -> Self {
        Dialer { limits, reverse }
    }

    /// A connection to `hit`'s file server, proving the key the hit names, and how it
    /// was obtained.
    pub async fn connect(&self, hit: &Hit) -> Result<(PeerClient, Route)> {
        let direct = || PeerClient::connect_to(hit.addr, Some(hit.fingerprint), self.limits);
        if hit.reachable {
            return Ok((direct().await?, Route::Direct));
        }
        let Some(reverse) = &self.reverse else {
            // The index could not reach it; we try anyway (a firewall may have opened
            // since), and say why it fails when it does.
            return match direct().await {
                Ok(client) => Ok((client, Route::Direct)),
                Err(e) => Err(Error::msg(format!(
                    "peer {} is behind a NAT (the index could not connect to it) and this \
                     napster shares no folder, so it cannot connect to us either: `register` \
                     a folder from a reachable address, then `get` again ({e})",
                    hit.peer_id
                ))),
            };
        };
        Ok((self.reverse(reverse, hit).await?, Route::Reverse))
    }

    /// Ask the index to have `hit`'s peer connect out to us, and wait for it.
    async fn reverse(&self, reverse: &Reverse, hit: &Hit) -> Result<PeerClient> {
        let waiter = reverse.rendezvous.expect();
        let pin = reverse.pins.get(&reverse.index).copied();
        let mut index =
            IndexClient::connect_as(reverse.index, &reverse.identity, pin, self.limits).await?;
        index
            .connect_request(hit.peer_id, waiter.token())
            .await
            .map_err(|e| {
                Error::msg(format!(
                    "peer {} is behind a NAT, and the index would not pass on our request \
                     that it connect to us: {e}",
                    hit.peer_id
                ))
            })?;
        let stream = waiter.arrive(REVERSE_WAIT).await.ok_or_else(|| {
            Error::msg(format!(
                "peer {} is behind a NAT and did not connect back to us within {} s",
                hit.peer_id,
                REVERSE_WAIT.as_secs()
            ))
        })?;
        PeerClient::over(stream, hit.fingerprint, self.limits).await
    }
}
