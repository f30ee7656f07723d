//! The rules every field obeys, whoever sends it: limits, names, hashes, chunk maths,
//! and what fits in one frame. Pure functions, no I/O.

use std::time::Duration;

use sha2::{Digest, Sha256};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::message::{FileEntry, Hit, PeerInfo};
use super::peer_ref::{MAX_NICKNAME, nickname_problem};
use super::tags::{MAX_FILE_TAGS, MAX_TAG, Tags};

/// Protocol version, exchanged in the first message of every connection.
pub const VERSION: u32 = 5;

/// Default largest frame, in bytes.
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Default time allowed for connecting, and for a message to arrive once it has begun.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default slowest a transfer may move, in bytes per second, measured over `timeout`:
/// a peer that sends (or reads) less in that long is dropped.
pub const DEFAULT_MIN_RATE: u64 = 4 * 1024;

/// Longest file name (a relative path with `/` separators), in bytes.
pub const MAX_NAME: usize = 1024;

/// Longest search pattern, in bytes.
pub const MAX_PATTERN: usize = 256;

/// Longest free-text field (agent names, error messages), in bytes.
pub const MAX_TEXT: usize = 256;

/// Length of a session token in hex digits.
pub const TOKEN_HEX: usize = 32;

/// Bounds every connection enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest frame accepted, in bytes.
    pub max_frame: u32,
    /// Time allowed to connect, and for a started message to arrive whole.
    pub timeout: Duration,
    /// Slowest a transfer may move, in bytes per second, measured over `timeout`.
    pub min_rate: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            timeout: DEFAULT_TIMEOUT,
            min_rate: DEFAULT_MIN_RATE,
        }
    }
}

/// Smallest chunk a file is verified in, in bytes.
pub const MIN_CHUNK: u64 = 1 << 20;

/// Most chunks a file is cut into; larger files get larger chunks.
pub const MAX_CHUNKS: u64 = 8192;

/// The chunk size of a file of `size` bytes: a power of two, at least [`MIN_CHUNK`],
/// large enough that the file has at most [`MAX_CHUNKS`] chunks.
pub fn chunk_size(size: u64) -> u64 {
    size.div_ceil(MAX_CHUNKS).next_power_of_two().max(MIN_CHUNK)
}

/// How many chunks a file of `size` bytes has (the last one may be short).
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(chunk_size(size))
}

/// Why a name may not travel in the protocol, or `None` when it may.
///
/// A name is a relative path: non-empty `/`-separated components, none of them `.` or
/// `..`, no backslash, no control characters, no bidi controls or other invisible
/// characters (see [`is_hidden`]), at most [`MAX_NAME`] bytes.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > MAX_NAME {
        return Some("is too long");
    }
    if name.chars().any(char::is_control) {
        return Some("contains control characters");
    }
    if !name.is_ascii() && name.chars().any(is_hidden) {
        return Some(
            "contains bidi controls or invisible characters (such as U+202E or U+200B); rename the file",
        );
    }
    if name.contains('\\') {
        return Some("contains a backslash");
    }
    if name.starts_with('/') {
        return Some("is an absolute path");
    }
    if name
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Some("has an empty, `.` or `..` component");
    }
    None
}

/// Whether `hex` is a SHA-256 in lowercase hex.
pub fn is_sha256_hex(hex: &str) -> bool {
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Check a file entry received from the network; the error says what is wrong with it.
pub fn check_entry(entry: &FileEntry) -> Result<(), String> {
    if let Some(problem) = name_problem(&entry.name) {
        return Err(format!("file name {:?} {problem}", truncate(&entry.name)));
    }
    if !is_sha256_hex(&entry.sha256) {
        return Err(format!(
            "sha256 of {:?} is not 64 lowercase hex digits",
            truncate(&entry.name)
        ));
    }
    if !is_sha256_hex(&entry.chunks) {
        return Err(format!(
            "chunks of {:?} is not 64 lowercase hex digits",
            truncate(&entry.name)
        ));
    }
    if entry.size > i64::MAX as u64 {
        return Err(format!(
            "size of {:?} is out of range",
            truncate(&entry.name)
        ));
    }
    match &entry.tags {
        Some(tags) => check_tags(&truncate(&entry.name), tags),
        None => Ok(()),
    }
}

/// Why one text tag may not travel, or `None` when it may: not empty, at most
/// [`MAX_TAG`] bytes, no control, bidi or invisible characters (the rule names obey).
pub fn tag_problem(text: &str) -> Option<&'static str> {
    if text.trim().is_empty() {
        return Some("is empty");
    }
    if text.len() > MAX_TAG {
        return Some("is too long");
    }
    if text.chars().any(is_hidden) {
        return Some("contains control, bidi or invisible characters (such as U+202E)");
    }
    None
}

