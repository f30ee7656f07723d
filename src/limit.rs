//! Bandwidth limits: a token bucket shared by every transfer in one direction (uploads
//! by the file server, downloads by the transfer engine).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Burst allowed above the rate, as a fraction of a second's worth of bytes.
const BURST_SECONDS: f64 = 0.05;

/// Smallest block a limited transfer moves at once, in bytes.
const MIN_BLOCK: usize = 16 * 1024;

/// Parse a rate as users write it: `2MiB/s`, `500 kB/s`, `1000000` (bytes per second),
/// or `0`, `none`, `unlimited`. Returns bytes per second, 0 meaning no limit.
pub fn parse_rate(text: &str) -> Result<u64, BadRate> {
    let text = text.trim();
    if matches!(
        text.to_lowercase().as_str(),
        "0" | "none" | "unlimited" | "off" | ""
    ) {
        return Ok(0);
    }
    let amount = text.strip_suffix("/s").unwrap_or(text).trim();
    amount
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| BadRate(text.to_owned()))
}

/// A rate that could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rate; write it like 2MiB/s, 500kB/s or 0 for none")]
pub struct BadRate(pub String);

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

    /// Account for `bytes` moved and sleep as long as the limit asks (blocking code).
    pub fn throttle(&self, bytes: usize) {
        let wait = self.delay(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
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
        assert_eq!(parse_rate("1000"), Ok(1000));
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
