//! The `napster` binary: the command line is [`napster::cli`]'s.

#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(napster::cli::main(
        std::env::args_os(),
        napster::daemon::run,
    ))
}
