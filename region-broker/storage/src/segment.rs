//! One journal segment file: preallocated, written with `pwrite`, read through a shared
//! memory map.
//!
//! Writes go through the file descriptor rather than the map so that a full disk surfaces as
//! an `ENOSPC` error on the write (or on preallocation) instead of a `SIGBUS`. Reads share the
//! page cache with those writes, so a read sees every completed write.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

/// A segment of the journal.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Global journal position of the segment's first byte.
    pub(crate) start: u64,
    /// Bytes the file holds (its preallocated size).
    pub(crate) size: u64,
    pub(crate) path: PathBuf,
    file: File,
    /// The whole file, mapped; slices of it are handed out without copying.
    bytes: Bytes,
}

/// The file name of the segment starting at `start`.
pub(crate) fn file_name(start: u64) -> String {
    format!("{start:020}.log")
}

/// Parses a segment file name back into its start position.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl Segment {
    /// Creates and preallocates a new segment of `size` bytes.
    pub(crate) fn create(dir: &Path, start: u64, size: u64) -> io::Result<Segment> {
        let path = dir.join(file_name(start));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        if let Err(e) = preallocate(&file, size) {
            // Leave no half-made segment behind: the journal would have to recover it.
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        file.sync_all()?;
        sync_dir(dir)?;
        Segment::map(path, file, start)
    }

    /// Opens an existing segment.
    pub(crate) fn open(path: PathBuf, start: u64) -> io::Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Segment::map(path, file, start)
    }

    fn map(path: PathBuf, file: File, start: u64) -> io::Result<Segment> {
        let size = file.metadata()?.len();
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "segment file is empty",
            ));
        }
        // SAFETY: the file is only ever written through `write_at` of this process and never
        // shrunk while mapped (truncation zeroes bytes; whole files are unlinked, which keeps
        // the mapping valid), so the mapped memory stays valid for the map's lifetime.
        let map = unsafe { Mmap::map(&file)? };
        let bytes = Bytes::from_owner(MapOwner(Arc::new(map)));
        Ok(Segment {
            start,
            size,
            path,
            file,
            bytes,
        })
    }

    /// Global position one past the segment's last byte.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Writes `buf` at the segment-relative offset `at`.
    pub(crate) fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()> {
        debug_assert!(at + buf.len() as u64 <= self.size);
        self.file.write_all_at(buf, at)
    }

    /// Flushes written data to the disk.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// The bytes from segment-relative offset `at` to the end of the segment.
    pub(crate) fn tail(&self, at: u64) -> Bytes {
        self.bytes.slice(at as usize..)
    }

    /// Zeroes `[at, end)` wherever it is not zero already, then syncs. Used to cut a torn or
    /// truncated tail so that stale records can never reappear after later appends.
    pub(crate) fn zero_from(&self, at: u64) -> io::Result<()> {
        const CHUNK: usize = 64 * 1024;
        let zeros = vec![0u8; CHUNK];
        let mut pos = at as usize;
        let data = &self.bytes;
        while pos < data.len() {
            let end = (pos + CHUNK).min(data.len());
            // Slice comparison is a memcmp: scanning a mostly empty 128 MiB segment at open
            // stays cheap even in an unoptimized build.
            if data[pos..end] != zeros[..end - pos] {
                self.file.write_all_at(&zeros[..end - pos], pos as u64)?;
            }
            pos = end;
        }
        self.file.sync_data()
    }
}

struct MapOwner(Arc<Mmap>);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Reserves `size` bytes on disk so that the disk filling up shows when a segment is made,
/// not in the middle of a write. Falls back to a sparse file where the filesystem cannot
/// preallocate.
fn preallocate(file: &File, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on an owned, open descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
    match rc {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(size),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Flushes every dirty page of the filesystem holding `path` (`syncfs(2)`).
pub(crate) fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = File::open(path)?;
    // SAFETY: plain syscall on an owned, open descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes a directory's entries (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(file_name(134217728), "00000000000134217728.log");
        assert_eq!(parse_file_name("00000000000134217728.log"), Some(134217728));
        assert_eq!(parse_file_name("134217728.log"), None);
        assert_eq!(parse_file_name("0000000000013421772x.log"), None);
    }

    #[test]
    fn write_read_zero() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 4096, 8192).unwrap();
        seg.write_at(100, b"hello").unwrap();
        assert_eq!(&seg.tail(100)[..5], b"hello");
        assert_eq!(seg.end(), 4096 + 8192);
        seg.zero_from(102).unwrap();
        assert_eq!(&seg.tail(100)[..5], b"he\0\0\0");
        let again = Segment::open(seg.path.clone(), 4096).unwrap();
        assert_eq!(&again.tail(100)[..3], b"he\0");
    }
}
