//! The one error type of napster above the wire: every failure a user or a peer can
//! meet, worded so that the message alone says what went wrong and, where there is one,
//! what to do. Variants a caller decides on are typed; [`Error::Other`] is only ever
//! shown, never matched.

use std::io;
use std::path::PathBuf;

use crate::protocol::{self, ErrorCode};

/// Result with napster's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in napster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, with what we were doing when it happened.
    #[error("{context}: {source}")]
    Io {
        /// What napster was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A connection failed to carry a message (timeout, bad frame, closed, version).
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
    /// The other side (an index or a file server) refused our request.
    #[error("{message}")]
    Refused {
        /// The machine-readable kind of refusal.
        code: ErrorCode,
        /// The text the other side sent, cleaned for display.
        message: String,
    },
    /// A file changed while it was being read to hash it; the next scan takes it.
    #[error("{} changed while it was being hashed; try again", .0.display())]
    ChangedWhileReading(PathBuf),
    /// A malformed or invalid `napster.toml`.
    #[error("config: {0}")]
    Config(String),
    /// A command typed wrong: the message includes the usage.
    #[error("{0}")]
    Usage(String),
    /// A download whose bytes do not hash to what the index announced.
    #[error(
        "checksum mismatch for {name} from {peer}: expected sha256 {expected}, got {actual}; {outcome}"
    )]
    ChecksumMismatch {
        /// File name.
        name: String,
        /// Peer the data came from.
        peer: String,
        /// The index's SHA-256.
        expected: String,
        /// What the received bytes hash to.
        actual: String,
        /// What was done with the data.
        outcome: String,
    },
    /// The server at `addr` proved a key other than the one expected (a pinned index, or
    /// the sharer a search hit named): someone else answers there.
    #[error("{addr} proved key {seen}, not the expected {expected}")]
    WrongKey {
        /// Where we connected.
        addr: std::net::SocketAddr,
        /// The fingerprint expected.
        expected: protocol::Fingerprint,
        /// The fingerprint it proved.
        seen: protocol::Fingerprint,
    },
    /// The user pressed Ctrl-C or the process is shutting down.
    #[error("cancelled (a download keeps what arrived: `get` it again to resume)")]
    Cancelled,
    /// What was asked for (a file, a peer) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Any other failure, already worded for the user.
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// Wrap an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An error worded for the user.
    pub fn msg(text: impl Into<String>) -> Self {
        Error::Other(text.into())
    }

    /// A message that breaks the protocol (out of turn, or with a bad field).
    pub fn malformed(text: impl Into<String>) -> Self {
        Error::Protocol(protocol::Error::Malformed(text.into()))
    }

    /// The other side's error reply, its text cleaned for display.
    pub fn refused(code: ErrorCode, message: &str) -> Self {
        Error::Refused {
            code,
            message: protocol::clean_text(message),
        }
    }
}

/// Adds context to I/O results.
pub trait IoContext<T> {
    /// Say what we were doing when the I/O error happened.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(what(), e))
    }
}
