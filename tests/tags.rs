//! Media tags end to end, with real processes on both index stores (memory and a
//! throwaway PostgreSQL): audio files tagged here with `lofty`, shared by a peer, found
//! by artist, album, title, bitrate and length from the shell, from one-shot commands and
//! with `--json`; a tag with a bidi override is left out by the sharer and refused by the
//! index.

mod common;
mod pg;

use std::path::Path;
use std::time::Duration;

use lofty::config::WriteOptions;
use lofty::prelude::{Accessor, TagExt};
use lofty::tag::{Tag, TagType};
use napster::protocol::{FileEntry, Tags};

use common::process::{Napster, last_word, text};

const NAPSTER: Napster = Napster {
    log: "error",
    patience: Some(Duration::from_secs(30)),
};

/// An MPEG-1 Layer III stream at `kbits` kbit/s, 44.1 kHz, `seconds` long: valid frame
/// headers with silent (zero) payloads, which lofty reads with a length and a bitrate.
fn mp3_stream(kbits: u32, seconds: u32) -> Vec<u8> {
    // MPEG-1 Layer III bitrate indexes (ISO 11172-3).
    let index = match kbits {
        128 => 0b1001,
        320 => 0b1110,
        other => panic!("no bitrate index for {other} kbit/s in this test"),
    };
    let header = [0xFF, 0xFB, index << 4, 0x00];
    let frame_len = (144 * kbits * 1000 / 44_100) as usize;
    let frames = (seconds * 44_100).div_ceil(1152);
    let mut stream = Vec::with_capacity(frame_len * frames as usize);
    for _ in 0..frames {
        stream.extend_from_slice(&header);
        stream.resize(stream.len() + frame_len - header.len(), 0);
    }
    stream
}

/// Write an MP3 file at `path` tagged (ID3v2) with artist, title and album.
fn tagged_mp3(path: &Path, kbits: u32, seconds: u32, [artist, title, album]: [&str; 3]) {
    std::fs::write(path, mp3_stream(kbits, seconds)).unwrap();
    let mut tag = Tag::new(TagType::Id3v2);
    tag.set_artist(artist.into());
    tag.set_title(title.into());
    tag.set_album(album.into());
    tag.set_track(1);
    tag.save_to_path(path, WriteOptions::default()).unwrap();
}

/// A folder of three songs, a hostile one and a text file.
fn music(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    tagged_mp3(
        &dir.join("one.mp3"),
        320,
        200,
        ["Daft Punk", "One More Time", "Discovery"],
    );
    tagged_mp3(
        &dir.join("aero.mp3"),
        128,
        100,
        ["Daft Punk", "Aerodynamic", "Discovery"],
    );
    tagged_mp3(
        &dir.join("femme.mp3"),
        128,
        70,
        ["Air", "La Femme d'Argent", "Moon Safari"],
    );
    tagged_mp3(
        &dir.join("evil.mp3"),
        128,
        30,
        ["Evil\u{202e}3pm.exe", "Harmless Title", "Nothing"],
    );
    std::fs::write(dir.join("notes.txt"), "not audio").unwrap();
}

