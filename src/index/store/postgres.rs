//! The index in PostgreSQL, so that any number of stateless index servers share one
//! index: a peer registered on one is found by a search on another.
//!
//! The schema is napster's own, created and migrated by napster itself (`migrations/`,
//! embedded at build time). A registration is one transaction, so a search never sees a
//! half-registered peer. Peers are keyed by their token: a peer that registers again on
//! another server takes its row over and never appears twice. Sessions are owned by
//! (server, session): each index process has its own random server ID.
//!
//! Substring and wildcard searches are `LIKE` queries on the lowercase name, served by
//! a `pg_trgm` GIN index; exact names and hash prefixes use B-tree indexes.

use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row};

use super::sql::{
    Columns, EXPLAIN, SETTLE, count_sql, hit_of_row, peer_of_row, redacted, search_sql,
};
use super::{Page, Query, Registration, Result, Store, StoreError, Usage};
use crate::error::Error;
use crate::protocol::{FileEntry, Hit, PeerInfo, Total};

/// Connections each index server keeps to the database.
const POOL_SIZE: u32 = 16;

/// How long a request waits for a database connection: short, so that while the
/// database is down a request fails fast with "database unavailable".
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

/// How many departed peers keep their row (token → Peer ID, so that they get their ID
/// back), as the in-memory store remembers their tokens; older ones are deleted.
const REMEMBERED_DEPARTED: i64 = 100_000;

/// How often [`Store::expire`] also deletes the rows of departed peers beyond
/// [`REMEMBERED_DEPARTED`].
const REAP_DEPARTED_EVERY: Duration = Duration::from_secs(60);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Rows registered between two `ANALYZE`s: after a burst of registrations the planner
/// must know the table grew, or it scans a million rows for an exact name.
const SETTLE_EVERY: u64 = 50_000;

/// The index in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    server: String,
    inserted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    remembered: i64,
    reaped_at: std::sync::Arc<parking_lot::Mutex<Option<std::time::Instant>>>,
    settle_every: u64,
}

