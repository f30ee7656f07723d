//! Text the PostgreSQL store builds: the search query, `LIKE` patterns, hash ranges,
//! and database URLs fit for messages (passwords hidden); and what its rows become.

use std::net::{IpAddr, SocketAddr};

use sqlx::postgres::PgRow;
use sqlx::{Postgres, QueryBuilder, Row};

use super::{NameMatch, Query};
use crate::protocol::{FileEntry, Hit, PeerInfo};

/// A search row (`peer_id, host, port, name, size, sha256, chunks, shared_at,
/// fingerprint, nickname, reachable`) as a hit; `None` when a stored value is unusable.
pub fn hit_of_row(row: &PgRow) -> Option<Hit> {
    let host: String = row.get(1);
    let port: i32 = row.get(2);
    let sha256: Vec<u8> = row.get(5);
    let chunks: Vec<u8> = row.get(6);
    Some(Hit {
        peer_id: row.get::<i64, _>(0) as u64,
        fingerprint: row.get::<String, _>(8).parse().ok()?,
        nickname: row.get(9),
        addr: SocketAddr::new(host.parse::<IpAddr>().ok()?, port as u16),
        reachable: row.get(10),
        local: None,
        file: FileEntry {
            name: row.get(3),
            size: row.get::<i64, _>(4) as u64,
            sha256: hex::encode(sha256),
            chunks: hex::encode(chunks),
        },
        shared_at: row.get(7),
    })
}

/// A peers row (`id, host, port, shared_at, files, bytes, fingerprint, nickname,
/// reachable`) as a peer's description.
pub fn peer_of_row(row: &PgRow) -> Option<PeerInfo> {
    let host: String = row.get(1);
    let port: i32 = row.get(2);
    Some(PeerInfo {
        peer_id: row.get::<i64, _>(0) as u64,
        fingerprint: row.get::<String, _>(6).parse().ok()?,
        nickname: row.get(7),
        addr: SocketAddr::new(host.parse::<IpAddr>().ok()?, port as u16),
        reachable: row.get(8),
        shared_at: row.get(3),
        files: row.get::<i64, _>(4) as u64,
        bytes: row.get::<i64, _>(5) as u64,
    })
}

/// What `PgStore::explain` puts before a statement.
pub const EXPLAIN: &str = "EXPLAIN (ANALYZE, BUFFERS) ";

/// What a server runs after every `SETTLE_EVERY` rows registered (`postgres.rs`), and what it is
/// doing, for its log.
pub const SETTLE: [(&str, &str); 2] = [
    (
        "ANALYZE files, peers",
        "refreshing the database's statistics",
    ),
    (
        "SELECT gin_clean_pending_list('files_lower_name_trgm'::regclass)",
        "merging the trigram index's pending list",
    ),
];

/// Files as the column arrays a multi-row insert (`UNNEST`) binds: one array per column,
/// so that any number of files travel in one statement.
pub struct Columns<'a> {
    /// Names as given.
    pub names: Vec<&'a str>,
    /// Names lowercased, as substring searches match them.
    pub lower: Vec<String>,
    /// Sizes in bytes.
    pub sizes: Vec<i64>,
    /// SHA-256 of each file's bytes.
    pub hashes: Vec<Vec<u8>>,
    /// Root of each file's chunk list.
    pub chunks: Vec<Vec<u8>>,
}

impl<'a> Columns<'a> {
    /// The columns of `files` (hashes were checked as hex where they entered).
    pub fn of(files: &'a [FileEntry]) -> Self {
        Columns {
            names: files.iter().map(|f| f.name.as_str()).collect(),
            lower: files.iter().map(|f| f.name.to_lowercase()).collect(),
            sizes: files.iter().map(|f| f.size as i64).collect(),
            hashes: files
                .iter()
                .map(|f| hex::decode(&f.sha256).unwrap_or_default())
                .collect(),
            chunks: files
                .iter()
                .map(|f| hex::decode(&f.chunks).unwrap_or_default())
                .collect(),
        }
    }
}

/// `url` with any password replaced, for messages.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `LIKE` pattern of a literal substring.
pub fn like_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// `LIKE` pattern of a `*`/`?` wildcard pattern.
pub fn like_wildcard(pattern: &str) -> String {
    like_escape(pattern).replace('*', "%").replace('?', "_")
}

