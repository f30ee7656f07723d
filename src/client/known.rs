//! The known-indexes file, like ssh's `known_hosts`: the key each index server proved
//! the first time this peer connected to it. A later connection must see the same key
//! (a pin); a different one is refused, with the way to accept it if it is trusted.
//!
//! One line per index: `host:port FINGERPRINT`; `#` starts a comment. The file is
//! rewritten whole, atomically, when a pin is added or replaced. Every connection to an
//! index, of any kind, goes through [`KnownIndexes`] ([`KnownIndexes::connect`]):
//! the first one pins.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::client::index::{IndexClient, Pins};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::protocol::Fingerprint;
use crate::protocol::Limits;

/// A key a connection recorded in the known-indexes file: an index met for the first
/// time, or a new key given explicitly for it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The index.
    pub addr: SocketAddr,
    /// The key it proved, now pinned.
    pub key: Fingerprint,
    /// The known-indexes file.
    pub file: PathBuf,
    /// Whether another key was pinned for it before.
    pub replaced: bool,
}

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (addr, key, file) = (self.addr, self.key, self.file.display());
        if self.replaced {
            write!(
                f,
                "the key of the index at {addr} is now {key} (pinned in {file})"
            )
        } else {
            write!(
                f,
                "first connection to the index at {addr}: its key {key} is pinned in {file}"
            )
        }
    }
}

/// The one source of index keys a process trusts: its known-indexes file, read again at
/// every connection, and the keys given explicitly (`host:port#FINGERPRINT`), which win
/// over the file. Clones share one object, so a key pinned by `connect` applies at once
/// to everything that connects to an index (the share's reconnections, the queue's
/// lookups, the routes around NATs) and a pin another napster records in the file
/// applies at its next connection. An empty path keeps no memory of keys: nothing is
/// pinned then unless given explicitly.
#[derive(Debug, Clone, Default)]
pub struct KnownIndexes {
    inner: Arc<Known>,
}

#[derive(Debug, Default)]
struct Known {
    path: PathBuf,
    /// Keys given explicitly in this process, by address.
    given: Mutex<Pins>,
    /// Held while the file is rewritten: two connections pinning at once each keep
    /// their line.
    writing: Mutex<()>,
}

impl KnownIndexes {
    /// The file at `path`.
    pub fn new(path: &Path) -> Self {
        KnownIndexes {
            inner: Arc::new(Known {
                path: path.to_path_buf(),
                given: Mutex::default(),
                writing: Mutex::default(),
            }),
        }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A copy not shared with this one, with `extra` given on top: what a connection
    /// that tries a key (before it is accepted everywhere) checks against.
    pub fn trying(&self, extra: &Pins) -> KnownIndexes {
        let mut given = self.inner.given.lock().clone();
        given.extend(extra);
        KnownIndexes {
            inner: Arc::new(Known {
                path: self.inner.path.clone(),
                given: Mutex::new(given),
                writing: Mutex::default(),
            }),
        }
    }

    /// Give keys explicitly (`host:port#FINGERPRINT`): from now on, everything sharing
    /// this object requires them of those addresses.
    pub fn give(&self, pins: &Pins) {
        self.inner.given.lock().extend(pins);
    }

    /// The key each index must prove now: the file's, overridden by the keys given.
    pub fn pins(&self) -> Result<Pins> {
        let mut pins = self.load()?;
        pins.extend(self.inner.given.lock().iter());
        Ok(pins)
    }

    /// Connect to the first of `addrs` that answers, as `identity`, each one required
    /// to prove the key pinned for it; an index met for the first time (or with a key
    /// given explicitly) gets the key it proved recorded, and the note says so. Every
    /// connection to an index that a person's napster makes comes through here, so that
    /// the first connection of any kind pins.
    pub async fn connect(
        &self,
        addrs: &[SocketAddr],
        identity: &Identity,
        limits: Limits,
    ) -> Result<(IndexClient, Option<Recorded>)> {
        let client = IndexClient::connect_any_as(addrs, identity, &self.pins()?, limits).await?;
        let recorded = self.confirm(client.addr(), client.fingerprint())?;
        Ok((client, recorded))
    }

    /// After the index at `addr` proved `key`: record it when the file has no key for
    /// `addr` (trust on first use, like ssh) or another one (a key given explicitly
    /// replaces it), and say what was recorded.
    pub fn confirm(&self, addr: SocketAddr, key: Fingerprint) -> Result<Option<Recorded>> {
        if self.path().as_os_str().is_empty() {
            return Ok(None);
        }
        let replaced = match self.load()?.get(&addr) {
            Some(old) if *old == key => return Ok(None),
            old => old.is_some(),
        };
        self.record(addr, key)?;
        Ok(Some(Recorded {
            addr,
            key,
            file: self.path().to_path_buf(),
            replaced,
        }))
    }

    /// The pins recorded so far (none when the file does not exist yet).
    pub fn load(&self) -> Result<Pins> {
        if self.inner.path.as_os_str().is_empty() {
            return Ok(Pins::new());
        }
        let text = match std::fs::read_to_string(&self.inner.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pins::new()),
            Err(e) => {
                return Err(Error::io(
                    format!("reading {}", self.inner.path.display()),
                    e,
                ));
            }
        };
        let mut pins = Pins::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = |why: String| {
                Error::msg(format!(
                    "{} line {}: {why}; expected `host:port FINGERPRINT` (fix or delete the line)",
                    self.inner.path.display(),
                    n + 1
                ))
            };
            let (addr, fingerprint) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| bad("no fingerprint".into()))?;
            let addr: SocketAddr = addr
                .parse()
                .map_err(|_| bad(format!("{addr:?} is not an address")))?;
            let fingerprint: Fingerprint = fingerprint.trim().parse().map_err(bad)?;
            pins.insert(addr, fingerprint);
        }
        Ok(pins)
    }

    /// Record (or replace) the key of the index at `addr`.
    pub fn record(&self, addr: SocketAddr, fingerprint: Fingerprint) -> Result<()> {
        if self.inner.path.as_os_str().is_empty() {
            return Ok(());
        }
        let _writing = self.inner.writing.lock();
        let mut pins = self.load()?;
        pins.insert(addr, fingerprint);
        let mut lines: Vec<String> = pins.iter().map(|(a, f)| format!("{a} {f}")).collect();
        lines.sort();
        let text = format!(
            "# Keys of the index servers this napster connected to (like ssh's known_hosts).\n{}\n",
            lines.join("\n")
        );
        let dir = match self.inner.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = dir.join(format!(".known-indexes.{:016x}.tmp", rand::random::<u64>()));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.inner.path)
        })();
        written.map_err(|e| {
            std::fs::remove_file(&temp).ok();
            Error::io(format!("writing {}", self.inner.path.display()), e)
        })
    }
}

/// Split `host:port#FINGERPRINT` into the address text and its pin, if any.
pub fn split_pin(text: &str) -> Result<(&str, Option<Fingerprint>)> {
    match text.split_once('#') {
        None => Ok((text, None)),
        Some((addr, pin)) => {
            let pin = pin
                .parse()
                .map_err(|e: String| Error::Usage(format!("{e} (in {text:?}, after `#`)")))?;
            Ok((addr, Some(pin)))
        }
    }
}
