//! Logging: levels from `RUST_LOG` or `[log] level`, to a file, to stderr, or (at an
//! interactive prompt) through rustyline's external printer so that a log line never
//! breaks the line being typed.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write};
use std::sync::Arc;

use parking_lot::Mutex;
use rustyline::ExternalPrinter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogConfig;
use crate::error::{Error, Result};

/// A printer that draws above the prompt.
pub type Printer = Box<dyn ExternalPrinter + Send>;

/// Install the global logger; a second call leaves the first in place.
pub fn init(config: &LogConfig, printer: Option<Printer>) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(quiet_libraries(&spec))
            .map_err(|e| Error::Config(format!("RUST_LOG {spec:?}: {e}")))?,
        _ => EnvFilter::try_new(quiet_libraries(&config.level))
            .map_err(|e| Error::Config(format!("`log.level` {:?}: {e}", config.level)))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let installed = if !config.file.as_os_str().is_empty() {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.file)
            .map_err(|e| Error::Config(format!("`log.file` {}: {e}", config.file.display())))?;
        builder
            .with_ansi(false)
            // tracing writes through a std Mutex of its own choosing.
            .with_writer(std::sync::Mutex::new(file))
            .try_init()
    } else if let Some(printer) = printer {
        builder
            .with_writer(ToPrinter(Arc::new(Mutex::new(printer))))
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init()
    };
    drop(installed);
    Ok(())
}

/// Libraries whose own log lines are internal detail (the file watcher's "unable to
/// remove watch descriptor from inotify: Os { code: 22 … }" when a shared folder goes
/// away): only their errors are shown, unless the filter names them itself.
const QUIET: &[&str] = &["notify"];

/// `spec` with the [`QUIET`] libraries held to errors, unless it names them.
fn quiet_libraries(spec: &str) -> String {
    let mut spec = spec.trim().to_owned();
    for library in QUIET {
        if !spec.contains(library) {
            spec = if spec.is_empty() {
                format!("{library}=error")
            } else {
                format!("{spec},{library}=error")
            };
        }
    }
    spec
}

/// The progress bar on the terminal now, if any: log lines are printed above it.
static BAR: Mutex<Option<indicatif::ProgressBar>> = Mutex::new(None);

/// Print log lines above `bar` while it is shown (`None`: no bar any more).
pub fn above(bar: Option<indicatif::ProgressBar>) {
    *BAR.lock() = bar;
}

#[derive(Clone)]
struct ToPrinter(Arc<Mutex<Printer>>);

/// One log event, printed whole when dropped.
struct Line {
    printer: Arc<Mutex<Printer>>,
    buf: Vec<u8>,
}

impl<'a> MakeWriter<'a> for ToPrinter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            printer: self.0.clone(),
            buf: Vec::new(),
        }
    }
}

impl Write for Line {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf).into_owned();
        let print = || {
            let mut printer = self.printer.lock();
            if printer.print(text.clone()).is_err() {
                eprint!("{text}");
            }
        };
        // A bar being drawn is taken away for the line and drawn again below it, instead
        // of the line landing in the middle of it.
        let bar = BAR.lock().clone();
        match bar {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_watcher_s_internal_lines_stay_out_of_the_log() {
        assert_eq!(quiet_libraries("info"), "info,notify=error");
        assert_eq!(quiet_libraries(""), "notify=error");
        assert_eq!(quiet_libraries("notify=debug"), "notify=debug");
        let filter = EnvFilter::try_new(quiet_libraries("info"))
            .unwrap()
            .to_string();
        assert!(filter.contains("notify=error"), "{filter}");
    }
}
