//! What a sharer's index may make it do (`docs/NAT.md`): every push (a reverse
//! connection, a hole punch, a relay join) is obeyed only within `[peer] max_pushes`
//! per [`PUSH_WINDOW`] and `[peer] max_pushes_at_once` carried out at once, whatever
//! the index says. This is the bound that holds when the index lies (a pinned index
//! may still aim `punch_to` and `connect_to` anywhere) or when several servers each
//! keep their own budgets. A push beyond it is ignored with a log line; its downloader
//! falls back to the relay when its wait runs out.
//!
//! "At once" covers the attempt: connecting or punching, the preamble and the TLS
//! handshake. Once the connection serves, it is an upload like any other, bounded by
//! the upload slots.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use smol::lock::{Semaphore, SemaphoreGuardArc};

/// The window `max_pushes` counts over.
pub const PUSH_WINDOW: Duration = Duration::from_secs(10);

/// How many pushes a sharer obeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushLimits {
    /// Per [`PUSH_WINDOW`] (`[peer] max_pushes`).
    pub per_window: usize,
    /// At once (`[peer] max_pushes_at_once`).
    pub at_once: usize,
}

/// Why a push was not obeyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// `per_window` pushes were obeyed in the last [`PUSH_WINDOW`].
    Window,
    /// `at_once` pushes are being carried out.
    AtOnce,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Ignored::Window => {
                "this peer carried out `[peer] max_pushes` pushes in the last 10 s already"
            }
            Ignored::AtOnce => "this peer is carrying out `[peer] max_pushes_at_once` pushes",
        })
    }
}

/// Pushes obeyed and ignored since the share started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Carried out.
    pub obeyed: u64,
    /// Ignored, over a bound.
    pub ignored: u64,
}

/// The gate every push passes, shared by a share's sessions.
#[derive(Debug)]
pub struct PushGate {
    limits: PushLimits,
    running: Arc<Semaphore>,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    recent: VecDeque<Instant>,
    counts: PushCounts,
}

/// Held while one push is carried out; dropping it lets the next run.
#[derive(Debug)]
pub struct PushPermit {
    _running: SemaphoreGuardArc,
}

impl PushGate {
    /// A gate within `limits`.
    pub fn new(limits: PushLimits) -> Self {
        PushGate {
            limits,
            running: Arc::new(Semaphore::new(limits.at_once)),
            state: Mutex::default(),
        }
    }

    /// Let one push through, or say which bound it is over (then it counts as ignored
    /// and takes nothing from the window).
    pub fn admit(&self) -> Result<PushPermit, Ignored> {
        let now = Instant::now();
        let mut state = self.state.lock();
        while state
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) >= PUSH_WINDOW)
        {
            state.recent.pop_front();
        }
        let admitted = if state.recent.len() >= self.limits.per_window {
            Err(Ignored::Window)
        } else {
            self.running.try_acquire_arc().ok_or(Ignored::AtOnce)
        };
        match admitted {
            Ok(guard) => {
                state.recent.push_back(now);
                state.counts.obeyed += 1;
                Ok(PushPermit { _running: guard })
            }
            Err(why) => {
                state.counts.ignored += 1;
                Err(why)
            }
        }
    }

    /// Pushes obeyed and ignored so far.
    pub fn counts(&self) -> PushCounts {
        self.state.lock().counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gate_holds_its_window_and_its_running_pushes() {
        let gate = PushGate::new(PushLimits {
            per_window: 3,
            at_once: 2,
        });
        let first = gate.admit().unwrap();
        let second = gate.admit().unwrap();
        assert_eq!(gate.admit().unwrap_err(), Ignored::AtOnce);
        drop(first);
        let third = gate.admit().unwrap();
        drop((second, third));
        assert_eq!(gate.admit().unwrap_err(), Ignored::Window);
        assert_eq!(
            gate.counts(),
            PushCounts {
                obeyed: 3,
                ignored: 2
            }
        );
    }
}
