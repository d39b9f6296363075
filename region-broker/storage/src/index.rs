//! The queue index of one partition: fixed-size entries, one per message, pointing at the
//! journal record that holds the message.
//!
//! Entry `o` (the message at partition offset `o`) lives in file `⌊o / E⌋ · E` (named with
//! 20 digits, `.idx`) at byte `(o mod E) · ENTRY_LEN`, where `E` is the entries per file. Files
//! may begin with a zeroed hole when the index was rebuilt from a journal whose head had been
//! deleted; [`PartitionIndex::earliest`] is the first retained offset.
//!
//! New entries collect in memory and reach the files on [`PartitionIndex::write_pending`],
//! which the group's indexer thread calls every `flush_interval` before one `syncfs` and the
//! checkpoint: the index is derived state that recovery rebuilds from the journal, so it is
//! never on the produce path.
//!
//! Index files are growable files of the group's [`Backend`] ([`Backend::open_growable`]):
//! on the file backend plain files written with `pwrite` and read with `pread`, made durable
//! together by the group's one [`Backend::sync_all`] per flush (a `syncfs`), never one by one;
//! on the memory backends they live and fail like the journal's segments. A new file's
//! directory entry is synced when it is created; removals are made durable by the next
//! `sync_all` (a removed file that comes back after a power cut lies outside what the
//! checkpoint vouches for, or below the journal's start, and recovery drops it again).
//!
//! A compacted partition's index may also point back: a message still its key's latest is
//! *carried* forward before retention deletes its segment ([`PartitionIndex::carry`]), and
//! its entry then points at the carried copy, far past its neighbours. Such an index is
//! marked by a file `carried` in its directory (made once, durably, before the first such
//! entry), and searches by position scan it rather than bisect: its positions no longer
//! grow with offsets. A full rebuild meets carried records out of offset order, so such an
//! index may also hold *holes* (size 0) where the journal no longer holds a message.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, BackendFile};

/// Bytes per entry: journal position u64, record size u32, append time i64.
pub(crate) const ENTRY_LEN: usize = 20;

/// The top bit of an entry's stored size: it points at a carried record. Records are far
/// smaller than 2 GiB (a group commit's bytes bound them).
const CARRIED_BIT: u32 = 1 << 31;

/// The file whose presence marks an index holding carried entries.
const CARRIED_MARK: &str = "carried";

/// The file whose presence marks a compacted partition's index.
const COMPACTED_MARK: &str = "compacted";

/// Where a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Journal position of the record holding the message.
    pub(crate) position: u64,
    /// Length of that record.
    pub(crate) size: u32,
    /// Append time of that record (of a carried record: of the message's first write).
    pub(crate) append_time_ms: i64,
    /// It points at a carried record (a compacted partition's message copied forward).
    pub(crate) carried: bool,
}

impl Entry {
    /// No message here any more (size 0): the journal lost what a compacted partition held
    /// at this offset, found when an index is rebuilt. `append_time_ms` keeps times
    /// ordered for searches by time.
    pub(crate) fn hole(append_time_ms: i64) -> Entry {
        Entry {
            position: 0,
            size: 0,
            append_time_ms,
            carried: false,
        }
    }

    /// Whether it is a hole.
    pub(crate) fn is_hole(&self) -> bool {
        self.size == 0
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        let size = if self.carried {
            self.size | CARRIED_BIT
        } else {
            self.size
        };
        buf.extend_from_slice(&self.position.to_le_bytes());
        buf.extend_from_slice(&size.to_le_bytes());
        buf.extend_from_slice(&self.append_time_ms.to_le_bytes());
    }

    fn decode(b: &[u8]) -> Entry {
        let size = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        Entry {
            position: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            size: size & !CARRIED_BIT,
            append_time_ms: i64::from_le_bytes(b[12..20].try_into().expect("8 bytes")),
            carried: size & CARRIED_BIT != 0,
        }
    }
}

