//! The I/O seam of a log group: every file it keeps (journal segments, queue-index files,
//! the checkpoint) is created, opened, listed, renamed and removed through a [`Backend`], and
//! written, synced and read through the [`BackendFile`] it hands out.
//!
//! Two kinds of file: a segment is made by [`Backend::create`], preallocated and never
//! written past its end; index files and the checkpoint are opened with
//! [`Backend::open_growable`], grow by writing and shrink with [`BackendFile::set_len`].
//!
//! - [`FileBackend`] is the real one: `pwrite`, `fdatasync`, a read-only memory map of each
//!   segment whose `Bytes` slices readers get without a copy, `pread` for growable files, and
//!   one `syncfs` for [`Backend::sync_all`].
//! - [`MemoryBackend`] keeps files in memory, each with the image it had at its last sync,
//!   and directory entries as of their directory's last sync (`memory.rs`).
//! - [`FaultyBackend`] wraps a memory backend to inject faults: fail the Nth write or sync
//!   (of any file, or of files under a path), report a full disk, let the power fail at the
//!   Nth durability point, and cut the power (`faulty.rs`).
//!
//! A group on a memory backend touches no real file: its directory need not exist.

mod faulty;
mod memory;

use std::fmt::Debug;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use memmap2::Mmap;

pub use faulty::FaultyBackend;
pub use memory::MemoryBackend;

/// Where a log group's files live.
pub trait Backend: Debug + Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the entries (files and directories) directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Creates a new file of `size` zero bytes, reserved on disk, durable with its directory
    /// entry; fails if it exists. A failed create leaves no file behind.
    fn create(&self, path: &Path, size: u64) -> io::Result<Arc<dyn BackendFile>>;
    /// Opens an existing file made by [`Backend::create`] for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>>;
    /// Opens a growable file for reading and writing, creating it empty if missing (a new
    /// entry is durable after [`Backend::sync_dir`]). It is neither preallocated nor mapped:
    /// it grows by writing, changes size with [`BackendFile::set_len`], and is read with
    /// [`BackendFile::read_at`].
    fn open_growable(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>>;
    /// Removes a file (durable after [`Backend::sync_dir`]).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Removes `dir` and everything under it; a missing `dir` is no error (durable after a
    /// [`Backend::sync_dir`] of its parent or a [`Backend::sync_all`] above it).
    fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Renames a file, atomically replacing `to` (durable after a [`Backend::sync_dir`] of
    /// the directory: until then a power cut leaves the old names).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Makes every file under `dir` durable, contents and directory entries, at once. On the
    /// file backend one `syncfs(2)` of the filesystem holding `dir` (with thousands of index
    /// files far cheaper than an fsync each; it also flushes the rest of that filesystem,
    /// which on a broker's data disk is its own); on the others a sync of each file under it.
    fn sync_all(&self, dir: &Path) -> io::Result<()>;
}

/// One open file of a [`Backend`].
pub trait BackendFile: Debug + Send + Sync {
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes all of `buf` at byte `at`. A segment is never written past its end; a growable
    /// file grows (a gap reads as zeros).
    fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()>;
    /// Fills `buf` from byte `at`; fails if the file ends first.
    fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let view = self.view();
        let at = usize::try_from(at).map_err(io::Error::other)?;
        match view.get(at..at + buf.len()) {
            Some(bytes) => {
                buf.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
    /// Truncates or zero-extends a growable file to `len` bytes (durable after
    /// [`BackendFile::sync_data`]); segments keep their size and refuse.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes every completed write (and size change) durable.
    fn sync_data(&self) -> io::Result<()>;
    /// The whole file's contents. On the file backend a segment's view is a map that later
    /// writes show through, handed out without a copy; otherwise a snapshot as of the call.
    fn view(&self) -> Bytes;
    /// Whether a `syncfs` of the data filesystem makes this file durable (true only for
    /// real files); a [`crate::SyncBatcher`] syncs the others one by one.
    fn on_filesystem(&self) -> bool {
        false
    }
    /// The first stretch `[start, end)` at or after `from` that may hold bytes other than
    /// zeros; `None` if none does. By default the whole rest of the file.
    fn data_after(&self, from: u64) -> io::Result<Option<(u64, u64)>> {
        Ok((from < self.len()).then(|| (from, self.len())))
    }
}

/// Real files: `pwrite`, `fdatasync`, reads through a shared read-only map.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileBackend;

impl Backend for FileBackend {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::read_dir(dir)?
            .map(|e| e.map(|e| e.path()))
            .collect()
    }

    fn create(&self, path: &Path, size: u64) -> io::Result<Arc<dyn BackendFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(e) = preallocate(&file, size) {
            // Leave no half-made file behind: the journal would have to recover it.
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(Arc::new(MappedFile::map(file)?))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(MappedFile::map(file)?))
    }

    fn open_growable(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = AtomicU64::new(file.metadata()?.len());
        Ok(Arc::new(PlainFile { file, len }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }

    fn sync_all(&self, dir: &Path) -> io::Result<()> {
        sync_filesystem(dir)
    }
}

/// A real growable file (an index file, the checkpoint): `pwrite` and `pread`, no map.
#[derive(Debug)]
struct PlainFile {
    file: std::fs::File,
    /// Its length: only this process changes it, through this handle.
    len: AtomicU64,
}

impl BackendFile for PlainFile {
    fn len(&self) -> u64 {
        self.len.load(Ordering::SeqCst)
    }

    fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, at)?;
        self.len.fetch_max(at + buf.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, at)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len.store(len, Ordering::SeqCst);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn view(&self) -> Bytes {
        let mut buf = vec![0; self.len() as usize];
        match self.file.read_exact_at(&mut buf, 0) {
            Ok(()) => Bytes::from(buf),
            Err(e) => {
                tracing::warn!(error = %e, "reading a whole file failed");
                Bytes::new()
            }
        }
    }

    fn on_filesystem(&self) -> bool {
        true
    }
}

/// A real file and its read-only map.
#[derive(Debug)]
struct MappedFile {
    file: std::fs::File,
    /// The whole file, mapped; slices of it are handed out without copying.
    bytes: Bytes,
}

impl MappedFile {
    fn map(file: std::fs::File) -> io::Result<MappedFile> {
        if file.metadata()?.len() == 0 {
            // An empty file cannot be mapped; an empty view serves.
            return Ok(MappedFile {
                file,
                bytes: Bytes::new(),
            });
        }
        // SAFETY: the file is only ever written through `write_at` of this process and never
        // shrunk while mapped (truncation zeroes bytes; whole files are unlinked, which keeps
        // the mapping valid), so the mapped memory stays valid for the map's lifetime.
        let map = unsafe { Mmap::map(&file)? };
        Ok(MappedFile {
            file,
            bytes: Bytes::from_owner(MapOwner(map)),
        })
    }
}

struct MapOwner(Mmap);

impl AsRef<[u8]> for MapOwner {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl BackendFile for MappedFile {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, at)
    }

    fn set_len(&self, _len: u64) -> io::Result<()> {
        // Shrinking a mapped file would turn reads of the map into SIGBUS.
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a segment keeps its size",
        ))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn view(&self) -> Bytes {
        self.bytes.clone()
    }

    fn on_filesystem(&self) -> bool {
        true
    }

    fn data_after(&self, from: u64) -> io::Result<Option<(u64, u64)>> {
        fiemap::data_after(&self.file, from, self.len())
    }
}

