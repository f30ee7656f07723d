//! What a download may be called on disk: a name from the network made safe, and
//! whether a file there already has the contents (then nothing is fetched).

use std::path::{Path, PathBuf};

use crate::digest::hash_open;
use crate::disk::Dir;
use crate::error::{Error, Result};
use crate::protocol;

/// The download queue's file in the downloads folder (`queue_file`); no download may
/// take its name.
pub const QUEUE_FILE: &str = ".napster-queue";

/// Suffix of part files; scans of shared folders skip them.
pub const PART_SUFFIX: &str = ".napster-part";

/// Whether `name` is one of napster's own files in a downloads folder (part files, their
/// resume state, the download queue): never a download's name, never shared.
pub fn is_own_file(name: &str) -> bool {
    name.contains(PART_SUFFIX) || name.starts_with(QUEUE_FILE)
}

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
    // Names of napster's own part, state and queue files are never download targets.
    if clean.is_empty() || clean == "." || clean == ".." || is_own_file(&clean) {
        return Err(Error::msg(format!(
            "refusing to save {:?}: no safe file name is left in it",
            protocol::truncate(name)
        )));
    }
    Ok(clean)
}

/// The folder a file from the network keeps under the downloads folder (`get -r`):
/// each folder of its shared name made safe like a file name; `..`, `.` and empty
/// parts are refused, so the result is always a relative path below the downloads
/// folder.
pub fn safe_folder(name: &str) -> Result<PathBuf> {
    let mut parts: Vec<&str> = name.split(['/', '\\']).collect();
    parts.pop();
    folder_of(&parts).map_err(|part| {
        Error::msg(format!(
            "refusing to save {:?}: its folder {:?} is not a safe folder name",
            protocol::truncate(name),
            protocol::truncate(part)
        ))
    })
}

/// The relative path of `parts`, or the first part that is not a safe folder name (one
/// [`safe_file_name`] would change: empty, `.`, `..`, control characters, napster's own).
fn folder_of<'a>(parts: &[&'a str]) -> std::result::Result<PathBuf, &'a str> {
    let mut folder = PathBuf::new();
    for &part in parts {
        match safe_file_name(part) {
            Ok(clean) if clean == part => folder.push(clean),
            _ => return Err(part),
        }
    }
    Ok(folder)
}

/// The folder `relative` under `root`, checked by the rule `get -r` folders meet (see
/// [`safe_folder`]: nothing absolute, no empty, `.` or `..` part) and with nothing in
/// the way that is not a folder (a symlink there could lead outside `root`); nothing is
/// made. Every folder a download is written in passes here: `get -r`'s, and those a
/// queue file names (which anyone able to write that file chooses).
pub fn check_folder(root: &Path, relative: &Path) -> Result<PathBuf> {
    let text = relative.to_str().ok_or_else(|| {
        Error::msg(format!(
            "the folder {:?} is not UTF-8; a download's folder is a path below the \
             downloads folder",
            relative
        ))
    })?;
    let parts: Vec<&str> = match text {
        "" => Vec::new(),
        text => text.split(['/', '\\']).collect(),
    };
    let folder = folder_of(&parts).map_err(|part| {
        Error::msg(format!(
            "the folder {:?} is not below the downloads folder {} (its part {:?} is \
             absolute, empty, `.`, `..` or not a safe name)",
            protocol::truncate(text),
            root.display(),
            protocol::truncate(part)
        ))
    })?;
    let mut path = root.to_owned();
    for part in folder.components() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(in_the_way(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
    Ok(root.join(folder))
}

fn in_the_way(path: &Path) -> Error {
    Error::msg(format!(
        "{} is in the way: it is not a folder (a symlink is never followed); move it, \
         then get again",
        path.display()
    ))
}

/// Make the folder `relative` under `root`, one part at a time, never through a
/// symlink (one planted there could point outside the downloads folder); `relative`
/// must pass [`check_folder`]. Returns its path.
pub fn make_folder(root: &Path, relative: &Path) -> Result<PathBuf> {
    check_folder(root, relative)?;
    let mut path = root.to_owned();
    for part in relative.components() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(in_the_way(&path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path)
                    .or_else(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists if path.is_dir() => Ok(()),
                        _ => Err(e),
                    })
                    .map_err(|e| Error::io(format!("making the folder {}", path.display()), e))?;
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
    Ok(path)
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
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_from_the_network_stay_below_the_downloads_folder() {
        assert_eq!(
            safe_folder("live/sub/a.ogg").unwrap(),
            Path::new("live/sub")
        );
        assert_eq!(safe_folder("a.ogg").unwrap(), Path::new(""));
        for hostile in [
            "../a.ogg",
            "live/../../a.ogg",
            "/etc/passwd",
            "a//b.ogg",
            "./x",
            "a\\..\\b",
        ] {
            assert!(safe_folder(hostile).is_err(), "{hostile}");
        }
    }

    /// A folder a queue file names is held to `get -r`'s rule: `make_folder` used to
    /// take `..` and root components and make folders outside the downloads folder.
    #[test]
    fn a_folder_outside_the_downloads_folder_is_refused_and_not_made() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("downloads");
        std::fs::create_dir(&root).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let absolute = tmp.path().join("abs");
        for hostile in [
            Path::new("../escaped"),
            Path::new("live/../../escaped"),
            absolute.as_path(),
            Path::new("a//b"),
            Path::new("./x"),
            Path::new("link/sub"),
        ] {
            let refused = make_folder(&root, hostile).unwrap_err().to_string();
            assert!(
                refused.contains("not below the downloads folder")
                    || refused.contains("symlink is never followed"),
                "{hostile:?}: {refused}"
            );
            assert!(check_folder(&root, hostile).is_err(), "{hostile:?}");
        }
        assert!(!tmp.path().join("escaped").exists());
        assert!(!absolute.exists());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert_eq!(make_folder(&root, Path::new("")).unwrap(), root);
        assert_eq!(
            make_folder(&root, Path::new("live/sub")).unwrap(),
            root.join("live/sub")
        );
    }
}
