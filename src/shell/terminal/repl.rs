//! The read loops: a `rustyline` prompt on a terminal, plain lines from a pipe; and the
//! signals: Ctrl-C cancels the running command at a prompt, while SIGTERM (and SIGINT
//! when scripted) withdraws this peer's files, stops the servers and exits.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use async_signal::{Signal, Signals};
use rustyline::error::ReadlineError;
use rustyline::{CompletionType, Editor};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::stream::StreamExt;

use super::editor::NapsterHelper;
use crate::config::Config;
use crate::download::Cancel;
use crate::error::{Error, Result};
use crate::logging;
use crate::shell::Shell;
use crate::shell::commands::outcome::Outcome;
use crate::shell::commands::{self, Command, Format};
use crate::shell::present::records::{self as output, exit};
use crate::shell::present::{self, table, text};
use crate::shell::services::Services;

/// The prompt.
const PROMPT: &str = "napster> ";

/// How long a cancelled command may take to stop cleanly.
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether the shell goes on after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next command.
    Continue,
    /// Leave.
    Quit,
}

/// Where the commands come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Standard input: the prompt on a terminal, a script otherwise.
    Stdin,
    /// Lines given with `-e` (numbered from 1 in errors).
    Lines(Vec<String>),
    /// One command given on the command line (`napster search x`).
    OneShot(Command),
}

/// How the binary was asked to run the shell.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the commands come from.
    pub source: Source,
    /// Print JSON Lines (`--json`).
    pub json: bool,
    /// Print progress records while downloading (`--progress`, with `--json`).
    pub progress: bool,
    /// Stop at the first failing line of a script (`--stop-on-error`).
    pub stop_on_error: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            source: Source::Stdin,
            json: false,
            progress: false,
            stop_on_error: false,
        }
    }
}

/// Flags shared between the read loop and the signal watcher.
struct Control {
    services: Arc<Services>,
    busy: AtomicBool,
    failed: AtomicBool,
    /// Set when a one-shot `search` or `files` found nothing.
    nothing_matched: AtomicBool,
    /// The exit status a signal leaves with, once nothing failed.
    interrupted: AtomicU8,
    interrupts: Sender<()>,
    interactive: bool,
    json: AtomicBool,
    /// Whether a `search` or `files` that finds nothing sets the exit status (one-shot).
    counts_nothing: bool,
}

impl Control {
    fn exit_code(&self) -> i32 {
        if self.failed.load(Ordering::SeqCst) {
            i32::from(exit::FAILED)
        } else if self.nothing_matched.load(Ordering::SeqCst) {
            i32::from(exit::NOTHING_MATCHED)
        } else {
            i32::from(self.interrupted.load(Ordering::SeqCst))
        }
    }
}

/// Run the commands `options` name; returns the exit code.
pub fn run_with(config: Config, options: Options) -> i32 {
    // Connections are bounded by the configured limits, not by a low default `ulimit -n`.
    crate::net::raise_fd_limit();
    let interactive = matches!(options.source, Source::Stdin) && std::io::stdin().is_terminal();
    let services = Arc::new(Services::default());
    let (interrupts, interrupted) = smol::channel::unbounded();
    let control = Arc::new(Control {
        services: services.clone(),
        busy: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        nothing_matched: AtomicBool::new(false),
        interrupted: AtomicU8::new(exit::OK),
        interrupts,
        interactive,
        json: AtomicBool::new(options.json),
        counts_nothing: matches!(options.source, Source::OneShot(_)),
    });
    if let Err(e) = watch_signals(control.clone()) {
        eprintln!("error: cannot watch signals: {e}");
        return 1;
    }
    let show_progress = interactive && std::io::stderr().is_terminal();
    let mut shell = Shell::new(config.clone(), services, show_progress && !options.json);
    if options.json {
        shell.format = Format::Json;
        shell.progress.records = options.progress;
    }
    if interactive {
        interactive_loop(&mut shell, &config, &control, &interrupted);
    } else {
        if let Err(e) = logging::init(&config.log, None) {
            eprintln!("error: {e}");
            return 2;
        }
        if matches!(options.source, Source::Stdin | Source::Lines(_)) {
            shell.resume_queue();
        }
        script_loop(&mut shell, &control, &interrupted, &options);
    }
    control.exit_code()
}

