//! The read side of the in-memory store: a search over the names arena (exact names
//! through the hash chains, substrings with `memmem` narrowed by a trigram filter per
//! [`GROUP`] names, wildcards), filtered by hash prefix, size and peer.

use memchr::memmem;
use wildmatch::WildMatch;

use super::trigram::{BLOOM_WORDS, Trigrams};
use super::{Inner, NONE, name_hash, name_of};
use crate::index::store::{NameMatch, Page, Query};
use crate::protocol::{FileEntry, Hit, Total};

/// Names per trigram filter.
pub(super) const GROUP: usize = 64;

impl Inner {
    pub(super) fn hit(&self, slot: u32) -> Option<Hit> {
        let rec = &self.files[slot as usize];
        let peer_id = u64::from(rec.peer);
        let peer = self.peers.get(&peer_id)?;
        Some(Hit {
            peer_id,
            fingerprint: peer.fingerprint,
            nickname: self.nicknames.get(&peer_id).cloned(),
            addr: peer.addr,
            reachable: peer.reachable,
            local: None,
            file: FileEntry {
                name: name_of(&self.names, rec).to_owned(),
                size: rec.size,
                sha256: hex::encode(rec.sha256),
                chunks: hex::encode(rec.chunks),
                tags: self.tags.get(&slot).map(|t| t.tags.clone()),
            },
            shared_at: i64::from(rec.shared_at),
        })
    }

    /// Whether the live record `slot` meets the criteria other than the name.
    fn passes(&self, slot: u32, query: &Query) -> bool {
        let rec = &self.files[slot as usize];
        if rec.at == NONE {
            return false;
        }
        if query.peer.is_some_and(|p| p != u64::from(rec.peer)) {
            return false;
        }
        if query.min_size.is_some_and(|min| rec.size < min)
            || query.max_size.is_some_and(|max| rec.size > max)
        {
            return false;
        }
        if let Some(wanted) = &query.tags {
            match self.tags.get(&slot) {
                Some(tags) if wanted.matches(&tags.tags, tags.lower()) => {}
                _ => return false,
            }
        }
        match &query.sha256_prefix {
            Some(prefix) => hex::encode(rec.sha256).starts_with(prefix.as_str()),
            None => true,
        }
    }

    /// The lowercase name of a live record, from the arena.
    pub(super) fn lower(&self, slot: u32) -> &[u8] {
        let rec = &self.files[slot as usize];
        let at = rec.at as usize;
        &self.arena[at..at
            + self.arena[at..]
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(0)]
    }

    /// Records whose lowercase name contains `needle`, in arena order, each once.
    /// Records whose lowercase name contains `needle`, in arena order, each once.
    ///
    /// Names are grouped [`GROUP`] at a time, each group with a Bloom filter of its
    /// trigrams: only groups that may hold every trigram of the needle are scanned.
    fn containing<'a>(&'a self, needle: &'a [u8]) -> impl Iterator<Item = u32> + 'a {
        let probe = Trigrams::of(needle);
        let groups = self.blooms.len();
        (0..groups)
            .filter(move |&g| probe.as_ref().is_none_or(|p| p.within(&self.blooms[g])))
            .flat_map(move |g| {
                let from = self.starts[g * GROUP].0 as usize;
                let to = self
                    .starts
                    .get((g + 1) * GROUP)
                    .map_or(self.arena.len(), |&(at, _)| at as usize);
                let mut last = NONE;
                memmem::find_iter(&self.arena[from..to], needle).filter_map(move |pos| {
                    let pos = from + pos;
                    let i = self.starts.partition_point(|&(at, _)| at as usize <= pos) - 1;
                    let (at, slot) = self.starts[i];
                    if self.files[slot as usize].at != at || slot == last {
                        return None;
                    }
                    last = slot;
                    Some(slot)
                })
            })
    }

    /// Record a new arena entry's trigrams in its group's filter.
    pub(super) fn index_trigrams(&mut self, lower: &[u8]) {
        let group = (self.starts.len() - 1) / GROUP;
        if group == self.blooms.len() {
            self.blooms.push([0; BLOOM_WORDS]);
        }
        Trigrams::add(&mut self.blooms[group], lower);
    }

    /// The page of `query` from its offset, at most `limit` hits, counting the matches
    /// up to `bound` (one pass: counting goes on after the page is full).
    #[allow(
        clippy::too_many_lines,
        reason = "the read path of one page: filter, order and cut in one pass over the arena"
    )]
    pub(super) fn page(&self, query: &Query, limit: usize, bound: u64) -> Page {
        let mut hits = Vec::new();
        let mut seen = 0u64;
        let mut truncated = false;
        let mut take = |slot: u32| -> bool {
            if !self.passes(slot, query) {
                return true;
            }
            seen += 1;
            if seen <= query.offset {
                return true;
            }
            if hits.len() < limit {
                hits.extend(self.hit(slot));
                return true;
            }
            truncated = true;
            seen <= bound
        };
        let complete = match &query.name {
            NameMatch::Exact(name) => {
                let mut at = self.by_name.get(&name_hash(name)).copied().unwrap_or(NONE);
                let mut chain = Vec::new();
                while at != NONE {
                    if name_of(&self.names, &self.files[at as usize]) == name.as_str() {
                        chain.push(at);
                    }
                    at = self.files[at as usize].next;
                }
                // Chains grow at the head: oldest registration first.
                chain.into_iter().rev().all(&mut take)
            }
            NameMatch::Substring(needle) => self.containing(needle.as_bytes()).all(&mut take),
            NameMatch::Wildcard(pattern) => {
                let wild = WildMatch::new(pattern);
                let literal = pattern
                    .split(['*', '?'])
                    .max_by_key(|s| s.len())
                    .unwrap_or_default();
                let matches = |slot: u32| {
                    std::str::from_utf8(self.lower(slot)).is_ok_and(|name| wild.matches(name))
                };
                if literal.is_empty() {
                    self.starts
                        .iter()
                        .filter(|&&(at, slot)| self.files[slot as usize].at == at)
                        .map(|&(_, slot)| slot)
                        .filter(|&slot| matches(slot))
                        .all(&mut take)
                } else {
                    self.containing(literal.as_bytes())
                        .filter(|&slot| matches(slot))
                        .all(&mut take)
                }
            }
            NameMatch::Any => match query.peer {
                // Only files with tags can meet tag criteria: scan those alone.
                None if query.tags.is_some() => self.tags.keys().copied().all(&mut take),
                Some(peer) => {
                    let mut files: Vec<u32> = self
                        .peers
                        .get(&peer)
                        .map(|p| p.files.iter().copied().collect())
                        .unwrap_or_default();
                    files.sort_by_key(|&slot| name_of(&self.names, &self.files[slot as usize]));
                    files.into_iter().all(&mut take)
                }
                None => self
                    .starts
                    .iter()
                    .filter(|&&(at, slot)| self.files[slot as usize].at == at)
                    .map(|&(_, slot)| slot)
                    .all(&mut take),
            },
        };
        let total = if complete {
            Total {
                count: seen,
                more: false,
            }
        } else {
            Total {
                count: seen - 1,
                more: true,
            }
        };
        Page {
            hits,
            truncated,
            total,
        }
    }
}
