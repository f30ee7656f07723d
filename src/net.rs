//! Connection set-up, written once for both servers and every client: the accept loop
//! (a connection permit owned by its task, backoff when `accept` fails, shutdown), the
//! TLS handshake of both sides ([`connect`] for clients; see [`crate::tls`]), and the
//! protocol handshake (`hello` with the protocol version, answered by `welcome`). A
//! napster of the older, unencrypted protocol is answered in its own terms that it must
//! upgrade. The process's file-descriptor budget, which bounds how many connections can
//! be served, is [`crate::fds`]'s.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use smol::Async;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::lock::Semaphore;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::protocol::{self, Connection, ErrorCode, Fingerprint, Handshake, Limits, Reply, Socket};
use crate::rendezvous::{self, Handoff};
use crate::runtime::{self, Shutdown};
use crate::tls;

pub use crate::fds::{fit_connections, raise_fd_limit};

/// The first byte of a TLS handshake record; an older napster's plaintext frame starts
/// with the high byte of its length, 0 for any frame it could send.
const TLS_HANDSHAKE: u8 = 0x16;

/// Bytes of an older napster's plaintext `hello` read before it is answered.
const PLAINTEXT_HELLO: usize = 4096;

/// Pause after a failed `accept` (say, out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What an accept loop enforces on every connection.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    /// Wire limits of each connection.
    pub limits: Limits,
    /// Most connections served at once; the next ones are told `busy` and closed.
    pub max_connections: usize,
    /// Most connections served at once from one source address; the next ones from
    /// that address are told `busy`, while other addresses are still served.
    pub max_per_address: usize,
}

/// Connections currently served per source address.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// One connection counted against its source address, for as long as its task owns it
/// (a panic drops it too).
struct AddressSlot {
    counts: PerAddress,
    ip: IpAddr,
}

