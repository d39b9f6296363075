//! Files in memory, with what a power cut keeps: a file's contents as of its last sync, and a
//! directory's entries as of the directory's last sync.
//!
//! The model is that of a POSIX filesystem that promises nothing it was not asked for:
//!
//! - a file's writes and size changes are durable after [`BackendFile::sync_data`] of it, or
//!   a [`Backend::sync_all`] of a directory above it;
//! - creating (with [`Backend::open_growable`]), removing and renaming a file are durable
//!   after a [`Backend::sync_dir`] of its directory, or a `sync_all` above it; a segment made
//!   by [`Backend::create`] is durable with its entry at once. So a checkpoint renamed into
//!   place but whose directory was not synced is the old one again after a power cut;
//! - directories are implicit: one exists while a file lives under it, and removing one
//!   ([`Backend::remove_dir_all`]) is durable after a `sync_dir` of its parent.
//!
//! Once the power has failed ([`MemoryBackend::fail_power`]) nothing becomes durable any
//! more, though every call still succeeds, until [`MemoryBackend::power_cut`] brings the
//! durable image back.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{Backend, BackendFile};

/// Files in memory (see the module doc for what is durable when).
#[derive(Debug, Default)]
pub struct MemoryBackend {
    names: Mutex<Names>,
    /// The power has failed: nothing becomes durable until the power cut.
    failed: Arc<AtomicBool>,
}

/// Directory entries: as they are, and as a power cut would leave them.
#[derive(Debug, Default)]
struct Names {
    current: BTreeMap<PathBuf, Arc<MemoryFile>>,
    durable: BTreeMap<PathBuf, Arc<MemoryFile>>,
}

/// One file of a [`MemoryBackend`].
#[derive(Debug)]
pub(super) struct MemoryFile {
    state: Mutex<MemoryImage>,
    /// Made by `open_growable`: writes and `set_len` may change its size.
    growable: bool,
    failed: Arc<AtomicBool>,
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

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, path.display().to_string())
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Arc<MemoryBackend> {
        Arc::new(MemoryBackend::default())
    }

    /// Simulates a power cut: every directory falls back to its durable entries and every
    /// file to its synced contents; the power is back on.
    pub fn power_cut(&self) {
        let mut names = self.names.lock().expect("names lock poisoned");
        names.current = names.durable.clone();
        for file in names.current.values() {
            let mut s = file.state.lock().expect("file lock poisoned");
            s.current = s.synced.clone();
            s.view = None;
        }
        self.failed.store(false, Ordering::SeqCst);
    }

    /// The power fails now: what is durable stays as it is until [`MemoryBackend::power_cut`],
    /// whatever is written or synced meanwhile.
    pub fn fail_power(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// The flag [`MemoryBackend::fail_power`] sets, for a wrapper to fail the power at a
    /// given call.
    pub(super) fn power_switch(&self) -> Arc<AtomicBool> {
        self.failed.clone()
    }

    /// Whether the power has failed (and not been cut and restored yet).
    pub fn power_failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    /// The paths of every file, as they are now.
    pub fn paths(&self) -> Vec<PathBuf> {
        let names = self.names.lock().expect("names lock poisoned");
        names.current.keys().cloned().collect()
    }

    pub(super) fn exists(&self, path: &Path) -> bool {
        let names = self.names.lock().expect("names lock poisoned");
        names.current.contains_key(path)
    }

    fn new_file(&self, contents: Vec<u8>, growable: bool) -> Arc<MemoryFile> {
        Arc::new(MemoryFile {
            state: Mutex::new(MemoryImage {
                current: contents.clone(),
                synced: contents,
                view: None,
            }),
            growable,
            failed: self.failed.clone(),
        })
    }

    /// Makes the entries of the paths `pick` selects durable as they are now.
    fn commit(&self, names: &mut Names, pick: impl Fn(&Path, &Names) -> bool) {
        if self.power_failed() {
            return;
        }
        let paths: BTreeSet<PathBuf> = names
            .current
            .keys()
            .chain(names.durable.keys())
            .filter(|p| pick(p, names))
            .cloned()
            .collect();
        for path in paths {
            match names.current.get(&path) {
                Some(file) => names.durable.insert(path, file.clone()),
                None => names.durable.remove(&path),
            };
        }
    }
}

