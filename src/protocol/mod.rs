//! The wire protocol: messages in each direction ([`message`]), the rules every field
//! obeys ([`rules`]), framing on a socket ([`connection`]) and what can go wrong there
//! ([`error`]). This module is a leaf: it imports nothing else from napster, and nothing
//! else in napster touches raw bytes of a connection.
//!
//! Every message is a frame: a 4-byte big-endian length followed by that many bytes of
//! JSON. A frame longer than [`Limits::max_frame`] is refused before anything is
//! allocated for it. The only bytes that are not frames are a file's contents and a chunk
//! list, which follow a [`PeerResponse::Sending`] or [`PeerResponse::ChunkList`] raw and
//! exactly as long as announced. `docs/PROTOCOL.md` is the prose version of this module.

pub mod connection;
pub mod error;
pub mod fingerprint;
pub mod message;
pub mod peer_ref;
pub mod rules;
pub mod socket;

pub use connection::{Connection, Transport, decode, encode};
pub use error::Error;
pub use fingerprint::Fingerprint;
pub use message::{
    ErrorCode, FileEntry, Handshake, Hit, IndexRequest, IndexResponse, PeerInfo, PeerRequest,
    PeerResponse, Reply, SearchQuery, Total,
};
pub use peer_ref::{
    MAX_NICKNAME, PeerRef, new_nickname_problem, nickname_problem, nickname_skeleton,
};
pub use rules::*;
pub use socket::Socket;
