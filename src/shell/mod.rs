//! The shell: runs commands typed at a `rustyline` prompt or piped on stdin, and owns the
//! background services (index server, sharing) this process runs.

/// Print a line of results to stdout; a closed stdout (`napster | head -1`) is not an
/// error worth dying for, so it is ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

pub mod commands;
pub mod editor;
pub mod render;
pub mod repl;
pub mod services;
pub mod transfers;

use std::net::{IpAddr, SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressStyle};
use smol::Async;

use crate::client::IndexClient;
use crate::client::PeerClient;
use crate::config::Config;
use crate::download::{self, Cancel, Job, Status};
use crate::error::{Error, IoContext, Result};
use crate::index::{self, MemoryStore, PgStore};
use crate::limit::{RateLimit, show_rate};
use crate::peer::share;
use crate::peer::{self, Sharing, SharingSettings};
use crate::protocol::Hit;
use crate::runtime;
use commands::{Command, Direction};
use services::{Backend, Services, Serving};
use transfers::Transfers;

/// A progress bar that disappears when dropped, however its command ends.
struct Bar(ProgressBar);

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

/// Whether the shell goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave.
    Quit,
}

/// The state behind the prompt.
pub struct Shell {
    config: Config,
    services: Arc<Services>,
    index: Option<Vec<SocketAddr>>,
    client: Option<IndexClient>,
    /// Why the last `connect` failed, until one succeeds: nothing then falls back to
    /// another index.
    connect_failed: Option<String>,
    last_names: Arc<Mutex<Vec<String>>>,
    show_progress: bool,
    upload: Arc<RateLimit>,
    download: Arc<RateLimit>,
    transfers: Arc<Transfers>,
    cache: Option<Arc<Mutex<peer::cache::HashCache>>>,
}

/// What `refresh`, `share` and `unshare` ask of the share.
enum Refresh {
    All,
    Share(PathBuf),
    Unshare(String),
}

impl Shell {
    /// A shell with `config`; `show_progress` draws progress bars on stderr.
    pub fn new(config: Config, services: Arc<Services>, show_progress: bool) -> Self {
        let (up, down) = config.rate_limits();
        Shell {
            upload: Arc::new(RateLimit::new(up)),
            download: Arc::new(RateLimit::new(down)),
            transfers: Arc::default(),
            cache: None,
            config,
            services,
            index: None,
            client: None,
            connect_failed: None,
            last_names: Arc::default(),
            show_progress,
        }
    }

    /// The background downloads, to stop them at exit.
    pub fn transfers(&self) -> Arc<Transfers> {
        self.transfers.clone()
    }

    /// File names of the last search, for completion.
    pub fn last_names(&self) -> Arc<Mutex<Vec<String>>> {
        self.last_names.clone()
    }

