//! A small HTTP/1.1 server on napster's executor: hyper 1 driven by smol (`smol-hyper`'s
//! I/O adapter and timer), one task per connection and no thread of its own. It takes an
//! already-bound listener, a shutdown signal and an async handler from [`Request`] to
//! [`Response`] (whose [`Body`] may be whole or streamed), and holds every connection to
//! its [`Bounds`]: connections at once, in all and per source address ([`crate::gate`];
//! the excess closed at once), the size of a request head, and a deadline for each head,
//! so that a client that sends a huge or a slow head costs a few KiB and a few seconds.
//! Routing is the handler's: the index's `/metrics` is one.

use std::convert::Infallible;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use smol::Async;
use smol::future::FutureExt;
use smol_hyper::rt::{FuturesIo, SmolTimer};
use tracing::debug;

use crate::gate::{self, Gate};
use crate::runtime::{self, Shutdown};

pub use hyper::body::Bytes;
pub use hyper::{Method, StatusCode, header};

/// A request as a handler gets it; its body arrives as the handler reads it.
pub type Request = hyper::Request<hyper::body::Incoming>;

/// What a body may fail with while it is streamed.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body: whole ([`full`]) or streamed (any `http_body::Body`, boxed).
pub type Body = http_body_util::combinators::BoxBody<Bytes, BodyError>;

/// A handler's answer.
pub type Response = hyper::Response<Body>;

/// The smallest read buffer hyper accepts; a head bound below it is checked on the
/// head's bytes, not on the buffer.
const MIN_READ_BUFFER: usize = 8192;

/// What one HTTP server admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most connections at once.
    pub connections: usize,
    /// Most connections at once from one source address.
    pub connections_per_address: usize,
    /// Longest request head (request line and headers), in bytes.
    pub max_head: usize,
    /// Time for a whole request head to arrive, from the connection's start or the end of
    /// the previous answer (an idle kept-alive connection is closed after it too).
    pub head_timeout: Duration,
}

/// Why a connection was refused or cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The server held its most connections.
    Connections,
    /// The client's address held its most connections.
    AddressConnections,
    /// The request head passed its bound (answered 431).
    HeadTooLarge,
    /// The request head did not arrive within its deadline.
    HeadTimeout,
}

impl Refused {
    /// The reason a metric counts it under.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::Connections => "connections",
            Refused::AddressConnections => "address",
            Refused::HeadTooLarge => "head_too_large",
            Refused::HeadTimeout => "head_timeout",
        }
    }
}

/// Called for each connection refused or cut (for metrics).
pub type OnRefused = Arc<dyn Fn(Refused) + Send + Sync>;

/// A whole body of `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An answer with `status`, a `Content-Type` and a whole body.
pub fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response {
    let mut response = hyper::Response::new(full(body));
    *response.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

/// Serve HTTP/1.1 on `listener` until `shutdown` fires, answering each request with
/// `handler`; `on_refused` hears of each connection refused or cut at a bound.
pub async fn serve<H, Fut>(
    listener: Async<TcpListener>,
    bounds: Bounds,
    shutdown: Shutdown,
    on_refused: Option<OnRefused>,
    handler: H,
) where
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let gate = Gate::new(gate::Bounds {
        connections: bounds.connections,
        connections_per_address: bounds.connections_per_address,
        // Plain HTTP has no TLS handshake to bound.
        handshakes: 1,
        handshakes_per_address: 1,
    });
    let refused = move |why: Refused| {
        if let Some(on_refused) = &on_refused {
            on_refused(why);
        }
    };
    let refused = Arc::new(refused);
    let handler = Arc::new(handler);
    while let Some((stream, addr)) = gate::accept(&listener, &shutdown).await {
        let admitted = match gate.admit(addr.ip().to_canonical()) {
            Ok(admitted) => admitted,
            Err(full) => {
                debug!("closed HTTP connection from {addr} at once: {full}");
                refused(match full {
                    gate::Full::AddressConnections => Refused::AddressConnections,
                    _ => Refused::Connections,
                });
                continue;
            }
        };
        let (handler, shutdown, refused) = (handler.clone(), shutdown.clone(), refused.clone());
        runtime::spawn(async move {
            let _admitted = admitted;
            let served = connection(stream, bounds, handler).or(async {
                shutdown.wait().await;
                Ok(())
            });
            if let Err(e) = served.await {
                if e.is_parse_too_large() {
                    refused(Refused::HeadTooLarge);
                } else if e.is_timeout() {
                    refused(Refused::HeadTimeout);
                }
                debug!("HTTP connection from {addr} ended: {e}");
            }
        })
        .detach();
    }
}

/// One connection, served with `handler` within `bounds` until either side ends it.
async fn connection<H, Fut>(
    stream: Async<std::net::TcpStream>,
    bounds: Bounds,
    handler: Arc<H>,
) -> hyper::Result<()>
where
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let service = service_fn(move |request| {
        let answered = handler(request);
        async move { Ok::<_, Infallible>(answered.await) }
    });
    http1::Builder::new()
        .timer(SmolTimer::new())
        .header_read_timeout(bounds.head_timeout)
        .max_buf_size(bounds.max_head.max(MIN_READ_BUFFER))
        .max_header_size(bounds.max_head)
        .serve_connection(FuturesIo::new(stream), service)
        .await
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use http_body_util::StreamBody;
    use hyper::body::Frame;

    use super::*;

    /// A handler can stream its answer: two frames arrive as two chunks of one body, and a
    /// path it does not know gets its own status.
    #[test]
    fn a_handler_streams_its_body_and_routes_by_path() {
        let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
        let addr = listener.get_ref().local_addr().unwrap();
        let (_stop, shutdown) = runtime::shutdown_pair();
        let bounds = Bounds {
            connections: 4,
            connections_per_address: 4,
            max_head: 4096,
            head_timeout: Duration::from_secs(20),
        };
        runtime::spawn(serve(
            listener,
            bounds,
            shutdown,
            None,
            |request| async move {
                if request.uri().path() != "/events" {
                    return answer(StatusCode::NOT_FOUND, "text/plain", "no such page\n");
                }
                let frames = ["data: one\n\n", "data: two\n\n"].map(|text| {
                    Ok::<_, BodyError>(Frame::data(Bytes::from_static(text.as_bytes())))
                });
                let body = StreamBody::new(smol::stream::iter(frames)).boxed();
                hyper::Response::new(body)
            },
        ))
        .detach();
        let get = |path: &str| {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            write!(
                stream,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            response
        };
        let events = get("/events");
        assert!(events.starts_with("HTTP/1.1 200"), "{events}");
        assert!(events.contains("transfer-encoding: chunked"), "{events}");
        assert!(
            events.contains("data: one\n\n") && events.contains("data: two\n\n"),
            "{events}"
        );
        let missing = get("/other");
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
    }
}
