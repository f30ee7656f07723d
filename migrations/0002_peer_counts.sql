-- Each peer's file count, bytes and name bytes, kept by every write so that listing
-- peers and checking the index's capacity never aggregate over the files table.
ALTER TABLE peers
    ADD COLUMN files BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN bytes BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN name_bytes BIGINT NOT NULL DEFAULT 0;

UPDATE peers p SET files = c.n, bytes = c.b, name_bytes = c.nb
FROM (SELECT peer_id, count(*) AS n, coalesce(sum(size), 0)::bigint AS b,
             coalesce(sum(octet_length(name)), 0)::bigint AS nb
      FROM files GROUP BY peer_id) c
WHERE p.id = c.peer_id;

-- Departed peers, newest first, for reaping all but the most recent ones.
CREATE INDEX peers_departed ON peers (last_seen) WHERE NOT live;
