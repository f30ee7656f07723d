//! The shell's rough edges, read through what a person sees (issue 13): what a new user
//! types, and what napster answers (each outcome as the presenter words it).

use super::commands::outcome::Outcome;
use super::commands::{self, Command};
use super::present::{records, text};
use super::{Shell, test_shell};
use crate::download::Cancel;
use crate::error::Result;

fn outcome(shell: &mut Shell, line: &str) -> Result<Outcome> {
    let command = commands::parse(line)?.expect("a command");
    smol::block_on(shell.execute(command, Cancel::default()))
}

fn run(shell: &mut Shell, line: &str) -> Result<String> {
    let outcome = outcome(shell, line)?;
    assert!(!matches!(outcome, Outcome::Quit));
    Ok(text::text(&outcome, None))
}

/// `help` as it prints at `width` columns.
fn help_at(topic: Option<&str>, width: Option<usize>) -> Result<String> {
    Ok(text::help(&super::help(topic)?, width))
}

fn error(line: &str) -> String {
    commands::parse(line).unwrap_err().to_string()
}

#[test]
fn a_rate_without_a_direction_sets_both_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, _services) = test_shell(tmp.path());
    assert_eq!(
        run(&mut shell, "limit 1MiB/s").unwrap(),
        "upload limit: 1.0 MiB/s; download limit: 1.0 MiB/s\n"
    );
    assert_eq!(
        run(&mut shell, "limit 0").unwrap(),
        "upload limit: unlimited; download limit: unlimited\n"
    );
    let fast = error("limit fast");
    assert!(fast.contains("\"fast\" is not a rate"), "{fast}");
    let sideways = error("limit sideways 2MiB/s");
    assert!(sideways.contains("neither up nor down"), "{sideways}");
}

#[test]
fn a_size_filter_may_have_a_space_after_its_sign() {
    let Some(Command::Search(args)) = commands::parse("search .txt > 1GB").unwrap() else {
        panic!("a search");
    };
    assert_eq!(args.search.pattern, ".txt");
    assert_eq!(args.search.min_size, Some(1_000_000_001));
    let Some(Command::Search(args)) = commands::parse("search a <= 2MiB").unwrap() else {
        panic!("a search");
    };
    assert_eq!(args.search.max_size, Some(2 << 20));
    let alone = error("search .txt >");
    assert!(alone.contains("needs a size after it"), "{alone}");
}

#[test]
fn a_typo_gets_a_suggestion() {
    let typo = error("serach song");
    assert!(typo.contains("did you mean `search`?"), "{typo}");
    assert!(
        !typo.contains("?;"),
        "one mark of punctuation at a time: {typo}"
    );
    let far = error("xyzzy");
    assert!(!far.contains("did you mean"), "{far}");
    let topic = super::help(Some("trasnfers")).unwrap_err().to_string();
    assert!(topic.contains("did you mean `transfers`?"), "{topic}");
}

#[test]
fn a_missing_argument_and_a_split_name_say_what_to_type() {
    let cancel = error("cancel");
    assert!(
        cancel.contains("`cancel` needs more: cancel <N>") && !cancel.contains("following"),
        "{cancel}"
    );
    let link = error("link my song.txt");
    assert!(
        link.contains("a name with spaces goes in quotes: link 'my song.txt'"),
        "{link}"
    );
}

#[test]
fn messages_say_what_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, services) = test_shell(tmp.path());
    let shared = tmp.path().join("shared");

    // `serve` after a `connect` says that this shell now uses the new index.
    let other = tempfile::tempdir().unwrap();
    let (mut elsewhere, other_services) = test_shell(other.path());
    let old = run(&mut elsewhere, "serve 0").unwrap();
    let old = old.trim().rsplit(' ').next().unwrap().to_owned();
    run(&mut shell, &format!("connect {old}")).unwrap();
    let served = run(&mut shell, "serve 0").unwrap();
    assert!(
        served.contains(&format!(
            "this shell now uses it as its index, instead of {old} (`connect {old}` goes back)"
        )),
        "{served}"
    );
    run(&mut shell, &format!("register {} 0", shared.display())).unwrap();

    // Nothing matched: the filters are part of what did not match.
    assert_eq!(
        run(&mut shell, "search song >1GB").unwrap(),
        "no file matches \"song\" with >1GB\n"
    );

    // The only peer sharing it is this one: the download says so.
    let saved = run(&mut shell, "get song.ogg").unwrap();
    assert!(saved.contains("which is this napster"), "{saved}");
    smol::block_on(services.shutdown());
    smol::block_on(other_services.shutdown());
}