/// The index of one partition.
#[derive(Debug)]
pub(crate) struct PartitionIndex {
    backend: Arc<dyn Backend>,
    dir: PathBuf,
    entries_per_file: u64,
    files: BTreeMap<u64, Arc<dyn BackendFile>>,
    /// Encoded entries from offset `written` on, not yet in the files.
    pending: Vec<u8>,
    /// Entries in the files (the offset of the first pending entry).
    written: u64,
    earliest: u64,
    dirty: bool,
    /// It holds carried entries (the `carried` file exists): positions do not grow with
    /// offsets.
    carried: bool,
    /// Bytes of the distinct records the retained entries point at (a batch's entries
    /// share one), once asked for ([`PartitionIndex::bytes`]): `None` until then, as
    /// counting scans the entries; kept up to date by every change afterwards.
    bytes: Option<u64>,
    /// Offsets below it were deleted on purpose (a start moved by DeleteRecords or a
    /// topic's retention): a carried copy below it is never brought back.
    floor: u64,
    /// The partition is compacted (the `compacted` file exists): retention deletes none of
    /// its segments until its key map is built again after a restart.
    compacted: bool,
}

impl PartitionIndex {
    /// Opens the index in `dir`, keeping only its first `trusted` entries (those the last
    /// checkpoint vouches for); creates the directory if needed.
    pub(crate) fn open(
        backend: Arc<dyn Backend>,
        dir: &Path,
        entries_per_file: u64,
        trusted: u64,
    ) -> io::Result<PartitionIndex> {
        backend.create_dir_all(dir)?;
        let mut files = BTreeMap::new();
        let (mut carried, mut compacted) = (false, false);
        for path in backend.list(dir)? {
            let name = path.file_name().and_then(|n| n.to_str());
            if name == Some(CARRIED_MARK) {
                carried = true;
                continue;
            }
            if name == Some(COMPACTED_MARK) {
                compacted = true;
                continue;
            }
            let Some(first) = name.and_then(parse_file_name) else {
                continue;
            };
            if first >= trusted {
                backend.remove(&path)?;
                continue;
            }
            files.insert(first, backend.open_growable(&path)?);
        }
        let mut index = PartitionIndex {
            backend,
            dir: dir.to_owned(),
            entries_per_file,
            files,
            pending: Vec::new(),
            written: trusted,
            earliest: 0,
            dirty: false,
            carried,
            bytes: None,
            floor: 0,
            compacted,
        };
        if trusted > 0 {
            let first = index.file_start(trusted - 1);
            let have = match index.files.get(&first) {
                Some(f) => f.len() / ENTRY_LEN as u64,
                None => 0,
            };
            if have < trusted - first {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "index {} holds fewer entries than its checkpoint ({trusted})",
                        dir.display()
                    ),
                ));
            }
        }
        index.truncate_files(trusted)?;
        Ok(index)
    }

    /// One past the last offset (written or pending).
    pub(crate) fn end(&self) -> u64 {
        self.written + (self.pending.len() / ENTRY_LEN) as u64
    }

    /// The first retained offset.
    pub(crate) fn earliest(&self) -> u64 {
        self.earliest
    }

    /// Adds the entry for offset `offset`; offsets may skip ahead only on an empty index.
    pub(crate) fn push(&mut self, offset: u64, entry: Entry) {
        if let Some(bytes) = self.bytes {
            let new_record = offset != self.end()
                || self.end() == self.earliest
                || self
                    .entry(self.end() - 1)
                    .map_or(true, |prev| prev.position != entry.position);
            if new_record && !entry.is_hole() {
                self.bytes = Some(bytes + u64::from(entry.size));
            }
        }
        if offset != self.end() {
            assert!(
                self.end() == self.earliest,
                "index gap: entry {offset} after {}",
                self.end()
            );
            self.written = offset;
            self.earliest = offset;
            self.pending.clear();
        }
        entry.encode(&mut self.pending);
    }

    /// Whether it holds carried entries (see the module's doc).
    pub(crate) fn has_carried(&self) -> bool {
        self.carried
    }

    /// Points `offset` at a carried record (`entry`, with the message's first append time):
    /// the message moved past the segment retention deletes. Repeating it is harmless (an
    /// entry already pointing there or further on is kept). Met out of offset order when an
    /// index is rebuilt from the journal, it extends the index: in front (the holes between
    /// filled in) or past the end (the same).
    pub(crate) fn carry(&mut self, offset: u64, entry: Entry) -> io::Result<()> {
        if offset < self.floor {
            return Ok(());
        }
        let entry = Entry {
            carried: true,
            ..entry
        };
        self.mark_carried()?;
        // Sizes of a partition whose copies point back are counted when asked.
        self.bytes = None;
        let end = self.end();
        if offset < self.earliest {
            // In front (a rebuild, or a replica reset past the partition's end): the end
            // never moves back.
            let holes = self.earliest;
            self.earliest = offset;
            self.set(offset, entry)?;
            for hole in offset + 1..holes {
                self.set(hole, Entry::hole(entry.append_time_ms))?;
            }
        } else if end == self.earliest {
            self.push(offset, entry);
        } else if offset >= end {
            for hole in end..offset {
                self.push(hole, Entry::hole(entry.append_time_ms));
            }
            self.push(offset, entry);
        } else if self.entry(offset)?.position < entry.position {
            self.set(offset, entry)?;
        }
        Ok(())
    }

    /// Raises the floor below which carried copies are ignored (a start moved on purpose).
    pub(crate) fn set_floor(&mut self, floor: u64) {
        self.floor = self.floor.max(floor);
    }

    /// Whether the partition is marked compacted (see [`PartitionIndex::mark_compacted`]).
    pub(crate) fn is_marked_compacted(&self) -> bool {
        self.compacted
    }

    /// Marks the partition compacted, or not, durably: after a restart retention keeps its
    /// segments until its key map is built again.
    pub(crate) fn mark_compacted(&mut self, compacted: bool) -> io::Result<()> {
        if compacted == self.compacted {
            return Ok(());
        }
        let path = self.dir.join(COMPACTED_MARK);
        if compacted {
            self.backend.open_growable(&path)?;
        } else {
            self.backend.remove(&path)?;
        }
        self.backend.sync_dir(&self.dir)?;
        self.compacted = compacted;
        Ok(())
    }

    /// Whether an entry (a carried copy's, or a record's) points into `[from, to)` of the
    /// journal.
    pub(crate) fn any_between(&self, from: u64, to: u64) -> io::Result<bool> {
        for offset in self.earliest..self.end() {
            let e = self.entry(offset)?;
            if !e.is_hole() && e.position >= from && e.position < to {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether a carried entry points at or past journal position `end` (a copy the
    /// journal lost).
    pub(crate) fn carried_past(&self, end: u64) -> io::Result<bool> {
        if !self.carried {
            return Ok(false);
        }
        for offset in self.earliest..self.end() {
            let e = self.entry(offset)?;
            if e.carried && e.position >= end {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Bytes of the records the partition holds in a journal starting at `start` (each
    /// counted once): counted by scanning the entries the first time, then kept up to
    /// date — unless copies point back (then counted when asked).
    pub(crate) fn bytes(&mut self, start: u64) -> io::Result<u64> {
        if let Some(b) = self.bytes {
            return Ok(b);
        }
        if self.carried {
            let mut seen = std::collections::HashSet::new();
            let mut sum = 0;
            for offset in self.earliest..self.end() {
                let e = self.entry(offset)?;
                if !e.is_hole() && e.position >= start && seen.insert(e.position) {
                    sum += u64::from(e.size);
                }
            }
            return Ok(sum);
        }
        let b = self.records_in(self.earliest, self.end())?;
        self.bytes = Some(b);
        Ok(b)
    }

    /// Bytes of the records whose entries in `[from, to)` start them: a record counted
    /// once, and not when its entries go on past `to` (it is still held there).
    fn records_in(&self, from: u64, to: u64) -> io::Result<u64> {
        let mut sum = 0;
        let mut previous: Option<u64> = None;
        for offset in from..to {
            let e = self.entry(offset)?;
            if !e.is_hole() && previous != Some(e.position) {
                sum += u64::from(e.size);
            }
            previous = Some(e.position);
        }
        if to < self.end() && from < to {
            let (last, next) = (self.entry(to - 1)?, self.entry(to)?);
            if !last.is_hole() && last.position == next.position {
                sum -= u64::from(last.size);
            }
        }
        Ok(sum)
    }

    /// The first offset to keep so that the partition holds at most `max` bytes of
    /// records (whole records go, oldest first) in a journal starting at `start`; the
    /// start when it holds no more already.
    pub(crate) fn start_within(&mut self, max: u64, start: u64) -> io::Result<u64> {
        let total = self.bytes(start)?;
        let mut over = total.saturating_sub(max);
        // A record's entries are adjacent unless copies point back.
        let mut seen = self.carried.then(std::collections::HashSet::new);
        let mut previous = None;
        for offset in self.earliest..self.end() {
            let e = self.entry(offset)?;
            if e.is_hole() || e.position < start {
                continue;
            }
            let new_record = match &mut seen {
                Some(seen) => seen.insert(e.position),
                None => previous != Some(e.position),
            };
            previous = Some(e.position);
            if new_record {
                if over == 0 {
                    return Ok(offset);
                }
                over = over.saturating_sub(u64::from(e.size));
            }
        }
        Ok(self.end())
    }

    /// Adds a batch's entry at `offset` past a gap: in an index holding carried entries, a
    /// rebuild meets a batch whose earlier offsets the journal no longer holds (holes).
    /// Refused (false) on any other index: a gap there is corruption.
    pub(crate) fn push_past_gap(&mut self, offset: u64, entry: Entry) -> bool {
        if !self.carried || offset < self.end() {
            return false;
        }
        for hole in self.end()..offset {
            self.push(hole, Entry::hole(entry.append_time_ms));
        }
        self.push(offset, entry);
        true
    }

    fn mark_carried(&mut self) -> io::Result<()> {
        if !self.carried {
            self.backend.open_growable(&self.dir.join(CARRIED_MARK))?;
            self.backend.sync_dir(&self.dir)?;
            self.carried = true;
        }
        Ok(())
    }

    /// Rewrites the entry at `offset` (pending or in its file).
    fn set(&mut self, offset: u64, entry: Entry) -> io::Result<()> {
        let mut buf = Vec::with_capacity(ENTRY_LEN);
        entry.encode(&mut buf);
        if offset >= self.written {
            let at = (offset - self.written) as usize * ENTRY_LEN;
            self.pending[at..at + ENTRY_LEN].copy_from_slice(&buf);
            return Ok(());
        }
        let first = self.file_start(offset);
        self.file(first)?;
        self.files[&first].write_at((offset - first) * ENTRY_LEN as u64, &buf)?;
        self.dirty = true;
        Ok(())
    }

    /// The entry for `offset`, if it is retained.
    pub(crate) fn get(&self, offset: u64) -> io::Result<Option<Entry>> {
        if offset < self.earliest || offset >= self.end() {
            return Ok(None);
        }
        self.entry(offset).map(Some)
    }

    /// The first offset at or after `from` whose record's position is at least `position`
    /// (carried entries and holes left aside: where the records from `position` on begin).
    pub(crate) fn first_at_position(&self, from: u64, position: u64) -> io::Result<u64> {
        if self.carried {
            return self.scan(from, |e| {
                !e.carried && !e.is_hole() && e.position >= position
            });
        }
        self.lower_bound(from, |e| e.position >= position)
    }

    /// The first offset at or after `from` whose message the journal still holds when it
    /// starts at `start`: a carried entry counts (the new start of a compacted partition).
    pub(crate) fn first_held(&self, from: u64, start: u64) -> io::Result<u64> {
        if self.carried {
            return self.scan(from, |e| !e.is_hole() && e.position >= start);
        }
        self.lower_bound(from, |e| e.position >= start)
    }

    /// A search by position in an index whose positions do not grow with offsets: one entry
    /// after another.
    fn scan(&self, from: u64, pred: impl Fn(&Entry) -> bool) -> io::Result<u64> {
        for offset in from.max(self.earliest)..self.end() {
            if pred(&self.entry(offset)?) {
                return Ok(offset);
            }
        }
        Ok(self.end())
    }

    /// The first retained offset appended at or after `time_ms` (`end()` if none).
    pub(crate) fn first_at_time(&self, time_ms: i64) -> io::Result<u64> {
        self.lower_bound(self.earliest, |e| e.append_time_ms >= time_ms)
    }

    /// Forgets entries at and after `end`, in memory and on disk.
    pub(crate) fn truncate(&mut self, end: u64) -> io::Result<()> {
        if end >= self.end() {
            return Ok(());
        }
        if let Some(bytes) = self.bytes {
            let from = end.max(self.earliest);
            let mut gone = self.records_in(from, self.end())?;
            // A record whose first entries stay keeps its bytes.
            if from > self.earliest && self.entry(from - 1)?.position == self.entry(from)?.position
            {
                gone = gone.saturating_sub(u64::from(self.entry(from)?.size));
            }
            self.bytes = Some(bytes.saturating_sub(gone));
        }
        if end >= self.written {
            self.pending
                .truncate((end - self.written) as usize * ENTRY_LEN);
        } else {
            self.pending.clear();
            self.truncate_files(end)?;
            self.written = end;
        }
        self.earliest = self.earliest.min(end);
        Ok(())
    }

    /// Empties the index and makes `end` its next offset (a replica whose journal restarts
    /// past this partition's last record). The file that would hold offset `end - 1` is kept
    /// as a hole, so a checkpoint counting `end` entries reopens; holes read as position 0,
    /// below any restarted journal, and are trimmed on recovery.
    pub(crate) fn reset_to(&mut self, end: u64) -> io::Result<()> {
        for (first, _) in std::mem::take(&mut self.files) {
            self.backend.remove(&self.dir.join(file_name(first)))?;
        }
        self.pending.clear();
        self.written = end;
        self.earliest = end;
        self.bytes = Some(0);
        if end > 0 {
            let first = self.file_start(end - 1);
            self.file(first)?;
            if let Some(file) = self.files.get(&first) {
                file.set_len((end - first) * ENTRY_LEN as u64)?;
            }
        }
        self.dirty = true;
        Ok(())
    }

    /// Drops entries below `earliest`: whole files that hold nothing retained are deleted.
    pub(crate) fn trim_front(&mut self, earliest: u64) -> io::Result<()> {
        if let Some(bytes) = self.bytes
            && earliest > self.earliest
        {
            let gone = self.records_in(self.earliest, earliest.min(self.end()))?;
            self.bytes = Some(bytes.saturating_sub(gone));
        }
        self.earliest = earliest.max(self.earliest);
        let keep_from = self.file_start(self.earliest);
        let drop: Vec<u64> = self.files.range(..keep_from).map(|(k, _)| *k).collect();
        for first in drop {
            self.files.remove(&first);
            self.backend.remove(&self.dir.join(file_name(first)))?;
        }
        Ok(())
    }

    /// Writes pending entries to the files (the page cache) without syncing; returns whether
    /// anything was written since the last call. The group syncs every index at once.
    pub(crate) fn write_pending(&mut self) -> io::Result<bool> {
        let mut at = 0;
        while at < self.pending.len() {
            let offset = self.written + (at / ENTRY_LEN) as u64;
            let first = self.file_start(offset);
            let room = (first + self.entries_per_file - offset) as usize * ENTRY_LEN;
            let n = room.min(self.pending.len() - at);
            self.file(first)?;
            self.files[&first].write_at(
                (offset - first) * ENTRY_LEN as u64,
                &self.pending[at..at + n],
            )?;
            at += n;
            self.dirty = true;
        }
        self.written = self.end();
        self.pending.clear();
        Ok(std::mem::take(&mut self.dirty))
    }

    /// Deletes the index from disk.
    pub(crate) fn remove(self) -> io::Result<()> {
        drop(self.files);
        self.backend.remove_dir_all(&self.dir)
    }

    fn file_start(&self, offset: u64) -> u64 {
        offset - offset % self.entries_per_file
    }

    fn file(&mut self, first: u64) -> io::Result<()> {
        if !self.files.contains_key(&first) {
            let file = self
                .backend
                .open_growable(&self.dir.join(file_name(first)))?;
            self.backend.sync_dir(&self.dir)?;
            self.files.insert(first, file);
        }
        Ok(())
    }

    fn entry(&self, offset: u64) -> io::Result<Entry> {
        if offset >= self.written {
            let at = (offset - self.written) as usize * ENTRY_LEN;
            return Ok(Entry::decode(&self.pending[at..at + ENTRY_LEN]));
        }
        let first = self.file_start(offset);
        let Some(file) = self.files.get(&first) else {
            // A hole before the first rebuilt entry reads as position zero.
            return Ok(Entry::hole(i64::MIN));
        };
        let mut buf = [0u8; ENTRY_LEN];
        file.read_at((offset - first) * ENTRY_LEN as u64, &mut buf)?;
        Ok(Entry::decode(&buf))
    }

    fn lower_bound(&self, from: u64, pred: impl Fn(&Entry) -> bool) -> io::Result<u64> {
        let (mut lo, mut hi) = (from, self.end());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(&self.entry(mid)?) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }

    fn truncate_files(&mut self, end: u64) -> io::Result<()> {
        let drop: Vec<u64> = self.files.range(end..).map(|(k, _)| *k).collect();
        for first in drop {
            self.files.remove(&first);
            self.backend.remove(&self.dir.join(file_name(first)))?;
        }
        if end > 0 {
            let first = self.file_start(end - 1);
            if let Some(file) = self.files.get(&first) {
                file.set_len((end - first) * ENTRY_LEN as u64)?;
                file.sync_data()?;
            }
        }
        Ok(())
    }
}

fn file_name(first: u64) -> String {
    format!("{first:020}.idx")
}

fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".idx")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{FileBackend, MemoryBackend};

    fn file_backend() -> Arc<dyn Backend> {
        Arc::new(FileBackend)
    }

    fn e(position: u64, t: i64) -> Entry {
        Entry {
            position,
            size: 10,
            append_time_ms: t,
            carried: false,
        }
    }

    fn push_flush_reopen_truncate(backend: Arc<dyn Backend>, dir: &Path) {
        let mut idx = PartitionIndex::open(backend.clone(), dir, 4, 0).unwrap();
        for o in 0..10 {
            idx.push(o, e(o * 100, 1000 + o as i64 * 10));
        }
        assert_eq!(idx.get(3).unwrap(), Some(e(300, 1030)));
        idx.write_pending().unwrap();
        assert_eq!(idx.get(9).unwrap(), Some(e(900, 1090)));
        assert_eq!(idx.first_at_time(1045).unwrap(), 5);
        assert_eq!(idx.first_at_position(0, 450).unwrap(), 5);
        idx.push(10, e(1000, 2000));
        drop(idx);

        // Only flushed entries the checkpoint vouches for survive a reopen.
        let mut idx = PartitionIndex::open(backend.clone(), dir, 4, 7).unwrap();
        assert_eq!(idx.end(), 7);
        assert_eq!(idx.get(7).unwrap(), None);
        idx.push(7, e(777, 3000));
        idx.truncate(5).unwrap();
        assert_eq!(idx.end(), 5);
        idx.trim_front(4).unwrap();
        assert_eq!(idx.get(3).unwrap(), None);
        assert_eq!(idx.get(4).unwrap(), Some(e(400, 1040)));
        let files = backend.list(dir).unwrap();
        assert_eq!(files, vec![dir.join(file_name(4))]);
        assert!(PartitionIndex::open(backend.clone(), dir, 4, 9).is_err());
        idx.remove().unwrap();
        assert!(backend.list(dir).unwrap_or_default().is_empty());
    }

    #[test]
    fn push_flush_reopen_truncate_on_files() {
        let dir = tempfile::tempdir().unwrap();
        push_flush_reopen_truncate(file_backend(), &dir.path().join("p"));
        assert!(!dir.path().join("p").exists());
    }

    #[test]
    fn push_flush_reopen_truncate_in_memory() {
        push_flush_reopen_truncate(MemoryBackend::new(), Path::new("/nowhere/index/t/0"));
        assert!(!Path::new("/nowhere").exists());
    }

    #[test]
    fn rebuilt_index_starts_with_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = PartitionIndex::open(file_backend(), dir.path(), 4, 0).unwrap();
        idx.push(6, e(5000, 1));
        idx.push(7, e(5100, 2));
        idx.write_pending().unwrap();
        assert_eq!(idx.earliest(), 6);
        assert_eq!(idx.get(5).unwrap(), None);
        assert_eq!(idx.first_at_position(0, 5000).unwrap(), 6);
        assert_eq!(idx.get(7).unwrap(), Some(e(5100, 2)));
    }
}
