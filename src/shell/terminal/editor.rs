//! The rustyline helper: completion of commands, of `help` topics, of file names and Peer
//! IDs from the last `search`, `files` or `peers`, of folders and files where a path goes;
//! and hints of the arguments still to type.

use std::borrow::Cow;
use std::sync::Arc;

use parking_lot::Mutex;
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use crate::shell::commands::{COMMANDS, spec};

/// What the last results showed, for completion.
#[derive(Debug, Default)]
pub struct Seen {
    /// File names, as shared.
    pub names: Vec<String>,
    /// Peer IDs.
    pub peers: Vec<u64>,
}

/// Completion and hints for the napster prompt.
pub struct NapsterHelper {
    files: FilenameCompleter,
    seen: Arc<Mutex<Seen>>,
}

impl NapsterHelper {
    /// A helper completing names and Peer IDs with what `seen` holds.
    pub fn new(seen: Arc<Mutex<Seen>>) -> Self {
        NapsterHelper {
            files: FilenameCompleter::new(),
            seen,
        }
    }
}

/// The words of a line up to the cursor, as the parser will read them (quotes and
/// backslashes removed), and where the last one starts; the last word is the one being
/// typed (empty after a space).
pub(super) fn words(before: &str) -> (Vec<String>, usize) {
    let mut words = Vec::new();
    let (mut word, mut start, mut quote, mut escaped) = (String::new(), 0, None, false);
    let mut in_word = false;
    for (i, c) in before.char_indices() {
        if !in_word && !c.is_whitespace() {
            (in_word, start) = (true, i);
        }
        match (c, quote) {
            _ if escaped => {
                word.push(c);
                escaped = false;
            }
            ('\\', q) if q != Some('\'') => escaped = true,
            (c, None) if c == '\'' || c == '"' => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (c, _) => word.push(c),
        }
    }
    if !in_word {
        start = before.len();
    }
    words.push(word);
    (words, start)
}

/// Candidates starting with `prefix`, each replacing the word being typed, quoted when it
/// needs quotes (`'my song.ogg'`); `suffix` follows a complete word.
fn pairs<S: AsRef<str>>(candidates: &[S], prefix: &str, suffix: &str) -> Vec<Pair> {
    let mut out: Vec<Pair> = candidates
        .iter()
        .map(AsRef::as_ref)
        .filter(|c| c.starts_with(prefix))
        .map(|c| Pair {
            display: c.to_owned(),
            replacement: format!("{}{suffix}", quoted(c)),
        })
        .collect();
    out.sort_by(|a, b| a.display.cmp(&b.display));
    out.dedup_by(|a, b| a.display == b.display);
    out
}

/// A word as it must be typed for the parser to read it back.
fn quoted(word: &str) -> String {
    shlex::try_quote(word).map_or_else(|_| word.to_owned(), Cow::into_owned)
}

/// What the `n`th positional argument of `command` is, for completion.
enum Slot {
    Command,
    FileName,
    Peer,
    FileOrPeer,
    Path,
    Nothing,
}

fn slot(command: &str, n: usize) -> Slot {
    match (command, n) {
        ("help" | "?", 0) => Slot::Command,
        ("get", 0) => Slot::FileName,
        // After a first name: more names, or the peer.
        ("get", _) => Slot::FileOrPeer,
        ("files" | "browse" | "ping" | "link", 0) => Slot::Peer,
        ("register" | "share", 0) | ("unshare", 0) => Slot::Path,
        _ => Slot::Nothing,
    }
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
        let (words, start) = words(before);
        let Some((typing, done)) = words.split_last() else {
            return Ok((pos, Vec::new()));
        };
        let Some((command, args)) = done.split_first() else {
            let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
            return Ok((start, pairs(&names, typing, " ")));
        };
        let positional = args.iter().filter(|a| !a.starts_with('-')).count();
        if typing.starts_with('-') {
            return Ok((pos, Vec::new()));
        }
        let candidates = match slot(&command.to_lowercase(), positional) {
            Slot::Command => {
                let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
                pairs(&names, typing, "")
            }
            Slot::FileName => pairs(&self.seen.lock().names, typing, " "),
            Slot::Peer => {
                let ids: Vec<String> = self.seen.lock().peers.iter().map(u64::to_string).collect();
                pairs(&ids, typing, " ")
            }
            Slot::FileOrPeer => {
                let seen = self.seen.lock();
                let mut both = seen.names.clone();
                both.extend(seen.peers.iter().map(u64::to_string));
                pairs(&both, typing, " ")
            }
            Slot::Path => return self.files.complete(line, pos, ctx),
            Slot::Nothing => Vec::new(),
        };
        Ok((start, candidates))
    }
}

/// The units of a usage line: `[-n N]`, `<pattern>`, `[peer]`, `[host:port ...]`.
fn units(args: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut open: Vec<char> = Vec::new();
    let mut begin = None;
    for (i, c) in args.char_indices() {
        match c {
            '[' | '<' if open.last() != Some(&'[') || c == '[' => {
                if open.is_empty() && begin.is_none() {
                    begin = Some(i);
                }
                open.push(c);
            }
            ']' | '>' if open.last() == Some(&if c == ']' { '[' } else { '<' }) => {
                open.pop();
                if open.is_empty()
                    && let Some(b) = begin.take()
                {
                    out.push(&args[b..=i]);
                }
            }
            // `<file>...`: the dots belong to the argument before them.
            '.' if open.is_empty() && begin.is_none() && args[..i].ends_with(['>', ']']) => {
                if let Some(last) = out.pop() {
                    let from = last.as_ptr() as usize - args.as_ptr() as usize;
                    begin = Some(from);
                }
            }
            c if c.is_whitespace() && open.is_empty() => {
                if let Some(b) = begin.take() {
                    out.push(&args[b..i]);
                }
            }
            _ if open.is_empty() && begin.is_none() => begin = Some(i),
            _ => {}
        }
    }
    if let Some(b) = begin {
        out.push(&args[b..]);
    }
    out
}

