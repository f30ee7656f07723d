//! The HTTP/1.1 server under the API: hyper 1 driven by smol (`smol-hyper`'s I/O adapter
//! and timer), one task per connection. It takes an already-bound listener, a shutdown
//! signal and an async handler, with the same shape as the project's low HTTP module
//! (`http::serve`, being written on another branch), so that the API moves onto that one
//! server when it lands. Bounds: connections at once, request head size and deadline.

use std::convert::Infallible;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use smol::Async;
use smol::future::FutureExt;
use smol_hyper::rt::{FuturesIo, SmolTimer};
use tracing::debug;

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

/// Most connections the API holds at once: a browser opens a handful, scripts one each.
pub const MAX_CONNECTIONS: usize = 256;

/// Longest request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 16 * 1024;

/// Time for a request head to arrive (an idle kept-alive connection is closed after it).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// The smallest read buffer hyper accepts.
const MIN_READ_BUFFER: usize = 8192;

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

/// Gives a connection's place back when its task ends, however it ends.
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serve HTTP/1.1 on `listener` until `shutdown` fires, answering each request with
/// `handler`.
pub async fn serve<H, Fut>(listener: Async<TcpListener>, shutdown: Shutdown, handler: H)
where
    H: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    let handler = Arc::new(handler);
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shutdown.wait().await;
                None
            })
            .await;
        let (stream, addr) = match accepted {
            None => return,
            Some(Ok(accepted)) => accepted,
            Some(Err(e)) => {
                debug!("HTTP accept failed: {e}");
                smol::Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            open.fetch_sub(1, Ordering::SeqCst);
            debug!("closed HTTP connection from {addr} at once: {MAX_CONNECTIONS} open");
            continue;
        }
        let place = Place(open.clone());
        let (handler, shutdown) = (handler.clone(), shutdown.clone());
        runtime::spawn(async move {
            let _place = place;
            let served = connection(stream, handler).or(async {
                shutdown.wait().await;
                Ok(())
            });
            if let Err(e) = served.await {
                debug!("HTTP connection from {addr} ended: {e}");
            }
        })
        .detach();
    }
}

/// One connection, served with `handler` until either side ends it.
async fn connection<H, Fut>(
    stream: Async<std::net::TcpStream>,
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
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD.max(MIN_READ_BUFFER))
        .serve_connection(FuturesIo::new(stream), service)
        .await
}
