//! The relay (`docs/NAT.md`): when neither peer can be connected to, each opens a TCP
//! connection to the index that starts with a preamble naming its one-time token (the
//! downloader's chosen by it, the sharer's by the index and pushed over its session),
//! and the relay splices the two. The peers' TLS runs end to end inside, so the relay
//! sees only ciphertext; the sharer serves only the downloader key the index named.
//!
//! Bounded everywhere: at most [`MAX_PIPES`] pipes, [`PAIR_WAIT`] for the second side
//! to come, one `BUFFER` per direction, [`IDLE`] of silence, the `relay_rate`
//! bandwidth shared by every pipe, and the `relay_quota` bytes per key per
//! [`QUOTA_WINDOW`]. Each pipe is logged with both keys and its bytes.

use std::collections::HashMap;
use std::net::{Shutdown as Half, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use smol::Async;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::Metrics;
use crate::limit::RateLimit;
use crate::protocol::Fingerprint;
use crate::rendezvous::{self, Handoff};
use crate::runtime;

/// Most pipes (pending or running) at once; more requests are told `busy`.
pub const MAX_PIPES: usize = 256;

/// How long the first side of a pipe waits for the second.
pub const PAIR_WAIT: Duration = Duration::from_secs(10);

/// Bytes read at once in each direction.
pub const BUFFER: usize = 64 * 1024;

/// Silence after which a pipe is closed.
pub const IDLE: Duration = Duration::from_secs(60);

/// The window a key's quota counts over.
pub const QUOTA_WINDOW: Duration = Duration::from_secs(3600);

/// What the relay allows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whether this index relays at all.
    pub enabled: bool,
    /// Bytes per second in all (0: no cap).
    pub rate: u64,
    /// Bytes per key per [`QUOTA_WINDOW`] (0: no quota).
    pub quota: u64,
}

/// One pipe being set up: the two keys and the streams that have arrived.
struct Pair {
    downloader: Fingerprint,
    sharer: Fingerprint,
    sharer_peer: u64,
    /// `[downloader, sharer]`.
    streams: Mutex<[Option<Async<TcpStream>>; 2]>,
}

/// Why the relay refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `relay = false`.
    Off,
    /// At [`MAX_PIPES`].
    Busy,
    /// One of the keys used its quota.
    Quota(Fingerprint),
    /// The token is already waiting.
    Taken,
}

/// The relay of one index server.
pub struct Relay {
    limits: Limits,
    rate: RateLimit,
    /// Token → (the pipe, which side: 0 downloader, 1 sharer).
    pending: Mutex<HashMap<String, (Arc<Pair>, usize)>>,
    /// Bytes per key in the current window.
    used: Mutex<HashMap<Fingerprint, (Instant, u64)>>,
    pipes: AtomicUsize,
    metrics: Option<Arc<Metrics>>,
}

impl Relay {
    /// A relay within `limits`, counting into `metrics`.
    pub fn new(limits: Limits, metrics: Option<Arc<Metrics>>) -> Arc<Relay> {
        Arc::new(Relay {
            limits,
            rate: RateLimit::new(limits.rate),
            pending: Mutex::default(),
            used: Mutex::default(),
            pipes: AtomicUsize::new(0),
            metrics,
        })
    }

    /// This relay as the index's accept-loop hand-off.
    pub fn handoff(self: &Arc<Self>) -> Handoff {
        let relay = self.clone();
        Arc::new(move |token, stream| relay.join(&token, stream))
    }

    /// Bytes `key` has had relayed in the current window.
    fn used(&self, key: &Fingerprint) -> u64 {
        let used = self.used.lock();
        match used.get(key) {
            Some(&(since, bytes)) if since.elapsed() < QUOTA_WINDOW => bytes,
            _ => 0,
        }
    }

    /// Count `bytes` against `key`; false once it is past its quota.
    fn charge(&self, key: Fingerprint, bytes: u64) -> bool {
        let mut used = self.used.lock();
        let entry = used.entry(key).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= QUOTA_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += bytes;
        self.limits.quota == 0 || entry.1 <= self.limits.quota
    }

