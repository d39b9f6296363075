//! The journal: a log group's append-only sequence of records across segment files.
//!
//! Positions are global byte offsets: segment files are named by the position of their first
//! byte, so a position finds its segment by binary search and never changes meaning when
//! older segments are deleted. A record never spans two segments; when the next record does not
//! fit, the writer ends the segment with a marker and starts the next one at the old
//! segment's end.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;

use super::backend::Backend;
use super::segment::{self, Segment};
use meridian_proto::record::{self, Parsed, RecordHeader, SEGMENT_END_LEN};

/// The segments of one journal. Readers clone segment handles under a short read lock; the
/// single writer ([`Writer`]) and retention take the write lock only to add or drop a segment.
#[derive(Debug)]
pub(crate) struct Journal {
    backend: Arc<dyn Backend>,
    dir: PathBuf,
    segment_bytes: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
}

/// Where a walk over the journal stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalkEnd {
    /// Never-written space: the normal end.
    Clean(u64),
    /// Bytes that are not a record: a torn write or corruption at this position.
    Invalid(u64, &'static str),
}

impl Journal {
    /// Opens the journal in `dir` of `backend`, creating the first segment if there is none.
    pub(crate) fn open(
        backend: Arc<dyn Backend>,
        dir: &Path,
        segment_bytes: u64,
    ) -> io::Result<Journal> {
        backend.create_dir_all(dir)?;
        let mut starts = Vec::new();
        for path in backend.list(dir)? {
            let name = path.file_name().and_then(|n| n.to_str());
            match name.and_then(segment::parse_file_name) {
                Some(start) => starts.push((start, path)),
                None => {
                    tracing::warn!(file = %path.display(), "ignoring unknown file in journal directory")
                }
            }
        }
        starts.sort();
        let mut segments = Vec::with_capacity(starts.len());
        for (start, path) in starts {
            segments.push(Arc::new(Segment::open(&*backend, path, start)?));
        }
        for pair in segments.windows(2) {
            if pair[0].end() != pair[1].start {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "journal segments are not contiguous: {} ends at {} but the next starts at {}",
                        pair[0].path.display(),
                        pair[0].end(),
                        pair[1].start
                    ),
                ));
            }
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(&*backend, dir, 0, segment_bytes)?));
        }
        Ok(Journal {
            backend,
            dir: dir.to_owned(),
            segment_bytes,
            segments: RwLock::new(segments),
        })
    }

    /// Position of the first retained byte.
    pub(crate) fn start(&self) -> u64 {
        self.read_segments()[0].start
    }

    /// Total bytes of all segment files.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.read_segments().iter().map(|s| s.size).sum()
    }

    /// Number of segment files.
    pub(crate) fn segment_count(&self) -> usize {
        self.read_segments().len()
    }

    /// The segment holding `pos`, if it is retained.
    pub(crate) fn segment_for(&self, pos: u64) -> Option<Arc<Segment>> {
        let segments = self.read_segments();
        let i = segments.partition_point(|s| s.start <= pos);
        let seg = segments.get(i.checked_sub(1)?)?;
        (pos < seg.end()).then(|| seg.clone())
    }

    /// Reads the record at `pos`, which must be a record boundary.
    pub(crate) fn read(&self, pos: u64) -> Result<(RecordHeader, Bytes), ReadFailure> {
        let seg = self
            .segment_for(pos)
            .ok_or(ReadFailure::Gone { position: pos })?;
        let tail = seg.tail(pos - seg.start);
        match record::parse(&tail) {
            Parsed::Record(h) => Ok((h, tail.slice(record::HEADER_LEN..h.len as usize))),
            Parsed::Invalid(reason) => Err(ReadFailure::Corrupt {
                position: pos,
                reason,
            }),
            Parsed::SegmentEnd | Parsed::Empty => Err(ReadFailure::Corrupt {
                position: pos,
                reason: "no record at an indexed position",
            }),
        }
    }

    /// The header of the record at `pos` (a record boundary), its payload unread.
    pub(crate) fn read_header(&self, pos: u64) -> Result<RecordHeader, ReadFailure> {
        let seg = self
            .segment_for(pos)
            .ok_or(ReadFailure::Gone { position: pos })?;
        match record::parse_checked(&seg.tail(pos - seg.start), false) {
            Parsed::Record(h) => Ok(h),
            Parsed::Invalid(reason) => Err(ReadFailure::Corrupt {
                position: pos,
                reason,
            }),
            Parsed::SegmentEnd | Parsed::Empty => Err(ReadFailure::Corrupt {
                position: pos,
                reason: "no record at an indexed position",
            }),
        }
    }

    /// Calls `f` with every record from `from` (a record boundary) up to `to`, and says where
    /// the walk stopped: at `to`, at the end of written data, or at an invalid record.
    pub(crate) fn walk(
        &self,
        from: u64,
        to: u64,
        f: impl FnMut(u64, &RecordHeader, &Bytes),
    ) -> WalkEnd {
        self.walk_verified_from(from, to, 0, f)
    }

    /// [`Journal::walk`], checking checksums only from `verify_from` on.
    pub(crate) fn walk_verified_from(
        &self,
        from: u64,
        to: u64,
        verify_from: u64,
        mut f: impl FnMut(u64, &RecordHeader, &Bytes),
    ) -> WalkEnd {
        let mut pos = from.max(self.start());
        let mut seg = None::<Arc<Segment>>;
        while pos < to {
            if seg.as_ref().is_none_or(|s| pos >= s.end()) {
                match self.segment_for(pos) {
                    Some(s) => seg = Some(s),
                    None => return WalkEnd::Clean(pos),
                }
            }
            let s = seg.as_ref().expect("segment set above");
            let tail = s.tail(pos - s.start);
            match record::parse_checked(&tail, pos >= verify_from) {
                Parsed::Record(h) => {
                    f(pos, &h, &tail.slice(record::HEADER_LEN..h.len as usize));
                    pos += u64::from(h.len);
                }
                Parsed::SegmentEnd => pos = s.end(),
                Parsed::Empty => return WalkEnd::Clean(pos),
                Parsed::Invalid(reason) => return WalkEnd::Invalid(pos, reason),
            }
        }
        WalkEnd::Clean(pos)
    }

    /// Syncs every segment holding bytes of `[from, to)`.
    pub(crate) fn sync_range(&self, from: u64, to: u64) -> io::Result<()> {
        let mut pos = from.max(self.start());
        while pos < to {
            let Some(seg) = self.segment_for(pos) else {
                break;
            };
            seg.sync()?;
            pos = seg.end();
        }
        Ok(())
    }

    /// Whole records from `from` up to `to`, from one segment, about `max_bytes` (at least
    /// one record): `(position of the first, bytes, next read position)`. An end-of-segment
    /// marker at `from` is stepped over.
    pub(crate) fn read_chunk(
        &self,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<(u64, Bytes, u64), ReadFailure> {
        let mut start = from;
        loop {
            if start >= to {
                return Ok((start, Bytes::new(), start));
            }
            let seg = self
                .segment_for(start)
                .ok_or(ReadFailure::Gone { position: start })?;
            let tail = seg.tail(start - seg.start);
            let mut at = 0usize;
            let mut segment_end = false;
            while start + (at as u64) < to && (at == 0 || at < max_bytes) {
                match record::parse(&tail[at..]) {
                    Parsed::Record(h) => at += h.len as usize,
                    Parsed::SegmentEnd => {
                        segment_end = true;
                        break;
                    }
                    Parsed::Empty => break,
                    Parsed::Invalid(reason) => {
                        return Err(ReadFailure::Corrupt {
                            position: start + at as u64,
                            reason,
                        });
                    }
                }
            }
            if at == 0 {
                if segment_end {
                    start = seg.end();
                    continue;
                }
                return Ok((start, Bytes::new(), start));
            }
            return Ok((start, tail.slice(..at), start + at as u64));
        }
    }

    /// Makes `pos` the end of the journal: zeroes everything after it in its segment and
    /// deletes every later segment (last first, so a crash midway leaves a contiguous journal).
    pub(crate) fn cut(&self, pos: u64) -> io::Result<()> {
        let mut segments = self.segments.write().expect("journal lock poisoned");
        while segments.len() > 1 && segments.last().is_some_and(|s| s.start > pos) {
            let seg = segments.pop().expect("checked non-empty");
            self.backend.remove(&seg.path)?;
            self.backend.sync_dir(&self.dir)?;
        }
        if let Some(seg) = segments.last()
            && pos < seg.end()
        {
            seg.zero_from(pos.saturating_sub(seg.start))?;
        }
        Ok(())
    }

    /// Drops every segment and starts the journal afresh at `pos` (last segment first, so a
    /// crash midway leaves a contiguous journal; the caller records the intent first).
    pub(crate) fn reset(&self, pos: u64) -> io::Result<()> {
        let mut segments = self.segments.write().expect("journal lock poisoned");
        while let Some(seg) = segments.pop() {
            self.backend.remove(&seg.path)?;
            self.backend.sync_dir(&self.dir)?;
        }
        segments.push(Arc::new(Segment::create(
            &*self.backend,
            &self.dir,
            pos,
            self.segment_bytes,
        )?));
        self.backend.sync_dir(&self.dir)?;
        Ok(())
    }

    /// Deletes the oldest segment if there is more than one and `keep` says not to keep it.
    pub(crate) fn drop_first_if(
        &self,
        keep: impl FnOnce(&Segment, &Segment) -> bool,
    ) -> io::Result<Option<u64>> {
        let mut segments = self.segments.write().expect("journal lock poisoned");
        if segments.len() < 2 || keep(&segments[0], &segments[1]) {
            return Ok(None);
        }
        let seg = segments.remove(0);
        self.backend.remove(&seg.path)?;
        self.backend.sync_dir(&self.dir)?;
        Ok(Some(segments[0].start))
    }

    /// The time of the first record of `seg`, if it has one.
    pub(crate) fn first_time(seg: &Segment) -> Option<i64> {
        match record::parse(&seg.tail(0)) {
            Parsed::Record(h) => Some(h.append_time_ms),
            _ => None,
        }
    }

    fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Segment>>> {
        self.segments.read().expect("journal lock poisoned")
    }

    fn last(&self) -> Arc<Segment> {
        self.read_segments()
            .last()
            .expect("a journal always has a segment")
            .clone()
    }

    fn push_segment(&self, start: u64) -> io::Result<Arc<Segment>> {
        let seg = Arc::new(Segment::create(
            &*self.backend,
            &self.dir,
            start,
            self.segment_bytes,
        )?);
        self.segments
            .write()
            .expect("journal lock poisoned")
            .push(seg.clone());
        Ok(seg)
    }
}

