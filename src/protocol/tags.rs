//! Media tags: what a sharer read from an audio file ([`Tags`]), the search criteria on
//! them ([`TagQuery`]), their bounds, and the one parser of the search words that name
//! them (`artist:"Daft Punk"`, `bitrate>=256`, `length>3m`). The rules a tag obeys are
//! in [`super::rules`] with the other fields' (`tag_problem`, `check_tags`).

use serde::{Deserialize, Serialize};

/// Longest text tag (artist, title or album), in bytes.
pub const MAX_TAG: usize = 256;

/// Most bytes of text tags one file may carry, its artist, title and album together.
pub const MAX_FILE_TAGS: usize = 512;

/// Most bytes of text tags one peer's files may carry in all: a sharer leaves out the
/// tags of its files past this, an index refuses a peer that sends more.
pub const MAX_PEER_TAGS: u64 = 16 << 20;

/// The tags of one audio file, as its sharer read them. Every field is optional: a file
/// has the ones its tags and its stream gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    /// The track's artist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// The track's title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The album.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// Track number on the album.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track: Option<u32>,
    /// Year of release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub year: Option<u32>,
    /// Length in whole seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    /// Audio bitrate in kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate: Option<u32>,
    /// Sample rate in Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
}

impl Tags {
    /// The text tags, in the order artist, title, album.
    pub fn texts(&self) -> [Option<&str>; 3] {
        [
            self.artist.as_deref(),
            self.title.as_deref(),
            self.album.as_deref(),
        ]
    }

    /// Bytes of its text tags: what counts against [`MAX_FILE_TAGS`] and [`MAX_PEER_TAGS`].
    pub fn text_bytes(&self) -> usize {
        self.texts().iter().flatten().map(|t| t.len()).sum()
    }

    /// Whether it says nothing at all.
    pub fn is_empty(&self) -> bool {
        *self == Tags::default()
    }
}

/// Search criteria on tags; a file without tags matches none. Text criteria are
/// case-insensitive substrings; bounds are inclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagQuery {
    /// A substring of the artist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artist: Option<String>,
    /// A substring of the title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// A substring of the album.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub album: Option<String>,
    /// Lowest bitrate, kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bitrate: Option<u32>,
    /// Highest bitrate, kbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bitrate: Option<u32>,
    /// Shortest length, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_length: Option<u32>,
    /// Longest length, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
}

impl TagQuery {
    /// The text criteria, in the order artist, title, album.
    pub fn texts(&self) -> [Option<&str>; 3] {
        [
            self.artist.as_deref(),
            self.title.as_deref(),
            self.album.as_deref(),
        ]
    }

    /// The same criteria with the text in lowercase, as stores compare it.
    pub fn lowercase(&self) -> TagQuery {
        let lower = |t: &Option<String>| t.as_ref().map(|t| t.trim().to_lowercase());
        TagQuery {
            artist: lower(&self.artist),
            title: lower(&self.title),
            album: lower(&self.album),
            ..self.clone()
        }
    }

    /// Whether `tags` meet every criterion; text criteria must already be lowercase
    /// ([`TagQuery::lowercase`]) and `lower` is `tags`' text in lowercase.
    pub fn matches(&self, tags: &Tags, lower: [Option<&str>; 3]) -> bool {
        let text_ok = self
            .texts()
            .iter()
            .zip(lower)
            .all(|(want, have)| want.is_none_or(|w| have.is_some_and(|h| h.contains(w))));
        let within = |value: Option<u32>, min: Option<u32>, max: Option<u32>| {
            (min.is_none() && max.is_none())
                || value.is_some_and(|v| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m))
        };
        text_ok
            && within(tags.bitrate, self.min_bitrate, self.max_bitrate)
            && within(tags.duration, self.min_length, self.max_length)
    }

    /// Read one search word if it is a tag criterion: `Ok(true)` when it was (and is now
    /// part of the query), `Ok(false)` when it is not a tag word, an error saying what is
    /// wrong with it otherwise. The word is as the shell split it: `artist:Daft Punk`
    /// arrives whole when it was quoted.
    pub fn parse_word(&mut self, word: &str) -> Result<bool, String> {
        let lower = word.to_lowercase();
        for (key, slot) in [
            ("artist:", &mut self.artist),
            ("title:", &mut self.title),
            ("album:", &mut self.album),
        ] {
            if lower.starts_with(key) {
                let text = word[key.len()..].trim();
                if text.is_empty() {
                    return Err(format!(
                        "{key} needs text after it, like {key}\"Daft Punk\" (quote spaces)"
                    ));
                }
                *slot = Some(text.to_owned());
                return Ok(true);
            }
        }
        let (key, rest) =
            match lower.split_at_checked(lower.find(['<', '>', '=', ':']).unwrap_or(0)) {
                Some((key @ ("bitrate" | "length"), rest)) => (key, rest),
                _ => return Ok(false),
            };
        let (op, value) = split_comparison(rest);
        let parsed = match key {
            "bitrate" => parse_kbits(value),
            _ => parse_length(value),
        }
        .ok_or_else(|| match key {
            "bitrate" => format!("{value:?} is not a bitrate in kbit/s (like bitrate>=256)"),
            _ => format!("{value:?} is not a length (like length>3m, length<3:30 or length>=200)"),
        })?;
        let (min, max) = match key {
            "bitrate" => (&mut self.min_bitrate, &mut self.max_bitrate),
            _ => (&mut self.min_length, &mut self.max_length),
        };
        match op {
            ">=" => *min = Some(parsed),
            ">" => *min = Some(parsed.saturating_add(1)),
            "<=" => *max = Some(parsed),
            "<" => *max = Some(parsed.saturating_sub(1)),
            _ => (*min, *max) = (Some(parsed), Some(parsed)),
        }
        Ok(true)
    }
}

