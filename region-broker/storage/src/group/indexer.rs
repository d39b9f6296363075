//! The indexer thread and indexing: durable (and, when replicated, committed) records become
//! queue-index entries and visible; indexes are flushed and the checkpoint written every
//! `flush_interval` (with the `async` policy the journal is synced then too); retention runs
//! every `retention_check_interval`. Recovery and truncation share the indexing code.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_proto::record::{self, RecordHeader, RecordKind};
use tokio::sync::mpsc;

use super::offsets::START_MARK;
use super::{Command, Shared, visible_limit};
use crate::checkpoint::Checkpoint;
use crate::index::{Entry, PartitionIndex};
use crate::journal::WalkEnd;
use crate::{FlushPolicy, LogThrottle, PartitionKey};

/// What indexing one record did.
enum Indexed {
    Added,
    /// Not a batch, or already indexed.
    Skipped,
    /// A batch of a partition the group does not hold.
    Unknown,
}

impl Shared {
    /// Adds index entries for the records in `[from, to)`; returns how many records it
    /// indexed. Records already indexed are skipped, so this is safe to repeat.
    pub(super) fn index_range(&self, from: u64, to: u64) -> io::Result<u64> {
        self.index_range_until_unknown(from, to, false)
            .map(|(n, _)| n)
    }

