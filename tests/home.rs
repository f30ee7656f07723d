//! A napster's home, with real processes and their environment: `--home` beats
//! `NAPSTER_HOME`, which beats a key file already in the current folder, which beats the
//! user's data directory (`XDG_DATA_HOME`, else `~/.local/share`); the config files apply
//! user first, then `./napster.toml`, then `--config`; and `register .` leaves the
//! downloads folder inside it out. Every process gets its own `HOME`, `XDG_*` folders and
//! current folder in a temporary directory: no test touches the real user's.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use napster::identity::Identity;
use serde_json::Value;

use common::process::{BIN, HOME_ENV, Napster, last_word, text};

const NAPSTER: Napster = Napster {
    log: "warn",
    patience: Some(Duration::from_secs(20)),
};

/// A user of their own: a home folder, XDG data and config folders, and a current folder.
struct User {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    cwd: PathBuf,
}

impl User {
    fn new() -> User {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_owned();
        let cwd = root.join("here");
        std::fs::create_dir_all(&cwd).unwrap();
        User {
            _tmp: tmp,
            root,
            cwd,
        }
    }

    /// The data directory napster uses when nothing else names a home.
    fn data_dir(&self) -> PathBuf {
        self.root.join("data/napster")
    }

    /// napster in the current folder with this user's environment and no `NAPSTER_HOME`
    /// (`env` adds to it).
    fn command(&self, args: &[&str], env: &[(&str, &Path)]) -> Command {
        let mut command = Command::new(BIN);
        command
            .current_dir(&self.cwd)
            .env_remove(HOME_ENV)
            .env("HOME", self.root.join("user"))
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("XDG_CONFIG_HOME", self.root.join("config"))
            .env("RUST_LOG", "warn")
            .args(args)
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }

    /// `napster --json status` against an index that is not there: its `home` record.
    fn status(&self, args: &[&str], env: &[(&str, &Path)]) -> Value {
        let closed = common::closed_addr().to_string();
        let mut all = vec!["--json", "--index", &closed];
        all.extend_from_slice(args);
        all.push("status");
        let out = self.command(&all, env).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        home_record(&out)
    }
}

/// The `home` record among a `--json` run's lines.
fn home_record(out: &Output) -> Value {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["type"] == "home")
        .unwrap_or_else(|| panic!("no home record in {}", text(&out.stdout)))
}

fn fingerprint_of(key: &Path) -> String {
    Identity::load(key, "key")
        .unwrap()
        .fingerprint()
        .to_string()
}

/// Each rule of precedence, from the last to the first, with the key it leads to.
#[test]
fn the_home_is_the_option_then_the_env_then_a_key_here_then_the_data_dir() {
    let user = User::new();
    let data = user.data_dir();
    let home = user.status(&[], &[]);
    assert_eq!(home["chosen_by"], "data_dir", "{home}");
    assert_eq!(home["home"], data.display().to_string());
    let key = data.join(".napster-key");
    assert_eq!(home["key"], key.display().to_string());
    assert!(key.exists(), "status made the key in the data directory");
    assert!(!user.cwd.join(".napster-key").exists());
    assert_eq!(
        home["index_key"],
        data.join(".napster-index-key").display().to_string()
    );

    // Without XDG_DATA_HOME, the data directory is under HOME.
    let out = user
        .command(&["--json", "status"], &[])
        .env_remove("XDG_DATA_HOME")
        .args(["--index", &common::closed_addr().to_string()])
        .output()
        .unwrap();
    let under_home = user.root.join("user/.local/share/napster");
    assert_eq!(home_record(&out)["home"], under_home.display().to_string());

    // A key already in the current folder (an upgraded napster's) keeps it the home.
    let legacy = user.cwd.join(".napster-key");
    let legacy_fingerprint = Identity::load_or_create(&legacy, "key")
        .unwrap()
        .fingerprint()
        .to_string();
    let home = user.status(&[], &[]);
    assert_eq!(home["chosen_by"], "legacy", "{home}");
    assert_eq!(home["key"], legacy.display().to_string());
    assert_eq!(fingerprint_of(&legacy), legacy_fingerprint);

    let env_home = user.root.join("env-home");
    let home = user.status(&[], &[(HOME_ENV, &env_home)]);
    assert_eq!(home["chosen_by"], "env", "{home}");
    assert_eq!(home["home"], env_home.display().to_string());
    assert!(env_home.join(".napster-key").exists());

    let option_home = user.root.join("option-home");
    let option = option_home.display().to_string();
    let home = user.status(&["--home", &option], &[(HOME_ENV, &env_home)]);
    assert_eq!(home["chosen_by"], "option", "{home}");
    assert_eq!(
        home["key"],
        option_home.join(".napster-key").display().to_string()
    );
    assert_ne!(
        fingerprint_of(&option_home.join(".napster-key")),
        fingerprint_of(&env_home.join(".napster-key")),
        "two homes are two peers"
    );
}

