//! What an index server counts for whoever runs it, served as Prometheus/OpenMetrics text
//! on `/metrics` when `[index] metrics` names an address. Recording is a relaxed atomic
//! add on counters resolved when the server starts (the search histogram takes a short
//! lock); the peer and file gauges are read from the store at each scrape. The HTTP side
//! is [`crate::http`] on the executor, within the `[index] metrics_*` bounds; a scrape
//! reads the store on a blocking thread, since a database may be slow to answer.
//! The relay's pipes add the bytes they carry (`relayed_bytes`).

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use smol::Async;
use tracing::info;

use crate::error::{Error, Result};
use crate::gate::Full;
use crate::http::{self, Method, Refused, StatusCode};
use crate::protocol::IndexRequest;
use crate::runtime::{self, ShutdownTrigger};

/// The kinds of index request, in the order of `Kind::ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `ping`
    Ping,
    /// `register`
    Register,
    /// `add_files`
    AddFiles,
    /// `remove_files`
    RemoveFiles,
    /// `unregister`
    Unregister,
    /// `search`
    Search,
    /// `browse`
    Browse,
    /// `lookup`
    Lookup,
    /// `peers`
    Peers,
    /// `connect` (a reverse connection asked for)
    Connect,
    /// `relay`
    Relay,
    /// `punch` (hole punching asked for)
    Punch,
    /// A second `hello`, or anything else out of turn.
    Other,
}

impl Kind {
    const ALL: [Kind; 13] = [
        Kind::Ping,
        Kind::Register,
        Kind::AddFiles,
        Kind::RemoveFiles,
        Kind::Unregister,
        Kind::Search,
        Kind::Browse,
        Kind::Lookup,
        Kind::Peers,
        Kind::Connect,
        Kind::Relay,
        Kind::Punch,
        Kind::Other,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Ping => "ping",
            Kind::Register => "register",
            Kind::AddFiles => "add_files",
            Kind::RemoveFiles => "remove_files",
            Kind::Unregister => "unregister",
            Kind::Search => "search",
            Kind::Browse => "browse",
            Kind::Lookup => "lookup",
            Kind::Peers => "peers",
            Kind::Connect => "connect",
            Kind::Relay => "relay",
            Kind::Punch => "punch",
            Kind::Other => "other",
        }
    }
}

/// The kind of `request`.
pub fn kind(request: &IndexRequest) -> Kind {
    match request {
        IndexRequest::Ping {} => Kind::Ping,
        IndexRequest::Register { .. } => Kind::Register,
        IndexRequest::AddFiles { .. } => Kind::AddFiles,
        IndexRequest::RemoveFiles { .. } => Kind::RemoveFiles,
        IndexRequest::Unregister {} => Kind::Unregister,
        IndexRequest::Search(_) => Kind::Search,
        IndexRequest::Browse { .. } => Kind::Browse,
        IndexRequest::Lookup { .. } => Kind::Lookup,
        IndexRequest::Peers {} => Kind::Peers,
        IndexRequest::Connect { .. } => Kind::Connect,
        IndexRequest::Relay { .. } => Kind::Relay,
        IndexRequest::Punch { .. } => Kind::Punch,
        IndexRequest::Hello { .. } => Kind::Other,
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// Why the index refused to push to a sharer or to open a relay pipe: the `reason` of
/// `napster_index_pushes_refused_total`, one per bound (`docs/NAT.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushRefusal {
    /// The asking connection's own budget (`MAX_CONNECTS` per `CONNECT_WINDOW`).
    PerConnection,
    /// The asking key's pushes to this sharer (`pushes_per_key`).
    PerKey,
    /// The asking address's pushes to this sharer (`pushes_per_address`).
    PerAddress,
    /// The sharer's queue of pushes is full.
    SharerQueue,
    /// Every relay pipe is taken (`relay_pipes`).
    RelayPipes,
    /// The asking key holds its relay pipes (`relay_pipes_per_key`).
    RelayPipesPerKey,
    /// The asking address holds its relay pipes (`relay_pipes_per_address`).
    RelayPipesPerAddress,
    /// The asking key used its relay quota (`relay_quota`).
    RelayQuota,
}

impl PushRefusal {
    const ALL: [PushRefusal; 8] = [
        PushRefusal::PerConnection,
        PushRefusal::PerKey,
        PushRefusal::PerAddress,
        PushRefusal::SharerQueue,
        PushRefusal::RelayPipes,
        PushRefusal::RelayPipesPerKey,
        PushRefusal::RelayPipesPerAddress,
        PushRefusal::RelayQuota,
    ];

    /// Register `pushes_refused` in `registry`: its counters, in the order of `ALL`.
    fn register(registry: &mut Registry) -> Vec<Counter> {
        let family = Family::<RefusedLabels, Counter>::default();
        let counters = PushRefusal::ALL
            .iter()
            .map(|r| family.get_or_create_owned(&RefusedLabels { reason: r.name() }))
            .collect();
        registry.register(
            "pushes_refused",
            "Reverse connections, hole punches and relay pipes refused, by the bound that \
             refused them",
            family,
        );
        counters
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            PushRefusal::PerConnection => "per_connection",
            PushRefusal::PerKey => "pushes_per_key",
            PushRefusal::PerAddress => "pushes_per_address",
            PushRefusal::SharerQueue => "sharer_queue",
            PushRefusal::RelayPipes => "relay_pipes",
            PushRefusal::RelayPipesPerKey => "relay_pipes_per_key",
            PushRefusal::RelayPipesPerAddress => "relay_pipes_per_address",
            PushRefusal::RelayQuota => "relay_quota",
        }
    }
}

