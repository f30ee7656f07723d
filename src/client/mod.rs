//! Typed clients of the two protocols: [`IndexClient`] for the index, [`PeerClient`] for a
//! peer's file server. Everything that asks a server something goes through here.

pub mod index;
pub mod known;
pub mod peer;

pub use index::{Changes, IndexClient};
pub use known::{KnownIndexes, Pins};
pub use peer::{PeerClient, RangeReader};
