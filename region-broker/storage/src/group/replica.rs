//! What the replication layer uses: records addressed by index (the raft log index),
//! appending raft entries and records copied from another replica byte for byte, reading
//! whole records for a pulling replica, the commit watermark, log truncation by index, and
//! restarting the journal where a source's retained journal starts.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use meridian_proto::record::{self, RecordHeader};
use tokio::sync::{oneshot, watch};

use super::{Body, Command, LogGroup, RaftRecord, RecordChunk, closed};
use crate::{AppendError, Appended, FlushPolicy, PartitionKey, ReadError};

/// Where each record is, by record index: `(position, length)` from `first_index` on. The
/// replication layer addresses records by index (the raft log index); this maps an index to
/// the journal without a scan, at twelve bytes per record.
#[derive(Debug, Default, Clone)]
pub(super) struct RecordPositions {
    pub(super) first_index: u64,
    pub(super) entries: std::collections::VecDeque<(u64, u32)>,
}

impl RecordPositions {
    pub(super) fn push(&mut self, index: u64, position: u64, len: u32) {
        if self.entries.is_empty() {
            self.first_index = index;
        }
        debug_assert_eq!(index, self.first_index + self.entries.len() as u64);
        self.entries.push_back((position, len));
    }

    pub(super) fn get(&self, index: u64) -> Option<(u64, u32)> {
        let i = index.checked_sub(self.first_index)?;
        self.entries.get(usize::try_from(i).ok()?).copied()
    }

    /// `(first, last)` record index held.
    pub(super) fn bounds(&self) -> Option<(u64, u64)> {
        (!self.entries.is_empty()).then(|| {
            (
                self.first_index,
                self.first_index + self.entries.len() as u64 - 1,
            )
        })
    }

    /// Forgets records that start below `position` (deleted by retention).
    pub(super) fn drop_below(&mut self, position: u64) {
        while self.entries.front().is_some_and(|&(p, _)| p < position) {
            self.entries.pop_front();
            self.first_index += 1;
        }
    }
}

impl LogGroup {
    /// Appends records whose term and index the replication layer chose (raft entries);
    /// resolves when all are durable. A batch gets its partition's next offset.
    pub async fn append_raft(
        &self,
        entries: Vec<RaftRecord>,
    ) -> Result<Vec<Appended>, AppendError> {
        let mut waits = Vec::with_capacity(entries.len());
        for entry in entries {
            let (reply, rx) = oneshot::channel();
            let key = entry.key;
            self.tx
                .send(Command::Append {
                    key,
                    body: Body::Raft { entry },
                    reply,
                })
                .await
                .map_err(|_| AppendError::Closed)?;
            waits.push(rx);
        }
        let mut out = Vec::with_capacity(waits.len());
        for rx in waits {
            out.push(rx.await.map_err(|_| AppendError::Closed)??);
        }
        Ok(out)
    }

    /// The record with this index, if the journal holds it.
    pub fn record_by_index(&self, index: u64) -> Result<Option<(RecordHeader, Bytes)>, ReadError> {
        let Some((position, _)) = self
            .shared
            .records
            .lock()
            .expect("records lock poisoned")
            .get(index)
        else {
            return Ok(None);
        };
        Ok(Some(self.shared.journal.read(position)?))
    }

    /// The header of the record with this index, without reading (or checksumming) its
    /// payload: what applying a raft entry needs.
    pub fn record_header_by_index(&self, index: u64) -> Result<Option<RecordHeader>, ReadError> {
        let Some((position, _)) = self
            .shared
            .records
            .lock()
            .expect("records lock poisoned")
            .get(index)
        else {
            return Ok(None);
        };
        Ok(Some(self.shared.journal.read_header(position)?))
    }

    /// The first and last record index the journal holds.
    pub fn record_bounds(&self) -> Option<(u64, u64)> {
        self.shared
            .records
            .lock()
            .expect("records lock poisoned")
            .bounds()
    }

    /// The journal position just past the record with this index.
    pub fn end_of_record(&self, index: u64) -> Option<u64> {
        self.shared
            .records
            .lock()
            .expect("records lock poisoned")
            .get(index)
            .map(|(p, len)| p + u64::from(len))
    }

    /// Removes every record after the one with index `index` (every record, with `None`):
    /// raft's log truncation. Raft guarantees no committed record is among them, so this
    /// may cut below the watermark (which follows it down).
    pub async fn truncate_after_index(&self, index: Option<u64>) -> io::Result<()> {
        let position = {
            let records = self.shared.records.lock().expect("records lock poisoned");
            let Some((first, last)) = records.bounds() else {
                return Ok(());
            };
            match index {
                Some(i) if i >= last => return Ok(()),
                Some(i) if i >= first => records.get(i + 1).map(|(p, _)| p),
                _ => records.get(first).map(|(p, _)| p),
            }
        };
        match position {
            Some(position) => self.truncate(position, true).await,
            None => Ok(()),
        }
    }

    /// Lets retention delete segments that end at or below `position` (a replicated group
    /// deletes nothing until told).
    pub fn set_retention_floor(&self, position: u64) {
        self.shared
            .retention_floor
            .fetch_max(position, Ordering::SeqCst);
    }

