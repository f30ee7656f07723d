//! The in-memory store is built for a million files on a small machine: file records are
//! fixed-size (hashes as bytes, not hex), exact names are found through a hash table with
//! chains threaded through the records, and substring search runs `memmem` over one
//! contiguous arena of lowercase names rather than over a million strings.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

mod search;
mod write;

mod trigram;

use super::{Page, Query, Registration, Store, StoreError, Usage};
use crate::protocol::Fingerprint;
use crate::protocol::{FileEntry, Hit, PeerInfo, nickname_skeleton};
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use trigram::Bloom;

/// What a store operation returns.
type Result<T> = std::result::Result<T, StoreError>;

/// How many departed peers' tokens are remembered so that they get their ID back.
const REMEMBERED_TOKENS: usize = 100_000;

/// Marks the end of a chain, or a record not in the arena.
const NONE: u32 = u32::MAX;

/// One shared file, in a fixed-size record: its name lives in the names arena.
#[derive(Debug)]
struct FileRec {
    /// The Peer ID: at most [`super::ID_SPACE`], so 32 bits hold it, which keeps the
    /// record at 96 bytes with `shared_at` beside it.
    peer: u32,
    /// When the index first saw this name with these bytes from this peer, in seconds
    /// since the Unix epoch (32 bits last until 2106).
    shared_at: u32,
    /// Next record with the same name hash.
    next: u32,
    /// Where its lowercase name starts in the arena; `NONE` when the slot is free.
    at: u32,
    /// Where its name, as given, starts in the names arena, and its length.
    name_at: u32,
    name_len: u16,
    size: u64,
    sha256: [u8; 32],
    chunks: [u8; 32],
}

#[derive(Debug)]
struct PeerRec {
    token: String,
    fingerprint: Fingerprint,
    session: u64,
    addr: SocketAddr,
    reachable: bool,
    shared_at: i64,
    last_seen: Instant,
    files: HashSet<u32>,
    bytes: u64,
    /// Bytes of its files' names.
    name_bytes: u64,
}

#[derive(Debug, Default)]
struct Inner {
    peers: BTreeMap<u64, PeerRec>,
    tokens: HashMap<String, u64>,
    /// Peer ID → the token holding it (live or remembered), the reverse of `tokens`.
    owners: HashMap<u64, String>,
    departed: VecDeque<String>,
    /// Peer ID → its nickname as given, as long as the ID is remembered.
    nicknames: HashMap<u64, String>,
    /// Nickname skeleton (case and look-alikes folded) → the Peer ID holding it.
    nickname_owners: HashMap<String, u64>,
    files: Vec<FileRec>,
    free: Vec<u32>,
    /// Name hash → first record with that hash.
    by_name: HashMap<u64, u32>,
    /// Lowercase names, each followed by `\n` (which names cannot contain).
    arena: Vec<u8>,
    /// Names as given, back to back.
    names: Vec<u8>,
    /// (arena offset, record), in offset order.
    starts: Vec<(u32, u32)>,
    /// Trigram filters of `starts`, [`GROUP`] entries each.
    blooms: Vec<Bloom>,
    /// Arena bytes of records since removed.
    dead_bytes: usize,
    /// Bytes of the live records' names, as given.
    name_bytes: u64,
}

/// A record's name as given.
fn name_of<'a>(names: &'a [u8], rec: &FileRec) -> &'a str {
    let at = rec.name_at as usize;
    std::str::from_utf8(&names[at..at + usize::from(rec.name_len)]).unwrap_or_default()
}

/// The index in memory: the default store. Searches share a read lock, so they run
/// on every core at once.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: RwLock<Inner>,
}

/// Now, in the seconds since the Unix epoch a record keeps.
fn now_secs() -> u32 {
    u32::try_from(chrono::Utc::now().timestamp()).unwrap_or(u32::MAX)
}

fn name_hash(name: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    name.hash(&mut hasher);
    hasher.finish()
}

fn from_hex(text: &str) -> [u8; 32] {
    // Entries are checked before they reach the store, so this never fails there.
    let mut out = [0u8; 32];
    let _ = hex::decode_to_slice(text, &mut out);
    out
}

