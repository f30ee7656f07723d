-- Media tags (protocol version 5): what a sharer read from an audio file, as given
-- (`tags`, the protocol's Tags object) and its artist, title and album in lowercase
-- (`lower_tags`, lowercased by napster as `lower_name` is, so that both stores agree).
ALTER TABLE files
    ADD COLUMN tags JSONB,
    ADD COLUMN lower_tags JSONB;

-- Each peer's bytes of text tags, kept by every write as `name_bytes` is, for the bound
-- on tags per peer.
ALTER TABLE peers ADD COLUMN tag_bytes BIGINT NOT NULL DEFAULT 0;

-- Substring searches on each text tag, over the files that have tags only.
CREATE INDEX files_artist_trgm ON files USING gin ((lower_tags ->> 'artist') gin_trgm_ops)
    WHERE lower_tags IS NOT NULL;
CREATE INDEX files_title_trgm ON files USING gin ((lower_tags ->> 'title') gin_trgm_ops)
    WHERE lower_tags IS NOT NULL;
CREATE INDEX files_album_trgm ON files USING gin ((lower_tags ->> 'album') gin_trgm_ops)
    WHERE lower_tags IS NOT NULL;

-- A registration in one round trip (0006) carries each file's tags too, and counts the
-- peer's tag bytes as every other write does.
DROP FUNCTION napster_register(TEXT, TEXT, BIGINT, TEXT, INTEGER, BIGINT, TEXT, BIGINT, BOOLEAN, TEXT[], TEXT[], BIGINT[], BYTEA[], BYTEA[]);
CREATE FUNCTION napster_register(
    p_token TEXT, p_server TEXT, p_session BIGINT, p_host TEXT, p_port INTEGER,
    p_now BIGINT, p_fingerprint TEXT, p_id_hint BIGINT, p_reachable BOOLEAN,
    p_names TEXT[], p_lower TEXT[], p_sizes BIGINT[], p_hashes BYTEA[], p_chunks BYTEA[],
    p_tags TEXT[], p_lower_tags TEXT[]
) RETURNS BIGINT LANGUAGE plpgsql AS $$
DECLARE
    v_id BIGINT;
BEGIN
    -- The ID: the one this key has, else its own or the next free of other keys.
    INSERT INTO peers (token, server, session, host, port, shared_at, last_seen, live,
                       fingerprint, reachable, id)
    VALUES (p_token, p_server, p_session, p_host, p_port, p_now, now(), true,
            p_fingerprint, p_reachable,
            coalesce((SELECT id FROM peers WHERE token = p_token),
                     (SELECT min(c) FROM generate_series(p_id_hint, p_id_hint + 1000) c
                      WHERE NOT EXISTS (SELECT 1 FROM peers WHERE id = c))))
    ON CONFLICT (token) DO UPDATE SET server = EXCLUDED.server,
        fingerprint = EXCLUDED.fingerprint, reachable = EXCLUDED.reachable,
        session = EXCLUDED.session, host = EXCLUDED.host, port = EXCLUDED.port,
        shared_at = EXCLUDED.shared_at, last_seen = now(), live = true
    RETURNING id INTO v_id;
    -- Files the peer still shares keep their rows, and the time they were first shared.
    DELETE FROM files WHERE peer_id = v_id AND NOT (name = ANY(p_names));
    IF cardinality(p_names) > 0 THEN
        INSERT INTO files (peer_id, shared_at, name, lower_name, size, sha256, chunks,
                           tags, lower_tags)
        SELECT v_id, p_now, n, l, s, h, c, t::jsonb, lt::jsonb
        FROM UNNEST(p_names, p_lower, p_sizes, p_hashes, p_chunks, p_tags, p_lower_tags)
             AS u(n, l, s, h, c, t, lt)
        ON CONFLICT (peer_id, name) DO UPDATE
        SET shared_at = CASE WHEN files.sha256 = EXCLUDED.sha256 AND files.size = EXCLUDED.size
                        THEN files.shared_at ELSE EXCLUDED.shared_at END,
            size = EXCLUDED.size, sha256 = EXCLUDED.sha256, chunks = EXCLUDED.chunks,
            tags = EXCLUDED.tags, lower_tags = EXCLUDED.lower_tags;
    END IF;
    UPDATE peers p SET files = c.n, bytes = c.b, name_bytes = c.nb, tag_bytes = c.tb
    FROM (SELECT count(*) AS n, coalesce(sum(size), 0)::bigint AS b,
                 coalesce(sum(octet_length(name)), 0)::bigint AS nb,
                 coalesce(sum(coalesce(octet_length(tags ->> 'artist'), 0)
                     + coalesce(octet_length(tags ->> 'title'), 0)
                     + coalesce(octet_length(tags ->> 'album'), 0)), 0)::bigint AS tb
          FROM files WHERE peer_id = v_id) c
    WHERE p.id = v_id;
    RETURN v_id;
END
$$;
