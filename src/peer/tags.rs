//! Reading the media tags of audio files when a share is scanned (with `lofty`): artist,
//! title, album, track, year from the file's tag, and length, bitrate and sample rate
//! from its stream. Tags are what a sharer's files say about themselves, so they obey
//! the protocol's rules before they travel: a text tag with control, bidi or invisible
//! characters is left out with a warning (as a file with such a name is), long ones are
//! cut, and a peer's tags in all stay within [`MAX_PEER_TAGS`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::Path;

use lofty::prelude::{Accessor, AudioFile, TaggedFileExt};
use tracing::{debug, warn};

use crate::protocol::{MAX_FILE_TAGS, MAX_PEER_TAGS, MAX_TAG, Tags, tag_problem};

use super::share::SharedFile;

/// Name endings of the audio formats whose tags are read (the ones `lofty` reads).
const AUDIO: &[&str] = &[
    "mp3", "flac", "ogg", "oga", "opus", "spx", "m4a", "m4b", "mp4", "aac", "wav", "aif", "aiff",
    "ape", "wv", "mpc",
];

/// Whether a file is read for tags: by its name's ending, so that other files are never
/// parsed.
pub fn is_audio(name: &str) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(_, ext)| AUDIO.iter().any(|a| a.eq_ignore_ascii_case(ext)))
}

/// The tags of the open audio file at `path`, or `None` when it has none or is not one
/// `lofty` can read (logged at debug level: a file named `.mp3` may be anything).
pub fn read(file: &File, path: &Path) -> Option<Tags> {
    let mut handle = file.try_clone().ok()?;
    handle.seek(SeekFrom::Start(0)).ok()?;
    let tagged = match lofty::read_from(&mut handle) {
        Ok(tagged) => tagged,
        Err(e) => {
            debug!("no tags read from {path:?}: {e}");
            return None;
        }
    };
    let properties = tagged.properties();
    let tag = tagged.primary_tag().or_else(|| tagged.first_tag());
    let text = |label: &str, value: Option<std::borrow::Cow<'_, str>>| {
        value.and_then(|v| clean(label, v.trim(), path))
    };
    let mut tags = Tags {
        artist: text("artist", tag.and_then(|t| t.artist())),
        title: text("title", tag.and_then(|t| t.title())),
        album: text("album", tag.and_then(|t| t.album())),
        track: tag.and_then(|t| t.track()),
        year: tag.and_then(|t| t.date()).map(|d| u32::from(d.year)),
        duration: u32::try_from(properties.duration().as_secs())
            .ok()
            .filter(|&s| s > 0),
        bitrate: properties.audio_bitrate().filter(|&b| b > 0),
        sample_rate: properties.sample_rate().filter(|&r| r > 0),
    };
    // Within the bound per file: the album goes first, then the title.
    if tags.text_bytes() > MAX_FILE_TAGS {
        tags.album = None;
    }
    if tags.text_bytes() > MAX_FILE_TAGS {
        tags.title = None;
    }
    (!tags.is_empty()).then_some(tags)
}

/// A text tag fit to travel: `None` when empty or when it has hidden characters (with a
/// warning), cut to [`MAX_TAG`] bytes at a character boundary when longer.
fn clean(label: &str, text: &str, path: &Path) -> Option<String> {
    let mut text = text.to_owned();
    if text.len() > MAX_TAG {
        let mut end = MAX_TAG;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    match tag_problem(&text) {
        None => Some(text),
        Some("is empty") => None,
        Some(problem) => {
            warn!("leaving out the {label} tag of {path:?}: it {problem}");
            None
        }
    }
}

/// Leave out the tags of the files (by name) past [`MAX_PEER_TAGS`] bytes in all, so
/// that the index never refuses the share for them.
pub fn keep_within_budget(files: &mut BTreeMap<String, SharedFile>) {
    let mut used = 0u64;
    let mut dropped = 0usize;
    for file in files.values_mut() {
        let Some(tags) = &file.entry.tags else {
            continue;
        };
        used += tags.text_bytes() as u64;
        if used > MAX_PEER_TAGS {
            file.entry.tags = None;
            dropped += 1;
        }
    }
    if dropped > 0 {
        warn!(
            "left out the tags of {dropped} file(s): a peer may share {MAX_PEER_TAGS} bytes of tags"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_is_known_by_its_ending() {
        assert!(is_audio("Music/One More Time.MP3"));
        assert!(is_audio("a.flac"));
        assert!(!is_audio("notes.txt"));
        assert!(!is_audio("mp3"));
    }

    #[test]
    fn long_tags_are_cut_and_hidden_characters_left_out() {
        let path = Path::new("x.mp3");
        let long = "é".repeat(MAX_TAG);
        let cut = clean("title", &long, path).unwrap();
        assert!(cut.len() <= MAX_TAG && cut.len() > MAX_TAG - 2);
        assert_eq!(clean("artist", "evil\u{202e}3pm", path), None);
        assert_eq!(clean("artist", "", path), None);
        assert_eq!(
            clean("artist", "Daft Punk", path).as_deref(),
            Some("Daft Punk")
        );
    }
}
