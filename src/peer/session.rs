//! A registered peer's session with the index: heartbeats while idle, and after the
//! index restarts or the network drops, reconnection with backoff and jitter and
//! re-registration under the same token (so the same Peer ID), without user action; and
//! registration again when the router's port mapping (`mapping.rs`) changes. The pushes
//! the index sends are carried out within the peer's own bounds (`pushes.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use smol::Task;
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use tracing::{info, warn};

use crate::client::{Changes, IndexClient, KnownIndexes, Push, Reach};
use crate::error::Result;
use crate::identity::Identity;
use crate::peer::pushes::{PushCounts, PushGate, PushLimits};
use crate::peer::serve::{Files, SharedFolder};
use crate::protocol::Limits;
use crate::runtime;

/// First pause before reconnecting; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a session needs to (re-)register.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The index servers, in order of preference; the session moves to the next when
    /// its server goes away.
    pub index: Vec<SocketAddr>,
    /// Port of this peer's file server.
    pub port: u16,
    /// This peer's secret, which keeps its Peer ID across reconnections.
    pub token: String,
    /// The key this peer proves (its file server proves the same).
    pub identity: Identity,
    /// The key each index server must prove (shared: a key pinned later applies to
    /// the next reconnection).
    pub pins: KnownIndexes,
    /// Wire limits.
    pub limits: Limits,
    /// Interval between heartbeats on an idle session.
    pub heartbeat: Duration,
    /// The nickname asked for (`[peer] name`).
    pub name: Option<String>,
    /// How many pushes of the index this peer carries out.
    pub pushes: PushLimits,
}

/// What the session looks like now.
#[derive(Debug, Clone)]
pub struct SessionState {
    /// Peer ID the index gave us last.
    pub peer_id: u64,
    /// Whether the session is up.
    pub connected: bool,
    /// The index server the session is (or was last) with.
    pub index: SocketAddr,
    /// The nickname the index bound to this peer's key, if any.
    pub nickname: Option<String>,
    /// How that index saw our file server when we last registered.
    pub reach: Option<Reach>,
}

/// A running session; [`Session::stop`] withdraws the files and ends it.
pub struct Session {
    state: Arc<Mutex<SessionState>>,
    stop: Sender<()>,
    updates: Sender<Changes>,
    mapped: Sender<Option<u16>>,
    task: Mutex<Option<Task<()>>>,
    gate: Arc<PushGate>,
}

/// Tells a session what changed in the share.
#[derive(Debug, Clone)]
pub struct Updater(Sender<Changes>);

impl Updater {
    /// Tell the index what changed (when the index is away, the session registers the
    /// whole share again when it is back).
    pub fn update(&self, changes: Changes) {
        let _ = self.0.try_send(changes);
    }
}

/// A new random token.
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Session {
    /// Keep `client`, already registered as `peer_id`, alive in the background.
    /// Reverse connections the index asks for are served by `files`.
    pub fn spawn(
        client: IndexClient,
        (peer_id, nickname): (u64, Option<String>),
        config: SessionConfig,
        folder: SharedFolder,
        files: Files,
    ) -> Self {
        let state = Arc::new(Mutex::new(SessionState {
            peer_id,
            connected: true,
            index: client.addr(),
            nickname,
            reach: client.reach(),
        }));
        let (stop, stopped) = smol::channel::bounded(1);
        let (updates, changes) = smol::channel::unbounded();
        let (mapped, mapped_ports) = smol::channel::unbounded();
        let channels = Channels {
            stopped,
            changes,
            mapped: mapped_ports,
        };
        let gate = Arc::new(PushGate::new(config.pushes));
        let share = Served {
            folder,
            files,
            gate: gate.clone(),
        };
        let task = runtime::spawn(keep_alive(client, config, share, state.clone(), channels));
        Session {
            state,
            stop,
            updates,
            mapped,
            task: Mutex::new(Some(task)),
            gate,
        }
    }

    /// The pushes of the index obeyed and ignored so far.
    pub fn pushes(&self) -> PushCounts {
        self.gate.counts()
    }

    /// The session's current state.
    pub fn state(&self) -> SessionState {
        self.state.lock().clone()
    }

    /// A handle that tells the session what changed in the share.
    pub fn updater(&self) -> Updater {
        Updater(self.updates.clone())
    }

    /// A callback that tells the session the public port the router now forwards to the
    /// file server (`None`: none): it registers again with it.
    pub fn mapped_port_sink(&self) -> Box<dyn Fn(Option<u16>) + Send> {
        let mapped = self.mapped.clone();
        Box::new(move |port| {
            let _ = mapped.try_send(port);
        })
    }

    /// Withdraw this peer's files from the index (if it is reachable) and end the session.
    /// Stopping twice (a signal during `unregister`) waits for nothing the second time.
    pub async fn stop(&self) {
        self.stop.close();
        let task = self.task.lock().take();
        if let Some(task) = task {
            task.await;
        }
    }
}

