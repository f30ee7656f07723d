//! The part file of a download, from creation to its end, in one owner ([`PartFile`]):
//! a hidden file named after the download and its contents, locked while in use, and
//! beside it the resume state ([`ResumeState`]): which chunks arrived, and the SHA-256
//! state over the chunks already hashed in order, so that a resume neither fetches nor
//! hashes them again. A part file is either kept for a resume or removed with its state
//! ([`PartFile::discard`]); the verified file gets its final name through
//! [`PartFile::finish`].
//!
//! The hash state is trusted only while the part file is exactly as it was when the
//! state was saved (same length and modification time): after a crash, or if anything
//! else touched the file, the chunks that arrived are kept but hashed again from disk,
//! so the whole-file SHA-256 always covers the bytes that take the final name.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use tracing::warn;

use super::place::{MAX_COPIES, PART_SUFFIX, numbered, same_content};
use crate::disk::{self, Dir};
use crate::error::{Error, IoContext, Result};
use crate::protocol::{self, FileEntry};

/// Longest file name kept in a part file's name, so that the part file and its state
/// file stay within the usual 255-byte limit.
const PART_NAME_KEEP: usize = 192;

/// Most bytes of a resume state read: one character per chunk and the fixed fields, with
/// room to spare; a larger file at the state's name is no state of ours.
const MAX_STATE_BYTES: u64 = protocol::MAX_CHUNKS + 4096;

/// Hex digits of the file's SHA-256 in a part file's name.
const PART_NAME_HASH: usize = 16;

/// The hidden part file of a download: named after the file and its content, so that a
/// later `get` of the same content finds and resumes it.
fn part_name(file_name: &str, sha256: &str) -> String {
    let mut keep = file_name.len().min(PART_NAME_KEEP);
    while !file_name.is_char_boundary(keep) {
        keep -= 1;
    }
    // The hash should be 64 hex digits (replies are checked), but a part file's name
    // never depends on that: only hex digits are kept, however few there are.
    let tag: String = sha256
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(PART_NAME_HASH)
        .collect();
    format!(".{}.{tag}{PART_SUFFIX}", &file_name[..keep])
}

/// A download's part file, open and locked, with the resume state beside it.
///
/// Everything is opened, created, renamed and removed relative to a handle on the
/// downloads folder, through no symlink ([`Dir`]): a symlink planted at the part file's
/// name is refused with an error, one planted at the state's names is replaced, never
/// written through.
pub struct PartFile {
    file: File,
    dir: Dir,
    name: String,
    state_name: String,
}

impl PartFile {
    /// Open (creating it if need be) the part file for `entry` saved as `file_name` in
    /// `dir`, sized to the file, locked against another napster; with the saved resume
    /// state when there is one that describes this very file.
    pub fn open(dir: &Path, file_name: &str, entry: &FileEntry) -> Result<(PartFile, ResumeState)> {
        let folder = Dir::open(dir)
            .context(|| format!("cannot use the downloads folder {}", dir.display()))?;
        let name = part_name(file_name, &entry.sha256);
        let state_name = format!("{name}.state");
        let path = dir.join(&name);
        let existed = folder.identity(&name).is_ok();
        let file = folder.create(&name).map_err(|e| {
            Error::msg(format!(
                "cannot use the part file {}: {e}; remove it and run get again",
                path.display()
            ))
        })?;
        if file.try_lock().is_err() {
            return Err(Error::msg(format!(
                "another napster is downloading {file_name} into {} right now (its part file \
                 {name} is locked); wait for it, or use another downloads folder",
                dir.display()
            )));
        }
        file.set_len(entry.size)
            .context(|| format!("making room for {file_name}"))?;
        // A state without its part file describes nothing that exists: never trust it.
        let saved = existed
            .then(|| ResumeState::load(&folder, &state_name, entry, &file))
            .flatten();
        let state = saved.unwrap_or_else(|| ResumeState::fresh(entry));
        let part = PartFile {
            file,
            dir: folder,
            name,
            state_name,
        };
        Ok((part, state))
    }

    /// The open part file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Record progress in the resume state.
    pub fn save(&self, state: &mut ResumeState, received: Vec<bool>, hashed: u64, hasher: &Sha256) {
        state.save(
            &self.dir,
            &self.state_name,
            &self.file,
            received,
            hashed,
            hasher,
        );
    }

    /// Nothing here is worth resuming: remove the part file and its state.
    pub fn discard(self) {
        drop(self.file.unlock());
        let _ = self.dir.remove(&self.name);
        let _ = self.dir.remove(&self.state_name);
    }

    /// Remove the part file and resume state of `entry` saved as `file_name` in `dir`,
    /// if there are any (a cancelled download); refused while another napster uses it.
    pub fn remove(dir: &Path, file_name: &str, entry: &FileEntry) -> Result<()> {
        let folder = Dir::open(dir)
            .context(|| format!("cannot use the downloads folder {}", dir.display()))?;
        if folder
            .identity(&part_name(file_name, &entry.sha256))
            .is_err()
        {
            return Ok(());
        }
        let (part, _) = PartFile::open(dir, file_name, entry)?;
        part.discard();
        Ok(())
    }

