//! The peer's file server: answers downloaders with the bytes of registered files,
//! streamed raw after a `Sending` frame.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use smol::Async;
use smol::future::FutureExt;
use smol::lock::Semaphore;
use tracing::{debug, info, warn};

use crate::error::{Error, IoContext, Result};
use crate::peer::limit::RateLimit;
use crate::peer::share::{IO_BUFFER, Share};
use crate::protocol::{self, Connection, ErrorCode, Limits, PeerRequest, PeerResponse};
use crate::runtime::{self, Shutdown};

/// The folder being served; replaced or changed while serving.
pub type SharedFolder = Arc<RwLock<Share>>;

/// What a file server enforces.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Wire limits; the timeout also bounds every write of a transfer.
    pub limits: Limits,
    /// Most transfers at once; further requests wait their turn.
    pub max_uploads: usize,
    /// Upload bandwidth shared by every transfer.
    pub upload: Arc<RateLimit>,
}

/// How long a downloader may stay silent between requests.
const IDLE: Duration = Duration::from_secs(30);

/// Serve `folder` on `listener` until `shutdown` fires.
pub async fn run(
    listener: Async<TcpListener>,
    folder: SharedFolder,
    settings: Settings,
    shutdown: Shutdown,
) -> Result<()> {
    let uploads = Arc::new(Semaphore::new(settings.max_uploads));
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                shutdown.wait().await;
                None
            })
            .await;
        let (stream, addr) = match accepted {
            None => return Ok(()),
            Some(Ok(pair)) => pair,
            Some(Err(e)) => {
                warn!("accept failed: {e}");
                smol::Timer::after(Duration::from_millis(50)).await;
                continue;
            }
        };
        let folder = folder.clone();
        let uploads = uploads.clone();
        let shutdown = shutdown.clone();
        let settings = settings.clone();
        runtime::spawn(async move {
            let served = serve(stream, addr, folder, settings, uploads)
                .or(async {
                    shutdown.wait().await;
                    Ok(())
                })
                .await;
            if let Err(e) = served {
                debug!("download connection from {addr} ended: {e}");
            }
        })
        .detach();
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> PeerResponse {
    PeerResponse::Error {
        code,
        message: message.into(),
    }
}

async fn serve(
    stream: Async<TcpStream>,
    from: SocketAddr,
    folder: SharedFolder,
    settings: Settings,
    uploads: Arc<Semaphore>,
) -> Result<()> {
    let mut conn = Connection::new(stream, settings.limits)?;
    match conn.recv_reply::<PeerRequest>().await {
        Ok(PeerRequest::Hello { version }) if version == protocol::VERSION => {
            conn.send(&PeerResponse::Welcome {
                version: protocol::VERSION,
            })
            .await?;
        }
        Ok(_) => {
            let message = format!("say hello with protocol version {}", protocol::VERSION);
            return conn.send(&error(ErrorCode::Version, message)).await;
        }
        Err(e @ (Error::Malformed(_) | Error::FrameTooLarge { .. })) => {
            conn.send(&error(ErrorCode::BadRequest, e.to_string()))
                .await
                .ok();
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    loop {
        let request = match conn.recv::<PeerRequest>(IDLE).await {
            Ok(Some(request)) => request,
            Ok(None) => return Ok(()),
            Err(e @ Error::Malformed(_)) => {
                warn!("bad request from {from}: {e}");
                conn.send(&error(ErrorCode::BadRequest, e.to_string()))
                    .await?;
                continue;
            }
            Err(e @ Error::FrameTooLarge { .. }) => {
                warn!("closing {from}: {e}");
                conn.send(&error(ErrorCode::BadRequest, e.to_string()))
                    .await
                    .ok();
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let (name, offset, length) = match request {
            PeerRequest::Ping {} => {
                conn.send(&PeerResponse::Pong {}).await?;
                continue;
            }
            PeerRequest::Hello { .. } => {
                conn.send(&error(ErrorCode::BadRequest, "hello was already said"))
                    .await?;
                continue;
            }
            PeerRequest::Chunks { name } => {
                let list = folder
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .chunk_list(&name);
                match list {
                    Some((size, digests)) => {
                        let count = (digests.len() / 32) as u64;
                        conn.send(&PeerResponse::ChunkList { size, count }).await?;
                        conn.send_raw(&digests).await?;
                    }
                    None => {
                        let message = format!("{:?} is not shared here", protocol::truncate(&name));
                        conn.send(&error(ErrorCode::NotFound, message)).await?;
                    }
                }
                continue;
            }
            PeerRequest::Get {
                name,
                offset,
                length,
            } => (name, offset, length),
        };
        let opened = folder.read().unwrap_or_else(|e| e.into_inner()).open(&name);
        let (file, size) = match opened {
            Ok(pair) => pair,
            Err(message) => {
                warn!("refused {from}: {message}");
                conn.send(&error(ErrorCode::NotFound, message)).await?;
                continue;
            }
        };
        if offset > size {
            let message = format!("offset {offset} is past the end of {name} ({size} bytes)");
            conn.send(&error(ErrorCode::Range, message)).await?;
            continue;
        }
        let length = length.map_or(size - offset, |l| l.min(size - offset));
        let _permit = uploads.acquire().await;
        conn.send(&PeerResponse::Sending {
            size,
            offset,
            length,
        })
        .await?;
        let limits = conn.limits();
        let (socket, received) = conn.into_blocking()?;
        let started = std::time::Instant::now();
        let limit = settings.upload.clone();
        let socket =
            smol::unblock(move || send_range(file, socket, offset, length, &limit)).await?;
        info!(
            "sent {name} ({length} bytes from offset {offset}) to {from} in {:.3}s",
            started.elapsed().as_secs_f64()
        );
        // Whatever the downloader sent meanwhile is its next request.
        conn = Connection::with_received(
            Async::new(socket).context(|| "resuming the connection".into())?,
            limits,
            received,
        )?;
    }
}

/// Copy `length` bytes of `file` from `offset` to `socket`, and give the socket back.
fn send_range(
    mut file: File,
    mut socket: TcpStream,
    offset: u64,
    length: u64,
    limit: &RateLimit,
) -> Result<TcpStream> {
    file.seek(SeekFrom::Start(offset))
        .context(|| "seeking in the file".into())?;
    let mut buf = vec![0; IO_BUFFER];
    let mut left = length;
    while left > 0 {
        let want = (left.min(limit.block(IO_BUFFER) as u64)) as usize;
        let n = file
            .read(&mut buf[..want])
            .context(|| "reading the file".into())?;
        if n == 0 {
            return Err(Error::msg("the file shrank while it was being sent"));
        }
        socket
            .write_all(&buf[..n])
            .context(|| "sending the file".into())?;
        left -= n as u64;
        limit.throttle(n);
    }
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sparse file past 4 GiB: the bytes at a 64-bit offset arrive intact.
    #[test]
    fn ranges_beyond_four_gib() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.bin");
        let file = File::create(&path).unwrap();
        let offset = (5u64 << 30) + 12345;
        file.set_len(offset + 4096).unwrap();
        let marker: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        std::os::unix::fs::FileExt::write_all_at(&file, &marker, offset).unwrap();
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        let file = File::open(&path).unwrap();
        let limit = RateLimit::new(0);
        send_range(file, sender, offset, 4096, &limit).unwrap();
        let mut got = vec![0; 4096];
        receiver.read_exact(&mut got).unwrap();
        assert_eq!(got, marker);
    }
}
