//! How results look: comfy-table tables, human sizes, local times.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{Local, TimeZone};
use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use indicatif::HumanBytes;

use crate::protocol::{Hit, PeerInfo};

/// Hex digits of a SHA-256 shown in tables.
const SHORT_SHA: usize = 12;

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
    ];
    if rtts.is_some() {
        header.push("RTT");
    }
    let mut t = table(&header, &[0, 2, 4, 8]);
    for hit in hits {
        let mut row = vec![
            hit.peer_id.to_string(),
            hit.addr.ip().to_string(),
            hit.addr.port().to_string(),
            hit.file.name.clone(),
            size(hit.file.size),
            hit.file.sha256.chars().take(SHORT_SHA).collect(),
            local_time(hit.shared_at),
            hit.fingerprint.short(),
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
            name.to_owned(),
            size(bytes),
            sha.chars().take(SHORT_SHA).collect(),
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
        ]);
    }
    t.to_string()
}
