//! A log group: one journal, the queue indexes of its partitions, and the consumer offsets
//! committed through it, kept consistent across appends, crashes, retention and truncation.
//!
//! This file holds the handle, [`LogGroup`], its state shared with its threads, and the
//! producer- and consumer-facing API. Two threads serve a group:
//!
//! - the **writer** (`writer.rs`) owns the journal tail. It gathers every queued append (up
//!   to `commit_bytes_max`) and writes them with one `pwrite`: group commit. With the
//!   `fsync` policy its **sync stage** (`durable.rs`, a thread of its own) syncs the commit
//!   once and acknowledges its appends while the writer stages the next one. Truncation and
//!   reset (`truncation.rs`) run on the writer between group commits;
//! - the **indexer** (`indexer.rs`) turns durable records into queue-index entries,
//!   publishes the new visible position (waking long-polling fetches), flushes indexes and
//!   writes the checkpoint every `flush_interval`, and applies retention (`retention.rs`).
//!
//! Recovery ([`LogGroup::open`], `recovery.rs`) finishes a pending truncation, walks the
//! journal (checking checksums from the checkpoint on), cuts a torn tail, restores the
//! consumer offsets from their commit records (`offsets.rs`), and rebuilds index entries past
//! the checkpoint; the indexer's live path and recovery share the indexing code. What the
//! replication layer uses (records by index, verbatim copies, the watermark) is in
//! `replica.rs`.

mod compaction;
mod durable;
mod indexer;
mod offsets;
mod producers;
mod recovery;
mod replica;
mod retention;
mod truncation;
mod writer;

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::index::PartitionIndex;
use super::journal::Journal;
use super::{AppendError, FlushPolicy, GroupConfig, PartitionKey, ReadError};
use crate::transactions::{Aborted, PartitionTxns, TxnEvent, TxnPart, TxnStatus};
use meridian_proto::origin::Origin;
use meridian_proto::producer::ProducerBatch;
use meridian_proto::record::{self, RecordHeader, RecordKind};

pub use offsets::{OFFSET_DELETED, POSITION_CLEARED, POSITIONS_ONLY, START_MARK};
pub use producers::{BATCHES_KEPT, ProducerState, SeqCheck, SeqRefusal};
use replica::RecordPositions;

/// What an acknowledged append got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Partition offset of the first message (the committed offset, for commits).
    pub base_offset: u64,
    /// Journal position of the record.
    pub position: u64,
    /// Broker time stamped on the record.
    pub append_time_ms: i64,
    /// The record's index in the group's sequence (the raft log index, when replicated).
    pub index: u64,
    /// The record's length in bytes.
    pub len: u32,
}

/// A record the replication layer writes with its own term and index (a raft entry).
#[derive(Debug, Clone)]
pub struct RaftRecord {
    /// Leadership term.
    pub term: u64,
    /// Log index; must follow the last record's (any index on an empty journal).
    pub index: u64,
    /// What the record holds.
    pub kind: RecordKind,
    /// [`record::FLAG_ORIGIN`] for a mirrored batch (its payload starts with the origin).
    /// [`record::FLAG_PRODUCER`] is set by the writer when `producer` is.
    pub flags: u8,
    /// An idempotent producer's batch: written before the payload as its prefix
    /// ([`meridian_proto::producer`]).
    pub producer: Option<ProducerBatch>,
    /// Partition (`(0, 0)` for blank and membership entries).
    pub key: PartitionKey,
    /// Messages in a batch.
    pub count: u32,
    /// For offset commits, the committed offset; batches get the partition's next offset.
    pub base_offset: u64,
    /// The payload, as for the record kind.
    pub payload: Bytes,
}

/// Whole records of one segment, as a replica pulls them.
#[derive(Debug, Clone)]
pub struct RecordChunk {
    /// Journal position of the first record.
    pub position: u64,
    /// The records, byte for byte.
    pub records: Bytes,
    /// Where the next read starts.
    pub next: u64,
}

