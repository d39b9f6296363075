//! A [`MemoryBackend`] that fails on request: the Nth write or sync from now (of any file, or
//! only of files under a path), every write and create while the disk is "full", and a power
//! failure at the Nth durability point, after which nothing more becomes durable until the
//! power cut.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{Backend, BackendFile, MemoryBackend};

/// A [`MemoryBackend`] with injected faults.
#[derive(Debug)]
pub struct FaultyBackend {
    memory: MemoryBackend,
    faults: Arc<Mutex<Faults>>,
}

impl Default for FaultyBackend {
    fn default() -> FaultyBackend {
        let memory = MemoryBackend::default();
        let faults = Faults {
            power: memory.power_switch(),
            ..Faults::default()
        };
        FaultyBackend {
            memory,
            faults: Arc::new(Mutex::new(faults)),
        }
    }
}

/// What can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `write_at` or `set_len` (`EIO`).
    Write,
    /// `sync_data` or `sync_all` (`EIO`).
    Sync,
    /// A write or create refused while the disk is full (`ENOSPC`).
    Refused,
}

/// A failure waiting to happen: the `remaining`th call of its kind under `under`.
#[derive(Debug)]
struct Armed {
    kind: Kind,
    under: Option<PathBuf>,
    remaining: u64,
}

/// The faults a [`FaultyBackend`] injects, shared with the files it hands out.
#[derive(Debug, Default)]
struct Faults {
    armed: Vec<Armed>,
    disk_full: bool,
    /// Only new files are refused: a full disk under preallocated segments.
    no_new_files: bool,
    /// Durability points until the power fails (0: no failure armed).
    power_fails_in: u64,
    /// The memory backend's flag that the power has failed.
    power: Arc<AtomicBool>,
    /// Failures injected so far, and where.
    injected: Vec<(Kind, PathBuf)>,
    /// How long each file sync takes (a slow disk: lets a test overlap work with syncs).
    sync_delay: std::time::Duration,
}

