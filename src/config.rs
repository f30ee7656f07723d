//! `napster.toml`: every setting, its built-in default, and loading with errors that name
//! the key or line at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::protocol::Limits;

/// Ignore patterns used when `napster.toml` gives none: hidden files and folders, editor
/// backups, temporary and partial downloads (napster's own are always left out too).
pub const DEFAULT_IGNORE: &[&str] = &[".*", "*~", "*.tmp", "*.part", "*.crdownload", "*.swp"];

/// Name of the config file looked for in the working directory (and in the user's
/// config folder or home, see [`crate::home`]).
pub const DEFAULT_FILE: &str = "napster.toml";

/// Most `[peer] max_downloads`: each running download holds its worker threads and up to
/// its memory bound.
pub const MAX_DOWNLOADS: usize = 64;

/// Shortest bound on an HTTP request head: a request line and a few headers.
pub const MIN_HTTP_HEAD: usize = 1024;

/// Longest bound on an HTTP request head: what one connection may make the server hold.
pub const MAX_HTTP_HEAD: usize = 1 << 20;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The index server.
    pub index: IndexConfig,
    /// This process as a sharing and downloading peer.
    pub peer: PeerConfig,
    /// Wire limits.
    pub protocol: ProtocolConfig,
    /// The interactive shell.
    pub shell: ShellConfig,
    /// Logging.
    pub log: LogConfig,
    /// The HTTP API and web page.
    pub web: WebConfig,
    /// Where these settings came from (not a setting: filled in by [`crate::home`]).
    #[serde(skip)]
    pub origin: Origin,
}

/// Where a configuration came from: the home its identity files live in, and the config
/// files read. `status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The home and why it was chosen; `None` for a configuration made in code.
    pub home: Option<(PathBuf, HomeFrom)>,
    /// The config files read, in the order they apply (each overrides the ones before,
    /// key by key).
    pub files: Vec<PathBuf>,
}

/// Why the home is where it is (the order of precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HomeFrom {
    /// `--home DIR`.
    Option,
    /// The `NAPSTER_HOME` environment variable.
    Env,
    /// A key file was already in the current folder, where napster kept it before homes.
    Legacy,
    /// The user's data directory (`$XDG_DATA_HOME/napster` on Linux).
    DataDir,
}

/// `[index]`: the index server this process runs or talks to.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndexConfig {
    /// Address `serve` binds.
    pub host: String,
    /// Port `serve` binds when none is given.
    pub port: u16,
    /// Index server used before any `connect`.
    pub server: String,
    /// Seconds a silent peer session lives before its files leave the index.
    pub session_ttl: f64,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most connections served at once from one source address.
    pub max_connections_per_address: usize,
    /// Most TLS handshakes in flight at once.
    pub max_handshakes: usize,
    /// Most TLS handshakes in flight at once from one source address.
    pub max_handshakes_per_address: usize,
    /// Most rows one search returns.
    pub max_results: usize,
    /// Most files one peer may share.
    pub max_files_per_peer: usize,
    /// Most files the peers at one address may share together.
    pub max_files_per_address: usize,
    /// Most files the whole index holds.
    pub max_index_files: usize,
    /// Most bytes of file names the whole index holds.
    pub max_index_name_bytes: usize,
    /// Longest file name (relative path) accepted, in bytes.
    pub max_name_len: usize,
    /// Fewest characters (besides `*` and `?`) a search pattern must have.
    pub min_pattern_len: usize,
    /// PostgreSQL URL of a shared index; empty keeps the index in memory.
    pub database: String,
    /// `host:port` serving Prometheus metrics on `/metrics`; empty: none.
    pub metrics: String,
    /// Most connections the metrics endpoint holds at once.
    pub metrics_max_connections: usize,
    /// Most connections the metrics endpoint holds at once from one source address.
    pub metrics_max_connections_per_address: usize,
    /// Longest HTTP request head the metrics endpoint reads, in bytes.
    pub metrics_max_head: usize,
    /// Seconds an HTTP request head may take to arrive at the metrics endpoint.
    pub metrics_head_timeout: f64,
    /// Key file of the index server's identity; made on first use.
    pub key: PathBuf,
    /// Relay between peers that are both behind NATs.
    pub relay: bool,
    /// Bandwidth the relay may use in all (a rate like `10MiB/s`; `0`: no cap).
    pub relay_rate: String,
    /// Bytes one key may have relayed per hour (a size like `1GiB`; `0`: no quota).
    pub relay_quota: String,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            host: "127.0.0.1".into(),
            port: 45000,
            server: "127.0.0.1:45000".into(),
            session_ttl: 30.0,
            max_connections: 4096,
            max_connections_per_address: 64,
            max_handshakes: 256,
            max_handshakes_per_address: 8,
            max_results: 1000,
            max_files_per_peer: 200_000,
            max_files_per_address: 400_000,
            max_index_files: 2_000_000,
            max_index_name_bytes: 128 << 20,
            max_name_len: crate::protocol::MAX_NAME,
            min_pattern_len: 2,
            database: String::new(),
            metrics: String::new(),
            metrics_max_connections: 64,
            metrics_max_connections_per_address: 8,
            metrics_max_head: 8192,
            metrics_head_timeout: 5.0,
            key: ".napster-index-key".into(),
            relay: true,
            relay_rate: "0".into(),
            relay_quota: "4GiB".into(),
        }
    }
}

