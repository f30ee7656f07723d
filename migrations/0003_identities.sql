-- Identities (protocol version 2): a peer is the key it proves in the TLS handshake.
-- Its fingerprint (base32 SHA-256 of the public key) is also its token, so the same key
-- gets the same Peer ID back on any server; `nickname` is an optional name bound to it,
-- first come first served.
ALTER TABLE peers
    ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '',
    ADD COLUMN nickname TEXT;

CREATE UNIQUE INDEX peers_nickname ON peers (lower(nickname)) WHERE nickname IS NOT NULL;