/// What the session registers and serves.
struct Served {
    folder: SharedFolder,
    files: Files,
    gate: Arc<PushGate>,
}

/// Serve the reverse connections, punched holes and relayed pipes the index asked
/// `client` for, as far as the gate lets them through.
fn reverse(client: &mut IndexClient, Served { files, gate, .. }: &Served) {
    let index = client.addr();
    let session_port = client.local_addr().ok();
    while let Some(push) = client.take_push() {
        let permit = match gate.admit() {
            Ok(permit) => permit,
            Err(why) => {
                let what = match &push {
                    Push::Connect { addr, .. } => format!("a reverse connection to {addr}"),
                    Push::Punch { addr, .. } => format!("a hole punched to {addr}"),
                    Push::Relay { .. } => format!("joining the relay at {index}"),
                };
                warn!("the index asked for {what}: ignored, {why}");
                continue;
            }
        };
        let files = files.clone();
        runtime::spawn(async move {
            match push {
                Push::Connect { addr, token } => {
                    info!("connecting out to {addr} for a download (reverse connection)");
                    if let Err(e) = files.serve_reverse(addr, &token, permit).await {
                        warn!("reverse connection to {addr}: {e}");
                    }
                }
                Push::Punch {
                    addr,
                    token,
                    downloader,
                } => {
                    let Some(local) = session_port else {
                        drop(permit);
                        warn!("cannot punch a hole to {addr}: our session's port is unknown");
                        return;
                    };
                    info!("punching a hole from {local} to {addr} for downloader {downloader}");
                    let punched = files.serve_punched((local, addr), &token, downloader, permit);
                    if let Err(e) = punched.await {
                        warn!("punched connection to {addr}: {e}");
                    }
                }
                Push::Relay { token, downloader } => {
                    info!("joining the relay at {index} for downloader {downloader}");
                    if let Err(e) = files.serve_relayed(index, &token, downloader, permit).await {
                        warn!("relayed connection through {index}: {e}");
                    }
                }
            }
        })
        .detach();
    }
}

/// What the session task is told.
struct Channels {
    stopped: Receiver<()>,
    changes: Receiver<Changes>,
    mapped: Receiver<Option<u16>>,
}

/// Why the session task woke up.
enum Wake {
    Stop,
    Beat,
    Closed,
    Changed(Changes),
    Mapped(Option<u16>),
}

/// What wakes the session while the index is there: a stop, a change of the share, a
/// new port mapping, the heartbeat, or the index speaking (to push, or to close).
async fn next_wake(c: &mut IndexClient, channels: &Channels, heartbeat: Duration) -> Wake {
    let stop = async {
        let _ = channels.stopped.recv().await;
        Wake::Stop
    };
    let beat = async {
        smol::Timer::after(heartbeat).await;
        Wake::Beat
    };
    // The index speaks first only to push (answered after a ping) or to close.
    let closed = async {
        c.readable().await;
        Wake::Closed
    };
    let changed = async {
        match channels.changes.recv().await {
            Ok(change) => Wake::Changed(change),
            Err(_) => smol::future::pending().await,
        }
    };
    let remapped = async {
        match channels.mapped.recv().await {
            Ok(port) => Wake::Mapped(port),
            Err(_) => smol::future::pending().await,
        }
    };
    stop.or(changed).or(remapped).or(beat.or(closed)).await
}

