//! The commands that find files: `search`, `files`, `more`, and the lookup of a name
//! that `get` starts with.

use crate::error::{Error, Result};
use crate::protocol::{Hit, PeerRef, SearchQuery, Total};
use crate::shell::commands::outcome::{Browsed, Found, Outcome, Page};
use crate::shell::present::table::shown;
use crate::shell::{Shell, commands};

/// What `more` asks for next.
#[derive(Debug, Clone)]
pub(in crate::shell) enum NextPage {
    /// The last search, from the row after its last one.
    Search(commands::SearchArgs),
    /// The last listing of a peer's files, from the row after its last one.
    Files(commands::FilesArgs),
}

impl Shell {
    pub(in crate::shell) async fn more(&mut self) -> Result<Outcome> {
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

    pub(in crate::shell) async fn search(
        &mut self,
        mut args: commands::SearchArgs,
    ) -> Result<Outcome> {
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
        self.saw(&hits);
        self.next_page = truncated.then(|| {
            let mut next = args.clone();
            next.search.offset = Some(start + hits.len() as u64);
            NextPage::Search(next)
        });
        let rtts = if args.rtt && !args.collapse && !hits.is_empty() {
            Some(self.ping_all(&hits).await)
        } else {
            None
        };
        Ok(Outcome::Found(Found {
            pattern: args.search.pattern,
            filters: args.filters,
            hits,
            rtts,
            collapse: args.collapse,
            page: Page {
                start,
                truncated,
                total,
            },
        }))
    }

    pub(in crate::shell) async fn files(&mut self, args: commands::FilesArgs) -> Result<Outcome> {
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
        self.saw(&hits);
        self.next_page = truncated.then(|| {
            NextPage::Files(commands::FilesArgs {
                peer: PeerRef::Id(peer),
                rows: args.rows,
                offset: start + hits.len() as u64,
            })
        });
        let mut sum = (
            hits.len() as u64,
            hits.iter().map(|h| h.file.size).sum::<u64>(),
        );
        if !hits.is_empty() && (truncated || start > 0) {
            // The true totals are the peer's, from the index's list of peers.
            let listed = self.client().await?.peers().await?;
            if let Some(p) = listed.iter().find(|p| p.peer_id == peer) {
                sum = (p.files, p.bytes);
            }
        }
        Ok(Outcome::Browsed(Browsed {
            peer_id: peer,
            hits,
            files: sum.0,
            bytes: sum.1,
            page: Page {
                start,
                truncated,
                total,
            },
        }))
    }

    /// The peers sharing `name`; a bare name nobody shares at the top of a folder is
    /// looked for in subfolders too (`deep.txt` finds `sub2/deep.txt` when that is the
    /// only such name). Returns the name found with its hits.
    pub(in crate::shell) async fn lookup_anywhere(
        &mut self,
        name: &str,
    ) -> Result<(String, Vec<Hit>)> {
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
                    .map(|n| shown(n))
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
