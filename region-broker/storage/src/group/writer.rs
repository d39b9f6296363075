//! The writer thread, which owns the journal tail: it gathers every queued append (up to
//! `commit_bytes_max`), stages each record and writes them with one `pwrite` (group commit),
//! then hands the commit to the sync stage (`durable.rs`), which syncs it once (with the
//! `fsync` policy, or through a [`crate::SyncBatcher`]) and acknowledges its appends while
//! the writer stages the next commit. A failed write is cut and the appends refused; a
//! failed sync makes the group refuse writes until it is reopened. Truncation and reset run
//! here too (`truncation.rs`), between group commits, once the sync stage is drained.
//!
//! **A full disk heals by itself.** `ENOSPC` on a write, or on preallocating the next
//! segment, refuses that commit's appends (`AppendError::DiskFull`) and cuts what it wrote;
//! if even the cut cannot be written (it zeroes the failed bytes), it is retried before the
//! next commit, truncation or reset, and appends are refused until it succeeds. Nothing of a
//! full disk makes the group refuse writes for good: the next commit after space returns
//! succeeds. A failed *sync* (`EIO` on `fdatasync`, also of a cut) is different: the page
//! cache may have dropped the dirty pages, so what the disk holds is unknown and nothing
//! written since the last good sync may be reported as durable; the group refuses writes
//! (`AppendError::Fatal`) until it is reopened and recovery re-reads the disk.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use meridian_proto::producer::{self, ProducerBatch};
use meridian_proto::record::{self, HEADER_LEN, RecordHeader, RecordKind};
use tokio::sync::mpsc;

use super::durable::{self, Job, StagedReply, Written};
use super::offsets::{commit_values, durable_positions};
use super::producers::{is_marker, producer_of};
use super::{Body, Command, Reply, Shared, Staged, now_ms};
use crate::journal::Writer;
use crate::transactions::TxnEvent;
use crate::{AppendError, Appended, FlushPolicy, LogThrottle, PartitionKey};

/// The writer thread: group commit.
pub(super) struct Appender {
    pub(super) shared: Arc<Shared>,
    pub(super) writer: Writer,
    pub(super) rx: mpsc::Receiver<Command>,
    /// Index of the last record written, if any.
    pub(super) last_index: Option<u64>,
    pub(super) last_time: i64,
    /// Next offset of each partition with records in the journal (others: the index's end,
    /// for partitions whose records retention deleted).
    pub(super) next_offsets: HashMap<PartitionKey, u64>,
    /// Previous values of `next_offsets` changed by the commit in progress, to undo it.
    pub(super) undo: Vec<(PartitionKey, Option<u64>)>,
    /// Where the journal must be cut back to before anything more is written: a failed
    /// write whose cut failed too (the disk was full), retried before the next commit.
    pub(super) pending_cut: Option<u64>,
    /// Rate limit of the failed-write warning (a full disk fails every commit until space
    /// returns).
    pub(super) failures: LogThrottle,
    /// The sync stage (`durable.rs`), with the `fsync` policy: set by [`Appender::run`].
    pub(super) sync_stage: Option<SyncSender<Job>>,
}

impl Appender {
    pub(super) fn run(mut self) {
        if self.shared.config.flush != FlushPolicy::Fsync {
            return self.gather();
        }
        let shared = self.shared.clone();
        std::thread::scope(|scope| {
            // Rendezvous: one commit syncing, at most one more written and waiting.
            let (jobs, stage) = std::sync::mpsc::sync_channel(0);
            let spawned = std::thread::Builder::new()
                .name(
                    std::thread::current()
                        .name()
                        .map_or("sync".into(), |n| n.replacen("append", "sync", 1)),
                )
                .spawn_scoped(scope, || durable::run(&shared, stage));
            match spawned {
                Ok(_) => self.sync_stage = Some(jobs),
                // Without the thread, the writer syncs each commit itself.
                Err(e) => {
                    tracing::warn!(dir = %shared.dir_display, error = %e, "could not start the sync stage: the writer syncs each commit itself")
                }
            }
            self.gather();
            // Hanging up ends the stage once it finished what it holds.
            self.sync_stage = None;
        });
    }

