-- One nickname per look-alike class (issue 18, E8): `aIice` beside `alice` is refused.
-- The skeleton (case and ASCII confusables folded, `protocol::nickname_skeleton`) is
-- computed by the server and kept beside the nickname; rows bound before have none
-- until their peer registers again (each registration binds its nickname anew).
ALTER TABLE peers
    ADD COLUMN nickname_skeleton TEXT;

CREATE UNIQUE INDEX peers_nickname_skeleton ON peers (nickname_skeleton)
    WHERE nickname_skeleton IS NOT NULL;
