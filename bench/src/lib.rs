//! What the benchmark programs share: the disk anchor every figure is set beside.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sequential writes of `chunk` bytes to a preallocated file, each followed by fdatasync
/// when `sync`; returns MB/s.
pub fn raw_disk(dir: &Path, chunk: usize, sync: bool, duration: Duration) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("raw.dat");
    let _ = std::fs::remove_file(&path);
    let file = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(true)
        .open(&path)?;
    let size: u64 = 1 << 30;
    file.set_len(size)?;
    let buf = vec![0xA5u8; chunk];
    let started = Instant::now();
    let mut written = 0u64;
    while started.elapsed() < duration {
        file.write_all_at(&buf, written % (size - chunk as u64))?;
        if sync {
            file.sync_data()?;
        }
        written += chunk as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(written as f64 / secs / 1e6)
}

/// A process's anonymous resident memory (RssAnon: its heap, not file pages) in bytes.
pub fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("RssAnon in /proc/PID/status")
        * 1024
}
