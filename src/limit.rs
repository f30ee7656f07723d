//! Bandwidth limits: a token bucket shared by every transfer in one direction (uploads
//! by the file server, downloads by the transfer engine).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Burst allowed above the rate, as a fraction of a second's worth of bytes.
const BURST_SECONDS: f64 = 0.05;

/// Smallest block a limited transfer moves at once, in bytes.
const MIN_BLOCK: usize = 16 * 1024;

/// Longest one sleep of a throttled transfer: a limit changed meanwhile, or a transfer
/// whose other end is gone, is noticed this soon (16 KiB at 5 B/s is a 55-minute debt).
const SLICE: Duration = Duration::from_millis(100);

/// Parse a rate as users write it: `2MiB/s`, `500 kB/s`, `1000B/s`, or `0`, `none`,
/// `unlimited`. Returns bytes per second, 0 meaning no limit. A bare number other than
/// 0 is refused: `limit 5` meant 5 MiB/s far more often than 5 bytes per second.
pub fn parse_rate(text: &str) -> Result<u64, BadRate> {
    parse_amount(text, "/s").map_err(|why| BadRate(text.trim().to_owned(), why))
}

/// Parse a size as users write it: `4GiB`, `500 MB`, `1000B`, or `0` (none). A bare
/// number other than 0 is refused, as for rates.
pub fn parse_size(text: &str) -> Result<u64, BadRate> {
    parse_amount(text, "").map_err(|why| BadRate(text.trim().to_owned(), why))
}

/// The bytes `text` says (an amount followed by `unit`), or why not.
fn parse_amount(text: &str, unit: &str) -> Result<u64, Why> {
    let text = text.trim();
    if matches!(
        text.to_lowercase().as_str(),
        "0" | "none" | "unlimited" | "off" | ""
    ) {
        return Ok(0);
    }
    let amount = text.strip_suffix(unit).unwrap_or(text).trim();
    if amount.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(Why::NoUnit(format!("{amount}MiB{unit}")));
    }
    amount
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| {
            let noun = if unit.is_empty() { "size" } else { "rate" };
            Why::Unreadable(format!("a {noun}; write it like 2MiB{unit}, 500kB{unit}"))
        })
}

/// Why an amount could not be read, with the example to show.
#[derive(Debug, PartialEq, Eq)]
pub enum Why {
    /// A bare number: the unit is missing.
    NoUnit(String),
    /// Not an amount at all: what it should be, with examples.
    Unreadable(String),
}

/// A rate or size that could not be read, and why.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRate(pub String, pub Why);

impl std::fmt::Display for BadRate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.1 {
            Why::NoUnit(hint) => write!(f, "{} needs a unit: {hint}? (0 means none)", self.0),
            Why::Unreadable(examples) => write!(f, "{:?} is not {examples} or 0 for none", self.0),
        }
    }
}

impl std::error::Error for BadRate {}

/// A rate for people: `2.0 MiB/s`, or `unlimited`.
pub fn show_rate(rate: u64) -> String {
    match rate {
        0 => "unlimited".into(),
        rate => format!("{}/s", bytesize::ByteSize(rate).display().iec()),
    }
}

/// A bandwidth limit in bytes per second; 0 means none. Changes apply at once to the
/// transfers already running.
#[derive(Debug)]
pub struct RateLimit {
    rate: AtomicU64,
    /// Bumped by every [`RateLimit::set`]: a throttled transfer that sees it change
    /// stops waiting off a debt counted at the old rate.
    changes: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A limit of `rate` bytes per second (0 = unlimited).
    pub fn new(rate: u64) -> Self {
        RateLimit {
            rate: AtomicU64::new(rate),
            changes: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: 0.0,
                last: Instant::now(),
            }),
        }
    }

    /// The limit in bytes per second (0 = unlimited).
    pub fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Change the limit.
    pub fn set(&self, rate: u64) {
        self.rate.store(rate, Ordering::Relaxed);
        self.changes.fetch_add(1, Ordering::Relaxed);
        let mut bucket = self.bucket.lock();
        bucket.tokens = 0.0;
        bucket.last = Instant::now();
    }

    /// How many bytes a transfer should move at once so that the limit stays smooth.
    pub fn block(&self, largest: usize) -> usize {
        match self.rate() {
            0 => largest,
            // A buffer smaller than the smallest block (a tiny file) is taken whole.
            rate => ((rate as f64 * BURST_SECONDS) as usize)
                .max(MIN_BLOCK)
                .min(largest),
        }
    }

    /// Account for `bytes` moved; returns how long to wait so that the rate holds.
    pub fn delay(&self, bytes: usize) -> Duration {
        let rate = self.rate();
        if rate == 0 {
            return Duration::ZERO;
        }
        let rate = rate as f64;
        let mut bucket = self.bucket.lock();
        let now = Instant::now();
        let refill = now.duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate * BURST_SECONDS);
        bucket.last = now;
        bucket.tokens -= bytes as f64;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rate)
        }
    }

    /// Account for `bytes` moved and sleep as long as the limit asks (blocking code), in
    /// slices: a change of the limit ends the wait at once (the debt was counted at the
    /// old rate, and `set` forgives it).
    pub fn throttle(&self, bytes: usize) {
        self.throttle_while(bytes, || true);
    }

    /// As [`RateLimit::throttle`], asking `go_on` between slices whether the transfer
    /// still has someone to send to; `false` when it said no.
    pub fn throttle_while(&self, bytes: usize, mut go_on: impl FnMut() -> bool) -> bool {
        let changes = self.changes.load(Ordering::Relaxed);
        let until = Instant::now() + self.delay(bytes);
        loop {
            let now = Instant::now();
            if now >= until || self.changes.load(Ordering::Relaxed) != changes {
                return true;
            }
            if !go_on() {
                return false;
            }
            std::thread::sleep((until - now).min(SLICE));
        }
    }
}

