//! The known-indexes file, like ssh's `known_hosts`: the key each index server proved
//! the first time this peer connected to it. A later connection must see the same key
//! (a pin); a different one is refused, with the way to accept it if it is trusted.
//!
//! One line per index: `host:port FINGERPRINT`; `#` starts a comment. The file is
//! rewritten whole, atomically, when a pin is added or replaced.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::protocol::Fingerprint;

/// The key expected of each index address.
pub type Pins = HashMap<SocketAddr, Fingerprint>;

/// A known-indexes file; an empty path keeps no memory of keys (nothing is pinned
/// unless given as `host:port#FINGERPRINT`).
#[derive(Debug, Clone)]
pub struct KnownIndexes {
    path: PathBuf,
}

impl KnownIndexes {
    /// The file at `path`.
    pub fn new(path: &Path) -> Self {
        KnownIndexes {
            path: path.to_path_buf(),
        }
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pins recorded so far (none when the file does not exist yet).
    pub fn load(&self) -> Result<Pins> {
        if self.path.as_os_str().is_empty() {
            return Ok(Pins::new());
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pins::new()),
            Err(e) => return Err(Error::io(format!("reading {}", self.path.display()), e)),
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
                    self.path.display(),
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
        if self.path.as_os_str().is_empty() {
            return Ok(());
        }
        let mut pins = self.load()?;
        pins.insert(addr, fingerprint);
        let mut lines: Vec<String> = pins.iter().map(|(a, f)| format!("{a} {f}")).collect();
        lines.sort();
        let text = format!(
            "# Keys of the index servers this napster connected to (like ssh's known_hosts).\n{}\n",
            lines.join("\n")
        );
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let temp = dir.join(format!(".known-indexes.{:016x}.tmp", rand::random::<u64>()));
        let written = (|| {
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, &self.path)
        })();
        written.map_err(|e| {
            std::fs::remove_file(&temp).ok();
            Error::io(format!("writing {}", self.path.display()), e)
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
