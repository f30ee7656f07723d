//! One function per command, each returning the text it prints: the repl prints it,
//! tests read it. How results look is [`super::render`]'s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use super::commands::Direction;
use super::output::Record;
use super::services::sharing_line;
use super::{Refresh, Shell, render};
use crate::download::{self, Cancel, Job, Status};
use crate::error::{Error, Result};
use crate::index::PgStore;
use crate::limit::show_rate;
use crate::peer::Sharing;
use crate::protocol::{FileEntry, Hit};

use super::app::{parse_pinned, reachable};

impl Shell {
    pub(super) async fn serve(
        &mut self,
        port: Option<u16>,
        database: Option<String>,
    ) -> Result<String> {
        let mut out = String::new();
        if let Some(addr) = self.services.index_addr() {
            return Err(Error::msg(format!(
                "already serving the index on {addr}; quit to stop it"
            )));
        }
        let serving = self.start_index(port, database).await?;
        let (addr, kind) = (serving.addr, serving.backend.name());
        self.services.set_serving(serving);
        self.emit(Record::Serving {
            at: addr.into(),
            backend: kind.to_owned(),
            metrics: self.services.metrics_url(),
        });
        put!(out, "index server listening on {addr}");
        if let Some(url) = self.services.metrics_url() {
            put!(out, "metrics on {url}");
        }
        if kind != "in memory" {
            put!(
                out,
                "the index is kept {kind} (schema version {}): every index server using this \
                 database shares it",
                PgStore::schema_version()
            );
        }
        // Leaving an index chosen with `connect` is said, not done silently.
        let before = self
            .index
            .as_ref()
            .and_then(|addrs| addrs.first().copied())
            .filter(|&a| a != reachable(addr));
        if let Some(old) = before {
            put!(
                out,
                "this shell now uses it as its index, instead of {old} (`connect {old}` goes back)"
            );
        }
        self.index = Some(vec![reachable(addr)]);
        self.client = None;
        self.connect_failed = None;
        Ok(out)
    }

    /// Connect to the index at `addr`; when that fails, every command that needs the
    /// index fails too until a `connect` succeeds, rather than quietly using another.
    pub(super) async fn connect(&mut self, addr: Option<String>) -> Result<String> {
        self.client = None;
        let connected = self.try_connect(addr).await;
        self.connect_failed = connected.as_ref().err().map(ToString::to_string);
        connected
    }

