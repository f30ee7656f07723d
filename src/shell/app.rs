//! The composition root: everything the shell builds from `napster.toml` — the index
//! server and its store, a sharing peer's settings, the index client it keeps — and the
//! address parsing and progress bars the handlers share.

use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use smol::Async;

use super::Shell;
use super::services::{Backend, Serving};
use crate::client::{IndexClient, KnownIndexes, PeerClient, Pins, known};
use crate::error::{Error, IoContext, Result};
use crate::identity::Identity;
use crate::index::{self, MemoryStore, PgStore};
use crate::peer::{self, SharingSettings};
use crate::protocol::Limits;
use crate::runtime;

/// A progress bar that disappears when dropped, however its command ends.
pub(super) struct Bar(ProgressBar);

impl std::ops::Deref for Bar {
    type Target = ProgressBar;

    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Shell {
    /// Bind the index server and start it over the store the config (or `database`)
    /// names: in memory, or PostgreSQL.
    pub(super) async fn start_index(
        &self,
        port: Option<u16>,
        database: Option<String>,
    ) -> Result<Serving> {
        let port = port.unwrap_or(self.config.index.port);
        let bind = resolve(&self.config.index.host, port)?;
        let listener = Async::<TcpListener>::bind(bind).context(|| {
            format!("cannot serve the index on {bind} (is the port taken? try `serve 0`)")
        })?;
        let addr = listener
            .get_ref()
            .local_addr()
            .context(|| "reading the bound address".into())?;
        let database = database.unwrap_or_else(|| self.config.index.database.clone());
        let (trigger, shutdown) = runtime::shutdown_pair();
        let settings = index::Settings {
            identity: Identity::load_or_create(&self.config.index.key, "[index] key")?,
            ..index::Settings::from_config(&self.config)
        };
        let (task, backend) = if database.is_empty() {
            let store = Arc::new(MemoryStore::new());
            let task = runtime::spawn(index::run(listener, store.clone(), settings, shutdown));
            (task, Backend::Memory(store))
        } else {
            let store = Arc::new(PgStore::connect(&database).await?);
            let task = runtime::spawn(index::run(listener, store.clone(), settings, shutdown));
            (task, Backend::Postgres(store))
        };
        Ok(Serving {
            addr,
            task,
            trigger,
            backend,
        })
    }

    /// How this process shares, from the config: the file server's bounds, heartbeats,
    /// and how the share follows its folders.
    pub(super) fn sharing_settings(
        &self,
        port: Option<u16>,
        living: peer::Living,
    ) -> Result<SharingSettings> {
        let config = &self.config;
        Ok(SharingSettings {
            host: match config.peer.host.as_str() {
                "" => None,
                host => Some(resolve(host, 0)?.ip()),
            },
            port: port.unwrap_or(config.peer.port),
            server: peer::serve::Settings {
                identity: self.identity()?,
                limits: config.limits(),
                max_uploads: config.peer.max_uploads,
                max_uploads_per_address: config.peer.max_uploads_per_address,
                upload: self.upload.clone(),
            },
            session_ttl: config.session_ttl(),
            living,
            pins: self.pins()?,
        })
    }

    /// This peer's identity, from its key file (made on first use).
    pub(super) fn identity(&self) -> Result<Identity> {
        let mut cached = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(identity) = cached.as_ref() {
            return Ok(identity.clone());
        }
        let identity = Identity::load_or_create(&self.config.peer.key, "[peer] key")?;
        *cached = Some(identity.clone());
        Ok(identity)
    }

    /// How shares follow their folders, from the config; the hash cache is loaded once.
    pub(super) fn living(&mut self) -> peer::Living {
        if self.cache.is_none() {
            let cache = match self.config.peer.hash_cache.as_os_str().is_empty() {
                true => peer::cache::HashCache::in_memory(),
                false => peer::cache::HashCache::load(&self.config.peer.hash_cache),
            };
            self.cache = Some(Arc::new(Mutex::new(cache)));
        }
        peer::Living {
            ignore: peer::share::Ignore::new(&self.config.peer.ignore),
            cache: self.cache.clone().expect("loaded just above"),
            watch: self.config.peer.watch,
            rescan: Duration::from_secs_f64(self.config.peer.rescan),
            settle: Duration::from_secs_f64(self.config.peer.settle),
        }
    }

    /// The key each index must prove: the known-indexes file, overridden by keys given
    /// as `host:port#FINGERPRINT` (in `connect`, or in `[index] server`).
    pub(super) fn pins(&self) -> Result<Pins> {
        let mut pins = KnownIndexes::new(&self.config.peer.known_indexes).load()?;
        match &self.index {
            Some(_) => pins.extend(self.pins.iter()),
            None => pins.extend(parse_pinned(&self.config.index.server, self.config.index.port)?.1),
        }
        Ok(pins)
    }

    /// Connect to the first of `addrs` that answers and proves its pinned key; an index
    /// met for the first time (or with a key given explicitly) gets its key recorded in
    /// the known-indexes file, and the note says so.
    pub(super) async fn open_index(
        &self,
        addrs: &[SocketAddr],
    ) -> Result<(IndexClient, Option<String>)> {
        let known = KnownIndexes::new(&self.config.peer.known_indexes);
        let recorded = known.load()?;
        let pins = self.pins()?;
        let identity = self.identity()?;
        let client =
            IndexClient::connect_any_as(addrs, &identity, &pins, self.config.limits()).await?;
        let (addr, key) = (client.addr(), client.fingerprint());
        let file = known.path().display();
        let note = match recorded.get(&addr) {
            Some(old) if *old == key => None,
            _ if known.path().as_os_str().is_empty() => None,
            Some(_) => {
                known.record(addr, key)?;
                Some(format!(
                    "the key of the index at {addr} is now {key} (pinned in {file})"
                ))
            }
            None => {
                known.record(addr, key)?;
                Some(format!(
                    "first connection to the index at {addr}: its key {key} is pinned in {file}"
                ))
            }
        };
        Ok((client, note))
    }

    /// The index servers to use, in order of preference.
    pub(super) fn index_addrs(&self) -> Result<Vec<SocketAddr>> {
        match &self.index {
            Some(addrs) => Ok(addrs.clone()),
            None => parse_addrs(&self.config.index.server, self.config.index.port),
        }
    }

    /// The index client, connected on first use and again (to the next server if need
    /// be) if the index dropped us.
    pub(super) async fn client(&mut self) -> Result<&mut IndexClient> {
        let mut addrs = self.index_addrs()?;
        let healthy = match self.client.as_mut() {
            Some(c) => c.ping().await.is_ok(),
            None => false,
        };
        if !healthy {
            if let Some(last) = self.client.as_ref().map(IndexClient::addr) {
                // The server that just failed is tried last.
                addrs.retain(|&a| a != last);
                addrs.push(last);
            }
            self.client = None;
            let (client, note) = self.open_index(&addrs).await?;
            if let Some(note) = note {
                tracing::info!("{note}");
            }
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected just above"))
    }

    pub(super) fn progress_bar(&self, total: u64, what: &str) -> Bar {
        if !self.show_progress {
            return Bar(ProgressBar::hidden());
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("a valid progress template")
            .progress_chars("=> "),
        );
        bar.set_message(what.to_owned());
        Bar(bar)
    }
}

/// Round-trip time of a ping to the file server at `addr`.
pub(super) async fn ping(addr: SocketAddr, limits: Limits) -> Result<Duration> {
    PeerClient::connect(addr, limits).await?.ping().await
}
/// Resolve `host` (a name or an address) with `port`.
fn resolve(host: &str, port: u16) -> Result<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Error::msg(format!("cannot resolve the host {host:?}")))
}