/// A second `get -b` of a file this napster is downloading says so, instead of blaming
/// "another napster".
#[test]
fn a_second_background_get_of_the_same_file_names_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, services) = test_shell(tmp.path());
    let shared = tmp.path().join("shared");
    std::fs::write(shared.join("big.bin"), vec![7u8; 4 << 20]).unwrap();
    run(&mut shell, "serve 0").unwrap();
    run(&mut shell, &format!("register {} 0", shared.display())).unwrap();
    run(&mut shell, "limit down 64KiB/s").unwrap();
    let first = run(&mut shell, "get -b big.bin").unwrap();
    assert!(first.starts_with("download 1 of big.bin"), "{first}");
    let second = run(&mut shell, "get -b big.bin").unwrap_err().to_string();
    assert!(
        second.contains("big.bin is already in the queue as download 1"),
        "{second}"
    );
    let foreground = run(&mut shell, "get big.bin").unwrap_err().to_string();
    assert!(
        foreground.contains("download 1") && !foreground.contains("another napster"),
        "{foreground}"
    );
    smol::block_on(services.shutdown());
}

#[test]
fn an_unquoted_name_with_spaces_is_told_to_quote_it() {
    let share = error("share my music");
    assert!(share.contains("share 'my music'"), "{share}");
    // A plain mistake is not about quoting.
    let peer = error("get -x song.ogg");
    assert!(!peer.contains("quotes"), "{peer}");
    // `get` takes several names: when none of the words is shared, they may be one name.
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, services) = test_shell(tmp.path());
    std::fs::write(tmp.path().join("shared/my tune.ogg"), b"mine").unwrap();
    run(&mut shell, "serve 0").unwrap();
    let shared = tmp.path().join("shared");
    run(&mut shell, &format!("register {} 0", shared.display())).unwrap();
    let get = run(&mut shell, "get my tune.ogg").unwrap_err().to_string();
    assert!(
        get.contains("a name with spaces goes in quotes: get 'my tune.ogg'"),
        "{get}"
    );
    run(&mut shell, "get 'my tune.ogg'").unwrap();
    smol::block_on(services.shutdown());
}

#[test]
fn a_tilde_is_the_home_folder() {
    let home = std::env::var("HOME").expect("HOME is set");
    let Some(Command::Share(share)) = commands::parse("share ~/music").unwrap() else {
        panic!("a share");
    };
    assert_eq!(share.dir, std::path::Path::new(&home).join("music"));
    let Some(Command::Register(register)) = commands::parse("register ~").unwrap() else {
        panic!("a register");
    };
    assert_eq!(register.dir.as_deref(), Some(std::path::Path::new(&home)));
    assert_eq!(register.port, None);
    let Some(Command::Unshare(unshare)) = commands::parse("unshare ~/music/a.ogg").unwrap() else {
        panic!("an unshare");
    };
    assert_eq!(unshare.what, format!("{home}/music/a.ogg"));
    // Only a leading ~ is the home folder.
    let Some(Command::Share(share)) = commands::parse("share a~b").unwrap() else {
        panic!("a share");
    };
    assert_eq!(share.dir, std::path::Path::new("a~b"));
}

/// `get deep.txt` finds `sub2/deep.txt` when that is the only such name, and says which
/// names to choose from when there are several.
#[test]
fn a_bare_name_finds_the_one_file_of_that_name_in_a_subfolder() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, services) = test_shell(tmp.path());
    let shared = tmp.path().join("shared");
    std::fs::create_dir_all(shared.join("sub2")).unwrap();
    std::fs::write(shared.join("sub2/deep.txt"), b"deep").unwrap();
    std::fs::create_dir_all(shared.join("a/b")).unwrap();
    std::fs::create_dir_all(shared.join("c")).unwrap();
    std::fs::write(shared.join("a/b/twice.txt"), b"one").unwrap();
    std::fs::write(shared.join("c/twice.txt"), b"two").unwrap();
    run(&mut shell, "serve 0").unwrap();
    run(&mut shell, &format!("register {} 0", shared.display())).unwrap();
    let saved = run(&mut shell, "get deep.txt").unwrap();
    assert!(saved.starts_with("saved "), "{saved}");
    assert_eq!(
        std::fs::read(tmp.path().join("downloads/deep.txt")).unwrap(),
        b"deep"
    );
    let twice = run(&mut shell, "get twice.txt").unwrap_err().to_string();
    assert!(
        twice.contains("a/b/twice.txt, c/twice.txt; get one of those by its whole name"),
        "{twice}"
    );
    smol::block_on(services.shutdown());
}

