//! The daemon's one shell: a thread that owns a [`Shell`] and runs the commands the API
//! sends it, one at a time, exactly as the prompt would (same handlers, same records). A
//! command is given as its words, so that the API never builds a command line by hand.

use smol::channel::{Sender, bounded};

use crate::download::Cancel;
use crate::error::{Error, Result};
use crate::shell::Shell;
use crate::shell::commands::{self, Format};
use crate::shell::present::{self, records::Record};

/// What a command gave back, as the API uses it: its records (`--json`'s) and its text.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The records `--json` prints.
    pub records: Vec<Record>,
    /// The text the shell prints.
    pub text: String,
}

/// Commands waiting for the shell: more wait on the channel's space, not in memory.
const BACKLOG: usize = 64;

type Job = (Vec<String>, Sender<Result<Reply>>);

/// A handle on the shell thread.
#[derive(Clone)]
pub struct Commands {
    jobs: Sender<Job>,
}

impl Commands {
    /// Start the thread that owns `shell`; it ends when every handle is dropped.
    pub fn start(mut shell: Shell) -> std::io::Result<Commands> {
        let (jobs, incoming) = bounded::<Job>(BACKLOG);
        std::thread::Builder::new()
            .name("napster-daemon-shell".into())
            .spawn(move || {
                while let Ok((words, answer)) = incoming.recv_blocking() {
                    let result = smol::block_on(run(&mut shell, &words));
                    let _ = answer.send_blocking(result);
                }
            })?;
        Ok(Commands { jobs })
    }

    /// Run the command made of `words` (`["search", "song"]`) and return its reply.
    pub async fn run<S: AsRef<str>>(&self, words: &[S]) -> Result<Reply> {
        let words = words.iter().map(|w| w.as_ref().to_owned()).collect();
        let (answer, reply) = bounded(1);
        self.jobs
            .send((words, answer))
            .await
            .map_err(|_| Error::msg("the daemon is stopping"))?;
        reply
            .recv()
            .await
            .map_err(|_| Error::msg("the daemon is stopping"))?
    }

    /// The records of the command made of `words`.
    pub async fn records<S: AsRef<str>>(&self, words: &[S]) -> Result<Vec<Record>> {
        Ok(self.run(words).await?.records)
    }
}

/// Parse `words` as the prompt would parse them, and run the command.
async fn run(shell: &mut Shell, words: &[String]) -> Result<Reply> {
    let line = shlex::try_join(words.iter().map(String::as_str))
        .map_err(|_| Error::Usage("a word holds a NUL character".into()))?;
    let command = commands::parse(&line)?.ok_or_else(|| Error::Usage("no command".into()))?;
    let outcome = shell.execute(command, Cancel::default()).await?;
    Ok(Reply {
        records: present::records::records(&outcome),
        text: present::render(&outcome, Format::Table),
    })
}
