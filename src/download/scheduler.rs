//! Which chunk goes to which peer: runs of pending chunks to whoever asks next (faster
//! peers ask more often), and in the end game a chunk a slow peer still holds to a
//! second one.

use std::ops::Range;

/// Chunks a peer is asked for at once when several peers share the work.
pub const RUN: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Pending,
    /// Being fetched by this many peers (two in the end game).
    InFlight(u8),
    Done,
}

/// The state of every chunk of one download.
#[derive(Debug)]
pub struct Scheduler {
    chunks: Vec<Chunk>,
    run: u64,
}

impl Scheduler {
    /// Chunks `received` are done already; runs are at most `run` chunks long.
    pub fn new(received: &[bool], run: u64) -> Self {
        Scheduler {
            chunks: received
                .iter()
                .map(|&r| if r { Chunk::Done } else { Chunk::Pending })
                .collect(),
            run,
        }
    }

    /// The next chunks for a peer: a run of pending ones, or in the end game (when
    /// `duplicate`) one that another peer is still fetching.
    pub fn next_run(&mut self, duplicate: bool) -> Option<Range<u64>> {
        if let Some(start) = self.chunks.iter().position(|c| *c == Chunk::Pending) {
            let mut end = start;
            while end < self.chunks.len()
                && self.chunks[end] == Chunk::Pending
                && ((end - start) as u64) < self.run
            {
                self.chunks[end] = Chunk::InFlight(1);
                end += 1;
            }
            return Some(start as u64..end as u64);
        }
        if !duplicate {
            return None;
        }
        let slow = self.chunks.iter().position(|c| *c == Chunk::InFlight(1))?;
        self.chunks[slow] = Chunk::InFlight(2);
        Some(slow as u64..slow as u64 + 1)
    }

    /// Record a chunk as in place; false if another peer was first.
    pub fn complete(&mut self, i: u64) -> bool {
        let chunk = &mut self.chunks[i as usize];
        let first = *chunk != Chunk::Done;
        *chunk = Chunk::Done;
        first
    }

    /// Whether chunk `i` is being fetched by one peer only (nobody else may write it).
    pub fn sole(&self, i: u64) -> bool {
        self.chunks[i as usize] == Chunk::InFlight(1)
    }

    /// Whether chunk `i` is in place.
    pub fn is_done(&self, i: u64) -> bool {
        self.chunks[i as usize] == Chunk::Done
    }

    /// Hand back chunks a peer will not deliver.
    pub fn give_back(&mut self, range: Range<u64>) {
        for i in range {
            let chunk = &mut self.chunks[i as usize];
            *chunk = match *chunk {
                Chunk::InFlight(n) if n > 1 => Chunk::InFlight(n - 1),
                Chunk::InFlight(_) => Chunk::Pending,
                other => other,
            };
        }
    }

    /// Per chunk: whether it is in place.
    pub fn received(&self) -> Vec<bool> {
        self.chunks.iter().map(|c| *c == Chunk::Done).collect()
    }

    /// Whether every chunk is in place.
    pub fn all_done(&self) -> bool {
        self.chunks.iter().all(|c| *c == Chunk::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_game_duplicates_only_what_is_in_flight() {
        let mut s = Scheduler::new(&[false; 6], 4);
        assert_eq!(s.next_run(true), Some(0..4));
        assert_eq!(s.next_run(true), Some(4..6));
        assert_eq!(s.next_run(false), None, "no end game without a buffer");
        assert!(s.sole(0));
        // Nothing pending: a second peer duplicates a chunk still in flight.
        assert_eq!(s.next_run(true), Some(0..1));
        assert!(s.complete(0));
        assert!(!s.complete(0), "the slower copy is not counted twice");
        s.give_back(1..4);
        assert_eq!(s.next_run(true), Some(1..4));
        for i in 1..6 {
            s.complete(i);
        }
        assert!(s.all_done());
        assert_eq!(s.next_run(true), None);
    }

    #[test]
    fn chunks_already_received_are_never_scheduled() {
        let mut s = Scheduler::new(&[true, false, true], 4);
        assert_eq!(s.next_run(true), Some(1..2));
        assert_eq!(s.next_run(true), Some(1..2), "end game");
        assert_eq!(s.next_run(true), None);
    }
}