/// `share ./song.ogg` shares that one file, not its folder.
#[test]
fn a_single_file_can_be_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, services) = test_shell(tmp.path());
    shell.config.peer.settle = 0.0;
    let shared = tmp.path().join("shared");
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("single.ogg"), b"just this").unwrap();
    std::fs::write(other.join("beside.ogg"), b"not this").unwrap();
    run(&mut shell, "serve 0").unwrap();
    run(&mut shell, &format!("register {} 0", shared.display())).unwrap();
    let single = other.join("single.ogg");
    let added = run(&mut shell, &format!("share {}", single.display())).unwrap();
    assert!(added.contains("1 file new or changed"), "{added}");
    let found = run(&mut shell, "search .ogg").unwrap();
    assert!(
        found.contains("single.ogg") && !found.contains("beside.ogg"),
        "{found}"
    );
    let saved = run(&mut shell, "get single.ogg").unwrap();
    assert!(saved.starts_with("saved "), "{saved}");
    assert_eq!(
        std::fs::read(tmp.path().join("downloads/single.ogg")).unwrap(),
        b"just this"
    );
    let withdrawn = run(&mut shell, &format!("unshare {}", single.display())).unwrap();
    assert!(withdrawn.contains("1 file withdrawn"), "{withdrawn}");
    smol::block_on(services.shutdown());
}

/// `register` on a taken port says so before hashing anything, with the way out.
#[test]
fn register_checks_its_port_before_hashing() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, services) = test_shell(tmp.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    run(&mut shell, "serve 0").unwrap();
    let shared = tmp.path().join("shared");
    let refused = run(&mut shell, &format!("register {} {port}", shared.display()))
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains(&format!("cannot serve files on port {port}"))
            && refused.contains("try `register <dir> 0`"),
        "{refused}"
    );
    smol::block_on(services.shutdown());
}

/// Ctrl-C while `register` hashes stops it (the flag is set before it starts here).
#[test]
fn ctrl_c_stops_register_while_it_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, services) = test_shell(tmp.path());
    run(&mut shell, "serve 0").unwrap();
    let shared = tmp.path().join("shared");
    let cancel = Cancel::default();
    cancel.cancel();
    let line = format!("register {} 0", shared.display());
    let command = commands::parse(&line).unwrap().unwrap();
    let stopped = smol::block_on(shell.execute(command, cancel));
    assert!(
        matches!(stopped, Err(crate::error::Error::Cancelled)),
        "{stopped:?}"
    );
    // Nothing is shared, and a later register works.
    run(&mut shell, &line).unwrap();
    smol::block_on(services.shutdown());
}

#[test]
fn help_wraps_to_the_terminal() {
    for width in [60, 80] {
        for topic in [None, Some("get"), Some("search")] {
            let text = help_at(topic, Some(width)).unwrap();
            // A usage line is never broken; every other line fits.
            let heads: Vec<String> = commands::COMMANDS
                .iter()
                .map(|c| format!("{} {}", c.name, c.args).trim().to_owned())
                .collect();
            let is_head = |l: &str| heads.iter().any(|h| l.trim() == h);
            for line in text
                .lines()
                .filter(|l| !l.starts_with("usage:") && !is_head(l))
            {
                assert!(line.chars().count() <= width, "{width}: {line}");
            }
        }
    }
    // Piped, each summary and paragraph stays on one line.
    let piped = help_at(Some("get"), None).unwrap();
    assert_eq!(piped.lines().count(), 3, "{piped}");
}

