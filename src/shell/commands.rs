//! The command table: the one source of truth for parsing (a `clap` command built from
//! each entry, used by the shell's lines and by the binary's one-shot subcommands alike),
//! `help`, completion, hints and `napster completions`.

pub use super::args::{Command, Direction, Format, SearchArgs, from_matches};
use super::args::{
    connect_params, format_params, get_params, help_params, limit_params, no_params, peer_params,
    register_params, search_params, serve_params, share_params, unshare_params,
};
use crate::error::{Error, Result};

/// One command of the shell.
#[derive(Debug)]
pub struct Spec {
    /// What the user types.
    pub name: &'static str,
    /// Its arguments, as shown in usage lines and hints.
    pub args: &'static str,
    /// One line for the `help` listing.
    pub summary: &'static str,
    /// The rest of `help <command>`.
    pub details: &'static str,
    /// Other names it answers to.
    pub aliases: &'static [&'static str],
    /// Its arguments, as `clap` parses them (the usage line is `args`).
    pub params: fn() -> Vec<clap::Arg>,
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "serve",
        args: "[port] [postgres://…]",
        summary: "start the index server in this process",
        details: "Binds [index] host from napster.toml on the given port (default [index] port; \
                  0 takes any free port and prints it). This shell then uses it as its index. \
                  The index lives in memory, or in PostgreSQL when a database URL is given (or \
                  [index] database is set): then any number of index servers share one index.",
        aliases: &[],
        params: serve_params,
    },
    Spec {
        name: "connect",
        args: "[host:port ...]",
        summary: "choose the index server(s) and check that one answers",
        details: "Without an address, uses [index] server from napster.toml. \
                  IPv6 addresses go in brackets: connect [::1]:45000. With several index \
                  servers sharing one database, give them all: a peer moves to the next when \
                  its server goes away, and registers again there by itself.",
        aliases: &[],
        params: connect_params,
    },
    Spec {
        name: "register",
        args: "[dir] [port]",
        summary: "share a folder: hash it, serve it, register it with the index",
        details: "Defaults: [peer] dir and [peer] port from napster.toml; port 0 takes any free \
                  port. Prints the Peer ID the index assigned. The files stay in the index while \
                  this process runs.",
        aliases: &[],
        params: register_params,
    },
    Spec {
        name: "share",
        args: "<dir>",
        summary: "share another folder too",
        details: "Its files appear with names relative to it. Shared folders are watched: added, \
                  changed, renamed and deleted files reach the index by themselves.",
        aliases: &[],
        params: share_params,
    },
    Spec {
        name: "unshare",
        args: "<dir|file>",
        summary: "withdraw a shared folder, or one file (by its shared name or path)",
        details: "",
        aliases: &[],
        params: unshare_params,
    },
    Spec {
        name: "refresh",
        args: "",
        summary: "scan the shared folders now and tell the index what changed",
        details: "Shares follow their folders by themselves (notifications, and a rescan every \
                  [peer] rescan seconds); refresh forces it. Only new or changed files are read; \
                  the rest come from the hash cache.",
        aliases: &["rescan"],
        params: no_params,
    },
    Spec {
        name: "unregister",
        args: "",
        summary: "withdraw this peer's files and stop serving them",
        details: "",
        aliases: &[],
        params: no_params,
    },
    Spec {
        name: "search",
        args: "[-r] [-c] [-n N] <pattern> [sha256:HEX] [>SIZE] [<SIZE]",
        summary: "find files by name (substring, or * and ? wildcards), hash and size",
        details: "Case-insensitive; the pattern needs at least 2 characters besides * and ?. \
                  sha256:HEX matches a hash prefix (then the pattern may be left out); >10MB, \
                  >=1GiB, <700MB, <=2MiB filter by size. Every peer sharing a match gets a row \
                  with its Peer ID, which `get` takes. -c collapses rows of the same contents \
                  into one with its peer count; -n N asks for at most N rows (default \
                  [shell] results, capped by the index's [index] max_results); -r pings each \
                  peer and shows its round-trip time. Reach says how a peer is reached: direct, \
                  or NAT (behind a NAT: by a reverse connection, hole punching or the index's \
                  relay).",
        aliases: &[],
        params: search_params,
    },
    Spec {
        name: "files",
        args: "<peer>",
        summary: "list every file a peer shares (browse)",
        details: "The peer is a Peer ID from `search` or `peers`.",
        aliases: &["browse"],
        params: peer_params,
    },
    Spec {
        name: "get",
        args: "[-b] <file> [peer]",
        summary: "download a file from every peer that has it, verified by SHA-256",
        details: "Without a peer, chunks come from all peers sharing the same contents at once, \
                  each chunk checked as it arrives; with a peer, only from that one. Saved in \
                  [peer] downloads; a different file already there is never overwritten (the new \
                  one becomes `name (1).ext`). Ctrl-C stops it and keeps what arrived: `get` \
                  again resumes. -b runs it in the background (see `transfers`). A peer behind \
                  a NAT is reached by a reverse connection (when you share from a reachable \
                  address), by hole punching, or through the index's relay; the last line says \
                  how each source \
                  was reached: from 2 peers: 12 direct, 40 reverse.",
        aliases: &[],
        params: get_params,
    },
    Spec {
        name: "transfers",
        args: "",
        summary: "list background downloads",
        details: "",
        aliases: &[],
        params: no_params,
    },
    Spec {
        name: "limit",
        args: "[up|down] [rate]",
        summary: "show or set bandwidth limits (e.g. limit up 2MiB/s; 0 = none)",
        details: "Rates are bytes per second: 500kB/s, 2MiB/s, 1000000. The upload limit is shared \
                  by everything this peer serves, the download limit by all downloads. \
                  Defaults: [peer] upload_limit and download_limit.",
        aliases: &[],
        params: limit_params,
    },
    Spec {
        name: "ping",
        args: "<peer>",
        summary: "round-trip time to a peer's file server",
        details: "The peer is a Peer ID from `search` or `peers`.",
        aliases: &[],
        params: peer_params,
    },
    Spec {
        name: "peers",
        args: "",
        summary: "list the peers registered with the index",
        details: "Reach says how each is reached: direct, or NAT (behind a NAT).",
        aliases: &[],
        params: no_params,
    },
    Spec {
        name: "status",
        args: "",
        summary: "what this process serves, shares and talks to",
        details: "Includes whether other peers can reach this one: reachable at host:port, or \
                  behind NAT (then they come by reverse connections, hole punching or the index's \
                  relay).",
        aliases: &[],
        params: no_params,
    },
    Spec {
        name: "format",
        args: "[table|json]",
        summary: "show or choose how results print: tables, or JSON Lines for programs",
        details: "json prints one JSON object per line on stdout (one per result row or \
                  event; see docs/JSON.md) and errors as JSON on stderr; the same as running \
                  napster with --json.",
        aliases: &[],
        params: format_params,
    },
    Spec {
        name: "help",
        args: "[command]",
        summary: "list the commands, or explain one",
        details: "",
        aliases: &["?"],
        params: help_params,
    },
    Spec {
        name: "quit",
        args: "",
        summary: "withdraw shared files, stop serving and leave (also: exit)",
        details: "",
        aliases: &["exit"],
        params: no_params,
    },
];

