//! The handlers of the index and the share (`serve`, `connect`, `register`, `refresh`,
//! `share`, `unshare`, `unregister`), of a download now (`get`'s fetch), `limit` and
//! `status`: each does the work and returns its typed [`Outcome`]; how it prints is the
//! presenter's (`shell::present`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::download::{self, Cancel, Job};
use crate::error::{Error, Result};
use crate::index::PgStore;
use crate::peer::Sharing;
use crate::protocol::{FileEntry, Hit};
use crate::shell::commands::Direction;
use crate::shell::commands::outcome::{
    Connected, Home, IndexLink, Limits, Outcome, QueueCounts, Refreshed, Registered, Saved,
    Serving, Status, UploadCounts,
};
use crate::shell::{Refresh, Shell};

use crate::shell::app::{parse_pinned, reachable};
use crate::shell::present::text;

impl Shell {
    pub(in crate::shell) async fn serve(
        &mut self,
        port: Option<u16>,
        database: Option<String>,
    ) -> Result<Outcome> {
        if let Some(addr) = self.services.index_addr() {
            return Err(Error::msg(format!(
                "already serving the index on {addr}; quit to stop it"
            )));
        }
        let serving = self.start_index(port, database).await?;
        let (addr, backend) = (serving.addr, serving.backend.name());
        self.services.set_serving(serving);
        // Leaving an index chosen with `connect` is said, not done silently.
        let replaced = self
            .index
            .as_ref()
            .and_then(|addrs| addrs.first().copied())
            .filter(|&a| a != reachable(addr));
        self.index = Some(vec![reachable(addr)]);
        self.client = None;
        self.connect_failed = None;
        Ok(Outcome::Serving(Serving {
            addr,
            backend,
            schema_version: (backend != "in memory").then(PgStore::schema_version),
            metrics: self.services.metrics_url(),
            replaced,
        }))
    }

    /// Connect to the index at `addr`; when that fails, every command that needs the
    /// index fails too until a `connect` succeeds, rather than quietly using another.
    pub(in crate::shell) async fn connect(&mut self, addr: Option<String>) -> Result<Outcome> {
        self.client = None;
        let connected = self.try_connect(addr).await;
        self.connect_failed = connected.as_ref().err().map(ToString::to_string);
        connected
    }

