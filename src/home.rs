//! The home: where a napster keeps what makes it itself, like ssh's `~/.ssh` or
//! Syncthing's home. It holds the key files (`[peer] key`, `[index] key`), the index keys
//! pinned (`[peer] known_indexes`), the hash cache (`[peer] hash_cache`) and the shell's
//! history (`[shell] history`). What belongs to a folder stays with the folder: the
//! shared folder, the downloads folder with its queue, the log file.
//!
//! The home is the first of these that applies:
//! 1. `--home DIR`, then the `NAPSTER_HOME` environment variable;
//! 2. the current folder, when a key file is already there (napster kept its keys there
//!    before it had homes: an upgraded index keeps the key every peer pinned, and a peer
//!    its Peer ID, instead of making new ones);
//! 3. the user's data directory (`$XDG_DATA_HOME/napster`, else `~/.local/share/napster`).
//!
//! Settings are read from the user's config file (`napster.toml` in the home when
//! `--home` or `NAPSTER_HOME` names it, else in `$XDG_CONFIG_HOME/napster/`), then
//! `./napster.toml`, then `--config FILE`, each overriding the ones before key by key.
//! A relative path of one of the home's files resolves against the home; every other
//! relative path (the folders, the log file) against the current folder.

use std::ffi::OsString;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, HomeFrom};
use crate::error::{Error, Result};

/// The environment variable that names the home when `--home` does not.
pub const HOME_ENV: &str = "NAPSTER_HOME";

/// The folder's name under the user's data and config directories.
const APPLICATION: &str = "napster";

/// Mode of a home napster creates: it holds private keys, so only its owner may enter.
const HOME_MODE: u32 = 0o700;

/// What the command line and the environment ask for.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// `--home DIR`.
    pub home: Option<PathBuf>,
    /// `NAPSTER_HOME`.
    pub env: Option<OsString>,
    /// `--config FILE`, which must exist.
    pub config: Option<PathBuf>,
}

impl Asked {
    /// The command line's `--home` and `--config`, and this process's `NAPSTER_HOME`.
    pub fn with_env(home: Option<PathBuf>, config: Option<PathBuf>) -> Asked {
        Asked {
            home,
            env: std::env::var_os(HOME_ENV),
            config,
        }
    }
}

/// Where this user's files go when nothing says otherwise.
#[derive(Debug, Clone)]
pub struct Places {
    /// The current folder.
    pub cwd: PathBuf,
    /// The user's data directory for napster, if the platform names one.
    pub data_dir: Option<PathBuf>,
    /// The user's config directory for napster, if the platform names one.
    pub config_dir: Option<PathBuf>,
}

impl Places {
    /// The current folder and the platform's directories for this user (XDG on Linux).
    pub fn of_this_user() -> Result<Places> {
        let cwd = std::env::current_dir()
            .map_err(|e| Error::Config(format!("cannot read the current folder: {e}")))?;
        let dirs = directories::ProjectDirs::from("", "", APPLICATION);
        Ok(Places {
            cwd,
            data_dir: dirs.as_ref().map(|d| d.data_dir().to_owned()),
            config_dir: dirs.as_ref().map(|d| d.config_dir().to_owned()),
        })
    }
}

