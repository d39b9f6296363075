//! A log group: one journal, the queue indexes of its partitions, and the consumer offsets
//! committed through it, kept consistent across appends, crashes, retention and truncation.
//!
//! Two threads serve a group:
//!
//! - the **writer** owns the journal tail. It gathers every queued append (up to
//!   `commit_bytes_max`), writes them with one `pwrite`, syncs once (with the `fsync`
//!   policy), then acknowledges them all: group commit;
//! - the **indexer** turns durable records into queue-index entries, publishes the new
//!   visible position (waking long-polling fetches), flushes indexes and writes the
//!   checkpoint every `flush_interval`, and applies retention.
//!
//! Recovery ([`LogGroup::open`]) finishes a pending truncation, walks the journal (checking
//! checksums from the checkpoint on), cuts a torn tail, restores the consumer offsets from
//! their commit records, and rebuilds index entries past the checkpoint. The indexer's live
//! path and recovery share [`Shared::index_record`].

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::checkpoint::Checkpoint;
use super::index::{Entry, PartitionIndex};
use super::journal::{Journal, WalkEnd, Writer};
use super::{AppendError, FlushPolicy, GroupConfig, PartitionKey, ReadError};
use meridian_proto::origin::Origin;
use meridian_proto::record::{self, HEADER_LEN, RecordHeader, RecordKind};

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
    pub flags: u8,
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
/// What staging an append produced: its acknowledgment, and the offset commit it carries.
type Staged = (Appended, Vec<(OffsetKey, u64)>);

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    dir_display: String,
    config: GroupConfig,
    journal: Journal,
    indexes: RwLock<HashMap<PartitionKey, Arc<Mutex<PartitionIndex>>>>,
    /// Committed consumer offsets and the journal position of the commit record.
    offsets: Mutex<HashMap<OffsetKey, (u64, u64)>>,
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
    /// Leadership term stamped on records this group writes itself (not raft entries or
    /// copies, which carry their own).
    term: AtomicU64,
    stop: AtomicBool,
    /// Tests set this to stop the threads the way a crash would: no final flush.
    crashed: AtomicBool,
    /// Group commits done, and the journal bytes they wrote.
    commits: AtomicU64,
    commit_bytes: AtomicU64,
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

/// What indexing one record did.
enum Indexed {
    Added,
    /// Not a batch, or already indexed.
    Skipped,
    /// A batch of a partition the group does not hold.
    Unknown,
}

/// What a walk over the journal restores: consumer offsets, each partition's next offset,
/// and the last record's index and time. Recovery and truncation both build one, so the
/// writer's offsets never depend on how far the indexer got.
#[derive(Debug, Default)]
struct Scan {
    last_index: Option<u64>,
    last_time: i64,
    /// Position and length of every record, by record index.
    records: RecordPositions,
    offsets: HashMap<OffsetKey, (u64, u64)>,
    next_offsets: HashMap<PartitionKey, u64>,
    /// Where the sequence of record indexes broke, if it did.
    broken_at: Option<u64>,
}

impl Scan {
    fn visit(&mut self, pos: u64, h: &RecordHeader, payload: &Bytes) {
        if self.broken_at.is_some() {
            return;
        }
        if self.last_index.is_some_and(|last| h.index != last + 1) {
            self.broken_at = Some(pos);
            return;
        }
        self.last_index = Some(h.index);
        self.records.push(h.index, pos, h.len);
        self.last_time = h.append_time_ms;
        match h.kind {
            RecordKind::OffsetCommit => {
                for (key, value) in durable_positions(h, payload) {
                    self.offsets.insert(key, (value, pos));
                }
            }
            RecordKind::Batch => {
                self.next_offsets.insert(
                    (h.topic_id, h.partition),
                    h.base_offset + u64::from(h.count),
                );
                for (key, value) in durable_positions(h, payload) {
                    self.offsets.insert(key, (value, pos));
                }
            }
            RecordKind::Blank | RecordKind::Membership | RecordKind::Metadata => {}
        }
    }
}

/// The committed offset of a group whose positions came from another region: the offset
/// here is derived from the positions when asked.
pub const POSITIONS_ONLY: u64 = u64::MAX;

/// The values a commit record sets: the group's offset, and one pseudo offset per origin
/// position (`\u{1}p/{group}/{region}`), kept, truncated and carried past retention as
/// offsets are.
fn commit_values(
    group: &str,
    key: PartitionKey,
    offset: u64,
    positions: &[(String, u64)],
) -> Vec<(OffsetKey, u64)> {
    let mut out = vec![((group.to_owned(), key.0, key.1), offset)];
    for (region, position) in positions {
        out.push((
            (format!("{MARK_PREFIX}p/{group}/{region}"), key.0, key.1),
            *position,
        ));
    }
    out
}

/// The prefix of the pseudo consumer groups that keep mirror marks. Real group names are
/// letters, digits, `.`, `_` and `-` (`meridian_proto::names`), so none can start with it.
const MARK_PREFIX: char = '\u{1}';