/// Past the index's cap, `files` and `search` page (`more`, --offset, and -n above the
/// cap asks page after page) with the true totals, and never advise asking for more with
/// -n than the index gives.
#[test]
fn capped_answers_page_with_true_totals() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut shell, services) = test_shell(tmp.path());
    shell.config.index.max_results = 3;
    let shared = tmp.path().join("shared");
    for i in 0..5 {
        std::fs::write(shared.join(format!("track{i}.txt")), format!("track {i}")).unwrap();
    }
    run(&mut shell, "serve 0").unwrap();
    let registered = run(&mut shell, &format!("register {} 0", shared.display())).unwrap();
    let id: u64 = registered
        .split_whitespace()
        .nth(3)
        .and_then(|w| w.parse().ok())
        .expect("a Peer ID");
    // Ask as a shell whose own napster.toml allows more than the index does.
    shell.config.index.max_results = 1000;
    let files = run(&mut shell, &format!("files {id}")).unwrap();
    assert!(
        files.contains(&format!("peer {id} shares 6 files"))
            && files.contains("rows 1–3 of 6; `more` shows the next"),
        "{files}"
    );
    let more = run(&mut shell, "more").unwrap();
    assert!(
        more.contains("rows 4–6 of 6") && !more.contains("`more`"),
        "{more}"
    );
    let err = run(&mut shell, "more").unwrap_err().to_string();
    assert!(err.contains("nothing more to show"), "{err}");
    let last = run(&mut shell, &format!("files --offset 5 {id}")).unwrap();
    assert!(last.contains("rows 6–6 of 6"), "{last}");
    // --json carries the same: the rows, then where they sit in the total.
    let listed = outcome(&mut shell, &format!("files --offset 4 {id}")).unwrap();
    let listed = records::records(&listed);
    assert!(
        matches!(
            listed.last(),
            Some(records::Record::Total {
                first: 5,
                shown: 2,
                total: 6,
                more_than: false
            })
        ),
        "{listed:?}"
    );
    let five = run(&mut shell, &format!("files -n 5 {id}")).unwrap();
    assert!(five.contains("rows 1–5 of 6; `more`"), "{five}");
    // -n above the index's cap: page after page, all of them, no advice.
    let found = run(&mut shell, "search -n 50 track").unwrap();
    assert!(
        found.contains("5 files on 1 peer") && !found.contains("-n") && !found.contains("more"),
        "{found}"
    );
    let fewer = run(&mut shell, "search -n 2 track").unwrap();
    assert!(
        fewer.contains("rows 1–2 of 5; `more` shows the next"),
        "{fewer}"
    );
    let next = run(&mut shell, "more").unwrap();
    assert!(next.contains("rows 3–4 of 5; `more`"), "{next}");
    let next = run(&mut shell, "more").unwrap();
    assert!(
        next.contains("rows 5–5 of 5") && !next.contains("`more`"),
        "{next}"
    );
    smol::block_on(services.shutdown());
}

/// The table and the enum agree: every entry is a variant's subcommand and every
/// variant has an entry (its usage and help), so help, completion and parsing cannot
/// drift apart.
#[test]
fn every_command_is_one_table_entry_and_one_variant() {
    let parser = commands::with_commands(clap::Command::new("napster"));
    let derived: Vec<&str> = parser.get_subcommands().map(|c| c.get_name()).collect();
    let listed: Vec<&str> = commands::COMMANDS.iter().map(|c| c.name).collect();
    let (mut derived_sorted, mut listed_sorted) = (derived.clone(), listed.clone());
    derived_sorted.sort_unstable();
    listed_sorted.sort_unstable();
    assert_eq!(derived_sorted, listed_sorted);
    for spec in commands::COMMANDS {
        let sub = parser.find_subcommand(spec.name).unwrap();
        assert_eq!(
            sub.get_about().map(ToString::to_string).as_deref(),
            Some(spec.summary)
        );
    }
    // A required argument is a field: leaving it out is a usage error, not a panic.
    for line in [
        "cancel", "pause", "resume", "ping", "files", "share", "unshare", "link",
    ] {
        assert!(
            matches!(commands::parse(line), Err(crate::error::Error::Usage(_))),
            "{line}"
        );
    }
}

#[test]
fn a_signal_during_a_one_shot_get_says_the_part_file_is_kept() {
    let line = super::present::text::shutting_down(false, false, true);
    assert!(!line.contains("withdrawing"), "{line}");
    assert!(line.contains("keeps its part file"), "{line}");
}

#[test]
fn a_get_of_many_files_queued_says_so_in_one_line_and_closes_with_a_summary() {
    use super::commands::outcome::{Fetched, Got};
    let files = (4..=16)
        .map(|n| Fetched::Queued {
            transfer: n,
            name: format!("live/{n}.ogg"),
        })
        .collect();
    let got = Outcome::Got(Got {
        files,
        problems: vec!["x.ogg: no peer shares it".into()],
    });
    let shown = text::text(&got, None);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines,
        [
            "13 downloads are in the queue (numbers 4–16); `transfers` shows them",
            "1 file not fetched:",
            "  x.ogg: no peer shares it",
            "get: 13 queued, 1 not fetched",
        ],
        "{shown}"
    );
}
