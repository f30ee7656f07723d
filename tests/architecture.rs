//! The layout rules of `docs/ARCHITECTURE.md`, checked on the source itself: layers point
//! one way, no two files import each other (no cycle), no file is longer than a reader
//! takes in at one sitting. Test modules (`#[cfg(test)]` onwards) are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Longest file, in lines, tests excluded.
const MAX_LINES: usize = 800;

/// Top-level modules each module may not import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("protocol", &["*"]),
    ("disk", &["*"]),
    ("limit", &["*"]),
    ("runtime", &["*"]),
    ("index", &["peer", "shell", "download", "client"]),
    ("download", &["peer", "shell"]),
    ("peer", &["shell"]),
    ("client", &["peer", "download", "index", "shell"]),
    ("net", &["peer", "download", "index", "shell", "client"]),
    (
        "gate",
        &[
            "peer", "download", "index", "shell", "client", "net", "http",
        ],
    ),
    (
        "http",
        &["peer", "download", "index", "shell", "client", "net"],
    ),
    (
        "config",
        &["peer", "download", "index", "shell", "client", "home"],
    ),
    (
        "web",
        &["peer", "download", "index", "shell", "client", "daemon"],
    ),
    (
        "home",
        &["peer", "download", "index", "shell", "client", "net"],
    ),
];

/// Every module file under `src` (`a/b` for `src/a/b.rs`, `a` for `src/a/mod.rs`), with
/// its text before any test module.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                walk(&path, &format!("{prefix}{stem}/"), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = match stem.as_str() {
                    "mod" => prefix.trim_end_matches('/').to_owned(),
                    _ => format!("{prefix}{stem}"),
                };
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap();
                out.insert(name, code.to_owned());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        "",
        &mut out,
    );
    out
}

/// The module files `name` refers to through `crate::` and `super::` paths (comments,
/// where such paths appear in prose, left out).
fn imports(name: &str, code: &str, all: &BTreeMap<String, String>) -> BTreeSet<String> {
    let code: String = code
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .map(|line| format!("{line}\n"))
        .collect();
    let parent = match name.rsplit_once('/') {
        Some((parent, _)) => format!("{parent}/"),
        None => String::new(),
    };
    let mut found = BTreeSet::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        for (at, _) in code.match_indices(prefix) {
            let rest = &code[at + prefix.len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            let mut heads = vec![path.to_owned()];
            // `crate::x::{a, b}`: each item may name a submodule.
            if rest[path.len()..].trim_start_matches(':').starts_with('{') {
                let inner = rest[path.len()..].trim_start_matches(':');
                let inner = &inner[1..inner.find('}').unwrap_or(inner.len())];
                heads = inner
                    .split(',')
                    .map(|item| format!("{path}::{}", item.trim()))
                    .collect();
            }
            for head in heads {
                let segments: Vec<&str> = head.split("::").filter(|s| !s.is_empty()).collect();
                let target = (1..=segments.len()).rev().find_map(|n| {
                    let candidate = format!("{base}{}", segments[..n].join("/"));
                    all.contains_key(&candidate).then_some(candidate)
                });
                if let Some(target) = target.filter(|t| t != name) {
                    found.insert(target);
                }
            }
        }
    }
    found
}

#[test]
fn layers_point_one_way_and_files_stay_readable() {
    let all = modules();
    let graph: BTreeMap<&str, BTreeSet<String>> = all
        .iter()
        .map(|(name, code)| (name.as_str(), imports(name, code, &all)))
        .collect();
    let mut problems = Vec::new();
    for (name, code) in &all {
        let lines = code.lines().count();
        if lines > MAX_LINES {
            problems.push(format!("{name} has {lines} lines (at most {MAX_LINES})"));
        }
        let top = name.split('/').next().unwrap();
        for target in &graph[name.as_str()] {
            let target_top = target.split('/').next().unwrap();
            if target_top == top {
                continue;
            }
            let banned = FORBIDDEN
                .iter()
                .filter(|(from, _)| *from == top)
                .any(|(_, to)| to.contains(&"*") || to.contains(&target_top));
            // Only the binary and the daemon stand above the shell: the daemon drives the
            // shell's own commands so that its API answers as `--json` does.
            let above_shell = matches!(top, "main" | "daemon");
            if banned || (target_top == "shell" && !above_shell) {
                problems.push(format!("{name} imports {target}"));
            }
        }
    }
    // Cycles between files: a depth-first search that meets a file still on its path.
    fn visit<'a>(
        node: &'a str,
        graph: &'a BTreeMap<&str, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(start) = path.iter().position(|n| *n == node) {
            cycles.push(format!("cycle: {} -> {node}", path[start..].join(" -> ")));
            return;
        }
        if !done.insert(node) {
            return;
        }
        path.push(node);
        for next in &graph[node] {
            // A module file re-exporting from its own submodules is not a cycle.
            if !next.starts_with(&format!("{node}/")) {
                visit(next, graph, path, done, cycles);
            }
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself can fail: a made-up cycle and a forbidden import are found.
#[test]
fn the_checker_finds_what_it_looks_for() {
    let mut all = BTreeMap::new();
    all.insert(
        "index/store".to_owned(),
        "use crate::peer::share;".to_owned(),
    );
    all.insert(
        "peer/share".to_owned(),
        "use crate::index::store::X;".to_owned(),
    );
    all.insert("peer".to_owned(), String::new());
    all.insert("index".to_owned(), String::new());
    assert_eq!(
        imports("index/store", &all["index/store"], &all),
        BTreeSet::from(["peer/share".to_owned()])
    );
    assert_eq!(
        imports("peer/share", "use super::{share, Other};", &all),
        BTreeSet::new(),
        "a file never depends on itself"
    );
    assert_eq!(
        imports("peer/share", &all["peer/share"], &all),
        BTreeSet::from(["index/store".to_owned()])
    );
}