/// Whether syncing `dir` makes the entry of `path` durable: `path` is in `dir`, or lies in a
/// subdirectory of it that has been removed.
fn entry_of(dir: &Path, path: &Path, names: &Names) -> bool {
    let Ok(rel) = path.strip_prefix(dir) else {
        return false;
    };
    let mut parts = rel.components();
    let Some(first) = parts.next() else {
        return false;
    };
    if parts.next().is_none() {
        return true;
    }
    let sub = dir.join(first);
    !names.current.keys().any(|p| p.starts_with(&sub))
}

impl Backend for MemoryBackend {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let names = self.names.lock().expect("names lock poisoned");
        let entries: BTreeSet<PathBuf> = names
            .current
            .keys()
            .filter_map(|p| p.strip_prefix(dir).ok()?.components().next())
            .map(|first| dir.join(first))
            .collect();
        Ok(entries.into_iter().collect())
    }

    fn create(&self, path: &Path, size: u64) -> io::Result<Arc<dyn BackendFile>> {
        let mut names = self.names.lock().expect("names lock poisoned");
        if names.current.contains_key(path) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                path.display().to_string(),
            ));
        }
        let zeros = vec![0; usize::try_from(size).map_err(io::Error::other)?];
        let file = self.new_file(zeros, false);
        names.current.insert(path.to_owned(), file.clone());
        if !self.power_failed() {
            names.durable.insert(path.to_owned(), file.clone());
        }
        Ok(file)
    }

    fn open(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>> {
        let names = self.names.lock().expect("names lock poisoned");
        match names.current.get(path) {
            Some(file) => Ok(file.clone()),
            None => Err(not_found(path)),
        }
    }

    fn open_growable(&self, path: &Path) -> io::Result<Arc<dyn BackendFile>> {
        let mut names = self.names.lock().expect("names lock poisoned");
        if let Some(file) = names.current.get(path) {
            return Ok(file.clone());
        }
        let file = self.new_file(Vec::new(), true);
        names.current.insert(path.to_owned(), file.clone());
        Ok(file)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut names = self.names.lock().expect("names lock poisoned");
        names
            .current
            .remove(path)
            .map(drop)
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut names = self.names.lock().expect("names lock poisoned");
        names.current.retain(|p, _| !p.starts_with(dir));
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut names = self.names.lock().expect("names lock poisoned");
        let file = names.current.remove(from).ok_or_else(|| not_found(from))?;
        names.current.insert(to.to_owned(), file);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut names = self.names.lock().expect("names lock poisoned");
        self.commit(&mut names, |p, names| entry_of(dir, p, names));
        Ok(())
    }

    fn sync_all(&self, dir: &Path) -> io::Result<()> {
        let mut names = self.names.lock().expect("names lock poisoned");
        self.commit(&mut names, |p, _| p.starts_with(dir));
        for (path, file) in &names.current {
            if path.starts_with(dir) {
                file.sync_data()?;
            }
        }
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
        if self.growable && s.current.len() < at + buf.len() {
            s.current.resize(at + buf.len(), 0);
        }
        let Some(range) = s.current.get_mut(at..at + buf.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write past the end of a memory segment",
            ));
        };
        range.copy_from_slice(buf);
        s.view = None;
        Ok(())
    }

    fn read_at(&self, at: u64, buf: &mut [u8]) -> io::Result<()> {
        let s = self.state.lock().expect("file lock poisoned");
        let at = usize::try_from(at).map_err(io::Error::other)?;
        let bytes = s
            .current
            .get(at..at + buf.len())
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        if !self.growable {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a segment keeps its size",
            ));
        }
        let mut s = self.state.lock().expect("file lock poisoned");
        s.current
            .resize(usize::try_from(len).map_err(io::Error::other)?, 0);
        s.view = None;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Ok(());
        }
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