/// A database error, for the server's log.
fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl PgStore {
    /// The connection pool now: (most connections, open, idle), for metrics.
    pub fn pool_state(&self) -> (u32, u32, u32) {
        let idle = u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX);
        (POOL_SIZE, self.pool.size(), idle)
    }

    /// Connect to the database at `url` and bring its schema up to date.
    pub async fn connect(url: &str) -> crate::Result<PgStore> {
        let shown = redacted(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("the database URL {shown} is malformed: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|e| Error::msg(format!("cannot use the database at {shown}: {e}")))?;
        MIGRATOR.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(version) => Error::msg(format!(
                "the database at {shown} has schema version {version}, newer than this napster \
                 knows: it was set up by a newer napster; upgrade this one"
            )),
            other => Error::msg(format!("cannot set up the schema in {shown}: {other}")),
        })?;
        let server = format!("{:016x}", rand::random::<u64>());
        Ok(PgStore {
            pool,
            server,
            inserted: Default::default(),
            remembered: REMEMBERED_DEPARTED,
            reaped_at: Default::default(),
            settle_every: SETTLE_EVERY,
        })
    }

    /// Keep the rows of only the `n` most recently departed peers (default 100 000).
    pub fn remember_departed(mut self, n: u32) -> Self {
        self.remembered = i64::from(n);
        self
    }

    /// Settle the tables (`sql::SETTLE`) after every `rows` rows registered (default
    /// `SETTLE_EVERY`).
    pub fn settle_every(mut self, rows: u64) -> Self {
        self.settle_every = rows.max(1);
        self
    }

    /// Delete the rows of departed peers beyond the most recent ones remembered, so that
    /// the tables are bounded by the live peers; returns how many were deleted.
    pub async fn reap_departed(&self) -> Result<u64> {
        let reaped = sqlx::query(
            "DELETE FROM peers WHERE NOT live AND id IN \
             (SELECT id FROM peers WHERE NOT live ORDER BY last_seen DESC OFFSET $1)",
        )
        .bind(self.remembered)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(reaped.rows_affected())
    }

    /// Rows in the peers and files tables, for operators and tests.
    pub async fn row_counts(&self) -> Result<(u64, u64)> {
        let (peers, files): (i64, i64) =
            sqlx::query_as("SELECT (SELECT count(*) FROM peers), (SELECT count(*) FROM files)")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok((peers as u64, files as u64))
    }

    /// `EXPLAIN (ANALYZE, BUFFERS)` of the statements a page of `query` runs (its hits,
    /// then its total): the plans the database chose and what they cost, for operators
    /// and benchmarks.
    pub async fn explain(&self, query: &Query, limit: usize, bound: u64) -> Result<String> {
        let mut text = String::new();
        for mut sql in [
            search_sql(EXPLAIN, query, limit),
            count_sql(EXPLAIN, query, bound),
        ] {
            let lines: Vec<String> = sql
                .build_query_scalar()
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            text.push_str(&lines.join("\n"));
            text.push_str("\n\n");
        }
        Ok(text)
    }

    /// The schema version napster created (the highest migration applied).
    pub fn schema_version() -> i64 {
        MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// Mark the peer's session alive, if `session` still owns it; inside `tx`.
    async fn own(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        peer: u64,
        session: u64,
    ) -> Result<()> {
        let owned = sqlx::query(
            "UPDATE peers SET last_seen = now() \
             WHERE id = $1 AND server = $2 AND session = $3 AND live",
        )
        .bind(peer as i64)
        .bind(&self.server)
        .bind(session as i64)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        if owned.rows_affected() == 0 {
            return Err(StoreError::NotOwner);
        }
        Ok(())
    }

    async fn insert_files(
        tx: &mut sqlx::Transaction<'_, Postgres>,
        peer: u64,
        files: &[FileEntry],
    ) -> Result<()> {
        if files.is_empty() {
            return Ok(());
        }
        let columns = Columns::of(files);
        // A file already there keeps the time it was first shared unless its bytes changed.
        sqlx::query(
            "INSERT INTO files (peer_id, shared_at, name, lower_name, size, sha256, chunks, \
             tags, lower_tags) \
             SELECT $1, $7, n, l, s, h, c, t::jsonb, lt::jsonb FROM UNNEST($2::text[], \
             $3::text[], $4::bigint[], $5::bytea[], $6::bytea[], $8::text[], $9::text[]) \
             AS u(n, l, s, h, c, t, lt) \
             ON CONFLICT (peer_id, name) DO UPDATE \
             SET shared_at = CASE WHEN files.sha256 = EXCLUDED.sha256 AND files.size = EXCLUDED.size \
             THEN files.shared_at ELSE EXCLUDED.shared_at END, \
             size = EXCLUDED.size, sha256 = EXCLUDED.sha256, chunks = EXCLUDED.chunks, \
             tags = EXCLUDED.tags, lower_tags = EXCLUDED.lower_tags",
        )
        .bind(peer as i64)
        .bind(&columns.names)
        .bind(&columns.lower)
        .bind(&columns.sizes)
        .bind(&columns.hashes)
        .bind(&columns.chunks)
        .bind(chrono::Utc::now().timestamp())
        .bind(&columns.tags)
        .bind(&columns.lower_tags)
        .execute(&mut **tx)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Note `rows` new rows; once enough have arrived since the last time, refresh the
    /// planner's statistics and merge the trigram index's pending list (in the
    /// background), so that neither a stale plan nor a long pending list to scan, nor
    /// the insert that would otherwise find it full and merge it, slows the requests
    /// that follow a burst of registrations.
    fn inserted(&self, rows: usize) {
        use std::sync::atomic::Ordering;
        let before = self.inserted.fetch_add(rows as u64, Ordering::Relaxed);
        let every = self.settle_every;
        if before < every && before + rows as u64 >= every {
            let pool = self.pool.clone();
            let inserted = self.inserted.clone();
            crate::runtime::spawn(async move {
                for (statement, doing) in SETTLE {
                    if let Err(e) = sqlx::query(statement).execute(&pool).await {
                        tracing::warn!("{doing}: {e}");
                    }
                }
                inserted.store(0, Ordering::Relaxed);
            })
            .detach();
        }
    }

    /// Bring the peer's counts up to date from its own files (its rows only, through
    /// the primary key); returns how many files it shares.
    async fn count(tx: &mut sqlx::Transaction<'_, Postgres>, peer: u64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "UPDATE peers p SET files = c.n, bytes = c.b, name_bytes = c.nb, tag_bytes = c.tb \
             FROM (SELECT count(*) AS n, coalesce(sum(size), 0)::bigint AS b, \
                   coalesce(sum(octet_length(name)), 0)::bigint AS nb, \
                   coalesce(sum(coalesce(octet_length(tags ->> 'artist'), 0) \
                   + coalesce(octet_length(tags ->> 'title'), 0) \
                   + coalesce(octet_length(tags ->> 'album'), 0)), 0)::bigint AS tb \
                   FROM files WHERE peer_id = $1) c \
             WHERE p.id = $1 RETURNING p.files",
        )
        .bind(peer as i64)
        .fetch_one(&mut **tx)
        .await
        .map_err(db)?;
        Ok(n as u64)
    }
}