/// One batch returned by a read.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    /// Offset of the batch's first message.
    pub base_offset: u64,
    /// Messages in the batch.
    pub count: u32,
    /// Broker time of the append.
    pub append_time_ms: i64,
    /// The encoded messages (see `meridian_proto::batch`), a slice of the segment's map.
    pub payload: Bytes,
    /// Where a mirrored batch was first written; `None` for a local one.
    pub origin: Option<Origin>,
    /// The record's index in this group (a local batch's origin seq).
    pub index: u64,
    /// An idempotent producer's batch: its producer.
    pub producer: Option<ProducerBatch>,
    /// Part of its producer's transaction: a transactional batch, or a marker (whose
    /// `payload` is a [`record::TxnMarker`], not messages).
    pub txn: Option<TxnPart>,
    /// In a compacted partition, the indexes (within the batch) of messages no longer live,
    /// which readers leave out; empty otherwise.
    pub removed: Vec<u32>,
}

impl ReadBatch {
    /// Whether it is a transaction marker rather than messages.
    pub fn is_marker(&self) -> bool {
        self.txn == Some(TxnPart::Marker)
    }
}

/// A mirrored batch's record payload: the origin, then the messages.
pub fn mirrored_payload(origin: &Origin, batch: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(origin.encoded_len() + batch.len());
    origin.encode(&mut buf);
    buf.extend_from_slice(batch);
    Bytes::from(buf)
}

/// A log group's storage. Cheap to share behind an `Arc`; [`LogGroup::close`] stops it.
#[derive(Debug)]
pub struct LogGroup {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

type OffsetKey = (String, u32, u32);
type Reply = oneshot::Sender<Result<Appended, AppendError>>;
/// What staging an append produced: its acknowledgment, the offset commit it carries, and
/// the idempotent producer of a batch.
type Staged = (
    Appended,
    Vec<(OffsetKey, u64)>,
    Option<ProducerBatch>,
    Option<TxnEvent>,
);

/// A live offset whose commit record retention would delete: `(name, partition, offset)`.
pub type HeldOffset = (String, PartitionKey, u64);

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    dir_display: String,
    config: GroupConfig,
    journal: Journal,
    indexes: RwLock<HashMap<PartitionKey, Arc<Mutex<PartitionIndex>>>>,
    /// Committed consumer offsets and the journal position of the commit record.
    offsets: Mutex<HashMap<OffsetKey, (u64, u64)>>,
    /// Idempotent producers' recent batches (`producers.rs`).
    producers: Mutex<producers::Producers>,
    /// Each partition's open transactions and aborted ranges, from every transactional
    /// batch and marker written (`transactions.rs`); one per partition that has had any.
    txns: Mutex<HashMap<PartitionKey, PartitionTxns>>,
    progress: Mutex<Progress>,
    progress_changed: Condvar,
    /// Held by the indexer while it changes indexes, so truncation can stop it.
    indexing: Mutex<()>,
    /// Record index → journal position.
    records: Mutex<RecordPositions>,
    /// Topics deleted here: their records index nowhere. In a replicated group a record of
    /// any other unknown topic holds the indexer until the topic is added or retired.
    retired_topics: RwLock<std::collections::HashSet<u32>>,
    visible: watch::Sender<u64>,
    /// The end of records a replica may pull (durable per the flush policy); changes on
    /// every group commit and truncation.
    pullable: watch::Sender<u64>,
    /// Next offsets, from a journal reset, of partitions this replica does not hold yet (their
    /// topic's creation has not reached it): the index starts there when it is added.
    pending_ends: Mutex<HashMap<PartitionKey, u64>>,
    /// Retention deletes only segments that end at or below this position: in a raft group,
    /// the end of what raft has purged (what a snapshot covers).
    retention_floor: AtomicU64,
    /// How long segments are kept when the group's topics say (the longest of their
    /// retentions, `None` inside: one keeps its messages forever), set by the broker
    /// ([`LogGroup::set_segment_retention`]); unset: `config.retention`.
    segment_retention: Mutex<Option<Option<Duration>>>,
    /// In a replicated group, the offsets retention waits to see committed again above the
    /// segment it would delete (`retention.rs`); at most one per live offset.
    held_back: Mutex<Vec<HeldOffset>>,
    /// Compacted partitions' key maps (`compaction.rs`), set by the broker; locked after
    /// the partition's index.
    compacted: Mutex<HashMap<PartitionKey, crate::compaction::KeyMap>>,
    /// In a replicated group, the compacted messages retention waits to see carried above
    /// the segment it would delete.
    carries_held: Mutex<(u64, Vec<(PartitionKey, u64)>)>,
    /// Carried records indexed (compacted messages copied forward) since the group opened.
    carried: AtomicU64,
    /// Leadership term stamped on records this group writes itself (not raft entries or
    /// copies, which carry their own).
    term: AtomicU64,
    stop: AtomicBool,
    /// Tests set this to stop the threads the way a crash would: no final flush.
    crashed: AtomicBool,
    /// Group commits done, and the journal bytes they wrote.
    commits: AtomicU64,
    commit_bytes: AtomicU64,
    /// Index files were written since their last successful sync: the next flush syncs them
    /// before any checkpoint counts their entries (a failed sync is retried, never skipped).
    indexes_unsynced: AtomicBool,
    /// Indexes recovery found unusable (fewer entries than the checkpoint vouches for) and
    /// rebuilt; a sound checkpoint never causes one.
    indexes_rebuilt: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    /// End of written records.
    written: u64,
    /// End of fsynced records.
    synced: u64,
    /// End of records in the indexes.
    indexed: u64,
    /// The indexer stopped at a record of a partition it does not know yet.
    index_waiting: bool,
    /// With replication: the end of committed records (what enough replicas hold). Only
    /// records below it are indexed and visible.
    watermark: u64,
    /// Set once a sync failed: the group takes no more writes.
    fatal: Option<&'static str>,
}

