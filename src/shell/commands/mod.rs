//! The command table: the one source of truth for parsing (a `clap` command built from
//! each entry, used by the shell's lines and by the binary's one-shot subcommands alike),
//! `help`, completion, hints and `napster completions`.

mod args;
pub(super) mod handlers;
pub mod link;
pub mod outcome;

use crate::error::{Error, Result};
pub use args::{Command, Direction, FilesArgs, Format, GetArgs, SearchArgs};
use clap::{FromArgMatches, Subcommand};

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
    },
    Spec {
        name: "register",
        args: "[dir] [port]",
        summary: "share a folder: hash it, serve it, register it with the index",
        details: "Defaults: [peer] dir and [peer] port from napster.toml; port 0 takes any free \
                  port. Prints the Peer ID the index assigned. The files stay in the index while \
                  this process runs.",
        aliases: &[],
    },
    Spec {
        name: "share",
        args: "<dir|file>",
        summary: "share another folder, or a single file, too",
        details: "A folder's files appear with names relative to it; a single file under its \
                  own name. Shared folders are watched: added, changed, renamed and deleted \
                  files reach the index by themselves. `~` is the home folder; a name with \
                  spaces goes in quotes.",
        aliases: &[],
    },
    Spec {
        name: "unshare",
        args: "<dir|file>",
        summary: "withdraw a shared folder, or one file (by its shared name or path)",
        details: "",
        aliases: &[],
    },
    Spec {
        name: "refresh",
        args: "",
        summary: "scan the shared folders now and tell the index what changed",
        details: "Shares follow their folders by themselves (notifications, and a rescan every \
                  [peer] rescan seconds); refresh forces it. Only new or changed files are read; \
                  the rest come from the hash cache.",
        aliases: &["rescan"],
    },
    Spec {
        name: "unregister",
        args: "",
        summary: "withdraw this peer's files and stop serving them",
        details: "",
        aliases: &[],
    },
    Spec {
        name: "search",
        args: "[-r] [-c] [-n N] [--offset N] <pattern> [sha256:HEX] [>SIZE] [<SIZE]",
        summary: "find files by name (substring, or * and ? wildcards), hash, size and media tags",
        details: "Case-insensitive; the pattern needs at least 2 characters besides * and ?. \
                  sha256:HEX matches a hash prefix (then the pattern may be left out); >10MB, \
                  >=1GiB, <700MB, <=2MiB filter by size. Every peer sharing a match gets a row \
                  with its Peer ID, which `get` takes. -c collapses rows of the same contents \
                  into one with its peer count; -n N asks for at most N rows (default \
                  [shell] results; above the index's [index] max_results napster asks page \
                  after page); --offset N skips the first N rows, and `more` shows the next \
                  page; the footer gives the true total; -r pings each \
                  peer and shows its round-trip time. Reach says how a peer is reached: direct, \
                  or NAT (behind a NAT: by a reverse connection, hole punching or the index's \
                  relay).",
        aliases: &[],
    },
    Spec {
        name: "files",
        args: "[-n N] [--offset N] <peer>",
        summary: "list every file a peer shares (browse)",
        details: "The peer is a Peer ID from `search` or `peers`. One page of the index's \
                  [index] max_results rows at a time, by name, with the peer's true total: \
                  `more` shows the next page, --offset N starts after N rows, -n N asks for N \
                  rows (page after page).",
        aliases: &["browse"],
    },
    Spec {
        name: "more",
        args: "",
        summary: "the next page of the last `search` or `files`",
        details: "Continues where the last listing stopped (its footer says `more` shows the \
                  next); the same as asking again with --offset.",
        aliases: &[],
    },
    Spec {
        name: "get",
        args: "[-b] [-r] <file>... [peer]",
        summary: "download files from every peer that has them, verified by SHA-256",
        details: "Without a peer, chunks come from all peers sharing the same contents at once, \
                  each chunk checked as it arrives; with a peer (a last word that names one), \
                  only from that one. Several names fetch several files; a wildcard ('*.ogg', \
                  quoted) fetches every match; -r live/ fetches a folder with everything under \
                  it, keeping its relative paths under [peer] downloads (never outside it); \
                  sha256:HEX (a prefix long enough to be unique) fetches those bytes from every \
                  peer sharing them, whatever they named them; a napster:?xt=… link (see `link`) \
                  too. Saved in [peer] downloads; a different file already there is never \
                  overwritten (the new one becomes `name (1).ext`, and a later `get` finds it \
                  there). A bare name nobody shares at the top of a folder finds the one file \
                  of that name in a subfolder (get deep.txt for sub2/deep.txt). A name with \
                  spaces goes in quotes: get 'my song.ogg'. Ctrl-C stops it and keeps \
                  what arrived: `get` again resumes. -b adds them to the download queue instead \
                  (see `transfers`): at most [peer] max_downloads run at once, and the queue is \
                  kept in the downloads folder, so a napster started there again resumes it. A \
                  peer behind a NAT is reached by a reverse connection (when you share from a \
                  reachable address), by hole punching, or through the index's relay; the last \
                  line says how each source was reached: from 2 peers: 12 direct, 40 reverse.",
        aliases: &[],
    },
    Spec {
        name: "transfers",
        args: "",
        summary: "list the download queue: state, progress, rate, ETA, peers",
        details: "Each download has a number for cancel, pause and resume. Its state is queued, \
                  running, waiting for a slot at peer N (position P in that peer's upload line), \
                  paused, done, failed (and why) or cancelled.",
        aliases: &["queue"],
    },
    Spec {
        name: "cancel",
        args: "<N>",
        summary: "stop download N and remove what arrived",
        details: "",
        aliases: &[],
    },
    Spec {
        name: "pause",
        args: "<N>",
        summary: "stop download N, keeping what arrived (resume N goes on)",
        details: "",
        aliases: &[],
    },
    Spec {
        name: "resume",
        args: "<N>",
        summary: "put a paused or failed download back in the queue",
        details: "Only what is missing is fetched: what arrived is neither fetched nor hashed \
                  again.",
        aliases: &[],
    },
    Spec {
        name: "clear",
        args: "",
        summary: "drop finished, failed and cancelled downloads from `transfers`",
        details: "",
        aliases: &[],
    },
    Spec {
        name: "uploads",
        args: "",
        summary: "who downloads what from this peer, and who waits for a slot",
        details: "One row per downloader and file: its Peer ID (from its key) and address, the \
                  file, bytes sent and rate, or its position in line for an upload slot \
                  ([peer] max_uploads).",
        aliases: &[],
    },
    Spec {
        name: "link",
        args: "<file> [peer]",
        summary: "print a link to a shared file, for a chat or a web page",
        details: "The link is napster:?xt=urn:sha256:<64 hex>&dn=<name>&xl=<bytes>, shaped like \
                  magnet links; `get <link>` fetches those bytes from every peer sharing them.",
        aliases: &[],
    },
    Spec {
        name: "limit",
        args: "[up|down] [rate]",
        summary: "show or set bandwidth limits (e.g. limit up 2MiB/s; 0 = none)",
        details: "Rates are bytes per second: 500kB/s, 2MiB/s, 1000000. The upload limit is shared \
                  by everything this peer serves, the download limit by all downloads; without \
                  up or down (limit 1MiB/s, limit 0) a rate sets both. \
                  Defaults: [peer] upload_limit and download_limit.",
        aliases: &[],
    },
    Spec {
        name: "ping",
        args: "<peer>",
        summary: "round-trip time to a peer's file server",
        details: "The peer is a Peer ID from `search` or `peers`.",
        aliases: &[],
    },
    Spec {
        name: "peers",
        args: "",
        summary: "list the peers registered with the index",
        details: "Reach says how each is reached: direct, or NAT (behind a NAT).",
        aliases: &[],
    },
    Spec {
        name: "status",
        args: "",
        summary: "what this process serves, shares and talks to",
        details: "Includes whether other peers can reach this one: reachable at host:port, or \
                  behind NAT (then they come by reverse connections, hole punching or the index's relay); \
                  and, while sharing, the router's port mapping of the file server: \
                  `port mapping: PUBLIC → LOCAL via UPnP`, `none (no router answered)`, or \
                  `off` when [peer] port_mapping = false. Last, this napster's home (where \
                  its keys, pinned index keys, hash cache and history live) and why it is \
                  there, its key files, and the config files read.",
        aliases: &[],
    },
    Spec {
        name: "format",
        args: "[table|json]",
        summary: "show or choose how results print: tables, or JSON Lines for programs",
        details: "json prints one JSON object per line on stdout (one per result row or \
                  event; see docs/JSON.md) and errors as JSON on stderr; the same as running \
                  napster with --json.",
        aliases: &[],
    },
    Spec {
        name: "help",
        args: "[command]",
        summary: "list the commands, or explain one",
        details: "",
        aliases: &["?"],
    },
    Spec {
        name: "quit",
        args: "",
        summary: "withdraw shared files, stop serving and leave (also: exit)",
        details: "At a prompt, says which downloads still run and asks first. Downloads in the \
                  queue are stopped with what arrived kept: napster started again in this \
                  folder resumes them.",
        aliases: &["exit"],
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

/// `root` with a subcommand per table entry: its arguments from [`Command`]'s variant,
/// its usage, help and aliases from the table.
pub fn with_commands(root: clap::Command) -> clap::Command {
    COMMANDS
        .iter()
        .fold(Command::augment_subcommands(root), |root, spec| {
            root.mut_subcommand(spec.name, |c| describe(c, spec))
        })
}

/// A command as the table describes it.
fn describe(command: clap::Command, spec: &Spec) -> clap::Command {
    let long = if spec.details.is_empty() {
        spec.summary.to_owned()
    } else {
        format!("{}.\n\n{}", spec.summary, spec.details)
    };
    command
        .about(spec.summary)
        .long_about(long)
        .override_usage(format!("{} {}", spec.name, spec.args).trim_end().to_owned())
        .visible_aliases(spec.aliases.iter().copied().filter(|a| *a != "?"))
        .aliases(spec.aliases.iter().copied().filter(|a| *a == "?"))
}

/// The shell's parser: a line's first word names the command; no `--help` flag (the
/// shell has `help`).
fn line_parser(name: &str) -> clap::Command {
    with_commands(
        clap::Command::new("napster")
            .no_binary_name(true)
            .disable_help_subcommand(true)
            .disable_help_flag(true),
    )
    .mut_subcommand(name, |c| c.disable_help_flag(true))
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
            "unknown command {:?}{}; type `help` for the list",
            crate::protocol::truncate(&name),
            did_you_mean(&name)
        )));
    };
    let matches = line_parser(spec.name)
        .try_get_matches_from(std::iter::once(spec.name).chain(args.iter().map(String::as_str)))
        .map_err(|e| with_quoting_hint(spec, args, clap_error(spec, &e)))?;
    from_matches(&matches).map(Some)
}