/// The two pseudo offset keys of an origin's mirror marks: the highest seq held, and the
/// highest `through`. Kept as consumer offsets are — restored from the journal, rebuilt on
/// truncation, carried forward before retention deletes their record — so a mark lives in
/// the same record as the data it describes.
fn mark_keys(region: &str, group: u32) -> (OffsetKey, OffsetKey) {
    (
        (format!("{MARK_PREFIX}seq/{group}/{region}"), 0, 0),
        (format!("{MARK_PREFIX}through/{group}/{region}"), 0, 0),
    )
}

/// The offset-like values a record carries: a consumer offset commit's offset, a mirrored
/// batch's marks.
fn durable_positions(h: &RecordHeader, payload: &Bytes) -> Vec<(OffsetKey, u64)> {
    if h.kind == RecordKind::OffsetCommit {
        return record::decode_offset_commit(payload)
            .map(|(g, o)| {
                let positions = record::decode_commit_positions(payload);
                commit_values(&g, (h.topic_id, h.partition), o, &positions)
            })
            .unwrap_or_default();
    }
    if h.kind != RecordKind::Batch || h.flags & record::FLAG_ORIGIN == 0 {
        return Vec::new();
    }
    match Origin::split(payload) {
        Ok((origin, _)) => {
            let (seq, through) = mark_keys(&origin.region, origin.group);
            vec![(seq, origin.seq), (through, origin.through)]
        }
        Err(_) => Vec::new(),
    }
}

/// Where each record is, by record index: `(position, length)` from `first_index` on. The
/// replication layer addresses records by index (the raft log index); this maps an index to
/// the journal without a scan, at twelve bytes per record.
#[derive(Debug, Default, Clone)]
pub(crate) struct RecordPositions {
    first_index: u64,
    entries: std::collections::VecDeque<(u64, u32)>,
}

impl RecordPositions {
    fn push(&mut self, index: u64, position: u64, len: u32) {
        if self.entries.is_empty() {
            self.first_index = index;
        }
        debug_assert_eq!(index, self.first_index + self.entries.len() as u64);
        self.entries.push_back((position, len));
    }

    fn get(&self, index: u64) -> Option<(u64, u32)> {
        let i = index.checked_sub(self.first_index)?;
        self.entries.get(usize::try_from(i).ok()?).copied()
    }

    /// `(first, last)` record index held.
    fn bounds(&self) -> Option<(u64, u64)> {
        (!self.entries.is_empty()).then(|| {
            (
                self.first_index,
                self.first_index + self.entries.len() as u64 - 1,
            )
        })
    }

    /// Forgets records that start below `position` (deleted by retention).
    fn drop_below(&mut self, position: u64) {
        while self.entries.front().is_some_and(|&(p, _)| p < position) {
            self.entries.pop_front();
            self.first_index += 1;
        }
    }
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
    /// A batch; with [`record::FLAG_ORIGIN`] the payload starts with its origin.
    Batch {
        payload: Bytes,
        count: u32,
        flags: u8,
    },
    Commit {
        group: String,
        offset: u64,
        /// Origin positions (multi-region topics), kept beside the offset.
        positions: Vec<(String, u64)>,
    },
    /// A record whose term and index the replication layer chose (a raft log entry).
    Raft { entry: RaftRecord },
    /// A record copied from another replica, to be written at `position` unchanged.
    Verbatim {
        position: u64,
        header: RecordHeader,
        bytes: Bytes,
    },
}

