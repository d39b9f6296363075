//! Meridian's storage engine: one journal per log group, a queue index per partition.
//!
//! Knows nothing of raft, protocols or the network, and depends on nothing of Meridian's
//! but `meridian-proto` (the record format). The unit is the [`LogGroup`]: it owns a
//! journal (segment files shared by every partition it holds), the partitions' queue
//! indexes, and the consumer offsets committed through the journal. Every file of a group
//! (segments, queue-index files, the checkpoint) is reached through [`backend::Backend`]
//! (real files by default; in memory or with injected faults in tests). The region-broker
//! re-exports this crate as `meridian_region_broker::storage`. See `ARCHITECTURE.md` for the
//! data path and the recovery argument.

pub mod backend;
mod checkpoint;
pub mod compaction;
#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod fault_tests;
mod group;
mod index;
mod journal;
mod segment;
#[cfg(test)]
mod size_tests;
mod sync;
#[cfg(test)]
mod tests;
mod throttle;
#[cfg(test)]
mod transaction_tests;
pub mod transactions;

use std::time::Duration;

pub use group::{
    Appended, BATCHES_KEPT, HeldOffset, LogGroup, OFFSET_DELETED, POSITION_CLEARED, POSITIONS_ONLY,
    ProducerState, RaftRecord, ReadBatch, RecordChunk, START_MARK, SeqCheck, SeqRefusal,
    mirrored_payload,
};
pub use journal::ReadFailure;
pub use meridian_proto::record;
pub use sync::SyncBatcher;
pub use throttle::{LOG_EVERY, LogThrottle};

/// Identifies a partition inside a group: `(topic_id, partition)`.
pub type PartitionKey = (u32, u32);

/// When appended data is made durable.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum FlushPolicy {
    /// fsync before acknowledging; one fsync acknowledges every producer waiting on it
    /// (group commit).
    Fsync,
    /// Acknowledge once written to the page cache; fsync every `flush_interval`.
    Async,
}

/// Settings of one log group's storage.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Size of each preallocated segment file.
    pub segment_bytes: u64,
    /// Entries per queue-index file.
    pub index_entries_per_file: u64,
    /// When appends are made durable.
    pub flush: FlushPolicy,
    /// How often indexes are flushed and checkpointed (and, with `Async`, the journal synced).
    pub flush_interval: Duration,
    /// Delete segments whose newest record is older than this.
    pub retention: Option<Duration>,
    /// Delete the oldest segments while the journal exceeds this many bytes.
    pub retention_bytes: Option<u64>,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// Appends waiting for the writer, at most; senders wait beyond it.
    pub append_queue_max: usize,
    /// Bytes one group commit gathers at most.
    pub commit_bytes_max: usize,
    /// Leadership term stamped on records (replication sets it; a single broker uses 1).
    pub term: u64,
    /// Makes group commits durable together with other groups' (one `syncfs` for many
    /// groups); `None`: each group fsyncs its own segments.
    pub sync: Option<std::sync::Arc<SyncBatcher>>,
    /// Whether a replication layer decides what is committed ([`LogGroup::set_watermark`]):
    /// then only committed records are indexed and visible. Without it, every durable
    /// record is.
    pub replicated: bool,
    /// Idempotent producer states (per partition and producer id) kept at most; beyond it
    /// the least recently written is forgotten (its next batch is accepted at any sequence).
    pub producers_max: usize,
    /// A producer state is forgotten once a later producer batch is appended this long
    /// after its last one, by the records' own append times (Kafka's
    /// `producer.id.expiration.ms`, 24 h by default).
    pub producer_expiry: Duration,
    /// Keys a compacted partition's map holds at most (`crate::compaction`): past it,
    /// compaction gives up on the partition (everything is kept and read).
    pub compaction_keys_max: usize,
    /// Where the group's files (journal segments, queue indexes, checkpoint) live:
    /// [`backend::FileBackend`] (real files, the default), or a memory or fault-injecting
    /// backend in tests (then nothing is read or written on disk).
    pub backend: std::sync::Arc<dyn backend::Backend>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            segment_bytes: 128 << 20,
            index_entries_per_file: 1 << 18,
            flush: FlushPolicy::Fsync,
            flush_interval: Duration::from_secs(1),
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            retention_bytes: None,
            retention_check_interval: Duration::from_secs(30),
            append_queue_max: 4096,
            commit_bytes_max: 4 << 20,
            term: 1,
            sync: None,
            replicated: false,
            producers_max: 20_000,
            producer_expiry: Duration::from_secs(24 * 3600),
            compaction_keys_max: 1_000_000,
            backend: std::sync::Arc::new(backend::FileBackend),
        }
    }
}

/// Why an append was not acknowledged. Nothing of a failed append is ever visible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The disk has no room: free space or lower retention, then retry.
    #[error(
        "disk full in {dir}: the append was not stored; free space or lower retention and retry"
    )]
    DiskFull {
        /// The group's directory.
        dir: String,
    },
    /// The write failed for another reason; the group stays usable.
    #[error("write failed in {dir}: {reason}")]
    Io {
        /// The group's directory.
        dir: String,
        /// The operating system's error.
        reason: String,
    },
    /// A sync failed, so what the disk holds is unknown: the group refuses writes until the
    /// broker restarts and recovers it.
    #[error(
        "log group {dir} stopped accepting writes after a failed fsync ({reason}); restart the broker to recover it"
    )]
    Fatal {
        /// The group's directory.
        dir: String,
        /// The first error.
        reason: String,
    },
    /// A replicated record does not continue this replica's history (wrong index, offset
    /// or position): the replica must truncate to where it agrees with the leader.
    #[error("replica {dir} diverged from the leader: {reason}")]
    Diverged {
        /// The group's directory.
        dir: String,
        /// What does not match.
        reason: String,
    },
    /// The group is shutting down.
    #[error("log group is closed")]
    Closed,
    /// The batch is larger than a segment can hold.
    #[error("record of {len} bytes does not fit in a segment of {segment_bytes} bytes")]
    TooLarge {
        /// Record length.
        len: usize,
        /// Segment size.
        segment_bytes: u64,
    },
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The group holds no such partition.
    #[error("unknown partition {topic_id}/{partition}")]
    UnknownPartition {
        /// Topic id.
        topic_id: u32,
        /// Partition.
        partition: u32,
    },
    /// The offset is outside the retained range.
    #[error("offset {offset} is out of range: the partition holds offsets {earliest}..{latest}")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// First retained offset.
        earliest: u64,
        /// One past the last visible offset.
        latest: u64,
    },
    /// The journal holds something other than the indexed record.
    #[error(transparent)]
    Journal(#[from] ReadFailure),
    /// The index could not be read.
    #[error("index read failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Raises this process's open-file limit to its hard limit: a broker keeps one descriptor
/// per segment and per queue-index file, thousands with thousands of partitions.
pub fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
