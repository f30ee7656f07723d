//! A small internet in Linux network namespaces, for tests of peers behind NAT.
//!
//! An [`Internet`] is a "wan" namespace holding one bridge on 198.51.100.0/24 (a
//! documentation range): public hosts ([`Internet::public_host`], 198.51.100.10, .11, …)
//! hang off it, and so do homes ([`Internet::home`]): a router namespace with its wan side
//! at 198.51.100.101, .102, … and its lan side at 10.0.N.1/24, which masquerades
//! everything leaving its wan side (iptables `MASQUERADE`, or `--random-fully` for a
//! symmetric NAT), forwards nothing from the wan that the lan did not start, silently
//! drops connections the wan starts to the router itself (as home routers do), and has no
//! port forwarding. Hosts behind it ([`Internet::home_host`]) are 10.0.N.2, .3, … with the
//! router as their default route. Public hosts have no route into any home.
//!
//! Every namespace is named after this process's ID and a counter, so tests in parallel
//! threads and processes never meet; interfaces are made directly inside their namespaces,
//! so their short names (`eth0`, `wan0`, `br0`, …) never clash either. Dropping the
//! [`Internet`] deletes exactly the namespaces it made (their interfaces go with them);
//! drop the processes running inside first (declare the `Internet` before them).
//!
//! Programs run inside a namespace with `ip netns exec`: [`crate::common::process`]'s
//! `Napster::start_in`/`run_in` for napster itself, [`Internet::exec`] for anything else.
//!
//! A home router can also run a real UPnP-IGD daemon, miniupnpd ([`upnp`]).
//!
//! This needs root, iproute2 and iptables (`.ci/run` installs iptables where it is
//! missing). Where any of that is lacking, [`Internet::new`] says why, and tests print a
//! "skipped: …" line and return (see [`internet_or_skip`]). The routers' rules are
//! written with [`IPTABLES`] (the legacy backend), the one miniupnpd's libiptc writes
//! to: in one backend, its port mappings come before the routers' `DROP`.

#![allow(dead_code)]

pub mod upnp;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The iptables the routers are set up with (see the module's documentation).
pub const IPTABLES: &str = "iptables-legacy";

/// The wan's network: a documentation range, so no real host is ever addressed.
pub const WAN_PREFIX: [u8; 3] = [198, 51, 100];

/// Longest a TCP connection attempt of [`Internet::tcp_connects`] may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most homes, and most public hosts, in one internet (their addresses are numbered).
const MOST: u8 = 80;

/// Namespaces made by this process so far: the counter that makes names unique.
static MADE: AtomicUsize = AtomicUsize::new(0);

/// How a home router translates addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// `MASQUERADE`: a connection keeps its source port where it can (endpoint-independent
    /// mapping), so hole punching can work.
    Cone,
    /// `MASQUERADE --random-fully`: every connection gets a random source port, so the
    /// port a peer saw is no use to anyone else.
    Symmetric,
}

/// A host: the namespace it is, and its address on its network.
#[derive(Debug, Clone)]
pub struct Host {
    /// The network namespace's name (for `ip netns exec`).
    pub ns: String,
    /// Its address: on the wan for public hosts and routers, in the home for home hosts.
    pub ip: Ipv4Addr,
}

impl Host {
    /// `ip:port` on this host.
    pub fn addr(&self, port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(self.ip, port)
    }
}

/// A home: a NAT router and the hosts behind it.
#[derive(Debug, Clone)]
pub struct Home {
    /// The router, with its wan address: what the internet sees of every host inside.
    pub router: Host,
    /// The router's address inside the home (the hosts' gateway), 10.0.N.1.
    pub gateway: Ipv4Addr,
    /// Name of the router's wan interface (inside its namespace).
    pub wan_if: &'static str,
    /// Name of the router's lan interface, a bridge (inside its namespace).
    pub lan_if: &'static str,
    /// Which home this is: N in 10.0.N.0/24.
    number: u8,
}

/// A small internet of namespaces; dropping it deletes them all.
pub struct Internet {
    /// Prefix of every namespace name made here.
    prefix: String,
    /// The wan namespace, holding the bridge `br0`.
    wan: String,
    /// Every namespace made, in order; deleted in reverse.
    made: Vec<String>,
    /// Public hosts made so far.
    publics: u8,
    /// Hosts made so far in each home (index N - 1).
    home_hosts: Vec<u8>,
}