/// The command `matches` hold (their subcommand), settled.
pub fn from_matches(matches: &clap::ArgMatches) -> Result<Command> {
    Command::from_arg_matches(matches)
        .map_err(|e| Error::Usage(e.to_string()))?
        .settle()
}

/// How alike a typo and a command must be (Jaro-Winkler) to suggest the command.
const SUGGEST_SIMILARITY: f64 = 0.8;

/// ` (did you mean `search`?)` for a word close to a command name, or nothing.
pub(super) fn did_you_mean(word: &str) -> String {
    COMMANDS
        .iter()
        .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
        .map(|name| (strsim::jaro_winkler(word, name), name))
        .filter(|(score, _)| *score >= SUGGEST_SIMILARITY)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, name)| format!(" (did you mean `{name}`?)"))
        .unwrap_or_default()
}

/// For a command taking a name or path, an error on words that look like one name
/// split at its spaces (`get my song.ogg`) says how to quote it.
fn with_quoting_hint(spec: &Spec, args: &[String], error: Error) -> Error {
    if !matches!(spec.name, "get" | "link" | "share" | "unshare" | "register") {
        return error;
    }
    let mut words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|w| !w.starts_with('-'))
        .collect();
    // A trailing number is the peer (get, link) or the port (register).
    if matches!(spec.name, "get" | "link" | "register")
        && words.len() > 2
        && words.last().is_some_and(|w| w.parse::<u64>().is_ok())
    {
        words.pop();
    }
    if words.len() < 2 {
        return error;
    }
    let name = words.join(" ");
    let quoted = shlex::try_quote(&name).map_or_else(|_| name.clone(), |q| q.into_owned());
    match error {
        Error::Usage(text) => Error::Usage(format!(
            "{text}\na name with spaces goes in quotes: {} {quoted}",
            spec.name
        )),
        other => other,
    }
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
        ErrorKind::MissingRequiredArgument => Error::Usage(format!(
            "`{}` needs more: {}; `help {}` says what each word is",
            spec.name,
            usage_line(spec).trim_start_matches("usage: "),
            spec.name
        )),
        _ => Error::Usage(format!("{first}\n{}", usage_line(spec))),
    }
}