/// The search latency buckets: 50 µs doubling to about 1.6 s.
const SEARCH_BUCKETS: (f64, f64, u16) = (50e-6, 2.0, 16);

/// What a scrape reads from the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Peers registered.
    pub peers: u64,
    /// Files registered.
    pub files: u64,
    /// The database pool, on PostgreSQL: (most connections, open, idle).
    pub pool: Option<(u32, u32, u32)>,
}

/// Reads [`Counts`] at each scrape (`None` when the store does not answer).
pub type Census = Box<dyn Fn() -> Option<Counts> + Send + Sync>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

/// The index server's numbers.
pub struct Metrics {
    registry: Registry,
    /// `[kind][ok, error]`, resolved once so that recording is one atomic add.
    requests: Vec<[Counter; 2]>,
    search_seconds: Histogram,
    /// In the order of `PushRefusal::ALL`.
    pushes_refused: Vec<Counter>,
    /// By [`Full`]: server, address, handshakes.
    refused: [Counter; 3],
    /// By [`Refused`]: connections, address, head too large, head timeout.
    scrapes_refused: [Counter; 4],
    expired: Counter,
    store_errors: Counter,
    relayed: Counter,
    peers: Gauge,
    files: Gauge,
    pool: Family<PoolLabels, Gauge>,
    census: parking_lot::Mutex<Option<Census>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("napster_index");
        let family = Family::<RequestLabels, Counter>::default();
        let requests = Kind::ALL
            .iter()
            .map(|kind| {
                ["ok", "error"].map(|outcome| {
                    family.get_or_create_owned(&RequestLabels {
                        kind: kind.name(),
                        outcome,
                    })
                })
            })
            .collect();
        registry.register(
            "requests",
            "Requests answered, by kind and outcome (error: the index refused it)",
            family,
        );
        let (start, factor, length) = SEARCH_BUCKETS;
        let search_seconds = Histogram::new(exponential_buckets(start, factor, length));
        registry.register(
            "search_seconds",
            "Time to answer a search, in seconds",
            search_seconds.clone(),
        );
        let (refused, scrapes_refused) = register_refusals(&mut registry);
        let pushes_refused = PushRefusal::register(&mut registry);
        let expired = Counter::default();
        registry.register(
            "sessions_expired",
            "Peers withdrawn because their session went silent",
            expired.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Requests that failed because the store (the database) did not answer",
            store_errors.clone(),
        );
        let relayed = Counter::default();
        registry.register(
            "relayed_bytes",
            "Bytes the relay passed between peers behind NATs (both directions; each pipe is \
             attributed to its two keys in the log)",
            relayed.clone(),
        );
        let peers = Gauge::default();
        registry.register("peers", "Peers registered", peers.clone());
        let files = Gauge::default();
        registry.register("files", "Files registered", files.clone());
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register(
            "db_pool_connections",
            "PostgreSQL pool connections: busy (a request waits when busy reaches max), idle, max",
            pool.clone(),
        );
        Metrics {
            registry,
            requests,
            search_seconds,
            pushes_refused,
            refused,
            scrapes_refused,
            expired,
            store_errors,
            relayed,
            peers,
            files,
            pool,
            census: parking_lot::Mutex::new(None),
        }
    }

    /// Count one answered request.
    pub fn request(&self, kind: Kind, ok: bool) {
        let index = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.requests[index][usize::from(!ok)].inc();
    }

    /// Note how long a search took.
    pub fn search_took(&self, took: Duration) {
        self.search_seconds.observe(took.as_secs_f64());
    }

    /// Count a connection refused at a bound.
    pub fn refused(&self, full: Full) {
        let index = match full {
            Full::Connections => 0,
            Full::AddressConnections => 1,
            Full::Handshakes => 2,
        };
        self.refused[index].inc();
    }

    /// Count a metrics connection refused or cut at a bound.
    pub fn refused_scrape(&self, why: Refused) {
        let index = match why {
            Refused::Connections => 0,
            Refused::AddressConnections => 1,
            Refused::HeadTooLarge => 2,
            Refused::HeadTimeout => 3,
        };
        self.scrapes_refused[index].inc();
    }

    /// Count a push or relay pipe refused at a bound.
    pub fn push_refused(&self, why: PushRefusal) {
        let index = PushRefusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.pushes_refused[index].inc();
    }

    /// Count peers withdrawn for silence.
    pub fn expired(&self, n: u64) {
        self.expired.inc_by(n);
    }

    /// Count a request the store failed.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Count bytes the relay passed.
    pub fn relayed(&self, bytes: u64) {
        self.relayed.inc_by(bytes);
    }

    /// Read the peer and file gauges from `census` at each scrape.
    pub fn set_census(&self, census: Census) {
        *self.census.lock() = Some(census);
    }

    /// The OpenMetrics text of every metric now.
    pub fn encode(&self) -> String {
        if let Some(census) = &*self.census.lock()
            && let Some(counts) = census()
        {
            self.peers
                .set(i64::try_from(counts.peers).unwrap_or(i64::MAX));
            self.files
                .set(i64::try_from(counts.files).unwrap_or(i64::MAX));
            if let Some((max, open, idle)) = counts.pool {
                let set = |state, n: u32| {
                    self.pool
                        .get_or_create(&PoolLabels { state })
                        .set(i64::from(n));
                };
                set("max", max);
                set("idle", idle);
                set("busy", open.saturating_sub(idle));
            }
        }
        let mut text = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        in_label_order(&text)
    }
}

