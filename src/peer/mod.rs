//! The sharing peer: the folders it shares ([`share`], kept in step with the disk by
//! [`Sharing`]), the hash cache that spares re-reading them ([`cache`]), the file server
//! that serves them ([`serve`]) and its session with the index ([`session`]).
//! Downloading is [`crate::download`]'s, which never imports this module.

pub mod cache;
mod ignore;
pub mod mapping;
pub mod pushes;
mod refresh;
pub mod scan;
pub mod serve;
pub mod session;
pub mod share;
pub mod slots;
mod upload_log;
pub mod uploads;

pub use refresh::Refreshed;
use refresh::Shared;

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use smol::future::FutureExt;
use smol::{Async, Task};
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{Error, IoContext, Result};
use crate::limit::RateLimit;
use crate::runtime::{self, ShutdownTrigger};
use cache::HashCache;
use mapping::{MappingState, PortMapping};
use scan::HashStats;
use serve::SharedFolder;
use session::{Session, SessionConfig, SessionState};
use share::{Ignore, Share};

/// Longest interval between heartbeats, whatever the session TTL.
const MAX_HEARTBEAT: Duration = Duration::from_secs(10);

/// How a peer shares.
#[derive(Debug, Clone)]
pub struct SharingSettings {
    /// Address to serve files on; `None` means the address we reach the index from.
    pub host: Option<IpAddr>,
    /// Port to serve files on (0 = any).
    pub port: u16,
    /// The file server's bounds.
    pub server: serve::Settings,
    /// The index's session TTL, which sets how often we send heartbeats.
    pub session_ttl: Duration,
    /// How the share follows its folders.
    pub living: Living,
    /// The key each index server must prove: the process's one source of pins (the
    /// known-indexes file and `host:port#FINGERPRINT`), shared, so that a key pinned
    /// later applies to the session's next reconnection.
    pub pins: crate::client::KnownIndexes,
    /// The nickname asked for on the index (`[peer] name`).
    pub name: Option<String>,
    /// Ask the router for a port mapping of the file server (UPnP-IGD) with this
    /// lease; `None`: don't.
    pub port_mapping: Option<Duration>,
    /// How many pushes the index may make this peer carry out.
    pub pushes: pushes::PushLimits,
}

impl SharingSettings {
    /// The settings `napster.toml` asks for: the file server on `host` (`None`: the
    /// address we reach the index from) and `port` (else `[peer] port`), uploads sharing
    /// `upload`, the share following its folders as `living` says.
    pub fn from_config(
        config: &Config,
        host: Option<IpAddr>,
        port: Option<u16>,
        upload: Arc<RateLimit>,
        living: Living,
    ) -> Self {
        SharingSettings {
            host,
            port: port.unwrap_or(config.peer.port),
            server: serve::Settings::from_config(config, upload),
            session_ttl: config.session_ttl(),
            living,
            pins: Default::default(),
            name: config.peer_name().map(str::to_owned),
            port_mapping: config
                .peer
                .port_mapping
                .then(|| Duration::from_secs(config.peer.port_mapping_lease.into())),
            pushes: pushes::PushLimits {
                per_window: config.peer.max_pushes,
                at_once: config.peer.max_pushes_at_once,
            },
        }
    }
}

impl Default for SharingSettings {
    /// The built-in defaults on any port, with no upload limit and an in-memory hash cache.
    fn default() -> Self {
        let config = Config::default();
        let upload = Arc::new(RateLimit::new(0));
        SharingSettings::from_config(&config, None, Some(0), upload, Living::default())
    }
}

/// How a share follows its folders after registering.
#[derive(Debug, Clone)]
pub struct Living {
    /// Names left out.
    pub ignore: Ignore,
    /// Digests already computed, and where they are saved.
    pub cache: Arc<Mutex<HashCache>>,
    /// Watch the folders for changes (else only rescans and `refresh`).
    pub watch: bool,
    /// Interval between full rescans, the fallback for missed notifications.
    pub rescan: Duration,
    /// How long a file must stay unchanged before it is announced.
    pub settle: Duration,
}

impl Living {
    /// How `[peer]` says shares follow their folders, with this hash cache. The
    /// downloads folder is left out where it lies inside a shared folder: sharing `.`
    /// would otherwise share back every download, and its files change as they arrive.
    pub fn from_config(config: &Config, cache: Arc<Mutex<HashCache>>) -> Self {
        Living {
            ignore: Ignore::new(&config.peer.ignore).leaving_out(&config.peer.downloads),
            cache,
            watch: config.peer.watch,
            rescan: Duration::from_secs_f64(config.peer.rescan),
            settle: Duration::from_secs_f64(config.peer.settle),
        }
    }
}

impl Default for Living {
    fn default() -> Self {
        Living {
            ignore: Ignore::default(),
            cache: Arc::new(Mutex::new(HashCache::in_memory())),
            watch: true,
            rescan: Duration::from_secs(60),
            settle: Duration::from_secs(1),
        }
    }
}

