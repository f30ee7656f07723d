//! The binary's command line, parsed by `clap`: options, and one subcommand per entry of
//! the shell's command table (so `napster search x` takes the same words as the shell's
//! `search x`), plus `completions`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, value_parser};

use super::commands::{self, COMMANDS};
use super::present::records::{self as output, exit};
use super::repl::{self, Options, Source};
use crate::config::Config;
use crate::home;

const ABOUT: &str = "A Napster-style peer-to-peer file-sharing system.

Without a command: the napster shell (type `help` at the prompt, or pipe commands on stdin).
With one: runs that command and exits, e.g. `napster search 6.txt`. Serving commands (serve,
register) stay in the foreground until SIGINT or SIGTERM.
Settings come from the user's napster.toml, then ./napster.toml, then --config FILE, each
overriding the ones before key by key; every key has a built-in default. Keys, pinned index
keys, the hash cache and history live in the home: --home DIR, else NAPSTER_HOME, else the
current folder if a key file is already there, else the user's data directory.

Exit status: 0 ok, 1 a command failed, 2 usage or config error, 3 a one-shot search or
files found nothing, 130 interrupted.";

const DAEMON_ABOUT: &str = "Run as a service, without a prompt, until SIGTERM or SIGINT: share \
[peer] dir with the index, run the download queue, and serve the web page and the HTTP API \
(docs/API.md) on [web] listen (127.0.0.1:8460 unless set). The page's address, with its token, \
is printed alone on a line.";

/// What `napster daemon` was given beyond `napster.toml`.
#[derive(Debug, Clone, Default)]
pub struct DaemonArgs {
    /// `--listen`: overrides `[web] listen`.
    pub listen: Option<String>,
    /// `--serve`: run an index server too.
    pub serve: bool,
}

/// What runs `napster daemon` (it sits above the shell, which cannot name it).
pub type RunDaemon = fn(Config, DaemonArgs) -> u8;

/// The whole command line: options and a subcommand per shell command.
pub fn cli() -> clap::Command {
    let cli = commands::with_commands(options());
    COMMANDS.iter().fold(cli, |cli, spec| {
        let usage = format!("napster {} {}", spec.name, spec.args);
        cli.mut_subcommand(spec.name, |c| c.override_usage(usage.trim_end().to_owned()))
    })
}

/// The binary's options, and `completions`.
fn options() -> clap::Command {
    clap::Command::new("napster")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT.lines().next().unwrap_or_default())
        .long_about(ABOUT)
        .disable_help_subcommand(true)
        .subcommand_value_name("COMMAND")
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("read settings from FILE too, over ./napster.toml (it must exist)"),
        )
        .arg(
            Arg::new("home")
                .long("home")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .global(true)
                .help(
                    "keep keys, pinned index keys, hash cache and history in DIR (made if \
                       missing); overrides NAPSTER_HOME",
                ),
        )
        .arg(
            Arg::new("index")
                .long("index")
                .value_name("ADDR")
                .action(ArgAction::Append)
                .global(true)
                .help("index server host:port (repeat for fail-over); overrides [index] server"),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .global(true)
                .help("print JSON Lines on stdout and errors as JSON on stderr (docs/JSON.md)"),
        )
        .arg(
            Arg::new("progress")
                .long("progress")
                .action(ArgAction::SetTrue)
                .global(true)
                .requires("json")
                .help("with --json: print progress records while downloading"),
        )
        .arg(
            Arg::new("execute")
                .short('e')
                .value_name("COMMANDS")
                .action(ArgAction::Append)
                .help("run these commands, separated by `;`, and exit"),
        )
        .arg(
            Arg::new("stop-on-error")
                .long("stop-on-error")
                .action(ArgAction::SetTrue)
                .help("in a script (-e or piped stdin), stop at the first failing command"),
        )
        .subcommand(daemon_command())
        .subcommand(
            clap::Command::new("completions")
                .about("print shell completions for bash, zsh or fish")
                .arg(
                    Arg::new("shell")
                        .required(true)
                        .value_parser(value_parser!(clap_complete::Shell)),
                ),
        )
}

/// `napster daemon`'s own options.
fn daemon_command() -> clap::Command {
    clap::Command::new("daemon")
        .about("run as a service: share, download and serve the web page and HTTP API")
        .long_about(DAEMON_ABOUT)
        .arg(
            Arg::new("listen")
                .long("listen")
                .value_name("ADDR")
                .help("serve the page and API on ADDR (host:port, port 0: any free port); overrides [web] listen"),
        )
        .arg(
            Arg::new("serve")
                .long("serve")
                .action(ArgAction::SetTrue)
                .help("run an index server too, on [index] host and port"),
        )
}