    /// The verified part file takes its final name in `dir` (see `place`);
    /// returns the path and whether an identical file was already there.
    pub fn finish(self, dir: &Path, file_name: &str, entry: &FileEntry) -> Result<(PathBuf, bool)> {
        drop(self.file.unlock());
        let placed = place(&self, dir, file_name, &entry.sha256, entry.size)?;
        let _ = self.dir.remove(&self.name);
        let _ = self.dir.remove(&self.state_name);
        Ok(placed)
    }
}

/// Bytes the kept part file of `entry` saved as `file_name` in `dir` holds, as its
/// resume state says (0 when there is none), read without opening the part file: what
/// `transfers` shows of a download kept from an earlier run.
pub fn kept_bytes(dir: &Path, file_name: &str, entry: &FileEntry) -> u64 {
    let state_name = format!("{}.state", part_name(file_name, &entry.sha256));
    let Ok(file) = Dir::open(dir).and_then(|d| d.open_file(&state_name)) else {
        return 0;
    };
    let mut text = String::new();
    if file
        .take(MAX_STATE_BYTES)
        .read_to_string(&mut text)
        .is_err()
    {
        return 0;
    }
    let Ok(state) = serde_json::from_str::<ResumeState>(&text) else {
        return 0;
    };
    if state.sha256 != entry.sha256 || state.size != entry.size {
        return 0;
    }
    let chunk = protocol::chunk_size(entry.size);
    (0u64..)
        .zip(&state.received)
        .filter(|(_, received)| **received)
        .map(|(i, _)| entry.size.saturating_sub(i * chunk).min(chunk))
        .sum()
}

/// Give the verified part file its final name without ever replacing a different file:
/// an identical file already there is kept, a different one makes `name (1).ext`.
/// The final name must end up being the very file that was verified: if something else
/// took the part file's name meanwhile (a symlink), the name is taken back and refused.
fn place(
    part: &PartFile,
    dir: &Path,
    file_name: &str,
    sha256: &str,
    size: u64,
) -> Result<(PathBuf, bool)> {
    let verified = part
        .file
        .metadata()
        .map(|m| disk::identity(&m))
        .context(|| format!("reading {}", part.name))?;
    let folder = &part.dir;
    for n in 0..MAX_COPIES {
        let name = numbered(file_name, n);
        let candidate = dir.join(&name);
        // A hard link fails rather than replace an existing file, atomically.
        match folder.hard_link(&part.name, &name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if same_content(dir, &name, sha256, size) {
                    return Ok((candidate, true));
                }
                continue;
            }
            Err(_) if folder.identity(&name).is_err() => {
                // File systems without hard links: rename, checked just above.
                folder
                    .rename(&part.name, &name)
                    .context(|| format!("moving the download to {}", candidate.display()))?;
            }
            Err(e) => {
                return Err(Error::io(format!("saving {}", candidate.display()), e));
            }
        }
        if folder.identity(&name).ok() != Some(verified) {
            let _ = folder.remove(&name);
            return Err(Error::msg(format!(
                "something replaced the part file {} in {} while it was downloaded; nothing was saved: run get again",
                part.name,
                dir.display()
            )));
        }
        return Ok((candidate, false));
    }
    Err(Error::msg(format!(
        "too many different files named like {file_name} in {}",
        dir.display()
    )))
}

/// The saved state of a part file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeState {
    size: u64,
    sha256: String,
    chunks: String,
    /// Per chunk: whether its bytes are in the part file.
    #[serde(with = "bits")]
    pub received: Vec<bool>,
    /// Chunks fed, in order, to the hash state below.
    pub hashed: u64,
    /// The SHA-256 state after `hashed` chunks, hex.
    midstate: String,
    /// Length and modification time of the part file when this was saved.
    stamp: String,
}

/// What identifies the part file's current contents for [`ResumeState`].
fn stamp(part: &File) -> String {
    let Ok(meta) = part.metadata() else {
        return String::new();
    };
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}:{modified}", meta.len())
}

mod bits {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bits: &[bool], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(
            &bits
                .iter()
                .map(|&b| if b { '1' } else { '0' })
                .collect::<String>(),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<bool>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(text.chars().map(|c| c == '1').collect())
    }
}

impl ResumeState {
    /// Nothing received yet.
    pub fn fresh(file: &FileEntry) -> Self {
        ResumeState {
            size: file.size,
            sha256: file.sha256.clone(),
            chunks: file.chunks.clone(),
            received: vec![false; protocol::chunk_count(file.size) as usize],
            hashed: 0,
            midstate: hex::encode(SerializableState::serialize(&Sha256::default()).as_slice()),
            stamp: String::new(),
        }
    }

