//! What a download may be called on disk: a name from the network made safe, and
//! whether a file there already has the contents (then nothing is fetched).

use std::path::Path;

use crate::digest::hash_open;
use crate::disk::Dir;
use crate::error::{Error, Result};
use crate::protocol;

/// Suffix of part files; scans of shared folders skip them.
pub const PART_SUFFIX: &str = ".napster-part";

/// Longest file name written to disk, in bytes.
const MAX_FILE_NAME: usize = 255;

/// The name a file from the network may have on disk: its base name without control
/// characters, or an error when nothing safe is left.
pub fn safe_file_name(name: &str) -> Result<String> {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut clean: String = base.chars().filter(|c| !c.is_control()).collect();
    while clean.len() > MAX_FILE_NAME {
        clean.pop();
    }
    // Names of napster's own part and state files are never download targets.
    if clean.is_empty() || clean == "." || clean == ".." || clean.contains(PART_SUFFIX) {
        return Err(Error::msg(format!(
            "refusing to save {:?}: no safe file name is left in it",
            protocol::truncate(name)
        )));
    }
    Ok(clean)
}

/// Whether `name` in the folder `dir` is a regular file with exactly this size and
/// SHA-256. A symlink there is not followed (an outside file hashed through it would
/// make napster declare the download "already there"), nor a FIFO waited on.
pub fn same_content(dir: &Path, name: &str, sha256: &str, size: u64) -> bool {
    let Ok(file) = Dir::open(dir).and_then(|d| d.open_file(name)) else {
        return false;
    };
    file.metadata().is_ok_and(|m| m.len() == size)
        && hash_open(&file, &dir.join(name), &|_| {}).is_ok_and(|d| d.sha256 == sha256)
}

/// How many `name (N).ext` a download tries before giving up.
pub const MAX_COPIES: usize = 1000;

/// The `n`th name a download of `file_name` may take: `name.ext`, then `name (n).ext`.
pub fn numbered(file_name: &str, n: usize) -> String {
    if n == 0 {
        return file_name.to_owned();
    }
    match file_name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{file_name} ({n})"),
    }
}

/// The name under which a file with exactly these contents is already in `dir`: `name`
/// itself, or one of the `name (N).ext` an earlier download took beside a different file
/// (the names are tried in the order a download takes them, up to the first free one).
pub fn existing_copy(dir: &Path, file_name: &str, sha256: &str, size: u64) -> Option<String> {
    let folder = Dir::open(dir).ok()?;
    (0..MAX_COPIES)
        .map(|n| numbered(file_name, n))
        .take_while(|name| folder.identity(name).is_ok())
        .find(|name| same_content(dir, name, sha256, size))
}
