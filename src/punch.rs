//! TCP hole punching (`docs/NAT.md`): a TCP simultaneous open between two peers behind
//! NATs. Each connects to the address the index observed for the other, from the local
//! port of its own connection to the index, so that a NAT that keeps a connection's
//! source port where it can (Linux `MASQUERADE`, most home routers) sends the attempt
//! out from the very address the other side was given. When both attempts cross, each
//! NAT takes the other's arriving SYN for the answer to its own, and one TCP connection
//! results. A NAT that gives every connection a new port (symmetric, `--random-fully`)
//! defeats this; the downloader then falls back to the relay.
//!
//! For the port to be reused while the connection to the index holds it, every socket
//! involved sets `SO_REUSEADDR` and `SO_REUSEPORT` before it binds: the index
//! connections ([`dial`] with no local address) and the punching attempts.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};
use smol::Async;
use smol::future::FutureExt;

/// How long both sides keep trying to open the punched connection before the
/// downloader gives up on it and asks for the relay.
pub const PUNCH_WAIT: Duration = Duration::from_secs(3);

/// Pause between attempts after one is refused (a NAT or host answered with a reset).
const RETRY: Duration = Duration::from_millis(50);

/// A TCP connection to `to` within `timeout`, from a socket that others of ours may
/// bind to the same local port (`SO_REUSEADDR`, `SO_REUSEPORT`), bound to `local` when
/// given (else to a free port the kernel picks).
pub async fn dial(
    local: Option<SocketAddr>,
    to: SocketAddr,
    timeout: Duration,
) -> io::Result<Async<TcpStream>> {
    let family = match to {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let socket = rustix::net::socket_with(family, SocketType::STREAM, flags, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    sockopt::set_socket_reuseport(&socket, true)?;
    // Bound before it connects, even to a port of the kernel's choosing: a port bound
    // so is never handed to another socket's connect (one the kernel binds while it
    // connects may be shared with other connections to other places, which would then
    // keep a punching attempt from binding it).
    let local = local.unwrap_or_else(|| SocketAddr::new(unspecified(to.ip()), 0));
    rustix::net::bind(&socket, &local)?;
    match rustix::net::connect(&socket, &to) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::INPROGRESS => {}
        Err(e) => return Err(e.into()),
    }
    let stream = Async::new(TcpStream::from(socket))?;
    let connected = async {
        stream.writable().await?;
        match sockopt::socket_error(stream.get_ref())? {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }
    .or(async {
        smol::Timer::after(timeout).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await;
    connected.map(|()| stream)
}

/// The unspecified address of `ip`'s family.
fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    }
}

/// The punched connection: connect from `local` (the port our connection to the index
/// uses) to `to` (the other side's, as the index observed it), again after each refusal,
/// until an attempt meets the other side's within `within`.
pub async fn punch(
    local: SocketAddr,
    to: SocketAddr,
    within: Duration,
) -> io::Result<Async<TcpStream>> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let failed = match dial(Some(local), to, left).await {
            Ok(stream) => return Ok(stream),
            Err(e) => e,
        };
        if Instant::now() + RETRY >= deadline {
            return Err(failed);
        }
        smol::Timer::after(RETRY).await;
    }
}
