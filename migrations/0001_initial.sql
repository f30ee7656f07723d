-- napster's index in PostgreSQL: peers and the files they share.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE peers (
    id BIGSERIAL PRIMARY KEY,
    -- The peer's secret: the same token gets the same Peer ID back, on any server.
    token TEXT NOT NULL UNIQUE,
    -- Which index server process holds the peer's session, and which session.
    server TEXT NOT NULL,
    session BIGINT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    shared_at BIGINT NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    live BOOLEAN NOT NULL DEFAULT true
);

CREATE INDEX peers_live_last_seen ON peers (last_seen) WHERE live;

CREATE TABLE files (
    peer_id BIGINT NOT NULL REFERENCES peers (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    lower_name TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 BYTEA NOT NULL,
    chunks BYTEA NOT NULL,
    PRIMARY KEY (peer_id, name)
);

CREATE INDEX files_name ON files (name);
CREATE INDEX files_sha256 ON files (sha256);
CREATE INDEX files_lower_name_trgm ON files USING gin (lower_name gin_trgm_ops);
