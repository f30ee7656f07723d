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
