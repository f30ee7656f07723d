//! The one presenter: a command's [`Outcome`] becomes text for people ([`text`], with
//! the tables of [`table`]) or JSON records for programs ([`records`], docs/JSON.md).
//! Handlers never format; this is where a command's output is decided. Long work shows
//! its progress here too ([`progress`]: bars on a terminal, progress records with
//! `--json --progress`).

pub mod progress;
pub mod records;
pub mod table;
pub mod text;

use crate::shell::commands::Format;
use crate::shell::commands::outcome::Outcome;

/// `outcome` as it prints in `format` on this terminal (or pipe).
pub fn render(outcome: &Outcome, format: Format) -> String {
    match format {
        Format::Table => text::text(outcome, table::terminal_width()),
        Format::Json => records::records(outcome)
            .iter()
            .map(records::json_line)
            .collect(),
    }
}
