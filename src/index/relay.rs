//! The relay (`docs/NAT.md`): when neither peer can be connected to, each opens a TCP
//! connection to the index that starts with a preamble naming its one-time token (the
//! downloader's chosen by it, the sharer's by the index and pushed over its session),
//! and the relay splices the two. The peers' TLS runs end to end inside, so the relay
//! sees only ciphertext; the sharer serves only the downloader key the index named.
//!
//! Bounded everywhere: at most `relay_pipes` pipes (pending or running), of which one
//! asking key holds at most `relay_pipes_per_key` and one source address
//! `relay_pipes_per_address`; [`PAIR_WAIT`] for the second side to come, one `BUFFER`
//! per direction, [`IDLE`] of silence, the `relay_rate` bandwidth shared by every pipe,
//! and the `relay_quota` bytes per downloader key per [`QUOTA_WINDOW`]. Each pipe is
//! logged with both keys and its bytes.
//!
//! Only the asking side is charged, pipes and quota: a sharer holds nothing, so no
//! downloader's use can cut a sharer off from the others (what a sharer gives is bounded
//! by its own upload slots and limits, and by the pushes it obeys). A pipe frees its
//! slots when it ends, when its second side never comes, and at once when the sharer
//! cannot be told to join ([`Relay::cancel`]). The counts are per server.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Shutdown as Half, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Bytes per downloader key per [`QUOTA_WINDOW`] (0: no quota).
    pub quota: u64,
    /// Most pipes, pending or running, at once (`relay_pipes`).
    pub pipes: usize,
    /// Most of them one asking key holds (`relay_pipes_per_key`).
    pub pipes_per_key: usize,
    /// Most of them one asking source address holds (`relay_pipes_per_address`).
    pub pipes_per_address: usize,
}

/// One pipe being set up: the two keys and the streams that have arrived.
struct Pair {
    downloader: Fingerprint,
    /// The asking connection's source address.
    from: IpAddr,
    sharer: Fingerprint,
    sharer_peer: u64,
    /// Whether its slots were given back (exactly once, whichever way it ends).
    released: AtomicBool,
    /// `[downloader, sharer]`.
    streams: Mutex<[Option<Async<TcpStream>>; 2]>,
}

/// Why the relay refuses a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `relay = false`.
    Off,
    /// At `relay_pipes`.
    Busy,
    /// The asking key holds `relay_pipes_per_key`.
    PerKey,
    /// The asking address holds `relay_pipes_per_address`.
    PerAddress,
    /// The asking key used its quota.
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
    /// Bytes per downloader key in the current window.
    used: Mutex<HashMap<Fingerprint, (Instant, u64)>>,
    /// The pipes held, in all and by who asked.
    held: Mutex<Held>,
    metrics: Option<Arc<Metrics>>,
}

/// The pipes held (pending or running), in all, per asking key, per asking address.
#[derive(Default)]
struct Held {
    pipes: usize,
    keys: HashMap<Fingerprint, usize>,
    addresses: HashMap<IpAddr, usize>,
}

/// Count one more for `at` in `counts`.
fn up<K: Hash + Eq>(counts: &mut HashMap<K, usize>, at: K) {
    *counts.entry(at).or_default() += 1;
}

/// Count one less for `at` in `counts`, forgetting it at zero.
fn down<K: Hash + Eq>(counts: &mut HashMap<K, usize>, at: &K) {
    if let Some(n) = counts.get_mut(at) {
        *n -= 1;
        if *n == 0 {
            counts.remove(at);
        }
    }
}

impl Relay {
    /// A relay within `limits`, counting into `metrics`.
    pub fn new(limits: Limits, metrics: Option<Arc<Metrics>>) -> Arc<Relay> {
        Arc::new(Relay {
            limits,
            rate: RateLimit::new(limits.rate),
            pending: Mutex::default(),
            used: Mutex::default(),
            held: Mutex::default(),
            metrics,
        })
    }

    /// This relay as the index's accept-loop hand-off.
    pub fn handoff(self: &Arc<Self>) -> Handoff {
        let relay = self.clone();
        Arc::new(move |token, stream| relay.join(&token, stream))
    }