/// Register again on the same connection now that the router maps `port` (or no
/// longer does), so that the index checks again whether it can reach us.
async fn register_mapped(
    c: &mut IndexClient,
    config: &SessionConfig,
    folder: &SharedFolder,
    state: &Mutex<SessionState>,
    port: Option<u16>,
) -> Result<()> {
    let entries = folder.read().entries();
    let name = config.name.as_deref();
    let again = c
        .register_as(config.port, &config.token, &entries, name, port)
        .await;
    state.lock().reach = c.reach();
    match (&again, port) {
        (Ok(_), Some(port)) => info!("registered again: other peers reach us on port {port}"),
        (Ok(_), None) => info!("registered again without a port mapping"),
        (Err(_), _) => {}
    }
    again.map(drop)
}

/// Wait `pause`; true when the session was stopped meanwhile.
async fn stopped_during(stopped: &Receiver<()>, pause: Duration) -> bool {
    let stop = async {
        let _ = stopped.recv().await;
        true
    };
    let wait = async {
        smol::Timer::after(pause).await;
        false
    };
    stop.or(wait).await
}

async fn keep_alive(
    client: IndexClient,
    config: SessionConfig,
    share: Served,
    state: Arc<Mutex<SessionState>>,
    channels: Channels,
) {
    let folder = &share.folder;
    let mut mapped_port = None;
    let mut client = Some(client);
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(c) = client.as_mut() else {
            let jitter = 0.5 + rand::random::<f64>();
            if stopped_during(&channels.stopped, backoff.mul_f64(jitter)).await {
                return;
            }
            // Changes queued while away are in the folder already.
            while channels.changes.try_recv().is_ok() {}
            while let Ok(port) = channels.mapped.try_recv() {
                mapped_port = port;
            }
            let last = state.lock().index;
            match reregister(&config, last, folder, mapped_port).await {
                Ok((c, peer_id, nickname)) => {
                    info!(
                        "registered again with the index at {} as peer {peer_id}",
                        c.addr()
                    );
                    let mut s = state.lock();
                    (s.connected, s.peer_id, s.index) = (true, peer_id, c.addr());
                    (s.nickname, s.reach) = (nickname, c.reach());
                    drop(s);
                    client = Some(c);
                    backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    warn!("no index server takes us back yet: {e}");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        };
        let outcome = match next_wake(c, &channels, config.heartbeat).await {
            Wake::Stop => {
                if let Err(e) = c.unregister().await {
                    warn!("withdrawing our files from the index: {e}");
                }
                return;
            }
            Wake::Changed(change) => c.apply(&change).await.map(drop),
            Wake::Mapped(port) => {
                mapped_port = port;
                register_mapped(c, &config, folder, &state, port).await
            }
            Wake::Beat | Wake::Closed => c.ping().await.map(drop),
        };
        reverse(c, &share);
        if let Err(e) = outcome {
            let index = state.lock().index;
            warn!("lost the index at {index}: {e}; reconnecting");
            state.lock().connected = false;
            client = None;
        }
    }
}

/// Connect to the first of `order` that answers and proves the key `pins` holds for it
/// (the first connection to an index pins its key, as every connection does), saying
/// in the log when a key was pinned.
pub(super) async fn connect_index(
    order: &[SocketAddr],
    identity: &crate::identity::Identity,
    pins: &KnownIndexes,
    limits: crate::protocol::Limits,
) -> Result<IndexClient> {
    let (client, recorded) = pins.connect(order, identity, limits).await?;
    if let Some(r) = recorded {
        info!("{r}");
    }
    Ok(client)
}

/// Register again: with the server we were with, else the others in order.
async fn reregister(
    config: &SessionConfig,
    last: SocketAddr,
    folder: &SharedFolder,
    mapped_port: Option<u16>,
) -> Result<(IndexClient, u64, Option<String>)> {
    let mut order = vec![last];
    order.extend(config.index.iter().copied().filter(|&a| a != last));
    let mut client = connect_index(&order, &config.identity, &config.pins, config.limits).await?;
    let files = folder.read().entries();
    let name = config.name.as_deref();
    let (peer_id, nickname) = client
        .register_as(config.port, &config.token, &files, name, mapped_port)
        .await?;
    warn_if_refused(name, nickname.as_deref());
    Ok((client, peer_id, nickname))
}

/// Say so when the index gave the nickname asked for to another key.
pub fn warn_if_refused(asked: Option<&str>, granted: Option<&str>) {
    if let (Some(asked), None) = (asked, granted) {
        warn!(
            "the nickname {asked} is taken on this index by another key; sharing without \
             one (set another `[peer] name`, or use your Peer ID or fingerprint)"
        );
    }
}
