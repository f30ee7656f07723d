//! The one error type of napster: every failure a user or a peer can meet, worded so that
//! the message alone says what went wrong and, where there is one, what to do.

use std::io;

use crate::protocol::ErrorCode;

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
    /// The other side did not answer within the protocol's time limit.
    #[error("timed out {0}")]
    Timeout(String),
    /// A frame announced a length above the configured limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Length the frame claimed.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A frame that is not a valid message of the protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The connection ended in the middle of a message or before an answer.
    #[error("connection closed by {0}")]
    Closed(String),
    /// The other side speaks another protocol version.
    #[error("protocol version mismatch: we speak version {ours}, the other side version {theirs}")]
    Version {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The other side answered with an error message.
    #[error("{message}")]
    Remote {
        /// The machine-readable kind of error.
        code: ErrorCode,
        /// The text the other side sent.
        message: String,
    },
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
    /// The user pressed Ctrl-C or the process is shutting down.
    #[error("cancelled (a download keeps what arrived: `get` it again to resume)")]
    Cancelled,
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
