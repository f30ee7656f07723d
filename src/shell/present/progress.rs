//! Progress of long work: bars on a terminal, one line that fits 60 columns (the name
//! gives way, cut with "…"), log lines printed above it instead of through it, a rate and
//! ETA over the bytes of this run only (a resume's bytes already there are not a burst of
//! speed), and "stalled" when no peer is sending; and, with `--json --progress`, a
//! download's progress records on stdout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, ProgressBar, ProgressState, ProgressStyle};
use parking_lot::Mutex;

use super::records::{Record, json_line};
use crate::download::Status;
use crate::protocol::FileEntry;

/// A download's progress callback.
pub type Callback = Arc<dyn Fn(u64) + Send + Sync>;

/// No byte for this long, and a download shows "stalled".
const STALL_AFTER: Duration = Duration::from_secs(2);

/// How often a bar is redrawn when nothing arrives (so that "stalled" shows).
const TICK: Duration = Duration::from_millis(250);

/// The bar's line: the name takes what the rest leaves (at least a few characters at 60
/// columns), the rest is at most 47 characters.
const TEMPLATE: &str = "{wide_msg} {bar:10} {percent:>3}% {binary_bytes_per_sec:>11} {state}";

/// A progress bar that disappears when dropped, however its command ends; while it is
/// shown, log lines are printed above it.
pub struct Bar(ProgressBar);

impl std::ops::Deref for Bar {
    type Target = ProgressBar;

    fn deref(&self) -> &ProgressBar {
        &self.0
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        crate::logging::above(None);
        self.0.finish_and_clear();
    }
}

/// What a download's bar shows after its rate: peers and ETA, or that it stalled.
fn state_text(eta: Duration, peers: Option<usize>, quiet_for: Duration) -> String {
    let stalled = peers == Some(0) || quiet_for >= STALL_AFTER;
    match (stalled, peers) {
        (true, Some(0)) => "stalled: no peer sending".into(),
        (true, _) => format!("stalled for {}", HumanDuration(quiet_for)),
        (false, Some(1)) => format!("1 peer, eta {}", HumanDuration(eta)),
        (false, Some(n)) => format!("{n} peers, eta {}", HumanDuration(eta)),
        (false, None) => format!("eta {}", HumanDuration(eta)),
    }
}

/// A bar over `total` bytes named `what`; with `status`, it shows the download's peers
/// and stalls. `last` is when bytes last arrived (milliseconds after `born`).
fn bar(
    total: u64,
    what: &str,
    status: Option<Arc<Status>>,
    (born, last): (Instant, Arc<AtomicU64>),
) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(TEMPLATE)
        .expect("a valid progress template")
        .progress_chars("=> ")
        .with_key(
            "state",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let peers = status.as_ref().map(|s| s.peers.load(Ordering::Relaxed));
                let since = Duration::from_millis(last.load(Ordering::Relaxed));
                let quiet = born.elapsed().saturating_sub(since);
                let _ = w.write_str(&state_text(state.eta(), peers, quiet));
            },
        );
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// The callback a download reports its bytes to: the first call carries the bytes a
/// resume found already there, which move the bar without counting as speed.
fn download_progress(
    bar: ProgressBar,
    last: (Instant, Arc<AtomicU64>),
) -> Arc<dyn Fn(u64) + Send + Sync> {
    let first = std::sync::atomic::AtomicBool::new(true);
    let (born, at) = last;
    Arc::new(move |n: u64| {
        if first.swap(false, Ordering::Relaxed) {
            bar.set_position(n);
            bar.reset_eta();
        } else {
            bar.inc(n);
        }
        at.store(born.elapsed().as_millis() as u64, Ordering::Relaxed);
    })
}

/// Least time between two progress records of one download.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How this shell shows the progress of long work.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    /// Draw bars on stderr (a terminal, and not `--json`).
    pub bars: bool,
    /// Print a download's progress records on stdout (`--json --progress`).
    pub records: bool,
}

impl Progress {
    /// A bar over `total` bytes named `what` (hidden unless bars are shown).
    pub fn bar(&self, total: u64, what: &str) -> Bar {
        self.bar_for(total, what, None).0
    }

