//! Where a reverse connection meets its download (`docs/NAT.md`). A downloader that asks
//! the index for a reverse connection waits here under a one-time token; the sharer's
//! TCP connection to the downloader's file server opens with a short preamble (the
//! magic bytes, then the token) before any TLS, and the file server's accept loop hands
//! a stream whose preamble names a waiting token to that download. A stream whose token
//! nobody waits for (wrong, stale, or used once already) is closed.
//!
//! The same preamble opens a peer's connection to the index's relay, whose accept loop
//! hands it to the relay (`index/relay.rs`) instead.
//!
//! The TLS roles do not follow the TCP direction: over the handed stream the downloader
//! is still the TLS client checking the sharer's key, and the sharer the TLS server.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use smol::Async;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::io::AsyncReadExt;

use crate::protocol::{TOKEN_HEX, token_problem};

/// The first bytes of a reverse connection: not a TLS record (0x16) and not a length
/// prefix of an older napster's frame (0x00).
pub const MAGIC: [u8; 4] = *b"NAPR";

/// Bytes of a preamble: the magic and the token.
pub const PREAMBLE: usize = MAGIC.len() + TOKEN_HEX;

/// The preamble a sharer sends for `token`.
pub fn preamble(token: &str) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(token.as_bytes());
    bytes
}

/// A new random one-time token.
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Downloads waiting for a reverse connection, by token.
#[derive(Debug, Default)]
pub struct Rendezvous {
    waiting: Mutex<HashMap<String, Sender<Async<TcpStream>>>>,
}

/// One download's wait; the token is forgotten when it is dropped.
pub struct Waiter {
    rendezvous: Arc<Rendezvous>,
    token: String,
    arrived: Receiver<Async<TcpStream>>,
}

impl Waiter {
    /// The token the sharer must present.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The sharer's stream (its preamble read), or `None` after `timeout`.
    pub async fn arrive(&self, timeout: Duration) -> Option<Async<TcpStream>> {
        async { self.arrived.recv().await.ok() }
            .or(async {
                smol::Timer::after(timeout).await;
                None
            })
            .await
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.rendezvous.waiting.lock().remove(&self.token);
    }
}

impl Rendezvous {
    /// Wait under a new token.
    pub fn expect(self: &Arc<Self>) -> Waiter {
        let token = new_token();
        let (to, arrived) = smol::channel::bounded(1);
        self.waiting.lock().insert(token.clone(), to);
        Waiter {
            rendezvous: self.clone(),
            token,
            arrived,
        }
    }

    /// How many downloads wait now.
    pub fn waiting(&self) -> usize {
        self.waiting.lock().len()
    }

    /// Hand `stream`, whose preamble named `token`, to the download waiting under it;
    /// false (the stream dropped) when nobody waits for it. A token is used once.
    pub fn deliver(&self, token: &str, stream: Async<TcpStream>) -> bool {
        let Some(to) = self.waiting.lock().remove(token) else {
            return false;
        };
        to.try_send(stream).is_ok()
    }

    /// This rendezvous as an accept loop's hand-off.
    pub fn handoff(self: &Arc<Self>) -> Handoff {
        let rendezvous = self.clone();
        Arc::new(move |token, stream| rendezvous.deliver(&token, stream))
    }
}

/// Where an accept loop hands a stream whose preamble named a token (the token, the
/// stream after its preamble); false when nobody takes it (the stream is dropped).
pub type Handoff = Arc<dyn Fn(String, Async<TcpStream>) -> bool + Send + Sync>;

/// Read a preamble from `stream` within `timeout`: its token, or `None` when it is
/// malformed, cut or late.
pub async fn read_preamble(stream: &mut Async<TcpStream>, timeout: Duration) -> Option<String> {
    let mut bytes = [0; PREAMBLE];
    let read = async { stream.read_exact(&mut bytes).await.is_ok() }
        .or(async {
            smol::Timer::after(timeout).await;
            false
        })
        .await;
    if !read || bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let token = std::str::from_utf8(&bytes[MAGIC.len()..]).ok()?;
    token_problem(token).is_none().then(|| token.to_owned())
}