enum Command {
    Append {
        key: PartitionKey,
        body: Body,
        reply: oneshot::Sender<Result<Appended, AppendError>>,
    },
    Truncate {
        position: u64,
        /// Allow cutting committed records (raft guarantees they are not committed).
        force: bool,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Reset {
        position: u64,
        ends: HashMap<PartitionKey, u64>,
        reply: oneshot::Sender<io::Result<()>>,
    },
    Stop,
}

enum Body {
    /// A batch; with [`record::FLAG_ORIGIN`] the payload starts with its origin. An
    /// idempotent producer's batch is written after its producer prefix.
    Batch {
        payload: Bytes,
        count: u32,
        flags: u8,
        producer: Option<ProducerBatch>,
    },
    Commit {
        group: String,
        offset: u64,
        /// Origin positions (multi-region topics), kept beside the offset.
        positions: Vec<(String, u64)>,
        /// The committer's metadata (Kafka's), kept in the record; empty: none.
        metadata: String,
    },
    /// A record whose term and index the replication layer chose (a raft log entry).
    Raft { entry: RaftRecord },
    /// A compacted partition's live message copied forward under its own `offset`
    /// ([`RecordKind::Carried`]; `payload` from [`record::encode_carried`]).
    Carried {
        offset: u64,
        flags: u8,
        payload: Bytes,
    },
    /// A record copied from another replica, to be written at `position` unchanged.
    Verbatim {
        position: u64,
        header: RecordHeader,
        bytes: Bytes,
    },
}

impl LogGroup {
    /// Appends a batch of `count` encoded messages to a partition. The returned future
    /// resolves when the batch is durable per the flush policy.
    pub async fn append(
        &self,
        key: PartitionKey,
        payload: Bytes,
        count: u32,
    ) -> Result<Appended, AppendError> {
        self.send(
            key,
            Body::Batch {
                payload,
                count,
                flags: 0,
                producer: None,
            },
        )
        .await
    }

    /// Appends an idempotent producer's batch: the record carries `producer`, and the
    /// group's producer state ([`LogGroup::check_producer`]) counts it once written. The
    /// caller checks the batch first and serializes a producer's appends to a partition.
    /// With `txn`, the batch is part of the producer's transaction (a marker's `payload`
    /// is its [`record::TxnMarker`] and `count` 1), which the partition's transaction
    /// state ([`LogGroup::last_stable`]) follows.
    pub async fn append_producer(
        &self,
        key: PartitionKey,
        payload: Bytes,
        count: u32,
        producer: ProducerBatch,
        txn: Option<TxnPart>,
    ) -> Result<Appended, AppendError> {
        self.send(
            key,
            Body::Batch {
                payload,
                count,
                flags: txn.map_or(0, TxnPart::flag),
                producer: Some(producer),
            },
        )
        .await
    }

