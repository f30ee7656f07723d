//! Admission before any work is spent on a connection: how many connections a server
//! holds in all and from each source address, and how many TLS handshakes it has in
//! flight, in all and for each address. A connection over a connection cap is closed at
//! once by its caller, so that it costs no more than its `accept` and its close (no
//! descriptor held, no handshake to be told `busy`). A connection under them waits, for at
//! most the caller's patience, for a handshake slot before anything is read from it: a
//! flood of silent connections from one address holds that address's few slots, not the
//! server's. Each server owns one [`Gate`]; `net` takes handshake slots in one place, for
//! the connections a server accepts and for those it serves as the TLS side after opening
//! them itself; the HTTP server (`http`) admits its connections here too.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_listener::Event;
use parking_lot::Mutex;
use smol::Async;
use smol::future::FutureExt;
use tracing::warn;

use crate::protocol::Limits;
use crate::runtime::Shutdown;

/// How many connections and handshakes one server admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most connections at once.
    pub connections: usize,
    /// Most connections at once from one source address.
    pub connections_per_address: usize,
    /// Most TLS handshakes in flight at once.
    pub handshakes: usize,
    /// Most TLS handshakes in flight at once from one source address.
    pub handshakes_per_address: usize,
}

/// Pause after a failed `accept` (say, out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What an accept loop enforces on every connection.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Wire limits of each connection.
    pub limits: Limits,
    /// The server's connection and handshake bounds; a connection over a connection cap
    /// is closed at once, before any TLS.
    pub gate: Gate,
}

impl Admission {
    /// What `bounds` admit, with `limits` on each connection; the connections fitted to
    /// the process's file-descriptor budget (`what` names the server in the warning).
    pub fn new(limits: Limits, bounds: Bounds, what: &str) -> Admission {
        let connections = crate::fds::fit_connections(bounds.connections, what);
        let gate = Gate::new(Bounds {
            connections,
            ..bounds
        });
        Admission { limits, gate }
    }
}

/// The next connection on `listener`, or `None` once `shutdown` fires; a failed
/// `accept` (say, out of file descriptors) is logged and tried again after a pause.
pub async fn accept(
    listener: &Async<TcpListener>,
    shutdown: &Shutdown,
) -> Option<(Async<TcpStream>, SocketAddr)> {
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shutdown.wait().await;
                None
            })
            .await?;
        match accepted {
            Ok(pair) => return Some(pair),
            Err(e) => {
                warn!("accept failed: {e}");
                smol::Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Which bound a connection was refused at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The server holds its most connections.
    Connections,
    /// The connection's address holds its most connections.
    AddressConnections,
    /// No handshake slot (in all or for its address) came free in time.
    Handshakes,
}

impl Full {
    /// The reason a metric counts the refusal under.
    pub fn reason(self) -> &'static str {
        match self {
            Full::Connections => "busy",
            Full::AddressConnections => "address",
            Full::Handshakes => "handshakes",
        }
    }
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Full::Connections => "the server is at its connection limit",
            Full::AddressConnections => "its address is at its connection limit",
            Full::Handshakes => "no TLS handshake slot came free in time",
        })
    }
}

/// What one address holds now.
#[derive(Debug, Default)]
struct Held {
    connections: usize,
    handshakes: usize,
}

/// What the whole server holds now.
#[derive(Debug, Default)]
struct State {
    connections: usize,
    handshakes: usize,
    addresses: HashMap<IpAddr, Held>,
}

impl State {
    /// Forget `ip` once it holds nothing, so that the map stays as small as what is held.
    fn tidy(&mut self, ip: IpAddr) {
        if let Some(held) = self.addresses.get(&ip)
            && held.connections == 0
            && held.handshakes == 0
        {
            self.addresses.remove(&ip);
        }
    }
}

struct Inner {
    bounds: Bounds,
    state: Mutex<State>,
    /// Notified whenever a handshake slot is given back.
    freed: Event,
}

/// One server's admission: cheap to clone, every clone counts against the same bounds.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("bounds", &self.inner.bounds)
            .finish_non_exhaustive()
    }
}

/// A connection admitted: counted against its address and the server until dropped (a
/// panicking task drops it too).
#[derive(Debug)]
pub struct Admitted {
    gate: Gate,
    ip: IpAddr,
}

/// A handshake slot: held from the connection's first byte to the end of its TLS
/// handshake.
#[derive(Debug)]
pub struct Handshake {
    gate: Gate,
    ip: IpAddr,
}

impl Gate {
    /// A gate admitting what `bounds` allow (each bound at least 1).
    pub fn new(bounds: Bounds) -> Gate {
        let at_least_one = |n: usize| n.max(1);
        let bounds = Bounds {
            connections: at_least_one(bounds.connections),
            connections_per_address: at_least_one(bounds.connections_per_address),
            handshakes: at_least_one(bounds.handshakes),
            handshakes_per_address: at_least_one(bounds.handshakes_per_address),
        };
        Gate {
            inner: Arc::new(Inner {
                bounds,
                state: Mutex::default(),
                freed: Event::new(),
            }),
        }
    }

