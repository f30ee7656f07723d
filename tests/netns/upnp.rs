//! A real UPnP-IGD router: Debian's miniupnpd (iptables flavour) in a home's router
//! namespace, its configuration written into a temporary folder, `secure_mode` on (a host
//! may map ports to itself only), permissions for the home's network only.
//!
//! miniupnpd maps nothing for a router whose wan address is reserved (as the wan's
//! documentation range is) unless a STUN check says the address is reachable as it is:
//! so a public host on the wan runs `stun.py`, the smallest STUN responder, and miniupnpd
//! asks it (`ext_perform_stun`). Dropping the [`Upnpd`] kills both.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{Home, Host, IPTABLES, Internet, have_program};

/// A daemon, killed and reaped when dropped. (Its own, not `common::process::Killed`:
/// this module is also used from benches, which include `process.rs` at another path.)
pub struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Longest wait for the STUN responder and for miniupnpd to be ready.
pub const READY: Duration = Duration::from_secs(15);

/// The STUN responder's port.
const STUN_PORT: u16 = 3478;

/// A running miniupnpd (and its STUN responder); both are killed when dropped.
pub struct Upnpd {
    /// The router's namespace.
    pub router_ns: String,
    /// The STUN responder's host on the wan.
    pub stun_host: Host,
    daemon: Killed,
    stun: Killed,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Internet {
    /// Start miniupnpd on `home`'s router; why not, when miniupnpd or python3 is missing.
    pub fn upnpd(&mut self, home: &Home) -> Result<Upnpd, String> {
        for program in ["miniupnpd", "python3"] {
            if !have_program(program) {
                return Err(format!(
                    "`{program}` is not installed (.ci/run installs miniupnpd: apt-get install miniupnpd-iptables)"
                ));
            }
        }
        let stun_host = self.public_host();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/netns/stun.py");
        let (stun, stun_lines) = spawn_logged(
            Command::new("ip")
                .args(["netns", "exec", &stun_host.ns, "python3", script])
                .arg(stun_host.ip.to_string())
                .arg(STUN_PORT.to_string()),
        );
        wait_line(&stun_lines, "stun listening", &mut Vec::new())?;

        let router = &home.router.ns;
        self.miniupnpd_chains(router, home.wan_if);
        let dir = tempfile::tempdir().unwrap();
        let [a, b, c, _] = home.gateway.octets();
        let config = format!(
            "ext_ifname={wan}\n\
             listening_ip={lan}\n\
             http_port=0\n\
             enable_upnp=yes\n\
             enable_natpmp=yes\n\
             secure_mode=yes\n\
             system_uptime=yes\n\
             lease_file={leases}\n\
             uuid=4e4a1a0c-8cf0-11e0-98ee-001a6bd2d07b\n\
             ext_perform_stun=yes\n\
             ext_stun_host={stun}\n\
             ext_stun_port={STUN_PORT}\n\
             allow 1024-65535 {a}.{b}.{c}.0/24 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n",
            wan = home.wan_if,
            lan = home.lan_if,
            leases = dir.path().join("leases").display(),
            stun = stun_host.ip,
        );
        let config_file = dir.path().join("miniupnpd.conf");
        std::fs::write(&config_file, config).unwrap();
        let pid_file = dir.path().join("miniupnpd.pid");
        let (daemon, log) = spawn_logged(
            Command::new("ip")
                .args(["netns", "exec", router, "miniupnpd", "-d", "-f"])
                .arg(&config_file)
                .arg("-P")
                .arg(&pid_file),
        );
        let mut upnpd = Upnpd {
            router_ns: router.clone(),
            stun_host,
            daemon,
            stun,
            log,
            seen: Vec::new(),
            _dir: dir,
        };
        upnpd.wait_for("Port forwarding is now enabled")?;
        upnpd.wait_for("Listening for NAT-PMP")?;
        Ok(upnpd)
    }

    /// The chains miniupnpd adds its rules to (what Debian's iptables_init.sh makes),
    /// hooked in ahead of the router's own rules.
    fn miniupnpd_chains(&self, router: &str, wan: &str) {
        let rules: [&[&str]; 8] = [
            &["-t", "nat", "-N", "MINIUPNPD"],
            &[
                "-t",
                "nat",
                "-I",
                "PREROUTING",
                "-i",
                wan,
                "-j",
                "MINIUPNPD",
            ],
            &["-t", "nat", "-N", "MINIUPNPD-POSTROUTING"],
            &[
                "-t",
                "nat",
                "-I",
                "POSTROUTING",
                "-o",
                wan,
                "-j",
                "MINIUPNPD-POSTROUTING",
            ],
            &["-t", "mangle", "-N", "MINIUPNPD"],
            &[
                "-t",
                "mangle",
                "-I",
                "PREROUTING",
                "-i",
                wan,
                "-j",
                "MINIUPNPD",
            ],
            &["-t", "filter", "-N", "MINIUPNPD"],
            &[
                "-t",
                "filter",
                "-I",
                "FORWARD",
                "-i",
                wan,
                "!",
                "-o",
                wan,
                "-j",
                "MINIUPNPD",
            ],
        ];
        for rule in rules {
            self.exec_ok(router, IPTABLES, rule);
        }
    }
}

impl Upnpd {
    /// The port forwardings miniupnpd has made now: its NAT chain's rules.
    pub fn redirects(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.router_ns, IPTABLES])
            .args(["-t", "nat", "-S", "MINIUPNPD"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| line.starts_with("-A "))
            .map(str::to_owned)
            .collect()
    }

    /// miniupnpd's lease file: one `PROTO:EPORT:IADDR:IPORT:EXPIRES:DESCRIPTION` line
    /// per mapping, EXPIRES in seconds since the epoch (0: no lease, permanent).
    pub fn leases(&self) -> Vec<String> {
        std::fs::read_to_string(self._dir.path().join("leases"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Wait for a line of miniupnpd's log containing `needle`.
    pub fn wait_for(&mut self, needle: &str) -> Result<String, String> {
        wait_line(&self.log, needle, &mut self.seen)
    }

    /// Everything miniupnpd logged so far (for failure messages).
    pub fn log(&mut self) -> String {
        while let Ok(line) = self.log.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    /// The daemon's and the responder's process IDs.
    pub fn pids(&self) -> (u32, u32) {
        (self.daemon.0.id(), self.stun.0.id())
    }
}

/// Spawn `command` with stdout and stderr read line by line into one channel.
fn spawn_logged(command: &mut Command) -> (Killed, mpsc::Receiver<String>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec runs");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Killed(child), rx)
}

/// Wait up to [`READY`] for a line containing `needle`, keeping every line in `seen`.
fn wait_line(
    lines: &mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
) -> Result<String, String> {
    let deadline = Instant::now() + READY;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(needle) {
                    return Ok(line);
                }
            }
            Err(_) => {
                return Err(format!(
                    "no line with {needle:?} within {READY:?}; saw:\n{}",
                    seen.join("\n")
                ));
            }
        }
    }
}