impl Store for PgStore {
    async fn register(&self, registration: Registration) -> Result<u64> {
        let files = Columns::of(&registration.files);
        // One round trip: the whole registration is one call (migrations/0006, with tags
        // since 0008).
        let id: i64 = sqlx::query_scalar(
            "SELECT napster_register($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, \
             $15, $16)",
        )
        .bind(&registration.token)
        .bind(&self.server)
        .bind(registration.session as i64)
        .bind(registration.addr.ip().to_string())
        .bind(i32::from(registration.addr.port()))
        .bind(chrono::Utc::now().timestamp())
        .bind(registration.fingerprint.plain())
        .bind(super::peer_id_of(&registration.fingerprint) as i64)
        .bind(registration.reachable)
        .bind(&files.names)
        .bind(&files.lower)
        .bind(&files.sizes)
        .bind(&files.hashes)
        .bind(&files.chunks)
        .bind(&files.tags)
        .bind(&files.lower_tags)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        self.inserted(registration.files.len());
        Ok(id as u64)
    }

    async fn bind_nickname(&self, peer: u64, name: Option<&str>) -> Result<Option<String>> {
        // One nickname per skeleton (look-alikes folded, computed here: one rule, in
        // `protocol`); the unique index on it settles a race between two keys. A row
        // bound before the skeleton existed has none until its peer registers again, so
        // its lowercase nickname is compared as well.
        let bound = sqlx::query_scalar::<_, Option<String>>(
            "UPDATE peers SET nickname = $2::text, nickname_skeleton = $3::text \
             WHERE id = $1 AND ($2::text IS NULL OR NOT EXISTS (SELECT 1 FROM peers \
             WHERE (nickname_skeleton = $3::text OR lower(nickname) = lower($2::text)) \
             AND id <> $1)) RETURNING nickname",
        )
        .bind(peer as i64)
        .bind(name)
        .bind(name.map(crate::protocol::nickname_skeleton))
        .fetch_optional(&self.pool)
        .await;
        match bound {
            Ok(bound) => Ok(bound.flatten()),
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("23505") => {
                Ok(None)
            }
            Err(e) => Err(db(e)),
        }
    }