    /// Gathers queued commands into group commits until the group stops.
    fn gather(&mut self) {
        let mut queue = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            queue.push(first);
            let mut bytes = 0;
            while bytes < self.shared.config.commit_bytes_max {
                match self.rx.try_recv() {
                    Ok(c) => {
                        if let Command::Append {
                            body: Body::Batch { payload, .. },
                            ..
                        } = &c
                        {
                            bytes += payload.len();
                        }
                        queue.push(c);
                    }
                    Err(_) => break,
                }
            }
            let mut appends = Vec::new();
            for command in queue.drain(..) {
                match command {
                    Command::Append { key, body, reply } => appends.push((key, body, reply)),
                    Command::Truncate {
                        position,
                        force,
                        reply,
                    } => {
                        self.commit(std::mem::take(&mut appends));
                        self.drain();
                        let done = self
                            .settle_cut()
                            .and_then(|()| self.truncate(position, force));
                        let _ = reply.send(done);
                    }
                    Command::Reset {
                        position,
                        ends,
                        reply,
                    } => {
                        self.commit(std::mem::take(&mut appends));
                        self.drain();
                        let done = self.settle_cut().and_then(|()| self.reset(position, &ends));
                        let _ = reply.send(done);
                    }
                    Command::Stop => {
                        self.commit(std::mem::take(&mut appends));
                        self.drain();
                        return;
                    }
                }
            }
            self.commit(appends);
        }
    }

    /// Writes a group of appends with one write and one sync, then acknowledges them.
    fn commit(&mut self, appends: Vec<(PartitionKey, Body, Reply)>) {
        if appends.is_empty() {
            return;
        }
        let started = Instant::now();
        if let Some(reason) = self
            .shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .fatal
        {
            durable::refuse(&self.shared, appends.into_iter().map(|(_, _, r)| r), reason);
            return;
        }
        if let Err(e) = self.settle_cut() {
            let error = self.io_error(&e);
            for (_, _, reply) in appends {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        self.undo.clear();
        let mark = (self.writer.position(), self.last_index);
        let mut staged = Vec::with_capacity(appends.len());
        let mut result = Ok(());
        let time = now_ms().max(self.last_time);
        // Appends not stored because staging failed: answered with the commit's error once
        // the failed write is cut (not before, so the group's state is settled by then, and
        // not by dropping them, which a caller would see as the group closing).
        let mut unstored = Vec::new();
        let mut appends = appends.into_iter();
        for (key, body, reply) in appends.by_ref() {
            match self.stage(key, &body, time) {
                Ok(Ok((appended, commit, producer, txn))) => staged.push(StagedReply {
                    reply,
                    key,
                    appended,
                    commit,
                    producer,
                    txn,
                }),
                Ok(Err(refused)) => {
                    let _ = reply.send(Err(refused));
                }
                Err(e) => {
                    unstored.push(reply);
                    result = Err(e);
                    break;
                }
            }
        }
        unstored.extend(appends.map(|(_, _, reply)| reply));
        if let Err(e) = result.and_then(|()| self.writer.write()) {
            // A full disk fails every commit until space returns: say so once per interval,
            // with how many failed since.
            if let Some(suppressed) = self.failures.failed() {
                tracing::warn!(dir = %self.shared.dir_display, error = %e, suppressed, "journal write failed: the appends were not stored (retried with the next commit)");
            }
            self.pending_cut = Some(mark.0);
            if let Err(cut) = self.settle_cut() {
                tracing::warn!(dir = %self.shared.dir_display, error = %cut, "could not cut a failed write yet: appends are refused until the cut succeeds");
            }
            self.last_index = mark.1;
            for (key, old) in self.undo.drain(..).rev() {
                match old {
                    Some(v) => self.next_offsets.insert(key, v),
                    None => self.next_offsets.remove(&key),
                };
            }
            let error = self.io_error(&e);
            for s in staged {
                let _ = s.reply.send(Err(error.clone()));
            }
            for reply in unstored {
                let _ = reply.send(Err(error.clone()));
            }
            return;
        }
        if let Some((failures, took)) = self.failures.succeeded() {
            tracing::info!(dir = %self.shared.dir_display, failures, seconds = took.as_secs(), "journal writes succeed again");
        }
        self.last_time = self.last_time.max(time);
        let written = Written {
            staged,
            segments: match self.shared.config.flush {
                FlushPolicy::Fsync => self.writer.take_unsynced(),
                FlushPolicy::Async => Vec::new(),
            },
            end: self.writer.position(),
            bytes: self.writer.position().saturating_sub(mark.0),
            started,
        };
        match &self.sync_stage {
            // Blocks while the stage still syncs the commit before; appends queue meanwhile.
            Some(stage) => {
                if let Err(std::sync::mpsc::SendError(Job::Finish(written))) =
                    stage.send(Job::Finish(written))
                {
                    durable::finish(&self.shared, written);
                }
            }
            None => durable::finish(&self.shared, written),
        }
    }

    /// Waits until the sync stage finished every commit handed to it: truncation, reset and
    /// stopping work on published state.
    fn drain(&self) {
        if let Some(stage) = &self.sync_stage {
            let (done, finished) = std::sync::mpsc::sync_channel(1);
            if stage.send(Job::Barrier(done)).is_ok() {
                let _ = finished.recv();
            }
        }
    }

    /// Encodes one append into the writer's buffer. The inner error refuses this append
    /// alone; the outer one is an I/O failure that fails the whole group commit.
    fn stage(
        &mut self,
        key: PartitionKey,
        body: &Body,
        time: i64,
    ) -> io::Result<Result<Staged, AppendError>> {
        let len = HEADER_LEN + body_len(body);
        if len as u64 + record::SEGMENT_END_LEN > self.shared.config.segment_bytes
            || len > u32::MAX as usize - 1
        {
            return Ok(Err(AppendError::TooLarge {
                len,
                segment_bytes: self.shared.config.segment_bytes,
            }));
        }
        let next = match self.next_offsets.get(&key) {
            Some(&n) => n,
            None => self.shared.index(key).map_or_else(
                |_| {
                    self.shared
                        .pending_ends
                        .lock()
                        .expect("pending ends lock poisoned")
                        .get(&key)
                        .copied()
                        .unwrap_or(0)
                },
                |i| i.lock().expect("index lock poisoned").end(),
            ),
        };
        let header = match body {
            Body::Batch {
                count,
                flags,
                producer,
                ..
            } => {
                let mut h = self.header(key, len, RecordKind::Batch, *count, next, time);
                h.flags = *flags | producer_flag(producer);
                h
            }
            Body::Commit { offset, .. } => {
                self.header(key, len, RecordKind::OffsetCommit, 0, *offset, time)
            }
            Body::Carried { offset, flags, .. } => {
                let mut h = self.header(key, len, RecordKind::Carried, 1, *offset, time);
                h.flags = *flags;
                h
            }
            Body::Raft { entry, .. } => {
                if let Err(reason) = self.check_index(entry.index) {
                    return Ok(Err(AppendError::Diverged {
                        dir: self.shared.dir_display.clone(),
                        reason: reason.to_string(),
                    }));
                }
                let base_offset = if entry.kind == RecordKind::Batch {
                    next
                } else {
                    entry.base_offset
                };
                RecordHeader {
                    len: len as u32,
                    kind: entry.kind,
                    flags: entry.flags | producer_flag(&entry.producer),
                    topic_id: key.0,
                    partition: key.1,
                    count: entry.count,
                    term: entry.term,
                    index: entry.index,
                    append_time_ms: time,
                    base_offset,
                }
            }
            Body::Verbatim {
                position, header, ..
            } => {
                // After a reset (a journal restarted past the start), a partition's first
                // record may start anywhere: its earlier records were deleted upstream.
                let restarted = !self.next_offsets.contains_key(&key)
                    && self.shared.journal.start() > 0
                    && self.shared.index(key).map_or(true, |i| {
                        let i = i.lock().expect("index lock poisoned");
                        i.end() == i.earliest()
                    });
                let next = (!restarted).then_some(next);
                if let Err(reason) = self.check_verbatim(header, next, *position, len) {
                    return Ok(Err(AppendError::Diverged {
                        dir: self.shared.dir_display.clone(),
                        reason: reason.to_string(),
                    }));
                }
                *header
            }
        };
        let (position, buf) = self.writer.stage(&self.shared.journal, len)?;
        let prefix = |p: &Option<ProducerBatch>| p.map(|p| p.encode()).unwrap_or_default();
        match body {
            Body::Batch {
                payload, producer, ..
            } => {
                let prefix = prefix(producer);
                let prefix = &prefix[..producer_len(producer)];
                record::encode_parts(buf, &header, &[prefix, payload]);
            }
            Body::Commit {
                group,
                offset,
                positions,
                metadata,
            } => record::encode(
                buf,
                &header,
                &record::encode_commit_with(group, *offset, positions, metadata),
            ),
            Body::Raft { entry, .. } => {
                let prefix = prefix(&entry.producer);
                let prefix = &prefix[..producer_len(&entry.producer)];
                record::encode_parts(buf, &header, &[prefix, &entry.payload]);
            }
            Body::Carried { payload, .. } => record::encode(buf, &header, payload),
            // Byte for byte what the leader wrote; its checksum was verified on parsing.
            Body::Verbatim { bytes, .. } => buf.extend_from_slice(bytes),
        }
        self.last_index = Some(header.index);
        if header.kind == RecordKind::Batch {
            let old = self
                .next_offsets
                .insert(key, header.base_offset + u64::from(header.count));
            self.undo.push((key, old));
        }
        self.last_time = self.last_time.max(header.append_time_ms);
        let txn_of = |producer: &Option<ProducerBatch>, payload: &[u8]| {
            producer.and_then(|p| TxnEvent::of(&header, &p, payload))
        };
        let (commit, producer, txn) = match body {
            Body::Commit {
                group,
                offset,
                positions,
                ..
            } => (commit_values(group, key, *offset, positions), None, None),
            Body::Carried { .. } => (Vec::new(), None, None),
            Body::Verbatim { bytes, .. } => {
                let payload = bytes.slice(HEADER_LEN..);
                (
                    durable_positions(&header, &payload),
                    producer_of(&header, &payload),
                    TxnEvent::of_record(&header, &payload),
                )
            }
            // Origin marks are read from a payload without the producer prefix: the flags
            // say so (the prefix is written apart from the payload).
            Body::Raft { entry, .. } => {
                let mut h = header;
                h.flags &= !record::FLAG_PRODUCER;
                (
                    durable_positions(&h, &entry.payload),
                    entry.producer.filter(|_| !is_marker(&header)),
                    txn_of(&entry.producer, &entry.payload),
                )
            }
            Body::Batch {
                payload, producer, ..
            } => {
                let mut h = header;
                h.flags &= !record::FLAG_PRODUCER;
                (
                    durable_positions(&h, payload),
                    producer.filter(|_| !is_marker(&header)),
                    txn_of(producer, payload),
                )
            }
        };
        let appended = Appended {
            base_offset: header.base_offset,
            position,
            append_time_ms: header.append_time_ms,
            index: header.index,
            len: header.len,
        };
        Ok(Ok((appended, commit, producer, txn)))
    }

    fn header(
        &self,
        key: PartitionKey,
        len: usize,
        kind: RecordKind,
        count: u32,
        base_offset: u64,
        time: i64,
    ) -> RecordHeader {
        RecordHeader {
            len: len as u32,
            kind,
            flags: 0,
            topic_id: key.0,
            partition: key.1,
            count,
            term: self.shared.term.load(Ordering::SeqCst),
            index: self.last_index.map_or(1, |last| last + 1),
            append_time_ms: time,
            base_offset,
        }
    }

    /// A replicated record must continue this replica's history exactly: the next record
    /// index, the partition's next offset, and the same journal position as on the leader.
    fn check_verbatim(
        &self,
        h: &RecordHeader,
        next_offset: Option<u64>,
        position: u64,
        len: usize,
    ) -> Result<(), Divergence> {
        self.check_index(h.index)?;
        if let Some(next_offset) = next_offset
            && h.kind == RecordKind::Batch
            && h.base_offset != next_offset
        {
            return Err(Divergence::Offset {
                topic_id: h.topic_id,
                partition: h.partition,
                base_offset: h.base_offset,
                next_offset,
            });
        }
        let here = self.writer.next_position(len);
        if here != position {
            return Err(Divergence::Position {
                here,
                leader: position,
            });
        }
        Ok(())
    }

    /// Record indexes are contiguous; the first record of an empty journal may take any.
    fn check_index(&self, index: u64) -> Result<(), Divergence> {
        match self.last_index {
            Some(last) if index != last + 1 => Err(Divergence::Index {
                index,
                next: last + 1,
            }),
            _ => Ok(()),
        }
    }

    /// Cuts the journal back to where a failed write began, if that is still to do. A cut
    /// that fails for want of space (zeroing a failed record is a write) is retried later,
    /// and the group refuses appends until then; one that fails otherwise (a failed sync of
    /// the zeroed bytes) makes the group refuse writes until restart, as a failed sync does.
    fn settle_cut(&mut self) -> io::Result<()> {
        let Some(mark) = self.pending_cut else {
            return Ok(());
        };
        match self.writer.rewind(&self.shared.journal, mark) {
            Ok(()) => {
                self.pending_cut = None;
                Ok(())
            }
            Err(e) if is_disk_full(&e) => Err(e),
            Err(e) => {
                tracing::error!(dir = %self.shared.dir_display, error = %e, "could not cut a failed write: the log group refuses writes until restart");
                self.set_fatal("failed write could not be cut");
                Err(e)
            }
        }
    }

    /// Makes the group refuse writes until restart.
    fn set_fatal(&self, reason: &'static str) {
        self.shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .fatal = Some(reason);
    }

    fn io_error(&self, e: &io::Error) -> AppendError {
        if is_disk_full(e) {
            metrics::counter!("meridian_append_disk_full_total").increment(1);
            AppendError::DiskFull {
                dir: self.shared.dir_display.clone(),
            }
        } else {
            AppendError::Io {
                dir: self.shared.dir_display.clone(),
                reason: e.to_string(),
            }
        }
    }
}

/// Whether an I/O error says the disk has no room (`ENOSPC`): it passes once space returns.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull
}

