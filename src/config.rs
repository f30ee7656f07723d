//! `napster.toml`: every setting, its built-in default, and loading with errors that name
//! the key or line at fault.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};
use crate::protocol::Limits;

mod bounds;
pub use bounds::{MAX_HTTP_HEAD, MIN_HTTP_HEAD};

/// Ignore patterns used when `napster.toml` gives none: hidden files and folders, editor
/// backups, temporary and partial downloads (napster's own are always left out too).
pub const DEFAULT_IGNORE: &[&str] = &[".*", "*~", "*.tmp", "*.part", "*.crdownload", "*.swp"];

/// Name of the config file looked for in the working directory (and in the user's
/// config folder or home, see [`crate::home`]).
pub const DEFAULT_FILE: &str = "napster.toml";

/// Most `[peer] max_downloads`: each running download holds its worker threads and up to
/// its memory bound.
pub const MAX_DOWNLOADS: usize = 64;

/// A rate in bytes per second (0: none), read once from what the file says: `2MiB/s`,
/// `500kB/s`, `0`; a bare number other than 0 is refused with a hint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate(pub u64);

/// A size in bytes (0: none), read once from what the file says: `4GiB`, `500MB`, `0`;
/// a bare number other than 0 is refused with a hint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        amount(d, crate::limit::parse_rate).map(Rate)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        amount(d, crate::limit::parse_size).map(ByteSize)
    }
}

