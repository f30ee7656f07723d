//! The commands about peers themselves rather than their files: `peers` lists them,
//! `ping` measures one, named by Peer ID, nickname or fingerprint prefix.

use crate::error::Result;
use crate::protocol::PeerRef;
use crate::shell::Shell;
use crate::shell::app::ping;
use crate::shell::commands::outcome::{Outcome, Pong};

impl Shell {
    pub(in crate::shell) async fn ping(&mut self, peer: PeerRef) -> Result<Outcome> {
        let info = self.client().await?.find_peer(&peer).await?;
        let rtt = ping(info.addr, self.config.limits()).await?;
        Ok(Outcome::Pong(Pong {
            peer_id: info.peer_id,
            addr: info.addr,
            rtt_ms: rtt.as_secs_f64() * 1e3,
        }))
    }

    pub(in crate::shell) async fn peers(&mut self) -> Result<Outcome> {
        let peers = self.client().await?.peers().await?;
        self.seen.lock().peers = peers.iter().map(|p| p.peer_id).collect();
        Ok(Outcome::Peers(peers))
    }
}
