-- Reachability (protocol version 3): whether the index could connect back to the peer's
-- file server when it registered; a peer that could not be reached is behind a NAT and is
-- reached by a reverse connection (docs/NAT.md).
ALTER TABLE peers ADD COLUMN reachable BOOLEAN NOT NULL DEFAULT true;
