//! What one asker may make a given sharer do (`docs/NAT.md`): every push (`connect`,
//! `punch`, `relay`) counts against the pair (asking key, sharer) and the pair (asking
//! source address, sharer) over a sliding [`PUSH_WINDOW`], for the whole server, on
//! whatever connections the requests come. A new connection, or twenty at once, gets no
//! fresh budget.
//!
//! The ledger is keyed by the sharer's key, not by a connection or by this server's
//! sessions, so that it means the same on every server: moving it into the shared
//! database later makes it hold for a cluster. Today it is per server.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::protocol::Fingerprint;

/// The window the push budgets count over.
pub const PUSH_WINDOW: Duration = Duration::from_secs(10);

/// How many pushes one asker may cause a given sharer per [`PUSH_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushLimits {
    /// Per asking key (`[index] pushes_per_key`).
    pub per_key: usize,
    /// Per asking source address (`[index] pushes_per_address`).
    pub per_address: usize,
}

/// Who asks: by key or by source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Asker {
    Key(Fingerprint),
    Address(IpAddr),
}

/// Which budget a refused push ran out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// The asking key's, for this sharer.
    Key,
    /// The asking address's, for this sharer.
    Address,
}

/// The recent pushes of every (asker, sharer) pair.
#[derive(Debug)]
pub struct PushBudget {
    limits: PushLimits,
    recent: Mutex<Recent>,
}

#[derive(Debug)]
struct Recent {
    pushes: HashMap<(Asker, Fingerprint), VecDeque<Instant>>,
    /// When pairs with no push in the window were last forgotten.
    swept: Instant,
}

impl PushBudget {
    /// A budget of `limits` per window.
    pub fn new(limits: PushLimits) -> Self {
        PushBudget {
            limits,
            recent: Mutex::new(Recent {
                pushes: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }

    /// Count one push to `sharer` asked by `key` from `from`, unless either pair has
    /// used its budget in the window (then nothing is counted).
    pub fn take(
        &self,
        key: Fingerprint,
        from: IpAddr,
        sharer: Fingerprint,
    ) -> Result<(), Exceeded> {
        let now = Instant::now();
        let mut recent = self.recent.lock();
        // Pairs idle for a window hold nothing: forgetting them keeps the ledger as
        // small as the pushes of the last window or two.
        if now.duration_since(recent.swept) >= PUSH_WINDOW {
            recent.pushes.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|&at| now.duration_since(at) < PUSH_WINDOW)
            });
            recent.swept = now;
        }
        let checks = [
            (Asker::Key(key), self.limits.per_key, Exceeded::Key),
            (
                Asker::Address(from.to_canonical()),
                self.limits.per_address,
                Exceeded::Address,
            ),
        ];
        for (asker, limit, exceeded) in checks {
            let times = recent.pushes.entry((asker, sharer)).or_default();
            while times
                .front()
                .is_some_and(|&at| now.duration_since(at) >= PUSH_WINDOW)
            {
                times.pop_front();
            }
            if times.len() >= limit {
                return Err(exceeded);
            }
        }
        for (asker, ..) in checks {
            recent
                .pushes
                .entry((asker, sharer))
                .or_default()
                .push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_and_an_address_each_have_a_budget_per_sharer() {
        let budget = PushBudget::new(PushLimits {
            per_key: 2,
            per_address: 3,
        });
        let [alice, bob, carol] = [1, 2, 3].map(|n| Fingerprint([n; 32]));
        let (sharer, other) = (Fingerprint([8; 32]), Fingerprint([9; 32]));
        let (here, there) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        assert_eq!(budget.take(alice, here, sharer), Ok(()));
        assert_eq!(budget.take(alice, there, sharer), Ok(()));
        // The key's budget holds whatever address it comes from.
        assert_eq!(budget.take(alice, there, sharer), Err(Exceeded::Key));
        // The address's holds whatever key asks.
        assert_eq!(budget.take(bob, here, sharer), Ok(()));
        assert_eq!(budget.take(carol, here, sharer), Ok(()));
        assert_eq!(budget.take(carol, here, sharer), Err(Exceeded::Address));
        // Another sharer is another budget.
        assert_eq!(budget.take(alice, here, other), Ok(()));
    }
}