    /// Appends a mirrored batch: `payload` (the messages) written after its `origin`, whose
    /// marks the group keeps ([`LogGroup::mirror_mark`]).
    pub async fn append_mirrored(
        &self,
        key: PartitionKey,
        origin: &Origin,
        payload: &[u8],
        count: u32,
    ) -> Result<Appended, AppendError> {
        self.send(
            key,
            Body::Batch {
                payload: mirrored_payload(origin, payload),
                count,
                flags: record::FLAG_ORIGIN,
                producer: None,
            },
        )
        .await
    }

    /// Commits a consumer group's offset for a partition through the journal.
    pub async fn commit_offset(
        &self,
        group: &str,
        key: PartitionKey,
        offset: u64,
    ) -> Result<Appended, AppendError> {
        self.commit_positions(group, key, offset, Vec::new()).await
    }

    /// Commits a consumer group's offset with the origin positions it has seen below it
    /// (`offset` [`POSITIONS_ONLY`]: positions merged from another region, no local offset).
    pub async fn commit_positions(
        &self,
        group: &str,
        key: PartitionKey,
        offset: u64,
        positions: Vec<(String, u64)>,
    ) -> Result<Appended, AppendError> {
        self.commit_with_metadata(group, key, offset, positions, String::new())
            .await
    }

    /// [`LogGroup::commit_positions`] keeping the committer's `metadata` (Kafka's
    /// OffsetCommit metadata, at most [`record::COMMIT_METADATA_MAX`] bytes) in the record
    /// ([`LogGroup::committed_metadata`]).
    pub async fn commit_with_metadata(
        &self,
        group: &str,
        key: PartitionKey,
        offset: u64,
        positions: Vec<(String, u64)>,
        metadata: String,
    ) -> Result<Appended, AppendError> {
        self.send(
            key,
            Body::Commit {
                group: group.to_owned(),
                offset,
                positions,
                metadata,
            },
        )
        .await
    }

    /// Reads batches from `offset` on, up to about `max_bytes` (at least one batch when any
    /// is available). The first batch may begin before `offset`.
    pub fn read(
        &self,
        key: PartitionKey,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<ReadBatch>, ReadError> {
        let index = self.shared.index(key)?;
        let index = index.lock().expect("index lock poisoned");
        let (earliest, latest) = (index.earliest(), index.end());
        if offset < earliest || offset > latest {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                earliest,
                latest,
            });
        }
        let mut out = Vec::new();
        let (mut next, mut bytes) = (offset, 0usize);
        let start = self.shared.journal.start();
        let carried = index.has_carried();
        while next < latest && (out.is_empty() || bytes < max_bytes) {
            let entry = index.get(next)?.ok_or(ReadError::OffsetOutOfRange {
                offset: next,
                earliest,
                latest,
            })?;
            // A compacted partition's message the journal no longer holds (not live when
            // its segment went): nothing to read there.
            if carried && (entry.is_hole() || entry.position < start) {
                next += 1;
                continue;
            }
            let (h, payload) = self.shared.journal.read(entry.position)?;
            let corrupt = |reason| {
                ReadError::Journal(crate::ReadFailure::Corrupt {
                    position: entry.position,
                    reason,
                })
            };
            if !matches!(h.kind, RecordKind::Batch | RecordKind::Carried)
                || (h.topic_id, h.partition) != key
                || !(h.base_offset <= next && next < h.base_offset + u64::from(h.count))
            {
                return Err(corrupt(
                    "indexed record belongs to another partition or offset",
                ));
            }
            let (append_time_ms, payload) = match h.kind {
                RecordKind::Carried => record::split_carried(&payload)
                    .ok_or_else(|| corrupt("a carried record without its time"))?,
                _ => (h.append_time_ms, payload),
            };
            let split = record::split_batch(h.flags, &payload)
                .map_err(|_| corrupt("a batch's producer or origin prefix does not decode"))?;
            let mut batch = ReadBatch {
                base_offset: h.base_offset,
                count: h.count,
                append_time_ms,
                payload: split.batch,
                origin: split.origin,
                index: h.index,
                producer: split.producer,
                txn: TxnPart::of(h.flags),
                removed: Vec::new(),
            };
            let end = h.base_offset + u64::from(h.count);
            // Where copies point back, a record's messages may be read from elsewhere: each
            // is read once, in offset order, from where its entry points.
            let mut elsewhere = Vec::new();
            if carried {
                for o in h.base_offset..end {
                    if o < next || index.get(o)?.is_none_or(|e| e.position != entry.position) {
                        elsewhere.push((o - h.base_offset) as u32);
                    }
                }
            }
            // Up to the first message read from elsewhere; the rest of this record when it
            // comes round again.
            let stop = elsewhere
                .iter()
                .map(|&i| h.base_offset + u64::from(i))
                .find(|&o| o >= next)
                .unwrap_or(end);
            if stop < end {
                elsewhere.extend((stop - h.base_offset) as u32..h.count);
            }
            next = stop;
            let compacted = self.shared.removed_in(key, &batch);
            let filtered = compacted.is_some() || !elsewhere.is_empty();
            let mut removed = compacted.unwrap_or_default();
            if !elsewhere.is_empty() {
                removed.extend(elsewhere);
                removed.sort_unstable();
                removed.dedup();
            }
            // Nothing of it is read: on to the next batch, which may be live.
            if filtered && removed.len() == h.count as usize {
                continue;
            }
            batch.removed = removed;
            bytes += payload.len();
            out.push(batch);
        }
        Ok(out)
    }