    /// Adds index entries for the records in `[from, to)`, skipping records already indexed;
    /// returns how many records it indexed and how far it got. With `wait_for_unknown`, it
    /// stops at a record of a partition the group does not know yet (in a replicated group
    /// the topic's creation may not have been applied here yet) unless its topic is retired.
    pub(super) fn index_range_until_unknown(
        &self,
        from: u64,
        to: u64,
        wait_for_unknown: bool,
    ) -> io::Result<(u64, u64)> {
        let indexes = self.indexes.read().expect("indexes lock poisoned");
        let retired = self.retired_topics.read().expect("retired lock poisoned");
        let mut n = 0;
        let mut failure = None;
        let mut waiting_at = None;
        let walk_end = self.journal.walk(from, to, |pos, h, payload| {
            if failure.is_some() || waiting_at.is_some() {
                return;
            }
            match self.index_record(&indexes, pos, h, payload) {
                Ok(Indexed::Added) => n += 1,
                Ok(Indexed::Skipped) => {}
                Ok(Indexed::Unknown) if wait_for_unknown && !retired.contains(&h.topic_id) => {
                    waiting_at = Some(pos)
                }
                Ok(Indexed::Unknown) => {}
                Err(e) => failure = Some(e),
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        match walk_end {
            WalkEnd::Invalid(pos, reason) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("corrupt journal record at {pos} below the durable end {to}: {reason}"),
            )),
            WalkEnd::Clean(_) => Ok((n, waiting_at.unwrap_or(to))),
        }
    }

    fn index_record(
        &self,
        indexes: &HashMap<PartitionKey, Arc<Mutex<PartitionIndex>>>,
        pos: u64,
        h: &RecordHeader,
        payload: &Bytes,
    ) -> io::Result<Indexed> {
        if h.kind == RecordKind::OffsetCommit {
            // A partition's new start (DeleteRecords) takes effect where every replica
            // makes records visible: here, in journal order, so the batches below it are
            // indexed already.
            if let Some((START_MARK, to)) = record::decode_offset_commit(payload)
                .as_ref()
                .map(|(g, o)| (g.as_str(), *o))
                && let Some(index) = indexes.get(&(h.topic_id, h.partition))
            {
                let mut index = index.lock().expect("index lock poisoned");
                self.trim_start((h.topic_id, h.partition), &mut index, to)
                    .map_err(|e| io::Error::other(e.to_string()))?;
            }
            return Ok(Indexed::Skipped);
        }
        if h.kind == RecordKind::Carried {
            let Some(index) = indexes.get(&(h.topic_id, h.partition)) else {
                return Ok(Indexed::Unknown);
            };
            let mut index = index.lock().expect("index lock poisoned");
            let Some((append_time_ms, _)) = record::split_carried(payload) else {
                return Ok(Indexed::Skipped);
            };
            let entry = Entry {
                position: pos,
                size: h.len,
                append_time_ms,
                carried: true,
            };
            // A copy of a message superseded before the copy was indexed (its key written
            // again meanwhile) is not pointed at: the message goes with its segment.
            if !self.carried_still_live((h.topic_id, h.partition), h, payload) {
                return Ok(Indexed::Skipped);
            }
            index.carry(h.base_offset, entry)?;
            self.carried.fetch_add(1, Ordering::Relaxed);
            self.observe_compacted((h.topic_id, h.partition), h, payload);
            return Ok(Indexed::Added);
        }
        if h.kind != RecordKind::Batch {
            return Ok(Indexed::Skipped);
        }
        // Records of deleted topics stay in the journal until retention; they index nowhere.
        let Some(index) = indexes.get(&(h.topic_id, h.partition)) else {
            return Ok(Indexed::Unknown);
        };
        let mut index = index.lock().expect("index lock poisoned");
        let end = index.end();
        if h.base_offset + u64::from(h.count) <= end {
            return Ok(Indexed::Skipped);
        }
        let entry = Entry {
            position: pos,
            size: h.len,
            append_time_ms: h.append_time_ms,
            carried: false,
        };
        let mut from = h.base_offset;
        if h.base_offset != end && end != index.earliest() {
            // A compacted partition rebuilt from a journal that lost messages between
            // carried ones: holes up to this batch. Anywhere else a gap is corruption.
            if !index.push_past_gap(h.base_offset, entry) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "record at {pos} of partition {}/{} starts at offset {} but the index ends at {end}",
                        h.topic_id, h.partition, h.base_offset
                    ),
                ));
            }
            from += 1;
        }
        for offset in from..h.base_offset + u64::from(h.count) {
            index.push(offset, entry);
        }
        self.observe_compacted((h.topic_id, h.partition), h, payload);
        Ok(Indexed::Added)
    }

    /// Flushes every index and records, durably, that the journal is synced to `synced` and
    /// indexed to `indexed`.
    pub(super) fn flush_and_checkpoint(&self, synced: u64, indexed: u64) -> io::Result<()> {
        let indexes = self.indexes.read().expect("indexes lock poisoned");
        let mut counts = Vec::with_capacity(indexes.len());
        let mut starts = Vec::new();
        let mut written = false;
        for (key, index) in indexes.iter() {
            let mut index = index.lock().expect("index lock poisoned");
            written |= index.write_pending()?;
            counts.push((key.0, key.1, index.end()));
            if index.earliest() > 0 {
                starts.push((key.0, key.1, index.earliest()));
            }
        }
        for (key, &end) in self
            .pending_ends
            .lock()
            .expect("pending ends lock poisoned")
            .iter()
        {
            if !indexes.contains_key(key) {
                counts.push((key.0, key.1, end));
            }
        }
        if written {
            self.indexes_unsynced.store(true, Ordering::SeqCst);
        }
        if self.indexes_unsynced.load(Ordering::SeqCst) {
            // One sync of every index file at once (on real files one syncfs) instead of an
            // fsync per file: with thousands of partitions, per-file fsyncs cost more disk
            // time than the journal itself. Until it succeeds no checkpoint counts what was
            // written: after a failed sync the next flush syncs again, even with nothing new.
            self.config.backend.sync_all(&self.dir.join("index"))?;
            self.indexes_unsynced.store(false, Ordering::SeqCst);
        }
        counts.sort_unstable();
        starts.sort_unstable();
        Checkpoint {
            journal_synced: synced,
            indexed,
            counts,
            starts,
            truncate_to: None,
            reset_to: None,
        }
        .store(&*self.config.backend, &self.dir)
    }
}

/// The indexer thread: indexes durable records, flushes, checkpoints, applies retention.
pub(super) struct Indexer {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: mpsc::Sender<Command>,
    pub(super) last_flush: Instant,
    pub(super) last_retention: Instant,
    /// Rate limits of the failures' log lines: indexing, flushing, retention. A full disk
    /// fails every flush until space returns; each is retried on the next round.
    failures: [LogThrottle; 3],
}

impl Indexer {
    pub(super) fn new(shared: Arc<Shared>, tx: mpsc::Sender<Command>) -> Indexer {
        Indexer {
            shared,
            tx,
            last_flush: Instant::now(),
            last_retention: Instant::now(),
            failures: Default::default(),
        }
    }