/// `text` with each counter's and gauge's samples in the order of their labels: a
/// family keeps its label sets in a hash map, so without this two scrapes could list
/// them in different orders. A histogram's buckets keep their order (rising `le`).
fn in_label_order(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run: Vec<&str> = Vec::new();
    let mut sortable = false;
    let flush = |run: &mut Vec<&str>, sortable: bool, out: &mut String| {
        if sortable {
            run.sort_unstable();
        }
        for line in run.drain(..) {
            out.push_str(line);
            out.push('\n');
        }
    };
    for line in text.lines() {
        if line.starts_with('#') {
            flush(&mut run, sortable, &mut out);
            if let Some(kind) = line.strip_prefix("# TYPE ") {
                sortable = kind.ends_with(" counter") || kind.ends_with(" gauge");
            }
            out.push_str(line);
            out.push('\n');
        } else {
            run.push(line);
        }
    }
    flush(&mut run, sortable, &mut out);
    out
}

/// Register the counters of connections refused, by reason: the index's (by [`Full`])
/// and the metrics endpoint's (by [`Refused`]).
fn register_refusals(registry: &mut Registry) -> ([Counter; 3], [Counter; 4]) {
    let family = Family::<RefusedLabels, Counter>::default();
    let refused = [
        Full::Connections,
        Full::AddressConnections,
        Full::Handshakes,
    ]
    .map(|full| {
        family.get_or_create_owned(&RefusedLabels {
            reason: full.reason(),
        })
    });
    registry.register(
        "connections_refused",
        "Connections closed before TLS at a bound: busy (max_connections), address \
             (max_connections_per_address), handshakes (no handshake slot in time)",
        family,
    );
    let family = Family::<RefusedLabels, Counter>::default();
    let scrapes_refused = [
        Refused::Connections,
        Refused::AddressConnections,
        Refused::HeadTooLarge,
        Refused::HeadTimeout,
    ]
    .map(|why| {
        family.get_or_create_owned(&RefusedLabels {
            reason: why.reason(),
        })
    });
    registry.register(
        "metrics_refused",
        "Metrics endpoint connections closed at a bound: connections, address, \
             head_too_large, head_timeout",
        family,
    );
    (refused, scrapes_refused)
}