    async fn add_files(&self, peer: u64, session: u64, files: Vec<FileEntry>) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.own(&mut tx, peer, session).await?;
        PgStore::insert_files(&mut tx, peer, &files).await?;
        let count = PgStore::count(&mut tx, peer).await?;
        tx.commit().await.map_err(db)?;
        self.inserted(files.len());
        Ok(count)
    }

    async fn remove_files(&self, peer: u64, session: u64, names: Vec<String>) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.own(&mut tx, peer, session).await?;
        sqlx::query("DELETE FROM files WHERE peer_id = $1 AND name = ANY($2)")
            .bind(peer as i64)
            .bind(&names)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let count = PgStore::count(&mut tx, peer).await?;
        tx.commit().await.map_err(db)?;
        Ok(count)
    }

    async fn unregister(&self, peer: u64, session: u64) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let left = sqlx::query(
            "UPDATE peers SET live = false, files = 0, bytes = 0, name_bytes = 0, tag_bytes = 0, \
             last_seen = now() WHERE id = $1 AND server = $2 AND session = $3 AND live",
        )
        .bind(peer as i64)
        .bind(&self.server)
        .bind(session as i64)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if left.rows_affected() > 0 {
            sqlx::query("DELETE FROM files WHERE peer_id = $1")
                .bind(peer as i64)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn touch(&self, peer: u64, session: u64) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        self.own(&mut tx, peer, session).await?;
        tx.commit().await.map_err(db)
    }

    async fn search(&self, query: &Query, limit: usize) -> Result<(Vec<Hit>, bool)> {
        let mut sql = search_sql("", query, limit);
        let rows = sql.build().fetch_all(&self.pool).await.map_err(db)?;
        let truncated = rows.len() > limit;
        let hits = rows.iter().take(limit).filter_map(hit_of_row).collect();
        Ok((hits, truncated))
    }

    async fn page(&self, query: &Query, limit: usize, bound: u64) -> Result<Page> {
        let (hits, truncated) = self.search(query, limit).await?;
        let counted: i64 = count_sql("", query, bound)
            .build_query_scalar()
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let counted = counted as u64;
        let total = if counted > bound {
            Total {
                count: bound,
                more: true,
            }
        } else {
            Total {
                count: counted,
                more: false,
            }
        };
        Ok(Page {
            hits,
            truncated,
            total,
        })
    }

    async fn keep_alive(&self, sessions: &[(u64, u64)]) -> Result<()> {
        if sessions.is_empty() {
            return Ok(());
        }
        let peers: Vec<i64> = sessions.iter().map(|&(p, _)| p as i64).collect();
        let ids: Vec<i64> = sessions.iter().map(|&(_, s)| s as i64).collect();
        sqlx::query(
            "UPDATE peers SET last_seen = now() \
             FROM UNNEST($1::bigint[], $2::bigint[]) AS s(id, session) \
             WHERE peers.id = s.id AND peers.server = $3 AND peers.session = s.session \
             AND peers.live",
        )
        .bind(&peers)
        .bind(&ids)
        .bind(&self.server)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn usage(&self, from: IpAddr, token: Option<&str>) -> Result<Usage> {
        let row = sqlx::query(
            "SELECT coalesce(sum(files), 0)::bigint, coalesce(sum(name_bytes), 0)::bigint, \
             coalesce(sum(files) FILTER (WHERE host = $1), 0)::bigint, \
             coalesce(sum(files) FILTER (WHERE token = $2), 0)::bigint, \
             coalesce(sum(name_bytes) FILTER (WHERE token = $2), 0)::bigint, \
             coalesce(sum(tag_bytes) FILTER (WHERE token = $2), 0)::bigint \
             FROM peers WHERE live",
        )
        .bind(from.to_string())
        .bind(token)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let get = |i: usize| row.get::<i64, _>(i) as u64;
        Ok(Usage {
            files: get(0),
            name_bytes: get(1),
            files_from: get(2),
            own_files: get(3),
            own_name_bytes: get(4),
            own_tag_bytes: get(5),
        })
    }

    async fn is_live(&self, peer: u64) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM peers WHERE id = $1 AND live)")
            .bind(peer as i64)
            .fetch_one(&self.pool)
            .await
            .map_err(db)
    }

    async fn peers(&self) -> Result<Vec<PeerInfo>> {
        let rows = sqlx::query(
            "SELECT id, host, port, shared_at, files, bytes, fingerprint, nickname, reachable \
             FROM peers WHERE live ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().filter_map(peer_of_row).collect())
    }

    async fn expire(&self, ttl: Duration) -> Result<usize> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let gone: Vec<i64> = sqlx::query_scalar(
            "UPDATE peers SET live = false, files = 0, bytes = 0, name_bytes = 0 \
             WHERE live AND last_seen < now() - make_interval(secs => $1) RETURNING id",
        )
        .bind(ttl.as_secs_f64())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        if !gone.is_empty() {
            sqlx::query("DELETE FROM files WHERE peer_id = ANY($1)")
                .bind(&gone)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        let due = {
            let mut at = self.reaped_at.lock();
            let due = at.is_none_or(|t| t.elapsed() >= REAP_DEPARTED_EVERY);
            if due {
                *at = Some(std::time::Instant::now());
            }
            due
        };
        if due {
            let reaped = self.reap_departed().await?;
            if reaped > 0 {
                tracing::info!("deleted the rows of {reaped} long-departed peer(s)");
            }
        }
        Ok(gone.len())
    }
}
