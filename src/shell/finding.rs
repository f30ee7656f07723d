//! The commands that find files: `search`, `files`, and the lookup of a name that
//! `get` starts with.

use super::output::{FileRow, Record};
use super::{Shell, commands, render};
use crate::error::{Error, Result};
use crate::protocol::{Hit, PeerRef, SearchQuery};

impl Shell {
    pub(super) async fn search(&mut self, mut args: commands::SearchArgs) -> Result<String> {
        let mut out = String::new();
        if args.search.limit.is_none() {
            args.search.limit = Some(self.config.shell.results);
        }
        let (hits, truncated) = self.client().await?.find(&args.search).await?;
        self.rows = true;
        self.saw(&hits);
        if hits.is_empty() {
            let what = render::query(&args.search.pattern, &args.filters);
            self.nothing_matched = true;
            put!(out, "no file matches {what}");
            return Ok(out);
        }
        let peers: std::collections::BTreeSet<u64> = hits.iter().map(|h| h.peer_id).collect();
        if args.collapse {
            self.records.extend(super::output::collapsed(&hits));
            put!(out, "{}", render::collapsed(&hits));
        } else {
            let rtts = if args.rtt {
                self.ping_all(&hits).await
            } else {
                Default::default()
            };
            for hit in &hits {
                let mut row = FileRow::of(hit);
                if args.rtt {
                    row.rtt_ms = Some(rtts.get(&hit.peer_id).and_then(|r| r.1));
                }
                self.emit(Record::Hit(row));
            }
            let rtts = rtts.into_iter().map(|(id, (text, _))| (id, text)).collect();
            put!(out, "{}", render::hits(&hits, args.rtt.then_some(&rtts)));
        }
        put!(
            out,
            "{} on {}",
            render::count(hits.len() as u64, "file"),
            render::count(peers.len() as u64, "peer")
        );
        if truncated {
            let shown = hits.len();
            self.emit(Record::Truncated {
                shown: shown as u64,
            });
            // Fewer rows than asked for: the index's own cap (whatever this napster.toml
            // says), so asking for more would not help.
            let asked = args.search.limit.map_or(usize::MAX, |n| n as usize);
            if shown < asked {
                put!(
                    out,
                    "(more match: showing the first {shown}, the most this index returns for \
                     one search; narrow the search)"
                );
            } else {
                put!(
                    out,
                    "(more match: showing the first {shown}; narrow the search, or ask for more \
                     with -n N)"
                );
            }
        }
        Ok(out)
    }

    pub(super) async fn files(&mut self, peer: PeerRef) -> Result<String> {
        let mut out = String::new();
        // As many as the index gives: it caps one answer at its own max_results.
        let limit = Some(u32::MAX);
        let client = self.client().await?;
        let peer = match peer {
            PeerRef::Id(id) => id,
            word => client.find_peer(&word).await?.peer_id,
        };
        let (hits, truncated) = client.browse(peer, limit).await?;
        self.rows = true;
        self.saw(&hits);
        self.records
            .extend(hits.iter().map(|h| Record::File(FileRow::of(h))));
        if hits.is_empty() {
            self.nothing_matched = true;
            put!(out, "peer {peer} shares no files");
            return Ok(out);
        }
        put!(out, "{}", render::hits(&hits, None));
        let mut total = (
            hits.len() as u64,
            hits.iter().map(|h| h.file.size).sum::<u64>(),
        );
        if truncated {
            // The true totals are the peer's, from the index's list of peers.
            let listed = self.client().await?.peers().await?;
            if let Some(p) = listed.iter().find(|p| p.peer_id == peer) {
                total = (p.files, p.bytes);
            }
        }
        put!(
            out,
            "peer {peer} shares {} ({}){}",
            render::count(total.0, "file"),
            render::size(total.1),
            if truncated {
                format!(
                    "; showing the first {}, the most this index lists at once (`search` \
                     with a pattern and this Peer ID's files narrows them)",
                    hits.len()
                )
            } else {
                String::new()
            }
        );
        Ok(out)
    }

    /// The peers sharing `name`; a bare name nobody shares at the top of a folder is
    /// looked for in subfolders too (`deep.txt` finds `sub2/deep.txt` when that is the
    /// only such name). Returns the name found with its hits.
    pub(super) async fn lookup_anywhere(&mut self, name: &str) -> Result<(String, Vec<Hit>)> {
        let client = self.client().await?;
        let hits = client.lookup(name).await?;
        if !hits.is_empty() || name.contains('/') || name.contains(['*', '?']) {
            return Ok((name.to_owned(), hits));
        }
        let query = SearchQuery {
            limit: Some(self.config.index.max_results as u32),
            ..SearchQuery::pattern(name)
        };
        let Ok((found, _)) = self.client().await?.find(&query).await else {
            return Ok((name.to_owned(), hits));
        };
        let suffix = format!("/{name}");
        let mut names: Vec<&str> = found
            .iter()
            .map(|h| h.file.name.as_str())
            .filter(|n| n.ends_with(&suffix))
            .collect();
        names.sort_unstable();
        names.dedup();
        match names.as_slice() {
            [] => Ok((name.to_owned(), hits)),
            [one] => {
                let one = (*one).to_owned();
                let hits = self.client().await?.lookup(&one).await?;
                Ok((one, hits))
            }
            several => Err(Error::msg(format!(
                "no peer shares {name:?} at the top of a folder, and several share one in a \
                 subfolder: {}; get one of those by its whole name",
                several
                    .iter()
                    .take(8)
                    .map(|n| render::shown(n))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}
