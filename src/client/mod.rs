//! Typed clients of the two protocols: [`IndexClient`] for the index, [`PeerClient`] for a
//! peer's file server, and [`Dialer`], which obtains a connection to a sharer by
//! whichever path it allows. Everything that asks a server something goes through here.

pub mod index;
pub mod known;
pub mod peer;
pub mod reach;

pub use index::{Changes, Found, IndexClient, Pins, Push, Reach};
pub use known::KnownIndexes;
pub use peer::{PeerClient, RangeReader};
pub use reach::{Dialer, Route, Via};