/// Check a file's tags received from the network; the error says what is wrong.
pub fn check_tags(name: &str, tags: &Tags) -> Result<(), String> {
    let labels = ["artist", "title", "album"];
    for (label, text) in labels.iter().zip(tags.texts()) {
        if let Some(problem) = text.and_then(tag_problem) {
            return Err(format!("the {label} tag of {name:?} {problem}"));
        }
    }
    if tags.text_bytes() > MAX_FILE_TAGS {
        return Err(format!(
            "the tags of {name:?} are longer than {MAX_FILE_TAGS} bytes together"
        ));
    }
    Ok(())
}

/// Check a search hit received from the index; the error says what is wrong with it.
pub fn check_hit(hit: &Hit) -> Result<(), String> {
    check_entry(&hit.file)?;
    if let Some(local) = hit.local
        && (local.port() == 0 || local.ip().is_unspecified())
    {
        return Err(format!(
            "peer {} has the unusable local address {local}",
            hit.peer_id
        ));
    }
    if hit.addr.port() == 0 || hit.addr.ip().is_unspecified() {
        return Err(format!(
            "peer {} sharing {:?} has the unusable address {}",
            hit.peer_id,
            truncate(&hit.file.name),
            hit.addr
        ));
    }
    check_nickname(hit.peer_id, hit.nickname.as_deref())
}

/// Check the nickname the index gives a peer.
fn check_nickname(peer_id: u64, nickname: Option<&str>) -> Result<(), String> {
    match nickname.and_then(nickname_problem) {
        Some(problem) => Err(format!("peer {peer_id}'s nickname {problem}")),
        None => Ok(()),
    }
}

/// What is wrong with a one-time token (of `connect`, a reverse connection's preamble, a
/// relay), if anything: it must be [`TOKEN_HEX`] lowercase hex digits.
pub fn token_problem(token: &str) -> Option<String> {
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    (token.len() != TOKEN_HEX || !token.bytes().all(hex))
        .then(|| format!("a token must be {TOKEN_HEX} lowercase hex digits"))
}

/// Check a peer's description received from the index; the error says what is wrong.
pub fn check_peer_info(peer: &PeerInfo) -> Result<(), String> {
    if peer.addr.port() == 0 || peer.addr.ip().is_unspecified() {
        return Err(format!(
            "peer {} has the unusable address {}",
            peer.peer_id, peer.addr
        ));
    }
    if peer.bytes > i64::MAX as u64 || peer.files > i64::MAX as u64 {
        return Err(format!(
            "peer {} has a file count or size out of range",
            peer.peer_id
        ));
    }
    check_nickname(peer.peer_id, peer.nickname.as_deref())
}

/// Whether `c` changes how text looks without showing itself: control characters
/// (terminal escapes), format characters (bidi overrides such as U+202E, zero-width
/// spaces and joiners, the BOM) and line or paragraph separators.
pub fn is_hidden(c: char) -> bool {
    // ASCII needs no table lookup: only its control characters are hidden. Names are
    // checked on every hit, so this is on the index's hot path.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

/// Untrusted text (a name, a hash) made safe to show on a terminal: every character
/// [`is_hidden`] flags is written as a visible escape (`\u{202e}`), so neither terminal
/// escapes nor a right-to-left override (`invoice\u{202e}fdp.exe`) can disguise it.
pub fn visible(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        push_visible(&mut shown, c);
    }
    shown
}

fn push_visible(shown: &mut String, c: char) {
    if is_hidden(c) {
        shown.push_str(&c.escape_unicode().to_string());
    } else {
        shown.push(c);
    }
}

/// Untrusted text (an error message from the other side) made safe to print: hidden
/// characters escaped as [`visible`] does, at most [`MAX_TEXT`] bytes.
pub fn clean_text(text: &str) -> String {
    let mut clean = String::new();
    let mut one = String::new();
    for c in text.chars() {
        one.clear();
        push_visible(&mut one, c);
        if clean.len() + one.len() > MAX_TEXT {
            clean.push('…');
            break;
        }
        clean.push_str(&one);
    }
    clean
}

/// A prefix of untrusted text short enough to quote in a message.
pub fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Whether `prefix` is a SHA-256 prefix a search may use, or why not: 4 to 64 lowercase
/// hex digits (shorter would match a large part of the index).
pub fn sha256_prefix_problem(prefix: &str) -> Option<&'static str> {
    let hex = prefix
        .bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (!(4..=64).contains(&prefix.len()) || !hex).then_some("sha256: takes 4 to 64 hex digits")
}

/// The hex SHA-256 of a chunk list (the chunks' raw SHA-256 digests, concatenated): what
/// the index records as a file's `chunks`.
pub fn chunks_root(chunks: &[[u8; 32]]) -> String {
    let mut hasher = Sha256::new();
    for chunk in chunks {
        hasher.update(chunk);
    }
    hex::encode(hasher.finalize())
}

// What fits in one frame. Every list that travels (files registered, names withdrawn,
// search hits) is cut with the same bounds, so no message is ever encoded twice to
// measure it.

/// Bytes of a frame kept for everything but the list it carries.
const ENVELOPE: usize = 256;

/// JSON bytes of a file entry other than its name: keys, a 20-digit size and the two
/// 64-digit hashes.
const ENTRY_JSON_FIXED: usize = 224;