    /// Run one parsed command, printing its results to stdout.
    pub async fn execute(&mut self, command: Command, cancel: Cancel) -> Result<Flow> {
        match command {
            Command::Serve(port, database) => self.serve(port, database).await?,
            Command::Connect(addr) => self.connect(addr).await?,
            Command::Register(dir, port) => self.register(dir, port).await?,
            Command::Unregister => self.unregister().await?,
            Command::Refresh => self.refresh(Refresh::All).await?,
            Command::Share(dir) => self.refresh(Refresh::Share(dir)).await?,
            Command::Unshare(what) => self.refresh(Refresh::Unshare(what)).await?,
            Command::Search(args) => self.search(args).await?,
            Command::Files(peer) => self.files(peer).await?,
            Command::Get(name, peer, background) => {
                self.get(&name, peer, background, cancel).await?
            }
            Command::Transfers => match self.transfers.render() {
                Some(table) => say!("{table}"),
                None => say!("no background downloads (`get -b <file>` starts one)"),
            },
            Command::Limit(direction, rate) => self.limit(direction, rate),
            Command::Ping(peer) => self.ping(peer).await?,
            Command::Peers => self.peers().await?,
            Command::Status => self.status().await?,
            Command::Help(topic) => say!("{}", commands::help(topic.as_deref())?),
            Command::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    async fn serve(&mut self, port: Option<u16>, database: Option<String>) -> Result<()> {
        if let Some(addr) = self.services.index_addr() {
            return Err(Error::msg(format!(
                "already serving the index on {addr}; quit to stop it"
            )));
        }
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
        let settings = index::Settings::from_config(&self.config);
        let (task, backend) = if database.is_empty() {
            let store = Arc::new(MemoryStore::new());
            let task = runtime::spawn(index::run(listener, store.clone(), settings, shutdown));
            (task, Backend::Memory(store))
        } else {
            let store = Arc::new(PgStore::connect(&database).await?);
            let task = runtime::spawn(index::run(listener, store.clone(), settings, shutdown));
            (task, Backend::Postgres(store))
        };
        let kind = backend.name();
        self.services.set_serving(Serving {
            addr,
            task,
            trigger,
            backend,
        });
        say!("index server listening on {addr}");
        if kind != "in memory" {
            say!(
                "the index is kept {kind} (schema version {}): every index server using this \
                 database shares it",
                PgStore::schema_version()
            );
        }
        self.index = Some(vec![reachable(addr)]);
        self.client = None;
        self.connect_failed = None;
        Ok(())
    }

    /// Connect to the index at `addr`; when that fails, every command that needs the
    /// index fails too until a `connect` succeeds, rather than quietly using another.
    async fn connect(&mut self, addr: Option<String>) -> Result<()> {
        self.client = None;
        let connected = self.try_connect(addr).await;
        self.connect_failed = connected.as_ref().err().map(ToString::to_string);
        connected
    }

    async fn try_connect(&mut self, addr: Option<String>) -> Result<()> {
        let text = addr.unwrap_or_else(|| self.config.index.server.clone());
        let addrs = parse_addrs(&text, self.config.index.port)?;
        let mut client = IndexClient::connect_any(&addrs, self.config.limits()).await?;
        let rtt = client.ping().await?;
        let others: Vec<String> = addrs
            .iter()
            .filter(|&&a| a != client.addr())
            .map(SocketAddr::to_string)
            .collect();
        say!(
            "connected to the index at {} (rtt {:.2} ms){}",
            client.addr(),
            rtt.as_secs_f64() * 1e3,
            if others.is_empty() {
                String::new()
            } else {
                format!("; fails over to {}", others.join(", "))
            }
        );
        self.index = Some(addrs);
        self.client = Some(client);
        Ok(())
    }

    /// The index servers to use, in order of preference.
    fn index_addrs(&self) -> Result<Vec<SocketAddr>> {
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
    async fn client(&mut self) -> Result<&mut IndexClient> {
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
            self.client = Some(IndexClient::connect_any(&addrs, self.config.limits()).await?);
        }
        Ok(self.client.as_mut().expect("connected just above"))
    }

    async fn register(&mut self, dir: Option<PathBuf>, port: Option<u16>) -> Result<()> {
        if let Some(state) = self.services.sharing_summary() {
            return Err(Error::msg(format!(
                "already sharing: {state}; unregister first"
            )));
        }
        let dir = dir.unwrap_or_else(|| self.config.peer.dir.clone());
        let index = self.index_addrs()?;
        let living = self.living();
        let ignore = living.ignore.clone();
        let listing = smol::unblock(move || share::scan_roots(&[dir], &ignore)).await?;
        let total = listing.bytes_to_hash(&living.cache.lock().unwrap_or_else(|e| e.into_inner()));
        let bar = self.progress_bar(total, "hashing");
        let progress = bar.clone();
        let cache = living.cache.clone();
        let (share, stats) =
            smol::unblock(move || listing.hash_with(&cache, &move |n| progress.inc(n))).await?;
        drop(bar);
        if stats.hashed_files > 0 {
            living
                .cache
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .save();
        }
        let settings = SharingSettings {
            host: match self.config.peer.host.as_str() {
                "" => None,
                host => Some(resolve(host, 0)?.ip()),
            },
            port: port.unwrap_or(self.config.peer.port),
            server: peer::serve::Settings {
                limits: self.config.limits(),
                max_uploads: self.config.peer.max_uploads,
                upload: self.upload.clone(),
            },
            session_ttl: self.config.session_ttl(),
            living,
        };
        let (count, bytes, root) = (share.len(), share.bytes(), share.root().to_owned());
        let sharing = Sharing::start(share, &index, &settings).await?;
        let index = sharing.state().index;
        say!(
            "registered as peer {} with the index at {index}: {}, {} from {}; serving on {}",
            sharing.state().peer_id,
            render::count(count as u64, "file"),
            render::size(bytes),
            root.display(),
            sharing.addr
        );
        say!(
            "read and hashed {} ({}); {} known from the hash cache, unread",
            render::count(stats.hashed_files as u64, "file"),
            render::size(stats.hashed_bytes),
            render::count(stats.cached_files as u64, "file")
        );
        self.services.set_sharing(sharing);
        Ok(())
    }

    /// How shares follow their folders, from the config; the hash cache is loaded once.
    fn living(&mut self) -> peer::Living {
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
            rescan: std::time::Duration::from_secs_f64(self.config.peer.rescan),
            settle: std::time::Duration::from_secs_f64(self.config.peer.settle),
        }
    }

    async fn refresh(&mut self, target: Refresh) -> Result<()> {
        let Some(sharing) = self.services.take_sharing() else {
            return Err(Error::msg("not sharing anything; `register` first"));
        };
        let done = match &target {
            Refresh::All => sharing.refresh().await,
            Refresh::Share(dir) => sharing.share_dir(dir).await,
            Refresh::Unshare(what) => sharing.unshare(what).await,
        };
        let summary = self.services.set_sharing_and_summarize(sharing);
        let done = done?;
        let upserted = done.changes.upsert.len() as u64;
        say!(
            "{}: {} new or changed, {} withdrawn; hashed {} ({}){}",
            summary,
            render::count(upserted, "file"),
            render::count(done.changes.removed.len() as u64, "file"),
            render::count(done.stats.hashed_files as u64, "file"),
            render::size(done.stats.hashed_bytes),
            if done.unsettled > 0 {
                format!(
                    "; {} still being written, announced once settled",
                    render::count(done.unsettled as u64, "file")
                )
            } else {
                String::new()
            }
        );
        Ok(())
    }

    async fn unregister(&mut self) -> Result<()> {
        match self.services.take_sharing() {
            Some(sharing) => {
                let id = sharing.state().peer_id;
                sharing.stop().await;
                say!("peer {id} unregistered; its files left the index");
                Ok(())
            }
            None => Err(Error::msg("not sharing anything; `register` first")),
        }
    }

    async fn search(&mut self, mut args: commands::SearchArgs) -> Result<()> {
        let max = self.config.index.max_results;
        if args.search.limit.is_none() {
            args.search.limit = Some(self.config.shell.results);
        }
        let (hits, truncated) = self.client().await?.find(&args.search).await?;
        *self.last_names.lock().unwrap_or_else(|e| e.into_inner()) =
            hits.iter().map(|h| h.file.name.clone()).collect();
        let what = match (&args.search.pattern, &args.search.sha256) {
            (p, Some(h)) if p.is_empty() => format!("sha256:{h}"),
            (p, _) => format!("{p:?}"),
        };
        if hits.is_empty() {
            say!("no file matches {what}");
            return Ok(());
        }
        let peers: std::collections::BTreeSet<u64> = hits.iter().map(|h| h.peer_id).collect();
        if args.collapse {
            say!("{}", render::collapsed(&hits));
        } else {
            let rtts = if args.rtt {
                self.ping_all(&hits).await
            } else {
                Default::default()
            };
            say!("{}", render::hits(&hits, args.rtt.then_some(&rtts)));
        }
        say!(
            "{} on {}",
            render::count(hits.len() as u64, "file"),
            render::count(peers.len() as u64, "peer")
        );
        if truncated {
            let shown = hits.len();
            say!(
                "(more match: showing the first {shown}; narrow the search, or ask for more with -n (up to {max}))"
            );
        }
        Ok(())
    }

    async fn files(&mut self, peer: u64) -> Result<()> {
        let limit = Some(self.config.index.max_results as u32);
        let (hits, truncated) = self.client().await?.browse(peer, limit).await?;
        *self.last_names.lock().unwrap_or_else(|e| e.into_inner()) =
            hits.iter().map(|h| h.file.name.clone()).collect();
        if hits.is_empty() {
            say!("peer {peer} shares no files");
            return Ok(());
        }
        say!("{}", render::hits(&hits, None));
        let total: u64 = hits.iter().map(|h| h.file.size).sum();
        say!(
            "peer {peer} shares {}{} ({})",
            if truncated { "more than " } else { "" },
            render::count(hits.len() as u64, "file"),
            render::size(total)
        );
        Ok(())
    }

    async fn get(
        &mut self,
        name: &str,
        peer: Option<u64>,
        background: bool,
        cancel: Cancel,
    ) -> Result<()> {
        let hits = self.client().await?.lookup(name).await?;
        let sources = download::sources(name, peer, hits)?;
        let status = Arc::new(Status::default());
        let file = sources[0].file.clone();
        let mut job = Job {
            file: file.clone(),
            sources,
            dir: self.config.peer.downloads.clone(),
            limits: self.config.limits(),
            cancel,
            bandwidth: self.download.clone(),
            status: status.clone(),
            progress: Arc::new(|_| {}),
        };
        if background {
            job.cancel = Cancel::default();
            let id = self.transfers.start(job);
            say!("download {id} of {name} runs in the background; `transfers` shows it");
            return Ok(());
        }
        let bar = self.progress_bar(file.size, &file.name);
        job.progress = {
            let bar = bar.clone();
            let shown = std::sync::atomic::AtomicUsize::new(usize::MAX);
            let name = file.name.clone();
            Arc::new(move |n: u64| {
                bar.inc(n);
                let peers = status.peers.load(std::sync::atomic::Ordering::Relaxed);
                if shown.swap(peers, std::sync::atomic::Ordering::Relaxed) != peers {
                    let s = if peers == 1 { "" } else { "s" };
                    bar.set_message(format!("{name} from {peers} peer{s}"));
                }
            })
        };
        let done = download::fetch(job).await?;
        drop(bar);
        if done.already_there {
            say!(
                "{} is already there with the same contents (sha256 ok); nothing to do",
                done.path.display()
            );
            return Ok(());
        }
        let mut extras = String::new();
        if done.resumed > 0 {
            extras.push_str(&format!(", resumed {}", render::size(done.resumed)));
        }
        if done.refetched > 0 {
            extras.push_str(&format!(
                ", {} failed their check and were fetched again",
                render::size(done.refetched)
            ));
        }
        let from = match done.peers.as_slice() {
            [] => "nothing new".to_owned(),
            [one] => format!("from peer {one}"),
            many => format!(
                "from peers {}",
                many.iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        say!(
            "saved {} ({}, sha256 ok, {} {from}{extras})",
            done.path.display(),
            render::size(done.size),
            render::rate(done.size - done.resumed, done.elapsed),
        );
        Ok(())
    }

    fn limit(&mut self, direction: Option<Direction>, rate: Option<u64>) {
        match (direction, rate) {
            (Some(Direction::Up), Some(rate)) => self.upload.set(rate),
            (Some(Direction::Down), Some(rate)) => self.download.set(rate),
            _ => {}
        }
        say!(
            "upload limit: {}; download limit: {}",
            show_rate(self.upload.rate()),
            show_rate(self.download.rate())
        );
    }

    async fn ping(&mut self, peer: u64) -> Result<()> {
        let peers = self.client().await?.peers().await?;
        let info = peers
            .iter()
            .find(|p| p.peer_id == peer)
            .ok_or_else(|| Error::msg(format!("peer {peer} is not registered (see `peers`)")))?;
        let rtt = ping(info.addr, self.config.limits()).await?;
        say!(
            "peer {peer} ({}): rtt {:.2} ms",
            info.addr,
            rtt.as_secs_f64() * 1e3
        );
        Ok(())
    }

    /// Round-trip times of the peers in `hits`, pinged at once.
    async fn ping_all(&self, hits: &[Hit]) -> std::collections::BTreeMap<u64, String> {
        let mut seen = std::collections::BTreeMap::new();
        for hit in hits {
            seen.entry(hit.peer_id).or_insert(hit.addr);
        }
        let limits = self.config.limits();
        let pings: Vec<_> = seen
            .into_iter()
            .map(|(id, addr)| (id, runtime::spawn(ping(addr, limits))))
            .collect();
        let mut rtts = std::collections::BTreeMap::new();
        for (id, ping) in pings {
            let text = match ping.await {
                Ok(rtt) => format!("{:.2} ms", rtt.as_secs_f64() * 1e3),
                Err(_) => "unreachable".into(),
            };
            rtts.insert(id, text);
        }
        rtts
    }

    async fn peers(&mut self) -> Result<()> {
        let peers = self.client().await?.peers().await?;
        if peers.is_empty() {
            say!("no peer is registered with the index");
        } else {
            say!("{}", render::peers(&peers));
        }
        Ok(())
    }

    async fn status(&mut self) -> Result<()> {
        match self.services.serving_summary().await {
            Some(summary) => say!("index server: {summary}"),
            None => say!("index server: not running here (`serve` starts one)"),
        }
        match self.client().await {
            Ok(client) => {
                let rtt = client.ping().await?;
                say!(
                    "index: {} (rtt {:.2} ms)",
                    client.addr(),
                    rtt.as_secs_f64() * 1e3
                );
            }
            Err(e) => say!("index: unreachable ({e})"),
        }
        match self.services.sharing_summary() {
            Some(summary) => say!("sharing: {summary}"),
            None => say!("sharing: nothing (`register` shares a folder)"),
        }
        say!("downloads: {}", self.config.peer.downloads.display());
        Ok(())
    }

    fn progress_bar(&self, total: u64, what: &str) -> Bar {
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
async fn ping(addr: SocketAddr, limits: crate::protocol::Limits) -> Result<std::time::Duration> {
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

/// Parse a comma-separated list of index addresses.
pub fn parse_addrs(text: &str, default_port: u16) -> Result<Vec<SocketAddr>> {
    text.split([',', ' '])
        .filter(|part| !part.trim().is_empty())
        .map(|part| parse_addr(part.trim(), default_port))
        .collect()
}

/// The address to reach a server bound to `addr` from this machine.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}