/// `[peer]`: sharing and downloading.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeerConfig {
    /// Address the file server binds; empty means the address used to reach the index.
    pub host: String,
    /// Port the file server binds when none is given.
    pub port: u16,
    /// Folder `register` shares when none is given.
    pub dir: PathBuf,
    /// Folder downloads are written to.
    pub downloads: PathBuf,
    /// Most connections the file server holds at once.
    pub max_connections: usize,
    /// Most connections the file server holds at once from one source address.
    pub max_connections_per_address: usize,
    /// Most TLS handshakes the file server has in flight at once.
    pub max_handshakes: usize,
    /// Most TLS handshakes the file server has in flight at once from one source address.
    pub max_handshakes_per_address: usize,
    /// Most downloads served at once.
    pub max_uploads: usize,
    /// Most downloads served or waiting at once for one IP address.
    pub max_uploads_per_address: usize,
    /// Most queued (`get -b`) downloads running at once; the rest wait their turn.
    pub max_downloads: usize,
    /// Upload bandwidth limit (`2MiB/s`; `0` = none).
    pub upload_limit: String,
    /// Download bandwidth limit (`10MB/s`; `0` = none).
    pub download_limit: String,
    /// File and folder names left out of a share (`*`/`?` patterns).
    pub ignore: Vec<String>,
    /// File the hash cache is kept in; empty keeps it in memory only.
    pub hash_cache: PathBuf,
    /// Nickname asked for on each index, first come first served; empty for none.
    pub name: String,
    /// Key file of this peer's identity; made on first use.
    pub key: PathBuf,
    /// File of the index servers' keys, pinned on first connection; empty pins nothing.
    pub known_indexes: PathBuf,
    /// Watch shared folders for changes.
    pub watch: bool,
    /// Seconds between full rescans of the shared folders.
    pub rescan: f64,
    /// Seconds a file must stay unchanged before it is announced.
    pub settle: f64,
    /// Ask the home router (UPnP-IGD) to forward a public port to the file server.
    pub port_mapping: bool,
    /// Seconds of lease asked for a port mapping (renewed at half of it).
    pub port_mapping_lease: u32,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            host: String::new(),
            port: 25000,
            dir: "testing_files".into(),
            downloads: "downloads".into(),
            max_connections: 1024,
            max_connections_per_address: 64,
            max_handshakes: 128,
            max_handshakes_per_address: 8,
            max_uploads: 256,
            max_uploads_per_address: 16,
            max_downloads: 3,
            upload_limit: "0".into(),
            download_limit: "0".into(),
            ignore: DEFAULT_IGNORE.iter().map(|p| (*p).to_owned()).collect(),
            hash_cache: ".napster-hashes".into(),
            key: ".napster-key".into(),
            known_indexes: ".napster-known-indexes".into(),
            name: String::new(),
            watch: true,
            rescan: 60.0,
            settle: 1.0,
            port_mapping: true,
            port_mapping_lease: 3600,
        }
    }
}

