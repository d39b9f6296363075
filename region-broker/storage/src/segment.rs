//! One journal segment file: preallocated, written and synced through its [`BackendFile`],
//! read through the file's view (on the file backend, a shared memory map).
//!
//! On the file backend, writes go through the file descriptor rather than the map so that a
//! full disk surfaces as an `ENOSPC` error on the write (or on preallocation) instead of a
//! `SIGBUS`. Reads share the page cache with those writes, so a read sees every completed
//! write.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{Backend, BackendFile};

/// A segment of the journal.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Global journal position of the segment's first byte.
    pub(crate) start: u64,
    /// Bytes the file holds (its preallocated size).
    pub(crate) size: u64,
    pub(crate) path: PathBuf,
    file: Arc<dyn BackendFile>,
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
    pub(crate) fn create(
        backend: &dyn Backend,
        dir: &Path,
        start: u64,
        size: u64,
    ) -> io::Result<Segment> {
        let path = dir.join(file_name(start));
        let file = backend.create(&path, size)?;
        Segment::with_file(path, file, start)
    }

    /// Opens an existing segment.
    pub(crate) fn open(backend: &dyn Backend, path: PathBuf, start: u64) -> io::Result<Segment> {
        let file = backend.open(&path)?;
        Segment::with_file(path, file, start)
    }

    fn with_file(path: PathBuf, file: Arc<dyn BackendFile>, start: u64) -> io::Result<Segment> {
        let size = file.len();
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "segment file is empty",
            ));
        }
        Ok(Segment {
            start,
            size,
            path,
            file,
        })
    }

    /// Global position one past the segment's last byte.
    pub(crate) fn end(&self) -> u64 {
        self.start + self.size
    }

    /// Writes `buf` at the segment-relative offset `at`.
    pub(crate) fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()> {
        debug_assert!(at + buf.len() as u64 <= self.size);
        self.file.write_at(at, buf)
    }

    /// Flushes written data to the disk.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Whether a `syncfs` of the data filesystem makes this segment durable.
    pub(crate) fn on_filesystem(&self) -> bool {
        self.file.on_filesystem()
    }

    /// The bytes from segment-relative offset `at` to the end of the segment (on the file
    /// backend, a slice of the map: no copy).
    pub(crate) fn tail(&self, at: u64) -> Bytes {
        self.file.view().slice(at as usize..)
    }

    /// Zeroes `[at, end)` wherever it is not zero already, then syncs. Used to cut a torn or
    /// truncated tail so that stale records can never reappear after later appends.
    pub(crate) fn zero_from(&self, at: u64) -> io::Result<()> {
        const CHUNK: usize = 64 * 1024;
        let zeros = vec![0u8; CHUNK];
        let data = self.file.view();
        let mut from = at;
        // Only where the file may hold data: the never-written rest of a preallocated
        // segment is skipped, not read.
        while let Some((start, end)) = self.file.data_after(from)? {
            let end = (end as usize).min(data.len());
            let mut pos = start as usize;
            while pos < end {
                let chunk_end = (pos + CHUNK).min(end);
                // Slice comparison is a memcmp.
                if data[pos..chunk_end] != zeros[..chunk_end - pos] {
                    self.file.write_at(pos as u64, &zeros[..chunk_end - pos])?;
                }
                pos = chunk_end;
            }
            if end as u64 <= from {
                break;
            }
            from = end as u64;
        }
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FileBackend;

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
        let seg = Segment::create(&FileBackend, dir.path(), 4096, 8192).unwrap();
        seg.write_at(100, b"hello").unwrap();
        // Past a stretch never written (unwritten extents of the preallocated file).
        seg.write_at(8000, b"world").unwrap();
        assert_eq!(&seg.tail(100)[..5], b"hello");
        assert_eq!(seg.end(), 4096 + 8192);
        seg.zero_from(102).unwrap();
        assert_eq!(&seg.tail(100)[..5], b"he\0\0\0");
        assert!(
            seg.tail(102).iter().all(|&b| b == 0),
            "bytes left past the cut"
        );
        let again = Segment::open(&FileBackend, seg.path.clone(), 4096).unwrap();
        assert_eq!(&again.tail(100)[..3], b"he\0");
    }
}
