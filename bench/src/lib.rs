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

/// This process's CPU time so far (user and system, every thread), from `getrusage`.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer to an rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// What the CPU did over a measurement: started with [`CpuUse::start`], read with
/// [`CpuUse::note`].
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    cpu: Duration,
    wall: Instant,
}

impl CpuUse {
    pub fn start() -> CpuUse {
        CpuUse {
            cpu: cpu_time(),
            wall: Instant::now(),
        }
    }

    /// "CPU: 1.62 of 2 cores, 4.4 ms per MB" since the start, for `mb` megabytes moved: how
    /// busy the machine's cores were, and what each MB cost the whole process.
    pub fn note(&self, mb: f64) -> String {
        let cpu = (cpu_time() - self.cpu).as_secs_f64();
        let wall = self.wall.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        format!(
            "CPU: {:.2} of {cores} cores, {:.1} ms per MB",
            cpu / wall,
            cpu * 1000.0 / mb.max(1e-9)
        )
    }
}
