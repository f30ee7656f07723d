//! How results look: comfy-table tables, human sizes, local times. Every string that
//! came from the network goes through [`shown`] first: no terminal escape, bidi override
//! or invisible character reaches the terminal as itself.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Local, TimeZone};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use indicatif::HumanBytes;

use super::output::Record;
use crate::client::Reach;
use crate::config::HomeFrom;
use crate::download::Downloaded;
use crate::protocol::{self, Hit, PeerInfo};

/// Hex digits of a SHA-256 shown in tables.
const SHORT_SHA: usize = 12;

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

/// A size in binary units ("1.50 MiB").
pub fn size(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// A rate over a duration ("1.20 GiB/s").
pub fn rate(bytes: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-6);
    format!("{}/s", HumanBytes((bytes as f64 / secs) as u64))
}

/// What a search asked for, with its filters as typed: `"song" (>1GB, sha256:0ac7)`.
pub fn query(pattern: &str, filters: &[String]) -> String {
    match (pattern.is_empty(), filters.is_empty()) {
        (true, _) => filters.join(" "),
        (false, true) => format!("{pattern:?}"),
        (false, false) => format!("{pattern:?} with {}", filters.join(" ")),
    }
}

/// Seconds since the epoch as local time.
pub fn local_time(secs: i64) -> String {
    Local
        .timestamp_opt(secs, 0)
        .single()
        .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// Below this many columns, or when the whole table is wider than the terminal, tables
/// leave out their less important columns (Host, Port, Shared at, Key) instead of
/// breaking addresses and hashes across lines.
const NARROW: usize = 100;

/// The narrowest a shortened name gets, "…" included.
const SHORTEST_NAME: usize = 8;

/// The width of the terminal on stdout, if it is one.
pub fn terminal_width() -> Option<usize> {
    terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0))
}

