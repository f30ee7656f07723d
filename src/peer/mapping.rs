//! Port mapping: while a peer shares, it asks its home router through UPnP-IGD
//! (`igd-next`) to forward a public TCP port to its file server, so that peers outside
//! can download from it directly; it renews the mapping before its lease ends and
//! removes it when sharing stops. All of it runs on a thread of its own with bounded
//! timeouts: a router that never answers delays nothing, the share is registered at once
//! and registered again with the public port when the router grants one (the index still
//! takes the host from the connection).

use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use igd_next::{Gateway, PortMappingProtocol, SearchOptions};
use parking_lot::Mutex;
use tracing::{debug, info, warn};

/// Longest wait for a router to answer the search (SSDP); past it, "no router answered".
pub const SEARCH_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause before asking again after no router answered or the router refused.
pub const RETRY: Duration = Duration::from_secs(300);

/// Longest `stop` waits for the router to remove the mapping (the lease ends it anyway).
pub const STOP_WAIT: Duration = Duration::from_secs(2);

/// What the mapping description on the router says.
const DESCRIPTION: &str = "napster file server";

/// Where the port mapping stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingState {
    /// `[peer] port_mapping = false`, or not sharing.
    Off,
    /// Asking the router.
    Asking,
    /// The router forwards `external` to `internal`.
    Mapped {
        /// The router's public address and the port it forwards.
        external: SocketAddr,
        /// This peer's file server.
        internal: SocketAddr,
    },
    /// No mapping: why (no router answered, the router refused, …).
    Failed(String),
}

impl fmt::Display for MappingState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingState::Off => write!(f, "off ([peer] port_mapping = false)"),
            MappingState::Asking => write!(f, "asking the router (UPnP)…"),
            MappingState::Mapped { external, internal } => {
                write!(f, "{external} → {internal} via UPnP")?;
                if !is_public(external.ip()) {
                    write!(
                        f,
                        " (the router's own address is private: another NAT is in front of it)"
                    )?;
                }
                Ok(())
            }
            MappingState::Failed(why) => write!(f, "none ({why})"),
        }
    }
}

/// Whether `ip` can be a public internet address: neither private, shared (carrier-grade
/// NAT), loopback nor link-local. Documentation ranges count as public, for the tests.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            !(v4.is_private() || shared || v4.is_loopback() || v4.is_link_local())
        }
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified()),
    }
}

/// Called with the public port whenever it changes (`None`: the mapping is gone).
pub type OnChange = Box<dyn Fn(Option<u16>) + Send>;

/// A port mapping kept in the background; [`PortMapping::stop`] removes it.
pub struct PortMapping {
    state: Arc<Mutex<MappingState>>,
    stop: Mutex<Option<mpsc::Sender<()>>>,
    done: Mutex<Option<smol::channel::Receiver<()>>>,
}

impl PortMapping {
    /// No mapping: `[peer] port_mapping = false`.
    pub fn off() -> Self {
        PortMapping {
            state: Arc::new(Mutex::new(MappingState::Off)),
            stop: Mutex::new(None),
            done: Mutex::new(None),
        }
    }

    /// Ask the router to forward a public port to `internal` (the file server) for
    /// `lease` (`[peer] port_mapping_lease`), renew it when half the lease has passed,
    /// and tell `on_change` the public port each time it changes.
    pub fn start(internal: SocketAddr, lease: Duration, on_change: OnChange) -> Self {
        if let Some(why) = unmappable(internal.ip()) {
            return PortMapping {
                state: Arc::new(Mutex::new(MappingState::Failed(why))),
                stop: Mutex::new(None),
                done: Mutex::new(None),
            };
        }
        let state = Arc::new(Mutex::new(MappingState::Asking));
        let (stop, stopped) = mpsc::channel();
        let (finished, done) = smol::channel::bounded(1);
        let shared = state.clone();
        let spawned = std::thread::Builder::new()
            .name("port-mapping".into())
            .spawn(move || {
                keep(internal, lease, &shared, &stopped, &on_change);
                drop(finished);
            });
        if let Err(e) = spawned {
            *state.lock() = MappingState::Failed(format!("cannot start a thread: {e}"));
        }
        PortMapping {
            state,
            stop: Mutex::new(Some(stop)),
            done: Mutex::new(Some(done)),
        }
    }