impl MemoryStore {
    /// An empty index.
    pub fn new() -> Self {
        MemoryStore::default()
    }

    // A panic while holding the lock cannot leave the maps half-updated in a way that
    // matters more than losing the index, so keep serving.
    fn lock(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write()
    }

    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read()
    }
}

impl Store for MemoryStore {
    async fn register(&self, registration: Registration) -> Result<u64> {
        let mut inner = self.lock();
        let id = match inner.tokens.get(&registration.token) {
            Some(&id) => id,
            None => {
                let mut id = super::peer_id_of(&registration.fingerprint);
                while inner.owners.contains_key(&id) {
                    id = super::next_id(id);
                }
                inner.tokens.insert(registration.token.clone(), id);
                inner.owners.insert(id, registration.token.clone());
                id
            }
        };
        let now = now_secs();
        let peer = PeerRec {
            token: registration.token,
            fingerprint: registration.fingerprint,
            session: registration.session,
            addr: registration.addr,
            reachable: registration.reachable,
            shared_at: i64::from(now),
            last_seen: Instant::now(),
            files: HashSet::with_capacity(registration.files.len()),
            bytes: 0,
            name_bytes: 0,
        };
        // Files the peer still shares keep their records, and with them the time they
        // were first shared; the others go.
        let kept: HashSet<&str> = registration.files.iter().map(|f| f.name.as_str()).collect();
        let (files, bytes, name_bytes) = match inner.peers.remove(&id) {
            Some(old) => {
                let mut files = HashSet::with_capacity(old.files.len());
                let (mut bytes, mut name_bytes) = (0, 0);
                for slot in old.files {
                    let rec = &inner.files[slot as usize];
                    if kept.contains(name_of(&inner.names, rec)) {
                        bytes += rec.size;
                        name_bytes += u64::from(rec.name_len);
                        files.insert(slot);
                    } else {
                        inner.unlink(slot);
                    }
                }
                (files, bytes, name_bytes)
            }
            None => (HashSet::new(), 0, 0),
        };
        drop(kept);
        let mut peer = peer;
        peer.files.extend(files);
        peer.bytes = bytes;
        peer.name_bytes = name_bytes;
        inner.peers.insert(id, peer);
        for file in registration.files {
            inner.insert(id, file, now);
        }
        inner.compact_if_sparse();
        Ok(id)
    }

    async fn add_files(&self, peer: u64, session: u64, files: Vec<FileEntry>) -> Result<u64> {
        let mut inner = self.lock();
        inner.owned(peer, session)?.last_seen = Instant::now();
        let now = now_secs();
        for file in files {
            inner.insert(peer, file, now);
        }
        Ok(inner.owned(peer, session)?.files.len() as u64)
    }

    async fn remove_files(&self, peer: u64, session: u64, names: Vec<String>) -> Result<u64> {
        let mut inner = self.lock();
        inner.owned(peer, session)?.last_seen = Instant::now();
        for name in names {
            if let Some(slot) = inner.find(peer, &name) {
                let size = inner.files[slot as usize].size;
                if let Some(p) = inner.peers.get_mut(&peer) {
                    p.files.remove(&slot);
                    p.bytes -= size;
                }
                inner.unlink(slot);
            }
        }
        inner.compact_if_sparse();
        Ok(inner.owned(peer, session)?.files.len() as u64)
    }

    async fn bind_nickname(&self, peer: u64, name: Option<&str>) -> Result<Option<String>> {
        let mut inner = self.lock();
        let Some(name) = name else {
            if let Some(old) = inner.nicknames.remove(&peer) {
                inner.nickname_owners.remove(&nickname_skeleton(&old));
            }
            return Ok(None);
        };
        let key = nickname_skeleton(name);
        match inner.nickname_owners.get(&key) {
            Some(&holder) if holder != peer => return Ok(None),
            _ => {}
        }
        if let Some(old) = inner.nicknames.insert(peer, name.to_owned()) {
            inner.nickname_owners.remove(&nickname_skeleton(&old));
        }
        inner.nickname_owners.insert(key, peer);
        Ok(Some(name.to_owned()))
    }