    /// `(earliest, latest)` offsets of a partition: latest is one past the last visible
    /// message.
    pub fn offsets(&self, key: PartitionKey) -> Result<(u64, u64), ReadError> {
        let index = self.shared.index(key)?;
        let index = index.lock().expect("index lock poisoned");
        Ok((index.earliest(), index.end()))
    }

    /// A partition's `(earliest, latest, last stable)` offsets, read together: the last
    /// stable offset is where readers of committed data stop, the first offset of its oldest
    /// open transaction, or the visible end when none is open.
    pub fn stable_offsets(&self, key: PartitionKey) -> Result<(u64, u64, u64), ReadError> {
        let (earliest, end) = self.offsets(key)?;
        let stable = self
            .shared
            .txns
            .lock()
            .expect("transactions lock poisoned")
            .get(&key)
            .map_or(end, |t| t.last_stable(end));
        Ok((earliest, end, stable))
    }

    /// The aborted transactions whose batches a read of `from..to` may meet.
    pub fn aborted_in(&self, key: PartitionKey, from: u64, to: u64) -> Vec<Aborted> {
        self.shared
            .txns
            .lock()
            .expect("transactions lock poisoned")
            .get(&key)
            .map_or_else(Vec::new, |t| t.aborted_in(from, to))
    }

    /// Where the transaction of `producer_id`'s transactional batch at `offset` stands.
    pub fn transaction_status(
        &self,
        key: PartitionKey,
        producer_id: i64,
        offset: u64,
    ) -> TxnStatus {
        self.shared
            .txns
            .lock()
            .expect("transactions lock poisoned")
            .get(&key)
            .map_or(TxnStatus::Open, |t| t.status(producer_id, offset))
    }

    /// Whether `producer_id` has a transaction open in a partition (no allocation: asked
    /// for every transactional batch).
    pub fn has_open_transaction(&self, key: PartitionKey, producer_id: i64) -> bool {
        self.shared
            .txns
            .lock()
            .expect("transactions lock poisoned")
            .get(&key)
            .is_some_and(|t| t.is_open(producer_id))
    }

    /// Producers with a transaction open in a partition, with its first offset.
    pub fn open_transactions(&self, key: PartitionKey) -> Vec<(i64, u64)> {
        self.shared
            .txns
            .lock()
            .expect("transactions lock poisoned")
            .get(&key)
            .map_or_else(Vec::new, PartitionTxns::open)
    }