    /// Drops every record and restarts the journal empty at `position`, each partition's
    /// next offset taken from `ends` (or kept): a replica whose journal ends before the
    /// first record its source still retains starts over from there. Crash-safe: the intent
    /// is checkpointed first and recovery finishes it.
    pub async fn reset_to(
        &self,
        position: u64,
        ends: HashMap<PartitionKey, u64>,
    ) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Reset {
                position,
                ends,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Each partition's next offset as of journal position `position` (the first offset
    /// whose record starts at or after it): what a replica restarting its journal there
    /// needs for partitions it will receive no record of.
    pub fn partition_ends_at(
        &self,
        position: u64,
    ) -> Result<HashMap<PartitionKey, u64>, ReadError> {
        let indexes: Vec<_> = self
            .shared
            .indexes
            .read()
            .expect("indexes lock poisoned")
            .iter()
            .map(|(k, i)| (*k, i.clone()))
            .collect();
        let mut out = HashMap::with_capacity(indexes.len());
        for (key, index) in indexes {
            let index = index.lock().expect("index lock poisoned");
            out.insert(key, index.first_at_position(index.earliest(), position)?);
        }
        Ok(out)
    }

    /// A receiver of the end of records a replica may pull ([`LogGroup::read_records`]):
    /// changes on every group commit and truncation.
    pub fn subscribe_pullable(&self) -> watch::Receiver<u64> {
        self.shared.pullable.subscribe()
    }

    /// The commit watermark of a replicated group.
    pub fn watermark(&self) -> u64 {
        self.shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .watermark
    }

    /// The index and term of the last record, if any: where a replica's history ends.
    pub fn last_record(&self) -> Option<(u64, u64)> {
        let (_, last) = self.record_bounds()?;
        let header = self.record_header_by_index(last).ok()??;
        Some((last, header.term))
    }

    /// The last record index whose term is at most `term` (terms never decrease along the
    /// journal, so this is a binary search): where a replica whose history ends in `term`
    /// stops agreeing with this one. `None` when no held record qualifies.
    pub fn last_index_of_term_at_most(&self, term: u64) -> Result<Option<u64>, ReadError> {
        let Some((first, last)) = self.record_bounds() else {
            return Ok(None);
        };
        let term_of = |i: u64| -> Result<u64, ReadError> {
            Ok(self.record_header_by_index(i)?.map_or(u64::MAX, |h| h.term))
        };
        if term_of(first)? > term {
            return Ok(None);
        }
        // Invariant: term_of(lo) <= term; answer in lo..=hi.
        let (mut lo, mut hi) = (first, last);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if term_of(mid)? <= term {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(Some(lo))
    }

    /// Sets the commit watermark of a replicated group: records below `position` are
    /// committed, and become visible once durable here. It never moves back.
    pub fn set_watermark(&self, position: u64) {
        let mut p = self.shared.progress.lock().expect("progress lock poisoned");
        p.watermark = p.watermark.max(position);
        drop(p);
        self.shared.progress_changed.notify_all();
    }

    /// Reads whole records from `from` (a record boundary), for a replica pulling by
    /// position: only records durable here, from one segment, about `max_bytes` (at least one
    /// record when any is available).
    pub fn read_records(&self, from: u64, max_bytes: usize) -> Result<RecordChunk, ReadError> {
        self.read_records_until(from, None, max_bytes)
    }

    /// [`LogGroup::read_records`], sending no record that ends past `until`.
    pub fn read_records_until(
        &self,
        from: u64,
        until: Option<u64>,
        max_bytes: usize,
    ) -> Result<RecordChunk, ReadError> {
        let durable = {
            let p = self.shared.progress.lock().expect("progress lock poisoned");
            match self.shared.config.flush {
                FlushPolicy::Fsync => p.synced,
                FlushPolicy::Async => p.written,
            }
        };
        let durable = until.map_or(durable, |u| durable.min(u));
        let (position, records, next) = self.shared.journal.read_chunk(from, durable, max_bytes)?;
        Ok(RecordChunk {
            position,
            records,
            next,
        })
    }

    /// Appends records read from another replica ([`LogGroup::read_records`]) byte for byte
    /// (same term, index, offsets and times) at the same journal position; resolves with the
    /// end position once they are durable here. Records that do not continue this replica's
    /// history are refused with [`AppendError::Diverged`].
    pub async fn append_records(&self, chunk: &RecordChunk) -> Result<u64, AppendError> {
        let mut waits = Vec::new();
        let mut at = 0usize;
        while at < chunk.records.len() {
            let header = match record::parse(&chunk.records[at..]) {
                record::Parsed::Record(h) => h,
                other => {
                    return Err(AppendError::Diverged {
                        dir: self.shared.dir_display.clone(),
                        reason: format!(
                            "byte {at} of the replicated chunk is not a record: {other:?}"
                        ),
                    });
                }
            };
            let len = header.len as usize;
            let body = Body::Verbatim {
                position: chunk.position + at as u64,
                header,
                bytes: chunk.records.slice(at..at + len),
            };
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(Command::Append {
                    key: (header.topic_id, header.partition),
                    body,
                    reply,
                })
                .await
                .map_err(|_| AppendError::Closed)?;
            waits.push(rx);
            at += len;
        }
        for rx in waits {
            rx.await.map_err(|_| AppendError::Closed)??;
        }
        // Every record landed where the leader has it (checked as each was staged).
        Ok(chunk.position + chunk.records.len() as u64)
    }
}
