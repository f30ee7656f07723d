//! The write side of the in-memory store: adding and replacing a peer's file records
//! (each with the time the index first saw it), unlinking them from the name chains, and
//! compacting the arenas once they are mostly dead.

use super::search::GROUP;
use super::trigram::{BLOOM_WORDS, Trigrams};
use super::{FileRec, Inner, NONE, PeerRec, REMEMBERED_TOKENS, from_hex, name_hash, name_of};
use crate::index::store::{Result, StoreError};
use crate::protocol::FileEntry;

impl Inner {
    pub(super) fn owned(&mut self, peer: u64, session: u64) -> Result<&mut PeerRec> {
        match self.peers.get_mut(&peer) {
            Some(entry) if entry.session == session => Ok(entry),
            _ => Err(StoreError::NotOwner),
        }
    }

    pub(super) fn remove_peer(&mut self, peer: u64) {
        let Some(entry) = self.peers.remove(&peer) else {
            return;
        };
        for file in entry.files {
            self.unlink(file);
        }
        self.departed.push_back(entry.token);
        while self.departed.len() > REMEMBERED_TOKENS {
            let Some(old) = self.departed.pop_front() else {
                break;
            };
            if let Some(&id) = self.tokens.get(&old)
                && !self.peers.contains_key(&id)
            {
                self.tokens.remove(&old);
                self.owners.remove(&id);
                // A key forgotten loses its nickname with its ID.
                if let Some(name) = self.nicknames.remove(&id) {
                    self.nickname_owners
                        .remove(&crate::protocol::nickname_skeleton(&name));
                }
            }
        }
        self.compact_if_sparse();
    }

    /// The record of `peer`'s file named `name`.
    pub(super) fn find(&self, peer: u64, name: &str) -> Option<u32> {
        let mut at = *self.by_name.get(&name_hash(name))?;
        while at != NONE {
            let rec = &self.files[at as usize];
            if u64::from(rec.peer) == peer && name_of(&self.names, rec) == name {
                return Some(at);
            }
            at = rec.next;
        }
        None
    }

    /// Add or replace `peer`'s file, seen at `now`; returns its record. A file that
    /// changed takes `now` as its time; one that did not keeps the time it was first seen.
    pub(super) fn insert(&mut self, peer: u64, file: FileEntry, now: u32) -> u32 {
        let sha256 = from_hex(&file.sha256);
        let chunks = from_hex(&file.chunks);
        if let Some(existing) = self.find(peer, &file.name) {
            let rec = &mut self.files[existing as usize];
            if rec.sha256 != sha256 || rec.size != file.size {
                rec.shared_at = now;
            }
            let old = std::mem::replace(&mut rec.size, file.size);
            rec.sha256 = sha256;
            rec.chunks = chunks;
            if let Some(p) = self.peers.get_mut(&peer) {
                p.bytes = p.bytes - old + file.size;
            }
            return existing;
        }
        let at = self.arena.len() as u32;
        self.arena.extend(file.name.to_lowercase().bytes());
        self.arena.push(b'\n');
        let hash = name_hash(&file.name);
        let head = self.by_name.get(&hash).copied().unwrap_or(NONE);
        let name_at = self.names.len() as u32;
        self.names.extend_from_slice(file.name.as_bytes());
        let rec = FileRec {
            name_at,
            name_len: file.name.len() as u16,
            // Stores only ever hold IDs of at most ID_SPACE.
            peer: u32::try_from(peer).unwrap_or(u32::MAX),
            shared_at: now,
            next: head,
            at,
            size: file.size,
            sha256,
            chunks,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.files[slot as usize] = rec;
                slot
            }
            None => {
                self.files.push(rec);
                (self.files.len() - 1) as u32
            }
        };
        self.by_name.insert(hash, slot);
        self.starts.push((at, slot));
        let group = (self.starts.len() - 1) / GROUP;
        if group == self.blooms.len() {
            self.blooms.push([0; BLOOM_WORDS]);
        }
        let end = self.arena.len() - 1;
        Trigrams::add(&mut self.blooms[group], &self.arena[at as usize..end]);
        let name_len = file.name.len() as u64;
        self.name_bytes += name_len;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.files.insert(slot);
            p.bytes += self.files[slot as usize].size;
            p.name_bytes += name_len;
        }
        slot
    }

    /// Take a record out of the name chains and the arena, and free its slot.
    pub(super) fn unlink(&mut self, slot: u32) {
        let hash = name_hash(name_of(&self.names, &self.files[slot as usize]));
        let next = self.files[slot as usize].next;
        match self.by_name.get(&hash).copied() {
            Some(head) if head == slot => {
                if next == NONE {
                    self.by_name.remove(&hash);
                } else {
                    self.by_name.insert(hash, next);
                }
            }
            Some(mut at) => {
                while at != NONE {
                    let following = self.files[at as usize].next;
                    if following == slot {
                        self.files[at as usize].next = next;
                        break;
                    }
                    at = following;
                }
            }
            None => {}
        }
        let lower = self.lower(slot).len();
        let (owner, name_len) = {
            let rec = &self.files[slot as usize];
            (u64::from(rec.peer), u64::from(rec.name_len))
        };
        self.name_bytes -= name_len;
        if let Some(p) = self.peers.get_mut(&owner) {
            p.name_bytes -= name_len;
        }
        let rec = &mut self.files[slot as usize];
        self.dead_bytes += lower + 1 + usize::from(rec.name_len);
        rec.at = NONE;
        self.free.push(slot);
    }

    /// Rebuild the arena once most of it belongs to removed files.
    pub(super) fn compact_if_sparse(&mut self) {
        let size = self.arena.len() + self.names.len();
        if self.dead_bytes < 1 << 20 || self.dead_bytes * 2 < size {
            return;
        }
        let mut arena = Vec::with_capacity(self.arena.len());
        let mut names = Vec::with_capacity(self.names.len());
        let mut starts = Vec::with_capacity(self.starts.len());
        for &(at, slot) in &self.starts {
            if self.files[slot as usize].at != at {
                continue;
            }
            let lower_len = self.lower(slot).len() + 1;
            let rec = &mut self.files[slot as usize];
            let new_at = arena.len() as u32;
            arena.extend_from_slice(&self.arena[at as usize..at as usize + lower_len]);
            let name = rec.name_at as usize..rec.name_at as usize + usize::from(rec.name_len);
            rec.name_at = names.len() as u32;
            names.extend_from_slice(&self.names[name]);
            rec.at = new_at;
            starts.push((new_at, slot));
        }
        arena.shrink_to_fit();
        names.shrink_to_fit();
        self.arena = arena;
        self.names = names;
        self.starts = Vec::with_capacity(starts.len());
        self.blooms = Vec::with_capacity(starts.len() / GROUP + 1);
        for (at, slot) in starts {
            self.starts.push((at, slot));
            let lower = self.lower(slot).to_vec();
            self.index_trigrams(&lower);
        }
        self.dead_bytes = 0;
    }
}
