//! The hash cache: registering unchanged files again reads none of their contents
//! (proved with the kernel's count of bytes this process read), and a changed file is
//! never taken for its old self. One test in its own binary, so that no other test's
//! reads are counted.

use std::path::Path;
use std::process::Command;

use napster::digest::digest_bytes;
use napster::peer::cache::HashCache;
use napster::peer::share::{self, Ignore};
use parking_lot::Mutex;

/// Bytes this process has read through `read` and friends, from `/proc/self/io`.
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar")
}

fn register(dir: &Path, cache_file: &Path) -> (share::Share, napster::peer::scan::HashStats) {
    let cache = Mutex::new(HashCache::load(cache_file));
    let listing = napster::peer::scan::scan_roots(&[dir.to_owned()], &Ignore::default()).unwrap();
    let result = listing.hash_with(&cache, &|_| {}).unwrap();
    cache.into_inner().save();
    result
}

#[test]
fn unchanged_files_are_never_read_again_and_changed_ones_always_are() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("share");
    std::fs::create_dir(&dir).unwrap();
    let cache_file = tmp.path().join("hashes.json");
    let files = 2_000;
    let mut total = 0u64;
    for i in 0..files {
        let body = vec![(i % 251) as u8; 16 * 1024 + i];
        total += body.len() as u64;
        std::fs::write(dir.join(format!("track{i:04}.ogg")), body).unwrap();
    }

    let (first, stats) = register(&dir, &cache_file);
    assert_eq!(stats.hashed_files, files);
    assert_eq!(stats.hashed_bytes, total);
    assert_eq!(first.len(), files);

    // A restart: a new cache loaded from its file, the same folder.
    let before = bytes_read();
    let (second, stats) = register(&dir, &cache_file);
    let read = bytes_read() - before;
    assert_eq!(stats.hashed_files, 0, "{stats:?}");
    assert_eq!(stats.cached_files, files);
    assert_eq!(second.entries(), first.entries());
    let cache_size = std::fs::metadata(&cache_file).unwrap().len();
    // Reading the cache file (and directory listings) is all: far less than the files.
    assert!(
        read < cache_size + 1024 * 1024 && read < total / 4,
        "read {read} bytes; the files hold {total}, the cache {cache_size}"
    );

    // Same size, new contents, and the modification time put back as it was: the
    // status-change time still gives it away.
    let victim = dir.join("track0007.ogg");
    let old_mtime = std::fs::metadata(&victim).unwrap().modified().unwrap();
    let new_body = vec![0xEE; 16 * 1024 + 7];
    std::fs::write(&victim, &new_body).unwrap();
    let stamp = old_mtime.duration_since(std::time::UNIX_EPOCH).unwrap();
    let touched = Command::new("touch")
        .arg("-m")
        .arg("-d")
        .arg(format!("@{}.{:09}", stamp.as_secs(), stamp.subsec_nanos()))
        .arg(&victim)
        .status()
        .unwrap();
    assert!(touched.success());
    assert_eq!(
        std::fs::metadata(&victim).unwrap().modified().unwrap(),
        old_mtime
    );
    let (third, stats) = register(&dir, &cache_file);
    assert_eq!(
        stats.hashed_files, 1,
        "exactly the changed file is read again"
    );
    let entry = third
        .entries()
        .into_iter()
        .find(|e| e.name == "track0007.ogg")
        .unwrap();
    assert_eq!(entry.sha256, digest_bytes(&new_body).sha256);
}