/// `>=256` as (`>=`, `256`); `:256` and `=256` compare for equality.
fn split_comparison(rest: &str) -> (&str, &str) {
    for op in [">=", "<=", ">", "<", "=", ":"] {
        if let Some(value) = rest.strip_prefix(op) {
            return (op, value.trim());
        }
    }
    ("=", rest.trim())
}

/// A bitrate in kbit/s, with or without its unit (`256`, `256k`, `256kbps`).
fn parse_kbits(text: &str) -> Option<u32> {
    let digits = text
        .trim_end_matches("kbps")
        .trim_end_matches("kbit/s")
        .trim_end_matches('k');
    digits.parse().ok()
}

/// A length in seconds: `200` or `200s`, `3m`, `1h`, `3:30`, `1:02:03`.
fn parse_length(text: &str) -> Option<u32> {
    if text.contains(':') {
        let parts: Vec<&str> = text.split(':').collect();
        if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        return parts.iter().try_fold(0u32, |total, part| {
            total.checked_mul(60)?.checked_add(part.parse().ok()?)
        });
    }
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    digits.parse::<u32>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(words: &[&str]) -> Result<TagQuery, String> {
        let mut query = TagQuery::default();
        for word in words {
            assert!(query.parse_word(word)?, "{word} is a tag word");
        }
        Ok(query)
    }

    #[test]
    fn tag_words_parse_into_criteria() {
        let query = parsed(&[
            "Artist:Daft Punk",
            "album:discovery",
            "bitrate>=256",
            "length>3m",
        ]);
        assert_eq!(
            query.unwrap(),
            TagQuery {
                artist: Some("Daft Punk".into()),
                album: Some("discovery".into()),
                min_bitrate: Some(256),
                min_length: Some(181),
                ..TagQuery::default()
            }
        );
        let query = parsed(&["length<3:30", "bitrate<=320k", "title:one"]).unwrap();
        assert_eq!(query.max_length, Some(209));
        assert_eq!(query.max_bitrate, Some(320));
        assert_eq!(parsed(&["length=200"]).unwrap().min_length, Some(200));
        assert_eq!(parsed(&["length>=1:02:03"]).unwrap().min_length, Some(3723));
        for bad in [
            "artist:",
            "bitrate>=fast",
            "length>3x",
            "length>1:",
            "title: ",
        ] {
            assert!(parsed(&[bad]).is_err(), "{bad}");
        }
        let mut query = TagQuery::default();
        assert_eq!(query.parse_word("daft"), Ok(false));
        assert_eq!(query.parse_word(">1GB"), Ok(false));
        assert_eq!(query.parse_word("lengthy.mp3"), Ok(false));
    }

    #[test]
    fn criteria_match_lowercase_substrings_and_bounds() {
        let tags = Tags {
            artist: Some("Daft Punk".into()),
            bitrate: Some(320),
            duration: Some(200),
            ..Tags::default()
        };
        let lower = [Some("daft punk"), None, None];
        let query = parsed(&["artist:PUNK", "bitrate>=256", "length>3m"]).unwrap();
        assert!(query.lowercase().matches(&tags, lower));
        let query = parsed(&["artist:punk", "length>4m"]).unwrap();
        assert!(!query.lowercase().matches(&tags, lower));
        let query = parsed(&["album:discovery"]).unwrap();
        assert!(!query.lowercase().matches(&tags, lower));
    }
}
