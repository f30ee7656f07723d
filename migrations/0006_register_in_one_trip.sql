-- A registration in one round trip: the peer's row, the files it no longer shares, the
-- files it shares now and its counts, in one call (one implicit transaction) instead of
-- six statements (BEGIN, four, COMMIT), each a round trip from the index server.
-- PL/pgSQL keeps the plans of its statements for the life of the connection.
CREATE FUNCTION napster_register(
    p_token TEXT, p_server TEXT, p_session BIGINT, p_host TEXT, p_port INTEGER,
    p_now BIGINT, p_fingerprint TEXT, p_id_hint BIGINT, p_reachable BOOLEAN,
    p_names TEXT[], p_lower TEXT[], p_sizes BIGINT[], p_hashes BYTEA[], p_chunks BYTEA[]
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
        INSERT INTO files (peer_id, shared_at, name, lower_name, size, sha256, chunks)
        SELECT v_id, p_now, * FROM UNNEST(p_names, p_lower, p_sizes, p_hashes, p_chunks)
        ON CONFLICT (peer_id, name) DO UPDATE
        SET shared_at = CASE WHEN files.sha256 = EXCLUDED.sha256 AND files.size = EXCLUDED.size
                        THEN files.shared_at ELSE EXCLUDED.shared_at END,
            size = EXCLUDED.size, sha256 = EXCLUDED.sha256, chunks = EXCLUDED.chunks;
    END IF;
    UPDATE peers p SET files = c.n, bytes = c.b, name_bytes = c.nb
    FROM (SELECT count(*) AS n, coalesce(sum(size), 0)::bigint AS b,
                 coalesce(sum(octet_length(name)), 0)::bigint AS nb
          FROM files WHERE peer_id = v_id) c
    WHERE p.id = v_id;
    RETURN v_id;
END
$$;

-- A search scans the trigram index's whole pending list (rows inserted but not yet
-- merged into the index), and the insert that finds the list full merges all of it
-- while its caller waits: with the default 4 MB, searches right after a burst of
-- registrations took tens of milliseconds more and single inserts over a second. A
-- smaller list keeps both short; the index server also merges it in the background
-- after every burst (`gin_clean_pending_list`, with its `ANALYZE`).
ALTER INDEX files_lower_name_trgm SET (gin_pending_list_limit = 512);
