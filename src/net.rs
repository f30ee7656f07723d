//! Connection set-up, written once for both servers and every client: the accept loop
//! (a connection permit owned by its task, backoff when `accept` fails, shutdown), the
//! TLS handshake of both sides ([`connect`] for clients; see [`crate::tls`]), and the
//! protocol handshake (`hello` with the protocol version, answered by `welcome`). A
//! napster of the older, unencrypted protocol is answered in its own terms that it must
//! upgrade. What a server admits (connections per address and in all, TLS handshakes in
//! flight) is its [`Gate`]'s, asked here before any TLS; the process's file-descriptor
//! budget, which bounds how many connections can be served, is [`crate::fds`]'s.

use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use futures_rustls::{TlsAcceptor, TlsConnector, TlsStream};
use rustls::pki_types::ServerName;
use smol::Async;
use smol::future::FutureExt;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::gate::{self, Admission, Full, Gate};
use crate::identity::Identity;
use crate::protocol::{self, Connection, ErrorCode, Fingerprint, Handshake, Limits, Reply, Socket};
use crate::rendezvous::{self, Handoff};
use crate::runtime::{self, Shutdown};
use crate::tls;

pub use crate::fds::raise_fd_limit;

/// The first byte of a TLS handshake record; an older napster's plaintext frame starts
/// with the high byte of its length, 0 for any frame it could send.
const TLS_HANDSHAKE: u8 = 0x16;

/// Bytes of an older napster's plaintext `hello` read before it is answered.
const PLAINTEXT_HELLO: usize = 4096;

/// Called for each connection refused at a bound (for metrics).
pub type OnRefused = Arc<dyn Fn(Full) + Send + Sync>;

/// What an accept loop does besides serving: count refusals, hand reverse connections
/// over.
#[derive(Default, Clone)]
pub struct Hooks {
    /// Called for each connection refused at a bound.
    pub on_refused: Option<OnRefused>,
    /// Where a connection opening with a preamble (not TLS) goes: a reverse
    /// connection's download, a relay; without it such a connection is refused like any
    /// non-TLS one.
    pub handoff: Option<Handoff>,
}

impl Hooks {
    fn refused(&self, addr: SocketAddr, full: Full) {
        debug!("closed the connection from {addr}: {full}");
        if let Some(on_refused) = &self.on_refused {
            on_refused(full);
        }
    }
}

/// Accept connections on `listener` until `shutdown` fires. A connection over one of
/// the gate's connection caps is closed at once; each other one gets its own task, which
/// holds its place in the gate for its whole life (a panic drops it too), says the
/// handshake as a server speaking `Req`/`Resp`, then runs `serve`; `hooks` say what
/// else it does.
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
    let serve = Arc::new(serve);
    while let Some((stream, addr)) = gate::accept(&listener, &shutdown).await {
        let admitted = match admission.gate.admit(addr.ip().to_canonical()) {
            Ok(admitted) => admitted,
            Err(full) => {
                hooks.refused(addr, full);
                continue;
            }
        };
        let serve = serve.clone();
        let shutdown = shutdown.clone();
        let acceptor = acceptor.clone();
        let hooks = hooks.clone();
        let gate = admission.gate.clone();
        let limits = admission.limits;
        runtime::spawn(async move {
            let _admitted = admitted;
            let result = async {
                let Some(mut conn) =
                    accept_tls::<Resp>(stream, &gate, &acceptor, limits, &hooks).await?
                else {
                    return Ok(());
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

/// `work` (a connection's first bytes and its TLS handshake, as the server) run in a
/// handshake slot of `gate`, waited for up to the timeout: the one place where TLS
/// handshakes are bounded, for accepted connections and for those this side opened.
async fn in_handshake_slot<T>(
    gate: &Gate,
    addr: SocketAddr,
    limits: Limits,
    hooks: &Hooks,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let ip = addr.ip().to_canonical();
    let Ok(_slot) = gate.handshake(ip, limits.timeout).await else {
        hooks.refused(addr, Full::Handshakes);
        return Err(timed_out(addr, "a free TLS handshake slot"));
    };
    work.await
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
pub(crate) async fn io_within<T>(
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
    gate: &Gate,
    acceptor: &TlsAcceptor,
    limits: Limits,
    hooks: &Hooks,
) -> Result<Option<Connection>>
where
    Resp: Reply + serde::Serialize,
{
    let addr = peer_of(&stream)?;
    let handoff = hooks.handoff.clone();
    in_handshake_slot(gate, addr, limits, hooks, async move {
        accept_first_bytes::<Resp>(stream, addr, acceptor, limits, handoff).await
    })
    .await
}

/// [`accept_tls`] once it holds its slot: what the first byte says the connection is.
async fn accept_first_bytes<Resp>(
    stream: Async<TcpStream>,
    addr: SocketAddr,
    acceptor: &TlsAcceptor,
    limits: Limits,
    handoff: Option<Handoff>,
) -> Result<Option<Connection>>
where
    Resp: Reply + serde::Serialize,
{
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
    admission: &Admission,
) -> Result<Connection>
where
    Req: Handshake + serde::de::DeserializeOwned,
    Resp: Reply + serde::Serialize,
{
    let acceptor = TlsAcceptor::from(tls::server_config(identity));
    let (addr, limits) = (peer_of(&stream)?, admission.limits);
    let handshake = tls_accept(stream, &acceptor, limits);
    let hooks = Hooks::default();
    let mut conn = in_handshake_slot(&admission.gate, addr, limits, &hooks, handshake).await?;
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
    let answered = io_within(timeout, async {
        let mut hello = vec![0; PLAINTEXT_HELLO];
        let _ = stream.read(&mut hello).await;
        stream.write_all(&protocol::encode(&refusal)).await?;
        stream.flush().await
    });
    let _ = answered.await;
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
    let connector = TlsConnector::from(config);
    let tls = io_within(limits.timeout, connector.connect(name, Socket::new(stream)))
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
    let closed = matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    );
    if closed {
        // A server over a connection cap closes at once, before any TLS.
        return Error::msg(format!(
            "{addr} closed the connection before the TLS handshake finished: it is probably \
             at a connection limit (try again shortly), or an older napster that does not \
             speak encrypted napster (protocol version {}) and must be upgraded ({e})",
            protocol::VERSION
        ));
    }
    if not_tls {
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
            gate: Gate::new(crate::gate::Bounds {
                connections: 2,
                connections_per_address: 2,
                handshakes: 2,
                handshakes_per_address: 2,
            }),
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
