//! A throwaway PostgreSQL for tests: `initdb` and `pg_ctl` into a temporary folder,
//! listening only on a Unix socket there, stopped when dropped.
//!
//! Needs PostgreSQL's server binaries (on PATH or in /usr/lib/postgresql/*/bin; `.ci/run`
//! installs them). As root, which initdb refuses, the server runs as the `postgres` user.

#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running PostgreSQL server.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    as_postgres: bool,
    /// Server settings given at start (`-c name=value`), beyond the fixed ones.
    settings: Vec<String>,
}

/// Socket "port": with a private socket folder any number does.
const PORT: u16 = 5432;

fn find_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut candidates = on_path;
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = versions.flatten().map(|e| e.path().join("bin")).collect();
        dirs.sort();
        candidates.extend(dirs.into_iter().rev());
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .expect(
            "PostgreSQL's server binaries (initdb, pg_ctl) are needed for these tests: \
             apt-get install postgresql postgresql-contrib (.ci/run does it)",
        )
}

impl Postgres {
    /// Start a fresh server.
    pub fn start() -> Postgres {
        Postgres::start_with(&[])
    }

    /// Start a fresh server with extra settings (`name=value`, as `-c` takes them), such
    /// as `log_min_duration_statement=200` for a benchmark.
    pub fn start_with(settings: &[&str]) -> Postgres {
        let bin = find_bin();
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(1)
            == 0;
        if as_postgres {
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owned.success(), "chown to the postgres user failed");
        }
        let pg = Postgres {
            dir,
            bin,
            as_postgres,
            settings: settings.iter().map(|s| s.to_string()).collect(),
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-D",
                data.to_str().unwrap(),
            ],
        );
        pg.pg_ctl_start();
        pg
    }

    /// Stop the server (as if the database went away); [`Postgres::resume`] restarts it.
    pub fn pause(&self) {
        let data = self.data();
        self.run(
            "pg_ctl",
            &["-w", "-D", data.to_str().unwrap(), "-m", "fast", "stop"],
        );
    }

    /// Start the server again after [`Postgres::pause`].
    pub fn resume(&self) {
        self.pg_ctl_start();
    }

    /// Start the server with `pg_ctl`, waiting until it accepts connections: on the
    /// socket in the temporary folder only, logging to `postgres.log` there, and not
    /// waiting for the disk (a throwaway database needs no durability).
    fn pg_ctl_start(&self) {
        let data = self.data();
        let options = format!(
            "-k {} -p {PORT} -c listen_addresses='' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            self.dir.path().display()
        );
        let options = self
            .settings
            .iter()
            .fold(options, |all, s| format!("{all} -c {s}"));
        let log = self.dir.path().join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-w",
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "start",
            ],
        );
    }

    /// Run SQL in database `name` as the superuser.
    pub fn sql(&self, name: &str, sql: &str) {
        let socket = self.dir.path().to_str().unwrap().to_owned();
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let status = Command::new(psql)
            .args([
                "-h",
                &socket,
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                "-d",
                name,
                "-q",
                "-c",
                sql,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "psql failed: {sql}");
    }

    /// Run one SQL query in database `name` as the superuser; its rows, one a line,
    /// columns separated by `|`.
    pub fn query(&self, name: &str, sql: &str) -> String {
        let socket = self.dir.path().to_str().unwrap().to_owned();
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let output = Command::new(psql)
            .args(["-h", &socket, "-p", &PORT.to_string(), "-U", "postgres"])
            .args(["-d", name, "-At", "-c", sql])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "psql failed: {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A command running the server binary `tool`, as the `postgres` user when we are
    /// root.
    fn command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    /// Run the server binary `tool` with `args`, asserting that it succeeds.
    fn run(&self, tool: &str, args: &[&str]) {
        let output = self
            .command(tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.join(tool).display()));
        assert!(
            output.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        let socket = self.dir.path().display().to_string().replace('/', "%2F");
        format!("postgres://postgres@{socket}:{PORT}/{name}")
    }

    /// A new, empty database; returns its URL.
    pub fn fresh_database(&self) -> String {
        self.url(&self.fresh_database_name())
    }

    /// A new, empty database; returns its name.
    pub fn fresh_database_name(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{id}", std::process::id());
        self.sql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The server's processes now: the postmaster and its children (one backend per
    /// connection, and the background workers), for measuring the CPU they spend.
    pub fn pids(&self) -> Vec<u32> {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid"));
        let Some(postmaster) = pid_file
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // "pid (comm) state ppid …": the comm may hold spaces, so split after ')'.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if parent == Some(postmaster) {
                pids.push(pid);
            }
        }
        pids
    }

    /// The folder holding the socket, for URLs written by hand.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = self.command("pg_ctl").args(args).output();
    }
}