/// Quiet time after a change notification before the folders are scanned again, so
/// that a burst of events is one scan.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// The first scan of a share: list `dir`, tell `total` how many bytes hashing will read,
/// hash what the cache does not know (telling `progress` of each block) and save the
/// cache when anything was hashed.
pub fn scan_and_hash(
    dir: &Path,
    living: &Living,
    total: impl FnOnce(u64),
    (progress, stop): (&(dyn Fn(u64) + Sync), &std::sync::atomic::AtomicBool),
) -> Result<(Share, HashStats)> {
    let listing = scan::scan_roots(&[dir.to_owned()], &living.ignore)?;
    total(listing.bytes_to_hash(&living.cache.lock()));
    let hashed = listing.hash_until(&living.cache, progress, stop);
    // Stopped or not, what was read is kept: the next `register` reads only the rest.
    if matches!(&hashed, Ok((_, stats)) if stats.hashed_files > 0)
        || matches!(hashed, Err(Error::Cancelled))
    {
        living.cache.lock().save();
    }
    hashed
}

/// Keep the share in step with its folders: after change notifications (debounced), every
/// `rescan` interval, and again after `settle` while files are still being written.
async fn follow(shared: Arc<Shared>, events: smol::channel::Receiver<()>) {
    let mut wait = shared.living.rescan;
    loop {
        // Without a watcher the channel is closed: only the timer wakes us.
        async {
            if events.recv().await.is_err() {
                smol::future::pending::<()>().await;
            }
        }
        .or(async {
            smol::Timer::after(wait).await;
        })
        .await;
        // Let a burst of notifications end.
        while async { events.recv().await.is_ok() }
            .or(async {
                smol::Timer::after(DEBOUNCE).await;
                false
            })
            .await
        {}
        match shared.refresh().await {
            Ok(done) => {
                if !done.changes.is_empty() {
                    info!(
                        "share changed: {} new or changed, {} removed",
                        done.changes.upsert.len(),
                        done.changes.removed.len()
                    );
                }
                wait = if done.unsettled > 0 {
                    shared.living.settle
                } else {
                    shared.living.rescan
                };
            }
            Err(e) => {
                warn!("rescanning the shared folders: {e}");
                wait = shared.living.rescan;
            }
        }
    }
}

/// A share being served and registered with the index.
pub struct Sharing {
    /// Where the file server listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    session: Session,
    mapping: PortMapping,
    server: Mutex<Option<Task<Result<()>>>>,
    stop_server: ShutdownTrigger,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    follower: Mutex<Option<Task<()>>>,
    uploads: Arc<uploads::Uploads>,
}

impl Sharing {
    /// Who downloads what from this peer right now.
    pub fn uploads(&self) -> &Arc<uploads::Uploads> {
        &self.uploads
    }