/// Why a read of an indexed position failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadFailure {
    /// Retention deleted the segment after the index was consulted.
    #[error("journal position {position} is no longer retained")]
    Gone {
        /// The position asked for.
        position: u64,
    },
    /// The bytes at the position are not a valid record.
    #[error("corrupt journal record at position {position}: {reason}")]
    Corrupt {
        /// The position asked for.
        position: u64,
        /// What is wrong.
        reason: &'static str,
    },
}

/// The journal's single writer. Records are staged into a buffer per segment and written
/// with one `pwrite` per segment touched; the segments [`Writer::take_unsynced`] gives are
/// then synced to make them durable together.
#[derive(Debug)]
pub(crate) struct Writer {
    pos: u64,
    seg: Arc<Segment>,
    buf: Vec<u8>,
    buf_start: u64,
    filled: Vec<Arc<Segment>>,
}

impl Writer {
    /// A writer that appends at `end`, the journal's recovered end.
    pub(crate) fn new(journal: &Journal, end: u64) -> io::Result<Writer> {
        let last = journal.last();
        let seg = if end == last.end() {
            journal.push_segment(end)?
        } else {
            last
        };
        assert!(
            seg.start <= end && end < seg.end(),
            "journal end {end} outside the last segment"
        );
        Ok(Writer {
            pos: end,
            seg,
            buf: Vec::new(),
            buf_start: end,
            filled: Vec::new(),
        })
    }