    /// A download's bar and the callback that moves it (and prints its records).
    pub fn download(&self, file: &FileEntry, status: Arc<Status>) -> (Bar, Callback) {
        let (bar, last) = self.bar_for(file.size, &file.name, Some(status));
        let mut progress = download_progress(bar.0.clone(), last);
        if self.records {
            progress = records(file, progress);
        }
        (bar, progress)
    }

    fn bar_for(
        &self,
        total: u64,
        what: &str,
        status: Option<Arc<Status>>,
    ) -> (Bar, (Instant, Arc<AtomicU64>)) {
        let last = (Instant::now(), Arc::new(AtomicU64::new(0)));
        if !self.bars {
            return (Bar(ProgressBar::hidden()), last);
        }
        let bar = bar(total, what, status, last.clone());
        bar.enable_steady_tick(TICK);
        crate::logging::above(Some(bar.clone()));
        (Bar(bar), last)
    }
}

/// A download's progress callback that also prints a progress record on stdout at most
/// every [`PROGRESS_EVERY`], and when the last byte arrives.
fn records(file: &FileEntry, inner: Callback) -> Callback {
    let (name, size) = (file.name.clone(), file.size);
    let state = Mutex::new((0u64, None::<Instant>));
    Arc::new(move |n: u64| {
        inner(n);
        let mut state = state.lock();
        state.0 += n;
        let due = state.1.is_none_or(|at| at.elapsed() >= PROGRESS_EVERY);
        if due || state.0 >= size {
            state.1 = Some(Instant::now());
            let record = Record::Progress {
                name: name.clone(),
                done: state.0.min(size),
                size,
            };
            say!("{}", json_line(&record));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resume's bytes already there move the bar but are not a rate: before, 1 GiB
    /// "arrived" at once and the bar showed GiB/s and "eta 1s" under a 50 MiB/s cap.
    #[test]
    fn a_resume_s_bytes_are_no_burst_of_speed() {
        let bar = ProgressBar::hidden();
        bar.set_length(2 << 30);
        let progress = download_progress(bar.clone(), (Instant::now(), Arc::default()));
        progress(1 << 30);
        assert_eq!(bar.position(), 1 << 30);
        assert!(bar.per_sec() < 1.0, "{} B/s", bar.per_sec());
        progress(4096);
        assert_eq!(bar.position(), (1 << 30) + 4096);
    }

    #[test]
    fn a_download_without_peers_or_bytes_shows_stalled() {
        let eta = Duration::from_secs(3);
        assert_eq!(
            state_text(eta, Some(0), Duration::ZERO),
            "stalled: no peer sending"
        );
        assert_eq!(
            state_text(eta, Some(2), Duration::from_secs(5)),
            "stalled for 5 seconds"
        );
        assert_eq!(
            state_text(eta, Some(2), Duration::ZERO),
            "2 peers, eta 3 seconds"
        );
    }

    /// A terminal of 60 columns that keeps what is drawn on it.
    #[derive(Debug, Clone, Default)]
    struct Narrow(Arc<parking_lot::Mutex<Vec<String>>>);

    impl indicatif::TermLike for Narrow {
        fn width(&self) -> u16 {
            60
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().push(s.to_owned());
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().push(s.to_owned());
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// At 60 columns the bar is one line (a long name gives way), so that clearing it
    /// leaves nothing behind.
    #[test]
    fn the_bar_fits_sixty_columns() {
        let term = Narrow::default();
        let status = Arc::new(Status::default());
        status.peers.store(12, Ordering::Relaxed);
        let name = "a very long file name from a live concert recording.ogg";
        let last = (Instant::now(), Arc::new(AtomicU64::new(0)));
        let shown = bar(3 << 30, name, Some(status), last);
        shown.set_draw_target(indicatif::ProgressDrawTarget::term_like_with_hz(
            Box::new(term.clone()),
            100,
        ));
        shown.set_position(1 << 30);
        shown.tick();
        let drawn = term.0.lock().clone();
        let lines: Vec<&str> = drawn
            .iter()
            .flat_map(|d| d.lines())
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert!(!lines.is_empty(), "nothing drawn");
        for line in lines {
            assert!(
                line.chars().count() <= 60,
                "{} columns: {line}",
                line.chars().count()
            );
            assert!(line.contains("12 peers"), "{line}");
        }
    }
}
