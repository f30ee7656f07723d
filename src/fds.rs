//! The process's file-descriptor budget, which bounds how many connections its servers
//! can serve: the soft limit raised to the hard one, and connection limits fitted to it.

use tracing::warn;

/// File descriptors kept back from connections: the listeners, the database pool, shared
/// files being read, log files, downloads.
pub const FD_RESERVE: u64 = 256;

/// Raise the soft limit on open files to the hard limit, so that the connection limits
/// are what bounds connections rather than `accept` failing; returns the soft limit now
/// in force (`None` when it is unlimited or cannot be read).
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            warn!("cannot raise the limit on open files: {e}");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// `wanted` connections, or fewer when the process cannot open that many files (its
/// soft limit minus [`FD_RESERVE`]), so that the extra clients are told `busy` instead of
/// hanging on an `accept` that fails.
pub fn fit_connections(wanted: usize, what: &str) -> usize {
    let Some(files) = raise_fd_limit() else {
        return wanted;
    };
    let available = files.saturating_sub(FD_RESERVE).max(1);
    if (wanted as u64) <= available {
        return wanted;
    }
    let fitted = available as usize;
    warn!(
        "{what}: serving at most {fitted} connections instead of {wanted}: this process may open \
         {files} files and keeps {FD_RESERVE} for other uses (raise `ulimit -n` to serve more)"
    );
    fitted
}