/// A table to print: its columns, which may go on a narrow terminal, and which one gives
/// way (shortened with "…") when the rest does not fit.
struct Columns<'a> {
    header: Vec<&'a str>,
    rows: Vec<Vec<String>>,
    right_aligned: &'a [&'a str],
    droppable: &'a [&'a str],
    shortened: &'a str,
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
    /// Columns the table takes with every column in full: each column's widest cell and
    /// 3 more (padding, separator), and one border.
    fn width(&self) -> usize {
        (0..self.header.len())
            .map(|i| {
                let widest = self.rows.iter().map(|r| r[i].chars().count());
                widest
                    .chain([self.header[i].chars().count()])
                    .max()
                    .unwrap_or(0)
                    + 3
            })
            .sum::<usize>()
            + 1
    }

    /// The table at `width` columns (`None`: not a terminal, every column in full).
    fn render(mut self, width: Option<usize>) -> String {
        let natural = self.width();
        if let Some(width) = width.filter(|&w| w < NARROW || natural > w) {
            let keep: Vec<bool> = self
                .header
                .iter()
                .map(|h| !self.droppable.contains(h))
                .collect();
            let keep_of = |row: Vec<String>| {
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
            self.rows = self.rows.into_iter().map(keep_of).collect();
            if let Some(at) = self.header.iter().position(|h| *h == self.shortened) {
                let column = |i: usize| {
                    self.rows
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([self.header[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                };
                // Each column takes its width and 3 more (padding, separator); one border.
                let others: usize = (0..self.header.len())
                    .filter(|&i| i != at)
                    .map(|i| column(i) + 3)
                    .sum();
                let room = width.saturating_sub(others + 3 + 1).max(SHORTEST_NAME);
                for row in &mut self.rows {
                    row[at] = shorten(&row[at], room);
                }
            }
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

/// A peer in a table: its Peer ID, and its nickname when it has one.
pub fn peer_label(id: u64, nickname: Option<&str>) -> String {
    match nickname {
        Some(name) => format!("{id} ({name})"),
        None => id.to_string(),
    }
}

/// The line `get` ends with: where the file is, its size, rate and sources.
pub fn saved(done: &Downloaded) -> String {
    let mut extras = String::new();
    if done.resumed > 0 {
        extras.push_str(&format!(", resumed {}", size(done.resumed)));
    }
    if done.refetched > 0 {
        extras.push_str(&format!(
            ", {} failed their check and were fetched again",
            size(done.refetched)
        ));
    }
    let from = match done.peers.as_slice() {
        [] => "nothing new".to_owned(),
        [one] => format!("from peer {one}"),
        many => format!(
            "from peers {}",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "saved {} ({}, sha256 ok, {} {from}{extras})",
        done.path.display(),
        size(done.size),
        rate(done.size - done.resumed, done.elapsed),
    )
}

/// How the index sees our file server, for `register` and `status`.
pub fn reach_line(reach: Option<Reach>) -> String {
    match reach {
        Some(reach) if reach.reachable => format!("reachable at {}", reach.addr),
        Some(reach) => format!(
            "behind NAT: the index could not connect to {}, so other peers reach you through \
             reverse connections (those that are reachable themselves), hole punching or the \
             index's relay",
            reach.addr
        ),
        None => "reachability not known yet".to_owned(),
    }
}

/// How a peer is reached, in a table: `direct`, or `NAT` (by a reverse connection).
pub fn reach(reachable: bool) -> &'static str {
    if reachable { "direct" } else { "NAT" }
}

/// Search results, with each peer's round-trip time when given.
pub fn hits(hits: &[Hit], rtts: Option<&BTreeMap<u64, String>>) -> String {
    hits_at(hits, rtts, terminal_width())
}

/// [`hits`] at a terminal `width`.
pub fn hits_at(hits: &[Hit], rtts: Option<&BTreeMap<u64, String>>, width: Option<usize>) -> String {
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
            if let Some(rtts) = rtts {
                row.push(rtts.get(&hit.peer_id).cloned().unwrap_or_default());
            }
            row
        })
        .collect();
    Columns {
        header,
        rows,
        right_aligned: &["Peer ID", "Port", "Size", "RTT"],
        droppable: &["Host", "Port", "Shared at", "Key"],
        shortened: "File",
    }
    .render(width)
}

/// Search results with one row per distinct contents and its peers.
pub fn collapsed(hits: &[Hit]) -> String {
    let mut groups: BTreeMap<(&str, &str), (u64, Vec<u64>)> = BTreeMap::new();
    for hit in hits {
        let entry = groups
            .entry((hit.file.name.as_str(), hit.file.sha256.as_str()))
            .or_insert((hit.file.size, Vec::new()));
        entry.1.push(hit.peer_id);
    }
    let mut rows = Vec::new();
    for ((name, sha), (bytes, ids)) in groups {
        let mut list: Vec<String> = ids.iter().take(8).map(u64::to_string).collect();
        if ids.len() > 8 {
            list.push("…".into());
        }
        rows.push(vec![
            shown(name),
            size(bytes),
            short_sha(sha),
            ids.len().to_string(),
            list.join(", "),
        ]);
    }
    Columns {
        header: vec!["File", "Size", "SHA-256", "Peers", "Peer IDs"],
        rows,
        right_aligned: &["Size", "Peers"],
        droppable: &[],
        shortened: "File",
    }
    .render(terminal_width())
}

/// Registered peers.
pub fn peers(peers: &[PeerInfo]) -> String {
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
        shortened: "Peer ID",
    }
    .render(terminal_width())
}

/// The lines `status` shows of a [`Record::Home`]: the home and why, the key files, the
/// config files in effect.
pub fn home(record: &Record) -> String {
    let Record::Home {
        home,
        chosen_by,
        key,
        index_key,
        config_files,
    } = record
    else {
        return String::new();
    };
    let why = match chosen_by {
        HomeFrom::Option => "--home",
        HomeFrom::Env => "NAPSTER_HOME",
        HomeFrom::Legacy => "a key file was already in this folder",
        HomeFrom::DataDir => "the user's data directory",
    };
    let configs = match config_files.is_empty() {
        true => "none (built-in defaults)".to_owned(),
        false => format!(
            "{} (each overrides the ones before, key by key)",
            config_files.join(", ")
        ),
    };
    format!("home: {home} ({why})\nkey: {key}; index key: {index_key}\nconfig: {configs}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FileEntry;

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
        for table in [hits_table(&hits), collapsed(&hits)] {
            assert!(
                !table.contains('\u{1b}') && !table.contains('\u{7}'),
                "{table}"
            );
            assert!(!table.contains('\u{202e}') && !table.contains('\u{200b}'));
            assert!(table.contains("\\u{202e}"), "{table}");
        }
    }

    fn hits_table(h: &[Hit]) -> String {
        hits(h, None)
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
        let hits = [long];
        for width in [60, 80, 99] {
            let table = hits_at(&hits, None, Some(width));
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
        let wide = hits_at(&hits, None, Some(200));
        assert!(
            wide.contains("203.0.113.250") && wide.contains("Shared at"),
            "{wide}"
        );
        assert!(wide.contains("from a concert.ogg"), "{wide}");
        let piped = hits_at(&hits, None, None);
        assert_eq!(piped, wide);
        // Wider than 100 columns but narrower than the whole table (a nickname makes the
        // Peer ID column wide): the same columns go, and no line is wider than the terminal.
        let full = wide.lines().map(|l| l.chars().count()).max().unwrap();
        let table = hits_at(&hits, None, Some(full - 1));
        assert!(table.lines().all(|l| l.chars().count() < full), "{table}");
        assert!(!table.contains("Shared at"), "{table}");
    }
}
