//! How a person names a peer: its Peer ID, its nickname, or the start of its
//! fingerprint ([`PeerRef`]), and the rules a nickname obeys ([`nickname_problem`]).
//!
//! A nickname starts with a letter, so it is never mistaken for a Peer ID; where a word
//! is both a nickname and the start of some fingerprint, the nickname wins.

use std::fmt;

use super::fingerprint::{self, Fingerprint};

/// Longest nickname, in characters (ASCII letters, digits, `-`, `_`).
pub const MAX_NICKNAME: usize = 32;

/// Fewest characters of a fingerprint that name a peer (the short form in tables has
/// eight); shorter words are only nicknames.
pub const MIN_PREFIX: usize = 4;

/// A peer as a person names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRef {
    /// A Peer ID.
    Id(u64),
    /// A nickname, or the start of a fingerprint.
    Word(String),
}

impl PeerRef {
    /// Read what a person typed: digits are a Peer ID, anything else a word.
    pub fn parse(text: &str) -> Result<PeerRef, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("a peer is a Peer ID, a nickname or the start of a fingerprint".into());
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return text
                .parse()
                .map(PeerRef::Id)
                .map_err(|_| format!("{text} is too large for a Peer ID"));
        }
        let as_name = nickname_problem(text).is_none();
        let as_prefix = fingerprint::is_prefix(text)
            && !text.contains(char::is_whitespace)
            && text.len() >= MIN_PREFIX;
        if as_name || as_prefix {
            Ok(PeerRef::Word(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a Peer ID, a nickname or the start of a fingerprint \
                 (see `peers`)"
            ))
        }
    }

    /// Whether this names the peer `id` with key `key` and nickname `nickname`, and how
    /// strongly: a nickname or ID beats a fingerprint prefix.
    pub fn rank(&self, id: u64, key: &Fingerprint, nickname: Option<&str>) -> Option<Match> {
        match self {
            PeerRef::Id(wanted) => (*wanted == id).then_some(Match::Exact),
            PeerRef::Word(word) => {
                if nickname.is_some_and(|n| n.eq_ignore_ascii_case(word)) {
                    Some(Match::Exact)
                } else if word.len() >= MIN_PREFIX && key.starts_with(word) {
                    Some(Match::Prefix)
                } else {
                    None
                }
            }
        }
    }

    /// Whether this names that peer at all.
    pub fn matches(&self, id: u64, key: &Fingerprint, nickname: Option<&str>) -> bool {
        self.rank(id, key, nickname).is_some()
    }
}

/// How a [`PeerRef`] matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// The start of the fingerprint.
    Prefix,
    /// The Peer ID or the nickname.
    Exact,
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRef::Id(id) => write!(f, "{id}"),
            PeerRef::Word(word) => f.write_str(word),
        }
    }
}

/// Of several candidates, the ones `wanted` names best: every exact match, else every
/// prefix match. More than one distinct peer left means the name is ambiguous.
pub fn best<T>(
    wanted: &PeerRef,
    candidates: impl IntoIterator<Item = T>,
    key: impl Fn(&T) -> (u64, Fingerprint, Option<String>),
) -> Vec<T> {
    let mut found: Vec<(Match, T)> = candidates
        .into_iter()
        .filter_map(|c| {
            let (id, fp, nick) = key(&c);
            wanted.rank(id, &fp, nick.as_deref()).map(|m| (m, c))
        })
        .collect();
    let top = found.iter().map(|(m, _)| *m).max();
    found.retain(|(m, _)| Some(*m) == top);
    found.into_iter().map(|(_, c)| c).collect()
}

/// Why `name` cannot be a nickname, or `None`: 1 to [`MAX_NICKNAME`] ASCII letters,
/// digits, `-` and `_`, starting with a letter.
pub fn nickname_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_NICKNAME {
        return Some(format!("must be 1 to {MAX_NICKNAME} characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some("must start with a letter (digits alone are Peer IDs)".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Some(format!(
            "may hold only ASCII letters, digits, '-' and '_', not {bad:?}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> Fingerprint {
        Fingerprint([byte; 32])
    }

    #[test]
    fn digits_are_ids_and_words_are_nicknames_or_prefixes() {
        assert_eq!(PeerRef::parse("42"), Ok(PeerRef::Id(42)));
        assert_eq!(PeerRef::parse("alice"), Ok(PeerRef::Word("alice".into())));
        assert!(PeerRef::parse("99999999999999999999999").is_err());
        assert!(PeerRef::parse("no way").is_err());
        assert!(PeerRef::parse("").is_err());
    }

    #[test]
    fn a_nickname_beats_a_fingerprint_prefix() {
        let a = key(0);
        let plain = a.plain();
        let word = PeerRef::Word(plain[..6].to_lowercase());
        assert_eq!(word.rank(1, &a, None), Some(Match::Prefix));
        let b = key(7);
        assert_eq!(word.rank(2, &b, Some(&plain[..6])), Some(Match::Exact));
        let both = best(
            &word,
            [(1, a, None), (2, b, Some(plain[..6].to_owned()))],
            |c| c.clone(),
        );
        assert_eq!(both.len(), 1);
        assert_eq!(both[0].0, 2);
        assert_eq!(PeerRef::Word("AAA".into()).rank(1, &a, None), None);
    }

    #[test]
    fn nicknames_follow_the_rules() {
        assert_eq!(nickname_problem("alice_2-b"), None);
        assert!(nickname_problem("2alice").is_some());
        assert!(nickname_problem("al ice").is_some());
        assert!(nickname_problem("ålice").is_some());
        assert!(nickname_problem(&"a".repeat(MAX_NICKNAME + 1)).is_some());
        assert!(nickname_problem("").is_some());
    }
}