impl LogGroup {
    /// Opens (recovering as needed) the group stored in `dir`, which holds `partitions`
    /// (key and topic name, for the index directory). Index directories of other topics are
    /// deleted.
    pub fn open(
        dir: &Path,
        config: GroupConfig,
        partitions: &[(PartitionKey, String)],
    ) -> io::Result<LogGroup> {
        assert!(
            config.segment_bytes >= 4096,
            "segment_bytes must be at least 4 KiB"
        );
        std::fs::create_dir_all(dir.join("index"))?;
        let checkpoint = Checkpoint::load(dir)?.unwrap_or_default();
        let journal = Journal::open(&dir.join("journal"), config.segment_bytes)?;
        if let Some(position) = checkpoint.reset_to {
            tracing::info!(dir = %dir.display(), position, "finishing an interrupted journal reset");
            journal.reset(position)?;
        }
        if let Some(position) = checkpoint.truncate_to {
            tracing::info!(dir = %dir.display(), position, "finishing an interrupted truncation");
            journal.cut(position)?;
        }
        let (visible, _) = watch::channel(0);
        let (pullable, _) = watch::channel(0);
        let term = AtomicU64::new(config.term);
        let retention_floor = AtomicU64::new(if config.replicated { 0 } else { u64::MAX });
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            dir_display: dir.display().to_string(),
            config,
            journal,
            indexes: RwLock::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            progress: Mutex::new(Progress {
                written: 0,
                synced: 0,
                indexed: 0,
                index_waiting: false,
                watermark: 0,
                fatal: None,
            }),
            progress_changed: Condvar::new(),
            indexing: Mutex::new(()),
            records: Mutex::new(RecordPositions::default()),
            retired_topics: RwLock::new(std::collections::HashSet::new()),
            visible,
            pullable,
            pending_ends: Mutex::new(HashMap::new()),
            retention_floor,
            term,
            stop: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            commit_bytes: AtomicU64::new(0),
        });
        let (end, scan) = shared.recover(&checkpoint, partitions)?;
        shared.pullable.send_replace(end);
        let writer = Writer::new(&shared.journal, end)?;
        let (tx, rx) = mpsc::channel(shared.config.append_queue_max);
        let mut threads = Vec::new();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let appender = Appender {
            shared: shared.clone(),
            writer,
            rx,
            last_index: scan.last_index,
            last_time: scan.last_time,
            next_offsets: scan.next_offsets,
            undo: Vec::new(),
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("append-{name}"))
                .spawn(move || appender.run())?,
        );
        let indexer_shared = shared.clone();
        let indexer_tx = tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("index-{name}"))
                .spawn(move || Indexer::new(indexer_shared, indexer_tx).run())?,
        );
        Ok(LogGroup {
            shared,
            tx,
            threads: Mutex::new(threads),
        })
    }

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
            },
        )
        .await
    }

    /// `(highest seq, highest through)` of the mirrored batches of origin `(region, group)`
    /// this group holds.
    pub fn mirror_mark(&self, region: &str, group: u32) -> Option<(u64, u64)> {
        let (seq, through) = mark_keys(region, group);
        let offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
        Some((
            offsets.get(&seq)?.0,
            offsets.get(&through).map_or(0, |v| v.0),
        ))
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
        self.send(
            key,
            Body::Commit {
                group: group.to_owned(),
                offset,
                positions,
            },
        )
        .await
    }

    /// The origin positions a consumer group last committed for a partition.
    pub fn committed_positions(&self, group: &str, key: PartitionKey) -> Vec<(String, u64)> {
        let prefix = format!("{MARK_PREFIX}p/{group}/");
        let offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
        let mut out: Vec<(String, u64)> = offsets
            .iter()
            .filter(|((g, t, p), _)| (*t, *p) == key && g.starts_with(&prefix))
            .map(|((g, _, _), &(position, _))| (g[prefix.len()..].to_owned(), position))
            .collect();
        out.sort();
        out
    }

    /// The offset a consumer group last committed for a partition.
    pub fn committed_offset(&self, group: &str, key: PartitionKey) -> Option<u64> {
        let offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
        offsets
            .get(&(group.to_owned(), key.0, key.1))
            .map(|&(offset, _)| offset)
    }

    /// Every committed offset: `(group, topic_id, partition, offset)`.
    pub fn committed_offsets(&self) -> Vec<(String, u32, u32, u64)> {
        let offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
        offsets
            .iter()
            .filter(|((group, _, _), _)| !group.starts_with(MARK_PREFIX))
            .map(|((g, t, p), &(o, _))| (g.clone(), *t, *p, o))
            .collect()
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
        while next < latest && (out.is_empty() || bytes < max_bytes) {
            let entry = index.get(next)?.ok_or(ReadError::OffsetOutOfRange {
                offset: next,
                earliest,
                latest,
            })?;
            let (h, payload) = self.shared.journal.read(entry.position)?;
            if h.kind != RecordKind::Batch
                || (h.topic_id, h.partition) != key
                || !(h.base_offset <= next && next < h.base_offset + u64::from(h.count))
            {
                return Err(ReadError::Journal(super::ReadFailure::Corrupt {
                    position: entry.position,
                    reason: "indexed record belongs to another partition or offset",
                }));
            }
            bytes += payload.len();
            next = h.base_offset + u64::from(h.count);
            let (origin, payload) = if h.flags & record::FLAG_ORIGIN != 0 {
                let (origin, batch) = Origin::split(&payload).map_err(|_| {
                    ReadError::Journal(super::ReadFailure::Corrupt {
                        position: entry.position,
                        reason: "a mirrored batch's origin does not decode",
                    })
                })?;
                (Some(origin), batch)
            } else {
                (None, payload)
            };
            out.push(ReadBatch {
                base_offset: h.base_offset,
                count: h.count,
                append_time_ms: h.append_time_ms,
                payload,
                origin,
                index: h.index,
            });
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

    /// Waits, `limit` at most, until every record that may be visible now is: the indexer
    /// makes a record visible a moment after it is durable (and committed), so a read made
    /// right after an acknowledged append waits here to see it.
    pub async fn caught_up(&self, limit: Duration) {
        let target = {
            let p = self.shared.progress.lock().expect("progress lock poisoned");
            visible_limit(&p, &self.shared.config)
        };
        let mut visible = self.subscribe();
        let _ = tokio::time::timeout(limit, visible.wait_for(|&v| v >= target)).await;
    }

    /// A receiver of the visible journal position; it changes whenever new records become
    /// readable, which is what long-polling fetches wait for.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.visible.subscribe()
    }

    /// Adds an empty partition (a new topic's) to the group.
    pub fn add_partition(&self, key: PartitionKey, topic: &str) -> io::Result<()> {
        let dir = self.shared.index_dir(topic, key.1);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let mut index = PartitionIndex::open(&dir, self.shared.config.index_entries_per_file, 0)?;
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
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        self.shared
            .offsets
            .lock()
            .expect("offsets lock poisoned")
            .retain(|k, _| k.1 != topic_id);
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

    /// When appends are made durable.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.shared.config.flush
    }

    /// A receiver of the end of records a replica may pull ([`LogGroup::read_records`]):
    /// changes on every group commit and truncation.
    pub fn subscribe_pullable(&self) -> watch::Receiver<u64> {
        self.shared.pullable.subscribe()
    }

    /// Sets the leadership term stamped on the records this group writes itself (a
    /// master-slave group's epoch).
    pub fn set_term(&self, term: u64) {
        self.shared.term.store(term, Ordering::SeqCst);
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

    /// Group commits done since open, and the journal bytes they wrote.
    pub fn commit_stats(&self) -> (u64, u64) {
        (
            self.shared.commits.load(Ordering::Relaxed),
            self.shared.commit_bytes.load(Ordering::Relaxed),
        )
    }

    /// Runs retention now (it also runs every `retention_check_interval`).
    pub fn apply_retention(&self) -> io::Result<()> {
        self.shared.apply_retention(&self.tx)
    }

    /// Stops the threads after flushing indexes and writing a final checkpoint.
    pub fn close(&self) {
        let _ = self
            .tx
            .try_send(Command::Stop)
            .or_else(|_| self.tx.blocking_send(Command::Stop));
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.progress_changed.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock poisoned"));
        for t in threads {
            let _ = t.join();
        }
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

    /// Recovery; returns the journal end, the last record index and the last append time.
    fn recover(
        &self,
        checkpoint: &Checkpoint,
        partitions: &[(PartitionKey, String)],
    ) -> io::Result<(u64, Scan)> {
        let started = Instant::now();
        let start = self.journal.start();
        let mut scan = Scan::default();
        let walk_end = self.journal.walk_verified_from(
            start,
            u64::MAX,
            checkpoint.journal_synced,
            |pos, h, payload| scan.visit(pos, h, payload),
        );
        let end = match (scan.broken_at, &walk_end) {
            (Some(pos), _) => {
                tracing::warn!(dir = %self.dir_display, position = pos, "record sequence breaks: cutting the journal there");
                pos
            }
            (None, WalkEnd::Invalid(pos, reason)) => {
                tracing::warn!(dir = %self.dir_display, position = pos, reason, "cutting a torn or corrupt journal tail");
                *pos
            }
            (None, WalkEnd::Clean(pos)) => *pos,
        };
        // The walk stopped at the first bad record; what follows it was never acknowledged.
        self.journal.cut(end)?;
        *self.offsets.lock().expect("offsets lock poisoned") = std::mem::take(&mut scan.offsets);
        *self.records.lock().expect("records lock poisoned") = std::mem::take(&mut scan.records);

        // Indexes: keep what the checkpoint vouches for (and the journal still holds), then
        // rebuild the rest from the journal.
        let counts: HashMap<PartitionKey, u64> = checkpoint
            .counts
            .iter()
            .map(|&(t, p, c)| ((t, p), c))
            .collect();
        let mut rebuild_from = checkpoint.indexed.min(end);
        let wanted: std::collections::HashSet<String> =
            partitions.iter().map(|(_, t)| t.clone()).collect();
        remove_stale_index_dirs(&self.dir.join("index"), &wanted)?;
        let mut indexes = HashMap::new();
        for (key, topic) in partitions {
            let dir = self.index_dir(topic, key.1);
            let trusted = counts.get(key).copied().unwrap_or(0);
            let mut index = match PartitionIndex::open(
                &dir,
                self.config.index_entries_per_file,
                trusted,
            ) {
                Ok(index) => index,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "queue index unusable: rebuilding it from the journal");
                    std::fs::remove_dir_all(&dir)?;
                    rebuild_from = start;
                    PartitionIndex::open(&dir, self.config.index_entries_per_file, 0)?
                }
            };
            if end < checkpoint.indexed {
                let keep = index.first_at_position(0, end)?;
                index.truncate(keep)?;
            }
            let earliest = index.first_at_position(0, start)?;
            index.trim_front(earliest)?;
            indexes.insert(*key, Arc::new(Mutex::new(index)));
        }
        {
            let mut pending = self
                .pending_ends
                .lock()
                .expect("pending ends lock poisoned");
            for (key, &end) in &counts {
                if !indexes.contains_key(key) && start > 0 {
                    pending.insert(*key, end);
                }
            }
        }
        *self.indexes.write().expect("indexes lock poisoned") = indexes;
        // A replicated group indexes only what was committed when it last checkpointed; the
        // leader announces the watermark again. Otherwise everything durable is visible.
        let visible = if self.config.replicated {
            checkpoint.indexed.min(end)
        } else {
            end
        };
        let rebuilt = self.index_range(rebuild_from.min(visible), visible)?;
        self.flush_and_checkpoint(end, visible)?;
        *self.progress.lock().expect("progress lock poisoned") = Progress {
            written: end,
            synced: end,
            indexed: visible,
            index_waiting: false,
            watermark: visible,
            fatal: None,
        };
        self.visible.send_replace(visible);
        tracing::info!(
            dir = %self.dir_display, start, end, records_reindexed = rebuilt,
            elapsed_ms = started.elapsed().as_millis() as u64, "log group recovered"
        );
        Ok((end, scan))
    }

    /// Adds index entries for the records in `[from, to)`; returns how many records it
    /// indexed. Records already indexed are skipped, so this is safe to repeat.
    fn index_range(&self, from: u64, to: u64) -> io::Result<u64> {
        self.index_range_until_unknown(from, to, false)
            .map(|(n, _)| n)
    }

    /// Adds index entries for the records in `[from, to)`, skipping records already indexed;
    /// returns how many records it indexed and how far it got. With `wait_for_unknown`, it
    /// stops at a record of a partition the group does not know yet (in a replicated group
    /// the topic's creation may not have been applied here yet) unless its topic is retired.
    fn index_range_until_unknown(
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
        let walk_end = self.journal.walk(from, to, |pos, h, _| {
            if failure.is_some() || waiting_at.is_some() {
                return;
            }
            match Shared::index_record(&indexes, pos, h) {
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
        indexes: &HashMap<PartitionKey, Arc<Mutex<PartitionIndex>>>,
        pos: u64,
        h: &RecordHeader,
    ) -> io::Result<Indexed> {
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
        if h.base_offset != end && end != index.earliest() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "record at {pos} of partition {}/{} starts at offset {} but the index ends at {end}",
                    h.topic_id, h.partition, h.base_offset
                ),
            ));
        }
        let entry = Entry {
            position: pos,
            size: h.len,
            append_time_ms: h.append_time_ms,
        };
        for offset in h.base_offset..h.base_offset + u64::from(h.count) {
            index.push(offset, entry);
        }
        Ok(Indexed::Added)
    }

    /// Flushes every index and records, durably, that the journal is synced to `synced` and
    /// indexed to `indexed`.
    fn flush_and_checkpoint(&self, synced: u64, indexed: u64) -> io::Result<()> {
        let indexes = self.indexes.read().expect("indexes lock poisoned");
        let mut counts = Vec::with_capacity(indexes.len());
        let mut written = false;
        for (key, index) in indexes.iter() {
            let mut index = index.lock().expect("index lock poisoned");
            written |= index.write_pending()?;
            counts.push((key.0, key.1, index.end()));
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
            // One syncfs instead of an fsync per index file: with thousands of partitions,
            // per-file fsyncs cost more disk time than the journal itself. It also flushes
            // other dirty data on the filesystem, which on a broker's data disk is its own.
            super::segment::sync_filesystem(&self.dir)?;
        }
        counts.sort_unstable();
        Checkpoint {
            journal_synced: synced,
            indexed,
            counts,
            truncate_to: None,
            reset_to: None,
        }
        .store(&self.dir)
    }

    fn apply_retention(&self, tx: &mpsc::Sender<Command>) -> io::Result<()> {
        let config = &self.config;
        if config.retention.is_none() && config.retention_bytes.is_none() {
            return Ok(());
        }
        loop {
            // In a raft group the records are also the raft log: only what a snapshot
            // covers (raft purged) may go.
            let floor = self.retention_floor.load(Ordering::SeqCst);
            let indexed = self
                .progress
                .lock()
                .expect("progress lock poisoned")
                .indexed;
            let cutoff = config.retention.map(|r| now_ms() - r.as_millis() as i64);
            let disk = self.journal.disk_bytes();
            let expired = |first: &super::segment::Segment, next: &super::segment::Segment| {
                // Only delete what the indexes already cover, so no entry is rebuilt into a
                // deleted segment.
                next.start <= indexed
                    && next.start <= floor
                    && (cutoff.is_some_and(|c| Journal::first_time(next).is_some_and(|t| t < c))
                        || config
                            .retention_bytes
                            .is_some_and(|max| disk - first.size >= max))
            };
            let Some(boundary) = self
                .journal
                .segment_for(self.journal.start())
                .and_then(|first| {
                    let next = self.journal.segment_for(first.end())?;
                    expired(&first, &next).then_some(next.start)
                })
            else {
                return Ok(());
            };
            self.carry_offsets_forward(boundary, tx)?;
            let Some(start) = self
                .journal
                .drop_first_if(|first, next| !expired(first, next))?
            else {
                return Ok(());
            };
            metrics::counter!("meridian_journal_segments_deleted_total").increment(1);
            self.records
                .lock()
                .expect("records lock poisoned")
                .drop_below(start);
            tracing::info!(dir = %self.dir_display, start, "retention deleted the oldest journal segment");
            for index in self.indexes.read().expect("indexes lock poisoned").values() {
                let mut index = index.lock().expect("index lock poisoned");
                let earliest = index.first_at_position(index.earliest(), start)?;
                index.trim_front(earliest)?;
            }
        }
    }

    /// Re-appends every live offset commit whose record sits below `boundary`, so deleting
    /// the segments below it loses no committed offset (the journal stays the only store).
    fn carry_offsets_forward(&self, boundary: u64, tx: &mpsc::Sender<Command>) -> io::Result<()> {
        let old: Vec<_> = {
            let offsets = self.offsets.lock().expect("offsets lock poisoned");
            offsets
                .iter()
                .filter(|(_, (_, pos))| *pos < boundary)
                .map(|(k, (o, _))| (k.clone(), *o))
                .collect()
        };
        for ((group, topic_id, partition), offset) in old {
            let (reply, rx) = oneshot::channel();
            let body = Body::Commit {
                group,
                offset,
                positions: Vec::new(),
            };
            tx.blocking_send(Command::Append {
                key: (topic_id, partition),
                body,
                reply,
            })
            .map_err(|_| closed())?;
            rx.blocking_recv()
                .map_err(|_| closed())?
                .map_err(io::Error::other)?;
        }
        Ok(())
    }
}