    async fn try_connect(&mut self, addr: Option<String>) -> Result<Outcome> {
        let text = addr.unwrap_or_else(|| self.config.index.server.clone());
        let (addrs, pins) = parse_pinned(&text, self.config.index.port)?;
        let index = self.index.replace(addrs.clone());
        let opened = self.open_index(&addrs, &pins).await;
        let (mut client, pinned) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                self.index = index;
                return Err(e);
            }
        };
        // Accepted: from now on everything in this process requires these keys.
        self.known.give(&pins);
        let rtt = client.ping().await?;
        let connected = Connected {
            addr: client.addr(),
            rtt_ms: rtt.as_secs_f64() * 1e3,
            fingerprint: client.fingerprint().to_string(),
            fails_over: addrs
                .iter()
                .copied()
                .filter(|&a| a != client.addr())
                .collect(),
            pinned,
        };
        self.index = Some(addrs);
        self.client = Some(client);
        Ok(Outcome::Connected(connected))
    }

    pub(in crate::shell) async fn register(
        &mut self,
        dir: Option<PathBuf>,
        port: Option<u16>,
        cancel: Cancel,
    ) -> Result<Outcome> {
        if let Some(state) = self.services.sharing_status() {
            return Err(Error::msg(format!(
                "already sharing: {}; unregister first",
                text::sharing(&state)
            )));
        }
        let dir = dir.unwrap_or_else(|| self.config.peer.dir.clone());
        let index = self.index_addrs()?;
        self.check_port(port)?;
        let living = self.living();
        let (share, stats) = self.first_scan(dir, &living, cancel).await?;
        let settings = self.sharing_settings(port, living)?;
        self.lock_key()?;
        let (count, bytes, root) = (share.len(), share.bytes(), share.root().to_owned());
        let sharing = Sharing::start(share, &index, &settings).await?;
        let state = sharing.state();
        let registered = Registered {
            peer_id: state.peer_id,
            nickname: state.nickname.clone(),
            nickname_taken: match (self.config.peer_name(), &state.nickname) {
                (Some(asked), None) => Some(asked.to_string()),
                _ => None,
            },
            index: state.index,
            addr: sharing.addr,
            reach: state.reach.into(),
            dir: root.display().to_string(),
            files: count as u64,
            bytes,
            hashed_files: stats.hashed_files as u64,
            hashed_bytes: stats.hashed_bytes,
            cached_files: stats.cached_files as u64,
        };
        self.services.set_sharing(sharing);
        Ok(Outcome::Registered(registered))
    }

    pub(in crate::shell) async fn refresh(&mut self, target: Refresh) -> Result<Outcome> {
        let Some(sharing) = self.services.sharing() else {
            return Err(Error::msg("not sharing anything; `register` first"));
        };
        let done = match &target {
            Refresh::All => sharing.refresh().await,
            Refresh::Share(dir) => sharing.share_dir(dir).await,
            Refresh::Unshare(what) => sharing.unshare(what).await,
        };
        let shared = sharing.folder().read().len() as u64;
        let state = sharing.state();
        let done = done?;
        Ok(Outcome::Refreshed(Refreshed {
            peer_id: state.peer_id,
            nickname: state.nickname.clone(),
            shared,
            changed: done.changes.upsert.len() as u64,
            removed: done.changes.removed.len() as u64,
            hashed_files: done.stats.hashed_files as u64,
            hashed_bytes: done.stats.hashed_bytes,
            unsettled: done.unsettled as u64,
        }))
    }

    pub(in crate::shell) async fn unregister(&mut self) -> Result<Outcome> {
        match self.services.take_sharing() {
            Some(sharing) => {
                let peer_id = sharing.state().peer_id;
                sharing.stop().await;
                self.key_lock = None;
                Ok(Outcome::Unregistered { peer_id })
            }
            None => Err(Error::msg("not sharing anything; `register` first")),
        }
    }

    /// Download `file` from `sources` into `dir` now, showing its progress.
    pub(in crate::shell) async fn fetch_now(
        &mut self,
        file: FileEntry,
        sources: Vec<Hit>,
        dir: PathBuf,
        cancel: Cancel,
    ) -> Result<Saved> {
        // This peer's own copy is fetched only when nobody else has it, and then it says so.
        let me = self.services.sharing().map(|s| s.state().peer_id);
        let mut sources = sources;
        if sources.iter().any(|h| Some(h.peer_id) != me) {
            sources.retain(|h| Some(h.peer_id) != me);
        }
        let from_myself = sources.iter().all(|h| Some(h.peer_id) == me);
        if let Some((number, state)) = self.services.transfers().running_of(&file.sha256) {
            return Err(Error::msg(format!(
                "this napster is already downloading {} as download {number} of the queue \
                 ({state}); `transfers` shows it",
                crate::shell::present::table::shown(&file.name)
            )));
        }
        let index = self.client().await?.addr();
        let status = Arc::new(download::Status::default());
        let (bar, progress) = self.progress.download(&file, status.clone());
        let job = Job {
            file: file.clone(),
            sources,
            dir,
            limits: self.config.limits(),
            cancel,
            bandwidth: self.download.clone(),
            status,
            progress,
            dialer: self.dialer(index),
        };
        let done = download::fetch(job).await?;
        drop(bar);
        Ok(Saved {
            name: file.name,
            path: done.path.display().to_string(),
            size: done.size,
            sha256: file.sha256,
            peer_ids: done.peers.clone(),
            resumed: done.resumed,
            refetched: done.refetched,
            routes: done.routes(),
            sources: done.paths.len() as u64,
            seconds: done.elapsed.as_secs_f64(),
            already_there: done.already_there,
            only_from_myself: me.filter(|_| from_myself),
        })
    }

    pub(in crate::shell) fn limit(
        &mut self,
        direction: Option<Direction>,
        rate: Option<u64>,
    ) -> Outcome {
        match (direction, rate) {
            (Some(Direction::Up), Some(rate)) => self.upload.set(rate),
            (Some(Direction::Down), Some(rate)) => self.download.set(rate),
            (None, Some(rate)) => {
                self.upload.set(rate);
                self.download.set(rate);
            }
            _ => {}
        }
        Outcome::Limits(self.limits())
    }

    /// The bandwidth limits now (`None`: none).
    fn limits(&self) -> Limits {
        let some = |rate: u64| (rate > 0).then_some(rate);
        Limits {
            upload: some(self.upload.rate()),
            download: some(self.download.rate()),
        }
    }

    pub(in crate::shell) async fn status(&mut self) -> Result<Outcome> {
        let index_server = self.services.serving_status().await;
        let (index, index_error) = match self.client().await {
            Ok(client) => {
                let rtt = client.ping().await?;
                let link = IndexLink {
                    addr: client.addr(),
                    rtt_ms: rtt.as_secs_f64() * 1e3,
                    fingerprint: client.fingerprint().to_string(),
                };
                (Some(link), None)
            }
            Err(e) => (None, Some(e.to_string())),
        };
        let (running, queued, paused) = self.services.transfers().counts();
        let uploads = self.services.sharing().map(|sharing| {
            let rows = sharing.uploads().rows();
            let waiting = rows.iter().filter(|r| r.waiting.is_some()).count() as u64;
            UploadCounts {
                sending: rows.len() as u64 - waiting,
                waiting,
            }
        });
        let (identity, identity_error) = match self.identity() {
            Ok(identity) => (Some(identity.fingerprint().to_string()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(Outcome::Status(Box::new(Status {
            index_server,
            index,
            index_error,
            sharing: self.services.sharing_status(),
            port_mapping: self.services.mapping_summary(),
            // Absolute: a relative `downloads` resolves against the folder napster runs in,
            // which the user may not have in mind.
            downloads: std::path::absolute(&self.config.peer.downloads)
                .unwrap_or_else(|_| self.config.peer.downloads.clone())
                .display()
                .to_string(),
            limits: self.limits(),
            transfers: QueueCounts {
                running: running as u64,
                queued: queued as u64,
                paused: paused as u64,
                max: self.config.peer.max_downloads as u64,
            },
            uploads,
            identity,
            identity_error,
            home: self.home(),
        })))
    }

    /// Where this napster lives; `None` for a configuration made in code.
    fn home(&self) -> Option<Home> {
        let (home, chosen_by) = self.config.origin.home.clone()?;
        let shown = |p: &std::path::Path| p.display().to_string();
        Some(Home {
            home: shown(&home),
            chosen_by,
            key: shown(&self.config.peer.key),
            index_key: shown(&self.config.index.key),
            config_files: self.config.origin.files.iter().map(|p| shown(p)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use crate::shell::commands;
    use crate::shell::commands::outcome::{Fetched, Found};
    use crate::shell::present::{records, text};

    fn run(shell: &mut Shell, line: &str) -> Result<Outcome> {
        let command = commands::parse(line)?.expect("a command");
        smol::block_on(shell.execute(command, Cancel::default()))
    }

    /// Handlers return values, read here without a binary or a terminal: serve,
    /// register, search, get, limit and status; the presenter's text and records are
    /// made from those same values.
    #[test]
    fn handlers_return_typed_outcomes() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut shell, services) = crate::shell::test_shell(tmp.path());
        let shared = tmp.path().join("shared");

        let Outcome::Serving(served) = run(&mut shell, "serve 0").unwrap() else {
            panic!("serving");
        };
        assert_eq!(
            (served.backend, served.metrics.as_deref()),
            ("in memory", None)
        );
        assert!(served.addr.port() > 0 && served.replaced.is_none());
        let registered = run(&mut shell, &format!("register {} 0", shared.display())).unwrap();
        let key = crate::identity::Identity::load(&tmp.path().join("peer-key"), "key").unwrap();
        let id = crate::index::store::peer_id_of(&key.fingerprint());
        let Outcome::Registered(r) = &registered else {
            panic!("{registered:?}");
        };
        assert_eq!((r.peer_id, r.files, r.bytes, r.hashed_files), (id, 1, 8, 1));
        let found = run(&mut shell, "search song").unwrap();
        let Outcome::Found(Found { hits, page, .. }) = &found else {
            panic!("{found:?}");
        };
        assert_eq!(hits.len(), 1);
        assert_eq!(
            hits[0].file.sha256,
            crate::digest::digest_bytes(b"la la la").sha256
        );
        assert!(!page.truncated && page.start == 0 && !found.nothing_matched());
        let [records::Record::Hit(row)] = &records::records(&found)[..] else {
            panic!("one hit record");
        };
        assert!(
            row.shared_at.ends_with('Z') && row.fingerprint.len() > 50,
            "{row:?}"
        );
        let none = run(&mut shell, "search nothing").unwrap();
        assert!(none.nothing_matched() && records::records(&none).is_empty());
        let Outcome::Got(got) = run(&mut shell, "get song.ogg").unwrap() else {
            panic!("got");
        };
        let [Fetched::Saved(saved)] = &got.files[..] else {
            panic!("{got:?}");
        };
        assert_eq!(
            (saved.size, saved.already_there, saved.peer_ids.len()),
            (8, false, 1)
        );
        // The only sharer was this napster itself.
        assert_eq!(saved.only_from_myself, Some(id));
        assert_eq!(
            std::fs::read(tmp.path().join("downloads/song.ogg")).unwrap(),
            b"la la la"
        );
        let Outcome::Limits(limits) = run(&mut shell, "limit up 2MiB/s").unwrap() else {
            panic!("limits");
        };
        assert_eq!((limits.upload, limits.download), (Some(2 << 20), None));
        let Outcome::Status(status) = run(&mut shell, "status").unwrap() else {
            panic!("status");
        };
        assert_eq!(status.sharing.as_ref().map(|s| s.peer_id), Some(id));
        assert_eq!(status.index_server.as_ref().map(|s| s.peers), Some(1));
        assert!(status.index.is_some() && status.identity.is_some());
        assert_eq!((status.transfers.running, status.transfers.queued), (0, 0));
        // The downloads folder in full, not as napster.toml wrote it.
        assert!(
            std::path::Path::new(&status.downloads).is_absolute(),
            "{status:?}"
        );
        let uploads = status.uploads.unwrap();
        assert_eq!((uploads.sending, uploads.waiting), (0, 0));
        let missing = run(&mut shell, "get nope.txt").unwrap_err().to_string();
        assert!(missing.contains("no peer shares \"nope.txt\""), "{missing}");
        smol::block_on(services.shutdown());
    }

    /// The same outcomes as text: what a person reads.
    #[test]
    fn the_presenter_words_outcomes_as_before() {
        let limits = Outcome::Limits(Limits {
            upload: Some(2 << 20),
            download: None,
        });
        assert_eq!(
            text::text(&limits, None),
            "upload limit: 2.0 MiB/s; download limit: unlimited\n"
        );
        let none = Outcome::Found(Found {
            pattern: "nothing".into(),
            filters: vec![">1GB".into()],
            hits: Vec::new(),
            rtts: None,
            collapse: false,
            page: Default::default(),
        });
        assert_eq!(
            text::text(&none, None),
            "no file matches \"nothing\" with >1GB\n"
        );
    }
}
