//! How a person names a peer: its Peer ID, its nickname, or the start of its
//! fingerprint ([`PeerRef`]), and the rules a nickname obeys ([`nickname_problem`]).
//!
//! A nickname starts with a letter, so it is never mistaken for a Peer ID. What a table
//! shows of a key (its first [`SHORT`] characters) always names that key: a word that
//! long which starts a key names it even if some peer's nickname is equal to it, and an
//! index refuses to bind such a nickname ([`new_nickname_problem`]). A shorter key
//! prefix (a convenience tables never show) names a key only when no nickname is equal
//! to it. Look-alike nicknames (`aIice` beside `alice`) are one nickname on an index:
//! it compares their [`nickname_skeleton`]s.

use std::fmt;

use super::fingerprint::{self, Fingerprint, SHORT};

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
    /// strongly: a key prefix as long as tables show beats a nickname or ID, which beat
    /// a shorter key prefix.
    pub fn rank(&self, id: u64, key: &Fingerprint, nickname: Option<&str>) -> Option<Match> {
        match self {
            PeerRef::Id(wanted) => (*wanted == id).then_some(Match::Exact),
            PeerRef::Word(word) => {
                let shown = fingerprint::prefix_chars(word).is_some_and(|n| n >= SHORT);
                if shown && key.starts_with(word) {
                    Some(Match::Shown)
                } else if nickname.is_some_and(|n| n.eq_ignore_ascii_case(word)) {
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

/// How a [`PeerRef`] matched, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Match {
    /// The start of the fingerprint, shorter than tables show it.
    Prefix,
    /// The Peer ID or the nickname.
    Exact,
    /// The start of the fingerprint, at least as long as tables show it.
    Shown,
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

/// Why an index refuses to bind `name` as a new nickname, or `None`: it must obey
/// [`nickname_problem`], and must not read as the start of a key as long as tables show
/// one ([`SHORT`] characters of `A`–`Z` and `2`–`7`, dashes and case ignored), since
/// such a word names the key that starts with it (a key can be ground to start so).
pub fn new_nickname_problem(name: &str) -> Option<String> {
    if let Some(problem) = nickname_problem(name) {
        return Some(problem);
    }
    if fingerprint::prefix_chars(name).is_some_and(|n| n >= SHORT) {
        return Some(format!(
            "reads as the start of a key ({SHORT} or more of the letters and digits 2-7 \
             that keys are written in), which names that key, not a nickname; put a digit \
             0, 1, 8 or 9, or an `_`, in it"
        ));
    }
    None
}

/// What a nickname looks like, for telling look-alikes apart: case folded, and the
/// ASCII characters that Unicode's confusables table (UTS #39) maps together written
/// as one: `0` as `o`; `1`, `l`, `I` and (by case) `i` as `l`; `rn` as `m`; `vv` as `w`.
/// Nicknames are ASCII letters, digits, `-` and `_`, so these are the rows of the table
/// that apply. An index binds one nickname per skeleton.
pub fn nickname_skeleton(name: &str) -> String {
    let folded: String = name
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            '0' => 'o',
            '1' | 'i' => 'l',
            c => c,
        })
        .collect();
    folded.replace("rn", "m").replace("vv", "w")
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

    /// A nickname equal to another peer's short key (`n5m3nwtl`) used to capture it:
    /// `files N5M3NWTL` listed the squatter's files.
    #[test]
    fn a_key_prefix_as_long_as_tables_show_beats_a_nickname() {
        let victim = key(3);
        let shown = victim.short();
        let squatter = key(9);
        for typed in [
            shown.to_lowercase(),
            shown.clone(),
            victim.to_string()[..9].into(),
        ] {
            let word = PeerRef::parse(&typed).unwrap();
            let named = best(
                &word,
                [(1, victim, None), (2, squatter, Some(shown.to_lowercase()))],
                |c| c.clone(),
            );
            assert_eq!(named.len(), 1, "{typed}");
            assert_eq!(named[0].0, 1, "{typed} named the squatter");
        }
        // Shorter than tables show: the nickname still wins.
        let short = PeerRef::Word(shown[..6].to_lowercase());
        assert_eq!(
            short.rank(2, &squatter, Some(&shown[..6])),
            Some(Match::Exact)
        );
        assert_eq!(short.rank(1, &victim, None), Some(Match::Prefix));
    }

    #[test]
    fn a_new_nickname_may_not_read_as_a_shown_key_and_look_alikes_are_one() {
        for refused in ["n5m3nwtl", "N5M3-NWTL", "abcdefghij", "alexander"] {
            let why = new_nickname_problem(refused).unwrap_or_default();
            assert!(why.contains("start of a key"), "{refused}: {why:?}");
        }
        for allowed in [
            "alice",
            "bob",
            "abcdefg",
            "alexander_",
            "alexander9",
            "n5m3nwt1",
        ] {
            assert_eq!(new_nickname_problem(allowed), None, "{allowed}");
        }
        assert_eq!(nickname_skeleton("aIice"), nickname_skeleton("alice"));
        assert_eq!(nickname_skeleton("ALICE"), nickname_skeleton("a1ice"));
        assert_eq!(nickname_skeleton("b0b"), nickname_skeleton("BOB"));
        assert_eq!(nickname_skeleton("rnary"), nickname_skeleton("mary"));
        assert_ne!(nickname_skeleton("alice"), nickname_skeleton("alicia"));
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