/// An internet, or `None` after printing why tests cannot build one here ("skipped: …"
/// on stderr, shown even when the test passes).
pub fn internet_or_skip(test: &str) -> Option<Internet> {
    match Internet::new() {
        Ok(internet) => Some(internet),
        Err(why) => {
            // Straight to stderr: the test harness captures println!, and a skip must show.
            let _ = writeln!(std::io::stderr(), "skipped: {test}: {why}");
            None
        }
    }
}

/// Whether this process runs as root (from /proc, so no unsafe call is needed).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .and_then(|line| line.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether `program` is found on the PATH (or in /usr/sbin, /sbin, which root's PATH has).
pub fn have_program(program: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin"])
        .any(|dir| std::path::Path::new(dir).join(program).is_file())
}

/// Run `program args`; its output, or what went wrong as text.
fn output(program: &str, args: &[&str]) -> Result<Output, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program} could not run: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Run `program args`, panicking with its stderr if it fails (once namespaces are known to
/// work, a failure here is a broken test set-up).
fn run(program: &str, args: &[&str]) -> Output {
    output(program, args).unwrap_or_else(|e| panic!("{e}"))
}

impl Internet {
    /// A wan with nothing on it yet; why not, when this machine cannot make one.
    pub fn new() -> Result<Internet, String> {
        if !is_root() {
            return Err("network namespaces need root".into());
        }
        for program in ["ip", IPTABLES] {
            if !have_program(program) {
                return Err(format!(
                    "`{program}` is not installed (.ci/run installs it: apt-get install iproute2 iptables)"
                ));
            }
        }
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("nz{}x{n}", std::process::id());
        let mut internet = Internet {
            wan: format!("{prefix}-wan"),
            prefix,
            made: Vec::new(),
            publics: 0,
            home_hosts: Vec::new(),
        };
        let wan = internet.wan.clone();
        internet
            .add_namespace(&wan)
            .map_err(|e| format!("cannot make a network namespace: {e}"))?;
        internet.ip(&wan, &["link", "add", "br0", "type", "bridge"]);
        internet.ip(&wan, &["link", "set", "br0", "up"]);
        Ok(internet)
    }

    /// The wan namespace (the bridge's; nothing runs there).
    pub fn wan_ns(&self) -> &str {
        &self.wan
    }

    /// A new public host on the wan: 198.51.100.10, .11, …
    pub fn public_host(&mut self) -> Host {
        assert!(self.publics < MOST, "too many public hosts");
        self.publics += 1;
        let ip = wan_ip(9 + self.publics);
        let ns = self.namespace(&format!("p{}", self.publics));
        self.plug_into_wan(&ns, &format!("p{}", self.publics), "eth0", ip);
        Host { ns, ip }
    }

    /// A new home behind a NAT router of kind `nat`, with no host in it yet.
    pub fn home(&mut self, nat: Nat) -> Home {
        assert!((self.home_hosts.len() as u8) < MOST, "too many homes");
        self.home_hosts.push(0);
        let number = self.home_hosts.len() as u8;
        let ip = wan_ip(100 + number);
        let ns = self.namespace(&format!("r{number}"));
        self.plug_into_wan(&ns, &format!("r{number}"), "wan0", ip);
        self.ip(&ns, &["route", "add", "default", "dev", "wan0"]);
        let gateway = Ipv4Addr::new(10, 0, number, 1);
        self.ip(&ns, &["link", "add", "br0", "type", "bridge"]);
        self.ip(
            &ns,
            &["addr", "add", &format!("{gateway}/24"), "dev", "br0"],
        );
        self.ip(&ns, &["link", "set", "br0", "up"]);
        self.exec_ok(&ns, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        let mut masquerade = vec!["-t", "nat", "-A", "POSTROUTING", "-o", "wan0"];
        masquerade.extend(["-j", "MASQUERADE"]);
        if nat == Nat::Symmetric {
            masquerade.push("--random-fully");
        }
        self.exec_ok(&ns, IPTABLES, &masquerade);
        // From the wan, only what the lan started gets in (and what a port mapping, added
        // at the head of FORWARD by miniupnpd, lets in).
        self.exec_ok(
            &ns,
            IPTABLES,
            &[
                "-A",
                "FORWARD",
                "-i",
                "wan0",
                "-m",
                "conntrack",
                "--ctstate",
                "ESTABLISHED,RELATED",
                "-j",
                "ACCEPT",
            ],
        );
        self.exec_ok(
            &ns,
            IPTABLES,
            &["-A", "FORWARD", "-i", "wan0", "-j", "DROP"],
        );
        // Nor does the router answer what the wan starts towards itself: like a home
        // router, it drops it instead of refusing it with a reset. A reset would end a
        // hole-punching attempt, and the connection it leaves in the router's table would
        // make MASQUERADE move the lan's own attempt to another port.
        self.exec_ok(
            &ns,
            "iptables",
            &[
                "-A",
                "INPUT",
                "-i",
                "wan0",
                "-m",
                "conntrack",
                "--ctstate",
                "NEW",
                "-j",
                "DROP",
            ],
        );
        Home {
            router: Host { ns, ip },
            gateway,
            wan_if: "wan0",
            lan_if: "br0",
            number,
        }
    }

    /// A new host inside `home`: 10.0.N.2, .3, …, its default route the router.
    pub fn home_host(&mut self, home: &Home) -> Host {
        let count = &mut self.home_hosts[home.number as usize - 1];
        assert!(*count < MOST, "too many hosts in one home");
        *count += 1;
        let k = *count;
        let ip = Ipv4Addr::new(10, 0, home.number, 1 + k);
        let ns = self.namespace(&format!("h{}-{k}", home.number));
        let near = format!("h{k}");
        self.veth(&home.router.ns, &near, &ns, "eth0");
        self.ip(&home.router.ns, &["link", "set", &near, "master", "br0"]);
        self.ip(&home.router.ns, &["link", "set", &near, "up"]);
        self.ip(&ns, &["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        self.ip(&ns, &["link", "set", "eth0", "up"]);
        let gateway = home.gateway.to_string();
        self.ip(&ns, &["route", "add", "default", "via", &gateway]);
        Host { ns, ip }
    }

    /// Run `program args` inside namespace `ns` to completion (stdin empty).
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {ns} {program}: {e}"))
    }

    /// [`Internet::exec`], panicking with its stderr unless it succeeds; its stdout.
    pub fn exec_ok(&self, ns: &str, program: &str, args: &[&str]) -> String {
        let out = self.exec(ns, program, args);
        assert!(
            out.status.success(),
            "`ip netns exec {ns} {program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether a TCP connection from namespace `ns` to `addr` is accepted within
    /// [`CONNECT_TIMEOUT`] (bash's /dev/tcp; the connection is closed at once).
    pub fn tcp_connects(&self, ns: &str, addr: SocketAddrV4) -> bool {
        let timeout = CONNECT_TIMEOUT.as_secs().to_string();
        let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
        self.exec(ns, "timeout", &[&timeout, "bash", "-c", &script])
            .status
            .success()
    }

    /// `ip -n NS args`, panicking if it fails.
    fn ip(&self, ns: &str, args: &[&str]) {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// A new namespace called PREFIX-`role`, with its loopback up.
    fn namespace(&mut self, role: &str) -> String {
        let ns = format!("{}-{role}", self.prefix);
        self.add_namespace(&ns).unwrap_or_else(|e| panic!("{e}"));
        ns
    }

    /// Make namespace `ns` (remembered for deletion) and bring its loopback up.
    fn add_namespace(&mut self, ns: &str) -> Result<(), String> {
        output("ip", &["netns", "add", ns])?;
        self.made.push(ns.to_owned());
        output("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth pair made directly inside its two namespaces: `a_if` in `a`, `b_if` in `b`.
    fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        run(
            "ip",
            &[
                "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
            ],
        );
    }

    /// Connect namespace `ns` to the wan bridge: `bridge_if` on the bridge, `own_if` with
    /// address `ip`/24 in `ns`.
    fn plug_into_wan(&self, ns: &str, bridge_if: &str, own_if: &str, ip: Ipv4Addr) {
        self.veth(&self.wan, bridge_if, ns, own_if);
        self.ip(&self.wan, &["link", "set", bridge_if, "master", "br0"]);
        self.ip(&self.wan, &["link", "set", bridge_if, "up"]);
        self.ip(ns, &["addr", "add", &format!("{ip}/24"), "dev", own_if]);
        self.ip(ns, &["link", "set", own_if, "up"]);
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = output("ip", &["netns", "del", ns]) {
                eprintln!("leftover namespace: {e}");
            }
        }
    }
}

/// 198.51.100.`last`.
fn wan_ip(last: u8) -> Ipv4Addr {
    let [a, b, c] = WAN_PREFIX;
    Ipv4Addr::new(a, b, c, last)
}
