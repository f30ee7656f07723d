//! The handlers, one function per command, each an `impl Shell` block grouped by what
//! it works on: it does the work and returns the command's typed
//! [`Outcome`](super::outcome::Outcome), never text or records.
//!
//! - `share`: the index server and this peer's share (`serve`, `connect`, `register`,
//!   `refresh`, `share`, `unshare`, `unregister`), a download now, `limit`, `status`.
//! - `find`: `search`, `files`, `more`, and the name lookup `get` starts with.
//! - `get`: what `get`'s words name, fetched now or queued.
//! - `queue`: the download queue's commands, `uploads`, `link`.
//! - `peers`: `peers` and `ping`.

mod find;
mod get;
mod peers;
mod queue;
mod share;

pub(in crate::shell) use find::NextPage;
