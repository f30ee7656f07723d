//! The commands about peers themselves rather than their files: `peers` lists them,
//! `ping` measures one, named by Peer ID, nickname or fingerprint prefix.

use super::app::ping;
use super::output::Record;
use super::{Shell, render};
use crate::error::Result;
use crate::protocol::PeerRef;

impl Shell {
    pub(super) async fn ping(&mut self, peer: PeerRef) -> Result<String> {
        let mut out = String::new();
        let info = self.client().await?.find_peer(&peer).await?;
        let peer = info.peer_id;
        let rtt = ping(info.addr, self.config.limits()).await?;
        let (addr, rtt_ms) = (info.addr, rtt.as_secs_f64() * 1e3);
        self.emit(Record::Pong {
            peer_id: peer,
            at: addr.into(),
            rtt_ms,
        });
        put!(
            out,
            "peer {peer} ({}): rtt {:.2} ms",
            info.addr,
            rtt.as_secs_f64() * 1e3
        );
        Ok(out)
    }

    pub(super) async fn peers(&mut self) -> Result<String> {
        let mut out = String::new();
        let peers = self.client().await?.peers().await?;
        self.seen.lock().peers = peers.iter().map(|p| p.peer_id).collect();
        self.rows = true;
        if peers.is_empty() {
            put!(out, "no peer is registered with the index");
        } else {
            self.records.extend(peers.iter().map(Record::peer));
            put!(out, "{}", render::peers(&peers));
        }
        Ok(out)
    }
}
