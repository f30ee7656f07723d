//! Tables and the small words in them: comfy-table tables that fit the terminal (one
//! builder, [`Columns`], for every listing), human sizes, counts and local times. Every
//! string that came from the network goes through [`shown`] first: no terminal escape,
//! bidi override or invisible character reaches the terminal as itself.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Local, TimeZone};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use indicatif::HumanBytes;

use crate::protocol::{self, Hit, PeerInfo};
use crate::shell::commands::outcome::{TransferRow, Upload, groups as group_hits};

/// Hex digits of a SHA-256 shown in tables.
const SHORT_SHA: usize = 12;

/// Peer IDs listed in one `search -c` row; more end in "…".
const GROUP_PEERS: usize = 8;

/// Text from the network as it may be shown: hidden characters escaped (`\u{202e}`).
pub fn shown(text: &str) -> String {
    protocol::visible(text)
}

/// The first digits of a SHA-256 from the network, as it may be shown.
fn short_sha(sha256: &str) -> String {
    shown(&sha256.chars().take(SHORT_SHA).collect::<String>())
}

/// `1 file`, `2 files`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `n` with its thousands apart: "5 321".
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A size in binary units ("1.50 MiB").
pub fn size(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// A rate over a duration ("1.20 GiB/s").
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!("{}/s", HumanBytes((bytes as f64 / secs) as u64))
}

/// Bytes per second, or "-" when there is no rate.
fn per_second(bytes_per_second: Option<f64>) -> String {
    bytes_per_second.map_or_else(|| "-".into(), |r| format!("{}/s", size(r as u64)))
}

/// `1h02m`, `3m05s`, `12s`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

/// Seconds since the epoch as local time.
pub fn local_time(secs: i64) -> String {
    Local
        .timestamp_opt(secs, 0)
        .single()
        .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// A peer in a table: its Peer ID, and its nickname when it has one.
pub fn peer_label(id: u64, nickname: Option<&str>) -> String {
    match nickname {
        Some(name) => format!("{id} ({name})"),
        None => id.to_string(),
    }
}

/// How a peer is reached, in a table: `direct`, or `NAT` (by a reverse connection, hole
/// punching or the index's relay).
fn reach(reachable: bool) -> &'static str {
    if reachable { "direct" } else { "NAT" }
}

/// Below this many columns, or when the whole table is wider than the terminal, tables
/// leave out their less important columns (Host, Port, Shared at, Key) instead of
/// breaking addresses and hashes across lines.
const NARROW: usize = 100;

/// The narrowest a shortened cell gets, "…" included.
const SHORTEST_NAME: usize = 8;

/// Columns a table adds to each column's widest cell: padding and a separator.
const COLUMN_EXTRA: usize = 3;

/// The width of the terminal on stdout, if it is one.
pub fn terminal_width() -> Option<usize> {
    terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0))
}

/// A table to print: its columns, which may go on a narrow terminal, and which ones give
/// way (shortened with "…") when the rest does not fit.
struct Columns<'a> {
    header: Vec<&'a str>,
    rows: Vec<Vec<String>>,
    right_aligned: &'a [&'a str],
    droppable: &'a [&'a str],
    shortened: &'a [&'a str],
}

/// `text` cut to `width` characters, ending in "…".
fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