/// The JSON records of a one-shot `search` with `words` against `index`.
fn json_search(cwd: &Path, index: &str, words: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["--index", index, "--json", "search"];
    args.extend_from_slice(words);
    let out = NAPSTER.run_args(cwd, &args);
    // A search that finds nothing exits with 1, saying nothing on stderr.
    assert!(
        out.status.success() || text(&out.stderr).is_empty(),
        "{words:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|r: &serde_json::Value| r["type"] == "hit")
        .collect()
}

fn names(records: &[serde_json::Value]) -> Vec<String> {
    let mut names: Vec<String> = records
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

/// Share the music through an index started with `serve_args`, and search it every way.
#[allow(
    clippy::too_many_lines,
    reason = "one scenario with every tag filter, read top to bottom"
)]
fn share_and_find(serve: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let mut index = NAPSTER.start(cwd, &format!("{serve}\n"));
    let addr = last_word(&index.wait_for("listening on"));
    let sharer_home = cwd.join("sharer");
    music(&sharer_home.join("music"));
    let mut sharer = NAPSTER.start(&sharer_home, &format!("connect {addr}\nregister music 0\n"));
    sharer.wait_for("registered as peer");
    let client = cwd.join("client");
    std::fs::create_dir_all(&client).unwrap();

    // The shell: quotes keep the artist's space; the table shows the tags.
    let out = NAPSTER.run(
        &client,
        &format!("connect {addr}\nsearch artist:\"daft PUNK\" album:discovery\n"),
    );
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}{}", text(&out.stderr));
    for cell in [
        "Artist",
        "Length",
        "Bitrate",
        "one.mp3",
        "aero.mp3",
        "320 kbit/s",
    ] {
        assert!(shown.contains(cell), "{cell} missing from:\n{shown}");
    }
    // 200 s of frames, as lofty measures them.
    assert!(
        shown.contains(" 3:19 ") || shown.contains(" 3:20 "),
        "{shown}"
    );
    assert!(!shown.contains("femme.mp3"), "{shown}");

    // One-shot commands get the shell's quotes already split: `artist:Daft Punk`.
    let hits = json_search(&client, &addr, &["artist:Daft Punk", "bitrate>=256"]);
    assert_eq!(names(&hits), ["one.mp3"]);
    let tags: Tags = serde_json::from_value(hits[0]["tags"].clone()).unwrap();
    assert_eq!(tags.artist.as_deref(), Some("Daft Punk"));
    assert_eq!(tags.title.as_deref(), Some("One More Time"));
    assert_eq!(tags.album.as_deref(), Some("Discovery"));
    assert_eq!(
        (tags.bitrate, tags.track, tags.sample_rate),
        (Some(320), Some(1), Some(44_100))
    );
    let length = tags.duration.unwrap();
    assert!((199..=201).contains(&length), "{length}");

    // By length, in minutes, m:ss and seconds; with a name pattern too.
    assert_eq!(
        names(&json_search(&client, &addr, &["length>3m"])),
        ["one.mp3"]
    );
    assert_eq!(
        names(&json_search(&client, &addr, &["length>=1:00", "length<2m"])),
        ["aero.mp3", "femme.mp3"]
    );
    assert_eq!(
        names(&json_search(&client, &addr, &["aero", "length<=100"])),
        ["aero.mp3"]
    );
    assert_eq!(
        names(&json_search(&client, &addr, &["title:femme"])),
        ["femme.mp3"]
    );
    // A text file has no tags: no tag criterion finds it, its name still does.
    assert!(json_search(&client, &addr, &["notes", "bitrate>=1"]).is_empty());
    let plain = json_search(&client, &addr, &["notes"]);
    assert_eq!(names(&plain), ["notes.txt"]);
    assert!(plain[0].get("tags").is_none(), "{plain:?}");

    // The bidi-overridden artist was left out by the sharer; the rest of its tags stay.
    let evil = json_search(&client, &addr, &["title:harmless"]);
    assert_eq!(names(&evil), ["evil.mp3"]);
    assert!(evil[0]["tags"].get("artist").is_none(), "{evil:?}");
    assert!(json_search(&client, &addr, &["artist:evil"]).is_empty());

    // A word that is not a criterion gets a clear usage error.
    let out = NAPSTER.run_args(&client, &["--index", &addr, "search", "length>3parsecs"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("is not a length"),
        "{}",
        text(&out.stderr)
    );

    // An index refuses a hostile tag sent as is.
    let hostile = FileEntry {
        tags: Some(Tags {
            artist: Some("Evil\u{202e}3pm.exe".into()),
            ..Tags::default()
        }),
        ..common::entry("evil.mp3", 10)
    };
    let refused = smol::block_on(async {
        let mut raw = common::index_client(addr.parse().unwrap())?;
        raw.register(9, &common::token(7), &[hostile]).await
    });
    let refused = refused
        .expect_err("a bidi override in a tag is refused")
        .to_string();
    assert!(refused.contains("artist tag"), "{refused}");
    drop(sharer);
    drop(index);
}

#[test]
fn tagged_songs_are_found_by_their_tags_in_memory() {
    share_and_find("serve 0");
}

#[test]
fn tagged_songs_are_found_by_their_tags_in_postgres() {
    let pg = pg::Postgres::start();
    share_and_find(&format!("serve 0 {}", pg.fresh_database()));
}
