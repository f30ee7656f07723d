//! Connection set-up, written once for both servers and every client: the accept loop
//! (a connection permit owned by its task, backoff when `accept` fails, shutdown) and
//! the handshake (`hello` with the protocol version, answered by `welcome`). Also the
//! process's file-descriptor budget, which bounds how many connections can be served.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use smol::Async;
use smol::future::FutureExt;
use smol::lock::Semaphore;
use tracing::{debug, warn};

use crate::error::{Error, Result};
use crate::protocol::{self, Connection, ErrorCode, Handshake, Limits, Reply};
use crate::runtime::{self, Shutdown};

/// Pause after a failed `accept` (say, out of file descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// File descriptors kept back from connections: the listeners, the database pool, shared
/// files being read, log files, downloads.
pub const FD_RESERVE: u64 = 256;

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

/// Raise the soft limit on open files to the hard limit, so that the connection limits
/// are what bounds connections rather than `accept` failing; returns the soft limit now
/// in force (`None` when it is unlimited or cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!("cannot raise the limit on open files: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// `wanted` connections, or fewer when the process cannot open that many files (its
/// soft limit minus [`FD_RESERVE`]), so that the extra clients are told `busy` instead of
/// hanging on an `accept` that fails.
pub fn fit_connections(wanted: usize, what: &str) -> usize {
    let Some(files) = raise_fd_limit() else {
        return wanted;
    };
    let available = files.saturating_sub(FD_RESERVE).max(1);
    if (wanted as u64) <= available {
        return wanted;
    }
    let fitted = available as usize;
    warn!(
        "{what}: serving at most {fitted} connections instead of {wanted}: this process may open \
         {files} files and keeps {FD_RESERVE} for other uses (raise `ulimit -n` to serve more)"
    );
    fitted
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

/// Accept connections on `listener` until `shutdown` fires. Each one gets its own task,
/// which holds a connection permit for its whole life (a panic drops it too), says the
/// handshake as a server speaking `Req`/`Resp`, then runs `serve`.
pub async fn accept_loop<Req, Resp, F, Fut>(
    listener: Async<TcpListener>,
    admission: Admission,
    shutdown: Shutdown,
    serve: F,
) where
    Req: Handshake + serde::de::DeserializeOwned + Send,
    Resp: Reply + serde::Serialize + Send + Sync,
    F: Fn(Connection, Shutdown) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    accept_loop_observed::<Req, Resp, F, Fut>(listener, admission, shutdown, None, serve).await;
}

/// Called for each connection told `busy` (for metrics).
pub type OnBusy = Arc<dyn Fn() + Send + Sync>;

/// [`accept_loop`], calling `on_busy` for each connection it refuses at a limit.
pub async fn accept_loop_observed<Req, Resp, F, Fut>(
    listener: Async<TcpListener>,
    admission: Admission,
    shutdown: Shutdown,
    on_busy: Option<OnBusy>,
    serve: F,
) where
    Req: Handshake + serde::de::DeserializeOwned + Send,
    Resp: Reply + serde::Serialize + Send + Sync,
    F: Fn(Connection, Shutdown) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
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
            && let Some(on_busy) = &on_busy
        {
            on_busy();
        }
        let serve = serve.clone();
        let shutdown = shutdown.clone();
        runtime::spawn(async move {
            let result = async {
                let mut conn = Connection::new(stream, admission.limits)?;
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
        let mut conn = Connection::connect(addr, Limits::default()).await?;
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
            admission,
            shutdown,
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
