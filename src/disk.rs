//! Opening files where someone else may also write: beneath a directory handle, through
//! no symbolic link, without blocking, and only when the handle is a regular file.
//!
//! The sharing side serves files from folders other users may write to, and the
//! downloader writes into a downloads folder others may plant names in. Checking a path
//! and then opening it leaves a window in which a symlink or a FIFO can be swapped in, so
//! every open here is made relative to a directory handle ([`Dir`]), one path component
//! at a time with `O_NOFOLLOW` (the portable form of `openat2`'s `RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS`: it works on every Linux kernel and under seccomp filters that
//! refuse `openat2`), with `O_NONBLOCK` so that a FIFO cannot hold the opening thread, and
//! the verdict is taken from the opened handle (`fstat`), never from the path.
//!
//! A leaf: it imports nothing from the crate, and both `peer` and `download` use it.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};
use rustix::io::Errno;

/// Mode of the files napster creates (before the umask).
const CREATE_MODE: u32 = 0o666;

/// Flags every open here carries.
fn base() -> OFlags {
    OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// The error for what an open here refuses, saying what was wrong.
fn refused(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_owned())
}

/// The error an open made with `O_NOFOLLOW` gives for a symlink, said plainly.
fn plain(e: Errno) -> io::Error {
    if e == Errno::LOOP {
        refused("it is a symbolic link, and napster follows none here")
    } else {
        e.into()
    }
}

/// `file` if it is a regular file, or why not.
fn regular(file: File) -> io::Result<File> {
    let meta = file.metadata()?;
    if meta.is_file() {
        Ok(file)
    } else {
        Err(refused(&format!(
            "it is {}, not a regular file",
            kind(&meta)
        )))
    }
}

/// What kind of thing a non-regular file is, in words.
fn kind(meta: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "something else"
    }
}

/// Which file a handle or a name is: device and inode.
pub fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// Open the regular file at `path` for reading, without blocking on a FIFO and without
/// following a symlink in its last component.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let fd = rustix::fs::open(path, OFlags::RDONLY | base(), Mode::empty()).map_err(plain)?;
    regular(File::from(fd))
}

/// An open directory: every name below is resolved relative to it.
#[derive(Debug)]
pub struct Dir(OwnedFd);

impl Dir {
    /// Open the directory at `path` (the path itself may go through symlinks: it is the
    /// user's own choice of folder).
    pub fn open(path: &Path) -> io::Result<Dir> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(Dir(rustix::fs::openat(CWD, path, flags, Mode::empty())?))
    }

    /// Open the regular file at `relative` beneath this directory for reading: every
    /// component must be a plain name (no `..`, no root) and none may be a symlink.
    pub fn open_beneath(&self, relative: &Path) -> io::Result<File> {
        let mut names = Vec::new();
        for component in relative.components() {
            match component {
                Component::Normal(name) => names.push(name),
                Component::CurDir => {}
                _ => return Err(refused("the path leaves its folder")),
            }
        }
        let Some((last, folders)) = names.split_last() else {
            return Err(refused("the path names no file"));
        };
        let mut here: Option<OwnedFd> = None;
        for folder in folders {
            let at = here.as_ref().unwrap_or(&self.0);
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | base();
            here = Some(rustix::fs::openat(at, *folder, flags, Mode::empty()).map_err(plain)?);
        }
        let at = here.as_ref().unwrap_or(&self.0);
        let fd =
            rustix::fs::openat(at, *last, OFlags::RDONLY | base(), Mode::empty()).map_err(plain)?;
        regular(File::from(fd))
    }

    /// Open the regular file `name` in this directory for reading.
    pub fn open_file(&self, name: &str) -> io::Result<File> {
        self.open_beneath(Path::new(name))
    }

    /// Open `name` in this directory for reading and writing, creating it if it is not
    /// there; refused if it is a symlink or not a regular file.
    pub fn create(&self, name: &str) -> io::Result<File> {
        let flags = OFlags::RDWR | OFlags::CREATE | base();
        let fd = rustix::fs::openat(&self.0, name, flags, Mode::from_raw_mode(CREATE_MODE))
            .map_err(plain)?;
        regular(File::from(fd))
    }

    /// Create `name` in this directory for writing, replacing whatever had that name
    /// (a symlink is removed, not followed).
    pub fn create_new(&self, name: &str) -> io::Result<File> {
        match self.remove(name) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | base();
        let fd = rustix::fs::openat(&self.0, name, flags, Mode::from_raw_mode(CREATE_MODE))?;
        regular(File::from(fd))
    }

    /// Remove the name `name` (a symlink itself, never what it leads to).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        Ok(rustix::fs::unlinkat(&self.0, name, AtFlags::empty())?)
    }

    /// Rename `from` to `to`, both in this directory, replacing `to`.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::renameat(&self.0, from, &self.0, to)?)
    }

    /// Give the file named `from` the further name `to` (fails if `to` exists); a
    /// symlink at `from` is linked as itself, never followed.
    pub fn hard_link(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(rustix::fs::linkat(
            &self.0,
            from,
            &self.0,
            to,
            AtFlags::empty(),
        )?)
    }

    /// Which file the name `name` is (device and inode), without following a symlink.
    pub fn identity(&self, name: &str) -> io::Result<(u64, u64)> {
        let stat = rustix::fs::statat(&self.0, name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok((stat.st_dev, stat.st_ino))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_fifos_and_escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/ok"), b"ok").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("linkdir")).unwrap();
        rustix::fs::mkfifoat(CWD, dir.path().join("fifo"), Mode::from_raw_mode(0o600)).unwrap();
        let root = Dir::open(dir.path()).unwrap();
        assert!(root.open_beneath(Path::new("sub/ok")).is_ok());
        for bad in [
            "link",
            "linkdir/secret",
            "fifo",
            "../x",
            "/etc/passwd",
            "sub",
        ] {
            assert!(root.open_beneath(Path::new(bad)).is_err(), "{bad}");
        }
        let e = root.create("link").unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = root.create("fifo").unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        root.create_new("link").unwrap();
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"secret"
        );
    }
}