    /// Position of the next record.
    pub(crate) fn position(&self) -> u64 {
        self.pos
    }

    /// Where a record of `len` bytes would be staged.
    pub(crate) fn next_position(&self, len: usize) -> u64 {
        if self.pos + len as u64 + SEGMENT_END_LEN > self.seg.end() {
            self.seg.end()
        } else {
            self.pos
        }
    }

    /// Stages a record of `len` bytes: returns its position and the buffer to encode it into.
    /// Rolls to a new segment first if the record does not fit in this one.
    pub(crate) fn stage(
        &mut self,
        journal: &Journal,
        len: usize,
    ) -> io::Result<(u64, &mut Vec<u8>)> {
        let len = len as u64;
        assert!(
            len + SEGMENT_END_LEN <= journal.segment_bytes,
            "record larger than a segment"
        );
        if self.pos + len + SEGMENT_END_LEN > self.seg.end() {
            self.buf.extend_from_slice(&record::segment_end_marker());
            self.write_buffer()?;
            let next = journal.push_segment(self.seg.end())?;
            self.filled.push(std::mem::replace(&mut self.seg, next));
            self.pos = self.seg.start;
            self.buf_start = self.pos;
        }
        let at = self.pos;
        self.pos += len;
        Ok((at, &mut self.buf))
    }

    /// Writes everything staged.
    pub(crate) fn write(&mut self) -> io::Result<()> {
        self.write_buffer()
    }

    /// The segments written since the last sync; the caller makes them durable.
    pub(crate) fn take_unsynced(&mut self) -> Vec<Arc<Segment>> {
        let mut segments: Vec<Arc<Segment>> = self.filled.drain(..).collect();
        segments.push(self.seg.clone());
        segments
    }

    /// Forgets what was staged or written since `mark` after a failed write, cutting the
    /// journal back to `mark` so no partial record survives.
    pub(crate) fn rewind(&mut self, journal: &Journal, mark: u64) -> io::Result<()> {
        self.buf.clear();
        self.filled.clear();
        journal.cut(mark)?;
        *self = Writer::new(journal, mark)?;
        Ok(())
    }

    fn write_buffer(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.seg
                .write_at(self.buf_start - self.seg.start, &self.buf)?;
            self.buf_start += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}