    async fn try_connect(&mut self, addr: Option<String>) -> Result<String> {
        let mut out = String::new();
        let text = addr.unwrap_or_else(|| self.config.index.server.clone());
        let (addrs, pins) = parse_pinned(&text, self.config.index.port)?;
        let given = std::mem::replace(&mut self.pins, pins);
        let index = self.index.replace(addrs.clone());
        let opened = self.open_index(&addrs).await;
        let (mut client, note) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                (self.pins, self.index) = (given, index);
                return Err(e);
            }
        };
        if let Some(note) = note {
            put!(out, "{note}");
        }
        let rtt = client.ping().await?;
        let others: Vec<String> = addrs
            .iter()
            .filter(|&&a| a != client.addr())
            .map(SocketAddr::to_string)
            .collect();
        put!(
            out,
            "connected to the index at {} (rtt {:.2} ms){}",
            client.addr(),
            rtt.as_secs_f64() * 1e3,
            if others.is_empty() {
                String::new()
            } else {
                format!("; fails over to {}", others.join(", "))
            }
        );
        put!(out, "index key: {}", client.fingerprint());
        self.emit(Record::Connected {
            at: client.addr().into(),
            rtt_ms: rtt.as_secs_f64() * 1e3,
        });
        self.index = Some(addrs);
        self.client = Some(client);
        Ok(out)
    }

    pub(super) async fn register(
        &mut self,
        dir: Option<PathBuf>,
        port: Option<u16>,
        cancel: Cancel,
    ) -> Result<String> {
        let mut out = String::new();
        if let Some(state) = self.services.sharing_summary() {
            return Err(Error::msg(format!(
                "already sharing: {state}; unregister first"
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
        let index = state.index;
        self.emit(Record::Registered {
            peer_id: state.peer_id,
            nickname: state.nickname.clone(),
            index: index.to_string(),
            at: sharing.addr.into(),
            reachable: sharing.state().reach.is_none_or(|r| r.reachable),
            dir: root.display().to_string(),
            files: count as u64,
            bytes,
            hashed_files: stats.hashed_files as u64,
            hashed_bytes: stats.hashed_bytes,
            cached_files: stats.cached_files as u64,
        });
        put!(
            out,
            "registered as peer {} with the index at {index}: {}, {} from {}; serving on {}",
            render::peer_label(state.peer_id, state.nickname.as_deref()),
            render::count(count as u64, "file"),
            render::size(bytes),
            root.display(),
            sharing.addr
        );
        put!(
            out,
            "read and hashed {} ({}); {} known from the hash cache, unread",
            render::count(stats.hashed_files as u64, "file"),
            render::size(stats.hashed_bytes),
            render::count(stats.cached_files as u64, "file")
        );
        put!(out, "{}", render::reach_line(sharing.state().reach));
        if let (Some(asked), None) = (self.config.peer_name(), &state.nickname) {
            put!(
                out,
                "the nickname {asked} is taken on this index by another key; others reach you \
                 by Peer ID or fingerprint (or set another `[peer] name`)"
            );
        }
        self.services.set_sharing(sharing);
        Ok(out)
    }

    pub(super) async fn refresh(&mut self, target: Refresh) -> Result<String> {
        let mut out = String::new();
        let Some(sharing) = self.services.sharing() else {
            return Err(Error::msg("not sharing anything; `register` first"));
        };
        let done = match &target {
            Refresh::All => sharing.refresh().await,
            Refresh::Share(dir) => sharing.share_dir(dir).await,
            Refresh::Unshare(what) => sharing.unshare(what).await,
        };
        let summary = sharing_line(&sharing);
        let done = done?;
        let upserted = done.changes.upsert.len() as u64;
        self.emit(Record::Refreshed {
            changed: upserted,
            removed: done.changes.removed.len() as u64,
            hashed_files: done.stats.hashed_files as u64,
            hashed_bytes: done.stats.hashed_bytes,
            unsettled: done.unsettled as u64,
        });
        put!(
            out,
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
        Ok(out)
    }

    pub(super) async fn unregister(&mut self) -> Result<String> {
        let mut out = String::new();
        match self.services.take_sharing() {
            Some(sharing) => {
                let id = sharing.state().peer_id;
                sharing.stop().await;
                self.key_lock = None;
                self.emit(Record::Unregistered { peer_id: id });
                put!(out, "peer {id} unregistered; its files left the index");
                Ok(out)
            }
            None => Err(Error::msg("not sharing anything; `register` first")),
        }
    }

    /// Download `file` from `sources` into `dir` now, with a progress bar.
    pub(super) async fn fetch_now(
        &mut self,
        file: FileEntry,
        sources: Vec<Hit>,
        dir: PathBuf,
        cancel: Cancel,
    ) -> Result<String> {
        let mut out = String::new();
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
                render::shown(&file.name)
            )));
        }
        let index = self.client().await?.addr();
        let status = Arc::new(Status::default());
        let mut job = Job {
            file: file.clone(),
            sources,
            dir,
            limits: self.config.limits(),
            cancel,
            bandwidth: self.download.clone(),
            status: status.clone(),
            progress: Arc::new(|_| {}),
            dialer: self.dialer(index),
        };
        let (bar, progress) = self.download_bar(file.size, &file.name, status);
        job.progress = progress;
        if self.progress_records {
            job.progress = super::output::progress(&file, job.progress.clone());
        }
        let done = download::fetch(job).await?;
        drop(bar);
        self.emit(Record::Saved {
            name: file.name.clone(),
            path: done.path.display().to_string(),
            size: done.size,
            sha256: file.sha256.clone(),
            peer_ids: done.peers.clone(),
            resumed: done.resumed,
            refetched: done.refetched,
            routes: done.routes(),
            seconds: done.elapsed.as_secs_f64(),
            already_there: done.already_there,
        });
        if done.already_there {
            put!(
                out,
                "{} is already there with the same contents (sha256 ok); nothing to do",
                done.path.display()
            );
            return Ok(out);
        }
        put!(out, "{}", render::saved(&done));
        put!(out, "{}", done.summary());
        if from_myself && let Some(me) = me {
            put!(
                out,
                "peer {me}, which is this napster, was the only one sharing it"
            );
        }
        Ok(out)
    }

    pub(super) fn limit(&mut self, direction: Option<Direction>, rate: Option<u64>) -> String {
        let mut out = String::new();
        match (direction, rate) {
            (Some(Direction::Up), Some(rate)) => self.upload.set(rate),
            (Some(Direction::Down), Some(rate)) => self.download.set(rate),
            (None, Some(rate)) => {
                self.upload.set(rate);
                self.download.set(rate);
            }
            _ => {}
        }
        let some = |rate: u64| (rate > 0).then_some(rate);
        self.emit(Record::Limits {
            upload: some(self.upload.rate()),
            download: some(self.download.rate()),
        });
        put!(
            out,
            "upload limit: {}; download limit: {}",
            show_rate(self.upload.rate()),
            show_rate(self.download.rate())
        );
        out
    }

    pub(super) async fn status(&mut self) -> Result<String> {
        let mut out = String::new();
        match self.services.serving_summary().await {
            Some(summary) => put!(out, "index server: {summary}"),
            None => put!(out, "index server: not running here (`serve` starts one)"),
        }
        match self.client().await {
            Ok(client) => {
                let rtt = client.ping().await?;
                put!(
                    out,
                    "index: {} (rtt {:.2} ms), key {}",
                    client.addr(),
                    rtt.as_secs_f64() * 1e3,
                    client.fingerprint()
                );
            }
            Err(e) => put!(out, "index: unreachable ({e})"),
        }
        match self.services.sharing_summary() {
            Some(summary) => put!(out, "sharing: {summary}"),
            None => put!(out, "sharing: nothing (`register` shares a folder)"),
        }
        if let Some(mapping) = self.services.mapping_summary() {
            put!(out, "port mapping: {mapping}");
        }
        put!(out, "downloads: {}", self.config.peer.downloads.display());
        out.push_str(&self.activity());
        match self.identity() {
            Ok(identity) => put!(out, "identity: {}", identity.fingerprint()),
            Err(e) => put!(out, "identity: unusable ({e})"),
        }
        // For --json: the home as its record, the other lines as messages until status
        // has a record of its own.
        for line in out.lines() {
            self.emit(Record::Message { text: line.into() });
        }
        if let Some(home) = self.home() {
            out.push_str(&render::home(&home));
            self.emit(home);
        }
        Ok(out)
    }

    /// Where this napster lives; `None` for a configuration made in code.
    fn home(&self) -> Option<Record> {
        let (home, chosen_by) = self.config.origin.home.clone()?;
        let shown = |p: &std::path::Path| p.display().to_string();
        Some(Record::Home {
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

    use crate::shell::{Flow, commands};

    fn run(shell: &mut Shell, line: &str) -> Result<String> {
        let command = commands::parse(line)?.expect("a command");
        let reply = smol::block_on(shell.execute(command, Cancel::default()))?;
        assert_eq!(reply.flow, Flow::Continue);
        Ok(reply.text)
    }

    /// Handlers return what they print: serve, share, search, get, limit and status are
    /// read here without a binary or a terminal.
    #[test]
    fn handlers_return_their_text() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut shell, services) = crate::shell::test_shell(tmp.path());
        let shared = tmp.path().join("shared");

        let served = run(&mut shell, "serve 0").unwrap();
        assert!(
            served.starts_with("index server listening on 127.0.0.1:"),
            "{served}"
        );
        let registered = run(&mut shell, &format!("register {} 0", shared.display())).unwrap();
        let key = crate::identity::Identity::load(&tmp.path().join("peer-key"), "key").unwrap();
        let id = crate::index::store::peer_id_of(&key.fingerprint());
        assert!(
            registered.contains(&format!("registered as peer {id}")),
            "{registered}"
        );
        let found = run(&mut shell, "search song").unwrap();
        assert!(
            found.contains("song.ogg") && found.ends_with("1 file on 1 peer\n"),
            "{found}"
        );
        assert_eq!(
            run(&mut shell, "search nothing").unwrap(),
            "no file matches \"nothing\"\n"
        );
        let saved = run(&mut shell, "get song.ogg").unwrap();
        assert!(saved.starts_with("saved "), "{saved}");
        assert_eq!(
            std::fs::read(tmp.path().join("downloads/song.ogg")).unwrap(),
            b"la la la"
        );
        assert_eq!(
            run(&mut shell, "limit up 2MiB/s").unwrap(),
            "upload limit: 2.0 MiB/s; download limit: unlimited\n"
        );
        let status = run(&mut shell, "status").unwrap();
        assert!(
            status.contains("sharing: ") && status.contains(&format!("as peer {id}")),
            "{status}"
        );
        for line in [
            "limits: upload 2.0 MiB/s, download unlimited",
            "transfers: 0 running, 0 queued, 0 paused",
            "uploads: 0 sending, 0 waiting for a slot",
        ] {
            assert!(status.contains(line), "{line}: {status}");
        }
        let missing = run(&mut shell, "get nope.txt").unwrap_err().to_string();
        assert!(missing.contains("no peer shares \"nope.txt\""), "{missing}");
        smol::block_on(services.shutdown());
    }
}