impl AddressSlot {
    /// A slot for `ip`, unless it already holds `max`.
    fn take(counts: &PerAddress, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut map = counts.lock();
        let held = map.entry(ip).or_insert(0);
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(AddressSlot {
            counts: counts.clone(),
            ip,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock();
        if let Some(held) = map.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Called for each connection told `busy` (for metrics).
pub type OnBusy = Arc<dyn Fn() + Send + Sync>;

/// What an accept loop does besides serving: count refusals, hand reverse connections
/// over.
#[derive(Default, Clone)]
pub struct Hooks {
    /// Called for each connection refused at a limit.
    pub on_busy: Option<OnBusy>,
    /// Where a connection opening with a preamble (not TLS) goes: a reverse
    /// connection's download, a relay; without it such a connection is refused like any
    /// non-TLS one.
    pub handoff: Option<Handoff>,
}

/// Accept connections on `listener` until `shutdown` fires. Each one gets its own task,
/// which holds a connection permit for its whole life (a panic drops it too), says the
/// handshake as a server speaking `Req`/`Resp`, then runs `serve`; `hooks` say what else it does.
pub async fn accept_loop<Req, Resp, F, Fut>(
    listener: Async<TcpListener>,
    identity: Identity,
    admission: Admission,
    shutdown: Shutdown,
    hooks: Hooks,
    serve: F,
) where
    Req: Handshake + serde::de::DeserializeOwned + Send,
    Resp: Reply + serde::Serialize + Send + Sync,
    F: Fn(Connection, Shutdown) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls::server_config(&identity));
    let permits = Arc::new(Semaphore::new(admission.max_connections));
    let per_address = PerAddress::default();
    let serve = Arc::new(serve);
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shutdown.wait().await;
                None
            })
            .await;
        let (stream, addr) = match accepted {
            None => return,
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                warn!("accept failed: {e}");
                smol::Timer::after(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let ip = addr.ip().to_canonical();
        // Counted before the global permit, so one address cannot take it from others.
        let slot = AddressSlot::take(&per_address, ip, admission.max_per_address);
        let permit = slot.as_ref().and_then(|_| permits.try_acquire_arc());
        if (slot.is_none() || permit.is_none())
            && let Some(on_busy) = &hooks.on_busy
        {
            on_busy();
        }
        let serve = serve.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        let handoff = hooks.handoff.clone();
        runtime::spawn(async move {
            let result = async {
                let Some(mut conn) =
                    accept_tls::<Resp>(stream, &acceptor, admission.limits, handoff).await?
                else {
                    return Ok(());
                };
                let Some(_slot) = slot else {
                    warn!("refusing {addr}: at the connection limit of {ip}");
                    let busy = Resp::error(
                        ErrorCode::Busy,
                        format!(
                            "{ip} already has {} connections open, the most one address may \
                             have; close some and try again",
                            admission.max_per_address
                        ),
                    );
                    return Ok(conn.send(&busy).await?);
                };
                let Some(_permit) = permit else {
                    warn!("refusing {addr}: at the connection limit");
                    let busy = Resp::error(
                        ErrorCode::Busy,
                        "the server is at its connection limit; try again shortly",
                    );
                    return Ok(conn.send(&busy).await?);
                };
                debug!("connection from {addr}");
                welcome::<Req, Resp>(&mut conn).await?;
                serve(conn, shutdown).await
            }
            .await;
            if let Err(e) = result {
                debug!("connection from {addr} ended: {e}");
            }
        })
        .detach();
    }
}

/// The address of the other side of `stream`.
fn peer_of(stream: &Async<TcpStream>) -> Result<SocketAddr> {
    stream
        .get_ref()
        .peer_addr()
        .map_err(|e| Error::io("reading the peer's address", e))
}

/// `what` did not come from `addr` within the timeout.
fn timed_out(addr: SocketAddr, what: &str) -> Error {
    Error::Protocol(protocol::Error::Timeout(format!("{what} from {addr}")))
}

/// `op`, or a `TimedOut` error once `timeout` has passed.
async fn io_within<T>(
    timeout: Duration,
    op: impl Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    op.or(async {
        smol::Timer::after(timeout).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await
}

/// The server's side of the TLS handshake, within the timeout: a connection whose
/// other side proved its key, or `None` when it was an older, unencrypted napster (told
/// to upgrade) or left before saying anything.
async fn accept_tls<Resp>(
    stream: Async<TcpStream>,
    acceptor: &TlsAcceptor,
    limits: Limits,
    handoff: Option<Handoff>,
) -> Result<Option<Connection>>
where
    Resp: Reply + serde::Serialize,
{
    let addr = peer_of(&stream)?;
    let timeout = limits.timeout;
    let timed_out = |what: &str| timed_out(addr, what);
    let mut first = [0; 1];
    let peeked = io_within(timeout, stream.peek(&mut first)).await;
    match peeked {
        Ok(0) => return Ok(None),
        Ok(_) if first[0] == rendezvous::MAGIC[0] && handoff.is_some() => {
            let mut stream = stream;
            let handed = match rendezvous::read_preamble(&mut stream, timeout).await {
                Some(token) => handoff.expect("checked")(token, stream),
                None => false,
            };
            if !handed {
                warn!("dropped a connection from {addr}: its preamble names no token we wait for");
            }
            return Ok(None);
        }
        Ok(_) if first[0] != TLS_HANDSHAKE => {
            refuse_plaintext::<Resp>(stream, timeout).await;
            warn!("refused {addr}: it speaks the unencrypted protocol of an older napster");
            return Ok(None);
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Err(timed_out("waiting for a TLS handshake"));
        }
        Err(e) => return Err(Error::io(format!("receiving from {addr}"), e)),
    }
    tls_accept(stream, acceptor, limits).await.map(Some)
}

/// The server's side of the TLS handshake on `stream`, whichever side opened it: a
/// connection whose other side proved its key.
async fn tls_accept(
    stream: Async<TcpStream>,
    acceptor: &TlsAcceptor,
    limits: Limits,
) -> Result<Connection> {
    let addr = peer_of(&stream)?;
    let timeout = limits.timeout;
    let timed_out = |what: &str| timed_out(addr, what);
    let tls = io_within(timeout, acceptor.accept(Socket::new(stream)))
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::TimedOut => timed_out("the TLS handshake"),
            _ => Error::msg(format!("the TLS handshake with {addr} failed: {e}")),
        })?;
    let fingerprint = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(tls::fingerprint_of)
        .ok_or_else(|| Error::msg(format!("{addr} presented no key")))?;
    Ok(Connection::new(
        TlsStream::Server(tls),
        fingerprint,
        limits,
    )?)
}

/// Be the server, as `identity` speaking `Req`/`Resp`, on a TCP stream this side opened
/// (a reverse connection, a relay): the TLS handshake and `welcome`, within the timeout.
/// When `client` is given, the other side must prove that key, or it is refused before
/// anything else is said.
pub async fn serve_stream<Req, Resp>(
    stream: Async<TcpStream>,
    identity: &Identity,
    client: Option<Fingerprint>,
    limits: Limits,
) -> Result<Connection>
where
    Req: Handshake + serde::de::DeserializeOwned,
    Resp: Reply + serde::Serialize,
{
    let acceptor = TlsAcceptor::from(tls::server_config(identity));
    let mut conn = tls_accept(stream, &acceptor, limits).await?;
    if let Some(expected) = client
        && conn.peer_fingerprint() != expected
    {
        return Err(Error::msg(format!(
            "refused {}: it proved key {}, not {expected}",
            conn.peer_addr(),
            conn.peer_fingerprint()
        )));
    }
    welcome::<Req, Resp>(&mut conn).await?;
    Ok(conn)
}

/// Answer an older napster's plaintext `hello` with a plaintext `version` error, so
/// that it can tell its user to upgrade.
async fn refuse_plaintext<Resp>(mut stream: Async<TcpStream>, timeout: Duration)
where
    Resp: Reply + serde::Serialize,
{
    let refusal = Resp::error(
        ErrorCode::Version,
        format!(
            "this napster speaks protocol version {}, which is encrypted (TLS) and \
             authenticated by key; the unencrypted protocol of older versions is not \
             spoken any more: upgrade this napster",
            protocol::VERSION
        ),
    );
    let _ = async {
        let mut hello = vec![0; PLAINTEXT_HELLO];
        let _ = stream.read(&mut hello).await;
        stream.write_all(&protocol::encode(&refusal)).await?;
        stream.flush().await
    }
    .or(async {
        smol::Timer::after(timeout).await;
        Err(std::io::ErrorKind::TimedOut.into())
    })
    .await;
}

/// Connect to `addr` as `identity`: TCP, then TLS, all within the timeout. When
/// `expected` is given, the server must prove that key ([`Error::WrongKey`] otherwise).
pub async fn connect(
    addr: SocketAddr,
    identity: &Identity,
    expected: Option<Fingerprint>,
    limits: Limits,
) -> Result<Connection> {
    let stream = Connection::dial(addr, limits).await?;
    connect_over(stream, identity, expected, limits).await
}

/// [`connect`] over a TCP stream obtained another way (a reverse connection, a punched
/// hole, a relay): the TLS client handshake, `expected` checked, within the timeout.
pub async fn connect_over(
    stream: Async<TcpStream>,
    identity: &Identity,
    expected: Option<Fingerprint>,
    limits: Limits,
) -> Result<Connection> {
    let addr = stream
        .get_ref()
        .peer_addr()
        .map_err(|e| Error::io("reading the peer's address", e))?;
    let (config, check) = tls::client_config(identity, expected);
    let name = ServerName::try_from(tls::SERVER_NAME).expect("a valid DNS name");
    let tls = TlsConnector::from(config)
        .connect(name, Socket::new(stream))
        .or(async {
            smol::Timer::after(limits.timeout).await;
            Err(std::io::ErrorKind::TimedOut.into())
        })
        .await
        .map_err(|e| {
            if let (Some(expected), Some(seen)) = (expected, check.seen())
                && expected != seen
            {
                return Error::WrongKey {
                    addr,
                    expected,
                    seen,
                };
            }
            handshake_failed(addr, e)
        })?;
    let fingerprint = check
        .seen()
        .ok_or_else(|| Error::msg(format!("{addr} presented no key")))?;
    Ok(Connection::new(
        TlsStream::Client(tls),
        fingerprint,
        limits,
    )?)
}

/// A failed client handshake, worded for a person.
fn handshake_failed(addr: SocketAddr, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::TimedOut {
        return Error::Protocol(protocol::Error::Timeout(format!(
            "during the TLS handshake with {addr}"
        )));
    }
    let not_tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| matches!(inner, rustls::Error::InvalidMessage(_)));
    if not_tls || e.kind() == std::io::ErrorKind::UnexpectedEof {
        return Error::msg(format!(
            "{addr} does not speak encrypted napster (protocol version {}): it is probably an \
             older napster, which must be upgraded ({e})",
            protocol::VERSION
        ));
    }
    Error::msg(format!("the TLS handshake with {addr} failed: {e}"))
}