/// The settings of this process: its config files read in order, its home chosen (and
/// made, mode 0700, if it is new), and the home's files placed in it. Where they came
/// from is in [`Config::origin`].
pub fn load(asked: &Asked, places: &Places) -> Result<Config> {
    let cwd = &places.cwd;
    let named = named_home(asked, cwd)?;
    if let Some((home, _)) = &named {
        // Before its napster.toml is looked for, so that the error says what is wrong.
        refuse_non_folder(home)?;
    }
    let user_config = match &named {
        Some((home, _)) => Some(home.join(config::DEFAULT_FILE)),
        None => places
            .config_dir
            .as_ref()
            .map(|d| d.join(config::DEFAULT_FILE)),
    };
    let mut files: Vec<(PathBuf, bool)> = user_config.map(|p| (p, false)).into_iter().collect();
    files.push((cwd.join(config::DEFAULT_FILE), false));
    files.extend(asked.config.as_ref().map(|p| (cwd.join(p), true)));
    let mut config = Config::load_layers(&read_once(files))?;
    let (home, from) = match named {
        Some(named) => named,
        None if has_legacy_key(&config, cwd) => (cwd.clone(), HomeFrom::Legacy),
        None => match &places.data_dir {
            Some(dir) => (dir.clone(), HomeFrom::DataDir),
            None => {
                return Err(Error::Config(
                    "cannot find the user's data directory (is HOME set?): give napster a \
                     home with --home DIR or NAPSTER_HOME"
                        .into(),
                ));
            }
        },
    };
    prepare(&home)?;
    for path in home_files(&mut config) {
        if !path.as_os_str().is_empty() && path.is_relative() {
            *path = home.join(&*path);
        }
    }
    config.origin.home = Some((home, from));
    Ok(config)
}

/// The home `--home` or `NAPSTER_HOME` names, made absolute.
fn named_home(asked: &Asked, cwd: &Path) -> Result<Option<(PathBuf, HomeFrom)>> {
    let named = match (&asked.home, &asked.env) {
        (Some(dir), _) if dir.as_os_str().is_empty() => {
            return Err(Error::Usage(
                "--home needs a folder (it is made if it does not exist)".into(),
            ));
        }
        (Some(dir), _) => Some((dir.clone(), HomeFrom::Option)),
        // An empty variable is an unset one, as shells make it easy to leave one empty.
        (None, Some(env)) if !env.is_empty() => Some((PathBuf::from(env), HomeFrom::Env)),
        _ => None,
    };
    Ok(named.map(|(dir, from)| (cwd.join(dir), from)))
}

/// The settings naming files of the home: keys, pinned index keys, hash cache, history.
fn home_files(config: &mut Config) -> [&mut PathBuf; 5] {
    [
        &mut config.peer.key,
        &mut config.index.key,
        &mut config.peer.known_indexes,
        &mut config.peer.hash_cache,
        &mut config.shell.history,
    ]
}

/// Whether a key file is already where napster kept it before homes: relative to the
/// current folder.
fn has_legacy_key(config: &Config, cwd: &Path) -> bool {
    [&config.peer.key, &config.index.key]
        .into_iter()
        .any(|key| {
            !key.as_os_str().is_empty()
                && key.is_relative()
                && cwd.join(key).symlink_metadata().is_ok()
        })
}

/// The config files, each read once: a home that is the current folder has one
/// `napster.toml`, not two. A file named twice is read where it is named last.
fn read_once(files: Vec<(PathBuf, bool)>) -> Vec<(PathBuf, bool)> {
    let same = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_owned());
    let mut kept: Vec<(PathBuf, bool)> = Vec::new();
    for (path, required) in files {
        let earlier = kept.iter().position(|(p, _)| same(p) == same(&path));
        let required = required || earlier.is_some_and(|i| kept.remove(i).1);
        kept.push((path, required));
    }
    kept
}

/// Refuse a home that exists but is not a folder.
fn refuse_non_folder(home: &Path) -> Result<()> {
    match home.metadata() {
        Ok(meta) if !meta.is_dir() => Err(Error::Config(format!(
            "the home {} is not a folder: give another with --home DIR or NAPSTER_HOME",
            home.display()
        ))),
        _ => Ok(()),
    }
}