/// The record flag of an idempotent producer's batch.
fn producer_flag(producer: &Option<ProducerBatch>) -> u8 {
    if producer.is_some() {
        record::FLAG_PRODUCER
    } else {
        0
    }
}

/// Bytes of a batch's producer prefix.
fn producer_len(producer: &Option<ProducerBatch>) -> usize {
    if producer.is_some() {
        producer::PREFIX_LEN
    } else {
        0
    }
}

fn body_len(body: &Body) -> usize {
    match body {
        Body::Batch {
            payload, producer, ..
        } => producer_len(producer) + payload.len(),
        Body::Commit {
            group,
            offset,
            positions,
            metadata,
        } => record::encode_commit_with(group, *offset, positions, metadata).len(),
        Body::Carried { payload, .. } => payload.len(),
        Body::Verbatim { bytes, .. } => bytes.len() - HEADER_LEN,
        Body::Raft { entry } => producer_len(&entry.producer) + entry.payload.len(),
    }
}

/// How a replicated record fails to continue this replica's history (the reason of an
/// [`AppendError::Diverged`]).
#[derive(Debug, thiserror::Error)]
enum Divergence {
    /// The record index is not the next one.
    #[error("record index {index} arrived but the next record index here is {next}")]
    Index { index: u64, next: u64 },
    /// A batch does not start at its partition's next offset.
    #[error(
        "partition {topic_id}/{partition} record starts at offset {base_offset} but this replica's next offset is {next_offset}"
    )]
    Offset {
        topic_id: u32,
        partition: u32,
        base_offset: u64,
        next_offset: u64,
    },
    /// The record would land at another journal position than on the leader.
    #[error(
        "record lands at position {here} here but at {leader} on the leader: are the segment sizes the same?"
    )]
    Position { here: u64, leader: u64 },
}