/// The arguments still to type after `typed` (the words after the command, all
/// complete): options already given, or given up once a positional argument is typed,
/// are left out, and so are the positional arguments already there.
pub(super) fn hint_for(args: &str, typed: &[String]) -> Option<String> {
    let units = units(args);
    let options: Vec<&str> = units
        .iter()
        .copied()
        .filter(|u| u.starts_with("[-"))
        .collect();
    // Options that take a value (`[-n N]`) swallow the next word.
    let mut positional = 0;
    let mut used = Vec::new();
    let mut words = typed.iter();
    while let Some(word) = words.next() {
        if let Some(option) = options.iter().find(|o| o[1..].starts_with(word.as_str())) {
            used.push(*option);
            if option.contains(' ') {
                words.next();
            }
        } else if !word.starts_with('-') {
            positional += 1;
        }
    }
    let rest: Vec<&str> = units
        .iter()
        .copied()
        .filter(|u| !u.starts_with("[-"))
        .skip(positional)
        .collect();
    let shown_options: Vec<&str> = if positional == 0 {
        options.into_iter().filter(|o| !used.contains(o)).collect()
    } else {
        Vec::new()
    };
    let all: Vec<&str> = shown_options.into_iter().chain(rest).collect();
    (!all.is_empty()).then(|| all.join(" "))
}

impl Hinter for NapsterHelper {
    type Hint = String;

    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<String> {
        if pos < line.len() {
            return None;
        }
        let (words, _) = words(line);
        let (typing, done) = words.split_last()?;
        let Some((first, typed)) = done.split_first() else {
            let matches: Vec<_> = COMMANDS
                .iter()
                .filter(|c| !typing.is_empty() && c.name.starts_with(typing.as_str()))
                .collect();
            if let [only] = matches.as_slice() {
                return Some(only.name[typing.len()..].to_owned());
            }
            return None;
        };
        if !typing.is_empty() {
            return None;
        }
        hint_for(spec(&first.to_lowercase())?.args, typed)
    }
}

impl Highlighter for NapsterHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[2m{hint}\x1b[0m"))
    }
}

impl Validator for NapsterHelper {}

impl Helper for NapsterHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn words_are_read_as_the_parser_reads_them() {
        assert_eq!(words("get 'my so"), (owned(&["get", "my so"]), 4));
        assert_eq!(words("get my\\ so"), (owned(&["get", "my so"]), 4));
        assert_eq!(words("get a.txt "), (owned(&["get", "a.txt", ""]), 10));
        assert_eq!(words("ge"), (owned(&["ge"]), 0));
    }

    /// `get my<Tab>` completes a name with spaces, quoting it, with or without a quote
    /// typed first.
    #[test]
    fn names_with_spaces_complete_quoted() {
        let seen = Seen {
            names: owned(&["my song.ogg", "my.txt", "other.txt"]),
            peers: vec![443240900, 204765588],
        };
        let names = &seen.names;
        for typing in ["my", "'my", "\"my"] {
            let (words, _) = words(&format!("get {typing}"));
            let found = pairs(names, words.last().unwrap(), " ");
            let replacements: Vec<&str> = found.iter().map(|p| p.replacement.as_str()).collect();
            assert_eq!(replacements, ["'my song.ogg' ", "my.txt "], "{typing}");
        }
        assert!(matches!(slot("get", 1), Slot::FileOrPeer));
        assert!(matches!(slot("files", 0), Slot::Peer));
        assert!(matches!(slot("ping", 0), Slot::Peer));
        assert!(matches!(slot("share", 0), Slot::Path));
        assert!(matches!(slot("unshare", 0), Slot::Path));
    }

    /// Hints show what is still to type, not the whole usage again.
    #[test]
    fn hints_follow_the_arguments_typed() {
        let get = spec("get").unwrap().args;
        assert_eq!(
            hint_for(get, &[]).as_deref(),
            Some("[-b] [-r] <file>... [peer]")
        );
        assert_eq!(
            hint_for(get, &owned(&["-b"])).as_deref(),
            Some("[-r] <file>... [peer]")
        );
        assert_eq!(hint_for(get, &owned(&["6.txt"])).as_deref(), Some("[peer]"));
        assert_eq!(
            hint_for(get, &owned(&["-b", "6.txt"])).as_deref(),
            Some("[peer]")
        );
        assert_eq!(hint_for(get, &owned(&["6.txt", "3"])), None);
        let search = spec("search").unwrap().args;
        assert_eq!(
            hint_for(search, &owned(&["-n", "5"])).as_deref(),
            Some("[-r] [-c] [--offset N] <pattern> [sha256:HEX] [>SIZE] [<SIZE]")
        );
        assert_eq!(
            hint_for(search, &owned(&["song"])).as_deref(),
            Some("[sha256:HEX] [>SIZE] [<SIZE]")
        );
        let register = spec("register").unwrap().args;
        assert_eq!(
            hint_for(register, &owned(&["music"])).as_deref(),
            Some("[port]")
        );
    }
}
