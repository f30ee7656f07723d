//! Upload slots: at most `max` uploads at once, at most `per_address` requests (sending
//! or waiting) from one IP address, and one line, first come first served, for the
//! rest: a waiting request knows its place in it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use event_listener::{Event, EventListener};
use parking_lot::Mutex;

/// Every upload slot of one file server.
pub struct Slots {
    state: Mutex<State>,
    changed: Event,
    max: usize,
    per_address: usize,
}

#[derive(Default)]
struct State {
    active: usize,
    line: VecDeque<u64>,
    next: u64,
    by_address: HashMap<IpAddr, usize>,
}

/// A request's place: in line, or (once [`Ticket::try_take`] said so) holding a slot.
/// Dropping it leaves the line or frees the slot.
pub struct Ticket {
    slots: Arc<Slots>,
    ip: IpAddr,
    id: u64,
    granted: bool,
}

impl Slots {
    /// `max` uploads at once, `per_address` requests from one address.
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Slots {
            state: Mutex::default(),
            changed: Event::new(),
            max,
            per_address,
        })
    }

    /// Most requests (sending or waiting) one address may have.
    pub fn per_address(&self) -> usize {
        self.per_address
    }

    fn state(&self) -> parking_lot::MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Join the line from `ip`; `None` when that address has all it may.
    pub fn join(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let ip = ip.to_canonical();
        let mut state = self.state();
        let count = state.by_address.entry(ip).or_default();
        if *count >= self.per_address {
            return None;
        }
        *count += 1;
        let id = state.next;
        state.next += 1;
        state.line.push_back(id);
        Some(Ticket {
            slots: self.clone(),
            ip,
            id,
            granted: false,
        })
    }

    /// A future that completes at the next change (a slot freed, the line moved).
    /// Take it before looking, so that no change is missed.
    pub fn listen(&self) -> EventListener {
        self.changed.listen()
    }
}

impl Ticket {
    /// Take a slot if it is this request's turn and one is free; otherwise its
    /// position in line, from 1.
    pub fn try_take(&mut self) -> Result<(), u64> {
        let slots = &self.slots;
        let mut state = slots.state();
        let position = state
            .line
            .iter()
            .position(|&id| id == self.id)
            .expect("a ticket not granted is in line");
        if position == 0 && state.active < slots.max {
            state.line.pop_front();
            state.active += 1;
            self.granted = true;
            drop(state);
            slots.changed.notify(usize::MAX);
            return Ok(());
        }
        Err(position as u64 + 1)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let slots = &self.slots;
        let mut state = slots.state();
        if self.granted {
            state.active -= 1;
        } else {
            state.line.retain(|&id| id != self.id);
        }
        if let Some(count) = state.by_address.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                state.by_address.remove(&self.ip);
            }
        }
        drop(state);
        slots.changed.notify(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_moves_in_order_and_addresses_are_capped() {
        let slots = Slots::new(1, 2);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let mut first = slots.join(a).unwrap();
        assert_eq!(first.try_take(), Ok(()));
        let mut second = slots.join(a).unwrap();
        assert!(slots.join(a).is_none(), "a third from one address");
        let mut third = slots.join(b).unwrap();
        assert_eq!(second.try_take(), Err(1));
        assert_eq!(third.try_take(), Err(2));
        drop(first);
        assert_eq!(third.try_take(), Err(2), "no overtaking");
        assert_eq!(second.try_take(), Ok(()));
        drop(second);
        assert_eq!(third.try_take(), Ok(()));
        assert!(slots.join(a).is_some());
    }
}