    /// The saved state for `file` and its part file `part`, if there is one and it
    /// describes this very file (a symlink or anything but a regular file at the state's
    /// name is not read).
    fn load(dir: &Dir, name: &str, file: &FileEntry, part: &File) -> Option<Self> {
        let mut text = String::new();
        let opened = dir.open_file(name);
        if let Err(e) = &opened
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!("ignoring the resume state {name}: {e}");
        }
        opened
            .ok()?
            .take(MAX_STATE_BYTES)
            .read_to_string(&mut text)
            .ok()?;
        let mut state: ResumeState = serde_json::from_str(&text).ok()?;
        let fits = state.size == file.size
            && state.sha256 == file.sha256
            && state.chunks == file.chunks
            && state.received.len() as u64 == protocol::chunk_count(file.size)
            && state.hashed <= state.received.len() as u64
            && state.received[..state.hashed as usize].iter().all(|&r| r)
            && state.restore().is_some();
        if !fits {
            return None;
        }
        if state.stamp != stamp(part) {
            // Written after the save (a crash) or touched by something else: keep the
            // chunks, but hash them again from what is on disk.
            state.hashed = 0;
            state.midstate = ResumeState::fresh(file).midstate;
        }
        Some(state)
    }

    fn restore(&self) -> Option<Sha256> {
        let bytes: Vec<u8> = (0..self.midstate.len() / 2)
            .map(|i| u8::from_str_radix(self.midstate.get(2 * i..2 * i + 2)?, 16).ok())
            .collect::<Option<_>>()?;
        let state = SerializedState::<Sha256>::try_from(bytes.as_slice()).ok()?;
        Sha256::deserialize(&state).ok()
    }

    /// The hash state to continue from.
    pub fn hasher(&self) -> Sha256 {
        self.restore().unwrap_or_default()
    }

    /// Record progress; written to a temporary file and renamed, so a crash leaves the
    /// old state or the new one, never half of one. Whatever had the temporary name is
    /// replaced (a symlink there is removed, never written through).
    fn save(
        &mut self,
        dir: &Dir,
        name: &str,
        part: &File,
        received: Vec<bool>,
        hashed: u64,
        hasher: &Sha256,
    ) {
        self.stamp = stamp(part);
        self.received = received;
        self.hashed = hashed;
        self.midstate = hex::encode(SerializableState::serialize(hasher).as_slice());
        let temp = format!("{name}.tmp");
        let text = serde_json::to_string(self).expect("the state serializes");
        let saved = dir
            .create_new(&temp)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .and_then(|()| dir.rename(&temp, name));
        if let Err(e) = saved {
            warn!("cannot save the resume state {name}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;

    #[test]
    fn part_names_survive_short_or_non_ascii_hashes() {
        for sha in ["", "ab", "0123456789abcdeé", "é", "\u{202e}/../x"] {
            let name = part_name("song.mp3", sha);
            assert!(!name.contains('/') && name.ends_with(PART_SUFFIX), "{name}");
        }
    }

    #[test]
    fn part_names_stay_short() {
        let long = "é".repeat(120);
        let name = part_name(&long, &"a".repeat(64));
        assert!(name.len() + ".state.tmp".len() <= 255, "{}", name.len());
        assert!(name.ends_with(".aaaaaaaaaaaaaaaa.napster-part"));
    }

    fn entry(size: u64) -> FileEntry {
        FileEntry {
            tags: None,
            name: "f".into(),
            size,
            sha256: "1".repeat(64),
            chunks: "2".repeat(64),
        }
    }

    #[test]
    fn the_hash_state_continues_where_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Dir::open(dir.path()).unwrap();
        let file = entry(5 << 30);
        let part = File::create(dir.path().join("x.part")).unwrap();
        let mut state = ResumeState::fresh(&file);
        let mut hasher = Sha256::new();
        hasher.update(b"first half, ");
        let mut received = vec![false; state.received.len()];
        received[0] = true;
        state.save(&folder, "x.state", &part, received.clone(), 1, &hasher);

        let loaded =
            ResumeState::load(&folder, "x.state", &file, &part).expect("the state fits the file");
        assert_eq!(loaded.hashed, 1);
        assert!(loaded.received[0] && !loaded.received[1]);
        let mut resumed = loaded.hasher();
        resumed.update(b"second half");
        assert_eq!(
            resumed.finalize(),
            Sha256::digest(b"first half, second half")
        );
    }

    #[test]
    fn a_state_for_other_contents_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let folder = Dir::open(dir.path()).unwrap();
        let file = entry(10 << 20);
        let part = File::create(dir.path().join("x.part")).unwrap();
        let mut state = ResumeState::fresh(&file);
        state.save(
            &folder,
            "x.state",
            &part,
            vec![true; 10],
            10,
            &Sha256::new(),
        );
        let mut other = file.clone();
        other.sha256 = "3".repeat(64);
        assert!(ResumeState::load(&folder, "x.state", &other, &part).is_none());
        std::fs::write(dir.path().join("x.state"), "{ not json").unwrap();
        assert!(ResumeState::load(&folder, "x.state", &file, &part).is_none());
    }
}