/// `[protocol]`: bounds on every connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolConfig {
    /// Largest message, in bytes.
    pub max_frame: u32,
    /// Seconds allowed to connect, for a begun message to arrive, or for a transfer to move.
    pub timeout: f64,
    /// Slowest a transfer may move (`4KiB/s`; `0` = no minimum), measured over `timeout`.
    pub min_rate: String,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        let limits = Limits::default();
        ProtocolConfig {
            max_frame: limits.max_frame,
            timeout: limits.timeout.as_secs_f64(),
            min_rate: "4KiB/s".into(),
        }
    }
}

/// `[shell]`: the interactive shell.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShellConfig {
    /// History file; empty disables history.
    pub history: PathBuf,
    /// Most history entries kept.
    pub history_size: usize,
    /// Rows `search` asks for unless told otherwise (`-n`).
    pub results: u32,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            history: ".napster_history".into(),
            history_size: 1000,
            results: 100,
        }
    }
}

/// `[log]`: what a serving process logs and where.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` wins when set.
    pub level: String,
    /// File to append to; empty means stderr.
    pub file: PathBuf,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            file: PathBuf::new(),
        }
    }
}

/// The address `napster daemon` serves its API and page on when `[web] listen` is empty.
pub const DAEMON_WEB_LISTEN: &str = "127.0.0.1:8460";

/// `[web]`: the HTTP API and web page (`docs/API.md`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// `host:port` to serve on; empty: off in the shell, [`DAEMON_WEB_LISTEN`] in the
    /// daemon. Port 0 picks a free port.
    pub listen: String,
    /// The host name a TLS reverse proxy forwards to this daemon (`napster.example.org`):
    /// it lets `listen` be an address other than loopback, and requests naming that host
    /// (`Host`, `Origin`) be served.
    pub reverse_proxy: String,
}

