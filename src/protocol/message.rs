//! The messages of both protocols (peer or shell to index, downloader to file server),
//! the values they carry, and the two traits that let one handshake and one error reply
//! serve both.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;
use super::tags::{TagQuery, Tags};

/// A search, as the shell parses it, the client sends it and the index compiles it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// Substring, or `*`/`?` wildcards; empty means any name (then `sha256` is required).
    pub pattern: String,
    /// A lowercase hex prefix of the SHA-256 (see [`super::rules::sha256_prefix_problem`]).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Smallest size, inclusive.
    #[serde(default)]
    pub min_size: Option<u64>,
    /// Largest size, inclusive.
    #[serde(default)]
    pub max_size: Option<u64>,
    /// Most results wanted (the server caps it at its own limit).
    #[serde(default)]
    pub limit: Option<u32>,
    /// How many matches to skip first: the next page starts where the last one ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Criteria on media tags (since version 5); a file without tags matches none.
    /// Boxed: most searches have none, and commands carry a query by value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Box<TagQuery>>,
}

impl SearchQuery {
    /// A search on a name pattern alone.
    pub fn pattern(pattern: impl Into<String>) -> Self {
        SearchQuery {
            pattern: pattern.into(),
            ..SearchQuery::default()
        }
    }
}

/// How many files match a search or a browse in all, whatever page was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Total {
    /// The count; when `more` is set, a lower bound: the index stops counting there.
    pub count: u64,
    /// True when more than `count` match.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// One shared file as a peer announces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the shared folder, `/`-separated.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents, 64 lowercase hex digits.
    pub sha256: String,
    /// SHA-256 of the file's chunk list (the SHA-256 digests of its chunks, 32 raw bytes
    /// each, concatenated), 64 lowercase hex digits.
    pub chunks: String,
    /// Media tags of an audio file (since version 5); left out when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

/// One search result: a file and the peer that shares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hit {
    /// Peer ID assigned by the index.
    pub peer_id: u64,
    /// The sharer's identity: the key it proved to the index, which its file server
    /// must prove too.
    pub fingerprint: Fingerprint,
    /// The nickname bound to that key on this index, if any.
    #[serde(default)]
    pub nickname: Option<String>,
    /// Address of the peer's file server, as the index saw the peer connect.
    pub addr: SocketAddr,
    /// Whether the index could connect to that address when the peer registered; when
    /// not, the peer is behind a NAT or firewall and is reached another way
    /// (`docs/NAT.md`).
    pub reachable: bool,
    /// The file server's address inside its own network, given only to a downloader
    /// the index sees at the same public address (the same NAT): tried first, its key
    /// checked like any other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<SocketAddr>,
    /// The file.
    pub file: FileEntry,
    /// When the index first saw this file (this name with these bytes) from this peer,
    /// in seconds since the Unix epoch: the index's clock, never the peer's claim.
    pub shared_at: i64,
}

/// One registered peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerInfo {
    /// Peer ID assigned by the index.
    pub peer_id: u64,
    /// The key the peer proved to the index.
    pub fingerprint: Fingerprint,
    /// The nickname bound to that key on this index, if any.
    #[serde(default)]
    pub nickname: Option<String>,
    /// Address of the peer's file server.
    pub addr: SocketAddr,
    /// Whether the index could connect to that address when the peer registered.
    pub reachable: bool,
    /// Number of files shared.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// When the peer registered, in seconds since the Unix epoch.
    pub shared_at: i64,
}

// Variants without fields are written `Name {}` so that `deny_unknown_fields` also
// refuses stray fields on them (serde lets them through on unit variants).

