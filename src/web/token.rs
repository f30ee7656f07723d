//! The API's token: a random secret in a file readable by its owner only (`web-token`,
//! beside the peer's key), created at the first start and kept across restarts, so that
//! a bookmarked page and a script's saved token go on working. Any local user can reach
//! a loopback port; only the owner of this file can use the API (as Syncthing's and
//! Jupyter's tokens do).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The token file's name, in the folder of the peer's key.
pub const TOKEN_FILE: &str = "web-token";

/// Random bytes in a token (printed as hex).
const TOKEN_BYTES: usize = 32;

/// Only the owner may read or write the token file.
const TOKEN_MODE: u32 = 0o600;

/// The API's secret.
#[derive(Clone)]
pub struct Token {
    text: String,
    /// Where it is kept.
    pub path: PathBuf,
}

impl Token {
    /// The token kept in `dir`, made (mode 0600) if there is none yet; a token file that
    /// others may read is refused, since the token in it is no longer a secret.
    pub fn load_or_create(dir: &Path) -> Result<Token> {
        let path = dir.join(TOKEN_FILE);
        let context = |e: std::io::Error| Error::msg(format!("{}: {e}", path.display()));
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path)
                    .map_err(context)?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    return Err(Error::msg(format!(
                        "{} may be read by other users (mode {:o}); run `chmod 600 {}` or \
                         delete it for a new token",
                        path.display(),
                        mode & 0o777,
                        path.display()
                    )));
                }
                let text = text.trim().to_owned();
                if text.len() < TOKEN_BYTES {
                    return Err(Error::msg(format!(
                        "{} holds no usable token; delete it and start again for a new one",
                        path.display()
                    )));
                }
                Ok(Token { text, path })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let text = hex::encode(rand::random::<[u8; TOKEN_BYTES]>());
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).map_err(context)?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(TOKEN_MODE)
                    .open(&path)
                    .map_err(context)?;
                writeln!(file, "{text}").map_err(context)?;
                Ok(Token { text, path })
            }
            Err(e) => Err(context(e)),
        }
    }

    /// The secret, for the URL printed at start.
    pub fn secret(&self) -> &str {
        &self.text
    }

    /// Whether `given` is the token. Both sides are hashed first, so the comparison's
    /// time says nothing about how much of a guess was right.
    pub fn matches(&self, given: &str) -> bool {
        Sha256::digest(given.as_bytes()) == Sha256::digest(self.text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = Token::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, TOKEN_MODE);
        let again = Token::load_or_create(dir.path()).unwrap();
        assert_eq!(first.secret(), again.secret());
        assert!(again.matches(first.secret()));
        assert!(!again.matches("guess"));
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let token = Token::load_or_create(dir.path()).unwrap();
        std::fs::set_permissions(&token.path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Token::load_or_create(dir.path()).err().unwrap().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