impl WebConfig {
    fn check(&self) -> Result<()> {
        if self.reverse_proxy.contains(['/', ':', ' ']) {
            return Err(Error::Config(
                "`web.reverse_proxy` must be a bare host name (napster.example.org), without \
                 scheme, port or path"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Load `path`; when `required` is false a missing file gives the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Config> {
        Config::load_layers(&[(path.to_owned(), required)])
    }

    /// Load `files` in order, each overriding the ones before key by key (a table's keys
    /// one by one; a list whole). A file whose flag is false may be missing. Each file is
    /// checked on its own first, so that an error names the file it is in; the files
    /// read are listed in [`Config::origin`].
    pub fn load_layers(files: &[(PathBuf, bool)]) -> Result<Config> {
        let mut merged = toml::Table::new();
        let mut read = Vec::new();
        for (path, required) in files {
            let text = match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
                Err(e) => {
                    return Err(Error::Config(format!(
                        "cannot read {}: {e}",
                        path.display()
                    )));
                }
            };
            let in_file = |e: Error| match e {
                Error::Config(msg) => Error::Config(format!("{}: {msg}", path.display())),
                other => other,
            };
            Config::parse(&text).map_err(in_file)?;
            let table: toml::Table = text
                .parse()
                .map_err(|e: toml::de::Error| in_file(Error::Config(e.to_string())))?;
            merge(&mut merged, table);
            read.push(path.clone());
        }
        let mut config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        config.check()?;
        config.origin.files = read;
        Ok(config)
    }

    /// Parse the text of a config file and check its values.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.check()?;
        config.web.check()?;
        Ok(config)
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one check per setting, in the order of napster.toml: a list read whole"
    )]
    fn check(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("`{key}` {why}")));
        if !(self.index.session_ttl > 0.0 && self.index.session_ttl <= 86_400.0) {
            return bad("index.session_ttl", "must be between 0 and 86400 seconds");
        }
        if !(self.protocol.timeout > 0.0 && self.protocol.timeout <= 3_600.0) {
            return bad("protocol.timeout", "must be between 0 and 3600 seconds");
        }
        if self.protocol.max_frame < 4096 {
            return bad("protocol.max_frame", "must be at least 4096 bytes");
        }
        if self.index.max_connections == 0 {
            return bad("index.max_connections", "must be at least 1");
        }
        if self.index.max_files_per_address == 0
            || self.index.max_index_files == 0
            || self.index.max_index_name_bytes == 0
        {
            return bad(
                "index.max_files_per_address, index.max_index_files and \
                 index.max_index_name_bytes",
                "must be at least 1",
            );
        }
        self.check_bounds()?;
        if self.index.max_name_len == 0 || self.index.max_name_len > crate::protocol::MAX_NAME {
            return bad(
                "index.max_name_len",
                &format!("must be between 1 and {}", crate::protocol::MAX_NAME),
            );
        }
        if !self.index.metrics.is_empty()
            && self.index.metrics.parse::<std::net::SocketAddr>().is_err()
        {
            return bad(
                "index.metrics",
                "must be an IP address and port like \"127.0.0.1:9464\" (or \"\" for none)",
            );
        }
        if self.index.max_results == 0 {
            return bad("index.max_results", "must be at least 1");
        }
        for (key, value) in [
            ("peer.upload_limit", &self.peer.upload_limit),
            ("peer.download_limit", &self.peer.download_limit),
            ("protocol.min_rate", &self.protocol.min_rate),
            ("index.relay_rate", &self.index.relay_rate),
            ("index.relay_quota", &self.index.relay_quota),
        ] {
            if let Err(e) = crate::limit::parse_rate(value) {
                return bad(key, &format!("is wrong: {e}"));
            }
        }
        if let Some(problem) = self.peer_name().and_then(crate::protocol::nickname_problem) {
            return bad("peer.name", &problem);
        }
        if !(self.peer.rescan >= 1.0 && self.peer.rescan <= 86_400.0) {
            return bad("peer.rescan", "must be between 1 and 86400 seconds");
        }
        if !(self.peer.settle >= 0.0 && self.peer.settle <= 3_600.0) {
            return bad("peer.settle", "must be between 0 and 3600 seconds");
        }
        if !(2..=604_800).contains(&self.peer.port_mapping_lease) {
            return bad(
                "peer.port_mapping_lease",
                "must be between 2 and 604800 seconds (a week)",
            );
        }
        if self.peer.max_uploads == 0 {
            return bad("peer.max_uploads", "must be at least 1");
        }
        if self.peer.max_uploads_per_address == 0 {
            return bad("peer.max_uploads_per_address", "must be at least 1");
        }
        if !(1..=MAX_DOWNLOADS).contains(&self.peer.max_downloads) {
            return bad(
                "peer.max_downloads",
                &format!("must be between 1 and {MAX_DOWNLOADS}"),
            );
        }
        Ok(())
    }

    /// The connection, handshake and HTTP bounds (`gate` and `http`).
    fn check_bounds(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("`{key}` {why}")));
        for (key, value) in [
            (
                "index.max_connections_per_address",
                self.index.max_connections_per_address,
            ),
            ("index.max_handshakes", self.index.max_handshakes),
            (
                "index.max_handshakes_per_address",
                self.index.max_handshakes_per_address,
            ),
            (
                "index.metrics_max_connections",
                self.index.metrics_max_connections,
            ),
            (
                "index.metrics_max_connections_per_address",
                self.index.metrics_max_connections_per_address,
            ),
            ("peer.max_connections", self.peer.max_connections),
            (
                "peer.max_connections_per_address",
                self.peer.max_connections_per_address,
            ),
            ("peer.max_handshakes", self.peer.max_handshakes),
            (
                "peer.max_handshakes_per_address",
                self.peer.max_handshakes_per_address,
            ),
        ] {
            if value == 0 {
                return bad(key, "must be at least 1");
            }
        }
        if !(MIN_HTTP_HEAD..=MAX_HTTP_HEAD).contains(&self.index.metrics_max_head) {
            return bad(
                "index.metrics_max_head",
                &format!("must be between {MIN_HTTP_HEAD} and {MAX_HTTP_HEAD} bytes"),
            );
        }
        if !(self.index.metrics_head_timeout > 0.0 && self.index.metrics_head_timeout <= 3_600.0) {
            return bad(
                "index.metrics_head_timeout",
                "must be between 0 and 3600 seconds",
            );
        }
        Ok(())
    }

    /// The wire limits these settings ask for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame: self.protocol.max_frame,
            timeout: Duration::from_secs_f64(self.protocol.timeout),
            min_rate: crate::limit::parse_rate(&self.protocol.min_rate).unwrap_or(0),
        }
    }

    /// The upload and download limits, in bytes per second (0 = none).
    pub fn rate_limits(&self) -> (u64, u64) {
        let rate = |text: &str| crate::limit::parse_rate(text).unwrap_or(0);
        (
            rate(&self.peer.upload_limit),
            rate(&self.peer.download_limit),
        )
    }

    /// How long a silent peer session lives.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs_f64(self.index.session_ttl)
    }

    /// The nickname `[peer] name` asks for, if any.
    pub fn peer_name(&self) -> Option<&str> {
        Some(self.peer.name.trim()).filter(|n| !n.is_empty())
    }
}