/// Parse `host:port`, `[v6]:port`, or a bare host with `default_port`.
pub fn parse_addr(text: &str, default_port: u16) -> Result<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            let port = port.parse::<u16>().map_err(|_| {
                Error::Usage(format!(
                    "{text:?} is not host:port (for example 127.0.0.1:45000)"
                ))
            })?;
            (host, port)
        }
        _ => (text, default_port),
    };
    resolve(host, port)
}

/// Parse a comma-separated list of index addresses (pins after `#` are left out).
pub fn parse_addrs(text: &str, default_port: u16) -> Result<Vec<SocketAddr>> {
    Ok(parse_pinned(text, default_port)?.0)
}

/// Parse a comma-separated list of index addresses, each perhaps `host:port#FINGERPRINT`:
/// the addresses, and the keys given for them.
pub fn parse_pinned(text: &str, default_port: u16) -> Result<(Vec<SocketAddr>, Pins)> {
    let mut addrs = Vec::new();
    let mut pins = Pins::new();
    for part in text
        .split([',', ' '])
        .filter(|part| !part.trim().is_empty())
    {
        let (addr, pin) = known::split_pin(part.trim())?;
        let addr = parse_addr(addr, default_port)?;
        if let Some(pin) = pin {
            pins.insert(addr, pin);
        }
        addrs.push(addr);
    }
    Ok((addrs, pins))
}

/// The address to reach a server bound to `addr` from this machine.
pub(super) fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
