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
