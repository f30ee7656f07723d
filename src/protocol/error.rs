//! What can go wrong on a connection: the errors [`super::Connection`] returns. Callers
//! decide on the variant (a malformed request gets an error reply and the connection
//! stays open; a frame too large closes it).

use std::io;

/// A failure to move a message across a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed, with what we were doing.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The other side did not answer (or stopped sending) within the time limit.
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
    /// A frame that is not a valid message of the protocol, or a message out of turn.
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
}

impl Error {
    /// Wrap an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
