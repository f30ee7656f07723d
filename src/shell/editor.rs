//! The rustyline helper: completion of commands, of `help` topics and of file names from
//! the last search, folder completion for `register`, and argument hints.

use std::borrow::Cow;
use std::sync::Arc;

use parking_lot::Mutex;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::commands::{COMMANDS, spec};

/// Completion and hints for the napster prompt.
pub struct NapsterHelper {
    files: FilenameCompleter,
    last_names: Arc<Mutex<Vec<String>>>,
}

impl NapsterHelper {
    /// A helper completing `get` with the names in `last_names`.
    pub fn new(last_names: Arc<Mutex<Vec<String>>>) -> Self {
        NapsterHelper {
            files: FilenameCompleter::new(),
            last_names,
        }
    }
}

fn pairs<'a>(candidates: impl Iterator<Item = &'a str>, prefix: &str, suffix: &str) -> Vec<Pair> {
    let mut out: Vec<Pair> = candidates
        .filter(|c| c.starts_with(prefix))
        .map(|c| Pair {
            display: c.to_owned(),
            replacement: format!("{c}{suffix}"),
        })
        .collect();
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out.dedup_by(|a, b| a.display == b.display);
    out
}

impl Completer for NapsterHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let Some((command, rest)) = before.split_once(' ') else {
            return Ok((0, pairs(COMMANDS.iter().map(|c| c.name), before, " ")));
        };
        let rest = rest.trim_start();
        let start = pos - rest.len();
        match command {
            "help" => Ok((start, pairs(COMMANDS.iter().map(|c| c.name), rest, ""))),
            "get" if !rest.contains(' ') => {
                let names = self.last_names.lock();
                let quoted: Vec<String> = names
                    .iter()
                    .map(|n| shlex::try_quote(n).map_or_else(|_| n.clone(), |q| q.into_owned()))
                    .collect();
                Ok((start, pairs(quoted.iter().map(String::as_str), rest, " ")))
            }
            "register" => self.files.complete(line, pos, ctx),
            _ => Ok((pos, Vec::new())),
        }
    }
}

impl Hinter for NapsterHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() {
            return None;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let first = *words.first()?;
        if words.len() == 1 && !line.ends_with(' ') {
            let matches: Vec<_> = COMMANDS
                .iter()
                .filter(|c| c.name.starts_with(first))
                .collect();
            if let [only] = matches.as_slice() {
                return Some(only.name[first.len()..].to_owned());
            }
            return None;
        }
        let spec = spec(first)?;
        let given = words.len() - 1;
        let args: Vec<&str> = spec.args.split_whitespace().skip(given).collect();
        if args.is_empty() || !line.ends_with(' ') {
            return None;
        }
        Some(args.join(" "))
    }
}

impl Highlighter for NapsterHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
    }
}

impl Validator for NapsterHelper {}

impl Helper for NapsterHelper {}
