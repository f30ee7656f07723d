//! The read loops: a `rustyline` prompt on a terminal, plain lines from a pipe; and the
//! signals: Ctrl-C cancels the running command at a prompt, while SIGTERM (and SIGINT
//! when scripted) withdraws this peer's files, stops the servers and exits.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_signal::{Signal, Signals};
use rustyline::error::ReadlineError;
use rustyline::{CompletionType, Editor};
use smol::channel::{Receiver, Sender};
use smol::future::FutureExt;
use smol::stream::StreamExt;

use super::commands;
use super::editor::NapsterHelper;
use super::services::Services;
use super::{Flow, Shell};
use crate::config::Config;
use crate::download::Cancel;
use crate::error::{Error, Result};
use crate::logging;

/// The prompt.
const PROMPT: &str = "napster> ";

/// How long a cancelled command may take to stop cleanly.
const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Flags shared between the read loop and the signal watcher.
struct Control {
    services: Arc<Services>,
    busy: AtomicBool,
    failed: AtomicBool,
    interrupts: Sender<()>,
    interactive: bool,
}

impl Control {
    fn exit_code(&self) -> i32 {
        i32::from(self.failed.load(Ordering::SeqCst))
    }
}

/// Run the shell on stdin until `quit`, end of input or a signal; returns the exit code.
pub fn run(config: Config) -> i32 {
    // Connections are bounded by the configured limits, not by a low default `ulimit -n`.
    crate::net::raise_fd_limit();
    let interactive = std::io::stdin().is_terminal();
    let services = Arc::new(Services::default());
    let (interrupts, interrupted) = smol::channel::unbounded();
    let control = Arc::new(Control {
        services: services.clone(),
        busy: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        interrupts,
        interactive,
    });
    if let Err(e) = watch_signals(control.clone()) {
        eprintln!("error: cannot watch signals: {e}");
        return 1;
    }
    let show_progress = interactive && std::io::stderr().is_terminal();
    let mut shell = Shell::new(config.clone(), services, show_progress);
    if interactive {
        interactive_loop(&mut shell, &config, &control, &interrupted);
    } else {
        if let Err(e) = logging::init(&config.log, None) {
            eprintln!("error: {e}");
            return 2;
        }
        script_loop(&mut shell, &control, &interrupted);
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
                    eprintln!("napster: shutting down (withdrawing shared files)");
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
    while interrupted.try_recv().is_ok() {}
    let cancel = Cancel::default();
    control.busy.store(true, Ordering::SeqCst);
    let mut running = Box::pin(shell.execute(command, cancel.clone()));
    // The text of a command that finished is printed; one cut short prints nothing.
    let first = smol::block_on(async { (&mut running).await.map(Some) }.or(async {
        let _ = interrupted.recv().await;
        Ok(None)
    }));
    let result = match first {
        Ok(Some(reply)) => {
            say!("{}", reply.text);
            Ok(reply.flow)
        }
        Err(e) => Err(e),
        // Ctrl-C: ask the command to stop, and give it a moment to put things in order
        // (a download saves what arrived) before the prompt comes back.
        Ok(None) => {
            cancel.cancel();
            smol::block_on((&mut running).or(async {
                smol::Timer::after(CANCEL_GRACE).await;
                Err(Error::Cancelled)
            }))
            .and(Err::<Flow, _>(Error::Cancelled))
        }
    };
    control.busy.store(false, Ordering::SeqCst);
    result
}

fn report(result: Result<Flow>, control: &Control) -> Flow {
    match result {
        Ok(flow) => flow,
        Err(e) => {
            eprintln!("error: {e}");
            control.failed.store(true, Ordering::SeqCst);
            Flow::Continue
        }
    }
}

fn script_loop(shell: &mut Shell, control: &Control, interrupted: &Receiver<()>) {
    let stdin = std::io::stdin();
    let mut quit = false;
    for line in stdin.lock().lines() {
        let line = match line {
            Ok(line) => line,
            Err(e) => {
                eprintln!("error: reading the script: {e}");
                control.failed.store(true, Ordering::SeqCst);
                break;
            }
        };
        if report(run_line(shell, &line, control, interrupted), control) == Flow::Quit {
            quit = true;
            break;
        }
    }
    // Background downloads stop with the script (they resume at the next `get`); only
    // servers keep the process alive.
    if quit || !control.services.is_serving() {
        smol::block_on(control.services.shutdown());
        return;
    }
    eprintln!("napster: end of input; serving until SIGINT or SIGTERM");
    // The signal watcher shuts down and exits.
    loop {
        std::thread::park();
    }
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
    editor.set_helper(Some(NapsterHelper::new(shell.last_names())));
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
    loop {
        match editor.readline(PROMPT) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if report(run_line(shell, &line, control, interrupted), control) == Flow::Quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => say!("^C (type `quit` to leave)\n"),
            Err(ReadlineError::Eof) => break,
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