/// The HTTP endpoint serving [`Metrics`]; stops when dropped.
pub struct Endpoint {
    /// Where it listens.
    pub addr: SocketAddr,
    _stop: ShutdownTrigger,
}

impl Endpoint {
    /// Serve `metrics` on `addr` (`host:port`; port 0 takes any free port) within
    /// `bounds`, counting what they refuse in `metrics`.
    pub fn start(addr: &str, bounds: http::Bounds, metrics: Arc<Metrics>) -> Result<Endpoint> {
        let cannot = |e: &dyn std::fmt::Display| {
            Error::Config(format!(
                "cannot serve metrics on {addr:?} ([index] metrics): {e}"
            ))
        };
        let at: SocketAddr = addr.parse().map_err(|e| cannot(&e))?;
        let listener = Async::<TcpListener>::bind(at).map_err(|e| cannot(&e))?;
        let bound = listener.get_ref().local_addr().map_err(|e| cannot(&e))?;
        let (stop, shutdown) = runtime::shutdown_pair();
        let counts = metrics.clone();
        let on_refused: http::OnRefused = Arc::new(move |why| counts.refused_scrape(why));
        let serve = http::serve(
            listener,
            bounds,
            shutdown,
            Some(on_refused),
            move |request| respond(request, metrics.clone()),
        );
        runtime::spawn(serve).detach();
        info!("metrics on http://{bound}/metrics");
        Ok(Endpoint {
            addr: bound,
            _stop: stop,
        })
    }

    /// The URL to scrape.
    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

/// The OpenMetrics content type.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn respond(request: http::Request, metrics: Arc<Metrics>) -> http::Response {
    if request.uri().path() == "/metrics" && request.method() == Method::GET {
        // The census may wait on the database: not on an executor thread.
        let text = smol::unblock(move || metrics.encode()).await;
        http::answer(StatusCode::OK, CONTENT_TYPE, text)
    } else {
        http::answer(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "napster serves its metrics on GET /metrics\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of one family come in the order of their labels, whatever order the map
    /// keeps them in; histogram buckets keep theirs (rising `le`, `+Inf` last).
    #[test]
    fn labelled_samples_are_listed_in_label_order() {
        let metrics = Metrics::new();
        for why in [
            PushRefusal::SharerQueue,
            PushRefusal::PerKey,
            PushRefusal::PerAddress,
        ] {
            metrics.push_refused(why);
        }
        let text = metrics.encode();
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("napster_index_pushes_refused_total{"))
            .collect();
        assert!(samples.len() >= 3, "{text}");
        let mut sorted = samples.clone();
        sorted.sort_unstable();
        assert_eq!(samples, sorted);
        let buckets: Vec<&str> = text.lines().filter(|l| l.contains("_bucket{")).collect();
        assert!(
            buckets.last().is_some_and(|b| b.contains("+Inf")),
            "{buckets:?}"
        );
    }
}