/// Inclusive bounds of the hashes starting with a hex prefix.
pub fn hash_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let pad = |c: char| {
        let mut hex: String = prefix.to_owned();
        while hex.len() < 64 {
            hex.push(c);
        }
        hex::decode(hex).unwrap_or_default()
    };
    (pad('0'), pad('f'))
}

/// The query of a search: live peers' files matching `query`, from its offset in a
/// stable order (a peer's files by name; a search by peer, then name), one row more than
/// `limit` so that the caller knows whether more matched.
///
/// Only a live peer has files (registering adds them in the transaction that makes the
/// peer live; leaving or expiring deletes them in the one that ends it), so the page is
/// cut from `files` alone and only its rows are joined to their peers: a name found a
/// few times costs a few primary-key lookups, not a hash of every peer, and a needle
/// found everywhere stops after one page of the files' primary key. The outer `live`
/// test only guards that rule. `head` goes before it: `""`, or `EXPLAIN …`.
pub fn search_sql(head: &str, query: &Query, limit: usize) -> QueryBuilder<Postgres> {
    let order = if query.peer.is_some() {
        " ORDER BY f.name"
    } else {
        " ORDER BY f.peer_id, f.name"
    };
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "{head}SELECT f.peer_id, p.host, p.port, f.name, f.size, f.sha256, f.chunks, \
         f.shared_at, p.fingerprint, p.nickname, p.reachable \
         FROM (SELECT * FROM files f WHERE true"
    ));
    conditions(&mut sql, query);
    sql.push(order)
        .push(" LIMIT ")
        .push_bind((limit as i64).saturating_add(1));
    if query.offset > 0 {
        sql.push(" OFFSET ")
            .push_bind(query.offset.min(i64::MAX as u64) as i64);
    }
    sql.push(") f JOIN peers p ON p.id = f.peer_id WHERE p.live")
        .push(order);
    sql
}

/// How many files match `query`, counted no further than `bound` + 1: from `files`
/// alone, which holds live peers' files only (see [`search_sql`]); after `head`.
pub fn count_sql(head: &str, query: &Query, bound: u64) -> QueryBuilder<Postgres> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "{head}SELECT count(*) FROM (SELECT 1 FROM files f WHERE true"
    ));
    conditions(&mut sql, query);
    sql.push(" LIMIT ")
        .push_bind(bound.min(i64::MAX as u64 - 1) as i64 + 1)
        .push(") c");
    sql
}

/// The `AND …` conditions of `query`.
fn conditions(sql: &mut QueryBuilder<Postgres>, query: &Query) {
    match &query.name {
        NameMatch::Any => {}
        NameMatch::Exact(name) => {
            sql.push(" AND f.name = ").push_bind(name.clone());
        }
        NameMatch::Substring(needle) => {
            sql.push(" AND f.lower_name LIKE ")
                .push_bind(format!("%{}%", like_escape(needle)));
        }
        NameMatch::Wildcard(pattern) => {
            sql.push(" AND f.lower_name LIKE ")
                .push_bind(like_wildcard(pattern));
        }
    }
    if let Some(prefix) = &query.sha256_prefix {
        let (low, high) = hash_range(prefix);
        sql.push(" AND f.sha256 BETWEEN ")
            .push_bind(low)
            .push(" AND ")
            .push_bind(high);
    }
    if let Some(min) = query.min_size {
        sql.push(" AND f.size >= ")
            .push_bind(min.min(i64::MAX as u64) as i64);
    }
    if let Some(max) = query.max_size {
        sql.push(" AND f.size <= ")
            .push_bind(max.min(i64::MAX as u64) as i64);
    }
    if let Some(peer) = query.peer {
        sql.push(" AND f.peer_id = ").push_bind(peer as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_ranges() {
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(like_wildcard("a*b?.mp3"), "a%b_.mp3");
        let (low, high) = hash_range("ab");
        assert_eq!(low[0], 0xab);
        assert_eq!(high[0], 0xab);
        assert_eq!(low[1], 0x00);
        assert_eq!(high[31], 0xff);
        assert_eq!(
            redacted("postgres://me:secret@db/napster"),
            "postgres://me:***@db/napster"
        );
    }
}
