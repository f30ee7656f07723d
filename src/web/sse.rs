//! Server-Sent Events: a response whose body is a stream of `event:`/`data:` blocks,
//! fed from a channel, with a comment line at intervals so that proxies and clients see
//! the connection alive. The stream ends when the channel's sender is dropped.

use std::time::Duration;

use http_body_util::StreamBody;
use hyper::body::Frame;
use smol::channel::Receiver;
use smol::future::FutureExt;

use crate::http::{self, Bytes, Response, StatusCode, header};

/// How often a quiet stream sends a keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One event: its name and its JSON data.
#[derive(Debug, Clone)]
pub struct Event {
    /// The `event:` name.
    pub name: &'static str,
    /// The `data:` line, JSON (one line: JSON text has no raw newline).
    pub data: String,
}

impl Event {
    fn to_bytes(&self) -> Bytes {
        Bytes::from(format!("event: {}\ndata: {}\n\n", self.name, self.data))
    }
}

/// A `text/event-stream` answer carrying what `events` delivers; it ends when the
/// channel's sender is dropped.
pub fn stream(events: Receiver<Event>) -> Response {
    let frames = smol::stream::unfold(events, |events| async move {
        let next = async { events.recv().await.ok().map(|event| event.to_bytes()) }
            .or(async {
                smol::Timer::after(KEEP_ALIVE).await;
                Some(Bytes::from_static(b": alive\n\n"))
            })
            .await;
        next.map(|bytes| (Ok::<_, http::BodyError>(Frame::data(bytes)), events))
    });
    let body = http_body_util::BodyExt::boxed(StreamBody::new(frames));
    let mut response = hyper::Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}