    async fn unregister(&self, peer: u64, session: u64) -> Result<()> {
        let mut inner = self.lock();
        if inner.owned(peer, session).is_ok() {
            inner.remove_peer(peer);
        }
        Ok(())
    }

    async fn touch(&self, peer: u64, session: u64) -> Result<()> {
        let mut inner = self.lock();
        inner.owned(peer, session)?.last_seen = Instant::now();
        Ok(())
    }

    async fn search(&self, query: &Query, limit: usize) -> Result<(Vec<Hit>, bool)> {
        let page = self.read().page(query, limit, 0);
        Ok((page.hits, page.truncated))
    }

    async fn page(&self, query: &Query, limit: usize, bound: u64) -> Result<Page> {
        Ok(self.read().page(query, limit, bound))
    }

    async fn keep_alive(&self, sessions: &[(u64, u64)]) -> Result<()> {
        let mut inner = self.lock();
        let now = Instant::now();
        for &(peer, session) in sessions {
            if let Ok(entry) = inner.owned(peer, session) {
                entry.last_seen = now;
            }
        }
        Ok(())
    }

    async fn usage(&self, from: std::net::IpAddr, token: Option<&str>) -> Result<Usage> {
        let inner = self.read();
        let own = token
            .and_then(|t| inner.tokens.get(t))
            .and_then(|id| inner.peers.get(id));
        Ok(Usage {
            files: (inner.files.len() - inner.free.len()) as u64,
            name_bytes: inner.name_bytes,
            files_from: inner
                .peers
                .values()
                .filter(|p| p.addr.ip() == from)
                .map(|p| p.files.len() as u64)
                .sum(),
            own_files: own.map_or(0, |p| p.files.len() as u64),
            own_name_bytes: own.map_or(0, |p| p.name_bytes),
        })
    }

