//! The command table: the one source of truth for parsing, `help`, completion and hints.

use std::path::PathBuf;

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
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[Spec] = &[
    Spec {
        name: "serve",
        args: "[port]",
        summary: "start the index server in this process",
        details: "Binds [index] host from napster.toml on the given port (default [index] port; \
                  0 takes any free port and prints it). This shell then uses it as its index.",
    },
    Spec {
        name: "connect",
        args: "[host:port]",
        summary: "choose the index server and check that it answers",
        details: "Without an address, uses [index] server from napster.toml. \
                  IPv6 addresses go in brackets: connect [::1]:45000.",
    },
    Spec {
        name: "register",
        args: "[dir] [port]",
        summary: "share a folder: hash it, serve it, register it with the index",
        details: "Defaults: [peer] dir and [peer] port from napster.toml; port 0 takes any free \
                  port. Prints the Peer ID the index assigned. The files stay in the index while \
                  this process runs.",
    },
    Spec {
        name: "unregister",
        args: "",
        summary: "withdraw this peer's files and stop serving them",
        details: "",
    },
    Spec {
        name: "search",
        args: "<pattern>",
        summary: "find files by name (substring, or * and ? wildcards)",
        details: "Case-insensitive. Every peer sharing a match gets a row with its Peer ID, \
                  which `get` takes.",
    },
    Spec {
        name: "get",
        args: "<file> [peer]",
        summary: "download a file, verified by SHA-256",
        details: "Without a peer, any peer that shares the file. Saved in [peer] downloads; \
                  a different file already there is never overwritten (the new one becomes \
                  `name (1).ext`). Ctrl-C cancels.",
    },
    Spec {
        name: "peers",
        args: "",
        summary: "list the peers registered with the index",
        details: "",
    },
    Spec {
        name: "status",
        args: "",
        summary: "what this process serves, shares and talks to",
        details: "",
    },
    Spec {
        name: "help",
        args: "[command]",
        summary: "list the commands, or explain one",
        details: "",
    },
    Spec {
        name: "quit",
        args: "",
        summary: "withdraw shared files, stop serving and leave (also: exit)",
        details: "",
    },
];

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `serve [port]`
    Serve(Option<u16>),
    /// `connect [host:port]`
    Connect(Option<String>),
    /// `register [dir] [port]`
    Register(Option<PathBuf>, Option<u16>),
    /// `unregister`
    Unregister,
    /// `search <pattern>`
    Search(String),
    /// `get <file> [peer]`
    Get(String, Option<u64>),
    /// `peers`
    Peers,
    /// `status`
    Status,
    /// `help [command]`
    Help(Option<String>),
    /// `quit`
    Quit,
}

/// The table entry for `name`.
pub fn spec(name: &str) -> Option<&'static Spec> {
    COMMANDS.iter().find(|c| c.name == name)
}

fn usage(name: &str) -> Error {
    let spec = spec(name).expect("usage of a known command");
    Error::Usage(
        format!("usage: {} {}", spec.name, spec.args)
            .trim_end()
            .to_owned(),
    )
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
    let arity = |min: usize, max: usize| {
        if args.len() < min || args.len() > max {
            Err(usage(&name))
        } else {
            Ok(())
        }
    };
    let port = |text: &str| {
        text.parse::<u16>()
            .map_err(|_| Error::Usage(format!("{text:?} is not a port (0 to 65535)")))
    };
    let command = match name.as_str() {
        "serve" => {
            arity(0, 1)?;
            Command::Serve(args.first().map(|p| port(p)).transpose()?)
        }
        "connect" => {
            arity(0, 1)?;
            Command::Connect(args.first().cloned())
        }
        "register" => {
            arity(0, 2)?;
            Command::Register(
                args.first().map(PathBuf::from),
                args.get(1).map(|p| port(p)).transpose()?,
            )
        }
        "unregister" => {
            arity(0, 0)?;
            Command::Unregister
        }
        "search" => {
            if args.is_empty() {
                return Err(usage(&name));
            }
            Command::Search(args.join(" "))
        }
        "get" => {
            arity(1, 2)?;
            let peer = args
                .get(1)
                .map(|p| {
                    p.parse::<u64>()
                        .map_err(|_| Error::Usage(format!("{p:?} is not a Peer ID (see `search`)")))
                })
                .transpose()?;
            Command::Get(args[0].clone(), peer)
        }
        "peers" => {
            arity(0, 0)?;
            Command::Peers
        }
        "status" => {
            arity(0, 0)?;
            Command::Status
        }
        "help" | "?" => {
            arity(0, 1)?;
            Command::Help(args.first().map(|a| a.to_lowercase()))
        }
        "quit" | "exit" => {
            arity(0, 0)?;
            Command::Quit
        }
        other => {
            return Err(Error::Usage(format!(
                "unknown command {:?}; type `help` for the list",
                crate::protocol::truncate(other)
            )));
        }
    };
    Ok(Some(command))
}

/// The text of `help` or `help <command>`.
pub fn help(command: Option<&str>) -> Result<String> {
    match command {
        None => {
            let mut text = String::from("commands:\n");
            for c in COMMANDS {
                let head = format!("{} {}", c.name, c.args);
                text.push_str(&format!("  {head:<26} {}\n", c.summary));
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
