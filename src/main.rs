//! The `napster` binary: load the config, then run the shell.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use napster::config::{self, Config};

const USAGE: &str = "\
usage: napster [--config FILE]

Opens the napster shell: type `help` at the prompt, or pipe commands on stdin.
Settings come from ./napster.toml (or FILE); every key has a built-in default.

options:
  -c, --config FILE   read settings from FILE (it must exist)
  -h, --help          print this help
  -V, --version       print the version";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut config_path = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("napster {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-c" | "--config" => match args.next() {
                Some(path) => config_path = Some(PathBuf::from(path)),
                None => return usage_error("--config needs a file"),
            },
            other => match other.strip_prefix("--config=") {
                Some(path) => config_path = Some(PathBuf::from(path)),
                None => return usage_error(&format!("unknown argument {other:?}")),
            },
        }
    }
    let config = match &config_path {
        Some(path) => Config::load(path, true),
        None => Config::load(config::DEFAULT_FILE.as_ref(), false),
    };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Connections are bounded by the configured limits, not by a low default `ulimit -n`.
    napster::net::raise_fd_limit();
    ExitCode::from(napster::shell::repl::run(config) as u8)
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\n{USAGE}");
    ExitCode::from(2)
}
