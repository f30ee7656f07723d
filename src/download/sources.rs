//! Which peers a file is fetched from: every peer sharing exactly the same contents,
//! or the one the user named.

use crate::error::{Error, Result};
use crate::protocol::Hit;

/// The peers to download `name` from (only `peer` when given), best first, or why
/// there are none: nobody shares it, `peer` does not, or peers share different contents.
pub fn sources(name: &str, peer: Option<u64>, hits: Vec<Hit>) -> Result<Vec<Hit>> {
    if hits.is_empty() {
        return Err(Error::NotFound(format!(
            "no peer shares {name:?}; `search` finds names that match part of it"
        )));
    }
    let ids = || {
        hits.iter()
            .map(|h| h.peer_id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(peer) = peer {
        return match hits.iter().find(|h| h.peer_id == peer) {
            Some(hit) => Ok(vec![hit.clone()]),
            None => Err(Error::NotFound(format!(
                "peer {peer} does not share {name:?}; it is shared by peer(s) {}",
                ids()
            ))),
        };
    }
    let first = &hits[0].file.sha256;
    if hits.iter().any(|h| &h.file.sha256 != first) {
        let versions: Vec<String> = hits
            .iter()
            .map(|h| format!("peer {} has sha256 {}", h.peer_id, &h.file.sha256[..12]))
            .collect();
        return Err(Error::msg(format!(
            "peers share different contents under {name:?} ({}); choose one with `get {name} <peer>`",
            versions.join(", ")
        )));
    }
    Ok(hits)
}