    /// Where the mapping stands.
    pub fn state(&self) -> MappingState {
        self.state.lock().clone()
    }

    /// Remove the mapping, waiting at most [`STOP_WAIT`] for the router.
    pub async fn stop(&self) {
        drop(self.stop.lock().take());
        let done = self.done.lock().take();
        if let Some(done) = done {
            let removed = async {
                let _ = done.recv().await;
                true
            };
            let late = async {
                smol::Timer::after(STOP_WAIT).await;
                false
            };
            if !smol::future::FutureExt::or(removed, late).await {
                warn!("port mapping: the router did not confirm the removal; its lease ends it");
            }
        }
    }
}

/// The mapping thread: map, renew every half lease, remove when told to stop (or when
/// the [`PortMapping`] is gone); after a failure, try again every [`RETRY`].
fn keep(
    internal: SocketAddr,
    lease: Duration,
    state: &Mutex<MappingState>,
    stopped: &mpsc::Receiver<()>,
    on_change: &OnChange,
) {
    let set = |new: MappingState| *state.lock() = new;
    loop {
        match map(internal, lease) {
            Ok((gateway, mapping)) => {
                let mapped = MappingState::Mapped {
                    external: mapping.external,
                    internal: mapping.internal,
                };
                info!("port mapping: {mapped}");
                let port = mapping.external.port();
                set(mapped);
                on_change(Some(port));
                match hold(&gateway, &mapping, stopped) {
                    Ok(()) => {
                        match gateway.remove_port(PortMappingProtocol::TCP, port) {
                            Ok(()) => info!("port mapping: removed {}", mapping.external),
                            Err(e) => warn!("port mapping: removing it: {e}"),
                        }
                        set(MappingState::Off);
                        return;
                    }
                    Err(why) => {
                        warn!("port mapping: {why}");
                        set(MappingState::Failed(why));
                        on_change(None);
                    }
                }
            }
            Err(why) => {
                info!("port mapping: {why}");
                set(MappingState::Failed(why));
            }
        }
        if !matches!(stopped.recv_timeout(RETRY), Err(RecvTimeoutError::Timeout)) {
            set(MappingState::Off);
            return;
        }
        set(MappingState::Asking);
    }
}

/// Keep `mapping` renewed (every half lease; a permanent one never) until told to stop
/// or the [`PortMapping`] is gone (`Ok`), or until the router refuses to renew it (why).
fn hold(gateway: &Gateway, mapping: &Mapping, stopped: &mpsc::Receiver<()>) -> Result<(), String> {
    loop {
        let woke = match mapping.lease {
            0 => stopped.recv().map_err(|_| RecvTimeoutError::Disconnected),
            secs => stopped.recv_timeout(Duration::from_secs(secs.into()) / 2),
        };
        if !matches!(woke, Err(RecvTimeoutError::Timeout)) {
            return Ok(());
        }
        let external = mapping.external.port();
        gateway
            .add_port(
                PortMappingProtocol::TCP,
                external,
                mapping.internal,
                mapping.lease,
                DESCRIPTION,
            )
            .map_err(|e| format!("the router refused to renew it: {e}"))?;
        debug!(
            "port mapping: renewed {} for {} s",
            mapping.external, mapping.lease
        );
    }
}

/// Why a file server on `ip` is never mapped (nor a router searched for), if it is not:
/// loopback is reached from this machine only, and UPnP-IGD maps IPv4.
fn unmappable(ip: IpAddr) -> Option<String> {
    if ip.is_loopback() {
        Some(format!(
            "the file server listens on {ip}, reached from this machine only"
        ))
    } else if !ip.is_ipv4() {
        Some("UPnP port mapping is for IPv4 file servers".into())
    } else {
        None
    }
}

/// A mapping the router granted: public address and port, where they lead, and its
/// lease in seconds (0: permanent, where the router allows no other).
#[derive(Debug, Clone, Copy)]
struct Mapping {
    external: SocketAddr,
    internal: SocketAddr,
    lease: u32,
}

