//! A long-lived key pair: the identity of an index server (`[index] key`) or a peer
//! (`[peer] key`). It is created on first use in its key file (PKCS#8 PEM, written to a
//! temporary file with mode 0600 and renamed into place) and loaded on every later start.
//! A key file that is unreadable, garbled, truncated, a directory, or readable by other
//! users is an error that says what to do — never a silent new identity.
//!
//! The certificate that carries the public key in TLS is made afresh from the key at
//! every start (self-signed): the key is the identity, and its [`Fingerprint`] is what
//! others know it by.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{CertificateParams, KeyPair, PKCS_ED25519, PublicKeyData};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};
use crate::protocol::Fingerprint;

/// Longest key file read (a PKCS#8 PEM key is a few hundred bytes).
const MAX_KEY_FILE: u64 = 16 * 1024;

/// A key pair, the certificate made from it, and its fingerprint.
#[derive(Clone)]
pub struct Identity {
    fingerprint: Fingerprint,
    certified: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", self.fingerprint)
    }
}

impl Identity {
    /// A new identity that lives only in memory.
    pub fn generate() -> Result<Self> {
        let key = KeyPair::generate_for(&PKCS_ED25519)
            .map_err(|e| Error::msg(format!("cannot make a key pair: {e}")))?;
        Identity::from_key_pair(&key)
    }

    /// The identity of this process when none was configured (clients that only search
    /// or download in tests and benchmarks): made once, kept in memory.
    pub fn ephemeral() -> Self {
        static EPHEMERAL: OnceLock<Identity> = OnceLock::new();
        EPHEMERAL
            .get_or_init(|| Identity::generate().expect("Ed25519 key generation works"))
            .clone()
    }

    /// The identity stored in `path`, made there first if the file does not exist.
    /// `what` names the setting for messages (`[peer] key`).
    pub fn load_or_create(path: &Path, what: &str) -> Result<Self> {
        match fs::symlink_metadata(path) {
            Ok(_) => Identity::load(path, what),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate_for(&PKCS_ED25519)
                    .map_err(|e| Error::msg(format!("cannot make a key pair: {e}")))?;
                write_key(path, &key.serialize_pem())?;
                Identity::from_key_pair(&key)
            }
            Err(e) => Err(Error::msg(format!(
                "cannot read the key file {} ({what}): {e}",
                path.display()
            ))),
        }
    }

    /// The identity stored in `path`, which must exist.
    pub fn load(path: &Path, what: &str) -> Result<Self> {
        let shown = path.display();
        let meta = fs::metadata(path)
            .map_err(|e| Error::msg(format!("cannot read the key file {shown} ({what}): {e}")))?;
        if meta.is_dir() {
            return Err(Error::msg(format!(
                "the key file {shown} ({what}) is a directory; move it away (a new key is then \
                 made, and others will see a new fingerprint) or set {what} to the key's file"
            )));
        }
        if !meta.is_file() {
            return Err(Error::msg(format!(
                "the key file {shown} ({what}) is not a regular file"
            )));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::msg(format!(
                "the key file {shown} ({what}) may be read by other users (mode {mode:o}): \
                 anyone who reads it can pose as this napster; run `chmod 600 {shown}`, and \
                 if others did read it, delete it to make a new identity"
            )));
        }
        if meta.len() > MAX_KEY_FILE {
            return Err(garbled(path, what, "it is far too large"));
        }
        let bytes = fs::read(path)
            .map_err(|e| Error::msg(format!("cannot read the key file {shown} ({what}): {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| garbled(path, what, "it is not text"))?;
        let key = KeyPair::from_pem(&text).map_err(|e| garbled(path, what, &e.to_string()))?;
        Identity::from_key_pair(&key)
    }

    fn from_key_pair(key: &KeyPair) -> Result<Self> {
        let fingerprint = Fingerprint::of_public_key(&key.subject_public_key_info());
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| Error::msg(format!("cannot make a certificate: {e}")))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("napster {}", fingerprint.short()),
        );
        let cert = params
            .self_signed(key)
            .map_err(|e| Error::msg(format!("cannot make a certificate: {e}")))?;
        let pkcs8 = PrivatePkcs8KeyDer::from(key.serialize_der());
        let provider = rustls::crypto::ring::default_provider();
        let signer = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(pkcs8))
            .map_err(|e| Error::msg(format!("cannot use the key: {e}")))?;
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        Ok(Identity {
            fingerprint,
            certified: Arc::new(CertifiedKey::new(chain, signer)),
        })
    }

    /// The fingerprint others know this identity by.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The certificate and signing key presented in TLS handshakes.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }
}

fn garbled(path: &Path, what: &str, why: &str) -> Error {
    Error::msg(format!(
        "the key file {} ({what}) is not a usable key ({why}): it was damaged or replaced; \
         restore it from a backup, or delete it to make a new identity (others will then see \
         a new fingerprint)",
        path.display()
    ))
}

/// Write `pem` to `path` atomically with mode 0600: a temporary file beside it, synced,
/// then renamed into place. An existing file is never replaced.
fn write_key(path: &Path, pem: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {} for the key file", dir.display()), e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let temp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(pem.as_bytes())?;
        file.sync_all()?;
        // Like `rename`, but never over a key another process made meanwhile.
        fs::hard_link(&temp, path)?;
        fs::remove_file(&temp)?;
        if let Ok(dir) = fs::File::open(&dir) {
            dir.sync_all().ok();
        }
        Ok(())
    })();
    written.map_err(|e: std::io::Error| {
        fs::remove_file(&temp).ok();
        Error::io(format!("writing the key file {}", path.display()), e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_made_once_with_mode_600_and_loaded_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/key.pem");
        let first = Identity::load_or_create(&path, "[peer] key").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Identity::load_or_create(&path, "[peer] key").unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }
}
