//! The checks of the bounds on connections, TLS handshakes and HTTP requests (`gate`,
//! `http`): each at least 1, the HTTP head within what one connection may make a server
//! hold.

use super::Config;
use crate::error::{Error, Result};

/// Shortest bound on an HTTP request head: a request line and a few headers.
pub const MIN_HTTP_HEAD: usize = 1024;

/// Longest bound on an HTTP request head: what one connection may make the server hold.
pub const MAX_HTTP_HEAD: usize = 1 << 20;

impl Config {
    /// The connection, handshake and HTTP bounds (`gate` and `http`).
    pub(super) fn check_bounds(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("`{key}` {why}")));
        for (key, value) in [
            (
                "index.max_connections_per_address",
                self.index.max_connections_per_address,
            ),
            ("index.max_handshakes", self.index.max_handshakes),
            (
                "index.max_handshakes_per_address",
                self.index.max_handshakes_per_address,
            ),
            (
                "index.metrics_max_connections",
                self.index.metrics_max_connections,
            ),
            (
                "index.metrics_max_connections_per_address",
                self.index.metrics_max_connections_per_address,
            ),
            ("peer.max_connections", self.peer.max_connections),
            (
                "peer.max_connections_per_address",
                self.peer.max_connections_per_address,
            ),
            ("peer.max_handshakes", self.peer.max_handshakes),
            (
                "peer.max_handshakes_per_address",
                self.peer.max_handshakes_per_address,
            ),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if !(MIN_HTTP_HEAD..=MAX_HTTP_HEAD).contains(&self.index.metrics_max_head) {
            return bad(
                "index.metrics_max_head",
                &format!("must be between {MIN_HTTP_HEAD} and {MAX_HTTP_HEAD} bytes"),
            );
        }
        if !(self.index.metrics_head_timeout > 0.0 && self.index.metrics_head_timeout <= 3_600.0) {
            return bad(
                "index.metrics_head_timeout",
                "must be between 0 and 3600 seconds",
            );
        }
        Ok(())
    }
}