fn watch_signals(control: Arc<Control>) -> std::io::Result<()> {
    let mut signals = Signals::new([Signal::Int, Signal::Term])?;
    std::thread::Builder::new()
        .name("napster-signals".into())
        .spawn(move || {
            smol::block_on(async {
                while let Some(Ok(signal)) = signals.next().await {
                    let busy = control.busy.load(Ordering::SeqCst);
                    if signal == Signal::Int && busy {
                        let _ = control.interrupts.try_send(());
                        if control.interactive {
                            continue;
                        }
                    } else if signal == Signal::Int && control.interactive {
                        continue;
                    }
                    if signal == Signal::Int && !busy {
                        // A server stopped on purpose: not a failure.
                    } else if signal == Signal::Int {
                        control
                            .interrupted
                            .store(exit::INTERRUPTED, Ordering::SeqCst);
                    }
                    eprintln!(
                        "napster: {}",
                        text::shutting_down(
                            control.services.sharing().is_some(),
                            control.services.index_addr().is_some(),
                            busy
                        )
                    );
                    control.services.shutdown().await;
                    std::process::exit(control.exit_code());
                }
            })
        })?;
    Ok(())
}

/// Run one line; errors are the caller's to print.
fn run_line(
    shell: &mut Shell,
    line: &str,
    control: &Control,
    interrupted: &Receiver<()>,
) -> Result<Flow> {
    let Some(command) = commands::parse(line)? else {
        return Ok(Flow::Continue);
    };
    run_command(shell, command, control, interrupted)
}

/// Run one parsed command; errors are the caller's to print.
fn run_command(
    shell: &mut Shell,
    command: Command,
    control: &Control,
    interrupted: &Receiver<()>,
) -> Result<Flow> {
    while interrupted.try_recv().is_ok() {}
    let cancel = Cancel::default();
    control.busy.store(true, Ordering::SeqCst);
    let mut running = Box::pin(shell.execute(command, cancel.clone()));
    // The outcome of a command that finished is printed; one cut short prints nothing.
    let first = smol::block_on(async { (&mut running).await.map(Some) }.or(async {
        let _ = interrupted.recv().await;
        Ok(None)
    }));
    let result = match first {
        Ok(Some(outcome)) => Ok(outcome),
        Err(e) => Err(e),
        // Ctrl-C: ask the command to stop, and give it a moment to put things in order
        // (a download saves what arrived) before the prompt comes back.
        Ok(None) => {
            cancel.cancel();
            let stopped = smol::block_on((&mut running).or(async {
                smol::Timer::after(CANCEL_GRACE).await;
                Err(Error::Cancelled)
            }));
            stopped.and(Err(Error::Cancelled))
        }
    };
    drop(running);
    let result = result.map(|outcome| {
        say!("{}", present::render(&outcome, shell.format));
        if outcome.nothing_matched() && control.counts_nothing {
            control.nothing_matched.store(true, Ordering::SeqCst);
        }
        match outcome {
            Outcome::Quit => Flow::Quit,
            _ => Flow::Continue,
        }
    });
    control
        .json
        .store(shell.format == Format::Json, Ordering::SeqCst);
    control.busy.store(false, Ordering::SeqCst);
    result
}

/// Print a failed command's error on stderr (JSON with `--json`), with the script line
/// it came from; `None` when it succeeded.
fn report(result: Result<Flow>, control: &Control, line: Option<usize>) -> Option<Flow> {
    match result {
        Ok(flow) => Some(flow),
        Err(e) => {
            let message = e.to_string();
            let json = control.json.load(Ordering::SeqCst);
            if json && matches!(e, Error::Refused { .. }) {
                let refused = output::Record::Refused {
                    code: output::error_code(&e),
                    message: message.clone(),
                };
                say!("{}", output::json_line(&refused));
            }
            if json {
                eprintln!(
                    "{}",
                    output::json_error(&output::error_code(&e), &message, line)
                );
            } else {
                match line {
                    Some(n) => match message.split_once('\n') {
                        Some((first, rest)) => eprintln!("error: {first} (line {n})\n{rest}"),
                        None => eprintln!("error: {message} (line {n})"),
                    },
                    None => eprintln!("error: {message}"),
                }
            }
            control.failed.store(true, Ordering::SeqCst);
            None
        }
    }
}

