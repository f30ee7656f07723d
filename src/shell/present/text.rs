//! Outcomes as text for people: the sentences and tables a command prints at the prompt,
//! in a script or after a one-shot command. Every string that came from the network goes
//! through [`table::shown`] first.

use std::fmt::Write as _;
use std::time::Duration;

use super::table::{self, count, grouped, peer_label, shown, size};
use crate::config::HomeFrom;
use crate::limit::show_rate;
use crate::shell::commands::outcome::{
    Browsed, Change, Changed, Connected, Fetched, Found, Got, Help, Home, Outcome, Page, Pinned,
    Reach, Refreshed, Registered, Saved, Serving, Sharing, Status, Transfers,
};

/// Append a line.
macro_rules! put {
    ($out:ident, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

/// The text of `outcome` on a terminal `width` columns wide (`None`: not a terminal).
pub fn text(outcome: &Outcome, width: Option<usize>) -> String {
    let mut out = String::new();
    match outcome {
        Outcome::Serving(s) => serving(&mut out, s),
        Outcome::Connected(c) => connected(&mut out, c),
        Outcome::Registered(r) => registered(&mut out, r),
        Outcome::Refreshed(r) => refreshed(&mut out, r),
        Outcome::Unregistered { peer_id } => {
            put!(out, "peer {peer_id} unregistered; its files left the index");
        }
        Outcome::Found(found) => self::found(&mut out, found, width),
        Outcome::Browsed(browsed) => self::browsed(&mut out, browsed, width),
        Outcome::Got(got) => self::got(&mut out, got),
        Outcome::Transfers(t) => transfers(&mut out, t, width),
        Outcome::Changed(c) => changed(&mut out, c),
        Outcome::Cleared { count: n } => {
            put!(out, "cleared {} that ended", count(*n, "download"));
        }
        Outcome::Uploads(None) => put!(
            out,
            "not sharing anything, so nobody downloads from here (`register` shares a folder)"
        ),
        Outcome::Uploads(Some(rows)) if rows.is_empty() => {
            put!(out, "nobody is downloading from this peer");
        }
        Outcome::Uploads(Some(rows)) => {
            put!(out, "{}", table::uploads(rows, width));
            let waiting = rows.iter().filter(|r| r.position.is_some()).count();
            put!(
                out,
                "{} sending, {waiting} waiting for a slot",
                rows.len() - waiting
            );
        }
        Outcome::Link(link) => put!(out, "{}", link.link),
        Outcome::Limits(l) => put!(
            out,
            "upload limit: {}; download limit: {}",
            show_rate(l.upload.unwrap_or(0)),
            show_rate(l.download.unwrap_or(0))
        ),
        Outcome::Pong(p) => put!(
            out,
            "peer {} ({}): rtt {:.2} ms",
            p.peer_id,
            p.addr,
            p.rtt_ms
        ),
        Outcome::Peers(peers) if peers.is_empty() => {
            put!(out, "no peer is registered with the index");
        }
        Outcome::Peers(peers) => put!(out, "{}", table::peers(peers, width)),
        Outcome::Status(s) => status(&mut out, s),
        Outcome::Help(help) => put!(out, "{}", self::help(help, width)),
        Outcome::Format(format) => put!(out, "format: {}", format.name()),
        Outcome::Quit => {}
    }
    out
}

fn serving(out: &mut String, s: &Serving) {
    put!(out, "index server listening on {}", s.addr);
    if let Some(url) = &s.metrics {
        put!(out, "metrics on {url}");
    }
    if let Some(version) = s.schema_version {
        put!(
            out,
            "the index is kept {} (schema version {version}): every index server using this \
             database shares it",
            s.backend
        );
    }
    if let Some(old) = s.replaced {
        put!(
            out,
            "this shell now uses it as its index, instead of {old} (`connect {old}` goes back)"
        );
    }
}

/// What a first (or changed) key of an index says.
pub fn pinned(p: &Pinned) -> String {
    let (addr, key, file) = (p.addr, &p.fingerprint, &p.file);
    if p.replaced {
        format!("the key of the index at {addr} is now {key} (pinned in {file})")
    } else {
        format!("first connection to the index at {addr}: its key {key} is pinned in {file}")
    }
}

fn connected(out: &mut String, c: &Connected) {
    if let Some(p) = &c.pinned {
        put!(out, "{}", pinned(p));
    }
    let others: Vec<String> = c.fails_over.iter().map(ToString::to_string).collect();
    put!(
        out,
        "connected to the index at {} (rtt {:.2} ms){}",
        c.addr,
        c.rtt_ms,
        if others.is_empty() {
            String::new()
        } else {
            format!("; fails over to {}", others.join(", "))
        }
    );
    put!(out, "index key: {}", c.fingerprint);
}

/// How the index sees our file server, for `register` and `status`.
pub fn reach(reach: Reach) -> String {
    match reach.checked {
        Some(addr) if reach.reachable => format!("reachable at {addr}"),
        Some(addr) => format!(
            "behind NAT: the index could not connect to {addr}, so other peers reach you through \
             reverse connections (those that are reachable themselves), hole punching or the \
             index's relay"
        ),
        None => "reachability not known yet".to_owned(),
    }
}

fn registered(out: &mut String, r: &Registered) {
    put!(
        out,
        "registered as peer {} with the index at {}: {}, {} from {}; serving on {}",
        peer_label(r.peer_id, r.nickname.as_deref()),
        r.index,
        count(r.files, "file"),
        size(r.bytes),
        r.dir,
        r.addr
    );
    put!(
        out,
        "read and hashed {} ({}); {} known from the hash cache, unread",
        count(r.hashed_files, "file"),
        size(r.hashed_bytes),
        count(r.cached_files, "file")
    );
    put!(out, "{}", reach(r.reach));
    if let Some(asked) = &r.nickname_taken {
        put!(
            out,
            "the nickname {asked} is taken on this index by another key; others reach you \
             by Peer ID or fingerprint (or set another `[peer] name`)"
        );
    }
}

fn refreshed(out: &mut String, r: &Refreshed) {
    put!(
        out,
        "peer {} shares {}: {} new or changed, {} withdrawn; hashed {} ({}){}",
        peer_label(r.peer_id, r.nickname.as_deref()),
        count(r.shared, "file"),
        count(r.changed, "file"),
        count(r.removed, "file"),
        count(r.hashed_files, "file"),
        size(r.hashed_bytes),
        if r.unsettled > 0 {
            format!(
                "; {} still being written, announced once settled",
                count(r.unsettled, "file")
            )
        } else {
            String::new()
        }
    );
}

/// What a search asked for, with its filters as typed: `"song" with >1GB sha256:0ac7`.
fn query(pattern: &str, filters: &[String]) -> String {
    match (pattern.is_empty(), filters.is_empty()) {
        (true, _) => filters.join(" "),
        (false, true) => format!("{pattern:?}"),
        (false, false) => format!("{pattern:?} with {}", filters.join(" ")),
    }
}

fn found(out: &mut String, found: &Found, width: Option<usize>) {
    let start = found.page.start;
    if found.hits.is_empty() {
        let what = query(&found.pattern, &found.filters);
        if start > 0 {
            put!(out, "no file matches {what} past row {}", grouped(start));
        } else {
            put!(out, "no file matches {what}");
        }
        return;
    }
    if found.collapse {
        put!(out, "{}", table::groups(&found.hits, width));
    } else {
        put!(
            out,
            "{}",
            table::hits(&found.hits, found.rtts.as_ref(), width)
        );
    }
    put!(
        out,
        "{} on {}",
        count(found.hits.len() as u64, "file"),
        count(found.peers() as u64, "peer")
    );
    footer(out, &found.page, found.hits.len() as u64);
}

fn browsed(out: &mut String, b: &Browsed, width: Option<usize>) {
    let (peer, start) = (b.peer_id, b.page.start);
    if b.hits.is_empty() {
        if start > 0 {
            put!(
                out,
                "peer {peer} shares no files past row {}",
                grouped(start)
            );
        } else {
            put!(out, "peer {peer} shares no files");
        }
        return;
    }
    put!(out, "{}", table::hits(&b.hits, None, width));
    put!(
        out,
        "peer {peer} shares {} ({})",
        count(b.files, "file"),
        size(b.bytes)
    );
    footer(out, &b.page, b.hits.len() as u64);
}

/// The line after a page's rows: where they sit in the total.
fn footer(out: &mut String, page: &Page, shown: u64) {
    match page.total {
        // A page of more: where it sits. (Everything at once needs no total.)
        Some(total) if page.truncated || page.start > 0 => {
            let of = if total.more {
                format!("more than {}", grouped(total.count))
            } else {
                grouped(total.count)
            };
            let (first, last) = (page.start + 1, page.start + shown.max(1));
            let next = if page.truncated {
                "; `more` shows the next"
            } else {
                ""
            };
            put!(
                out,
                "rows {}–{} of {of}{next}",
                grouped(first),
                grouped(last)
            );
        }
        Some(_) => {}
        None if page.truncated => put!(
            out,
            "(more match: showing the first {shown}, the most this index returns at once; \
             narrow the search)"
        ),
        None => {}
    }
}

/// A `get`: each saved file, the queued ones in one line when there are several (`get -b`
/// of a folder would print a line each), what was not fetched, and for more than one
/// file a closing summary.
fn got(out: &mut String, got: &Got) {
    let queued: Vec<u64> = got
        .files
        .iter()
        .filter_map(|f| match f {
            Fetched::Queued { transfer, .. } => Some(*transfer),
            Fetched::Saved(_) => None,
        })
        .collect();
    let (mut saved, mut bytes) = (0u64, 0u64);
    for fetched in &got.files {
        match fetched {
            Fetched::Saved(file) => {
                self::saved(out, file);
                saved += 1;
                bytes += file.size;
            }
            Fetched::Queued { transfer, name } if queued.len() == 1 => put!(
                out,
                "download {transfer} of {} is in the queue; `transfers` shows it",
                shown(name)
            ),
            Fetched::Queued { .. } => {}
        }
    }
    if queued.len() > 1 {
        put!(
            out,
            "{} are in the queue (numbers {}); `transfers` shows them",
            count(queued.len() as u64, "download"),
            numbers(&queued)
        );
    }
    if !got.problems.is_empty() {
        put!(
            out,
            "{} not fetched:\n  {}",
            count(got.problems.len() as u64, "file"),
            got.problems.join("\n  ")
        );
    }
    if got.files.len() + got.problems.len() > 1 {
        let mut parts = Vec::new();
        if saved > 0 {
            parts.push(format!("{} saved ({})", count(saved, "file"), size(bytes)));
        }
        if !queued.is_empty() {
            parts.push(format!("{} queued", queued.len()));
        }
        if !got.problems.is_empty() {
            parts.push(format!("{} not fetched", got.problems.len()));
        }
        put!(out, "get: {}", parts.join(", "));
    }
}

/// Queue numbers as a range when they follow each other (`4–16`), else listed.
fn numbers(numbers: &[u64]) -> String {
    let in_a_row = numbers.windows(2).all(|w| w[1] == w[0] + 1);
    match numbers {
        [first, .., last] if in_a_row => format!("{first}–{last}"),
        _ => numbers
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The lines `get` ends with: where the file is, its size, rate and sources, and how
/// they were reached.
fn saved(out: &mut String, s: &Saved) {
    if s.already_there {
        put!(
            out,
            "{} is already there with the same contents (sha256 ok); nothing to do",
            shown(&s.path)
        );
        return;
    }
    let mut extras = String::new();
    if s.resumed > 0 {
        extras.push_str(&format!(", resumed {}", size(s.resumed)));
    }
    if s.refetched > 0 {
        extras.push_str(&format!(
            ", {} failed their check and were fetched again",
            size(s.refetched)
        ));
    }
    let from = match s.peer_ids.as_slice() {
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
    put!(
        out,
        "saved {} ({}, sha256 ok, {} {from}{extras})",
        s.path,
        size(s.size),
        table::rate(
            s.size - s.resumed,
            Duration::from_secs_f64(s.seconds.max(0.0))
        ),
    );
    let routes: Vec<String> = s
        .routes
        .iter()
        .map(|(route, chunks)| format!("{chunks} {route}"))
        .collect();
    let plural = if s.sources == 1 { "" } else { "s" };
    put!(
        out,
        "from {} peer{plural}: {}",
        s.sources,
        routes.join(", ")
    );
    if let Some(me) = s.only_from_myself {
        put!(
            out,
            "peer {me}, which is this napster, was the only one sharing it"
        );
    }
}

fn transfers(out: &mut String, t: &Transfers, width: Option<usize>) {
    if let Some(why) = &t.unkept {
        put!(out, "note: {why}");
    }
    if t.rows.is_empty() {
        put!(out, "no downloads in the queue (`get -b <file>` adds one)");
    } else {
        put!(out, "{}", table::transfers(&t.rows, width));
    }
}

fn changed(out: &mut String, c: &Changed) {
    let said = match c.state {
        Change::Cancelled => "cancelled; what arrived is removed",
        Change::Paused => "paused; what arrived is kept (`resume` goes on)",
        Change::Queued => "back in the queue; only what is missing is fetched",
    };
    put!(out, "download {} ({}) {said}", c.transfer, shown(&c.name));
}

/// The share in a line: folders, Peer ID, files, server, index, reach.
pub fn sharing(s: &Sharing) -> String {
    format!(
        "{} as peer {} ({}, {}) on {} with the index at {} ({}); {}",
        s.roots.join(", "),
        peer_label(s.peer_id, s.nickname.as_deref()),
        count(s.files, "file"),
        size(s.bytes),
        s.addr,
        s.index,
        if s.connected {
            "connected"
        } else {
            "reconnecting"
        },
        reach(s.reach)
    )
}

fn status(out: &mut String, s: &Status) {
    match &s.index_server {
        Some(i) => put!(
            out,
            "index server: listening on {}, index {} ({}, {})",
            i.addr,
            i.backend,
            count(i.peers, "peer"),
            count(i.files, "file")
        ),
        None => put!(out, "index server: not running here (`serve` starts one)"),
    }
    match (&s.index, &s.index_error) {
        (Some(i), _) => put!(
            out,
            "index: {} (rtt {:.2} ms), key {}",
            i.addr,
            i.rtt_ms,
            i.fingerprint
        ),
        (None, why) => put!(out, "index: unreachable ({})", why.as_deref().unwrap_or("")),
    }
    match &s.sharing {
        Some(sharing) => put!(out, "sharing: {}", self::sharing(sharing)),
        None => put!(out, "sharing: nothing (`register` shares a folder)"),
    }
    if let Some(mapping) = &s.port_mapping {
        put!(out, "port mapping: {mapping}");
    }
    put!(out, "downloads: {}", s.downloads);
    put!(
        out,
        "limits: upload {}, download {}",
        show_rate(s.limits.upload.unwrap_or(0)),
        show_rate(s.limits.download.unwrap_or(0))
    );
    let q = &s.transfers;
    put!(
        out,
        "transfers: {} running, {} queued, {} paused (at most {} at once; `transfers` lists them)",
        q.running,
        q.queued,
        q.paused,
        q.max
    );
    if let Some(u) = &s.uploads {
        put!(
            out,
            "uploads: {} sending, {} waiting for a slot (`uploads` lists them)",
            u.sending,
            u.waiting
        );
    }
    match (&s.identity, &s.identity_error) {
        (Some(fingerprint), _) => put!(out, "identity: {fingerprint}"),
        (None, why) => put!(out, "identity: unusable ({})", why.as_deref().unwrap_or("")),
    }
    if let Some(home) = &s.home {
        self::home(out, home);
    }
}

/// The lines `status` shows of the home: the home and why, the key files, the config
/// files in effect.
fn home(out: &mut String, h: &Home) {
    let why = match h.chosen_by {
        HomeFrom::Option => "--home",
        HomeFrom::Env => "NAPSTER_HOME",
        HomeFrom::Legacy => "a key file was already in this folder",
        HomeFrom::DataDir => "the user's data directory",
    };
    let configs = match h.config_files.is_empty() {
        true => "none (built-in defaults)".to_owned(),
        false => format!(
            "{} (each overrides the ones before, key by key)",
            h.config_files.join(", ")
        ),
    };
    put!(out, "home: {} ({why})", h.home);
    put!(out, "key: {}; index key: {}", h.key, h.index_key);
    put!(out, "config: {configs}");
}

/// Lines of `text` no wider than `width` (words longer than that stand alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Heads of `help`'s list longer than this get their summary on the next line.
const HELP_COLUMN: usize = 28;

/// `help` wrapped to a terminal of `width` columns (`None`: not a terminal, one line
/// per summary and paragraph).
pub fn help(help: &Help, width: Option<usize>) -> String {
    let width = width.unwrap_or(usize::MAX);
    const COLUMN: usize = HELP_COLUMN;
    match help {
        Help::List(commands) => {
            // A summary wider than the rest of the line goes on below, indented.
            let room = width.saturating_sub(COLUMN + 3).max(20);
            let mut text = String::from("commands:\n");
            for c in commands {
                let head = format!("{} {}", c.name, c.args);
                let summary = wrap(c.summary, room);
                if head.chars().count() > COLUMN {
                    text.push_str(&format!("  {head}\n"));
                    for line in summary {
                        text.push_str(&format!("  {:COLUMN$} {line}\n", ""));
                    }
                } else {
                    for (i, line) in summary.iter().enumerate() {
                        let head = if i == 0 { head.as_str() } else { "" };
                        text.push_str(&format!("  {head:<COLUMN$} {line}\n"));
                    }
                }
            }
            text.push_str("type `help <command>` for more");
            text
        }
        Help::One(c) => {
            let mut text = format!("usage: {} {}\n", c.name, c.args);
            if c.details.is_empty() {
                text.push_str(&wrap(c.summary, width).join("\n"));
            } else {
                text.push_str(&wrap(&format!("{}.", c.summary), width).join("\n"));
                text.push('\n');
                text.push_str(&wrap(c.details, width).join("\n"));
            }
            text
        }
    }
}

/// What a signal stops, said as it happens: only what runs (a one-shot `get` shares
/// nothing, an index withdraws no files), and that an interrupted command's download
/// keeps its part file.
pub fn shutting_down(sharing: bool, serving: bool, busy: bool) -> String {
    let stopping: Vec<&str> = [
        (sharing, "withdrawing shared files"),
        (serving, "stopping the index server"),
    ]
    .into_iter()
    .filter_map(|(runs, what)| runs.then_some(what))
    .collect();
    let mut line = "shutting down".to_owned();
    if !stopping.is_empty() {
        line += &format!(" ({})", stopping.join(", "));
    }
    if busy {
        line += "; a download it interrupted keeps its part file: `get` it again to resume";
    }
    line
}
