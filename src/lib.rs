//! napster: a Napster-style peer-to-peer file-sharing system. An index server knows which
//! peer shares which file; peers share a folder, serve it to each other and download
//! directly from each other, every download verified by SHA-256.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod daemon;
pub mod digest;
pub mod disk;
pub mod download;
pub mod error;
pub(crate) mod fds;
pub mod gate;
pub mod home;
pub mod http;
pub mod identity;
pub mod index;
pub mod limit;
pub(crate) mod logging;
pub(crate) mod net;
pub mod peer;
pub mod protocol;
pub mod punch;
pub mod rendezvous;
pub mod runtime;
mod shell;
pub mod tls;
pub mod web;

pub use error::{Error, Result};
/// The binary's command line (the shell and its one-shot commands).
pub use shell::cli;