/// The slowest a transfer may move: a peer must move at least `min_rate` bytes per
/// second, counted over every `window` of time spent waiting on it (time spent
/// throttled, hashing or writing on our side does not count). One byte every few
/// seconds passes every single read's timeout; it does not pass this.
#[derive(Debug)]
pub struct Pace {
    min_rate: u64,
    window: Duration,
    waited: Duration,
    moved: u64,
}

/// A transfer slower than its [`Pace`] allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooSlow {
    /// Bytes moved in the window.
    pub moved: u64,
    /// The window.
    pub window: Duration,
    /// The least it had to move.
    pub needed: u64,
}

impl std::fmt::Display for TooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "only {} bytes moved in {:.1}s, below the minimum of {} (protocol.min_rate)",
            self.moved,
            self.window.as_secs_f64(),
            show_rate((self.needed as f64 / self.window.as_secs_f64().max(1e-3)) as u64)
        )
    }
}

impl Pace {
    /// At least `min_rate` bytes per second (0 = no minimum) over every `window`.
    pub fn new(min_rate: u64, window: Duration) -> Self {
        Pace {
            min_rate,
            window,
            waited: Duration::ZERO,
            moved: 0,
        }
    }

    /// Record `moved` bytes after `waited` spent waiting on the peer.
    pub fn record(&mut self, waited: Duration, moved: usize) -> Result<(), TooSlow> {
        self.waited += waited;
        self.moved += moved as u64;
        if self.waited < self.window {
            return Ok(());
        }
        let needed = (self.min_rate as f64 * self.waited.as_secs_f64()) as u64;
        let window = self.waited;
        let got = self.moved;
        self.waited = Duration::ZERO;
        self.moved = 0;
        if got < needed {
            return Err(TooSlow {
                moved: got,
                window,
                needed,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_fails_its_pace_and_a_flow_passes() {
        let mut pace = Pace::new(1000, Duration::from_secs(1));
        for _ in 0..3 {
            assert!(pace.record(Duration::from_millis(300), 1).is_ok());
        }
        let slow = pace.record(Duration::from_millis(300), 1).unwrap_err();
        assert_eq!(slow.moved, 4);
        let mut pace = Pace::new(1000, Duration::from_secs(1));
        for _ in 0..10 {
            assert!(pace.record(Duration::from_millis(300), 400).is_ok());
        }
        assert!(
            Pace::new(0, Duration::ZERO)
                .record(Duration::ZERO, 0)
                .is_ok()
        );
    }

    #[test]
    fn rates_parse_as_users_write_them() {
        assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
        assert_eq!(parse_rate("2 MiB/s"), Ok(2 << 20));
        assert_eq!(parse_rate("500kB/s"), Ok(500_000));
        assert_eq!(parse_rate("1000B/s"), Ok(1000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        let bare = parse_rate("5").unwrap_err().to_string();
        assert!(bare.contains("5 needs a unit: 5MiB/s?"), "{bare}");
        let bare = parse_size("5").unwrap_err().to_string();
        assert!(bare.contains("5 needs a unit: 5MiB?"), "{bare}");
        assert_eq!(parse_rate("unlimited"), Ok(0));
        assert!(
            parse_rate("fast")
                .unwrap_err()
                .to_string()
                .contains("2MiB/s")
        );
        assert_eq!(show_rate(2 << 20), "2.0 MiB/s");
        assert_eq!(show_rate(0), "unlimited");
    }

    /// A limited download of a file smaller than the smallest block (6 bytes under
    /// 1 MiB/s) used to panic its worker thread in `clamp`.
    #[test]
    fn a_buffer_smaller_than_a_block_is_taken_whole() {
        let limit = RateLimit::new(1 << 20);
        assert_eq!(limit.block(6), 6);
        assert_eq!(
            limit.block(1 << 30),
            (((1 << 20) as f64 * BURST_SECONDS) as usize).max(MIN_BLOCK)
        );
    }

    #[test]
    fn unlimited_never_waits() {
        let limit = RateLimit::new(0);
        assert_eq!(limit.delay(1 << 30), Duration::ZERO);
        assert_eq!(limit.block(1 << 18), 1 << 18);
    }

    #[test]
    fn debt_is_paid_in_time() {
        let limit = RateLimit::new(1_000_000);
        // A megabyte at once at a megabyte per second: about a second of debt.
        let wait = limit.delay(1_000_000);
        assert!(
            wait > Duration::from_millis(900) && wait <= Duration::from_millis(1000),
            "{wait:?}"
        );
        assert_eq!(limit.block(1 << 18), 50_000);
        limit.set(0);
        assert_eq!(limit.delay(1_000_000), Duration::ZERO);
    }
}
