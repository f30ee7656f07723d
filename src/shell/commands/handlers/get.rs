//! `get`: what its words name (file names, wildcards, `-r` folders, `sha256:` prefixes,
//! links), found on the index as files with their sources, then fetched one after the
//! other now, or added to the download queue (`-b`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::queue;
use crate::download::queue::file::{Queued, Stage};
use crate::download::{self, Cancel};
use crate::error::{Error, Result};
use crate::protocol::{self, FileEntry, Hit, PeerRef, SearchQuery};
use crate::shell::Shell;
use crate::shell::commands::GetArgs;
use crate::shell::commands::link;
use crate::shell::commands::outcome::{Fetched, Got, Outcome};
use crate::shell::present::table::{count, shown};

/// Most files one word of `get` may name (a wildcard, a folder), and most peers asked
/// for when looking up contents: the index's own cap on one answer.
const MOST_FILES: u32 = 1000;

/// One file to fetch: its contents and the name it is saved as, the peers sharing it,
/// and its folder below the downloads folder.
pub(in crate::shell) struct Wanted {
    pub file: FileEntry,
    pub sources: Vec<Hit>,
    pub folder: PathBuf,
}

/// A file one word of `get` names, or why it cannot be fetched.
type Found = std::result::Result<Wanted, String>;

impl Shell {
    pub(in crate::shell) async fn get_command(
        &mut self,
        args: GetArgs,
        cancel: Cancel,
    ) -> Result<Outcome> {
        // The peer named (by Peer ID, nickname or fingerprint prefix), once, as a Peer ID.
        let peer = match &args.peer {
            None => None,
            Some(PeerRef::Id(id)) => Some(*id),
            Some(word) => Some(self.client().await?.find_peer(word).await?.peer_id),
        };
        let mut wanted = Vec::new();
        let mut got = Got::default();
        for word in &args.names {
            match self
                .wanted(word, (peer, args.peer.as_ref()), args.recursive)
                .await
            {
                Ok(found) => {
                    for one in found {
                        match one {
                            Ok(w) => wanted.push(w),
                            Err(problem) => got.problems.push(problem),
                        }
                    }
                }
                Err(e) if args.names.len() == 1 => return Err(e),
                Err(e) => got.problems.push(format!("{word}: {e}")),
            }
        }
        // One file asked for: its error is the command's, as it is.
        let single = wanted.len() == 1 && got.problems.is_empty();
        for w in wanted {
            let name = w.file.name.clone();
            let done = if args.background {
                self.enqueue(w, peer)
            } else {
                match download::make_folder(&self.config.peer.downloads, &w.folder) {
                    Ok(dir) => self
                        .fetch_now(w.file, w.sources, dir, cancel.clone())
                        .await
                        .map(Fetched::Saved),
                    Err(e) => Err(e),
                }
            };
            match done {
                Ok(fetched) => got.files.push(fetched),
                Err(e) if single || matches!(e, Error::Cancelled) => return Err(e),
                Err(e) => got.problems.push(format!("{}: {e}", shown(&name))),
            }
        }
        // Some arrived: say so, and which did not; none did: the command failed.
        if got.files.is_empty() && !got.problems.is_empty() {
            return Err(nothing_fetched(&args.names, &got.problems));
        }
        Ok(Outcome::Got(got))
    }

    /// Add one file to the download queue.
    fn enqueue(&mut self, w: Wanted, peer: Option<u64>) -> Result<Fetched> {
        let transfers = self.open_queue()?;
        let index = self.index_addrs()?;
        let name = w.folder.join(&w.file.name).display().to_string();
        let q = Queued {
            number: 0,
            file: w.file,
            folder: w.folder,
            peer,
            index,
            stage: Stage::Queued,
        };
        let transfer = transfers.add(q, w.sources)?;
        Ok(Fetched::Queued { transfer, name })
    }

    /// The files one word of `get` names.
    async fn wanted(
        &mut self,
        word: &str,
        (peer, named): (Option<u64>, Option<&PeerRef>),
        recursive: bool,
    ) -> Result<Vec<Found>> {
        if queue::is_content_word(word) {
            return self.by_content(word, peer).await.map(|w| vec![Ok(w)]);
        }
        if recursive {
            return self.folder(word, peer).await;
        }
        if word.contains(['*', '?']) {
            let query = SearchQuery {
                limit: Some(MOST_FILES),
                ..SearchQuery::pattern(word)
            };
            let (hits, truncated) = self.client().await?.find(&query).await?;
            return by_name(word, (hits, truncated), peer, |_| true, false);
        }
        let (name, hits) = self.lookup_anywhere(word).await?;
        // The peer as the user named it, for messages.
        let sources = download::sources(&name, named, hits)?;
        Ok(vec![Ok(Wanted {
            file: sources[0].file.clone(),
            sources,
            folder: PathBuf::new(),
        })])
    }