    /// Bytes downloader `key` has had relayed in the current window.
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

    /// Set up a pipe between `downloader` (asking from `from`, joining with `token`) and
    /// the sharer with key `sharer` (peer `sharer_peer`); returns the sharer's token.
    pub fn offer(
        self: &Arc<Self>,
        (downloader, from): (Fingerprint, IpAddr),
        token: &str,
        sharer: Fingerprint,
        sharer_peer: u64,
    ) -> Result<String, Refusal> {
        if !self.limits.enabled {
            return Err(Refusal::Off);
        }
        if self.limits.quota > 0 && self.used(&downloader) >= self.limits.quota {
            return Err(Refusal::Quota(downloader));
        }
        let pair = Arc::new(Pair {
            downloader,
            from: from.to_canonical(),
            sharer,
            sharer_peer,
            released: AtomicBool::new(false),
            streams: Mutex::new([None, None]),
        });
        self.hold(&pair)?;
        let theirs = rendezvous::new_token();
        {
            let mut pending = self.pending.lock();
            if pending.contains_key(token) {
                drop(pending);
                self.release(&pair);
                return Err(Refusal::Taken);
            }
            pending.insert(token.to_owned(), (pair.clone(), 0));
            pending.insert(theirs.clone(), (pair.clone(), 1));
        }
        // A pipe whose second side never comes is forgotten, with its first stream.
        let relay = self.clone();
        runtime::spawn(async move {
            smol::Timer::after(PAIR_WAIT).await;
            relay.forget(&pair);
        })
        .detach();
        Ok(theirs)
    }

    /// Take the slots of `pair`: one of all pipes, of its key's and of its address's.
    fn hold(&self, pair: &Pair) -> Result<(), Refusal> {
        let mut held = self.held.lock();
        let count = |n: Option<&usize>| n.copied().unwrap_or(0);
        if held.pipes >= self.limits.pipes {
            return Err(Refusal::Busy);
        }
        if count(held.keys.get(&pair.downloader)) >= self.limits.pipes_per_key {
            return Err(Refusal::PerKey);
        }
        if count(held.addresses.get(&pair.from)) >= self.limits.pipes_per_address {
            return Err(Refusal::PerAddress);
        }
        held.pipes += 1;
        up(&mut held.keys, pair.downloader);
        up(&mut held.addresses, pair.from);
        Ok(())
    }

    /// Give back the slots of `pair`, once whichever way it ends.
    fn release(&self, pair: &Pair) {
        if pair.released.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut held = self.held.lock();
        held.pipes -= 1;
        down(&mut held.keys, &pair.downloader);
        down(&mut held.addresses, &pair.from);
    }

    /// Forget `pair` if it is still being set up (its tokens, a stream that came), and
    /// give back its slots.
    fn forget(&self, pair: &Arc<Pair>) {
        let mut pending = self.pending.lock();
        let before = pending.len();
        pending.retain(|_, (p, _)| !Arc::ptr_eq(p, pair));
        if pending.len() < before {
            drop(pending);
            self.release(pair);
            pair.streams.lock().iter_mut().for_each(|s| *s = None);
        }
    }

    /// The pipe the downloader's `token` was offered for will not be set up (the sharer
    /// could not be told to join): free its slots now rather than after [`PAIR_WAIT`].
    pub fn cancel(&self, token: &str) {
        let pair = self.pending.lock().get(token).map(|(pair, _)| pair.clone());
        if let Some(pair) = pair {
            self.forget(&pair);
        }
    }

    /// Pipes held now: in all, by `key`, from `from`.
    pub fn held(&self, key: &Fingerprint, from: IpAddr) -> (usize, usize, usize) {
        let held = self.held.lock();
        let count = |n: Option<&usize>| n.copied().unwrap_or(0);
        (
            held.pipes,
            count(held.keys.get(key)),
            count(held.addresses.get(&from.to_canonical())),
        )
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
                relay.release(&pair);
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
            if !self.charge(pair.downloader, n as u64) {
                warn!(
                    "relay quota used up by downloader {}: cutting its pipe to peer {}",
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
