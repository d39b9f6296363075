//! The I/O seam of the journal: segment files are created, opened, listed and removed
//! through a [`Backend`], and written, synced and read through the [`BackendFile`] it hands
//! out.
//!
//! - [`FileBackend`] is the real one: `pwrite`, `fdatasync`, and a read-only memory map
//!   whose `Bytes` slices readers get without a copy.
//! - [`MemoryBackend`] keeps files in memory, each with the image it had at its last sync.
//! - [`FaultyBackend`] wraps a memory backend to inject faults: fail the Nth write or sync,
//!   report a full disk, and cut the power (every file falls back to its synced image).
//!
//! Queue indexes and the checkpoint stay on the real filesystem: both are small, derived or
//! replaced atomically, and recovery checks them against the journal.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::Mmap;

/// Where a journal's segment files live.
pub trait Backend: Debug + Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The paths of the files directly in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Creates a new file of `size` zero bytes, reserved on disk, durable with its directory
    /// entry; fails if it exists. A failed create leaves no file behind.
    fn create(&self, path: &Path, size: u64) -> io::Result<Arc<dyn BackendFile>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>>;
    /// Removes a file (durable after [`Backend::sync_dir`]).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes `dir`'s entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// One open file of a [`Backend`].
pub trait BackendFile: Debug + Send + Sync {
    /// Its length in bytes.
    fn len(&self) -> u64;
    /// Whether it is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Writes all of `buf` at byte `at` (inside the file: files never grow by writing).
    fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn sync_data(&self) -> io::Result<()>;
    /// The whole file's contents. On the file backend this is a map that later writes show
    /// through, handed out without a copy; on the others a snapshot as of the call.
    fn view(&self) -> Bytes;
    /// Whether a `syncfs` of the data filesystem makes this file durable (true only for
    /// real files); a [`crate::SyncBatcher`] syncs the others one by one.
    fn on_filesystem(&self) -> bool {
        false
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

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
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

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn view(&self) -> Bytes {
        self.bytes.clone()
    }

    fn on_filesystem(&self) -> bool {
        true
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
pub(crate) fn sync_filesystem(path: &Path) -> io::Result<()> {
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
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Files in memory. Creating and removing a file is durable at once; a file's contents are
/// durable as of its last [`BackendFile::sync_data`] (what [`MemoryBackend::power_cut`]
/// keeps).
#[derive(Debug, Default)]
pub struct MemoryBackend {
    files: Mutex<BTreeMap<PathBuf, Arc<MemoryFile>>>,
}

/// One file of a [`MemoryBackend`].
#[derive(Debug)]
struct MemoryFile {
    state: Mutex<MemoryImage>,
}

#[derive(Debug)]
struct MemoryImage {
    /// What reads see.
    current: Vec<u8>,
    /// What survives a power cut.
    synced: Vec<u8>,
    /// A snapshot of `current`, until the next write.
    view: Option<Bytes>,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Arc<MemoryBackend> {
        Arc::new(MemoryBackend::default())
    }

    /// Simulates a power cut: every file loses the writes made since its last sync.
    pub fn power_cut(&self) {
        for file in self.files.lock().expect("files lock poisoned").values() {
            let mut s = file.state.lock().expect("file lock poisoned");
            s.current = s.synced.clone();
            s.view = None;
        }
    }

    fn file(&self, path: &Path) -> io::Result<Arc<MemoryFile>> {
        self.files
            .lock()
            .expect("files lock poisoned")
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }
}

impl Backend for MemoryBackend {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(self
            .files
            .lock()
            .expect("files lock poisoned")
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect())
    }

    fn create(&self, path: &Path, size: u64) -> io::Result<Arc<dyn BackendFile>> {
        let mut files = self.files.lock().expect("files lock poisoned");
        if files.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                path.display().to_string(),
            ));
        }
        let zeros = vec![0; usize::try_from(size).map_err(io::Error::other)?];
        let file = Arc::new(MemoryFile {
            state: Mutex::new(MemoryImage {
                current: zeros.clone(),
                synced: zeros,
                view: None,
            }),
        });
        files.insert(path.to_owned(), file.clone());
        Ok(file)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>> {
        Ok(self.file(path)?)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.files
            .lock()
            .expect("files lock poisoned")
            .remove(path)
            .map(drop)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, path.display().to_string()))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

impl BackendFile for MemoryFile {
    fn len(&self) -> u64 {
        self.state.lock().expect("file lock poisoned").current.len() as u64
    }

    fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()> {
        let mut s = self.state.lock().expect("file lock poisoned");
        let at = usize::try_from(at).map_err(io::Error::other)?;
        let Some(range) = s.current.get_mut(at..at + buf.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of a memory file",
            ));
        };
        range.copy_from_slice(buf);
        s.view = None;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut s = self.state.lock().expect("file lock poisoned");
        s.synced = s.current.clone();
        Ok(())
    }

    fn view(&self) -> Bytes {
        let mut s = self.state.lock().expect("file lock poisoned");
        if s.view.is_none() {
            s.view = Some(Bytes::from(s.current.clone()));
        }
        s.view.clone().expect("set above")
    }
}

/// A [`MemoryBackend`] that fails on request: the Nth write or sync from now, every write
/// and create while the disk is "full", and a power cut that drops unsynced writes.
#[derive(Debug, Default)]
pub struct FaultyBackend {
    memory: MemoryBackend,
    faults: Arc<Faults>,
}

/// The faults a [`FaultyBackend`] injects, shared with the files it hands out.
#[derive(Debug, Default)]
struct Faults {
    /// File writes (`write_at`) so far, and the 1-based one that fails (0: none).
    writes: AtomicU64,
    fail_write: AtomicU64,
    /// File syncs so far, and the 1-based one that fails (0: none).
    syncs: AtomicU64,
    fail_sync: AtomicU64,
    /// Every write and create fails with `ENOSPC`.
    disk_full: AtomicBool,
    /// Failures injected so far.
    failed_writes: AtomicU64,
    failed_syncs: AtomicU64,
    refused: AtomicU64,
}

impl FaultyBackend {
    /// A backend with no fault armed.
    pub fn new() -> Arc<FaultyBackend> {
        Arc::new(FaultyBackend::default())
    }

    /// Makes the `n`th file write from now (1: the next) fail with `EIO`; it happens once.
    pub fn fail_write_in(&self, n: u64) {
        let now = self.faults.writes.load(Ordering::SeqCst);
        self.faults.fail_write.store(now + n, Ordering::SeqCst);
    }

    /// Makes the `n`th file sync from now (1: the next) fail with `EIO`; it happens once.
    pub fn fail_sync_in(&self, n: u64) {
        let now = self.faults.syncs.load(Ordering::SeqCst);
        self.faults.fail_sync.store(now + n, Ordering::SeqCst);
    }

    /// While `full`, every write and create fails with `ENOSPC`.
    pub fn set_disk_full(&self, full: bool) {
        self.faults.disk_full.store(full, Ordering::SeqCst);
    }

    /// Whether a write or sync failure is armed and has not happened yet.
    pub fn armed(&self) -> bool {
        self.faults.fail_write.load(Ordering::SeqCst) != 0
            || self.faults.fail_sync.load(Ordering::SeqCst) != 0
    }

    /// Injected failures so far: `(writes, syncs, writes or creates refused as disk full)`.
    pub fn injected(&self) -> (u64, u64, u64) {
        (
            self.faults.failed_writes.load(Ordering::SeqCst),
            self.faults.failed_syncs.load(Ordering::SeqCst),
            self.faults.refused.load(Ordering::SeqCst),
        )
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.faults.fail_write.store(0, Ordering::SeqCst);
        self.faults.fail_sync.store(0, Ordering::SeqCst);
        self.set_disk_full(false);
    }

    /// Simulates a power cut: every file loses the writes made since its last sync.
    pub fn power_cut(&self) {
        self.memory.power_cut();
    }

    fn wrap(&self, file: Arc<dyn BackendFile>) -> Arc<dyn BackendFile> {
        Arc::new(FaultyFile {
            inner: file,
            faults: self.faults.clone(),
        })
    }
}

impl Faults {
    fn disk_full(&self) -> io::Result<()> {
        if self.disk_full.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    /// Counts a call; fails it if it is the armed one.
    fn count(count: &AtomicU64, fail_at: &AtomicU64, failed: &AtomicU64) -> io::Result<()> {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if fail_at
            .compare_exchange(n, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            failed.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

impl Backend for FaultyBackend {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.memory.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        self.memory.list(dir)
    }

    fn create(&self, path: &Path, size: u64) -> io::Result<Arc<dyn BackendFile>> {
        self.faults.disk_full()?;
        Ok(self.wrap(self.memory.create(path, size)?))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>> {
        Ok(self.wrap(self.memory.open(path)?))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.memory.remove(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.memory.sync_dir(dir)
    }
}

/// A file of a [`FaultyBackend`].
#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn BackendFile>,
    faults: Arc<Faults>,
}

impl BackendFile for FaultyFile {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()> {
        self.faults.disk_full()?;
        Faults::count(
            &self.faults.writes,
            &self.faults.fail_write,
            &self.faults.failed_writes,
        )?;
        self.inner.write_at(at, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        Faults::count(
            &self.faults.syncs,
            &self.faults.fail_sync,
            &self.faults.failed_syncs,
        )?;
        self.inner.sync_data()
    }

    fn view(&self) -> Bytes {
        self.inner.view()
    }
}