/// The table entry for `name` or one of its aliases.
pub fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

fn usage_line(spec: &Spec) -> String {
    format!("usage: {} {}", spec.name, spec.args)
        .trim_end()
        .to_owned()
}

/// The `clap` command of a table entry.
pub fn clap_command(spec: &'static Spec) -> clap::Command {
    let long = if spec.details.is_empty() {
        spec.summary.to_owned()
    } else {
        format!("{}.\n\n{}", spec.summary, spec.details)
    };
    clap::Command::new(spec.name)
        .about(spec.summary)
        .long_about(long)
        .override_usage(format!("{} {}", spec.name, spec.args).trim_end().to_owned())
        .visible_aliases(spec.aliases.iter().copied().filter(|a| *a != "?"))
        .aliases(spec.aliases.iter().copied().filter(|a| *a == "?"))
        .args((spec.params)())
}

/// Parse one line; `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Command>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let words = shlex::split(line)
        .ok_or_else(|| Error::Usage("unbalanced quotes in the command line".into()))?;
    let Some((name, args)) = words.split_first() else {
        return Ok(None);
    };
    let name = name.to_lowercase();
    let Some(spec) = spec(&name) else {
        return Err(Error::Usage(format!(
            "unknown command {:?}; type `help` for the list",
            crate::protocol::truncate(&name)
        )));
    };
    let matches = clap_command(spec)
        .no_binary_name(true)
        .disable_help_flag(true)
        .try_get_matches_from(args)
        .map_err(|e| clap_error(spec, &e))?;
    from_matches(spec.name, &matches).map(Some)
}

/// A `clap` error about a command's words, worded like the shell's own.
fn clap_error(spec: &Spec, e: &clap::Error) -> Error {
    use clap::error::ErrorKind;
    let rendered = e.render().to_string();
    // The first paragraph: what is wrong (clap puts a missing argument's name on its
    // own line).
    let words: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = words.join(" ");
    let first = joined.trim_start_matches("error: ");
    match e.kind() {
        ErrorKind::ValueValidation => {
            // Our own validators already say what is wrong: keep only their words.
            let own = std::error::Error::source(e)
                .map(ToString::to_string)
                .unwrap_or_else(|| first.to_owned());
            Error::Usage(own)
        }
        _ => Error::Usage(format!("{first}\n{}", usage_line(spec))),
    }
}

/// The text of `help` or `help <command>`.
pub fn help(command: Option<&str>) -> Result<String> {
    match command {
        None => {
            // Heads longer than the column get their summary on the next line.
            const COLUMN: usize = 28;
            let mut text = String::from("commands:\n");
            for c in COMMANDS {
                let head = format!("{} {}", c.name, c.args);
                if head.chars().count() > COLUMN {
                    text.push_str(&format!("  {head}\n  {:COLUMN$} {}\n", "", c.summary));
                } else {
                    text.push_str(&format!("  {head:<COLUMN$} {}\n", c.summary));
                }
            }
            text.push_str("type `help <command>` for more");
            Ok(text)
        }
        Some(name) => {
            let name = if name == "exit" { "quit" } else { name };
            let c = spec(name).ok_or_else(|| {
                Error::Usage(format!("no command {name:?}; type `help` for the list"))
            })?;
            let mut text = format!("usage: {} {}\n{}", c.name, c.args, c.summary);
            if !c.details.is_empty() {
                text.push_str(".\n");
                text.push_str(c.details);
            }
            Ok(text)
        }
    }
}