/// Lay `over` on `base`: tables merge key by key, anything else is replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(above)) => merge(below, above),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_states_the_defaults() {
        let shipped = Config::parse(include_str!("../napster.toml")).expect("napster.toml parses");
        let defaults = Config::default();
        assert_eq!(format!("{shipped:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[index]\nprot = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let err = Config::parse("[index]\nport = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::parse("[index]\nsession_ttl = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("index.session_ttl"), "{err}");
        let err = Config::parse("[peer]\nmax_downloads = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("peer.max_downloads") && err.contains("between 1 and 64"),
            "{err}"
        );
        let err = Config::parse("[peer]\nport_mapping_lease = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("peer.port_mapping_lease") && err.contains("between 2 and 604800"),
            "{err}"
        );
    }

    /// A later file overrides an earlier one key by key; what it leaves out stays.
    #[test]
    fn layers_override_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user.toml");
        let here = dir.path().join("here.toml");
        std::fs::write(
            &user,
            "[peer]\nname = \"alice\"\nport = 1\n[shell]\nresults = 7\n",
        )
        .unwrap();
        std::fs::write(&here, "[peer]\nport = 2\nignore = [\"*.iso\"]\n").unwrap();
        let missing = dir.path().join("missing.toml");
        let config = Config::load_layers(&[
            (user.clone(), false),
            (missing, false),
            (here.clone(), false),
        ])
        .unwrap();
        assert_eq!(config.peer.name, "alice");
        assert_eq!(config.peer.port, 2);
        assert_eq!(config.peer.ignore, ["*.iso"]);
        assert_eq!(config.shell.results, 7);
        assert_eq!(config.origin.files, [user.clone(), here.clone()]);
        std::fs::write(&here, "[peer]\nport = \"x\"\n").unwrap();
        let err = Config::load_layers(&[(user, false), (here.clone(), false)])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&here.display().to_string()), "{err}");
    }

    #[test]
    fn missing_file_means_defaults_unless_required() {
        let path = Path::new("/nonexistent/napster.toml");
        assert!(Config::load(path, false).is_ok());
        assert!(Config::load(path, true).is_err());
    }
}