/// Requests a client or peer sends to the index server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum IndexRequest {
    /// First message of every connection.
    Hello {
        /// Protocol version of the client.
        version: u32,
    },
    /// Make this connection a peer session sharing `files`, served on `port`.
    Register {
        /// Port of the peer's file server; the host is taken from the connection.
        port: u16,
        /// Secret the peer keeps across reconnections to keep its Peer ID.
        token: String,
        /// The first batch of files (more may follow with `AddFiles`).
        files: Vec<FileEntry>,
        /// The nickname the peer asks to be known by on this index (`[peer] name`);
        /// granted first come first served, bound to the peer's key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The file server's address inside the peer's network (a private address),
        /// offered to peers behind the same NAT.
        #[serde(default)]
        local: Option<SocketAddr>,
        /// The public port the peer's router forwards to `port` (a UPnP port mapping):
        /// the port other peers are told, still with the connection's host. Left out
        /// when there is none, so an older index still understands the request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mapped_port: Option<u16>,
    },
    /// Add (or replace, by name) files of this session's peer.
    AddFiles {
        /// The files.
        files: Vec<FileEntry>,
    },
    /// Withdraw files of this session's peer by name.
    RemoveFiles {
        /// Their names.
        names: Vec<String>,
    },
    /// Withdraw every file of this session's peer; the session stays open.
    Unregister {},
    /// Files whose names match a pattern, narrowed by the query's other criteria.
    Search(SearchQuery),
    /// Every file of one peer (Napster's browse).
    Browse {
        /// The peer.
        peer_id: u64,
        /// Most results wanted (the server caps it at its own limit).
        #[serde(default)]
        limit: Option<u32>,
        /// How many of its files (by name) to skip first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    },
    /// Files with exactly this name.
    Lookup {
        /// The name.
        name: String,
    },
    /// Every registered peer.
    Peers {},
    /// Liveness check; keeps a peer session alive.
    Ping {},
    /// Ask the index to have peer `peer_id` (behind a NAT) connect out to us, the
    /// registered and reachable peer with this connection's key, at the address the index
    /// observed for us; its connection opens with `token` (a reverse connection,
    /// `docs/NAT.md`).
    Connect {
        /// The sharer.
        peer_id: u64,
        /// One-time token, [`super::rules::TOKEN_HEX`] hex digits, that the sharer's
        /// connection presents before its TLS handshake.
        token: String,
    },
    /// Ask the index to relay between us and peer `peer_id` (both behind NATs): we then
    /// open a TCP connection to the index that starts with `token`'s preamble, the
    /// sharer is told to do the same with a token of its own, and the index splices the
    /// two; our TLS to the sharer runs end to end inside.
    Relay {
        /// The sharer.
        peer_id: u64,
        /// Our one-time token for joining the relay.
        token: String,
    },
    /// Ask the index to coordinate a TCP simultaneous open between us and peer `peer_id`
    /// (both behind NATs, hole punching): the sharer is told the address the index
    /// observed for this connection, and we are told the one it observed for the
    /// sharer's session; both connect to the other from the local port of its
    /// connection to the index. The sharer's side opens with `token`'s preamble.
    Punch {
        /// The sharer.
        peer_id: u64,
        /// One-time token the sharer presents first on the punched connection.
        token: String,
    },
}

/// Responses of the index server, one per request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum IndexResponse {
    /// Answer to `Hello`.
    Welcome {
        /// Protocol version of the server.
        version: u32,
    },
    /// Answer to `Register`.
    Registered {
        /// The Peer ID of this session.
        peer_id: u64,
        /// How many files the peer now shares.
        files: u64,
        /// The nickname bound to this peer's key on this index, if any: the one asked
        /// for, unless another key holds it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nickname: Option<String>,
        /// The file server's address as the index sees it: the connection's source
        /// address with the registered port.
        addr: SocketAddr,
        /// Whether the index could connect to that address (a TLS handshake proving the
        /// registering key) within a short timeout.
        reachable: bool,
    },
    /// Answer to `AddFiles`, `RemoveFiles`, `Unregister`.
    Done {
        /// How many files the peer now shares.
        files: u64,
    },
    /// Answer to `Search` and `Lookup`.
    Results {
        /// The matches, by peer then name.
        hits: Vec<Hit>,
        /// True when more matched than the server's result limit.
        truncated: bool,
        /// How many match in all, when the index counted them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total: Option<Total>,
    },
    /// Answer to `Peers`.
    Peers {
        /// The peers.
        peers: Vec<PeerInfo>,
    },
    /// Answer to `Ping`.
    Pong {},
    /// Answer to `Connect`: the sharer was told to connect to us.
    Connecting {},
    /// Answer to `Relay`: the sharer was told to join; join with the token now.
    Relaying {},
    /// Answer to `Punch`: the sharer was told to connect to us; connect to `addr`, the
    /// sharer's session as the index observed it, from the local port of the connection
    /// that asked, until the two connections meet.
    Punching {
        /// Where the sharer's session comes from, as the index observed it.
        addr: SocketAddr,
    },
    /// Unasked for, on a registered peer's session: join the index's relay with `token`
    /// (a TCP connection to the index opening with its preamble), then serve files over
    /// it as the TLS server to the downloader with key `downloader` only.
    RelayTo {
        /// The sharer's one-time token.
        token: String,
        /// The key the downloader must prove in the TLS handshake inside the relay.
        downloader: Fingerprint,
    },
    /// Unasked for, on a registered peer's session, between answers: connect to `addr`
    /// (the index observed it for the asking downloader, never a claimed one), open with
    /// `token`, then serve files over that connection as its TLS server.
    ConnectTo {
        /// Where the downloader's file server listens, as the index observed it.
        addr: SocketAddr,
        /// The downloader's one-time token.
        token: String,
    },
    /// Unasked for, on a registered peer's session, between answers: connect from the
    /// session's local port to `addr` (the index observed it for the asking downloader's
    /// connection, never a claimed one) until the downloader's own connection to us
    /// meets ours, open with `token`, then serve files over it as the TLS server to the
    /// key `downloader` only.
    PunchTo {
        /// The downloader's connection to the index, as the index observed it.
        addr: SocketAddr,
        /// The downloader's one-time token.
        token: String,
        /// The key the downloader must prove.
        downloader: Fingerprint,
    },
    /// The request failed; the connection stays usable unless said otherwise.
    Error {
        /// The kind of error.
        code: ErrorCode,
        /// What was wrong, for a person.
        message: String,
    },
}