/// Make the home if it does not exist yet; refuse one that is not a folder.
fn prepare(home: &Path) -> Result<()> {
    refuse_non_folder(home)?;
    match home.metadata() {
        Ok(_) => Ok(()),
        // Only the home itself is private: folders above it (`~/.local/share`) that
        // napster makes get the usual mode, as other programs expect of them.
        Err(_) => home
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::DirBuilder::new().mode(HOME_MODE).create(home))
            .or_else(|e| match e.kind() {
                // Another napster made it meanwhile.
                std::io::ErrorKind::AlreadyExists if home.is_dir() => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| {
                Error::Config(format!(
                    "cannot make the home {}: {e}; give another with --home DIR or NAPSTER_HOME",
                    home.display()
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn places(root: &Path) -> Places {
        let cwd = root.join("here");
        std::fs::create_dir_all(&cwd).unwrap();
        Places {
            cwd,
            data_dir: Some(root.join("data/napster")),
            config_dir: Some(root.join("config/napster")),
        }
    }

    fn home_of(config: &Config) -> (PathBuf, HomeFrom) {
        config.origin.home.clone().unwrap()
    }

    /// `--home` beats `NAPSTER_HOME`, which beats a key in the current folder, which
    /// beats the data directory; the home's files are placed in the home.
    #[test]
    fn the_home_is_chosen_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let places = places(tmp.path());
        let mut asked = Asked::default();
        let config = load(&asked, &places).unwrap();
        let data = tmp.path().join("data/napster");
        assert_eq!(home_of(&config), (data.clone(), HomeFrom::DataDir));
        assert_eq!(config.peer.key, data.join(".napster-key"));
        assert_eq!(config.shell.history, data.join(".napster_history"));
        assert_eq!(config.peer.downloads, Path::new("downloads"));
        let mode = data.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, HOME_MODE);

        std::fs::write(places.cwd.join(".napster-index-key"), b"").unwrap();
        let config = load(&asked, &places).unwrap();
        assert_eq!(home_of(&config), (places.cwd.clone(), HomeFrom::Legacy));
        assert_eq!(config.index.key, places.cwd.join(".napster-index-key"));

        asked.env = Some(OsString::from("env-home"));
        let config = load(&asked, &places).unwrap();
        let env = places.cwd.join("env-home");
        assert_eq!(home_of(&config), (env.clone(), HomeFrom::Env));
        assert_eq!(
            config.peer.known_indexes,
            env.join(".napster-known-indexes")
        );

        asked.home = Some(tmp.path().join("option"));
        let config = load(&asked, &places).unwrap();
        assert_eq!(
            home_of(&config),
            (tmp.path().join("option"), HomeFrom::Option)
        );
    }

    /// The user config, `./napster.toml` and `--config` apply in that order; a home that
    /// is the current folder reads its `napster.toml` once.
    #[test]
    fn config_files_apply_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let places = places(tmp.path());
        let user = tmp.path().join("config/napster/napster.toml");
        std::fs::create_dir_all(user.parent().unwrap()).unwrap();
        std::fs::write(
            &user,
            "[peer]\nport = 1\nname = \"alice\"\nkey = \"mine.pem\"\n",
        )
        .unwrap();
        let here = places.cwd.join("napster.toml");
        std::fs::write(&here, "[peer]\nport = 2\n").unwrap();
        let extra = tmp.path().join("extra.toml");
        std::fs::write(&extra, "[peer]\nport = 3\n").unwrap();
        let asked = Asked {
            config: Some(extra.clone()),
            ..Asked::default()
        };
        let config = load(&asked, &places).unwrap();
        assert_eq!((config.peer.port, config.peer.name.as_str()), (3, "alice"));
        assert_eq!(config.origin.files, [user, here.clone(), extra]);
        assert_eq!(
            config.peer.key,
            tmp.path().join("data/napster/mine.pem"),
            "a relative key path resolves against the home"
        );

        let asked = Asked {
            home: Some(places.cwd.clone()),
            ..Asked::default()
        };
        let config = load(&asked, &places).unwrap();
        assert_eq!(config.origin.files, [here]);
    }

    #[test]
    fn a_home_that_is_a_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let places = places(tmp.path());
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let asked = Asked {
            home: Some(file),
            ..Asked::default()
        };
        let err = load(&asked, &places).unwrap_err().to_string();
        assert!(err.contains("is not a folder"), "{err}");
    }
}