/// Where a preallocated file holds data, from its extent map (`FS_IOC_FIEMAP`). Cutting a
/// torn tail zeroes whatever is not zero past it; reading the unwritten rest of a 128 MiB
/// segment to find out faulted in and zero-filled all of it at every open of every log
/// group. Extents still unwritten (preallocated, never written) and holes read as zeros,
/// so only written extents are read. `SEEK_DATA` does not serve: ext4 reports unwritten
/// extents as data there. By hand: no crate wraps this one ioctl.
mod fiemap {
    use std::io;
    use std::os::fd::AsRawFd;

    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    /// Write dirty pages back first, so that extents written only in the page cache (by a
    /// process that crashed) are no longer reported unwritten.
    const FLAG_SYNC: u32 = 0x1;
    const EXTENT_LAST: u32 = 0x1;
    const EXTENT_UNWRITTEN: u32 = 0x800;
    const EXTENTS: usize = 32;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }

    #[repr(C)]
    struct Map {
        start: u64,
        length: u64,
        flags: u32,
        mapped_extents: u32,
        extent_count: u32,
        reserved: u32,
        extents: [Extent; EXTENTS],
    }

    /// The first written extent's stretch at or after `from` within `len`; the whole rest
    /// where the filesystem has no extent map.
    pub(super) fn data_after(
        file: &std::fs::File,
        mut from: u64,
        len: u64,
    ) -> io::Result<Option<(u64, u64)>> {
        while from < len {
            let mut map = Map {
                start: from,
                length: len - from,
                flags: FLAG_SYNC,
                mapped_extents: 0,
                extent_count: EXTENTS as u32,
                reserved: 0,
                extents: [Extent::default(); EXTENTS],
            };
            // SAFETY: FS_IOC_FIEMAP fills at most `extent_count` extents of the struct it is
            // given, which is laid out as the kernel's `struct fiemap` and lives until it
            // returns.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map) };
            if rc < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL) => Ok(Some((from, len))),
                    _ => Err(e),
                };
            }
            let mapped = &map.extents[..(map.mapped_extents as usize).min(EXTENTS)];
            for x in mapped {
                let end = x.logical.saturating_add(x.length).min(len);
                if x.flags & EXTENT_UNWRITTEN == 0 && end > from {
                    return Ok(Some((x.logical.max(from), end)));
                }
            }
            match mapped.last() {
                Some(x) if x.flags & EXTENT_LAST == 0 && mapped.len() == EXTENTS => {
                    from = x.logical.saturating_add(x.length);
                }
                // The rest is unwritten extents or holes.
                _ => return Ok(None),
            }
        }
        Ok(None)
    }
}

/// Reserves `size` bytes on disk so that the disk filling up shows when a segment is made,
/// not in the middle of a write. Falls back to a sparse file where the filesystem cannot
/// preallocate.
fn preallocate(file: &std::fs::File, size: u64) -> io::Result<()> {
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
fn sync_filesystem(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(path)?;
    // SAFETY: plain syscall on an owned, open descriptor.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes a directory's entries (created, renamed or removed files) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