/// Find the router and ask it to forward a public port (the same as ours if it is free)
/// to `internal`; why not, as a sentence for the log and `status`.
fn map(internal: SocketAddr, lease: Duration) -> Result<(Gateway, Mapping), String> {
    let mut options = SearchOptions::default();
    if !internal.ip().is_unspecified() {
        options.bind_addr = SocketAddr::new(internal.ip(), 0);
    }
    options.timeout = Some(SEARCH_TIMEOUT);
    options.single_search_timeout = Some(SEARCH_TIMEOUT);
    let gateway = igd_next::search_gateway(options).map_err(|e| match e {
        igd_next::SearchError::NoResponseWithinTimeout => "no router answered".into(),
        igd_next::SearchError::IoError(ref io) if is_timeout(io) => "no router answered".into(),
        other => format!("no router answered usably ({other})"),
    })?;
    // A server on every address is reached through the address facing the router.
    let internal = if internal.ip().is_unspecified() {
        let toward = UdpSocket::bind(("0.0.0.0", 0))
            .and_then(|s| s.connect(gateway.addr).and_then(|()| s.local_addr()))
            .map_err(|e| format!("no address faces the router at {}: {e}", gateway.addr))?;
        SocketAddr::new(toward.ip(), internal.port())
    } else {
        internal
    };
    let ip = gateway.get_external_ip().map_err(|e| {
        format!(
            "the router at {} did not tell its address: {e}",
            gateway.addr
        )
    })?;
    let refused =
        |e: &dyn fmt::Display| format!("the router at {} refused a mapping: {e}", gateway.addr);
    let mut lease = u32::try_from(lease.as_secs()).unwrap_or(u32::MAX);
    let port = loop {
        match add(&gateway, internal, lease) {
            Ok(port) => break port,
            // Some routers grant permanent mappings only: then it is removed on exit.
            Err(AddError::OnlyPermanent) if lease != 0 => lease = 0,
            Err(AddError::OnlyPermanent) => return Err(refused(&"only permanent leases")),
            Err(AddError::Other(e)) => return Err(refused(&e)),
        }
    };
    let external = SocketAddr::new(ip, port);
    Ok((
        gateway,
        Mapping {
            external,
            internal,
            lease,
        },
    ))
}

/// Why the router refused a mapping.
enum AddError {
    /// It grants permanent mappings (lease 0) only.
    OnlyPermanent,
    /// Anything else, as text.
    Other(String),
}

/// Map the file server's own port if the router has it free, else any port it gives.
fn add(gateway: &Gateway, internal: SocketAddr, lease: u32) -> Result<u16, AddError> {
    let protocol = PortMappingProtocol::TCP;
    match gateway.add_port(protocol, internal.port(), internal, lease, DESCRIPTION) {
        Ok(()) => return Ok(internal.port()),
        Err(igd_next::AddPortError::OnlyPermanentLeasesSupported) => {
            return Err(AddError::OnlyPermanent);
        }
        Err(_) => {}
    }
    gateway
        .add_any_port(protocol, internal, lease, DESCRIPTION)
        .map_err(|e| match e {
            igd_next::AddAnyPortError::OnlyPermanentLeasesSupported => AddError::OnlyPermanent,
            other => AddError::Other(other.to_string()),
        })
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_as_status_lines() {
        let mapped = MappingState::Mapped {
            external: ([198, 51, 100, 2], 25000).into(),
            internal: ([10, 0, 1, 2], 25000).into(),
        };
        assert_eq!(
            mapped.to_string(),
            "198.51.100.2:25000 → 10.0.1.2:25000 via UPnP"
        );
        let behind = MappingState::Mapped {
            external: ([100, 64, 3, 4], 25000).into(),
            internal: ([10, 0, 1, 2], 25000).into(),
        };
        assert!(behind.to_string().contains("another NAT"), "{behind}");
        let failed = MappingState::Failed("no router answered".into());
        assert_eq!(failed.to_string(), "none (no router answered)");
    }

    #[test]
    fn loopback_and_ipv6_servers_are_never_mapped_so_no_search_leaves_the_machine() {
        let lease = Duration::from_secs(3600);
        let loopback = PortMapping::start(([127, 0, 0, 1], 1).into(), lease, Box::new(|_| {}));
        let MappingState::Failed(why) = loopback.state() else {
            panic!("{}", loopback.state());
        };
        assert!(why.contains("127.0.0.1"), "{why}");
        assert!(unmappable("::1".parse().unwrap()).is_some());
        assert!(unmappable("2001:db8::1".parse().unwrap()).is_some());
        assert!(unmappable([10, 0, 1, 2].into()).is_none());
        assert!(unmappable([0, 0, 0, 0].into()).is_none());
    }
}