/// An amount written as text (`"2MiB/s"`) or as a number (only `0` has no unit).
fn amount<'de, D: Deserializer<'de>>(
    d: D,
    parse: fn(&str) -> std::result::Result<u64, crate::limit::BadRate>,
) -> std::result::Result<u64, D::Error> {
    struct Amount(fn(&str) -> std::result::Result<u64, crate::limit::BadRate>);
    impl serde::de::Visitor<'_> for Amount {
        type Value = u64;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an amount with its unit, like \"2MiB/s\" or \"4GiB\", or 0")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<u64, E> {
            (self.0)(v).map_err(E::custom)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<u64, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<u64, E> {
            self.visit_str(&v.to_string())
        }
    }
    d.deserialize_any(Amount(parse))
}

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
    pub relay_rate: Rate,
    /// Bytes one downloader key may have relayed per hour (a size like `1GiB`; `0`: no
    /// quota).
    pub relay_quota: ByteSize,
    /// Most relay pipes, pending or running, at once.
    pub relay_pipes: usize,
    /// Most relay pipes one asking key holds at once.
    pub relay_pipes_per_key: usize,
    /// Most relay pipes one asking source address holds at once.
    pub relay_pipes_per_address: usize,
    /// Most pushes (reverse connection, hole punch, relay) one key may cause a given
    /// sharer per 10 s.
    pub pushes_per_key: usize,
    /// Most pushes one source address may cause a given sharer per 10 s.
    pub pushes_per_address: usize,
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
            relay_rate: Rate(0),
            relay_quota: ByteSize(4 << 30),
            relay_pipes: 256,
            relay_pipes_per_key: 16,
            relay_pipes_per_address: 32,
            pushes_per_key: 64,
            pushes_per_address: 128,
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
    pub upload_limit: Rate,
    /// Download bandwidth limit (`10MB/s`; `0` = none).
    pub download_limit: Rate,
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
    /// Most pushes (reverse connections, hole punches, relay joins) this peer obeys per
    /// 10 s, whatever its index says.
    pub max_pushes: usize,
    /// Most pushes this peer carries out at once (connecting, punching, handshaking).
    pub max_pushes_at_once: usize,
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
            upload_limit: Rate(0),
            download_limit: Rate(0),
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
            max_pushes: 128,
            max_pushes_at_once: 16,
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
    pub min_rate: Rate,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        let limits = Limits::default();
        ProtocolConfig {
            max_frame: limits.max_frame,
            timeout: limits.timeout.as_secs_f64(),
            min_rate: Rate(limits.min_rate),
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
        if let Some(problem) = self
            .peer_name()
            .and_then(crate::protocol::new_nickname_problem)
        {
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
        self.check_counts()?;
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

    /// The bounds of the relay and of pushes: each at least 1.
    fn check_counts(&self) -> Result<()> {
        for (key, value) in [
            ("index.relay_pipes", self.index.relay_pipes),
            ("index.relay_pipes_per_key", self.index.relay_pipes_per_key),
            (
                "index.relay_pipes_per_address",
                self.index.relay_pipes_per_address,
            ),
            ("index.pushes_per_key", self.index.pushes_per_key),
            ("index.pushes_per_address", self.index.pushes_per_address),
            ("peer.max_pushes", self.peer.max_pushes),
            ("peer.max_pushes_at_once", self.peer.max_pushes_at_once),
        ] {
            if value == 0 {
                let hint = match key.starts_with("index.relay") {
                    true => " (to turn the relay off: `index.relay = false`)",
                    false => "",
                };
                return Err(Error::Config(format!("`{key}` must be at least 1{hint}")));
            }
        }
        Ok(())
    }

    /// The wire limits these settings ask for.
    pub fn limits(&self) -> Limits {
        Limits {
            max_frame: self.protocol.max_frame,
            timeout: Duration::from_secs_f64(self.protocol.timeout),
            min_rate: self.protocol.min_rate.0,
        }
    }

    /// The upload and download limits, in bytes per second (0 = none).
    pub fn rate_limits(&self) -> (u64, u64) {
        (self.peer.upload_limit.0, self.peer.download_limit.0)
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
        let err = Config::parse("[index]\nrelay_pipes_per_key = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("index.relay_pipes_per_key") && err.contains("relay = false"),
            "{err}"
        );
        let err = Config::parse("[peer]\nmax_pushes_at_once = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("peer.max_pushes_at_once"), "{err}");
        let err = Config::parse("[peer]\nport_mapping_lease = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("peer.port_mapping_lease") && err.contains("between 2 and 604800"),
            "{err}"
        );
    }

    /// Rates and sizes are read once, into numbers; a bare number other than 0 (a
    /// `5` meant as 5 MiB/s limited transfers to 5 bytes per second) is refused with
    /// the hint, as text or as a TOML number.
    #[test]
    fn rates_and_sizes_are_typed_and_need_a_unit() {
        let config = Config::parse(
            "[peer]\nupload_limit = \"2MiB/s\"\ndownload_limit = 0\n\
             [index]\nrelay_quota = \"1GiB\"\n",
        )
        .unwrap();
        assert_eq!(config.rate_limits(), (2 << 20, 0));
        assert_eq!(config.index.relay_quota, ByteSize(1 << 30));
        for (text, hint) in [
            ("[peer]\nupload_limit = \"5\"\n", "5 needs a unit: 5MiB/s?"),
            ("[peer]\ndownload_limit = 5\n", "5 needs a unit: 5MiB/s?"),
            (
                "[protocol]\nmin_rate = \"4096\"\n",
                "4096 needs a unit: 4096MiB/s?",
            ),
            ("[index]\nrelay_quota = \"5\"\n", "5 needs a unit: 5MiB?"),
            ("[peer]\nupload_limit = \"fast\"\n", "is not a rate"),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(
                err.contains(hint) && err.contains("line 2"),
                "{text}: {err}"
            );
        }
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
    fn a_bound_out_of_range_is_named() {
        let err = Config::parse("[index]\nmetrics_max_head = 10\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("index.metrics_max_head") && err.contains("between 1024 and 1048576"),
            "{err}"
        );
        let err = Config::parse("[peer]\nmax_handshakes_per_address = 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("peer.max_handshakes_per_address") && err.contains("at least 1"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_means_defaults_unless_required() {
        let path = Path::new("/nonexistent/napster.toml");
        assert!(Config::load(path, false).is_ok());
        assert!(Config::load(path, true).is_err());
    }
}
