//! The commands that find files: `search`, `files`, and the lookup of a name that
//! `get` starts with.

use super::output::{FileRow, Record};
use super::{Shell, commands, render};
use crate::error::{Error, Result};
use crate::protocol::{Hit, PeerRef, SearchQuery, Total};

/// What `more` asks for next.
#[derive(Debug, Clone)]
pub(super) enum NextPage {
    /// The last search, from the row after its last one.
    Search(commands::SearchArgs),
    /// The last listing of a peer's files, from the row after its last one.
    Files(commands::FilesArgs),
}

/// `n` with its thousands apart: "5 321".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// The footer of a page: "rows 1 001–2 000 of 5 321; `more` shows the next".
fn page_footer(first: u64, shown: u64, total: Total, more: bool) -> String {
    let of = if total.more {
        format!("more than {}", grouped(total.count))
    } else {
        grouped(total.count)
    };
    let last = first + shown.saturating_sub(1);
    let next = if more { "; `more` shows the next" } else { "" };
    format!("rows {}–{} of {of}{next}", grouped(first), grouped(last))
}

impl Shell {
    pub(super) async fn more(&mut self) -> Result<String> {
        match self.next_page.take() {
            Some(NextPage::Search(args)) => self.search(args).await,
            Some(NextPage::Files(args)) => self.files(args).await,
            None => Err(Error::msg(
                "nothing more to show: `more` continues the last `search` or `files` whose \
                 footer said more rows follow",
            )),
        }
    }

    /// Pages of `query` from its offset until `want` rows or the end: an index answers
    /// at most its [index] max_results at once. Returns the rows, whether more follow,
    /// and the total.
    async fn pages(
        &mut self,
        want: usize,
        once: bool,
        mut ask: impl FnMut(u64) -> Ask,
    ) -> Result<(Vec<Hit>, bool, Option<Total>)> {
        let mut hits = Vec::new();
        loop {
            let limit = u32::try_from(want - hits.len()).unwrap_or(u32::MAX);
            let client = self.client().await?;
            let found = match ask(hits.len() as u64) {
                Ask::Search(mut query) => {
                    query.limit = Some(limit);
                    client.find_page(&query).await?
                }
                Ask::Browse(peer, offset) => client.browse_page(peer, Some(limit), offset).await?,
            };
            let got = found.hits.len();
            hits.extend(found.hits);
            // An index that does not count does not page either.
            if once || !found.truncated || got == 0 || hits.len() >= want || found.total.is_none() {
                return Ok((hits, found.truncated, found.total));
            }
        }
    }

    pub(super) async fn search(&mut self, mut args: commands::SearchArgs) -> Result<String> {
        let mut out = String::new();
        if args.search.limit.is_none() {
            args.search.limit = Some(self.config.shell.results);
        }
        let want = args.search.limit.map_or(usize::MAX, |n| n as usize);
        let start = args.search.offset.unwrap_or(0);
        let base = args.search.clone();
        let (hits, truncated, total) = self
            .pages(want, false, |done| {
                let offset = start + done;
                Ask::Search(SearchQuery {
                    offset: (offset > 0).then_some(offset),
                    ..base.clone()
                })
            })
            .await?;
        self.rows = true;
        self.saw(&hits);
        self.next_page = truncated.then(|| {
            let mut next = args.clone();
            next.search.offset = Some(start + hits.len() as u64);
            NextPage::Search(next)
        });
        if hits.is_empty() {
            let what = render::query(&args.search.pattern, &args.filters);
            self.nothing_matched = true;
            if start > 0 {
                put!(out, "no file matches {what} past row {}", grouped(start));
            } else {
                put!(out, "no file matches {what}");
            }
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
        self.footer(&mut out, start, hits.len(), truncated, total);
        Ok(out)
    }

    /// The records and the line after a page's rows: where they sit in the total.
    fn footer(
        &mut self,
        out: &mut String,
        start: u64,
        shown: usize,
        truncated: bool,
        total: Option<Total>,
    ) {
        let shown = shown as u64;
        if truncated {
            self.emit(Record::Truncated { shown });
        }
        match total {
            // A page of more: where it sits. (Everything at once needs no total.)
            Some(total) if truncated || start > 0 => {
                self.emit(Record::Total {
                    first: start + 1,
                    shown,
                    total: total.count,
                    more_than: total.more,
                });
                put!(out, "{}", page_footer(start + 1, shown, total, truncated));
            }
            Some(_) => {}
            None if truncated => {
                put!(
                    out,
                    "(more match: showing the first {shown}, the most this index returns at \
                     once; narrow the search)"
                );
            }
            None => {}
        }
    }

    pub(super) async fn files(&mut self, args: commands::FilesArgs) -> Result<String> {
        let mut out = String::new();
        let client = self.client().await?;
        let peer = match &args.peer {
            PeerRef::Id(id) => *id,
            word => client.find_peer(word).await?.peer_id,
        };
        // Without -n, one answer of the index: as many as it gives at once.
        let want = args.rows.map_or(usize::MAX, |n| n as usize);
        let start = args.offset;
        let one_page = args.rows.is_none();
        let (hits, truncated, total) = self
            .pages(want, one_page, |done| {
                let offset = start + done;
                Ask::Browse(peer, (offset > 0).then_some(offset))
            })
            .await?;
        self.rows = true;
        self.saw(&hits);
        self.next_page = truncated.then(|| {
            NextPage::Files(commands::FilesArgs {
                peer: PeerRef::Id(peer),
                rows: args.rows,
                offset: start + hits.len() as u64,
            })
        });
        self.records
            .extend(hits.iter().map(|h| Record::File(FileRow::of(h))));
        if hits.is_empty() {
            self.nothing_matched = true;
            if start > 0 {
                put!(
                    out,
                    "peer {peer} shares no files past row {}",
                    grouped(start)
                );
            } else {
                put!(out, "peer {peer} shares no files");
            }
            return Ok(out);
        }
        put!(out, "{}", render::hits(&hits, None));
        let mut sum = (
            hits.len() as u64,
            hits.iter().map(|h| h.file.size).sum::<u64>(),
        );
        if truncated || start > 0 {
            // The true totals are the peer's, from the index's list of peers.
            let listed = self.client().await?.peers().await?;
            if let Some(p) = listed.iter().find(|p| p.peer_id == peer) {
                sum = (p.files, p.bytes);
            }
        }
        put!(
            out,
            "peer {peer} shares {} ({})",
            render::count(sum.0, "file"),
            render::size(sum.1),
        );
        self.footer(&mut out, start, hits.len(), truncated, total);
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

/// One request of a listing.
enum Ask {
    /// A search page.
    Search(SearchQuery),
    /// A page of a peer's files from an offset.
    Browse(u64, Option<u64>),
}
