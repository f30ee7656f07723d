//! The uploader's log: one line per upload (a downloader's connection taking one file),
//! however many ranges it asks for; a 2 GiB download was 500 lines, one per run of chunks.

use std::net::SocketAddr;
use std::time::Instant;

use tracing::info;

use crate::protocol;

/// What one downloader's connection took of one file: logged once, when it moves to
/// another file or leaves, however many ranges it asked for (a 2 GiB download is one
/// line, not one per run of chunks).
pub(super) struct Upload {
    to: SocketAddr,
    current: Option<(String, u64, u32, Instant)>,
}

impl Upload {
    pub(super) fn new(to: SocketAddr) -> Self {
        Upload { to, current: None }
    }

    /// `bytes` of `name` were sent.
    pub(super) fn sent(&mut self, name: &str, bytes: u64) {
        match &mut self.current {
            Some((same, total, ranges, _)) if same == name => {
                *total += bytes;
                *ranges += 1;
            }
            _ => {
                self.log();
                self.current = Some((name.to_owned(), bytes, 1, Instant::now()));
            }
        }
    }

    fn log(&mut self) {
        if let Some((name, bytes, ranges, started)) = self.current.take() {
            let secs = started.elapsed().as_secs_f64();
            info!(
                "uploaded {} ({}, {ranges} range{}) to {} in {secs:.1}s",
                protocol::visible(&name),
                indicatif::HumanBytes(bytes),
                if ranges == 1 { "" } else { "s" },
                self.to
            );
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        self.log();
    }
}
