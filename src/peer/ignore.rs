//! The ignore rule of shared folders: which names a scan leaves out, and which folders
//! (the downloads folder, when it lies inside a shared folder).

use std::path::{Path, PathBuf};

use wildmatch::WildMatch;

use crate::config::DEFAULT_IGNORE;
use crate::download::is_own_file;

/// Which file and folder names are left out of a share: `*`/`?` patterns matched against
/// each base name, case-sensitively. napster's own part and queue files are always left out.
/// So are the folders named with [`Ignore::leaving_out`] wherever they appear beneath a
/// shared folder (a folder shared by name is shared all the same).
#[derive(Debug, Clone)]
pub struct Ignore {
    patterns: Vec<WildMatch>,
    folders: Vec<PathBuf>,
}

impl Ignore {
    /// The rule made of these patterns.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Ignore {
        Ignore {
            patterns: patterns
                .iter()
                .map(|p| WildMatch::new(p.as_ref()))
                .collect(),
            folders: Vec::new(),
        }
    }

    /// This rule, also leaving out `folder` (relative to the current folder) beneath a
    /// shared folder. It need not exist yet: the downloads folder is made at the first
    /// download, and a living share must not pick it up then.
    pub fn leaving_out(mut self, folder: &Path) -> Ignore {
        if let Ok(folder) = std::path::absolute(folder) {
            self.folders.push(folder);
        }
        self
    }

    /// Whether a base name is left out.
    pub fn matches(&self, name: &str) -> bool {
        is_own_file(name) || self.patterns.iter().any(|w| w.matches(name))
    }

    /// The folders left out, as they resolve now (symlinks followed), to compare with
    /// the resolved folders a scan meets; those that do not exist are none.
    pub fn folders_now(&self) -> Vec<PathBuf> {
        self.folders
            .iter()
            .filter_map(|f| f.canonicalize().ok())
            .collect()
    }
}

impl Default for Ignore {
    fn default() -> Self {
        Ignore::new(DEFAULT_IGNORE)
    }
}
