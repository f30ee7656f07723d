//! [`Fingerprint`]: who is at the other end of a connection. It is the SHA-256 of the
//! public key (its DER SubjectPublicKeyInfo) the other side proved it holds in the TLS
//! handshake, written in base32 in groups of four, like Syncthing's device IDs; the first
//! [`SHORT`] characters are its short form for tables.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// Characters of the short form.
pub const SHORT: usize = 8;

/// Characters of the full form without dashes (32 bytes in base32, unpadded).
pub const LEN: usize = 52;

/// The SHA-256 of a public key: a peer's or an index server's identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_public_key(spki_der: &[u8]) -> Self {
        Fingerprint(Sha256::digest(spki_der).into())
    }

    /// Base32 without dashes (52 characters).
    pub fn plain(&self) -> String {
        data_encoding::BASE32_NOPAD.encode(&self.0)
    }

    /// The first [`SHORT`] characters, for tables.
    pub fn short(&self) -> String {
        self.plain()[..SHORT].to_owned()
    }

    /// Whether `prefix` (dashes and case ignored) starts this fingerprint.
    pub fn starts_with(&self, prefix: &str) -> bool {
        let prefix = normalise(prefix);
        !prefix.is_empty() && self.plain().starts_with(&prefix)
    }
}

/// Upper case, without dashes or spaces.
fn normalise(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Whether `text` looks like a fingerprint prefix (base32 letters and digits 2–7, dashes).
pub fn is_prefix(text: &str) -> bool {
    prefix_chars(text).is_some()
}

/// How many characters of a fingerprint `text` names when read as its start (dashes,
/// spaces and case ignored), or `None` when it cannot be read so.
pub fn prefix_chars(text: &str) -> Option<usize> {
    let plain = normalise(text);
    let readable = !plain.is_empty()
        && plain.len() <= LEN
        && plain
            .chars()
            .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c));
    readable.then_some(plain.len())
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = self.plain();
        let groups: Vec<&str> = plain
            .as_bytes()
            .chunks(4)
            .map(|g| std::str::from_utf8(g).expect("base32 is ASCII"))
            .collect();
        f.write_str(&groups.join("-"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let plain = normalise(text);
        let bad = || {
            format!(
                "{:?} is not a fingerprint: expected {LEN} base32 characters (A-Z, 2-7), \
                 dashes allowed, as `status` shows it",
                crate::protocol::truncate(text)
            )
        };
        if plain.len() != LEN {
            return Err(bad());
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(plain.as_bytes())
            .map_err(|_| bad())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Fingerprint(bytes))
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.plain())
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_every_form() {
        let fp = Fingerprint::of_public_key(b"some key");
        let full = fp.to_string();
        assert_eq!(full.len(), LEN + LEN / 4 - 1);
        assert_eq!(full.parse::<Fingerprint>().unwrap(), fp);
        assert_eq!(
            fp.plain().to_lowercase().parse::<Fingerprint>().unwrap(),
            fp
        );
        assert!(fp.starts_with(&fp.short().to_lowercase()));
        assert!(is_prefix(&fp.short()));
        assert!(!is_prefix("alice1"));
        let json = serde_json::to_string(&fp).unwrap();
        assert_eq!(serde_json::from_str::<Fingerprint>(&json).unwrap(), fp);
        assert!("ABCD".parse::<Fingerprint>().is_err());
    }
}
