//! Which peers a file is fetched from: every peer sharing exactly the same contents,
//! or the one the user named.

use crate::error::{Error, Result};
use crate::protocol::{self, Hit, PeerRef};

/// Hex digits of a SHA-256 quoted in messages.
const SHORT_SHA: usize = 12;

/// The peers to download `name` from (only `peer` when given: a Peer ID, nickname or
/// fingerprint prefix), best first, or why there are none: nobody shares it, `peer` does
/// not, `peer` names several, peers share different contents, or the index answered with
/// a file of another name (the download is saved under `name`, never under a name the
/// index chose).
pub fn sources(name: &str, peer: Option<&PeerRef>, hits: Vec<Hit>) -> Result<Vec<Hit>> {
    if let Some(other) = hits.iter().find(|h| h.file.name != name) {
        return Err(Error::malformed(format!(
            "the index answered a lookup of {name:?} with a file named {:?}; nothing was \
             downloaded (is the index trustworthy?)",
            protocol::truncate(&other.file.name)
        )));
    }
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
        let named = protocol::peer_ref::best(peer, hits.iter(), |h| {
            (h.peer_id, h.fingerprint, h.nickname.clone())
        });
        return match named.as_slice() {
            [hit] => Ok(vec![(*hit).clone()]),
            [] => Err(Error::NotFound(format!(
                "peer {peer} does not share {name:?}; it is shared by peer(s) {}",
                ids()
            ))),
            several => Err(Error::Usage(format!(
                "{peer} names {} peers sharing {name:?} (peer(s) {}); give more of the \
                 fingerprint, or the Peer ID",
                several.len(),
                several
                    .iter()
                    .map(|h| h.peer_id.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        };
    }
    let first = &hits[0].file.sha256;
    if hits.iter().any(|h| &h.file.sha256 != first) {
        let versions: Vec<String> = hits
            .iter()
            .map(|h| {
                format!(
                    "peer {} has sha256 {}",
                    h.peer_id,
                    h.file.sha256.chars().take(SHORT_SHA).collect::<String>()
                )
            })
            .collect();
        return Err(Error::msg(format!(
            "peers share different contents under {name:?} ({}); choose one by naming its peer \
             after the name: `get {name} <peer>` or `link {name} <peer>`",
            versions.join(", ")
        )));
    }
    Ok(hits)
}