/// Requests a downloader sends to a peer's file server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerRequest {
    /// First message of every connection.
    Hello {
        /// Protocol version of the downloader.
        version: u32,
    },
    /// Send bytes of a shared file.
    Get {
        /// Name as registered with the index.
        name: String,
        /// First byte wanted.
        offset: u64,
        /// How many bytes; `None` means to the end.
        length: Option<u64>,
    },
    /// The SHA-256 digests of a shared file's chunks.
    Chunks {
        /// Name as registered with the index.
        name: String,
    },
    /// Liveness and latency check.
    Ping {},
}

/// Responses of a peer's file server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PeerResponse {
    /// Answer to `Hello`.
    Welcome {
        /// Protocol version of the peer.
        version: u32,
    },
    /// Every upload slot is taken: the `get` waits its turn, `position` in line (1 =
    /// next). Sent again when the position changes, and at least every half timeout.
    Queued {
        /// Place in the line, from 1.
        position: u64,
    },
    /// Exactly `length` raw bytes of the file follow this frame.
    Sending {
        /// Current size of the whole file.
        size: u64,
        /// Offset of the first byte sent.
        offset: u64,
        /// Number of bytes that follow.
        length: u64,
    },
    /// Exactly `count` × 32 raw bytes follow: the chunks' SHA-256 digests, in order.
    ChunkList {
        /// Size of the file the list describes.
        size: u64,
        /// Number of digests that follow; always `chunk_count(size)`.
        count: u64,
    },
    /// Answer to `Ping`.
    Pong {},
    /// The request failed.
    Error {
        /// The kind of error.
        code: ErrorCode,
        /// What was wrong, for a person.
        message: String,
    },
}

/// Kinds of error replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message could not be decoded or broke a limit.
    BadRequest,
    /// The first message was not `Hello` or the version differs.
    Version,
    /// The request needs a registered session.
    NotRegistered,
    /// The file or peer does not exist.
    NotFound,
    /// The request asked for bytes outside the file.
    Range,
    /// The server is at its connection limit.
    Busy,
    /// The index is at a capacity limit (files or name bytes in all, or files from one
    /// address); more files are refused until some leave.
    Full,
    /// Something failed on the server's side.
    Internal,
}

/// The opening of a connection, the same in both protocols: the client says `hello`
/// with its version, the server answers `welcome` or an error.
pub trait Handshake: Sized {
    /// The `hello` a client opens with.
    fn hello(version: u32) -> Self;
    /// The version, when this is a `hello`.
    fn hello_version(&self) -> Option<u32>;
}

/// An answer of either server: `welcome`, an error, or anything else.
pub trait Reply: Sized + std::fmt::Debug {
    /// The `welcome` a server answers a good `hello` with.
    fn welcome(version: u32) -> Self;
    /// The version, when this is a `welcome`.
    fn welcome_version(&self) -> Option<u32>;
    /// An error reply.
    fn error(code: ErrorCode, message: impl Into<String>) -> Self;
    /// The code and text, when this is an error reply.
    fn as_error(&self) -> Option<(ErrorCode, &str)>;
}

macro_rules! handshake {
    ($request:ident, $response:ident) => {
        impl Handshake for $request {
            fn hello(version: u32) -> Self {
                $request::Hello { version }
            }

            fn hello_version(&self) -> Option<u32> {
                match self {
                    $request::Hello { version } => Some(*version),
                    _ => None,
                }
            }
        }

        impl Reply for $response {
            fn welcome(version: u32) -> Self {
                $response::Welcome { version }
            }

            fn welcome_version(&self) -> Option<u32> {
                match self {
                    $response::Welcome { version } => Some(*version),
                    _ => None,
                }
            }

            fn error(code: ErrorCode, message: impl Into<String>) -> Self {
                $response::Error {
                    code,
                    message: message.into(),
                }
            }

            fn as_error(&self) -> Option<(ErrorCode, &str)> {
                match self {
                    $response::Error { code, message } => Some((*code, message)),
                    _ => None,
                }
            }
        }
    };
}

handshake!(IndexRequest, IndexResponse);
handshake!(PeerRequest, PeerResponse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_travels_flat_and_refuses_stray_fields() {
        let request = IndexRequest::Search(SearchQuery {
            sha256: Some("abcd".into()),
            ..SearchQuery::pattern("song")
        });
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            json,
            r#"{"type":"search","pattern":"song","sha256":"abcd","min_size":null,"max_size":null,"limit":null}"#
        );
        let back: IndexRequest =
            serde_json::from_str(r#"{"type":"search","pattern":"x"}"#).unwrap();
        assert_eq!(back, IndexRequest::Search(SearchQuery::pattern("x")));
        let stray =
            serde_json::from_str::<IndexRequest>(r#"{"type":"search","pattern":"x","evil":1}"#);
        assert!(stray.is_err(), "{stray:?}");
    }
}