/// The server's side of the handshake: a `hello` of our version gets `welcome`;
/// anything else gets an error reply and ends the connection.
async fn welcome<Req, Resp>(conn: &mut Connection) -> Result<()>
where
    Req: Handshake + serde::de::DeserializeOwned,
    Resp: Reply + serde::Serialize,
{
    let refusal = match conn.recv_reply::<Req>().await {
        Ok(hello) => match hello.hello_version() {
            Some(protocol::VERSION) => {
                return Ok(conn.send(&Resp::welcome(protocol::VERSION)).await?);
            }
            Some(version) => {
                warn!("refusing {}: protocol version {version}", conn.peer_addr());
                let message = format!(
                    "this napster speaks protocol version {}, not {version}",
                    protocol::VERSION
                );
                Resp::error(ErrorCode::Version, message)
            }
            None => Resp::error(
                ErrorCode::Version,
                format!(
                    "the first message must be hello (protocol version {})",
                    protocol::VERSION
                ),
            ),
        },
        Err(e @ (protocol::Error::Malformed(_) | protocol::Error::FrameTooLarge { .. })) => {
            warn!("closing {}: {e}", conn.peer_addr());
            conn.send(&Resp::error(ErrorCode::BadRequest, e.to_string()))
                .await
                .ok();
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    conn.send(&refusal).await?;
    Err(Error::msg("the handshake failed"))
}

/// The client's side of the handshake on a fresh connection: say `hello`, expect
/// `welcome` of our version.
pub async fn greet<Req, Resp>(conn: &mut Connection) -> Result<()>
where
    Req: Handshake + serde::Serialize,
    Resp: Reply + serde::de::DeserializeOwned,
{
    conn.send(&Req::hello(protocol::VERSION)).await?;
    let reply: Resp = conn.recv_reply().await?;
    match reply.welcome_version() {
        Some(protocol::VERSION) => Ok(()),
        Some(theirs) => Err(protocol::Error::Version {
            ours: protocol::VERSION,
            theirs,
        }
        .into()),
        None => match reply.as_error() {
            Some((code, message)) => Err(Error::refused(code, message)),
            None => Err(Error::malformed(format!(
                "unexpected answer to hello: {reply:?}"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::protocol::{IndexRequest, IndexResponse};

    async fn client(addr: std::net::SocketAddr) -> Result<Connection> {
        let mut conn = connect(addr, &Identity::ephemeral(), None, Limits::default()).await?;
        greet::<IndexRequest, IndexResponse>(&mut conn).await?;
        Ok(conn)
    }

    /// A handler that panics must still give its connection slot back: with two slots
    /// and three panicking connections, a fourth is served, not told `busy`.
    #[test]
    fn a_panicking_handler_gives_its_slot_back() {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let (_stop, shutdown) = runtime::shutdown_pair();
        let served = Arc::new(AtomicUsize::new(0));
        let admission = Admission {
            limits: Limits::default(),
            max_connections: 2,
            max_per_address: 2,
        };
        let count = served.clone();
        runtime::spawn(accept_loop::<IndexRequest, IndexResponse, _, _>(
            listener,
            Identity::ephemeral(),
            admission,
            shutdown,
            Hooks::default(),
            move |mut conn, _| {
                let n = count.fetch_add(1, Ordering::SeqCst);
                async move {
                    assert!(n >= 3, "handler {n} panics on purpose");
                    conn.send(&IndexResponse::Pong {}).await?;
                    Ok(())
                }
            },
        ))
        .detach();
        smol::block_on(async {
            for _ in 0..3 {
                let mut conn = client(addr).await.unwrap();
                // The handler panicked: the connection just closes.
                assert!(
                    conn.recv::<IndexResponse>(Duration::from_secs(5))
                        .await
                        .unwrap()
                        .is_none()
                );
            }
            let mut conn = client(addr).await.expect("a slot is free again");
            assert_eq!(
                conn.recv_reply::<IndexResponse>().await.unwrap(),
                IndexResponse::Pong {}
            );
        });
    }
}