fn script_loop(
    shell: &mut Shell,
    control: &Control,
    interrupted: &Receiver<()>,
    options: &Options,
) {
    let lines: Box<dyn Iterator<Item = std::io::Result<String>>> = match &options.source {
        Source::Stdin => Box::new(std::io::stdin().lock().lines()),
        Source::Lines(lines) => Box::new(lines.clone().into_iter().map(Ok)),
        Source::OneShot(_) => Box::new(std::iter::empty()),
    };
    let mut quit = false;
    if let Source::OneShot(command) = &options.source {
        let result = run_command(shell, command.clone(), control, interrupted);
        quit = report(result, control, None) == Some(Flow::Quit);
    }
    for (n, line) in lines.enumerate() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("error: reading the script: {e}");
                control.failed.store(true, Ordering::SeqCst);
                break;
            }
        };
        match report(
            run_line(shell, &line, control, interrupted),
            control,
            Some(n + 1),
        ) {
            Some(Flow::Quit) => quit = true,
            Some(Flow::Continue) => continue,
            None if options.stop_on_error => quit = true,
            None => continue,
        }
        break;
    }
    // Background downloads stop with the script (they resume at the next `get`); only
    // servers keep the process alive.
    if quit || !control.services.is_serving() {
        smol::block_on(control.services.shutdown());
        return;
    }
    match options.source {
        Source::Stdin => eprintln!("napster: end of input; serving until SIGINT or SIGTERM"),
        _ => eprintln!("napster: serving until SIGINT or SIGTERM"),
    }
    // The signal watcher shuts down and exits.
    loop {
        std::thread::park();
    }
}

/// At `quit` or Ctrl-D: when downloads or uploads still run, say which and ask before
/// leaving.
fn leave<H: rustyline::Helper, I: rustyline::history::History>(
    editor: &mut Editor<H, I>,
    control: &Control,
) -> bool {
    let transfers = control.services.transfers();
    let running: Vec<String> = transfers
        .rows()
        .into_iter()
        .filter(|r| matches!(r.stage, "running" | "waiting"))
        .map(|r| format!("{} ({})", r.number, table::shown(&r.name)))
        .collect();
    let uploading = control.services.sharing().map_or(0, |s| {
        s.uploads()
            .rows()
            .iter()
            .filter(|r| r.waiting.is_none())
            .count()
    });
    if running.is_empty() && uploading == 0 {
        return true;
    }
    if !running.is_empty() {
        say!(
            "still downloading: {}; leaving stops {} and keeps what arrived (napster started \
             here again resumes the queue)\n",
            running.join(", "),
            if running.len() == 1 { "it" } else { "them" }
        );
    }
    if uploading > 0 {
        say!(
            "still sending {} to other peers (`uploads` lists them); leaving cuts {} off\n",
            table::count(uploading as u64, "file"),
            if uploading == 1 { "it" } else { "them" }
        );
    }
    matches!(
        editor.readline("leave anyway? [y/N] ").map(|a| a.trim().to_lowercase()),
        Ok(answer) if answer == "y" || answer == "yes"
    )
}

fn interactive_loop(
    shell: &mut Shell,
    config: &Config,
    control: &Control,
    interrupted: &Receiver<()>,
) {
    let editor_config = rustyline::Config::builder()
        .max_history_size(config.shell.history_size)
        .and_then(|b| b.history_ignore_dups(true))
        .map(|b| {
            b.completion_type(CompletionType::List)
                .auto_add_history(false)
                .build()
        });
    let editor = editor_config
        .map_err(|e| e.to_string())
        .and_then(|c| Editor::<NapsterHelper, _>::with_config(c).map_err(|e| e.to_string()));
    let mut editor = match editor {
        Ok(editor) => editor,
        Err(e) => {
            eprintln!("error: cannot start the line editor: {e}");
            control.failed.store(true, Ordering::SeqCst);
            return;
        }
    };
    editor.set_helper(Some(NapsterHelper::new(shell.seen())));
    let history = &config.shell.history;
    let keep_history = !history.as_os_str().is_empty();
    if keep_history {
        let _ = editor.load_history(history);
    }
    let printer = editor
        .create_external_printer()
        .ok()
        .map(|p| Box::new(p) as logging::Printer);
    if let Err(e) = logging::init(&config.log, printer) {
        eprintln!("error: {e}");
    }
    say!(
        "napster {} — type `help` for commands, `quit` to leave\n",
        env!("CARGO_PKG_VERSION")
    );
    shell.resume_queue();
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if report(run_line(shell, &line, control, interrupted), control, None)
                    == Some(Flow::Quit)
                    && leave(&mut editor, control)
                {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => say!("^C (type `quit` to leave)\n"),
            // Ctrl-D leaves as `quit` does, asking first when transfers run.
            Err(ReadlineError::Eof) if leave(&mut editor, control) => break,
            Err(ReadlineError::Eof) => {}
            Err(e) => {
                eprintln!("error: reading the command line: {e}");
                break;
            }
        }
    }
    if keep_history && let Err(e) = editor.save_history(history) {
        eprintln!("warning: cannot save history to {}: {e}", history.display());
    }
    smol::block_on(control.services.shutdown());
}
