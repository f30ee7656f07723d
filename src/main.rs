//! The `napster` binary: the command line is [`napster::shell::cli`]'s.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(napster::shell::cli::main(
        std::env::args_os(),
        napster::daemon::run,
    ))
}