impl Columns<'_> {
    /// Column `i`'s widest cell, header included.
    fn column(&self, i: usize) -> usize {
        self.rows
            .iter()
            .map(|r| r[i].chars().count())
            .chain([self.header[i].chars().count()])
            .max()
            .unwrap_or(0)
    }

    /// Columns the table takes with every column in full, one border included.
    fn width(&self) -> usize {
        (0..self.header.len())
            .map(|i| self.column(i) + COLUMN_EXTRA)
            .sum::<usize>()
            + 1
    }

    /// Leave out the droppable columns.
    fn drop_columns(&mut self) {
        let keep: Vec<bool> = self
            .header
            .iter()
            .map(|h| !self.droppable.contains(h))
            .collect();
        let kept = |row: Vec<String>| {
            row.into_iter()
                .zip(&keep)
                .filter_map(|(cell, &k)| k.then_some(cell))
                .collect::<Vec<_>>()
        };
        self.header = self
            .header
            .iter()
            .zip(&keep)
            .filter_map(|(h, &k)| k.then_some(*h))
            .collect();
        self.rows = std::mem::take(&mut self.rows)
            .into_iter()
            .map(kept)
            .collect();
    }

    /// Shorten the columns that give way until the table fits `width`: the narrowest
    /// first keeps what it needs, the others share the rest.
    fn shorten_to(&mut self, width: usize) {
        let mut giving: Vec<usize> = (0..self.header.len())
            .filter(|&i| self.shortened.contains(&self.header[i]))
            .collect();
        if giving.is_empty() {
            return;
        }
        let others: usize = (0..self.header.len())
            .filter(|i| !giving.contains(i))
            .map(|i| self.column(i) + COLUMN_EXTRA)
            .sum();
        let mut room = width.saturating_sub(others + 1 + COLUMN_EXTRA * giving.len());
        giving.sort_by_key(|&i| self.column(i));
        let mut left = giving.len();
        for at in giving {
            let share = (room / left).max(SHORTEST_NAME);
            for row in &mut self.rows {
                row[at] = shorten(&row[at], share);
            }
            room = room.saturating_sub(self.column(at));
            left -= 1;
        }
    }

    /// The table at `width` columns (`None`: not a terminal, every column in full).
    fn render(mut self, width: Option<usize>) -> String {
        if let Some(width) = width.filter(|&w| w < NARROW || self.width() > w) {
            self.drop_columns();
            self.shorten_to(width);
        }
        let mut table = Table::new();
        table
            .load_style(UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(self.header.clone());
        for (i, h) in self.header.iter().enumerate() {
            if self.right_aligned.contains(h)
                && let Some(column) = table.column_mut(i)
            {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        for row in self.rows {
            table.add_row(row);
        }
        table.to_string()
    }
}

/// A hit's artist, title, length and bitrate cells (empty without tags).
fn tag_cells(tags: Option<&crate::protocol::Tags>) -> [String; 4] {
    let Some(tags) = tags else {
        return Default::default();
    };
    let text = |t: &Option<String>| t.as_deref().map(shown).unwrap_or_default();
    [
        text(&tags.artist),
        text(&tags.title),
        tags.duration.map(length).unwrap_or_default(),
        tags.bitrate
            .map(|b| format!("{b} kbit/s"))
            .unwrap_or_default(),
    ]
}

/// A length in seconds as `3:05`, or `1:02:03` past an hour.
pub fn length(seconds: u32) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Search results (and a peer's files), with each peer's round-trip time when given.
pub fn hits(
    hits: &[Hit],
    rtts: Option<&BTreeMap<u64, Option<f64>>>,
    width: Option<usize>,
) -> String {
    let mut header = vec![
        "Peer ID",
        "Host",
        "Port",
        "File",
        "Size",
        "SHA-256",
        "Shared at",
        "Key",
        "Reach",
    ];
    if rtts.is_some() {
        header.push("RTT");
    }
    // Audio results show what their tags say, after the file.
    let audio = hits.iter().any(|hit| hit.file.tags.is_some());
    if audio {
        header.splice(4..4, ["Artist", "Title", "Length", "Bitrate"]);
    }
    let rows = hits
        .iter()
        .map(|hit| {
            let mut row = vec![
                peer_label(hit.peer_id, hit.nickname.as_deref()),
                hit.addr.ip().to_string(),
                hit.addr.port().to_string(),
                shown(&hit.file.name),
                size(hit.file.size),
                short_sha(&hit.file.sha256),
                local_time(hit.shared_at),
                hit.fingerprint.short(),
                reach(hit.reachable).into(),
            ];
            if audio {
                row.splice(4..4, tag_cells(hit.file.tags.as_ref()));
            }
            if let Some(rtts) = rtts {
                row.push(match rtts.get(&hit.peer_id) {
                    Some(Some(ms)) => format!("{ms:.2} ms"),
                    Some(None) => "unreachable".into(),
                    None => String::new(),
                });
            }
            row
        })
        .collect();
    Columns {
        header,
        rows,
        right_aligned: &["Peer ID", "Port", "Size", "RTT", "Length", "Bitrate"],
        droppable: &["Host", "Port", "Shared at", "Key"],
        shortened: &["File"],
    }
    .render(width)
}

/// Search results with one row per distinct contents and its peers.
pub fn groups(hits: &[Hit], width: Option<usize>) -> String {
    let rows = group_hits(hits)
        .into_iter()
        .map(|g| {
            let mut list: Vec<String> = g
                .peer_ids
                .iter()
                .take(GROUP_PEERS)
                .map(u64::to_string)
                .collect();
            if g.peer_ids.len() > GROUP_PEERS {
                list.push("…".into());
            }
            vec![
                shown(&g.name),
                size(g.size),
                short_sha(&g.sha256),
                g.peer_ids.len().to_string(),
                list.join(", "),
            ]
        })
        .collect();
    Columns {
        header: vec!["File", "Size", "SHA-256", "Peers", "Peer IDs"],
        rows,
        right_aligned: &["Size", "Peers"],
        droppable: &[],
        shortened: &["File"],
    }
    .render(width)
}

/// Registered peers.
pub fn peers(peers: &[PeerInfo], width: Option<usize>) -> String {
    let rows = peers
        .iter()
        .map(|p| {
            vec![
                peer_label(p.peer_id, p.nickname.as_deref()),
                p.addr.ip().to_string(),
                p.addr.port().to_string(),
                p.files.to_string(),
                size(p.bytes),
                local_time(p.shared_at),
                p.fingerprint.short(),
                reach(p.reachable).into(),
            ]
        })
        .collect();
    Columns {
        header: vec![
            "Peer ID",
            "Host",
            "Port",
            "Files",
            "Size",
            "Shared at",
            "Key",
            "Reach",
        ],
        rows,
        right_aligned: &["Peer ID", "Port", "Files", "Size"],
        droppable: &["Host", "Port", "Shared at", "Key"],
        shortened: &["Peer ID"],
    }
    .render(width)
}

/// The download queue.
pub fn transfers(rows: &[TransferRow], width: Option<usize>) -> String {
    let rows = rows
        .iter()
        .map(|r| {
            let percent = if r.size == 0 {
                100.0
            } else {
                r.done as f64 * 100.0 / r.size as f64
            };
            vec![
                r.number.to_string(),
                shown(&r.name),
                shown(&r.state),
                format!("{percent:.0}% of {}", size(r.size)),
                per_second(r.rate),
                r.eta_seconds
                    .map_or_else(|| "-".into(), |s| duration(Duration::from_secs_f64(s))),
                r.peers.to_string(),
            ]
        })
        .collect();
    Columns {
        header: vec!["#", "File", "State", "Progress", "Rate", "ETA", "Peers"],
        rows,
        right_aligned: &["#", "Progress", "Rate", "ETA", "Peers"],
        droppable: &["ETA", "Peers"],
        shortened: &["File", "State"],
    }
    .render(width)
}

/// Who downloads from this peer.
pub fn uploads(rows: &[Upload], width: Option<usize>) -> String {
    let rows = rows
        .iter()
        .map(|r| {
            vec![
                r.peer_id.to_string(),
                r.fingerprint.short(),
                r.from.to_string(),
                shown(&r.name),
                format!("{} of {}", size(r.sent), size(r.size)),
                per_second(r.rate),
                match r.position {
                    Some(position) => format!("waiting for a slot, position {position}"),
                    None => "sending".into(),
                },
            ]
        })
        .collect();
    Columns {
        header: vec!["Peer ID", "Key", "From", "File", "Sent", "Rate", "State"],
        rows,
        right_aligned: &["Peer ID", "Sent", "Rate"],
        droppable: &["Key", "From"],
        shortened: &["File"],
    }
    .render(width)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FileEntry;

    /// `search -c` collapses by contents: the same bytes under two names are one row,
    /// named by the first name, listing every peer once; other bytes under one of those
    /// names are a row of their own.
    #[test]
    fn search_c_groups_by_contents_not_by_name() {
        let same = "ab".repeat(32);
        let other = "cd".repeat(32);
        let mut hits = vec![
            hostile_hit("song.ogg", &same),
            hostile_hit("Song (copy).ogg", &same),
            hostile_hit("song.ogg", &other),
        ];
        hits[1].peer_id = 8;
        let groups = crate::shell::commands::outcome::groups(&hits);
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert_eq!(groups[0].name, "Song (copy).ogg");
        assert_eq!(groups[0].sha256, same);
        assert_eq!(groups[0].peer_ids, vec![7, 8]);
        assert_eq!(
            (groups[1].name.as_str(), groups[1].peer_ids.as_slice()),
            ("song.ogg", &[7][..])
        );
    }

    fn hostile_hit(name: &str, sha256: &str) -> Hit {
        Hit {
            peer_id: 7,
            addr: "127.0.0.1:4000".parse().unwrap(),
            reachable: true,
            local: None,
            file: FileEntry {
                name: name.into(),
                size: 3,
                sha256: sha256.into(),
                chunks: "0".repeat(64),
                tags: None,
            },
            shared_at: 0,
            fingerprint: crate::protocol::Fingerprint::of_public_key(b"test key"),
            nickname: None,
        }
    }

    #[test]
    fn tables_show_hostile_names_and_hashes_escaped() {
        let hits = [
            hostile_hit("\u{1b}]0;pwned\u{7}\u{1b}[2Jclear", "\u{1b}[31m0123456789"),
            hostile_hit("invoice\u{202e}fdp.exe", "\u{200b}abc"),
        ];
        for table in [hits_table(&hits), groups(&hits, None)] {
            assert!(
                !table.contains('\u{1b}') && !table.contains('\u{7}'),
                "{table}"
            );
            assert!(!table.contains('\u{202e}') && !table.contains('\u{200b}'));
            assert!(table.contains("\\u{202e}"), "{table}");
        }
    }

    fn hits_table(h: &[Hit]) -> String {
        hits(h, None, None)
    }

    /// Below 100 columns, Host, Port, Shared at and Key go, long names end in "…", and no
    /// address or hash is broken across lines.
    #[test]
    fn narrow_tables_drop_columns_instead_of_breaking_tokens() {
        let mut long = hostile_hit(
            "a very long folder name/with a very long file name from a concert.ogg",
            "0ac762be7b33aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        );
        long.addr = "203.0.113.250:45000".parse().unwrap();
        let long = [long];
        for width in [60, 80, 99] {
            let table = hits(&long, None, Some(width));
            for line in table.lines() {
                assert!(line.chars().count() <= width, "{width}: {line}\n{table}");
            }
            assert!(
                !table.contains("Host") && !table.contains("Shared at"),
                "{table}"
            );
            assert!(
                table.contains("0ac762be7b33") && table.contains('…'),
                "{table}"
            );
        }
        let wide = hits(&long, None, Some(200));
        assert!(
            wide.contains("203.0.113.250") && wide.contains("Shared at"),
            "{wide}"
        );
        assert!(wide.contains("from a concert.ogg"), "{wide}");
        let piped = hits(&long, None, None);
        assert_eq!(piped, wide);
        // Wider than 100 columns but narrower than the whole table (a nickname makes the
        // Peer ID column wide): the same columns go, and no line is wider than the terminal.
        let full = wide.lines().map(|l| l.chars().count()).max().unwrap();
        let table = hits(&long, None, Some(full - 1));
        assert!(table.lines().all(|l| l.chars().count() < full), "{table}");
        assert!(!table.contains("Shared at"), "{table}");
    }

    /// The queue and the uploads use the same builder: on a narrow terminal their less
    /// important columns go and long names and states give way, no line wider than it.
    #[test]
    fn transfers_and_uploads_fit_a_narrow_terminal() {
        let row = TransferRow {
            number: 12,
            name: "a very long folder name/with a very long file name from a concert.ogg".into(),
            stage: "failed",
            state: "failed: no peer shares it right now; `resume` tries again later on".into(),
            done: 1 << 20,
            size: 3 << 30,
            rate: None,
            eta_seconds: None,
            peers: 0,
            waiting: None,
        };
        let upload = Upload {
            peer_id: 4417,
            fingerprint: crate::protocol::Fingerprint::of_public_key(b"test key"),
            from: "203.0.113.250:45000".parse().unwrap(),
            name: row.name.clone(),
            size: 3 << 30,
            sent: 1 << 20,
            rate: Some(1e6),
            position: None,
        };
        for (width, up_width) in [(60, 80), (80, 90)] {
            let queue = transfers(std::slice::from_ref(&row), Some(width));
            let up = uploads(std::slice::from_ref(&upload), Some(up_width));
            for (table, width) in [(&queue, width), (&up, up_width)] {
                assert!(
                    table.lines().all(|l| l.chars().count() <= width),
                    "{width}:\n{table}"
                );
                assert!(table.contains('…'), "{table}");
            }
            assert!(
                !queue.contains("ETA") && queue.contains("failed"),
                "{queue}"
            );
            assert!(!up.contains("203.0.113.250") && up.contains("4417"), "{up}");
        }
        let piped = transfers(std::slice::from_ref(&row), None);
        assert!(
            piped.contains(&row.state) && piped.contains("ETA"),
            "{piped}"
        );
    }
}