/// `-e` texts split into lines at `;` outside quotes.
fn split_commands(texts: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    for text in texts {
        let mut current = String::new();
        let mut quote = None;
        let mut escaped = false;
        for c in text.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' if quote != Some('\'') => escaped = true,
                '\'' | '"' if quote.is_none() => quote = Some(c),
                c if quote == Some(c) => quote = None,
                ';' | '\n' if quote.is_none() => {
                    lines.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        lines.push(current);
    }
    lines
}

/// Run the binary with `args` (its own name first), `napster daemon` with `daemon`;
/// returns the exit status.
pub fn main(args: impl IntoIterator<Item = OsString>, daemon: RunDaemon) -> u8 {
    let args: Vec<OsString> = args.into_iter().collect();
    let matches = match cli().try_get_matches_from(&args) {
        Ok(matches) => matches,
        Err(e) if e.use_stderr() && asks_for_json(&args) => {
            return usage_error(true, "usage", &clap_message(&e));
        }
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
        }
    };
    let json = matches.get_flag("json");
    if let Some(("completions", sub)) = matches.subcommand() {
        let Some(&shell) = sub.get_one::<clap_complete::Shell>("shell") else {
            return exit::USAGE;
        };
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cli(), "napster", &mut script);
        say!("{}", String::from_utf8_lossy(&script));
        return exit::OK;
    }
    let config = match load_config(&matches) {
        Ok(config) => config,
        Err(e @ crate::Error::Config(_)) => return usage_error(json, "config", &e.to_string()),
        Err(e) => return usage_error(json, "usage", &e.to_string()),
    };
    if let Some(("daemon", sub)) = matches.subcommand() {
        let args = DaemonArgs {
            listen: sub.get_one::<String>("listen").cloned(),
            serve: sub.get_flag("serve"),
        };
        return daemon(config, args);
    }
    let execute = matches.get_many::<String>("execute");
    let source = match matches.subcommand() {
        Some(_) if execute.is_some() => {
            return usage_error(
                json,
                "usage",
                "give either -e COMMANDS or one command, not both",
            );
        }
        Some(_) => match commands::from_matches(&matches) {
            Ok(command) => Source::OneShot(command),
            Err(e) => return usage_error(json, &output::error_code(&e), &e.to_string()),
        },
        None => match execute {
            Some(texts) => Source::Lines(split_commands(&texts.cloned().collect::<Vec<_>>())),
            None => Source::Stdin,
        },
    };
    let options = Options {
        source,
        json,
        progress: matches.get_flag("progress"),
        stop_on_error: matches.get_flag("stop-on-error"),
    };
    repl::run_with(config, options) as u8
}

fn load_config(matches: &ArgMatches) -> crate::Result<Config> {
    let asked = home::Asked::with_env(
        matches.get_one::<PathBuf>("home").cloned(),
        matches.get_one::<PathBuf>("config").cloned(),
    );
    let mut config = home::load(&asked, &home::Places::of_this_user()?)?;
    if let Some(addrs) = matches.get_many::<String>("index") {
        let addrs: Vec<&str> = addrs.map(String::as_str).collect();
        let joined = addrs.join(",");
        super::parse_addrs(&joined, config.index.port)?;
        config.index.server = joined;
    }
    Ok(config)
}

/// Whether `--json` stands among `args` before a `--`: clap could not parse them, so a
/// program that asked for JSON still gets its error as a record, not clap's text.
fn asks_for_json(args: &[OsString]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .any(|arg| arg == "--json")
}

/// Clap's error as one plain message: its text without the `error: ` it starts with,
/// the usage line kept (it says what to type), blank lines dropped.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines.join(" ");
    joined.strip_prefix("error: ").unwrap_or(&joined).to_owned()
}

fn usage_error(json: bool, code: &str, message: &str) -> u8 {
    if json {
        eprintln!("{}", output::json_error(code, message, None));
    } else {
        eprintln!("error: {message}");
    }
    exit::USAGE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        cli().debug_assert();
    }

    #[test]
    fn semicolons_split_commands_outside_quotes() {
        let lines = split_commands(&["search 'a;b'; get \"x;y\" 3;quit".into()]);
        assert_eq!(lines, ["search 'a;b'", " get \"x;y\" 3", "quit"]);
    }
}