    /// Set up a pipe between `downloader` (joining with `token`) and the sharer with key
    /// `sharer` (peer `sharer_peer`); returns the sharer's token.
    pub fn offer(
        self: &Arc<Self>,
        downloader: Fingerprint,
        token: &str,
        sharer: Fingerprint,
        sharer_peer: u64,
    ) -> Result<String, Refusal> {
        if !self.limits.enabled {
            return Err(Refusal::Off);
        }
        for key in [downloader, sharer] {
            if self.limits.quota > 0 && self.used(&key) >= self.limits.quota {
                return Err(Refusal::Quota(key));
            }
        }
        if self
            .pipes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < MAX_PIPES).then_some(n + 1)
            })
            .is_err()
        {
            return Err(Refusal::Busy);
        }
        let theirs = rendezvous::new_token();
        let pair = Arc::new(Pair {
            downloader,
            sharer,
            sharer_peer,
            streams: Mutex::new([None, None]),
        });
        {
            let mut pending = self.pending.lock();
            if pending.contains_key(token) {
                self.pipes.fetch_sub(1, Ordering::SeqCst);
                return Err(Refusal::Taken);
            }
            pending.insert(token.to_owned(), (pair.clone(), 0));
            pending.insert(theirs.clone(), (pair.clone(), 1));
        }
        // A pipe whose second side never comes is forgotten, with its first stream.
        let relay = self.clone();
        runtime::spawn(async move {
            smol::Timer::after(PAIR_WAIT).await;
            let mut pending = relay.pending.lock();
            let before = pending.len();
            pending.retain(|_, (p, _)| !Arc::ptr_eq(p, &pair));
            if pending.len() < before {
                relay.pipes.fetch_sub(1, Ordering::SeqCst);
                pair.streams.lock().iter_mut().for_each(|s| *s = None);
            }
        })
        .detach();
        Ok(theirs)
    }

    /// A stream whose preamble named `token`: one side of a pipe. When it completes the
    /// pipe, the splicing starts. False (the stream dropped) for a token not waited for.
    fn join(self: &Arc<Self>, token: &str, stream: Async<TcpStream>) -> bool {
        let (pair, both) = {
            let mut pending = self.pending.lock();
            let Some((pair, side)) = pending.remove(token) else {
                return false;
            };
            pair.streams.lock()[side] = Some(stream);
            let both = pair.streams.lock().iter().all(Option::is_some);
            (pair, both)
        };
        if both {
            let [Some(downloader), Some(sharer)] = std::mem::take(&mut *pair.streams.lock()) else {
                unreachable!("both sides are there")
            };
            let relay = self.clone();
            runtime::spawn(async move {
                relay.splice(&pair, downloader, sharer).await;
                relay.pipes.fetch_sub(1, Ordering::SeqCst);
            })
            .detach();
        }
        true
    }

    /// Pass bytes both ways until both sides are done, one is idle for [`IDLE`], or a
    /// key passes its quota.
    async fn splice(&self, pair: &Pair, downloader: Async<TcpStream>, sharer: Async<TcpStream>) {
        let started = Instant::now();
        let (d, s) = (Arc::new(downloader), Arc::new(sharer));
        let last = Mutex::new(Instant::now());
        let down = self.pump(pair, &last, s.clone(), d.clone());
        let up = self.pump(pair, &last, d.clone(), s.clone());
        let (to_downloader, to_sharer) = smol::future::zip(down, up).await;
        let bytes = to_downloader + to_sharer;
        if let Some(metrics) = &self.metrics {
            metrics.relayed(bytes);
        }
        info!(
            "relayed {bytes} bytes ({to_downloader} to the downloader) in {:.1} s between \
             downloader {} and peer {} ({})",
            started.elapsed().as_secs_f64(),
            pair.downloader,
            pair.sharer_peer,
            pair.sharer
        );
    }

    /// Copy `from` to `to` until the end, silence both ways (`last` is when either
    /// direction last moved) or the quota; returns the bytes moved.
    async fn pump(
        &self,
        pair: &Pair,
        last: &Mutex<Instant>,
        from: Arc<Async<TcpStream>>,
        to: Arc<Async<TcpStream>>,
    ) -> u64 {
        let mut buf = vec![0; BUFFER];
        let mut moved = 0u64;
        loop {
            let read = async { Some((&*from).read(&mut buf).await) }
                .or(async {
                    smol::Timer::after(IDLE).await;
                    None
                })
                .await;
            let n = match read {
                // Quiet this way: fine while the other way moves (a transfer's request
                // side is quiet for the whole transfer).
                None if last.lock().elapsed() < IDLE => continue,
                None | Some(Ok(0) | Err(_)) => break,
                Some(Ok(n)) => n,
            };
            *last.lock() = Instant::now();
            let over =
                !self.charge(pair.downloader, n as u64) | !self.charge(pair.sharer, n as u64);
            if over {
                warn!(
                    "relay quota used up by downloader {} or peer {}: cutting their pipe",
                    pair.downloader, pair.sharer_peer
                );
                let _ = from.get_ref().shutdown(Half::Both);
                let _ = to.get_ref().shutdown(Half::Both);
                break;
            }
            let wait = self.rate.delay(n);
            if !wait.is_zero() {
                smol::Timer::after(wait).await;
            }
            let wrote = async { (&*to).write_all(&buf[..n]).await }
                .or(async {
                    smol::Timer::after(IDLE).await;
                    Err(std::io::ErrorKind::TimedOut.into())
                })
                .await;
            if wrote.is_err() {
                break;
            }
            moved += n as u64;
        }
        // Pass the end on; the other direction finishes by itself.
        let _ = to.get_ref().shutdown(Half::Write);
        moved
    }
}
