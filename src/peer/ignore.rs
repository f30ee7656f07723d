//! The ignore rule of shared folders: which names a scan leaves out.

use wildmatch::WildMatch;

use crate::config::DEFAULT_IGNORE;
use crate::download::is_own_file;

/// Which file and folder names are left out of a share: `*`/`?` patterns matched against
/// each base name, case-sensitively. napster's own part and queue files are always left out.
#[derive(Debug, Clone)]
pub struct Ignore(Vec<WildMatch>);

impl Ignore {
    /// The rule made of these patterns.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Ignore {
        Ignore(
            patterns
                .iter()
                .map(|p| WildMatch::new(p.as_ref()))
                .collect(),
        )
    }

    /// Whether a base name is left out.
    pub fn matches(&self, name: &str) -> bool {
        is_own_file(name) || self.0.iter().any(|w| w.matches(name))
    }
}

impl Default for Ignore {
    fn default() -> Self {
        Ignore::new(DEFAULT_IGNORE)
    }
}