    /// The bounds in force.
    pub fn bounds(&self) -> Bounds {
        self.inner.bounds
    }

    /// Admit a connection from `ip`, or say which cap it is over. Its address's cap is
    /// checked first, so one address at its share cannot take the server's last slots.
    pub fn admit(&self, ip: IpAddr) -> Result<Admitted, Full> {
        let bounds = &self.inner.bounds;
        let mut state = self.inner.state.lock();
        let held = state.addresses.get(&ip).map_or(0, |h| h.connections);
        if held >= bounds.connections_per_address {
            return Err(Full::AddressConnections);
        }
        if state.connections >= bounds.connections {
            return Err(Full::Connections);
        }
        state.connections += 1;
        state.addresses.entry(ip).or_default().connections += 1;
        Ok(Admitted {
            gate: self.clone(),
            ip,
        })
    }

    /// A handshake slot for a connection from `ip`, waiting up to `patience` for one to
    /// come free (for its address and in all).
    pub async fn handshake(&self, ip: IpAddr, patience: Duration) -> Result<Handshake, Full> {
        let deadline = Instant::now() + patience;
        loop {
            // Listening before trying, so that a slot given back in between is not missed.
            let freed = self.inner.freed.listen();
            if let Some(slot) = self.try_handshake(ip) {
                return Ok(slot);
            }
            let woken = async {
                freed.await;
                true
            }
            .or(async {
                smol::Timer::at(deadline).await;
                false
            })
            .await;
            if !woken {
                return self.try_handshake(ip).ok_or(Full::Handshakes);
            }
        }
    }

    fn try_handshake(&self, ip: IpAddr) -> Option<Handshake> {
        let bounds = &self.inner.bounds;
        let mut state = self.inner.state.lock();
        let held = state.addresses.get(&ip).map_or(0, |h| h.handshakes);
        if held >= bounds.handshakes_per_address || state.handshakes >= bounds.handshakes {
            return None;
        }
        state.handshakes += 1;
        state.addresses.entry(ip).or_default().handshakes += 1;
        Some(Handshake {
            gate: self.clone(),
            ip,
        })
    }

    /// Connections held now, in all and from `ip` (for tests and logs).
    pub fn connections(&self, ip: IpAddr) -> (usize, usize) {
        let state = self.inner.state.lock();
        let of_ip = state.addresses.get(&ip).map_or(0, |h| h.connections);
        (state.connections, of_ip)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut state = self.gate.inner.state.lock();
        state.connections -= 1;
        if let Some(held) = state.addresses.get_mut(&self.ip) {
            held.connections -= 1;
        }
        state.tidy(self.ip);
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        {
            let mut state = self.gate.inner.state.lock();
            state.handshakes -= 1;
            if let Some(held) = state.addresses.get_mut(&self.ip) {
                held.handshakes -= 1;
            }
            state.tidy(self.ip);
        }
        // Every waiter looks again: the one whose address this frees may be any of them.
        self.gate.inner.freed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn gate() -> Gate {
        Gate::new(Bounds {
            connections: 3,
            connections_per_address: 2,
            handshakes: 3,
            handshakes_per_address: 1,
        })
    }

    #[test]
    fn an_address_at_its_share_leaves_room_for_others() {
        let gate = gate();
        let a = [gate.admit(ip(1)).unwrap(), gate.admit(ip(1)).unwrap()];
        assert_eq!(gate.admit(ip(1)).unwrap_err(), Full::AddressConnections);
        let b = gate.admit(ip(2)).unwrap();
        assert_eq!(gate.admit(ip(3)).unwrap_err(), Full::Connections);
        drop(a);
        assert_eq!(gate.connections(ip(1)), (1, 0));
        drop(b);
        assert!(gate.inner.state.lock().addresses.is_empty());
    }

    #[test]
    fn a_handshake_waits_for_its_address_s_slot_and_gives_up_in_time() {
        let gate = gate();
        smol::block_on(async {
            let first = gate.handshake(ip(1), Duration::ZERO).await.unwrap();
            let other = gate.handshake(ip(2), Duration::ZERO).await;
            assert!(other.is_ok(), "another address has its own slot");
            let started = Instant::now();
            let refused = gate.handshake(ip(1), Duration::from_millis(50)).await;
            assert_eq!(refused.unwrap_err(), Full::Handshakes);
            assert!(started.elapsed() >= Duration::from_millis(50));
            let waiting = gate.handshake(ip(1), Duration::from_secs(20));
            // `zip` polls the waiter first: it is waiting when the slot is given back.
            let freeing = async { drop(first) };
            let (got, ()) = smol::future::zip(waiting, freeing).await;
            assert!(got.is_ok(), "the slot given back goes to the waiter");
        });
    }
}