    /// `get sha256:HEX` or `get <link>`: those bytes from every peer sharing them.
    async fn by_content(&mut self, word: &str, peer: Option<u64>) -> Result<Wanted> {
        let (prefix, named) = if link::is_link(word) {
            let link = link::parse(word)?;
            (link.sha256.clone(), Some(link))
        } else {
            let hex = word[7..].to_lowercase();
            if let Some(problem) = protocol::sha256_prefix_problem(&hex) {
                return Err(Error::Usage(problem.into()));
            }
            (hex, None)
        };
        let query = SearchQuery {
            sha256: Some(prefix.clone()),
            limit: Some(MOST_FILES),
            ..SearchQuery::default()
        };
        let (hits, _) = self.client().await?.find(&query).await?;
        let hits: Vec<Hit> = hits
            .into_iter()
            .filter(|h| h.file.sha256.starts_with(&prefix))
            .filter(|h| peer.is_none_or(|p| p == h.peer_id))
            .filter(|h| {
                named
                    .as_ref()
                    .and_then(|l| l.size)
                    .is_none_or(|s| s == h.file.size)
            })
            .collect();
        let contents: BTreeMap<&str, &str> = hits
            .iter()
            .map(|h| (h.file.sha256.as_str(), h.file.name.as_str()))
            .collect();
        if contents.len() > 1 {
            let listed: Vec<String> = contents
                .iter()
                .map(|(sha, name)| format!("{} ({})", &sha[..16], shown(name)))
                .collect();
            return Err(Error::Usage(format!(
                "sha256:{prefix} matches {} different files: {}; give more hex digits",
                contents.len(),
                listed.join(", ")
            )));
        }
        let Some(first) = hits.first() else {
            return Err(Error::NotFound(format!(
                "no peer{} shares a file with sha256 {prefix}{}",
                peer.map(|p| format!(" {p}")).unwrap_or_else(|| "".into()),
                if named.as_ref().and_then(|l| l.size).is_some() {
                    " and the link's size"
                } else {
                    ""
                }
            )));
        };
        let mut file = first.file.clone();
        if let Some(link) = named {
            file.name = link.name;
        }
        file.name = download::safe_file_name(&file.name)?;
        Ok(Wanted {
            file,
            sources: hits,
            folder: PathBuf::new(),
        })
    }

    /// `get -r folder/`: every file under it, keeping the relative paths.
    async fn folder(&mut self, word: &str, peer: Option<u64>) -> Result<Vec<Found>> {
        let folder = word.trim_end_matches(['/', '\\']);
        if folder.is_empty() {
            return Err(Error::Usage(
                "get -r needs a folder name, like `get -r live/`".into(),
            ));
        }
        let prefix = format!("{folder}/");
        let (hits, truncated) = match peer {
            Some(peer) => self.client().await?.browse(peer, Some(MOST_FILES)).await?,
            None => {
                let query = SearchQuery {
                    limit: Some(MOST_FILES),
                    ..SearchQuery::pattern(&prefix)
                };
                self.client().await?.find(&query).await?
            }
        };
        let under = |name: &str| name.starts_with(&prefix) || name.contains(&format!("/{prefix}"));
        by_name(word, (hits, truncated), peer, under, true)
    }
}

/// The error of a `get` that fetched none of its files: which, and why; for words that
/// look like one name with spaces (`get my song.ogg`), how to quote it.
fn nothing_fetched(names: &[String], problems: &[String]) -> Error {
    let failed = format!(
        "{} not fetched:\n  {}",
        count(problems.len() as u64, "file"),
        problems.join("\n  ")
    );
    let words: Vec<&str> = names.iter().map(String::as_str).collect();
    if words.len() > 1 && !words.iter().any(|w| w.contains(['/', '*', '?', ':'])) {
        let joined = words.join(" ");
        let quoted = shlex::try_quote(&joined).map_or(joined.clone(), |q| q.into_owned());
        return Error::msg(format!(
            "{failed}\na name with spaces goes in quotes: get {quoted}"
        ));
    }
    Error::msg(failed)
}

/// One [`Wanted`] per distinct name among `hits` that `keep` accepts, each from the
/// peers sharing it (only `peer` when given), in its folder when `folders`; or why
/// that one cannot be fetched (and that the answer was cut short, when `truncated`).
fn by_name(
    word: &str,
    (hits, truncated): (Vec<Hit>, bool),
    peer: Option<u64>,
    keep: impl Fn(&str) -> bool,
    folders: bool,
) -> Result<Vec<Found>> {
    let mut names: BTreeMap<String, Vec<Hit>> = BTreeMap::new();
    for hit in hits.into_iter().filter(|h| keep(&h.file.name)) {
        names.entry(hit.file.name.clone()).or_default().push(hit);
    }
    if names.is_empty() {
        return Err(Error::NotFound(format!(
            "no peer{} shares a file matching {word:?}; `search` finds names that match part of it",
            peer.map(|p| format!(" {p}")).unwrap_or_default()
        )));
    }
    let mut found = Vec::new();
    if truncated {
        found.push(Err(format!(
            "{word}: more files match than one answer of the index holds; only the first \
             {} were taken: narrow it and get the rest",
            names.len()
        )));
    }
    for (name, hits) in names {
        let one = || -> Result<Wanted> {
            let sources = download::sources(&name, peer.map(PeerRef::Id).as_ref(), hits)?;
            let folder = if folders {
                download::safe_folder(&name)?
            } else {
                PathBuf::new()
            };
            let mut file = sources[0].file.clone();
            file.name = download::safe_file_name(&name)?;
            Ok(Wanted {
                file,
                sources,
                folder,
            })
        };
        found.push(one().map_err(|e| format!("{}: {e}", shown(&name))));
    }
    Ok(found)
}