    /// Sets how long the journal keeps its segments: the longest retention of the topics
    /// in it (`None`: one of them keeps its messages forever). A segment goes only once
    /// every topic in it is done with it; a topic with a shorter retention stops serving
    /// its older messages by moving its partitions' starts ([`LogGroup::advance_start`]).
    pub fn set_segment_retention(&self, retention: Option<Duration>) {
        *self
            .shared
            .segment_retention
            .lock()
            .expect("segment retention lock poisoned") = Some(retention);
    }

    /// Moves a partition's first readable offset up to `offset` (at most its end; never
    /// back) on this replica alone: reads below it are out of range, as if retention had
    /// deleted them, though the journal may hold them until its segment goes. Kept across
    /// restarts (the checkpoint records each partition's start). Returns the start now.
    /// (Kafka's DeleteRecords moves every replica's start: a [`START_MARK`] commit.)
    pub fn advance_start(&self, key: PartitionKey, offset: u64) -> Result<u64, ReadError> {
        let index = self.shared.index(key)?;
        let mut index = index.lock().expect("index lock poisoned");
        self.shared.trim_start(key, &mut index, offset)?;
        Ok(index.earliest())
    }

    /// Moves a partition's start past every message appended before `time_ms` (a topic's
    /// own retention), in one hold of its index: the search and the move see the same
    /// entries, so a message appended meanwhile is never passed. Returns the start now.
    pub fn expire_before(&self, key: PartitionKey, time_ms: i64) -> Result<u64, ReadError> {
        let index = self.shared.index(key)?;
        let mut index = index.lock().expect("index lock poisoned");
        let to = index.first_at_time(time_ms)?;
        self.shared.trim_start(key, &mut index, to)?;
        Ok(index.earliest())
    }

    /// Bytes of the records a partition holds (each counted once; the first call scans
    /// its index, later ones are kept up to date).
    pub fn partition_bytes(&self, key: PartitionKey) -> Result<u64, ReadError> {
        let index = self.shared.index(key)?;
        let mut index = index.lock().expect("index lock poisoned");
        Ok(index.bytes(self.shared.journal.start())?)
    }

    /// Moves a partition's start past its oldest records while it holds more than `max`
    /// bytes of them (a topic's `retention.bytes`), whole records at a time, in one hold of
    /// its index. Returns the start now.
    pub fn retain_bytes(&self, key: PartitionKey, max: u64) -> Result<u64, ReadError> {
        let index = self.shared.index(key)?;
        let mut index = index.lock().expect("index lock poisoned");
        let to = index.start_within(max, self.shared.journal.start())?;
        self.shared.trim_start(key, &mut index, to)?;
        Ok(index.earliest())
    }

    /// The first offset appended at or after `time_ms`, with its append time; `None` when
    /// every message is older.
    pub fn offset_for_time(
        &self,
        key: PartitionKey,
        time_ms: i64,
    ) -> Result<Option<(u64, i64)>, ReadError> {
        let index = self.shared.index(key)?;
        let index = index.lock().expect("index lock poisoned");
        let offset = index.first_at_time(time_ms)?;
        Ok(index.get(offset)?.map(|e| (offset, e.append_time_ms)))
    }

    /// Whether every durable (and, replicated, committed) record is readable now: the
    /// indexer has caught up (a broker's readiness).
    pub fn is_caught_up(&self) -> bool {
        let target = {
            let p = self.shared.progress.lock().expect("progress lock poisoned");
            visible_limit(&p, &self.shared.config)
        };
        *self.subscribe().borrow() >= target
    }