/// JSON bytes of a hit beyond its file entry: keys, an IPv6 address with port, two
/// 20-digit numbers, the 52-character fingerprint, the reachable flag, a local IPv6
/// address with port and the longest nickname.
const HIT_JSON_EXTRA: usize = 136 + 88 + 24 + 64 + MAX_NICKNAME;

/// An upper bound of a name's JSON length, quotes and separating comma included. Names
/// hold no control characters (they are checked on the way in), so only `"` and `\`
/// grow when escaped.
pub fn name_json_bound(name: &str) -> usize {
    let escaped = name.bytes().filter(|b| matches!(b, b'"' | b'\\')).count();
    name.len() + escaped + 3
}

/// JSON bytes of a file's tags other than their text: keys, quotes and five 10-digit
/// numbers.
const TAGS_JSON_FIXED: usize = 160;

/// An upper bound of a file entry's JSON length.
pub fn entry_json_bound(entry: &FileEntry) -> usize {
    let tags = entry.tags.as_ref().map_or(0, |tags| {
        // Tags hold no control characters (checked on the way in), so only `"` and `\`
        // grow when escaped.
        let texts = tags.texts();
        let text: usize = texts.iter().flatten().map(|t| name_json_bound(t)).sum();
        TAGS_JSON_FIXED + text
    });
    name_json_bound(&entry.name) + ENTRY_JSON_FIXED + tags
}

/// An upper bound of a hit's JSON length.
pub fn hit_json_bound(hit: &Hit) -> usize {
    entry_json_bound(&hit.file) + HIT_JSON_EXTRA
}

/// How many of `items`, from the first, fit in one frame of `max_frame` bytes (at least
/// one, so that a list always moves).
pub fn fitting<T>(items: &[T], max_frame: u32, bound: impl Fn(&T) -> usize) -> usize {
    let mut room = (max_frame as usize).saturating_sub(ENVELOPE);
    let fits = items
        .iter()
        .take_while(|item| {
            let cost = bound(item);
            let fits = cost <= room;
            room = room.saturating_sub(cost);
            fits
        })
        .count();
    fits.max(1).min(items.len())
}

/// `items` cut into runs that each fit in one frame of `max_frame` bytes.
pub fn batches<T, F: Fn(&T) -> usize>(
    items: &[T],
    max_frame: u32,
    bound: F,
) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let (batch, tail) = rest.split_at(fitting(rest, max_frame, &bound));
        rest = tail;
        Some(batch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_everything_and_fit() {
        let names: Vec<String> = (0..5000).map(|i| format!("dir/\\\"{i}.ogg")).collect();
        let mut seen = 0;
        for batch in batches(&names, 4096, |n| name_json_bound(n)) {
            let json = serde_json::to_vec(batch).unwrap();
            assert!(json.len() + ENVELOPE <= 4096, "{}", json.len());
            seen += batch.len();
        }
        assert_eq!(seen, names.len());
    }

    #[test]
    fn hidden_characters_are_refused_in_names_and_escaped_for_display() {
        for bad in [
            "invoice\u{202e}fdp.exe",
            "a\u{200b}b",
            "\u{feff}bom",
            "x\u{2066}y",
            "line\u{2028}sep",
            "soft\u{ad}hyphen",
        ] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(name_problem("café/Ünïcödé 日本.mp3").is_none());
        assert_eq!(visible("invoice\u{202e}fdp.exe"), "invoice\\u{202e}fdp.exe");
        assert_eq!(visible("\u{1b}]0;x\u{7}"), "\\u{1b}]0;x\\u{7}");
        assert_eq!(visible("café 日本"), "café 日本");
        let long = clean_text(&"\u{1b}".repeat(1000));
        assert!(long.len() <= MAX_TEXT + '…'.len_utf8());
        assert!(!long.chars().any(is_hidden));
    }

    #[test]
    fn hostile_and_oversized_tags_are_refused() {
        let tags = |artist: &str| Tags {
            artist: Some(artist.into()),
            ..Tags::default()
        };
        assert!(check_tags("a.mp3", &tags("Daft Punk")).is_ok());
        assert!(check_tags("a.mp3", &tags("Café 日本")).is_ok());
        for bad in ["evil\u{202e}3pm", "bell\u{7}", "", &"x".repeat(MAX_TAG + 1)] {
            assert!(check_tags("a.mp3", &tags(bad)).is_err(), "{bad:?}");
        }
        let long = "x".repeat(MAX_TAG);
        let all = Tags {
            artist: Some(long.clone()),
            title: Some(long.clone()),
            album: Some(long),
            ..Tags::default()
        };
        assert!(check_tags("a.mp3", &all).is_err());
    }

    #[test]
    fn a_sha256_prefix_is_4_to_64_lowercase_hex_digits() {
        assert!(sha256_prefix_problem("0ac7").is_none());
        assert!(sha256_prefix_problem(&"f".repeat(64)).is_none());
        for bad in ["0ac", "0AC7", "0acg", "", &"f".repeat(65)] {
            assert!(sha256_prefix_problem(bad).is_some(), "{bad}");
        }
    }
}