    async fn is_live(&self, peer: u64) -> Result<bool> {
        Ok(self.read().peers.contains_key(&peer))
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>> {
        let inner = self.read();
        Ok(inner
            .peers
            .iter()
            .map(|(&peer_id, peer)| PeerInfo {
                peer_id,
                fingerprint: peer.fingerprint,
                nickname: inner.nicknames.get(&peer_id).cloned(),
                addr: peer.addr,
                reachable: peer.reachable,
                files: peer.files.len() as u64,
                bytes: peer.bytes,
                shared_at: peer.shared_at,
            })
            .collect())
    }

    async fn expire(&self, ttl: Duration) -> Result<usize> {
        let mut inner = self.lock();
        let now = Instant::now();
        let stale: Vec<u64> = inner
            .peers
            .iter()
            .filter(|(_, p)| now.duration_since(p.last_seen) > ttl)
            .map(|(&id, _)| id)
            .collect();
        for &id in &stale {
            inner.remove_peer(id);
        }
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use crate::index::store::NameMatch;
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn entry(name: &str, size: u64) -> FileEntry {
        FileEntry {
            name: name.into(),
            size,
            sha256: format!("{size:064x}"),
            chunks: format!("{:064x}", size + 1),
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register(u8, Vec<(u8, u64)>),
        Add(u8, Vec<(u8, u64)>),
        Remove(u8, Vec<u8>),
        Leave(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let files = || prop::collection::vec((0u8..40, 0u64..5), 0..12);
        prop_oneof![
            (0u8..6, files()).prop_map(|(p, f)| Op::Register(p, f)),
            (0u8..6, files()).prop_map(|(p, f)| Op::Add(p, f)),
            (0u8..6, prop::collection::vec(0u8..40, 0..8)).prop_map(|(p, n)| Op::Remove(p, n)),
            (0u8..6).prop_map(Op::Leave),
        ]
    }

    /// Names that share substrings and differ in case, so that matching is exercised.
    fn name(n: u8) -> String {
        format!(
            "{}Song-{:02}.{}",
            if n.is_multiple_of(3) { "Best" } else { "best" },
            n % 17,
            ["mp3", "OGG"][usize::from(n % 2)]
        )
    }

    /// Peer IDs past 2^32 stay distinct: two peers whose IDs agree in their low 32 bits
    /// keep their own files of the same name.
    #[test]
    fn peer_ids_past_four_billion_are_not_truncated() {
        let store = MemoryStore::new();
        let register = |token: &str, session: u64| Registration {
            token: token.into(),
            fingerprint: Fingerprint::of_public_key(token.as_bytes()),
            session,
            addr: ([127, 0, 0, 1], 5000 + session as u16).into(),
            reachable: true,
            files: vec![entry("same.txt", session)],
        };
        let first = smol::block_on(store.register(register("a", 1))).unwrap();
        // Another key whose ID is taken gets the next one.
        store.lock().owners.insert(
            crate::index::store::peer_id_of(&Fingerprint::of_public_key(b"b")),
            "x".into(),
        );
        let second = smol::block_on(store.register(register("b", 2))).unwrap();
        assert_eq!(
            second,
            crate::index::store::next_id(crate::index::store::peer_id_of(
                &Fingerprint::of_public_key(b"b")
            ))
        );
        assert_eq!(
            first,
            crate::index::store::peer_id_of(&Fingerprint::of_public_key(b"a"))
        );
        let (hits, _) =
            smol::block_on(store.search(&Query::by(NameMatch::Exact("same.txt".into())), 10))
                .unwrap();
        let mut owners: Vec<(u64, u64)> = hits.iter().map(|h| (h.peer_id, h.file.size)).collect();
        owners.sort();
        let mut expected = vec![(first, 1), (second, 2)];
        expected.sort();
        assert_eq!(owners, expected);
    }

    /// A file's record stays 96 bytes with its own `shared_at` (README, Figures).
    #[test]
    fn a_file_record_is_96_bytes() {
        assert_eq!(std::mem::size_of::<FileRec>(), 96);
    }

    #[test]
    fn the_arena_is_compacted_when_mostly_dead_and_search_still_works() {
        smol::block_on(async {
            let store = MemoryStore::new();
            let many = |tag: &str| -> Vec<FileEntry> {
                (0..20_000)
                    .map(|i| entry(&format!("{tag}-{i:05}-{}", "x".repeat(50)), i))
                    .collect()
            };
            let register = |token: &str, session, files| Registration {
                token: token.repeat(32),
                fingerprint: Fingerprint::of_public_key(token.as_bytes()),
                session,
                addr: ([127, 0, 0, 1], 9).into(),
                reachable: true,
                files,
            };
            let a = store
                .register(register("a", 1, many("alpha")))
                .await
                .unwrap();
            let b = store
                .register(register("b", 2, many("beta")))
                .await
                .unwrap();
            let before = store.lock().arena.len();
            store.unregister(a, 1).await.unwrap();
            {
                let inner = store.lock();
                assert!(inner.arena.len() < before, "the arena was not compacted");
                assert_eq!(inner.dead_bytes, 0);
            }
            assert!(
                store
                    .search(&Query::pattern("alpha"), 10)
                    .await
                    .unwrap()
                    .0
                    .is_empty()
            );
            let (hits, truncated) = store
                .search(&Query::pattern("beta-1999"), 100)
                .await
                .unwrap();
            assert_eq!(hits.len(), 10);
            assert!(!truncated);
            assert!(hits.iter().all(|h| h.peer_id == b));
            // Freed slots are reused without confusing the arena.
            let c = store
                .register(register("c", 3, many("gamma")))
                .await
                .unwrap();
            let (hits, _) = store
                .search(&Query::pattern("gamma-00042"), 10)
                .await
                .unwrap();
            assert_eq!(hits.len(), 1);
            assert_eq!(hits[0].peer_id, c);
            assert_eq!(hits[0].file.size, 42);
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The store agrees with a plain map after any sequence of changes, for every
        /// kind of query.
        #[test]
        fn the_store_agrees_with_a_plain_model(ops in prop::collection::vec(op(), 1..60)) {
            smol::block_on(async {
                let store = MemoryStore::new();
                // peer number → (id, session, files by name)
                let mut model: BTreeMap<u8, (u64, u64, BTreeMap<String, u64>)> = BTreeMap::new();
                let mut session = 0;
                for op in ops {
                    match op {
                        Op::Register(p, files) => {
                            session += 1;
                            let files: Vec<FileEntry> = files.iter().map(|&(n, s)| entry(&name(n), s)).collect();
                            let id = store.register(Registration {
                                token: format!("{p:032}"),
                                fingerprint: Fingerprint::of_public_key(&[p]),
                                session,
                                addr: ([127, 0, 0, 1], 1000 + u16::from(p)).into(),
                                reachable: true,
                                files: files.clone(),
                            }).await.unwrap();
                            let map = files.into_iter().map(|f| (f.name, f.size)).collect();
                            model.insert(p, (id, session, map));
                        }
                        Op::Add(p, files) => {
                            if let Some((id, s, map)) = model.get_mut(&p) {
                                let files: Vec<FileEntry> = files.iter().map(|&(n, s)| entry(&name(n), s)).collect();
                                for f in &files {
                                    map.insert(f.name.clone(), f.size);
                                }
                                let count = store.add_files(*id, *s, files).await.unwrap();
                                prop_assert_eq!(count, map.len() as u64);
                            }
                        }
                        Op::Remove(p, names) => {
                            if let Some((id, s, map)) = model.get_mut(&p) {
                                let names: Vec<String> = names.iter().map(|&n| name(n)).collect();
                                for n in &names {
                                    map.remove(n);
                                }
                                let count = store.remove_files(*id, *s, names).await.unwrap();
                                prop_assert_eq!(count, map.len() as u64);
                            }
                        }
                        Op::Leave(p) => {
                            if let Some((id, s, _)) = model.remove(&p) {
                                store.unregister(id, s).await.unwrap();
                            }
                        }
                    }
                }
                let truth = |keep: &dyn Fn(&str, u64) -> bool| -> BTreeSet<(u64, String)> {
                    model.values()
                        .flat_map(|(id, _, map)| map.iter().filter(|(n, s)| keep(n, **s)).map(move |(n, _)| (*id, n.clone())))
                        .collect()
                };
                let found = |hits: Vec<Hit>| -> BTreeSet<(u64, String)> {
                    hits.into_iter().map(|h| (h.peer_id, h.file.name)).collect()
                };
                let substring = store.search(&Query::pattern("SONG-0"), 10_000).await.unwrap().0;
                prop_assert_eq!(found(substring), truth(&|n, _| n.to_lowercase().contains("song-0")));
                let wild = store.search(&Query::pattern("best*.mp?"), 10_000).await.unwrap().0;
                prop_assert_eq!(found(wild), truth(&|n, _| n.to_lowercase().starts_with("best") && n.ends_with(".mp3")));
                let exact = store.search(&Query::by(NameMatch::Exact(name(3))), 10_000).await.unwrap().0;
                prop_assert_eq!(found(exact), truth(&|n, _| n == name(3)));
                let mut sized = Query::pattern("song");
                sized.min_size = Some(2);
                sized.max_size = Some(3);
                let sized = store.search(&sized, 10_000).await.unwrap().0;
                prop_assert_eq!(found(sized), truth(&|n, s| n.to_lowercase().contains("song") && (2..=3).contains(&s)));
                let mut by_hash = Query::by(NameMatch::Any);
                by_hash.sha256_prefix = Some(format!("{:063x}", 0) );
                let by_hash = store.search(&by_hash, 10_000).await.unwrap().0;
                prop_assert_eq!(found(by_hash), truth(&|_, s| s < 16));
                let peers = store.peers().await.unwrap();
                prop_assert_eq!(peers.len(), model.len());
                for (id, _, map) in model.values() {
                    let mut browse = Query::by(NameMatch::Any);
                    browse.peer = Some(*id);
                    let listed = store.search(&browse, 10_000).await.unwrap().0;
                    prop_assert_eq!(listed.len(), map.len());
                    let info = peers.iter().find(|p| p.peer_id == *id).unwrap();
                    prop_assert_eq!(info.bytes, map.values().sum::<u64>());
                }
                let (limited, truncated) = store.search(&Query::pattern("song"), 1).await.unwrap();
                let all = truth(&|n, _| n.to_lowercase().contains("song")).len();
                prop_assert_eq!(limited.len(), all.min(1));
                prop_assert_eq!(truncated, all > 1);
                Ok(())
            })?;
        }
    }
}
