//! How results look: comfy-table tables, human sizes, local times. Every string that
//! came from the network goes through [`shown`] first: no terminal escape, bidi override
//! or invisible character reaches the terminal as itself.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Local, TimeZone};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use indicatif::HumanBytes;

use crate::client::Reach;
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

/// Seconds since the epoch as local time.
pub fn local_time(secs: i64) -> String {
    Local
        .timestamp_opt(secs, 0)
        .single()
        .map_or_else(|| "?".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

fn table(header: &[&str], right_aligned: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    for &i in right_aligned {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
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
    let mut t = table(&header, &[0, 2, 4, 9]);
    for hit in hits {
        let mut row = vec![
            hit.peer_id.to_string(),
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
        t.add_row(row);
    }
    t.to_string()
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
    let mut t = table(&["File", "Size", "SHA-256", "Peers", "Peer IDs"], &[1, 3]);
    for ((name, sha), (bytes, ids)) in groups {
        let mut list: Vec<String> = ids.iter().take(8).map(u64::to_string).collect();
        if ids.len() > 8 {
            list.push("…".into());
        }
        t.add_row(vec![
            shown(name),
            size(bytes),
            short_sha(sha),
            ids.len().to_string(),
            list.join(", "),
        ]);
    }
    t.to_string()
}

/// Registered peers.
pub fn peers(peers: &[PeerInfo]) -> String {
    let mut t = table(
        &[
            "Peer ID",
            "Host",
            "Port",
            "Files",
            "Size",
            "Shared at",
            "Key",
            "Reach",
        ],
        &[0, 2, 3, 4],
    );
    for p in peers {
        t.add_row(vec![
            p.peer_id.to_string(),
            p.addr.ip().to_string(),
            p.addr.port().to_string(),
            p.files.to_string(),
            size(p.bytes),
            local_time(p.shared_at),
            p.fingerprint.short(),
            reach(p.reachable).into(),
        ]);
    }
    t.to_string()
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
}