/// An index upgraded in place keeps the key every peer pinned: started from a folder
/// that holds `.napster-index-key`, it proves that key and makes no new one.
#[test]
fn a_legacy_index_key_in_the_current_folder_is_kept() {
    let user = User::new();
    let legacy = user.cwd.join(".napster-index-key");
    let pinned = Identity::load_or_create(&legacy, "key")
        .unwrap()
        .fingerprint();
    let mut index = NAPSTER.start_command(user.command(&[], &[]), "serve 0\n");
    let addr = last_word(&index.wait_for("index server listening on"));
    let client = common::index_client(addr.parse().unwrap()).unwrap();
    assert_eq!(client.fingerprint(), pinned);
    assert!(
        !user.data_dir().join(".napster-index-key").exists(),
        "no new index key in the data directory"
    );
}

/// The user's config, then `./napster.toml`, then `--config`, key by key; `status` lists
/// the files in that order.
#[test]
fn config_files_apply_user_then_folder_then_option() {
    let user = User::new();
    let user_config = user.root.join("config/napster/napster.toml");
    std::fs::create_dir_all(user_config.parent().unwrap()).unwrap();
    std::fs::write(
        &user_config,
        "[peer]\ndownloads = \"from-user\"\n[shell]\nresults = 7\n",
    )
    .unwrap();
    let closed = common::closed_addr().to_string();
    let downloads_line = |out: &Output| {
        text(&out.stdout)
            .lines()
            .find(|l| l.starts_with("downloads: "))
            .unwrap_or_default()
            .to_owned()
    };
    let out = user
        .command(&["--index", &closed, "status"], &[])
        .output()
        .unwrap();
    // The folder as an absolute path: a relative one resolves against the working folder.
    let cwd = std::fs::canonicalize(&user.cwd).unwrap();
    let shown = |name: &str| format!("downloads: {}", cwd.join(name).display());
    assert_eq!(downloads_line(&out), shown("from-user"));

    let folder_config = user.cwd.join("napster.toml");
    std::fs::write(&folder_config, "[peer]\ndownloads = \"from-folder\"\n").unwrap();
    let out = user
        .command(&["--index", &closed, "status"], &[])
        .output()
        .unwrap();
    assert_eq!(downloads_line(&out), shown("from-folder"));
    let stdout = text(&out.stdout);
    let listed = format!(
        "config: {}, {} (each overrides",
        user_config.display(),
        folder_config.display()
    );
    assert!(stdout.contains(&listed), "{stdout}");

    let option_config = user.root.join("option.toml");
    std::fs::write(&option_config, "[peer]\ndownloads = \"from-option\"\n").unwrap();
    let option = option_config.display().to_string();
    let home = user.status(&["--config", &option], &[]);
    assert_eq!(
        home["config_files"],
        serde_json::json!([
            user_config.display().to_string(),
            folder_config.display().to_string(),
            option,
        ])
    );
    let out = user
        .command(&["--index", &closed, "--config", &option, "status"], &[])
        .output()
        .unwrap();
    assert_eq!(downloads_line(&out), shown("from-option"));

    // With a home named, the user's config is the one in that home.
    let named = user.root.join("named");
    std::fs::create_dir_all(&named).unwrap();
    std::fs::write(named.join("napster.toml"), "[shell]\nresults = 9\n").unwrap();
    let home = user.status(&[], &[(HOME_ENV, &named)]);
    assert_eq!(
        home["config_files"],
        serde_json::json!([
            named.join("napster.toml").display().to_string(),
            folder_config.display().to_string(),
        ])
    );
}

/// `register .` in a folder whose downloads folder lies inside it shares the folder's
/// files, not the downloads; a download made afterwards is not shared either.
#[test]
fn register_dot_leaves_the_downloads_folder_out() {
    let tmp = tempfile::tempdir().unwrap();
    let here = tmp.path();
    std::fs::create_dir_all(here.join("downloads")).unwrap();
    std::fs::write(here.join("mine.txt"), b"shared by me\n").unwrap();
    std::fs::write(here.join("downloads/fetched.txt"), b"downloaded before\n").unwrap();
    let mut process = NAPSTER.start_with(here, &["--json"], "serve 0\nregister . 0\n");
    let registered = process.wait_for("\"registered\"");
    let record: Value = serde_json::from_str(&registered).unwrap();
    assert_eq!(record["files"], 1, "{record}");
    let shared = |process: &mut common::process::Running| -> Vec<String> {
        let mut names: Vec<String> = process
            .ask("search *.txt")
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["type"] == "hit")
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(shared(&mut process), ["mine.txt"]);
    std::fs::write(here.join("downloads/later.txt"), b"downloaded since\n").unwrap();
    std::fs::write(here.join("new.txt"), b"shared since\n").unwrap();
    // The share follows the folder (a new file is announced once settled); the download
    // written before the new file is not.
    let mut now = Vec::new();
    common::wait_until("new.txt is shared", Duration::from_secs(20), || {
        now = shared(&mut process);
        now.len() > 1
    });
    assert_eq!(now, ["mine.txt", "new.txt"]);
}
