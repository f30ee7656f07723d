//! The uploader's log: one line per upload, however many ranges the downloader asks for
//! (issue 13: a 2 GiB download logged 500 lines, one per run of chunks).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Got, get_on, start_file_server, wait_until};
use parking_lot::Mutex;

/// Everything logged by this test binary.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, containing: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock())
            .lines()
            .filter(|l| l.contains(containing))
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn one_upload_is_one_log_line_whatever_its_ranges() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let contents = vec![5u8; 64 * 1024];
    let server = start_file_server(&[("song.ogg", &contents)]);
    let mut raw = server.connect();
    for i in 0..16u64 {
        let got = get_on(&mut raw, "song.ogg", i * 4096, Some(4096));
        assert!(matches!(got, Got::Data { .. }), "{got:?}");
    }
    drop(raw);
    wait_until("the upload is logged", Duration::from_secs(5), || {
        !captured.lines("uploaded song.ogg").is_empty()
    });
    let lines = captured.lines("song.ogg");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("(64.00 KiB, 16 ranges)"), "{}", lines[0]);
}