impl Faults {
    /// Counts a call of `kind` on `path`; fails it if it is an armed one.
    fn check(&mut self, kind: Kind, path: &Path) -> io::Result<()> {
        if kind == Kind::Write && self.disk_full {
            self.injected.push((Kind::Refused, path.to_owned()));
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let mut fail = false;
        self.armed.retain_mut(|a| {
            if a.kind != kind || a.under.as_ref().is_some_and(|u| !path.starts_with(u)) {
                return true;
            }
            a.remaining -= 1;
            fail |= a.remaining == 0;
            a.remaining > 0
        });
        if fail {
            self.injected.push((kind, path.to_owned()));
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    /// Refuses a new file while only new files are refused.
    fn check_create(&mut self, path: &Path) -> io::Result<()> {
        if self.no_new_files {
            self.injected.push((Kind::Refused, path.to_owned()));
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }

    /// Counts a durability point; the power fails at the armed one.
    fn durability_point(&mut self) {
        if self.power_fails_in > 0 {
            self.power_fails_in -= 1;
            if self.power_fails_in == 0 {
                self.power.store(true, Ordering::SeqCst);
            }
        }
    }

    fn arm(&mut self, kind: Kind, under: Option<&Path>, n: u64) {
        let under = under.map(Path::to_owned);
        self.armed.retain(|a| a.kind != kind || a.under != under);
        self.armed.push(Armed {
            kind,
            under,
            remaining: n.max(1),
        });
    }
}

impl FaultyBackend {
    /// A backend with no fault armed.
    pub fn new() -> Arc<FaultyBackend> {
        Arc::new(FaultyBackend::default())
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().expect("faults lock poisoned")
    }

    /// Makes the `n`th file write from now (1: the next) fail with `EIO`; it happens once.
    pub fn fail_write_in(&self, n: u64) {
        self.faults().arm(Kind::Write, None, n);
    }

    /// Makes the `n`th file sync from now (1: the next) fail with `EIO`; it happens once.
    pub fn fail_sync_in(&self, n: u64) {
        self.faults().arm(Kind::Sync, None, n);
    }

    /// Makes the `n`th write of a file under `under` from now fail with `EIO`, once.
    pub fn fail_write_under(&self, under: &Path, n: u64) {
        self.faults().arm(Kind::Write, Some(under), n);
    }

    /// Makes the `n`th sync of a file under `under` (or [`Backend::sync_all`] of a directory
    /// under it) from now fail with `EIO`, once.
    pub fn fail_sync_under(&self, under: &Path, n: u64) {
        self.faults().arm(Kind::Sync, Some(under), n);
    }

    /// Makes every file sync take `delay` (a slow disk), failed ones too.
    pub fn set_sync_delay(&self, delay: std::time::Duration) {
        self.faults().sync_delay = delay;
    }

    /// While `full`, every write and create fails with `ENOSPC`.
    pub fn set_disk_full(&self, full: bool) {
        self.faults().disk_full = full;
    }

    /// While `full`, creating a file (preallocating a segment, a new index file, the
    /// checkpoint's temporary file) fails with `ENOSPC`, but writes to existing files
    /// succeed: a real full disk under preallocated segments, where the journal fills its
    /// current segment and then cannot get the next one.
    pub fn set_no_room_for_new_files(&self, full: bool) {
        self.faults().no_new_files = full;
    }

    /// The power fails just before the `n`th durability point from now (1: the next): a file
    /// or directory sync, a `sync_all`, a rename or a create. From then on every call still
    /// succeeds but nothing more becomes durable; [`FaultyBackend::power_cut`] then brings
    /// back what was durable when the power failed.
    pub fn fail_power_in(&self, n: u64) {
        self.faults().power_fails_in = n.max(1);
    }

    /// Whether the power has failed (and the power cut not simulated yet).
    pub fn power_failed(&self) -> bool {
        self.memory.power_failed()
    }

    /// Whether a write or sync failure is armed and has not happened yet.
    pub fn armed(&self) -> bool {
        !self.faults().armed.is_empty()
    }

    /// Whether a write or sync failure that would hit a file under `dir` is armed.
    pub fn armed_under(&self, dir: &Path) -> bool {
        self.faults().armed.iter().any(|a| {
            a.under
                .as_ref()
                .is_none_or(|u| u.starts_with(dir) || dir.starts_with(u))
        })
    }

    /// Injected failures so far: `(writes, syncs, writes or creates refused as disk full)`.
    pub fn injected(&self) -> (u64, u64, u64) {
        self.injected_under(Path::new("/"))
    }

    /// [`FaultyBackend::injected`], counting only failures of files under `dir`.
    pub fn injected_under(&self, dir: &Path) -> (u64, u64, u64) {
        let faults = self.faults();
        let count = |kind| {
            faults
                .injected
                .iter()
                .filter(|(k, p)| *k == kind && (p.starts_with(dir) || dir == Path::new("/")))
                .count() as u64
        };
        (count(Kind::Write), count(Kind::Sync), count(Kind::Refused))
    }

    /// Disarms every fault, and a power failure that has not happened yet.
    pub fn clear_faults(&self) {
        let mut faults = self.faults();
        faults.armed.clear();
        faults.disk_full = false;
        faults.no_new_files = false;
        faults.power_fails_in = 0;
    }

    /// Simulates a power cut: every file and directory falls back to its durable image (as
    /// of the power failure, if one was armed and happened).
    pub fn power_cut(&self) {
        self.memory.power_cut();
    }

    /// The paths of every file, as they are now.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.memory.paths()
    }

    fn durability_point(&self) {
        self.faults().durability_point();
    }

    fn wrap(&self, path: &Path, file: Arc<dyn BackendFile>) -> Arc<dyn BackendFile> {
        Arc::new(FaultyFile {
            inner: file,
            path: path.to_owned(),
            faults: self.faults.clone(),
        })
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
        self.faults().check_create(path)?;
        self.faults().check(Kind::Write, path)?;
        self.durability_point();
        Ok(self.wrap(path, self.memory.create(path, size)?))
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>> {
        Ok(self.wrap(path, self.memory.open(path)?))
    }

    fn open_growable(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>> {
        if !self.memory.exists(path) {
            self.faults().check_create(path)?;
            self.faults().check(Kind::Write, path)?;
        }
        Ok(self.wrap(path, self.memory.open_growable(path)?))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.memory.remove(path)
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.memory.remove_dir_all(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.durability_point();
        self.memory.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.durability_point();
        self.memory.sync_dir(dir)
    }

    fn sync_all(&self, dir: &Path) -> io::Result<()> {
        self.durability_point();
        self.faults().check(Kind::Sync, dir)?;
        self.memory.sync_all(dir)
    }
}

/// A file of a [`FaultyBackend`].
#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn BackendFile>,
    path: PathBuf,
    faults: Arc<Mutex<Faults>>,
}

impl FaultyFile {
    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().expect("faults lock poisoned")
    }
}

impl BackendFile for FaultyFile {
    fn len(&self) -> u64 {
        self.inner.len()
    }

    fn write_at(&self, at: u64, buf: &[u8]) -> io::Result<()> {
        self.faults().check(Kind::Write, &self.path)?;
        self.inner.write_at(at, buf)
    }

    fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(at, buf)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults().check(Kind::Write, &self.path)?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay = self.faults().sync_delay;
        std::thread::sleep(delay);
        {
            let mut faults = self.faults();
            faults.durability_point();
            faults.check(Kind::Sync, &self.path)?;
        }
        self.inner.sync_data()
    }

    fn view(&self) -> Bytes {
        self.inner.view()
    }
}
