//! The parts of a download measured alone, in CPU seconds per GiB of this thread (or of
//! the raw server), so that each side of the napster download can be set next to the sum
//! of what it has to do: receive, decrypt, write and hash on the downloader; read, encrypt
//! and send on the file server.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use napster::identity::Identity;
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};

use super::{BLOCK, BoxError, GIB, cpu_time, stat_cpu};

/// Plaintext handed to rustls at a time (it cuts it into 16 KiB records).
const TLS_BLOCK: usize = 1 << 20;

/// Bytes encrypted before they are decrypted, so that neither step waits on the other.
const TLS_ROUND: usize = 64 << 20;

/// CPU seconds per GiB of each part.
pub struct Parts {
    /// TCP receive of the bytes, discarded (this process).
    pub receive: f64,
    /// Reading the file from the page cache and sending it over TCP (the raw server).
    pub read_send: Option<f64>,
    pub encrypt: f64,
    pub decrypt: f64,
    /// Writing a new file from memory in 256 KiB pieces (as the download does).
    pub write: f64,
    /// SHA-256 of bytes in memory.
    pub hash: f64,
}

/// CPU time this thread has used so far (in ticks, so only sums over many steps are
/// precise: each tick goes to whoever runs).
fn thread_cpu() -> Duration {
    stat_cpu("/proc/thread-self/stat").unwrap_or_default()
}

fn per_gib(spent: Duration, bytes: u64) -> f64 {
    spent.as_secs_f64() * GIB / bytes as f64
}

/// Measure every part for `bytes` bytes; `raw` is the raw TCP server (pid `raw_pid`),
/// `dir` a folder for the written file.
pub fn measure(bytes: u64, raw: SocketAddr, raw_pid: u32, dir: &Path) -> Result<Parts, BoxError> {
    let (receive, read_send) = receive(raw, raw_pid, bytes)?;
    let (encrypt, decrypt) = tls(bytes)?;
    Ok(Parts {
        receive,
        read_send,
        encrypt,
        decrypt,
        write: write(&dir.join("parts-write.bin"), bytes)?,
        hash: hash(bytes),
    })
}

/// The raw server's file, received and thrown away.
fn receive(raw: SocketAddr, raw_pid: u32, bytes: u64) -> Result<(f64, Option<f64>), BoxError> {
    let server_before = cpu_time(raw_pid);
    let before = thread_cpu();
    let mut socket = TcpStream::connect(raw)?;
    let mut buf = vec![0u8; BLOCK];
    let mut received = 0u64;
    loop {
        let n = socket.read(&mut buf)?;
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    let spent = thread_cpu() - before;
    if received != bytes {
        return Err(format!("the raw receive got {received} bytes of {bytes}").into());
    }
    // The server counts its CPU when it has closed; this process saw the close.
    let server = cpu_time(raw_pid)
        .zip(server_before)
        .map(|(after, before)| per_gib(after.saturating_sub(before), bytes));
    Ok((per_gib(spent, bytes), server))
}

/// A TLS 1.3 connection in memory, with napster's configurations: both ends in this
/// thread, the handshake done.
fn tls_pair() -> Result<(rustls::Connection, rustls::Connection), BoxError> {
    let server_config = napster::tls::server_config(&Identity::ephemeral());
    let (client_config, _) = napster::tls::client_config(&Identity::ephemeral(), None);
    let name = ServerName::try_from(napster::tls::SERVER_NAME)?.to_owned();
    let mut client =
        rustls::Connection::Client(rustls::ClientConnection::new(client_config, name)?);
    let mut server = rustls::Connection::Server(rustls::ServerConnection::new(server_config)?);
    while client.is_handshaking() || server.is_handshaking() {
        let mut wire = Vec::new();
        pass(&mut client, &mut server, &mut wire)?;
        pass(&mut server, &mut client, &mut wire)?;
    }
    Ok((client, server))
}

/// Move what `from` has to send into `to`.
fn pass(
    from: &mut rustls::Connection,
    to: &mut rustls::Connection,
    wire: &mut Vec<u8>,
) -> Result<(), BoxError> {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire)?;
    }
    let mut rest = &wire[..];
    while !rest.is_empty() {
        to.read_tls(&mut rest)?;
        to.process_new_packets()?;
    }
    Ok(())
}

