//! The composition root: everything the shell builds from `napster.toml` — the index
//! server and its store, a sharing peer's settings, the index client it keeps — and the
//! address parsing and progress bars the handlers share.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use smol::Async;

use super::Shell;
use super::commands::outcome::Pinned;
use super::services::{Backend, Serving};
use crate::client::{Dialer, IndexClient, KnownIndexes, PeerClient, Pins, Via, known};
use crate::error::{Error, IoContext, Result};
use crate::identity::Identity;
use crate::index::metrics::{Counts, Endpoint};
use crate::index::{self, MemoryStore, Metrics, PgStore, Store};
use crate::peer::{self, SharingSettings};
use crate::protocol::{Hit, Limits};
use crate::runtime;

/// What the metrics endpoint admits, as `[index]` says.
fn metrics_bounds(config: &crate::config::IndexConfig) -> crate::http::Bounds {
    crate::http::Bounds {
        connections: config.metrics_max_connections,
        connections_per_address: config.metrics_max_connections_per_address,
        max_head: config.metrics_max_head,
        head_timeout: Duration::from_secs_f64(config.metrics_head_timeout),
    }
}

/// Read the gauges of `metrics` from `store` at each scrape (and its pool, on PostgreSQL).
fn census<S: Store>(
    metrics: &Option<Arc<Metrics>>,
    store: Arc<S>,
    pool: impl Fn() -> Option<(u32, u32, u32)> + Send + Sync + 'static,
) {
    if let Some(metrics) = metrics {
        metrics.set_census(Box::new(move || {
            let peers = smol::block_on(store.peers()).ok()?;
            Some(Counts {
                peers: peers.len() as u64,
                files: peers.iter().map(|p| p.files).sum(),
                pool: pool(),
            })
        }));
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
        let metrics = (!self.config.index.metrics.is_empty()).then(|| Arc::new(Metrics::new()));
        let endpoint = match &metrics {
            Some(m) => Some(Endpoint::start(
                &self.config.index.metrics,
                metrics_bounds(&self.config.index),
                m.clone(),
            )?),
            None => None,
        };
        let (task, backend) = if database.is_empty() {
            let store = Arc::new(MemoryStore::new());
            census(&metrics, store.clone(), || None);
            let run = index::run_with_metrics(listener, store.clone(), settings, shutdown, metrics);
            (runtime::spawn(run), Backend::Memory(store))
        } else {
            let store = Arc::new(PgStore::connect(&database).await?);
            let pooled = store.clone();
            census(&metrics, store.clone(), move || Some(pooled.pool_state()));
            let run = index::run_with_metrics(listener, store.clone(), settings, shutdown, metrics);
            (runtime::spawn(run), Backend::Postgres(store))
        };
        Ok(Serving {
            addr,
            task,
            trigger,
            backend,
            metrics: endpoint,
        })
    }

    /// How this process shares, from the config: the file server's bounds, heartbeats,
    /// and how the share follows its folders.
    pub(super) fn sharing_settings(
        &self,
        port: Option<u16>,
        living: peer::Living,
    ) -> Result<SharingSettings> {
        let host = match self.config.peer.host.as_str() {
            "" => None,
            host => Some(resolve(host, 0)?.ip()),
        };
        let upload = self.upload.clone();
        let mut settings = SharingSettings::from_config(&self.config, host, port, upload, living);
        // This process's key and the index keys it trusts come from their files.
        settings.server.identity = self.identity()?;
        settings.pins = self.pins()?;
        settings.server.rendezvous = Some(self.services.rendezvous().clone());
        Ok(settings)
    }

    /// How downloads reach sharers: directly, and around NATs through `index` (or the
    /// index our share is registered with): by reverse connections when we share, else
    /// by hole punching, else through its relay.
    pub(super) fn dialer(&self, index: std::net::SocketAddr) -> Dialer {
        let limits = self.config.limits();
        let sharing = self.services.sharing();
        let via = (|| {
            Some(Via {
                index: sharing.as_ref().map_or(index, |s| s.state().index),
                identity: self.identity().ok()?,
                pins: self.pins().ok()?,
                rendezvous: sharing.as_ref().map(|_| self.services.rendezvous().clone()),
                punch: true,
            })
        })();
        Dialer::new(limits, via)
    }

    /// How queued downloads reach their sources, decided when each starts: around NATs
    /// through the index our share is with then, else the one the download came from.
    pub(super) fn queue_dialer(&self) -> Result<crate::download::queue::QueueDialer> {
        let (limits, identity, pins) = (self.config.limits(), self.identity()?, self.pins()?);
        let services = self.services.clone();
        Ok(Arc::new(move |q| {
            let sharing = services.sharing();
            let via = sharing
                .as_ref()
                .map(|s| s.state().index)
                .or_else(|| q.index.first().copied())
                .map(|index| Via {
                    index,
                    identity: identity.clone(),
                    pins: pins.clone(),
                    rendezvous: sharing.as_ref().map(|_| services.rendezvous().clone()),
                    punch: true,
                });
            Dialer::new(limits, via).proving(identity.clone())
        }))
    }

    /// The first scan of a folder to share, with a progress bar over what hashing reads.
    /// Ctrl-C (`cancel`) stops it after the files being read, keeping their hashes.
    pub(super) async fn first_scan(
        &self,
        dir: std::path::PathBuf,
        living: &peer::Living,
        cancel: crate::download::Cancel,
    ) -> Result<(peer::share::Share, peer::scan::HashStats)> {
        let bar = self.progress.bar(0, "hashing");
        let (total, progress) = (bar.clone(), bar.clone());
        let living = living.clone();
        smol::unblock(move || {
            let total = |bytes| total.set_length(bytes);
            let stop = cancel.flag();
            peer::scan_and_hash(&dir, &living, total, (&move |n| progress.inc(n), &stop))
        })
        .await
    }

    /// Whether this peer's file server can listen on `port`, asked before a long first
    /// scan rather than after it; port 0 (any free port) always can.
    pub(super) fn check_port(&self, port: Option<u16>) -> Result<()> {
        let port = port.unwrap_or(self.config.peer.port);
        if port == 0 {
            return Ok(());
        }
        let host = match self.config.peer.host.as_str() {
            "" => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            host => resolve(host, 0)?.ip(),
        };
        TcpListener::bind((host, port)).map(drop).map_err(|e| {
            Error::msg(format!(
                "cannot serve files on port {port}: {e} (is the port taken? try `register <dir> 0`)"
            ))
        })
    }

    /// Lock the key file for as long as this process shares with it, or say that another
    /// napster shares with it right now.
    pub(super) fn lock_key(&mut self) -> Result<()> {
        let path = &self.config.peer.key;
        if self.key_lock.is_some() || path.as_os_str().is_empty() {
            return Ok(());
        }
        let file = std::fs::File::open(path)
            .map_err(|e| Error::io(format!("opening the key file {}", path.display()), e))?;
        if file.try_lock().is_err() {
            return Err(Error::msg(format!(
                "another napster is sharing with the key {} right now: two processes with one \
                 key are one peer, and this one would replace the other's files; run it from \
                 another folder, or set `[peer] key` to another file",
                path.display()
            )));
        }
        self.key_lock = Some(file);
        Ok(())
    }

    /// This peer's identity, from its key file (made on first use).
    pub(super) fn identity(&self) -> Result<Identity> {
        let mut cached = self.identity.lock();
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
        let cache = self.cache.clone().expect("loaded just above");
        peer::Living::from_config(&self.config, cache)
    }

    /// The key each index must prove: this process's one source of pins, shared with
    /// the share's session, the queue and the routes around NATs (the known-indexes
    /// file, and keys given as `host:port#FINGERPRINT` in `[index] server` or `connect`).
    pub(super) fn pins(&self) -> Result<KnownIndexes> {
        if self.index.is_none() {
            let (_, given) = parse_pinned(&self.config.index.server, self.config.index.port)?;
            self.known.give(&given);
        }
        Ok(self.known.clone())
    }

    /// Connect to the first of `addrs` that answers and proves its pinned key (or the
    /// key `trying` gives it); an index met for the first time (or with a key given
    /// explicitly) gets its key recorded in the known-indexes file, and the [`Pinned`]
    /// says so.
    pub(super) async fn open_index(
        &self,
        addrs: &[SocketAddr],
        trying: &Pins,
    ) -> Result<(IndexClient, Option<Pinned>)> {
        let known = self.pins()?.trying(trying);
        let identity = self.identity()?;
        let (client, recorded) = known
            .connect(addrs, &identity, self.config.limits())
            .await?;
        let pinned = recorded.map(|r| Pinned {
            addr: r.addr,
            fingerprint: r.key.to_string(),
            file: r.file.display().to_string(),
            replaced: r.replaced,
        });
        Ok((client, pinned))
    }

    /// The index servers to use, in order of preference.
    pub(super) fn index_addrs(&self) -> Result<Vec<SocketAddr>> {
        if let Some(why) = &self.connect_failed {
            return Err(Error::msg(format!(
                "not connected: the last `connect` failed ({why}); run `connect` again"
            )));
        }
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
            let (client, note) = self.open_index(&addrs, &Pins::new()).await?;
            if let Some(note) = note {
                tracing::info!("{}", super::present::text::pinned(&note));
            }
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected just above"))
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

impl Shell {
    /// Round-trip times of the peers in `hits` in milliseconds, pinged at once
    /// (`None`: no answer).
    pub(super) async fn ping_all(&self, hits: &[Hit]) -> BTreeMap<u64, Option<f64>> {
        let mut seen = BTreeMap::new();
        for hit in hits {
            seen.entry(hit.peer_id).or_insert(hit.addr);
        }
        let limits = self.config.limits();
        let pings: Vec<_> = seen
            .into_iter()
            .map(|(id, addr)| (id, runtime::spawn(ping(addr, limits))))
            .collect();
        let mut rtts = BTreeMap::new();
        for (id, ping) in pings {
            let ms = ping.await.ok().map(|rtt| rtt.as_secs_f64() * 1e3);
            rtts.insert(id, ms);
        }
        rtts
    }
}