    pub(super) fn run(mut self) {
        let config = self.shared.config.clone();
        loop {
            let stopping = self.shared.stop.load(Ordering::SeqCst);
            {
                let progress = self.shared.progress.lock().expect("progress lock poisoned");
                let wait = config
                    .flush_interval
                    .saturating_sub(self.last_flush.elapsed())
                    .max(Duration::from_millis(1));
                let _ = self
                    .shared
                    .progress_changed
                    .wait_timeout_while(progress, wait, |p| {
                        visible_limit(p, &config) <= p.indexed
                            && !self.shared.stop.load(Ordering::SeqCst)
                    })
                    .expect("progress lock poisoned");
            }
            if self.shared.crashed.load(Ordering::SeqCst) {
                return;
            }
            let indexed = self.index_to();
            self.report(0, "indexing", indexed);
            if stopping || self.last_flush.elapsed() >= config.flush_interval {
                let flushed = self.flush();
                self.report(1, "index flush", flushed);
                self.last_flush = Instant::now();
            }
            if stopping {
                return;
            }
            if self.last_retention.elapsed() >= config.retention_check_interval {
                let applied = self.retention();
                self.report(2, "retention", applied);
                self.last_retention = Instant::now();
            }
        }
    }

    /// Applies retention; when it stops to carry compacted messages forward, indexes the
    /// copies and goes on (a bounded number of rounds: the next check goes further).
    fn retention(&self) -> io::Result<()> {
        for _ in 0..64 {
            if !self.shared.apply_retention(&self.tx)? {
                break;
            }
            self.index_to()?;
        }
        Ok(())
    }

    /// Logs the outcome of one of the indexer's tasks, at most once per interval while it
    /// keeps failing (with how many failures were not logged), and once when it succeeds
    /// again.
    fn report(&mut self, task: usize, what: &'static str, result: io::Result<()>) {
        let dir = &self.shared.dir_display;
        match result {
            Ok(()) => {
                if let Some((failures, took)) = self.failures[task].succeeded() {
                    tracing::info!(dir = %dir, failures, seconds = took.as_secs(), "{what} succeeds again");
                }
            }
            Err(e) => {
                if let Some(suppressed) = self.failures[task].failed() {
                    tracing::error!(dir = %dir, error = %e, suppressed, "{what} failed (retried every round)");
                }
            }
        }
    }

    /// Indexes every record below the durable position. The position is read under the
    /// indexing lock, never from an earlier snapshot: a truncation may have moved the end
    /// back (and appends moved it on again) since, and the end must be a record boundary.
    fn index_to(&self) -> io::Result<()> {
        let _indexing = self.shared.indexing.lock().expect("indexing lock poisoned");
        let (from, to) = {
            let p = self.shared.progress.lock().expect("progress lock poisoned");
            (p.indexed, visible_limit(&p, &self.shared.config))
        };
        if to <= from {
            return Ok(());
        }
        let (_, reached) =
            self.shared
                .index_range_until_unknown(from, to, self.shared.config.replicated)?;
        {
            let mut p = self.shared.progress.lock().expect("progress lock poisoned");
            p.indexed = reached;
            p.index_waiting = reached < to;
        }
        if reached > from {
            self.shared.visible.send_replace(reached);
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let _indexing = self.shared.indexing.lock().expect("indexing lock poisoned");
        let (written, indexed) = {
            let p = self.shared.progress.lock().expect("progress lock poisoned");
            (p.written, p.indexed)
        };
        let mut synced = self
            .shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .synced;
        if self.shared.config.flush == FlushPolicy::Async && synced < written {
            self.shared.journal.sync_range(synced, written)?;
            let mut pos = synced.max(self.shared.journal.start());
            while pos < written {
                let Some(seg) = self.shared.journal.segment_for(pos) else {
                    break;
                };
                seg.sync()?;
                pos = seg.end();
            }
            let mut p = self.shared.progress.lock().expect("progress lock poisoned");
            p.synced = p.synced.max(written);
            synced = p.synced;
        }
        self.shared.flush_and_checkpoint(synced, indexed)
    }
}