/// rustls encrypting `bytes` (as a file server does, 1 MiB at a time) and decrypting
/// them into a buffer (as a downloader does).
fn tls(bytes: u64) -> Result<(f64, f64), BoxError> {
    let (mut client, mut server) = tls_pair()?;
    server.set_buffer_limit(None);
    let plain = vec![0x5au8; TLS_BLOCK];
    let mut out = vec![0u8; BLOCK];
    let mut wire = Vec::with_capacity(TLS_ROUND + TLS_ROUND / 64);
    let (mut encrypt, mut decrypt) = (Duration::ZERO, Duration::ZERO);
    let mut left = bytes;
    while left > 0 {
        let round = left.min(TLS_ROUND as u64);
        let started = thread_cpu();
        wire.clear();
        let mut sent = 0;
        while sent < round {
            let n = (round - sent).min(TLS_BLOCK as u64) as usize;
            server.writer().write_all(&plain[..n])?;
            while server.wants_write() {
                server.write_tls(&mut wire)?;
            }
            sent += n as u64;
        }
        let between = thread_cpu();
        encrypt += between - started;
        let mut rest = &wire[..];
        let mut got = 0u64;
        while !rest.is_empty() {
            client.read_tls(&mut rest)?;
            client.process_new_packets()?;
            loop {
                match client.reader().read(&mut out) {
                    Ok(0) => break,
                    Ok(n) => got += n as u64,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        decrypt += thread_cpu() - between;
        if got != round {
            return Err(format!("decrypted {got} bytes of {round}").into());
        }
        left -= round;
    }
    Ok((per_gib(encrypt, bytes), per_gib(decrypt, bytes)))
}

/// A new file written from memory in the download's pieces, then removed.
fn write(path: &Path, bytes: u64) -> Result<f64, BoxError> {
    let piece = vec![0xa5u8; BLOCK];
    let before = thread_cpu();
    let mut file = File::create(path)?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        file.write_all(&piece[..n])?;
        left -= n as u64;
    }
    drop(file);
    let spent = thread_cpu() - before;
    std::fs::remove_file(path)?;
    Ok(per_gib(spent, bytes))
}

/// SHA-256 of `bytes` from a buffer in memory.
fn hash(bytes: u64) -> f64 {
    let block = vec![0x3cu8; TLS_BLOCK];
    let before = thread_cpu();
    let mut hasher = Sha256::new();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(TLS_BLOCK as u64) as usize;
        hasher.update(&block[..n]);
        left -= n as u64;
    }
    std::hint::black_box(hasher.finalize());
    per_gib(thread_cpu() - before, bytes)
}

/// Print the parts next to what each side of the napster download measured; returns the
/// sums of the parts (downloader, server).
pub fn print(runs: &[Parts], napster: &[super::Sample], bytes: u64) -> (f64, f64) {
    let median = |pick: fn(&Parts) -> Option<f64>| -> f64 {
        let mut v: Vec<f64> = runs.iter().filter_map(pick).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let receive = median(|p| Some(p.receive));
    let decrypt = median(|p| Some(p.decrypt));
    let write = median(|p| Some(p.write));
    let hash = median(|p| Some(p.hash));
    let read_send = median(|p| p.read_send);
    let encrypt = median(|p| Some(p.encrypt));
    let client = receive + decrypt + write + hash;
    let server = read_send + encrypt;
    let measured = |pick: fn(&super::Sample) -> Option<Duration>| {
        super::show(super::median(napster.iter().map(pick).collect()), bytes)
    };
    println!();
    println!(
        "{:<38} {:>10} {:>8}",
        "CPU s per GiB, parts alone (median)", "downloader", "server"
    );
    let row = |name: &str, client: Option<f64>, server: Option<f64>| {
        let cell = |x: Option<f64>| x.map_or_else(String::new, |x| format!("{x:.3}"));
        println!("{name:<38} {:>10} {:>8}", cell(client), cell(server));
    };
    row("receive (TCP, bytes discarded)", Some(receive), None);
    row("decrypt (rustls, AES-128-GCM)", Some(decrypt), None);
    row("write (new file, 256 KiB pieces)", Some(write), None);
    row("hash (SHA-256 from memory)", Some(hash), None);
    row("read + send (raw TCP server)", None, Some(read_send));
    row("encrypt (rustls, AES-128-GCM)", None, Some(encrypt));
    row("sum of the parts", Some(client), Some(server));
    println!(
        "{:<38} {:>10} {:>8}",
        "napster TLS download, measured",
        measured(|s| s.client_cpu),
        measured(|s| s.server_cpu)
    );
    (client, server)
}