fn remove_stale_index_dirs(
    dir: &Path,
    wanted: &std::collections::HashSet<String>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted.contains(&name) {
            tracing::info!(dir = %entry.path().display(), "removing the index of a deleted topic");
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// The writer thread: group commit.
struct Appender {
    shared: Arc<Shared>,
    writer: Writer,
    rx: mpsc::Receiver<Command>,
    /// Index of the last record written, if any.
    last_index: Option<u64>,
    last_time: i64,
    /// Next offset of each partition with records in the journal (others: the index's end,
    /// for partitions whose records retention deleted).
    next_offsets: HashMap<PartitionKey, u64>,
    /// Previous values of `next_offsets` changed by the commit in progress, to undo it.
    undo: Vec<(PartitionKey, Option<u64>)>,
}

struct StagedReply {
    reply: oneshot::Sender<Result<Appended, AppendError>>,
    appended: Appended,
    commit: Vec<(OffsetKey, u64)>,
}

impl Appender {
    fn run(mut self) {
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
                        let _ = reply.send(self.truncate(position, force));
                    }
                    Command::Reset {
                        position,
                        ends,
                        reply,
                    } => {
                        self.commit(std::mem::take(&mut appends));
                        let _ = reply.send(self.reset(position, &ends));
                    }
                    Command::Stop => {
                        self.commit(std::mem::take(&mut appends));
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
            for (_, _, reply) in appends {
                let _ = reply.send(Err(AppendError::Fatal {
                    dir: self.shared.dir_display.clone(),
                    reason: reason.into(),
                }));
            }
            return;
        }
        self.undo.clear();
        let mark = (self.writer.position(), self.last_index);
        let mut staged = Vec::with_capacity(appends.len());
        let mut result = Ok(());
        let time = now_ms().max(self.last_time);
        for (key, body, reply) in appends {
            match self.stage(key, &body, time) {
                Ok(Ok((appended, commit))) => staged.push(StagedReply {
                    reply,
                    appended,
                    commit,
                }),
                Ok(Err(refused)) => {
                    let _ = reply.send(Err(refused));
                }
                Err(e) => {
                    let _ = reply.send(Err(self.io_error(&e)));
                    result = Err(e);
                    break;
                }
            }
        }
        let result = result.and_then(|()| self.writer.write());
        let synced = match (&result, self.shared.config.flush) {
            (Ok(()), FlushPolicy::Fsync) => match &self.shared.config.sync {
                Some(batcher) => batcher
                    .sync(self.writer.take_unsynced())
                    .map_err(|e| (e, true)),
                None => self.writer.sync().map_err(|e| (e, true)),
            },
            (Ok(()), FlushPolicy::Async) => Ok(()),
            (Err(e), _) => Err((io::Error::new(e.kind(), e.to_string()), false)),
        };
        if let Err((e, sync_failed)) = synced {
            let error = if sync_failed {
                // After a failed fsync the page cache may have dropped the dirty pages: the
                // disk's contents are unknown until recovery re-reads them (PostgreSQL's
                // "fsyncgate"). Refuse further writes.
                tracing::error!(dir = %self.shared.dir_display, error = %e, "fsync failed: the log group refuses writes until restart");
                self.set_fatal("fsync failed");
                AppendError::Fatal {
                    dir: self.shared.dir_display.clone(),
                    reason: e.to_string(),
                }
            } else {
                tracing::warn!(dir = %self.shared.dir_display, error = %e, "journal write failed: the appends were not stored");
                if let Err(cut) = self.writer.rewind(&self.shared.journal, mark.0) {
                    tracing::error!(dir = %self.shared.dir_display, error = %cut, "could not cut a failed write: the log group refuses writes until restart");
                    self.set_fatal("failed write could not be cut");
                }
                self.last_index = mark.1;
                for (key, old) in self.undo.drain(..).rev() {
                    match old {
                        Some(v) => self.next_offsets.insert(key, v),
                        None => self.next_offsets.remove(&key),
                    };
                }
                self.io_error(&e)
            };
            for s in staged {
                let _ = s.reply.send(Err(error.clone()));
            }
            return;
        }
        self.last_time = self.last_time.max(time);
        {
            let mut offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
            for s in &staged {
                for (key, offset) in &s.commit {
                    offsets.insert(key.clone(), (*offset, s.appended.position));
                }
            }
        }
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        self.shared.commit_bytes.fetch_add(
            self.writer.position().saturating_sub(mark.0),
            Ordering::Relaxed,
        );
        {
            let mut progress = self.shared.progress.lock().expect("progress lock poisoned");
            progress.written = self.writer.position();
            if self.shared.config.flush == FlushPolicy::Fsync {
                progress.synced = progress.written;
            }
        }
        self.shared.pullable.send_replace(self.writer.position());
        self.shared.progress_changed.notify_all();
        metrics::histogram!("meridian_group_commit_records").record(staged.len() as f64);
        metrics::histogram!("meridian_group_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        {
            let mut records = self.shared.records.lock().expect("records lock poisoned");
            for s in &staged {
                records.push(s.appended.index, s.appended.position, s.appended.len);
            }
        }
        for s in staged {
            let _ = s.reply.send(Ok(s.appended));
        }
    }

    /// Encodes one append into the writer's buffer; `None` if it can never fit a segment.
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
            Body::Batch { count, flags, .. } => {
                let mut h = self.header(key, len, RecordKind::Batch, *count, next, time);
                h.flags = *flags;
                h
            }
            Body::Commit { offset, .. } => {
                self.header(key, len, RecordKind::OffsetCommit, 0, *offset, time)
            }
            Body::Raft { entry, .. } => {
                if let Err(reason) = self.check_index(entry.index) {
                    return Ok(Err(AppendError::Diverged {
                        dir: self.shared.dir_display.clone(),
                        reason,
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
                    flags: entry.flags,
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
                        reason,
                    }));
                }
                *header
            }
        };
        let (position, buf) = self.writer.stage(&self.shared.journal, len)?;
        match body {
            Body::Batch { payload, .. } => record::encode(buf, &header, payload),
            Body::Commit {
                group,
                offset,
                positions,
            } => record::encode(
                buf,
                &header,
                &record::encode_commit(group, *offset, positions),
            ),
            Body::Raft { entry, .. } => record::encode(buf, &header, &entry.payload),
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
        let commit = match body {
            Body::Commit {
                group,
                offset,
                positions,
            } => commit_values(group, key, *offset, positions),
            Body::Verbatim { bytes, .. } => durable_positions(&header, &bytes.slice(HEADER_LEN..)),
            Body::Raft { entry, .. } => durable_positions(&header, &entry.payload),
            Body::Batch { payload, .. } => durable_positions(&header, payload),
        };
        let appended = Appended {
            base_offset: header.base_offset,
            position,
            append_time_ms: header.append_time_ms,
            index: header.index,
            len: header.len,
        };
        Ok(Ok((appended, commit)))
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
    ) -> Result<(), String> {
        self.check_index(h.index)?;
        if let Some(next_offset) = next_offset
            && h.kind == RecordKind::Batch
            && h.base_offset != next_offset
        {
            return Err(format!(
                "partition {}/{} record starts at offset {} but this replica's next offset is {next_offset}",
                h.topic_id, h.partition, h.base_offset
            ));
        }
        let here = self.writer.next_position(len);
        if here != position {
            return Err(format!(
                "record lands at position {here} here but at {position} on the leader: are the segment sizes the same?"
            ));
        }
        Ok(())
    }

    /// Record indexes are contiguous; the first record of an empty journal may take any.
    fn check_index(&self, index: u64) -> Result<(), String> {
        match self.last_index {
            Some(last) if index != last + 1 => Err(format!(
                "record index {index} arrived but the next record index here is {}",
                last + 1
            )),
            _ => Ok(()),
        }
    }

    /// Drops every record and restarts the journal at `position` (see [`LogGroup::reset_to`]).
    fn reset(&mut self, position: u64, ends: &HashMap<PartitionKey, u64>) -> io::Result<()> {
        let shared = self.shared.clone();
        let _indexing = shared.indexing.lock().expect("indexing lock poisoned");
        // Indexes first (emptied, each at its next offset, durably), then the intent, then
        // the journal: a crash before the intent leaves the old journal, whose indexes
        // recovery rebuilds; after it, recovery finishes the reset.
        let mut counts = Vec::new();
        {
            let indexes = shared.indexes.read().expect("indexes lock poisoned");
            for (key, index) in indexes.iter() {
                let mut index = index.lock().expect("index lock poisoned");
                let end = ends.get(key).copied().unwrap_or(index.end());
                index.reset_to(end)?;
                counts.push((key.0, key.1, end));
            }
            let mut pending = shared
                .pending_ends
                .lock()
                .expect("pending ends lock poisoned");
            pending.clear();
            for (key, &end) in ends {
                if !indexes.contains_key(key) {
                    pending.insert(*key, end);
                    counts.push((key.0, key.1, end));
                }
            }
        }
        counts.sort_unstable();
        super::segment::sync_filesystem(&shared.dir)?;
        Checkpoint {
            journal_synced: position,
            indexed: position,
            counts,
            truncate_to: None,
            reset_to: Some(position),
        }
        .store(&shared.dir)?;
        shared.journal.reset(position)?;
        self.writer = Writer::new(&shared.journal, position)?;
        self.last_index = None;
        self.next_offsets.clear();
        *shared.records.lock().expect("records lock poisoned") = RecordPositions::default();
        shared
            .offsets
            .lock()
            .expect("offsets lock poisoned")
            .clear();
        {
            let mut p = shared.progress.lock().expect("progress lock poisoned");
            p.written = position;
            p.synced = position;
            p.indexed = position;
            p.index_waiting = false;
            p.watermark = p.watermark.max(position);
        }
        shared.flush_and_checkpoint(position, position)?;
        shared.visible.send_replace(position);
        shared.pullable.send_replace(position);
        tracing::warn!(dir = %shared.dir_display, position, "journal reset: every record dropped, restarting where the source's journal starts");
        Ok(())
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
        if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == io::ErrorKind::StorageFull {
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

    /// Cuts the journal at `position`. Without `force`, a replicated group refuses to cut
    /// committed records; raft (`force`) guarantees that itself.
    fn truncate(&mut self, position: u64, force: bool) -> io::Result<()> {
        let shared = self.shared.clone();
        let end = self.writer.position();
        let invalid = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot truncate to {position}: {why}"),
            )
        };
        if position > end || position < shared.journal.start() {
            return Err(invalid(format!(
                "the journal holds {}..{end}",
                shared.journal.start()
            )));
        }
        if position < end {
            shared
                .journal
                .read(position)
                .map_err(|e| invalid(format!("not a record boundary ({e})")))?;
        }
        let watermark = shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .watermark;
        if shared.config.replicated && position < watermark && !force {
            return Err(invalid(format!(
                "records up to {watermark} are committed and must never be truncated"
            )));
        }
        let _indexing = shared.indexing.lock().expect("indexing lock poisoned");
        // Record the intent first: if we crash midway, recovery finishes the truncation.
        let mut intent = Checkpoint::load(&shared.dir)?.unwrap_or_default();
        intent.truncate_to = Some(position);
        intent.store(&shared.dir)?;
        shared.journal.cut(position)?;
        self.writer = Writer::new(&shared.journal, position)?;
        for index in shared
            .indexes
            .read()
            .expect("indexes lock poisoned")
            .values()
        {
            let mut index = index.lock().expect("index lock poisoned");
            let keep = index.first_at_position(index.earliest(), position)?;
            index.truncate(keep)?;
        }
        let mut scan = Scan::default();
        shared
            .journal
            .walk(shared.journal.start(), position, |pos, h, payload| {
                scan.visit(pos, h, payload)
            });
        self.last_index = scan.last_index;
        self.next_offsets = scan.next_offsets;
        *shared.records.lock().expect("records lock poisoned") = scan.records;
        *shared.offsets.lock().expect("offsets lock poisoned") = scan.offsets;
        // What remains below `position` becomes durable now, and visible up to the limit.
        let synced = shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .synced;
        shared.journal.sync_range(synced.min(position), position)?;
        let (indexed, limit) = {
            let mut p = shared.progress.lock().expect("progress lock poisoned");
            p.written = position;
            p.synced = position;
            p.indexed = p.indexed.min(position);
            p.watermark = p.watermark.min(position);
            (p.indexed, visible_limit(&p, &shared.config))
        };
        if indexed < limit {
            shared.index_range(indexed, limit)?;
        }
        shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .indexed = limit.max(indexed);
        let indexed = limit.max(indexed);
        shared.flush_and_checkpoint(position, indexed)?;
        shared.visible.send_replace(indexed);
        shared.pullable.send_replace(position);
        tracing::info!(dir = %shared.dir_display, position, "journal truncated");
        Ok(())
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

fn body_len(body: &Body) -> usize {
    match body {
        Body::Batch { payload, .. } => payload.len(),
        Body::Commit {
            group, positions, ..
        } => {
            2 + group.len()
                + 8
                + if positions.is_empty() { 0 } else { 2 }
                + positions
                    .iter()
                    .map(|(r, _)| 2 + r.len() + 8)
                    .sum::<usize>()
        }
        Body::Verbatim { bytes, .. } => bytes.len() - HEADER_LEN,
        Body::Raft { entry } => entry.payload.len(),
    }
}

/// The indexer thread: indexes durable records, flushes, checkpoints, applies retention.
struct Indexer {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Command>,
    last_flush: Instant,
    last_retention: Instant,
}

impl Indexer {
    fn new(shared: Arc<Shared>, tx: mpsc::Sender<Command>) -> Indexer {
        Indexer {
            shared,
            tx,
            last_flush: Instant::now(),
            last_retention: Instant::now(),
        }
    }

    fn run(mut self) {
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
            if let Err(e) = self.index_to() {
                tracing::error!(dir = %self.shared.dir_display, error = %e, "indexing failed");
            }
            if stopping || self.last_flush.elapsed() >= config.flush_interval {
                if let Err(e) = self.flush() {
                    tracing::error!(dir = %self.shared.dir_display, error = %e, "index flush failed");
                }
                self.last_flush = Instant::now();
            }
            if stopping {
                return;
            }
            if self.last_retention.elapsed() >= config.retention_check_interval {
                if let Err(e) = self.shared.apply_retention(&self.tx) {
                    tracing::error!(dir = %self.shared.dir_display, error = %e, "retention failed");
                }
                self.last_retention = Instant::now();
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