    /// Waits, `limit` at most, until every record that may be visible now is: the indexer
    /// makes a record visible a moment after it is durable (and committed), so a read made
    /// right after an acknowledged append waits here to see it. Whether it got there.
    pub async fn caught_up(&self, limit: Duration) -> bool {
        let target = {
            let p = self.shared.progress.lock().expect("progress lock poisoned");
            visible_limit(&p, &self.shared.config)
        };
        let mut visible = self.subscribe();
        tokio::time::timeout(limit, visible.wait_for(|&v| v >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// A receiver of the visible journal position; it changes whenever new records become
    /// readable, which is what long-polling fetches wait for.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.visible.subscribe()
    }

    /// Adds an empty partition (a new topic's) to the group.
    pub fn add_partition(&self, key: PartitionKey, topic: &str) -> io::Result<()> {
        let dir = self.shared.index_dir(topic, key.1);
        let backend = self.shared.config.backend.clone();
        backend.remove_dir_all(&dir)?;
        let mut index =
            PartitionIndex::open(backend, &dir, self.shared.config.index_entries_per_file, 0)?;
        if let Some(end) = self
            .shared
            .pending_ends
            .lock()
            .expect("pending ends lock poisoned")
            .remove(&key)
        {
            index.reset_to(end)?;
        }
        self.shared
            .indexes
            .write()
            .expect("indexes lock poisoned")
            .insert(key, Arc::new(Mutex::new(index)));
        self.wake_indexer();
        Ok(())
    }

    /// Marks a topic deleted: its records index nowhere (in a replicated group the indexer
    /// otherwise waits for an unknown topic to be added).
    pub fn retire_topic(&self, topic_id: u32) {
        self.shared
            .retired_topics
            .write()
            .expect("retired lock poisoned")
            .insert(topic_id);
        self.wake_indexer();
    }

    /// Whether a topic was deleted here ([`LogGroup::retire_topic`]).
    pub fn is_retired(&self, topic_id: u32) -> bool {
        self.shared
            .retired_topics
            .read()
            .expect("retired lock poisoned")
            .contains(&topic_id)
    }

    fn wake_indexer(&self) {
        self.shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .index_waiting = false;
        self.shared.progress_changed.notify_all();
    }

    /// Removes every partition of a topic and its committed offsets. Its records stay in the
    /// journal until retention deletes their segments.
    pub fn remove_topic(&self, topic_id: u32, topic: &str) -> io::Result<()> {
        let _indexing = self.shared.indexing.lock().expect("indexing lock poisoned");
        let removed: Vec<_> = {
            let mut indexes = self.shared.indexes.write().expect("indexes lock poisoned");
            let keys: Vec<_> = indexes
                .keys()
                .filter(|k| k.0 == topic_id)
                .copied()
                .collect();
            keys.into_iter()
                .filter_map(|k| indexes.remove(&k))
                .collect()
        };
        for index in removed {
            if let Ok(index) = Arc::try_unwrap(index) {
                index.into_inner().expect("index lock poisoned").remove()?;
            }
        }
        let dir = self.shared.dir.join("index").join(topic);
        self.shared.config.backend.remove_dir_all(&dir)?;
        self.shared
            .offsets
            .lock()
            .expect("offsets lock poisoned")
            .retain(|k, _| k.1 != topic_id);
        self.shared
            .producers
            .lock()
            .expect("producers lock poisoned")
            .remove_topic(topic_id);
        self.shared
            .txns
            .lock()
            .expect("transactions lock poisoned")
            .retain(|k, _| k.0 != topic_id);
        self.retire_topic(topic_id);
        Ok(())
    }

    /// Rolls the journal back so that `position` (a record boundary) is its end, together
    /// with every index entry and consumer offset derived from what is cut; crash-safe.
    pub async fn truncate_after(&self, position: u64) -> io::Result<()> {
        self.truncate(position, false).await
    }

    async fn truncate(&self, position: u64, force: bool) -> io::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Truncate {
                position,
                force,
                reply,
            })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Journal positions: `(start, written end, durable end, visible end)`.
    pub fn positions(&self) -> (u64, u64, u64, u64) {
        let p = *self.shared.progress.lock().expect("progress lock poisoned");
        (self.shared.journal.start(), p.written, p.synced, p.indexed)
    }

    /// Bytes of the journal's segment files, and their number.
    pub fn journal_size(&self) -> (u64, usize) {
        (
            self.shared.journal.disk_bytes(),
            self.shared.journal.segment_count(),
        )
    }

    /// When appends are made durable.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.shared.config.flush
    }

    /// Sets the leadership term stamped on the records this group writes itself (a
    /// master-slave group's epoch).
    pub fn set_term(&self, term: u64) {
        self.shared.term.store(term, Ordering::SeqCst);
    }

