//! Every search form through the real shell: substring, wildcards, `sha256:`, sizes,
//! limits, collapsing, browsing, and the refusals that keep one search from flooding the
//! index.

mod common;

use std::path::Path;
use std::process::Output;

use common::process::{Napster, Running, last_word};

/// The shell logs errors only; its lines are awaited without a limit.
const NAPSTER: Napster = Napster {
    log: "error",
    patience: None,
};

/// Rows of the result table(s) in `stdout` (lines that start with the table border).
fn rows(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with('│')).collect()
}

/// A folder of files with chosen sizes, shared twice (two peers) in one process each.
fn library(dir: &Path) {
    let files: &[(&str, usize)] = &[
        ("Blue Moon.mp3", 3_000_000),
        ("blue river.ogg", 12_000_000),
        ("red moon.mp3", 500_000),
        ("Notes.txt", 1_000),
        ("sub/blue moon (live).mp3", 7_000_000),
    ];
    for (name, size) in files {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes: Vec<u8> = (0..*size)
            .map(|i| (i % 251) as u8 ^ name.len() as u8)
            .collect();
        std::fs::write(path, bytes).unwrap();
    }
}

fn script(tmp: &Path, searches: &str) -> Output {
    let share = tmp.join("share");
    library(&share);
    NAPSTER.run(
        tmp,
        &format!("serve 0\nregister {} 0\n{searches}quit\n", share.display()),
    )
}

#[test]
fn substring_wildcards_and_subfolders() {
    let tmp = tempfile::tempdir().unwrap();
    let out = script(tmp.path(), "search blue\nsearch *MOON*.mp3\nsearch ?ed*\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sections: Vec<&str> = stdout.split(" on 1 peer").collect();
    let names = |section: &str| rows(section).iter().skip(1).count();
    assert_eq!(names(sections[0]), 3, "blue: {stdout}");
    assert!(sections[0].contains("sub/blue moon (live).mp3"), "{stdout}");
    assert_eq!(names(sections[1]), 3, "*moon*.mp3: {stdout}");
    assert_eq!(names(sections[2]), 1, "?ed*: {stdout}");
}

#[test]
fn hash_prefix_and_size_filters() {
    let tmp = tempfile::tempdir().unwrap();
    // Find the SHA-256 of one file first.
    let out = script(tmp.path(), "search notes\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let row = rows(&stdout)
        .into_iter()
        .find(|r| r.contains("Notes.txt"))
        .unwrap()
        .to_owned();
    let sha: String = row
        .split('┆')
        .nth(5)
        .unwrap()
        .trim()
        .chars()
        .take(8)
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let out = script(
        tmp.path(),
        &format!(
            "search sha256:{sha}\nsearch moon >1MB\nsearch moon <=3MB >=3MB\nsearch blue <1KiB\n"
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sections: Vec<&str> = stdout.split(" peer\n").collect();
    assert!(
        sections[0].contains("Notes.txt") && rows(sections[0]).len() == 2,
        "{stdout}"
    );
    // >1MB: Blue Moon (3 MB) and the live one (7 MB), not red moon (0.5 MB).
    assert_eq!(rows(sections[1]).len(), 3, "{stdout}");
    assert!(!sections[1].contains("red moon"), "{stdout}");
    assert_eq!(rows(sections[2]).len(), 2, "exactly 3 MB: {stdout}");
    assert!(stdout.contains("no file matches \"blue\""), "{stdout}");
}

#[test]
fn limits_collapsing_and_browsing() {
    let tmp = tempfile::tempdir().unwrap();
    let share = tmp.path().join("share");
    library(&share);
    // The Peer ID this napster will have: derived from the key in its home.
    let key = napster::identity::Identity::load_or_create(&tmp.path().join(".napster-key"), "key")
        .unwrap();
    let id = napster::index::store::peer_id_of(&key.fingerprint());
    let out = NAPSTER.run(
        tmp.path(),
        &format!(
            "serve 0\nregister {} 0\nsearch -n 2 o\nsearch -n 2 moon\nsearch -c moon\nfiles {id}\nfiles --offset 3 {id}\n\
             search m\nsearch **\nsearch sha256:zz\nsearch -n 0 moon\nfiles 42\nquit\n",
            share.display()
        ),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("rows 1–2 of 3; `more` shows the next"),
        "{stdout}"
    );
    assert!(stdout.contains("rows 4–5 of 5\n"), "{stdout}");
    assert!(stdout.contains("│ File"), "collapsed table: {stdout}");
    assert!(
        stdout.contains(&format!("peer {id} shares 5 files")),
        "{stdout}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    // One-character patterns ("o", "m") and "**" would list most of the index.
    assert!(
        errors.iter().any(|e| e.contains("at least 2 characters")),
        "{stderr}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("sha256: takes 4 to 64 hex digits")),
        "{stderr}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("-n takes a number of rows")),
        "{stderr}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("peer 42 is not registered")),
        "{stderr}"
    );
}

#[test]
fn collapsed_rows_count_the_peers_sharing_the_same_contents() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    library(&a);
    library(&b);
    let (index, _serving) = run_serving_index(tmp.path(), &[&a, &b]);
    let out = NAPSTER.run(
        tmp.path(),
        &format!("connect {index}\nsearch -c moon.mp3\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let blue = rows(&stdout)
        .into_iter()
        .find(|r| r.contains("Blue Moon.mp3"))
        .unwrap();
    let cells: Vec<&str> = blue.split('┆').map(str::trim).collect();
    assert_eq!(cells[3], "2", "{stdout}");
    assert!(stdout.contains("4 files on 2 peers"), "{stdout}");
}

/// An index and one sharing process per folder, their stdin closed; returns the index
/// address and the processes, which are killed when dropped.
fn run_serving_index(tmp: &Path, folders: &[&Path]) -> (String, Vec<Running>) {
    let start = |cwd: &Path, script: String, needle: &str| {
        let mut process = NAPSTER.start(cwd, &script);
        process.end_input();
        let line = process.wait_for(needle);
        (process, line)
    };
    let (index_process, line) = start(tmp, "serve 0\n".into(), "listening on");
    let index = last_word(&line);
    let mut processes = vec![index_process];
    for (i, folder) in folders.iter().enumerate() {
        // Each peer its own home, so its own key: its own identity.
        let home = tmp.join(format!("home{i}"));
        std::fs::create_dir_all(&home).unwrap();
        let (peer, _) = start(
            &home,
            format!("connect {index}\nregister {} 0\n", folder.display()),
            "registered",
        );
        processes.push(peer);
    }
    (index, processes)
}