    /// Start serving `share` and register it with the first of the index servers
    /// `index` that answers (the session fails over to the others later).
    #[allow(
        clippy::too_many_lines,
        reason = "the start of a share in its order: bind, map, register, watch, serve"
    )]
    pub async fn start(
        share: Share,
        index: &[SocketAddr],
        settings: &SharingSettings,
    ) -> Result<Sharing> {
        let limits = settings.server.limits;
        let identity = settings.server.identity.clone();
        let pins = settings.pins.clone();
        let mut client = session::connect_index(index, &identity, &pins, limits).await?;
        let host = match settings.host {
            Some(host) => host,
            None => client.local_addr()?.ip(),
        };
        let listener = Async::<TcpListener>::bind(SocketAddr::new(host, settings.port))
            .context(|| format!("cannot serve files on {host} port {}", settings.port))?;
        let addr = listener
            .get_ref()
            .local_addr()
            .context(|| "reading the bound address".into())?;
        let token = session::new_token();
        let files = share.entries();
        let roots = share.roots().to_vec();
        let folder: SharedFolder = Arc::new(RwLock::new(share));
        let (stop_server, shutdown) = runtime::shutdown_pair();
        // Serving before registering: the index connects back to check reachability.
        let file_server = serve::Files::new(folder.clone(), settings.server.clone(), shutdown);
        let server = runtime::spawn(file_server.clone().run(listener));
        let name = settings.name.as_deref();
        let (peer_id, nickname) = match client
            .register_as(addr.port(), &token, &files, name, None)
            .await
        {
            Ok(registered) => registered,
            Err(e) => {
                stop_server.trigger();
                let _ = server.await;
                return Err(e);
            }
        };
        session::warn_if_refused(name, nickname.as_deref());
        let config = SessionConfig {
            index: index.to_vec(),
            port: addr.port(),
            token,
            identity,
            pins,
            limits,
            name: settings.name.clone(),
            heartbeat: (settings.session_ttl / 3).min(MAX_HEARTBEAT),
            pushes: settings.pushes,
        };
        let session = Session::spawn(
            client,
            (peer_id, nickname),
            config,
            folder.clone(),
            file_server,
        );
        let mapping = match settings.port_mapping {
            Some(lease) => PortMapping::start(addr, lease, session.mapped_port_sink()),
            None => PortMapping::off(),
        };
        let shared = Arc::new(Shared {
            folder,
            roots: Mutex::new(roots.clone()),
            excluded: Mutex::default(),
            living: settings.living.clone(),
            updates: session.updater(),
            refreshing: smol::lock::Mutex::new(()),
        });
        let (notify_tx, events) = smol::channel::bounded(1);
        let watcher = if settings.living.watch {
            let mut watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    if event.is_ok() {
                        let _ = notify_tx.try_send(());
                    }
                })
                .map_err(|e| Error::msg(format!("cannot watch the shared folders: {e}")))?;
            for root in &roots {
                watch(&mut watcher, root)?;
            }
            Some(watcher)
        } else {
            drop(notify_tx);
            None
        };
        let follower = runtime::spawn(follow(shared.clone(), events));
        Ok(Sharing {
            addr,
            shared,
            session,
            mapping,
            server: Mutex::new(Some(server)),
            stop_server,
            watcher: Mutex::new(watcher),
            follower: Mutex::new(Some(follower)),
            uploads: settings.server.uploads.clone(),
        })
    }

    /// The session's state (Peer ID, connected).
    pub fn state(&self) -> SessionState {
        self.session.state()
    }

    /// The pushes of the index this peer obeyed and ignored.
    pub fn pushes(&self) -> pushes::PushCounts {
        self.session.pushes()
    }

    /// Where the router's port mapping of the file server stands.
    pub fn mapping(&self) -> MappingState {
        self.mapping.state()
    }

    /// The shared files.
    pub fn folder(&self) -> &SharedFolder {
        &self.shared.folder
    }

    /// Scan the folders now and tell the index what changed.
    pub async fn refresh(&self) -> Result<Refreshed> {
        self.shared.refresh().await
    }

    /// Share another folder too.
    pub async fn share_dir(&self, dir: &Path) -> Result<Refreshed> {
        let root = scan::shareable_folder(dir)?;
        {
            let mut roots = self.shared.roots.lock();
            if let Some(other) = roots
                .iter()
                .find(|r| root.starts_with(r) || r.starts_with(&root))
            {
                return Err(Error::msg(format!(
                    "{} overlaps {}, which is already shared",
                    root.display(),
                    other.display()
                )));
            }
            roots.push(root.clone());
        }
        if let Some(watcher) = self.watcher.lock().as_mut() {
            watch(watcher, &root)?;
        }
        self.refresh().await
    }

    /// Stop sharing a folder (one of the roots) or a single file (by its shared name or
    /// its path).
    pub async fn unshare(&self, target: &str) -> Result<Refreshed> {
        let real = Path::new(target).canonicalize().ok();
        let removed_root = {
            let mut roots = self.shared.roots.lock();
            real.as_ref()
                .and_then(|r| roots.iter().position(|root| root == r))
                .map(|i| roots.remove(i))
        };
        match removed_root {
            Some(root) => {
                if let Some(watcher) = self.watcher.lock().as_mut() {
                    let _ = notify::Watcher::unwatch(watcher, &root);
                }
            }
            None => {
                let folder = self.shared.folder.read();
                let by_name = folder.entries().iter().any(|e| e.name == target);
                let by_path = real.as_ref().is_some_and(|r| folder.contains_path(r));
                drop(folder);
                let key = match (by_name, &real) {
                    (true, _) => target.to_owned(),
                    (false, Some(real)) if by_path => real.to_string_lossy().into_owned(),
                    _ => {
                        return Err(Error::msg(format!(
                            "{target:?} is neither a shared folder nor a shared file (see `status` and `files`)"
                        )));
                    }
                };
                self.shared.excluded.lock().insert(key);
            }
        }
        self.refresh().await
    }

    /// Withdraw the files from the index and stop serving them. Takes `&self` so that a
    /// signal can stop a share while a command (a long `refresh`) is still using it.
    pub async fn stop(&self) {
        let follower = self.follower.lock().take();
        if let Some(follower) = follower {
            follower.cancel().await;
        }
        drop(self.watcher.lock().take());
        // Withdrawn from the index first, so no one is sent to a port about to close.
        self.session.stop().await;
        self.mapping.stop().await;
        self.stop_server.trigger();
        let server = self.server.lock().take();
        if let Some(server) = server {
            let _ = server.await;
        }
    }
}

fn watch(watcher: &mut notify::RecommendedWatcher, root: &Path) -> Result<()> {
    notify::Watcher::watch(watcher, root, notify::RecursiveMode::Recursive)
        .map_err(|e| Error::msg(format!("cannot watch {}: {e}", root.display())))
}