    /// Group commits done since open, and the journal bytes they wrote.
    pub fn commit_stats(&self) -> (u64, u64) {
        (
            self.shared.commits.load(Ordering::Relaxed),
            self.shared.commit_bytes.load(Ordering::Relaxed),
        )
    }

    /// Runs retention now (it also runs every `retention_check_interval`).
    pub fn apply_retention(&self) -> io::Result<()> {
        // Compacted messages carried forward are indexed by the indexer thread: wait for
        // it, then go on deleting.
        while self.shared.apply_retention(&self.tx)? {
            let written = self
                .shared
                .progress
                .lock()
                .expect("progress lock poisoned")
                .written;
            while self
                .shared
                .progress
                .lock()
                .expect("progress lock poisoned")
                .indexed
                < written
            {
                if self.is_closed() {
                    return Err(closed());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// The group's directory, as its errors and log lines name it.
    pub fn dir_display(&self) -> &str {
        &self.shared.dir_display
    }

    /// Whether the group was closed (its writer takes no more appends).
    pub fn is_closed(&self) -> bool {
        self.shared.stop.load(Ordering::SeqCst) || self.tx.is_closed()
    }

    /// Stops the threads after flushing indexes and writing a final checkpoint.
    pub fn close(&self) {
        let _ = self
            .tx
            .try_send(Command::Stop)
            .or_else(|_| self.tx.blocking_send(Command::Stop));
        // Under the progress lock: the indexer checks `stop` under it before it waits, so
        // it either sees it set or is already waiting when the notification comes (set
        // outside the lock, the notification could fall between its check and its wait,
        // and it slept out a whole flush interval — forever with a long one).
        {
            let _progress = self.shared.progress.lock().expect("progress lock poisoned");
            self.shared.stop.store(true, Ordering::SeqCst);
        }
        self.shared.progress_changed.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock poisoned"));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Indexes recovery found unusable and rebuilt from the journal since open.
    #[cfg(test)]
    pub(crate) fn indexes_rebuilt(&self) -> u64 {
        self.shared.indexes_rebuilt.load(Ordering::Relaxed)
    }

    /// Stops the threads as a crash would: nothing is flushed or checkpointed on the way.
    #[cfg(test)]
    pub(crate) fn crash(&self) {
        self.shared.crashed.store(true, Ordering::SeqCst);
        self.close();
    }

    async fn send(&self, key: PartitionKey, body: Body) -> Result<Appended, AppendError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Append { key, body, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        rx.await.map_err(|_| AppendError::Closed)?
    }
}

impl Drop for LogGroup {
    fn drop(&mut self) {
        if !self.threads.get_mut().map(|t| t.is_empty()).unwrap_or(true) {
            self.close();
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "log group is closed")
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Shared {
    /// Moves partition `key`'s start (its index, held) up to `to`, at most its end and
    /// never back, with its transactions' state.
    fn trim_start(
        &self,
        key: PartitionKey,
        index: &mut PartitionIndex,
        to: u64,
    ) -> Result<(), ReadError> {
        let to = to.min(index.end());
        index.set_floor(to);
        if to > index.earliest() {
            index.trim_front(to)?;
            if let Some(txns) = self
                .txns
                .lock()
                .expect("transactions lock poisoned")
                .get_mut(&key)
            {
                txns.trim_front(to);
            }
        }
        Ok(())
    }

    fn index(&self, key: PartitionKey) -> Result<Arc<Mutex<PartitionIndex>>, ReadError> {
        self.indexes
            .read()
            .expect("indexes lock poisoned")
            .get(&key)
            .cloned()
            .ok_or(ReadError::UnknownPartition {
                topic_id: key.0,
                partition: key.1,
            })
    }

    fn index_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.dir
            .join("index")
            .join(topic)
            .join(partition.to_string())
    }
}

/// The position below which records may be indexed (made visible): durable per the flush
/// policy and, in a replicated group, committed.
fn visible_limit(p: &Progress, config: &GroupConfig) -> u64 {
    let durable = match config.flush {
        FlushPolicy::Fsync => p.synced,
        FlushPolicy::Async => p.written,
    };
    if config.replicated {
        durable.min(p.watermark)
    } else {
        durable
    }
}
