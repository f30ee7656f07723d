-- "Shared at" is per file: when the index first saw that name with those bytes from that
-- peer (a changed file takes the time of the change), no longer the peer's registration.
-- Files already there take their peer's registration time, the best the index knows.
ALTER TABLE files ADD COLUMN shared_at BIGINT NOT NULL DEFAULT 0;
UPDATE files f SET shared_at = p.shared_at FROM peers p WHERE p.id = f.peer_id;
